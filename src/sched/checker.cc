// The invariant checker. Written apart from scheduler.cc and sharing none of its helpers: usage,
// GPU holders and MIG layouts are rebuilt here from the jobs' placements (and the MIG rules are
// checked by gpu::ValidateMigLayout), then compared with what the state records.
#include "sched/checker.h"

#include <algorithm>
#include <map>

#include "common/strings.h"

namespace warden::sched {
namespace {

using common::StrCat;

bool Active(const JobRecord& j) {
  return j.state == JobState::kPlaced || j.state == JobState::kRunning;
}

uint8_t Slices(int start, int count) {
  return static_cast<uint8_t>(((1u << count) - 1u) << start);
}

std::string JobName(const JobRecord& j) { return StrCat("job ", j.id, " (", j.spec.name, ")"); }

// What a placed job holds, recomputed from its spec and the model of its node's GPUs.
Resources Recompute(const JobRecord& j, const NodeState& node) {
  Resources r;
  r.cpu_millis = j.spec.cpu_millis;
  r.memory_mib = j.spec.memory_mib;
  r.running_jobs = 1;
  for (const GpuAssignment& a : j.gpus) {
    if (a.gpu < 0 || a.gpu >= static_cast<int>(node.gpus.size())) continue;
    const gpu::GpuModel* m = node.gpus[a.gpu].model;
    if (a.mig_profile_id >= 0) {
      if (const gpu::MigProfile* p = m->FindProfile(a.mig_profile_id)) {
        r.mig_slices += p->compute_slices;
        r.gpu_memory_mib += static_cast<int64_t>(p->memory_mib);
      }
    } else {
      r.gpu_millis += a.millis;
      r.gpu_memory_mib += static_cast<int64_t>(m->memory_mib) * a.millis / 1000;
    }
  }
  return r;
}

class Collector {
 public:
  explicit Collector(const ClusterState& st) : st_(st) {}
  std::vector<Violation> out;

  void Add(std::string rule, std::string detail) { out.push_back({std::move(rule), std::move(detail)}); }

  Isolation Effective(const JobRecord& j) const {
    const TenantState* t = st_.tenant(j.tenant);
    const Isolation policy = t ? t->spec.policy : Isolation::kDedicated;
    return std::max(j.spec.isolation.value_or(policy), policy);
  }

  bool DedicatedTo(PoolId pool, TenantId t) const {
    const auto& d = st_.pools[pool].spec.dedicated_to;
    return std::find(d.begin(), d.end(), t) != d.end();
  }

  // Job-level rules: where it is, what it was given.
  void CheckJob(const JobRecord& j) {
    const TenantState* t = st_.tenant(j.tenant);
    if (t == nullptr) {
      Add("state", StrCat(JobName(j), " belongs to unknown tenant ", j.tenant));
      return;
    }
    if (j.node >= st_.nodes.size()) {
      Add("state", StrCat(JobName(j), " is placed on unknown node ", j.node));
      return;
    }
    const NodeState& node = st_.nodes[j.node];
    if (node.removed || !node.reachable) {
      Add("state", StrCat(JobName(j), " is still placed on ", node.removed ? "removed" : "unreachable",
                          " node ", node.spec.name));
    }
    const Isolation iso = Effective(j);
    const bool dedicated_pool = node.pool < st_.pools.size() &&
                                st_.pools[node.pool].spec.dedicated();
    if (node.pool >= st_.pools.size()) {
      Add("state", StrCat("node ", node.spec.name, " is in unknown pool ", node.pool));
    } else {
      if (dedicated_pool && !DedicatedTo(node.pool, j.tenant)) {
        Add("invariant 2", StrCat(JobName(j), " of tenant ", t->spec.name, " runs in pool ",
                                  st_.pools[node.pool].spec.name, " dedicated to other tenants"));
      }
      if (iso == Isolation::kDedicated && !dedicated_pool) {
        Add("invariant 2", StrCat(JobName(j), " needs isolation dedicated but runs in general pool ",
                                  st_.pools[node.pool].spec.name));
      }
      if (j.pool && *j.pool != node.pool) {
        Add("state", StrCat(JobName(j), " asked for pool ", *j.pool, " but runs in ", node.pool));
      }
    }
    // Node selector and taints are placement rules: a label or taint changed after placement
    // leaves the job where it is (a NoExecute taint requeues it in the scheduler), so they are
    // judged when a job newly appears on a node (InvariantChecker::Check, PlacementRuleBroken).
    // Invariant 6, the scheduler's half: the job is given exactly the devices it asked for, each
    // a real GPU of its node, none twice; a job that asked for none has none.
    std::vector<int> seen;
    for (const GpuAssignment& a : j.gpus) {
      if (a.gpu < 0 || a.gpu >= static_cast<int>(node.gpus.size())) {
        Add("invariant 6", StrCat(JobName(j), " was given GPU ", a.gpu, " that node ",
                                  node.spec.name, " does not have"));
        return;
      }
      if (std::find(seen.begin(), seen.end(), a.gpu) != seen.end()) {
        Add("invariant 6", StrCat(JobName(j), " was given GPU ", a.gpu, " twice"));
      }
      seen.push_back(a.gpu);
      if (!j.spec.gpu_model.empty() && node.gpus[a.gpu].model->name != j.spec.gpu_model) {
        Add("state", StrCat(JobName(j), " asked for ", j.spec.gpu_model, " and got ",
                            node.gpus[a.gpu].model->name));
      }
    }
    const size_t n = j.gpus.size();
    switch (j.spec.gpu_request) {
      case GpuRequest::kNone:
        if (n != 0) Add("invariant 6", StrCat(JobName(j), " asked for no GPU but was given ", n));
        break;
      case GpuRequest::kWhole:
        if (n != static_cast<size_t>(j.spec.gpus)) {
          Add("invariant 6", StrCat(JobName(j), " asked for ", j.spec.gpus, " GPUs, was given ", n));
        }
        for (const GpuAssignment& a : j.gpus) {
          if (a.mig_profile_id >= 0 || a.millis != 1000) {
            Add("invariant 6", StrCat(JobName(j), " asked for whole GPUs, got a part of GPU ", a.gpu));
          }
        }
        break;
      case GpuRequest::kFraction:
        if (n != 1 || j.gpus[0].mig_profile_id >= 0 || j.gpus[0].millis != j.spec.gpu_millis) {
          Add("invariant 6", StrCat(JobName(j), " asked for ", j.spec.gpu_millis,
                                    " thousandths of one GPU and got something else"));
        }
        if (iso > Isolation::kShared) {
          Add("invariant 1", StrCat(JobName(j), " time-slices a GPU at isolation ",
                                    IsolationName(iso)));
        }
        break;
      case GpuRequest::kMig: {
        bool ok = n == 1 && j.gpus[0].mig_profile_id >= 0;
        if (ok) {
          const gpu::MigProfile* p =
              node.gpus[j.gpus[0].gpu].model->FindProfile(j.gpus[0].mig_profile_id);
          ok = p != nullptr && p->name == j.spec.mig_profile;
        }
        if (!ok) {
          Add("invariant 6", StrCat(JobName(j), " asked for one MIG ", j.spec.mig_profile,
                                    " instance and got something else"));
        }
        break;
      }
    }
  }

  // GPU- and node-level rules for node `n`, given the active jobs placed there.
  void CheckNodeJobs(NodeId n, const std::vector<const JobRecord*>& jobs) {
    const NodeState& node = st_.nodes[n];
    int64_t cpu = 0, mem = 0;
    struct Held {
      JobId whole = 0;
      std::vector<std::pair<JobId, int>> shares;
      std::vector<MigSlot> instances;
      int whole_count = 0;
    };
    std::vector<Held> held(node.gpus.size());
    for (const JobRecord* j : jobs) {
      cpu += j->spec.cpu_millis;
      mem += j->spec.memory_mib;
      for (const GpuAssignment& a : j->gpus) {
        if (a.gpu < 0 || a.gpu >= static_cast<int>(node.gpus.size())) continue;
        Held& h = held[a.gpu];
        if (a.mig_profile_id >= 0) {
          h.instances.push_back({{a.mig_profile_id, a.mig_start}, j->id});
        } else if (a.millis < 1000) {
          h.shares.emplace_back(j->id, a.millis);
        } else {
          h.whole = j->id;
          ++h.whole_count;
        }
      }
    }
    if (node.removed && !jobs.empty()) {
      Add("state", StrCat("removed node ", node.spec.name, " still holds ", jobs.size(), " jobs"));
    }
    if (cpu != node.used_cpu_millis || mem != node.used_memory_mib) {
      Add("accounting", StrCat("node ", node.spec.name, " records ", node.used_cpu_millis,
                               " mCPU/", node.used_memory_mib, " MiB used, its jobs hold ", cpu,
                               "/", mem));
    }
    if (cpu > node.spec.cpu_millis || mem > node.spec.memory_mib) {
      Add("capacity", StrCat("node ", node.spec.name, " is over capacity: ", cpu, "/",
                             node.spec.cpu_millis, " mCPU, ", mem, "/", node.spec.memory_mib,
                             " MiB"));
    }
    auto tenant_of = [&](JobId id) -> const JobRecord* {
      auto it = st_.jobs.find(id);
      return it == st_.jobs.end() ? nullptr : &it->second;
    };
    for (size_t gi = 0; gi < node.gpus.size(); ++gi) {
      const GpuState& g = node.gpus[gi];
      Held& h = held[gi];
      const std::string where = StrCat("GPU ", gi, " of node ", node.spec.name);
      // Records vs. jobs, both ways.
      auto sorted_shares = [](std::vector<std::pair<JobId, int>> v) {
        std::sort(v.begin(), v.end());
        return v;
      };
      auto sorted_inst = [](std::vector<MigSlot> v) {
        std::sort(v.begin(), v.end(), [](const MigSlot& a, const MigSlot& b) {
          return std::tie(a.job, a.instance.start, a.instance.profile_id) <
                 std::tie(b.job, b.instance.start, b.instance.profile_id);
        });
        return v;
      };
      const auto rs = sorted_shares(g.shares), hs = sorted_shares(h.shares);
      const auto ri = sorted_inst(g.instances), hi = sorted_inst(h.instances);
      bool inst_equal = ri.size() == hi.size();
      for (size_t i = 0; inst_equal && i < ri.size(); ++i) {
        inst_equal = ri[i].job == hi[i].job && ri[i].instance == hi[i].instance;
      }
      if (g.whole_job != h.whole || rs != hs || !inst_equal) {
        Add("state", StrCat(where, ": recorded holders differ from the jobs placed on it"));
      }
      // Invariant 1: one whole-GPU holder, or shares of one tenant, or MIG instances.
      const int kinds = (h.whole_count > 0) + !h.shares.empty() + !h.instances.empty();
      if (h.whole_count > 1 || kinds > 1) {
        Add("invariant 1", StrCat(where, " is given to several jobs at once without MIG"));
      }
      if (g.mig_enabled && (h.whole_count > 0 || !h.shares.empty())) {
        Add("state", StrCat(where, " is in MIG mode but used as a whole GPU"));
      }
      if (!g.mig_enabled && !h.instances.empty()) {
        Add("mig-rules", StrCat(where, " has MIG instances but MIG mode is off"));
      }
      TenantId share_tenant = 0;
      int share_sum = 0;
      for (const auto& [id, millis] : h.shares) {
        const JobRecord* j = tenant_of(id);
        if (!j) continue;
        share_sum += millis;
        if (share_tenant == 0) share_tenant = j->tenant;
        if (j->tenant != share_tenant) {
          Add("invariant 1", StrCat(where, " is time-sliced between tenants ", share_tenant,
                                    " and ", j->tenant));
        }
      }
      if (share_sum > 1000) Add("capacity", StrCat(where, " is shared ", share_sum, "/1000"));
      if (g.share_tenant != share_tenant) {
        Add("state", StrCat(where, " records share tenant ", g.share_tenant, ", jobs say ",
                            share_tenant));
      }
      if (!h.instances.empty()) {
        std::vector<gpu::MigInstance> layout;
        for (const MigSlot& s : h.instances) layout.push_back(s.instance);
        if (absl::Status v = gpu::ValidateMigLayout(*g.model, layout); !v.ok()) {
          Add("mig-rules", StrCat(where, ": ", std::string(v.message())));
        }
        std::vector<TenantId> tenants;
        for (const MigSlot& s : h.instances) {
          const JobRecord* j = tenant_of(s.job);
          if (j && std::find(tenants.begin(), tenants.end(), j->tenant) == tenants.end()) {
            tenants.push_back(j->tenant);
          }
        }
        if (tenants.size() > 1) {
          for (const MigSlot& s : h.instances) {
            const JobRecord* j = tenant_of(s.job);
            if (!j) continue;
            const TenantState* t = st_.tenant(j->tenant);
            if (Effective(*j) > Isolation::kMig || !t || t->spec.policy > Isolation::kMig) {
              Add("invariant 1",
                  StrCat(where, " is shared by ", tenants.size(), " tenants but ", JobName(*j),
                         " has isolation ", IsolationName(Effective(*j)),
                         ", which forbids MIG co-tenancy"));
            }
          }
        }
      }
      // Invariant 3 (the part one snapshot shows): nothing held sits on unverified slices.
      uint8_t in_use = (h.whole_count > 0 || !h.shares.empty()) ? 0xff : 0;
      for (const MigSlot& s : h.instances) {
        if (const gpu::MigProfile* p = g.model->FindProfile(s.instance.profile_id)) {
          if (s.instance.start >= 0 && s.instance.start < 8) {
            in_use |= Slices(s.instance.start, p->memory_slices);
          }
        }
      }
      if (in_use & g.unverified) {
        Add("invariant 3", StrCat(where, ": a job holds memory slices still awaiting verification"));
      }
    }
  }

 private:
  const ClusterState& st_;
};

std::vector<const JobRecord*> JobsFor(const ClusterState& st, std::span<const JobId> ids,
                                      Collector& c) {
  std::vector<const JobRecord*> out;
  for (JobId id : ids) {
    auto it = st.jobs.find(id);
    if (it == st.jobs.end()) {
      c.Add("state", StrCat("job ", id, " is unknown"));
    } else if (Active(it->second)) {
      out.push_back(&it->second);
    }
  }
  return out;
}

}  // namespace

std::vector<Violation> CheckClusterState(const ClusterState& st) {
  Collector c(st);
  std::vector<std::vector<const JobRecord*>> by_node(st.nodes.size());
  std::vector<Resources> usage(st.tenants.size());
  for (const auto& [id, j] : st.jobs) {
    if (id != j.id) c.Add("state", StrCat("job map key ", id, " holds job ", j.id));
    if (!Active(j)) {
      if (!j.gpus.empty() || !(j.usage == Resources{})) {
        c.Add("state", StrCat(JobName(j), " is ", JobStateName(j.state), " but holds resources"));
      }
      continue;
    }
    c.CheckJob(j);
    if (j.node < st.nodes.size()) by_node[j.node].push_back(&j);
    if (j.tenant >= 1 && j.tenant <= st.tenants.size() && j.node < st.nodes.size()) {
      const Resources r = Recompute(j, st.nodes[j.node]);
      if (!(r == j.usage)) c.Add("accounting", StrCat(JobName(j), " records a usage it does not hold"));
      usage[j.tenant - 1] += r;
    }
  }
  for (NodeId n = 0; n < st.nodes.size(); ++n) c.CheckNodeJobs(n, by_node[n]);
  for (size_t t = 0; t < st.tenants.size(); ++t) {
    const TenantState& ts = st.tenants[t];
    if (!(usage[t] == ts.usage)) {
      c.Add("accounting", StrCat("tenant ", ts.spec.name,
                                 " records a usage different from its jobs' placements"));
    }
    // Invariant 4 is judged when a tenant gains a placement (InvariantChecker::Check): a quota
    // lowered below the current usage leaves running jobs alone, so a snapshot over quota is
    // legal; a new placement that ends over quota is not.
  }
  return std::move(c.out);
}

std::vector<Violation> CheckNode(const ClusterState& st, NodeId node,
                                 std::span<const JobId> jobs_on_node) {
  Collector c(st);
  if (node >= st.nodes.size()) {
    c.Add("state", StrCat("no node ", node));
    return std::move(c.out);
  }
  std::vector<const JobRecord*> jobs = JobsFor(st, jobs_on_node, c);
  for (const JobRecord* j : jobs) {
    if (j->node != node) c.Add("state", StrCat(JobName(*j), " is not on node ", node));
    c.CheckJob(*j);
  }
  c.CheckNodeJobs(node, jobs);
  return std::move(c.out);
}

std::vector<Violation> InvariantChecker::ObserveNode(const ClusterState& st, NodeId node) {
  std::vector<Violation> out;
  if (node < st.nodes.size()) GpuHistoryOf(st, node, out);
  return out;
}

void InvariantChecker::GpuHistoryOf(const ClusterState& st, NodeId n, std::vector<Violation>& out) {
  if (gpus_.size() < st.nodes.size()) gpus_.resize(st.nodes.size());
  {
    const NodeState& node = st.nodes[n];
    gpus_[n].resize(node.gpus.size());
    for (size_t gi = 0; gi < node.gpus.size(); ++gi) {
      const GpuState& g = node.gpus[gi];
      GpuHistory& hist = gpus_[n][gi];
      // Who holds each slice now, from the jobs' side of the records.
      std::array<TenantId, 8> holder{};
      auto tenant_of = [&](JobId id) -> TenantId {
        auto it = st.jobs.find(id);
        return it == st.jobs.end() ? 0 : it->second.tenant;
      };
      if (g.whole_job) holder.fill(tenant_of(g.whole_job));
      for (const auto& s : g.shares) holder.fill(tenant_of(s.first));
      for (const MigSlot& s : g.instances) {
        const gpu::MigProfile* p = g.model->FindProfile(s.instance.profile_id);
        if (!p) continue;
        for (int i = s.instance.start; i < s.instance.start + p->memory_slices && i < 8; ++i) {
          holder[i] = tenant_of(s.job);
        }
      }
      if (g.verify_epoch != hist.verify_epoch) {
        for (int i = 0; i < 8; ++i) {
          if (holder[i] == 0) hist.residue[i] = 0;
        }
        hist.verify_epoch = g.verify_epoch;
      }
      for (int i = 0; i < 8; ++i) {
        if (holder[i] == 0) continue;
        if (hist.residue[i] != 0 && hist.residue[i] != holder[i]) {
          out.push_back({"invariant 3",
                         StrCat("memory slice ", i, " of GPU ", gi, " of node ", node.spec.name,
                                " went from tenant ", hist.residue[i], " to tenant ", holder[i],
                                " without a passed verification")});
        }
        hist.residue[i] = holder[i];
      }
    }
  }
}

namespace {
// Placement-time rules for a job that newly appears on `node`: its node selector and its
// tolerations of the node's taints. Empty when both hold.
std::string PlacementRuleBroken(const JobRecord& j, const NodeState& node) {
  for (const auto& sel : j.spec.node_selector) {
    if (std::find(node.spec.labels.begin(), node.spec.labels.end(), sel) ==
        node.spec.labels.end()) {
      return StrCat(JobName(j), " was newly placed on ", node.spec.name, " without label ",
                    sel.first, "=", sel.second);
    }
  }
  for (const Taint& taint : node.spec.taints) {
    bool ok = false;
    for (const Toleration& tol : j.spec.tolerations) {
      ok = ok || (tol.key == taint.key && (tol.value.empty() || tol.value == taint.value));
    }
    if (!ok) {
      return StrCat(JobName(j), " was newly placed on ", node.spec.name,
                    " without tolerating taint ", taint.key);
    }
  }
  return "";
}

// Each tenant's usage recomputed from its jobs' placements (never the recorded one).
std::vector<Resources> RecomputedUsage(const ClusterState& st) {
  std::vector<Resources> usage(st.tenants.size());
  for (const auto& [id, j] : st.jobs) {
    if (!Active(j) || j.tenant < 1 || j.tenant > st.tenants.size() || j.node >= st.nodes.size()) {
      continue;
    }
    usage[j.tenant - 1] += Recompute(j, st.nodes[j.node]);
  }
  return usage;
}
}  // namespace

std::vector<Violation> InvariantChecker::Check(const ClusterState& st) {
  std::vector<Violation> out = CheckClusterState(st);
  for (NodeId n = 0; n < st.nodes.size(); ++n) GpuHistoryOf(st, n, out);
  absl::flat_hash_map<JobId, NodeId> now;
  absl::flat_hash_set<TenantId> gained;  // tenants with a job newly placed since the last check
  for (const auto& [id, j] : st.jobs) {
    if (!Active(j)) continue;
    now.emplace(id, j.node);
    auto before = placed_.find(id);
    if ((before == placed_.end() || before->second != j.node) && j.node < st.nodes.size()) {
      const NodeState& node = st.nodes[j.node];
      gained.insert(j.tenant);
      if (std::string why = PlacementRuleBroken(j, node); !why.empty()) {
        out.push_back({"state", std::move(why)});
      }
      if (!node.Schedulable()) {
        out.push_back({"invariant 5",
                       StrCat(JobName(j), " was newly placed on node ", node.spec.name,
                              " which is ", node.removed ? "removed" : !node.reachable ? "unreachable"
                                                       : node.cordoned ? "cordoned"
                                                                       : "failing patch policy")});
      }
    }
  }
  // Invariant 4: a tenant that gained a placement is within its quota afterwards (usage only
  // shrinks otherwise, so a quota lowered under running jobs is no violation until then).
  if (!gained.empty()) {
    const std::vector<Resources> usage = RecomputedUsage(st);
    for (TenantId t : gained) {
      if (t < 1 || t > st.tenants.size()) continue;
      const TenantState& ts = st.tenants[t - 1];
      if (std::string ex = usage[t - 1].FirstExcess(ts.spec.quota); !ex.empty()) {
        out.push_back({"invariant 4", StrCat("tenant ", ts.spec.name,
                                             " gained a placement and is over quota: ", ex)});
      }
    }
  }
  placed_ = std::move(now);
  return out;
}

std::string FormatViolations(const std::vector<Violation>& violations) {
  std::string out;
  for (const Violation& v : violations) out += StrCat("  [", v.rule, "] ", v.detail, "\n");
  return out;
}

}  // namespace warden::sched
