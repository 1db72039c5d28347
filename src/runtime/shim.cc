// The per-job shim: a small process, detached from the runner (own session, reparented away), that
// starts the container, becomes the parent of its init (child subreaper), enforces the wall-time
// limit and the cancel grace period, reads the job's cgroup statistics (OOM kills, peak memory,
// CPU time) before the runtime deletes the cgroup, and records result.json. Because it outlives
// the runner, a restarted runner loses no job (issue 7: "the agent restarts without losing track
// of running jobs").
//
// Started by the runner with posix_spawn in its own session: the runner's child, which the runner
// reaps once it exits (and which init adopts if the runner dies first); no extra fork, since
// every process hand-off costs a scheduler wake-up on the start path. Protocol with the runner:
// fd 3 is the write end of a pipe; the shim writes "ok\n" once the
// container runs, or "err <message>\n", then closes it. SIGTERM to the shim means "cancel".
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <chrono>
#include <sstream>
#include <sys/stat.h>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/shim_support.h"

namespace warden::runtime {
namespace {

using namespace shim;  // NOLINT: this file is the shim

template <typename... Args>
std::string StrCat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Runs argv with the given stdio, with an empty signal mask (the shim blocks SIGTERM for its
// signalfd; a blocked mask would be inherited by the job and make it deaf to cancel).
// In a forked child: an empty signal mask, /dev/null as stdin, the job's logs as stdout/stderr.
void ChildStdio(int out_fd, int err_fd) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  int devnull = open("/dev/null", O_RDWR);
  dup2(devnull, 0);
  dup2(out_fd, 1);
  dup2(err_fd, 2);
}

// `pass` lists descriptors handed to the command as 3, 4, ... (runc's --preserve-fds); their
// numbers in the shim are above those targets (see ShimMain).
int RunCommand(const std::vector<std::string>& args, int out_fd, int err_fd, const std::vector<int>& pass = {}) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    ChildStdio(out_fd, err_fd);
    for (size_t i = 0; i < pass.size(); ++i) {
      if (dup2(pass[i], 3 + static_cast<int>(i)) < 0) _exit(126);  // dup2 clears close-on-exec
    }
    execvp(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Signals every process in the job's cgroup (bwrap runs have no runtime to do it).
void SignalCgroup(const JobRecord& rec, int sig) {
  for (const std::string& procs : rec.cgroup_procs) {
    std::string text;
    if (!ReadFile(procs, &text)) continue;
    std::istringstream in(text);
    int pid;
    while (in >> pid) kill(pid, sig);
  }
}

// Creates the job's cgroup(s) and writes the limits. Returns "" or an error message.
std::string SetUpCgroups(const JobRecord& rec) {
  for (const std::string& d : rec.cgroup_dirs) {
    // mkdir -p, one level at a time.
    for (size_t i = 1; i <= d.size(); ++i) {
      if (i == d.size() || d[i] == '/') {
        std::string part = d.substr(0, i);
        if (mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) return "mkdir " + part + ": " + std::strerror(errno);
      }
    }
  }
  for (const auto& [file, value] : rec.cgroup_writes) {
    int fd = open(file.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return "open " + file + ": " + std::strerror(errno);
    ssize_t n = write(fd, value.data(), value.size());
    int e = errno;
    close(fd);
    // Enabling a controller that is already on can fail with EBUSY/EINVAL on some kernels.
    if (n < 0 && file.find("subtree_control") == std::string::npos) {
      return "write " + value + " to " + file + ": " + std::strerror(e);
    }
  }
  return "";
}

void RemoveCgroups(const JobRecord& rec) {
  for (const std::string& d : rec.cgroup_dirs) rmdir(d.c_str());
}

void Report(int fd, const std::string& line) {
  if (fd < 0) return;
  std::string l = line + "\n";
  (void)!write(fd, l.data(), l.size());
  close(fd);
}

}  // namespace

int ShimMain(int argc, char** argv) {
  if (argc < 2) return 2;
  std::string dir = argv[argc - 1];  // a prepared sandbox's moves at the hand-over
  int start_fd = fcntl(3, F_GETFD) >= 0 ? 3 : -1;
  if (start_fd >= 0) fcntl(start_fd, F_SETFD, FD_CLOEXEC);

  std::string record_text, err;
  if (!ReadFile(dir + "/job.json", &record_text)) {
    Report(start_fd, "err cannot read job.json");
    return 1;
  }
  JobRecord rec;
  if (!DecodeJobRecord(record_text, &rec, &err)) {
    Report(start_fd, "err " + err);
    return 1;
  }
  WriteFileAtomic(dir + "/shim.pid", StrCat(getpid(), " ", ProcessStartTime(getpid()), "\n"), 0600, false, nullptr);

  prctl(PR_SET_CHILD_SUBREAPER, 1);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  int sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

  // A prepared sandbox (runtime/README.md "Prepared sandboxes") gets from the runner: fd 4, the
  // control pipe (one line "handoff <job dir> <wall time ms>", or end of file when the runner
  // dropped the sandbox); fds 5 and 6, the launcher's job and report pipes, and fd 7, the
  // launcher program, all three passed on to runc (--preserve-fds) and closed here. After "ok"
  // the start pipe (fd 3) stays open until the hand-over is acknowledged on it.
  int control_fd = -1;
  std::vector<int> pass;
  if (rec.prepared) {
    for (int fd = 4; fd <= 7; ++fd) {
      if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        Report(start_fd, "err the prepared sandbox's descriptors are missing");
        return 1;
      }
    }
    control_fd = 4;
    pass = {5, 6, 7};
  }
  bool handed_over = !rec.prepared;

  int out_fd = open((dir + "/stdout.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  int err_fd = open((dir + "/stderr.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  const std::string& rt = rec.runtime_path;
  const std::string cid = rec.ContainerId();
  std::string log = dir + "/runtime.log";
  auto runtime_cmd = [&](std::vector<std::string> tail) {
    std::vector<std::string> args = {rt, "--root", rec.runtime_root, "--log", log, "--log-format", "json"};
    args.insert(args.end(), tail.begin(), tail.end());
    return args;
  };

  JobResult result;
  auto finish = [&](int code) {
    WriteFileAtomic(dir + "/result.json", EncodeJobResult(result), 0640, false, nullptr);
    return code;
  };

  const int64_t started_ms = NowMs();
  const bool bwrap = rec.kind == "bwrap";
  int init_pid = 0;
  if (bwrap) {
    std::string cg_err = SetUpCgroups(rec);
    int seccomp_fd = open(rec.seccomp_file.c_str(), O_RDONLY | O_CLOEXEC);
    if (!cg_err.empty() || seccomp_fd < 0) {
      RemoveCgroups(rec);
      result.error = cg_err.empty() ? "cannot open the seccomp filter " + rec.seccomp_file : cg_err;
      int code = finish(1);
      Report(start_fd, "err " + result.error);
      return code;
    }
    std::vector<char*> args;
    for (const std::string& a : rec.exec_args) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
      // Join the job's cgroup, drop to the tenant's unprivileged host uid (bubblewrap maps it to
      // the job user inside its user namespace), then exec bwrap with the seccomp filter on fd 10.
      std::string me = std::to_string(getpid());
      for (const std::string& procs : rec.cgroup_procs) {
        int fd = open(procs.c_str(), O_WRONLY);
        if (fd < 0 || write(fd, me.data(), me.size()) < 0) _exit(126);
        close(fd);
      }
      ChildStdio(out_fd, err_fd);
      dup2(seccomp_fd, 10);
      if (setgroups(0, nullptr) != 0 || setresgid(rec.run_gid, rec.run_gid, rec.run_gid) != 0 ||
          setresuid(rec.run_uid, rec.run_uid, rec.run_uid) != 0) {
        _exit(126);
      }
      execv(args[0], args.data());
      _exit(127);
    }
    close(seccomp_fd);
    init_pid = pid;
  } else {
    std::vector<std::string> run = {"run", "--detach", "--bundle", dir + "/bundle", "--pid-file", dir + "/container.pid"};
    if (!pass.empty()) {
      run.push_back("--preserve-fds");
      run.push_back(std::to_string(pass.size()));
    }
    run.push_back(cid);
    int rc = RunCommand(runtime_cmd(run), out_fd, err_fd, pass);
    for (int fd : pass) close(fd);  // the launcher holds them now; end of file must reach the runner
    if (rc != 0) {
      std::string msg = LastRuntimeError(log);
      if (msg.empty()) msg = StrCat(rt, " run exited with ", rc);
      RunCommand(runtime_cmd({"delete", "--force", cid}), err_fd, err_fd);
      result.error = msg;
      int code = finish(1);
      Report(start_fd, "err " + msg);  // last: the runner may delete the job dir once it has this
      return code;
    }
    std::string pid_text;
    init_pid = ReadFile(dir + "/container.pid", &pid_text) ? std::atoi(pid_text.c_str()) : 0;
  }
  int pid_fd = init_pid > 0 ? static_cast<int>(syscall(SYS_pidfd_open, init_pid, 0)) : -1;
  if (pid_fd < 0) {
    if (!bwrap) RunCommand(runtime_cmd({"delete", "--force", cid}), err_fd, err_fd);
    result.error = "the runtime reported no container pid";
    int code = finish(1);
    Report(start_fd, "err " + result.error);
    return code;
  }
  if (handed_over) {
    Report(start_fd, "ok");
    start_fd = -1;
  } else {
    const char ok[] = "ok\n";
    (void)!write(start_fd, ok, sizeof(ok) - 1);
  }

  // A prepared sandbox has no job yet: no wall time until the hand-over.
  int64_t wall_deadline = handed_over ? started_ms + rec.wall_time_ms : -1;
  std::string control_buf;
  int64_t kill_at = -1;
  bool stopping = false;
  auto begin_stop = [&]() {
    stopping = true;
    if (bwrap) {
      SignalCgroup(rec, SIGTERM);
    } else {
      RunCommand(runtime_cmd({"kill", cid, "TERM"}), err_fd, err_fd);
    }
    kill_at = NowMs() + rec.grace_ms;
  };
  for (;;) {
    int64_t now = NowMs();
    int64_t next = stopping ? kill_at : wall_deadline;
    int timeout = next < 0 ? -1 : static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(next - now, 1 << 30)));
    pollfd fds[3] = {{pid_fd, POLLIN, 0}, {sig_fd, POLLIN, 0}, {control_fd, POLLIN, 0}};
    int n = poll(fds, control_fd >= 0 ? 3 : 2, timeout);
    if (n < 0 && errno != EINTR) break;
    if (fds[0].revents & POLLIN) break;
    if (control_fd >= 0 && (fds[2].revents & (POLLIN | POLLHUP | POLLERR))) {
      char buf[4096];
      ssize_t r = read(control_fd, buf, sizeof(buf));
      if (r > 0) control_buf.append(buf, static_cast<size_t>(r));
      size_t nl = control_buf.find('\n');
      if (r == 0 || (r < 0 && errno != EINTR) || control_buf.size() > 8192) {
        // The runner dropped the sandbox (or died) before handing a job over: end it. (The
        // launcher also sees end of file on its job pipe and exits by itself.)
        close(control_fd);
        control_fd = -1;
        if (!stopping) {
          stopping = true;
          RunCommand(runtime_cmd({"kill", cid, "KILL"}), err_fd, err_fd);
          kill_at = NowMs() + 1000;
        }
      } else if (nl != std::string::npos) {
        // "handoff <wall time ms> <job dir>": from now on this is that job's shim.
        const std::string line = control_buf.substr(0, nl);
        std::string verb, new_dir;
        int64_t wall_ms = 0;
        size_t sp1 = line.find(' '), sp2 = sp1 == std::string::npos ? sp1 : line.find(' ', sp1 + 1);
        if (sp2 != std::string::npos) {
          verb = line.substr(0, sp1);
          wall_ms = static_cast<int64_t>(ParseU64(line, sp1 + 1));
          new_dir = line.substr(sp2 + 1);
        }
        close(control_fd);
        control_fd = -1;
        if (verb == "handoff" && !new_dir.empty() && new_dir[0] == '/' && wall_ms > 0 && !stopping) {
          dir = new_dir;
          log = dir + "/runtime.log";
          rec.job_id = new_dir.substr(new_dir.rfind('/') + 1);
          rec.wall_time_ms = wall_ms;
          wall_deadline = NowMs() + wall_ms;
          handed_over = true;
          WriteFileAtomic(dir + "/shim.pid", StrCat(getpid(), " ", ProcessStartTime(getpid()), "\n"), 0600, false, nullptr);
          Report(start_fd, "ok");
          start_fd = -1;
        } else {
          Report(start_fd, "err malformed hand-over");
          start_fd = -1;
          stopping = true;
          RunCommand(runtime_cmd({"kill", cid, "KILL"}), err_fd, err_fd);
          kill_at = NowMs() + 1000;
        }
      }
    }
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo si;
      while (read(sig_fd, &si, sizeof(si)) == static_cast<ssize_t>(sizeof(si))) {
      }
      if (!stopping) {
        result.cancelled = true;
        begin_stop();
      }
    }
    now = NowMs();
    if (!stopping && wall_deadline >= 0 && now >= wall_deadline) {
      result.wall_time_exceeded = true;
      begin_stop();
    } else if (stopping && kill_at >= 0 && now >= kill_at) {
      if (bwrap) {
        SignalCgroup(rec, SIGKILL);
      } else {
        RunCommand(runtime_cmd({"kill", "--all", cid, "KILL"}), err_fd, err_fd);
      }
      kill_at = now + 1000;  // repeat until init is gone
    }
  }

  int status = 0;
  pid_t w;
  do {
    w = waitpid(init_pid, &status, 0);
  } while (w < 0 && errno == EINTR);
  if (w == init_pid) {
    if (WIFSIGNALED(status)) {
      result.signal = WTERMSIG(status);
      result.exit_code = 128 + result.signal;
    } else {
      result.exit_code = WEXITSTATUS(status);
      // bubblewrap reports a command killed by signal N as exit status 128 + N.
      if (bwrap && result.exit_code > 128 && result.exit_code < 128 + 65) result.signal = result.exit_code - 128;
    }
  } else {
    // Not our child (should not happen: we are its subreaper). Exit status unknown.
    result.lost = true;
  }
  if (!handed_over) {
    // A prepared sandbox that never got a job: nothing to report; remove the container and the
    // sandbox's directory (the runner forgets it when its start pipe reaches end of file).
    if (start_fd >= 0) close(start_fd);
    RunCommand({rt, "--root", rec.runtime_root, "delete", "--force", cid}, err_fd, err_fd);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    return 0;
  }
  CgroupCounters st = ReadCgroupCounters(rec.memory_dir, rec.cpu_dir, rec.cgroup_v1);
  result.oom_killed = st.oom_kills > 0;
  result.usage.peak_memory_bytes = st.peak_memory_bytes;
  result.usage.cpu_time_usec = st.cpu_time_usec;
  // The result is final once init is reaped (the kernel has killed the rest of the job's pid
  // namespace with it), so it is published before the runtime's cleanup, which waiters need not
  // wait for. The delete logs to stderr only: the job directory may be removed meanwhile.
  if (bwrap) {
    // bwrap's pid namespace died with it; anything left (a process that escaped the namespace
    // cannot, but be thorough) is killed before the cgroup goes.
    SignalCgroup(rec, SIGKILL);
    int code = finish(0);
    for (int i = 0; i < 50; ++i) {
      RemoveCgroups(rec);
      bool left = false;
      for (const std::string& d : rec.cgroup_dirs) left |= access(d.c_str(), F_OK) == 0;
      if (!left) break;
      usleep(20000);
    }
    return code;
  }
  int code = finish(0);
  RunCommand({rt, "--root", rec.runtime_root, "delete", "--force", cid}, err_fd, err_fd);
  return code;
}

}  // namespace warden::runtime
