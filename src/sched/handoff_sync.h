// sched/handoff_sync.h: feeds the GPU handoff status that agents report in their inventory
// (gpu::HandoffInfo, issue 7) into the scheduler, so that DESIGN invariant 3 rests on the
// agent's verification: a GPU is placeable only after its agent reported it `available`.
#pragma once

#include <span>

#include "absl/status/statusor.h"
#include "gpu/gpu.h"
#include "sched/scheduler.h"

namespace warden::sched {

struct HandoffSyncResult {
  int passed = 0;  // GPUs reported verified (ReportGpuVerification(passed = true))
  int failed = 0;  // GPUs taken out of service (ReportGpuVerification(passed = false))
};

// For every GPU of `node` (matched by UUID against `devices`, the node's inventory):
//  - MIG off: `available` -> passed; `assigned` -> left alone (the scheduler knows its job);
//    quarantined / scrubbing / verified, no handoff status at all, or the GPU missing from the
//    inventory -> failed, unless a job holds it (a running job is never evicted by this).
//  - MIG on: passed when every instance is `available` or `assigned` (the GPU record itself is
//    not scheduled whole); otherwise failed, unless a job holds an instance on it. Per-instance
//    granularity is coarser than the agent's: one instance awaiting its scrub keeps new work off
//    the whole GPU until it passes.
// Reports only changes (a passed GPU with nothing unverified is not re-reported), so calling it
// on every inventory is cheap. NotFound for an unknown node.
absl::StatusOr<HandoffSyncResult> ApplyHandoffStatus(Scheduler& scheduler, NodeId node,
                                                     std::span<const gpu::GpuDevice> devices);

}  // namespace warden::sched
