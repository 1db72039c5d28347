// Tenant isolation policy and quota through the real server and CLI (issue 6): a tenant admin
// may only tighten its own tenant's policy (attacks), a developer may only read it, another
// tenant's admin cannot touch it, a cluster admin may loosen it; every change is audited.
#include <gtest/gtest.h>

#include "harness.h"

namespace warden::testing {
namespace {

using common::Json;

class TenantPolicyIT : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.Start();
    ASSERT_FALSE(HasFatalFailure());
    server_.Login("admin", "admin", server_.admin_password());
    ASSERT_EQ(server_.Cli("admin", "tenant create acme").code, 0);
    ASSERT_EQ(server_.Cli("admin", "tenant create beta").code, 0);
    for (auto [user, tenant, role] : {std::tuple{"ta", "acme", "tenant-admin"},
                                      std::tuple{"dev", "acme", "developer"},
                                      std::tuple{"tb", "beta", "tenant-admin"}}) {
      RunResult r = server_.Cli("admin", std::string("user create ") + user + " --tenant " +
                                             tenant + " --role " + role + " --password-stdin",
                                std::string("pw-") + user + "-0123456789\n");
      ASSERT_EQ(r.code, 0) << r.err;
      server_.Login(user, user, std::string("pw-") + user + "-0123456789");
    }
  }

  Json Policy(const std::string& who, const std::string& args) {
    RunResult r = server_.Cli(who, "tenant policy " + args + " -o json");
    EXPECT_EQ(r.code, 0) << r.err << r.out;
    return r.code == 0 ? Json::parse(r.out) : Json::object();
  }

  WardenServer server_;
};

TEST_F(TenantPolicyIT, AttackTenantAdminCanOnlyTightenItsOwnPolicy) {
  Json set = Policy("admin", "set --tenant acme --isolation exclusive --quota-gpus 4 --quota-jobs 5");
  EXPECT_EQ(set["isolation"], "exclusive");
  EXPECT_EQ(set["quota"]["gpu_millis"], 4000);
  EXPECT_EQ(set["quota"]["running_jobs"], 5);
  EXPECT_EQ(set["usage"]["gpu_millis"], 0);

  // Weaker isolation, a larger quota, no quota at all: each refused with the reason.
  for (const char* attack : {"set --isolation mig", "set --quota-gpus 8", "set --clear-quota",
                             "set --isolation shared --quota-gpus 1"}) {
    RunResult r = server_.Cli("ta", std::string("tenant policy ") + attack);
    EXPECT_NE(r.code, 0) << attack;
    EXPECT_NE(r.err.find("may only make its own tenant's policy stricter"), std::string::npos)
        << attack << ": " << r.err;
  }
  // The same through the API directly.
  RunResult raw = server_.Curl("PUT", "/api/v1/tenants/acme/policy", server_.Token("ta"),
                               R"({"isolation":"exclusive","quota":{"gpu_millis":4001}})");
  EXPECT_EQ(raw.code, 403) << raw.out;
  // A developer reads it but may not change it, not even stricter.
  Json got = Policy("dev", "get");
  EXPECT_EQ(got["isolation"], "exclusive");
  EXPECT_EQ(got["quota"]["gpu_millis"], 4000);
  EXPECT_NE(server_.Cli("dev", "tenant policy set --isolation dedicated").code, 0);
  // Another tenant's admin cannot reach acme's policy at all.
  EXPECT_EQ(server_.Curl("PUT", "/api/v1/tenants/acme/policy", server_.Token("tb"),
                         R"({"isolation":"dedicated","quota":{"gpu_millis":0}})")
                .code,
            403);
  EXPECT_EQ(server_.Curl("GET", "/api/v1/tenants/acme/policy", server_.Token("tb")).code, 403);
  // Nothing changed.
  got = Policy("admin", "get --tenant acme");
  EXPECT_EQ(got["isolation"], "exclusive");
  EXPECT_EQ(got["quota"]["gpu_millis"], 4000);

  // Stricter is the tenant admin's to make; looser again is the cluster admin's.
  Json tighter = Policy("ta", "set --isolation dedicated --quota-gpus 2");
  EXPECT_EQ(tighter["isolation"], "dedicated");
  EXPECT_EQ(tighter["quota"]["gpu_millis"], 2000);
  EXPECT_EQ(tighter["quota"]["running_jobs"], 5);  // untouched fields keep their value
  Json looser = Policy("admin", "set --tenant acme --isolation shared --clear-quota");
  EXPECT_EQ(looser["isolation"], "shared");
  EXPECT_TRUE(looser["quota"].empty());

  // A strict body: unknown keys and bad values are a 400 naming the field.
  RunResult bad = server_.Curl("PUT", "/api/v1/tenants/acme/policy", server_.Token("admin"),
                               R"({"isolation":"shared","quota":{"gpus":1}})");
  EXPECT_EQ(bad.code, 400) << bad.out;
  EXPECT_NE(bad.out.find("gpus"), std::string::npos) << bad.out;

  // Audited: every set, refused ones included.
  RunResult events = server_.Curl(
      "GET", "/api/v1/audit/events?action=tenants:policy-set&limit=1000", server_.Token("admin"));
  ASSERT_EQ(events.code, 200) << events.out;
  EXPECT_GE(Json::parse(events.out)["items"].size(), 10u) << events.out;
}

}  // namespace
}  // namespace warden::testing
