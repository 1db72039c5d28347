// Store cases for schema version 5 (issue 3, SSO): external identities linked to just-in-time
// users. Runs on every backend the including binary instantiates, like store_cases.cc.
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

User SsoUser(const std::string& id, const std::string& name) {
  User u;
  u.id = id;
  u.name = name;
  u.created_at = 1;  // no password hash: SSO-only
  return u;
}

TEST_P(StoreTest, ExternalIdentityLinksOneProviderSubjectToOneUser) {
  ASSERT_OK(store_->CreateUser(SsoUser("u1", "corp.alice")));
  ASSERT_OK(store_->CreateUser(SsoUser("u2", "corp.alice-2")));
  EXPECT_CODE(store_->GetExternalIdentity("corp", "alice").status(), kNotFound);
  ASSERT_OK(store_->LinkExternalIdentity({"corp", "alice", "u1", "alice@example.test", 10, 10}));
  ExternalIdentity got = *store_->GetExternalIdentity("corp", "alice");
  EXPECT_EQ(got.user_id, "u1");
  EXPECT_EQ(got.email, "alice@example.test");
  EXPECT_EQ(got.created_at, 10);
  // The same subject cannot be linked to a second user (no account takeover by re-linking).
  EXPECT_CODE(store_->LinkExternalIdentity({"corp", "alice", "u2", "", 11, 11}), kAlreadyExists);
  EXPECT_EQ(store_->GetExternalIdentity("corp", "alice")->user_id, "u1");
  // The subject is per provider: "alice" at another IdP is another person.
  EXPECT_CODE(store_->GetExternalIdentity("other", "alice").status(), kNotFound);
  ASSERT_OK(store_->LinkExternalIdentity({"other", "alice", "u2", "", 12, 12}));
  EXPECT_EQ(store_->GetExternalIdentity("other", "alice")->user_id, "u2");
  // Subjects are compared exactly (case matters, as in OIDC).
  EXPECT_CODE(store_->GetExternalIdentity("corp", "ALICE").status(), kNotFound);
}

TEST_P(StoreTest, ExternalIdentityNeedsAnExistingUserAndRecordsLogins) {
  EXPECT_CODE(store_->LinkExternalIdentity({"corp", "bob", "nobody", "", 1, 1}),
              kFailedPrecondition);
  EXPECT_CODE(store_->LinkExternalIdentity({"", "bob", "u1", "", 1, 1}), kInvalidArgument);
  EXPECT_CODE(store_->TouchExternalIdentity("corp", "bob", "", 5), kNotFound);
  ASSERT_OK(store_->CreateUser(SsoUser("u1", "corp.bob")));
  ASSERT_OK(store_->LinkExternalIdentity({"corp", "bob", "u1", "", 1, 1}));
  ASSERT_OK(store_->TouchExternalIdentity("corp", "bob", "bob@example.test", 50));
  ExternalIdentity got = *store_->GetExternalIdentity("corp", "bob");
  EXPECT_EQ(got.last_login_at, 50);
  EXPECT_EQ(got.created_at, 1);
  EXPECT_EQ(got.email, "bob@example.test");
}

}  // namespace
}  // namespace warden::store::testing
