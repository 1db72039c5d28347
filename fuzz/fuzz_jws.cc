// Feeds arbitrary bytes to the JWS compact parser, then (when it parses) to signature verification
// against freshly generated keys and to claims validation. Invariants: nothing crashes, and no
// input ever verifies: the keys are made at start-up and their private halves are thrown away,
// so a success would be a forgery.
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "auth/jose.h"
#include "common/encoding.h"

namespace {

using warden::auth::jose::JwkSet;
using warden::common::Base64UrlEncode;
using warden::common::Json;

std::string Bn(EVP_PKEY* k, const char* name, int pad) {
  BIGNUM* bn = nullptr;
  EVP_PKEY_get_bn_param(k, name, &bn);
  int n = pad != 0 ? pad : BN_num_bytes(bn);
  std::string out(static_cast<size_t>(n), '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), n);
  BN_free(bn);
  return out;
}

const JwkSet& Keys() {
  static const JwkSet* keys = [] {
    EVP_PKEY* rsa = EVP_RSA_gen(2048);
    EVP_PKEY* ec = EVP_EC_gen("P-256");
    EVP_PKEY* ed = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
    unsigned char raw[32];
    size_t len = sizeof(raw);
    EVP_PKEY_get_raw_public_key(ed, raw, &len);
    Json set = {{"keys",
                 {{{"kty", "RSA"},
                   {"kid", "rsa-1"},
                   {"n", Base64UrlEncode(Bn(rsa, OSSL_PKEY_PARAM_RSA_N, 0))},
                   {"e", Base64UrlEncode(Bn(rsa, OSSL_PKEY_PARAM_RSA_E, 0))}},
                  {{"kty", "EC"},
                   {"crv", "P-256"},
                   {"kid", "ec-1"},
                   {"x", Base64UrlEncode(Bn(ec, OSSL_PKEY_PARAM_EC_PUB_X, 32))},
                   {"y", Base64UrlEncode(Bn(ec, OSSL_PKEY_PARAM_EC_PUB_Y, 32))}},
                  {{"kty", "OKP"},
                   {"crv", "Ed25519"},
                   {"kid", "ed-1"},
                   {"x", Base64UrlEncode(std::string_view(reinterpret_cast<char*>(raw), len))}}}}};
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ed);
    auto parsed = JwkSet::Parse(set.dump());
    if (!parsed.ok() || parsed->keys().size() != 3) std::abort();
    return new JwkSet(std::move(*parsed));
  }();
  return *keys;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace jose = warden::auth::jose;
  std::string_view token(reinterpret_cast<const char*>(data), size);
  auto jws = jose::ParseCompactJws(token);
  if (!jws.ok()) return 0;
  // The parser's promises: an asymmetric alg and a signing input that is a prefix of the token.
  if (token.substr(0, jws->signing_input.size()) != jws->signing_input) std::abort();
  if (const jose::Jwk* key = Keys().Select(jws->header)) {
    if (jose::VerifySignature(*jws, *key).ok()) std::abort();  // a forgery
  }
  jose::ClaimsPolicy policy;
  policy.issuer = "https://idp.example.com";
  policy.audiences = {"https://gpuwarden.example.com/api"};
  policy.client_id = "gpuwarden";
  for (auto kind : {jose::TokenKind::kAccessToken, jose::TokenKind::kIdToken}) {
    policy.kind = kind;
    auto claims = jose::ValidateClaims(*jws, policy, absl::FromUnixSeconds(1'750'000'000));
    if (claims.ok() && (claims->issuer != policy.issuer || claims->subject.empty())) std::abort();
  }
  if (jose::VerifyJwt(token, Keys(), jose::AllJwsAlgs(), policy,
                      absl::FromUnixSeconds(1'750'000'000))
          .ok()) {
    std::abort();
  }
  return 0;
}
