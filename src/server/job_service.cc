// JobService: see job_service.h. The store is the truth; the scheduler is a cache of it that is
// rebuilt at Start. Every change the scheduler makes (placements, requeues) is written back by
// PersistLocked before the mutex is released, so an agent never sees an assignment the store
// does not hold.
#include "server/job_service.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "cluster/cluster.h"
#include "common/ids.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::server {
namespace {

using common::Json;
using common::StrCat;

constexpr int64_t kMaxLogRead = 1 << 20;

bool Active(const std::string& state) {
  return state == "queued" || state == "placed" || state == "running";
}

absl::Status MakeDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(StrCat("cannot create ", dir, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

int64_t FileSize(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
}

std::string ReadRange(const std::string& path, int64_t offset, int64_t max) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(offset);
  std::string out(static_cast<size_t>(max), '\0');
  in.read(out.data(), max);
  out.resize(static_cast<size_t>(std::max<std::streamsize>(0, in.gcount())));
  return out;
}

absl::Status AppendFile(const std::string& path, std::string_view data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return absl::InternalError(StrCat("cannot open ", path, ": ", std::strerror(errno)));
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  ::close(fd);
  if (!ok) return absl::InternalError(StrCat("cannot write ", path));
  return absl::OkStatus();
}

std::string TruncationMarker(int64_t limit) {
  return StrCat("\n[gpuwarden: output truncated: this stream exceeded ", limit,
                " bytes; the rest was dropped]\n");
}

Json AssignmentJson(const sched::ClusterState& st, const sched::JobRecord& r) {
  Json out = Json::array();
  const sched::NodeState& node = st.nodes[r.node];
  for (const sched::GpuAssignment& a : r.gpus) {
    const sched::GpuState& g = node.gpus[a.gpu];
    Json e{{"index", a.gpu}, {"uuid", g.uuid}, {"millis", a.millis}};
    if (a.mig_profile_id >= 0) {
      e["mig_profile_id"] = a.mig_profile_id;
      e["mig_start"] = a.mig_start;
      const gpu::MigProfile* p = g.model ? g.model->FindProfile(a.mig_profile_id) : nullptr;
      if (p != nullptr) e["mig_profile"] = p->name;
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobService>> JobService::Create(store::Store& store,
                                                               common::Clock& clock,
                                                               common::Rng& rng,
                                                               JobServiceOptions options) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("job service: no data dir");
  if (options.max_log_bytes < 1024) {
    return absl::InvalidArgumentError("job service: max_log_bytes must be at least 1024");
  }
  WARDEN_RETURN_IF_ERROR(MakeDir(StrCat(options.data_dir, "/jobs")));
  return std::unique_ptr<JobService>(new JobService(store, clock, rng, std::move(options)));
}

JobService::JobService(store::Store& store, common::Clock& clock, common::Rng& rng,
                       JobServiceOptions o)
    : store_(store), clock_(clock), rng_(rng), options_(std::move(o)) {}

JobService::~JobService() { Stop(); }

std::string JobService::JobDir(const std::string& id) const {
  return StrCat(options_.data_dir, "/jobs/", id);
}

std::string JobService::LogPath(const std::string& id, const std::string& stream) const {
  return StrCat(JobDir(id), "/", stream, ".log");
}

size_t JobService::placements() const {
  std::lock_guard lock(mu_);
  return placements_;
}

absl::Status JobService::Start(bool loop) {
  std::unique_lock lock(mu_);
  sched::Scheduler::Options so;
  // gpuwarden never changes MIG mode (issue 6: agents create and destroy instances only): only
  // GPUs already in the mode a job needs are used.
  so.plan_mig_mode_changes = false;
  WARDEN_ASSIGN_OR_RETURN(sched_, sched::Scheduler::Create(so));
  WARDEN_RETURN_IF_ERROR(LoadTenantPoliciesLocked());
  WARDEN_RETURN_IF_ERROR(LoadPoolDedicationsLocked());
  WARDEN_RETURN_IF_ERROR(SyncNodesLocked());
  WARDEN_ASSIGN_OR_RETURN(auto jobs, store_.ListJobs(std::nullopt, std::nullopt, true));
  for (store::Job& rec : jobs) {
    auto spec_json = common::ParseJsonStrict(rec.spec_json);
    absl::StatusOr<sched::JobSpec> spec = absl::DataLossError("no placement");
    absl::StatusOr<api::JobRun> run = absl::DataLossError("no run");
    if (spec_json.ok() && spec_json->is_object() && spec_json->contains("placement")) {
      spec = sched::ParseJobSpec((*spec_json)["placement"].dump());
      run = api::JobRunFromJson((*spec_json)["run"]);
    }
    absl::StatusOr<sched::JobId> sid = absl::DataLossError("");
    if (spec.ok() && run.ok()) {
      auto t = TenantLocked(spec->tenant);
      if (t.ok()) {
        sid = sched_->Submit(*spec);
      } else {
        sid = t.status();
      }
    }
    if (!spec.ok() || !run.ok() || !sid.ok()) {
      // A record this binary cannot schedule again is ended, loudly, rather than dropped.
      rec.state = "failed";
      rec.finished_at = clock_.NowUnix();
      rec.reason = StrCat("could not be rescheduled after a server restart: ",
                          std::string((!spec.ok()  ? spec.status()
                                       : !run.ok() ? run.status()
                                                   : sid.status())
                                          .message()));
      WARDEN_RETURN_IF_ERROR(store_.UpdateJob(rec));
      continue;
    }
    Tracked t{rec, *sid, *run};
    if ((rec.state == "placed" || rec.state == "running") && nodes_.count(rec.node_id)) {
      const sched::NodeId nsid = nodes_[rec.node_id].sid;
      const sched::NodeState& node = sched_->state().nodes[nsid];
      std::vector<sched::GpuAssignment> gpus;
      auto as = common::ParseJsonStrict(rec.assignment_json);
      bool ok = as.ok() && as->is_array();
      for (const Json& e : ok ? *as : Json::array()) {
        sched::GpuAssignment a;
        a.gpu = -1;
        std::string uuid = e.value("uuid", "");
        for (size_t i = 0; i < node.gpus.size(); ++i) {
          if (node.gpus[i].uuid == uuid) a.gpu = static_cast<int>(i);
        }
        a.millis = e.value("millis", 1000);
        a.mig_profile_id = e.value("mig_profile_id", -1);
        a.mig_start = e.value("mig_start", -1);
        if (a.gpu < 0) ok = false;
        gpus.push_back(a);
      }
      absl::Status s = ok ? sched_->Restore(*sid, nsid, gpus, rec.state == "running")
                          : absl::DataLossError("its GPU assignment no longer matches the node");
      if (!s.ok()) {
        std::fprintf(stderr, "jobs: job %s could not be restored on its node: %s\n",
                     rec.id.c_str(), std::string(s.message()).c_str());
      }
    }
    by_sid_[t.sid] = rec.id;
    active_.emplace(rec.id, std::move(t));
  }
  CheckLocked("restoring jobs");
  WARDEN_RETURN_IF_ERROR(PersistLocked());
  if (loop) loop_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void JobService::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  log_cv_.notify_all();
  {
    // Pending agent waits answer now with the generation they have.
    std::lock_guard lock(mu_);
    for (auto& [node, watches] : node_watches_) {
      auto g = node_gen_.find(node);
      for (NodeWatch& w : watches) w.notify(g == node_gen_.end() ? uint64_t{0} : g->second);
    }
    node_watches_.clear();
  }
  if (loop_.joinable()) loop_.join();
}

void JobService::Kick() {
  {
    std::lock_guard lock(mu_);
    kicked_ = true;
  }
  cv_.notify_all();
}

void JobService::Loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.pass_interval),
                 [&] { return stopping_ || kicked_; });
    if (stopping_) break;
    kicked_ = false;
    lock.unlock();
    if (absl::Status s = Tick(); !s.ok()) {
      std::fprintf(stderr, "jobs: scheduling round failed: %s\n", std::string(s.message()).c_str());
    }
    lock.lock();
  }
}

absl::Status JobService::Tick() {
  std::lock_guard lock(mu_);
  if (!sched_) return absl::FailedPreconditionError("job service not started");
  WARDEN_RETURN_IF_ERROR(SyncNodesLocked());
  sched::PassOptions po;
  if (options_.check_invariants) {
    po.after_placement = [this](const sched::JobRecord&) { CheckLocked("a placement"); };
  }
  sched::PassResult res = sched_->Schedule(po);
  placements_ += res.placed.size();
  WARDEN_RETURN_IF_ERROR(PersistLocked());
  UpdateTenantGaugesLocked();
  return absl::OkStatus();
}

void JobService::CheckLocked(const char* after) {
  if (!options_.check_invariants) return;
  // The checker's history rules (invariant 3: a GPU changes tenant only after a verification
  // while free) need every state in which holders or verifications changed: called after each.
  auto v = checker_.Check(sched_->state());
  if (!v.empty()) {
    std::fprintf(stderr, "jobs: isolation invariant broken after %s:\n%s\n", after,
                 sched::FormatViolations(v).c_str());
    std::abort();
  }
}

absl::StatusOr<sched::TenantId> JobService::TenantLocked(const std::string& name) {
  if (auto t = sched_->FindTenant(name)) return *t;
  sched::TenantSpec spec;
  spec.name = name;
  return sched_->AddTenant(spec);
}

absl::Status JobService::AddNodeLocked(const store::Node& n) {
  WARDEN_ASSIGN_OR_RETURN(cluster::NodeInventory inv, cluster::DecodeInventoryText(n.inventory_json));
  sched::NodeSpec spec;
  spec.name = n.name;
  spec.pool = n.pool;
  if (!sched_->FindPool(n.pool)) WARDEN_RETURN_IF_ERROR(sched_->AddPool({n.pool, {}}).status());
  std::vector<sched::Taint> no_execute;
  NodeMetaOf(n, spec.labels, spec.taints, no_execute);
  spec.cpu_millis = static_cast<int64_t>(inv.cpus) * 1000;
  spec.memory_mib = static_cast<int64_t>(inv.memory_mib);
  // One GPU model per node (the scheduler's node classes); GPUs gpuwarden has no model data
  // for are left out rather than guessed.
  std::string model;
  for (const gpu::GpuDevice& g : inv.gpus) {
    if (g.model.empty() || gpu::FindGpuModel(g.model) == nullptr) continue;
    if (model.empty()) model = g.model;
    if (g.model != model) continue;
    spec.gpus.push_back({g.uuid, g.model, g.mig_enabled});
  }
  WARDEN_ASSIGN_OR_RETURN(sched::NodeId sid, sched_->AddNode(spec));
  nodes_[n.id] = NodeSeen{sid, "ready", "active", StrCat(n.pool, "\n", n.labels_json, "\n", n.taints_json)};
  node_ids_[sid] = n.id;
  return absl::OkStatus();
}

absl::Status JobService::SyncNodesLocked() {
  WARDEN_ASSIGN_OR_RETURN(auto nodes, store_.ListNodes());
  std::map<std::string, bool> present;
  for (const store::Node& n : nodes) {
    present[n.id] = true;
    node_names_[n.id] = n.name;
    if (!nodes_.count(n.id)) {
      if (n.inventory_json.empty() || n.inventory_json == "{}") continue;  // no inventory yet
      if (absl::Status s = AddNodeLocked(n); !s.ok()) {
        std::fprintf(stderr, "jobs: node %s cannot take jobs: %s\n", n.name.c_str(),
                     std::string(s.message()).c_str());
        nodes_[n.id] = NodeSeen{0, "invalid", "invalid"};
        continue;
      }
    }
    NodeSeen& seen = nodes_[n.id];
    if (seen.status == "invalid") continue;
    if (n.status != seen.status) {
      // Unreachable: its jobs are requeued now; the node's GPUs need a clean check before reuse.
      WARDEN_RETURN_IF_ERROR(sched_->SetNodeReachable(seen.sid, n.status == "ready"));
      seen.status = n.status;
    }
    if (n.schedule != seen.schedule) {
      if (n.schedule == "active") {
        WARDEN_RETURN_IF_ERROR(sched_->Uncordon(seen.sid));
      } else if (n.schedule == "cordoned") {
        WARDEN_RETURN_IF_ERROR(sched_->Cordon(seen.sid));
      } else if (n.schedule == "draining") {
        WARDEN_RETURN_IF_ERROR(sched_->Drain(seen.sid));
      }
      seen.schedule = n.schedule;
    }
    // Labels, taints and pool changed by `node label|taint` reach the scheduler here, within
    // one round (the routes kick the loop): no restart.
    WARDEN_RETURN_IF_ERROR(SyncNodeMetaLocked(n, seen));
  }
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    if (present.count(it->first)) {
      ++it;
      continue;
    }
    if (it->second.status != "invalid") {
      WARDEN_RETURN_IF_ERROR(sched_->RemoveNode(it->second.sid));
      node_ids_.erase(it->second.sid);
    }
    it = nodes_.erase(it);
  }
  CheckLocked("syncing nodes");
  return absl::OkStatus();
}

absl::Status JobService::PersistLocked() {
  const sched::ClusterState& st = sched_->state();
  for (auto& [id, t] : active_) {
    const sched::JobRecord* r = sched_->FindJob(t.sid);
    if (r == nullptr) continue;
    store::Job next = t.rec;
    switch (r->state) {
      case sched::JobState::kQueued:
        next.state = "queued";
        next.node_id.clear();
        next.assignment_json = "[]";
        next.reason = r->reason;
        break;
      case sched::JobState::kPlaced:
      case sched::JobState::kRunning:
        next.state = r->state == sched::JobState::kPlaced ? "placed" : "running";
        next.node_id = node_ids_.count(r->node) ? node_ids_[r->node] : "";
        next.assignment_json = AssignmentJson(st, *r).dump();
        next.reason.clear();
        break;
      default:
        continue;  // ended jobs are written by EndLocked
    }
    if (next.node_id != t.rec.node_id || next.assignment_json != t.rec.assignment_json) {
      if (!t.rec.node_id.empty()) BumpNodeLocked(t.rec.node_id);
      if (!next.node_id.empty()) BumpNodeLocked(next.node_id);
    }
    if (next.state != t.rec.state || next.node_id != t.rec.node_id ||
        next.assignment_json != t.rec.assignment_json || next.reason != t.rec.reason) {
      WARDEN_RETURN_IF_ERROR(store_.UpdateJob(next));
      t.rec = std::move(next);
    }
  }
  return absl::OkStatus();
}

absl::Status JobService::EndLocked(const std::string& id, const std::string& state,
                                   const std::string& reason, std::optional<int64_t> exit_code) {
  auto it = active_.find(id);
  if (it == active_.end()) return absl::NotFoundError(StrCat("job \"", id, "\" not found"));
  Tracked& t = it->second;
  const sched::JobRecord* r = sched_->FindJob(t.sid);
  if (r != nullptr) {
    if (state == "done" || state == "failed") {
      if (r->state == sched::JobState::kQueued) {
        WARDEN_RETURN_IF_ERROR(sched_->Cancel(t.sid));
      } else {
        WARDEN_RETURN_IF_ERROR(sched_->Finish(t.sid, state == "done"));
      }
    } else {
      WARDEN_RETURN_IF_ERROR(sched_->Cancel(t.sid));
    }
    CheckLocked("a job ended");
    WARDEN_RETURN_IF_ERROR(sched_->Forget(t.sid));
  }
  store::Job rec = t.rec;
  rec.state = state;
  rec.reason = reason;
  rec.finished_at = clock_.NowUnix();
  rec.has_exit_code = exit_code.has_value();
  rec.exit_code = exit_code.value_or(0);
  WARDEN_RETURN_IF_ERROR(store_.UpdateJob(rec));
  by_sid_.erase(t.sid);
  active_.erase(it);
  log_cv_.notify_all();
  return absl::OkStatus();
}

// ---- tenant API ----------------------------------------------------------------------------

absl::StatusOr<store::Job> JobService::Submit(const std::string& tenant_id,
                                              const std::string& tenant_name,
                                              std::string_view body, const std::string& user_id,
                                              const std::function<absl::Status(api::JobRun&)>&
                                                  authorize_datasets) {
  WARDEN_ASSIGN_OR_RETURN(api::JobSubmit sub, api::ParseJobSubmit(body, tenant_name));
  WARDEN_ASSIGN_OR_RETURN(sched::JobSpec spec, sched::ParseJobSpec(sub.placement_json));
  if (!sub.run.datasets.empty()) {
    // Authorized before the job exists: a refused dataset leaves nothing queued or staged.
    if (!authorize_datasets) {
      return absl::FailedPreconditionError("this server cannot mount datasets (no vault)");
    }
    WARDEN_RETURN_IF_ERROR(authorize_datasets(sub.run));
  }
  store::Job rec;
  {
    std::lock_guard lock(mu_);
    if (!sched_) return absl::UnavailableError("the job service is not running");
    WARDEN_RETURN_IF_ERROR(TenantLocked(spec.tenant).status());
    WARDEN_ASSIGN_OR_RETURN(sched::JobId sid, sched_->Submit(spec));
    rec.id = common::NewId(rng_, "job");
    rec.tenant_id = tenant_id;
    rec.name = spec.name;
    rec.spec_json = Json{{"placement", Json::parse(sched::JobSpecToJson(spec))},
                         {"run", api::JobRunToJson(sub.run)}}
                        .dump();
    rec.state = "queued";
    rec.submitted_at = clock_.NowUnix();
    rec.submitted_by = user_id;
    rec.reason = "waiting for the next scheduling pass";
    auto created = store_.CreateJob(rec);
    if (!created.ok()) {
      (void)sched_->Cancel(sid);
      (void)sched_->Forget(sid);
      return created.status();
    }
    rec = *created;
    by_sid_[sid] = rec.id;
    active_.emplace(rec.id, Tracked{rec, sid, sub.run});
  }
  Kick();
  return rec;
}

absl::StatusOr<std::vector<store::Job>> JobService::List(const std::string& tenant_id,
                                                         const std::optional<std::string>& state) {
  if (state && !Active(*state) && *state != "done" && *state != "failed" && *state != "cancelled") {
    return absl::InvalidArgumentError(
        StrCat("state \"", *state, "\" is not one of queued, placed, running, done, failed, cancelled"));
  }
  return store_.ListJobs(tenant_id, state);
}

absl::StatusOr<store::Job> JobService::Get(const std::string& tenant_id, const std::string& id) {
  auto j = store_.GetJob(id);
  // Another tenant's job answers exactly like a missing one (no existence oracle for IDOR).
  if ((j.ok() && j->tenant_id != tenant_id) ||
      (!j.ok() && j.status().code() == absl::StatusCode::kNotFound)) {
    return absl::NotFoundError(StrCat("job \"", id, "\" not found"));
  }
  return j;
}

absl::StatusOr<store::Job> JobService::Cancel(const std::string& tenant_id, const std::string& id,
                                              absl::Duration grace) {
  WARDEN_ASSIGN_OR_RETURN(store::Job j, Get(tenant_id, id));
  {
    std::lock_guard lock(mu_);
    auto it = active_.find(id);
    if (it == active_.end()) {
      return absl::FailedPreconditionError(StrCat("job \"", id, "\" has already ended (", j.state, ")"));
    }
    Tracked& t = it->second;
    const sched::JobRecord* r = sched_->FindJob(t.sid);
    if (r == nullptr || r->state == sched::JobState::kQueued) {
      WARDEN_RETURN_IF_ERROR(EndLocked(id, "cancelled", "cancelled before it was placed", std::nullopt));
    } else if (t.rec.cancel_requested_at == 0) {
      t.rec.cancel_requested_at = clock_.NowUnix();
      t.rec.cancel_grace_ms = absl::ToInt64Milliseconds(grace);
      WARDEN_RETURN_IF_ERROR(store_.UpdateJob(t.rec));
      if (!t.rec.node_id.empty()) BumpNodeLocked(t.rec.node_id);
    }
  }
  return store_.GetJob(id);
}

absl::StatusOr<JobLogRead> JobService::ReadLog(const std::string& tenant_id, const std::string& id,
                                               const std::string& stream, int64_t offset,
                                               int tail_lines, absl::Duration wait) {
  if (stream != "stdout" && stream != "stderr") {
    return absl::InvalidArgumentError(StrCat("stream \"", stream, "\" is not stdout or stderr"));
  }
  if (offset < 0) return absl::InvalidArgumentError("offset must be >= 0");
  WARDEN_ASSIGN_OR_RETURN(store::Job j, Get(tenant_id, id));
  const std::string path = LogPath(id, stream);
  const absl::Time deadline = absl::Now() + std::min(wait, absl::Seconds(60));
  JobLogRead out;
  for (;;) {
    bool ended;
    {
      std::lock_guard lock(mu_);
      ended = !active_.count(id);
    }
    const int64_t size = FileSize(path);
    out.truncated = size > options_.max_log_bytes;
    if (tail_lines > 0) {
      int64_t from = std::max<int64_t>(0, size - kMaxLogRead);
      std::string data = ReadRange(path, from, size - from);
      size_t pos = data.size();
      if (pos > 0 && data[pos - 1] == '\n') --pos;
      for (int n = 0; n < tail_lines && pos != std::string::npos && pos > 0; ++n) {
        pos = data.rfind('\n', pos - 1);
      }
      size_t start = (pos == std::string::npos || pos == 0) ? 0 : pos + 1;
      if (pos == 0 && !data.empty() && data[0] == '\n') start = 1;
      out.offset = from + static_cast<int64_t>(start);
      out.data = data.substr(start);
      out.next_offset = size;
      out.ended = ended;
      return out;
    }
    out.offset = offset;
    out.data = offset < size ? ReadRange(path, offset, std::min(kMaxLogRead, size - offset)) : "";
    out.next_offset = offset + static_cast<int64_t>(out.data.size());
    out.ended = ended && out.next_offset >= size;
    if (!out.data.empty() || ended || absl::Now() >= deadline) return out;
    std::unique_lock lock(mu_);
    if (stopping_ || log_waiters_ >= options_.max_log_waiters) return out;
    ++log_waiters_;
    log_cv_.wait_for(lock, std::chrono::milliseconds(
                               std::max<int64_t>(1, absl::ToInt64Milliseconds(deadline - absl::Now()))));
    --log_waiters_;
  }
}

// ---- agents --------------------------------------------------------------------------------

void JobService::BumpNodeLocked(const std::string& node_id) {
  const uint64_t gen = node_gen_[node_id] = ++gen_seq_;
  auto it = node_watches_.find(node_id);
  if (it == node_watches_.end()) return;
  std::vector<NodeWatch> fired = std::move(it->second);
  node_watches_.erase(it);
  for (NodeWatch& w : fired) w.notify(gen);
}

absl::StatusOr<uint64_t> JobService::WatchNode(const std::string& node_id, uint64_t seen,
                                               NodeNotify notify) {
  std::unique_lock lock(mu_);
  auto it = node_gen_.find(node_id);
  const uint64_t current = it == node_gen_.end() ? uint64_t{0} : it->second;
  if (current != seen || stopping_) {
    notify(current);
    return uint64_t{0};
  }
  std::vector<NodeWatch>& pending = node_watches_[node_id];
  if (pending.size() >= static_cast<size_t>(options_.max_watches_per_node)) {
    return absl::ResourceExhaustedError(StrCat("node ", node_id, " has ", pending.size(),
                                               " pending waits already"));
  }
  pending.push_back(NodeWatch{++watch_seq_, std::move(notify)});
  return watch_seq_;
}

void JobService::CancelNodeWatch(const std::string& node_id, uint64_t watch_id) {
  std::lock_guard lock(mu_);
  auto it = node_watches_.find(node_id);
  if (it == node_watches_.end()) return;
  std::erase_if(it->second, [&](const NodeWatch& w) { return w.id == watch_id; });
  if (it->second.empty()) node_watches_.erase(it);
}

absl::StatusOr<Json> JobService::AgentSync(const std::string& node_id,
                                           const std::vector<AgentJobReport>& reports,
                                           const AgentGpuReport& gpus) {
  std::lock_guard lock(mu_);
  if (!sched_) return absl::UnavailableError("the job service is not running");
  auto node = nodes_.find(node_id);
  for (const AgentJobReport& rep : reports) {
    auto it = active_.find(rep.id);
    // Only the node a job is assigned to may speak for it; anything else is stale (a requeued
    // job's old node) or forged, and is ignored: the agent stops what it is not assigned.
    if (it == active_.end() || it->second.rec.node_id != node_id) continue;
    Tracked& t = it->second;
    const sched::JobRecord* r = sched_->FindJob(t.sid);
    if (r == nullptr) continue;
    if (rep.state == "running") {
      if (r->state == sched::JobState::kPlaced) {
        WARDEN_RETURN_IF_ERROR(sched_->MarkRunning(t.sid));
        t.rec.started_at = clock_.NowUnix();
        t.rec.state = "running";
        t.rec.reason.clear();
        WARDEN_RETURN_IF_ERROR(store_.UpdateJob(t.rec));
      }
      continue;
    }
    std::string state, reason = rep.reason;
    std::optional<int64_t> code;
    if (rep.has_exit_code) code = rep.exit_code;
    if (rep.state == "exited") {
      state = rep.has_exit_code && rep.exit_code == 0 ? "done" : "failed";
      if (t.rec.cancel_requested_at != 0) state = "cancelled";
      if (reason.empty()) reason = StrCat("exited with code ", rep.exit_code);
    } else if (rep.state == "cancelled") {
      state = "cancelled";
      if (reason.empty()) reason = "cancelled";
    } else if (rep.state == "oom") {
      state = "failed";
      if (reason.empty()) reason = "killed: out of memory";
    } else if (rep.state == "failed_to_start") {
      state = "failed";
      reason = StrCat("failed to start: ", reason);
    } else if (rep.state == "write_back_failed") {  // exited 0, its `write` datasets not stored
      state = "failed";
      reason = StrCat("writing back its datasets failed: ", reason);
    } else if (rep.state == "lost") {
      state = "failed";
      reason = StrCat("lost by the agent: ", reason);
    } else {
      continue;  // unknown states were refused by the decoder; nothing to do
    }
    if (t.rec.started_at == 0) {
      t.rec.started_at = clock_.NowUnix();
    }
    WARDEN_RETURN_IF_ERROR(EndLocked(rep.id, state, reason, code));
  }
  // GPU handoff results (invariant 3): clean GPUs may serve another tenant again.
  if (node != nodes_.end() && node->second.status != "invalid") {
    const sched::NodeState& ns = sched_->state().nodes[node->second.sid];
    for (size_t i = 0; i < ns.gpus.size(); ++i) {
      const sched::GpuState& g = ns.gpus[i];
      bool clean = std::find(gpus.clean.begin(), gpus.clean.end(), g.uuid) != gpus.clean.end();
      bool dirty = std::find(gpus.dirty.begin(), gpus.dirty.end(), g.uuid) != gpus.dirty.end();
      if (dirty) {
        WARDEN_RETURN_IF_ERROR(sched_->ReportGpuVerification(node->second.sid, static_cast<int>(i), false));
        CheckLocked("a failed GPU check");
      } else if (clean && (g.unverified != 0 || g.quarantined)) {
        WARDEN_RETURN_IF_ERROR(sched_->ReportGpuVerification(node->second.sid, static_cast<int>(i), true));
        CheckLocked("a passed GPU check");
      }
    }
  }
  WARDEN_RETURN_IF_ERROR(PersistLocked());
  Json out = Json::array();
  for (const auto& [id, t] : active_) {
    if (t.rec.node_id != node_id || (t.rec.state != "placed" && t.rec.state != "running")) continue;
    auto as = common::ParseJsonStrict(t.rec.assignment_json);
    Json assignment = as.ok() ? *as : Json::array();
    // tenant: the agent assigns the GPUs to it in its handoff state (issue 7).
    Json e{{"id", id},
           {"name", t.rec.name},
           {"tenant", t.rec.tenant_id},
           {"run", api::JobRunToJson(t.run)},
           {"gpus", assignment}};
    if (t.rec.cancel_requested_at != 0) e["cancel_grace_ms"] = t.rec.cancel_grace_ms;
    // What the scheduler reserved is what the agent's sandbox enforces (issue 7).
    if (auto spec = common::ParseJsonStrict(t.rec.spec_json); spec.ok() && spec->is_object()) {
      const Json placement = spec->value("placement", Json::object());
      e["limits"] = Json{{"memory_mib", placement.value("memory_mib", int64_t{1024})},
                         {"cpu_millis", placement.value("cpu_millis", int64_t{1000})}};
    }
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<JobService::NodeJobDataset> JobService::DatasetForNode(const std::string& node_id,
                                                                     const std::string& job_id,
                                                                     uint64_t index) {
  std::lock_guard lock(mu_);
  auto it = active_.find(job_id);
  if (it == active_.end() || it->second.rec.node_id != node_id ||
      (it->second.rec.state != "placed" && it->second.rec.state != "running")) {
    return absl::NotFoundError(StrCat("job \"", job_id, "\" is not assigned to this node"));
  }
  const Tracked& t = it->second;
  if (index >= t.run.datasets.size()) {
    return absl::NotFoundError(StrCat("job \"", job_id, "\" has no dataset ", index));
  }
  return NodeJobDataset{t.rec.tenant_id, job_id, t.run.datasets[index]};
}

absl::StatusOr<int64_t> JobService::AppendLog(const std::string& node_id, const std::string& job_id,
                                              const std::string& stream, int64_t offset,
                                              std::string_view data) {
  if (stream != "stdout" && stream != "stderr") {
    return absl::InvalidArgumentError(StrCat("stream \"", stream, "\" is not stdout or stderr"));
  }
  if (offset < 0) return absl::InvalidArgumentError("offset must be >= 0");
  std::lock_guard lock(mu_);
  auto it = active_.find(job_id);
  if (it == active_.end() || it->second.rec.node_id != node_id) {
    return absl::NotFoundError(StrCat("job \"", job_id, "\" is not assigned to this node"));
  }
  WARDEN_RETURN_IF_ERROR(MakeDir(JobDir(job_id)));
  const std::string path = LogPath(job_id, stream);
  const std::string key = StrCat(job_id, "/", stream);
  int64_t size = FileSize(path);
  auto rit = log_received_.find(key);
  int64_t received = rit != log_received_.end() ? rit->second
                     : size > options_.max_log_bytes ? offset
                                                     : size;
  // A gap (bytes before `offset` never arrived): nothing is written and the answer tells the
  // agent where to resend from.
  if (offset > received) return received;
  // Re-sent bytes (an agent retrying after a lost reply, or re-attached after a restart) are
  // skipped, so each byte is stored once.
  const int64_t skip = received - offset;
  std::string_view fresh = skip >= static_cast<int64_t>(data.size()) ? std::string_view()
                                                                    : data.substr(skip);
  if (!fresh.empty() && size <= options_.max_log_bytes) {
    const int64_t room = options_.max_log_bytes - size;
    if (static_cast<int64_t>(fresh.size()) <= room) {
      WARDEN_RETURN_IF_ERROR(AppendFile(path, fresh));
    } else {
      WARDEN_RETURN_IF_ERROR(AppendFile(
          path, StrCat(fresh.substr(0, room), TruncationMarker(options_.max_log_bytes))));
    }
  }
  received += static_cast<int64_t>(fresh.size());
  log_received_[key] = received;
  log_cv_.notify_all();
  return received;
}

Json JobService::JobJson(const store::Job& j) {
  Json spec = Json::object();
  if (auto s = common::ParseJsonStrict(j.spec_json); s.ok()) spec = *s;
  Json assignment = Json::array();
  if (auto a = common::ParseJsonStrict(j.assignment_json); a.ok()) assignment = *a;
  std::string node_name;
  {
    std::lock_guard lock(mu_);
    if (auto it = node_names_.find(j.node_id); it != node_names_.end()) node_name = it->second;
  }
  Json gpus = Json::array();
  for (const Json& e : assignment) gpus.push_back(e.value("uuid", ""));
  Json out{{"id", j.id},
           {"name", j.name},
           {"state", j.state},
           {"node", node_name},
           {"node_id", j.node_id},
           {"gpus", gpus},
           {"assignment", assignment},
           {"spec", spec},
           {"seq", j.seq},
           {"submitted_at", j.submitted_at},
           {"started_at", j.started_at},
           {"finished_at", j.finished_at},
           {"exit_code", j.has_exit_code ? Json(j.exit_code) : Json(nullptr)},
           {"reason", j.reason},
           {"submitted_by", j.submitted_by},
           {"cancel_requested", j.cancel_requested_at != 0}};
  return out;
}

}  // namespace warden::server
