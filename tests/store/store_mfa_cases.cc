// Store cases for schema version 2 (issue 3): session MFA flags, TOTP enrollment, the replay
// guard's compare-and-set and single-use recovery codes. Runs on every backend the including
// binary instantiates, like store_cases.cc.
#include <atomic>
#include <thread>
#include <vector>

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

User Alice() {
  User u;
  u.id = "u1";
  u.name = "alice";
  u.password_hash = "$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA";
  u.created_at = 1;
  return u;
}

UserMfa Pending(const std::string& sealed) {
  UserMfa m;
  m.user_id = "u1";
  m.sealed_secret = sealed;
  m.created_at = 10;
  return m;
}

TEST_P(StoreTest, SessionKeepsItsMfaFlagAndTime) {
  ASSERT_OK(store_->CreateUser(Alice()));
  Session s{"h1", "u1", 100, 100, 500};
  s.mfa = true;
  s.mfa_at = 123;
  ASSERT_OK(store_->CreateSession(s));
  Session got = *store_->GetSession("h1");
  EXPECT_TRUE(got.mfa);
  EXPECT_EQ(got.mfa_at, 123);
  ASSERT_OK(store_->CreateSession(Session{"h2", "u1", 100, 100, 500}));
  EXPECT_FALSE(store_->GetSession("h2")->mfa);
  EXPECT_EQ(store_->GetSession("h2")->mfa_at, 0);
}

TEST_P(StoreTest, MfaEnrollConfirmAndReplayGuard) {
  ASSERT_OK(store_->CreateUser(Alice()));
  EXPECT_CODE(store_->GetUserMfa("u1").status(), kNotFound);
  ASSERT_OK(store_->PutPendingMfa(Pending("sealed-1")));
  // A new enrollment before confirmation replaces the pending one.
  ASSERT_OK(store_->PutPendingMfa(Pending("sealed-2")));
  UserMfa m = *store_->GetUserMfa("u1");
  EXPECT_EQ(m.sealed_secret, "sealed-2");
  EXPECT_FALSE(m.confirmed);
  EXPECT_EQ(m.last_step, -1);
  // Not confirmed yet: the replay guard does not move.
  EXPECT_CODE(store_->AdvanceMfaStep("u1", 5), kNotFound);

  ASSERT_OK(store_->ConfirmMfa("u1", 100, 50, {"hash-a", "hash-b"}));
  m = *store_->GetUserMfa("u1");
  EXPECT_TRUE(m.confirmed);
  EXPECT_EQ(m.last_step, 100);
  EXPECT_EQ(m.confirmed_at, 50);
  EXPECT_EQ(*store_->CountRecoveryCodes("u1"), 2);
  EXPECT_CODE(store_->ConfirmMfa("u1", 200, 60, {}), kFailedPrecondition);
  EXPECT_CODE(store_->PutPendingMfa(Pending("sealed-3")), kFailedPrecondition);

  // Compare-and-set: only a later step is stored.
  EXPECT_CODE(store_->AdvanceMfaStep("u1", 100), kAborted);
  EXPECT_CODE(store_->AdvanceMfaStep("u1", 99), kAborted);
  ASSERT_OK(store_->AdvanceMfaStep("u1", 101));
  EXPECT_CODE(store_->AdvanceMfaStep("u1", 101), kAborted);
  EXPECT_EQ(store_->GetUserMfa("u1")->last_step, 101);
}

TEST_P(StoreTest, RecoveryCodesAreSingleUseAndGoWithTheEnrollment) {
  ASSERT_OK(store_->CreateUser(Alice()));
  ASSERT_OK(store_->PutPendingMfa(Pending("s")));
  ASSERT_OK(store_->ConfirmMfa("u1", 1, 1, {"a", "b", "c"}));
  ASSERT_OK(store_->ConsumeRecoveryCode("u1", "b"));
  EXPECT_CODE(store_->ConsumeRecoveryCode("u1", "b"), kNotFound);
  EXPECT_CODE(store_->ConsumeRecoveryCode("u1", "zzz"), kNotFound);
  EXPECT_EQ(*store_->CountRecoveryCodes("u1"), 2);
  ASSERT_OK(store_->DeleteUserMfa("u1"));
  EXPECT_CODE(store_->GetUserMfa("u1").status(), kNotFound);
  EXPECT_EQ(*store_->CountRecoveryCodes("u1"), 0);
  EXPECT_CODE(store_->ConsumeRecoveryCode("u1", "a"), kNotFound);
  ASSERT_OK(store_->DeleteUserMfa("u1"));  // idempotent
  // A fresh enrollment starts with a fresh replay guard.
  ASSERT_OK(store_->PutPendingMfa(Pending("s2")));
  EXPECT_EQ(store_->GetUserMfa("u1")->last_step, -1);
}

TEST_P(StoreTest, MfaForUnknownUserIsFailedPrecondition) {
  UserMfa m = Pending("s");
  m.user_id = "ghost";
  EXPECT_CODE(store_->PutPendingMfa(m), kFailedPrecondition);
}

TEST_P(StoreTest, ConcurrentUseOfOneStepSucceedsOnce) {
  ASSERT_OK(store_->CreateUser(Alice()));
  ASSERT_OK(store_->PutPendingMfa(Pending("s")));
  ASSERT_OK(store_->ConfirmMfa("u1", 1, 1, {"only"}));
  std::atomic<int> step_wins{0}, code_wins{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      if (store_->AdvanceMfaStep("u1", 7).ok()) ++step_wins;
      if (store_->ConsumeRecoveryCode("u1", "only").ok()) ++code_wins;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(step_wins.load(), 1);
  EXPECT_EQ(code_wins.load(), 1);
}

}  // namespace
}  // namespace warden::store::testing
