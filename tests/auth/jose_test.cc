// JWS/JWK/JWT verification (issue 3, must-show 3: the JWT attacks). Keys are generated in the
// test; each attack test builds the forged token an attacker would send and checks that it is
// refused for the stated reason, next to a control token that verifies, so a removed defence
// shows up as a failing test rather than as a refusal for some unrelated reason.
#include "auth/jose.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/encoding.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jwt_signer.h"

namespace warden::auth::jose {
namespace {

using common::Json;
using testing::B64;
using ::testing::HasSubstr;
using testing::SignJwt;
using testing::TestKey;

constexpr char kIssuer[] = "https://idp.example.com";
constexpr char kAudience[] = "https://gpuwarden.example.com/api";
const absl::Time kNow = absl::FromUnixSeconds(1'750'000'000);

// Keys are generated once per test process, each only when first used: RSA key generation is
// the slow part of this suite, and ctest runs every test in its own process.
class Keys {
 public:
  const TestKey& rsa() const { return Get(rsa_, TestKey::Type::kRsa2048); }
  const TestKey& rsa2() const { return Get(rsa2_, TestKey::Type::kRsa2048); }
  const TestKey& p256() const { return Get(p256_, TestKey::Type::kP256); }
  const TestKey& p384() const { return Get(p384_, TestKey::Type::kP384); }
  const TestKey& ed() const { return Get(ed_, TestKey::Type::kEd25519); }

 private:
  static const TestKey& Get(std::optional<TestKey>& slot, TestKey::Type type) {
    if (!slot) slot = TestKey::Generate(type);
    return *slot;
  }
  mutable std::optional<TestKey> rsa_, rsa2_, p256_, p384_, ed_;
};

const Keys& TheKeys() {
  static const Keys* keys = new Keys();
  return *keys;
}

JwkSet ProviderKeys() {
  const Keys& k = TheKeys();
  Json set = {{"keys",
               {k.rsa().PublicJwk("rsa-1"), k.p256().PublicJwk("ec-1"),
                k.p384().PublicJwk("ec-384"), k.ed().PublicJwk("ed-1")}}};
  absl::StatusOr<JwkSet> parsed = JwkSet::Parse(set.dump());
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return *parsed;
}

Json Claims() {
  int64_t now = absl::ToUnixSeconds(kNow);
  return {{"iss", kIssuer},   {"aud", kAudience},         {"sub", "user-42"},  {"iat", now - 10},
          {"exp", now + 600}, {"groups", {"gpu-admins"}}, {"client_id", "cli"}};
}

Json Header(const std::string& alg, const std::string& kid, const std::string& typ = "at+jwt") {
  Json h = {{"alg", alg}};
  if (!kid.empty()) h["kid"] = kid;
  if (!typ.empty()) h["typ"] = typ;
  return h;
}

ClaimsPolicy AccessPolicy() {
  ClaimsPolicy p;
  p.issuer = kIssuer;
  p.audiences = {kAudience};
  p.kind = TokenKind::kAccessToken;
  return p;
}

absl::StatusOr<VerifiedJwt> Verify(const std::string& token,
                                   const ClaimsPolicy& policy = AccessPolicy(),
                                   std::vector<JwsAlg> algs = AllJwsAlgs(), absl::Time now = kNow) {
  static const JwkSet* keys = new JwkSet(ProviderKeys());
  return VerifyJwt(token, *keys, algs, policy, now);
}

std::string RsaToken(const Json& claims = Claims(), const Json& header = Header("RS256", "rsa-1")) {
  return SignJwt(TheKeys().rsa(), header, claims);
}

void ExpectRefused(const absl::StatusOr<VerifiedJwt>& r, const std::string& why) {
  ASSERT_FALSE(r.ok()) << "forged token was accepted";
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(why));
}

// ---------------------------------------------------------------------------------------------
// Tokens that must verify (the controls for every attack below)

TEST(JwtVerifyTest, AcceptsEverySupportedAlgorithm) {
  const Keys& k = TheKeys();
  struct Case {
    const TestKey* key;
    std::string alg, kid;
  };
  for (const Case& c : std::vector<Case>{{&k.rsa(), "RS256", "rsa-1"},
                                         {&k.rsa(), "RS384", "rsa-1"},
                                         {&k.rsa(), "RS512", "rsa-1"},
                                         {&k.rsa(), "PS256", "rsa-1"},
                                         {&k.rsa(), "PS384", "rsa-1"},
                                         {&k.rsa(), "PS512", "rsa-1"},
                                         {&k.p256(), "ES256", "ec-1"},
                                         {&k.p384(), "ES384", "ec-384"},
                                         {&k.ed(), "EdDSA", "ed-1"}}) {
    absl::StatusOr<VerifiedJwt> r = Verify(SignJwt(*c.key, Header(c.alg, c.kid), Claims()));
    ASSERT_TRUE(r.ok()) << c.alg << ": " << r.status();
    EXPECT_EQ(r->subject, "user-42");
    EXPECT_EQ(r->issuer, kIssuer);
    EXPECT_EQ(r->claims["groups"][0], "gpu-admins");
  }
}

TEST(JwtVerifyTest, RefusesATamperedPayload) {
  std::string token = RsaToken();
  Json evil = Claims();
  evil["sub"] = "admin";
  size_t dot1 = token.find('.'), dot2 = token.rfind('.');
  std::string forged = token.substr(0, dot1 + 1) + B64(evil.dump()) + token.substr(dot2);
  ASSERT_TRUE(Verify(token).ok());
  ExpectRefused(Verify(forged), "does not verify");
}

// ---------------------------------------------------------------------------------------------
// Attacks on the header

TEST(JwtAttackTest, RefusesAlgNoneInEveryCase) {
  for (const char* alg : {"none", "None", "NONE", "nOnE"}) {
    Json h = {{"alg", alg}, {"typ", "at+jwt"}};
    std::string input = testing::SigningInput(h, Claims());
    // Unsigned form (empty signature) and with a leftover signature from a real token.
    ExpectRefused(Verify(input + "."), "unsigned tokens are refused");
    ExpectRefused(Verify(input + "." + B64(TheKeys().rsa().SignRaw("RS256", input))),
                  "(unsigned) is refused");
  }
}

TEST(JwtAttackTest, RefusesRs256TokenResignedAsHs256WithThePublicKey) {
  // The attacker takes the provider's public key (PEM and the raw JWK modulus, the two usual
  // "secrets" a confused verifier would use) and HMACs the token with it.
  std::string pem = TheKeys().rsa().PublicPem();
  for (const std::string& secret :
       {pem, TheKeys().rsa().PublicJwk("rsa-1").dump(),
        *common::Base64UrlDecode(TheKeys().rsa().PublicJwk("rsa-1")["n"].get<std::string>())}) {
    for (const char* alg : {"HS256", "hs256", "HS384", "HS512"}) {
      Json h = Header(alg, "rsa-1");
      std::string input = testing::SigningInput(h, Claims());
      std::string forged = input + "." + B64(testing::HmacSha256(secret, input));
      ExpectRefused(Verify(forged), "(symmetric) is refused");
    }
  }
}

TEST(JwtAttackTest, RefusesUnknownAlgorithms) {
  for (const char* alg : {"RS1", "ES256K", "ES512", "Ed25519", "rs256", "RSA-OAEP", "PS256 ", ""}) {
    Json h = Header("RS256", "rsa-1");
    h["alg"] = alg;
    std::string input = testing::SigningInput(h, Claims());
    std::string token = input + "." + B64(TheKeys().rsa().SignRaw("RS256", input));
    ExpectRefused(Verify(token), "is not supported");
  }
  Json h = {{"alg", 256}, {"kid", "rsa-1"}};
  ExpectRefused(Verify(testing::SigningInput(h, Claims()) + ".c2ln"), "no string \"alg\"");
}

TEST(JwtAttackTest, RefusesHeadersThatNameAnotherKey) {
  // The attacker signs with their own key and tells us where to find it. For `jwk` the key is
  // embedded; jku/x5u point at the attacker's server; x5c carries a self-signed chain. Even a
  // token signed with the provider's real key is refused: we never look at those headers.
  const TestKey& attacker = TheKeys().rsa2();
  std::vector<std::pair<std::string, Json>> headers = {
      {"jku", "https://attacker.example/jwks.json"},
      {"x5u", "https://attacker.example/cert.pem"},
      {"jwk", attacker.PublicJwk("rsa-1")},
      {"x5c", Json::array({"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"})}};
  for (const auto& [name, value] : headers) {
    Json h = Header("RS256", "rsa-1");
    h[name] = value;
    ExpectRefused(Verify(SignJwt(attacker, h, Claims())), "\"" + name + "\" is refused");
    ExpectRefused(Verify(SignJwt(TheKeys().rsa(), h, Claims())), "\"" + name + "\" is refused");
  }
}

TEST(JwtAttackTest, RefusesCritAndNonJwsHeaders) {
  for (const auto& [name, value] :
       std::vector<std::pair<std::string, Json>>{{"crit", Json::array({"exp"})},
                                                 {"b64", false},
                                                 {"zip", "DEF"},
                                                 {"enc", "A256GCM"},
                                                 {"cty", "JWT"}}) {
    Json h = Header("RS256", "rsa-1");
    h[name] = value;
    EXPECT_FALSE(Verify(RsaToken(Claims(), h)).ok()) << name;
  }
}

TEST(JwtAttackTest, KidWithPathTraversalOrSqlIsJustAnUnknownKey) {
  for (const char* kid :
       {"../../../../../../dev/null", "/etc/passwd", "rsa-1' OR '1'='1", "x'; DROP TABLE users; --",
        "rsa-1%00", "rsa-1/../rsa-1", "file:///etc/passwd", "%2e%2e%2f"}) {
    absl::StatusOr<VerifiedJwt> r = Verify(RsaToken(Claims(), Header("RS256", kid)));
    ASSERT_FALSE(r.ok()) << kid;
    EXPECT_TRUE(absl::IsNotFound(r.status())) << r.status();
  }
  // An over-long kid is refused before any lookup.
  ExpectRefused(Verify(RsaToken(Claims(), Header("RS256", std::string(300, 'a')))),
                "longer than 256");
}

TEST(JwtAttackTest, KeyOfTheWrongTypeIsNeverUsed) {
  // ES256 header naming the RSA key's kid (and the reverse): no key matches.
  ExpectRefused(Verify(SignJwt(TheKeys().p256(), Header("ES256", "rsa-1"), Claims())),
                "no key in the provider's JWK Set");
  ExpectRefused(Verify(SignJwt(TheKeys().rsa(), Header("RS256", "ec-1"), Claims())),
                "no key in the provider's JWK Set");
}

TEST(JwtAttackTest, AlgorithmAllowlistIsPerProvider) {
  std::string es = SignJwt(TheKeys().p256(), Header("ES256", "ec-1"), Claims());
  ASSERT_TRUE(Verify(es).ok());
  ExpectRefused(Verify(es, AccessPolicy(), {JwsAlg::kRS256}), "not allowed for this provider");
}

// ---------------------------------------------------------------------------------------------
// ECDSA signature encoding

TEST(JwtAttackTest, RefusesEcdsaWithZeroOrOutOfRangeRAndS) {
  std::string token = SignJwt(TheKeys().p256(), Header("ES256", "ec-1"), Claims());
  ASSERT_TRUE(Verify(token).ok());
  std::string input = token.substr(0, token.rfind('.'));
  // r = s = 0: CVE-2022-21449 ("psychic signatures") accepted this for every message.
  ExpectRefused(Verify(input + "." + B64(std::string(64, '\0'))), "outside [1, n-1]");
  // r = n, s = 1 and r = 1, s = 0xff..ff (above n).
  std::string n =
      *common::HexDecode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
  ExpectRefused(Verify(input + "." + B64(n + std::string(31, '\0') + "\x01")), "outside [1, n-1]");
  ExpectRefused(Verify(input + "." + B64(std::string(31, '\0') + "\x01" + std::string(32, '\xff'))),
                "outside [1, n-1]");
  // DER instead of raw r||s, and a truncated signature.
  ExpectRefused(Verify(input + "." + B64(std::string(70, '\x30'))), "must be 64 bytes");
  ExpectRefused(Verify(input + "." + B64(std::string(63, '\x01'))), "must be 64 bytes");
}

TEST(JwtAttackTest, RefusesRsaSignatureOfTheWrongLength) {
  std::string token = RsaToken();
  std::string input = token.substr(0, token.rfind('.'));
  std::string sig = *common::Base64UrlDecode(token.substr(token.rfind('.') + 1));
  ExpectRefused(Verify(input + "." + B64(std::string(1, '\0') + sig)), "length");
}

// ---------------------------------------------------------------------------------------------
// Claims

TEST(JwtClaimsTest, RefusesExpiredTokensAfterTheSkew) {
  Json c = Claims();
  c["exp"] = absl::ToUnixSeconds(kNow) - 61;
  ExpectRefused(Verify(RsaToken(c)), "expired");
  c["exp"] = absl::ToUnixSeconds(kNow) - 30;  // within the 60 s skew
  EXPECT_TRUE(Verify(RsaToken(c)).ok());
  // A policy cannot widen the skew beyond 5 minutes.
  ClaimsPolicy lax = AccessPolicy();
  lax.max_skew = absl::Hours(10);
  c["exp"] = absl::ToUnixSeconds(kNow) - 301;
  ExpectRefused(Verify(RsaToken(c), lax), "expired");
}

TEST(JwtClaimsTest, RefusesMissingOrMalformedExp) {
  Json c = Claims();
  c.erase("exp");
  ExpectRefused(Verify(RsaToken(c)), "no \"exp\"");
  c["exp"] = "tomorrow";
  ExpectRefused(Verify(RsaToken(c)), "not a number");
  c["exp"] = 1e300;
  ExpectRefused(Verify(RsaToken(c)), "out of range");
}

TEST(JwtClaimsTest, RefusesFutureNbfAndIat) {
  Json c = Claims();
  c["nbf"] = absl::ToUnixSeconds(kNow) + 120;
  ExpectRefused(Verify(RsaToken(c)), "not valid yet");
  c["nbf"] = absl::ToUnixSeconds(kNow) + 30;
  EXPECT_TRUE(Verify(RsaToken(c)).ok());
  c = Claims();
  c["iat"] = absl::ToUnixSeconds(kNow) + 3600;
  ExpectRefused(Verify(RsaToken(c)), "issued in the future");
}

TEST(JwtClaimsTest, RefusesWrongAudience) {
  Json c = Claims();
  c["aud"] = "https://other-service.example.com";
  ExpectRefused(Verify(RsaToken(c)), "audience");
  c["aud"] = Json::array({"a", "b"});
  ExpectRefused(Verify(RsaToken(c)), "audience");
  c["aud"] = Json::array({"a", kAudience});
  EXPECT_TRUE(Verify(RsaToken(c)).ok());
  c.erase("aud");
  ExpectRefused(Verify(RsaToken(c)), "no \"aud\"");
  c["aud"] = Json::array();
  ExpectRefused(Verify(RsaToken(c)), "\"aud\" is not");
}

TEST(JwtClaimsTest, RefusesWrongIssuer) {
  for (const char* iss :
       {"https://evil.example.com", "https://idp.example.com/", "https://IDP.example.com", ""}) {
    Json c = Claims();
    c["iss"] = iss;
    ExpectRefused(Verify(RsaToken(c)), "issuer");
  }
}

TEST(JwtClaimsTest, RefusesOverlongLifetimeAndMissingSubject) {
  Json c = Claims();
  c["exp"] = absl::ToUnixSeconds(kNow) + 30 * 86400;
  ExpectRefused(Verify(RsaToken(c)), "lifetime");
  c = Claims();
  c.erase("sub");
  ExpectRefused(Verify(RsaToken(c)), "no \"sub\"");
}

TEST(JwtClaimsTest, RefusesAnIdTokenPresentedAsAnAccessToken) {
  // An OIDC ID token: typ JWT (or none), aud = the client, nonce and at_hash present.
  Json id = Claims();
  id["aud"] = Json::array({kAudience, "cli"});
  id["nonce"] = "n-0S6_WzA2Mj";
  id["at_hash"] = "77QmUPtjPfzWtF2AnpK9RQ";
  for (const char* typ : {"JWT", ""}) {
    std::string token = RsaToken(id, Header("RS256", "rsa-1", typ));
    ExpectRefused(Verify(token), "not an access token");
    // Providers without at+jwt: the ID-token-only claims still give it away.
    ClaimsPolicy legacy = AccessPolicy();
    legacy.require_at_jwt_typ = false;
    ExpectRefused(Verify(token, legacy), "is an ID token");
  }
  // Control: a typ JWT access token without ID-token claims passes under the legacy rule.
  ClaimsPolicy legacy = AccessPolicy();
  legacy.require_at_jwt_typ = false;
  EXPECT_TRUE(Verify(RsaToken(Claims(), Header("RS256", "rsa-1", "JWT")), legacy).ok());
}

TEST(JwtClaimsTest, IdTokenChecksAudienceAzpNonceAndRefusesAccessTokens) {
  ClaimsPolicy p;
  p.issuer = kIssuer;
  p.kind = TokenKind::kIdToken;
  p.client_id = "cli";
  p.nonce = "n-123";
  Json id = Claims();
  id["aud"] = "cli";
  id["nonce"] = "n-123";
  EXPECT_TRUE(Verify(RsaToken(id, Header("RS256", "rsa-1", "JWT")), p).ok());
  ExpectRefused(Verify(RsaToken(id, Header("RS256", "rsa-1", "at+jwt")), p), "is an access token");
  id["nonce"] = "n-124";
  ExpectRefused(Verify(RsaToken(id, Header("RS256", "rsa-1", "JWT")), p), "nonce");
  id["nonce"] = "n-123";
  id["aud"] = Json::array({"cli", "other"});
  ExpectRefused(Verify(RsaToken(id, Header("RS256", "rsa-1", "JWT")), p), "azp");
  id["azp"] = "cli";
  EXPECT_TRUE(Verify(RsaToken(id, Header("RS256", "rsa-1", "JWT")), p).ok());
  id["aud"] = kAudience;  // an access token's audience
  ExpectRefused(Verify(RsaToken(id, Header("RS256", "rsa-1", "JWT")), p), "audience");
}

// ---------------------------------------------------------------------------------------------
// Compact serialization parsing

TEST(JwsParseTest, RefusesMalformedCompactSerialization) {
  std::string good = RsaToken();
  ASSERT_TRUE(ParseCompactJws(good).ok());
  size_t dot1 = good.find('.');
  std::vector<std::string> bad = {
      "",
      "a.b",
      "a.b.c.d",
      good + ".",
      "." + good.substr(dot1 + 1),
      good.substr(0, dot1) + "..sig",
      good + "=",                                            // padding
      good.substr(0, dot1) + "+" + good.substr(dot1),        // standard base64 alphabet
      std::string(20000, 'a') + ".b.c",                      // oversize
      B64("[1]") + ".e30.c2ln",                              // header not an object
      B64(R"({"alg":"RS256","alg":"none"})") + ".e30.c2ln",  // duplicate keys
      B64(R"({"alg":"RS256",)") + ".e30.c2ln",               // truncated JSON
      B64(R"({"alg":"RS256","kid":7})") + ".e30.c2ln",
  };
  for (const std::string& t : bad) {
    absl::StatusOr<ParsedJws> r = ParseCompactJws(t);
    EXPECT_FALSE(r.ok()) << t.substr(0, 80);
    if (!r.ok()) {
      EXPECT_TRUE(absl::IsInvalidArgument(r.status()));
    }
  }
}

TEST(JwsParseTest, NonJsonPayloadFailsClaimsNotParsing) {
  Json h = Header("RS256", "rsa-1");
  std::string input = B64(h.dump()) + "." + B64("not json");
  std::string token = input + "." + B64(TheKeys().rsa().SignRaw("RS256", input));
  ExpectRefused(Verify(token), "JWT payload");
}

// ---------------------------------------------------------------------------------------------
// JWK / JWK Set

TEST(JwkTest, RefusesWeakOrInvalidKeys) {
  TestKey small = TestKey::Generate(TestKey::Type::kRsa1024);
  EXPECT_THAT(std::string(Jwk::FromJson(small.PublicJwk("k")).status().message()),
              HasSubstr("1024 bits"));

  Json ec = TheKeys().p256().PublicJwk("k");
  std::string y = *common::Base64UrlDecode(ec["y"].get<std::string>());
  y[31] = static_cast<char>(y[31] ^ 1);  // moves the point off the curve
  ec["y"] = B64(y);
  EXPECT_THAT(std::string(Jwk::FromJson(ec).status().message()), HasSubstr("not on the curve"));
  ec["y"] = B64(y.substr(1));
  EXPECT_THAT(std::string(Jwk::FromJson(ec).status().message()), HasSubstr("32 bytes"));

  Json rsa = TheKeys().rsa().PublicJwk("k");
  rsa["e"] = B64(std::string(1, '\x01'));
  EXPECT_FALSE(Jwk::FromJson(rsa).ok());
  rsa = TheKeys().rsa().PublicJwk("k");
  rsa["d"] = "AQAB";
  EXPECT_THAT(std::string(Jwk::FromJson(rsa).status().message()), HasSubstr("private member"));
}

TEST(JwkTest, SetSkipsEncryptionAndUnknownKeysButRefusesDuplicateKids) {
  Json enc = TheKeys().rsa2().PublicJwk("enc-1");
  enc["use"] = "enc";
  Json oct = {{"kty", "oct"}, {"kid", "sym"}, {"alg", "HS256"}};
  Json set = {{"keys", {TheKeys().rsa().PublicJwk("rsa-1"), enc, oct}}};
  absl::StatusOr<JwkSet> parsed = JwkSet::Parse(set.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->keys().size(), 2u);
  EXPECT_EQ(parsed->skipped(), 1u);
  JwsHeader h;
  h.alg = JwsAlg::kRS256;
  h.kid = "enc-1";
  EXPECT_EQ(parsed->Select(h), nullptr);  // an encryption key never verifies
  h.kid = "rsa-1";
  EXPECT_NE(parsed->Select(h), nullptr);

  Json dup = {{"keys", {TheKeys().rsa().PublicJwk("k"), TheKeys().rsa2().PublicJwk("k")}}};
  EXPECT_THAT(std::string(JwkSet::Parse(dup.dump()).status().message()), HasSubstr("two keys"));
  EXPECT_FALSE(JwkSet::Parse(R"({"keys":{}})").ok());
  EXPECT_FALSE(JwkSet::Parse("[]").ok());
}

TEST(JwkTest, KeyWithoutKidIsSelectedOnlyWhenUnambiguous) {
  Json one = {{"keys", {TheKeys().rsa().PublicJwk("")}}};
  JwkSet set = *JwkSet::Parse(one.dump());
  JwsHeader h;
  h.alg = JwsAlg::kRS256;
  EXPECT_NE(set.Select(h), nullptr);
  Json two = {{"keys", {TheKeys().rsa().PublicJwk(""), TheKeys().rsa2().PublicJwk("")}}};
  JwkSet set2 = *JwkSet::Parse(two.dump());
  EXPECT_EQ(set2.Select(h), nullptr);
}

TEST(JwkTest, JwkAlgPinsTheKeyToOneAlgorithm) {
  Json set = {{"keys", {TheKeys().rsa().PublicJwk("rsa-1", "RS256")}}};
  JwkSet keys = *JwkSet::Parse(set.dump());
  std::string ps = SignJwt(TheKeys().rsa(), Header("PS256", "rsa-1"), Claims());
  std::string rs = SignJwt(TheKeys().rsa(), Header("RS256", "rsa-1"), Claims());
  EXPECT_TRUE(VerifyJwt(rs, keys, AllJwsAlgs(), AccessPolicy(), kNow).ok());
  EXPECT_TRUE(absl::IsNotFound(VerifyJwt(ps, keys, AllJwsAlgs(), AccessPolicy(), kNow).status()));
}

}  // namespace
}  // namespace warden::auth::jose
