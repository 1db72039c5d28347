// Private to agent: builds the sandbox executor (RuntimeExecutor) for `gpuwarden agent`: picks the
// OCI runtime (--oci-runtime), finds the per-job shim, and maps the backend's GPU UUIDs to device
// nodes (simulated GPUs get stand-in nodes in the agent's data dir).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/executor.h"
#include "gpu/gpu.h"

namespace warden::agent {

struct SandboxSetup {
  std::string data_dir;            // the agent's; the sandbox state goes to <data_dir>/sandbox
  std::string oci_runtime = "auto";  // runc | crun | bwrap | auto (runc, then crun, then bwrap)
  gpu::GpuBackend* backend = nullptr;  // may be null (no GPUs)
  bool simulated_gpus = false;
  absl::Duration max_cancel_grace = absl::Hours(1);
  // Prepared sandboxes per recently run (tenant, image) (--prepared-sandboxes); 0: off.
  int prepared_sandboxes = 0;
  // --gpu-driver-dirs: "auto" (where this process's loader finds libcuda.so.1 and
  // libnvidia-ml.so.1, when they are on a mount other than /), "none", or DIR[,DIR...]. Real
  // GPUs only; see runtime::RunnerOptions::gpu_driver_dirs.
  std::string gpu_driver_dirs = "auto";
};

// What --gpu-driver-dirs resolves to: the host directories bound into GPU jobs and their
// LD_LIBRARY_PATH, plus a line for the agent's log.
struct DriverDirs {
  std::vector<std::string> dirs;
  std::string library_path;
  std::string note;
};
// `flag` as SandboxSetup::gpu_driver_dirs. `locate(soname)` returns the directory the loader
// finds the library in ("" if not found); `mountinfo` is /proc/self/mountinfo text. A library on
// the root file system needs no bind (the host image shows it). InvalidArgument for a bad flag.
absl::StatusOr<DriverDirs> ResolveDriverDirs(std::string_view flag, const std::string& mountinfo,
                                             const std::function<std::string(const char*)>& locate);
// The loader's answer for `soname` in this process (dlopen + dlinfo RTLD_DI_ORIGIN, real path).
std::string LocateLibrary(const char* soname);

// FailedPrecondition naming what is missing (not root, no runtime found, ...) when the sandbox
// cannot run here; `chosen` says which runtime and shim were picked.
absl::StatusOr<std::unique_ptr<JobExecutor>> CreateAgentSandbox(const SandboxSetup& setup,
                                                                std::string* chosen);

// The shim program: warden-sandbox-shim next to this executable (or in ../libexec/gpuwarden or
// the build tree's src/runtime), else this executable's hidden `agent shim` verb.
std::vector<std::string> FindShimCommand();

// warden-sandbox-launcher (pid 1 of prepared sandboxes), looked for where the shim is; "" if none.
std::string FindLauncher();

}  // namespace warden::agent
