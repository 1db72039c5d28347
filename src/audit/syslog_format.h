// The second audit sink's wire format (issue 4): one audit event as an RFC 5424 syslog message,
// framed for TLS transport by RFC 5425 octet counting. The sender is in syslog_sender.h.
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

// The notice sent ahead of the next events when the sink dropped events (queue full):
// <108>1 TIMESTAMP HOSTNAME APP-NAME - gap [gpuwarden-gap@32473 dropped="N" first_seq="A"
// last_seq="B"] MSG — severity 4 (warning); first_seq/last_seq bound the dropped events (they are
// all in the primary log). `time_ms` is when the notice is sent.
absl::StatusOr<std::string> FormatSyslogGapMessage(const SyslogHeader& header, int64_t time_ms,
                                                   uint64_t dropped, uint64_t first_seq,
                                                   uint64_t last_seq);

// RFC 5425 octet-counting frame: "MSG-LEN SP SYSLOG-MSG".
std::string FrameOctetCounted(std::string_view message);

}  // namespace warden::audit
