// cluster: what the control plane knows about its nodes — join tokens, node identities
// (certificates issued through pki), pools, labels, taints, cordon/drain state, liveness from
// heartbeats, and each node's inventory (host facts and GPUs).
//
// `Cluster` is the one service object; the server's HTTP layers (the admin API and the agents'
// mTLS listener) call it after their own authentication. It owns nothing but an in-memory map of
// last heartbeat times; every durable fact lives in the store. Thread-safe.
// Lifecycle: Create -> Start (liveness thread) -> Stop (idempotent; also run by the destructor).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/rng.h"
#include "gpu/gpu.h"
#include "pki/pki.h"
#include "store/store.h"

namespace warden::cluster {

// ---------------------------------------------------------------------------------------------
// Inventory: what an agent reports about its node. The wire form is one JSON object (see
// README.md for the schema); DecodeInventory is strict: unknown or missing keys, wrong types,
// out-of-range numbers, control characters and oversize strings or lists are InvalidArgument
// naming the field. EncodeInventory(DecodeInventory(x)) is the canonical form the store keeps.

struct ContainerRuntime {
  std::string name;  // "runc", "crun", "bwrap", "docker", "containerd", "nvidia-container-toolkit"
  std::string version;  // as the tool printed it, e.g. "1.1.5"
  bool operator==(const ContainerRuntime&) const = default;
};

struct NodeInventory {
  std::string hostname;
  std::string os;      // PRETTY_NAME of /etc/os-release, e.g. "Debian GNU/Linux 12 (bookworm)"
  std::string kernel;  // uname release, e.g. "6.1.0-18-amd64"
  std::string arch;    // uname machine, e.g. "x86_64"
  int cpus = 0;
  uint64_t memory_mib = 0;
  std::string agent_version;
  std::string gpu_backend;  // "sim" or "nvml"
  std::vector<ContainerRuntime> container_runtimes;
  std::vector<gpu::GpuDevice> gpus;  // processes are not part of the inventory
};

inline constexpr size_t kMaxInventoryBytes = 256 * 1024;
inline constexpr size_t kMaxInventoryGpus = 64;

common::Json EncodeInventory(const NodeInventory& inv);
absl::StatusOr<NodeInventory> DecodeInventory(const common::Json& json);
// Parses (strict JSON: no duplicate keys, depth and size limits) then decodes.
absl::StatusOr<NodeInventory> DecodeInventoryText(std::string_view text);

// Whether the scheduler may place work on a GPU or MIG instance with this handoff status (the
// optional "handoff" object of each inventory GPU and MIG instance, issue 7): only a reported
// `available`. A device whose agent reports no handoff status is not known to be clean
// (DESIGN invariant 3), so it is unschedulable too.
bool HandoffSchedulable(const std::optional<gpu::HandoffInfo>& handoff);

// ---------------------------------------------------------------------------------------------
// Labels and taints

struct Taint {
  std::string key;
  std::string value;
  std::string effect;  // NoSchedule | PreferNoSchedule | NoExecute
  bool operator==(const Taint&) const = default;
};

// Label keys: 1-63 of [a-z0-9./_-] starting with a letter or digit; values: 0-63 of
// [A-Za-z0-9._-]. Taint keys/values likewise; effect one of the three above.
absl::Status ValidateLabel(std::string_view key, std::string_view value);
absl::Status ValidateTaint(const Taint& taint);
// "key=value:Effect" or "key:Effect".
absl::StatusOr<Taint> ParseTaint(std::string_view text);

// ---------------------------------------------------------------------------------------------
// The service

struct ClusterOptions {
  absl::Duration heartbeat_interval = absl::Seconds(5);
  int missed_heartbeats = 3;  // a node is unreachable after this many intervals without one
  absl::Duration cert_ttl = pki::kNodeCertValidity;
  absl::Duration max_join_token_ttl = absl::Hours(24 * 7);
  std::string ca_fingerprint;  // the server CA's, embedded in join token text
};

struct CreatedJoinToken {
  std::string token;  // the secret text "gwj1.<secret>.<ca>" (shown once, never stored)
  store::JoinToken record;
};

struct JoinRequest {
  std::string token;  // the whole "gwj1...." text
  std::string csr_pem;
  std::string name;  // the node name it asks for
  std::optional<NodeInventory> inventory;
};

struct JoinResult {
  store::Node node;
  pki::NodeCertificate certificate;
  std::string ca_pem;
};

// An agent whose client certificate passed AuthenticateAgent.
struct AgentPeer {
  std::string node_id;
  std::string node_name;
  pki::NodeIdentity identity;
};

struct HeartbeatReply {
  std::string schedule;  // active | cordoned | draining
  absl::Duration heartbeat_interval;
};

class Cluster {
 public:
  // `ca` signs node certificates; every reference must outlive the Cluster.
  static absl::StatusOr<std::unique_ptr<Cluster>> Create(store::Store& store,
                                                         const pki::NodeCertificateAuthority& ca,
                                                         common::Clock& clock, common::Rng& rng,
                                                         ClusterOptions options);
  ~Cluster();

  // Starts the liveness thread (marks nodes unreachable; checks 5 times per interval).
  void Start();
  void Stop();

  const ClusterOptions& options() const { return options_; }

  // ---- join ----
  // A single-use token for one node of `pool`, valid for `ttl` (1 minute .. max_join_token_ttl).
  // InvalidArgument for a bad pool name or ttl.
  absl::StatusOr<CreatedJoinToken> CreateJoinToken(const std::string& pool, absl::Duration ttl,
                                                   const std::string& created_by);
  absl::StatusOr<std::vector<store::JoinToken>> ListJoinTokens();
  // Consumes the token and creates the node with a fresh certificate, all in one transaction.
  // Unauthenticated when the token is malformed, names another CA, is unknown, used or expired
  // (the message says which); InvalidArgument for a bad name, CSR or inventory; AlreadyExists
  // when a node of that name exists (the token is then NOT consumed).
  absl::StatusOr<JoinResult> Join(const JoinRequest& request);

  // ---- agents (mTLS) ----
  // Checks the verified client certificate `peer_cert_der` against the node the request speaks
  // for. Unauthenticated: no certificate, no node identity in it, expired by our clock, serial
  // unknown or revoked, node removed. PermissionDenied: the certificate is another node's.
  absl::StatusOr<AgentPeer> AuthenticateAgent(std::string_view peer_cert_der,
                                              std::string_view node_id);
  // Records a heartbeat (and the inventory when given and changed). A node that was unreachable
  // becomes ready.
  absl::StatusOr<HeartbeatReply> Heartbeat(const AgentPeer& peer,
                                           const std::optional<NodeInventory>& inventory);
  // Issues a new certificate for the peer's node over the CSR's key. Old certificates stay valid
  // until they expire.
  absl::StatusOr<pki::NodeCertificate> Renew(const AgentPeer& peer, std::string_view csr_pem);

  // ---- nodes (admin) ----
  // last_heartbeat of each node is the latest this replica saw.
  absl::StatusOr<std::vector<store::Node>> ListNodes();
  absl::StatusOr<store::Node> GetNode(const std::string& name);
  // schedule: "active" (uncordon), "cordoned" or "draining". Draining stops new work like cordon
  // and is where the scheduler moves existing work away (jobs are not part of this module).
  absl::StatusOr<store::Node> SetSchedule(const std::string& name, const std::string& schedule);
  // Sets labels from `set`, then removes `remove`. InvalidArgument for a bad key or value.
  absl::StatusOr<store::Node> UpdateLabels(const std::string& name,
                                           const std::map<std::string, std::string>& set,
                                           const std::vector<std::string>& remove);
  // Adds (replacing same key+effect) then removes by key.
  absl::StatusOr<store::Node> UpdateTaints(const std::string& name, const std::vector<Taint>& add,
                                           const std::vector<std::string>& remove_keys);
  // Moves the node to `pool` (issue 6); the job service requeues work the new pool does not
  // admit. InvalidArgument for a bad pool name; NotFound for an unknown node.
  absl::StatusOr<store::Node> SetPool(const std::string& name, const std::string& pool);
  // Revokes every certificate of the node, then deletes it. Its agent is refused from then on.
  absl::Status RemoveNode(const std::string& name);

  // Marks nodes whose last heartbeat is older than missed_heartbeats * interval unreachable;
  // returns their names. Called by the liveness thread; public for tests with a FakeClock.
  std::vector<std::string> CheckLiveness();

  // The API's view of a node: name, id, pool, status, schedule, labels, taints, last heartbeat,
  // GPU summary; with `detail`, the whole inventory.
  static common::Json NodeJson(const store::Node& node, bool detail);

 private:
  Cluster(store::Store& store, const pki::NodeCertificateAuthority& ca, common::Clock& clock,
          common::Rng& rng, ClusterOptions options);
  absl::Duration Deadline() const {
    return options_.heartbeat_interval * options_.missed_heartbeats;
  }
  void LivenessLoop();

  store::Store& store_;
  const pki::NodeCertificateAuthority& ca_;
  common::Clock& clock_;
  common::Rng& rng_;
  ClusterOptions options_;

  std::mutex mu_;
  std::map<std::string, absl::Time> last_seen_;  // node id -> latest heartbeat; guarded by mu_
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread liveness_;
};

}  // namespace warden::cluster
