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
#include "common/json.h"
#include "common/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace warden::auth::oidc {
namespace {

using ::testing::HasSubstr;
using warden::testing::Env;
using warden::testing::ReadFile;
using warden::testing::RunShell;

constexpr char kApi[] = "https://gpuwarden.test/api";
constexpr char kRedirect[] = "https://127.0.0.1/oidc/callback";

struct Idp {
  std::string issuer;
  std::string ca_pem;
  std::string dir;  // non-empty when this suite started the provider itself
};

Idp* g_idp = nullptr;

std::string Basic(const std::string& id, const std::string& secret) {
  std::string raw = id + ":" + secret;
  std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(raw.data()),
                          static_cast<int>(raw.size()));
  out.resize(static_cast<size_t>(n));
  return "Basic " + out;
}

// A minimal browser: cookies by (path, name), redirects, and the provider's HTML forms.
class Browser {
 public:
  explicit Browser(OidcHttp& http) : http_(http) {}

  // Follows `url` until a redirect to `stop_prefix` (returned) or a page without a form (its body
  // is returned). Logs in as `login` when asked; accepts consent and device confirmation.
  absl::StatusOr<std::string> Drive(std::string url, const std::string& login,
                                    const std::string& stop_prefix) {
    std::string method = "GET";
    std::string body;
    for (int step = 0; step < 20; ++step) {
      absl::StatusOr<http::ClientResponse> r = Request(method, url, body);
      if (!r.ok()) return r.status();
      if (r->status >= 300 && r->status < 400) {
        std::string loc(r->Header("Location"));
        if (!loc.empty() && loc[0] == '/') loc = Origin(url) + loc;
        if (loc.rfind(stop_prefix, 0) == 0) return loc;
        url = loc;
        method = "GET";
        body.clear();
        continue;
      }
      if (r->status != 200) {
        return absl::InternalError("HTTP " + std::to_string(r->status) + " at " + url + ": " +
                                   r->body.substr(0, 300));
      }
      std::smatch form;
      if (!std::regex_search(r->body, form, std::regex(R"(<form[^>]*>([\s\S]*?)</form>)"))) {
        return r->body;  // a final page
      }
      std::smatch action;
      std::string tag = form.str(0).substr(0, form.str(0).find('>'));
      if (std::regex_search(tag, action, std::regex(R"(action="([^"]*)\")"))) {
        std::string target = std::regex_replace(action.str(1), std::regex("&amp;"), "&");
        url = !target.empty() && target[0] == '/' ? Origin(url) + target : target;
      }
      body.clear();
      std::string inner = form.str(1);
      std::regex input(R"(<input([^>]*)>)");
      for (auto it = std::sregex_iterator(inner.begin(), inner.end(), input);
           it != std::sregex_iterator(); ++it) {
        std::string attrs = (*it)[1];
        std::smatch name, value;
        if (!std::regex_search(attrs, name, std::regex(R"(name="([^"]*)\")"))) continue;
        std::string v;
        if (std::regex_search(attrs, value, std::regex(R"(value="([^"]*)\")"))) v = value.str(1);
        if (name.str(1) == "login") v = login;
        if (name.str(1) == "password") v = "any-password";
        body += (body.empty() ? "" : "&") + FormEncode(name.str(1)) + "=" + FormEncode(v);
      }
      method = "POST";
    }
    return absl::InternalError("too many steps");
  }

 private:
  static std::string Origin(const std::string& url) { return SplitHttpsUrl(url)->first; }

  absl::StatusOr<http::ClientResponse> Request(const std::string& method, const std::string& url,
                                               const std::string& body) {
    std::string path = SplitHttpsUrl(url)->second;
    path = path.substr(0, path.find('?'));
    std::string cookie;
    for (const auto& [key, value] : cookies_) {
      if (path.rfind(key.first, 0) != 0) continue;
      cookie += (cookie.empty() ? "" : "; ") + key.second + "=" + value;
    }
    std::vector<std::pair<std::string, std::string>> headers;
    if (!cookie.empty()) headers.emplace_back("Cookie", cookie);
    if (method == "POST") {
      headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
    }
    absl::StatusOr<http::ClientResponse> r = http_.Do(method, url, body, headers);
    if (!r.ok()) return r;
    for (const auto& [k, v] : r->headers) {
      if (strcasecmp(k.c_str(), "Set-Cookie") != 0) continue;
      std::string nv = v.substr(0, v.find(';'));
      std::string name = nv.substr(0, nv.find('='));
      std::string value = nv.substr(nv.find('=') + 1);
      std::string cpath = "/";
      std::smatch m;
      if (std::regex_search(v, m, std::regex(R"(;\s*path=([^;]*))", std::regex::icase))) {
        cpath = m.str(1);
      }
      bool expired = value.empty() || v.find("1970") != std::string::npos;
      if (expired) {
        cookies_.erase({cpath, name});
      } else {
        cookies_[{cpath, name}] = value;
      }
    }
    return r;
  }

  OidcHttp& http_;
  std::map<std::pair<std::string, std::string>, std::string> cookies_;
};

class OidcIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    g_idp = new Idp();
    g_idp->issuer = Env("WARDEN_TEST_OIDC_ISSUER");
    std::string ca_path = Env("WARDEN_TEST_OIDC_CA");
    if (g_idp->issuer.empty()) {
      // Not under tools/run-tests.sh: start a provider for this suite (needs tools/node).
      g_idp->dir = ::testing::TempDir() + "warden_oidc_" + std::to_string(getpid());
      int port = 40000 + static_cast<int>(getpid() % 20000);
      auto r = RunShell("bash tools/oidc-start.sh " + g_idp->dir + " " + std::to_string(port));
      if (r.code == 0) {
        std::string out = r.out;
        while (!out.empty() && out.back() == '\n') out.pop_back();
        g_idp->issuer = out.substr(out.rfind('\n') + 1);
        ca_path = g_idp->dir + "/ca.crt";
      } else {
        std::fprintf(stderr, "oidc-start failed: %s\n", r.err.c_str());
      }
    }
    if (!ca_path.empty()) g_idp->ca_pem = ReadFile(ca_path);
  }
  static void TearDownTestSuite() {
    if (!g_idp->dir.empty()) {
      RunShell("bash tools/oidc-stop.sh " + g_idp->dir);
      std::filesystem::remove_all(g_idp->dir);
    }
    delete g_idp;
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
