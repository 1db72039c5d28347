// Authorizer benchmark over a generated model: 10k users, 1k custom roles (random permission
// subsets) plus the built-ins, 50 tenants, cluster and tenant bindings, deterministic seed.
//
//   rbac_bench [--export_model=PATH] [google benchmark flags]
//
// --export_model writes the model and the request mix (with the decisions this authorizer made) as
// JSON, so bench/rbac/cedar_bench.mjs replays the very same data through Cedar and checks that
// both agree. After the Google Benchmark runs, a separate loop times single decisions with a
// steady clock and prints the latency percentiles (RBAC_LATENCY line, read by run.sh).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "rbac/rbac.h"

namespace warden::rbac {
namespace {

constexpr uint64_t kSeed = 0x6770757761726465;  // "gpuwarde"
constexpr int kUsers = 10000, kRoles = 1000, kTenants = 50, kRequests = 1 << 16;

// SplitMix64: tiny, and its output is the same on every platform and standard library (unlike
// std::uniform_int_distribution), so the model is identical wherever the bench runs.
struct SplitMix {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }
  uint32_t Below(uint32_t n) { return static_cast<uint32_t>(Next() % n); }
  bool Chance(uint32_t percent) { return Below(100) < percent; }
};

std::string Num(const char* prefix, int i, int width) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s-%0*d", prefix, width, i);
  return buf;
}

struct Request {
  std::string subject;
  std::string tenant;  // "" = cluster-level operation
  Permission perm{Resource::kTenants, Verb::kRead};
  bool allow = false;
};

struct Model {
  std::vector<std::string> tenants;
  std::vector<RoleDef> roles;
  std::vector<BindingDef> bindings;
  std::vector<Request> requests;
  std::shared_ptr<const Policy> policy;
};

Model Generate() {
  SplitMix rng{kSeed};
  Model m;
  for (int t = 0; t < kTenants; ++t) m.tenants.push_back(Num("tenant", t, 3));
  for (int r = 0; r < kRoles; ++r) {
    RoleDef role{Num("role", r, 4), Num("custom", r, 4), "", {}};
    if (rng.Chance(30)) role.tenant_id = m.tenants[rng.Below(kTenants)];
    uint32_t density = 5 + rng.Below(36);  // 5..40 % of the 80 permissions
    for (int i = 0; i < kNumPermissions; ++i) {
      if (rng.Chance(density)) role.permissions.push_back(Permission::FromIndex(i).ToString());
    }
    m.roles.push_back(std::move(role));
  }
  const std::vector<std::string> builtin_tenant = {"tenant-admin", "developer", "developer",
                                                   "developer", "auditor", "viewer"};
  std::vector<uint32_t> home(kUsers);
  for (int u = 0; u < kUsers; ++u) {
    std::string user = Num("user", u, 5);
    home[u] = rng.Below(kTenants);
    int n = 1 + static_cast<int>(rng.Below(3));
    for (int b = 0; b < n; ++b) {
      if (rng.Chance(5)) {  // cluster scope: operators, auditors, cluster-wide custom roles
        uint32_t k = rng.Below(10);
        std::string role = k == 0 ? "admin" : k < 4 ? "auditor" : k < 6 ? "viewer" : "";
        while (role.empty()) {
          const RoleDef& r = m.roles[rng.Below(kRoles)];
          if (r.tenant_id.empty()) role = r.id;
        }
        m.bindings.push_back({"user", user, role, ""});
        continue;
      }
      std::string tenant = m.tenants[rng.Chance(80) ? home[u] : rng.Below(kTenants)];
      if (rng.Chance(40)) {
        m.bindings.push_back({"user", user, builtin_tenant[rng.Below(6)], tenant});
      } else {
        const RoleDef& r = m.roles[rng.Below(kRoles)];
        m.bindings.push_back({"user", user, r.id, r.tenant_id.empty() ? tenant : r.tenant_id});
      }
    }
  }
  auto compiled = Compile(m.roles, m.bindings);
  if (!compiled.ok()) {
    std::fprintf(stderr, "compile: %s\n", std::string(compiled.status().message()).c_str());
    std::exit(1);
  }
  m.policy = *compiled;
  for (int i = 0; i < kRequests; ++i) {
    Request q;
    uint32_t u = rng.Below(kUsers);
    q.subject = rng.Chance(1) ? Num("ghost", static_cast<int>(u), 5) : Num("user", u, 5);
    uint32_t k = rng.Below(100);
    q.tenant = k < 10 ? "" : k < 13 ? "tenant-unknown" : k < 73 ? m.tenants[home[u]]
                                                                 : m.tenants[rng.Below(kTenants)];
    q.perm = Permission::FromIndex(static_cast<int>(rng.Below(kNumPermissions)));
    TenantRef t = q.tenant.empty() ? TenantRef::Cluster() : m.policy->TenantIndex(q.tenant);
    q.allow = m.policy->GrantsFor(SubjectKind::kUser, q.subject).Allows(q.perm, t);
    m.requests.push_back(std::move(q));
  }
  return m;
}

const Model& TheModel() {
  static const Model* m = new Model(Generate());
  return *m;
}

// One whole decision as a request handler makes it, from strings: resolve the tenant and the
// caller's grants (hash lookups), then the bit test. This is what Cedar's isAuthorized is
// compared against.
inline bool Decide(const Policy& policy, const Request& q) {
  TenantRef t = q.tenant.empty() ? TenantRef::Cluster() : policy.TenantIndex(q.tenant);
  return policy.GrantsFor(SubjectKind::kUser, q.subject).Allows(q.perm, t);
}

void BM_Decision(benchmark::State& state) {
  const Model& m = TheModel();
  size_t i = 0, allowed = 0;
  for (auto _ : state) {
    allowed += Decide(*m.policy, m.requests[i]);
    i = (i + 1) & (kRequests - 1);
  }
  benchmark::DoNotOptimize(allowed);
  state.SetItemsProcessed(state.iterations());
}
// Wall-clock rate, like the Cedar script measures.
BENCHMARK(BM_Decision)->UseRealTime();

// The per-check cost once grants and tenant are resolved (a handler that checks several
// permissions pays the lookups once).
void BM_AllowsResolved(benchmark::State& state) {
  const Model& m = TheModel();
  struct Resolved {
    Grants g;
    TenantRef t;
    Permission p;
  };
  std::vector<Resolved> rs;
  for (const Request& q : m.requests) {
    rs.push_back({m.policy->GrantsFor(SubjectKind::kUser, q.subject),
                  q.tenant.empty() ? TenantRef::Cluster() : m.policy->TenantIndex(q.tenant),
                  q.perm});
  }
  size_t i = 0, allowed = 0;
  for (auto _ : state) {
    allowed += rs[i].g.Allows(rs[i].p, rs[i].t);
    i = (i + 1) & (kRequests - 1);
  }
  benchmark::DoNotOptimize(allowed);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AllowsResolved);

void BM_Compile(benchmark::State& state) {
  const Model& m = TheModel();
  for (auto _ : state) {
    auto p = Compile(m.roles, m.bindings);
    benchmark::DoNotOptimize(p);
  }
}
BENCHMARK(BM_Compile)->Unit(benchmark::kMillisecond);

bool ExportModel(const Model& m, const std::string& path) {
  nlohmann::json j;
  j["seed"] = kSeed;
  j["tenants"] = m.tenants;
  nlohmann::json roles = nlohmann::json::array();
  auto add_role = [&](const RoleDef& r) {
    auto perms = ParsePermissionSet(r.permissions);  // expanded: Cedar gets no wildcards
    roles.push_back({{"id", r.id}, {"tenant", r.tenant_id}, {"perms", perms->ToStrings()}});
  };
  for (const RoleDef& r : BuiltinRoles()) add_role(r);
  for (const RoleDef& r : m.roles) add_role(r);
  j["roles"] = std::move(roles);
  nlohmann::json bindings = nlohmann::json::array();
  for (const BindingDef& b : m.bindings) {
    bindings.push_back({{"kind", b.subject_kind}, {"subject", b.subject_id}, {"role", b.role_id},
                        {"scope", b.scope_tenant_id}});
  }
  j["bindings"] = std::move(bindings);
  nlohmann::json requests = nlohmann::json::array();
  for (const Request& q : m.requests) {
    requests.push_back(
        {{"s", q.subject}, {"t", q.tenant}, {"p", q.perm.ToString()}, {"allow", q.allow}});
  }
  j["requests"] = std::move(requests);
  std::ofstream out(path);
  out << j.dump();
  return static_cast<bool>(out);
}

// Times every decision on its own (clock reads included, so the figures are an upper bound),
// plus batches of 32 for the amortised view.
void PrintLatency(const Model& m) {
  using Clock = std::chrono::steady_clock;
  constexpr int kPasses = 8;
  std::vector<int64_t> single;
  single.reserve(static_cast<size_t>(kPasses) * kRequests);
  size_t allowed = 0;
  for (int pass = 0; pass < kPasses; ++pass) {
    for (const Request& q : m.requests) {
      auto t0 = Clock::now();
      allowed += Decide(*m.policy, q);
      auto t1 = Clock::now();
      single.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    }
  }
  std::vector<int64_t> empty;
  for (int i = 0; i < 100000; ++i) {
    auto t0 = Clock::now();
    auto t1 = Clock::now();
    empty.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
  }
  std::vector<double> batch;
  for (int pass = 0; pass < kPasses; ++pass) {
    for (int i = 0; i < kRequests; i += 32) {
      auto t0 = Clock::now();
      for (int k = 0; k < 32; ++k) allowed += Decide(*m.policy, m.requests[i + k]);
      auto t1 = Clock::now();
      batch.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / 32);
    }
  }
  benchmark::DoNotOptimize(allowed);
  auto pct = [](auto v, double q) {
    std::sort(v.begin(), v.end());
    return static_cast<double>(v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))]);
  };
  std::printf(
      "RBAC_LATENCY samples=%zu p50_ns=%.0f p99_ns=%.0f p999_ns=%.0f max_ns=%.0f "
      "clock_overhead_p50_ns=%.0f batch32_p99_ns=%.1f\n",
      single.size(), pct(single, 0.50), pct(single, 0.99), pct(single, 0.999), pct(single, 1.0),
      pct(empty, 0.50), pct(batch, 0.99));
  size_t allow_count = 0;
  for (const Request& q : m.requests) allow_count += q.allow;
  std::printf("RBAC_MODEL users=%d roles=%d(+%zu built-in) tenants=%d bindings=%zu requests=%d "
              "allowed=%zu\n",
              kUsers, kRoles, BuiltinRoles().size(), kTenants, m.bindings.size(), kRequests,
              allow_count);
}

}  // namespace
}  // namespace warden::rbac

int main(int argc, char** argv) {
  std::string export_path;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    constexpr const char kFlag[] = "--export_model=";
    if (std::strncmp(argv[i], kFlag, sizeof kFlag - 1) == 0) {
      export_path = argv[i] + sizeof kFlag - 1;
    } else {
      args.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  const auto& model = warden::rbac::TheModel();
  if (!export_path.empty() && !warden::rbac::ExportModel(model, export_path)) {
    std::fprintf(stderr, "cannot write %s\n", export_path.c_str());
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  warden::rbac::PrintLatency(model);
  return 0;
}
