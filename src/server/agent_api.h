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

namespace warden::server {

class AgentApi {
 public:
  AgentApi(cluster::Cluster& cluster, audit::AuditLog& audit);
  http::Response Serve(http::Request& req);

 private:
  http::Response Heartbeat(http::Request& req, const cluster::AgentPeer& peer);
  http::Response Renew(http::Request& req, const cluster::AgentPeer& peer);
  void Audit(const http::Request& req, const std::string& node, const char* action, int status,
             const std::string& reason);

  cluster::Cluster& cluster_;
  audit::AuditLog& audit_;
  http::Router<int> router_;  // payload: 0 heartbeat, 1 renew
};

}  // namespace warden::server
