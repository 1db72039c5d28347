// The Merkle audit log behind the AuditLog interface: segment files with per-segment indexes, a
// writer thread doing group commit, signed chained checkpoints, and crash recovery at open.
//
// Why one writer thread: every Append waits for "my event is on disk", and a single thread that
// takes whatever queued up while the previous fdatasync ran turns N concurrent callers into one
// write() and one fdatasync() (group commit). It also lets every caller time out (a stalled disk
// must become a 503, not a hung request), which a caller-as-leader scheme cannot do for the
// leader stuck in fdatasync. seq and time are assigned by the writer, in file order, so a failed
// batch leaves no gap: its events are cut back and never acknowledged.
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "audit/audit.h"
#include "audit/segment.h"
#include "common/metrics.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::audit {
namespace {

using common::StrCat;
using internal::IndexEntry;
using SteadyTime = std::chrono::steady_clock::time_point;

struct Metrics {
  common::metrics::Gauge& healthy;
  common::metrics::Counter& events;
  common::metrics::Counter& syncs;
  common::metrics::Counter& checkpoints;
  common::metrics::CounterFamily& failures;
  common::metrics::Counter& preallocations;
  common::metrics::Counter& preallocation_failures;
  common::metrics::Counter& index_failures;

  static Metrics& Get() {
    auto& r = common::metrics::Registry::Default();
    static Metrics m{
        r.AddGauge("audit_log_healthy",
                   "1 while the audit log can persist events; 0 means audited requests get 503 "
                   "(alert on it)")
            .WithLabels({}),
        r.AddCounter("audit_events_total", "Audit events made durable.").WithLabels({}),
        r.AddCounter("audit_syncs_total",
                     "fdatasync calls of the audit log (events / syncs = group commit size).")
            .WithLabels({}),
        r.AddCounter("audit_checkpoints_total", "Signed audit checkpoints written.").WithLabels({}),
        r.AddCounter("audit_append_failures_total",
                     "Audit appends that failed (the request got 503), by reason.", {"reason"}),
        r.AddCounter("audit_preallocations_total",
                     "Chunks of zero-filled space reserved ahead in audit segments.")
            .WithLabels({}),
        r.AddCounter("audit_preallocation_failures_total",
                     "Audit segment preallocations that found no room (the log then extends "
                     "the file per batch).")
            .WithLabels({}),
        r.AddCounter("audit_index_write_failures_total",
                     "Audit index appends that failed after their events were durable (the "
                     "entries are retried with the next batch; the index is rebuilt at start).")
            .WithLabels({}),
    };
    return m;
  }
};

// One Append waiting for the writer. The writer fills status and seq, then publishes them with
// the release store of `state` (kDone); the caller waits on `state` itself (a futex), so a batch's
// acknowledgement wakes exactly its callers, each without touching the queue's mutex.
struct Ticket {
  static constexpr uint32_t kQueued = 0, kSleeping = 1, kDone = 2;
  std::string body;  // EncodeEventBody
  absl::Status status;
  int64_t seq = -1;
  std::atomic<uint32_t> state{kQueued};
};
static_assert(std::atomic<uint32_t>::is_always_lock_free &&
              sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));

uint32_t* FutexWord(std::atomic<uint32_t>& a) { return reinterpret_cast<uint32_t*>(&a); }

// How a caller waits: up to `max_pollers` callers at a time first poll their ticket, yielding the
// CPU, for `poll_for` (about two syncs, AwaitTicket's caller decides); the rest, and a poller
// whose time ran out, sleep on the ticket's futex. A polled acknowledgement costs the writer no
// futex call and the caller no wake-up (on a VM, waking a halted vCPU is an exit).
struct WaitPolicy {
  std::atomic<int>* pollers = nullptr;
  int max_pollers = 0;
  std::chrono::nanoseconds poll_for{0};
};

// Waits until the writer marks `t` done, at most until `deadline`. True when it is done.
bool AwaitTicket(Ticket& t, std::chrono::steady_clock::time_point deadline, const WaitPolicy& wait) {
  if (wait.max_pollers > 0 && wait.poll_for > std::chrono::nanoseconds::zero()) {
    if (wait.pollers->fetch_add(1, std::memory_order_relaxed) < wait.max_pollers) {
      const auto until = std::min(deadline, std::chrono::steady_clock::now() + wait.poll_for);
      while (t.state.load(std::memory_order_acquire) == Ticket::kQueued &&
             std::chrono::steady_clock::now() < until) {
        std::this_thread::yield();
      }
    }
    wait.pollers->fetch_sub(1, std::memory_order_relaxed);
  }
  uint32_t s = t.state.load(std::memory_order_acquire);
  while (s != Ticket::kDone) {
    // Tell the writer a wake-up is needed (it skips the syscall for callers not asleep yet).
    if (s == Ticket::kQueued &&
        !t.state.compare_exchange_strong(s, Ticket::kSleeping, std::memory_order_acq_rel)) {
      continue;  // s now holds the new state (done)
    }
    auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::nanoseconds::zero()) return false;
    auto secs = std::chrono::duration_cast<std::chrono::seconds>(left);
    timespec ts{static_cast<time_t>(secs.count()),
                static_cast<long>(std::chrono::nanoseconds(left - secs).count())};
    // EAGAIN (already done), EINTR and ETIMEDOUT all come back to the check above.
    ::syscall(SYS_futex, FutexWord(t.state), FUTEX_WAIT_PRIVATE, Ticket::kSleeping, &ts, nullptr,
              0);
    s = t.state.load(std::memory_order_acquire);
  }
  return true;
}

// Publishes t's status and seq (written before this call) and wakes its caller if it sleeps.
void CompleteTicket(Ticket& t) {
  if (t.state.exchange(Ticket::kDone, std::memory_order_acq_rel) == Ticket::kSleeping) {
    ::syscall(SYS_futex, FutexWord(t.state), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
  }
}

struct Segment {
  uint64_t first_seq = 0;
  std::string name;   // relative to the log dir; "archive/..." when it was archived before start
  std::string index;  // its index, in the same directory
  std::vector<uint64_t> offsets;  // of each event's line
  std::vector<int64_t> times;
  uint64_t bytes = 0;  // durable size
};

absl::Status ErrnoError(int err, std::string_view what, const std::string& path) {
  return absl::UnavailableError(StrCat(what, " ", path, ": ", std::strerror(err)));
}

class MerkleAuditLog final : public AuditLog {
 public:
  MerkleAuditLog(const AuditOptions& options, common::Clock& clock, AuditSigningKey key)
      : options_(options),
        io_(options.io ? *options.io : AuditFileIo::Posix()),
        clock_(clock),
        key_(std::move(key)),
        verifying_key_(AuditVerifyingKey::FromSigningKey(key_)),
        metrics_(Metrics::Get()) {}

  ~MerkleAuditLog() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (writer_.joinable()) {
      writer_.join();
      (void)CheckpointNow();  // a cleanly stopped log is covered by a signature to its end
    }
    for (int fd : {seg_fd_, idx_fd_, cp_fd_}) {
      if (fd >= 0) ::close(fd);
    }
  }

  absl::Status Recover();
  void Start() { writer_ = std::thread([this] { WriterLoop(); }); }

  absl::Status Append(AuditEvent event) override { return AppendForSeq(std::move(event)).status(); }

  void AppendNoWait(AuditEvent event) override {
    auto ticket = std::make_shared<Ticket>();
    ticket->body = internal::EncodeEventBody(event);
    Enqueue(std::move(ticket));
  }

  absl::StatusOr<int64_t> AppendForSeq(AuditEvent event) override {
    const auto deadline =
        std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(options_.append_timeout);
    auto ticket = std::make_shared<Ticket>();
    ticket->body = internal::EncodeEventBody(event);  // the costly part, outside any lock
    Enqueue(ticket);
    const WaitPolicy wait{&pollers_, options_.poll_waiters,
                          std::min(2 * std::chrono::nanoseconds(last_sync_ns_.load(std::memory_order_relaxed)),
                                   std::chrono::nanoseconds(kMaxPoll))};
    if (!AwaitTicket(*ticket, deadline, wait)) {
      // The event may still reach the disk later (it stays queued): it is then in the log with
      // the status the handler meant, while the client got 503. Refusing is what matters here.
      SetHealthy(false);
      metrics_.failures.WithLabels({"timeout"}).Inc();
      return absl::UnavailableError(
          StrCat("audit log did not persist the event within ",
                 absl::FormatDuration(options_.append_timeout), "; request refused"));
    }
    if (!ticket->status.ok()) return ticket->status;
    return ticket->seq;
  }

  bool Healthy() const override { return healthy_.load(); }
  int64_t Size() const override { return size_.load(); }

  absl::StatusOr<AuditPage> Query(const AuditQuery& q) const override;
  absl::StatusOr<Checkpoint> LatestCheckpoint() const override {
    std::lock_guard lock(cp_mu_);
    if (checkpoints_.empty()) return absl::NotFoundError("no audit checkpoint signed yet");
    return checkpoints_.back();
  }
  std::vector<Checkpoint> Checkpoints() const override {
    std::lock_guard lock(cp_mu_);
    return checkpoints_;
  }
  absl::StatusOr<AuditInclusion> InclusionProof(uint64_t seq, uint64_t tree_size) const override;
  absl::StatusOr<std::vector<MerkleHash>> ConsistencyProof(uint64_t size1,
                                                           uint64_t size2) const override {
    std::shared_lock lock(tree_mu_);
    return tree_.ConsistencyProof(size1, size2);
  }
  absl::StatusOr<MerkleHash> RootAt(uint64_t tree_size) const override {
    std::shared_lock lock(tree_mu_);
    return tree_.RootAt(tree_size);
  }
  absl::Status CheckpointNow() override;
  std::string PublicKeyPem() const override { return key_.PublicKeyPem(); }

 private:
  std::string Path(std::string_view name) const { return StrCat(options_.dir, "/", name); }
  void SetHealthy(bool h) {
    healthy_ = h;
    metrics_.healthy.Set(h ? 1 : 0);
  }
  // Queues a ticket; wakes the writer only when it waits for this many (one wake-up per batch,
  // not one per event: on a VM each is an inter-processor interrupt).
  void Enqueue(std::shared_ptr<Ticket> ticket) {
    bool wake = false;
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(ticket));
      queued_.store(queue_.size(), std::memory_order_relaxed);
      if (queue_.size() >= wake_at_) {
        wake_at_ = kNoWake;
        wake = true;
      }
    }
    if (wake) cv_.notify_one();
  }
  void WriterLoop();
  void WriteBatch(std::vector<std::shared_ptr<Ticket>>& batch);
  void WriteIndex();
  absl::Status WriteAll(int fd, std::string_view data, const std::string& path);
  absl::Status OpenSegmentForAppend(uint64_t first_seq, bool create);
  void Preallocate(uint64_t need);
  absl::Status CutBack();
  // Lines [begin, begin + count) from the segment files (durable events only).
  absl::StatusOr<std::vector<std::string>> ReadLines(uint64_t begin, uint64_t count) const;
  absl::Status RecoverSegment(Segment& seg, bool last);
  absl::Status RecoverCheckpoints();

  AuditOptions options_;
  AuditFileIo& io_;
  common::Clock& clock_;
  AuditSigningKey key_;
  AuditVerifyingKey verifying_key_;
  Metrics& metrics_;

  // Queue and tickets.
  std::mutex mu_;
  std::condition_variable cv_;       // the writer waits for work
  static constexpr size_t kNoWake = std::numeric_limits<size_t>::max();
  static constexpr int64_t kMaxSpin = 200'000;  // ns the writer polls for a batch to fill
  static constexpr int64_t kMaxPoll = 1'000'000;  // ns a caller polls for its acknowledgement
  std::atomic<int> pollers_{0};                   // callers polling now (WaitPolicy)
  std::atomic<int64_t> last_sync_ns_{0};          // last_sync_, for the callers' poll
  size_t wake_at_ = kNoWake;         // queue length at which an appender wakes the writer
  std::vector<std::shared_ptr<Ticket>> queue_;  // swapped with the writer's batch (no copies)
  std::atomic<size_t> queued_{0};    // queue_.size(), for the writer's poll without the lock
  bool stop_ = false;

  // Owned by the writer thread (and Recover before it starts).
  int seg_fd_ = -1, idx_fd_ = -1, cp_fd_ = -1;
  uint64_t idx_bytes_ = 0;   // size of the current index file (all of it written entries)
  std::string pending_index_;  // entries of durable events not in the index file yet
  // Per-batch buffers, kept to reuse their capacity.
  std::string batch_data_;
  std::vector<MerkleHash> batch_leaves_;
  std::vector<uint64_t> batch_offsets_;
  std::vector<int64_t> batch_times_;
  uint64_t allocated_ = 0;   // size of the current segment file (>= its durable bytes: zeros)
  uint64_t prealloc_retry_at_ = 0;  // after a failed preallocation: segment bytes to retry at
  uint64_t cp_bytes_ = 0;    // size of checkpoints.log
  int64_t last_time_ms_ = 0;
  bool needs_cut_ = false;   // a failed write may have left bytes past the durable end
  std::optional<uint64_t> cut_at_;  // recovery: where the last segment's torn tail starts
  size_t last_batch_size_ = 0;                  // read under mu_ by the writer only
  std::chrono::nanoseconds last_sync_{0};       // how long the last batch took to write + sync
  // When the last checkpoint was signed (or last found unnecessary); read by the writer's wait.
  std::atomic<SteadyTime::rep> last_checkpoint_at_{std::chrono::steady_clock::now().time_since_epoch().count()};
  SteadyTime LastCheckpointAt() const { return SteadyTime(SteadyTime::duration(last_checkpoint_at_.load())); }
  void MarkCheckpointTime() { last_checkpoint_at_ = std::chrono::steady_clock::now().time_since_epoch().count(); }

  // Tree and indexes: written by the writer, read by queries.
  mutable std::shared_mutex tree_mu_;
  MerkleTree tree_;
  std::vector<Segment> segments_;

  mutable std::mutex cp_mu_;  // serialises checkpoint signing; guards checkpoints_
  std::vector<Checkpoint> checkpoints_;

  std::atomic<int64_t> size_{0};
  std::atomic<bool> healthy_{true};
  std::thread writer_;
};

absl::Status MerkleAuditLog::WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = io_.Write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoError(n < 0 ? errno : EIO, "audit log write failed on", path);
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status MerkleAuditLog::OpenSegmentForAppend(uint64_t first_seq, bool create) {
  std::string seg_path = Path(internal::SegmentName(first_seq));
  std::string idx_path = Path(internal::IndexName(first_seq));
  // Not O_APPEND: batches overwrite the preallocated zeros in place (see Preallocate).
  int flags = O_WRONLY | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT | O_EXCL : 0);
  int seg = ::open(seg_path.c_str(), flags, 0600);
  if (seg < 0) return ErrnoError(errno, "cannot open audit segment", seg_path);
  struct stat st {};
  if (::fstat(seg, &st) != 0) {
    int err = errno;
    ::close(seg);
    return ErrnoError(err, "cannot stat audit segment", seg_path);
  }
  // A new segment's index starts empty (a stale one from a failed attempt is cut).
  int idx = ::open(idx_path.c_str(),
                   O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (create ? O_TRUNC : 0),
                   0600);
  if (idx < 0) {
    int err = errno;
    ::close(seg);
    if (create) ::unlink(seg_path.c_str());  // so that the next attempt can create it again
    return ErrnoError(err, "cannot open audit index", idx_path);
  }
  if (create) {
    // The new segment's name must survive a crash before any event in it is acknowledged.
    if (absl::Status s = internal::SyncDir(options_.dir); !s.ok()) {
      ::close(seg);
      ::close(idx);
      ::unlink(seg_path.c_str());
      return absl::UnavailableError(std::string(s.message()));
    }
  }
  if (seg_fd_ >= 0) ::close(seg_fd_);
  if (idx_fd_ >= 0) ::close(idx_fd_);
  seg_fd_ = seg;
  idx_fd_ = idx;
  allocated_ = static_cast<uint64_t>(st.st_size);
  prealloc_retry_at_ = 0;
  return absl::OkStatus();
}

// Why preallocate: a batch that extends the file changes its size, so its fdatasync must also
// commit the file system's journal (ext4: a second ordered write and cache flush per batch).
// With the space allocated and written with zeros ahead, a batch overwrites blocks that are
// already there and its fdatasync flushes the data alone. fallocate() alone is not enough: it
// leaves unwritten extents, and the first write into each one is again a metadata change.
// The cost is one journal commit per chunk, carried by the first batch written into it.
// Best effort: on a disk without room for a chunk the chunk is given back and batches extend the
// file as before (a full disk then fails the batch's own write: fail-closed as ever). The zeros
// are never mistaken for events: readers end a segment at its zero tail (segment.h).
void MerkleAuditLog::Preallocate(uint64_t need) {
  if (options_.preallocation == AuditPreallocation::kNone || need <= allocated_) return;
  const Segment& seg = segments_.back();
  if (seg.bytes < prealloc_retry_at_) return;
  struct statvfs fs {};
  constexpr uint64_t kBlock = 4096;
  const uint64_t chunk = std::max<uint64_t>(options_.preallocate_bytes, kBlock);
  // Never far past segment_bytes: the batch that crosses it is the segment's last.
  const uint64_t cap = (std::max<uint64_t>(options_.segment_bytes, 1) + kBlock - 1) / kBlock * kBlock;
  const uint64_t target = std::min((need + chunk - 1) / chunk * chunk, cap);
  if (target < need) return;  // this batch ends the segment: it just writes past the end
  const uint64_t from = allocated_;
  // Room for the chunk at all? (Where fallocate is unsupported the zeros below would otherwise
  // write until the disk is full.)
  bool ok = ::fstatvfs(seg_fd_, &fs) == 0 &&
            static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize > target - from;
  ok = ok && (::fallocate(seg_fd_, 0, static_cast<off_t>(from), static_cast<off_t>(target - from)) == 0 ||
              errno == EOPNOTSUPP);  // (then the zero writes below allocate)
  if (ok && options_.preallocation == AuditPreallocation::kZeroFill) {
    static const std::vector<char> zeros(1 << 20, '\0');
    for (uint64_t off = from; ok && off < target;) {
      ssize_t n = ::pwrite(seg_fd_, zeros.data(), std::min<uint64_t>(zeros.size(), target - off),
                           static_cast<off_t>(off));
      if (n < 0 && errno == EINTR) continue;
      ok = n > 0;
      if (ok) off += static_cast<uint64_t>(n);
    }
  }
  // No fdatasync here: the batch about to be written syncs the new size and extents with its own
  // data (one journal commit per chunk, not one per batch), and a crash before that leaves a
  // zero tail or nothing.
  if (!ok) {
    // Give the space back (it may be all the disk has left for the events themselves).
    if (::ftruncate(seg_fd_, static_cast<off_t>(from)) != 0) {
      // The file keeps a zero tail past `from`: harmless, it is overwritten or ignored.
    }
    prealloc_retry_at_ = seg.bytes + chunk;
    metrics_.preallocation_failures.Inc();
    return;
  }
  allocated_ = target;
  metrics_.preallocations.Inc();
}

absl::Status MerkleAuditLog::CutBack() {
  // Bytes of a failed batch must not stay: the next batch would follow them and a partial line
  // in the middle of a segment is corruption. Until the cut succeeds nothing more is written.
  // This also drops the preallocated zeros past the cut; the next batch allocates again.
  const Segment& seg = segments_.back();
  allocated_ = std::min(allocated_, seg.bytes);
  if (::ftruncate(seg_fd_, static_cast<off_t>(seg.bytes)) != 0 ||
      ::ftruncate(idx_fd_, static_cast<off_t>(idx_bytes_)) != 0) {
    needs_cut_ = true;
    return ErrnoError(errno, "cannot cut back a failed write in", Path(seg.name));
  }
  needs_cut_ = false;
  return absl::OkStatus();
}

void MerkleAuditLog::WriteBatch(std::vector<std::shared_ptr<Ticket>>& batch) {
  absl::Status status;
  const char* reason = "write";
  if (needs_cut_) status = CutBack();
  // A new segment once the current one is full (never in the middle of a batch).
  if (status.ok() && segments_.back().bytes >= options_.segment_bytes &&
      !segments_.back().offsets.empty()) {
    uint64_t first = static_cast<uint64_t>(size_.load());
    // The full segment's index gets its last entries first (they would land in the new one's).
    WriteIndex();
    if (!pending_index_.empty()) {
      status = absl::UnavailableError(StrCat("cannot complete audit index ",
                                             Path(segments_.back().index),
                                             " before starting a new segment"));
    }
    // The full segment keeps no zero tail (readers would accept one: this only tidies; a crash
    // before the cut is durable leaves one).
    if (status.ok() && allocated_ > segments_.back().bytes) {
      (void)::ftruncate(seg_fd_, static_cast<off_t>(segments_.back().bytes));
    }
    if (status.ok()) status = OpenSegmentForAppend(first, /*create=*/true);
    if (status.ok()) {
      std::unique_lock lock(tree_mu_);
      segments_.push_back(
          Segment{first, internal::SegmentName(first), internal::IndexName(first), {}, {}, 0});
      idx_bytes_ = 0;
    }
  }
  const uint64_t first_seq = static_cast<uint64_t>(size_.load());
  Segment& seg = segments_.back();
  std::string& data = batch_data_;
  data.clear();
  batch_leaves_.clear();
  batch_offsets_.clear();
  batch_times_.clear();
  const size_t index_mark = pending_index_.size();  // this batch's entries start here
  int64_t batch_time_ms = 0;
  if (status.ok()) {
    int64_t now_ms = std::max(absl::ToUnixMillis(clock_.Now()), last_time_ms_);
    for (size_t i = 0; i < batch.size(); ++i) {
      size_t start = data.size();
      internal::AppendEventHeader(data, static_cast<int64_t>(first_seq + i), now_ms);
      data += batch[i]->body;
      MerkleHash leaf = LeafHash(std::string_view(data).substr(start));
      data.push_back('\n');
      batch_leaves_.push_back(leaf);
      batch_offsets_.push_back(seg.bytes + start);
      batch_times_.push_back(now_ms);
      internal::AppendIndexEntry(pending_index_, IndexEntry{seg.bytes + start, now_ms,
                                                            internal::HashPrefix(leaf)});
    }
    Preallocate(seg.bytes + data.size());
    if (::lseek(seg_fd_, static_cast<off_t>(seg.bytes), SEEK_SET) < 0) {
      status = ErrnoError(errno, "audit log seek failed on", Path(seg.name));
    }
    if (status.ok()) status = WriteAll(seg_fd_, data, Path(seg.name));
    // The index is not written here: it is derived (rebuilt at start) and never synced, so its
    // write waits until the callers are acknowledged (WriteIndex), off the commit path.
    if (status.ok()) {
      metrics_.syncs.Inc();
      if (io_.Datasync(seg_fd_) != 0) {
        reason = "sync";
        status = ErrnoError(errno, "audit log fdatasync failed on", Path(seg.name));
      }
    }
    if (!status.ok()) {
      pending_index_.resize(index_mark);
      (void)CutBack();
    }
    if (status.ok()) {
      batch_time_ms = now_ms;
      last_time_ms_ = now_ms;
      allocated_ = std::max(allocated_, seg.bytes + data.size());
    }
  }
  if (status.ok()) {
    std::unique_lock lock(tree_mu_);
    for (const MerkleHash& leaf : batch_leaves_) tree_.Append(leaf);
    seg.offsets.insert(seg.offsets.end(), batch_offsets_.begin(), batch_offsets_.end());
    seg.times.insert(seg.times.end(), batch_times_.begin(), batch_times_.end());
    seg.bytes += data.size();
    size_ += static_cast<int64_t>(batch.size());
  } else {
    metrics_.failures.WithLabels({reason}).Inc(static_cast<double>(batch.size()));
  }
  if (status.ok()) metrics_.events.Inc(static_cast<double>(batch.size()));
  SetHealthy(status.ok());
  absl::Status refused;
  if (!status.ok()) refused = absl::UnavailableError(StrCat(status.message(), "; request refused"));
  for (size_t i = 0; i < batch.size(); ++i) {
    Ticket& t = *batch[i];
    t.status = refused;
    t.seq = status.ok() ? static_cast<int64_t>(first_seq + i) : -1;
    CompleteTicket(t);
  }
  // The index entries, after the acknowledgement and before the second sink (so on_durable
  // also tells that the batch's entries were written, or are pending after a failure).
  WriteIndex();
  if (status.ok() && options_.on_durable) {
    // After the acknowledgement: the second sink never delays the callers.
    std::vector<std::string_view> durable_lines;  // into `data`
    durable_lines.reserve(batch.size());
    size_t start = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      size_t end = data.find('\n', start);
      durable_lines.emplace_back(data.data() + start, end - start);
      start = end + 1;
    }
    options_.on_durable(first_seq, batch_time_ms, durable_lines);
  }
}

// The index entries of acknowledged events, appended to the index file. A failure (disk full)
// cuts the file back to its whole entries and keeps them pending for the next batch: the index
// lags but never skips or reorders an entry, and recovery rebuilds it from the segment anyway.
void MerkleAuditLog::WriteIndex() {
  if (pending_index_.empty()) return;
  const std::string path = Path(segments_.back().index);
  if (WriteAll(idx_fd_, pending_index_, path).ok()) {
    idx_bytes_ += pending_index_.size();
    pending_index_.clear();
    return;
  }
  metrics_.index_failures.Inc();
  if (::ftruncate(idx_fd_, static_cast<off_t>(idx_bytes_)) != 0) {
    needs_cut_ = true;  // the next batch cuts both files back first, or fails
  }
}

void MerkleAuditLog::WriterLoop() {
  const auto interval = absl::ToChronoNanoseconds(options_.checkpoint_interval);
  std::vector<std::shared_ptr<Ticket>> batch;
  while (true) {
    batch.clear();
    {
      std::unique_lock lock(mu_);
      if (queue_.empty() && !stop_) {
        wake_at_ = 1;
        cv_.wait_until(lock, LastCheckpointAt() + interval,
                       [&] { return stop_ || !queue_.empty(); });
      }
      if (stop_ && queue_.empty()) return;
      // Group commit: callers acknowledged by the last batch come straight back with their next
      // event. Taking the first of them alone would alternate batches of 1 and N-1, so the
      // writer waits a fraction of a sync's duration for as many as last time. It polls first,
      // yielding the CPU to the callers on their way back: sleeping would add a wake-up to every
      // batch, and on a VM waking a halted vCPU is an exit (measured: +15-34% appends/s,
      // bench/RESULTS.md). The wait is bounded as before, the poll by kMaxSpin within it; a
      // CPU with other work runs that work first (yield), so the poll takes only idle time.
      if (queue_.size() < last_batch_size_ && !stop_) {
        const auto now = std::chrono::steady_clock::now();
        const auto fill_by = now + std::min(last_sync_ / 4, std::chrono::nanoseconds(2'000'000));
        const auto spin_until = std::min(fill_by, now + std::chrono::nanoseconds(kMaxSpin));
        const size_t want = last_batch_size_;
        lock.unlock();  // the callers enqueue under mu_; the poll reads queued_ alone
        while (queued_.load(std::memory_order_relaxed) < want &&
               std::chrono::steady_clock::now() < spin_until) {
          std::this_thread::yield();
        }
        lock.lock();
        if (queue_.size() < last_batch_size_ && !stop_) {
          wake_at_ = last_batch_size_;
          cv_.wait_until(lock, fill_by, [&] { return stop_ || queue_.size() >= last_batch_size_; });
        }
      }
      wake_at_ = kNoWake;
      batch.swap(queue_);
      queued_.store(0, std::memory_order_relaxed);
    }
    if (!batch.empty()) {
      auto start = std::chrono::steady_clock::now();
      WriteBatch(batch);
      last_sync_ = std::chrono::steady_clock::now() - start;
      last_sync_ns_.store(last_sync_.count(), std::memory_order_relaxed);
      last_batch_size_ = batch.size();
    }
    uint64_t covered = 0;
    {
      std::lock_guard lock(cp_mu_);
      covered = checkpoints_.empty() ? 0 : checkpoints_.back().tree_size;
    }
    uint64_t size = static_cast<uint64_t>(size_.load());
    bool due = size - covered >= options_.checkpoint_every ||
               (size > covered && std::chrono::steady_clock::now() >= LastCheckpointAt() + interval);
    if (due) {
      if (absl::Status s = CheckpointNow(); !s.ok()) {
        SetHealthy(false);
        metrics_.failures.WithLabels({"checkpoint"}).Inc();
        MarkCheckpointTime();  // retry after T (or with the next batch), not in a busy loop
      }
    } else if (size == covered) {
      MarkCheckpointTime();  // nothing to cover: wait a full T
    }
  }
}

absl::Status MerkleAuditLog::CheckpointNow() {
  std::lock_guard lock(cp_mu_);
  uint64_t size = static_cast<uint64_t>(size_.load());
  const Checkpoint* prev = checkpoints_.empty() ? nullptr : &checkpoints_.back();
  if (prev != nullptr && prev->tree_size >= size) return absl::OkStatus();
  MerkleHash root;
  {
    std::shared_lock tl(tree_mu_);
    WARDEN_ASSIGN_OR_RETURN(root, tree_.RootAt(size));
  }
  int64_t now_ms = std::max<int64_t>(absl::ToUnixMillis(clock_.Now()), prev ? prev->time_ms : 0);
  WARDEN_ASSIGN_OR_RETURN(Checkpoint cp, SignNextCheckpoint(key_, prev, size, root, now_ms));
  std::string text = cp.Encode();
  std::string path = Path(internal::kCheckpointsFile);
  absl::Status s = WriteAll(cp_fd_, text, path);
  if (s.ok() && io_.Datasync(cp_fd_) != 0) {
    s = ErrnoError(errno, "audit checkpoint fdatasync failed on", path);
  }
  if (!s.ok()) {
    if (::ftruncate(cp_fd_, static_cast<off_t>(cp_bytes_)) != 0) {
      return ErrnoError(errno, "cannot cut back a failed checkpoint write in", path);
    }
    return s;
  }
  cp_bytes_ += text.size();
  checkpoints_.push_back(std::move(cp));
  MarkCheckpointTime();
  metrics_.checkpoints.Inc();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> MerkleAuditLog::ReadLines(uint64_t begin,
                                                                   uint64_t count) const {
  std::vector<std::string> out;
  if (count == 0) return out;
  // Locate (segment, offsets) under the lock; read the files outside it.
  struct Piece {
    std::string name;
    uint64_t from, to;  // byte range in the segment
    std::vector<uint64_t> starts;
  };
  std::vector<Piece> pieces;
  {
    std::shared_lock lock(tree_mu_);
    uint64_t end = begin + count;
    if (end > tree_.size()) return absl::InvalidArgumentError("range beyond the log");
    auto it = std::upper_bound(segments_.begin(), segments_.end(), begin,
                               [](uint64_t s, const Segment& g) { return s < g.first_seq; });
    --it;
    for (uint64_t seq = begin; seq < end; ++it) {
      const Segment& g = *it;
      uint64_t last = std::min<uint64_t>(end, g.first_seq + g.offsets.size());
      Piece p{g.name, g.offsets[seq - g.first_seq],
              last - g.first_seq < g.offsets.size() ? g.offsets[last - g.first_seq] : g.bytes,
              {}};
      for (uint64_t s = seq; s < last; ++s) p.starts.push_back(g.offsets[s - g.first_seq]);
      pieces.push_back(std::move(p));
      seq = last;
    }
  }
  for (const Piece& p : pieces) {
    std::string path = Path(p.name);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {  // archived while we run (ArchiveAuditSegments)
      path = Path(StrCat(internal::kArchiveDir, "/", p.name));
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) return absl::ErrnoToStatus(errno, StrCat("open ", path));
    std::string buf(p.to - p.from, '\0');
    size_t got = 0;
    while (got < buf.size()) {
      ssize_t n = ::pread(fd, buf.data() + got, buf.size() - got, static_cast<off_t>(p.from + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    ::close(fd);
    if (got != buf.size()) return absl::DataLossError(StrCat("short read of ", path));
    for (size_t i = 0; i < p.starts.size(); ++i) {
      uint64_t s = p.starts[i] - p.from;
      uint64_t e = (i + 1 < p.starts.size() ? p.starts[i + 1] - p.from : buf.size()) - 1;  // '\n'
      out.push_back(buf.substr(s, e - s));
    }
  }
  return out;
}

absl::StatusOr<AuditPage> MerkleAuditLog::Query(const AuditQuery& q) const {
  if (q.limit < 1 || q.limit > 10000) {
    return absl::InvalidArgumentError("limit must be in 1..10000");
  }
  // First seq at or after from_ms (times are non-decreasing in seq order), and after the cursor.
  uint64_t begin = 0, size = 0;
  {
    std::shared_lock lock(tree_mu_);
    size = tree_.size();
    for (const Segment& g : segments_) {
      if (!g.times.empty() && g.times.back() < q.from_ms) {
        begin = g.first_seq + g.times.size();
        continue;
      }
      begin = g.first_seq + (std::lower_bound(g.times.begin(), g.times.end(), q.from_ms) -
                             g.times.begin());
      break;
    }
  }
  if (q.after_seq >= 0) begin = std::max(begin, static_cast<uint64_t>(q.after_seq) + 1);
  AuditPage page;
  constexpr uint64_t kChunk = 512;
  for (uint64_t seq = begin; seq < size;) {
    uint64_t n = std::min(kChunk, size - seq);
    WARDEN_ASSIGN_OR_RETURN(auto lines, ReadLines(seq, n));
    for (std::string& line : lines) {
      auto e = DecodeEvent(line);
      if (!e.ok()) {
        return absl::DataLossError(StrCat("audit event seq ", seq, ": ", e.status().message()));
      }
      if (e->time_ms >= q.to_ms) return page;  // and nothing later can match
      bool match = e->time_ms >= q.from_ms &&
                   (!q.actor || e->actor_name == *q.actor || e->actor_id == *q.actor) &&
                   (!q.tenant || e->tenant == *q.tenant) && (!q.action || e->action == *q.action) &&
                   (!q.resource || e->resource.compare(0, q.resource->size(), *q.resource) == 0) &&
                   (!q.decision || e->decision == *q.decision) &&
                   (!q.status || e->status == *q.status);
      if (match) {
        page.items.push_back(*std::move(e));
        page.lines.push_back(std::move(line));
        if (page.items.size() == static_cast<size_t>(q.limit)) {
          if (seq + 1 < size) page.next_after_seq = static_cast<int64_t>(seq);
          return page;
        }
      }
      ++seq;
    }
  }
  return page;
}

absl::StatusOr<AuditInclusion> MerkleAuditLog::InclusionProof(uint64_t seq,
                                                              uint64_t tree_size) const {
  AuditInclusion out;
  {
    std::lock_guard lock(cp_mu_);
    if (tree_size == 0) {
      tree_size = checkpoints_.empty() ? static_cast<uint64_t>(size_.load())
                                       : checkpoints_.back().tree_size;
    }
    auto it = std::lower_bound(checkpoints_.begin(), checkpoints_.end(), tree_size,
                               [](const Checkpoint& c, uint64_t s) { return c.tree_size < s; });
    if (it != checkpoints_.end() && it->tree_size == tree_size) out.checkpoint = *it;
  }
  {
    std::shared_lock lock(tree_mu_);
    WARDEN_ASSIGN_OR_RETURN(out.proof, tree_.InclusionProof(seq, tree_size));
    WARDEN_ASSIGN_OR_RETURN(out.root, tree_.RootAt(tree_size));
    WARDEN_ASSIGN_OR_RETURN(out.leaf_hash, tree_.LeafHashAt(seq));
  }
  WARDEN_ASSIGN_OR_RETURN(auto lines, ReadLines(seq, 1));
  out.line = std::move(lines[0]);
  out.seq = seq;
  out.tree_size = tree_size;
  return out;
}

// ---- Recovery ----

absl::Status MerkleAuditLog::RecoverSegment(Segment& seg, bool last) {
  std::string path = Path(seg.name);
  WARDEN_ASSIGN_OR_RETURN(std::string data, internal::ReadWholeFile(path));
  uint64_t expected = tree_.size();
  if (seg.first_seq != expected) {
    return absl::DataLossError(StrCat("audit segment ", path, " starts at seq ", seg.first_seq,
                                      " but the log before it ends at seq ", expected,
                                      " (events ", expected, "..", seg.first_seq,
                                      " are missing or duplicated)"));
  }
  std::string index;
  size_t pos = 0;
  // The zero tail is preallocated space, not events (segment.h).
  const std::string_view events(data.data(), internal::ZeroTailStart(data));
  size_t end = events.size();
  while (pos < events.size()) {
    const size_t nl = internal::LineEnd(events, pos);
    if (nl == std::string_view::npos) {
      if (!last) {
        return absl::DataLossError(StrCat("audit segment ", path, " offset ", pos,
                                          ": incomplete event in a segment that is not the last"));
      }
      // A torn tail from a crash mid-write (possibly followed by preallocated zeros, or with
      // zeros inside where pages did not reach the disk): never acknowledged (the sync comes
      // after the whole write, and acknowledged batches are contiguous from the start), so
      // cutting it loses nothing that was promised. The writer preallocates again. The cut
      // waits until the checkpoints vouch for everything before it (Recover): a changed byte
      // in a signed event looks like a torn line too, and that evidence must stay as it is.
      cut_at_ = pos;
      end = pos;
      break;
    }
    std::string_view line = events.substr(pos, nl - pos);
    auto h = internal::ParseEventHeader(line);
    if (!h) {
      return absl::DataLossError(
          StrCat("audit segment ", path, " offset ", pos, ": not a v1 audit event"));
    }
    if (h->seq != expected) {
      return absl::DataLossError(StrCat("audit segment ", path, " offset ", pos, ": event seq ",
                                        h->seq, " where seq ", expected, " was expected"));
    }
    if (h->time_ms < last_time_ms_) {
      return absl::DataLossError(StrCat("audit segment ", path, " offset ", pos, ": event seq ",
                                        h->seq, " is older than the event before it"));
    }
    MerkleHash leaf = LeafHash(line);
    tree_.Append(leaf);
    seg.offsets.push_back(pos);
    seg.times.push_back(h->time_ms);
    internal::AppendIndexEntry(index, IndexEntry{pos, h->time_ms, internal::HashPrefix(leaf)});
    last_time_ms_ = h->time_ms;
    ++expected;
    pos = nl + 1;
  }
  seg.bytes = end;
  // The index is derived from the segment: rewrite it when it does not match (after a crash it
  // may lack the last entries; it is not synced). Archived files are never written.
  std::string idx_path = Path(seg.index);
  auto existing = internal::ReadWholeFile(idx_path);
  bool archived = seg.name.find('/') != std::string::npos;
  if (!archived && (!existing.ok() || *existing != index)) {
    int fd = ::open(idx_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return ErrnoError(errno, "cannot rewrite audit index", idx_path);
    absl::Status s = WriteAll(fd, index, idx_path);
    ::close(fd);
    WARDEN_RETURN_IF_ERROR(s);
  }
  if (last) idx_bytes_ = index.size();
  return absl::OkStatus();
}

absl::Status MerkleAuditLog::RecoverCheckpoints() {
  std::string path = Path(internal::kCheckpointsFile);
  std::string data;
  if (auto read = internal::ReadWholeFile(path); read.ok()) {
    data = *std::move(read);
  } else if (!absl::IsNotFound(read.status())) {
    return read.status();
  }
  size_t pos = 0;
  while (pos < data.size()) {
    size_t end = pos;
    int lines = 0;
    while (lines < 8) {
      size_t nl = data.find('\n', end);
      if (nl == std::string::npos) break;
      end = nl + 1;
      ++lines;
    }
    if (lines < 8) {
      // Torn tail of a checkpoint write (never synced, so never relied upon): cut it.
      data.resize(pos);
      if (::truncate(path.c_str(), static_cast<off_t>(pos)) != 0) {
        return ErrnoError(errno, "cannot cut the torn tail of", path);
      }
      break;
    }
    auto cp = ParseCheckpoint(std::string_view(data).substr(pos, end - pos));
    if (!cp.ok()) {
      return absl::DataLossError(
          StrCat(path, " offset ", pos, ": ", std::string(cp.status().message())));
    }
    checkpoints_.push_back(*std::move(cp));
    pos = end;
  }
  cp_bytes_ = data.size();
  if (absl::Status s = VerifyCheckpointChain(checkpoints_, verifying_key_, tree_); !s.ok()) {
    return absl::DataLossError(
        StrCat("the audit log in ", options_.dir, " does not match its signed checkpoints: ",
               s.message(), " (run `gpuwarden audit verify ", options_.dir,
               "` for the exact place; the server will not write to a log it cannot vouch for)"));
  }
  cp_fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (cp_fd_ < 0) return ErrnoError(errno, "cannot open", path);
  return absl::OkStatus();
}

absl::Status MerkleAuditLog::Recover() {
  WARDEN_ASSIGN_OR_RETURN(auto files, internal::ListSegments(options_.dir));
  for (const auto& f : files) segments_.push_back(Segment{f.first_seq, f.name, f.index, {}, {}, 0});
  for (size_t i = 0; i < segments_.size(); ++i) {
    WARDEN_RETURN_IF_ERROR(RecoverSegment(segments_[i], i + 1 == segments_.size()));
  }
  size_ = static_cast<int64_t>(tree_.size());
  WARDEN_RETURN_IF_ERROR(RecoverCheckpoints());
  if (cut_at_) {
    // Every checkpoint is within the whole events before the cut (the chain just verified), so
    // what is cut was never signed, and never acknowledged.
    std::string path = Path(segments_.back().name);
    if (::truncate(path.c_str(), static_cast<off_t>(*cut_at_)) != 0) {
      return ErrnoError(errno, "cannot cut the torn tail of", path);
    }
  }
  if (segments_.empty() || segments_.back().name.find('/') != std::string::npos) {
    // A new log, or every segment archived: appends go to a new segment in the log dir.
    uint64_t first = tree_.size();
    WARDEN_RETURN_IF_ERROR(OpenSegmentForAppend(first, /*create=*/true));
    segments_.push_back(
        Segment{first, internal::SegmentName(first), internal::IndexName(first), {}, {}, 0});
    idx_bytes_ = 0;
  } else {
    WARDEN_RETURN_IF_ERROR(OpenSegmentForAppend(segments_.back().first_seq, /*create=*/false));
  }
  // Events written after the last checkpoint (a crash) are signed now, so the log is covered
  // again before anything new is appended.
  WARDEN_RETURN_IF_ERROR(CheckpointNow());
  SetHealthy(true);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<AuditLog>> OpenAuditLog(const AuditOptions& options,
                                                       common::Clock& clock) {
  if (options.checkpoint_every == 0) {
    return absl::InvalidArgumentError("audit checkpoint_every must be at least 1");
  }
  if (::mkdir(options.dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::UnavailableError(
        StrCat("cannot create audit dir ", options.dir, ": ", std::strerror(errno)));
  }
  // Temporaries of a writer killed while creating the key files (PutWholeFile).
  internal::RemoveTempFiles(options.dir, internal::kKeyFile);
  internal::RemoveTempFiles(options.dir, internal::kPubKeyFile);
  WARDEN_ASSIGN_OR_RETURN(AuditSigningKey key, AuditSigningKey::LoadOrCreate(StrCat(
                                                   options.dir, "/", internal::kKeyFile)));
  // The public key beside the log, for convenience (an auditor should get it out of band:
  // `gpuwarden audit pubkey`); never trusted by the server itself. Rewritten (whole, by rename)
  // whenever it is not exactly the key's, e.g. torn by a kill while an older version wrote it.
  const std::string pub_path = StrCat(options.dir, "/", internal::kPubKeyFile);
  const std::string pem = key.PublicKeyPem();
  auto existing = internal::ReadWholeFile(pub_path);
  if (!existing.ok() || *existing != pem) {
    if (absl::Status s = internal::PutWholeFile(pub_path, pem, 0644, /*replace=*/true); !s.ok()) {
      std::fprintf(stderr, "audit: cannot write %s: %s\n", pub_path.c_str(),
                   std::string(s.message()).c_str());
    }
  }
  auto log = std::make_unique<MerkleAuditLog>(options, clock, std::move(key));
  WARDEN_RETURN_IF_ERROR(log->Recover());
  log->Start();
  return log;
}

int PollWaitersFor(unsigned online_cpus) { return online_cpus <= 4 ? 8 : 0; }

}  // namespace warden::audit
