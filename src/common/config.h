// ServerConfig: every setting of `gpuwarden server`, with the defaults an operator gets when
// nothing is said. Loaded from an optional YAML file; command-line flags override it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace warden::common {

struct HttpLimits {
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 1 << 20;
  absl::Duration header_timeout = absl::Seconds(10);   // slow-headers (slowloris) defence
  absl::Duration request_timeout = absl::Seconds(30);  // whole request incl. body
  absl::Duration idle_timeout = absl::Seconds(60);     // keep-alive idle connection
  int max_connections = 1024;
};

// MFA policy (issue 3, docs/api.md "MFA policy").
struct MfaConfig {
  // Who must have MFA: "none", "admins" (users whose role bindings carry administrative
  // permissions: users/roles/bindings changes, tenants create/delete, tokens:manage, keys:manage,
  // nodes:manage, patches:manage) or "all".
  std::string required_for = "admins";
  std::vector<std::string> all_users_in_tenants;  // tenant names where every user needs MFA
  absl::Duration step_up_window = absl::Minutes(10);  // a code this recent satisfies step-up
  std::string issuer = "gpuwarden";                   // shown by authenticator apps
};

// The audit log's optional second sink (issue 4): a copy of every durable event sent to a syslog
// receiver over TLS (RFC 5424 messages, RFC 5425 framing). Off while `address` is empty.
// docs/operations.md "Audit copies to syslog".
struct AuditSyslogConfig {
  std::string address;      // receiver host:port
  std::string ca_file;      // PEM CA(s) for the receiver's certificate (required unless insecure)
  std::string server_name;  // name the receiver's certificate must carry; empty: host of address
  std::string client_cert;  // optional client certificate chain (mTLS), with client_key
  std::string client_key;
  bool insecure_skip_verify = false;  // no certificate check (logged loudly at start)
  int64_t queue_max = 10000;          // events held while the receiver is slow or away
  std::string hostname;               // HOSTNAME of the messages; empty: this machine's name
  std::string app_name = "gpuwarden";  // APP-NAME of the messages
};

struct ServerConfig {
  std::string data_dir = "./data";
  std::string listen = "127.0.0.1:8443";
  std::string store_url;                 // empty: sqlite in data_dir
  std::string admin_password_file;       // empty: generate and print once
  std::string master_key_file;           // empty: DATA_DIR/master.key (created 0600)
  // An external command that prints the master key as 64 hex digits (a KMS client, an HSM tool,
  // a TPM unseal), run without a shell at every start; argv form. Replaces the key file (setting
  // both is an error). Empty: the key file.
  std::vector<std::string> master_key_command;
  int threads = 2;                       // HTTP worker threads
  absl::Duration session_idle = absl::Hours(1);
  absl::Duration session_absolute = absl::Hours(12);
  absl::Duration token_max_ttl = absl::Hours(24 * 365);
  HttpLimits http;
  MfaConfig mfa;
  // Audit durability of read-only requests (issue 4, docs/architecture.md "The audit log").
  // false (default): a GET of metadata has its event queued before the response is sent and on
  // disk within one group commit; a crash can lose the last few milliseconds of such events.
  // Mutations, logins, denials of non-GET requests and data reads (kRouteDurableRead: audit
  // queries/exports, dataset downloads) always wait for fdatasync. true: every GET waits too.
  bool audit_durable_reads = false;
  // Callers that wait for their audit event's fdatasync by polling (yielding the CPU) before
  // they sleep (audit::AuditOptions::poll_waiters); 0: all sleep at once; -1 (the default, not
  // settable): audit::PollWaitersFor(this machine's online CPUs), 8 on up to 4 CPUs, else 0.
  int audit_poll_waiters = -1;
  AuditSyslogConfig audit_syslog;  // `audit: {syslog: {...}}`
  // Node agents (mTLS listener, issue 6): `agent: {listen: ..., heartbeat_interval: 5s,
  // cert_ttl: 24h}`. A node is marked unreachable after 3 missed heartbeats.
  // Empty: the API's host with its port + 1 (port 0 when the API's is 0), e.g. 127.0.0.1:8444.
  std::string agent_listen;
  absl::Duration heartbeat_interval = absl::Seconds(5);
  absl::Duration node_cert_ttl = absl::Hours(24);
  // The `oidc:` section (single sign-on providers, docs/oidc.md), kept as YAML text: common cannot
  // depend on auth, so the server parses it strictly with auth::oidc::ParseOidcConfig at start
  // and refuses to start on any error there. Empty: no SSO.
  std::string oidc_yaml;
  // Container images (issue 7): the largest image archive `image import` may upload (bytes; a
  // larger body is answered 413 before it is stored). `images: {max_import_bytes: N}`.
  int64_t image_max_import_bytes = int64_t{16} << 30;
};

// Parses YAML text such as:
//   data_dir: /var/lib/gpuwarden
//   listen: 0.0.0.0:8443
//   session: {idle: 30m, absolute: 8h}
//   http: {max_body_bytes: 1048576, header_timeout: 10s}
//   mfa: {required_for: admins, all_users_in_tenants: [acme], step_up_window: 10m}
//   audit: {durable_reads: false, syslog: {address: logs.example:6514, ca_file: /etc/ca.pem}}
// Unknown keys, wrong types and out-of-range values are InvalidArgument naming the key.
absl::StatusOr<ServerConfig> ParseServerConfig(std::string_view yaml_text);
// Reads and parses the file; NotFound if missing.
absl::StatusOr<ServerConfig> LoadServerConfigFile(const std::string& path);

}  // namespace warden::common
