// OIDC flows over the jose verifier. The refusals here answer the OAuth/OIDC attacks of RFC 9700
// (OAuth 2.0 Security BCP): state against CSRF on the callback, PKCE against code injection and
// interception, nonce against ID token replay, the iss parameter (RFC 9207) and exact issuer
// matching against mix-up between providers.
#include "auth/oidc.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <map>

#include "absl/strings/cord.h"
#include "common/encoding.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::auth::oidc {
namespace {

using common::Json;
using common::StrCat;

constexpr size_t kMaxDocumentBytes = 256 * 1024;

std::string StdBase64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

absl::StatusOr<std::string> FormDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%') {
      if (i + 2 >= s.size()) {
        return absl::InvalidArgumentError("truncated percent-escape in query");
      }
      int hi = HexValue(s[i + 1]);
      int lo = HexValue(s[i + 2]);
      if (hi < 0 || lo < 0) return absl::InvalidArgumentError("bad percent-escape in query");
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

absl::StatusOr<Json> ParseJsonObject(std::string_view body, std::string_view what) {
  common::JsonLimits limits;
  limits.max_bytes = kMaxDocumentBytes;
  limits.max_depth = 16;
  absl::StatusOr<Json> doc = common::ParseJsonStrict(body, limits);
  if (!doc.ok()) return absl::InvalidArgumentError(StrCat(what, ": ", doc.status().message()));
  if (!doc->is_object()) return absl::InvalidArgumentError(StrCat(what, " is not a JSON object"));
  return std::move(*doc);
}

std::string JsonString(const Json& obj, const char* name) {
  auto it = obj.find(name);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// An OAuth error body ({"error": ..., "error_description": ...}) as text, for messages.
std::string OAuthError(const http::ClientResponse& r, std::string* code) {
  absl::StatusOr<Json> doc = ParseJsonObject(r.body, "error response");
  std::string error = doc.ok() ? JsonString(*doc, "error") : "";
  if (code != nullptr) *code = error;
  std::string desc = doc.ok() ? JsonString(*doc, "error_description") : "";
  if (error.empty()) return StrCat("HTTP ", r.status);
  return StrCat(error.substr(0, 64), desc.empty() ? "" : ": ", desc.substr(0, 200));
}

class HttpsTransport final : public OidcHttp {
 public:
  HttpsTransport(std::string ca_pem, absl::Duration timeout)
      : ca_pem_(std::move(ca_pem)), timeout_(timeout) {}

  absl::StatusOr<http::ClientResponse> Do(
      std::string_view method, std::string_view url, std::string_view body,
      const std::vector<std::pair<std::string, std::string>>& headers) override {
    WARDEN_ASSIGN_OR_RETURN(auto parts, SplitHttpsUrl(url));
    std::shared_ptr<http::HttpsClient> client;
    {
      std::lock_guard lock(mu_);
      auto it = clients_.find(parts.first);
      if (it == clients_.end()) {
        // A provider uses a handful of origins; the cap only bounds memory. Dropping the map is
        // safe while other threads still use a client: they hold their own reference.
        if (clients_.size() >= 16) clients_.clear();
        http::ClientOptions options;
        options.base_url = parts.first;
        options.ca_pem = ca_pem_;
        options.timeout = timeout_;
        options.connect_timeout = timeout_;
        WARDEN_ASSIGN_OR_RETURN(std::unique_ptr<http::HttpsClient> created,
                                http::HttpsClient::Create(std::move(options)));
        it = clients_.emplace(parts.first, std::move(created)).first;
      }
      client = it->second;
    }
    return client->Do(method, parts.second, body, headers);
  }

 private:
  std::string ca_pem_;
  absl::Duration timeout_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<http::HttpsClient>> clients_;
};

}  // namespace

std::unique_ptr<OidcHttp> NewHttpsTransport(std::string ca_pem, absl::Duration timeout) {
  return std::make_unique<HttpsTransport>(std::move(ca_pem), timeout);
}

absl::StatusOr<std::pair<std::string, std::string>> SplitHttpsUrl(std::string_view url) {
  constexpr std::string_view kScheme = "https://";
  if (url.substr(0, kScheme.size()) != kScheme) {
    return absl::InvalidArgumentError(StrCat("URL \"", url.substr(0, 200), "\" is not https://"));
  }
  if (url.find('#') != std::string_view::npos) {
    return absl::InvalidArgumentError("URL has a fragment");
  }
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      return absl::InvalidArgumentError("URL has a control, space or non-ASCII character");
    }
  }
  size_t end = url.find_first_of("/?", kScheme.size());
  std::string_view authority = url.substr(kScheme.size(), end - kScheme.size());
  if (authority.empty() || authority.find('@') != std::string_view::npos ||
      authority.find('\\') != std::string_view::npos) {
    return absl::InvalidArgumentError("URL has an empty authority or user information");
  }
  std::string_view rest = end == std::string_view::npos ? std::string_view() : url.substr(end);
  std::string path = StrCat(rest.empty() || rest[0] == '?' ? "/" : "", rest);
  return std::make_pair(StrCat(kScheme, authority), path);
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseQuery(std::string_view q) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!q.empty() && q[0] == '?') q.remove_prefix(1);
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view pair = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    WARDEN_ASSIGN_OR_RETURN(std::string name, FormDecode(pair.substr(0, eq)));
    WARDEN_ASSIGN_OR_RETURN(std::string value, eq == std::string_view::npos
                                                   ? absl::StatusOr<std::string>("")
                                                   : FormDecode(pair.substr(eq + 1)));
    for (const auto& [n, v] : out) {
      // A repeated parameter (two "state"s, two "code"s) is ambiguous: refuse rather than pick.
      if (n == name) return absl::InvalidArgumentError(StrCat("parameter \"", name, "\" repeated"));
    }
    out.emplace_back(std::move(name), std::move(value));
    if (out.size() > 64) return absl::InvalidArgumentError("too many parameters");
  }
  return out;
}

absl::StatusOr<ProviderMetadata> ParseDiscoveryDocument(std::string_view json,
                                                        std::string_view expected_issuer) {
  WARDEN_ASSIGN_OR_RETURN(Json doc, ParseJsonObject(json, "discovery document"));
  ProviderMetadata m;
  auto field = [&](const char* name, bool required, std::string* out) -> absl::Status {
    auto it = doc.find(name);
    if (it == doc.end()) {
      if (required) {
        return absl::InvalidArgumentError(StrCat("discovery document has no \"", name, "\""));
      }
      return absl::OkStatus();
    }
    if (!it->is_string()) {
      return absl::InvalidArgumentError(StrCat("discovery \"", name, "\" is not a string"));
    }
    *out = it->get<std::string>();
    if (std::string_view(name) != "issuer" && !SplitHttpsUrl(*out).ok()) {
      return absl::InvalidArgumentError(
          StrCat("discovery \"", name, "\" is not an https URL: ", out->substr(0, 200)));
    }
    return absl::OkStatus();
  };
  WARDEN_RETURN_IF_ERROR(field("issuer", true, &m.issuer));
  if (m.issuer != expected_issuer) {
    return absl::InvalidArgumentError(StrCat("discovery issuer \"", m.issuer.substr(0, 200),
                                             "\" is not the configured \"", expected_issuer, "\""));
  }
  WARDEN_RETURN_IF_ERROR(field("authorization_endpoint", true, &m.authorization_endpoint));
  WARDEN_RETURN_IF_ERROR(field("token_endpoint", true, &m.token_endpoint));
  WARDEN_RETURN_IF_ERROR(field("jwks_uri", true, &m.jwks_uri));
  WARDEN_RETURN_IF_ERROR(
      field("device_authorization_endpoint", false, &m.device_authorization_endpoint));
  WARDEN_RETURN_IF_ERROR(field("userinfo_endpoint", false, &m.userinfo_endpoint));
  auto methods = doc.find("code_challenge_methods_supported");
  if (methods != doc.end()) {
    if (!methods->is_array()) {
      return absl::InvalidArgumentError(
          "discovery code_challenge_methods_supported is not an array");
    }
    for (const Json& v : *methods) {
      if (!v.is_string()) {
        return absl::InvalidArgumentError(
            "discovery code_challenge_methods_supported has a non-string member");
      }
      m.code_challenge_methods_supported.push_back(v.get<std::string>());
    }
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// JwksCache

JwksCache::JwksCache(Fetcher fetch, const common::Clock& clock, JwksCacheOptions options)
    : fetch_(std::move(fetch)), clock_(clock), options_(options) {}

int JwksCache::fetches() const {
  std::lock_guard lock(mu_);
  return fetches_;
}

absl::StatusOr<std::shared_ptr<const jose::JwkSet>> JwksCache::Keys(bool unknown_kid) {
  std::unique_lock lock(mu_);
  absl::Time now = clock_.Now();
  bool stale = keys_ == nullptr || now - fetched_at_ >= options_.max_age;
  bool allowed = now - last_attempt_ >= options_.min_refresh_interval;
  if ((stale || unknown_kid) && allowed && !fetching_) {
    // This thread fetches; the others keep verifying with the current keys meanwhile (a slow IdP
    // must not stall every bearer request), except before the first set exists, when they wait.
    fetching_ = true;
    last_attempt_ = now;
    ++fetches_;
    lock.unlock();
    absl::StatusOr<std::string> body = fetch_();
    absl::StatusOr<jose::JwkSet> set =
        body.ok() ? jose::JwkSet::Parse(*body) : absl::StatusOr<jose::JwkSet>(body.status());
    lock.lock();
    fetching_ = false;
    if (set.ok()) {
      keys_ = std::make_shared<const jose::JwkSet>(std::move(*set));
      fetched_at_ = now;
      last_error_.clear();
    } else {
      // Keep the previous keys, if any; retried after min_refresh_interval.
      last_error_ = std::string(set.status().message());
    }
    fetched_.notify_all();
  } else if (keys_ == nullptr && fetching_) {
    fetched_.wait(lock, [this] { return !fetching_; });
  }
  if (keys_ == nullptr) {
    return absl::UnavailableError(StrCat("cannot fetch the provider's JWK Set: ",
                                         last_error_.empty() ? "not fetched yet" : last_error_));
  }
  return keys_;
}

absl::StatusOr<jose::VerifiedJwt> JwksCache::Verify(std::string_view token,
                                                    const std::vector<jose::JwsAlg>& algs,
                                                    const jose::ClaimsPolicy& policy) {
  WARDEN_ASSIGN_OR_RETURN(std::shared_ptr<const jose::JwkSet> keys, Keys(false));
  absl::StatusOr<jose::VerifiedJwt> r = jose::VerifyJwt(token, *keys, algs, policy, clock_.Now());
  if (!absl::IsNotFound(r.status())) return r;
  // Unknown kid: the provider may have rotated in a new key. Refresh (rate-limited) and retry
  // once; a kid still unknown afterwards (a rotated-out or made-up key) is refused.
  WARDEN_ASSIGN_OR_RETURN(std::shared_ptr<const jose::JwkSet> fresh, Keys(true));
  r = jose::VerifyJwt(token, *fresh, algs, policy, clock_.Now());
  if (absl::IsNotFound(r.status())) return absl::UnauthenticatedError(r.status().message());
  return r;
}

// ---------------------------------------------------------------------------------------------
// Claims mapping

absl::StatusOr<MappedIdentity> MapClaims(const ProviderConfig& config, const Json& claims) {
  MappedIdentity id;
  id.provider = config.name;
  id.subject = JsonString(claims, "sub");
  if (id.subject.empty()) return absl::UnauthenticatedError("token has no subject");
  auto email = claims.find("email");
  if (email != claims.end()) {
    if (!email->is_string()) return absl::UnauthenticatedError("\"email\" is not a string");
    id.email = email->get<std::string>();
    auto verified = claims.find("email_verified");
    bool is_verified = verified != claims.end() && verified->is_boolean() && verified->get<bool>();
    // An IdP that lets users type any address would let them claim someone else's; only a
    // verified address may identify anyone (the account-takeover-by-email attack).
    if (!is_verified && !config.allow_unverified_email) {
      return absl::PermissionDeniedError(
          StrCat("e-mail address of \"", id.subject, "\" is not verified by the provider"));
    }
  }
  auto groups = claims.find(config.groups_claim);
  if (groups != claims.end()) {
    if (groups->is_string()) {
      id.groups.push_back(groups->get<std::string>());
    } else if (groups->is_array() && groups->size() <= 1024) {
      for (const Json& g : *groups) {
        if (!g.is_string()) {
          return absl::UnauthenticatedError(
              StrCat("\"", config.groups_claim, "\" has a non-string member"));
        }
        id.groups.push_back(g.get<std::string>());
      }
    } else {
      return absl::UnauthenticatedError(
          StrCat("\"", config.groups_claim, "\" is not a string or an array of strings"));
    }
  }
  // amr (RFC 8176 / OIDC Core 2): how the IdP authenticated the user. A malformed amr is
  // ignored rather than refused: it only ever adds trust (MFA), never removes a check.
  if (auto amr = claims.find("amr"); amr != claims.end() && amr->is_array() && amr->size() <= 32) {
    for (const Json& a : *amr) {
      if (a.is_string()) id.amr.push_back(a.get<std::string>());
    }
  }
  for (const GroupMapping& m : config.mappings) {
    if (std::find(id.groups.begin(), id.groups.end(), m.group) == id.groups.end()) continue;
    MappedGrant g{m.tenant, m.role};
    if (std::find(id.grants.begin(), id.grants.end(), g) == id.grants.end()) id.grants.push_back(g);
  }
  if (id.grants.empty()) {
    absl::Status refused = absl::PermissionDeniedError(StrCat(
        "identity \"", id.subject, "\" of provider \"", config.name, "\" maps to no gpuwarden role"));
    // The verified subject travels with the refusal, so the server can withdraw the roles a
    // previously mapped user still holds (removed groups remove roles).
    refused.SetPayload(kUnmappedSubjectPayload, absl::Cord(id.subject));
    return refused;
  }
  return id;
}

std::string UnmappedSubject(const absl::Status& status) {
  auto subject = status.GetPayload(kUnmappedSubjectPayload);  // absl::optional on Debian
  return subject ? std::string(*subject) : std::string();
}

absl::StatusOr<TokenResponse> ParseTokenResponse(std::string_view json) {
  WARDEN_ASSIGN_OR_RETURN(Json doc, ParseJsonObject(json, "token response"));
  TokenResponse t;
  t.access_token = JsonString(doc, "access_token");
  t.token_type = JsonString(doc, "token_type");
  t.id_token = JsonString(doc, "id_token");
  t.refresh_token = JsonString(doc, "refresh_token");
  if (t.access_token.empty() || t.token_type.empty()) {
    return absl::InvalidArgumentError("token response lacks access_token or token_type");
  }
  auto exp = doc.find("expires_in");
  if (exp != doc.end() && exp->is_number_integer()) t.expires_in = exp->get<int64_t>();
  return t;
}

// ---------------------------------------------------------------------------------------------
// OidcProvider

OidcProvider::OidcProvider(ProviderConfig config, ProviderMetadata metadata, OidcHttp& http,
                           const common::Clock& clock, common::Rng& rng)
    : config_(std::move(config)),
      metadata_(std::move(metadata)),
      http_(http),
      rng_(rng),
      jwks_(
          [this]() -> absl::StatusOr<std::string> {
            WARDEN_ASSIGN_OR_RETURN(
                http::ClientResponse r,
                http_.Do("GET", metadata_.jwks_uri, {}, {{"Accept", "application/json"}}));
            if (r.status != 200) {
              return absl::UnavailableError(StrCat("JWKS fetch answered HTTP ", r.status));
            }
            return std::move(r.body);
          },
          clock, config_.jwks) {}

absl::StatusOr<std::unique_ptr<OidcProvider>> OidcProvider::Connect(ProviderConfig config,
                                                                    OidcHttp& http,
                                                                    const common::Clock& clock,
                                                                    common::Rng& rng) {
  if (config.issuer.empty() || config.client_id.empty()) {
    return absl::InvalidArgumentError(
        StrCat("OIDC provider \"", config.name, "\" needs issuer and client_id"));
  }
  if (config.allowed_algs.empty()) config.allowed_algs = jose::AllJwsAlgs();
  std::string url = config.issuer;
  while (!url.empty() && url.back() == '/') url.pop_back();
  url += "/.well-known/openid-configuration";
  WARDEN_ASSIGN_OR_RETURN(http::ClientResponse r,
                          http.Do("GET", url, {}, {{"Accept", "application/json"}}));
  if (r.status != 200) {
    return absl::UnavailableError(StrCat("discovery at ", url, " answered HTTP ", r.status));
  }
  WARDEN_ASSIGN_OR_RETURN(ProviderMetadata m, ParseDiscoveryDocument(r.body, config.issuer));
  return std::unique_ptr<OidcProvider>(
      new OidcProvider(std::move(config), std::move(m), http, clock, rng));
}

absl::StatusOr<MappedIdentity> OidcProvider::AuthenticateBearer(std::string_view token) {
  jose::ClaimsPolicy policy;
  policy.issuer = config_.issuer;
  policy.audiences = config_.access_token_audiences;
  policy.kind = jose::TokenKind::kAccessToken;
  policy.require_at_jwt_typ = config_.require_at_jwt_typ;
  policy.max_skew = config_.max_skew;
  if (policy.audiences.empty()) {
    return absl::FailedPreconditionError(
        StrCat("OIDC provider \"", config_.name, "\" accepts no bearer tokens (no audience)"));
  }
  WARDEN_ASSIGN_OR_RETURN(jose::VerifiedJwt jwt, jwks_.Verify(token, config_.allowed_algs, policy));
  return MapClaims(config_, jwt.claims);
}

absl::StatusOr<jose::VerifiedJwt> OidcProvider::VerifyIdToken(std::string_view token,
                                                              std::string_view nonce) {
  jose::ClaimsPolicy policy;
  policy.issuer = config_.issuer;
  policy.kind = jose::TokenKind::kIdToken;
  policy.client_id = config_.client_id;
  policy.nonce = std::string(nonce);
  policy.max_skew = config_.max_skew;
  return jwks_.Verify(token, config_.allowed_algs, policy);
}

AuthorizationRequest OidcProvider::BeginAuthorization() {
  AuthorizationRequest req;
  req.state = common::Base64UrlEncode(rng_.Bytes(32));
  req.nonce = common::Base64UrlEncode(rng_.Bytes(32));
  req.code_verifier = common::Base64UrlEncode(rng_.Bytes(32));  // 43 chars (RFC 7636 4.1)
  std::string challenge = common::Base64UrlEncode(common::Sha256(req.code_verifier));
  std::string scope;
  for (const std::string& s : config_.scopes) scope += (scope.empty() ? "" : " ") + s;
  req.url = StrCat(metadata_.authorization_endpoint,
                   metadata_.authorization_endpoint.find('?') == std::string::npos ? "?" : "&",
                   "response_type=code&client_id=", common::PercentEncode(config_.client_id),
                   "&redirect_uri=", common::PercentEncode(config_.redirect_uri), "&scope=", common::PercentEncode(scope),
                   "&state=", req.state, "&nonce=", req.nonce, "&code_challenge=", challenge,
                   "&code_challenge_method=S256");
  return req;
}

absl::StatusOr<http::ClientResponse> OidcProvider::PostForm(
    const std::string& url, const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string body;
  for (const auto& [k, v] : fields) {
    body += StrCat(body.empty() ? "" : "&", common::PercentEncode(k), "=", common::PercentEncode(v));
  }
  // client_secret_basic (RFC 6749 2.3.1): form-encoded id and secret, then base64.
  std::string basic =
      StdBase64(StrCat(common::PercentEncode(config_.client_id), ":", common::PercentEncode(config_.client_secret)));
  return http_.Do("POST", url, body,
                  {{"Content-Type", "application/x-www-form-urlencoded"},
                   {"Accept", "application/json"},
                   {"Authorization", StrCat("Basic ", basic)}});
}

absl::StatusOr<LoginResult> OidcProvider::FinishWithTokens(const TokenResponse& tokens,
                                                           std::string_view nonce) {
  if (tokens.id_token.empty()) {
    return absl::UnauthenticatedError("token response has no id_token (is \"openid\" in scopes?)");
  }
  WARDEN_ASSIGN_OR_RETURN(jose::VerifiedJwt id, VerifyIdToken(tokens.id_token, nonce));
  LoginResult out;
  WARDEN_ASSIGN_OR_RETURN(out.identity, MapClaims(config_, id.claims));
  out.tokens = tokens;
  out.id_token_claims = std::move(id.claims);
  return out;
}

absl::StatusOr<LoginResult> OidcProvider::FinishAuthorization(const AuthorizationRequest& pending,
                                                              std::string_view callback_query) {
  WARDEN_ASSIGN_OR_RETURN(auto params, ParseQuery(callback_query));
  auto get = [&](std::string_view name) -> std::string {
    for (const auto& [k, v] : params) {
      if (k == name) return v;
    }
    return {};
  };
  // state first: a callback we did not start (login CSRF) is refused before anything else.
  std::string state = get("state");
  if (pending.state.empty() || !common::ConstantTimeEquals(state, pending.state)) {
    return absl::UnauthenticatedError("callback state does not match the login request");
  }
  std::string iss = get("iss");
  if (!iss.empty() && iss != config_.issuer) {
    return absl::UnauthenticatedError("callback iss is another provider's (mix-up attack)");
  }
  if (std::string error = get("error"); !error.empty()) {
    return absl::PermissionDeniedError(StrCat("provider refused the login: ", error.substr(0, 64),
                                              " ", get("error_description").substr(0, 200)));
  }
  std::string code = get("code");
  if (code.empty()) return absl::InvalidArgumentError("callback has no code");
  WARDEN_ASSIGN_OR_RETURN(
      http::ClientResponse r,
      PostForm(metadata_.token_endpoint, {{"grant_type", "authorization_code"},
                                          {"code", code},
                                          {"redirect_uri", config_.redirect_uri},
                                          {"code_verifier", pending.code_verifier}}));
  if (r.status != 200) {
    return absl::UnauthenticatedError(
        StrCat("token endpoint refused the code: ", OAuthError(r, nullptr)));
  }
  WARDEN_ASSIGN_OR_RETURN(TokenResponse tokens, ParseTokenResponse(r.body));
  return FinishWithTokens(tokens, pending.nonce);
}

absl::StatusOr<DeviceAuthorization> OidcProvider::StartDeviceAuthorization() {
  if (metadata_.device_authorization_endpoint.empty()) {
    return absl::FailedPreconditionError(
        StrCat("OIDC provider \"", config_.name, "\" has no device authorization endpoint"));
  }
  std::string scope;
  for (const std::string& s : config_.scopes) scope += (scope.empty() ? "" : " ") + s;
  WARDEN_ASSIGN_OR_RETURN(http::ClientResponse r,
                          PostForm(metadata_.device_authorization_endpoint, {{"scope", scope}}));
  if (r.status != 200) {
    return absl::UnavailableError(StrCat("device authorization refused: ", OAuthError(r, nullptr)));
  }
  WARDEN_ASSIGN_OR_RETURN(Json doc, ParseJsonObject(r.body, "device authorization response"));
  DeviceAuthorization d;
  d.device_code = JsonString(doc, "device_code");
  d.user_code = JsonString(doc, "user_code");
  d.verification_uri = JsonString(doc, "verification_uri");
  d.verification_uri_complete = JsonString(doc, "verification_uri_complete");
  if (d.device_code.empty() || d.user_code.empty() || !SplitHttpsUrl(d.verification_uri).ok()) {
    return absl::InvalidArgumentError(
        "device authorization response lacks device_code, user_code or an https verification_uri");
  }
  if (auto it = doc.find("interval"); it != doc.end() && it->is_number_integer()) {
    d.interval = absl::Seconds(std::clamp<int64_t>(it->get<int64_t>(), 1, 60));
  }
  if (auto it = doc.find("expires_in"); it != doc.end() && it->is_number_integer()) {
    d.expires_in = absl::Seconds(std::clamp<int64_t>(it->get<int64_t>(), 1, 3600));
  }
  return d;
}

absl::StatusOr<DevicePoll> OidcProvider::PollDeviceToken(const DeviceAuthorization& device) {
  WARDEN_ASSIGN_OR_RETURN(http::ClientResponse r,
                          PostForm(metadata_.token_endpoint,
                                   {{"grant_type", "urn:ietf:params:oauth:grant-type:device_code"},
                                    {"device_code", device.device_code}}));
  DevicePoll poll;
  if (r.status != 200) {
    std::string code;
    std::string text = OAuthError(r, &code);
    if (code == "authorization_pending") return poll;
    if (code == "slow_down") {
      poll.state = DevicePoll::State::kSlowDown;
      return poll;
    }
    if (code == "access_denied") return absl::PermissionDeniedError(StrCat("login denied: ", text));
    if (code == "expired_token") {
      return absl::DeadlineExceededError("device code expired before the user approved it");
    }
    return absl::UnauthenticatedError(StrCat("device token request failed: ", text));
  }
  WARDEN_ASSIGN_OR_RETURN(TokenResponse tokens, ParseTokenResponse(r.body));
  // The device flow has no nonce (RFC 8628): the ID token is bound by the device_code instead.
  WARDEN_ASSIGN_OR_RETURN(poll.result, FinishWithTokens(tokens, ""));
  poll.state = DevicePoll::State::kDone;
  return poll;
}

}  // namespace warden::auth::oidc
