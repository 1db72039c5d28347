// The inventory's optional per-device handoff status (issue 7): round trip, strictness, and the
// scheduling rule that only a reported `available` device is schedulable.
#include "cluster/cluster.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace warden::cluster {
namespace {

using common::Json;
using ::testing::HasSubstr;

NodeInventory WithHandoff() {
  NodeInventory inv;
  inv.hostname = "gpu-02";
  inv.os = "Ubuntu 24.04";
  inv.kernel = "6.8.0";
  inv.arch = "x86_64";
  inv.cpus = 16;
  inv.memory_mib = 128000;
  inv.agent_version = "0.1.0";
  inv.gpu_backend = "nvml";
  auto spec = gpu::ParseSimSpec("1xH200-141GB:mig,1xH100-80GB");
  inv.gpus = gpu::ExpandSimSpec(*spec, {});
  gpu::MigInstanceInfo m{"MIG-bbbb", 19, "1g.18gb", 0, 18432, std::nullopt};
  m.handoff = gpu::HandoffInfo{gpu::HandoffState::kScrubbing, "", 0};
  inv.gpus[0].mig_instances.push_back(m);
  inv.gpus[0].handoff = gpu::HandoffInfo{gpu::HandoffState::kQuarantined, "MIG mode changed", 0};
  inv.gpus[1].handoff =
      gpu::HandoffInfo{gpu::HandoffState::kQuarantined, "1 process(es) still on the device", 2};
  return inv;
}

TEST(InventoryHandoffTest, RoundTripsCanonically) {
  Json j = EncodeInventory(WithHandoff());
  EXPECT_EQ(j["gpus"][1]["handoff"]["state"], "quarantined");
  EXPECT_EQ(j["gpus"][1]["handoff"]["failures"], 2);
  EXPECT_EQ(j["gpus"][0]["mig_instances"][0]["handoff"]["state"], "scrubbing");
  auto back = DecodeInventoryText(j.dump());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(EncodeInventory(*back), j);
  EXPECT_EQ(back->gpus[1].handoff, WithHandoff().gpus[1].handoff);
}

TEST(InventoryHandoffTest, AbsentStatusStaysAbsentAndOldInventoriesStillDecode) {
  NodeInventory inv = WithHandoff();
  inv.gpus[0].handoff.reset();
  inv.gpus[0].mig_instances[0].handoff.reset();
  Json j = EncodeInventory(inv);
  EXPECT_FALSE(j["gpus"][0].contains("handoff"));
  EXPECT_FALSE(j["gpus"][0]["mig_instances"][0].contains("handoff"));
  auto back = DecodeInventory(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_FALSE(back->gpus[0].handoff.has_value());
}

TEST(InventoryHandoffTest, AttackMalformedStatusIsRefusedNamingTheField) {
  const Json good = EncodeInventory(WithHandoff());
  struct Case {
    std::function<void(Json&)> mutate;
    std::string want;
  } cases[] = {
      {[](Json& j) { j["gpus"][1]["handoff"]["state"] = "clean"; }, "gpus[1].handoff.state"},
      {[](Json& j) { j["gpus"][1]["handoff"]["state"] = 1; }, "expected a string"},
      {[](Json& j) { j["gpus"][1]["handoff"]["extra"] = true; }, "handoff.extra\": unknown field"},
      {[](Json& j) { j["gpus"][1]["handoff"].erase("reason"); }, "handoff.reason\": missing"},
      {[](Json& j) { j["gpus"][1]["handoff"]["failures"] = -1; }, "out of range"},
      {[](Json& j) { j["gpus"][1]["handoff"]["reason"] = "a\x1b[2Jb"; }, "control character"},
      {[](Json& j) { j["gpus"][1]["handoff"] = "available"; }, "expected an object"},
      {[](Json& j) { j["gpus"][0]["mig_instances"][0]["handoff"]["state"] = "x"; },
       "mig_instances[0].handoff.state"},
  };
  for (const Case& c : cases) {
    Json j = good;
    c.mutate(j);
    auto r = DecodeInventory(j);
    ASSERT_FALSE(r.ok()) << c.want;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.want));
  }
}

TEST(InventoryHandoffTest, OnlyAReportedAvailableDeviceIsSchedulable) {
  EXPECT_TRUE(HandoffSchedulable(gpu::HandoffInfo{gpu::HandoffState::kAvailable, "", 0}));
  for (auto s : {gpu::HandoffState::kAssigned, gpu::HandoffState::kQuarantined,
                 gpu::HandoffState::kScrubbing, gpu::HandoffState::kVerified}) {
    EXPECT_FALSE(HandoffSchedulable(gpu::HandoffInfo{s, "", 0}));
  }
  EXPECT_FALSE(HandoffSchedulable(std::nullopt));  // not known to be clean
}

// Issue 6: the driver's instance ids and the job the agent created an instance for travel in the
// heartbeat; absent for instances gpuwarden did not create; bad values are refused.
TEST(InventoryHandoffTest, MigInstanceIdsAndJobRoundTrip) {
  NodeInventory inv = WithHandoff();
  inv.gpus[0].mig_instances[0].gpu_instance_id = 3;
  inv.gpus[0].mig_instances[0].compute_instance_id = 0;
  inv.gpus[0].mig_instances[0].job_id = "job_42";
  gpu::MigInstanceInfo foreign{"MIG-cccc", 19, "1g.18gb", 1, 18432, std::nullopt};
  inv.gpus[0].mig_instances.push_back(foreign);
  Json j = EncodeInventory(inv);
  EXPECT_EQ(j["gpus"][0]["mig_instances"][0]["job"], "job_42");
  EXPECT_EQ(j["gpus"][0]["mig_instances"][0]["gpu_instance_id"], 3);
  EXPECT_FALSE(j["gpus"][0]["mig_instances"][1].contains("job"));
  EXPECT_FALSE(j["gpus"][0]["mig_instances"][1].contains("gpu_instance_id"));
  auto back = DecodeInventory(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->gpus[0].mig_instances[0].job_id, "job_42");
  EXPECT_EQ(back->gpus[0].mig_instances[0].gpu_instance_id, 3);
  EXPECT_EQ(back->gpus[0].mig_instances[0].compute_instance_id, 0);
  EXPECT_EQ(back->gpus[0].mig_instances[1].gpu_instance_id, -1);
  EXPECT_EQ(EncodeInventory(*back), j);
  Json bad = j;
  bad["gpus"][0]["mig_instances"][0]["gpu_instance_id"] = -1;
  EXPECT_THAT(std::string(DecodeInventory(bad).status().message()), HasSubstr("gpu_instance_id"));
  bad = j;
  bad["gpus"][0]["mig_instances"][0]["job"] = 7;
  EXPECT_THAT(std::string(DecodeInventory(bad).status().message()), HasSubstr("job"));
}

}  // namespace
}  // namespace warden::cluster
