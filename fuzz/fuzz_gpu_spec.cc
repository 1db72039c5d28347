// Feeds arbitrary bytes to the simulated-GPU spec parser (the agent's `--gpus sim:SPEC`). It must
// return a spec or an InvalidArgument, never crash; a returned spec keeps its limits and
// round-trips through FormatSimSpec to an equal spec and the same text.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "gpu/gpu.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace warden::gpu;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto spec = ParseSimSpec(text);
  if (!spec.ok()) {
    if (spec.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (spec->items.empty() || spec->total_gpus() < 1 || spec->total_gpus() > kMaxSimGpus) {
    std::abort();
  }
  for (const SimSpecItem& item : spec->items) {
    const GpuModel* model = FindGpuModel(item.model);
    if (model == nullptr || item.count < 1 || item.count > kMaxSimGpus) std::abort();
    if (item.mig && !model->mig_capable) std::abort();
  }
  const std::string printed = FormatSimSpec(*spec);
  auto again = ParseSimSpec(printed);
  if (!again.ok() || !(*again == *spec) || FormatSimSpec(*again) != printed) std::abort();
  // The canonical form is the only accepted spelling, so the input was already canonical.
  if (printed != text) std::abort();
  if (ExpandSimSpec(*spec, {}).size() != static_cast<size_t>(spec->total_gpus())) std::abort();
  return 0;
}
