// OIDC against a real OpenID provider (issue 3, must-show 1): oidc-provider 9 started by
// tools/oidc-start.sh over HTTPS on loopback (tools/run-tests.sh exports WARDEN_TEST_OIDC_ISSUER
// and WARDEN_TEST_OIDC_CA; without them this suite starts its own provider, or fails under CI).
// The test plays the user's browser over HTTP: it follows redirects, keeps cookies and submits
// the provider's login, consent and device-code forms.
#include "auth/oidc.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/encoding.h"
#include "common/json.h"
#include "common/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "oidc_browser.h"

namespace warden::auth::oidc {
namespace {

using ::testing::HasSubstr;

Idp* g_idp = nullptr;

constexpr char kApi[] = "https://gpuwarden.test/api";
constexpr char kRedirect[] = "https://127.0.0.1/oidc/callback";

class OidcIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { g_idp = StartTestIdp("suite"); }
  static void TearDownTestSuite() {
    StopTestIdp(g_idp);
    g_idp = nullptr;
  }

  void SetUp() override {
    if (g_idp->issuer.empty() || g_idp->ca_pem.empty()) {
      if (Env("CI") == "true") {
        FAIL() << "no OpenID provider: set WARDEN_TEST_OIDC_ISSUER/WARDEN_TEST_OIDC_CA "
                  "(tools/oidc-start.sh) or install tools/node";
      }
      GTEST_SKIP() << "no OpenID provider (tools/oidc-start.sh failed; npm install in tools/node?)";
    }
    http_ = NewHttpsTransport(g_idp->ca_pem);
    absl::StatusOr<std::unique_ptr<OidcProvider>> p =
        OidcProvider::Connect(Config(), *http_, common::RealClock::Get(), rng_);
    ASSERT_TRUE(p.ok()) << p.status();
    provider_ = std::move(*p);
  }

  static ProviderConfig Config() {
    ProviderConfig c;
    c.name = "testidp";
    c.issuer = g_idp->issuer;
    c.client_id = "gpuwarden";
    c.client_secret = "gpuwarden-test-secret";
    c.redirect_uri = kRedirect;
    c.access_token_audiences = {kApi};
    c.mappings = {{"gpu-admins", "", "admin"}, {"ml-team", "ml", "developer"}};
    return c;
  }

  absl::StatusOr<std::string> ClientCredentialsToken(const std::string& id,
                                                     const std::string& secret) {
    absl::StatusOr<http::ClientResponse> r = http_->Do(
        "POST", g_idp->issuer + "/token", "grant_type=client_credentials&scope=api%3Aread",
        {{"Content-Type", "application/x-www-form-urlencoded"},
         {"Authorization", Basic(id, secret)}});
    if (!r.ok()) return r.status();
    if (r->status != 200) return absl::InternalError(r->body);
    absl::StatusOr<TokenResponse> t = ParseTokenResponse(r->body);
    if (!t.ok()) return t.status();
    return t->access_token;
  }

  // Runs the browser part of the code flow for `login`; returns the callback's query string.
  absl::StatusOr<std::string> BrowserLogin(const AuthorizationRequest& req,
                                           const std::string& login) {
    Browser browser(*http_);
    absl::StatusOr<std::string> callback = browser.Drive(req.url, login, kRedirect);
    if (!callback.ok()) return callback.status();
    size_t q = callback->find('?');
    if (q == std::string::npos) return absl::InternalError("callback without query: " + *callback);
    return callback->substr(q + 1);
  }

  common::SeededRng rng_{42};
  std::unique_ptr<OidcHttp> http_;
  std::unique_ptr<OidcProvider> provider_;
};

TEST_F(OidcIntegrationTest, DiscoveryAndJwksFromTheRealProvider) {
  EXPECT_EQ(provider_->metadata().issuer, g_idp->issuer);
  EXPECT_EQ(provider_->metadata().jwks_uri, g_idp->issuer + "/jwks");
  EXPECT_FALSE(provider_->metadata().device_authorization_endpoint.empty());
  // A provider configured with another issuer string is refused at discovery (mix-up).
  ProviderConfig wrong = Config();
  wrong.issuer = g_idp->issuer + "/";
  EXPECT_FALSE(OidcProvider::Connect(wrong, *http_, common::RealClock::Get(), rng_).ok());
  // The provider's TLS certificate must chain to the pinned CA: with the system store instead,
  // the connection is refused.
  std::unique_ptr<OidcHttp> unpinned = NewHttpsTransport();
  EXPECT_FALSE(OidcProvider::Connect(Config(), *unpinned, common::RealClock::Get(), rng_).ok());
}

TEST_F(OidcIntegrationTest, RealRs256JwtAccessTokenIsVerifiedAndGroupsMapToRoles) {
  absl::StatusOr<std::string> token = ClientCredentialsToken("ci-robot", "ci-robot-secret");
  ASSERT_TRUE(token.ok()) << token.status();
  absl::StatusOr<jose::ParsedJws> jws = jose::ParseCompactJws(*token);
  ASSERT_TRUE(jws.ok()) << jws.status();
  EXPECT_EQ(jws->header.alg, jose::JwsAlg::kRS256);
  EXPECT_EQ(jws->header.typ, "at+jwt");

  absl::StatusOr<MappedIdentity> id = provider_->AuthenticateBearer(*token);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->subject, "ci-robot");
  EXPECT_EQ(id->grants, (std::vector<MappedGrant>{{"ml", "developer"}}));

  // A machine whose groups map to nothing is refused.
  absl::StatusOr<std::string> stray = ClientCredentialsToken("stray-robot", "stray-robot-secret");
  ASSERT_TRUE(stray.ok()) << stray.status();
  absl::StatusOr<MappedIdentity> refused = provider_->AuthenticateBearer(*stray);
  EXPECT_TRUE(absl::IsPermissionDenied(refused.status())) << refused.status();

  // One flipped signature byte and the real token is worthless.
  std::string tampered = *token;
  tampered[tampered.size() - 5] = tampered[tampered.size() - 5] == 'A' ? 'B' : 'A';
  EXPECT_TRUE(absl::IsUnauthenticated(provider_->AuthenticateBearer(tampered).status()));
}

TEST_F(OidcIntegrationTest, CodeFlowWithPkceStateAndNonceLogsInAMappedUser) {
  AuthorizationRequest req = provider_->BeginAuthorization();
  absl::StatusOr<std::string> query = BrowserLogin(req, "alice");
  ASSERT_TRUE(query.ok()) << query.status();
  EXPECT_THAT(*query, HasSubstr("state=" + req.state));

  absl::StatusOr<LoginResult> login = provider_->FinishAuthorization(req, *query);
  ASSERT_TRUE(login.ok()) << login.status();
  EXPECT_EQ(login->identity.subject, "alice");
  EXPECT_EQ(login->identity.email, "alice@example.test");
  EXPECT_EQ(login->identity.grants, (std::vector<MappedGrant>{{"", "admin"}}));
  EXPECT_EQ(login->id_token_claims["nonce"], req.nonce);

  // The user's JWT access token works as a bearer token; the ID token does not (wrong kind).
  absl::StatusOr<MappedIdentity> bearer = provider_->AuthenticateBearer(login->tokens.access_token);
  ASSERT_TRUE(bearer.ok()) << bearer.status();
  EXPECT_EQ(bearer->subject, "alice");
  absl::StatusOr<MappedIdentity> id_as_access =
      provider_->AuthenticateBearer(login->tokens.id_token);
  ASSERT_FALSE(id_as_access.ok());
  EXPECT_THAT(std::string(id_as_access.status().message()), HasSubstr("audience"));
  // Even where access tokens share the client's audience (Entra-style app-id audiences), the
  // ID token is told apart by its type (no typ at+jwt) and refused.
  ProviderConfig shared_aud = Config();
  shared_aud.access_token_audiences = {kApi, "gpuwarden"};
  auto p2 = OidcProvider::Connect(shared_aud, *http_, common::RealClock::Get(), rng_);
  ASSERT_TRUE(p2.ok()) << p2.status();
  id_as_access = (*p2)->AuthenticateBearer(login->tokens.id_token);
  ASSERT_FALSE(id_as_access.ok());
  EXPECT_THAT(std::string(id_as_access.status().message()), HasSubstr("not an access token"));
  EXPECT_TRUE((*p2)->AuthenticateBearer(login->tokens.access_token).ok());

  // Replaying the callback: the code was single-use at the provider.
  EXPECT_FALSE(provider_->FinishAuthorization(req, *query).ok());
}

TEST_F(OidcIntegrationTest, CodeFlowRefusesUnmappedUsersUnverifiedEmailAndForeignCallbacks) {
  AuthorizationRequest req = provider_->BeginAuthorization();
  absl::StatusOr<std::string> query = BrowserLogin(req, "mallory");
  ASSERT_TRUE(query.ok()) << query.status();
  absl::StatusOr<LoginResult> mallory = provider_->FinishAuthorization(req, *query);
  ASSERT_FALSE(mallory.ok());
  EXPECT_TRUE(absl::IsPermissionDenied(mallory.status())) << mallory.status();
  EXPECT_THAT(std::string(mallory.status().message()), HasSubstr("maps to no gpuwarden role"));

  req = provider_->BeginAuthorization();
  query = BrowserLogin(req, "eve");
  ASSERT_TRUE(query.ok()) << query.status();
  absl::StatusOr<LoginResult> eve = provider_->FinishAuthorization(req, *query);
  ASSERT_FALSE(eve.ok());
  EXPECT_THAT(std::string(eve.status().message()), HasSubstr("not verified"));

  // A callback from a login the victim never started (login CSRF), and a code redeemed without
  // the PKCE verifier that goes with it (code injection): both refused.
  AuthorizationRequest victim = provider_->BeginAuthorization();
  AuthorizationRequest attacker = provider_->BeginAuthorization();
  query = BrowserLogin(attacker, "bob");
  ASSERT_TRUE(query.ok()) << query.status();
  EXPECT_THAT(std::string(provider_->FinishAuthorization(victim, *query).status().message()),
              HasSubstr("state does not match"));
  AuthorizationRequest injected = victim;
  injected.state = attacker.state;  // the attacker's code replayed into the victim's session
  absl::StatusOr<LoginResult> r = provider_->FinishAuthorization(injected, *query);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("token endpoint refused the code"));
}

TEST_F(OidcIntegrationTest, DeviceAuthorizationGrant) {
  absl::StatusOr<DeviceAuthorization> device = provider_->StartDeviceAuthorization();
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_FALSE(device->user_code.empty());

  absl::StatusOr<DevicePoll> pending = provider_->PollDeviceToken(*device);
  ASSERT_TRUE(pending.ok()) << pending.status();
  EXPECT_EQ(pending->state, DevicePoll::State::kPending);

  // The user opens the verification URI in a browser, logs in and confirms the code.
  Browser browser(*http_);
  absl::StatusOr<std::string> page =
      browser.Drive(device->verification_uri_complete, "bob", "https://never.invalid");
  ASSERT_TRUE(page.ok()) << page.status();

  absl::StatusOr<DevicePoll> done = provider_->PollDeviceToken(*device);
  if (done.ok() && done->state == DevicePoll::State::kSlowDown) {
    absl::SleepFor(device->interval);
    done = provider_->PollDeviceToken(*device);
  }
  ASSERT_TRUE(done.ok()) << done.status() << "\npage: " << page->substr(0, 500);
  ASSERT_EQ(done->state, DevicePoll::State::kDone) << page->substr(0, 500);
  EXPECT_EQ(done->result.identity.subject, "bob");
  EXPECT_EQ(done->result.identity.grants, (std::vector<MappedGrant>{{"ml", "developer"}}));

  // The device code is single-use.
  EXPECT_FALSE(provider_->PollDeviceToken(*device).ok());
}

TEST_F(OidcIntegrationTest, DeviceFlowForAnUnmappedUserIsRefused) {
  absl::StatusOr<DeviceAuthorization> device = provider_->StartDeviceAuthorization();
  ASSERT_TRUE(device.ok()) << device.status();
  Browser browser(*http_);
  ASSERT_TRUE(
      browser.Drive(device->verification_uri_complete, "mallory", "https://never.invalid").ok());
  absl::StatusOr<DevicePoll> done = provider_->PollDeviceToken(*device);
  if (done.ok() && done->state == DevicePoll::State::kSlowDown) {
    absl::SleepFor(device->interval);
    done = provider_->PollDeviceToken(*device);
  }
  ASSERT_FALSE(done.ok());
  EXPECT_TRUE(absl::IsPermissionDenied(done.status())) << done.status();
}

}  // namespace
}  // namespace warden::auth::oidc
