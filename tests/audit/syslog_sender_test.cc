// The syslog sink's sender with a fake transport: order and framing, the bounded queue dropping
// the oldest events and announcing the gap, re-sending a failed batch after reconnecting,
// back-off, Stop flushing within its bound and never hanging, and the TLS settings refused at
// creation. The real TLS path against rsyslog is in tests/integration/audit_syslog_test.cc.
#include "audit/syslog_sender.h"

#include <filesystem>

#include <gtest/gtest.h>
#include <unistd.h>

#include "audit/audit.h"
#include "common/clock.h"

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace warden::audit {
namespace {

using namespace std::chrono_literals;

// A receiver in memory. Connect fails while `up` is false; Write can be made to fail once or to
// block until Interrupt.
class FakeTransport final : public SyslogTransport {
 public:
  absl::Status Connect() override {
    std::lock_guard lock(mu_);
    ++connects_;
    if (!up_) return absl::UnavailableError("fake: connection refused");
    connected_ = true;
    peer_closed_ = false;
    return absl::OkStatus();
  }
  absl::Status Write(std::string_view bytes) override {
    std::unique_lock lock(mu_);
    if (!connected_) return absl::UnavailableError("fake: not connected");
    if (fail_next_write_) {
      fail_next_write_ = false;
      return absl::UnavailableError("fake: broken pipe");
    }
    ++writes_;
    if (block_writes_) {
      cv_.wait(lock, [&] { return interrupted_ || !block_writes_; });
      if (interrupted_) return absl::UnavailableError("fake: interrupted");
    }
    received_ += bytes;
    cv_.notify_all();
    return absl::OkStatus();
  }
  bool PeerClosed() override {
    std::lock_guard lock(mu_);
    return peer_closed_ || drop_every_connection_;
  }
  void Close() override {
    std::lock_guard lock(mu_);
    connected_ = false;
  }
  void Interrupt() override {
    std::lock_guard lock(mu_);
    interrupted_ = true;
    cv_.notify_all();
  }

  void SetUp(bool up) {
    std::lock_guard lock(mu_);
    up_ = up;
  }
  void FailNextWrite() {
    std::lock_guard lock(mu_);
    fail_next_write_ = true;
  }
  void ClosePeer() {
    std::lock_guard lock(mu_);
    peer_closed_ = true;
  }
  void DropEveryConnection(bool b) {
    std::lock_guard lock(mu_);
    drop_every_connection_ = b;
  }
  void BlockWrites(bool b) {
    std::lock_guard lock(mu_);
    block_writes_ = b;
    cv_.notify_all();
  }
  int connects() {
    std::lock_guard lock(mu_);
    return connects_;
  }
  int writes() {
    std::lock_guard lock(mu_);
    return writes_;
  }
  bool interrupted() {
    std::lock_guard lock(mu_);
    return interrupted_;
  }
  std::string received() {
    std::lock_guard lock(mu_);
    return received_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool up_ = true, connected_ = false, fail_next_write_ = false, peer_closed_ = false;
  bool block_writes_ = false, interrupted_ = false, drop_every_connection_ = false;
  int connects_ = 0, writes_ = 0;
  std::string received_;
};

// Splits an RFC 5425 stream into its messages; fails the test on a malformed frame.
std::vector<std::string> Frames(const std::string& stream) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < stream.size()) {
    size_t sp = stream.find(' ', pos);
    EXPECT_NE(sp, std::string::npos) << "frame without a length at " << pos;
    if (sp == std::string::npos) break;
    size_t len = std::stoul(stream.substr(pos, sp - pos));
    EXPECT_LE(sp + 1 + len, stream.size());
    out.push_back(stream.substr(sp + 1, len));
    pos = sp + 1 + len;
  }
  return out;
}

std::string SeqOf(const std::string& msg) {
  size_t at = msg.find(" seq=\"");
  if (at == std::string::npos) return "";
  return msg.substr(at + 6, msg.find('"', at + 6) - at - 6);
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds limit = 10s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return pred();
}

SyslogSenderOptions Options(FakeTransport& t) {
  SyslogSenderOptions o;
  o.header = {"ctl-1", "gpuwarden"};
  o.transport = &t;
  o.backoff_initial = absl::Milliseconds(5);
  o.backoff_max = absl::Milliseconds(20);
  o.flush_timeout = absl::Milliseconds(500);
  return o;
}

std::string Line(uint64_t seq) { return "{\"v\":1,\"seq\":" + std::to_string(seq) + "}"; }

TEST(SyslogSenderTest, SendsEveryEventInSeqOrderAsOctetCountedRfc5424) {
  FakeTransport t;
  auto s = CreateSyslogSender(Options(t));
  ASSERT_TRUE(s.ok()) << s.status();
  (*s)->Start();
  for (uint64_t i = 0; i < 600; ++i) (*s)->Enqueue(i, 1795728599416, Line(i));
  ASSERT_TRUE(WaitFor([&] { return (*s)->GetStats().sent == 600; }));
  std::vector<std::string> msgs = Frames(t.received());
  ASSERT_EQ(msgs.size(), 600u);
  for (size_t i = 0; i < msgs.size(); ++i) {
    ASSERT_EQ(msgs[i].rfind("<110>1 2026-11-26T21:29:59.416Z ctl-1 gpuwarden - audit [", 0), 0u)
        << msgs[i];
    ASSERT_EQ(SeqOf(msgs[i]), std::to_string(i));
  }
  EXPECT_TRUE((*s)->GetStats().connected);
  EXPECT_EQ((*s)->GetStats().dropped, 0u);
  EXPECT_EQ(t.connects(), 1);
}

TEST(SyslogSenderTest, FullQueueDropsTheOldestCountsThemAndAnnouncesTheGapFirst) {
  FakeTransport t;
  t.SetUp(false);
  SyslogSenderOptions o = Options(t);
  o.queue_max = 3;
  auto s = CreateSyslogSender(o);
  ASSERT_TRUE(s.ok()) << s.status();
  (*s)->Start();
  for (uint64_t i = 0; i < 10; ++i) (*s)->Enqueue(100 + i, 0, Line(100 + i));
  SyslogSender::Stats st = (*s)->GetStats();
  EXPECT_EQ(st.dropped, 7u);
  EXPECT_EQ(st.queued, 3u);
  EXPECT_EQ(st.sent, 0u);
  EXPECT_FALSE(st.connected);
  t.SetUp(true);
  ASSERT_TRUE(WaitFor([&] { return (*s)->GetStats().sent == 3; }));
  std::vector<std::string> msgs = Frames(t.received());
  ASSERT_EQ(msgs.size(), 4u);
  EXPECT_EQ(msgs[0].rfind("<108>1 ", 0), 0u) << msgs[0];
  EXPECT_NE(msgs[0].find("[gpuwarden-gap@32473 dropped=\"7\" first_seq=\"100\" last_seq=\"106\"]"),
            std::string::npos)
      << msgs[0];
  EXPECT_EQ(SeqOf(msgs[1]), "107");
  EXPECT_EQ(SeqOf(msgs[2]), "108");
  EXPECT_EQ(SeqOf(msgs[3]), "109");
  EXPECT_EQ((*s)->GetStats().gap_notices, 1u);
  // Reported once: later events come without a new notice.
  (*s)->Enqueue(110, 0, Line(110));
  ASSERT_TRUE(WaitFor([&] { return (*s)->GetStats().sent == 4; }));
  msgs = Frames(t.received());
  ASSERT_EQ(msgs.size(), 5u);
  EXPECT_EQ(SeqOf(msgs[4]), "110");
}

TEST(SyslogSenderTest, AFailedWriteIsSentAgainAfterReconnectingInOrder) {
  FakeTransport t;
  auto s = CreateSyslogSender(Options(t));
  ASSERT_TRUE(s.ok());
  (*s)->Start();
  (*s)->Enqueue(0, 0, Line(0));
  ASSERT_TRUE(WaitFor([&] { return (*s)->GetStats().sent == 1; }));
  t.FailNextWrite();
  for (uint64_t i = 1; i < 5; ++i) (*s)->Enqueue(i, 0, Line(i));
  ASSERT_TRUE(WaitFor([&] { return (*s)->GetStats().sent == 5; }));
  std::vector<std::string> msgs = Frames(t.received());
  ASSERT_EQ(msgs.size(), 5u);
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(SeqOf(msgs[i]), std::to_string(i));
  EXPECT_EQ(t.connects(), 2);
  EXPECT_EQ((*s)->GetStats().dropped, 0u);
}

TEST(SyslogSenderTest, AConnectionThePeerClosedIsNotWrittenToButReplaced) {
  FakeTransport t;
  auto s = CreateSyslogSender(Options(t));
  ASSERT_TRUE(s.ok());
  (*s)->Start();
  (*s)->Enqueue(0, 0, Line(0));
  ASSERT_TRUE(WaitFor([&] { return (*s)->GetStats().sent == 1; }));
  t.ClosePeer();
  (*s)->Enqueue(1, 0, Line(1));
  ASSERT_TRUE(WaitFor([&] { return (*s)->GetStats().sent == 2; }));
  EXPECT_EQ(t.connects(), 2);
  std::vector<std::string> msgs = Frames(t.received());
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(SeqOf(msgs[1]), "1");
}

TEST(SyslogSenderTest, BackOffDoublesFromTheInitialDelayUpToTheCap) {
  SyslogSenderOptions o;
  o.backoff_initial = absl::Milliseconds(250);
  o.backoff_max = absl::Seconds(30);
  absl::Duration d = o.backoff_initial;
  std::vector<absl::Duration> seen;
  for (int i = 0; i < 10; ++i) {
    d = NextSyslogBackoff(d, o);
    seen.push_back(d);
  }
  EXPECT_EQ(seen[0], absl::Milliseconds(500));
  EXPECT_EQ(seen[1], absl::Seconds(1));
  EXPECT_EQ(seen[5], absl::Seconds(16));
  EXPECT_EQ(seen[6], absl::Seconds(30));
  EXPECT_EQ(seen[9], absl::Seconds(30));
}

TEST(SyslogSenderTest, AReceiverThatStaysDownIsRetriedWithBackOffNotInATightLoop) {
  FakeTransport t;
  t.SetUp(false);
  SyslogSenderOptions o = Options(t);
  o.backoff_initial = absl::Milliseconds(20);
  o.backoff_max = absl::Milliseconds(80);
  auto s = CreateSyslogSender(o);
  ASSERT_TRUE(s.ok());
  (*s)->Start();
  (*s)->Enqueue(0, 0, Line(0));
  std::this_thread::sleep_for(500ms);
  // Waits of 20, 40, 80, 80, ... ms: at most 8 attempts in 500 ms (a tight loop makes thousands).
  int attempts = t.connects();
  EXPECT_GE(attempts, 1);
  EXPECT_LE(attempts, 9);
  t.SetUp(true);
  ASSERT_TRUE(WaitFor([&] { return (*s)->GetStats().sent == 1; }));
}

TEST(SyslogSenderTest, AReceiverThatDropsEveryConnectionIsRetriedAtTheBackOffPace) {
  FakeTransport t;
  t.DropEveryConnection(true);  // handshakes succeed, then the peer closes at once
  SyslogSenderOptions o = Options(t);
  o.backoff_initial = absl::Milliseconds(20);
  o.backoff_max = absl::Milliseconds(80);
  auto s = CreateSyslogSender(o);
  ASSERT_TRUE(s.ok());
  (*s)->Start();
  (*s)->Enqueue(0, 0, Line(0));
  std::this_thread::sleep_for(500ms);
  EXPECT_GE(t.connects(), 1);
  EXPECT_LE(t.connects(), 9);
  EXPECT_EQ((*s)->GetStats().sent, 0u);
  t.DropEveryConnection(false);
  ASSERT_TRUE(WaitFor([&] { return (*s)->GetStats().sent == 1; }));
}

TEST(SyslogSenderTest, StopFlushesWhatIsQueued) {
  FakeTransport t;
  auto s = CreateSyslogSender(Options(t));
  ASSERT_TRUE(s.ok());
  (*s)->Start();
  for (uint64_t i = 0; i < 2000; ++i) (*s)->Enqueue(i, 0, Line(i));
  (*s)->Stop();
  EXPECT_EQ((*s)->GetStats().sent, 2000u);
  EXPECT_EQ(Frames(t.received()).size(), 2000u);
  EXPECT_FALSE((*s)->GetStats().connected);
}

TEST(SyslogSenderTest, StopReturnsWithinItsBoundWhenTheReceiverHangs) {
  FakeTransport t;
  t.BlockWrites(true);
  SyslogSenderOptions o = Options(t);
  o.flush_timeout = absl::Milliseconds(200);
  auto s = CreateSyslogSender(o);
  ASSERT_TRUE(s.ok());
  (*s)->Start();
  (*s)->Enqueue(0, 0, Line(0));
  ASSERT_TRUE(WaitFor([&] { return t.connects() == 1; }));
  auto start = std::chrono::steady_clock::now();
  (*s)->Stop();
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(t.interrupted());
  EXPECT_LT(took, 5s);  // 200 ms plus scheduling; without Interrupt it would block forever
}

TEST(SyslogSenderTest, EnqueueNeverWaitsForAStuckReceiver) {
  FakeTransport t;
  t.BlockWrites(true);
  SyslogSenderOptions o = Options(t);
  o.queue_max = 100;
  o.flush_timeout = absl::Milliseconds(100);
  auto s = CreateSyslogSender(o);
  ASSERT_TRUE(s.ok());
  (*s)->Start();
  (*s)->Enqueue(0, 0, Line(0));
  ASSERT_TRUE(WaitFor([&] { return t.writes() == 1; }));  // event 0 is stuck in the write
  for (uint64_t i = 1; i <= 10000; ++i) (*s)->Enqueue(i, 0, Line(i));
  SyslogSender::Stats st = (*s)->GetStats();
  // One event is stuck in the write; the queue holds 100 more; the rest were dropped.
  EXPECT_EQ(st.dropped, 10000u - 100u);
  (*s)->Stop();
}

TEST(SyslogSenderTest, CreateRefusesUnusableSettingsNamingThem) {
  SyslogSenderOptions o;
  o.header = {"ctl-1", "gpuwarden"};
  o.address = "127.0.0.1:6514";
  auto missing_ca = CreateSyslogSender(o);
  ASSERT_FALSE(missing_ca.ok());
  EXPECT_NE(std::string(missing_ca.status().message()).find("ca_file is required"),
            std::string::npos);
  o.ca_file = ::testing::TempDir() + "/no-such-ca.pem";
  auto bad_ca = CreateSyslogSender(o);
  ASSERT_FALSE(bad_ca.ok());
  EXPECT_NE(std::string(bad_ca.status().message()).find("cannot load ca_file"), std::string::npos);
  o.ca_file.clear();
  o.insecure_skip_verify = true;
  o.client_cert = "/c.pem";
  auto half = CreateSyslogSender(o);
  ASSERT_FALSE(half.ok());
  EXPECT_NE(std::string(half.status().message()).find("client_key"), std::string::npos);
  o.client_cert.clear();
  o.address = "no-port";
  EXPECT_FALSE(CreateSyslogSender(o).ok());
  o.address = "127.0.0.1:6514";
  o.header.app_name = "two words";
  auto bad_header = CreateSyslogSender(o);
  ASSERT_FALSE(bad_header.ok());
  EXPECT_NE(std::string(bad_header.status().message()).find("app_name"), std::string::npos);
  o.header.app_name = "gpuwarden";
  o.queue_max = 0;
  EXPECT_FALSE(CreateSyslogSender(o).ok());
}

TEST(SyslogSenderTest, NothingListeningIsAnUnavailableConnectNamingTheAddress) {
  SyslogSenderOptions o;
  o.address = "127.0.0.1:1";  // reserved port, nothing listens
  o.insecure_skip_verify = true;
  auto t = MakeTlsSyslogTransport(o);
  ASSERT_TRUE(t.ok()) << t.status();
  absl::Status s = (*t)->Connect();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(s.message()).find("127.0.0.1:1"), std::string::npos) << s;
}

// The hook the sink hangs on: every durable event, in seq order, with exactly its logged bytes.
TEST(AuditDurableHookTest, GetsEveryEventInSeqOrderWithItsLoggedLine) {
  std::string dir = ::testing::TempDir() + "/syslog_hook_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::mutex mu;
  std::vector<std::pair<uint64_t, std::string>> seen;
  AuditOptions o;
  o.dir = dir;
  o.on_durable = [&](uint64_t first, int64_t, std::span<const std::string_view> lines) {
    std::lock_guard lock(mu);
    for (size_t i = 0; i < lines.size(); ++i) seen.emplace_back(first + i, std::string(lines[i]));
  };
  common::FakeClock clock;
  auto log = OpenAuditLog(o, clock);
  ASSERT_TRUE(log.ok()) << log.status();
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < 50; ++i) {
        AuditEvent e;
        e.actor_name = "w" + std::to_string(w);
        e.action = "jobs:create";
        ASSERT_TRUE((*log)->Append(e).ok());
      }
    });
  }
  for (auto& t : writers) t.join();
  auto page = (*log)->Query(AuditQuery{.limit = 1000});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->lines.size(), 200u);
  log->reset();  // joins the writer: the hook (run after each acknowledgement) is done
  std::lock_guard lock(mu);
  ASSERT_EQ(seen.size(), 200u);
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].first, i);
    EXPECT_EQ(seen[i].second, page->lines[i]);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace warden::audit
