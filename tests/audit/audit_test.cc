// The Merkle audit log: append and read back, group commit, crash recovery, fail-closed on
// write/sync errors and stalls (through the AuditFileIo seam), checkpoints, segments, queries,
// proofs, and the canonical event encoding.
#include "audit/audit.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <span>
#include <thread>

#include "audit/segment.h"
#include "audit/verify.h"
#include "common/json.h"
#include "common/rng.h"

namespace warden::audit {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string Seg0(const std::string& dir) { return dir + "/" + internal::SegmentName(0); }

AuditEvent Event(std::string resource, std::string actor = "alice", std::string tenant = "") {
  AuditEvent e;
  e.actor_kind = "user";
  e.actor_name = std::move(actor);
  e.tenant = std::move(tenant);
  e.action = "users:create";
  e.method = "POST";
  e.resource = std::move(resource);
  e.decision = "allow";
  e.status = 201;
  return e;
}

VerifyReport Verify(const std::string& dir, bool allow_tail = false) {
  VerifyOptions o;
  o.dir = dir;
  o.public_key_pem = Slurp(dir + "/audit.pub");
  o.allow_unsigned_tail = allow_tail;
  auto r = VerifyAuditLog(o);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : VerifyReport{};
}

std::string Problems(const VerifyReport& r) {
  std::string out;
  for (const auto& p : r.problems) out += p.ToString() + "\n";
  return out;
}

// Fails writes or syncs on demand, or holds syncs until released (a stalled disk).
class FaultyIo : public AuditFileIo {
 public:
  std::atomic<int> write_errno{0};
  std::atomic<int> sync_errno{0};
  std::atomic<int> syncs{0};
  ssize_t Write(int fd, const void* data, size_t size) override {
    if (int e = write_errno.load()) {
      // A partial write first, as a filling disk does, then the error.
      if (size > 1 && !partial_done_.exchange(true)) return AuditFileIo::Write(fd, data, size / 2);
      errno = e;
      return -1;
    }
    partial_done_ = false;
    return AuditFileIo::Write(fd, data, size);
  }
  int Datasync(int fd) override {
    ++syncs;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return !stalled_; });
    }
    if (int e = sync_errno.load()) {
      errno = e;
      return -1;
    }
    return AuditFileIo::Datasync(fd);
  }
  void Stall(bool on) {
    std::lock_guard lock(mu_);
    stalled_ = on;
    cv_.notify_all();
  }

 private:
  std::atomic<bool> partial_done_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stalled_ = false;
};

class AuditLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/warden-audit-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  AuditOptions Opts() {
    AuditOptions o;
    o.dir = dir_;
    return o;
  }
  std::string dir_;
  common::FakeClock clock_;
};

// Polling pays on small (virtual) machines and only costs CPU on large ones (bench/RESULTS.md).
TEST(AuditPollWaitersTest, TheDefaultPollsOnlyOnSmallMachines) {
  EXPECT_EQ(PollWaitersFor(1), 8);
  EXPECT_EQ(PollWaitersFor(2), 8);
  EXPECT_EQ(PollWaitersFor(4), 8);
  EXPECT_EQ(PollWaitersFor(5), 0);
  EXPECT_EQ(PollWaitersFor(16), 0);
  EXPECT_EQ(PollWaitersFor(0), 8);  // hardware_concurrency() unknown: treat as small
}

TEST_F(AuditLogTest, AppendsEventsThatReadBackInOrder) {
  auto log = OpenAuditLog({.dir = dir_ + "/audit"}, clock_);
  ASSERT_TRUE(log.ok()) << log.status();
  for (int i = 0; i < 3; ++i) {
    auto seq = (*log)->AppendForSeq(Event("/api/v1/users/" + std::to_string(i)));
    ASSERT_TRUE(seq.ok());
    EXPECT_EQ(*seq, i);
  }
  auto events = ReadAuditEvents(dir_ + "/audit");
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 3u);
  EXPECT_EQ((*events)[2].seq, 2);
  EXPECT_EQ((*events)[2].resource, "/api/v1/users/2");
  EXPECT_EQ((*events)[0].time_ms, absl::ToUnixMillis(clock_.Now()));
}

TEST_F(AuditLogTest, NoWaitEventsAreWrittenInOrderBeforeLaterWaitingOnes) {
  auto log = OpenAuditLog(Opts(), clock_);
  ASSERT_TRUE(log.ok());
  (*log)->AppendNoWait(Event("/rejected"));
  auto seq = (*log)->AppendForSeq(Event("/after"));
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(*seq, 1);  // the queued one went first, and is on disk now
  auto events = ReadAuditEvents(dir_);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].resource, "/rejected");
}

TEST_F(AuditLogTest, KeyIsCreated0600AndPublicKeyIsExported) {
  auto log = OpenAuditLog(Opts(), clock_);
  ASSERT_TRUE(log.ok());
  struct stat st {};
  ASSERT_EQ(stat((dir_ + "/audit.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  ASSERT_EQ(stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700);
  EXPECT_EQ(Slurp(dir_ + "/audit.pub"), (*log)->PublicKeyPem());
  EXPECT_NE((*log)->PublicKeyPem().find("BEGIN PUBLIC KEY"), std::string::npos);
}

// A kill while the key files were written used to leave them empty or torn: an empty audit.key
// refused every later start, a torn audit.pub failed `audit verify`. They are now written to a
// temporary and linked or renamed into place; what such a kill leaves is cleaned up or healed.
TEST_F(AuditLogTest, KeyFilesAreNeverLeftTornByAKill) {
  // What a writer killed before its link leaves: a temporary beside the (absent) key file.
  { std::ofstream(dir_ + "/audit.key.tmp-4242-0") << "-----BEGIN PRIV"; }
  // What an older version killed mid-write left: an empty public key file.
  { std::ofstream(dir_ + "/audit.pub") << ""; }
  { std::ofstream(dir_ + "/audit.pub.tmp-4242-1") << "junk"; }
  {
    auto log = OpenAuditLog(Opts(), clock_);
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_EQ(Slurp(dir_ + "/audit.pub"), (*log)->PublicKeyPem()) << "a torn audit.pub is rewritten";
    ASSERT_TRUE((*log)->AppendForSeq(Event("/x")).ok());
  }
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos)
        << e.path() << " left behind";
  }
  // A stale public key (not this log's) is replaced too; the key itself is kept.
  const std::string key_before = Slurp(dir_ + "/audit.key");
  { std::ofstream(dir_ + "/audit.pub") << "-----BEGIN PUBLIC KEY-----\nAAAA\n"; }
  auto log = OpenAuditLog(Opts(), clock_);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(Slurp(dir_ + "/audit.pub"), (*log)->PublicKeyPem());
  EXPECT_EQ(Slurp(dir_ + "/audit.key"), key_before);
  struct stat st {};
  ASSERT_EQ(stat((dir_ + "/audit.pub").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644);
}

TEST_F(AuditLogTest, ReopenTrimsTornTailAndContinuesNumbering) {
  {
    auto log = OpenAuditLog(Opts(), clock_);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append(Event("/a")).ok());
    ASSERT_TRUE((*log)->Append(Event("/b")).ok());
  }
  {
    std::ofstream out(Seg0(dir_), std::ios::app);
    out << "{\"v\":1,\"seq\":2,\"acti";  // a crash mid-write
  }
  auto log = OpenAuditLog(Opts(), clock_);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->Size(), 2);
  ASSERT_TRUE((*log)->Append(Event("/c")).ok());
  log->reset();
  auto events = ReadAuditEvents(dir_);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 3u);
  EXPECT_EQ(events->back().seq, 2);
  EXPECT_EQ(events->back().resource, "/c");
  VerifyReport r = Verify(dir_);
  EXPECT_TRUE(r.ok()) << Problems(r);
}

TEST_F(AuditLogTest, ReopenRefusesALogThatDoesNotMatchItsCheckpoints) {
  {
    auto log = OpenAuditLog(Opts(), clock_);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append(Event("/api/v1/users/alice")).ok());
  }
  std::string seg = Slurp(Seg0(dir_));
  seg.replace(seg.find("alice"), 5, "mallo");
  std::ofstream(Seg0(dir_), std::ios::binary | std::ios::trunc) << seg;
  auto log = OpenAuditLog(Opts(), clock_);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(log.status().message()).find("does not match its signed checkpoints"),
            std::string::npos)
      << log.status();
}

TEST_F(AuditLogTest, ReadAuditEventsNamesTheCorruptEventsFileAndOffset) {
  {
    auto log = OpenAuditLog(Opts(), clock_);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append(Event("/a")).ok());
  }
  {
    // Right after the last event, over the preallocated zeros (bytes appended after the zero
    // tail would be past the end: a reader stops at the first line that is not whole).
    std::string seg = Slurp(Seg0(dir_));
    std::fstream f(Seg0(dir_), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(internal::ZeroTailStart(seg)));
    f << "not json\n";
  }
  auto events = ReadAuditEvents(dir_);
  ASSERT_FALSE(events.ok());
  EXPECT_EQ(events.status().code(), absl::StatusCode::kDataLoss);
  std::string msg(events.status().message());
  EXPECT_NE(msg.find(internal::SegmentName(0)), std::string::npos) << msg;
  EXPECT_NE(msg.find("offset "), std::string::npos) << msg;
}

TEST_F(AuditLogTest, ConcurrentAppendsAreGroupCommittedWholeAndNumbered) {
  // Both ways of waiting for the acknowledgement: sleeping at once, and polling first (default).
  for (int pollers : {0, 2, AuditOptions{}.poll_waiters}) {
    SCOPED_TRACE("poll_waiters " + std::to_string(pollers));
    FaultyIo io;
    AuditOptions o = Opts();
    o.dir = dir_ + "/poll" + std::to_string(pollers);
    o.io = &io;
    o.poll_waiters = pollers;
    auto log = OpenAuditLog(o, clock_);
    ASSERT_TRUE(log.ok());
    int syncs_before = io.syncs.load();
    std::vector<std::thread> threads;
    std::mutex mu;
    std::set<int64_t> seqs;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 125; ++i) {
          auto seq = (*log)->AppendForSeq(Event(std::string(100, 'x'), "t" + std::to_string(t)));
          ASSERT_TRUE(seq.ok());
          std::lock_guard lock(mu);
          EXPECT_TRUE(seqs.insert(*seq).second);
        }
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(seqs.size(), 1000u);
    EXPECT_EQ(*seqs.rbegin(), 999);
    // Group commit: concurrent callers share syncs (the exact count depends on timing).
    int syncs = io.syncs.load() - syncs_before;
    EXPECT_LT(syncs, 1000) << "every event got its own fdatasync";
    auto events = ReadAuditEvents(o.dir);
    ASSERT_TRUE(events.ok()) << events.status();
    ASSERT_EQ(events->size(), 1000u);
    for (size_t i = 0; i < events->size(); ++i) EXPECT_EQ((*events)[i].seq, static_cast<int64_t>(i));
  }
}

TEST_F(AuditLogTest, DiskFullIsUnavailableUnhealthyLeavesNothingPartialAndRecovers) {
  FaultyIo io;
  AuditOptions o = Opts();
  o.io = &io;
  auto log = OpenAuditLog(o, clock_);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Append(Event("/before")).ok());
  io.write_errno = ENOSPC;
  absl::Status s = (*log)->Append(Event("/lost"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(std::string(s.message()).find("No space left"), std::string::npos) << s;
  EXPECT_FALSE((*log)->Healthy());
  EXPECT_EQ((*log)->Size(), 1);
  io.write_errno = 0;  // space returns
  auto seq = (*log)->AppendForSeq(Event("/after"));
  ASSERT_TRUE(seq.ok()) << seq.status();
  EXPECT_EQ(*seq, 1) << "the failed event must not leave a gap or a partial line";
  EXPECT_TRUE((*log)->Healthy());
  log->reset();
  auto events = ReadAuditEvents(dir_);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[1].resource, "/after");
  VerifyReport r = Verify(dir_);
  EXPECT_TRUE(r.ok()) << Problems(r);
}

TEST_F(AuditLogTest, SyncErrorIsUnavailableAndTheEventIsCutBack) {
  FaultyIo io;
  AuditOptions o = Opts();
  o.io = &io;
  auto log = OpenAuditLog(o, clock_);
  ASSERT_TRUE(log.ok());
  io.sync_errno = EIO;
  absl::Status s = (*log)->Append(Event("/lost"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(s.message()).find("fdatasync"), std::string::npos) << s;
  EXPECT_FALSE((*log)->Healthy());
  io.sync_errno = 0;
  ASSERT_TRUE((*log)->Append(Event("/kept")).ok());
  EXPECT_TRUE((*log)->Healthy());
  log->reset();
  auto events = ReadAuditEvents(dir_);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].resource, "/kept");
}

TEST_F(AuditLogTest, StalledDiskTimesOutInsteadOfHanging) {
  FaultyIo io;
  AuditOptions o = Opts();
  o.io = &io;
  o.append_timeout = absl::Milliseconds(100);
  auto log = OpenAuditLog(o, clock_);
  ASSERT_TRUE(log.ok());
  io.Stall(true);
  absl::Status s = (*log)->Append(Event("/slow"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(s.message()).find("did not persist"), std::string::npos) << s;
  EXPECT_FALSE((*log)->Healthy());
  io.Stall(false);
  ASSERT_TRUE((*log)->Append(Event("/fast")).ok());
  EXPECT_TRUE((*log)->Healthy());
}

// Fails writes to index files only (the segment and checkpoints still work).
class IndexFaultIo : public AuditFileIo {
 public:
  std::atomic<bool> fail{false};
  std::atomic<int> failed{0};
  ssize_t Write(int fd, const void* data, size_t size) override {
    char target[4096];
    ssize_t n = ::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), target,
                           sizeof target - 1);
    std::string path(target, n > 0 ? static_cast<size_t>(n) : 0);
    if (fail && path.size() > 4 && path.compare(path.size() - 4, 4, ".idx") == 0) {
      ++failed;
      if (size > 1) {
        // Half an entry reaches the file first, as on a filling disk: it must be cut back.
        (void)AuditFileIo::Write(fd, data, size / 2);
      }
      errno = ENOSPC;
      return -1;
    }
    return AuditFileIo::Write(fd, data, size);
  }
};

// The index is written after the callers are acknowledged (it is derived and never synced), so
// a failed index write neither fails durable events nor leaves a torn or skipped entry: the
// entries stay pending and reach the file in order with the next batch.
TEST_F(AuditLogTest, FailedIndexWriteKeepsEntriesPendingAndCatchesUpInOrder) {
  IndexFaultIo io;
  AuditOptions o = Opts();
  o.io = &io;
  // The writer calls on_durable after the batch's index write (or its failure and cut-back):
  // waiting for it makes every check below deterministic.
  std::mutex mu;
  std::condition_variable cv;
  uint64_t durable_end = 0;
  o.on_durable = [&](uint64_t first, int64_t, std::span<const std::string_view> lines) {
    std::lock_guard lock(mu);
    durable_end = first + lines.size();
    cv.notify_all();
  };
  auto log = OpenAuditLog(o, clock_);
  ASSERT_TRUE(log.ok());
  auto append = [&](const std::string& resource) {
    auto seq = (*log)->AppendForSeq(Event(resource));
    ASSERT_TRUE(seq.ok()) << seq.status();
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10),
                            [&] { return durable_end > static_cast<uint64_t>(*seq); }));
  };
  const std::string idx = dir_ + "/" + internal::IndexName(0);
  append("/a");
  EXPECT_EQ(Slurp(idx).size(), internal::kIndexEntrySize);
  io.fail = true;
  append("/b");  // durable in its segment: acknowledged although its index entry failed
  append("/c");
  EXPECT_EQ(io.failed.load(), 2);
  EXPECT_EQ(Slurp(idx).size(), internal::kIndexEntrySize) << "half-written entries were not cut";
  // Queries and proofs use the in-memory index meanwhile.
  auto page = (*log)->Query(AuditQuery{});
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->items.size(), 3u);
  EXPECT_EQ(page->items[2].resource, "/c");
  io.fail = false;
  append("/d");
  EXPECT_EQ(Slurp(idx).size(), 4 * internal::kIndexEntrySize);
  log->reset();  // a clean stop: no recovery runs, so the file is as the writer left it
  VerifyReport r = Verify(dir_);
  EXPECT_TRUE(r.ok()) << Problems(r);
  std::string entries = Slurp(idx);
  ASSERT_EQ(entries.size(), 4 * internal::kIndexEntrySize);
  std::string seg = Slurp(Seg0(dir_));
  uint64_t expected_offset = 0;
  for (int i = 0; i < 4; ++i) {
    internal::IndexEntry e =
        internal::ReadIndexEntry(entries.data() + i * internal::kIndexEntrySize);
    EXPECT_EQ(e.offset, expected_offset) << "entry " << i;
    expected_offset = seg.find('\n', expected_offset) + 1;
  }
}

TEST_F(AuditLogTest, CheckpointsEveryNEventsFormAVerifiedChain) {
  AuditOptions o = Opts();
  o.checkpoint_every = 10;
  o.checkpoint_interval = absl::Hours(1);
  auto log = OpenAuditLog(o, clock_);
  ASSERT_TRUE(log.ok());
  for (int i = 0; i < 35; ++i) ASSERT_TRUE((*log)->Append(Event("/e" + std::to_string(i))).ok());
  // The writer signs after the batch that crosses N; wait for the third one.
  for (int i = 0; i < 500 && (*log)->Checkpoints().size() < 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  auto cps = (*log)->Checkpoints();
  ASSERT_GE(cps.size(), 4u);  // size 0 at creation, then >= 10, >= 20, >= 30
  for (size_t i = 1; i < cps.size(); ++i) {
    EXPECT_EQ(cps[i].seq, i);
    EXPECT_EQ(cps[i].prev, cps[i - 1].BodyHash());
    EXPECT_EQ(cps[i].root, *(*log)->RootAt(cps[i].tree_size));
  }
  log->reset();  // a clean stop signs the tail
  VerifyReport r = Verify(dir_);
  EXPECT_TRUE(r.ok()) << Problems(r);
  EXPECT_EQ(r.covered, 35u);
}

TEST_F(AuditLogTest, CheckpointAfterTheIntervalCoversAFewEvents) {
  AuditOptions o = Opts();
  o.checkpoint_interval = absl::Milliseconds(20);
  auto log = OpenAuditLog(o, clock_);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Append(Event("/one")).ok());
  uint64_t covered = 0;
  for (int i = 0; i < 1000 && covered < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    auto cp = (*log)->LatestCheckpoint();
    if (cp.ok()) covered = cp->tree_size;
  }
  EXPECT_EQ(covered, 1u);
  EXPECT_TRUE(Verify(dir_).ok());
}

TEST_F(AuditLogTest, SegmentsRotateAndEverythingStillReadsProvesAndVerifies) {
  AuditOptions o = Opts();
  o.segment_bytes = 2000;
  o.checkpoint_every = 7;
  {
    auto log = OpenAuditLog(o, clock_);
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 60; ++i) {
      clock_.Advance(absl::Seconds(1));
      ASSERT_TRUE((*log)->Append(Event("/e" + std::to_string(i))).ok());
    }
  }
  auto segs = internal::ListSegments(dir_);
  ASSERT_TRUE(segs.ok());
  EXPECT_GT(segs->size(), 3u);
  auto log = OpenAuditLog(o, clock_);  // recovery over several segments
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->Size(), 60);
  // Find by time: events are one second apart.
  auto events = ReadAuditEvents(dir_);
  ASSERT_TRUE(events.ok());
  AuditQuery q;
  q.from_ms = (*events)[17].time_ms;
  q.to_ms = (*events)[40].time_ms;
  q.limit = 10;
  auto page = (*log)->Query(q);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->items.size(), 10u);
  EXPECT_EQ(page->items[0].seq, 17);
  EXPECT_EQ(page->next_after_seq, 26);
  q.after_seq = page->next_after_seq;
  page = (*log)->Query(q);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 10u);
  EXPECT_EQ(page->items[0].seq, 27);
  q.after_seq = page->next_after_seq;
  page = (*log)->Query(q);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 3u);  // 37, 38, 39: to_ms is exclusive
  EXPECT_EQ(page->items.back().seq, 39);
  // Inclusion proof of an event in a middle segment verifies against the root.
  auto inc = (*log)->InclusionProof(33, 0);
  ASSERT_TRUE(inc.ok()) << inc.status();
  EXPECT_EQ(inc->line, EncodeEvent((*events)[33]));
  EXPECT_TRUE(VerifyInclusion(LeafHash(inc->line), 33, inc->tree_size, inc->proof, inc->root).ok());
  ASSERT_TRUE(inc->checkpoint.has_value());
  EXPECT_EQ(inc->checkpoint->root, inc->root);
  VerifyReport r = Verify(dir_);
  EXPECT_TRUE(r.ok()) << Problems(r);
}

TEST_F(AuditLogTest, ArchivedSegmentsAreMovedNotRewrittenAndStillReadProveAndVerify) {
  AuditOptions o = Opts();
  o.segment_bytes = 2000;
  o.checkpoint_every = 7;
  auto log = OpenAuditLog(o, clock_);
  ASSERT_TRUE(log.ok());
  for (int i = 0; i < 60; ++i) ASSERT_TRUE((*log)->Append(Event("/e" + std::to_string(i))).ok());
  auto before = internal::ListSegments(dir_);
  ASSERT_TRUE(before.ok());
  ASSERT_GT(before->size(), 3u);
  std::string first_bytes = Slurp(dir_ + "/" + (*before)[0].name);
  uint64_t cut = (*before)[2].first_seq;  // segments 0 and 1 hold only events below it
  auto moved = ArchiveAuditSegments(dir_, cut);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, 2);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/" + (*before)[0].name));
  EXPECT_EQ(Slurp(dir_ + "/archive/" + (*before)[0].name), first_bytes);  // moved byte for byte
  // The running log still reads and proves archived events.
  auto inc = (*log)->InclusionProof(1, 0);
  ASSERT_TRUE(inc.ok()) << inc.status();
  EXPECT_NE(inc->line.find("\"/e1\""), std::string::npos);
  AuditQuery q;
  q.limit = 5;
  auto page = (*log)->Query(q);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->items[0].resource, "/e0");
  // The newest segment never moves, whatever the cut.
  ASSERT_TRUE(ArchiveAuditSegments(dir_, 1'000'000).ok());
  auto after = internal::ListSegments(dir_);
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->back().archived());
  log->reset();
  // A restart and the offline verifier include the archive.
  auto reopened = OpenAuditLog(o, clock_);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->Size(), 60);
  ASSERT_TRUE((*reopened)->Append(Event("/after")).ok());
  reopened->reset();
  VerifyReport r = Verify(dir_);
  EXPECT_TRUE(r.ok()) << Problems(r);
  EXPECT_EQ(r.events, 61u);
  // A change inside an archived segment is found and placed there.
  std::string path = dir_ + "/archive/" + (*before)[0].name;
  std::string bytes = Slurp(path);
  bytes[bytes.find("/e1") + 2] = '9';
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  r = Verify(dir_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems[0].file, "archive/" + (*before)[0].name) << Problems(r);
  EXPECT_EQ(r.problems[0].seq, 1);
}

TEST_F(AuditLogTest, QueryFiltersByActorTenantActionResourceOutcome) {
  auto log = OpenAuditLog(Opts(), clock_);
  ASSERT_TRUE(log.ok());
  for (int i = 0; i < 30; ++i) {
    AuditEvent e = Event("/api/v1/tenants/t" + std::to_string(i % 3) + "/users",
                         i % 2 ? "bob" : "alice", "t" + std::to_string(i % 3));
    e.decision = i % 5 == 0 ? "deny" : "allow";
    e.status = i % 5 == 0 ? 403 : 200;
    e.action = i % 4 == 0 ? "users:read" : "users:create";
    ASSERT_TRUE((*log)->Append(e).ok());
  }
  auto all = ReadAuditEvents(dir_);
  ASSERT_TRUE(all.ok());
  auto count = [&](auto pred) {
    return static_cast<size_t>(std::count_if(all->begin(), all->end(), pred));
  };
  AuditQuery q;
  q.limit = 1000;
  q.actor = "bob";
  q.tenant = "t1";
  auto page = (*log)->Query(q);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->items.size(),
            count([](const AuditEvent& e) { return e.actor_name == "bob" && e.tenant == "t1"; }));
  for (const auto& e : page->items) EXPECT_EQ(e.tenant, "t1");
  AuditQuery q2;
  q2.decision = "deny";
  q2.action = "users:read";
  q2.resource = "/api/v1/tenants/t0";
  page = (*log)->Query(q2);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->items.size(), count([](const AuditEvent& e) {
              return e.decision == "deny" && e.action == "users:read" &&
                     e.resource.rfind("/api/v1/tenants/t0", 0) == 0;
            }));
  EXPECT_GT(page->items.size(), 0u);
  AuditQuery bad;
  bad.limit = 0;
  EXPECT_EQ((*log)->Query(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(AuditLogTest, ConsistencyProofBetweenCheckpointsVerifies) {
  AuditOptions o = Opts();
  o.checkpoint_every = 5;
  auto log = OpenAuditLog(o, clock_);
  ASSERT_TRUE(log.ok());
  for (int i = 0; i < 23; ++i) ASSERT_TRUE((*log)->Append(Event("/e")).ok());
  ASSERT_TRUE((*log)->CheckpointNow().ok());
  auto cps = (*log)->Checkpoints();
  ASSERT_GE(cps.size(), 3u);
  const Checkpoint& a = cps[1];
  const Checkpoint& b = cps.back();
  auto proof = (*log)->ConsistencyProof(a.tree_size, b.tree_size);
  ASSERT_TRUE(proof.ok());
  EXPECT_TRUE(VerifyConsistency(a.tree_size, b.tree_size, a.root, b.root, *proof).ok());
  EXPECT_FALSE(VerifyConsistency(a.tree_size, b.tree_size, b.root, a.root, *proof).ok());
}

// ---- Preallocated segments (zero tail) ----

uint64_t FileSize(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return static_cast<uint64_t>(st.st_size);
}

// Overwrites `bytes` at `offset` of `path` without changing the rest (a crash's partial page).
void WriteAt(const std::string& path, uint64_t offset, const std::string& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.is_open()) << path;
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Copies the log directory of a running log: what a crash (kill -9) would leave on disk.
std::string CrashCopy(const std::string& dir) {
  std::string copy = dir + "-crash";
  std::filesystem::remove_all(copy);
  std::filesystem::copy(dir, copy, std::filesystem::copy_options::recursive);
  return copy;
}

TEST_F(AuditLogTest, SegmentsArePreallocatedWithWrittenZerosAndOverwrittenInPlace) {
  AuditOptions o = Opts();
  o.preallocate_bytes = 1 << 20;
  auto log = OpenAuditLog(o, clock_);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Append(Event("/a")).ok());
  std::string seg = Slurp(Seg0(dir_));
  ASSERT_EQ(seg.size(), 1u << 20) << "the segment is reserved ahead, not grown per batch";
  size_t end = seg.find('\n') + 1;
  EXPECT_EQ(internal::ZeroTailStart(seg), end);
  struct stat st {};
  ASSERT_EQ(::stat(Seg0(dir_).c_str(), &st), 0);
  EXPECT_GE(static_cast<uint64_t>(st.st_blocks) * 512, 1u << 20) << "zeros really written";
  for (int i = 0; i < 20; ++i) ASSERT_TRUE((*log)->Append(Event("/b" + std::to_string(i))).ok());
  EXPECT_EQ(FileSize(Seg0(dir_)), 1u << 20) << "batches overwrite the zeros in place";
  log->reset();  // a clean stop keeps the zero tail
  auto reopened = OpenAuditLog(o, clock_);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->Size(), 21);
  auto seq = (*reopened)->AppendForSeq(Event("/c"));
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(*seq, 21);
  reopened->reset();
  auto events = ReadAuditEvents(dir_);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 22u);
  EXPECT_EQ(events->back().resource, "/c");
  VerifyReport r = Verify(dir_);
  EXPECT_TRUE(r.ok()) << Problems(r);
}

TEST_F(AuditLogTest, CrashLeavesAZeroTailThatRecoveryVerifyAndProofsAccept) {
  auto log = OpenAuditLog(Opts(), clock_);
  ASSERT_TRUE(log.ok());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*log)->Append(Event("/e" + std::to_string(i))).ok());
  ASSERT_TRUE((*log)->CheckpointNow().ok());
  std::string copy = CrashCopy(dir_);
  log->reset();
  std::string seg = Slurp(Seg0(copy));
  ASSERT_GT(seg.size(), internal::ZeroTailStart(seg)) << "the crash copy must end in zeros";
  VerifyReport r = Verify(copy);
  EXPECT_TRUE(r.ok()) << Problems(r);
  EXPECT_EQ(r.events, 10u);
  std::filesystem::remove_all(dir_);
  std::filesystem::rename(copy, dir_);
  auto recovered = OpenAuditLog(Opts(), clock_);
  ASSERT_TRUE(recovered.ok()) << recovered.status();
  EXPECT_EQ((*recovered)->Size(), 10);
  auto inc = (*recovered)->InclusionProof(9, 0);
  ASSERT_TRUE(inc.ok()) << inc.status();
  EXPECT_NE(inc->line.find("\"/e9\""), std::string::npos);
  EXPECT_TRUE(VerifyInclusion(LeafHash(inc->line), 9, inc->tree_size, inc->proof, inc->root).ok());
  auto seq = (*recovered)->AppendForSeq(Event("/after"));
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(*seq, 10);
  recovered->reset();
  r = Verify(dir_);
  EXPECT_TRUE(r.ok()) << Problems(r);
  EXPECT_EQ(r.events, 11u);
}

TEST_F(AuditLogTest, TornRecordFollowedByZerosIsCutAndNeverCountsAsAnEvent) {
  uint64_t end = 0;
  std::string copy;
  {
    auto log = OpenAuditLog(Opts(), clock_);
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE((*log)->Append(Event("/e" + std::to_string(i))).ok());
    ASSERT_TRUE((*log)->CheckpointNow().ok());
    copy = CrashCopy(dir_);
  }
  std::string seg = Slurp(Seg0(copy));
  end = internal::ZeroTailStart(seg);
  // A crash mid-write: the first part of the next batch reached the file, then zeros, then (as
  // pages can reach a disk out of order on power loss) a later part that even ends in '\n'.
  WriteAt(Seg0(copy), end, "{\"v\":1,\"seq\":3,\"time_ms\":0,\"request_id\":\"");
  WriteAt(Seg0(copy), end + 4096, "{\"v\":1,\"seq\":4,\"x\"}\n");
  VerifyReport strict = Verify(copy);
  ASSERT_FALSE(strict.ok());
  EXPECT_NE(Problems(strict).find("incomplete event at the end of the log"), std::string::npos)
      << Problems(strict);
  EXPECT_NE(Problems(strict).find("offset " + std::to_string(end)), std::string::npos)
      << Problems(strict);
  VerifyReport live = Verify(copy, /*allow_tail=*/true);  // past the last checkpoint
  EXPECT_TRUE(live.ok()) << Problems(live);
  EXPECT_EQ(live.events, 3u);
  auto read = ReadAuditEvents(copy);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->size(), 3u);

  std::filesystem::remove_all(dir_);
  std::filesystem::rename(copy, dir_);
  auto log = OpenAuditLog(Opts(), clock_);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->Size(), 3);
  EXPECT_EQ(FileSize(Seg0(dir_)), end) << "the torn record and everything after it are cut";
  auto seq = (*log)->AppendForSeq(Event("/next"));
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(*seq, 3);
  log->reset();
  VerifyReport r = Verify(dir_);
  EXPECT_TRUE(r.ok()) << Problems(r);
  auto events = ReadAuditEvents(dir_);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 4u);
  EXPECT_EQ(events->back().resource, "/next");
}

TEST_F(AuditLogTest, ZeroingSignedEventsIsDetectedAsTruncationNotTakenAsTheEnd) {
  {
    auto log = OpenAuditLog(Opts(), clock_);
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 5; ++i) ASSERT_TRUE((*log)->Append(Event("/e" + std::to_string(i))).ok());
  }
  // An attacker overwrites the last two (signed) events with zeros, as if never written.
  std::string seg = Slurp(Seg0(dir_));
  size_t end = internal::ZeroTailStart(seg);
  size_t third = 0;
  for (int i = 0; i < 3; ++i) third = seg.find('\n', third) + 1;
  WriteAt(Seg0(dir_), third, std::string(end - third, '\0'));
  VerifyReport r = Verify(dir_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(Problems(r).find("are missing (log truncated)"), std::string::npos) << Problems(r);
  auto log = OpenAuditLog(Opts(), clock_);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss) << log.status();
}

TEST_F(AuditLogTest, ZeroTailOfAnEarlierSegmentIsItsEndButANulInsideAnEventIsCorruption) {
  AuditOptions o = Opts();
  o.segment_bytes = 2000;
  {
    auto log = OpenAuditLog(o, clock_);
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 20; ++i) ASSERT_TRUE((*log)->Append(Event("/e" + std::to_string(i))).ok());
  }
  auto segs = internal::ListSegments(dir_);
  ASSERT_TRUE(segs.ok());
  ASSERT_GE(segs->size(), 2u);
  std::string first = dir_ + "/" + (*segs)[0].name;
  uint64_t size = FileSize(first);
  EXPECT_EQ(internal::ZeroTailStart(Slurp(first)), size) << "a full segment's tail is cut";
  // A crash before that cut reached the disk: the full segment still ends in zeros.
  WriteAt(first, size, std::string(3000, '\0'));
  VerifyReport r = Verify(dir_);
  EXPECT_TRUE(r.ok()) << Problems(r);
  {
    auto log = OpenAuditLog(o, clock_);
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_EQ((*log)->Size(), 20);
  }
  // A NUL inside an event of that segment is not an end: it is a changed event.
  WriteAt(first, 10, std::string(1, '\0'));
  r = Verify(dir_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(Problems(r).find((*segs)[0].name), std::string::npos) << Problems(r);
  auto log = OpenAuditLog(o, clock_);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kDataLoss) << log.status();
}

TEST_F(AuditLogTest, PreallocationWithoutRoomFallsBackToExtendingWrites) {
  AuditOptions o = Opts();
  o.segment_bytes = uint64_t{1} << 50;  // no disk here has room for a chunk this size
  o.preallocate_bytes = uint64_t{1} << 49;
  auto log = OpenAuditLog(o, clock_);
  ASSERT_TRUE(log.ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE((*log)->Append(Event("/e" + std::to_string(i))).ok());
  EXPECT_TRUE((*log)->Healthy());
  std::string seg = Slurp(Seg0(dir_));
  EXPECT_EQ(internal::ZeroTailStart(seg), seg.size()) << "the failed chunk was given back";
  log->reset();
  VerifyReport r = Verify(dir_);
  EXPECT_TRUE(r.ok()) << Problems(r);
  EXPECT_EQ(r.events, 5u);
}

TEST_F(AuditLogTest, EveryPreallocationModeRecoversAndVerifies) {
  for (AuditPreallocation mode : {AuditPreallocation::kNone, AuditPreallocation::kZeroFill,
                                  AuditPreallocation::kFallocate}) {
    std::filesystem::remove_all(dir_);
    AuditOptions o = Opts();
    o.preallocation = mode;
    o.preallocate_bytes = 64 << 10;
    o.segment_bytes = 100 << 10;
    for (int round = 0; round < 2; ++round) {
      auto log = OpenAuditLog(o, clock_);
      ASSERT_TRUE(log.ok()) << log.status();
      for (int i = 0; i < 400; ++i) ASSERT_TRUE((*log)->Append(Event("/e" + std::to_string(i))).ok());
    }
    auto events = ReadAuditEvents(dir_);
    ASSERT_TRUE(events.ok()) << events.status();
    ASSERT_EQ(events->size(), 800u);
    for (size_t i = 0; i < events->size(); ++i) ASSERT_EQ((*events)[i].seq, static_cast<int64_t>(i));
    VerifyReport r = Verify(dir_);
    EXPECT_TRUE(r.ok()) << static_cast<int>(mode) << ": " << Problems(r);
  }
}

TEST(AuditEncodeTest, InvalidUtf8IsReplacedNotThrown) {
  AuditEvent e;
  e.resource = "/api/v1/\xff\xfe\xed\xa0\x80ok\xc3";  // bad bytes, a surrogate, a cut sequence
  auto j = common::ParseJsonStrict(EncodeEvent(e));
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ((*j)["resource"], "/api/v1/\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDok\xEF\xBF\xBD");
}

TEST(AuditEncodeTest, DecodeIsTheStrictInverseOfEncode) {
  AuditEvent e = Event("/api/v1/x\"y\\z\n\xc3\xa9");
  e.seq = 42;
  e.time_ms = 1'750'000'000'123;
  e.bytes = 1 << 20;
  e.status = -1;
  std::string line = EncodeEvent(e);
  auto d = DecodeEvent(line);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(EncodeEvent(*d), line);
  EXPECT_EQ(d->bytes, 1 << 20);
  EXPECT_EQ(d->resource, e.resource);
  // Same JSON meaning, other bytes: refused (one encoding per event).
  for (std::string bad : {
           std::string(line).replace(line.find("\"seq\":42"), 8, "\"seq\":042"),
           std::string(line).replace(line.find("\\u000a"), 6, "\\n"),
           std::string(line).replace(line.find("\\u000a"), 6, "\\u000A"),
           std::string(line).replace(line.find("\"v\":1"), 5, "\"v\":2"),
           std::string(line).replace(line.find(",\"bytes\""), 1, ", "),
           line + " ",
           std::string(line).replace(line.find("\xc3\xa9"), 2, "\\u00e9"),
       }) {
    EXPECT_FALSE(DecodeEvent(bad).ok()) << bad;
  }
}

TEST(AuditEncodeTest, EveryFieldRoundTripsThroughAJsonParser) {
  common::SeededRng rng(7);
  for (int i = 0; i < 2000; ++i) {
    AuditEvent e;
    e.seq = i;
    e.time_ms = 1'750'000'000'000 + i;
    e.status = 200 + i % 300;
    // Random valid text: ASCII incl. quotes, backslashes and control characters, plus 2-4 byte
    // UTF-8 characters.
    std::string bytes = rng.Bytes(40);
    for (unsigned char b : bytes) {
      if (b % 5 == 0) {
        e.resource += "\xc3\xa9";
      } else if (b % 7 == 0) {
        e.resource += "\xf0\x9f\x9a\x80";
      } else {
        e.resource.push_back(static_cast<char>(b % 128));
      }
    }
    e.reason = "say \"hi\"\\\n\t";
    e.actor_name = "a\x01b";
    auto j = common::ParseJsonStrict(EncodeEvent(e));
    ASSERT_TRUE(j.ok()) << j.status();
    EXPECT_EQ((*j)["resource"], e.resource);
    EXPECT_EQ((*j)["reason"], e.reason);
    EXPECT_EQ((*j)["actor_name"], e.actor_name);
    EXPECT_EQ((*j)["seq"], i);
    auto d = DecodeEvent(EncodeEvent(e));
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(EncodeEvent(*d), EncodeEvent(e));
    EXPECT_EQ(d->resource, e.resource);
    EXPECT_EQ((*j)["status"], e.status);
  }
}

}  // namespace
}  // namespace warden::audit
