// Live node label, taint and pool changes (Scheduler::UpdateNodeMeta) and tenant policy changes
// under running jobs: new placements follow the change at once, running jobs stay unless the
// change forbids them (NoExecute taint, pool rules, a stricter isolation). The stateful checker
// runs after every step.
#include "sched_test_util.h"

namespace warden::sched {
namespace {

using namespace testing;

class NodeMetaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Scheduler::Options o;
    o.self_check = true;
    s_ = std::move(Scheduler::Create(o).value());
    acme_ = s_->AddTenant(Tenant("acme", Isolation::kMig)).value();
    ASSERT_TRUE(s_->AddPool({"general", {}}).ok());
    n1_ = s_->AddNode(MakeNode("n1", "general", 4)).value();
    n2_ = s_->AddNode(MakeNode("n2", "general", 4)).value();
  }
  void Check() {
    auto v = checker_.Check(s_->state());
    EXPECT_TRUE(v.empty()) << FormatViolations(v);
  }
  const JobRecord& Job(JobId id) { return *s_->FindJob(id); }
  void VerifyAll() {
    for (NodeId n = 0; n < s_->state().nodes.size(); ++n) {
      for (size_t g = 0; g < s_->state().nodes[n].gpus.size(); ++g) {
        ASSERT_TRUE(s_->ReportGpuVerification(n, static_cast<int>(g), true).ok());
      }
    }
  }
  JobId Run(JobSpec spec) {
    const JobId id = s_->Submit(spec).value();
    s_->Schedule();
    Check();
    return id;
  }
  void TearDown() override { Check(); }

  std::unique_ptr<Scheduler> s_;
  InvariantChecker checker_;
  TenantId acme_ = 0;
  NodeId n1_ = 0, n2_ = 0;
};

TEST_F(NodeMetaTest, NoScheduleTaintSteersNewJobsAwayAndRemovingItLetsThemBack) {
  const JobId before = Run(Whole("acme", 1, "before"));
  const NodeId first = Job(before).node;
  const NodeId other = first == n1_ ? n2_ : n1_;
  ASSERT_TRUE(s_->UpdateNodeMeta(first, "general", {}, {{"maintenance", ""}}, {}).ok());
  Check();
  // The running job stays (NoSchedule does not evict) ...
  EXPECT_EQ(Job(before).state, JobState::kPlaced);
  EXPECT_EQ(Job(before).node, first);
  // ... and new jobs avoid the node although best fit would pick it (fewest free GPUs).
  for (int i = 0; i < 4; ++i) {
    const JobId j = Run(Whole("acme", 1, "after"));
    EXPECT_EQ(Job(j).state, JobState::kPlaced);
    EXPECT_EQ(Job(j).node, other);
  }
  const JobId waits = Run(Whole("acme", 1, "waits"));
  EXPECT_EQ(Job(waits).state, JobState::kQueued);  // the other node is full
  // A job that tolerates the taint may go there.
  JobSpec tol = Whole("acme", 1, "tolerant");
  tol.tolerations = {{"maintenance", ""}};
  const JobId t = Run(tol);
  EXPECT_EQ(Job(t).node, first);
  // Taint removed: the waiting job lands on the node without a restart.
  ASSERT_TRUE(s_->UpdateNodeMeta(first, "general", {}, {}, {}).ok());
  s_->Schedule();
  Check();
  EXPECT_EQ(Job(waits).state, JobState::kPlaced);
  EXPECT_EQ(Job(waits).node, first);
}

TEST_F(NodeMetaTest, NoExecuteTaintRequeuesJobsThatDoNotTolerateIt) {
  JobSpec tol = Whole("acme", 1, "tolerant");
  tol.tolerations = {{"gpu-fault", ""}};
  const JobId keeps = Run(tol);
  const NodeId node = Job(keeps).node;
  const JobId plain = Run(Whole("acme", 1, "plain"));
  ASSERT_EQ(Job(plain).node, node);  // best fit: same node
  ASSERT_TRUE(s_->MarkRunning(plain).ok());
  const Taint fault{"gpu-fault", ""};
  ASSERT_TRUE(s_->UpdateNodeMeta(node, "general", {}, {fault}, {fault}).ok());
  Check();
  EXPECT_EQ(Job(keeps).state, JobState::kPlaced);
  EXPECT_EQ(Job(plain).state, JobState::kQueued);
  EXPECT_NE(Job(plain).reason.find("NoExecute taint gpu-fault"), std::string::npos)
      << Job(plain).reason;
  VerifyAll();
  s_->Schedule();
  Check();
  EXPECT_EQ(Job(plain).state, JobState::kPlaced);
  EXPECT_NE(Job(plain).node, node);
}

TEST_F(NodeMetaTest, LabelSelectedJobsFollowALabelChange) {
  JobSpec sel = Whole("acme", 1, "zone-b");
  sel.node_selector = {{"zone", "b"}};
  const JobId j1 = Run(sel);
  EXPECT_EQ(Job(j1).state, JobState::kQueued);
  EXPECT_NE(Job(j1).reason.find("labels"), std::string::npos) << Job(j1).reason;
  ASSERT_TRUE(s_->UpdateNodeMeta(n2_, "general", {{"zone", "b"}}, {}, {}).ok());
  s_->Schedule();
  Check();
  EXPECT_EQ(Job(j1).state, JobState::kPlaced);
  EXPECT_EQ(Job(j1).node, n2_);
  // The label moves to n1: the running job stays (like Kubernetes' IgnoredDuringExecution) and
  // the next selected job goes to n1.
  ASSERT_TRUE(s_->UpdateNodeMeta(n2_, "general", {}, {}, {}).ok());
  ASSERT_TRUE(s_->UpdateNodeMeta(n1_, "general", {{"zone", "b"}}, {}, {}).ok());
  Check();
  EXPECT_EQ(Job(j1).node, n2_);
  const JobId j2 = Run(sel);
  EXPECT_EQ(Job(j2).state, JobState::kPlaced);
  EXPECT_EQ(Job(j2).node, n1_);
}

TEST_F(NodeMetaTest, MovingANodeIntoAnotherTenantsDedicatedPoolRequeuesItsJobs) {
  const TenantId bank = s_->AddTenant(Tenant("bank", Isolation::kDedicated)).value();
  ASSERT_TRUE(s_->AddPool({"vault", {bank}}).ok());
  const JobId j = Run(Whole("acme", 1, "a"));
  const NodeId node = Job(j).node;
  ASSERT_TRUE(s_->UpdateNodeMeta(node, "vault", {}, {}, {}).ok());
  Check();
  EXPECT_EQ(Job(j).state, JobState::kQueued);
  const JobId b = Run(Whole("bank", 1, "b"));
  VerifyAll();
  s_->Schedule();
  Check();
  EXPECT_EQ(Job(b).state, JobState::kPlaced);
  EXPECT_EQ(Job(b).node, node);
  EXPECT_NE(Job(j).node, node);
  EXPECT_FALSE(s_->UpdateNodeMeta(node, "nope", {}, {}, {}).ok());
  EXPECT_FALSE(s_->UpdateNodeMeta(node, "vault", {{"z", "1"}, {"a", "2"}}, {}, {}).ok());
}

TEST_F(NodeMetaTest, StricterIsolationRequeuesRunningJobsItForbids) {
  // acme time-slices a GPU at shared; tightening to exclusive requeues the fractions (a fraction
  // cannot run above shared) and new placements follow the new policy.
  ASSERT_TRUE(s_->SetTenantPolicy(acme_, Isolation::kShared).ok());
  const JobId f = Run(Fraction("acme", 250));
  const JobId w = Run(Whole("acme", 1));
  ASSERT_EQ(Job(f).state, JobState::kPlaced);
  ASSERT_TRUE(s_->SetTenantPolicy(acme_, Isolation::kExclusive).ok());
  Check();
  EXPECT_EQ(Job(f).state, JobState::kQueued);
  EXPECT_NE(Job(f).reason.find("fraction"), std::string::npos) << Job(f).reason;
  EXPECT_EQ(Job(w).state, JobState::kPlaced);
  EXPECT_FALSE(s_->Submit(Fraction("acme", 250)).ok());
}

}  // namespace
}  // namespace warden::sched
