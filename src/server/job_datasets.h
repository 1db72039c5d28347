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

}  // namespace warden::server
