// Streamed request and response bodies (ServerOptions::stream_body_limit, Request::body_stream,
// Response::body_source) against a live server: both directions with large synthetic streams in
// bounded memory (peak RSS), Content-Length and chunked, backpressure both ways, a stalled and an
// aborted upload, malformed chunked framing, per-route limits (413), request smuggling through
// an unread body, and pipelining after a streamed request.
//
// Sizes: WARDEN_STREAM_TEST_MIB (default 256 MiB per direction and framing); the `slow` label
// runs the same tests with 4096 MiB.
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/metrics.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "http/client.h"
#include "http/server.h"
#include "pki/pki.h"
#include "tls_conn.h"

namespace warden::http {
namespace {

using ::testing::HasSubstr;
using SteadyClock = std::chrono::steady_clock;

const bool kIgnoreSigpipe = [] {
  signal(SIGPIPE, SIG_IGN);
  return true;
}();

uint64_t StreamBytes() {
  const char* env = std::getenv("WARDEN_STREAM_TEST_MIB");
  uint64_t mib = env != nullptr ? std::strtoull(env, nullptr, 10) : 256;
  return (mib == 0 ? 256 : mib) << 20;
}

// /proc/self/status `field` ("VmHWM:", "VmRSS:") in MiB; VmHWM is the peak resident set since
// the last ResetPeakRss.
void ResetPeakRss() { std::ofstream("/proc/self/clear_refs") << "5"; }
double StatusMib(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::strtod(line.c_str() + field.size(), nullptr) / 1024.0;
  }
  return -1;
}
double PeakRssMib() { return StatusMib("VmHWM:"); }
double RssMib() { return StatusMib("VmRSS:"); }

// Deterministic synthetic content: byte i of a stream is a function of i, so any loss,
// duplication or reordering changes the receiver's digest.
inline char PatternByte(uint64_t i) { return static_cast<char>((i * 2654435761u) >> 13); }
void FillPattern(char* buf, size_t n, uint64_t offset) {
  for (size_t k = 0; k < n; ++k) buf[k] = PatternByte(offset + k);
}
// Order-sensitive digest (FNV-1a over 8-byte words and the tail).
struct Digest {
  uint64_t h = 1469598103934665603ull;
  uint64_t bytes = 0;
  void Update(const char* p, size_t n) {
    for (size_t k = 0; k < n; ++k) {
      h = (h ^ static_cast<unsigned char>(p[k])) * 1099511628211ull;
    }
    bytes += n;
  }
};
Digest PatternDigest(uint64_t n) {
  Digest d;
  char buf[65536];
  for (uint64_t off = 0; off < n;) {
    size_t take = static_cast<size_t>(std::min<uint64_t>(sizeof(buf), n - off));
    FillPattern(buf, take, off);
    d.Update(buf, take);
    off += take;
  }
  return d;
}

class StreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir());
    common::FakeClock clock(absl::Now());
    auto a = pki::EnsureServerPki(*dir_, {}, clock);
    ASSERT_TRUE(a.ok()) << a.status();
    pki_ = new pki::ServerPki(*a);
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(*dir_); }

  void SetUp() override {
    // Buffered routes.
    ASSERT_TRUE(router_.Add("GET", "/hello", [](Request&) {
      return Response::Json(200, common::Json{{"hello", "world"}});
    }).ok());
    ASSERT_TRUE(router_.Add("POST", "/echo", [](Request& req) {
      return Response::Text(200, req.body);
    }).ok());
    // Streamed upload: digests the body as it is pulled, 64 KiB at a time.
    ASSERT_TRUE(router_.Add("PUT", "/upload", [this](Request& req) {
      if (req.body_stream == nullptr) return Response::Text(500, "not streamed");
      Digest d;
      std::string buf(65536, '\0');
      absl::Status error;
      for (;;) {
        if (hold_reader_.load()) {
          std::unique_lock lock(mu_);
          cv_.wait(lock, [this] { return !hold_reader_.load(); });
        }
        auto n = req.body_stream->Read(buf.data(), buf.size());
        if (!n.ok()) {
          error = n.status();
          break;
        }
        if (*n == 0) break;
        d.Update(buf.data(), *n);
        uploaded_.store(d.bytes);
        if (hold_after_ > 0 && d.bytes >= hold_after_) {
          hold_after_ = 0;
          hold_reader_.store(true);
        }
      }
      {
        std::lock_guard lock(mu_);
        last_upload_ = d;
        last_error_ = error;
        ++uploads_done_;
      }
      cv_.notify_all();
      if (!error.ok()) return Response::Error(error);
      return Response::Json(200, common::Json{{"bytes", d.bytes}, {"digest", d.h}});
    }).ok());
    // A streamed route whose handler refuses without reading the body.
    ASSERT_TRUE(router_.Add("PUT", "/refuse", [](Request&) {
      return Response::Error(absl::PermissionDeniedError("no"));
    }).ok());
    // Streamed download of `n` pattern bytes; `chunked=1` omits Content-Length; `fail_at` makes
    // the producer fail once it passed that many bytes.
    ASSERT_TRUE(router_.Add("GET", "/download", [this](Request& req) {
      uint64_t n = std::strtoull(std::string(req.Query("n")).c_str(), nullptr, 10);
      uint64_t fail_at = std::strtoull(std::string(req.Query("fail_at")).c_str(), nullptr, 10);
      struct Alive {
        std::atomic<int>* live;
        explicit Alive(std::atomic<int>* l) : live(l) { ++*live; }
        ~Alive() { --*live; }
      };
      auto alive = std::make_shared<Alive>(&sources_alive_);
      auto sent = std::make_shared<uint64_t>(0);
      Response r;
      r.content_type = "application/octet-stream";
      r.content_length = req.Query("chunked") == "1" ? -1 : static_cast<int64_t>(n);
      r.body_source = [this, alive, sent, n, fail_at](char* buf, size_t max) -> absl::StatusOr<size_t> {
        if (fail_at > 0 && *sent >= fail_at) return absl::DataLossError("producer failed");
        size_t take = static_cast<size_t>(std::min<uint64_t>(max, n - *sent));
        FillPattern(buf, take, *sent);
        *sent += take;
        produced_.store(*sent);
        ++source_calls_;
        return take;
      };
      return r;
    }).ok());
  }

  void StartServer(common::HttpLimits limits = {}, uint64_t stream_limit = uint64_t{1} << 40) {
    ServerOptions opts;
    opts.listen = "127.0.0.1:0";
    opts.cert_pem = pki_->server_cert_pem;
    opts.key_pem = pki_->server_key_pem;
    opts.chain_pem = pki_->chain_pem;
    opts.limits = limits;
    opts.metrics = &registry_;
    opts.runs_inline = [](const Request& req) { return req.method == "GET"; };
    opts.stream_body_limit = [stream_limit](std::string_view method, std::string_view target) {
      return method == "PUT" ? stream_limit : uint64_t{0};
    };
    auto server = HttpsServer::Create(opts, [this](Request& req) { return router_.Dispatch(req); });
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_TRUE(server_->Start().ok());
  }

  void TearDown() override {
    ReleaseReader();
    if (server_) server_->Stop();
  }

  std::unique_ptr<HttpsClient> Client() {
    ClientOptions o;
    o.base_url = "https://127.0.0.1:" + std::to_string(server_->port());
    o.ca_pem = pki_->ca_cert_pem;
    auto c = HttpsClient::Create(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return std::move(*c);
  }

  void ReleaseReader() {
    hold_reader_.store(false);
    cv_.notify_all();
  }
  bool WaitUploads(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return uploads_done_ >= n; });
  }

  // Streams `n` pattern bytes up through the client (Content-Length or chunked).
  void UploadRoundTrip(uint64_t n, bool chunked) {
    StartServer();
    auto client = Client();
    // The big allocations of the test itself are made; from here on memory must stay flat.
    ResetPeakRss();
    double base = RssMib();
    uint64_t offset = 0;
    StreamTransfer t;
    t.size = chunked ? -1 : static_cast<int64_t>(n);
    t.source = [&](char* buf, size_t max) -> absl::StatusOr<size_t> {
      size_t take = static_cast<size_t>(std::min<uint64_t>(max, n - offset));
      FillPattern(buf, take, offset);
      offset += take;
      return take;
    };
    auto start = SteadyClock::now();
    auto r = client->Stream("PUT", "/upload", t);
    double secs = std::chrono::duration<double>(SteadyClock::now() - start).count();
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, 200) << r->body;
    Digest want = PatternDigest(n);
    auto j = common::Json::parse(r->body);
    EXPECT_EQ(j["bytes"].get<uint64_t>(), n);
    EXPECT_EQ(j["digest"].get<uint64_t>(), want.h);
    double peak = PeakRssMib();
    std::cout << "upload " << (n >> 20) << " MiB " << (chunked ? "chunked" : "content-length")
              << ": " << secs << " s, peak RSS " << peak << " MiB (base " << base << ")\n";
    // Client and server share this process: buffering either side would add the whole stream.
    EXPECT_LT(peak - base, 48.0) << "peak RSS grew by " << (peak - base) << " MiB";
  }

  void DownloadRoundTrip(uint64_t n, bool chunked) {
    StartServer();
    auto client = Client();
    ResetPeakRss();
    double base = RssMib();
    Digest got;
    StreamTransfer t;
    t.sink = [&](std::string_view piece) {
      got.Update(piece.data(), piece.size());
      return absl::OkStatus();
    };
    auto start = SteadyClock::now();
    auto r = client->Stream("GET", "/download?n=" + std::to_string(n) + (chunked ? "&chunked=1" : ""), t);
    double secs = std::chrono::duration<double>(SteadyClock::now() - start).count();
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, 200);
    EXPECT_EQ(got.bytes, n);
    EXPECT_EQ(got.h, PatternDigest(n).h);
    if (chunked) {
      EXPECT_THAT(std::string(r->Header("Transfer-Encoding")), HasSubstr("chunked"));
    } else {
      EXPECT_EQ(r->Header("Content-Length"), std::to_string(n));
    }
    double peak = PeakRssMib();
    std::cout << "download " << (n >> 20) << " MiB " << (chunked ? "chunked" : "content-length")
              << ": " << secs << " s, peak RSS " << peak << " MiB (base " << base << ")\n";
    EXPECT_LT(peak - base, 48.0) << "peak RSS grew by " << (peak - base) << " MiB";
  }

  static std::string* dir_;
  static pki::ServerPki* pki_;
  Router<int> router_;
  common::metrics::Registry registry_;
  std::unique_ptr<HttpsServer> server_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> hold_reader_{false};
  uint64_t hold_after_ = 0;
  std::atomic<uint64_t> uploaded_{0};
  Digest last_upload_;       // guarded by mu_
  absl::Status last_error_;  // guarded by mu_
  int uploads_done_ = 0;     // guarded by mu_
  std::atomic<uint64_t> produced_{0};
  std::atomic<int> source_calls_{0};
  std::atomic<int> sources_alive_{0};
};

std::string* StreamTest::dir_;
pki::ServerPki* StreamTest::pki_;

TEST_F(StreamTest, LargeUploadWithContentLengthInBoundedMemory) {
  UploadRoundTrip(StreamBytes(), /*chunked=*/false);
}

TEST_F(StreamTest, LargeChunkedUploadInBoundedMemory) {
  UploadRoundTrip(StreamBytes(), /*chunked=*/true);
}

TEST_F(StreamTest, LargeDownloadWithContentLengthInBoundedMemory) {
  DownloadRoundTrip(StreamBytes(), /*chunked=*/false);
}

TEST_F(StreamTest, LargeChunkedDownloadInBoundedMemory) {
  DownloadRoundTrip(StreamBytes(), /*chunked=*/true);
}

TEST_F(StreamTest, EmptyBodiesBothWays) {
  StartServer();
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  ASSERT_TRUE(conn.Write("PUT /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"));
  auto r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->body, HasSubstr("\"bytes\":0"));
  ASSERT_TRUE(conn.Write("GET /download?n=0&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n"));
  r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  auto body = conn.ReadChunkedBody();
  ASSERT_TRUE(body);
  EXPECT_EQ(*body, "");
}

TEST_F(StreamTest, OtherRoutesKeepTheBufferedLimit) {
  common::HttpLimits limits;
  limits.max_body_bytes = 1 << 20;
  StartServer(limits);
  {
    // Declared: refused before any body byte is read.
    TlsConn conn(server_->port());
    ASSERT_TRUE(conn.Handshake());
    ASSERT_TRUE(conn.Write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n"));
    auto r = conn.ReadResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    EXPECT_THAT(r->body, HasSubstr("1048576"));
    EXPECT_TRUE(conn.WaitForClose());
  }
  {
    // Chunked: refused once the decoded body passes the limit.
    TlsConn conn(server_->port());
    ASSERT_TRUE(conn.Handshake());
    std::string chunk(600 * 1024, 'a');
    char size[32];
    std::snprintf(size, sizeof(size), "%zx\r\n", chunk.size());
    ASSERT_TRUE(conn.Write("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"));
    conn.Write(size + chunk + "\r\n" + size + chunk + "\r\n0\r\n\r\n");
    auto r = conn.ReadResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
  }
  {
    // Within the limit: still served from Request::body.
    TlsConn conn(server_->port());
    ASSERT_TRUE(conn.Handshake());
    ASSERT_TRUE(conn.Write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"));
    auto r = conn.ReadResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "hello");
  }
}

TEST_F(StreamTest, StreamedRouteHasItsOwnLimit) {
  StartServer({}, /*stream_limit=*/4 << 20);
  {
    TlsConn conn(server_->port());
    ASSERT_TRUE(conn.Handshake());
    ASSERT_TRUE(conn.Write("PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4194305\r\n\r\n"));
    auto r = conn.ReadResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    EXPECT_THAT(r->body, HasSubstr("4194304"));
  }
  {
    // Chunked past the limit: the handler's read fails and the client gets 413.
    TlsConn conn(server_->port());
    ASSERT_TRUE(conn.Handshake());
    ASSERT_TRUE(conn.Write("PUT /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"));
    std::string chunk(1 << 20, 'b');
    for (int i = 0; i < 5; ++i) {
      if (!conn.Write("100000\r\n" + chunk + "\r\n")) break;
    }
    auto r = conn.ReadResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    ASSERT_TRUE(WaitUploads(1));
    std::lock_guard lock(mu_);
    EXPECT_LE(last_upload_.bytes, uint64_t{4} << 20);
    EXPECT_THAT(std::string(last_error_.message()), HasSubstr("exceeds"));
  }
  // Exactly at the limit is fine.
  auto client = Client();
  uint64_t off = 0, n = 4 << 20;
  StreamTransfer t;
  t.size = static_cast<int64_t>(n);
  t.source = [&](char* buf, size_t max) -> absl::StatusOr<size_t> {
    size_t take = static_cast<size_t>(std::min<uint64_t>(max, n - off));
    FillPattern(buf, take, off);
    off += take;
    return take;
  };
  auto r = client->Stream("PUT", "/upload", t);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
}

TEST_F(StreamTest, MalformedChunkedFramingIsRefused) {
  StartServer();
  const std::vector<std::string> bad = {
      "zz\r\nhello\r\n0\r\n\r\n",                        // not hex
      "ffffffffffffffffffff\r\nx\r\n",                  // chunk size overflows 64 bits
      "5\r\nhelloXX0\r\n\r\n",                          // missing CRLF after the data
      "5;" + std::string(400000, 'e') + "\r\nhello\r\n",  // endless chunk extension
  };
  int served = 0;
  for (const auto& body : bad) {
    TlsConn conn(server_->port());
    ASSERT_TRUE(conn.Handshake());
    conn.Write("PUT /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body);
    auto r = conn.ReadResponse();
    ASSERT_TRUE(r) << body.substr(0, 30);
    EXPECT_EQ(r->status, 400) << body.substr(0, 30);
    EXPECT_THAT(r->body, HasSubstr("malformed request body")) << body.substr(0, 30);
    EXPECT_TRUE(conn.WaitForClose());
    ++served;
    ASSERT_TRUE(WaitUploads(served));
    std::lock_guard lock(mu_);
    EXPECT_EQ(last_error_.code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(StreamTest, StalledUploadIsCutAtTheRequestTimeout) {
  common::HttpLimits limits;
  limits.request_timeout = absl::Milliseconds(300);
  StartServer(limits);
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  ASSERT_TRUE(conn.Write("PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" +
                         std::string(100, 'x')));
  ASSERT_TRUE(WaitUploads(1));
  {
    std::lock_guard lock(mu_);
    EXPECT_EQ(last_error_.code(), absl::StatusCode::kDeadlineExceeded) << last_error_;
    EXPECT_EQ(last_upload_.bytes, 100u);
  }
  EXPECT_TRUE(conn.WaitForClose());
}

TEST_F(StreamTest, SlowButLiveUploadOutlastsTheRequestTimeout) {
  common::HttpLimits limits;
  limits.request_timeout = absl::Milliseconds(400);
  StartServer(limits);
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  ASSERT_TRUE(conn.Write("PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"));
  // 10 bytes over ~1.5 s: each read makes progress within the timeout.
  for (int i = 0; i < 10; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    ASSERT_TRUE(conn.Write(std::string(1, PatternByte(static_cast<uint64_t>(i)))));
  }
  auto r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->body, HasSubstr("\"bytes\":10"));
}

TEST_F(StreamTest, AbortedUploadEndsTheHandlersRead) {
  StartServer();
  {
    TlsConn conn(server_->port());
    ASSERT_TRUE(conn.Handshake());
    ASSERT_TRUE(conn.Write("PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" +
                           std::string(5000, 'x')));
    while (uploaded_.load() < 5000) std::this_thread::yield();
  }  // closed mid-body
  ASSERT_TRUE(WaitUploads(1));
  std::lock_guard lock(mu_);
  EXPECT_EQ(last_error_.code(), absl::StatusCode::kUnavailable) << last_error_;
  EXPECT_EQ(last_upload_.bytes, 5000u);
}

TEST_F(StreamTest, ServerReadsNoFasterThanTheHandler) {
  StartServer();
  hold_after_ = 1 << 20;  // the handler stops reading after 1 MiB
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  timeval tv{0, 200000};  // a blocked write gives up after 200 ms
  ::setsockopt(conn.fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  const uint64_t total = 256ull << 20;
  ASSERT_TRUE(conn.Write("PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                         std::to_string(total) + "\r\n\r\n"));
  std::string piece(64 * 1024, 'p');
  uint64_t written = 0;
  auto deadline = SteadyClock::now() + std::chrono::seconds(3);
  while (written < total && SteadyClock::now() < deadline) {
    if (!conn.Write(piece)) break;
    written += piece.size();
  }
  // Only socket buffers (a few MiB) sit between the client and the held handler.
  EXPECT_LT(written, uint64_t{48} << 20);
  EXPECT_LT(uploaded_.load(), uint64_t{2} << 20);
}

TEST_F(StreamTest, SlowReaderSlowsTheProducerAndDisconnectStopsIt) {
  StartServer();
  const uint64_t n = 1ull << 30;
  {
    TlsConn conn(server_->port());
    ASSERT_TRUE(conn.Handshake());
    ASSERT_TRUE(conn.Write("GET /download?n=" + std::to_string(n) + " HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_TRUE(conn.ReadHead());
    // The reader takes nothing more for 2 s: the producer may run ahead by socket buffers only.
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
  EXPECT_LT(produced_.load(), uint64_t{48} << 20) << "producer ran ahead of a stalled reader";
  // The connection is gone: the producer stops and is destroyed.
  auto deadline = SteadyClock::now() + std::chrono::seconds(5);
  while (sources_alive_.load() != 0 && SteadyClock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(sources_alive_.load(), 0);
  int calls = source_calls_.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(source_calls_.load(), calls);
  EXPECT_LT(produced_.load(), n);
}

TEST_F(StreamTest, ProducerFailureTruncatesTheBody) {
  StartServer();
  for (bool chunked : {false, true}) {
    auto client = Client();
    uint64_t got = 0;
    StreamTransfer t;
    t.sink = [&](std::string_view piece) {
      got += piece.size();
      return absl::OkStatus();
    };
    auto r = client->Stream("GET", std::string("/download?n=10000000&fail_at=1000000") +
                                       (chunked ? "&chunked=1" : ""),
                            t);
    // The client must not take the truncated body for a complete one.
    EXPECT_FALSE(r.ok()) << "chunked=" << chunked;
    EXPECT_LT(got, 10000000u);
  }
}

TEST_F(StreamTest, UnreadBodyIsNeverParsedAsTheNextRequest) {
  StartServer();
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  // Attack: a request smuggled inside the body of one the handler refuses without reading.
  std::string smuggled = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_TRUE(conn.Write("PUT /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                         std::to_string(smuggled.size()) + "\r\n\r\n" + smuggled));
  auto r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);
  EXPECT_THAT(r->head, HasSubstr("Connection: close"));
  EXPECT_FALSE(conn.ReadResponse()) << "the smuggled request was served";
}

TEST_F(StreamTest, PipelinedRequestAfterAStreamedOne) {
  StartServer();
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  std::string body(300000, 'q');
  char size[32];
  std::snprintf(size, sizeof(size), "%zx\r\n", body.size());
  ASSERT_TRUE(conn.Write("PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n" + body +
                         "PUT /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                         size + body + "\r\n0\r\n\r\n" + "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
  for (int i = 0; i < 2; ++i) {
    auto r = conn.ReadResponse();
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->status, 200) << i;
    EXPECT_THAT(r->body, HasSubstr("\"bytes\":300000")) << i;
  }
  auto r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, R"({"hello":"world"})");
}

TEST_F(StreamTest, ExpectContinueIsSentOnlyWhenTheHandlerReads) {
  StartServer();
  {
    TlsConn conn(server_->port());
    ASSERT_TRUE(conn.Handshake());
    ASSERT_TRUE(conn.Write(
        "PUT /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
    auto r = conn.ReadResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403);  // no 100 first: the client never uploads a refused body
  }
  TlsConn conn(server_->port());
  ASSERT_TRUE(conn.Handshake());
  ASSERT_TRUE(conn.Write(
      "PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
  auto r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 100);
  ASSERT_TRUE(conn.Write("hello"));
  r = conn.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->body, HasSubstr("\"bytes\":5"));
}

}  // namespace
}  // namespace warden::http
