// The checker catches seeded violations: each test builds a sound state with the scheduler,
// copies it, breaks one rule in the copy and expects exactly that rule to be reported.
#include <algorithm>

#include "sched_test_util.h"

namespace warden::sched {
namespace {

using namespace testing;

bool Reports(const std::vector<Violation>& v, const std::string& rule) {
  return std::any_of(v.begin(), v.end(), [&](const Violation& x) { return x.rule == rule; });
}

class CheckerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Scheduler::Options o;
    o.self_check = true;
    s_ = std::move(Scheduler::Create(o).value());
    a_ = s_->AddTenant(Tenant("a", Isolation::kShared)).value();
    b_ = s_->AddTenant(Tenant("b", Isolation::kMig)).value();
    bank_ = s_->AddTenant(Tenant("bank", Isolation::kDedicated)).value();
    ASSERT_TRUE(s_->AddPool({"general", {}}).ok());
    ASSERT_TRUE(s_->AddPool({"vault", {bank_}}).ok());
    whole_node_ = s_->AddNode(MakeNode("w1", "general", 4)).value();
    mig_node_ = s_->AddNode(MakeNode("m1", "general", 2, true)).value();
    vault_node_ = s_->AddNode(MakeNode("v1", "vault", 2)).value();
    aw_ = s_->Submit(Whole("a", 1)).value();
    bw_ = s_->Submit(Whole("b", 1)).value();
    af_ = s_->Submit(Fraction("a", 300)).value();
    am_ = s_->Submit(Mig("a", "3g.40gb")).value();
    bm_ = s_->Submit(Mig("b", "3g.40gb")).value();
    vw_ = s_->Submit(Whole("bank", 1)).value();
    s_->Schedule();
    for (JobId j : {aw_, bw_, af_, am_, bm_, vw_}) {
      ASSERT_EQ(s_->FindJob(j)->state, JobState::kPlaced) << j << " " << s_->FindJob(j)->reason;
    }
    st_ = s_->state();
    ASSERT_TRUE(CheckClusterState(st_).empty()) << FormatViolations(CheckClusterState(st_));
  }
  JobRecord& J(JobId id) { return st_.jobs.at(id); }
  GpuState& G(NodeId n, int g) { return st_.nodes[n].gpus[g]; }

  std::unique_ptr<Scheduler> s_;
  ClusterState st_;
  TenantId a_ = 0, b_ = 0, bank_ = 0;
  NodeId whole_node_ = 0, mig_node_ = 0, vault_node_ = 0;
  JobId aw_ = 0, bw_ = 0, af_ = 0, am_ = 0, bm_ = 0, vw_ = 0;
};

TEST_F(CheckerTest, SoundStateHasNoViolations) { EXPECT_TRUE(CheckClusterState(st_).empty()); }

TEST_F(CheckerTest, CatchesTwoTenantsOnOneWholeGpu) {
  // Move b's whole-GPU job onto a's GPU, keeping every record consistent otherwise.
  JobRecord& bw = J(bw_);
  G(bw.node, bw.gpus[0].gpu).whole_job = 0;
  G(bw.node, bw.gpus[0].gpu).unverified = 0;
  bw.gpus[0].gpu = J(aw_).gpus[0].gpu;
  auto v = CheckClusterState(st_);
  EXPECT_TRUE(Reports(v, "invariant 1")) << FormatViolations(v);
}

TEST_F(CheckerTest, CatchesTimeSlicingAcrossTenants) {
  // A 300-thousandths share of tenant b on a's time-sliced GPU.
  JobRecord& af = J(af_);
  JobRecord& bw = J(bw_);
  GpuState& old = G(bw.node, bw.gpus[0].gpu);
  old.whole_job = 0;
  bw.spec = Fraction("b", 300);
  bw.gpus = {{af.gpus[0].gpu, -1, -1, 300}};
  G(af.node, af.gpus[0].gpu).shares.emplace_back(bw.id, 300);
  auto v = CheckClusterState(st_);
  EXPECT_TRUE(Reports(v, "invariant 1")) << FormatViolations(v);
}

TEST_F(CheckerTest, CatchesMigCotenancyWithAnExclusiveTenant) {
  // Both 3g instances share one GPU (a: shared, b: mig): allowed. Tighten b to exclusive.
  ASSERT_EQ(J(am_).gpus[0].gpu, J(bm_).gpus[0].gpu);
  st_.tenants[b_ - 1].spec.policy = Isolation::kExclusive;
  auto v = CheckClusterState(st_);
  EXPECT_TRUE(Reports(v, "invariant 1")) << FormatViolations(v);
}

TEST_F(CheckerTest, CatchesAJobInAnotherTenantsDedicatedPool) {
  // Re-home tenant b's job record onto the vault node's free GPU.
  JobRecord& bw = J(bw_);
  G(bw.node, bw.gpus[0].gpu).whole_job = 0;
  st_.nodes[bw.node].used_cpu_millis -= bw.spec.cpu_millis;
  st_.nodes[bw.node].used_memory_mib -= bw.spec.memory_mib;
  const int free_gpu = J(vw_).gpus[0].gpu == 0 ? 1 : 0;
  bw.node = vault_node_;
  bw.gpus[0].gpu = free_gpu;
  G(vault_node_, free_gpu).whole_job = bw.id;
  st_.nodes[vault_node_].used_cpu_millis += bw.spec.cpu_millis;
  st_.nodes[vault_node_].used_memory_mib += bw.spec.memory_mib;
  auto v = CheckClusterState(st_);
  EXPECT_TRUE(Reports(v, "invariant 2")) << FormatViolations(v);
  EXPECT_FALSE(Reports(v, "accounting")) << FormatViolations(v);
}

TEST_F(CheckerTest, CatchesADedicatedJobOutsideDedicatedPools) {
  st_.pools[1].spec.dedicated_to.clear();  // the vault becomes a general pool
  auto v = CheckClusterState(st_);
  EXPECT_TRUE(Reports(v, "invariant 2")) << FormatViolations(v);
}

TEST_F(CheckerTest, CatchesAJobOnUnverifiedMemory) {
  G(J(aw_).node, J(aw_).gpus[0].gpu).unverified = 0x01;
  auto v = CheckClusterState(st_);
  EXPECT_TRUE(Reports(v, "invariant 3")) << FormatViolations(v);
}

TEST_F(CheckerTest, HistoryCatchesATenantChangeWithoutVerification) {
  InvariantChecker checker;
  ASSERT_TRUE(checker.Check(st_).empty());
  // Tenant a's GPU is handed to tenant b with no verification in between (and the stateless
  // unverified mask forged clean, so only the history can tell).
  JobRecord& aw = J(aw_);
  JobRecord& bw = J(bw_);
  const int gpu = aw.gpus[0].gpu;
  G(bw.node, bw.gpus[0].gpu).whole_job = 0;
  G(aw.node, gpu).whole_job = bw.id;
  st_.tenants[a_ - 1].usage -= aw.usage;
  st_.nodes[aw.node].used_cpu_millis -= aw.spec.cpu_millis;
  st_.nodes[aw.node].used_memory_mib -= aw.spec.memory_mib;
  aw.state = JobState::kDone;
  aw.gpus.clear();
  aw.usage = Resources{};
  bw.gpus[0].gpu = gpu;
  auto v = checker.Check(st_);
  EXPECT_TRUE(Reports(v, "invariant 3")) << FormatViolations(v);
  // The same hand-over after a passed verification (epoch advanced while free) is fine.
  InvariantChecker fresh;
  ASSERT_TRUE(fresh.Check(s_->state()).empty());
  ClusterState between = s_->state();
  between.jobs.at(aw_).state = JobState::kDone;
  between.jobs.at(aw_).gpus.clear();
  between.tenants[a_ - 1].usage -= between.jobs.at(aw_).usage;
  between.jobs.at(aw_).usage = Resources{};
  between.nodes[aw.node].used_cpu_millis -= aw.spec.cpu_millis;
  between.nodes[aw.node].used_memory_mib -= aw.spec.memory_mib;
  between.nodes[aw.node].gpus[gpu].whole_job = 0;
  between.nodes[aw.node].gpus[gpu].verify_epoch++;
  ASSERT_TRUE(fresh.Check(between).empty()) << FormatViolations(fresh.Check(between));
  EXPECT_TRUE(fresh.Check(st_).empty());
}

TEST_F(CheckerTest, CatchesOverQuotaFromRecomputedUsage) {
  // A quota lowered under running jobs is legal on its own (they run on) ...
  ClusterState lowered = st_;
  lowered.tenants[a_ - 1].spec.quota.gpu_millis = 1000;  // a holds 1 whole GPU + 0.3
  InvariantChecker seen;
  ASSERT_TRUE(seen.Check(st_).empty());
  EXPECT_FALSE(Reports(seen.Check(lowered), "invariant 4"));
  // ... but a placement that leaves the tenant over quota is caught: a fresh checker sees every
  // job as newly placed.
  InvariantChecker fresh;
  auto v = fresh.Check(lowered);
  EXPECT_TRUE(Reports(v, "invariant 4")) << FormatViolations(v);
  // Forging the recorded usage does not hide it: usage is recomputed from placements.
  lowered.tenants[a_ - 1].usage = Resources{};
  InvariantChecker fresh2;
  v = fresh2.Check(lowered);
  EXPECT_TRUE(Reports(v, "invariant 4")) << FormatViolations(v);
  EXPECT_TRUE(Reports(v, "accounting")) << FormatViolations(v);
}

TEST_F(CheckerTest, HistoryCatchesANewJobOnATaintedOrUnlabelledNode) {
  // A taint added under a running job leaves it legal; a job that newly appears there is not.
  ClusterState tainted = st_;
  tainted.nodes[whole_node_].spec.taints = {{"maintenance", ""}};
  InvariantChecker seen;
  ASSERT_TRUE(seen.Check(st_).empty());
  EXPECT_TRUE(seen.Check(tainted).empty()) << FormatViolations(seen.Check(tainted));
  InvariantChecker fresh;
  auto v = fresh.Check(tainted);
  EXPECT_TRUE(Reports(v, "state")) << FormatViolations(v);
  ClusterState selected = st_;
  selected.jobs.at(aw_).spec.node_selector = {{"zone", "a"}};
  InvariantChecker fresh2;
  v = fresh2.Check(selected);
  EXPECT_TRUE(Reports(v, "state")) << FormatViolations(v);
}

TEST_F(CheckerTest, HistoryCatchesANewJobOnACordonedNode) {
  InvariantChecker checker;
  ClusterState before = st_;
  // Pretend b's whole job was not there yet, then appears while the node is cordoned.
  JobRecord& bw = before.jobs.at(bw_);
  before.nodes[bw.node].gpus[bw.gpus[0].gpu].whole_job = 0;
  before.nodes[bw.node].used_cpu_millis -= bw.spec.cpu_millis;
  before.nodes[bw.node].used_memory_mib -= bw.spec.memory_mib;
  before.tenants[b_ - 1].usage -= bw.usage;
  bw.state = JobState::kQueued;
  bw.gpus.clear();
  bw.usage = Resources{};
  ASSERT_TRUE(checker.Check(before).empty()) << FormatViolations(checker.Check(before));
  st_.nodes[J(bw_).node].cordoned = true;
  auto v = checker.Check(st_);
  EXPECT_TRUE(Reports(v, "invariant 5")) << FormatViolations(v);
}

TEST_F(CheckerTest, CatchesAJobGivenMoreGpusThanItAskedFor) {
  JobRecord& aw = J(aw_);
  int spare = -1;
  for (int g = 0; g < 4; ++g) {
    if (G(aw.node, g).whole_job == 0 && G(aw.node, g).shares.empty()) spare = g;
  }
  ASSERT_GE(spare, 0);
  aw.gpus.push_back({spare, -1, -1, 1000});
  G(aw.node, spare).whole_job = aw.id;
  auto v = CheckClusterState(st_);
  EXPECT_TRUE(Reports(v, "invariant 6")) << FormatViolations(v);
}

TEST_F(CheckerTest, CatchesABrokenMigLayout) {
  // Move a's 3g instance to start 2, which NVIDIA does not allow (3g starts at 0 or 4).
  JobRecord& am = J(am_);
  GpuState& g = G(am.node, am.gpus[0].gpu);
  for (MigSlot& s : g.instances) {
    if (s.job == am.id) s.instance.start = 2;
  }
  am.gpus[0].mig_start = 2;
  auto v = CheckClusterState(st_);
  EXPECT_TRUE(Reports(v, "mig-rules")) << FormatViolations(v);
}

TEST_F(CheckerTest, CatchesRecordsThatDisagreeWithPlacements) {
  st_.nodes[whole_node_].used_cpu_millis += 1;
  G(mig_node_, 1).whole_job = 12345;
  auto v = CheckClusterState(st_);
  EXPECT_TRUE(Reports(v, "accounting")) << FormatViolations(v);
  EXPECT_TRUE(Reports(v, "state")) << FormatViolations(v);
}

TEST_F(CheckerTest, CheckNodeSeesAHolderTheCallerDidNotPlace) {
  std::vector<JobId> mine;
  for (const auto& [id, j] : st_.jobs) {
    if (j.node == whole_node_ && j.state == JobState::kPlaced) mine.push_back(id);
  }
  EXPECT_TRUE(CheckNode(st_, whole_node_, mine).empty());
  mine.pop_back();
  EXPECT_FALSE(CheckNode(st_, whole_node_, mine).empty());
}

}  // namespace
}  // namespace warden::sched
