// Vault datasets mounted into jobs (issue 7 "Datasets"): the submit-time authorization and the
// agent-side read with its re-check. See job_datasets.h for the flow.
//
// Threats answered here:
// - a job naming another tenant's dataset (cross-tenant read through the job path): allowed only
//   through an accepted share plus `read` and `copy` at the owner, re-checked at every fetch
//   (job_dataset_shares.cc; issue 5: a mount into another tenant's job is a copy);
// - an authorization that outlives its grant (policy revoked, binding removed, user disabled or
//   token revoked between submit and start): every fetch re-decides for the same principal;
// - an agent reading data of a job that is not its own: the job must be placed on the node the
//   mTLS certificate proves (JobService::DatasetForNode), and the index must be in the job;
// - a name re-created after submit (another object under the same name): the pinned object id
//   and version must still match, else NotFound.
#include <algorithm>

#include "api/job_request.h"
#include "common/status.h"
#include "common/strings.h"
#include "server/api_service.h"
#include "server/job_datasets.h"
#include "server/job_service.h"
#include "server/vault_routes.h"
#include "vault/access_policy.h"
#include "vault/format.h"

namespace warden::server {
namespace {

using common::StrCat;

std::string Decision(const vault::AccessDecision& d) {
  if (d.policy.empty()) return d.reason;
  return StrCat(d.reason, " [policy ", d.policy, " statement ", d.statement, "]");
}

}  // namespace

absl::Status ApiService::AuthorizeJobDatasets(Call& c, api::JobRun& run) {
  for (size_t i = 0; i < run.datasets.size(); ++i) {
    WARDEN_RETURN_IF_ERROR(AuthorizeJobDataset(c, i, run.datasets[i]));
  }
  return absl::OkStatus();
}

// The one place that decides whether the submitter may mount a dataset into this job: its own
// tenant's object through RBAC + data policies, another tenant's through a share.
absl::Status ApiService::AuthorizeJobDataset(Call& c, size_t index, api::JobDataset& d) {
  const std::string where = StrCat("datasets[", index, "] \"", d.name, "\": ");
  const std::string owner = d.tenant.empty() ? c.tenant_name : d.tenant;
  if (owner != c.tenant_name) {
    // Another tenant's object: only through an accepted share plus read and copy at the owner
    // (job_dataset_shares.cc).
    return AuthorizeSharedJobDataset(c, where, d);
  }
  if (d.write) return AuthorizeJobWriteDataset(c, where, d);  // agent_dataset_writeback.cc
  if (options_.vault == nullptr) {
    return absl::UnavailableError("the vault is not running on this server");
  }
  WARDEN_RETURN_IF_ERROR(vault::ValidateObjectName(d.name));
  auto o = options_.vault->objects().Stat(c.tenant_id, d.name);
  if (!o.ok()) {
    if (o.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(StrCat(where, "no such dataset in tenant \"", c.tenant_name, "\""));
    }
    return o.status();
  }
  // AuthorizeData appends "read: <decision>" to the event's decision; name the dataset in it.
  const std::string before = c.data_decision;
  absl::Status s = AuthorizeData(c, vault::DataAction::kRead, d.name, o->object_id);
  std::string added = c.data_decision.substr(std::min(before.size(), c.data_decision.size()));
  if (!added.empty() && added.starts_with("; ")) added = added.substr(2);
  std::string text = StrCat("mount ", where, added);
  c.data_decision = before.empty() ? text : StrCat(before, "; ", text);
  if (!s.ok()) return absl::Status(s.code(), StrCat(where, s.message()));
  PinJobDataset(*o, *c.identity, d);
  return absl::OkStatus();
}

void PinJobDataset(const vault::ObjectInfo& o, const auth::Identity& submitter, api::JobDataset& d) {
  d.object_id = o.object_id;
  d.version = o.version;
  d.size = o.size;
  d.sha256 = o.sha256_hex;
  d.chunk_size = o.chunk_size;
  d.authorized_user = submitter.user_id;
  d.authorized_token = submitter.token_id;
}

absl::Status ApiService::ReadJobDatasetForAgent(const std::string& node_id,
                                                const std::string& job_id, uint64_t index,
                                                uint64_t first_chunk, uint64_t count,
                                                AgentDatasetRead& out) {
  if (options_.jobs == nullptr) return absl::UnavailableError("the job service is not running");
  if (options_.vault == nullptr) return absl::UnavailableError("the vault is not running on this server");
  if (count == 0 || count > kMaxDatasetChunksPerFetch) {
    return absl::InvalidArgumentError(
        StrCat("query \"count\" must be 1..", kMaxDatasetChunksPerFetch));
  }
  WARDEN_ASSIGN_OR_RETURN(JobService::NodeJobDataset nd,
                          options_.jobs->DatasetForNode(node_id, job_id, index));
  const api::JobDataset& d = nd.dataset;
  // The object's tenant: the job's own, or (a cross-tenant mount) the owner pinned at submit.
  const std::string job_tenant_name = TenantNameOf(nd.tenant_id);
  const bool shared = !d.tenant.empty() && d.tenant != job_tenant_name;
  const std::string owner_id = shared ? d.owner_tenant_id : nd.tenant_id;
  out.tenant_id = owner_id;
  out.tenant_name = shared ? d.tenant : job_tenant_name;
  out.name = d.name;
  out.version = d.version;
  if (shared && (d.owner_tenant_id.empty() || d.owner_tenant_id == nd.tenant_id)) {
    out.decision = StrCat("tenant \"", d.tenant, "\"'s dataset was not authorized through a share at submit");
    return absl::PermissionDeniedError(out.decision);
  }
  if (d.write || d.object_id.empty() || d.authorized_user.empty()) {
    out.decision = "the job's dataset was not authorized read-only at submit";
    return absl::PermissionDeniedError(out.decision);
  }

  // Re-decide for the principal that submitted the job, with today's state: the user must still
  // be enabled, the token (if one submitted) unrevoked and unexpired, and RBAC + the tenant's
  // data policies must still allow the read.
  WARDEN_ASSIGN_OR_RETURN(auth::Identity id, JobSubmitterIdentity(d, "read", out.decision));
  std::shared_ptr<const rbac::Policy> pol = policy();
  rbac::Grants grants = GrantsOf(*pol, id);
  rbac::TenantRef tref = pol->TenantIndex(nd.tenant_id);
  if (shared) {
    // Everything the submit decided, with today's state: data:read at the job's tenant, an
    // accepted share from the owner to it (a revoked share stops this range), read and copy at
    // the owner; then the owner's pinned object.
    SharedMountDecision dec;
    absl::Status s = SharedMountGate(grants, tref, owner_id, nd.tenant_id, d.name, dec);
    if (s.ok()) {
      auto o = options_.vault->objects().Stat(owner_id, d.name, d.version);
      if (!o.ok() || o->object_id != d.object_id) {
        return absl::NotFoundError(StrCat("dataset \"", d.name, "\" version ", d.version, " of tenant \"",
                                          d.tenant, "\" is no longer the object the job was authorized for"));
      }
      s = SharedMountPolicy(id, owner_id, nd.tenant_id, d.name, d.object_id, dec);
    }
    out.decision = StrCat("mount of tenant \"", d.tenant, "\"'s object into tenant \"", job_tenant_name,
                          "\"'s job: ", s.ok() ? dec.text : std::string(s.message()));
    if (!s.ok()) return absl::PermissionDeniedError(out.decision);
    return ReadPinnedChunks(owner_id, d, first_chunk, count, out);
  }
  WARDEN_RETURN_IF_ERROR(
      RecheckJobSubmitter(nd.tenant_id, d, vault::DataAction::kRead, d.object_id, out.decision));
  return ReadPinnedChunks(nd.tenant_id, d, first_chunk, count, out);
}

absl::StatusOr<auth::Identity> ApiService::JobSubmitterIdentity(const api::JobDataset& d,
                                                                std::string_view verb,
                                                                std::string& decision) {
  auto user = store_.GetUser(d.authorized_user);
  if (!user.ok() || user->disabled) {
    decision = StrCat(verb, ": the submitting user is disabled or no longer exists");
    return absl::PermissionDeniedError(decision);
  }
  auth::Identity id;
  id.user_id = d.authorized_user;
  if (!d.authorized_token.empty()) {
    auto tok = store_.GetToken(d.authorized_token);
    if (!tok.ok() || tok->revoked || (tok->expires_at != 0 && tok->expires_at <= clock_.NowUnix())) {
      decision = StrCat(verb, ": the API token that submitted the job is revoked or expired");
      return absl::PermissionDeniedError(decision);
    }
    id.kind = auth::Identity::Kind::kApiToken;
    id.token_id = d.authorized_token;
  }
  return id;
}

absl::Status ApiService::RecheckJobSubmitter(const std::string& tenant_id, const api::JobDataset& d,
                                             vault::DataAction action, const std::string& object_id,
                                             std::string& decision) {
  const std::string verb(vault::DataActionName(action));
  WARDEN_ASSIGN_OR_RETURN(auth::Identity id, JobSubmitterIdentity(d, verb, decision));
  std::shared_ptr<const rbac::Policy> pol = policy();
  WARDEN_ASSIGN_OR_RETURN(auto policies, options_.vault->Policies(tenant_id));
  vault::AccessRequest r;
  r.action = action;
  r.user_id = id.user_id;
  r.token_id = id.token_id;
  r.object_id = object_id;
  r.name = d.name;
  std::vector<std::string> role_ids;
  if (!policies->empty()) {  // `role:` principals, as in AuthorizeData (fail closed on errors)
    WARDEN_ASSIGN_OR_RETURN(auto bindings, store_.ListBindings());
    for (const auto& b : bindings) {
      const bool mine = !id.token_id.empty() ? (b.subject_kind == "token" && b.subject_id == id.token_id)
                                             : (b.subject_kind == "user" && b.subject_id == id.user_id);
      if (mine && (b.scope_tenant_id.empty() || b.scope_tenant_id == tenant_id)) role_ids.push_back(b.role_id);
    }
    for (const auto& rid : role_ids) r.roles.push_back(rid);
  }
  vault::AccessDecision dec =
      vault::AuthorizeDataAccess(GrantsOf(*pol, id), pol->TenantIndex(tenant_id), *policies, r, std::nullopt);
  decision = StrCat(verb, ": ", Decision(dec));
  if (!dec.allowed) return absl::PermissionDeniedError(decision);
  return absl::OkStatus();
}

absl::Status ApiService::ReadPinnedChunks(const std::string& owner_tenant_id,
                                          const api::JobDataset& d, uint64_t first_chunk,
                                          uint64_t count, AgentDatasetRead& out) {
  // The version pinned at submit, and still the same object (not a name deleted and re-created).
  WARDEN_ASSIGN_OR_RETURN(vault::ObjectInfo o,
                          options_.vault->objects().Stat(owner_tenant_id, d.name, d.version));
  if (o.object_id != d.object_id) {
    return absl::NotFoundError(StrCat("dataset \"", d.name, "\" version ", d.version,
                                      " is no longer the object the job was authorized for"));
  }
  if (o.size == 0 && first_chunk == 0) return absl::OkStatus();
  WARDEN_RETURN_IF_ERROR(options_.vault->objects()
                             .ReadChunks(owner_tenant_id, d.name, d.version, first_chunk, count,
                                         [&](std::string_view chunk) {
                                           out.data.append(chunk);
                                           return absl::OkStatus();
                                         })
                             .status());
  return absl::OkStatus();
}

}  // namespace warden::server
