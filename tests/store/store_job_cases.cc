// Store behaviour for the jobs table (migration 4). Part of the same parameterised suite as
// store_cases.cc (SQLite unit, PostgreSQL integration).
#include "gtest/gtest.h"
#include "store_fixture.h"

namespace warden::store::testing {
namespace {

Job MakeJob(const std::string& id, const std::string& tenant, const std::string& name) {
  Job j;
  j.id = id;
  j.tenant_id = tenant;
  j.name = name;
  j.spec_json = R"({"name":"x","tenant":"acme","command":["true"]})";
  j.submitted_at = 1000;
  j.submitted_by = "usr_1";
  return j;
}

TEST_P(StoreTest, JobsRoundTripWithSequenceAndNullableExitCode) {
  ASSERT_TRUE(store_->CreateTenant(Tenant{"t1", "acme", 1}).ok());
  auto a = store_->CreateJob(MakeJob("job_a", "t1", "train"));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->seq, 1);
  auto b = store_->CreateJob(MakeJob("job_b", "t1", "eval"));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->seq, 2);

  auto got = store_->GetJob("job_a");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->name, "train");
  EXPECT_EQ(got->state, "queued");
  EXPECT_FALSE(got->has_exit_code);
  EXPECT_EQ(got->node_id, "");
  EXPECT_EQ(got->assignment_json, "[]");

  Job j = *got;
  j.state = "done";
  j.node_id = "nod_1";
  j.assignment_json = R"([{"gpu":0,"uuid":"GPU-1"}])";
  j.started_at = 1100;
  j.finished_at = 1200;
  j.has_exit_code = true;
  j.exit_code = 0;
  j.reason = "exited with code 0";
  j.name = "renamed";  // not an updatable column
  ASSERT_TRUE(store_->UpdateJob(j).ok());
  got = store_->GetJob("job_a");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->state, "done");
  EXPECT_EQ(got->node_id, "nod_1");
  EXPECT_TRUE(got->has_exit_code);
  EXPECT_EQ(got->exit_code, 0);
  EXPECT_EQ(got->name, "train");
  EXPECT_EQ(got->assignment_json, R"([{"gpu":0,"uuid":"GPU-1"}])");

  EXPECT_EQ(store_->GetJob("nosuch").status().code(), absl::StatusCode::kNotFound);
  Job missing = MakeJob("nosuch", "t1", "x");
  EXPECT_EQ(store_->UpdateJob(missing).code(), absl::StatusCode::kNotFound);
}

TEST_P(StoreTest, JobsFilterByTenantStateAndActivity) {
  ASSERT_TRUE(store_->CreateTenant(Tenant{"t1", "acme", 1}).ok());
  ASSERT_TRUE(store_->CreateTenant(Tenant{"t2", "beta", 1}).ok());
  ASSERT_TRUE(store_->CreateJob(MakeJob("j1", "t1", "a")).ok());
  ASSERT_TRUE(store_->CreateJob(MakeJob("j2", "t2", "b")).ok());
  Job done = MakeJob("j3", "t1", "c");
  done.state = "done";
  ASSERT_TRUE(store_->CreateJob(done).ok());

  auto t1 = store_->ListJobs(std::string("t1"), std::nullopt);
  ASSERT_TRUE(t1.ok());
  ASSERT_EQ(t1->size(), 2u);
  EXPECT_EQ((*t1)[0].id, "j1");
  EXPECT_EQ((*t1)[1].id, "j3");
  auto queued = store_->ListJobs(std::nullopt, std::string("queued"));
  ASSERT_TRUE(queued.ok());
  EXPECT_EQ(queued->size(), 2u);
  auto active = store_->ListJobs(std::string("t1"), std::nullopt, /*active_only=*/true);
  ASSERT_TRUE(active.ok());
  ASSERT_EQ(active->size(), 1u);
  EXPECT_EQ((*active)[0].id, "j1");
}

TEST_P(StoreTest, JobsRefuseUnknownTenantBadStateAndDuplicateIds) {
  EXPECT_EQ(store_->CreateJob(MakeJob("j1", "nosuch", "a")).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(store_->CreateTenant(Tenant{"t1", "acme", 1}).ok());
  ASSERT_TRUE(store_->CreateJob(MakeJob("j1", "t1", "a")).ok());
  EXPECT_EQ(store_->CreateJob(MakeJob("j1", "t1", "b")).status().code(),
            absl::StatusCode::kAlreadyExists);
  Job bad = MakeJob("j2", "t1", "a");
  bad.state = "exploded";
  EXPECT_EQ(store_->CreateJob(bad).status().code(), absl::StatusCode::kInvalidArgument);
  // Nothing half-written by the failures.
  EXPECT_EQ(store_->ListJobs(std::nullopt, std::nullopt)->size(), 1u);
}

// Tenant policies (migration 7): insert, replace, list.
TEST_P(StoreTest, TenantPoliciesAreInsertedReplacedAndListed) {
  EXPECT_TRUE(store_->ListTenantPolicies()->empty());
  TenantPolicy p{"t1", R"({"isolation":"mig","quota":{}})", 100, "usr_1"};
  ASSERT_TRUE(store_->PutTenantPolicy(p).ok());
  ASSERT_TRUE(store_->PutTenantPolicy({"t0", R"({"isolation":"shared","quota":{}})", 50, "u"}).ok());
  p.policy_json = R"({"isolation":"exclusive","quota":{"gpu_millis":2000}})";
  p.updated_at = 200;
  p.updated_by = "usr_2";
  ASSERT_TRUE(store_->PutTenantPolicy(p).ok());
  auto all = store_->ListTenantPolicies();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].tenant_id, "t0");
  EXPECT_EQ((*all)[1].tenant_id, "t1");
  EXPECT_EQ((*all)[1].policy_json, p.policy_json);
  EXPECT_EQ((*all)[1].updated_at, 200);
  EXPECT_EQ((*all)[1].updated_by, "usr_2");
}

// Pool dedications (migration 8): insert, replace (back to general with "[]"), list by pool.
TEST_P(StoreTest, PoolDedicationsAreInsertedReplacedAndListed) {
  EXPECT_TRUE(store_->ListPoolDedications()->empty());
  PoolDedication d{"zeta", R"(["t1"])", 100, "usr_1"};
  ASSERT_TRUE(store_->PutPoolDedication(d).ok());
  ASSERT_TRUE(store_->PutPoolDedication({"alpha", R"(["t0","t2"])", 50, "u"}).ok());
  d.tenant_ids_json = "[]";
  d.updated_at = 200;
  d.updated_by = "usr_2";
  ASSERT_TRUE(store_->PutPoolDedication(d).ok());
  auto all = store_->ListPoolDedications();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].pool, "alpha");
  EXPECT_EQ((*all)[0].tenant_ids_json, R"(["t0","t2"])");
  EXPECT_EQ((*all)[1].pool, "zeta");
  EXPECT_EQ((*all)[1].tenant_ids_json, "[]");
  EXPECT_EQ((*all)[1].updated_at, 200);
  EXPECT_EQ((*all)[1].updated_by, "usr_2");
}

}  // namespace
}  // namespace warden::store::testing
