// MFA policy and the MFA / session routes of ApiService (issue 3). The route rows are in
// api_service.cc's table; the decisions are here:
//
// - Who must have MFA (options_.mfa): "all" users; users whose effective grants carry any
//   administrative permission (kAdminPermissions: changing who may do what, tenants, and the
//   fleet-wide manage verbs) when "admins"; every user of the tenants in all_users_in_tenants.
// - Such a caller without MFA (a password-only session, or an API token whose owner has no MFA)
//   gets 403 "MFA enrollment required" on every route not marked kRouteMfaExempt: a stolen
//   admin password alone never acts as admin.
// - Step-up (kRouteStepUp): a session whose last second-factor check is within step_up_window
//   passes; otherwise a code in X-Warden-OTP is checked for this request only (and spent), or
//   the caller steps up (POST /mfa/step-up, which rotates the session id). Users who have no MFA
//   and are not required to have one have nothing to step up with and pass.
#include <algorithm>

#include "api/api.h"
#include "common/status.h"
#include "common/strings.h"
#include "server/api_service.h"

namespace warden::server {
namespace {

using common::Json;
using common::StrCat;
using R = rbac::Resource;
using V = rbac::Verb;

constexpr rbac::PermissionSet AdminPermissions() {
  rbac::PermissionSet s;
  for (R r : {R::kUsers, R::kRoles, R::kBindings}) {
    for (V v : {V::kCreate, V::kUpdate, V::kDelete, V::kManage}) s.Add(rbac::Permission(r, v));
  }
  for (V v : {V::kCreate, V::kDelete, V::kManage}) s.Add(rbac::Permission(R::kTenants, v));
  for (R r : {R::kTokens, R::kKeys, R::kNodes, R::kPools, R::kPatches}) {
    s.Add(rbac::Permission(r, V::kManage));
  }
  return s;
}
constexpr rbac::PermissionSet kAdminPermissions = AdminPermissions();

// A wrong code on an authenticated route is a refusal of the action, not of the bearer token:
// 403, so clients do not think they were logged out.
absl::Status AsRefusal(absl::Status s) {
  if (absl::IsUnauthenticated(s)) return absl::PermissionDeniedError(std::string(s.message()));
  return s;
}

}  // namespace

bool ApiService::NeedsMfa(const rbac::Grants& grants, const std::string& home_tenant_id) {
  const common::MfaConfig& m = options_.mfa;
  if (m.required_for == "all") return true;
  if (!m.all_users_in_tenants.empty() && !home_tenant_id.empty()) {
    const std::string name = TenantNameOf(home_tenant_id);
    if (std::find(m.all_users_in_tenants.begin(), m.all_users_in_tenants.end(), name) !=
        m.all_users_in_tenants.end()) {
      return true;
    }
  }
  if (m.required_for != "admins") return false;
  if (!(grants.cluster() & kAdminPermissions).empty()) return true;
  for (const auto& t : grants.tenants()) {
    if (!(t.mask & kAdminPermissions).empty()) return true;
  }
  return false;
}

absl::Status ApiService::CheckMfaPolicy(const RouteSpec& route, Call& c) {
  const auth::Identity& id = *c.identity;
  if (id.mfa || (route.flags & kRouteMfaExempt) != 0) return absl::OkStatus();
  if (!NeedsMfa(c.grants, id.home_tenant_id)) return absl::OkStatus();
  if (id.kind == auth::Identity::Kind::kIdpToken) {
    return absl::PermissionDeniedError(
        "MFA required: this identity provider token does not assert a second factor (its amr "
        "has none of the provider's mfa_amr values) and your role bindings need one");
  }
  if (id.kind == auth::Identity::Kind::kApiToken) {
    return absl::PermissionDeniedError(
        "MFA enrollment required: this token carries administrative permissions and its owner "
        "has not enabled MFA");
  }
  return absl::PermissionDeniedError(
      "MFA enrollment required: your role bindings need a second factor; run `gpuwarden mfa "
      "enroll` (until then only MFA enrollment, whoami and logout are allowed); single sign-on "
      "users whose IdP did not assert MFA and who have enrolled run `gpuwarden mfa step-up`");
}

absl::Status ApiService::CheckStepUp(Call& c) {
  const auth::Identity& id = *c.identity;
  const int64_t window = absl::ToInt64Seconds(options_.mfa.step_up_window);
  if (id.kind == auth::Identity::Kind::kSession && id.mfa && id.mfa_at > 0 &&
      clock_.NowUnix() - id.mfa_at <= window) {
    return absl::OkStatus();
  }
  if (!c.req.otp.empty()) {
    WARDEN_ASSIGN_OR_RETURN(std::string code, api::ParseOtp("header X-Warden-OTP", c.req.otp));
    absl::Status s = auth_.CheckSecondFactor(id, code, c.req.source);
    if (!s.ok()) {
      return absl::Status(AsRefusal(s).code(),
                          StrCat("MFA step-up failed: ", std::string(s.message())));
    }
    return absl::OkStatus();
  }
  if (!id.mfa && !NeedsMfa(c.grants, id.home_tenant_id)) return absl::OkStatus();
  return absl::PermissionDeniedError(StrCat(
      "MFA step-up required: this action needs a second factor checked within the last ",
      window / 60, " minutes; run `gpuwarden mfa step-up` or send a code in X-Warden-OTP"));
}

absl::StatusOr<Json> ApiService::MfaStatus(Call& c) {
  const auth::Identity& id = *c.identity;
  WARDEN_ASSIGN_OR_RETURN(auth::MfaState st, auth_.GetMfaState(id.user_id));
  return Json{{"user", id.user_name},
              {"enrolled", st.enrolled},
              {"enabled", st.confirmed},
              {"confirmed_at", st.confirmed_at},
              {"recovery_codes_left", st.recovery_codes_left},
              {"required", NeedsMfa(c.grants, id.home_tenant_id)},
              {"session_mfa", id.mfa},
              {"session_mfa_at", id.mfa_at}};
}

absl::StatusOr<Json> ApiService::MfaEnroll(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(auth::MfaEnrollment e, auth_.MfaEnroll(*c.identity));
  return Json{{"secret", e.secret_base32},
              {"otpauth_uri", e.otpauth_uri},
              {"issuer", options_.mfa.issuer},
              {"account", c.identity->user_name},
              {"algorithm", "SHA1"},
              {"digits", 6},
              {"period", 30}};
}

absl::StatusOr<Json> ApiService::MfaConfirm(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(api::MfaCodeRequest r, api::DecodeMfaCode(c.req.body));
  auto confirmed = auth_.MfaConfirm(*c.identity, r.code, c.req.source);
  if (!confirmed.ok()) return AsRefusal(confirmed.status());
  return Json{{"enabled", true},
              {"recovery_codes", confirmed->recovery_codes},
              {"token", confirmed->session.token},
              {"expires_at", confirmed->session.expires_at}};
}

absl::StatusOr<Json> ApiService::MfaDisable(Call& c) {
  if (NeedsMfa(c.grants, c.identity->home_tenant_id)) {
    return absl::FailedPreconditionError(
        "MFA is required for your role bindings and cannot be turned off; if you lost your "
        "device, an admin can reset it (gpuwarden mfa reset USER)");
  }
  WARDEN_ASSIGN_OR_RETURN(api::MfaCodeRequest r, api::DecodeMfaCode(c.req.body));
  WARDEN_RETURN_IF_ERROR(AsRefusal(auth_.MfaDisable(*c.identity, r.code, c.req.source)));
  return Json{{"enabled", false}, {"logged_out", true}};
}

absl::StatusOr<Json> ApiService::MfaStepUp(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(api::MfaCodeRequest r, api::DecodeMfaCode(c.req.body));
  auto up = auth_.StepUp(*c.identity, r.code, c.req.source);
  if (!up.ok()) return AsRefusal(up.status());
  return Json{{"token", up->token}, {"expires_at", up->expires_at}, {"mfa_at", clock_.NowUnix()}};
}

absl::StatusOr<Json> ApiService::MfaReset(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(store::User u, UserInScope(c, c.req.params["user"]));
  // Resetting the second factor of someone who holds rights the caller lacks would let a lesser
  // admin take over a superior's account (with their password); refused like DisableUser.
  rbac::Grants target = c.policy->GrantsFor(rbac::SubjectKind::kUser, u.id);
  auto missing = (target.cluster() - c.grants.cluster()).ToStrings();
  if (!missing.empty()) {
    return absl::PermissionDeniedError(StrCat("cannot reset MFA of \"", u.name, "\": they hold \"",
                                              missing.front(),
                                              "\" at cluster scope and you do not"));
  }
  WARDEN_RETURN_IF_ERROR(auth_.MfaReset(u.id));
  return Json{{"reset", u.name}, {"sessions_ended", true}};
}

absl::StatusOr<Json> ApiService::LogoutAll(Call& c) {
  if (c.identity->kind != auth::Identity::Kind::kSession) {
    return absl::InvalidArgumentError("API tokens are revoked, not logged out");
  }
  WARDEN_RETURN_IF_ERROR(auth_.LogoutEverywhere(c.identity->user_id));
  return Json{{"logged_out", "everywhere"}};
}

}  // namespace warden::server
