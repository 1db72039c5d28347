#include "vault/share.h"

#include "common/ids.h"
#include "common/status.h"
#include "common/strings.h"
#include "vault/format.h"

namespace warden::vault {

using common::StrCat;

namespace {
const rbac::Permission kManage(rbac::Resource::kDatasets, rbac::Verb::kManage);
}  // namespace

std::string_view ShareStateName(ShareState s) {
  switch (s) {
    case ShareState::kOffered:
      return "offered";
    case ShareState::kAccepted:
      return "accepted";
    case ShareState::kDeclined:
      return "declined";
    case ShareState::kRevoked:
      return "revoked";
  }
  return "?";
}

std::optional<ShareState> ParseShareState(std::string_view s) {
  for (ShareState st : {ShareState::kOffered, ShareState::kAccepted, ShareState::kDeclined,
                        ShareState::kRevoked}) {
    if (ShareStateName(st) == s) return st;
  }
  return std::nullopt;
}

bool ShareCovers(const Share& s, std::string_view name) {
  if (!s.prefix) return s.name == name;
  return name.size() > s.name.size() ? name.compare(0, s.name.size(), s.name) == 0
                                     : name == s.name;
}

DataAction ActionForMount(std::string_view object_tenant, std::string_view job_tenant) {
  return object_tenant == job_tenant ? DataAction::kRead : DataAction::kCopy;
}

ShareBook::ShareBook(ShareRecords& records, common::Clock& clock, common::Rng& rng)
    : records_(records), clock_(clock), rng_(rng) {}

absl::StatusOr<Share> ShareBook::Offer(const rbac::Grants& grants, rbac::TenantRef owner_ref,
                                       const DataPolicySet& owner_policies,
                                       const AccessRequest& copy_request,
                                       std::optional<absl::Duration> mfa_age,
                                       std::string_view owner_tenant,
                                       std::string_view target_tenant, bool prefix) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", owner_tenant));
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", target_tenant));
  std::string_view base = copy_request.name;
  // A prefix follows the policy documents' rule: a name, optionally ending in '/'.
  if (prefix && !base.empty() && base.back() == '/') base.remove_suffix(1);
  WARDEN_RETURN_IF_ERROR(ValidateObjectName(base));
  if (owner_tenant == target_tenant) {
    return absl::InvalidArgumentError("a share goes to another tenant");
  }
  if (copy_request.action != DataAction::kCopy) {
    return absl::InvalidArgumentError("a share is a copy: the request's action must be copy");
  }
  // Sharing is the owner tenant admin's decision, on top of the right to copy the object out.
  if (!grants.Allows(kManage, owner_ref)) {
    return absl::PermissionDeniedError(
        StrCat("sharing needs datasets:manage at tenant ", owner_tenant, " (a tenant admin)"));
  }
  // For a prefix the copy decision is asked for the prefix itself: a `prefix:` or `*` statement
  // covering it admits; a `name:` statement for one object never admits a whole prefix.
  AccessDecision d = AuthorizeDataAccess(grants, owner_ref, owner_policies, copy_request, mfa_age);
  if (!d.allowed) return absl::PermissionDeniedError(StrCat("sharing is a copy: ", d.reason));
  Share s;
  s.id = common::NewId(rng_, "shr");
  s.owner_tenant = std::string(owner_tenant);
  s.name = std::string(copy_request.name);
  s.prefix = prefix;
  s.target_tenant = std::string(target_tenant);
  s.offered_by = std::string(copy_request.user_id);
  s.offered_unix = clock_.NowUnix();
  WARDEN_RETURN_IF_ERROR(records_.Insert(s));
  return s;
}

absl::StatusOr<Share> ShareBook::Accept(const rbac::Grants& grants, rbac::TenantRef target_ref,
                                        std::string_view user_id, std::string_view share_id,
                                        std::string_view target_tenant) {
  if (!grants.Allows(kManage, target_ref)) {
    return absl::PermissionDeniedError(StrCat("accepting a share needs datasets:manage at tenant ",
                                              target_tenant, " (a tenant admin)"));
  }
  WARDEN_ASSIGN_OR_RETURN(Share s, records_.Get(share_id));
  // Not found rather than forbidden: a share offered elsewhere is not this tenant's business.
  if (s.target_tenant != target_tenant) {
    return absl::NotFoundError(StrCat("share ", share_id, " not found"));
  }
  if (s.state == ShareState::kAccepted) return s;
  return records_.Transition(share_id, {ShareState::kOffered}, ShareState::kAccepted, user_id,
                             clock_.NowUnix());
}

absl::StatusOr<Share> ShareBook::Decline(const rbac::Grants& grants, rbac::TenantRef target_ref,
                                         std::string_view user_id, std::string_view share_id,
                                         std::string_view target_tenant) {
  if (!grants.Allows(kManage, target_ref)) {
    return absl::PermissionDeniedError(StrCat("declining a share needs datasets:manage at tenant ",
                                              target_tenant, " (a tenant admin)"));
  }
  WARDEN_ASSIGN_OR_RETURN(Share s, records_.Get(share_id));
  if (s.target_tenant != target_tenant) {
    return absl::NotFoundError(StrCat("share ", share_id, " not found"));
  }
  return records_.Transition(share_id, {ShareState::kOffered, ShareState::kAccepted},
                             ShareState::kDeclined, user_id, clock_.NowUnix());
}

absl::StatusOr<Share> ShareBook::Revoke(const rbac::Grants& grants, rbac::TenantRef owner_ref,
                                        std::string_view user_id, std::string_view owner_tenant,
                                        std::string_view share_id) {
  if (!grants.Allows(kManage, owner_ref)) {
    return absl::PermissionDeniedError(
        StrCat("revoking a share needs datasets:manage at tenant ", owner_tenant));
  }
  WARDEN_ASSIGN_OR_RETURN(Share s, records_.Get(share_id));
  if (s.owner_tenant != owner_tenant) {
    return absl::NotFoundError(StrCat("share ", share_id, " not found"));
  }
  return records_.Transition(share_id, {ShareState::kOffered, ShareState::kAccepted},
                             ShareState::kRevoked, user_id, clock_.NowUnix());
}

absl::StatusOr<std::optional<Share>> ShareBook::Find(std::string_view owner_tenant,
                                                     std::string_view name,
                                                     std::string_view target_tenant) {
  WARDEN_ASSIGN_OR_RETURN(std::vector<Share> shares, records_.List(target_tenant));
  for (Share& s : shares) {
    if (s.owner_tenant == owner_tenant && s.target_tenant == target_tenant &&
        s.state == ShareState::kAccepted && ShareCovers(s, name)) {
      return std::optional<Share>(std::move(s));
    }
  }
  return std::optional<Share>();
}

absl::StatusOr<bool> ShareBook::CanRead(std::string_view owner_tenant, std::string_view name,
                                        std::string_view target_tenant) {
  WARDEN_ASSIGN_OR_RETURN(auto s, Find(owner_tenant, name, target_tenant));
  return s.has_value();
}

absl::StatusOr<std::vector<Share>> ShareBook::List(std::string_view tenant) {
  return records_.List(tenant);
}

}  // namespace warden::vault
