// The scheduler: state changes, free-capacity indexes and the placement search. README.md
// describes the algorithm and its complexity; checker.cc re-checks every result independently.
#include "sched/scheduler.h"

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <tuple>

#include "absl/container/btree_set.h"
#include "common/ids.h"
#include "common/status.h"
#include "common/strings.h"
#include "sched/checker.h"

namespace warden::sched {
namespace {

using common::StrCat;

constexpr int kMaxProfiles = 7;
constexpr uint8_t kAllSlices = 0xff;

uint8_t SliceMask(int start, int memory_slices) {
  return static_cast<uint8_t>(((1u << memory_slices) - 1u) << start);
}

int LargestFreeRun(uint8_t used) {
  int best = 0, run = 0;
  for (int i = 0; i < gpu::kMemorySlices; ++i) {
    run = (used & (1u << i)) ? 0 : run + 1;
    best = std::max(best, run);
  }
  return best;
}

bool Idle(const GpuState& g) {
  return g.whole_job == 0 && g.shares.empty() && g.instances.empty();
}

int ProfileIndex(const gpu::GpuModel& model, int profile_id) {
  for (size_t i = 0; i < model.profiles.size(); ++i) {
    if (model.profiles[i].id == profile_id) return static_cast<int>(i);
  }
  return -1;
}

// What the MIG instances of one GPU occupy.
struct MigUse {
  uint8_t used = 0;
  int compute = 0;
  bool has_me = false;
  std::array<int, kMaxProfiles> count{};
};

MigUse UseOf(const GpuState& g) {
  MigUse u;
  for (const MigSlot& s : g.instances) {
    const int pi = ProfileIndex(*g.model, s.instance.profile_id);
    if (pi < 0) continue;
    const gpu::MigProfile& p = g.model->profiles[pi];
    u.used |= SliceMask(s.instance.start, p.memory_slices);
    u.compute += p.compute_slices;
    u.has_me = u.has_me || p.media_extensions;
    ++u.count[pi];
  }
  return u;
}

// The start MigLayout would choose (gpu.h: largest free run, then most free slices in 0..6, then
// lowest start), with unverified slices treated as taken: invariant 3 forbids placing on them.
std::optional<int> ChooseStart(const GpuState& g, const MigUse& u, int pi) {
  const gpu::MigProfile& p = g.model->profiles[pi];
  if (u.count[pi] >= p.max_instances) return std::nullopt;
  if (p.media_extensions && u.has_me) return std::nullopt;
  if (u.compute + p.compute_slices > gpu::kComputeSlices) return std::nullopt;
  const uint8_t blocked = u.used | g.unverified;
  std::optional<int> best;
  int best_run = -1, best_low = -1;
  for (int start : p.allowed_starts) {
    const uint8_t mask = SliceMask(start, p.memory_slices);
    if (blocked & mask) continue;
    const uint8_t after = blocked | mask;
    const int run = LargestFreeRun(after);
    const int low = 7 - std::popcount(static_cast<unsigned>(after & 0x7f));
    if (run > best_run || (run == best_run && low > best_low)) {
      best = start;
      best_run = run;
      best_low = low;
    }
  }
  return best;
}

std::string Millis(int64_t m) {
  std::string frac = std::to_string(m % 1000);
  return StrCat(m / 1000, ".", std::string(3 - frac.size(), '0'), frac);
}

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdULL;
}
uint64_t MixStr(uint64_t h, std::string_view s) {
  uint64_t x = 1469598103934665603ULL;
  for (unsigned char c : s) x = (x ^ c) * 1099511628211ULL;
  return Mix(Mix(h, x), s.size());
}

// Nodes that share pool, labels, taints and GPU model form a class; eligibility is decided once
// per class, and each class indexes its schedulable nodes by free capacity.
struct NodeClass {
  PoolId pool = 0;
  std::vector<std::pair<std::string, std::string>> labels;
  std::vector<Taint> taints;
  const gpu::GpuModel* model = nullptr;  // nullptr: nodes without GPUs
  int max_gpus = 0;
  // (usable whole GPUs, free CPU, node): best fit = fewest usable GPUs, then least CPU.
  // `whole` counts idle verified non-MIG GPUs; `any` also counts idle MIG-mode GPUs without
  // instances, which a job may take after a planned MIG mode change (the fallback).
  absl::btree_set<std::tuple<int, int64_t, NodeId>> whole;
  absl::btree_set<std::tuple<int, int64_t, NodeId>> any;
  // Per profile index: (free compute slices on the tightest MIG GPU where it fits, node).
  std::array<absl::btree_set<std::pair<int, NodeId>>, kMaxProfiles> mig;
};

struct NodeIndex {
  uint32_t cls = 0;
  bool indexed = false;
  int whole_free = 0;
  int any_free = 0;
  int64_t cpu_key = 0;
  std::array<int, kMaxProfiles> mig_score{};
  std::vector<std::pair<TenantId, int>> shared_key;  // per GPU: (tenant, free millis) or (0, 0)
};

using QueueKey = std::tuple<int, uint64_t, JobId>;  // (-priority, seq, job)
using SharedKey = std::tuple<int, NodeId, int>;      // (free millis, node, gpu)

struct Candidate {
  NodeId node = 0;
  int score = 0;
  int64_t cpu = 0;
  bool found = false;
};

struct Eligibility {
  std::vector<uint32_t> classes;
  std::string reason;  // why none, when classes is empty
};

}  // namespace

struct Scheduler::Impl {
  Options opt;
  ClusterState st;
  absl::flat_hash_map<std::string, TenantId> tenant_by_name;
  absl::flat_hash_map<std::string, PoolId> pool_by_name;
  absl::flat_hash_map<std::string, NodeId> node_by_name;
  std::vector<NodeClass> classes;
  absl::flat_hash_map<std::string, uint32_t> class_by_key;
  std::vector<NodeIndex> nidx;
  std::vector<absl::btree_set<SharedKey>> shared;  // per tenant index
  std::vector<absl::btree_set<QueueKey>> queues;   // per tenant index
  std::vector<absl::flat_hash_set<JobId>> active;  // per tenant index: placed + running
  uint64_t next_job = 1;
  uint64_t next_seq = 1;
  size_t queued = 0;
  int64_t total_gpu_units = 0, total_cpu = 0, total_mem = 0;
  uint64_t elig_generation = 0;
  absl::flat_hash_map<uint64_t, Eligibility> elig_cache;
  std::vector<MigModeChange>* pending_mig_changes = nullptr;
  // Set when a search stopped at probe_limit: the refusal reason then says so, because a node
  // beyond the probed ones might have fitted.
  mutable bool probes_exhausted = false;

  // ---------------------------------------------------------------------------------------
  void SelfCheck(std::string_view after) {
    if (!opt.self_check) return;
    auto v = CheckClusterState(st);
    if (!v.empty()) {
      std::fprintf(stderr, "sched: invariant violation after %.*s:\n%s\n",
                   static_cast<int>(after.size()), after.data(), FormatViolations(v).c_str());
      std::abort();
    }
  }

  TenantState& T(TenantId id) { return st.tenants[id - 1]; }
  bool Known(TenantId id) const { return id >= 1 && id <= st.tenants.size(); }
  absl::Status CheckNodeId(NodeId n) const {
    if (n >= st.nodes.size() || st.nodes[n].removed) {
      return absl::NotFoundError(StrCat("no node with id ", n));
    }
    return absl::OkStatus();
  }

  // Checks the id, applies `change` to the node, re-indexes it and self-checks.
  template <typename F>
  absl::Status UpdateNode(NodeId n, std::string_view op, F&& change) {
    WARDEN_RETURN_IF_ERROR(CheckNodeId(n));
    change(st.nodes[n]);
    Reindex(n);
    SelfCheck(op);
    return absl::OkStatus();
  }

  bool DedicatedTo(PoolId pool, TenantId t) const {
    const auto& d = st.pools[pool].spec.dedicated_to;
    return std::find(d.begin(), d.end(), t) != d.end();
  }

  // ---- indexes ----------------------------------------------------------------------------
  bool WholeUsable(const GpuState& g) const {
    if (!Idle(g) || g.unverified != 0 || g.quarantined) return false;
    return !g.mig_enabled || opt.plan_mig_mode_changes;
  }

  void Unindex(NodeId n) {
    NodeIndex& e = nidx[n];
    if (!e.indexed) return;
    NodeClass& c = classes[e.cls];
    c.whole.erase({e.whole_free, e.cpu_key, n});
    c.any.erase({e.any_free, e.cpu_key, n});
    for (int p = 0; p < kMaxProfiles; ++p) {
      if (e.mig_score[p] >= 0) c.mig[p].erase({e.mig_score[p], n});
    }
    for (size_t g = 0; g < e.shared_key.size(); ++g) {
      auto [t, free] = e.shared_key[g];
      if (t != 0) shared[t - 1].erase({free, n, static_cast<int>(g)});
      e.shared_key[g] = {0, 0};
    }
    e.indexed = false;
  }

  void Reindex(NodeId n) {
    Unindex(n);
    const NodeState& node = st.nodes[n];
    if (!node.Schedulable()) return;
    NodeIndex& e = nidx[n];
    NodeClass& c = classes[e.cls];
    e.whole_free = 0;
    e.any_free = 0;
    e.mig_score.fill(-1);
    e.shared_key.assign(node.gpus.size(), {0, 0});
    for (size_t gi = 0; gi < node.gpus.size(); ++gi) {
      const GpuState& g = node.gpus[gi];
      if (g.quarantined) continue;
      if (WholeUsable(g)) {
        ++e.any_free;
        if (!g.mig_enabled) ++e.whole_free;
      }
      if (g.mig_enabled && g.model->mig_capable) {
        const MigUse u = UseOf(g);
        const int free_compute = gpu::kComputeSlices - u.compute;
        for (size_t p = 0; p < g.model->profiles.size(); ++p) {
          if (!ChooseStart(g, u, static_cast<int>(p))) continue;
          if (e.mig_score[p] < 0 || free_compute < e.mig_score[p]) e.mig_score[p] = free_compute;
        }
      } else if (g.share_tenant != 0) {
        int used = 0;
        for (const auto& s : g.shares) used += s.second;
        if (used < 1000) {
          e.shared_key[gi] = {g.share_tenant, 1000 - used};
          shared[g.share_tenant - 1].insert({1000 - used, n, static_cast<int>(gi)});
        }
      }
    }
    e.cpu_key = node.spec.cpu_millis - node.used_cpu_millis;
    c.whole.insert({e.whole_free, e.cpu_key, n});
    c.any.insert({e.any_free, e.cpu_key, n});
    for (int p = 0; p < kMaxProfiles; ++p) {
      if (e.mig_score[p] >= 0) c.mig[p].insert({e.mig_score[p], n});
    }
    e.indexed = true;
  }

  uint32_t ClassFor(const NodeState& node) {
    std::string key = StrCat("p", node.pool, "|m",
                             node.gpus.empty() ? std::string("-") : node.gpus[0].model->name, "|");
    for (const auto& [k, v] : node.spec.labels) key += StrCat("l", k, "=", v, ";");
    for (const Taint& t : node.spec.taints) key += StrCat("t", t.key, "=", t.value, ";");
    auto it = class_by_key.find(key);
    if (it != class_by_key.end()) {
      classes[it->second].max_gpus =
          std::max(classes[it->second].max_gpus, static_cast<int>(node.gpus.size()));
      return it->second;
    }
    NodeClass c;
    c.pool = node.pool;
    c.labels = node.spec.labels;
    c.taints = node.spec.taints;
    c.model = node.gpus.empty() ? nullptr : node.gpus[0].model;
    c.max_gpus = static_cast<int>(node.gpus.size());
    classes.push_back(std::move(c));
    class_by_key.emplace(key, classes.size() - 1);
    ++elig_generation;
    elig_cache.clear();
    return static_cast<uint32_t>(classes.size() - 1);
  }

  // ---- eligibility ------------------------------------------------------------------------
  uint64_t EligibilityKey(const JobRecord& j, Isolation iso) const {
    uint64_t h = Mix(Mix(Mix(0, j.tenant), static_cast<uint64_t>(iso)),
                     static_cast<uint64_t>(j.spec.gpu_request));
    h = Mix(h, j.pool ? *j.pool + 1 : 0);
    h = Mix(h, static_cast<uint64_t>(j.spec.gpus));
    h = MixStr(h, j.spec.mig_profile);
    h = MixStr(h, j.spec.gpu_model);
    for (const auto& [k, v] : j.spec.node_selector) h = MixStr(MixStr(h, k), v);
    for (const Toleration& t : j.spec.tolerations) h = MixStr(MixStr(Mix(h, 7), t.key), t.value);
    return h;
  }

  static bool Tolerates(const std::vector<Toleration>& tols, const Taint& taint) {
    for (const Toleration& t : tols) {
      if (t.key == taint.key && (t.value.empty() || t.value == taint.value)) return true;
    }
    return false;
  }

  const Eligibility& EligibleClasses(const JobRecord& j, Isolation iso) {
    const uint64_t key = EligibilityKey(j, iso);
    auto it = elig_cache.find(key);
    if (it != elig_cache.end()) return it->second;
    Eligibility out;
    int pool_ok = 0, label_ok = 0, taint_ok = 0;
    for (uint32_t ci = 0; ci < classes.size(); ++ci) {
      const NodeClass& c = classes[ci];
      if (j.pool && c.pool != *j.pool) continue;
      const bool dedicated_pool = st.pools[c.pool].spec.dedicated();
      // Invariant 2: a dedicated pool runs only its tenants' jobs.
      if (dedicated_pool && !DedicatedTo(c.pool, j.tenant)) continue;
      if (iso == Isolation::kDedicated && !dedicated_pool) continue;
      ++pool_ok;
      bool labels = true;
      for (const auto& sel : j.spec.node_selector) {
        labels = labels && std::binary_search(c.labels.begin(), c.labels.end(), sel);
      }
      if (!labels) continue;
      ++label_ok;
      bool taints = true;
      for (const Taint& t : c.taints) taints = taints && Tolerates(j.spec.tolerations, t);
      if (!taints) continue;
      ++taint_ok;
      switch (j.spec.gpu_request) {
        case GpuRequest::kNone: break;
        case GpuRequest::kWhole:
        case GpuRequest::kFraction:
          if (c.model == nullptr || c.max_gpus < std::max(1, j.spec.gpus)) continue;
          if (!j.spec.gpu_model.empty() && c.model->name != j.spec.gpu_model) continue;
          break;
        case GpuRequest::kMig:
          if (c.model == nullptr || !c.model->mig_capable ||
              c.model->FindProfileByName(j.spec.mig_profile) == nullptr) {
            continue;
          }
          if (!j.spec.gpu_model.empty() && c.model->name != j.spec.gpu_model) continue;
          break;
      }
      out.classes.push_back(ci);
    }
    if (out.classes.empty()) {
      const std::string& tn = T(j.tenant).spec.name;
      if (pool_ok == 0) {
        out.reason = iso == Isolation::kDedicated
                         ? StrCat("isolation dedicated: no node in a pool dedicated to tenant ",
                                  tn, j.pool ? " matches the requested pool" : "")
                         : StrCat("no node in a pool open to tenant ", tn,
                                  j.pool ? StrCat(" named ", st.pools[*j.pool].spec.name) : "");
      } else if (label_ok == 0) {
        out.reason = "no node has the labels of the node selector";
      } else if (taint_ok == 0) {
        out.reason = "every matching node has a taint the job does not tolerate";
      } else {
        out.reason = j.spec.gpu_request == GpuRequest::kMig
                         ? StrCat("no matching node has a GPU model with MIG profile ",
                                  j.spec.mig_profile)
                         : StrCat("no matching node has ", std::max(1, j.spec.gpus), " GPU(s)",
                                  j.spec.gpu_model.empty() ? "" : StrCat(" of model ", j.spec.gpu_model));
      }
    }
    return elig_cache.emplace(key, std::move(out)).first->second;
  }

  // ---- accounting -------------------------------------------------------------------------
  // Usage a job would hold on a GPU model (nullptr for CPU-only), as Resources documents.
  static Resources Demand(const JobSpec& s, const gpu::GpuModel* model) {
    Resources r;
    r.cpu_millis = s.cpu_millis;
    r.memory_mib = s.memory_mib;
    r.running_jobs = 1;
    switch (s.gpu_request) {
      case GpuRequest::kNone: break;
      case GpuRequest::kWhole:
        r.gpu_millis = 1000LL * s.gpus;
        if (model) r.gpu_memory_mib = static_cast<int64_t>(model->memory_mib) * s.gpus;
        break;
      case GpuRequest::kFraction:
        r.gpu_millis = s.gpu_millis;
        if (model) r.gpu_memory_mib = static_cast<int64_t>(model->memory_mib) * s.gpu_millis / 1000;
        break;
      case GpuRequest::kMig:
        if (model) {
          if (const gpu::MigProfile* p = model->FindProfileByName(s.mig_profile)) {
            r.mig_slices = p->compute_slices;
            r.gpu_memory_mib = static_cast<int64_t>(p->memory_mib);
          }
        } else {
          // Model not chosen yet: the compute slices are the same on every model with the name.
          for (const gpu::GpuModel& m : gpu::KnownGpuModels()) {
            if (const gpu::MigProfile* p = m.FindProfileByName(s.mig_profile)) {
              r.mig_slices = p->compute_slices;
              break;
            }
          }
        }
        break;
    }
    return r;
  }

  double Share(TenantId t) const {
    const TenantState& ts = st.tenants[t - 1];
    const Resources& u = ts.usage;
    const double gpu_units = static_cast<double>(u.gpu_millis) + u.mig_slices * 1000.0 / 7.0;
    double s = 0;
    if (total_gpu_units > 0) s = std::max(s, gpu_units / static_cast<double>(total_gpu_units));
    if (total_cpu > 0) s = std::max(s, static_cast<double>(u.cpu_millis) / total_cpu);
    if (total_mem > 0) s = std::max(s, static_cast<double>(u.memory_mib) / total_mem);
    return s / ts.spec.weight;
  }

  void AddCapacity(const NodeState& n, int sign) {
    total_gpu_units += sign * 1000LL * static_cast<int64_t>(n.gpus.size());
    total_cpu += sign * n.spec.cpu_millis;
    total_mem += sign * n.spec.memory_mib;
  }

  // ---- job lifecycle ----------------------------------------------------------------------
  void Enqueue(JobRecord& j, std::string reason) {
    j.state = JobState::kQueued;
    j.reason = std::move(reason);
    j.gpus.clear();
    j.node = 0;
    j.usage = Resources{};
    queues[j.tenant - 1].insert({-j.spec.priority, j.seq, j.id});
    ++queued;
  }

  void Dequeue(JobRecord& j) {
    if (queues[j.tenant - 1].erase({-j.spec.priority, j.seq, j.id}) > 0) --queued;
  }

  // Releases what a placed/running job holds; its GPUs (or slices) await verification. Leaves
  // the job's state to the caller.
  void Release(JobRecord& j) {
    NodeState& node = st.nodes[j.node];
    for (const GpuAssignment& a : j.gpus) {
      GpuState& g = node.gpus[a.gpu];
      if (a.mig_profile_id >= 0) {
        auto it = std::find_if(g.instances.begin(), g.instances.end(),
                               [&](const MigSlot& s) { return s.job == j.id; });
        if (it != g.instances.end()) {
          const gpu::MigProfile* p = g.model->FindProfile(it->instance.profile_id);
          g.unverified |= SliceMask(it->instance.start, p ? p->memory_slices : 8);
          g.instances.erase(it);
        }
      } else if (a.millis < 1000) {
        std::erase_if(g.shares, [&](const auto& s) { return s.first == j.id; });
        if (g.shares.empty()) {
          g.share_tenant = 0;
          g.unverified = kAllSlices;
        }
      } else {
        g.whole_job = 0;
        g.unverified = kAllSlices;
      }
    }
    node.used_cpu_millis -= j.spec.cpu_millis;
    node.used_memory_mib -= j.spec.memory_mib;
    T(j.tenant).usage -= j.usage;
    active[j.tenant - 1].erase(j.id);
    Reindex(j.node);
  }

  void Requeue(JobRecord& j, std::string reason) {
    Release(j);
    Enqueue(j, std::move(reason));
  }

  // Requeues every placed/running job on `n` (node loss, drain, removal).
  void RequeueNode(NodeId n, const std::string& reason) {
    std::vector<JobId> on;
    for (const auto& a : active) {
      for (JobId id : a) {
        if (st.jobs.at(id).node == n) on.push_back(id);
      }
    }
    std::sort(on.begin(), on.end());
    for (JobId id : on) Requeue(st.jobs.at(id), reason);
  }

  // Whether a placed job may stay where it is under the current policies (used after policy and
  // dedication changes). The reason when it may not.
  std::string Misplaced(const JobRecord& j) {
    const TenantState& t = T(j.tenant);
    const Isolation iso = EffectiveIsolation(j, t);
    const NodeState& node = st.nodes[j.node];
    if (j.spec.gpu_request == GpuRequest::kFraction && iso > Isolation::kShared) {
      return StrCat("a GPU fraction needs isolation shared, tenant ", t.spec.name, " now requires ",
                    IsolationName(iso));
    }
    const bool dedicated_pool = st.pools[node.pool].spec.dedicated();
    if (dedicated_pool && !DedicatedTo(node.pool, j.tenant)) {
      return StrCat("pool ", st.pools[node.pool].spec.name, " is no longer open to tenant ",
                    t.spec.name);
    }
    if (iso == Isolation::kDedicated && !dedicated_pool) {
      return StrCat("isolation dedicated: node ", node.spec.name, " is not in a dedicated pool");
    }
    if (j.spec.gpu_request == GpuRequest::kMig && iso >= Isolation::kExclusive) {
      for (const GpuAssignment& a : j.gpus) {
        for (const MigSlot& s : node.gpus[a.gpu].instances) {
          if (st.jobs.at(s.job).tenant != j.tenant) {
            return StrCat("isolation ", IsolationName(iso), ": GPU ", a.gpu, " of node ",
                          node.spec.name, " also serves another tenant");
          }
        }
      }
    }
    return "";
  }

  void RequeueMisplaced(TenantId only_tenant) {
    std::vector<JobId> ids;
    for (size_t t = 0; t < active.size(); ++t) {
      if (only_tenant != 0 && t + 1 != only_tenant) continue;
      ids.insert(ids.end(), active[t].begin(), active[t].end());
    }
    std::sort(ids.begin(), ids.end());
    for (JobId id : ids) {
      JobRecord& j = st.jobs.at(id);
      if (j.state != JobState::kPlaced && j.state != JobState::kRunning) continue;
      std::string why = Misplaced(j);
      if (!why.empty()) Requeue(j, StrCat("requeued: ", why));
    }
  }

  // ---- placement search -------------------------------------------------------------------
  bool FitsNode(NodeId n, int64_t cpu, int64_t mem) const {
    const NodeState& node = st.nodes[n];
    return node.spec.cpu_millis - node.used_cpu_millis >= cpu &&
           node.spec.memory_mib - node.used_memory_mib >= mem;
  }

  // Best node of class `c` with at least `gpus` usable whole GPUs and the CPU/memory; with
  // `flip`, idle MIG-mode GPUs count too (they would be switched out of MIG mode).
  Candidate FindWhole(const NodeClass& c, int gpus, int64_t cpu, int64_t mem,
                      bool flip = false) const {
    const auto& set = flip ? c.any : c.whole;
    for (int k = gpus; k <= c.max_gpus; ++k) {
      auto it = set.lower_bound({k, cpu, 0});
      for (int probes = 0; it != set.end() && std::get<0>(*it) == k &&
                           probes < opt.probe_limit;
           ++it, ++probes) {
        const NodeId n = std::get<2>(*it);
        if (FitsNode(n, cpu, mem)) return {n, k, std::get<1>(*it), true};
        if (probes + 1 == opt.probe_limit) probes_exhausted = true;
      }
    }
    return {};
  }

  // May tenant `t` at isolation `iso` add a MIG instance to GPU `g`? (invariant 1)
  bool MigCotenancyOk(const GpuState& g, TenantId t, Isolation iso) const {
    for (const MigSlot& s : g.instances) {
      const JobRecord& other = st.jobs.at(s.job);
      if (other.tenant == t) continue;
      if (iso >= Isolation::kExclusive) return false;
      if (EffectiveIsolation(other, st.tenants[other.tenant - 1]) >= Isolation::kExclusive) {
        return false;
      }
    }
    return true;
  }

  // The tightest MIG GPU on node `n` where profile `pi` fits for the tenant: (gpu, start, free
  // compute after), or gpu -1.
  std::tuple<int, int, int> BestMigGpu(NodeId n, int pi, TenantId t, Isolation iso) const {
    const NodeState& node = st.nodes[n];
    std::tuple<int, int, int> best{-1, -1, 99};
    for (size_t gi = 0; gi < node.gpus.size(); ++gi) {
      const GpuState& g = node.gpus[gi];
      if (!g.mig_enabled || g.quarantined) continue;
      const MigUse u = UseOf(g);
      auto start = ChooseStart(g, u, pi);
      if (!start || !MigCotenancyOk(g, t, iso)) continue;
      const int after = gpu::kComputeSlices - u.compute - g.model->profiles[pi].compute_slices;
      if (after < std::get<2>(best)) best = {static_cast<int>(gi), *start, after};
    }
    return best;
  }

  void SetMigMode(NodeId n, int gi, bool enable) {
    GpuState& g = st.nodes[n].gpus[gi];
    if (g.mig_enabled == enable) return;
    g.mig_enabled = enable;
    if (pending_mig_changes) pending_mig_changes->push_back({n, gi, enable});
  }

  void Commit(JobRecord& j, NodeId n, std::vector<GpuAssignment> gpus) {
    NodeState& node = st.nodes[n];
    const gpu::GpuModel* model = node.gpus.empty() ? nullptr : node.gpus[0].model;
    Dequeue(j);
    for (const GpuAssignment& a : gpus) {
      GpuState& g = node.gpus[a.gpu];
      if (a.mig_profile_id >= 0) {
        g.instances.push_back({{a.mig_profile_id, a.mig_start}, j.id});
      } else if (a.millis < 1000) {
        g.share_tenant = j.tenant;
        g.shares.emplace_back(j.id, a.millis);
      } else {
        g.whole_job = j.id;
      }
    }
    j.state = JobState::kPlaced;
    j.reason.clear();
    j.node = n;
    j.gpus = std::move(gpus);
    j.usage = Demand(j.spec, model);
    node.used_cpu_millis += j.spec.cpu_millis;
    node.used_memory_mib += j.spec.memory_mib;
    T(j.tenant).usage += j.usage;
    active[j.tenant - 1].insert(j.id);
    Reindex(n);
  }

  // "Should not happen" path (STYLE.md): the index promised GPUs the node does not have. Logged,
  // counted, the node re-indexed, and the job left queued rather than given too few GPUs.
  std::string IndexBug(NodeId n) {
    ++index_bugs;
    std::fprintf(stderr, "sched: bug: free-capacity index out of date for node %u\n", n);
    Reindex(n);
    return "internal: the free-capacity index was out of date; retried next pass";
  }
  size_t index_bugs = 0;

  // Picks `count` usable whole GPUs on node n, non-MIG first; flips empty MIG GPUs off.
  std::vector<GpuAssignment> TakeWhole(NodeId n, int count, int millis) {
    std::vector<GpuAssignment> out;
    NodeState& node = st.nodes[n];
    for (int pass = 0; pass < 2 && static_cast<int>(out.size()) < count; ++pass) {
      for (size_t gi = 0; gi < node.gpus.size() && static_cast<int>(out.size()) < count; ++gi) {
        const GpuState& g = node.gpus[gi];
        if (!WholeUsable(g) || g.mig_enabled != (pass == 1)) continue;
        if (g.mig_enabled) SetMigMode(n, static_cast<int>(gi), false);
        out.push_back({static_cast<int>(gi), -1, -1, millis});
      }
    }
    return out;
  }

  // For a refused MIG request: what NVIDIA's rules say about the first few MIG GPUs of the
  // eligible classes, e.g. " (GPU 0 of node n1: 1g.10gb+me (profile 20): only one +me ...)".
  std::string ExampleMigRefusal(const Eligibility& el, const std::string& profile_name) const {
    for (uint32_t ci : el.classes) {
      const NodeClass& c = classes[ci];
      int k = 0;
      for (auto it = c.whole.begin(); it != c.whole.end() && k < 4; ++it, ++k) {
        const NodeId n = std::get<2>(*it);
        const NodeState& node = st.nodes[n];
        for (size_t gi = 0; gi < node.gpus.size(); ++gi) {
          const GpuState& g = node.gpus[gi];
          if (!g.mig_enabled) continue;
          gpu::MigLayout layout(*g.model);
          for (const MigSlot& s : g.instances) {
            layout.PlaceAt(s.instance.profile_id, s.instance.start).IgnoreError();
          }
          const gpu::MigProfile* p = g.model->FindProfileByName(profile_name);
          if (p == nullptr) continue;
          absl::Status why = layout.CheckPlace(p->id);
          if (!why.ok()) {
            return StrCat(" (e.g. GPU ", gi, " of node ", node.spec.name, ": ",
                          std::string(why.message()), ")");
          }
          if (g.unverified != 0) {
            return StrCat(" (e.g. GPU ", gi, " of node ", node.spec.name,
                          ": memory slices await verification)");
          }
        }
      }
    }
    return "";
  }

  // Tries to place job j now. On failure returns the reason (job untouched).
  std::string TryPlace(JobRecord& j) {
    probes_exhausted = false;
    std::string why = Search(j);
    if (!why.empty() && probes_exhausted) {
      why += StrCat(" (searched the best ", opt.probe_limit,
                    " candidates of each size; retried next pass)");
    }
    return why;
  }

  std::string Search(JobRecord& j) {
    TenantState& t = T(j.tenant);
    const Isolation iso = EffectiveIsolation(j, t);
    if (j.spec.gpu_request == GpuRequest::kFraction && iso > Isolation::kShared) {
      return StrCat("a GPU fraction needs isolation shared, tenant ", t.spec.name, " requires ",
                    IsolationName(iso));
    }
    // Quota, without the model-dependent GPU memory (checked per class below).
    Resources after = t.usage;
    after += Demand(j.spec, nullptr);
    if (std::string ex = after.FirstExcess(t.spec.quota); !ex.empty()) {
      return StrCat("waiting for quota of tenant ", t.spec.name, ": ", ex);
    }
    const Eligibility& el = EligibleClasses(j, iso);
    if (el.classes.empty()) return el.reason;
    const int64_t cpu = j.spec.cpu_millis, mem = j.spec.memory_mib;
    std::string quota_reason;
    auto quota_ok = [&](const NodeClass& c) {
      Resources a = t.usage;
      a += Demand(j.spec, c.model);
      if (a.gpu_memory_mib > t.spec.quota.gpu_memory_mib) {
        quota_reason = StrCat("waiting for quota of tenant ", t.spec.name, ": ",
                              a.FirstExcess(t.spec.quota));
        return false;
      }
      return true;
    };

    switch (j.spec.gpu_request) {
      case GpuRequest::kNone:
      case GpuRequest::kWhole: {
        const int n = j.spec.gpus;
        Candidate best;
        for (int flip = 0; flip < (n > 0 && opt.plan_mig_mode_changes ? 2 : 1) && !best.found;
             ++flip) {
          for (uint32_t ci : el.classes) {
            const NodeClass& c = classes[ci];
            if (c.max_gpus < n || !quota_ok(c)) continue;
            Candidate cand = FindWhole(c, n, cpu, mem, flip == 1);
            if (cand.found && (!best.found || cand.score < best.score ||
                               (cand.score == best.score && cand.cpu < best.cpu))) {
              best = cand;
            }
          }
        }
        if (!best.found) {
          if (!quota_reason.empty()) return quota_reason;
          return n == 0 ? StrCat("no schedulable node has ", Millis(cpu), " CPU and ", mem,
                                 " MiB memory free")
                        : StrCat("no schedulable node has ", n, " free verified GPU(s) with ",
                                 Millis(cpu), " CPU and ", mem, " MiB memory free");
        }
        std::vector<GpuAssignment> gpus = TakeWhole(best.node, n, 1000);
        if (static_cast<int>(gpus.size()) != n) return IndexBug(best.node);
        Commit(j, best.node, std::move(gpus));
        return "";
      }
      case GpuRequest::kFraction: {
        // 1. A GPU the tenant already time-slices (best fit on the free fraction).
        std::vector<char> ok_class(classes.size(), 0);
        for (uint32_t ci : el.classes) ok_class[ci] = quota_ok(classes[ci]) ? 1 : 0;
        const auto& set = shared[j.tenant - 1];
        int probes = 0;
        for (auto it = set.lower_bound({j.spec.gpu_millis, 0, 0});
             it != set.end() && probes < opt.probe_limit; ++it, ++probes) {
          const auto [free, n, gi] = *it;
          if (probes + 1 == opt.probe_limit) probes_exhausted = true;
          if (!ok_class[nidx[n].cls] || !FitsNode(n, cpu, mem)) continue;
          Commit(j, n, {{gi, -1, -1, j.spec.gpu_millis}});
          return "";
        }
        // 2. A fresh GPU, best fit by the node's free GPUs (MIG-mode ones last).
        Candidate best;
        for (int flip = 0; flip < (opt.plan_mig_mode_changes ? 2 : 1) && !best.found; ++flip) {
          for (uint32_t ci : el.classes) {
            if (!ok_class[ci]) continue;
            Candidate cand = FindWhole(classes[ci], 1, cpu, mem, flip == 1);
            if (cand.found && (!best.found || cand.score < best.score)) best = cand;
          }
        }
        if (!best.found) {
          if (!quota_reason.empty()) return quota_reason;
          return StrCat("no GPU time-sliced by tenant ", t.spec.name, " has ",
                        Millis(j.spec.gpu_millis), " free and no node has a free verified GPU with ",
                        Millis(cpu), " CPU and ", mem, " MiB memory free");
        }
        std::vector<GpuAssignment> gpus = TakeWhole(best.node, 1, j.spec.gpu_millis);
        if (gpus.size() != 1) return IndexBug(best.node);
        Commit(j, best.node, std::move(gpus));
        return "";
      }
      case GpuRequest::kMig: {
        struct Best {
          NodeId node = 0;
          int gpu = -1, start = -1, after = 99, pi = -1;
        } best;
        for (uint32_t ci : el.classes) {
          const NodeClass& c = classes[ci];
          if (!quota_ok(c)) continue;
          const gpu::MigProfile* prof = c.model->FindProfileByName(j.spec.mig_profile);
          const int pi = ProfileIndex(*c.model, prof->id);
          int probes = 0;
          for (auto it = c.mig[pi].begin(); it != c.mig[pi].end() && probes < opt.probe_limit;
               ++it, ++probes) {
            if (it->first - prof->compute_slices >= best.after) break;  // cannot be tighter
            if (probes + 1 == opt.probe_limit) probes_exhausted = true;
            if (!FitsNode(it->second, cpu, mem)) continue;
            auto [gi, start, after] = BestMigGpu(it->second, pi, j.tenant, iso);
            if (gi >= 0 && after < best.after) {
              best = {it->second, gi, start, after, pi};
              break;
            }
          }
        }
        if (best.gpu < 0 && opt.plan_mig_mode_changes) {
          // No MIG GPU fits: switch an idle, verified non-MIG GPU to MIG mode.
          Candidate cand;
          uint32_t cand_cls = 0;
          for (uint32_t ci : el.classes) {
            if (!quota_ok(classes[ci])) continue;
            Candidate c = FindWhole(classes[ci], 1, cpu, mem);
            if (c.found && (!cand.found || c.score < cand.score)) {
              cand = c;
              cand_cls = ci;
            }
          }
          if (cand.found) {
            NodeState& node = st.nodes[cand.node];
            for (size_t gi = 0; gi < node.gpus.size(); ++gi) {
              GpuState& g = node.gpus[gi];
              if (!WholeUsable(g)) continue;
              const gpu::MigProfile* prof = classes[cand_cls].model->FindProfileByName(j.spec.mig_profile);
              const int pi = ProfileIndex(*g.model, prof->id);
              const bool was = g.mig_enabled;
              g.mig_enabled = true;
              auto start = ChooseStart(g, UseOf(g), pi);
              g.mig_enabled = was;
              if (!start) continue;
              SetMigMode(cand.node, static_cast<int>(gi), true);
              best = {cand.node, static_cast<int>(gi), *start, 0, pi};
              break;
            }
          }
        }
        if (best.gpu < 0) {
          if (!quota_reason.empty()) return quota_reason;
          return StrCat("MIG ", j.spec.mig_profile,
                        ": no MIG GPU has a free allowed start (NVIDIA placement rules) on a node "
                        "with ", Millis(cpu), " CPU and ", mem, " MiB memory free",
                        iso >= Isolation::kExclusive ? " among GPUs no other tenant uses" : "",
                        opt.plan_mig_mode_changes ? ", and no idle verified GPU to re-partition"
                                                  : "",
                        ExampleMigRefusal(el, j.spec.mig_profile));
        }
        const int profile_id = st.nodes[best.node].gpus[best.gpu].model->profiles[best.pi].id;
        Commit(j, best.node, {{best.gpu, profile_id, best.start, 1000}});
        return "";
      }
    }
    return "unknown GPU request";
  }
};

// =============================================================================================

Scheduler::Scheduler(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Scheduler::~Scheduler() = default;

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const Options& options) {
  if (options.probe_limit < 1) return absl::InvalidArgumentError("probe_limit must be >= 1");
  auto impl = std::make_unique<Impl>();
  impl->opt = options;
  return std::unique_ptr<Scheduler>(new Scheduler(std::move(impl)));
}

const ClusterState& Scheduler::state() const { return impl_->st; }

const JobRecord* Scheduler::FindJob(JobId job) const {
  auto it = impl_->st.jobs.find(job);
  return it == impl_->st.jobs.end() ? nullptr : &it->second;
}

std::optional<TenantId> Scheduler::FindTenant(std::string_view name) const {
  auto it = impl_->tenant_by_name.find(std::string(name));
  if (it == impl_->tenant_by_name.end()) return std::nullopt;
  return it->second;
}
std::optional<PoolId> Scheduler::FindPool(std::string_view name) const {
  auto it = impl_->pool_by_name.find(std::string(name));
  if (it == impl_->pool_by_name.end()) return std::nullopt;
  return it->second;
}
std::optional<NodeId> Scheduler::FindNode(std::string_view name) const {
  auto it = impl_->node_by_name.find(std::string(name));
  if (it == impl_->node_by_name.end()) return std::nullopt;
  return it->second;
}
size_t Scheduler::queued_jobs() const { return impl_->queued; }
double Scheduler::DominantShare(TenantId tenant) const {
  return impl_->Known(tenant) ? impl_->Share(tenant) : 0.0;
}

namespace {
absl::Status ValidateQuota(const Resources& q) {
  if (q.gpu_millis < 0 || q.gpu_memory_mib < 0 || q.mig_slices < 0 || q.cpu_millis < 0 ||
      q.memory_mib < 0 || q.running_jobs < 0) {
    return absl::InvalidArgumentError("quota fields must not be negative");
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<TenantId> Scheduler::AddTenant(const TenantSpec& spec) {
  Impl& m = *impl_;
  WARDEN_RETURN_IF_ERROR(common::ValidateName("tenant name", spec.name));
  if (!(spec.weight > 0) || spec.weight > 1e6) {
    return absl::InvalidArgumentError("tenant weight must be > 0 and <= 1e6");
  }
  WARDEN_RETURN_IF_ERROR(ValidateQuota(spec.quota));
  if (m.tenant_by_name.contains(spec.name)) {
    return absl::AlreadyExistsError(StrCat("tenant ", spec.name, " already exists"));
  }
  const TenantId id = static_cast<TenantId>(m.st.tenants.size() + 1);
  m.st.tenants.push_back({id, spec, {}});
  m.tenant_by_name.emplace(spec.name, id);
  m.shared.emplace_back();
  m.queues.emplace_back();
  m.active.emplace_back();
  m.SelfCheck("AddTenant");
  return id;
}

absl::Status Scheduler::SetTenantPolicy(TenantId tenant, Isolation policy) {
  Impl& m = *impl_;
  if (!m.Known(tenant)) return absl::NotFoundError(StrCat("no tenant with id ", tenant));
  m.T(tenant).spec.policy = policy;
  m.elig_cache.clear();
  // A stronger policy of this tenant can also make other tenants' MIG co-tenancy with it
  // illegal; the tenant's own jobs are the ones that move (the others did nothing new).
  m.RequeueMisplaced(tenant);
  m.SelfCheck("SetTenantPolicy");
  return absl::OkStatus();
}

absl::Status Scheduler::SetTenantQuota(TenantId tenant, const Resources& quota) {
  Impl& m = *impl_;
  if (!m.Known(tenant)) return absl::NotFoundError(StrCat("no tenant with id ", tenant));
  WARDEN_RETURN_IF_ERROR(ValidateQuota(quota));
  // Running jobs keep running when the quota drops below the usage; new placements wait until
  // the usage (plus the job) fits again (Search checks every placement against the quota).
  m.T(tenant).spec.quota = quota;
  m.SelfCheck("SetTenantQuota");
  return absl::OkStatus();
}

absl::Status Scheduler::SetTenantWeight(TenantId tenant, double weight) {
  Impl& m = *impl_;
  if (!m.Known(tenant)) return absl::NotFoundError(StrCat("no tenant with id ", tenant));
  if (!(weight > 0) || weight > 1e6) {
    return absl::InvalidArgumentError("tenant weight must be > 0 and <= 1e6");
  }
  m.T(tenant).spec.weight = weight;
  return absl::OkStatus();
}

absl::StatusOr<PoolId> Scheduler::AddPool(const PoolSpec& spec) {
  Impl& m = *impl_;
  WARDEN_RETURN_IF_ERROR(common::ValidateName("pool name", spec.name));
  for (TenantId t : spec.dedicated_to) {
    if (!m.Known(t)) return absl::InvalidArgumentError(StrCat("pool ", spec.name, ": no tenant ", t));
  }
  if (m.pool_by_name.contains(spec.name)) {
    return absl::AlreadyExistsError(StrCat("pool ", spec.name, " already exists"));
  }
  const PoolId id = static_cast<PoolId>(m.st.pools.size());
  m.st.pools.push_back({spec});
  m.pool_by_name.emplace(spec.name, id);
  m.elig_cache.clear();
  return id;
}

absl::Status Scheduler::SetPoolDedication(PoolId pool, const std::vector<TenantId>& tenants,
                                          bool reserved) {
  Impl& m = *impl_;
  if (pool >= m.st.pools.size()) return absl::NotFoundError(StrCat("no pool with id ", pool));
  for (TenantId t : tenants) {
    if (!m.Known(t)) return absl::InvalidArgumentError(StrCat("no tenant ", t));
  }
  m.st.pools[pool].spec.dedicated_to = tenants;
  m.st.pools[pool].spec.reserved = reserved;
  m.elig_cache.clear();
  m.RequeueMisplaced(0);
  m.SelfCheck("SetPoolDedication");
  return absl::OkStatus();
}

absl::StatusOr<NodeId> Scheduler::AddNode(const NodeSpec& spec) {
  Impl& m = *impl_;
  WARDEN_RETURN_IF_ERROR(common::ValidateName("node name", spec.name));
  if (m.node_by_name.contains(spec.name)) {
    return absl::AlreadyExistsError(StrCat("node ", spec.name, " already exists"));
  }
  auto pool = m.pool_by_name.find(spec.pool);
  if (pool == m.pool_by_name.end()) {
    return absl::InvalidArgumentError(StrCat("node ", spec.name, ": no pool named ", spec.pool));
  }
  if (spec.cpu_millis < 0 || spec.memory_mib < 0) {
    return absl::InvalidArgumentError(StrCat("node ", spec.name, ": negative CPU or memory"));
  }
  if (spec.gpus.size() > 64) {
    return absl::InvalidArgumentError(StrCat("node ", spec.name, ": more than 64 GPUs"));
  }
  for (size_t i = 1; i < spec.labels.size(); ++i) {
    if (!(spec.labels[i - 1].first < spec.labels[i].first)) {
      return absl::InvalidArgumentError(
          StrCat("node ", spec.name, ": labels must be sorted by key with unique keys"));
    }
  }
  NodeState node;
  node.spec = spec;
  node.pool = pool->second;
  for (size_t i = 0; i < spec.gpus.size(); ++i) {
    const NodeGpuSpec& gs = spec.gpus[i];
    const gpu::GpuModel* model = gpu::FindGpuModel(gs.model);
    if (model == nullptr) {
      return absl::InvalidArgumentError(
          StrCat("node ", spec.name, " GPU ", i, ": unknown model ", gs.model));
    }
    if (gs.model != spec.gpus[0].model) {
      return absl::InvalidArgumentError(
          StrCat("node ", spec.name, ": all GPUs of a node must be one model"));
    }
    if (gs.mig_enabled && !model->mig_capable) {
      return absl::InvalidArgumentError(
          StrCat("node ", spec.name, " GPU ", i, ": ", gs.model, " has no MIG mode"));
    }
    GpuState g;
    g.uuid = gs.uuid.empty() ? StrCat(spec.name, "-gpu", i) : gs.uuid;
    g.model = model;
    g.mig_enabled = gs.mig_enabled;
    node.gpus.push_back(std::move(g));
  }
  const NodeId id = static_cast<NodeId>(m.st.nodes.size());
  m.st.nodes.push_back(std::move(node));
  m.node_by_name.emplace(spec.name, id);
  NodeIndex e;
  e.cls = m.ClassFor(m.st.nodes[id]);
  e.mig_score.fill(-1);
  m.nidx.push_back(std::move(e));
  m.AddCapacity(m.st.nodes[id], +1);
  m.Reindex(id);
  m.SelfCheck("AddNode");
  return id;
}

absl::Status Scheduler::UpdateNodeMeta(NodeId node, const std::string& pool,
                                       std::vector<std::pair<std::string, std::string>> labels,
                                       std::vector<Taint> taints, const std::vector<Taint>& evict) {
  Impl& m = *impl_;
  WARDEN_RETURN_IF_ERROR(m.CheckNodeId(node));
  NodeState& n = m.st.nodes[node];
  auto pool_it = m.pool_by_name.find(pool);
  if (pool_it == m.pool_by_name.end()) {
    return absl::InvalidArgumentError(StrCat("node ", n.spec.name, ": no pool named ", pool));
  }
  for (size_t i = 1; i < labels.size(); ++i) {
    if (!(labels[i - 1].first < labels[i].first)) {
      return absl::InvalidArgumentError(
          StrCat("node ", n.spec.name, ": labels must be sorted by key with unique keys"));
    }
  }
  m.Unindex(node);
  n.spec.pool = pool;
  n.pool = pool_it->second;
  n.spec.labels = std::move(labels);
  n.spec.taints = std::move(taints);
  m.nidx[node].cls = m.ClassFor(n);
  m.elig_cache.clear();
  std::vector<JobId> on;
  for (const auto& a : m.active) {
    for (JobId id : a) {
      if (m.st.jobs.at(id).node == node) on.push_back(id);
    }
  }
  std::sort(on.begin(), on.end());
  for (JobId id : on) {
    JobRecord& j = m.st.jobs.at(id);
    std::string why;
    if (j.pool && *j.pool != n.pool) {
      why = StrCat("node ", n.spec.name, " moved to pool ", pool);
    }
    for (const Taint& t : evict) {
      if (why.empty() && !Impl::Tolerates(j.spec.tolerations, t)) {
        why = StrCat("node ", n.spec.name, " has the NoExecute taint ", t.key,
                     t.value.empty() ? "" : StrCat("=", t.value));
      }
    }
    if (!why.empty()) m.Requeue(j, StrCat("requeued: ", why));
  }
  // A move into a pool dedicated to other tenants (or out of a dedicated pool) requeues the jobs
  // the new pool does not admit (invariant 2).
  m.RequeueMisplaced(0);
  m.Reindex(node);
  m.SelfCheck("UpdateNodeMeta");
  return absl::OkStatus();
}

absl::Status Scheduler::RemoveNode(NodeId node) {
  Impl& m = *impl_;
  WARDEN_RETURN_IF_ERROR(m.CheckNodeId(node));
  m.RequeueNode(node, StrCat("requeued: node ", m.st.nodes[node].spec.name, " was removed"));
  m.Unindex(node);
  m.AddCapacity(m.st.nodes[node], -1);
  m.st.nodes[node].removed = true;
  m.node_by_name.erase(m.st.nodes[node].spec.name);
  m.SelfCheck("RemoveNode");
  return absl::OkStatus();
}

absl::Status Scheduler::SetNodeReachable(NodeId node, bool reachable) {
  Impl& m = *impl_;
  return m.UpdateNode(node, "SetNodeReachable", [&](NodeState& n) {
    if (n.reachable == reachable) return;
    n.reachable = reachable;
    if (reachable) return;
    m.RequeueNode(node, StrCat("requeued: node ", n.spec.name, " became unreachable"));
    // What ran there may still be there: every GPU needs verification before reuse.
    for (GpuState& g : n.gpus) g.unverified = kAllSlices;
  });
}

absl::Status Scheduler::Cordon(NodeId node) {
  return impl_->UpdateNode(node, "Cordon", [](NodeState& n) { n.cordoned = true; });
}

absl::Status Scheduler::Uncordon(NodeId node) {
  return impl_->UpdateNode(node, "Uncordon", [](NodeState& n) { n.cordoned = false; });
}

absl::Status Scheduler::Drain(NodeId node) {
  Impl& m = *impl_;
  return m.UpdateNode(node, "Drain", [&](NodeState& n) {
    n.cordoned = true;
    m.RequeueNode(node, StrCat("requeued: node ", n.spec.name, " was drained"));
  });
}

absl::Status Scheduler::SetPatchCompliant(NodeId node, bool compliant) {
  return impl_->UpdateNode(node, "SetPatchCompliant",
                           [&](NodeState& n) { n.patch_compliant = compliant; });
}

absl::Status Scheduler::SetMigMode(NodeId node, int gpu, bool enabled) {
  Impl& m = *impl_;
  WARDEN_RETURN_IF_ERROR(m.CheckNodeId(node));
  NodeState& n = m.st.nodes[node];
  if (gpu < 0 || gpu >= static_cast<int>(n.gpus.size())) {
    return absl::InvalidArgumentError(StrCat("node ", n.spec.name, " has no GPU ", gpu));
  }
  GpuState& g = n.gpus[gpu];
  if (enabled && !g.model->mig_capable) {
    return absl::InvalidArgumentError(StrCat(g.model->name, " has no MIG mode"));
  }
  if (!Idle(g)) {
    return absl::FailedPreconditionError(
        StrCat("GPU ", gpu, " of node ", n.spec.name,
               " has work on it; MIG is re-partitioned only on GPUs with no work"));
  }
  g.mig_enabled = enabled;
  m.Reindex(node);
  m.SelfCheck("SetMigMode");
  return absl::OkStatus();
}

absl::Status Scheduler::ReportGpuVerification(NodeId node, int gpu, bool passed) {
  Impl& m = *impl_;
  WARDEN_RETURN_IF_ERROR(m.CheckNodeId(node));
  NodeState& n = m.st.nodes[node];
  if (gpu < 0 || gpu >= static_cast<int>(n.gpus.size())) {
    return absl::InvalidArgumentError(StrCat("node ", n.spec.name, " has no GPU ", gpu));
  }
  GpuState& g = n.gpus[gpu];
  if (!passed) {
    g.quarantined = true;
  } else {
    g.quarantined = false;
    // Only slices nobody holds now were scrubbed.
    uint8_t held = 0;
    if (g.whole_job != 0 || !g.shares.empty()) held = kAllSlices;
    held |= UseOf(g).used;
    g.unverified &= held;
    ++g.verify_epoch;
  }
  m.Reindex(node);
  m.SelfCheck("ReportGpuVerification");
  return absl::OkStatus();
}

absl::StatusOr<JobId> Scheduler::Submit(const JobSpec& spec) {
  Impl& m = *impl_;
  auto tit = m.tenant_by_name.find(spec.tenant);
  if (tit == m.tenant_by_name.end()) {
    return absl::NotFoundError(StrCat("no tenant named ", spec.tenant));
  }
  const TenantId tid = tit->second;
  const TenantState& t = m.T(tid);
  // Re-check the parser's limits: specs may come from code, not only from JSON.
  switch (spec.gpu_request) {
    case GpuRequest::kNone:
      if (spec.gpus != 0) return absl::InvalidArgumentError("gpus set without a GPU request");
      break;
    case GpuRequest::kWhole:
      if (spec.gpus < 1 || spec.gpus > 64) return absl::InvalidArgumentError("gpus must be 1..64");
      break;
    case GpuRequest::kFraction:
      if (spec.gpu_millis < 1 || spec.gpu_millis > 999) {
        return absl::InvalidArgumentError("gpu fraction must be 1..999 thousandths");
      }
      break;
    case GpuRequest::kMig: {
      bool known = false;
      for (const gpu::GpuModel& model : gpu::KnownGpuModels()) {
        known = known || model.FindProfileByName(spec.mig_profile) != nullptr;
      }
      if (!known) {
        return absl::InvalidArgumentError(StrCat("unknown MIG profile ", spec.mig_profile));
      }
      break;
    }
  }
  if (spec.cpu_millis < 1 || spec.memory_mib < 1 || spec.priority < -1000 ||
      spec.priority > 1000) {
    return absl::InvalidArgumentError("cpu_millis and memory_mib must be >= 1, priority -1000..1000");
  }
  // Attack: a job may not weaken its tenant's isolation.
  if (spec.isolation && *spec.isolation < t.spec.policy) {
    return absl::PermissionDeniedError(StrCat(
        "job asks for isolation ", IsolationName(*spec.isolation), " but tenant ", t.spec.name,
        "'s policy is ", IsolationName(t.spec.policy),
        "; a job may ask for stronger isolation, never weaker"));
  }
  const Isolation iso = std::max(spec.isolation.value_or(t.spec.policy), t.spec.policy);
  if (spec.gpu_request == GpuRequest::kFraction && iso > Isolation::kShared) {
    return absl::InvalidArgumentError(StrCat("a GPU fraction is time-sliced and needs isolation "
                                             "shared; this job's isolation is ",
                                             IsolationName(iso)));
  }
  std::optional<PoolId> pool;
  if (!spec.pool.empty()) {
    auto pit = m.pool_by_name.find(spec.pool);
    if (pit == m.pool_by_name.end()) return absl::NotFoundError(StrCat("no pool named ", spec.pool));
    pool = pit->second;
    const bool dedicated_pool = m.st.pools[*pool].spec.dedicated();
    // Attack: targeting another tenant's dedicated pool.
    if (dedicated_pool && !m.DedicatedTo(*pool, tid)) {
      return absl::PermissionDeniedError(StrCat("pool ", spec.pool,
                                                " is dedicated to other tenants; tenant ",
                                                t.spec.name, " may not run jobs there"));
    }
    if (!dedicated_pool && iso == Isolation::kDedicated) {
      return absl::PermissionDeniedError(StrCat("isolation dedicated: pool ", spec.pool,
                                                " is not dedicated to tenant ", t.spec.name));
    }
  }
  // A job that alone exceeds the quota can never run.
  Resources alone = Impl::Demand(spec, nullptr);
  if (std::string ex = alone.FirstExcess(t.spec.quota); !ex.empty()) {
    return absl::ResourceExhaustedError(
        StrCat("job exceeds the quota of tenant ", t.spec.name, " on its own: ", ex));
  }
  JobRecord j;
  j.id = m.next_job++;
  j.tenant = tid;
  j.spec = spec;
  j.pool = pool;
  j.seq = m.next_seq++;
  auto [it, inserted] = m.st.jobs.emplace(j.id, std::move(j));
  m.Enqueue(it->second, "waiting for the next scheduling pass");
  m.SelfCheck("Submit");
  return it->first;
}

absl::Status Scheduler::Cancel(JobId job) {
  Impl& m = *impl_;
  auto it = m.st.jobs.find(job);
  if (it == m.st.jobs.end()) return absl::NotFoundError(StrCat("no job ", job));
  JobRecord& j = it->second;
  switch (j.state) {
    case JobState::kQueued:
      m.Dequeue(j);
      break;
    case JobState::kPlaced:
    case JobState::kRunning:
      m.Release(j);
      break;
    default:
      return absl::FailedPreconditionError(
          StrCat("job ", job, " already ended (", JobStateName(j.state), ")"));
  }
  j.state = JobState::kCancelled;
  j.reason = "cancelled";
  j.gpus.clear();
  j.usage = Resources{};
  m.SelfCheck("Cancel");
  return absl::OkStatus();
}

absl::Status Scheduler::Restore(JobId job, NodeId node, const std::vector<GpuAssignment>& gpus,
                               bool running) {
  Impl& m = *impl_;
  auto it = m.st.jobs.find(job);
  if (it == m.st.jobs.end()) return absl::NotFoundError(StrCat("no job ", job));
  JobRecord& j = it->second;
  if (j.state != JobState::kQueued) {
    return absl::FailedPreconditionError(
        StrCat("job ", job, " is ", JobStateName(j.state), ", not queued"));
  }
  WARDEN_RETURN_IF_ERROR(m.CheckNodeId(node));
  NodeState& n = m.st.nodes[node];
  if (n.removed) return absl::FailedPreconditionError(StrCat("node ", n.spec.name, " is removed"));
  const bool want_gpus = j.spec.gpu_request != GpuRequest::kNone;
  if (want_gpus == gpus.empty()) {
    return absl::InvalidArgumentError(StrCat("job ", job, ": the assignment does not match the spec"));
  }
  for (const GpuAssignment& a : gpus) {
    if (a.gpu < 0 || a.gpu >= static_cast<int>(n.gpus.size())) {
      return absl::InvalidArgumentError(StrCat("job ", job, ": node ", n.spec.name, " has no GPU ", a.gpu));
    }
    // Holder conflicts are refused before anything is touched (the undo below only removes
    // this job's own holdings).
    const GpuState& g = n.gpus[a.gpu];
    int64_t shared = 0;
    for (const auto& [id, millis] : g.shares) shared += millis;
    const bool whole = a.mig_profile_id < 0 && a.millis >= 1000;
    const bool fraction = a.mig_profile_id < 0 && a.millis < 1000;
    const bool conflict =
        g.whole_job != 0 || g.quarantined ||
        (whole && (!g.shares.empty() || !g.instances.empty() || g.mig_enabled)) ||
        (fraction && (!g.instances.empty() || g.mig_enabled ||
                      (g.share_tenant != 0 && g.share_tenant != j.tenant) ||
                      shared + a.millis > 1000 || a.millis < 1)) ||
        (a.mig_profile_id >= 0 && (!g.mig_enabled || !g.shares.empty()));
    if (conflict) {
      return absl::FailedPreconditionError(StrCat("job ", job, " cannot be restored on GPU ", a.gpu,
                                                  " of node ", n.spec.name,
                                                  ": the GPU is held or in the wrong mode"));
    }
  }
  if (!m.FitsNode(node, j.spec.cpu_millis, j.spec.memory_mib)) {
    return absl::ResourceExhaustedError(StrCat("node ", n.spec.name, " lacks the CPU or memory"));
  }
  // Commit, then let the independent checker judge the node; on any violation undo exactly
  // (the GPUs' verification state is put back as it was, so a refused restore changes nothing).
  std::vector<uint8_t> unverified;
  for (const GpuState& g : n.gpus) unverified.push_back(g.unverified);
  m.Commit(j, node, gpus);
  std::vector<JobId> on;
  for (const auto& [id, rec] : m.st.jobs) {
    if (rec.node == node && (rec.state == JobState::kPlaced || rec.state == JobState::kRunning)) {
      on.push_back(id);
    }
  }
  std::vector<Violation> v = CheckNode(m.st, node, on);
  if (!v.empty()) {
    m.Release(j);
    for (size_t i = 0; i < n.gpus.size(); ++i) n.gpus[i].unverified = unverified[i];
    m.Enqueue(j, "waiting for the next scheduling pass");
    m.Reindex(node);
    return absl::FailedPreconditionError(
        StrCat("job ", job, " cannot be restored on node ", n.spec.name, ": ", FormatViolations(v)));
  }
  if (running) j.state = JobState::kRunning;
  m.SelfCheck("Restore");
  return absl::OkStatus();
}

absl::Status Scheduler::MarkRunning(JobId job) {
  Impl& m = *impl_;
  auto it = m.st.jobs.find(job);
  if (it == m.st.jobs.end()) return absl::NotFoundError(StrCat("no job ", job));
  if (it->second.state != JobState::kPlaced) {
    return absl::FailedPreconditionError(
        StrCat("job ", job, " is ", JobStateName(it->second.state), ", not placed"));
  }
  it->second.state = JobState::kRunning;
  return absl::OkStatus();
}

absl::Status Scheduler::Finish(JobId job, bool succeeded) {
  Impl& m = *impl_;
  auto it = m.st.jobs.find(job);
  if (it == m.st.jobs.end()) return absl::NotFoundError(StrCat("no job ", job));
  JobRecord& j = it->second;
  if (j.state != JobState::kPlaced && j.state != JobState::kRunning) {
    return absl::FailedPreconditionError(
        StrCat("job ", job, " is ", JobStateName(j.state), ", not placed or running"));
  }
  m.Release(j);
  j.state = succeeded ? JobState::kDone : JobState::kFailed;
  j.reason = succeeded ? "" : "failed";
  j.gpus.clear();
  j.usage = Resources{};
  m.SelfCheck("Finish");
  return absl::OkStatus();
}

absl::Status Scheduler::Forget(JobId job) {
  Impl& m = *impl_;
  auto it = m.st.jobs.find(job);
  if (it == m.st.jobs.end()) return absl::NotFoundError(StrCat("no job ", job));
  const JobState s = it->second.state;
  if (s != JobState::kDone && s != JobState::kFailed && s != JobState::kCancelled) {
    return absl::FailedPreconditionError(
        StrCat("job ", job, " is ", JobStateName(s), "; only ended jobs can be forgotten"));
  }
  m.st.jobs.erase(it);
  return absl::OkStatus();
}

PassResult Scheduler::Schedule(const PassOptions& options) {
  Impl& m = *impl_;
  PassResult result;
  m.pending_mig_changes = &result.mig_changes;
  // Tenants by weighted dominant share (lowest first); each has a cursor into its queue.
  absl::btree_set<std::pair<double, TenantId>> order;
  std::vector<QueueKey> cursor(m.queues.size());
  for (size_t t = 0; t < m.queues.size(); ++t) {
    if (m.queues[t].empty()) continue;
    cursor[t] = *m.queues[t].begin();
    order.insert({m.Share(static_cast<TenantId>(t + 1)), static_cast<TenantId>(t + 1)});
  }
  // Shapes that failed in this pass fail again until something is released (nothing is,
  // during a pass), so they are refused without a second search.
  absl::flat_hash_map<uint64_t, std::string> failed;
  using Clock = std::chrono::steady_clock;
  while (!order.empty()) {
    if (options.max_placements != 0 && result.placed.size() >= options.max_placements) break;
    auto [share, tid] = *order.begin();
    order.erase(order.begin());
    auto& q = m.queues[tid - 1];
    auto it = q.lower_bound(cursor[tid - 1]);
    if (it == q.end()) continue;
    const JobId id = std::get<2>(*it);
    ++it;
    const bool more = it != q.end();
    if (more) cursor[tid - 1] = *it;
    const Clock::time_point t0 = options.latencies_ns ? Clock::now() : Clock::time_point{};
    JobRecord& j = m.st.jobs.at(id);
    const TenantState& ts = m.T(tid);
    uint64_t shape = Mix(m.EligibilityKey(j, EffectiveIsolation(j, ts)),
                         static_cast<uint64_t>(j.spec.gpu_millis));
    shape = Mix(Mix(shape, static_cast<uint64_t>(j.spec.cpu_millis)),
                static_cast<uint64_t>(j.spec.memory_mib));
    bool placed = false;
    if (auto f = failed.find(shape); f != failed.end()) {
      j.reason = f->second;
    } else {
      std::string why = m.TryPlace(j);
      if (why.empty()) {
        placed = true;
      } else {
        // The key holds the tenant, so a quota refusal also stands: usage only grows in a pass.
        failed.emplace(shape, why);
        j.reason = std::move(why);
      }
    }
    ++result.considered;
    if (options.latencies_ns) {
      options.latencies_ns->push_back(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
    }
    if (placed) {
      result.placed.push_back(id);
      m.SelfCheck("placement");
      if (options.after_placement) options.after_placement(j);
      share = m.Share(tid);
    }
    if (more) order.insert({share, tid});
  }
  m.pending_mig_changes = nullptr;
  return result;
}

}  // namespace warden::sched
