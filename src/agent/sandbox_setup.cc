#include "agent/sandbox_setup.h"
#include "agent/mig_manager.h"

#include <dlfcn.h>
#include <link.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <climits>
#include <cstring>

#include "common/status.h"
#include "common/strings.h"

namespace warden::agent {
namespace {

using common::StrCat;

std::string SelfExe() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  buf[n] = '\0';
  return buf;
}

bool Executable(const std::string& p) { return ::access(p.c_str(), X_OK) == 0; }

// GPU UUID (or MIG UUID) -> the parent GPU's device node. The node's number is the backend's
// index (NVML's enumeration order, which is the minor number on ordinary single-driver hosts).
absl::StatusOr<runtime::GpuDevice> ResolveGpu(gpu::GpuBackend* backend, const std::string& uuid) {
  WARDEN_ASSIGN_OR_RETURN(auto devices, backend->Discover());
  for (const gpu::GpuDevice& g : devices) {
    bool match = g.uuid == uuid;
    const gpu::MigInstanceInfo* mig = nullptr;
    for (const gpu::MigInstanceInfo& m : g.mig_instances) {
      if (m.uuid == uuid) mig = &m;
    }
    if (!match && mig == nullptr) continue;
    runtime::GpuDevice d;
    d.uuid = uuid;
    d.node = StrCat("/dev/nvidia", g.index);
    // A MIG instance also needs its GI and CI capability nodes, and only those (mig_manager.h).
    if (mig != nullptr && backend->name() != "sim") {
      WARDEN_ASSIGN_OR_RETURN(d.mig_cap_nodes, MigCapNodes("/proc", g.index, mig->gpu_instance_id,
                                                           mig->compute_instance_id));
    }
    return d;
  }
  return absl::NotFoundError(StrCat("GPU ", uuid, " is not on this node"));
}

// Stand-in device nodes for simulated GPUs: nvidiaN with the numbers of /dev/null (1:3), so a job
// sees exactly its assigned nodes but can never reach a real GPU through them (195:N would be a
// real GPU on a machine with the NVIDIA driver).
absl::Status MakeSimDevNodes(const std::string& dir, gpu::GpuBackend* backend) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::InternalError(StrCat("cannot create ", dir, ": ", std::strerror(errno)));
  }
  ::chmod(dir.c_str(), 0755);
  WARDEN_ASSIGN_OR_RETURN(auto devices, backend->Discover());
  for (const gpu::GpuDevice& g : devices) {
    const std::string node = StrCat(dir, "/nvidia", g.index);
    struct stat st;
    if (::lstat(node.c_str(), &st) == 0) {
      if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)) continue;
      ::unlink(node.c_str());
    }
    if (::mknod(node.c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0) {
      return absl::InternalError(StrCat("cannot create the simulated GPU node ", node, ": ", std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string LocateLibrary(const char* soname) {
  void* h = ::dlopen(soname, RTLD_LAZY | RTLD_LOCAL);
  if (h == nullptr) return "";
  char origin[PATH_MAX] = {0};
  std::string dir;
  if (::dlinfo(h, RTLD_DI_ORIGIN, origin) == 0) {
    char real[PATH_MAX];
    if (::realpath(origin, real) != nullptr) dir = real;
  }
  ::dlclose(h);
  return dir;
}

absl::StatusOr<DriverDirs> ResolveDriverDirs(std::string_view flag, const std::string& mountinfo,
                                             const std::function<std::string(const char*)>& locate) {
  DriverDirs out;
  auto add_path = [&](const std::string& dir) {
    std::string wrapped = StrCat(":", out.library_path, ":");
    if (wrapped.find(StrCat(":", dir, ":")) != std::string::npos) return;
    out.library_path += StrCat(out.library_path.empty() ? "" : ":", dir);
  };
  if (flag == "none") {
    out.note = "GPU driver dirs: none (--gpu-driver-dirs none)";
    return out;
  }
  if (flag == "auto") {
    for (const char* soname : {"libcuda.so.1", "libnvidia-ml.so.1"}) {
      const std::string dir = locate(soname);
      if (dir.empty()) continue;
      WARDEN_ASSIGN_OR_RETURN(std::string mount, runtime::MountPointOf(dir, mountinfo));
      if (mount == "/") continue;  // on the root file system: the host image shows it already
      if (std::find(out.dirs.begin(), out.dirs.end(), mount) == out.dirs.end()) out.dirs.push_back(mount);
      add_path(dir);
    }
    out.note = out.dirs.empty()
                   ? "GPU driver dirs: none needed (libcuda and libnvidia-ml are on the root file system or absent)"
                   : StrCat("GPU driver dirs: ", out.dirs[0], out.dirs.size() > 1 ? " and more" : "",
                            " bound read-only into GPU jobs, LD_LIBRARY_PATH=", out.library_path);
    return out;
  }
  size_t at = 0;
  while (at <= flag.size()) {
    size_t comma = flag.find(',', at);
    if (comma == std::string_view::npos) comma = flag.size();
    std::string dir(flag.substr(at, comma - at));
    at = comma + 1;
    if (dir.empty()) continue;
    if (dir[0] != '/') {
      return absl::InvalidArgumentError(
          StrCat("--gpu-driver-dirs: expected auto, none or absolute directories separated by commas, got \"", dir, "\""));
    }
    out.dirs.push_back(dir);
    for (const std::string& sub : {dir + "/lib64", dir + "/lib", dir}) {
      if (::access((sub + "/libcuda.so.1").c_str(), F_OK) == 0) {
        add_path(sub);
        break;
      }
    }
  }
  out.note = StrCat("GPU driver dirs: ", flag, " bound read-only into GPU jobs",
                    out.library_path.empty() ? " (no libcuda.so.1 in them)" : StrCat(", LD_LIBRARY_PATH=", out.library_path));
  return out;
}

std::vector<std::string> FindShimCommand() {
  const std::string exe = SelfExe();
  const std::string dir = exe.substr(0, exe.rfind('/'));
  for (const std::string& cand : {dir + "/warden-sandbox-shim", dir + "/../libexec/gpuwarden/warden-sandbox-shim",
                                  dir + "/src/runtime/warden-sandbox-shim"}) {
    if (Executable(cand)) return {cand};
  }
  // The same entry point as a hidden verb of this binary (slower to start: shared libraries).
  return {exe, "agent", "shim"};
}

std::string FindLauncher() {
  const std::string exe = SelfExe();
  const std::string dir = exe.substr(0, exe.rfind('/'));
  for (const std::string& cand : {dir + "/warden-sandbox-launcher", dir + "/../libexec/gpuwarden/warden-sandbox-launcher",
                                  dir + "/src/runtime/warden-sandbox-launcher"}) {
    if (Executable(cand)) return cand;
  }
  return "";
}

absl::StatusOr<std::unique_ptr<JobExecutor>> CreateAgentSandbox(const SandboxSetup& setup,
                                                                std::string* chosen) {
  if (::geteuid() != 0) {
    return absl::FailedPreconditionError(
        "the sandbox needs root (per-tenant uid ranges, cgroups, the host image's bind mount)");
  }
  RuntimeExecutorOptions o;
  o.runner.state_dir = setup.data_dir + "/sandbox";
  o.runner.image_root = setup.data_dir + "/images";
  o.runner.shim_command = FindShimCommand();
  o.runner.cancel_grace = setup.max_cancel_grace;
  if (setup.prepared_sandboxes > 0) {
    o.runner.launcher_path = FindLauncher();
    if (o.runner.launcher_path.empty()) {
      return absl::FailedPreconditionError(
          "--prepared-sandboxes needs warden-sandbox-launcher installed next to the gpuwarden binary (or in "
          "../libexec/gpuwarden)");
    }
    o.prepared_per_pair = setup.prepared_sandboxes;
  }
  // The tenant's mapped root inside the job must traverse (never list) the data dir down to the
  // bundle, the image store and the stand-in device nodes; the files in it keep their modes.
  ::chmod(setup.data_dir.c_str(), 0711);
  {
    char real[PATH_MAX];
    if (::realpath(setup.data_dir.c_str(), real) == nullptr) {
      return absl::InternalError(StrCat("cannot resolve ", setup.data_dir, ": ", std::strerror(errno)));
    }
    std::string p = real;
    while (p.size() > 1) {
      p = p.substr(0, std::max<size_t>(1, p.rfind('/')));
      struct stat st;
      if (::stat(p.c_str(), &st) == 0 && (st.st_mode & S_IXOTH) == 0) {
        char mode[8];
        std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
        return absl::FailedPreconditionError(
            StrCat(p, " (above the data dir) is not traversable by other users (mode ",
                   mode,
                   "): the sandbox's per-tenant users must reach DATA_DIR/sandbox; chmod o+x it or "
                   "use another --data-dir"));
      }
    }
  }
  for (const std::string& d : {o.runner.state_dir, o.runner.image_root}) {
    if (::mkdir(d.c_str(), 0711) != 0 && errno != EEXIST) {
      return absl::InternalError(StrCat("cannot create ", d, ": ", std::strerror(errno)));
    }
    ::chmod(d.c_str(), 0711);
  }
  std::string driver_note;
  if (setup.backend != nullptr) {
    gpu::GpuBackend* backend = setup.backend;
    if (setup.simulated_gpus) {
      o.runner.host_dev_dir = o.runner.state_dir + "/sim-dev";
      WARDEN_RETURN_IF_ERROR(MakeSimDevNodes(o.runner.host_dev_dir, backend));
    }
    o.resolve_gpu = [backend](const std::string& uuid) { return ResolveGpu(backend, uuid); };
    if (!setup.simulated_gpus) {
      WARDEN_ASSIGN_OR_RETURN(DriverDirs driver,
                              ResolveDriverDirs(setup.gpu_driver_dirs, runtime::ReadMountInfo(), LocateLibrary));
      o.runner.gpu_driver_dirs = driver.dirs;
      o.runner.gpu_library_path = driver.library_path;
      driver_note = driver.note;
    }
  }
  std::vector<std::pair<std::string, runtime::RuntimeKind>> candidates;
  if (setup.oci_runtime == "runc" || setup.oci_runtime == "auto") candidates.emplace_back("runc", runtime::RuntimeKind::kRunc);
  if (setup.oci_runtime == "crun" || setup.oci_runtime == "auto") candidates.emplace_back("crun", runtime::RuntimeKind::kCrun);
  if (setup.oci_runtime == "bwrap" || setup.oci_runtime == "auto") candidates.emplace_back("bwrap", runtime::RuntimeKind::kBwrap);
  if (candidates.empty()) {
    return absl::InvalidArgumentError(StrCat("--oci-runtime ", setup.oci_runtime, ": expected runc, crun, bwrap or auto"));
  }
  std::string why;
  for (const auto& [name, kind] : candidates) {
    RuntimeExecutorOptions attempt = o;
    attempt.runner.runtime = kind;
    // bwrap's runner cannot signal a job, so Poll cannot cut a grace short: use the default grace.
    if (kind == runtime::RuntimeKind::kBwrap) attempt.runner.cancel_grace = absl::Seconds(10);
    if (kind == runtime::RuntimeKind::kBwrap) attempt.prepared_per_pair = 0;  // OCI runtimes only
    auto created = CreateRuntimeExecutor(std::move(attempt));
    if (created.ok()) {
      if (chosen != nullptr) {
        *chosen = StrCat(name, " (shim: ", o.runner.shim_command[0], ")",
                         driver_note.empty() ? "" : StrCat("; ", driver_note));
      }
      return std::move(*created);
    }
    why += StrCat(why.empty() ? "" : "; ", name, ": ", created.status().message());
  }
  return absl::FailedPreconditionError(StrCat("no container runtime works here (", why, ")"));
}

}  // namespace warden::agent
