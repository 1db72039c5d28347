// gpuwarden: one binary, three faces: `server` (the control plane), `agent` (per GPU node) and the
// CLI verbs. Dispatch only; everything else lives in src/server, src/agent and src/cli.
#include <cstring>
#include <iostream>

#include "agent/agent.h"
#include "cli/cli.h"
#include "sched/sim.h"
#include "server/server.h"

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "server") == 0) {
    return warden::server::RunServerCommand(argc - 1, argv + 1);
  }
  if (argc >= 2 && std::strcmp(argv[1], "agent") == 0) {
    return warden::agent::RunAgentCommand(argc - 1, argv + 1);
  }
  if (argc >= 2 && std::strcmp(argv[1], "sim") == 0) {
    return warden::sched::RunSimCommand(argc - 1, argv + 1);
  }
  return warden::cli::RunCli(argc, argv);
}
