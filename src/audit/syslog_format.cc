#include "audit/syslog_format.h"

#include <cstdio>
#include <ctime>

#include "common/strings.h"

namespace warden::audit {

using common::StrCat;

namespace {

absl::Status CheckPrintable(std::string_view field, std::string_view value, size_t max) {
  if (value.empty() || value.size() > max) {
    return absl::InvalidArgumentError(
        StrCat("syslog ", field, " must be 1..", max, " characters (RFC 5424), got ", value.size()));
  }
  for (size_t i = 0; i < value.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(value[i]);
    if (c < 33 || c > 126) {
      return absl::InvalidArgumentError(StrCat("syslog ", field, " has a character at offset ", i,
                                               " that is not printable US-ASCII (RFC 5424)"));
    }
  }
  return absl::OkStatus();
}

// 2026-11-27T06:46:00.123Z (RFC 5424 TIMESTAMP, RFC 3339 with fractional seconds).
std::string Timestamp(int64_t time_ms) {
  int64_t secs = time_ms >= 0 ? time_ms / 1000 : (time_ms - 999) / 1000;
  int ms = static_cast<int>(time_ms - secs * 1000);
  time_t t = static_cast<time_t>(secs);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

}  // namespace

absl::Status ValidateSyslogHeader(const SyslogHeader& header) {
  if (absl::Status s = CheckPrintable("hostname", header.hostname, 255); !s.ok()) return s;
  return CheckPrintable("app_name", header.app_name, 48);
}

std::string EscapeSdParamValue(std::string_view value) {
  std::string out;
  out.reserve(value.size() + 8);
  for (char c : value) {
    if (c == '"' || c == '\\' || c == ']') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

absl::StatusOr<std::string> FormatSyslogAuditMessage(const SyslogHeader& header, uint64_t seq,
                                                     int64_t time_ms, std::string_view line) {
  if (absl::Status s = ValidateSyslogHeader(header); !s.ok()) return s;
  // <110>: facility 13 (log audit) * 8 + severity 6 (informational).
  return StrCat("<110>1 ", Timestamp(time_ms), " ", header.hostname, " ", header.app_name,
                " - audit [gpuwarden@32473 seq=\"", seq, "\" leaf=\"", seq, "\" event=\"",
                EscapeSdParamValue(line), "\"]");
}

absl::StatusOr<std::string> FormatSyslogGapMessage(const SyslogHeader& header, int64_t time_ms,
                                                   uint64_t dropped, uint64_t first_seq,
                                                   uint64_t last_seq) {
  if (absl::Status s = ValidateSyslogHeader(header); !s.ok()) return s;
  // <108>: facility 13 (log audit) * 8 + severity 4 (warning).
  return StrCat("<108>1 ", Timestamp(time_ms), " ", header.hostname, " ", header.app_name,
                " - gap [gpuwarden-gap@32473 dropped=\"", dropped, "\" first_seq=\"", first_seq,
                "\" last_seq=\"", last_seq, "\"] ", dropped,
                " audit events (seq ", first_seq, "..", last_seq,
                ") were dropped by the syslog sink (queue full); the primary audit log has them");
}

std::string FrameOctetCounted(std::string_view message) {
  return StrCat(message.size(), " ", message);
}

}  // namespace warden::audit
