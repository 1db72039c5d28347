#include "audit/checkpoint.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "audit/segment.h"
#include "common/encoding.h"
#include "common/strings.h"

namespace warden::audit {

namespace checkpoint_internal {
void PkeyDeleter::operator()(evp_pkey_st* pkey) const { EVP_PKEY_free(pkey); }
}  // namespace checkpoint_internal

namespace {

using checkpoint_internal::PkeyPtr;
using common::StrCat;

constexpr size_t kRawPublicKeySize = 32;
// A PKCS#8 Ed25519 PEM is about 120 bytes; anything far larger is not our key file.
constexpr size_t kMaxKeyFileSize = 64 * 1024;
// An encoded checkpoint is about 300 bytes; the parser looks at nothing longer.
constexpr size_t kMaxCheckpointSize = 1024;

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;
struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* ctx) const { EVP_PKEY_CTX_free(ctx); }
};
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter>;

// OpenSSL's error queue is per thread; leaving entries behind would make a later, unrelated
// ERR_get_error() report our failure. Returns the last one's text for an error message.
std::string DrainOpenSslErrors() {
  std::string last;
  unsigned long code = 0;
  while ((code = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    last = buf;
  }
  return last;
}

absl::Status OpenSslError(std::string_view what) {
  std::string detail = DrainOpenSslErrors();
  return absl::InternalError(StrCat(what, " failed", detail.empty() ? "" : ": ", detail));
}

// Never prompts: an encrypted key file is refused, not a reason to block on a terminal.
int NoPassword(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*u*/) { return 0; }

std::string BioContents(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  if (len <= 0 || data == nullptr) return {};
  return std::string(data, static_cast<size_t>(len));
}

absl::StatusOr<std::string> RawPublicKeyOf(EVP_PKEY* pkey) {
  std::string raw(kRawPublicKeySize, '\0');
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(pkey, reinterpret_cast<unsigned char*>(raw.data()), &len) != 1 ||
      len != kRawPublicKeySize) {
    return OpenSslError("EVP_PKEY_get_raw_public_key");
  }
  return raw;
}

std::string KeyIdOf(std::string_view raw_public_key) {
  return common::HexEncode(common::Sha256(raw_public_key)).substr(0, kAuditKeyIdHexLength);
}

// ---- Strict standard base64 (RFC 4648 section 4, padded) ----

constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string Base64Encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) |
                 (static_cast<uint8_t>(bytes[i + 1]) << 8) | static_cast<uint8_t>(bytes[i + 2]);
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out.push_back(kBase64Alphabet[(v >> 6) & 63]);
    out.push_back(kBase64Alphabet[v & 63]);
  }
  size_t rest = bytes.size() - i;
  if (rest == 1) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out.append("==");
  } else if (rest == 2) {
    uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8);
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out.push_back(kBase64Alphabet[(v >> 6) & 63]);
    out.push_back('=');
  }
  return out;
}

int Base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Decodes exactly `size` bytes. Canonical form only: every other text that a lenient decoder
// would map to the same bytes (unused bits set, missing padding, whitespace) is refused, so that
// a checkpoint has one encoding and a changed byte can never go unnoticed.
std::optional<std::string> Base64DecodeExact(std::string_view text, size_t size) {
  if (text.size() != (size + 2) / 3 * 4) return std::nullopt;
  std::string out;
  out.reserve(size);
  uint32_t acc = 0;
  int bits = 0;
  size_t pad_from = size / 3 * 4 + (size % 3 == 0 ? 0 : size % 3 + 1);
  for (size_t i = 0; i < text.size(); ++i) {
    if (i >= pad_from) {
      if (text[i] != '=') return std::nullopt;
      continue;
    }
    int v = Base64Value(text[i]);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if (out.size() != size) return std::nullopt;
  if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;  // unused bits must be zero
  return out;
}

// Unsigned decimal, no sign, no leading zeros, at most `max`.
std::optional<uint64_t> ParseDecimal(std::string_view text, uint64_t max) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  if (text.size() > 1 && text[0] == '0') return std::nullopt;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (max - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

bool IsLowerHex(std::string_view text) {
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

absl::Status LineError(int line, std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(StrCat("checkpoint line ", line, " (", field, "): ", what));
}

absl::Status ErrnoStatus(int err, std::string_view what, const std::string& path) {
  return absl::ErrnoToStatus(err, StrCat(what, " ", path));
}

// Reads and parses an existing key file; `fd` is open on it and owned by the caller.
absl::StatusOr<PkeyPtr> ReadKeyFile(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, "stat audit key file", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        StrCat("audit key file ", path, " is not a regular file"));
  }
  // Threat: a key others can read lets them forge checkpoints that hide edits to the log; one
  // they can write lets them substitute their own key. Refuse rather than fix the mode: the key
  // may already have leaked, which an operator must decide about.
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return absl::FailedPreconditionError(
        StrCat("audit key file ", path, " has mode ", mode,
               ", which gives access to group or others; it must be 0600 (chmod 600, and "
               "replace the key if it may have been read)"));
  }
  if (st.st_size <= 0 || static_cast<uint64_t>(st.st_size) > kMaxKeyFileSize) {
    return absl::DataLossError(
        StrCat("audit key file ", path, " is empty or too large (", st.st_size, " bytes)"));
  }
  std::string contents(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < contents.size()) {
    ssize_t n = ::read(fd, contents.data() + got, contents.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "read audit key file", path);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  contents.resize(got);
  BioPtr bio(BIO_new_mem_buf(contents.data(), static_cast<int>(contents.size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  PkeyPtr pkey(PEM_read_bio_PrivateKey_ex(bio.get(), nullptr, NoPassword, nullptr, nullptr,
                                          nullptr));
  std::string detail = DrainOpenSslErrors();
  OPENSSL_cleanse(contents.data(), contents.size());
  if (!pkey) {
    return absl::DataLossError(StrCat("audit key file ", path,
                                      " does not hold an unencrypted PEM private key (", detail,
                                      ")"));
  }
  if (EVP_PKEY_is_a(pkey.get(), "ED25519") != 1) {
    return absl::DataLossError(StrCat("audit key file ", path, " does not hold an Ed25519 key"));
  }
  return pkey;
}

// The key file appears whole or not at all (a kill between create and write used to leave an
// empty key file, which every later start refuses as DataLoss); AlreadyExists when another
// process created it first.
absl::Status WriteNewKeyFile(const std::string& path, std::string_view pem) {
  return internal::PutWholeFile(path, pem, 0600, /*replace=*/false);
}

}  // namespace

// ---- AuditSigningKey ----

AuditSigningKey::AuditSigningKey(PkeyPtr pkey) : pkey_(std::move(pkey)) {}

absl::StatusOr<AuditSigningKey> AuditSigningKey::Generate() {
  PkeyPtr pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!pkey) return OpenSslError("EVP_PKEY_Q_keygen(ED25519)");
  absl::StatusOr<std::string> raw = RawPublicKeyOf(pkey.get());
  if (!raw.ok()) return raw.status();
  AuditSigningKey key(std::move(pkey));
  key.raw_public_key_ = *std::move(raw);
  key.key_id_ = KeyIdOf(key.raw_public_key_);
  return key;
}

absl::StatusOr<AuditSigningKey> AuditSigningKey::LoadOrCreate(const std::string& path) {
  // Two tries: when another process creates the file between our open and our O_EXCL create,
  // the second try loads theirs.
  for (int attempt = 0; attempt < 2; ++attempt) {
    int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
      absl::StatusOr<PkeyPtr> pkey = ReadKeyFile(fd, path);
      ::close(fd);
      if (!pkey.ok()) return pkey.status();
      absl::StatusOr<std::string> raw = RawPublicKeyOf(pkey->get());
      if (!raw.ok()) return raw.status();
      AuditSigningKey key(*std::move(pkey));
      key.raw_public_key_ = *std::move(raw);
      key.key_id_ = KeyIdOf(key.raw_public_key_);
      return key;
    }
    if (errno == ELOOP) {
      return absl::FailedPreconditionError(
          StrCat("audit key file ", path, " is a symbolic link; it must be a regular file"));
    }
    if (errno != ENOENT) return ErrnoStatus(errno, "open audit key file", path);

    absl::StatusOr<AuditSigningKey> key = Generate();
    if (!key.ok()) return key.status();
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio) return OpenSslError("BIO_new");
    if (PEM_write_bio_PKCS8PrivateKey(bio.get(), key->pkey_.get(), nullptr, nullptr, 0, nullptr,
                                      nullptr) != 1) {
      return OpenSslError("PEM_write_bio_PKCS8PrivateKey");
    }
    std::string pem = BioContents(bio.get());
    absl::Status written = WriteNewKeyFile(path, pem);
    OPENSSL_cleanse(pem.data(), pem.size());
    if (absl::IsAlreadyExists(written)) continue;
    if (!written.ok()) return written;
    return key;
  }
  return absl::UnavailableError(StrCat("audit key file ", path, " keeps appearing and vanishing"));
}

std::string AuditSigningKey::PublicKeyPem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), pkey_.get()) != 1) {
    DrainOpenSslErrors();
    return {};
  }
  return BioContents(bio.get());
}

absl::StatusOr<std::string> AuditSigningKey::Sign(std::string_view message) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) return OpenSslError("EVP_MD_CTX_new");
  // Ed25519 (pure, RFC 8032) takes no digest: the message is hashed inside the algorithm.
  if (EVP_DigestSignInit_ex(ctx.get(), nullptr, nullptr, nullptr, nullptr, pkey_.get(), nullptr) !=
      1) {
    return OpenSslError("EVP_DigestSignInit_ex");
  }
  std::string sig(kAuditSignatureSize, '\0');
  size_t len = sig.size();
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1 ||
      len != kAuditSignatureSize) {
    return OpenSslError("EVP_DigestSign");
  }
  return sig;
}

// ---- AuditVerifyingKey ----

AuditVerifyingKey::AuditVerifyingKey(PkeyPtr pkey) : pkey_(std::move(pkey)) {}

absl::StatusOr<AuditVerifyingKey> AuditVerifyingKey::FromPem(std::string_view pem) {
  if (pem.size() > kMaxKeyFileSize) return absl::InvalidArgumentError("public key PEM too large");
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  PkeyPtr pkey(PEM_read_bio_PUBKEY_ex(bio.get(), nullptr, NoPassword, nullptr, nullptr, nullptr));
  std::string detail = DrainOpenSslErrors();
  if (!pkey) {
    return absl::InvalidArgumentError(StrCat("audit public key is not a PEM public key (", detail,
                                             ")"));
  }
  if (EVP_PKEY_is_a(pkey.get(), "ED25519") != 1) {
    return absl::InvalidArgumentError("audit public key is not an Ed25519 key");
  }
  absl::StatusOr<std::string> raw = RawPublicKeyOf(pkey.get());
  if (!raw.ok()) return raw.status();
  AuditVerifyingKey key(std::move(pkey));
  key.key_id_ = KeyIdOf(*raw);
  return key;
}

AuditVerifyingKey AuditVerifyingKey::FromSigningKey(const AuditSigningKey& key) {
  // The private key object also verifies; sharing it (reference count) avoids a PEM round trip.
  EVP_PKEY_up_ref(key.pkey_.get());
  AuditVerifyingKey out{PkeyPtr(key.pkey_.get())};
  out.key_id_ = key.KeyId();
  return out;
}

absl::Status AuditVerifyingKey::Verify(std::string_view message, std::string_view signature) const {
  if (signature.size() != kAuditSignatureSize) {
    return absl::DataLossError(
        StrCat("signature is ", signature.size(), " bytes, not ", kAuditSignatureSize));
  }
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) return OpenSslError("EVP_MD_CTX_new");
  if (EVP_DigestVerifyInit_ex(ctx.get(), nullptr, nullptr, nullptr, nullptr, pkey_.get(),
                              nullptr) != 1) {
    return OpenSslError("EVP_DigestVerifyInit_ex");
  }
  int rc = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                            signature.size(),
                            reinterpret_cast<const unsigned char*>(message.data()),
                            message.size());
  DrainOpenSslErrors();
  if (rc != 1) return absl::DataLossError("signature does not verify");
  return absl::OkStatus();
}

// ---- Checkpoint ----

std::string Checkpoint::Body() const {
  return StrCat(kCheckpointHeader, "\n", seq, "\n", tree_size, "\n",
                Base64Encode(MerkleHashBytes(root)), "\n", time_ms, "\n",
                Base64Encode(MerkleHashBytes(prev)), "\n");
}

MerkleHash Checkpoint::BodyHash() const {
  std::string digest = common::Sha256(Body());
  MerkleHash out{};
  std::memcpy(out.data(), digest.data(), std::min(digest.size(), out.size()));
  return out;
}

std::string Checkpoint::Encode() const {
  return StrCat(Body(), "\nsig ", key_id, " ", Base64Encode(signature), "\n");
}

absl::StatusOr<Checkpoint> SignCheckpoint(const AuditSigningKey& key, uint64_t seq,
                                          uint64_t tree_size, const MerkleHash& root,
                                          int64_t time_ms, const MerkleHash& prev) {
  if (time_ms < 0) {
    return absl::InvalidArgumentError(StrCat("checkpoint time_ms ", time_ms, " is negative"));
  }
  Checkpoint cp;
  cp.seq = seq;
  cp.tree_size = tree_size;
  cp.root = root;
  cp.time_ms = time_ms;
  cp.prev = prev;
  cp.key_id = key.KeyId();
  absl::StatusOr<std::string> sig = key.Sign(cp.Body());
  if (!sig.ok()) return sig.status();
  cp.signature = *std::move(sig);
  return cp;
}

absl::StatusOr<Checkpoint> SignNextCheckpoint(const AuditSigningKey& key,
                                              const Checkpoint* previous, uint64_t tree_size,
                                              const MerkleHash& root, int64_t time_ms) {
  if (previous == nullptr) return SignCheckpoint(key, 0, tree_size, root, time_ms, MerkleHash{});
  return SignCheckpoint(key, previous->seq + 1, tree_size, root, time_ms, previous->BodyHash());
}

absl::StatusOr<Checkpoint> ParseCheckpoint(std::string_view text) {
  if (text.size() > kMaxCheckpointSize) {
    return absl::InvalidArgumentError(
        StrCat("checkpoint is ", text.size(), " bytes, more than ", kMaxCheckpointSize));
  }
  constexpr size_t kLines = 8;
  if (text.empty() || text.back() != '\n') {
    return absl::InvalidArgumentError("checkpoint does not end with a newline");
  }
  std::vector<std::string_view> lines;
  lines.reserve(kLines);
  std::string_view rest = text;
  while (!rest.empty()) {
    size_t nl = rest.find('\n');  // present: text ends with '\n'
    if (lines.size() == kLines) {
      return absl::InvalidArgumentError(StrCat("checkpoint has more than ", kLines, " lines"));
    }
    lines.push_back(rest.substr(0, nl));
    rest.remove_prefix(nl + 1);
  }
  if (lines.size() != kLines) {
    return absl::InvalidArgumentError(
        StrCat("checkpoint has ", lines.size(), " lines, not ", kLines));
  }

  if (lines[0] != kCheckpointHeader) {
    return LineError(1, "header", StrCat("not \"", kCheckpointHeader, "\""));
  }
  Checkpoint cp;
  std::optional<uint64_t> seq = ParseDecimal(lines[1], std::numeric_limits<uint64_t>::max());
  if (!seq) return LineError(2, "seq", "not a decimal number without sign or leading zeros");
  cp.seq = *seq;
  std::optional<uint64_t> size = ParseDecimal(lines[2], std::numeric_limits<uint64_t>::max());
  if (!size) return LineError(3, "tree_size", "not a decimal number without sign or leading zeros");
  cp.tree_size = *size;
  std::optional<std::string> root = Base64DecodeExact(lines[3], kMerkleHashSize);
  if (!root) return LineError(4, "root", "not canonical base64 of 32 bytes");
  std::memcpy(cp.root.data(), root->data(), kMerkleHashSize);
  std::optional<uint64_t> time = ParseDecimal(
      lines[4], static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
  if (!time) {
    return LineError(5, "time_ms",
                     "not a decimal number without sign or leading zeros within int64");
  }
  cp.time_ms = static_cast<int64_t>(*time);
  std::optional<std::string> prev = Base64DecodeExact(lines[5], kMerkleHashSize);
  if (!prev) return LineError(6, "prev", "not canonical base64 of 32 bytes");
  std::memcpy(cp.prev.data(), prev->data(), kMerkleHashSize);
  if (!lines[6].empty()) return LineError(7, "separator", "not empty");

  std::string_view sig_line = lines[7];
  constexpr std::string_view kSigPrefix = "sig ";
  if (sig_line.substr(0, kSigPrefix.size()) != kSigPrefix) {
    return LineError(8, "signature", "does not start with \"sig \"");
  }
  sig_line.remove_prefix(kSigPrefix.size());
  if (sig_line.size() < kAuditKeyIdHexLength + 1 || sig_line[kAuditKeyIdHexLength] != ' ' ||
      !IsLowerHex(sig_line.substr(0, kAuditKeyIdHexLength))) {
    return LineError(8, "signature", "key id is not 16 lowercase hex characters and a space");
  }
  cp.key_id = std::string(sig_line.substr(0, kAuditKeyIdHexLength));
  std::optional<std::string> sig =
      Base64DecodeExact(sig_line.substr(kAuditKeyIdHexLength + 1), kAuditSignatureSize);
  if (!sig) return LineError(8, "signature", "not canonical base64 of 64 bytes");
  cp.signature = *std::move(sig);
  return cp;
}

absl::Status VerifyCheckpoint(const Checkpoint& checkpoint, const AuditVerifyingKey& key) {
  if (checkpoint.key_id != key.KeyId()) {
    return absl::DataLossError(StrCat("signed by key ", checkpoint.key_id, ", not by the audit key ",
                                      key.KeyId()));
  }
  if (checkpoint.time_ms < 0) return absl::DataLossError("time_ms is negative");
  absl::Status s = key.Verify(checkpoint.Body(), checkpoint.signature);
  if (!s.ok()) return absl::DataLossError(StrCat("checkpoint ", std::string(s.message())));
  return absl::OkStatus();
}

absl::Status VerifyCheckpoint(const Checkpoint& checkpoint, std::string_view public_key_pem) {
  absl::StatusOr<AuditVerifyingKey> key = AuditVerifyingKey::FromPem(public_key_pem);
  if (!key.ok()) return key.status();
  return VerifyCheckpoint(checkpoint, *key);
}

absl::Status VerifyCheckpointChain(std::span<const Checkpoint> chain, const AuditVerifyingKey& key,
                                   const RootAtSizeFn& root_at) {
  for (size_t i = 0; i < chain.size(); ++i) {
    const Checkpoint& cp = chain[i];
    std::string where = StrCat("checkpoint seq ", cp.seq, " (position ", i, "): ");
    auto bad = [&](std::string_view what) { return absl::DataLossError(StrCat(where, what)); };
    // The signature first: nothing else in a checkpoint is worth reporting until we know the key
    // holder wrote it.
    if (absl::Status s = VerifyCheckpoint(cp, key); !s.ok()) {
      return absl::Status(s.code(), StrCat(where, std::string(s.message())));
    }
    if (cp.seq != i) {
      return bad(StrCat("expected seq ", i,
                        ": a checkpoint is missing, duplicated or out of order"));
    }
    if (i == 0) {
      if (cp.prev != MerkleHash{}) return bad("the first checkpoint's prev is not zero");
    } else {
      const Checkpoint& before = chain[i - 1];
      if (cp.prev != before.BodyHash()) {
        return bad(StrCat("prev is not the hash of checkpoint seq ", before.seq,
                          ": the chain was edited"));
      }
      if (cp.tree_size < before.tree_size) {
        return bad(StrCat("tree_size ", cp.tree_size, " is smaller than the previous checkpoint's ",
                          before.tree_size));
      }
      if (cp.time_ms < before.time_ms) {
        return bad(StrCat("time_ms ", cp.time_ms, " is earlier than the previous checkpoint's ",
                          before.time_ms));
      }
    }
    absl::StatusOr<MerkleHash> root = root_at(cp.tree_size);
    if (!root.ok()) {
      return absl::Status(root.status().code(),
                          StrCat(where, std::string(root.status().message())));
    }
    if (*root != cp.root) {
      return bad(StrCat("root does not match the log's first ", cp.tree_size,
                        " entries: an entry before ", cp.tree_size,
                        " was edited, removed or reordered"));
    }
  }
  return absl::OkStatus();
}

absl::Status VerifyCheckpointChain(std::span<const Checkpoint> chain, const AuditVerifyingKey& key,
                                   const MerkleTree& tree) {
  return VerifyCheckpointChain(chain, key, [&tree](uint64_t size) -> absl::StatusOr<MerkleHash> {
    if (size > tree.size()) {
      return absl::DataLossError(StrCat("tree_size ", size, " exceeds the log's ", tree.size(),
                                        " entries: the log was truncated"));
    }
    return tree.RootAt(size);
  });
}

}  // namespace warden::audit
