// Jobs end to end: the real server and two real agents (simulated GPUs, the process executor) on
// loopback, driven through the CLI and curl as two tenants' developers. On SQLite and PostgreSQL.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include "harness.h"

namespace warden::testing {
namespace {

using common::Json;
using Clock = std::chrono::steady_clock;

constexpr int kHeartbeatMs = 500;

class JobIT : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    setenv("GPUWARDEN_SCHED_CHECK", "1", 1);  // the invariant checker after every placement
    StartServer();
    if (HasFatalFailure() || IsSkipped()) return;
    server_.Login("admin", "admin", server_.admin_password());
    ASSERT_EQ(server_.Cli("admin", "tenant create acme").code, 0);
    ASSERT_EQ(server_.Cli("admin", "tenant create beta").code, 0);
    CreateUsers(server_, {{"alice", "acme", "developer"}, {"bob", "beta", "developer"}});
    ASSERT_FALSE(HasFatalFailure());
    JoinAgent("node-a");
    JoinAgent("node-b");
  }

  virtual void StartServer() { StartServer(kHeartbeatMs); }
  void StartServer(int heartbeat_ms) {
    server_.Start(GetParam(), "agent:\n  listen: 127.0.0.1:0\n  heartbeat_interval: " +
                                  std::to_string(heartbeat_ms) + "ms\n");
  }

  void TearDown() override { KillAgents(server_, agents_); }

  std::string TokenFile() { return JoinTokenFile(server_); }

  void StartAgent(const std::string& name, const std::string& token_file) {
    agents_[name] = StartAgentProcess(server_, name, "sim:2xH100-80GB", token_file, {"--executor", "process"});
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
    ASSERT_TRUE(Wait([&] { return NodeStatus(name) == "ready"; }))
        << ReadFile(server_.dir() + "/agent-" + name + ".log");
  }

  std::string NodeStatus(const std::string& name) { return testing::NodeStatus(server_, name); }

  bool Wait(const std::function<bool()>& pred, std::chrono::seconds limit = std::chrono::seconds(30)) {
    return WaitUntil(pred, limit);
  }

  // Submits as `who`; returns the job id.
  std::string Submit(const std::string& who, const std::string& args) {
    RunResult r = server_.Cli(who, "job submit -o json " + args);
    EXPECT_EQ(r.code, 0) << r.err << r.out;
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

  std::string Explain(const std::string& who, const std::string& id) {
    return Show(who, id).dump() + "\nserver: " + ReadFile(server_.dir() + "/server.log") +
           "\nnode-a: " + ReadFile(server_.dir() + "/agent-node-a.log") +
           "\nnode-b: " + ReadFile(server_.dir() + "/agent-node-b.log");
  }

  WardenServer server_;
  std::map<std::string, pid_t> agents_;
};

TEST_P(JobIT, SubmitRunsAndItsOutputIsVisibleThroughJobLogs) {
  std::string id = Submit("alice", "--name hello --gpus 1 -- sh -c "
                                   "'echo hello from $GPUWARDEN_JOB_NAME; echo gpus=$CUDA_VISIBLE_DEVICES; "
                                   "echo warn >&2'");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(WaitState("alice", id, "done")) << Explain("alice", id);
  Json j = Show("alice", id);
  EXPECT_EQ(j["exit_code"], 0);
  ASSERT_EQ(j["gpus"].size(), 1u);
  RunResult logs = server_.Cli("alice", "job logs " + id);
  ASSERT_EQ(logs.code, 0) << logs.err;
  EXPECT_EQ(logs.out, "hello from hello\ngpus=" + j["gpus"][0].get<std::string>() + "\n");
  EXPECT_EQ(server_.Cli("alice", "job logs --stderr " + id).out, "warn\n");
  RunResult ls = server_.Cli("alice", "job ls");
  EXPECT_NE(ls.out.find(id), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find("done"), std::string::npos) << ls.out;
  // Follow mode prints output as it comes and returns when the job ends.
  std::string slow = Submit("alice", "--name slow -- sh -c 'echo one; sleep 1; echo two'");
  RunResult follow = server_.Cli("alice", "job logs -f " + slow);
  EXPECT_EQ(follow.code, 0) << follow.err;
  EXPECT_EQ(follow.out, "one\ntwo\n");
}

TEST_P(JobIT, TwoTenantsJobsRunSideBySideAndNeverShareAGpu) {
  std::vector<std::pair<std::string, std::string>> ids;
  for (int i = 0; i < 2; ++i) {
    ids.emplace_back("alice", Submit("alice", "--gpus 1 -- sleep 30"));
    ids.emplace_back("bob", Submit("bob", "--gpus 1 -- sleep 30"));
  }
  std::set<std::string> gpus;
  for (const auto& [who, id] : ids) {
    ASSERT_TRUE(WaitState(who, id, "running")) << Explain(who, id);
    Json j = Show(who, id);
    ASSERT_EQ(j["gpus"].size(), 1u);
    EXPECT_TRUE(gpus.insert(j["gpus"][0].get<std::string>()).second)
        << "GPU " << j["gpus"][0] << " given to two jobs";
  }
  EXPECT_EQ(gpus.size(), 4u);
}

TEST_P(JobIT, AttackTenantBCannotSeeCancelOrReadTenantAsJobs) {
  std::string id = Submit("alice", "--name secret -- sh -c 'echo top-secret; sleep 30'");
  ASSERT_TRUE(WaitState("alice", id, "running")) << Explain("alice", id);
  const std::string bob = server_.Token("bob");
  // IDOR under bob's own tenant: the id is not found there.
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/api/v1/tenants/beta/jobs/" + id},
           {"GET", "/api/v1/tenants/beta/jobs/" + id + "/logs"},
           {"POST", "/api/v1/tenants/beta/jobs/" + id + "/cancel"}}) {
    RunResult r = server_.Curl(method, path, bob);
    EXPECT_EQ(r.code, 404) << method << " " << path << ": " << r.out;
    EXPECT_EQ(r.out.find("top-secret"), std::string::npos);
  }
  // Naming alice's tenant: no permission there.
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/api/v1/tenants/acme/jobs"},
           {"GET", "/api/v1/tenants/acme/jobs/" + id},
           {"GET", "/api/v1/tenants/acme/jobs/" + id + "/logs"},
           {"POST", "/api/v1/tenants/acme/jobs/" + id + "/cancel"},
           {"POST", "/api/v1/tenants/acme/jobs"}}) {
    RunResult r = server_.Curl(method, path, bob, method == "POST" ? "{}" : "");
    EXPECT_EQ(r.code, 403) << method << " " << path << ": " << r.out;
  }
  // Submitting into another tenant through the body is refused too.
  RunResult r = server_.Curl("POST", "/api/v1/tenants/beta/jobs", bob,
                             R"({"name":"x","tenant":"acme","command":["true"]})");
  EXPECT_EQ(r.code, 400) << r.out;
  EXPECT_EQ(server_.Cli("bob", "job ls -o json").out.find(id), std::string::npos);
  EXPECT_NE(server_.Cli("bob", "job show " + id).code, 0);
  EXPECT_NE(server_.Cli("bob", "job cancel " + id).code, 0);
  // Alice's job was not touched by any of it.
  EXPECT_EQ(Show("alice", id).value("state", ""), "running");
  EXPECT_FALSE(Show("alice", id).value("cancel_requested", true));
}

TEST_P(JobIT, ABadSpecGetsAClear400) {
  const std::string alice = server_.Token("alice");
  struct Case {
    std::string body, words;
  } cases[] = {
      {R"({"name":"x"})", "command"},
      {R"({"name":"x","gpus":0,"command":["true"]})", "gpus"},
      {R"({"name":"x","command":["true"],"env":{"LD_PRELOAD":"/tmp/x.so"}})", "LD_PRELOAD"},
      {R"({"name":"x","command":["true"],"colour":"red"})", "colour"},
      {R"({"name":"x","command":["true"],"command":["false"]})", "duplicate"},
  };
  for (const Case& c : cases) {
    RunResult r = server_.Curl("POST", "/api/v1/tenants/acme/jobs", alice, c.body);
    EXPECT_EQ(r.code, 400) << c.body << ": " << r.out;
    EXPECT_NE(r.out.find(c.words), std::string::npos) << c.body << ": " << r.out;
  }
  EXPECT_EQ(Json::parse(server_.Cli("alice", "job ls -o json").out)["items"].size(), 0u);
}

TEST_P(JobIT, CancelGivesTheJobItsGracePeriod) {
  std::string id = Submit("alice", "-- sh -c \"trap 'echo cleaning up; sleep 0.5; exit 0' TERM; "
                                   "echo started; while :; do sleep 0.1; done\"");
  ASSERT_TRUE(WaitState("alice", id, "running")) << Explain("alice", id);
  ASSERT_TRUE(Wait([&] { return server_.Cli("alice", "job logs " + id).out == "started\n"; }));
  RunResult c = server_.Cli("alice", "job cancel --grace 5s " + id);
  ASSERT_EQ(c.code, 0) << c.err;
  ASSERT_TRUE(WaitState("alice", id, "cancelled")) << Explain("alice", id);
  EXPECT_EQ(server_.Cli("alice", "job logs " + id).out, "started\ncleaning up\n");
  EXPECT_EQ(Show("alice", id)["exit_code"], 0);
  // One that ignores SIGTERM is killed when the grace period ends.
  std::string stubborn = Submit("alice", "-- sh -c \"trap '' TERM; echo up; sleep 60\"");
  ASSERT_TRUE(WaitState("alice", stubborn, "running"));
  ASSERT_TRUE(Wait([&] { return server_.Cli("alice", "job logs " + stubborn).out == "up\n"; }));
  auto t0 = Clock::now();
  ASSERT_EQ(server_.Cli("alice", "job cancel --grace 1s " + stubborn).code, 0);
  ASSERT_TRUE(WaitState("alice", stubborn, "cancelled")) << Explain("alice", stubborn);
  EXPECT_GE(Clock::now() - t0, std::chrono::seconds(1));
  EXPECT_EQ(Show("alice", stubborn)["exit_code"], 137);
}

TEST_P(JobIT, AKilledAgentsJobsAreRequeuedOntoTheOtherNode) {
  std::string id = Submit("alice", "--gpus 2 -- sleep 60");
  ASSERT_TRUE(WaitState("alice", id, "running")) << Explain("alice", id);
  std::string first = Show("alice", id).value("node", "");
  std::string other = first == "node-a" ? "node-b" : "node-a";
  StopAgent(first, SIGKILL);
  ASSERT_TRUE(Wait([&] {
    Json j = Show("alice", id);
    return j.value("node", "") == other && j.value("state", "") == "running";
  })) << Explain("alice", id);
  EXPECT_EQ(NodeStatus(first), "unreachable");
}

TEST_P(JobIT, ARestartedAgentReattachesToItsRunningJob) {
  std::string id = Submit("alice", "-- sh -c 'echo before; sleep 4; echo after'");
  ASSERT_TRUE(WaitState("alice", id, "running")) << Explain("alice", id);
  std::string node = Show("alice", id).value("node", "");
  StopAgent(node, SIGTERM);
  StartAgent(node, "/nonexistent-token");  // already joined: the token is not read
  ASSERT_TRUE(WaitState("alice", id, "done", std::chrono::seconds(30))) << Explain("alice", id);
  Json j = Show("alice", id);
  EXPECT_EQ(j.value("node", ""), node);  // never requeued: the agent was back in time
  EXPECT_EQ(server_.Cli("alice", "job logs " + id).out, "before\nafter\n");
  EXPECT_NE(ReadFile(server_.dir() + "/agent-" + node + ".log").find("re-attached to 1 job"),
            std::string::npos);
}

TEST_P(JobIT, ARestartedServerStillListsAndRunsItsJobs) {
  std::string done = Submit("alice", "-- echo finished-before");
  ASSERT_TRUE(WaitState("alice", done, "done")) << Explain("alice", done);
  std::string running = Submit("bob", "--gpus 1 -- sh -c 'sleep 3; echo survived'");
  ASSERT_TRUE(WaitState("bob", running, "running")) << Explain("bob", running);
  std::string node = Show("bob", running).value("node", "");
  server_.Stop();
  server_.Restart();
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(Show("alice", done).value("state", ""), "done");
  EXPECT_EQ(server_.Cli("alice", "job logs " + done).out, "finished-before\n");
  ASSERT_TRUE(WaitState("bob", running, "done", std::chrono::seconds(30))) << Explain("bob", running);
  EXPECT_EQ(Show("bob", running).value("node", ""), node);
  EXPECT_EQ(server_.Cli("bob", "job logs " + running).out, "survived\n");
}

// Push: with heartbeats a minute apart, an idle agent still starts a placed job at once, because
// it long-polls the server for changes to its node (agent.cc WorkWaiter, JobService::
// WaitNodeChange). Without the push the job would wait for the next heartbeat, up to 60 s.
class JobPushIT : public JobIT {
 protected:
  void StartServer() override { JobIT::StartServer(60000); }
};

TEST_P(JobPushIT, AnIdleAgentStartsAPlacedJobWithoutWaitingForItsHeartbeat) {
  std::this_thread::sleep_for(std::chrono::seconds(1));  // both agents idle, a minute to go
  for (int i = 0; i < 3; ++i) {
    auto t0 = Clock::now();
    std::string id = Submit("alice", "-- echo pushed");
    ASSERT_FALSE(id.empty());
    ASSERT_TRUE(WaitState("alice", id, "done", std::chrono::seconds(10))) << Explain("alice", id);
    EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5)) << Explain("alice", id);
    EXPECT_EQ(server_.Cli("alice", "job logs " + id).out, "pushed\n");
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, JobPushIT, ::testing::Values("sqlite"),
                         [](const auto& info) { return info.param; });

INSTANTIATE_TEST_SUITE_P(Backends, JobIT, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace warden::testing
