// Pools dedicated to tenants through the real server, CLI and two real agents (issue 6, must-show
// 4: "a tenant targeting another tenant's dedicated pool"). A cluster admin dedicates a pool; a
// tenant admin cannot; another tenant's running job that named the pool ends at once and its
// process is stopped; naming the pool is refused; without naming it the other tenant's jobs never land
// there; the change is audited and survives a server restart. On SQLite and PostgreSQL.
#include <gtest/gtest.h>

#include "harness.h"

namespace warden::testing {
namespace {

using common::Json;

class PoolIT : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    setenv("GPUWARDEN_SCHED_CHECK", "1", 1);  // the invariant checker after every placement
    server_.Start(GetParam(), "agent:\n  listen: 127.0.0.1:0\n  heartbeat_interval: 500ms\n");
    if (HasFatalFailure() || IsSkipped()) return;
    server_.Login("admin", "admin", server_.admin_password());
    ASSERT_EQ(server_.Cli("admin", "tenant create acme").code, 0);
    ASSERT_EQ(server_.Cli("admin", "tenant create beta").code, 0);
    CreateUsers(server_, {{"alice", "acme", "developer"},
                          {"ta", "acme", "tenant-admin"},
                          {"bob", "beta", "developer"}});
    ASSERT_FALSE(HasFatalFailure());
    Join("node-gold", "gold");
    Join("node-gen", "");
  }

  void TearDown() override { KillAgents(server_, agents_); }

  void Join(const std::string& name, const std::string& pool) {
    agents_[name] = StartAgentProcess(server_, name, "sim:1xH100-80GB",
                                      JoinTokenFile(server_, pool), {"--executor", "process"});
    ASSERT_TRUE(WaitUntil([&] { return NodeStatus(server_, name) == "ready"; }))
        << ReadFile(server_.dir() + "/agent-" + name + ".log");
  }

  std::string Submit(const std::string& who, const std::string& args) {
    return SubmitJob(server_, who, args);
  }
  Json Show(const std::string& who, const std::string& id) { return ShowJob(server_, who, id); }
  bool WaitState(const std::string& who, const std::string& id, const std::string& state) {
    return WaitJobState(server_, who, id, state);
  }

  Json Pools(const std::string& who) {
    RunResult r = server_.Cli(who, "pool ls -o json");
    EXPECT_EQ(r.code, 0) << r.err;
    auto j = Json::parse(r.out, nullptr, false);
    return j.is_object() ? j["pools"] : Json::array();
  }

  Json Pool(const std::string& name) {
    for (const auto& p : Pools("admin")) {
      if (p.value("name", "") == name) return p;
    }
    return Json();
  }

  WardenServer server_;
  std::map<std::string, pid_t> agents_;
};

TEST_P(PoolIT, AttackAnotherTenantsDedicatedPoolIsClosedToIt) {
  // Before: gold is a general pool and beta's job runs there.
  EXPECT_EQ(Pool("gold").value("general", false), true) << Pools("admin").dump();
  std::string squatter = Submit("bob", "--name squat --gpus 1 --pool gold -- sleep 271");
  ASSERT_TRUE(WaitState("bob", squatter, "running")) << Show("bob", squatter).dump();
  EXPECT_EQ(Show("bob", squatter).value("node", ""), "node-gold");

  // A tenant admin may neither dedicate a pool (not even to its own tenant) nor list pools.
  RunResult r = server_.Cli("ta", "pool dedicate gold --tenant acme");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("\"nodes:manage\" is required at cluster scope"), std::string::npos)
      << r.err;
  EXPECT_EQ(server_.Curl("PUT", "/api/v1/pools/gold", server_.Token("ta"),
                         R"({"dedicated_to":["acme"]})")
                .code,
            403);
  EXPECT_NE(server_.Cli("ta", "pool ls").code, 0);
  EXPECT_EQ(Pool("gold").value("general", false), true);
  // Bad requests name the problem and change nothing.
  r = server_.Cli("admin", "pool dedicate gold --tenant nosuch");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("no tenant named \"nosuch\""), std::string::npos) << r.err;
  RunResult raw = server_.Curl("PUT", "/api/v1/pools/gold", server_.Token("admin"),
                               R"({"dedicated":["acme"]})");
  EXPECT_EQ(raw.code, 400);
  EXPECT_NE(raw.out.find("unknown field \\\"dedicated\\\""), std::string::npos) << raw.out;
  EXPECT_EQ(Pool("gold").value("general", false), true);

  // The cluster admin dedicates gold to acme: beta's running job, which named the pool, can
  // never run there again: it ends at once, and its agent stops its process.
  r = server_.Cli("admin", "pool dedicate gold --tenant acme");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("dedicated to acme"), std::string::npos) << r.out;
  ASSERT_TRUE(WaitState("bob", squatter, "failed")) << Show("bob", squatter).dump();
  EXPECT_NE(Show("bob", squatter).value("reason", "").find("pool gold was dedicated to other"),
            std::string::npos)
      << Show("bob", squatter).dump();
  EXPECT_TRUE(WaitUntil([&] {  // ([s] keeps pgrep from matching this shell's own command line)
    return RunShell("pgrep -f '[s]leep 271' >/dev/null && echo up").out.find("up") ==
           std::string::npos;
  })) << ReadFile(server_.dir() + "/agent-node-gold.log");

  // Attack: beta naming the pool is refused with the reason.
  r = server_.Cli("bob", "job submit --name again --gpus 1 --pool gold -- true");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("dedicated to other tenants"), std::string::npos) << r.err;
  // Without naming it, beta's jobs go to the general pool only.
  std::string elsewhere = Submit("bob", "--name gen --gpus 1 -- sleep 30");
  ASSERT_TRUE(WaitState("bob", elsewhere, "running")) << Show("bob", elsewhere).dump();
  EXPECT_EQ(Show("bob", elsewhere).value("node", ""), "node-gen");
  // acme's job runs in its pool (once the GPU beta's job left is verified clean by its agent).
  std::string own = Submit("alice", "--name mine --gpus 1 --pool gold -- true");
  ASSERT_TRUE(WaitState("alice", own, "done")) << Show("alice", own).dump();
  EXPECT_EQ(Show("alice", own).value("node", ""), "node-gold");

  Json gold = Pool("gold");
  EXPECT_EQ(gold["dedicated_to"], Json::array({"acme"})) << gold.dump();
  EXPECT_EQ(gold.value("general", true), false);
  EXPECT_EQ(gold.value("nodes", 0), 1);
  EXPECT_GT(gold.value("updated_at", 0), 0);
  // The change and the refused attempts are in the audit log.
  raw = server_.Curl("GET", "/api/v1/audit/events?action=pools:dedicate", server_.Token("admin"));
  ASSERT_EQ(raw.code, 200) << raw.out;
  Json events = Json::parse(raw.out, nullptr, false);
  int done = 0, refused = 0, denied = 0;
  for (const auto& e : events.value("items", Json::array())) {
    (e.value("status", 0) == 200 ? done : refused)++;
    if (e.value("decision", "") == "deny") ++denied;
  }
  EXPECT_EQ(done, 1) << raw.out;
  EXPECT_EQ(refused, 4) << raw.out;  // the tenant admin twice, the unknown tenant, the bad field
  EXPECT_EQ(denied, 2) << raw.out;   // the tenant admin's two attempts

  // Kept across a server restart.
  server_.Stop();
  server_.Restart();
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(Pool("gold")["dedicated_to"], Json::array({"acme"}));
  r = server_.Cli("bob", "job submit --name later --gpus 1 --pool gold -- true");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("dedicated to other tenants"), std::string::npos) << r.err;

  // General again: beta may use it.
  r = server_.Cli("admin", "pool general gold");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("pool gold is general"), std::string::npos) << r.out;
  std::string back = Submit("bob", "--name back --gpus 1 --pool gold -- true");
  EXPECT_TRUE(WaitState("bob", back, "done")) << Show("bob", back).dump();
  EXPECT_EQ(Show("bob", back).value("node", ""), "node-gold");
}

INSTANTIATE_TEST_SUITE_P(Backends, PoolIT, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace warden::testing
