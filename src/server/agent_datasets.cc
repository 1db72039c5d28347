// The dataset half of the agents' mTLS API (issue 7 "Datasets"):
//   POST /agent/v1/nodes/{node}/jobs/{job}/datasets/{index}?chunk=N&count=M
// answers the plaintext of chunks [N, N+M) (M <= 16) of the object version the job's dataset was
// authorized for at submit, as application/octet-stream. POST rather than GET so the handler runs
// on the blocking pool: each range waits for its durable audit event before any byte leaves.
// The node was authenticated by AgentApi::Serve (certificate = {node}); the job must be placed on
// that node and the read is re-authorized for the job's submitter (job_datasets.cc).
#include "absl/strings/numbers.h"
#include "common/strings.h"
#include "server/agent_api.h"

namespace warden::server {

using common::StrCat;

namespace {

bool Number(const http::Request& req, std::string_view key, uint64_t fallback, uint64_t& out) {
  std::string_view v = req.Query(key);
  if (v.empty() && req.query.count(std::string(key)) == 0) {
    out = fallback;
    return true;
  }
  return absl::SimpleAtoi(std::string(v), &out);
}

}  // namespace

http::Response AgentApi::JobDataset(http::Request& req, const cluster::AgentPeer& peer) {
  const std::string job(req.Param("job"));
  uint64_t index = 0, chunk = 0, count = 0;
  AgentDatasetRead read;
  absl::Status s;
  if (!datasets_) {
    s = absl::UnavailableError("datasets are not served by this server");
  } else if (!absl::SimpleAtoi(std::string(req.Param("index")), &index) || !Number(req, "chunk", 0, chunk) ||
             !Number(req, "count", kMaxDatasetChunksPerFetch, count)) {
    s = absl::InvalidArgumentError("dataset index, \"chunk\" and \"count\" must be non-negative integers");
  } else {
    s = datasets_(peer.node_id, job, index, chunk, count, read);
  }
  http::Response r;
  if (s.ok()) {
    r.status = 200;
    r.content_type = "application/octet-stream";
  } else if (s.code() == absl::StatusCode::kDataLoss) {
    // The vault's integrity failure is not an internal detail: the agent must tell the job's
    // owner that the stored ciphertext does not authenticate (and must not start the job).
    r = http::Response::Error(500, absl::StatusCode::kDataLoss,
                              StrCat("dataset integrity error: ", s.message()));
  } else {
    r = http::Response::Error(s);
  }
  // One durable event per range with the bytes sent and the policy decision; no byte leaves
  // unless it was recorded (fail closed, like a download).
  audit::AuditEvent e = NodeEvent(req, peer, "datasets:mount-read");
  e.tenant = read.tenant_name;
  e.decision = s.ok() ? "allow" : "deny";
  e.status = r.status;
  e.bytes = s.ok() ? static_cast<int64_t>(read.data.size()) : 0;
  std::string what = read.name.empty()
                         ? StrCat("job ", job, " dataset ", index)
                         : StrCat("job ", job, " dataset ", index, " \"", read.name, "\" v",
                                  read.version, " chunks ", chunk, "+", count);
  e.reason = StrCat(what, s.ok() ? "" : StrCat(": ", s.message()),
                    read.decision.empty() || !s.ok() ? "" : StrCat(" | ", read.decision))
                 .substr(0, 512);
  if (absl::Status a = audit_.Append(std::move(e)); !a.ok()) {
    return http::Response::Error(absl::UnavailableError("audit log unavailable; request refused"));
  }
  if (s.ok()) r.body = std::move(read.data);
  return r;
}

}  // namespace warden::server
