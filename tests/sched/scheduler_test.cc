// Placement behaviour: gangs, best fit, isolation rules (as attacks that must fail), MIG rules,
// quotas, fair share, node events and policy changes. Every test ends with the invariant checker.
#include <algorithm>
#include <map>
#include <set>

#include "sched_test_util.h"

namespace warden::sched {
namespace {

using namespace testing;

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Scheduler::Options o;
    o.self_check = true;
    s_ = std::move(Scheduler::Create(o).value());
  }
  TenantId AddTenant(const std::string& name, Isolation policy, double weight = 1.0) {
    auto t = s_->AddTenant(Tenant(name, policy, weight));
    EXPECT_TRUE(t.ok()) << t.status();
    return *t;
  }
  PoolId AddPool(const std::string& name, std::vector<TenantId> dedicated = {}) {
    auto p = s_->AddPool({name, dedicated});
    EXPECT_TRUE(p.ok()) << p.status();
    return *p;
  }
  NodeId AddNode(const NodeSpec& spec) {
    auto n = s_->AddNode(spec);
    EXPECT_TRUE(n.ok()) << n.status();
    return *n;
  }
  JobId Submit(const JobSpec& spec) {
    auto j = s_->Submit(spec);
    EXPECT_TRUE(j.ok()) << j.status();
    return j.ok() ? *j : 0;
  }
  const JobRecord& Job(JobId id) { return *s_->FindJob(id); }
  bool Placed(JobId id) { return Job(id).state == JobState::kPlaced; }
  // Verifies every GPU of every node (the agent's scrub passed).
  void VerifyAll() {
    for (NodeId n = 0; n < s_->state().nodes.size(); ++n) {
      if (s_->state().nodes[n].removed) continue;
      for (size_t g = 0; g < s_->state().nodes[n].gpus.size(); ++g) {
        ASSERT_TRUE(s_->ReportGpuVerification(n, static_cast<int>(g), true).ok());
      }
    }
  }
  void TearDown() override { ExpectSound(*s_); }

  std::unique_ptr<Scheduler> s_;
};

// ---- whole GPUs, gangs, best fit ------------------------------------------------------------

TEST_F(SchedulerTest, PlacesAMultiGpuJobAsAGangOnOneNode) {
  AddTenant("acme", Isolation::kMig);
  AddPool("general");
  AddNode(MakeNode("n1", "general", 4));
  AddNode(MakeNode("n2", "general", 4));
  const JobId a = Submit(Whole("acme", 3));
  const JobId b = Submit(Whole("acme", 3));
  auto r = s_->Schedule();
  EXPECT_EQ(r.placed.size(), 2u);
  EXPECT_NE(Job(a).node, Job(b).node);
  std::set<int> gpus;
  for (const auto& g : Job(a).gpus) gpus.insert(g.gpu);
  EXPECT_EQ(gpus.size(), 3u);
}

TEST_F(SchedulerTest, BestFitPrefersTheNodeWithFewestFreeGpus) {
  AddTenant("acme", Isolation::kMig);
  AddPool("general");
  const NodeId big = AddNode(MakeNode("big", "general", 8));
  const NodeId small = AddNode(MakeNode("small", "general", 2));
  const JobId j = Submit(Whole("acme", 2));
  s_->Schedule();
  EXPECT_EQ(Job(j).node, small);
  const JobId k = Submit(Whole("acme", 1));
  s_->Schedule();
  EXPECT_EQ(Job(k).node, big);
}

TEST_F(SchedulerTest, AGangLargerThanAnyNodeStaysQueuedWithTheReason) {
  AddTenant("acme", Isolation::kMig);
  AddPool("general");
  AddNode(MakeNode("n1", "general", 4));
  AddNode(MakeNode("n2", "general", 4));
  const JobId j = Submit(Whole("acme", 8));
  s_->Schedule();
  EXPECT_EQ(Job(j).state, JobState::kQueued);
  EXPECT_NE(Job(j).reason.find("8 GPU"), std::string::npos) << Job(j).reason;
}

TEST_F(SchedulerTest, CpuAndMemoryBoundAPlacement) {
  AddTenant("acme", Isolation::kMig);
  AddPool("general");
  AddNode(MakeNode("n1", "general", 8, false, "H100-80GB", 4000, 1024));
  JobSpec spec = Whole("acme", 1);
  spec.cpu_millis = 3000;
  const JobId a = Submit(spec);
  const JobId b = Submit(spec);
  s_->Schedule();
  EXPECT_TRUE(Placed(a));
  EXPECT_EQ(Job(b).state, JobState::kQueued);
  EXPECT_NE(Job(b).reason.find("CPU"), std::string::npos) << Job(b).reason;
}

// ---- invariant 1: no two tenants on one GPU without MIG ------------------------------------

TEST_F(SchedulerTest, TimeSlicingIsSharedOnlyInsideOneTenant) {
  AddTenant("a", Isolation::kShared);
  AddTenant("b", Isolation::kShared);
  AddPool("general");
  AddNode(MakeNode("n1", "general", 1));
  const JobId a1 = Submit(Fraction("a", 500));
  const JobId a2 = Submit(Fraction("a", 250));
  const JobId b1 = Submit(Fraction("b", 250));
  s_->Schedule();
  EXPECT_TRUE(Placed(a1));
  EXPECT_TRUE(Placed(a2));
  EXPECT_EQ(Job(a1).gpus[0].gpu, Job(a2).gpus[0].gpu);
  // 250 thousandths remain free, but only for tenant a.
  EXPECT_EQ(Job(b1).state, JobState::kQueued);
  EXPECT_NE(Job(b1).reason.find("time-sliced"), std::string::npos) << Job(b1).reason;
}

TEST_F(SchedulerTest, MigInstancesOfMigTenantsShareAGpu) {
  AddTenant("a", Isolation::kMig);
  AddTenant("b", Isolation::kShared);
  AddPool("general");
  AddNode(MakeNode("n1", "general", 1, true));
  const JobId a = Submit(Mig("a", "3g.40gb"));
  const JobId b = Submit(Mig("b", "3g.40gb"));
  s_->Schedule();
  ASSERT_TRUE(Placed(a));
  ASSERT_TRUE(Placed(b));
  EXPECT_EQ(Job(a).gpus[0].gpu, Job(b).gpus[0].gpu);
  EXPECT_NE(Job(a).gpus[0].mig_start, Job(b).gpus[0].mig_start);
}

TEST_F(SchedulerTest, AttackExclusiveTenantNeverSharesAGpuThroughMig) {
  AddTenant("a", Isolation::kMig);
  AddTenant("b", Isolation::kExclusive);
  AddPool("general");
  AddNode(MakeNode("n1", "general", 1, true));
  const JobId a = Submit(Mig("a", "3g.40gb"));
  s_->Schedule();
  ASSERT_TRUE(Placed(a));
  const JobId b = Submit(Mig("b", "3g.40gb"));
  s_->Schedule();
  EXPECT_EQ(Job(b).state, JobState::kQueued);
  EXPECT_NE(Job(b).reason.find("no other tenant"), std::string::npos) << Job(b).reason;
  // And a mig-policy job asking for exclusive isolation is held to it too.
  JobSpec strong = Mig("a", "1g.10gb");
  strong.isolation = Isolation::kExclusive;
  const JobId c = Submit(strong);
  s_->Schedule();
  EXPECT_TRUE(Placed(c));  // same tenant as the GPU's only other user: allowed
}

TEST_F(SchedulerTest, AttackJobAskingForWeakerIsolationThanItsTenantIsRefused) {
  AddTenant("bank", Isolation::kExclusive);
  AddPool("general");
  AddNode(MakeNode("n1", "general", 1, true));
  JobSpec weak = Mig("bank", "1g.10gb");
  weak.isolation = Isolation::kMig;
  auto r = s_->Submit(weak);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(std::string(r.status().message()).find("never weaker"), std::string::npos);
  // A fraction is time-slicing: refused for any tenant whose isolation is above shared.
  auto f = s_->Submit(Fraction("bank", 500));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s_->queued_jobs(), 0u);
}

// ---- invariant 2: dedicated pools -----------------------------------------------------------

TEST_F(SchedulerTest, AttackTenantTargetingAnotherTenantsDedicatedPoolIsRefused) {
  const TenantId bank = AddTenant("bank", Isolation::kDedicated);
  AddTenant("mallory", Isolation::kShared);
  AddPool("vault", {bank});
  AddPool("general");
  AddNode(MakeNode("v1", "vault", 8));
  JobSpec spec = Whole("mallory", 1);
  spec.pool = "vault";
  auto r = s_->Submit(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(std::string(r.status().message()).find("dedicated"), std::string::npos);
  // Without naming the pool, the only free GPUs are in the dedicated pool: still never there.
  const JobId j = Submit(Whole("mallory", 1));
  s_->Schedule();
  EXPECT_EQ(Job(j).state, JobState::kQueued);
  EXPECT_NE(Job(j).reason.find("pool open to tenant mallory"), std::string::npos)
      << Job(j).reason;
  const JobId k = Submit(Whole("bank", 1));
  s_->Schedule();
  EXPECT_TRUE(Placed(k));
}

TEST_F(SchedulerTest, DedicatedTenantRunsOnlyInItsOwnPools) {
  const TenantId bank = AddTenant("bank", Isolation::kDedicated);
  AddPool("general");
  AddNode(MakeNode("g1", "general", 8));
  const JobId j = Submit(Whole("bank", 1));
  s_->Schedule();
  EXPECT_EQ(Job(j).state, JobState::kQueued);
  EXPECT_NE(Job(j).reason.find("dedicated"), std::string::npos) << Job(j).reason;
  const PoolId vault = AddPool("vault", {bank});
  (void)vault;
  const NodeId v1 = AddNode(MakeNode("v1", "vault", 2));
  s_->Schedule();
  ASSERT_TRUE(Placed(j));
  EXPECT_EQ(Job(j).node, v1);
}

TEST_F(SchedulerTest, RededicatingAPoolRequeuesTheTenantsNoLongerAllowed) {
  const TenantId a = AddTenant("a", Isolation::kMig);
  const TenantId b = AddTenant("b", Isolation::kMig);
  const PoolId p = AddPool("p");
  AddNode(MakeNode("n1", "p", 2));
  const JobId ja = Submit(Whole("a", 1));
  const JobId jb = Submit(Whole("b", 1));
  s_->Schedule();
  ASSERT_TRUE(Placed(ja) && Placed(jb));
  ASSERT_TRUE(s_->SetPoolDedication(p, {a}).ok());
  EXPECT_TRUE(Placed(ja));
  EXPECT_EQ(Job(jb).state, JobState::kQueued);
  EXPECT_NE(Job(jb).reason.find("no longer open"), std::string::npos) << Job(jb).reason;
  (void)b;
}

TEST_F(SchedulerTest, AReservedPoolWithNoTenantLeftRunsNoOnesJobs) {
  const TenantId a = AddTenant("a", Isolation::kMig);
  AddTenant("b", Isolation::kMig);
  const PoolId p = AddPool("p", {a});
  const NodeId n = AddNode(MakeNode("n1", "p", 1));
  const JobId ja = Submit(Whole("a", 1));
  s_->Schedule();
  ASSERT_TRUE(Placed(ja));
  // Every tenant it was dedicated to is gone: it stays apart, so a's job leaves and b's waits.
  ASSERT_TRUE(s_->SetPoolDedication(p, {}, /*reserved=*/true).ok());
  EXPECT_EQ(Job(ja).state, JobState::kQueued);
  const JobId jb = Submit(Whole("b", 1));
  s_->Schedule();
  EXPECT_EQ(Job(jb).state, JobState::kQueued);
  auto named = s_->Submit([&] {
    JobSpec spec = Whole("b", 1);
    spec.pool = "p";
    return spec;
  }());
  EXPECT_EQ(named.status().code(), absl::StatusCode::kPermissionDenied) << named.status();
  // Made general again: b's job runs there once the GPU a's job left is verified clean (a's
  // job, no longer wanted, is cancelled so that b's is the only one waiting).
  ASSERT_TRUE(s_->Cancel(ja).ok());
  ASSERT_TRUE(s_->SetPoolDedication(p, {}).ok());
  ASSERT_TRUE(s_->ReportGpuVerification(n, 0, true).ok());
  s_->Schedule();
  EXPECT_TRUE(Placed(jb));
}

// ---- invariant 3: verification before a GPU changes tenant ----------------------------------

TEST_F(SchedulerTest, AFreedGpuGoesToAnotherTenantOnlyAfterVerification) {
  AddTenant("a", Isolation::kMig);
  AddTenant("b", Isolation::kMig);
  AddPool("general");
  const NodeId n = AddNode(MakeNode("n1", "general", 1));
  const JobId a = Submit(Whole("a", 1));
  s_->Schedule();
  ASSERT_TRUE(s_->Finish(a, true).ok());
  const JobId b = Submit(Whole("b", 1));
  s_->Schedule();
  EXPECT_EQ(Job(b).state, JobState::kQueued);
  ASSERT_TRUE(s_->ReportGpuVerification(n, 0, false).ok());  // scrub failed: quarantined
  s_->Schedule();
  EXPECT_EQ(Job(b).state, JobState::kQueued);
  ASSERT_TRUE(s_->ReportGpuVerification(n, 0, true).ok());
  s_->Schedule();
  EXPECT_TRUE(Placed(b));
}

TEST_F(SchedulerTest, FreedMigSlicesAwaitVerificationButTheRestOfTheGpuStaysUsable) {
  AddTenant("a", Isolation::kMig);
  AddPool("general");
  const NodeId n = AddNode(MakeNode("n1", "general", 1, true));
  const JobId j1 = Submit(Mig("a", "3g.40gb"));
  s_->Schedule();
  ASSERT_TRUE(Placed(j1));
  const int start = Job(j1).gpus[0].mig_start;
  ASSERT_TRUE(s_->Finish(j1, true).ok());
  const JobId j2 = Submit(Mig("a", "3g.40gb"));
  s_->Schedule();
  ASSERT_TRUE(Placed(j2));
  EXPECT_NE(Job(j2).gpus[0].mig_start, start);  // the other half, not the unverified one
  ASSERT_TRUE(s_->ReportGpuVerification(n, 0, true).ok());
  const JobId j3 = Submit(Mig("a", "3g.40gb"));
  s_->Schedule();
  EXPECT_TRUE(Placed(j3));
}

// ---- invariant 4: quotas ----------------------------------------------------------------------

TEST_F(SchedulerTest, AttackJobOverQuotaIsRefusedOrWaits) {
  TenantSpec t = Tenant("acme", Isolation::kMig);
  t.quota.gpu_millis = 4000;
  t.quota.mig_slices = 3;
  ASSERT_TRUE(s_->AddTenant(t).ok());
  AddPool("general");
  AddNode(MakeNode("n1", "general", 8));
  AddNode(MakeNode("m1", "general", 1, true));
  auto big = s_->Submit(Whole("acme", 5));
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(big.status().message()).find("gpus 5.000 > 4.000"), std::string::npos);
  auto mig = s_->Submit(Mig("acme", "4g.40gb"));
  ASSERT_FALSE(mig.ok());
  EXPECT_NE(std::string(mig.status().message()).find("MIG slices 4 > 3"), std::string::npos);
  const JobId a = Submit(Whole("acme", 3));
  const JobId b = Submit(Whole("acme", 2));
  s_->Schedule();
  EXPECT_TRUE(Placed(a));
  EXPECT_EQ(Job(b).state, JobState::kQueued);
  EXPECT_NE(Job(b).reason.find("waiting for quota"), std::string::npos) << Job(b).reason;
  ASSERT_TRUE(s_->Finish(a, true).ok());
  s_->Schedule();
  EXPECT_TRUE(Placed(b));
}

TEST_F(SchedulerTest, LoweringAQuotaKeepsRunningJobsAndQueuesNewOnes) {
  const TenantId t = AddTenant("acme", Isolation::kMig);
  AddPool("general");
  AddNode(MakeNode("n1", "general", 8));
  const JobId a = Submit(Whole("acme", 2, "a"));
  const JobId b = Submit(Whole("acme", 2, "b"));
  const JobId c = Submit(Whole("acme", 2, "c"));
  InvariantChecker checker;
  s_->Schedule();
  ASSERT_TRUE(checker.Check(s_->state()).empty());
  ASSERT_TRUE(s_->MarkRunning(a).ok());
  Resources q = Resources::Unlimited();
  q.gpu_millis = 2000;  // usage is 6.000
  ASSERT_TRUE(s_->SetTenantQuota(t, q).ok());
  EXPECT_EQ(Job(a).state, JobState::kRunning);
  EXPECT_TRUE(Placed(b));
  EXPECT_TRUE(Placed(c));
  const JobId d = Submit(Whole("acme", 1, "d"));
  s_->Schedule();
  EXPECT_EQ(Job(d).state, JobState::kQueued);
  EXPECT_NE(Job(d).reason.find("waiting for quota"), std::string::npos) << Job(d).reason;
  auto v = checker.Check(s_->state());
  EXPECT_TRUE(v.empty()) << FormatViolations(v);
  // Usage falls to 2.000 when b and c end: still no room for d (2 + 1 > 2).
  ASSERT_TRUE(s_->Finish(b, true).ok());
  ASSERT_TRUE(s_->Finish(c, true).ok());
  VerifyAll();
  s_->Schedule();
  EXPECT_EQ(Job(d).state, JobState::kQueued);
  ASSERT_TRUE(s_->Finish(a, true).ok());
  VerifyAll();
  s_->Schedule();
  EXPECT_TRUE(Placed(d));
  v = checker.Check(s_->state());
  EXPECT_TRUE(v.empty()) << FormatViolations(v);
}

// ---- MIG: NVIDIA's placement rules through the scheduler ------------------------------------

class MigPlacementTest : public SchedulerTest {
 protected:
  void SetUp() override {
    SchedulerTest::SetUp();
    AddTenant("acme", Isolation::kMig);
    AddPool("general");
    node_ = AddNode(MakeNode("n1", "general", 1, true));
  }
  // Submits the profiles in order, one pass each; returns the jobs.
  std::vector<JobId> PlaceEach(const std::vector<std::string>& profiles) {
    std::vector<JobId> out;
    for (const auto& p : profiles) {
      out.push_back(Submit(Mig("acme", p)));
      s_->Schedule();
    }
    return out;
  }
  NodeId node_ = 0;
};

TEST_F(MigPlacementTest, FourGOnlyAtSliceZero) {
  auto j = PlaceEach({"1g.10gb", "4g.40gb"});
  ASSERT_TRUE(Placed(j[0]));
  // The 1g took slice 0 (the chooser packs from the bottom), so the only 4g start is taken.
  EXPECT_EQ(Job(j[0]).gpus[0].mig_start, 0);
  EXPECT_EQ(Job(j[1]).state, JobState::kQueued);
  EXPECT_NE(Job(j[1]).reason.find("no free start among 0"), std::string::npos) << Job(j[1]).reason;
  ASSERT_TRUE(s_->Cancel(j[0]).ok());
  ASSERT_TRUE(s_->ReportGpuVerification(node_, 0, true).ok());
  s_->Schedule();
  ASSERT_TRUE(Placed(j[1]));
  EXPECT_EQ(Job(j[1]).gpus[0].mig_start, 0);
}

TEST_F(MigPlacementTest, ThreeGAtZeroOrFour) {
  auto j = PlaceEach({"3g.40gb", "3g.40gb", "3g.40gb"});
  ASSERT_TRUE(Placed(j[0]) && Placed(j[1]));
  std::set<int> starts = {Job(j[0]).gpus[0].mig_start, Job(j[1]).gpus[0].mig_start};
  EXPECT_EQ(starts, (std::set<int>{0, 4}));
  EXPECT_EQ(Job(j[2]).state, JobState::kQueued);
}

TEST_F(MigPlacementTest, SevenOneGLeaveSliceSevenEmpty) {
  std::vector<std::string> p(8, "1g.10gb");
  auto j = PlaceEach(p);
  std::set<int> starts;
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(Placed(j[i])) << i;
    starts.insert(Job(j[i]).gpus[0].mig_start);
  }
  EXPECT_EQ(starts, (std::set<int>{0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(Job(j[7]).state, JobState::kQueued);
  EXPECT_NE(Job(j[7]).reason.find("at most 7 per GPU"), std::string::npos) << Job(j[7]).reason;
}

TEST_F(MigPlacementTest, OneMediaExtensionInstancePerGpu) {
  auto j = PlaceEach({"1g.10gb+me", "1g.10gb+me"});
  ASSERT_TRUE(Placed(j[0]));
  EXPECT_EQ(Job(j[1]).state, JobState::kQueued);
  // NVIDIA: profile 20 (+me) has max 1 instance per GPU.
  EXPECT_NE(Job(j[1]).reason.find("1g.10gb+me (profile 20): at most 1 per GPU"), std::string::npos)
      << Job(j[1]).reason;
  // A plain 1g still fits beside it.
  const JobId plain = Submit(Mig("acme", "1g.10gb"));
  s_->Schedule();
  EXPECT_TRUE(Placed(plain));
}

TEST_F(MigPlacementTest, ARequestThatCannotFitStaysQueuedWithNvidiasReason) {
  auto j = PlaceEach({"4g.40gb", "4g.40gb"});
  ASSERT_TRUE(Placed(j[0]));
  EXPECT_EQ(Job(j[1]).state, JobState::kQueued);
  EXPECT_NE(Job(j[1]).reason.find("4g.40gb"), std::string::npos) << Job(j[1]).reason;
  EXPECT_NE(Job(j[1]).reason.find("at most 1 per GPU"), std::string::npos) << Job(j[1]).reason;
}

TEST_F(SchedulerTest, PlansMigModeOnlyOnIdleGpus) {
  AddTenant("acme", Isolation::kMig);
  AddPool("general");
  const NodeId n = AddNode(MakeNode("n1", "general", 2));
  const JobId w = Submit(Whole("acme", 1));
  s_->Schedule();
  ASSERT_TRUE(Placed(w));
  const JobId m = Submit(Mig("acme", "2g.20gb"));
  auto r = s_->Schedule();
  ASSERT_TRUE(Placed(m));
  ASSERT_EQ(r.mig_changes.size(), 1u);
  EXPECT_EQ(r.mig_changes[0].node, n);
  EXPECT_TRUE(r.mig_changes[0].enable);
  EXPECT_NE(r.mig_changes[0].gpu, Job(w).gpus[0].gpu);  // never the busy GPU
  // Operator re-partition of a GPU with work is refused.
  auto busy = s_->SetMigMode(n, Job(w).gpus[0].gpu, true);
  EXPECT_EQ(busy.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s_->SetMigMode(n, Job(m).gpus[0].gpu, false).code(),
            absl::StatusCode::kFailedPrecondition);
  // Once idle (and verified) it can go back to whole-GPU mode for a whole-GPU job.
  ASSERT_TRUE(s_->Finish(m, true).ok());
  ASSERT_TRUE(s_->ReportGpuVerification(n, Job(m).gpus.empty() ? 1 : Job(m).gpus[0].gpu, true).ok());
  VerifyAll();
  const JobId w2 = Submit(Whole("acme", 1));
  auto r2 = s_->Schedule();
  ASSERT_TRUE(Placed(w2));
  ASSERT_EQ(r2.mig_changes.size(), 1u);
  EXPECT_FALSE(r2.mig_changes[0].enable);
}

// Issue 6: the server runs the scheduler with plan_mig_mode_changes = false, because gpuwarden
// never changes MIG mode. A MIG job then goes only to a GPU whose MIG mode is already on, and a
// whole-GPU job never to a GPU in MIG mode.
TEST(SchedulerNoMigModeChangeTest, MigJobsOnlyOnGpusAlreadyInMigMode) {
  Scheduler::Options o;
  o.plan_mig_mode_changes = false;
  auto s = std::move(Scheduler::Create(o).value());
  ASSERT_TRUE(s->AddTenant(Tenant("acme", Isolation::kMig)).ok());
  ASSERT_TRUE(s->AddPool({"general", {}}).ok());
  const NodeId off = s->AddNode(MakeNode("off", "general", 2, /*mig=*/false)).value();
  const JobId m = s->Submit(Mig("acme", "1g.10gb")).value();
  auto r = s->Schedule();
  EXPECT_TRUE(r.mig_changes.empty());
  EXPECT_EQ(s->FindJob(m)->state, JobState::kQueued);
  EXPECT_FALSE(s->FindJob(m)->reason.empty());
  for (const GpuState& g : s->state().nodes[off].gpus) EXPECT_FALSE(g.mig_enabled);
  // A GPU already in MIG mode takes it; a whole-GPU job is not put on that GPU.
  const NodeId on = s->AddNode(MakeNode("on", "general", 1, /*mig=*/true)).value();
  const JobId w = s->Submit(Whole("acme", 1)).value();
  r = s->Schedule();
  EXPECT_TRUE(r.mig_changes.empty());
  ASSERT_EQ(s->FindJob(m)->state, JobState::kPlaced);
  EXPECT_EQ(s->FindJob(m)->node, on);
  ASSERT_EQ(s->FindJob(w)->state, JobState::kPlaced);
  EXPECT_EQ(s->FindJob(w)->node, off);
  ExpectSound(*s);
}

// ---- fair share and priorities ---------------------------------------------------------------

TEST_F(SchedulerTest, WeightedDominantResourceFairnessSplitsGpus) {
  AddTenant("a", Isolation::kMig, 3.0);
  AddTenant("b", Isolation::kMig, 1.0);
  AddPool("general");
  AddNode(MakeNode("n1", "general", 8));
  for (int i = 0; i < 10; ++i) {
    Submit(Whole("a", 1));
    Submit(Whole("b", 1));
  }
  s_->Schedule();
  std::map<TenantId, int> gpus;
  for (const auto& [id, j] : s_->state().jobs) {
    if (j.state == JobState::kPlaced) gpus[j.tenant] += static_cast<int>(j.gpus.size());
  }
  EXPECT_EQ(gpus[1], 6);
  EXPECT_EQ(gpus[2], 2);
}

TEST_F(SchedulerTest, HigherPriorityFirstWithinATenant) {
  AddTenant("a", Isolation::kMig);
  AddPool("general");
  AddNode(MakeNode("n1", "general", 1));
  const JobId low = Submit(Whole("a", 1, "low"));
  JobSpec hs = Whole("a", 1, "high");
  hs.priority = 5;
  const JobId high = Submit(hs);
  s_->Schedule();
  EXPECT_TRUE(Placed(high));
  EXPECT_EQ(Job(low).state, JobState::kQueued);
}

// ---- node events ------------------------------------------------------------------------------

TEST_F(SchedulerTest, NodeLossRequeuesItsJobsAndItsGpusNeedVerification) {
  AddTenant("a", Isolation::kMig);
  AddPool("general");
  const NodeId n1 = AddNode(MakeNode("n1", "general", 2));
  const JobId j = Submit(Whole("a", 2));
  s_->Schedule();
  ASSERT_TRUE(Placed(j));
  ASSERT_TRUE(s_->SetNodeReachable(n1, false).ok());
  EXPECT_EQ(Job(j).state, JobState::kQueued);
  EXPECT_NE(Job(j).reason.find("unreachable"), std::string::npos);
  ASSERT_TRUE(s_->SetNodeReachable(n1, true).ok());
  s_->Schedule();
  EXPECT_EQ(Job(j).state, JobState::kQueued);  // GPUs not verified yet
  VerifyAll();
  s_->Schedule();
  EXPECT_TRUE(Placed(j));
  const NodeId n2 = AddNode(MakeNode("n2", "general", 2));
  ASSERT_TRUE(s_->RemoveNode(n1).ok());
  s_->Schedule();
  ASSERT_TRUE(Placed(j));
  EXPECT_EQ(Job(j).node, n2);
}

TEST_F(SchedulerTest, CordonDrainAndPatchPolicyKeepNewJobsOff) {
  AddTenant("a", Isolation::kMig);
  AddPool("general");
  const NodeId n = AddNode(MakeNode("n1", "general", 4));
  const JobId j1 = Submit(Whole("a", 1));
  s_->Schedule();
  ASSERT_TRUE(s_->Cordon(n).ok());
  const JobId j2 = Submit(Whole("a", 1));
  s_->Schedule();
  EXPECT_TRUE(Placed(j1));
  EXPECT_EQ(Job(j2).state, JobState::kQueued);
  ASSERT_TRUE(s_->Uncordon(n).ok());
  ASSERT_TRUE(s_->SetPatchCompliant(n, false).ok());
  s_->Schedule();
  EXPECT_EQ(Job(j2).state, JobState::kQueued);
  ASSERT_TRUE(s_->SetPatchCompliant(n, true).ok());
  s_->Schedule();
  EXPECT_TRUE(Placed(j2));
  ASSERT_TRUE(s_->Drain(n).ok());
  EXPECT_EQ(Job(j1).state, JobState::kQueued);
  EXPECT_EQ(Job(j2).state, JobState::kQueued);
  EXPECT_NE(Job(j1).reason.find("drained"), std::string::npos);
}

TEST_F(SchedulerTest, StrongerPolicyRequeuesJobsItForbids) {
  const TenantId a = AddTenant("a", Isolation::kShared);
  AddTenant("b", Isolation::kMig);
  AddPool("general");
  AddNode(MakeNode("n1", "general", 1, true));
  AddNode(MakeNode("n2", "general", 1));
  const JobId am = Submit(Mig("a", "3g.40gb"));
  const JobId bm = Submit(Mig("b", "3g.40gb"));
  const JobId af = Submit(Fraction("a", 500));
  s_->Schedule();
  ASSERT_TRUE(Placed(am) && Placed(bm) && Placed(af));
  ASSERT_TRUE(s_->SetTenantPolicy(a, Isolation::kExclusive).ok());
  EXPECT_EQ(Job(am).state, JobState::kQueued);
  EXPECT_NE(Job(am).reason.find("another tenant"), std::string::npos) << Job(am).reason;
  EXPECT_EQ(Job(af).state, JobState::kQueued);
  EXPECT_NE(Job(af).reason.find("needs isolation shared"), std::string::npos) << Job(af).reason;
  EXPECT_TRUE(Placed(bm));
}

TEST_F(SchedulerTest, CancelAndFinishFollowTheStateMachine) {
  AddTenant("a", Isolation::kMig);
  AddPool("general");
  AddNode(MakeNode("n1", "general", 1));
  const JobId j = Submit(Whole("a", 1));
  EXPECT_EQ(s_->MarkRunning(j).code(), absl::StatusCode::kFailedPrecondition);
  s_->Schedule();
  ASSERT_TRUE(s_->MarkRunning(j).ok());
  EXPECT_EQ(Job(j).state, JobState::kRunning);
  ASSERT_TRUE(s_->Finish(j, false).ok());
  EXPECT_EQ(Job(j).state, JobState::kFailed);
  EXPECT_EQ(s_->Cancel(j).code(), absl::StatusCode::kFailedPrecondition);
  const JobId q = Submit(Whole("a", 1));
  ASSERT_TRUE(s_->Cancel(q).ok());
  EXPECT_EQ(Job(q).state, JobState::kCancelled);
  EXPECT_EQ(s_->queued_jobs(), 0u);
  EXPECT_EQ(s_->Cancel(999).code(), absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, SelectorsTaintsAndModels) {
  AddTenant("a", Isolation::kMig);
  AddPool("general");
  NodeSpec tainted = MakeNode("t1", "general", 2, false, "H200-141GB");
  tainted.taints = {{"reserved", "infer"}};
  tainted.labels = {{"zone", "b"}};
  AddNode(tainted);
  NodeSpec plain = MakeNode("p1", "general", 2);
  plain.labels = {{"zone", "a"}};
  AddNode(plain);
  JobSpec zb = Whole("a", 1);
  zb.node_selector = {{"zone", "b"}};
  const JobId j1 = Submit(zb);
  s_->Schedule();
  EXPECT_EQ(Job(j1).state, JobState::kQueued);
  EXPECT_NE(Job(j1).reason.find("taint"), std::string::npos) << Job(j1).reason;
  ASSERT_TRUE(s_->Cancel(j1).ok());
  zb.tolerations = {{"reserved", ""}};
  const JobId j2 = Submit(zb);
  JobSpec h200 = Whole("a", 1);
  h200.gpu_model = "H200-141GB";
  const JobId j3 = Submit(h200);
  JobSpec zc = Whole("a", 1);
  zc.node_selector = {{"zone", "c"}};
  const JobId j4 = Submit(zc);
  s_->Schedule();
  EXPECT_TRUE(Placed(j2));
  EXPECT_EQ(Job(j3).state, JobState::kQueued);  // the H200 node is tainted
  EXPECT_NE(Job(j4).reason.find("labels"), std::string::npos) << Job(j4).reason;
}

TEST_F(SchedulerTest, RefusesBadNodesAndUnknownNames) {
  AddTenant("a", Isolation::kMig);
  AddPool("general");
  NodeSpec mixed = MakeNode("m", "general", 1);
  mixed.gpus.push_back({"x", "H200-141GB", false});
  EXPECT_EQ(s_->AddNode(mixed).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s_->AddNode(MakeNode("l", "general", 1, true, "L40S-48GB")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s_->AddNode(MakeNode("n", "nopool", 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s_->Submit(Whole("nobody", 1)).status().code(), absl::StatusCode::kNotFound);
  JobSpec p = Whole("a", 1);
  p.pool = "nopool";
  EXPECT_EQ(s_->Submit(p).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s_->AddTenant(Tenant("a", Isolation::kMig)).status().code(),
            absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace warden::sched

namespace warden::sched {
namespace {

// The probe bound is a deliberate trade (bounded decision time): a refusal caused by it says so.
TEST(SchedulerProbeTest, AStopAtTheProbeBoundIsStatedInTheReason) {
  Scheduler::Options o;
  o.probe_limit = 1;
  auto s = std::move(Scheduler::Create(o).value());
  ASSERT_TRUE(s->AddTenant(testing::Tenant("a", Isolation::kMig)).ok());
  ASSERT_TRUE(s->AddPool({"general", {}}).ok());
  // Same free GPUs and CPU: index order is by node id, so the small one is probed first.
  ASSERT_TRUE(s->AddNode(testing::MakeNode("small", "general", 1, false, "H100-80GB", 8000, 1024)).ok());
  ASSERT_TRUE(s->AddNode(testing::MakeNode("big", "general", 1, false, "H100-80GB", 8000, 65536)).ok());
  JobSpec spec = testing::Whole("a", 1);
  spec.memory_mib = 4096;
  const JobId j = s->Submit(spec).value();
  s->Schedule();
  EXPECT_EQ(s->FindJob(j)->state, JobState::kQueued);
  EXPECT_NE(s->FindJob(j)->reason.find("searched the best 1 candidates"), std::string::npos)
      << s->FindJob(j)->reason;
  EXPECT_EQ(Scheduler::Create(Scheduler::Options{.probe_limit = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace warden::sched
