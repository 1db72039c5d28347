// sched model: the plain data the scheduler decides over (tenants, pools, nodes, GPUs, jobs) and
// the strict JSON job-spec decoder. Value types only; no locking (the Scheduler that owns a
// ClusterState serialises access). ClusterState is public so that the invariant checker
// (checker.h) can recompute everything from it independently, and so that tests can seed
// violations into a copy.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "gpu/gpu.h"

namespace warden::sched {

using TenantId = uint32_t;  // 1.. (0 = none)
using PoolId = uint32_t;    // index into ClusterState::pools
using NodeId = uint32_t;    // index into ClusterState::nodes (never reused)
using JobId = uint64_t;     // 1..

// Isolation levels, weakest first. Each level forbids what the one before it allows:
//   shared    - the job may time-slice a GPU (a fraction) with jobs of its own tenant, and may hold
//               a MIG instance on a GPU whose other instances belong to other tenants.
//   mig       - never time-sliced; a MIG instance may still share its GPU with other tenants'
//               instances (whose policies allow it: DESIGN.md invariant 1).
//   exclusive - the physical GPU serves only this tenant while the job holds it (whole GPU, or MIG
//               instances that no other tenant shares the GPU with).
//   dedicated - exclusive, and only on nodes in pools dedicated to the tenant.
// A job may ask for a stronger level than its tenant's policy, never a weaker one.
enum class Isolation : uint8_t { kShared = 0, kMig = 1, kExclusive = 2, kDedicated = 3 };
std::string_view IsolationName(Isolation isolation);
// InvalidArgument for anything but "shared", "mig", "exclusive", "dedicated".
absl::StatusOr<Isolation> ParseIsolation(std::string_view text);

// Quotas and usage share one shape. GPU accounting: a whole GPU counts 1000 gpu_millis and its
// full memory; a fraction its millis and that share of the memory; a MIG instance its compute
// slices (mig_slices) and its memory, and no gpu_millis. running_jobs counts placed + running.
struct Resources {
  static constexpr int64_t kUnlimited = std::numeric_limits<int64_t>::max();
  int64_t gpu_millis = 0;
  int64_t gpu_memory_mib = 0;
  int64_t mig_slices = 0;
  int64_t cpu_millis = 0;
  int64_t memory_mib = 0;
  int64_t running_jobs = 0;

  static Resources Unlimited();
  Resources& operator+=(const Resources& o);
  Resources& operator-=(const Resources& o);
  bool operator==(const Resources&) const = default;
  // The first field where `*this` exceeds `limit`, as "gpus 9.000 > 8.000"; empty when none does.
  std::string FirstExcess(const Resources& limit) const;
};

struct TenantSpec {
  std::string name;
  Isolation policy = Isolation::kMig;
  double weight = 1.0;  // fair-share weight, > 0
  Resources quota = Resources::Unlimited();
};

struct Taint {
  std::string key;
  std::string value;
  bool operator==(const Taint&) const = default;
};
// Tolerates a taint with the same key and, unless `value` is empty, the same value.
struct Toleration {
  std::string key;
  std::string value;
  bool operator==(const Toleration&) const = default;
};

struct PoolSpec {
  std::string name;
  std::vector<TenantId> dedicated_to;  // empty: a general pool any non-dedicated tenant may use
  // Dedicated even with dedicated_to empty: every tenant it was reserved for is gone, and a pool
  // that was kept apart must not silently open to everyone (no job runs there).
  bool reserved = false;
  bool dedicated() const { return reserved || !dedicated_to.empty(); }
};

struct NodeGpuSpec {
  std::string uuid;
  std::string model;  // a gpu::KnownGpuModels() name
  bool mig_enabled = false;
};

struct NodeSpec {
  std::string name;
  std::string pool;
  std::vector<std::pair<std::string, std::string>> labels;  // sorted by key, unique keys
  std::vector<Taint> taints;
  int64_t cpu_millis = 0;
  int64_t memory_mib = 0;
  std::vector<NodeGpuSpec> gpus;  // one model per node
};

enum class GpuRequest : uint8_t { kNone = 0, kWhole = 1, kMig = 2, kFraction = 3 };

// A job as submitted (ParseJobSpec decodes it from JSON). Limits are checked by ParseJobSpec and
// again by Scheduler::Submit.
struct JobSpec {
  std::string name;
  std::string tenant;
  GpuRequest gpu_request = GpuRequest::kNone;
  int gpus = 0;                  // kWhole: 1..64, all on one node (a gang)
  std::string mig_profile;       // kMig: a profile name, e.g. "3g.40gb"
  int gpu_millis = 0;            // kFraction: 1..999 thousandths of one GPU
  int64_t cpu_millis = 1000;     // 1..1,048,576,000
  int64_t memory_mib = 1024;     // 1..16,777,216
  int priority = 0;              // -1000..1000, higher first within the tenant
  std::optional<Isolation> isolation;  // unset: the tenant's policy
  std::string pool;              // empty: any pool the tenant may use
  std::string gpu_model;         // empty: any model
  std::vector<std::pair<std::string, std::string>> node_selector;  // sorted by key
  std::vector<Toleration> tolerations;
  bool operator==(const JobSpec&) const = default;
};

// Strict decoder of a job spec: one JSON object, no unknown or duplicate keys, exactly one of
// "gpus" / "mig_profile" / "gpu_fraction" (or none for a CPU-only job), every limit above.
// InvalidArgument naming the field and the rule on any error.
//   {"name":"train","tenant":"acme","gpus":2,"cpu_millis":8000,"memory_mib":65536,
//    "priority":5,"isolation":"exclusive","pool":"a100","gpu_model":"H100-80GB",
//    "node_selector":{"zone":"a"},"tolerations":[{"key":"gpu","value":"h100"}]}
//   {"name":"nb","tenant":"acme","mig_profile":"1g.10gb"}   {"name":"x","tenant":"t","gpu_fraction":0.25}
absl::StatusOr<JobSpec> ParseJobSpec(std::string_view json);
// The canonical JSON of a spec; ParseJobSpec(JobSpecToJson(s)) == s for every parsed s.
std::string JobSpecToJson(const JobSpec& spec);

enum class JobState : uint8_t { kQueued, kPlaced, kRunning, kDone, kFailed, kCancelled };
std::string_view JobStateName(JobState state);

// One GPU given to a job: a whole GPU, a MIG instance on it, or a time-sliced fraction of it.
struct GpuAssignment {
  int gpu = 0;             // index on the node
  int mig_profile_id = -1; // >= 0 for a MIG instance
  int mig_start = -1;      // its first memory slice
  int millis = 1000;       // < 1000 for a fraction
  bool operator==(const GpuAssignment&) const = default;
};

struct JobRecord {
  JobId id = 0;
  TenantId tenant = 0;
  JobSpec spec;
  std::optional<PoolId> pool;  // resolved spec.pool
  JobState state = JobState::kQueued;
  std::string reason;          // why it is queued (or why it ended)
  uint64_t seq = 0;            // submission order
  NodeId node = 0;             // valid while placed or running
  std::vector<GpuAssignment> gpus;
  Resources usage;             // what it holds while placed or running (counted in its tenant)
};

// Per GPU: who holds what. Exactly one of: idle, one whole-GPU job, time-sliced shares of one
// tenant (non-MIG mode), MIG instances (MIG mode).
struct MigSlot {
  gpu::MigInstance instance;
  JobId job = 0;
};
struct GpuState {
  std::string uuid;
  const gpu::GpuModel* model = nullptr;
  bool mig_enabled = false;
  JobId whole_job = 0;
  TenantId share_tenant = 0;                      // tenant of the shares, 0 when none
  std::vector<std::pair<JobId, int>> shares;      // (job, millis)
  std::vector<MigSlot> instances;
  // Memory slices whose last user's data has not been verified gone (bit i = slice i; a whole
  // GPU uses all 8). Nothing is placed on them until ReportGpuVerification (DESIGN invariant 3).
  uint8_t unverified = 0;
  bool quarantined = false;  // the last verification failed: out of service
  uint64_t verify_epoch = 0; // counts passed verifications (the checker's history reads it)
};

struct NodeState {
  NodeSpec spec;
  PoolId pool = 0;
  bool removed = false;
  bool reachable = true;
  bool cordoned = false;
  bool patch_compliant = true;  // DESIGN invariant 5
  int64_t used_cpu_millis = 0;  // cached sums; the checker recomputes them from the jobs
  int64_t used_memory_mib = 0;
  std::vector<GpuState> gpus;
  // A node takes new jobs only when this holds.
  bool Schedulable() const { return !removed && reachable && !cordoned && patch_compliant; }
};

struct TenantState {
  TenantId id = 0;
  TenantSpec spec;
  Resources usage;  // cached; the checker recomputes it
};

struct PoolState {
  PoolSpec spec;
};

struct ClusterState {
  std::vector<PoolState> pools;
  std::vector<NodeState> nodes;
  std::vector<TenantState> tenants;  // index = TenantId - 1
  absl::flat_hash_map<JobId, JobRecord> jobs;

  const TenantState* tenant(TenantId id) const {
    return id >= 1 && id <= tenants.size() ? &tenants[id - 1] : nullptr;
  }
};

// max(job's requested level, tenant's current policy): the level the job is held to now.
Isolation EffectiveIsolation(const JobRecord& job, const TenantState& tenant);

}  // namespace warden::sched
