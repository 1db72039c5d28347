// Feeds arbitrary bytes to the agent inventory decoder (what every node sends the server with its
// heartbeats; a compromised node controls it). It must return an inventory or InvalidArgument,
// never crash; an accepted inventory re-encodes to a canonical form that decodes to the same.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cluster/cluster.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace warden::cluster;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto inv = DecodeInventoryText(text);
  if (!inv.ok()) {
    if (inv.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (inv->gpus.size() > kMaxInventoryGpus) std::abort();
  const std::string canonical = EncodeInventory(*inv).dump();
  auto again = DecodeInventoryText(canonical);
  if (!again.ok() || EncodeInventory(*again).dump() != canonical) std::abort();
  return 0;
}
