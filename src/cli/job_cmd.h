// `gpuwarden job ...` verbs (job_cmd.cc), registered on the CLI's App by cli.cc, which hands in
// how to send a request and how to fail (as for node_cmd.h).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/json.h"

namespace warden::cli {

struct JobCommandContext {
  std::function<common::Json(const std::string& method, const std::string& path,
                             const common::Json& body)>
      request;
  std::function<void(const std::string& message, int code)> fail;  // does not return
  std::string output;          // "table" or "json"
  std::string default_tenant;  // the logged-in user's tenant
};

struct JobCommands {
  struct State {
    std::string tenant, id, file, name, mig, image = "host", state, grace = "10s", isolation,
        pool, gpu_model, time_limit;
    int gpus = 0, priority = 0, tail = 0;
    double fraction = 0;
    int64_t cpu_millis = 0, memory_mib = 0;
    bool follow = false, stderr_stream = false;
    std::vector<std::string> env, command, datasets, write_datasets;
  };
  std::shared_ptr<State> state;
  CLI::App* job = nullptr;
  CLI::App *submit = nullptr, *ls = nullptr, *show = nullptr, *cancel = nullptr, *logs = nullptr;
  bool Parsed() const;
};

JobCommands AddJobCommands(CLI::App& app);
void RunJobCommand(const JobCommands& commands, const JobCommandContext& ctx);

}  // namespace warden::cli
