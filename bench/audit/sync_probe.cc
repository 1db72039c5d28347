// What one durable commit costs on this disk, apart from any log or database: the system-call
// latency of the ways a batch can be made durable, interleaved call by call so that every variant
// sees the same disk weather (bench/RESULTS.md, "Where a batch's time goes").
//
//   sync_probe DIR [CALLS]    (DIR on the disk to measure, not tmpfs; CALLS default 2000)
//
// Variants, each on its own region of one 64 MiB file written with zeros and synced first (so
// every write overwrites allocated, written blocks, as the audit log's preallocation does):
//   flush     fdatasync with nothing dirty (the device cache flush alone)
//   buffered  write() of 2,640 bytes (8 events) at the end of the last one + fdatasync (the log)
//   wal       write() of 20 KiB + fdatasync (about one SQLite WAL commit of this benchmark)
//   direct    O_DIRECT|O_DSYNC rewrite of the last partial 512-byte sector plus the 2,640 new
//             bytes (lever 1: on a device without FUA the kernel still adds a flush)
// Prints the median, p10 and p90 of each, in microseconds; exit 1 when a call fails.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Series {
  const char* name;
  std::vector<double> us;
  void Print() {
    std::sort(us.begin(), us.end());
    std::printf("%-9s median %6.0f us  p10 %6.0f  p90 %6.0f  (%zu calls)\n", name,
                us[us.size() / 2], us[us.size() / 10], us[us.size() * 9 / 10], us.size());
  }
};

template <typename F>
bool Time(Series& s, F&& f) {
  auto t = Clock::now();
  bool ok = f();
  s.us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: sync_probe DIR [CALLS]\n");
    return 2;
  }
  const std::string path = std::string(argv[1]) + "/sync_probe.dat";
  const int calls = argc > 2 ? std::atoi(argv[2]) : 2000;
  constexpr size_t kFile = 64 << 20, kRegion = 16 << 20, kBatch = 2640, kWal = 20480;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::perror("open");
    return 1;
  }
  std::vector<char> zeros(1 << 20, '\0');
  for (size_t off = 0; off < kFile; off += zeros.size()) {
    if (::pwrite(fd, zeros.data(), zeros.size(), static_cast<off_t>(off)) !=
        static_cast<ssize_t>(zeros.size())) {
      std::perror("pwrite");
      return 1;
    }
  }
  if (::fsync(fd) != 0) return 1;
  int dfd = ::open(path.c_str(), O_WRONLY | O_DIRECT | O_DSYNC | O_CLOEXEC);
  if (dfd < 0) {
    std::perror("open O_DIRECT");
    return 1;
  }
  void* raw = nullptr;
  if (::posix_memalign(&raw, 4096, 64 << 10) != 0) return 1;
  std::unique_ptr<char, decltype(&std::free)> buf(static_cast<char*>(raw), &std::free);
  std::memset(buf.get(), 'x', 64 << 10);
  Series flush{"flush", {}}, buffered{"buffered", {}}, wal{"wal", {}}, direct{"direct", {}};
  size_t b_off = 0, w_off = kRegion, d_off = 2 * kRegion;
  bool ok = true;
  for (int i = 0; i < calls && ok; ++i) {
    ok = ok && Time(flush, [&] { return ::fdatasync(fd) == 0; });
    ok = ok && Time(buffered, [&] {
           return ::pwrite(fd, buf.get(), kBatch, static_cast<off_t>(b_off)) ==
                      static_cast<ssize_t>(kBatch) &&
                  ::fdatasync(fd) == 0;
         });
    ok = ok && Time(wal, [&] {
           return ::pwrite(fd, buf.get(), kWal, static_cast<off_t>(w_off)) ==
                      static_cast<ssize_t>(kWal) &&
                  ::fdatasync(fd) == 0;
         });
    const size_t start = d_off / 512 * 512;
    const size_t len = (d_off + kBatch - start + 511) / 512 * 512;
    ok = ok && Time(direct, [&] {
           return ::pwrite(dfd, buf.get(), len, static_cast<off_t>(start)) ==
                  static_cast<ssize_t>(len);
         });
    b_off = (b_off + kBatch) % (kRegion - kBatch);
    w_off = kRegion + (w_off - kRegion + kWal) % (kRegion - kWal);
    d_off = 2 * kRegion + (d_off - 2 * kRegion + kBatch) % (kRegion - 2 * kBatch);
  }
  ::close(dfd);
  ::close(fd);
  ::unlink(path.c_str());
  if (!ok) {
    std::perror("sync_probe: a call failed");
    return 1;
  }
  for (Series* s : {&flush, &buffered, &wal, &direct}) s->Print();
  return 0;
}
