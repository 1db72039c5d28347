// AuditLog: the tamper-evident record of every request the API served or refused (issue 4).
// Events are canonical JSON lines (format v1, see src/audit/README.md) in append-only segment
// files under DATA_DIR/audit/, with an index per segment (find by seq or time), an RFC 9162
// Merkle tree over them, and checkpoints (tree size, root, time) signed with the server's Ed25519
// audit key every N events or T seconds, chained to each other.
//
// Thread-safe. Append is durable and fail-closed: it returns OK only after the event is on disk
// (fdatasync; concurrent callers share one sync: group commit). When it returns an error the
// caller must not serve the request (the API answers 503), and Healthy() is false until a write
// succeeds again. Opening the log recovers from a crash (a torn tail is cut) and refuses with
// DataLoss a log that does not match its signed checkpoints.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string_view>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "audit/checkpoint.h"
#include "audit/merkle.h"
#include "common/clock.h"

namespace warden::audit {

struct AuditEvent {
  int64_t time_ms = 0;       // set by Append from the clock (never smaller than the previous)
  std::string request_id;
  std::string actor_kind;    // "user", "token", "idp-token", "node", "anonymous"
  std::string actor_id;      // user id (also for tokens: the owner)
  std::string actor_name;
  std::string token_id;      // when acting through an API token
  std::string tenant;        // tenant name the action was scoped to; empty = cluster
  std::string action;        // permission checked, e.g. "users:create", or "auth:login"
  std::string method;        // HTTP method
  std::string resource;      // request path
  std::string decision;      // "allow" or "deny"
  std::string reason;        // why denied / error message (short)
  int status = 0;            // HTTP status returned (the outcome)
  int64_t bytes = 0;         // bytes of data read or written (data access), else 0
  std::string source;        // client address ip:port
  int64_t seq = 0;           // position in the log, set by Append
};

// The seam under the log's file writes, so tests inject disk-full and I/O errors. Each returns
// what the system call would (-1 with errno set on failure).
class AuditFileIo {
 public:
  virtual ~AuditFileIo() = default;
  virtual ssize_t Write(int fd, const void* data, size_t size);
  virtual int Datasync(int fd);
  static AuditFileIo& Posix();
};

// How segment files get their space ahead of the events (see src/audit/README.md, "Preallocation").
enum class AuditPreallocation {
  kNone,       // each batch extends the file: every fdatasync also commits the size change
  kZeroFill,   // space is allocated and written with zeros ahead (synced by the next batch), so a
               // batch overwrites written blocks and its fdatasync flushes data only (default)
  kFallocate,  // fallocate() only: unwritten extents, whose first overwrite is a metadata change
               // (kept to measure the difference; see bench/RESULTS.md)
};

struct AuditOptions {
  std::string dir;                       // DATA_DIR/audit; created 0700 if missing
  uint64_t checkpoint_every = 1000;      // sign a checkpoint after this many new events...
  absl::Duration checkpoint_interval = absl::Seconds(1);  // ...or this long after the last one
  uint64_t segment_bytes = 64 << 20;     // start a new segment file beyond this size
  AuditPreallocation preallocation = AuditPreallocation::kZeroFill;
  uint64_t preallocate_bytes = 4 << 20;  // space is reserved this much at a time (best effort:
                                         // on a disk without room the log writes as it goes)
  absl::Duration append_timeout = absl::Seconds(5);  // Append fails (503) when slower
  // Callers that wait for their acknowledgement by polling (yielding the CPU) for up to two
  // syncs' time (at most 1 ms) before they sleep; the others sleep at once. Polling saves the
  // wake-up per caller per batch (on a VM an exit for a halted vCPU) for CPU time that is idle
  // otherwise (a CPU with other runnable work runs it first). 0: every caller sleeps.
  // Default: PollWaitersFor(online CPUs) (see there).
  int poll_waiters = 8;
  AuditFileIo* io = nullptr;             // nullptr: AuditFileIo::Posix()
  // Called by the writer thread after each batch is durable (after its fdatasync, after the
  // callers were acknowledged), in seq order: the batch's first seq, its time and its logged
  // lines (without '\n'; valid only during the call). It runs on the commit path, so it must not
  // block (the syslog sink only queues). Empty: none.
  std::function<void(uint64_t first_seq, int64_t time_ms, std::span<const std::string_view> lines)>
      on_durable;
};

// The default number of polling waiters for a machine with `online_cpus` CPUs: 8 on up to 4 CPUs,
// where polling doubled durable appends on a 2-vCPU VM; 0 above, where it bought no clear
// throughput and cost 7-8x the CPU per event on 16 cores (bench/RESULTS.md, "poll_waiters on
// 16 cores").
int PollWaitersFor(unsigned online_cpus);

// One page of a query, oldest first.
struct AuditQuery {
  int64_t from_ms = 0;                                      // time >= from_ms
  int64_t to_ms = std::numeric_limits<int64_t>::max();      // time < to_ms
  std::optional<std::string> actor;     // actor_name or actor_id
  std::optional<std::string> tenant;    // exact tenant name ("" = cluster-scoped events)
  std::optional<std::string> action;
  std::optional<std::string> resource;  // prefix of the resource path
  std::optional<std::string> decision;  // "allow" / "deny"
  std::optional<int> status;            // exact HTTP status (the outcome)
  int64_t after_seq = -1;               // paging cursor: only events with seq > after_seq
  int limit = 100;                      // 1..10000
};
struct AuditPage {
  std::vector<AuditEvent> items;
  std::vector<std::string> lines;  // the exact logged bytes of each item (the Merkle leaves)
  int64_t next_after_seq = -1;     // -1: nothing more; else pass as after_seq for the next page
};

struct AuditInclusion {
  uint64_t seq = 0;
  uint64_t tree_size = 0;
  std::string line;          // the event's logged bytes (the leaf data)
  MerkleHash leaf_hash{};
  MerkleHash root{};
  std::vector<MerkleHash> proof;
  std::optional<Checkpoint> checkpoint;  // the signed checkpoint of tree_size, when there is one
};

class AuditLog {
 public:
  virtual ~AuditLog() = default;
  // Appends one event (time and seq filled in); OK only once it is on disk. Unavailable when it
  // could not be written and synced within the append timeout (disk full, I/O error, stalled
  // disk); Healthy() is then false. Nothing partial is left in the files.
  virtual absl::Status Append(AuditEvent event) = 0;
  // As Append, returning the event's seq.
  virtual absl::StatusOr<int64_t> AppendForSeq(AuditEvent event) = 0;
  // Queues the event and returns without waiting for the disk: for events whose request is
  // refused whatever happens (HTTP-layer rejections), so that a flood of them cannot hold event
  // loops in fdatasync. A failure to write it turns Healthy() false as for Append.
  virtual void AppendNoWait(AuditEvent event) = 0;
  virtual bool Healthy() const = 0;
  // Number of durable events (the next seq).
  virtual int64_t Size() const = 0;

  // Events matching `query`, oldest first (see AuditQuery). InvalidArgument for a bad limit.
  virtual absl::StatusOr<AuditPage> Query(const AuditQuery& query) const = 0;
  // The newest signed checkpoint; NotFound while none was signed.
  virtual absl::StatusOr<Checkpoint> LatestCheckpoint() const = 0;
  // Every signed checkpoint, oldest first (the chain).
  virtual std::vector<Checkpoint> Checkpoints() const = 0;
  // Inclusion proof of event `seq` in the tree of `tree_size` events (0: the latest checkpoint's
  // size). InvalidArgument when seq >= tree_size or tree_size > Size().
  virtual absl::StatusOr<AuditInclusion> InclusionProof(uint64_t seq, uint64_t tree_size) const = 0;
  // Consistency proof between two tree sizes (RFC 9162), with their roots.
  virtual absl::StatusOr<std::vector<MerkleHash>> ConsistencyProof(uint64_t size1,
                                                                   uint64_t size2) const = 0;
  virtual absl::StatusOr<MerkleHash> RootAt(uint64_t tree_size) const = 0;
  // Signs a checkpoint over every durable event now (no-op when the last one covers them).
  virtual absl::Status CheckpointNow() = 0;
  // SubjectPublicKeyInfo PEM of the audit key (what auditors verify with).
  virtual std::string PublicKeyPem() const = 0;
};

// Opens (creating if needed) the log in options.dir: loads or creates the audit key (audit.key,
// 0600; audit.pub holds the public key), scans every segment (rebuilding the Merkle tree and the
// indexes), cuts a torn tail left by a crash, checks the checkpoint chain against the tree, and
// signs a checkpoint over events the last one does not cover. DataLoss (naming file and offset)
// when the log is corrupt or does not match its checkpoints: it is never repaired silently.
absl::StatusOr<std::unique_ptr<AuditLog>> OpenAuditLog(const AuditOptions& options,
                                                       common::Clock& clock);

// Reads every whole event of the log in `dir`, in order (offline; may run while a server
// appends). DataLoss names the file and offset of an event that does not decode.
absl::StatusOr<std::vector<AuditEvent>> ReadAuditEvents(const std::string& dir);

// Retention: moves whole segments (and their indexes) whose events all have seq < before_seq into
// `dir`/archive/ (created 0700), never the newest segment. Files are renamed on the same file
// system, never rewritten; a running server keeps reading them there (queries, proofs), a
// restarting one and `audit verify` include them. Returns how many segments moved; errors name
// the file that could not be moved (the ones before it stay moved: a later call continues).
absl::StatusOr<int> ArchiveAuditSegments(const std::string& dir, uint64_t before_seq);

// The canonical v1 encoding of an event: one JSON object, without the newline (README.md).
std::string EncodeEvent(const AuditEvent& event);
// Strict inverse of EncodeEvent for untrusted bytes: exactly the canonical form (field order,
// escapes, version) is accepted, so DecodeEvent(x) succeeding implies EncodeEvent(result) == x.
// InvalidArgument naming the field and byte offset otherwise; never crashes.
absl::StatusOr<AuditEvent> DecodeEvent(std::string_view line);

}  // namespace warden::audit
