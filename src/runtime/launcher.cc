// warden-sandbox-launcher: pid 1 of a prepared sandbox (runtime/README.md "Prepared sandboxes").
//
// runc starts it, already confined exactly as a job (user namespace, mounts, seccomp, no
// capabilities, no_new_privileges, cgroups), as the job's user, with three extra descriptors:
//   3  the read end of the job pipe: one job description, then end of file;
//   4  the write end of the report pipe: "exec\n" just before execve, "err <why>\n" on failure;
//   5  this program's own file (runc executes it as /proc/self/fd/5): closed at once.
// It blocks reading fd 3 until the runner has written the job and closed its end, checks the
// description, closes fd 3, changes to the job's directory and execve()s the job with exactly the
// job's environment. Fd 4 is close-on-exec, so the runner sees end of file the moment the exec
// succeeded. Nothing here is privileged; there is no loop: one description, one exec, or exit.
//
// Job description: NUL-terminated strings:
//   "warden-job-1", cwd, N, arg_1 .. arg_N, M, env_1 .. env_M      (N >= 1, "NAME=value" env)
// and nothing after them. Anything else (a second description included) is refused.
//
// Static, libc only: it starts once per prepared sandbox and must stay small.
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <initializer_list>

namespace {

constexpr int kJobFd = 3;
constexpr int kReportFd = 4;
constexpr int kSelfFd = 5;
constexpr size_t kMaxDescription = 2u << 20;
constexpr long kMaxItems = 8192;

void Report(const char* a, const char* b = "", const char* c = "", const char* d = "") {
  char line[1024];
  size_t n = 0;
  for (const char* s : {a, b, c, d}) {
    while (*s != '\0' && n < sizeof(line) - 2) line[n++] = *s++;
  }
  line[n++] = '\n';
  (void)!write(kReportFd, line, n);
}

[[noreturn]] void Fail(const char* a, const char* b = "", const char* c = "") {
  Report("err ", a, b, c);
  _exit(126);
}

// Reads fd 3 to end of file into a malloc'd buffer (NUL-terminated once more at the end).
char* ReadAll(size_t* size) {
  size_t cap = 4096, n = 0;
  char* buf = static_cast<char*>(malloc(cap + 1));
  if (buf == nullptr) Fail("out of memory");
  for (;;) {
    if (n == cap) {
      if (cap >= kMaxDescription) Fail("the job description is too large");
      cap *= 2;
      char* bigger = static_cast<char*>(realloc(buf, cap + 1));
      if (bigger == nullptr) Fail("out of memory");
      buf = bigger;
    }
    ssize_t r = read(kJobFd, buf + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) Fail("cannot read the job description: ", strerror(errno));
    if (r == 0) break;
    n += static_cast<size_t>(r);
  }
  buf[n] = '\0';
  *size = n;
  return buf;
}

struct Cursor {
  char* p;
  char* end;
  // The next NUL-terminated string, or nullptr when the description ends without one.
  char* Next() {
    if (p >= end) return nullptr;
    char* s = p;
    char* nul = static_cast<char*>(memchr(p, '\0', static_cast<size_t>(end - p)));
    if (nul == nullptr) return nullptr;
    p = nul + 1;
    return s;
  }
  long Count() {
    char* s = Next();
    if (s == nullptr || *s == '\0') return -1;
    char* e = nullptr;
    long v = strtol(s, &e, 10);
    if (*e != '\0' || v < 0 || v > kMaxItems) return -1;
    return v;
  }
};

}  // namespace

int main() {
  close(kSelfFd);
  if (fcntl(kReportFd, F_SETFD, FD_CLOEXEC) != 0) _exit(125);  // no report channel: nothing to do
  size_t size = 0;
  char* text = ReadAll(&size);
  close(kJobFd);
  if (size == 0) _exit(0);  // the runner closed without a job (it dropped this sandbox)
  Cursor c{text, text + size};
  const char* magic = c.Next();
  if (magic == nullptr || strcmp(magic, "warden-job-1") != 0) Fail("malformed job description (no header)");
  const char* cwd = c.Next();
  if (cwd == nullptr || cwd[0] != '/') Fail("malformed job description (cwd)");
  long argc = c.Count();
  if (argc < 1) Fail("malformed job description (argument count)");
  char** argv = static_cast<char**>(calloc(static_cast<size_t>(argc) + 1, sizeof(char*)));
  if (argv == nullptr) Fail("out of memory");
  for (long i = 0; i < argc; ++i) {
    argv[i] = c.Next();
    if (argv[i] == nullptr) Fail("malformed job description (arguments)");
  }
  long envc = c.Count();
  if (envc < 0) Fail("malformed job description (environment count)");
  char** envp = static_cast<char**>(calloc(static_cast<size_t>(envc) + 1, sizeof(char*)));
  if (envp == nullptr) Fail("out of memory");
  const char* path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (long i = 0; i < envc; ++i) {
    envp[i] = c.Next();
    if (envp[i] == nullptr || strchr(envp[i], '=') == nullptr || envp[i][0] == '=') {
      Fail("malformed job description (environment)");
    }
    if (strncmp(envp[i], "PATH=", 5) == 0) path = envp[i] + 5;
  }
  // One description only: anything after it (a second job) is refused.
  if (c.p != c.end) Fail("the job description has trailing data (one job per sandbox)");
  if (chdir(cwd) != 0) Fail("cannot change to the job's directory ", cwd);
  Report("exec");
  if (strchr(argv[0], '/') != nullptr) {
    execve(argv[0], argv, envp);
    Report("err cannot execute ", argv[0], ": ", strerror(errno));
    _exit(127);
  }
  // A bare command name: the job's PATH, as runc resolves process.args[0] on the cold path.
  int last = ENOENT;
  size_t name_len = strlen(argv[0]);
  for (const char* dir = path;;) {
    const char* colon = strchr(dir, ':');
    size_t len = colon != nullptr ? static_cast<size_t>(colon - dir) : strlen(dir);
    if (len > 0 && len + name_len + 2 < 4096) {
      char full[4096];
      memcpy(full, dir, len);
      full[len] = '/';
      memcpy(full + len + 1, argv[0], name_len + 1);
      execve(full, argv, envp);
      if (errno != ENOENT && errno != ENOTDIR) last = errno;
    }
    if (colon == nullptr) break;
    dir = colon + 1;
  }
  Report("err cannot execute ", argv[0], ": ", strerror(last));
  _exit(127);
}
