// JobRunner: the agent's half of the job path. Each heartbeat it polls the executor, ships new
// stdout/stderr bytes to the server, and reports job states (running, then one terminal report
// once every byte of output has been shipped); the heartbeat reply's assignments then tell it
// what to start, what to cancel (with its grace period) and, by omission, what to stop: a job
// runs only where the server currently places it (a requeued job's old node kills its copy).
// GPU handoff (issue 7, DESIGN invariant 3): with a GpuHandoffService set, a job's GPUs are
// assigned to its tenant before it starts (a device that is not verified clean yet makes the job
// wait for it, up to kHandoffWait, then fail to start) and released when it ends, which starts
// their scrub; a GPU no job holds is reported clean only once the handoff made it available, and
// dirty once a handoff failed. Without one (unit tests): clean unless the backend shows processes.
// Transfers (a job's image fetch and import, its dataset staging, its write-back) run on the
// runner's own worker thread, one at a time, so that a large image or dataset never holds up the
// heartbeat: a node that misses three beats is declared unreachable and its jobs are requeued.
// A job waits (still "placed" for the server) until its preparation is done. The methods are
// called from the agent's session thread only; not thread-safe.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/dataset_stager.h"
#include "agent/executor.h"
#include "agent/mig_manager.h"
#include "common/json.h"
#include "gpu/gpu.h"

namespace warden::agent {

class GpuHandoffService;

// One transfer on the JobRunner's worker: `done` is set (release) after `status` and `staged`.
struct JobTransfer {
  std::atomic<bool> done{false};
  absl::Status status;
  std::vector<ExecDataset> staged;  // a preparation's staged datasets
};

// Sends `data` (read at `offset` of the job's `stream`) to the server; returns the offset to
// continue from.
using LogShipper = std::function<absl::StatusOr<int64_t>(
    const std::string& job_id, const std::string& stream, int64_t offset, std::string_view data)>;

class JobRunner {
 public:
  // `executor` may be null (no executor configured): assigned jobs are then reported as failed to
  // start with `no_executor_reason`.
  JobRunner(JobExecutor* executor, std::string no_executor_reason);
  ~JobRunner();
  JobRunner(const JobRunner&) = delete;
  JobRunner& operator=(const JobRunner&) = delete;

  // Stops the transfer worker once its current transfer returns; transfers still queued end
  // Cancelled. Call before whatever the transfer callbacks use (the agent's session) goes away.
  // Idempotent; the destructor calls it.
  void StopTransfers();
  // Called on the worker thread after each transfer (the agent wakes its session loop, so a job
  // whose preparation finished starts without waiting for the next beat). Set before any job.
  void SetTransferDone(std::function<void()> done);

  // The verified GPU handoff; call before Recover. Not owned; may be null.
  void SetHandoff(GpuHandoffService* handoff) { handoff_ = handoff; }
  // Vault datasets (issue 7): staged into memory-backed storage before a job starts (a failure
  // ends it failed_to_start with the reason) and wiped when it ends, whatever the ending. Set
  // the stager before Recover (it wipes what no re-attached job holds); the fetcher reads from
  // the server over mTLS. Without a stager, jobs that name datasets fail to start.
  void SetDatasetStager(DatasetStager* stager) { stager_ = stager; }
  void SetDatasetFetcher(DatasetFetcher fetch) { fetch_ = std::move(fetch); }
  // MIG instances (issue 6): a MIG assignment's instance is created at its planned placement
  // before the job starts and the job sees only the MIG device UUID; destroyed when the job
  // ends. Set before Recover (it destroys the instances of jobs that are gone). Without one, MIG
  // jobs fail to start. Not owned; may be null.
  void SetMigManager(MigManager* mig) { mig_ = mig; }
  // What Recover's MIG reconcile did (orphans destroyed, foreign instances left alone).
  const MigReconcileReport& mig_report() const { return mig_report_; }
  // Marks the inventory's MIG instances with the job each was created for.
  void AnnotateMig(std::vector<gpu::GpuDevice>& gpus) const {
    if (mig_ != nullptr) mig_->Annotate(gpus);
  }
  // Job images (issue 7, image_cache.h): called (on the transfer worker) before a job whose image
  // is not "host" starts; an error ends it failed_to_start with the reason. Unset: such jobs fail
  // to start.
  void SetImagePreparer(std::function<absl::Status(const ExecSpec& spec)> prepare) {
    prepare_image_ = std::move(prepare);
  }
  // Write-back of `write` datasets: after a job exits with code 0, the file it left in each of
  // them goes to the server through `upload` before the job's end is reported (and before its
  // staged data is wiped). A refusal ends the job `write_back_failed` with the reason; a
  // transient error (server unreachable) is retried at the next beats, kMaxWriteBackAttempts
  // in all. A job that failed or was cancelled writes nothing back.
  void SetDatasetUploader(DatasetUploader upload) { upload_ = std::move(upload); }
  static constexpr int kMaxWriteBackAttempts = 5;
  // How long a placed job waits for its GPUs' handoff before it fails to start.
  static constexpr absl::Duration kHandoffWait = absl::Seconds(120);

  // After an agent restart: re-attaches to every job the executor still has on disk.
  absl::Status Recover();

  // Polls, ships logs, and returns the heartbeat's {"jobs": [...], "gpus": {...}} members.
  // `ship_logs` false: a quick beat after the server pushed work (agent.cc WorkWaiter): no output
  // is shipped, so terminal reports wait for the next full beat.
  common::Json BuildReport(const LogShipper& ship, const std::vector<gpu::GpuDevice>& gpus,
                           bool ship_logs = true);

  // After a heartbeat that carried BuildReport's result was answered: forgets the jobs whose
  // terminal report the server now has, then applies the reply's assignments.
  void Apply(const common::Json& assignments);

  // When to heartbeat next: soon (50 ms) after jobs started or ended, at most every second
  // while jobs run (their output and exits reach the server promptly), else `interval`.
  absl::Duration NextBeat(absl::Duration interval);
  size_t size() const { return jobs_.size(); }

 private:
  struct Local {
    ExecSpec spec;
    ExecStatus status;
    bool ended = false;
    bool started = false;       // the executor has it (false: refused before it started)
    bool assigned = true;       // false: the server no longer places it here
    bool cancel_sent = false;
    bool running_reported = false;
    int64_t shipped[2] = {0, 0};  // stdout, stderr
    std::string tenant;             // for the GPU handoff
    bool gpus_held = false;         // Assign succeeded; Release when the job ends
    absl::Time wait_until;          // waiting for the handoff (not started, not ended) until then
    bool waiting = false;
    std::vector<MigRequest> mig;           // the assignment's planned MIG instances
    bool mig_ready = false;                // created; their UUIDs are in spec.gpu_uuids
    std::vector<DatasetToStage> datasets;  // from the assignment's run.datasets
    bool bad_datasets = false;             // the assignment's datasets did not decode
    int write_back_attempts = 0;
    bool write_back_done = false;          // nothing (more) to write back
    std::string write_back_error;          // set: reported as write_back_failed
    std::shared_ptr<JobTransfer> prep;  // image and datasets, on the worker
    bool prepared = false;                  // prep succeeded; spec.datasets holds what it staged
    std::shared_ptr<JobTransfer> wb;    // the write-back in flight, on the worker
    // A transfer of this job is still running: its staged data must not be wiped yet.
    bool busy() const;
  };
  static const char* StateName(ExecState s);
  bool ShipLogs(Local& job, const LogShipper& ship);
  // Assigns the job's GPUs and starts it; while its GPUs are not handed off yet it waits (until
  // wait_until), then fails to start.
  void TryStart(Local& job);
  // Creates the job's MIG instances and names them (with its whole GPUs) in the job's env; false
  // when the job must wait or has ended failed_to_start.
  bool PrepareMig(Local& job);
  // Releases the GPUs of a job that ended (their handoff starts).
  void ReleaseGpus(Local& job);
  // Removes a job's staged datasets (idempotent).
  void WipeDatasets(const std::string& id);
  // Writes an ended job's `write` datasets back (see SetDatasetUploader); true once settled.
  bool WriteBack(Local& job);

  // Queues `task` on the transfer worker; the returned JobTransfer is done once it ran (or Cancelled
  // when the worker stopped first).
  std::shared_ptr<JobTransfer> Enqueue(std::function<absl::Status(JobTransfer&)> task);

  class Worker;
  std::unique_ptr<Worker> worker_;
  JobExecutor* executor_;
  GpuHandoffService* handoff_ = nullptr;
  DatasetStager* stager_ = nullptr;
  MigManager* mig_ = nullptr;
  MigReconcileReport mig_report_;
  DatasetFetcher fetch_;
  std::function<absl::Status(const ExecSpec& spec)> prepare_image_;
  DatasetUploader upload_;
  std::string no_executor_reason_;
  std::map<std::string, Local> jobs_;
  std::set<std::string> final_in_flight_;
  bool changed_ = false;
};

}  // namespace warden::agent
