// vault key hierarchy: master key -> per-tenant key-encryption keys (KEKs, versioned) -> per-object
// data keys. The master key never leaves memory; KEKs are stored wrapped under a key derived from
// it; data keys are stored wrapped under a tenant KEK next to the object (src/vault/README.md).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/master_key.h"
#include "common/rng.h"

namespace warden::vault {

// A data key wrapped under one version of a tenant KEK: what an object's metadata stores.
struct WrappedKey {
  uint32_t kek_version = 0;
  std::string blob;  // nonce(12) || AES-256-GCM(KEK, data key) || tag(16)
};

struct KeyVersionStatus {
  uint32_t version = 0;
  int64_t created_unix = 0;
  uint64_t wraps = 0;  // GCM invocations under this KEK (upper bound: reserved in blocks)
};

struct TenantKeyStatus {
  std::string tenant;
  uint32_t current_version = 0;
  uint32_t min_version = 0;
  std::vector<KeyVersionStatus> versions;
  bool shredded = false;
  int64_t shredded_unix = 0;
};

struct KeyringOptions {
  // Directory for tenant keyrings (created 0700). One file per tenant: <tenant>.keyring.json.
  std::string dir;
  // GCM invocations allowed under one KEK version before the keyring rotates to a new version by
  // itself. NIST SP 800-38D section 8.3 caps random 96-bit nonces at 2^32 invocations per key; we
  // rotate at half of that.
  uint64_t max_wraps_per_version = uint64_t{1} << 31;
  // The counter is persisted in blocks of this many so that a wrap does not cost an fsync; after a
  // crash the unused part of a block counts as used (over-counting is the safe side).
  uint64_t wrap_reservation_block = 1024;
  common::Clock* clock = nullptr;  // default RealClock
  common::Rng* rng = nullptr;      // default SecureRng
};

// The tenant keyrings. Thread-safe (one mutex). Unwrapped KEKs are cached in memory and wiped
// when a tenant is shredded or the Keyring is destroyed. `context` arguments bind a wrapped data
// key to its owner (tenant, object id, version) as GCM associated data: a wrapped key copied to
// another object does not unwrap.
class Keyring {
 public:
  static absl::StatusOr<std::unique_ptr<Keyring>> Open(const common::MasterKey& master,
                                                       KeyringOptions options);
  ~Keyring();

  // Wraps `data_key` under the tenant's current KEK (creating version 1 on first use, rotating
  // first when the current version's usage counter reached the limit). FailedPrecondition when
  // the tenant was shredded.
  absl::StatusOr<WrappedKey> Wrap(std::string_view tenant, std::string_view context,
                                  std::string_view data_key);
  // FailedPrecondition: tenant shredded, or kek_version below the tenant's minimum decryptable
  // version. NotFound: no such key version (or no keyring). DataLoss: the blob does not
  // authenticate for this tenant and context (moved, altered, or a different master key).
  absl::StatusOr<std::string> Unwrap(std::string_view tenant, std::string_view context,
                                     const WrappedKey& wrapped);
  // Adds a new KEK version and makes it current; returns it. Old versions stay (rewrap with
  // ObjectStore::RotateTenantKey).
  absl::StatusOr<uint32_t> Rotate(std::string_view tenant);
  // Versions below `min_version` are refused by Unwrap from now on (InvalidArgument when above
  // the current version). With `destroy_below` their wrapped KEKs are deleted from the keyring.
  absl::Status SetMinVersion(std::string_view tenant, uint32_t min_version, bool destroy_below);
  // Crypto-shredding: records a tombstone, deletes the tenant's keyring file, forgets cached keys.
  // Every object of the tenant becomes unreadable; every later call for it is FailedPrecondition.
  absl::Status Shred(std::string_view tenant);
  absl::StatusOr<TenantKeyStatus> Status(std::string_view tenant);

 private:
  struct Version {
    uint32_t version = 0;
    int64_t created_unix = 0;
    std::string wrapped;    // KEK wrapped under the master-derived wrapping key
    uint64_t reserved = 0;  // persisted upper bound of wraps
    uint64_t used = 0;      // in-memory count (<= reserved)
  };
  struct Tenant {
    std::string name;
    uint32_t current = 0;
    uint32_t min_version = 1;
    std::map<uint32_t, Version> versions;
    std::map<uint32_t, std::string> keks;  // unwrapped cache
  };

  Keyring(std::string master_bytes, KeyringOptions options);
  absl::StatusOr<Tenant*> LoadLocked(std::string_view tenant, bool create);
  absl::Status SaveLocked(const Tenant& t);
  absl::Status CheckNotShreddedLocked(std::string_view tenant);
  absl::StatusOr<uint32_t> AddVersionLocked(Tenant& t);
  absl::StatusOr<std::string> KekLocked(Tenant& t, uint32_t version);
  std::string KeyringPath(std::string_view tenant) const;
  std::string TombstonePath(std::string_view tenant) const;

  std::string master_;
  KeyringOptions options_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<Tenant>, std::less<>> tenants_;
};

}  // namespace warden::vault
