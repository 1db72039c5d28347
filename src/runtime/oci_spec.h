// Private to runtime (and its tests): the OCI runtime spec writer and the cgroup layout probe.
// BuildOciSpec is a pure function of its inputs so that tests can check every isolation setting
// without running a container.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/json.h"
#include "runtime/runtime.h"

namespace warden::runtime {

// The in-container user a job runs as (an unprivileged uid inside the user namespace).
inline constexpr uint32_t kJobUid = 1000;
inline constexpr uint32_t kJobGid = 1000;
inline constexpr uint32_t kIdsPerTenant = 65536;

// Which cgroup hierarchies the host has. Hybrid hosts (v1 controllers plus an empty v2 mount)
// are driven as v1, as runc does.
struct CgroupLayout {
  enum class Mode { kV2, kV1, kHybrid };
  Mode mode = Mode::kV2;
  std::string unified_mount;                    // v2 mount point ("" when none)
  std::map<std::string, std::string> v1_mounts;  // controller -> mount point

  bool UsesV1() const { return mode != Mode::kV2; }
  // Directory of `cgroups_path` (absolute, as in the OCI spec) for `controller`'s files;
  // "" when the controller is not mounted.
  std::string ControllerDir(std::string_view controller, std::string_view cgroups_path) const;
};

// Parses /proc/self/mountinfo text. FailedPrecondition when there is no cgroup mount at all.
absl::StatusOr<CgroupLayout> ParseCgroupLayout(std::string_view mountinfo);
absl::StatusOr<CgroupLayout> DetectCgroupLayout();
std::string_view CgroupModeName(CgroupLayout::Mode mode);

struct CgroupStats {
  uint64_t oom_kills = 0;
  uint64_t peak_memory_bytes = 0;
  uint64_t cpu_time_usec = 0;
};
// Reads what it can; missing files leave fields at 0.
CgroupStats ReadCgroupStats(const CgroupLayout& layout, std::string_view cgroups_path);

// A device node the job may use: bind-mounted from `host_path`, allowed by a device rule.
struct DeviceNode {
  std::string container_path;  // "/dev/nvidia0"
  std::string host_path;       // "<host_dev_dir>/nvidia0"
  char type = 'c';
  int64_t major = 0;
  int64_t minor = 0;
};

// A host directory bound read-only into a job at the same path (the GPU driver's libraries).
struct HostDirMount {
  std::string path;                  // absolute, no symlinks
  std::vector<std::string> options;  // OCI mount options, the source mount's locked flags included
};

struct OciInputs {
  std::string rootfs;         // absolute
  uint32_t host_uid_base = 0;  // container uid/gid 0 maps here; 65536 ids
  std::string cgroups_path;   // "/warden/<tenant>/<job>"
  CgroupLayout layout;
  std::vector<DeviceNode> devices;  // already resolved; empty for a job without GPUs
  std::vector<std::pair<std::string, std::string>> image_env;
  bool rootfs_has_scratch_dir = true;  // else the scratch tmpfs goes on /tmp
  // GPU jobs only (empty otherwise): RunnerOptions::gpu_driver_dirs and gpu_library_path.
  std::vector<HostDirMount> driver_dirs;
  std::string driver_library_path;
  std::string hostname = "sandbox";
};

// The config.json text for `spec`. Assumes ValidateSandboxSpec(spec) passed and the image env was
// checked; still refuses (InvalidArgument) a loader variable in either env list.
absl::StatusOr<common::Json> BuildOciSpec(const SandboxSpec& spec, const OciInputs& in);

// True when `path` is `dir` or lies below it (component-wise: /a/bc is not under /a/b).
bool IsUnder(std::string_view path, std::string_view dir);

// The mount options for binding `dir` read-only into a user namespace: ro, nosuid, nodev, plus the
// flags of the host mount holding it that a user namespace cannot clear (noexec and the atime
// flags), found in `mountinfo` (/proc/self/mountinfo text). NotFound when no mount holds `dir`.
absl::StatusOr<std::vector<std::string>> ReadOnlyBindOptions(std::string_view dir, std::string_view mountinfo);

// The default seccomp profile (OCI "linux.seccomp" object): allow-list, EPERM for the rest.
common::Json DefaultSeccompProfile();

// The merged environment a job gets: image env, then spec env (later wins), then PATH default,
// then CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES from the assigned GPUs.
std::vector<std::string> JobEnvironment(const SandboxSpec& spec,
                                        const std::vector<std::pair<std::string, std::string>>& image_env,
                                        std::string_view scratch_path);

// The bubblewrap fallback (bwrap.cc): the command line, derived from the OCI spec `oci` (argv, env,
// cwd), and the cgroup plan the shim carries out before exec'ing bwrap.
struct BwrapPlan {
  std::vector<std::string> args;
  std::vector<std::string> cgroup_dirs;
  std::vector<std::pair<std::string, std::string>> cgroup_writes;
  std::vector<std::string> cgroup_procs;
};
absl::StatusOr<BwrapPlan> PlanBwrap(const SandboxSpec& spec, const OciInputs& in, const common::Json& oci,
                                    const std::string& bwrap_path);
// Compiles an OCI seccomp object (errno-by-default allow-list, as DefaultSeccompProfile) into a
// classic BPF program file for `bwrap --seccomp`, with libseccomp.
absl::Status CompileSeccompBpf(const common::Json& profile, const std::string& path);

// The host uid range slot preferred for `tenant` (SHA-256 of the name mod `slots`).
uint32_t PreferredUidSlot(std::string_view tenant, uint32_t slots);

}  // namespace warden::runtime
