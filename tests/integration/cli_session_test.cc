// The core platform as a new user meets it: the real server binary over real TLS, driven by the
// real CLI and curl, on SQLite and on a real PostgreSQL. Covers issue 2's must-show items 3-5.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include <set>

#include "harness.h"

namespace warden::testing {
namespace {

using common::Json;

constexpr char kPw[] = "s3cret-passw0rd";

class CliSessionTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    server_.Start(GetParam());
    if (IsSkipped() || HasFatalFailure()) return;
    server_.Login("admin", "admin", server_.admin_password());
    for (const char* t : {"a", "b"}) {
      RunResult r = server_.Cli("admin", std::string("tenant create ") + t);
      ASSERT_EQ(r.code, 0) << r.err;
    }
    CreateUser("a", "a-dev", "developer");
    CreateUser("a", "a-aud", "auditor");
    CreateUser("a", "a-adm", "tenant-admin");
    CreateUser("b", "b-dev", "developer");
  }

  void CreateUser(const std::string& tenant, const std::string& name, const std::string& role) {
    RunResult r = server_.Cli("admin", "user create " + name + " --tenant " + tenant + " --role " +
                                           role + " --password-stdin",
                              std::string(kPw) + "\n");
    ASSERT_EQ(r.code, 0) << r.err;
  }

  WardenServer server_;
};

TEST_P(CliSessionTest, AdminSeesEverythingItCreated) {
  RunResult r = server_.Cli("admin", "user ls --cluster -o json");
  ASSERT_EQ(r.code, 0) << r.err;
  Json j = Json::parse(r.out);
  std::set<std::string> names;
  for (const auto& u : j["items"]) names.insert(u["name"].get<std::string>());
  EXPECT_EQ(names, (std::set<std::string>{"admin", "a-dev", "a-aud", "a-adm", "b-dev"}));
  r = server_.Cli("admin", "tenant ls");
  ASSERT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("NAME"), std::string::npos);  // a table by default
}

TEST_P(CliSessionTest, DeveloperOfACannotListReadOrChangeAnythingOfB) {
  server_.Login("dev", "a-dev", kPw);
  RunResult own = server_.Cli("dev", "token ls -o json");
  EXPECT_EQ(own.code, 0) << own.err;
  for (std::string cmd :
       {"user ls --tenant b", "role ls --tenant b", "token ls --tenant b",
        "token create x --role developer --tenant b", "user disable b-dev --tenant b",
        "role bindings --tenant b", "audit ls --tenant b", "role create r --perm jobs:read --tenant b"}) {
    RunResult r = server_.Cli("dev", cmd);
    EXPECT_NE(r.code, 0) << cmd;
    EXPECT_NE(r.err.find("is required at tenant \"b\""), std::string::npos) << cmd << ": " << r.err;
  }
  // The tenant list shows only a.
  RunResult ls = server_.Cli("dev", "tenant ls -o json");
  ASSERT_EQ(ls.code, 0) << ls.err;
  Json j = Json::parse(ls.out);
  ASSERT_EQ(j["items"].size(), 1u);
  EXPECT_EQ(j["items"][0]["name"], "a");
  // Over raw HTTP: 403 with the error shape.
  RunResult http = server_.Curl("GET", "/api/v1/tenants/b/users", server_.Token("dev"));
  EXPECT_EQ(http.code, 403);
  Json err = Json::parse(http.out);
  EXPECT_EQ(err["error"]["code"], "PERMISSION_DENIED");
}

TEST_P(CliSessionTest, AuditorReadsButEveryMutationIs403) {
  server_.Login("aud", "a-aud", kPw);
  for (std::string cmd : {"user ls", "role ls", "role bindings", "audit ls", "tenant ls"}) {
    RunResult r = server_.Cli("aud", cmd);
    EXPECT_EQ(r.code, 0) << cmd << ": " << r.err;
  }
  std::string tok = server_.Token("aud");
  struct Mutation {
    const char* method;
    const char* path;
    const char* body;
  };
  for (const Mutation& m : std::initializer_list<Mutation>{
           {"POST", "/api/v1/tenants", R"({"name":"c"})"},
           {"DELETE", "/api/v1/tenants/b", ""},
           {"POST", "/api/v1/tenants/a/users", R"({"name":"x1","password":"12345678"})"},
           {"POST", "/api/v1/tenants/a/users/a-dev/disable", ""},
           {"POST", "/api/v1/tenants/a/roles", R"({"name":"r","permissions":["jobs:read"]})"},
           {"POST", "/api/v1/tenants/a/bindings", R"({"user":"a-dev","role":"viewer"})"},
           {"POST", "/api/v1/tenants/a/tokens", R"({"name":"t","role":"viewer"})"},
           {"DELETE", "/api/v1/tenants/a/roles/developer", ""},
       }) {
    RunResult r = server_.Curl(m.method, m.path, tok, m.body);
    EXPECT_EQ(r.code, 403) << m.method << " " << m.path << ": " << r.out;
  }
  RunResult cli = server_.Cli("aud", "user create x2");
  EXPECT_NE(cli.code, 0);
}

TEST_P(CliSessionTest, TenantAdminCannotEscalate) {
  server_.Login("adm", "a-adm", kPw);
  RunResult r = server_.Cli("adm", "role create ops --perm nodes:manage,jobs:read");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("cannot grant \"nodes:manage\""), std::string::npos) << r.err;
  r = server_.Cli("adm", "role bind admin --user a-dev");
  EXPECT_NE(r.code, 0);
  r = server_.Cli("adm", "role bind admin --user a-dev --cluster");
  EXPECT_NE(r.code, 0);
  r = server_.Cli("adm", "user create boss --cluster");
  EXPECT_NE(r.code, 0);
  // What a tenant-admin may do inside its tenant works.
  r = server_.Cli("adm", "role create ml-dev --perm jobs:read,jobs:create");
  EXPECT_EQ(r.code, 0) << r.err;
  r = server_.Cli("adm", "role bind ml-dev --user a-dev");
  EXPECT_EQ(r.code, 0) << r.err;
  r = server_.Cli("adm", "role unbind ml-dev --user a-dev");
  EXPECT_EQ(r.code, 0) << r.err;
  // Another tenant's user cannot be pulled in.
  r = server_.Cli("adm", "role bind viewer --user b-dev");
  EXPECT_NE(r.code, 0);
}

TEST_P(CliSessionTest, DisabledUsersSessionAndTokensStopOnTheNextRequest) {
  server_.Login("dev", "a-dev", kPw);
  RunResult t = server_.Cli("dev", "token create ci --role developer -o json");
  ASSERT_EQ(t.code, 0) << t.err;
  std::string secret = Json::parse(t.out)["secret"];
  EXPECT_EQ(server_.Curl("GET", "/api/v1/whoami", secret).code, 200);
  EXPECT_EQ(server_.Cli("dev", "whoami").code, 0);

  RunResult d = server_.Cli("admin", "user disable a-dev --tenant a");
  ASSERT_EQ(d.code, 0) << d.err;
  RunResult who = server_.Cli("dev", "whoami");
  EXPECT_NE(who.code, 0);
  EXPECT_EQ(server_.Curl("GET", "/api/v1/whoami", secret).code, 401);
  EXPECT_EQ(server_.Curl("GET", "/api/v1/tenants/a", server_.Token("dev")).code, 401);
  // A disabled user cannot log in again either.
  RunResult again = server_.Cli("dev", "login --server " + server_.url() + " --user a-dev --password-stdin",
                                std::string(kPw) + "\n");
  EXPECT_NE(again.code, 0);
  EXPECT_NE(again.err.find("invalid user name or password"), std::string::npos) << again.err;
}

TEST_P(CliSessionTest, EveryRequestAllowedOrDeniedProducesExactlyOneAuditEvent) {
  server_.Login("dev", "a-dev", kPw);
  std::string tok = server_.Token("dev");
  // Metadata GETs are audited without waiting for the disk: count only once the log is synced
  // (the count after the first sync includes that sync request's own event).
  int before = server_.AuditCountSynced() + 1;
  std::vector<int> statuses;
  statuses.push_back(server_.Curl("GET", "/api/v1/tenants/a", tok).code);            // 200
  statuses.push_back(server_.Curl("GET", "/api/v1/tenants/b", tok).code);            // 403
  statuses.push_back(server_.Curl("GET", "/api/v1/tenants/a").code);                 // 401
  statuses.push_back(server_.Curl("GET", "/api/v1/nope", tok).code);                 // 404
  statuses.push_back(server_.Curl("PATCH", "/api/v1/tenants", tok).code);            // 405
  statuses.push_back(server_.Curl("POST", "/api/v1/tenants/a/roles", tok, "{").code);  // 403
  statuses.push_back(server_.Curl("GET", "/api/v1/whoami", "gws_bogus").code);       // 401
  EXPECT_EQ(statuses, (std::vector<int>{200, 403, 401, 404, 405, 403, 401}));
  // (Not synced by another request here: `audit ls` below must see these 7 as the latest.)
  const int want = before + static_cast<int>(statuses.size());
  for (int i = 0; i < 100 && server_.AuditCount() < want; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // an 8th event would show by now
  EXPECT_EQ(server_.AuditCount() - before, static_cast<int>(statuses.size()));

  // The events say who, what, the decision and the outcome; request ids are unique.
  RunResult r = server_.Cli("admin", "audit ls --limit 7 -o json");
  ASSERT_EQ(r.code, 0) << r.err;
  Json events = Json::parse(r.out)["items"];
  // The admin's own `audit ls` request is recorded after it is served, so it is not in the list.
  ASSERT_EQ(events.size(), 7u);
  std::set<std::string> ids;
  for (const auto& e : events) ids.insert(e["request_id"].get<std::string>());
  EXPECT_EQ(ids.size(), 7u);
  EXPECT_EQ(events[0]["actor_name"], "a-dev");
  EXPECT_EQ(events[0]["decision"], "allow");
  EXPECT_EQ(events[0]["action"], "tenants:read");
  EXPECT_EQ(events[0]["tenant"], "a");
  EXPECT_EQ(events[1]["decision"], "deny");
  EXPECT_EQ(events[1]["status"], 403);
  EXPECT_EQ(events[2]["actor_kind"], "anonymous");
  EXPECT_EQ(events[2]["status"], 401);
}

INSTANTIATE_TEST_SUITE_P(Backends, CliSessionTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace warden::testing
