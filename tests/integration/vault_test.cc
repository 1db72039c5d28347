// The encrypted vault end to end (issue 5): the real binary over real TLS, driven by the CLI
// (`gpuwarden dataset ...`, `gpuwarden key ...`) and curl. Round trips compare SHA-256 of what
// went in and came out; the attacks of must-show 2 that go through the API are each a test that
// would pass the attacker's request if the defence were removed.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cstring>

#include <thread>

#include "harness.h"

namespace warden::testing {
namespace {

using common::Json;

constexpr char kPw[] = "s3cret-passw0rd";
// Lets everyone of the tenant who passes RBAC download (copy) and read everything.
constexpr char kExportPolicy[] =
    R"({"version": 1, "statements": [{"id": "export-all", "effect": "allow",
        "actions": ["read", "copy"], "principals": ["*"], "resources": ["*"]}]})";

std::string Sha256OfFile(const std::string& path) {
  RunResult r = RunShell("sha256sum " + ShellQuote(path));
  return r.out.substr(0, 64);
}

std::vector<Json> ReadAuditEvents(const std::string& server_dir) {
  std::vector<Json> out;
  for (const auto& f : std::filesystem::directory_iterator(server_dir + "/data/audit")) {
    if (f.path().extension() != ".jsonl") continue;
    std::ifstream in(f.path());
    std::string line;
    while (std::getline(in, line)) {
      auto j = Json::parse(line, nullptr, false);
      if (!j.is_discarded()) out.push_back(j.contains("event") ? j["event"] : j);
    }
  }
  return out;
}

class VaultTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    server_.Start(GetParam());
    if (IsSkipped() || HasFatalFailure()) return;
    server_.Login("admin", "admin", server_.admin_password());
    ASSERT_EQ(server_.Cli("admin", "tenant create acme").code, 0);
    ASSERT_EQ(server_.Cli("admin", "tenant create beta").code, 0);
    for (const auto& [user, tenant, role] :
         std::vector<std::tuple<std::string, std::string, std::string>>{
             {"alice", "acme", "developer"},
             {"acme-admin", "acme", "tenant-admin"},
             {"bob", "beta", "tenant-admin"}}) {
      RunResult r = server_.Cli("admin", "user create " + user + " --tenant " + tenant +
                                             " --role " + role + " --password-stdin",
                                std::string(kPw) + "\n");
      ASSERT_EQ(r.code, 0) << r.err;
      server_.Login(user, user, kPw);
    }
    dir_ = ::testing::TempDir() + "vault_it_" + std::to_string(getpid());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string MakeFile(const std::string& name, uint64_t mib, uint64_t extra_bytes = 0) {
    std::string path = dir_ + "/" + name;
    RunResult r = RunShell("head -c " + std::to_string(mib * 1048576 + extra_bytes) +
                           " /dev/urandom > " + ShellQuote(path));
    EXPECT_EQ(r.code, 0) << r.err;
    return path;
  }

  void AllowExport() {
    std::ofstream(dir_ + "/export.json") << kExportPolicy;
    RunResult r = server_.Cli("acme-admin", "dataset policy set export " + dir_ + "/export.json");
    ASSERT_EQ(r.code, 0) << r.err << r.out;
  }

  std::vector<Json> AuditEvents() { return ReadAuditEvents(server_.dir()); }

  WardenServer server_;
  std::string dir_;
};

TEST_P(VaultTest, PutGetRoundTripKeepsSha256AndAuditsBytesAndPolicy) {
  std::string in = MakeFile("in.bin", 3, 12345);  // not a multiple of the chunk or piece size
  RunResult put = server_.Cli("alice", "dataset put models/resnet.pt " + in);
  ASSERT_EQ(put.code, 0) << put.err << put.out;
  AllowExport();
  RunResult get = server_.Cli("alice", "dataset get models/resnet.pt " + dir_ + "/out.bin");
  ASSERT_EQ(get.code, 0) << get.err << get.out;
  EXPECT_EQ(Sha256OfFile(dir_ + "/out.bin"), Sha256OfFile(in));

  RunResult ls = server_.Cli("alice", "dataset ls -o json");
  ASSERT_EQ(ls.code, 0) << ls.err;
  Json items = Json::parse(ls.out)["items"];
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0]["name"], "models/resnet.pt");
  EXPECT_EQ(items[0]["size"], 3u * 1048576 + 12345);
  EXPECT_EQ(items[0]["sha256"], Sha256OfFile(in));
  RunResult verify = server_.Cli("alice", "dataset verify models/resnet.pt");
  EXPECT_EQ(verify.code, 0) << verify.err << verify.out;

  // Every access is an audit event with the bytes moved and the deciding policy statement.
  uint64_t uploaded = 0, downloaded = 0;
  bool named_statement = false;
  for (const Json& e : AuditEvents()) {
    if (e.value("action", "") == "data:upload") uploaded += e.value("bytes", uint64_t{0});
    if (e.value("action", "") == "data:download") {
      downloaded += e.value("bytes", uint64_t{0});
      named_statement = named_statement ||
                        e.value("reason", "").find("policy export statement export-all") !=
                            std::string::npos;
    }
  }
  EXPECT_EQ(uploaded, 3u * 1048576 + 12345);
  EXPECT_EQ(downloaded, 3u * 1048576 + 12345);
  EXPECT_TRUE(named_statement);
  // Nothing in the vault's files is plaintext: 64 bytes from the middle of the input appear in
  // no file under data/vault (the content file holds 3 MiB of ciphertext).
  std::string plain = ReadFile(in).substr(1048576, 64);
  size_t files = 0;
  for (const auto& f : std::filesystem::recursive_directory_iterator(server_.dir() + "/data/vault")) {
    if (!f.is_regular_file()) continue;
    ++files;
    EXPECT_EQ(ReadFile(f.path().string()).find(plain), std::string::npos) << f.path();
  }
  EXPECT_GT(files, 2u);
}

TEST_P(VaultTest, DownloadWithoutCopyGrantIsRefused) {
  std::string in = MakeFile("in.bin", 1);
  ASSERT_EQ(server_.Cli("alice", "dataset put data/train.bin " + in).code, 0);
  // No data policy: read is allowed by RBAC alone, but copy (download) needs an explicit allow.
  RunResult get = server_.Cli("alice", "dataset get data/train.bin " + dir_ + "/out.bin");
  EXPECT_NE(get.code, 0);
  EXPECT_NE(get.err.find("copy"), std::string::npos) << get.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/out.bin"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/out.bin.part"));
  // A deny on copy for this prefix wins over the allow-all document.
  AllowExport();
  std::ofstream(dir_ + "/deny.json") << R"({"version": 1, "statements": [{"id": "no-export",
      "effect": "deny", "actions": ["copy"], "principals": ["*"], "resources": ["prefix:data/"]}]})";
  ASSERT_EQ(server_.Cli("acme-admin", "dataset policy set lockdown " + dir_ + "/deny.json").code, 0);
  get = server_.Cli("alice", "dataset get data/train.bin " + dir_ + "/out.bin");
  EXPECT_NE(get.code, 0);
  EXPECT_NE(get.err.find("no-export"), std::string::npos) << get.err;
  // A developer cannot change the policies (datasets:manage).
  EXPECT_NE(server_.Cli("alice", "dataset policy rm lockdown").code, 0);
}

// Statements name roles: a deny on the caller's role (developer) refuses alice's write, while the
// tenant-admin (another role) still writes.
TEST_P(VaultTest, PolicyStatementsMatchTheCallersRoles) {
  std::string in = MakeFile("in.bin", 0, 1000);
  std::ofstream(dir_ + "/roles.json") << R"({"version": 1, "statements": [
      {"id": "devs-read-only", "effect": "deny", "actions": ["write"],
       "principals": ["role:developer"], "resources": ["prefix:prod/"]}]})";
  ASSERT_EQ(server_.Cli("acme-admin", "dataset policy set roles " + dir_ + "/roles.json").code, 0);
  RunResult dev = server_.Cli("alice", "dataset put prod/model " + in);
  EXPECT_NE(dev.code, 0);
  EXPECT_NE(dev.err.find("devs-read-only"), std::string::npos) << dev.err;
  RunResult admin = server_.Cli("acme-admin", "dataset put prod/model " + in);
  EXPECT_EQ(admin.code, 0) << admin.err;
  EXPECT_EQ(server_.Cli("alice", "dataset put dev/model " + in).code, 0);
}

TEST_P(VaultTest, AnotherTenantCannotReadByNameOrId) {
  std::string in = MakeFile("in.bin", 1);
  RunResult put = server_.Cli("alice", "dataset put secret/weights " + in + " -o json");
  ASSERT_EQ(put.code, 0) << put.err;
  std::string object_id = Json::parse(put.out)["object_id"];
  AllowExport();
  std::string bob = server_.Token("bob");
  for (const std::string& path :
       {std::string("/api/v1/tenants/acme/datasets/content?name=secret/weights"),
        std::string("/api/v1/tenants/acme/datasets/object?name=secret/weights"),
        std::string("/api/v1/tenants/acme/datasets"), std::string("/api/v1/tenants/acme/keys")}) {
    EXPECT_EQ(server_.Curl("GET", path, bob).code, 403) << path;
  }
  // In bob's own tenant neither the name nor the object id of acme's object exists.
  EXPECT_EQ(server_.Curl("GET", "/api/v1/tenants/beta/datasets/content?name=secret/weights", bob).code,
            404);
  EXPECT_EQ(server_.Curl("GET", "/api/v1/tenants/beta/datasets/content?name=" + object_id, bob).code,
            404);
  RunResult get = server_.Cli("bob", "dataset get --tenant acme secret/weights " + dir_ + "/x");
  EXPECT_NE(get.code, 0);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/x"));
}

TEST_P(VaultTest, PathTraversalInNamesIsRefused) {
  std::string in = MakeFile("in.bin", 0, 100);
  for (const char* name : {"../../etc/passwd", "a/../../b", "/abs", "x/./y", "a//b"}) {
    RunResult r = server_.Cli("alice", "dataset put " + ShellQuote(name) + " " + in);
    EXPECT_NE(r.code, 0) << name;
  }
  std::string alice = server_.Token("alice");
  RunResult r = server_.Curl("POST", "/api/v1/tenants/acme/datasets/uploads", alice,
                             R"({"name": "..%2F..%2Fkeys"})");
  EXPECT_EQ(r.code, 400) << r.out;
  r = server_.Curl("GET", "/api/v1/tenants/acme/datasets/object?name=..%2F..%2Fkeys%2Facme", alice);
  EXPECT_EQ(r.code, 400) << r.out;
  RunResult ls = server_.Cli("alice", "dataset ls -o json");
  EXPECT_TRUE(Json::parse(ls.out)["items"].empty());
}

TEST_P(VaultTest, DeletingTheTenantShredsItsKeys) {
  // A tenant can be deleted once it has no users: the cluster admin fills one with data.
  ASSERT_EQ(server_.Cli("admin", "tenant create scratch").code, 0);
  std::string in = MakeFile("in.bin", 1);
  RunResult put = server_.Cli("admin", "dataset put --tenant scratch ckpt/a " + in);
  ASSERT_EQ(put.code, 0) << put.err << put.out;
  RunResult keys = server_.Cli("admin", "key status --tenant scratch -o json");
  ASSERT_EQ(keys.code, 0) << keys.err;
  EXPECT_EQ(Json::parse(keys.out)["current_version"], 1);
  int keyrings_before = 0;
  for (const auto& f : std::filesystem::directory_iterator(server_.dir() + "/data/vault/keys")) {
    keyrings_before += f.path().string().ends_with(".keyring.json");
  }
  RunResult rm = server_.Cli("admin", "tenant rm scratch");
  ASSERT_EQ(rm.code, 0) << rm.err << rm.out;
  bool audited = false;
  for (const Json& e : AuditEvents()) audited = audited || e.value("action", "") == "keys:shred";
  EXPECT_TRUE(audited);
  // Its keyring is gone (a tombstone remains), so any backup of its wrapped data keys opens
  // nowhere; acme's keyring (created by no upload here) is unaffected.
  int keyrings = 0, tombstones = 0;
  for (const auto& f : std::filesystem::directory_iterator(server_.dir() + "/data/vault/keys")) {
    keyrings += f.path().string().ends_with(".keyring.json");
    tombstones += f.path().string().ends_with(".shredded");
  }
  EXPECT_EQ(keyrings, keyrings_before - 1);
  EXPECT_EQ(tombstones, 1);
  // A new tenant of the same name starts empty: nothing of the old one is reachable.
  ASSERT_EQ(server_.Cli("admin", "tenant create scratch").code, 0);
  RunResult ls = server_.Cli("admin", "dataset ls --tenant scratch -o json");
  ASSERT_EQ(ls.code, 0) << ls.err;
  EXPECT_TRUE(Json::parse(ls.out)["items"].empty());
  RunResult get = server_.Curl("GET", "/api/v1/tenants/scratch/datasets/object?name=ckpt/a",
                               server_.Token("admin"));
  EXPECT_EQ(get.code, 404) << get.out;
}

// Someone who can write the vault's files flips one bit of a stored chunk: the download fails
// (the chunk's tag), the CLI leaves neither OUT nor OUT.part, and verify reports it.
TEST_P(VaultTest, TamperedContentFailsDownloadAndVerifyAndLeavesNoPlaintext) {
  std::string in = MakeFile("in.bin", 2);
  ASSERT_EQ(server_.Cli("alice", "dataset put t " + in).code, 0);
  AllowExport();
  std::string content;
  for (const auto& f : std::filesystem::recursive_directory_iterator(server_.dir() + "/data/vault")) {
    if (f.path().extension() == ".gwv") content = f.path().string();
  }
  ASSERT_FALSE(content.empty());
  {
    std::fstream io(content, std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(1048576 + 4096);
    char b = 0;
    io.read(&b, 1);
    io.seekp(1048576 + 4096);
    b = static_cast<char>(b ^ 0x10);
    io.write(&b, 1);
  }
  RunResult get = server_.Cli("alice", "dataset get t " + dir_ + "/out.bin");
  EXPECT_NE(get.code, 0);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/out.bin"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/out.bin.part"));
  RunResult verify = server_.Cli("alice", "dataset verify t");
  EXPECT_NE(verify.code, 0);
  EXPECT_NE(verify.err.find("FAILED"), std::string::npos) << verify.err << verify.out;
}

TEST_P(VaultTest, KeyRotationKeepsObjectsReadable) {
  std::string in = MakeFile("in.bin", 1);
  ASSERT_EQ(server_.Cli("alice", "dataset put a " + in).code, 0);
  RunResult rot = server_.Cli("acme-admin", "key rotate -o json");
  ASSERT_EQ(rot.code, 0) << rot.err;
  EXPECT_EQ(Json::parse(rot.out)["new_version"], 2);
  EXPECT_EQ(Json::parse(rot.out)["rewrapped"], 1);
  EXPECT_NE(server_.Cli("alice", "key rotate").code, 0);  // keys:manage only
  AllowExport();
  ASSERT_EQ(server_.Cli("alice", "dataset get a " + dir_ + "/out").code, 0);
  EXPECT_EQ(Sha256OfFile(dir_ + "/out"), Sha256OfFile(in));
}

TEST_P(VaultTest, KilledUploadResumes) {
  std::string in = MakeFile("big.bin", 64);
  // Start the CLI, let it send part of the file, kill it with SIGKILL.
  std::string cfg = server_.dir() + "/cli-alice";
  std::string cmd = "GPUWARDEN_CONFIG_DIR=" + ShellQuote(cfg) + " exec " + ShellQuote(WardenBin()) +
                    " dataset put big " + ShellQuote(in);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/bash", "bash", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  uint64_t received = 0;
  std::string alice = server_.Token("alice");
  while (std::chrono::steady_clock::now() < deadline && received < 4 * 1048576) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(server_.dir() + "/data/vault", ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (it->path().filename() == "data.part") received = std::filesystem::file_size(it->path(), ec);
    }
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_GE(received, 4u * 1048576) << "the upload did not progress";
  ASSERT_LT(received, 64u * 1048576) << "the upload finished before it was killed";
  // Not published: the object does not exist yet.
  RunResult ls = server_.Cli("alice", "dataset ls -o json");
  EXPECT_TRUE(Json::parse(ls.out)["items"].empty());
  RunResult again = server_.Cli("alice", "dataset put big " + in);
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.err.find("resuming upload"), std::string::npos) << again.err;
  AllowExport();
  ASSERT_EQ(server_.Cli("alice", "dataset get big " + dir_ + "/out").code, 0);
  EXPECT_EQ(Sha256OfFile(dir_ + "/out"), Sha256OfFile(in));
}

// Runs the CLI as `who` in its own process and returns its exit code and peak RSS (KiB), from
// wait4's rusage of exactly that process (RUSAGE_CHILDREN would include earlier servers).
std::pair<int, long> CliWithPeakRss(WardenServer& server, const std::string& who,
                                    const std::string& args) {
  std::string cmd = "GPUWARDEN_CONFIG_DIR=" + ShellQuote(server.dir() + "/cli-" + who) + " exec " +
                    ShellQuote(WardenBin()) + " " + args + " >/dev/null 2>" +
                    ShellQuote(server.dir() + "/cli.err");
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/bash", "bash", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  struct rusage ru {};
  wait4(pid, &status, 0, &ru);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, ru.ru_maxrss};
}

long RssKib(pid_t pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::atol(line.c_str() + std::strlen(field));
  }
  return -1;
}

// Bounded memory: a round trip far larger than any buffer, with the peak RSS of the server and
// of the CLI recorded (bench/RESULTS.md "Vault"). VAULT_ROUNDTRIP_MIB sets the size (the `slow`
// test vault_roundtrip_5gib runs 5 GiB). The server's high-water mark before the transfer is
// already set by argon2id at the logins (64 MiB per hash), so the test compares the mark after
// the transfer with the one before it.
void RoundTrip(WardenServer& server, const std::string& dir, uint64_t mib) {
  std::string in = dir + "/large.bin";
  ASSERT_EQ(RunShell("head -c " + std::to_string(mib) + "M /dev/urandom > " + ShellQuote(in)).code, 0);
  std::string want = Sha256OfFile(in);
  const long hwm_before = RssKib(server.pid(), "VmHWM:");
  auto t0 = std::chrono::steady_clock::now();
  auto [put_code, put_kib] = CliWithPeakRss(server, "alice", "dataset put large " + ShellQuote(in));
  ASSERT_EQ(put_code, 0) << ReadFile(server.dir() + "/cli.err");
  double put_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::filesystem::remove(in);  // the disk holds one plaintext copy at a time
  std::ofstream(dir + "/export.json") << kExportPolicy;
  ASSERT_EQ(server.Cli("acme-admin", "dataset policy set export " + dir + "/export.json").code, 0);
  t0 = std::chrono::steady_clock::now();
  auto [get_code, get_kib] =
      CliWithPeakRss(server, "alice", "dataset get large " + ShellQuote(dir + "/out.bin"));
  ASSERT_EQ(get_code, 0) << ReadFile(server.dir() + "/cli.err");
  double get_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(Sha256OfFile(dir + "/out.bin"), want);
  std::filesystem::remove(dir + "/out.bin");
  const long hwm_after = RssKib(server.pid(), "VmHWM:");
  const long rss_after = RssKib(server.pid(), "VmRSS:");
  std::printf("[vault round trip] %llu MiB: put %.1f s (%.1f MiB/s), get %.1f s (%.1f MiB/s); "
              "server VmHWM %ld KiB before (argon2 logins) -> %ld KiB after, VmRSS %ld KiB after; "
              "CLI peak RSS put %ld KiB, get %ld KiB\n",
              static_cast<unsigned long long>(mib), put_s, static_cast<double>(mib) / put_s, get_s,
              static_cast<double>(mib) / get_s, hwm_before, hwm_after, rss_after, put_kib, get_kib);
  // Constant memory: nowhere near the object's size on either side.
  EXPECT_LT(hwm_after - hwm_before, 64 * 1024);
  EXPECT_LT(rss_after, 256 * 1024);
  EXPECT_LT(put_kib, 64 * 1024);
  EXPECT_LT(get_kib, 64 * 1024);
  // Through the streaming routes: one upload request and one download request carried it all.
  int uploads = 0, downloads = 0;
  for (const Json& e : ReadAuditEvents(server.dir())) {
    const std::string action = e.value("action", "");
    if (action == "data:upload") {
      ++uploads;
      EXPECT_EQ(e.value("bytes", uint64_t{0}), mib << 20);
    }
    if (action == "data:download") {
      ++downloads;
      EXPECT_EQ(e.value("bytes", uint64_t{0}), mib << 20);
    }
  }
  EXPECT_EQ(uploads, 1);
  EXPECT_EQ(downloads, 1);
}

TEST_P(VaultTest, LargeRoundTripHasBoundedMemory) {
  const char* env = std::getenv("VAULT_ROUNDTRIP_MIB");
  RoundTrip(server_, dir_, env && *env ? std::strtoull(env, nullptr, 10) : 200);
}

INSTANTIATE_TEST_SUITE_P(Stores, VaultTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace warden::testing
