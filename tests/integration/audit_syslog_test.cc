// The audit log's second sink against a REAL receiver (issue 4): the gpuwarden server sends its
// audit events to a private rsyslogd (imtcp + gtls, mTLS, tools/rsyslog-start.sh) over
// RFC 5425. Checks: events arrive in order, parsed by rsyslog as RFC 5424, carrying their seq and
// the exact logged line; a receiver that is down at start gets the queued events later while the
// server keeps serving; a receiver killed mid-stream is reconnected to; a full queue counts drops
// and the receiver gets a gap notice; a receiver with a certificate from another CA, or from the
// right CA for another name, gets nothing (attack tests).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "harness.h"

namespace warden::testing {
namespace {

using common::Json;

// One message as rsyslog wrote it: "VERSION HOSTNAME APP-NAME MSGID STRUCTURED-DATA".
struct Received {
  std::string version, hostname, app_name, msgid, sd;
  std::string Param(const std::string& name) const {
    std::string key = " " + name + "=\"";
    size_t at = sd.find(key);
    if (at == std::string::npos) return "";
    std::string out;
    for (size_t i = at + key.size(); i < sd.size(); ++i) {
      if (sd[i] == '\\' && i + 1 < sd.size()) {
        out.push_back(sd[++i]);
      } else if (sd[i] == '"') {
        break;
      } else {
        out.push_back(sd[i]);
      }
    }
    return out;
  }
  int64_t Seq() const {
    std::string s = Param("seq");
    return s.empty() ? -1 : std::stoll(s);
  }
};

// A private rsyslogd on a loopback port, through tools/rsyslog-start.sh / rsyslog-stop.sh.
class Rsyslog {
 public:
  Rsyslog() {
    static int n = 0;
    dir_ = ::testing::TempDir() + "warden_rsyslog_" + std::to_string(getpid()) + "_" +
           std::to_string(n++);
    std::filesystem::remove_all(dir_);
    port_ = FreeLoopbackPort();
  }
  ~Rsyslog() {
    Stop();
    if (Env("WARDEN_KEEP_TEST_DIRS").empty()) std::filesystem::remove_all(dir_);
  }

  static bool Available(std::string& why) {
    if (RunShell("command -v rsyslogd || test -x /usr/sbin/rsyslogd").code != 0) {
      why = "rsyslogd is not installed (apt-get install rsyslog rsyslog-gnutls)";
      return false;
    }
    if (RunShell("ls /usr/lib/*/rsyslog/lmnsd_gtls.so").code != 0) {
      why = "rsyslog's gtls driver is not installed (apt-get install rsyslog-gnutls)";
      return false;
    }
    return true;
  }

  void MakePki() {
    RunResult r = RunShell("RSYSLOG_PKI_ONLY=1 bash tools/rsyslog-start.sh " + ShellQuote(dir_) +
                           " " + std::to_string(port_));
    ASSERT_EQ(r.code, 0) << r.err;
  }
  void Start(const std::string& cert = "server") {
    RunResult r = RunShell("RSYSLOG_CERT=" + cert + " bash tools/rsyslog-start.sh " +
                           ShellQuote(dir_) + " " + std::to_string(port_));
    ASSERT_EQ(r.code, 0) << r.err << r.out;
  }
  void Stop(const std::string& signal = "TERM") {
    RunShell("bash tools/rsyslog-stop.sh " + ShellQuote(dir_) + " " + signal);
  }

  // The server's audit.syslog block for this receiver (mTLS with the test client certificate).
  std::string Config(int queue_max = 10000) const {
    return "audit:\n  syslog:\n    address: 127.0.0.1:" + std::to_string(port_) +
           "\n    server_name: syslog.test\n    ca_file: " + dir_ + "/pki/ca.crt" +
           "\n    client_cert: " + dir_ + "/pki/client.crt\n    client_key: " + dir_ +
           "/pki/client.key\n    queue_max: " + std::to_string(queue_max) +
           "\n    hostname: ctl-test\n";
  }

  std::vector<Received> Messages() const {
    std::vector<Received> out;
    std::ifstream in(dir_ + "/received.log");
    std::string line;
    while (std::getline(in, line)) {
      Received r;
      std::istringstream ss(line);
      ss >> r.version >> r.hostname >> r.app_name >> r.msgid;
      std::getline(ss, r.sd);
      if (!r.sd.empty() && r.sd[0] == ' ') r.sd.erase(0, 1);
      out.push_back(std::move(r));
    }
    return out;
  }
  // Distinct audit seqs received so far.
  std::set<int64_t> Seqs() const {
    std::set<int64_t> out;
    for (const Received& m : Messages()) {
      if (m.msgid == "audit") out.insert(m.Seq());
    }
    return out;
  }
  bool HasAllSeqsBelow(int64_t n) const {
    std::set<int64_t> s = Seqs();
    for (int64_t i = 0; i < n; ++i) {
      if (!s.count(i)) return false;
    }
    return true;
  }
  std::string Log() const { return ReadFile(dir_ + "/rsyslogd.log"); }

 private:
  std::string dir_;
  int port_ = 0;
};

// The exact logged lines of the server's audit log, by seq.
std::vector<std::string> AuditLines(const std::string& audit_dir) {
  std::vector<std::string> files;
  for (const auto& f : std::filesystem::directory_iterator(audit_dir)) {
    if (f.path().extension() == ".jsonl") files.push_back(f.path().string());
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> out;
  for (const auto& f : files) {
    std::ifstream in(f);
    std::string line;
    while (std::getline(in, line) && line.find('\0') == std::string::npos) out.push_back(line);
  }
  return out;
}

double Metric(WardenServer& server, const std::string& token, const std::string& name) {
  RunResult r = server.Curl("GET", "/metrics", token);
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

// Starts the server with this audit.syslog block and logs the admin in; returns the token.
std::string StartAndLogIn(WardenServer& server, const std::string& config) {
  server.Start("sqlite", config);
  if (::testing::Test::HasFatalFailure()) return "";
  server.Login("admin", "admin", server.admin_password());
  return server.Token("admin");
}

#define REQUIRE_RSYSLOG()                                                          \
  do {                                                                             \
    std::string why;                                                               \
    if (!Rsyslog::Available(why)) {                                                \
      if (Env("CI") == "true") FAIL() << "CI=true but " << why;                    \
      GTEST_SKIP() << why;                                                         \
    }                                                                              \
  } while (0)

TEST(AuditSyslogTest, EventsArriveInOrderAsRfc5424WithSeqAndTheExactLoggedLine) {
  REQUIRE_RSYSLOG();
  Rsyslog rsyslog;
  rsyslog.Start();
  ASSERT_FALSE(HasFatalFailure());
  WardenServer server;
  std::string token = StartAndLogIn(server, rsyslog.Config());
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_EQ(server.Curl("POST", "/api/v1/tenants", token, R"({"name":"acme"})").code, 201);
  ASSERT_EQ(server.Curl("GET", "/api/v1/whoami", token).code, 200);
  ASSERT_EQ(server.Curl("GET", "/api/v1/whoami", "not-a-token").code, 401);  // a denial, too
  int n = server.AuditCountSynced();
  ASSERT_GE(n, 4);
  ASSERT_TRUE(WaitUntil([&] { return rsyslog.HasAllSeqsBelow(n); }))
      << "received: " << rsyslog.Seqs().size() << " of " << n << "\n" << rsyslog.Log();

  std::vector<std::string> lines = AuditLines(server.dir() + "/data/audit");
  std::vector<Received> msgs = rsyslog.Messages();
  int64_t expect = 0;
  bool saw_login = false, saw_tenant = false, saw_denial = false;
  for (const Received& m : msgs) {
    ASSERT_EQ(m.version, "1") << "not parsed as RFC 5424: " << m.sd;
    EXPECT_EQ(m.hostname, "ctl-test");
    EXPECT_EQ(m.app_name, "gpuwarden");
    ASSERT_EQ(m.msgid, "audit");
    ASSERT_EQ(m.Seq(), expect) << "out of order";  // no gap, no duplicate on a healthy link
    EXPECT_EQ(m.Param("leaf"), std::to_string(expect));
    ASSERT_LT(static_cast<size_t>(expect), lines.size());
    // The event parameter is the Merkle leaf data: a receiver can match it with a proof.
    EXPECT_EQ(m.Param("event"), lines[expect]);
    Json e = Json::parse(m.Param("event"), nullptr, false);
    ASSERT_TRUE(e.is_object()) << m.sd;
    EXPECT_EQ(e["seq"].get<int64_t>(), expect);
    std::string action = e.value("action", "");
    saw_login |= action == "auth:login";
    saw_tenant |= action == "tenants:create" && e.value("status", 0) == 201;
    saw_denial |= e.value("decision", "") == "deny";
    ++expect;
  }
  EXPECT_TRUE(saw_login && saw_tenant && saw_denial);
  EXPECT_EQ(Metric(server, token, "warden_audit_syslog_connected"), 1);
  EXPECT_GE(Metric(server, token, "warden_audit_syslog_sent_total"), n);
  EXPECT_EQ(Metric(server, token, "warden_audit_syslog_dropped_total"), 0);

  // A clean stop flushes what was queued within its bound.
  ASSERT_EQ(server.Curl("GET", "/api/v1/whoami", token).code, 200);
  int before_stop = server.AuditCountSynced() + 1;
  auto t0 = std::chrono::steady_clock::now();
  server.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(15));
  EXPECT_TRUE(WaitUntil([&] { return rsyslog.HasAllSeqsBelow(before_stop); },
                        std::chrono::seconds(5)));
}

TEST(AuditSyslogTest, ReceiverDownAtStartDoesNotStopServiceAndGetsTheQueuedEventsLater) {
  REQUIRE_RSYSLOG();
  Rsyslog rsyslog;
  rsyslog.MakePki();
  ASSERT_FALSE(HasFatalFailure());
  WardenServer server;
  std::string token = StartAndLogIn(server, rsyslog.Config());
  ASSERT_FALSE(HasFatalFailure());
  for (int i = 0; i < 5; ++i) ASSERT_EQ(server.Curl("GET", "/api/v1/whoami", token).code, 200);
  ASSERT_EQ(server.Curl("POST", "/api/v1/tenants", token, R"({"name":"acme"})").code, 201);
  int n = server.AuditCountSynced();
  EXPECT_EQ(Metric(server, token, "warden_audit_syslog_connected"), 0);
  EXPECT_GE(Metric(server, token, "warden_audit_syslog_queue_depth"), n);
  EXPECT_GT(Metric(server, token, "warden_audit_syslog_connect_failures_total"), 0);

  rsyslog.Start();
  ASSERT_FALSE(HasFatalFailure());
  // The first retry comes after at most the back-off cap (30 s); early retries are sooner.
  ASSERT_TRUE(WaitUntil([&] { return rsyslog.HasAllSeqsBelow(n); }, std::chrono::seconds(45)))
      << rsyslog.Seqs().size() << " of " << n;
  std::vector<int64_t> order;
  for (const Received& m : rsyslog.Messages()) order.push_back(m.Seq());
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end()));
  EXPECT_EQ(Metric(server, token, "warden_audit_syslog_connected"), 1);
  EXPECT_EQ(Metric(server, token, "warden_audit_syslog_dropped_total"), 0);
}

TEST(AuditSyslogTest, ReceiverKilledMidStreamIsReconnectedAndMissesNothingAfterwards) {
  REQUIRE_RSYSLOG();
  Rsyslog rsyslog;
  rsyslog.Start();
  ASSERT_FALSE(HasFatalFailure());
  WardenServer server;
  std::string token = StartAndLogIn(server, rsyslog.Config());
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_EQ(server.Curl("GET", "/api/v1/whoami", token).code, 200);
  int n1 = server.AuditCountSynced();
  ASSERT_TRUE(WaitUntil([&] { return rsyslog.HasAllSeqsBelow(n1); }));

  rsyslog.Stop("KILL");
  for (int i = 0; i < 5; ++i) ASSERT_EQ(server.Curl("GET", "/api/v1/whoami", token).code, 200);
  ASSERT_TRUE(WaitUntil(
      [&] { return Metric(server, token, "warden_audit_syslog_connected") == 0; }));
  rsyslog.Start();
  ASSERT_FALSE(HasFatalFailure());
  for (int i = 0; i < 5; ++i) ASSERT_EQ(server.Curl("GET", "/api/v1/whoami", token).code, 200);
  int n2 = server.AuditCountSynced();
  ASSERT_TRUE(WaitUntil([&] { return rsyslog.HasAllSeqsBelow(n2); }, std::chrono::seconds(45)))
      << rsyslog.Seqs().size() << " of " << n2;
  EXPECT_EQ(Metric(server, token, "warden_audit_syslog_connected"), 1);
  EXPECT_EQ(Metric(server, token, "warden_audit_syslog_dropped_total"), 0);
}

TEST(AuditSyslogTest, FullQueueCountsDropsAndTheReceiverGetsAGapNotice) {
  REQUIRE_RSYSLOG();
  Rsyslog rsyslog;
  rsyslog.MakePki();
  ASSERT_FALSE(HasFatalFailure());
  WardenServer server;
  const int kQueue = 5;
  std::string token = StartAndLogIn(server, rsyslog.Config(kQueue));
  ASSERT_FALSE(HasFatalFailure());
  for (int i = 0; i < 20; ++i) ASSERT_EQ(server.Curl("GET", "/api/v1/whoami", token).code, 200);
  int n = server.AuditCountSynced();
  double dropped = Metric(server, token, "warden_audit_syslog_dropped_total");
  // The metrics request's own event may be counted after the scrape: at least n - queue dropped.
  EXPECT_GE(dropped, n - kQueue);

  rsyslog.Start();
  ASSERT_FALSE(HasFatalFailure());
  std::vector<Received> msgs;
  ASSERT_TRUE(WaitUntil(
      [&] {
        msgs = rsyslog.Messages();
        return !msgs.empty() && rsyslog.Seqs().count(n - 1);
      },
      std::chrono::seconds(45)))
      << rsyslog.Log();
  ASSERT_EQ(msgs[0].msgid, "gap") << msgs[0].sd;
  EXPECT_EQ(msgs[0].version, "1");
  int64_t gap_dropped = std::stoll(msgs[0].Param("dropped"));
  int64_t first = std::stoll(msgs[0].Param("first_seq"));
  int64_t last = std::stoll(msgs[0].Param("last_seq"));
  EXPECT_EQ(first, 0);  // the oldest events are the ones dropped
  EXPECT_EQ(last - first + 1, gap_dropped);
  EXPECT_GE(gap_dropped, n - kQueue - 1);
  // After the notice: the events from last_seq + 1 on, in order, with nothing missing.
  int64_t expect = last + 1;
  for (size_t i = 1; i < msgs.size(); ++i) {
    if (msgs[i].msgid != "audit") continue;
    EXPECT_EQ(msgs[i].Seq(), expect++);
  }
  EXPECT_GE(expect, n);
}

// Attack tests: a receiver that cannot prove it is the configured one must not get the audit
// trail, whoever signed its certificate. The server keeps serving; the sink stays disconnected.
class AuditSyslogImpostorTest : public ::testing::TestWithParam<std::string> {};

TEST_P(AuditSyslogImpostorTest, ReceiverWithTheWrongCertificateGetsNothing) {
  REQUIRE_RSYSLOG();
  Rsyslog rsyslog;
  rsyslog.Start(GetParam());
  ASSERT_FALSE(HasFatalFailure());
  WardenServer server;
  std::string token = StartAndLogIn(server, rsyslog.Config());
  ASSERT_FALSE(HasFatalFailure());
  for (int i = 0; i < 3; ++i) ASSERT_EQ(server.Curl("GET", "/api/v1/whoami", token).code, 200);
  ASSERT_TRUE(WaitUntil(
      [&] { return Metric(server, token, "warden_audit_syslog_connect_failures_total") >= 2; }));
  EXPECT_TRUE(rsyslog.Messages().empty()) << "sent to an impostor: " << rsyslog.Messages()[0].sd;
  EXPECT_EQ(Metric(server, token, "warden_audit_syslog_connected"), 0);
  EXPECT_EQ(Metric(server, token, "warden_audit_syslog_sent_total"), 0);
  std::string log = ReadFile(server.dir() + "/server.log");
  EXPECT_NE(log.find("receiver certificate not accepted"), std::string::npos) << log;
}

// The control for the attack tests: with verification switched off (the explicit, logged opt-out)
// the same impostor does get the events, so "nothing arrived" above is the check's doing.
TEST(AuditSyslogTest, WithVerificationSwitchedOffTheImpostorGetsEventsAndTheServerWarns) {
  REQUIRE_RSYSLOG();
  Rsyslog rsyslog;
  rsyslog.Start("impostor");
  ASSERT_FALSE(HasFatalFailure());
  WardenServer server;
  std::string token =
      StartAndLogIn(server, rsyslog.Config() + "    insecure_skip_verify: true\n");
  ASSERT_FALSE(HasFatalFailure());
  int n = server.AuditCountSynced();
  ASSERT_TRUE(WaitUntil([&] { return rsyslog.HasAllSeqsBelow(n); })) << rsyslog.Log();
  std::string log = ReadFile(server.dir() + "/server.log");
  EXPECT_NE(log.find("WARNING: audit syslog sink: insecure_skip_verify is set"), std::string::npos)
      << log;
}

INSTANTIATE_TEST_SUITE_P(Certificates, AuditSyslogImpostorTest,
                         ::testing::Values("impostor", "wrongname"));

TEST(AuditSyslogTest, ServerRefusesToStartWithAnUnusableCaFile) {
  std::string dir = ::testing::TempDir() + "warden_syslog_badca_" + std::to_string(getpid());
  std::filesystem::create_directories(dir + "/data");
  std::ofstream(dir + "/config.yaml")
      << "audit: {syslog: {address: '127.0.0.1:6514', ca_file: /nonexistent/ca.pem}}\n";
  RunResult s = RunShell("timeout 20 " + ShellQuote(WardenBin()) + " server --config " +
                         ShellQuote(dir + "/config.yaml") + " --data-dir " +
                         ShellQuote(dir + "/data") + " --listen 127.0.0.1:0");
  std::filesystem::remove_all(dir);
  EXPECT_EQ(s.code, 1) << s.out << s.err;  // refused at start, not killed by the timeout
  EXPECT_NE(s.err.find("cannot load ca_file /nonexistent/ca.pem"), std::string::npos) << s.err;
}

}  // namespace
}  // namespace warden::testing
