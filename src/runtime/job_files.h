// Private to runtime: the files of one job directory, shared by the runner and the shim.
//
//   jobs/<id>/job.json        what the shim needs (runtime, ids, limits), written before it starts
//   jobs/<id>/bundle/         config.json (the OCI spec)
//   jobs/<id>/stdout.log      the job's stdout / stderr, append-only, readable while it runs
//   jobs/<id>/stderr.log
//   jobs/<id>/runtime.log     the OCI runtime's own log
//   jobs/<id>/shim.pid        "<pid> <start time>" of the shim (pid reuse is detected)
//   jobs/<id>/container.pid   the job's init process as the runtime reported it
//   jobs/<id>/result.json     written once, atomically, when the job has ended
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "runtime/runtime.h"

namespace warden::runtime {

struct JobRecord {
  std::string job_id;
  std::string tenant;
  std::string runtime_path;
  std::string runtime_root;
  std::string cgroups_path;
  int64_t wall_time_ms = 0;
  int64_t grace_ms = 0;
};

std::string EncodeJobRecord(const JobRecord& r);
absl::StatusOr<JobRecord> DecodeJobRecord(std::string_view text);
std::string EncodeJobResult(const JobResult& r);
absl::StatusOr<JobResult> DecodeJobResult(std::string_view text);

absl::StatusOr<std::string> ReadFileToString(const std::string& path);
// Writes via a temporary file and rename, so readers see the old or the new content.
absl::Status WriteFileAtomic(const std::string& path, std::string_view content, int mode = 0600);

// The start time (clock ticks since boot, /proc/<pid>/stat field 22) of `pid`; 0 if gone.
uint64_t ProcessStartTime(int pid);

// The last "error" line of a runc/crun log, for messages.
std::string LastRuntimeError(const std::string& log_path);

}  // namespace warden::runtime
