// MigManager over the simulated backend: creation at the scheduler's placement, NVIDIA's
// refusals, all-or-nothing, orphan cleanup after a restart, the crash window between the
// driver's create and our record, foreign instances left alone, and the capability nodes.
#include "agent/mig_manager.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace warden::agent {
namespace {

namespace fs = std::filesystem;

constexpr int k1g = 19, k2g = 14, k3g = 9, k7g = 0;

struct Sim {
  std::unique_ptr<gpu::SimGpuBackend> backend;
  std::string gpu0, gpu1;
};

Sim MakeSim(const std::string& spec = "1xH100-80GB:mig,1xH100-80GB") {
  Sim s;
  auto b = gpu::SimGpuBackend::Create(spec, {.seed = "node-a"});
  EXPECT_TRUE(b.ok()) << b.status();
  s.backend = std::move(*b);
  auto d = s.backend->Discover();
  s.gpu0 = (*d)[0].uuid;
  if (d->size() > 1) s.gpu1 = (*d)[1].uuid;
  return s;
}

std::vector<gpu::MigInstanceInfo> Instances(gpu::GpuBackend& b, const std::string& gpu_uuid) {
  auto d = b.Discover();
  for (const auto& g : *d) {
    if (g.uuid == gpu_uuid) return g.mig_instances;
  }
  return {};
}

std::string TempDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/mig-" + name + "-" + std::to_string(::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TEST(MigManagerTest, CreatesAtThePlannedPlacementAndDestroysOnRelease) {
  Sim s = MakeSim();
  auto m = MigManager::Create(s.backend.get(), "");
  ASSERT_TRUE(m.ok()) << m.status();
  auto uuids = (*m)->Acquire("job_a", {{s.gpu0, k3g, 4}, {s.gpu0, k1g, 2}});
  ASSERT_TRUE(uuids.ok()) << uuids.status();
  ASSERT_EQ(uuids->size(), 2u);
  EXPECT_EQ((*uuids)[0].rfind("MIG-", 0), 0u);
  EXPECT_NE((*uuids)[0], (*uuids)[1]);
  auto inst = Instances(*s.backend, s.gpu0);
  ASSERT_EQ(inst.size(), 2u);
  EXPECT_EQ(inst[0].uuid, (*uuids)[0]);
  EXPECT_EQ(inst[0].profile_id, k3g);
  EXPECT_EQ(inst[0].start, 4);  // where the scheduler planned it, not where a chooser would
  EXPECT_EQ(inst[1].start, 2);
  EXPECT_GE(inst[0].gpu_instance_id, 1);
  EXPECT_NE(inst[0].gpu_instance_id, inst[1].gpu_instance_id);
  // Idempotent: the same job asking again gets the same instances.
  auto again = (*m)->Acquire("job_a", {{s.gpu0, k3g, 4}, {s.gpu0, k1g, 2}});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *uuids);
  EXPECT_EQ(Instances(*s.backend, s.gpu0).size(), 2u);
  // Annotate names the job in the inventory.
  auto devices = *s.backend->Discover();
  (*m)->Annotate(devices);
  EXPECT_EQ(devices[0].mig_instances[0].job_id, "job_a");
  ASSERT_TRUE((*m)->Release("job_a").ok());
  EXPECT_TRUE(Instances(*s.backend, s.gpu0).empty());
  EXPECT_TRUE((*m)->records().empty());
}

TEST(MigManagerTest, InvalidAndOverlappingPlacementsAreRefusedWithNvidiasErrors) {
  Sim s = MakeSim();
  auto m = *MigManager::Create(s.backend.get(), "");
  // 3g may start only at 0 or 4.
  auto bad = m->Acquire("job_a", {{s.gpu0, k3g, 2}});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  // A profile id H100 does not have.
  EXPECT_EQ(m->Acquire("job_a", {{s.gpu0, 77, 0}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Overlap: a 2g at 0..1 then a 1g at 1 (another tenant's job).
  ASSERT_TRUE(m->Acquire("job_a", {{s.gpu0, k2g, 0}}).ok());
  auto overlap = m->Acquire("job_b", {{s.gpu0, k1g, 1}});
  EXPECT_EQ(overlap.status().code(), absl::StatusCode::kResourceExhausted) << overlap.status();
  // A 7g needs the whole GPU.
  EXPECT_EQ(m->Acquire("job_c", {{s.gpu0, k7g, 0}}).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Instances(*s.backend, s.gpu0).size(), 1u);
  ASSERT_EQ(m->records().size(), 1u);
  EXPECT_EQ(m->records()[0].job_id, "job_a");
}

TEST(MigManagerTest, AGpuWithMigOffIsRefusedAndItsModeIsNeverChanged) {
  Sim s = MakeSim();
  auto m = *MigManager::Create(s.backend.get(), "");
  auto r = m->Acquire("job_a", {{s.gpu1, k1g, 0}});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  auto d = *s.backend->Discover();
  EXPECT_FALSE(d[1].mig_enabled);
  EXPECT_TRUE(d[1].mig_instances.empty());
  EXPECT_TRUE(m->records().empty());
}

TEST(MigManagerTest, AllOrNothingWhenOneOfAJobsInstancesFails) {
  Sim s = MakeSim();
  auto m = *MigManager::Create(s.backend.get(), "");
  auto r = m->Acquire("job_a", {{s.gpu0, k1g, 0}, {s.gpu0, k2g, 0}});  // the 2g overlaps the 1g
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(Instances(*s.backend, s.gpu0).empty());  // the first one was destroyed again
  EXPECT_TRUE(m->records().empty());
}

TEST(MigManagerTest, RestartDestroysOrphansKeepsLiveJobsAndLeavesForeignInstancesAlone) {
  Sim s = MakeSim();
  const std::string dir = TempDir("restart");
  const std::string path = dir + "/mig-instances.json";
  std::string a, b;
  {
    auto m = *MigManager::Create(s.backend.get(), path);
    a = (*m->Acquire("job_a", {{s.gpu0, k1g, 0}}))[0];
    b = (*m->Acquire("job_b", {{s.gpu0, k1g, 1}}))[0];
  }  // the agent dies; job_a ended while it was down
  EXPECT_EQ(fs::status(path).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  // An operator's instance: not ours, never touched.
  auto foreign = s.backend->CreateMigInstanceAt(s.gpu0, k3g, 4);
  ASSERT_TRUE(foreign.ok());
  auto m = *MigManager::Create(s.backend.get(), path);
  auto rep = m->Reconcile({"job_b"});
  ASSERT_TRUE(rep.ok()) << rep.status();
  ASSERT_EQ(rep->destroyed.size(), 1u);
  EXPECT_EQ(rep->destroyed[0].mig_uuid, a);
  ASSERT_EQ(rep->kept.size(), 1u);
  EXPECT_EQ(rep->kept[0].mig_uuid, b);
  ASSERT_EQ(rep->foreign.size(), 1u);
  EXPECT_EQ(rep->foreign[0].mig_uuid, foreign->uuid);
  auto inst = Instances(*s.backend, s.gpu0);
  ASSERT_EQ(inst.size(), 2u);
  EXPECT_EQ(inst[0].uuid, b);
  EXPECT_EQ(inst[1].uuid, foreign->uuid);
  // Once job_b has gone as well, only the foreign instance is left.
  ASSERT_TRUE(m->ReleaseAllExcept({}).ok());
  inst = Instances(*s.backend, s.gpu0);
  ASSERT_EQ(inst.size(), 1u);
  EXPECT_EQ(inst[0].uuid, foreign->uuid);
}

TEST(MigManagerTest, AnInstanceCreatedJustBeforeACrashIsAdoptedNotLeaked) {
  // The agent wrote its intent, the driver created the instance, the agent died before it
  // recorded the UUID. Without the intent the instance would look foreign and leak forever.
  Sim s = MakeSim();
  const std::string dir = TempDir("intent");
  const std::string path = dir + "/mig-instances.json";
  {
    std::ofstream out(path);
    out << R"({"version":1,"instances":[{"job":"job_gone","gpu":")" << s.gpu0
        << R"(","uuid":"","profile_id":19,"start":3}]})";
  }
  ASSERT_TRUE(s.backend->CreateMigInstanceAt(s.gpu0, k1g, 3).ok());
  auto m = *MigManager::Create(s.backend.get(), path);
  auto rep = m->Reconcile({});
  ASSERT_TRUE(rep.ok()) << rep.status();
  EXPECT_EQ(rep->destroyed.size(), 1u);
  EXPECT_TRUE(rep->foreign.empty());
  EXPECT_TRUE(Instances(*s.backend, s.gpu0).empty());
}

TEST(MigManagerTest, AnInstanceStillInUseIsKeptAndRetried) {
  Sim s = MakeSim();
  auto m = *MigManager::Create(s.backend.get(), "");
  const std::string u = (*m->Acquire("job_a", {{s.gpu0, k1g, 0}}))[0];
  ASSERT_TRUE(s.backend->AddProcess(s.gpu0, {4242, 100, u}).ok());
  EXPECT_EQ(m->Release("job_a").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m->records().size(), 1u);
  ASSERT_TRUE(s.backend->RemoveProcess(s.gpu0, 4242).ok());
  EXPECT_TRUE(m->ReleaseAllExcept({}).ok());
  EXPECT_TRUE(Instances(*s.backend, s.gpu0).empty());
}

TEST(MigManagerTest, ACorruptRecordFileRefusesToStartAndDestroysNothing) {
  Sim s = MakeSim();
  const std::string dir = TempDir("corrupt");
  const std::string path = dir + "/mig-instances.json";
  ASSERT_TRUE(s.backend->CreateMigInstanceAt(s.gpu0, k1g, 0).ok());
  for (const char* text : {"{", R"({"version":2,"instances":[]})",
                           R"({"version":1,"instances":[{"job":"j"}]})"}) {
    std::ofstream(path) << text;
    auto m = MigManager::Create(s.backend.get(), path);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss) << text;
  }
  EXPECT_EQ(Instances(*s.backend, s.gpu0).size(), 1u);
}

TEST(MigCapNodesTest, ReadsTheGpuAndComputeInstanceMinorsOnly) {
  const std::string root = TempDir("proc");
  const std::string gi = root + "/driver/nvidia/capabilities/gpu1/mig/gi3";
  fs::create_directories(gi + "/ci0");
  std::ofstream(gi + "/access") << "DeviceFileMinor: 66\nDeviceFileMode: 292\nDeviceFileModify: 1\n";
  std::ofstream(gi + "/ci0/access") << "DeviceFileMinor: 67\nDeviceFileMode: 292\n";
  auto nodes = MigCapNodes(root, 1, 3, 0);
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  EXPECT_EQ(*nodes, (std::vector<std::string>{"/dev/nvidia-caps/nvidia-cap66",
                                              "/dev/nvidia-caps/nvidia-cap67"}));
  EXPECT_EQ(MigCapNodes(root, 1, 4, 0).status().code(), absl::StatusCode::kNotFound);
  std::ofstream(gi + "/ci0/access") << "DeviceFileMinor: ../../x\n";
  EXPECT_EQ(MigCapNodes(root, 1, 3, 0).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace warden::agent
