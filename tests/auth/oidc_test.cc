// OIDC library pieces with a fake transport and a fake clock: discovery parsing, the JWKS cache
// (rotated-out keys, rate-limited refresh on unknown kid), claim mapping and the callback checks
// (state, iss). The real-provider flows are in tests/integration/oidc_test.cc.
#include "auth/oidc.h"

#include <atomic>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/encoding.h"
#include "common/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jwt_signer.h"

namespace warden::auth::oidc {
namespace {

using common::Json;
using ::testing::HasSubstr;
using testing::SignJwt;
using testing::TestKey;

constexpr char kIssuer[] = "https://idp.example.com";
constexpr char kApi[] = "https://gpuwarden.example.com/api";

class FakeHttp final : public OidcHttp {
 public:
  absl::StatusOr<http::ClientResponse> Do(
      std::string_view method, std::string_view url, std::string_view body,
      const std::vector<std::pair<std::string, std::string>>& headers) override {
    requests.push_back(std::string(method) + " " + std::string(url));
    auto it = routes.find(std::string(url));
    if (it == routes.end()) return absl::UnavailableError("no route");
    http::ClientResponse r;
    r.status = it->second.first;
    r.body = it->second.second;
    return r;
  }
  std::map<std::string, std::pair<int, std::string>> routes;
  std::vector<std::string> requests;
};

Json Discovery() {
  return {{"issuer", kIssuer},
          {"authorization_endpoint", std::string(kIssuer) + "/auth"},
          {"token_endpoint", std::string(kIssuer) + "/token"},
          {"jwks_uri", std::string(kIssuer) + "/jwks"},
          {"device_authorization_endpoint", std::string(kIssuer) + "/device/auth"},
          {"code_challenge_methods_supported", {"S256"}}};
}

std::string Jwks(std::initializer_list<std::pair<const TestKey*, std::string>> keys) {
  Json set = {{"keys", Json::array()}};
  for (const auto& [k, kid] : keys) set["keys"].push_back(k->PublicJwk(kid));
  return set.dump();
}

Json AccessClaims(const common::Clock& clock, Json groups = {"gpu-admins"}) {
  int64_t now = clock.NowUnix();
  return {{"iss", kIssuer}, {"aud", kApi},      {"sub", "alice"},
          {"iat", now},     {"exp", now + 300}, {"groups", groups}};
}

std::string AccessToken(const TestKey& key, const std::string& kid, const Json& claims) {
  return SignJwt(key, {{"alg", "RS256"}, {"typ", "at+jwt"}, {"kid", kid}}, claims);
}

ProviderConfig Config() {
  ProviderConfig c;
  c.name = "corp";
  c.issuer = kIssuer;
  c.client_id = "gpuwarden";
  c.client_secret = "s3cret";
  c.redirect_uri = "https://gpuwarden.example.com/api/v1/oidc/corp/callback";
  c.access_token_audiences = {kApi};
  c.mappings = {{"gpu-admins", "", "admin"}, {"ml-team", "ml", "developer"}};
  return c;
}

const TestKey& KeyA() {
  static const TestKey* k = new TestKey(TestKey::Generate(TestKey::Type::kRsa2048));
  return *k;
}
const TestKey& KeyB() {
  static const TestKey* k = new TestKey(TestKey::Generate(TestKey::Type::kRsa2048));
  return *k;
}

// ---------------------------------------------------------------------------------------------
// Discovery

TEST(DiscoveryTest, ParsesAndChecksTheIssuerExactly) {
  absl::StatusOr<ProviderMetadata> m = ParseDiscoveryDocument(Discovery().dump(), kIssuer);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->jwks_uri, "https://idp.example.com/jwks");
  EXPECT_EQ(m->code_challenge_methods_supported, std::vector<std::string>{"S256"});
  // Mix-up: another provider's (or a look-alike) metadata is refused.
  for (const char* other :
       {"https://idp.example.com/", "https://evil.example.com", "https://IDP.example.com"}) {
    EXPECT_THAT(std::string(ParseDiscoveryDocument(Discovery().dump(), other).status().message()),
                HasSubstr("is not the configured"));
  }
}

TEST(DiscoveryTest, RefusesMissingOrInsecureEndpointsAndBadJson) {
  Json d = Discovery();
  d.erase("jwks_uri");
  EXPECT_THAT(std::string(ParseDiscoveryDocument(d.dump(), kIssuer).status().message()),
              HasSubstr("no \"jwks_uri\""));
  d = Discovery();
  d["jwks_uri"] = "http://idp.example.com/jwks";
  EXPECT_THAT(std::string(ParseDiscoveryDocument(d.dump(), kIssuer).status().message()),
              HasSubstr("not an https URL"));
  d = Discovery();
  d["token_endpoint"] = "https://user:pw@idp.example.com/token";
  EXPECT_FALSE(ParseDiscoveryDocument(d.dump(), kIssuer).ok());
  d["token_endpoint"] = 5;
  EXPECT_FALSE(ParseDiscoveryDocument(d.dump(), kIssuer).ok());
  EXPECT_FALSE(ParseDiscoveryDocument(R"({"issuer":"a","issuer":"b"})", "a").ok());
  EXPECT_FALSE(ParseDiscoveryDocument("[]", kIssuer).ok());
}

// ---------------------------------------------------------------------------------------------
// JWKS cache

TEST(JwksCacheTest, TokenSignedByARotatedOutKeyIsRefusedAfterRefresh) {
  common::FakeClock clock;
  std::string jwks = Jwks({{&KeyA(), "a"}});
  int fetches = 0;
  JwksCache cache(
      [&]() -> absl::StatusOr<std::string> {
        ++fetches;
        return jwks;
      },
      clock);
  jose::ClaimsPolicy policy;
  policy.issuer = kIssuer;
  policy.audiences = {kApi};
  std::vector<jose::JwsAlg> algs = {jose::JwsAlg::kRS256};

  std::string old_token = AccessToken(KeyA(), "a", AccessClaims(clock));
  ASSERT_TRUE(cache.Verify(old_token, algs, policy).ok());

  // The provider rotates: key a is removed, key b published. A token with the new kid makes the
  // cache refetch; afterwards the old key is gone, and so is every token it signed.
  jwks = Jwks({{&KeyB(), "b"}});
  clock.Advance(absl::Seconds(31));
  std::string new_token = AccessToken(KeyB(), "b", AccessClaims(clock));
  ASSERT_TRUE(cache.Verify(new_token, algs, policy).ok());
  EXPECT_EQ(fetches, 2);
  absl::StatusOr<jose::VerifiedJwt> r = cache.Verify(old_token, algs, policy);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsUnauthenticated(r.status())) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("no key"));
}

TEST(JwksCacheTest, RotatedOutKeyStopsVerifyingWithinMaxAgeEvenWithoutNewKids) {
  common::FakeClock clock;
  std::string jwks = Jwks({{&KeyA(), "a"}});
  JwksCache cache([&]() -> absl::StatusOr<std::string> { return jwks; }, clock);
  jose::ClaimsPolicy policy;
  policy.issuer = kIssuer;
  policy.audiences = {kApi};
  std::vector<jose::JwsAlg> algs = {jose::JwsAlg::kRS256};
  ASSERT_TRUE(cache.Verify(AccessToken(KeyA(), "a", AccessClaims(clock)), algs, policy).ok());
  jwks = Jwks({{&KeyB(), "b"}});
  clock.Advance(absl::Minutes(59));
  EXPECT_TRUE(cache.Verify(AccessToken(KeyA(), "a", AccessClaims(clock)), algs, policy).ok());
  clock.Advance(absl::Minutes(2));
  EXPECT_FALSE(cache.Verify(AccessToken(KeyA(), "a", AccessClaims(clock)), algs, policy).ok());
}

TEST(JwksCacheTest, UnknownKidRefreshIsRateLimited) {
  common::FakeClock clock;
  int fetches = 0;
  JwksCache cache(
      [&]() -> absl::StatusOr<std::string> {
        ++fetches;
        return Jwks({{&KeyA(), "a"}});
      },
      clock);
  jose::ClaimsPolicy policy;
  policy.issuer = kIssuer;
  policy.audiences = {kApi};
  for (int i = 0; i < 100; ++i) {
    std::string t = AccessToken(KeyB(), "random-" + std::to_string(i), AccessClaims(clock));
    EXPECT_FALSE(cache.Verify(t, {jose::JwsAlg::kRS256}, policy).ok());
  }
  EXPECT_EQ(fetches, 1);  // the first load; every later miss fell inside the 30 s window
  clock.Advance(absl::Seconds(30));
  EXPECT_FALSE(
      cache.Verify(AccessToken(KeyB(), "x", AccessClaims(clock)), {jose::JwsAlg::kRS256}, policy)
          .ok());
  EXPECT_EQ(fetches, 2);
}

TEST(JwksCacheTest, FailedRefreshKeepsThePreviousKeys) {
  common::FakeClock clock;
  bool up = true;
  JwksCache cache(
      [&]() -> absl::StatusOr<std::string> {
        if (!up) return absl::UnavailableError("IdP down");
        return Jwks({{&KeyA(), "a"}});
      },
      clock);
  jose::ClaimsPolicy policy;
  policy.issuer = kIssuer;
  policy.audiences = {kApi};
  ASSERT_TRUE(
      cache.Verify(AccessToken(KeyA(), "a", AccessClaims(clock)), {jose::JwsAlg::kRS256}, policy)
          .ok());
  up = false;
  clock.Advance(absl::Hours(2));
  EXPECT_TRUE(
      cache.Verify(AccessToken(KeyA(), "a", AccessClaims(clock)), {jose::JwsAlg::kRS256}, policy)
          .ok());

  JwksCache never([&]() -> absl::StatusOr<std::string> { return std::string("{"); }, clock);
  absl::StatusOr<jose::VerifiedJwt> r =
      never.Verify(AccessToken(KeyA(), "a", AccessClaims(clock)), {jose::JwsAlg::kRS256}, policy);
  EXPECT_TRUE(absl::IsUnavailable(r.status())) << r.status();
}

TEST(JwksCacheTest, SlowRefreshDoesNotBlockVerificationWithKnownKeys) {
  common::FakeClock clock;
  std::atomic<int> calls{0};
  std::promise<void> entered;
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  JwksCache cache(
      [&]() -> absl::StatusOr<std::string> {
        if (calls++ > 0) {
          entered.set_value();
          gate.wait();  // an IdP that takes its time
        }
        return Jwks({{&KeyA(), "a"}});
      },
      clock);
  jose::ClaimsPolicy policy;
  policy.issuer = kIssuer;
  policy.audiences = {kApi};
  std::vector<jose::JwsAlg> algs = {jose::JwsAlg::kRS256};
  ASSERT_TRUE(cache.Verify(AccessToken(KeyA(), "a", AccessClaims(clock)), algs, policy).ok());
  clock.Advance(absl::Seconds(31));
  std::thread refresher([&] {
    EXPECT_FALSE(cache.Verify(AccessToken(KeyB(), "new", AccessClaims(clock)), algs, policy).ok());
  });
  entered.get_future().wait();  // the refresh is now in flight
  // Holding the cache's mutex during the fetch would hang here until the fetch returns.
  EXPECT_TRUE(cache.Verify(AccessToken(KeyA(), "a", AccessClaims(clock)), algs, policy).ok());
  release.set_value();
  refresher.join();
  EXPECT_EQ(cache.fetches(), 2);
}

// ---------------------------------------------------------------------------------------------
// Claim mapping

TEST(MapClaimsTest, MapsGroupsToGrantsAndRefusesUnmappedIdentities) {
  Json c = {{"sub", "bob"}, {"groups", {"ml-team", "staff", "gpu-admins"}}};
  absl::StatusOr<MappedIdentity> id = MapClaims(Config(), c);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->grants, (std::vector<MappedGrant>{{"", "admin"}, {"ml", "developer"}}));

  c["groups"] = {"marketing"};
  EXPECT_TRUE(absl::IsPermissionDenied(MapClaims(Config(), c).status()));
  c.erase("groups");
  EXPECT_THAT(std::string(MapClaims(Config(), c).status().message()), HasSubstr("maps to no"));
  c["groups"] = "ml-team";  // a single string is accepted
  EXPECT_TRUE(MapClaims(Config(), c).ok());
  c["groups"] = {{{"name", "ml-team"}}};
  EXPECT_FALSE(MapClaims(Config(), c).ok());
}

TEST(MapClaimsTest, RefusesUnverifiedEmailUnlessAllowed) {
  Json c = {{"sub", "eve"}, {"email", "ceo@example.com"}, {"groups", {"ml-team"}}};
  for (Json verified : {Json(false), Json("true"), Json()}) {
    if (verified.is_null()) {
      c.erase("email_verified");
    } else {
      c["email_verified"] = verified;
    }
    EXPECT_THAT(std::string(MapClaims(Config(), c).status().message()), HasSubstr("not verified"));
  }
  ProviderConfig lax = Config();
  lax.allow_unverified_email = true;
  EXPECT_TRUE(MapClaims(lax, c).ok());
  c["email_verified"] = true;
  EXPECT_TRUE(MapClaims(Config(), c).ok());
}

// ---------------------------------------------------------------------------------------------
// Provider: bearer tokens and the code-flow callback

class ProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    http_.routes[std::string(kIssuer) + "/.well-known/openid-configuration"] = {200,
                                                                                Discovery().dump()};
    http_.routes[std::string(kIssuer) + "/jwks"] = {200, Jwks({{&KeyA(), "a"}})};
    absl::StatusOr<std::unique_ptr<OidcProvider>> p =
        OidcProvider::Connect(Config(), http_, clock_, rng_);
    ASSERT_TRUE(p.ok()) << p.status();
    provider_ = std::move(*p);
  }
  FakeHttp http_;
  common::FakeClock clock_;
  common::SeededRng rng_{1};
  std::unique_ptr<OidcProvider> provider_;
};

TEST_F(ProviderTest, BearerAccessTokenIsVerifiedAndMapped) {
  absl::StatusOr<MappedIdentity> id =
      provider_->AuthenticateBearer(AccessToken(KeyA(), "a", AccessClaims(clock_)));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->subject, "alice");
  EXPECT_EQ(id->grants, (std::vector<MappedGrant>{{"", "admin"}}));
  EXPECT_TRUE(absl::IsPermissionDenied(
      provider_->AuthenticateBearer(AccessToken(KeyA(), "a", AccessClaims(clock_, {"marketing"})))
          .status()));
}

TEST_F(ProviderTest, AuthorizationUrlCarriesPkceStateAndNonce) {
  AuthorizationRequest a = provider_->BeginAuthorization();
  AuthorizationRequest b = provider_->BeginAuthorization();
  EXPECT_NE(a.state, b.state);
  EXPECT_NE(a.nonce, b.nonce);
  EXPECT_EQ(a.code_verifier.size(), 43u);
  EXPECT_THAT(a.url, HasSubstr("code_challenge_method=S256"));
  EXPECT_THAT(a.url, HasSubstr("state=" + a.state));
  EXPECT_THAT(a.url, HasSubstr("nonce=" + a.nonce));
  EXPECT_THAT(a.url, ::testing::Not(HasSubstr(a.code_verifier)));
  EXPECT_THAT(a.url, HasSubstr("code_challenge=" +
                               common::Base64UrlEncode(common::Sha256(a.code_verifier))));
}

TEST_F(ProviderTest, CallbackWithWrongStateOrIssuerNeverReachesTheTokenEndpoint) {
  AuthorizationRequest req = provider_->BeginAuthorization();
  size_t before = http_.requests.size();
  EXPECT_THAT(
      std::string(provider_->FinishAuthorization(req, "code=c&state=forged").status().message()),
      HasSubstr("state does not match"));
  EXPECT_FALSE(provider_->FinishAuthorization(req, "code=c").ok());
  EXPECT_THAT(std::string(provider_
                              ->FinishAuthorization(req, "code=c&state=" + req.state +
                                                             "&iss=https%3A%2F%2Fevil.example")
                              .status()
                              .message()),
              HasSubstr("mix-up"));
  EXPECT_THAT(
      std::string(
          provider_->FinishAuthorization(req, "code=c&state=" + req.state + "&state=" + req.state)
              .status()
              .message()),
      HasSubstr("repeated"));
  EXPECT_TRUE(absl::IsPermissionDenied(
      provider_->FinishAuthorization(req, "error=access_denied&state=" + req.state).status()));
  EXPECT_EQ(http_.requests.size(), before);
}

TEST(UrlTest, SplitsHttpsUrlsAndRefusesOthers) {
  auto p = SplitHttpsUrl("https://127.0.0.1:8443/a/b?x=1");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->first, "https://127.0.0.1:8443");
  EXPECT_EQ(p->second, "/a/b?x=1");
  EXPECT_EQ(SplitHttpsUrl("https://h")->second, "/");
  EXPECT_EQ(SplitHttpsUrl("https://h?q")->second, "/?q");
  for (const char* bad : {"http://h/", "https://", "https://u@h/", "https://h/#f", "https://h/ x",
                          "HTTPS://h/", "file:///etc/passwd", "https://h\\@evil/"}) {
    EXPECT_FALSE(SplitHttpsUrl(bad).ok()) << bad;
  }
  auto q = ParseQuery("a=1&b=x%20y+z&c");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ((*q)[1].second, "x y z");
  EXPECT_FALSE(ParseQuery("a=%zz").ok());
  EXPECT_FALSE(ParseQuery("a=%4").ok());
  EXPECT_EQ(common::PercentEncode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
}

}  // namespace
}  // namespace warden::auth::oidc
