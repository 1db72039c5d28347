// Vault datasets mounted into jobs (issue 7 "Datasets"; handlers in job_datasets.cc and
// agent_datasets.cc). At submit, ApiService::AuthorizeJobDataset decides each dataset for the
// submitting principal exactly as the vault decides a read (RBAC data:read + the owner tenant's
// data policies) and pins the object version; the decision goes into the submit's audit event.
// At fetch, the node's agent reads the pinned version over mTLS in bounded chunk ranges
// (AgentApi, POST /agent/v1/nodes/{node}/jobs/{job}/datasets/{index}); every range is
// re-authorized for the same principal (a policy revoked after submit refuses it) and audited
// durably with its bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "api/job_request.h"
#include "auth/auth.h"
#include "vault/object_store.h"

namespace warden::server {

// At most this many chunks (64 KiB each by default) per fetch: 1 MiB bodies, bounded memory.
inline constexpr uint64_t kMaxDatasetChunksPerFetch = 16;

// Pins the object version a dataset was authorized for, and who authorized it, into `d`.
void PinJobDataset(const vault::ObjectInfo& o, const auth::Identity& submitter, api::JobDataset& d);

// The outcome of the cross-tenant mount checks (job_dataset_shares.cc): the accepted share that
// allows the mount and the decision text for the audit event (also set when refused).
struct SharedMountDecision {
  std::string share_id;
  std::string text;
};

// One range of a job's dataset, read for the agent the job is placed on.
struct AgentDatasetRead {
  std::string tenant_id;
  std::string tenant_name;
  std::string name;  // the vault object name
  uint64_t version = 0;
  std::string data;      // plaintext of the verified chunks read
  std::string decision;  // the data policy decision (document and statement), for the audit event
};

// (node id, job id, dataset index, first chunk, chunk count, out). NotFound: the job is not
// placed on that node or has no such dataset; PermissionDenied: the re-check refused (the
// decision says why); DataLoss: the stored ciphertext does not authenticate.
using AgentDatasetReader =
    std::function<absl::Status(const std::string& node_id, const std::string& job_id,
                               uint64_t index, uint64_t first_chunk, uint64_t count,
                               AgentDatasetRead& out)>;

// ---- write-back of `write` datasets (agent_dataset_writeback.cc) ----
// PUT /agent/v1/nodes/{node}/jobs/{job}/datasets/{index} with a streamed body: the job's output
// file, sent by the agent of the node the job is placed on after the job exited with code 0.
// At most this many bytes per body (the api's kMaxWriteLimitMib); each dataset's own limit is
// checked as the bytes arrive.
inline constexpr uint64_t kMaxWriteBackBytes = 64ull << 30;

struct AgentDatasetWriteBack {
  std::string node_id;
  std::string job_id;
  uint64_t index = 0;
  std::string sha256;  // hex, the agent's hash of what it sends; the version must match it
  // Pulls the next piece of the body (0 at the end); an error (cut connection, malformed
  // chunking, over the route's limit) leaves nothing stored.
  std::function<absl::StatusOr<size_t>(char* buf, size_t n)> body;
  // Called with the outcome after every byte arrived and verified, before the version is
  // published: the caller's durable audit event. An error refuses the write-back.
  std::function<absl::Status(const struct AgentDatasetWritten&)> before_commit;
};

struct AgentDatasetWritten {
  std::string tenant_name;
  std::string name;
  uint64_t version = 0;  // the new version (set once committed)
  uint64_t bytes = 0;
  std::string sha256;
  std::string decision;  // the data policy decision for the write, for the audit event
};

using AgentDatasetWriter = std::function<absl::Status(const AgentDatasetWriteBack& in, AgentDatasetWritten& out)>;

}  // namespace warden::server
