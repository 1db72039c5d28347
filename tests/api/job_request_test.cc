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

namespace warden::api {
namespace {

TEST(JobSubmitDatasetsTest, DecodesDatasetsIntoTheRunPart) {
  auto sub = ParseJobSubmit(
      R"({"name":"t","command":["x"],"datasets":[{"name":"train/v1","path":"/data/train"},)"
      R"({"name":"ckpt","path":"/datasets/ckpt","write":true,"tenant":"acme"}]})",
      "acme");
  ASSERT_TRUE(sub.ok()) << sub.status();
  ASSERT_EQ(sub->run.datasets.size(), 2u);
  EXPECT_EQ(sub->run.datasets[0].name, "train/v1");
  EXPECT_EQ(sub->run.datasets[0].path, "/data/train");
  EXPECT_FALSE(sub->run.datasets[0].write);
  EXPECT_EQ(sub->run.datasets[0].tenant, "");
  EXPECT_TRUE(sub->run.datasets[1].write);
  EXPECT_EQ(sub->run.datasets[1].tenant, "acme");
  // The scheduler's half does not carry them.
  EXPECT_EQ(sub->placement_json.find("datasets"), std::string::npos) << sub->placement_json;
}

TEST(JobSubmitDatasetsTest, RefusesBadPathsNamesAndCounts) {
  auto one = [](const std::string& entry) {
    return ParseJobSubmit(R"({"command":["x"],"datasets":[)" + entry + "]}", "acme").status();
  };
  for (const std::string e : {
           R"({"name":"a","path":"data"})",            // relative
           R"({"name":"a","path":"/"})",               // the root
           R"({"name":"a","path":"/data/../etc"})",    // traversal
           R"({"name":"a","path":"/data/./x"})",       // not normalized
           R"({"name":"a","path":"/data//x"})",        // empty segment
           R"({"name":"a","path":"/data/"})",          // trailing slash
           R"({"name":"a","path":"/proc"})",           // system paths
           R"({"name":"a","path":"/proc/self"})",
           R"({"name":"a","path":"/sys/fs"})",
           R"({"name":"a","path":"/dev/shm"})",
           R"({"name":"a","path":"/etc"})",
           R"({"name":"a","path":"/da ta"})",          // characters
           R"({"name":"../a","path":"/data/d"})",           // name traversal
           R"({"name":"/a","path":"/data/d"})",
           R"({"name":"a//b","path":"/data/d"})",
           R"({"name":"","path":"/data/d"})",
           R"({"path":"/data/d"})",                         // missing name
           R"({"name":"a"})",                          // missing path
           R"({"name":"a","path":"/data/d","write":"yes"})",
           R"({"name":"a","path":"/data/d","tenant":"../x"})",
           R"({"name":"a","path":"/data/d","mode":"rw"})",  // unknown key
           R"({"name":"a","path":"/data/d","object_id":"obj_1"})",  // server-resolved fields
           R"({"name":"a","path":"/data/d","sha256":"00"})",
           R"({"name":"a","path":"/data/d","authorized_user":"usr_admin"})",
           R"({"name":"a","path":"/data/d"},{"name":"b","path":"/data/d"})",      // duplicate path
           R"({"name":"a","path":"/data/d"},{"name":"b","path":"/data/d/x"})",    // nested
           R"("a")"}) {
    absl::Status s = one(e);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << e;
    EXPECT_NE(std::string(s.message()).find("datasets"), std::string::npos) << s;
  }
  // Only /data, /datasets and below (the sandbox's dataset roots).
  EXPECT_TRUE(one(R"({"name":"a","path":"/data"})").ok());
  EXPECT_TRUE(one(R"({"name":"a","path":"/datasets/x/y"})").ok());
  for (const std::string e : {R"({"name":"a","path":"/database"})", R"({"name":"a","path":"/tmp/x"})",
                              R"({"name":"a","path":"/mnt/data"})", R"({"name":"a","path":"/procfs"})"}) {
    absl::Status s = one(e);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << e;
    EXPECT_NE(std::string(s.message()).find("not under /data or /datasets"), std::string::npos) << s;
  }
  std::string many;
  for (size_t i = 0; i <= kMaxJobDatasets; ++i) {
    many += (i ? "," : "") + std::string(R"({"name":"a","path":"/data/d)") + std::to_string(i) + "\"}";
  }
  EXPECT_FALSE(one(many).ok());
  EXPECT_EQ(ParseJobSubmit(R"({"command":["x"],"datasets":{}})", "acme").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(JobSubmitDatasetsTest, ResolvedDatasetsRoundTripThroughJson) {
  JobRun r{{"sh"}, "host", {}, {}};
  JobDataset d;
  d.name = "train/v1";
  d.path = "/data/train";
  d.object_id = "obj_1";
  d.version = 3;
  d.size = 0;
  d.sha256 = std::string(64, 'a');
  d.chunk_size = 65536;
  d.authorized_user = "usr_1";
  d.authorized_token = "tok_1";
  r.datasets.push_back(d);
  // A cross-tenant mount keeps its pinned owner tenant and share.
  JobDataset shared = d;
  shared.path = "/data/shared";
  shared.tenant = "acme";
  shared.owner_tenant_id = "ten_1";
  shared.share_id = "shr_1";
  r.datasets.push_back(shared);
  auto again = JobRunFromJson(JobRunToJson(r));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, r);
}

TEST(JobSubmitDatasetsTest, ClientsCannotSetTheOwnerTenantIdOrShareId) {
  for (const char* key : {"owner_tenant_id", "share_id"}) {
    std::string body = std::string(R"({"command":["sh"],"datasets":[{"name":"a","path":"/data/d","tenant":"acme",")") +
                       key + R"(":"x"}]})";
    auto s = ParseJobSubmit(body, "beta");
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << key;
    EXPECT_NE(std::string(s.status().message()).find("set by the server"), std::string::npos)
        << s.status();
  }
}

}  // namespace
}  // namespace warden::api

namespace warden::api {
namespace {

TEST(JobSubmitTest, ImageIsHostOrAManifestDigest) {
  const std::string digest = "sha256:" + std::string(64, 'a');
  auto ok = ParseJobSubmit(R"({"name":"x","command":["true"],"image":")" + digest + R"("})", "acme");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->run.image, digest);
  EXPECT_EQ(ParseJobSubmit(R"({"name":"x","command":["true"]})", "acme")->run.image, "host");
  for (const std::string& bad : std::vector<std::string>{"sha256:" + std::string(63, 'a'), "sha256:" + std::string(64, 'A'),
                                "sha512:" + std::string(64, 'a'), std::string("ubuntu:latest"),
                                "sha256:" + std::string(64, 'a') + "/../x"}) {
    auto s = ParseJobSubmit(R"({"name":"x","command":["true"],"image":")" + bad + R"("})", "acme");
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_NE(std::string(s.status().message()).find("image"), std::string::npos) << s.status();
  }
}

TEST(JobSubmitDatasetsTest, AWriteDatasetCarriesItsLimitOnlyWithWrite) {
  auto sub = ParseJobSubmit(
      R"({"command":["x"],"datasets":[{"name":"out/m","path":"/data/out","write":true,"limit_mib":8}]})", "acme");
  ASSERT_TRUE(sub.ok()) << sub.status();
  EXPECT_TRUE(sub->run.datasets[0].write);
  EXPECT_EQ(sub->run.datasets[0].size, 8u << 20);
  for (const std::string e : {R"({"name":"a","path":"/data/a","limit_mib":8})",
                              R"({"name":"a","path":"/data/a","write":true,"limit_mib":0})",
                              R"({"name":"a","path":"/data/a","write":true,"limit_mib":65537})",
                              R"({"name":"a","path":"/data/a","write":true,"limit_mib":"8"})"}) {
    auto s = ParseJobSubmit(R"({"command":["x"],"datasets":[)" + e + "]}", "acme").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << e;
    EXPECT_NE(std::string(s.message()).find("limit_mib"), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace warden::api
