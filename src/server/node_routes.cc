// Handlers of /api/v1/nodes (issue 6): join tokens, the join itself, and node administration.
// Authorization happened in ApiService::Handle (nodes:read / nodes:manage at cluster scope); the
// join is "public" at the HTTP level because the join token in its body is its credential.
#include "absl/time/time.h"
#include "common/status.h"
#include "common/strings.h"
#include "server/api_service.h"
#include "server/job_service.h"

namespace warden::server {
namespace {

using common::Json;
using common::StrCat;

absl::StatusOr<cluster::Cluster*> ClusterOf(cluster::Cluster* c) {
  if (c == nullptr) return absl::UnavailableError("the cluster service is not running");
  return c;
}

absl::StatusOr<Json> ParseBody(const std::string& body) {
  if (body.empty()) return Json::object();
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(body));
  if (!j.is_object()) return absl::InvalidArgumentError("request body must be a JSON object");
  return j;
}

Json JoinTokenJson(const store::JoinToken& t) {
  return Json{{"id", t.id},
              {"pool", t.pool},
              {"created_at", t.created_at},
              {"expires_at", t.expires_at},
              {"used", t.used_at != 0},
              {"used_at", t.used_at},
              {"used_by_node", t.used_by_node}};
}

}  // namespace

absl::StatusOr<Json> ApiService::CreateJoinToken(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(cluster::Cluster * cl, ClusterOf(options_.cluster));
  WARDEN_ASSIGN_OR_RETURN(Json j, ParseBody(c.req.body));
  WARDEN_ASSIGN_OR_RETURN(auto f, common::JsonFields::Of(j));
  WARDEN_RETURN_IF_ERROR(f.OnlyKeys({"pool", "ttl"}));
  WARDEN_ASSIGN_OR_RETURN(auto pool, f.OptionalString("pool"));
  WARDEN_ASSIGN_OR_RETURN(auto ttl_text, f.OptionalString("ttl"));
  absl::Duration ttl = absl::Hours(1);
  if (ttl_text && (!absl::ParseDuration(*ttl_text, &ttl) || ttl <= absl::ZeroDuration())) {
    return absl::InvalidArgumentError(StrCat(
        "field \"ttl\": expected a positive duration like 1h or 30m, got \"", *ttl_text, "\""));
  }
  WARDEN_ASSIGN_OR_RETURN(cluster::CreatedJoinToken t,
                          cl->CreateJoinToken(pool.value_or("default"), ttl, c.identity->user_id));
  Json out = JoinTokenJson(t.record);
  out["token"] = t.token;  // shown once; only its hash is stored
  return out;
}

absl::StatusOr<Json> ApiService::ListJoinTokens(Call&) {
  WARDEN_ASSIGN_OR_RETURN(cluster::Cluster * cl, ClusterOf(options_.cluster));
  WARDEN_ASSIGN_OR_RETURN(auto tokens, cl->ListJoinTokens());
  Json items = Json::array();
  for (const auto& t : tokens) items.push_back(JoinTokenJson(t));
  return Json{{"items", items}};
}

absl::StatusOr<Json> ApiService::JoinNode(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(cluster::Cluster * cl, ClusterOf(options_.cluster));
  WARDEN_ASSIGN_OR_RETURN(Json j, ParseBody(c.req.body));
  WARDEN_ASSIGN_OR_RETURN(auto f, common::JsonFields::Of(j));
  WARDEN_RETURN_IF_ERROR(f.OnlyKeys({"token", "csr", "name", "inventory"}));
  cluster::JoinRequest r;
  WARDEN_ASSIGN_OR_RETURN(r.token, f.RequiredString("token"));
  WARDEN_ASSIGN_OR_RETURN(r.csr_pem, f.RequiredString("csr"));
  WARDEN_ASSIGN_OR_RETURN(r.name, f.RequiredString("name"));
  c.actor_name = StrCat("node:", r.name);
  if (j.contains("inventory")) {
    WARDEN_ASSIGN_OR_RETURN(r.inventory, cluster::DecodeInventory(j["inventory"]));
  }
  WARDEN_ASSIGN_OR_RETURN(cluster::JoinResult res, cl->Join(r));
  return Json{
      {"node", cluster::Cluster::NodeJson(res.node, false)},
      {"certificate", res.certificate.cert_pem},
      {"ca_certificate", res.ca_pem},
      {"agent_port", options_.agent_port ? options_.agent_port() : 0},
      {"heartbeat_interval_ms", absl::ToInt64Milliseconds(cl->options().heartbeat_interval)}};
}

absl::StatusOr<Json> ApiService::ListNodes(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(cluster::Cluster * cl, ClusterOf(options_.cluster));
  WARDEN_ASSIGN_OR_RETURN(auto nodes, cl->ListNodes());
  std::string pool;
  if (auto it = c.req.query.find("pool"); it != c.req.query.end()) pool = it->second;
  Json items = Json::array();
  for (const auto& n : nodes) {
    if (!pool.empty() && n.pool != pool) continue;
    items.push_back(cluster::Cluster::NodeJson(n, false));
  }
  return Json{{"items", items}};
}

absl::StatusOr<Json> ApiService::GetNode(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(cluster::Cluster * cl, ClusterOf(options_.cluster));
  WARDEN_ASSIGN_OR_RETURN(store::Node n, cl->GetNode(c.req.params["node"]));
  return cluster::Cluster::NodeJson(n, true);
}

absl::StatusOr<Json> ApiService::CordonNode(Call& c) { return SetNodeSchedule(c, "cordoned"); }
absl::StatusOr<Json> ApiService::UncordonNode(Call& c) { return SetNodeSchedule(c, "active"); }
absl::StatusOr<Json> ApiService::DrainNode(Call& c) { return SetNodeSchedule(c, "draining"); }

absl::StatusOr<Json> ApiService::SetNodeSchedule(Call& c, const char* schedule) {
  WARDEN_ASSIGN_OR_RETURN(cluster::Cluster * cl, ClusterOf(options_.cluster));
  WARDEN_ASSIGN_OR_RETURN(store::Node n, cl->SetSchedule(c.req.params["node"], schedule));
  return cluster::Cluster::NodeJson(n, false);
}

absl::StatusOr<Json> ApiService::LabelNode(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(cluster::Cluster * cl, ClusterOf(options_.cluster));
  WARDEN_ASSIGN_OR_RETURN(Json j, ParseBody(c.req.body));
  WARDEN_ASSIGN_OR_RETURN(auto f, common::JsonFields::Of(j));
  WARDEN_RETURN_IF_ERROR(f.OnlyKeys({"set", "remove"}));
  std::map<std::string, std::string> set;
  if (j.contains("set")) {
    if (!j["set"].is_object())
      return absl::InvalidArgumentError("field \"set\": expected an object");
    for (const auto& [k, v] : j["set"].items()) {
      if (!v.is_string()) {
        return absl::InvalidArgumentError(StrCat("field \"set.", k, "\": expected a string"));
      }
      set[k] = v.get<std::string>();
    }
  }
  WARDEN_ASSIGN_OR_RETURN(auto remove, f.StringList("remove"));
  WARDEN_ASSIGN_OR_RETURN(store::Node n, cl->UpdateLabels(c.req.params["node"], set, remove));
  if (options_.jobs != nullptr) options_.jobs->Kick();  // the scheduler takes it this round
  return cluster::Cluster::NodeJson(n, false);
}

absl::StatusOr<Json> ApiService::TaintNode(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(cluster::Cluster * cl, ClusterOf(options_.cluster));
  WARDEN_ASSIGN_OR_RETURN(Json j, ParseBody(c.req.body));
  WARDEN_ASSIGN_OR_RETURN(auto f, common::JsonFields::Of(j));
  WARDEN_RETURN_IF_ERROR(f.OnlyKeys({"add", "remove"}));
  WARDEN_ASSIGN_OR_RETURN(auto add_text, f.StringList("add"));
  WARDEN_ASSIGN_OR_RETURN(auto remove, f.StringList("remove"));
  std::vector<cluster::Taint> add;
  for (const auto& t : add_text) {
    WARDEN_ASSIGN_OR_RETURN(cluster::Taint taint, cluster::ParseTaint(t));
    add.push_back(std::move(taint));
  }
  WARDEN_ASSIGN_OR_RETURN(store::Node n, cl->UpdateTaints(c.req.params["node"], add, remove));
  if (options_.jobs != nullptr) options_.jobs->Kick();  // the scheduler takes it this round
  return cluster::Cluster::NodeJson(n, false);
}

absl::StatusOr<Json> ApiService::DeleteNode(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(cluster::Cluster * cl, ClusterOf(options_.cluster));
  WARDEN_RETURN_IF_ERROR(cl->RemoveNode(c.req.params["node"]));
  return Json{{"removed", c.req.params["node"]}, {"certificates", "revoked"}};
}

}  // namespace warden::server
