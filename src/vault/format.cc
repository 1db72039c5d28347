#include "vault/format.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "common/status.h"
#include "common/strings.h"

namespace warden::vault {

using common::StrCat;

namespace {

constexpr char kMagic[4] = {'G', 'W', 'V', 'O'};
constexpr uint8_t kFormatVersion = 1;
constexpr uint8_t kAlgAes256GcmStream = 1;
constexpr size_t kFixedHeader = 4 + 1 + 1 + 2 + 4 + 32;  // magic..salt
constexpr size_t kMinHeader = kFixedHeader + 1 + 1 + 1 + 1 + 8;
constexpr size_t kSaltSize = 32;
constexpr size_t kPrefixSize = 7;  // 7 + 4 (counter) + 1 (final flag) = 12-byte GCM nonce

const EVP_CIPHER* Aes256Gcm() {
  static EVP_CIPHER* const kCipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return kCipher;
}

void PutBe(std::string& out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t GetBe(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | p[i];
  return v;
}
void SetBe(char* p, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) {
    p[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

bool IsPowerOfTwo(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

// K (32 bytes) || P (7 bytes) from the data key. Binding tenant, object id and version into the
// derivation means a chunk moved to another object is checked under a different key.
absl::StatusOr<std::string> DeriveChunkKeys(std::string_view data_key, const ObjectHeader& h) {
  if (data_key.size() != internal::kKeySize) {
    return absl::InvalidArgumentError("data key must be 32 bytes");
  }
  return internal::Hkdf(
      data_key, h.salt,
      StrCat("gpuwarden/vault/v1 chunk-key|", h.tenant, "|", h.object_id, "|", h.version),
      internal::kKeySize + kPrefixSize);
}

// The key of the content digest tag: a separate HKDF output of the same data key (never a GCM key).
absl::StatusOr<std::string> DeriveDigestKey(std::string_view data_key, const ObjectHeader& h) {
  return internal::Hkdf(
      data_key, h.salt,
      StrCat("gpuwarden/vault/v1 digest-key|", h.tenant, "|", h.object_id, "|", h.version),
      internal::kKeySize);
}

std::string DigestTagOf(std::string_view digest_key, std::string_view header_bytes, uint64_t size,
                        std::string_view sha256) {
  std::string in = "gpuwarden/vault/v1 content-digest|";
  in.append(header_bytes);
  PutBe(in, size, 8);
  in.append(sha256);
  return internal::HmacSha256(digest_key, in);
}

void MakeNonce(char* nonce, std::string_view prefix, uint64_t index, bool final) {
  std::memcpy(nonce, prefix.data(), kPrefixSize);
  SetBe(nonce + kPrefixSize, index, 4);
  nonce[11] = final ? 1 : 0;
}

bool ComponentChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

}  // namespace

absl::Status ValidateComponent(std::string_view what, std::string_view value) {
  if (value.empty() || value.size() > 63) {
    return absl::InvalidArgumentError(StrCat(what, " must be 1-63 characters"));
  }
  for (char c : value) {
    if (!ComponentChar(c)) {
      return absl::InvalidArgumentError(
          StrCat(what, " \"", value, "\" may contain only letters, digits, '.', '_' and '-'"));
    }
  }
  if (value[0] == '.' || value.find("..") != std::string_view::npos) {
    return absl::InvalidArgumentError(
        StrCat(what, " \"", value, "\" must not start with '.' or contain \"..\""));
  }
  return absl::OkStatus();
}

absl::Status ValidateObjectName(std::string_view name) {
  if (name.empty() || name.size() > 255) {
    return absl::InvalidArgumentError("object name must be 1-255 characters");
  }
  for (char c : name) {
    if (!ComponentChar(c) && c != '/') {
      return absl::InvalidArgumentError(
          "object name may contain only letters, digits, '.', '_', '-' and '/'");
    }
  }
  if (name.front() == '/' || name.back() == '/') {
    return absl::InvalidArgumentError("object name must not start or end with '/'");
  }
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string_view::npos) end = name.size();
    std::string_view seg = name.substr(start, end - start);
    if (seg.empty()) return absl::InvalidArgumentError("object name must not contain \"//\"");
    if (seg == "." || seg == "..") {
      return absl::InvalidArgumentError(
          StrCat("object name must not contain a \"", seg, "\" segment (path traversal)"));
    }
    start = end + 1;
  }
  return absl::OkStatus();
}

std::string EncodeHeader(const ObjectHeader& h) {
  std::string out(kMagic, 4);
  out.push_back(static_cast<char>(kFormatVersion));
  out.push_back(static_cast<char>(kAlgAes256GcmStream));
  size_t len = kFixedHeader + 1 + h.tenant.size() + 1 + h.object_id.size() + 8;
  PutBe(out, len, 2);
  PutBe(out, h.chunk_size, 4);
  out.append(h.salt);
  out.push_back(static_cast<char>(h.tenant.size()));
  out.append(h.tenant);
  out.push_back(static_cast<char>(h.object_id.size()));
  out.append(h.object_id);
  PutBe(out, h.version, 8);
  return out;
}

absl::StatusOr<ObjectHeader> ParseHeader(std::string_view bytes, size_t* consumed) {
  auto bad = [](std::string_view why) {
    return absl::DataLossError(StrCat("object header: ", why));
  };
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t have = std::min(bytes.size(), kMaxHeaderSize);
  if (have >= 4 && std::memcmp(p, kMagic, 4) != 0) return bad("bad magic (not a vault object)");
  if (have < 8) return absl::UnavailableError("need more bytes for the object header");
  if (p[4] != kFormatVersion) return bad(StrCat("unsupported format version ", int{p[4]}));
  if (p[5] != kAlgAes256GcmStream) return bad(StrCat("unsupported algorithm ", int{p[5]}));
  size_t len = GetBe(p + 6, 2);
  if (len < kMinHeader || len > kMaxHeaderSize) return bad(StrCat("bad header length ", len));
  if (have < len) return absl::UnavailableError("need more bytes for the object header");
  ObjectHeader h;
  h.chunk_size = static_cast<uint32_t>(GetBe(p + 8, 4));
  if (!IsPowerOfTwo(h.chunk_size) || h.chunk_size < kMinChunkSize || h.chunk_size > kMaxChunkSize) {
    return bad(StrCat("bad chunk size ", h.chunk_size));
  }
  h.salt.assign(bytes.data() + 12, kSaltSize);
  size_t pos = kFixedHeader;
  auto read_component = [&](std::string_view what, std::string& out) -> absl::Status {
    if (pos >= len) return bad(StrCat(what, " missing"));
    size_t n = p[pos++];
    if (n == 0 || pos + n > len) return bad(StrCat(what, " length out of range"));
    out.assign(bytes.data() + pos, n);
    pos += n;
    absl::Status s = ValidateComponent(what, out);
    if (!s.ok()) return bad(std::string(s.message()));
    return absl::OkStatus();
  };
  WARDEN_RETURN_IF_ERROR(read_component("tenant", h.tenant));
  WARDEN_RETURN_IF_ERROR(read_component("object id", h.object_id));
  if (pos + 8 != len) return bad("length does not match its fields");
  h.version = GetBe(p + pos, 8);
  if (h.version == 0) return bad("version 0");
  *consumed = len;
  return h;
}

// ---- ObjectEncryptor ----

ObjectEncryptor::~ObjectEncryptor() {
  if (!buf_.empty()) OPENSSL_cleanse(buf_.data(), buf_.size());
  internal::Wipe(digest_key_);
}

std::string ObjectEncryptor::DigestTag(uint64_t size, std::string_view sha256) const {
  return DigestTagOf(digest_key_, header_bytes_, size, sha256);
}

absl::Status ObjectEncryptor::Init(std::string_view data_key, const ObjectHeader& header,
                                   ByteSink sink) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", header.tenant));
  WARDEN_RETURN_IF_ERROR(ValidateComponent("object id", header.object_id));
  if (header.salt.size() != kSaltSize) return absl::InvalidArgumentError("salt must be 32 bytes");
  if (header.version == 0) return absl::InvalidArgumentError("version must be >= 1");
  if (!IsPowerOfTwo(header.chunk_size) || header.chunk_size < kMinChunkSize ||
      header.chunk_size > kMaxChunkSize) {
    return absl::InvalidArgumentError(
        StrCat("chunk size ", header.chunk_size, " must be a power of two in 4 KiB..16 MiB"));
  }
  WARDEN_ASSIGN_OR_RETURN(std::string keys, DeriveChunkKeys(data_key, header));
  WARDEN_ASSIGN_OR_RETURN(digest_key_, DeriveDigestKey(data_key, header));
  header_bytes_ = EncodeHeader(header);
  aad_ = header_bytes_ + std::string(8, '\0');
  prefix_ = keys.substr(internal::kKeySize);
  ctx_.reset(EVP_CIPHER_CTX_new());
  if (!ctx_ || EVP_EncryptInit_ex2(ctx_.get(), Aes256Gcm(),
                                   reinterpret_cast<const unsigned char*>(keys.data()), nullptr,
                                   nullptr) != 1) {
    internal::Wipe(keys);
    return internal::OpenSslError("AES-256-GCM init");
  }
  internal::Wipe(keys);
  chunk_size_ = header.chunk_size;
  buf_.assign(chunk_size_, '\0');
  out_.assign(chunk_size_ + kChunkTagSize, '\0');
  sink_ = std::move(sink);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ObjectEncryptor>> ObjectEncryptor::Create(std::string_view data_key,
                                                                         const ObjectHeader& header,
                                                                         ByteSink sink,
                                                                         bool hash_plaintext) {
  std::unique_ptr<ObjectEncryptor> e(new ObjectEncryptor());
  WARDEN_RETURN_IF_ERROR(e->Init(data_key, header, std::move(sink)));
  e->hash_on_ = hash_plaintext;
  WARDEN_RETURN_IF_ERROR(e->sink_(e->header_bytes_));
  return e;
}

absl::Status ObjectEncryptor::Seal(const char* data, size_t len, bool final) {
  // The counter is the data key's usage counter: past 2^32 chunks a nonce would repeat.
  if (next_chunk_ >= kMaxChunks) {
    return absl::ResourceExhaustedError("object has reached 2^32 chunks under one data key");
  }
  char nonce[internal::kGcmNonceSize];
  MakeNonce(nonce, prefix_, next_chunk_, final);
  SetBe(aad_.data() + header_bytes_.size(), next_chunk_, 8);
  auto* out = reinterpret_cast<unsigned char*>(out_.data());
  int n = 0;
  int fin = 0;
  if (EVP_EncryptInit_ex(ctx_.get(), nullptr, nullptr, nullptr,
                         reinterpret_cast<const unsigned char*>(nonce)) != 1 ||
      EVP_EncryptUpdate(ctx_.get(), nullptr, &n,
                        reinterpret_cast<const unsigned char*>(aad_.data()),
                        static_cast<int>(aad_.size())) != 1 ||
      EVP_EncryptUpdate(ctx_.get(), out, &n, reinterpret_cast<const unsigned char*>(data),
                        static_cast<int>(len)) != 1 ||
      EVP_EncryptFinal_ex(ctx_.get(), out + n, &fin) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx_.get(), EVP_CTRL_GCM_GET_TAG, kChunkTagSize, out + len) != 1) {
    return internal::OpenSslError("AES-256-GCM chunk seal");
  }
  ++next_chunk_;
  return sink_(std::string_view(out_.data(), len + kChunkTagSize));
}

absl::Status ObjectEncryptor::Update(std::string_view p) {
  if (finished_) return absl::FailedPreconditionError("encryptor already finished");
  if (hash_on_) hash_.Update(p);
  plaintext_bytes_ += p.size();
  while (!p.empty()) {
    if (buf_len_ == chunk_size_) {  // more data follows a full chunk: it is not the final one
      WARDEN_RETURN_IF_ERROR(Seal(buf_.data(), buf_len_, false));
      buf_len_ = 0;
    }
    if (buf_len_ == 0 && p.size() > chunk_size_) {  // seal straight from the caller's buffer
      WARDEN_RETURN_IF_ERROR(Seal(p.data(), chunk_size_, false));
      p.remove_prefix(chunk_size_);
      continue;
    }
    size_t n = std::min(p.size(), chunk_size_ - buf_len_);
    std::memcpy(buf_.data() + buf_len_, p.data(), n);
    buf_len_ += n;
    p.remove_prefix(n);
  }
  return absl::OkStatus();
}

absl::Status ObjectEncryptor::WriteHeldAhead() {
  if (finished_) return absl::FailedPreconditionError("encryptor already finished");
  if (buf_len_ != chunk_size_) return absl::OkStatus();  // a partial chunk is always the final one
  WARDEN_RETURN_IF_ERROR(Seal(buf_.data(), buf_len_, false));
  ahead_ = next_chunk_;
  --next_chunk_;  // sealed again (not final, or final) when its fate is known
  return absl::OkStatus();
}

absl::Status ObjectEncryptor::Finish() {
  if (finished_) return absl::FailedPreconditionError("encryptor already finished");
  finished_ = true;
  WARDEN_RETURN_IF_ERROR(Seal(buf_.data(), buf_len_, true));
  buf_len_ = 0;
  if (hash_on_) sha256_ = hash_.Finish();
  return absl::OkStatus();
}

// ---- ObjectDecryptor ----

ObjectDecryptor::~ObjectDecryptor() {
  internal::Wipe(data_key_);
  internal::Wipe(digest_key_);
  if (!plain_.empty()) OPENSSL_cleanse(plain_.data(), plain_.size());
}

absl::StatusOr<std::unique_ptr<ObjectDecryptor>> ObjectDecryptor::Create(std::string_view data_key,
                                                                         Expect expect,
                                                                         ByteSink sink,
                                                                         bool expect_final,
                                                                         bool hash_plaintext) {
  if (data_key.size() != internal::kKeySize) {
    return absl::InvalidArgumentError("data key must be 32 bytes");
  }
  std::unique_ptr<ObjectDecryptor> d(new ObjectDecryptor());
  d->data_key_ = std::string(data_key);
  d->expect_ = std::move(expect);
  d->sink_ = std::move(sink);
  d->expect_final_ = expect_final;
  d->hash_on_ = hash_plaintext;
  return d;
}

absl::Status ObjectDecryptor::Fail(absl::Status s) {
  failed_ = s;
  if (!plain_.empty()) OPENSSL_cleanse(plain_.data(), plain_.size());
  return s;
}

absl::Status ObjectDecryptor::OpenHeld(bool final) {
  WARDEN_RETURN_IF_ERROR(Open(held_.data(), held_len_, final));
  held_len_ = 0;
  return absl::OkStatus();
}

absl::Status ObjectDecryptor::Open(const char* data, size_t size, bool final) {
  if (size < kChunkTagSize) {
    return Fail(absl::DataLossError(
        StrCat("object ", expect_.object_id, " is truncated at chunk ", next_chunk_)));
  }
  if (next_chunk_ >= kMaxChunks) return Fail(absl::DataLossError("more than 2^32 chunks"));
  size_t len = size - kChunkTagSize;
  char nonce[internal::kGcmNonceSize];
  MakeNonce(nonce, prefix_, next_chunk_, final);
  SetBe(aad_.data() + aad_.size() - 8, next_chunk_, 8);
  auto* out = reinterpret_cast<unsigned char*>(plain_.data());
  int n = 0;
  int fin = 0;
  if (EVP_DecryptInit_ex(ctx_.get(), nullptr, nullptr, nullptr,
                         reinterpret_cast<const unsigned char*>(nonce)) != 1 ||
      EVP_DecryptUpdate(ctx_.get(), nullptr, &n,
                        reinterpret_cast<const unsigned char*>(aad_.data()),
                        static_cast<int>(aad_.size())) != 1 ||
      EVP_DecryptUpdate(ctx_.get(), out, &n, reinterpret_cast<const unsigned char*>(data),
                        static_cast<int>(len)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx_.get(), EVP_CTRL_GCM_SET_TAG, kChunkTagSize,
                          const_cast<char*>(data) + len) != 1) {
    return Fail(internal::OpenSslError("AES-256-GCM chunk open"));
  }
  if (EVP_DecryptFinal_ex(ctx_.get(), out + n, &fin) != 1) {
    ERR_clear_error();
    // The unverified plaintext is wiped, never handed out.
    OPENSSL_cleanse(plain_.data(), len);
    return Fail(absl::DataLossError(
        StrCat("integrity check failed at chunk ", next_chunk_, " of object ", expect_.object_id,
               final ? " (as the final chunk)" : "",
               ": the object was altered, truncated, reordered or does not belong here")));
  }
  ++next_chunk_;
  plaintext_bytes_ += len;
  std::string_view chunk(plain_.data(), len);
  if (hash_on_) hash_.Update(chunk);
  absl::Status s = sink_(chunk);
  if (!s.ok()) return Fail(s);
  return absl::OkStatus();
}

absl::Status ObjectDecryptor::Update(std::string_view p) {
  if (!failed_.ok()) return failed_;
  if (finished_) return Fail(absl::FailedPreconditionError("decryptor already finished"));
  std::string pending;
  if (!have_header_) {
    size_t take = std::min(p.size(), kMaxHeaderSize - header_buf_.size());
    header_buf_.append(p.data(), take);
    p.remove_prefix(take);
    size_t consumed = 0;
    auto h = ParseHeader(header_buf_, &consumed);
    if (absl::IsUnavailable(h.status())) {
      if (header_buf_.size() >= kMaxHeaderSize) return Fail(absl::DataLossError("header too long"));
      return absl::OkStatus();
    }
    if (!h.ok()) return Fail(h.status());
    if (h->tenant != expect_.tenant || h->object_id != expect_.object_id ||
        h->version != expect_.version) {
      return Fail(absl::DataLossError(
          StrCat("object header names tenant ", h->tenant, " object ", h->object_id, " version ",
                 h->version, ", expected tenant ", expect_.tenant, " object ", expect_.object_id,
                 " version ", expect_.version, " (ciphertext moved between objects)")));
    }
    header_ = std::move(*h);
    auto keys = DeriveChunkKeys(data_key_, header_);
    auto digest_key = DeriveDigestKey(data_key_, header_);
    internal::Wipe(data_key_);
    if (!keys.ok()) return Fail(keys.status());
    if (!digest_key.ok()) {
      internal::Wipe(*keys);
      return Fail(digest_key.status());
    }
    digest_key_ = std::move(*digest_key);
    aad_ = header_buf_.substr(0, consumed) + std::string(8, '\0');
    prefix_ = keys->substr(internal::kKeySize);
    ctx_.reset(EVP_CIPHER_CTX_new());
    if (!ctx_ || EVP_DecryptInit_ex2(ctx_.get(), Aes256Gcm(),
                                     reinterpret_cast<const unsigned char*>(keys->data()), nullptr,
                                     nullptr) != 1) {
      internal::Wipe(*keys);
      return Fail(internal::OpenSslError("AES-256-GCM init"));
    }
    internal::Wipe(*keys);
    held_.assign(header_.chunk_size + kChunkTagSize, '\0');
    plain_.assign(header_.chunk_size, '\0');
    have_header_ = true;
    pending = header_buf_.substr(consumed);
    header_buf_.clear();
    WARDEN_RETURN_IF_ERROR(Update(pending));
  }
  const size_t cap = held_.size();
  while (!p.empty()) {
    if (held_len_ == cap) WARDEN_RETURN_IF_ERROR(OpenHeld(false));
    if (held_len_ == 0 && p.size() > cap) {  // more follows: not final; open in place, no copy
      WARDEN_RETURN_IF_ERROR(Open(p.data(), cap, false));
      p.remove_prefix(cap);
      continue;
    }
    size_t n = std::min(cap - held_len_, p.size());
    std::memcpy(held_.data() + held_len_, p.data(), n);
    held_len_ += n;
    p.remove_prefix(n);
  }
  return absl::OkStatus();
}

absl::Status ObjectDecryptor::VerifyDigestTag(uint64_t size, std::string_view sha256,
                                              std::string_view tag) const {
  if (!have_header_) {
    return absl::FailedPreconditionError("VerifyDigestTag needs the object header fed first");
  }
  std::string want =
      DigestTagOf(digest_key_, std::string_view(aad_.data(), aad_.size() - 8), size, sha256);
  if (tag.size() != want.size() || CRYPTO_memcmp(tag.data(), want.data(), want.size()) != 0) {
    return absl::DataLossError(
        StrCat("object ", expect_.object_id, " version ", expect_.version,
               ": the recorded size and SHA-256 do not match their digest tag (metadata altered)"));
  }
  return absl::OkStatus();
}

absl::Status ObjectDecryptor::OpenChunkAt(uint64_t index, bool final, std::string_view sealed) {
  if (!failed_.ok()) return failed_;
  if (!have_header_ || held_len_ != 0) {
    return absl::FailedPreconditionError("OpenChunkAt needs exactly the header fed first");
  }
  if (sealed.size() < kChunkTagSize || sealed.size() > header_.chunk_size + kChunkTagSize ||
      (!final && sealed.size() != header_.chunk_size + kChunkTagSize)) {
    return Fail(absl::DataLossError(StrCat("chunk ", index, " of object ", expect_.object_id,
                                           " has the wrong size ", sealed.size())));
  }
  if (index >= kMaxChunks) return Fail(absl::DataLossError("chunk index beyond 2^32"));
  hash_on_ = false;
  next_chunk_ = index;
  return Open(sealed.data(), sealed.size(), final);
}

absl::Status ObjectDecryptor::Finish() {
  if (!failed_.ok()) return failed_;
  if (finished_) return Fail(absl::FailedPreconditionError("decryptor already finished"));
  finished_ = true;
  if (!have_header_) {
    return Fail(
        absl::DataLossError(StrCat("object ", expect_.object_id, " has a truncated header")));
  }
  if (expect_final_) {
    if (held_len_ == 0) {
      return Fail(absl::DataLossError(
          StrCat("object ", expect_.object_id, " is truncated: no final chunk")));
    }
    WARDEN_RETURN_IF_ERROR(OpenHeld(true));
    if (hash_on_) sha256_ = hash_.Finish();
    return absl::OkStatus();
  }
  if (held_len_ == held_.size()) return OpenHeld(false);
  if (held_len_ != 0) return Fail(absl::DataLossError("partial chunk at the end of a prefix"));
  return absl::OkStatus();
}

}  // namespace warden::vault
