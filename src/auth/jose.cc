// JWS/JWK/JWT over OpenSSL 3 EVP. Every refusal below answers a known JWT attack; RFC 8725
// (JWT Best Current Practices) is the checklist, and docs/threat-model.md maps each to its test.
#include "auth/jose.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <utility>

#include "common/encoding.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::auth::jose {
namespace {

using common::Json;
using common::StrCat;

constexpr size_t kMaxKidBytes = 256;
constexpr int kMinRsaBits = 2048;
constexpr int kMaxRsaBits = 8192;  // bigger moduli only cost verification time (DoS)
constexpr absl::Duration kMaxSkew = absl::Minutes(5);

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
struct ParamBldFree {
  void operator()(OSSL_PARAM_BLD* b) const { OSSL_PARAM_BLD_free(b); }
};
struct ParamFree {
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;

struct AlgInfo {
  JwsAlg alg;
  std::string_view name;
  const char* digest;  // nullptr for EdDSA
  enum class Family { kRsaPkcs1, kRsaPss, kEcdsa, kEdDsa } family;
  std::string_view curve;  // JWK crv for ECDSA / EdDSA
  size_t coord_bytes;      // ECDSA: size of r and of s
};

constexpr AlgInfo kAlgs[] = {
    {JwsAlg::kRS256, "RS256", "SHA256", AlgInfo::Family::kRsaPkcs1, "", 0},
    {JwsAlg::kRS384, "RS384", "SHA384", AlgInfo::Family::kRsaPkcs1, "", 0},
    {JwsAlg::kRS512, "RS512", "SHA512", AlgInfo::Family::kRsaPkcs1, "", 0},
    {JwsAlg::kPS256, "PS256", "SHA256", AlgInfo::Family::kRsaPss, "", 0},
    {JwsAlg::kPS384, "PS384", "SHA384", AlgInfo::Family::kRsaPss, "", 0},
    {JwsAlg::kPS512, "PS512", "SHA512", AlgInfo::Family::kRsaPss, "", 0},
    {JwsAlg::kES256, "ES256", "SHA256", AlgInfo::Family::kEcdsa, "P-256", 32},
    {JwsAlg::kES384, "ES384", "SHA384", AlgInfo::Family::kEcdsa, "P-384", 48},
    {JwsAlg::kEdDSA, "EdDSA", nullptr, AlgInfo::Family::kEdDsa, "Ed25519", 0},
};

const AlgInfo& Info(JwsAlg alg) {
  for (const AlgInfo& a : kAlgs) {
    if (a.alg == alg) return a;
  }
  return kAlgs[0];  // unreachable: every enumerator has a row
}

// Digests fetched once: OpenSSL 3 looks a name up on every EVP_get_digestbyname-style call.
const EVP_MD* Digest(const char* name) {
  static EVP_MD* const kSha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  static EVP_MD* const kSha384 = EVP_MD_fetch(nullptr, "SHA384", nullptr);
  static EVP_MD* const kSha512 = EVP_MD_fetch(nullptr, "SHA512", nullptr);
  std::string_view n(name);
  if (n == "SHA256") return kSha256;
  if (n == "SHA384") return kSha384;
  return kSha512;
}

// Curve orders, for the ECDSA range check on r and s.
const BIGNUM* CurveOrder(std::string_view crv) {
  static const EC_GROUP* const kP256 = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
  static const EC_GROUP* const kP384 = EC_GROUP_new_by_curve_name(NID_secp384r1);
  return EC_GROUP_get0_order(crv == "P-256" ? kP256 : kP384);
}

bool IsAsciiCaseInsensitive(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

absl::Status Bad(std::string_view what) { return absl::InvalidArgumentError(std::string(what)); }

absl::StatusOr<std::string> DecodePart(std::string_view part, std::string_view name) {
  if (part.empty()) return Bad(StrCat("JWS ", name, " is empty"));
  std::optional<std::string> bytes = common::Base64UrlDecode(part);
  if (!bytes) {
    return Bad(StrCat("JWS ", name, " is not canonical unpadded base64url"));
  }
  return std::move(*bytes);
}

// A base64url member of a JWK decoded to bytes; InvalidArgument naming the member.
absl::StatusOr<std::string> JwkBytes(const Json& jwk, const char* member) {
  auto it = jwk.find(member);
  if (it == jwk.end()) return Bad(StrCat("JWK has no \"", member, "\""));
  if (!it->is_string()) return Bad(StrCat("JWK \"", member, "\" is not a string"));
  std::optional<std::string> bytes = common::Base64UrlDecode(it->get_ref<const std::string&>());
  if (!bytes || bytes->empty()) {
    return Bad(StrCat("JWK \"", member, "\" is not non-empty base64url"));
  }
  return std::move(*bytes);
}

BnPtr Bn(std::string_view bytes) {
  return BnPtr(BN_bin2bn(reinterpret_cast<const unsigned char*>(bytes.data()),
                         static_cast<int>(bytes.size()), nullptr));
}

absl::StatusOr<std::shared_ptr<EVP_PKEY>> FromParams(const char* type, OSSL_PARAM_BLD* bld) {
  std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld));
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(
      EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) {
    return absl::InternalError(StrCat("OpenSSL cannot build a ", type, " key"));
  }
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    return Bad(StrCat("JWK is not a valid ", type, " public key"));
  }
  return std::shared_ptr<EVP_PKEY>(raw, PkeyFree());
}

absl::StatusOr<std::shared_ptr<EVP_PKEY>> RsaKey(const Json& jwk) {
  WARDEN_ASSIGN_OR_RETURN(std::string n, JwkBytes(jwk, "n"));
  WARDEN_ASSIGN_OR_RETURN(std::string e, JwkBytes(jwk, "e"));
  size_t lead = n.find_first_not_of('\0');
  if (lead == std::string::npos) return Bad("JWK RSA modulus is zero");
  n.erase(0, lead);
  int bits = static_cast<int>(n.size() * 8);
  for (unsigned char top = static_cast<unsigned char>(n[0]); (top & 0x80) == 0; top <<= 1) --bits;
  if (bits < kMinRsaBits || bits > kMaxRsaBits) {
    return Bad(
        StrCat("JWK RSA modulus has ", bits, " bits; allowed ", kMinRsaBits, "-", kMaxRsaBits));
  }
  // A tiny or even exponent is a broken (or hostile) key; e = 1 would make every "signature"
  // equal to its padded message.
  if (e.size() > 8 || (static_cast<unsigned char>(e.back()) & 1) == 0) {
    return Bad("JWK RSA exponent must be odd and at most 64 bits");
  }
  BnPtr bn_n = Bn(n);
  BnPtr bn_e = Bn(e);
  if (!bn_n || !bn_e) return absl::InternalError("BN_bin2bn failed");
  if (BN_cmp(bn_e.get(), BN_value_one()) <= 0) {
    return Bad("JWK RSA exponent must be at least 3");
  }
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    return absl::InternalError("OSSL_PARAM_BLD failed");
  }
  return FromParams("RSA", bld.get());
}

absl::StatusOr<std::shared_ptr<EVP_PKEY>> EcKey(const Json& jwk, std::string_view crv) {
  const size_t len = crv == "P-256" ? 32 : 48;
  WARDEN_ASSIGN_OR_RETURN(std::string x, JwkBytes(jwk, "x"));
  WARDEN_ASSIGN_OR_RETURN(std::string y, JwkBytes(jwk, "y"));
  // RFC 7518 6.2.1.2: x and y are the full coordinate size, so one key has one encoding.
  if (x.size() != len || y.size() != len) {
    return Bad(StrCat("JWK ", crv, " coordinates must be ", len, " bytes each"));
  }
  std::string point = StrCat(std::string(1, '\x04'), x, y);
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  const char* group = crv == "P-256" ? "P-256" : "P-384";
  if (!bld ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    return absl::InternalError("OSSL_PARAM_BLD failed");
  }
  absl::StatusOr<std::shared_ptr<EVP_PKEY>> key = FromParams("EC", bld.get());
  if (!key.ok()) return Bad(StrCat("JWK ", crv, " point is not on the curve"));
  // Full public-key validation (on the curve, not the point at infinity, right order): an
  // invalid-curve point would let an attacker learn nothing here (we only verify), but a key we
  // cannot trust to be a real curve point has no business in the key set.
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> check(
      EVP_PKEY_CTX_new_from_pkey(nullptr, key->get(), nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    return Bad(StrCat("JWK ", crv, " point is not on the curve"));
  }
  return key;
}

absl::StatusOr<std::shared_ptr<EVP_PKEY>> OkpKey(const Json& jwk) {
  WARDEN_ASSIGN_OR_RETURN(std::string x, JwkBytes(jwk, "x"));
  if (x.size() != 32) return Bad("JWK Ed25519 \"x\" must be 32 bytes");
  EVP_PKEY* raw = EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(x.data()), x.size());
  if (raw == nullptr) return Bad("JWK Ed25519 key is invalid");
  return std::shared_ptr<EVP_PKEY>(raw, PkeyFree());
}

bool IsSupportedKey(const std::string& kty, const std::string& crv) {
  if (kty == "RSA") return true;
  if (kty == "EC") return crv == "P-256" || crv == "P-384";
  if (kty == "OKP") return crv == "Ed25519";
  return false;
}

absl::StatusOr<double> NumericDate(const Json& claims, const char* name, bool required) {
  auto it = claims.find(name);
  if (it == claims.end()) {
    if (required) return absl::UnauthenticatedError(StrCat("JWT has no \"", name, "\" claim"));
    return std::nan("");
  }
  if (!it->is_number()) {
    return absl::UnauthenticatedError(StrCat("JWT \"", name, "\" is not a number"));
  }
  double v = it->get<double>();
  // 0 .. year 9999: anything else is garbage that would overflow absl::Time arithmetic.
  if (!std::isfinite(v) || v < 0 || v > 253402300799.0) {
    return absl::UnauthenticatedError(StrCat("JWT \"", name, "\" is out of range"));
  }
  return v;
}

std::string NormalizedTyp(std::string_view typ) {
  std::string t;
  for (char c : typ) t.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (t.rfind("application/", 0) == 0) t.erase(0, 12);
  return t;
}

// Per-thread cache of verification contexts, keyed by (key, alg). An EVP_PKEY_CTX is not safe to
// share between threads, hence thread_local. Each context holds a reference on its EVP_PKEY, so a
// cached key's address cannot be reused by another key while its entry exists (no stale hit
// after a key rotation frees the old key). Bounded: cleared when full.
class VerifyContextCache {
 public:
  ~VerifyContextCache() { Clear(); }
  EVP_PKEY_CTX* Get(EVP_PKEY* pkey, const AlgInfo& info) {
    for (const Entry& e : entries_) {
      if (e.pkey == pkey && e.alg == info.alg) return e.ctx;
    }
    if (entries_.size() >= 32) Clear();
    EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_pkey(nullptr, pkey, nullptr);
    if (ctx == nullptr) return nullptr;
    const EVP_MD* md = Digest(info.digest);
    bool ok = EVP_PKEY_verify_init(ctx) == 1 && EVP_PKEY_CTX_set_signature_md(ctx, md) == 1;
    if (ok && info.family == AlgInfo::Family::kRsaPss) {
      // RFC 7518 3.5: MGF1 with the same hash, salt length = hash length.
      ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) == 1 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST) == 1 &&
           EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) == 1;
    } else if (ok && info.family == AlgInfo::Family::kRsaPkcs1) {
      ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1;
    }
    if (!ok) {
      EVP_PKEY_CTX_free(ctx);
      return nullptr;
    }
    entries_.push_back({pkey, info.alg, ctx});
    return ctx;
  }

 private:
  struct Entry {
    EVP_PKEY* pkey;
    JwsAlg alg;
    EVP_PKEY_CTX* ctx;
  };
  void Clear() {
    for (const Entry& e : entries_) EVP_PKEY_CTX_free(e.ctx);
    entries_.clear();
  }
  std::vector<Entry> entries_;
};

EVP_PKEY_CTX* VerifyContext(EVP_PKEY* pkey, const AlgInfo& info) {
  thread_local VerifyContextCache cache;
  return cache.Get(pkey, info);
}

}  // namespace

std::optional<JwsAlg> JwsAlgFromName(std::string_view name) {
  for (const AlgInfo& a : kAlgs) {
    if (a.name == name) return a.alg;
  }
  return std::nullopt;
}

std::string_view JwsAlgName(JwsAlg alg) { return Info(alg).name; }

std::vector<JwsAlg> AllJwsAlgs() {
  std::vector<JwsAlg> out;
  for (const AlgInfo& a : kAlgs) out.push_back(a.alg);
  return out;
}

absl::StatusOr<ParsedJws> ParseCompactJws(std::string_view token, const JwsLimits& limits) {
  if (token.size() > limits.max_token_bytes) {
    return Bad(StrCat("JWS is ", token.size(), " bytes; the limit is ", limits.max_token_bytes));
  }
  size_t dot1 = token.find('.');
  size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return Bad("JWS must have exactly three dot-separated parts (compact serialization)");
  }
  std::string_view header_b64 = token.substr(0, dot1);
  std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string_view sig_b64 = token.substr(dot2 + 1);
  if (header_b64.size() > limits.max_header_bytes * 4 / 3 + 4) {
    return Bad(StrCat("JWS header is larger than ", limits.max_header_bytes, " bytes"));
  }

  ParsedJws out;
  WARDEN_ASSIGN_OR_RETURN(std::string header_json, DecodePart(header_b64, "header"));
  // RFC 8725 2.1 / 3.1: an empty signature is what alg "none" produces; refused before anything.
  WARDEN_ASSIGN_OR_RETURN(out.payload, DecodePart(payload_b64, "payload"));
  if (sig_b64.empty()) return Bad("JWS signature is empty (unsigned tokens are refused)");
  WARDEN_ASSIGN_OR_RETURN(out.signature, DecodePart(sig_b64, "signature"));

  common::JsonLimits json_limits;
  json_limits.max_depth = limits.max_json_depth;
  json_limits.max_bytes = limits.max_header_bytes;
  absl::StatusOr<Json> header = common::ParseJsonStrict(header_json, json_limits);
  if (!header.ok()) return Bad(StrCat("JWS header: ", header.status().message()));
  if (!header->is_object()) return Bad("JWS header is not a JSON object");

  auto alg_it = header->find("alg");
  if (alg_it == header->end() || !alg_it->is_string()) {
    return Bad("JWS header has no string \"alg\"");
  }
  const std::string& alg_name = alg_it->get_ref<const std::string&>();
  if (IsAsciiCaseInsensitive(alg_name, "none")) {
    return Bad(StrCat("JWS alg \"", alg_name, "\" (unsigned) is refused"));
  }
  if (alg_name.size() >= 2 && IsAsciiCaseInsensitive(alg_name.substr(0, 2), "HS")) {
    // The key confusion attack: an HMAC "signature" keyed with the provider's public key.
    return Bad(StrCat("JWS alg \"", alg_name,
                      "\" (symmetric) is refused: only the provider's public keys verify tokens"));
  }
  std::optional<JwsAlg> alg = JwsAlgFromName(alg_name);
  if (!alg) return Bad(StrCat("JWS alg \"", alg_name.substr(0, 32), "\" is not supported"));
  out.header.alg = *alg;

  // Keys come only from the provider's configured JWKS: a header that carries or points at a key
  // lets the token choose the key that verifies it (RFC 8725 3.10 and the jku/x5u SSRF).
  for (const char* name : {"jku", "x5u", "jwk", "x5c"}) {
    if (header->contains(name)) {
      return Bad(StrCat("JWS header \"", name,
                        "\" is refused: keys come only from the provider's JWK Set"));
    }
  }
  if (header->contains("crit")) {
    return Bad("JWS header \"crit\" is refused: no JWS extensions are supported");
  }
  for (const char* name : {"b64", "zip", "enc"}) {
    if (header->contains(name)) {
      return Bad(StrCat("JWS header \"", name, "\" is refused (not a plain signed JWT)"));
    }
  }
  auto kid_it = header->find("kid");
  if (kid_it != header->end()) {
    if (!kid_it->is_string()) return Bad("JWS \"kid\" is not a string");
    out.header.kid = kid_it->get<std::string>();
    if (out.header.kid.size() > kMaxKidBytes) {
      return Bad(StrCat("JWS \"kid\" is longer than ", kMaxKidBytes, " bytes"));
    }
  }
  auto typ_it = header->find("typ");
  if (typ_it != header->end()) {
    if (!typ_it->is_string()) return Bad("JWS \"typ\" is not a string");
    out.header.typ = typ_it->get<std::string>();
  }
  auto cty_it = header->find("cty");
  if (cty_it != header->end()) {
    if (!cty_it->is_string()) return Bad("JWS \"cty\" is not a string");
    if (NormalizedTyp(cty_it->get_ref<const std::string&>()) == "jwt") {
      return Bad("nested JWTs (cty \"JWT\") are refused");
    }
  }
  out.signing_input = std::string(token.substr(0, dot2));
  return out;
}

absl::StatusOr<Jwk> Jwk::FromJson(const Json& jwk) {
  if (!jwk.is_object()) return Bad("JWK is not a JSON object");
  Jwk out;
  auto str = [&](const char* name, std::string* dst) -> absl::Status {
    auto it = jwk.find(name);
    if (it == jwk.end()) return absl::OkStatus();
    if (!it->is_string()) return Bad(StrCat("JWK \"", name, "\" is not a string"));
    *dst = it->get<std::string>();
    return absl::OkStatus();
  };
  WARDEN_RETURN_IF_ERROR(str("kty", &out.kty_));
  WARDEN_RETURN_IF_ERROR(str("kid", &out.kid_));
  WARDEN_RETURN_IF_ERROR(str("crv", &out.crv_));
  if (out.kty_.empty()) return Bad("JWK has no \"kty\"");
  if (out.kid_.size() > kMaxKidBytes) return Bad("JWK \"kid\" is too long");
  if (!IsSupportedKey(out.kty_, out.crv_)) {
    return absl::UnimplementedError(
        StrCat("JWK kty \"", out.kty_, "\" crv \"", out.crv_, "\" is not supported"));
  }
  // Private members mean the provider published its signing key: refuse the set loudly.
  for (const char* priv : {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}) {
    if (jwk.contains(priv)) {
      return Bad(StrCat("JWK contains private member \"", priv, "\""));
    }
  }
  std::string alg_name;
  WARDEN_RETURN_IF_ERROR(str("alg", &alg_name));
  if (!alg_name.empty()) {
    out.alg_ = JwsAlgFromName(alg_name);
    // A key declared for another alg (e.g. RSA-OAEP) is not a signature key for us.
    if (!out.alg_) out.usable_for_signatures_ = false;
  }
  std::string use;
  WARDEN_RETURN_IF_ERROR(str("use", &use));
  if (!use.empty() && use != "sig") out.usable_for_signatures_ = false;
  auto ops = jwk.find("key_ops");
  if (ops != jwk.end()) {
    if (!ops->is_array()) return Bad("JWK \"key_ops\" is not an array");
    bool verify = false;
    for (const Json& op : *ops) {
      if (!op.is_string()) return Bad("JWK \"key_ops\" has a non-string member");
      if (op.get_ref<const std::string&>() == "verify") verify = true;
    }
    if (!verify) out.usable_for_signatures_ = false;
  }
  if (out.kty_ == "RSA") {
    WARDEN_ASSIGN_OR_RETURN(out.pkey_, RsaKey(jwk));
  } else if (out.kty_ == "EC") {
    WARDEN_ASSIGN_OR_RETURN(out.pkey_, EcKey(jwk, out.crv_));
  } else {
    WARDEN_ASSIGN_OR_RETURN(out.pkey_, OkpKey(jwk));
  }
  return out;
}

bool Jwk::CanVerify(JwsAlg alg) const {
  if (!usable_for_signatures_ || !pkey_) return false;
  if (alg_ && *alg_ != alg) return false;
  const AlgInfo& info = Info(alg);
  switch (info.family) {
    case AlgInfo::Family::kRsaPkcs1:
    case AlgInfo::Family::kRsaPss:
      return kty_ == "RSA";
    case AlgInfo::Family::kEcdsa:
      return kty_ == "EC" && crv_ == info.curve;
    case AlgInfo::Family::kEdDsa:
      return kty_ == "OKP" && crv_ == info.curve;
  }
  return false;
}

absl::StatusOr<JwkSet> JwkSet::Parse(std::string_view json, size_t max_keys) {
  common::JsonLimits limits;
  limits.max_depth = 8;
  limits.max_bytes = 512 * 1024;
  absl::StatusOr<Json> doc = common::ParseJsonStrict(json, limits);
  if (!doc.ok()) return Bad(StrCat("JWK Set: ", doc.status().message()));
  if (!doc->is_object()) return Bad("JWK Set is not a JSON object");
  auto keys = doc->find("keys");
  if (keys == doc->end() || !keys->is_array()) return Bad("JWK Set has no \"keys\" array");
  if (keys->size() > max_keys) {
    return Bad(StrCat("JWK Set has ", keys->size(), " keys; the limit is ", max_keys));
  }
  JwkSet out;
  for (const Json& k : *keys) {
    absl::StatusOr<Jwk> key = Jwk::FromJson(k);
    if (absl::IsUnimplemented(key.status())) {
      ++out.skipped_;
      continue;
    }
    if (!key.ok()) return key.status();
    if (!key->kid().empty()) {
      for (const Jwk& other : out.keys_) {
        if (other.kid() == key->kid()) {
          return Bad(StrCat("JWK Set has two keys with kid \"", key->kid(), "\""));
        }
      }
    }
    out.keys_.push_back(std::move(*key));
  }
  return out;
}

const Jwk* JwkSet::Select(const JwsHeader& header) const {
  const Jwk* found = nullptr;
  for (const Jwk& k : keys_) {
    // The kid is only ever compared: never a path, a URL or a query (kid injection).
    if (!header.kid.empty() && k.kid() != header.kid) continue;
    if (!k.CanVerify(header.alg)) continue;
    if (found != nullptr) return nullptr;  // ambiguous without a kid
    found = &k;
  }
  return found;
}

absl::Status VerifySignature(const ParsedJws& jws, const Jwk& key) {
  const AlgInfo& info = Info(jws.header.alg);
  if (!key.CanVerify(jws.header.alg)) {
    return absl::UnauthenticatedError(
        StrCat("key \"", key.kid(), "\" cannot verify alg ", info.name));
  }
  EVP_PKEY* pkey = key.pkey();
  std::string der;  // ECDSA: the raw r||s re-encoded as DER for OpenSSL
  std::string_view sig = jws.signature;
  switch (info.family) {
    case AlgInfo::Family::kRsaPkcs1:
    case AlgInfo::Family::kRsaPss:
      if (sig.size() != static_cast<size_t>(EVP_PKEY_get_size(pkey))) {
        return absl::UnauthenticatedError("JWS signature length does not match the RSA key");
      }
      break;
    case AlgInfo::Family::kEcdsa: {
      // RFC 7518 3.4: the signature is r || s, each exactly coord_bytes. A zero r or s (the
      // "psychic signatures" bug, CVE-2022-21449) or one >= n must never reach a verifier.
      if (sig.size() != 2 * info.coord_bytes) {
        return absl::UnauthenticatedError(StrCat("JWS ", info.name, " signature must be ",
                                                 2 * info.coord_bytes, " bytes (r || s)"));
      }
      BnPtr r = Bn(sig.substr(0, info.coord_bytes));
      BnPtr s = Bn(sig.substr(info.coord_bytes));
      const BIGNUM* n = CurveOrder(info.curve);
      if (!r || !s || n == nullptr) return absl::InternalError("BN_bin2bn failed");
      if (BN_is_zero(r.get()) || BN_is_zero(s.get()) || BN_cmp(r.get(), n) >= 0 ||
          BN_cmp(s.get(), n) >= 0) {
        return absl::UnauthenticatedError("JWS ECDSA signature has r or s outside [1, n-1]");
      }
      ECDSA_SIG* es = ECDSA_SIG_new();
      if (es == nullptr || ECDSA_SIG_set0(es, r.get(), s.get()) != 1) {
        ECDSA_SIG_free(es);
        return absl::InternalError("ECDSA_SIG_set0 failed");
      }
      r.release();  // owned by es now
      s.release();
      unsigned char* buf = nullptr;
      int len = i2d_ECDSA_SIG(es, &buf);
      ECDSA_SIG_free(es);
      if (len <= 0) return absl::InternalError("i2d_ECDSA_SIG failed");
      der.assign(reinterpret_cast<char*>(buf), static_cast<size_t>(len));
      OPENSSL_free(buf);
      sig = der;
      break;
    }
    case AlgInfo::Family::kEdDsa:
      if (sig.size() != 64)
        return absl::UnauthenticatedError("JWS EdDSA signature must be 64 bytes");
      break;
  }

  int rc = 0;
  if (info.family == AlgInfo::Family::kEdDsa) {
    // Ed25519 signs the message itself (no pre-hash): one-shot DigestVerify.
    std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
    if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey) != 1) {
      return absl::InternalError("EVP_DigestVerifyInit failed");
    }
    rc = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                          reinterpret_cast<const unsigned char*>(jws.signing_input.data()),
                          jws.signing_input.size());
  } else {
    // Hash, then verify the digest with a context prepared once per (thread, key, alg): building
    // and initialising an EVP_PKEY_CTX per token was a third of the RS256 verification cost.
    const EVP_MD* md = Digest(info.digest);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    if (EVP_Digest(jws.signing_input.data(), jws.signing_input.size(), digest, &digest_len, md,
                   nullptr) != 1) {
      return absl::InternalError("EVP_Digest failed");
    }
    EVP_PKEY_CTX* pctx = VerifyContext(pkey, info);
    if (pctx == nullptr) return absl::InternalError("cannot prepare the verification context");
    rc = EVP_PKEY_verify(pctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                         digest, digest_len);
  }
  if (rc != 1) {
    // Leave no OpenSSL error behind for unrelated code on this thread (e.g. a TLS call) to find.
    ERR_clear_error();
    return absl::UnauthenticatedError(
        StrCat("JWS signature does not verify with key \"", key.kid(), "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<VerifiedJwt> ValidateClaims(const ParsedJws& jws, const ClaimsPolicy& policy,
                                           absl::Time now) {
  common::JsonLimits limits;
  limits.max_depth = 16;
  limits.max_bytes = 64 * 1024;
  absl::StatusOr<Json> claims = common::ParseJsonStrict(jws.payload, limits);
  if (!claims.ok()) {
    return absl::UnauthenticatedError(StrCat("JWT payload: ", claims.status().message()));
  }
  if (!claims->is_object()) return absl::UnauthenticatedError("JWT payload is not a JSON object");
  const Json& c = *claims;
  auto get_string = [&](const char* name) -> std::optional<std::string> {
    auto it = c.find(name);
    if (it == c.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
  };

  VerifiedJwt out;
  out.header = jws.header;
  std::optional<std::string> iss = get_string("iss");
  if (policy.issuer.empty()) return absl::FailedPreconditionError("claims policy has no issuer");
  if (!iss || *iss != policy.issuer) {
    return absl::UnauthenticatedError(StrCat("JWT issuer \"", iss.value_or("").substr(0, 200),
                                             "\" is not \"", policy.issuer, "\""));
  }
  out.issuer = *iss;

  // aud: a string or an array of strings; must name one of ours (RFC 7519 4.1.3).
  std::vector<std::string> aud;
  auto aud_it = c.find("aud");
  if (aud_it == c.end()) return absl::UnauthenticatedError("JWT has no \"aud\" claim");
  if (aud_it->is_string()) {
    aud.push_back(aud_it->get<std::string>());
  } else if (aud_it->is_array() && !aud_it->empty() && aud_it->size() <= 64) {
    for (const Json& a : *aud_it) {
      if (!a.is_string()) return absl::UnauthenticatedError("JWT \"aud\" has a non-string member");
      aud.push_back(a.get<std::string>());
    }
  } else {
    return absl::UnauthenticatedError("JWT \"aud\" is not a string or a short array of strings");
  }
  std::vector<std::string> wanted = policy.audiences;
  if (policy.kind == TokenKind::kIdToken) wanted = {policy.client_id};
  if (wanted.empty() || wanted.front().empty()) {
    return absl::FailedPreconditionError("claims policy has no audience");
  }
  bool aud_ok = std::any_of(aud.begin(), aud.end(), [&](const std::string& a) {
    return std::find(wanted.begin(), wanted.end(), a) != wanted.end();
  });
  if (!aud_ok) {
    return absl::UnauthenticatedError(
        StrCat("JWT audience does not include \"", wanted.front(), "\""));
  }

  absl::Duration skew = std::min(policy.max_skew, kMaxSkew);
  WARDEN_ASSIGN_OR_RETURN(double exp, NumericDate(c, "exp", /*required=*/true));
  WARDEN_ASSIGN_OR_RETURN(double nbf, NumericDate(c, "nbf", /*required=*/false));
  WARDEN_ASSIGN_OR_RETURN(double iat,
                          NumericDate(c, "iat", /*required=*/policy.kind == TokenKind::kIdToken));
  double now_s = absl::ToDoubleSeconds(now - absl::UnixEpoch());
  double skew_s = absl::ToDoubleSeconds(skew);
  if (now_s >= exp + skew_s) {
    return absl::UnauthenticatedError(
        StrCat("JWT expired ", static_cast<int64_t>(now_s - exp), " s ago"));
  }
  if (!std::isnan(nbf) && nbf > now_s + skew_s) {
    return absl::UnauthenticatedError("JWT is not valid yet (nbf is in the future)");
  }
  if (!std::isnan(iat) && iat > now_s + skew_s) {
    return absl::UnauthenticatedError("JWT was issued in the future (iat)");
  }
  if (policy.max_lifetime > absl::ZeroDuration()) {
    double start = std::isnan(iat) ? now_s : iat;
    if (exp - start > absl::ToDoubleSeconds(policy.max_lifetime) + skew_s) {
      return absl::UnauthenticatedError("JWT lifetime is longer than this provider allows");
    }
  }
  out.expires_at = absl::UnixEpoch() + absl::Seconds(static_cast<int64_t>(exp));

  std::optional<std::string> sub = get_string("sub");
  if (!sub || sub->empty()) return absl::UnauthenticatedError("JWT has no \"sub\" claim");
  out.subject = *sub;

  // Token kind: an ID token must never pass as an access token and vice versa (RFC 9068 4,
  // RFC 8725 3.11 "use explicit typing").
  std::string typ = NormalizedTyp(jws.header.typ);
  if (policy.kind == TokenKind::kAccessToken) {
    if (typ != "at+jwt") {
      if (policy.require_at_jwt_typ) {
        return absl::UnauthenticatedError(StrCat("JWT is not an access token: typ \"",
                                                 jws.header.typ.substr(0, 64),
                                                 "\" (expected \"at+jwt\")"));
      }
      for (const char* id_only : {"nonce", "at_hash", "c_hash"}) {
        if (c.contains(id_only)) {
          return absl::UnauthenticatedError(
              StrCat("JWT is an ID token (has \"", id_only, "\"), not an access token"));
        }
      }
    }
  } else {
    if (typ == "at+jwt") {
      return absl::UnauthenticatedError("JWT is an access token (typ at+jwt), not an ID token");
    }
    std::optional<std::string> azp = get_string("azp");
    if (aud.size() > 1 && (!azp || *azp != policy.client_id)) {
      return absl::UnauthenticatedError("ID token azp is not this client");
    }
    if (!policy.nonce.empty()) {
      std::optional<std::string> nonce = get_string("nonce");
      if (!nonce || !common::ConstantTimeEquals(*nonce, policy.nonce)) {
        return absl::UnauthenticatedError("ID token nonce does not match the request's");
      }
    }
  }
  out.claims = std::move(*claims);
  return out;
}

absl::StatusOr<VerifiedJwt> VerifyJwt(std::string_view token, const JwkSet& keys,
                                      const std::vector<JwsAlg>& allowed_algs,
                                      const ClaimsPolicy& policy, absl::Time now,
                                      const JwsLimits& limits) {
  absl::StatusOr<ParsedJws> jws = ParseCompactJws(token, limits);
  if (!jws.ok()) return absl::UnauthenticatedError(std::string(jws.status().message()));
  if (std::find(allowed_algs.begin(), allowed_algs.end(), jws->header.alg) == allowed_algs.end()) {
    return absl::UnauthenticatedError(
        StrCat("JWS alg ", JwsAlgName(jws->header.alg), " is not allowed for this provider"));
  }
  const Jwk* key = keys.Select(jws->header);
  if (key == nullptr) {
    return absl::NotFoundError(StrCat("no key in the provider's JWK Set matches kid \"",
                                      jws->header.kid.substr(0, 64), "\" and alg ",
                                      JwsAlgName(jws->header.alg)));
  }
  WARDEN_RETURN_IF_ERROR(VerifySignature(*jws, *key));
  return ValidateClaims(*jws, policy, now);
}

}  // namespace warden::auth::jose
