#include "server/api_service.h"

#include <algorithm>

#include "api/api.h"
#include "common/encoding.h"
#include "common/ids.h"
#include "common/status.h"
#include "common/strings.h"
#include "http/http.h"

namespace warden::server {
namespace {

using common::Json;
using common::StrCat;

constexpr rbac::Permission P(rbac::Resource r, rbac::Verb v) { return rbac::Permission(r, v); }
using R = rbac::Resource;
using V = rbac::Verb;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// rbac and the store name tenants by id; people know them by name.
absl::Status WithTenantName(absl::Status s, const std::string& id, const std::string& name) {
  if (s.ok() || id.empty()) return s;
  std::string msg = Msg(s);
  for (size_t pos = msg.find(id); pos != std::string::npos; pos = msg.find(id, pos + name.size())) {
    msg.replace(pos, id.size(), name);
  }
  return absl::Status(s.code(), msg);
}

std::string ScopeName(const std::string& tenant_name) {
  return tenant_name.empty() ? "cluster" : StrCat("tenant \"", tenant_name, "\"");
}

// First permission in `wanted` that `held` lacks, for messages.
std::string FirstMissing(const rbac::PermissionSet& wanted, const rbac::PermissionSet& held) {
  auto missing = (wanted - held).ToStrings();
  return missing.empty() ? std::string() : missing.front();
}

absl::StatusOr<std::string> BearerToken(const std::string& header) {
  if (header.empty()) return absl::UnauthenticatedError("missing bearer token");
  constexpr std::string_view kPrefix = "Bearer ";
  if (header.size() <= kPrefix.size() ||
      !std::equal(kPrefix.begin(), kPrefix.end(), header.begin(),
                  [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
    return absl::UnauthenticatedError("malformed Authorization header; expected \"Bearer <token>\"");
  }
  return header.substr(kPrefix.size());
}

}  // namespace

// The one table of routes. Every route names the permission it needs (or says it is public /
// needs only authentication) and the scope the permission is checked at. Create() refuses to
// start with a route that names no valid permission.
const std::vector<RouteSpec>& ApiService::Routes() {
  static const std::vector<RouteSpec> kRoutes = {
      {"GET", "/api/v1/version", "public", Scope::kCluster, "api:version", &ApiService::Version},
      {"POST", "/api/v1/login", "public", Scope::kCluster, "auth:login", &ApiService::Login},
      {"POST", "/api/v1/logout", "authenticated", Scope::kCluster, "auth:logout",
       &ApiService::Logout, 200, kRouteMfaExempt},
      {"POST", "/api/v1/logout/all", "authenticated", Scope::kCluster, "auth:logout-all",
       &ApiService::LogoutAll, 200, kRouteMfaExempt},
      {"GET", "/api/v1/whoami", "authenticated", Scope::kCluster, "auth:whoami",
       &ApiService::WhoAmI, 200, kRouteMfaExempt},
      {"GET", "/api/v1/mfa", "authenticated", Scope::kCluster, "mfa:status", &ApiService::MfaStatus,
       200, kRouteMfaExempt},
      {"POST", "/api/v1/mfa/enroll", "authenticated", Scope::kCluster, "mfa:enroll",
       &ApiService::MfaEnroll, 200, kRouteMfaExempt},
      {"POST", "/api/v1/mfa/confirm", "authenticated", Scope::kCluster, "mfa:confirm",
       &ApiService::MfaConfirm, 200, kRouteMfaExempt},
      {"POST", "/api/v1/mfa/disable", "authenticated", Scope::kCluster, "mfa:disable",
       &ApiService::MfaDisable},
      {"POST", "/api/v1/mfa/step-up", "authenticated", Scope::kCluster, "mfa:step-up",
       &ApiService::MfaStepUp, 200, kRouteMfaExempt},
      {"POST", "/api/v1/users/{user}/mfa/reset", "users:update", Scope::kCluster, "mfa:reset",
       &ApiService::MfaReset, 200, kRouteStepUp},
      {"POST", "/api/v1/tenants/{tenant}/users/{user}/mfa/reset", "users:update", Scope::kTenant,
       "mfa:reset", &ApiService::MfaReset, 200, kRouteStepUp},
      {"POST", "/api/v1/password", "authenticated", Scope::kCluster, "auth:password",
       &ApiService::ChangePassword},
      {"GET", "/metrics", "metrics:read", Scope::kCluster, nullptr, nullptr},
      {"GET", "/api/v1/tenants", "tenants:read", Scope::kAny, nullptr, &ApiService::ListTenants},
      {"POST", "/api/v1/tenants", "tenants:create", Scope::kCluster, nullptr,
       &ApiService::CreateTenant, 201},
      {"GET", "/api/v1/tenants/{tenant}", "tenants:read", Scope::kTenant, nullptr,
       &ApiService::GetTenant},
      {"DELETE", "/api/v1/tenants/{tenant}", "tenants:delete", Scope::kCluster, nullptr,
       &ApiService::DeleteTenant},
      {"GET", "/api/v1/users", "users:read", Scope::kCluster, nullptr, &ApiService::ListUsers},
      {"POST", "/api/v1/users", "users:create", Scope::kCluster, nullptr, &ApiService::CreateUser,
       201, kRouteStepUp},
      {"POST", "/api/v1/users/{user}/disable", "users:update", Scope::kCluster, nullptr,
       &ApiService::DisableUser},
      {"POST", "/api/v1/users/{user}/enable", "users:update", Scope::kCluster, nullptr,
       &ApiService::EnableUser},
      {"GET", "/api/v1/tenants/{tenant}/users", "users:read", Scope::kTenant, nullptr,
       &ApiService::ListUsers},
      {"POST", "/api/v1/tenants/{tenant}/users", "users:create", Scope::kTenant, nullptr,
       &ApiService::CreateUser, 201, kRouteStepUp},
      {"POST", "/api/v1/tenants/{tenant}/users/{user}/disable", "users:update", Scope::kTenant,
       nullptr, &ApiService::DisableUser},
      {"POST", "/api/v1/tenants/{tenant}/users/{user}/enable", "users:update", Scope::kTenant,
       nullptr, &ApiService::EnableUser},
      {"GET", "/api/v1/roles", "roles:read", Scope::kCluster, nullptr, &ApiService::ListRoles},
      {"POST", "/api/v1/roles", "roles:create", Scope::kCluster, nullptr, &ApiService::CreateRole,
       201},
      {"DELETE", "/api/v1/roles/{role}", "roles:delete", Scope::kCluster, nullptr,
       &ApiService::DeleteRole},
      {"GET", "/api/v1/tenants/{tenant}/roles", "roles:read", Scope::kTenant, nullptr,
       &ApiService::ListRoles},
      {"POST", "/api/v1/tenants/{tenant}/roles", "roles:create", Scope::kTenant, nullptr,
       &ApiService::CreateRole, 201},
      {"DELETE", "/api/v1/tenants/{tenant}/roles/{role}", "roles:delete", Scope::kTenant, nullptr,
       &ApiService::DeleteRole},
      {"GET", "/api/v1/bindings", "bindings:read", Scope::kCluster, nullptr,
       &ApiService::ListBindings},
      {"POST", "/api/v1/bindings", "bindings:create", Scope::kCluster, nullptr,
       &ApiService::CreateBinding, 201, kRouteStepUp},
      {"DELETE", "/api/v1/bindings/{binding}", "bindings:delete", Scope::kCluster, nullptr,
       &ApiService::DeleteBinding, 200, kRouteStepUp},
      {"GET", "/api/v1/tenants/{tenant}/bindings", "bindings:read", Scope::kTenant, nullptr,
       &ApiService::ListBindings},
      {"POST", "/api/v1/tenants/{tenant}/bindings", "bindings:create", Scope::kTenant, nullptr,
       &ApiService::CreateBinding, 201, kRouteStepUp},
      {"DELETE", "/api/v1/tenants/{tenant}/bindings/{binding}", "bindings:delete", Scope::kTenant,
       nullptr, &ApiService::DeleteBinding, 200, kRouteStepUp},
      {"GET", "/api/v1/tokens", "tokens:read", Scope::kCluster, nullptr, &ApiService::ListTokens},
      {"POST", "/api/v1/tokens", "tokens:create", Scope::kCluster, nullptr,
       &ApiService::CreateToken, 201, kRouteStepUp},
      {"DELETE", "/api/v1/tokens/{token}", "tokens:delete", Scope::kCluster, nullptr,
       &ApiService::RevokeToken},
      {"GET", "/api/v1/tenants/{tenant}/tokens", "tokens:read", Scope::kTenant, nullptr,
       &ApiService::ListTokens},
      {"POST", "/api/v1/tenants/{tenant}/tokens", "tokens:create", Scope::kTenant, nullptr,
       &ApiService::CreateToken, 201, kRouteStepUp},
      {"DELETE", "/api/v1/tenants/{tenant}/tokens/{token}", "tokens:delete", Scope::kTenant,
       nullptr, &ApiService::RevokeToken},
      {"GET", "/api/v1/audit", "audit:read", Scope::kCluster, nullptr, &ApiService::ListAudit},
      {"GET", "/api/v1/tenants/{tenant}/audit", "audit:read", Scope::kTenant, nullptr,
       &ApiService::ListAudit},
      {"POST", "/api/v1/nodes/join-tokens", "nodes:manage", Scope::kCluster, nullptr,
       &ApiService::CreateJoinToken, 201},
      {"GET", "/api/v1/nodes/join-tokens", "nodes:read", Scope::kCluster, nullptr,
       &ApiService::ListJoinTokens},
      {"POST", "/api/v1/nodes/join", "public", Scope::kCluster, "nodes:join", &ApiService::JoinNode,
       201},
      {"GET", "/api/v1/nodes", "nodes:read", Scope::kCluster, nullptr, &ApiService::ListNodes},
      {"GET", "/api/v1/nodes/{node}", "nodes:read", Scope::kCluster, nullptr, &ApiService::GetNode},
      {"POST", "/api/v1/nodes/{node}/cordon", "nodes:manage", Scope::kCluster, nullptr,
       &ApiService::CordonNode},
      {"POST", "/api/v1/nodes/{node}/uncordon", "nodes:manage", Scope::kCluster, nullptr,
       &ApiService::UncordonNode},
      {"POST", "/api/v1/nodes/{node}/drain", "nodes:manage", Scope::kCluster, nullptr,
       &ApiService::DrainNode},
      {"POST", "/api/v1/nodes/{node}/labels", "nodes:manage", Scope::kCluster, nullptr,
       &ApiService::LabelNode},
      {"POST", "/api/v1/nodes/{node}/taints", "nodes:manage", Scope::kCluster, nullptr,
       &ApiService::TaintNode},
      {"DELETE", "/api/v1/nodes/{node}", "nodes:manage", Scope::kCluster, nullptr,
       &ApiService::DeleteNode},
      {"PATCH", "/api/v1/nodes/{node}", "nodes:manage", Scope::kCluster, "nodes:update",
       &ApiService::PatchNode},
      {"GET", "/api/v1/pools", "nodes:read", Scope::kCluster, "pools:list", &ApiService::ListPools},
      {"PUT", "/api/v1/pools/{pool}", "nodes:manage", Scope::kCluster, "pools:dedicate",
       &ApiService::PutPool},
      // Tamper-evident log (audit_routes.cc).
      {"GET", "/api/v1/audit/events", "audit:read", Scope::kCluster, nullptr,
       &ApiService::QueryAudit, 200, kRouteDurableRead},
      {"GET", "/api/v1/tenants/{tenant}/audit/events", "audit:read", Scope::kTenant, nullptr,
       &ApiService::QueryAudit, 200, kRouteDurableRead},
      {"GET", "/api/v1/audit/export", "audit:read", Scope::kCluster, nullptr,
       &ApiService::ExportAudit, 200, kRouteDurableRead},
      {"GET", "/api/v1/tenants/{tenant}/audit/export", "audit:read", Scope::kTenant, nullptr,
       &ApiService::ExportAudit, 200, kRouteDurableRead},
      {"GET", "/api/v1/audit/checkpoint", "audit:read", Scope::kAny, nullptr,
       &ApiService::GetAuditCheckpoint},
      {"GET", "/api/v1/audit/pubkey", "audit:read", Scope::kAny, nullptr,
       &ApiService::GetAuditPublicKey},
      {"GET", "/api/v1/audit/proof/inclusion", "audit:read", Scope::kCluster, nullptr,
       &ApiService::AuditInclusionProof, 200, kRouteDurableRead},
      {"GET", "/api/v1/tenants/{tenant}/audit/proof/inclusion", "audit:read", Scope::kTenant,
       nullptr, &ApiService::AuditInclusionProof, 200, kRouteDurableRead},
      {"GET", "/api/v1/audit/proof/consistency", "audit:read", Scope::kAny, nullptr,
       &ApiService::AuditConsistencyProof},
      // Single sign-on (oidc_routes.cc): public, as they are how a session is obtained.
      {"GET", "/api/v1/oidc/providers", "public", Scope::kCluster, "sso:providers",
       &ApiService::SsoProviders},
      {"GET", "/api/v1/oidc/{provider}/login", "public", Scope::kCluster, "sso:login-start",
       &ApiService::SsoLoginStart, 302, kRouteDurableRead},
      {"GET", "/api/v1/oidc/{provider}/callback", "public", Scope::kCluster, "sso:login",
       &ApiService::SsoCallback, 200, kRouteDurableRead},
      {"POST", "/api/v1/oidc/{provider}/device", "public", Scope::kCluster, "sso:device-start",
       &ApiService::SsoDeviceStart},
      {"POST", "/api/v1/oidc/{provider}/device/poll", "public", Scope::kCluster, "sso:device-login",
       &ApiService::SsoDevicePoll},
      // Jobs (issue 6; job_routes.cc). Tenant-scoped: RBAC checks the URL's tenant, and the
      // handlers refuse a job id of another tenant with 404.
      {"POST", "/api/v1/tenants/{tenant}/jobs", "jobs:create", Scope::kTenant, "jobs:submit",
       &ApiService::SubmitJob, 201},
      {"GET", "/api/v1/tenants/{tenant}/jobs", "jobs:read", Scope::kTenant, "jobs:list",
       &ApiService::ListJobs},
      {"GET", "/api/v1/tenants/{tenant}/jobs/{job}", "jobs:read", Scope::kTenant, "jobs:show",
       &ApiService::GetJob},
      {"POST", "/api/v1/tenants/{tenant}/jobs/{job}/cancel", "jobs:update", Scope::kTenant,
       "jobs:cancel", &ApiService::CancelJob},
      {"GET", "/api/v1/tenants/{tenant}/jobs/{job}/logs", "logs:read", Scope::kTenant,
       "jobs:logs", &ApiService::JobLogs},
      // Tenant isolation policy and quota (tenant_policy_routes.cc): weakening needs cluster
      // tenants:update, checked in the handler.
      {"GET", "/api/v1/tenants/{tenant}/policy", "tenants:read", Scope::kTenant,
       "tenants:policy-get", &ApiService::GetTenantPolicy},
      {"PUT", "/api/v1/tenants/{tenant}/policy", "jobs:manage", Scope::kTenant,
       "tenants:policy-set", &ApiService::PutTenantPolicy},
      // Encrypted vault (vault_routes.cc): object names travel in ?name=.
      {"GET", "/api/v1/tenants/{tenant}/datasets", "datasets:read", Scope::kTenant,
       "datasets:list", &ApiService::ListDatasets, 200, kRouteSharedRead},
      {"GET", "/api/v1/tenants/{tenant}/datasets/object", "datasets:read", Scope::kTenant,
       "datasets:show", &ApiService::ShowDataset, 200, kRouteSharedRead},
      {"DELETE", "/api/v1/tenants/{tenant}/datasets/object", "datasets:delete", Scope::kTenant,
       nullptr, &ApiService::DeleteDataset},
      {"GET", "/api/v1/tenants/{tenant}/datasets/content", "data:read", Scope::kTenant,
       "data:download", &ApiService::ReadDataset, 200, kRouteDurableRead | kRouteSharedRead},
      {"POST", "/api/v1/tenants/{tenant}/datasets/verify", "data:read", Scope::kTenant,
       "data:verify", &ApiService::VerifyDataset},
      {"POST", "/api/v1/tenants/{tenant}/datasets/uploads", "data:create", Scope::kTenant,
       "data:upload-begin", &ApiService::CreateUpload, 201},
      {"GET", "/api/v1/tenants/{tenant}/datasets/uploads/{upload}", "data:create", Scope::kTenant,
       "data:upload-status", &ApiService::GetUpload},
      {"PUT", "/api/v1/tenants/{tenant}/datasets/uploads/{upload}", "data:create", Scope::kTenant,
       "data:upload", &ApiService::AppendUpload, 200, 0, kMaxStreamedUploadBytes},
      {"POST", "/api/v1/tenants/{tenant}/datasets/uploads/{upload}/commit", "data:create",
       Scope::kTenant, "data:upload-commit", &ApiService::CommitUpload, 201},
      {"DELETE", "/api/v1/tenants/{tenant}/datasets/uploads/{upload}", "data:create",
       Scope::kTenant, "data:upload-abort", &ApiService::AbortUpload},
      {"GET", "/api/v1/tenants/{tenant}/datasets/policies", "datasets:read", Scope::kTenant,
       "datasets:policy-read", &ApiService::GetDataPolicies},
      {"PUT", "/api/v1/tenants/{tenant}/datasets/policies/{policy}", "datasets:manage",
       Scope::kTenant, "datasets:policy-set", &ApiService::PutDataPolicy, 200, kRouteStepUp},
      {"DELETE", "/api/v1/tenants/{tenant}/datasets/policies/{policy}", "datasets:manage",
       Scope::kTenant, "datasets:policy-delete", &ApiService::DeleteDataPolicy, 200, kRouteStepUp},
      {"GET", "/api/v1/tenants/{tenant}/keys", "keys:read", Scope::kTenant, "keys:status",
       &ApiService::KeyStatus},
      {"POST", "/api/v1/tenants/{tenant}/keys/rotate", "keys:manage", Scope::kTenant,
       "keys:rotate", &ApiService::RotateKey, 200, kRouteStepUp},
      // Cross-tenant shares (vault_share_routes.cc): offered by the owner's tenant admin (a copy:
      // step-up), accepted or declined by the receiving tenant's admin, revoked by the owner.
      {"POST", "/api/v1/tenants/{tenant}/shares", "datasets:manage", Scope::kTenant,
       "datasets:share", &ApiService::CreateShare, 201, kRouteStepUp},
      {"GET", "/api/v1/tenants/{tenant}/shares", "datasets:read", Scope::kTenant,
       "datasets:shares", &ApiService::ListShares},
      {"POST", "/api/v1/tenants/{tenant}/shares/{share}/accept", "datasets:manage",
       Scope::kTenant, "datasets:share-accept", &ApiService::AcceptShare},
      {"POST", "/api/v1/tenants/{tenant}/shares/{share}/decline", "datasets:manage",
       Scope::kTenant, "datasets:share-decline", &ApiService::DeclineShare},
      {"DELETE", "/api/v1/tenants/{tenant}/shares/{share}", "datasets:manage", Scope::kTenant,
       "datasets:share-revoke", &ApiService::RevokeShare},
      // Container images (image_routes.cc, issue 7).
      {"POST", "/api/v1/tenants/{tenant}/images", "images:create", Scope::kTenant, "images:import",
       &ApiService::ImportImage, 201, 0, kMaxImageImportBytes},
      {"GET", "/api/v1/tenants/{tenant}/images", "images:read", Scope::kTenant, "images:list",
       &ApiService::ListImages},
      {"GET", "/api/v1/tenants/{tenant}/images/{digest}", "images:read", Scope::kTenant,
       "images:show", &ApiService::ShowImage},
      {"DELETE", "/api/v1/tenants/{tenant}/images/{digest}", "images:delete", Scope::kTenant,
       "images:delete", &ApiService::DeleteImage},
  };
  return kRoutes;
}

absl::StatusOr<std::map<const RouteSpec*, ApiService::CompiledRoute>> ApiService::CompileRoutes(
    const std::vector<RouteSpec>& routes) {
  std::map<const RouteSpec*, CompiledRoute> compiled;
  for (const RouteSpec& route : routes) {
    CompiledRoute cr;
    std::string perm = route.permission ? route.permission : "";
    if (perm == "public") {
      cr.is_public = true;
    } else if (perm != "authenticated") {
      auto p = rbac::ParsePermission(perm);
      if (!p.ok()) {
        return absl::InternalError(StrCat("route ", route.method, " ", route.pattern,
                                          " declares no valid permission: ", Msg(p.status())));
      }
      cr.permission = *p;
    }
    // An MFA-exempt route is reachable by an admin who has not enrolled: it must not need any
    // permission, or the exemption would be a way around the MFA policy.
    if ((route.flags & kRouteMfaExempt) != 0 && perm != "authenticated") {
      return absl::InternalError(StrCat("route ", route.method, " ", route.pattern,
                                        " is MFA-exempt but not an \"authenticated\" route"));
    }
    bool has_tenant_param = std::string_view(route.pattern).find("{tenant}") != std::string::npos;
    if (route.scope == Scope::kTenant && !has_tenant_param) {
      return absl::InternalError(
          StrCat("route ", route.pattern, " is tenant-scoped but has no {tenant} parameter"));
    }
    compiled[&route] = cr;
  }
  return compiled;
}

absl::StatusOr<std::unique_ptr<ApiService>> ApiService::Create(
    store::Store& store, auth::Authenticator& authenticator, audit::AuditLog& audit,
    common::Clock& clock, common::Rng& rng, ApiServiceOptions options) {
  std::unique_ptr<ApiService> svc(
      new ApiService(store, authenticator, audit, clock, rng, std::move(options)));
  WARDEN_ASSIGN_OR_RETURN(svc->compiled_, CompileRoutes(Routes()));
  WARDEN_RETURN_IF_ERROR(svc->RefreshPolicy());
  return svc;
}

std::shared_ptr<const rbac::Policy> ApiService::policy() const {
  std::lock_guard lock(mu_);
  return policy_;
}

rbac::RoleDef ApiService::ToRoleDef(const store::Role& r) const {
  return rbac::RoleDef{r.id, r.name, r.tenant_id, r.permissions};
}

absl::Status ApiService::RefreshPolicy() {
  WARDEN_ASSIGN_OR_RETURN(auto roles, store_.ListRoles());
  WARDEN_ASSIGN_OR_RETURN(auto bindings, store_.ListBindings());
  std::vector<rbac::RoleDef> defs;
  for (const auto& r : roles) {
    if (!r.builtin) defs.push_back(ToRoleDef(r));
  }
  std::vector<rbac::BindingDef> bdefs;
  for (const auto& b : bindings) {
    bdefs.push_back({b.subject_kind, b.subject_id, b.role_id, b.scope_tenant_id});
  }
  WARDEN_ASSIGN_OR_RETURN(auto compiled, rbac::Compile(defs, bdefs));
  std::lock_guard lock(mu_);
  policy_ = std::move(compiled);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> ApiService::Bootstrap(const std::string& admin_name,
                                                                 const std::string& password) {
  // The built-in roles live in the store too, so bindings can refer to them by id.
  for (const rbac::RoleDef& def : rbac::BuiltinRoles()) {
    auto existing = store_.GetRole(def.id);
    if (existing.ok()) continue;
    if (existing.status().code() != absl::StatusCode::kNotFound) return existing.status();
    WARDEN_RETURN_IF_ERROR(store_.CreateRole(store::Role{def.id, def.name, "", def.permissions,
                                                         true, clock_.NowUnix()}));
  }
  WARDEN_ASSIGN_OR_RETURN(auto users, store_.ListUsers(std::nullopt));
  if (!users.empty()) {
    WARDEN_RETURN_IF_ERROR(RefreshPolicy());
    return std::optional<std::string>();
  }
  std::string pw = password;
  if (pw.empty()) pw = common::Base64UrlEncode(rng_.Bytes(18));
  WARDEN_ASSIGN_OR_RETURN(std::string hash, auth_.HashNewPassword(pw));
  store::User admin{common::NewId(rng_, "usr"), admin_name, "", hash, false, clock_.NowUnix()};
  WARDEN_RETURN_IF_ERROR(store_.InTransaction([&]() -> absl::Status {
    WARDEN_RETURN_IF_ERROR(store_.CreateUser(admin));
    return store_.CreateBinding(store::Binding{common::NewId(rng_, "bnd"), "user", admin.id,
                                               std::string(rbac::kAdminRole), "",
                                               clock_.NowUnix()});
  }));
  WARDEN_RETURN_IF_ERROR(RefreshPolicy());
  return std::optional<std::string>(pw);
}

rbac::Grants ApiService::GrantsOf(const rbac::Policy& policy, const auth::Identity& id) const {
  rbac::Grants user = policy.GrantsFor(rbac::SubjectKind::kUser, id.user_id);
  if (id.kind != auth::Identity::Kind::kApiToken) return user;  // sessions, IdP tokens
  // A token acts with its own binding, never beyond what its owner holds right now.
  return rbac::Intersect(policy.GrantsFor(rbac::SubjectKind::kToken, id.token_id), user);
}

void ApiService::CacheTenant(const store::Tenant& t) {
  tenants_[t.id] = t;
  tenant_ids_[t.name] = t.id;
}

void ApiService::ForgetCachedTenants() {
  std::lock_guard lock(mu_);
  tenants_.clear();
  tenant_ids_.clear();
}

std::string ApiService::TenantNameOf(const std::string& tenant_id) {
  if (tenant_id.empty()) return "";
  {
    std::lock_guard lock(mu_);
    if (auto it = tenants_.find(tenant_id); it != tenants_.end()) return it->second.name;
  }
  auto t = store_.GetTenant(tenant_id);
  if (!t.ok()) return tenant_id;
  std::lock_guard lock(mu_);
  CacheTenant(*t);
  return t->name;
}

absl::Status ApiService::ResolveTenant(Call& c) {
  const std::string& name = c.req.params["tenant"];
  c.tenant_name = name;
  {
    std::lock_guard lock(mu_);
    if (auto it = tenant_ids_.find(name); it != tenant_ids_.end()) c.tenant_id = it->second;
  }
  if (c.tenant_id.empty()) {
    auto t = store_.GetTenantByName(name);
    if (t.ok()) {
      c.tenant_id = t->id;
      std::lock_guard lock(mu_);
      CacheTenant(*t);
    } else if (t.status().code() != absl::StatusCode::kNotFound) {
      return t.status();
    }
  }
  return absl::OkStatus();
}

ApiResponse ApiService::Handle(const RouteSpec& route, ApiRequest& req) {
  Call c{req};
  const CompiledRoute& cr = compiled_.at(&route);
  bool tenant_missing = false;
  auto run = [&]() -> absl::StatusOr<Json> {
    c.policy = policy();
    if (!cr.is_public) {
      WARDEN_ASSIGN_OR_RETURN(std::string token, BearerToken(req.authorization));
      WARDEN_ASSIGN_OR_RETURN(auth::Identity id, AuthenticateCaller(token));
      c.policy = policy();  // again: an SSO bearer token may just have refreshed its bindings
      c.grants = GrantsOf(*c.policy, id);
      c.identity = std::move(id);
      // MFA policy: a user who must have MFA and has not enrolled can only enroll.
      WARDEN_RETURN_IF_ERROR(CheckMfaPolicy(route, c));
    }
    if (route.scope == Scope::kTenant ||
        (route.scope == Scope::kCluster && req.params.count("tenant"))) {
      WARDEN_RETURN_IF_ERROR(ResolveTenant(c));
      tenant_missing = c.tenant_id.empty();
      if (route.scope == Scope::kTenant) {
        // An unknown tenant interns as "unlisted": only cluster-scope grants apply, so callers
        // without cluster rights get 403 whether or not the tenant exists (no existence oracle).
        c.tenant_ref = c.policy->TenantIndex(tenant_missing ? "\x01unknown" : c.tenant_id);
      }
    }
    if (cr.permission) {
      bool allowed = false;
      switch (route.scope) {
        case Scope::kCluster:
          allowed = c.grants.Allows(*cr.permission, rbac::TenantRef::Cluster());
          break;
        case Scope::kTenant:
          allowed = c.grants.Allows(*cr.permission, c.tenant_ref);
          break;
        case Scope::kAny:
          allowed = c.grants.cluster().Contains(*cr.permission);
          for (const auto& t : c.grants.tenants()) allowed = allowed || t.mask.Contains(*cr.permission);
          break;
      }
      // Another tenant's principal reading through an accepted share (vault_share_routes.cc).
      if (!allowed && (route.flags & kRouteSharedRead) != 0 && !tenant_missing) {
        allowed = SharedReadAllowed(c, *cr.permission);
      }
      if (!allowed) {
        return absl::PermissionDeniedError(
            StrCat("permission \"", route.permission, "\" is required at ",
                   route.scope == Scope::kTenant ? ScopeName(c.tenant_name) : "cluster scope"));
      }
    }
    if (tenant_missing) {
      return absl::NotFoundError(StrCat("tenant \"", c.tenant_name, "\" not found"));
    }
    // Fail closed: nothing is served while the audit log cannot record it.
    if (!audit_.Healthy()) {
      return absl::UnavailableError("audit log unavailable; request refused");
    }
    // Step-up (kRouteStepUp), after authorization so a caller without the permission learns
    // nothing about MFA, and before any work.
    if ((route.flags & kRouteStepUp) != 0 && c.identity) {
      WARDEN_RETURN_IF_ERROR(CheckStepUp(c));
    }
    if (route.handler == nullptr) {  // /metrics
      c.raw_body = options_.render_metrics ? options_.render_metrics() : std::string();
      c.content_type = "text/plain; version=0.0.4; charset=utf-8";
      return Json();
    }
    return (this->*route.handler)(c);
  };
  absl::StatusOr<Json> result = run();
  if (!result.ok()) result = WithTenantName(result.status(), c.tenant_id, c.tenant_name);

  ApiResponse resp;
  std::string reason;
  if (result.ok()) {
    resp.status = route.ok_status;
    if (c.body_source) {
      resp.body_source = std::move(c.body_source);
      resp.content_length = c.content_length;
      resp.content_type = c.content_type;
    } else if (c.raw_body) {
      resp.body = std::move(*c.raw_body);
      resp.content_type = c.content_type;
    } else {
      // Names and paths come from clients: replace invalid UTF-8 rather than throw.
      resp.body = result->is_null() ? "{}"
                                    : result->dump(-1, ' ', false, Json::error_handler_t::replace);
    }
  } else {
    resp.status = http::HttpStatusFor(result.status().code());
    resp.body = http::Response::Error(result.status()).body;
    reason = Msg(result.status());
  }
  resp.headers = std::move(c.response_headers);
  const char* action = route.action ? route.action : route.permission;
  Audit(c, action, resp.status, reason, !AuditsWithoutWaiting(c.req.method, &route));
  if (!audit_.Healthy() && resp.status != 503) {
    absl::Status s = absl::UnavailableError("audit log unavailable; request refused");
    resp.status = 503;
    resp.body = http::Response::Error(s).body;
    resp.content_type = "application/json";
    resp.body_source = nullptr;
  }
  return resp;
}

ApiResponse ApiService::HandleUnmatched(ApiRequest& req, int status, const std::string& message,
                                        const char* action) {
  Call c{req};
  ApiResponse resp;
  resp.status = status;
  absl::StatusCode code = status == 405   ? absl::StatusCode::kUnimplemented
                         : status == 404 ? absl::StatusCode::kNotFound
                                         : absl::StatusCode::kInvalidArgument;  // 400, 413, 431
  resp.body = http::Response::Error(status, code, message).body;
  // Who asked is recorded when the token is valid; an invalid one is not an error here.
  if (auto token = BearerToken(req.authorization); token.ok()) {
    if (auto id = auth_.Authenticate(*token); id.ok()) c.identity = *id;
  }
  // HTTP-layer rejections are refused whatever the log does: they do not wait for the disk (a
  // flood of them must not hold the event loops that call on_reject in fdatasync).
  const bool wait = std::string_view(action) != "http:rejected" &&
                    !AuditsWithoutWaiting(c.req.method, nullptr);
  Audit(c, action, status, message, wait);
  if (!audit_.Healthy()) {
    resp.status = 503;
    resp.body = http::Response::Error(absl::UnavailableError("audit log unavailable; request refused")).body;
  }
  return resp;
}

bool ApiService::AuditsWithoutWaiting(std::string_view method, const RouteSpec* route) const {
  if (method != "GET" || options_.durable_reads) return false;
  return route == nullptr || (route->flags & kRouteDurableRead) == 0;
}

void ApiService::Audit(const Call& c, const char* action, int status, const std::string& reason,
                       bool wait) {
  audit::AuditEvent e;
  e.request_id = c.req.request_id;
  if (c.identity) {
    e.actor_kind = c.identity->kind == auth::Identity::Kind::kSession    ? "user"
                   : c.identity->kind == auth::Identity::Kind::kIdpToken ? "idp-token"
                                                                          : "token";
    e.actor_id = c.identity->user_id;
    e.actor_name = c.identity->user_name;
    e.token_id = c.identity->token_id;
  } else {
    e.actor_kind = "anonymous";
    e.actor_name = c.actor_name;
  }
  e.tenant = c.tenant_name;
  e.action = action ? action : "";
  e.method = c.req.method;
  e.resource = c.req.path;
  // Refused at the HTTP layer counts as denied too: the request was not served.
  e.decision = (status == 401 || status == 403 || e.action == "http:rejected") ? "deny" : "allow";
  e.reason = reason.substr(0, 256);
  // Data access: what the data policies decided (document and statement), and the bytes moved.
  if (!c.data_decision.empty()) {
    e.reason = (reason.empty() ? c.data_decision : StrCat(reason, " | ", c.data_decision)).substr(0, 512);
  }
  e.bytes = c.bytes;
  e.status = status;
  e.source = c.req.source;
  // A failure flips Healthy(); Handle turns the response into 503. Events that need not wait
  // (AuditsWithoutWaiting, HTTP-layer rejections) are queued before the response is sent.
  if (!wait) {
    audit_.AppendNoWait(std::move(e));
  } else {
    (void)audit_.Append(std::move(e));
  }
}

// ----------------------------------------------------------------------------------------------
// Handlers

absl::StatusOr<Json> ApiService::Version(Call&) {
  return Json{{"version", options_.version}, {"api", "v1"}};
}

absl::StatusOr<Json> ApiService::Login(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(api::LoginRequest r, api::DecodeLogin(c.req.body));
  c.actor_name = r.user;
  // The session id is always minted here; nothing the client sent (an Authorization header, a
  // cookie) is ever adopted as the new session (fixation defence).
  WARDEN_ASSIGN_OR_RETURN(auth::LoginResult res,
                          auth_.Login(auth::LoginAttempt{r.user, r.password, r.otp, c.req.source}));
  auth::Identity id;
  id.user_id = res.user.id;
  id.user_name = res.user.name;
  id.home_tenant_id = res.user.tenant_id;
  c.identity = id;
  const bool mfa = res.mfa;
  const bool must_enroll =
      !mfa && NeedsMfa(c.policy->GrantsFor(rbac::SubjectKind::kUser, res.user.id), res.user.tenant_id);
  return Json{{"token", res.token},
              {"expires_at", res.expires_at},
              {"mfa", mfa},
              {"mfa_enrollment_required", must_enroll},
              {"user", UserJson(res.user)}};
}

absl::StatusOr<Json> ApiService::Logout(Call& c) {
  if (c.identity->kind != auth::Identity::Kind::kSession) {
    return absl::InvalidArgumentError("API tokens are revoked, not logged out");
  }
  WARDEN_ASSIGN_OR_RETURN(std::string token, BearerToken(c.req.authorization));
  WARDEN_RETURN_IF_ERROR(auth_.Logout(token));
  return Json{{"logged_out", true}};
}

absl::StatusOr<Json> ApiService::ChangePassword(Call& c) {
  if (c.identity->kind != auth::Identity::Kind::kSession) {
    return absl::PermissionDeniedError("log in as the user to change their password");
  }
  WARDEN_ASSIGN_OR_RETURN(api::ChangePasswordRequest r, api::DecodeChangePassword(c.req.body));
  // Proving the current password goes through VerifyPassword: the same timing and throttling as
  // any login guess, and no session is opened.
  absl::Status proof =
      auth_.VerifyPassword(c.identity->user_name, r.current_password, c.req.source);
  if (!proof.ok()) {
    if (proof.code() == absl::StatusCode::kUnauthenticated) {
      return absl::PermissionDeniedError("current password is wrong");
    }
    return proof;
  }
  // Every other session of the user ends; this one stays.
  WARDEN_RETURN_IF_ERROR(
      auth_.SetPassword(c.identity->user_id, r.new_password, c.identity->session_hash));
  return Json{{"changed", true}};
}

absl::StatusOr<Json> ApiService::WhoAmI(Call& c) {
  const auth::Identity& id = *c.identity;
  Json bindings = Json::array();
  WARDEN_ASSIGN_OR_RETURN(auto all, store_.ListBindings());
  for (const auto& b : all) {
    bool mine = (b.subject_kind == "user" && b.subject_id == id.user_id) ||
                (b.subject_kind == "token" && b.subject_id == id.token_id);
    if (!mine) continue;
    auto role = store_.GetRole(b.role_id);
    bindings.push_back({{"subject", b.subject_kind},
                        {"role", role.ok() ? role->name : b.role_id},
                        {"scope", b.scope_tenant_id.empty() ? "cluster"
                                                            : TenantNameOf(b.scope_tenant_id)}});
  }
  Json out{{"user", id.user_name},
           {"user_id", id.user_id},
           {"tenant", TenantNameOf(id.home_tenant_id)},
           {"kind", id.kind == auth::Identity::Kind::kSession    ? "session"
                    : id.kind == auth::Identity::Kind::kIdpToken ? "idp-token"
                                                                  : "token"},
           {"expires_at", id.expires_at},
           {"mfa", id.mfa},
           {"mfa_at", id.mfa_at},
           {"bindings", bindings}};
  if (id.kind == auth::Identity::Kind::kApiToken) out["token_id"] = id.token_id;
  return out;
}

absl::StatusOr<Json> ApiService::ListTenants(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(auto tenants, store_.ListTenants());
  Json items = Json::array();
  const rbac::Permission read = P(R::kTenants, V::kRead);
  for (const auto& t : tenants) {
    if (!c.grants.Allows(read, c.policy->TenantIndex(t.id))) continue;
    items.push_back({{"id", t.id}, {"name", t.name}, {"created_at", t.created_at}});
  }
  return Json{{"items", items}};
}

absl::StatusOr<Json> ApiService::CreateTenant(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(api::CreateTenantRequest r, api::DecodeCreateTenant(c.req.body));
  store::Tenant t{common::NewId(rng_, "ten"), r.name, clock_.NowUnix()};
  WARDEN_RETURN_IF_ERROR(store_.CreateTenant(t));
  c.tenant_name = t.name;
  {
    std::lock_guard lock(mu_);
    CacheTenant(t);
  }
  return Json{{"id", t.id}, {"name", t.name}, {"created_at", t.created_at}};
}

absl::StatusOr<Json> ApiService::GetTenant(Call& c) {
  store::Tenant t;
  {
    std::lock_guard lock(mu_);
    if (auto it = tenants_.find(c.tenant_id); it != tenants_.end()) t = it->second;
  }
  if (t.id.empty()) {
    WARDEN_ASSIGN_OR_RETURN(t, store_.GetTenant(c.tenant_id));
  }
  return Json{{"id", t.id}, {"name", t.name}, {"created_at", t.created_at}};
}

absl::StatusOr<Json> ApiService::DeleteTenant(Call& c) {
  WARDEN_RETURN_IF_ERROR(store_.DeleteTenant(c.tenant_id));
  WARDEN_RETURN_IF_ERROR(ShredTenantData(c, c.tenant_id));  // vault_routes.cc
  {
    std::lock_guard lock(mu_);
    tenants_.erase(c.tenant_id);
    tenant_ids_.erase(c.tenant_name);
  }
  WARDEN_RETURN_IF_ERROR(RefreshPolicy());
  return Json{{"deleted", c.tenant_name}};
}

Json ApiService::UserJson(const store::User& u) {
  return Json{{"id", u.id},
              {"name", u.name},
              {"tenant", TenantNameOf(u.tenant_id)},
              {"disabled", u.disabled},
              {"created_at", u.created_at}};
}

absl::StatusOr<Json> ApiService::ListUsers(Call& c) {
  std::optional<std::string> filter;
  if (!c.tenant_id.empty()) filter = c.tenant_id;
  WARDEN_ASSIGN_OR_RETURN(auto users, store_.ListUsers(filter));
  Json items = Json::array();
  for (const auto& u : users) items.push_back(UserJson(u));
  return Json{{"items", items}};
}

absl::StatusOr<store::Role> ApiService::RoleByName(Call& c, const std::string& name) {
  // A tenant's own roles shadow nothing: names are checked against built-ins at creation.
  if (!c.tenant_id.empty()) {
    auto own = store_.GetRoleByName(c.tenant_id, name);
    if (own.ok() || own.status().code() != absl::StatusCode::kNotFound) return own;
  }
  auto role = store_.GetRoleByName("", name);
  if (!role.ok() && role.status().code() == absl::StatusCode::kNotFound) {
    return absl::NotFoundError(StrCat("role \"", name, "\" not found at ", ScopeName(c.tenant_name)));
  }
  return role;
}

// The rights a caller may hand out at the call's scope: its grants there.
static rbac::PermissionSet HeldAt(const Call& c) {
  return c.tenant_id.empty() ? c.grants.cluster() : c.grants.At(c.tenant_ref);
}

absl::StatusOr<Json> ApiService::CreateUser(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(api::CreateUserRequest r, api::DecodeCreateUser(c.req.body));
  std::optional<store::Role> role;
  if (!r.role.empty()) {
    WARDEN_ASSIGN_OR_RETURN(role, RoleByName(c, r.role));
    WARDEN_RETURN_IF_ERROR(c.policy->CheckCanBind(c.grants, ToRoleDef(*role), c.tenant_id));
  }
  WARDEN_ASSIGN_OR_RETURN(std::string hash, auth_.HashNewPassword(r.password));
  store::User u{common::NewId(rng_, "usr"), r.name, c.tenant_id, hash, false, clock_.NowUnix()};
  WARDEN_RETURN_IF_ERROR(store_.InTransaction([&]() -> absl::Status {
    WARDEN_RETURN_IF_ERROR(store_.CreateUser(u));
    if (!role) return absl::OkStatus();
    return store_.CreateBinding(store::Binding{common::NewId(rng_, "bnd"), "user", u.id, role->id,
                                               c.tenant_id, clock_.NowUnix()});
  }));
  if (role) WARDEN_RETURN_IF_ERROR(RefreshPolicy());
  Json out = UserJson(u);
  if (role) out["role"] = role->name;
  return out;
}

absl::StatusOr<store::User> ApiService::UserInScope(Call& c, const std::string& name) {
  auto u = store_.GetUserByName(name);
  // A user of another tenant is "not found" from inside this tenant.
  if (!u.ok() || (!c.tenant_id.empty() && u->tenant_id != c.tenant_id)) {
    if (u.ok() || u.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(StrCat("user \"", name, "\" not found at ", ScopeName(c.tenant_name)));
    }
    return u.status();
  }
  return u;
}

absl::StatusOr<Json> ApiService::DisableUser(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(store::User u, UserInScope(c, c.req.params["user"]));
  if (c.identity && u.id == c.identity->user_id) {
    return absl::FailedPreconditionError("you cannot disable your own account");
  }
  // Disabling someone who holds rights the caller lacks would be a way to attack a superior.
  rbac::Grants target = c.policy->GrantsFor(rbac::SubjectKind::kUser, u.id);
  std::string missing = FirstMissing(target.cluster(), c.grants.cluster());
  if (!missing.empty()) {
    return absl::PermissionDeniedError(
        StrCat("cannot disable \"", u.name, "\": they hold \"", missing, "\" at cluster scope and you do not"));
  }
  WARDEN_RETURN_IF_ERROR(auth_.DisableUser(u.id));
  u.disabled = true;
  return UserJson(u);
}

absl::StatusOr<Json> ApiService::EnableUser(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(store::User u, UserInScope(c, c.req.params["user"]));
  WARDEN_RETURN_IF_ERROR(auth_.EnableUser(u.id));
  u.disabled = false;
  return UserJson(u);
}

Json ApiService::RoleJson(const store::Role& r) {
  return Json{{"id", r.id},
              {"name", r.name},
              {"tenant", TenantNameOf(r.tenant_id)},
              {"permissions", r.permissions},
              {"builtin", r.builtin}};
}

absl::StatusOr<Json> ApiService::ListRoles(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(auto roles, store_.ListRoles());
  Json items = Json::array();
  for (const auto& r : roles) {
    if (!c.tenant_id.empty() && !r.tenant_id.empty() && r.tenant_id != c.tenant_id) continue;
    items.push_back(RoleJson(r));
  }
  return Json{{"items", items}};
}

absl::StatusOr<Json> ApiService::CreateRole(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(api::CreateRoleRequest r, api::DecodeCreateRole(c.req.body));
  if (rbac::IsBuiltinRole(r.name)) {
    return absl::AlreadyExistsError(StrCat("role \"", r.name, "\" is a built-in role"));
  }
  WARDEN_ASSIGN_OR_RETURN(rbac::PermissionSet perms, rbac::ParsePermissionSet(r.permissions));
  WARDEN_RETURN_IF_ERROR(c.policy->CheckCanCreateRole(c.grants, perms, c.tenant_id));
  store::Role role{common::NewId(rng_, "rol"), r.name, c.tenant_id, perms.ToStrings(), false,
                   clock_.NowUnix()};
  WARDEN_RETURN_IF_ERROR(store_.CreateRole(role));
  WARDEN_RETURN_IF_ERROR(RefreshPolicy());
  return RoleJson(role);
}

absl::StatusOr<Json> ApiService::DeleteRole(Call& c) {
  const std::string& name = c.req.params["role"];
  auto role = store_.GetRoleByName(c.tenant_id, name);
  if (!role.ok()) {
    if (role.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(StrCat("role \"", name, "\" not found at ", ScopeName(c.tenant_name)));
    }
    return role.status();
  }
  if (role->builtin) return absl::FailedPreconditionError("built-in roles cannot be deleted");
  WARDEN_RETURN_IF_ERROR(store_.DeleteRole(role->id));
  WARDEN_RETURN_IF_ERROR(RefreshPolicy());
  return Json{{"deleted", name}};
}

absl::StatusOr<Json> ApiService::ListBindings(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(auto bindings, store_.ListBindings());
  Json items = Json::array();
  for (const auto& b : bindings) {
    if (!c.tenant_id.empty() && b.scope_tenant_id != c.tenant_id) continue;
    std::string subject = b.subject_id;
    if (b.subject_kind == "user") {
      if (auto u = store_.GetUser(b.subject_id); u.ok()) subject = u->name;
    }
    auto role = store_.GetRole(b.role_id);
    items.push_back({{"id", b.id},
                     {"subject_kind", b.subject_kind},
                     {"subject", subject},
                     {"role", role.ok() ? role->name : b.role_id},
                     {"scope", b.scope_tenant_id.empty() ? "cluster" : TenantNameOf(b.scope_tenant_id)},
                     {"created_at", b.created_at}});
  }
  return Json{{"items", items}};
}

absl::StatusOr<Json> ApiService::CreateBinding(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(api::CreateBindingRequest r, api::DecodeCreateBinding(c.req.body));
  WARDEN_ASSIGN_OR_RETURN(store::Role role, RoleByName(c, r.role));
  WARDEN_RETURN_IF_ERROR(c.policy->CheckCanBind(c.grants, ToRoleDef(role), c.tenant_id));
  std::string subject_id;
  if (r.subject_kind == "user") {
    auto u = store_.GetUserByName(r.subject);
    if (!u.ok()) {
      if (u.status().code() == absl::StatusCode::kNotFound) {
        return absl::NotFoundError(StrCat("user \"", r.subject, "\" not found"));
      }
      return u.status();
    }
    // Tenant admins grant rights in their tenant to their own tenant's users only; bringing in
    // an outsider takes cluster rights.
    if (!c.tenant_id.empty() && u->tenant_id != c.tenant_id &&
        !c.grants.cluster().Contains(P(R::kBindings, V::kCreate))) {
      return absl::NotFoundError(StrCat("user \"", r.subject, "\" not found at ", ScopeName(c.tenant_name)));
    }
    subject_id = u->id;
  } else {
    WARDEN_ASSIGN_OR_RETURN(store::ApiToken t, store_.GetToken(r.subject));
    if (t.tenant_id != c.tenant_id) {
      return absl::NotFoundError(StrCat("token \"", r.subject, "\" not found at ", ScopeName(c.tenant_name)));
    }
    subject_id = t.id;
  }
  store::Binding b{common::NewId(rng_, "bnd"), r.subject_kind, subject_id, role.id, c.tenant_id,
                   clock_.NowUnix()};
  WARDEN_RETURN_IF_ERROR(store_.CreateBinding(b));
  WARDEN_RETURN_IF_ERROR(RefreshPolicy());
  return Json{{"id", b.id},
              {"subject_kind", b.subject_kind},
              {"subject", r.subject},
              {"role", role.name},
              {"scope", c.tenant_id.empty() ? "cluster" : c.tenant_name}};
}

absl::StatusOr<Json> ApiService::DeleteBinding(Call& c) {
  const std::string& id = c.req.params["binding"];
  WARDEN_ASSIGN_OR_RETURN(auto bindings, store_.ListBindings());
  auto it = std::find_if(bindings.begin(), bindings.end(), [&](const store::Binding& b) {
    return b.id == id && b.scope_tenant_id == c.tenant_id;
  });
  if (it == bindings.end()) {
    return absl::NotFoundError(StrCat("binding \"", id, "\" not found at ", ScopeName(c.tenant_name)));
  }
  WARDEN_ASSIGN_OR_RETURN(store::Role role, store_.GetRole(it->role_id));
  // Removing a grant needs the same standing as giving it.
  WARDEN_RETURN_IF_ERROR(c.policy->CheckCanBind(c.grants, ToRoleDef(role), c.tenant_id));
  if (role.id == rbac::kAdminRole && it->scope_tenant_id.empty() && it->subject_kind == "user") {
    int admins = 0;
    for (const auto& b : bindings) {
      admins += b.role_id == role.id && b.scope_tenant_id.empty() && b.subject_kind == "user";
    }
    if (admins <= 1) return absl::FailedPreconditionError("cannot remove the last cluster admin");
  }
  WARDEN_RETURN_IF_ERROR(store_.DeleteBinding(id));
  WARDEN_RETURN_IF_ERROR(RefreshPolicy());
  return Json{{"deleted", id}};
}

absl::StatusOr<Json> ApiService::ListTokens(Call& c) {
  std::optional<std::string> tenant = c.tenant_id;
  WARDEN_ASSIGN_OR_RETURN(auto tokens, store_.ListTokens(tenant, std::nullopt));
  bool manage = c.grants.Allows(P(R::kTokens, V::kManage),
                                c.tenant_id.empty() ? rbac::TenantRef::Cluster() : c.tenant_ref);
  Json items = Json::array();
  for (const auto& t : tokens) {
    if (!manage && t.user_id != c.identity->user_id) continue;  // only your own
    std::string owner = t.user_id;
    if (auto u = store_.GetUser(t.user_id); u.ok()) owner = u->name;
    auto role = store_.GetRole(t.role_id);
    items.push_back({{"id", t.id},
                     {"name", t.name},
                     {"user", owner},
                     {"tenant", TenantNameOf(t.tenant_id)},
                     {"role", role.ok() ? role->name : t.role_id},
                     {"created_at", t.created_at},
                     {"expires_at", t.expires_at},
                     {"revoked", t.revoked}});
  }
  return Json{{"items", items}};
}

absl::StatusOr<Json> ApiService::CreateToken(Call& c) {
  if (c.identity->kind != auth::Identity::Kind::kSession) {
    return absl::PermissionDeniedError("API tokens cannot create API tokens; log in as a user");
  }
  WARDEN_ASSIGN_OR_RETURN(api::CreateTokenRequest r, api::DecodeCreateToken(c.req.body));
  WARDEN_ASSIGN_OR_RETURN(store::Role role, RoleByName(c, r.role));
  if (role.id == rbac::kAdminRole && !c.tenant_id.empty()) {
    return absl::InvalidArgumentError("role \"admin\" can only be used at cluster scope");
  }
  WARDEN_ASSIGN_OR_RETURN(rbac::PermissionSet perms, rbac::ParsePermissionSet(role.permissions));
  // Escalation prevention: a token carries no permission its creator lacks at that scope.
  std::string missing = FirstMissing(perms, HeldAt(c));
  if (!missing.empty()) {
    return absl::PermissionDeniedError(StrCat("cannot grant \"", missing,
                                              "\": you do not hold it at ", ScopeName(c.tenant_name)));
  }
  auth::NewApiToken created;
  WARDEN_RETURN_IF_ERROR(store_.InTransaction([&]() -> absl::Status {
    WARDEN_ASSIGN_OR_RETURN(created, auth_.CreateApiToken(c.identity->user_id, r.name, c.tenant_id,
                                                          role.id, r.ttl));
    return store_.CreateBinding(store::Binding{common::NewId(rng_, "bnd"), "token",
                                               created.token.id, role.id, c.tenant_id,
                                               clock_.NowUnix()});
  }));
  WARDEN_RETURN_IF_ERROR(RefreshPolicy());
  return Json{{"id", created.token.id},
              {"secret", created.secret},
              {"name", created.token.name},
              {"role", role.name},
              {"tenant", c.tenant_name},
              {"expires_at", created.token.expires_at}};
}

absl::StatusOr<Json> ApiService::RevokeToken(Call& c) {
  const std::string& id = c.req.params["token"];
  auto t = store_.GetToken(id);
  if (!t.ok() || t->tenant_id != c.tenant_id) {
    if (t.ok() || t.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(StrCat("token \"", id, "\" not found at ", ScopeName(c.tenant_name)));
    }
    return t.status();
  }
  bool manage = c.grants.Allows(P(R::kTokens, V::kManage),
                                c.tenant_id.empty() ? rbac::TenantRef::Cluster() : c.tenant_ref);
  if (t->user_id != c.identity->user_id && !manage) {
    return absl::PermissionDeniedError("revoking another user's token needs \"tokens:manage\"");
  }
  WARDEN_RETURN_IF_ERROR(auth_.RevokeApiToken(id));
  return Json{{"revoked", id}};
}

absl::StatusOr<Json> ApiService::ListAudit(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(auto events, audit::ReadAuditEvents(options_.audit_dir));
  int64_t limit = 100;
  if (auto it = c.req.query.find("limit"); it != c.req.query.end()) {
    char* end = nullptr;
    long long v = std::strtoll(it->second.c_str(), &end, 10);
    if (end == it->second.c_str() || *end != '\0' || v < 1 || v > 10000) {
      return absl::InvalidArgumentError("query parameter \"limit\" must be an integer in 1..10000");
    }
    limit = v;
  }
  auto filter = [&](const audit::AuditEvent& e) {
    if (!c.tenant_id.empty() && e.tenant != c.tenant_name) return false;
    for (const char* key : {"actor", "action", "decision"}) {
      auto it = c.req.query.find(key);
      if (it == c.req.query.end()) continue;
      const std::string& want = it->second;
      if (std::string_view(key) == "actor" && e.actor_name != want) return false;
      if (std::string_view(key) == "action" && e.action != want) return false;
      if (std::string_view(key) == "decision" && e.decision != want) return false;
    }
    return true;
  };
  std::vector<const audit::AuditEvent*> matched;
  for (const auto& e : events) {
    if (filter(e)) matched.push_back(&e);
  }
  size_t start = matched.size() > static_cast<size_t>(limit) ? matched.size() - limit : 0;
  Json items = Json::array();
  for (size_t i = start; i < matched.size(); ++i) {
    items.push_back(Json::parse(audit::EncodeEvent(*matched[i])));
  }
  return Json{{"items", items}, {"total", matched.size()}};
}

}  // namespace warden::server
