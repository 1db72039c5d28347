// Single sign-on routes of ApiService (issue 3) and the bearer dispatch between our own secrets
// and IdP JWTs. The route rows are in api_service.cc's table; the flows live in SsoService.
//
// MFA for SSO users (docs/oidc.md "MFA"): a login or IdP token whose `amr` contains one of the
// provider's `mfa_amr` values (default mfa, otp, hwk) counts as a second factor, exactly like a
// password login with a TOTP code (session mfa = true, mfa_at = now). Anything else opens a
// session without MFA, so the MFA policy (mfa_routes.cc) refuses administrative routes until the
// user steps up with a local TOTP code (`gpuwarden mfa enroll` / `mfa step-up`). An SSO login
// never satisfies MFA-for-admins silently.
//
// Every SSO outcome is one audit event (the pipeline in ApiService::Handle) and is counted in
// warden_sso_total{flow,result}.
#include <optional>
#include <string>

#include "common/json.h"
#include "common/metrics.h"
#include "common/status.h"
#include "common/strings.h"
#include "server/api_service.h"
#include "server/sso_service.h"

namespace warden::server {
namespace {

using common::Json;
using common::StrCat;

constexpr char kBindingCookie[] = "gw_oidc";

// warden_sso_total{flow, result}: flow code|device|bearer; result ok, refused (the identity is
// not allowed: no mapped role, unverified e-mail, user denied), invalid (bad or foreign token,
// state, cookie) or error (IdP or store unavailable). Labels are fixed words only: provider
// names come from request paths and must not grow the series.
void Count(const char* flow, const absl::Status& s) {
  static auto& family = common::metrics::Registry::Default().AddCounter(
      "warden_sso_total", "Single sign-on logins and IdP bearer tokens, by flow and result",
      {"flow", "result"});
  const char* result =
      s.ok()                                                                            ? "ok"
      : absl::IsPermissionDenied(s)                                                     ? "refused"
      : absl::IsUnauthenticated(s) || absl::IsInvalidArgument(s) || absl::IsNotFound(s) ? "invalid"
                                                                                        : "error";
  family.WithLabels({flow, result}).Inc();
}

absl::Status NoSso(const std::string& provider) {
  return absl::NotFoundError(StrCat("no identity provider named \"", provider, "\" is configured"));
}

// The value of cookie `name` in a Cookie header ("a=1; b=2"), or "".
std::string CookieValue(const std::string& header, std::string_view name) {
  size_t pos = 0;
  while (pos < header.size()) {
    size_t end = header.find(';', pos);
    if (end == std::string::npos) end = header.size();
    std::string_view pair(header.data() + pos, end - pos);
    while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
    if (pair.size() > name.size() && pair.substr(0, name.size()) == name &&
        pair[name.size()] == '=') {
      return std::string(pair.substr(name.size() + 1));
    }
    pos = end + 1;
  }
  return "";
}

std::string CookiePath(const std::string& provider) {
  return StrCat("/api/v1/oidc/", provider, "/");
}

}  // namespace

absl::StatusOr<auth::Identity> ApiService::AuthenticateCaller(const std::string& token) {
  if (options_.sso == nullptr || !SsoService::LooksLikeJwt(token)) {
    return auth_.Authenticate(token);  // gws_/gwt_ secrets; anything else is "malformed token"
  }
  absl::StatusOr<SsoPrincipal> p = options_.sso->AuthenticateBearer(token);
  Count("bearer", p.status());
  const bool changed = options_.sso->TakePolicyChanged();
  if (changed || (p.ok() && p->bindings_changed)) WARDEN_RETURN_IF_ERROR(RefreshPolicy());
  if (!p.ok()) return p.status();
  auth::Identity id;
  id.kind = auth::Identity::Kind::kIdpToken;
  id.user_id = p->user.id;
  id.user_name = p->user.name;
  id.home_tenant_id = p->user.tenant_id;
  id.expires_at = p->expires_at;
  id.mfa = p->mfa;
  id.groups = p->identity.groups;  // `group:` principals in data policies
  return id;
}

absl::StatusOr<Json> ApiService::SsoSession(Call& c, const SsoPrincipal& p, const char* flow) {
  // The bindings this login just wrote must be in force before anything is authorized with them.
  const bool changed = options_.sso->TakePolicyChanged();
  if (changed || p.bindings_changed) WARDEN_RETURN_IF_ERROR(RefreshPolicy());
  absl::StatusOr<auth::LoginResult> res = auth_.OpenSession(p.user.id, p.mfa);
  Count(flow, res.status());
  if (!res.ok()) return res.status();
  auth::Identity id;
  id.user_id = res->user.id;
  id.user_name = res->user.name;
  id.home_tenant_id = res->user.tenant_id;
  c.identity = id;
  const bool needs =
      NeedsMfa(policy()->GrantsFor(rbac::SubjectKind::kUser, res->user.id), res->user.tenant_id);
  bool local_mfa = false;
  if (needs && !p.mfa) {
    WARDEN_ASSIGN_OR_RETURN(auth::MfaState st, auth_.GetMfaState(res->user.id));
    local_mfa = st.confirmed;
  }
  Json roles = Json::array();
  for (const auto& g : p.identity.grants) {
    roles.push_back({{"tenant", g.tenant}, {"role", g.role}});
  }
  return Json{{"status", "ok"},
              {"token", res->token},
              {"expires_at", res->expires_at},
              {"mfa", p.mfa},
              {"mfa_enrollment_required", needs && !p.mfa && !local_mfa},
              {"mfa_step_up_required", needs && !p.mfa && local_mfa},
              {"provider", p.identity.provider},
              {"subject", p.identity.subject},
              {"roles", roles},
              {"user", UserJson(res->user)}};
}

absl::StatusOr<Json> ApiService::SsoProviders(Call&) {
  Json items = Json::array();
  if (options_.sso != nullptr) {
    for (const auto& p : options_.sso->providers()) {
      items.push_back({{"name", p.name},
                       {"issuer", p.issuer},
                       {"browser_login", !p.redirect_uri.empty()},
                       {"login_url", StrCat("/api/v1/oidc/", p.name, "/login")},
                       {"device_login", StrCat("/api/v1/oidc/", p.name, "/device")},
                       {"bearer_tokens", !p.access_token_audiences.empty()}});
    }
  }
  return Json{{"items", items}};
}

absl::StatusOr<Json> ApiService::SsoLoginStart(Call& c) {
  const std::string& provider = c.req.params["provider"];
  if (options_.sso == nullptr) return NoSso(provider);
  WARDEN_ASSIGN_OR_RETURN(SsoService::BrowserLogin login,
                          options_.sso->BeginBrowserLogin(provider));
  c.response_headers.emplace_back("Location", login.redirect_url);
  // Binds the callback to this browser (login CSRF). HttpOnly: scripts never see it; Lax: it is
  // sent on the IdP's top-level redirect back to us; scoped to this provider's routes.
  c.response_headers.emplace_back(
      "Set-Cookie", StrCat(kBindingCookie, "=", login.binding, "; Path=", CookiePath(provider),
                           "; Max-Age=600; HttpOnly; Secure; SameSite=Lax"));
  c.response_headers.emplace_back("Cache-Control", "no-store");
  return Json{{"redirect", login.redirect_url}};
}

absl::StatusOr<Json> ApiService::SsoCallback(Call& c) {
  const std::string& provider = c.req.params["provider"];
  if (options_.sso == nullptr) return NoSso(provider);
  c.actor_name = StrCat("sso:", provider);
  c.response_headers.emplace_back("Set-Cookie",
                                  StrCat(kBindingCookie, "=; Path=", CookiePath(provider),
                                         "; Max-Age=0; HttpOnly; Secure; SameSite=Lax"));
  c.response_headers.emplace_back("Cache-Control", "no-store");
  absl::StatusOr<SsoPrincipal> p = options_.sso->FinishBrowserLogin(
      provider, c.req.raw_query, CookieValue(c.req.cookie, kBindingCookie));
  if (!p.ok()) {
    Count("code", p.status());
    if (options_.sso->TakePolicyChanged()) (void)RefreshPolicy();  // roles were withdrawn
    return p.status();
  }
  return SsoSession(c, *p, "code");
}

absl::StatusOr<Json> ApiService::SsoDeviceStart(Call& c) {
  const std::string& provider = c.req.params["provider"];
  if (options_.sso == nullptr) return NoSso(provider);
  WARDEN_ASSIGN_OR_RETURN(SsoService::DeviceLogin d, options_.sso->StartDeviceLogin(provider));
  return Json{{"handle", d.handle},
              {"user_code", d.user_code},
              {"verification_uri", d.verification_uri},
              {"verification_uri_complete", d.verification_uri_complete},
              {"interval", d.interval_s},
              {"expires_in", d.expires_in_s}};
}

absl::StatusOr<Json> ApiService::SsoDevicePoll(Call& c) {
  const std::string& provider = c.req.params["provider"];
  if (options_.sso == nullptr) return NoSso(provider);
  c.actor_name = StrCat("sso:", provider);
  absl::StatusOr<Json> body = common::ParseJsonStrict(c.req.body);
  if (!body.ok() || !body->is_object() || body->size() != 1 || !body->contains("handle") ||
      !(*body)["handle"].is_string() || (*body)["handle"].get<std::string>().size() > 128) {
    return absl::InvalidArgumentError("expected {\"handle\": \"...\"} from the device login start");
  }
  bool slow_down = false;
  absl::StatusOr<std::optional<SsoPrincipal>> p =
      options_.sso->PollDeviceLogin(provider, (*body)["handle"].get<std::string>(), &slow_down);
  if (!p.ok()) {
    Count("device", p.status());
    if (options_.sso->TakePolicyChanged()) (void)RefreshPolicy();
    return p.status();
  }
  if (!p->has_value()) return Json{{"status", slow_down ? "slow_down" : "pending"}};
  return SsoSession(c, **p, "device");
}

}  // namespace warden::server
