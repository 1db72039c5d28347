// Node pools (issue 6). GET /api/v1/pools lists them with their dedication; PUT
// /api/v1/pools/{pool} {"dedicated_to":["tenant",...]} dedicates a pool to tenants ([] makes it
// general again). Both are cluster-scope routes (nodes:read, nodes:manage), so a tenant admin can
// neither see the cluster's pools nor dedicate one; the change applies at once (JobService).
//
// PATCH /api/v1/nodes/{node} (issue 6): a live change of a node's pool. Authorized in
// ApiService::Handle (nodes:manage at cluster scope; audited as nodes:update with the outcome).
// The job service picks the new pool up in its next round (the route kicks it): jobs the new
// pool does not admit (another tenant's dedicated pool, a job that named the old pool) are
// requeued and their agents told to stop them (Scheduler::UpdateNodeMeta).
#include "api/api.h"
#include "common/status.h"
#include "common/strings.h"
#include "server/api_service.h"
#include "server/job_service.h"

namespace warden::server {

using common::Json;

absl::StatusOr<Json> ApiService::PatchNode(Call& c) {
  if (options_.cluster == nullptr) {
    return absl::UnavailableError("the cluster service is not running");
  }
  WARDEN_ASSIGN_OR_RETURN(std::string pool, api::DecodeNodePool(c.req.body));
  WARDEN_ASSIGN_OR_RETURN(store::Node n, options_.cluster->SetPool(c.req.params["node"], pool));
  if (options_.jobs != nullptr) options_.jobs->Kick();  // the scheduler takes it this round
  return cluster::Cluster::NodeJson(n, false);
}

namespace {

Json PoolJson(const JobService::PoolView& p) {
  Json out{{"name", p.name},
           {"dedicated_to", p.dedicated_to},
           {"general", p.dedicated_to.empty() && !p.reserved},
           {"nodes", p.nodes}};
  if (p.reserved) out["reserved"] = true;  // dedicated, though its tenants were deleted
  if (p.updated_at != 0) {
    out["updated_at"] = p.updated_at;
    out["updated_by"] = p.updated_by;
  }
  return out;
}

}  // namespace

absl::StatusOr<Json> ApiService::ListPools(Call&) {
  if (options_.jobs == nullptr) return absl::UnavailableError("the job service is not running");
  WARDEN_ASSIGN_OR_RETURN(auto pools, options_.jobs->ListPools());
  Json out = Json::array();
  for (const auto& p : pools) out.push_back(PoolJson(p));
  return Json{{"pools", std::move(out)}};
}

absl::StatusOr<Json> ApiService::PutPool(Call& c) {
  if (options_.jobs == nullptr) return absl::UnavailableError("the job service is not running");
  WARDEN_ASSIGN_OR_RETURN(api::PoolDedicationRequest r, api::DecodePoolDedication(c.req.body));
  WARDEN_ASSIGN_OR_RETURN(auto view, options_.jobs->SetPoolDedication(
                                         c.req.params["pool"], r.dedicated_to, c.identity->user_id));
  return PoolJson(view);
}

}  // namespace warden::server
