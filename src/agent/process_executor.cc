// ProcessExecutor (executor.h): plain processes, NOT a security boundary (development and demo).
//
// Process tree per job, built with a double fork so that nothing the job does depends on the
// agent staying alive:
//   agent ── fork ──> A: setsid, fork S, exit (reaped at once by the agent)
//                     S (supervisor, re-parented to init): fork B, wait for it, write `exit`
//                     B (the job): own process group, own working dir, clean environment, exec
// S records itself in `supervisor` (pid and /proc start time, so a recycled pid is never
// mistaken for it) and the job's process group in `pid`. A failed exec reaches S through a
// close-on-exec pipe and becomes `exit` = "failed_to_start ERRNO".
// Between fork and exec only async-signal-safe calls are made: every string is built before.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "agent/exec_files.h"
#include "agent/executor.h"
#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"

extern char** environ;

namespace warden::agent {
namespace {

using common::Json;
using common::StrCat;


// Field 22 of /proc/PID/stat (start time in clock ticks since boot); 0 when the process is gone.
unsigned long long ProcStartTime(pid_t pid) {
  std::string stat = ReadSmallFile(StrCat("/proc/", pid, "/stat"));
  size_t rp = stat.rfind(')');
  if (rp == std::string::npos) return 0;
  std::istringstream in(stat.substr(rp + 2));
  std::string field;
  for (int i = 3; i <= 22; ++i) {
    if (!(in >> field)) return 0;
    // A zombie has exited: its supervisor role is over.
    if (i == 3 && field == "Z") return 0;
  }
  return std::strtoull(field.c_str(), nullptr, 10);
}

// ---- async-signal-safe helpers for the forked children ----

// Writes the decimal of v into buf (no allocation); returns the length.
size_t FormatInt(long long v, char* buf) {
  char tmp[24];
  size_t n = 0;
  bool neg = v < 0;
  unsigned long long u = neg ? 0ULL - static_cast<unsigned long long>(v) : static_cast<unsigned long long>(v);
  do {
    tmp[n++] = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u != 0);
  size_t len = 0;
  if (neg) buf[len++] = '-';
  while (n > 0) buf[len++] = tmp[--n];
  return len;
}

// Writes "<word> <a>[ <b>]\n" to tmp then renames it over path.
// `durable`: fsync before the rename. The supervisor and pid records describe live processes,
// which a reboot ends anyway, and the page cache outlives an agent crash: they are not synced, so
// the job's fork does not wait for the disk. Exit records are.
void WriteRecord(const char* tmp, const char* path, const char* word, long long a, long long b,
                 bool with_b, bool durable = true) {
  char buf[96];
  size_t len = 0;
  for (const char* p = word; *p != '\0' && len < 40; ++p) buf[len++] = *p;
  buf[len++] = ' ';
  len += FormatInt(a, buf + len);
  if (with_b) {
    buf[len++] = ' ';
    len += FormatInt(b, buf + len);
  }
  buf[len++] = '\n';
  int fd = ::open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  ssize_t w = ::write(fd, buf, len);
  (void)w;
  if (durable) ::fsync(fd);
  ::close(fd);
  ::rename(tmp, path);
}

void CloseFrom(int lowest, int keep) {
  if (keep < 0 && ::close_range(static_cast<unsigned>(lowest), ~0u, 0) == 0) return;
  for (int fd = lowest; fd < 4096; ++fd) {
    if (fd != keep) ::close(fd);
  }
}

class ProcessExecutor final : public JobExecutor {
 public:
  explicit ProcessExecutor(std::string dir) : dir_(std::move(dir)) {}
  std::string_view name() const override { return "process"; }

  absl::Status Start(const ExecSpec& spec) override {
    if (!SafeJobId(spec.job_id)) return absl::InvalidArgumentError(StrCat("bad job id \"", spec.job_id, "\""));
    if (spec.argv.empty()) return absl::InvalidArgumentError("empty command");
    const std::string d = Dir(spec.job_id);
    if (::mkdir(d.c_str(), 0700) != 0) {
      if (errno == EEXIST) return absl::AlreadyExistsError(StrCat("job ", spec.job_id, " is already known"));
      return absl::InternalError(StrCat("cannot create ", d, ": ", std::strerror(errno)));
    }
    const std::string work = d + "/work";
    if (::mkdir(work.c_str(), 0700) != 0) {
      return absl::InternalError(StrCat("cannot create ", work, ": ", std::strerror(errno)));
    }
    Json env = Json::array();
    for (const auto& [k, v] : spec.env) env.push_back(Json::array({k, v}));
    Json sj{{"job_id", spec.job_id}, {"tenant", spec.tenant}, {"argv", spec.argv},
            {"env", env},          {"gpus", spec.gpu_uuids}};
    {
      std::ofstream out(d + "/spec.json");
      out << sj.dump();
      if (!out) return absl::InternalError(StrCat("cannot write ", d, "/spec.json"));
    }
    // Everything the children need, prepared before fork.
    std::vector<std::string> env_text;
    for (const auto& [k, v] : spec.env) env_text.push_back(k + "=" + v);
    // No mount namespace here: the job finds each staged dataset's directory (memory-backed,
    // outside its working dir) in GPUWARDEN_DATASET_<N>; the sandbox mounts it at the path.
    for (size_t i = 0; i < spec.datasets.size(); ++i) {
      env_text.push_back(StrCat("GPUWARDEN_DATASET_", i, "=", spec.datasets[i].host_dir));
    }
    std::vector<char*> argv, envp;
    for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (auto& e : env_text) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string out_path = d + "/stdout.log", err_path = d + "/stderr.log";
    const std::string sup = d + "/supervisor", sup_tmp = d + "/supervisor.tmp";
    const std::string pid = d + "/pid", pid_tmp = d + "/pid.tmp";
    const std::string exit_path = d + "/exit", exit_tmp = d + "/exit.tmp";
    const std::string self_stat = "/proc/self/stat";

    pid_t a = ::fork();
    if (a < 0) return absl::InternalError(StrCat("fork: ", std::strerror(errno)));
    if (a == 0) {
      // A: leave the agent's session, start the supervisor, go.
      ::setsid();
      pid_t s = ::fork();
      if (s != 0) ::_exit(s < 0 ? 1 : 0);
      // S: the supervisor.
      int devnull = ::open("/dev/null", O_RDWR);
      if (devnull >= 0) {
        ::dup2(devnull, 0);
        ::dup2(devnull, 1);
        ::dup2(devnull, 2);
      }
      CloseFrom(3, -1);
      // Its own start time, for the agent to recognise it later.
      long long start = 0;
      {
        char buf[1024];
        int fd = ::open(self_stat.c_str(), O_RDONLY);
        ssize_t n = fd >= 0 ? ::read(fd, buf, sizeof(buf) - 1) : -1;
        if (fd >= 0) ::close(fd);
        if (n > 0) {
          buf[n] = '\0';
          char* p = std::strrchr(buf, ')');
          int field = 2;
          while (p != nullptr && *p != '\0' && field < 22) {
            if (*p == ' ') ++field;
            ++p;
          }
          while (p != nullptr && *p >= '0' && *p <= '9') start = start * 10 + (*p++ - '0');
        }
      }
      WriteRecord(sup_tmp.c_str(), sup.c_str(), "supervisor", ::getpid(), start, true,
                  /*durable=*/false);
      int errpipe[2];
      if (::pipe2(errpipe, O_CLOEXEC) != 0) {
        WriteRecord(exit_tmp.c_str(), exit_path.c_str(), "failed_to_start", errno, 0, false);
        ::_exit(1);
      }
      pid_t b = ::fork();
      if (b == 0) {
        // B: the job.
        ::setpgid(0, 0);
        ::close(errpipe[0]);
        int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
        int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (out < 0 || err < 0 || ::chdir(work.c_str()) != 0) {
          int e = errno;
          ssize_t w = ::write(errpipe[1], &e, sizeof(e));
          (void)w;
          ::_exit(127);
        }
        ::dup2(out, 1);
        ::dup2(err, 2);
        ::close(out);
        ::close(err);
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        environ = envp.data();
        ::execvp(argv[0], argv.data());
        int e = errno;
        ssize_t w = ::write(errpipe[1], &e, sizeof(e));
        (void)w;
        ::_exit(127);
      }
      ::close(errpipe[1]);
      if (b < 0) {
        WriteRecord(exit_tmp.c_str(), exit_path.c_str(), "failed_to_start", errno, 0, false);
        ::_exit(1);
      }
      ::setpgid(b, b);
      WriteRecord(pid_tmp.c_str(), pid.c_str(), "pgid", b, 0, false, /*durable=*/false);
      int e = 0;
      ssize_t n;
      do {
        n = ::read(errpipe[0], &e, sizeof(e));
      } while (n < 0 && errno == EINTR);
      int status = 0;
      while (::waitpid(b, &status, 0) < 0 && errno == EINTR) {
      }
      if (n == static_cast<ssize_t>(sizeof(e))) {
        WriteRecord(exit_tmp.c_str(), exit_path.c_str(), "failed_to_start", e, 0, false);
      } else if (WIFSIGNALED(status)) {
        WriteRecord(exit_tmp.c_str(), exit_path.c_str(), "signal", WTERMSIG(status), 0, false);
      } else {
        WriteRecord(exit_tmp.c_str(), exit_path.c_str(), "exit", WEXITSTATUS(status), 0, false);
      }
      ::_exit(0);
    }
    int status = 0;
    while (::waitpid(a, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return absl::InternalError("could not start the job's supervisor");
    }
    // Wait (briefly) until the job's process group is known, so a Cancel right after works.
    for (int i = 0; i < 200; ++i) {
      if (::access(pid.c_str(), F_OK) == 0 || ::access(exit_path.c_str(), F_OK) == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<ExecStatus> Poll(const std::string& job_id) override {
    const std::string d = Dir(job_id);
    if (!SafeJobId(job_id) || ::access(d.c_str(), F_OK) != 0) {
      return absl::NotFoundError(StrCat("job ", job_id, " is unknown to this executor"));
    }
    if (auto done = Result(job_id); done.has_value()) return *done;
    std::istringstream sup(ReadSmallFile(d + "/supervisor"));
    std::string word;
    long long spid = 0;
    unsigned long long start = 0;
    sup >> word >> spid >> start;
    const bool alive = spid > 0 && start != 0 && ProcStartTime(static_cast<pid_t>(spid)) == start;
    if (alive) {
      std::string cancel = ReadSmallFile(d + "/cancel");
      if (!cancel.empty()) {
        int64_t deadline_ms = std::strtoll(cancel.c_str(), nullptr, 10);
        if (NowMs() >= deadline_ms) Signal(job_id, SIGKILL);
      }
      return ExecStatus{ExecState::kRunning, 0, ""};
    }
    if (auto done = Result(job_id); done.has_value()) return *done;  // it just finished
    if (::access((d + "/reaped").c_str(), F_OK) != 0) {
      Signal(job_id, SIGKILL);
      std::ofstream(d + "/reaped") << "1\n";
    }
    return ExecStatus{ExecState::kLost, 0,
                      StrCat("its supervisor (pid ", spid, ") is gone without a result")};
  }

  absl::Status Cancel(const std::string& job_id, absl::Duration grace) override {
    const std::string d = Dir(job_id);
    if (!SafeJobId(job_id) || ::access(d.c_str(), F_OK) != 0) {
      return absl::NotFoundError(StrCat("job ", job_id, " is unknown to this executor"));
    }
    if (::access((d + "/exit").c_str(), F_OK) == 0) return absl::OkStatus();
    if (::access((d + "/cancel").c_str(), F_OK) != 0) {
      std::ofstream(d + "/cancel") << (NowMs() + absl::ToInt64Milliseconds(grace)) << "\n";
    }
    Signal(job_id, grace <= absl::ZeroDuration() ? SIGKILL : SIGTERM);
    return absl::OkStatus();
  }

  std::pair<std::string, std::string> LogPaths(const std::string& job_id) const override {
    return {Dir(job_id) + "/stdout.log", Dir(job_id) + "/stderr.log"};
  }

  absl::StatusOr<std::vector<ExecSpec>> Recover() override {
    std::vector<ExecSpec> out;
    DIR* dir = ::opendir(dir_.c_str());
    if (dir == nullptr) return absl::InternalError(StrCat("cannot list ", dir_));
    while (dirent* e = ::readdir(dir)) {
      std::string id = e->d_name;
      if (!SafeJobId(id)) continue;
      auto j = common::ParseJsonStrict(ReadSmallFile(Dir(id) + "/spec.json"));
      if (!j.ok() || !j->is_object()) continue;
      ExecSpec s;
      s.job_id = id;
      s.tenant = j->value("tenant", "");
      for (const auto& a : j->value("argv", Json::array())) s.argv.push_back(a.get<std::string>());
      for (const auto& kv : j->value("env", Json::array())) {
        s.env.emplace_back(kv[0].get<std::string>(), kv[1].get<std::string>());
      }
      for (const auto& g : j->value("gpus", Json::array())) s.gpu_uuids.push_back(g.get<std::string>());
      out.push_back(std::move(s));
    }
    ::closedir(dir);
    return out;
  }

  absl::Status Forget(const std::string& job_id) override {
    if (!SafeJobId(job_id)) return absl::InvalidArgumentError("bad job id");
    auto st = Poll(job_id);
    if (st.ok() && st->state == ExecState::kRunning) {
      return absl::FailedPreconditionError(StrCat("job ", job_id, " is still running"));
    }
    std::error_code ec;
    std::filesystem::remove_all(Dir(job_id), ec);
    return absl::OkStatus();
  }

 private:
  std::string Dir(const std::string& id) const { return dir_ + "/" + id; }

  static int64_t NowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  void Signal(const std::string& job_id, int sig) {
    std::istringstream in(ReadSmallFile(Dir(job_id) + "/pid"));
    std::string word;
    long long pgid = 0;
    in >> word >> pgid;
    if (pgid > 1) ::kill(static_cast<pid_t>(-pgid), sig);
  }

  std::optional<ExecStatus> Result(const std::string& job_id) {
    const std::string d = Dir(job_id);
    std::istringstream in(ReadSmallFile(d + "/exit"));
    std::string word;
    long long v = 0;
    if (!(in >> word >> v)) return std::nullopt;
    // Whatever the job left behind in its process group goes with it, once (a later signal to
    // that number could reach an unrelated group after pid reuse).
    if (::access((d + "/reaped").c_str(), F_OK) != 0) {
      Signal(job_id, SIGKILL);
      std::ofstream(d + "/reaped") << "1\n";
    }
    const bool cancelled = ::access((d + "/cancel").c_str(), F_OK) == 0;
    ExecStatus s;
    if (word == "failed_to_start") {
      s.state = ExecState::kFailedToStart;
      s.exit_code = 127;
      s.reason = std::strerror(static_cast<int>(v));
      return s;
    }
    if (word == "signal") {
      s.exit_code = 128 + static_cast<int>(v);
      s.reason = StrCat("killed by signal ", v, " (", strsignal(static_cast<int>(v)), ")");
    } else {
      s.exit_code = static_cast<int>(v);
      s.reason = StrCat("exited with code ", v);
    }
    s.state = cancelled ? ExecState::kCancelled : ExecState::kExited;
    if (cancelled) s.reason = StrCat("cancelled; ", s.reason);
    return s;
  }

  std::string dir_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<JobExecutor>> CreateProcessExecutor(const std::string& state_dir) {
  if (::mkdir(state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(StrCat("cannot create ", state_dir, ": ", std::strerror(errno)));
  }
  return std::unique_ptr<JobExecutor>(std::make_unique<ProcessExecutor>(state_dir));
}

}  // namespace warden::agent
