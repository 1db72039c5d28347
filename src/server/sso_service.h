// SsoService: OpenID Connect single sign-on for `gpuwarden server` (issue 3). It turns the OIDC
// library's flows (auth/oidc.h) into gpuwarden identities:
//
// - providers from the `oidc:` config section, connected lazily (discovery on first use, retried
//   at most every reconnect_interval), so an IdP outage at start-up does not stop the server;
// - the browser code flow: state + nonce + PKCE kept here (single-use, expiring) and bound to the
//   browser that started the login by a random cookie value (login CSRF);
// - the device authorization grant for the CLI, behind an opaque handle (the IdP's device_code
//   never leaves the server), polled no faster than the IdP's interval;
// - bearer JWT access tokens, routed to a provider by their exact `iss`;
// - identity -> user: a just-in-time user per (provider, subject) (store::ExternalIdentity, never
//   matched by name or e-mail), its role bindings replaced by the mapped ones at each login
//   (removed groups remove roles; an identity that now maps to nothing loses every binding and
//   session).
//
// Thread-safe. Holds references to the store, clock and rng (they must outlive it). Network I/O
// to the IdP never runs under this class's mutex.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "auth/auth.h"
#include "auth/oidc.h"
#include "common/clock.h"
#include "common/rng.h"
#include "store/store.h"

namespace warden::server {

struct SsoOptions {
  absl::Duration login_ttl = absl::Minutes(10);  // a browser login must come back within this
  size_t max_pending = 10'000;                   // browser logins and device logins, each
  // A verified bearer JWT (and the user it maps to) is reused for at most this long (and never
  // past its exp): a disabled user's or removed group's IdP tokens stop within it.
  absl::Duration bearer_cache_ttl = absl::Seconds(1);
  size_t bearer_cache_max = 10'000;
  absl::Duration reconnect_interval = absl::Seconds(10);  // after a failed discovery
  // Ends a withdrawn user's sessions through the Authenticator, so its credential cache forgets
  // them at once (not owned; without it they end in the store and within the cache's TTL).
  auth::Authenticator* authenticator = nullptr;
  // The transport for a provider; default auth::oidc::NewHttpsTransport(config.ca_pem).
  std::function<std::unique_ptr<auth::oidc::OidcHttp>(const auth::oidc::ProviderConfig&)> transport;
};

// Who an SSO login or IdP bearer token is, in gpuwarden's terms.
struct SsoPrincipal {
  store::User user;  // the just-in-time user (password_hash empty)
  auth::oidc::MappedIdentity identity;
  bool mfa = false;        // the IdP asserted a second factor: amr meets the provider's mfa_amr
  int64_t expires_at = 0;  // bearer tokens: the token's exp (Unix seconds)
  bool created = false;    // the user was created by this login
  // This login changed role bindings: the caller recompiles the RBAC policy before it authorizes
  // anything for the user (TakePolicyChanged covers changes whose caller did not get here).
  bool bindings_changed = false;
};

class SsoService {
 public:
  // InvalidArgument for duplicate provider names (ParseOidcConfig already refuses them).
  static absl::StatusOr<std::unique_ptr<SsoService>> Create(
      std::vector<auth::oidc::ProviderConfig> providers, store::Store& store, common::Clock& clock,
      common::Rng& rng, SsoOptions options = {});
  ~SsoService();

  const std::vector<auth::oidc::ProviderConfig>& providers() const { return configs_; }

  // Browser code flow, step 1. NotFound for an unknown provider, Unavailable when its discovery
  // fails, ResourceExhausted when too many logins are pending. `binding` goes into a cookie.
  struct BrowserLogin {
    std::string redirect_url;
    std::string binding;
  };
  absl::StatusOr<BrowserLogin> BeginBrowserLogin(const std::string& provider);
  // Step 2: `raw_query` is the callback's query string as received, `binding` the cookie value.
  // The state is spent whatever the outcome. Unauthenticated for an unknown, used or expired
  // state; PermissionDenied when the cookie does not match (a login this browser never started),
  // when the IdP refused, or when the identity maps to no role / has an unverified e-mail; the
  // errors of OidcProvider::FinishAuthorization otherwise.
  absl::StatusOr<SsoPrincipal> FinishBrowserLogin(const std::string& provider,
                                                  std::string_view raw_query,
                                                  std::string_view binding);

  // Device flow for the CLI. Start: FailedPrecondition when the provider has no device endpoint.
  struct DeviceLogin {
    std::string handle;  // what the CLI polls with (32 random bytes, base64url)
    std::string user_code;
    std::string verification_uri;
    std::string verification_uri_complete;
    int64_t interval_s = 5;
    int64_t expires_in_s = 300;
  };
  absl::StatusOr<DeviceLogin> StartDeviceLogin(const std::string& provider);
  // nullopt while the user has not approved yet (`slow_down` set when the CLI polls faster than
  // the interval or the IdP asked to slow down). The handle is spent on success and on every
  // final error: NotFound (unknown or spent handle), DeadlineExceeded (expired), PermissionDenied
  // (denied, or the identity is refused).
  absl::StatusOr<std::optional<SsoPrincipal>> PollDeviceLogin(const std::string& provider,
                                                              const std::string& handle,
                                                              bool* slow_down);

  // Three base64url parts separated by dots: an IdP JWT, never one of our gws_/gwt_ secrets.
  static bool LooksLikeJwt(std::string_view token);
  // A bearer JWT access token: the provider whose issuer equals the token's iss verifies it (and
  // maps it). Unauthenticated for a token from an issuer that is no configured provider, and for
  // every verification failure; PermissionDenied as for logins.
  absl::StatusOr<SsoPrincipal> AuthenticateBearer(std::string_view token);

  // Identity -> user (public for tests): finds or creates the user linked to (provider, subject)
  // and makes its role bindings exactly the mapped grants, in one transaction. FailedPrecondition
  // when a mapping names a tenant or role that does not exist; Unauthenticated "invalid user name
  // or password" when the linked user is disabled.
  absl::StatusOr<SsoPrincipal> Provision(const auth::oidc::MappedIdentity& identity);
  // For a verified identity that now maps to no role: removes every role binding and session of
  // the user linked to it, if any. OK when none is linked.
  absl::Status Withdraw(const std::string& provider, const std::string& subject);

  // True once since the last call when a login changed role bindings: the caller recompiles the
  // RBAC policy before it authorizes anything for that user.
  bool TakePolicyChanged() { return policy_changed_.exchange(false); }

 private:
  struct Entry;
  struct PendingBrowser;
  struct PendingDevice;
  struct CachedBearer;

  SsoService(std::vector<auth::oidc::ProviderConfig> configs, store::Store& store,
             common::Clock& clock, common::Rng& rng, SsoOptions options);
  absl::StatusOr<auth::oidc::OidcProvider*> Connected(const std::string& provider);
  // Provision on success; Withdraw (then the refusal) when the identity maps to no role.
  absl::StatusOr<SsoPrincipal> Admit(const std::string& provider,
                                     absl::StatusOr<auth::oidc::MappedIdentity> mapped);
  absl::StatusOr<std::string> UserNameFor(const auth::oidc::MappedIdentity& id);

  std::vector<auth::oidc::ProviderConfig> configs_;
  store::Store& store_;
  common::Clock& clock_;
  common::Rng& rng_;
  SsoOptions options_;
  std::map<std::string, std::unique_ptr<Entry>, std::less<>> entries_;  // by provider name
  std::atomic<bool> policy_changed_{false};

  std::mutex mu_;  // guards the maps below; never held during I/O
  std::map<std::string, std::unique_ptr<PendingBrowser>, std::less<>> browser_;  // by state
  std::map<std::string, std::unique_ptr<PendingDevice>, std::less<>> device_;    // by handle
  std::map<std::string, std::unique_ptr<CachedBearer>, std::less<>> bearer_;     // by SHA-256 hex
};

}  // namespace warden::server
