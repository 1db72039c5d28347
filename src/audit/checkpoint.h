// Signed checkpoints of the tamper-evident audit log (issue 4): the server's Ed25519 audit key
// signs (tree size, root, time) every N events or T seconds, and each checkpoint names the hash of
// the previous one's body, so the checkpoints form their own chain. An auditor holding only the
// public key can then check, offline, that the log's recomputed Merkle tree matches what the key
// holder signed at every checkpoint: an edit, deletion, reordering or truncation of events, or a
// deleted, reordered, edited or re-signed checkpoint, is detected.
//
// Encoded form of a checkpoint (the format, version 1; similar in spirit to the C2SP
// signed-note/checkpoint formats). Exactly eight lines, each ending in "\n", nothing after:
//
//   gpuwarden-audit-checkpoint/v1      1  format and version
//   <seq>                              2  checkpoint number, 0 for the first of a log
//   <tree_size>                        3  number of log entries the root covers
//   <root>                             4  RFC 9162 root of the first tree_size entries
//   <time_ms>                          5  Unix time in milliseconds when it was signed
//   <prev>                             6  SHA-256 of the previous checkpoint's body; 32 zero bytes
//                                         for seq 0
//   (empty)                            7  separates the body from the signature
//   sig <key_id> <signature>           8  key id (below) and the Ed25519 signature of the body
//
// The body is lines 1-6 with their newlines, byte for byte; it is what is signed and what `prev`
// hashes. Numbers are unsigned decimal without sign or leading zeros ("0" is zero); seq and
// tree_size fit uint64, time_ms fits int64 and is >= 0. Hashes and the signature are standard
// base64 (RFC 4648 section 4, with padding) of exactly 32 and 64 bytes, canonical (the unused bits
// of the last character are zero), so each checkpoint has exactly one encoding. The key id is 16
// lowercase hex characters: the first 8 bytes of SHA-256 of the raw 32-byte Ed25519 public key
// (RFC 8032); it names the key, it is not a security boundary (the signature is).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "audit/merkle.h"

struct evp_pkey_st;  // OpenSSL's EVP_PKEY, kept out of this header

namespace warden::audit {

namespace checkpoint_internal {
struct PkeyDeleter {
  void operator()(evp_pkey_st* pkey) const;
};
using PkeyPtr = std::unique_ptr<evp_pkey_st, PkeyDeleter>;
}  // namespace checkpoint_internal

inline constexpr std::string_view kCheckpointHeader = "gpuwarden-audit-checkpoint/v1";
inline constexpr size_t kAuditKeyIdHexLength = 16;
inline constexpr size_t kAuditSignatureSize = 64;

// The server's Ed25519 audit key pair, which signs checkpoints. Move-only; const methods are
// thread-safe (each call uses its own OpenSSL context).
class AuditSigningKey {
 public:
  // A fresh key from OpenSSL's CSPRNG. Internal when OpenSSL cannot generate one.
  static absl::StatusOr<AuditSigningKey> Generate();

  // Loads the PKCS#8 PEM private key at `path`, or, when no file is there, generates one and
  // writes it there, created with open(O_CREAT | O_EXCL | O_NOFOLLOW, 0600) and fsynced (the
  // file and its directory) before this returns. Errors:
  //  - FailedPrecondition: the file is not a regular file, or gives any permission to group or
  //    others (a key others can read lets them forge checkpoints; one they can write lets them
  //    swap it). The file is left as it is.
  //  - DataLoss (naming the file): it is empty, too large, not PEM, not a private key, encrypted,
  //    or not Ed25519. Never replaced: a key that checkpoints were signed with must not silently
  //    change. (A crash while the file was first written leaves such a file: delete it by hand
  //    when no checkpoint was signed with it.)
  //  - Internal / the errno's status: I/O errors (the message names the file); on a failed
  //    write the partial file is removed.
  static absl::StatusOr<AuditSigningKey> LoadOrCreate(const std::string& path);

  AuditSigningKey(AuditSigningKey&&) noexcept = default;
  AuditSigningKey& operator=(AuditSigningKey&&) noexcept = default;
  ~AuditSigningKey() = default;

  // The public key as SubjectPublicKeyInfo PEM ("-----BEGIN PUBLIC KEY-----"): what auditors
  // are given (`audit verify --pubkey`).
  std::string PublicKeyPem() const;
  // 16 lowercase hex characters; see the file comment.
  const std::string& KeyId() const { return key_id_; }
  // The raw 32-byte public key.
  const std::string& RawPublicKey() const { return raw_public_key_; }

  // Ed25519 signature (64 bytes) of `message`. Internal when OpenSSL fails.
  absl::StatusOr<std::string> Sign(std::string_view message) const;

 private:
  friend class AuditVerifyingKey;  // FromSigningKey shares the key object
  explicit AuditSigningKey(checkpoint_internal::PkeyPtr pkey);
  checkpoint_internal::PkeyPtr pkey_;
  std::string raw_public_key_;
  std::string key_id_;
};

// An Ed25519 public key that checkpoints are verified against. Move-only; const methods are
// thread-safe.
class AuditVerifyingKey {
 public:
  // From SubjectPublicKeyInfo PEM (as PublicKeyPem() writes). InvalidArgument when `pem` does not
  // parse or is not an Ed25519 public key.
  static absl::StatusOr<AuditVerifyingKey> FromPem(std::string_view pem);
  static AuditVerifyingKey FromSigningKey(const AuditSigningKey& key);

  AuditVerifyingKey(AuditVerifyingKey&&) noexcept = default;
  AuditVerifyingKey& operator=(AuditVerifyingKey&&) noexcept = default;
  ~AuditVerifyingKey() = default;

  const std::string& KeyId() const { return key_id_; }

  // OK when `signature` is a valid Ed25519 signature of `message` by this key; DataLoss when it
  // is not (any length, any bytes: never crashes).
  absl::Status Verify(std::string_view message, std::string_view signature) const;

 private:
  explicit AuditVerifyingKey(checkpoint_internal::PkeyPtr pkey);
  checkpoint_internal::PkeyPtr pkey_;
  std::string key_id_;
};

// One signed checkpoint. A plain value; see the file comment for the meaning of each field.
struct Checkpoint {
  uint64_t seq = 0;
  uint64_t tree_size = 0;
  MerkleHash root{};
  int64_t time_ms = 0;
  MerkleHash prev{};      // BodyHash() of checkpoint seq - 1; all zero for seq 0
  std::string key_id;     // 16 lowercase hex characters
  std::string signature;  // raw Ed25519 signature of Body(), 64 bytes

  // Lines 1-6 of the encoding: the signed bytes.
  std::string Body() const;
  // SHA-256 of Body(): what the next checkpoint's `prev` holds.
  MerkleHash BodyHash() const;
  // The full eight-line encoding. Encode() of a checkpoint with a key id or signature of the
  // wrong form produces text ParseCheckpoint rejects.
  std::string Encode() const;

  bool operator==(const Checkpoint&) const = default;
};

// Signs a checkpoint with the given fields. InvalidArgument when time_ms < 0; Internal when
// OpenSSL fails.
absl::StatusOr<Checkpoint> SignCheckpoint(const AuditSigningKey& key, uint64_t seq,
                                          uint64_t tree_size, const MerkleHash& root,
                                          int64_t time_ms, const MerkleHash& prev);
// Signs the checkpoint that follows `previous` in the chain (seq + 1, prev = its BodyHash()), or
// the first one (seq 0, prev zero) when `previous` is null. Errors as SignCheckpoint.
absl::StatusOr<Checkpoint> SignNextCheckpoint(const AuditSigningKey& key,
                                              const Checkpoint* previous, uint64_t tree_size,
                                              const MerkleHash& root, int64_t time_ms);

// Parses the encoding of one checkpoint (untrusted input: a file, the API). Strict: exactly the
// form in the file comment, so exactly one text parses to a given checkpoint. InvalidArgument
// naming the line (1-8) and what is wrong; never crashes, on any bytes. Does not verify the
// signature.
absl::StatusOr<Checkpoint> ParseCheckpoint(std::string_view text);

// Verifies that `checkpoint` was signed by `key`: its key id is the key's and its signature
// verifies over exactly Body(). DataLoss when not (the checkpoint was edited, or signed by
// another key: either way the log is not what the key holder signed).
absl::Status VerifyCheckpoint(const Checkpoint& checkpoint, const AuditVerifyingKey& key);
// As above with the key as PEM; InvalidArgument when the PEM is not an Ed25519 public key.
absl::Status VerifyCheckpoint(const Checkpoint& checkpoint, std::string_view public_key_pem);

// Root of the log's first `size` entries, as recomputed by the verifier. An error is returned
// from VerifyCheckpointChain with the checkpoint's seq prefixed to its message.
using RootAtSizeFn = std::function<absl::StatusOr<MerkleHash>(uint64_t size)>;

// Verifies a whole chain of checkpoints, in order, against `key` and the recomputed log. For each
// checkpoint: its signature (VerifyCheckpoint); seq equal to its position (consecutive from 0);
// prev equal to the previous checkpoint's BodyHash() (zero for the first); tree_size and time_ms
// not smaller than the previous one's; root equal to root_at(tree_size). OK for an empty chain.
// Events after the last checkpoint are not covered (the caller decides whether that is allowed).
// DataLoss naming the first bad checkpoint ("checkpoint seq N (position i): ...") and what is
// wrong; root_at's own errors are returned with that prefix.
absl::Status VerifyCheckpointChain(std::span<const Checkpoint> chain, const AuditVerifyingKey& key,
                                   const RootAtSizeFn& root_at);
// As above against a tree recomputed from the log. A checkpoint whose tree_size exceeds
// tree.size() is DataLoss (the log was truncated after it was signed).
absl::Status VerifyCheckpointChain(std::span<const Checkpoint> chain, const AuditVerifyingKey& key,
                                   const MerkleTree& tree);

}  // namespace warden::audit
