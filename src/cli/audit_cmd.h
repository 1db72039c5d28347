// `gpuwarden audit ...` verbs beyond `audit ls`: offline `verify`, `archive` and `pubkey --data-dir` (no
// server needed: they read a copy of the log), and online `pubkey`, `checkpoint`, `query`,
// `export`, `proof` and `consistency` over the API. The online proof verbs check what the server
// sends (proof against the checkpoint's root, checkpoint against the audit public key) before
// printing it.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

#include "common/json.h"

namespace warden::cli {

// Sends one request to the logged-in server and returns the parsed JSON reply (throws the CLI's
// own error on failure, which RunCli reports).
using AuditRequestFn = std::function<common::Json(const std::string& method, const std::string& path)>;

class AuditCommands {
 public:
  // Adds the verbs as subcommands of `audit`.
  explicit AuditCommands(CLI::App& audit);

  // Subcommands that take --tenant/--cluster (RunCli adds them).
  std::vector<CLI::App*> Scoped() const;

  bool OfflineParsed() const;
  // Runs the parsed offline verb; returns the exit code (0 verified, 1 problems found, 2 usage).
  int RunOffline() const;

  bool OnlineParsed() const;
  // Runs the parsed online verb. `prefix` is "/api/v1" or "/api/v1/tenants/T"; output "table" or
  // "json". Returns the exit code.
  int RunOnline(const AuditRequestFn& request, const std::string& prefix,
                const std::string& output) const;

 private:
  CLI::App *verify_, *archive_, *pubkey_, *checkpoint_, *query_, *export_, *proof_, *consistency_;
  std::string dir_, pubkey_file_, trusted_file_, data_dir_;
  bool allow_tail_ = false;
  // query / export filters
  std::string from_, to_, actor_, tenant_filter_, action_, resource_, decision_;
  int status_ = 0;
  int64_t after_ = -1;
  int limit_ = 100;
  bool all_pages_ = false;
  uint64_t seq_ = 0, tree_size_ = 0, size1_ = 0, size2_ = 0, before_ = 0;
};

}  // namespace warden::cli
