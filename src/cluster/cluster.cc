// The cluster service: join, agent authentication, heartbeats and liveness, node administration.
//
// Threats answered here (see docs/threat-model.md, "Agent identity"):
// - Join token theft or replay: tokens are stored hashed, used once (atomically, in the same
//   transaction that creates the node), expire, and are bound to this server's CA.
// - A node speaking for another: the certificate's node id must equal the node in the request.
// - A removed or compromised node: removal revokes every certificate serial of the node, and
//   only serials this CA recorded as issued to a node are accepted at all.
// - Heartbeat write amplification: liveness is kept in memory; the store is written only when
//   the inventory or the status changes (and at most once a minute for last_heartbeat).
#include "cluster/cluster.h"

#include <algorithm>

#include "common/encoding.h"
#include "common/ids.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::cluster {
namespace {

using common::Json;
using common::StrCat;

constexpr int64_t kPersistHeartbeatEvery = 60;  // seconds

absl::StatusOr<std::map<std::string, std::string>> Labels(const store::Node& n) {
  auto j = common::ParseJsonStrict(n.labels_json);
  if (!j.ok() || !j->is_object()) {
    return absl::DataLossError(StrCat("store: labels of node ", n.name, " are not a JSON object"));
  }
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : j->items()) {
    if (!v.is_string()) return absl::DataLossError(StrCat("store: label of node ", n.name));
    out[k] = v.get<std::string>();
  }
  return out;
}

absl::StatusOr<std::vector<Taint>> Taints(const store::Node& n) {
  auto j = common::ParseJsonStrict(n.taints_json);
  if (!j.ok() || !j->is_array()) {
    return absl::DataLossError(StrCat("store: taints of node ", n.name, " are not a JSON array"));
  }
  std::vector<Taint> out;
  for (const auto& t : *j) {
    if (!t.is_object()) return absl::DataLossError(StrCat("store: taint of node ", n.name));
    out.push_back(Taint{t.value("key", ""), t.value("value", ""), t.value("effect", "")});
  }
  return out;
}

Json TaintsJson(const std::vector<Taint>& taints) {
  Json out = Json::array();
  for (const auto& t : taints) {
    out.push_back(Json{{"key", t.key}, {"value", t.value}, {"effect", t.effect}});
  }
  return out;
}

}  // namespace

Cluster::Cluster(store::Store& store, const pki::NodeCertificateAuthority& ca, common::Clock& clock,
                 common::Rng& rng, ClusterOptions options)
    : store_(store), ca_(ca), clock_(clock), rng_(rng), options_(std::move(options)) {}

Cluster::~Cluster() { Stop(); }

absl::StatusOr<std::unique_ptr<Cluster>> Cluster::Create(store::Store& store,
                                                         const pki::NodeCertificateAuthority& ca,
                                                         common::Clock& clock, common::Rng& rng,
                                                         ClusterOptions options) {
  if (options.heartbeat_interval <= absl::ZeroDuration() || options.missed_heartbeats < 1) {
    return absl::InvalidArgumentError("heartbeat interval and missed heartbeats must be positive");
  }
  // Short lifetimes exist for tests of renewal; production keeps the 24 h default.
  if (options.cert_ttl < absl::Seconds(5)) {
    return absl::InvalidArgumentError("node certificate lifetime must be at least 5 seconds");
  }
  std::unique_ptr<Cluster> c(new Cluster(store, ca, clock, rng, std::move(options)));
  // After a restart every node gets a full deadline from now before it can be called
  // unreachable: the server, not the node, was away.
  WARDEN_ASSIGN_OR_RETURN(auto nodes, store.ListNodes());
  absl::Time now = clock.Now();
  for (const auto& n : nodes) c->last_seen_[n.id] = now;
  return c;
}

void Cluster::Start() {
  std::lock_guard lock(mu_);
  if (liveness_.joinable()) return;
  stopping_ = false;
  liveness_ = std::thread([this] { LivenessLoop(); });
}

void Cluster::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (liveness_.joinable()) liveness_.join();
}

void Cluster::LivenessLoop() {
  auto tick =
      absl::ToChronoMilliseconds(std::max(options_.heartbeat_interval / 5, absl::Milliseconds(20)));
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, tick);
    if (stopping_) break;
    lock.unlock();
    CheckLiveness();
    lock.lock();
  }
}

// ---------------------------------------------------------------------------------------------
// Join

absl::StatusOr<CreatedJoinToken> Cluster::CreateJoinToken(const std::string& pool,
                                                          absl::Duration ttl,
                                                          const std::string& created_by) {
  WARDEN_RETURN_IF_ERROR(common::ValidateName("pool", pool));
  if (ttl < absl::Minutes(1) || ttl > options_.max_join_token_ttl) {
    return absl::InvalidArgumentError(StrCat("join token ttl must be between 1m and ",
                                             absl::FormatDuration(options_.max_join_token_ttl)));
  }
  CreatedJoinToken out;
  std::string secret = common::Base64UrlEncode(rng_.Bytes(32));
  out.token = pki::FormatJoinToken(secret, options_.ca_fingerprint);
  int64_t now = clock_.NowUnix();
  out.record = store::JoinToken{common::NewId(rng_, "jtk"),
                                pki::JoinSecretHash(secret),
                                pool,
                                created_by,
                                now,
                                now + absl::ToInt64Seconds(ttl),
                                0,
                                ""};
  WARDEN_RETURN_IF_ERROR(store_.CreateJoinToken(out.record));
  return out;
}

absl::StatusOr<std::vector<store::JoinToken>> Cluster::ListJoinTokens() {
  return store_.ListJoinTokens();
}

absl::StatusOr<JoinResult> Cluster::Join(const JoinRequest& request) {
  auto parts = pki::ParseJoinToken(request.token);
  if (!parts.ok()) return absl::UnauthenticatedError(std::string(parts.status().message()));
  if (!common::ConstantTimeEquals(parts->ca_fingerprint, options_.ca_fingerprint)) {
    return absl::UnauthenticatedError("join token was issued for another server's CA");
  }
  WARDEN_RETURN_IF_ERROR(common::ValidateName("node name", request.name));
  if (request.name == "join" || request.name == "join-tokens") {
    return absl::InvalidArgumentError(StrCat("node name \"", request.name, "\" is reserved"));
  }
  JoinResult out;
  absl::Time now = clock_.Now();
  out.node.id = common::NewId(rng_, "nod");
  out.node.name = request.name;
  out.node.joined_at = absl::ToUnixSeconds(now);
  out.node.last_heartbeat = out.node.joined_at;
  if (request.inventory) out.node.inventory_json = EncodeInventory(*request.inventory).dump();
  // Issue first (pure computation; a bad CSR must not consume the token), record in one
  // transaction with the token's use and the node.
  WARDEN_ASSIGN_OR_RETURN(out.certificate, ca_.Issue(request.csr_pem, out.node.id, request.name,
                                                     options_.cert_ttl, now));
  std::string hash = pki::JoinSecretHash(parts->secret);
  absl::Status s = store_.InTransaction([&]() -> absl::Status {
    auto used = store_.UseJoinToken(hash, out.node.joined_at, out.node.id);
    if (!used.ok()) {
      if (used.status().code() == absl::StatusCode::kNotFound ||
          used.status().code() == absl::StatusCode::kFailedPrecondition) {
        return absl::UnauthenticatedError(std::string(used.status().message()));
      }
      return used.status();
    }
    out.node.pool = used->pool;
    WARDEN_RETURN_IF_ERROR(store_.CreateNode(out.node));
    return store_.AddNodeCert(store::NodeCert{out.certificate.serial, out.node.id,
                                              out.node.joined_at,
                                              absl::ToUnixSeconds(out.certificate.not_after), 0});
  });
  WARDEN_RETURN_IF_ERROR(s);
  out.ca_pem = ca_.ca_cert_pem();
  std::lock_guard lock(mu_);
  last_seen_[out.node.id] = now;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Agents

absl::StatusOr<AgentPeer> Cluster::AuthenticateAgent(std::string_view peer_cert_der,
                                                     std::string_view node_id) {
  if (peer_cert_der.empty()) return absl::UnauthenticatedError("client certificate required");
  auto id = pki::ReadNodeIdentity(peer_cert_der);
  if (!id.ok()) return absl::UnauthenticatedError(std::string(id.status().message()));
  if (id->node_id != node_id) {
    return absl::PermissionDeniedError(
        StrCat("certificate of node ", id->node_id, " cannot speak for node ", node_id));
  }
  // TLS checked validity with the system clock; check again with ours (one source of time).
  absl::Time now = clock_.Now();
  if (now >= id->not_after) return absl::UnauthenticatedError("node certificate expired");
  if (now < id->not_before) return absl::UnauthenticatedError("node certificate not yet valid");
  auto cert = store_.GetNodeCert(id->serial);
  if (!cert.ok()) {
    if (cert.status().code() == absl::StatusCode::kNotFound) {
      return absl::UnauthenticatedError("node certificate serial is unknown to this server");
    }
    return cert.status();
  }
  if (cert->revoked_at != 0) return absl::UnauthenticatedError("node certificate revoked");
  if (cert->node_id != id->node_id) {
    return absl::UnauthenticatedError("node certificate serial belongs to another node");
  }
  auto node = store_.GetNode(id->node_id);
  if (!node.ok()) {
    if (node.status().code() == absl::StatusCode::kNotFound) {
      return absl::UnauthenticatedError("node was removed");
    }
    return node.status();
  }
  return AgentPeer{node->id, node->name, *id};
}

absl::StatusOr<HeartbeatReply> Cluster::Heartbeat(const AgentPeer& peer,
                                                  const std::optional<NodeInventory>& inventory) {
  absl::Time now = clock_.Now();
  {
    std::lock_guard lock(mu_);
    last_seen_[peer.node_id] = now;
  }
  WARDEN_ASSIGN_OR_RETURN(store::Node node, store_.GetNode(peer.node_id));
  bool changed = false;
  if (node.status != "ready") {
    node.status = "ready";
    changed = true;
  }
  if (inventory) {
    std::string inv = EncodeInventory(*inventory).dump();
    if (inv != node.inventory_json) {
      node.inventory_json = std::move(inv);
      changed = true;
    }
  }
  int64_t unix_now = absl::ToUnixSeconds(now);
  if (changed || unix_now - node.last_heartbeat >= kPersistHeartbeatEvery) {
    node.last_heartbeat = unix_now;
    WARDEN_RETURN_IF_ERROR(store_.UpdateNode(node));
  }
  return HeartbeatReply{node.schedule, options_.heartbeat_interval};
}

absl::StatusOr<pki::NodeCertificate> Cluster::Renew(const AgentPeer& peer,
                                                    std::string_view csr_pem) {
  absl::Time now = clock_.Now();
  WARDEN_ASSIGN_OR_RETURN(pki::NodeCertificate cert,
                          ca_.Issue(csr_pem, peer.node_id, peer.node_name, options_.cert_ttl, now));
  WARDEN_RETURN_IF_ERROR(
      store_.AddNodeCert(store::NodeCert{cert.serial, peer.node_id, absl::ToUnixSeconds(now),
                                         absl::ToUnixSeconds(cert.not_after), 0}));
  return cert;
}

// ---------------------------------------------------------------------------------------------
// Nodes

absl::StatusOr<std::vector<store::Node>> Cluster::ListNodes() {
  WARDEN_ASSIGN_OR_RETURN(auto nodes, store_.ListNodes());
  std::lock_guard lock(mu_);
  for (auto& n : nodes) {
    if (auto it = last_seen_.find(n.id); it != last_seen_.end()) {
      n.last_heartbeat = std::max(n.last_heartbeat, absl::ToUnixSeconds(it->second));
    }
  }
  return nodes;
}

absl::StatusOr<store::Node> Cluster::GetNode(const std::string& name) {
  WARDEN_ASSIGN_OR_RETURN(store::Node n, store_.GetNodeByName(name));
  std::lock_guard lock(mu_);
  if (auto it = last_seen_.find(n.id); it != last_seen_.end()) {
    n.last_heartbeat = std::max(n.last_heartbeat, absl::ToUnixSeconds(it->second));
  }
  return n;
}

absl::StatusOr<store::Node> Cluster::SetSchedule(const std::string& name,
                                                 const std::string& schedule) {
  if (schedule != "active" && schedule != "cordoned" && schedule != "draining") {
    return absl::InvalidArgumentError(
        StrCat("schedule \"", schedule, "\" is not active, cordoned or draining"));
  }
  store::Node n;
  WARDEN_RETURN_IF_ERROR(store_.InTransaction([&]() -> absl::Status {
    WARDEN_ASSIGN_OR_RETURN(n, store_.GetNodeByName(name));
    n.schedule = schedule;
    return store_.UpdateNode(n);
  }));
  return n;
}

absl::StatusOr<store::Node> Cluster::SetPool(const std::string& name, const std::string& pool) {
  WARDEN_RETURN_IF_ERROR(common::ValidateName("pool", pool));
  store::Node n;
  WARDEN_RETURN_IF_ERROR(store_.InTransaction([&]() -> absl::Status {
    WARDEN_ASSIGN_OR_RETURN(n, store_.GetNodeByName(name));
    n.pool = pool;
    return store_.UpdateNode(n);
  }));
  return n;
}

absl::StatusOr<store::Node> Cluster::UpdateLabels(const std::string& name,
                                                  const std::map<std::string, std::string>& set,
                                                  const std::vector<std::string>& remove) {
  for (const auto& [k, v] : set) WARDEN_RETURN_IF_ERROR(ValidateLabel(k, v));
  store::Node n;
  WARDEN_RETURN_IF_ERROR(store_.InTransaction([&]() -> absl::Status {
    WARDEN_ASSIGN_OR_RETURN(n, store_.GetNodeByName(name));
    WARDEN_ASSIGN_OR_RETURN(auto labels, Labels(n));
    for (const auto& [k, v] : set) labels[k] = v;
    for (const auto& k : remove) labels.erase(k);
    if (labels.size() > 64) return absl::InvalidArgumentError("a node holds at most 64 labels");
    n.labels_json = Json(labels).dump();
    return store_.UpdateNode(n);
  }));
  return n;
}

absl::StatusOr<store::Node> Cluster::UpdateTaints(const std::string& name,
                                                  const std::vector<Taint>& add,
                                                  const std::vector<std::string>& remove_keys) {
  for (const auto& t : add) WARDEN_RETURN_IF_ERROR(ValidateTaint(t));
  store::Node n;
  WARDEN_RETURN_IF_ERROR(store_.InTransaction([&]() -> absl::Status {
    WARDEN_ASSIGN_OR_RETURN(n, store_.GetNodeByName(name));
    WARDEN_ASSIGN_OR_RETURN(auto taints, Taints(n));
    for (const auto& t : add) {
      std::erase_if(taints, [&](const Taint& x) { return x.key == t.key && x.effect == t.effect; });
      taints.push_back(t);
    }
    for (const auto& k : remove_keys) {
      std::erase_if(taints, [&](const Taint& x) { return x.key == k; });
    }
    if (taints.size() > 32) return absl::InvalidArgumentError("a node holds at most 32 taints");
    n.taints_json = TaintsJson(taints).dump();
    return store_.UpdateNode(n);
  }));
  return n;
}

absl::Status Cluster::RemoveNode(const std::string& name) {
  std::string id;
  WARDEN_RETURN_IF_ERROR(store_.InTransaction([&]() -> absl::Status {
    WARDEN_ASSIGN_OR_RETURN(store::Node n, store_.GetNodeByName(name));
    id = n.id;
    WARDEN_RETURN_IF_ERROR(store_.RevokeNodeCerts(n.id, clock_.NowUnix()).status());
    return store_.DeleteNode(n.id);
  }));
  std::lock_guard lock(mu_);
  last_seen_.erase(id);
  return absl::OkStatus();
}

std::vector<std::string> Cluster::CheckLiveness() {
  absl::Time now = clock_.Now();
  std::vector<std::string> stale;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, seen] : last_seen_) {
      if (now - seen > Deadline()) stale.push_back(id);
    }
  }
  std::vector<std::string> marked;
  for (const auto& id : stale) {
    auto n = store_.GetNode(id);
    if (!n.ok() || n->status == "unreachable") continue;
    {
      // A heartbeat may have arrived since the scan.
      std::lock_guard lock(mu_);
      auto it = last_seen_.find(id);
      if (it == last_seen_.end() || now - it->second <= Deadline()) continue;
      n->last_heartbeat = std::max(n->last_heartbeat, absl::ToUnixSeconds(it->second));
    }
    n->status = "unreachable";
    if (store_.UpdateNode(*n).ok()) marked.push_back(n->name);
  }
  return marked;
}

Json Cluster::NodeJson(const store::Node& n, bool detail) {
  Json labels = Json::object();
  if (auto l = Labels(n); l.ok()) labels = Json(*l);
  Json taints = Json::array();
  if (auto t = Taints(n); t.ok()) taints = TaintsJson(*t);
  auto inv = common::ParseJsonStrict(n.inventory_json);
  Json inventory = inv.ok() && inv->is_object() ? *inv : Json::object();
  // GPU summary: count and models, e.g. "4x H100-80GB, 2x H200-141GB".
  std::vector<std::pair<std::string, int>> models;
  int gpus = 0;
  uint64_t gpu_memory = 0;
  if (inventory.contains("gpus") && inventory["gpus"].is_array()) {
    for (const auto& g : inventory["gpus"]) {
      ++gpus;
      std::string model = g.value("model", "");
      if (model.empty()) model = g.value("product_name", "unknown");
      gpu_memory += g.value("memory_mib", uint64_t{0});
      auto it = std::find_if(models.begin(), models.end(),
                             [&](const auto& p) { return p.first == model; });
      if (it == models.end()) {
        models.emplace_back(model, 1);
      } else {
        ++it->second;
      }
    }
  }
  std::string summary;
  for (const auto& [m, count] : models) {
    summary += StrCat(summary.empty() ? "" : ", ", count, "x ", m);
  }
  Json out{{"id", n.id},
           {"name", n.name},
           {"pool", n.pool},
           {"status", n.status},
           {"schedule", n.schedule},
           {"labels", labels},
           {"taints", taints},
           {"joined_at", n.joined_at},
           {"last_heartbeat", n.last_heartbeat},
           {"gpus", gpus},
           {"gpu_models", summary},
           {"gpu_memory_mib", gpu_memory},
           {"cpus", inventory.value("cpus", 0)},
           {"memory_mib", inventory.value("memory_mib", uint64_t{0})}};
  if (detail) out["inventory"] = inventory;
  return out;
}

}  // namespace warden::cluster
