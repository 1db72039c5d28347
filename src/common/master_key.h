// MasterKey: the 32-byte root secret that protects secrets at rest (TOTP seeds now; tenant keys in
// the vault later), loaded from DATA_DIR/master.key, and AeadKey, AES-256-GCM under a key derived
// from it for one purpose.
//
// The file is created on first start with mode 0600 (O_EXCL, so two starting replicas cannot both
// write one) and refused later if group or others may read it: whoever reads it can decrypt every
// secret the server holds. Replicas that share a store must share this file.
//
// Instead of a file, the key may come from an external command (`master_key_command` in the
// server config): a KMS client, an HSM tool or a TPM unseal that prints the key as 64 hex digits.
// Nothing is stored then; the command runs at every start, without a shell, under a timeout.
//
// Keys are never used directly: DeriveKey(purpose) runs HKDF-SHA256 (RFC 5869) with the purpose as
// `info`, so a TOTP-seed ciphertext can never be opened as a vault key and the other way round.
// Value types; thread-safe (const methods only; OpenSSL contexts are per call).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/rng.h"

namespace warden::common {

// AES-256-GCM with a random 96-bit nonce per message. Sealed form (binary):
//   0x01 (format version) || nonce (12) || ciphertext || tag (16).
// `aad` (associated data) is authenticated but not stored: the caller binds the ciphertext to its
// context (e.g. "totp-seed:" + user id) so a ciphertext copied to another row does not open.
class AeadKey {
 public:
  static constexpr size_t kKeyBytes = 32;
  // InvalidArgument unless exactly 32 bytes.
  static absl::StatusOr<AeadKey> FromBytes(std::string_view key);

  // Internal only if OpenSSL fails.
  absl::StatusOr<std::string> Seal(std::string_view plaintext, std::string_view aad,
                                   Rng& rng) const;
  // DataLoss "ciphertext ... failed authentication" for a wrong key, wrong aad or any tampering;
  // DataLoss for a truncated or unknown-version blob.
  absl::StatusOr<std::string> Open(std::string_view sealed, std::string_view aad) const;

 private:
  explicit AeadKey(std::string key) : key_(std::move(key)) {}
  std::string key_;
};

class MasterKey {
 public:
  static constexpr size_t kKeyBytes = 32;

  // Creates `path` (32 bytes from `rng`, mode 0600) if it does not exist, then loads it.
  // FailedPrecondition when it is readable or writable by group or others (names the mode and the
  // fix), or cannot be created; DataLoss when it is not exactly 32 bytes.
  static absl::StatusOr<MasterKey> LoadOrCreate(const std::string& path, Rng& rng);
  // Reads an existing key file (never creates one): 32 raw bytes, or 64 hex digits with an
  // optional trailing newline. Opened with O_NOFOLLOW and checked on the open descriptor: a
  // regular file owned by the effective uid with no group/other bits. FailedPrecondition names
  // the problem and the fix, e.g. "master key file F has mode 0644: it must not be accessible to
  // group or others (chmod 600 F)".
  static absl::StatusOr<MasterKey> FromFile(const std::string& path);
  // Runs `argv` (no shell; argv[0] looked up in PATH; stdin is /dev/null) and reads the key from
  // its standard output as exactly 64 hex digits (one trailing newline allowed). The seam for a
  // KMS, an HSM or a TPM unseal. FailedPrecondition when the command cannot run, exits non-zero,
  // is killed, runs longer than `timeout_ms` (it is then killed) or prints anything else; the
  // message names the command and what went wrong, never what it printed. InvalidArgument when
  // argv is empty.
  static absl::StatusOr<MasterKey> FromCommand(const std::vector<std::string>& argv,
                                               int timeout_ms = 10000);
  // For tests and tools. InvalidArgument unless 32 bytes.
  static absl::StatusOr<MasterKey> FromBytes(std::string_view key);

  MasterKey(const MasterKey&) = default;
  MasterKey& operator=(const MasterKey&) = default;
  ~MasterKey();  // wipes the key bytes

  // HKDF-SHA256(master, salt = "gpuwarden", info = purpose) -> 32-byte AeadKey. Purposes in use:
  // "totp-seed/v1" (auth), "vault-kek-wrap/v1" (vault). Internal only if OpenSSL fails.
  absl::StatusOr<AeadKey> DeriveKey(std::string_view purpose) const;
  // The same derivation as raw 32 bytes, for a module that keeps its own key hierarchy under the
  // master key (the vault: purpose "vault-kek-wrap/v1" wraps the tenant key-encryption keys).
  absl::StatusOr<std::string> DeriveSecret(std::string_view purpose) const;

 private:
  explicit MasterKey(std::string key) : key_(std::move(key)) {}
  std::string key_;
};

}  // namespace warden::common
