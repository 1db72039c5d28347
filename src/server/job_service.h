// JobService: the job path of the control plane. It owns the scheduler (sched::Scheduler), keeps
// it in step with the nodes the cluster module records (inventory, ready/unreachable, cordon,
// drain) and with the jobs in the store, places queued jobs, hands placements to the nodes'
// agents (through AgentApi's heartbeat) and records what the agents report: running, exited with
// a code, failed to start, cancelled, and each job's stdout/stderr.
//
// Durable state is the store (jobs table) plus the log files under <data_dir>/jobs/<id>/; the
// scheduler is rebuilt from both at Start, placed and running jobs put back exactly where they
// were (Scheduler::Restore), so a server restart loses nothing. A node the cluster marks
// unreachable has its jobs requeued (and its agent, if it comes back, is told to stop them: a
// job runs only where the scheduler currently places it).
//
// Tenant scope is enforced here as well as by RBAC: every tenant-facing call takes the tenant id
// the route resolved and answers NotFound for another tenant's job (no existence oracle).
// Thread-safe (one mutex around the scheduler). Lifecycle: Create -> Start -> Stop.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "api/job_request.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/rng.h"
#include "sched/checker.h"
#include "sched/scheduler.h"
#include "sched/tenant_policy.h"
#include "store/store.h"

namespace warden::server {

struct JobServiceOptions {
  std::string data_dir;                       // logs go to <data_dir>/jobs/<job id>/
  int64_t max_log_bytes = 8 * 1024 * 1024;    // per job and stream; then a truncation marker
  // Run the scheduler's independent invariant checker after every placement and abort on a
  // violation (tests; DESIGN.md "tests check them on every placement").
  bool check_invariants = false;
  absl::Duration pass_interval = absl::Milliseconds(200);
  // Log reads that may wait at once (`job logs -f` long-polls hold one of the HTTP server's
  // blocking threads each); beyond it a read answers at once and the client polls. Keeps the
  // pool free for logins and writes however many people follow logs.
  int max_log_waiters = 2;
  // Pending WatchNode calls per node (an agent keeps one; a few more cover reconnects). A watch
  // holds no thread: the agent listener answers it later (http::Response::Later).
  int max_watches_per_node = 4;
};

// One job state transition reported by a node's agent.
struct AgentJobReport {
  std::string id;
  // running | exited | failed_to_start | cancelled | oom | lost | write_back_failed (exited 0, its write datasets not stored)
  std::string state;
  bool has_exit_code = false;
  int64_t exit_code = 0;
  std::string reason;
};

// What an agent says about its GPUs in one heartbeat: the UUIDs its handoff check passed (no job
// of ours left on them: they may go to another tenant) and those it failed (quarantined until a
// later check passes). DESIGN invariant 3.
struct AgentGpuReport {
  std::vector<std::string> clean;
  std::vector<std::string> dirty;
};

struct JobLogRead {
  std::string data;  // raw bytes of the stream from `offset`
  int64_t offset = 0;
  int64_t next_offset = 0;
  bool ended = false;      // the job is finished and everything it shipped is here
  bool truncated = false;  // the stream hit max_log_bytes
};

class JobService {
 public:
  static absl::StatusOr<std::unique_ptr<JobService>> Create(store::Store& store,
                                                           common::Clock& clock,
                                                           common::Rng& rng,
                                                           JobServiceOptions options);
  ~JobService();

  // Rebuilds the scheduler from the store; with `loop`, starts the thread that syncs nodes and
  // runs a scheduling pass every pass_interval (tests drive Tick() themselves).
  absl::Status Start(bool loop = true);
  void Stop();

  // ---- tenant API (tenant_id: the route's resolved tenant) ----
  // InvalidArgument (400) for a bad spec, naming the field; PermissionDenied / ResourceExhausted
  // / NotFound as sched::Scheduler::Submit refuses it. Returns the stored job (state queued).
  // `authorize_datasets` (job_datasets.cc): called with the decoded run when it names vault
  // datasets, before anything is scheduled or stored; it authorizes each one for the submitter
  // and pins the object version (the resolved fields). Its error refuses the submission with
  // nothing queued. A run with datasets and no such callback is refused (FailedPrecondition).
  absl::StatusOr<store::Job> Submit(
      const std::string& tenant_id, const std::string& tenant_name, std::string_view body,
      const std::string& user_id,
      const std::function<absl::Status(api::JobRun&)>& authorize_datasets = {});
  absl::StatusOr<std::vector<store::Job>> List(const std::string& tenant_id,
                                               const std::optional<std::string>& state);
  // NotFound for an unknown job or one of another tenant (same message).
  absl::StatusOr<store::Job> Get(const std::string& tenant_id, const std::string& id);
  // A queued job ends at once; a placed or running one is asked to stop (SIGTERM, then SIGKILL
  // after `grace`) and ends when its agent reports. FailedPrecondition once ended.
  absl::StatusOr<store::Job> Cancel(const std::string& tenant_id, const std::string& id,
                                    absl::Duration grace);
  // Reads `stream` ("stdout" | "stderr") from `offset` (at most 1 MiB); with `tail_lines` > 0,
  // the last lines instead. When nothing is there yet and the job has not ended, waits up to
  // `wait` for more (long-poll follow).
  absl::StatusOr<JobLogRead> ReadLog(const std::string& tenant_id, const std::string& id,
                                     const std::string& stream, int64_t offset, int tail_lines,
                                     absl::Duration wait);

  // ---- agents (node identity already proven by mTLS) ----
  // Applies the node's reports and returns its assignments:
  //   [{"id","name","run":{command,image,env},"gpus":["GPU-..."],"cancel_grace_ms":N|absent}]
  // Reports about jobs not (or no longer) assigned to this node are ignored: the agent stops
  // whatever is not in its assignments.
  absl::StatusOr<common::Json> AgentSync(const std::string& node_id,
                                         const std::vector<AgentJobReport>& reports,
                                         const AgentGpuReport& gpus);
  // Push to agents: a node's assignment generation changes whenever a job is placed on it, moved
  // off it or asked to stop there. WatchNode calls `notify` once with the generation when it
  // differs from `seen`: at once, from this call, when it already does (or the service stopped);
  // else from the thread that changes it, with the service's lock held, so `notify` must only
  // hand off (the agent API posts the answer to its connection). The agent then heartbeats at
  // once instead of at its next interval. Returns a watch id for CancelNodeWatch (0 when
  // `notify` already ran); ResourceExhausted beyond max_watches_per_node pending watches.
  using NodeNotify = std::function<void(uint64_t generation)>;
  absl::StatusOr<uint64_t> WatchNode(const std::string& node_id, uint64_t seen, NodeNotify notify);
  // Drops a pending watch (its long poll timed out or the server stops); no-op when it fired.
  void CancelNodeWatch(const std::string& node_id, uint64_t watch_id);

  // Appends a chunk the agent read at byte `offset` of the job's stream; returns the offset the
  // agent continues from (less than offset + size after a gap: the agent resends from there).
  // NotFound unless the job is active and assigned to this node.
  absl::StatusOr<int64_t> AppendLog(const std::string& node_id, const std::string& job_id,
                                    const std::string& stream, int64_t offset,
                                    std::string_view data);

  // Dataset `index` of a job that is placed or running on `node_id` (its tenant id and the
  // resolved dataset). NotFound (same message whether the job is unknown, another node's, or
  // ended) or NotFound for an index the job does not have.
  struct NodeJobDataset {
    std::string tenant_id;
    std::string job_id;
    api::JobDataset dataset;
  };
  absl::StatusOr<NodeJobDataset> DatasetForNode(const std::string& node_id,
                                                const std::string& job_id, uint64_t index);
  // The tenant id and image ("host" or "sha256:...") of a job placed or running on `node_id`;
  // NotFound like DatasetForNode. (image_routes.cc)
  absl::StatusOr<std::pair<std::string, std::string>> ImageForNode(const std::string& node_id,
                                                                   const std::string& job_id);

  // ---- tenant isolation policy and quota (issue 6; job_policy.cc) ----
  // The tenant's policy as the scheduler holds it (mig and unlimited when never set).
  absl::StatusOr<sched::TenantPolicy> GetTenantPolicy(const std::string& tenant_name);
  // What the tenant's placed and running jobs hold now, as the quota counts it.
  absl::StatusOr<sched::Resources> TenantUsage(const std::string& tenant_name);
  // Stores the policy and applies it at once (no restart). A stricter isolation requeues the
  // tenant's placed/running jobs it forbids (their agents are told to stop them); a lower quota
  // leaves running jobs alone and new ones wait for quota. With `only_stricter` (a tenant admin
  // changing its own tenant), PermissionDenied naming what the change would weaken or raise.
  absl::StatusOr<sched::TenantPolicy> SetTenantPolicy(const std::string& tenant_id,
                                                      const std::string& tenant_name,
                                                      const sched::TenantPolicy& policy,
                                                      const std::string& user_id,
                                                      bool only_stricter);

  // ---- node pools dedicated to tenants (issue 6; job_policy.cc) ----
  struct PoolView {
    std::string name;
    std::vector<std::string> dedicated_to;  // tenant names, sorted; empty and !reserved: general
    bool reserved = false;  // still dedicated, though every tenant it was for was deleted
    int nodes = 0;          // nodes in the pool that the scheduler knows
    int64_t updated_at = 0;  // last dedication change (0: never)
    std::string updated_by;  // user id
  };
  // Every pool the scheduler knows (from nodes, join tokens used, or a dedication), by name.
  absl::StatusOr<std::vector<PoolView>> ListPools();
  // Stores the pool's dedication and applies it at once: the placed and running jobs of tenants
  // no longer allowed there are requeued and their agents told to stop them. An empty list makes
  // it a general pool. NotFound naming an unknown tenant; InvalidArgument for a bad pool name.
  absl::StatusOr<PoolView> SetPoolDedication(const std::string& pool,
                                             const std::vector<std::string>& tenant_names,
                                             const std::string& user_id);

  // One round: sync nodes from the store, a scheduling pass, persist changes. Public for tests.
  absl::Status Tick();
  // Wakes the loop now (a job was submitted, a node changed).
  void Kick();

  // The API's view of a job (node named, assignment and spec as JSON objects).
  common::Json JobJson(const store::Job& job);

  // Counters for tests.
  size_t placements() const;

 private:
  struct Tracked {
    store::Job rec;
    sched::JobId sid = 0;
    api::JobRun run;
  };
  struct NodeSeen {
    sched::NodeId sid = 0;
    std::string status, schedule;
    std::string meta;  // pool, labels and taints as last given to the scheduler
  };

  JobService(store::Store& store, common::Clock& clock, common::Rng& rng, JobServiceOptions o);
  absl::Status SyncNodesLocked();
  absl::Status AddNodeLocked(const store::Node& n);
  absl::StatusOr<sched::TenantId> TenantLocked(const std::string& name);
  absl::Status LoadTenantPoliciesLocked();  // job_policy.cc; at Start, before any job
  absl::Status LoadPoolDedicationsLocked();  // job_policy.cc; at Start, before any node
  absl::StatusOr<PoolView> PoolViewLocked(sched::PoolId pool);  // job_policy.cc
  absl::Status SyncNodeMetaLocked(const store::Node& n, NodeSeen& seen);  // job_policy.cc
  void UpdateTenantGaugesLocked();  // job_policy.cc
  // A stored node's labels (sorted) and hard taints (PreferNoSchedule left out); NoExecute ones
  // also in `no_execute`. job_policy.cc.
  static void NodeMetaOf(const store::Node& n,
                         std::vector<std::pair<std::string, std::string>>& labels,
                         std::vector<sched::Taint>& taints, std::vector<sched::Taint>& no_execute);
  absl::Status PersistLocked();
  void CheckLocked(const char* after);  // options_.check_invariants: abort on a violation
  absl::Status EndLocked(const std::string& id, const std::string& state,
                         const std::string& reason, std::optional<int64_t> exit_code);
  std::string JobDir(const std::string& id) const;
  std::string LogPath(const std::string& id, const std::string& stream) const;
  void Loop();
  void BumpNodeLocked(const std::string& node_id);

  store::Store& store_;
  common::Clock& clock_;
  common::Rng& rng_;
  JobServiceOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;       // loop wake-ups; guarded by mu_
  std::condition_variable log_cv_;   // new log data or a job ended; guarded by mu_
  std::unique_ptr<sched::Scheduler> sched_;
  std::map<std::string, Tracked> active_;                 // job id -> queued/placed/running
  std::map<sched::JobId, std::string> by_sid_;
  std::map<std::string, NodeSeen> nodes_;                 // store node id -> scheduler node
  std::map<sched::NodeId, std::string> node_ids_;         // scheduler node -> store node id
  std::map<std::string, std::string> node_names_;         // store node id -> name
  std::map<std::string, int64_t> log_received_;           // "id/stream" -> next offset
  sched::InvariantChecker checker_;
  size_t placements_ = 0;
  int log_waiters_ = 0;  // ReadLog calls waiting now; guarded by mu_
  std::map<std::string, uint64_t> node_gen_;  // store node id -> assignment generation
  uint64_t gen_seq_ = 0;                      // source of generations (never reused)
  struct NodeWatch {
    uint64_t id = 0;
    NodeNotify notify;
  };
  std::map<std::string, std::vector<NodeWatch>> node_watches_;  // store node id -> pending
  uint64_t watch_seq_ = 0;
  bool kicked_ = false;
  bool stopping_ = false;
  std::thread loop_;
};

}  // namespace warden::server
