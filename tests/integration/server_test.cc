// Server behaviours a new operator relies on: first-start files and modes, refusing an exposed
// master key, fail-closed audit, health, password change, and no tenant-existence oracle.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "harness.h"

namespace warden::testing {
namespace {

using common::Json;

int Mode(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return -1;
  return st.st_mode & 0777;
}

TEST(ServerStartTest, FirstStartCreatesKeysAndStateReadableOnlyByTheServer) {
  WardenServer server;
  server.Start();
  ASSERT_FALSE(HasFatalFailure());
  std::string d = server.dir() + "/data";
  EXPECT_EQ(Mode(d), 0700);
  for (const char* f : {"/master.key", "/pki/ca.key", "/pki/server.key", "/pki/ca.crt", "/state.db",
                        "/audit/audit.key", "/audit/seg-00000000000000000000.jsonl",
                        "/audit/checkpoints.log"}) {
    EXPECT_EQ(Mode(d + f), 0600) << f;
  }
  server.Login("admin", "admin", server.admin_password());
  // The CLI keeps its bearer token in a file only its user can read.
  EXPECT_EQ(Mode(server.dir() + "/cli-admin/credentials.json"), 0600);
  EXPECT_EQ(Mode(server.dir() + "/cli-admin"), 0700);
}

TEST(ServerStartTest, MasterKeyReadableByOthersIsRefused) {
  WardenServer server;
  RunResult r = server.StartExpectingFailure([](const std::string& data) {
    std::ofstream key(data + "/master.key");
    key << std::string(32, 'k');
    key.close();
    chmod((data + "/master.key").c_str(), 0644);
  });
  EXPECT_NE(r.code, 0);
  EXPECT_NE((r.out + r.err).find("must not be readable by group or others"), std::string::npos)
      << r.out << r.err;
}

// The master key from an external command (a KMS/HSM/TPM hook, config master_key_command): no key
// file is written, and the vault's keys opened with it still open after a restart (the same
// command gives the same key).
TEST(ServerStartTest, MasterKeyFromACommandIsUsedAndNoKeyFileIsWritten) {
  const std::string hex(64, 'a');
  WardenServer server;
  server.Start("sqlite", "master_key_command: [/bin/sh, -c, \"echo " + hex + "\"]\n");
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_FALSE(std::filesystem::exists(server.dir() + "/data/master.key"));
  server.Login("admin", "admin", server.admin_password());
  ASSERT_EQ(server.Cli("admin", "tenant create acme").code, 0);
  std::string in = server.dir() + "/in.bin";
  std::ofstream(in) << std::string(100000, 'x');
  RunResult put = server.Cli("admin", "dataset put --tenant acme a " + in);
  ASSERT_EQ(put.code, 0) << put.err;
  server.Restart();
  ASSERT_FALSE(HasFatalFailure());
  RunResult verify = server.Cli("admin", "dataset verify --tenant acme a");
  EXPECT_EQ(verify.code, 0) << verify.err << verify.out;
  EXPECT_FALSE(std::filesystem::exists(server.dir() + "/data/master.key"));
}

// A key command that fails, or prints no key, stops the server with an error naming the command
// and what went wrong; the server never falls back to creating a key file.
TEST(ServerStartTest, FailingMasterKeyCommandRefusesToStart) {
  for (const auto& [command, want] : std::vector<std::pair<std::string, std::string>>{
           {"[/bin/sh, -c, \"exit 3\"]", "master key command /bin/sh failed (exit status 3)"},
           {"[/bin/sh, -c, \"echo not-a-key\"]", "must print exactly 64 hex digits"},
           {"[/nonexistent/kms-unseal]", "master key command /nonexistent/kms-unseal failed"}}) {
    static int n = 0;
    std::string dir = ::testing::TempDir() + "warden_keycmd_" + std::to_string(getpid()) + "_" +
                      std::to_string(n++);
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir + "/data");
    std::ofstream(dir + "/config.yaml") << "master_key_command: " << command << "\n";
    RunResult r = RunShell("timeout 20 " + ShellQuote(WardenBin()) + " server --config " +
                           ShellQuote(dir + "/config.yaml") + " --data-dir " +
                           ShellQuote(dir + "/data") + " --listen 127.0.0.1:0");
    EXPECT_NE(r.code, 0) << command;
    EXPECT_NE(r.code, 124) << "server kept running with " << command;
    EXPECT_NE((r.out + r.err).find(want), std::string::npos) << command << ": " << r.out << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir + "/data/master.key")) << command;
    std::filesystem::remove_all(dir);
  }
}

TEST(ServerStartTest, AdminPasswordFileIsOnlyNeededOnFirstStart) {
  WardenServer server;
  server.Start();
  ASSERT_FALSE(HasFatalFailure());
  server.Stop();
  std::filesystem::remove(server.dir() + "/admin.pw");
  RunResult r = RunShell("timeout 5 " + ShellQuote(WardenBin()) + " server --data-dir " +
                         ShellQuote(server.dir() + "/data") + " --listen 127.0.0.1:0 " +
                         "--admin-password-file " + ShellQuote(server.dir() + "/admin.pw"));
  EXPECT_EQ(r.code, 124) << "server should have kept running until timeout: " << r.out << r.err;
}

// Fail-closed audit (503 on a full disk, recovery when space returns) is tested in
// audit_log_test.cc with a real full file system.

TEST(ServerApiTest, UnknownTenantLooksForbiddenToTenantUsersAndMissingToAdmins) {
  WardenServer server;
  server.Start();
  ASSERT_FALSE(HasFatalFailure());
  server.Login("admin", "admin", server.admin_password());
  ASSERT_EQ(server.Cli("admin", "tenant create a").code, 0);
  ASSERT_EQ(server.Cli("admin", "tenant create b").code, 0);
  ASSERT_EQ(server.Cli("admin", "user create dev --tenant a --role developer --password-stdin",
                       "dev-password\n").code, 0);
  server.Login("dev", "dev", "dev-password");
  std::string dev = server.Token("dev"), admin = server.Token("admin");
  // For a tenant user, "exists but not yours" and "does not exist" are the same answer.
  RunResult exists = server.Curl("GET", "/api/v1/tenants/b/users", dev);
  RunResult missing = server.Curl("GET", "/api/v1/tenants/nosuch/users", dev);
  EXPECT_EQ(exists.code, 403);
  EXPECT_EQ(missing.code, 403);
  EXPECT_EQ(server.Curl("GET", "/api/v1/tenants/nosuch/users", admin).code, 404);
  // Traversal in a path parameter is a 400 with INVALID_ARGUMENT.
  RunResult bad = server.Curl("GET", "/api/v1/tenants/..%2Fb", admin, "", "--path-as-is");
  EXPECT_EQ(bad.code, 400);
  EXPECT_EQ(Json::parse(bad.out)["error"]["code"], "INVALID_ARGUMENT");
}

TEST(ServerApiTest, PasswordChangeNeedsTheCurrentOneAndEndsOtherSessions) {
  WardenServer server;
  server.Start();
  ASSERT_FALSE(HasFatalFailure());
  server.Login("admin", "admin", server.admin_password());
  server.Login("admin2", "admin", server.admin_password());  // a second session
  RunResult wrong = server.Cli("admin", "passwd --password-stdin", "not-the-password\nnew-password-1\n");
  EXPECT_NE(wrong.code, 0);
  EXPECT_NE(wrong.err.find("current password is wrong"), std::string::npos) << wrong.err;
  RunResult ok = server.Cli("admin", "passwd --password-stdin",
                            server.admin_password() + "\nnew-password-1\n");
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_EQ(server.Cli("admin", "whoami").code, 0);   // this session stays
  EXPECT_NE(server.Cli("admin2", "whoami").code, 0);  // the other one ended
  server.Login("admin3", "admin", "new-password-1");
  // An API token cannot change its owner's password.
  RunResult tok = server.Cli("admin3", "token create t --role viewer --cluster -o json");
  ASSERT_EQ(tok.code, 0) << tok.err;
  std::string secret = Json::parse(tok.out)["secret"];
  RunResult viaToken = server.Curl("POST", "/api/v1/password", secret,
                                   Json{{"current_password", "new-password-1"},
                                        {"new_password", "new-password-2"}}.dump());
  EXPECT_EQ(viaToken.code, 403);
  RunResult old = server.Cli("admin4", "login --server " + server.url() + " --user admin --password-stdin",
                             server.admin_password() + "\n");
  EXPECT_NE(old.code, 0);
}

TEST(ServerApiTest, EscalationMessagesNameTenantsByName) {
  WardenServer server;
  server.Start();
  ASSERT_FALSE(HasFatalFailure());
  server.Login("admin", "admin", server.admin_password());
  ASSERT_EQ(server.Cli("admin", "tenant create acme").code, 0);
  ASSERT_EQ(server.Cli("admin", "user create ta --tenant acme --role tenant-admin --password-stdin",
                       "ta-password\n").code, 0);
  server.Login("ta", "ta", "ta-password");
  RunResult r = server.Cli("ta", "role create ops --perm nodes:manage");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("cannot grant \"nodes:manage\": you do not hold it at tenant scope \"acme\""),
            std::string::npos) << r.err;
}

}  // namespace
}  // namespace warden::testing
