// The agent's side of the verified GPU handoff (issue 7): a HandoffController over the node's
// GPUs with its state in the data dir, a background thread that hands off quarantined devices
// (with back-off after failures), the per-device status in the inventory, and
// `gpuwarden agent scrub`, the one-device scrub the handoff runs as a child process.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "cluster/cluster.h"
#include "gpu/gpu.h"
#include "gpu/handoff.h"

namespace warden::agent {

// Owns the controller and its scrubber; borrows `backend`, which must outlive it.
// Lifecycle: Create -> Start (thread) -> Stop (idempotent; the destructor calls it).
// Thread-safe: the job runner calls Assign/Release from its threads.
class GpuHandoffService {
 public:
  struct Options {
    std::string data_dir;        // state file: DATA_DIR/gpu-handoff.json
    std::string self_exe = "/proc/self/exe";  // runs `agent scrub` for the nvml backend
    absl::Duration scrub_timeout = absl::Minutes(5);
    absl::Duration poll = absl::Seconds(1);
    // After n consecutive failures a device is retried after min(retry_base * 2^(n-1), 5 min),
    // so a device that keeps failing (a stuck process, bad memory) does not loop on scrubs.
    absl::Duration retry_base = absl::Seconds(2);
    gpu::ScrubOptions scrub;
  };
  // `backend_name` "sim" uses the simulated backend's scrubber (backend must be a
  // SimGpuBackend), "nvml" the subprocess scrubber. Reads the state file and syncs it with the
  // devices the backend reports now.
  static absl::StatusOr<std::unique_ptr<GpuHandoffService>> Create(const Options& options,
                                                                   gpu::GpuBackend* backend,
                                                                   std::string_view backend_name);
  ~GpuHandoffService();

  void Start();
  void Stop();

  // For the job runner: before a job starts on `uuids` / after its processes are gone.
  // Assign is all-or-nothing (on error every device it had assigned is released again).
  absl::Status Assign(std::string_view tenant, const std::vector<std::string>& uuids);
  absl::Status Release(const std::vector<std::string>& uuids);

  // Re-reads the backend's devices now (new MIG instances join quarantined) and wakes the loop.
  absl::Status Rescan();
  // Syncs with the inventory's devices and writes each one's handoff status into it.
  absl::Status Annotate(cluster::NodeInventory& inventory);

  // One round of the background work, for tests: hands off every quarantined device whose
  // back-off has passed. Returns the reports.
  std::vector<gpu::HandoffReport> RunOnce();

  gpu::HandoffController& controller() { return *controller_; }

 private:
  GpuHandoffService() = default;
  void Loop();

  Options options_;
  gpu::GpuBackend* backend_ = nullptr;
  std::unique_ptr<gpu::MemoryScrubber> scrubber_;
  std::unique_ptr<gpu::HandoffController> controller_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool kick_ = false;
  std::thread thread_;
};

// `gpuwarden agent scrub --uuid U [-o text|json] [--min-fraction F] [--library PATH]`: scrubs
// and verifies one GPU or MIG instance through the CUDA driver API and prints the report.
// Exit: 0 passed, 3 ran and did not pass, 1 could not run (-o json prints {"error": "..."}),
// 2 usage. argv[0] is "scrub".
int RunScrubCommand(int argc, char** argv);

// `gpuwarden agent handoff --data-dir DIR [--gpus nvml|sim:SPEC] [--uuid U] [-o text|json]`:
// runs the handoff now on every quarantined device (or on U, quarantining it first) with the
// agent's state file, and prints the reports. Exit 0 when every device handled ended available,
// 3 when one stayed quarantined, 1 on errors, 2 usage. argv[0] is "handoff".
int RunHandoffCommand(int argc, char** argv);

}  // namespace warden::agent
