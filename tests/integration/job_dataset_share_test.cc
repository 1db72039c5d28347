// Cross-tenant dataset mounts through accepted shares (issue 5, must-show 2: "a user with `read`
// but not `copy` mounting the data into another tenant's job"), end to end: the real server, a
// real agent with the process executor, the vault, the CLI and curl, on SQLite and PostgreSQL.
// Tenant beta's job mounts acme's shared object; each attack is a submit or a fetch that would be
// served if its defence (job_dataset_shares.cc) were removed: the share gate (acceptance, revoke,
// prefix, third tenant), the copy decision at the owner, the owner-scoped role principals, and
// the re-check at every agent fetch.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "harness.h"

namespace warden::testing {
namespace {

using common::Json;
namespace fs = std::filesystem;

constexpr int kHeartbeatMs = 300;
constexpr char kPw[] = "pw-0123456789-abc";

class JobDatasetShareIT : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    setenv("GPUWARDEN_SCHED_CHECK", "1", 1);
    server_.Start(GetParam(), "agent:\n  listen: 127.0.0.1:0\n  heartbeat_interval: " +
                                  std::to_string(kHeartbeatMs) + "ms\n");
    if (HasFatalFailure() || IsSkipped()) return;
    server_.Login("admin", "admin", server_.admin_password());
    for (const char* t : {"acme", "beta", "gamma"}) {
      ASSERT_EQ(server_.Cli("admin", std::string("tenant create ") + t).code, 0);
    }
    CreateUsers(server_,
                {{"alice", "acme", "developer"},
                 {"acme-admin", "acme", "tenant-admin"},
                 {"bob", "beta", "tenant-admin"},
                 {"bea", "beta", "developer"},    // acme grants her read + copy
                 {"bert", "beta", "developer"},   // acme grants him read only
                 {"cid", "gamma", "developer"}},  // acme grants him read + copy, but no share
                kPw);
    ASSERT_FALSE(HasFatalFailure());
    marker_ = "GPUWARDEN-SHARED-PLAINTEXT-" + std::to_string(getpid()) + "-" + GetParam();
    plain_ = server_.dir() + "/model.bin";
    {
      std::ofstream out(plain_, std::ios::binary);
      for (int i = 0; i < 20000; ++i) out << marker_ << " weights " << i << "\n";
    }
    plain_sha_ = RunShell("sha256sum " + ShellQuote(plain_)).out.substr(0, 64);
    for (const char* name : {"models/llm.pt", "secret/plans"}) {
      RunResult put =
          server_.Cli("alice", std::string("dataset put ") + name + " " + ShellQuote(plain_));
      ASSERT_EQ(put.code, 0) << put.err << put.out;
    }
    // acme's data policy: its tenant admins may export (needed to offer a share); bea and cid may
    // read and copy everything; bert may only read. Role `tenant-admin` is also beta's admin bob's
    // role, but bound at beta: it must not match acme's statement for him.
    Json policy{
        {"version", 1},
        {"statements",
         Json::array({Json{{"id", "admins-export"},
                           {"effect", "allow"},
                           {"actions", {"read", "copy"}},
                           {"principals", {"role:tenant-admin"}},
                           {"resources", {"*"}}},
                      Json{{"id", "partners-mount"},
                           {"effect", "allow"},
                           {"actions", {"read", "copy"}},
                           {"principals", {"user:" + UserId("bea"), "user:" + UserId("cid")}},
                           {"resources", {"*"}}},
                      Json{{"id", "bert-reads"},
                           {"effect", "allow"},
                           {"actions", {"read"}},
                           {"principals", {"user:" + UserId("bert")}},
                           {"resources", {"*"}}}})}};
    std::ofstream(server_.dir() + "/policy.json") << policy.dump();
    RunResult p =
        server_.Cli("acme-admin", "dataset policy set partners " + server_.dir() + "/policy.json");
    ASSERT_EQ(p.code, 0) << p.err << p.out;
  }

  void TearDown() override { KillAgents(server_, agents_); }

  std::string UserId(const std::string& who) {
    auto j =
        Json::parse(server_.Curl("GET", "/api/v1/whoami", server_.Token(who)).out, nullptr, false);
    return j.is_object() ? j.value("user_id", "") : "";
  }

  void JoinAgent(const std::string& name) {
    pid_t pid = StartAgentProcess(server_, name, "sim:1xH100-80GB", JoinTokenFile(server_),
                                  {"--executor", "process"});
    agents_[name] = pid;
    ASSERT_TRUE(
        WaitUntil([&] { return NodeStatus(server_, name) == "ready"; }, std::chrono::seconds(30)))
        << ReadFile(server_.dir() + "/agent-" + name + ".log");
  }

  // acme-admin offers NAME (a prefix when `prefix`) to tenant `to`; returns the share id.
  std::string Offer(const std::string& name, const std::string& to, bool prefix) {
    RunResult r = server_.Cli("acme-admin", "dataset share " + name + " --to " + to +
                                                (prefix ? " --prefix" : "") + " -o json");
    EXPECT_EQ(r.code, 0) << r.err << r.out;
    auto j = Json::parse(r.out, nullptr, false);
    return j.is_object() ? j.value("id", "") : "";
  }
  void Accept(const std::string& who, const std::string& id) {
    RunResult r = server_.Cli(who, "dataset accept " + id);
    ASSERT_EQ(r.code, 0) << r.err << r.out;
  }

  RunResult Submit(const std::string& who, const std::string& tenant, const std::string& owner,
                   const std::string& name, const std::string& cmd = "true") {
    Json body{
        {"name", "shared"},
        {"command", {"sh", "-c", cmd}},
        {"datasets", Json::array({Json{{"name", name}, {"path", "/data/m"}, {"tenant", owner}}})}};
    return server_.Curl("POST", "/api/v1/tenants/" + tenant + "/jobs", server_.Token(who),
                        body.dump());
  }

  Json Show(const std::string& who, const std::string& id) {
    auto j = Json::parse(server_.Cli(who, "job show -o json " + id).out, nullptr, false);
    return j.is_object() ? j : Json::object();
  }
  bool WaitState(const std::string& who, const std::string& id, const std::string& state) {
    return WaitUntil([&] { return Show(who, id).value("state", "") == state; },
                     std::chrono::seconds(30));
  }
  std::string Explain(const std::string& who, const std::string& id) {
    return Show(who, id).dump() + "\nserver: " + ReadFile(server_.dir() + "/server.log") +
           "\nnode-a: " + ReadFile(server_.dir() + "/agent-node-a.log");
  }
  size_t JobCount(const std::string& who) {
    auto j = Json::parse(server_.Cli(who, "job ls -o json").out, nullptr, false);
    return j.is_object() ? j["items"].size() : 999;
  }
  std::string PlaintextCopiesOnNode() {
    return RunShell("grep -rlF " + ShellQuote(marker_) + " " +
                    ShellQuote(server_.dir() + "/agent-node-a") +
                    " /dev/shm/gpuwarden-datasets-* 2>/dev/null; true")
        .out;
  }

  std::vector<Json> AuditEvents(const std::string& action) {
    std::vector<Json> out;
    for (const auto& f : fs::directory_iterator(server_.dir() + "/data/audit")) {
      if (f.path().extension() != ".jsonl") continue;
      std::ifstream in(f.path());
      for (std::string line; std::getline(in, line);) {
        auto j = Json::parse(line, nullptr, false);
        if (j.is_discarded()) continue;
        Json e = j.contains("event") ? j["event"] : j;
        if (e.value("action", "") == action) out.push_back(e);
      }
    }
    return out;
  }

  WardenServer server_;
  std::map<std::string, pid_t> agents_;
  std::string marker_, plain_, plain_sha_;
};

// The positive case: acme shares models/ with beta, beta's admin accepts, and bea's job in beta
// (submitted through the CLI's TENANT:NAME:PATH form) reads acme's object. The submit and every
// fetched range are audited with both tenants and the share id.
TEST_P(JobDatasetShareIT, BetasJobReadsAcmesSharedDatasetAndEveryReadNamesTheShare) {
  const std::string share = Offer("models/", "beta", true);
  ASSERT_FALSE(share.empty());
  Accept("bob", share);
  JoinAgent("node-a");
  RunResult sub =
      server_.Cli("bea",
                  "job submit -o json --name shared --dataset acme:models/llm.pt:/data/m -- "
                  "sh -c 'sha256sum \"$GPUWARDEN_DATASET_0/llm.pt\" | cut -d\" \" -f1'");
  ASSERT_EQ(sub.code, 0) << sub.err << sub.out;
  const std::string id = Json::parse(sub.out).value("id", "");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(WaitState("bea", id, "done")) << Explain("bea", id);
  EXPECT_EQ(server_.Cli("bea", "job logs " + id).out, plain_sha_ + "\n");
  EXPECT_EQ(PlaintextCopiesOnNode(), "");
  // The submit event records the share that allowed the mount and the copy decision.
  bool submit_recorded = false;
  for (const Json& e : AuditEvents("jobs:submit")) {
    const std::string reason = e.value("reason", "");
    submit_recorded =
        submit_recorded || (reason.find("share " + share) != std::string::npos &&
                            reason.find("copy at tenant \"acme\"") != std::string::npos);
  }
  EXPECT_TRUE(submit_recorded);
  // Every range: allowed, audited under the owner tenant, naming beta and the share; the bytes add
  // up to the object.
  int64_t bytes = 0;
  int events = 0;
  for (const Json& e : AuditEvents("datasets:mount-read")) {
    ++events;
    EXPECT_EQ(e.value("decision", ""), "allow") << e;
    EXPECT_EQ(e.value("tenant", ""), "acme") << e;
    const std::string reason = e.value("reason", "");
    EXPECT_NE(reason.find("share " + share), std::string::npos) << e;
    EXPECT_NE(reason.find("tenant \"beta\""), std::string::npos) << e;
    bytes += e.value("bytes", int64_t{0});
  }
  EXPECT_GT(events, 0);
  EXPECT_EQ(bytes, static_cast<int64_t>(fs::file_size(plain_)));
}

// Attacks refused at submit, with nothing queued: before acceptance, read without copy, a role
// held at beta matching acme's role statement, a third tenant, a name outside the shared prefix
// (answered alike whether the name exists or not), and the CLI form of the same.
TEST_P(JobDatasetShareIT, AttackMountsWithoutAnAcceptedShareOrCopyGrantAreRefusedAtSubmit) {
  const std::string share = Offer("models/", "beta", true);
  ASSERT_FALSE(share.empty());
  // Offered but not accepted.
  RunResult r = Submit("bea", "beta", "acme", "models/llm.pt");
  EXPECT_EQ(r.code, 403) << r.out;
  EXPECT_NE(r.out.find("no accepted share"), std::string::npos) << r.out;
  Accept("bob", share);
  // read but not copy at acme.
  r = Submit("bert", "beta", "acme", "models/llm.pt");
  EXPECT_EQ(r.code, 403) << r.out;
  EXPECT_NE(r.out.find("copy of \\\"models/llm.pt\\\" at tenant \\\"acme\\\" not allowed"),
            std::string::npos)
      << r.out;
  // beta's tenant admin: `role:tenant-admin` in acme's policy is acme's admins, not beta's.
  r = Submit("bob", "beta", "acme", "models/llm.pt");
  EXPECT_EQ(r.code, 403) << r.out;
  // A third tenant: gamma has no share, even though acme's policy names cid.
  r = Submit("cid", "gamma", "acme", "models/llm.pt");
  EXPECT_EQ(r.code, 403) << r.out;
  EXPECT_NE(r.out.find("no accepted share"), std::string::npos) << r.out;
  // Outside the shared prefix: refused, and a name that does not exist answers the same.
  RunResult outside = Submit("bea", "beta", "acme", "secret/plans");
  RunResult missing = Submit("bea", "beta", "acme", "secret/nothing");
  EXPECT_EQ(outside.code, 403) << outside.out;
  EXPECT_EQ(missing.code, 403) << missing.out;
  EXPECT_NE(outside.out.find("no accepted share"), std::string::npos) << outside.out;
  // An owner tenant that does not exist answers like a missing share.
  r = Submit("bea", "beta", "nosuchtenant", "models/llm.pt");
  EXPECT_EQ(r.code, 403) << r.out;
  // The CLI form: refused with the server's reason.
  RunResult cli = server_.Cli("bert", "job submit --dataset acme:models/llm.pt:/data/m -- true");
  EXPECT_NE(cli.code, 0);
  EXPECT_NE(cli.err.find("copy"), std::string::npos) << cli.err;
  EXPECT_EQ(JobCount("bea"), 0u);
  EXPECT_EQ(JobCount("cid"), 0u);
  // Each refusal is a denied jobs:submit event.
  int denied = 0;
  for (const Json& e : AuditEvents("jobs:submit")) denied += e.value("decision", "") == "deny";
  EXPECT_GE(denied, 8);
  // Control: the same submit by bea succeeds once the share is accepted.
  r = Submit("bea", "beta", "acme", "models/llm.pt");
  EXPECT_EQ(r.code, 201) << r.out;
}

// A share revoked after submit: new submits are refused, and the already-queued job's first fetch
// (its node joins only after the revoke) is refused, so the job fails without a byte staged.
TEST_P(JobDatasetShareIT, AttackARevokedShareStopsTheQueuedJobsNextFetchAndNewSubmits) {
  const std::string share = Offer("models/llm.pt", "beta", false);
  ASSERT_FALSE(share.empty());
  Accept("bob", share);
  RunResult sub =
      Submit("bea", "beta", "acme", "models/llm.pt", "cat \"$GPUWARDEN_DATASET_0/llm.pt\"");
  ASSERT_EQ(sub.code, 201) << sub.out;
  const std::string id = Json::parse(sub.out).value("id", "");
  ASSERT_FALSE(id.empty());
  RunResult rev = server_.Cli("acme-admin", "dataset unshare " + share);
  ASSERT_EQ(rev.code, 0) << rev.err << rev.out;
  RunResult again = Submit("bea", "beta", "acme", "models/llm.pt");
  EXPECT_EQ(again.code, 403) << again.out;
  EXPECT_NE(again.out.find("no accepted share"), std::string::npos) << again.out;
  // Now a node comes: the queued job is placed, its fetch is refused, the job fails unstarted.
  JoinAgent("node-a");
  ASSERT_TRUE(WaitState("bea", id, "failed")) << Explain("bea", id);
  Json j = Show("bea", id);
  EXPECT_NE(j.value("reason", "").find("staging its datasets failed"), std::string::npos) << j;
  EXPECT_EQ(server_.Cli("bea", "job logs " + id).out, "");
  EXPECT_EQ(PlaintextCopiesOnNode(), "");
  // The refused fetch is a durable deny event naming both tenants.
  bool denied = false;
  for (const Json& e : AuditEvents("datasets:mount-read")) {
    EXPECT_EQ(e.value("decision", ""), "deny") << e;
    EXPECT_EQ(e.value("bytes", int64_t{-1}), 0) << e;
    const std::string reason = e.value("reason", "");
    denied =
        denied || (reason.find("no accepted share of \"models/llm.pt\" from tenant \"acme\" to "
                               "tenant \"beta\"") != std::string::npos);
  }
  EXPECT_TRUE(denied);
}

INSTANTIATE_TEST_SUITE_P(Backends, JobDatasetShareIT, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace warden::testing
