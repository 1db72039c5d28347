// AgentApi: the agents' mTLS API (/agent/v1/...), served on its own listener whose TLS layer
// already required a client certificate from gpuwarden's CA (http::ServerOptions::client_ca_pem).
// Here every request is checked once more by cluster::Cluster::AuthenticateAgent: the
// certificate's node identity must be the {node} of the path, unexpired by our clock, with a
// serial this CA issued and did not revoke. Refusals and renewals are audited; heartbeats are not
// (one per node every few seconds would drown the log). Thread-safe.
#pragma once

#include "audit/audit.h"
#include "cluster/cluster.h"
#include "http/router.h"
#include "server/job_datasets.h"
#include "server/job_service.h"

namespace warden::server {

// Decodes the job half of a heartbeat body (strict): "jobs": [{"id","state","exit_code"?,
// "reason"?}] (at most 1024; state one of running, exited, failed_to_start, cancelled, oom,
// lost, write_back_failed) and "gpus": {"clean": [uuid...], "dirty": [uuid...]}. Absent keys leave the outputs
// empty. InvalidArgument naming the field otherwise. (agent_jobs.cc)
absl::Status DecodeAgentJobReports(const common::Json& body, std::vector<AgentJobReport>& reports,
                                   AgentGpuReport& gpus);

// The stored archive of a job's image, opened for the agent the job is placed on (image_routes.cc).
struct AgentImage {
  std::string tenant_id, tenant_name, digest;
  int fd = -1;  // the archive, owned by the route once set
  int64_t size = 0;
};
// (node id, job id, the digest the agent expects) -> the open archive. NotFound when the job is
// not placed on that node, uses the host image, or names another digest.
using AgentImageReader = std::function<absl::Status(const std::string& node_id,
                                                    const std::string& job_id,
                                                    const std::string& digest, AgentImage& out)>;

class AgentApi {
 public:
  AgentApi(cluster::Cluster& cluster, audit::AuditLog& audit);
  http::Response Serve(http::Request& req);
  // The job path (job_service.h): heartbeats then carry job reports and assignments, and the
  // log route is served. Null: heartbeats carry no jobs, the log route answers 503.
  void SetJobService(JobService* jobs) { jobs_ = jobs; }
  // Vault datasets of jobs (job_datasets.h). Unset: the dataset route answers 503.
  void SetDatasetReader(AgentDatasetReader reader) { datasets_ = std::move(reader); }
  // Job images (image_routes.cc). Unset: the image route answers 503.
  void SetImageReader(AgentImageReader reader) { images_ = std::move(reader); }
  // Write-back of `write` datasets (job_datasets.h). Unset: the write-back route answers 503.
  void SetDatasetWriter(AgentDatasetWriter writer) { writer_ = std::move(writer); }
  // http::ServerOptions::stream_body_limit for the agents' listener: the write-back route's body
  // is streamed (agent_dataset_writeback.cc); every other body is buffered.
  static uint64_t StreamBodyLimit(std::string_view method, std::string_view target);

 private:
  http::Response Heartbeat(http::Request& req, const cluster::AgentPeer& peer);
  http::Response Renew(http::Request& req, const cluster::AgentPeer& peer);
  http::Response JobLogs(http::Request& req, const cluster::AgentPeer& peer);  // agent_jobs.cc
  // Long-poll: {"generation":N} -> {"generation":M} once the node's assignments change (or after
  // kMaxNodeWait), holding no thread meanwhile; 429 when the node has too many waits pending
  // (agent_jobs.cc).
  http::Response WaitForWork(http::Request& req, const cluster::AgentPeer& peer);
  http::Response JobDataset(http::Request& req, const cluster::AgentPeer& peer);  // agent_datasets.cc
  http::Response JobImage(http::Request& req, const cluster::AgentPeer& peer);  // image_routes.cc
  http::Response JobDatasetWriteBack(http::Request& req, const cluster::AgentPeer& peer);  // agent_dataset_writeback.cc
  void Audit(const http::Request& req, const std::string& node, const char* action, int status,
             const std::string& reason);
  // The fields every node-actor event shares (request, node, action, method, path, source); the
  // caller adds tenant, decision, status, bytes and reason.
  static audit::AuditEvent NodeEvent(const http::Request& req, const cluster::AgentPeer& peer,
                                     const char* action);

  cluster::Cluster& cluster_;
  audit::AuditLog& audit_;
  // payload: 0 heartbeat, 1 renew, 2 job logs, 3 wait, 4 job dataset, 5 job image, 6 write-back
  http::Router<int> router_;
  JobService* jobs_ = nullptr;
  AgentDatasetReader datasets_;
  AgentImageReader images_;
  AgentDatasetWriter writer_;
};

}  // namespace warden::server
