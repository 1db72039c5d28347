#include "api/job_request.h"

#include <gtest/gtest.h>

namespace warden::api {
namespace {

TEST(JobSubmitTest, SplitsRunFieldsAndFillsTenantFromUrl) {
  auto s = ParseJobSubmit(
      R"({"name":"train","gpus":1,"command":["python3","train.py"],"env":{"B":"2","A":"1"}})",
      "acme");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->run.command, (std::vector<std::string>{"python3", "train.py"}));
  EXPECT_EQ(s->run.image, "host");
  ASSERT_EQ(s->run.env.size(), 2u);
  EXPECT_EQ(s->run.env[0].first, "A");
  auto placement = common::Json::parse(s->placement_json);
  EXPECT_EQ(placement["tenant"], "acme");
  EXPECT_FALSE(placement.contains("command"));
  EXPECT_FALSE(placement.contains("env"));
}

TEST(JobSubmitTest, RefusesAnotherTenantInTheBody) {
  auto s = ParseJobSubmit(R"({"name":"x","tenant":"beta","command":["true"]})", "acme");
  ASSERT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.status().message()).find("tenant"), std::string::npos);
}

TEST(JobSubmitTest, RefusesLoaderAndGpuVisibilityVariables) {
  for (const char* var : {"LD_PRELOAD", "LD_LIBRARY_PATH", "ld_audit", "CUDA_VISIBLE_DEVICES",
                          "NVIDIA_VISIBLE_DEVICES"}) {
    auto s = ParseJobSubmit(std::string(R"({"name":"x","command":["true"],"env":{")") + var +
                                R"(":"v"}})",
                            "acme");
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << var;
    EXPECT_NE(std::string(s.status().message()).find(var), std::string::npos) << s.status();
  }
}

TEST(JobSubmitTest, RefusesBadCommandsImagesAndBodies) {
  const char* bad[] = {
      R"({"name":"x"})",
      R"({"name":"x","command":[]})",
      R"({"name":"x","command":[""]})",
      R"({"name":"x","command":"true"})",
      R"({"name":"x","command":[1]})",
      R"({"name":"x","command":["true"],"image":"ubuntu"})",
      R"({"name":"x","command":["true"],"env":{"1BAD":"v"}})",
      R"({"name":"x","command":["true"],"env":{"A":1}})",
      R"({"name":"x","command":["true"],"command":["false"]})",
      R"([1,2])",
      "not json",
  };
  for (const char* b : bad) {
    EXPECT_EQ(ParseJobSubmit(b, "acme").status().code(), absl::StatusCode::kInvalidArgument) << b;
  }
}

TEST(JobSubmitTest, RunSpecRoundTripsThroughJson) {
  JobRun r{{"sh", "-c", "echo hi"}, "host", {{"A", "1"}}, absl::Minutes(5)};
  auto again = JobRunFromJson(JobRunToJson(r));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, r);
  EXPECT_FALSE(JobRunFromJson(common::Json{{"command", {"x"}}, {"extra", 1}}).ok());
}

TEST(JobSubmitTest, TimeLimitIsARunFieldWithBounds) {
  auto s = ParseJobSubmit(R"({"name":"x","command":["true"],"time_limit":"90s"})", "acme");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->run.time_limit, absl::Seconds(90));
  EXPECT_FALSE(common::Json::parse(s->placement_json).contains("time_limit"));
  auto again = JobRunFromJson(JobRunToJson(s->run));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, s->run);
  // Absent: no limit of the job's own (the agent's default), and none in the run JSON.
  auto none = ParseJobSubmit(R"({"name":"x","command":["true"]})", "acme");
  EXPECT_FALSE(JobRunToJson(none->run).contains("time_limit"));
  for (const char* bad : {R"("soon")", R"("0s")", R"("-5s")", R"("721h")", "30"}) {
    auto b = ParseJobSubmit(std::string(R"({"name":"x","command":["true"],"time_limit":)") + bad + "}", "acme");
    EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(std::string(b.status().message()).find("time_limit"), std::string::npos) << b.status();
  }
}

TEST(CancelRequestTest, ParsesGraceWithDefaultAndBounds) {
  EXPECT_EQ(*ParseCancelRequest(""), kDefaultCancelGrace);
  EXPECT_EQ(*ParseCancelRequest(R"({"grace":"2s"})"), absl::Seconds(2));
  EXPECT_FALSE(ParseCancelRequest(R"({"grace":"-1s"})").ok());
  EXPECT_FALSE(ParseCancelRequest(R"({"grace":"2h"})").ok());
  EXPECT_FALSE(ParseCancelRequest(R"({"grace":"soon"})").ok());
  EXPECT_FALSE(ParseCancelRequest(R"({"other":1})").ok());
}

}  // namespace
}  // namespace warden::api
