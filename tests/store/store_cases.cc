// The store behaviour suite: every case runs unchanged on each backend the including binary
// instantiates (store_sqlite_test.cc, store_postgres_test.cc).
#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "common/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/migrations.h"
#include "store_fixture.h"

namespace warden::store::testing {
namespace {

using common::StrCat;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

#define ASSERT_OK(expr)                          \
  do {                                           \
    auto status_ = (expr);                       \
    ASSERT_TRUE(status_.ok()) << status_;        \
  } while (0)
#define EXPECT_OK(expr)                          \
  do {                                           \
    auto status_ = (expr);                       \
    EXPECT_TRUE(status_.ok()) << status_;        \
  } while (0)
#define EXPECT_CODE(expr, code_) EXPECT_EQ((expr).code(), absl::StatusCode::code_)

template <typename T>
T ValueOrDie(absl::StatusOr<T> v) {
  EXPECT_TRUE(v.ok()) << v.status();
  if (!v.ok()) std::abort();
  return std::move(*v);
}

Tenant MakeTenant(const std::string& id, const std::string& name) { return {id, name, 1000}; }

User MakeUser(const std::string& id, const std::string& name, const std::string& tenant = "") {
  User u;
  u.id = id;
  u.name = name;
  u.tenant_id = tenant;
  u.password_hash = "$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA";
  u.created_at = 2000;
  return u;
}

Role MakeRole(const std::string& id, const std::string& name, const std::string& tenant = "") {
  Role r;
  r.id = id;
  r.name = name;
  r.tenant_id = tenant;
  r.permissions = {"jobs:create", "jobs:read"};
  r.created_at = 3000;
  return r;
}

ApiToken MakeToken(const std::string& id, const std::string& user, const std::string& role,
                   const std::string& tenant = "") {
  ApiToken t;
  t.id = id;
  t.name = StrCat("name-", id);
  t.token_hash = StrCat("hash-", id);
  t.user_id = user;
  t.tenant_id = tenant;
  t.role_id = role;
  t.created_at = 4000;
  t.expires_at = 9000;
  return t;
}

Binding MakeBinding(const std::string& id, const std::string& subject, const std::string& role,
                    const std::string& scope = "") {
  return {id, "user", subject, role, scope, 5000};
}

Session MakeSession(const std::string& id_hash, const std::string& user, int64_t expires_at) {
  return {id_hash, user, 100, 100, expires_at};
}

int64_t Generation(Store& s) { return ValueOrDie(s.PolicyGeneration()); }

// ---- schema and migrations ----

TEST_P(StoreTest, ReportsBackendAndLatestSchemaVersion) {
  EXPECT_EQ(store_->Backend(), GetParam());
  EXPECT_EQ(ValueOrDie(store_->SchemaVersion()), 6);
  EXPECT_EQ(Generation(*store_), 0);
}

TEST_P(StoreTest, MigrationsAreIdempotentOnReopen) {
  ASSERT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
  ASSERT_OK(store_->CreateUser(MakeUser("u1", "alice", "t1")));
  int64_t generation = Generation(*store_);
  store_.reset();
  for (int i = 0; i < 2; ++i) {
    auto reopened = Reopen();
    ASSERT_TRUE(reopened.ok()) << reopened.status();
    EXPECT_EQ(ValueOrDie((*reopened)->SchemaVersion()), 6);
    EXPECT_EQ(ValueOrDie((*reopened)->GetTenantByName("acme")).id, "t1");
    EXPECT_EQ(ValueOrDie((*reopened)->GetUser("u1")).name, "alice");
    EXPECT_EQ(Generation(**reopened), generation);
  }
}

// ---- tenants ----

TEST_P(StoreTest, TenantCreateGetListDelete) {
  ASSERT_OK(store_->CreateTenant(MakeTenant("t2", "zeta")));
  ASSERT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
  Tenant t = ValueOrDie(store_->GetTenant("t1"));
  EXPECT_EQ(t.name, "acme");
  EXPECT_EQ(t.created_at, 1000);
  EXPECT_EQ(ValueOrDie(store_->GetTenantByName("zeta")).id, "t2");
  auto all = ValueOrDie(store_->ListTenants());
  ASSERT_THAT(all, SizeIs(2));
  EXPECT_EQ(all[0].name, "acme");
  EXPECT_EQ(all[1].name, "zeta");

  ASSERT_OK(store_->DeleteTenant("t1"));
  auto gone = store_->GetTenant("t1");
  EXPECT_CODE(gone.status(), kNotFound);
  EXPECT_THAT(std::string(gone.status().message()), HasSubstr("tenant \"t1\" not found"));
  EXPECT_THAT(ValueOrDie(store_->ListTenants()), SizeIs(1));
}

TEST_P(StoreTest, TenantLookupsOfMissingNamesAreNotFound) {
  auto by_name = store_->GetTenantByName("acme");
  EXPECT_CODE(by_name.status(), kNotFound);
  EXPECT_THAT(std::string(by_name.status().message()), HasSubstr("tenant \"acme\" not found"));
  EXPECT_CODE(store_->DeleteTenant("nope"), kNotFound);
}

TEST_P(StoreTest, DuplicateTenantNameOrIdIsAlreadyExists) {
  ASSERT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
  absl::Status same_name = store_->CreateTenant(MakeTenant("t2", "acme"));
  EXPECT_CODE(same_name, kAlreadyExists);
  EXPECT_THAT(std::string(same_name.message()), HasSubstr("\"acme\""));
  EXPECT_CODE(store_->CreateTenant(MakeTenant("t1", "other")), kAlreadyExists);
  EXPECT_THAT(ValueOrDie(store_->ListTenants()), SizeIs(1));
}

TEST_P(StoreTest, EmptyIdsAndNamesAreInvalidArgument) {
  EXPECT_CODE(store_->CreateTenant(MakeTenant("", "acme")), kInvalidArgument);
  EXPECT_CODE(store_->CreateTenant(MakeTenant("t1", "")), kInvalidArgument);
  EXPECT_CODE(store_->CreateUser(MakeUser("", "alice")), kInvalidArgument);
  EXPECT_CODE(store_->CreateRole(MakeRole("r1", "")), kInvalidArgument);
}

TEST_P(StoreTest, DeleteTenantWithUsersIsFailedPrecondition) {
  ASSERT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
  ASSERT_OK(store_->CreateUser(MakeUser("u1", "alice", "t1")));
  absl::Status s = store_->DeleteTenant("t1");
  EXPECT_CODE(s, kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("user"));
  EXPECT_OK(store_->GetTenant("t1").status());
}

TEST_P(StoreTest, DeleteTenantReferencedByRoleIsFailedPrecondition) {
  ASSERT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
  ASSERT_OK(store_->CreateRole(MakeRole("r1", "dev", "t1")));
  absl::Status s = store_->DeleteTenant("t1");
  EXPECT_CODE(s, kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("tenant \"t1\""));
  EXPECT_OK(store_->GetTenant("t1").status());
  ASSERT_OK(store_->DeleteRole("r1"));
  EXPECT_OK(store_->DeleteTenant("t1"));
}

// ---- users ----

TEST_P(StoreTest, UserCreateGetListUpdate) {
  ASSERT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
  ASSERT_OK(store_->CreateTenant(MakeTenant("t2", "beta")));
  ASSERT_OK(store_->CreateUser(MakeUser("u0", "root")));  // cluster operator
  ASSERT_OK(store_->CreateUser(MakeUser("u1", "alice", "t1")));
  ASSERT_OK(store_->CreateUser(MakeUser("u2", "bob", "t2")));

  User root = ValueOrDie(store_->GetUser("u0"));
  EXPECT_EQ(root.tenant_id, "");
  EXPECT_EQ(root.name, "root");
  EXPECT_FALSE(root.disabled);
  EXPECT_EQ(root.created_at, 2000);
  EXPECT_EQ(root.password_hash, MakeUser("", "").password_hash);
  EXPECT_EQ(ValueOrDie(store_->GetUserByName("alice")).tenant_id, "t1");

  auto names = [](const std::vector<User>& users) {
    std::vector<std::string> out;
    for (const auto& u : users) out.push_back(u.name);
    return out;
  };
  EXPECT_THAT(names(ValueOrDie(store_->ListUsers(std::nullopt))),
              ElementsAre("alice", "bob", "root"));
  EXPECT_THAT(names(ValueOrDie(store_->ListUsers(""))), ElementsAre("root"));
  EXPECT_THAT(names(ValueOrDie(store_->ListUsers("t2"))), ElementsAre("bob"));
  EXPECT_THAT(ValueOrDie(store_->ListUsers("no-such-tenant")), IsEmpty());

  ASSERT_OK(store_->SetUserDisabled("u1", true));
  EXPECT_TRUE(ValueOrDie(store_->GetUser("u1")).disabled);
  ASSERT_OK(store_->SetUserDisabled("u1", false));
  EXPECT_FALSE(ValueOrDie(store_->GetUser("u1")).disabled);
  ASSERT_OK(store_->SetUserPassword("u1", "$argon2id$new"));
  EXPECT_EQ(ValueOrDie(store_->GetUser("u1")).password_hash, "$argon2id$new");
  ASSERT_OK(store_->SetUserPassword("u1", ""));  // SSO-only
  EXPECT_EQ(ValueOrDie(store_->GetUser("u1")).password_hash, "");
}

TEST_P(StoreTest, MissingUsersAreNotFound) {
  auto u = store_->GetUser("u9");
  EXPECT_CODE(u.status(), kNotFound);
  EXPECT_THAT(std::string(u.status().message()), HasSubstr("user \"u9\" not found"));
  EXPECT_CODE(store_->GetUserByName("nobody").status(), kNotFound);
  EXPECT_CODE(store_->SetUserDisabled("u9", true), kNotFound);
  EXPECT_CODE(store_->SetUserPassword("u9", "x"), kNotFound);
}

TEST_P(StoreTest, UserNamesAreUniqueAcrossTenants) {
  ASSERT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
  ASSERT_OK(store_->CreateTenant(MakeTenant("t2", "beta")));
  ASSERT_OK(store_->CreateUser(MakeUser("u1", "alice", "t1")));
  absl::Status s = store_->CreateUser(MakeUser("u2", "alice", "t2"));
  EXPECT_CODE(s, kAlreadyExists);
  EXPECT_THAT(std::string(s.message()), HasSubstr("user \"alice\" already exists"));
  EXPECT_CODE(store_->CreateUser(MakeUser("u2", "alice")), kAlreadyExists);
  EXPECT_CODE(store_->CreateUser(MakeUser("u1", "carol")), kAlreadyExists);
}

TEST_P(StoreTest, UserInUnknownTenantIsFailedPrecondition) {
  absl::Status s = store_->CreateUser(MakeUser("u1", "alice", "ghost"));
  EXPECT_CODE(s, kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("\"ghost\""));
  EXPECT_CODE(store_->GetUser("u1").status(), kNotFound);
}

// ---- sessions ----

TEST_P(StoreTest, SessionCreateGetTouchDelete) {
  ASSERT_OK(store_->CreateUser(MakeUser("u1", "alice")));
  ASSERT_OK(store_->CreateSession(MakeSession("h1", "u1", 500)));
  Session s = ValueOrDie(store_->GetSession("h1"));
  EXPECT_EQ(s.user_id, "u1");
  EXPECT_EQ(s.created_at, 100);
  EXPECT_EQ(s.last_seen, 100);
  EXPECT_EQ(s.expires_at, 500);

  ASSERT_OK(store_->TouchSession("h1", 250));
  EXPECT_EQ(ValueOrDie(store_->GetSession("h1")).last_seen, 250);
  EXPECT_CODE(store_->CreateSession(MakeSession("h1", "u1", 600)), kAlreadyExists);

  ASSERT_OK(store_->DeleteSession("h1"));
  EXPECT_CODE(store_->GetSession("h1").status(), kNotFound);
  EXPECT_CODE(store_->DeleteSession("h1"), kNotFound);
  EXPECT_CODE(store_->TouchSession("h1", 300), kNotFound);
}

TEST_P(StoreTest, SessionForUnknownUserIsFailedPrecondition) {
  EXPECT_CODE(store_->CreateSession(MakeSession("h1", "ghost", 500)), kFailedPrecondition);
}

TEST_P(StoreTest, DeleteUserSessionsRemovesOnlyThatUsersSessions) {
  ASSERT_OK(store_->CreateUser(MakeUser("u1", "alice")));
  ASSERT_OK(store_->CreateUser(MakeUser("u2", "bob")));
  ASSERT_OK(store_->CreateSession(MakeSession("a1", "u1", 500)));
  ASSERT_OK(store_->CreateSession(MakeSession("a2", "u1", 500)));
  ASSERT_OK(store_->CreateSession(MakeSession("b1", "u2", 500)));
  ASSERT_OK(store_->DeleteUserSessions("u1"));
  EXPECT_CODE(store_->GetSession("a1").status(), kNotFound);
  EXPECT_CODE(store_->GetSession("a2").status(), kNotFound);
  EXPECT_OK(store_->GetSession("b1").status());
  EXPECT_OK(store_->DeleteUserSessions("u1"));  // nothing left: still fine
}

TEST_P(StoreTest, DeleteExpiredSessionsRemovesOnlyThoseExpiredBeforeNow) {
  ASSERT_OK(store_->CreateUser(MakeUser("u1", "alice")));
  ASSERT_OK(store_->CreateSession(MakeSession("old1", "u1", 100)));
  ASSERT_OK(store_->CreateSession(MakeSession("old2", "u1", 199)));
  ASSERT_OK(store_->CreateSession(MakeSession("edge", "u1", 200)));
  ASSERT_OK(store_->CreateSession(MakeSession("new", "u1", 300)));
  EXPECT_EQ(ValueOrDie(store_->DeleteExpiredSessions(200)), 2);
  EXPECT_CODE(store_->GetSession("old1").status(), kNotFound);
  EXPECT_CODE(store_->GetSession("old2").status(), kNotFound);
  EXPECT_OK(store_->GetSession("edge").status());
  EXPECT_OK(store_->GetSession("new").status());
  EXPECT_EQ(ValueOrDie(store_->DeleteExpiredSessions(200)), 0);
}

// ---- API tokens ----

TEST_P(StoreTest, TokenCreateGetListRevoke) {
  ASSERT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
  ASSERT_OK(store_->CreateUser(MakeUser("u1", "alice", "t1")));
  ASSERT_OK(store_->CreateUser(MakeUser("u2", "bob")));
  ASSERT_OK(store_->CreateRole(MakeRole("r1", "dev")));
  ASSERT_OK(store_->CreateToken(MakeToken("k1", "u1", "r1", "t1")));
  ASSERT_OK(store_->CreateToken(MakeToken("k2", "u1", "r1")));
  ASSERT_OK(store_->CreateToken(MakeToken("k3", "u2", "r1")));

  ApiToken k1 = ValueOrDie(store_->GetToken("k1"));
  EXPECT_EQ(k1.name, "name-k1");
  EXPECT_EQ(k1.token_hash, "hash-k1");
  EXPECT_EQ(k1.user_id, "u1");
  EXPECT_EQ(k1.tenant_id, "t1");
  EXPECT_EQ(k1.role_id, "r1");
  EXPECT_EQ(k1.created_at, 4000);
  EXPECT_EQ(k1.expires_at, 9000);
  EXPECT_FALSE(k1.revoked);
  EXPECT_EQ(ValueOrDie(store_->GetTokenByHash("hash-k2")).id, "k2");
  EXPECT_EQ(ValueOrDie(store_->GetToken("k2")).tenant_id, "");

  auto ids = [](const std::vector<ApiToken>& tokens) {
    std::vector<std::string> out;
    for (const auto& t : tokens) out.push_back(t.id);
    std::sort(out.begin(), out.end());
    return out;
  };
  EXPECT_THAT(ids(ValueOrDie(store_->ListTokens(std::nullopt, std::nullopt))),
              ElementsAre("k1", "k2", "k3"));
  EXPECT_THAT(ids(ValueOrDie(store_->ListTokens("t1", std::nullopt))), ElementsAre("k1"));
  EXPECT_THAT(ids(ValueOrDie(store_->ListTokens("", std::nullopt))), ElementsAre("k2", "k3"));
  EXPECT_THAT(ids(ValueOrDie(store_->ListTokens(std::nullopt, "u1"))), ElementsAre("k1", "k2"));
  EXPECT_THAT(ids(ValueOrDie(store_->ListTokens("", "u1"))), ElementsAre("k2"));
  EXPECT_THAT(ids(ValueOrDie(store_->ListTokens("t1", "u2"))), IsEmpty());

  ASSERT_OK(store_->RevokeToken("k1"));
  EXPECT_TRUE(ValueOrDie(store_->GetToken("k1")).revoked);
  EXPECT_OK(store_->RevokeToken("k1"));  // revoking twice is harmless
  EXPECT_FALSE(ValueOrDie(store_->GetToken("k2")).revoked);
}

TEST_P(StoreTest, TokenErrors) {
  ASSERT_OK(store_->CreateUser(MakeUser("u1", "alice")));
  ASSERT_OK(store_->CreateRole(MakeRole("r1", "dev")));
  ASSERT_OK(store_->CreateToken(MakeToken("k1", "u1", "r1")));
  ApiToken same_hash = MakeToken("k2", "u1", "r1");
  same_hash.token_hash = "hash-k1";
  EXPECT_CODE(store_->CreateToken(same_hash), kAlreadyExists);
  EXPECT_CODE(store_->CreateToken(MakeToken("k1", "u1", "r1")), kAlreadyExists);
  EXPECT_CODE(store_->CreateToken(MakeToken("k3", "ghost", "r1")), kFailedPrecondition);
  EXPECT_CODE(store_->CreateToken(MakeToken("k4", "u1", "no-role")), kFailedPrecondition);
  EXPECT_CODE(store_->CreateToken(MakeToken("k5", "u1", "r1", "no-tenant")), kFailedPrecondition);
  auto missing = store_->GetToken("k9");
  EXPECT_CODE(missing.status(), kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("token \"k9\" not found"));
  EXPECT_CODE(store_->GetTokenByHash("nope").status(), kNotFound);
  EXPECT_CODE(store_->RevokeToken("k9"), kNotFound);
  EXPECT_THAT(ValueOrDie(store_->ListTokens(std::nullopt, std::nullopt)), SizeIs(1));
}

// ---- roles ----

TEST_P(StoreTest, RoleCreateGetListDelete) {
  ASSERT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
  Role admin = MakeRole("r0", "admin");
  admin.builtin = true;
  admin.permissions = {"*:*"};
  ASSERT_OK(store_->CreateRole(admin));
  Role empty = MakeRole("r2", "nothing", "t1");
  empty.permissions = {};
  ASSERT_OK(store_->CreateRole(empty));
  ASSERT_OK(store_->CreateRole(MakeRole("r1", "admin", "t1")));  // same name, other scope

  Role got = ValueOrDie(store_->GetRole("r0"));
  EXPECT_EQ(got.name, "admin");
  EXPECT_EQ(got.tenant_id, "");
  EXPECT_TRUE(got.builtin);
  EXPECT_THAT(got.permissions, ElementsAre("*:*"));
  EXPECT_EQ(got.created_at, 3000);
  EXPECT_THAT(ValueOrDie(store_->GetRole("r2")).permissions, IsEmpty());
  EXPECT_EQ(ValueOrDie(store_->GetRoleByName("", "admin")).id, "r0");
  Role tenant_admin = ValueOrDie(store_->GetRoleByName("t1", "admin"));
  EXPECT_EQ(tenant_admin.id, "r1");
  EXPECT_FALSE(tenant_admin.builtin);
  EXPECT_THAT(tenant_admin.permissions, ElementsAre("jobs:create", "jobs:read"));
  EXPECT_CODE(store_->GetRoleByName("t1", "viewer").status(), kNotFound);
  EXPECT_CODE(store_->GetRoleByName("", "nothing").status(), kNotFound);

  EXPECT_THAT(ValueOrDie(store_->ListRoles()), SizeIs(3));
  ASSERT_OK(store_->DeleteRole("r2"));
  auto gone = store_->GetRole("r2");
  EXPECT_CODE(gone.status(), kNotFound);
  EXPECT_THAT(std::string(gone.status().message()), HasSubstr("role \"r2\" not found"));
  EXPECT_CODE(store_->DeleteRole("r2"), kNotFound);
  EXPECT_THAT(ValueOrDie(store_->ListRoles()), SizeIs(2));
}

TEST_P(StoreTest, RoleNamesAreUniquePerScopeIncludingClusterScope) {
  ASSERT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
  ASSERT_OK(store_->CreateRole(MakeRole("r1", "dev")));
  absl::Status cluster_dup = store_->CreateRole(MakeRole("r2", "dev"));
  EXPECT_CODE(cluster_dup, kAlreadyExists);
  EXPECT_THAT(std::string(cluster_dup.message()), HasSubstr("\"dev\""));
  ASSERT_OK(store_->CreateRole(MakeRole("r3", "dev", "t1")));
  EXPECT_CODE(store_->CreateRole(MakeRole("r4", "dev", "t1")), kAlreadyExists);
  EXPECT_CODE(store_->CreateRole(MakeRole("r1", "other")), kAlreadyExists);
  EXPECT_CODE(store_->CreateRole(MakeRole("r5", "dev", "ghost")), kFailedPrecondition);
}

TEST_P(StoreTest, DeleteRoleInUseIsFailedPrecondition) {
  ASSERT_OK(store_->CreateUser(MakeUser("u1", "alice")));
  ASSERT_OK(store_->CreateRole(MakeRole("r1", "bound")));
  ASSERT_OK(store_->CreateRole(MakeRole("r2", "tokened")));
  ASSERT_OK(store_->CreateBinding(MakeBinding("b1", "u1", "r1")));
  ASSERT_OK(store_->CreateToken(MakeToken("k1", "u1", "r2")));

  absl::Status bound = store_->DeleteRole("r1");
  EXPECT_CODE(bound, kFailedPrecondition);
  EXPECT_THAT(std::string(bound.message()), HasSubstr("1 binding"));
  EXPECT_CODE(store_->DeleteRole("r2"), kFailedPrecondition);
  EXPECT_OK(store_->GetRole("r1").status());

  ASSERT_OK(store_->DeleteBinding("b1"));
  EXPECT_OK(store_->DeleteRole("r1"));
}

// ---- bindings ----

TEST_P(StoreTest, BindingCreateListDelete) {
  ASSERT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
  ASSERT_OK(store_->CreateRole(MakeRole("r1", "dev")));
  ASSERT_OK(store_->CreateBinding(MakeBinding("b1", "u1", "r1")));
  ASSERT_OK(store_->CreateBinding(MakeBinding("b2", "u1", "r1", "t1")));
  Binding token_binding{"b3", "token", "k1", "r1", "t1", 6000};
  ASSERT_OK(store_->CreateBinding(token_binding));

  auto all = ValueOrDie(store_->ListBindings());
  ASSERT_THAT(all, SizeIs(3));
  EXPECT_EQ(all[0].id, "b1");
  EXPECT_EQ(all[0].subject_kind, "user");
  EXPECT_EQ(all[0].subject_id, "u1");
  EXPECT_EQ(all[0].role_id, "r1");
  EXPECT_EQ(all[0].scope_tenant_id, "");
  EXPECT_EQ(all[0].created_at, 5000);
  EXPECT_EQ(all[1].scope_tenant_id, "t1");
  EXPECT_EQ(all[2].subject_kind, "token");

  ASSERT_OK(store_->DeleteBinding("b2"));
  EXPECT_THAT(ValueOrDie(store_->ListBindings()), SizeIs(2));
  absl::Status again = store_->DeleteBinding("b2");
  EXPECT_CODE(again, kNotFound);
  EXPECT_THAT(std::string(again.message()), HasSubstr("binding \"b2\" not found"));
}

TEST_P(StoreTest, BindingErrors) {
  ASSERT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
  ASSERT_OK(store_->CreateRole(MakeRole("r1", "dev")));
  ASSERT_OK(store_->CreateBinding(MakeBinding("b1", "u1", "r1")));
  ASSERT_OK(store_->CreateBinding(MakeBinding("b2", "u1", "r1", "t1")));
  // Same subject, role and scope: the cluster scope (NULL) counts as one value too.
  EXPECT_CODE(store_->CreateBinding(MakeBinding("b3", "u1", "r1")), kAlreadyExists);
  EXPECT_CODE(store_->CreateBinding(MakeBinding("b4", "u1", "r1", "t1")), kAlreadyExists);
  EXPECT_CODE(store_->CreateBinding(MakeBinding("b1", "u2", "r1")), kAlreadyExists);
  EXPECT_CODE(store_->CreateBinding(MakeBinding("b5", "u1", "ghost")), kFailedPrecondition);
  EXPECT_CODE(store_->CreateBinding(MakeBinding("b6", "u1", "r1", "ghost")), kFailedPrecondition);
  Binding bad_kind = MakeBinding("b7", "u1", "r1");
  bad_kind.subject_kind = "group";
  EXPECT_CODE(store_->CreateBinding(bad_kind), kInvalidArgument);
  EXPECT_THAT(ValueOrDie(store_->ListBindings()), SizeIs(2));
}

// ---- policy generation ----

TEST_P(StoreTest, PolicyGenerationBumpsOncePerPolicyChangeOnly) {
  int64_t g = Generation(*store_);
  auto expect_bump = [&](const absl::Status& s, int64_t by, const char* what) {
    EXPECT_TRUE(s.ok()) << what << ": " << s;
    int64_t now = Generation(*store_);
    EXPECT_EQ(now, g + by) << what;
    g = now;
  };
  expect_bump(store_->CreateTenant(MakeTenant("t1", "acme")), 0, "CreateTenant");
  expect_bump(store_->CreateUser(MakeUser("u1", "alice", "t1")), 1, "CreateUser");
  expect_bump(store_->SetUserDisabled("u1", true), 1, "SetUserDisabled");
  expect_bump(store_->SetUserPassword("u1", "h"), 1, "SetUserPassword");
  expect_bump(store_->CreateSession(MakeSession("h1", "u1", 9)), 0, "CreateSession");
  expect_bump(store_->CreateRole(MakeRole("r1", "dev")), 1, "CreateRole");
  expect_bump(store_->CreateToken(MakeToken("k1", "u1", "r1")), 1, "CreateToken");
  expect_bump(store_->RevokeToken("k1"), 1, "RevokeToken");
  expect_bump(store_->CreateBinding(MakeBinding("b1", "u1", "r1")), 1, "CreateBinding");
  expect_bump(store_->DeleteBinding("b1"), 1, "DeleteBinding");
  expect_bump(store_->CreateRole(MakeRole("r2", "spare")), 1, "CreateRole");
  expect_bump(store_->DeleteRole("r2"), 1, "DeleteRole");

  // Failed changes leave the generation alone.
  EXPECT_FALSE(store_->CreateUser(MakeUser("u2", "alice")).ok());
  EXPECT_FALSE(store_->SetUserDisabled("ghost", true).ok());
  EXPECT_FALSE(store_->DeleteRole("r1").ok());
  EXPECT_EQ(Generation(*store_), g);
}

// ---- transactions ----

TEST_P(StoreTest, TransactionCommitsAllWrites) {
  ASSERT_OK(store_->InTransaction([&]() -> absl::Status {
    if (auto s = store_->CreateTenant(MakeTenant("t1", "acme")); !s.ok()) return s;
    return store_->CreateUser(MakeUser("u1", "alice", "t1"));
  }));
  EXPECT_OK(store_->GetTenant("t1").status());
  EXPECT_OK(store_->GetUser("u1").status());
  EXPECT_EQ(Generation(*store_), 1);
}

TEST_P(StoreTest, TransactionRollbackLeavesNothing) {
  absl::Status s = store_->InTransaction([&]() -> absl::Status {
    EXPECT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
    EXPECT_OK(store_->CreateUser(MakeUser("u1", "alice", "t1")));
    EXPECT_OK(store_->CreateRole(MakeRole("r1", "dev")));
    // Reads inside the transaction see its own writes.
    EXPECT_OK(store_->GetUserByName("alice").status());
    return absl::AbortedError("changed my mind");
  });
  EXPECT_CODE(s, kAborted);
  EXPECT_EQ(s.message(), "changed my mind");
  EXPECT_CODE(store_->GetTenant("t1").status(), kNotFound);
  EXPECT_CODE(store_->GetUser("u1").status(), kNotFound);
  EXPECT_THAT(ValueOrDie(store_->ListRoles()), IsEmpty());
  EXPECT_EQ(Generation(*store_), 0);
}

TEST_P(StoreTest, NestedTransactionJoinsOuter) {
  // The inner transaction's commit is not final: the outer rollback undoes it.
  absl::Status s = store_->InTransaction([&]() -> absl::Status {
    EXPECT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
    EXPECT_OK(store_->InTransaction(
        [&]() { return store_->CreateTenant(MakeTenant("t2", "beta")); }));
    EXPECT_OK(store_->GetTenant("t2").status());
    return absl::InternalError("outer fails");
  });
  EXPECT_CODE(s, kInternal);
  EXPECT_THAT(ValueOrDie(store_->ListTenants()), IsEmpty());

  // A failed inner level undoes only itself; the outer one commits the rest.
  ASSERT_OK(store_->InTransaction([&]() -> absl::Status {
    EXPECT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
    absl::Status inner = store_->InTransaction([&]() -> absl::Status {
      EXPECT_OK(store_->CreateTenant(MakeTenant("t2", "beta")));
      return absl::InternalError("inner fails");
    });
    EXPECT_CODE(inner, kInternal);
    return store_->CreateTenant(MakeTenant("t3", "gamma"));
  }));
  EXPECT_OK(store_->GetTenant("t1").status());
  EXPECT_CODE(store_->GetTenant("t2").status(), kNotFound);
  EXPECT_OK(store_->GetTenant("t3").status());
}

TEST_P(StoreTest, FailedCallInsideTransactionLeavesItUsable) {
  ASSERT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
  ASSERT_OK(store_->InTransaction([&]() -> absl::Status {
    EXPECT_CODE(store_->CreateTenant(MakeTenant("t2", "acme")), kAlreadyExists);
    EXPECT_CODE(store_->CreateUser(MakeUser("u1", "alice", "ghost")), kFailedPrecondition);
    return store_->CreateTenant(MakeTenant("t3", "beta"));
  }));
  EXPECT_OK(store_->GetTenant("t3").status());
  EXPECT_CODE(store_->GetTenant("t2").status(), kNotFound);
  EXPECT_EQ(Generation(*store_), 0);
}

TEST_P(StoreTest, TransactionIsolatesOtherThreadsUntilCommit) {
  std::atomic<bool> other_done{false};
  std::thread other;
  ASSERT_OK(store_->InTransaction([&]() -> absl::Status {
    EXPECT_OK(store_->CreateTenant(MakeTenant("t1", "acme")));
    other = std::thread([&] {
      // Blocks until the outer transaction ends, then sees its committed tenant.
      auto t = store_->GetTenant("t1");
      EXPECT_TRUE(t.ok()) << t.status();
      other_done = true;
    });
    return store_->CreateUser(MakeUser("u1", "alice", "t1"));
  }));
  other.join();
  EXPECT_TRUE(other_done);
}

// ---- hostile strings ----

TEST_P(StoreTest, SqlMetacharactersRoundTripVerbatim) {
  const std::vector<std::string> nasty = {
      "a'; DROP TABLE users;--",
      "\"; DROP TABLE tenants; --",
      "' OR '1'='1",
      "back\\slash\\",
      "100%_like_%",
      "?, $1, ?::text",
      "semi;colon -- comment /* block */",
      "tab\tnew\nline\r",
      "ünïcødé 日本語 🚀 مرحبا",
      "Robert'); DELETE FROM roles WHERE ('1'='1",
  };
  for (size_t i = 0; i < nasty.size(); ++i) {
    const std::string& n = nasty[i];
    std::string tid = StrCat("t", n, i);
    std::string uid = StrCat("u", n, i);
    std::string rid = StrCat("r", n, i);
    SCOPED_TRACE(n);
    ASSERT_OK(store_->CreateTenant({tid, StrCat(n, "#tenant", i), 1}));
    User u = MakeUser(uid, StrCat(n, "#user", i), tid);
    u.password_hash = StrCat(n, "#hash");
    ASSERT_OK(store_->CreateUser(u));
    Role r = MakeRole(rid, StrCat(n, "#role"), tid);
    r.permissions = {n, StrCat(n, ":verb"), "[\"json\",]"};
    ASSERT_OK(store_->CreateRole(r));
    ApiToken k = MakeToken(StrCat("k", n, i), uid, rid, tid);
    k.name = n;
    k.token_hash = StrCat(n, "#token", i);
    ASSERT_OK(store_->CreateToken(k));
    ASSERT_OK(store_->CreateSession(MakeSession(StrCat(n, "#session", i), uid, 50)));
    ASSERT_OK(store_->CreateBinding({StrCat("b", n, i), "user", uid, rid, tid, 7}));

    EXPECT_EQ(ValueOrDie(store_->GetTenant(tid)).name, StrCat(n, "#tenant", i));
    EXPECT_EQ(ValueOrDie(store_->GetTenantByName(StrCat(n, "#tenant", i))).id, tid);
    User got_u = ValueOrDie(store_->GetUserByName(StrCat(n, "#user", i)));
    EXPECT_EQ(got_u.id, uid);
    EXPECT_EQ(got_u.tenant_id, tid);
    EXPECT_EQ(got_u.password_hash, StrCat(n, "#hash"));
    EXPECT_THAT(ValueOrDie(store_->ListUsers(tid)), SizeIs(1));
    Role got_r = ValueOrDie(store_->GetRoleByName(tid, StrCat(n, "#role")));
    EXPECT_EQ(got_r.id, rid);
    EXPECT_EQ(got_r.permissions, r.permissions);
    ApiToken got_k = ValueOrDie(store_->GetTokenByHash(StrCat(n, "#token", i)));
    EXPECT_EQ(got_k.name, n);
    EXPECT_EQ(got_k.tenant_id, tid);
    EXPECT_THAT(ValueOrDie(store_->ListTokens(tid, uid)), SizeIs(1));
    EXPECT_EQ(ValueOrDie(store_->GetSession(StrCat(n, "#session", i))).user_id, uid);
    // A LIKE-style wildcard must match nothing but itself.
    EXPECT_CODE(store_->GetUserByName("%").status(), kNotFound);
  }
  // Every table is still there and holds exactly what was written.
  size_t count = nasty.size();
  EXPECT_THAT(ValueOrDie(store_->ListTenants()), SizeIs(count));
  EXPECT_THAT(ValueOrDie(store_->ListUsers(std::nullopt)), SizeIs(count));
  EXPECT_THAT(ValueOrDie(store_->ListRoles()), SizeIs(count));
  EXPECT_THAT(ValueOrDie(store_->ListTokens(std::nullopt, std::nullopt)), SizeIs(count));
  EXPECT_THAT(ValueOrDie(store_->ListBindings()), SizeIs(count));
  EXPECT_EQ(ValueOrDie(store_->DeleteExpiredSessions(1000)), static_cast<int64_t>(count));
  EXPECT_EQ(ValueOrDie(store_->SchemaVersion()), 6);
}

TEST_P(StoreTest, NulBytesAndInvalidUtf8AreInvalidArgumentOnEveryBackend) {
  std::string with_nul("ab\0cd", 5);
  EXPECT_CODE(store_->CreateTenant(MakeTenant("t1", with_nul)), kInvalidArgument);
  EXPECT_CODE(store_->CreateTenant(MakeTenant("t1", "bad\xff")), kInvalidArgument);
  EXPECT_CODE(store_->CreateTenant(MakeTenant("t1", "\xc0\xaf")), kInvalidArgument);  // overlong
  Role r = MakeRole("r1", "dev");
  r.permissions = {"ok", "bad\xfe"};
  EXPECT_CODE(store_->CreateRole(r), kInvalidArgument);
  EXPECT_CODE(store_->GetUserByName(with_nul).status(), kInvalidArgument);
  EXPECT_THAT(ValueOrDie(store_->ListTenants()), IsEmpty());
}

// ---- concurrency ----

TEST_P(StoreTest, ConcurrentWritersFromSeveralThreads) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 20;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string tenant = StrCat("t", t, "_", i);
        // Half the writes as transactions of two, half as single calls: both must interleave.
        absl::Status s;
        if (i % 2 == 0) {
          s = store_->InTransaction([&]() -> absl::Status {
            if (auto st = store_->CreateTenant(MakeTenant(tenant, tenant)); !st.ok()) return st;
            return store_->CreateUser(MakeUser(StrCat("u", tenant), StrCat("user-", tenant), tenant));
          });
        } else {
          s = store_->CreateTenant(MakeTenant(tenant, tenant));
          if (s.ok()) {
            s = store_->CreateUser(MakeUser(StrCat("u", tenant), StrCat("user-", tenant), tenant));
          }
        }
        if (!s.ok()) {
          ADD_FAILURE() << s;
          ++failures;
        }
        // Everyone also races on the same name; exactly one wins.
        absl::Status shared = store_->CreateTenant(MakeTenant(StrCat("shared", t, i), "shared"));
        if (!shared.ok() && shared.code() != absl::StatusCode::kAlreadyExists) {
          ADD_FAILURE() << shared;
          ++failures;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_THAT(ValueOrDie(store_->ListUsers(std::nullopt)), SizeIs(kThreads * kPerThread));
  EXPECT_THAT(ValueOrDie(store_->ListTenants()), SizeIs(kThreads * kPerThread + 1));
  EXPECT_EQ(Generation(*store_), kThreads * kPerThread);
}

}  // namespace
}  // namespace warden::store::testing
