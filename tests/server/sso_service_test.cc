// SsoService against the real SQLite store with a fake clock and a fake IdP transport (only
// discovery and the device endpoint answer). The whole flows against a real OpenID provider are
// in tests/integration/sso_test.cc.
#include "server/sso_service.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <set>

#include "common/ids.h"
#include "rbac/rbac.h"

namespace warden::server {
namespace {

using auth::oidc::MappedIdentity;
using auth::oidc::ProviderConfig;
using ::testing::HasSubstr;

constexpr char kIssuer[] = "https://idp.example";

class FakeIdp final : public auth::oidc::OidcHttp {
 public:
  absl::StatusOr<http::ClientResponse> Do(
      std::string_view method, std::string_view url, std::string_view,
      const std::vector<std::pair<std::string, std::string>>&) override {
    calls.push_back(std::string(method) + " " + std::string(url));
    http::ClientResponse r;
    r.status = 200;
    if (url == std::string(kIssuer) + "/.well-known/openid-configuration") {
      r.body = common::Json{{"issuer", kIssuer},
                            {"authorization_endpoint", std::string(kIssuer) + "/auth"},
                            {"token_endpoint", std::string(kIssuer) + "/token"},
                            {"jwks_uri", std::string(kIssuer) + "/jwks"},
                            {"device_authorization_endpoint", std::string(kIssuer) + "/device"}}
                   .dump();
    } else if (url == std::string(kIssuer) + "/device") {
      r.body =
          R"({"device_code":"dc","user_code":"ABCD-EFGH","verification_uri":"https://idp.example/d","expires_in":300,"interval":5})";
    } else {
      r.status = 500;
      r.body = "{}";
    }
    return r;
  }
  std::vector<std::string> calls;
};

class SsoServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "sso_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    auto s = store::OpenStore({"sqlite://" + dir_ + "/state.db"});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
    for (const rbac::RoleDef& def : rbac::BuiltinRoles()) {
      ASSERT_TRUE(store_->CreateRole({def.id, def.name, "", def.permissions, true, 1}).ok());
    }
    ASSERT_TRUE(store_->CreateTenant({"ten_ml", "ml", 1}).ok());
    ProviderConfig c;
    c.name = "corp";
    c.issuer = kIssuer;
    c.client_id = "gpuwarden";
    c.redirect_uri = "https://gw.example/api/v1/oidc/corp/callback";
    c.mappings = {{"admins", "", "admin"}, {"ml", "ml", "developer"}, {"ml-ro", "ml", "viewer"}};
    SsoOptions o;
    o.transport = [this](const ProviderConfig&) {
      auto t = std::make_unique<FakeIdp>();
      idp_ = t.get();
      return t;
    };
    auto sso = SsoService::Create({c}, *store_, clock_, rng_, o);
    ASSERT_TRUE(sso.ok()) << sso.status();
    sso_ = *std::move(sso);
  }
  void TearDown() override {
    sso_.reset();
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  static MappedIdentity Who(const std::string& sub, std::vector<auth::oidc::MappedGrant> grants) {
    MappedIdentity id;
    id.provider = "corp";
    id.subject = sub;
    id.grants = std::move(grants);
    return id;
  }
  // (role id, tenant id) of the user's bindings.
  std::set<std::pair<std::string, std::string>> Bindings(const std::string& user_id) {
    std::set<std::pair<std::string, std::string>> out;
    absl::StatusOr<std::vector<store::Binding>> all = store_->ListBindings();
    EXPECT_TRUE(all.ok()) << all.status();
    if (!all.ok()) return out;
    for (const store::Binding& b : *all) {
      if (b.subject_kind == "user" && b.subject_id == user_id)
        out.insert({b.role_id, b.scope_tenant_id});
    }
    return out;
  }

  std::string dir_;
  std::unique_ptr<store::Store> store_;
  common::FakeClock clock_;
  common::SeededRng rng_{11};
  FakeIdp* idp_ = nullptr;
  std::unique_ptr<SsoService> sso_;
};

TEST_F(SsoServiceTest, FirstLoginCreatesALinkedUserInTheMappedTenant) {
  auto p = sso_->Provision(Who("alice", {{"ml", "developer"}}));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->created);
  EXPECT_EQ(p->user.name, "corp.alice");
  EXPECT_EQ(p->user.tenant_id, "ten_ml");
  EXPECT_TRUE(p->user.password_hash.empty());  // SSO-only: password login is impossible
  EXPECT_EQ(store_->GetExternalIdentity("corp", "alice")->user_id, p->user.id);
  EXPECT_EQ(Bindings(p->user.id),
            (std::set<std::pair<std::string, std::string>>{{"developer", "ten_ml"}}));
  EXPECT_TRUE(p->bindings_changed);
  EXPECT_TRUE(sso_->TakePolicyChanged());
  EXPECT_FALSE(sso_->TakePolicyChanged());
  // The next login finds the same user and changes nothing.
  auto again = sso_->Provision(Who("alice", {{"ml", "developer"}}));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->user.id, p->user.id);
  EXPECT_FALSE(again->bindings_changed);
  EXPECT_FALSE(sso_->TakePolicyChanged());
}

TEST_F(SsoServiceTest, BindingsFollowTheGroupsAtEachLoginAndUnmappedLosesEverything) {
  auto p = sso_->Provision(Who("bob", {{"ml", "developer"}, {"", "admin"}}));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->user.tenant_id, "");  // a cluster grant makes a cluster user
  EXPECT_EQ(Bindings(p->user.id).size(), 2u);
  ASSERT_TRUE(sso_->Provision(Who("bob", {{"ml", "viewer"}})).ok());
  EXPECT_EQ(Bindings(p->user.id),
            (std::set<std::pair<std::string, std::string>>{{"viewer", "ten_ml"}}));
  // A binding an admin added by hand to an SSO user is replaced too: the IdP is the authority.
  ASSERT_TRUE(store_->CreateBinding({"bnd_manual", "user", p->user.id, "auditor", "", 1}).ok());
  ASSERT_TRUE(sso_->Provision(Who("bob", {{"ml", "viewer"}})).ok());
  EXPECT_EQ(Bindings(p->user.id).size(), 1u);
  ASSERT_TRUE(store_->CreateSession({"sess", p->user.id, 1, 1, 1'900'000'000}).ok());
  (void)sso_->TakePolicyChanged();
  ASSERT_TRUE(sso_->Withdraw("corp", "bob").ok());
  EXPECT_TRUE(Bindings(p->user.id).empty());
  EXPECT_TRUE(absl::IsNotFound(store_->GetSession("sess").status()));
  EXPECT_TRUE(sso_->TakePolicyChanged());
  EXPECT_TRUE(sso_->Withdraw("corp", "never-seen").ok());
}

TEST_F(SsoServiceTest, ALocalUserWithTheSameNameIsNeverTakenOver) {
  ASSERT_TRUE(store_->CreateUser({"usr_local", "corp.carol", "", "$argon2id$x", false, 1}).ok());
  auto p = sso_->Provision(Who("carol", {{"ml", "viewer"}}));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_NE(p->user.id, "usr_local");
  EXPECT_THAT(p->user.name, HasSubstr("corp.carol-"));
  EXPECT_TRUE(Bindings("usr_local").empty());
  // Subjects that are not valid names get a digest, not an error.
  auto odd = sso_->Provision(Who("Weird Subject/../1", {{"ml", "viewer"}}));
  ASSERT_TRUE(odd.ok()) << odd.status();
  EXPECT_TRUE(common::ValidateName("user", odd->user.name).ok()) << odd->user.name;
}

TEST_F(SsoServiceTest, DisabledUsersAndBrokenMappingsAreRefused) {
  auto p = sso_->Provision(Who("dave", {{"ml", "viewer"}}));
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE(store_->SetUserDisabled(p->user.id, true).ok());
  EXPECT_TRUE(absl::IsUnauthenticated(sso_->Provision(Who("dave", {{"ml", "viewer"}})).status()));
  auto missing = sso_->Provision(Who("erin", {{"nosuch", "viewer"}}));
  EXPECT_TRUE(absl::IsFailedPrecondition(missing.status()));
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("tenant \"nosuch\""));
  auto norole = sso_->Provision(Who("erin", {{"ml", "wizard"}}));
  EXPECT_THAT(std::string(norole.status().message()), HasSubstr("role \"wizard\""));
  EXPECT_TRUE(absl::IsNotFound(store_->GetExternalIdentity("corp", "erin").status()));
}

TEST_F(SsoServiceTest, BrowserStateIsSingleUseBoundToTheBrowserAndExpires) {
  auto login = sso_->BeginBrowserLogin("corp");
  ASSERT_TRUE(login.ok()) << login.status();
  EXPECT_THAT(login->redirect_url, HasSubstr("code_challenge_method=S256"));
  auto params = *auth::oidc::ParseQuery(login->redirect_url.substr(login->redirect_url.find('?')));
  std::string state;
  for (const auto& [k, v] : params) {
    if (k == "state") state = v;
  }
  const std::string query = "code=c&state=" + state;
  // Another browser (no or a wrong cookie): refused, and the state is gone.
  auto wrong = sso_->FinishBrowserLogin("corp", query, "not-the-cookie");
  EXPECT_TRUE(absl::IsPermissionDenied(wrong.status())) << wrong.status();
  auto again = sso_->FinishBrowserLogin("corp", query, login->binding);
  EXPECT_TRUE(absl::IsUnauthenticated(again.status()));
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("already used"));
  // Expiry.
  auto late = sso_->BeginBrowserLogin("corp");
  ASSERT_TRUE(late.ok());
  params = *auth::oidc::ParseQuery(late->redirect_url.substr(late->redirect_url.find('?')));
  for (const auto& [k, v] : params) {
    if (k == "state") state = v;
  }
  clock_.Advance(absl::Minutes(11));
  auto expired = sso_->FinishBrowserLogin("corp", "code=c&state=" + state, late->binding);
  EXPECT_THAT(std::string(expired.status().message()), HasSubstr("expired"));
  // Nothing of this reached the IdP's token endpoint.
  for (const std::string& call : idp_->calls)
    EXPECT_THAT(call, ::testing::Not(HasSubstr("/token")));
  EXPECT_TRUE(absl::IsNotFound(sso_->BeginBrowserLogin("nosuch").status()));
}

TEST_F(SsoServiceTest, DevicePollsFasterThanTheIntervalNeverReachTheIdp) {
  auto d = sso_->StartDeviceLogin("corp");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->user_code, "ABCD-EFGH");
  EXPECT_EQ(d->interval_s, 5);
  EXPECT_NE(d->handle, "dc");  // the IdP's device_code never leaves the server
  const size_t calls = idp_->calls.size();
  bool slow = false;
  for (int i = 0; i < 50; ++i) {
    auto p = sso_->PollDeviceLogin("corp", d->handle, &slow);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_FALSE(p->has_value());
    EXPECT_TRUE(slow);
  }
  EXPECT_EQ(idp_->calls.size(), calls);
  EXPECT_TRUE(absl::IsNotFound(sso_->PollDeviceLogin("corp", "guessed", &slow).status()));
  clock_.Advance(absl::Minutes(6));
  EXPECT_TRUE(absl::IsDeadlineExceeded(sso_->PollDeviceLogin("corp", d->handle, &slow).status()));
  EXPECT_TRUE(absl::IsNotFound(sso_->PollDeviceLogin("corp", d->handle, &slow).status()));
}

TEST(SsoBearerShapeTest, OnlyThreeBase64UrlPartsLookLikeAJwt) {
  EXPECT_TRUE(SsoService::LooksLikeJwt("eyJh.eyJi.c2ln"));
  EXPECT_FALSE(SsoService::LooksLikeJwt("gws_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
  EXPECT_FALSE(SsoService::LooksLikeJwt("a.b"));
  EXPECT_FALSE(SsoService::LooksLikeJwt("a.b.c.d"));
  EXPECT_FALSE(SsoService::LooksLikeJwt("a..c"));
  EXPECT_FALSE(SsoService::LooksLikeJwt("a.b=.c"));
}

}  // namespace
}  // namespace warden::server
