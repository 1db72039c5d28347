// `gpuwarden node ...` and `gpuwarden pool ...` verbs (node_cmd.cc), registered on the CLI's App by cli.cc. The CLI's
// session handling stays in cli.cc: it hands in how to send a request and how to fail.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/json.h"

namespace warden::cli {

struct NodeCommandContext {
  // Sends one API request as the logged-in user and returns the JSON reply; throws the CLI's
  // error (printed by cli.cc) on any failure.
  std::function<common::Json(const std::string& method, const std::string& path,
                             const common::Json& body)>
      request;
  std::function<void(const std::string& message, int code)> fail;  // does not return
  std::string output;                                              // "table" or "json"
};

struct NodeCommands {
  struct State {
    std::string name, pool, ttl = "1h";
    std::vector<std::string> args;
    std::vector<std::string> tenants;
  };
  std::shared_ptr<State> state;
  CLI::App* node = nullptr;
  CLI::App *jt_create = nullptr, *jt_ls = nullptr, *ls = nullptr, *show = nullptr,
           *cordon = nullptr, *uncordon = nullptr, *drain = nullptr, *rm = nullptr,
           *label = nullptr, *taint = nullptr, *pool = nullptr;
  // `gpuwarden pool ls|dedicate|general` (cluster admins): pools and their dedication.
  CLI::App *pools = nullptr, *pool_ls = nullptr, *pool_dedicate = nullptr, *pool_general = nullptr;
  bool Parsed() const;
};

// Prints rows as aligned columns (two spaces apart); the first row is the header. Shared by the
// verb files (node_cmd.cc, job_cmd.cc).
void PrintRows(const std::vector<std::vector<std::string>>& rows);

NodeCommands AddNodeCommands(CLI::App& app);
void RunNodeCommand(const NodeCommands& commands, const NodeCommandContext& ctx);

}  // namespace warden::cli
