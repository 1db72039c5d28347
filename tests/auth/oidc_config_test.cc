// Provider configuration parsing, including every YAML example of docs/oidc.md (the tests run in
// the source directory), so the documented Keycloak, Okta and Entra ID configurations stay valid.
#include "auth/oidc_config.h"

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace warden::auth::oidc {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<std::string> FakeSecret(const std::string& path) { return "secret-of:" + path; }

absl::StatusOr<std::vector<ProviderConfig>> Parse(const std::string& yaml) {
  return ParseOidcConfig(yaml, FakeSecret);
}

std::string Minimal(const std::string& extra = "") {
  return "providers:\n"
         "  - name: corp\n"
         "    issuer: https://idp.example.com\n"
         "    client_id: gw\n"
         "    mappings: [{group: g, role: admin}]\n" +
         extra;
}

TEST(OidcConfigTest, DocsExamplesParse) {
  std::ifstream in("docs/oidc.md");
  ASSERT_TRUE(in.good()) << "run from the source directory";
  std::stringstream ss;
  ss << in.rdbuf();
  std::string doc = ss.str();
  std::regex block("```yaml\\n([\\s\\S]*?)```");
  std::vector<std::string> names;
  for (auto it = std::sregex_iterator(doc.begin(), doc.end(), block); it != std::sregex_iterator();
       ++it) {
    absl::StatusOr<std::vector<ProviderConfig>> p = Parse((*it)[1]);
    ASSERT_TRUE(p.ok()) << p.status() << "\n" << (*it)[1];
    for (const ProviderConfig& c : *p) {
      names.push_back(c.name);
      EXPECT_FALSE(c.require_at_jwt_typ);
      EXPECT_FALSE(c.allow_unverified_email);
      EXPECT_EQ(c.client_secret, "secret-of:/etc/gpuwarden/oidc/" + c.name + ".secret");
    }
  }
  EXPECT_EQ(names, (std::vector<std::string>{"keycloak", "okta", "entra"}));
}

TEST(OidcConfigTest, DefaultsAndMappings) {
  auto p = Parse(Minimal("    access_token_audiences: [api]\n    max_skew_seconds: 30\n"));
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->size(), 1u);
  const ProviderConfig& c = (*p)[0];
  EXPECT_EQ(c.scopes, (std::vector<std::string>{"openid", "email", "groups"}));
  EXPECT_EQ(c.allowed_algs,
            (std::vector<jose::JwsAlg>{jose::JwsAlg::kRS256, jose::JwsAlg::kES256}));
  EXPECT_TRUE(c.require_at_jwt_typ);
  EXPECT_FALSE(c.allow_unverified_email);
  EXPECT_EQ(c.max_skew, absl::Seconds(30));
  EXPECT_EQ(c.mappings.size(), 1u);
  EXPECT_TRUE(c.mappings[0].tenant.empty());
  EXPECT_TRUE(Parse("providers: []\n").ok());
}

TEST(OidcConfigTest, RefusesTyposWeakAlgsAndUnsafeValues) {
  struct Case {
    std::string yaml, why;
  };
  for (const Case& c : std::vector<Case>{
           {Minimal("    allow_unverified_emial: false\n"),
            "unknown key \"allow_unverified_emial\""},
           {Minimal("    allowed_algs: [none]\n"), "never accepted"},
           {Minimal("    allowed_algs: [HS256]\n"), "never accepted"},
           {Minimal("    allowed_algs: []\n"), "at least one"},
           {Minimal("    max_skew_seconds: 3600\n"), "0 to 300"},
           {Minimal("    redirect_uri: http://gw.example.com/cb\n"), "https"},
           {Minimal("    scopes: [email]\n"), "openid"},
           {Minimal("    require_at_jwt_typ: maybe\n"), "true or false"},
           {Minimal("  - name: corp\n    issuer: https://b\n    client_id: x\n"
                    "    mappings: [{group: g, role: r}]\n"),
            "two providers"},
           {"providers:\n  - name: Corp\n    issuer: https://a\n    client_id: x\n"
            "    mappings: [{group: g, role: r}]\n",
            "name must be"},
           {"providers:\n  - name: c\n    issuer: http://a\n    client_id: x\n"
            "    mappings: [{group: g, role: r}]\n",
            "issuer must be an https URL"},
           {"providers:\n  - name: c\n    issuer: https://a\n    client_id: x\n", "no mappings"},
           {"providers:\n  - name: c\n    issuer: https://a\n    client_id: x\n"
            "    mappings: [{group: g}]\n",
            "group and role"},
           {"provider: []\n", "unknown key"},
           {"providers: [\n", "YAML error"},
       }) {
    auto p = Parse(c.yaml);
    ASSERT_FALSE(p.ok()) << c.yaml;
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(c.why)) << c.yaml;
  }
}

TEST(OidcConfigTest, SecretFileMustBePrivate) {
  std::string path = ::testing::TempDir() + "oidc_secret_test";
  {
    std::ofstream out(path);
    out << "s3cret\n";
  }
  chmod(path.c_str(), 0644);
  std::string yaml = Minimal("    client_secret_file: " + path + "\n");
  auto open = ParseOidcConfig(yaml);
  ASSERT_FALSE(open.ok());
  EXPECT_THAT(std::string(open.status().message()), HasSubstr("chmod 600"));
  chmod(path.c_str(), 0600);
  auto ok = ParseOidcConfig(yaml);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)[0].client_secret, "s3cret");
  std::remove(path.c_str());
}

TEST(OidcConfigTest, CaFileMustHoldAPemCertificateAndMfaAmrIsConfigurable) {
  auto c = Parse(Minimal());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE((*c)[0].ca_pem.empty());
  EXPECT_EQ((*c)[0].mfa_amr, (std::vector<std::string>{"mfa", "otp", "hwk"}));
  std::string dir = ::testing::TempDir();
  std::string good = dir + "/oidc_ca_good.pem";
  std::string bad = dir + "/oidc_ca_bad.pem";
  std::ofstream(good) << "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  std::ofstream(bad) << "not a certificate\n";
  c = Parse(Minimal("    ca_file: " + good + "\n    mfa_amr: []\n"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT((*c)[0].ca_pem, HasSubstr("BEGIN CERTIFICATE"));
  EXPECT_TRUE((*c)[0].mfa_amr.empty());
  c = Parse(Minimal("    ca_file: " + bad + "\n"));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("holds no PEM certificate"));
  c = Parse(Minimal("    ca_file: " + dir + "/no-such-ca.pem\n"));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("cannot be read"));
  std::remove(good.c_str());
  std::remove(bad.c_str());
}

}  // namespace
}  // namespace warden::auth::oidc
