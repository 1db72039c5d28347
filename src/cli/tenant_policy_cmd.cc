// `gpuwarden tenant policy get|set`: reads a tenant's policy, or changes the isolation and any
// quota field given (the others keep their current values: the CLI reads the policy first and
// sends the whole of it back, as PUT replaces it).
#include "cli/tenant_policy_cmd.h"

#include <iostream>
#include <limits>

#include "common/strings.h"

namespace warden::cli {
namespace {

using common::Json;
using common::StrCat;

constexpr const char* kFields[] = {"gpu_millis", "gpu_memory_mib", "mig_slices",
                                   "cpu_millis", "memory_mib",     "running_jobs"};

std::string Amount(const Json& quota, const char* field) {
  if (!quota.contains(field)) return "unlimited";
  const int64_t v = quota[field].get<int64_t>();
  if (std::string_view(field) == "gpu_millis" || std::string_view(field) == "cpu_millis") {
    return StrCat(v / 1000, ".", std::string(3 - std::to_string(v % 1000).size(), '0'),
                  v % 1000);
  }
  return std::to_string(v);
}

void Print(const Json& j) {
  const Json quota = j.value("quota", Json::object());
  const Json usage = j.value("usage", Json::object());
  std::cout << "tenant:     " << j.value("tenant", "") << "\n"
            << "isolation:  " << j.value("isolation", "") << "\n"
            << "resource         used / quota\n";
  const char* names[] = {"gpus", "gpu memory MiB", "MIG slices", "cpus", "memory MiB", "jobs"};
  for (size_t i = 0; i < std::size(kFields); ++i) {
    std::string used = Amount(usage, kFields[i]);
    std::cout << "  " << names[i] << std::string(15 - std::string(names[i]).size(), ' ') << used
              << " / " << Amount(quota, kFields[i]) << "\n";
  }
}

}  // namespace

bool TenantPolicyCommands::Parsed() const { return get->parsed() || set->parsed(); }

TenantPolicyCommands AddTenantPolicyCommands(CLI::App& tenant) {
  auto st = std::make_shared<TenantPolicyCommands::State>();
  TenantPolicyCommands c;
  c.state = st;
  CLI::App* policy =
      tenant.add_subcommand("policy", "a tenant's isolation policy and quota")->require_subcommand(1);
  policy->add_option("--tenant", st->tenant, "tenant (default: your own tenant)");
  c.get = policy->add_subcommand("get", "show the policy, the quota and what is in use");
  c.set = policy->add_subcommand(
      "set",
      "change the isolation and/or quota fields (others unchanged). A tenant admin may only "
      "make its own policy stricter; weakening or raising needs a cluster admin");
  c.set->add_option("--isolation", st->isolation, "dedicated | exclusive | mig | shared")
      ->check(CLI::IsMember({"dedicated", "exclusive", "mig", "shared"}));
  c.set->add_option("--quota-gpus", st->gpus, "whole GPUs (sets gpu_millis = N x 1000)")
      ->check(CLI::NonNegativeNumber);
  c.set->add_option("--quota-gpu-millis", st->gpu_millis, "GPUs in thousandths")
      ->check(CLI::NonNegativeNumber);
  c.set->add_option("--quota-gpu-memory-mib", st->gpu_memory_mib, "GPU memory in MiB")
      ->check(CLI::NonNegativeNumber);
  c.set->add_option("--quota-mig-slices", st->mig_slices, "MIG compute slices")
      ->check(CLI::NonNegativeNumber);
  c.set->add_option("--quota-cpu-millis", st->cpu_millis, "CPU in thousandths of a core")
      ->check(CLI::NonNegativeNumber);
  c.set->add_option("--quota-memory-mib", st->memory_mib, "memory in MiB")
      ->check(CLI::NonNegativeNumber);
  c.set->add_option("--quota-jobs", st->jobs, "placed + running jobs")
      ->check(CLI::NonNegativeNumber);
  c.set->add_flag("--clear-quota", st->clear_quota,
                  "start from an unlimited quota (then apply any --quota-* given)");
  return c;
}

void RunTenantPolicyCommand(const TenantPolicyCommands& c, const JobCommandContext& ctx) {
  const TenantPolicyCommands::State& s = *c.state;
  const std::string tenant = s.tenant.empty() ? ctx.default_tenant : s.tenant;
  if (tenant.empty()) ctx.fail("no tenant: you are a cluster operator; name one with --tenant", 2);
  const std::string path = StrCat("/api/v1/tenants/", tenant, "/policy");
  Json current = ctx.request("GET", path, Json());
  Json out = current;
  if (c.set->parsed()) {
    if (s.gpus >= 0 && s.gpu_millis >= 0) {
      ctx.fail("give --quota-gpus or --quota-gpu-millis, not both", 2);
    }
    if (s.gpus > std::numeric_limits<int64_t>::max() / 1000) ctx.fail("--quota-gpus is too large", 2);
    Json body{{"isolation", s.isolation.empty() ? current.value("isolation", "mig") : s.isolation},
              {"quota", s.clear_quota ? Json::object() : current.value("quota", Json::object())}};
    const int64_t values[] = {s.gpus >= 0 ? s.gpus * 1000 : s.gpu_millis,
                              s.gpu_memory_mib, s.mig_slices, s.cpu_millis, s.memory_mib, s.jobs};
    for (size_t i = 0; i < std::size(kFields); ++i) {
      if (values[i] >= 0) body["quota"][kFields[i]] = values[i];
    }
    out = ctx.request("PUT", path, body);
  }
  if (ctx.output == "json") {
    std::cout << out.dump(2) << "\n";
  } else {
    Print(out);
  }
}

}  // namespace warden::cli
