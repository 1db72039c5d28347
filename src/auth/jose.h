// JOSE for OIDC single sign-on (issue 3): JWS compact serialization, JWK / JWK Set parsing and
// JWT claims validation, verified with OpenSSL 3 EVP only (no hand-written crypto).
//
// Only asymmetric signatures are accepted: RS256/384/512, PS256/384/512, ES256/384 and EdDSA
// (Ed25519). `none` and every HMAC alg are refused by the parser, so a token "signed" with a
// provider's public key as an HMAC secret can never verify (RFC 8725 section 2.1). Keys come only
// from the provider's JWK Set that the caller fetched from its configured jwks_uri: headers that
// name other keys (jku, x5u, jwk, x5c) are refused, and `kid` is only ever compared for equality.
//
// Every type here is an immutable value; `Jwk` shares its OpenSSL key, so copies are cheap and
// thread-safe to use concurrently. Nothing here does I/O or reads the clock: callers pass `now`.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/json.h"

struct evp_pkey_st;  // OpenSSL's EVP_PKEY, kept out of this header

namespace warden::auth::jose {

enum class JwsAlg { kRS256, kRS384, kRS512, kPS256, kPS384, kPS512, kES256, kES384, kEdDSA };

// Exact, case-sensitive names from RFC 7518 / RFC 8037. "none", "HS256" and unknown names give
// nullopt (the parser turns that into a precise error).
std::optional<JwsAlg> JwsAlgFromName(std::string_view name);
std::string_view JwsAlgName(JwsAlg alg);
// The algorithms accepted when a provider configures none: all of the above.
std::vector<JwsAlg> AllJwsAlgs();

// Size limits applied before any decoding or JSON parsing.
struct JwsLimits {
  size_t max_token_bytes = 16 * 1024;
  size_t max_header_bytes = 2 * 1024;
  int max_json_depth = 8;
};

// The protected header fields that matter; others are ignored (RFC 7515 4.1) unless refused.
struct JwsHeader {
  JwsAlg alg = JwsAlg::kRS256;
  std::string kid;  // "" when absent
  std::string typ;  // "" when absent, as sent
};

// A compact JWS split and decoded but NOT verified. Parsing refuses (InvalidArgument, naming
// the problem): oversize input; anything but three dot-separated non-empty base64url (no
// padding, canonical) parts; a header that is not a strict JSON object (duplicate keys refused);
// a missing, unknown, `none` (any case) or symmetric (HS*) alg; the headers jku, x5u, jwk, x5c
// (keys must come from the configured JWKS), crit (we implement no extensions), b64, zip, enc
// (JWE) and cty "JWT" (nested tokens); a kid that is not a string of at most 256 bytes.
struct ParsedJws {
  JwsHeader header;
  std::string signing_input;  // ASCII(BASE64URL(header) '.' BASE64URL(payload))
  std::string payload;        // decoded bytes
  std::string signature;      // decoded bytes
};
absl::StatusOr<ParsedJws> ParseCompactJws(std::string_view token, const JwsLimits& limits = {});

// One public verification key from a JWK (RFC 7517/7518/8037). Private key members are refused
// (a provider publishing its private key is a configuration disaster we must not paper over).
class Jwk {
 public:
  // Accepts kty RSA (n, e; modulus at least 2048 bits), EC (crv P-256 or P-384, x, y; the point
  // must be on the curve) and OKP (crv Ed25519, x). InvalidArgument naming the member otherwise.
  static absl::StatusOr<Jwk> FromJson(const common::Json& jwk);

  const std::string& kid() const { return kid_; }
  const std::string& kty() const { return kty_; }
  // The JWK's own "alg" when present.
  std::optional<JwsAlg> alg() const { return alg_; }
  // Whether this key may verify `alg`: key type and curve match, the JWK's alg (if any) is the
  // same, its "use" (if any) is "sig" and its key_ops (if any) include "verify".
  bool CanVerify(JwsAlg alg) const;
  evp_pkey_st* pkey() const { return pkey_.get(); }

 private:
  std::string kid_;
  std::string kty_;
  std::string crv_;
  std::optional<JwsAlg> alg_;
  bool usable_for_signatures_ = true;
  std::shared_ptr<evp_pkey_st> pkey_;
};

// A provider's key set. Keys with unsupported kty/crv/use are skipped (providers publish
// encryption keys too) and counted in skipped(); a malformed member of a supported key fails the
// whole set, so a tampered set is not half-used.
class JwkSet {
 public:
  // InvalidArgument for non-JSON, a missing "keys" array, more than `max_keys` keys, duplicate
  // kids, or a malformed supported key.
  static absl::StatusOr<JwkSet> Parse(std::string_view json, size_t max_keys = 64);

  // The key that may verify a token with this header: by exact kid when the token has one; when
  // it has none, the only key that can verify its alg. nullptr when there is none (or several).
  const Jwk* Select(const JwsHeader& header) const;
  const std::vector<Jwk>& keys() const { return keys_; }
  size_t skipped() const { return skipped_; }

 private:
  std::vector<Jwk> keys_;
  size_t skipped_ = 0;
};

// Verifies `jws.signature` over `jws.signing_input` with `key`. Unauthenticated when the key
// cannot verify the alg, the signature has the wrong length, an ECDSA r or s is outside [1, n-1]
// (r = s = 0 included), or the signature does not verify.
absl::Status VerifySignature(const ParsedJws& jws, const Jwk& key);

// What kind of JWT a caller expects. Access tokens (RFC 9068) and ID tokens (OIDC Core 2) are
// both JWTs from the same issuer and keys, so each must be told apart from the other.
enum class TokenKind { kAccessToken, kIdToken };

struct ClaimsPolicy {
  std::string issuer;                  // "iss" must equal this exactly
  std::vector<std::string> audiences;  // "aud" must contain at least one of these
  // Clock skew tolerated on exp/nbf/iat; values above 5 minutes are treated as 5 minutes.
  absl::Duration max_skew = absl::Seconds(60);
  TokenKind kind = TokenKind::kAccessToken;
  // Access tokens: require header typ "at+jwt" / "application/at+jwt" (RFC 9068 2.1). Providers
  // that send typ "JWT" access tokens (Keycloak, Entra ID) set this false; then a token carrying
  // ID-token-only claims (nonce, at_hash, c_hash) is still refused as an access token.
  bool require_at_jwt_typ = true;
  // ID tokens: the RP's client_id (checked against azp when aud has several values) and the
  // nonce sent with the authorization request ("" = none expected; then no check).
  std::string client_id;
  std::string nonce;
  // Refuse tokens whose exp - iat (or exp - now) exceeds this. Zero: no limit.
  absl::Duration max_lifetime = absl::Hours(24);
};

// Claims of a verified token.
struct VerifiedJwt {
  JwsHeader header;
  common::Json claims;  // the full payload object
  std::string issuer;
  std::string subject;
  absl::Time expires_at;
};

// Checks the payload of an already signature-verified JWS against `policy` at time `now`.
// Unauthenticated naming the failed claim: payload not a JSON object; iss mismatch; missing or
// non-matching aud; missing/non-numeric exp; expired; nbf or iat in the future beyond the skew;
// lifetime too long; missing sub; wrong token kind (typ/claims), nonce or azp mismatch.
absl::StatusOr<VerifiedJwt> ValidateClaims(const ParsedJws& jws, const ClaimsPolicy& policy,
                                           absl::Time now);

// Parse + key selection + signature + alg allowlist + claims, in that order. The error of the
// first failing step. NotFound when no key in `keys` matches the token's kid/alg (callers refresh
// the key set once and retry: see oidc.h JwksCache).
absl::StatusOr<VerifiedJwt> VerifyJwt(std::string_view token, const JwkSet& keys,
                                      const std::vector<JwsAlg>& allowed_algs,
                                      const ClaimsPolicy& policy, absl::Time now,
                                      const JwsLimits& limits = {});

}  // namespace warden::auth::jose
