// The bubblewrap fallback, for nodes where no OCI runtime works. The same OCI spec is the source of
// truth (argv, env, cwd, seccomp); this file turns it into a bwrap command line, a compiled seccomp
// filter and a cgroup plan that the shim carries out (bwrap itself knows nothing of cgroups).
//
// What differs from runc (see README "bubblewrap fallback"): bwrap runs as the tenant's
// unprivileged host uid base+1000 and maps only that uid (to 1000) into the job; no /sys, no
// masked /proc paths; on cgroup v2 there are no device rules (they need an eBPF program), so the
// only GPU confinement there is that unassigned nodes are not in the job's /dev.
#include <fcntl.h>
#include <seccomp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "common/status.h"
#include "common/strings.h"
#include "runtime/oci_spec.h"

namespace warden::runtime {
namespace {

using common::Json;
using common::StrCat;

absl::StatusOr<scmp_compare> CompareOp(const std::string& op) {
  if (op == "SCMP_CMP_EQ") return SCMP_CMP_EQ;
  if (op == "SCMP_CMP_NE") return SCMP_CMP_NE;
  if (op == "SCMP_CMP_LT") return SCMP_CMP_LT;
  if (op == "SCMP_CMP_LE") return SCMP_CMP_LE;
  if (op == "SCMP_CMP_GT") return SCMP_CMP_GT;
  if (op == "SCMP_CMP_GE") return SCMP_CMP_GE;
  if (op == "SCMP_CMP_MASKED_EQ") return SCMP_CMP_MASKED_EQ;
  return absl::InvalidArgumentError(StrCat("seccomp: unknown comparison ", op));
}

}  // namespace

absl::Status CompileSeccompBpf(const Json& profile, const std::string& path) {
  if (!profile.is_object() || profile.value("defaultAction", "") != "SCMP_ACT_ERRNO") {
    return absl::InvalidArgumentError("seccomp: only errno-by-default (allow-list) profiles are compiled");
  }
  int default_errno = profile.value("defaultErrnoRet", 1);
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(default_errno));
  if (ctx == nullptr) return absl::InternalError("seccomp_init failed");
  struct Releaser {
    scmp_filter_ctx c;
    ~Releaser() { seccomp_release(c); }
  } release{ctx};
  for (const Json& rule : profile.at("syscalls")) {
    std::string action = rule.value("action", "");
    uint32_t act;
    if (action == "SCMP_ACT_ALLOW") {
      act = SCMP_ACT_ALLOW;
    } else if (action == "SCMP_ACT_ERRNO") {
      act = SCMP_ACT_ERRNO(rule.value("errnoRet", default_errno));
    } else {
      return absl::InvalidArgumentError(StrCat("seccomp: unsupported action ", action));
    }
    std::vector<scmp_arg_cmp> args;
    if (rule.contains("args")) {
      for (const Json& a : rule["args"]) {
        WARDEN_ASSIGN_OR_RETURN(scmp_compare op, CompareOp(a.value("op", "")));
        scmp_arg_cmp c{};
        c.arg = a.value("index", 0u);
        c.op = op;
        c.datum_a = a.value("value", uint64_t{0});
        c.datum_b = a.value("valueTwo", uint64_t{0});
        args.push_back(c);
      }
    }
    for (const Json& n : rule.at("names")) {
      int nr = seccomp_syscall_resolve_name(n.get<std::string>().c_str());
      if (nr == __NR_SCMP_ERROR) continue;  // not a syscall on this architecture
      int rc = seccomp_rule_add_array(ctx, act, nr, static_cast<unsigned>(args.size()), args.data());
      if (rc != 0) return absl::InternalError(StrCat("seccomp: rule for ", n.get<std::string>(), ": ", std::strerror(-rc)));
    }
  }
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(StrCat("cannot create ", path, ": ", std::strerror(errno)));
  int rc = seccomp_export_bpf(ctx, fd);
  close(fd);
  if (rc != 0) return absl::InternalError(StrCat("seccomp_export_bpf: ", std::strerror(-rc)));
  return absl::OkStatus();
}

absl::StatusOr<BwrapPlan> PlanBwrap(const SandboxSpec& spec, const OciInputs& in, const Json& oci,
                                    const std::string& bwrap_path) {
  BwrapPlan plan;
  const bool own_net = !spec.egress_allowed;
  const std::string scratch = in.rootfs_has_scratch_dir ? "/scratch" : "/tmp";
  std::vector<std::string>& a = plan.args;
  a = {bwrap_path, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
       "--unshare-cgroup-try"};
  if (own_net) a.push_back("--unshare-net");
  for (std::string s : {"--uid", "1000", "--gid", "1000", "--hostname", "sandbox", "--new-session",
                        "--die-with-parent", "--ro-bind", in.rootfs.c_str(), "/", "--proc", "/proc",
                        "--dev", "/dev"}) {
    a.push_back(s);
  }
  for (const DeviceNode& d : in.devices) {
    a.insert(a.end(), {"--dev-bind", d.host_path, d.container_path});
  }
  // The GPU driver's directories, read-only at the same path (GPU jobs only, as in BuildOciSpec;
  // LD_LIBRARY_PATH comes with the OCI spec's env below).
  if (!spec.gpus.empty()) {
    for (const HostDirMount& d : in.driver_dirs) a.insert(a.end(), {"--ro-bind", d.path, d.path});
  }
  // As in BuildOciSpec: a tmpfs on each dataset root with a dataset below it (mount points on a
  // read-only root), made read-only once the binds are in place (bwrap's one mapped user owns it).
  std::vector<std::string> roots;
  for (const char* root : kDatasetRoots) {
    for (const DatasetMount& d : spec.datasets) {
      if (d.container_path.rfind(StrCat(root, "/"), 0) == 0) {
        roots.push_back(root);
        break;
      }
    }
  }
  for (const std::string& root : roots) a.insert(a.end(), {"--perms", "0755", "--size", "65536", "--tmpfs", root});
  for (const DatasetMount& d : spec.datasets) {
    a.insert(a.end(), {d.writable ? "--bind" : "--ro-bind", d.host_dir, d.container_path});
  }
  for (const std::string& root : roots) a.insert(a.end(), {"--remount-ro", root});
  a.insert(a.end(), {"--perms", "1777", "--size", StrCat(spec.scratch_bytes), "--tmpfs", scratch});
  if (scratch != "/tmp") a.insert(a.end(), {"--perms", "1777", "--size", "67108864", "--tmpfs", "/tmp"});
  a.push_back("--clearenv");
  for (const Json& kv : oci["process"]["env"]) {
    std::string s = kv.get<std::string>();
    size_t eq = s.find('=');
    a.insert(a.end(), {"--setenv", s.substr(0, eq), s.substr(eq + 1)});
  }
  a.insert(a.end(), {"--chdir", oci["process"]["cwd"].get<std::string>(), "--seccomp", "10", "--"});
  for (const Json& arg : oci["process"]["args"]) a.push_back(arg.get<std::string>());

  // cgroup plan (as runc would do it for the same resources).
  const std::string& cg = in.cgroups_path;
  if (in.layout.UsesV1()) {
    std::set<std::string> dirs;
    auto dir_of = [&](const char* ctrl) {
      std::string d = in.layout.ControllerDir(ctrl, cg);
      if (!d.empty() && dirs.insert(d).second) {
        plan.cgroup_dirs.push_back(d);
        plan.cgroup_procs.push_back(d + "/cgroup.procs");
      }
      return d;
    };
    std::string mem = dir_of("memory");
    if (mem.empty()) return absl::FailedPreconditionError("cgroup v1 memory controller not mounted");
    plan.cgroup_writes.push_back({mem + "/memory.limit_in_bytes", StrCat(spec.memory_bytes)});
    if (access((in.layout.v1_mounts.at("memory") + "/memory.memsw.limit_in_bytes").c_str(), F_OK) == 0) {
      plan.cgroup_writes.push_back({mem + "/memory.memsw.limit_in_bytes", StrCat(spec.memory_bytes)});
    }
    std::string pids = dir_of("pids");
    if (pids.empty()) return absl::FailedPreconditionError("cgroup v1 pids controller not mounted");
    plan.cgroup_writes.push_back({pids + "/pids.max", StrCat(spec.pids_max)});
    std::string cpu = dir_of("cpu");
    if (!cpu.empty()) {
      plan.cgroup_writes.push_back({cpu + "/cpu.cfs_period_us", "100000"});
      plan.cgroup_writes.push_back({cpu + "/cpu.cfs_quota_us", StrCat(spec.cpu_millis * 100)});
    }
    dir_of("cpuacct");
    std::string dev = dir_of("devices");
    if (dev.empty()) return absl::FailedPreconditionError("cgroup v1 devices controller not mounted");
    plan.cgroup_writes.push_back({dev + "/devices.deny", "a"});
    for (const char* rule : {"c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                             "c 5:0 rwm", "c 5:2 rwm", "c 136:* rwm"}) {
      plan.cgroup_writes.push_back({dev + "/devices.allow", rule});
    }
    for (const DeviceNode& d : in.devices) {
      plan.cgroup_writes.push_back({dev + "/devices.allow", StrCat(d.type, " ", d.major, ":", d.minor, " rw")});
    }
  } else {
    const std::string root = in.layout.unified_mount;
    const std::string dir = root + cg;
    plan.cgroup_dirs.push_back(dir);
    plan.cgroup_procs.push_back(dir + "/cgroup.procs");
    // Enable the controllers down the path (the shim ignores "already enabled" failures here).
    std::string at = root;
    size_t pos = 1;
    while (true) {
      for (const char* c : {"+memory", "+pids", "+cpu"}) plan.cgroup_writes.push_back({at + "/cgroup.subtree_control", c});
      size_t next = cg.find('/', pos);
      if (next == std::string::npos) break;
      at = root + cg.substr(0, next);
      pos = next + 1;
    }
    plan.cgroup_writes.push_back({dir + "/memory.max", StrCat(spec.memory_bytes)});
    plan.cgroup_writes.push_back({dir + "/memory.swap.max", "0"});
    plan.cgroup_writes.push_back({dir + "/pids.max", StrCat(spec.pids_max)});
    plan.cgroup_writes.push_back({dir + "/cpu.max", StrCat(spec.cpu_millis * 100, " 100000")});
  }
  return plan;
}

}  // namespace warden::runtime
