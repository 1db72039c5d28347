// `gpuwarden tenant policy get|set` (tenant_policy_cmd.cc): a tenant's isolation policy and quota
// over /api/v1/tenants/{tenant}/policy. Registered under cli.cc's `tenant` command; requests go
// through the same context as the job verbs (job_cmd.h).
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "cli/job_cmd.h"

namespace warden::cli {

struct TenantPolicyCommands {
  struct State {
    std::string tenant, isolation;
    // -1: keep the current value; --clear-quota makes every field unlimited first.
    int64_t gpus = -1, gpu_millis = -1, gpu_memory_mib = -1, mig_slices = -1, cpu_millis = -1,
            memory_mib = -1, jobs = -1;
    bool clear_quota = false;
  };
  std::shared_ptr<State> state;
  CLI::App *get = nullptr, *set = nullptr;
  bool Parsed() const;
};

TenantPolicyCommands AddTenantPolicyCommands(CLI::App& tenant);
void RunTenantPolicyCommand(const TenantPolicyCommands& commands, const JobCommandContext& ctx);

}  // namespace warden::cli
