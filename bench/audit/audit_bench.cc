// Audit log benchmarks (issue 4, must show 7), run by bench/audit/run.sh:
//
//  1. Durable appends/s with W concurrent writers (default 8): gpuwarden's audit log (group
//     commit, one fdatasync per batch) against SQLite 3 in WAL mode with synchronous=FULL, one
//     INSERT (its own transaction) per event into a table with the same fields and indexes on
//     time, actor, tenant and action. Same events, same directory (same disk), same run. Every
//     append of both is durable when it returns.
//  2. `audit verify` throughput on one core: a log of N events (written through the real log;
//     fdatasync skipped while building it, which does not change the bytes), then
//     VerifyAuditLog timed alone.
//
//   audit_bench DIR [--writers 8] [--seconds 5] [--verify-events 1000000]
//               [--preallocation zero|fallocate|none]
//
// --preallocation picks how the log reserves segment space (AuditPreallocation; zero is the
// default). Where the kernel shows the file system's journal (/proc/fs/jbd2/DEV-8/info: ext4 on
// a device this container can see, e.g. a loop device), the journal commits during each side's
// rounds are printed too: a data-only fdatasync commits none.
//
// DIR must be on the disk to measure (not tmpfs: fdatasync is free there). Prints one line per
// measure and the ratios; exit 0 whatever the numbers (run.sh judges).
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "audit/audit.h"
#include "audit/verify.h"
#include "common/clock.h"
#include "common/metrics.h"

namespace {

using warden::audit::AuditEvent;
using Clock = std::chrono::steady_clock;

AuditEvent MakeEvent(int writer, long i) {
  AuditEvent e;
  e.request_id = "req-" + std::to_string(writer) + "-" + std::to_string(i);
  e.actor_kind = "user";
  e.actor_id = "usr_" + std::to_string(writer * 7919 % 1000);
  e.actor_name = "user" + std::to_string(writer * 7919 % 1000);
  e.tenant = "tenant" + std::to_string(i % 50);
  e.action = i % 3 ? "datasets:read" : "jobs:create";
  e.method = i % 3 ? "GET" : "POST";
  e.resource = "/api/v1/tenants/tenant" + std::to_string(i % 50) + "/datasets/ds" + std::to_string(i % 997);
  e.decision = "allow";
  e.status = 200;
  e.bytes = i * 4096;
  e.source = "10.0.0." + std::to_string(writer) + ":5" + std::to_string(i % 1000);
  return e;
}

// Transactions committed so far by the ext4 journal of the device holding `dir`; -1 when the
// kernel does not show it here.
long JournalCommits(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return -1;
  std::ifstream uevent("/sys/dev/block/" + std::to_string(major(st.st_dev)) + ":" +
                       std::to_string(minor(st.st_dev)) + "/uevent");
  std::string line, dev;
  while (std::getline(uevent, line)) {
    if (line.rfind("DEVNAME=", 0) == 0) dev = line.substr(8);
  }
  if (dev.empty()) return -1;
  std::ifstream info("/proc/fs/jbd2/" + dev + "-8/info");
  long n = -1;
  if (!(info >> n)) return -1;  // "N transactions (M requested), each up to ..."
  return n;
}

warden::audit::AuditPreallocation g_preallocation = warden::audit::AuditPreallocation::kZeroFill;
int g_poll_waiters = warden::audit::AuditOptions{}.poll_waiters;  // --poll-waiters N

// Durations (us) of each side's durable-commit system calls, so that the per-batch / per-commit
// cost can be compared apart from CPU scheduling: ours through the AuditFileIo seam (every
// write() and fdatasync of the log: batches, index entries, checkpoints), SQLite's through a
// VFS that times xSync (the WAL's fdatasync, and the database file's at its checkpoints).
struct Latencies {
  std::mutex mu;
  std::vector<double> us;
  void Add(double v) {
    std::lock_guard lock(mu);
    us.push_back(v);
  }
  // "median X us, p90 Y us, max Z us, total T ms, N calls"
  std::string Summary() {
    std::lock_guard lock(mu);
    if (us.empty()) return "none";
    std::vector<double> v = us;
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "median %.0f us, p90 %.0f us, max %.0f us, total %.0f ms, %zu calls",
                  v[v.size() / 2], v[v.size() * 9 / 10], v.back(), sum / 1000, v.size());
    return buf;
  }
};
Latencies g_our_sync, g_our_write, g_sqlite_sync;

double Micros(Clock::time_point since) {
  return std::chrono::duration<double, std::micro>(Clock::now() - since).count();
}

class TimingIo : public warden::audit::AuditFileIo {
 public:
  ssize_t Write(int fd, const void* data, size_t size) override {
    auto t = Clock::now();
    ssize_t n = AuditFileIo::Write(fd, data, size);
    g_our_write.Add(Micros(t));
    return n;
  }
  int Datasync(int fd) override {
    auto t = Clock::now();
    int r = AuditFileIo::Datasync(fd);
    g_our_sync.Add(Micros(t));
    return r;
  }
};
TimingIo g_timing_io;

// SQLite's default VFS with xSync timed: the files keep their own methods but xSync. The unix
// VFS gives the database file and the WAL different method tables: each gets a timed copy.
sqlite3_vfs g_timed_vfs;
constexpr int kMaxMethods = 8;
const sqlite3_io_methods* g_sqlite_methods[kMaxMethods] = {};
sqlite3_io_methods g_timed_methods[kMaxMethods];
int TimedSync(sqlite3_file* f, int flags) {
  const sqlite3_io_methods* orig = g_sqlite_methods[f->pMethods - g_timed_methods];
  auto t = Clock::now();
  int rc = orig->xSync(f, flags);
  g_sqlite_sync.Add(Micros(t));
  return rc;
}
int TimedOpen(sqlite3_vfs* vfs, const char* name, sqlite3_file* f, int flags, int* out) {
  auto* real = static_cast<sqlite3_vfs*>(vfs->pAppData);
  int rc = real->xOpen(real, name, f, flags, out);
  if (rc != SQLITE_OK || f->pMethods == nullptr) return rc;
  static std::mutex mu;
  std::lock_guard lock(mu);
  for (int i = 0; i < kMaxMethods; ++i) {
    if (g_sqlite_methods[i] == nullptr) {
      g_sqlite_methods[i] = f->pMethods;
      g_timed_methods[i] = *f->pMethods;
      g_timed_methods[i].xSync = TimedSync;
    }
    if (g_sqlite_methods[i] == f->pMethods) {
      f->pMethods = &g_timed_methods[i];
      break;
    }
  }
  return rc;
}
void RegisterTimedVfs() {
  sqlite3_vfs* real = sqlite3_vfs_find(nullptr);
  g_timed_vfs = *real;
  g_timed_vfs.zName = "timed";
  g_timed_vfs.pAppData = real;
  g_timed_vfs.xOpen = TimedOpen;
  sqlite3_vfs_register(&g_timed_vfs, /*makeDflt=*/1);
}

struct Result {
  long events = 0;
  double seconds = 0;
  double cpu_seconds = 0;  // user + system CPU of the whole process during the round
  double rate() const { return seconds > 0 ? events / seconds : 0; }
};

double ProcessCpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

Result RunWriters(int writers, double seconds, const std::function<bool(int, long)>& append) {
  std::atomic<bool> stop{false};
  std::atomic<long> total{0};
  std::atomic<bool> failed{false};
  const double cpu0 = ProcessCpuSeconds();
  auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      long n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        if (!append(w, n)) {
          failed = true;
          break;
        }
        ++n;
      }
      total += n;
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  Result r;
  r.events = total.load();
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.cpu_seconds = ProcessCpuSeconds() - cpu0;
  if (failed) std::fprintf(stderr, "audit_bench: an append failed\n");
  return r;
}

// Each side appends for one round at a time; rounds alternate (ours, SQLite, ours, ...) so that
// both see the same disk weather: the disk here is shared and its flush latency swings widely.
struct AuditSide {
  std::unique_ptr<warden::audit::AuditLog> log;
  explicit AuditSide(const std::string& dir) {
    std::filesystem::remove_all(dir);
    warden::audit::AuditOptions opts;
    opts.dir = dir;
    opts.preallocation = g_preallocation;
    opts.poll_waiters = g_poll_waiters;
    opts.io = &g_timing_io;
    auto l = warden::audit::OpenAuditLog(opts, warden::common::RealClock::Get());
    if (!l.ok()) {
      std::fprintf(stderr, "audit_bench: %s\n", std::string(l.status().message()).c_str());
      std::exit(1);
    }
    log = *std::move(l);
  }
  Result Round(int writers, double seconds, long& next) {
    long base = next;
    Result r = RunWriters(writers, seconds, [&](int w, long i) {
      return log->Append(MakeEvent(w, base + i)).ok();
    });
    next += r.events;
    return r;
  }
};

void Check(int rc, sqlite3* db, const char* what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
    std::fprintf(stderr, "audit_bench: sqlite %s: %s\n", what, sqlite3_errmsg(db));
    std::exit(1);
  }
}

struct SqliteSide {
  std::vector<sqlite3*> dbs;
  std::vector<sqlite3_stmt*> stmts;
  SqliteSide(const std::string& dir, int writers) {
    RegisterTimedVfs();
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::string path = dir + "/audit.db";
    {
      sqlite3* db = nullptr;
      Check(sqlite3_open(path.c_str(), &db), db, "open");
      Check(sqlite3_exec(db,
                         "PRAGMA journal_mode=WAL;"
                         "CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, time_ms INTEGER,"
                         " request_id TEXT, actor_kind TEXT, actor_id TEXT, actor_name TEXT,"
                         " token_id TEXT, tenant TEXT, action TEXT, method TEXT, resource TEXT,"
                         " decision TEXT, reason TEXT, status INTEGER, bytes INTEGER, source TEXT);"
                         "CREATE INDEX audit_time ON audit(time_ms);"
                         "CREATE INDEX audit_actor ON audit(actor_name);"
                         "CREATE INDEX audit_tenant ON audit(tenant);"
                         "CREATE INDEX audit_action ON audit(action);",
                         nullptr, nullptr, nullptr),
            db, "schema");
      sqlite3_close(db);
    }
    // One connection per writer, as concurrent request handlers would have.
    dbs.resize(writers);
    stmts.resize(writers);
    for (int w = 0; w < writers; ++w) {
      Check(sqlite3_open(path.c_str(), &dbs[w]), dbs[w], "open");
      Check(sqlite3_exec(dbs[w], "PRAGMA synchronous=FULL; PRAGMA busy_timeout=60000;", nullptr,
                         nullptr, nullptr),
            dbs[w], "pragma");
      Check(sqlite3_prepare_v2(dbs[w],
                               "INSERT INTO audit (time_ms, request_id, actor_kind, actor_id,"
                               " actor_name, token_id, tenant, action, method, resource, decision,"
                               " reason, status, bytes, source) VALUES"
                               " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                               -1, &stmts[w], nullptr),
            dbs[w], "prepare");
    }
  }
  ~SqliteSide() {
    for (size_t w = 0; w < dbs.size(); ++w) {
      sqlite3_finalize(stmts[w]);
      sqlite3_close(dbs[w]);
    }
  }
  Result Round(int writers, double seconds, long& next) {
    long base = next;
    Result r = RunWriters(writers, seconds, [&](int w, long i) {
      AuditEvent e = MakeEvent(w, base + i);
      sqlite3_stmt* st = stmts[w];
      sqlite3_reset(st);
      sqlite3_bind_int64(st, 1, std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count());
      int k = 2;
      for (const std::string* s : {&e.request_id, &e.actor_kind, &e.actor_id, &e.actor_name,
                                   &e.token_id, &e.tenant, &e.action, &e.method, &e.resource,
                                   &e.decision, &e.reason}) {
        sqlite3_bind_text(st, k++, s->data(), static_cast<int>(s->size()), SQLITE_TRANSIENT);
      }
      sqlite3_bind_int(st, 13, e.status);
      sqlite3_bind_int64(st, 14, e.bytes);
      sqlite3_bind_text(st, 15, e.source.data(), static_cast<int>(e.source.size()),
                        SQLITE_TRANSIENT);
      return sqlite3_step(st) == SQLITE_DONE;  // autocommit: one durable transaction per event
    });
    next += r.events;
    return r;
  }
};

// A log of `events` events for the verify benchmark. fdatasync is skipped while building it.
class NoSyncIo : public warden::audit::AuditFileIo {
 public:
  int Datasync(int) override { return 0; }
};

Result BenchVerify(const std::string& dir, long events) {
  std::filesystem::remove_all(dir);
  {
    NoSyncIo io;
    warden::audit::AuditOptions opts;
    opts.dir = dir;
    opts.io = &io;
    opts.checkpoint_interval = absl::Hours(1);  // exactly one checkpoint per 1,000 events
    auto log = warden::audit::OpenAuditLog(opts, warden::common::RealClock::Get());
    if (!log.ok()) std::exit(1);
    std::vector<std::thread> threads;
    for (int w = 0; w < 8; ++w) {
      threads.emplace_back([&, w] {
        for (long i = w; i < events; i += 8) {
          if (!(*log)->Append(MakeEvent(w, i)).ok()) std::exit(1);
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  std::string pem;
  {
    std::ifstream in(dir + "/audit.pub");
    pem.assign(std::istreambuf_iterator<char>(in), {});
  }
  warden::audit::VerifyOptions vo;
  vo.dir = dir;
  vo.public_key_pem = pem;
  // Warm the page cache so the disk's read speed does not count (the log was just written).
  (void)warden::audit::VerifyAuditLog(vo);
  // CPU time of this thread (the verifier is single-threaded): "one core", whatever else the
  // machine is running. Wall time is printed too.
  auto cpu_now = [] {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
  };
  auto start = Clock::now();
  double cpu_start = cpu_now();
  auto report = warden::audit::VerifyAuditLog(vo);
  Result r;
  r.seconds = cpu_now() - cpu_start;
  double wall = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("verify wall time: %.3f s (%.0f events/s)\n", wall,
              report.ok() ? report->events / wall : 0.0);
  if (!report.ok() || !report->ok()) {
    std::fprintf(stderr, "audit_bench: the benchmark log does not verify\n");
    std::exit(1);
  }
  r.events = static_cast<long>(report->events);
  std::printf("verify: %lu checkpoints, %lu segments\n",
              static_cast<unsigned long>(report->checkpoints),
              static_cast<unsigned long>(report->segments));
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') {  // --help, -h, or a flag where DIR belongs
    std::fprintf(stderr, "usage: audit_bench DIR [--writers N] [--seconds S] [--verify-events N] [--side gpuwarden|sqlite|both] [--preallocation zero|fallocate|none] [--poll-waiters N]\n");
    return 2;
  }
  std::string dir = argv[1];
  std::filesystem::create_directories(dir);
  int writers = 8;
  double seconds = 5;
  long verify_events = 1000000;
  std::string side = "both";  // --side gpuwarden|sqlite|both: one side alone, for profiling
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--writers")) writers = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--seconds")) seconds = std::atof(argv[i + 1]);
    if (!std::strcmp(argv[i], "--verify-events")) verify_events = std::atol(argv[i + 1]);
    if (!std::strcmp(argv[i], "--side")) side = argv[i + 1];
    if (!std::strcmp(argv[i], "--poll-waiters")) g_poll_waiters = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--preallocation")) {
      std::string m = argv[i + 1];
      using P = warden::audit::AuditPreallocation;
      g_preallocation = m == "none" ? P::kNone : m == "fallocate" ? P::kFallocate : P::kZeroFill;
      if (m != "none" && m != "fallocate" && m != "zero") {
        std::fprintf(stderr, "audit_bench: --preallocation zero|fallocate|none\n");
        return 2;
      }
    }
  }
  Result mine, peer;
  long journal_ours = 0, journal_sqlite = 0;
  {
    AuditSide ours(dir + "/gpuwarden-audit");
    SqliteSide sqlite(dir + "/sqlite", writers);
    long n_ours = 0, n_sqlite = 0;
    int rounds = std::max(1, static_cast<int>(seconds));
    for (int round = 0; round < rounds; ++round) {
      long j0 = JournalCommits(dir);
      Result a, b;
      if (side != "sqlite") a = ours.Round(writers, seconds / rounds, n_ours);
      long j1 = JournalCommits(dir);
      if (side != "gpuwarden") b = sqlite.Round(writers, seconds / rounds, n_sqlite);
      long j2 = JournalCommits(dir);
      if (j0 >= 0 && j1 >= 0 && j2 >= 0) {
        journal_ours += j1 - j0;
        journal_sqlite += j2 - j1;
      } else {
        journal_ours = journal_sqlite = -1;
      }
      mine.events += a.events;
      mine.seconds += a.seconds;
      mine.cpu_seconds += a.cpu_seconds;
      peer.events += b.events;
      peer.seconds += b.seconds;
      peer.cpu_seconds += b.cpu_seconds;
      std::printf("round %d: gpuwarden %.0f/s, sqlite %.0f/s\n", round + 1, a.rate(), b.rate());
    }
  }
  std::printf("gpuwarden audit log: %ld durable appends in %.2f s = %.0f/s (%d writers)\n",
              mine.events, mine.seconds, mine.rate(), writers);
  {
    // Group commit at work: events per fdatasync, from the log's own counters.
    std::string text = warden::common::metrics::Registry::Default().RenderText();
    auto value = [&](const std::string& name) {
      size_t at = text.find("\n" + name + " ");
      return at == std::string::npos ? 0.0 : std::atof(text.c_str() + at + name.size() + 2);
    };
    double syncs = value("audit_syncs_total");
    std::printf("gpuwarden events per fdatasync: %.2f\n",
                syncs > 0 ? value("audit_events_total") / syncs : 0.0);
    if (journal_ours >= 0) {
      std::printf("journal commits: gpuwarden %ld (%.3f per fdatasync, %.0f checkpoints, %.0f "
                  "preallocated chunks), sqlite %ld (%.3f per insert)\n",
                  journal_ours, syncs > 0 ? journal_ours / syncs : 0.0,
                  value("audit_checkpoints_total"), value("audit_preallocations_total"),
                  journal_sqlite,
                  peer.events > 0 ? static_cast<double>(journal_sqlite) / peer.events : 0.0);
    } else {
      std::printf("journal commits: not visible here (no /proc/fs/jbd2 for this device)\n");
    }
  }
  std::printf("sqlite WAL synchronous=FULL: %ld durable inserts in %.2f s = %.0f/s (%d writers)\n",
              peer.events, peer.seconds, peer.rate(), writers);
  std::printf("ratio: %.1fx\n", peer.rate() > 0 ? mine.rate() / peer.rate() : 0.0);
  // What each side's rounds cost in CPU (the whole process: writers, the log's writer thread,
  // polling included), per event and in cores kept busy.
  auto cpu = [](const Result& r) {
    return r.events > 0 ? r.cpu_seconds / static_cast<double>(r.events) * 1e6 : 0.0;
  };
  std::printf("CPU: gpuwarden %.1f us per event (%.2f cores, %d polling waiters), sqlite %.1f us per insert (%.2f cores)\n",
              cpu(mine), mine.seconds > 0 ? mine.cpu_seconds / mine.seconds : 0.0, g_poll_waiters,
              cpu(peer), peer.seconds > 0 ? peer.cpu_seconds / peer.seconds : 0.0);
  // Per commit, apart from CPU load: what one durable batch (ours) or transaction (SQLite)
  // spends in its system calls, and the wall time per batch / commit.
  std::printf("gpuwarden write() (segment, index, checkpoint): %s\n",
              g_our_write.Summary().c_str());
  std::printf("gpuwarden fdatasync (batches, checkpoints): %s\n", g_our_sync.Summary().c_str());
  std::printf("sqlite xSync (fdatasync): %s\n", g_sqlite_sync.Summary().c_str());
  if (verify_events > 0) {
    Result v = BenchVerify(dir + "/verify", verify_events);
    std::printf("audit verify: %ld events in %.3f s CPU = %.0f events/s (one core)\n", v.events,
                v.seconds, v.rate());
  }
  std::filesystem::remove_all(dir + "/gpuwarden-audit");
  std::filesystem::remove_all(dir + "/sqlite");
  std::filesystem::remove_all(dir + "/verify");
  return 0;
}
