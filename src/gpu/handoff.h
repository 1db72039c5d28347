// gpu/handoff.h: the verified handoff of a GPU (or MIG instance) between tenants, DESIGN.md
// invariant 3: a device goes to another tenant only after no process is left on it and its
// memory was overwritten and verified on the device.
//
//   available --Assign(tenant)--> assigned(tenant) --Release--> quarantined
//   quarantined --RunHandoff: no process (NVML) --> scrubbing --scrub+verify pass--> verified
//   verified --no process appeared meanwhile--> available
//   any failed check: stays (or goes back to) quarantined, with the reason and a failure count
//
// Also here: the CUDA driver API scrubber (cuda_scrub.cc; libcuda.so.1 loaded with dlopen, the
// verify kernel is hand-written PTX that the driver JITs) and the subprocess scrubber the agent
// uses. Thread-safe unless a comment says otherwise.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "gpu/gpu.h"

namespace warden::gpu {

// One device's handoff record (persisted).
struct DeviceHandoff {
  std::string uuid;         // "GPU-..." or "MIG-..."
  std::string parent_uuid;  // the physical GPU of a MIG instance; empty for a whole GPU
  bool mig_enabled = false; // a whole GPU's MIG mode when last seen (a change quarantines it)
  HandoffState state = HandoffState::kQuarantined;
  std::string tenant;       // holder while assigned; the last holder afterwards
  int holders = 0;          // jobs of `tenant` holding it (time-slicing inside one tenant)
  std::string reason;       // why quarantined
  int failures = 0;         // consecutive failed handoffs
  int64_t updated_unix = 0;
  // The last scrub that ran (zero values when none).
  uint64_t last_scrub_bytes = 0;
  double last_scrub_gbps = 0;
  uint64_t last_scrub_mismatches = 0;

  HandoffInfo Info() const { return HandoffInfo{state, reason, failures}; }
};

// What one RunHandoff did.
struct HandoffReport {
  std::string uuid;
  HandoffState state = HandoffState::kQuarantined;  // where the device ended
  std::string reason;                               // why not available (empty when it is)
  std::vector<GpuProcess> processes;                // found by the process check
  std::optional<ScrubReport> scrub;                 // when a scrub ran
};

struct HandoffOptions {
  // The state file (JSON, written 0600 by an atomic rename). Empty: memory only (tests).
  std::string state_path;
  ScrubOptions scrub;
  common::Clock* clock = nullptr;  // default RealClock
};

// The state machine over every GPU and MIG instance of one node. Owns no backend: `backend`
// (process checks) and `scrubber` are borrowed and must outlive it. Thread-safe: one mutex over
// the records, released while a scrub runs (the device is in `scrubbing` meanwhile, so nothing
// else can assign or hand it off).
//
// Persistence: every transition is written to the state file before the call returns; an error
// writing it is returned and, for a transition towards `available`, the device stays
// quarantined. On load, a device that was scrubbing or verified goes back to quarantined (the
// agent stopped mid-handoff); an unreadable file quarantines every device; a device never seen
// before starts quarantined (its memory history is unknown). So a restart never makes a
// quarantined device available.
//
// Same-tenant reuse: a device released by tenant T is NOT handed back to T without the handoff.
// Tenants' data access policies are per dataset and per user (vault), so two jobs of one tenant
// may be entitled to different data: skipping the scrub would leak between them. Concurrent
// sharing inside one tenant (time-sliced jobs) is modelled by `holders`: Assign to the tenant
// already holding an assigned device adds a holder; the last Release quarantines it.
class HandoffController {
 public:
  static absl::StatusOr<std::unique_ptr<HandoffController>> Create(const HandoffOptions& options,
                                                                    GpuBackend* backend,
                                                                    MemoryScrubber* scrubber);

  // Reconciles the records with the devices now present: new GPUs and MIG instances start
  // quarantined ("never verified"); a GPU whose MIG mode changed is quarantined; records of
  // devices that are gone are dropped. Returns an error only when the state file cannot be written.
  absl::Status Sync(const std::vector<GpuDevice>& devices);

  // available -> assigned(tenant), or one more holder when `tenant` already holds it.
  // NotFound: unknown device; FailedPrecondition: not available (the message says its state and
  // reason) or held by another tenant; InvalidArgument: empty tenant.
  absl::Status Assign(std::string_view uuid, std::string_view tenant);
  // One holder fewer; the last one leaves the device quarantined awaiting the handoff.
  // NotFound: unknown; FailedPrecondition: not assigned.
  absl::Status Release(std::string_view uuid);
  // Out of service now, whatever the state (an operator, or the agent lost track of a job).
  absl::Status Quarantine(std::string_view uuid, std::string_view reason);

  // Runs the handoff of one quarantined device: process check, scrub and verify, process check
  // again, then available. Every failure leaves it quarantined with the reason in the report (and
  // failures + 1); the call itself returns an error only for NotFound (unknown device),
  // FailedPrecondition (not quarantined) or a state file that cannot be written.
  absl::StatusOr<HandoffReport> RunHandoff(std::string_view uuid);
  // RunHandoff for every quarantined device (MIG instances and GPUs alike), in UUID order.
  std::vector<HandoffReport> RunAllHandoffs();

  // Only `available` is schedulable.
  bool Schedulable(std::string_view uuid) const;
  std::optional<DeviceHandoff> Get(std::string_view uuid) const;
  std::vector<DeviceHandoff> Snapshot() const;
  // Copies each device's HandoffInfo into `devices` (the GPU and its MIG instances), for the
  // inventory. Devices without a record get quarantined/"not yet seen by the handoff".
  void Annotate(std::vector<GpuDevice>& devices) const;

 private:
  HandoffController(const HandoffOptions& options, GpuBackend* backend, MemoryScrubber* scrubber);
  absl::Status LoadLocked();
  absl::Status SaveLocked();
  void SetLocked(DeviceHandoff& d, HandoffState s, std::string reason);
  DeviceHandoff* FindLocked(std::string_view uuid);
  absl::StatusOr<HandoffReport> Fail(const std::string& uuid, HandoffReport report,
                                     std::string reason);

  HandoffOptions options_;
  GpuBackend* backend_;
  MemoryScrubber* scrubber_;
  common::Clock* clock_;
  mutable std::mutex mu_;
  std::map<std::string, DeviceHandoff, std::less<>> devices_;
  std::string corrupt_reason_;  // set when the state file could not be read, until the next Sync
};

// Node-local state files (handoff state, the agent's MIG instance records): written to PATH.tmp
// (mode 0600, not following a link), fsynced, renamed over PATH; InternalError naming the file.
absl::Status WriteFileAtomic(const std::string& path, const std::string& data);

// The state file's text and its strict reader (exposed for tests). DataLoss naming the problem
// for anything that is not a file this code wrote.
std::string EncodeHandoffState(const std::map<std::string, DeviceHandoff, std::less<>>& devices);
absl::StatusOr<std::map<std::string, DeviceHandoff, std::less<>>> DecodeHandoffState(
    std::string_view text);

// ---------------------------------------------------------------------------------------------
// CUDA driver API scrubber (cuda_scrub.cc)

// dlopen()s `library` (default libcuda.so.1; no link-time CUDA dependency) and binds the driver
// API functions it needs. NotFound when the library is absent (the message says so: no NVIDIA
// driver); FailedPrecondition when a function is missing. cuInit runs at the first Scrub.
//
// Scrub(uuid): finds the CUDA device whose cuDeviceGetUuid_v2 equals `uuid` (the NVML form,
// "GPU-" or "MIG-" then 8-4-4-4-12 hex), retains its primary context, loads the verify kernel,
// allocates free memory in chunks (halving the chunk on out-of-memory), fills every chunk with
// cuMemsetD32 and verifies it with the kernel (pattern pass, then zero pass), reads back only
// the mismatch counter, frees everything. MIG instances are visible to CUDA only through
// CUDA_VISIBLE_DEVICES; `gpuwarden agent scrub` sets it to the UUID before cuInit.
absl::StatusOr<std::unique_ptr<MemoryScrubber>> CreateCudaScrubber(
    const std::string& library = "libcuda.so.1");

// The verify kernel's PTX (NUL-terminated; entry kVerifyKernelName): counts 32-bit words != an
// expected value over n 16-byte vectors, grid-stride, one 64-bit atomic add per thread that found
// any. PTX ISA 6.0, target sm_70: portable to every GPU since Volta through the driver's JIT.
const char* VerifyKernelPtx();
inline constexpr const char* kVerifyKernelName = "warden_count_mismatch";

// "GPU-" / "MIG-" prefix dropped, lower case, dashes kept: "GPU-AB..-.." -> "ab..-..". The 16
// bytes of a CUuuid in the same form. For matching NVML's and CUDA's spelling of one device.
std::string NormalizeDeviceUuid(std::string_view uuid);
std::string FormatUuidBytes(const unsigned char bytes[16]);

// A scrubber that runs `argv` (e.g. {"/proc/self/exe", "agent", "scrub", "-o", "json"}) with
// "--uuid U" appended and CUDA_VISIBLE_DEVICES=U, waits at most `timeout`, and reads the JSON
// report from its stdout (ScrubReportFromJson). A crash, hang (killed at the timeout) or
// non-JSON output is an error, so the device stays quarantined.
std::unique_ptr<MemoryScrubber> NewSubprocessScrubber(std::vector<std::string> argv,
                                                      absl::Duration timeout);

// The report as JSON (the `agent scrub -o json` output) and back (strict: exact keys).
std::string ScrubReportToJson(const ScrubReport& r);
absl::StatusOr<ScrubReport> ScrubReportFromJson(std::string_view text);

}  // namespace warden::gpu
