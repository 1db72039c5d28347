// Single sign-on end to end (issue 3, must-show 1): the real `gpuwarden server` configured with
// the real oidc-provider (tools/oidc-start.sh) as identity provider. The test plays the browser
// over HTTP (gpuwarden's login route -> the IdP's forms -> gpuwarden's callback, cookies kept),
// runs `gpuwarden login --sso` (device flow) as a user would, and calls the API with the IdP's
// JWT access tokens. Under CI=true a missing IdP fails the tests.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "common/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "oidc_browser.h"

namespace warden::auth::oidc {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using warden::testing::RunResult;
using warden::testing::ShellQuote;
using warden::testing::WardenBin;
using warden::testing::WardenServer;

constexpr char kApi[] = "https://gpuwarden.test/api";

Idp* g_sso_idp = nullptr;

common::Json ParseBody(const std::string& body) {
  common::Json j = common::Json::parse(body, nullptr, false);
  return j.is_discarded() ? common::Json::object() : j;
}

class SsoIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { g_sso_idp = StartTestIdp("sso"); }
  static void TearDownTestSuite() {
    StopTestIdp(g_sso_idp);
    g_sso_idp = nullptr;
  }

  void SetUp() override {
    if (g_sso_idp->issuer.empty() || g_sso_idp->ca_pem.empty()) {
      if (warden::testing::Env("CI") == "true") {
        FAIL() << "no OpenID provider: set WARDEN_TEST_OIDC_ISSUER/WARDEN_TEST_OIDC_CA "
                  "(tools/oidc-start.sh) or install tools/node";
      }
      GTEST_SKIP() << "no OpenID provider (tools/oidc-start.sh failed; npm install in tools/node?)";
    }
  }

  // Starts gpuwarden with the test IdP as provider "testidp"; the admin creates tenants ml and
  // other. `mfa` is the server's MFA policy line.
  void StartServer(const std::string& mfa = "mfa: {required_for: none}\n") {
    const int port = warden::testing::FreeLoopbackPort();
    ASSERT_GT(port, 0);
    secret_file_ = ::testing::TempDir() + "warden_sso_secret_" + std::to_string(getpid()) + "_" +
                   std::to_string(port);
    {
      std::ofstream f(secret_file_);
      f << "gpuwarden-test-secret\n";
    }
    ::chmod(secret_file_.c_str(), 0600);
    std::string base = "https://127.0.0.1:" + std::to_string(port);
    std::string config = "listen: 127.0.0.1:" + std::to_string(port) + "\n" + mfa +
                         "oidc:\n"
                         "  providers:\n"
                         "    - name: testidp\n"
                         "      issuer: " +
                         g_sso_idp->issuer +
                         "\n"
                         "      client_id: gpuwarden\n"
                         "      client_secret_file: " +
                         secret_file_ +
                         "\n"
                         "      ca_file: " +
                         g_sso_idp->ca_path +
                         "\n"
                         "      redirect_uri: " +
                         base +
                         "/api/v1/oidc/testidp/callback\n"
                         "      scopes: [openid, email, groups]\n"
                         "      access_token_audiences: [" +
                         kApi +
                         "]\n"
                         "      mappings:\n"
                         "        - {group: gpu-admins, role: admin}\n"
                         "        - {group: ml-team, tenant: ml, role: developer}\n"
                         "        - {group: ml-viewers, tenant: ml, role: viewer}\n";
    server_.Start("sqlite", config);
    if (::testing::Test::HasFatalFailure()) return;
    server_.Login("admin", "admin", server_.admin_password());
    if (mfa.find("none") != std::string::npos) {
      ASSERT_EQ(server_.Cli("admin", "tenant create ml").code, 0);
      ASSERT_EQ(server_.Cli("admin", "tenant create other").code, 0);
    }
    // The "browser" trusts both the IdP's CA and the gpuwarden server's CA.
    http_ = NewHttpsTransport(g_sso_idp->ca_pem +
                              warden::testing::ReadFile(server_.dir() + "/data/pki/ca.crt"));
  }

  void TearDown() override {
    if (!secret_file_.empty()) std::filesystem::remove(secret_file_);
  }

  std::string LoginUrl() const { return server_.url() + "/api/v1/oidc/testidp/login"; }

  // A whole browser login as `user`: gpuwarden -> IdP forms -> gpuwarden's callback. The
  // callback's answer (JSON) or the error the browser saw.
  absl::StatusOr<std::string> BrowserLogin(Browser& browser, const std::string& user) {
    return browser.Drive(LoginUrl(), user, "https://never.invalid");
  }

  absl::StatusOr<std::string> ClientToken(const std::string& client,
                                          const std::string& resource = kApi) {
    absl::StatusOr<http::ClientResponse> r =
        http_->Do("POST", g_sso_idp->issuer + "/token",
                  "grant_type=client_credentials&scope=api%3Aread&resource=" +
                      common::PercentEncode(resource),
                  {{"Content-Type", "application/x-www-form-urlencoded"},
                   {"Authorization", Basic(client, client + "-secret")}});
    if (!r.ok()) return r.status();
    if (r->status != 200) return absl::InternalError(r->body);
    absl::StatusOr<TokenResponse> t = ParseTokenResponse(r->body);
    if (!t.ok()) return t.status();
    return t->access_token;
  }

  void SetGroups(const std::string& who_kind, const std::string& who, const std::string& groups) {
    absl::StatusOr<http::ClientResponse> r = http_->Do(
        "POST", g_sso_idp->issuer + "/test/groups?" + who_kind + "=" + who + "&groups=" + groups);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, 204);
  }

  int Status(const std::string& method, const std::string& path, const std::string& token) {
    return server_.Curl(method, path, token).code;
  }

  // Every event of the audit log's segment files (data/audit/seg-*.jsonl), once every event
  // queued so far is on disk.
  std::vector<common::Json> AuditEvents() {
    server_.AuditCountSynced();
    std::vector<std::filesystem::path> segments;
    for (const auto& f : std::filesystem::directory_iterator(server_.dir() + "/data/audit")) {
      if (f.path().extension() == ".jsonl") segments.push_back(f.path());
    }
    std::sort(segments.begin(), segments.end());
    std::vector<common::Json> out;
    for (const auto& seg : segments) {
      std::ifstream in(seg);
      std::string line;
      // A segment ends at its preallocated zero tail (no event holds a NUL byte).
      while (std::getline(in, line) && line.find('\0') == std::string::npos) {
        out.push_back(ParseBody(line));
      }
    }
    return out;
  }

  double Metric(const std::string& series) {
    RunResult m = server_.Curl("GET", "/metrics", server_.Token("admin"));
    size_t at = m.out.find(series + " ");
    if (at == std::string::npos) return 0;
    return std::atof(m.out.c_str() + at + series.size() + 1);
  }

  WardenServer server_;
  std::string secret_file_;
  std::unique_ptr<OidcHttp> http_;
};

TEST_F(SsoIntegrationTest, ProvidersAreListedPubliclyAndBadConfigRefusesToStart) {
  StartServer();
  if (HasFatalFailure()) return;
  RunResult r = server_.Curl("GET", "/api/v1/oidc/providers");
  ASSERT_EQ(r.code, 200) << r.out;
  common::Json j = ParseBody(r.out);
  ASSERT_EQ(j["items"].size(), 1u) << r.out;
  EXPECT_EQ(j["items"][0]["name"], "testidp");
  EXPECT_EQ(j["items"][0]["issuer"], g_sso_idp->issuer);
  RunResult cli = server_.Cli("admin", "sso providers -o json");
  ASSERT_EQ(cli.code, 0) << cli.err;
  EXPECT_THAT(cli.out, HasSubstr("\"testidp\""));
  EXPECT_EQ(server_.Curl("GET", "/api/v1/oidc/nosuch/login").code, 404);

  // A typo in the provider section stops the server at start, naming the key.
  RunResult refused = warden::testing::RunShell(
      "d=$(mktemp -d) && printf 'listen: 127.0.0.1:0\\noidc:\\n  providers:\\n    - name: x\\n"
      "      issuer: https://idp.example\\n      client_id: c\\n      allow_unverified_emial: "
      "true\\n      mappings: [{group: g, role: viewer}]\\n' > $d/c.yaml && timeout 20 " +
      ShellQuote(WardenBin()) +
      " server --config $d/c.yaml --data-dir $d/data; rc=$?; rm -rf $d; "
      "exit $rc");
  EXPECT_NE(refused.code, 0);
  EXPECT_THAT(refused.err, HasSubstr("unknown key \"allow_unverified_emial\""));
}

TEST_F(SsoIntegrationTest, CodeFlowWithPkceLogsInAndGroupsMapToRoles) {
  StartServer();
  if (HasFatalFailure()) return;
  Browser browser(*http_);
  absl::StatusOr<std::string> page = BrowserLogin(browser, "bob");
  ASSERT_TRUE(page.ok()) << page.status();
  common::Json login = ParseBody(*page);
  ASSERT_TRUE(login.contains("token")) << *page;
  const std::string token = login["token"];
  EXPECT_EQ(token.rfind("gws_", 0), 0u);  // a gpuwarden session, like a password login's
  EXPECT_EQ(login["user"]["name"], "testidp.bob");
  EXPECT_EQ(login["user"]["tenant"], "ml");
  EXPECT_EQ(login["mfa"], false);

  // ml-team -> developer in tenant ml: what the role allows, and nothing more.
  EXPECT_EQ(Status("GET", "/api/v1/whoami", token), 200);
  EXPECT_EQ(Status("GET", "/api/v1/tenants/ml/roles", token), 200);     // roles:read
  EXPECT_EQ(Status("GET", "/api/v1/tenants/ml/users", token), 403);     // no users:read
  EXPECT_EQ(Status("GET", "/api/v1/tenants/other/roles", token), 403);  // another tenant
  EXPECT_EQ(Status("GET", "/api/v1/users", token), 403);                // cluster scope
  EXPECT_EQ(Status("POST", "/api/v1/tenants", token), 403);

  // The callback cannot be replayed: the state was spent (and the code too, at the IdP).
  const std::string callback = browser.last_url();
  ASSERT_THAT(callback, HasSubstr("/api/v1/oidc/testidp/callback?"));
  absl::StatusOr<std::string> replay = browser.Drive(callback, "bob", "https://never.invalid");
  ASSERT_FALSE(replay.ok());
  EXPECT_THAT(std::string(replay.status().message()), HasSubstr("HTTP 401"));
  EXPECT_THAT(std::string(replay.status().message()), HasSubstr("already used"));

  // The login is in the audit log with the SSO user as actor.
  bool seen = false;
  for (const common::Json& e : AuditEvents()) {
    if (e.value("action", "") == "sso:login" && e.value("status", 0) == 200 &&
        e.value("actor_name", "") == "testidp.bob") {
      seen = true;
    }
  }
  EXPECT_TRUE(seen);
  EXPECT_GE(Metric("warden_sso_total{flow=\"code\",result=\"ok\"}"), 1);
}

TEST_F(SsoIntegrationTest, CallbackFromAnotherBrowserOrForAForgedStateIsRefused) {
  StartServer();
  if (HasFatalFailure()) return;
  // The victim's browser is made to land on a callback of a login the attacker started (login
  // CSRF): the victim lacks the attacker's login cookie, so the callback is refused.
  Browser attacker(*http_);
  absl::StatusOr<std::string> cb =
      attacker.Drive(LoginUrl(), "bob", server_.url() + "/api/v1/oidc/testidp/callback");
  ASSERT_TRUE(cb.ok()) << cb.status();
  Browser victim(*http_);
  absl::StatusOr<std::string> forced = victim.Drive(*cb, "", "https://never.invalid");
  ASSERT_FALSE(forced.ok());
  EXPECT_THAT(std::string(forced.status().message()), HasSubstr("HTTP 403"));
  EXPECT_THAT(std::string(forced.status().message()), HasSubstr("not started by this browser"));
  // That attempt spent the state: even the browser that started it cannot finish now.
  absl::StatusOr<std::string> late = attacker.Drive(*cb, "", "https://never.invalid");
  ASSERT_FALSE(late.ok());
  EXPECT_THAT(std::string(late.status().message()), HasSubstr("already used"));
  // A made-up state is refused before anything is sent to the IdP.
  RunResult forged = server_.Curl("GET", "/api/v1/oidc/testidp/callback?code=x&state=forged");
  EXPECT_EQ(forged.code, 401) << forged.out;
}

TEST_F(SsoIntegrationTest, UnmappedUserAndUnverifiedEmailAreRefusedAndAudited) {
  StartServer();
  if (HasFatalFailure()) return;
  Browser b1(*http_);
  absl::StatusOr<std::string> mallory = BrowserLogin(b1, "mallory");
  ASSERT_FALSE(mallory.ok());
  EXPECT_THAT(std::string(mallory.status().message()), HasSubstr("HTTP 403"));
  EXPECT_THAT(std::string(mallory.status().message()), HasSubstr("maps to no gpuwarden role"));
  Browser b2(*http_);
  absl::StatusOr<std::string> eve = BrowserLogin(b2, "eve");
  ASSERT_FALSE(eve.ok());
  EXPECT_THAT(std::string(eve.status().message()), HasSubstr("HTTP 403"));
  EXPECT_THAT(std::string(eve.status().message()), HasSubstr("not verified"));
  // No user was created for them.
  RunResult users = server_.Curl("GET", "/api/v1/users", server_.Token("admin"));
  EXPECT_THAT(users.out, Not(HasSubstr("mallory")));
  EXPECT_THAT(users.out, Not(HasSubstr("testidp.eve")));
  int denied = 0;
  for (const common::Json& e : AuditEvents()) {
    if (e.value("action", "") == "sso:login" && e.value("decision", "") == "deny" &&
        e.value("status", 0) == 403) {
      ++denied;
    }
  }
  EXPECT_EQ(denied, 2);
  EXPECT_GE(Metric("warden_sso_total{flow=\"code\",result=\"refused\"}"), 2);
}

TEST_F(SsoIntegrationTest, RemovedGroupsRemoveRolesAtTheNextLogin) {
  StartServer();
  if (HasFatalFailure()) return;
  SetGroups("account", "frank", "ml-team,ml-viewers");
  Browser first(*http_);
  absl::StatusOr<std::string> page = BrowserLogin(first, "frank");
  ASSERT_TRUE(page.ok()) << page.status();
  const std::string token = ParseBody(*page)["token"];
  EXPECT_EQ(Status("GET", "/api/v1/tenants/ml/roles", token), 200);  // developer

  // The IdP drops ml-team: the next login leaves frank a viewer only, and that applies to the
  // session he already had, at once.
  SetGroups("account", "frank", "ml-viewers");
  Browser second(*http_);
  page = BrowserLogin(second, "frank");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(Status("GET", "/api/v1/tenants/ml/roles", token), 403);
  EXPECT_EQ(Status("GET", "/api/v1/tenants/ml", token), 200);  // viewer: tenants:read

  // Removed from every mapped group: refused, and his roles and sessions are withdrawn.
  SetGroups("account", "frank", "marketing");
  Browser third(*http_);
  page = BrowserLogin(third, "frank");
  ASSERT_FALSE(page.ok());
  EXPECT_THAT(std::string(page.status().message()), HasSubstr("maps to no gpuwarden role"));
  EXPECT_EQ(Status("GET", "/api/v1/tenants/ml", token), 401);
  RunResult bindings = server_.Curl("GET", "/api/v1/bindings", server_.Token("admin"));
  EXPECT_THAT(bindings.out, Not(HasSubstr("testidp.frank")));
  SetGroups("account", "frank", "ml-team");
}

TEST_F(SsoIntegrationTest, DeviceFlowWithTheCli) {
  StartServer();
  if (HasFatalFailure()) return;
  const std::string cfg = server_.dir() + "/cli-device";
  const std::string out = server_.dir() + "/device.out";
  const std::string err = server_.dir() + "/device.err";
  RunResult bg = warden::testing::RunShell("GPUWARDEN_CONFIG_DIR=" + ShellQuote(cfg) + " " +
                                           ShellQuote(WardenBin()) + " login --sso --server " +
                                           server_.url() + " >" + ShellQuote(out) + " 2>" +
                                           ShellQuote(err) + " </dev/null & echo $!");
  const pid_t pid = std::atoi(bg.out.c_str());
  ASSERT_GT(pid, 0);
  std::string url;
  for (int i = 0; i < 300 && url.empty(); ++i) {
    std::string text = warden::testing::ReadFile(err);
    size_t at = text.find("open\n  ");
    size_t end = at == std::string::npos ? at : text.find('\n', at + 7);
    if (end != std::string::npos) url = text.substr(at + 7, end - at - 7);
    if (url.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(url.empty()) << warden::testing::ReadFile(err);
  EXPECT_THAT(warden::testing::ReadFile(err), HasSubstr("shows the code"));
  // The user approves in a browser (as bob).
  Browser browser(*http_);
  absl::StatusOr<std::string> approved = browser.Drive(url, "bob", "https://never.invalid");
  ASSERT_TRUE(approved.ok()) << approved.status();
  for (int i = 0; i < 400 && ::kill(pid, 0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_NE(::kill(pid, 0), 0) << "the CLI is still polling: " << warden::testing::ReadFile(err);
  EXPECT_THAT(warden::testing::ReadFile(out),
              HasSubstr("as testidp.bob (single sign-on via testidp)"))
      << warden::testing::ReadFile(err);
  // The stored session works like a password login's.
  RunResult who = server_.Cli("device", "whoami -o json");
  ASSERT_EQ(who.code, 0) << who.err;
  EXPECT_THAT(who.out, HasSubstr("testidp.bob"));
  RunResult roles = server_.Cli("device", "role ls --tenant ml");
  EXPECT_EQ(roles.code, 0) << roles.err;
  RunResult users = server_.Cli("device", "user ls --cluster");
  EXPECT_NE(users.code, 0);
  EXPECT_THAT(users.err, HasSubstr("users:read"));
  EXPECT_GE(Metric("warden_sso_total{flow=\"device\",result=\"ok\"}"), 1);
}

TEST_F(SsoIntegrationTest, DeviceFlowForAnUnmappedUserIsRefusedByTheCli) {
  StartServer();
  if (HasFatalFailure()) return;
  // The API steps of the CLI, driven directly.
  RunResult start = server_.Curl("POST", "/api/v1/oidc/testidp/device");
  ASSERT_EQ(start.code, 200) << start.out;
  common::Json d = ParseBody(start.out);
  EXPECT_THAT(start.out, Not(HasSubstr("device_code")));  // the IdP's code stays on the server
  Browser browser(*http_);
  ASSERT_TRUE(
      browser.Drive(d["verification_uri_complete"], "mallory", "https://never.invalid").ok());
  const std::string body = common::Json{{"handle", d["handle"]}}.dump();
  RunResult poll;
  for (int i = 0; i < 30; ++i) {
    std::this_thread::sleep_for(std::chrono::seconds(d.value("interval", 5)));
    poll = server_.Curl("POST", "/api/v1/oidc/testidp/device/poll", "", body);
    if (poll.code != 200 || ParseBody(poll.out).value("status", "") == "ok") break;
  }
  EXPECT_EQ(poll.code, 403) << poll.out;
  EXPECT_THAT(poll.out, HasSubstr("maps to no gpuwarden role"));
  // The handle is spent.
  EXPECT_EQ(server_.Curl("POST", "/api/v1/oidc/testidp/device/poll", "", body).code, 404);
}

TEST_F(SsoIntegrationTest, BearerJwtAccessTokensFromTheIdp) {
  StartServer();
  if (HasFatalFailure()) return;
  absl::StatusOr<std::string> ci = ClientToken("ci-robot");
  ASSERT_TRUE(ci.ok()) << ci.status();
  // ml-team -> developer at ml.
  EXPECT_EQ(Status("GET", "/api/v1/tenants/ml/roles", *ci), 200);
  EXPECT_EQ(Status("GET", "/api/v1/tenants/ml/users", *ci), 403);
  EXPECT_EQ(Status("GET", "/api/v1/users", *ci), 403);
  RunResult who = server_.Curl("GET", "/api/v1/whoami", *ci);
  EXPECT_THAT(who.out, HasSubstr("\"idp-token\""));
  EXPECT_THAT(who.out, HasSubstr("testidp.ci-robot"));
  // An IdP token cannot mint our API tokens.
  EXPECT_EQ(server_
                .Curl("POST", "/api/v1/tenants/ml/tokens", *ci,
                      R"({"name":"t","role":"developer","ttl":"1h"})")
                .code,
            403);

  // A machine in no mapped group: 403.
  absl::StatusOr<std::string> stray = ClientToken("stray-robot");
  ASSERT_TRUE(stray.ok()) << stray.status();
  RunResult r = server_.Curl("GET", "/api/v1/whoami", *stray);
  EXPECT_EQ(r.code, 403);
  EXPECT_THAT(r.out, HasSubstr("maps to no gpuwarden role"));

  // A token of this IdP for another audience: 401.
  absl::StatusOr<std::string> other_aud = ClientToken("ci-robot", "https://other.test/api");
  ASSERT_TRUE(other_aud.ok()) << other_aud.status();
  r = server_.Curl("GET", "/api/v1/whoami", *other_aud);
  EXPECT_EQ(r.code, 401);
  EXPECT_THAT(r.out, HasSubstr("aud"));

  // One flipped signature byte: 401.
  std::string tampered = *ci;
  tampered[tampered.size() - 5] = tampered[tampered.size() - 5] == 'A' ? 'B' : 'A';
  EXPECT_EQ(Status("GET", "/api/v1/whoami", tampered), 401);

  // A real token from another real OpenID provider (its own keys and issuer): 401.
  Idp* foreign = StartTestIdp("foreign", /*own=*/true);
  ASSERT_FALSE(foreign->issuer.empty());
  std::unique_ptr<OidcHttp> fhttp = NewHttpsTransport(foreign->ca_pem);
  absl::StatusOr<http::ClientResponse> ft = fhttp->Do(
      "POST", foreign->issuer + "/token", "grant_type=client_credentials&scope=api%3Aread",
      {{"Content-Type", "application/x-www-form-urlencoded"},
       {"Authorization", Basic("ci-robot", "ci-robot-secret")}});
  StopTestIdp(foreign);
  ASSERT_TRUE(ft.ok()) << ft.status();
  absl::StatusOr<TokenResponse> foreign_token = ParseTokenResponse(ft->body);
  ASSERT_TRUE(foreign_token.ok()) << ft->body;
  r = server_.Curl("GET", "/api/v1/whoami", foreign_token->access_token);
  EXPECT_EQ(r.code, 401);
  EXPECT_THAT(r.out, HasSubstr("not a configured identity provider"));

  // Groups follow the newest token: ml-team -> ml-viewers turns developer into viewer.
  SetGroups("client", "shifting-robot", "ml-team");
  absl::StatusOr<std::string> t1 = ClientToken("shifting-robot");
  ASSERT_TRUE(t1.ok());
  EXPECT_EQ(Status("GET", "/api/v1/tenants/ml/roles", *t1), 200);
  SetGroups("client", "shifting-robot", "ml-viewers");
  absl::StatusOr<std::string> t2 = ClientToken("shifting-robot");
  ASSERT_TRUE(t2.ok());
  EXPECT_EQ(Status("GET", "/api/v1/tenants/ml/roles", *t2), 403);
  EXPECT_EQ(Status("GET", "/api/v1/tenants/ml", *t2), 200);
  SetGroups("client", "shifting-robot", "ml-team");

  EXPECT_GE(Metric("warden_sso_total{flow=\"bearer\",result=\"ok\"}"), 1);
  EXPECT_GE(Metric("warden_sso_total{flow=\"bearer\",result=\"invalid\"}"), 3);
  EXPECT_GE(Metric("warden_sso_total{flow=\"bearer\",result=\"refused\"}"), 1);
}

TEST_F(SsoIntegrationTest, SsoNeverBypassesMfaForAdmins) {
  StartServer("mfa: {required_for: admins}\n");
  if (HasFatalFailure()) return;
  // alice maps to cluster admin; the IdP did not assert MFA (no amr): her session may only enroll.
  Browser browser(*http_);
  absl::StatusOr<std::string> page = BrowserLogin(browser, "alice");
  ASSERT_TRUE(page.ok()) << page.status();
  common::Json login = ParseBody(*page);
  EXPECT_EQ(login["mfa"], false);
  EXPECT_EQ(login["mfa_enrollment_required"], true);
  const std::string token = login["token"];
  RunResult r = server_.Curl("GET", "/api/v1/users", token);
  EXPECT_EQ(r.code, 403);
  EXPECT_THAT(r.out, HasSubstr("MFA enrollment required"));
  EXPECT_EQ(Status("POST", "/api/v1/mfa/enroll", token), 200);

  // Machine admins: a token without amr is refused admin work; one whose amr says "mfa" may act
  // as admin, but still needs a fresh local second factor for step-up actions.
  absl::StatusOr<std::string> plain = ClientToken("admin-robot");
  ASSERT_TRUE(plain.ok()) << plain.status();
  r = server_.Curl("GET", "/api/v1/users", *plain);
  EXPECT_EQ(r.code, 403);
  EXPECT_THAT(r.out, HasSubstr("does not assert a second factor"));
  absl::StatusOr<std::string> mfa = ClientToken("mfa-admin-robot");
  ASSERT_TRUE(mfa.ok()) << mfa.status();
  EXPECT_EQ(Status("GET", "/api/v1/users", *mfa), 200);
  r = server_.Curl("POST", "/api/v1/tenants", *mfa, R"({"name":"t1"})");
  EXPECT_EQ(r.code, 201) << r.out;
  r = server_.Curl("POST", "/api/v1/users", *mfa, R"({"name":"x","password":"long-enough-1"})");
  EXPECT_EQ(r.code, 403) << r.out;
  EXPECT_THAT(r.out, HasSubstr("step-up"));
}

}  // namespace
}  // namespace warden::auth::oidc
