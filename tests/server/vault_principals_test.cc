// `group:` principals of data policies (issue 5): the groups an IdP asserted for the caller reach
// the data access decision; callers without them (local sessions, API tokens, other groups) do not
// match. The server builds the request with AddCallerPrincipals (vault_shares.h) in every data
// decision (vault_routes.cc AuthorizeData, share offers).
#include <gtest/gtest.h>

#include "rbac/rbac.h"
#include "server/vault_shares.h"
#include "vault/access_policy.h"

namespace warden::server {
namespace {

constexpr char kGroupPolicy[] = R"({"version": 1, "statements": [
    {"id": "ml-reads-models", "effect": "allow", "actions": ["read", "copy"],
     "principals": ["group:ml-team"], "resources": ["prefix:models/"]}]})";

class GroupPrincipalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto p = rbac::Compile({}, {{"user", "usr_sso", "developer", "tnt_a"},
                                {"user", "usr_local", "developer", "tnt_a"}});
    ASSERT_TRUE(p.ok()) << p.status();
    policy_ = *p;
    auto doc = vault::AccessPolicy::Parse("groups", kGroupPolicy);
    ASSERT_TRUE(doc.ok()) << doc.status();
    set_.Put(*doc);
  }

  vault::AccessDecision Decide(const auth::Identity& id, vault::DataAction action) {
    vault::AccessRequest r;
    r.action = action;
    r.user_id = id.user_id;
    r.token_id = id.token_id;
    r.name = "models/llm.pt";
    std::vector<std::string> roles = {"developer"};
    AddCallerPrincipals(id, roles, r);
    return vault::AuthorizeDataAccess(policy_->GrantsFor(rbac::SubjectKind::kUser, id.user_id),
                                      policy_->TenantIndex("tnt_a"), set_, r, absl::Minutes(1));
  }

  std::shared_ptr<const rbac::Policy> policy_;
  vault::DataPolicySet set_;
};

TEST_F(GroupPrincipalTest, IdpGroupsMatchGroupStatements) {
  auth::Identity sso;
  sso.kind = auth::Identity::Kind::kIdpToken;
  sso.user_id = "usr_sso";
  sso.groups = {"staff", "ml-team"};
  auto copy = Decide(sso, vault::DataAction::kCopy);
  EXPECT_TRUE(copy.allowed) << copy.reason;
  EXPECT_EQ(copy.statement, "ml-reads-models");
}

TEST_F(GroupPrincipalTest, CallersOutsideTheGroupDoNotMatch) {
  auth::Identity other;
  other.kind = auth::Identity::Kind::kIdpToken;
  other.user_id = "usr_sso";
  other.groups = {"ml-team-2", "ML-TEAM", "staff"};  // names are compared exactly
  EXPECT_FALSE(Decide(other, vault::DataAction::kCopy).allowed);
  // A local session carries no groups, whatever the user's name or roles.
  auth::Identity local;
  local.kind = auth::Identity::Kind::kSession;
  local.user_id = "usr_local";
  auto d = Decide(local, vault::DataAction::kCopy);
  EXPECT_FALSE(d.allowed);
  // The governed prefix needs an allow for reads too: the group statement governs models/.
  EXPECT_FALSE(Decide(local, vault::DataAction::kRead).allowed);
}

}  // namespace
}  // namespace warden::server
