// ObjectStore: a tenant's encrypted objects (datasets, checkpoints) on the local file system, in
// the vault's directory under the data dir. Each object is a name with numbered versions; each
// version is one file in the chunked format (format.h) plus a small metadata file that holds its
// wrapped data key, size, plaintext SHA-256 and labels. A version becomes visible only when its
// metadata file is renamed into place, after the content is durable (see README.md "Storage").
//
// Thread-safe: namespace changes (version numbers, publication, delete, rotation) are serialised
// by one mutex; uploads stream under their own lock. One server process owns a vault directory.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/rng.h"
#include "vault/format.h"
#include "vault/keys.h"

namespace warden::vault {

using Labels = std::map<std::string, std::string>;

struct ObjectInfo {
  std::string tenant;
  std::string name;
  std::string object_id;
  uint64_t version = 0;
  uint64_t size = 0;
  std::string sha256_hex;  // of the plaintext
  Labels labels;
  int64_t created_unix = 0;
  uint32_t kek_version = 0;
  uint32_t chunk_size = 0;
};

struct UploadState {
  std::string upload_id;
  std::string tenant;
  std::string name;
  std::string object_id;
  uint64_t version = 0;
  uint64_t received = 0;  // plaintext bytes accepted so far: the next Append's offset
  uint64_t durable = 0;   // plaintext bytes on disk in whole chunks: survives a crash
  uint64_t writer = 0;    // the claim of the current streaming writer (ClaimUpload), 0 if none
};

struct RotationReport {
  uint32_t new_version = 0;
  uint64_t rewrapped = 0;          // object versions whose data key was rewrapped
  uint64_t reencrypted = 0;        // object versions re-encrypted under a new data key
  uint64_t uploads_rewrapped = 0;  // unfinished uploads whose data key was rewrapped
};

// Reads into `buf` (capacity `cap`); returns the byte count, 0 at the end.
using ByteSource = std::function<absl::StatusOr<size_t>(char* buf, size_t cap)>;

struct ObjectStoreOptions {
  std::string root;  // e.g. DATA_DIR/vault; created 0700
  uint32_t chunk_size = kDefaultChunkSize;
  // Two-core transfers for Put/PutFile and GetToFile (README.md "Two-core file transfers"): a
  // helper thread hashes the plaintext while the caller reads and seals (put); GetToFile opens
  // chunks on both threads, or, when the plaintext must be re-hashed, has the helper hash and
  // write. `pipeline_pieces` pieces of `pipeline_piece_size` bytes are in flight at most
  // (default 8 x 256 KiB); a two-thread GetToFile works in blocks of `pipeline_piece_size`.
  bool pipeline = true;
  size_t pipeline_piece_size = size_t{256} << 10;
  size_t pipeline_pieces = 8;
  // Reads re-hash the plaintext and compare it with the recorded SHA-256 even when the recorded
  // digest verified against its content digest tag (belt and braces; costs a SHA-256 pass).
  // Versions stored without a digest tag (before it existed) are always re-hashed.
  bool rehash_on_read = false;
  common::Clock* clock = nullptr;
  common::Rng* rng = nullptr;
  // Test seam for crash tests: called at named points ("chunk", "rewrap", "reencrypt").
  std::function<void(std::string_view point)> hook;
};

// Label keys: 1-63 of [A-Za-z0-9._-]; values: up to 255 printable ASCII; at most 32 labels.
absl::Status ValidateLabels(const Labels& labels);

class ObjectStore {
 public:
  // `keyring` must outlive the store. Recovers from a crash first: removes temporary files,
  // content files that no metadata names, and finished or orphaned upload directories.
  static absl::StatusOr<std::unique_ptr<ObjectStore>> Open(Keyring& keyring,
                                                           ObjectStoreOptions options);
  ~ObjectStore();

  // Stores a new version of `name` from `source`. InvalidArgument: bad tenant, name or labels.
  // FailedPrecondition: tenant shredded. On any error nothing becomes visible (and the upload's
  // files are removed). With options.pipeline, `source` is called on the calling thread only.
  absl::StatusOr<ObjectInfo> Put(std::string_view tenant, std::string_view name,
                                 const Labels& labels, const ByteSource& source);
  absl::StatusOr<ObjectInfo> PutFile(std::string_view tenant, std::string_view name,
                                     const Labels& labels, const std::string& path);

  // Streams the plaintext of version `version` (0 = latest) to `sink`, chunk by verified chunk,
  // and checks size and SHA-256 against the metadata at the end. NotFound: no such object or
  // version in this tenant. DataLoss: the content does not authenticate (the sink may have
  // received verified chunks before the bad one; GetToFile discards them). FailedPrecondition:
  // tenant shredded, or the object's key version is below the tenant's minimum.
  absl::StatusOr<ObjectInfo> Get(std::string_view tenant, std::string_view name, uint64_t version,
                                 const ByteSink& sink);
  absl::StatusOr<ObjectInfo> GetById(std::string_view tenant, std::string_view object_id,
                                     uint64_t version, const ByteSink& sink);
  // Decrypts into `out_path` through a temporary file renamed into place only after the whole
  // object verified: on any error (a chunk that does not authenticate, a read or write error on
  // either thread of the pipeline) no plaintext file is left behind.
  absl::StatusOr<ObjectInfo> GetToFile(std::string_view tenant, std::string_view name,
                                       uint64_t version, const std::string& out_path);

  // Range read of whole chunks (for downloads in bounded requests): verifies and hands to `sink`
  // the plaintext of chunks [first_chunk, first_chunk + max_chunks) of the version, stopping at
  // the last one. Each chunk is authenticated on its own with its index and final flag (the
  // last index comes from the recorded size, so a tampered size fails too). OutOfRange when
  // first_chunk is past the end. The whole-object SHA-256 is not re-checked here (the client
  // compares it with ObjectInfo::sha256_hex after the last range).
  absl::StatusOr<ObjectInfo> ReadChunks(std::string_view tenant, std::string_view name,
                                        uint64_t version, uint64_t first_chunk, uint64_t max_chunks,
                                        const ByteSink& sink);

  absl::StatusOr<ObjectInfo> Stat(std::string_view tenant, std::string_view name,
                                  uint64_t version = 0);
  // Latest version of every object whose name starts with `prefix`, sorted by name.
  absl::StatusOr<std::vector<ObjectInfo>> List(std::string_view tenant, std::string_view prefix);
  absl::StatusOr<std::vector<ObjectInfo>> Versions(std::string_view tenant, std::string_view name);
  // Deletes every version of `name`. NotFound when absent.
  absl::Status Delete(std::string_view tenant, std::string_view name);

  // Resumable uploads. Begin allocates the version and writes the header; Append takes plaintext
  // at exactly `offset` == received (FailedPrecondition names the expected offset otherwise) and
  // makes whole chunks durable before returning; after a crash or restart UploadStatus reports
  // `durable`, the offset to resume from. Commit publishes the version; with `expected_sha256_hex`
  // it refuses (DataLoss, nothing published) when the plaintext hash differs.
  absl::StatusOr<UploadState> BeginUpload(std::string_view tenant, std::string_view name,
                                          const Labels& labels);
  // `writer`, when not 0, is a claim from ClaimUpload: the append fails once a newer claim exists.
  absl::StatusOr<UploadState> AppendUpload(std::string_view tenant, std::string_view upload_id,
                                           uint64_t offset, std::string_view data,
                                           uint64_t writer = 0);
  // Makes the caller the upload's only streaming writer and returns the state with its claim in
  // `writer`. Appends under an older claim fail from then on, so the bytes a killed client left in
  // flight cannot move `received` after its successor has read it.
  absl::StatusOr<UploadState> ClaimUpload(std::string_view tenant, std::string_view upload_id);
  absl::StatusOr<UploadState> UploadStatus(std::string_view tenant, std::string_view upload_id);
  absl::StatusOr<ObjectInfo> CommitUpload(std::string_view tenant, std::string_view upload_id,
                                          std::optional<std::string> expected_sha256_hex);
  absl::Status AbortUpload(std::string_view tenant, std::string_view upload_id);

  // Adds a tenant key version and rewraps every data key under it (metadata only: content files
  // are not opened for writing). With `reencrypt`, each version is also re-encrypted under a
  // fresh data key into a new content file. Safe to interrupt: each step is atomic, old key
  // versions stay until SetMinVersion, so a crash leaves every object readable; rerun to finish.
  absl::StatusOr<RotationReport> RotateTenantKey(std::string_view tenant, bool reencrypt);
  // Crypto-shreds the tenant (Keyring::Shred) and then deletes its files.
  absl::Status ShredTenant(std::string_view tenant);

  const std::string& root() const { return options_.root; }

 private:
  struct Session;
  struct Meta;

  ObjectStore(Keyring& keyring, ObjectStoreOptions options);
  absl::Status Recover();
  std::string TenantDir(std::string_view tenant) const;
  std::string ObjectDir(std::string_view tenant, std::string_view object_id) const;
  std::string NamePath(std::string_view tenant, std::string_view name) const;
  std::string UploadDir(std::string_view tenant, std::string_view upload_id) const;
  absl::StatusOr<std::string> ObjectIdForName(std::string_view tenant, std::string_view name);
  absl::StatusOr<Meta> ReadMeta(std::string_view tenant, std::string_view object_id,
                                uint64_t version);
  absl::StatusOr<std::vector<uint64_t>> VisibleVersions(std::string_view tenant,
                                                        std::string_view object_id);
  absl::StatusOr<Session*> SessionFor(std::string_view tenant, std::string_view upload_id);
  absl::Status LoadSession(Session& s);
  absl::StatusOr<ObjectInfo> Publish(Session& s, std::optional<std::string> expected_sha256_hex);
  absl::StatusOr<UploadState> BeginUploadImpl(std::string_view tenant, std::string_view name,
                                              const Labels& labels, bool encryptor_hashes);
  absl::Status PipelinedPut(Session& s, const ByteSource& source);
  // `out_fd` >= 0: `sink` writes to that file, which the two-thread download may also pwrite.
  absl::StatusOr<ObjectInfo> GetImpl(std::string_view tenant, std::string_view object_id,
                                     uint64_t version, const ByteSink& sink, bool pipelined,
                                     int out_fd = -1);
  absl::Status ReencryptLocked(std::string_view tenant, Meta& meta);
  void Hook(std::string_view point) const {
    if (options_.hook) options_.hook(point);
  }

  Keyring& keyring_;
  ObjectStoreOptions options_;
  // Lock order: load_mu_, then mu_, then sessions_mu_.
  std::mutex load_mu_;  // one upload session loaded from disk at a time
  std::mutex mu_;       // namespace
  std::mutex sessions_mu_;
  std::map<std::string, std::unique_ptr<Session>> sessions_;  // key: tenant/upload_id
};

}  // namespace warden::vault
