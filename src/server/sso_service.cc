// SsoService (sso_service.h). Threats and the answers here:
// - Login CSRF / session swapping: the callback must present the cookie value set when the same
//   browser started the login; the state is single-use and expires (login_ttl).
// - Account takeover through the IdP: identities are linked by (provider, subject) only, never by
//   a user name or e-mail the IdP asserts, and a JIT user never takes a name a local user holds.
// - Stale privileges: every login and every fresh bearer verification replaces the user's role
//   bindings with what the groups map to now; an identity that maps to nothing loses all of them
//   and its sessions.
// - IdP amplification: device polls faster than the IdP's interval are answered here without a
//   request to the IdP; unknown kids refresh the JWKS at most every 30 s (the library's rule).
#include "server/sso_service.h"

#include <algorithm>
#include <set>
#include <utility>

#include "auth/jose.h"
#include "common/encoding.h"
#include "common/ids.h"
#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::server {

using auth::oidc::MappedIdentity;
using auth::oidc::OidcProvider;
using auth::oidc::ProviderConfig;
using common::StrCat;

struct SsoService::Entry {
  const ProviderConfig* config = nullptr;
  std::mutex mu;  // serialises connecting; held during discovery (only this provider waits)
  std::unique_ptr<auth::oidc::OidcHttp> http;
  std::unique_ptr<OidcProvider> provider;
  absl::Time last_attempt = absl::InfinitePast();
  absl::Status last_error;
};

struct SsoService::PendingBrowser {
  std::string provider;
  auth::oidc::AuthorizationRequest request;
  std::string binding_hash;  // SHA-256 hex of the cookie value
  absl::Time expires;
};

struct SsoService::PendingDevice {
  std::string provider;
  auth::oidc::DeviceAuthorization device;
  absl::Time expires;
  absl::Time next_poll;
  bool polling = false;  // one poll at a time per handle
};

struct SsoService::CachedBearer {
  SsoPrincipal principal;
  absl::Time until;
};

namespace {

absl::Status UnknownProvider(const std::string& name) {
  return absl::NotFoundError(StrCat("no identity provider named \"", name, "\" is configured"));
}

template <typename Map>
void DropExpired(Map& m, absl::Time now) {
  for (auto it = m.begin(); it != m.end();) {
    it = it->second->expires <= now ? m.erase(it) : std::next(it);
  }
}

bool IsBase64UrlPart(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

}  // namespace

absl::StatusOr<std::unique_ptr<SsoService>> SsoService::Create(
    std::vector<ProviderConfig> providers, store::Store& store, common::Clock& clock,
    common::Rng& rng, SsoOptions options) {
  std::set<std::string> names;
  for (const ProviderConfig& p : providers) {
    if (!names.insert(p.name).second) {
      return absl::InvalidArgumentError(
          StrCat("two identity providers are named \"", p.name, "\""));
    }
  }
  if (!options.transport) {
    options.transport = [](const ProviderConfig& c) {
      return auth::oidc::NewHttpsTransport(c.ca_pem);
    };
  }
  return std::unique_ptr<SsoService>(
      new SsoService(std::move(providers), store, clock, rng, std::move(options)));
}

SsoService::SsoService(std::vector<ProviderConfig> configs, store::Store& store,
                       common::Clock& clock, common::Rng& rng, SsoOptions options)
    : configs_(std::move(configs)),
      store_(store),
      clock_(clock),
      rng_(rng),
      options_(std::move(options)) {
  for (const ProviderConfig& c : configs_) {
    auto e = std::make_unique<Entry>();
    e->config = &c;
    entries_.emplace(c.name, std::move(e));
  }
}

SsoService::~SsoService() = default;

absl::StatusOr<OidcProvider*> SsoService::Connected(const std::string& name) {
  auto it = entries_.find(name);
  if (it == entries_.end()) return UnknownProvider(name);
  Entry& e = *it->second;
  std::lock_guard lock(e.mu);
  if (e.provider) return e.provider.get();
  const absl::Time now = clock_.Now();
  if (now - e.last_attempt < options_.reconnect_interval) {
    return absl::UnavailableError(StrCat(
        "identity provider \"", name, "\" is unreachable: ", std::string(e.last_error.message())));
  }
  e.last_attempt = now;
  if (!e.http) e.http = options_.transport(*e.config);
  absl::StatusOr<std::unique_ptr<OidcProvider>> p =
      OidcProvider::Connect(*e.config, *e.http, clock_, rng_);
  if (!p.ok()) {
    e.last_error = p.status();
    return absl::UnavailableError(StrCat("identity provider \"", name,
                                         "\" is unreachable: ", std::string(p.status().message())));
  }
  e.provider = std::move(*p);
  return e.provider.get();
}

// ---- browser code flow ----

absl::StatusOr<SsoService::BrowserLogin> SsoService::BeginBrowserLogin(const std::string& name) {
  WARDEN_ASSIGN_OR_RETURN(OidcProvider * provider, Connected(name));
  if (provider->config().redirect_uri.empty()) {
    return absl::FailedPreconditionError(
        StrCat("identity provider \"", name, "\" has no redirect_uri: browser login is off"));
  }
  auto pending = std::make_unique<PendingBrowser>();
  pending->provider = name;
  pending->request = provider->BeginAuthorization();
  BrowserLogin out;
  out.redirect_url = pending->request.url;
  out.binding = common::Base64UrlEncode(rng_.Bytes(32));
  pending->binding_hash = common::Sha256Hex(out.binding);
  const absl::Time now = clock_.Now();
  pending->expires = now + options_.login_ttl;
  std::lock_guard lock(mu_);
  if (browser_.size() >= options_.max_pending) DropExpired(browser_, now);
  if (browser_.size() >= options_.max_pending) {
    return absl::ResourceExhaustedError("too many single sign-on logins in progress; try again");
  }
  const std::string state = pending->request.state;
  browser_[state] = std::move(pending);
  return out;
}

absl::StatusOr<SsoPrincipal> SsoService::FinishBrowserLogin(const std::string& name,
                                                            std::string_view raw_query,
                                                            std::string_view binding) {
  if (entries_.find(name) == entries_.end()) return UnknownProvider(name);
  WARDEN_ASSIGN_OR_RETURN(auto params, auth::oidc::ParseQuery(raw_query));
  std::string state;
  for (const auto& [k, v] : params) {
    if (k == "state") state = v;
  }
  if (state.empty()) return absl::UnauthenticatedError("callback without state");
  std::unique_ptr<PendingBrowser> pending;
  {
    std::lock_guard lock(mu_);
    auto it = browser_.find(state);
    if (it != browser_.end()) {
      pending = std::move(it->second);
      browser_.erase(it);  // single-use, whatever happens next
    }
  }
  if (!pending) {
    return absl::UnauthenticatedError("unknown or already used login state; start the login again");
  }
  if (clock_.Now() >= pending->expires) {
    return absl::UnauthenticatedError("the login took too long and expired; start it again");
  }
  if (pending->provider != name) {
    return absl::UnauthenticatedError("the login was started with another identity provider");
  }
  if (binding.empty() ||
      !common::ConstantTimeEquals(common::Sha256Hex(binding), pending->binding_hash)) {
    return absl::PermissionDeniedError(
        "this login was not started by this browser (its login cookie is missing or wrong)");
  }
  WARDEN_ASSIGN_OR_RETURN(OidcProvider * provider, Connected(name));
  absl::StatusOr<auth::oidc::LoginResult> login =
      provider->FinishAuthorization(pending->request, raw_query);
  if (!login.ok()) return Admit(name, login.status());
  return Admit(name, std::move(login->identity));
}

// ---- device flow ----

absl::StatusOr<SsoService::DeviceLogin> SsoService::StartDeviceLogin(const std::string& name) {
  WARDEN_ASSIGN_OR_RETURN(OidcProvider * provider, Connected(name));
  WARDEN_ASSIGN_OR_RETURN(auth::oidc::DeviceAuthorization device,
                          provider->StartDeviceAuthorization());
  auto pending = std::make_unique<PendingDevice>();
  pending->provider = name;
  const absl::Time now = clock_.Now();
  pending->expires = now + device.expires_in;
  pending->next_poll = now + device.interval;
  DeviceLogin out;
  out.handle = common::Base64UrlEncode(rng_.Bytes(32));
  out.user_code = device.user_code;
  out.verification_uri = device.verification_uri;
  out.verification_uri_complete = device.verification_uri_complete;
  out.interval_s = absl::ToInt64Seconds(device.interval);
  out.expires_in_s = absl::ToInt64Seconds(device.expires_in);
  pending->device = std::move(device);
  std::lock_guard lock(mu_);
  if (device_.size() >= options_.max_pending) DropExpired(device_, now);
  if (device_.size() >= options_.max_pending) {
    return absl::ResourceExhaustedError("too many single sign-on logins in progress; try again");
  }
  device_[common::Sha256Hex(out.handle)] = std::move(pending);
  return out;
}

absl::StatusOr<std::optional<SsoPrincipal>> SsoService::PollDeviceLogin(const std::string& name,
                                                                        const std::string& handle,
                                                                        bool* slow_down) {
  *slow_down = false;
  const std::string key = common::Sha256Hex(handle);
  const absl::Time now = clock_.Now();
  auth::oidc::DeviceAuthorization device;
  {
    std::lock_guard lock(mu_);
    auto it = device_.find(key);
    if (it == device_.end() || it->second->provider != name) {
      return absl::NotFoundError("unknown or finished device login; start it again");
    }
    PendingDevice& p = *it->second;
    if (now >= p.expires) {
      device_.erase(it);
      return absl::DeadlineExceededError("the device login expired before it was approved");
    }
    if (p.polling || now < p.next_poll) {
      // Polling faster than the interval is answered here: the IdP never sees it (RFC 8628 3.5).
      *slow_down = true;
      return std::optional<SsoPrincipal>();
    }
    p.polling = true;
    device = p.device;
  }
  WARDEN_ASSIGN_OR_RETURN(OidcProvider * provider, Connected(name));
  absl::StatusOr<auth::oidc::DevicePoll> poll = provider->PollDeviceToken(device);
  std::unique_lock lock(mu_);
  auto it = device_.find(key);
  if (it == device_.end()) return absl::NotFoundError("unknown or finished device login");
  PendingDevice& p = *it->second;
  p.polling = false;
  if (poll.ok() && poll->state != auth::oidc::DevicePoll::State::kDone) {
    if (poll->state == auth::oidc::DevicePoll::State::kSlowDown) {
      p.device.interval += absl::Seconds(5);  // RFC 8628 3.5
      *slow_down = true;
    }
    p.next_poll = clock_.Now() + p.device.interval;
    return std::optional<SsoPrincipal>();
  }
  device_.erase(it);  // approved, denied, expired or refused: the handle is spent
  lock.unlock();
  absl::StatusOr<SsoPrincipal> admitted =
      poll.ok() ? Admit(name, std::move(poll->result.identity)) : Admit(name, poll.status());
  if (!admitted.ok()) return admitted.status();
  return std::optional<SsoPrincipal>(std::move(*admitted));
}

// ---- bearer JWT access tokens ----

bool SsoService::LooksLikeJwt(std::string_view token) {
  size_t a = token.find('.');
  if (a == std::string_view::npos) return false;
  size_t b = token.find('.', a + 1);
  if (b == std::string_view::npos || token.find('.', b + 1) != std::string_view::npos) return false;
  return IsBase64UrlPart(token.substr(0, a)) && IsBase64UrlPart(token.substr(a + 1, b - a - 1)) &&
         IsBase64UrlPart(token.substr(b + 1));
}

absl::StatusOr<SsoPrincipal> SsoService::AuthenticateBearer(std::string_view token) {
  const std::string key = common::Sha256Hex(token);
  const absl::Time now = clock_.Now();
  {
    std::lock_guard lock(mu_);
    auto it = bearer_.find(key);
    if (it != bearer_.end()) {
      if (now < it->second->until) return it->second->principal;
      bearer_.erase(it);
    }
  }
  // Route by the token's own iss (unverified here; the chosen provider then verifies it
  // completely, including iss equality). A token from any other issuer is refused outright.
  WARDEN_ASSIGN_OR_RETURN(auth::jose::ParsedJws jws, auth::jose::ParseCompactJws(token));
  absl::StatusOr<common::Json> claims = common::ParseJsonStrict(jws.payload);
  if (!claims.ok() || !claims->is_object()) {
    return absl::UnauthenticatedError("bearer JWT payload is not a JSON object");
  }
  const common::Json& iss = (*claims)["iss"];
  if (!iss.is_string()) return absl::UnauthenticatedError("bearer JWT has no issuer");
  const ProviderConfig* config = nullptr;
  for (const ProviderConfig& c : configs_) {
    if (c.issuer == iss.get<std::string>()) config = &c;
  }
  if (config == nullptr) {
    return absl::UnauthenticatedError(StrCat("bearer JWT issued by \"", iss.get<std::string>(),
                                             "\", which is not a configured identity provider"));
  }
  if (config->access_token_audiences.empty()) {
    return absl::UnauthenticatedError(
        StrCat("identity provider \"", config->name,
               "\" accepts no bearer tokens (no access_token_audiences)"));
  }
  WARDEN_ASSIGN_OR_RETURN(OidcProvider * provider, Connected(config->name));
  absl::StatusOr<SsoPrincipal> principal = Admit(config->name, provider->AuthenticateBearer(token));
  if (!principal.ok()) return principal.status();
  const common::Json& exp = (*claims)["exp"];
  principal->expires_at = exp.is_number_integer() ? exp.get<int64_t>() : 0;
  absl::Time until =
      std::min(now + options_.bearer_cache_ttl, absl::FromUnixSeconds(principal->expires_at));
  std::lock_guard lock(mu_);
  if (bearer_.size() >= options_.bearer_cache_max) {
    for (auto it = bearer_.begin(); it != bearer_.end();) {
      it = it->second->until <= now ? bearer_.erase(it) : std::next(it);
    }
    if (bearer_.size() >= options_.bearer_cache_max) bearer_.clear();
  }
  auto cached = std::make_unique<CachedBearer>(CachedBearer{*principal, until});
  cached->principal.bindings_changed = false;  // a cache hit changes nothing
  bearer_[key] = std::move(cached);
  return principal;
}

// ---- identity -> user ----

absl::StatusOr<SsoPrincipal> SsoService::Admit(const std::string& provider,
                                               absl::StatusOr<MappedIdentity> mapped) {
  if (!mapped.ok()) {
    std::string subject = auth::oidc::UnmappedSubject(mapped.status());
    if (!subject.empty()) WARDEN_RETURN_IF_ERROR(Withdraw(provider, subject));
    return mapped.status();
  }
  return Provision(*mapped);
}

absl::StatusOr<std::string> SsoService::UserNameFor(const MappedIdentity& id) {
  // provider "." subject when the subject is already a valid name; else a digest of it. A name
  // someone else holds gets a suffix derived from (provider, subject), never that user.
  std::string name = StrCat(id.provider, ".", id.subject);
  if (!common::ValidateName("user name", name).ok()) {
    name = StrCat(id.provider, ".", common::Sha256Hex(id.subject).substr(0, 16));
  }
  auto taken = store_.GetUserByName(name);
  if (absl::IsNotFound(taken.status())) return name;
  WARDEN_RETURN_IF_ERROR(taken.status());
  name = StrCat(name.substr(0, 54), "-",
                common::Sha256Hex(StrCat(id.provider, "\n", id.subject)).substr(0, 8));
  taken = store_.GetUserByName(name);
  if (absl::IsNotFound(taken.status())) return name;
  WARDEN_RETURN_IF_ERROR(taken.status());
  return absl::AlreadyExistsError(StrCat("no free user name for identity \"", id.subject,
                                         "\" of provider \"", id.provider, "\""));
}

absl::StatusOr<SsoPrincipal> SsoService::Provision(const MappedIdentity& id) {
  const ProviderConfig* config = nullptr;
  for (const ProviderConfig& c : configs_) {
    if (c.name == id.provider) config = &c;
  }
  if (config == nullptr) return UnknownProvider(id.provider);
  // Resolve the mapped (tenant, role) names to ids first: a mapping that names nothing is an
  // operator error, reported as such rather than silently granting less.
  struct Want {
    std::string role_id;
    std::string tenant_id;
    bool operator<(const Want& o) const {
      return std::tie(role_id, tenant_id) < std::tie(o.role_id, o.tenant_id);
    }
  };
  std::set<Want> wanted;
  std::string home_tenant;
  bool cluster_grant = false;
  for (const auth::oidc::MappedGrant& g : id.grants) {
    std::string tenant_id;
    if (!g.tenant.empty()) {
      auto t = store_.GetTenantByName(g.tenant);
      if (absl::IsNotFound(t.status())) {
        return absl::FailedPreconditionError(
            StrCat("single sign-on mapping of provider \"", id.provider, "\" names tenant \"",
                   g.tenant, "\", which does not exist; an admin must create it"));
      }
      WARDEN_RETURN_IF_ERROR(t.status());
      tenant_id = t->id;
      if (home_tenant.empty()) home_tenant = tenant_id;
    } else {
      cluster_grant = true;
    }
    absl::StatusOr<store::Role> role = absl::NotFoundError("");
    if (!tenant_id.empty()) role = store_.GetRoleByName(tenant_id, g.role);
    if (absl::IsNotFound(role.status())) role = store_.GetRoleByName("", g.role);
    if (absl::IsNotFound(role.status())) {
      return absl::FailedPreconditionError(StrCat("single sign-on mapping of provider \"",
                                                  id.provider, "\" names role \"", g.role,
                                                  "\", which does not exist"));
    }
    WARDEN_RETURN_IF_ERROR(role.status());
    wanted.insert(Want{role->id, tenant_id});
  }
  if (cluster_grant) home_tenant.clear();

  SsoPrincipal out;
  out.identity = id;
  for (const std::string& a : id.amr) {
    if (std::find(config->mfa_amr.begin(), config->mfa_amr.end(), a) != config->mfa_amr.end()) {
      out.mfa = true;
    }
  }
  bool changed = false;
  const int64_t now = clock_.NowUnix();
  absl::Status st;
  // Two first logins of one identity at once: the loser's link collides (AlreadyExists) and its
  // transaction rolls back; the retry finds the winner's user.
  for (int attempt = 0; attempt < 2; ++attempt) {
    changed = false;
    out.created = false;
    st = store_.InTransaction([&]() -> absl::Status {
      auto link = store_.GetExternalIdentity(id.provider, id.subject);
      if (absl::IsNotFound(link.status())) {
        WARDEN_ASSIGN_OR_RETURN(std::string name, UserNameFor(id));
        out.user = store::User{common::NewId(rng_, "usr"), name, home_tenant, "", false, now};
        WARDEN_RETURN_IF_ERROR(store_.CreateUser(out.user));
        WARDEN_RETURN_IF_ERROR(store_.LinkExternalIdentity(
            store::ExternalIdentity{id.provider, id.subject, out.user.id, id.email, now, now}));
        out.created = true;
        changed = true;
      } else {
        WARDEN_RETURN_IF_ERROR(link.status());
        WARDEN_ASSIGN_OR_RETURN(out.user, store_.GetUser(link->user_id));
        if (out.user.disabled) {
          return absl::UnauthenticatedError("invalid user name or password");
        }
        if (link->email != id.email || now - link->last_login_at >= 60) {
          WARDEN_RETURN_IF_ERROR(
              store_.TouchExternalIdentity(id.provider, id.subject, id.email, now));
        }
      }
      // The user's bindings become exactly the mapped grants.
      WARDEN_ASSIGN_OR_RETURN(std::vector<store::Binding> all, store_.ListBindings());
      std::set<Want> have;
      for (const store::Binding& b : all) {
        if (b.subject_kind != "user" || b.subject_id != out.user.id) continue;
        Want w{b.role_id, b.scope_tenant_id};
        if (wanted.count(w) == 0) {
          WARDEN_RETURN_IF_ERROR(store_.DeleteBinding(b.id));
          changed = true;
        } else {
          have.insert(w);
        }
      }
      for (const Want& w : wanted) {
        if (have.count(w) != 0) continue;
        WARDEN_RETURN_IF_ERROR(store_.CreateBinding(store::Binding{
            common::NewId(rng_, "bnd"), "user", out.user.id, w.role_id, w.tenant_id, now}));
        changed = true;
      }
      return absl::OkStatus();
    });
    if (!absl::IsAlreadyExists(st) || !out.created) break;
  }
  WARDEN_RETURN_IF_ERROR(st);
  if (changed) policy_changed_ = true;
  out.bindings_changed = changed;
  out.user.password_hash.clear();
  return out;
}

absl::Status SsoService::Withdraw(const std::string& provider, const std::string& subject) {
  auto link = store_.GetExternalIdentity(provider, subject);
  if (absl::IsNotFound(link.status())) return absl::OkStatus();
  WARDEN_RETURN_IF_ERROR(link.status());
  bool changed = false;
  WARDEN_RETURN_IF_ERROR(store_.InTransaction([&]() -> absl::Status {
    WARDEN_ASSIGN_OR_RETURN(std::vector<store::Binding> all, store_.ListBindings());
    for (const store::Binding& b : all) {
      if (b.subject_kind != "user" || b.subject_id != link->user_id) continue;
      WARDEN_RETURN_IF_ERROR(store_.DeleteBinding(b.id));
      changed = true;
    }
    return store_.DeleteUserSessions(link->user_id);
  }));
  if (changed) policy_changed_ = true;
  if (options_.authenticator != nullptr) {
    WARDEN_RETURN_IF_ERROR(options_.authenticator->LogoutEverywhere(link->user_id));
  }
  return absl::OkStatus();
}

}  // namespace warden::server
