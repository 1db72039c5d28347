// SandboxSpec validation and the OCI runtime spec writer.
#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <set>

#include "common/ids.h"
#include "common/status.h"
#include "common/strings.h"
#include "runtime/oci_spec.h"

namespace warden::runtime {
namespace {

using common::Json;
using common::StrCat;

constexpr size_t kMaxArgs = 4096;
constexpr size_t kMaxEnv = 4096;
constexpr size_t kMaxArgvBytes = 1 << 20;
constexpr size_t kMaxGpus = 64;
constexpr size_t kMaxDatasets = 64;

bool HasNul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s.substr(0, 80)) {
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > 80) out += "...";
  return out + "\"";
}

// An absolute, normalised path: starts with '/', no empty, "." or ".." components, no trailing
// slash (except "/" itself), no NUL, at most 4096 bytes.
absl::Status CheckAbsPath(std::string_view what, std::string_view p) {
  if (p.empty() || p[0] != '/') return absl::InvalidArgumentError(StrCat(what, " must be an absolute path, got ", Quote(p)));
  if (p.size() > 4096 || HasNul(p)) return absl::InvalidArgumentError(StrCat(what, " is too long or contains NUL"));
  if (p == "/") return absl::OkStatus();
  if (p.back() == '/') return absl::InvalidArgumentError(StrCat(what, " must not end with '/': ", Quote(p)));
  size_t i = 1;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    std::string_view part = p.substr(i, j - i);
    if (part.empty() || part == "." || part == "..") {
      return absl::InvalidArgumentError(StrCat(what, " must be normalised (no empty, '.' or '..' parts): ", Quote(p)));
    }
    i = j + 1;
  }
  return absl::OkStatus();
}

bool IsDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool IsGpuNode(std::string_view node) {
  constexpr std::string_view kPrefix = "/dev/nvidia";
  return node.substr(0, kPrefix.size()) == kPrefix && IsDigits(node.substr(kPrefix.size())) &&
         node.size() - kPrefix.size() <= 3;
}

bool IsMigCapNode(std::string_view node) {
  constexpr std::string_view kPrefix = "/dev/nvidia-caps/nvidia-cap";
  return node.substr(0, kPrefix.size()) == kPrefix && IsDigits(node.substr(kPrefix.size())) &&
         node.size() - kPrefix.size() <= 6;
}

bool IsGpuUuid(std::string_view u) {
  if (u.size() < 8 || u.size() > 96) return false;
  if (u.substr(0, 4) != "GPU-" && u.substr(0, 4) != "MIG-") return false;
  return std::all_of(u.begin() + 4, u.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '-' || c == '/';
  });
}

// Variables gpuwarden sets itself from the assignment (invariant 6), or that the NVIDIA container
// toolkit would act on; a job or image may not set them.
bool IsReservedVariable(std::string_view name) {
  static const std::set<std::string_view> kReserved = {
      "CUDA_VISIBLE_DEVICES",       "NVIDIA_VISIBLE_DEVICES",     "NVIDIA_DRIVER_CAPABILITIES",
      "NVIDIA_MIG_CONFIG_DEVICES",  "NVIDIA_MIG_MONITOR_DEVICES", "WARDEN_SCRATCH"};
  return kReserved.count(name) > 0 || name.substr(0, 15) == "NVIDIA_REQUIRE_";
}

}  // namespace

bool IsLoaderVariable(std::string_view name) {
  // Every LD_* variable (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, LD_DEBUG_OUTPUT, ...) plus the
  // rest of glibc's "unsecure" list that steers code loading or libc internals.
  static const std::set<std::string_view> kOthers = {
      "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LOCPATH", "MALLOC_TRACE",
      "NIS_PATH",   "NLSPATH",     "RESOLV_HOST_CONF", "RES_OPTIONS", "LD_PRELOAD"};
  return name.substr(0, 3) == "LD_" || kOthers.count(name) > 0;
}

absl::Status ValidateEnv(std::string_view source,
                         const std::vector<std::pair<std::string, std::string>>& env) {
  if (env.size() > kMaxEnv) return absl::InvalidArgumentError(StrCat(source, ": more than ", kMaxEnv, " variables"));
  std::set<std::string_view> seen;
  for (const auto& [name, value] : env) {
    if (name.empty() || name.size() > 256) {
      return absl::InvalidArgumentError(StrCat(source, ": variable names must be 1-256 bytes"));
    }
    for (char c : name) {
      bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
      if (!ok) {
        return absl::InvalidArgumentError(
            StrCat(source, ": variable name ", Quote(name), " may contain only A-Z, a-z, 0-9 and '_'"));
      }
    }
    if (name[0] >= '0' && name[0] <= '9') {
      return absl::InvalidArgumentError(StrCat(source, ": variable name ", Quote(name), " starts with a digit"));
    }
    if (IsLoaderVariable(name)) {
      return absl::InvalidArgumentError(
          StrCat(source, ": loader variable ", name,
                 " is refused (it would inject code into the job's or the runtime's processes)"));
    }
    if (IsReservedVariable(name)) {
      return absl::InvalidArgumentError(
          StrCat(source, ": ", name, " is set by gpuwarden from the GPU assignment and may not be set"));
    }
    if (HasNul(value) || value.size() > 128 * 1024) {
      return absl::InvalidArgumentError(StrCat(source, ": value of ", name, " contains NUL or exceeds 128 KiB"));
    }
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(StrCat(source, ": variable ", name, " is set twice"));
    }
  }
  return absl::OkStatus();
}

bool IsUnder(std::string_view path, std::string_view dir) {
  return path == dir || (path.size() > dir.size() && path.substr(0, dir.size()) == dir && path[dir.size()] == '/');
}

absl::Status ValidateSandboxSpec(const SandboxSpec& spec) {
  WARDEN_RETURN_IF_ERROR(common::ValidateName("tenant", spec.tenant));
  if (spec.job_id.empty() || spec.job_id.size() > 64 ||
      !std::all_of(spec.job_id.begin(), spec.job_id.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
      })) {
    return absl::InvalidArgumentError(StrCat("job_id must be 1-64 of [A-Za-z0-9_-], got ", Quote(spec.job_id)));
  }
  if (spec.argv.empty()) return absl::InvalidArgumentError("argv must not be empty");
  if (spec.argv.size() > kMaxArgs) return absl::InvalidArgumentError(StrCat("argv has more than ", kMaxArgs, " entries"));
  size_t bytes = 0;
  for (size_t i = 0; i < spec.argv.size(); ++i) {
    if (HasNul(spec.argv[i])) return absl::InvalidArgumentError(StrCat("argv[", i, "] contains a NUL byte"));
    bytes += spec.argv[i].size() + 1;
  }
  if (spec.argv[0].empty()) return absl::InvalidArgumentError("argv[0] must not be empty");
  if (bytes > kMaxArgvBytes) return absl::InvalidArgumentError("argv exceeds 1 MiB");
  WARDEN_RETURN_IF_ERROR(ValidateEnv("spec env", spec.env));
  WARDEN_RETURN_IF_ERROR(CheckAbsPath("cwd", spec.cwd));

  if (spec.image != "host") {
    bool ok = spec.image.size() == 71 && spec.image.substr(0, 7) == "sha256:" &&
              std::all_of(spec.image.begin() + 7, spec.image.end(),
                          [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
    if (!ok) {
      return absl::InvalidArgumentError(
          StrCat("image must be \"host\" or \"sha256:<64 lowercase hex>\", got ", Quote(spec.image)));
    }
  }

  if (spec.gpus.size() > kMaxGpus) return absl::InvalidArgumentError(StrCat("more than ", kMaxGpus, " GPUs"));
  std::set<std::string> uuids, nodes;
  for (size_t i = 0; i < spec.gpus.size(); ++i) {
    const GpuDevice& g = spec.gpus[i];
    if (!IsGpuUuid(g.uuid)) {
      return absl::InvalidArgumentError(StrCat("gpus[", i, "].uuid must look like GPU-<hex> or MIG-<hex>, got ", Quote(g.uuid)));
    }
    if (!uuids.insert(g.uuid).second) return absl::InvalidArgumentError(StrCat("gpus[", i, "].uuid ", g.uuid, " is listed twice"));
    if (!IsGpuNode(g.node)) {
      return absl::InvalidArgumentError(StrCat("gpus[", i, "].node must be /dev/nvidiaN, got ", Quote(g.node)));
    }
    // The same parent GPU may carry several MIG instances; the node is deduplicated later.
    nodes.insert(g.node);
    for (const std::string& cap : g.mig_cap_nodes) {
      if (!IsMigCapNode(cap)) {
        return absl::InvalidArgumentError(
            StrCat("gpus[", i, "].mig_cap_nodes: ", Quote(cap), " is not /dev/nvidia-caps/nvidia-capN"));
      }
    }
  }

  constexpr uint64_t kMiB = 1ull << 20;
  if (spec.memory_bytes < 4 * kMiB || spec.memory_bytes > (1ull << 42)) {
    return absl::InvalidArgumentError("memory_bytes must be between 4 MiB and 4 TiB");
  }
  if (spec.pids_max < 1 || spec.pids_max > (1 << 22)) return absl::InvalidArgumentError("pids_max must be between 1 and 4194304");
  if (spec.cpu_millis < 10 || spec.cpu_millis > 1'024'000) {
    return absl::InvalidArgumentError("cpu_millis must be between 10 and 1024000");
  }
  if (spec.scratch_bytes < kMiB || spec.scratch_bytes > (1ull << 42)) {
    return absl::InvalidArgumentError("scratch_bytes must be between 1 MiB and 4 TiB");
  }
  if (spec.wall_time <= absl::ZeroDuration() || spec.wall_time > absl::Hours(24 * 30)) {
    return absl::InvalidArgumentError("wall_time must be positive and at most 30 days");
  }

  if (spec.datasets.size() > kMaxDatasets) return absl::InvalidArgumentError("more than 64 datasets");
  std::set<std::string> targets;
  for (size_t i = 0; i < spec.datasets.size(); ++i) {
    const DatasetMount& d = spec.datasets[i];
    WARDEN_RETURN_IF_ERROR(CheckAbsPath(StrCat("datasets[", i, "].host_dir"), d.host_dir));
    WARDEN_RETURN_IF_ERROR(CheckAbsPath(StrCat("datasets[", i, "].container_path"), d.container_path));
    if (d.host_dir == "/") return absl::InvalidArgumentError(StrCat("datasets[", i, "].host_dir must not be /"));
    bool under_root = false;
    for (const char* root : kDatasetRoots) under_root = under_root || IsUnder(d.container_path, root);
    if (!under_root) {
      return absl::InvalidArgumentError(
          StrCat("datasets[", i, "].container_path ", Quote(d.container_path),
                 " is not under /data or /datasets (the only places a dataset may be mounted)"));
    }
    for (const std::string& t : targets) {
      if (IsUnder(d.container_path, t) || IsUnder(t, d.container_path)) {
        return absl::InvalidArgumentError(StrCat("datasets[", i, "].container_path overlaps another dataset"));
      }
    }
    targets.insert(d.container_path);
  }
  return absl::OkStatus();
}

std::vector<std::string> JobEnvironment(const SandboxSpec& spec,
                                        const std::vector<std::pair<std::string, std::string>>& image_env,
                                        std::string_view scratch_path) {
  std::vector<std::pair<std::string, std::string>> merged;
  auto put = [&](const std::string& k, const std::string& v) {
    for (auto& kv : merged) {
      if (kv.first == k) {
        kv.second = v;
        return;
      }
    }
    merged.emplace_back(k, v);
  };
  put("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  put("HOME", "/tmp");
  for (const auto& [k, v] : image_env) put(k, v);
  for (const auto& [k, v] : spec.env) put(k, v);
  std::string uuids;
  for (const GpuDevice& g : spec.gpus) {
    if (!uuids.empty()) uuids += ',';
    uuids += g.uuid;
  }
  // Invariant 6: device nodes, CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES name the same GPUs;
  // a job without GPUs gets an empty list ("void" is the container toolkit's word for none).
  put("CUDA_VISIBLE_DEVICES", uuids);
  put("NVIDIA_VISIBLE_DEVICES", uuids.empty() ? "void" : uuids);
  put("WARDEN_SCRATCH", std::string(scratch_path));
  std::vector<std::string> out;
  out.reserve(merged.size());
  for (const auto& [k, v] : merged) out.push_back(StrCat(k, "=", v));
  return out;
}

uint32_t PreferredUidSlot(std::string_view tenant, uint32_t slots) {
  std::string tag = StrCat("gpuwarden-uid-slot\0", tenant);
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(tag.data()), tag.size(), md);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | md[i];
  return slots == 0 ? 0 : static_cast<uint32_t>(v % slots);
}

Json DefaultSeccompProfile() {
  // Allow-list: everything not named here fails with EPERM. Left out on purpose (each a known
  // container escape or kernel attack surface): mount/umount2/pivot_root/chroot and the new mount
  // API, ptrace/process_vm_*/pidfd_getfd/kcmp, bpf, keyctl/add_key/request_key, kexec_*,
  // init_module/finit_module/delete_module, perf_event_open, userfaultfd, unshare/setns,
  // open_by_handle_at, io_uring_*, iopl/ioperm, swapon/off, reboot, clock/time setting, acct,
  // quotactl, syslog, personality changes, fanotify, lookup_dcookie.
  static const char* kAllowed[] = {
      "accept", "accept4", "access", "alarm", "arch_prctl", "bind", "brk", "capget", "capset",
      "chdir", "chmod", "chown", "clock_getres", "clock_gettime", "clock_nanosleep", "close",
      "close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create",
      "epoll_create1", "epoll_ctl", "epoll_pwait", "epoll_pwait2", "epoll_wait", "eventfd",
      "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2",
      "fadvise64", "fallocate", "fchdir", "fchmod", "fchmodat", "fchown", "fchownat", "fcntl",
      "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat",
      "fstatfs", "fsync", "ftruncate", "futex", "futex_waitv", "get_mempolicy", "get_robust_list",
      "get_thread_area", "getcpu", "getcwd", "getdents", "getdents64", "getegid", "geteuid",
      "getgid", "getgroups", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid",
      "getpriority", "getrandom", "getresgid", "getresuid", "getrlimit", "getrusage", "getsid",
      "getsockname", "getsockopt", "gettid", "gettimeofday", "getuid", "getxattr",
      "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel",
      "io_destroy", "io_getevents", "io_pgetevents", "io_setup", "io_submit", "ioctl",
      "ioprio_get", "ioprio_set", "kill", "lchown", "lgetxattr", "link", "linkat", "listen",
      "listxattr", "llistxattr", "lremovexattr", "lseek", "lsetxattr", "lstat", "madvise", "mbind",
      "membarrier", "memfd_create", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock",
      "mlock2", "mlockall", "mmap", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
      "mq_timedreceive", "mq_timedsend", "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv",
      "msgsnd", "msync", "munlock", "munlockall", "munmap", "nanosleep", "newfstatat", "open",
      "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "poll",
      "ppoll", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "pselect6", "pwrite64",
      "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recvfrom",
      "recvmmsg", "recvmsg", "remap_file_pages", "removexattr", "rename", "renameat", "renameat2",
      "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
      "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_tgsigqueueinfo",
      "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity", "sched_getattr",
      "sched_getparam", "sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity",
      "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select",
      "semctl", "semget", "semop", "semtimedop", "sendfile", "sendmmsg", "sendmsg", "sendto",
      "set_mempolicy", "set_robust_list", "set_thread_area", "set_tid_address", "setfsgid",
      "setfsuid", "setgid", "setgroups", "setitimer", "setpgid", "setpriority", "setregid",
      "setresgid", "setresuid", "setreuid", "setrlimit", "setsid", "setsockopt", "setuid",
      "setxattr", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
      "signalfd4", "socketpair", "splice", "stat", "statfs", "statx", "symlink", "symlinkat",
      "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
      "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime", "timerfd_create",
      "timerfd_gettime", "timerfd_settime", "times", "tkill", "truncate", "umask", "uname",
      "unlink", "unlinkat", "utime", "utimensat", "utimes", "vfork", "wait4", "waitid", "write",
      "writev"};
  Json syscalls = Json::array();
  Json names = Json::array();
  for (const char* n : kAllowed) names.push_back(n);
  syscalls.push_back({{"names", names}, {"action", "SCMP_ACT_ALLOW"}});

  // socket(): only UNIX, IPv4, IPv6 and netlink families, and for IP only stream, datagram and
  // seqpacket types, so no raw IP or packet sockets (also needs CAP_NET_RAW, which is dropped).
  constexpr int kTypeMask = 0xf;  // SOCK_TYPE_MASK; SOCK_NONBLOCK/CLOEXEC sit above it
  for (int family : {1 /*AF_UNIX*/, 2 /*AF_INET*/, 10 /*AF_INET6*/}) {
    for (int type : {1 /*STREAM*/, 2 /*DGRAM*/, 5 /*SEQPACKET*/}) {
      syscalls.push_back({{"names", {"socket"}},
                          {"action", "SCMP_ACT_ALLOW"},
                          {"args",
                           {{{"index", 0}, {"value", family}, {"op", "SCMP_CMP_EQ"}},
                            {{"index", 1}, {"value", kTypeMask}, {"valueTwo", type}, {"op", "SCMP_CMP_MASKED_EQ"}}}}});
    }
  }
  syscalls.push_back({{"names", {"socket"}},
                      {"action", "SCMP_ACT_ALLOW"},
                      {"args", {{{"index", 0}, {"value", 16 /*AF_NETLINK*/}, {"op", "SCMP_CMP_EQ"}}}}});
  // clone(): threads and processes, but no new namespaces (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|
  // NEWUSER|NEWPID|NEWNET = 0x7E020000): a user namespace inside the job would hand it a fresh
  // set of capabilities over new namespaces, the usual first step of kernel exploits.
  syscalls.push_back({{"names", {"clone"}},
                      {"action", "SCMP_ACT_ALLOW"},
                      {"args", {{{"index", 0}, {"value", 0x7E020000}, {"valueTwo", 0}, {"op", "SCMP_CMP_MASKED_EQ"}}}}});
  // clone3 passes its flags in memory where seccomp cannot look: ENOSYS makes libc fall back to
  // clone(), which the rule above checks.
  syscalls.push_back({{"names", {"clone3"}}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", 38}});
  // personality(): only the harmless values (Linux default, UNAME26, 0xffffffff query).
  for (int64_t p : {int64_t{0}, int64_t{0x0008}, int64_t{0x20000}, int64_t{0x20008}, int64_t{0xffffffff}}) {
    syscalls.push_back({{"names", {"personality"}},
                        {"action", "SCMP_ACT_ALLOW"},
                        {"args", {{{"index", 0}, {"value", p}, {"op", "SCMP_CMP_EQ"}}}}});
  }
#if defined(__x86_64__)
  Json arches = {"SCMP_ARCH_X86_64"};
#elif defined(__aarch64__)
  Json arches = {"SCMP_ARCH_AARCH64"};
#else
  Json arches = Json::array();
#endif
  return {{"defaultAction", "SCMP_ACT_ERRNO"},
          {"defaultErrnoRet", 1},
          {"architectures", arches},
          {"syscalls", syscalls}};
}

absl::StatusOr<Json> BuildOciSpec(const SandboxSpec& spec, const OciInputs& in) {
  WARDEN_RETURN_IF_ERROR(ValidateEnv("image config env", in.image_env));
  WARDEN_RETURN_IF_ERROR(ValidateEnv("spec env", spec.env));
  const bool own_net = !spec.egress_allowed;
  const std::string scratch_path = in.rootfs_has_scratch_dir ? "/scratch" : "/tmp";
  std::vector<std::string> env = JobEnvironment(spec, in.image_env, scratch_path);
  // Set by gpuwarden after the loader-variable check of both lists above (which refuses any
  // LD_* from the image or the spec): the driver's own directories, read-only, GPU jobs only.
  if (!spec.gpus.empty() && !in.driver_library_path.empty()) {
    env.push_back(StrCat("LD_LIBRARY_PATH=", in.driver_library_path));
  }

  Json process = {
      {"terminal", false},
      {"user", {{"uid", kJobUid}, {"gid", kJobGid}, {"additionalGids", {kJobGid}}}},
      {"args", spec.argv},
      {"env", env},
      {"cwd", spec.cwd},
      // Every capability dropped, in every set.
      {"capabilities",
       {{"bounding", Json::array()}, {"effective", Json::array()}, {"inheritable", Json::array()},
        {"permitted", Json::array()}, {"ambient", Json::array()}}},
      // No core dumps (they would land in the job's files with its memory). Other limits are
      // inherited: a user namespace cannot raise a hard limit.
      {"rlimits", {{{"type", "RLIMIT_CORE"}, {"hard", 0}, {"soft", 0}}}},
      // setuid/setgid binaries and file capabilities grant nothing (escalation through a setuid
      // binary in the image or the host root).
      {"noNewPrivileges", true},
  };

  Json mounts = Json::array();
  auto add_mount = [&](std::string dest, std::string type, std::string source, std::vector<std::string> opts) {
    mounts.push_back({{"destination", dest}, {"type", type}, {"source", source}, {"options", opts}});
  };
  add_mount("/proc", "proc", "proc", {"nosuid", "noexec", "nodev"});
  add_mount("/dev", "tmpfs", "tmpfs", {"nosuid", "noexec", "strictatime", "mode=755", "size=65536k"});
  add_mount("/dev/pts", "devpts", "devpts", {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"});
  add_mount("/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"});
  add_mount("/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"});
  if (own_net) {
    add_mount("/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"});
  } else {
    // sysfs can only be mounted by the owner of the network namespace.
    add_mount("/sys", "none", "/sys", {"rbind", "nosuid", "noexec", "nodev", "ro"});
  }
  // Scratch: a size-limited tmpfs, private to this job (its pages count against the job's memory
  // limit); writing past the size gives ENOSPC.
  // Owned by the job user: runc gives a tmpfs the mode of the directory it covers (often 0755
  // in images), so mode=1777 alone would not make it writable.
  const std::string owner_uid = StrCat("uid=", kJobUid), owner_gid = StrCat("gid=", kJobGid);
  add_mount(scratch_path, "tmpfs", "tmpfs",
            {"nosuid", "nodev", "mode=1777", owner_uid, owner_gid, StrCat("size=", spec.scratch_bytes)});
  if (scratch_path != "/tmp") {
    add_mount("/tmp", "tmpfs", "tmpfs", {"nosuid", "nodev", "mode=1777", owner_uid, owner_gid, "size=67108864"});
  }
  for (const DeviceNode& d : in.devices) {
    // Bind-mounted (a user namespace cannot mknod); the device cgroup rules below are the second
    // lock. nodev is deliberately absent here only.
    add_mount(d.container_path, "none", d.host_path, {"bind", "nosuid", "noexec"});
  }
  // The GPU driver's libraries where the host keeps them on a mount of their own (RunnerOptions::
  // gpu_driver_dirs): read-only at the same path, GPU jobs only (the runner passes none otherwise).
  if (!spec.gpus.empty()) {
    for (const HostDirMount& d : in.driver_dirs) add_mount(d.path, "none", d.path, d.options);
  }
  // Dataset roots: a tmpfs owned by the container's root (mode 0755) on each root that has a
  // dataset below it, so the runtime can create the mount points on a read-only root; the job's
  // user cannot write there. Its few inodes are bounded by size and nr_inodes.
  for (const char* root : kDatasetRoots) {
    bool below = false;
    for (const DatasetMount& d : spec.datasets) below = below || (d.container_path != root && IsUnder(d.container_path, root));
    if (below) add_mount(root, "tmpfs", "tmpfs", {"nosuid", "nodev", "noexec", "mode=0755", "size=65536", "nr_inodes=1024"});
  }
  for (const DatasetMount& d : spec.datasets) {
    add_mount(d.container_path, "none", d.host_dir,
              {"rbind", "nosuid", "nodev", "noexec", d.writable ? "rw" : "ro"});
  }

  Json devices_rules = Json::array();
  devices_rules.push_back({{"allow", false}, {"access", "rwm"}});
  for (const DeviceNode& d : in.devices) {
    devices_rules.push_back({{"allow", true},
                             {"type", std::string(1, d.type)},
                             {"major", d.major},
                             {"minor", d.minor},
                             {"access", "rw"}});
  }
  Json resources = {
      {"devices", devices_rules},
      // swap == limit: no swap beyond the memory limit.
      {"memory", {{"limit", spec.memory_bytes}, {"swap", spec.memory_bytes}}},
      {"pids", {{"limit", spec.pids_max}}},
      {"cpu", {{"period", 100000}, {"quota", spec.cpu_millis * 100}}},
  };
  if (in.layout.UsesV1()) {
    // v1 only: never let the kernel skip the OOM killer (a hung job would hold its memory).
    resources["memory"]["disableOOMKiller"] = false;
  }

  Json namespaces = Json::array();
  for (const char* ns : {"pid", "ipc", "uts", "mount", "user", "cgroup"}) namespaces.push_back({{"type", ns}});
  if (own_net) namespaces.push_back({{"type", "network"}});

  Json linux_obj = {
      {"uidMappings", {{{"containerID", 0}, {"hostID", in.host_uid_base}, {"size", kIdsPerTenant}}}},
      {"gidMappings", {{{"containerID", 0}, {"hostID", in.host_uid_base}, {"size", kIdsPerTenant}}}},
      {"namespaces", namespaces},
      {"cgroupsPath", in.cgroups_path},
      {"resources", resources},
      {"seccomp", DefaultSeccompProfile()},
      {"maskedPaths",
       {"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
        "/proc/driver/nvidia", "/sys/firmware", "/sys/devices/virtual/powercap",
        "/sys/kernel/debug", "/sys/module/nvidia"}},
      {"readonlyPaths",
       {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}},
      {"rootfsPropagation", "private"},
  };

  return Json{{"ociVersion", "1.0.2"},
              {"process", process},
              {"root", {{"path", in.rootfs}, {"readonly", true}}},
              {"hostname", in.hostname},
              {"mounts", mounts},
              {"linux", linux_obj}};
}

}  // namespace warden::runtime
