// HttpsClient: outbound HTTPS for the CLI (and later webhooks), over libcurl.
//
// One client holds one curl handle and reuses its connection (keep-alive); calls are serialised
// by a mutex, so a client may be shared between threads but does not run requests in parallel.
// Only https:// URLs are accepted: credentials never travel in clear text.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace warden::http {

struct ClientOptions {
  std::string base_url;  // "https://host:port"; Do's path is appended
  // PEM of the CA to trust. When set, ONLY this CA is trusted (the system store is ignored):
  // the CLI pins gpuwarden's own CA. Empty: the system trust store.
  std::string ca_pem;
  absl::Duration timeout = absl::Seconds(30);
  absl::Duration connect_timeout = absl::Seconds(10);
  // mTLS: a client certificate and its private key (PEM) presented in the handshake; both empty
  // for none. Node agents use their node certificate here.
  std::string client_cert_pem;
  std::string client_key_pem;
};

struct ClientResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // as received, names as sent
  std::string body;
  // First value of header `name` (case-insensitive) or "".
  std::string_view Header(std::string_view name) const;
};

// A transfer whose bodies do not fit in memory (dataset put/get): HttpsClient::Stream.
struct StreamTransfer {
  // Request body pulled from `source` (bytes written into buf, 0 at the end); `size` >= 0 is
  // sent as Content-Length, -1 as chunked. An error from the source aborts the transfer and is
  // what Stream returns. Empty: no request body.
  std::function<absl::StatusOr<size_t>(char* buf, size_t n)> source;
  int64_t size = -1;
  // Response body of a 2xx response, handed over as it arrives; an error aborts the transfer
  // and is what Stream returns. Other statuses collect their (error) body in ClientResponse::body
  // (at most 1 MiB). Empty: every body goes to ClientResponse::body.
  std::function<absl::Status(std::string_view piece)> sink;
  // No total time limit: a transfer is cut only when fewer than 1 byte/s moved over this long.
  absl::Duration stall_timeout = absl::Seconds(60);
};

class HttpsClient {
 public:
  // InvalidArgument for a base_url that is not https:// or a ca_pem without a certificate.
  static absl::StatusOr<std::unique_ptr<HttpsClient>> Create(ClientOptions options);
  ~HttpsClient();
  HttpsClient(const HttpsClient&) = delete;
  HttpsClient& operator=(const HttpsClient&) = delete;

  // Sends one request. Any HTTP status, 4xx/5xx included, is a ClientResponse; the error cases:
  // Unauthenticated with IsPinnedCaMismatch(status) when the server's certificate does not chain
  // to the pinned CA (the server's CA changed, or someone is in the middle); Unauthenticated when
  // the certificate does not name the host; Unavailable when the server cannot be reached or the
  // TLS handshake fails otherwise; DeadlineExceeded on timeout.
  absl::StatusOr<ClientResponse> Do(
      std::string_view method, std::string_view path, std::string_view body = {},
      const std::vector<std::pair<std::string, std::string>>& headers = {});

  // Like Do, with bodies streamed through callbacks (constant memory whatever the size).
  absl::StatusOr<ClientResponse> Stream(
      std::string_view method, std::string_view path, const StreamTransfer& transfer,
      const std::vector<std::pair<std::string, std::string>>& headers = {});

 private:
  explicit HttpsClient(ClientOptions options);
  absl::StatusOr<ClientResponse> Perform(
      std::string_view method, std::string_view path, std::string_view body,
      const std::vector<std::pair<std::string, std::string>>& headers,
      const StreamTransfer* transfer);
  ClientOptions options_;
  std::mutex mu_;
  void* curl_ = nullptr;  // CURL*, guarded by mu_
};

// True for the error Do returns when the server's certificate does not chain to the pinned CA.
// Its message starts "server certificate does not chain to the pinned CA".
bool IsPinnedCaMismatch(const absl::Status& status);

struct ServerCaChain {
  std::string ca_pem;       // the top-most certificate the server sent (its CA)
  std::string fingerprint;  // pki::CertificateFingerprint(ca_pem), "SHA256:<hex>"
};

// Trust on first use (like ssh): connects to `url` once WITHOUT verifying the server, reads the
// certificate chain from the handshake and returns its top-most certificate, which must be a
// self-signed CA that the server's leaf chains to. The caller shows the fingerprint to the user
// and pins ca_pem for every later connection. FailedPrecondition when the server did not send
// its CA (only a leaf) or the chain is inconsistent; Unavailable when unreachable.
absl::StatusOr<ServerCaChain> FetchServerCaChain(const std::string& url,
                                                 absl::Duration timeout = absl::Seconds(10));

}  // namespace warden::http
