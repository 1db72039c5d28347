// `gpuwarden sim` as an operator runs it: the real binary, its output lines and exit codes.
#include <string>

#include "gtest/gtest.h"
#include "harness.h"

namespace warden::testing {
namespace {

TEST(SimCliTest, PrintsThePromisedLinesAndNoViolations) {
  RunResult r = RunShell(WardenBin() +
                         " sim --nodes 50 --gpus-per-node 8 --jobs 500 --seed 3 --check-each-decision");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  for (const char* line : {"placements/s: ", "decision latency p50: ", "decision latency p99: ",
                           "gpu utilisation: ", "fragmentation: ", "\nviolations: 0\n"}) {
    EXPECT_NE(r.out.find(line), std::string::npos) << line << "\n" << r.out;
  }
}

TEST(SimCliTest, RefusesBadArgumentsWithUsageExitCode) {
  RunResult bad = RunShell(WardenBin() + " sim --nodes 0");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("--nodes needs an integer in 1..100000"), std::string::npos) << bad.err;
  RunResult unknown = RunShell(WardenBin() + " sim --gpus 4");
  EXPECT_EQ(unknown.code, 2);
  EXPECT_NE(unknown.err.find("unknown argument --gpus"), std::string::npos) << unknown.err;
}

}  // namespace
}  // namespace warden::testing
