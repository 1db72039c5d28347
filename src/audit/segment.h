// Private to the audit module (and its tests, fuzz target and bench): the on-disk layout of the
// log — segment and index file names, the fast parse of an event line's header, index entries,
// and small file helpers shared by the writer (log.cc) and the offline verifier (verify.cc).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "audit/audit.h"
#include "audit/merkle.h"

namespace warden::audit::internal {

inline constexpr std::string_view kSegmentPrefix = "seg-";
inline constexpr std::string_view kSegmentSuffix = ".jsonl";
inline constexpr std::string_view kIndexSuffix = ".idx";
inline constexpr std::string_view kCheckpointsFile = "checkpoints.log";
inline constexpr std::string_view kKeyFile = "audit.key";
inline constexpr std::string_view kPubKeyFile = "audit.pub";
inline constexpr std::string_view kArchiveDir = "archive";  // archived segments, moved whole
inline constexpr size_t kIndexEntrySize = 24;  // offset u64, time_ms i64, leaf hash[0..8), LE
inline constexpr size_t kMaxEventLine = 1 << 20;  // an event line longer than this is corrupt

// The canonical encoding in two parts: `{"v":1,"seq":N,"time_ms":T` and the rest (from
// `,"request_id"` to `}`), so the costly part is encoded before seq and time are known.
void AppendEventHeader(std::string& out, int64_t seq, int64_t time_ms);
std::string EncodeEventBody(const AuditEvent& event);

// "seg-00000000000000000042.jsonl" for a segment whose first event is seq 42.
std::string SegmentName(uint64_t first_seq);
std::string IndexName(uint64_t first_seq);
// The first seq from a segment file name; nullopt when `name` is not one.
std::optional<uint64_t> ParseSegmentName(std::string_view name);

struct SegmentFile {
  uint64_t first_seq = 0;
  std::string name;   // path relative to the log directory: "seg-....jsonl" or "archive/seg-..."
  std::string index;  // its index file, in the same directory
  bool archived() const { return name.find('/') != std::string::npos; }
};
// Segment files of `dir` and of `dir`/archive, ordered by first seq. NotFound when `dir` cannot be
// listed; DataLoss when one segment is in both directories.
absl::StatusOr<std::vector<SegmentFile>> ListSegments(const std::string& dir);

// The seq and time_ms of a v1 event line, read from its fixed prefix
// `{"v":1,"seq":N,"time_ms":T,` without decoding the rest. nullopt when the prefix is not that.
struct EventHeader {
  uint64_t seq = 0;
  int64_t time_ms = 0;
};
std::optional<EventHeader> ParseEventHeader(std::string_view line);

struct IndexEntry {
  uint64_t offset = 0;
  int64_t time_ms = 0;
  uint64_t hash_prefix = 0;  // first 8 bytes of the leaf hash, little-endian
};
void AppendIndexEntry(std::string& out, const IndexEntry& e);
IndexEntry ReadIndexEntry(const char* p);  // kIndexEntrySize bytes
uint64_t HashPrefix(const MerkleHash& h);

// Segments are preallocated with zeros and overwritten in place (log.cc), so a segment file may
// end with zero bytes that are not events yet. No event contains a NUL byte (the encoding
// escapes every control character), and no event is empty, so the framing is unambiguous: the
// events of a segment are the whole lines before its zero tail, and a line that meets a NUL
// before its '\n' was cut short by a crash.
//
// Length of `data` without its zero tail (the trailing run of NUL bytes).
size_t ZeroTailStart(std::string_view data);
// The offset of the '\n' ending the line that starts at `pos`; npos when that line is incomplete:
// `data` ends, or a NUL byte comes before the '\n'.
size_t LineEnd(std::string_view data, size_t pos);

// Whole-file read; the errno's status naming the file on failure.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);
// fsync of the directory holding `path` (so a created or renamed file survives a crash).
absl::Status SyncDir(const std::string& dir);

// Writes `content` to a private temporary file beside `path` (mode `mode`), fsyncs it, and puts
// it in place: with `replace`, renamed over whatever is at `path`; without, linked to `path`
// only if nothing is there (AlreadyExists otherwise). So a kill at any point leaves `path`
// absent, as it was, or whole, never empty or torn. The directory is synced. Leftover temporary
// files of a killed writer are removed by RemoveTempFiles.
absl::Status PutWholeFile(const std::string& path, std::string_view content, int mode,
                          bool replace);
// Removes `<dir>/<name>.tmp-*` files (PutWholeFile's temporaries left by a killed process).
void RemoveTempFiles(const std::string& dir, std::string_view name);

}  // namespace warden::audit::internal
