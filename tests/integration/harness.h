// Test harness for multi-process tests: starts the real `gpuwarden server` binary on an ephemeral
// loopback port with a temp data dir (SQLite, or a fresh database on the real PostgreSQL named by
// WARDEN_TEST_PG_URL), runs CLI commands and curl against it, and stops it.
#pragma once

#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "common/json.h"

namespace warden::testing {

// A loopback port for a process that must know its port before it starts (a server whose
// redirect URIs or peers name it). It is taken from below the kernel's ephemeral range
// (ip_local_port_range starts at 32768 by default), so no bind(0) or outgoing connection of a
// parallel test can be handed it between this check and the caller's bind; 0 if none was free.
inline int FreeLoopbackPort() {
  std::random_device rd;
  std::mt19937 pick(rd() ^ static_cast<unsigned>(getpid()));
  std::uniform_int_distribution<int> in_range(20000, 32000);
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int port = in_range(pick);
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    const bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    ::close(fd);
    if (free) return port;
  }
  return 0;
}

inline std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

struct RunResult {
  int code = -1;
  std::string out;
  std::string err;
};

// Runs `command` with bash, feeding `input` on stdin; captures stdout and stderr.
inline RunResult RunShell(const std::string& command, const std::string& input = "") {
  static int counter = 0;
  std::string base = ::testing::TempDir() + "warden_run_" + std::to_string(getpid()) + "_" +
                     std::to_string(counter++);
  {
    std::ofstream in(base + ".in");
    in << input;
  }
  std::string full = "bash -c " + ShellQuote(command) + " <" + base + ".in >" + base + ".out 2>" +
                     base + ".err";
  int status = std::system(full.c_str());
  RunResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(base + ".out");
  r.err = ReadFile(base + ".err");
  std::filesystem::remove(base + ".in");
  std::filesystem::remove(base + ".out");
  std::filesystem::remove(base + ".err");
  return r;
}

inline std::string WardenBin() {
  std::string bin = Env("WARDEN_BIN");
  return bin.empty() ? std::string(WARDEN_BIN_PATH) : bin;
}

// One running server. Start() fails the test if the server does not come up.
class WardenServer {
 public:
  // backend: "sqlite" or "postgres". extra_config: YAML appended to the config file.
  // prepare: runs on the (empty, existing) data dir before the server starts.
  void Start(const std::string& backend = "sqlite", const std::string& extra_config = "",
             const std::function<void(const std::string&)>& prepare = nullptr) {
    static int n = 0;
    dir_ = ::testing::TempDir() + "warden_it_" + std::to_string(getpid()) + "_" + std::to_string(n++);
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    admin_password_ = "admin-password-" + std::to_string(getpid());
    {
      std::ofstream pw(dir_ + "/admin.pw");
      pw << admin_password_ << "\n";
    }
    // Servers require MFA of admins by default; tests that are not about MFA run without that
    // policy (those that are say "mfa: ..." in extra_config).
    // An extra_config with its own "listen:" (SSO tests need the port in redirect URIs) wins.
    // Only a top-level key counts: "agent:\n  listen: ..." is the agents' port, not the API's.
    const bool own_listen = extra_config.rfind("listen:", 0) == 0 ||
                            extra_config.find("\nlisten:") != std::string::npos;
    std::string config = own_listen ? extra_config : "listen: 127.0.0.1:0\n" + extra_config;
    if (extra_config.find("mfa:") == std::string::npos) config += "mfa: {required_for: none}\n";
    if (backend == "postgres") {
      std::string base = Env("WARDEN_TEST_PG_URL");
      if (base.empty()) {
        if (Env("CI") == "true") FAIL() << "CI=true but WARDEN_TEST_PG_URL is not set";
        GTEST_SKIP() << "WARDEN_TEST_PG_URL not set (tools/pg-start.sh prints one)";
      }
      std::string db = "warden_it_" + std::to_string(getpid()) + "_" + std::to_string(n);
      RunResult r = RunShell("psql " + ShellQuote(base) + " -q -c 'DROP DATABASE IF EXISTS " + db +
                             "' -c 'CREATE DATABASE " + db + "'");
      ASSERT_EQ(r.code, 0) << r.err;
      config += "store: " + base.substr(0, base.rfind('/') + 1) + db + "\n";
    }
    {
      std::ofstream c(dir_ + "/config.yaml");
      c << config;
    }
    if (prepare) {
      std::filesystem::create_directories(dir_ + "/data");
      std::filesystem::permissions(dir_ + "/data", std::filesystem::perms::owner_all);
      prepare(dir_ + "/data");
    }
    Launch(/*first=*/true);
  }

  // Stops (if running) and starts the server again on the same data dir, store and ports (so
  // agents and CLI sessions find it where they left it). Fails the test if it does not come up.
  void Restart() {
    Stop();
    auto info = common::Json::parse(ReadFile(dir_ + "/data/server.json"), nullptr, false);
    ASSERT_TRUE(info.is_object());
    std::string config = ReadFile(dir_ + "/config.yaml");
    auto pin = [&](const std::string& from, const std::string& to) {
      size_t at = config.find(from);
      if (at != std::string::npos) config.replace(at, from.size(), to);
    };
    pin("listen: 127.0.0.1:0\n", "listen: 127.0.0.1:" + std::to_string(port_) + "\n");
    pin("  listen: 127.0.0.1:0\n",
        "  listen: 127.0.0.1:" + std::to_string(info.value("agent_port", 0)) + "\n");
    std::ofstream(dir_ + "/config.yaml") << config;
    std::filesystem::remove(dir_ + "/data/server.json");
    Launch(/*first=*/false);
  }

  // Starts the server expecting it to refuse; returns its exit code and log.
  RunResult StartExpectingFailure(const std::function<void(const std::string&)>& prepare) {
    static int m = 0;
    dir_ = ::testing::TempDir() + "warden_itf_" + std::to_string(getpid()) + "_" + std::to_string(m++);
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ + "/data");
    prepare(dir_ + "/data");
    return RunShell("timeout 20 " + ShellQuote(WardenBin()) + " server --data-dir " +
                    ShellQuote(dir_ + "/data") + " --listen 127.0.0.1:0");
  }

  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }

  ~WardenServer() {
    Stop();
    if (!dir_.empty() && Env("WARDEN_KEEP_TEST_DIRS").empty()) std::filesystem::remove_all(dir_);
  }

  // Runs the CLI as the person whose credentials live in config dir `who`.
  RunResult Cli(const std::string& who, const std::string& args, const std::string& input = "") {
    std::string cfg = dir_ + "/cli-" + who;
    return RunShell("GPUWARDEN_CONFIG_DIR=" + ShellQuote(cfg) + " " + ShellQuote(WardenBin()) +
                        " " + args,
                    input);
  }

  // Logs `who` in as `user`; fails the test unless it works.
  void Login(const std::string& who, const std::string& user, const std::string& password) {
    RunResult r = Cli(who, "login --server " + url_ + " --user " + user + " --password-stdin",
                      password + "\n");
    ASSERT_EQ(r.code, 0) << r.err << r.out;
  }

  // A raw HTTPS request with curl, trusting the server's CA. Returns {status code in .code, body}.
  RunResult Curl(const std::string& method, const std::string& path, const std::string& token = "",
                 const std::string& body = "", const std::string& extra = "") {
    std::string cmd = "curl -sS --cacert " + ShellQuote(dir_ + "/data/pki/ca.crt") +
                      " -w '\\n%{http_code}' -X " + method + " " + extra;
    if (!token.empty()) cmd += " -H " + ShellQuote("Authorization: Bearer " + token);
    if (!body.empty()) {
      cmd += " -H 'Content-Type: application/json' --data-binary @-";
    }
    cmd += " " + ShellQuote(url_ + path);
    RunResult r = RunShell(cmd, body);
    size_t nl = r.out.rfind('\n');
    RunResult out;
    out.err = r.err;
    if (nl == std::string::npos) return out;
    out.code = std::atoi(r.out.c_str() + nl + 1);
    out.out = r.out.substr(0, nl);
    return out;
  }

  std::string Token(const std::string& who) {
    auto j = common::Json::parse(ReadFile(dir_ + "/cli-" + who + "/credentials.json"), nullptr, false);
    if (j.is_discarded()) return "";
    return j["servers"][url_].value("token", "");
  }

  // Events in the audit log: lines of its segment files (data/audit/seg-*.jsonl).
  int AuditCount() {
    int n = 0;
    for (const auto& f : std::filesystem::directory_iterator(dir_ + "/data/audit")) {
      if (f.path().extension() != ".jsonl") continue;
      std::ifstream in(f.path());
      std::string line;
      // A segment ends at its preallocated zero tail (no event holds a NUL byte).
      while (std::getline(in, line) && line.find('\0') == std::string::npos) ++n;
    }
    return n;
  }

  // AuditCount once every event queued so far is on disk: HTTP-layer rejections and metadata GETs
  // are queued without waiting for the disk, but a request to a kRouteDurableRead route (here an
  // unauthenticated audit query, answered 401) returns only after its own event, which the log
  // writes after every earlier one. Returns the count without that request's own event.
  int AuditCountSynced() {
    Curl("GET", "/api/v1/audit/events?limit=1");
    return AuditCount() - 1;
  }

  const std::string& url() const { return url_; }
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return pid_; }  // the server process (peak RSS from /proc)
  const std::string& admin_password() const { return admin_password_; }
  const std::string& fingerprint() const { return fingerprint_; }

  // Forks the server on dir_ (with the admin password file on the first start; its log appended
  // on a restart) and waits until it has written server.json. Fails the test otherwise.
  void Launch(bool first) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      std::string log = dir_ + "/server.log";
      FILE* f = std::freopen(log.c_str(), first ? "w" : "a", stdout);
      (void)f;
      dup2(fileno(stdout), 2);
      std::string bin = WardenBin(), data = dir_ + "/data", cfg = dir_ + "/config.yaml";
      std::string pwf = dir_ + "/admin.pw";
      if (first) {
        execl(bin.c_str(), bin.c_str(), "server", "--config", cfg.c_str(), "--data-dir",
              data.c_str(), "--admin-password-file", pwf.c_str(), static_cast<char*>(nullptr));
      } else {
        execl(bin.c_str(), bin.c_str(), "server", "--config", cfg.c_str(), "--data-dir",
              data.c_str(), static_cast<char*>(nullptr));
      }
      _exit(127);
    }
    pid_ = pid;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      auto j = common::Json::parse(ReadFile(dir_ + "/data/server.json"), nullptr, false);
      if (!j.is_discarded() && j.is_object()) {
        port_ = j["port"].get<int>();
        url_ = j["url"].get<std::string>();
        fingerprint_ = j["ca_fingerprint"].get<std::string>();
        return;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        FAIL() << "server exited early: " << ReadFile(dir_ + "/server.log");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << "server did not start: " << ReadFile(dir_ + "/server.log");
  }

 private:
  std::string dir_, url_, fingerprint_, admin_password_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// ---- agents (shared by the cluster, job, dataset and sandbox fixtures) ----

// Polls `pred` every 100 ms until it holds (true) or `limit` passes (false).
inline bool WaitUntil(const std::function<bool()>& pred,
                      std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// A fresh join token (for `pool`, or the default pool when empty) written to a new file under the
// server's dir, as the admin; returns the file's path.
inline std::string JoinTokenFile(WardenServer& server, const std::string& pool = "") {
  RunResult r = server.Cli("admin", "node join-token create" +
                                        (pool.empty() ? std::string() : " --pool " + pool) +
                                        " -o json");
  EXPECT_EQ(r.code, 0) << r.err;
  auto j = common::Json::parse(r.out, nullptr, false);
  static int n = 0;
  std::string path = server.dir() + "/token-" + std::to_string(n++);
  std::ofstream(path) << (j.is_object() ? j.value("token", "") : "") << "\n";
  return path;
}

// Forks `gpuwarden agent --name NAME --gpus GPUS` joining `server` with the token in `token_file`,
// its data in DIR/agent-NAME and its stdout and stderr in DIR/agent-NAME.log (appended to, so a
// restarted agent's log follows the first; truncated with `truncate_log`). `extra` are further
// flags, e.g. {"--executor", "process"}. Returns the child's pid.
inline pid_t StartAgentProcess(const WardenServer& server, const std::string& name,
                               const std::string& gpus, const std::string& token_file,
                               const std::vector<std::string>& extra = {},
                               bool truncate_log = false) {
  // Everything the child needs is built before fork.
  const std::string bin = WardenBin(), data = server.dir() + "/agent-" + name;
  const std::string log = data + ".log";
  std::vector<std::string> args = {bin,         "agent",  "--server", server.url(),
                                   "--join-token", token_file, "--data-dir", data,
                                   "--gpus",       gpus,       "--name",     name};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    FILE* f = std::freopen(log.c_str(), truncate_log ? "w" : "a", stdout);
    (void)f;
    dup2(fileno(stdout), 2);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

// Kills (SIGKILL) every agent in `agents` that is still running (pid > 0; set to -1 after), then
// what killed agents leave behind by design: their jobs' process groups (the supervisor keeps
// jobs running across an agent restart) and their dataset mounts.
inline void KillAgents(const WardenServer& server, std::map<std::string, pid_t>& agents) {
  for (auto& [name, pid] : agents) {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
  }
  for (const auto& [name, pid] : agents) {
    const std::string dir = server.dir() + "/agent-" + name;
    (void)RunShell("for f in " + dir + "/jobs/*/pid; do g=$(awk '{print $2}' $f 2>/dev/null); "
                   "[ -n \"$g\" ] && kill -9 -$g 2>/dev/null; done; "
                   "for m in $(awk '{print $2}' /proc/mounts | grep -F " +
                   ShellQuote(dir + "/datasets/") + "); do umount -l $m; done; true");
  }
}

// Creates each (user, tenant, role) with `password` as the admin and logs it in under its own
// name; an empty `password` gives each user "pw-<user>-0123456789".
inline void CreateUsers(
    WardenServer& server,
    const std::vector<std::tuple<std::string, std::string, std::string>>& users,
    const std::string& password = "") {
  for (const auto& [user, tenant, role] : users) {
    const std::string pw = password.empty() ? "pw-" + user + "-0123456789" : password;
    RunResult r = server.Cli(
        "admin",
        "user create " + user + " --tenant " + tenant + " --role " + role + " --password-stdin",
        pw + "\n");
    ASSERT_EQ(r.code, 0) << r.err;
    server.Login(user, user, pw);
  }
}

// ---- jobs through the CLI (shared by the job, MIG and pool fixtures) ----

// `job submit -o json ARGS` as `who`; returns the job id ("" after a failed expectation).
inline std::string SubmitJob(WardenServer& server, const std::string& who,
                             const std::string& args) {
  RunResult r = server.Cli(who, "job submit -o json " + args);
  EXPECT_EQ(r.code, 0) << r.err << r.out;
  auto j = common::Json::parse(r.out, nullptr, false);
  return j.is_object() ? j.value("id", "") : "";
}

// `job show -o json ID` as `who` ({} when it fails).
inline common::Json ShowJob(WardenServer& server, const std::string& who, const std::string& id) {
  auto j = common::Json::parse(server.Cli(who, "job show -o json " + id).out, nullptr, false);
  return j.is_object() ? j : common::Json::object();
}

// Waits up to 30 s for the job to reach `state`.
inline bool WaitJobState(WardenServer& server, const std::string& who, const std::string& id,
                         const std::string& state) {
  return WaitUntil([&] { return ShowJob(server, who, id).value("state", "") == state; },
                   std::chrono::seconds(30));
}

// The node's status as `node ls` shows it to the admin ("" while it is not listed).
inline std::string NodeStatus(WardenServer& server, const std::string& name) {
  RunResult r = server.Cli("admin", "node ls -o json");
  auto j = common::Json::parse(r.out, nullptr, false);
  if (!j.is_object()) return "";
  for (const auto& n : j["items"]) {
    if (n.value("name", "") == name) return n.value("status", "");
  }
  return "";
}

}  // namespace warden::testing
