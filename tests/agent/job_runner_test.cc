// JobRunner with a fake executor: what it starts, with which environment, what it stops, and
// when it reports.
#include "agent/job_runner.h"

#include "agent/gpu_handoff.h"
#include "beat_until.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <thread>

namespace warden::agent {
namespace {

using common::Json;

class FakeExecutor final : public JobExecutor {
 public:
  std::string_view name() const override { return "fake"; }
  absl::Status Start(const ExecSpec& spec) override {
    if (fail_start) return absl::InternalError("boom");
    started[spec.job_id] = spec;
    status[spec.job_id] = {ExecState::kRunning, 0, ""};
    return absl::OkStatus();
  }
  absl::StatusOr<ExecStatus> Poll(const std::string& id) override {
    if (!status.count(id)) return absl::NotFoundError("unknown");
    return status[id];
  }
  absl::Status Cancel(const std::string& id, absl::Duration grace) override {
    cancelled[id] = grace;
    return absl::OkStatus();
  }
  std::pair<std::string, std::string> LogPaths(const std::string& id) const override {
    return {logs_dir + "/" + id + ".out", logs_dir + "/" + id + ".err"};
  }
  absl::StatusOr<std::vector<ExecSpec>> Recover() override {
    std::vector<ExecSpec> out;
    for (auto& [id, s] : started) out.push_back(s);
    return out;
  }
  absl::Status Forget(const std::string& id) override {
    forgotten.push_back(id);
    status.erase(id);
    return absl::OkStatus();
  }
  std::map<std::string, ExecSpec> started;
  std::map<std::string, ExecStatus> status;
  std::map<std::string, absl::Duration> cancelled;
  std::vector<std::string> forgotten;
  std::string logs_dir = ::testing::TempDir();
  bool fail_start = false;
};

Json Assignment(const std::string& id, std::vector<std::string> gpus, Json env = Json::object()) {
  Json g = Json::array();
  for (const auto& u : gpus) g.push_back(Json{{"uuid", u}});
  return Json{{"id", id}, {"name", "n"}, {"run", {{"command", {"python3", "x.py"}}, {"env", env}}},
              {"gpus", g}};
}

// An assignment of tenant ten_a's job `id` that runs image `digest`.
Json WithImage(const std::string& id, const std::string& digest) {
  Json a = Assignment(id, {});
  a["tenant"] = "ten_a";
  a["run"]["image"] = digest;
  return a;
}

std::string EnvOf(const ExecSpec& s, const std::string& k) {
  for (const auto& [key, v] : s.env) {
    if (key == k) return v;
  }
  return "<unset>";
}

using testing::BeatUntil;
using testing::NoLogs;

TEST(JobRunnerTest, StartsAssignedJobsWithExactlyTheirGpusVisible) {
  FakeExecutor fake;
  JobRunner runner(&fake, "");
  runner.Apply(Json::array({Assignment("job_1", {"GPU-a", "GPU-b"},
                                       Json{{"LD_PRELOAD", "/tmp/evil.so"}, {"EPOCHS", "3"}}),
                            Assignment("job_2", {})}));
  ASSERT_EQ(fake.started.size(), 2u);
  const ExecSpec& one = fake.started["job_1"];
  EXPECT_EQ(one.argv, (std::vector<std::string>{"python3", "x.py"}));
  EXPECT_EQ(EnvOf(one, "CUDA_VISIBLE_DEVICES"), "GPU-a,GPU-b");
  EXPECT_EQ(EnvOf(one, "NVIDIA_VISIBLE_DEVICES"), "GPU-a,GPU-b");
  EXPECT_EQ(EnvOf(one, "EPOCHS"), "3");
  EXPECT_EQ(EnvOf(one, "LD_PRELOAD"), "<unset>");  // defence in depth behind the API's refusal
  const ExecSpec& two = fake.started["job_2"];
  EXPECT_EQ(EnvOf(two, "CUDA_VISIBLE_DEVICES"), "");
  EXPECT_EQ(EnvOf(two, "NVIDIA_VISIBLE_DEVICES"), "void");
}

TEST(JobRunnerTest, ReportsRunningThenOneTerminalReportThenForgets) {
  FakeExecutor fake;
  JobRunner runner(&fake, "");
  runner.Apply(Json::array({Assignment("job_1", {"GPU-a"})}));
  std::vector<gpu::GpuDevice> gpus(2);
  gpus[0].uuid = "GPU-a";
  gpus[1].uuid = "GPU-b";
  gpus[1].processes.push_back({});
  Json r = runner.BuildReport(NoLogs(), gpus);
  ASSERT_EQ(r["jobs"].size(), 1u);
  EXPECT_EQ(r["jobs"][0]["state"], "running");
  // GPU-a is held; GPU-b has a process nobody of ours runs: dirty.
  EXPECT_EQ(r["gpus"]["clean"], Json::array());
  EXPECT_EQ(r["gpus"]["dirty"], Json::array({"GPU-b"}));
  fake.status["job_1"] = {ExecState::kExited, 2, "exited with code 2"};
  r = runner.BuildReport(NoLogs(), gpus);
  ASSERT_EQ(r["jobs"].size(), 1u);
  EXPECT_EQ(r["jobs"][0]["state"], "exited");
  EXPECT_EQ(r["jobs"][0]["exit_code"], 2);
  EXPECT_EQ(r["gpus"]["clean"], Json::array({"GPU-a"}));
  runner.Apply(Json::array());  // the server got it
  EXPECT_EQ(fake.forgotten, std::vector<std::string>{"job_1"});
  EXPECT_EQ(runner.size(), 0u);
}

TEST(JobRunnerTest, TheTerminalReportWaitsUntilTheOutputIsShipped) {
  FakeExecutor fake;
  JobRunner runner(&fake, "");
  runner.Apply(Json::array({Assignment("job_1", {})}));
  std::ofstream(fake.LogPaths("job_1").first) << "last words\n";
  fake.status["job_1"] = {ExecState::kExited, 0, ""};
  bool up = false;
  std::string shipped;
  LogShipper ship = [&](const std::string&, const std::string&, int64_t offset,
                        std::string_view data) -> absl::StatusOr<int64_t> {
    if (!up) return absl::UnavailableError("server away");
    shipped += std::string(data);
    return offset + static_cast<int64_t>(data.size());
  };
  Json r = runner.BuildReport(ship, {});
  EXPECT_TRUE(r["jobs"].empty());
  up = true;
  r = runner.BuildReport(ship, {});
  ASSERT_EQ(r["jobs"].size(), 1u);
  EXPECT_EQ(shipped, "last words\n");
}

TEST(JobRunnerTest, StopsJobsNoLongerAssignedAndHonoursCancelGrace) {
  FakeExecutor fake;
  JobRunner runner(&fake, "");
  runner.Apply(Json::array({Assignment("job_1", {}), Assignment("job_2", {})}));
  Json cancel = Assignment("job_2", {});
  cancel["cancel_grace_ms"] = 2500;
  runner.Apply(Json::array({cancel}));
  EXPECT_EQ(fake.cancelled["job_2"], absl::Milliseconds(2500));
  EXPECT_TRUE(fake.cancelled.count("job_1"));  // requeued elsewhere: this copy must stop
  fake.status["job_1"] = {ExecState::kCancelled, 143, ""};
  Json r = runner.BuildReport(NoLogs(), {});
  for (const auto& j : r["jobs"]) EXPECT_NE(j["id"], "job_1");  // not ours to report any more
}

TEST(JobRunnerTest, WithoutAnExecutorAssignedJobsFailToStartWithTheReason) {
  JobRunner runner(nullptr, "no executor configured");
  runner.Apply(Json::array({Assignment("job_1", {})}));
  Json r = runner.BuildReport(NoLogs(), {});
  ASSERT_EQ(r["jobs"].size(), 1u);
  EXPECT_EQ(r["jobs"][0]["state"], "failed_to_start");
  EXPECT_EQ(r["jobs"][0]["reason"], "no executor configured");
}

TEST(JobRunnerTest, AnImageIsPreparedBeforeTheJobStartsOrTheJobFailsWithTheReason) {
  const std::string digest = "sha256:" + std::string(64, 'e');
  auto with_image = [&](const std::string& id) { return WithImage(id, digest); };
  FakeExecutor fake;
  {
    JobRunner runner(&fake, "");  // no preparer: an image cannot be run here
    runner.Apply(Json::array({with_image("job_1")}));
    EXPECT_EQ(fake.started.count("job_1"), 0u);
    Json r = runner.BuildReport(NoLogs(), {});
    ASSERT_EQ(r["jobs"].size(), 1u);
    EXPECT_EQ(r["jobs"][0]["state"], "failed_to_start");
    EXPECT_NE(r["jobs"][0]["reason"].get<std::string>().find("image"), std::string::npos) << r.dump();
  }
  JobRunner runner(&fake, "");
  std::vector<std::string> prepared;
  bool fail = false;
  runner.SetImagePreparer([&](const ExecSpec& spec) {
    prepared.push_back(spec.tenant + " " + spec.job_id + " " + spec.image);
    return fail ? absl::DataLossError("image " + spec.image + ": rootfs corrupted") : absl::OkStatus();
  });
  runner.Apply(Json::array({with_image("job_2"), Assignment("job_3", {})}));
  EXPECT_EQ(fake.started["job_3"].image, "host");  // host jobs need no preparation: at once
  ASSERT_TRUE(BeatUntil(runner, [&] { return fake.started.count("job_2") == 1; }));
  EXPECT_EQ(prepared, std::vector<std::string>{"ten_a job_2 " + digest});
  EXPECT_EQ(fake.started["job_2"].image, digest);
  EXPECT_EQ(fake.started["job_3"].image, "host");
  fail = true;
  runner.Apply(Json::array({with_image("job_2"), Assignment("job_3", {}), with_image("job_4")}));
  bool seen = false;
  Json r;
  ASSERT_TRUE(BeatUntil(runner, [&] {
    r = runner.BuildReport(NoLogs(), {});
    for (const Json& j : r["jobs"]) {
      if (j["id"] != "job_4") continue;
      seen = true;
      EXPECT_EQ(j["state"], "failed_to_start");
      EXPECT_EQ(j["reason"], "preparing its image failed: image " + digest + ": rootfs corrupted");
    }
    return seen;
  })) << r.dump();
  EXPECT_EQ(fake.started.count("job_4"), 0u);
}

// A slow preparation (a large image) runs on the runner's worker: heartbeats go on meanwhile, the
// job is not reported (still "placed" for the server) and starts once it is ready; a job the
// server moves away while its image is being prepared never starts here.
TEST(JobRunnerTest, ASlowImagePreparationDoesNotHoldUpTheHeartbeat) {
  const std::string digest = "sha256:" + std::string(64, 'f');
  auto with_image = [&](const std::string& id) { return WithImage(id, digest); };
  FakeExecutor fake;
  JobRunner runner(&fake, "");
  std::promise<void> release_first, release_second;
  std::shared_future<void> first = release_first.get_future().share();
  std::shared_future<void> second = release_second.get_future().share();
  std::atomic<int> calls{0}, done{0};
  runner.SetTransferDone([&] { ++done; });
  runner.SetImagePreparer([&](const ExecSpec& spec) {
    ++calls;
    (spec.job_id == "job_1" ? first : second).wait();  // as long as the download takes
    return absl::OkStatus();
  });
  runner.Apply(Json::array({with_image("job_1")}));
  for (int beat = 0; beat < 5; ++beat) {  // each returns at once while the image downloads
    const auto t0 = std::chrono::steady_clock::now();
    Json r = runner.BuildReport(NoLogs(), {});
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
    EXPECT_TRUE(r["jobs"].empty()) << r.dump();  // waiting: nothing to report yet
    runner.Apply(Json::array({with_image("job_1")}));
  }
  EXPECT_EQ(fake.started.count("job_1"), 0u);
  release_first.set_value();
  ASSERT_TRUE(BeatUntil(runner, [&] { return fake.started.count("job_1") == 1; }));
  EXPECT_EQ(calls.load(), 1);  // prepared once, whatever the number of beats
  EXPECT_GE(done.load(), 1);   // the agent's session was woken

  // Moved elsewhere mid-preparation: kept until the transfer returns, then forgotten unstarted.
  runner.Apply(Json::array({with_image("job_1"), with_image("job_2")}));
  ASSERT_TRUE(BeatUntil(runner, [&] { return calls.load() == 2; }));
  runner.Apply(Json::array({with_image("job_1")}));  // job_2 is no longer placed here
  (void)runner.BuildReport(NoLogs(), {});
  release_second.set_value();
  ASSERT_TRUE(BeatUntil(runner, [&] {
    runner.Apply(Json::array({with_image("job_1")}));
    return runner.size() == 1;
  }));
  EXPECT_EQ(fake.started.count("job_2"), 0u);
}

TEST(JobRunnerTest, ReattachesToRecoveredJobs) {
  FakeExecutor fake;
  {
    JobRunner first(&fake, "");
    first.Apply(Json::array({Assignment("job_1", {"GPU-a"})}));
  }
  JobRunner second(&fake, "");
  ASSERT_TRUE(second.Recover().ok());
  EXPECT_EQ(second.size(), 1u);
  std::vector<gpu::GpuDevice> gpus(1);
  gpus[0].uuid = "GPU-a";
  Json r = second.BuildReport(NoLogs(), gpus);
  ASSERT_EQ(r["jobs"].size(), 1u);
  EXPECT_EQ(r["jobs"][0]["state"], "running");
  EXPECT_TRUE(r["gpus"]["clean"].empty());  // still held by the re-attached job
}

// Issue 7 with the real handoff service over simulated GPUs: a job waits for its GPU's handoff,
// and its end sends the GPU back through quarantine and the scrub before it is reported clean.
// Fails if the runner started jobs on unverified GPUs or reported released GPUs clean at once.
TEST(JobRunnerHandoffTest, AJobWaitsForItsGpusHandoffAndItsEndStartsTheScrub) {
  auto backend = gpu::SimGpuBackend::Create("1xH100-80GB");
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto devices = (*backend)->Discover();
  ASSERT_TRUE(devices.ok());
  ASSERT_EQ(devices->size(), 1u);
  const std::string uuid = (*devices)[0].uuid;
  std::string dir = ::testing::TempDir() + "/runner_handoff";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto handoff = GpuHandoffService::Create({.data_dir = dir}, backend->get(), "sim");
  ASSERT_TRUE(handoff.ok()) << handoff.status();
  FakeExecutor fake;
  JobRunner runner(&fake, "");
  runner.SetHandoff(handoff->get());
  Json a = Assignment("job_1", {uuid});
  a["tenant"] = "t-acme";
  runner.Apply(Json::array({a}));
  // A new device is quarantined until its first handoff: the job waits, nothing is reported.
  Json r = runner.BuildReport(NoLogs(), *devices);
  EXPECT_TRUE(fake.started.empty());
  EXPECT_EQ(r["jobs"], Json::array());
  EXPECT_EQ(r["gpus"]["clean"], Json::array());
  (*handoff)->RunOnce();
  r = runner.BuildReport(NoLogs(), *devices);
  ASSERT_EQ(fake.started.count("job_1"), 1u) << r.dump();
  EXPECT_EQ(r["jobs"][0]["state"], "running");
  EXPECT_EQ((*handoff)->controller().Get(uuid)->state, gpu::HandoffState::kAssigned);
  // The job ends: its GPU is released into quarantine, not reported clean yet.
  fake.status["job_1"] = {ExecState::kExited, 0, "exited with code 0"};
  r = runner.BuildReport(NoLogs(), *devices);
  EXPECT_EQ(r["jobs"][0]["state"], "exited");
  EXPECT_EQ(r["gpus"]["clean"], Json::array());
  EXPECT_EQ((*handoff)->controller().Get(uuid)->state, gpu::HandoffState::kQuarantined);
  runner.Apply(Json::array());
  (*handoff)->RunOnce();  // process check, scrub, verify
  r = runner.BuildReport(NoLogs(), *devices);
  EXPECT_EQ(r["gpus"]["clean"], Json::array({uuid}));
}

// ---- MIG (issue 6) ----

Json MigAssignment(const std::string& id, const std::string& gpu, int profile, int start,
                   const std::string& tenant) {
  Json a = Assignment(id, {});
  a["gpus"] = Json::array({Json{{"index", 0}, {"uuid", gpu}, {"millis", 1000},
                                {"mig_profile_id", profile}, {"mig_start", start}}});
  a["tenant"] = tenant;
  return a;
}

TEST(JobRunnerTest, MigJobsGetTheirOwnInstanceUuidNeverTheParentGpu) {
  auto backend = *gpu::SimGpuBackend::Create("1xH100-80GB:mig", {.seed = "n1"});
  const std::string parent = (*backend->Discover())[0].uuid;
  auto mig = *MigManager::Create(backend.get(), "");
  FakeExecutor fake;
  JobRunner runner(&fake, "");
  runner.SetMigManager(mig.get());
  runner.Apply(Json::array({MigAssignment("job_a", parent, 19, 0, "t-acme"),
                            MigAssignment("job_b", parent, 9, 4, "t-globex")}));
  ASSERT_EQ(fake.started.size(), 2u);
  auto devices = *backend->Discover();
  ASSERT_EQ(devices[0].mig_instances.size(), 2u);
  const std::string a = devices[0].mig_instances[0].uuid, b = devices[0].mig_instances[1].uuid;
  EXPECT_EQ(devices[0].mig_instances[0].start, 0);
  EXPECT_EQ(devices[0].mig_instances[1].start, 4);
  for (const auto& [id, uuid] : {std::pair{"job_a", a}, std::pair{"job_b", b}}) {
    const ExecSpec& s = fake.started[id];
    EXPECT_EQ(s.gpu_uuids, std::vector<std::string>{uuid});
    EXPECT_EQ(EnvOf(s, "CUDA_VISIBLE_DEVICES"), uuid);
    EXPECT_EQ(EnvOf(s, "NVIDIA_VISIBLE_DEVICES"), uuid);
    EXPECT_EQ(EnvOf(s, "CUDA_VISIBLE_DEVICES").find(parent), std::string::npos);
  }
  EXPECT_NE(a, b);
  // Slices no job holds may be handed out again (every new instance is scrubbed before use):
  // the GPU is clean for the scheduler, which clears only slices no job holds.
  Json r = runner.BuildReport(NoLogs(), devices);
  EXPECT_EQ(r["gpus"]["clean"], Json::array({parent}));
  // job_a ends while a process still holds its instance: kept, and the GPU is not clean.
  ASSERT_TRUE(backend->AddProcess(parent, {99, 1, a}).ok());
  fake.status["job_a"] = {ExecState::kExited, 0, "exited with code 0"};
  r = runner.BuildReport(NoLogs(), devices);
  EXPECT_EQ(r["gpus"]["clean"], Json::array());
  EXPECT_EQ((*backend->Discover())[0].mig_instances.size(), 2u);
  // The process is gone: the instance is destroyed at the next beat; job_b's stays.
  ASSERT_TRUE(backend->RemoveProcess(parent, 99).ok());
  r = runner.BuildReport(NoLogs(), devices);
  EXPECT_EQ(r["gpus"]["clean"], Json::array({parent}));
  devices = *backend->Discover();
  ASSERT_EQ(devices[0].mig_instances.size(), 1u);
  EXPECT_EQ(devices[0].mig_instances[0].uuid, b);
}

TEST(JobRunnerTest, AMigJobFailsToStartWhenItsPlacementIsRefused) {
  auto backend = *gpu::SimGpuBackend::Create("1xH100-80GB:mig,1xH100-80GB", {.seed = "n1"});
  auto devices = *backend->Discover();
  auto mig = *MigManager::Create(backend.get(), "");
  FakeExecutor fake;
  JobRunner runner(&fake, "");
  runner.SetMigManager(mig.get());
  runner.Apply(Json::array({MigAssignment("job_bad", devices[0].uuid, 9, 2, "t"),    // 3g@2
                            MigAssignment("job_off", devices[1].uuid, 19, 0, "t")}));  // MIG off
  EXPECT_TRUE(fake.started.empty());
  Json r = runner.BuildReport(NoLogs(), devices);
  ASSERT_EQ(r["jobs"].size(), 2u);
  for (const auto& j : r["jobs"]) {
    EXPECT_EQ(j["state"], "failed_to_start");
    EXPECT_NE(j["reason"].get<std::string>().find("MIG"), std::string::npos) << j.dump();
  }
  EXPECT_FALSE((*backend->Discover())[1].mig_enabled);
  // Without a MIG manager a MIG job never runs on its parent GPU.
  FakeExecutor fake2;
  JobRunner plain(&fake2, "");
  plain.Apply(Json::array({MigAssignment("job_c", devices[0].uuid, 19, 0, "t")}));
  EXPECT_TRUE(fake2.started.empty());
}

TEST(JobRunnerTest, AfterARestartOrphanMigInstancesAreDestroyedAndLiveOnesKept) {
  auto backend = *gpu::SimGpuBackend::Create("1xH200-141GB:mig", {.seed = "n1"});
  const std::string parent = (*backend->Discover())[0].uuid;
  const std::string path = ::testing::TempDir() + "/runner-mig-" + std::to_string(::getpid());
  std::filesystem::remove(path);
  FakeExecutor fake;
  {
    auto mig = *MigManager::Create(backend.get(), path);
    JobRunner runner(&fake, "");
    runner.SetMigManager(mig.get());
    runner.Apply(Json::array({MigAssignment("job_a", parent, 19, 0, "t"),
                              MigAssignment("job_b", parent, 19, 1, "t")}));
    ASSERT_EQ(fake.started.size(), 2u);
  }  // agent gone; job_a's state vanished with it (it ended and was cleaned up)
  const std::string keep = fake.started["job_b"].gpu_uuids[0];
  fake.started.erase("job_a");
  ASSERT_TRUE(backend->CreateMigInstanceAt(parent, 9, 4).ok());  // an operator's instance
  auto mig = *MigManager::Create(backend.get(), path);
  JobRunner runner(&fake, "");
  runner.SetMigManager(mig.get());
  ASSERT_TRUE(runner.Recover().ok());
  EXPECT_EQ(runner.mig_report().destroyed.size(), 1u);
  EXPECT_EQ(runner.mig_report().foreign.size(), 1u);
  auto inst = (*backend->Discover())[0].mig_instances;
  ASSERT_EQ(inst.size(), 2u);
  EXPECT_EQ(inst[0].uuid, keep);
  EXPECT_EQ(inst[1].start, 4);
  std::filesystem::remove(path);
}

TEST(JobRunnerTest, AForeignMigInstanceMakesItsGpuDirtyUntilItIsGone) {
  auto backend = *gpu::SimGpuBackend::Create("2xH100-80GB:mig", {.seed = "n1"});
  auto devices = *backend->Discover();
  auto mig = *MigManager::Create(backend.get(), "");
  FakeExecutor fake;
  JobRunner runner(&fake, "");
  runner.SetMigManager(mig.get());
  Json r = runner.BuildReport(NoLogs(), devices);
  EXPECT_EQ(r["gpus"]["clean"], Json::array({devices[0].uuid, devices[1].uuid}));
  // An operator's instance on GPU 1: the scheduler does not know its slices.
  auto foreign = backend->CreateMigInstanceAt(devices[1].uuid, 19, 0);
  ASSERT_TRUE(foreign.ok());
  devices = *backend->Discover();
  r = runner.BuildReport(NoLogs(), devices);
  EXPECT_EQ(r["gpus"]["clean"], Json::array({devices[0].uuid}));
  EXPECT_EQ(r["gpus"]["dirty"], Json::array({devices[1].uuid}));
  // The inventory marks ours with the job and leaves the foreign one unmarked.
  runner.Apply(Json::array({MigAssignment("job_a", devices[1].uuid, 19, 1, "t")}));
  devices = *backend->Discover();
  runner.AnnotateMig(devices);
  ASSERT_EQ(devices[1].mig_instances.size(), 2u);
  EXPECT_EQ(devices[1].mig_instances[0].job_id, "");
  EXPECT_EQ(devices[1].mig_instances[1].job_id, "job_a");
  ASSERT_TRUE(backend->DestroyMigInstance(devices[1].uuid, foreign->uuid).ok());
  devices = *backend->Discover();
  r = runner.BuildReport(NoLogs(), devices);
  EXPECT_EQ(r["gpus"]["dirty"], Json::array());
  EXPECT_EQ(r["gpus"]["clean"], Json::array({devices[0].uuid, devices[1].uuid}));
}

}  // namespace
}  // namespace warden::agent
