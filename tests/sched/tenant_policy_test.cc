// The tenant policy decoder (untrusted API input) and the "stricter only" comparison.
#include "sched/tenant_policy.h"

#include <gtest/gtest.h>

namespace warden::sched {
namespace {

TEST(TenantPolicyTest, ParsesEveryFieldAndRoundTrips) {
  auto p = ParseTenantPolicy(
      R"({"isolation":"exclusive","quota":{"gpu_millis":8000,"gpu_memory_mib":655360,)"
      R"("mig_slices":14,"cpu_millis":64000,"memory_mib":524288,"running_jobs":20}})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->isolation, Isolation::kExclusive);
  EXPECT_EQ(p->quota.gpu_millis, 8000);
  EXPECT_EQ(p->quota.gpu_memory_mib, 655360);
  EXPECT_EQ(p->quota.mig_slices, 14);
  EXPECT_EQ(p->quota.cpu_millis, 64000);
  EXPECT_EQ(p->quota.memory_mib, 524288);
  EXPECT_EQ(p->quota.running_jobs, 20);
  EXPECT_EQ(*ParseTenantPolicy(TenantPolicyToJson(*p)), *p);
  auto min = ParseTenantPolicy(R"({"isolation":"shared"})");
  ASSERT_TRUE(min.ok());
  EXPECT_EQ(min->quota, Resources::Unlimited());
  EXPECT_EQ(TenantPolicyToJson(*min), R"({"isolation":"shared","quota":{}})");
}

TEST(TenantPolicyTest, RefusesAnythingElseNamingTheField) {
  struct Case {
    const char* json;
    const char* says;
  } cases[] = {
      {"", ""},
      {"[]", "must be a JSON object"},
      {R"({})", "isolation"},
      {R"({"isolation":"none"})", "isolation"},
      {R"({"isolation":1})", "isolation"},
      {R"({"isolation":"mig","extra":1})", "extra"},
      {R"({"isolation":"mig","isolation":"shared"})", "isolation"},
      {R"({"isolation":"mig","quota":[]})", "quota"},
      {R"({"isolation":"mig","quota":{"gpus":1}})", "gpus"},
      {R"({"isolation":"mig","quota":{"gpu_millis":-1}})", "quota.gpu_millis"},
      {R"({"isolation":"mig","quota":{"gpu_millis":1.5}})", "quota.gpu_millis"},
      {R"({"isolation":"mig","quota":{"cpu_millis":"8"}})", "quota.cpu_millis"},
      {R"({"isolation":"mig","quota":{"memory_mib":9007199254740993}})", "quota.memory_mib"},
      {R"({"isolation":"mig","quota":{"running_jobs":18446744073709551615}})", "quota.running_jobs"},
      {R"({"isolation":"mig","quota":{"mig_slices":{"a":{"b":1}}}})", ""},
  };
  for (const Case& c : cases) {
    auto p = ParseTenantPolicy(c.json);
    ASSERT_FALSE(p.ok()) << c.json;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_NE(std::string(p.status().message()).find(c.says), std::string::npos)
        << c.json << " -> " << p.status();
  }
  EXPECT_FALSE(ParseTenantPolicy(std::string(5000, ' ') + R"({"isolation":"mig"})").ok());
}

TEST(TenantPolicyTest, WeakeningNamesWhatALooserPolicyWouldGive) {
  TenantPolicy cur;
  cur.isolation = Isolation::kExclusive;
  cur.quota.gpu_millis = 4000;
  TenantPolicy next = cur;
  EXPECT_EQ(Weakening(cur, next), "");
  next.isolation = Isolation::kDedicated;
  next.quota.gpu_millis = 1000;
  next.quota.running_jobs = 2;
  EXPECT_EQ(Weakening(cur, next), "");  // stricter on every count
  next = cur;
  next.isolation = Isolation::kMig;
  EXPECT_EQ(Weakening(cur, next), "isolation mig is weaker than exclusive");
  next = cur;
  next.quota.gpu_millis = 4001;
  EXPECT_EQ(Weakening(cur, next), "quota.gpu_millis 4001 is larger than 4000");
  next = cur;
  next.quota.gpu_millis = Resources::kUnlimited;
  EXPECT_EQ(Weakening(cur, next), "quota.gpu_millis unlimited is larger than 4000");
  // Every field counts, not only GPUs.
  next = cur;
  cur.quota.memory_mib = 100;
  next.quota.memory_mib = 101;
  EXPECT_NE(Weakening(cur, next).find("memory_mib"), std::string::npos);
}

}  // namespace
}  // namespace warden::sched
