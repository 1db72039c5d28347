#include "common/master_key.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common/status.h"
#include "common/strings.h"

namespace warden::common {
namespace {

constexpr unsigned char kFormatV1 = 0x01;
constexpr size_t kNonceBytes = 12;
constexpr size_t kTagBytes = 16;

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

const unsigned char* U(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

std::string ModeString(mode_t mode) {
  return StrCat("0", (mode & 0777) / 64, (mode & 077) / 8, mode & 7);
}

}  // namespace

absl::StatusOr<AeadKey> AeadKey::FromBytes(std::string_view key) {
  if (key.size() != kKeyBytes) {
    return absl::InvalidArgumentError(StrCat("AES-256-GCM key must be 32 bytes, got ", key.size()));
  }
  return AeadKey(std::string(key));
}

absl::StatusOr<std::string> AeadKey::Seal(std::string_view plaintext, std::string_view aad,
                                          Rng& rng) const {
  std::string nonce = rng.Bytes(kNonceBytes);
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  std::string out(1 + kNonceBytes + plaintext.size() + kTagBytes, '\0');
  out[0] = static_cast<char>(kFormatV1);
  std::memcpy(out.data() + 1, nonce.data(), kNonceBytes);
  auto* ct = reinterpret_cast<unsigned char*>(out.data() + 1 + kNonceBytes);
  int len = 0;
  int total = 0;
  bool ok = ctx && EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, U(key_), U(nonce)) == 1 &&
            (aad.empty() ||
             EVP_EncryptUpdate(ctx.get(), nullptr, &len, U(aad), static_cast<int>(aad.size())) == 1) &&
            EVP_EncryptUpdate(ctx.get(), ct, &len, U(plaintext), static_cast<int>(plaintext.size())) == 1;
  total = len;
  ok = ok && EVP_EncryptFinal_ex(ctx.get(), ct + total, &len) == 1;
  total += len;
  ok = ok && static_cast<size_t>(total) == plaintext.size() &&
       EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes, ct + total) == 1;
  if (!ok) return absl::InternalError("AES-256-GCM encryption failed (OpenSSL)");
  return out;
}

absl::StatusOr<std::string> AeadKey::Open(std::string_view sealed, std::string_view aad) const {
  if (sealed.size() < 1 + kNonceBytes + kTagBytes) {
    return absl::DataLossError("ciphertext is truncated");
  }
  if (static_cast<unsigned char>(sealed[0]) != kFormatV1) {
    return absl::DataLossError(StrCat("ciphertext has unknown format version ",
                                      static_cast<int>(static_cast<unsigned char>(sealed[0]))));
  }
  std::string_view nonce = sealed.substr(1, kNonceBytes);
  std::string_view ct = sealed.substr(1 + kNonceBytes, sealed.size() - 1 - kNonceBytes - kTagBytes);
  std::string tag(sealed.substr(sealed.size() - kTagBytes));
  std::string out(ct.size(), '\0');
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  int total = 0;
  bool ok = ctx && EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, U(key_), U(nonce)) == 1 &&
            (aad.empty() ||
             EVP_DecryptUpdate(ctx.get(), nullptr, &len, U(aad), static_cast<int>(aad.size())) == 1) &&
            EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len, U(ct),
                              static_cast<int>(ct.size())) == 1;
  total = len;
  ok = ok && EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes, tag.data()) == 1 &&
       EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + total, &len) == 1;
  if (!ok) {
    return absl::DataLossError("ciphertext failed authentication (wrong key, wrong context or tampered)");
  }
  return out;
}

absl::StatusOr<MasterKey> MasterKey::FromBytes(std::string_view key) {
  if (key.size() != kKeyBytes) {
    return absl::InvalidArgumentError(StrCat("master key must be 32 bytes, got ", key.size()));
  }
  return MasterKey(std::string(key));
}

absl::StatusOr<MasterKey> MasterKey::LoadOrCreate(const std::string& path, Rng& rng) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    std::string key = rng.Bytes(kKeyBytes);
    bool ok = ::write(fd, key.data(), key.size()) == static_cast<ssize_t>(key.size()) &&
              ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) {
      ::unlink(path.c_str());  // a short key file would be refused on every later start
      return absl::UnavailableError(StrCat("cannot write master key ", path));
    }
    return MasterKey(std::move(key));
  }
  if (errno != EEXIST) {
    return absl::FailedPreconditionError(
        StrCat("cannot create master key ", path, ": ", std::strerror(errno)));
  }
  // O_NOFOLLOW: the key is read from the file itself, never through a planted symlink.
  fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        StrCat("cannot open master key ", path, ": ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(StrCat("cannot stat master key ", path));
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(
        StrCat("master key ", path, " has mode ", ModeString(st.st_mode),
               "; it must not be readable by group or others (chmod 600 it)"));
  }
  if (st.st_size != static_cast<off_t>(kKeyBytes)) {
    ::close(fd);
    return absl::DataLossError(
        StrCat("master key ", path, " is ", st.st_size, " bytes, expected 32"));
  }
  std::string key(kKeyBytes, '\0');
  ssize_t n = ::read(fd, key.data(), key.size());
  ::close(fd);
  if (n != static_cast<ssize_t>(kKeyBytes)) {
    return absl::DataLossError(StrCat("cannot read 32 bytes from master key ", path));
  }
  return MasterKey(std::move(key));
}

absl::StatusOr<AeadKey> MasterKey::DeriveKey(std::string_view purpose) const {
  WARDEN_ASSIGN_OR_RETURN(std::string secret, DeriveSecret(purpose));
  return AeadKey::FromBytes(secret);
}

absl::StatusOr<std::string> MasterKey::DeriveSecret(std::string_view purpose) const {
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr), EVP_PKEY_CTX_free);
  static constexpr std::string_view kSalt = "gpuwarden";
  std::string out(AeadKey::kKeyBytes, '\0');
  size_t out_len = out.size();
  bool ok = ctx && EVP_PKEY_derive_init(ctx.get()) == 1 &&
            EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) == 1 &&
            EVP_PKEY_CTX_set1_hkdf_salt(ctx.get(), U(kSalt), static_cast<int>(kSalt.size())) == 1 &&
            EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), U(key_), static_cast<int>(key_.size())) == 1 &&
            EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), U(purpose), static_cast<int>(purpose.size())) == 1 &&
            EVP_PKEY_derive(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &out_len) == 1 &&
            out_len == out.size();
  if (!ok) return absl::InternalError("HKDF-SHA256 key derivation failed (OpenSSL)");
  return out;
}

}  // namespace warden::common
