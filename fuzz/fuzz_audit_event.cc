// Feeds arbitrary bytes to the audit event decoder and to the segment scan of the offline
// verifier. DecodeEvent must return an event or InvalidArgument; a decoded event re-encodes to
// exactly the input (canonical form), and the fast header parse agrees with it. Then the bytes
// are verified as a one-segment log: any report, never a crash, and never "OK" for a log that
// has no checkpoint signed by the key.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "audit/audit.h"
#include "audit/segment.h"
#include "audit/verify.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace warden::audit;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto e = DecodeEvent(text);
  if (e.ok()) {
    if (EncodeEvent(*e) != text) std::abort();
    auto h = internal::ParseEventHeader(text);
    if (!h || static_cast<int64_t>(h->seq) != e->seq || h->time_ms != e->time_ms) std::abort();
  } else if (e.status().code() != absl::StatusCode::kInvalidArgument) {
    std::abort();
  }

  // Segment framing (preallocated zero tails): the zero tail is all NULs and the rest does not
  // end in one; a complete line holds no NUL.
  const size_t end = internal::ZeroTailStart(text);
  if (end > text.size() || (end > 0 && text[end - 1] == '\0') ||
      text.substr(end).find_first_not_of('\0') != std::string_view::npos) {
    std::abort();
  }
  for (size_t pos = 0; pos < end;) {
    size_t nl = internal::LineEnd(text.substr(0, end), pos);
    if (nl == std::string_view::npos) break;
    if (nl >= end || text[nl] != '\n' || text.substr(pos, nl - pos).find('\0') != std::string_view::npos ||
        text.substr(pos, nl - pos).find('\n') != std::string_view::npos) {
      std::abort();
    }
    pos = nl + 1;
  }

  static const std::string dir = [] {
    // Memory-backed when available: the scan, not the disk, is what is fuzzed.
    std::string base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    std::string d = base + "/fuzz_audit_event." + std::to_string(getpid());
    std::filesystem::create_directories(d);
    return d;
  }();
  static const AuditSigningKey key = *AuditSigningKey::Generate();
  static const AuditVerifyingKey verifier = AuditVerifyingKey::FromSigningKey(key);
  {
    std::ofstream(dir + "/" + internal::SegmentName(0), std::ios::binary | std::ios::trunc) << text;
    std::ofstream(dir + "/" + internal::IndexName(0), std::ios::binary | std::ios::trunc)
        << text.substr(0, text.size() / 2);
  }
  VerifyOptions opts;
  opts.dir = dir;
  auto report = VerifyAuditLog(opts, verifier);
  if (!report.ok()) std::abort();  // the directory is there and the key is good
  if (report->ok()) std::abort();  // no checkpoints file: can never verify
  return 0;
}
