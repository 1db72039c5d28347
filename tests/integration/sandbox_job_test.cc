// Jobs through the API into the agent's sandbox (issue 7): the real server and two real agents
// started with --executor=sandbox (runc on the host image), two tenants. Proves the agent path
// uses src/runtime's sandbox (a new pid namespace, the job's user cannot read the host's
// /etc/shadow, no network to the server's API or agent port) and its lifecycle: logs, cancel with grace, wall time,
// OOM, re-attach after the agent is killed. The escape tests themselves live in
// tests/runtime (runtime_runc_test); these only show the agent runs jobs in that sandbox.
// Skips when runc cannot run here (not root, no runc); fails instead under CI=true.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "harness.h"

namespace warden::testing {
namespace {

using common::Json;
using Clock = std::chrono::steady_clock;

bool RuncWorks(std::string* why) {
  if (geteuid() != 0) {
    *why = "the sandbox needs root";
    return false;
  }
  if (RunShell("command -v runc >/dev/null").code != 0) {
    *why = "runc is not installed (tools/install-deps.sh installs it)";
    return false;
  }
  return true;
}

class SandboxJobIT : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!RuncWorks(&why)) {
      if (std::getenv("CI") != nullptr && std::string(std::getenv("CI")) == "true") FAIL() << why;
      GTEST_SKIP() << why;
    }
    server_.Start("sqlite", "agent:\n  listen: 127.0.0.1:0\n  heartbeat_interval: 500ms\n");
    if (HasFatalFailure() || IsSkipped()) return;
    // The agents' data dirs live in here: the sandbox's per-tenant users must traverse it.
    chmod(server_.dir().c_str(), 0711);
    server_.Login("admin", "admin", server_.admin_password());
    ASSERT_EQ(server_.Cli("admin", "tenant create acme").code, 0);
    ASSERT_EQ(server_.Cli("admin", "tenant create beta").code, 0);
    for (auto [user, tenant] : {std::pair{"alice", "acme"}, std::pair{"bob", "beta"}}) {
      RunResult r = server_.Cli("admin",
                                std::string("user create ") + user + " --tenant " + tenant +
                                    " --role developer --password-stdin",
                                std::string("pw-") + user + "-0123456789\n");
      ASSERT_EQ(r.code, 0) << r.err;
      server_.Login(user, user, std::string("pw-") + user + "-0123456789");
    }
    JoinAgent("node-a");
  }

  void TearDown() override {
    for (auto& [name, pid] : agents_) StopAgent(name, SIGKILL);
    // Jobs outlive killed agents (their shims): end them through runc.
    for (const auto& [name, pid] : agents_) {
      const std::string root = server_.dir() + "/agent-" + name + "/sandbox/runtime";
      (void)RunShell("for c in $(runc --root " + root + " list -q 2>/dev/null); do runc --root " + root +
                     " kill $c KILL 2>/dev/null; done; true");
      // A test that stopped early leaves its staged datasets mounted.
      (void)RunShell("for m in $(awk '{print $2}' /proc/mounts | grep -F " +
                     ShellQuote(server_.dir() + "/agent-" + name + "/datasets/") + "); do umount -l $m; done; true");
    }
  }

  std::string TokenFile() { return JoinTokenFile(server_); }

  void StartAgent(const std::string& name, const std::string& token_file) {
    agents_[name] = StartAgentProcess(server_, name, "sim:2xH100-80GB", token_file, {"--executor", "sandbox", "--oci-runtime", "runc"});
  }

  void StopAgent(const std::string& name, int sig) {
    pid_t& pid = agents_[name];
    if (pid > 0) {
      kill(pid, sig);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
  }

  void JoinAgent(const std::string& name) {
    StartAgent(name, TokenFile());
    ASSERT_TRUE(Wait([&] { return NodeStatus(name) == "ready"; })) << AgentLog(name);
  }

  std::string AgentLog(const std::string& name) { return ReadFile(server_.dir() + "/agent-" + name + ".log"); }

  std::string NodeStatus(const std::string& name) { return testing::NodeStatus(server_, name); }

  bool Wait(const std::function<bool()>& pred, std::chrono::seconds limit = std::chrono::seconds(30)) {
    return WaitUntil(pred, limit);
  }

  std::string Submit(const std::string& who, const std::string& args) {
    RunResult r = server_.Cli(who, "job submit -o json " + args);
    EXPECT_EQ(r.code, 0) << r.err << r.out;
    auto j = Json::parse(r.out, nullptr, false);
    return j.is_object() ? j.value("id", "") : "";
  }

  // Submits a JSON body through the API (fields the CLI has no flag for: time_limit, memory_mib).
  std::string SubmitJson(const std::string& who, const std::string& tenant, const Json& body) {
    RunResult r = server_.Curl("POST", "/api/v1/tenants/" + tenant + "/jobs", server_.Token(who), body.dump());
    EXPECT_EQ(r.code, 201) << r.out;
    auto j = Json::parse(r.out, nullptr, false);
    return j.is_object() ? j.value("id", "") : "";
  }

  Json Show(const std::string& who, const std::string& id) {
    RunResult r = server_.Cli(who, "job show -o json " + id);
    auto j = Json::parse(r.out, nullptr, false);
    return j.is_object() ? j : Json::object();
  }

  bool WaitState(const std::string& who, const std::string& id, const std::string& state,
                 std::chrono::seconds limit = std::chrono::seconds(30)) {
    return Wait([&] { return Show(who, id).value("state", "") == state; }, limit);
  }

  std::string Logs(const std::string& who, const std::string& id, const std::string& flags = "") {
    return server_.Cli(who, "job logs " + flags + " " + id).out;
  }

  std::string Explain(const std::string& who, const std::string& id) {
    return Show(who, id).dump() + "\nserver: " + ReadFile(server_.dir() + "/server.log") +
           "\nnode-a: " + AgentLog("node-a");
  }

  WardenServer server_;
  std::map<std::string, pid_t> agents_;
};

TEST_F(SandboxJobIT, TwoTenantsJobsRunSandboxedAndJobLogsShowTheirOutput) {
  // sh is the init of a new pid namespace ($$ = 1) and sees exactly its one GPU's node.
  const std::string probe =
      "-- sh -c 'echo hello from $GPUWARDEN_JOB_NAME; echo pid=$$; echo uid=$(id -u); "
      "echo gpus=$CUDA_VISIBLE_DEVICES; ls /dev | grep nvidia; sleep 2'";
  std::string a = Submit("alice", "--name a1 --gpus 1 " + probe);
  std::string b = Submit("bob", "--name b1 --gpus 1 " + probe);
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  // Side by side: both running at once.
  ASSERT_TRUE(Wait([&] {
    return Show("alice", a).value("state", "") == "running" && Show("bob", b).value("state", "") == "running";
  })) << Explain("alice", a);
  ASSERT_TRUE(WaitState("alice", a, "done")) << Explain("alice", a);
  ASSERT_TRUE(WaitState("bob", b, "done")) << Explain("bob", b);
  for (const auto& [who, id, name] : {std::tuple{"alice", a, "a1"}, std::tuple{"bob", b, "b1"}}) {
    Json j = Show(who, id);
    ASSERT_EQ(j["gpus"].size(), 1u) << j.dump();
    const std::string uuid = j["gpus"][0].get<std::string>();
    const std::string out = Logs(who, id);
    EXPECT_EQ(out.rfind(std::string("hello from ") + name + "\npid=1\nuid=1000\ngpus=" + uuid + "\nnvidia", 0), 0u)
        << out;
    // Exactly one GPU node.
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 5) << out;
  }
  EXPECT_NE(AgentLog("node-a").find("job executor: sandbox, runtime runc"), std::string::npos) << AgentLog("node-a");
}

TEST_F(SandboxJobIT, AttackJobCannotReadShadowSeeOtherPidsOrReachTheServerWhileAVictimRuns) {
  std::string victim = Submit("bob", "--name victim -- sh -c 'echo victim up; sleep 20; echo victim done'");
  ASSERT_TRUE(WaitState("bob", victim, "running")) << Explain("bob", victim);
  const std::string port = server_.url().substr(server_.url().rfind(':') + 1);
  const std::string agent_port = std::to_string(
      Json::parse(ReadFile(server_.dir() + "/data/server.json")).value("agent_port", 0));
  ASSERT_NE(agent_port, "0");
  // Positive controls in the same job: a world-readable host file is readable (the host image),
  // and /proc lists this job's own processes.
  const std::string attack =
      "cat /etc/shadow >/dev/null 2>&1 && echo shadow=read || echo shadow=denied; "
      "head -c 0 /etc/hostname && echo hostname=read; "
      "echo procs=$(ls /proc | grep -c \"^[0-9]\"); "
      "(kill -0 1 && echo self=visible); "
      "if bash -c \"echo x > /dev/tcp/127.0.0.1/" + port + "\" 2>/dev/null; then echo server=reached; "
      "else echo server=unreachable; fi; "
      "if bash -c \"echo x > /dev/tcp/127.0.0.1/" + agent_port + "\" 2>/dev/null; then echo agents=reached; "
      "else echo agents=unreachable; fi";
  std::string id = SubmitJson("alice", "acme", Json{{"name", "attacker"}, {"command", {"sh", "-c", attack}}});
  ASSERT_TRUE(WaitState("alice", id, "done")) << Explain("alice", id);
  const std::string out = Logs("alice", id);
  EXPECT_NE(out.find("shadow=denied"), std::string::npos) << out;
  EXPECT_NE(out.find("hostname=read"), std::string::npos) << out;
  EXPECT_NE(out.find("self=visible"), std::string::npos) << out;
  EXPECT_NE(out.find("server=unreachable"), std::string::npos) << out;
  EXPECT_NE(out.find("agents=unreachable"), std::string::npos) << out;
  // sh, ls, grep (and the subshell) at most: never the victim's or the host's processes.
  size_t p = out.find("procs=");
  ASSERT_NE(p, std::string::npos) << out;
  EXPECT_LE(std::atoi(out.c_str() + p + 6), 4) << out;
  // The victim (another tenant) kept running and the agent stayed healthy.
  EXPECT_EQ(Show("bob", victim).value("state", ""), "running");
  EXPECT_EQ(NodeStatus("node-a"), "ready");
  EXPECT_EQ(Logs("bob", victim), "victim up\n");
}

TEST_F(SandboxJobIT, CancelGivesGraceAndKillsAJobThatIgnoresIt) {
  std::string id = Submit("alice", "-- sh -c \"trap 'echo cleaning up; exit 0' TERM; "
                                   "echo started; while :; do sleep 0.1; done\"");
  ASSERT_TRUE(WaitState("alice", id, "running")) << Explain("alice", id);
  ASSERT_TRUE(Wait([&] { return Logs("alice", id) == "started\n"; })) << Explain("alice", id);
  ASSERT_EQ(server_.Cli("alice", "job cancel --grace 5s " + id).code, 0);
  ASSERT_TRUE(WaitState("alice", id, "cancelled")) << Explain("alice", id);
  EXPECT_EQ(Logs("alice", id), "started\ncleaning up\n");
  // One that ignores SIGTERM dies when its (short) grace ends, not after the agent's maximum.
  std::string stubborn = Submit("alice", "-- sh -c \"trap '' TERM; echo up; while :; do sleep 0.1; done\"");
  ASSERT_TRUE(WaitState("alice", stubborn, "running"));
  ASSERT_TRUE(Wait([&] { return Logs("alice", stubborn) == "up\n"; }));
  auto t0 = Clock::now();
  ASSERT_EQ(server_.Cli("alice", "job cancel --grace 1s " + stubborn).code, 0);
  ASSERT_TRUE(WaitState("alice", stubborn, "cancelled", std::chrono::seconds(20))) << Explain("alice", stubborn);
  EXPECT_GE(Clock::now() - t0, std::chrono::seconds(1));
  EXPECT_EQ(Show("alice", stubborn)["exit_code"], 137);
}

TEST_F(SandboxJobIT, WallTimeLimitEndsTheJob) {
  std::string id = Submit("alice", "--name forever --time-limit 2s -- sh -c 'echo up; sleep 60'");
  auto t0 = Clock::now();
  ASSERT_TRUE(WaitState("alice", id, "failed", std::chrono::seconds(30))) << Explain("alice", id);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(25));
  EXPECT_NE(Show("alice", id).value("reason", "").find("wall-time limit"), std::string::npos)
      << Show("alice", id).dump();
  // The limit is checked at submit.
  RunResult bad = server_.Curl("POST", "/api/v1/tenants/acme/jobs", server_.Token("alice"),
                               R"({"name":"x","time_limit":"soon","command":["true"]})");
  EXPECT_EQ(bad.code, 400) << bad.out;
  EXPECT_NE(bad.out.find("time_limit"), std::string::npos) << bad.out;
}

TEST_F(SandboxJobIT, AMemoryHogIsKilledForMemoryInsideItsJobOnly) {
  std::string victim = Submit("bob", "--name victim -- sh -c 'sleep 15; echo victim done'");
  ASSERT_TRUE(WaitState("bob", victim, "running")) << Explain("bob", victim);
  // tail keeps the "line" of /dev/zero in memory until the cgroup's 64 MiB limit stops it.
  std::string id = Submit("alice", "--name hog --memory-mib 64 -- tail /dev/zero");
  ASSERT_TRUE(WaitState("alice", id, "failed", std::chrono::seconds(60))) << Explain("alice", id);
  EXPECT_NE(Show("alice", id).value("reason", "").find("killed for memory"), std::string::npos)
      << Show("alice", id).dump();
  EXPECT_EQ(Show("bob", victim).value("state", ""), "running");
  ASSERT_TRUE(WaitState("bob", victim, "done")) << Explain("bob", victim);
  EXPECT_EQ(Logs("bob", victim), "victim done\n");
}

TEST_F(SandboxJobIT, AnAgentKilledMidJobReattachesToItsSandboxedJob) {
  std::string id = Submit("alice", "-- sh -c 'echo before; sleep 4; echo after'");
  ASSERT_TRUE(WaitState("alice", id, "running")) << Explain("alice", id);
  ASSERT_TRUE(Wait([&] { return Logs("alice", id) == "before\n"; })) << Explain("alice", id);
  StopAgent("node-a", SIGKILL);
  StartAgent("node-a", "/nonexistent-token");  // already joined: the token is not read
  ASSERT_TRUE(WaitState("alice", id, "done", std::chrono::seconds(40))) << Explain("alice", id);
  EXPECT_EQ(Logs("alice", id), "before\nafter\n");
  EXPECT_NE(AgentLog("node-a").find("re-attached to 1 job"), std::string::npos) << AgentLog("node-a");
}

}  // namespace
// Issue 7, dataset mounts under the sandbox with the host image: the mount point /data/train
// lives on the sandbox's dataset root (the host image's read-only root has no /data of its own),
// the staged files belong to exactly the job's host uid, a read-only dataset cannot be written,
// another tenant's job on the same node (and other host users) cannot read the staged bytes,
// and after the job no plaintext is left on the node.
TEST_F(SandboxJobIT, ASandboxedJobReadsItsDatasetAndAnotherTenantCannotSeeIt) {
  const std::string marker = "GPUWARDEN-SANDBOX-PLAINTEXT-" + std::to_string(getpid());
  const std::string plain = server_.dir() + "/train.bin";
  {
    std::ofstream out(plain, std::ios::binary);
    for (int i = 0; i < 5000; ++i) out << marker << " line " << i << "\n";
  }
  const std::string sha = RunShell("sha256sum " + ShellQuote(plain)).out.substr(0, 64);
  RunResult put = server_.Cli("alice", "dataset put train/v1 " + ShellQuote(plain));
  ASSERT_EQ(put.code, 0) << put.err << put.out;
  ::unlink(plain.c_str());

  const std::string job_a = Submit(
      "alice",
      "--name reader --dataset train/v1:/data/train -- sh -c '"
      "sha256sum /data/train/v1 | cut -d\" \" -f1; "
      "(echo x >> /data/train/v1) 2>/dev/null && echo WROTE-DATASET || echo write=refused; "
      "(touch /data/train/new) 2>/dev/null && echo CREATED-IN-DATASET || echo create=refused; "
      "(touch /data/beside) 2>/dev/null && echo CREATED-IN-ROOT || echo root=refused; "
      "echo ready; sleep 15'");
  ASSERT_FALSE(job_a.empty());
  ASSERT_TRUE(WaitState("alice", job_a, "running")) << Explain("alice", job_a);
  ASSERT_TRUE(Wait([&] { return Logs("alice", job_a).find("ready") != std::string::npos; }))
      << Explain("alice", job_a);

  // On the node: the staged file belongs to acme's job uid (its range + 1000), mode 0400.
  const std::string agent_dir = server_.dir() + "/agent-node-a";
  const std::string staged = agent_dir + "/datasets/" + job_a + "/0/v1";
  struct stat st {};
  ASSERT_EQ(::stat(staged.c_str(), &st), 0) << staged;
  Json slots = Json::parse(ReadFile(agent_dir + "/sandbox/uid-slots.json"), nullptr, false);
  // Only acme has run a job on this node so far: one slot (the runner keys it by the tenant).
  ASSERT_TRUE(slots.is_object() && slots.size() == 1u) << slots.dump();
  const uint32_t acme_uid = (1u << 20) + slots.begin().value().get<uint32_t>() * 65536u + 1000u;
  EXPECT_EQ(st.st_uid, acme_uid);
  EXPECT_EQ(st.st_mode & 07777, 0400u);

  // Straight on the host, as a uid of another tenant's range and as another host user (the
  // path is there): the per-job tmpfs is 0700 root and the file is acme's job uid's alone.
  for (uint32_t uid : {acme_uid + 65536u, 65534u}) {
    RunResult r = RunShell("setpriv --reuid=" + std::to_string(uid) + " --regid=" + std::to_string(uid) +
                           " --clear-groups cat " + ShellQuote(staged));
    EXPECT_NE(r.code, 0) << uid;
    EXPECT_EQ(r.out.find(marker), std::string::npos) << uid;
  }
  // Another tenant's sandboxed job on the same node looks for it while it is staged: the agent's
  // dataset dir, the /dev/shm fallback, and its own dataset roots.
  const std::string look =
      "cat " + staged + " 2>&1 | head -c 200; echo; "
      "ls -la " + agent_dir + "/datasets/ 2>&1; ls " + agent_dir + "/datasets/" + job_a + " 2>&1; "
      "cat /dev/shm/gpuwarden-datasets-*/" + job_a + "/0/v1 2>&1 | head -c 200; echo; "
      "grep -rlF " + marker + " /data /datasets /dev/shm " + agent_dir + " 2>/dev/null; echo looked";
  const std::string job_b = SubmitJson("bob", "beta", Json{{"name", "snoop"}, {"command", {"sh", "-c", look}}});
  ASSERT_TRUE(WaitState("bob", job_b, "done")) << Explain("bob", job_b);
  const std::string snoop = Logs("bob", job_b);
  EXPECT_NE(snoop.find("looked"), std::string::npos) << snoop;
  EXPECT_EQ(snoop.find(marker), std::string::npos) << snoop;
  EXPECT_EQ(snoop.find(job_a + "\n"), std::string::npos) << "the staged dir is not listed: " << snoop;
  EXPECT_EQ(Show("alice", job_a).value("state", ""), "running") << "staged the whole time";

  ASSERT_TRUE(WaitState("alice", job_a, "done")) << Explain("alice", job_a);
  EXPECT_EQ(Logs("alice", job_a), sha + "\nwrite=refused\ncreate=refused\nroot=refused\nready\n");
  // Nothing of it is left on the node: no mount, no file holding the plaintext.
  ASSERT_TRUE(Wait([&] {
    return RunShell("grep -F " + ShellQuote(agent_dir + "/datasets/") + " /proc/mounts").out.empty();
  })) << RunShell("cat /proc/mounts").out;
  EXPECT_EQ(RunShell("grep -rlF " + ShellQuote(marker) + " " + ShellQuote(agent_dir) +
                     " /dev/shm/gpuwarden-datasets-* 2>/dev/null; true")
                .out,
            "");
}

}  // namespace warden::testing
