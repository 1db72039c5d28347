#include "server/audit_syslog.h"

#include <unistd.h>

#include "common/status.h"

namespace warden::server {

absl::StatusOr<std::unique_ptr<audit::SyslogSender>> StartAuditSyslog(
    const common::AuditSyslogConfig& config, audit::AuditOptions& audit_options) {
  if (config.address.empty()) return std::unique_ptr<audit::SyslogSender>();
  audit::SyslogSenderOptions o;
  o.address = config.address;
  o.server_name = config.server_name;
  o.ca_file = config.ca_file;
  o.client_cert = config.client_cert;
  o.client_key = config.client_key;
  o.insecure_skip_verify = config.insecure_skip_verify;
  o.queue_max = static_cast<size_t>(config.queue_max);
  o.header.app_name = config.app_name;
  o.header.hostname = config.hostname;
  if (o.header.hostname.empty()) {
    char name[256] = {};
    if (::gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0') o.header.hostname = name;
    // RFC 5424 NILVALUE when this machine has no usable name.
    if (!audit::ValidateSyslogHeader(o.header).ok()) o.header.hostname = "-";
  }
  WARDEN_ASSIGN_OR_RETURN(std::unique_ptr<audit::SyslogSender> sender,
                          audit::CreateSyslogSender(o));
  sender->Start();
  audit::SyslogSender* s = sender.get();
  audit_options.on_durable = [s](uint64_t first_seq, int64_t time_ms,
                                 std::span<const std::string_view> lines) {
    for (size_t i = 0; i < lines.size(); ++i) s->Enqueue(first_seq + i, time_ms, lines[i]);
  };
  return sender;
}

}  // namespace warden::server
