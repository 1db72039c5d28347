#include <gtest/gtest.h>

#include <map>
#include <set>

#include "server/api_service.h"

namespace warden::server {
namespace {

TEST(RouteTableTest, EveryRouteOfTheServerDeclaresAValidPermission) {
  auto compiled = ApiService::CompileRoutes(ApiService::Routes());
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  EXPECT_EQ(compiled->size(), ApiService::Routes().size());
  // Exactly these are reachable without credentials: version, password login, the node join
  // (its credential is the join token in its body), and the single sign-on routes that lead to a
  // session.
  std::set<std::string> open;
  for (const RouteSpec& r : ApiService::Routes()) {
    if (std::string(r.permission) == "public") open.insert(std::string(r.method) + " " + r.pattern);
  }
  EXPECT_EQ(open, (std::set<std::string>{"GET /api/v1/version", "POST /api/v1/login",
                                         "POST /api/v1/nodes/join",
                                         "GET /api/v1/oidc/providers",
                                         "GET /api/v1/oidc/{provider}/login",
                                         "GET /api/v1/oidc/{provider}/callback",
                                         "POST /api/v1/oidc/{provider}/device",
                                         "POST /api/v1/oidc/{provider}/device/poll"}));
}

TEST(RouteTableTest, ARouteWithoutAPermissionRefusesToStart) {
  std::vector<RouteSpec> routes = {
      {"GET", "/api/v1/things", "", Scope::kCluster, nullptr, &ApiService::Version}};
  auto compiled = ApiService::CompileRoutes(routes);
  ASSERT_FALSE(compiled.ok());
  EXPECT_NE(std::string(compiled.status().message()).find("declares no valid permission"),
            std::string::npos);
  routes[0].permission = "things:fly";
  EXPECT_FALSE(ApiService::CompileRoutes(routes).ok());
  routes[0].permission = nullptr;
  EXPECT_FALSE(ApiService::CompileRoutes(routes).ok());
}

TEST(RouteTableTest, TenantScopedRouteNeedsATenantParameter) {
  std::vector<RouteSpec> routes = {
      {"GET", "/api/v1/things", "jobs:read", Scope::kTenant, nullptr, &ApiService::Version}};
  auto compiled = ApiService::CompileRoutes(routes);
  ASSERT_FALSE(compiled.ok());
  EXPECT_NE(std::string(compiled.status().message()).find("no {tenant} parameter"),
            std::string::npos);
}

TEST(RouteTableTest, SensitiveRoutesNeedStepUpAndOnlyEnrollmentRoutesAreMfaExempt) {
  std::set<std::string> exempt;
  for (const RouteSpec& r : ApiService::Routes()) {
    const std::string perm = r.permission;
    if (perm == "bindings:create" || perm == "bindings:delete" || perm == "tokens:create" ||
        perm == "users:create") {
      EXPECT_NE(r.flags & kRouteStepUp, 0u) << r.method << " " << r.pattern;
    }
    if (r.flags & kRouteMfaExempt) exempt.insert(std::string(r.method) + " " + r.pattern);
  }
  EXPECT_EQ(exempt, (std::set<std::string>{"POST /api/v1/logout", "POST /api/v1/logout/all",
                                           "GET /api/v1/whoami", "GET /api/v1/mfa",
                                           "POST /api/v1/mfa/enroll", "POST /api/v1/mfa/confirm",
                                           "POST /api/v1/mfa/step-up"}));
}

// The vault's routes (vault_routes.cc): every data route is checked at the object's tenant, a
// download's audit event is durable before the bytes leave, and changing who may export (data
// policies) or the keys needs step-up.
TEST(RouteTableTest, VaultRoutesAreTenantScopedDurableAndStepUpWhereSensitive) {
  std::map<std::string, const RouteSpec*> vault;
  for (const RouteSpec& r : ApiService::Routes()) {
    std::string p = r.pattern;
    if (p.find("/datasets") != std::string::npos || p.find("/keys") != std::string::npos) {
      vault[std::string(r.method) + " " + p] = &r;
    }
  }
  const std::string t = "/api/v1/tenants/{tenant}";
  EXPECT_EQ(vault.size(), 15u);
  for (const auto& [name, r] : vault) EXPECT_EQ(r->scope, Scope::kTenant) << name;
  ASSERT_TRUE(vault.count("GET " + t + "/datasets/content"));
  EXPECT_NE(vault["GET " + t + "/datasets/content"]->flags & kRouteDurableRead, 0u);
  EXPECT_STREQ(vault["GET " + t + "/datasets/content"]->permission, "data:read");
  EXPECT_STREQ(vault["PUT " + t + "/datasets/uploads/{upload}"]->permission, "data:create");
  for (const char* sensitive : {"PUT /datasets/policies/{policy}",
                                "DELETE /datasets/policies/{policy}", "POST /keys/rotate"}) {
    std::string s = sensitive;
    std::string key = s.substr(0, s.find(' ')) + " " + t + s.substr(s.find(' ') + 1);
    ASSERT_TRUE(vault.count(key)) << key;
    EXPECT_NE(vault[key]->flags & kRouteStepUp, 0u) << key;
  }
}

// Only the three dataset reads may be reached through a share (a share is read-only), and the
// share routes are tenant-scoped admin actions, the offer behind step-up (it is a copy).
TEST(RouteTableTest, OnlyDatasetReadsAreSharedAndShareRoutesAreAdminActions) {
  std::set<std::string> shared, shares;
  for (const RouteSpec& r : ApiService::Routes()) {
    std::string pattern = r.pattern;
    if ((r.flags & kRouteSharedRead) != 0) shared.insert(std::string(r.method) + " " + pattern);
    if (pattern.find("/shares") != std::string::npos) {
      EXPECT_EQ(r.scope, Scope::kTenant) << pattern;
      shares.insert(std::string(r.method) + " " + pattern + " " + r.permission +
                    ((r.flags & kRouteStepUp) != 0 ? " step-up" : ""));
    }
  }
  const std::string t = "/api/v1/tenants/{tenant}";
  EXPECT_EQ(shared, (std::set<std::string>{"GET " + t + "/datasets", "GET " + t + "/datasets/object",
                                           "GET " + t + "/datasets/content"}));
  EXPECT_EQ(shares, (std::set<std::string>{
                        "POST " + t + "/shares datasets:manage step-up",
                        "GET " + t + "/shares datasets:read",
                        "POST " + t + "/shares/{share}/accept datasets:manage",
                        "POST " + t + "/shares/{share}/decline datasets:manage",
                        "DELETE " + t + "/shares/{share} datasets:manage"}));
}

TEST(RouteTableTest, AnMfaExemptRouteMayNotNeedAPermission) {
  std::vector<RouteSpec> routes = {{"GET", "/api/v1/things", "users:read", Scope::kCluster,
                                    nullptr, &ApiService::Version, 200, kRouteMfaExempt}};
  auto compiled = ApiService::CompileRoutes(routes);
  ASSERT_FALSE(compiled.ok());
  EXPECT_NE(std::string(compiled.status().message()).find("MFA-exempt"), std::string::npos);
}

TEST(RouteTableTest, JobRoutesAreTenantScopedWithTheirPermissions) {
  std::set<std::string> jobs;
  for (const RouteSpec& r : ApiService::Routes()) {
    std::string pattern = r.pattern;
    if (pattern.find("/jobs") == std::string::npos) continue;
    EXPECT_EQ(r.scope, Scope::kTenant) << pattern;
    jobs.insert(std::string(r.method) + " " + pattern + " " + r.permission + " " + r.action);
  }
  EXPECT_EQ(jobs, (std::set<std::string>{
                      "POST /api/v1/tenants/{tenant}/jobs jobs:create jobs:submit",
                      "GET /api/v1/tenants/{tenant}/jobs jobs:read jobs:list",
                      "GET /api/v1/tenants/{tenant}/jobs/{job} jobs:read jobs:show",
                      "POST /api/v1/tenants/{tenant}/jobs/{job}/cancel jobs:update jobs:cancel",
                      "GET /api/v1/tenants/{tenant}/jobs/{job}/logs logs:read jobs:logs",
                  }));
}

TEST(RouteTableTest, ImageRoutesAreTenantScopedAndOnlyTheImportIsStreamed) {
  std::set<std::string> images;
  for (const RouteSpec& r : ApiService::Routes()) {
    std::string pattern = r.pattern;
    if (pattern.find("/images") == std::string::npos) continue;
    EXPECT_EQ(r.scope, Scope::kTenant) << pattern;
    EXPECT_EQ(r.stream_body_max > 0, std::string(r.method) == "POST") << pattern;
    images.insert(std::string(r.method) + " " + pattern + " " + r.permission + " " + r.action);
  }
  EXPECT_EQ(images, (std::set<std::string>{
                        "POST /api/v1/tenants/{tenant}/images images:create images:import",
                        "GET /api/v1/tenants/{tenant}/images images:read images:list",
                        "GET /api/v1/tenants/{tenant}/images/{digest} images:read images:show",
                        "DELETE /api/v1/tenants/{tenant}/images/{digest} images:delete images:delete",
                    }));
}

}  // namespace
}  // namespace warden::server
