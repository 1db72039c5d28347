// A tenant's isolation policy and quota as the API and the store carry it, and its strict JSON
// decoder (untrusted input: fuzzed by fuzz/fuzz_tenant_policy.cc).
//   {"isolation":"exclusive","quota":{"gpu_millis":8000,"gpu_memory_mib":655360,"mig_slices":14,
//    "cpu_millis":64000,"memory_mib":524288,"running_jobs":20}}
// The quota uses the scheduler's Resources shape (model.h): a whole GPU is 1000 gpu_millis. A
// field left out is unlimited; "quota" left out is all unlimited; "isolation" is required.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "sched/model.h"

namespace warden::sched {

struct TenantPolicy {
  Isolation isolation = Isolation::kMig;
  Resources quota = Resources::Unlimited();
  bool operator==(const TenantPolicy&) const = default;
};

// The largest quota value accepted (2^53: exact in every JSON reader).
inline constexpr int64_t kMaxQuotaValue = int64_t{1} << 53;

// Strict decoder: one object, no unknown or duplicate keys, depth 3, 4 KiB, integers
// 0..kMaxQuotaValue. InvalidArgument naming the field on any error.
absl::StatusOr<TenantPolicy> ParseTenantPolicy(std::string_view json);
// Canonical JSON (unlimited fields left out); ParseTenantPolicy(TenantPolicyToJson(p)) == p.
std::string TenantPolicyToJson(const TenantPolicy& policy);

// Empty when `next` is at least as strict as `current` (isolation no weaker, every quota field
// no larger); otherwise what it weakens, e.g. "isolation mig is weaker than exclusive".
std::string Weakening(const TenantPolicy& current, const TenantPolicy& next);

}  // namespace warden::sched
