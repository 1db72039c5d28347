// VaultService: the server's encrypted data vault (src/vault) as the API's handlers see it: the
// tenant keyrings, the object store under DATA_DIR/vault, and the tenants' data access policy
// documents (one file per tenant under DATA_DIR/vault/policies, replaced atomically).
//
// Objects are filed under the tenant's *id*, never its name: a tenant deleted (and shredded) and
// re-created under the same name starts with an empty vault and new keys.
// Thread-safe: the keyring and object store lock themselves; policies under one mutex.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/master_key.h"
#include "common/rng.h"
#include "vault/access_policy.h"
#include "vault/keys.h"
#include "vault/object_store.h"

namespace warden::server {

class VaultService {
 public:
  // Opens (creating, 0700) `dir` with tenant keys wrapped under a key derived from the server's
  // master key (purpose "vault-kek-wrap/v1", so the vault's keys are independent of the TOTP-seed
  // key derived from the same master key).
  static absl::StatusOr<std::unique_ptr<VaultService>> Open(const std::string& dir,
                                                            const common::MasterKey& master,
                                                            common::Clock& clock,
                                                            common::Rng& rng);

  vault::Keyring& keyring() { return *keyring_; }
  vault::ObjectStore& objects() { return *objects_; }

  // The tenant's compiled policy set (empty when it has none). Never fails for a tenant without
  // a policy file; Internal/DataLoss when the file is unreadable or does not parse (fail closed).
  absl::StatusOr<std::shared_ptr<const vault::DataPolicySet>> Policies(const std::string& tenant);
  // name -> document text.
  absl::StatusOr<std::map<std::string, std::string>> PolicyDocuments(const std::string& tenant);
  // Parses and stores (replacing one of the same name). InvalidArgument from the parser.
  absl::Status PutPolicy(const std::string& tenant, const std::string& name,
                         const std::string& json);
  // NotFound when absent.
  absl::Status DeletePolicy(const std::string& tenant, const std::string& name);
  // Forgets the tenant's policies (after crypto-shredding).
  absl::Status DropPolicies(const std::string& tenant);

 private:
  VaultService() = default;
  std::string PolicyPath(const std::string& tenant) const;
  absl::StatusOr<std::map<std::string, std::string>> LoadLocked(const std::string& tenant);
  absl::Status SaveLocked(const std::string& tenant, const std::map<std::string, std::string>& docs);

  std::string policy_dir_;
  std::unique_ptr<vault::Keyring> keyring_;
  std::unique_ptr<vault::ObjectStore> objects_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<const vault::DataPolicySet>> compiled_;  // guarded by mu_
};

}  // namespace warden::server
