// Issue 2's attacks that must fail, each against the real server over real TLS. Every test here
// would fail if the defence it names were removed.
#include <gtest/gtest.h>

#include <thread>

#include "harness.h"

namespace warden::testing {
namespace {

using common::Json;

constexpr char kPw[] = "s3cret-passw0rd";

class AttackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.Start("sqlite", "session: {idle: 2s, absolute: 1h}\nhttp: {max_body_bytes: 4096, header_timeout: 1s}\n");
    ASSERT_FALSE(HasFatalFailure());
    server_.Login("admin", "admin", server_.admin_password());
    ASSERT_EQ(server_.Cli("admin", "tenant create a").code, 0);
    ASSERT_EQ(server_.Cli("admin", "tenant create b").code, 0);
    ASSERT_EQ(server_.Cli("admin", "user create a-dev --tenant a --role developer --password-stdin",
                          std::string(kPw) + "\n").code, 0);
    server_.Login("dev", "a-dev", kPw);
    dev_ = server_.Token("dev");
    admin_ = server_.Token("admin");
  }

  static std::string ErrorCode(const RunResult& r) {
    auto j = Json::parse(r.out, nullptr, false);
    if (j.is_discarded() || !j.contains("error")) return "";
    return j["error"].value("code", "");
  }
  static std::string ErrorMessage(const RunResult& r) {
    auto j = Json::parse(r.out, nullptr, false);
    if (j.is_discarded() || !j.contains("error")) return "";
    return j["error"].value("message", "");
  }

  WardenServer server_;
  std::string dev_, admin_;
};

TEST_F(AttackTest, NoTokenIs401) {
  RunResult r = server_.Curl("GET", "/api/v1/tenants/a");
  EXPECT_EQ(r.code, 401);
  EXPECT_EQ(ErrorCode(r), "UNAUTHENTICATED");
  EXPECT_EQ(ErrorMessage(r), "missing bearer token");
}

TEST_F(AttackTest, MalformedTokensAre401) {
  for (const std::string& t : {std::string("x"), std::string("gws_"), std::string(5000, 'A'),
                               std::string("gwt_") + std::string(43, '!'),
                               dev_.substr(0, dev_.size() - 1) + (dev_.back() == 'A' ? "B" : "A")}) {
    RunResult r = server_.Curl("GET", "/api/v1/tenants/a", t);
    EXPECT_EQ(r.code, 401) << t;
  }
  RunResult r = server_.Curl("GET", "/api/v1/tenants/a", "", "", "-H 'Authorization: Basic Zm9vOmJhcg=='");
  EXPECT_EQ(r.code, 401);
}

TEST_F(AttackTest, ExpiredSessionIs401) {
  EXPECT_EQ(server_.Curl("GET", "/api/v1/tenants/a", dev_).code, 200);
  // The idle timeout is 2 s in this server's config.
  std::this_thread::sleep_for(std::chrono::milliseconds(3200));
  RunResult r = server_.Curl("GET", "/api/v1/tenants/a", dev_);
  EXPECT_EQ(r.code, 401);
  EXPECT_EQ(ErrorMessage(r), "session expired");
}

TEST_F(AttackTest, TokenOfAnotherTenantIs403) {
  RunResult t = server_.Cli("dev", "token create ci --role developer -o json");
  ASSERT_EQ(t.code, 0) << t.err;
  std::string secret = Json::parse(t.out)["secret"];
  EXPECT_EQ(server_.Curl("GET", "/api/v1/tenants/a", secret).code, 200);
  EXPECT_EQ(server_.Curl("GET", "/api/v1/tenants/b", secret).code, 403);
  EXPECT_EQ(server_.Curl("GET", "/api/v1/tenants/b/users", secret).code, 403);
  // A token cannot mint tokens (it would outlive its own expiry).
  EXPECT_EQ(server_.Curl("POST", "/api/v1/tenants/a/tokens", secret, R"({"name":"x","role":"viewer"})").code, 403);
}

TEST_F(AttackTest, RevokedApiTokenIs401) {
  RunResult t = server_.Cli("dev", "token create ci --role viewer -o json");
  ASSERT_EQ(t.code, 0) << t.err;
  Json j = Json::parse(t.out);
  std::string secret = j["secret"], id = j["id"];
  EXPECT_EQ(server_.Curl("GET", "/api/v1/tenants/a", secret).code, 200);
  ASSERT_EQ(server_.Cli("dev", "token revoke " + id).code, 0);
  RunResult r = server_.Curl("GET", "/api/v1/tenants/a", secret);
  EXPECT_EQ(r.code, 401);
  EXPECT_EQ(ErrorMessage(r), "token revoked");
}

TEST_F(AttackTest, PathTraversalInResourceNamesIsRefused) {
  // Encoded separators and dot-dot inside a path parameter are refused before any handler.
  for (std::string p : {"/api/v1/tenants/..%2Fb", "/api/v1/tenants/%2e%2e", "/api/v1/tenants/a%00b",
                               "/api/v1/tenants/a/users/..%2F..%2Fetc%2Fshadow/disable"}) {
    RunResult r = server_.Curl("GET", p, admin_, "", "--path-as-is");
    EXPECT_TRUE(r.code == 400 || r.code == 404 || r.code == 405) << p << " -> " << r.code;
    EXPECT_NE(r.code, 200) << p;
  }
  // A malformed percent-escape is refused by the HTTP layer, and audited.
  int before = server_.AuditCount();
  EXPECT_EQ(server_.Curl("GET", "/api/v1/tenants/%zz", admin_, "", "--path-as-is").code, 400);
  EXPECT_EQ(server_.AuditCountSynced() - before, 1);
  RunResult r = server_.Curl("POST", "/api/v1/tenants", admin_, R"({"name":"../../etc"})");
  EXPECT_EQ(r.code, 400);
  EXPECT_NE(ErrorMessage(r).find("tenant name"), std::string::npos);
}

TEST_F(AttackTest, OversizedBodyIs413) {
  std::string big = R"({"name":")" + std::string(8000, 'a') + R"("})";
  int before = server_.AuditCount();
  RunResult r = server_.Curl("POST", "/api/v1/tenants", admin_, big);
  EXPECT_EQ(r.code, 413);
  // Refused at the HTTP layer, and still audited once, with who sent it.
  EXPECT_EQ(server_.AuditCountSynced() - before, 1);
  RunResult ls = server_.Cli("admin", "audit ls --limit 2 -o json");  // it, then the sync request
  ASSERT_EQ(ls.code, 0) << ls.err;
  Json e = Json::parse(ls.out)["items"][0];
  EXPECT_EQ(e["status"], 413);
  EXPECT_EQ(e["action"], "http:rejected");
  EXPECT_EQ(e["actor_name"], "admin");
  EXPECT_EQ(e["decision"], "deny");
}

TEST_F(AttackTest, SlowHeadersConnectionIsClosed) {
  // Open TLS, send half a request line, then nothing: the server must hang up after its 1 s
  // header timeout. `openssl s_client` exits when the server closes the connection.
  auto start = std::chrono::steady_clock::now();
  // Process substitution: bash does not wait for the slow writer, only for s_client.
  RunResult r = RunShell("timeout 10 openssl s_client -quiet -connect 127.0.0.1:" +
                         std::to_string(server_.port()) +
                         " < <(printf 'GET /api/v1/version HTTP/1.1\\r\\nHost: x\\r\\n'; sleep 8) "
                         "2>/dev/null; echo exit=$?");
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(secs, 6.0) << "server kept a slow-headers connection open: " << r.out;
  EXPECT_EQ(r.out.find("HTTP/1.1 200"), std::string::npos);
}

TEST_F(AttackTest, Tls10And11ClientsAreRefused) {
  for (const char* v : {"1.0", "1.1"}) {
    RunResult r = RunShell("curl -sS --cacert " + ShellQuote(server_.dir() + "/data/pki/ca.crt") +
                           " --tlsv1.0 --tls-max " + v + " --ciphers DEFAULT@SECLEVEL=0 " +
                           server_.url() + "/healthz");
    EXPECT_NE(r.code, 0) << "TLS " << v << " was accepted: " << r.out;
  }
  RunResult ok = RunShell("curl -sS --cacert " + ShellQuote(server_.dir() + "/data/pki/ca.crt") +
                          " --tlsv1.2 --tls-max 1.2 " + server_.url() + "/healthz");
  EXPECT_EQ(ok.code, 0) << ok.err;
  RunResult v13 = RunShell("curl -sS -w '%{http_code}' --cacert " + ShellQuote(server_.dir() + "/data/pki/ca.crt") +
                           " --tlsv1.3 " + server_.url() + "/healthz");
  EXPECT_EQ(v13.code, 0) << v13.err;
}

TEST_F(AttackTest, PlainHttpToTheTlsPortIsRefused) {
  RunResult r = RunShell("curl -sS -w '\\n%{http_code}' http://127.0.0.1:" +
                         std::to_string(server_.port()) + "/healthz");
  EXPECT_NE(r.out.find("400"), std::string::npos) << r.out << r.err;
  EXPECT_EQ(r.out.find("\"ok\""), std::string::npos);
}

TEST_F(AttackTest, SqlMetacharactersInStringFieldsAreDataNotCode) {
  const std::string evil = "x'); DROP TABLE users;--\"\\%_";
  // Free-text fields (passwords, login names) go through bound parameters only.
  Json login{{"user", "admin' OR '1'='1"}, {"password", evil}};
  EXPECT_EQ(server_.Curl("POST", "/api/v1/login", "", login.dump()).code, 401);
  Json user{{"name", "sqlpw"}, {"password", evil}};
  ASSERT_EQ(server_.Curl("POST", "/api/v1/tenants/a/users", admin_, user.dump()).code, 201);
  Json good{{"user", "sqlpw"}, {"password", evil}};
  EXPECT_EQ(server_.Curl("POST", "/api/v1/login", "", good.dump()).code, 200);
  // Name fields refuse metacharacters outright.
  for (const char* route : {"/api/v1/tenants", "/api/v1/tenants/a/roles", "/api/v1/tenants/a/users",
                            "/api/v1/tenants/a/tokens", "/api/v1/tenants/a/bindings"}) {
    Json body{{"name", evil}, {"password", "12345678"}, {"permissions", {"jobs:read"}}, {"role", evil}};
    if (std::string(route).find("bindings") != std::string::npos) body = Json{{"user", evil}, {"role", "viewer"}};
    if (std::string(route).find("tokens") != std::string::npos) body = Json{{"name", evil}, {"role", "viewer"}};
    if (std::string(route).find("roles") != std::string::npos) body = Json{{"name", evil}, {"permissions", {evil}}};
    if (std::string(route) == "/api/v1/tenants") body = Json{{"name", evil}};
    if (std::string(route).find("users") != std::string::npos) body = Json{{"name", evil}, {"password", "12345678"}};
    RunResult r = server_.Curl("POST", route, admin_, body.dump());
    EXPECT_EQ(r.code, 400) << route << ": " << r.out;
  }
  // In query strings and path parameters too.
  EXPECT_EQ(server_.Curl("GET", "/api/v1/tenants/a'%20OR%20'1'='1", admin_).code, 404);
  EXPECT_EQ(server_.Curl("GET", "/api/v1/audit?actor=x'%20OR%201=1--", admin_).code, 200);
  // Everything is still there.
  RunResult users = server_.Cli("admin", "user ls --cluster -o json");
  ASSERT_EQ(users.code, 0) << users.err;
  EXPECT_EQ(Json::parse(users.out)["items"].size(), 3u);
}

TEST_F(AttackTest, MalformedJsonIs400WithAClearMessage) {
  struct Case {
    std::string body;
    std::string message;
  };
  std::vector<Case> cases = {
      {R"({"name":"c","name":"d"})", "duplicate JSON key \"name\""},
      {std::string(100, '[') + std::string(100, ']'), "JSON nesting deeper than 32 levels"},
      {R"({"name":7})", "field \"name\": expected string, got number"},
      {R"({"name":"c","extra":1})", "unknown field \"extra\""},
      {R"({"name":)", "malformed JSON at byte"},
      {R"("just a string")", "expected a JSON object, got string"},
  };
  for (const Case& c : cases) {
    RunResult r = server_.Curl("POST", "/api/v1/tenants", admin_, c.body);
    EXPECT_EQ(r.code, 400) << c.body;
    EXPECT_EQ(ErrorCode(r), "INVALID_ARGUMENT") << c.body;
    EXPECT_NE(ErrorMessage(r).find(c.message), std::string::npos) << c.body << " -> " << ErrorMessage(r);
  }
}

TEST_F(AttackTest, ChangedServerCaIsRefusedByThePinnedCli) {
  // A second server on the same address would present another CA: simulate by pointing the
  // pinned credentials of a fresh login at a different server.
  WardenServer other;
  other.Start("sqlite");
  ASSERT_FALSE(HasFatalFailure());
  // Pin `server_`'s CA under `other`'s URL, as if `other` had taken over the address.
  RunResult pin = RunShell("mkdir -p " + ShellQuote(server_.dir() + "/cli-mitm") + " && sed 's#" +
                           server_.url() + "#" + other.url() + "#g' " +
                           ShellQuote(server_.dir() + "/cli-admin/credentials.json") + " > " +
                           ShellQuote(server_.dir() + "/cli-mitm/credentials.json"));
  ASSERT_EQ(pin.code, 0) << pin.err;
  RunResult r = server_.Cli("mitm", "whoami");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("pinned"), std::string::npos) << r.err;
  RunResult login = server_.Cli("mitm", "login --server " + other.url() + " --user admin --password-stdin",
                                other.admin_password() + "\n");
  EXPECT_NE(login.code, 0);
  // A first login that names the wrong fingerprint is refused too.
  RunResult fp = server_.Cli("fresh", "login --server " + other.url() + " --user admin --password-stdin --ca-fingerprint " +
                                          server_.fingerprint(),
                             other.admin_password() + "\n");
  EXPECT_NE(fp.code, 0);
  EXPECT_NE(fp.err.find("refusing"), std::string::npos) << fp.err;
}

}  // namespace
}  // namespace warden::testing
