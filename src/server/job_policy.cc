// JobService, tenant policy half (issue 6): each tenant's isolation policy and quota, stored in
// the tenant_policies table (migration 7), loaded into the scheduler at Start and pushed into it
// on every change; pools dedicated to tenants (pool_dedications, migration 8), the same way;
// live node label/taint/pool changes; per-tenant usage and quota gauges.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>

#include "common/ids.h"
#include "common/metrics.h"
#include "common/status.h"
#include "common/strings.h"
#include "server/job_service.h"

namespace warden::server {
namespace {

using common::Json;
using common::StrCat;

// (resource label, Resources member) for the gauges, in the quota's own units.
constexpr std::pair<const char*, int64_t sched::Resources::*> kGaugeFields[] = {
    {"gpu_millis", &sched::Resources::gpu_millis},
    {"gpu_memory_mib", &sched::Resources::gpu_memory_mib},
    {"mig_slices", &sched::Resources::mig_slices},
    {"cpu_millis", &sched::Resources::cpu_millis},
    {"memory_mib", &sched::Resources::memory_mib},
    {"running_jobs", &sched::Resources::running_jobs},
};

common::metrics::GaugeFamily& UsageGauge() {
  static auto& g = common::metrics::Registry::Default().AddGauge(
      "warden_tenant_usage", "What a tenant's placed and running jobs hold, by resource",
      {"tenant", "resource"});
  return g;
}

common::metrics::GaugeFamily& QuotaGauge() {
  static auto& g = common::metrics::Registry::Default().AddGauge(
      "warden_tenant_quota", "A tenant's quota by resource (+Inf: unlimited)",
      {"tenant", "resource"});
  return g;
}

}  // namespace

void JobService::NodeMetaOf(const store::Node& n,
                            std::vector<std::pair<std::string, std::string>>& labels,
                            std::vector<sched::Taint>& taints,
                            std::vector<sched::Taint>& no_execute) {
  labels.clear();
  taints.clear();
  no_execute.clear();
  auto l = common::ParseJsonStrict(n.labels_json);
  if (l.ok() && l->is_object()) {
    for (const auto& [k, v] : l->items()) {
      if (v.is_string()) labels.emplace_back(k, v.get<std::string>());
    }
    std::sort(labels.begin(), labels.end());
  }
  auto t = common::ParseJsonStrict(n.taints_json);
  if (t.ok() && t->is_array()) {
    for (const Json& e : *t) {
      if (!e.is_object()) continue;
      const std::string effect = e.value("effect", "");
      // PreferNoSchedule is a preference, not a rule: only hard taints keep jobs off.
      if (effect == "PreferNoSchedule") continue;
      sched::Taint taint{e.value("key", ""), e.value("value", "")};
      if (effect == "NoExecute") no_execute.push_back(taint);
      taints.push_back(std::move(taint));
    }
  }
}

absl::Status JobService::SyncNodeMetaLocked(const store::Node& n, NodeSeen& seen) {
  std::string meta = StrCat(n.pool, "\n", n.labels_json, "\n", n.taints_json);
  if (meta == seen.meta) return absl::OkStatus();
  std::vector<std::pair<std::string, std::string>> labels;
  std::vector<sched::Taint> taints, no_execute;
  NodeMetaOf(n, labels, taints, no_execute);
  if (!sched_->FindPool(n.pool)) {
    WARDEN_RETURN_IF_ERROR(sched_->AddPool({n.pool, {}}).status());
  }
  WARDEN_RETURN_IF_ERROR(
      sched_->UpdateNodeMeta(seen.sid, n.pool, std::move(labels), std::move(taints), no_execute));
  seen.meta = std::move(meta);
  CheckLocked("a node label/taint/pool change");
  return absl::OkStatus();
}

absl::Status JobService::LoadTenantPoliciesLocked() {
  WARDEN_ASSIGN_OR_RETURN(auto rows, store_.ListTenantPolicies());
  for (const store::TenantPolicy& row : rows) {
    auto tenant = store_.GetTenant(row.tenant_id);
    if (!tenant.ok()) continue;  // the tenant was deleted; its policy row is ignored
    auto p = sched::ParseTenantPolicy(row.policy_json);
    if (!p.ok()) {
      // Fail closed: running a tenant on defaults weaker than what an admin set is worse than
      // not starting.
      return absl::DataLossError(StrCat("the stored policy of tenant ", tenant->name,
                                        " cannot be read: ", std::string(p.status().message())));
    }
    sched::TenantSpec spec;
    spec.name = tenant->name;
    spec.policy = p->isolation;
    spec.quota = p->quota;
    WARDEN_RETURN_IF_ERROR(sched_->AddTenant(spec).status());
  }
  return absl::OkStatus();
}

absl::StatusOr<sched::TenantPolicy> JobService::GetTenantPolicy(const std::string& tenant_name) {
  std::lock_guard lock(mu_);
  if (!sched_) return absl::UnavailableError("the job service is not running");
  WARDEN_ASSIGN_OR_RETURN(sched::TenantId t, TenantLocked(tenant_name));
  const sched::TenantState& ts = *sched_->state().tenant(t);
  return sched::TenantPolicy{ts.spec.policy, ts.spec.quota};
}

absl::StatusOr<sched::Resources> JobService::TenantUsage(const std::string& tenant_name) {
  std::lock_guard lock(mu_);
  if (!sched_) return absl::UnavailableError("the job service is not running");
  WARDEN_ASSIGN_OR_RETURN(sched::TenantId t, TenantLocked(tenant_name));
  return sched_->state().tenant(t)->usage;
}

absl::StatusOr<sched::TenantPolicy> JobService::SetTenantPolicy(const std::string& tenant_id,
                                                                const std::string& tenant_name,
                                                                const sched::TenantPolicy& policy,
                                                                const std::string& user_id,
                                                                bool only_stricter) {
  {
    std::lock_guard lock(mu_);
    if (!sched_) return absl::UnavailableError("the job service is not running");
    WARDEN_ASSIGN_OR_RETURN(sched::TenantId t, TenantLocked(tenant_name));
    const sched::TenantState& ts = *sched_->state().tenant(t);
    const sched::TenantPolicy current{ts.spec.policy, ts.spec.quota};
    if (only_stricter) {
      if (std::string w = sched::Weakening(current, policy); !w.empty()) {
        return absl::PermissionDeniedError(
            StrCat("a tenant admin may only make its own tenant's policy stricter: ", w,
                   "; a cluster admin (tenants:update) can make this change"));
      }
    }
    store::TenantPolicy row{tenant_id, sched::TenantPolicyToJson(policy), clock_.NowUnix(),
                            user_id};
    WARDEN_RETURN_IF_ERROR(store_.PutTenantPolicy(row));
    // Stricter isolation: the tenant's placed/running jobs it forbids are requeued now.
    WARDEN_RETURN_IF_ERROR(sched_->SetTenantPolicy(t, policy.isolation));
    // Lower quota: running jobs stay; new placements wait until the usage fits.
    WARDEN_RETURN_IF_ERROR(sched_->SetTenantQuota(t, policy.quota));
    CheckLocked("a tenant policy change");
    WARDEN_RETURN_IF_ERROR(PersistLocked());
    UpdateTenantGaugesLocked();
    kicked_ = true;
  }
  cv_.notify_all();
  return policy;
}

absl::Status JobService::LoadPoolDedicationsLocked() {
  WARDEN_ASSIGN_OR_RETURN(auto rows, store_.ListPoolDedications());
  for (const store::PoolDedication& row : rows) {
    auto ids = common::ParseJsonStrict(row.tenant_ids_json);
    if (!ids.ok() || !ids->is_array()) {
      // Fail closed, as for tenant policies: a pool that was kept apart must not open up.
      return absl::DataLossError(StrCat("the stored dedication of pool ", row.pool,
                                        " cannot be read: ", row.tenant_ids_json));
    }
    std::vector<sched::TenantId> tenants;
    for (const Json& id : *ids) {
      if (!id.is_string()) {
        return absl::DataLossError(StrCat("the stored dedication of pool ", row.pool,
                                          " holds a non-string tenant id"));
      }
      auto tenant = store_.GetTenant(id.get<std::string>());
      if (!tenant.ok()) continue;  // deleted since
      WARDEN_ASSIGN_OR_RETURN(sched::TenantId t, TenantLocked(tenant->name));
      tenants.push_back(t);
    }
    // Dedicated to tenants that were all deleted since: it stays apart (no one's jobs run there)
    // until a cluster admin dedicates it again or makes it general.
    const bool reserved = tenants.empty() && !ids->empty();
    std::optional<sched::PoolId> pool = sched_->FindPool(row.pool);
    if (!pool) {
      WARDEN_ASSIGN_OR_RETURN(pool, sched_->AddPool({row.pool, {}}));
    }
    WARDEN_RETURN_IF_ERROR(sched_->SetPoolDedication(*pool, tenants, reserved));
  }
  return absl::OkStatus();
}

absl::StatusOr<JobService::PoolView> JobService::PoolViewLocked(sched::PoolId pool) {
  const sched::ClusterState& st = sched_->state();
  if (pool >= st.pools.size()) return absl::NotFoundError(StrCat("no pool with id ", pool));
  const sched::PoolSpec& spec = st.pools[pool].spec;
  PoolView v;
  v.name = spec.name;
  v.reserved = spec.reserved;
  for (sched::TenantId t : spec.dedicated_to) {
    if (const sched::TenantState* ts = st.tenant(t)) v.dedicated_to.push_back(ts->spec.name);
  }
  std::sort(v.dedicated_to.begin(), v.dedicated_to.end());
  for (const sched::NodeState& n : st.nodes) {
    if (!n.removed && n.pool == pool) ++v.nodes;
  }
  return v;
}

absl::StatusOr<std::vector<JobService::PoolView>> JobService::ListPools() {
  std::lock_guard lock(mu_);
  if (!sched_) return absl::UnavailableError("the job service is not running");
  WARDEN_ASSIGN_OR_RETURN(auto rows, store_.ListPoolDedications());
  std::vector<PoolView> out;
  for (sched::PoolId p = 0; p < sched_->state().pools.size(); ++p) {
    WARDEN_ASSIGN_OR_RETURN(PoolView v, PoolViewLocked(p));
    for (const store::PoolDedication& row : rows) {
      if (row.pool != v.name) continue;
      v.updated_at = row.updated_at;
      v.updated_by = row.updated_by;
    }
    out.push_back(std::move(v));
  }
  std::sort(out.begin(), out.end(),
            [](const PoolView& a, const PoolView& b) { return a.name < b.name; });
  return out;
}

absl::StatusOr<JobService::PoolView> JobService::SetPoolDedication(
    const std::string& pool_name, const std::vector<std::string>& tenant_names,
    const std::string& user_id) {
  WARDEN_RETURN_IF_ERROR(common::ValidateName("pool name", pool_name));
  // Resolve every tenant before changing anything: an unknown name refuses the whole change.
  std::vector<std::pair<std::string, std::string>> named;  // (name, id), sorted, unique
  for (const std::string& name : tenant_names) {
    auto tenant = store_.GetTenantByName(name);
    if (!tenant.ok()) {
      if (absl::IsNotFound(tenant.status())) {
        return absl::NotFoundError(StrCat("no tenant named \"", name, "\""));
      }
      return tenant.status();
    }
    named.emplace_back(tenant->name, tenant->id);
  }
  std::sort(named.begin(), named.end());
  named.erase(std::unique(named.begin(), named.end()), named.end());
  PoolView view;
  {
    std::lock_guard lock(mu_);
    if (!sched_) return absl::UnavailableError("the job service is not running");
    std::vector<sched::TenantId> tenants;
    Json ids = Json::array();
    for (const auto& [name, id] : named) {
      WARDEN_ASSIGN_OR_RETURN(sched::TenantId t, TenantLocked(name));
      tenants.push_back(t);
      ids.push_back(id);
    }
    store::PoolDedication row{pool_name, ids.dump(), clock_.NowUnix(), user_id};
    WARDEN_RETURN_IF_ERROR(store_.PutPoolDedication(row));
    std::optional<sched::PoolId> pool = sched_->FindPool(pool_name);
    if (!pool) {
      WARDEN_ASSIGN_OR_RETURN(pool, sched_->AddPool({pool_name, {}}));
    }
    WARDEN_RETURN_IF_ERROR(sched_->SetPoolDedication(*pool, tenants));
    CheckLocked("a pool dedication change");
    WARDEN_RETURN_IF_ERROR(PersistLocked());
    // Jobs of other tenants that named this pool can never run there now; submitting one is
    // refused, so those already in the system end (their agents stop them) rather than wait
    // forever or fail obscurely at the next restart.
    // (A general pool closes to no one.)
    const sched::PoolSpec& spec = sched_->state().pools[*pool].spec;
    std::vector<std::string> closed;
    for (const auto& [id, t] : active_) {
      const sched::JobRecord* r = sched_->FindJob(t.sid);
      if (r == nullptr || !r->pool || *r->pool != *pool || !spec.dedicated()) continue;
      const auto& ded = spec.dedicated_to;
      if (std::find(ded.begin(), ded.end(), r->tenant) == ded.end()) closed.push_back(id);
    }
    for (const std::string& id : closed) {
      WARDEN_RETURN_IF_ERROR(EndLocked(
          id, "failed",
          StrCat("pool ", pool_name, " was dedicated to other tenants; the job named that pool"),
          std::nullopt));
    }
    WARDEN_ASSIGN_OR_RETURN(view, PoolViewLocked(*pool));
    view.updated_at = row.updated_at;
    view.updated_by = row.updated_by;
    kicked_ = true;
  }
  cv_.notify_all();
  return view;
}

void JobService::UpdateTenantGaugesLocked() {
  for (const sched::TenantState& ts : sched_->state().tenants) {
    for (const auto& [resource, member] : kGaugeFields) {
      UsageGauge()
          .WithLabels({ts.spec.name, resource})
          .Set(static_cast<double>(ts.usage.*member));
      const int64_t q = ts.spec.quota.*member;
      QuotaGauge()
          .WithLabels({ts.spec.name, resource})
          .Set(q == sched::Resources::kUnlimited ? std::numeric_limits<double>::infinity()
                                                 : static_cast<double>(q));
    }
  }
}

}  // namespace warden::server
