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

class FileAuditLog final : public AuditLog {
 public:
  FileAuditLog(int fd, int64_t size, bool sync_each, common::Clock& clock)
      : fd_(fd), size_(size), sync_each_(sync_each), clock_(clock) {}
  ~FileAuditLog() override { ::close(fd_); }

  absl::Status Append(AuditEvent event) override {
    std::lock_guard lock(mu_);
    event.time_ms = absl::ToUnixMillis(clock_.Now());
    event.seq = size_;
    std::string line = EncodeEvent(event);
    line.push_back('\n');
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

std::string EncodeEvent(const AuditEvent& e) {
  common::Json j = {
      {"seq", e.seq},           {"time_ms", e.time_ms},       {"request_id", e.request_id},
      {"actor_kind", e.actor_kind}, {"actor_id", e.actor_id}, {"actor_name", e.actor_name},
      {"token_id", e.token_id}, {"tenant", e.tenant},         {"action", e.action},
      {"method", e.method},     {"resource", e.resource},     {"decision", e.decision},
      {"reason", e.reason},     {"status", e.status},         {"source", e.source},
  };
  // Replace invalid UTF-8 (attacker-chosen paths) rather than throwing.
  return j.dump(-1, ' ', false, common::Json::error_handler_t::replace);
}

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
