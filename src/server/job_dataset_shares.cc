// Cross-tenant dataset mounts (issue 5): tenant B's job mounts tenant A's object through a share.
//
// A job submitted to tenant B may name `"tenant": "A"` in a `datasets[]` entry (CLI:
// `--dataset A:NAME:PATH`). Mounting A's data into B's job is a copy out of A, so it is allowed
// only when ALL of these hold, at submit and again at every agent fetch (a revoked share, a
// withdrawn copy grant or a removed binding stops the next range):
//   1. the submitter holds data:read at B (RBAC at the job's tenant: a share never lets a caller
//      do more at B than B's admins granted);
//   2. an ACCEPTED, unrevoked share from A to B covers NAME (server::ShareAllows; the owner's
//      admin offered it with a copy grant and step-up, B's admin accepted it);
//   3. A's data policies explicitly allow the submitter both `read` and `copy` of the object (a
//      user with read but not copy cannot move A's data into another tenant's job); principals
//      are the user, the API token and the roles bound at cluster scope or at A. IdP groups are
//      not used here because the agent's re-check has no IdP token to take them from;
//   4. at submit only, a recent MFA step-up (as every copy needs).
// Checks 1-2 run before the object is looked up: a name no share covers is refused whether or not
// it exists in A (no existence oracle). The object version and A's tenant id are pinned at submit
// (a tenant or object re-created under the same name is not the one authorized), and the share id
// goes into the submit's audit event; the agent's datasets:mount-read events name both tenants
// and the share that allowed each range.
#include "api/job_request.h"
#include "common/status.h"
#include "common/strings.h"
#include "server/api_service.h"
#include "server/job_datasets.h"
#include "server/vault_routes.h"
#include "server/vault_shares.h"
#include "vault/access_policy.h"
#include "vault/format.h"
#include "vault/share.h"

namespace warden::server {
namespace {

using common::StrCat;

const rbac::Permission kMountNeedsDataRead(rbac::Resource::kData, rbac::Verb::kRead);

}  // namespace

absl::Status ApiService::SharedMountGate(const rbac::Grants& grants, rbac::TenantRef job_tenant_ref,
                                         const std::string& owner_tenant_id,
                                         const std::string& job_tenant_id, const std::string& name,
                                         SharedMountDecision& out) {
  const std::string owner = TenantNameOf(owner_tenant_id);
  const std::string reader = TenantNameOf(job_tenant_id);
  if (!grants.Allows(kMountNeedsDataRead, job_tenant_ref)) {
    out.text = StrCat("rbac: data:read not granted at tenant \"", reader,
                      "\" (the job's tenant), so nothing may be mounted into its jobs");
    return absl::PermissionDeniedError(out.text);
  }
  WARDEN_ASSIGN_OR_RETURN(auto share, ShareAllows(store_, owner_tenant_id, name, job_tenant_id));
  if (!share) {
    out.text = StrCat("no accepted share of \"", name, "\" from tenant \"", owner,
                      "\" to tenant \"", reader, "\"");
    return absl::PermissionDeniedError(out.text);
  }
  out.share_id = share->id;
  out.text = StrCat("share ", share->id, " from tenant \"", owner, "\" to tenant \"", reader,
                    "\" (accepted by ", share->decided_by, ")");
  return absl::OkStatus();
}

absl::Status ApiService::SharedMountPolicy(const auth::Identity& id,
                                           const std::string& owner_tenant_id,
                                           const std::string& job_tenant_id,
                                           const std::string& name, const std::string& object_id,
                                           SharedMountDecision& out) {
  if (options_.vault == nullptr)
    return absl::UnavailableError("the vault is not running on this server");
  WARDEN_ASSIGN_OR_RETURN(auto policies, options_.vault->Policies(owner_tenant_id));
  // Roles bound at cluster scope or at the owner tenant only: a role the caller holds at B is
  // B's admins' grant, and must not match A's `role:` statements.
  std::vector<std::string> role_ids;
  WARDEN_ASSIGN_OR_RETURN(role_ids, CallerRoleIds(store_, id, owner_tenant_id));
  vault::AccessRequest r;
  r.user_id = id.user_id;
  r.token_id = id.token_id;
  r.object_id = object_id;
  r.name = name;
  for (const auto& role : role_ids) r.roles.push_back(role);
  // Both read and copy must be explicitly allowed (a deny of either wins): the mount reads the
  // data and moves it out of the owner tenant.
  for (vault::DataAction action :
       {vault::DataAction::kRead, vault::ActionForMount(owner_tenant_id, job_tenant_id)}) {
    r.action = action;
    vault::AccessDecision d = policies->Evaluate(r);
    const std::string& what = d.reason;  // names the policy and statement that decided
    out.text = StrCat(out.text, "; ", vault::DataActionName(action), " at tenant \"",
                      TenantNameOf(owner_tenant_id), "\": ", what);
    if (!d.allowed) {
      return absl::PermissionDeniedError(
          StrCat(vault::DataActionName(action), " of \"", name, "\" at tenant \"",
                 TenantNameOf(owner_tenant_id), "\" not allowed to the submitter: ", what,
                 action == vault::DataAction::kCopy
                     ? " (mounting into another tenant's job is a copy out of the owner tenant)"
                     : ""));
    }
  }
  return absl::OkStatus();
}

absl::Status ApiService::AuthorizeSharedJobDataset(Call& c, const std::string& where,
                                                   api::JobDataset& d) {
  SharedMountDecision dec;
  auto record = [&](const absl::Status& s) {
    std::string text =
        StrCat("mount ", where, "of tenant \"", d.tenant, "\" ",
               s.ok() ? "allow: " : "deny: ", s.ok() ? dec.text : std::string(s.message()));
    if (!s.ok() && !dec.text.empty() && std::string(s.message()) != dec.text) {
      text = StrCat(text, " [", dec.text, "]");
    }
    c.data_decision = c.data_decision.empty() ? text : StrCat(c.data_decision, "; ", text);
    if (s.ok()) return s;
    return absl::Status(s.code(), StrCat(where, s.message()));
  };
  if (d.write) {
    // A share only ever lets tenant B read: writing into A's dataset is not B's to do.
    return absl::PermissionDeniedError(StrCat(
        where, "a job cannot write into another tenant's dataset (shares are read-only)"));
  }
  if (options_.vault == nullptr)
    return absl::UnavailableError("the vault is not running on this server");
  WARDEN_RETURN_IF_ERROR(vault::ValidateObjectName(d.name));
  // An unknown owner tenant answers like a missing share (no tenant-existence oracle either).
  auto owner = store_.GetTenantByName(d.tenant);
  if (!owner.ok()) {
    if (owner.status().code() != absl::StatusCode::kNotFound) return owner.status();
    return record(
        absl::PermissionDeniedError(StrCat("no accepted share of \"", d.name, "\" from tenant \"",
                                           d.tenant, "\" to tenant \"", c.tenant_name, "\"")));
  }
  if (absl::Status s = SharedMountGate(c.grants, c.tenant_ref, owner->id, c.tenant_id, d.name, dec);
      !s.ok()) {
    return record(s);
  }
  // A copy out of the owner tenant: the same step-up as every export.
  if (absl::Status s = CheckStepUp(c); !s.ok()) {
    (void)record(absl::PermissionDeniedError(StrCat("copy: ", s.message())));
    return s;
  }
  auto o = options_.vault->objects().Stat(owner->id, d.name);
  if (!o.ok()) {
    if (o.status().code() == absl::StatusCode::kNotFound) {
      return record(absl::NotFoundError(
          StrCat("no such dataset in tenant \"", d.tenant, "\" (the share covers the name)")));
    }
    return o.status();
  }
  if (absl::Status s =
          SharedMountPolicy(*c.identity, owner->id, c.tenant_id, d.name, o->object_id, dec);
      !s.ok()) {
    return record(s);
  }
  PinJobDataset(*o, *c.identity, d);
  d.owner_tenant_id = owner->id;
  d.share_id = dec.share_id;
  return record(absl::OkStatus());
}

}  // namespace warden::server
