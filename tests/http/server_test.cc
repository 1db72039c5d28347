#include "http/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/metrics.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "http/client.h"
#include "pki/pki.h"
#include "tls_conn.h"

namespace warden::http {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using SteadyClock = std::chrono::steady_clock;

const bool kIgnoreSigpipe = [] {
  signal(SIGPIPE, SIG_IGN);
  return true;
}();

// Metrics recorded after the server closed a connection may land a moment after the client saw the
// close: poll (bounded) instead of sleeping.
bool EventuallyContains(const common::metrics::Registry& registry, const std::string& needle) {
  auto deadline = SteadyClock::now() + std::chrono::seconds(3);
  while (SteadyClock::now() < deadline) {
    if (registry.RenderText().find(needle) != std::string::npos) return true;
    std::this_thread::yield();
  }
  return false;
}

std::string Get(std::string_view path, std::string_view extra = "") {
  return std::string("GET ") + std::string(path) + " HTTP/1.1\r\nHost: localhost\r\n" +
         std::string(extra) + "\r\n";
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_a_ = new std::string(MakeTempDir());
    dir_b_ = new std::string(MakeTempDir());
    common::FakeClock clock(absl::Now());
    auto a = pki::EnsureServerPki(*dir_a_, {}, clock);
    auto b = pki::EnsureServerPki(*dir_b_, {}, clock);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    pki_a_ = new pki::ServerPki(*a);
    pki_b_ = new pki::ServerPki(*b);
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_a_);
    std::filesystem::remove_all(*dir_b_);
  }

  void SetUp() override {
    ASSERT_TRUE(router_.Add("GET", "/hello", [](Request& req) {
      return Response::Json(200, common::Json{{"hello", "world"}, {"id", req.request_id}});
    }).ok());
    ASSERT_TRUE(router_.Add("POST", "/echo", [](Request& req) {
      return Response::Text(200, req.body);
    }).ok());
    ASSERT_TRUE(router_.Add("GET", "/items/{item}", [](Request& req) {
      return Response::Json(200, common::Json{{"item", std::string(req.Param("item"))}});
    }).ok());
  }

  void StartServer(common::HttpLimits limits = {}, const pki::ServerPki* pki = nullptr) {
    if (pki == nullptr) pki = pki_a_;
    ServerOptions opts;
    opts.listen = "127.0.0.1:0";
    opts.cert_pem = pki->server_cert_pem;
    opts.key_pem = pki->server_key_pem;
    opts.chain_pem = pki->chain_pem;
    opts.limits = limits;
    opts.threads = 2;
    opts.metrics = &registry_;
    auto server = HttpsServer::Create(opts, [this](Request& req) { return router_.Dispatch(req); });
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_TRUE(server_->Start().ok());
    ASSERT_GT(server_->port(), 0);
  }

  void TearDown() override {
    if (server_) server_->Stop();
  }

  std::string BaseUrl() const { return "https://127.0.0.1:" + std::to_string(server_->port()); }

  static std::string* dir_a_;
  static std::string* dir_b_;
  static pki::ServerPki* pki_a_;
  static pki::ServerPki* pki_b_;
  Router<int> router_;
  common::metrics::Registry registry_;
  std::unique_ptr<HttpsServer> server_;
};

std::string* ServerTest::dir_a_;
std::string* ServerTest::dir_b_;
pki::ServerPki* ServerTest::pki_a_;
pki::ServerPki* ServerTest::pki_b_;

TEST_F(ServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  StartServer();
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  EXPECT_EQ(conn.version(), TLS1_3_VERSION);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(conn.Write(Get("/hello")));
    auto r = conn.ReadResponse();
    ASSERT_TRUE(r.has_value()) << "request " << i;
    EXPECT_EQ(r->status, 200);
    EXPECT_THAT(r->body, HasSubstr("\"hello\":\"world\""));
    EXPECT_THAT(r->head, HasSubstr("X-Request-Id: "));
  }
  // Pipelined: two requests in one write.
  ASSERT_TRUE(conn.Write(Get("/items/a") + Get("/items/b%20c")));
  auto r1 = conn.ReadResponse();
  auto r2 = conn.ReadResponse();
  ASSERT_TRUE(r1 && r2);
  EXPECT_EQ(r1->body, R"({"item":"a"})");
  EXPECT_EQ(r2->body, R"({"item":"b c"})");
}

TEST_F(ServerTest, EchoesSaneRequestIdAndReplacesOthers) {
  StartServer();
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  ASSERT_TRUE(conn.Write(Get("/hello", "X-Request-Id: abc-123_XYZ\r\n")));
  auto r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_THAT(r->head, HasSubstr("X-Request-Id: abc-123_XYZ\r\n"));
  ASSERT_TRUE(conn.Write(Get("/hello", "X-Request-Id: <script>\r\n")));
  r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_THAT(r->head, ::testing::Not(HasSubstr("<script>")));
  EXPECT_THAT(r->head, ::testing::ContainsRegex("X-Request-Id: [0-9a-f]{32}\r\n"));
}

TEST_F(ServerTest, UnknownRouteGetsErrorJson) {
  StartServer();
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  ASSERT_TRUE(conn.Write(Get("/nope")));
  auto r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_THAT(r->head, HasSubstr("Content-Type: application/json"));
  auto j = common::Json::parse(r->body);
  EXPECT_EQ(j["error"]["code"], "NOT_FOUND");
  ASSERT_TRUE(conn.Write(Get("/items/..%2Fetc")));
  r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
}

TEST_F(ServerTest, OversizedBodyIs413) {
  common::HttpLimits limits;
  limits.max_body_bytes = 1024;
  StartServer(limits);
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  // Refused from Content-Length alone, before the body is read.
  ASSERT_TRUE(conn.Write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n"));
  auto r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_THAT(r->body, HasSubstr("1024"));
  EXPECT_TRUE(conn.WaitForClose());
  EXPECT_THAT(registry_.RenderText(),
              HasSubstr("http_limit_rejections_total{reason=\"body_size\"} 1"));
}

TEST_F(ServerTest, OversizedChunkedBodyIs413) {
  common::HttpLimits limits;
  limits.max_body_bytes = 1024;
  StartServer(limits);
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  std::string chunk(800, 'a');
  ASSERT_TRUE(conn.Write("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "320\r\n" + chunk + "\r\n320\r\n" + chunk + "\r\n0\r\n\r\n"));
  auto r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
}

// A client that sends its whole body without waiting (no Expect: 100-continue, as curl does
// for small uploads and most libraries always) must still read the 413. The server refuses from
// Content-Length, then reads and discards what keeps coming instead of closing on unread bytes
// (which makes the kernel answer RST: the client's writes fail with EPIPE/ECONNRESET before it
// reads the answer). Without the lingering close the writes below fail.
TEST_F(ServerTest, ARefusedBodyIsReadAwaySoTheClientStillReadsThe413) {
  common::HttpLimits limits;
  limits.max_body_bytes = 1024;
  StartServer(limits);
  for (const char* framing : {"Content-Length: 4194304", "Transfer-Encoding: chunked"}) {
    SCOPED_TRACE(framing);
    TlsConn conn(server_->port());
    ASSERT_TRUE(conn.Handshake());
    ASSERT_TRUE(conn.Write(std::string("POST /echo HTTP/1.1\r\nHost: x\r\n") + framing + "\r\n\r\n"));
    const bool chunked = std::string_view(framing).find("chunked") != std::string_view::npos;
    const std::string piece(64 * 1024, 'z');
    for (int i = 0; i < 64; ++i) {  // 4 MiB, far more than the socket buffers hold
      ASSERT_TRUE(conn.Write(chunked ? "10000\r\n" + piece + "\r\n" : piece))
          << "write " << i << " failed: the server closed on the unread body";
    }
    if (chunked) {
      ASSERT_TRUE(conn.Write("0\r\n\r\n"));
    }
    auto r = conn.ReadResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    EXPECT_THAT(r->body, HasSubstr("1024"));
    EXPECT_THAT(r->head, HasSubstr("Connection: close"));
    EXPECT_TRUE(conn.WaitForClose());  // and the server still closes, once the client is quiet
  }
}

// The lingering is bounded: a client that never stops sending is cut off after at most
// 16 MiB or 2 s, so a refused upload cannot hold a connection.
TEST_F(ServerTest, TheLingeringCloseIsBounded) {
  common::HttpLimits limits;
  limits.max_body_bytes = 1024;
  StartServer(limits);
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  ASSERT_TRUE(conn.Write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n"));
  const std::string piece(256 * 1024, 'z');
  const auto start = std::chrono::steady_clock::now();
  size_t sent = 0;
  while (conn.Write(piece)) {
    sent += piece.size();
    ASSERT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10))
        << "the server kept reading a refused body for 10 s (" << sent << " bytes)";
  }
  EXPECT_LE(sent, size_t{64} << 20);
}

TEST_F(ServerTest, BodyWithinLimitIsServed) {
  common::HttpLimits limits;
  limits.max_body_bytes = 1024;
  StartServer(limits);
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  ASSERT_TRUE(conn.Write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"));
  auto r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello");
}

TEST_F(ServerTest, OversizedHeadersAre431) {
  common::HttpLimits limits;
  limits.max_header_bytes = 4096;
  StartServer(limits);
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  ASSERT_TRUE(conn.Write(Get("/hello", "X-Big: " + std::string(8000, 'b') + "\r\n")));
  auto r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
  EXPECT_TRUE(conn.WaitForClose());
}

TEST_F(ServerTest, SlowHeadersAreCutOffAtHeaderTimeout) {
  common::HttpLimits limits;
  limits.header_timeout = absl::Milliseconds(300);
  StartServer(limits);
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  auto start = SteadyClock::now();
  ASSERT_TRUE(conn.Write("GET /hello HTTP/1.1\r\nHost: x\r\n"));  // never finishes the headers
  EXPECT_TRUE(conn.WaitForClose());
  auto elapsed = SteadyClock::now() - start;
  EXPECT_LT(elapsed, std::chrono::seconds(3));
  EXPECT_GE(elapsed, std::chrono::milliseconds(200));
  EXPECT_TRUE(EventuallyContains(registry_,
                                 "http_limit_rejections_total{reason=\"header_timeout\"} 1"));
}

TEST_F(ServerTest, SilentConnectionIsCutOffBeforeHandshake) {
  common::HttpLimits limits;
  limits.header_timeout = absl::Milliseconds(300);
  StartServer(limits);
  int fd = ConnectTcp(server_->port());
  ASSERT_GE(fd, 0);
  auto start = SteadyClock::now();
  char c;
  EXPECT_LE(::recv(fd, &c, 1, 0), 0);  // server closes; SO_RCVTIMEO is 5 s
  EXPECT_LT(SteadyClock::now() - start, std::chrono::seconds(3));
  ::close(fd);
}

TEST_F(ServerTest, IdleKeepAliveConnectionIsClosed) {
  common::HttpLimits limits;
  limits.idle_timeout = absl::Milliseconds(300);
  StartServer(limits);
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  ASSERT_TRUE(conn.Write(Get("/hello")));
  ASSERT_TRUE(conn.ReadResponse());
  auto start = SteadyClock::now();
  EXPECT_TRUE(conn.WaitForClose());
  EXPECT_LT(SteadyClock::now() - start, std::chrono::seconds(3));
}

TEST_F(ServerTest, Tls10ClientIsRefused) {
  StartServer();
  TlsConn conn(server_->port(), TLS1_VERSION, TLS1_VERSION);
  EXPECT_FALSE(conn.Handshake());
}

TEST_F(ServerTest, Tls11ClientIsRefused) {
  StartServer();
  TlsConn conn(server_->port(), TLS1_VERSION, TLS1_1_VERSION);
  EXPECT_FALSE(conn.Handshake());
  EXPECT_TRUE(EventuallyContains(registry_, "http_tls_handshake_failures_total 1"));
}

TEST_F(ServerTest, Tls12ClientIsServed) {
  StartServer();
  TlsConn conn(server_->port(), TLS1_2_VERSION, TLS1_2_VERSION);
  ASSERT_TRUE(conn.Handshake());
  EXPECT_EQ(conn.version(), TLS1_2_VERSION);
  ASSERT_TRUE(conn.Write(Get("/hello")));
  auto r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(ServerTest, PlainHttpToTlsPortGets400AndClose) {
  StartServer();
  int fd = ConnectTcp(server_->port());
  ASSERT_GE(fd, 0);
  std::string req = Get("/hello");
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  std::string got;
  char buf[1024];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) got.append(buf, static_cast<size_t>(n));
  ::close(fd);
  EXPECT_THAT(got, StartsWith("HTTP/1.1 400 Bad Request\r\n"));
  EXPECT_THAT(got, HasSubstr("HTTPS"));
  EXPECT_THAT(got, HasSubstr("Connection: close"));
}

TEST_F(ServerTest, ConnectionLimitIsEnforced) {
  common::HttpLimits limits;
  limits.max_connections = 2;
  StartServer(limits);
  auto a = std::make_unique<TlsConn>(server_->port());
  TlsConn b(server_->port());
  for (TlsConn* c : {a.get(), &b}) {
    ASSERT_TRUE(c->Handshake());
    ASSERT_TRUE(c->Write(Get("/hello")));  // a response proves the server holds the connection
    ASSERT_TRUE(c->ReadResponse());
  }
  TlsConn third(server_->port());
  EXPECT_FALSE(third.Handshake());
  EXPECT_THAT(registry_.RenderText(),
              HasSubstr("http_limit_rejections_total{reason=\"connections\"} 1"));
  // Closing one frees a slot (the server notices the close asynchronously: retry, no sleep).
  a.reset();
  bool served = false;
  auto deadline = SteadyClock::now() + std::chrono::seconds(5);
  while (!served && SteadyClock::now() < deadline) {
    TlsConn again(server_->port());
    served = again.Handshake() && again.Write(Get("/hello")) && again.ReadResponse().has_value();
  }
  EXPECT_TRUE(served);
}

TEST_F(ServerTest, MetricsCountRequestsByRoutePattern) {
  StartServer();
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  ASSERT_TRUE(conn.Write(Get("/items/x") + Get("/items/y") + Get("/nowhere")));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(conn.ReadResponse());
  std::string text = registry_.RenderText();
  EXPECT_THAT(text, HasSubstr(
      "http_requests_total{route=\"/items/{item}\",method=\"GET\",status=\"200\"} 2"));
  EXPECT_THAT(text,
              HasSubstr("http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1"));
  EXPECT_THAT(text, HasSubstr("http_request_duration_seconds_count{route=\"/items/{item}\"} 2"));
}

TEST_F(ServerTest, ClientPinnedToServerCaSucceeds) {
  StartServer();
  auto client = HttpsClient::Create({BaseUrl(), pki_a_->ca_cert_pem});
  ASSERT_TRUE(client.ok()) << client.status();
  auto r = (*client)->Do("GET", "/hello");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->body, HasSubstr("world"));
  EXPECT_FALSE(r->Header("x-request-id").empty());
  auto post = (*client)->Do("POST", "/echo", "payload", {{"Content-Type", "text/plain"}});
  ASSERT_TRUE(post.ok()) << post.status();
  EXPECT_EQ(post->body, "payload");
  auto missing = (*client)->Do("GET", "/missing");
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
}

TEST_F(ServerTest, ClientPinnedToOtherCaIsRefused) {
  StartServer();  // serves pki_a_
  auto client = HttpsClient::Create({BaseUrl(), pki_b_->ca_cert_pem});
  ASSERT_TRUE(client.ok()) << client.status();
  auto r = (*client)->Do("GET", "/hello");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsPinnedCaMismatch(r.status())) << r.status();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(r.status().message()),
              StartsWith("server certificate does not chain to the pinned CA"));
}

TEST_F(ServerTest, ClientRefusesPlainHttpUrl) {
  auto client = HttpsClient::Create({"http://127.0.0.1:1", ""});
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ServerTest, FetchServerCaChainReturnsCaAndFingerprint) {
  StartServer();
  auto chain = FetchServerCaChain(BaseUrl() + "/hello");
  ASSERT_TRUE(chain.ok()) << chain.status();
  EXPECT_EQ(chain->fingerprint, pki_a_->ca_fingerprint);
  EXPECT_EQ(*pki::CertificateFingerprint(chain->ca_pem), pki_a_->ca_fingerprint);
  // The fetched CA then works as the pin.
  auto client = HttpsClient::Create({BaseUrl(), chain->ca_pem});
  ASSERT_TRUE(client.ok());
  auto r = (*client)->Do("GET", "/hello");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
}

TEST_F(ServerTest, FetchServerCaChainNeedsTheChain) {
  pki::ServerPki leaf_only = *pki_a_;
  leaf_only.chain_pem.clear();
  StartServer({}, &leaf_only);
  auto chain = FetchServerCaChain(BaseUrl());
  EXPECT_EQ(chain.status().code(), absl::StatusCode::kFailedPrecondition) << chain.status();
}

// Long polls: pending deferred answers keep no thread, so other requests are served while more
// of them wait than there are blocking threads; each is answered from another thread.
class DeferredTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    auto later = [this](std::chrono::milliseconds timeout) {
      return [this, timeout](Request&) {
        Deferred d;
        d.timeout = timeout;
        d.on_timeout = [] { return Response::Text(200, "timeout"); };
        d.start = [this](Deferred::Complete complete) -> std::function<void()> {
          std::lock_guard lock(mu_);
          const int id = ++next_;
          pending_[id] = std::move(complete);
          return [this, id] {
            std::lock_guard lock(mu_);
            pending_.erase(id);
            ++cancelled_;
          };
        };
        return Response::Later(std::move(d));
      };
    };
    ASSERT_TRUE(router_.Add("GET", "/later", later(std::chrono::seconds(20))).ok());
    ASSERT_TRUE(router_.Add("GET", "/later-short", later(std::chrono::milliseconds(200))).ok());
  }
  size_t Pending() {
    std::lock_guard lock(mu_);
    return pending_.size();
  }
  bool WaitPending(size_t n) {
    auto deadline = SteadyClock::now() + std::chrono::seconds(5);
    while (Pending() < n && SteadyClock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return Pending() >= n;
  }
  // Answers every pending request from this (non-server) thread.
  void CompleteAll(const std::string& text) {
    std::map<int, Deferred::Complete> all;
    {
      std::lock_guard lock(mu_);
      all.swap(pending_);
    }
    for (auto& [id, complete] : all) complete(Response::Text(200, text + std::to_string(id)));
  }

  std::mutex mu_;
  std::map<int, Deferred::Complete> pending_;
  int next_ = 0;
  int cancelled_ = 0;
};

TEST_F(DeferredTest, ManyPendingAnswersHoldNoThreadAndArriveFromAnotherThread) {
  StartServer();  // 2 blocking threads
  std::vector<std::unique_ptr<TlsConn>> polls;
  for (int i = 0; i < 8; ++i) {
    polls.push_back(std::make_unique<TlsConn>(server_->port()));
    ASSERT_TRUE(polls.back()->Handshake());
    ASSERT_TRUE(polls.back()->Write(Get("/later")));
  }
  ASSERT_TRUE(WaitPending(8)) << Pending();
  // Eight waits, two blocking threads: a request that needs the pool is still served now.
  TlsConn other(server_->port());
  ASSERT_TRUE(other.Handshake());
  ASSERT_TRUE(other.Write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"));
  auto echo = other.ReadResponse();
  ASSERT_TRUE(echo.has_value());
  EXPECT_EQ(echo->body, "hi");
  std::thread answerer([this] { CompleteAll("done "); });
  answerer.join();
  for (auto& c : polls) {
    auto r = c->ReadResponse();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 200);
    EXPECT_THAT(r->body, StartsWith("done "));
    // The connection stays usable for the next request.
    ASSERT_TRUE(c->Write(Get("/hello")));
    auto again = c->ReadResponse();
    ASSERT_TRUE(again.has_value());
    EXPECT_THAT(again->body, HasSubstr("world"));
  }
  EXPECT_EQ(cancelled_, 0);
}

TEST_F(DeferredTest, TimeoutAnswersDropsTheRegistrationAndIgnoresALateComplete) {
  StartServer();
  TlsConn c(server_->port());
  ASSERT_TRUE(c.Handshake());
  ASSERT_TRUE(c.Write(Get("/later-short")));
  ASSERT_TRUE(WaitPending(1));
  Deferred::Complete late;
  {
    std::lock_guard lock(mu_);
    late = pending_.begin()->second;  // kept past the timeout on purpose
  }
  auto t0 = SteadyClock::now();
  auto r = c.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, "timeout");
  EXPECT_LT(SteadyClock::now() - t0, std::chrono::seconds(3));
  EXPECT_EQ(Pending(), 0u) << "the registration was dropped";
  EXPECT_EQ(cancelled_, 1);
  late(Response::Text(200, "too late"));  // ignored: the next response is the next request's
  late = nullptr;
  ASSERT_TRUE(c.Write(Get("/items/x")));
  auto next = c.ReadResponse();
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->body, R"({"item":"x"})");
}

TEST_F(DeferredTest, StopAnswersPendingPollsAtOnce) {
  StartServer();
  TlsConn c(server_->port());
  ASSERT_TRUE(c.Handshake());
  ASSERT_TRUE(c.Write(Get("/later")));  // would wait 20 s
  ASSERT_TRUE(WaitPending(1));
  auto t0 = SteadyClock::now();
  std::thread stopper([this] { server_->Stop(); });
  auto r = c.ReadResponse();
  stopper.join();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, "timeout");
  EXPECT_LT(SteadyClock::now() - t0, std::chrono::seconds(5)) << "Stop did not wait out the poll";
  EXPECT_EQ(cancelled_, 1);
}

TEST_F(ServerTest, StopClosesIdleConnectionsAndReturns) {
  StartServer();
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  ASSERT_TRUE(conn.Write(Get("/hello")));
  ASSERT_TRUE(conn.ReadResponse());
  auto start = SteadyClock::now();
  server_->Stop();
  EXPECT_LT(SteadyClock::now() - start, std::chrono::seconds(2));
  EXPECT_TRUE(conn.WaitForClose());
  server_.reset();
}

TEST(ServerCreateTest, RejectsBadOptions) {
  ServerOptions opts;
  opts.listen = "nonsense";
  auto h = [](Request&) { return Response{}; };
  EXPECT_EQ(HttpsServer::Create(opts, h).status().code(), absl::StatusCode::kInvalidArgument);
  opts.listen = "127.0.0.1:0";
  opts.cert_pem = "not a cert";
  EXPECT_EQ(HttpsServer::Create(opts, h).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace warden::http
