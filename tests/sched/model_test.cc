// The job-spec decoder: what it accepts, what it refuses and why, and the canonical round trip.
#include <string>

#include "gtest/gtest.h"
#include "sched/model.h"

namespace warden::sched {
namespace {

std::string ErrorOf(std::string_view json) {
  auto r = ParseJobSpec(json);
  EXPECT_FALSE(r.ok()) << json;
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << json;
  return std::string(r.status().message());
}

TEST(JobSpecTest, ParsesEveryField) {
  auto s = ParseJobSpec(R"({"name":"train-1","tenant":"acme","gpus":2,"cpu_millis":8000,
    "memory_mib":65536,"priority":5,"isolation":"exclusive","pool":"h100","gpu_model":"H100-80GB",
    "node_selector":{"zone":"b","gpuwarden.io/rack":"r1"},
    "tolerations":[{"key":"gpu","value":"h100"},{"key":"spot"}]})");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->name, "train-1");
  EXPECT_EQ(s->tenant, "acme");
  EXPECT_EQ(s->gpu_request, GpuRequest::kWhole);
  EXPECT_EQ(s->gpus, 2);
  EXPECT_EQ(s->cpu_millis, 8000);
  EXPECT_EQ(s->memory_mib, 65536);
  EXPECT_EQ(s->priority, 5);
  EXPECT_EQ(s->isolation, Isolation::kExclusive);
  EXPECT_EQ(s->pool, "h100");
  EXPECT_EQ(s->gpu_model, "H100-80GB");
  ASSERT_EQ(s->node_selector.size(), 2u);
  EXPECT_EQ(s->node_selector[0].first, "gpuwarden.io/rack");  // sorted by key
  ASSERT_EQ(s->tolerations.size(), 2u);
  EXPECT_EQ(s->tolerations[1].value, "");
}

TEST(JobSpecTest, DefaultsForAMinimalCpuJob) {
  auto s = ParseJobSpec(R"({"name":"etl","tenant":"acme"})");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->gpu_request, GpuRequest::kNone);
  EXPECT_EQ(s->cpu_millis, 1000);
  EXPECT_EQ(s->memory_mib, 1024);
  EXPECT_EQ(s->priority, 0);
  EXPECT_FALSE(s->isolation.has_value());
}

TEST(JobSpecTest, ParsesMigAndFraction) {
  auto m = ParseJobSpec(R"({"name":"nb","tenant":"acme","mig_profile":"1g.10gb+me"})");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->gpu_request, GpuRequest::kMig);
  EXPECT_EQ(m->mig_profile, "1g.10gb+me");
  auto f = ParseJobSpec(R"({"name":"x","tenant":"t","gpu_fraction":0.125})");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->gpu_request, GpuRequest::kFraction);
  EXPECT_EQ(f->gpu_millis, 125);
}

TEST(JobSpecTest, RefusesWithTheFieldNamed) {
  EXPECT_NE(ErrorOf(R"([1])").find("object"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"tenant":"a"})").find("\"name\""), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","gpu":1})").find("unknown field \"gpu\""),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","name":"b","tenant":"a"})").find("name"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","gpus":2,"mig_profile":"1g.10gb"})")
                .find("at most one"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","gpus":0})").find("between 1 and 64"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","gpus":65})").find("between 1 and 64"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","gpus":1.5})").find("integer"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","gpu_fraction":1})").find("less than 1"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","gpu_fraction":0})").find("greater than 0"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","gpu_fraction":0.0005})").find("three decimals"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","gpu_fraction":"0.5"})").find("number"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","mig_profile":"2g.99gb"})").find("MIG profile"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","isolation":"none"})").find("isolation"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","priority":1001})").find("priority"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","cpu_millis":0})").find("cpu_millis"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","gpu_model":"H100-80GB"})").find("no GPU"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","gpus":1,"gpu_model":"B200"})").find("gpu_model"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","node_selector":{"zone":1}})").find("string"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","node_selector":{"zo ne":"a"}})")
                .find("node_selector key"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","tolerations":[{"key":"x"},{"key":"x"}]})")
                .find("duplicate"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","tolerations":[{"key":"x","effect":"y"}]})")
                .find("effect"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"A","tenant":"a"})").find("\"name\""), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"../x"})").find("\"tenant\""), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"a","tenant":"a","x":{"y":{"z":{"w":{"v":1}}}}})").find("nesting deeper"),
            std::string::npos);
}

TEST(JobSpecTest, CanonicalJsonRoundTrips) {
  for (const char* text : {
           R"({"name":"a","tenant":"b"})",
           R"({"name":"a","tenant":"b","gpus":8,"priority":-3,"isolation":"dedicated"})",
           R"({"name":"a","tenant":"b","mig_profile":"3g.71gb","gpu_model":"H200-141GB"})",
           R"({"name":"a","tenant":"b","gpu_fraction":0.333,"node_selector":{"k":""},
               "tolerations":[{"key":"k","value":""},{"key":"k","value":"v"}]})",
       }) {
    auto s = ParseJobSpec(text);
    ASSERT_TRUE(s.ok()) << text << ": " << s.status();
    const std::string canon = JobSpecToJson(*s);
    auto again = ParseJobSpec(canon);
    ASSERT_TRUE(again.ok()) << canon;
    EXPECT_EQ(*again, *s) << canon;
    EXPECT_EQ(JobSpecToJson(*again), canon);
  }
}

TEST(ResourcesTest, FirstExcessNamesTheResource) {
  Resources limit = Resources::Unlimited();
  limit.gpu_millis = 8000;
  Resources use;
  use.gpu_millis = 9000;
  EXPECT_EQ(use.FirstExcess(limit), "gpus 9.000 > 8.000");
  use.gpu_millis = 8000;
  EXPECT_EQ(use.FirstExcess(limit), "");
  limit.running_jobs = 0;
  use.running_jobs = 1;
  EXPECT_EQ(use.FirstExcess(limit), "running jobs 1 > 0");
}

}  // namespace
}  // namespace warden::sched
