// Feeds arbitrary bytes to the tenant policy decoder (the body of PUT
// /api/v1/tenants/{t}/policy). It must return a policy or an InvalidArgument, never crash; an
// accepted policy has quota fields in 0..2^53 or unlimited, its canonical JSON parses back to an
// equal policy with the same text, and a policy never weakens itself.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "sched/tenant_policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace warden::sched;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto p = ParseTenantPolicy(text);
  if (!p.ok()) {
    if (p.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  for (int64_t v : {p->quota.gpu_millis, p->quota.gpu_memory_mib, p->quota.mig_slices,
                    p->quota.cpu_millis, p->quota.memory_mib, p->quota.running_jobs}) {
    if (v != Resources::kUnlimited && (v < 0 || v > kMaxQuotaValue)) std::abort();
  }
  const std::string canon = TenantPolicyToJson(*p);
  auto again = ParseTenantPolicy(canon);
  if (!again.ok() || !(*again == *p) || TenantPolicyToJson(*again) != canon) std::abort();
  if (!Weakening(*p, *p).empty()) std::abort();
  return 0;
}
