// AuditLog: the record of every request the API served or refused. This is the core platform's
// simple form: one JSON object per line in an append-only file (DATA_DIR/audit/events.jsonl).
// The tamper-evident Merkle log (issue 4) replaces the storage behind this same interface.
// Thread-safe. Append is fail-closed: when it returns an error the caller must not serve the
// request (the API answers 503), and Healthy() turns false until a write succeeds again.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"

namespace warden::audit {

struct AuditEvent {
  int64_t time_ms = 0;       // set by Append from the clock
  std::string request_id;
  std::string actor_kind;    // "user", "token", "anonymous"
  std::string actor_id;      // user id (also for tokens: the owner)
  std::string actor_name;
  std::string token_id;      // when acting through an API token
  std::string tenant;        // tenant name the action was scoped to; empty = cluster
  std::string action;        // permission checked, e.g. "users:create", or "auth:login"
  std::string method;        // HTTP method
  std::string resource;      // request path
  std::string decision;      // "allow" or "deny"
  std::string reason;        // why denied / error message (short)
  int status = 0;            // HTTP status returned
  std::string source;        // client address ip:port
  int64_t seq = 0;           // position in the log, set by Append
};

struct AuditOptions {
  std::string dir;  // DATA_DIR/audit; created 0700 if missing
  bool sync_each = false;  // fdatasync after each event (issue 4 adds group commit)
};

class AuditLog {
 public:
  virtual ~AuditLog() = default;
  // Appends one event (time and seq filled in). Unavailable when it could not be written in full;
  // the file is left with whole lines only (a partial line is cut back on the next open).
  virtual absl::Status Append(AuditEvent event) = 0;
  virtual bool Healthy() const = 0;
  // Number of events written since the log was created (the next seq).
  virtual int64_t Size() const = 0;
};

absl::StatusOr<std::unique_ptr<AuditLog>> OpenAuditLog(const AuditOptions& options,
                                                       common::Clock& clock);

// Reads every event of the log in `dir` (for queries and tests). DataLoss names the line that
// does not parse.
absl::StatusOr<std::vector<AuditEvent>> ReadAuditEvents(const std::string& dir);

std::string EncodeEvent(const AuditEvent& event);  // one JSON line, without the newline

}  // namespace warden::audit
