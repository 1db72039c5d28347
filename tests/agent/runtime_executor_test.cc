// RuntimeExecutor over real runc (the agent's sandbox executor, issue 7): ExecSpec mapping (GPU
// nodes and visibility, limits), Poll/Cancel/LogPaths/Recover/Forget on the runner's state, a
// new executor re-attaching to a running job, a short cancel grace enforced by Poll, OOM.
// Skips with the reason where runc cannot run (not root, no runc); fails instead under CI=true.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <fstream>
#include <sstream>
#include <thread>

#include "agent/executor.h"

namespace warden::agent {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const char kGpu0[] = "GPU-00000000-0000-0000-0000-000000000000";
const char kGpu1[] = "GPU-11111111-1111-1111-1111-111111111111";

class RuntimeExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (geteuid() != 0) why = "needs root";
    if (why.empty() && std::system("command -v runc >/dev/null") != 0) why = "runc is not installed";
    if (!why.empty()) {
      const char* ci = std::getenv("CI");
      if (ci != nullptr && std::string(ci) == "true") FAIL() << why;
      GTEST_SKIP() << why;
    }
    base_ = fs::temp_directory_path() / ("rtexec_" + std::to_string(getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    fs::create_directories(base_ / "dev");
    fs::permissions(base_, fs::perms(0755));
    // Stand-in GPU nodes (the numbers of /dev/null: harmless to open).
    for (int i = 0; i < 2; ++i) {
      std::string p = (base_ / "dev" / ("nvidia" + std::to_string(i))).string();
      ASSERT_EQ(mknod(p.c_str(), S_IFCHR | 0666, makedev(1, 3)), 0) << p;
    }
    Open();
  }

  void TearDown() override {
    if (exec_ != nullptr) {
      for (const std::string& id : started_) {
        (void)exec_->Cancel(id, absl::ZeroDuration());
        WaitEnded(id, std::chrono::seconds(20));
        (void)exec_->Forget(id);
      }
    }
    exec_.reset();
    std::error_code ec;
    if (!base_.empty()) fs::remove_all(base_, ec);
  }

  void Open() {
    RuntimeExecutorOptions o;
    o.runner.state_dir = (base_ / "sandbox").string();
    o.runner.image_root = (base_ / "images").string();
    o.runner.host_dev_dir = (base_ / "dev").string();
    o.runner.shim_command = {WARDEN_SHIM_PATH};
    o.runner.cancel_grace = absl::Minutes(10);  // a short grace must come from Poll, not the shim
    o.resolve_gpu = [](const std::string& uuid) -> absl::StatusOr<runtime::GpuDevice> {
      if (uuid == kGpu0) return runtime::GpuDevice{uuid, "/dev/nvidia0", {}};
      if (uuid == kGpu1) return runtime::GpuDevice{uuid, "/dev/nvidia1", {}};
      return absl::NotFoundError("no such GPU");
    };
    o.default_memory_bytes = 256ull << 20;
    if (prepared_ > 0) {
      o.runner.launcher_path = WARDEN_LAUNCHER_PATH;
      o.prepared_per_pair = prepared_;
    }
    auto e = CreateRuntimeExecutor(std::move(o));
    ASSERT_TRUE(e.ok()) << e.status();
    exec_ = std::move(*e);
  }

  ExecSpec Spec(const std::string& tenant, const std::string& script) {
    ExecSpec s;
    s.job_id = "job_" + std::to_string(getpid()) + "_" + std::to_string(++n_);
    s.tenant = tenant;
    s.argv = {"sh", "-c", script};
    s.env = {{"PATH", "/usr/sbin:/usr/bin:/sbin:/bin"}, {"HOME", "/tmp"}};
    return s;
  }

  absl::Status Start(const ExecSpec& s) {
    absl::Status st = exec_->Start(s);
    if (st.ok()) started_.push_back(s.job_id);
    return st;
  }

  ExecStatus WaitEnded(const std::string& id, std::chrono::seconds limit = std::chrono::seconds(30)) {
    auto deadline = Clock::now() + limit;
    ExecStatus last;
    while (Clock::now() < deadline) {
      auto st = exec_->Poll(id);
      if (!st.ok()) return ExecStatus{ExecState::kLost, -1, std::string(st.status().message())};
      last = *st;
      if (last.state != ExecState::kRunning) return last;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return last;
  }

  fs::path base_;
  std::unique_ptr<JobExecutor> exec_;
  std::vector<std::string> started_;
  int n_ = 0;
  int prepared_ = 0;
};

TEST_F(RuntimeExecutorTest, RunsInTheSandboxWithExactlyTheAssignedGpu) {
  ExecSpec s = Spec("acme", "echo pid=$$ uid=$(id -u) cuda=$CUDA_VISIBLE_DEVICES nv=$NVIDIA_VISIBLE_DEVICES; "
                            "ls /dev | grep nvidia; echo err >&2; exit 3");
  s.gpu_uuids = {kGpu1};
  // What the job runner puts in the env; the sandbox derives both from the resolved GPUs.
  s.env.emplace_back("CUDA_VISIBLE_DEVICES", kGpu1);
  s.env.emplace_back("NVIDIA_VISIBLE_DEVICES", kGpu1);
  ASSERT_TRUE(Start(s).ok());
  ExecStatus st = WaitEnded(s.job_id);
  EXPECT_EQ(st.state, ExecState::kExited) << st.reason;
  EXPECT_EQ(st.exit_code, 3);
  auto [out, err] = exec_->LogPaths(s.job_id);
  EXPECT_EQ(Slurp(out), std::string("pid=1 uid=1000 cuda=") + kGpu1 + " nv=" + kGpu1 + "\nnvidia1\n");
  EXPECT_EQ(Slurp(err), "err\n");
  // A job with no GPU sees none.
  ExecSpec none = Spec("acme", "ls /dev | grep -c nvidia; echo cuda=[$CUDA_VISIBLE_DEVICES]");
  ASSERT_TRUE(Start(none).ok());
  EXPECT_EQ(WaitEnded(none.job_id).state, ExecState::kExited);
  EXPECT_EQ(Slurp(exec_->LogPaths(none.job_id).first), "0\ncuda=[]\n");
}

TEST_F(RuntimeExecutorTest, RefusesLoaderVariablesUnknownGpusAndDuplicates) {
  ExecSpec s = Spec("acme", "true");
  s.env.emplace_back("LD_PRELOAD", "/tmp/evil.so");
  absl::Status st = Start(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(std::string(st.message()).find("LD_PRELOAD"), std::string::npos) << st;
  ExecSpec g = Spec("acme", "true");
  g.gpu_uuids = {"GPU-99999999-9999-9999-9999-999999999999"};
  EXPECT_EQ(Start(g).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(exec_->Poll(g.job_id).status().code(), absl::StatusCode::kNotFound);  // nothing left
  ExecSpec ok = Spec("acme", "sleep 5");
  ASSERT_TRUE(Start(ok).ok());
  EXPECT_EQ(exec_->Start(ok).code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(RuntimeExecutorTest, ANewExecutorReattachesToARunningJob) {
  ExecSpec s = Spec("acme", "echo before; sleep 2; echo after");
  s.gpu_uuids = {kGpu0};
  ASSERT_TRUE(Start(s).ok());
  exec_.reset();  // the agent goes away (its shim keeps the job)
  Open();
  auto specs = exec_->Recover();
  ASSERT_TRUE(specs.ok()) << specs.status();
  ASSERT_EQ(specs->size(), 1u);
  EXPECT_EQ((*specs)[0].job_id, s.job_id);
  EXPECT_EQ((*specs)[0].tenant, "acme");
  EXPECT_EQ((*specs)[0].gpu_uuids, std::vector<std::string>{kGpu0});
  EXPECT_EQ(exec_->Poll(s.job_id)->state, ExecState::kRunning);
  ExecStatus st = WaitEnded(s.job_id);
  EXPECT_EQ(st.state, ExecState::kExited) << st.reason;
  EXPECT_EQ(st.exit_code, 0);
  EXPECT_EQ(Slurp(exec_->LogPaths(s.job_id).first), "before\nafter\n");
  ASSERT_TRUE(exec_->Forget(s.job_id).ok());
  EXPECT_EQ(exec_->Poll(s.job_id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(exec_->Recover()->empty());
}

TEST_F(RuntimeExecutorTest, CancelHonoursGraceThenKills) {
  ExecSpec polite = Spec("acme", "trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 0.1; done");
  ASSERT_TRUE(Start(polite).ok());
  auto up = [&](const std::string& id) {
    for (int i = 0; i < 100 && Slurp(exec_->LogPaths(id).first).empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  };
  up(polite.job_id);
  ASSERT_TRUE(exec_->Cancel(polite.job_id, absl::Seconds(5)).ok());
  ExecStatus st = WaitEnded(polite.job_id);
  EXPECT_EQ(st.state, ExecState::kCancelled) << st.reason;
  EXPECT_EQ(st.exit_code, 0);
  EXPECT_EQ(Slurp(exec_->LogPaths(polite.job_id).first), "up\nbye\n");
  // Ignores SIGTERM: killed once its 1 s grace is over (the runner's own grace is 10 minutes).
  ExecSpec stubborn = Spec("acme", "trap '' TERM; echo up; while :; do sleep 0.1; done");
  ASSERT_TRUE(Start(stubborn).ok());
  up(stubborn.job_id);
  auto t0 = Clock::now();
  ASSERT_TRUE(exec_->Cancel(stubborn.job_id, absl::Seconds(1)).ok());
  ASSERT_TRUE(exec_->Cancel(stubborn.job_id, absl::Seconds(1)).ok());  // idempotent
  st = WaitEnded(stubborn.job_id);
  EXPECT_EQ(st.state, ExecState::kCancelled) << st.reason;
  EXPECT_EQ(st.exit_code, 137);
  EXPECT_GE(Clock::now() - t0, std::chrono::seconds(1));
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(15));
}

TEST_F(RuntimeExecutorTest, LimitsReachTheSandboxOomAndWallTime) {
  ExecSpec hog = Spec("acme", "exec tail /dev/zero");
  hog.memory_bytes = 32ll << 20;
  ExecSpec victim = Spec("beta", "sleep 3; echo fine");
  ASSERT_TRUE(Start(victim).ok());
  ASSERT_TRUE(Start(hog).ok());
  ExecStatus st = WaitEnded(hog.job_id);
  EXPECT_EQ(st.state, ExecState::kOom) << st.reason;
  EXPECT_NE(st.reason.find("32 MiB"), std::string::npos) << st.reason;
  EXPECT_EQ(exec_->Poll(victim.job_id)->state, ExecState::kRunning);
  EXPECT_EQ(WaitEnded(victim.job_id).state, ExecState::kExited);
  EXPECT_EQ(Slurp(exec_->LogPaths(victim.job_id).first), "fine\n");
  ExecSpec slow = Spec("acme", "sleep 60");
  slow.wall_time = absl::Seconds(1);
  ASSERT_TRUE(Start(slow).ok());
  st = WaitEnded(slow.job_id, std::chrono::seconds(20));
  EXPECT_EQ(st.state, ExecState::kExited) << st.reason;
  EXPECT_NE(st.reason.find("wall-time limit exceeded"), std::string::npos) << st.reason;
}

}  // namespace
}  // namespace warden::agent

namespace warden::agent {
namespace {

size_t PreparedWaiting(const fs::path& base) {
  std::error_code ec;
  size_t n = 0;
  for (auto it = fs::directory_iterator(base / "sandbox" / "prepared", ec); !ec && it != fs::directory_iterator(); ++it) ++n;
  return n;
}

bool RanPrepared(const fs::path& base, const std::string& id) {
  return Slurp((base / "sandbox" / "jobs" / id / "job.json").string()).find("\"prepared\":true") != std::string::npos;
}

TEST_F(RuntimeExecutorTest, PreparedSandboxesServeATenantsNextJobOnly) {
  exec_.reset();
  prepared_ = 1;
  Open();
  ExecSpec first = Spec("acme", "echo first");
  ASSERT_TRUE(Start(first).ok());
  EXPECT_FALSE(RanPrepared(base_, first.job_id));  // nothing was waiting yet
  for (int i = 0; i < 200 && PreparedWaiting(base_) < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(PreparedWaiting(base_), 1u) << "no sandbox was prepared after acme's first job";
  // Another tenant's job does not take acme's sandbox.
  ExecSpec other = Spec("globex", "id -u");
  ASSERT_TRUE(Start(other).ok());
  EXPECT_FALSE(RanPrepared(base_, other.job_id));
  // A job with a GPU starts cold.
  ExecSpec gpu = Spec("acme", "ls /dev | grep nvidia");
  gpu.gpu_uuids = {kGpu0};
  ASSERT_TRUE(Start(gpu).ok());
  EXPECT_FALSE(RanPrepared(base_, gpu.job_id));
  // acme's next job is handed to the waiting sandbox, with its own command, env and limits.
  ExecSpec second = Spec("acme", "echo second uid=$(id -u) home=$HOME pid=$$");
  ASSERT_TRUE(Start(second).ok());
  EXPECT_TRUE(RanPrepared(base_, second.job_id));
  EXPECT_EQ(WaitEnded(second.job_id).state, ExecState::kExited);
  EXPECT_EQ(Slurp(exec_->LogPaths(second.job_id).first), "second uid=1000 home=/tmp pid=1\n");
  EXPECT_EQ(WaitEnded(gpu.job_id).state, ExecState::kExited);
  EXPECT_EQ(Slurp(exec_->LogPaths(gpu.job_id).first), "nvidia0\n");
  // The executor going away ends the sandboxes still waiting.
  for (int i = 0; i < 200 && PreparedWaiting(base_) < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  for (const std::string& id : started_) WaitEnded(id);
  exec_.reset();
  for (int i = 0; i < 200 && PreparedWaiting(base_) > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(PreparedWaiting(base_), 0u);
  Open();  // for TearDown
}

TEST_F(RuntimeExecutorTest, ARestartedAgentPreparesForThePairsItRanBefore) {
  exec_.reset();
  prepared_ = 1;
  Open();
  ExecSpec first = Spec("acme", "echo secret-command-text");
  first.env.emplace_back("TOKEN", "secret-env-value");
  ASSERT_TRUE(Start(first).ok());
  for (int i = 0; i < 200 && PreparedWaiting(base_) < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(PreparedWaiting(base_), 1u);
  EXPECT_EQ(WaitEnded(first.job_id).state, ExecState::kExited);
  // The agent restarts: its waiting sandboxes end with it...
  exec_.reset();
  for (int i = 0; i < 200 && PreparedWaiting(base_) > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(PreparedWaiting(base_), 0u);
  // ...and what it kept of the pair is its shape, not the tenant's command or environment.
  const std::string kept = Slurp((base_ / "sandbox" / "specs" / "warm-pairs.list").string());
  EXPECT_NE(kept.find("\"acme\""), std::string::npos) << kept;
  EXPECT_EQ(kept.find("secret-command-text"), std::string::npos) << kept;
  EXPECT_EQ(kept.find("secret-env-value"), std::string::npos) << kept;
  // The new executor prepares for acme before any new job arrives, and acme's first job after
  // the restart takes that sandbox.
  Open();
  for (int i = 0; i < 200 && PreparedWaiting(base_) < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(PreparedWaiting(base_), 1u) << "nothing was prepared after the restart";
  // The runner lists a sandbox right after its bundle is written and its shim spawned (a job
  // handed over then waits for the launcher's start report): wait for the bundle, then a little.
  bool bundled = false;
  for (int i = 0; i < 200 && !bundled; ++i) {
    for (auto it = fs::directory_iterator(base_ / "sandbox" / "prepared"); it != fs::directory_iterator(); ++it) {
      bundled = bundled || fs::exists(it->path() / "bundle" / "config.json");
    }
    if (!bundled) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ExecSpec after = Spec("acme", "echo after");
  ASSERT_TRUE(Start(after).ok());
  EXPECT_TRUE(RanPrepared(base_, after.job_id));
  EXPECT_EQ(WaitEnded(after.job_id).state, ExecState::kExited);
  EXPECT_EQ(Slurp(exec_->LogPaths(after.job_id).first), "after\n");
}

}  // namespace
}  // namespace warden::agent
