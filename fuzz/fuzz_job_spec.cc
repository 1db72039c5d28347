// Feeds arbitrary bytes to the job-spec decoder (the body of a future `job submit`). It must
// return a spec or an InvalidArgument, never crash; an accepted spec keeps its limits and its
// canonical JSON parses back to an equal spec with the same text.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "sched/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace warden::sched;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto spec = ParseJobSpec(text);
  if (!spec.ok()) {
    if (spec.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  switch (spec->gpu_request) {
    case GpuRequest::kNone:
      if (spec->gpus != 0 || spec->gpu_millis != 0 || !spec->mig_profile.empty()) std::abort();
      break;
    case GpuRequest::kWhole:
      if (spec->gpus < 1 || spec->gpus > 64) std::abort();
      break;
    case GpuRequest::kFraction:
      if (spec->gpu_millis < 1 || spec->gpu_millis > 999) std::abort();
      break;
    case GpuRequest::kMig:
      if (spec->mig_profile.empty()) std::abort();
      break;
  }
  if (spec->cpu_millis < 1 || spec->memory_mib < 1 || spec->priority < -1000 ||
      spec->priority > 1000) {
    std::abort();
  }
  const std::string canon = JobSpecToJson(*spec);
  auto again = ParseJobSpec(canon);
  if (!again.ok() || !(*again == *spec) || JobSpecToJson(*again) != canon) std::abort();
  return 0;
}
