// HttpsServer: the TLS-only HTTP/1.1 server in front of every API request.
//
// `threads` event-loop threads each run their own io_context; a connection stays on the loop it
// was given at accept, so its handler calls never overlap. The single Handler is called for every
// well-formed request (the caller's pipeline does routing, authn, authz, audit): on the loop when
// ServerOptions::runs_inline says so, else on a separate blocking pool. It must be thread-safe.
// Requests the server refuses itself (limits, malformed HTTP or target) never reach it; they are
// reported to ServerOptions::on_reject.
//
// Lifecycle: Create -> Start -> Stop (idempotent; also run by the destructor). Stop closes the
// listener, lets in-flight requests finish (bounded by the request timeout), closes idle
// keep-alive connections and joins the threads.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "common/metrics.h"
#include "http/router.h"

namespace warden::http {

struct ServerOptions {
  std::string listen = "127.0.0.1:8443";  // "host:port" or "[v6]:port"; port 0 = ephemeral
  std::string cert_pem;   // server certificate
  std::string key_pem;    // its private key
  std::string chain_pem;  // certificates sent after the leaf (the CA, for trust on first use)
  // mTLS: when set, every client must present a certificate that chains to this CA (PEM) and is
  // valid for client authentication (EKU clientAuth) at the current time; the handshake fails
  // otherwise, before any HTTP is read. The verified leaf reaches the handler as
  // Request::peer_certificate_der. Empty: no client certificates are asked for.
  std::string client_ca_pem;
  common::HttpLimits limits;
  int threads = 2;
  // Where built-in metrics go; nullptr = common::metrics::Registry::Default().
  common::metrics::Registry* metrics = nullptr;
  // Called (on a worker thread) for each request the server answers itself without calling the
  // handler: 413, 431 and 400 for malformed requests. `req` carries what was read (method,
  // target, remote address, request id; headers only if complete). Lets the caller audit every
  // request, including the ones refused at the HTTP layer. Must be thread-safe; may be empty.
  std::function<void(const Request& req, int status, std::string_view reason)> on_reject;
  // Threading: each of `threads` event-loop threads owns its connections (no strand, no
  // cross-thread hand-offs on the request path). A handler that may block for long (argon2,
  // waiting on another service) must not run there, or it stalls that loop's other connections:
  // requests for which `runs_inline` returns false (or every request when it is empty) are run on
  // a separate pool of `blocking_threads` threads and the response is sent from the loop after.
  std::function<bool(const Request& req)> runs_inline;
  int blocking_threads = 2;
  // Per-route body mode, asked once a request's header is complete and it has a body: 0 =
  // buffered into Request::body under limits.max_body_bytes (413 above it); N > 0 = streamed
  // through Request::body_stream, up to N bytes (413 from Content-Length before any body byte is
  // read, or when a chunked body passes N). Streamed requests always run on the blocking pool.
  // Each body read, like each write of a streamed response, must make progress within
  // limits.request_timeout (a stall cuts the connection); the total time is bounded by the size
  // limit, not by the request timeout. `target` is the raw request-target. Empty: all buffered.
  std::function<uint64_t(std::string_view method, std::string_view target)> stream_body_limit;
};

// Built-in metrics (all in ServerOptions::metrics):
//   http_requests_total{route,method,status}          counter
//   http_request_duration_seconds{route}              histogram (handler + read of the body)
//   http_tls_handshake_failures_total                 counter
//   http_limit_rejections_total{reason}               counter; reason: header_size, body_size,
//        header_timeout, request_timeout, connections, plain_http, bad_request
//   http_connections_active                           gauge
class HttpsServer {
 public:
  virtual ~HttpsServer() = default;

  // InvalidArgument for an unparsable listen address, certificate or key (or a key not matching
  // the certificate). Nothing is bound until Start.
  static absl::StatusOr<std::unique_ptr<HttpsServer>> Create(ServerOptions options,
                                                             Handler handler);

  // Binds, listens and starts the threads. Unavailable if the address cannot be bound;
  // FailedPrecondition if already started.
  virtual absl::Status Start() = 0;
  virtual void Stop() = 0;
  // The bound port (after Start), e.g. the ephemeral one chosen for port 0.
  virtual int port() const = 0;
};

}  // namespace warden::http
