// Cross-tenant shares of vault objects as the server keeps them (issue 5): vault::ShareBook's rules
// over the state store (migration 6, table vault_shares), and the one question other server code
// asks before letting tenant B use tenant A's object (dataset reads through the API today; dataset
// mounts into B's jobs next): ShareAllows.
//
// Tenants are named by their store ids here, as the vault files objects under ids: a tenant deleted
// and re-created under the same name has a new id and inherits no share (DeleteTenant removes the
// old id's shares on both sides).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "auth/auth.h"
#include "store/store.h"
#include "vault/access_policy.h"
#include "vault/share.h"

namespace warden::server {

// vault::ShareRecords over store::Store (compare-and-set transitions, visible to every replica
// that shares the store at once). Thread-safe as the store is.
class StoreShareRecords final : public vault::ShareRecords {
 public:
  explicit StoreShareRecords(store::Store& store) : store_(store) {}
  absl::Status Insert(const vault::Share& s) override;
  absl::StatusOr<vault::Share> Get(std::string_view id) override;
  absl::StatusOr<vault::Share> Transition(std::string_view id, std::vector<vault::ShareState> from,
                                          vault::ShareState to, std::string_view by,
                                          int64_t at) override;
  absl::StatusOr<std::vector<vault::Share>> List(std::string_view tenant) override;

 private:
  store::Store& store_;
};

// May principals of tenant `reader_tenant_id` use object `name` of tenant `owner_tenant_id`? The
// accepted, unrevoked share that allows it (its id belongs in the audit event), or nullopt. Only
// the share side: the caller still checks the reader's own RBAC at the reader's tenant (data:read)
// and, for data leaving the cluster or going into a job, what that path needs (step-up for a
// download; see docs/api.md "Shares"). Errors are store errors (refuse on them: fail closed).
absl::StatusOr<std::optional<vault::Share>> ShareAllows(store::Store& store,
                                                        const std::string& owner_tenant_id,
                                                        const std::string& name,
                                                        const std::string& reader_tenant_id);

// The role ids bound to the caller (to the token itself when an API token acts) at cluster scope or
// at `tenant_id`: the `role:` principals of data policies.
absl::StatusOr<std::vector<std::string>> CallerRoleIds(store::Store& store,
                                                       const auth::Identity& id,
                                                       const std::string& tenant_id);

// Fills the principals of a data access request from the caller: roles (`role_ids`, which must
// outlive `r`) and the IdP-asserted groups of the identity (`group:` principals; only IdP bearer
// tokens carry groups, see auth::Identity::groups).
void AddCallerPrincipals(const auth::Identity& id, const std::vector<std::string>& role_ids,
                         vault::AccessRequest& r);

}  // namespace warden::server
