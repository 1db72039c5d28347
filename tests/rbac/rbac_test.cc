#include <random>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rbac/rbac.h"

namespace warden::rbac {
namespace {

using ::testing::HasSubstr;

Permission P(std::string_view text) {
  auto p = ParsePermission(text);
  EXPECT_TRUE(p.ok()) << text << ": " << p.status();
  return p.ok() ? *p : Permission(Resource::kTenants, Verb::kRead);
}

PermissionSet Set(const std::vector<std::string>& texts) {
  auto s = ParsePermissionSet(texts);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : PermissionSet();
}

std::shared_ptr<const Policy> MustCompile(const std::vector<RoleDef>& roles,
                                          const std::vector<BindingDef>& bindings) {
  auto p = Compile(roles, bindings);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *p : nullptr;
}

BindingDef User(std::string id, std::string role, std::string tenant = "") {
  return {"user", std::move(id), std::move(role), std::move(tenant)};
}

// ---------------------------------------------------------------------------------------------
// Catalog

TEST(PermissionTest, ParsesAndPrintsEveryCatalogEntry) {
  for (int i = 0; i < kNumPermissions; ++i) {
    Permission p = Permission::FromIndex(i);
    auto back = ParsePermission(p.ToString());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, p);
  }
  EXPECT_EQ(P("nodes:manage"), Permission(Resource::kNodes, Verb::kManage));
  EXPECT_EQ(P("users:create").ToString(), "users:create");
}

TEST(PermissionTest, UnknownTextIsInvalidArgumentNamingThePart) {
  auto r = ParsePermission("gpus:read");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("resource \"gpus\""));
  auto v = ParsePermission("nodes:fly");
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(v.status().message(), HasSubstr("verb \"fly\""));
  for (std::string_view bad : {"", "nodes", "nodes:", ":read", "nodes:read:x", "Nodes:read",
                               " nodes:read", "nodes:read ", "nodes :read"}) {
    EXPECT_EQ(ParsePermission(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(PermissionTest, WildcardsAreRefusedOutsideRoleDefinitions) {
  for (std::string_view w : {"nodes:*", "*:*", "*:read"}) {
    auto r = ParsePermission(w);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("only in role definitions"));
  }
}

TEST(PermissionSetTest, WildcardsExpandAtCompileTime) {
  EXPECT_EQ(Set({"*:*"}), PermissionSet::All());
  EXPECT_EQ(Set({"*:*"}).size(), kNumPermissions);
  PermissionSet nodes = Set({"nodes:*"});
  EXPECT_EQ(nodes.size(), kNumVerbs);
  EXPECT_EQ(nodes, Set({"nodes:read", "nodes:create", "nodes:update", "nodes:delete",
                        "nodes:manage"}));
  PermissionSet reads = Set({"*:read"});
  EXPECT_EQ(reads.size(), kNumResources);
  for (Permission p : reads.ToList()) EXPECT_EQ(p.verb(), Verb::kRead);
  EXPECT_EQ(Set({"jobs:read", "jobs:*"}).size(), kNumVerbs);  // duplicates merge
  EXPECT_EQ(ParsePermissionSet({"jobs:read", "jobs:fly"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParsePermissionSet({"*"}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PermissionSetTest, SetAlgebra) {
  PermissionSet a = Set({"jobs:*", "metrics:manage"}), b = Set({"jobs:read", "nodes:read"});
  EXPECT_EQ((a & b), Set({"jobs:read"}));
  EXPECT_EQ((a | b).size(), 7);
  EXPECT_EQ((a - b).size(), 5);
  EXPECT_TRUE(Set({"jobs:read"}).IsSubsetOf(a));
  EXPECT_FALSE(b.IsSubsetOf(a));
  EXPECT_TRUE(PermissionSet().empty());
  EXPECT_EQ(a.ToStrings().back(), "metrics:manage");  // index 79 lives in the second word
}

// ---------------------------------------------------------------------------------------------
// Deny by default

TEST(AuthorizerTest, DeniesByDefault) {
  auto policy = MustCompile({}, {User("alice", "developer", "acme")});
  ASSERT_TRUE(policy);
  Grants nobody = policy->GrantsFor(SubjectKind::kUser, "mallory");
  EXPECT_TRUE(nobody.empty());
  EXPECT_TRUE(Grants().empty());
  // Alice is a token subject nowhere: kinds are separate namespaces.
  EXPECT_TRUE(policy->GrantsFor(SubjectKind::kToken, "alice").empty());
  Grants alice = policy->GrantsFor(SubjectKind::kUser, "alice");
  TenantRef acme = policy->TenantIndex("acme");
  for (int i = 0; i < kNumPermissions; ++i) {
    Permission p = Permission::FromIndex(i);
    EXPECT_FALSE(nobody.Allows(p, acme));
    EXPECT_FALSE(nobody.Allows(p, TenantRef::Cluster()));
    EXPECT_FALSE(Grants().Allows(p, acme));
    EXPECT_FALSE(alice.Allows(p, policy->TenantIndex("unknown-tenant"))) << p.ToString();
    EXPECT_FALSE(alice.Allows(p, policy->TenantIndex(""))) << p.ToString();
    EXPECT_FALSE(alice.Allows(p, TenantRef::Cluster())) << p.ToString();
  }
  EXPECT_TRUE(alice.Allows(P("jobs:create"), acme));
}

TEST(AuthorizerTest, ClusterGrantsApplyAtEveryTenantIncludingUnlistedOnes) {
  auto policy = MustCompile({}, {User("root", "admin"), User("bob", "viewer", "acme")});
  Grants root = policy->GrantsFor(SubjectKind::kUser, "root");
  for (int i = 0; i < kNumPermissions; ++i) {
    Permission p = Permission::FromIndex(i);
    EXPECT_TRUE(root.Allows(p, TenantRef::Cluster()));
    EXPECT_TRUE(root.Allows(p, policy->TenantIndex("acme")));
    // A tenant created after this snapshot: the admin can bootstrap it.
    EXPECT_TRUE(root.Allows(p, policy->TenantIndex("brand-new")));
  }
  EXPECT_EQ(policy->TenantName(policy->TenantIndex("acme")), "acme");
  EXPECT_EQ(policy->TenantName(policy->TenantIndex("brand-new")), "");
}

TEST(AuthorizerTest, TenantRefFromAnotherSnapshotDeniesTenantGrants) {
  auto p1 = MustCompile({}, {User("alice", "developer", "acme")});
  auto p2 = MustCompile({}, {User("alice", "developer", "acme")});
  Grants alice2 = p2->GrantsFor(SubjectKind::kUser, "alice");
  EXPECT_TRUE(alice2.Allows(P("jobs:read"), p2->TenantIndex("acme")));
  EXPECT_FALSE(alice2.Allows(P("jobs:read"), p1->TenantIndex("acme")));
  EXPECT_TRUE(alice2.At(p1->TenantIndex("acme")).empty());
}

// ---------------------------------------------------------------------------------------------
// Built-in roles: the table in src/rbac/README.md, pinned.

struct BuiltinCase {
  std::string role;
  std::vector<std::string> perms;
};

std::vector<BuiltinCase> BuiltinTable() {
  return {
      {"admin", {"*:*"}},
      {"tenant-admin",
       {"users:*", "roles:*", "bindings:*", "tokens:*", "jobs:*", "datasets:*", "data:*",
        "keys:*", "logs:*", "alerts:*", "audit:read", "tenants:read", "nodes:read", "pools:read",
        "metrics:read", "images:*"}},
      {"developer",
       {"jobs:read", "jobs:create", "jobs:update", "jobs:delete", "datasets:read",
        "datasets:create", "datasets:update", "data:read", "data:create", "logs:read",
        "tokens:read", "tokens:create", "tokens:delete", "roles:read", "tenants:read",
        "nodes:read", "pools:read", "metrics:read", "images:read", "images:create"}},
      {"auditor",
       {"tenants:read", "users:read", "roles:read", "bindings:read", "tokens:read", "audit:read",
        "nodes:read", "pools:read", "jobs:read", "datasets:read", "keys:read", "logs:read",
        "alerts:read", "patches:read", "metrics:read", "images:read"}},
      {"viewer",
       {"tenants:read", "nodes:read", "pools:read", "jobs:read", "datasets:read", "images:read"}},
  };
}

TEST(BuiltinRolesTest, TablesAreExactlyAsDocumented) {
  ASSERT_EQ(BuiltinRoles().size(), 5u);
  for (const BuiltinCase& c : BuiltinTable()) {
    SCOPED_TRACE(c.role);
    EXPECT_TRUE(IsBuiltinRole(c.role));
    const std::string scope = c.role == "admin" ? "" : "acme";
    auto policy = MustCompile({}, {User("u", c.role, scope)});
    ASSERT_TRUE(policy);
    Grants g = policy->GrantsFor(SubjectKind::kUser, "u");
    TenantRef at = scope.empty() ? TenantRef::Cluster() : policy->TenantIndex(scope);
    EXPECT_EQ(g.At(at).ToStrings(), Set(c.perms).ToStrings());
    if (!scope.empty()) {
      EXPECT_TRUE(g.At(TenantRef::Cluster()).empty()) << "tenant binding leaked to cluster";
    }
  }
  EXPECT_FALSE(IsBuiltinRole("root"));
}

TEST(BuiltinRolesTest, TenantAdminHoldsNoClusterLevelPower) {
  auto policy = MustCompile({}, {User("ta", "tenant-admin", "acme")});
  Grants ta = policy->GrantsFor(SubjectKind::kUser, "ta");
  TenantRef acme = policy->TenantIndex("acme");
  for (auto text : {"nodes:manage", "nodes:create", "nodes:delete", "tenants:create",
                    "tenants:delete", "pools:manage", "patches:manage", "audit:delete"}) {
    EXPECT_FALSE(ta.Allows(P(text), acme)) << text;
    EXPECT_FALSE(ta.Allows(P(text), TenantRef::Cluster())) << text;
  }
  EXPECT_TRUE(ta.Allows(P("users:create"), acme));
  EXPECT_TRUE(ta.Allows(P("audit:read"), acme));
  EXPECT_TRUE(ta.Allows(P("nodes:read"), acme));
}

TEST(BuiltinRolesTest, AuditorReadsEverythingButDataAndMutatesNothing) {
  auto policy = MustCompile({}, {User("aud", "auditor"), User("taud", "auditor", "acme")});
  for (auto id : {"aud", "taud"}) {
    Grants g = policy->GrantsFor(SubjectKind::kUser, id);
    TenantRef acme = policy->TenantIndex("acme");
    for (int i = 0; i < kNumPermissions; ++i) {
      Permission p = Permission::FromIndex(i);
      bool expect = p.verb() == Verb::kRead && p.resource() != Resource::kData;
      EXPECT_EQ(g.Allows(p, acme), expect) << id << " " << p.ToString();
    }
    EXPECT_FALSE(g.Allows(P("data:read"), acme));
  }
}

TEST(BuiltinRolesTest, ViewerSeesNoAuditAndNoData) {
  auto policy = MustCompile({}, {User("v", "viewer", "acme")});
  Grants v = policy->GrantsFor(SubjectKind::kUser, "v");
  TenantRef acme = policy->TenantIndex("acme");
  EXPECT_FALSE(v.Allows(P("audit:read"), acme));
  EXPECT_FALSE(v.Allows(P("data:read"), acme));
  EXPECT_FALSE(v.Allows(P("jobs:create"), acme));
  EXPECT_TRUE(v.Allows(P("datasets:read"), acme));
}

// ---------------------------------------------------------------------------------------------
// Tenancy

TEST(AuthorizerTest, DeveloperOfOneTenantCannotTouchAnother) {
  auto policy = MustCompile({}, {User("dev-a", "developer", "a"), User("dev-b", "developer", "b")});
  Grants dev = policy->GrantsFor(SubjectKind::kUser, "dev-a");
  TenantRef a = policy->TenantIndex("a"), b = policy->TenantIndex("b");
  for (int i = 0; i < kNumPermissions; ++i) {
    Permission p = Permission::FromIndex(i);
    EXPECT_FALSE(dev.Allows(p, b)) << p.ToString();
    EXPECT_FALSE(dev.Allows(p, TenantRef::Cluster())) << p.ToString();
  }
  EXPECT_TRUE(dev.Allows(P("jobs:read"), a));
  EXPECT_TRUE(dev.Allows(P("data:read"), a));
  EXPECT_FALSE(dev.Allows(P("users:read"), a));
}

TEST(AuthorizerTest, BindingsUnionAcrossRolesAndScopes) {
  RoleDef ops{"r-ops", "ops", "", {"nodes:manage"}};
  auto policy = MustCompile({ops}, {User("u", "viewer"), User("u", "developer", "a"),
                                    User("u", "auditor", "a"), User("u", "r-ops", "b")});
  Grants u = policy->GrantsFor(SubjectKind::kUser, "u");
  TenantRef a = policy->TenantIndex("a"), b = policy->TenantIndex("b");
  EXPECT_TRUE(u.Allows(P("jobs:read"), TenantRef::Cluster()));  // viewer at cluster
  EXPECT_TRUE(u.Allows(P("jobs:read"), b));
  EXPECT_TRUE(u.Allows(P("jobs:create"), a));
  EXPECT_TRUE(u.Allows(P("audit:read"), a));
  EXPECT_FALSE(u.Allows(P("audit:read"), b));
  EXPECT_TRUE(u.Allows(P("nodes:manage"), b));
  EXPECT_FALSE(u.Allows(P("nodes:manage"), TenantRef::Cluster()));  // tenant grant, cluster ask
  EXPECT_EQ(u.tenants().size(), 2u);
}

TEST(CompileTest, RefusesInconsistentInput) {
  RoleDef acme_role{"r1", "acme-ops", "acme", {"jobs:*"}};
  struct Case {
    std::vector<RoleDef> roles;
    std::vector<BindingDef> bindings;
    std::string want;
  };
  std::vector<Case> cases = {
      {{}, {User("u", "admin", "acme")}, "only at cluster scope"},
      {{acme_role}, {User("u", "r1", "globex")}, "belongs to tenant \"acme\""},
      {{acme_role}, {User("u", "r1")}, "belongs to tenant \"acme\""},
      {{}, {User("u", "nope", "acme")}, "unknown role"},
      {{}, {{"group", "u", "viewer", ""}}, "subject kind"},
      {{}, {User("", "viewer")}, "empty subject id"},
      {{acme_role, acme_role}, {}, "duplicate role id"},
      {{{"r2", "x", "", {"nodes:fly"}}}, {}, "verb \"fly\""},
      {{{"", "x", "", {}}}, {}, "empty id"},
      {{{"viewer", "viewer", "", {"*:*"}}}, {}, "redefines a built-in"},
  };
  for (const Case& c : cases) {
    auto p = Compile(c.roles, c.bindings);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << c.want;
    EXPECT_THAT(p.status().message(), HasSubstr(c.want));
  }
  // An identical copy of a built-in (the store may list them) is accepted.
  EXPECT_TRUE(Compile({BuiltinRoles()[2]}, {}).ok());
  auto own = Compile({acme_role}, {User("u", "r1", "acme")});
  ASSERT_TRUE(own.ok());
  EXPECT_TRUE((*own)->GrantsFor(SubjectKind::kUser, "u").Allows(P("jobs:manage"),
                                                                 (*own)->TenantIndex("acme")));
}

// ---------------------------------------------------------------------------------------------
// Escalation prevention

TEST(EscalationTest, TenantAdminCannotCreateRoleWithNodesManage) {
  auto policy = MustCompile({}, {User("ta", "tenant-admin", "acme")});
  Grants ta = policy->GrantsFor(SubjectKind::kUser, "ta");
  absl::Status s = policy->CheckCanCreateRole(ta, Set({"jobs:read", "nodes:manage"}), "acme");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(),
            "cannot grant \"nodes:manage\": you do not hold it at tenant scope \"acme\"");
  EXPECT_TRUE(policy->CheckCanCreateRole(ta, Set({"jobs:*", "data:read"}), "acme").ok());
  // Not in another tenant, not cluster-wide.
  s = policy->CheckCanCreateRole(ta, Set({"jobs:read"}), "globex");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("\"roles:create\" at tenant scope \"globex\""));
  s = policy->CheckCanCreateRole(ta, Set({"jobs:read"}), "");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("at cluster scope"));
}

TEST(EscalationTest, TenantAdminCannotBindAdmin) {
  auto policy = MustCompile({}, {User("ta", "tenant-admin", "acme")});
  Grants ta = policy->GrantsFor(SubjectKind::kUser, "ta");
  const RoleDef& admin = BuiltinRoles()[0];
  ASSERT_EQ(admin.id, "admin");
  EXPECT_EQ(policy->CheckCanBind(ta, admin, "acme").code(), absl::StatusCode::kInvalidArgument);
  absl::Status s = policy->CheckCanBind(ta, admin, "");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("\"bindings:create\" at cluster scope"));
  // A forged copy of a built-in is judged by the real definition.
  RoleDef forged{"admin", "admin", "", {}};
  EXPECT_EQ(policy->CheckCanBind(ta, forged, "").code(), absl::StatusCode::kPermissionDenied);
  // Built-ins within its reach are fine at its own tenant only.
  EXPECT_TRUE(policy->CheckCanBind(ta, BuiltinRoles()[2], "acme").ok());  // developer
  EXPECT_EQ(policy->CheckCanBind(ta, BuiltinRoles()[2], "globex").code(),
            absl::StatusCode::kPermissionDenied);
  // auditor includes patches:read, which tenant-admin lacks.
  s = policy->CheckCanBind(ta, BuiltinRoles()[3], "acme");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(),
            "cannot grant \"patches:read\": you do not hold it at tenant scope \"acme\"");
}

TEST(EscalationTest, TenantOwnedRoleBindsOnlyInItsTenant) {
  RoleDef acme_role{"r1", "acme-ops", "acme", {"jobs:read"}};
  auto policy = MustCompile({acme_role}, {User("root", "admin")});
  Grants root = policy->GrantsFor(SubjectKind::kUser, "root");
  EXPECT_TRUE(policy->CheckCanBind(root, acme_role, "acme").ok());
  absl::Status s = policy->CheckCanBind(root, acme_role, "globex");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("belongs to tenant \"acme\""));
  EXPECT_EQ(policy->CheckCanBind(root, acme_role, "").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(policy->CheckCanBind(root, BuiltinRoles()[0], "acme").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(policy->CheckCanBind(root, BuiltinRoles()[0], "").ok());
  RoleDef bad{"r9", "bad", "", {"jobs:fly"}};
  EXPECT_EQ(policy->CheckCanBind(root, bad, "").code(), absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Intersect (API tokens)

TEST(IntersectTest, TokenNeverExceedsItsOwner) {
  auto policy = MustCompile({}, {User("ann", "developer", "acme"), User("ann", "viewer"),
                                 {"token", "tok1", "tenant-admin", "acme"}});
  Grants owner = policy->GrantsFor(SubjectKind::kUser, "ann");
  Grants token = policy->GrantsFor(SubjectKind::kToken, "tok1");
  Grants eff = Intersect(token, owner);
  TenantRef acme = policy->TenantIndex("acme");
  EXPECT_EQ(eff.At(acme), token.At(acme) & owner.At(acme));
  EXPECT_TRUE(eff.Allows(P("jobs:create"), acme));
  EXPECT_FALSE(eff.Allows(P("users:create"), acme));  // token's role has it, owner does not
  // Viewer at cluster applies to globex for the owner, but the token is scoped to acme.
  EXPECT_TRUE(owner.Allows(P("jobs:read"), policy->TenantIndex("globex")));
  EXPECT_FALSE(eff.Allows(P("jobs:read"), policy->TenantIndex("globex")));
  EXPECT_TRUE(eff.cluster().empty());
  // Symmetric; with nothing, nothing.
  EXPECT_EQ(Intersect(owner, token).At(acme), eff.At(acme));
  EXPECT_TRUE(Intersect(token, Grants()).empty());
  // Different snapshots fail closed.
  auto other = MustCompile({}, {User("ann", "developer", "acme")});
  EXPECT_TRUE(Intersect(token, other->GrantsFor(SubjectKind::kUser, "ann")).empty());
}

// ---------------------------------------------------------------------------------------------
// Property test: the compiled authorizer agrees with a plain reference evaluator.

struct RefModel {
  std::vector<RoleDef> roles;  // custom roles
  std::vector<BindingDef> bindings;
  std::vector<std::string> tenants;
};

// Reference: allowed iff some binding of the subject names a role containing p, at cluster scope,
// or at the asked tenant's scope. Written plainly on strings, sharing nothing with the compiler
// but ParsePermission for the catalog.
bool RefAllows(const RefModel& m, const std::string& kind, const std::string& subject,
               const std::string& perm, const std::string* tenant) {
  auto role_has = [&](const std::string& role_id) {
    std::vector<std::string> perms;
    for (const RoleDef& r : BuiltinRoles()) {
      if (r.id == role_id) perms = r.permissions;
    }
    for (const RoleDef& r : m.roles) {
      if (r.id == role_id) perms = r.permissions;
    }
    std::string res = perm.substr(0, perm.find(':')), verb = perm.substr(perm.find(':') + 1);
    for (const std::string& x : perms) {
      std::string xr = x.substr(0, x.find(':')), xv = x.substr(x.find(':') + 1);
      if ((xr == "*" || xr == res) && (xv == "*" || xv == verb)) return true;
    }
    return false;
  };
  for (const BindingDef& b : m.bindings) {
    if (b.subject_kind != kind || b.subject_id != subject) continue;
    bool scope_ok = b.scope_tenant_id.empty() || (tenant && *tenant == b.scope_tenant_id);
    if (scope_ok && role_has(b.role_id)) return true;
  }
  return false;
}

RefModel RandomModel(std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  RefModel m;
  size_t n_tenants = 1 + pick(6);
  for (size_t t = 0; t < n_tenants; ++t) m.tenants.push_back("t" + std::to_string(t));
  static const std::vector<std::string> kResources = {"tenants", "users", "roles", "bindings",
      "tokens", "audit", "nodes", "pools", "jobs", "datasets", "data", "keys", "logs", "alerts",
      "patches", "metrics", "*"};
  static const std::vector<std::string> kVerbs = {"read", "create", "update", "delete", "manage",
                                                  "*"};
  size_t n_roles = pick(8);
  for (size_t r = 0; r < n_roles; ++r) {
    RoleDef role{"c" + std::to_string(r), "custom", "", {}};
    if (pick(3) == 0) role.tenant_id = m.tenants[pick(n_tenants)];
    size_t n_perms = pick(6);
    for (size_t i = 0; i < n_perms; ++i) {
      // Mostly concrete permissions, sometimes wildcards.
      std::string res = kResources[pick(pick(10) == 0 ? 17 : 16)];
      std::string verb = kVerbs[pick(pick(10) == 0 ? 6 : 5)];
      role.permissions.push_back(res + ":" + verb);
    }
    m.roles.push_back(role);
  }
  std::vector<std::string> role_ids = {"admin", "tenant-admin", "developer", "auditor", "viewer"};
  for (const RoleDef& r : m.roles) role_ids.push_back(r.id);
  size_t n_bindings = pick(20);
  for (size_t i = 0; i < n_bindings; ++i) {
    BindingDef b;
    b.subject_kind = pick(4) == 0 ? "token" : "user";
    b.subject_id = "s" + std::to_string(pick(5));
    b.role_id = role_ids[pick(role_ids.size())];
    const RoleDef* owned = nullptr;
    for (const RoleDef& r : m.roles) {
      if (r.id == b.role_id && !r.tenant_id.empty()) owned = &r;
    }
    if (owned) {
      b.scope_tenant_id = owned->tenant_id;
    } else if (b.role_id != "admin" && pick(3) != 0) {
      b.scope_tenant_id = m.tenants[pick(n_tenants)];
    }
    m.bindings.push_back(b);
  }
  return m;
}

TEST(PropertyTest, CompiledAuthorizerAgreesWithReferenceEvaluator) {
  std::mt19937_64 rng(20240601);
  int checked = 0;
  for (int iter = 0; iter < 150; ++iter) {
    RefModel m = RandomModel(rng);
    auto compiled = Compile(m.roles, m.bindings);
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    const Policy& policy = **compiled;
    std::vector<std::string> asked = m.tenants;
    asked.push_back("unlisted");
    for (const char* kind : {"user", "token"}) {
      for (int s = 0; s < 6; ++s) {  // s5 is never bound
        std::string subject = "s" + std::to_string(s);
        Grants g = policy.GrantsFor(std::string_view(kind) == "user" ? SubjectKind::kUser
                                                                     : SubjectKind::kToken,
                                    subject);
        for (int i = 0; i < kNumPermissions; ++i) {
          Permission p = Permission::FromIndex(i);
          std::string text = p.ToString();
          ASSERT_EQ(g.Allows(p, TenantRef::Cluster()), RefAllows(m, kind, subject, text, nullptr))
              << "iter " << iter << " " << kind << " " << subject << " " << text << " @cluster";
          for (const std::string& t : asked) {
            ASSERT_EQ(g.Allows(p, policy.TenantIndex(t)), RefAllows(m, kind, subject, text, &t))
                << "iter " << iter << " " << kind << " " << subject << " " << text << " @" << t;
            ++checked;
          }
        }
      }
    }
    // Intersect agrees with the conjunction of the two.
    Grants a = policy.GrantsFor(SubjectKind::kUser, "s" + std::to_string(rng() % 5));
    Grants b = policy.GrantsFor(SubjectKind::kToken, "s" + std::to_string(rng() % 5));
    Grants ab = Intersect(a, b);
    for (int i = 0; i < kNumPermissions; ++i) {
      Permission p = Permission::FromIndex(i);
      ASSERT_EQ(ab.Allows(p, TenantRef::Cluster()),
                a.Allows(p, TenantRef::Cluster()) && b.Allows(p, TenantRef::Cluster()));
      for (const std::string& t : asked) {
        TenantRef ref = policy.TenantIndex(t);
        ASSERT_EQ(ab.Allows(p, ref), a.Allows(p, ref) && b.Allows(p, ref)) << iter << " " << t;
      }
    }
  }
  EXPECT_GT(checked, 100000);
}

}  // namespace
}  // namespace warden::rbac
