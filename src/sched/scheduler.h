// The isolation-aware scheduler: per-tenant queues, weighted dominant-resource fair share across
// tenants, priorities within a tenant, best-fit placement that keeps every isolation invariant of
// DESIGN.md, NVIDIA's MIG placement rules (via gpu::), gang placement of multi-GPU jobs on one
// node, and MIG mode changes planned only on GPUs with no work.
//
// A pure in-memory library: it owns a ClusterState and free-capacity indexes over it, and returns
// decisions; persistence, the job API and agents come later. Not thread-safe: one owner calls it
// (the server's scheduler loop, a test, the simulator). Every method either does all it says or,
// on error, changes nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sched/model.h"

namespace warden::sched {

// A MIG mode change the scheduler decided on an idle GPU (the agent carries it out before it
// starts the job placed there).
struct MigModeChange {
  NodeId node = 0;
  int gpu = 0;
  bool enable = false;
};

struct PassOptions {
  // Stop after this many placements (0: no limit).
  size_t max_placements = 0;
  // When set, the wall-clock nanoseconds of every job decision (placed or not) are appended.
  std::vector<int64_t>* latencies_ns = nullptr;
  // Called after every placement, e.g. to run a checker (tests, simulator).
  std::function<void(const JobRecord&)> after_placement;
};

struct PassResult {
  std::vector<JobId> placed;
  std::vector<MigModeChange> mig_changes;
  size_t considered = 0;  // job decisions made (placed + left queued with a reason)
};

class Scheduler {
 public:
  struct Options {
    // Plan MIG mode on/off on idle GPUs when a job needs the other mode.
    bool plan_mig_mode_changes = true;
    // Candidate nodes examined per (node class, shape bucket) before moving on: bounds the
    // decision time when CPU/memory or tenant rules reject index hits (see README "complexity").
    int probe_limit = 32;
    // Run the stateless invariant check after every mutation and placement and abort on a
    // violation. On in debug builds (NDEBUG unset), off in release.
#ifdef NDEBUG
    bool self_check = false;
#else
    bool self_check = true;
#endif
  };

  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(const Options& options);
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create() { return Create(Options{}); }
  ~Scheduler();

  // --- tenants and pools -------------------------------------------------------------------
  // InvalidArgument: bad name, weight <= 0, negative quota; AlreadyExists: name taken.
  absl::StatusOr<TenantId> AddTenant(const TenantSpec& spec);
  // Changes the policy; placed/running jobs the new policy forbids are requeued (their reason
  // says why). NotFound: unknown tenant.
  absl::Status SetTenantPolicy(TenantId tenant, Isolation policy);
  // Changes the quota at once. Lowered below the current usage, running and placed jobs keep
  // going and new placements wait ("waiting for quota") until the usage plus the job fits
  // (invariant 4 is judged at every placement). InvalidArgument: negative field.
  absl::Status SetTenantQuota(TenantId tenant, const Resources& quota);
  absl::Status SetTenantWeight(TenantId tenant, double weight);
  // InvalidArgument: bad name or unknown tenant; AlreadyExists: name taken.
  absl::StatusOr<PoolId> AddPool(const PoolSpec& spec);
  // Re-dedicates a pool (empty `tenants` and !reserved: a general pool again; `reserved`: kept
  // dedicated even with no tenant listed); jobs of tenants no longer allowed there are requeued.
  absl::Status SetPoolDedication(PoolId pool, const std::vector<TenantId>& tenants,
                                 bool reserved = false);

  // --- nodes -------------------------------------------------------------------------------
  // InvalidArgument: unknown pool or GPU model, mixed models, MIG mode on a non-MIG model,
  // bad labels; AlreadyExists: name taken. New GPUs start verified (clean).
  absl::StatusOr<NodeId> AddNode(const NodeSpec& spec);
  // A live change of a node's pool, labels and taints (operator `node label|taint`): new
  // placements follow the new values at once. Jobs already there stay (a changed label or a
  // NoSchedule taint does not evict, as in Kubernetes) except those that do not tolerate a taint
  // in `evict` (NoExecute; list those in `taints` too), those that named another pool, and those
  // the new pool does not admit (invariant 2): they are requeued, their reason says why.
  // InvalidArgument: unknown pool, labels not sorted by unique key; NotFound: unknown node.
  absl::Status UpdateNodeMeta(NodeId node, const std::string& pool,
                              std::vector<std::pair<std::string, std::string>> labels,
                              std::vector<Taint> taints, const std::vector<Taint>& evict);
  // The node leaves for good: its jobs are requeued.
  absl::Status RemoveNode(NodeId node);
  // Unreachable: its jobs are requeued and its GPUs need verification before reuse.
  absl::Status SetNodeReachable(NodeId node, bool reachable);
  absl::Status Cordon(NodeId node);
  absl::Status Uncordon(NodeId node);
  // Cordon and requeue every job on the node.
  absl::Status Drain(NodeId node);
  // A node failing patch policy takes no new jobs (DESIGN invariant 5); running ones stay.
  absl::Status SetPatchCompliant(NodeId node, bool compliant);
  // Operator MIG mode change (a re-partition). FailedPrecondition unless the GPU has no work
  // (no job, no instance); InvalidArgument for a model without MIG or a bad index.
  absl::Status SetMigMode(NodeId node, int gpu, bool enabled);
  // The agent's verification result for a GPU: passed clears the unverified memory slices that no
  // job holds (and lifts a quarantine); failed quarantines the GPU.
  absl::Status ReportGpuVerification(NodeId node, int gpu, bool passed);

  // --- jobs --------------------------------------------------------------------------------
  // Queues a job. Refused (and nothing queued) when it can never be admitted:
  //   NotFound          unknown tenant or pool;
  //   PermissionDenied  weaker isolation than the tenant's policy, or a pool dedicated to
  //                     other tenants (or a general pool for a dedicated-policy tenant);
  //   InvalidArgument   a fraction with isolation stronger than shared, bad limits;
  //   ResourceExhausted the job alone exceeds the tenant's quota.
  absl::StatusOr<JobId> Submit(const JobSpec& spec);
  // queued/placed/running -> cancelled (resources released). FailedPrecondition once ended.
  absl::Status Cancel(JobId job);
  // A control plane restarting from its store: puts a queued job back exactly where it was
  // placed (node, GPUs, MIG instances), as placed or running. The placement must keep every
  // invariant (CheckNode judges it); otherwise FailedPrecondition and nothing changes (the job
  // stays queued). InvalidArgument: a GPU index the node lacks, or GPUs for a CPU-only job;
  // ResourceExhausted: the node lacks the CPU/memory.
  absl::Status Restore(JobId job, NodeId node, const std::vector<GpuAssignment>& gpus,
                       bool running);
  // placed -> running (the agent acknowledged it).
  absl::Status MarkRunning(JobId job);
  // placed/running -> done or failed (resources released; the GPUs await verification).
  absl::Status Finish(JobId job, bool succeeded);

  // One scheduling pass: repeatedly takes the tenant with the lowest weighted dominant share that
  // still has a job to try, tries its next job (priority, then submission order), places it
  // best-fit or leaves it queued with the reason. Each queued job is tried at most once.
  PassResult Schedule(const PassOptions& options = {});

  // Drops an ended (done, failed, cancelled) job's record. FailedPrecondition otherwise.
  absl::Status Forget(JobId job);

  // --- views -------------------------------------------------------------------------------
  const ClusterState& state() const;
  const JobRecord* FindJob(JobId job) const;
  std::optional<TenantId> FindTenant(std::string_view name) const;
  std::optional<PoolId> FindPool(std::string_view name) const;
  std::optional<NodeId> FindNode(std::string_view name) const;
  size_t queued_jobs() const;
  // Weighted dominant share of a tenant (0 when the cluster is empty).
  double DominantShare(TenantId tenant) const;

 private:
  struct Impl;
  explicit Scheduler(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace warden::sched
