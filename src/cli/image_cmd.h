// `gpuwarden image import|ls|show|rm` (image_cmd.cc): per-tenant container images (issue 7).
// Private to the cli module.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "cli/cli_internal.h"

namespace warden::cli::internal {

struct ImageCommands {
  CLI::App* import = nullptr;
  CLI::App* ls = nullptr;
  CLI::App* show = nullptr;
  CLI::App* rm = nullptr;
  std::string tenant, file, digest;
  bool progress = false;
};
void AddImageCommands(CLI::App& app, ImageCommands& cmds);
// Runs the parsed image verb, if any; returns false when none was parsed.
bool RunImageCommand(ImageCommands& cmds, const Session& s, const std::string& output);

}  // namespace warden::cli::internal
