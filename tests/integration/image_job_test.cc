// Per-tenant container images end to end (issue 7): a busybox-static OCI image built by
// tools/build-busybox-rootfs.sh, imported by tenant acme through `gpuwarden image import`, run by
// a real agent (--executor=sandbox over real runc) as the job's read-only root, fetched once over
// the agent's mTLS API and then reused from its cache; a corrupted cache is detected and refetched.
// Attacks: tenant beta naming acme's digest at submit, and at the agent fetch route with beta's
// job id; a viewer importing; an archive over images.max_import_bytes.
// Skips when runc cannot run here (not root, no runc); fails instead under CI=true.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "harness.h"

namespace warden::testing {
namespace {

using common::Json;
namespace fs = std::filesystem;

bool RuncWorks(std::string* why) {
  if (geteuid() != 0) {
    *why = "the sandbox needs root";
    return false;
  }
  if (RunShell("command -v runc >/dev/null").code != 0) {
    *why = "runc is not installed (tools/install-deps.sh installs it)";
    return false;
  }
  if (RunShell("bash tools/build-busybox-rootfs.sh /nonexistent-dir-probe 2>&1 | grep -q 'no static busybox'").code == 0) {
    *why = "busybox-static is not installed";
    return false;
  }
  return true;
}

// Builds the test image: busybox plus a marker file only the image has; returns the digest and
// leaves the archive at DIR/image.tar.
std::string BuildImage(const std::string& dir, const std::string& marker) {
  fs::create_directories(dir);
  std::ofstream(dir + "/warden-image-marker") << marker << "\n";
  chmod((dir + "/warden-image-marker").c_str(), 0644);  // the job's user is not the file's owner
  RunResult r = RunShell("umask 022; bash tools/build-busybox-rootfs.sh " + ShellQuote(dir + "/build") + " --add " +
                         ShellQuote(dir + "/warden-image-marker"));
  EXPECT_EQ(r.code, 0) << r.err;
  std::string digest = r.out.substr(0, r.out.find('\n'));
  EXPECT_EQ(RunShell("tar -C " + ShellQuote(dir + "/build/oci") + " -cf " + ShellQuote(dir + "/image.tar") + " .").code, 0);
  return digest;
}

class ImageJobIT : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!RuncWorks(&why)) {
      if (std::getenv("CI") != nullptr && std::string(std::getenv("CI")) == "true") FAIL() << why;
      GTEST_SKIP() << why;
    }
    server_.Start("sqlite", "agent:\n  listen: 127.0.0.1:0\n  heartbeat_interval: 500ms\n");
    if (HasFatalFailure() || IsSkipped()) return;
    chmod(server_.dir().c_str(), 0711);  // the sandbox's per-tenant users traverse it
    server_.Login("admin", "admin", server_.admin_password());
    ASSERT_EQ(server_.Cli("admin", "tenant create acme").code, 0);
    ASSERT_EQ(server_.Cli("admin", "tenant create beta").code, 0);
    for (auto [user, tenant, role] : {std::tuple{"alice", "acme", "developer"}, std::tuple{"bob", "beta", "developer"},
                                      std::tuple{"vic", "acme", "viewer"}}) {
      RunResult r = server_.Cli("admin",
                                std::string("user create ") + user + " --tenant " + tenant + " --role " + role +
                                    " --password-stdin",
                                std::string("pw-") + user + "-0123456789\n");
      ASSERT_EQ(r.code, 0) << r.err;
      server_.Login(user, user, std::string("pw-") + user + "-0123456789");
    }
    agent_ = StartAgentProcess(server_, "node-a", "sim:1xH100-80GB", JoinTokenFile(server_),
                               {"--executor", "sandbox", "--oci-runtime", "runc"});
    ASSERT_TRUE(WaitUntil([&] { return NodeStatus(server_, "node-a") == "ready"; }, std::chrono::seconds(30)))
        << AgentLog();
  }

  void TearDown() override {
    if (agent_ > 0) {
      kill(agent_, SIGKILL);
      waitpid(agent_, nullptr, 0);
    }
    const std::string root = server_.dir() + "/agent-node-a/sandbox/runtime";
    (void)RunShell("for c in $(runc --root " + root + " list -q 2>/dev/null); do runc --root " + root +
                   " kill $c KILL 2>/dev/null; done; true");
  }

  std::string AgentLog() { return ReadFile(server_.dir() + "/agent-node-a.log"); }

  Json Show(const std::string& who, const std::string& id) {
    auto j = Json::parse(server_.Cli(who, "job show -o json " + id).out, nullptr, false);
    return j.is_object() ? j : Json::object();
  }
  bool WaitState(const std::string& who, const std::string& id, const std::string& state) {
    return WaitUntil([&] { return Show(who, id).value("state", "") == state; }, std::chrono::seconds(60));
  }
  std::string Explain(const std::string& who, const std::string& id) {
    return Show(who, id).dump() + "\nserver: " + ReadFile(server_.dir() + "/server.log") + "\nnode-a: " + AgentLog();
  }
  std::string Submit(const std::string& who, const std::string& args) {
    RunResult r = server_.Cli(who, "job submit -o json " + args);
    EXPECT_EQ(r.code, 0) << r.err << r.out;
    auto j = Json::parse(r.out, nullptr, false);
    return j.is_object() ? j.value("id", "") : "";
  }
  // Allowed agent fetches of images recorded in the audit log.
  int ImageFetches() {
    server_.AuditCountSynced();
    int n = 0;
    for (const auto& f : fs::directory_iterator(server_.dir() + "/data/audit")) {
      if (f.path().extension() != ".jsonl") continue;
      std::ifstream in(f.path());
      std::string line;
      while (std::getline(in, line) && line.find('\0') == std::string::npos) {
        if (line.find("\"images:fetch\"") != std::string::npos && line.find("\"allow\"") != std::string::npos) ++n;
      }
    }
    return n;
  }
  // GET of the agent image route with node-a's own certificate.
  RunResult AgentFetch(const std::string& job, const std::string& digest) {
    const std::string adir = server_.dir() + "/agent-node-a";
    const std::string node_id = Json::parse(ReadFile(adir + "/node.json")).value("node_id", "");
    const int port = Json::parse(ReadFile(server_.dir() + "/data/server.json")).value("agent_port", 0);
    RunResult r = RunShell("curl -sS -o " + ShellQuote(server_.dir() + "/fetched.tar") + " -w '%{http_code}' --cacert " +
                           ShellQuote(adir + "/ca.crt") + " --cert " + ShellQuote(adir + "/node.crt") + " --key " +
                           ShellQuote(adir + "/node.key") + " 'https://127.0.0.1:" + std::to_string(port) +
                           "/agent/v1/nodes/" + node_id + "/jobs/" + job + "/image?digest=" + digest + "'");
    r.code = std::atoi(r.out.c_str());
    return r;
  }

  WardenServer server_;
  pid_t agent_ = -1;
};

TEST_F(ImageJobIT, ATenantsImageRunsAsTheJobRootIsCachedAndStaysItsOwn) {
  const std::string dir = server_.dir() + "/img";
  const std::string digest = BuildImage(dir, "only-in-the-acme-image");
  ASSERT_EQ(digest.size(), 71u) << digest;

  // Import (a viewer may not; a developer may), then list and show.
  RunResult denied = server_.Cli("vic", "image import " + dir + "/image.tar");
  EXPECT_NE(denied.code, 0);
  EXPECT_NE((denied.err + denied.out).find("images:create"), std::string::npos) << denied.err << denied.out;
  RunResult imp = server_.Cli("alice", "image import -o json " + dir + "/image.tar");
  ASSERT_EQ(imp.code, 0) << imp.err << imp.out;
  Json imported = Json::parse(imp.out, nullptr, false);
  ASSERT_TRUE(imported.is_object()) << imp.out;
  EXPECT_EQ(imported.value("digest", ""), digest);
  EXPECT_EQ(imported.value("size", int64_t{0}), static_cast<int64_t>(fs::file_size(dir + "/image.tar")));
  RunResult ls = server_.Cli("vic", "image ls");
  ASSERT_EQ(ls.code, 0) << ls.err;
  EXPECT_NE(ls.out.find(digest), std::string::npos) << ls.out;
  EXPECT_EQ(server_.Cli("bob", "image ls").out.find(digest), std::string::npos);
  EXPECT_NE(server_.Cli("alice", "image show " + digest).out.find("PATH=/bin"), std::string::npos);
  // The import is audited with its digest and size.
  server_.AuditCountSynced();
  EXPECT_NE(RunShell("grep -ah '\"images:import\"' " + server_.dir() + "/data/audit/*.jsonl | grep -c " + digest.substr(7)).out,
            "0\n");

  // Beta cannot use acme's image even knowing its digest.
  RunResult stolen = server_.Curl("POST", "/api/v1/tenants/beta/jobs", server_.Token("bob"),
                                  Json{{"name", "thief"}, {"command", {"cat", "/bin/warden-image-marker"}},
                                       {"image", digest}}.dump());
  EXPECT_EQ(stolen.code, 400) << stolen.out;
  EXPECT_NE(stolen.out.find("unknown image"), std::string::npos) << stolen.out;

  // Acme's job runs with the image as its root: the marker is there, the host's files are not.
  const std::string probe = "-- sh -c 'cat /bin/warden-image-marker; test -e /etc/debian_version && echo host-root || "
                            "echo image-root; touch /bin/x 2>/dev/null && echo root-writable || echo root-read-only'";
  std::string a1 = Submit("alice", "--name a1 --image " + digest + " " + probe);
  ASSERT_TRUE(WaitState("alice", a1, "done")) << Explain("alice", a1);
  EXPECT_EQ(server_.Cli("alice", "job logs " + a1).out, "only-in-the-acme-image\nimage-root\nroot-read-only\n");
  EXPECT_EQ(ImageFetches(), 1);

  // A second job reuses the agent's cached copy: no second fetch.
  std::string a2 = Submit("alice", "--name a2 --image " + digest + " -- cat /bin/warden-image-marker");
  ASSERT_TRUE(WaitState("alice", a2, "done")) << Explain("alice", a2);
  EXPECT_EQ(server_.Cli("alice", "job logs " + a2).out, "only-in-the-acme-image\n");
  EXPECT_EQ(ImageFetches(), 1);
  EXPECT_NE(AgentLog().find("(fetched 1, reused 1, corrupted 0)"), std::string::npos) << AgentLog();

  // A corrupted cache is detected by digest, dropped and fetched again (the job sees the original).
  std::string cached;
  for (const auto& t : fs::directory_iterator(server_.dir() + "/agent-node-a/images")) {
    if (fs::exists(t.path() / digest.substr(7))) cached = (t.path() / digest.substr(7)).string();
  }
  ASSERT_FALSE(cached.empty());
  std::ofstream(cached + "/rootfs/bin/warden-image-marker") << "tampered\n";
  std::string a3 = Submit("alice", "--name a3 --image " + digest + " -- cat /bin/warden-image-marker");
  ASSERT_TRUE(WaitState("alice", a3, "done")) << Explain("alice", a3);
  EXPECT_EQ(server_.Cli("alice", "job logs " + a3).out, "only-in-the-acme-image\n");
  EXPECT_EQ(ImageFetches(), 2);
  EXPECT_NE(AgentLog().find("corrupted 1)"), std::string::npos) << AgentLog();

  // The agent route serves an image only for a job placed on that node that uses it: a positive
  // control with acme's running job, then beta's job id with acme's digest.
  std::string a4 = Submit("alice", "--name a4 --image " + digest + " -- sleep 20");
  std::string b1 = Submit("bob", "--name b1 -- sleep 20");
  ASSERT_TRUE(WaitState("alice", a4, "running")) << Explain("alice", a4);
  ASSERT_TRUE(WaitState("bob", b1, "running")) << Explain("bob", b1);
  RunResult own = AgentFetch(a4, digest);
  EXPECT_EQ(own.code, 200) << own.err;
  EXPECT_EQ(fs::file_size(server_.dir() + "/fetched.tar"), fs::file_size(dir + "/image.tar"));
  RunResult cross = AgentFetch(b1, digest);
  EXPECT_EQ(cross.code, 404) << cross.err;
  EXPECT_EQ(AgentFetch(a4, "sha256:" + std::string(64, '0')).code, 404);
  EXPECT_EQ(AgentFetch("job_doesnotexist", digest).code, 404);

  // rm through the CLI: gone from the list, and jobs can no longer name it.
  // (developers import but do not delete: the tenant's admin, here the cluster admin, does)
  RunResult no_rm = server_.Cli("alice", "image rm " + digest);
  EXPECT_NE(no_rm.code, 0);
  EXPECT_NE(no_rm.err.find("images:delete"), std::string::npos) << no_rm.err;
  RunResult rm = server_.Cli("admin", "image rm --tenant acme " + digest);
  ASSERT_EQ(rm.code, 0) << rm.err;
  EXPECT_EQ(server_.Cli("alice", "image ls").out.find(digest), std::string::npos);
  RunResult gone = server_.Cli("alice", "job submit --image " + digest + " -- true");
  EXPECT_NE(gone.code, 0);
  EXPECT_NE((gone.err + gone.out).find("unknown image"), std::string::npos) << gone.err << gone.out;
}

TEST_F(ImageJobIT, AnImageOverTheConfiguredLimitIsRefusedWith413AndATamperedOneWith400) {
  const std::string dir = server_.dir() + "/img";
  const std::string digest = BuildImage(dir, "x");
  // A flipped byte inside the layer: refused, nothing stored.
  const std::string bad_dir = server_.dir() + "/bad";
  ASSERT_EQ(RunShell("cp -r " + dir + "/build/oci " + bad_dir + " && f=$(ls -S " + bad_dir +
                     "/blobs/sha256/* | head -1) && printf Z | dd of=$f bs=1 seek=200 conv=notrunc 2>/dev/null && "
                     "tar -C " + bad_dir + " -cf " + bad_dir + ".tar .").code, 0);
  RunResult bad = server_.Cli("alice", "image import " + bad_dir + ".tar");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE((bad.err + bad.out).find("verification failed"), std::string::npos) << bad.err << bad.out;
  EXPECT_EQ(server_.Cli("alice", "image ls -o json").out.find("sha256:"), std::string::npos);

  // A server whose limit is below the archive's size answers 413 and stores nothing.
  WardenServer small;
  small.Start("sqlite", "images:\n  max_import_bytes: 65536\n");
  if (HasFatalFailure()) return;
  small.Login("admin", "admin", small.admin_password());
  ASSERT_EQ(small.Cli("admin", "tenant create acme").code, 0);
  // Expect: 100-continue, as a client sending a large body should: the server refuses by the
  // declared length before reading any of it. Without it curl may still be writing the body when
  // the server closes after its 413, and then reports a broken pipe instead of the answer.
  RunResult r = small.Curl("POST", "/api/v1/tenants/acme/images", small.Token("admin"), "",
                           "-H 'Content-Type: application/x-tar' -H 'Expect: 100-continue' --data-binary @" +
                               ShellQuote(dir + "/image.tar"));
  EXPECT_EQ(r.code, 413) << r.out << r.err;
  EXPECT_NE(r.out.find("exceeds 65536 bytes"), std::string::npos) << r.out;
  RunResult cli = small.Cli("admin", "image import --tenant acme " + dir + "/image.tar");
  EXPECT_NE(cli.code, 0);
  EXPECT_NE(cli.err.find("request body exceeds 65536 bytes"), std::string::npos) << cli.err;
  EXPECT_NE(RunShell("find " + small.dir() + "/data/images -name image.tar 2>/dev/null | grep -q .").code, 0);
  // The same archive under the default limit is accepted (the limit, not the archive, refused it).
  RunResult ok = server_.Cli("alice", "image import -o json " + dir + "/image.tar");
  EXPECT_EQ(ok.code, 0) << ok.err;
  EXPECT_NE(ok.out.find(digest), std::string::npos) << ok.out;
}

}  // namespace
}  // namespace warden::testing
