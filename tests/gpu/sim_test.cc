// The sim spec parser/printer, deterministic UUIDs and the simulated backend's MIG control.
#include <regex>
#include <set>

#include "gmock/gmock.h"
#include "gpu/gpu.h"
#include "gtest/gtest.h"

namespace warden::gpu {
namespace {

using ::testing::HasSubstr;

TEST(SimSpecTest, ParsesTheIssueExample) {
  auto spec = ParseSimSpec("4xH100-80GB,2xH200-141GB");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->items.size(), 2u);
  EXPECT_EQ(spec->items[0], (SimSpecItem{4, "H100-80GB", false}));
  EXPECT_EQ(spec->items[1], (SimSpecItem{2, "H200-141GB", false}));
  EXPECT_EQ(spec->total_gpus(), 6);
}

TEST(SimSpecTest, ParsesGoodSpecsAndRoundTrips) {
  for (const char* text : {"2xH100-80GB:mig", "64xA100-40GB", "1xL40S-48GB",
                           "1xA100-80GB:mig,1xA100-80GB,62xH200-141GB:mig",
                           "4xH100-80GB,2xH200-141GB", "10xH100-80GB"}) {
    auto spec = ParseSimSpec(text);
    ASSERT_TRUE(spec.ok()) << text << ": " << spec.status();
    EXPECT_EQ(FormatSimSpec(*spec), text);
    auto again = ParseSimSpec(FormatSimSpec(*spec));
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *spec);
  }
  EXPECT_TRUE(ParseSimSpec("2xH100-80GB:mig")->items[0].mig);
}

TEST(SimSpecTest, RejectsMalformedSpecsNamingTheBadPart) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "empty"},
      {"4xH100-80GB,", "item 2 is empty"},
      {",4xH100-80GB", "item 1 is empty"},
      {"4xH100-80GB,,1xH200-141GB", "item 2 is empty"},
      {"0xH100-80GB", "GPU count must be 1..64"},
      {"65xH100-80GB", "GPU count must be 1..64"},
      {"99999999999999999999999xH100-80GB", "GPU count must be 1..64"},
      {"04xH100-80GB", "leading zero"},
      {"-4xH100-80GB", "decimal digits"},
      {"+4xH100-80GB", "decimal digits"},
      {"xH100-80GB", "missing GPU count"},
      {"4x", "missing GPU model"},
      {"4x:mig", "missing GPU model"},
      {"H100-80GB", "expected COUNTxMODEL"},
      {"4XH100-80GB", "expected COUNTxMODEL"},
      {"4xh100-80gb", "unknown GPU model \"h100-80gb\""},
      {"4xH100", "unknown GPU model \"H100\" (known: A100-40GB"},
      {"4xH100-80GB:mog", "unknown option \"mog\""},
      {"4xH100-80GB:", "unknown option \"\""},
      {"4xH100-80GB:mig:mig", "unknown option \"mig:mig\""},
      {"4xL40S-48GB:mig", "L40S-48GB is not MIG-capable"},
      {"40xH100-80GB,25xH200-141GB", "more than 64 GPUs in all (at item 2)"},
      {"4xH100-80GB, 2xH200-141GB", "whitespace is not allowed (byte 12)"},
      {" 4xH100-80GB", "whitespace"},
      {"4xH100-80GB\n", "whitespace"},
      {std::string("4xH100\x01", 7), "\"H100\\x01\""},
      {std::string(2000, '1'), "more than 1024"},
  };
  for (const auto& [text, want] : cases) {
    auto spec = ParseSimSpec(text);
    ASSERT_FALSE(spec.ok()) << text;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(spec.status().message()), HasSubstr(want)) << text;
  }
}

TEST(SimUuidTest, DeterministicPerSeedAndIndex) {
  // Golden value: must not change between runs, builds or machines (inventory keys on it);
  // equals "GPU-" + UUID-shaped hex of sha256(b"gpuwarden-sim-gpu\0node-a\0" b"0")[:16].
  EXPECT_EQ(SimGpuUuid("node-a", 0), SimGpuUuid("node-a", 0));
  EXPECT_EQ(SimGpuUuid("node-a", 0), "GPU-65d72b7e-56aa-7b2e-411b-1362f5a8aedd");
  std::regex shape("GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}");
  std::set<std::string> seen;
  for (const char* seed : {"node-a", "node-b", "node-a0", ""}) {
    for (int i = 0; i < 16; ++i) {
      const std::string u = SimGpuUuid(seed, i);
      EXPECT_TRUE(std::regex_match(u, shape)) << u;
      seen.insert(u);
    }
  }
  EXPECT_EQ(seen.size(), 64u);
}

TEST(SimUuidTest, ExpandSimSpecDescribesEachDevice) {
  SimOptions opts;
  opts.seed = "node-7";
  auto devices = ExpandSimSpec(*ParseSimSpec("4xH100-80GB,2xH200-141GB:mig"), opts);
  ASSERT_EQ(devices.size(), 6u);
  std::set<std::string> uuids;
  for (size_t i = 0; i < devices.size(); ++i) {
    const GpuDevice& d = devices[i];
    EXPECT_EQ(d.index, static_cast<int>(i));
    EXPECT_EQ(d.uuid, SimGpuUuid("node-7", d.index));
    EXPECT_TRUE(d.ecc_enabled);
    EXPECT_TRUE(d.mig_capable);
    EXPECT_EQ(d.driver_version, "580.65.06");
    EXPECT_EQ(d.cuda_version, "13.0");
    uuids.insert(d.uuid);
  }
  EXPECT_EQ(uuids.size(), 6u);
  EXPECT_EQ(devices[0].model, "H100-80GB");
  EXPECT_EQ(devices[0].product_name, "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(devices[0].memory_mib, 81559u);
  EXPECT_FALSE(devices[3].mig_enabled);
  EXPECT_EQ(devices[4].model, "H200-141GB");
  EXPECT_TRUE(devices[4].mig_enabled);
  // Same seed, same inventory; another seed, other UUIDs.
  EXPECT_EQ(ExpandSimSpec(*ParseSimSpec("4xH100-80GB"), opts)[2].uuid, devices[2].uuid);
  opts.seed = "node-8";
  EXPECT_NE(ExpandSimSpec(*ParseSimSpec("4xH100-80GB"), opts)[2].uuid, devices[2].uuid);
}

class SimBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SimOptions opts;
    opts.seed = "node-a";
    auto b = SimGpuBackend::Create("1xH100-80GB,1xH200-141GB:mig,1xL40S-48GB", opts);
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = std::move(*b);
    auto devices = backend_->Discover();
    ASSERT_TRUE(devices.ok());
    ASSERT_EQ(devices->size(), 3u);
    h100_ = (*devices)[0].uuid;
    h200_ = (*devices)[1].uuid;
    l40s_ = (*devices)[2].uuid;
  }
  std::unique_ptr<SimGpuBackend> backend_;
  std::string h100_, h200_, l40s_;
};

TEST_F(SimBackendTest, DiscoverReportsTheSpec) {
  EXPECT_EQ(backend_->name(), "sim");
  auto devices = backend_->Discover();
  ASSERT_TRUE(devices.ok());
  EXPECT_FALSE((*devices)[0].mig_enabled);
  EXPECT_TRUE((*devices)[1].mig_enabled);
  EXPECT_FALSE((*devices)[2].mig_capable);
  EXPECT_EQ((*devices)[1].memory_mib, 143771u);
  EXPECT_EQ(SimGpuBackend::Create("4xH100").status().code(), absl::StatusCode::kInvalidArgument);
  SimSpec bad;
  bad.items.push_back({1, "B200", false});
  EXPECT_EQ(SimGpuBackend::Create(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SimBackendTest, CreateAndDestroyFollowTheGeometry) {
  EXPECT_EQ(backend_->CreateMigInstance(h100_, 19).status().code(),
            absl::StatusCode::kFailedPrecondition);  // MIG off
  EXPECT_EQ(backend_->CreateMigInstance("GPU-nope", 19).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(backend_->CreateMigInstance(h200_, 42).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<MigInstanceInfo> made;
  for (int i = 0; i < 7; ++i) {
    auto inst = backend_->CreateMigInstance(h200_, 19);
    ASSERT_TRUE(inst.ok()) << inst.status();
    EXPECT_EQ(inst->profile_name, "1g.18gb");
    EXPECT_EQ(inst->memory_mib, 18u * 1024);
    EXPECT_EQ(inst->uuid.rfind("MIG-", 0), 0u);
    made.push_back(*inst);
  }
  auto eighth = backend_->CreateMigInstance(h200_, 19);
  EXPECT_EQ(eighth.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(eighth.status().message()), HasSubstr("at most 7"));
  auto devices = backend_->Discover();
  EXPECT_EQ((*devices)[1].mig_instances.size(), 7u);

  ASSERT_TRUE(backend_->AddProcess(h200_, {1234, 512, made[3].uuid}).ok());
  EXPECT_EQ(backend_->DestroyMigInstance(h200_, made[3].uuid).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(backend_->SetMigMode(h200_, false).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(backend_->RemoveProcess(h200_, 1234).ok());
  EXPECT_EQ(backend_->RemoveProcess(h200_, 1234).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(backend_->DestroyMigInstance(h200_, made[3].uuid).ok());
  EXPECT_EQ(backend_->DestroyMigInstance(h200_, made[3].uuid).code(), absl::StatusCode::kNotFound);
  auto again = backend_->CreateMigInstance(h200_, 19);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->start, made[3].start);  // the freed slice is reused
  EXPECT_NE(again->uuid, made[3].uuid);    // but the instance is a new one
}

// Issue 6: the agent creates exactly the instance the scheduler planned (explicit start), with
// NVML's error semantics for every refusal, and nothing is left behind by a refusal.
TEST_F(SimBackendTest, CreateAtAnExplicitPlacementRefusesLikeNvml) {
  EXPECT_EQ(backend_->CreateMigInstanceAt(h100_, 19, 0).status().code(),
            absl::StatusCode::kFailedPrecondition);  // MIG off, and it stays off
  EXPECT_FALSE((*backend_->Discover())[0].mig_enabled);
  EXPECT_EQ(backend_->CreateMigInstanceAt(l40s_, 19, 0).status().code(),
            absl::StatusCode::kFailedPrecondition);  // no MIG at all
  EXPECT_EQ(backend_->CreateMigInstanceAt("GPU-nope", 19, 0).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(backend_->CreateMigInstanceAt(h200_, 42, 0).status().code(),
            absl::StatusCode::kInvalidArgument);  // unknown profile
  EXPECT_EQ(backend_->CreateMigInstanceAt(h200_, 5, 4).status().code(),
            absl::StatusCode::kInvalidArgument);  // 4g only at 0
  EXPECT_EQ(backend_->CreateMigInstanceAt(h200_, 9, 2).status().code(),
            absl::StatusCode::kInvalidArgument);  // 3g at 0 or 4
  EXPECT_EQ(backend_->CreateMigInstanceAt(h200_, 19, 7).status().code(),
            absl::StatusCode::kInvalidArgument);  // no 1g at slice 7
  auto three = backend_->CreateMigInstanceAt(h200_, 9, 4);
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_EQ(three->start, 4);
  EXPECT_EQ(three->gpu_instance_id, 1);
  EXPECT_EQ(three->compute_instance_id, 0);
  // Overlapping 4..7: refused as insufficient resources.
  EXPECT_EQ(backend_->CreateMigInstanceAt(h200_, 19, 5).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(backend_->CreateMigInstanceAt(h200_, 15, 6).status().code(),
            absl::StatusCode::kResourceExhausted);
  auto one = backend_->CreateMigInstanceAt(h200_, 19, 3);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->gpu_instance_id, 2);
  // A second +me is refused even where slices are free.
  ASSERT_TRUE(backend_->CreateMigInstanceAt(h200_, 20, 0).ok());
  EXPECT_EQ(backend_->CreateMigInstanceAt(h200_, 20, 1).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*backend_->Discover())[1].mig_instances.size(), 3u);
  // A freed GPU instance id is reused, lowest first.
  ASSERT_TRUE(backend_->DestroyMigInstance(h200_, three->uuid).ok());
  auto again = backend_->CreateMigInstanceAt(h200_, 14, 4);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->gpu_instance_id, 1);
}

TEST_F(SimBackendTest, MigModeChangesNeedAnIdleGpu) {
  EXPECT_EQ(backend_->SetMigMode(l40s_, true).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->AddProcess(h200_, {7, 100, ""}).code(),
            absl::StatusCode::kFailedPrecondition);  // MIG mode: processes need an instance
  ASSERT_TRUE(backend_->AddProcess(h100_, {7, 100, ""}).ok());
  EXPECT_EQ(backend_->SetMigMode(h100_, true).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(backend_->RemoveProcess(h100_, 7).ok());
  ASSERT_TRUE(backend_->SetMigMode(h100_, true).ok());
  auto inst = backend_->CreateMigInstance(h100_, 9);
  ASSERT_TRUE(inst.ok());
  EXPECT_EQ(inst->start, 4);
  EXPECT_EQ(backend_->SetMigMode(h100_, false).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(backend_->DestroyMigInstance(h100_, inst->uuid).ok());
  EXPECT_TRUE(backend_->SetMigMode(h100_, false).ok());
}

TEST(SimBackendDeterminismTest, SameSeedSameMigUuids) {
  auto a = SimGpuBackend::Create("1xH100-80GB:mig");
  auto b = SimGpuBackend::Create("1xH100-80GB:mig");
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string gpu = (*(*a)->Discover())[0].uuid;
  EXPECT_EQ(gpu, (*(*b)->Discover())[0].uuid);
  for (int id : {9, 14, 19, 19}) {
    auto x = (*a)->CreateMigInstance(gpu, id);
    auto y = (*b)->CreateMigInstance(gpu, id);
    ASSERT_TRUE(x.ok() && y.ok());
    EXPECT_EQ(x->uuid, y->uuid);
    EXPECT_EQ(x->start, y->start);
  }
}

}  // namespace
}  // namespace warden::gpu
