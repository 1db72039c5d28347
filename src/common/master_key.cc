#include "common/master_key.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common/encoding.h"
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

void Wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

// Accepts exactly 64 hex digits, optionally followed by one newline.
std::optional<std::string> KeyFromHexText(std::string text) {
  if (!text.empty() && text.back() == '\n') text.pop_back();
  if (!text.empty() && text.back() == '\r') text.pop_back();
  std::optional<std::string> raw;
  if (text.size() == 2 * MasterKey::kKeyBytes) raw = HexDecode(text);
  Wipe(text);
  return raw;
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

MasterKey::~MasterKey() { Wipe(key_); }

absl::StatusOr<MasterKey> MasterKey::FromFile(const std::string& path) {
  // O_NOFOLLOW: a symlink planted in the data dir must not redirect us to another file.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        StrCat("cannot open master key file ", path, ": ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(StrCat("cannot stat master key file ", path));
  }
  // Checked on the open descriptor, so the file cannot be swapped between check and read.
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(StrCat("master key file ", path, " is not a regular file"));
  }
  if (st.st_uid != ::geteuid()) {
    ::close(fd);
    return absl::FailedPreconditionError(StrCat("master key file ", path, " is owned by uid ",
                                                st.st_uid, ", not by this process (uid ",
                                                ::geteuid(), ")"));
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(
        StrCat("master key file ", path, " has mode ", ModeString(st.st_mode),
               ": it must not be accessible to group or others (chmod 600 ", path, ")"));
  }
  std::string data(200, '\0');
  ssize_t n = ::read(fd, data.data(), data.size());
  ::close(fd);
  if (n < 0) return absl::FailedPreconditionError(StrCat("cannot read master key file ", path));
  data.resize(static_cast<size_t>(n));
  if (data.size() == kKeyBytes) return MasterKey(std::move(data));
  auto raw = KeyFromHexText(std::move(data));
  if (!raw) {
    return absl::FailedPreconditionError(StrCat(
        "master key file ", path, " must hold 32 raw bytes or 64 hex digits, got ", n, " bytes"));
  }
  return MasterKey(std::move(*raw));
}

absl::StatusOr<MasterKey> MasterKey::FromCommand(const std::vector<std::string>& argv,
                                                 int timeout_ms) {
  if (argv.empty() || argv[0].empty()) {
    return absl::InvalidArgumentError("master key command is empty");
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return absl::FailedPreconditionError(StrCat("master key command: pipe: ", std::strerror(errno)));
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return absl::FailedPreconditionError(StrCat("master key command: fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    // Only async-signal-safe calls here: the parent may have other threads.
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::dup2(fds[1], STDOUT_FILENO);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  std::string out;
  char buf[512];
  int waited = 0;
  bool timed_out = false;
  while (true) {
    struct pollfd p {
      fds[0], POLLIN, 0
    };
    int r = ::poll(&p, 1, 100);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) {
      waited += 100;
      if (waited >= timeout_ms) {
        timed_out = true;
        break;
      }
      continue;
    }
    ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > 4096) break;  // no key is this long; stop reading
  }
  ::close(fds[0]);
  OPENSSL_cleanse(buf, sizeof(buf));
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    Wipe(out);
    return absl::FailedPreconditionError(
        StrCat("master key command ", argv[0], " did not finish within ", timeout_ms, " ms"));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    Wipe(out);
    std::string how = !WIFEXITED(status)              ? std::string("killed by a signal")
                      : WEXITSTATUS(status) == 127 ? std::string("exit status 127: not found or not executable")
                                                   : StrCat("exit status ", WEXITSTATUS(status));
    return absl::FailedPreconditionError(StrCat("master key command ", argv[0], " failed (", how, ")"));
  }
  auto raw = KeyFromHexText(std::move(out));
  if (!raw) {
    return absl::FailedPreconditionError(
        StrCat("master key command ", argv[0], " must print exactly 64 hex digits"));
  }
  return MasterKey(std::move(*raw));
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
