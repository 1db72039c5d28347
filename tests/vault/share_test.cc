#include "vault/share.h"

#include <algorithm>
#include <map>
#include <mutex>

#include "common/clock.h"
#include "common/rng.h"
#include "common/strings.h"
#include "gtest/gtest.h"

namespace warden::vault {
namespace {

// ShareRecords in memory, with the compare-and-set the store gives (the server's store-backed
// records run in vault_integration_test on SQLite and PostgreSQL).
class MemoryShareRecords final : public ShareRecords {
 public:
  absl::Status Insert(const Share& s) override {
    std::lock_guard lock(mu_);
    if (!shares_.emplace(s.id, s).second) return absl::AlreadyExistsError("taken");
    return absl::OkStatus();
  }
  absl::StatusOr<Share> Get(std::string_view id) override {
    std::lock_guard lock(mu_);
    auto it = shares_.find(std::string(id));
    if (it == shares_.end()) return absl::NotFoundError("share not found");
    return it->second;
  }
  absl::StatusOr<Share> Transition(std::string_view id, std::vector<ShareState> from, ShareState to,
                                   std::string_view by, int64_t at) override {
    std::lock_guard lock(mu_);
    auto it = shares_.find(std::string(id));
    if (it == shares_.end()) return absl::NotFoundError("share not found");
    Share& s = it->second;
    if (std::find(from.begin(), from.end(), s.state) == from.end()) {
      return absl::FailedPreconditionError(
          common::StrCat("share is ", ShareStateName(s.state)));
    }
    s.state = to;
    if (to == ShareState::kRevoked) {
      s.revoked_by = std::string(by);
      s.revoked_unix = at;
    } else {
      s.decided_by = std::string(by);
      s.decided_unix = at;
    }
    return s;
  }
  absl::StatusOr<std::vector<Share>> List(std::string_view tenant) override {
    std::lock_guard lock(mu_);
    std::vector<Share> out;
    for (const auto& [id, s] : shares_) {
      if (s.owner_tenant == tenant || s.target_tenant == tenant) out.push_back(s);
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::map<std::string, Share> shares_;
};

constexpr char kExportPolicy[] = R"({"version":1,"statements":[
  {"id":"export","effect":"allow","actions":["copy","read"],
   "principals":["role:tenant-admin","user:usr_dev_a"],"resources":["prefix:models/"]}]})";

class ShareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto p = rbac::Compile({}, {{"user", "usr_admin_a", "tenant-admin", "tnt_a"},
                                {"user", "usr_dev_a", "developer", "tnt_a"},
                                {"user", "usr_admin_b", "tenant-admin", "tnt_b"},
                                {"user", "usr_dev_b", "developer", "tnt_b"}});
    ASSERT_TRUE(p.ok()) << p.status();
    policy_ = *p;
    policies_.Put(*AccessPolicy::Parse("export", kExportPolicy));
  }
  rbac::Grants G(std::string_view user) {
    return policy_->GrantsFor(rbac::SubjectKind::kUser, user);
  }
  absl::StatusOr<Share> Offer(std::string_view user, std::vector<std::string_view> roles,
                              std::optional<absl::Duration> mfa = absl::Minutes(1),
                              std::string_view name = "models/llm.pt", bool prefix = false) {
    AccessRequest r;
    r.action = DataAction::kCopy;
    r.user_id = user;
    r.roles = std::move(roles);
    r.name = name;
    if (!prefix) r.object_id = "obj_1";
    return book_.Offer(G(user), policy_->TenantIndex("tnt_a"), policies_, r, mfa, "tnt_a", "tnt_b",
                       prefix);
  }
  absl::StatusOr<Share> Accept(std::string_view user, const Share& s) {
    return book_.Accept(G(user), policy_->TenantIndex("tnt_b"), user, s.id, "tnt_b");
  }

  common::FakeClock clock_;
  common::SeededRng rng_{42};
  MemoryShareRecords records_;
  ShareBook book_{records_, clock_, rng_};
  std::shared_ptr<const rbac::Policy> policy_;
  DataPolicySet policies_;
};

TEST_F(ShareTest, BothTenantAdminsMakeAShare) {
  auto s = Offer("usr_admin_a", {"tenant-admin"});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FALSE(*book_.CanRead("tnt_a", "models/llm.pt", "tnt_b")) << "offered, not accepted";
  auto a = Accept("usr_admin_b", *s);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->decided_by, "usr_admin_b");
  EXPECT_EQ(a->state, ShareState::kAccepted);
  EXPECT_TRUE(*book_.CanRead("tnt_a", "models/llm.pt", "tnt_b"));
  EXPECT_FALSE(*book_.CanRead("tnt_a", "models/other.pt", "tnt_b"));
  EXPECT_FALSE(*book_.CanRead("tnt_a", "models/llm.pt", "tnt_c"));
  // Only the owner revokes: b's admin cannot revoke (it declines instead), a's can.
  EXPECT_FALSE(
      book_.Revoke(G("usr_admin_b"), policy_->TenantIndex("tnt_a"), "usr_admin_b", "tnt_a", s->id)
          .ok());
  ASSERT_TRUE(
      book_.Revoke(G("usr_admin_a"), policy_->TenantIndex("tnt_a"), "usr_admin_a", "tnt_a", s->id)
          .ok());
  EXPECT_FALSE(*book_.CanRead("tnt_a", "models/llm.pt", "tnt_b"));
  // A revoked share cannot be accepted again.
  EXPECT_EQ(Accept("usr_admin_b", *s).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ShareTest, PrefixShareCoversOnlyNamesUnderThePrefix) {
  auto s = Offer("usr_admin_a", {"tenant-admin"}, absl::Minutes(1), "models/", true);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(Accept("usr_admin_b", *s).ok());
  EXPECT_TRUE(*book_.CanRead("tnt_a", "models/llm.pt", "tnt_b"));
  EXPECT_TRUE(*book_.CanRead("tnt_a", "models/v2/ckpt", "tnt_b"));
  EXPECT_FALSE(*book_.CanRead("tnt_a", "data/train.bin", "tnt_b"));
  EXPECT_FALSE(*book_.CanRead("tnt_a", "model", "tnt_b"));
  // The copy allow covers `prefix:models/` only: a wider prefix is refused, traversal too.
  EXPECT_EQ(Offer("usr_admin_a", {"tenant-admin"}, absl::Minutes(1), "mod", true).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(
      Offer("usr_admin_a", {"tenant-admin"}, absl::Minutes(1), "models/../", true).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_F(ShareTest, TheReceivingAdminDeclinesAndReadsStop) {
  auto s = Offer("usr_admin_a", {"tenant-admin"});
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(Accept("usr_admin_b", *s).ok());
  EXPECT_EQ(book_.Decline(G("usr_dev_b"), policy_->TenantIndex("tnt_b"), "usr_dev_b", s->id, "tnt_b")
                .status()
                .code(),
            absl::StatusCode::kPermissionDenied);
  auto d = book_.Decline(G("usr_admin_b"), policy_->TenantIndex("tnt_b"), "usr_admin_b", s->id,
                         "tnt_b");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->state, ShareState::kDeclined);
  EXPECT_FALSE(*book_.CanRead("tnt_a", "models/llm.pt", "tnt_b"));
  EXPECT_EQ(book_.List("tnt_a")->size(), 1u);
  EXPECT_EQ(book_.List("tnt_b")->size(), 1u);
  EXPECT_EQ(book_.List("tnt_c")->size(), 0u);
}

// Attack: sharing to another tenant without both admins.
TEST_F(ShareTest, ShareNeedsTheOwnerAdminAndTheReceivingAdmin) {
  // A developer with the copy allow is still not the owner's admin.
  auto by_dev = Offer("usr_dev_a", {"developer"});
  EXPECT_EQ(by_dev.status().code(), absl::StatusCode::kPermissionDenied);
  // The receiving tenant's admin cannot offer on behalf of the owner.
  AccessRequest r;
  r.action = DataAction::kCopy;
  r.user_id = "usr_admin_b";
  r.name = "models/llm.pt";
  EXPECT_EQ(book_
                .Offer(G("usr_admin_b"), policy_->TenantIndex("tnt_a"), policies_, r,
                       absl::Minutes(1), "tnt_a", "tnt_b")
                .status()
                .code(),
            absl::StatusCode::kPermissionDenied);
  // Without a recent MFA step-up even the owner's admin cannot export.
  EXPECT_EQ(Offer("usr_admin_a", {"tenant-admin"}, std::nullopt).status().code(),
            absl::StatusCode::kPermissionDenied);
  auto s = Offer("usr_admin_a", {"tenant-admin"});
  ASSERT_TRUE(s.ok());
  // A developer of the receiving tenant cannot accept; the owner's admin cannot accept for b.
  EXPECT_EQ(Accept("usr_dev_b", *s).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Accept("usr_admin_a", *s).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(*book_.CanRead("tnt_a", "models/llm.pt", "tnt_b"));
  // A third tenant cannot accept a share offered to b.
  auto p = rbac::Compile({}, {{"user", "usr_admin_c", "tenant-admin", "tnt_c"}});
  auto c = book_.Accept((*p)->GrantsFor(rbac::SubjectKind::kUser, "usr_admin_c"),
                        (*p)->TenantIndex("tnt_c"), "usr_admin_c", s->id, "tnt_c");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
}

// Attack: a user with read but not copy mounts the data into another tenant's job.
TEST_F(ShareTest, MountIntoAnotherTenantsJobIsACopy) {
  EXPECT_EQ(ActionForMount("tnt_a", "tnt_a"), DataAction::kRead);
  EXPECT_EQ(ActionForMount("tnt_a", "tnt_b"), DataAction::kCopy);
  // usr_reader holds developer at a (data:read) and the governed prefix allows it read only.
  DataPolicySet set;
  set.Put(*AccessPolicy::Parse("ro", R"({"version":1,"statements":[{"effect":"allow",
      "actions":["read"],"principals":["user:usr_dev_a"],"resources":["prefix:data/"]}]})"));
  AccessRequest r;
  r.user_id = "usr_dev_a";
  r.name = "data/train.bin";
  r.action = ActionForMount("tnt_a", "tnt_a");
  EXPECT_TRUE(
      AuthorizeDataAccess(G("usr_dev_a"), policy_->TenantIndex("tnt_a"), set, r, absl::Minutes(1))
          .allowed);
  r.action = ActionForMount("tnt_a", "tnt_b");
  auto d =
      AuthorizeDataAccess(G("usr_dev_a"), policy_->TenantIndex("tnt_a"), set, r, absl::Minutes(1));
  EXPECT_FALSE(d.allowed);
  EXPECT_NE(d.reason.find("copy"), std::string::npos) << d.reason;
}

}  // namespace
}  // namespace warden::vault
