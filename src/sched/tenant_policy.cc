// Tenant policy decoder and comparison (tenant_policy.h).
#include "sched/tenant_policy.h"

#include <array>
#include <utility>

#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::sched {
namespace {

using common::Json;
using common::StrCat;

// The quota fields in canonical order, with their Resources member.
constexpr std::array<std::pair<const char*, int64_t Resources::*>, 6> kQuotaFields = {{
    {"gpu_millis", &Resources::gpu_millis},
    {"gpu_memory_mib", &Resources::gpu_memory_mib},
    {"mig_slices", &Resources::mig_slices},
    {"cpu_millis", &Resources::cpu_millis},
    {"memory_mib", &Resources::memory_mib},
    {"running_jobs", &Resources::running_jobs},
}};

}  // namespace

absl::StatusOr<TenantPolicy> ParseTenantPolicy(std::string_view json) {
  common::JsonLimits limits;
  limits.max_depth = 3;
  limits.max_bytes = 4096;
  WARDEN_ASSIGN_OR_RETURN(Json doc, common::ParseJsonStrict(json, limits));
  if (!doc.is_object()) return absl::InvalidArgumentError("tenant policy must be a JSON object");
  WARDEN_ASSIGN_OR_RETURN(common::JsonFields f, common::JsonFields::Of(doc));
  WARDEN_RETURN_IF_ERROR(f.OnlyKeys({"isolation", "quota"}));
  TenantPolicy p;
  WARDEN_ASSIGN_OR_RETURN(std::string iso, f.RequiredString("isolation"));
  auto parsed = ParseIsolation(iso);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(StrCat(
        "field \"isolation\": expected dedicated, exclusive, mig or shared, got \"", iso, "\""));
  }
  p.isolation = *parsed;
  auto q = doc.find("quota");
  if (q == doc.end()) return p;
  if (!q->is_object()) return absl::InvalidArgumentError("field \"quota\": expected an object");
  WARDEN_ASSIGN_OR_RETURN(common::JsonFields qf, common::JsonFields::Of(*q));
  WARDEN_RETURN_IF_ERROR(qf.OnlyKeys({"gpu_millis", "gpu_memory_mib", "mig_slices", "cpu_millis",
                                      "memory_mib", "running_jobs"}));
  for (const auto& [name, member] : kQuotaFields) {
    auto it = q->find(name);
    if (it == q->end()) continue;
    if (!it->is_number_integer()) {
      return absl::InvalidArgumentError(
          StrCat("field \"quota.", name, "\": expected an integer 0..", kMaxQuotaValue));
    }
    // Read signed or unsigned without wrap-around.
    bool in_range = false;
    int64_t v = 0;
    if (it->is_number_unsigned()) {
      const uint64_t u = it->get<uint64_t>();
      in_range = u <= static_cast<uint64_t>(kMaxQuotaValue);
      v = in_range ? static_cast<int64_t>(u) : 0;
    } else {
      v = it->get<int64_t>();
      in_range = v >= 0 && v <= kMaxQuotaValue;
    }
    if (!in_range) {
      return absl::InvalidArgumentError(
          StrCat("field \"quota.", name, "\": must be 0..", kMaxQuotaValue));
    }
    p.quota.*member = v;
  }
  return p;
}

std::string TenantPolicyToJson(const TenantPolicy& policy) {
  Json quota = Json::object();
  for (const auto& [name, member] : kQuotaFields) {
    if (policy.quota.*member != Resources::kUnlimited) quota[name] = policy.quota.*member;
  }
  return Json{{"isolation", std::string(IsolationName(policy.isolation))}, {"quota", quota}}.dump();
}

std::string Weakening(const TenantPolicy& current, const TenantPolicy& next) {
  if (next.isolation < current.isolation) {
    return StrCat("isolation ", IsolationName(next.isolation), " is weaker than ",
                  IsolationName(current.isolation));
  }
  for (const auto& [name, member] : kQuotaFields) {
    if (next.quota.*member > current.quota.*member) {
      auto text = [](int64_t v) {
        return v == Resources::kUnlimited ? std::string("unlimited") : std::to_string(v);
      };
      return StrCat("quota.", name, " ", text(next.quota.*member), " is larger than ",
                    text(current.quota.*member));
    }
  }
  return "";
}

}  // namespace warden::sched
