// Integration tests over real runc with a busybox-static rootfs (tools/build-busybox-rootfs.sh)
// and a static escape helper. Each escape test is an attack that must fail or be contained while
// a victim job of another tenant keeps running; most carry a positive control showing the same
// probe succeeds where it is allowed, so a broken probe cannot pass for a defence.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "common/json.h"
#include "runtime/image.h"
#include "runtime/job_files.h"
#include "runtime/oci_spec.h"
#include "runtime/runtime.h"

namespace warden::runtime {
namespace {

namespace fs = std::filesystem;
using common::Json;

std::string g_skip;
fs::path g_base;
std::string g_image_alpha, g_image_beta;

// Build-time paths, overridable for a copy of the test binary run on another machine.
std::string ShimPath() {
  const char* p = std::getenv("WARDEN_SHIM_PATH");
  return p ? p : WARDEN_SHIM_PATH;
}
std::string LauncherPath() {
  const char* p = std::getenv("WARDEN_LAUNCHER_PATH");
  return p ? p : WARDEN_LAUNCHER_PATH;
}
std::string HelperPath() {
  const char* p = std::getenv("WARDEN_ESCAPE_HELPER");
  return p ? p : WARDEN_ESCAPE_HELPER;
}

bool InCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

class RuncTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (getuid() != 0) {
      g_skip = "runtime integration tests need root (runc with user namespaces and cgroups)";
    } else if (std::system("runc --version >/dev/null 2>&1") != 0) {
      g_skip = "runc is not installed (apt-get install runc)";
    }
    if (!g_skip.empty()) return;
    g_base = fs::temp_directory_path() / ("runc_test_" + std::to_string(getpid()));
    fs::remove_all(g_base);
    fs::create_directories(g_base);
    chmod(g_base.c_str(), 0755);
    std::string cmd = "bash tools/build-busybox-rootfs.sh " + (g_base / "bb").string() + " --add " +
                      HelperPath() + " >/dev/null";
    if (std::system(cmd.c_str()) != 0) {
      g_skip = "tools/build-busybox-rootfs.sh failed (is busybox-static installed?)";
      return;
    }
    std::string layout = (g_base / "bb/oci").string();
    auto a = ImportImage((g_base / "images").string(), "alpha", layout);
    auto b = ImportImage((g_base / "images").string(), "beta", layout);
    if (!a.ok() || !b.ok()) {
      g_skip = "image import failed: " + std::string((a.ok() ? b.status() : a.status()).message());
      return;
    }
    g_image_alpha = a->digest;
    g_image_beta = b->digest;
  }
  static void TearDownTestSuite() {
    if (!g_base.empty() && std::getenv("WARDEN_TEST_KEEP") == nullptr) fs::remove_all(g_base);
  }

  void SetUp() override {
    if (!g_skip.empty()) {
      if (InCi()) FAIL() << "CI=true but " << g_skip;
      GTEST_SKIP() << g_skip;
    }
    name_ = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(name_.begin(), name_.end(), '/', '-');  // parameterised tests: "Name/Prepared"
    state_ = g_base / ("state-" + name_);
    fs::remove_all(state_);
    Open();
  }
  void TearDown() override {
    if (runner_) {
      for (const JobInfo& j : runner_->List()) {
        if (j.state == JobState::kRunning) {
          (void)runner_->Signal(j.job_id, SIGKILL);
          (void)runner_->Wait(j.job_id, absl::Seconds(20));
        }
        // Remove waits for the shim's runtime cleanup, which runs after the result is out.
        if (std::getenv("WARDEN_TEST_KEEP") == nullptr) (void)runner_->Remove(j.job_id);
      }
    }
    runner_.reset();
    std::error_code ec;
    if (!state_.empty() && std::getenv("WARDEN_TEST_KEEP") == nullptr) fs::remove_all(state_, ec);
  }

  RunnerOptions Options() {
    RunnerOptions o;
    o.runtime = kind_;
    o.state_dir = state_.string();
    o.shim_command = {ShimPath()};
    o.launcher_path = LauncherPath();
    o.image_root = (g_base / "images").string();
    o.host_dev_dir = (g_base / "dev").string();
    o.cancel_grace = absl::Seconds(1);
    o.spec_hook = hook_;
    return o;
  }
  void Open() {
    auto r = CreateRunner(Options());
    ASSERT_TRUE(r.ok()) << r.status();
    runner_ = std::move(*r);
  }

  std::string Id(const std::string& suffix) {
    return (name_.substr(0, 30) + "-" + suffix + "-" + std::to_string(getpid()));
  }

  SandboxSpec Spec(const std::string& tenant, const std::string& suffix, std::vector<std::string> argv) {
    SandboxSpec s;
    s.tenant = tenant;
    s.job_id = Id(suffix);
    s.argv = std::move(argv);
    s.image = tenant == "beta" ? g_image_beta : g_image_alpha;
    s.memory_bytes = 128ull << 20;
    s.pids_max = 64;
    s.scratch_bytes = 16ull << 20;
    s.wall_time = absl::Seconds(60);
    return s;
  }
  static std::vector<std::string> Sh(const std::string& script) { return {"/bin/sh", "-c", script}; }

  struct Run {
    JobResult result;
    std::string out, err;
  };
  // Starts `s` cold, or with warm_ through a sandbox prepared for it beforehand (with the
  // default limits of Spec(), so the job's own limits are the ones written at the hand-over).
  absl::Status StartJob(const SandboxSpec& s) {
    if (warm_) {
      SandboxSpec like = s;
      like.memory_bytes = 128ull << 20;
      like.pids_max = 64;
      like.cpu_millis = 1000;
      absl::Status prepared = runner_->Prepare(like);
      EXPECT_TRUE(prepared.ok()) << prepared;
    }
    absl::Status st = runner_->Start(s);
    if (warm_ && st.ok()) {
      auto info = runner_->Get(s.job_id);
      EXPECT_TRUE(info.ok() && info->prepared) << s.job_id << " did not run in its prepared sandbox";
    }
    return st;
  }

  Run RunJob(const SandboxSpec& s) {
    Run r;
    absl::Status st = StartJob(s);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return r;
    auto res = runner_->Wait(s.job_id, absl::Seconds(60));
    EXPECT_TRUE(res.ok()) << res.status();
    if (res.ok()) r.result = *res;
    auto info = runner_->Get(s.job_id);
    if (info.ok()) {
      r.out = ReadFileToString(info->stdout_path).value_or("");
      r.err = ReadFileToString(info->stderr_path).value_or("");
    }
    return r;
  }
  // Runs the escape helper; returns its output line(s).
  std::string Helper(const std::string& tenant, const std::string& suffix, std::vector<std::string> args,
                     std::function<void(SandboxSpec&)> edit = nullptr) {
    std::vector<std::string> argv = {"/bin/escape-helper"};
    argv.insert(argv.end(), args.begin(), args.end());
    SandboxSpec s = Spec(tenant, suffix, argv);
    if (edit) edit(s);
    Run r = RunJob(s);
    return r.out + r.err;
  }

  // A job of another tenant that must keep running, untouched, through an attack.
  void StartVictim() {
    victim_ = Spec("beta", "victim", Sh("echo victim-secret > /scratch/secret; i=0; while true; do "
                                        "i=$((i+1)); echo tick $i; sleep 0.1; done"));
    ASSERT_TRUE(StartJob(victim_).ok());
  }
  void ExpectVictimUnharmed() {
    auto info = runner_->Get(victim_.job_id);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->state, JobState::kRunning) << "the victim job died during the attack";
    std::string before = ReadFileToString(info->stdout_path).value_or("");
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    std::string after = ReadFileToString(info->stdout_path).value_or("");
    EXPECT_GT(after.size(), before.size()) << "the victim job stopped making progress";
    ASSERT_TRUE(runner_->Cancel(victim_.job_id).ok());
    auto res = runner_->Wait(victim_.job_id, absl::Seconds(20));
    ASSERT_TRUE(res.ok());
    EXPECT_TRUE(res->cancelled);
    EXPECT_FALSE(res->oom_killed);
  }

  // mount, ptrace, bpf, keyctl, raw/packet sockets, module loading and new user namespaces all
  // fail, while a victim job of another tenant keeps running.
  void ExpectForbiddenSyscallsFail() {
  StartVictim();
  // Control: the helper runs and an ordinary socket works.
  EXPECT_EQ(Helper("alpha", "tcp", {"tcpsock"}), "tcpsock ok\n");
  for (const char* attack : {"mount", "ptrace", "bpf", "keyctl", "rawsock", "packetsock", "init_module",
                             "finit_module", "userns"}) {
    std::string out = Helper("alpha", attack, {attack});
    EXPECT_EQ(out.rfind(std::string(attack) + " fail", 0), 0u) << attack << ": " << out;
  }
  ExpectVictimUnharmed();
  }

  uint32_t UidBase(const std::string& tenant) {
    auto text = ReadFileToString(state_.string() + "/uid-slots.json");
    EXPECT_TRUE(text.ok());
    Json j = Json::parse(text.value_or("{}"));
    return (1u << 20) + j.value(tenant, 0u) * kIdsPerTenant;
  }

  std::string name_;
  fs::path state_;
  std::unique_ptr<Runner> runner_;
  std::function<std::string(std::string)> hook_;
  SandboxSpec victim_;
  RuntimeKind kind_ = RuntimeKind::kRunc;
  bool warm_ = false;  // start jobs through prepared sandboxes (SandboxPathTest's "Prepared")
};

// The tests that must hold on both start paths, cold (a container per job) and prepared (a job
// handed to a sandbox made before it arrived), under runc and, where the cgroup layout allows, crun.
struct SandboxPath {
  RuntimeKind runtime;
  bool prepared;
  const char* name;
};
// The path's name in test listings (ctest, gtest), not a byte dump.
void PrintTo(const SandboxPath& p, std::ostream* os) { *os << p.name; }
class SandboxPathTest : public RuncTest, public ::testing::WithParamInterface<SandboxPath> {
 protected:
  void SetUp() override {
    warm_ = GetParam().prepared;
    kind_ = GetParam().runtime;
    if (kind_ == RuntimeKind::kCrun && g_skip.empty()) {
      // crun refuses hybrid cgroup hosts (RECIPES: this build machine); on a pure v1 or v2 host
      // (the GPU machine) every test below runs under crun too.
      auto layout = DetectCgroupLayout();
      ASSERT_TRUE(layout.ok()) << layout.status();
      if (layout->mode == CgroupLayout::Mode::kHybrid) {
        GTEST_SKIP() << "crun refuses hybrid cgroup hosts (RECIPES); the runc paths cover this machine";
      }
      if (std::system("crun --version >/dev/null 2>&1") != 0) {
        if (InCi()) FAIL() << "CI=true on a host whose cgroups crun accepts, but crun is not installed";
        GTEST_SKIP() << "crun not installed";
      }
    }
    RuncTest::SetUp();
  }
};
INSTANTIATE_TEST_SUITE_P(Paths, SandboxPathTest,
                         ::testing::Values(SandboxPath{RuntimeKind::kRunc, false, "Cold"},
                                           SandboxPath{RuntimeKind::kRunc, true, "Prepared"},
                                           SandboxPath{RuntimeKind::kCrun, false, "CrunCold"},
                                           SandboxPath{RuntimeKind::kCrun, true, "CrunPrepared"}),
                         [](const ::testing::TestParamInfo<SandboxPath>& i) { return i.param.name; });

TEST_P(SandboxPathTest, RunsAJobAndCapturesOutputExitCodeAndUsage) {
  Run r = RunJob(Spec("alpha", "a", Sh("echo hello; echo oops >&2; id -u; exit 3")));
  EXPECT_EQ(r.result.exit_code, 3);
  EXPECT_EQ(r.result.signal, 0);
  EXPECT_FALSE(r.result.oom_killed);
  EXPECT_TRUE(r.result.error.empty()) << r.result.error;
  EXPECT_EQ(r.out, "hello\n1000\n");
  EXPECT_EQ(r.err, "oops\n");
  EXPECT_GT(r.result.usage.peak_memory_bytes, 0u);
  EXPECT_GT(r.result.usage.cpu_time_usec, 0u);
}

TEST_P(SandboxPathTest, AStartFailureIsReportedWithTheRuntimesMessage) {
  absl::Status st = StartJob(Spec("alpha", "nf", {"/bin/does-not-exist"}));
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_NE(std::string(st.message()).find("does-not-exist"), std::string::npos) << st;
  EXPECT_FALSE(runner_->Get(Id("nf")).ok());
  // The id can be used again.
  EXPECT_TRUE(RunJob(Spec("alpha", "nf", {"/bin/true"})).result.exit_code == 0);
}

TEST_F(RuncTest, TenantsMapToDistinctUnprivilegedHostUids) {
  Run a = RunJob(Spec("alpha", "a", Sh("cat /proc/self/uid_map")));
  Run b = RunJob(Spec("beta", "b", Sh("cat /proc/self/uid_map")));
  std::istringstream ia(a.out), ib(b.out);
  uint64_t c1, h1, n1, c2, h2, n2;
  ASSERT_TRUE(ia >> c1 >> h1 >> n1) << a.out;
  ASSERT_TRUE(ib >> c2 >> h2 >> n2) << b.out;
  EXPECT_EQ(c1, 0u);
  EXPECT_GE(h1, 1u << 20);
  EXPECT_GE(h2, 1u << 20);
  EXPECT_TRUE(h1 + n1 <= h2 || h2 + n2 <= h1) << "tenant uid ranges overlap";
}

TEST_F(RuncTest, TwoTenantsNeverShareAUidRangeEvenWhenSlotsRunOut) {
  RunnerOptions o = Options();
  o.uid_slots = 1;  // both tenants prefer slot 0: the second must be refused, not share it
  auto r = CreateRunner(o);
  ASSERT_TRUE(r.ok());
  runner_ = std::move(*r);
  EXPECT_EQ(RunJob(Spec("alpha", "one", {"/bin/true"})).result.exit_code, 0);
  absl::Status st = runner_->Start(Spec("beta", "two", {"/bin/true"}));
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  // The allocation is durable: a new runner keeps alpha's slot.
  Open();
  EXPECT_EQ(RunJob(Spec("alpha", "three", {"/bin/true"})).result.exit_code, 0);
}

TEST_P(SandboxPathTest, LogsAreReadableWhileTheJobRuns) {
  SandboxSpec s = Spec("alpha", "l", Sh("echo first; sleep 30"));
  ASSERT_TRUE(StartJob(s).ok());
  auto info = runner_->Get(s.job_id);
  ASSERT_TRUE(info.ok());
  std::string out;
  for (int i = 0; i < 100 && out.empty(); ++i) {
    out = ReadFileToString(info->stdout_path).value_or("");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(out, "first\n");
  EXPECT_EQ(runner_->Get(s.job_id)->state, JobState::kRunning);
}

TEST_P(SandboxPathTest, CancelSendsTermThenKillAfterTheGracePeriod) {
  SandboxSpec polite = Spec("alpha", "p", Sh("trap 'echo got-term; exit 7' TERM; while true; do sleep 0.05; done"));
  SandboxSpec stubborn = Spec("alpha", "s", Sh("trap '' TERM; while true; do sleep 0.05; done"));
  ASSERT_TRUE(StartJob(polite).ok());
  ASSERT_TRUE(StartJob(stubborn).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE(runner_->Cancel(polite.job_id).ok());
  ASSERT_TRUE(runner_->Cancel(stubborn.job_id).ok());
  auto p = runner_->Wait(polite.job_id, absl::Seconds(20));
  auto s = runner_->Wait(stubborn.job_id, absl::Seconds(20));
  ASSERT_TRUE(p.ok() && s.ok());
  EXPECT_TRUE(p->cancelled);
  EXPECT_EQ(p->exit_code, 7);
  EXPECT_NE(ReadFileToString(runner_->Get(polite.job_id)->stdout_path).value_or("").find("got-term"), std::string::npos);
  EXPECT_TRUE(s->cancelled);
  EXPECT_EQ(s->signal, SIGKILL);
  EXPECT_EQ(runner_->Cancel(polite.job_id).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_P(SandboxPathTest, SignalsReachTheJob) {
  SandboxSpec s = Spec("alpha", "u", Sh("trap 'echo usr1; exit 5' USR1; while true; do sleep 0.05; done"));
  ASSERT_TRUE(StartJob(s).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE(runner_->Signal(s.job_id, SIGUSR1).ok());
  auto r = runner_->Wait(s.job_id, absl::Seconds(20));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 5);
  EXPECT_FALSE(r->cancelled);
}

TEST_P(SandboxPathTest, WallTimeLimitEndsTheJob) {
  SandboxSpec s = Spec("alpha", "w", {"/bin/sleep", "60"});
  s.wall_time = absl::Milliseconds(500);
  auto t0 = std::chrono::steady_clock::now();
  Run r = RunJob(s);
  EXPECT_TRUE(r.result.wall_time_exceeded);
  // sleep as the namespace's init has no TERM handler, so the kernel drops SIGTERM and the
  // grace period ends in SIGKILL.
  EXPECT_EQ(r.result.signal, SIGKILL);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
}

TEST_P(SandboxPathTest, ARestartedRunnerReattachesToRunningJobs) {
  SandboxSpec s = Spec("alpha", "r", Sh("sleep 1; echo finished; exit 4"));
  ASSERT_TRUE(StartJob(s).ok());
  runner_.reset();  // the agent goes away; the shim keeps the job
  Open();
  auto list = runner_->List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].job_id, s.job_id);
  EXPECT_EQ(list[0].state, JobState::kRunning);
  auto r = runner_->Wait(s.job_id, absl::Seconds(30));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 4);
  EXPECT_EQ(ReadFileToString(runner_->Get(s.job_id)->stdout_path).value_or(""), "finished\n");
  EXPECT_TRUE(runner_->Remove(s.job_id).ok());
  EXPECT_EQ(runner_->Get(s.job_id).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RuncTest, FinishedShimsAreReapedNotLeftAsZombies) {
  SandboxSpec s = Spec("alpha", "z", {"/bin/true"});
  ASSERT_TRUE(runner_->Start(s).ok());
  int pid = 0;
  std::ifstream(state_ / "jobs" / s.job_id / "shim.pid") >> pid;
  ASSERT_GT(pid, 0);
  EXPECT_EQ(getpgid(pid), pid) << "the shim runs in its own session";
  ASSERT_TRUE(runner_->Wait(s.job_id, absl::Seconds(30)).ok());
  ASSERT_TRUE(runner_->Remove(s.job_id).ok());  // waits for the shim's exit
  // A zombie still answers kill(pid, 0); a reaped process does not.
  EXPECT_EQ(kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

TEST_F(RuncTest, ListingWhileJobsStartNeverReportsThemLost) {
  // Regression: a job between "directory written" and "shim recorded" looked like a dead shim.
  std::atomic<bool> stop{false};
  std::thread lister([&] {
    while (!stop) {
      for (const JobInfo& j : runner_->List()) {
        if (j.result && j.result->lost) ADD_FAILURE() << j.job_id << " reported lost while starting";
      }
    }
  });
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    SandboxSpec s = Spec("alpha", "c" + std::to_string(i), {"/bin/true"});
    ASSERT_TRUE(runner_->Start(s).ok());
    ids.push_back(s.job_id);
  }
  for (const std::string& id : ids) {
    auto r = runner_->Wait(id, absl::Seconds(30));
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->lost);
    EXPECT_EQ(r->exit_code, 0);
  }
  stop = true;
  lister.join();
}

TEST_F(RuncTest, AJobWhoseShimDiedIsReportedLostAndCleanedUp) {
  SandboxSpec s = Spec("alpha", "k", {"/bin/sleep", "60"});
  ASSERT_TRUE(runner_->Start(s).ok());
  int pid = 0;
  std::ifstream(state_ / "jobs" / s.job_id / "shim.pid") >> pid;
  ASSERT_GT(pid, 0);
  kill(pid, SIGKILL);
  for (int i = 0; i < 100 && ProcessStartTime(pid) != 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto r = runner_->Wait(s.job_id, absl::Seconds(10));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->lost);
  EXPECT_NE(std::system(("runc --root " + (state_ / "runtime").string() + " state " + s.job_id + " >/dev/null 2>&1").c_str()), 0)
      << "the container outlived its lost shim";
}

TEST_F(RuncTest, RefusesLoaderVariablesFromTheSpecAndFromATamperedImage) {
  SandboxSpec s = Spec("alpha", "ld", {"/bin/true"});
  s.env = {{"LD_PRELOAD", "/tmp/evil.so"}};
  absl::Status st = runner_->Start(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("LD_PRELOAD"), std::string::npos);
  // An image whose stored env was tampered with after import (CVE-2025-23266 shape).
  auto gamma = ImportImage((g_base / "images").string(), "gamma", (g_base / "bb/oci").string());
  ASSERT_TRUE(gamma.ok());
  fs::path meta = fs::path(gamma->rootfs).parent_path() / "image.json";
  Json j = Json::parse(ReadFileToString(meta.string()).value());
  j["env"].push_back({"LD_PRELOAD", "/lib/x86_64-linux-gnu/libevil.so"});
  std::ofstream(meta) << j.dump();
  SandboxSpec g = Spec("gamma", "ld2", {"/bin/true"});
  g.image = gamma->digest;
  st = runner_->Start(g);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(std::string(st.message()).find("image config env"), std::string::npos) << st;
}

// ------------------------------------------------------------------------------------------------
// Prepared sandboxes
// ------------------------------------------------------------------------------------------------

bool ContainerExists(const fs::path& state, const std::string& id) {
  return std::system(("runc --root " + (state / "runtime").string() + " state " + id + " >/dev/null 2>&1").c_str()) == 0;
}

std::vector<std::string> PreparedIds(const fs::path& state) {
  std::vector<std::string> ids;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(state / "prepared", ec)) ids.push_back(e.path().filename().string());
  return ids;
}

TEST_F(RuncTest, APreparedSandboxTakesExactlyOneJobAndEndsWithIt) {
  SandboxSpec like = Spec("alpha", "shape", {"/bin/true"});
  ASSERT_TRUE(runner_->Prepare(like).ok());
  EXPECT_EQ(runner_->PreparedCount("alpha", like.image), 1);
  auto ids = PreparedIds(state_);
  ASSERT_EQ(ids.size(), 1u);
  const std::string container = ids[0];
  EXPECT_TRUE(ContainerExists(state_, container));
  // pid 1 of the job is the job itself (the launcher exec'd it), with nothing inherited from
  // the launcher but stdio.
  Run first = RunJob(Spec("alpha", "one", Sh("echo pid1=$(cat /proc/1/comm); ls /proc/self/fd | tr '\\n' ' '; echo; exit 3")));
  EXPECT_EQ(first.result.exit_code, 3);
  EXPECT_EQ(first.out, "pid1=sh\n0 1 2 3 \n") << first.err;  // 3: ls's own directory handle
  EXPECT_TRUE(runner_->Get(Id("one"))->prepared);
  EXPECT_EQ(runner_->PreparedCount("alpha", like.image), 0);
  // The next job finds no prepared sandbox and starts cold.
  Run second = RunJob(Spec("alpha", "two", {"/bin/true"}));
  EXPECT_EQ(second.result.exit_code, 0);
  EXPECT_FALSE(runner_->Get(Id("two"))->prepared);
  // The used sandbox's container is gone once its job is removed.
  ASSERT_TRUE(runner_->Remove(Id("one")).ok());
  EXPECT_FALSE(ContainerExists(state_, container)) << "the prepared sandbox outlived its job";
}

TEST_F(RuncTest, AJobInAPreparedSandboxSeesNothingOfAnEarlierJob) {
  SandboxSpec like = Spec("alpha", "shape", {"/bin/true"});
  ASSERT_TRUE(runner_->Prepare(like).ok());
  Run a = RunJob(Spec("alpha", "a", Sh("echo a-secret > /scratch/mark; echo a-secret > /tmp/mark; echo written")));
  ASSERT_EQ(a.out, "written\n") << a.err;
  ASSERT_TRUE(runner_->Prepare(like).ok());
  Run b = RunJob(Spec("alpha", "b", Sh("cat /scratch/mark /tmp/mark 2>/dev/null; (ls -A /scratch; ls -A /tmp) | wc -l; "
                                       "ls /proc | grep -c '^[0-9]'")));
  EXPECT_TRUE(runner_->Get(Id("b"))->prepared);
  EXPECT_EQ(b.out.find("a-secret"), std::string::npos) << b.out;
  std::istringstream in(b.out);
  int files = -1, pids = -1;
  in >> files >> pids;
  EXPECT_EQ(files, 0) << b.out;
  EXPECT_LE(pids, 3) << b.out;  // sh and its pipeline: no launcher, no earlier job
}

// The agent's image cache drops an image whose files changed on disk and imports it again: a
// sandbox prepared on the old directory must never take a job (it would run on the old files).
TEST_F(RuncTest, ASandboxPreparedOnAReplacedImageIsNeverUsed) {
  auto delta = ImportImage((g_base / "images").string(), "delta", (g_base / "bb/oci").string());
  ASSERT_TRUE(delta.ok()) << delta.status();
  SandboxSpec like = Spec("delta", "stale", {"/bin/true"});
  like.image = delta->digest;
  ASSERT_TRUE(runner_->Prepare(like).ok());
  EXPECT_EQ(runner_->PreparedCount("delta", delta->digest), 1);
  // Replaced as ImageCache does after a failed VerifyImageRootfs: removed, then imported anew.
  ASSERT_TRUE(RemoveImage((g_base / "images").string(), "delta", delta->digest).ok());
  ASSERT_TRUE(ImportImage((g_base / "images").string(), "delta", (g_base / "bb/oci").string()).ok());
  SandboxSpec job = Spec("delta", "fresh", {"/bin/true"});
  job.image = delta->digest;
  EXPECT_EQ(RunJob(job).result.exit_code, 0);
  EXPECT_FALSE(runner_->Get(job.job_id)->prepared) << "handed to a sandbox on the old image";
  EXPECT_EQ(runner_->PreparedCount("delta", delta->digest), 0) << "the stale sandbox was not ended";
}

TEST_F(RuncTest, OnlyAJobOfTheSameShapeTakesAPreparedSandbox) {
  SandboxSpec like = Spec("alpha", "shape", {"/bin/true"});
  ASSERT_TRUE(runner_->Prepare(like).ok());
  // Another tenant (other uid range), another scratch size, egress: each starts cold.
  SandboxSpec other_tenant = Spec("beta", "t", {"/bin/true"});
  SandboxSpec other_scratch = Spec("alpha", "s", {"/bin/true"});
  other_scratch.scratch_bytes = 32ull << 20;
  SandboxSpec egress = Spec("alpha", "e", {"/bin/true"});
  egress.egress_allowed = true;
  for (const SandboxSpec& s : {other_tenant, other_scratch, egress}) {
    EXPECT_EQ(RunJob(s).result.exit_code, 0);
    EXPECT_FALSE(runner_->Get(s.job_id)->prepared) << s.job_id;
  }
  EXPECT_EQ(runner_->PreparedCount("alpha", like.image), 1);
  // Different limits, argv, env and cwd are the job's own: the limits are in the sandbox's
  // cgroup (read from the host while the job runs), the rest in the job.
  SandboxSpec same = Spec("alpha", "same", Sh("pwd; echo $GREETING; sleep 30"));
  same.cwd = "/bin";
  same.env = {{"GREETING", "hello"}};
  same.pids_max = 17;
  same.memory_bytes = 96ull << 20;
  ASSERT_TRUE(runner_->Start(same).ok());
  auto info = runner_->Get(same.job_id);
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->prepared);
  auto rec = DecodeJobRecord(ReadFileToString((state_ / "jobs" / same.job_id / "job.json").string()).value_or(""));
  ASSERT_TRUE(rec.ok());
  auto layout = DetectCgroupLayout();
  ASSERT_TRUE(layout.ok());
  auto limit = [&](const char* controller, const char* file) {
    std::string v = ReadFileToString(layout->ControllerDir(layout->UsesV1() ? controller : "memory", rec->cgroups_path) +
                                     "/" + file).value_or("?");
    while (!v.empty() && v.back() == '\n') v.pop_back();
    return v;
  };
  EXPECT_EQ(limit("pids", "pids.max"), "17");
  EXPECT_EQ(limit("memory", layout->UsesV1() ? "memory.limit_in_bytes" : "memory.max"), std::to_string(96ull << 20));
  std::string out;
  for (int i = 0; i < 100 && out.size() < 11; ++i) {
    out = ReadFileToString(info->stdout_path).value_or("");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(out, "/bin\nhello\n");
  ASSERT_TRUE(runner_->Cancel(same.job_id).ok());
  EXPECT_TRUE(runner_->Wait(same.job_id, absl::Seconds(20)).ok());
  // Jobs with GPUs or datasets never use one.
  SandboxSpec gpu = like;
  gpu.gpus = {{"GPU-00000000-1111-2222-3333-444444444444", "/dev/nvidia0", {}}};
  EXPECT_EQ(runner_->Prepare(gpu).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RuncTest, PreparedSandboxesEndWithTheirRunner) {
  SandboxSpec like = Spec("alpha", "shape", {"/bin/true"});
  ASSERT_TRUE(runner_->Prepare(like).ok());
  ASSERT_TRUE(runner_->Prepare(like).ok());
  auto ids = PreparedIds(state_);
  ASSERT_EQ(ids.size(), 2u);
  runner_->DropPrepared("alpha", like.image);
  EXPECT_EQ(runner_->PreparedCount("alpha", like.image), 0);
  ASSERT_TRUE(runner_->Prepare(like).ok());
  runner_.reset();  // the agent goes away: its sandboxes must not wait for a job forever
  for (int i = 0; i < 200 && !PreparedIds(state_).empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(PreparedIds(state_).empty());
  for (const std::string& id : ids) EXPECT_FALSE(ContainerExists(state_, id)) << id;
}

// The launcher alone, outside any container: one job description, then exec; anything else
// (a second description, garbage) is refused without running anything.
std::pair<int, std::string> Launch(const std::string& description) {
  int job[2], report[2];
  EXPECT_EQ(pipe(job), 0);
  EXPECT_EQ(pipe(report), 0);
  pid_t pid = fork();
  if (pid == 0) {
    // Out of the way first, then to 3, 4, 5; the job pipe's write end must not stay open here.
    int self = open(LauncherPath().c_str(), O_RDONLY);
    int j = fcntl(job[0], F_DUPFD, 50), r = fcntl(report[1], F_DUPFD, 50), e = fcntl(self, F_DUPFD, 50);
    for (int fd : {job[0], job[1], report[0], report[1], self}) close(fd);
    dup2(j, 3);
    dup2(r, 4);
    dup2(e, 5);
    for (int fd : {j, r, e}) close(fd);
    execl(LauncherPath().c_str(), "launcher", nullptr);
    _exit(99);
  }
  close(job[0]);
  close(report[1]);
  (void)!write(job[1], description.data(), description.size());
  close(job[1]);
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = read(report[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(report[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}

std::string Description(const std::vector<std::string>& argv) {
  std::string d = std::string("warden-job-1") + '\0' + "/" + '\0' + std::to_string(argv.size()) + '\0';
  for (const std::string& a : argv) d += a + '\0';
  return d + "1" + '\0' + "PATH=/bin:/usr/bin" + '\0';
}

TEST(LauncherTest, ExecsOneJobAndRefusesASecondOrAMalformedOne) {
  fs::path marker = fs::temp_directory_path() / ("launcher_marker_" + std::to_string(getpid()));
  fs::remove(marker);
  // Control: one description runs.
  auto [code, out] = Launch(Description({"touch", marker.string()}));
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out, "exec\n");
  EXPECT_TRUE(fs::exists(marker));
  fs::remove(marker);
  // Two descriptions: nothing runs.
  std::string two = Description({"touch", marker.string()}) + Description({"touch", marker.string()});
  std::tie(code, out) = Launch(two);
  EXPECT_EQ(code, 126);
  EXPECT_NE(out.find("one job per sandbox"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(marker));
  static const char kNoArgs[] = "warden-job-1\0/\0" "0\0" "0";
  static const char kBadEnv[] = "warden-job-1\0/\0" "1\0" "true\0" "1\0" "NOEQUALS";
  for (const std::string& bad : {std::string("warden-job-2") + '\0', std::string(kNoArgs, sizeof(kNoArgs)),
                                 std::string(kBadEnv, sizeof(kBadEnv))}) {
    std::tie(code, out) = Launch(bad);
    EXPECT_EQ(code, 126) << out;
    EXPECT_EQ(out.rfind("err malformed", 0), 0u) << out;
  }
  // End of file without a job (the runner dropped the sandbox): exit quietly.
  std::tie(code, out) = Launch("");
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out, "");
  // A command that does not exist is reported.
  std::tie(code, out) = Launch(Description({"/bin/does-not-exist"}));
  EXPECT_EQ(code, 127);
  EXPECT_NE(out.find("does-not-exist"), std::string::npos) << out;
}

// ------------------------------------------------------------------------------------------------
// Escape attempts
// ------------------------------------------------------------------------------------------------

TEST_P(SandboxPathTest, EscapeCannotSeeOtherJobsProcesses) {
  StartVictim();
  Run r = RunJob(Spec("alpha", "ps", Sh("ls /proc | grep -c '^[0-9]'; ps -o pid,args")));
  std::istringstream in(r.out);
  int pids = 0;
  in >> pids;
  EXPECT_LE(pids, 3) << r.out;  // sh, and ls/grep of its own pipeline
  EXPECT_EQ(r.out.find("victim"), std::string::npos);
  EXPECT_EQ(r.out.find("tick"), std::string::npos);
  ExpectVictimUnharmed();
}

TEST_P(SandboxPathTest, EscapeCannotReadAnotherJobsFilesOrHostShadow) {
  StartVictim();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::string victim_dir = (state_ / "jobs" / victim_.job_id).string();
  // From the host image: the host's root file system is visible read-only, but not the files
  // only root may read, nor other jobs' logs and scratch.
  SandboxSpec s = Spec("alpha", "rd",
                       Sh("cat /etc/passwd >/dev/null && echo passwd-readable; "
                          "cat /etc/shadow && echo SHADOW-READ; "
                          "cat " + victim_dir + "/stdout.log && echo VICTIM-LOG-READ; "
                          "cat " + victim_dir + "/bundle/config.json && echo VICTIM-SPEC-READ; "
                          "cat /scratch/secret && echo VICTIM-SCRATCH-READ; "
                          "ls /proc/*/root/scratch 2>/dev/null | grep -q secret && echo VICTIM-ROOT-READ; "
                          "echo done"));
  s.image = "host";
  Run r = RunJob(s);
  EXPECT_NE(r.out.find("passwd-readable"), std::string::npos) << r.out << r.err;  // control
  EXPECT_EQ(r.out.find("SHADOW-READ"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("VICTIM-"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("victim-secret"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("done"), std::string::npos);
  ExpectVictimUnharmed();
}

TEST_P(SandboxPathTest, EscapeCannotWriteTheRootFilesystem) {
  StartVictim();
  Run r = RunJob(Spec("alpha", "wr", Sh("echo x > /bin/pwned && echo WROTE-BIN; echo x >> /etc/passwd && echo WROTE-ETC; "
                                        "echo ok > /scratch/f && echo scratch-ok; echo ok > /tmp/f && echo tmp-ok")));
  EXPECT_EQ(r.out.find("WROTE"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("scratch-ok"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("tmp-ok"), std::string::npos) << r.err;
  SandboxSpec h = Spec("alpha", "wh", Sh("touch /etc/gpuwarden-pwned && echo WROTE-HOST; echo done"));
  h.image = "host";
  Run rh = RunJob(h);
  EXPECT_EQ(rh.out.find("WROTE"), std::string::npos);
  EXPECT_FALSE(fs::exists("/etc/gpuwarden-pwned"));
  ExpectVictimUnharmed();
}

TEST_P(SandboxPathTest, EscapeThroughForbiddenSyscallsFails) { ExpectForbiddenSyscallsFail(); }

TEST_P(SandboxPathTest, SeccompAloneStopsRawSocketsAndPtraceEvenWithCapabilities) {
  // Hand the job CAP_NET_RAW and CAP_SYS_PTRACE (inside its user namespace): only the seccomp
  // profile is left to refuse these calls.
  hook_ = [](std::string text) {
    Json j = Json::parse(text);
    for (const char* set : {"bounding", "effective", "permitted"}) {
      j["process"]["capabilities"][set] = {"CAP_NET_RAW", "CAP_SYS_PTRACE"};
    }
    j["process"]["user"]["uid"] = 0;
    j["process"]["user"]["gid"] = 0;
    return j.dump();
  };
  Open();
  EXPECT_EQ(Helper("alpha", "raw", {"rawsock"}).rfind("rawsock fail EPERM", 0), 0u);
  EXPECT_EQ(Helper("alpha", "ptr", {"ptrace"}).rfind("ptrace fail EPERM", 0), 0u);
  // Control: without the seccomp profile the same job can open the raw socket.
  hook_ = [inner = hook_](std::string text) {
    Json j = Json::parse(inner(text));
    j["linux"].erase("seccomp");
    return j.dump();
  };
  Open();
  EXPECT_EQ(Helper("alpha", "raw2", {"rawsock"}), "rawsock ok\n");
}

TEST_P(SandboxPathTest, EscapeCannotReachHostLoopbackPorts) {
  StartVictim();
  int srv = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(srv, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(srv, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  ASSERT_EQ(listen(srv, 16), 0);
  socklen_t len = sizeof(sa);
  getsockname(srv, reinterpret_cast<sockaddr*>(&sa), &len);
  std::string port = std::to_string(ntohs(sa.sin_port));
  // Control: with egress allowed (host network) the same probe connects, so the probe works.
  std::string open_out = Helper("alpha", "egress", {"connect", "127.0.0.1", port},
                                [](SandboxSpec& s) { s.egress_allowed = true; });
  EXPECT_EQ(open_out, "connect ok\n");
  std::string out = Helper("alpha", "conn", {"connect", "127.0.0.1", port});
  EXPECT_EQ(out.rfind("connect fail", 0), 0u) << out;
  close(srv);
  ExpectVictimUnharmed();
}

TEST_P(SandboxPathTest, EscapeThroughASetuidBinaryGainsNothing) {
  StartVictim();
  // A setuid binary owned by the container's root (as if it slipped into an image; import drops
  // these bits, see TarExtractTest.DropsDevicesAndSetuidBits).
  auto image = LookupImage((g_base / "images").string(), "alpha", g_image_alpha);
  ASSERT_TRUE(image.ok());
  // Run once so the tenant's uid slot exists.
  RunJob(Spec("alpha", "warm", {"/bin/true"}));
  std::string suid = image->rootfs + "/bin/suid-helper";
  fs::copy_file(image->rootfs + "/bin/escape-helper", suid, fs::copy_options::overwrite_existing);
  ASSERT_EQ(chown(suid.c_str(), UidBase("alpha"), UidBase("alpha")), 0);
  ASSERT_EQ(chmod(suid.c_str(), 04755), 0);
  Run r = RunJob(Spec("alpha", "suid", {"/bin/suid-helper", "euid"}));
  EXPECT_EQ(r.out, "euid=1000 uid=1000\n");
  // Control: without no_new_privileges the same binary does escalate to the container's root.
  hook_ = [](std::string text) {
    Json j = Json::parse(text);
    j["process"]["noNewPrivileges"] = false;
    return j.dump();
  };
  Open();
  Run c = RunJob(Spec("alpha", "suid2", {"/bin/suid-helper", "euid"}));
  EXPECT_EQ(c.out, "euid=0 uid=1000\n");
  fs::remove(suid);
  ExpectVictimUnharmed();
}

// Fake GPU nodes (RECIPES' Slurm section): char 195:N, no driver behind them, so an allowed
// open() fails with ENXIO and a denied one with EPERM / ENOENT.
void MakeFakeGpuNodes(const fs::path& dev) {
  fs::create_directories(dev);
  chmod(dev.c_str(), 0755);
  for (auto [name, minor] : {std::pair{"nvidia0", 0}, {"nvidia1", 1}, {"nvidia2", 2}, {"nvidiactl", 255}}) {
    std::string p = (dev / name).string();
    if (!fs::exists(p)) {
      ASSERT_EQ(mknod(p.c_str(), S_IFCHR | 0666, makedev(195, minor)), 0) << p;
    }
  }
}

class FakeGpuTest : public RuncTest {
 protected:
  void SetUp() override {
    RuncTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    dev_ = g_base / "dev";
    MakeFakeGpuNodes(dev_);
  }
  fs::path dev_;
};

TEST_F(FakeGpuTest, AJobSeesOnlyItsAssignedGpu) {
  StartVictim();
  std::vector<std::string> argv = {"/bin/sh", "-c",
                                   "ls /dev | grep nvidia | tr '\\n' ' '; echo; echo CUDA=$CUDA_VISIBLE_DEVICES; "
                                   "echo NVIDIA=$NVIDIA_VISIBLE_DEVICES; /bin/escape-helper open /dev/nvidia1; "
                                   "/bin/escape-helper open /dev/nvidia0"};
  SandboxSpec s = Spec("alpha", "gpu", argv);
  s.gpus = {{"GPU-00000000-1111-2222-3333-444444444444", "/dev/nvidia0", {}}};
  Run r = RunJob(s);
  EXPECT_NE(r.out.find("nvidia0 nvidiactl \n"), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.out.find("CUDA=GPU-00000000-1111-2222-3333-444444444444\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("NVIDIA=GPU-00000000-1111-2222-3333-444444444444\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("open fail ENOENT"), std::string::npos) << r.out;  // nvidia1 absent
  // nvidia0 is allowed: the open reaches the driver instead of being refused (ENXIO where no
  // driver is loaded, success on a GPU machine, where 195:0 is the real GPU).
  EXPECT_TRUE(r.out.find("open fail ENXIO") != std::string::npos ||
              r.out.find("open ok") != std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("EPERM"), std::string::npos) << r.out;
  ExpectVictimUnharmed();
}

// The driver's libraries on a mount of their own (RunnerOptions::gpu_driver_dirs, e.g.
// /usr/local/nvidia): a GPU job reads them at the same path with LD_LIBRARY_PATH pointing there,
// cannot change them, and a job without GPUs gets neither.
TEST_F(FakeGpuTest, AGpuJobGetsTheDriverDirReadOnlyAndOtherJobsDoNot) {
  const fs::path driver = g_base / "nvidia-driver";
  fs::create_directories(driver / "lib64");
  chmod(driver.c_str(), 0755);
  chmod((driver / "lib64").c_str(), 0755);
  std::ofstream(driver / "lib64" / "libcuda.so.1") << "driver-library\n";
  chmod((driver / "lib64" / "libcuda.so.1").c_str(), 0644);
  RunnerOptions o = Options();
  o.gpu_driver_dirs = {driver.string()};
  o.gpu_library_path = (driver / "lib64").string();
  auto created = CreateRunner(o);
  ASSERT_TRUE(created.ok()) << created.status();
  runner_ = std::move(*created);
  const std::string lib = (driver / "lib64" / "libcuda.so.1").string();
  SandboxSpec s = Spec("alpha", "drv", Sh("cat " + lib + "; echo LD=$LD_LIBRARY_PATH; echo x > " + lib +
                                          " && echo WROTE; touch " + driver.string() + "/new && echo CREATED; true"));
  s.gpus = {{"GPU-00000000-1111-2222-3333-444444444444", "/dev/nvidia0", {}}};
  Run r = RunJob(s);
  EXPECT_NE(r.out.find("driver-library\n"), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.out.find("LD=" + (driver / "lib64").string() + "\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("WROTE"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("CREATED"), std::string::npos) << r.out;
  EXPECT_EQ(ReadFileToString(lib).value_or(""), "driver-library\n");
  Run n = RunJob(Spec("alpha", "nodrv", Sh("cat " + lib + " 2>/dev/null || echo absent; echo LD=[$LD_LIBRARY_PATH]")));
  EXPECT_EQ(n.out, "absent\nLD=[]\n") << n.err;
}

TEST_F(RuncTest, ADriverDirMustBeARealAbsoluteDirectoryOutsideProcSysDev) {
  for (const std::string& bad : {std::string("relative/dir"), std::string("/"), std::string("/proc/driver"),
                                 std::string("/dev"), (g_base / "missing").string()}) {
    RunnerOptions o = Options();
    o.gpu_driver_dirs = {bad};
    auto r = CreateRunner(o);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad << ": " << r.status();
  }
  // A symlink to a directory is refused: the bind is made at the path the job sees.
  fs::create_directories(g_base / "real-driver");
  fs::create_symlink(g_base / "real-driver", g_base / "link-driver");
  RunnerOptions o = Options();
  o.gpu_driver_dirs = {(g_base / "link-driver").string()};
  EXPECT_EQ(CreateRunner(o).status().code(), absl::StatusCode::kInvalidArgument);
  // LD_LIBRARY_PATH may only name directories inside the bound ones.
  o.gpu_driver_dirs = {(g_base / "real-driver").string()};
  o.gpu_library_path = "/usr/lib";
  EXPECT_EQ(CreateRunner(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.gpu_library_path = (g_base / "real-driver").string() + "/../../etc";
  EXPECT_EQ(CreateRunner(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.gpu_library_path = (g_base / "real-driver").string();
  EXPECT_TRUE(CreateRunner(o).ok());
}

TEST_F(FakeGpuTest, AJobWithoutGpusSeesNoGpuDevice) {
  Run r = RunJob(Spec("alpha", "nogpu", Sh("ls /dev | grep -c nvidia; echo CUDA=[$CUDA_VISIBLE_DEVICES] NVIDIA=$NVIDIA_VISIBLE_DEVICES")));
  EXPECT_EQ(r.out, "0\nCUDA=[] NVIDIA=void\n");
}

TEST_F(FakeGpuTest, DeviceRulesRefuseAnUnassignedGpuOrDevMemEvenIfMounted) {
  // Simulate a mount mistake: the unassigned /dev/nvidia1 and the host's /dev/mem appear in the
  // job. The device cgroup (deny all, allow only nvidia0) must still refuse them.
  std::string mem = (dev_ / "mem").string();
  if (!fs::exists(mem)) {
    ASSERT_EQ(mknod(mem.c_str(), S_IFCHR | 0666, makedev(1, 1)), 0);
  }
  std::string dev = dev_.string();
  hook_ = [dev](std::string text) {
    Json j = Json::parse(text);
    j["mounts"].push_back({{"destination", "/dev/nvidia1"}, {"type", "none"}, {"source", dev + "/nvidia1"}, {"options", {"bind"}}});
    j["mounts"].push_back({{"destination", "/dev/mem"}, {"type", "none"}, {"source", dev + "/mem"}, {"options", {"bind"}}});
    return j.dump();
  };
  Open();
  SandboxSpec s = Spec("alpha", "devrule", Sh("/bin/escape-helper open /dev/nvidia1; /bin/escape-helper open /dev/mem; "
                                              "/bin/escape-helper open /dev/nvidia0"));
  s.gpus = {{"GPU-00000000-1111-2222-3333-444444444444", "/dev/nvidia0", {}}};
  Run r = RunJob(s);
  // The assigned GPU reaches the driver: ENXIO without one, success on a GPU machine.
  EXPECT_TRUE(r.out == "open fail EPERM\nopen fail EPERM\nopen fail ENXIO\n" ||
              r.out == "open fail EPERM\nopen fail EPERM\nopen ok\n")
      << r.out << r.err;
}

TEST_P(SandboxPathTest, EscapeToDevMemFails) {
  std::string out = Helper("alpha", "mem", {"open", "/dev/mem"});
  EXPECT_EQ(out.rfind("open fail", 0), 0u) << out;
  std::string kmsg = Helper("alpha", "kmsg", {"open", "/dev/kmsg"});
  EXPECT_EQ(kmsg.rfind("open fail", 0), 0u) << kmsg;
}

TEST_P(SandboxPathTest, ForkBombStopsAtThePidsLimit) {
  StartVictim();
  SandboxSpec s = Spec("alpha", "fork", {"/bin/escape-helper", "forkbomb", "500"});
  s.pids_max = 32;
  Run r = RunJob(s);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("forkbomb got ([0-9]+)"))) << r.out << r.err;
  EXPECT_LT(std::stoi(m[1]), 32);
  EXPECT_NE(r.out.find("forkbomb fail EAGAIN"), std::string::npos) << r.out;
  ExpectVictimUnharmed();
}

TEST_P(SandboxPathTest, MemoryHogIsOomKilledInsideTheJobOnly) {
  StartVictim();
  SandboxSpec s = Spec("alpha", "hog", {"/bin/escape-helper", "hog", "1024"});
  s.memory_bytes = 64ull << 20;
  Run r = RunJob(s);
  EXPECT_TRUE(r.result.oom_killed);
  EXPECT_EQ(r.result.signal, SIGKILL);
  EXPECT_EQ(r.out.find("hog ok"), std::string::npos);
  EXPECT_LE(r.result.usage.peak_memory_bytes, 64ull << 20);
  ExpectVictimUnharmed();
}

TEST_P(SandboxPathTest, FillingScratchStopsAtItsSize) {
  StartVictim();
  SandboxSpec s = Spec("alpha", "fill", {"/bin/escape-helper", "fill", "/scratch/big"});
  s.scratch_bytes = 16ull << 20;
  s.memory_bytes = 128ull << 20;
  Run r = RunJob(s);
  EXPECT_NE(r.out.find("fill fail ENOSPC"), std::string::npos) << r.out << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("wrote ([0-9]+) MiB")));
  EXPECT_LE(std::stoi(m[1]), 16);
  EXPECT_GE(std::stoi(m[1]), 14);
  EXPECT_FALSE(r.result.oom_killed);
  ExpectVictimUnharmed();
}

TEST_F(RuncTest, CrunRunsTheSameBundleWhereTheCgroupLayoutAllows) {
  auto layout = DetectCgroupLayout();
  ASSERT_TRUE(layout.ok());
  if (layout->mode == CgroupLayout::Mode::kHybrid) {
    GTEST_SKIP() << "crun refuses hybrid cgroup hosts (RECIPES); runc covers this machine";
  }
  if (std::system("crun --version >/dev/null 2>&1") != 0) {
    if (InCi()) FAIL() << "crun not installed";
    GTEST_SKIP() << "crun not installed";
  }
  RunnerOptions o = Options();
  o.runtime = RuntimeKind::kCrun;
  auto r = CreateRunner(o);
  ASSERT_TRUE(r.ok()) << r.status();
  runner_ = std::move(*r);
  Run run = RunJob(Spec("alpha", "crun", Sh("echo crun; id -u")));
  EXPECT_EQ(run.out, "crun\n1000\n");
}

}  // namespace
}  // namespace warden::runtime

// ------------------------------------------------------------------------------------------------
// The bubblewrap fallback: the same attacks, the same limits, with bwrap instead of runc.
// ------------------------------------------------------------------------------------------------
namespace warden::runtime {
namespace {

class BwrapTest : public RuncTest {
 protected:
  BwrapTest() { kind_ = RuntimeKind::kBwrap; }
  void SetUp() override {
    if (g_skip.empty() && std::system("bwrap --version >/dev/null 2>&1") != 0) {
      if (InCi()) FAIL() << "CI=true but bubblewrap is not installed";
      GTEST_SKIP() << "bubblewrap is not installed (apt-get install bubblewrap)";
    }
    RuncTest::SetUp();
  }
};

TEST_F(BwrapTest, RunsAJobAndCapturesOutputExitCodeAndUsage) {
  Run r = RunJob(Spec("alpha", "a", Sh("echo hello; echo oops >&2; id -u; exit 3")));
  EXPECT_EQ(r.result.exit_code, 3);
  EXPECT_EQ(r.out, "hello\n1000\n");
  EXPECT_EQ(r.err, "oops\n");
  EXPECT_GT(r.result.usage.peak_memory_bytes, 0u);
  EXPECT_GT(r.result.usage.cpu_time_usec, 0u);
}

TEST_F(BwrapTest, EscapeThroughForbiddenSyscallsFails) { ExpectForbiddenSyscallsFail(); }

TEST_F(BwrapTest, EscapeCannotSeeOtherPidsWriteRootOrReadShadow) {
  StartVictim();
  Run r = RunJob(Spec("alpha", "ps", Sh("ls /proc | grep -c '^[0-9]'; echo x > /bin/pwned && echo WROTE")));
  std::istringstream in(r.out);
  int pids = 0;
  in >> pids;
  EXPECT_LE(pids, 4) << r.out;  // bwrap's init, sh, ls, grep
  EXPECT_EQ(r.out.find("WROTE"), std::string::npos);
  SandboxSpec h = Spec("alpha", "sh", Sh("cat /etc/passwd >/dev/null && echo passwd-readable; cat /etc/shadow && echo SHADOW-READ"));
  h.image = "host";
  Run rh = RunJob(h);
  EXPECT_NE(rh.out.find("passwd-readable"), std::string::npos) << rh.out << rh.err;
  EXPECT_EQ(rh.out.find("SHADOW-READ"), std::string::npos);
  ExpectVictimUnharmed();
}

TEST_F(BwrapTest, LimitsHold) {
  StartVictim();
  SandboxSpec hog = Spec("alpha", "hog", {"/bin/escape-helper", "hog", "1024"});
  hog.memory_bytes = 64ull << 20;
  Run h = RunJob(hog);
  EXPECT_TRUE(h.result.oom_killed);
  EXPECT_EQ(h.result.signal, SIGKILL);
  SandboxSpec fork = Spec("alpha", "fork", {"/bin/escape-helper", "forkbomb", "500"});
  fork.pids_max = 32;
  Run f = RunJob(fork);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(f.out, m, std::regex("forkbomb got ([0-9]+)"))) << f.out << f.err;
  EXPECT_LT(std::stoi(m[1]), 32);
  SandboxSpec fill = Spec("alpha", "fill", {"/bin/escape-helper", "fill", "/scratch/big"});
  fill.scratch_bytes = 16ull << 20;
  Run fl = RunJob(fill);
  EXPECT_NE(fl.out.find("fill fail ENOSPC"), std::string::npos) << fl.out << fl.err;
  ExpectVictimUnharmed();
}

TEST_F(BwrapTest, CancelAndWallTimeEndTheJob) {
  SandboxSpec s = Spec("alpha", "c", {"/bin/sleep", "60"});
  ASSERT_TRUE(runner_->Start(s).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE(runner_->Cancel(s.job_id).ok());
  auto r = runner_->Wait(s.job_id, absl::Seconds(20));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->cancelled);
  SandboxSpec w = Spec("alpha", "w", {"/bin/sleep", "60"});
  w.wall_time = absl::Milliseconds(500);
  Run rw = RunJob(w);
  EXPECT_TRUE(rw.result.wall_time_exceeded);
}

TEST_F(BwrapTest, AJobSeesOnlyItsAssignedGpu) {
  MakeFakeGpuNodes(g_base / "dev");
  std::string dev = (g_base / "dev").string();
  SandboxSpec s = Spec("alpha", "gpu", Sh("ls /dev | grep nvidia | tr '\\n' ' '; echo; echo CUDA=$CUDA_VISIBLE_DEVICES; "
                                          "/bin/escape-helper open /dev/nvidia1; /bin/escape-helper open /dev/nvidia0"));
  s.gpus = {{"GPU-00000000-1111-2222-3333-444444444444", "/dev/nvidia0", {}}};
  Run r = RunJob(s);
  EXPECT_NE(r.out.find("nvidia0 nvidiactl \n"), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.out.find("CUDA=GPU-00000000-1111-2222-3333-444444444444\n"), std::string::npos);
  EXPECT_NE(r.out.find("open fail ENOENT"), std::string::npos) << r.out;  // nvidia1 absent
  // nvidia0 is allowed: ENXIO where no driver is loaded, success on a GPU machine (195:0 is the
  // real GPU there; seen on the lent H200).
  EXPECT_TRUE(r.out.find("open fail ENXIO") != std::string::npos || r.out.find("open ok") != std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("EPERM"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace warden::runtime
