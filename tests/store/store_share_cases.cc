// Store cases for schema version 6 (issue 5): cross-tenant vault shares. Runs on every backend the
// including binary instantiates, like store_cases.cc.
#include "gtest/gtest.h"
#include "store_fixture.h"

namespace warden::store::testing {
namespace {

#define ASSERT_OK(expr)                   \
  do {                                    \
    auto status_ = (expr);                \
    ASSERT_TRUE(status_.ok()) << status_; \
  } while (0)
#define EXPECT_CODE(expr, code_) EXPECT_EQ((expr).code(), absl::StatusCode::code_)

VaultShare Offer(const std::string& id, const std::string& owner, const std::string& target) {
  VaultShare s;
  s.id = id;
  s.owner_tenant_id = owner;
  s.name = "models/";
  s.is_prefix = true;
  s.target_tenant_id = target;
  s.offered_by = "usr_a";
  s.offered_at = 100;
  return s;
}

TEST_P(StoreTest, VaultShareMovesOnlyFromTheStatesItIsIn) {
  ASSERT_OK(store_->CreateVaultShare(Offer("shr_1", "ten_a", "ten_b")));
  EXPECT_CODE(store_->CreateVaultShare(Offer("shr_1", "ten_a", "ten_c")), kAlreadyExists);
  VaultShare got = *store_->GetVaultShare("shr_1");
  EXPECT_EQ(got.state, "offered");
  EXPECT_TRUE(got.is_prefix);
  EXPECT_EQ(got.name, "models/");
  EXPECT_CODE(store_->GetVaultShare("shr_x").status(), kNotFound);

  auto accepted = store_->TransitionVaultShare("shr_1", {"offered"}, "accepted", "usr_b", 200);
  ASSERT_OK(accepted.status());
  EXPECT_EQ(accepted->state, "accepted");
  EXPECT_EQ(accepted->decided_by, "usr_b");
  EXPECT_EQ(accepted->decided_at, 200);
  // A second accept is a compare-and-set that no longer matches.
  auto again = store_->TransitionVaultShare("shr_1", {"offered"}, "accepted", "usr_b", 201);
  EXPECT_CODE(again.status(), kFailedPrecondition);
  EXPECT_NE(std::string(again.status().message()).find("accepted"), std::string::npos);

  auto revoked =
      store_->TransitionVaultShare("shr_1", {"offered", "accepted"}, "revoked", "usr_a", 300);
  ASSERT_OK(revoked.status());
  EXPECT_EQ(revoked->revoked_by, "usr_a");
  EXPECT_EQ(revoked->decided_by, "usr_b");  // the acceptance stays on record
  // Revoked is final: an accept racing the revoke cannot bring it back.
  EXPECT_CODE(store_->TransitionVaultShare("shr_1", {"offered"}, "accepted", "usr_b", 301).status(),
              kFailedPrecondition);
  EXPECT_EQ(store_->GetVaultShare("shr_1")->state, "revoked");
  EXPECT_CODE(store_->TransitionVaultShare("nope", {"offered"}, "accepted", "u", 1).status(),
              kNotFound);
}

TEST_P(StoreTest, VaultSharesListOnBothSidesAndGoWithTheTenant) {
  ASSERT_OK(store_->CreateTenant({"ten_a", "a", 1}));
  ASSERT_OK(store_->CreateTenant({"ten_b", "b", 1}));
  ASSERT_OK(store_->CreateVaultShare(Offer("shr_1", "ten_a", "ten_b")));
  ASSERT_OK(store_->CreateVaultShare(Offer("shr_2", "ten_b", "ten_c")));
  ASSERT_OK(store_->CreateVaultShare(Offer("shr_3", "ten_c", "ten_d")));
  EXPECT_EQ(store_->ListVaultShares("ten_a")->size(), 1u);
  EXPECT_EQ(store_->ListVaultShares("ten_b")->size(), 2u);
  EXPECT_EQ(store_->ListVaultShares("ten_e")->size(), 0u);
  ASSERT_OK(store_->DeleteTenant("ten_b"));
  EXPECT_CODE(store_->GetVaultShare("shr_1").status(), kNotFound);
  EXPECT_CODE(store_->GetVaultShare("shr_2").status(), kNotFound);
  EXPECT_TRUE(store_->GetVaultShare("shr_3").ok());
}

}  // namespace
}  // namespace warden::store::testing
