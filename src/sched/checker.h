// The invariant checker: an independent re-computation of what a ClusterState must satisfy
// (DESIGN.md isolation invariants 1-6, NVIDIA's MIG rules, capacity and the scheduler's cached
// counters). It shares no code with the placement logic: it walks the jobs, rebuilds every GPU's
// holders and every tenant's usage from the jobs' placements, and compares. Tests and debug
// builds run it after every decision. Pure functions plus one stateful class; not thread-safe.
#pragma once

#include <array>
#include <span>
#include <string>
#include <vector>

#include "sched/model.h"

namespace warden::sched {

struct Violation {
  // "invariant 1" .. "invariant 6" (DESIGN.md), "mig-rules", "capacity", "accounting",
  // "state" (a job/GPU record contradicting another).
  std::string rule;
  std::string detail;
};

// Everything that can be checked from one snapshot. Empty when the state is sound.
std::vector<Violation> CheckClusterState(const ClusterState& state);

// The part of CheckClusterState about one node: its GPUs, capacity and `jobs_on_node` (the
// caller's own record of which jobs it placed there, e.g. the simulator's). A GPU holder missing
// from that list is a violation too. Cheap enough to run after every placement of a large
// simulation (it never walks all jobs).
std::vector<Violation> CheckNode(const ClusterState& state, NodeId node,
                                 std::span<const JobId> jobs_on_node);

// CheckClusterState plus the rules that need history, learned from the sequence of snapshots it
// is shown (call Check after every decision):
//   invariant 3: a memory slice last used by tenant A is held by tenant B only after a passed
//     verification of that GPU (its verify_epoch advanced) while the slice was free;
//   invariant 5: no job newly appears on a node that is cordoned, unreachable or failing patch
//     policy;
//   invariant 4: a tenant that gained a placement is within its quota afterwards (a quota lowered
//     under running jobs lets them run on; only new placements must fit);
//   placement rules ("state"): a job newly on a node matches its node selector and tolerates the
//     node's taints (labels and taints changed later do not move running jobs).
// Check must see every state in which a GPU's holders or verify_epoch changed; a caller that
// checks the whole cluster less often (the simulator, after each pass) calls ObserveNode after
// each operation on one node (a finish, a verification) to keep the GPU history exact.
class InvariantChecker {
 public:
  std::vector<Violation> Check(const ClusterState& state);
  // The invariant 3 history of one node's GPUs only.
  std::vector<Violation> ObserveNode(const ClusterState& state, NodeId node);

 private:
  void GpuHistoryOf(const ClusterState& state, NodeId node, std::vector<Violation>& out);

  struct GpuHistory {
    std::array<TenantId, 8> residue{};  // tenant whose data may remain on each memory slice
    uint64_t verify_epoch = 0;
  };
  std::vector<std::vector<GpuHistory>> gpus_;  // [node][gpu]
  absl::flat_hash_map<JobId, NodeId> placed_;  // jobs seen placed/running, and where
};

std::string FormatViolations(const std::vector<Violation>& violations);

}  // namespace warden::sched
