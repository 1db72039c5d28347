// The bridge from agents' handoff status to the scheduler's verification state.
#include "sched/handoff_sync.h"

#include "common/strings.h"

namespace warden::sched {

absl::StatusOr<HandoffSyncResult> ApplyHandoffStatus(Scheduler& scheduler, NodeId node,
                                                     std::span<const gpu::GpuDevice> devices) {
  const ClusterState& st = scheduler.state();
  if (node >= st.nodes.size() || st.nodes[node].removed) {
    return absl::NotFoundError(common::StrCat("no node ", node));
  }
  HandoffSyncResult result;
  const size_t count = st.nodes[node].gpus.size();
  for (size_t i = 0; i < count; ++i) {
    const GpuState& g = scheduler.state().nodes[node].gpus[i];
    bool held = g.whole_job != 0 || !g.shares.empty();
    for (const MigSlot& slot : g.instances) held = held || slot.job != 0;
    const gpu::GpuDevice* dev = nullptr;
    for (const gpu::GpuDevice& d : devices) {
      if (d.uuid == g.uuid) dev = &d;
    }
    // nullopt: leave as is; true/false: report.
    std::optional<bool> verdict;
    if (dev == nullptr || !dev->handoff.has_value()) {
      verdict = false;  // not known to be clean
    } else if (!dev->mig_enabled) {
      switch (dev->handoff->state) {
        case gpu::HandoffState::kAvailable: verdict = true; break;
        case gpu::HandoffState::kAssigned: break;
        default: verdict = false; break;
      }
    } else {
      bool clean = true;
      for (const gpu::MigInstanceInfo& m : dev->mig_instances) {
        clean = clean && m.handoff.has_value() &&
                (m.handoff->state == gpu::HandoffState::kAvailable ||
                 m.handoff->state == gpu::HandoffState::kAssigned);
      }
      verdict = clean;
    }
    if (!verdict.has_value()) continue;
    if (*verdict) {
      if (!g.quarantined && g.unverified == 0) continue;
      absl::Status s = scheduler.ReportGpuVerification(node, static_cast<int>(i), true);
      if (!s.ok()) return s;
      ++result.passed;
    } else {
      if (held || g.quarantined) continue;
      absl::Status s = scheduler.ReportGpuVerification(node, static_cast<int>(i), false);
      if (!s.ok()) return s;
      ++result.failed;
    }
  }
  return result;
}

}  // namespace warden::sched
