// Feeds arbitrary bytes to the audit checkpoint parser (checkpoints come from files an attacker
// may have edited, and from the API). It must return a checkpoint or InvalidArgument, never crash;
// a parsed checkpoint re-encodes to exactly the input (one encoding per checkpoint), and
// verifying it against a key gives OK or DataLoss, nothing else.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "audit/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace warden::audit;
  static const AuditSigningKey key = *AuditSigningKey::Generate();
  static const AuditVerifyingKey verifier = AuditVerifyingKey::FromSigningKey(key);
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto cp = ParseCheckpoint(text);
  if (!cp.ok()) {
    if (cp.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (cp->Encode() != text) std::abort();
  absl::Status s = VerifyCheckpoint(*cp, verifier);
  if (!s.ok() && s.code() != absl::StatusCode::kDataLoss) std::abort();
  return 0;
}
