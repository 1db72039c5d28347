// The simulator: generated cluster and jobs, the real Scheduler, timings and the checker.
#include "sched/sim.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <queue>
#include <random>

#include "common/strings.h"
#include "sched/checker.h"
#include "sched/scheduler.h"

namespace warden::sched {
namespace {

using common::StrCat;
using Clock = std::chrono::steady_clock;

struct SimTenant {
  const char* name;
  Isolation policy;
  double weight;
  int share_percent;  // of submitted jobs
};

// Eight tenants, every policy; t7 ("bank") is dedicated to the vault pool.
constexpr SimTenant kTenants[] = {
    {"t0-shared", Isolation::kShared, 1, 15},  {"t1-shared", Isolation::kShared, 1, 15},
    {"t2-mig", Isolation::kMig, 2, 15},        {"t3-mig", Isolation::kMig, 1, 10},
    {"t4-mig", Isolation::kMig, 1, 10},        {"t5-excl", Isolation::kExclusive, 2, 15},
    {"t6-excl", Isolation::kExclusive, 1, 10}, {"bank", Isolation::kDedicated, 1, 10},
};

class Generator {
 public:
  explicit Generator(uint64_t seed) : rng_(seed) {}
  int R(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
  double U() { return std::uniform_real_distribution<double>(0, 1)(rng_); }

  JobSpec Job(int64_t index, int gpus_per_node) {
    JobSpec s;
    s.name = StrCat("job-", index);
    int pick = R(100), t = 0;
    while (pick >= kTenants[t].share_percent) pick -= kTenants[t++].share_percent;
    const SimTenant& tenant = kTenants[t];
    s.tenant = tenant.name;
    const double kind = U();
    const bool shared = tenant.policy == Isolation::kShared;
    if (kind < 0.45) {
      s.gpu_request = GpuRequest::kWhole;
      const double size = U();
      s.gpus = size < 0.40 ? 1 : size < 0.65 ? 2 : size < 0.85 ? 4 : 8;
      s.gpus = std::min(s.gpus, gpus_per_node);
      s.cpu_millis = s.gpus * (4000 + 1000 * R(9));
      s.memory_mib = s.gpus * 1024LL * (32 + 16 * R(7));
    } else if (kind < 0.75 || (kind < 0.90 && !shared)) {
      s.gpu_request = GpuRequest::kMig;
      const double p = U();
      s.mig_profile = p < 0.35 ? "1g.10gb"
                      : p < 0.60 ? "2g.20gb"
                      : p < 0.80 ? "3g.40gb"
                      : p < 0.90 ? "1g.20gb"
                      : p < 0.95 ? "4g.40gb"
                                 : "7g.80gb";
      s.cpu_millis = 1000 * (1 + R(4));
      s.memory_mib = 1024LL * (8 + 8 * R(4));
    } else if (kind < 0.90) {
      s.gpu_request = GpuRequest::kFraction;
      const int millis[] = {100, 250, 250, 500, 500, 750};
      s.gpu_millis = millis[R(6)];
      s.cpu_millis = 1000 * (1 + R(2));
      s.memory_mib = 1024LL * (4 + 4 * R(4));
    } else {
      s.cpu_millis = 1000 * (1 + R(8));
      s.memory_mib = 1024LL * (4 + 4 * R(8));
    }
    s.priority = R(5) - 2;
    if (U() < 0.10) s.node_selector = {{"zone", R(2) ? "a" : "b"}};
    if (t == 7) s.tolerations = {{"dedicated", "bank"}};
    return s;
  }

  // Seconds, exponential with a one-hour mean.
  double Duration() { return std::exponential_distribution<double>(1.0 / 3600)(rng_); }

 private:
  std::mt19937_64 rng_;
};

int64_t Percentile(std::vector<int64_t>& v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

// Held GPU capacity (whole = 1, fraction = its share, MIG = compute slices / 7) and the free
// capacity that sits on partially used GPUs (fragmented: only small requests can use it).
void Utilisation(const ClusterState& st, double& used, double& total, double& stranded) {
  used = total = stranded = 0;
  for (const NodeState& n : st.nodes) {
    if (n.removed) continue;
    for (const GpuState& g : n.gpus) {
      double u = 0;
      if (g.whole_job) u = 1;
      for (const auto& s : g.shares) u += s.second / 1000.0;
      for (const MigSlot& s : g.instances) {
        if (const gpu::MigProfile* p = g.model->FindProfile(s.instance.profile_id)) {
          u += p->compute_slices / 7.0;
        }
      }
      used += u;
      total += 1;
      if (u > 0 && u < 1) stranded += 1 - u;
    }
  }
}

bool ParseInt(const char* text, int64_t lo, int64_t hi, int64_t& out) {
  const char* end = text + std::strlen(text);
  auto [p, ec] = std::from_chars(text, end, out);
  return ec == std::errc() && p == end && out >= lo && out <= hi;
}

}  // namespace

absl::StatusOr<SimReport> RunSimulation(const SimOptions& o) {
  if (o.nodes < 1 || o.nodes > 100000) return absl::InvalidArgumentError("--nodes must be 1..100000");
  if (o.gpus_per_node < 1 || o.gpus_per_node > 16) {
    return absl::InvalidArgumentError("--gpus-per-node must be 1..16");
  }
  if (o.jobs < 0 || o.jobs > 5000000) return absl::InvalidArgumentError("--jobs must be 0..5000000");
  if (o.churn_rounds < 0 || o.churn_rounds > 10000) {
    return absl::InvalidArgumentError("--churn-rounds must be 0..10000");
  }
  Scheduler::Options so;
  so.self_check = false;  // the simulator runs the checker itself, after every pass
  auto created = Scheduler::Create(so);
  if (!created.ok()) return created.status();
  Scheduler& s = **created;
  SimReport rep;

  std::vector<TenantId> tenants;
  for (const SimTenant& t : kTenants) {
    TenantSpec spec;
    spec.name = t.name;
    spec.policy = t.policy;
    spec.weight = t.weight;
    auto id = s.AddTenant(spec);
    if (!id.ok()) return id.status();
    tenants.push_back(*id);
  }
  // t6 is capped at a tenth of the GPUs: its surplus waits for quota.
  Resources q = Resources::Unlimited();
  q.gpu_millis = std::max<int64_t>(1000, 100LL * o.nodes * o.gpus_per_node);
  if (auto st = s.SetTenantQuota(tenants[6], q); !st.ok()) return st;
  for (PoolSpec p : {PoolSpec{"general", {}}, PoolSpec{"mig", {}}, PoolSpec{"vault", {tenants[7]}}}) {
    if (auto id = s.AddPool(p); !id.ok()) return id.status();
  }
  for (int i = 0; i < o.nodes; ++i) {
    // 80% general, 10% MIG-mode, 10% vault (tainted, dedicated to the bank).
    const int slot = i % 10;
    NodeSpec n;
    n.name = StrCat("node-", i);
    n.pool = slot < 8 ? "general" : slot == 8 ? "mig" : "vault";
    n.labels = {{"zone", (i / 10) % 2 ? "b" : "a"}};
    if (slot == 9) n.taints = {{"dedicated", "bank"}};
    n.cpu_millis = 14000LL * o.gpus_per_node;
    n.memory_mib = 160LL * 1024 * o.gpus_per_node;
    for (int g = 0; g < o.gpus_per_node; ++g) {
      n.gpus.push_back({StrCat("GPU-sim-", i, "-", g), "H100-80GB", slot == 8});
    }
    if (auto id = s.AddNode(n); !id.ok()) return id.status();
  }
  rep.nodes = o.nodes;
  rep.gpus = static_cast<int64_t>(o.nodes) * o.gpus_per_node;
  rep.jobs = o.jobs;

  Generator gen(o.seed);
  std::vector<double> duration(static_cast<size_t>(o.jobs) + 1);
  for (int64_t i = 0; i < o.jobs; ++i) {
    auto id = s.Submit(gen.Job(i, o.gpus_per_node));
    if (!id.ok()) return id.status();  // generated jobs are always admissible
    duration[*id] = gen.Duration();
  }

  std::vector<int64_t> latencies;
  latencies.reserve(static_cast<size_t>(o.jobs) * 2);
  std::vector<std::vector<JobId>> on_node(static_cast<size_t>(o.nodes));
  InvariantChecker checker;
  auto record = [&](const std::vector<Violation>& v) {
    if (v.empty()) return;
    if (rep.violations == 0) rep.first_violation = StrCat("[", v[0].rule, "] ", v[0].detail);
    rep.violations += static_cast<int64_t>(v.size());
  };
  PassOptions po;
  po.latencies_ns = &latencies;
  if (o.check_each_decision) {
    po.after_placement = [&](const JobRecord& j) {
      on_node[j.node].push_back(j.id);
      record(CheckNode(s.state(), j.node, on_node[j.node]));
    };
  }
  // Running jobs by end time (simulated seconds).
  using Ending = std::pair<double, JobId>;
  std::priority_queue<Ending, std::vector<Ending>, std::greater<>> ending;
  double now = 0;
  auto after_pass = [&](const PassResult& r) {
    rep.total_placements += static_cast<int64_t>(r.placed.size());
    rep.mig_mode_changes += static_cast<int64_t>(r.mig_changes.size());
    rep.decisions += static_cast<int64_t>(r.considered);
    for (JobId id : r.placed) {
      (void)s.MarkRunning(id);
      ending.push({now + duration[id], id});
      if (!o.check_each_decision) on_node[s.FindJob(id)->node].push_back(id);
    }
    record(checker.Check(s.state()));
  };

  const Clock::time_point t0 = Clock::now();
  PassResult first = s.Schedule(po);
  const Clock::time_point t1 = Clock::now();
  rep.first_pass_placements = static_cast<int64_t>(first.placed.size());
  rep.first_pass_seconds = std::chrono::duration<double>(t1 - t0).count();
  rep.placements_per_second =
      rep.first_pass_seconds > 0 ? rep.first_pass_placements / rep.first_pass_seconds : 0;
  after_pass(first);
  double used = 0, total = 0, stranded = 0;
  Utilisation(s.state(), used, total, stranded);
  rep.gpu_utilisation = total > 0 ? used / total : 0;
  rep.fragmentation = total - used > 1e-9 ? stranded / (total - used) : 0;

  for (int round = 0; round < o.churn_rounds && !ending.empty(); ++round) {
    const size_t n = std::max<size_t>(1, ending.size() / 20);
    for (size_t i = 0; i < n && !ending.empty(); ++i) {
      auto [end, id] = ending.top();
      ending.pop();
      now = std::max(now, end);
      const JobRecord* j = s.FindJob(id);
      const NodeId node = j->node;
      std::vector<int> gpus;
      for (const GpuAssignment& a : j->gpus) gpus.push_back(a.gpu);
      if (!s.Finish(id, true).ok()) return absl::InternalError("finish failed");
      ++rep.finished;
      std::erase(on_node[node], id);
      // The agent scrubs and verifies the freed GPUs at once.
      for (int g : gpus) (void)s.ReportGpuVerification(node, g, true);
      record(checker.ObserveNode(s.state(), node));
    }
    after_pass(s.Schedule(po));
  }
  rep.still_queued = static_cast<int64_t>(s.queued_jobs());
  std::vector<int64_t> lat = latencies;
  rep.latency_p50_ns = Percentile(lat, 0.50);
  rep.latency_p99_ns = Percentile(lat, 0.99);
  rep.latency_p999_ns = Percentile(lat, 0.999);
  rep.latency_max_ns = lat.empty() ? 0 : *std::max_element(lat.begin(), lat.end());
  std::map<std::string, int64_t> reasons;
  for (const auto& [id, j] : s.state().jobs) {
    if (j.state == JobState::kQueued) ++reasons[j.reason];
  }
  int64_t best = 0;
  for (const auto& [reason, count] : reasons) {
    if (count > best) {
      best = count;
      rep.top_queue_reason = StrCat(count, " jobs: ", reason);
    }
  }
  return rep;
}

void PrintSimReport(const SimOptions& o, const SimReport& r, std::ostream& out) {
  auto us = [](int64_t ns) { return StrCat(ns / 1000, ".", (ns % 1000) / 100, " us"); };
  out << "sim: " << r.nodes << " nodes x " << o.gpus_per_node << " GPUs (" << r.gpus
      << " GPUs), " << r.jobs << " jobs, seed " << o.seed << "\n";
  out << "first pass: " << r.first_pass_placements << " placed in " << std::fixed
      << std::setprecision(3) << r.first_pass_seconds << " s\n";
  out << "placements/s: " << static_cast<int64_t>(r.placements_per_second) << "\n";
  out << "decisions: " << r.decisions << " (every pass; a decision places a job or leaves it "
      << "queued with a reason)\n";
  out << "decision latency p50: " << us(r.latency_p50_ns) << "\n";
  out << "decision latency p99: " << us(r.latency_p99_ns) << "\n";
  out << "decision latency p99.9: " << us(r.latency_p999_ns) << "\n";
  out << "decision latency max: " << us(r.latency_max_ns) << "\n";
  out << "gpu utilisation: " << std::setprecision(1) << 100 * r.gpu_utilisation << "%\n";
  out << "fragmentation: " << 100 * r.fragmentation
      << "% (free GPU capacity on partly used GPUs / all free GPU capacity)\n";
  out << "churn: " << o.churn_rounds << " rounds, " << r.finished << " jobs finished, "
      << r.total_placements << " placements in all\n";
  out << "mig mode changes: " << r.mig_mode_changes << "\n";
  out << "still queued: " << r.still_queued;
  if (!r.top_queue_reason.empty()) out << " (most common reason: " << r.top_queue_reason << ")";
  out << "\n";
  out << "violations: " << r.violations << "\n";
  if (r.violations > 0) out << "first violation: " << r.first_violation << "\n";
}

int RunSimCommand(int argc, char** argv) {
  SimOptions o;
  const char* usage =
      "usage: gpuwarden sim [--nodes N] [--gpus-per-node G] [--jobs J] [--seed S]\n"
      "                     [--churn-rounds R] [--check-each-decision]\n"
      "Runs the real scheduler against a simulated cluster and job stream and prints\n"
      "placements/s, decision latency p50/p99, GPU utilisation, fragmentation and the\n"
      "number of invariant violations found by the checker.\n";
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << usage;
      return 0;
    }
    if (a == "--check-each-decision") {
      o.check_each_decision = true;
      continue;
    }
    struct Flag {
      const char* name;
      int64_t lo, hi;
      std::function<void(int64_t)> set;
    };
    const Flag flags[] = {
        {"--nodes", 1, 100000, [&](int64_t v) { o.nodes = static_cast<int>(v); }},
        {"--gpus-per-node", 1, 16, [&](int64_t v) { o.gpus_per_node = static_cast<int>(v); }},
        {"--jobs", 0, 5000000, [&](int64_t v) { o.jobs = static_cast<int>(v); }},
        {"--seed", 0, INT64_MAX, [&](int64_t v) { o.seed = static_cast<uint64_t>(v); }},
        {"--churn-rounds", 0, 10000, [&](int64_t v) { o.churn_rounds = static_cast<int>(v); }},
    };
    bool matched = false;
    for (const Flag& f : flags) {
      if (a != f.name) continue;
      matched = true;
      int64_t v = 0;
      if (i + 1 >= argc || !ParseInt(argv[i + 1], f.lo, f.hi, v)) {
        std::cerr << "gpuwarden sim: " << f.name << " needs an integer in " << f.lo << ".."
                  << f.hi << "\n";
        return 2;
      }
      f.set(v);
      ++i;
    }
    if (!matched) {
      std::cerr << "gpuwarden sim: unknown argument " << a << "\n" << usage;
      return 2;
    }
  }
  auto rep = RunSimulation(o);
  if (!rep.ok()) {
    std::cerr << "gpuwarden sim: " << rep.status().message() << "\n";
    return 2;
  }
  PrintSimReport(o, *rep, std::cout);
  return rep->violations == 0 ? 0 : 1;
}

}  // namespace warden::sched
