// The vault's object format: a versioned header followed by AES-256-GCM chunks in a STREAM-style
// construction (Hoang, Reyhanitabar, Rogaway, Vizar 2015). Layout and rationale in README.md.
//
// Each chunk i is sealed with key K and nonce P || BE32(i) || final-flag, where K and the 7-byte
// prefix P are derived by HKDF-SHA256 from the object's data key, the header's random salt and
// the (tenant, object id, version) triple; the associated data is the complete header followed
// by BE64(i). So a chunk cannot be reordered, dropped, duplicated, truncated, appended after the
// final chunk, or moved to another object, version or tenant without an authentication failure.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vault/crypto.h"

namespace warden::vault {

inline constexpr uint32_t kDefaultChunkSize = 64 * 1024;
inline constexpr uint32_t kMinChunkSize = 4 * 1024;
inline constexpr uint32_t kMaxChunkSize = 16 * 1024 * 1024;
inline constexpr size_t kChunkTagSize = 16;
inline constexpr size_t kMaxHeaderSize = 512;
// STREAM's 32-bit counter: at most 2^32 chunks under one data key (this is the data key's usage
// limit; each chunk is one GCM invocation under a unique nonce).
inline constexpr uint64_t kMaxChunks = uint64_t{1} << 32;

// Tenant and object ids: 1-63 of [A-Za-z0-9._-], not starting with '.', no "..".
absl::Status ValidateComponent(std::string_view what, std::string_view value);
// Object names: 1-255 bytes of [A-Za-z0-9._-/], '/'-separated segments that are non-empty and
// not "." or ".."; no leading or trailing '/'. Names never become file-system paths (objects are
// stored under their ids), but are refused anyway so that a name is safe wherever it is shown or
// later used (archive extraction, mount points). InvalidArgument names the rule broken.
absl::Status ValidateObjectName(std::string_view name);

struct ObjectHeader {
  uint32_t chunk_size = kDefaultChunkSize;
  std::string salt;  // 32 random bytes
  std::string tenant;
  std::string object_id;
  uint64_t version = 0;
};

// Encodes a header (the caller validated its fields).
std::string EncodeHeader(const ObjectHeader& header);
// Parses a header from the start of `bytes`. On success `*consumed` is the header's length.
// Unavailable("need more bytes") when `bytes` is a valid but incomplete prefix; DataLoss naming
// the field for anything malformed. Reads nothing beyond kMaxHeaderSize.
absl::StatusOr<ObjectHeader> ParseHeader(std::string_view bytes, size_t* consumed);

// Receives output; an error stops the stream and is returned by the caller's call.
using ByteSink = std::function<absl::Status(std::string_view)>;

// Streaming encryptor: constant memory (one chunk). Not thread-safe.
class ObjectEncryptor {
 public:
  // Writes the header to `sink` first. `data_key` is 32 bytes. With `hash_plaintext` the
  // SHA-256 of all plaintext is available after Finish().
  static absl::StatusOr<std::unique_ptr<ObjectEncryptor>> Create(std::string_view data_key,
                                                                 const ObjectHeader& header,
                                                                 ByteSink sink,
                                                                 bool hash_plaintext = true);
  ~ObjectEncryptor();

  absl::Status Update(std::string_view plaintext);
  // Seals the buffered tail as the final chunk (possibly empty). No Update afterwards.
  absl::Status Finish();
  // Also writes the chunk kept back, when it is full, sealed as not final, and keeps it: more
  // data seals it again as not final (the same bytes: same key, nonce and plaintext) and
  // Finish() as the final chunk (its own nonce). The caller's sink must write that second
  // sealing over the first (a resumed upload seeks its file back by one sealed chunk). So a
  // prefix of whole chunks is all on the sink while the last may still become the final one.
  absl::Status WriteHeldAhead();
  // How many chunks reached the sink (for resumable uploads: the durable prefix). Update keeps
  // the last full chunk back (it may be the final one) unless WriteHeldAhead wrote it.
  uint64_t chunks_written() const { return next_chunk_ > ahead_ ? next_chunk_ : ahead_; }
  uint64_t plaintext_bytes() const { return plaintext_bytes_; }
  // Bytes of plaintext held back in the buffer (not yet sealed).
  size_t buffered() const { return buf_len_; }
  // Raw SHA-256 of the plaintext; valid after Finish() with hashing on.
  const std::string& sha256() const { return sha256_; }
  // The content digest tag (32 bytes): HMAC-SHA256, under a key derived from the data key, over
  // the header, the plaintext size and its raw SHA-256. Recorded next to the size and hash, it
  // lets a reader that authenticated the chunks trust the recorded hash without re-hashing
  // (README.md "Content digest tag"). The caller passes the hash of exactly the plaintext it fed.
  std::string DigestTag(uint64_t size, std::string_view sha256) const;

 private:
  ObjectEncryptor() = default;
  absl::Status Init(std::string_view data_key, const ObjectHeader& header, ByteSink sink);
  absl::Status Seal(const char* data, size_t len, bool final);

  std::string header_bytes_;
  std::string aad_;  // header || BE64(index); the index part rewritten per chunk
  std::string prefix_;
  std::string digest_key_;
  internal::CipherCtxPtr ctx_;
  ByteSink sink_;
  std::string buf_;
  size_t buf_len_ = 0;
  std::string out_;
  uint32_t chunk_size_ = 0;
  uint64_t next_chunk_ = 0;
  uint64_t ahead_ = 0;  // chunks on the sink counting one written ahead by WriteHeldAhead
  uint64_t plaintext_bytes_ = 0;
  bool hash_on_ = true;
  bool finished_ = false;
  internal::Sha256Stream hash_;
  std::string sha256_;
};

// Streaming decryptor for untrusted input: constant memory (two chunks). Hands plaintext to the
// sink only after that chunk's tag verified; the final chunk is recognised only at Finish(), so a
// stream cut at a chunk boundary fails there. After any error it stays failed. Not thread-safe.
class ObjectDecryptor {
 public:
  struct Expect {
    std::string tenant;
    std::string object_id;
    uint64_t version = 0;
  };
  // The header must name exactly `expect` (else DataLoss). `expect_final` false decrypts a prefix
  // of non-final chunks (resuming an upload): Finish() then requires a chunk boundary. Without
  // `hash_plaintext` sha256() stays empty (the chunk tags alone already authenticate the stream).
  static absl::StatusOr<std::unique_ptr<ObjectDecryptor>> Create(std::string_view data_key,
                                                                 Expect expect, ByteSink sink,
                                                                 bool expect_final = true,
                                                                 bool hash_plaintext = true);
  ~ObjectDecryptor();

  // DataLoss on a malformed header or a chunk that does not authenticate (nothing of that chunk
  // reaches the sink); the sink's own errors pass through.
  absl::Status Update(std::string_view ciphertext);
  absl::Status Finish();
  // Random access (range reads): after the header was fed through Update(), opens one whole
  // chunk `sealed` (ciphertext || tag) as chunk `index`, final or not, and hands its plaintext
  // to the sink once verified. The caller knows which chunk is last from the recorded size; a
  // wrong claim fails authentication. No plaintext hash is kept in this mode.
  absl::Status OpenChunkAt(uint64_t index, bool final, std::string_view sealed);

  // Checks a recorded (size, raw SHA-256) against its content digest tag (see
  // ObjectEncryptor::DigestTag) under this object's data key. Needs the header fed first
  // (FailedPrecondition otherwise); DataLoss when the tag does not match, i.e. the recorded size
  // or hash is not the one the vault computed for this content.
  absl::Status VerifyDigestTag(uint64_t size, std::string_view sha256, std::string_view tag) const;

  uint64_t chunks() const { return next_chunk_; }
  uint64_t plaintext_bytes() const { return plaintext_bytes_; }
  // Raw SHA-256 of the plaintext, after a successful Finish().
  const std::string& sha256() const { return sha256_; }
  const ObjectHeader& header() const { return header_; }

 private:
  ObjectDecryptor() = default;
  absl::Status Fail(absl::Status s);
  absl::Status OpenHeld(bool final);
  absl::Status Open(const char* data, size_t size, bool final);

  std::string data_key_;
  Expect expect_;
  ByteSink sink_;
  bool expect_final_ = true;
  bool hash_on_ = true;
  bool have_header_ = false;
  std::string header_buf_;
  ObjectHeader header_;
  std::string aad_;
  std::string prefix_;
  std::string digest_key_;
  internal::CipherCtxPtr ctx_;
  std::string held_;  // ciphertext of the chunk not yet known to be final or not
  size_t held_len_ = 0;
  std::string plain_;
  uint64_t next_chunk_ = 0;
  uint64_t plaintext_bytes_ = 0;
  internal::Sha256Stream hash_;
  std::string sha256_;
  absl::Status failed_;
  bool finished_ = false;
};

}  // namespace warden::vault
