// escape-helper: a static program placed in the test rootfs to make the syscalls busybox cannot.
// Each action prints one line "ACTION ok" or "ACTION fail <errno name>" and exits 0 when the
// attempt succeeded, 1 when it was refused, 2 on bad usage. The tests treat "ok" on an attack as
// an escape.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <unistd.h>

static int report(const char* what, int rc) {
  if (rc >= 0) {
    printf("%s ok\n", what);
    return 0;
  }
  printf("%s fail %s\n", what, strerrorname_np(errno) ? strerrorname_np(errno) : "?");
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const char* a = argv[1];
  setvbuf(stdout, NULL, _IONBF, 0);
  if (!strcmp(a, "open") && argc >= 3) {
    int fd = open(argv[2], (argc >= 4 && !strcmp(argv[3], "w")) ? O_WRONLY | O_CREAT : O_RDONLY, 0644);
    return report("open", fd);
  }
  if (!strcmp(a, "euid")) {
    printf("euid=%d uid=%d\n", (int)geteuid(), (int)getuid());
    return 0;
  }
  if (!strcmp(a, "mount")) return report("mount", mount("tmpfs", "/tmp", "tmpfs", 0, NULL));
  if (!strcmp(a, "ptrace")) {
    pid_t child = fork();
    if (child == 0) {
      pause();
      _exit(0);
    }
    int rc = (int)ptrace(PTRACE_ATTACH, child, NULL, NULL);
    int e = errno;
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    errno = e;
    return report("ptrace", rc);
  }
  if (!strcmp(a, "bpf")) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    return report("bpf", (int)syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr)));
  }
  if (!strcmp(a, "keyctl")) {
    return report("keyctl", (int)syscall(SYS_add_key, "user", "warden-test", "x", 1, -2 /*KEY_SPEC_PROCESS*/));
  }
  if (!strcmp(a, "rawsock")) return report("rawsock", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
  if (!strcmp(a, "packetsock")) return report("packetsock", socket(17 /*AF_PACKET*/, SOCK_RAW, 0));
  if (!strcmp(a, "tcpsock")) return report("tcpsock", socket(AF_INET, SOCK_STREAM, 0));
  if (!strcmp(a, "init_module")) return report("init_module", (int)syscall(SYS_init_module, "", 0, ""));
  if (!strcmp(a, "finit_module")) {
    int fd = open("/bin/busybox", O_RDONLY);
    return report("finit_module", (int)syscall(SYS_finit_module, fd, "", 0));
  }
  if (!strcmp(a, "userns")) return report("userns", unshare(CLONE_NEWUSER));
  if (!strcmp(a, "connect") && argc >= 4) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return report("connect", s);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)atoi(argv[3]));
    inet_pton(AF_INET, argv[2], &sa.sin_addr);
    return report("connect", connect(s, (struct sockaddr*)&sa, sizeof(sa)));
  }
  if (!strcmp(a, "fill") && argc >= 3) {
    // Writes 1 MiB blocks until an error; prints how far it got.
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return report("fill", fd);
    static char buf[1 << 20];
    memset(buf, 'x', sizeof(buf));
    long long total = 0;
    for (;;) {
      ssize_t n = write(fd, buf, sizeof(buf));
      if (n <= 0) {
        int e = errno;
        printf("fill wrote %lld MiB\n", total >> 20);
        errno = n == 0 ? ENOSPC : e;
        return report("fill", -1);
      }
      total += n;
      if (total > (8LL << 30)) return report("fill", 0);
    }
  }
  if (!strcmp(a, "hog") && argc >= 3) {
    // Touches MiB after MiB until killed or the target is reached.
    long mib = atol(argv[2]);
    for (long i = 0; i < mib; ++i) {
      char* p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) return report("hog", -1);
      memset(p, 1, 1 << 20);
    }
    return report("hog", 0);
  }
  if (!strcmp(a, "forkbomb") && argc >= 3) {
    // Tries to hold N processes at once; reports how many it got.
    int want = atoi(argv[2]), got = 0, err = 0;
    if (want > 100000) want = 100000;
    static pid_t kids[100000];
    for (int i = 0; i < want; ++i) {
      pid_t p = fork();
      if (p == 0) {
        sleep(5);
        _exit(0);
      }
      if (p < 0) {
        err = errno;
        break;
      }
      kids[got++] = p;
    }
    printf("forkbomb got %d\n", got);
    for (int i = 0; i < got; ++i) kill(kids[i], SIGKILL);
    for (int i = 0; i < got; ++i) waitpid(kids[i], NULL, 0);
    errno = err;
    return report("forkbomb", got == want ? 0 : -1);
  }
  return 2;
}
