// Cluster, end to end: the real server and real `gpuwarden agent` processes with simulated GPUs
// on loopback, joining over one-time tokens and then speaking mTLS on the agents' port. The
// attack tests drive that port with curl and certificates made for the purpose.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "harness.h"
#include "pki/pki.h"

namespace warden::testing {
namespace {

using common::Json;
using Clock = std::chrono::steady_clock;

constexpr int kHeartbeatMs = 500;

class ClusterIT : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.Start("sqlite", "agent:\n  listen: 127.0.0.1:0\n  heartbeat_interval: " +
                                std::to_string(kHeartbeatMs) + "ms\n" + extra_config_);
    if (HasFatalFailure() || IsSkipped()) return;
    auto info = Json::parse(ReadFile(server_.dir() + "/data/server.json"));
    agent_port_ = info["agent_port"].get<int>();
    server_.Login("admin", "admin", server_.admin_password());
  }

  void TearDown() override {
    for (auto& [name, pid] : agents_) {
      if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
  }

  std::string Dir() const { return server_.dir(); }

  // A join token for `pool`, written to a file; returns its path.
  std::string TokenFile(const std::string& pool) { return JoinTokenFile(server_, pool); }

  pid_t StartAgent(const std::string& name, const std::string& gpus,
                   const std::string& token_file) {
    pid_t pid = StartAgentProcess(server_, name, gpus, token_file, {}, /*truncate_log=*/true);
    agents_[name] = pid;
    return pid;
  }

  Json Nodes() {
    RunResult r = server_.Cli("admin", "node ls -o json");
    EXPECT_EQ(r.code, 0) << r.err;
    auto j = Json::parse(r.out, nullptr, false);
    return j.is_object() ? j["items"] : Json::array();
  }

  Json NodeByName(const std::string& name) {
    for (const auto& n : Nodes()) {
      if (n.value("name", "") == name) return n;
    }
    return Json();
  }

  // Waits until `pred` holds for node `name` (up to `limit`); returns whether it did.
  bool WaitNode(const std::string& name, const std::function<bool(const Json&)>& pred,
                std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      Json n = NodeByName(name);
      if (!n.is_null() && pred(n)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  std::string NodeId(const std::string& name) {
    auto j = Json::parse(ReadFile(Dir() + "/agent-" + name + "/node.json"), nullptr, false);
    return j.is_object() ? j.value("node_id", "") : "";
  }

  // POSTs a heartbeat to the agents' port as `node_id` with the given client certificate files
  // (none when empty). Returns {HTTP status or 0 when the TLS handshake failed, body}.
  RunResult AgentCurl(const std::string& node_id, const std::string& cert, const std::string& key) {
    std::string cmd = "curl -sS --max-time 10 --cacert " + ShellQuote(Dir() + "/data/pki/ca.crt") +
                      " -w '\\n%{http_code}' -X POST -H 'Content-Type: application/json' -d '{}'";
    if (!cert.empty()) cmd += " --cert " + ShellQuote(cert) + " --key " + ShellQuote(key);
    cmd += " https://127.0.0.1:" + std::to_string(agent_port_) + "/agent/v1/nodes/" + node_id +
           "/heartbeat";
    RunResult r = RunShell(cmd);
    RunResult out;
    size_t nl = r.out.rfind('\n');
    out.code = nl == std::string::npos ? 0 : std::atoi(r.out.c_str() + nl + 1);
    out.out = nl == std::string::npos ? r.out : r.out.substr(0, nl);
    out.err = r.err;
    return out;
  }

  // Issues a certificate for `node_id` from the CA in `pki_dir`, valid [now-5m, now+ttl] at
  // `now`; writes cert and key files and returns their paths.
  std::pair<std::string, std::string> MakeCert(const std::string& pki_dir,
                                               const std::string& node_id, absl::Time now,
                                               absl::Duration ttl, const std::string& tag) {
    auto ca = pki::NodeCertificateAuthority::Load(pki_dir);
    EXPECT_TRUE(ca.ok()) << ca.status();
    auto kc = pki::NewNodeKeyAndCsr("forged");
    auto cert = (*ca)->Issue(kc->csr_pem, node_id, "forged", ttl, now);
    EXPECT_TRUE(cert.ok()) << cert.status();
    std::string c = Dir() + "/" + tag + ".crt", k = Dir() + "/" + tag + ".key";
    std::ofstream(c) << cert->cert_pem;
    std::ofstream(k) << kc->key_pem;
    std::filesystem::permissions(
        k, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    return {c, k};
  }

  // Joins one agent and waits until it is ready.
  void JoinOne(const std::string& name, const std::string& gpus = "sim:2xH100-80GB") {
    StartAgent(name, gpus, TokenFile("default"));
    ASSERT_TRUE(WaitNode(name, [](const Json& n) { return n.value("status", "") == "ready"; }))
        << ReadFile(Dir() + "/agent-" + name + ".log");
    // The server lists the node as soon as the join commits; the agent writes node.json (its id)
    // just after it gets the reply.
    auto deadline = Clock::now() + std::chrono::seconds(10);
    while (NodeId(name).empty() && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_FALSE(NodeId(name).empty()) << ReadFile(Dir() + "/agent-" + name + ".log");
  }

  WardenServer server_;
  std::string extra_config_;
  int agent_port_ = 0;
  std::map<std::string, pid_t> agents_;
};

TEST_F(ClusterIT, ThreeAgentsJoinOverMtlsAndAKilledOneIsUnreachableWithinThreeHeartbeats) {
  StartAgent("node-a", "sim:4xH100-80GB", TokenFile("h100"));
  StartAgent("node-b", "sim:2xH200-141GB", TokenFile("h200"));
  StartAgent("node-c", "sim:1xH100-80GB:mig,1xL40S-48GB", TokenFile("mixed"));
  for (const char* n : {"node-a", "node-b", "node-c"}) {
    ASSERT_TRUE(WaitNode(n, [](const Json& j) { return j.value("status", "") == "ready"; }))
        << n << ": " << ReadFile(Dir() + "/agent-" + n + ".log");
  }
  EXPECT_EQ(NodeByName("node-a")["gpus"], 4);
  EXPECT_EQ(NodeByName("node-a")["gpu_models"], "4x H100-80GB");
  EXPECT_EQ(NodeByName("node-a")["pool"], "h100");
  EXPECT_EQ(NodeByName("node-b")["gpus"], 2);
  EXPECT_EQ(NodeByName("node-b")["gpu_models"], "2x H200-141GB");
  EXPECT_EQ(NodeByName("node-c")["gpu_models"], "1x H100-80GB, 1x L40S-48GB");
  // The table a person reads, and the detail view with MIG mode and UUIDs.
  RunResult table = server_.Cli("admin", "node ls");
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_NE(table.out.find("4x H100-80GB"), std::string::npos) << table.out;
  RunResult show = server_.Cli("admin", "node show node-c");
  ASSERT_EQ(show.code, 0) << show.err;
  EXPECT_NE(show.out.find("GPU-"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("L40S-48GB"), std::string::npos) << show.out;

  // Kill node-b's agent: within three heartbeat intervals it is unreachable, the others are not.
  ASSERT_TRUE(WaitNode("node-b", [](const Json& j) { return j.value("status", "") == "ready"; }));
  auto killed = Clock::now();
  kill(agents_["node-b"], SIGKILL);
  waitpid(agents_["node-b"], nullptr, 0);
  agents_["node-b"] = -1;
  ASSERT_TRUE(
      WaitNode("node-b", [](const Json& j) { return j.value("status", "") == "unreachable"; }));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed).count();
  std::cerr << "node-b unreachable " << ms << " ms after its agent was killed (heartbeat "
            << kHeartbeatMs << " ms)\n";
  // Deadline: 3 intervals after the last heartbeat (at most one interval before the kill), plus
  // the liveness tick (interval/5) and the polling CLI's latency.
  EXPECT_LE(ms, 3 * kHeartbeatMs + kHeartbeatMs / 5 + 1000) << "took " << ms << " ms";
  EXPECT_GE(ms, 2 * kHeartbeatMs) << "marked unreachable too early: " << ms << " ms";
  EXPECT_EQ(NodeByName("node-a")["status"], "ready");
  EXPECT_EQ(NodeByName("node-c")["status"], "ready");
}

TEST_F(ClusterIT, AttackAgentWithoutCertificateIsRefusedInTheHandshake) {
  JoinOne("node-a");
  RunResult r = AgentCurl(NodeId("node-a"), "", "");
  EXPECT_EQ(r.code, 0) << "expected a failed TLS handshake, got HTTP " << r.code << " " << r.out;
}

TEST_F(ClusterIT, AttackExpiredCertificateIsRefused) {
  JoinOne("node-a");
  // Signed by the real CA for the real node id, but it expired an hour ago.
  auto [crt, key] = MakeCert(Dir() + "/data/pki", NodeId("node-a"), absl::Now() - absl::Hours(25),
                             absl::Hours(24), "expired");
  RunResult r = AgentCurl(NodeId("node-a"), crt, key);
  EXPECT_NE(r.code, 200) << r.out;
  EXPECT_TRUE(r.code == 0 || r.code == 401) << r.code << " " << r.out;
  // The agent's own certificate still works (the test setup is not what fails).
  EXPECT_EQ(AgentCurl(NodeId("node-a"), Dir() + "/agent-node-a/node.crt",
                      Dir() + "/agent-node-a/node.key")
                .code,
            200);
}

TEST_F(ClusterIT, AttackCertificateFromAnotherCaIsRefused) {
  JoinOne("node-a");
  std::string other = Dir() + "/other-pki";
  common::RealClock clock;
  ASSERT_TRUE(pki::EnsureServerPki(other, {}, clock).ok());
  auto [crt, key] = MakeCert(other, NodeId("node-a"), absl::Now(), absl::Hours(24), "foreign");
  RunResult r = AgentCurl(NodeId("node-a"), crt, key);
  EXPECT_EQ(r.code, 0) << "expected a failed TLS handshake, got HTTP " << r.code << " " << r.out;
}

TEST_F(ClusterIT, AttackAnotherNodesCertificateIsRefused) {
  JoinOne("node-a");
  JoinOne("node-b");
  // node-a's valid certificate, speaking for node-b.
  RunResult r = AgentCurl(NodeId("node-b"), Dir() + "/agent-node-a/node.crt",
                          Dir() + "/agent-node-a/node.key");
  EXPECT_EQ(r.code, 403) << r.out;
  EXPECT_NE(r.out.find("cannot speak for node"), std::string::npos) << r.out;
}

TEST_F(ClusterIT, AttackReusedJoinTokenIsRefused) {
  std::string token = TokenFile("default");
  StartAgent("node-a", "sim:1xH100-80GB", token);
  ASSERT_TRUE(WaitNode("node-a", [](const Json& j) { return j.value("status", "") == "ready"; }));
  RunResult r =
      RunShell(ShellQuote(WardenBin()) + " agent --server " + server_.url() + " --join-token " +
               ShellQuote(token) + " --data-dir " + ShellQuote(Dir() + "/agent-thief") +
               " --gpus sim:8xH100-80GB --name thief");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("join token already used"), std::string::npos) << r.err;
  EXPECT_TRUE(NodeByName("thief").is_null());
}

TEST_F(ClusterIT, AttackRevokedCertificateAfterNodeRmIsRefusedAndTheAgentStops) {
  JoinOne("node-a");
  std::string id = NodeId("node-a");
  std::string crt = Dir() + "/agent-node-a/node.crt", key = Dir() + "/agent-node-a/node.key";
  ASSERT_EQ(AgentCurl(id, crt, key).code, 200);
  RunResult rm = server_.Cli("admin", "node rm node-a");
  ASSERT_EQ(rm.code, 0) << rm.err;
  RunResult r = AgentCurl(id, crt, key);
  EXPECT_EQ(r.code, 401) << r.out;
  EXPECT_NE(r.out.find("revoked"), std::string::npos) << r.out;
  // The agent hears the same on its next heartbeat and exits with status 4.
  int status = 0;
  auto deadline = Clock::now() + std::chrono::seconds(10);
  pid_t done = 0;
  while (Clock::now() < deadline && (done = waitpid(agents_["node-a"], &status, WNOHANG)) == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(done, agents_["node-a"]) << ReadFile(Dir() + "/agent-node-a.log");
  agents_["node-a"] = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 4);
  EXPECT_TRUE(NodeByName("node-a").is_null());
}

TEST_F(ClusterIT, JoinTokensNeedNodesManage) {
  RunResult r = server_.Cli("admin", "tenant create acme");
  ASSERT_EQ(r.code, 0) << r.err;
  r = server_.Cli("admin", "user create viewer1 --cluster --role viewer --password-stdin",
                  "viewer-password-1\n");
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  server_.Login("viewer", "viewer1", "viewer-password-1");
  r = server_.Cli("viewer", "node join-token create --pool default");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("nodes:manage"), std::string::npos) << r.err;
  EXPECT_EQ(server_.Cli("viewer", "node ls").code, 0);
}

TEST_F(ClusterIT, CordonDrainUncordonLabelTaint) {
  JoinOne("node-a");
  EXPECT_EQ(server_.Cli("admin", "node cordon node-a").code, 0);
  EXPECT_EQ(NodeByName("node-a")["schedule"], "cordoned");
  EXPECT_EQ(server_.Cli("admin", "node drain node-a").code, 0);
  EXPECT_EQ(NodeByName("node-a")["schedule"], "draining");
  EXPECT_EQ(server_.Cli("admin", "node uncordon node-a").code, 0);
  EXPECT_EQ(NodeByName("node-a")["schedule"], "active");
  EXPECT_EQ(server_.Cli("admin", "node label node-a zone=eu-1 tier=gold").code, 0);
  EXPECT_EQ(server_.Cli("admin", "node taint node-a dedicated=acme:NoSchedule").code, 0);
  Json n = NodeByName("node-a");
  EXPECT_EQ(n["labels"]["zone"], "eu-1");
  EXPECT_EQ(n["taints"][0]["key"], "dedicated");
  EXPECT_EQ(server_.Cli("admin", "node label node-a tier-").code, 0);
  EXPECT_FALSE(NodeByName("node-a")["labels"].contains("tier"));
}

TEST_F(ClusterIT, AgentBacksOffExponentiallyWhileTheServerIsAway) {
  JoinOne("node-a");
  server_.Stop();
  std::this_thread::sleep_for(std::chrono::milliseconds(4000));
  // Still running, retrying: 0.5 s, 1 s, 2 s (+-20 % jitter) fit in 4 s; a loop without back-off
  // would have logged dozens of retries.
  EXPECT_EQ(waitpid(agents_["node-a"], nullptr, WNOHANG), 0);
  std::string log = ReadFile(Dir() + "/agent-node-a.log");
  int retries = 0;
  for (size_t pos = log.find("retrying in"); pos != std::string::npos;
       pos = log.find("retrying in", pos + 1)) {
    ++retries;
  }
  EXPECT_GE(retries, 2) << log;
  EXPECT_LE(retries, 5) << log;
}

class ClusterRenewIT : public ClusterIT {
 protected:
  ClusterRenewIT() { extra_config_ = "  cert_ttl: 6s\n"; }
};

TEST_F(ClusterRenewIT, AgentRenewsItsCertificateAtTwoThirdsOfItsLife) {
  JoinOne("node-a");
  auto first = pki::ReadNodeIdentity(ReadFile(Dir() + "/agent-node-a/node.crt"));
  ASSERT_TRUE(first.ok());
  auto deadline = Clock::now() + std::chrono::seconds(15);
  std::string serial = first->serial;
  while (Clock::now() < deadline && serial == first->serial) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto now = pki::ReadNodeIdentity(ReadFile(Dir() + "/agent-node-a/node.crt"));
    if (now.ok()) serial = now->serial;
  }
  EXPECT_NE(serial, first->serial) << ReadFile(Dir() + "/agent-node-a.log");
  // Past the first certificate's expiry the node is still ready on its renewed one.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_EQ(NodeByName("node-a")["status"], "ready") << ReadFile(Dir() + "/agent-node-a.log");
  std::string audit;  // the audit log's segment files (data/audit/seg-*.jsonl)
  for (const auto& f : std::filesystem::directory_iterator(Dir() + "/data/audit")) {
    if (f.path().extension() == ".jsonl") audit += ReadFile(f.path().string());
  }
  EXPECT_NE(audit.find("nodes:renew"), std::string::npos);
}

// Issue 7: the agent runs the GPU handoff on its simulated GPUs (never verified at first: all
// quarantined, then scrubbed) and reports each device's status in its inventory; the state
// survives an agent restart.
TEST_F(ClusterIT, AgentReportsGpuHandoffStatusAndKeepsItAcrossRestarts) {
  JoinOne("node-h", "sim:2xH100-80GB");
  auto all_available = [&]() {
    RunResult r = server_.Cli("admin", "node show node-h -o json");
    auto j = Json::parse(r.out, nullptr, false);
    if (!j.is_object() || !j.contains("inventory")) return false;
    const Json& gpus = j["inventory"]["gpus"];
    if (!gpus.is_array() || gpus.size() != 2) return false;
    for (const Json& g : gpus) {
      if (!g.contains("handoff") || g["handoff"].value("state", "") != "available") return false;
    }
    return true;
  };
  auto deadline = Clock::now() + std::chrono::seconds(20);
  while (!all_available() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(all_available()) << server_.Cli("admin", "node show node-h -o json").out
                               << ReadFile(Dir() + "/agent-node-h.log");
  const std::string state_file = Dir() + "/agent-node-h/gpu-handoff.json";
  auto state = Json::parse(ReadFile(state_file), nullptr, false);
  ASSERT_TRUE(state.is_object()) << ReadFile(state_file);
  EXPECT_EQ(state["devices"].size(), 2u);
  struct stat st {};
  ASSERT_EQ(::stat(state_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_NE(ReadFile(Dir() + "/agent-node-h.log").find("GPU handoff GPU-"), std::string::npos);
  // Restart: the devices stay available (no re-scrub needed), the state is read back.
  kill(agents_["node-h"], SIGTERM);
  waitpid(agents_["node-h"], nullptr, 0);
  StartAgent("node-h", "sim:2xH100-80GB", "/nonexistent-token");
  ASSERT_TRUE(WaitNode("node-h", [](const Json& n) { return n.value("status", "") == "ready"; }));
  EXPECT_TRUE(all_available());
}

}  // namespace
}  // namespace warden::testing
