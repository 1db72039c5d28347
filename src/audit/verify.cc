#include "audit/verify.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "audit/merkle.h"
#include "audit/segment.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::audit {
namespace {

using common::StrCat;

// The right edge of a Merkle tree being built leaf by leaf: O(log n) hashes, the root of the
// leaves so far in O(log n). Enough to check every checkpoint while streaming the log once.
class CompactRange {
 public:
  void Append(const MerkleHash& leaf) {
    hashes_.push_back(leaf);
    for (uint64_t s = size_; (s & 1) != 0; s >>= 1) {
      MerkleHash right = hashes_.back();
      hashes_.pop_back();
      hashes_.back() = NodeHash(hashes_.back(), right);
    }
    ++size_;
  }
  uint64_t size() const { return size_; }
  MerkleHash Root() const {
    if (hashes_.empty()) return EmptyRootHash();
    MerkleHash r = hashes_.back();
    for (size_t i = hashes_.size() - 1; i-- > 0;) r = NodeHash(hashes_[i], r);
    return r;
  }

 private:
  std::vector<MerkleHash> hashes_;
  uint64_t size_ = 0;
};

struct ParsedCheckpoint {
  Checkpoint cp;
  int64_t offset = 0;
  bool valid = false;  // parsed, signed by the key, and linked to the previous valid one
};

class Verifier {
 public:
  Verifier(const VerifyOptions& o, const AuditVerifyingKey& key, VerifyReport& r)
      : opts_(o), key_(key), report_(r) {}

  void Run();

 private:
  // Problems with events, segments and indexes come first in the report (in log order), then
  // those with checkpoints: the first line of a report is the first bad place in the log.
  void Problem(std::string file, int64_t seq, int64_t offset, std::string message) {
    auto& list = file == internal::kCheckpointsFile ? checkpoint_problems_ : report_.problems;
    list.push_back({std::move(file), seq, offset, std::move(message)});
  }

 public:
  void Finish() {
    report_.problems.insert(report_.problems.end(), checkpoint_problems_.begin(),
                            checkpoint_problems_.end());
  }

 private:
  std::vector<VerifyProblem> checkpoint_problems_;
  uint64_t max_checkpoint_size_ = 0;  // largest tree size of a valid checkpoint
  uint64_t next_header_seq_ = 0;  // seq the next event should carry (resynchronised on a gap)
  void LoadCheckpoints();
  void CheckRootsAt(uint64_t size);
  void VerifySegment(const internal::SegmentFile& seg, bool last);

  struct Place {
    std::string file;
    int64_t offset;
  };
  Place PlaceOf(uint64_t seq) const {
    auto it = places_.upper_bound(seq);
    if (it == places_.begin()) return {"", -1};
    --it;
    return {it->second.file, -1};
  }

  const VerifyOptions& opts_;
  const AuditVerifyingKey& key_;
  VerifyReport& report_;
  std::vector<ParsedCheckpoint> cps_;
  size_t next_cp_ = 0;  // index into cps_ (sorted by position) of the next root to check
  CompactRange tree_;
  uint64_t last_good_size_ = 0;  // largest checkpoint size whose root matched
  // First event whose leaf hash differs from its index entry (a hint for root mismatches).
  std::optional<VerifyProblem> index_hint_;
  std::map<uint64_t, Place> places_;  // first seq of each segment -> file
};

void Verifier::LoadCheckpoints() {
  std::string file(internal::kCheckpointsFile);
  auto data = internal::ReadWholeFile(StrCat(opts_.dir, "/", file));
  if (!data.ok()) {
    Problem(file, -1, -1, StrCat("no checkpoints: ", data.status().message()));
    return;
  }
  size_t pos = 0;
  const Checkpoint* prev = nullptr;
  int64_t position = 0;
  while (pos < data->size()) {
    size_t end = pos;
    int lines = 0;
    while (lines < 8) {
      size_t nl = data->find('\n', end);
      if (nl == std::string::npos) break;
      end = nl + 1;
      ++lines;
    }
    if (lines < 8) {
      Problem(file, position, static_cast<int64_t>(pos),
              "incomplete checkpoint at the end of the file (cut short or edited)");
      break;
    }
    ParsedCheckpoint pc;
    pc.offset = static_cast<int64_t>(pos);
    auto cp = ParseCheckpoint(std::string_view(*data).substr(pos, end - pos));
    pos = end;
    if (!cp.ok()) {
      Problem(file, position, pc.offset,
              StrCat("checkpoint #", position, " does not parse: ", cp.status().message()));
      ++position;
      prev = nullptr;
      continue;
    }
    pc.cp = *std::move(cp);
    if (absl::Status s = VerifyCheckpoint(pc.cp, key_); !s.ok()) {
      Problem(file, static_cast<int64_t>(pc.cp.seq), pc.offset,
              StrCat("checkpoint seq ", pc.cp.seq, ": ", s.message()));
    } else if (pc.cp.seq != static_cast<uint64_t>(position)) {
      Problem(file, static_cast<int64_t>(pc.cp.seq), pc.offset,
              StrCat("checkpoint at position ", position, " has seq ", pc.cp.seq,
                     " (a checkpoint was deleted, duplicated or reordered)"));
    } else if ((prev == nullptr && position > 0) ||
               (prev != nullptr && pc.cp.prev != prev->BodyHash()) ||
               (prev == nullptr && pc.cp.prev != MerkleHash{})) {
      Problem(file, static_cast<int64_t>(pc.cp.seq), pc.offset,
              StrCat("checkpoint seq ", pc.cp.seq,
                     " does not link to the checkpoint before it (prev hash differs)"));
    } else if (prev != nullptr &&
               (pc.cp.tree_size < prev->tree_size || pc.cp.time_ms < prev->time_ms)) {
      Problem(file, static_cast<int64_t>(pc.cp.seq), pc.offset,
              StrCat("checkpoint seq ", pc.cp.seq, " goes back in tree size or time"));
    } else {
      pc.valid = true;
    }
    ++position;
    cps_.push_back(std::move(pc));
    prev = cps_.back().valid ? &cps_.back().cp : nullptr;
  }
  report_.checkpoints = static_cast<uint64_t>(position);
  for (const auto& pc : cps_) {
    if (pc.valid) max_checkpoint_size_ = std::max(max_checkpoint_size_, pc.cp.tree_size);
  }
}

void Verifier::CheckRootsAt(uint64_t size) {
  std::string file(internal::kCheckpointsFile);
  while (next_cp_ < cps_.size() && cps_[next_cp_].cp.tree_size <= size) {
    const ParsedCheckpoint& pc = cps_[next_cp_++];
    if (!pc.valid || pc.cp.tree_size != size) continue;  // sizes going back were reported
    if (tree_.Root() == pc.cp.root) {
      last_good_size_ = size;
      report_.covered = std::max(report_.covered, size);
      continue;
    }
    std::string where;
    if (index_hint_ && index_hint_->seq >= static_cast<int64_t>(last_good_size_) &&
        index_hint_->seq < static_cast<int64_t>(size)) {
      where = StrCat("; the first changed event is seq ", index_hint_->seq, " (", index_hint_->file,
                     " offset ", index_hint_->offset, ")");
    } else {
      where = StrCat("; the change is in events seq ", last_good_size_, "..", size - 1,
                     " (from ", PlaceOf(last_good_size_).file, ")");
    }
    Problem(file, static_cast<int64_t>(pc.cp.seq), pc.offset,
            StrCat("checkpoint seq ", pc.cp.seq, " (tree size ", size,
                   ") does not match the events: their Merkle root differs from the signed one",
                   where));
  }
}

void Verifier::VerifySegment(const internal::SegmentFile& seg, bool last) {
  const uint64_t expected_first = next_header_seq_;
  places_[tree_.size()] = {seg.name, 0};
  if (seg.first_seq != expected_first) {
    next_header_seq_ = seg.first_seq;  // report a gap once, not again at its first event
    if (seg.first_seq > expected_first) {
      Problem(seg.name, static_cast<int64_t>(expected_first), 0,
              StrCat("events seq ", expected_first, "..", seg.first_seq - 1,
                     " are missing: this segment starts at seq ", seg.first_seq));
    } else {
      Problem(seg.name, static_cast<int64_t>(seg.first_seq), 0,
              StrCat("segment starts at seq ", seg.first_seq, " but seq ", expected_first,
                     " was expected (overlapping or duplicated segment)"));
    }
  }
  std::string path = StrCat(opts_.dir, "/", seg.name);
  auto data_or = internal::ReadWholeFile(path);
  if (!data_or.ok()) {
    Problem(seg.name, -1, -1, std::string(data_or.status().message()));
    return;
  }
  // The zero tail is preallocated space, not events (segment.h); it may end any segment (the
  // writer cuts a full segment's tail, but a crash can come first).
  const std::string_view data(data_or->data(), internal::ZeroTailStart(*data_or));
  std::string idx_name = seg.index;
  auto index = internal::ReadWholeFile(StrCat(opts_.dir, "/", idx_name));
  if (!index.ok()) Problem(idx_name, -1, -1, std::string(index.status().message()));
  bool index_reported = !index.ok();
  uint64_t in_segment = 0;
  size_t pos = 0;
  while (pos < data.size()) {
    const uint64_t seq = tree_.size();
    const size_t nl = internal::LineEnd(data, pos);
    if (nl == std::string_view::npos) {
      // A copy of a live log may end mid-write; with --allow-unsigned-tail that is accepted
      // when it is past every checkpoint (it is not covered by a signature anyway).
      if (last && opts_.allow_unsigned_tail && seq >= max_checkpoint_size_) break;
      Problem(seg.name, static_cast<int64_t>(seq), static_cast<int64_t>(pos),
              last ? "incomplete event at the end of the log (a crash mid-write, or cut short)"
                   : "incomplete event at the end of a segment that is not the last");
      break;
    }
    std::string_view line = data.substr(pos, nl - pos);
    auto h = internal::ParseEventHeader(line);
    if (!h) {
      Problem(seg.name, static_cast<int64_t>(seq), static_cast<int64_t>(pos),
              StrCat("event at position seq ", seq, " is not a v1 audit event"));
    } else if (h->seq != next_header_seq_) {
      const uint64_t want = next_header_seq_;
      Problem(seg.name, static_cast<int64_t>(want), static_cast<int64_t>(pos),
              h->seq > want ? StrCat("event seq ", h->seq, " where seq ", want,
                                     " was expected: events seq ", want, "..", h->seq - 1,
                                     " are missing (deleted or reordered)")
                            : StrCat("event seq ", h->seq, " where seq ", want,
                                     " was expected (duplicated or reordered event)"));
    }
    next_header_seq_ = h ? h->seq + 1 : next_header_seq_ + 1;
    MerkleHash leaf = LeafHash(line);
    if (index.ok()) {
      size_t at = in_segment * internal::kIndexEntrySize;
      if (at + internal::kIndexEntrySize > index->size()) {
        // A live copy's index may lag its segment by the batch being written.
        bool live_tail = last && opts_.allow_unsigned_tail && seq >= max_checkpoint_size_;
        if (!index_reported && !live_tail) {
          Problem(idx_name, static_cast<int64_t>(seq), static_cast<int64_t>(at),
                  StrCat("index has no entry for seq ", seq, " (index cut short or event added)"));
          index_reported = true;
        }
      } else {
        internal::IndexEntry e = internal::ReadIndexEntry(index->data() + at);
        bool same_event = e.hash_prefix == internal::HashPrefix(leaf);
        if (!same_event && !index_hint_) {
          index_hint_ = VerifyProblem{seg.name, static_cast<int64_t>(seq),
                                      static_cast<int64_t>(pos), ""};
        }
        if (!index_reported &&
            (!same_event || e.offset != pos || (h && e.time_ms != h->time_ms))) {
          Problem(same_event ? idx_name : seg.name, static_cast<int64_t>(seq),
                  same_event ? static_cast<int64_t>(at) : static_cast<int64_t>(pos),
                  same_event ? StrCat("index entry for seq ", seq, " is wrong (edited index)")
                             : StrCat("event seq ", seq,
                                      " is not the event its index entry recorded (edited "
                                      "event, or edited index)"));
          index_reported = true;
        }
      }
    }
    tree_.Append(leaf);
    ++in_segment;
    CheckRootsAt(tree_.size());
    pos = nl + 1;
  }
  const uint64_t entries = index.ok() ? index->size() / internal::kIndexEntrySize : 0;
  const bool lagging_live_index = index.ok() && last && opts_.allow_unsigned_tail &&
                                  index->size() % internal::kIndexEntrySize == 0 &&
                                  entries < in_segment &&
                                  seg.first_seq + entries >= max_checkpoint_size_;
  if (index.ok() && !index_reported && !lagging_live_index &&
      index->size() != in_segment * internal::kIndexEntrySize) {
    if (index->size() > in_segment * internal::kIndexEntrySize &&
        index->size() % internal::kIndexEntrySize == 0) {
      Problem(seg.name, static_cast<int64_t>(seg.first_seq + in_segment),
              static_cast<int64_t>(data.size()),
              StrCat("the segment ends after ", in_segment, " events but its index records ",
                     index->size() / internal::kIndexEntrySize,
                     " (events removed from the end of the segment)"));
    } else {
      Problem(idx_name, -1, static_cast<int64_t>(in_segment * internal::kIndexEntrySize),
              StrCat("index has ", index->size(), " bytes for ", in_segment,
                     " events (edited index)"));
    }
  }
}

void Verifier::Run() {
  LoadCheckpoints();
  CheckRootsAt(0);
  auto segments = internal::ListSegments(opts_.dir);
  if (!segments.ok()) {
    Problem("", -1, -1, std::string(segments.status().message()));
    return;
  }
  report_.segments = segments->size();
  if (segments->empty()) Problem("", 0, -1, "no segment files (seg-*.jsonl) in the directory");
  for (size_t i = 0; i < segments->size(); ++i) {
    VerifySegment((*segments)[i], i + 1 == segments->size());
  }
  report_.events = tree_.size();
  // Checkpoints that claim more events than there are: the log was cut after they were signed.
  for (; next_cp_ < cps_.size(); ++next_cp_) {
    const ParsedCheckpoint& pc = cps_[next_cp_];
    if (!pc.valid) continue;
    Problem(std::string(internal::kCheckpointsFile), static_cast<int64_t>(pc.cp.seq), pc.offset,
            StrCat("checkpoint seq ", pc.cp.seq, " covers ", pc.cp.tree_size,
                   " events but the log has only ", tree_.size(), ": events seq ", tree_.size(),
                   "..", pc.cp.tree_size - 1, " are missing (log truncated)"));
  }
  // An uncovered tail is its own problem only when the checkpoints are otherwise fine (when one
  // is bad, that is the cause and is reported).
  if (report_.covered < tree_.size() && !opts_.allow_unsigned_tail) {
    if (checkpoint_problems_.empty()) {
      Problem(PlaceOf(report_.covered).file, static_cast<int64_t>(report_.covered), -1,
              StrCat("events seq ", report_.covered, "..", tree_.size() - 1,
                     " are not covered by any valid checkpoint (log still being written, a "
                     "crash before the next checkpoint, or events appended by someone else; "
                     "--allow-unsigned-tail accepts them)"));
    }
  }
  if (opts_.trusted_checkpoint) {
    auto trusted = ParseCheckpoint(*opts_.trusted_checkpoint);
    if (!trusted.ok() || !VerifyCheckpoint(*trusted, key_).ok()) {
      Problem("", -1, -1, "the trusted checkpoint does not parse or is not signed by the key");
      return;
    }
    bool found = false;
    for (const auto& pc : cps_) found |= pc.valid && pc.cp == *trusted;
    if (!found) {
      Problem(std::string(internal::kCheckpointsFile), static_cast<int64_t>(trusted->seq), -1,
              StrCat("the trusted checkpoint seq ", trusted->seq, " (tree size ",
                     trusted->tree_size,
                     ") is not in this log's chain: the log and its checkpoints were cut back "
                     "or replaced"));
    } else if (trusted->tree_size > report_.covered) {
      Problem("", static_cast<int64_t>(trusted->seq), -1,
              "the trusted checkpoint is in the chain but its events do not verify");
    }
  }
}

}  // namespace

std::string VerifyProblem::ToString() const {
  std::string out;
  if (!file.empty()) out += file;
  if (offset >= 0) out += StrCat(out.empty() ? "" : " ", "offset ", offset);
  if (!out.empty()) out += ": ";
  return out + message;
}

absl::StatusOr<VerifyReport> VerifyAuditLog(const VerifyOptions& options) {
  VerifyReport report;
  std::string pem;
  if (options.public_key_pem) {
    pem = *options.public_key_pem;
  } else {
    auto read = internal::ReadWholeFile(StrCat(options.dir, "/", internal::kPubKeyFile));
    if (!read.ok()) {
      return absl::InvalidArgumentError(
          StrCat("no public key given and none at ", options.dir, "/", internal::kPubKeyFile,
                 " (", read.status().message(), ")"));
    }
    pem = *std::move(read);
    report.key_from_dir = true;
  }
  WARDEN_ASSIGN_OR_RETURN(AuditVerifyingKey key, AuditVerifyingKey::FromPem(pem));
  WARDEN_ASSIGN_OR_RETURN(VerifyReport out, VerifyAuditLog(options, key));
  out.key_from_dir = report.key_from_dir;
  return out;
}

absl::StatusOr<VerifyReport> VerifyAuditLog(const VerifyOptions& options,
                                            const AuditVerifyingKey& key) {
  VerifyReport report;
  report.key_id = key.KeyId();
  if (auto segs = internal::ListSegments(options.dir); !segs.ok()) return segs.status();
  Verifier v(options, key, report);
  v.Run();
  v.Finish();
  return report;
}

}  // namespace warden::audit
