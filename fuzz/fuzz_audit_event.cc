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
