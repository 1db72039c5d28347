// MIG end to end (issue 6): the real server and one real agent whose only GPU is a simulated
// H100 in MIG mode (process executor). Two tenants' MIG jobs land on the same GPU; the agent
// creates each planned instance and each job sees only its own MIG device UUID; `node show`
// lists the instances with their jobs; cancelling a job destroys its instance. And the node pool
// change: the admin moves a node (its job that named the old pool is requeued at once), a tenant
// admin cannot.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <tuple>
#include <set>
#include <thread>

#include "harness.h"

namespace warden::testing {
namespace {

using common::Json;

class MigIT : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("GPUWARDEN_SCHED_CHECK", "1", 1);  // the invariant checker after every placement
    server_.Start("sqlite", "agent:\n  listen: 127.0.0.1:0\n  heartbeat_interval: 500ms\n");
    if (HasFatalFailure() || IsSkipped()) return;
    server_.Login("admin", "admin", server_.admin_password());
    ASSERT_EQ(server_.Cli("admin", "tenant create acme").code, 0);
    ASSERT_EQ(server_.Cli("admin", "tenant create beta").code, 0);
    for (auto [user, tenant, role] : {std::tuple{"alice", "acme", "developer"},
                                      std::tuple{"bob", "beta", "developer"},
                                      std::tuple{"acme-admin", "acme", "tenant-admin"}}) {
      RunResult r = server_.Cli("admin",
                                std::string("user create ") + user + " --tenant " + tenant +
                                    " --role " + role + " --password-stdin",
                                std::string("pw-") + user + "-0123456789\n");
      ASSERT_EQ(r.code, 0) << r.err;
      server_.Login(user, user, std::string("pw-") + user + "-0123456789");
    }
    agent_ = StartAgentProcess(server_, "node-a", "sim:1xH100-80GB:mig", JoinTokenFile(server_),
                               {"--executor", "process"});
    ASSERT_TRUE(WaitUntil([&] { return NodeStatus(server_, "node-a") == "ready"; },
                          std::chrono::seconds(30)))
        << AgentLog();
  }

  void TearDown() override {
    if (agent_ > 0) {
      kill(agent_, SIGKILL);
      waitpid(agent_, nullptr, 0);
    }
    (void)RunShell("for f in " + server_.dir() +
                   "/agent-node-a/jobs/*/pid; do g=$(awk '{print $2}' $f 2>/dev/null); "
                   "[ -n \"$g\" ] && kill -9 -$g 2>/dev/null; done; true");
  }

  std::string AgentLog() { return ReadFile(server_.dir() + "/agent-node-a.log"); }

  std::string Submit(const std::string& who, const std::string& args) {
    return SubmitJob(server_, who, args);
  }
  Json Show(const std::string& who, const std::string& id) { return ShowJob(server_, who, id); }
  bool WaitState(const std::string& who, const std::string& id, const std::string& state) {
    return WaitJobState(server_, who, id, state);
  }

  Json Node() {
    auto j = Json::parse(server_.Cli("admin", "node show -o json node-a").out, nullptr, false);
    return j.is_object() ? j : Json::object();
  }

  Json Gpu0() {
    Json n = Node();
    if (!n.contains("inventory") || !n["inventory"].contains("gpus")) return Json::object();
    const Json& gpus = n["inventory"]["gpus"];
    return gpus.empty() ? Json::object() : gpus[0];
  }

  // The first line of a job's stdout.
  std::string FirstLine(const std::string& who, const std::string& id) {
    std::string out;
    WaitUntil([&] {
      out = server_.Cli(who, "job logs " + id).out;
      return out.find('\n') != std::string::npos;
    }, std::chrono::seconds(20));
    return out.substr(0, out.find('\n'));
  }

  WardenServer server_;
  pid_t agent_ = -1;
};

TEST_F(MigIT, TwoTenantsMigJobsOnOneGpuGetTheirOwnMigUuids) {
  const std::string gpu = Gpu0().value("uuid", "");
  ASSERT_EQ(gpu.rfind("GPU-", 0), 0u) << Node().dump();
  const std::string cmd =
      " -- sh -c 'echo \"$CUDA_VISIBLE_DEVICES $NVIDIA_VISIBLE_DEVICES\"; sleep 60'";
  const std::string a = Submit("alice", "--mig 1g.10gb" + cmd);
  const std::string b = Submit("bob", "--mig 3g.40gb" + cmd);
  ASSERT_TRUE(WaitState("alice", a, "running")) << Show("alice", a).dump() << AgentLog();
  ASSERT_TRUE(WaitState("bob", b, "running")) << Show("bob", b).dump() << AgentLog();
  // Each job sees exactly one MIG device, the same in both variables, never the parent GPU.
  std::map<std::string, std::string> seen;
  for (const auto& [who, id] : {std::pair{"alice", a}, std::pair{"bob", b}}) {
    const std::string line = FirstLine(who, id);
    const size_t sp = line.find(' ');
    ASSERT_NE(sp, std::string::npos) << line;
    const std::string cuda = line.substr(0, sp), nvidia = line.substr(sp + 1);
    EXPECT_EQ(cuda.rfind("MIG-", 0), 0u) << line;
    EXPECT_EQ(cuda, nvidia);
    EXPECT_EQ(cuda.find(','), std::string::npos) << line;
    EXPECT_EQ(line.find(gpu), std::string::npos) << line;
    seen[id] = cuda;
  }
  EXPECT_NE(seen[a], seen[b]);
  // The inventory lists both instances with the job each was created for.
  ASSERT_TRUE(WaitUntil([&] { return Gpu0().value("mig_instances", Json::array()).size() == 2; },
                        std::chrono::seconds(10)))
      << Node().dump();
  std::map<std::string, std::string> listed;  // MIG UUID -> job
  const Json gpu0 = Gpu0();
  for (const auto& m : gpu0["mig_instances"]) listed[m.value("uuid", "")] = m.value("job", "");
  EXPECT_EQ(listed[seen[a]], a) << Node().dump();
  EXPECT_EQ(listed[seen[b]], b);
  RunResult show = server_.Cli("admin", "node show node-a");
  EXPECT_NE(show.out.find("mig instances:"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find(seen[a]), std::string::npos) << show.out;
  EXPECT_NE(show.out.find(seen[b]), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("1g.10gb"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("3g.40gb"), std::string::npos) << show.out;
  // Cancelling alice's job destroys her instance; bob's stays.
  ASSERT_EQ(server_.Cli("alice", "job cancel " + a).code, 0);
  ASSERT_TRUE(WaitState("alice", a, "cancelled")) << AgentLog();
  ASSERT_TRUE(WaitUntil([&] { return Gpu0().value("mig_instances", Json::array()).size() == 1; },
                        std::chrono::seconds(15)))
      << Node().dump();
  const Json after = Gpu0();
  EXPECT_EQ(after["mig_instances"][0].value("uuid", ""), seen[b]);
  // The freed slice is reused: a new job there gets a new instance (a new UUID).
  const std::string c = Submit("alice", "--mig 1g.10gb" + cmd);
  ASSERT_TRUE(WaitState("alice", c, "running")) << Show("alice", c).dump() << AgentLog();
  const std::string line = FirstLine("alice", c);
  EXPECT_EQ(line.rfind("MIG-", 0), 0u) << line;
  EXPECT_EQ(line.find(seen[a]), std::string::npos) << line;
}

TEST_F(MigIT, AdminMovesANodeToAnotherPoolLiveAndATenantAdminCannot) {
  // A job that named the node's current pool runs there. (The scheduler learns the pool with
  // the node in its next round after the join: until then the pool is unknown and refused.)
  std::string id;
  ASSERT_TRUE(WaitUntil([&] {
    RunResult r = server_.Cli("alice", "job submit -o json --pool default --mig 1g.10gb -- sleep 60");
    auto j = Json::parse(r.out, nullptr, false);
    if (r.code == 0 && j.is_object()) id = j.value("id", "");
    return !id.empty();
  }, std::chrono::seconds(15)));
  ASSERT_TRUE(WaitState("alice", id, "running")) << Show("alice", id).dump() << AgentLog();
  // Attack: acme's tenant admin tries to move the node into a pool of its own (CLI and raw
  // PATCH). Refused, nothing changes, the job keeps running.
  RunResult cli = server_.Cli("acme-admin", "node pool node-a acme-only");
  EXPECT_NE(cli.code, 0) << cli.out;
  RunResult raw = server_.Curl("PATCH", "/api/v1/nodes/node-a", server_.Token("acme-admin"),
                               R"({"pool":"acme-only"})");
  EXPECT_EQ(raw.code, 403) << raw.out;
  RunResult dev = server_.Curl("PATCH", "/api/v1/nodes/node-a", server_.Token("alice"),
                               R"({"pool":"acme-only"})");
  EXPECT_EQ(dev.code, 403) << dev.out;
  EXPECT_EQ(Node().value("pool", ""), "default");
  EXPECT_EQ(Show("alice", id).value("state", ""), "running");
  // Bad requests name the problem.
  RunResult bad = server_.Curl("PATCH", "/api/v1/nodes/node-a", server_.Token("admin"),
                               R"({"pool":"no spaces"})");
  EXPECT_EQ(bad.code, 400) << bad.out;
  bad = server_.Curl("PATCH", "/api/v1/nodes/node-a", server_.Token("admin"), R"({"labels":{}})");
  EXPECT_EQ(bad.code, 400) << bad.out;
  // The admin moves it: the scheduler takes the new pool at once, so the job that named the old
  // pool is requeued and its agent stops it (its MIG instance goes with it).
  RunResult moved = server_.Cli("admin", "node pool node-a gpu-b");
  ASSERT_EQ(moved.code, 0) << moved.err;
  EXPECT_NE(moved.out.find("gpu-b"), std::string::npos) << moved.out;
  EXPECT_EQ(Node().value("pool", ""), "gpu-b");
  ASSERT_TRUE(WaitState("alice", id, "queued")) << Show("alice", id).dump();
  ASSERT_TRUE(WaitUntil([&] { return Gpu0().value("mig_instances", Json::array()).empty(); },
                        std::chrono::seconds(15)))
      << Node().dump() << AgentLog();
  // A job without a pool runs on the moved node.
  const std::string any = Submit("alice", "--mig 1g.10gb -- sleep 60");
  ASSERT_TRUE(WaitState("alice", any, "running")) << Show("alice", any).dump();
  // Both the refusals and the change are in the audit log as nodes:update.
  server_.AuditCountSynced();
  int allowed = 0, denied = 0;
  for (const auto& f : std::filesystem::directory_iterator(server_.dir() + "/data/audit")) {
    std::ifstream in(f.path());
    std::string line;
    while (std::getline(in, line)) {
      if (line.find("\"nodes:update\"") == std::string::npos) continue;
      (line.find("\"deny\"") != std::string::npos ? denied : allowed)++;
    }
  }
  EXPECT_GE(denied, 3) << "tenant admin (CLI, PATCH) and developer refusals";
  EXPECT_GE(allowed, 1);
}

}  // namespace
}  // namespace warden::testing
