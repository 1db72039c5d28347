// DatasetStager: see dataset_stager.h. Why each step:
// - a private tmpfs per job (not one shared directory): its size caps what the server can make us
//   hold, mode 0700 keeps other local users out, nosuid/nodev/noexec keep a dataset from being a
//   setuid binary or a device node, and unmounting it frees every page at once (no file is left
//   behind for an unlink to miss);
// - statfs after mounting (or on the fallback): a failed or shadowed mount, or a /dev/shm that is
//   a plain directory on disk, must never receive plaintext;
// - files are created O_EXCL|O_NOFOLLOW in a directory we just made, so a planted symlink cannot
//   redirect plaintext elsewhere; names are the basename of a vault name (no traversal: the
//   server and the decoder refuse "." and ".." segments, checked again here).
#include "agent/dataset_stager.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <linux/magic.h>

#include "common/encoding.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::agent {
namespace {

using common::StrCat;

constexpr uint64_t kChunksPerFetch = 16;

bool SafeJobId(const std::string& id) {
  if (id.empty() || id.size() > 128 || id[0] == '.') return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '-')) {
      return false;
    }
  }
  return true;
}

std::string Basename(const std::string& name) {
  size_t slash = name.rfind('/');
  return slash == std::string::npos ? name : name.substr(slash + 1);
}

absl::Status MakeDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(StrCat("cannot create ", dir, ": ", std::strerror(errno)));
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) {
    return absl::FailedPreconditionError(StrCat(dir, " is not a directory owned by the agent"));
  }
  ::chmod(dir.c_str(), 0700);
  return absl::OkStatus();
}

bool IsMountPoint(const std::string& path) {
  struct stat a {}, b {};
  if (::lstat(path.c_str(), &a) != 0 || !S_ISDIR(a.st_mode)) return false;
  std::string parent = std::filesystem::path(path).parent_path().string();
  if (::stat(parent.c_str(), &b) != 0) return false;
  return a.st_dev != b.st_dev;
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  void Update(std::string_view d) { EVP_DigestUpdate(ctx_, d.data(), d.size()); }
  std::string Hex() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_, out, &n);
    return common::HexEncode(std::string_view(reinterpret_cast<char*>(out), n));
  }

 private:
  EVP_MD_CTX* ctx_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DatasetStager>> DatasetStager::Create(DatasetStagerOptions o) {
  if (o.dir.empty()) return absl::InvalidArgumentError("dataset stager: dir is required");
  if (o.shm_dir.empty()) {
    // One fallback directory per agent state dir (several agents may share a host in tests).
    o.shm_dir = StrCat("/dev/shm/gpuwarden-datasets-",
                       common::Sha256Hex(std::filesystem::absolute(o.dir).string()).substr(0, 16));
  }
  WARDEN_RETURN_IF_ERROR(MakeDir(o.dir));
  return std::unique_ptr<DatasetStager>(new DatasetStager(std::move(o)));
}

absl::Status DatasetStager::CheckMemoryBacked(const std::string& dir) {
  struct statfs fs {};
  if (::statfs(dir.c_str(), &fs) != 0) {
    return absl::FailedPreconditionError(StrCat("statfs ", dir, ": ", std::strerror(errno)));
  }
  if (static_cast<uint64_t>(fs.f_type) != TMPFS_MAGIC && static_cast<uint64_t>(fs.f_type) != RAMFS_MAGIC) {
    return absl::FailedPreconditionError(
        StrCat(dir, " is not memory-backed (file system type ", static_cast<uint64_t>(fs.f_type),
               "): decrypted datasets may only be placed on tmpfs or ramfs, never the node's disk"));
  }
  return absl::OkStatus();
}

std::string DatasetStager::JobRoot(const std::string& job_id, bool* mounted) const {
  if (mounted != nullptr) *mounted = false;
  if (!SafeJobId(job_id)) return "";
  std::string m = StrCat(options_.dir, "/", job_id);
  if (IsMountPoint(m)) {
    if (mounted != nullptr) *mounted = true;
    return m;
  }
  std::string f = StrCat(options_.shm_dir, "/", job_id);
  struct stat st {};
  if (::lstat(f.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return f;
  return "";
}

absl::StatusOr<std::string> DatasetStager::MakeJobRoot(const std::string& job_id, uint64_t bytes,
                                                       uint64_t fallback_extra, bool* mounted) {
  // Round up to pages; tmpfs also needs a little room for its inodes and directories.
  uint64_t size = ((bytes + options_.margin_bytes + 4095) / 4096) * 4096;
  std::string why_not_mounted = "mounting was not tried";
  *mounted = false;
  if (options_.try_mount) {
    const std::string m = StrCat(options_.dir, "/", job_id);
    WARDEN_RETURN_IF_ERROR(MakeDir(m));
    const std::string opts = StrCat("size=", size, ",mode=0700");
    if (::mount("gpuwarden-dataset", m.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                opts.c_str()) == 0) {
      if (absl::Status s = CheckMemoryBacked(m); !s.ok()) {
        (void)::umount2(m.c_str(), MNT_DETACH);
        return s;
      }
      *mounted = true;
      return m;
    }
    why_not_mounted = StrCat("mount -t tmpfs on ", m, " failed: ", std::strerror(errno));
    ::rmdir(m.c_str());
  }
  // Fallback: /dev/shm, which must itself be tmpfs (checked) and have room (it has no per-job cap).
  WARDEN_RETURN_IF_ERROR(MakeDir(options_.shm_dir));
  if (absl::Status s = CheckMemoryBacked(options_.shm_dir); !s.ok()) {
    return absl::FailedPreconditionError(
        StrCat("no memory-backed storage for datasets: ", why_not_mounted, "; ", s.message()));
  }
  size += fallback_extra;
  struct statfs fs {};
  if (::statfs(options_.shm_dir.c_str(), &fs) == 0 &&
      static_cast<uint64_t>(fs.f_bavail) * static_cast<uint64_t>(fs.f_bsize) < size) {
    return absl::ResourceExhaustedError(
        StrCat("datasets need ", size, " bytes of memory-backed storage; ", options_.shm_dir,
               " has ", static_cast<uint64_t>(fs.f_bavail) * fs.f_bsize, " free"));
  }
  const std::string f = StrCat(options_.shm_dir, "/", job_id);
  if (::mkdir(f.c_str(), 0700) != 0) {
    return absl::InternalError(StrCat("cannot create ", f, ": ", std::strerror(errno)));
  }
  return f;
}

absl::Status DatasetStager::Fetch(const std::string& job_id, const DatasetToStage& d,
                                  const std::string& file, const DatasetFetcher& fetch) {
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(StrCat("cannot create ", file, ": ", std::strerror(errno)));
  Sha256 sha;
  uint64_t got = 0, chunk = 0;
  absl::Status s;
  while (s.ok() && got < d.size) {
    auto data = fetch(job_id, d.index, chunk, kChunksPerFetch);
    if (!data.ok()) {
      s = data.status();
      break;
    }
    if (data->empty() || got + data->size() > d.size) {
      s = absl::DataLossError(StrCat("dataset \"", d.name, "\": the server sent ",
                                     got + data->size(), " bytes where ", d.size, " were recorded"));
      break;
    }
    sha.Update(*data);
    size_t off = 0;
    while (off < data->size()) {
      ssize_t n = ::write(fd, data->data() + off, data->size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        s = absl::ResourceExhaustedError(StrCat("writing dataset \"", d.name, "\" to ", file, ": ",
                                                std::strerror(errno)));
        break;
      }
      off += static_cast<size_t>(n);
    }
    got += data->size();
    chunk += kChunksPerFetch;
    std::fill(data->begin(), data->end(), '\0');  // no plaintext left in freed heap
  }
  if (s.ok()) {
    std::string hex = sha.Hex();
    if (hex != d.sha256) {
      s = absl::DataLossError(StrCat("dataset \"", d.name, "\": plaintext SHA-256 ", hex,
                                     " differs from the recorded ", d.sha256));
    }
  }
  // Read-only for the job: the file is read-only once complete.
  if (s.ok() && ::fchmod(fd, 0400) != 0) s = absl::InternalError(StrCat("chmod ", file));
  ::close(fd);
  return s;
}

absl::StatusOr<std::vector<ExecDataset>> DatasetStager::Stage(
    const std::string& job_id, const std::vector<DatasetToStage>& datasets,
    const DatasetFetcher& fetch) {
  if (!SafeJobId(job_id)) return absl::InvalidArgumentError(StrCat("bad job id \"", job_id, "\""));
  uint64_t total = 0, write_total = 0;
  for (const DatasetToStage& d : datasets) {
    if (d.write && d.size == 0) {
      return absl::InvalidArgumentError(StrCat("dataset \"", d.name, "\": a write dataset needs a size limit"));
    }
    const std::string base = Basename(d.name);
    if (base.empty() || base == "." || base == ".." || d.path.empty() || d.path[0] != '/') {
      return absl::InvalidArgumentError(StrCat("dataset \"", d.name, "\" at \"", d.path,
                                               "\" is not a valid mount"));
    }
    uint64_t& sum = d.write ? write_total : total;
    if (sum + d.size < sum) return absl::InvalidArgumentError("dataset sizes overflow");
    sum += d.size;
  }
  (void)Wipe(job_id);  // a leftover of an earlier attempt never mixes with this one
  bool mounted = false;
  WARDEN_ASSIGN_OR_RETURN(std::string root, MakeJobRoot(job_id, total, write_total, &mounted));
  std::vector<ExecDataset> out;
  absl::Status s;
  for (const DatasetToStage& d : datasets) {
    const std::string dir = StrCat(root, "/", d.index);
    if (::mkdir(dir.c_str(), 0700) != 0) {
      s = absl::InternalError(StrCat("cannot create ", dir, ": ", std::strerror(errno)));
      break;
    }
    if (d.write) {
      // The job's output directory starts empty. Its own tmpfs holds exactly the limit: writing
      // past it fails with ENOSPC in the job (and the server checks the size again). Without
      // mount rights (the /dev/shm fallback) only the server's check remains.
      if (mounted) {
        const std::string opts = StrCat("size=", ((d.size + 4095) / 4096) * 4096, ",mode=0700");
        if (::mount("gpuwarden-dataset-out", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts.c_str()) != 0) {
          s = absl::InternalError(StrCat("cannot mount the output tmpfs on ", dir, ": ", std::strerror(errno)));
          break;
        }
      }
      out.push_back(ExecDataset{d.name, dir, d.path, true});
      continue;
    }
    s = Fetch(job_id, d, StrCat(dir, "/", Basename(d.name)), fetch);
    if (!s.ok()) break;
    out.push_back(ExecDataset{d.name, dir, d.path, false});
  }
  if (!s.ok()) {
    (void)Wipe(job_id);
    return s;
  }
  return out;
}

absl::Status DatasetStager::Wipe(const std::string& job_id) {
  if (!SafeJobId(job_id)) return absl::InvalidArgumentError(StrCat("bad job id \"", job_id, "\""));
  absl::Status result;
  const std::string m = StrCat(options_.dir, "/", job_id);
  if (IsMountPoint(m)) {
    // The write datasets' own tmpfs mounts first (m would be busy with them).
    std::error_code dec;
    for (const auto& e : std::filesystem::directory_iterator(m, dec)) {
      const std::string sub = e.path().string();
      if (IsMountPoint(sub) && ::umount2(sub.c_str(), 0) != 0) (void)::umount2(sub.c_str(), MNT_DETACH);
    }
    // Unmounting a tmpfs frees its pages. A job process that still holds a file open (it should
    // be gone) keeps it busy: detach then, and the pages go with the last reference.
    if (::umount2(m.c_str(), 0) != 0 && ::umount2(m.c_str(), MNT_DETACH) != 0) {
      result = absl::InternalError(StrCat("cannot unmount ", m, ": ", std::strerror(errno)));
    }
  }
  std::error_code ec;
  if (!IsMountPoint(m)) std::filesystem::remove_all(m, ec);
  // The /dev/shm fallback: deleting the files frees their pages.
  std::filesystem::remove_all(StrCat(options_.shm_dir, "/", job_id), ec);
  if (ec && result.ok()) result = absl::InternalError(StrCat("cannot remove staged data: ", ec.message()));
  return result;
}

absl::Status DatasetStager::WriteBack(const std::string& job_id, const std::vector<ExecDataset>& staged,
                                      const DatasetUploader& upload) {
  if (!SafeJobId(job_id)) return absl::InvalidArgumentError(StrCat("bad job id \"", job_id, "\""));
  const std::string root = JobRoot(job_id);
  for (const ExecDataset& d : staged) {
    if (!d.writable) continue;
    // Only directories this stager made for the job: <job root>/<index>.
    const std::string base = Basename(d.name);
    const std::string index_text = Basename(d.host_dir);
    uint64_t index = 0;
    if (root.empty() || d.host_dir != StrCat(root, "/", index_text) || index_text.empty() ||
        index_text.find_first_not_of("0123456789") != std::string::npos || index_text.size() > 6 ||
        base.empty() || base == "." || base == "..") {
      return absl::FailedPreconditionError(StrCat("dataset \"", d.name, "\": its output directory ", d.host_dir,
                                                  " is not staged for job ", job_id));
    }
    index = std::stoull(index_text);
    const std::string file = StrCat(d.host_dir, "/", base);
    const std::string shown = StrCat(d.container_path, "/", base);
    // The job owned the directory: refuse a link (O_NOFOLLOW) and a FIFO or device (O_NONBLOCK
    // keeps a FIFO from blocking the open; fstat says what it is).
    int fd = ::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) {
        return absl::FailedPreconditionError(StrCat("dataset \"", d.name, "\": the job left no file ", shown,
                                                    " to write back"));
      }
      return absl::FailedPreconditionError(StrCat("dataset \"", d.name, "\": ", shown, " cannot be written back (",
                                                  errno == ELOOP ? "it is a symbolic link" : std::strerror(errno), ")"));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return absl::FailedPreconditionError(StrCat("dataset \"", d.name, "\": ", shown, " is not a regular file"));
    }
    Sha256 sha;
    std::string buf(1 << 20, '\0');
    uint64_t size = 0;
    absl::Status s;
    for (;;) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) s = absl::InternalError(StrCat("reading ", file, ": ", std::strerror(errno)));
      if (n <= 0) break;
      sha.Update(std::string_view(buf.data(), static_cast<size_t>(n)));
      size += static_cast<uint64_t>(n);
    }
    std::fill(buf.begin(), buf.end(), '\0');
    if (s.ok() && ::lseek(fd, 0, SEEK_SET) != 0) s = absl::InternalError(StrCat("lseek ", file));
    if (s.ok()) s = upload(job_id, index, fd, size, sha.Hex());
    ::close(fd);
    if (s.code() == absl::StatusCode::kAlreadyExists) s = absl::OkStatus();  // stored by an earlier try
    if (!s.ok()) return absl::Status(s.code(), StrCat("dataset \"", d.name, "\": ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status DatasetStager::WipeAllExcept(const std::set<std::string>& keep) {
  absl::Status result;
  for (const std::string& parent : {options_.dir, options_.shm_dir}) {
    std::error_code ec;
    std::vector<std::string> ids;
    for (const auto& e : std::filesystem::directory_iterator(parent, ec)) {
      std::string id = e.path().filename().string();
      if (SafeJobId(id) && !keep.count(id)) ids.push_back(id);
    }
    for (const std::string& id : ids) {
      absl::Status s = Wipe(id);
      if (!s.ok() && result.ok()) result = s;
    }
  }
  return result;
}

}  // namespace warden::agent
