// Property test: long random sequences of operations (submit, cancel, finish, schedule, node
// loss and return, removal and addition, cordon, drain, patch policy, tenant policy, quota and
// weight changes, pool re-dedication, MIG re-partition, GPU verification) with the stateful
// invariant checker after every single one: zero violations allowed. MIG instances are modelled
// end to end: after every operation each GPU's planned instances are carried out on a simulated
// GPU (gpu::SimGpuBackend, NVIDIA's rules) the way the agent does it (destroy what is no longer
// planned, then CreateMigInstanceAt at the planned start), and every create must succeed and
// the GPU must then hold exactly the planned instances. The unit label runs
// 100,000 operations with one seed; the slow label four more seeds (SCHED_PROPERTY_OPS overrides
// the count).
#include <algorithm>
#include <cstdlib>
#include <deque>
#include <random>

#include <map>

#include "common/strings.h"
#include "gpu/gpu.h"
#include "sched_test_util.h"

namespace warden::sched {
namespace {

using namespace testing;
using common::StrCat;

struct Stats {
  size_t placements = 0, mig_placements = 0, fraction_placements = 0, gang_placements = 0;
  size_t requeues = 0, refused_submits = 0, mig_changes = 0, ops = 0;
  size_t instances_created = 0, instances_destroyed = 0;
};

class RandomCluster {
 public:
  explicit RandomCluster(uint64_t seed) : rng_(seed) {
    Scheduler::Options o;
    o.self_check = false;  // the test runs the (stateful) checker itself after every operation
    o.probe_limit = 4;     // small, so that the probe bound is exercised too
    s_ = std::move(Scheduler::Create(o).value());
    const Isolation policies[] = {Isolation::kShared, Isolation::kShared, Isolation::kMig,
                                  Isolation::kExclusive, Isolation::kDedicated};
    for (int t = 0; t < 5; ++t) {
      TenantSpec spec = Tenant(StrCat("t", t), policies[t], 1.0 + t % 3);
      tenants_.push_back(s_->AddTenant(spec).value());
    }
    s_->AddPool({"general", {}}).value();
    s_->AddPool({"vault", {tenants_[4]}}).value();     // the dedicated tenant's
    s_->AddPool({"team", {tenants_[2], tenants_[3]}}).value();
    for (int i = 0; i < 10; ++i) AddRandomNode();
  }

  Stats Run(int ops) {
    Stats st;
    InvariantChecker checker;
    for (int i = 0; i < ops; ++i) {
      std::string what = Step(st);
      log_.push_back(what);
      if (log_.size() > 20) log_.pop_front();
      auto v = checker.Check(s_->state());
      if (std::string e = MirrorMig(st); !e.empty()) {
        std::string tail;
        for (const auto& l : log_) tail += "  " + l + "\n";
        ADD_FAILURE() << "MIG execution after operation " << i << ": " << e << "\nlast operations:\n"
                      << tail;
        break;
      }
      if (!v.empty()) {
        std::string tail;
        for (const auto& l : log_) tail += "  " + l + "\n";
        ADD_FAILURE() << "violation after operation " << i << ":\n"
                      << FormatViolations(v) << "last operations:\n"
                      << tail;
        break;
      }
      ++st.ops;
    }
    return st;
  }

 private:
  // The agent's side of MIG, per GPU: a simulated GPU of the same model that holds the planned
  // instances. Returns "" or what went wrong.
  struct MirrorGpu {
    std::unique_ptr<gpu::SimGpuBackend> backend;
    std::string uuid;
    std::vector<gpu::MigInstance> planned;                  // as last carried out
    std::map<std::pair<int, int>, std::string> instances;  // (profile, start) -> MIG UUID
  };
  std::string MirrorMig(Stats& st) {
    const ClusterState& cs = s_->state();
    for (size_t n = 0; n < cs.nodes.size(); ++n) {
      const NodeState& node = cs.nodes[n];
      for (size_t g = 0; g < node.gpus.size(); ++g) {
        const GpuState& gs = node.gpus[g];
        std::vector<gpu::MigInstance> planned;
        if (!node.removed) {
          for (const MigSlot& slot : gs.instances) planned.push_back(slot.instance);
        }
        std::sort(planned.begin(), planned.end(), [](const auto& a, const auto& b) {
          return a.start < b.start;
        });
        auto key = std::make_pair(n, g);
        auto it = mirror_.find(key);
        if (it == mirror_.end()) {
          if (planned.empty()) continue;
          MirrorGpu m;
          auto b = gpu::SimGpuBackend::Create(StrCat("1x", gs.model->name, ":mig"),
                                              {.seed = StrCat("n", n, "g", g)});
          if (!b.ok()) return std::string(b.status().message());
          m.backend = std::move(*b);
          m.uuid = (*m.backend->Discover())[0].uuid;
          it = mirror_.emplace(key, std::move(m)).first;
        }
        MirrorGpu& m = it->second;
        if (m.planned == planned) continue;
        // 1. Destroy what is no longer planned (the job ended, was cancelled or requeued).
        for (auto i = m.instances.begin(); i != m.instances.end();) {
          const bool keep = std::any_of(planned.begin(), planned.end(), [&](const auto& p) {
            return p.profile_id == i->first.first && p.start == i->first.second;
          });
          if (keep) {
            ++i;
            continue;
          }
          if (absl::Status s = m.backend->DestroyMigInstance(m.uuid, i->second); !s.ok()) {
            return StrCat("node ", n, " gpu ", g, ": destroy failed: ", s.message());
          }
          ++st.instances_destroyed;
          i = m.instances.erase(i);
        }
        // 2. Create what is newly planned, exactly where it was planned.
        for (const gpu::MigInstance& p : planned) {
          if (m.instances.count({p.profile_id, p.start})) continue;
          auto inst = m.backend->CreateMigInstanceAt(m.uuid, p.profile_id, p.start);
          if (!inst.ok()) {
            return StrCat("node ", n, " gpu ", g, ": the planned instance ", p.profile_id, "@",
                          p.start, " cannot be created: ", inst.status().message());
          }
          ++st.instances_created;
          m.instances[{p.profile_id, p.start}] = inst->uuid;
        }
        // 3. The GPU holds exactly the plan.
        auto devices = m.backend->Discover();
        std::vector<gpu::MigInstance> actual;
        for (const auto& mi : (*devices)[0].mig_instances) actual.push_back({mi.profile_id, mi.start});
        std::sort(actual.begin(), actual.end(), [](const auto& a, const auto& b) {
          return a.start < b.start;
        });
        if (actual != planned) return StrCat("node ", n, " gpu ", g, ": instances differ from the plan");
        m.planned = std::move(planned);
      }
    }
    return "";
  }

  int R(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
  bool P(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }

  void AddRandomNode() {
    const char* pools[] = {"general", "general", "general", "vault", "team"};
    const char* models[] = {"H100-80GB", "H100-80GB", "H200-141GB", "A100-40GB", "L40S-48GB"};
    const std::string model = models[R(5)];
    const bool mig_ok = model != "L40S-48GB";
    NodeSpec n = MakeNode(StrCat("n", next_node_++), pools[R(5)], 1 + R(8), false, model,
                          16000 + 16000 * R(4), 65536 * (1 + R(4)));
    for (auto& g : n.gpus) g.mig_enabled = mig_ok && P(0.4);
    if (P(0.3)) n.labels = {{"zone", P(0.5) ? "a" : "b"}};
    if (P(0.15)) n.taints = {{"reserved", "infer"}};
    auto id = s_->AddNode(n);
    ASSERT_TRUE(id.ok()) << id.status();
    nodes_.push_back(*id);
  }

  JobSpec RandomJob() {
    const int t = R(5);
    JobSpec s;
    s.name = StrCat("j", next_job_name_++);
    s.tenant = StrCat("t", t);
    const int kind = R(10);
    if (kind < 4) {
      s.gpu_request = GpuRequest::kWhole;
      const int sizes[] = {1, 1, 1, 2, 2, 4, 8};
      s.gpus = sizes[R(7)];
    } else if (kind < 7) {
      s.gpu_request = GpuRequest::kMig;
      const char* h100[] = {"1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb",
                            "7g.80gb"};
      const char* h200[] = {"1g.18gb", "2g.35gb", "3g.71gb"};
      s.mig_profile = P(0.8) ? h100[R(7)] : h200[R(3)];
    } else if (kind < 9) {
      s.gpu_request = GpuRequest::kFraction;
      s.gpu_millis = 100 + 100 * R(8);
    }
    s.cpu_millis = 1000 * (1 + R(8));
    s.memory_mib = 4096 * (1 + R(8));
    s.priority = R(5) - 2;
    if (P(0.2)) s.isolation = static_cast<Isolation>(R(4));  // sometimes weaker: refused
    if (P(0.1)) s.pool = P(0.5) ? "vault" : "team";          // sometimes not theirs: refused
    if (P(0.1)) s.node_selector = {{"zone", P(0.5) ? "a" : "b"}};
    if (P(0.2)) s.tolerations = {{"reserved", ""}};
    if (P(0.05) && s.gpu_request != GpuRequest::kNone) s.gpu_model = "H200-141GB";
    return s;
  }

  std::vector<JobId> JobsIn(std::initializer_list<JobState> states) {
    std::vector<JobId> out;
    for (const auto& [id, j] : s_->state().jobs) {
      for (JobState s : states) {
        if (j.state == s) out.push_back(id);
      }
    }
    std::sort(out.begin(), out.end());  // hash-map order is not deterministic across runs
    return out;
  }

  NodeId AnyNode() { return nodes_[R(static_cast<int>(nodes_.size()))]; }

  std::string Step(Stats& st) {
    // Ended jobs leave the record (as a server would archive them), and users give up on queued
    // jobs when the queue is long: both keep the per-operation check cost flat over 100k steps.
    for (JobId id : JobsIn({JobState::kDone, JobState::kFailed, JobState::kCancelled})) {
      EXPECT_TRUE(s_->Forget(id).ok());
    }
    if (s_->queued_jobs() > 120) {
      auto queued = JobsIn({JobState::kQueued});
      const JobId id = queued[R(static_cast<int>(queued.size()))];
      EXPECT_TRUE(s_->Cancel(id).ok());
      return StrCat("cancel queued ", id, " (queue too long)");
    }
    const int op = R(100);
    if (op < 30) {
      JobSpec spec = RandomJob();
      auto r = s_->Submit(spec);
      if (!r.ok()) ++st.refused_submits;
      return StrCat("submit ", JobSpecToJson(spec), " -> ", r.ok() ? "ok" : r.status().ToString());
    }
    if (op < 45) {
      // The stateless checker also runs after every single placement inside the pass.
      PassOptions po;
      po.after_placement = [&](const JobRecord& j) {
        auto v = CheckClusterState(s_->state());
        if (!v.empty()) ADD_FAILURE() << "after placing job " << j.id << ":\n" << FormatViolations(v);
      };
      auto r = s_->Schedule(po);
      st.placements += r.placed.size();
      st.mig_changes += r.mig_changes.size();
      for (JobId id : r.placed) {
        const JobRecord& j = *s_->FindJob(id);
        st.mig_placements += j.spec.gpu_request == GpuRequest::kMig;
        st.fraction_placements += j.spec.gpu_request == GpuRequest::kFraction;
        st.gang_placements += j.spec.gpu_request == GpuRequest::kWhole && j.spec.gpus > 1;
      }
      return StrCat("schedule -> ", r.placed.size(), " placed");
    }
    if (op < 58) {
      auto active = JobsIn({JobState::kPlaced, JobState::kRunning});
      if (active.empty()) return "finish (none)";
      const JobId id = active[R(static_cast<int>(active.size()))];
      (void)s_->Finish(id, P(0.9));
      return StrCat("finish ", id);
    }
    if (op < 63) {
      auto placed = JobsIn({JobState::kPlaced});
      if (placed.empty()) return "run (none)";
      const JobId id = placed[R(static_cast<int>(placed.size()))];
      (void)s_->MarkRunning(id);
      return StrCat("running ", id);
    }
    if (op < 68) {
      auto any = JobsIn({JobState::kQueued, JobState::kPlaced, JobState::kRunning});
      if (any.empty()) return "cancel (none)";
      const JobId id = any[R(static_cast<int>(any.size()))];
      (void)s_->Cancel(id);
      return StrCat("cancel ", id);
    }
    if (op < 80) {
      // Verification reports: mostly passes.
      const NodeId n = AnyNode();
      const auto& node = s_->state().nodes[n];
      if (node.removed || node.gpus.empty()) return "verify (none)";
      const int g = R(static_cast<int>(node.gpus.size()));
      const bool pass = P(0.95);
      (void)s_->ReportGpuVerification(n, g, pass);
      return StrCat("verify node ", n, " gpu ", g, pass ? " passed" : " failed");
    }
    const size_t queued_before = s_->queued_jobs();
    std::string what;
    if (op < 83) {
      const NodeId n = AnyNode();
      const bool up = P(0.5);
      (void)s_->SetNodeReachable(n, up);
      what = StrCat("node ", n, up ? " reachable" : " lost");
    } else if (op < 86) {
      const NodeId n = AnyNode();
      const int c = R(3);
      if (c == 0) (void)s_->Cordon(n);
      if (c == 1) (void)s_->Uncordon(n);
      if (c == 2) (void)s_->Drain(n);
      what = StrCat(c == 0 ? "cordon " : c == 1 ? "uncordon " : "drain ", n);
    } else if (op < 87) {
      const NodeId n = AnyNode();
      const bool ok = P(0.7);
      (void)s_->SetPatchCompliant(n, ok);
      what = StrCat("patch-compliant ", n, " ", ok);
    } else if (op < 88) {
      // Live label/taint/pool change (`node label|taint`); "reserved" is NoSchedule (jobs stay),
      // "fault" NoExecute (jobs that do not tolerate it are requeued).
      const NodeId n = AnyNode();
      const auto& node = s_->state().nodes[n];
      if (node.removed) return "meta (none)";
      std::vector<std::pair<std::string, std::string>> labels;
      if (P(0.4)) labels = {{"zone", P(0.5) ? "a" : "b"}};
      std::vector<Taint> taints, evict;
      if (P(0.2)) taints.push_back({"fault", ""});
      if (P(0.3)) taints.push_back({"reserved", "infer"});
      if (!taints.empty() && taints[0].key == "fault") evict.push_back(taints[0]);
      const auto& pools = s_->state().pools;
      std::string pool = P(0.8) ? node.spec.pool
                                : pools[static_cast<size_t>(R(static_cast<int>(pools.size())))].spec.name;
      (void)s_->UpdateNodeMeta(n, pool, labels, taints, evict);
      what = StrCat("meta node ", n, " pool ", pool, " labels ", labels.size(), " taints ",
                    taints.size());
    } else if (op < 91) {
      const TenantId t = tenants_[R(5)];
      const Isolation p = static_cast<Isolation>(R(4));
      (void)s_->SetTenantPolicy(t, p);
      what = StrCat("policy t", t, " ", IsolationName(p));
    } else if (op < 94) {
      const TenantId t = tenants_[R(5)];
      Resources q = Resources::Unlimited();
      if (P(0.7)) q.gpu_millis = 1000 * R(12);
      if (P(0.5)) q.mig_slices = R(15);
      if (P(0.3)) q.gpu_memory_mib = 81920LL * R(6);
      if (P(0.3)) q.cpu_millis = 8000LL * R(8);
      if (P(0.3)) q.memory_mib = 32768LL * R(8);
      if (P(0.3)) q.running_jobs = R(8);
      (void)s_->SetTenantQuota(t, q);
      what = StrCat("quota t", t);
    } else if (op < 95) {
      const TenantId t = tenants_[R(5)];
      (void)s_->SetTenantWeight(t, 0.5 + R(4));
      what = StrCat("weight t", t);
    } else if (op < 98) {
      const NodeId n = AnyNode();
      const auto& node = s_->state().nodes[n];
      if (node.removed || node.gpus.empty()) return "mig (none)";
      const int g = R(static_cast<int>(node.gpus.size()));
      const bool on = P(0.5);
      auto r = s_->SetMigMode(n, g, on);
      what = StrCat("mig node ", n, " gpu ", g, on ? " on -> " : " off -> ", r.ToString());
    } else if (op < 99) {
      if (P(0.5) && nodes_.size() > 4) {
        const size_t i = static_cast<size_t>(R(static_cast<int>(nodes_.size())));
        (void)s_->RemoveNode(nodes_[i]);
        what = StrCat("remove node ", nodes_[i]);
        nodes_.erase(nodes_.begin() + static_cast<long>(i));
      } else {
        AddRandomNode();
        what = "add node";
      }
    } else {
      const int pick = R(3);
      std::vector<TenantId> d;
      if (pick == 1) d = {tenants_[4]};
      if (pick == 2) d = {tenants_[R(5)], tenants_[R(5)]};
      (void)s_->SetPoolDedication(static_cast<PoolId>(1 + R(2)), d);
      what = StrCat("rededicate -> ", d.size(), " tenants");
    }
    if (s_->queued_jobs() > queued_before) st.requeues += s_->queued_jobs() - queued_before;
    return what;
  }

  std::mt19937_64 rng_;
  std::unique_ptr<Scheduler> s_;
  std::vector<TenantId> tenants_;
  std::vector<NodeId> nodes_;
  int next_node_ = 0;
  int next_job_name_ = 0;
  std::deque<std::string> log_;
  std::map<std::pair<size_t, size_t>, MirrorGpu> mirror_;
};

int OpsFromEnv(int def) {
  const char* v = std::getenv("SCHED_PROPERTY_OPS");
  return v ? std::atoi(v) : def;
}

void RunAndExpectWork(uint64_t seed, int ops) {
  RandomCluster c(seed);
  const Stats st = c.Run(ops);
  EXPECT_EQ(st.ops, static_cast<size_t>(ops));
  // The run must have exercised what it claims to test.
  EXPECT_GT(st.placements, static_cast<size_t>(ops / 50));
  EXPECT_GT(st.mig_placements, static_cast<size_t>(ops / 500));
  EXPECT_GT(st.fraction_placements, static_cast<size_t>(ops / 1000));
  EXPECT_GT(st.gang_placements, static_cast<size_t>(ops / 1000));
  EXPECT_GT(st.requeues, 0u);
  EXPECT_GT(st.refused_submits, 0u);
  EXPECT_GT(st.mig_changes, 0u);
  EXPECT_GT(st.instances_created, static_cast<size_t>(ops / 500));
  EXPECT_GT(st.instances_destroyed, static_cast<size_t>(ops / 1000));
  std::printf("seed %llu: %zu MIG instances created and %zu destroyed on simulated GPUs\n",
              static_cast<unsigned long long>(seed), st.instances_created, st.instances_destroyed);
  std::printf("seed %llu: %zu ops, %zu placements (%zu MIG, %zu fractions, %zu gangs), %zu "
              "requeued, %zu refused submits, %zu MIG mode changes\n",
              static_cast<unsigned long long>(seed), st.ops, st.placements, st.mig_placements,
              st.fraction_placements, st.gang_placements, st.requeues, st.refused_submits,
              st.mig_changes);
}

#ifndef SCHED_PROPERTY_SLOW
// About 15 s of CPU in a release build: cheap enough for the unit label.
TEST(SchedPropertyTest, HundredThousandRandomOperationsKeepEveryInvariant) {
  RunAndExpectWork(1, OpsFromEnv(100000));
}
#else
// More seeds under the slow label.
TEST(SchedPropertySlowTest, HundredThousandRandomOperationsManySeeds) {
  for (uint64_t seed : {2, 3, 4, 5}) RunAndExpectWork(seed, OpsFromEnv(100000));
}
#endif

}  // namespace
}  // namespace warden::sched
