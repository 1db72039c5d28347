// Test-only token minting: fresh keys generated with OpenSSL in the test, their public JWKs, and
// compact JWS signing (including deliberately malformed or forged tokens for attack tests).
// Never linked into gpuwarden itself: the product only verifies.
#pragma once

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include "common/encoding.h"
#include "common/json.h"

namespace warden::auth::testing {

using common::Json;

class TestKey {
 public:
  enum class Type { kRsa2048, kRsa1024, kP256, kP384, kEd25519 };

  static TestKey Generate(Type type) {
    EVP_PKEY* k = nullptr;
    switch (type) {
      case Type::kRsa2048:
        k = EVP_RSA_gen(2048);
        break;
      case Type::kRsa1024:
        k = EVP_RSA_gen(1024);
        break;
      case Type::kP256:
        k = EVP_EC_gen("P-256");
        break;
      case Type::kP384:
        k = EVP_EC_gen("P-384");
        break;
      case Type::kEd25519:
        k = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
        break;
    }
    if (k == nullptr) throw std::runtime_error("key generation failed");
    TestKey out;
    out.type_ = type;
    out.pkey_.reset(k, EVP_PKEY_free);
    return out;
  }

  // The public JWK, with optional alg.
  Json PublicJwk(const std::string& kid, const std::string& alg = "") const {
    Json j = Json::object();
    if (!kid.empty()) j["kid"] = kid;
    if (!alg.empty()) j["alg"] = alg;
    j["use"] = "sig";
    switch (type_) {
      case Type::kRsa2048:
      case Type::kRsa1024:
        j["kty"] = "RSA";
        j["n"] = common::Base64UrlEncode(BnParam(OSSL_PKEY_PARAM_RSA_N, 0));
        j["e"] = common::Base64UrlEncode(BnParam(OSSL_PKEY_PARAM_RSA_E, 0));
        break;
      case Type::kP256:
      case Type::kP384: {
        size_t len = type_ == Type::kP256 ? 32 : 48;
        j["kty"] = "EC";
        j["crv"] = type_ == Type::kP256 ? "P-256" : "P-384";
        j["x"] = common::Base64UrlEncode(BnParam(OSSL_PKEY_PARAM_EC_PUB_X, len));
        j["y"] = common::Base64UrlEncode(BnParam(OSSL_PKEY_PARAM_EC_PUB_Y, len));
        break;
      }
      case Type::kEd25519: {
        unsigned char raw[32];
        size_t len = sizeof(raw);
        EVP_PKEY_get_raw_public_key(pkey_.get(), raw, &len);
        j["kty"] = "OKP";
        j["crv"] = "Ed25519";
        j["x"] = common::Base64UrlEncode(std::string_view(reinterpret_cast<char*>(raw), len));
        break;
      }
    }
    return j;
  }

  // SubjectPublicKeyInfo PEM: what an attacker would use as the "HMAC secret".
  std::string PublicPem() const {
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, pkey_.get());
    char* data = nullptr;
    long n = BIO_get_mem_data(bio, &data);
    std::string out(data, static_cast<size_t>(n));
    BIO_free(bio);
    return out;
  }

  // Signs `input` as JWS alg `alg` (RS*, PS*, ES*, EdDSA); ECDSA output is raw r||s.
  std::string SignRaw(std::string_view alg, std::string_view input) const {
    const EVP_MD* md = nullptr;
    std::string_view bits = alg.substr(2);
    if (alg != "EdDSA") {
      md = bits == "256" ? EVP_sha256() : bits == "384" ? EVP_sha384() : EVP_sha512();
    }
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    EVP_PKEY_CTX* pctx = nullptr;
    if (EVP_DigestSignInit(ctx.get(), &pctx, md, nullptr, pkey_.get()) != 1) {
      throw std::runtime_error("EVP_DigestSignInit");
    }
    if (alg.substr(0, 2) == "PS") {
      EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
      EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
    }
    size_t len = 0;
    auto in = reinterpret_cast<const unsigned char*>(input.data());
    EVP_DigestSign(ctx.get(), nullptr, &len, in, input.size());
    std::string sig(len, '\0');
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, in,
                       input.size()) != 1) {
      throw std::runtime_error("EVP_DigestSign");
    }
    sig.resize(len);
    if (alg.substr(0, 2) != "ES") return sig;
    size_t coord = bits == "256" ? 32 : 48;
    const unsigned char* p = reinterpret_cast<const unsigned char*>(sig.data());
    ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
    std::string raw(2 * coord, '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(es), reinterpret_cast<unsigned char*>(raw.data()),
                 static_cast<int>(coord));
    BN_bn2binpad(ECDSA_SIG_get0_s(es), reinterpret_cast<unsigned char*>(raw.data() + coord),
                 static_cast<int>(coord));
    ECDSA_SIG_free(es);
    return raw;
  }

 private:
  std::string BnParam(const char* name, size_t pad) const {
    BIGNUM* bn = nullptr;
    EVP_PKEY_get_bn_param(pkey_.get(), name, &bn);
    size_t n = pad != 0 ? pad : static_cast<size_t>(BN_num_bytes(bn));
    std::string out(n, '\0');
    BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n));
    BN_free(bn);
    return out;
  }

  Type type_ = Type::kRsa2048;
  std::shared_ptr<EVP_PKEY> pkey_;
};

inline std::string B64(std::string_view s) { return common::Base64UrlEncode(s); }

// header.payload with both JSON-serialised and base64url-encoded.
inline std::string SigningInput(const Json& header, const Json& payload) {
  return B64(header.dump()) + "." + B64(payload.dump());
}

// A correctly signed compact JWS.
inline std::string SignJwt(const TestKey& key, const Json& header, const Json& payload) {
  std::string input = SigningInput(header, payload);
  return input + "." + B64(key.SignRaw(header.at("alg").get<std::string>(), input));
}

// HMAC-SHA256 "signature" keyed with `secret` (the alg confusion attack).
inline std::string HmacSha256(std::string_view secret, std::string_view input) {
  unsigned char out[32];
  unsigned int len = sizeof(out);
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

}  // namespace warden::auth::testing
