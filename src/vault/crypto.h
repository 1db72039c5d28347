// Internal to vault: thin adapters over OpenSSL 3 EVP (AES-256-GCM, HKDF-SHA256, SHA-256) and a
// few file helpers. No cipher is implemented here; every primitive is OpenSSL's.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct evp_cipher_ctx_st;
struct evp_md_ctx_st;

namespace warden::vault::internal {

inline constexpr size_t kKeySize = 32;
inline constexpr size_t kGcmNonceSize = 12;
inline constexpr size_t kGcmTagSize = 16;

// Drains OpenSSL's per-thread error queue into an Internal status naming `what`.
absl::Status OpenSslError(std::string_view what);

// Overwrites `s` with zeros (OPENSSL_cleanse) and clears it. For key material.
void Wipe(std::string& s);

// HKDF-SHA256 (RFC 5869) through EVP_KDF.
absl::StatusOr<std::string> Hkdf(std::string_view ikm, std::string_view salt, std::string_view info,
                                 size_t length);

// HMAC-SHA256 (32 raw bytes).
std::string HmacSha256(std::string_view key, std::string_view data);

// One-shot AES-256-GCM for small blobs (key wrapping). Seal returns ciphertext || tag. Open returns
// DataLoss when the tag does not verify (nothing of the plaintext is returned then).
absl::StatusOr<std::string> GcmSeal(std::string_view key, std::string_view nonce,
                                    std::string_view aad, std::string_view plaintext);
absl::StatusOr<std::string> GcmOpen(std::string_view key, std::string_view nonce,
                                    std::string_view aad, std::string_view sealed);

struct CipherCtxDeleter {
  void operator()(evp_cipher_ctx_st* ctx) const;
};
using CipherCtxPtr = std::unique_ptr<evp_cipher_ctx_st, CipherCtxDeleter>;
struct MdCtxDeleter {
  void operator()(evp_md_ctx_st* ctx) const;
};
using MdCtxPtr = std::unique_ptr<evp_md_ctx_st, MdCtxDeleter>;

// Incremental SHA-256 (copyable: the copy continues from the same state).
class Sha256Stream {
 public:
  Sha256Stream();
  Sha256Stream(const Sha256Stream& other);
  Sha256Stream& operator=(const Sha256Stream& other);
  void Update(std::string_view data);
  // Raw 32-byte digest; the stream must not be used afterwards.
  std::string Finish();

 private:
  MdCtxPtr ctx_;
};

// File helpers. All paths are built by the vault from validated components.
// Writes `data` to `path` atomically: PATH.tmp.<rand>, fsync, rename, fsync of the directory.
absl::Status WriteFileAtomic(const std::string& path, std::string_view data, uint32_t mode = 0600);
// Reads a whole (small) file; NotFound when absent; InvalidArgument when over `max_size`.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_size = 1 << 20);
// mkdir -p with mode 0700 for each created component.
absl::Status MakeDirs(const std::string& path);
// fsync of a directory, so that a rename or unlink inside it is durable.
absl::Status SyncDir(const std::string& dir);
std::string DirName(const std::string& path);

}  // namespace warden::vault::internal
