// JobService, tenant policy half (job_policy.cc), against a real SQLite store and the real
// scheduler with its stateful invariant checker after every step: policies stored and applied
// live and after a restart; a tenant admin may only tighten (attacks); a quota lowered under
// running jobs; isolation tightened under running jobs; live node taints and labels; gauges.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/metrics.h"
#include "job_fixture.h"

namespace warden::server {
namespace {

using common::Json;

class JobPolicyTest : public testing::JobServiceFixture {
 protected:
  // What `node taint` / `node label` store (cluster::Cluster::UpdateTaints / UpdateLabels).
  void SetNodeMeta(const std::string& id, const std::string& labels, const std::string& taints) {
    auto n = store_->GetNode(id);
    ASSERT_TRUE(n.ok());
    n->labels_json = labels;
    n->taints_json = taints;
    ASSERT_TRUE(store_->UpdateNode(*n).ok());
  }

  sched::TenantPolicy Policy(sched::Isolation iso, int64_t gpu_millis) {
    sched::TenantPolicy p;
    p.isolation = iso;
    p.quota.gpu_millis = gpu_millis;
    return p;
  }
};

TEST_F(JobPolicyTest, PolicyIsStoredAppliedAndSurvivesARestart) {
  auto fresh = jobs_->GetTenantPolicy("acme");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->isolation, sched::Isolation::kMig);
  EXPECT_EQ(fresh->quota, sched::Resources::Unlimited());
  const sched::TenantPolicy p = Policy(sched::Isolation::kExclusive, 3000);
  ASSERT_TRUE(jobs_->SetTenantPolicy("ten_a", "acme", p, "usr_admin", false).ok());
  EXPECT_EQ(*jobs_->GetTenantPolicy("acme"), p);
  auto rows = store_->ListTenantPolicies();
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].tenant_id, "ten_a");
  EXPECT_EQ((*rows)[0].updated_by, "usr_admin");
  Restart();
  EXPECT_EQ(*jobs_->GetTenantPolicy("acme"), p);
  EXPECT_EQ(jobs_->GetTenantPolicy("beta")->isolation, sched::Isolation::kMig);
  // The restarted scheduler enforces it: a job over the quota on its own is refused.
  auto over = jobs_->Submit("ten_a", "acme", R"({"name":"big","gpus":4,"command":["true"]})",
                            "usr_1");
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted) << over.status();
}

TEST_F(JobPolicyTest, AttackTenantAdminCannotWeakenOrRaiseItsOwnPolicy) {
  ASSERT_TRUE(jobs_->SetTenantPolicy("ten_a", "acme", Policy(sched::Isolation::kExclusive, 4000),
                                     "usr_admin", false)
                  .ok());
  // Weaker isolation: refused.
  auto weaker = jobs_->SetTenantPolicy("ten_a", "acme", Policy(sched::Isolation::kShared, 4000),
                                       "usr_ta", true);
  EXPECT_EQ(weaker.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(std::string(weaker.status().message()).find("isolation shared is weaker"),
            std::string::npos)
      << weaker.status();
  // A larger quota: refused, and so is an unlimited one (a field left out).
  auto raised = jobs_->SetTenantPolicy("ten_a", "acme", Policy(sched::Isolation::kExclusive, 5000),
                                       "usr_ta", true);
  EXPECT_EQ(raised.status().code(), absl::StatusCode::kPermissionDenied);
  auto unlimited = jobs_->SetTenantPolicy(
      "ten_a", "acme", Policy(sched::Isolation::kExclusive, sched::Resources::kUnlimited),
      "usr_ta", true);
  EXPECT_EQ(unlimited.status().code(), absl::StatusCode::kPermissionDenied);
  // Nothing of the refused changes was stored or applied.
  EXPECT_EQ(*jobs_->GetTenantPolicy("acme"), Policy(sched::Isolation::kExclusive, 4000));
  Restart();
  EXPECT_EQ(*jobs_->GetTenantPolicy("acme"), Policy(sched::Isolation::kExclusive, 4000));
  // Stricter is allowed: dedicated, 2 GPUs, at most 3 jobs.
  sched::TenantPolicy stricter = Policy(sched::Isolation::kDedicated, 2000);
  stricter.quota.running_jobs = 3;
  ASSERT_TRUE(jobs_->SetTenantPolicy("ten_a", "acme", stricter, "usr_ta", true).ok());
  EXPECT_EQ(*jobs_->GetTenantPolicy("acme"), stricter);
  // A cluster admin may loosen it again.
  ASSERT_TRUE(jobs_->SetTenantPolicy("ten_a", "acme", Policy(sched::Isolation::kShared, 8000),
                                     "usr_admin", false)
                  .ok());
}

TEST_F(JobPolicyTest, LoweringAQuotaKeepsRunningJobsAndQueuesNewOnes) {
  AddNode("nod_1", "n1", 4);
  store::Job a = Submit("ten_a", "acme", R"({"name":"a","gpus":1,"command":["sleep","9"]})");
  store::Job b = Submit("ten_a", "acme", R"({"name":"b","gpus":1,"command":["sleep","9"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  Sync("nod_1", {{a.id, "running"}, {b.id, "running"}});
  ASSERT_EQ(Stored(a.id).state, "running");
  ASSERT_TRUE(jobs_->SetTenantPolicy("ten_a", "acme", Policy(sched::Isolation::kMig, 1000),
                                     "usr_admin", false)
                  .ok());
  store::Job c = Submit("ten_a", "acme", R"({"name":"c","gpus":1,"command":["true"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  EXPECT_EQ(Stored(a.id).state, "running");
  EXPECT_EQ(Stored(b.id).state, "running");
  EXPECT_EQ(Sync("nod_1").size(), 2u);  // the agent keeps both
  EXPECT_EQ(Stored(c.id).state, "queued");
  EXPECT_NE(Stored(c.id).reason.find("waiting for quota"), std::string::npos)
      << Stored(c.id).reason;
  EXPECT_EQ(jobs_->TenantUsage("acme")->gpu_millis, 2000);
  // The other tenant is not affected.
  store::Job other = Submit("ten_b", "beta", R"({"name":"o","gpus":1,"command":["true"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  EXPECT_EQ(Stored(other.id).state, "placed");
  // Gauges: usage over quota is visible.
  const std::string text = common::metrics::Registry::Default().RenderText();
  EXPECT_NE(text.find("warden_tenant_usage{tenant=\"acme\",resource=\"gpu_millis\"} 2000"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("warden_tenant_quota{tenant=\"acme\",resource=\"gpu_millis\"} 1000"),
            std::string::npos);
  EXPECT_NE(text.find("warden_tenant_quota{tenant=\"beta\",resource=\"gpu_millis\"} +Inf"),
            std::string::npos);
}

TEST_F(JobPolicyTest, TighteningIsolationStopsTheRunningJobsItForbids) {
  AddNode("nod_1", "n1", 2);
  ASSERT_TRUE(jobs_->SetTenantPolicy("ten_a", "acme", Policy(sched::Isolation::kShared,
                                                             sched::Resources::kUnlimited),
                                     "usr_admin", false)
                  .ok());
  store::Job f =
      Submit("ten_a", "acme", R"({"name":"f","gpu_fraction":0.5,"command":["sleep","9"]})");
  store::Job w = Submit("ten_a", "acme", R"({"name":"w","gpus":1,"command":["sleep","9"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  Sync("nod_1", {{f.id, "running"}, {w.id, "running"}});
  ASSERT_EQ(Stored(f.id).state, "running");
  // The tenant admin tightens to exclusive: the time-sliced job no longer complies.
  ASSERT_TRUE(jobs_->SetTenantPolicy("ten_a", "acme", Policy(sched::Isolation::kExclusive,
                                                             sched::Resources::kUnlimited),
                                     "usr_ta", true)
                  .ok());
  EXPECT_EQ(Stored(f.id).state, "queued");
  EXPECT_NE(Stored(f.id).reason.find("fraction"), std::string::npos) << Stored(f.id).reason;
  EXPECT_EQ(Stored(w.id).state, "running");
  Json assigned = Sync("nod_1");  // the agent is told to keep only w: it stops f
  ASSERT_EQ(assigned.size(), 1u);
  EXPECT_EQ(assigned[0]["id"], w.id);
  ASSERT_TRUE(jobs_->Tick().ok());
  EXPECT_EQ(Stored(f.id).state, "queued");  // no new placement violates the policy
}

TEST_F(JobPolicyTest, NodeTaintsAndLabelsReachTheSchedulerWithoutARestart) {
  AddNode("nod_1", "n1", 2);
  AddNode("nod_2", "n2", 2);
  ASSERT_TRUE(jobs_->Tick().ok());
  SetNodeMeta("nod_1", "{}", R"([{"key":"maint","value":"","effect":"NoSchedule"}])");
  ASSERT_TRUE(jobs_->Tick().ok());
  std::vector<store::Job> js;
  for (int i = 0; i < 2; ++i) {
    js.push_back(Submit("ten_a", "acme", R"({"name":"a","gpus":1,"command":["true"]})"));
  }
  store::Job waits = Submit("ten_a", "acme", R"({"name":"w","gpus":1,"command":["true"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  for (const auto& j : js) EXPECT_EQ(Stored(j.id).node_id, "nod_2");
  EXPECT_EQ(Stored(waits.id).state, "queued");  // n2 is full and n1 is tainted
  // Taint removed: the waiting job lands on n1 at the next round.
  SetNodeMeta("nod_1", "{}", "[]");
  ASSERT_TRUE(jobs_->Tick().ok());
  EXPECT_EQ(Stored(waits.id).node_id, "nod_1");
  // A label-selected job follows the label: none has it, then n1 gets it.
  store::Job sel = Submit("ten_b", "beta",
                          R"({"name":"s","gpus":1,"node_selector":{"zone":"b"},"command":["true"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  EXPECT_EQ(Stored(sel.id).state, "queued");
  SetNodeMeta("nod_1", R"({"zone":"b"})", "[]");
  ASSERT_TRUE(jobs_->Tick().ok());
  EXPECT_EQ(Stored(sel.id).state, "placed");
  EXPECT_EQ(Stored(sel.id).node_id, "nod_1");
  // NoExecute: jobs that do not tolerate it are requeued (their agent stops them).
  Sync("nod_1", {{waits.id, "running"}});
  SetNodeMeta("nod_1", R"({"zone":"b"})", R"([{"key":"fault","value":"","effect":"NoExecute"}])");
  ASSERT_TRUE(jobs_->Tick().ok());
  // (The round's pass then tries them again, so their reason is now why they still wait.)
  EXPECT_EQ(Stored(waits.id).state, "queued");
  EXPECT_EQ(Stored(sel.id).state, "queued");
  EXPECT_TRUE(Sync("nod_1").empty());
}

// Pools dedicated to tenants (migration 8): stored, applied at once (another tenant's running
// job leaves, its agent is told to stop it), enforced on submit, kept across a restart, undone.
TEST_F(JobPolicyTest, PoolDedicationIsStoredAppliedAndSurvivesARestart) {
  AddNode("nod_1", "n1", 1, "gold");
  ASSERT_TRUE(jobs_->Tick().ok());
  store::Job b = Submit("ten_b", "beta", R"({"name":"b","gpus":1,"command":["sleep","9"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  Sync("nod_1", {{b.id, "running"}});
  ASSERT_EQ(Stored(b.id).state, "running");
  AgentGpuReport clean;  // what the agent reports once the freed GPU is scrubbed and checked
  clean.clean = {Json::parse(Stored(b.id).assignment_json)[0]["uuid"].get<std::string>()};

  // An unknown tenant refuses the whole change; nothing is stored.
  auto bad = jobs_->SetPoolDedication("gold", {"acme", "nosuch"}, "usr_admin");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kNotFound) << bad.status();
  EXPECT_NE(std::string(bad.status().message()).find("nosuch"), std::string::npos);
  EXPECT_TRUE(store_->ListPoolDedications()->empty());

  store::Job pinned =
      Submit("ten_b", "beta", R"({"name":"p","gpus":1,"pool":"gold","command":["true"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  ASSERT_EQ(Stored(pinned.id).state, "queued");  // the pool's one GPU is busy

  auto set = jobs_->SetPoolDedication("gold", {"acme", "acme"}, "usr_admin");
  ASSERT_TRUE(set.ok()) << set.status();
  // A job that named the pool can never run there now: it ends, with the reason.
  EXPECT_EQ(Stored(pinned.id).state, "failed");
  EXPECT_NE(Stored(pinned.id).reason.find("pool gold was dedicated to other tenants"),
            std::string::npos)
      << Stored(pinned.id).reason;
  EXPECT_EQ(set->dedicated_to, std::vector<std::string>{"acme"});
  EXPECT_EQ(set->nodes, 1);
  EXPECT_EQ(Stored(b.id).state, "queued");  // beta's job leaves the pool at once
  EXPECT_TRUE(Sync("nod_1").empty());       // and its agent is told to stop it
  auto rows = store_->ListPoolDedications();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].tenant_ids_json, R"(["ten_a"])");
  EXPECT_EQ((*rows)[0].updated_by, "usr_admin");

  // Attack: beta naming the pool is refused; without naming it, beta's jobs never land there.
  auto named = jobs_->Submit("ten_b", "beta",
                             R"({"name":"x","gpus":1,"pool":"gold","command":["true"]})", "usr_1");
  EXPECT_EQ(named.status().code(), absl::StatusCode::kPermissionDenied) << named.status();
  ASSERT_TRUE(jobs_->Tick().ok());
  EXPECT_EQ(Stored(b.id).state, "queued");
  Sync("nod_1", {}, clean);  // the GPU beta left is clean: acme may have it
  store::Job a = Submit("ten_a", "acme", R"({"name":"a","gpus":1,"command":["true"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  EXPECT_EQ(Stored(a.id).node_id, "nod_1");

  // Kept across a restart (loaded before the nodes and jobs come back).
  Restart();
  auto again = jobs_->Submit("ten_b", "beta",
                             R"({"name":"y","gpus":1,"pool":"gold","command":["true"]})", "usr_1");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kPermissionDenied) << again.status();
  auto pools = jobs_->ListPools();
  ASSERT_TRUE(pools.ok()) << pools.status();
  ASSERT_EQ(pools->size(), 1u);
  EXPECT_EQ((*pools)[0].name, "gold");
  EXPECT_EQ((*pools)[0].dedicated_to, std::vector<std::string>{"acme"});
  EXPECT_EQ((*pools)[0].updated_by, "usr_admin");

  // General again: a job that named the pool is not closed out by it (it may run there still),
  // and beta's waiting job runs there once acme's job is done.
  store::Job pinned_a =
      Submit("ten_a", "acme", R"({"name":"pa","gpus":1,"pool":"gold","command":["true"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  ASSERT_EQ(Stored(pinned_a.id).state, "queued");  // the pool's one GPU is acme's other job's
  ASSERT_TRUE(jobs_->SetPoolDedication("gold", {}, "usr_admin").ok());
  EXPECT_EQ(Stored(pinned_a.id).state, "queued") << Stored(pinned_a.id).reason;
  ASSERT_TRUE(jobs_->Cancel("ten_a", pinned_a.id, absl::Seconds(1)).ok());
  Sync("nod_1", {{a.id, "exited", true, 0}});
  Sync("nod_1", {}, clean);
  ASSERT_TRUE(jobs_->Tick().ok());
  ASSERT_TRUE(jobs_->Tick().ok());
  EXPECT_EQ(Stored(b.id).node_id, "nod_1");
}

// A pool dedicated only to tenants that were deleted stays apart after a restart: it must not
// silently become a general pool that every tenant's jobs may use.
TEST_F(JobPolicyTest, APoolWhoseTenantsWereDeletedStaysApart) {
  ASSERT_TRUE(store_->CreateTenant({"ten_c", "gamma", 1}).ok());
  AddNode("nod_1", "n1", 1, "gold");
  ASSERT_TRUE(jobs_->SetPoolDedication("gold", {"gamma"}, "usr_admin").ok());
  ASSERT_TRUE(store_->DeleteTenant("ten_c").ok());
  Restart();
  auto pools = jobs_->ListPools();
  ASSERT_TRUE(pools.ok()) << pools.status();
  ASSERT_EQ(pools->size(), 1u);
  EXPECT_TRUE((*pools)[0].reserved);
  EXPECT_TRUE((*pools)[0].dedicated_to.empty());
  store::Job b = Submit("ten_b", "beta", R"({"name":"b","gpus":1,"command":["true"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  EXPECT_EQ(Stored(b.id).state, "queued");
  auto named = jobs_->Submit("ten_b", "beta",
                             R"({"name":"x","gpus":1,"pool":"gold","command":["true"]})", "usr_1");
  EXPECT_EQ(named.status().code(), absl::StatusCode::kPermissionDenied) << named.status();
}

}  // namespace
}  // namespace warden::server
