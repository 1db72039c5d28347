// cluster::Cluster against a real SQLite store, a real CA in a temp dir, a FakeClock and a seeded
// Rng: join tokens (single use, expiry, CA binding), agent authentication (each refusal is an
// attack that must fail), liveness, labels/taints, and the strict inventory decoder.
#include "cluster/cluster.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "common/encoding.h"
#include "common/strings.h"

namespace warden::cluster {
namespace {

using common::Json;

std::string TempDir(const std::string& tag) {
  static int n = 0;
  std::string d = ::testing::TempDir() + "cluster_" + tag + "_" + std::to_string(getpid()) + "_" +
                  std::to_string(n++);
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

NodeInventory SampleInventory() {
  NodeInventory inv;
  inv.hostname = "gpu-01";
  inv.os = "Debian GNU/Linux 12 (bookworm)";
  inv.kernel = "6.1.0-18-amd64";
  inv.arch = "x86_64";
  inv.cpus = 64;
  inv.memory_mib = 515000;
  inv.agent_version = "0.1.0";
  inv.gpu_backend = "sim";
  inv.container_runtimes = {{"runc", "1.1.5"}};
  auto spec = gpu::ParseSimSpec("2xH100-80GB:mig,1xL40S-48GB");
  inv.gpus = gpu::ExpandSimSpec(*spec, {});
  inv.gpus[0].mig_instances.push_back({"MIG-aaaa", 9, "3g.40gb", 4, 40192});
  return inv;
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("svc");
    auto pki = pki::EnsureServerPki(dir_ + "/pki", {}, clock_);
    ASSERT_TRUE(pki.ok()) << pki.status();
    fingerprint_ = pki->ca_fingerprint;
    auto ca = pki::NodeCertificateAuthority::Load(dir_ + "/pki");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::move(*ca);
    auto store = store::OpenStore({"sqlite://" + dir_ + "/state.db"});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    ClusterOptions opts;
    opts.heartbeat_interval = absl::Seconds(5);
    opts.ca_fingerprint = fingerprint_;
    auto c = Cluster::Create(*store_, *ca_, clock_, rng_, opts);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string NewToken(const std::string& pool = "gpu", absl::Duration ttl = absl::Hours(1)) {
    auto t = cluster_->CreateJoinToken(pool, ttl, "usr_admin");
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? t->token : "";
  }

  absl::StatusOr<JoinResult> JoinAs(const std::string& name, const std::string& token,
                                    std::string* key_pem = nullptr) {
    auto kc = pki::NewNodeKeyAndCsr(name);
    if (!kc.ok()) return kc.status();
    if (key_pem) *key_pem = kc->key_pem;
    return cluster_->Join({token, kc->csr_pem, name, SampleInventory()});
  }

  // DER of a PEM certificate, as the TLS layer hands it over.
  static std::string Der(const std::string& pem) {
    std::string b64;
    std::istringstream in(pem);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("-----", 0) != 0) b64 += line;
    }
    // Base64 (standard alphabet) decode.
    std::string out;
    int val = 0, bits = -8;
    for (char c : b64) {
      int d = c >= 'A' && c <= 'Z'   ? c - 'A'
              : c >= 'a' && c <= 'z' ? c - 'a' + 26
              : c >= '0' && c <= '9' ? c - '0' + 52
              : c == '+'             ? 62
              : c == '/'             ? 63
                                     : -1;
      if (d < 0) continue;
      val = (val << 6) + d;
      bits += 6;
      if (bits >= 0) {
        out.push_back(static_cast<char>((val >> bits) & 0xff));
        bits -= 8;
      }
    }
    return out;
  }

  common::FakeClock clock_;
  common::SeededRng rng_{42};
  std::string dir_, fingerprint_;
  std::unique_ptr<pki::NodeCertificateAuthority> ca_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<Cluster> cluster_;
};

TEST_F(ClusterTest, JoinCreatesNodeInTokensPoolWithCertificateForItsId) {
  auto r = JoinAs("gpu-01", NewToken("h100-pool"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->node.pool, "h100-pool");
  auto id = pki::ReadNodeIdentity(r->certificate.cert_pem);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->node_id, r->node.id);
  EXPECT_EQ(r->certificate.not_after - clock_.Now(), absl::Hours(24));
  auto n = cluster_->GetNode("gpu-01");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->status, "ready");
  Json j = Cluster::NodeJson(*n, false);
  EXPECT_EQ(j["gpus"], 3);
  EXPECT_EQ(j["gpu_models"], "2x H100-80GB, 1x L40S-48GB");
}

TEST_F(ClusterTest, JoinTokenIsStoredHashedNeverInClear) {
  std::string token = NewToken();
  auto parts = pki::ParseJoinToken(token);
  ASSERT_TRUE(parts.ok());
  auto all = store_->ListJoinTokens();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].token_hash, pki::JoinSecretHash(parts->secret));
  EXPECT_EQ((*all)[0].token_hash.find(parts->secret), std::string::npos);
}

TEST_F(ClusterTest, AttackReusedJoinTokenIsRefused) {
  std::string token = NewToken();
  ASSERT_TRUE(JoinAs("gpu-01", token).ok());
  auto again = JoinAs("gpu-02", token);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(std::string(again.status().message()).find("already used"), std::string::npos);
  EXPECT_FALSE(cluster_->GetNode("gpu-02").ok());
}

TEST_F(ClusterTest, AttackExpiredJoinTokenIsRefused) {
  std::string token = NewToken("gpu", absl::Minutes(10));
  clock_.Advance(absl::Minutes(10));
  auto r = JoinAs("gpu-01", token);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(std::string(r.status().message()).find("expired"), std::string::npos);
}

TEST_F(ClusterTest, AttackForgedOrForeignJoinTokensAreRefused) {
  std::string token = NewToken();
  // Right shape, secret never issued.
  std::string forged =
      pki::FormatJoinToken(common::Base64UrlEncode(std::string(32, 'x')), fingerprint_);
  EXPECT_EQ(JoinAs("gpu-01", forged).status().code(), absl::StatusCode::kUnauthenticated);
  // The issued secret presented for another CA: refused before any lookup.
  auto parts = pki::ParseJoinToken(token);
  std::string other_ca = pki::FormatJoinToken(parts->secret, "SHA256:" + std::string(64, 'a'));
  auto r = JoinAs("gpu-01", other_ca);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(JoinAs("gpu-01", "not-a-token").status().code(), absl::StatusCode::kUnauthenticated);
  // None of that consumed the real token.
  EXPECT_TRUE(JoinAs("gpu-01", token).ok());
}

TEST_F(ClusterTest, NameTakenOrBadCsrDoesNotConsumeTheToken) {
  ASSERT_TRUE(JoinAs("gpu-01", NewToken()).ok());
  std::string token = NewToken();
  EXPECT_EQ(JoinAs("gpu-01", token).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(cluster_->Join({token, "garbage", "gpu-02", std::nullopt}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(JoinAs("gpu-02", token).ok());
}

TEST_F(ClusterTest, JoinTokenTtlAndPoolAreValidated) {
  EXPECT_FALSE(cluster_->CreateJoinToken("gpu", absl::Seconds(5), "u").ok());
  EXPECT_FALSE(cluster_->CreateJoinToken("gpu", absl::Hours(24 * 30), "u").ok());
  EXPECT_FALSE(cluster_->CreateJoinToken("Bad Pool", absl::Hours(1), "u").ok());
}

TEST_F(ClusterTest, AgentWithItsOwnCertificateIsAuthenticated) {
  auto r = JoinAs("gpu-01", NewToken());
  ASSERT_TRUE(r.ok());
  auto peer = cluster_->AuthenticateAgent(Der(r->certificate.cert_pem), r->node.id);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->node_name, "gpu-01");
}

TEST_F(ClusterTest, AttackAnotherNodesCertificateIsRefused) {
  auto a = JoinAs("gpu-a", NewToken());
  auto b = JoinAs("gpu-b", NewToken());
  ASSERT_TRUE(a.ok() && b.ok());
  auto peer = cluster_->AuthenticateAgent(Der(a->certificate.cert_pem), b->node.id);
  EXPECT_EQ(peer.status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(ClusterTest, AttackMissingCertificateIsRefused) {
  auto a = JoinAs("gpu-a", NewToken());
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(cluster_->AuthenticateAgent("", a->node.id).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(ClusterTest, AttackExpiredCertificateIsRefusedByOurClock) {
  auto a = JoinAs("gpu-a", NewToken());
  ASSERT_TRUE(a.ok());
  clock_.Advance(absl::Hours(24) + absl::Seconds(1));
  auto peer = cluster_->AuthenticateAgent(Der(a->certificate.cert_pem), a->node.id);
  EXPECT_EQ(peer.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(std::string(peer.status().message()).find("expired"), std::string::npos);
}

TEST_F(ClusterTest, AttackCertificateThisCaNeverRecordedIsRefused) {
  // Signed by our own CA with a valid identity, but not issued through Join/Renew (e.g. a stolen
  // CA key used offline, or a forged issuance): its serial is unknown.
  auto a = JoinAs("gpu-a", NewToken());
  ASSERT_TRUE(a.ok());
  auto kc = pki::NewNodeKeyAndCsr("gpu-a");
  auto rogue = ca_->Issue(kc->csr_pem, a->node.id, "gpu-a", absl::Hours(1), clock_.Now());
  ASSERT_TRUE(rogue.ok());
  auto peer = cluster_->AuthenticateAgent(Der(rogue->cert_pem), a->node.id);
  EXPECT_EQ(peer.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(std::string(peer.status().message()).find("unknown"), std::string::npos);
}

TEST_F(ClusterTest, AttackRevokedCertificateAfterNodeRemovalIsRefused) {
  auto a = JoinAs("gpu-a", NewToken());
  ASSERT_TRUE(a.ok());
  std::string der = Der(a->certificate.cert_pem);
  ASSERT_TRUE(cluster_->AuthenticateAgent(der, a->node.id).ok());
  ASSERT_TRUE(cluster_->RemoveNode("gpu-a").ok());
  auto peer = cluster_->AuthenticateAgent(der, a->node.id);
  EXPECT_EQ(peer.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(std::string(peer.status().message()).find("revoked"), std::string::npos);
  auto cert = store_->GetNodeCert(a->certificate.serial);
  ASSERT_TRUE(cert.ok());
  EXPECT_NE(cert->revoked_at, 0);
}

TEST_F(ClusterTest, RenewIssuesAFreshRecordedCertificate) {
  auto a = JoinAs("gpu-a", NewToken());
  ASSERT_TRUE(a.ok());
  auto peer = cluster_->AuthenticateAgent(Der(a->certificate.cert_pem), a->node.id);
  ASSERT_TRUE(peer.ok());
  clock_.Advance(absl::Hours(16));
  auto kc = pki::NewNodeKeyAndCsr("gpu-a");
  auto fresh = cluster_->Renew(*peer, kc->csr_pem);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_NE(fresh->serial, a->certificate.serial);
  clock_.Advance(absl::Hours(9));  // the first certificate has expired, the renewed one has not
  EXPECT_FALSE(cluster_->AuthenticateAgent(Der(a->certificate.cert_pem), a->node.id).ok());
  EXPECT_TRUE(cluster_->AuthenticateAgent(Der(fresh->cert_pem), a->node.id).ok());
}

TEST_F(ClusterTest, NodeBecomesUnreachableAfterThreeMissedHeartbeatsAndRecovers) {
  auto a = JoinAs("gpu-a", NewToken());
  ASSERT_TRUE(a.ok());
  auto peer = cluster_->AuthenticateAgent(Der(a->certificate.cert_pem), a->node.id);
  ASSERT_TRUE(peer.ok());
  ASSERT_TRUE(cluster_->Heartbeat(*peer, std::nullopt).ok());
  clock_.Advance(absl::Seconds(15));  // exactly three intervals: not yet
  EXPECT_TRUE(cluster_->CheckLiveness().empty());
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_EQ(cluster_->CheckLiveness(), std::vector<std::string>{"gpu-a"});
  EXPECT_EQ(cluster_->GetNode("gpu-a")->status, "unreachable");
  EXPECT_TRUE(cluster_->CheckLiveness().empty());  // marked once
  ASSERT_TRUE(cluster_->Heartbeat(*peer, std::nullopt).ok());
  EXPECT_EQ(cluster_->GetNode("gpu-a")->status, "ready");
}

TEST_F(ClusterTest, HeartbeatStoresAChangedInventory) {
  auto a = JoinAs("gpu-a", NewToken());
  auto peer = cluster_->AuthenticateAgent(Der(a->certificate.cert_pem), a->node.id);
  ASSERT_TRUE(peer.ok());
  NodeInventory inv = SampleInventory();
  inv.gpus.pop_back();
  ASSERT_TRUE(cluster_->Heartbeat(*peer, inv).ok());
  EXPECT_EQ(Cluster::NodeJson(*cluster_->GetNode("gpu-a"), false)["gpus"], 2);
}

TEST_F(ClusterTest, CordonDrainLabelsTaints) {
  ASSERT_TRUE(JoinAs("gpu-a", NewToken()).ok());
  EXPECT_EQ(cluster_->SetSchedule("gpu-a", "cordoned")->schedule, "cordoned");
  EXPECT_EQ(cluster_->SetSchedule("gpu-a", "draining")->schedule, "draining");
  EXPECT_EQ(cluster_->SetSchedule("gpu-a", "active")->schedule, "active");
  EXPECT_FALSE(cluster_->SetSchedule("gpu-a", "sleeping").ok());
  EXPECT_EQ(cluster_->SetSchedule("nope", "cordoned").status().code(), absl::StatusCode::kNotFound);
  auto n = cluster_->UpdateLabels("gpu-a", {{"zone", "eu-1"}, {"tier", "gold"}}, {"tier"});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(Cluster::NodeJson(*n, false)["labels"], (Json{{"zone", "eu-1"}}));
  EXPECT_FALSE(cluster_->UpdateLabels("gpu-a", {{"Bad Key", "x"}}, {}).ok());
  auto t = ParseTaint("dedicated=acme:NoSchedule");
  ASSERT_TRUE(t.ok());
  n = cluster_->UpdateTaints("gpu-a", {*t}, {});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(Cluster::NodeJson(*n, false)["taints"][0]["effect"], "NoSchedule");
  EXPECT_FALSE(ParseTaint("dedicated=acme:Sometimes").ok());
  n = cluster_->UpdateTaints("gpu-a", {}, {"dedicated"});
  EXPECT_TRUE(Cluster::NodeJson(*n, false)["taints"].empty());
  // Issue 6: a node's pool changes (stored; the job service gives it to the scheduler).
  n = cluster_->SetPool("gpu-a", "h100-b");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(Cluster::NodeJson(*n, false)["pool"], "h100-b");
  EXPECT_EQ(cluster_->GetNode("gpu-a")->pool, "h100-b");
  EXPECT_EQ(cluster_->SetPool("gpu-a", "Bad Pool").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cluster_->SetPool("nope", "h100-b").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cluster_->GetNode("gpu-a")->pool, "h100-b");
}

// ---- inventory decoder ----

TEST(InventoryTest, RoundTripsCanonically) {
  Json j = EncodeInventory(SampleInventory());
  auto back = DecodeInventory(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(EncodeInventory(*back), j);
  auto text = DecodeInventoryText(j.dump());
  ASSERT_TRUE(text.ok());
}

TEST(InventoryTest, StrictDecoderRefusesWhatItDoesNotExpect) {
  Json good = EncodeInventory(SampleInventory());
  auto expect_bad = [&](Json j, const std::string& needle) {
    auto r = DecodeInventory(j);
    ASSERT_FALSE(r.ok()) << j.dump();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(r.status().message()).find(needle), std::string::npos) << r.status();
  };
  Json j = good;
  j["extra"] = 1;
  expect_bad(j, "inventory.extra");
  j = good;
  j.erase("kernel");
  expect_bad(j, "inventory.kernel");
  j = good;
  j["cpus"] = "64";
  expect_bad(j, "inventory.cpus");
  j = good;
  j["cpus"] = -1;
  expect_bad(j, "out of range");
  j = good;
  j["memory_mib"] = 18446744073709551615ull;
  expect_bad(j, "out of range");
  j = good;
  j["hostname"] = "evil\x1b[31m";
  expect_bad(j, "control character");
  j = good;
  j["os"] = std::string(300, 'a');
  expect_bad(j, "longer than");
  j = good;
  j["gpu_backend"] = "cuda";
  expect_bad(j, "gpu_backend");
  j = good;
  j["gpus"][1]["uuid"] = j["gpus"][0]["uuid"];
  expect_bad(j, "duplicate GPU UUID");
  j = good;
  j["gpus"][2]["mig_instances"] = j["gpus"][0]["mig_instances"];
  expect_bad(j, "MIG mode is off");
  j = good;
  j["gpus"][0]["mig_instances"][0]["start"] = 8;
  expect_bad(j, "start");
  j = good;
  j["gpus"] = Json::array();
  for (int i = 0; i < 65; ++i) j["gpus"].push_back(good["gpus"][0]);
  expect_bad(j, "more than 64");
  EXPECT_FALSE(DecodeInventoryText("{\"hostname\":\"a\",\"hostname\":\"b\"}").ok());
  EXPECT_FALSE(DecodeInventoryText("[1,2]").ok());
  EXPECT_FALSE(DecodeInventoryText(std::string(kMaxInventoryBytes + 1, ' ')).ok());
}

}  // namespace
}  // namespace warden::cluster
