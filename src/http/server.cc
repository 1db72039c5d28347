// The HTTPS server: Boost.Beast over Asio SSL. This is the only translation unit that includes
// Beast (it compiles slowly); everything public is in http.h / router.h / server.h.
//
// Connection life: accept -> (connection limit) -> read the first bytes (plain-HTTP detection)
// -> TLS handshake -> [read headers -> read body -> handler -> write]* -> TLS shutdown.
// Every stage has a deadline on the tcp_stream; when it fires Beast closes the socket, which is
// the slowloris / idle-connection defence.
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <utility>  // before Asio: awaitable.hpp uses std::exchange without including it

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <map>
#include <unordered_map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "common/status.h"
#include "common/strings.h"
#include "http/server.h"
#include "pki/pki.h"

namespace warden::http {

namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = net::ip::tcp;
using common::StrCat;
using Clock = std::chrono::steady_clock;

// TLS 1.2 suites: forward secrecy (ECDHE) with AEAD only. TLS 1.3 suites are all AEAD.
constexpr char kTls12Ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305";
constexpr char kTls13Suites[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

constexpr char kPlainHttpResponse[] =
    "HTTP/1.1 400 Bad Request\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Length: 50\r\n"
    "Connection: close\r\n"
    "\r\n"
    "This port speaks HTTPS only; use an https:// URL.\n";
static_assert(sizeof("This port speaks HTTPS only; use an https:// URL.\n") - 1 == 50);

std::chrono::nanoseconds ToChrono(absl::Duration d) { return absl::ToChronoNanoseconds(d); }


// Per-thread generator for request ids: seeded once from the CSPRNG, so ids are unpredictable
// without a syscall or lock per request.
std::string NewRequestId() {
  thread_local std::mt19937_64 gen = [] {
    uint64_t seed[2] = {0, 0};
    RAND_bytes(reinterpret_cast<unsigned char*>(seed), sizeof(seed));
    std::seed_seq seq{seed[0], seed[0] >> 32, seed[1], seed[1] >> 32};
    return std::mt19937_64(seq);
  }();
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(32, '0');
  for (int half = 0; half < 2; ++half) {
    uint64_t v = gen();
    for (int i = 0; i < 16; ++i) id[half * 16 + i] = kHex[(v >> (i * 4)) & 0xf];
  }
  return id;
}

// A client-supplied id is echoed only if it cannot inject anything into headers or logs.
bool SaneRequestId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

// Method label for metrics: known verbs only, so arbitrary tokens cannot grow cardinality.
// A static label (never a view into the request, which the handler may move from).
std::string_view MethodLabel(bhttp::verb v, std::string_view) {
  if (v == bhttp::verb::unknown) return "OTHER";
  auto name = bhttp::to_string(v);
  return std::string_view(name.data(), name.size());
}

enum class Reject { kHeaderSize, kBodySize, kHeaderTimeout, kRequestTimeout, kConnections,
                    kPlainHttp, kBadRequest, kCount };
constexpr std::string_view kRejectNames[] = {"header_size", "body_size",   "header_timeout",
                                             "request_timeout", "connections", "plain_http",
                                             "bad_request"};

struct ListenAddress {
  std::string host;
  uint16_t port = 0;
};

absl::StatusOr<ListenAddress> ParseListen(std::string_view listen) {
  size_t colon = listen.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == listen.size()) {
    return absl::InvalidArgumentError(StrCat("listen address \"", listen, "\": want host:port"));
  }
  ListenAddress out;
  std::string_view host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  out.host = std::string(host);
  unsigned port = 0;
  for (char c : listen.substr(colon + 1)) {
    if (c < '0' || c > '9' || port > 65535) {
      return absl::InvalidArgumentError(StrCat("listen address \"", listen, "\": bad port"));
    }
    port = port * 10 + static_cast<unsigned>(c - '0');
  }
  if (port > 65535) {
    return absl::InvalidArgumentError(StrCat("listen address \"", listen, "\": bad port"));
  }
  out.port = static_cast<uint16_t>(port);
  return out;
}

// Status line and the header fields every response carries (buffered or streamed).
template <typename Message>
void SetResponseHeader(Message& res, const Response& response, const std::string& request_id) {
  res.version(11);
  res.result(static_cast<unsigned>(response.status));
  res.set(bhttp::field::content_type, response.content_type);
  res.set("X-Request-Id", request_id);
  res.set("X-Content-Type-Options", "nosniff");
  res.set(bhttp::field::cache_control, "no-store");
  for (const auto& [k, v] : response.headers) res.insert(k, v);
}

class ServerImpl;

// Size of one piece of a streamed response (one buffer per streaming connection).
constexpr size_t kStreamPiece = 256 * 1024;
// Lingering close (RFC 9112 section 9.6): after refusing a request whose body is still coming
// (413, 431, 400, or a handler that answered without reading it), the server reads and discards
// what the client goes on sending, within these bounds, before it closes. Closing with unread
// bytes makes the kernel answer RST, and a client still writing its body then fails with
// "broken pipe" or "connection reset" before it reads the refusal.
constexpr size_t kLingerBytes = 16 << 20;
constexpr std::chrono::milliseconds kLingerTotal{2000};
constexpr std::chrono::milliseconds kLingerIdle{500};
constexpr size_t kLingerChunk = 64 * 1024;
// Read buffer capacity beyond the header limit (Beast reads up to 64 KiB at a time).
constexpr size_t kReadBufferSlack = 128 * 1024;

class Connection : public std::enable_shared_from_this<Connection>, public BodyReader {
 public:
  Connection(ServerImpl& server, tcp::socket socket, uint64_t id);
  ~Connection();
  void Run();
  // Called on the connection's strand by Stop(): close if idle, else finish the current request.
  void BeginShutdown();
  net::any_io_executor executor() { return stream_.get_executor(); }

  // BodyReader (streamed request bodies): called by the handler on a blocking-pool thread.
  absl::StatusOr<size_t> Read(char* buf, size_t n) override;
  uint64_t bytes_read() const override { return stream_bytes_; }

 private:
  void OnFirstBytes(beast::error_code ec, size_t n);
  void OnHandshake(beast::error_code ec, size_t used);
  void ReadRequest(bool first);
  void OnIdleData(beast::error_code ec, size_t n);
  void ReadHeader();
  void OnHeader(beast::error_code ec);
  void OnContinueWritten(beast::error_code ec);
  void OnBody(beast::error_code ec);
  // The header of the request being read (whichever parser holds it).
  bhttp::request_header<>& Header() {
    return stream_parser_ ? stream_parser_->get().base() : parser_->get().base();
  }
  // Streamed request body: one socket read into the handler's buffer, on the loop.
  void StartBodyRead(char* buf, size_t n);
  void DeliverRead(beast::error_code ec, size_t got);
  absl::Status BodyReadError(beast::error_code ec);
  // Streamed response: header, then pieces produced on the blocking pool and written here.
  void SendStreamed(Response response, bool keep_alive);
  void ProducePiece(bool keep_alive);
  void WritePiece(bool keep_alive, absl::StatusOr<size_t> piece);
  void EndStream();
  void HandleRequest();
  // A deferred response (Response::Later): the connection waits without a thread for
  // `complete`, the timeout or Stop, whichever comes first.
  struct Later {
    explicit Later(net::any_io_executor ex) : timer(std::move(ex)) {}
    std::atomic<bool> answered{false};
    net::steady_timer timer;
    std::function<void()> cancel;
    std::function<Response()> on_timeout;
    bool keep_alive = false;
    std::string_view method;
  };
  void StartLater(Deferred deferred, bool keep_alive, std::string_view method);
  void FinishLater(Response response);
  void TimeOutLater();
  // Observes the metrics and sends the response of the request in req_.
  void FinishRequest(Response response, bool keep_alive, std::string_view method);
  void SendError(int status, absl::StatusCode code, std::string_view message, Reject reason);
  void Send(Response response, bool keep_alive);
  void OnWrite(bool keep_alive, beast::error_code ec, size_t);
  void Close();
  // The lingering close: discards what the client still sends (kLinger* bounds), then Close().
  void LingerRead();
  // Maps a read error to a rejection response; false when the connection should just close.
  bool RejectReadError(beast::error_code ec);
  tcp::socket& Socket() { return beast::get_lowest_layer(stream_).socket(); }

  ServerImpl& server_;
  const uint64_t id_;
  beast::ssl_stream<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  // Streamed request body (ServerOptions::stream_body_limit): parser_ is moved here after the
  // header. The read state below is handed between the loop and the handler's thread under
  // read_mu_; the rest is touched by one side at a time (the handler only runs while no other
  // operation of this connection is pending).
  std::optional<bhttp::request_parser<bhttp::buffer_body>> stream_parser_;
  uint64_t stream_limit_ = 0;
  uint64_t stream_bytes_ = 0;
  bool stream_continue_ = false;  // a 100 Continue is owed before the first body read
  bool stream_over_limit_ = false;
  absl::Status stream_error_;
  std::mutex read_mu_;
  std::condition_variable read_cv_;
  bool read_ready_ = false;
  beast::error_code read_ec_;
  size_t read_got_ = 0;
  // Streamed response.
  std::optional<bhttp::response<bhttp::buffer_body>> stream_res_;
  std::optional<bhttp::response_serializer<bhttp::buffer_body>> stream_ser_;
  BodySource source_;
  std::unique_ptr<char[]> piece_;
  int64_t stream_length_ = -1;
  uint64_t stream_sent_ = 0;
  std::optional<bhttp::response<bhttp::empty_body>> continue_;
  bhttp::response<bhttp::string_body> res_;
  Request req_;
  std::array<char, 512> first_bytes_;
  std::string remote_;
  std::string peer_der_;  // verified client certificate (mTLS listeners), set at handshake
  Clock::time_point request_start_;
  bool idle_ = false;
  bool closing_ = false;
  bool headers_done_ = false;
  // Set when the response refuses a request whose body was not read to its end: Close() then
  // lingers first.
  bool linger_ = false;
  Clock::time_point linger_deadline_;
  size_t lingered_ = 0;
  std::unique_ptr<char[]> linger_buf_;
  std::shared_ptr<Later> later_;  // the deferred response being waited for, on the loop only
};

class ServerImpl final : public HttpsServer {
 public:
  ServerImpl(ServerOptions options, Handler handler)
      : options_(std::move(options)),
        handler_(std::move(handler)),
        ssl_ctx_(ssl::context::tls_server),
        registry_(options_.metrics ? *options_.metrics : common::metrics::Registry::Default()),
        requests_(registry_.AddCounter("http_requests_total", "HTTP requests served.",
                                       {"route", "method", "status"})),
        latency_(registry_.AddHistogram("http_request_duration_seconds",
                                        "Time from the first header byte to the handler's "
                                        "response, by route.",
                                        {"route"})),
        handshake_failures_(registry_
                                .AddCounter("http_tls_handshake_failures_total",
                                            "TLS handshakes that failed (protocol, cipher, "
                                            "timeout or a non-TLS client).")
                                .WithLabels({})),
        active_gauge_(
            registry_.AddGauge("http_connections_active", "Open client connections.")
                .WithLabels({})) {
    auto& rejections = registry_.AddCounter(
        "http_limit_rejections_total", "Requests or connections refused by a server limit.",
        {"reason"});
    for (size_t i = 0; i < static_cast<size_t>(Reject::kCount); ++i) {
      reject_counters_[i] = &rejections.WithLabels({kRejectNames[i]});
    }
  }

  ~ServerImpl() override {
    Stop();
    // Pending handlers own connections that reference this object: destroy them while it is
    // still whole, and the acceptor before the io_context it belongs to.
    acceptor_.reset();
    iocs_.clear();
    blocking_pool_.reset();
  }

  absl::Status ConfigureTls() {
    SSL_CTX* ctx = ssl_ctx_.native_handle();
    // Threat: downgrade to legacy protocols (POODLE, BEAST, weak PRFs) — TLS 1.2 is the floor.
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, 0);  // highest supported: TLS 1.3 preferred
    long opts = SSL_OP_NO_COMPRESSION |            // CRIME
                SSL_OP_NO_RENEGOTIATION |          // renegotiation DoS / injection
                SSL_OP_CIPHER_SERVER_PREFERENCE;
#ifdef SSL_OP_NO_CLIENT_RENEGOTIATION
    opts |= SSL_OP_NO_CLIENT_RENEGOTIATION;
#endif
    SSL_CTX_set_options(ctx, opts);
    if (SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, kTls13Suites) != 1 ||
        SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384") != 1) {
      return absl::InternalError(StrCat("TLS cipher configuration: ", pki::OpenSslErrors()));
    }
    static const unsigned char kSessionContext[] = "gpuwarden";
    SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof(kSessionContext) - 1);

    // Leaf, then every further certificate of cert_pem and chain_pem as the chain.
    std::string all = options_.cert_pem + "\n" + options_.chain_pem;
    BIO* bio = BIO_new_mem_buf(all.data(), static_cast<int>(all.size()));
    X509* leaf = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    if (leaf == nullptr || SSL_CTX_use_certificate(ctx, leaf) != 1) {
      X509_free(leaf);
      BIO_free(bio);
      ERR_clear_error();
      return absl::InvalidArgumentError("server certificate: not a PEM certificate");
    }
    X509_free(leaf);
    while (X509* extra = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
      if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
        X509_free(extra);
        BIO_free(bio);
        return absl::InvalidArgumentError(StrCat("certificate chain: ", pki::OpenSslErrors()));
      }
    }
    ERR_clear_error();  // the loop ends on "no start line"
    BIO_free(bio);
    bio = BIO_new_mem_buf(options_.key_pem.data(), static_cast<int>(options_.key_pem.size()));
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    if (key == nullptr || SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      EVP_PKEY_free(key);
      ERR_clear_error();
      return absl::InvalidArgumentError("server key: unreadable or not matching the certificate");
    }
    EVP_PKEY_free(key);
    if (!options_.client_ca_pem.empty()) WARDEN_RETURN_IF_ERROR(ConfigureClientVerification());
    return absl::OkStatus();
  }

  // mTLS (agents): only certificates issued by client_ca_pem, unexpired, with a clientAuth
  // purpose. Threats: a client without a certificate, with one from another CA, or with an
  // expired one never gets past the handshake. Who the certificate names is checked later.
  absl::Status ConfigureClientVerification() {
    SSL_CTX* ctx = ssl_ctx_.native_handle();
    BIO* bio = BIO_new_mem_buf(options_.client_ca_pem.data(),
                               static_cast<int>(options_.client_ca_pem.size()));
    X509* ca = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    if (ca == nullptr) {
      ERR_clear_error();
      return absl::InvalidArgumentError("client CA: not a PEM certificate");
    }
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    bool ok = X509_STORE_add_cert(store, ca) == 1 && SSL_CTX_add_client_CA(ctx, ca) == 1 &&
              SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT) == 1;
    X509_free(ca);
    if (!ok) return absl::InternalError(StrCat("client CA: ", pki::OpenSslErrors()));
    X509_STORE_set_flags(store, X509_V_FLAG_X509_STRICT);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    SSL_CTX_set_verify_depth(ctx, 2);
    return absl::OkStatus();
  }

  absl::Status Start() override {
    if (started_) return absl::FailedPreconditionError("server already started");
    WARDEN_ASSIGN_OR_RETURN(ListenAddress addr, ParseListen(options_.listen));
    int threads = std::max(1, options_.threads);
    // One io_context per event-loop thread, connections dealt out round-robin at accept (like
    // nginx's workers): a connection never changes threads, so there are no strands and no
    // cross-thread wake-ups on the request path. Handlers that may block run on blocking_pool_.
    for (int i = 0; i < threads; ++i) {
      iocs_.push_back(std::make_unique<net::io_context>(1));
      // A loop with no connection yet has no work; without a guard its run() would return.
      work_guards_.push_back(net::make_work_guard(*iocs_.back()));
    }
    blocking_pool_.emplace(static_cast<size_t>(std::max(1, options_.blocking_threads)));
    beast::error_code ec;
    net::ip::address ip = net::ip::make_address(addr.host, ec);
    tcp::endpoint endpoint;
    if (!ec) {
      endpoint = tcp::endpoint(ip, addr.port);
    } else {
      tcp::resolver resolver(*iocs_[0]);
      auto results = resolver.resolve(addr.host, std::to_string(addr.port), ec);
      if (ec || results.empty()) {
        return absl::InvalidArgumentError(
            StrCat("listen address \"", options_.listen, "\": cannot resolve host"));
      }
      endpoint = results.begin()->endpoint();
    }
    acceptor_.emplace(*iocs_[0]);
    acceptor_->open(endpoint.protocol(), ec);
    if (!ec) acceptor_->set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_->bind(endpoint, ec);
    if (!ec) acceptor_->listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
      acceptor_.reset();
      return absl::UnavailableError(StrCat("listen on ", options_.listen, ": ", ec.message()));
    }
    port_ = acceptor_->local_endpoint(ec).port();
    started_ = true;
    DoAccept();
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back([ioc = iocs_[i].get()] {
        for (;;) {
          try {
            ioc->run();
            return;
          } catch (...) {
            // A handler threw through Asio; the connection involved is gone. Keep serving.
          }
        }
      });
    }
    return absl::OkStatus();
  }

  void Stop() override {
    if (!started_ || stopped_.exchange(true)) return;
    stopping_.store(true);
    net::post(acceptor_->get_executor(), [this] {
      beast::error_code ec;
      acceptor_->close(ec);
    });
    // Collect under the lock, post outside it: dropping the last reference to a connection runs
    // its destructor, which takes mu_ again.
    std::vector<std::shared_ptr<Connection>> live;
    {
      std::lock_guard lock(mu_);
      for (auto& [id, weak] : connections_) {
        if (auto conn = weak.lock()) live.push_back(std::move(conn));
      }
    }
    for (auto& conn : live) {
      net::post(conn->executor(), [conn] { conn->BeginShutdown(); });
    }
    live.clear();
    {
      // In-flight requests get until their own deadline; then everything is cut.
      std::unique_lock lock(mu_);
      cv_.wait_for(lock,
                   ToChrono(options_.limits.request_timeout + options_.limits.header_timeout),
                   [this] { return active_ == 0; });
    }
    blocking_pool_->join();  // handlers in flight finish; their responses are dropped below
    work_guards_.clear();
    for (auto& ioc : iocs_) ioc->stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  int port() const override { return port_; }

  // ---- used by Connection ----
  const common::HttpLimits& limits() const { return options_.limits; }
  const auto& on_reject() const { return options_.on_reject; }
  ssl::context& ssl_ctx() { return ssl_ctx_; }
  bool stopping() const { return stopping_.load(std::memory_order_relaxed); }
  void CountReject(Reject r) { reject_counters_[static_cast<size_t>(r)]->Inc(); }
  void CountHandshakeFailure() { handshake_failures_.Inc(); }
  void Observe(std::string_view route, std::string_view method, int status, double seconds) {
    // route and method are views into storage that lives as long as the server (router patterns,
    // static labels), so their addresses identify them: a per-thread cache of the metric
    // children keeps the registry's lock off the request path.
    struct Key {
      uint64_t server;  // instance_id_: unique for the process's life, unlike an address
      const char* route;
      const char* method;
      int status;
      bool operator==(const Key&) const = default;
    };
    struct KeyHash {
      size_t operator()(const Key& k) const {
        return std::hash<const void*>()(k.route) * 31 + std::hash<const void*>()(k.method) * 7 +
               static_cast<size_t>(k.status) + static_cast<size_t>(k.server);
      }
    };
    thread_local std::unordered_map<Key, std::pair<common::metrics::Counter*,
                                                   common::metrics::Histogram*>, KeyHash> cache;
    Key key{instance_id_, route.data(), method.data(), status};
    auto it = cache.find(key);
    if (it == cache.end()) {
      std::string code = std::to_string(status);
      std::string_view labels[] = {route, method, code};
      std::string_view route_label[] = {route};
      auto* counter = &requests_.WithLabels(std::span<const std::string_view>(labels));
      auto* histogram = &latency_.WithLabels(std::span<const std::string_view>(route_label));
      if (cache.size() > 4096) cache.clear();  // bounded: servers come and go in tests
      it = cache.emplace(key, std::make_pair(counter, histogram)).first;
    }
    it->second.first->Inc();
    it->second.second->Observe(seconds);
  }
  bool streams() const { return static_cast<bool>(options_.stream_body_limit); }
  uint64_t StreamBodyLimit(std::string_view method, std::string_view target) const {
    return options_.stream_body_limit(method, target);
  }
  bool RunsInline(const Request& req) const {
    return options_.runs_inline && options_.runs_inline(req);
  }
  template <typename F>
  void RunBlocking(F&& f) {
    net::post(*blocking_pool_, std::forward<F>(f));
  }
  absl::StatusOr<size_t> CallSource(const BodySource& source, char* buf, size_t n) {
    try {
      return source(buf, n);
    } catch (const std::exception& e) {
      return absl::InternalError(e.what());
    } catch (...) {
      return absl::InternalError("body source threw");
    }
  }
  Response CallHandler(Request& req) {
    try {
      return handler_(req);
    } catch (const std::exception& e) {
      return Response::Error(absl::InternalError(e.what()));
    } catch (...) {
      return Response::Error(absl::InternalError("handler threw"));
    }
  }
  void ConnectionClosed(uint64_t id) {
    {
      std::lock_guard lock(mu_);
      connections_.erase(id);
      --active_;
    }
    active_gauge_.Dec();
    cv_.notify_all();
  }

 private:
  void DoAccept() {
    net::io_context& target = *iocs_[next_ioc_++ % iocs_.size()];
    acceptor_->async_accept(target,
                            [this](beast::error_code ec, tcp::socket socket) {
                              OnAccept(ec, std::move(socket));
                            });
  }

  void OnAccept(beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == net::error::operation_aborted || stopping()) return;
      // EMFILE and friends: drop this one, keep accepting.
      DoAccept();
      return;
    }
    if (stopping()) {
      socket.close(ec);
      return;
    }
    std::shared_ptr<Connection> conn;
    {
      std::lock_guard lock(mu_);
      // Threat: connection exhaustion. Extra connections are closed at once, before any TLS work.
      if (active_ >= options_.limits.max_connections) {
        socket.close(ec);
        CountReject(Reject::kConnections);
        DoAccept();
        return;
      }
      ++active_;
      uint64_t id = next_id_++;
      socket.set_option(tcp::no_delay(true), ec);
      conn = std::make_shared<Connection>(*this, std::move(socket), id);
      connections_.emplace(id, conn);
    }
    active_gauge_.Inc();
    conn->Run();
    DoAccept();
  }

  ServerOptions options_;
  Handler handler_;
  ssl::context ssl_ctx_;
  common::metrics::Registry& registry_;
  common::metrics::CounterFamily& requests_;
  common::metrics::HistogramFamily& latency_;
  common::metrics::Counter& handshake_failures_;
  common::metrics::Gauge& active_gauge_;
  std::array<common::metrics::Counter*, static_cast<size_t>(Reject::kCount)> reject_counters_{};

  static inline std::atomic<uint64_t> next_instance_id_{1};
  const uint64_t instance_id_ = next_instance_id_++;
  std::vector<std::unique_ptr<net::io_context>> iocs_;
  std::vector<net::executor_work_guard<net::io_context::executor_type>> work_guards_;
  size_t next_ioc_ = 0;  // touched only by the accept handler, on iocs_[0]'s thread
  std::optional<net::thread_pool> blocking_pool_;
  std::optional<tcp::acceptor> acceptor_;
  std::vector<std::thread> threads_;
  int port_ = 0;
  bool started_ = false;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> stopping_{false};

  std::mutex mu_;
  std::condition_variable cv_;
  int active_ = 0;  // guarded by mu_
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::weak_ptr<Connection>> connections_;  // guarded by mu_
};

Connection::Connection(ServerImpl& server, tcp::socket socket, uint64_t id)
    : server_(server),
      id_(id),
      stream_(std::move(socket), server.ssl_ctx()),
      // Bounded: a header never needs more than the header limit, and body bytes are consumed as
      // they are parsed; a chunk-size line or extension that never ends fills it and is refused
      // (buffer_overflow, 400) instead of growing without end.
      buffer_(server.limits().max_header_bytes + kReadBufferSlack) {
  beast::error_code ec;
  auto ep = Socket().remote_endpoint(ec);
  if (!ec) {
    remote_ = ep.address().is_v6() ? StrCat("[", ep.address().to_string(), "]:", ep.port())
                                   : StrCat(ep.address().to_string(), ":", ep.port());
  }
}

Connection::~Connection() { server_.ConnectionClosed(id_); }

void Connection::Run() {
  net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
    // The handshake must finish within the header timeout too (slow TLS clients hold resources).
    beast::get_lowest_layer(self->stream_).expires_after(
        ToChrono(self->server_.limits().header_timeout));
    beast::get_lowest_layer(self->stream_).async_read_some(
        net::buffer(self->first_bytes_),
        [self](beast::error_code ec, size_t n) { self->OnFirstBytes(ec, n); });
  });
}

void Connection::OnFirstBytes(beast::error_code ec, size_t n) {
  if (ec) {
    if (ec == beast::error::timeout) server_.CountReject(Reject::kHeaderTimeout);
    return;
  }
  if (n == 0) return;
  if (static_cast<unsigned char>(first_bytes_[0]) != 0x16) {
    // Not a TLS handshake record: most likely plain HTTP sent to the TLS port. Say so in clear
    // text (nothing secret in it) rather than failing with an opaque TLS alert.
    server_.CountReject(Reject::kPlainHttp);
    server_.CountHandshakeFailure();
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(2));
    net::async_write(Socket(), net::buffer(kPlainHttpResponse, sizeof(kPlainHttpResponse) - 1),
                     [self = shared_from_this()](beast::error_code, size_t) {
                       beast::error_code ignored;
                       self->Socket().shutdown(tcp::socket::shutdown_both, ignored);
                       self->Socket().close(ignored);
                     });
    return;
  }
  stream_.async_handshake(ssl::stream_base::server, net::buffer(first_bytes_.data(), n),
                          [self = shared_from_this()](beast::error_code ec, size_t used) {
                            self->OnHandshake(ec, used);
                          });
}

void Connection::OnHandshake(beast::error_code ec, size_t) {
  if (ec) {
    server_.CountHandshakeFailure();
    return;
  }
  // Renegotiation is off, so the peer's certificate is fixed for the connection's life.
  if (X509* peer = SSL_get0_peer_certificate(stream_.native_handle())) {
    unsigned char* der = nullptr;
    int len = i2d_X509(peer, &der);
    if (len > 0) peer_der_.assign(reinterpret_cast<const char*>(der), static_cast<size_t>(len));
    OPENSSL_free(der);
  }
  ReadRequest(/*first=*/true);
}

void Connection::ReadRequest(bool first) {
  req_.Reset();
  headers_done_ = false;
  stream_parser_.reset();
  stream_limit_ = 0;
  stream_bytes_ = 0;
  stream_continue_ = false;
  stream_over_limit_ = false;
  stream_error_ = absl::OkStatus();
  parser_.emplace();
  parser_->header_limit(static_cast<uint32_t>(
      std::min<size_t>(server_.limits().max_header_bytes, UINT32_MAX)));
  // With per-route body modes the limit is only known once the header names the route: it is
  // checked in OnHeader (Content-Length) and set on the parser there (chunked bodies).
  // (Not boost::none: Boost 1.74 compares a Content-Length with an empty limit as "over".)
  if (server_.streams()) {
    parser_->body_limit(std::numeric_limits<uint64_t>::max());
  } else {
    parser_->body_limit(static_cast<uint64_t>(server_.limits().max_body_bytes));
  }
  if (first || buffer_.size() > 0) {
    ReadHeader();
    return;
  }
  if (closing_ || server_.stopping()) {
    Close();
    return;
  }
  // Keep-alive: wait for the next request's first bytes under the idle timeout; the header
  // timeout starts once they arrive.
  idle_ = true;
  beast::get_lowest_layer(stream_).expires_after(ToChrono(server_.limits().idle_timeout));
  stream_.async_read_some(buffer_.prepare(4096),
                          [self = shared_from_this()](beast::error_code ec, size_t n) {
                            self->OnIdleData(ec, n);
                          });
}

void Connection::OnIdleData(beast::error_code ec, size_t n) {
  idle_ = false;
  if (ec) return;  // idle timeout, peer closed, or Stop() cancelled us
  buffer_.commit(n);
  ReadHeader();
}

void Connection::ReadHeader() {
  request_start_ = Clock::now();
  beast::get_lowest_layer(stream_).expires_after(ToChrono(server_.limits().header_timeout));
  bhttp::async_read_header(stream_, buffer_, *parser_,
                           [self = shared_from_this()](beast::error_code ec, size_t) {
                             self->OnHeader(ec);
                           });
}

bool Connection::RejectReadError(beast::error_code ec) {
  if (ec == bhttp::error::header_limit) {
    SendError(431, absl::StatusCode::kInvalidArgument,
              StrCat("request headers exceed ", server_.limits().max_header_bytes, " bytes"),
              Reject::kHeaderSize);
    return true;
  }
  if (ec == bhttp::error::body_limit) {
    SendError(413, absl::StatusCode::kInvalidArgument,
              StrCat("request body exceeds ", server_.limits().max_body_bytes, " bytes"),
              Reject::kBodySize);
    return true;
  }
  if (ec == beast::error::timeout) {
    server_.CountReject(headers_done_ ? Reject::kRequestTimeout : Reject::kHeaderTimeout);
    return false;  // Beast already closed the socket
  }
  if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category() &&
      ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message) {
    SendError(400, absl::StatusCode::kInvalidArgument, StrCat("malformed HTTP request: ",
              ec.message()), Reject::kBadRequest);
    return true;
  }
  return false;
}

void Connection::OnHeader(beast::error_code ec) {
  if (ec) {
    RejectReadError(ec);
    return;
  }
  headers_done_ = true;
  auto& msg = parser_->get();
  // The request timeout covers the whole request, body included, from its first header byte.
  beast::get_lowest_layer(stream_).expires_at(request_start_ +
                                              ToChrono(server_.limits().request_timeout));
  if (parser_->is_done()) {
    HandleRequest();
    return;
  }
  if (server_.streams()) {
    const uint64_t stream_limit =
        server_.StreamBodyLimit(std::string_view(msg.method_string().data(),
                                                 msg.method_string().size()),
                                std::string_view(msg.target().data(), msg.target().size()));
    const uint64_t limit =
        stream_limit > 0 ? stream_limit : static_cast<uint64_t>(server_.limits().max_body_bytes);
    // Threat: a declared body over the limit is refused before any of it is read.
    if (auto length = parser_->content_length(); length && *length > limit) {
      SendError(413, absl::StatusCode::kInvalidArgument,
                StrCat("request body exceeds ", limit, " bytes"), Reject::kBodySize);
      return;
    }
    parser_->body_limit(limit);  // chunked bodies: counted while they are decoded
    if (stream_limit > 0) {
      stream_continue_ = beast::iequals(msg[bhttp::field::expect], "100-continue");
      stream_parser_.emplace(std::move(*parser_));
      parser_.reset();
      stream_limit_ = stream_limit;
      HandleRequest();  // the handler pulls the body (Read), on the blocking pool
      return;
    }
  }
  if (beast::iequals(msg[bhttp::field::expect], "100-continue")) {
    continue_.emplace(bhttp::status::continue_, msg.version());
    bhttp::async_write(stream_, *continue_,
                       [self = shared_from_this()](beast::error_code ec, size_t) {
                         self->OnContinueWritten(ec);
                       });
    return;
  }
  bhttp::async_read(stream_, buffer_, *parser_,
                    [self = shared_from_this()](beast::error_code ec, size_t) {
                      self->OnBody(ec);
                    });
}

void Connection::OnContinueWritten(beast::error_code ec) {
  if (ec) return;
  bhttp::async_read(stream_, buffer_, *parser_,
                    [self = shared_from_this()](beast::error_code ec, size_t) {
                      self->OnBody(ec);
                    });
}

void Connection::OnBody(beast::error_code ec) {
  if (ec) {
    RejectReadError(ec);
    return;
  }
  HandleRequest();
}

absl::StatusOr<size_t> Connection::Read(char* buf, size_t n) {
  if (!stream_parser_) return absl::FailedPreconditionError("request body is not streamed");
  if (n == 0) return size_t{0};
  for (;;) {
    if (!stream_error_.ok()) return stream_error_;
    if (stream_parser_->is_done()) return size_t{0};
    {
      std::lock_guard lock(read_mu_);
      read_ready_ = false;
    }
    net::post(executor(), [self = shared_from_this(), buf, n] { self->StartBodyRead(buf, n); });
    beast::error_code ec;
    size_t got = 0;
    {
      std::unique_lock lock(read_mu_);
      read_cv_.wait(lock, [this] { return read_ready_; });
      ec = read_ec_;
      got = read_got_;
    }
    if (ec) {
      stream_error_ = BodyReadError(ec);
      return stream_error_;
    }
    stream_bytes_ += got;
    if (got > 0) return got;
    // Only framing was parsed (a chunk header): read on.
  }
}

void Connection::StartBodyRead(char* buf, size_t n) {
  auto& socket = beast::get_lowest_layer(stream_);
  // Each read must make progress within the request timeout: a stalled client is cut, a slow
  // but live one may take as long as its body needs (bounded by the route's size limit).
  socket.expires_after(ToChrono(server_.limits().request_timeout));
  if (stream_continue_) {
    // The client waits for this before sending the body; it is sent only once the handler
    // asks for the body, so a refused request (401, 403) never makes the client upload.
    stream_continue_ = false;
    continue_.emplace(bhttp::status::continue_, 11);
    bhttp::async_write(stream_, *continue_,
                       [self = shared_from_this(), buf, n](beast::error_code ec, size_t) {
                         if (ec) {
                           self->DeliverRead(ec, 0);
                           return;
                         }
                         self->StartBodyRead(buf, n);
                       });
    return;
  }
  auto& body = stream_parser_->get().body();
  body.data = buf;
  body.size = n;
  body.more = true;
  bhttp::async_read_some(stream_, buffer_, *stream_parser_,
                         [self = shared_from_this(), n](beast::error_code ec, size_t) {
                           size_t got = n - self->stream_parser_->get().body().size;
                           if (ec == bhttp::error::need_buffer) ec = {};
                           self->DeliverRead(ec, got);
                         });
}

void Connection::DeliverRead(beast::error_code ec, size_t got) {
  {
    std::lock_guard lock(read_mu_);
    read_ec_ = ec;
    read_got_ = got;
    read_ready_ = true;
  }
  read_cv_.notify_one();
}

absl::Status Connection::BodyReadError(beast::error_code ec) {
  if (ec == bhttp::error::body_limit) {
    stream_over_limit_ = true;
    return absl::InvalidArgumentError(StrCat("request body exceeds ", stream_limit_, " bytes"));
  }
  if (ec == beast::error::timeout) {
    server_.CountReject(Reject::kRequestTimeout);
    return absl::DeadlineExceededError(
        StrCat("no request body bytes arrived for ",
               absl::FormatDuration(server_.limits().request_timeout)));
  }
  if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message ||
      ec == net::error::eof || ec == net::error::connection_reset ||
      ec == net::error::operation_aborted || ec == ssl::error::stream_truncated) {
    return absl::UnavailableError("the client closed the connection before the end of the body");
  }
  if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category()) {
    return absl::InvalidArgumentError(StrCat("malformed request body: ", ec.message()));
  }
  return absl::UnavailableError(StrCat("reading the request body: ", ec.message()));
}

void Connection::HandleRequest() {
  auto& msg = Header();
  req_.method.assign(msg.method_string().data(), msg.method_string().size());
  req_.remote_address = remote_;
  req_.peer_certificate_der = peer_der_;
  std::string_view client_id(msg["X-Request-Id"].data(),
                             msg["X-Request-Id"].size());
  req_.request_id = SaneRequestId(client_id) ? std::string(client_id) : NewRequestId();
  for (const auto& f : msg) {
    req_.headers.Add(std::string(f.name_string()), std::string(f.value()));
  }
  if (stream_parser_) {
    req_.body_stream = this;
  } else {
    req_.body = std::move(parser_->get().body());
  }
  bool keep_alive = (stream_parser_ ? stream_parser_->keep_alive() : parser_->keep_alive()) &&
                    !closing_ && !server_.stopping();
  std::string_view method = MethodLabel(msg.method(), req_.method);

  absl::Status target_ok =
      ParseTarget(std::string_view(msg.target().data(), msg.target().size()), req_);
  if (!target_ok.ok()) {
    if (server_.on_reject()) {
      req_.target.assign(msg.target().data(), msg.target().size());
      req_.path = req_.target.substr(0, req_.target.find('?'));
      server_.on_reject()(req_, 400, std::string(target_ok.message()));
    }
    FinishRequest(Response::Error(target_ok), keep_alive, method);
    return;
  }
  if (!stream_parser_ && server_.RunsInline(req_)) {
    FinishRequest(server_.CallHandler(req_), keep_alive, method);
    return;
  }
  // Off the event loop: nothing else touches this connection until the response is posted back
  // (no read is pending while a request is being handled).
  server_.RunBlocking([self = shared_from_this(), keep_alive, method] {
    Response response = self->server_.CallHandler(self->req_);
    net::post(self->executor(), [self, keep_alive, method, response = std::move(response)]() mutable {
      self->FinishRequest(std::move(response), keep_alive, method);
    });
  });
}

void Connection::StartLater(Deferred deferred, bool keep_alive, std::string_view method) {
  auto later = std::make_shared<Later>(executor());
  later->on_timeout = std::move(deferred.on_timeout);
  later->keep_alive = keep_alive;
  later->method = method;
  later_ = later;
  later->timer.expires_after(deferred.timeout);
  later->timer.async_wait([self = shared_from_this(), later](beast::error_code ec) {
    if (!ec && self->later_ == later) self->TimeOutLater();
  });
  Deferred::Complete complete = [self = shared_from_this(), later](Response r) {
    if (later->answered.exchange(true)) return;
    net::post(self->executor(), [self, r = std::move(r)]() mutable {
      self->FinishLater(std::move(r));
    });
  };
  std::function<void()> cancel;
  try {
    if (deferred.start) cancel = deferred.start(std::move(complete));
  } catch (...) {
    cancel = nullptr;
  }
  // `start` may already have answered (FinishLater is queued behind us): then nothing to drop.
  if (!later->answered.load()) later->cancel = std::move(cancel);
}

void Connection::FinishLater(Response response) {
  std::shared_ptr<Later> later = std::move(later_);
  if (!later) return;
  later->timer.cancel();
  if (response.deferred) {
    response = Response::Error(absl::InternalError("a deferred response answered with another"));
  }
  FinishRequest(std::move(response), later->keep_alive, later->method);
}

void Connection::TimeOutLater() {
  if (!later_ || later_->answered.exchange(true)) return;
  if (later_->cancel) later_->cancel();
  FinishLater(later_->on_timeout ? later_->on_timeout()
                                 : Response::Error(absl::DeadlineExceededError("no answer in time")));
}

void Connection::FinishRequest(Response response, bool keep_alive, std::string_view method) {
  if (response.deferred) {
    StartLater(std::move(*response.deferred), keep_alive, method);
    return;
  }
  if (stream_parser_) {
    if (stream_over_limit_) {
      // Whatever the handler made of its failed read, the client learns why.
      server_.CountReject(Reject::kBodySize);
      response = Response::Error(413, absl::StatusCode::kInvalidArgument,
                                 StrCat("request body exceeds ", stream_limit_, " bytes"));
    }
    // A body the handler left unread (a refusal before reading, a failed read) would be taken
    // for the next request: close instead.
    if (!stream_error_.ok() || !stream_parser_->is_done()) {
      keep_alive = false;
      linger_ = true;
    }
    req_.body_stream = nullptr;
  }
  double seconds = std::chrono::duration<double>(Clock::now() - request_start_).count();
  server_.Observe(req_.route, method, response.status, seconds);
  Send(std::move(response), keep_alive);
}

void Connection::SendError(int status, absl::StatusCode code, std::string_view message,
                           Reject reason) {
  server_.CountReject(reason);
  if (req_.request_id.empty()) req_.request_id = NewRequestId();
  if (server_.on_reject()) {
    req_.remote_address = remote_;
    // A body over the limit is refused as soon as Content-Length is parsed, before the header
    // is complete: record what was read so far (request line, Authorization if it came first).
    if (parser_ || stream_parser_) {
      auto& msg = Header();
      req_.method.assign(msg.method_string().data(), msg.method_string().size());
      req_.target.assign(msg.target().data(), msg.target().size());
      req_.path = req_.target.substr(0, req_.target.find('?'));
      if (msg.find(bhttp::field::authorization) != msg.end()) {
        req_.headers.Add("Authorization", std::string(msg[bhttp::field::authorization]));
      }
    }
    server_.on_reject()(req_, status, message);
  }
  server_.Observe("unmatched", "OTHER", status, 0);
  linger_ = true;  // every refusal here comes before the request was read to its end
  Send(Response::Error(status, code, message), /*keep_alive=*/false);
}

void Connection::Send(Response response, bool keep_alive) {
  if (response.body_source) {
    SendStreamed(std::move(response), keep_alive);
    return;
  }
  res_ = {};
  SetResponseHeader(res_, response, req_.request_id);
  res_.body() = std::move(response.body);
  res_.keep_alive(keep_alive);
  res_.prepare_payload();
  beast::get_lowest_layer(stream_).expires_after(ToChrono(server_.limits().request_timeout));
  bhttp::async_write(stream_, res_,
                     [self = shared_from_this(), keep_alive](beast::error_code ec, size_t n) {
                       self->OnWrite(keep_alive, ec, n);
                     });
}

void Connection::SendStreamed(Response response, bool keep_alive) {
  stream_res_.emplace();
  auto& res = *stream_res_;
  SetResponseHeader(res, response, req_.request_id);
  res.keep_alive(keep_alive);
  if (response.content_length >= 0) {
    res.content_length(static_cast<uint64_t>(response.content_length));
  } else {
    res.chunked(true);
  }
  res.body().data = nullptr;
  res.body().size = 0;
  res.body().more = true;
  source_ = std::move(response.body_source);
  stream_length_ = response.content_length;
  stream_sent_ = 0;
  piece_ = std::make_unique<char[]>(kStreamPiece);
  stream_ser_.emplace(res);
  beast::get_lowest_layer(stream_).expires_after(ToChrono(server_.limits().request_timeout));
  bhttp::async_write_header(stream_, *stream_ser_,
                            [self = shared_from_this(), keep_alive](beast::error_code ec, size_t) {
                              if (ec) {
                                self->EndStream();
                                return;
                              }
                              self->ProducePiece(keep_alive);
                            });
}

void Connection::ProducePiece(bool keep_alive) {
  // The source may block (disk, decryption): never on the loop. One call at a time, and only
  // after the previous piece was written: a slow reader slows the producer.
  server_.RunBlocking([self = shared_from_this(), keep_alive] {
    absl::StatusOr<size_t> piece =
        self->server_.CallSource(self->source_, self->piece_.get(), kStreamPiece);
    net::post(self->executor(), [self, keep_alive, piece = std::move(piece)]() mutable {
      self->WritePiece(keep_alive, std::move(piece));
    });
  });
}

void Connection::WritePiece(bool keep_alive, absl::StatusOr<size_t> piece) {
  const bool bad =
      !piece.ok() || *piece > kStreamPiece ||
      (stream_length_ >= 0 &&
       (stream_sent_ + *piece > static_cast<uint64_t>(stream_length_) ||
        (*piece == 0 && stream_sent_ != static_cast<uint64_t>(stream_length_))));
  if (bad || server_.stopping()) {
    // Cut mid-body (no final chunk, or short of Content-Length): the client cannot mistake the
    // truncated body for a complete one.
    EndStream();
    beast::error_code ignored;
    Socket().shutdown(tcp::socket::shutdown_both, ignored);
    Socket().close(ignored);
    return;
  }
  auto& body = stream_res_->body();
  const bool last = *piece == 0;
  body.data = last ? nullptr : piece_.get();
  body.size = *piece;
  body.more = !last;
  stream_sent_ += *piece;
  beast::get_lowest_layer(stream_).expires_after(ToChrono(server_.limits().request_timeout));
  bhttp::async_write(stream_, *stream_ser_,
                     [self = shared_from_this(), keep_alive, last](beast::error_code ec, size_t) {
                       if (ec == bhttp::error::need_buffer) ec = {};
                       if (ec) {
                         // The client went away or stalled: the producer is never called again.
                         self->EndStream();
                         return;
                       }
                       if (last) {
                         self->EndStream();
                         self->OnWrite(keep_alive, ec, 0);
                         return;
                       }
                       self->ProducePiece(keep_alive);
                     });
}

void Connection::EndStream() {
  stream_ser_.reset();
  stream_res_.reset();
  source_ = nullptr;
  piece_.reset();
}

void Connection::OnWrite(bool keep_alive, beast::error_code ec, size_t) {
  if (ec) return;
  if (!keep_alive) {
    Close();
    return;
  }
  ReadRequest(/*first=*/false);
}

void Connection::Close() {
  if (linger_ && !server_.stopping()) {
    linger_ = false;
    linger_deadline_ = Clock::now() + kLingerTotal;
    linger_buf_ = std::make_unique<char[]>(kLingerChunk);
    LingerRead();
    return;
  }
  // Send close_notify so the client sees a clean end; do not wait long for the peer's reply.
  beast::get_lowest_layer(stream_).expires_after(std::chrono::milliseconds(500));
  stream_.async_shutdown([self = shared_from_this()](beast::error_code) {
    beast::error_code ignored;
    self->Socket().shutdown(tcp::socket::shutdown_both, ignored);
    self->Socket().close(ignored);
  });
}

void Connection::LingerRead() {
  const auto now = Clock::now();
  if (lingered_ >= kLingerBytes || now >= linger_deadline_ || server_.stopping()) {
    linger_buf_.reset();
    Close();
    return;
  }
  beast::get_lowest_layer(stream_).expires_after(
      std::min<Clock::duration>(kLingerIdle, linger_deadline_ - now));
  stream_.async_read_some(net::buffer(linger_buf_.get(), kLingerChunk),
                          [self = shared_from_this()](beast::error_code ec, size_t n) {
                            if (ec) {
                              // The client closed (or went quiet: the timeout closed the
                              // socket); Close() ends whatever is left.
                              self->linger_buf_.reset();
                              self->Close();
                              return;
                            }
                            self->lingered_ += n;
                            self->LingerRead();
                          });
}

void Connection::BeginShutdown() {
  closing_ = true;
  TimeOutLater();  // a long poll ends now, not at its timeout
  if (idle_) {
    beast::error_code ignored;
    Socket().cancel(ignored);
    Socket().close(ignored);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpsServer>> HttpsServer::Create(ServerOptions options,
                                                                 Handler handler) {
  if (!handler) return absl::InvalidArgumentError("server handler is empty");
  WARDEN_RETURN_IF_ERROR(ParseListen(options.listen).status());
  if (options.limits.max_connections < 1) {
    return absl::InvalidArgumentError("max_connections must be at least 1");
  }
  try {
    auto server = std::make_unique<ServerImpl>(std::move(options), std::move(handler));
    WARDEN_RETURN_IF_ERROR(server->ConfigureTls());
    return std::unique_ptr<HttpsServer>(std::move(server));
  } catch (const std::exception& e) {
    return absl::InternalError(StrCat("creating HTTPS server: ", e.what()));
  }
}

}  // namespace warden::http
