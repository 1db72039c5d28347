// The second audit sink's wire format (issue 4): one audit event as an RFC 5424 syslog message,
// framed for TLS transport by RFC 5425 octet counting. Only the formatter exists so far: the
// sender (TLS connection, bounded queue fed after the local commit, drops counted, reconnect
// with backoff) and the `audit.syslog` config are NOT built yet.
//
// Message: <110>1 TIMESTAMP HOSTNAME APP-NAME - audit [gpuwarden@32473 seq="N" leaf="N"
// event="JSON"] — facility 13 (log audit), severity 6 (informational); TIMESTAMP is the event's
// time_ms in UTC with milliseconds; the SD-ID uses the documentation enterprise number 32473 of
// RFC 5612; `event` is the event's logged line (the Merkle leaf data) with '"', '\' and ']'
// escaped as RFC 5424 section 6.3.3 requires; `leaf` is the Merkle leaf index (= seq). No MSG
// part. Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace warden::audit {

struct SyslogHeader {
  std::string hostname;  // 1..255 printable US-ASCII characters (33..126)
  std::string app_name;  // 1..48 printable US-ASCII characters
};

// InvalidArgument naming the field when `header` breaks RFC 5424's HOSTNAME / APP-NAME rules.
absl::Status ValidateSyslogHeader(const SyslogHeader& header);

// A PARAM-VALUE with '"', '\' and ']' escaped by a backslash (RFC 5424 section 6.3.3).
std::string EscapeSdParamValue(std::string_view value);

// The RFC 5424 message for the event whose logged line is `line` (seq `seq`, time `time_ms`).
// InvalidArgument when the header is invalid (see ValidateSyslogHeader).
absl::StatusOr<std::string> FormatSyslogAuditMessage(const SyslogHeader& header, uint64_t seq,
                                                     int64_t time_ms, std::string_view line);

// RFC 5425 octet-counting frame: "MSG-LEN SP SYSLOG-MSG".
std::string FrameOctetCounted(std::string_view message);

}  // namespace warden::audit
