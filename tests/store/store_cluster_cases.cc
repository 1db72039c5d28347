// Store behaviour for the cluster tables (migration 3): join tokens, nodes, node certificates.
// Part of the same parameterised suite as store_cases.cc (SQLite unit, PostgreSQL integration).
#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "store_fixture.h"

namespace warden::store::testing {
namespace {

JoinToken MakeJoinToken(const std::string& id, const std::string& hash, int64_t expires_at) {
  return JoinToken{id, hash, "h100", "usr_admin", 1000, expires_at, 0, ""};
}

Node MakeNode(const std::string& id, const std::string& name) {
  Node n;
  n.id = id;
  n.name = name;
  n.pool = "h100";
  n.inventory_json = R"({"gpus":[]})";
  n.joined_at = 1000;
  n.last_heartbeat = 1000;
  return n;
}

TEST_P(StoreTest, JoinTokenIsUsableExactlyOnceBeforeItExpires) {
  ASSERT_TRUE(store_->CreateJoinToken(MakeJoinToken("jtk_1", "hash1", 5000)).ok());
  auto used = store_->UseJoinToken("hash1", 2000, "nod_1");
  ASSERT_TRUE(used.ok()) << used.status();
  EXPECT_EQ(used->pool, "h100");
  auto again = store_->UseJoinToken("hash1", 2001, "nod_2");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(again.status().message()).find("already used"), std::string::npos);
  auto list = store_->ListJoinTokens();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].used_at, 2000);
  EXPECT_EQ((*list)[0].used_by_node, "nod_1");

  ASSERT_TRUE(store_->CreateJoinToken(MakeJoinToken("jtk_2", "hash2", 5000)).ok());
  EXPECT_EQ(store_->UseJoinToken("hash2", 5000, "nod_3").status().code(),
            absl::StatusCode::kFailedPrecondition);  // expires_at <= now
  EXPECT_EQ(store_->UseJoinToken("nosuch", 1, "nod_4").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(StoreTest, ConcurrentUsesOfOneJoinTokenHaveOneWinner) {
  ASSERT_TRUE(store_->CreateJoinToken(MakeJoinToken("jtk_1", "hash1", 5000)).ok());
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      if (store_->UseJoinToken("hash1", 2000, "nod_" + std::to_string(i)).ok()) ++wins;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wins.load(), 1);
}

TEST_P(StoreTest, NodeCreateGetListUpdateDelete) {
  ASSERT_TRUE(store_->CreateNode(MakeNode("nod_1", "gpu-01")).ok());
  ASSERT_TRUE(store_->CreateNode(MakeNode("nod_2", "gpu-02")).ok());
  EXPECT_EQ(store_->CreateNode(MakeNode("nod_3", "gpu-01")).code(),
            absl::StatusCode::kAlreadyExists);
  Node n = *store_->GetNodeByName("gpu-01");
  EXPECT_EQ(n.id, "nod_1");
  n.schedule = "cordoned";
  n.status = "unreachable";
  n.labels_json = R"({"zone":"eu-1"})";
  ASSERT_TRUE(store_->UpdateNode(n).ok());
  Node back = *store_->GetNode("nod_1");
  EXPECT_EQ(back.schedule, "cordoned");
  EXPECT_EQ(back.status, "unreachable");
  EXPECT_EQ(back.labels_json, R"({"zone":"eu-1"})");
  n.schedule = "sleeping";  // the CHECK constraint refuses unknown states
  EXPECT_FALSE(store_->UpdateNode(n).ok());
  EXPECT_EQ(store_->ListNodes()->size(), 2u);
  ASSERT_TRUE(store_->DeleteNode("nod_1").ok());
  EXPECT_EQ(store_->GetNode("nod_1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteNode("nod_1").code(), absl::StatusCode::kNotFound);
}

TEST_P(StoreTest, NodeCertificatesAreRevokedPerNodeAndOutliveTheNode) {
  ASSERT_TRUE(store_->CreateNode(MakeNode("nod_1", "gpu-01")).ok());
  ASSERT_TRUE(store_->AddNodeCert({"AA01", "nod_1", 1000, 9000, 0}).ok());
  ASSERT_TRUE(store_->AddNodeCert({"AA02", "nod_1", 2000, 9000, 0}).ok());
  ASSERT_TRUE(store_->AddNodeCert({"BB01", "nod_2", 2000, 9000, 0}).ok());
  EXPECT_FALSE(store_->AddNodeCert({"AA01", "nod_1", 1000, 9000, 0}).ok());  // serials are unique
  EXPECT_EQ(*store_->RevokeNodeCerts("nod_1", 3000), 2);
  EXPECT_EQ(*store_->RevokeNodeCerts("nod_1", 4000), 0);  // already revoked: unchanged
  ASSERT_TRUE(store_->DeleteNode("nod_1").ok());
  EXPECT_EQ(store_->GetNodeCert("AA01")->revoked_at, 3000);
  EXPECT_EQ(store_->GetNodeCert("BB01")->revoked_at, 0);
  EXPECT_EQ(store_->GetNodeCert("CC01").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace warden::store::testing
