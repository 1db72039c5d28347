// runtime: the agent's job runner. A job is described by a SandboxSpec; the runner validates it,
// writes an OCI runtime spec (config.json) of its own, and runs it under runc (default) or crun
// (or bubblewrap, a weaker fallback built from the same spec, where no OCI runtime works) in a
// per-job state directory: user namespace (container root = an unprivileged per-tenant host uid
// range), pid/mount/network/ipc/uts/cgroup namespaces, cgroup limits (v2, or v1 on hybrid hosts),
// an allow-list seccomp profile, no capabilities, no_new_privileges, read-only root, only the
// assigned GPU device nodes. Each job is watched by a small shim process that outlives the runner,
// so a restarted runner re-attaches to running jobs from the state directory.
//
// No exception crosses this header; every expected failure is an absl::Status naming the problem.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/job_result.h"

namespace warden::runtime {

// One assigned GPU (or the parent GPU of an assigned MIG instance).
struct GpuDevice {
  std::string uuid;  // "GPU-..." or "MIG-..."; goes into CUDA_/NVIDIA_VISIBLE_DEVICES
  std::string node;  // "/dev/nvidiaN"
  // MIG capability nodes the instance needs, e.g. "/dev/nvidia-caps/nvidia-cap21".
  std::vector<std::string> mig_cap_nodes;
};

// Where datasets may be mounted in a job: at one of these roots or below it. Every rootfs has
// them as empty directories (the host image's overlay, imported images); when a dataset is
// below a root, the sandbox mounts a small tmpfs owned by the container's root (mode 0755: the
// job's user can neither write there nor create files beside its datasets) on the root first,
// so the runtime can create the mount points inside it on a read-only root.
inline constexpr const char* kDatasetRoots[] = {"/data", "/datasets"};

// A dataset the vault has already decrypted into a memory-backed directory on the node. The
// runner hands the directory and its files to the job's host uid (the tenant's range + 1000)
// before the job starts: readable by exactly that uid (files 0400; the directory 0500, or
// 0700 and files 0600 when writable).
struct DatasetMount {
  std::string host_dir;        // absolute; must be on tmpfs/ramfs (checked when the job starts)
  std::string container_path;  // absolute, e.g. "/data/train"
  bool writable = false;
};

struct SandboxSpec {
  std::string tenant;  // common::ValidateName rules
  std::string job_id;  // 1-64 of [A-Za-z0-9_-]; also the container id
  std::vector<std::string> argv;
  std::vector<std::pair<std::string, std::string>> env;  // on top of the image's config env
  std::string cwd = "/";
  std::string image = "host";  // "host" or "sha256:<64 hex>" (a manifest digest in the tenant's store)
  std::vector<GpuDevice> gpus;  // empty: the job sees no GPU device at all
  uint64_t memory_bytes = 512ull << 20;
  int64_t pids_max = 256;
  int64_t cpu_millis = 1000;  // CPU bandwidth: 1000 = one CPU
  uint64_t scratch_bytes = 256ull << 20;
  absl::Duration wall_time = absl::Hours(1);
  bool egress_allowed = false;
  std::vector<DatasetMount> datasets;
};

// Checks every field of `spec` (see runtime/README.md for the rules). InvalidArgument naming the
// field and the rule; in particular any loader variable (LD_*, GLIBC_TUNABLES, GCONV_PATH, ...) and
// the GPU visibility variables gpuwarden sets itself are refused.
absl::Status ValidateSandboxSpec(const SandboxSpec& spec);

// Checks one environment list; `source` names it in errors ("spec env", "image config env").
// Refuses loader variables, reserved names, malformed names and NUL bytes.
absl::Status ValidateEnv(std::string_view source,
                         const std::vector<std::pair<std::string, std::string>>& env);

// True for variables that steer the dynamic loader or libc (CVE-2025-23266 came in as LD_PRELOAD
// from an image's environment).
bool IsLoaderVariable(std::string_view name);

// The mount point of the mount holding `path` in `mountinfo` (/proc/self/mountinfo text): "/" for
// a path on the root file system. ReadMountInfo() reads this process's.
absl::StatusOr<std::string> MountPointOf(std::string_view path, std::string_view mountinfo);
std::string ReadMountInfo();

enum class JobState { kRunning, kExited };

struct JobInfo {
  std::string job_id;
  std::string tenant;
  JobState state = JobState::kRunning;
  std::optional<JobResult> result;  // set once kExited
  std::string stdout_path;          // readable while the job runs (append-only file)
  std::string stderr_path;
  bool prepared = false;  // handed to a prepared sandbox rather than started cold
};

// kBwrap: bubblewrap, for nodes where no OCI runtime works; see README "bubblewrap fallback" for
// what it does not enforce.
enum class RuntimeKind { kRunc, kCrun, kBwrap };

struct RunnerOptions {
  // Per-node state: jobs/<job>/ (bundle, logs, state.json, result.json), uid-slots.json.
  std::string state_dir;
  RuntimeKind runtime = RuntimeKind::kRunc;
  std::string runtime_path;  // empty: "runc" / "crun" / "bwrap" from PATH
  // The shim program and the arguments before the job directory. The gpuwarden binary offers
  // it as a hidden verb; tests use the warden-sandbox-shim executable.
  std::vector<std::string> shim_command;
  // The static warden-sandbox-launcher, pid 1 of prepared sandboxes (see Runner::Prepare). Empty:
  // Prepare refuses and every job starts cold.
  std::string launcher_path;
  // Per-tenant image stores: <image_root>/<tenant>/... (see image.h).
  std::string image_root;
  // The host image's root: a read-only, non-recursive bind of / shared by all jobs, created on
  // first use and left mounted (kept outside state_dir so no recursive delete can meet it).
  std::string host_rootfs_dir = "/run/gpuwarden/host-rootfs";
  // Where the host's device nodes are (tests point this at a temp dir of fake 195:N nodes).
  std::string host_dev_dir = "/dev";
  // The NVIDIA driver's user-space libraries where they live on a mount of their own (e.g.
  // /usr/local/nvidia on nodes whose driver is installed as a container or a host path): every
  // job with a GPU gets each of these host directories bound read-only, nosuid, nodev at the
  // same path, and `gpu_library_path` (colon-separated directories under them) as its
  // LD_LIBRARY_PATH, so CUDA finds the host's libcuda. Jobs without GPUs get neither. Absolute,
  // existing directories without symlinks, never / or under /proc, /sys, /dev; CreateRunner
  // refuses anything else. Empty: the driver's libraries are on the root file system (which the
  // host image shows) or jobs bring none.
  std::vector<std::string> gpu_driver_dirs;
  std::string gpu_library_path;
  // First host uid of the per-tenant ranges; each tenant gets 65536 ids from a slot.
  uint32_t uid_base = 1u << 20;
  uint32_t uid_slots = 4096;
  // cgroup root as the runtime sees it; the layout (v2, v1, hybrid) is detected from mountinfo.
  std::string cgroup_parent = "/warden";
  absl::Duration cancel_grace = absl::Seconds(10);
  // Test seam: edits the OCI spec (JSON text) after gpuwarden wrote it. Never set in production.
  std::function<std::string(std::string)> spec_hook;
};

// Runs sandboxed jobs on this node. Thread-safe. Jobs outlive the Runner object and its process:
// Create() on the same state_dir re-attaches to them.
class Runner {
 public:
  virtual ~Runner() = default;

  // Validates `spec`, resolves the image and device nodes, writes the bundle and starts the job.
  // InvalidArgument for a bad spec or image env, NotFound for an unknown image or device node,
  // AlreadyExists for a job id in use, FailedPrecondition when a dataset dir is not memory-backed,
  // Internal when the runtime failed (its message included). Nothing is left running on error.
  virtual absl::Status Start(const SandboxSpec& spec) = 0;

  // Current state. NotFound for an unknown job.
  virtual absl::StatusOr<JobInfo> Get(const std::string& job_id) = 0;
  virtual std::vector<JobInfo> List() = 0;

  // Blocks until the job has exited or `timeout` passed (DeadlineExceeded).
  virtual absl::StatusOr<JobResult> Wait(const std::string& job_id, absl::Duration timeout) = 0;

  // SIGTERM to the job, SIGKILL after the grace period; returns at once. NotFound, or
  // FailedPrecondition when it already exited.
  virtual absl::Status Cancel(const std::string& job_id) = 0;

  // Sends `signal` to the job's main process. Unimplemented under the bubblewrap runner.
  virtual absl::Status Signal(const std::string& job_id, int signal) = 0;

  // Deletes an exited job's directory (logs included). FailedPrecondition while it runs.
  virtual absl::Status Remove(const std::string& job_id) = 0;

  // Prepared sandboxes (runtime/README.md "Prepared sandboxes"): creates one sandbox shaped like
  // `like` (its tenant, image, scratch size and egress; argv, env, cwd, job id and the
  // memory/pids/CPU limits are ignored) whose pid 1 waits for a job. A later Start() whose OCI
  // spec equals a waiting sandbox's, except for the process (argv, env, cwd) and the cgroup
  // limits, hands the job to that sandbox instead of starting a container: the limits are
  // written to its cgroup, then the launcher execs the job. Each sandbox takes exactly one job
  // and ends with it. Sandboxes end when the runner is destroyed (or its process dies).
  // FailedPrecondition without RunnerOptions::launcher_path or under bubblewrap; InvalidArgument
  // for a shape with datasets or GPUs (jobs with either always start cold).
  virtual absl::Status Prepare(const SandboxSpec& like) = 0;
  // Prepared sandboxes of (tenant, image) waiting for a job.
  virtual int PreparedCount(const std::string& tenant, const std::string& image) = 0;
  // Ends the waiting sandboxes of (tenant, image); both empty: every one.
  virtual void DropPrepared(const std::string& tenant, const std::string& image) = 0;
};

// Opens the state dir (creating it) and re-attaches to the jobs recorded there.
absl::StatusOr<std::unique_ptr<Runner>> CreateRunner(RunnerOptions options);

// The shim's entry point: argv = {..., job_dir}. Returns the process exit code.
int ShimMain(int argc, char** argv);

}  // namespace warden::runtime
