#include "vault/access_policy.h"

#include "gtest/gtest.h"

namespace warden::vault {
namespace {

std::shared_ptr<const AccessPolicy> MustParse(std::string_view name, std::string_view json) {
  auto p = AccessPolicy::Parse(name, json);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *p : nullptr;
}

constexpr char kMlPolicy[] = R"({"version": 1, "statements": [
  {"id": "ml-read", "effect": "allow", "actions": ["read"],
   "principals": ["group:ml"], "resources": ["prefix:secret/"]},
  {"id": "export", "effect": "allow", "actions": ["copy"],
   "principals": ["user:usr_alice", "token:tok_ci"], "resources": ["name:secret/model.pt"]},
  {"id": "no-contractors", "effect": "deny", "actions": ["*"],
   "principals": ["group:contractors"], "resources": ["*"]}]})";

TEST(AccessPolicyTest, ParsesAndMatchesEachPrincipalKind) {
  auto p = MustParse("ml", kMlPolicy);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->size(), 3u);
  AccessRequest r;
  r.action = DataAction::kRead;
  r.name = "secret/data.bin";
  r.groups = {"ml"};
  auto m = p->Evaluate(r);
  EXPECT_TRUE(m.matched && !m.deny);
  EXPECT_EQ(p->statement_id(m.statement), "ml-read");
  r.groups = {"other"};
  EXPECT_FALSE(p->Evaluate(r).matched);
  r.action = DataAction::kCopy;
  r.name = "secret/model.pt";
  r.user_id = "usr_alice";
  EXPECT_TRUE(p->Evaluate(r).matched);
  r.user_id = "usr_bob";
  r.token_id = "tok_ci";
  EXPECT_TRUE(p->Evaluate(r).matched);
  r.token_id = "";
  EXPECT_FALSE(p->Evaluate(r).matched);
}

TEST(AccessPolicyTest, ExplicitDenyWinsEvenAcrossDocuments) {
  DataPolicySet set;
  set.Put(MustParse("ml", kMlPolicy));
  AccessRequest r;
  r.action = DataAction::kRead;
  r.name = "secret/x";
  r.groups = {"ml", "contractors"};
  auto d = set.Evaluate(r);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.statement, "no-contractors");
  // A deny in a second document beats the allow in the first.
  set.Put(MustParse("lockdown", R"({"version":1,"statements":[{"effect":"deny","actions":["read"],
      "principals":["*"],"resources":["object:obj_frozen"]}]})"));
  r.groups = {"ml"};
  EXPECT_TRUE(set.Evaluate(r).allowed);
  r.object_id = "obj_frozen";
  auto d2 = set.Evaluate(r);
  EXPECT_FALSE(d2.allowed);
  EXPECT_EQ(d2.policy, "lockdown");
  EXPECT_TRUE(set.Remove("lockdown"));
  EXPECT_TRUE(set.Evaluate(r).allowed);
}

TEST(AccessPolicyTest, RefusesMalformedDocuments) {
  const char* bad[] = {
      "",
      "[]",
      R"({"statements": []})",
      R"({"version": 2, "statements": [{"effect":"allow","actions":["read"],"principals":["*"],"resources":["*"]}]})",
      R"({"version": 1, "statements": [{"effect":"allow","actions":["fly"],"principals":["*"],"resources":["*"]}]})",
      R"({"version": 1, "statements": [{"effect":"maybe","actions":["read"],"principals":["*"],"resources":["*"]}]})",
      R"({"version": 1, "statements": [{"effect":"allow","actions":["read"],"principals":["alien:x"],"resources":["*"]}]})",
      R"({"version": 1, "statements": [{"effect":"allow","actions":["read"],"principals":["user:"],"resources":["*"]}]})",
      R"({"version": 1, "statements": [{"effect":"allow","actions":["read"],"principals":["*"],"resources":["prefix:../etc"]}]})",
      R"({"version": 1, "statements": [{"effect":"allow","actions":["read"],"principals":["*"],"resources":["name:a/../b"]}]})",
      R"({"version": 1, "statements": [{"effect":"allow","actions":["read"],"principals":["*"],"resources":["path:/x"]}]})",
      R"({"version": 1, "statements": [{"effect":"allow","actions":[],"principals":["*"],"resources":["*"]}]})",
      R"({"version": 1, "statements": [{"effect":"allow","actions":["read"],"principals":["*"],"resources":["*"],"extra":1}]})",
      R"({"version": 1, "version": 1, "statements": [{"effect":"allow","actions":["read"],"principals":["*"],"resources":["*"]}]})",
      R"({"version": 1, "statements": [{"id":"a","effect":"allow","actions":["read"],"principals":["*"],"resources":["*"]},{"id":"a","effect":"deny","actions":["read"],"principals":["*"],"resources":["*"]}]})",
  };
  for (const char* doc : bad) {
    auto p = AccessPolicy::Parse("p", doc);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << doc;
  }
  EXPECT_FALSE(AccessPolicy::Parse("../p", kMlPolicy).ok()) << "policy names are path-safe";
  std::string many = R"({"version":1,"statements":[)";
  for (int i = 0; i < 300; ++i) {
    many += std::string(i ? "," : "") +
            R"({"effect":"allow","actions":["read"],"principals":["*"],"resources":["*"]})";
  }
  many += "]}";
  EXPECT_FALSE(AccessPolicy::Parse("p", many).ok());
}

class DataAccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<rbac::BindingDef> bindings = {
        {"user", "usr_dev", "developer", "tnt_a"}, {"user", "usr_alice", "developer", "tnt_a"},
        {"user", "usr_view", "viewer", "tnt_a"},   {"user", "usr_admin", "tenant-admin", "tnt_a"},
        {"user", "usr_b", "developer", "tnt_b"},
    };
    auto p = rbac::Compile({}, bindings);
    ASSERT_TRUE(p.ok()) << p.status();
    policy_ = *p;
    tenant_a_ = policy_->TenantIndex("tnt_a");
    policies_.Put(MustParse("ml", kMlPolicy));
  }
  AccessDecision Decide(std::string_view user, DataAction action, std::string_view name,
                        std::vector<std::string_view> groups = {},
                        std::optional<absl::Duration> mfa = std::nullopt) {
    AccessRequest r;
    r.action = action;
    r.user_id = user;
    r.name = name;
    r.object_id = "obj_1";
    r.groups = std::move(groups);
    return AuthorizeDataAccess(policy_->GrantsFor(rbac::SubjectKind::kUser, user), tenant_a_,
                               policies_, r, mfa);
  }
  std::shared_ptr<const rbac::Policy> policy_;
  rbac::TenantRef tenant_a_;
  DataPolicySet policies_;
};

TEST_F(DataAccessTest, RbacGateComesFirst) {
  // viewer has no data:read; a policy allow does not bypass RBAC.
  auto d = Decide("usr_view", DataAction::kRead, "secret/x", {"ml"});
  EXPECT_FALSE(d.allowed);
  EXPECT_NE(d.reason.find("data:read"), std::string::npos);
  // A developer of tenant b has nothing at tenant a.
  EXPECT_FALSE(Decide("usr_b", DataAction::kRead, "public/x").allowed);
  EXPECT_TRUE(Decide("usr_dev", DataAction::kRead, "public/x").allowed) << "ungoverned: RBAC";
  EXPECT_TRUE(Decide("usr_dev", DataAction::kWrite, "public/x").allowed);
  EXPECT_FALSE(Decide("usr_dev", DataAction::kAdmin, "public/x").allowed) << "no datasets:manage";
  EXPECT_TRUE(Decide("usr_admin", DataAction::kAdmin, "public/x").allowed);
}

TEST_F(DataAccessTest, GovernedPrefixNeedsAnAllow) {
  EXPECT_FALSE(Decide("usr_dev", DataAction::kRead, "secret/x").allowed);
  auto d = Decide("usr_dev", DataAction::kRead, "secret/x", {"ml"});
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.policy, "ml");
  EXPECT_EQ(d.statement, "ml-read");
  EXPECT_FALSE(Decide("usr_dev", DataAction::kWrite, "secret/x", {"ml"}).allowed)
      << "the document governs secret/ and allows only read";
}

// Attack: download (copy out of the tenant) with read but without copy.
TEST_F(DataAccessTest, CopyNeedsExplicitAllowAndRecentStepUp) {
  // Read-only member of ml: reading works, copying (download, share, cross-tenant mount) does not.
  EXPECT_TRUE(Decide("usr_dev", DataAction::kRead, "secret/model.pt", {"ml"}).allowed);
  EXPECT_FALSE(
      Decide("usr_dev", DataAction::kCopy, "secret/model.pt", {"ml"}, absl::Minutes(1)).allowed);
  // An ungoverned object cannot be copied on RBAC alone.
  EXPECT_FALSE(Decide("usr_dev", DataAction::kCopy, "public/x", {}, absl::Minutes(1)).allowed);
  // alice holds the copy allow: only with a fresh MFA step-up.
  EXPECT_FALSE(Decide("usr_alice", DataAction::kCopy, "secret/model.pt").allowed);
  EXPECT_FALSE(
      Decide("usr_alice", DataAction::kCopy, "secret/model.pt", {}, absl::Minutes(16)).allowed);
  auto d = Decide("usr_alice", DataAction::kCopy, "secret/model.pt", {}, absl::Minutes(2));
  EXPECT_TRUE(d.allowed) << d.reason;
  EXPECT_EQ(d.statement, "export");
  // Deny wins: alice in contractors loses everything.
  EXPECT_FALSE(
      Decide("usr_alice", DataAction::kCopy, "secret/model.pt", {"contractors"}, absl::Minutes(2))
          .allowed);
}

}  // namespace
}  // namespace warden::vault
