// Scheduler::Restore: a restarting control plane puts jobs back exactly where they were, and an
// impossible placement (a GPU another tenant holds) is refused with nothing changed.
#include "sched_test_util.h"

namespace warden::sched {
namespace {

using namespace testing;

TEST(RestoreTest, PutsJobsBackWhereTheyWereAndRefusesSharingAGpuAcrossTenants) {
  Scheduler::Options o;
  o.self_check = true;
  auto s = std::move(Scheduler::Create(o).value());
  ASSERT_TRUE(s->AddTenant(Tenant("acme", Isolation::kMig, 1.0)).ok());
  ASSERT_TRUE(s->AddTenant(Tenant("beta", Isolation::kMig, 1.0)).ok());
  ASSERT_TRUE(s->AddPool({"general", {}}).ok());
  const NodeId n = s->AddNode(MakeNode("n1", "general", 2)).value();
  const JobId a = s->Submit(Whole("acme", 1)).value();
  const JobId b = s->Submit(Whole("beta", 1)).value();
  // acme's job was on GPU 1 and running; put it back there.
  ASSERT_TRUE(s->Restore(a, n, {{1, -1, -1, 1000}}, /*running=*/true).ok());
  EXPECT_EQ(s->FindJob(a)->state, JobState::kRunning);
  EXPECT_EQ(s->FindJob(a)->gpus[0].gpu, 1);
  // beta's job claims the same GPU: refused, and nothing changes.
  const uint8_t before = s->state().nodes[n].gpus[1].unverified;
  absl::Status refused = s->Restore(b, n, {{1, -1, -1, 1000}}, true);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_EQ(s->FindJob(b)->state, JobState::kQueued);
  EXPECT_EQ(s->state().nodes[n].gpus[1].whole_job, a);
  EXPECT_EQ(s->state().nodes[n].gpus[1].unverified, before);
  EXPECT_EQ(s->Restore(b, n, {{5, -1, -1, 1000}}, true).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Restore(a, n, {{0, -1, -1, 1000}}, true).code(),
            absl::StatusCode::kFailedPrecondition);  // already placed
  // The next pass gives beta the free GPU 0.
  s->Schedule();
  EXPECT_EQ(s->FindJob(b)->state, JobState::kPlaced);
  EXPECT_EQ(s->FindJob(b)->gpus[0].gpu, 0);
  ExpectSound(*s);
}

}  // namespace
}  // namespace warden::sched
