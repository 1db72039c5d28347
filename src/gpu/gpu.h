// gpu: what gpuwarden knows about GPUs. This first piece holds the MIG geometry model (NVIDIA's
// profile tables and placement rules, DESIGN.md "MIG facts") and the simulated GPU backend that
// the demo and tests use. The NVML backend (dlopen'ed libnvidia-ml) implements the same
// GpuBackend interface later. No exception crosses this header; every expected failure is an
// absl::Status naming what was wrong.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace warden::gpu {

// ---------------------------------------------------------------------------------------------
// MIG geometry
// ---------------------------------------------------------------------------------------------

// Every MIG-capable GPU here (A100, H100, H200) has 7 compute slices and 8 memory slices.
// Placements ("starts") are counted in memory slices.
inline constexpr int kComputeSlices = 7;
inline constexpr int kMemorySlices = 8;

// One GPU instance profile of one GPU model, as NVML lists it.
struct MigProfile {
  int id = 0;                       // NVML GPU instance profile id: 19, 20, 15, 14, 9, 5, 0
  std::string name;                 // e.g. "3g.40gb", "1g.10gb+me"
  int compute_slices = 0;           // 1..7
  int memory_slices = 0;            // 1, 2, 4 or 8
  uint64_t memory_mib = 0;          // nominal framebuffer of one instance (the "NNgb" of the name)
  int max_instances = 0;            // per GPU
  bool media_extensions = false;    // "+me": holds the GPU's media engines; at most one per GPU
  std::vector<int> allowed_starts;  // memory-slice indexes where an instance may begin
};

// A GPU model gpuwarden knows. `name` is the short form used in sim specs ("H100-80GB").
struct GpuModel {
  std::string name;
  std::string product_name;  // as NVML/nvidia-smi print it, e.g. "NVIDIA H100 80GB HBM3"
  uint64_t memory_mib = 0;   // whole-GPU framebuffer
  bool mig_capable = false;
  std::vector<MigProfile> profiles;  // empty unless mig_capable

  // nullptr when this model has no profile with that id / name.
  const MigProfile* FindProfile(int profile_id) const;
  const MigProfile* FindProfileByName(std::string_view profile_name) const;
};

// The built-in models: A100-40GB, A100-80GB, H100-80GB, H200-141GB (MIG-capable) and L40S-48GB
// (not MIG-capable). The table is static; pointers into it stay valid for the process lifetime.
const std::vector<GpuModel>& KnownGpuModels();
// nullptr when `name` (exact, case-sensitive) is not a known model.
const GpuModel* FindGpuModel(std::string_view name);

// One GPU instance placed on a GPU.
struct MigInstance {
  int profile_id = 0;
  int start = 0;  // first memory slice
  bool operator==(const MigInstance&) const = default;
};

// Checks `instances` against every placement rule of `model`: MIG-capable model, known profile
// ids, start in the profile's allowed starts, no two instances sharing a memory slice, no profile
// over its max instances, at most one "+me" instance, at most 7 compute slices in total.
// InvalidArgument naming the first broken rule and the instance; OK for an empty list.
absl::Status ValidateMigLayout(const GpuModel& model, std::span<const MigInstance> instances);

// The GPU instances on one GPU and the placement chooser. A value type; not thread-safe (the
// owner serialises access). `model` must outlive the layout (models from KnownGpuModels() do).
//
// Start choice (CanPlace / Place): among the profile's allowed starts whose memory slices are
// free, pick the one that after placement leaves, in order of preference,
//   1. the largest free contiguous range of memory slices;
//   2. the most free slices in 0..6, i.e. prefer covering slice 7, which no 1g (starts 0..6) can
//      ever use and only 1g.20gb@6, 3g@4 and 7g@0 can;
//   3. the lowest start.
// This packs small instances from slice 0 upward and keeps the top half whole for a 3g@4, so that
// e.g. 3g+2g+1g+1g (all 7 compute slices) is found in every arrival order. A greedy chooser cannot
// be right for every future request (1g first then 4g needs the 1g at 4..6, which rule 1 does not
// pick); PlanMigLayout searches all placements when the whole set of profiles is known up front.
class MigLayout {
 public:
  explicit MigLayout(const GpuModel& model) : model_(&model) {}

  const GpuModel& model() const { return *model_; }
  // In placement order.
  const std::vector<MigInstance>& instances() const { return instances_; }
  int used_compute_slices() const;
  // Bit i set when memory slice i is held by an instance.
  uint8_t used_memory_mask() const;

  // The start Place would choose, or nullopt when the profile cannot be placed now (unknown id,
  // model not MIG-capable, or any rule of ValidateMigLayout would break). Never changes the layout.
  std::optional<int> CanPlace(int profile_id) const;
  std::optional<int> CanPlace(const MigProfile& profile) const { return CanPlace(profile.id); }

  // Why `profile_id` cannot be placed: OK when CanPlace would return a start; otherwise
  // InvalidArgument (unknown profile, model without MIG) or ResourceExhausted naming the rule that
  // refuses it (max instances, the one "+me", compute slices, no free allowed start).
  absl::Status CheckPlace(int profile_id) const;

  // Places an instance at the chosen start and returns the start; on error (as CheckPlace) the
  // layout is unchanged.
  absl::StatusOr<int> Place(int profile_id);
  // Places at a given start; InvalidArgument for a start the profile does not allow,
  // ResourceExhausted when the slices are taken or a limit is reached. Unchanged on error.
  absl::Status PlaceAt(int profile_id, int start);
  // Removes the instance that begins at `start`; NotFound when none does.
  absl::Status Remove(int start);

 private:
  absl::StatusOr<int> Choose(int profile_id) const;

  const GpuModel* model_;
  std::vector<MigInstance> instances_;
};

// Finds a layout holding every profile in `profile_ids` together (any order, any allowed starts),
// by exhaustive search (at most 7 instances, so it is cheap). ResourceExhausted when no layout
// exists (naming the profiles), InvalidArgument for an unknown profile id. The result passes
// ValidateMigLayout. For planning re-partitions of idle GPUs.
absl::StatusOr<std::vector<MigInstance>> PlanMigLayout(const GpuModel& model,
                                                       std::span<const int> profile_ids);

// ---------------------------------------------------------------------------------------------
// Inventory and backends
// ---------------------------------------------------------------------------------------------

// Where a GPU (or MIG instance) stands in the tenant handoff (handoff.h has the state machine).
// Reported by the agent in its inventory; the scheduler places work only on kAvailable devices.
enum class HandoffState {
  kAvailable,    // verified clean and free: schedulable
  kAssigned,     // held by one tenant's job(s)
  kQuarantined,  // released, new, or a check failed: nothing is placed here
  kScrubbing,    // the process check passed; memory is being overwritten and verified
  kVerified,     // scrub and verify passed; becomes available after a last process check
};
// "available", "assigned", "quarantined", "scrubbing", "verified".
std::string_view HandoffStateName(HandoffState s);
// The inverse of HandoffStateName; nullopt for any other text.
std::optional<HandoffState> ParseHandoffState(std::string_view name);

// The handoff status of one device as the inventory carries it.
struct HandoffInfo {
  HandoffState state = HandoffState::kQuarantined;
  std::string reason;  // why it is quarantined (empty otherwise)
  int failures = 0;    // consecutive failed handoff attempts (0: none failed since the last pass)
  bool operator==(const HandoffInfo&) const = default;
};

// A GPU instance as the inventory reports it.
struct MigInstanceInfo {
  std::string uuid;  // "MIG-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
  int profile_id = 0;
  std::string profile_name;
  int start = 0;
  uint64_t memory_mib = 0;
  std::optional<HandoffInfo> handoff;  // set by an agent that runs the handoff
  // The driver's ids of the GPU instance and of its (one) compute instance; they name the
  // /proc/driver/nvidia/capabilities/gpuN/mig/giG[/ciC]/access files. -1 when not known.
  int gpu_instance_id = -1;
  int compute_instance_id = -1;
  // Set by the agent's MIG manager: the job it created this instance for; empty for instances
  // it did not create (left alone, reported as foreign).
  std::string job_id;
};

// A process holding a GPU (or one of its MIG instances).
struct GpuProcess {
  int64_t pid = 0;
  uint64_t used_memory_mib = 0;
  std::string mig_uuid;  // empty for a whole-GPU process
};

// One physical GPU as discovered.
struct GpuDevice {
  int index = 0;      // NVML index on the node
  std::string uuid;   // "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
  std::string model;  // short model name ("H100-80GB"); empty if unknown to gpuwarden
  std::string product_name;
  uint64_t memory_mib = 0;
  std::string driver_version;
  std::string cuda_version;
  bool ecc_enabled = false;
  bool mig_capable = false;
  bool mig_enabled = false;
  std::vector<MigInstanceInfo> mig_instances;
  std::vector<GpuProcess> processes;
  // Set by an agent that runs the handoff (for the whole GPU; MIG instances carry their own).
  std::optional<HandoffInfo> handoff;
};

// A source of GPU inventory and MIG control for one node. Implementations: the simulated backend
// below; the NVML backend (dlopen of libnvidia-ml.so.1, no link-time dependency, a machine without
// GPUs reports none) will live in nvml_backend.cc behind CreateNvmlBackend() in this header.
// Implementations are thread-safe.
class GpuBackend {
 public:
  virtual ~GpuBackend() = default;
  // "sim" or "nvml".
  virtual std::string_view name() const = 0;
  // The node's GPUs in index order, with MIG instances and processes. Unavailable when the driver
  // cannot be queried.
  virtual absl::StatusOr<std::vector<GpuDevice>> Discover() = 0;
  // Creates a GPU instance of `profile_id` on the GPU `gpu_uuid`, choosing the start as
  // MigLayout::Place does. NotFound: no such GPU; FailedPrecondition: MIG mode off;
  // InvalidArgument: profile unknown to the model; ResourceExhausted: it does not fit (the message
  // says which rule). Nothing changes on error.
  virtual absl::StatusOr<MigInstanceInfo> CreateMigInstance(std::string_view gpu_uuid,
                                                            int profile_id) = 0;
  // Creates a GPU instance of `profile_id` at memory slice `start` plus one compute instance
  // spanning it (nvmlDeviceCreateGpuInstanceWithPlacement, nvmlGpuInstanceCreateComputeInstance)
  // and returns it with its MIG device UUID. Errors follow NVML's: NotFound no such GPU;
  // FailedPrecondition MIG mode off (MIG mode is never changed here); InvalidArgument a profile
  // the model lacks or a start the profile does not allow; ResourceExhausted the slices are taken
  // or a per-GPU limit is reached. Nothing is left behind on error. The default: Unimplemented.
  virtual absl::StatusOr<MigInstanceInfo> CreateMigInstanceAt(std::string_view gpu_uuid,
                                                              int profile_id, int start);
  // Destroys one GPU instance. NotFound: no such GPU or instance; FailedPrecondition: a process
  // still runs on it.
  virtual absl::Status DestroyMigInstance(std::string_view gpu_uuid, std::string_view mig_uuid) = 0;
  // The processes holding one device now: a whole GPU ("GPU-...", every process on it, also
  // those on its MIG instances) or one MIG instance ("MIG-..."). Compute and graphics processes.
  // NotFound: no such device; Unavailable: the driver cannot be asked. The handoff treats any
  // error as "not known to be free" (the device stays quarantined). The default says the backend
  // cannot answer (Unimplemented).
  virtual absl::StatusOr<std::vector<GpuProcess>> RunningProcesses(std::string_view device_uuid);
};

// ---------------------------------------------------------------------------------------------
// Memory scrub (the handoff's second check; handoff.h runs it)

struct ScrubOptions {
  // The scrub fails unless it covered at least this share of the memory free when it began.
  double min_fraction = 0.90;
  // Allocation chunk; halved on an allocation failure down to min_chunk_bytes, so the scrub
  // takes as much of the free memory as the driver will give.
  uint64_t chunk_bytes = uint64_t{1} << 30;
  uint64_t min_chunk_bytes = uint64_t{2} << 20;
  // First pass writes and verifies this word (proves the writes land where the verify reads);
  // the final pass writes and verifies zero, the state the next tenant finds.
  bool pattern_pass = true;
  uint32_t pattern = 0xA5C3965Au;
};

// What one scrub did. Byte counts and times are the device's; GB/s are 1e9 bytes per second.
struct ScrubReport {
  std::string device_uuid;       // as asked ("GPU-..." or "MIG-...")
  std::string device_name;       // the driver's name for it
  uint64_t total_bytes = 0;      // device (or MIG instance) memory
  uint64_t free_bytes = 0;       // free when the scrub began (after its own context)
  uint64_t scrubbed_bytes = 0;   // allocated, overwritten and verified
  int chunks = 0;
  double fraction_of_free = 0;   // scrubbed_bytes / free_bytes
  double write_seconds = 0;      // the final (zero) pass's fill
  double write_gbps = 0;
  double verify_seconds = 0;     // the final pass's verify kernel
  double verify_gbps = 0;
  double total_seconds = 0;      // everything, allocation and module load included
  uint64_t pattern_mismatches = 0;  // words != pattern after the pattern pass
  uint64_t zero_mismatches = 0;     // words != 0 after the final pass
  // The verdict against `min_fraction`: no mismatch and enough memory covered.
  bool passed = false;
  std::string failure;  // why not passed (empty when passed)
};

// Overwrites and verifies a device's free memory. Implementations: the CUDA driver API
// (CreateCudaScrubber, handoff.h), a child process running `gpuwarden agent scrub` (the agent's
// choice: a driver fault or hang cannot take the agent down), and the simulated backend's.
// Thread-safe.
class MemoryScrubber {
 public:
  virtual ~MemoryScrubber() = default;
  // A report (passed or not) when the scrub ran; an error when it could not run: NotFound (no
  // driver / no such device), Unavailable (driver error), ResourceExhausted (could not allocate
  // min_fraction). Either way a failed scrub leaves the device quarantined.
  virtual absl::StatusOr<ScrubReport> Scrub(std::string_view device_uuid,
                                            const ScrubOptions& options) = 0;
};

// ---------------------------------------------------------------------------------------------
// NVML

// The NVML backend (nvml.cc): dlopen()s `library` (default libnvidia-ml.so.1; no link-time
// dependency on the driver) and nvmlInit()s it. NotFound when the library is absent (a machine
// without an NVIDIA driver: callers report zero GPUs and say why); FailedPrecondition when it
// lacks a function we need; Unavailable when NVML cannot initialise (driver not loaded).
// MIG create (CreateMigInstanceAt only: placement is always explicit) and destroy go through
// NVML; MIG mode is never changed. Model names are filled when the product name is one of
// KnownGpuModels().
absl::StatusOr<std::unique_ptr<GpuBackend>> CreateNvmlBackend(
    const std::string& library = "libnvidia-ml.so.1");

// ---------------------------------------------------------------------------------------------
// Simulated GPUs
// ---------------------------------------------------------------------------------------------

// A parsed sim spec. Grammar (the agent's `--gpus sim:SPEC`, SPEC without the "sim:" prefix):
//   spec  = item *("," item)
//   item  = count "x" model [":mig"]
//   count = "1".."64", decimal, no sign, no leading zero
//   model = a KnownGpuModels() name, exact and case-sensitive ("H100-80GB", "H200-141GB", ...)
// No whitespace anywhere, no empty items, no trailing comma, at most 64 GPUs in all and 1024 bytes.
// ":mig" (MIG mode on) is allowed only on MIG-capable models.
struct SimSpecItem {
  int count = 0;
  std::string model;
  bool mig = false;
  bool operator==(const SimSpecItem&) const = default;
};
struct SimSpec {
  std::vector<SimSpecItem> items;
  int total_gpus() const;
  bool operator==(const SimSpec&) const = default;
};

inline constexpr int kMaxSimGpus = 64;
inline constexpr size_t kMaxSimSpecBytes = 1024;

// InvalidArgument naming the offending item (by position and text) and the rule it breaks.
absl::StatusOr<SimSpec> ParseSimSpec(std::string_view text);
// The canonical text of `spec`; ParseSimSpec(FormatSimSpec(s)) == s for every parsed s.
std::string FormatSimSpec(const SimSpec& spec);

struct SimOptions {
  // Seeds the UUIDs; use the node name so that every node's GPUs differ and restarts keep them.
  std::string seed = "sim";
  std::string driver_version = "580.65.06";
  std::string cuda_version = "13.0";
};

// "GPU-" + a UUID-shaped hex of SHA-256("gpuwarden-sim-gpu\0" seed "\0" index): stable across
// runs and machines, different per seed and index.
std::string SimGpuUuid(std::string_view seed, int index);

// The devices `spec` describes, indexes 0.. in spec order, ECC on, no instances or processes.
std::vector<GpuDevice> ExpandSimSpec(const SimSpec& spec, const SimOptions& options);

// The simulated backend: in-memory GPUs that follow the MIG rules of the real ones. Thread-safe
// (one mutex). Besides GpuBackend it lets tests add processes and toggle MIG mode.
class SimGpuBackend final : public GpuBackend {
 public:
  static absl::StatusOr<std::unique_ptr<SimGpuBackend>> Create(const SimSpec& spec,
                                                               const SimOptions& options = {});
  // Parses `spec_text` then Create.
  static absl::StatusOr<std::unique_ptr<SimGpuBackend>> Create(std::string_view spec_text,
                                                               const SimOptions& options = {});
  ~SimGpuBackend() override;

  std::string_view name() const override { return "sim"; }
  absl::StatusOr<std::vector<GpuDevice>> Discover() override;
  absl::StatusOr<MigInstanceInfo> CreateMigInstance(std::string_view gpu_uuid,
                                                    int profile_id) override;
  absl::StatusOr<MigInstanceInfo> CreateMigInstanceAt(std::string_view gpu_uuid, int profile_id,
                                                      int start) override;
  absl::Status DestroyMigInstance(std::string_view gpu_uuid, std::string_view mig_uuid) override;
  absl::StatusOr<std::vector<GpuProcess>> RunningProcesses(std::string_view device_uuid) override;

  // Turns MIG mode on or off, as `nvidia-smi -mig` does: FailedPrecondition while any process
  // holds the GPU or (to turn it off) any GPU instance exists; InvalidArgument for a model without
  // MIG. NotFound for an unknown GPU.
  absl::Status SetMigMode(std::string_view gpu_uuid, bool enabled);
  // Simulates a process on the GPU, or on one of its instances when `mig_uuid` is set. NotFound
  // for an unknown GPU or instance; FailedPrecondition for a whole-GPU process on a GPU in MIG
  // mode.
  absl::Status AddProcess(std::string_view gpu_uuid, const GpuProcess& process);
  // NotFound when no such pid is on the GPU.
  absl::Status RemoveProcess(std::string_view gpu_uuid, int64_t pid);

  // Failure injection for the handoff: the next `times` scrubs of `device_uuid` (a GPU or MIG
  // UUID) find `mismatched_words` words that did not verify. NotFound for an unknown device.
  absl::Status InjectVerifyMismatch(std::string_view device_uuid, uint64_t mismatched_words,
                                    int times = 1);
  // The next `times` scrubs of `device_uuid` fail to run (as a driver error would).
  absl::Status InjectScrubError(std::string_view device_uuid, int times = 1);
  // A scrubber over these simulated GPUs: it covers `fraction` of each device's memory, counts
  // its scrubs (scrub_count) and honours the injections above. Borrows this backend, which must
  // outlive it.
  std::unique_ptr<MemoryScrubber> NewScrubber(double fraction = 0.95);
  // How many scrubs of `device_uuid` ran (passed or not).
  int scrub_count(std::string_view device_uuid) const;

 private:
  struct State;
  explicit SimGpuBackend(std::unique_ptr<State> state);
  absl::StatusOr<MigInstanceInfo> CreateMig(std::string_view gpu_uuid, int profile_id,
                                            std::optional<int> start);
  std::unique_ptr<State> state_;
};

}  // namespace warden::gpu
