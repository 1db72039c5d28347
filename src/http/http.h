// http: the request/response value types shared by the HTTPS server (server.h), the router
// (router.h) and the API handlers, and the one mapping from absl::StatusCode to HTTP status.
//
// Request and Response are plain values with no Beast types, so that modules handling requests
// compile without Boost. A Request is owned by the connection serving it and reused for the next
// request on that connection; handlers must not keep references to it after returning.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/json.h"

namespace warden::http {

// HTTP header fields in arrival order; lookup ignores ASCII case (RFC 9110 field names).
class Headers {
 public:
  // First value of `name`, or "" when absent.
  std::string_view Get(std::string_view name) const;
  bool Has(std::string_view name) const;
  void Add(std::string name, std::string value);
  void Clear() { fields_.clear(); }
  const std::vector<std::pair<std::string, std::string>>& fields() const { return fields_; }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

bool EqualsIgnoreCase(std::string_view a, std::string_view b);

// A streamed request body (ServerOptions::stream_body_limit chose streaming for the request):
// the handler pulls it in pieces instead of finding it in Request::body. The server reads from
// the socket only while a Read is waiting (backpressure: a handler that consumes slowly makes
// the client wait, nothing is buffered beyond one socket read). Content-Length and chunked
// transfer-encoding both arrive as plain bytes. Only valid during the handler call, which runs
// on the blocking pool (never on an event loop: Read blocks).
class BodyReader {
 public:
  virtual ~BodyReader() = default;
  // Reads up to `n` (> 0) bytes into `buf`; 0 at the end of the body. Errors (the connection is
  // closed after the response): InvalidArgument for a body over the route's limit (the client
  // gets 413 whatever the handler answers) or malformed chunked framing; DeadlineExceeded when
  // the client sent nothing for the request timeout; Unavailable when it closed the connection.
  virtual absl::StatusOr<size_t> Read(char* buf, size_t n) = 0;
  // Body bytes delivered so far.
  virtual uint64_t bytes_read() const = 0;
};

// A streamed response body: called repeatedly (on the blocking pool, one call at a time) to fill
// `buf` with up to `n` bytes; returns how many, 0 at the end. The next call comes only after the
// previous piece was written to the socket, so a slow reader slows the producer instead of
// growing buffers. A client that disconnects (or stalls past the request timeout) ends the
// stream: the source is never called again and is destroyed. An error return cuts the
// connection mid-body, so the client sees a truncated response, never a clean end.
using BodySource = std::function<absl::StatusOr<size_t>(char* buf, size_t n)>;

struct Request {
  std::string method;  // as sent, e.g. "GET"
  std::string target;  // raw request-target, e.g. "/api/v1/x%20y?limit=5"
  std::string raw_path;  // target before '?', still percent-encoded (what the router matches)
  std::string path;      // raw_path percent-decoded (for logs and display; do not re-split it)
  // Query parameters, percent-decoded ('+' is a space); for a repeated key the first value wins.
  std::map<std::string, std::string> query;
  Headers headers;
  std::string body;
  std::string remote_address;  // "ip:port", IPv6 as "[::1]:port"
  std::string request_id;      // also sent back as X-Request-Id
  // DER of the client certificate verified in the TLS handshake (ServerOptions::client_ca_pem);
  // empty when the server asks for none. The caller still checks what the certificate says.
  std::string peer_certificate_der;
  // Set instead of `body` when the request's body is streamed (ServerOptions::stream_body_limit).
  BodyReader* body_stream = nullptr;

  // Filled by Router::Match: decoded path parameters in pattern order.
  std::vector<std::pair<std::string, std::string>> params;
  // The route pattern that served this request, used as the `route` metrics label. The handler
  // (normally the Router) sets it; it must point at storage that outlives the server (the
  // Router's patterns, or a literal). Unrouted requests stay "unmatched" so that attacker-chosen
  // paths cannot blow up metrics cardinality.
  std::string_view route = "unmatched";
  // Opaque per-request slot for the caller's pipeline (e.g. the authenticated principal).
  void* context = nullptr;

  // Value of path parameter `name`, or "" when the route has none.
  std::string_view Param(std::string_view name) const;
  // Query parameter or "".
  std::string_view Query(std::string_view name) const;

  // Clears every field, keeping capacity (connections reuse one Request).
  void Reset();
};

struct Response;

// A response that comes later, from any thread (long polls such as agents waiting for work). The
// handler returns Response::Later(...) at once, so no thread waits with the request; the server
// keeps the connection and writes the first of: the response handed to `complete`, `on_timeout`
// once `timeout` has passed, `on_timeout` at once when the server stops. `start` runs once on the
// connection's event loop right after the handler returns and must not block; it may call
// `complete` itself. A `complete` after the answer went out is ignored. What `start` returns (may
// be empty) runs when the answer was `on_timeout`, so registrations can be dropped.
struct Deferred {
  using Complete = std::function<void(Response)>;
  std::function<std::function<void()>(Complete complete)> start;
  std::chrono::milliseconds timeout{30000};
  std::function<Response()> on_timeout;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra header fields
  // Streamed body (then `body` is ignored): sent with Content-Length when `content_length` >= 0
  // (the source must produce exactly that many bytes, or the connection is cut), else chunked.
  BodySource body_source;
  int64_t content_length = -1;
  // Answered later (long polls): see Deferred. Then everything above is ignored.
  std::shared_ptr<Deferred> deferred;

  // `json` serialised compactly with the given status.
  static Response Json(int status, const common::Json& json);
  static Response Text(int status, std::string body);
  static Response Later(Deferred deferred);
  // {"error":{"code":"NOT_FOUND","message":"..."}} with HttpStatusFor(status.code()).
  // For Internal, Unknown and DataLoss the message is replaced by a generic one (internal details
  // are for logs, not clients; the X-Request-Id ties the two together). `status` must not be OK.
  static Response Error(const absl::Status& status);
  // Same body shape with an explicit HTTP status (413, 431, 405, ... emitted by the server).
  static Response Error(int http_status, absl::StatusCode code, std::string_view message);
};

// The single mapping of canonical codes to HTTP statuses:
// InvalidArgument, OutOfRange 400; Unauthenticated 401; PermissionDenied 403; NotFound 404;
// AlreadyExists, Aborted, FailedPrecondition 409 (409 rather than 412: 412 is reserved for
// conditional-request headers, which the API does not use); ResourceExhausted 429;
// Unimplemented 501; Unavailable 503; DeadlineExceeded 504; OK 200; anything else 500.
// The server itself also emits 413 (body too large), 431 (headers too large), 405 and 400.
int HttpStatusFor(absl::StatusCode code);

// "NOT_FOUND" etc.: the `code` string of error bodies.
std::string ErrorCodeName(absl::StatusCode code);

// Percent-decodes `in` into `out`. `plus_is_space` for query strings. False on a malformed escape.
bool PercentDecode(std::string_view in, std::string& out, bool plus_is_space = false);

// Splits target into raw_path/path/query of `req`. InvalidArgument on bad percent-encoding or a
// target that is not origin-form ("/...").
absl::Status ParseTarget(std::string_view target, Request& req);

}  // namespace warden::http
