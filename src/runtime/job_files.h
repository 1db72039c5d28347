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
//
// The formats live in shim_support.h (no Abseil, for the static shim); these are the runner's
// Status-returning wrappers.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "runtime/runtime.h"
#include "runtime/shim_support.h"

namespace warden::runtime {

using shim::EncodeJobRecord;
using shim::EncodeJobResult;
using shim::LastRuntimeError;
using shim::ProcessStartTime;

absl::StatusOr<JobRecord> DecodeJobRecord(std::string_view text);
// DataLoss when result.json is not what a shim writes.
absl::StatusOr<JobResult> DecodeJobResult(std::string_view text);
absl::StatusOr<std::string> ReadFileToString(const std::string& path);
absl::Status WriteFileAtomic(const std::string& path, std::string_view content, int mode = 0600,
                             bool durable = false);

}  // namespace warden::runtime
