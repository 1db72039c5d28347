// OpenID Connect single sign-on (issue 3, OIDC half): discovery, a JWKS cache refreshed on unknown
// kid (rate-limited), bearer JWT access tokens, the authorization-code flow with PKCE + state +
// nonce, the device authorization grant (RFC 8628), and group claims -> tenant/role mapping.
//
// These are library-level flows: the server's /oidc routes and `gpuwarden login --sso` call them.
// `OidcProvider` is thread-safe (its JWKS cache is guarded by a mutex that is held neither during
// a fetch nor during verification). All network I/O goes through the `OidcHttp` seam (HTTPS only;
// libcurl by default), and time through the injected Clock, so tests run against a fake transport
// or a real oidc-provider.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "auth/jose.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/rng.h"
#include "http/client.h"

namespace warden::auth::oidc {

// Outbound HTTPS for the provider's endpoints. Absolute URLs; non-https URLs are refused.
class OidcHttp {
 public:
  virtual ~OidcHttp() = default;
  virtual absl::StatusOr<http::ClientResponse> Do(
      std::string_view method, std::string_view url, std::string_view body = {},
      const std::vector<std::pair<std::string, std::string>>& headers = {}) = 0;
};

// libcurl transport, one keep-alive client per origin. `ca_pem` pins the provider's CA (tests,
// private IdPs); empty trusts the system store.
std::unique_ptr<OidcHttp> NewHttpsTransport(std::string ca_pem = {},
                                            absl::Duration timeout = absl::Seconds(10));

// Splits an https URL into origin ("https://host:port") and path-with-query ("/...").
// InvalidArgument for anything but https://, userinfo in the authority, or a fragment.
absl::StatusOr<std::pair<std::string, std::string>> SplitHttpsUrl(std::string_view url);

// A parser for a query string or form body (InvalidArgument on bad percent-escapes or a repeated
// name). Values are encoded with common::PercentEncode (common/encoding.h).
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseQuery(std::string_view q);

// The fields of an OpenID Provider Metadata document that we use (OIDC Discovery 1.0 section 3).
struct ProviderMetadata {
  std::string issuer;
  std::string authorization_endpoint;
  std::string token_endpoint;
  std::string jwks_uri;
  std::string device_authorization_endpoint;  // "" when the provider has no device flow
  std::string userinfo_endpoint;
  std::vector<std::string> code_challenge_methods_supported;
};

// Parses a discovery document. InvalidArgument for non-strict JSON, a non-object, a missing or
// non-string required member (issuer, authorization_endpoint, token_endpoint, jwks_uri), an
// endpoint that is not https, or an issuer that differs from `expected_issuer` by even one
// character (Discovery 4.3: prevents an attacker's metadata from impersonating an issuer).
absl::StatusOr<ProviderMetadata> ParseDiscoveryDocument(std::string_view json,
                                                        std::string_view expected_issuer);

struct JwksCacheOptions {
  // An unknown kid triggers a refetch at most this often (a flood of random kids must not turn
  // gpuwarden into a DoS amplifier against the IdP).
  absl::Duration min_refresh_interval = absl::Seconds(30);
  // Keys are refetched when older than this even if every kid is known, so a key the provider
  // rotated out stops verifying within max_age.
  absl::Duration max_age = absl::Hours(1);
};

// A provider's JWK Set, fetched lazily and refreshed on unknown kid or age. When a refresh fails
// the previous set stays in use (an IdP outage must not log everyone out) and the next refresh is
// attempted after min_refresh_interval.
class JwksCache {
 public:
  using Fetcher = std::function<absl::StatusOr<std::string>()>;
  JwksCache(Fetcher fetch, const common::Clock& clock, JwksCacheOptions options = {});

  // Verifies `token` against the current keys; on NotFound (no key for its kid/alg) refreshes the
  // set once, if the rate limit allows, and retries. Unauthenticated on every verification
  // failure; Unavailable when no key set could ever be fetched.
  absl::StatusOr<jose::VerifiedJwt> Verify(std::string_view token,
                                           const std::vector<jose::JwsAlg>& algs,
                                           const jose::ClaimsPolicy& policy);
  // Number of successful and failed fetches so far (tests, metrics).
  int fetches() const;

 private:
  // Refreshes when stale, or on an unknown kid, if the rate limit allows and no other thread is
  // fetching; returns the set to use.
  absl::StatusOr<std::shared_ptr<const jose::JwkSet>> Keys(bool unknown_kid);

  Fetcher fetch_;
  const common::Clock& clock_;
  JwksCacheOptions options_;
  mutable std::mutex mu_;  // guards everything below; never held during a fetch
  std::condition_variable fetched_;
  std::shared_ptr<const jose::JwkSet> keys_;
  absl::Time fetched_at_ = absl::InfinitePast();
  absl::Time last_attempt_ = absl::InfinitePast();
  bool fetching_ = false;
  std::string last_error_;
  int fetches_ = 0;
};

// Group -> grant mapping. `tenant` "" means a cluster-wide binding.
struct GroupMapping {
  std::string group;
  std::string tenant;
  std::string role;
};

struct ProviderConfig {
  std::string name;    // e.g. "corp"; [a-z0-9-]
  std::string issuer;  // exactly as the provider's "iss"
  std::string client_id;
  std::string client_secret;  // read from the configured secret file by the caller
  std::string redirect_uri;   // the code flow's callback
  std::vector<std::string> scopes = {"openid", "email", "groups"};
  std::vector<jose::JwsAlg> allowed_algs = {jose::JwsAlg::kRS256, jose::JwsAlg::kES256};
  // Audiences accepted on bearer access tokens (the API's resource identifier).
  std::vector<std::string> access_token_audiences;
  bool require_at_jwt_typ = true;  // see jose::ClaimsPolicy
  std::string groups_claim = "groups";
  std::vector<GroupMapping> mappings;
  bool allow_unverified_email = false;
  absl::Duration max_skew = absl::Seconds(60);
  JwksCacheOptions jwks;
  // PEM of the CA that the provider's TLS certificate must chain to ("" = the system store);
  // read from `ca_file` by ParseOidcConfig.
  std::string ca_pem;
  // `amr` values (RFC 8176) that count as the IdP having checked a second factor. A login whose
  // token carries one of them opens a session that satisfies gpuwarden's MFA policy; otherwise
  // the user steps up with a local TOTP code. [] = never trust the IdP's MFA.
  std::vector<std::string> mfa_amr = {"mfa", "otp", "hwk"};
};

struct MappedGrant {
  std::string tenant;  // "" = cluster
  std::string role;
  bool operator==(const MappedGrant&) const = default;
};

// Who an OIDC login or bearer token is, in gpuwarden's terms.
struct MappedIdentity {
  std::string provider;
  std::string subject;  // the IdP's "sub"
  std::string email;    // "" when the token has none
  std::vector<std::string> groups;
  std::vector<MappedGrant> grants;  // never empty
  std::vector<std::string> amr;     // the token's "amr" (authentication methods), if any
};

// Applies the provider's mappings to verified claims. PermissionDenied when the e-mail is present
// but not verified (email_verified != true) and unverified e-mail is not allowed, or when no group
// maps to a role (an identity the IdP knows is not thereby a gpuwarden user). Unauthenticated
// when the groups claim has the wrong shape.
// The PermissionDenied "maps to no gpuwarden role" carries the verified subject as a status
// payload under this type URL (read it with UnmappedSubject).
inline constexpr char kUnmappedSubjectPayload[] = "type.gpuwarden/oidc.unmapped-subject";
absl::StatusOr<MappedIdentity> MapClaims(const ProviderConfig& config, const common::Json& claims);
// The subject of a verified token that mapped to no role, or "" for any other status.
std::string UnmappedSubject(const absl::Status& status);

// A pending browser login: what the caller keeps (server-side, bound to the browser by a cookie)
// between redirecting to the IdP and receiving the callback.
struct AuthorizationRequest {
  std::string url;  // where to send the browser
  std::string state;
  std::string nonce;
  std::string code_verifier;  // PKCE (RFC 7636), S256
};

struct TokenResponse {
  std::string access_token;
  std::string id_token;
  std::string refresh_token;
  std::string token_type;
  int64_t expires_in = 0;
};

struct LoginResult {
  MappedIdentity identity;
  TokenResponse tokens;
  common::Json id_token_claims;
};

// RFC 8628 device authorization response.
struct DeviceAuthorization {
  std::string device_code;
  std::string user_code;
  std::string verification_uri;
  std::string verification_uri_complete;
  absl::Duration interval = absl::Seconds(5);
  absl::Duration expires_in = absl::Minutes(5);
};

struct DevicePoll {
  enum class State { kPending, kSlowDown, kDone };
  State state = State::kPending;
  LoginResult result;  // when kDone
};

class OidcProvider {
 public:
  // Fetches and checks the discovery document. `http`, `clock` and `rng` must outlive the
  // provider. InvalidArgument for a bad config, the discovery errors above, Unavailable when the
  // provider cannot be reached.
  static absl::StatusOr<std::unique_ptr<OidcProvider>> Connect(ProviderConfig config,
                                                               OidcHttp& http,
                                                               const common::Clock& clock,
                                                               common::Rng& rng);

  const ProviderConfig& config() const { return config_; }
  const ProviderMetadata& metadata() const { return metadata_; }

  // A bearer JWT access token from this provider (automation): verified (typ at+jwt, audience
  // one of access_token_audiences) and mapped. Errors as VerifyJwt / MapClaims.
  absl::StatusOr<MappedIdentity> AuthenticateBearer(std::string_view token);

  // Code flow, step 1: fresh random state, nonce and PKCE verifier (32 bytes each) and the URL.
  AuthorizationRequest BeginAuthorization();
  // Code flow, step 2: `callback_query` is the query string the IdP redirected to. Checks state
  // (constant time) and the RFC 9207 iss parameter when present, surfaces an IdP error as
  // PermissionDenied, exchanges the code with the PKCE verifier, verifies the ID token (nonce,
  // audience = client_id) and maps its claims.
  absl::StatusOr<LoginResult> FinishAuthorization(const AuthorizationRequest& pending,
                                                  std::string_view callback_query);

  // Device flow: start (FailedPrecondition when the provider has no device endpoint), then poll
  // once per interval until kDone; on kSlowDown the caller adds 5 s to its interval (RFC 8628
  // 3.5). PermissionDenied when the user denied, DeadlineExceeded when
  // the device code expired.
  absl::StatusOr<DeviceAuthorization> StartDeviceAuthorization();
  absl::StatusOr<DevicePoll> PollDeviceToken(const DeviceAuthorization& device);

  // Verifies an ID token issued to this client (used by both flows; public for the server).
  absl::StatusOr<jose::VerifiedJwt> VerifyIdToken(std::string_view token, std::string_view nonce);

 private:
  OidcProvider(ProviderConfig config, ProviderMetadata metadata, OidcHttp& http,
               const common::Clock& clock, common::Rng& rng);
  absl::StatusOr<http::ClientResponse> PostForm(
      const std::string& url, const std::vector<std::pair<std::string, std::string>>& fields);
  absl::StatusOr<LoginResult> FinishWithTokens(const TokenResponse& tokens, std::string_view nonce);

  ProviderConfig config_;
  ProviderMetadata metadata_;
  OidcHttp& http_;
  common::Rng& rng_;
  JwksCache jwks_;
};

// Parses a token endpoint success response (RFC 6749 5.1). InvalidArgument on bad JSON or a
// missing access_token/token_type.
absl::StatusOr<TokenResponse> ParseTokenResponse(std::string_view json);

}  // namespace warden::auth::oidc
