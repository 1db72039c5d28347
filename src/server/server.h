// Server: `gpuwarden server`, the control plane. Starts its services in dependency order
// (data dir -> master key -> PKI -> store -> authenticator -> audit log -> API -> HTTPS) and
// stops them in reverse. Thread-safe Start/Stop; one instance per data dir.
#pragma once

#include <iosfwd>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/config.h"

namespace warden::server {

class Server {
 public:
  virtual ~Server() = default;
  // Prepares everything up to (not including) listening: creates the data dir, CA, server
  // certificate, master key and first admin on first start (the generated admin password is
  // written once to `out`). FailedPrecondition when the master key file is readable by others.
  static absl::StatusOr<std::unique_ptr<Server>> Create(const common::ServerConfig& config,
                                                        std::ostream& out);
  virtual absl::Status Start() = 0;
  virtual void Stop() = 0;
  virtual int port() const = 0;
  virtual std::string ca_fingerprint() const = 0;
};

// Entry point of `gpuwarden server ...`; returns the process exit code.
int RunServerCommand(int argc, char** argv);

}  // namespace warden::server
