// Handlers of /api/v1/tenants/{tenant}/policy (issue 6): a tenant's isolation policy and quota.
// ApiService::Handle authorized the caller at the URL's tenant (tenants:read to read; jobs:manage
// to write, which tenant-admin holds through jobs:*). A write that weakens the isolation or
// raises any quota field additionally needs tenants:update at cluster scope (a platform
// engineer); a tenant admin may only make its own policy stricter.
#include "common/status.h"
#include "common/strings.h"
#include "rbac/rbac.h"
#include "server/api_service.h"
#include "server/job_service.h"

namespace warden::server {
namespace {

using common::Json;
using common::StrCat;

Json PolicyJson(const Call& c, const sched::TenantPolicy& p, const sched::Resources& usage) {
  Json out = Json::parse(sched::TenantPolicyToJson(p));
  out["tenant"] = c.tenant_name;
  out["usage"] = Json{{"gpu_millis", usage.gpu_millis},     {"gpu_memory_mib", usage.gpu_memory_mib},
                      {"mig_slices", usage.mig_slices},     {"cpu_millis", usage.cpu_millis},
                      {"memory_mib", usage.memory_mib},     {"running_jobs", usage.running_jobs}};
  return out;
}

}  // namespace

absl::StatusOr<Json> ApiService::GetTenantPolicy(Call& c) {
  if (options_.jobs == nullptr) return absl::UnavailableError("the job service is not running");
  WARDEN_ASSIGN_OR_RETURN(sched::TenantPolicy p, options_.jobs->GetTenantPolicy(c.tenant_name));
  WARDEN_ASSIGN_OR_RETURN(sched::Resources usage, options_.jobs->TenantUsage(c.tenant_name));
  return PolicyJson(c, p, usage);
}

absl::StatusOr<Json> ApiService::PutTenantPolicy(Call& c) {
  if (options_.jobs == nullptr) return absl::UnavailableError("the job service is not running");
  WARDEN_ASSIGN_OR_RETURN(sched::TenantPolicy p, sched::ParseTenantPolicy(c.req.body));
  static const rbac::Permission kClusterUpdate = rbac::ParsePermission("tenants:update").value();
  const bool cluster_admin = c.grants.Allows(kClusterUpdate, rbac::TenantRef::Cluster());
  WARDEN_ASSIGN_OR_RETURN(sched::TenantPolicy set,
                          options_.jobs->SetTenantPolicy(c.tenant_id, c.tenant_name, p,
                                                         c.identity->user_id, !cluster_admin));
  WARDEN_ASSIGN_OR_RETURN(sched::Resources usage, options_.jobs->TenantUsage(c.tenant_name));
  return PolicyJson(c, set, usage);
}

}  // namespace warden::server
