// Cross-tenant sharing of an object (or of every object under a name prefix): the owner tenant's
// admin offers it (a `copy` out of the tenant, so it passes AuthorizeDataAccess for copy, MFA
// step-up included, and needs datasets:manage at the owner tenant); the receiving tenant's admin
// accepts or declines it (datasets:manage at the receiving tenant); the owner's admin revokes it.
// Only an accepted, unrevoked share lets the receiving tenant read, and only names it covers.
//
// ShareBook holds the rules; where shares live is the ShareRecords seam (the server keeps them in
// the state store, migration 6, so every replica sees a revoke at once). Every state change is a
// compare-and-set in the records, so a revoke racing an accept is never lost. Thread-safe when the
// records are.
#pragma once

#include <cstdint>
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

enum class ShareState : uint8_t { kOffered, kAccepted, kDeclined, kRevoked };
std::string_view ShareStateName(ShareState s);
std::optional<ShareState> ParseShareState(std::string_view s);

struct Share {
  std::string id;
  std::string owner_tenant;
  std::string name;  // object name in the owner tenant, or a name prefix when `prefix`
  bool prefix = false;
  std::string target_tenant;
  ShareState state = ShareState::kOffered;
  std::string offered_by;
  int64_t offered_unix = 0;
  std::string decided_by;  // who accepted or declined ("" while offered)
  int64_t decided_unix = 0;
  std::string revoked_by;
  int64_t revoked_unix = 0;
};

// Whether `s` covers object `name`: the exact name, or any name under a prefix share. Says
// nothing about the state.
bool ShareCovers(const Share& s, std::string_view name);

// Where shares are kept. Implementations must make Transition one atomic compare-and-set.
class ShareRecords {
 public:
  virtual ~ShareRecords() = default;
  virtual absl::Status Insert(const Share& s) = 0;
  // NotFound naming the id.
  virtual absl::StatusOr<Share> Get(std::string_view id) = 0;
  // Moves the share to `to` only if its state is one of `from` now; records `by`/`at` as decided_*
  // (accepted, declined) or revoked_*. NotFound; FailedPrecondition naming the current state.
  virtual absl::StatusOr<Share> Transition(std::string_view id, std::vector<ShareState> from,
                                           ShareState to, std::string_view by, int64_t at) = 0;
  // Shares the tenant owns or was offered.
  virtual absl::StatusOr<std::vector<Share>> List(std::string_view tenant) = 0;
};

// Mounting an object into a job: inside the object's tenant it is a read; into another tenant's
// job it is a copy (the data leaves the tenant), so it needs the copy grant.
DataAction ActionForMount(std::string_view object_tenant, std::string_view job_tenant);

class ShareBook {
 public:
  ShareBook(ShareRecords& records, common::Clock& clock, common::Rng& rng);

  // `copy_request.name` is the object name (or the prefix when `prefix`; a prefix may end in
  // '/'). PermissionDenied naming what is missing (datasets:manage at the owner tenant, or the
  // copy decision's reason, MFA step-up included); InvalidArgument for bad names or sharing with
  // oneself. Nothing is recorded on failure.
  absl::StatusOr<Share> Offer(const rbac::Grants& grants, rbac::TenantRef owner_ref,
                              const DataPolicySet& owner_policies,
                              const AccessRequest& copy_request,
                              std::optional<absl::Duration> mfa_age, std::string_view owner_tenant,
                              std::string_view target_tenant, bool prefix = false);
  // The receiving side. PermissionDenied without datasets:manage at `target_tenant`; NotFound for
  // an unknown share or one offered to another tenant (no oracle for other tenants' shares);
  // FailedPrecondition when it is no longer offered (accepting twice is not an error).
  absl::StatusOr<Share> Accept(const rbac::Grants& grants, rbac::TenantRef target_ref,
                               std::string_view user_id, std::string_view share_id,
                               std::string_view target_tenant);
  // The receiving side turns an offered or accepted share down (its readers lose access).
  absl::StatusOr<Share> Decline(const rbac::Grants& grants, rbac::TenantRef target_ref,
                                std::string_view user_id, std::string_view share_id,
                                std::string_view target_tenant);
  // Owner-side revocation (datasets:manage at the owner tenant); NotFound for a share the owner
  // tenant does not own; FailedPrecondition when already revoked or declined.
  absl::StatusOr<Share> Revoke(const rbac::Grants& grants, rbac::TenantRef owner_ref,
                               std::string_view user_id, std::string_view owner_tenant,
                               std::string_view share_id);
  // The accepted share that lets `target_tenant` read `name` of `owner_tenant`, if any (the
  // receiving tenant's own RBAC is the caller's to check).
  absl::StatusOr<std::optional<Share>> Find(std::string_view owner_tenant, std::string_view name,
                                            std::string_view target_tenant);
  // True iff Find finds one.
  absl::StatusOr<bool> CanRead(std::string_view owner_tenant, std::string_view name,
                               std::string_view target_tenant);
  // Shares `tenant` owns or was offered.
  absl::StatusOr<std::vector<Share>> List(std::string_view tenant);

 private:
  ShareRecords& records_;
  common::Clock& clock_;
  common::Rng& rng_;
};

}  // namespace warden::vault
