#include "runtime/job_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::runtime {

using common::Json;
using common::StrCat;

std::string EncodeJobRecord(const JobRecord& r) {
  return Json{{"job_id", r.job_id},
              {"tenant", r.tenant},
              {"runtime_path", r.runtime_path},
              {"runtime_root", r.runtime_root},
              {"cgroups_path", r.cgroups_path},
              {"wall_time_ms", r.wall_time_ms},
              {"grace_ms", r.grace_ms}}
      .dump();
}

absl::StatusOr<JobRecord> DecodeJobRecord(std::string_view text) {
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(text));
  WARDEN_ASSIGN_OR_RETURN(auto f, common::JsonFields::Of(j));
  JobRecord r;
  WARDEN_ASSIGN_OR_RETURN(r.job_id, f.RequiredString("job_id"));
  WARDEN_ASSIGN_OR_RETURN(r.tenant, f.RequiredString("tenant"));
  WARDEN_ASSIGN_OR_RETURN(r.runtime_path, f.RequiredString("runtime_path"));
  WARDEN_ASSIGN_OR_RETURN(r.runtime_root, f.RequiredString("runtime_root"));
  WARDEN_ASSIGN_OR_RETURN(r.cgroups_path, f.RequiredString("cgroups_path"));
  WARDEN_ASSIGN_OR_RETURN(auto wall, f.OptionalInt("wall_time_ms"));
  WARDEN_ASSIGN_OR_RETURN(auto grace, f.OptionalInt("grace_ms"));
  r.wall_time_ms = wall.value_or(0);
  r.grace_ms = grace.value_or(0);
  return r;
}

std::string EncodeJobResult(const JobResult& r) {
  return Json{{"exit_code", r.exit_code},
              {"signal", r.signal},
              {"oom_killed", r.oom_killed},
              {"wall_time_exceeded", r.wall_time_exceeded},
              {"cancelled", r.cancelled},
              {"lost", r.lost},
              {"peak_memory_bytes", r.usage.peak_memory_bytes},
              {"cpu_time_usec", r.usage.cpu_time_usec},
              {"error", r.error}}
      .dump();
}

absl::StatusOr<JobResult> DecodeJobResult(std::string_view text) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return absl::DataLossError("result.json is not a JSON object");
  JobResult r;
  try {
    r.exit_code = j.value("exit_code", -1);
    r.signal = j.value("signal", 0);
    r.oom_killed = j.value("oom_killed", false);
    r.wall_time_exceeded = j.value("wall_time_exceeded", false);
    r.cancelled = j.value("cancelled", false);
    r.lost = j.value("lost", false);
    r.usage.peak_memory_bytes = j.value("peak_memory_bytes", uint64_t{0});
    r.usage.cpu_time_usec = j.value("cpu_time_usec", uint64_t{0});
    r.error = j.value("error", std::string());
  } catch (const std::exception& e) {
    return absl::DataLossError(StrCat("result.json: ", e.what()));
  }
  return r;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(StrCat("cannot read ", path, ": ", std::strerror(errno)));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

absl::Status WriteFileAtomic(const std::string& path, std::string_view content, int mode) {
  std::string tmp = StrCat(path, ".tmp.", getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return absl::InternalError(StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = write(fd, content.data() + off, content.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(fd);
      unlink(tmp.c_str());
      return absl::InternalError(StrCat("cannot write ", tmp, ": ", std::strerror(e)));
    }
    off += static_cast<size_t>(n);
  }
  fsync(fd);
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    unlink(tmp.c_str());
    return absl::InternalError(StrCat("cannot rename to ", path, ": ", std::strerror(e)));
  }
  return absl::OkStatus();
}

uint64_t ProcessStartTime(int pid) {
  if (pid <= 0) return 0;
  auto text = ReadFileToString(StrCat("/proc/", pid, "/stat"));
  if (!text.ok()) return 0;
  // The command name (field 2) may hold spaces and ')': fields restart after the last ')'.
  size_t p = text->rfind(')');
  if (p == std::string::npos) return 0;
  std::istringstream in(text->substr(p + 2));
  std::string field;
  // After ')' come fields 3.. ; start time is field 22, i.e. the 20th here. A zombie counts as gone.
  std::string state;
  in >> state;
  if (state == "Z" || state == "X") return 0;
  for (int i = 4; i <= 22; ++i) {
    if (!(in >> field)) return 0;
  }
  return std::strtoull(field.c_str(), nullptr, 10);
}

std::string LastRuntimeError(const std::string& log_path) {
  auto text = ReadFileToString(log_path);
  if (!text.ok()) return "";
  std::string last;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("error") != std::string::npos) last = line;
  }
  // runc's JSON log lines: keep just the message.
  Json j = Json::parse(last, nullptr, false);
  if (j.is_object() && j.contains("msg") && j["msg"].is_string()) return j["msg"].get<std::string>();
  return last;
}

}  // namespace warden::runtime
