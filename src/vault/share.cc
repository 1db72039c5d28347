#include "vault/share.h"

#include <filesystem>

#include "common/ids.h"
#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"
#include "vault/crypto.h"
#include "vault/format.h"

namespace warden::vault {

using common::StrCat;

namespace {
const rbac::Permission kManage(rbac::Resource::kDatasets, rbac::Verb::kManage);
}  // namespace

DataAction ActionForMount(std::string_view object_tenant, std::string_view job_tenant) {
  return object_tenant == job_tenant ? DataAction::kRead : DataAction::kCopy;
}

ShareBook::ShareBook(std::string root, common::Clock& clock, common::Rng& rng)
    : root_(std::move(root)), clock_(clock), rng_(rng) {}

std::string ShareBook::Dir(std::string_view owner_tenant) const {
  return StrCat(root_, "/tenants/", owner_tenant, "/shares");
}

absl::Status ShareBook::Save(const Share& s) {
  common::Json j = {{"id", s.id},
                    {"owner_tenant", s.owner_tenant},
                    {"name", s.name},
                    {"target_tenant", s.target_tenant},
                    {"offered_by", s.offered_by},
                    {"offered_unix", s.offered_unix},
                    {"accepted_by", s.accepted_by},
                    {"accepted_unix", s.accepted_unix},
                    {"revoked", s.revoked}};
  WARDEN_RETURN_IF_ERROR(internal::MakeDirs(Dir(s.owner_tenant)));
  return internal::WriteFileAtomic(StrCat(Dir(s.owner_tenant), "/", s.id, ".json"), j.dump(1));
}

absl::StatusOr<Share> ShareBook::Load(std::string_view owner_tenant, std::string_view id) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("share id", id));
  auto text = internal::ReadSmallFile(StrCat(Dir(owner_tenant), "/", id, ".json"));
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(StrCat("share ", id, " not found"));
  }
  if (!text.ok()) return text.status();
  auto j = common::ParseJsonStrict(*text);
  Share s;
  try {
    if (!j.ok()) throw std::runtime_error("not JSON");
    s.id = (*j)["id"].get<std::string>();
    s.owner_tenant = (*j)["owner_tenant"].get<std::string>();
    s.name = (*j)["name"].get<std::string>();
    s.target_tenant = (*j)["target_tenant"].get<std::string>();
    s.offered_by = (*j)["offered_by"].get<std::string>();
    s.offered_unix = (*j)["offered_unix"].get<int64_t>();
    s.accepted_by = (*j)["accepted_by"].get<std::string>();
    s.accepted_unix = (*j)["accepted_unix"].get<int64_t>();
    s.revoked = (*j)["revoked"].get<bool>();
  } catch (const std::exception& e) {
    return absl::DataLossError(StrCat("share ", id, " is corrupt: ", e.what()));
  }
  if (s.id != id || s.owner_tenant != owner_tenant) {
    return absl::DataLossError(StrCat("share ", id, " does not belong to tenant ", owner_tenant));
  }
  return s;
}

absl::StatusOr<Share> ShareBook::Offer(const rbac::Grants& grants, rbac::TenantRef owner_ref,
                                       const DataPolicySet& owner_policies,
                                       const AccessRequest& copy_request,
                                       std::optional<absl::Duration> mfa_age,
                                       std::string_view owner_tenant,
                                       std::string_view target_tenant) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", owner_tenant));
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", target_tenant));
  WARDEN_RETURN_IF_ERROR(ValidateObjectName(copy_request.name));
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
  AccessDecision d = AuthorizeDataAccess(grants, owner_ref, owner_policies, copy_request, mfa_age);
  if (!d.allowed) return absl::PermissionDeniedError(StrCat("sharing is a copy: ", d.reason));
  Share s;
  s.id = common::NewId(rng_, "shr");
  s.owner_tenant = std::string(owner_tenant);
  s.name = std::string(copy_request.name);
  s.target_tenant = std::string(target_tenant);
  s.offered_by = std::string(copy_request.user_id);
  s.offered_unix = clock_.NowUnix();
  std::lock_guard<std::mutex> lock(mu_);
  WARDEN_RETURN_IF_ERROR(Save(s));
  return s;
}

absl::StatusOr<Share> ShareBook::Accept(const rbac::Grants& grants, rbac::TenantRef target_ref,
                                        std::string_view user_id, std::string_view owner_tenant,
                                        std::string_view share_id, std::string_view target_tenant) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", owner_tenant));
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", target_tenant));
  if (!grants.Allows(kManage, target_ref)) {
    return absl::PermissionDeniedError(StrCat("accepting a share needs datasets:manage at tenant ",
                                              target_tenant, " (a tenant admin)"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  WARDEN_ASSIGN_OR_RETURN(Share s, Load(owner_tenant, share_id));
  // Not found rather than forbidden: a share offered elsewhere is not this tenant's business.
  if (s.target_tenant != target_tenant) {
    return absl::NotFoundError(StrCat("share ", share_id, " not found"));
  }
  if (s.revoked) return absl::FailedPreconditionError(StrCat("share ", share_id, " was revoked"));
  if (!s.accepted_by.empty()) return s;
  s.accepted_by = std::string(user_id);
  s.accepted_unix = clock_.NowUnix();
  WARDEN_RETURN_IF_ERROR(Save(s));
  return s;
}

absl::Status ShareBook::Revoke(const rbac::Grants& grants, rbac::TenantRef owner_ref,
                               std::string_view owner_tenant, std::string_view share_id) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", owner_tenant));
  if (!grants.Allows(kManage, owner_ref)) {
    return absl::PermissionDeniedError(
        StrCat("revoking a share needs datasets:manage at tenant ", owner_tenant));
  }
  std::lock_guard<std::mutex> lock(mu_);
  WARDEN_ASSIGN_OR_RETURN(Share s, Load(owner_tenant, share_id));
  s.revoked = true;
  return Save(s);
}

absl::StatusOr<bool> ShareBook::CanRead(std::string_view owner_tenant, std::string_view name,
                                        std::string_view target_tenant) {
  WARDEN_ASSIGN_OR_RETURN(std::vector<Share> shares, List(owner_tenant));
  for (const Share& s : shares) {
    if (s.name == name && s.target_tenant == target_tenant && !s.accepted_by.empty() &&
        !s.revoked) {
      return true;
    }
  }
  return false;
}

absl::StatusOr<std::vector<Share>> ShareBook::List(std::string_view owner_tenant) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", owner_tenant));
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Share> out;
  std::error_code ec;
  for (const auto& f : std::filesystem::directory_iterator(Dir(owner_tenant), ec)) {
    std::string fn = f.path().filename().string();
    if (fn.size() <= 5 || fn.substr(fn.size() - 5) != ".json" ||
        fn.find(".tmp.") != std::string::npos) {
      continue;
    }
    WARDEN_ASSIGN_OR_RETURN(Share s, Load(owner_tenant, fn.substr(0, fn.size() - 5)));
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace warden::vault
