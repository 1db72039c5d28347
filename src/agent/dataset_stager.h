// DatasetStager: puts a job's vault datasets (issue 7 "Datasets") into memory-backed storage on
// this node and removes them when the job ends. Per job it mounts a private tmpfs (mode 0700,
// nosuid/nodev/noexec, size = the datasets' sizes + a margin) at <dir>/<job id>; where mounting
// is not permitted it falls back to a directory under /dev/shm. Either way statfs must say tmpfs
// or ramfs, else staging is refused: decrypted data never touches the node's disk. Each dataset
// is fetched in bounded ranges (the server decrypts and verifies chunks; the agent never holds
// more than one range in memory), its size and plaintext SHA-256 are checked against what the
// server recorded at submit, and it is placed as <host_dir>/<basename of its name>.
// Wipe unmounts the tmpfs (which frees its pages) or deletes the fallback files; after an agent
// restart, WipeAllExcept removes what no re-attached job holds.
// Used from the agent's session thread; not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/executor.h"

namespace warden::agent {

// What the server says about dataset `index` of a job (the assignment's run.datasets[index]).
struct DatasetToStage {
  uint64_t index = 0;
  std::string name;  // vault object name
  std::string path;  // where the job sees it
  bool write = false;
  uint64_t size = 0;
  std::string sha256;  // hex, of the plaintext
};

// Reads chunks [first_chunk, first_chunk + count) of dataset `index` of `job_id` from the server
// (plaintext, whole verified chunks; empty past the end). DataLoss: integrity failure.
using DatasetFetcher = std::function<absl::StatusOr<std::string>(
    const std::string& job_id, uint64_t index, uint64_t first_chunk, uint64_t count)>;

// Sends `size` bytes read from `fd` (the job's output file of `write` dataset `index`, whose
// plaintext SHA-256 is `sha256`) to the server. AlreadyExists counts as done (a retry after a
// lost reply); Unavailable/DeadlineExceeded are transient; anything else is a refusal.
using DatasetUploader = std::function<absl::Status(const std::string& job_id, uint64_t index, int fd,
                                                   uint64_t size, const std::string& sha256)>;

struct DatasetStagerOptions {
  std::string dir;      // per-job tmpfs mount points (created 0700), e.g. <agent data dir>/datasets
  std::string shm_dir;  // fallback parent on /dev/shm (created 0700); "" derives one from `dir`
  uint64_t margin_bytes = 1 << 20;  // tmpfs size on top of the datasets' sizes
  bool try_mount = true;            // false: use the /dev/shm fallback (tests)
};

class DatasetStager {
 public:
  static absl::StatusOr<std::unique_ptr<DatasetStager>> Create(DatasetStagerOptions options);

  // Stages every dataset of the job and returns them as the executor sees them. On any error
  // (FailedPrecondition: no memory-backed storage; DataLoss: size or SHA-256 mismatch or the
  // server's integrity error; others from the fetch) everything staged for the job is wiped.
  absl::StatusOr<std::vector<ExecDataset>> Stage(const std::string& job_id,
                                                 const std::vector<DatasetToStage>& datasets,
                                                 const DatasetFetcher& fetch);
  // Write-back (issue 7): for each writable dataset of `staged` (what Stage returned, or the
  // executor's record after a restart), the job's output is the regular file named like the last
  // segment of the dataset's name in its directory (e.g. "out/model" at /data/out ->
  // /data/out/model); its SHA-256 is computed and it is handed to `upload`. FailedPrecondition
  // (naming the file) when it is missing, a link or not a regular file; the upload's error
  // otherwise. Other files in the directory are not written back.
  absl::Status WriteBack(const std::string& job_id, const std::vector<ExecDataset>& staged,
                         const DatasetUploader& upload);
  // Removes the job's staged data: unmounts its tmpfs, or deletes its /dev/shm fallback files.
  // Idempotent; OK when nothing was staged.
  absl::Status Wipe(const std::string& job_id);
  // After an agent restart: wipes every staged job not in `keep`.
  absl::Status WipeAllExcept(const std::set<std::string>& keep);

  // OK iff `dir` is on tmpfs or ramfs (statfs magic). FailedPrecondition naming the file system
  // otherwise.
  static absl::Status CheckMemoryBacked(const std::string& dir);

  const DatasetStagerOptions& options() const { return options_; }
  // Where the job's data is now ("" when not staged) and whether it is a tmpfs mount (tests).
  std::string JobRoot(const std::string& job_id, bool* mounted = nullptr) const;

 private:
  explicit DatasetStager(DatasetStagerOptions o) : options_(std::move(o)) {}
  // `bytes`: what goes on the job's tmpfs; `fallback_extra`: what else must fit when there is
  // no per-job tmpfs (the write datasets' limits, each a tmpfs of its own otherwise).
  absl::StatusOr<std::string> MakeJobRoot(const std::string& job_id, uint64_t bytes, uint64_t fallback_extra,
                                          bool* mounted);
  absl::Status Fetch(const std::string& job_id, const DatasetToStage& d, const std::string& file,
                     const DatasetFetcher& fetch);

  DatasetStagerOptions options_;
};

}  // namespace warden::agent
