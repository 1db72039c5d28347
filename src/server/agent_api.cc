#include "server/agent_api.h"

#include "common/json.h"
#include "common/strings.h"

namespace warden::server {

using common::Json;
using common::StrCat;

AgentApi::AgentApi(cluster::Cluster& cluster, audit::AuditLog& audit)
    : cluster_(cluster), audit_(audit) {
  (void)router_.Add("POST", "/agent/v1/nodes/{node}/heartbeat", nullptr, 0);
  (void)router_.Add("POST", "/agent/v1/nodes/{node}/renew", nullptr, 1);
  (void)router_.Add("POST", "/agent/v1/nodes/{node}/jobs/{job}/logs", nullptr, 2);
  (void)router_.Add("POST", "/agent/v1/nodes/{node}/wait", nullptr, 3);
  (void)router_.Add("POST", "/agent/v1/nodes/{node}/jobs/{job}/datasets/{index}", nullptr, 4);
  (void)router_.Add("GET", "/agent/v1/nodes/{node}/jobs/{job}/image", nullptr, 5);
  (void)router_.Add("PUT", "/agent/v1/nodes/{node}/jobs/{job}/datasets/{index}", nullptr, 6);
}

void AgentApi::Audit(const http::Request& req, const std::string& node, const char* action,
                     int status, const std::string& reason) {
  audit::AuditEvent e;
  e.request_id = req.request_id;
  e.actor_kind = "node";
  e.actor_name = node;
  e.action = action;
  e.method = req.method;
  e.resource = req.path;
  e.decision = (status == 401 || status == 403) ? "deny" : "allow";
  e.reason = reason.substr(0, 256);
  e.status = status;
  e.source = req.remote_address;
  (void)audit_.Append(std::move(e));
}

audit::AuditEvent AgentApi::NodeEvent(const http::Request& req, const cluster::AgentPeer& peer,
                                      const char* action) {
  audit::AuditEvent e;
  e.request_id = req.request_id;
  e.actor_kind = "node";
  e.actor_name = peer.node_name;
  e.actor_id = peer.node_id;
  e.action = action;
  e.method = req.method;
  e.resource = req.path;
  e.source = req.remote_address;
  return e;
}

http::Response AgentApi::Serve(http::Request& req) {
  http::Response err;
  const auto* route = router_.Match(req, &err);
  if (route == nullptr) return err;
  std::string node(req.Param("node"));
  const char* action = route->payload == 0   ? "nodes:heartbeat"
                       : route->payload == 1 ? "nodes:renew"
                       : route->payload == 2 ? "jobs:logs-ship"
                       : route->payload == 3 ? "nodes:wait"
                       : route->payload == 5 ? "images:fetch"
                       : route->payload == 6 ? "datasets:write-back"
                                             : "datasets:mount-read";
  auto peer = cluster_.AuthenticateAgent(req.peer_certificate_der, node);
  if (!peer.ok()) {
    http::Response r = http::Response::Error(peer.status());
    Audit(req, node, action, r.status, std::string(peer.status().message()));
    return r;
  }
  // Fail closed like the API: nothing is served while the audit log cannot record refusals.
  if (!audit_.Healthy()) {
    return http::Response::Error(absl::UnavailableError("audit log unavailable; request refused"));
  }
  if (route->payload == 2) return JobLogs(req, *peer);
  if (route->payload == 3) return WaitForWork(req, *peer);
  if (route->payload == 4) return JobDataset(req, *peer);
  if (route->payload == 5) return JobImage(req, *peer);
  if (route->payload == 6) return JobDatasetWriteBack(req, *peer);
  return route->payload == 0 ? Heartbeat(req, *peer) : Renew(req, *peer);
}

http::Response AgentApi::Heartbeat(http::Request& req, const cluster::AgentPeer& peer) {
  std::optional<cluster::NodeInventory> inventory;
  std::vector<AgentJobReport> reports;
  AgentGpuReport gpu_report;
  if (!req.body.empty()) {
    auto j = common::ParseJsonStrict(req.body,
                                     {.max_depth = 8, .max_bytes = cluster::kMaxInventoryBytes});
    if (!j.ok()) return http::Response::Error(j.status());
    if (!j->is_object()) {
      return http::Response::Error(absl::InvalidArgumentError("body must be a JSON object"));
    }
    for (const auto& [k, v] : j->items()) {
      if (k != "inventory" && k != "jobs" && k != "gpus") {
        return http::Response::Error(
            absl::InvalidArgumentError(StrCat("unknown field \"", k, "\"")));
      }
    }
    if (j->contains("inventory")) {
      auto inv = cluster::DecodeInventory((*j)["inventory"]);
      if (!inv.ok()) return http::Response::Error(inv.status());
      inventory = std::move(*inv);
    }
    if (auto s = DecodeAgentJobReports(*j, reports, gpu_report); !s.ok()) {
      return http::Response::Error(s);
    }
  }
  auto reply = cluster_.Heartbeat(peer, inventory);
  if (!reply.ok()) return http::Response::Error(reply.status());
  Json out{{"schedule", reply->schedule},
           {"heartbeat_interval_ms", absl::ToInt64Milliseconds(reply->heartbeat_interval)}};
  if (jobs_ != nullptr) {
    auto assigned = jobs_->AgentSync(peer.node_id, reports, gpu_report);
    if (!assigned.ok()) return http::Response::Error(assigned.status());
    out["jobs"] = std::move(*assigned);
  }
  return http::Response::Json(200, out);
}

http::Response AgentApi::Renew(http::Request& req, const cluster::AgentPeer& peer) {
  auto j = common::ParseJsonStrict(req.body);
  std::string csr;
  if (j.ok() && j->is_object() && j->size() == 1 && j->contains("csr") && (*j)["csr"].is_string()) {
    csr = (*j)["csr"].get<std::string>();
  } else {
    http::Response r =
        http::Response::Error(absl::InvalidArgumentError("body must be {\"csr\": \"<PEM>\"}"));
    Audit(req, peer.node_name, "nodes:renew", r.status, "malformed renewal request");
    return r;
  }
  auto cert = cluster_.Renew(peer, csr);
  if (!cert.ok()) {
    http::Response r = http::Response::Error(cert.status());
    Audit(req, peer.node_name, "nodes:renew", r.status, std::string(cert.status().message()));
    return r;
  }
  Audit(req, peer.node_name, "nodes:renew", 200, StrCat("issued serial ", cert->serial));
  return http::Response::Json(200, Json{{"certificate", cert->cert_pem},
                                        {"not_after", absl::ToUnixSeconds(cert->not_after)}});
}

}  // namespace warden::server
