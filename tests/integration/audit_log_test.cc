// The tamper-evident audit log through the real server binary and CLI (issue 4): fail-closed
// with 503 on a full disk (a small tmpfs under DATA_DIR/audit) and recovery when space returns;
// queries, proofs and export with RBAC scoping; offline `audit verify` of the server's log,
// including a tampered copy.
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "harness.h"

namespace warden::testing {
namespace {

using common::Json;

constexpr char kPw[] = "s3cret-passw0rd";

// Unmounts (lazily: the server may still hold files open) before the harness removes the dir.
struct TmpfsMount {
  std::string path;
  ~TmpfsMount() {
    if (!path.empty()) umount2(path.c_str(), MNT_DETACH);
  }
};

// Fills the file system of `dir` to the last byte; returns the filler file's path.
std::string FillToTheLastByte(const std::string& dir) {
  std::string filler = dir + "/filler";
  {
    std::ofstream f(filler, std::ios::binary);
    std::string block(4096, 'x');
    while (f.write(block.data(), static_cast<std::streamsize>(block.size()))) f.flush();
  }
  {
    std::ofstream f(filler, std::ios::binary | std::ios::app);  // the last partial block
    while (f.put('x')) f.flush();
  }
  return filler;
}

// A server whose DATA_DIR/audit is a 256 KiB tmpfs mounted before it starts, logged in as admin
// with one audited request served. Skips where a tmpfs cannot be mounted.
class AuditFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int mount_errno = 0;
    server.Start("sqlite", "", [&](const std::string& data) {
      std::string dir = data + "/audit";
      std::filesystem::create_directories(dir);
      if (mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=256k,mode=0700") == 0) {
        mnt.path = dir;
      } else {
        mount_errno = errno;
      }
    });
    ASSERT_FALSE(HasFatalFailure());
    if (mnt.path.empty()) {
      GTEST_SKIP() << "cannot mount a tmpfs for the disk-full test (needs root or CAP_SYS_ADMIN): "
                   << std::strerror(mount_errno);
    }
    server.Login("admin", "admin", server.admin_password());
    token = server.Token("admin");
    ASSERT_EQ(server.Curl("GET", "/api/v1/whoami", token).code, 200);
  }

  WardenServer server;
  TmpfsMount mnt;  // declared after the server: unmounted before the harness removes the dir
  std::string token;
};

TEST_F(AuditFaultTest, DiskFullGives503AndServiceReturnsWithTheSpace) {
  std::string filler = FillToTheLastByte(mnt.path);
  // The segment's current page may still take a few events; then every audited request is
  // refused, because it could not be recorded.
  RunResult refused;
  int served_before_full = 0;
  for (int i = 0; i < 40; ++i) {
    refused = server.Curl("GET", "/api/v1/whoami", token);
    if (refused.code == 503) break;
    ASSERT_EQ(refused.code, 200) << refused.out;
    ++served_before_full;
  }
  ASSERT_EQ(refused.code, 503) << "the disk is full but requests are still served";
  EXPECT_EQ(Json::parse(refused.out)["error"]["code"], "UNAVAILABLE");
  EXPECT_EQ(server.Curl("GET", "/api/v1/whoami", token).code, 503);
  EXPECT_EQ(server.Curl("GET", "/api/v1/version").code, 503);
  EXPECT_EQ(server.Curl("GET", "/healthz").code, 503);

  // Space returns: the next audited request is recorded (and, having been refused before its
  // handler ran, answered 503); from then on requests are served again.
  std::filesystem::remove(filler);
  int code = 0;
  for (int i = 0; i < 3 && code != 200; ++i) code = server.Curl("GET", "/api/v1/whoami", token).code;
  EXPECT_EQ(code, 200);
  EXPECT_EQ(server.Curl("GET", "/healthz").code, 200);
  RunResult metrics = server.Curl("GET", "/metrics", token);
  ASSERT_EQ(metrics.code, 200);
  EXPECT_NE(metrics.out.find("audit_log_healthy 1"), std::string::npos) << metrics.out;
  EXPECT_NE(metrics.out.find("audit_append_failures_total{reason=\"write\"}"), std::string::npos)
      << metrics.out;

  // Nothing torn or lost: the log verifies after a clean stop.
  server.Stop();
  RunResult verify = RunShell(ShellQuote(WardenBin()) + " audit verify " + ShellQuote(mnt.path) +
                              " --pubkey " + ShellQuote(mnt.path + "/audit.pub"));
  EXPECT_EQ(verify.code, 0) << verify.out << verify.err;
  EXPECT_NE(verify.out.find("OK:"), std::string::npos) << verify.out;
}

// Mutations wait for their event's fdatasync (metadata GETs do not: audit.durable_reads is off by
// default), so no mutation is ever answered 201 unless its event reached the disk: on a disk that
// fills up, every 201 has its event in the log once space returns.
TEST_F(AuditFaultTest, EveryMutationAnswered201OnAFillingDiskHasItsEventInTheLog) {
  std::string filler = FillToTheLastByte(mnt.path);
  int answered_201 = 0;
  int last = 0;
  for (int i = 0; i < 200; ++i) {
    last = server.Curl("POST", "/api/v1/tenants", token,
                       "{\"name\":\"df" + std::to_string(i) + "\"}").code;
    if (last != 201) break;
    ++answered_201;
  }
  ASSERT_EQ(last, 503) << "the disk is full but mutations are still answered";
  std::filesystem::remove(filler);
  int code = 0;
  for (int i = 0; i < 5 && code != 200; ++i) code = server.Curl("GET", "/api/v1/whoami", token).code;
  ASSERT_EQ(code, 200);
  RunResult events = server.Curl(
      "GET", "/api/v1/audit/events?action=tenants:create&status=201&limit=1000", token);
  ASSERT_EQ(events.code, 200) << events.out;
  EXPECT_EQ(Json::parse(events.out)["items"].size(), static_cast<size_t>(answered_201))
      << "a mutation was answered 201 without its audit event on disk";
}

class AuditApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.Start();
    ASSERT_FALSE(HasFatalFailure());
    server_.Login("admin", "admin", server_.admin_password());
    for (const char* t : {"a", "b"}) ASSERT_EQ(server_.Cli("admin", std::string("tenant create ") + t).code, 0);
    for (auto [tenant, name, role] : {std::tuple{"a", "a-adm", "tenant-admin"},
                                      std::tuple{"b", "b-adm", "tenant-admin"}}) {
      RunResult r = server_.Cli("admin", std::string("user create ") + name + " --tenant " + tenant +
                                             " --role " + role + " --password-stdin",
                                std::string(kPw) + "\n");
      ASSERT_EQ(r.code, 0) << r.err;
    }
    server_.Login("a-adm", "a-adm", kPw);
    server_.Login("b-adm", "b-adm", kPw);
    // Tenant-scoped events in both tenants.
    ASSERT_EQ(server_.Cli("a-adm", "user ls --tenant a").code, 0);
    ASSERT_EQ(server_.Cli("b-adm", "user ls --tenant b").code, 0);
  }
  WardenServer server_;
};

TEST_F(AuditApiTest, TenantAdminReadsOnlyTheirTenantsEventsAndProofs) {
  RunResult mine = server_.Cli("a-adm", "audit query --tenant a --limit 1000 -o json");
  ASSERT_EQ(mine.code, 0) << mine.err;
  Json items = Json::parse(mine.out)["items"];
  ASSERT_FALSE(items.empty());
  for (const auto& e : items) EXPECT_EQ(e["tenant"], "a") << e.dump();
  // The other tenant's and the cluster-wide views are refused.
  EXPECT_NE(server_.Cli("a-adm", "audit query --tenant b").code, 0);
  std::string a_token = server_.Token("a-adm");
  EXPECT_EQ(server_.Curl("GET", "/api/v1/audit/events", a_token).code, 403);
  EXPECT_EQ(server_.Curl("GET", "/api/v1/audit/export", a_token).code, 403);
  // Asking for b's events through a's route yields nothing of b.
  RunResult sneaky = server_.Curl("GET", "/api/v1/tenants/a/audit/events?tenant=b", a_token);
  ASSERT_EQ(sneaky.code, 200);
  for (const auto& e : Json::parse(sneaky.out)["items"]) EXPECT_EQ(e["tenant"], "a");
  // A proof for an event of tenant b through tenant a's route looks like a missing event.
  RunResult admin_all = server_.Cli("admin", "audit query --cluster --tenant-filter b -o json");
  ASSERT_EQ(admin_all.code, 0) << admin_all.err;
  Json b_items = Json::parse(admin_all.out)["items"];
  ASSERT_FALSE(b_items.empty());
  int64_t b_seq = b_items[0]["seq"].get<int64_t>();
  // Wait until a signed checkpoint covers both events (the server signs at least every second).
  int64_t a_seq = items[0]["seq"].get<int64_t>();
  for (int i = 0; i < 50; ++i) {
    RunResult cp = server_.Cli("admin", "audit checkpoint -o json");
    ASSERT_EQ(cp.code, 0) << cp.err;
    if (Json::parse(cp.out)["tree_size"].get<int64_t>() > std::max(a_seq, b_seq)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  RunResult other = server_.Curl(
      "GET", "/api/v1/tenants/a/audit/proof/inclusion?seq=" + std::to_string(b_seq), a_token);
  EXPECT_EQ(other.code, 404) << other.out;
  RunResult own = server_.Cli("a-adm", "audit proof " + std::to_string(a_seq) + " --tenant a");
  EXPECT_EQ(own.code, 0) << own.out << own.err;
}

TEST_F(AuditApiTest, ProofsExportAndOfflineVerificationOfTheServersLog) {
  // Wait until a checkpoint covers the events so far (the server signs at least every second).
  RunResult cp;
  for (int i = 0; i < 50; ++i) {
    cp = server_.Cli("admin", "audit checkpoint -o json");
    ASSERT_EQ(cp.code, 0) << cp.err;
    if (Json::parse(cp.out)["tree_size"].get<int64_t>() >= 8) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  int64_t size = Json::parse(cp.out)["tree_size"].get<int64_t>();
  ASSERT_GE(size, 8);
  RunResult proof = server_.Cli("admin", "audit proof 3 --cluster");
  EXPECT_EQ(proof.code, 0) << proof.out << proof.err;
  EXPECT_NE(proof.out.find("proof verifies against signed checkpoint"), std::string::npos)
      << proof.out;
  RunResult cons = server_.Cli("admin", "audit consistency 2 " + std::to_string(size));
  EXPECT_EQ(cons.code, 0) << cons.out << cons.err;
  RunResult exp = server_.Cli("admin", "audit export --cluster --limit 5");
  ASSERT_EQ(exp.code, 0) << exp.err;
  std::istringstream lines(exp.out);
  std::string line;
  int rows = 0;
  std::getline(lines, line);
  EXPECT_EQ(Json::parse(line)["format"], "gpuwarden-audit-export/v1");
  while (std::getline(lines, line)) {
    Json row = Json::parse(line);
    EXPECT_TRUE(row.contains("proof")) << line;
    ++rows;
  }
  EXPECT_EQ(rows, 5);

  // Offline: the public key from the API, a checkpoint kept aside, the server stopped.
  RunResult pub = server_.Cli("admin", "audit pubkey");
  ASSERT_EQ(pub.code, 0);
  std::string data = server_.dir() + "/data";
  EXPECT_EQ(pub.out, ReadFile(data + "/audit/audit.pub"));
  RunResult text = server_.Cli("admin", "audit checkpoint");
  ASSERT_EQ(text.code, 0);
  { std::ofstream(server_.dir() + "/kept.pub") << pub.out; }
  { std::ofstream(server_.dir() + "/kept.cp") << text.out; }
  server_.Stop();
  std::string verify = ShellQuote(WardenBin()) + " audit verify " + ShellQuote(data + "/audit") +
                       " --pubkey " + ShellQuote(server_.dir() + "/kept.pub") + " --checkpoint " +
                       ShellQuote(server_.dir() + "/kept.cp");
  RunResult ok = RunShell(verify);
  EXPECT_EQ(ok.code, 0) << ok.out << ok.err;
  EXPECT_NE(ok.out.find("OK:"), std::string::npos) << ok.out;
  // The offline pubkey export reads the server's key file.
  RunResult offline_pub = RunShell(ShellQuote(WardenBin()) + " audit pubkey --data-dir " + ShellQuote(data));
  EXPECT_EQ(offline_pub.out, pub.out);

  // Tamper with one event: verify fails and names the segment file.
  std::string seg = data + "/audit/seg-00000000000000000000.jsonl";
  std::string bytes = ReadFile(seg);
  size_t at = bytes.find("\"admin\"");
  ASSERT_NE(at, std::string::npos);
  bytes[at + 1] = 'A';
  { std::ofstream(seg, std::ios::binary | std::ios::trunc) << bytes; }
  RunResult bad = RunShell(verify);
  EXPECT_EQ(bad.code, 1) << bad.out << bad.err;
  EXPECT_NE(bad.out.find("FAILED"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("seg-00000000000000000000.jsonl offset"), std::string::npos) << bad.out;
  // And the server refuses to append to a log that does not match its checkpoints.
  RunResult start = RunShell("timeout 20 " + ShellQuote(WardenBin()) + " server --data-dir " +
                             ShellQuote(data) + " --listen 127.0.0.1:0");
  EXPECT_NE(start.code, 0);
  EXPECT_NE((start.out + start.err).find("does not match its signed checkpoints"), std::string::npos)
      << start.out << start.err;
}

}  // namespace
}  // namespace warden::testing
