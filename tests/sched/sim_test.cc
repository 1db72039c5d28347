// The simulator end to end on a small cluster: it places work, keeps every invariant (with the
// per-decision node check on) and prints the lines `gpuwarden sim` promises.
#include <sstream>

#include "gtest/gtest.h"
#include "sched/sim.h"

namespace warden::sched {
namespace {

TEST(SimTest, SmallClusterPlacesWorkWithoutViolations) {
  SimOptions o;
  o.nodes = 40;
  o.gpus_per_node = 8;
  o.jobs = 600;
  o.seed = 7;
  o.check_each_decision = true;
  auto r = RunSimulation(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->violations, 0) << r->first_violation;
  EXPECT_GT(r->first_pass_placements, 100);
  EXPECT_GT(r->finished, 0);
  EXPECT_GT(r->total_placements, r->first_pass_placements);
  EXPECT_GT(r->gpu_utilisation, 0.5);
  std::ostringstream out;
  PrintSimReport(o, *r, out);
  for (const char* line : {"placements/s: ", "decision latency p50: ", "decision latency p99: ",
                           "gpu utilisation: ", "fragmentation: ", "violations: 0\n"}) {
    EXPECT_NE(out.str().find(line), std::string::npos) << line << "\n" << out.str();
  }
}

TEST(SimTest, SameSeedSameOutcome) {
  SimOptions o;
  o.nodes = 20;
  o.jobs = 300;
  auto a = RunSimulation(o), b = RunSimulation(o);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->first_pass_placements, b->first_pass_placements);
  EXPECT_EQ(a->total_placements, b->total_placements);
  EXPECT_EQ(a->still_queued, b->still_queued);
}

TEST(SimTest, RefusesSizesOutOfRange) {
  SimOptions o;
  o.nodes = 0;
  EXPECT_EQ(RunSimulation(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.nodes = 1;
  o.gpus_per_node = 17;
  EXPECT_EQ(RunSimulation(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace warden::sched
