// The agent's job executor seam: how a placed job becomes a running process, and how the agent
// finds it again after its own restart. Two implementations: the sandbox (RuntimeExecutor, over
// src/runtime's Runner: OCI runtime or bubblewrap, issue 7; the agent's default where a working
// runtime is found) and ProcessExecutor (development only).
//
// ProcessExecutor runs the job's argv as a plain child process in its own process group, with
// its own working directory, a clean environment and stdout/stderr in files. It is NOT a
// security boundary: no namespaces, no cgroups, no seccomp, the job runs as the agent's user and
// sees the whole host. It exists for development and the demo with simulated GPUs; the agent
// refuses it unless started with --executor=process.
//
// Re-attach: each job is supervised by a small double-forked process (not the agent's child)
// that waits for it and writes its exit status to the job's state dir, so an agent that restarts
// (or crashes) finds running jobs and their results on disk (Recover).
// Implementations are used from the agent's one session thread; not thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/runtime.h"

namespace warden::agent {

// A dataset already decrypted by the agent into a memory-backed directory on this node (never the
// node's disk); the executor mounts it at `container_path` and the agent wipes it when the job ends.
struct ExecDataset {
  std::string name;            // the vault object's name (for logs and errors)
  std::string host_dir;        // absolute, on tmpfs/ramfs
  std::string container_path;  // absolute, e.g. "/data/train"
  bool writable = false;
};

struct ExecSpec {
  std::string job_id;  // "job_..." (validated by the runner: safe as a directory name)
  std::string tenant;  // the job's tenant (sandbox uid range, image store)
  std::vector<std::string> argv;
  // The whole environment of the job (nothing is inherited from the agent).
  std::vector<std::pair<std::string, std::string>> env;
  std::vector<std::string> gpu_uuids;  // what CUDA_/NVIDIA_VISIBLE_DEVICES name
  std::string image = "host";          // "host" or "sha256:<manifest digest>" (tenant's store)
  std::vector<ExecDataset> datasets;   // empty unless the job asked for vault datasets
  // Resource limits the scheduler reserved for the job; 0 means the executor's default.
  // Enforced by the sandbox (cgroups, the shim's wall clock); ProcessExecutor ignores them.
  int64_t memory_bytes = 0;
  int64_t cpu_millis = 0;
  absl::Duration wall_time = absl::ZeroDuration();
};

enum class ExecState {
  kRunning,
  kExited,         // exit_code set (128 + signal for a signal death; reason says which)
  kFailedToStart,  // reason says why (e.g. the program was not found)
  kCancelled,      // ended after Cancel
  kOom,            // killed for memory (executors that can tell; ProcessExecutor cannot)
  kLost,           // the supervisor vanished without a result
};

struct ExecStatus {
  ExecState state = ExecState::kRunning;
  int exit_code = 0;
  std::string reason;
};

class JobExecutor {
 public:
  virtual ~JobExecutor() = default;
  virtual std::string_view name() const = 0;
  // Starts the job. AlreadyExists when the id is known; any other error means it did not start
  // (the runner reports failed_to_start with the message).
  virtual absl::Status Start(const ExecSpec& spec) = 0;
  // The job's state now. NotFound for an unknown id.
  virtual absl::StatusOr<ExecStatus> Poll(const std::string& job_id) = 0;
  // SIGTERM to the job's process group now, SIGKILL once `grace` has passed (enforced by later
  // Polls). Idempotent; OK for an ended job.
  virtual absl::Status Cancel(const std::string& job_id, absl::Duration grace) = 0;
  // Where the job's stdout and stderr are written (they keep growing while it runs).
  virtual std::pair<std::string, std::string> LogPaths(const std::string& job_id) const = 0;
  // After an agent restart: the specs of every job still on disk (running or ended, not yet
  // forgotten).
  virtual absl::StatusOr<std::vector<ExecSpec>> Recover() = 0;
  // Deletes an ended job's state (after the server has its result and logs).
  virtual absl::Status Forget(const std::string& job_id) = 0;
};

// The development executor described above. `state_dir` (created 0700) holds one directory per
// job: spec.json, work/, stdout.log, stderr.log, supervisor, pid, exit, cancel.
absl::StatusOr<std::unique_ptr<JobExecutor>> CreateProcessExecutor(const std::string& state_dir);

// The sandbox executor: every job runs through runtime::Runner (src/runtime: its own OCI spec,
// per-tenant user namespace, cgroup limits, seccomp, only the assigned GPU device nodes), watched
// by a per-job shim that outlives the agent. ExecSpec maps onto runtime::SandboxSpec; the GPU
// visibility variables come from the resolved GPUs, never from the job's env.
struct RuntimeExecutorOptions {
  // The runner's options (state_dir, runtime, shim_command, image_root, host_dev_dir, ...).
  // cancel_grace is the longest grace a Cancel may ask for; shorter ones are enforced by Poll.
  runtime::RunnerOptions runner;
  // UUID ("GPU-..." or "MIG-...") -> its device node (and MIG capability nodes). NotFound for a
  // GPU this node does not have.
  std::function<absl::StatusOr<runtime::GpuDevice>(const std::string& uuid)> resolve_gpu;
  // Defaults for what ExecSpec leaves at 0, and the per-job limits the agent adds.
  uint64_t default_memory_bytes = 4ull << 30;
  int64_t default_cpu_millis = 1000;
  absl::Duration default_wall_time = absl::Hours(24);
  int64_t pids_max = 4096;
  uint64_t scratch_bytes = 1ull << 30;
  // Prepared sandboxes kept waiting per (tenant, image) recently run (warm_pool.h); 0: none, every
  // job starts cold. Needs runner.launcher_path.
  int prepared_per_pair = 0;
  size_t prepared_pairs = 8;
};
absl::StatusOr<std::unique_ptr<JobExecutor>> CreateRuntimeExecutor(RuntimeExecutorOptions options);

}  // namespace warden::agent
