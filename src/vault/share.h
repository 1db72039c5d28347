// Cross-tenant sharing of one object: the owner tenant's admin offers it (a `copy` out of the
// tenant, so it passes AuthorizeDataAccess for copy, MFA step-up included, and needs
// datasets:manage at the owner tenant), the receiving tenant's admin accepts it (datasets:manage
// at the receiving tenant). Only an accepted, unrevoked share lets the receiving tenant read.
// Offers are small JSON files under the owner tenant (vault/tenants/<owner>/shares/<id>.json),
// written atomically. Thread-safe (one mutex).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/rng.h"
#include "rbac/rbac.h"
#include "vault/access_policy.h"

namespace warden::vault {

struct Share {
  std::string id;
  std::string owner_tenant;
  std::string name;  // object name in the owner tenant
  std::string target_tenant;
  std::string offered_by;
  int64_t offered_unix = 0;
  std::string accepted_by;  // "" until accepted
  int64_t accepted_unix = 0;
  bool revoked = false;
};

// Mounting an object into a job: inside the object's tenant it is a read; into another tenant's
// job it is a copy (the data leaves the tenant), so it needs the copy grant.
DataAction ActionForMount(std::string_view object_tenant, std::string_view job_tenant);

class ShareBook {
 public:
  // `root` is the vault directory (ObjectStore's root).
  ShareBook(std::string root, common::Clock& clock, common::Rng& rng);

  // PermissionDenied naming what is missing (datasets:manage at the owner tenant, or the copy
  // decision's reason); InvalidArgument for bad names or sharing with oneself.
  absl::StatusOr<Share> Offer(const rbac::Grants& grants, rbac::TenantRef owner_ref,
                              const DataPolicySet& owner_policies,
                              const AccessRequest& copy_request,
                              std::optional<absl::Duration> mfa_age, std::string_view owner_tenant,
                              std::string_view target_tenant);
  // PermissionDenied without datasets:manage at the target tenant; NotFound for an unknown share
  // or one offered to another tenant; FailedPrecondition when revoked.
  absl::StatusOr<Share> Accept(const rbac::Grants& grants, rbac::TenantRef target_ref,
                               std::string_view user_id, std::string_view owner_tenant,
                               std::string_view share_id, std::string_view target_tenant);
  // Owner-side revocation (datasets:manage at the owner tenant).
  absl::Status Revoke(const rbac::Grants& grants, rbac::TenantRef owner_ref,
                      std::string_view owner_tenant, std::string_view share_id);
  // True iff `target_tenant` holds an accepted, unrevoked share of `name` from `owner_tenant`.
  absl::StatusOr<bool> CanRead(std::string_view owner_tenant, std::string_view name,
                               std::string_view target_tenant);
  absl::StatusOr<std::vector<Share>> List(std::string_view owner_tenant);

 private:
  absl::StatusOr<Share> Load(std::string_view owner_tenant, std::string_view id);
  absl::Status Save(const Share& s);
  std::string Dir(std::string_view owner_tenant) const;

  std::string root_;
  common::Clock& clock_;
  common::Rng& rng_;
  std::mutex mu_;
};

}  // namespace warden::vault
