// The canonical event encoding (v1), its strict decoder, the on-disk naming helpers of
// segment.h, and ReadAuditEvents. The log itself is in log.cc, the offline verifier in verify.cc.
#include "audit/audit.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>

#include "audit/segment.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::audit {

using common::StrCat;

ssize_t AuditFileIo::Write(int fd, const void* data, size_t size) {
  return ::write(fd, data, size);
}
int AuditFileIo::Datasync(int fd) { return ::fdatasync(fd); }
AuditFileIo& AuditFileIo::Posix() {
  static AuditFileIo io;
  return io;
}

namespace {

constexpr char kHex[] = "0123456789abcdef";

// Length of the valid UTF-8 sequence at the start of `v` (RFC 3629: no overlongs, no
// surrogates, <= U+10FFFF), 0 when invalid. `v` is not empty.
size_t Utf8Length(std::string_view v) {
  unsigned char c = static_cast<unsigned char>(v[0]);
  size_t len = 0;
  uint32_t cp = 0;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2, cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3, cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4, cp = c & 0x07;
  } else {
    return 0;
  }
  if (v.size() < len) return 0;
  for (size_t k = 1; k < len; ++k) {
    unsigned char cc = static_cast<unsigned char>(v[k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (cc & 0x3F);
  }
  if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
  if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
  return len;
}

// Appends `v` as a JSON string. Invalid UTF-8 (attacker-chosen paths) becomes U+FFFD rather than
// failing: the event must be written whatever the request looked like. Only `"`, `\` and control
// characters are escaped (controls as \u00xx, lowercase): one encoding per string.
void AppendJsonString(std::string& out, std::string_view v) {
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
    size_t len = Utf8Length(v.substr(i));
    bool ok = len > 0;
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

void StringField(std::string& out, std::string_view key, std::string_view value) {
  out.push_back(',');
  out.push_back('"');
  out.append(key);
  out.append("\":");
  AppendJsonString(out, value);
}

void IntField(std::string& out, std::string_view key, int64_t value) {
  out.push_back(',');
  out.push_back('"');
  out.append(key);
  out.append("\":");
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), value);
  out.append(buf, r.ptr);
}

// ---- strict decoder ----

class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}

  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(StrCat("event byte ", pos_, ": ", what));
  }
  bool Literal(std::string_view lit) {
    if (s_.substr(pos_, lit.size()) != lit) return false;
    pos_ += lit.size();
    return true;
  }
  // `,"key":` (or `{"key":` when first).
  absl::Status Key(std::string_view key, bool first) {
    if (!Literal(first ? "{\"" : ",\"") || !Literal(key) || !Literal("\":")) {
      return Error(StrCat("expected field \"", key, "\" here (v1 has a fixed field order)"));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<int64_t> Int(std::string_view key) {
    size_t start = pos_;
    bool neg = pos_ < s_.size() && s_[pos_] == '-';
    if (neg) ++pos_;
    size_t digits = pos_;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    size_t n = pos_ - digits;
    if (n == 0 || (n > 1 && s_[digits] == '0') || (neg && n == 1 && s_[digits] == '0')) {
      pos_ = start;
      return Error(StrCat("field \"", key, "\" is not a canonical integer"));
    }
    int64_t v = 0;
    auto r = std::from_chars(s_.data() + start, s_.data() + pos_, v);
    if (r.ec != std::errc() || r.ptr != s_.data() + pos_) {
      pos_ = start;
      return Error(StrCat("field \"", key, "\" is out of range"));
    }
    return v;
  }
  absl::StatusOr<std::string> String(std::string_view key) {
    if (!Literal("\"")) return Error(StrCat("field \"", key, "\" is not a string"));
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) return Error(StrCat("field \"", key, "\": unterminated string"));
      unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c == '\\') {
        if (pos_ + 1 >= s_.size()) return Error("truncated escape");
        char e = s_[pos_ + 1];
        if (e == '"' || e == '\\') {
          out.push_back(e);
          pos_ += 2;
          continue;
        }
        // Only \u00xx for control characters, lowercase hex: the encoder's one form.
        if (e != 'u' || pos_ + 6 > s_.size() || s_.substr(pos_ + 2, 2) != "00") {
          return Error(StrCat("field \"", key, "\": non-canonical escape"));
        }
        int hi = HexValue(s_[pos_ + 4]), lo = HexValue(s_[pos_ + 5]);
        if (hi < 0 || lo < 0 || hi > 1) {
          return Error(StrCat("field \"", key, "\": non-canonical escape"));
        }
        out.push_back(static_cast<char>(hi * 16 + lo));
        pos_ += 6;
        continue;
      }
      if (c < 0x20) return Error(StrCat("field \"", key, "\": raw control character"));
      if (c < 0x80) {
        out.push_back(static_cast<char>(c));
        ++pos_;
        continue;
      }
      size_t len = Utf8Length(s_.substr(pos_));
      if (len == 0) return Error(StrCat("field \"", key, "\": invalid UTF-8"));
      out.append(s_.substr(pos_, len));
      pos_ += len;
    }
  }
  bool AtEnd() const { return pos_ == s_.size(); }

 private:
  static int HexValue(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  }
  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

namespace internal {

void AppendEventHeader(std::string& out, int64_t seq, int64_t time_ms) {
  out.append("{\"v\":1");
  IntField(out, "seq", seq);
  IntField(out, "time_ms", time_ms);
}

std::string EncodeEventBody(const AuditEvent& e) {
  std::string out;
  out.reserve(256 + e.resource.size() + e.reason.size());
  StringField(out, "request_id", e.request_id);
  StringField(out, "actor_kind", e.actor_kind);
  StringField(out, "actor_id", e.actor_id);
  StringField(out, "actor_name", e.actor_name);
  StringField(out, "token_id", e.token_id);
  StringField(out, "tenant", e.tenant);
  StringField(out, "action", e.action);
  StringField(out, "method", e.method);
  StringField(out, "resource", e.resource);
  StringField(out, "decision", e.decision);
  StringField(out, "reason", e.reason);
  IntField(out, "status", e.status);
  IntField(out, "bytes", e.bytes);
  StringField(out, "source", e.source);
  out.push_back('}');
  return out;
}

}  // namespace internal

std::string EncodeEvent(const AuditEvent& e) {
  std::string out;
  internal::AppendEventHeader(out, e.seq, e.time_ms);
  out += internal::EncodeEventBody(e);
  return out;
}

absl::StatusOr<AuditEvent> DecodeEvent(std::string_view line) {
  Reader r(line);
  AuditEvent e;
  if (!r.Literal("{\"v\":1,")) {
    return absl::InvalidArgumentError("event does not start with {\"v\":1 (unknown format or version)");
  }
  auto int_field = [&](std::string_view key, auto& out) -> absl::Status {
    WARDEN_RETURN_IF_ERROR(r.Key(key, false));
    auto v = r.Int(key);
    if (!v.ok()) return v.status();
    using T = std::remove_reference_t<decltype(out)>;
    if (*v < std::numeric_limits<T>::min() || *v > std::numeric_limits<T>::max()) {
      return r.Error(StrCat("field \"", key, "\" is out of range"));
    }
    out = static_cast<T>(*v);
    return absl::OkStatus();
  };
  auto str_field = [&](std::string_view key, std::string& out) -> absl::Status {
    WARDEN_RETURN_IF_ERROR(r.Key(key, false));
    auto v = r.String(key);
    if (!v.ok()) return v.status();
    out = *std::move(v);
    return absl::OkStatus();
  };
  // The first key follows `{"v":1,` directly.
  if (!r.Literal("\"seq\":")) return r.Error("expected field \"seq\" here");
  auto seq = r.Int("seq");
  if (!seq.ok()) return seq.status();
  if (*seq < 0) return r.Error("field \"seq\" is negative");
  e.seq = *seq;
  WARDEN_RETURN_IF_ERROR(int_field("time_ms", e.time_ms));
  WARDEN_RETURN_IF_ERROR(str_field("request_id", e.request_id));
  WARDEN_RETURN_IF_ERROR(str_field("actor_kind", e.actor_kind));
  WARDEN_RETURN_IF_ERROR(str_field("actor_id", e.actor_id));
  WARDEN_RETURN_IF_ERROR(str_field("actor_name", e.actor_name));
  WARDEN_RETURN_IF_ERROR(str_field("token_id", e.token_id));
  WARDEN_RETURN_IF_ERROR(str_field("tenant", e.tenant));
  WARDEN_RETURN_IF_ERROR(str_field("action", e.action));
  WARDEN_RETURN_IF_ERROR(str_field("method", e.method));
  WARDEN_RETURN_IF_ERROR(str_field("resource", e.resource));
  WARDEN_RETURN_IF_ERROR(str_field("decision", e.decision));
  WARDEN_RETURN_IF_ERROR(str_field("reason", e.reason));
  WARDEN_RETURN_IF_ERROR(int_field("status", e.status));
  WARDEN_RETURN_IF_ERROR(int_field("bytes", e.bytes));
  WARDEN_RETURN_IF_ERROR(str_field("source", e.source));
  if (!r.Literal("}") || !r.AtEnd()) return r.Error("expected the end of the event");
  return e;
}

namespace internal {

std::string SegmentName(uint64_t first_seq) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "seg-%020llu.jsonl", static_cast<unsigned long long>(first_seq));
  return buf;
}

std::string IndexName(uint64_t first_seq) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "seg-%020llu.idx", static_cast<unsigned long long>(first_seq));
  return buf;
}

std::optional<uint64_t> ParseSegmentName(std::string_view name) {
  if (name.size() != kSegmentPrefix.size() + 20 + kSegmentSuffix.size() ||
      name.substr(0, kSegmentPrefix.size()) != kSegmentPrefix ||
      name.substr(name.size() - kSegmentSuffix.size()) != kSegmentSuffix) {
    return std::nullopt;
  }
  std::string_view digits = name.substr(kSegmentPrefix.size(), 20);
  uint64_t v = 0;
  auto r = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (r.ec != std::errc() || r.ptr != digits.data() + digits.size()) return std::nullopt;
  return v;
}

absl::StatusOr<std::vector<SegmentFile>> ListSegments(const std::string& dir) {
  std::vector<SegmentFile> out;
  for (bool archive : {false, true}) {
    std::string d = archive ? StrCat(dir, "/", kArchiveDir) : dir;
    DIR* handle = ::opendir(d.c_str());
    if (handle == nullptr) {
      if (archive && errno == ENOENT) break;  // nothing archived
      return absl::NotFoundError(StrCat("cannot list audit dir ", d, ": ", std::strerror(errno)));
    }
    std::string prefix = archive ? StrCat(kArchiveDir, "/") : "";
    while (dirent* ent = ::readdir(handle)) {
      if (auto first = ParseSegmentName(ent->d_name)) {
        out.push_back({*first, prefix + ent->d_name, prefix + IndexName(*first)});
      }
    }
    ::closedir(handle);
  }
  std::sort(out.begin(), out.end(),
            [](const SegmentFile& a, const SegmentFile& b) { return a.first_seq < b.first_seq; });
  for (size_t i = 1; i < out.size(); ++i) {
    if (out[i].first_seq == out[i - 1].first_seq) {
      return absl::DataLossError(StrCat("audit segment ", out[i].first_seq, " is both ",
                                        out[i - 1].name, " and ", out[i].name,
                                        " (an archive move left a copy?)"));
    }
  }
  return out;
}

namespace {
// Parses an unsigned decimal at `p` ending at `end`; advances p. No leading zeros.
bool ParseU64(const char*& p, const char* end, uint64_t& out) {
  const char* start = p;
  auto r = std::from_chars(p, end, out);
  if (r.ec != std::errc() || r.ptr == start) return false;
  if (r.ptr - start > 1 && *start == '0') return false;
  p = r.ptr;
  return true;
}
}  // namespace

std::optional<EventHeader> ParseEventHeader(std::string_view line) {
  static constexpr std::string_view kStart = "{\"v\":1,\"seq\":";
  static constexpr std::string_view kTime = ",\"time_ms\":";
  if (line.substr(0, kStart.size()) != kStart) return std::nullopt;
  const char* p = line.data() + kStart.size();
  const char* end = line.data() + line.size();
  EventHeader h;
  if (!ParseU64(p, end, h.seq)) return std::nullopt;
  if (static_cast<size_t>(end - p) < kTime.size() || std::string_view(p, kTime.size()) != kTime) {
    return std::nullopt;
  }
  p += kTime.size();
  bool neg = p < end && *p == '-';
  if (neg) ++p;
  uint64_t t = 0;
  if (!ParseU64(p, end, t) || t > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return std::nullopt;
  }
  if (p >= end || *p != ',') return std::nullopt;
  h.time_ms = neg ? -static_cast<int64_t>(t) : static_cast<int64_t>(t);
  return h;
}

void AppendIndexEntry(std::string& out, const IndexEntry& e) {
  char buf[kIndexEntrySize];
  uint64_t t = static_cast<uint64_t>(e.time_ms);
  for (int i = 0; i < 8; ++i) {
    buf[i] = static_cast<char>(e.offset >> (8 * i));
    buf[8 + i] = static_cast<char>(t >> (8 * i));
    buf[16 + i] = static_cast<char>(e.hash_prefix >> (8 * i));
  }
  out.append(buf, sizeof(buf));
}

IndexEntry ReadIndexEntry(const char* p) {
  auto u64 = [](const char* q) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(q[i]);
    return v;
  };
  return IndexEntry{u64(p), static_cast<int64_t>(u64(p + 8)), u64(p + 16)};
}

uint64_t HashPrefix(const MerkleHash& h) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | h[i];
  return v;
}

size_t ZeroTailStart(std::string_view data) {
  // Word-at-a-time from the back: the zero tail of a preallocated segment may be megabytes.
  size_t end = data.size();
  while (end >= 8) {
    uint64_t w;
    std::memcpy(&w, data.data() + end - 8, 8);
    if (w != 0) break;
    end -= 8;
  }
  while (end > 0 && data[end - 1] == '\0') --end;
  return end;
}

size_t LineEnd(std::string_view data, size_t pos) {
  const char* begin = data.data() + pos;
  const char* nl = static_cast<const char*>(std::memchr(begin, '\n', data.size() - pos));
  size_t len = nl != nullptr ? static_cast<size_t>(nl - begin) : data.size() - pos;
  if (std::memchr(begin, '\0', len) != nullptr || nl == nullptr) return std::string_view::npos;
  return pos + len;
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, StrCat("open ", path));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return absl::ErrnoToStatus(err, StrCat("stat ", path));
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return absl::ErrnoToStatus(err, StrCat("read ", path));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  ::close(fd);
  return out;
}

absl::Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, StrCat("open directory ", dir));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return absl::ErrnoToStatus(err, StrCat("fsync directory ", dir));
  return absl::OkStatus();
}

absl::Status PutWholeFile(const std::string& path, std::string_view content, int mode,
                          bool replace) {
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = StrCat(path, ".tmp-", ::getpid(), "-", counter.fetch_add(1));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return absl::ErrnoToStatus(errno, StrCat("create ", tmp));
  bool ok = true;
  for (std::string_view rest = content; ok && !rest.empty();) {
    ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) rest.remove_prefix(static_cast<size_t>(n));
  }
  ok = ok && ::fchmod(fd, static_cast<mode_t>(mode)) == 0 && ::fsync(fd) == 0;
  int err = errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    return absl::ErrnoToStatus(err, StrCat("write ", tmp));
  }
  const int rc = replace ? ::rename(tmp.c_str(), path.c_str()) : ::link(tmp.c_str(), path.c_str());
  err = errno;
  if (!replace || rc != 0) ::unlink(tmp.c_str());
  if (rc != 0) {
    if (err == EEXIST) return absl::AlreadyExistsError(StrCat(path, " already exists"));
    return absl::ErrnoToStatus(err, StrCat(replace ? "rename into " : "link into ", path));
  }
  const size_t slash = path.rfind('/');
  return SyncDir(slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash)));
}

void RemoveTempFiles(const std::string& dir, std::string_view name) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  const std::string prefix = StrCat(name, ".tmp-");
  while (dirent* e = ::readdir(d)) {
    std::string_view n(e->d_name);
    if (n.substr(0, prefix.size()) == prefix) ::unlinkat(::dirfd(d), e->d_name, 0);
  }
  ::closedir(d);
}

}  // namespace internal

absl::StatusOr<int> ArchiveAuditSegments(const std::string& dir, uint64_t before_seq) {
  WARDEN_ASSIGN_OR_RETURN(auto segments, internal::ListSegments(dir));
  std::string archive = StrCat(dir, "/", internal::kArchiveDir);
  if (::mkdir(archive.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::ErrnoToStatus(errno, StrCat("create ", archive));
  }
  int moved = 0;
  // Never the newest segment (the server appends to it); a segment goes when every event in it
  // is below before_seq, i.e. when the next segment starts at or below it.
  for (size_t i = 0; i + 1 < segments.size(); ++i) {
    const internal::SegmentFile& seg = segments[i];
    if (seg.archived() || segments[i + 1].first_seq > before_seq) continue;
    // The index first: a reader that finds the segment in archive/ finds its index there too.
    for (const std::string& name : {seg.index, seg.name}) {
      std::string from = StrCat(dir, "/", name), to = StrCat(archive, "/", name);
      if (::rename(from.c_str(), to.c_str()) != 0 && !(errno == ENOENT && name == seg.index)) {
        return absl::ErrnoToStatus(errno, StrCat("move ", from, " to ", to));
      }
    }
    ++moved;
  }
  if (moved > 0) {
    WARDEN_RETURN_IF_ERROR(internal::SyncDir(archive));
    WARDEN_RETURN_IF_ERROR(internal::SyncDir(dir));
  }
  return moved;
}

absl::StatusOr<std::vector<AuditEvent>> ReadAuditEvents(const std::string& dir) {
  WARDEN_ASSIGN_OR_RETURN(auto segments, internal::ListSegments(dir));
  std::vector<AuditEvent> out;
  for (const auto& seg : segments) {
    std::string path = StrCat(dir, "/", seg.name);
    WARDEN_ASSIGN_OR_RETURN(std::string data, internal::ReadWholeFile(path));
    size_t pos = 0;
    data.resize(internal::ZeroTailStart(data));  // preallocated, not yet written
    while (pos < data.size()) {
      size_t nl = internal::LineEnd(data, pos);
      if (nl == std::string::npos) break;  // an incomplete last line is not an event (yet)
      auto e = DecodeEvent(std::string_view(data).substr(pos, nl - pos));
      if (!e.ok()) {
        return absl::DataLossError(
            StrCat(path, " offset ", pos, ": ", std::string(e.status().message())));
      }
      out.push_back(*std::move(e));
      pos = nl + 1;
    }
  }
  return out;
}

}  // namespace warden::audit
