// PATCH /api/v1/nodes/{node} (issue 6): a live change of a node's pool. Authorized in
// ApiService::Handle (nodes:manage at cluster scope; audited as nodes:update with the outcome).
// The job service picks the new pool up in its next round (the route kicks it): jobs the new
// pool does not admit (another tenant's dedicated pool, a job that named the old pool) are
// requeued and their agents told to stop them (Scheduler::UpdateNodeMeta).
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
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(c.req.body.empty() ? "{}" : c.req.body));
  if (!j.is_object()) return absl::InvalidArgumentError("request body must be a JSON object");
  WARDEN_ASSIGN_OR_RETURN(auto f, common::JsonFields::Of(j));
  WARDEN_RETURN_IF_ERROR(f.OnlyKeys({"pool"}));
  WARDEN_ASSIGN_OR_RETURN(auto pool, f.OptionalString("pool"));
  if (!pool) return absl::InvalidArgumentError("field \"pool\": required (the node's new pool)");
  WARDEN_ASSIGN_OR_RETURN(store::Node n, options_.cluster->SetPool(c.req.params["node"], *pool));
  if (options_.jobs != nullptr) options_.jobs->Kick();  // the scheduler takes it this round
  return cluster::Cluster::NodeJson(n, false);
}

}  // namespace warden::server
