#include <gtest/gtest.h>

#include "common/config.h"
#include "common/encoding.h"
#include "common/ids.h"
#include "common/json.h"

namespace warden::common {
namespace {

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

TEST(ParseJsonStrictTest, AcceptsOrdinaryObject) {
  auto j = ParseJsonStrict(R"({"name":"acme","n":3,"tags":["a","b"]})");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ((*j)["name"], "acme");
}

TEST(ParseJsonStrictTest, RejectsDuplicateKeysNamingTheKey) {
  auto j = ParseJsonStrict(R"({"role":"viewer","role":"admin"})");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(Msg(j.status()).find("duplicate JSON key \"role\""), std::string::npos);
}

TEST(ParseJsonStrictTest, DuplicateKeysInNestedObjectsAreCaughtButSiblingsMayRepeat) {
  EXPECT_TRUE(ParseJsonStrict(R"([{"a":1},{"a":2}])").ok());
  EXPECT_TRUE(ParseJsonStrict(R"({"x":{"a":1},"y":{"a":1}})").ok());
  EXPECT_FALSE(ParseJsonStrict(R"({"x":{"a":1,"a":2}})").ok());
}

TEST(ParseJsonStrictTest, RejectsDeepNesting) {
  std::string deep(10000, '[');
  auto j = ParseJsonStrict(deep + std::string(10000, ']'));
  ASSERT_FALSE(j.ok());
  EXPECT_NE(Msg(j.status()).find("nesting deeper than 32"), std::string::npos);
}

TEST(ParseJsonStrictTest, RejectsSyntaxErrorsWithOffset) {
  auto j = ParseJsonStrict(R"({"a":)");
  ASSERT_FALSE(j.ok());
  EXPECT_NE(Msg(j.status()).find("malformed JSON at byte"), std::string::npos);
}

TEST(JsonFieldsTest, WrongTypesNameFieldAndTypes) {
  auto j = ParseJsonStrict(R"({"name":5,"ttl":"x","list":[1]})");
  ASSERT_TRUE(j.ok());
  auto f = JsonFields::Of(*j);
  ASSERT_TRUE(f.ok());
  auto name = f->RequiredString("name");
  EXPECT_EQ(Msg(name.status()), "field \"name\": expected string, got number");
  EXPECT_FALSE(f->OptionalInt("ttl").ok());
  EXPECT_FALSE(f->StringList("list").ok());
  EXPECT_EQ(Msg(f->RequiredString("missing").status()), "field \"missing\" is required");
  EXPECT_EQ(Msg(f->OnlyKeys({"name", "ttl"})), "unknown field \"list\"");
  auto arr = ParseJsonStrict("[1]");
  EXPECT_FALSE(JsonFields::Of(*arr).ok());
}

TEST(ValidateNameTest, RefusesTraversalAndOddCharacters) {
  EXPECT_TRUE(ValidateName("tenant", "acme-1").ok());
  EXPECT_FALSE(ValidateName("tenant", "").ok());
  EXPECT_FALSE(ValidateName("tenant", "../etc").ok());
  EXPECT_FALSE(ValidateName("tenant", "a..b").ok());
  EXPECT_FALSE(ValidateName("tenant", "a/b").ok());
  EXPECT_FALSE(ValidateName("tenant", "A").ok());
  EXPECT_FALSE(ValidateName("tenant", "a'; DROP TABLE x;--").ok());
  EXPECT_FALSE(ValidateName("tenant", std::string(64, 'a')).ok());
}

TEST(EncodingTest, Base64UrlRoundTripsAndRejectsNonCanonical) {
  for (std::string s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    auto d = Base64UrlDecode(Base64UrlEncode(s));
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(*d, s);
  }
  EXPECT_EQ(Base64UrlEncode("foobar"), "Zm9vYmFy");
  EXPECT_FALSE(Base64UrlDecode("Zm9=").has_value());
  EXPECT_FALSE(Base64UrlDecode("Zh").has_value());  // stray low bits
  EXPECT_EQ(HexEncode(*HexDecode("00ff10")), "00ff10");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(ServerConfigTest, ParsesKnownKeysAndDurations) {
  auto c = ParseServerConfig("listen: 0.0.0.0:9443\nsession: {idle: 30m, absolute: 8h}\n"
                             "http: {max_body_bytes: 2048, header_timeout: 5s}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen, "0.0.0.0:9443");
  EXPECT_EQ(c->session_idle, absl::Minutes(30));
  EXPECT_EQ(c->http.max_body_bytes, 2048u);
  EXPECT_EQ(c->http.header_timeout, absl::Seconds(5));
}

TEST(ServerConfigTest, ErrorsNameTheKey) {
  EXPECT_EQ(Msg(ParseServerConfig("lisen: x").status()), "unknown config key \"lisen\"");
  EXPECT_NE(Msg(ParseServerConfig("threads: many").status()).find("\"threads\": expected an integer"),
            std::string::npos);
  EXPECT_NE(Msg(ParseServerConfig("threads: 0").status()).find("out of range"), std::string::npos);
  EXPECT_NE(Msg(ParseServerConfig("session: {idle: soon}").status()).find("session.idle"),
            std::string::npos);
  EXPECT_FALSE(ParseServerConfig("[1, 2").ok());
  EXPECT_FALSE(ParseServerConfig("- a\n- b").ok());
  EXPECT_TRUE(ParseServerConfig("").ok());
}

TEST(ServerConfigTest, MfaPolicyKeys) {
  auto d = ParseServerConfig("");
  EXPECT_EQ(d->mfa.required_for, "admins");
  EXPECT_EQ(d->mfa.step_up_window, absl::Minutes(10));
  auto c = ParseServerConfig(
      "mfa: {required_for: all, all_users_in_tenants: [acme, globex], step_up_window: 5m}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->mfa.required_for, "all");
  EXPECT_EQ(c->mfa.all_users_in_tenants, (std::vector<std::string>{"acme", "globex"}));
  EXPECT_EQ(c->mfa.step_up_window, absl::Minutes(5));
  EXPECT_NE(Msg(ParseServerConfig("mfa: {required_for: nobody}").status())
                .find("expected one of none, admins, all"),
            std::string::npos);
  EXPECT_NE(Msg(ParseServerConfig("mfa: {all_users_in_tenants: acme}").status()).find("expected a list"),
            std::string::npos);
}

TEST(ServerConfigTest, AuditDurableReadsIsABooleanOffByDefault) {
  EXPECT_FALSE(ParseServerConfig("")->audit_durable_reads);
  auto c = ParseServerConfig("audit: {durable_reads: true}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->audit_durable_reads);
  EXPECT_FALSE(ParseServerConfig("audit: {durable_reads: false}")->audit_durable_reads);
  EXPECT_NE(Msg(ParseServerConfig("audit: {durable_reads: yes please}").status())
                .find("audit.durable_reads\": expected true or false"),
            std::string::npos);
}

TEST(ServerConfigTest, AuditPollWaitersDefaultsToAutoAndIsBounded) {
  EXPECT_EQ(ParseServerConfig("")->audit_poll_waiters, -1);  // audit::PollWaitersFor(CPUs)
  auto c = ParseServerConfig("audit: {poll_waiters: 0}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->audit_poll_waiters, 0);
  const std::string err = Msg(ParseServerConfig("audit: {poll_waiters: 65}").status());
  EXPECT_NE(err.find("audit.poll_waiters"), std::string::npos) << err;
  EXPECT_FALSE(ParseServerConfig("audit: {poll_waiters: -1}").ok());
}

TEST(ServerConfigTest, OidcSectionIsKeptForTheServerToParse) {
  auto c = ParseServerConfig(
      "oidc:\n  providers:\n    - {name: corp, issuer: 'https://idp', client_id: c}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NE(c->oidc_yaml.find("providers"), std::string::npos);
  EXPECT_NE(c->oidc_yaml.find("https://idp"), std::string::npos);
  EXPECT_TRUE(ParseServerConfig("listen: 127.0.0.1:1\n")->oidc_yaml.empty());
  auto bad = ParseServerConfig("oidc: yes\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("\"oidc\": expected a mapping"),
            std::string::npos);
}

TEST(ServerConfigTest, AuditSyslogIsOffByDefaultAndParsesEveryKey) {
  auto d = ParseServerConfig("");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->audit_syslog.address.empty());
  EXPECT_EQ(d->audit_syslog.queue_max, 10000);
  EXPECT_EQ(d->audit_syslog.app_name, "gpuwarden");
  auto c = ParseServerConfig(
      "audit:\n  syslog:\n    address: logs.example:6514\n    ca_file: /etc/ca.pem\n"
      "    server_name: logs.internal\n    client_cert: /c.pem\n    client_key: /k.pem\n"
      "    queue_max: 500\n    hostname: gpu-ctl-1\n    app_name: warden\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->audit_syslog.address, "logs.example:6514");
  EXPECT_EQ(c->audit_syslog.ca_file, "/etc/ca.pem");
  EXPECT_EQ(c->audit_syslog.server_name, "logs.internal");
  EXPECT_EQ(c->audit_syslog.client_cert, "/c.pem");
  EXPECT_EQ(c->audit_syslog.client_key, "/k.pem");
  EXPECT_EQ(c->audit_syslog.queue_max, 500);
  EXPECT_EQ(c->audit_syslog.hostname, "gpu-ctl-1");
  EXPECT_EQ(c->audit_syslog.app_name, "warden");
  EXPECT_FALSE(c->audit_syslog.insecure_skip_verify);
}

TEST(ServerConfigTest, AuditSyslogBadValuesAreRefusedNamingTheKey) {
  auto err = [](const std::string& yaml) {
    auto c = ParseServerConfig(yaml);
    return c.ok() ? std::string("accepted") : Msg(c.status());
  };
  const std::string ca = "ca_file: /ca.pem, ";
  EXPECT_NE(err("audit: {syslog: {" + ca + "address: logs.example}}")
                .find("audit.syslog.address\": expected host:port"),
            std::string::npos);
  EXPECT_NE(err("audit: {syslog: {" + ca + "address: 'h:0'}}").find("audit.syslog.address"),
            std::string::npos);
  EXPECT_NE(err("audit: {syslog: {" + ca + "address: 'h:65536'}}").find("audit.syslog.address"),
            std::string::npos);
  EXPECT_NE(err("audit: {syslog: {" + ca + "address: ':6514'}}").find("audit.syslog.address"),
            std::string::npos);
  // Verification is not optional unless said so explicitly.
  EXPECT_NE(err("audit: {syslog: {address: 'h:6514'}}").find("audit.syslog.ca_file\": required"),
            std::string::npos);
  EXPECT_EQ(err("audit: {syslog: {address: 'h:6514', insecure_skip_verify: true}}"), "accepted");
  EXPECT_NE(err("audit: {syslog: {ca_file: /ca.pem}}").find("audit.syslog.address\": required"),
            std::string::npos);
  EXPECT_NE(err("audit: {syslog: {" + ca + "address: 'h:1', client_cert: /c.pem}}")
                .find("client_key"),
            std::string::npos);
  EXPECT_NE(err("audit: {syslog: {" + ca + "address: 'h:1', queue_max: 0}}")
                .find("audit.syslog.queue_max\": 0 is out of range"),
            std::string::npos);
  EXPECT_NE(err("audit: {syslog: {" + ca + "address: 'h:1', queue_max: lots}}")
                .find("audit.syslog.queue_max\": expected an integer"),
            std::string::npos);
  EXPECT_NE(err("audit: {syslog: {" + ca + "address: 'h:1', app_name: 'two words'}}")
                .find("audit.syslog.app_name\": only printable"),
            std::string::npos);
  EXPECT_NE(err("audit: {syslog: {" + ca + "address: 'h:1', app_name: " + std::string(49, 'a') +
                "}}")
                .find("audit.syslog.app_name\": must be 1..48"),
            std::string::npos);
  EXPECT_NE(err("audit: {syslog: {" + ca + "address: 'h:1', hostname: 'a b'}}")
                .find("audit.syslog.hostname"),
            std::string::npos);
  EXPECT_NE(err("audit: {syslog: {" + ca + "address: 'h:1', insecure_skip_verify: maybe}}")
                .find("insecure_skip_verify\": expected true or false"),
            std::string::npos);
  EXPECT_NE(err("audit: {syslog: {" + ca + "address: 'h:1', port: 5}}")
                .find("unknown config key \"audit.syslog.port\""),
            std::string::npos);
}

}  // namespace
}  // namespace warden::common
