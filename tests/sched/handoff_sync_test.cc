// Agents' handoff status reaching the scheduler (issue 7, DESIGN invariant 3): the real
// HandoffController over simulated GPUs produces the inventory status, ApplyHandoffStatus feeds
// it to the scheduler, and a second tenant's job is placed only after the handoff passed.
#include "gpu/handoff.h"
#include "sched/handoff_sync.h"
#include "sched_test_util.h"

namespace warden::sched {
namespace {

using namespace testing;

class HandoffSyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Scheduler::Options o;
    o.self_check = true;
    s_ = std::move(Scheduler::Create(o).value());
    backend_ = std::move(gpu::SimGpuBackend::Create("2xH100-80GB").value());
    scrubber_ = backend_->NewScrubber();
    controller_ = std::move(gpu::HandoffController::Create({}, backend_.get(), scrubber_.get()).value());
    ASSERT_TRUE(controller_->Sync(Devices()).ok());
    ASSERT_TRUE(s_->AddTenant(Tenant("a", Isolation::kMig, 1.0)).ok());
    ASSERT_TRUE(s_->AddTenant(Tenant("b", Isolation::kMig, 1.0)).ok());
    ASSERT_TRUE(s_->AddPool({"general", {}}).ok());
    NodeSpec spec = MakeNode("n1", "general", 0);
    const std::vector<gpu::GpuDevice> devs = Devices();
    for (const auto& d : devs) spec.gpus.push_back({d.uuid, "H100-80GB", false});
    node_ = s_->AddNode(spec).value();
    uuid0_ = spec.gpus[0].uuid;
  }
  void TearDown() override { ExpectSound(*s_); }

  std::vector<gpu::GpuDevice> Devices() {
    auto d = backend_->Discover();
    EXPECT_TRUE(d.ok());
    return d.ok() ? *d : std::vector<gpu::GpuDevice>{};
  }

  // What one heartbeat does: the agent annotates its inventory, the server applies it.
  HandoffSyncResult Heartbeat(bool with_status = true) {
    std::vector<gpu::GpuDevice> devs = Devices();
    if (with_status) controller_->Annotate(devs);
    auto r = ApplyHandoffStatus(*s_, node_, devs);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : HandoffSyncResult{};
  }
  JobState Run(const JobSpec& spec, JobId* id) {
    *id = s_->Submit(spec).value();
    s_->Schedule();
    return s_->FindJob(*id)->state;
  }

  std::unique_ptr<Scheduler> s_;
  std::unique_ptr<gpu::SimGpuBackend> backend_;
  std::unique_ptr<gpu::MemoryScrubber> scrubber_;
  std::unique_ptr<gpu::HandoffController> controller_;
  NodeId node_ = 0;
  std::string uuid0_;
};

TEST_F(HandoffSyncTest, NeverVerifiedGpusAreUnschedulableUntilTheHandoffPasses) {
  EXPECT_EQ(Heartbeat().failed, 2);
  JobId j = 0;
  EXPECT_EQ(Run(Whole("a", 1), &j), JobState::kQueued);
  controller_->RunAllHandoffs();
  EXPECT_EQ(Heartbeat().passed, 2);
  s_->Schedule();
  EXPECT_EQ(s_->FindJob(j)->state, JobState::kPlaced);
  // Nothing changed: nothing re-reported.
  HandoffSyncResult again = Heartbeat();
  EXPECT_EQ(again.passed + again.failed, 0);
}

TEST_F(HandoffSyncTest, AttackSecondTenantWaitsForTheHandoffOfTheFirstTenantsGpu) {
  controller_->RunAllHandoffs();
  Heartbeat();
  JobId a = 0;
  ASSERT_EQ(Run(Whole("a", 2), &a), JobState::kPlaced);
  for (const auto& g : s_->FindJob(a)->gpus) {
    ASSERT_TRUE(controller_->Assign(s_->state().nodes[node_].gpus[g.gpu].uuid, "a").ok());
  }
  Heartbeat();  // assigned: left alone
  ASSERT_TRUE(s_->Finish(a, true).ok());
  // The job's process lingers on GPU 0 after the job ended (escaped its cgroup, say).
  ASSERT_TRUE(backend_->AddProcess(uuid0_, gpu::GpuProcess{31337, 10, ""}).ok());
  const std::vector<gpu::GpuDevice> devs = Devices();
  for (const auto& d : devs) ASSERT_TRUE(controller_->Release(d.uuid).ok());
  controller_->RunAllHandoffs();
  Heartbeat();
  JobId b = 0;
  ASSERT_EQ(Run(Whole("b", 2), &b), JobState::kQueued);  // GPU 0 is still quarantined
  JobId b1 = 0;
  EXPECT_EQ(Run(Whole("b", 1), &b1), JobState::kPlaced);  // GPU 1 passed its handoff
  EXPECT_NE(s_->state().nodes[node_].gpus[s_->FindJob(b1)->gpus[0].gpu].uuid, uuid0_);
  ASSERT_TRUE(backend_->RemoveProcess(uuid0_, 31337).ok());
  auto r = controller_->RunHandoff(uuid0_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state, gpu::HandoffState::kAvailable);
  Heartbeat();
  s_->Schedule();
  ASSERT_TRUE(s_->Cancel(b).ok());
  JobId b2 = 0;
  EXPECT_EQ(Run(Whole("b", 1), &b2), JobState::kPlaced);
}

TEST_F(HandoffSyncTest, AttackAnAgentReportingNoStatusGetsNoWork) {
  Heartbeat(/*with_status=*/false);
  JobId j = 0;
  EXPECT_EQ(Run(Whole("a", 1), &j), JobState::kQueued);
}

TEST_F(HandoffSyncTest, AStaleQuarantineReportDoesNotTouchAGpuAJobHolds) {
  controller_->RunAllHandoffs();
  Heartbeat();
  JobId j = 0;
  ASSERT_EQ(Run(Whole("a", 2), &j), JobState::kPlaced);
  ASSERT_TRUE(controller_->Quarantine(uuid0_, "operator").ok());
  EXPECT_EQ(Heartbeat().failed, 0);
  EXPECT_EQ(s_->FindJob(j)->state, JobState::kPlaced);
}

TEST(HandoffSyncErrorsTest, UnknownNodeIsNotFound) {
  auto s = Scheduler::Create().value();
  EXPECT_EQ(ApplyHandoffStatus(*s, 7, {}).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace warden::sched
