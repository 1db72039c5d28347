// Tamper tests for `audit verify` (issue 4, must show 2): each attack on a copy of the log is
// detected, with the place named (file, seq, byte offset); 10,000 random byte changes are all
// detected. The log is written by the real AuditLog, then attacked on disk.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "audit/audit.h"
#include "audit/segment.h"
#include "audit/verify.h"

namespace warden::audit {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void Put(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
}

std::string Problems(const VerifyReport& r) {
  std::string out;
  for (const auto& p : r.problems) out += p.ToString() + "\n";
  return out;
}

constexpr int kEvents = 64;

class AuditVerifyTest : public ::testing::Test {
 protected:
  // Writes a log of `events` events with checkpoints at every multiple of `every` (and size 0).
  // Without preallocation by default, so that the tests below can edit the segments as plain
  // lines; the random-change test keeps the zero tail of preallocated segments.
  void BuildLog(const std::string& dir, int events, int every,
                AuditPreallocation prealloc = AuditPreallocation::kNone) {
    AuditOptions o;
    o.dir = dir;
    o.preallocation = prealloc;
    o.checkpoint_every = static_cast<uint64_t>(every);
    o.checkpoint_interval = absl::Hours(1);
    o.segment_bytes = 6000;
    auto log = OpenAuditLog(o, clock_);
    ASSERT_TRUE(log.ok()) << log.status();
    for (int i = 0; i < events; ++i) {
      AuditEvent e;
      e.actor_kind = "user";
      e.actor_name = i % 2 ? "alice" : "bob";
      e.action = "datasets:read";
      e.method = "GET";
      e.resource = "/api/v1/tenants/acme/datasets/d" + std::to_string(i);
      e.decision = "allow";
      e.status = 200;
      e.bytes = 1000 * i;
      clock_.Advance(absl::Milliseconds(10));
      ASSERT_TRUE((*log)->Append(e).ok());
      // One event per batch keeps checkpoint sizes at multiples of `every` (deterministic).
      if ((i + 1) % every == 0) {
        ASSERT_TRUE((*log)->CheckpointNow().ok());
      }
    }
  }

  void SetUp() override {
    char tmpl[] = "/tmp/warden-audit-verify-XXXXXX";
    dir_ = mkdtemp(tmpl);
    BuildLog(dir_, kEvents, 16);
    Reload();
    ASSERT_GE(segments_.size(), 3u);
  }
  void Reload() {
    pem_ = Slurp(dir_ + "/audit.pub");
    auto key = AuditVerifyingKey::FromPem(pem_);
    ASSERT_TRUE(key.ok());
    key_.emplace(*std::move(key));
    auto segs = internal::ListSegments(dir_);
    ASSERT_TRUE(segs.ok());
    segments_ = *segs;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  VerifyReport Verify(std::optional<std::string> trusted = std::nullopt) {
    VerifyOptions o;
    o.dir = dir_;
    o.trusted_checkpoint = trusted;
    auto r = VerifyAuditLog(o, *key_);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : VerifyReport{};
  }

  // Where event `seq` is: segment file and byte offset of its line.
  std::pair<std::string, size_t> Locate(uint64_t seq) {
    for (size_t i = segments_.size(); i-- > 0;) {
      if (segments_[i].first_seq <= seq) {
        std::string data = Slurp(dir_ + "/" + segments_[i].name);
        size_t pos = 0;
        for (uint64_t s = segments_[i].first_seq; s < seq; ++s) pos = data.find('\n', pos) + 1;
        return {segments_[i].name, pos};
      }
    }
    return {"", 0};
  }

  std::string dir_, pem_;
  std::optional<AuditVerifyingKey> key_;
  std::vector<internal::SegmentFile> segments_;
  common::FakeClock clock_;
};

TEST_F(AuditVerifyTest, CleanLogVerifies) {
  VerifyReport r = Verify();
  EXPECT_TRUE(r.ok()) << Problems(r);
  EXPECT_EQ(r.events, static_cast<uint64_t>(kEvents));
  EXPECT_EQ(r.covered, static_cast<uint64_t>(kEvents));
  EXPECT_EQ(r.checkpoints, 5u);  // size 0, 16, 32, 48, 64
}

TEST_F(AuditVerifyTest, FlippedByteInAnEventIsNamedWithFileSeqAndOffset) {
  auto [file, offset] = Locate(20);
  std::string data = Slurp(dir_ + "/" + file);
  size_t at = data.find("/d20", offset);
  data[at + 2] ^= 0x01;  // "d20" -> "e20": still valid JSON, only the hash can tell
  Put(dir_ + "/" + file, data);
  VerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems[0].file, file) << Problems(r);
  EXPECT_EQ(r.problems[0].seq, 20) << Problems(r);
  EXPECT_EQ(r.problems[0].offset, static_cast<int64_t>(offset)) << Problems(r);
  // And the signed checkpoint that covers it fails, naming the same event.
  EXPECT_NE(Problems(r).find("checkpoint seq 2 (tree size 32) does not match"), std::string::npos)
      << Problems(r);
  EXPECT_NE(Problems(r).find("the first changed event is seq 20"), std::string::npos) << Problems(r);
  EXPECT_EQ(r.covered, 16u);
}

TEST_F(AuditVerifyTest, DeletedEventIsNamed) {
  auto [file, offset] = Locate(10);
  std::string data = Slurp(dir_ + "/" + file);
  data.erase(offset, data.find('\n', offset) + 1 - offset);
  Put(dir_ + "/" + file, data);
  VerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems[0].file, file);
  EXPECT_EQ(r.problems[0].seq, 10);
  EXPECT_EQ(r.problems[0].offset, static_cast<int64_t>(offset));
  EXPECT_NE(r.problems[0].message.find("events seq 10..10 are missing"), std::string::npos)
      << Problems(r);
}

TEST_F(AuditVerifyTest, EventDeletedFromTheEndOfASegmentIsNamed) {
  const auto& seg = segments_[0];
  std::string data = Slurp(dir_ + "/" + seg.name);
  size_t last = data.rfind('\n', data.size() - 2) + 1;
  Put(dir_ + "/" + seg.name, data.substr(0, last));
  VerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  uint64_t gone = segments_[1].first_seq - 1;
  EXPECT_EQ(r.problems[0].file, seg.name) << Problems(r);
  EXPECT_EQ(r.problems[0].seq, static_cast<int64_t>(gone)) << Problems(r);
  EXPECT_EQ(r.problems[0].offset, static_cast<int64_t>(last)) << Problems(r);
  EXPECT_NE(Problems(r).find("events seq " + std::to_string(gone) + ".." + std::to_string(gone) +
                             " are missing"),
            std::string::npos)
      << Problems(r);
}

TEST_F(AuditVerifyTest, SwappedEventsAreNamed) {
  auto [file, offset] = Locate(10);
  std::string data = Slurp(dir_ + "/" + file);
  size_t mid = data.find('\n', offset) + 1;
  size_t end = data.find('\n', mid) + 1;
  std::string a = data.substr(offset, mid - offset), b = data.substr(mid, end - mid);
  data.replace(offset, end - offset, b + a);
  Put(dir_ + "/" + file, data);
  VerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems[0].seq, 10);
  EXPECT_EQ(r.problems[0].offset, static_cast<int64_t>(offset));
  EXPECT_NE(r.problems[0].message.find("event seq 11 where seq 10 was expected"),
            std::string::npos)
      << Problems(r);
}

TEST_F(AuditVerifyTest, SegmentCutMidEventIsNamed) {
  const std::string last = segments_.back().name;
  std::string data = Slurp(dir_ + "/" + last);
  size_t cut = data.size() - 40;
  size_t line_start = data.rfind('\n', cut) + 1;
  Put(dir_ + "/" + last, data.substr(0, cut));
  VerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems[0].file, last) << Problems(r);
  EXPECT_EQ(r.problems[0].seq, kEvents - 1);
  EXPECT_EQ(r.problems[0].offset, static_cast<int64_t>(line_start));
  EXPECT_NE(Problems(r).find("covers 64 events but the log has only 63"), std::string::npos)
      << Problems(r);
}

TEST_F(AuditVerifyTest, SegmentCutAtAnEventBoundaryIsNamed) {
  const std::string last = segments_.back().name;
  std::string data = Slurp(dir_ + "/" + last);
  size_t cut = data.rfind('\n', data.size() - 2) + 1;  // drop the last whole event
  Put(dir_ + "/" + last, data.substr(0, cut));
  VerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(Problems(r).find("events seq 63..63 are missing (log truncated)"), std::string::npos)
      << Problems(r);
}

TEST_F(AuditVerifyTest, DeletedSegmentIsNamedAsAMissingRange) {
  const auto& gone = segments_[1];
  std::filesystem::remove(dir_ + "/" + gone.name);
  VerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems[0].file, segments_[2].name) << Problems(r);
  EXPECT_EQ(r.problems[0].seq, static_cast<int64_t>(gone.first_seq));
  EXPECT_NE(r.problems[0].message.find("events seq " + std::to_string(gone.first_seq) + ".." +
                                       std::to_string(segments_[2].first_seq - 1) +
                                       " are missing"),
            std::string::npos)
      << Problems(r);
}

// Checkpoint records are 8 lines each.
std::vector<std::string> SplitCheckpoints(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = pos;
    for (int i = 0; i < 8; ++i) end = text.find('\n', end) + 1;
    out.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

TEST_F(AuditVerifyTest, EditedCheckpointIsNamed) {
  std::string path = dir_ + "/checkpoints.log";
  auto cps = SplitCheckpoints(Slurp(path));
  ASSERT_EQ(cps.size(), 5u);
  size_t offset = cps[0].size() + cps[1].size();
  // Claim checkpoint 2 covers 31 events instead of 32 (hiding the 32nd).
  cps[2].replace(cps[2].find("\n32\n"), 4, "\n31\n");
  Put(path, cps[0] + cps[1] + cps[2] + cps[3] + cps[4]);
  VerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems[0].file, "checkpoints.log");
  EXPECT_EQ(r.problems[0].seq, 2);
  EXPECT_EQ(r.problems[0].offset, static_cast<int64_t>(offset));
  EXPECT_NE(r.problems[0].message.find("signature"), std::string::npos) << Problems(r);
}

TEST_F(AuditVerifyTest, DeletedCheckpointIsNamed) {
  std::string path = dir_ + "/checkpoints.log";
  auto cps = SplitCheckpoints(Slurp(path));
  Put(path, cps[0] + cps[1] + cps[3] + cps[4]);
  VerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems[0].seq, 3);
  EXPECT_NE(r.problems[0].message.find("position 2 has seq 3"), std::string::npos) << Problems(r);
}

TEST_F(AuditVerifyTest, LogRewrittenAndResignedWithAnotherKeyIsNamed) {
  // The attacker edits an event and re-signs a whole new, internally consistent chain with a
  // key of their own. Against the auditor's key the first checkpoint already fails.
  auto [file, offset] = Locate(6);
  std::string data = Slurp(dir_ + "/" + file);
  size_t at = data.find("\"bob\"", offset);
  ASSERT_LT(at, data.find('\n', offset));
  data.replace(at, 5, "\"eve\"");
  Put(dir_ + "/" + file, data);
  MerkleTree tree;
  for (const auto& seg : segments_) {
    std::string d = Slurp(dir_ + "/" + seg.name);
    for (size_t pos = 0; pos < d.size();) {
      size_t nl = d.find('\n', pos);
      tree.Append(LeafHash(std::string_view(d).substr(pos, nl - pos)));
      pos = nl + 1;
    }
  }
  auto other = AuditSigningKey::Generate();
  ASSERT_TRUE(other.ok());
  std::string forged;
  std::optional<Checkpoint> prev;
  for (uint64_t size : {0, 16, 32, 48, 64}) {
    auto cp = SignNextCheckpoint(*other, prev ? &*prev : nullptr, size, *tree.RootAt(size), 1);
    ASSERT_TRUE(cp.ok());
    forged += cp->Encode();
    prev = *cp;
  }
  Put(dir_ + "/checkpoints.log", forged);
  VerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems[0].file, file) << Problems(r);  // the index still names the edited event
  EXPECT_EQ(r.problems[0].seq, 6);
  std::string all = Problems(r);
  EXPECT_NE(all.find("checkpoints.log offset 0: checkpoint seq 0"), std::string::npos) << all;
  EXPECT_EQ(r.covered, 0u);
  // With the attacker's key (as if the auditor had been handed it) it would pass the
  // signatures but not the index; the point of --pubkey from a trusted source.
}

TEST_F(AuditVerifyTest, UnsignedTailIsAProblemUnlessAllowed) {
  const auto& last = segments_.back();
  AuditEvent e;
  e.seq = kEvents;
  e.time_ms = absl::ToUnixMillis(clock_.Now()) + 1;
  std::string line = EncodeEvent(e);
  std::string seg_path = dir_ + "/" + last.name;
  std::string data = Slurp(seg_path);
  std::string index = Slurp(dir_ + "/" + internal::IndexName(last.first_seq));
  internal::AppendIndexEntry(index, {data.size(), e.time_ms, internal::HashPrefix(LeafHash(line))});
  Put(seg_path, data + line + "\n");
  Put(dir_ + "/" + internal::IndexName(last.first_seq), index);
  VerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(Problems(r).find("events seq 64..64 are not covered"), std::string::npos) << Problems(r);
  VerifyOptions o;
  o.dir = dir_;
  o.public_key_pem = pem_;
  o.allow_unsigned_tail = true;
  auto allowed = VerifyAuditLog(o);
  ASSERT_TRUE(allowed.ok());
  EXPECT_TRUE(allowed->ok()) << Problems(*allowed);
}

TEST_F(AuditVerifyTest, LiveCopyEndingMidWriteIsAcceptedOnlyWithTheTailAllowed) {
  // As a copy taken while the server writes: one more whole event without its index entry yet,
  // then half of the next line.
  const auto& last = segments_.back();
  AuditEvent e;
  e.seq = kEvents;
  e.time_ms = absl::ToUnixMillis(clock_.Now()) + 1;
  std::string seg_path = dir_ + "/" + last.name;
  Put(seg_path, Slurp(seg_path) + EncodeEvent(e) + "\n{\"v\":1,\"seq\":65,\"ti");
  VerifyReport strict = Verify();
  ASSERT_FALSE(strict.ok());
  EXPECT_NE(Problems(strict).find("incomplete event at the end of the log"), std::string::npos)
      << Problems(strict);
  VerifyOptions o;
  o.dir = dir_;
  o.allow_unsigned_tail = true;
  auto live = VerifyAuditLog(o, *key_);
  ASSERT_TRUE(live.ok());
  EXPECT_TRUE(live->ok()) << Problems(*live);
  EXPECT_EQ(live->covered, static_cast<uint64_t>(kEvents));
  // But not inside what a checkpoint covers: cut a signed event in half.
  std::string data = Slurp(seg_path);
  Put(seg_path, data.substr(0, data.rfind("\n{\"v\":1,\"seq\":63") + 20));
  live = VerifyAuditLog(o, *key_);
  ASSERT_TRUE(live.ok());
  EXPECT_FALSE(live->ok());
}

TEST_F(AuditVerifyTest, TrustedCheckpointDetectsLogAndCheckpointsCutBackTogether) {
  std::string path = dir_ + "/checkpoints.log";
  auto cps = SplitCheckpoints(Slurp(path));
  std::string kept = cps.back();  // the auditor kept the latest checkpoint (size 64)
  // Cut everything back to 48 events and the checkpoints that cover them: consistent in itself.
  std::vector<std::string> lines;
  for (const auto& seg : segments_) {
    std::string d = Slurp(dir_ + "/" + seg.name);
    for (size_t pos = 0; pos < d.size();) {
      size_t nl = d.find('\n', pos);
      lines.push_back(d.substr(pos, nl - pos));
      pos = nl + 1;
    }
    std::filesystem::remove(dir_ + "/" + seg.name);
    std::filesystem::remove(dir_ + "/" + internal::IndexName(seg.first_seq));
  }
  std::string seg, index;
  for (int i = 0; i < 48; ++i) {
    internal::AppendIndexEntry(index, {seg.size(), internal::ParseEventHeader(lines[i])->time_ms,
                                       internal::HashPrefix(LeafHash(lines[i]))});
    seg += lines[i] + "\n";
  }
  Put(dir_ + "/" + internal::SegmentName(0), seg);
  Put(dir_ + "/" + internal::IndexName(0), index);
  Put(path, cps[0] + cps[1] + cps[2] + cps[3]);
  EXPECT_TRUE(Verify().ok()) << "a consistent cut-back log verifies on its own (by design)";
  VerifyReport r = Verify(kept);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(Problems(r).find("is not in this log's chain"), std::string::npos) << Problems(r);
}

TEST_F(AuditVerifyTest, TenThousandRandomByteChangesAreAllDetected) {
  // A smaller log (two segments, checkpoints at 0 and 32) keeps 10,000 full verifications fast;
  // every kind of file is still in it.
  std::filesystem::remove_all(dir_);
  BuildLog(dir_, 32, 32, AuditPreallocation::kZeroFill);
  Reload();
  {
    std::string last = Slurp(dir_ + "/" + segments_.back().name);
    ASSERT_LT(internal::ZeroTailStart(last), last.size()) << "changes in the zero tail are tried too";
  }
  ASSERT_TRUE(Verify().ok());
  // Every file verify reads: segments, indexes, checkpoints.
  std::vector<std::pair<std::string, size_t>> files;
  size_t total = 0;
  for (const auto& seg : segments_) {
    for (const std::string& name : {seg.name, internal::IndexName(seg.first_seq)}) {
      size_t size = std::filesystem::file_size(dir_ + "/" + name);
      files.emplace_back(name, size);
      total += size;
    }
  }
  files.emplace_back("checkpoints.log", std::filesystem::file_size(dir_ + "/checkpoints.log"));
  total += files.back().second;
  std::mt19937_64 rng(20261126);
  int undetected = 0;
  for (int i = 0; i < 10000; ++i) {
    size_t pick = rng() % total;
    size_t f = 0;
    while (pick >= files[f].second) pick -= files[f++].second;
    std::string path = dir_ + "/" + files[f].first;
    int fd = ::open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char orig = 0;
    ASSERT_EQ(::pread(fd, &orig, 1, static_cast<off_t>(pick)), 1);
    char changed = static_cast<char>(orig ^ static_cast<char>(1 + rng() % 255));
    ASSERT_EQ(::pwrite(fd, &changed, 1, static_cast<off_t>(pick)), 1);
    VerifyReport r = Verify();
    ASSERT_EQ(::pwrite(fd, &orig, 1, static_cast<off_t>(pick)), 1);
    ::close(fd);
    if (r.ok()) {
      ++undetected;
      ADD_FAILURE() << "undetected change at " << files[f].first << " offset " << pick;
      if (undetected > 5) break;
    } else {
      // The first problem names a file (or, for a checkpoint that no longer parses, its
      // position); never a vague "something is wrong".
      EXPECT_FALSE(r.problems[0].file.empty()) << r.problems[0].ToString();
    }
  }
  VerifyReport clean = Verify();
  EXPECT_TRUE(clean.ok()) << Problems(clean);
}

}  // namespace
}  // namespace warden::audit
