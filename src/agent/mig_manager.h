// MigManager: the agent's MIG instances (issue 6). The scheduler plans a MIG job's instance (GPU,
// profile, start slice); the assignment carries it; this class creates exactly that GPU instance
// plus its compute instance through the GPU backend before the job starts, hands the job the MIG
// device UUID (never the parent GPU's), and destroys the instance when the job ends. MIG mode is
// never changed: a GPU with MIG off refuses (FailedPrecondition) and the job fails to start.
//
// Crash safety: every instance is recorded in DATA_DIR/mig-instances.json (0600, temp file,
// fsync, rename) with the job it belongs to. The record is written as an intent (no UUID yet)
// BEFORE the backend creates the instance, and completed after, so an agent that dies in between
// finds the instance at the recorded GPU/start and adopts it. At start, Reconcile destroys every
// recorded instance whose job no longer exists here (orphans) and leaves alone, and reports,
// every instance it did not create (an operator's, another tool's): those are "foreign".
//
// MIG capability device nodes: a process reaches a MIG instance only through the parent GPU's
// /dev/nvidiaN plus two capability nodes, /dev/nvidia-caps/nvidia-capM for the GPU instance
// (M = DeviceFileMinor in /proc/driver/nvidia/capabilities/gpuN/mig/giG/access) and for its
// compute instance (.../giG/ciC/access). The global mig/config and mig/monitor capabilities are
// never given to jobs (config creates and destroys instances; monitor sees every instance).
// MigCapNodes finds the two for one instance.
//
// Thread-safe (one mutex); the backend's calls happen under it.
#pragma once

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gpu/gpu.h"

namespace warden::agent {

// One instance a job needs: as the assignment carries it.
struct MigRequest {
  std::string gpu_uuid;  // the parent GPU
  int profile_id = 0;    // NVML GPU instance profile id (19, 20, 15, 14, 9, 5, 0)
  int start = 0;         // first memory slice
  bool operator==(const MigRequest&) const = default;
};

// One instance the agent created (or is about to: mig_uuid empty).
struct MigRecord {
  std::string job_id;
  std::string gpu_uuid;
  std::string mig_uuid;
  int profile_id = 0;
  int start = 0;
};

struct MigReconcileReport {
  std::vector<MigRecord> destroyed;  // orphans: their job is gone
  std::vector<MigRecord> kept;       // their job is still here
  std::vector<MigRecord> foreign;    // not created by us (job_id empty): left alone
  std::vector<std::string> errors;   // orphans that could not be destroyed yet (kept recorded)
};

class MigManager {
 public:
  // Reads `state_path` ("" = in memory only, for tests). DataLoss for a file that does not
  // decode: nothing is destroyed on the word of a corrupt file, and MIG jobs cannot start until
  // an operator looks at it. Borrows `backend`, which must outlive it.
  static absl::StatusOr<std::unique_ptr<MigManager>> Create(gpu::GpuBackend* backend,
                                                            std::string state_path);

  // Creates the job's instances (all or none: on error the ones created by this call are
  // destroyed again) and returns their MIG UUIDs in request order. Idempotent: a job that
  // already holds an instance at the same GPU/start/profile gets it back. Errors are the
  // backend's (see GpuBackend::CreateMigInstanceAt), with the request named.
  absl::StatusOr<std::vector<std::string>> Acquire(const std::string& job_id,
                                                   const std::vector<MigRequest>& requests);
  // Destroys the job's instances. An instance that cannot be destroyed yet (a process still
  // holds it) stays recorded and the error is returned; call again later.
  absl::Status Release(const std::string& job_id);
  // Releases every recorded job not in `keep` (jobs that ended and were forgotten). Returns the
  // first error; the others are retried on the next call.
  absl::Status ReleaseAllExcept(const std::set<std::string>& keep);
  // After a restart: adopts instances created just before a crash, destroys orphans (records of
  // jobs not in `live`), lists foreign instances.
  absl::StatusOr<MigReconcileReport> Reconcile(const std::set<std::string>& live);
  // Sets MigInstanceInfo::job_id on the inventory's instances this manager created.
  void Annotate(std::vector<gpu::GpuDevice>& gpus) const;

  std::vector<MigRecord> records() const;

 private:
  MigManager(gpu::GpuBackend* backend, std::string path) : backend_(backend), path_(std::move(path)) {}
  absl::Status SaveLocked() const;
  absl::Status ReleaseLocked(const std::string& job_id);

  gpu::GpuBackend* backend_;
  std::string path_;
  mutable std::mutex mu_;
  std::vector<MigRecord> records_;
};

// The capability device nodes of one MIG instance: reads
// `proc_root`/driver/nvidia/capabilities/gpu<gpu_minor>/mig/gi<gi>/access and .../gi<gi>/ci<ci>/access
// ("DeviceFileMinor: M" lines) and returns {"/dev/nvidia-caps/nvidia-capM" (GI),
// "/dev/nvidia-caps/nvidia-capM" (CI)}. NotFound when a file is missing, DataLoss when one does
// not hold a minor. `proc_root` is "/proc" outside tests.
absl::StatusOr<std::vector<std::string>> MigCapNodes(const std::string& proc_root, int gpu_minor,
                                                     int gpu_instance_id, int compute_instance_id);

// `gpuwarden agent mig create --gpu UUID --profile ID|NAME --start N | destroy --gpu UUID --uuid
// MIG-... | ls [--gpus nvml|sim:SPEC]` (mig_cmd.cc): one backend call, JSON on stdout. Exit 0 done,
// 3 MIG mode off (nothing changed), 1 other errors, 2 usage. argv[0] is "mig".
int RunMigCommand(int argc, char** argv);

}  // namespace warden::agent
