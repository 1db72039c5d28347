// The Runner over an OCI runtime (runc or crun). See runtime.h and job_files.h.
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <optional>
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
    for (const std::string& d : {options_.state_dir, JobsDir(), RuntimeRoot(), PreparedRoot()}) {
      if (mkdir(d.c_str(), 0711) != 0 && errno != EEXIST) {
        return absl::InternalError(StrCat("cannot create ", d, ": ", Errno()));
      }
      // The job's user must traverse (not list) down to the bundle's rootfs.
      chmod(d.c_str(), 0711);
    }
    SweepPrepared();
    WARDEN_RETURN_IF_ERROR(ResolveDriverDirs());
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

  // RunnerOptions::gpu_driver_dirs -> the read-only binds GPU jobs get (checked once here).
  absl::Status ResolveDriverDirs() {
    const std::string mountinfo = ReadMountInfo();
    for (const std::string& d : options_.gpu_driver_dirs) {
      const std::string what = StrCat("gpu driver dir \"", d, "\"");
      if (d.empty() || d[0] != '/' || d == "/") return absl::InvalidArgumentError(StrCat(what, " must be an absolute directory other than /"));
      for (const char* no : {"/proc", "/sys", "/dev"}) {
        if (IsUnder(d, no)) return absl::InvalidArgumentError(StrCat(what, " must not be under ", no));
      }
      char real[PATH_MAX];
      if (realpath(d.c_str(), real) == nullptr) return absl::InvalidArgumentError(StrCat(what, ": ", Errno()));
      struct stat st;
      if (real != d || stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return absl::InvalidArgumentError(StrCat(what, " must be a directory reached without symlinks (it resolves to ", std::string(real), ")"));
      }
      WARDEN_ASSIGN_OR_RETURN(std::vector<std::string> opts, ReadOnlyBindOptions(d, mountinfo));
      driver_dirs_.push_back(HostDirMount{d, std::move(opts)});
    }
    std::stringstream paths(options_.gpu_library_path);
    for (std::string p; std::getline(paths, p, ':');) {
      if (p.empty()) continue;
      const std::string wrapped = StrCat(p, "/");
      bool inside = wrapped.find("/../") == std::string::npos && wrapped.find("/./") == std::string::npos;
      bool under = false;
      for (const HostDirMount& m : driver_dirs_) under = under || IsUnder(p, m.path);
      if (!inside || !under) {
        return absl::InvalidArgumentError(StrCat("gpu library path entry \"", p, "\" is not in a gpu driver dir"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Start(const SandboxSpec& spec) override {
    ReapShims();
    WARDEN_RETURN_IF_ERROR(ValidateSandboxSpec(spec));
    if (std::optional<absl::Status> warm = TryPrepared(spec)) return *warm;
    std::lock_guard<std::mutex> lock(mu_);
    const std::string dir = JobDir(spec.job_id);
    if (mkdir(dir.c_str(), 0711) != 0) {
      if (errno == EEXIST) return absl::AlreadyExistsError(StrCat("job ", spec.job_id, " already exists on this node"));
      return absl::InternalError(StrCat("cannot create ", dir, ": ", Errno()));
    }
    StartingMark started(this, spec.job_id);
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
    ReapShims();
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
    info.prepared = rec.prepared;
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
      RunRuntime({"delete", "--force", rec.ContainerId()});
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
    // The inotify instance is borrowed from a pool and kept: closing one waits for an SRCU grace
    // period in the kernel (fsnotify_destroy_group), which cost 12-18 ms per job here, more than
    // the rest of the exit path together; removing a watch does not wait.
    int ino = TakeInotify();
    int wd = ino >= 0 ? inotify_add_watch(ino, dir.c_str(), IN_MOVED_TO | IN_CLOSE_WRITE) : -1;
    struct Returner {
      OciRunner* self;
      int fd;
      int wd;
      ~Returner() { self->ReturnInotify(fd, wd); }
    } ino_returner{this, ino, wd};
    struct Closer {
      int fd;
      ~Closer() {
        if (fd >= 0) close(fd);
      }
    };
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
    auto rec_text = ReadFileToString(JobDir(job_id) + "/job.json");
    if (!rec_text.ok()) return absl::NotFoundError(StrCat("no job ", job_id, " on this node"));
    WARDEN_ASSIGN_OR_RETURN(JobRecord rec, DecodeJobRecord(*rec_text));
    if (RunRuntime({"kill", rec.ContainerId(), StrCat(signal)}, &err) != 0) {
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
    ReapShims();
    std::error_code ec;
    fs::remove_all(JobDir(job_id), ec);
    if (ec) return absl::InternalError(StrCat("cannot remove job ", job_id, ": ", ec.message()));
    return absl::OkStatus();
  }

  absl::Status Prepare(const SandboxSpec& like) override {
    if (options_.launcher_path.empty()) {
      return absl::FailedPreconditionError("prepared sandboxes need RunnerOptions::launcher_path");
    }
    if (options_.runtime == RuntimeKind::kBwrap) {
      return absl::FailedPreconditionError("prepared sandboxes need an OCI runtime (not bubblewrap)");
    }
    // Datasets are staged per job and GPUs are quarantined and scrubbed between tenants: a
    // sandbox holding either must not wait around, so both always start cold.
    if (!like.datasets.empty()) return absl::InvalidArgumentError("prepared sandboxes take no datasets");
    if (!like.gpus.empty()) return absl::InvalidArgumentError("prepared sandboxes take no GPUs");
    SandboxSpec s = like;
    s.job_id = PreparedId();
    // runc executes the launcher from the descriptor it inherits as fd 5 (see launcher.cc), so
    // nothing is mounted for it and the sandbox's spec differs from a job's only in the process.
    s.argv = {"/proc/self/fd/5"};
    s.env.clear();
    s.cwd = "/";
    WARDEN_RETURN_IF_ERROR(ValidateSandboxSpec(s));
    auto p = std::make_unique<PreparedSandbox>();
    p->id = s.job_id;
    p->tenant = s.tenant;
    p->image = s.image;
    p->rootfs_id = RootfsIdentity(s.tenant, s.image);
    if (p->rootfs_id.empty()) return absl::NotFoundError(StrCat("image ", s.image, " is not here"));
    const std::string dir = PreparedDir(p->id);
    std::string text;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (mkdir(dir.c_str(), 0711) != 0) return absl::InternalError(StrCat("cannot create ", dir, ": ", Errno()));
      absl::Status st = Prepare(s, dir, /*prepared=*/true);
      auto t = st.ok() ? ReadFileToString(dir + "/bundle/config.json") : absl::StatusOr<std::string>(st);
      if (!t.ok()) {
        std::error_code ec;
        fs::remove_all(dir, ec);
        return t.status();
      }
      text = *t;
    }
    WARDEN_ASSIGN_OR_RETURN(p->shape, SpecShape(text));
    // Runner ends: control (to the shim) and job (to the launcher) are socket pairs, so a write
    // to a sandbox that died fails with EPIPE instead of raising SIGPIPE in the agent.
    int control[2] = {-1, -1}, job[2] = {-1, -1}, report[2] = {-1, -1};
    int launcher = open(options_.launcher_path.c_str(), O_RDONLY | O_CLOEXEC);
    struct Fds {
      std::vector<int*> fds;
      ~Fds() {
        for (int* fd : fds) {
          if (*fd >= 0) close(*fd);
        }
      }
    } shim_side{{&control[1], &job[1], &report[1], &launcher}};
    if (launcher < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, control) != 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, job) != 0 || pipe2(report, O_CLOEXEC) != 0) {
      std::string why = launcher < 0 ? StrCat("cannot open the launcher ", options_.launcher_path, ": ", Errno())
                                     : StrCat("cannot create the sandbox's pipes: ", Errno());
      for (int fd : {control[0], job[0], report[0]}) {
        if (fd >= 0) close(fd);
      }
      std::error_code ec;
      fs::remove_all(dir, ec);
      return absl::InternalError(why);
    }
    p->control_fd = control[0];
    p->job_fd = job[0];
    p->report_fd = report[0];
    absl::Status st = SpawnShim(dir, {control[1], job[1], report[1], launcher}, &p->start_fd);
    if (!st.ok()) {
      std::error_code ec;
      fs::remove_all(dir, ec);
      return st;  // p's destructor closes the runner's ends
    }
    std::lock_guard<std::mutex> lock(prepared_mu_);
    prepared_.push_back(std::move(p));
    return absl::OkStatus();
  }

  int PreparedCount(const std::string& tenant, const std::string& image) override {
    std::lock_guard<std::mutex> lock(prepared_mu_);
    int n = 0;
    for (const auto& p : prepared_) n += p->tenant == tenant && p->image == image ? 1 : 0;
    return n;
  }

  void DropPrepared(const std::string& tenant, const std::string& image) override {
    std::vector<std::unique_ptr<PreparedSandbox>> dropped;
    {
      std::lock_guard<std::mutex> lock(prepared_mu_);
      for (auto it = prepared_.begin(); it != prepared_.end();) {
        if ((tenant.empty() && image.empty()) || ((*it)->tenant == tenant && (*it)->image == image)) {
          dropped.push_back(std::move(*it));
          it = prepared_.erase(it);
        } else {
          ++it;
        }
      }
    }
    // Closing the runner's ends ends each sandbox: the launcher reads end of file and exits,
    // the shim deletes the container and the sandbox's directory.
  }

 private:
  // While it lives, Get() reports the job running (it may not have a shim yet).
  struct StartingMark {
    OciRunner* self;
    std::string id;
    StartingMark(OciRunner* runner, std::string job_id) : self(runner), id(std::move(job_id)) {
      std::lock_guard<std::mutex> slock(self->starting_mu_);
      self->starting_.insert(id);
    }
    ~StartingMark() {
      std::lock_guard<std::mutex> slock(self->starting_mu_);
      self->starting_.erase(id);
    }
  };

  // A prepared sandbox waiting for its job: a running container whose pid 1 is the launcher,
  // watched by its shim. The runner holds the four descriptors that reach it.
  struct PreparedSandbox {
    std::string id;  // the container id and the name of its directory under prepared/
    std::string tenant;
    std::string image;
    std::string shape;    // SpecShape() of its config.json
    std::string rootfs_id;  // RootfsIdentity() of its image when it was prepared
    int start_fd = -1;    // read: the shim's "ok" acknowledging the hand-over
    int control_fd = -1;  // write: "handoff <wall ms> <job dir>\n" to the shim
    int job_fd = -1;      // write: the job description to the launcher
    int report_fd = -1;   // read: the launcher's "exec" / "err ..." report
    ~PreparedSandbox() {
      for (int fd : {start_fd, control_fd, job_fd, report_fd}) {
        if (fd >= 0) close(fd);
      }
    }
  };

  // Which image root filesystem a sandbox was built on: device and inode of the imported image's
  // rootfs directory ("host" for the host image). An image the agent's cache dropped and
  // imported again (corrupted or changed on disk) gets a new directory, so a sandbox prepared on
  // the old one no longer matches and is never handed a job: it would run on the old files.
  std::string RootfsIdentity(const std::string& tenant, const std::string& image) const {
    if (image == "host") return "host";
    auto info = LookupImage(options_.image_root, tenant, image);
    struct stat st {};
    if (!info.ok() || stat(info->rootfs.c_str(), &st) != 0) return "";
    return StrCat(st.st_dev, ":", st.st_ino);
  }

  std::string PreparedRoot() const { return options_.state_dir + "/prepared"; }
  std::string PreparedDir(const std::string& id) const { return PreparedRoot() + "/" + id; }

  static std::string PreparedId() {
    unsigned char b[8];
    if (getrandom(b, sizeof(b), 0) != static_cast<ssize_t>(sizeof(b))) {
      static std::atomic<uint64_t> counter{0};
      uint64_t v = (static_cast<uint64_t>(getpid()) << 32) ^ ++counter ^
                   static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
      std::memcpy(b, &v, sizeof(b));
    }
    std::string id = "prep-";
    for (unsigned char c : b) {
      static const char* kHex = "0123456789abcdef";
      id += kHex[c >> 4];
      id += kHex[c & 15];
    }
    return id;
  }

  // What must be equal for a job to use a prepared sandbox: the whole OCI spec except the
  // process's argv, env and cwd (the launcher applies them), the cgroup path (the sandbox keeps
  // its own) and the memory, pids and CPU limits (written to its cgroup at the hand-over).
  // Everything else — rootfs, uid mappings, namespaces, mounts (scratch size, GPU nodes),
  // device rules, seccomp, capabilities, masked paths — comes out of the same BuildOciSpec.
  static absl::StatusOr<std::string> SpecShape(const std::string& text) {
    Json j = Json::parse(text, nullptr, false);
    if (!j.is_object() || !j.contains("process") || !j.contains("linux")) {
      return absl::InternalError("a sandbox spec is not an OCI spec object");
    }
    for (const char* k : {"args", "env", "cwd"}) j["process"].erase(k);
    j["linux"].erase("cgroupsPath");
    if (j["linux"].contains("resources")) {
      for (const char* k : {"memory", "pids", "cpu"}) j["linux"]["resources"].erase(k);
    }
    return j.dump();
  }

  // Writes a job's limits (from its OCI spec's linux.resources, as runc would have) into a
  // prepared sandbox's cgroup.
  absl::Status WriteLimits(const std::string& cgroups_path, const Json& resources) {
    auto write = [](const std::string& file, const std::string& value) -> absl::Status {
      int fd = open(file.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) return absl::InternalError(StrCat("open ", file, ": ", Errno()));
      ssize_t n = ::write(fd, value.data(), value.size());
      int e = errno;
      close(fd);
      if (n != static_cast<ssize_t>(value.size())) {
        return absl::InternalError(StrCat("write ", value, " to ", file, ": ", std::strerror(e)));
      }
      return absl::OkStatus();
    };
    try {
      const int64_t mem = resources.at("memory").at("limit").get<int64_t>();
      const int64_t pids = resources.at("pids").at("limit").get<int64_t>();
      const int64_t quota = resources.at("cpu").at("quota").get<int64_t>();
      const int64_t period = resources.at("cpu").at("period").get<int64_t>();
      if (layout_.UsesV1()) {
        const std::string m = layout_.ControllerDir("memory", cgroups_path);
        const std::string memsw = m + "/memory.memsw.limit_in_bytes";
        // memsw >= limit at every step: raise memsw first when growing, limit first when shrinking.
        const bool has_memsw = Exists(memsw);
        auto cur = ReadFileToString(m + "/memory.limit_in_bytes");
        const bool growing = cur.ok() && std::strtoull(cur->c_str(), nullptr, 10) < static_cast<uint64_t>(mem);
        if (has_memsw && growing) WARDEN_RETURN_IF_ERROR(write(memsw, StrCat(mem)));
        WARDEN_RETURN_IF_ERROR(write(m + "/memory.limit_in_bytes", StrCat(mem)));
        if (has_memsw && !growing) WARDEN_RETURN_IF_ERROR(write(memsw, StrCat(mem)));
        WARDEN_RETURN_IF_ERROR(write(layout_.ControllerDir("pids", cgroups_path) + "/pids.max", StrCat(pids)));
        const std::string c = layout_.ControllerDir("cpu", cgroups_path);
        WARDEN_RETURN_IF_ERROR(write(c + "/cpu.cfs_period_us", StrCat(period)));
        WARDEN_RETURN_IF_ERROR(write(c + "/cpu.cfs_quota_us", StrCat(quota)));
      } else {
        const std::string d = layout_.ControllerDir("memory", cgroups_path);
        WARDEN_RETURN_IF_ERROR(write(d + "/memory.max", StrCat(mem)));
        WARDEN_RETURN_IF_ERROR(write(d + "/pids.max", StrCat(pids)));
        WARDEN_RETURN_IF_ERROR(write(d + "/cpu.max", StrCat(quota, " ", period)));
      }
    } catch (const std::exception& e) {
      return absl::InternalError(StrCat("the job's spec has no usable limits: ", e.what()));
    }
    return absl::OkStatus();
  }

  // The job description the launcher reads (launcher.cc): NUL-terminated strings.
  static std::string JobDescription(const Json& process) {
    std::string out;
    auto add = [&](const std::string& s) {
      out += s;
      out.push_back('\0');
    };
    add("warden-job-1");
    add(process.at("cwd").get<std::string>());
    const Json& args = process.at("args");
    add(StrCat(args.size()));
    for (const Json& a : args) add(a.get<std::string>());
    const Json& env = process.at("env");
    add(StrCat(env.size()));
    for (const Json& e : env) add(e.get<std::string>());
    return out;
  }

  static bool SendAll(int fd, const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  // Waits (up to 10 s) for the shim recorded in `dir` to exit, so a directory is not removed
  // under it.
  void AwaitShim(const std::string& dir) {
    auto [pid, start] = ShimPid(dir);
    int pfd = pid > 0 ? static_cast<int>(syscall(SYS_pidfd_open, pid, 0)) : -1;
    if (pfd < 0) return;
    if (ProcessStartTime(pid) == start) {
      pollfd p = {pfd, POLLIN, 0};
      poll(&p, 1, 10'000);
    }
    close(pfd);
  }

  // Start() through a prepared sandbox. nullopt: none fits (or the one taken had died before the
  // hand-over): start cold. Otherwise the outcome of this start.
  std::optional<absl::Status> TryPrepared(const SandboxSpec& spec) {
    if (!spec.datasets.empty() || !spec.gpus.empty() || options_.runtime == RuntimeKind::kBwrap) return std::nullopt;
    if (PreparedCount(spec.tenant, spec.image) == 0) return std::nullopt;
    std::string text;
    {
      std::lock_guard<std::mutex> lock(mu_);
      OciInputs in;
      auto t = SpecText(spec, in);
      if (!t.ok()) return std::nullopt;  // the cold path reports it
      text = *t;
    }
    Json oci = Json::parse(text, nullptr, false);
    auto shape = SpecShape(text);
    if (!shape.ok() || !oci.is_object()) return std::nullopt;
    const std::string rootfs_id = RootfsIdentity(spec.tenant, spec.image);
    std::unique_ptr<PreparedSandbox> p;
    std::vector<std::unique_ptr<PreparedSandbox>> stale;  // built on an image since replaced
    {
      std::lock_guard<std::mutex> lock(prepared_mu_);
      for (auto it = prepared_.begin(); it != prepared_.end();) {
        if ((*it)->tenant != spec.tenant || (*it)->image != spec.image) {
          ++it;
        } else if ((*it)->rootfs_id != rootfs_id) {
          stale.push_back(std::move(*it));
          it = prepared_.erase(it);
        } else if (!p && (*it)->shape == *shape) {
          p = std::move(*it);
          it = prepared_.erase(it);
        } else {
          ++it;
        }
      }
    }
    stale.clear();  // ended as DropPrepared ends them: their shims remove the containers
    if (!p) return std::nullopt;
    const std::string dir = JobDir(spec.job_id);
    StartingMark started(this, spec.job_id);
    // The sandbox's directory becomes the job's; never over an existing job.
    if (renameat2(AT_FDCWD, PreparedDir(p->id).c_str(), AT_FDCWD, dir.c_str(), RENAME_NOREPLACE) != 0) {
      if (errno == EEXIST) return absl::AlreadyExistsError(StrCat("job ", spec.job_id, " already exists on this node"));
      return std::nullopt;  // p ends with its descriptors
    }
    // Undo for a sandbox that cannot take the job: end it, let its shim finish, remove the dir.
    auto abandon = [&]() {
      p.reset();
      AwaitShim(dir);
      std::error_code ec;
      fs::remove_all(dir, ec);
    };
    auto rec_text = ReadFileToString(dir + "/job.json");
    auto rec = rec_text.ok() ? DecodeJobRecord(*rec_text) : absl::StatusOr<JobRecord>(rec_text.status());
    if (!rec.ok()) {
      abandon();
      return std::nullopt;
    }
    rec->job_id = spec.job_id;
    rec->wall_time_ms = absl::ToInt64Milliseconds(spec.wall_time);
    absl::Status st = WriteFileAtomic(dir + "/job.json", EncodeJobRecord(*rec), 0600);
    if (st.ok()) st = WriteLimits(rec->cgroups_path, oci["linux"]["resources"]);
    if (st.ok()) {
      const std::string handoff = StrCat("handoff ", rec->wall_time_ms, " ", dir, "\n");
      if (!SendAll(p->control_fd, handoff) || ReadReport(p->start_fd, 10'000, true) != "ok") {
        st = absl::UnavailableError("the prepared sandbox ended before the hand-over");
      }
    }
    if (!st.ok()) {
      std::cerr << "gpuwarden runtime: prepared sandbox " << p->id << " not used for job " << spec.job_id << ": "
                << st.message() << "; starting it cold\n";
      abandon();
      return std::nullopt;
    }
    // From here on the shim treats the sandbox as this job's: whatever happens is its outcome.
    std::string report;
    if (SendAll(p->job_fd, JobDescription(oci["process"]))) {
      close(p->job_fd);
      p->job_fd = -1;  // one job: the launcher reads to end of file
      report = ReadReport(p->report_fd, 60'000, false);
    }
    if (report == "exec") return absl::OkStatus();
    p.reset();
    AwaitShim(dir);
    std::error_code ec;
    fs::remove_all(dir, ec);
    std::string why = report.rfind("exec\n", 0) == 0 ? report.substr(5) : report;
    if (why.rfind("err ", 0) == 0) why = why.substr(4);
    if (why.empty()) why = "the prepared sandbox ended before running the job";
    return absl::InternalError(StrCat("the runtime could not start the job: ", why));
  }

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

  // Collects the shims this runner spawned that have exited (they are its children; nothing
  // else in the process waits for them). Cheap: called from Start, Get and Remove.
  void ReapShims() {
    std::lock_guard<std::mutex> lock(shims_mu_);
    for (auto it = shims_.begin(); it != shims_.end();) {
      int status = 0;
      pid_t r = waitpid(*it, &status, WNOHANG);
      if (r == *it || (r < 0 && errno == ECHILD)) {
        it = shims_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Prepared sandboxes left by an earlier runner: one whose shim lives ends by itself (its
  // runner's descriptors are gone); one whose shim died is deleted here.
  void SweepPrepared() {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(PreparedRoot(), ec)) {
      const std::string id = e.path().filename().string();
      if (!ValidJobId(id) || id.rfind("prep-", 0) != 0) continue;
      auto [pid, start] = ShimPid(e.path().string());
      if (pid > 0 && ProcessStartTime(pid) == start) continue;
      RunRuntime({"delete", "--force", id});
      fs::remove_all(e.path(), ec);
    }
  }

  // An idle inotify instance from the pool, or a new one (-1 if none can be made: Wait then
  // falls back to the shim's pidfd and a 1 s poll).
  int TakeInotify() {
    {
      std::lock_guard<std::mutex> lock(inotify_mu_);
      if (!idle_inotify_.empty()) {
        int fd = idle_inotify_.back();
        idle_inotify_.pop_back();
        return fd;
      }
    }
    return inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  }

  // Removes the watch, drains what is queued (the removal's IN_IGNORED included) and keeps the
  // instance for the next Wait. A stale event left behind only makes a later Wait look once more.
  void ReturnInotify(int fd, int wd) {
    if (fd < 0) return;
    if (wd >= 0) inotify_rm_watch(fd, wd);  // EINVAL when the directory is gone: already removed
    char buf[4096];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    std::lock_guard<std::mutex> lock(inotify_mu_);
    if (idle_inotify_.size() < kMaxIdleInotify) {
      idle_inotify_.push_back(fd);
      return;
    }
    // More concurrent waiters than we keep: this one pays for the close.
    close(fd);
  }

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
    // The jobs' mapped users must traverse down to the rootfs: directories made here get 0755
    // whatever the caller's umask (the agent runs with 077), and an existing one that others
    // cannot traverse is refused by name instead of failing every job's start in runc.
    std::vector<std::string> made;
    for (fs::path a = fs::path(p).parent_path(); !a.empty() && a != a.root_path(); a = a.parent_path()) {
      struct stat st;
      if (stat(a.c_str(), &st) != 0) {
        made.push_back(a.string());
      } else if ((st.st_mode & S_IXOTH) == 0) {
        return absl::FailedPreconditionError(StrCat(a.string(), " (above the host rootfs ", p,
                                                    ") is not traversable by other users; chmod o+x it"));
      }
    }
    std::error_code ec;
    fs::create_directories(p, ec);
    if (ec) return absl::InternalError(StrCat("mkdir ", p, ": ", ec.message()));
    for (const std::string& d : made) chmod(d.c_str(), 0755);
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

  // Resolves what the spec needs on this node (image, uid range, devices, datasets handed to the
  // job's uid) and returns the final config.json text (after the test hook).
  absl::StatusOr<std::string> SpecText(const SandboxSpec& spec, OciInputs& in) {
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
      in.driver_dirs = driver_dirs_;
      in.driver_library_path = options_.gpu_library_path;
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
    return text;
  }

  // Writes the bundle, job.json and empty logs for `spec` into `dir`. A prepared sandbox's
  // record keeps its container id and the prepared flag.
  absl::Status Prepare(const SandboxSpec& spec, const std::string& dir, bool prepared = false) {
    OciInputs in;
    WARDEN_ASSIGN_OR_RETURN(std::string text, SpecText(spec, in));
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
    if (prepared) {
      rec.container_id = spec.job_id;
      rec.prepared = true;
    }
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

  // Reads `fd` to end of file (or, with `one_line`, to the first newline) within `timeout_ms`;
  // trailing newlines removed.
  static std::string ReadReport(int fd, int timeout_ms, bool one_line) {
    std::string line;
    char buf[1024];
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      if (one_line && line.find('\n') != std::string::npos) break;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) break;
      pollfd p = {fd, POLLIN, 0};
      int n = poll(&p, 1, static_cast<int>(left));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      // One line at most: a byte at a time, so nothing after it is consumed.
      ssize_t r = read(fd, buf, one_line ? 1 : sizeof(buf));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      line.append(buf, static_cast<size_t>(r));
      if (line.size() > 65536) break;
    }
    while (!line.empty() && line.back() == '\n') line.pop_back();
    return line;
  }

  // Starts the shim: posix_spawn (a vfork-style clone: copying the agent's page tables for a fork
  // cost milliseconds per job) in a new session, so no signal meant for the agent's process group
  // reaches it and it survives the agent (init adopts it). It stays the runner's child until it
  // exits: ReapShims() collects it. Then waits for the shim's start report on fd 3.
  //
  // A prepared sandbox's shim also gets `extra` as fds 4, 5, ...; with `keep_start` the start
  // pipe is read up to the first line only and its read end handed back in *keep_start (the
  // shim acknowledges the hand-over on it later).
  absl::Status SpawnShim(const std::string& dir, const std::vector<int>& extra = {}, int* keep_start = nullptr) {
    std::vector<std::string> args = options_.shim_command;
    args.push_back(dir);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::string shim_log = dir + "/shim.log";
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) return absl::InternalError(StrCat("pipe: ", Errno()));
    struct Actions {
      posix_spawn_file_actions_t fa;
      posix_spawnattr_t attr;
      Actions() {
        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&attr);
      }
      ~Actions() {
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
      }
    } sp;
    posix_spawn_file_actions_addopen(&sp.fa, 0, "/dev/null", O_RDWR, 0);
    posix_spawn_file_actions_addopen(&sp.fa, 1, shim_log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&sp.fa, 1, 2);
    posix_spawn_file_actions_adddup2(&sp.fa, pipefd[1], 3);  // dup2 clears close-on-exec
    // Moved out of the way first (fds >= 100, close-on-exec), so no dup2 below overwrites a source.
    std::vector<int> high;
    struct HighCloser {
      std::vector<int>& fds;
      ~HighCloser() {
        for (int fd : fds) close(fd);
      }
    } high_closer{high};
    for (size_t i = 0; i < extra.size(); ++i) {
      int h = fcntl(extra[i], F_DUPFD_CLOEXEC, 100);
      if (h < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return absl::InternalError(StrCat("cannot pass descriptors to the shim: ", Errno()));
      }
      high.push_back(h);
    }
    for (size_t i = 0; i < high.size(); ++i) {
      posix_spawn_file_actions_adddup2(&sp.fa, high[i], 4 + static_cast<int>(i));
    }
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&sp.attr, &none);
    posix_spawnattr_setflags(&sp.attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, argv[0], &sp.fa, &sp.attr, argv.data(), environ);
    close(pipefd[1]);
    if (rc != 0) {
      close(pipefd[0]);
      return absl::InternalError(StrCat("cannot start the job's shim ", args[0], ": ", std::strerror(rc)));
    }
    {
      std::lock_guard<std::mutex> lock(shims_mu_);
      shims_.push_back(pid);
    }
    std::string line = ReadReport(pipefd[0], 120'000, keep_start != nullptr);
    if (keep_start != nullptr && line == "ok") {
      *keep_start = pipefd[0];
      return absl::OkStatus();
    }
    close(pipefd[0]);
    if (line == "ok") return absl::OkStatus();
    if (line.rfind("err ", 0) == 0) return absl::InternalError(StrCat("the runtime could not start the job: ", line.substr(4)));
    return absl::InternalError(StrCat("the job's shim (", args[0], ") exited without reporting; see ", shim_log));
  }

  RunnerOptions options_;
  CgroupLayout layout_;
  std::vector<HostDirMount> driver_dirs_;  // from options_.gpu_driver_dirs, fixed after Init
  std::string runtime_path_;
  std::mutex mu_;
  std::map<std::string, uint32_t> slots_;
  std::mutex starting_mu_;  // held only briefly (may be taken under mu_, never the reverse)
  std::set<std::string> starting_;
  bool host_rootfs_is_plain_ = false;  // overlayfs failed: the fallback bind is what we have
  static constexpr size_t kMaxIdleInotify = 16;
  std::mutex inotify_mu_;  // a leaf: held only to take or return an instance
  std::vector<int> idle_inotify_;
  std::mutex shims_mu_;  // a leaf
  std::vector<pid_t> shims_;  // spawned, not yet reaped
  std::mutex prepared_mu_;  // a leaf, like starting_mu_
  std::vector<std::unique_ptr<PreparedSandbox>> prepared_;

 public:
  ~OciRunner() override {
    DropPrepared("", "");
    ReapShims();  // the rest (still running) are adopted by init when this process ends
    for (int fd : idle_inotify_) close(fd);
  }
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
