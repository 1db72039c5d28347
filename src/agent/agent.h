// agent: `gpuwarden agent`, the per-node daemon. Joins the cluster once with a one-time join
// token (pinning the server CA the token names), then speaks mTLS only with its short-lived node
// certificate: heartbeats carrying the node's inventory, automatic certificate renewal at two
// thirds of its life, reconnection with exponential back-off.
//
// Data dir (0700): ca.crt (the pinned server CA), node.key (0600, the node's private key),
// node.crt (its current certificate), node.json (node id, name, server and agent URLs).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cluster/cluster.h"
#include "gpu/gpu.h"

namespace warden::agent {

// "nvml" or "sim:SPEC". For nvml on a machine without the driver: a backend-less result (nullptr)
// with the reason in `*note`, and the node reports zero GPUs.
absl::StatusOr<std::unique_ptr<gpu::GpuBackend>> MakeGpuBackend(const std::string& gpus,
                                                                const std::string& seed,
                                                                std::string* note);

// Collects this host's inventory: OS, kernel, CPUs, memory, container runtimes (found on PATH,
// versions from `--version`), and the GPUs of `backend` (none when nullptr).
absl::StatusOr<cluster::NodeInventory> CollectInventory(gpu::GpuBackend* backend,
                                                        std::string_view backend_name);

// Entry point of `gpuwarden agent ...` (argv[0] is "agent"); returns the process exit code:
// 0 stopped by a signal, 1 a fatal error, 2 usage, 4 the server removed this node (its
// certificate is revoked: join again with a new token).
int RunAgentCommand(int argc, char** argv);

}  // namespace warden::agent
