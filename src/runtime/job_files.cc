#include "runtime/job_files.h"

#include <cerrno>
#include <cstring>

#include "common/json.h"
#include "common/strings.h"

namespace warden::runtime {

using common::Json;
using common::StrCat;

absl::StatusOr<JobRecord> DecodeJobRecord(std::string_view text) {
  JobRecord r;
  std::string err;
  if (!shim::DecodeJobRecord(std::string(text), &r, &err)) return absl::DataLossError(err);
  return r;
}

absl::StatusOr<JobResult> DecodeJobResult(std::string_view text) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return absl::DataLossError("result.json is not a JSON object");
  JobResult r;
  try {
    r.exit_code = j.at("exit_code").get<int>();
    r.signal = j.at("signal").get<int>();
    r.oom_killed = j.at("oom_killed").get<bool>();
    r.wall_time_exceeded = j.at("wall_time_exceeded").get<bool>();
    r.cancelled = j.at("cancelled").get<bool>();
    r.lost = j.at("lost").get<bool>();
    r.usage.peak_memory_bytes = j.at("peak_memory_bytes").get<uint64_t>();
    r.usage.cpu_time_usec = j.at("cpu_time_usec").get<uint64_t>();
    r.error = j.at("error").get<std::string>();
  } catch (const std::exception& e) {
    return absl::DataLossError(StrCat("result.json: ", e.what()));
  }
  return r;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::string out;
  if (!shim::ReadFile(path, &out)) return absl::NotFoundError(StrCat("cannot read ", path, ": ", std::strerror(errno)));
  return out;
}

absl::Status WriteFileAtomic(const std::string& path, std::string_view content, int mode, bool durable) {
  std::string err;
  if (!shim::WriteFileAtomic(path, std::string(content), mode, durable, &err)) return absl::InternalError(err);
  return absl::OkStatus();
}

}  // namespace warden::runtime
