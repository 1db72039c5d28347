#include "runtime/tar.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/status.h"
#include "common/strings.h"

namespace warden::runtime {
namespace {

using common::StrCat;

constexpr size_t kBlock = 512;
constexpr size_t kMaxPaxBytes = 1 << 20;
constexpr size_t kMaxPath = 4096;

std::string Printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s.substr(0, 120)) out += (c < 0x20 || c >= 0x7f) ? '?' : static_cast<char>(c);
  return out;
}

std::string_view CField(std::string_view block, size_t off, size_t len) {
  std::string_view f = block.substr(off, len);
  size_t nul = f.find('\0');
  return nul == std::string_view::npos ? f : f.substr(0, nul);
}

absl::StatusOr<uint64_t> NumField(std::string_view block, size_t off, size_t len, std::string_view what) {
  std::string_view f = block.substr(off, len);
  if (!f.empty() && (static_cast<unsigned char>(f[0]) & 0x80)) {
    // GNU base-256: big-endian, high bit of the first byte is the marker; negative refused.
    if (static_cast<unsigned char>(f[0]) & 0x40) return absl::InvalidArgumentError(StrCat("tar: negative ", what));
    uint64_t v = static_cast<unsigned char>(f[0]) & 0x3f;
    for (size_t i = 1; i < f.size(); ++i) {
      if (v >> 56) return absl::InvalidArgumentError(StrCat("tar: ", what, " overflows"));
      v = (v << 8) | static_cast<unsigned char>(f[i]);
    }
    return v;
  }
  uint64_t v = 0;
  size_t i = 0;
  while (i < f.size() && f[i] == ' ') ++i;
  bool any = false;
  for (; i < f.size(); ++i) {
    char c = f[i];
    if (c == '\0' || c == ' ') break;
    if (c < '0' || c > '7') return absl::InvalidArgumentError(StrCat("tar: bad octal digit in ", what));
    if (v >> 60) return absl::InvalidArgumentError(StrCat("tar: ", what, " overflows"));
    v = v * 8 + static_cast<uint64_t>(c - '0');
    any = true;
  }
  for (; i < f.size(); ++i) {
    if (f[i] != '\0' && f[i] != ' ') return absl::InvalidArgumentError(StrCat("tar: junk after ", what));
  }
  if (!any && what != "size" && what != "mode") return uint64_t{0};
  return v;
}

// PAX records: "<len> <key>=<value>\n".
absl::Status ParsePax(std::string_view data, TarEntry& e, bool& have_path, bool& have_link, std::optional<uint64_t>& size) {
  while (!data.empty()) {
    size_t sp = data.find(' ');
    if (sp == std::string_view::npos || sp == 0 || sp > 10) return absl::InvalidArgumentError("tar: malformed PAX record length");
    uint64_t len = 0;
    for (size_t i = 0; i < sp; ++i) {
      if (data[i] < '0' || data[i] > '9') return absl::InvalidArgumentError("tar: malformed PAX record length");
      len = len * 10 + static_cast<uint64_t>(data[i] - '0');
    }
    if (len <= sp + 1 || len > data.size() || data[len - 1] != '\n') return absl::InvalidArgumentError("tar: PAX record length out of range");
    std::string_view rec = data.substr(sp + 1, len - sp - 2);
    size_t eq = rec.find('=');
    if (eq == std::string_view::npos) return absl::InvalidArgumentError("tar: PAX record without '='");
    std::string_view key = rec.substr(0, eq), value = rec.substr(eq + 1);
    if (key == "path") {
      e.path = std::string(value);
      have_path = true;
    } else if (key == "linkpath") {
      e.linkname = std::string(value);
      have_link = true;
    } else if (key == "size") {
      uint64_t v = 0;
      if (value.empty() || value.size() > 19) return absl::InvalidArgumentError("tar: bad PAX size");
      for (char c : value) {
        if (c < '0' || c > '9') return absl::InvalidArgumentError("tar: bad PAX size");
        v = v * 10 + static_cast<uint64_t>(c - '0');
      }
      size = v;
    }
    data.remove_prefix(len);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::optional<TarEntry>> ParseTarHeader(std::string_view block) {
  if (block.size() != kBlock) return absl::InvalidArgumentError("tar: short header block");
  bool zero = true;
  for (char c : block) {
    if (c != 0) {
      zero = false;
      break;
    }
  }
  if (zero) return std::optional<TarEntry>();
  WARDEN_ASSIGN_OR_RETURN(uint64_t chk, NumField(block, 148, 8, "checksum"));
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(block[i]);
  }
  if (sum != chk) return absl::InvalidArgumentError("tar: header checksum mismatch");
  TarEntry e;
  std::string_view name = CField(block, 0, 100);
  std::string_view magic = block.substr(257, 6);
  std::string_view prefix = (magic.substr(0, 5) == "ustar") ? CField(block, 345, 155) : std::string_view();
  // GNU tar puts other data in the prefix area; only POSIX ustar ("ustar\0") has a prefix.
  if (magic == std::string_view("ustar ", 6)) prefix = {};
  e.path = prefix.empty() ? std::string(name) : StrCat(prefix, "/", name);
  e.linkname = std::string(CField(block, 157, 100));
  WARDEN_ASSIGN_OR_RETURN(uint64_t mode, NumField(block, 100, 8, "mode"));
  e.mode = static_cast<uint32_t>(mode & 07777);
  WARDEN_ASSIGN_OR_RETURN(e.size, NumField(block, 124, 12, "size"));
  switch (block[156]) {
    case '0': case '\0': case '7': e.type = TarEntry::Type::kFile; break;
    case '1': e.type = TarEntry::Type::kHardLink; break;
    case '2': e.type = TarEntry::Type::kSymlink; break;
    case '3': e.type = TarEntry::Type::kCharDev; break;
    case '4': e.type = TarEntry::Type::kBlockDev; break;
    case '5': e.type = TarEntry::Type::kDir; break;
    case '6': e.type = TarEntry::Type::kFifo; break;
    default: e.type = TarEntry::Type::kOther; break;
  }
  return std::optional<TarEntry>(e);
}

absl::Status TarReader::ReadExact(char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    WARDEN_ASSIGN_OR_RETURN(size_t r, source_(buf + got, n - got));
    if (r == 0) return absl::InvalidArgumentError("tar: truncated archive");
    got += r;
  }
  return absl::OkStatus();
}

absl::Status TarReader::SkipRemaining() {
  char buf[4096];
  uint64_t left = remaining_ + padding_;
  while (left > 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(left, sizeof(buf)));
    WARDEN_RETURN_IF_ERROR(ReadExact(buf, n));
    left -= n;
  }
  remaining_ = padding_ = 0;
  return absl::OkStatus();
}

absl::StatusOr<size_t> TarReader::ReadData(char* buf, size_t n) {
  if (remaining_ == 0) return size_t{0};
  size_t want = static_cast<size_t>(std::min<uint64_t>(n, remaining_));
  WARDEN_RETURN_IF_ERROR(ReadExact(buf, want));
  remaining_ -= want;
  return want;
}

absl::StatusOr<std::optional<TarEntry>> TarReader::Next() {
  WARDEN_RETURN_IF_ERROR(SkipRemaining());
  std::string long_name, long_link;
  bool have_long_name = false, have_long_link = false;
  TarEntry pax;
  bool pax_path = false, pax_link = false;
  std::optional<uint64_t> pax_size;
  for (int guard = 0; guard < 16; ++guard) {
    char block[kBlock];
    // End of stream without the two zero blocks is accepted (many writers omit them).
    WARDEN_ASSIGN_OR_RETURN(size_t first, source_(block, kBlock));
    if (first == 0) return std::optional<TarEntry>();
    if (first < kBlock) WARDEN_RETURN_IF_ERROR(ReadExact(block + first, kBlock - first));
    WARDEN_ASSIGN_OR_RETURN(auto hdr, ParseTarHeader(std::string_view(block, kBlock)));
    if (!hdr) return std::optional<TarEntry>();
    TarEntry e = *hdr;
    char flag = block[156];
    if (flag == 'x' || flag == 'g' || flag == 'L' || flag == 'K') {
      if (e.size > kMaxPaxBytes) return absl::InvalidArgumentError("tar: extended header over 1 MiB");
      std::string data(static_cast<size_t>(e.size), '\0');
      WARDEN_RETURN_IF_ERROR(ReadExact(data.data(), data.size()));
      size_t pad = (kBlock - e.size % kBlock) % kBlock;
      char junk[kBlock];
      WARDEN_RETURN_IF_ERROR(ReadExact(junk, pad));
      if (flag == 'x') {
        WARDEN_RETURN_IF_ERROR(ParsePax(data, pax, pax_path, pax_link, pax_size));
      } else if (flag == 'L') {
        long_name = data.substr(0, data.find('\0'));
        have_long_name = true;
      } else if (flag == 'K') {
        long_link = data.substr(0, data.find('\0'));
        have_long_link = true;
      }
      continue;  // global headers ('g') are ignored
    }
    if (have_long_name) e.path = long_name;
    if (have_long_link) e.linkname = long_link;
    if (pax_path) e.path = pax.path;
    if (pax_link) e.linkname = pax.linkname;
    if (pax_size) e.size = *pax_size;
    if (e.type != TarEntry::Type::kFile) {
      // Only regular files carry data we keep; skip any other entry's payload.
      remaining_ = e.size;
      padding_ = (kBlock - e.size % kBlock) % kBlock;
      WARDEN_RETURN_IF_ERROR(SkipRemaining());
      e.size = 0;
    } else {
      remaining_ = e.size;
      padding_ = (kBlock - e.size % kBlock) % kBlock;
    }
    if (e.path.size() > kMaxPath || e.linkname.size() > kMaxPath) {
      return absl::InvalidArgumentError("tar: entry name over 4096 bytes");
    }
    return std::optional<TarEntry>(e);
  }
  return absl::InvalidArgumentError("tar: too many extended headers in a row");
}

absl::StatusOr<std::string> CleanArchivePath(std::string_view path) {
  if (path.size() > kMaxPath) return absl::InvalidArgumentError("tar: path over 4096 bytes");
  if (path.find('\0') != std::string_view::npos) return absl::InvalidArgumentError("tar: path contains NUL");
  std::string out;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view part = path.substr(i, j - i);
    i = j + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") return absl::InvalidArgumentError(StrCat("tar: path escapes the root: ", Printable(path)));
    if (!out.empty()) out += '/';
    out += part;
  }
  return out;
}

namespace {

int OpenBeneath(int root, const std::string& rel, uint64_t flags) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  return static_cast<int>(syscall(SYS_openat2, root, rel.empty() ? "." : rel.c_str(), &how, sizeof(how)));
}

// Opens (creating as needed) directory `rel` under root without following any symlink.
absl::StatusOr<int> OpenDirCreating(int root, const std::string& rel) {
  int fd = OpenBeneath(root, rel, O_PATH | O_DIRECTORY);
  if (fd >= 0) return fd;
  if (errno != ENOENT) {
    return absl::InvalidArgumentError(StrCat("tar: parent ", Printable(rel), " is not a plain directory (", std::strerror(errno), ")"));
  }
  size_t slash = rel.rfind('/');
  std::string parent = slash == std::string::npos ? "" : rel.substr(0, slash);
  std::string base = slash == std::string::npos ? rel : rel.substr(slash + 1);
  WARDEN_ASSIGN_OR_RETURN(int pfd, OpenDirCreating(root, parent));
  if (mkdirat(pfd, base.c_str(), 0755) != 0 && errno != EEXIST) {
    int e = errno;
    close(pfd);
    return absl::InternalError(StrCat("mkdir ", Printable(rel), ": ", std::strerror(e)));
  }
  close(pfd);
  fd = OpenBeneath(root, rel, O_PATH | O_DIRECTORY);
  if (fd < 0) return absl::InvalidArgumentError(StrCat("tar: cannot open directory ", Printable(rel)));
  return fd;
}

// Removes `name` in dirfd, recursively, never following symlinks.
void RemoveAt(int parent_fd, const char* name) {
  if (unlinkat(parent_fd, name, 0) == 0 || errno == ENOENT) return;
  int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  DIR* d = fdopendir(fd);
  if (d == nullptr) {
    close(fd);
    return;
  }
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
  }
  for (const std::string& n : names) RemoveAt(dirfd(d), n.c_str());
  closedir(d);
  unlinkat(parent_fd, name, AT_REMOVEDIR);
}

}  // namespace

absl::StatusOr<ExtractStats> ExtractTar(TarReader& reader, const std::string& root_dir, const ExtractOptions& options) {
  int root = open(root_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) return absl::InternalError(StrCat("cannot open ", root_dir, ": ", std::strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } root_closer{root};
  ExtractStats stats;
  std::vector<char> buf(1 << 16);
  for (;;) {
    WARDEN_ASSIGN_OR_RETURN(auto entry, reader.Next());
    if (!entry) break;
    if (++stats.entries > options.max_entries) return absl::InvalidArgumentError("tar: too many entries");
    WARDEN_ASSIGN_OR_RETURN(std::string rel, CleanArchivePath(entry->path));
    if (rel.empty()) continue;  // the root itself
    size_t slash = rel.rfind('/');
    std::string parent = slash == std::string::npos ? "" : rel.substr(0, slash);
    std::string base = slash == std::string::npos ? rel : rel.substr(slash + 1);
    WARDEN_ASSIGN_OR_RETURN(int pfd, OpenDirCreating(root, parent));
    Closer pclose{pfd};

    if (options.apply_whiteouts && base.rfind(".wh.", 0) == 0) {
      if (base == ".wh..wh..opq") {
        int dfd = OpenBeneath(root, parent, O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
          DIR* d = fdopendir(dfd);
          std::vector<std::string> names;
          while (dirent* e = d ? readdir(d) : nullptr) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
          }
          for (const std::string& n : names) RemoveAt(dirfd(d), n.c_str());
          if (d) closedir(d); else close(dfd);
        }
      } else {
        std::string victim = base.substr(4);
        if (victim.empty() || victim == "." || victim == "..") return absl::InvalidArgumentError("tar: malformed whiteout");
        int dfd = OpenBeneath(root, parent, O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
          RemoveAt(dfd, victim.c_str());
          close(dfd);
        }
      }
      continue;
    }

    uint32_t mode = entry->mode;
    if (mode & 06000) {
      // setuid/setgid bits never survive import (escalation inside the job).
      ++stats.dropped_setid_bits;
      mode &= ~06000u;
    }
    switch (entry->type) {
      case TarEntry::Type::kDir: {
        if (mkdirat(pfd, base.c_str(), 0755) != 0 && errno != EEXIST) {
          return absl::InternalError(StrCat("mkdir ", Printable(rel), ": ", std::strerror(errno)));
        }
        int dfd = OpenBeneath(root, rel, O_RDONLY | O_DIRECTORY);
        if (dfd < 0) return absl::InvalidArgumentError(StrCat("tar: ", Printable(rel), " is not a plain directory"));
        fchmod(dfd, (mode & 01777) | 0700);
        close(dfd);
        break;
      }
      case TarEntry::Type::kFile: {
        // Replace whatever was there (a lower layer's file or a planted symlink) without
        // following it.
        if (unlinkat(pfd, base.c_str(), 0) != 0 && errno == EISDIR) RemoveAt(pfd, base.c_str());
        int wfd = -1;
        {
          int dfd = OpenBeneath(root, parent, O_RDONLY | O_DIRECTORY);
          if (dfd < 0) return absl::InvalidArgumentError(StrCat("tar: cannot open parent of ", Printable(rel)));
          wfd = openat(dfd, base.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
          close(dfd);
        }
        if (wfd < 0) return absl::InternalError(StrCat("create ", Printable(rel), ": ", std::strerror(errno)));
        Closer wclose{wfd};
        for (;;) {
          WARDEN_ASSIGN_OR_RETURN(size_t n, reader.ReadData(buf.data(), buf.size()));
          if (n == 0) break;
          stats.bytes += n;
          if (stats.bytes > options.max_total_bytes) return absl::InvalidArgumentError("tar: extracted size over the limit");
          size_t off = 0;
          while (off < n) {
            ssize_t w = write(wfd, buf.data() + off, n - off);
            if (w < 0) {
              if (errno == EINTR) continue;
              return absl::InternalError(StrCat("write ", Printable(rel), ": ", std::strerror(errno)));
            }
            off += static_cast<size_t>(w);
          }
        }
        fchmod(wfd, mode & 01777);
        break;
      }
      case TarEntry::Type::kSymlink: {
        if (!options.allow_links) {
          if (!options.skip_links) return absl::InvalidArgumentError(StrCat("tar: link entry ", Printable(rel), " not allowed here"));
          ++stats.skipped_links;
          break;
        }
        if (entry->linkname.empty() || entry->linkname.find('\0') != std::string::npos) {
          return absl::InvalidArgumentError(StrCat("tar: empty symlink target for ", Printable(rel)));
        }
        if (unlinkat(pfd, base.c_str(), 0) != 0 && errno == EISDIR) RemoveAt(pfd, base.c_str());
        int dfd = OpenBeneath(root, parent, O_RDONLY | O_DIRECTORY);
        if (dfd < 0) return absl::InvalidArgumentError(StrCat("tar: cannot open parent of ", Printable(rel)));
        // The target is stored as text; it is only ever resolved inside the container's root
        // (extraction never follows symlinks).
        int r = symlinkat(entry->linkname.c_str(), dfd, base.c_str());
        int e = errno;
        close(dfd);
        if (r != 0) return absl::InternalError(StrCat("symlink ", Printable(rel), ": ", std::strerror(e)));
        break;
      }
      case TarEntry::Type::kHardLink: {
        if (!options.allow_links) {
          if (!options.skip_links) return absl::InvalidArgumentError(StrCat("tar: link entry ", Printable(rel), " not allowed here"));
          ++stats.skipped_links;
          break;
        }
        WARDEN_ASSIGN_OR_RETURN(std::string target, CleanArchivePath(entry->linkname));
        if (target.empty()) return absl::InvalidArgumentError(StrCat("tar: hard link ", Printable(rel), " to the root"));
        size_t ts = target.rfind('/');
        std::string tparent = ts == std::string::npos ? "" : target.substr(0, ts);
        std::string tbase = ts == std::string::npos ? target : target.substr(ts + 1);
        int tfd = OpenBeneath(root, tparent, O_RDONLY | O_DIRECTORY);
        if (tfd < 0) return absl::InvalidArgumentError(StrCat("tar: hard link target ", Printable(target), " not inside the image"));
        if (unlinkat(pfd, base.c_str(), 0) != 0 && errno == EISDIR) RemoveAt(pfd, base.c_str());
        int dfd = OpenBeneath(root, parent, O_RDONLY | O_DIRECTORY);
        int r = dfd >= 0 ? linkat(tfd, tbase.c_str(), dfd, base.c_str(), 0) : -1;
        int e = errno;
        close(tfd);
        if (dfd >= 0) close(dfd);
        if (r != 0) return absl::InvalidArgumentError(StrCat("tar: hard link ", Printable(rel), " -> ", Printable(target), ": ", std::strerror(e)));
        break;
      }
      case TarEntry::Type::kCharDev:
      case TarEntry::Type::kBlockDev:
      case TarEntry::Type::kFifo:
        // Never created: a device node in an image would be a way around the device rules.
        ++stats.dropped_devices;
        break;
      case TarEntry::Type::kOther:
        break;
    }
  }
  return stats;
}

}  // namespace warden::runtime
