// The run half of a job submission (POST /api/v1/tenants/{tenant}/jobs) and of the cancel body.
// A submission is one JSON object: the scheduler's job-spec fields (decoded by
// sched::ParseJobSpec, which this decoder does not duplicate) plus the run fields below:
//   {"name":"train","gpus":1,"command":["python3","train.py"],"image":"host",
//    "env":{"EPOCHS":"3"},
//    "datasets":[{"name":"train/v1","path":"/data/train","write":false,"tenant":"acme"}]}
// ParseJobSubmit takes the run fields out, checks them, and hands back the rest as canonical JSON
// text with "tenant" set from the URL. Pure functions, thread-safe; fuzzed by fuzz_job_submit.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/json.h"

namespace warden::api {

inline constexpr size_t kMaxJobSubmitBytes = 64 * 1024;
inline constexpr size_t kMaxCommandArgs = 256;
inline constexpr size_t kMaxArgBytes = 4096;
inline constexpr size_t kMaxEnvEntries = 64;
inline constexpr size_t kMaxEnvValueBytes = 4096;
inline constexpr size_t kMaxJobDatasets = 16;
inline constexpr size_t kMaxDatasetPathBytes = 1024;
// A `write` dataset's size limit ("limit_mib", the job's writable tmpfs for it): default and cap.
inline constexpr uint64_t kDefaultWriteLimitMib = 256;
inline constexpr uint64_t kMaxWriteLimitMib = 64 * 1024;

// A vault dataset the job mounts (issue 7 "Datasets"). The client names it; the server fills the
// `resolved` half at submit, after authorizing it (src/server/job_datasets.cc), and the agent
// fetches exactly that object version over mTLS. A client may never send the resolved fields.
struct JobDataset {
  std::string name;    // vault object name (the vault's name rules: no traversal)
  std::string path;    // absolute, normalized mount directory in the job, e.g. "/data/train"
  // An output dataset: the job gets an empty writable directory (a tmpfs of `size` bytes, from
  // "limit_mib") and, when it ends with exit code 0, the file named like the last segment of
  // `name` in it becomes the dataset's next version (agent_dataset_writeback.cc).
  bool write = false;
  std::string tenant;  // owner tenant's name; "" = the job's own tenant
  // Resolved by the server at submit (JobRunFromJson accepts them; ParseJobSubmit refuses them).
  std::string object_id;
  uint64_t version = 0;
  uint64_t size = 0;    // read: the pinned version's size; write: the limit in bytes
  std::string sha256;  // hex, of the plaintext
  uint32_t chunk_size = 0;
  std::string authorized_user;   // the submitting principal, re-checked at every fetch
  std::string authorized_token;  // "" unless submitted with an API token
  // Cross-tenant mounts only ("tenant" names another tenant): the owner tenant's store id, pinned
  // at submit (a tenant re-created under the same name is another tenant), and the id of the
  // accepted share that allowed the mount (for the audit trail; every fetch re-checks the shares).
  std::string owner_tenant_id;
  std::string share_id;
  bool operator==(const JobDataset&) const = default;
};

struct JobRun {
  std::vector<std::string> command;  // argv; command[0] is looked up on PATH
  std::string image = "host";  // "host" (the host root, read-only) or "sha256:<manifest hex>"
  std::vector<std::pair<std::string, std::string>> env;  // sorted by name, unique names
  // "time_limit": the job's wall-time limit, 1s..30d; zero (absent) means the agent's default.
  absl::Duration time_limit = absl::ZeroDuration();
  std::vector<JobDataset> datasets;  // in the order given; the agent's index is the position
  bool operator==(const JobRun&) const = default;
};

struct JobSubmit {
  JobRun run;
  std::string placement_json;  // the scheduler's part, "tenant" filled in
};

// InvalidArgument naming the field when: the body is not one strict JSON object (duplicate keys,
// depth > 4, > 64 KiB); "command" is missing, empty, longer than 256 arguments, or has an argument
// that is empty in first place, longer than 4 KiB or holds a NUL; "image" is not "host" or "sha256:<64 lowercase hex>"; "env"
// is not an object of strings, has more than 64 entries, a name that is not [A-Za-z_][A-Za-z0-9_]*
// (at most 128 bytes), a value with a NUL or over 4 KiB, or names a variable the job may not set:
// the dynamic loader's (LD_*: an LD_PRELOAD in a job's environment is how CVE-2025-23266 escaped
// the NVIDIA Container Toolkit) or the GPU visibility variables (CUDA_VISIBLE_DEVICES,
// NVIDIA_VISIBLE_DEVICES: the agent sets them to the assigned GPUs, DESIGN invariant 6). A
// "tenant" field that names another tenant than the URL is refused too. "datasets" (optional):
// at most 16 objects {"name","path","write"?,"tenant"?}: name by the vault's object name rules;
// path absolute and normalized ([A-Za-z0-9._-/], no "."/".." or empty segments, no trailing
// '/'), at most 1 KiB, not "/" and not at or under /proc, /sys, /dev or /etc, unique, and no path
// inside another; tenant a tenant name; any other key (the server's resolved fields included) is
// refused.
absl::StatusOr<JobSubmit> ParseJobSubmit(std::string_view body, std::string_view url_tenant);

// "time_limit" (optional) is a duration such as "90s" or "2h", from 1s to 30 days.
// The run part as JSON ({"command":[...],"image":"host","env":{...}}) and back (same checks as
// ParseJobSubmit; used by the agent on what the server sends).
common::Json JobRunToJson(const JobRun& run);
absl::StatusOr<JobRun> JobRunFromJson(const common::Json& json);

// The cancel body {"grace":"10s"} (empty body: the default). Grace 0s..1h.
inline constexpr absl::Duration kDefaultCancelGrace = absl::Seconds(10);
absl::StatusOr<absl::Duration> ParseCancelRequest(std::string_view body);

}  // namespace warden::api
