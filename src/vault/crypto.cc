#include "vault/crypto.h"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/encoding.h"
#include "common/strings.h"

namespace warden::vault::internal {

using common::StrCat;

namespace {
const unsigned char* U8(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}
unsigned char* U8(std::string& s) { return reinterpret_cast<unsigned char*>(s.data()); }

const EVP_CIPHER* Aes256Gcm() {
  // Fetched once: looking the algorithm up per call shows in profiles.
  static EVP_CIPHER* const kCipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return kCipher;
}
}  // namespace

absl::Status OpenSslError(std::string_view what) {
  std::string last;
  unsigned long code = 0;
  while ((code = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    last = buf;
  }
  return absl::InternalError(StrCat(what, " failed", last.empty() ? "" : ": ", last));
}

void Wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

void CipherCtxDeleter::operator()(evp_cipher_ctx_st* ctx) const { EVP_CIPHER_CTX_free(ctx); }
void MdCtxDeleter::operator()(evp_md_ctx_st* ctx) const { EVP_MD_CTX_free(ctx); }

absl::StatusOr<std::string> Hkdf(std::string_view ikm, std::string_view salt, std::string_view info,
                                 size_t length) {
  static EVP_KDF* const kHkdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (kHkdf == nullptr) return OpenSslError("EVP_KDF_fetch(HKDF)");
  std::unique_ptr<EVP_KDF_CTX, void (*)(EVP_KDF_CTX*)> ctx(EVP_KDF_CTX_new(kHkdf),
                                                           EVP_KDF_CTX_free);
  if (!ctx) return OpenSslError("EVP_KDF_CTX_new");
  char digest[] = "SHA256";
  OSSL_PARAM params[5];
  int n = 0;
  params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<char*>(ikm.data()),
                                                  ikm.size());
  params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                                  const_cast<char*>(salt.data()), salt.size());
  params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
                                                  const_cast<char*>(info.data()), info.size());
  params[n] = OSSL_PARAM_construct_end();
  std::string out(length, '\0');
  if (EVP_KDF_derive(ctx.get(), U8(out), out.size(), params) != 1) {
    return OpenSslError("HKDF-SHA256");
  }
  return out;
}

std::string HmacSha256(std::string_view key, std::string_view data) {
  std::string out(32, '\0');
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), U8(data), data.size(), U8(out),
           &len) == nullptr ||
      len != out.size()) {
    std::abort();  // no HMAC-SHA256: nothing in the vault can be verified
  }
  return out;
}

absl::StatusOr<std::string> GcmSeal(std::string_view key, std::string_view nonce,
                                    std::string_view aad, std::string_view plaintext) {
  if (key.size() != kKeySize || nonce.size() != kGcmNonceSize) {
    return absl::InternalError("GcmSeal: bad key or nonce size");
  }
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return OpenSslError("EVP_CIPHER_CTX_new");
  std::string out(plaintext.size() + kGcmTagSize, '\0');
  int len = 0;
  if (EVP_EncryptInit_ex2(ctx.get(), Aes256Gcm(), U8(key), U8(nonce), nullptr) != 1 ||
      (!aad.empty() &&
       EVP_EncryptUpdate(ctx.get(), nullptr, &len, U8(aad), static_cast<int>(aad.size())) != 1) ||
      EVP_EncryptUpdate(ctx.get(), U8(out), &len, U8(plaintext),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), U8(out) + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kGcmTagSize,
                          U8(out) + plaintext.size()) != 1) {
    return OpenSslError("AES-256-GCM seal");
  }
  return out;
}

absl::StatusOr<std::string> GcmOpen(std::string_view key, std::string_view nonce,
                                    std::string_view aad, std::string_view sealed) {
  if (key.size() != kKeySize || nonce.size() != kGcmNonceSize) {
    return absl::InternalError("GcmOpen: bad key or nonce size");
  }
  if (sealed.size() < kGcmTagSize) return absl::DataLossError("sealed blob shorter than its tag");
  size_t n = sealed.size() - kGcmTagSize;
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return OpenSslError("EVP_CIPHER_CTX_new");
  std::string out(n, '\0');
  std::string tag(sealed.substr(n));
  int len = 0;
  if (EVP_DecryptInit_ex2(ctx.get(), Aes256Gcm(), U8(key), U8(nonce), nullptr) != 1 ||
      (!aad.empty() &&
       EVP_DecryptUpdate(ctx.get(), nullptr, &len, U8(aad), static_cast<int>(aad.size())) != 1) ||
      EVP_DecryptUpdate(ctx.get(), U8(out), &len, U8(sealed), static_cast<int>(n)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kGcmTagSize, tag.data()) != 1) {
    Wipe(out);
    return OpenSslError("AES-256-GCM open");
  }
  if (EVP_DecryptFinal_ex(ctx.get(), U8(out) + len, &len) != 1) {
    ERR_clear_error();
    Wipe(out);
    return absl::DataLossError("authentication tag mismatch");
  }
  return out;
}

Sha256Stream::Sha256Stream() : ctx_(EVP_MD_CTX_new()) {
  static EVP_MD* const kSha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (!ctx_ || kSha256 == nullptr || EVP_DigestInit_ex2(ctx_.get(), kSha256, nullptr) != 1) {
    std::abort();  // no SHA-256: nothing in the vault can be verified
  }
}
Sha256Stream::Sha256Stream(const Sha256Stream& other) : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_MD_CTX_copy_ex(ctx_.get(), other.ctx_.get()) != 1) std::abort();
}
Sha256Stream& Sha256Stream::operator=(const Sha256Stream& other) {
  if (this != &other && EVP_MD_CTX_copy_ex(ctx_.get(), other.ctx_.get()) != 1) std::abort();
  return *this;
}
void Sha256Stream::Update(std::string_view data) {
  if (!data.empty() && EVP_DigestUpdate(ctx_.get(), data.data(), data.size()) != 1) std::abort();
}
std::string Sha256Stream::Finish() {
  std::string out(32, '\0');
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx_.get(), U8(out), &len) != 1) std::abort();
  return out;
}

std::string DirName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

absl::Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return absl::UnavailableError(
        StrCat("cannot open directory ", dir, ": ", std::strerror(errno)));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0)
    return absl::UnavailableError(StrCat("fsync of ", dir, " failed: ", std::strerror(err)));
  return absl::OkStatus();
}

absl::Status MakeDirs(const std::string& path) {
  if (path.empty()) return absl::OkStatus();
  std::string cur;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t next = path.find('/', pos);
    if (next == std::string::npos) next = path.size();
    cur = path.substr(0, next);
    pos = next + 1;
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::UnavailableError(
          StrCat("cannot create directory ", cur, ": ", std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomic(const std::string& path, std::string_view data, uint32_t mode) {
  unsigned char rnd[6];
  if (RAND_bytes(rnd, sizeof(rnd)) != 1) std::abort();
  std::string tmp =
      StrCat(path, ".tmp.", common::HexEncode(std::string_view(reinterpret_cast<char*>(rnd), 6)));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0)
    return absl::UnavailableError(StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return absl::UnavailableError(StrCat("cannot write ", tmp, ": ", std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return absl::UnavailableError(StrCat("fsync of ", tmp, " failed: ", std::strerror(err)));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return absl::UnavailableError(
        StrCat("cannot rename ", tmp, " to ", path, ": ", std::strerror(err)));
  }
  return SyncDir(DirName(path));
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(StrCat(path, " does not exist"));
    return absl::UnavailableError(StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return absl::UnavailableError(StrCat("cannot read ", path, ": ", std::strerror(err)));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_size) {
      ::close(fd);
      return absl::InvalidArgumentError(StrCat(path, " is larger than ", max_size, " bytes"));
    }
  }
  ::close(fd);
  return out;
}

}  // namespace warden::vault::internal
