// Feeds arbitrary bytes to the job submission decoder (the run half: command, image, env). It
// must return a value or InvalidArgument, never crash; an accepted run spec never carries a
// loader or GPU-visibility variable, nor a dataset path under /proc or with a ".." segment, nor
// a server-resolved dataset field, and its JSON decodes back to an equal value.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/job_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace warden::api;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto sub = ParseJobSubmit(text, "acme");
  if (!sub.ok()) {
    if (sub.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (sub->run.command.empty() || sub->run.command.size() > kMaxCommandArgs) std::abort();
  for (const auto& [k, v] : sub->run.env) {
    if (k.rfind("LD_", 0) == 0 || k == "CUDA_VISIBLE_DEVICES" || k == "NVIDIA_VISIBLE_DEVICES") {
      std::abort();
    }
  }
  // Datasets: at most 16, absolute paths outside the system trees, never a server-resolved field.
  if (sub->run.datasets.size() > kMaxJobDatasets) std::abort();
  for (const auto& d : sub->run.datasets) {
    if (d.path.empty() || d.path[0] != '/' || d.path.find("/../") != std::string::npos ||
        d.path.ends_with("/..") ||
        (d.path.rfind("/proc", 0) == 0 && (d.path.size() == 5 || d.path[5] == '/'))) {
      std::abort();
    }
    if (!d.object_id.empty() || !d.sha256.empty() || !d.authorized_user.empty()) std::abort();
  }
  auto again = JobRunFromJson(JobRunToJson(sub->run));
  if (!again.ok() || !(*again == sub->run)) std::abort();
  (void)ParseCancelRequest(text);
  return 0;
}
