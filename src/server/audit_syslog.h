// Wiring of the audit log's second sink (issue 4): builds the syslog sender from the
// `audit.syslog` config block and hooks it to the log's durable-batch callback.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "audit/audit.h"
#include "audit/syslog_sender.h"
#include "common/config.h"

namespace warden::server {

// nullptr when `config.address` is empty (no second sink). Otherwise a started sender, and
// `audit_options.on_durable` set to queue every durable event into it; the sender must outlive
// the AuditLog opened with those options. InvalidArgument naming the setting when the CA file,
// client key pair or names are unusable: the server refuses to start rather than run without
// the off-box copy it was told to keep.
absl::StatusOr<std::unique_ptr<audit::SyslogSender>> StartAuditSyslog(
    const common::AuditSyslogConfig& config, audit::AuditOptions& audit_options);

}  // namespace warden::server
