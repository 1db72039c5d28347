// Helpers shared by the sched tests: small clusters and job specs.
#pragma once

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "sched/checker.h"
#include "sched/scheduler.h"

namespace warden::sched::testing {

inline NodeSpec MakeNode(const std::string& name, const std::string& pool, int gpus,
                         bool mig = false, const std::string& model = "H100-80GB",
                         int64_t cpu_millis = 64000, int64_t memory_mib = 512 * 1024) {
  NodeSpec n;
  n.name = name;
  n.pool = pool;
  n.cpu_millis = cpu_millis;
  n.memory_mib = memory_mib;
  for (int i = 0; i < gpus; ++i) n.gpus.push_back({name + "-gpu" + std::to_string(i), model, mig});
  return n;
}

inline JobSpec Whole(const std::string& tenant, int gpus, const std::string& name = "job") {
  JobSpec s;
  s.name = name;
  s.tenant = tenant;
  s.gpu_request = GpuRequest::kWhole;
  s.gpus = gpus;
  return s;
}

inline JobSpec Mig(const std::string& tenant, const std::string& profile,
                   const std::string& name = "mig") {
  JobSpec s;
  s.name = name;
  s.tenant = tenant;
  s.gpu_request = GpuRequest::kMig;
  s.mig_profile = profile;
  return s;
}

inline JobSpec Fraction(const std::string& tenant, int millis, const std::string& name = "frac") {
  JobSpec s;
  s.name = name;
  s.tenant = tenant;
  s.gpu_request = GpuRequest::kFraction;
  s.gpu_millis = millis;
  return s;
}

inline JobSpec CpuOnly(const std::string& tenant, const std::string& name = "cpu") {
  JobSpec s;
  s.name = name;
  s.tenant = tenant;
  return s;
}

inline TenantSpec Tenant(const std::string& name, Isolation policy, double weight = 1.0) {
  TenantSpec t;
  t.name = name;
  t.policy = policy;
  t.weight = weight;
  return t;
}

// Fails the test with the violations, if any.
inline void ExpectSound(const Scheduler& s) {
  auto v = CheckClusterState(s.state());
  EXPECT_TRUE(v.empty()) << FormatViolations(v);
}

}  // namespace warden::sched::testing
