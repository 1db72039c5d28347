// The Runner over an OCI runtime (runc or crun). See runtime.h and job_files.h.
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>

#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"
#include "runtime/image.h"
#include "runtime/job_files.h"
#include "runtime/oci_spec.h"

extern char** environ;

namespace warden::runtime {
namespace {

using common::Json;
using common::StrCat;
namespace fs = std::filesystem;

std::string Errno() { return std::strerror(errno); }

bool Exists(const std::string& p) {
  struct stat st;
  return lstat(p.c_str(), &st) == 0;
}

std::string FindInPath(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = getenv("PATH");
  std::string p = path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  size_t i = 0;
  while (i <= p.size()) {
    size_t j = p.find(':', i);
    if (j == std::string::npos) j = p.size();
    std::string cand = StrCat(p.substr(i, j - i), "/", name);
    if (access(cand.c_str(), X_OK) == 0) return cand;
    i = j + 1;
  }
  return "";
}

class OciRunner final : public Runner {
 public:
  OciRunner(RunnerOptions options, CgroupLayout layout, std::string runtime_path)
      : options_(std::move(options)), layout_(std::move(layout)), runtime_path_(std::move(runtime_path)) {}

  absl::Status Init() {
    for (const std::string& d : {options_.state_dir, JobsDir(), RuntimeRoot()}) {
      if (mkdir(d.c_str(), 0711) != 0 && errno != EEXIST) {
        return absl::InternalError(StrCat("cannot create ", d, ": ", Errno()));
      }
      // The job's user must traverse (not list) down to the bundle's rootfs.
      chmod(d.c_str(), 0711);
    }
    auto slots = ReadFileToString(SlotsFile());
    if (slots.ok()) {
      Json j = Json::parse(*slots, nullptr, false);
      if (!j.is_object()) return absl::DataLossError(StrCat(SlotsFile(), " is corrupt"));
      for (auto& [tenant, slot] : j.items()) {
        if (!slot.is_number_unsigned()) return absl::DataLossError(StrCat(SlotsFile(), " is corrupt"));
        slots_[tenant] = slot.get<uint32_t>();
      }
    }
    return absl::OkStatus();
  }

  absl::Status Start(const SandboxSpec& spec) override {
    WARDEN_RETURN_IF_ERROR(ValidateSandboxSpec(spec));
    std::lock_guard<std::mutex> lock(mu_);
    const std::string dir = JobDir(spec.job_id);
    if (mkdir(dir.c_str(), 0711) != 0) {
      if (errno == EEXIST) return absl::AlreadyExistsError(StrCat("job ", spec.job_id, " already exists on this node"));
      return absl::InternalError(StrCat("cannot create ", dir, ": ", Errno()));
    }
    {
      std::lock_guard<std::mutex> slock(starting_mu_);
      starting_.insert(spec.job_id);
    }
    struct Started {
      OciRunner* self;
      std::string id;
      ~Started() {
        std::lock_guard<std::mutex> slock(self->starting_mu_);
        self->starting_.erase(id);
      }
    } started{this, spec.job_id};
    absl::Status st = Prepare(spec, dir);
    if (!st.ok()) {
      std::error_code ec;
      fs::remove_all(dir, ec);
      return st;
    }
    st = SpawnShim(dir);
    if (!st.ok()) {
      // The shim has already cleaned up the container; keep the directory for its logs? No: a
      // job that never started is not a job; the error carries the runtime's message.
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
    return st;
  }

  absl::StatusOr<JobInfo> Get(const std::string& job_id) override {
    if (ValidJobId(job_id) == false) return absl::InvalidArgumentError("malformed job id");
    const std::string dir = JobDir(job_id);
    auto rec_text = ReadFileToString(dir + "/job.json");
    if (!rec_text.ok()) return absl::NotFoundError(StrCat("no job ", job_id, " on this node"));
    WARDEN_ASSIGN_OR_RETURN(JobRecord rec, DecodeJobRecord(*rec_text));
    JobInfo info;
    info.job_id = job_id;
    info.tenant = rec.tenant;
    info.stdout_path = dir + "/stdout.log";
    info.stderr_path = dir + "/stderr.log";
    auto res = ReadFileToString(dir + "/result.json");
    if (res.ok()) {
      WARDEN_ASSIGN_OR_RETURN(JobResult r, DecodeJobResult(*res));
      info.state = JobState::kExited;
      info.result = r;
      return info;
    }
    {
      // Being started by this runner: the shim may not have recorded itself yet. Checked before
      // shim.pid: once Start has returned, the shim has recorded itself (or the job's result is
      // out), so reading shim.pid after this check cannot see a job that is still starting; in
      // the other order a Start finishing between the two reads looked like a dead shim.
      std::lock_guard<std::mutex> slock(starting_mu_);
      if (starting_.count(job_id) > 0) {
        info.state = JobState::kRunning;
        return info;
      }
    }
    auto [pid, start] = ShimPid(dir);
    if (pid > 0 && ProcessStartTime(pid) == start) {
      info.state = JobState::kRunning;
      return info;
    }
    if (auto again = ReadFileToString(dir + "/result.json"); again.ok()) {
      // It ended (and its shim exited) after the first look for a result.
      WARDEN_ASSIGN_OR_RETURN(JobResult r, DecodeJobResult(*again));
      info.state = JobState::kExited;
      info.result = r;
      return info;
    }
    // The shim is gone without a result (killed, node trouble): the exit status is lost; make
    // sure nothing of the job keeps running and record that.
    JobResult lost;
    lost.lost = true;
    lost.error = "the job's shim died before recording a result";
    if (rec.kind == "bwrap") {
      // bwrap dies with its parent (--die-with-parent); clear whatever is left in the cgroup.
      for (const std::string& procs : rec.cgroup_procs) {
        auto text = ReadFileToString(procs);
        std::istringstream in(text.value_or(""));
        int p;
        while (in >> p) kill(p, SIGKILL);
      }
      for (const std::string& d : rec.cgroup_dirs) rmdir(d.c_str());
    } else {
      RunRuntime({"delete", "--force", job_id});
    }
    (void)WriteFileAtomic(dir + "/result.json", EncodeJobResult(lost), 0640);
    info.state = JobState::kExited;
    info.result = lost;
    return info;
  }

  std::vector<JobInfo> List() override {
    std::vector<JobInfo> out;
    DIR* d = opendir(JobsDir().c_str());
    if (d == nullptr) return out;
    std::vector<std::string> ids;
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name != "." && name != ".." && ValidJobId(name)) ids.push_back(name);
    }
    closedir(d);
    std::sort(ids.begin(), ids.end());
    for (const std::string& id : ids) {
      auto info = Get(id);
      if (info.ok()) out.push_back(*info);
    }
    return out;
  }

  absl::StatusOr<JobResult> Wait(const std::string& job_id, absl::Duration timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoMilliseconds(timeout);
    const std::string dir = JobDir(job_id);
    // Woken by result.json appearing (the shim renames it into place) or by the shim's exit.
    int ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (ino >= 0) inotify_add_watch(ino, dir.c_str(), IN_MOVED_TO | IN_CLOSE_WRITE);
    struct Closer {
      int fd;
      ~Closer() {
        if (fd >= 0) close(fd);
      }
    } ino_closer{ino};
    for (;;) {
      WARDEN_ASSIGN_OR_RETURN(JobInfo info, Get(job_id));
      if (info.state == JobState::kExited) return *info.result;
      auto [pid, start] = ShimPid(dir);
      int pfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
      Closer pfd_closer{pfd};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) return absl::DeadlineExceededError(StrCat("job ", job_id, " still running"));
      if (pfd >= 0 && ProcessStartTime(pid) != start) continue;  // pid reused: Get() sees it gone
      // Re-check after arming both watches, so an exit between Get() and here is not missed.
      if (Exists(dir + "/result.json")) continue;
      pollfd p[2] = {{ino, POLLIN, 0}, {pfd, POLLIN, 0}};
      poll(p, 2, static_cast<int>(std::min<int64_t>(left, 1000)));
      if (ino >= 0 && (p[0].revents & POLLIN)) {
        char buf[4096];
        while (read(ino, buf, sizeof(buf)) > 0) {
        }
      }
    }
  }

  absl::Status Cancel(const std::string& job_id) override {
    WARDEN_ASSIGN_OR_RETURN(JobInfo info, Get(job_id));
    if (info.state == JobState::kExited) return absl::FailedPreconditionError(StrCat("job ", job_id, " already exited"));
    auto [pid, start] = ShimPid(JobDir(job_id));
    if (pid <= 0 || ProcessStartTime(pid) != start || kill(pid, SIGTERM) != 0) {
      return absl::FailedPreconditionError(StrCat("job ", job_id, " is not running"));
    }
    return absl::OkStatus();
  }

  absl::Status Signal(const std::string& job_id, int signal) override {
    WARDEN_ASSIGN_OR_RETURN(JobInfo info, Get(job_id));
    if (info.state == JobState::kExited) return absl::FailedPreconditionError(StrCat("job ", job_id, " already exited"));
    if (signal <= 0 || signal >= 65) return absl::InvalidArgumentError("signal out of range");
    if (options_.runtime == RuntimeKind::kBwrap) {
      return absl::UnimplementedError("signals other than cancel are not supported by the bubblewrap runner");
    }
    std::string err;
    if (RunRuntime({"kill", job_id, StrCat(signal)}, &err) != 0) {
      return absl::InternalError(StrCat("signalling job ", job_id, " failed: ", err));
    }
    return absl::OkStatus();
  }

  absl::Status Remove(const std::string& job_id) override {
    WARDEN_ASSIGN_OR_RETURN(JobInfo info, Get(job_id));
    if (info.state != JobState::kExited) return absl::FailedPreconditionError(StrCat("job ", job_id, " is still running"));
    // Let the shim finish the runtime's cleanup (it runs after the result is published).
    auto [pid, start] = ShimPid(JobDir(job_id));
    int pfd = pid > 0 ? static_cast<int>(syscall(SYS_pidfd_open, pid, 0)) : -1;
    if (pfd >= 0) {
      if (ProcessStartTime(pid) == start) {
        pollfd p = {pfd, POLLIN, 0};
        poll(&p, 1, 10'000);
      }
      close(pfd);
    }
    std::error_code ec;
    fs::remove_all(JobDir(job_id), ec);
    if (ec) return absl::InternalError(StrCat("cannot remove job ", job_id, ": ", ec.message()));
    return absl::OkStatus();
  }

 private:
  static bool ValidJobId(const std::string& id) {
    if (id.empty() || id.size() > 64) return false;
    for (char c : id) {
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
    }
    return true;
  }
  std::string JobsDir() const { return options_.state_dir + "/jobs"; }
  std::string JobDir(const std::string& id) const { return JobsDir() + "/" + id; }
  std::string RuntimeRoot() const { return options_.state_dir + "/runtime"; }
  std::string SlotsFile() const { return options_.state_dir + "/uid-slots.json"; }
  std::string HostRootfs() const { return options_.host_rootfs_dir; }

  std::pair<int, uint64_t> ShimPid(const std::string& dir) {
    auto t = ReadFileToString(dir + "/shim.pid");
    if (!t.ok()) return {0, 0};
    int pid = 0;
    unsigned long long start = 0;
    if (sscanf(t->c_str(), "%d %llu", &pid, &start) != 2) return {0, 0};
    return {pid, start};
  }

  int RunRuntime(const std::vector<std::string>& tail, std::string* err = nullptr) {
    std::vector<std::string> args = {runtime_path_, "--root", RuntimeRoot()};
    args.insert(args.end(), tail.begin(), tail.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
      int devnull = open("/dev/null", O_RDWR);
      dup2(devnull, 0);
      dup2(devnull, 1);
      dup2(pipefd[1], 2);
      execve(argv[0], argv.data(), environ);
      _exit(127);
    }
    close(pipefd[1]);
    std::string out;
    char buf[512];
    ssize_t n;
    while ((n = read(pipefd[0], buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
      if (n > 0 && out.size() < 8192) out.append(buf, static_cast<size_t>(n));
    }
    close(pipefd[0]);
    int status = 0;
    if (pid < 0) return -1;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (err) *err = out;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  absl::StatusOr<uint32_t> UidBase(const std::string& tenant) {
    auto it = slots_.find(tenant);
    if (it == slots_.end()) {
      std::set<uint32_t> used;
      for (auto& [t, s] : slots_) used.insert(s);
      uint32_t slot = PreferredUidSlot(tenant, options_.uid_slots);
      uint32_t tries = 0;
      // Linear probing: two tenants must never share a host uid range.
      while (used.count(slot) > 0) {
        if (++tries >= options_.uid_slots) return absl::ResourceExhaustedError("no free per-tenant uid range");
        slot = (slot + 1) % options_.uid_slots;
      }
      slots_[tenant] = slot;
      Json j = Json::object();
      for (auto& [t, s] : slots_) j[t] = s;
      WARDEN_RETURN_IF_ERROR(WriteFileAtomic(SlotsFile(), j.dump(), 0600, /*durable=*/true));
      it = slots_.find(tenant);
    }
    return options_.uid_base + it->second * kIdsPerTenant;
  }

  // The host image: the host root, read-only, without the host's other mounts (RECIPES: / itself
  // cannot be a runc rootfs), plus the empty dataset mount roots (/data, /datasets) that the
  // host's / lacks and that runc could not create in a read-only root. Built as a read-only
  // overlay of two lower layers: a tiny read-only tmpfs holding only those empty directories
  // (<host_rootfs_dir>.skel) over "/" (as a layer, overlayfs takes only the root file system,
  // not the mounts on it: /proc, /sys, /dev, /run, the agent's dataset tmpfs mounts are absent).
  // Nothing on the host's / is created or changed. Where overlayfs is not available, a
  // non-recursive read-only bind of / (no dataset roots: a job with datasets fails to start
  // with a clear message, see Prepare).
  absl::Status EnsureHostRootfs() {
    const std::string p = HostRootfs();
    if (Exists(p + "/proc") && Exists(p + "/etc")) {
      if (RootsReady(p) || host_rootfs_is_plain_) return absl::OkStatus();
      // An older agent's plain bind (or roots with the wrong mode): replace it (running jobs keep
      // their own copy of the mount).
      if (umount2(p.c_str(), MNT_DETACH) != 0) {
        return absl::InternalError(StrCat("cannot replace the host rootfs at ", p, ": ", Errno()));
      }
    }
    std::error_code ec;
    fs::create_directories(p, ec);
    if (ec) return absl::InternalError(StrCat("mkdir ", p, ": ", ec.message()));
    chmod(p.c_str(), 0755);
    if (absl::Status s = MountHostOverlay(p); s.ok()) {
      return absl::OkStatus();
    } else {
      std::cerr << "gpuwarden runtime: the host image has no dataset mount roots (" << s.message()
                << "); using a plain read-only bind of /\n";
    }
    if (mount("/", p.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      return absl::InternalError(StrCat("cannot bind / to ", p, ": ", Errno()));
    }
    if (mount(nullptr, p.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) != 0) {
      umount2(p.c_str(), MNT_DETACH);
      return absl::InternalError(StrCat("cannot make ", p, " read-only: ", Errno()));
    }
    host_rootfs_is_plain_ = true;
    return absl::OkStatus();
  }

  // Both dataset roots are directories of mode 0755 under `dir`.
  static bool RootsReady(const std::string& dir) {
    for (const char* r : kDatasetRoots) {
      struct stat st;
      if (stat((dir + r).c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || (st.st_mode & 07777) != 0755) return false;
    }
    return true;
  }

  absl::Status MountHostOverlay(const std::string& p) {
    const std::string skel = p + ".skel";
    std::error_code ec;
    fs::create_directories(skel, ec);
    if (ec) return absl::InternalError(StrCat("mkdir ", skel, ": ", ec.message()));
    // Ours when it is a mount point (another file system than its parent's, e.g. not just a
    // directory on a /run that is itself tmpfs) holding both roots.
    struct stat here, parent;
    bool mounted = stat(skel.c_str(), &here) == 0 && stat(fs::path(skel).parent_path().c_str(), &parent) == 0 &&
                   here.st_dev != parent.st_dev;
    if (mounted && !RootsReady(skel)) {
      umount2(skel.c_str(), MNT_DETACH);
      mounted = false;
    }
    if (!mounted) {
      if (mount("gpuwarden-skel", skel.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "size=64k,nr_inodes=64,mode=0755") != 0) {
        return absl::InternalError(StrCat("cannot mount a tmpfs on ", skel, ": ", Errno()));
      }
      for (const char* r : kDatasetRoots) {
        // 0755 whatever the umask: runc gives the tmpfs it mounts on a root this mode.
        if ((mkdir((skel + r).c_str(), 0755) != 0 && errno != EEXIST) || chmod((skel + r).c_str(), 0755) != 0) {
          umount2(skel.c_str(), MNT_DETACH);
          return absl::InternalError(StrCat("mkdir ", skel, r, ": ", Errno()));
        }
      }
      if (mount(nullptr, skel.c_str(), nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "size=64k,nr_inodes=64,mode=0755") != 0) {
        umount2(skel.c_str(), MNT_DETACH);
        return absl::InternalError(StrCat("cannot make ", skel, " read-only: ", Errno()));
      }
    }
    const std::string opts = StrCat("lowerdir=", skel, ":/");
    if (mount("gpuwarden-host", p.c_str(), "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV, opts.c_str()) != 0) {
      return absl::InternalError(StrCat("mount -t overlay -o ", opts, " ", p, ": ", Errno()));
    }
    return absl::OkStatus();
  }

  // The staged dataset tree becomes the job's: owner = the job's host uid, so exactly that uid
  // reads it (files 0400, directories 0500; 0600/0700 when writable). Another tenant's job has
  // another uid range and the agent's per-job tmpfs above it is 0700 root. Entries are changed
  // without following links (the agent created them; a link would be refused anyway).
  static absl::Status GiveDatasetToJob(const DatasetMount& d, uid_t uid, gid_t gid) {
    std::error_code ec;
    auto give = [&](const std::string& path) -> absl::Status {
      struct stat st;
      if (lstat(path.c_str(), &st) != 0) return absl::InternalError(StrCat("lstat ", path, ": ", Errno()));
      if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
        return absl::FailedPreconditionError(StrCat("dataset entry ", path, " is neither a file nor a directory"));
      }
      mode_t mode = S_ISDIR(st.st_mode) ? (d.writable ? 0700 : 0500) : (d.writable ? 0600 : 0400);
      if (lchown(path.c_str(), uid, gid) != 0 || chmod(path.c_str(), mode) != 0) {
        return absl::InternalError(StrCat("cannot hand ", path, " to the job's user: ", Errno()));
      }
      return absl::OkStatus();
    };
    for (auto it = fs::recursive_directory_iterator(d.host_dir, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      WARDEN_RETURN_IF_ERROR(give(it->path().string()));
    }
    if (ec) return absl::InternalError(StrCat("cannot list dataset dir ", d.host_dir, ": ", ec.message()));
    return give(d.host_dir);  // last: a 0500 directory must not stop the walk above (we are root)
  }

  absl::StatusOr<DeviceNode> ResolveDevice(const std::string& container_path) {
    std::string rel = container_path.substr(std::string("/dev/").size());
    DeviceNode d;
    d.container_path = container_path;
    d.host_path = options_.host_dev_dir + "/" + rel;
    struct stat st;
    if (stat(d.host_path.c_str(), &st) != 0) {
      return absl::NotFoundError(StrCat("device node ", d.host_path, " not found: ", Errno()));
    }
    if (!S_ISCHR(st.st_mode)) return absl::FailedPreconditionError(StrCat(d.host_path, " is not a character device"));
    d.type = 'c';
    d.major = major(st.st_rdev);
    d.minor = minor(st.st_rdev);
    return d;
  }

  absl::Status Prepare(const SandboxSpec& spec, const std::string& dir) {
    OciInputs in;
    if (spec.image == "host") {
      WARDEN_RETURN_IF_ERROR(EnsureHostRootfs());
      in.rootfs = HostRootfs();
      in.rootfs_has_scratch_dir = Exists(in.rootfs + "/scratch");
    } else {
      WARDEN_ASSIGN_OR_RETURN(ImageInfo image, LookupImage(options_.image_root, spec.tenant, spec.image));
      WARDEN_RETURN_IF_ERROR(ValidateEnv("image config env", image.env));
      in.rootfs = image.rootfs;
      in.image_env = image.env;
      in.rootfs_has_scratch_dir = Exists(in.rootfs + "/scratch");
    }
    WARDEN_ASSIGN_OR_RETURN(in.host_uid_base, UidBase(spec.tenant));
    in.cgroups_path = StrCat(options_.cgroup_parent, "/", spec.tenant, "/", spec.job_id);
    in.layout = layout_;
    std::set<std::string> seen;
    auto add = [&](const std::string& node, bool required) -> absl::Status {
      if (!seen.insert(node).second) return absl::OkStatus();
      auto d = ResolveDevice(node);
      if (!d.ok()) {
        if (required) return d.status();
        return absl::OkStatus();
      }
      in.devices.push_back(*d);
      return absl::OkStatus();
    };
    for (const GpuDevice& g : spec.gpus) {
      WARDEN_RETURN_IF_ERROR(add(g.node, true));
      for (const std::string& cap : g.mig_cap_nodes) WARDEN_RETURN_IF_ERROR(add(cap, true));
    }
    if (!spec.gpus.empty()) {
      // Shared control nodes every CUDA process needs. nvidia-uvm-tools (UVM event tracing) and
      // nvidia-modeset are not given: compute jobs do not need them.
      WARDEN_RETURN_IF_ERROR(add("/dev/nvidiactl", false));
      WARDEN_RETURN_IF_ERROR(add("/dev/nvidia-uvm", false));
    }
    for (const DatasetMount& d : spec.datasets) {
      struct statfs sf;
      if (statfs(d.host_dir.c_str(), &sf) != 0) return absl::NotFoundError(StrCat("dataset dir ", d.host_dir, ": ", Errno()));
      // Decrypted data must never touch the node's disk.
      if (sf.f_type != TMPFS_MAGIC && sf.f_type != RAMFS_MAGIC) {
        return absl::FailedPreconditionError(StrCat("dataset dir ", d.host_dir, " is not on tmpfs/ramfs"));
      }
      for (const char* root : kDatasetRoots) {
        const std::string r = root;
        if ((d.container_path == r || d.container_path.rfind(r + "/", 0) == 0) && !Exists(in.rootfs + r)) {
          return absl::FailedPreconditionError(
              StrCat("the job's root file system has no ", r, " directory to mount dataset ", d.container_path,
                     spec.image == "host" ? " on (overlayfs is unavailable here: see the agent's log)"
                                          : " on (re-import the image: imports add /data and /datasets)"));
        }
      }
      WARDEN_RETURN_IF_ERROR(GiveDatasetToJob(d, in.host_uid_base + kJobUid, in.host_uid_base + kJobGid));
    }
    WARDEN_ASSIGN_OR_RETURN(Json oci, BuildOciSpec(spec, in));
    std::string text = oci.dump(1);
    if (options_.spec_hook) text = options_.spec_hook(text);
    const std::string bundle = dir + "/bundle";
    if (mkdir(bundle.c_str(), 0700) != 0) return absl::InternalError(StrCat("mkdir ", bundle, ": ", Errno()));
    WARDEN_RETURN_IF_ERROR(WriteFileAtomic(bundle + "/config.json", text, 0600));
    JobRecord rec;
    rec.job_id = spec.job_id;
    rec.tenant = spec.tenant;
    rec.runtime_path = runtime_path_;
    rec.runtime_root = RuntimeRoot();
    rec.cgroups_path = in.cgroups_path;
    rec.cgroup_v1 = layout_.UsesV1();
    rec.memory_dir = layout_.ControllerDir("memory", in.cgroups_path);
    rec.cpu_dir = layout_.ControllerDir(layout_.UsesV1() ? "cpuacct" : "memory", in.cgroups_path);
    rec.wall_time_ms = absl::ToInt64Milliseconds(spec.wall_time);
    rec.grace_ms = absl::ToInt64Milliseconds(options_.cancel_grace);
    if (options_.runtime == RuntimeKind::kBwrap) {
      Json final_spec = Json::parse(text, nullptr, false);
      if (!final_spec.is_object()) return absl::InternalError("spec_hook returned invalid JSON");
      WARDEN_ASSIGN_OR_RETURN(BwrapPlan plan, PlanBwrap(spec, in, final_spec, runtime_path_));
      rec.kind = "bwrap";
      rec.exec_args = plan.args;
      rec.cgroup_dirs = plan.cgroup_dirs;
      rec.cgroup_writes = plan.cgroup_writes;
      rec.cgroup_procs = plan.cgroup_procs;
      rec.run_uid = in.host_uid_base + kJobUid;
      rec.run_gid = in.host_uid_base + kJobGid;
      rec.seccomp_file = dir + "/seccomp.bpf";
      if (!final_spec["linux"].contains("seccomp")) {
        return absl::InvalidArgumentError("the bubblewrap runner needs a seccomp profile");
      }
      WARDEN_RETURN_IF_ERROR(CompileSeccompBpf(final_spec["linux"]["seccomp"], rec.seccomp_file));
    }
    WARDEN_RETURN_IF_ERROR(WriteFileAtomic(dir + "/job.json", EncodeJobRecord(rec), 0600));
    for (const char* f : {"/stdout.log", "/stderr.log"}) {
      int fd = open((dir + f).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
      if (fd < 0) return absl::InternalError(StrCat("cannot create ", dir, f, ": ", Errno()));
      close(fd);
    }
    return absl::OkStatus();
  }

  // Forks the shim detached (setsid, double fork: it is reparented away from the runner and
  // survives it) and waits for its start report.
  absl::Status SpawnShim(const std::string& dir) {
    std::vector<std::string> args = options_.shim_command;
    args.push_back(dir);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::string shim_log = dir + "/shim.log";
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) return absl::InternalError(StrCat("pipe: ", Errno()));
    // Only async-signal-safe calls between fork and exec (the runner is multi-threaded).
    pid_t pid = fork();
    if (pid < 0) return absl::InternalError(StrCat("fork: ", Errno()));
    if (pid == 0) {
      setsid();
      pid_t inner = fork();
      if (inner != 0) _exit(inner < 0 ? 1 : 0);
      int devnull = open("/dev/null", O_RDWR);
      int log = open(shim_log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      dup2(devnull, 0);
      dup2(log >= 0 ? log : devnull, 1);
      dup2(log >= 0 ? log : devnull, 2);
      dup2(pipefd[1], 3);  // dup2 clears close-on-exec
      execve(argv[0], argv.data(), environ);
      _exit(127);
    }
    close(pipefd[1]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    std::string line;
    char buf[1024];
    for (;;) {
      pollfd p = {pipefd[0], POLLIN, 0};
      int n = poll(&p, 1, 120'000);
      if (n <= 0) break;
      ssize_t r = read(pipefd[0], buf, sizeof(buf));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      line.append(buf, static_cast<size_t>(r));
    }
    close(pipefd[0]);
    while (!line.empty() && line.back() == '\n') line.pop_back();
    if (line == "ok") return absl::OkStatus();
    if (line.rfind("err ", 0) == 0) return absl::InternalError(StrCat("the runtime could not start the job: ", line.substr(4)));
    return absl::InternalError(StrCat("the job's shim (", args[0], ") exited without reporting; see ", shim_log));
  }

  RunnerOptions options_;
  CgroupLayout layout_;
  std::string runtime_path_;
  std::mutex mu_;
  std::map<std::string, uint32_t> slots_;
  std::mutex starting_mu_;  // held only briefly (may be taken under mu_, never the reverse)
  std::set<std::string> starting_;
  bool host_rootfs_is_plain_ = false;  // overlayfs failed: the fallback bind is what we have
};

}  // namespace

absl::StatusOr<std::unique_ptr<Runner>> CreateRunner(RunnerOptions options) {
  if (options.state_dir.empty() || options.state_dir[0] != '/') {
    return absl::InvalidArgumentError("state_dir must be an absolute path");
  }
  if (options.shim_command.empty()) return absl::InvalidArgumentError("shim_command must name the shim program");
  std::string name = options.runtime_path;
  if (name.empty()) {
    name = options.runtime == RuntimeKind::kCrun ? "crun" : options.runtime == RuntimeKind::kBwrap ? "bwrap" : "runc";
  }
  std::string path = FindInPath(name);
  if (path.empty() || access(path.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(StrCat("runtime ", name, " not found or not executable"));
  }
  WARDEN_ASSIGN_OR_RETURN(CgroupLayout layout, DetectCgroupLayout());
  if (options.runtime == RuntimeKind::kCrun && layout.mode == CgroupLayout::Mode::kHybrid) {
    return absl::FailedPreconditionError("crun refuses hybrid cgroup hosts (v1 controllers plus a v2 mount); use runc");
  }
  auto runner = std::make_unique<OciRunner>(std::move(options), std::move(layout), std::move(path));
  WARDEN_RETURN_IF_ERROR(runner->Init());
  return std::unique_ptr<Runner>(std::move(runner));
}

}  // namespace warden::runtime
