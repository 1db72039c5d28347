#include "audit/audit.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>

#include "common/json.h"
#include "common/strings.h"

namespace warden::audit {
namespace {

using common::StrCat;

constexpr char kFileName[] = "events.jsonl";

std::string EncodeBody(const AuditEvent& e);
std::string Header(int64_t seq, int64_t time_ms);

class FileAuditLog final : public AuditLog {
 public:
  FileAuditLog(int fd, int64_t size, bool sync_each, common::Clock& clock)
      : fd_(fd), size_(size), sync_each_(sync_each), clock_(clock) {}
  ~FileAuditLog() override { ::close(fd_); }

  absl::Status Append(AuditEvent event) override {
    std::string body = EncodeBody(event);  // the costly part, outside the lock
    body.push_back('\n');
    std::lock_guard lock(mu_);
    std::string line = Header(size_, absl::ToUnixMillis(clock_.Now()));
    line += body;
    // One write() per event on an O_APPEND fd: a crash leaves at most a torn last line, which
    // OpenAuditLog trims. A short write or error marks the log unhealthy (fail closed).
    size_t done = 0;
    while (done < line.size()) {
      ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        int err = errno;
        healthy_ = false;
        if (done > 0) TrimTo(offset_);
        return absl::UnavailableError(StrCat("audit log write failed: ", std::strerror(err)));
      }
      done += static_cast<size_t>(n);
    }
    if (sync_each_ && ::fdatasync(fd_) != 0) {
      healthy_ = false;
      return absl::UnavailableError(StrCat("audit log sync failed: ", std::strerror(errno)));
    }
    offset_ += static_cast<off_t>(line.size());
    ++size_;
    healthy_ = true;
    return absl::OkStatus();
  }

  bool Healthy() const override { return healthy_; }
  int64_t Size() const override {
    std::lock_guard lock(mu_);
    return size_;
  }

  void set_offset(off_t offset) { offset_ = offset; }

 private:
  void TrimTo(off_t offset) {
    if (::ftruncate(fd_, offset) != 0) return;  // stays unhealthy; next open trims the tail
  }

  mutable std::mutex mu_;
  int fd_;
  int64_t size_;
  off_t offset_ = 0;
  bool sync_each_;
  std::atomic<bool> healthy_{true};
  common::Clock& clock_;
};

absl::StatusOr<AuditEvent> DecodeEvent(const std::string& line) {
  auto parsed = common::ParseJsonStrict(line);
  if (!parsed.ok()) return parsed.status();
  const auto& j = *parsed;
  if (!j.is_object()) return absl::InvalidArgumentError("event is not an object");
  AuditEvent e;
  auto str = [&](const char* key, std::string& out) {
    if (auto it = j.find(key); it != j.end() && it->is_string()) out = it->get<std::string>();
  };
  auto num = [&](const char* key, auto& out) {
    if (auto it = j.find(key); it != j.end() && it->is_number_integer()) {
      out = it->get<std::remove_reference_t<decltype(out)>>();
    }
  };
  num("seq", e.seq);
  num("time_ms", e.time_ms);
  str("request_id", e.request_id);
  str("actor_kind", e.actor_kind);
  str("actor_id", e.actor_id);
  str("actor_name", e.actor_name);
  str("token_id", e.token_id);
  str("tenant", e.tenant);
  str("action", e.action);
  str("method", e.method);
  str("resource", e.resource);
  str("decision", e.decision);
  str("reason", e.reason);
  num("status", e.status);
  str("source", e.source);
  return e;
}

}  // namespace

namespace {

// Appends `v` as a JSON string. Invalid UTF-8 (attacker-chosen paths) becomes U+FFFD rather than
// failing: the event must be written whatever the request looked like.
void AppendJsonString(std::string& out, std::string_view v) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  size_t i = 0;
  while (i < v.size()) {
    unsigned char c = static_cast<unsigned char>(v[i]);
    if (c < 0x80) {
      if (c == '"' || c == '\\') {
        out.push_back('\\');
        out.push_back(static_cast<char>(c));
      } else if (c < 0x20) {
        out.append("\\u00");
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 15]);
      } else {
        out.push_back(static_cast<char>(c));
      }
      ++i;
      continue;
    }
    // Length and validity of a UTF-8 sequence (RFC 3629: no overlongs, no surrogates, <= U+10FFFF).
    size_t len = 0;
    uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4, cp = c & 0x07;
    }
    bool ok = len > 0 && i + len <= v.size();
    for (size_t k = 1; ok && k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(v[i + k]);
      ok = (cc & 0xC0) == 0x80;
      cp = cp << 6 | (cc & 0x3F);
    }
    if (ok) {
      ok = !(len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) &&
           !(len == 4 && (cp < 0x10000 || cp > 0x10FFFF));
    }
    if (ok) {
      out.append(v.substr(i, len));
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");
      ++i;
    }
  }
  out.push_back('"');
}

void Field(std::string& out, std::string_view key, std::string_view value) {
  out.push_back(',');
  AppendJsonString(out, key);
  out.push_back(':');
  AppendJsonString(out, value);
}

// Everything after "seq" and "time_ms", which Append fills in under its lock.
std::string EncodeBody(const AuditEvent& e) {
  std::string out;
  out.reserve(256 + e.resource.size() + e.reason.size());
  Field(out, "request_id", e.request_id);
  Field(out, "actor_kind", e.actor_kind);
  Field(out, "actor_id", e.actor_id);
  Field(out, "actor_name", e.actor_name);
  Field(out, "token_id", e.token_id);
  Field(out, "tenant", e.tenant);
  Field(out, "action", e.action);
  Field(out, "method", e.method);
  Field(out, "resource", e.resource);
  Field(out, "decision", e.decision);
  Field(out, "reason", e.reason);
  out.append(",\"status\":").append(std::to_string(e.status));
  Field(out, "source", e.source);
  out.push_back('}');
  return out;
}

std::string Header(int64_t seq, int64_t time_ms) {
  return StrCat("{\"seq\":", seq, ",\"time_ms\":", time_ms);
}

}  // namespace

std::string EncodeEvent(const AuditEvent& e) { return Header(e.seq, e.time_ms) + EncodeBody(e); }

absl::StatusOr<std::unique_ptr<AuditLog>> OpenAuditLog(const AuditOptions& options,
                                                       common::Clock& clock) {
  if (::mkdir(options.dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::UnavailableError(
        StrCat("cannot create audit dir ", options.dir, ": ", std::strerror(errno)));
  }
  std::string path = StrCat(options.dir, "/", kFileName);
  // Count whole lines and cut a torn tail left by a crash mid-write.
  int64_t lines = 0;
  off_t good = 0;
  struct stat pre {};
  // Only a regular file is scanned (a device such as /dev/full, used by the fault tests, is not).
  if (::stat(path.c_str(), &pre) == 0 && S_ISREG(pre.st_mode)) {
    std::ifstream in(path, std::ios::binary);
    std::string line;
    off_t pos = 0;
    while (std::getline(in, line)) {
      pos += static_cast<off_t>(line.size());
      if (in.eof()) break;  // no trailing newline: torn
      pos += 1;
      ++lines;
      good = pos;
    }
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(StrCat("cannot open audit log ", path, ": ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > good) {
    if (::ftruncate(fd, good) != 0) {
      ::close(fd);
      return absl::UnavailableError(StrCat("cannot trim torn audit tail in ", path));
    }
  }
  auto log = std::make_unique<FileAuditLog>(fd, lines, options.sync_each, clock);
  log->set_offset(good);
  return log;
}

absl::StatusOr<std::vector<AuditEvent>> ReadAuditEvents(const std::string& dir) {
  std::string path = StrCat(dir, "/", kFileName);
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(StrCat("no audit log at ", path));
  std::vector<AuditEvent> out;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (in.eof()) break;  // torn tail is not an event
    auto e = DecodeEvent(line);
    if (!e.ok()) {
      return absl::DataLossError(
          StrCat(path, " line ", n, ": ", std::string(e.status().message())));
    }
    out.push_back(std::move(*e));
  }
  return out;
}

}  // namespace warden::audit
