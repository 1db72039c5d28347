// Vault datasets mounted into jobs (issue 7 "Datasets"), end to end: the real server, two real
// agents with the process executor, the vault, the CLI and curl; on SQLite and PostgreSQL.
// A job reads its dataset and prints its SHA-256; afterwards the node holds no plaintext; the
// attacks (cross-tenant mount, another agent's or job's fetch, a policy revoked after submit, a
// tampered ciphertext) fail.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/encoding.h"
#include "harness.h"

namespace warden::testing {
namespace {

using common::Json;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr int kHeartbeatMs = 300;
constexpr char kPw[] = "pw-0123456789-abc";

class JobDatasetIT : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    setenv("GPUWARDEN_SCHED_CHECK", "1", 1);
    server_.Start(GetParam(), "agent:\n  listen: 127.0.0.1:0\n  heartbeat_interval: " +
                                  std::to_string(kHeartbeatMs) + "ms\n");
    if (HasFatalFailure() || IsSkipped()) return;
    agent_port_ = Json::parse(ReadFile(server_.dir() + "/data/server.json"))["agent_port"].get<int>();
    server_.Login("admin", "admin", server_.admin_password());
    ASSERT_EQ(server_.Cli("admin", "tenant create acme").code, 0);
    ASSERT_EQ(server_.Cli("admin", "tenant create beta").code, 0);
    CreateUsers(server_,
                {{"alice", "acme", "developer"},
                 {"acme-admin", "acme", "tenant-admin"},
                 {"bob", "beta", "developer"}},
                kPw);
    ASSERT_FALSE(HasFatalFailure());
    // The plaintext carries a marker so that a scan of the node finds any copy left behind.
    marker_ = "GPUWARDEN-PLAINTEXT-" + std::to_string(getpid()) + "-" + GetParam();
    plain_ = server_.dir() + "/train.bin";
    {
      std::ofstream out(plain_, std::ios::binary);
      for (int i = 0; i < 20000; ++i) out << marker_ << " line " << i << "\n";
    }
    plain_sha_ = RunShell("sha256sum " + ShellQuote(plain_)).out.substr(0, 64);
    RunResult put = server_.Cli("alice", "dataset put train/v1 " + ShellQuote(plain_));
    ASSERT_EQ(put.code, 0) << put.err << put.out;
    JoinAgent("node-a");
    JoinAgent("node-b");
  }

  void TearDown() override { KillAgents(server_, agents_); }

  void JoinAgent(const std::string& name) {
    pid_t pid = StartAgentProcess(server_, name, "sim:1xH100-80GB", JoinTokenFile(server_),
                                  {"--executor", "process"});
    agents_[name] = pid;
    ASSERT_TRUE(Wait([&] { return !NodeId(name).empty() && NodeField(name, "status") == "ready"; }))
        << ReadFile(server_.dir() + "/agent-" + name + ".log");
  }

  std::string NodeField(const std::string& name, const std::string& field) {
    auto j = Json::parse(server_.Cli("admin", "node ls -o json").out, nullptr, false);
    if (!j.is_object()) return "";
    for (const auto& n : j["items"]) {
      if (n.value("name", "") == name) return n.value(field, "");
    }
    return "";
  }
  std::string NodeId(const std::string& name) { return NodeField(name, "id"); }

  bool Wait(const std::function<bool()>& pred, std::chrono::seconds limit = std::chrono::seconds(30)) {
    return WaitUntil(pred, limit);
  }

  // Submits through the API (the CLI's --dataset flag builds the same body); returns the reply.
  RunResult SubmitJson(const std::string& who, const std::string& tenant, const Json& body) {
    return server_.Curl("POST", "/api/v1/tenants/" + tenant + "/jobs", server_.Token(who), body.dump());
  }
  std::string SubmitOk(const Json& body) {
    RunResult r = SubmitJson("alice", "acme", body);
    EXPECT_EQ(r.code, 201) << r.out;
    auto j = Json::parse(r.out, nullptr, false);
    return j.is_object() ? j.value("id", "") : "";
  }
  Json Show(const std::string& who, const std::string& id) {
    auto j = Json::parse(server_.Cli(who, "job show -o json " + id).out, nullptr, false);
    return j.is_object() ? j : Json::object();
  }
  bool WaitState(const std::string& id, const std::string& state) {
    return Wait([&] { return Show("alice", id).value("state", "") == state; });
  }
  std::string Explain(const std::string& id) {
    return Show("alice", id).dump() + "\nserver: " + ReadFile(server_.dir() + "/server.log") +
           "\nnode-a: " + ReadFile(server_.dir() + "/agent-node-a.log") +
           "\nnode-b: " + ReadFile(server_.dir() + "/agent-node-b.log");
  }

  // Files under the agents' state dirs and our /dev/shm fallbacks that hold the marker.
  std::string PlaintextCopiesOnNode() {
    std::string dirs = ShellQuote(server_.dir() + "/agent-node-a") + " " +
                       ShellQuote(server_.dir() + "/agent-node-b");
    return RunShell("grep -rlF " + ShellQuote(marker_) + " " + dirs +
                    " /dev/shm/gpuwarden-datasets-* 2>/dev/null; true")
        .out;
  }
  std::string DatasetMounts() {
    return RunShell("grep -F " + ShellQuote(server_.dir()) + " /proc/mounts; true").out;
  }

  // A dataset range fetched as node `as` (its certificate) for `path_node`'s URL.
  RunResult AgentFetch(const std::string& as, const std::string& path_node, const std::string& job,
                       int index) {
    std::string a = server_.dir() + "/agent-" + as;
    std::string cmd = "curl -sS --max-time 10 --cacert " + ShellQuote(server_.dir() + "/data/pki/ca.crt") +
                      " --cert " + ShellQuote(a + "/node.crt") + " --key " + ShellQuote(a + "/node.key") +
                      " -o " + ShellQuote(server_.dir() + "/fetched.bin") +
                      " -w '%{http_code}' -X POST " +
                      ShellQuote("https://127.0.0.1:" + std::to_string(agent_port_) +
                                 "/agent/v1/nodes/" + NodeId(path_node) + "/jobs/" + job +
                                 "/datasets/" + std::to_string(index) + "?chunk=0&count=1");
    std::filesystem::remove(server_.dir() + "/fetched.bin");
    RunResult r = RunShell(cmd);
    RunResult out;
    out.code = std::atoi(r.out.c_str());
    out.out = ReadFile(server_.dir() + "/fetched.bin");
    return out;
  }

  // A write-back body PUT as node `as` (its certificate) for `path_node`'s URL.
  RunResult AgentPut(const std::string& as, const std::string& path_node, const std::string& job, int index,
                     const std::string& body, const std::string& sha256) {
    std::string a = server_.dir() + "/agent-" + as;
    {
      std::ofstream(server_.dir() + "/put.bin", std::ios::binary) << body;
    }
    std::string cmd = "curl -sS --max-time 10 --cacert " + ShellQuote(server_.dir() + "/data/pki/ca.crt") +
                      " --cert " + ShellQuote(a + "/node.crt") + " --key " + ShellQuote(a + "/node.key") +
                      " -o " + ShellQuote(server_.dir() + "/put-reply.txt") + " -w '%{http_code}' -X PUT" +
                      " -H 'Content-Type: application/octet-stream' -H " + ShellQuote("X-Content-Sha256: " + sha256) +
                      " --data-binary @" + ShellQuote(server_.dir() + "/put.bin") + " " +
                      ShellQuote("https://127.0.0.1:" + std::to_string(agent_port_) + "/agent/v1/nodes/" +
                                 NodeId(path_node) + "/jobs/" + job + "/datasets/" + std::to_string(index));
    std::filesystem::remove(server_.dir() + "/put-reply.txt");
    RunResult r = RunShell(cmd);
    RunResult out;
    out.code = std::atoi(r.out.c_str());
    out.out = ReadFile(server_.dir() + "/put-reply.txt");
    return out;
  }

  // The dataset's content through the CLI ("" and a non-zero code when there is none).
  RunResult DatasetGet(const std::string& name) {
    const std::string out = server_.dir() + "/got.bin";
    std::filesystem::remove(out);
    RunResult r = server_.Cli("alice", "dataset get " + name + " " + ShellQuote(out));
    if (r.code == 0) r.out = ReadFile(out);
    return r;
  }

  // Lets the tenant's users read, export (`dataset get`) and write every dataset: with a data
  // policy in place, each action needs an allow statement.
  void AllowExport() {
    std::ofstream(server_.dir() + "/export.json")
        << R"({"version":1,"statements":[{"id":"export-all","effect":"allow","actions":["read","copy","write"],)"
           R"("principals":["*"],"resources":["*"]}]})";
    RunResult p = server_.Cli("acme-admin", "dataset policy set export " + server_.dir() + "/export.json");
    ASSERT_EQ(p.code, 0) << p.err << p.out;
  }

  static Json Output(const std::string& name = "out/model") {
    return Json{{"name", name}, {"path", "/data/out"}, {"write", true}, {"limit_mib", 4}};
  }

  std::vector<Json> AuditEvents(const std::string& action) {
    std::vector<Json> out;
    for (const auto& f : fs::directory_iterator(server_.dir() + "/data/audit")) {
      if (f.path().extension() != ".jsonl") continue;
      std::ifstream in(f.path());
      std::string line;
      while (std::getline(in, line)) {
        auto j = Json::parse(line, nullptr, false);
        if (j.is_discarded()) continue;
        Json e = j.contains("event") ? j["event"] : j;
        if (e.value("action", "") == action) out.push_back(e);
      }
    }
    return out;
  }

  static Json Job(const std::string& cmd, Json datasets) {
    return Json{{"name", "ds"}, {"command", {"sh", "-c", cmd}}, {"datasets", datasets}};
  }
  static Json Train() { return Json::array({Json{{"name", "train/v1"}, {"path", "/data/train"}}}); }

  WardenServer server_;
  std::map<std::string, pid_t> agents_;
  int agent_port_ = 0;
  std::string marker_, plain_, plain_sha_;
};

TEST_P(JobDatasetIT, AJobReadsItsMountedDatasetAndTheNodeKeepsNoPlaintextAfterwards) {
  // The job checks the data while it is still staged; the runner wipes it when the job ends.
  // Through the CLI's --dataset flag.
  RunResult sub = server_.Cli("alice", "job submit -o json --name ds --dataset train/v1:/data/train -- "
                                       "sh -c 'sha256sum \"$GPUWARDEN_DATASET_0/v1\" | cut -d\" \" -f1; sleep 2'");
  ASSERT_EQ(sub.code, 0) << sub.err << sub.out;
  std::string id = Json::parse(sub.out).value("id", "");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(WaitState(id, "running")) << Explain(id);
  // While it runs: the data is on a tmpfs mounted in the agent's state dir, nowhere on disk.
  ASSERT_TRUE(Wait([&] { return DatasetMounts().find("/datasets/" + id) != std::string::npos; }))
      << DatasetMounts();
  std::string mounts = DatasetMounts();
  EXPECT_NE(mounts.find("tmpfs"), std::string::npos) << mounts;
  EXPECT_NE(mounts.find("nosuid"), std::string::npos) << mounts;
  ASSERT_TRUE(WaitState(id, "done")) << Explain(id);
  RunResult logs = server_.Cli("alice", "job logs " + id);
  EXPECT_EQ(logs.out, plain_sha_ + "\n") << logs.err;
  // After the end: no mount, no staged file, no byte of the plaintext anywhere on the node.
  ASSERT_TRUE(Wait([&] { return DatasetMounts().find("/datasets/" + id) == std::string::npos; }))
      << DatasetMounts();
  EXPECT_EQ(PlaintextCopiesOnNode(), "");
  // Every range the agent fetched is a durable audit event with its bytes and the decision.
  int64_t bytes = 0;
  for (const Json& e : AuditEvents("datasets:mount-read")) {
    EXPECT_EQ(e.value("decision", ""), "allow") << e;
    EXPECT_EQ(e.value("actor_kind", ""), "node");
    EXPECT_NE(e.value("reason", "").find("train/v1"), std::string::npos) << e;
    bytes += e.value("bytes", int64_t{0});
  }
  EXPECT_EQ(bytes, static_cast<int64_t>(fs::file_size(plain_)));
  // The submit event records the mount decision.
  bool submit_recorded = false;
  for (const Json& e : AuditEvents("jobs:submit")) {
    submit_recorded = submit_recorded || e.value("reason", "").find("mount datasets[0]") != std::string::npos;
  }
  EXPECT_TRUE(submit_recorded);
}

TEST_P(JobDatasetIT, AttackTenantBMountingTenantAsDatasetIsRefusedAndNothingIsStaged) {
  Json ds = Json::array({Json{{"name", "train/v1"}, {"path", "/data/train"}, {"tenant", "acme"}}});
  RunResult r = SubmitJson("bob", "beta", Job("cat /data/train/v1", ds));
  EXPECT_EQ(r.code, 403) << r.out;
  // No share from acme to beta (shared mounts: job_dataset_share_test.cc).
  EXPECT_NE(r.out.find("no accepted share of \\\"train/v1\\\" from tenant \\\"acme\\\" to tenant "
                       "\\\"beta\\\""),
            std::string::npos)
      << r.out;
  // Without naming the owner, the name resolves in bob's own tenant: not found there.
  RunResult own = SubmitJson("bob", "beta", Job("true", Train()));
  EXPECT_EQ(own.code, 404) << own.out;
  EXPECT_EQ(Json::parse(server_.Cli("bob", "job ls -o json").out)["items"].size(), 0u);
  EXPECT_EQ(DatasetMounts(), "");
  EXPECT_EQ(PlaintextCopiesOnNode(), "");
  bool denied = false;
  for (const Json& e : AuditEvents("jobs:submit")) {
    denied = denied || (e.value("decision", "") == "deny" &&
                        e.value("reason", "").find("accepted share") != std::string::npos);
  }
  EXPECT_TRUE(denied);
}

TEST_P(JobDatasetIT, AttackOnlyTheJobsOwnAgentFetchesItsDatasetAndARevokedPolicyStopsIt) {
  std::string id = SubmitOk(Job("sleep 30", Train()));
  ASSERT_TRUE(WaitState(id, "running")) << Explain(id);
  const std::string mine = Show("alice", id).value("node", "");
  const std::string other = mine == "node-a" ? "node-b" : "node-a";
  // Its own node, its own job and index: the first chunk's plaintext.
  RunResult ok = AgentFetch(mine, mine, id, 0);
  EXPECT_EQ(ok.code, 200);
  EXPECT_EQ(ok.out, ReadFile(plain_).substr(0, 65536));
  // The other agent, under its own node id: the job is not assigned to it.
  RunResult r = AgentFetch(other, other, id, 0);
  EXPECT_EQ(r.code, 404) << r.out;
  EXPECT_EQ(r.out.find(marker_), std::string::npos);
  // The other agent's certificate under the owning node's URL: the certificate is not that node.
  r = AgentFetch(other, mine, id, 0);
  EXPECT_TRUE(r.code == 401 || r.code == 403) << r.code << " " << r.out;
  EXPECT_EQ(r.out.find(marker_), std::string::npos);
  // An index the job does not have, and a job id that is not on this node.
  EXPECT_EQ(AgentFetch(mine, mine, id, 1).code, 404);
  EXPECT_EQ(AgentFetch(mine, mine, "job_00000000000000000000000000", 0).code, 404);
  // The tenant admin denies reads of train/ after the submit: the next fetch is refused.
  std::ofstream(server_.dir() + "/deny.json")
      << R"({"version":1,"statements":[{"id":"no-train","effect":"deny","actions":["read"],)"
         R"("principals":["*"],"resources":["prefix:train/"]}]})";
  RunResult p = server_.Cli("acme-admin", "dataset policy set lockdown " + server_.dir() + "/deny.json");
  ASSERT_EQ(p.code, 0) << p.err << p.out;
  r = AgentFetch(mine, mine, id, 0);
  EXPECT_EQ(r.code, 403) << r.out;
  EXPECT_NE(r.out.find("no-train"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(marker_), std::string::npos);
  // Refusals are audited like reads.
  int denied = 0;
  for (const Json& e : AuditEvents("datasets:mount-read")) denied += e.value("decision", "") == "deny";
  EXPECT_GE(denied, 5);
  // A new job mounting it is refused at submit too.
  RunResult again = SubmitJson("alice", "acme", Job("true", Train()));
  EXPECT_EQ(again.code, 403) << again.out;
}

TEST_P(JobDatasetIT, AttackATamperedCiphertextFailsStagingAndTheJobDoesNotStart) {
  // Flip one byte in the middle of the stored content file (past the header).
  RunResult find = RunShell("find " + ShellQuote(server_.dir() + "/data/vault/tenants") +
                            " -name 'v*.gwv' -type f");
  std::string file = find.out.substr(0, find.out.find('\n'));
  ASSERT_FALSE(file.empty()) << find.out << find.err;
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100000);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x40);
    f.seekp(100000);
    f.write(&c, 1);
  }
  std::string id = SubmitOk(Job("echo started; cat \"$GPUWARDEN_DATASET_0/v1\"", Train()));
  ASSERT_TRUE(WaitState(id, "failed")) << Explain(id);
  Json j = Show("alice", id);
  EXPECT_NE(j.value("reason", "").find("integrity"), std::string::npos) << j;
  EXPECT_NE(j.value("reason", "").find("staging its datasets failed"), std::string::npos) << j;
  EXPECT_EQ(server_.Cli("alice", "job logs " + id).out, "");  // never started
  EXPECT_EQ(DatasetMounts(), "");
  EXPECT_EQ(PlaintextCopiesOnNode(), "");  // the verified chunks before the bad one are gone too
}

// ---- write-back of `write` datasets (issue 7) ----

TEST_P(JobDatasetIT, AJobWritesItsOutputBackAsANewVersionAndAFailedJobWritesNothing) {
  AllowExport();
  // Through the CLI's --write-dataset flag: the job writes /data/out/model (the process executor
  // names the directory in GPUWARDEN_DATASET_0).
  RunResult sub = server_.Cli("alice", "job submit -o json --name w --write-dataset out/model:/data/out:4 -- "
                                       "sh -c 'printf \"model of %s\" \"$GPUWARDEN_JOB_ID\" > \"$GPUWARDEN_DATASET_0/model\"'");
  ASSERT_EQ(sub.code, 0) << sub.err << sub.out;
  const std::string id = Json::parse(sub.out).value("id", "");
  ASSERT_TRUE(WaitState(id, "done")) << Explain(id);
  const std::string want = "model of " + id;
  RunResult got = DatasetGet("out/model");
  ASSERT_EQ(got.code, 0) << got.err;
  EXPECT_EQ(got.out, want);
  // One durable event with the bytes and the SHA-256 of what was stored.
  std::vector<Json> events = AuditEvents("datasets:write-back");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].value("decision", ""), "allow") << events[0];
  EXPECT_EQ(events[0].value("bytes", int64_t{0}), static_cast<int64_t>(want.size()));
  EXPECT_NE(events[0].value("reason", "").find(common::Sha256Hex(want)), std::string::npos) << events[0];
  EXPECT_NE(events[0].value("reason", "").find("out/model"), std::string::npos) << events[0];
  // A second job stores the next version; `dataset get` returns the newest.
  std::string second = SubmitOk(Job("printf second > \"$GPUWARDEN_DATASET_0/model\"", Json::array({Output()})));
  ASSERT_TRUE(WaitState(second, "done")) << Explain(second);
  EXPECT_EQ(DatasetGet("out/model").out, "second");
  // A job that fails (or is cancelled) writes nothing back, whatever it left.
  std::string failed =
      SubmitOk(Job("printf partial > \"$GPUWARDEN_DATASET_0/model\"; exit 3", Json::array({Output("out/failed")})));
  ASSERT_TRUE(WaitState(failed, "failed")) << Explain(failed);
  EXPECT_NE(DatasetGet("out/failed").code, 0);
  // A successful job that left no output file fails with the reason, and stores nothing.
  std::string empty = SubmitOk(Job("true", Json::array({Output("out/empty")})));
  ASSERT_TRUE(WaitState(empty, "failed")) << Explain(empty);
  EXPECT_NE(Show("alice", empty).value("reason", "").find("left no file /data/out/empty"), std::string::npos)
      << Show("alice", empty);
  EXPECT_NE(DatasetGet("out/empty").code, 0);
  // The output tmpfs mounts are gone with the jobs.
  EXPECT_TRUE(Wait([&] { return DatasetMounts().empty(); })) << DatasetMounts();
}

TEST_P(JobDatasetIT, AttackTenantBCannotWriteIntoAsDatasetAndForgedUploadsAreRefused) {
  AllowExport();
  // Refused at submit: a write into another tenant's dataset.
  Json theirs = Json::array({Json{{"name", "train/v1"}, {"tenant", "acme"}, {"path", "/data/out"}, {"write", true}}});
  RunResult r = SubmitJson("bob", "beta", Job("true", theirs));
  EXPECT_EQ(r.code, 403) << r.out;
  // A running job of acme with a write dataset (index 0) and a read-only one (index 1).
  std::string id = SubmitOk(Job("sleep 30", Json::array({Output(), Train()[0]})));
  ASSERT_TRUE(WaitState(id, "running")) << Explain(id);
  const std::string mine = Show("alice", id).value("node", "");
  const std::string other = mine == "node-a" ? "node-b" : "node-a";
  const std::string forged = "forged model";
  const std::string sha = common::Sha256Hex(forged);
  // Another node, under its own id: the job is not assigned to it.
  EXPECT_EQ(AgentPut(other, other, id, 0, forged, sha).code, 404);
  // Another node's certificate under the owning node's URL.
  r = AgentPut(other, mine, id, 0, forged, sha);
  EXPECT_TRUE(r.code == 401 || r.code == 403) << r.code << " " << r.out;
  // The owning node, but the read-only dataset: nothing can be written into train/v1.
  r = AgentPut(mine, mine, id, 1, forged, sha);
  EXPECT_EQ(r.code, 403) << r.out;
  // The owning node with a body that does not match its hash (a cut or altered upload).
  r = AgentPut(mine, mine, id, 0, forged, common::Sha256Hex("something else"));
  EXPECT_NE(r.code, 201) << r.out;
  // Over the dataset's limit (4 MiB): refused while it streams.
  r = AgentPut(mine, mine, id, 0, std::string((4 << 20) + 1, 'x'), common::Sha256Hex(std::string((4 << 20) + 1, 'x')));
  EXPECT_NE(r.code, 201) << r.out;
  if (r.code != 0) {  // 0: cut while sending
    EXPECT_NE(r.out.find("limit"), std::string::npos) << r.out;
  }
  // Nothing was stored: no half version, train/v1 untouched.
  EXPECT_NE(DatasetGet("out/model").code, 0);
  EXPECT_EQ(DatasetGet("train/v1").out, ReadFile(plain_));
  int denied = 0;
  for (const Json& e : AuditEvents("datasets:write-back")) denied += e.value("decision", "") == "deny";
  EXPECT_GE(denied, 5);
  // Cancelled: writes nothing either.
  ASSERT_EQ(server_.Cli("alice", "job cancel --grace 1s " + id).code, 0);
  ASSERT_TRUE(WaitState(id, "cancelled")) << Explain(id);
  EXPECT_NE(DatasetGet("out/model").code, 0);
}

TEST_P(JobDatasetIT, AttackWritePermissionRevokedBeforeTheJobEndsStoresNothing) {
  AllowExport();
  std::string id = SubmitOk(Job("sleep 3; printf late > \"$GPUWARDEN_DATASET_0/model\"", Json::array({Output()})));
  ASSERT_TRUE(WaitState(id, "running")) << Explain(id);
  std::ofstream(server_.dir() + "/deny-write.json")
      << R"({"version":1,"statements":[{"id":"no-out-writes","effect":"deny","actions":["write"],)"
         R"("principals":["*"],"resources":["prefix:out/"]}]})";
  RunResult p = server_.Cli("acme-admin", "dataset policy set lockdown " + server_.dir() + "/deny-write.json");
  ASSERT_EQ(p.code, 0) << p.err << p.out;
  ASSERT_TRUE(WaitState(id, "failed")) << Explain(id);
  const std::string reason = Show("alice", id).value("reason", "");
  EXPECT_NE(reason.find("writing back its datasets failed"), std::string::npos) << reason;
  EXPECT_NE(reason.find("no-out-writes"), std::string::npos) << reason;
  EXPECT_NE(DatasetGet("out/model").code, 0);
  bool denied = false;
  for (const Json& e : AuditEvents("datasets:write-back")) {
    denied = denied || (e.value("decision", "") == "deny" && e.value("reason", "").find("no-out-writes") != std::string::npos);
  }
  EXPECT_TRUE(denied);
  EXPECT_TRUE(Wait([&] { return DatasetMounts().empty(); })) << DatasetMounts();
}

INSTANTIATE_TEST_SUITE_P(Backends, JobDatasetIT, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace warden::testing
