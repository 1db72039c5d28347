// Cost of the syslog second sink on the durable audit append path (issue 4): 8 writers append
// to two logs on the same disk, one without a sink and one whose durable events go to a
// SyslogSender (a real receiver over TLS), in alternating rounds (ABBA) so both see the same disk.
//
//   syslog_bench DIR --address HOST:PORT --ca FILE [--cert FILE --key FILE]
//                [--server-name NAME] [--writers 8] [--seconds 3] [--rounds 3]
//
// Prints events/s per side and round, the total ratio (sink on / off), and what the sink sent
// and dropped. bench/audit/syslog_run.sh starts a private rsyslogd and runs it.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "audit/audit.h"
#include "audit/syslog_sender.h"
#include "common/clock.h"

namespace {

using warden::audit::AuditEvent;

// Time the audit writer thread spends handing events to the sink (the only cost on its path).
std::atomic<long> g_hook_ns{0}, g_hook_events{0};

AuditEvent MakeEvent(int writer, long i) {
  AuditEvent e;
  e.request_id = "req-" + std::to_string(writer) + "-" + std::to_string(i);
  e.actor_kind = "user";
  e.actor_id = "u-" + std::to_string(writer);
  e.actor_name = "alice";
  e.tenant = "acme";
  e.action = "jobs:create";
  e.method = "POST";
  e.resource = "/api/v1/tenants/acme/jobs";
  e.decision = "allow";
  e.status = 201;
  e.source = "10.0.0.7:51234";
  return e;
}

std::unique_ptr<warden::audit::AuditLog> Open(const std::string& dir,
                                              warden::audit::SyslogSender* sink) {
  std::filesystem::remove_all(dir);
  warden::audit::AuditOptions opts;
  opts.dir = dir;
  if (sink != nullptr) {
    opts.on_durable = [sink](uint64_t first, int64_t time_ms,
                             std::span<const std::string_view> lines) {
      auto t0 = std::chrono::steady_clock::now();
      for (size_t i = 0; i < lines.size(); ++i) sink->Enqueue(first + i, time_ms, lines[i]);
      g_hook_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::steady_clock::now() - t0)
                       .count();
      g_hook_events += static_cast<long>(lines.size());
    };
  }
  auto l = warden::audit::OpenAuditLog(opts, warden::common::RealClock::Get());
  if (!l.ok()) {
    std::fprintf(stderr, "syslog_bench: %s\n", std::string(l.status().message()).c_str());
    std::exit(1);
  }
  return *std::move(l);
}

long Round(warden::audit::AuditLog& log, int writers, double seconds) {
  std::atomic<long> events{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      long i = 0;
      while (!stop.load()) {
        if (!log.Append(MakeEvent(w, i++)).ok()) {
          std::fprintf(stderr, "syslog_bench: an append failed\n");
          std::exit(1);
        }
        events.fetch_add(1);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  return events.load();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: syslog_bench DIR --address HOST:PORT --ca FILE [...]\n");
    return 2;
  }
  std::string dir = argv[1];
  warden::audit::SyslogSenderOptions so;
  so.header = {"bench", "gpuwarden"};
  int writers = 8, rounds = 3;
  double seconds = 3;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--address") so.address = v;
    else if (k == "--ca") so.ca_file = v;
    else if (k == "--cert") so.client_cert = v;
    else if (k == "--key") so.client_key = v;
    else if (k == "--server-name") so.server_name = v;
    else if (k == "--writers") writers = std::atoi(v.c_str());
    else if (k == "--seconds") seconds = std::atof(v.c_str());
    else if (k == "--rounds") rounds = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "syslog_bench: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  auto sender = warden::audit::CreateSyslogSender(so);
  if (!sender.ok()) {
    std::fprintf(stderr, "syslog_bench: %s\n", std::string(sender.status().message()).c_str());
    return 1;
  }
  (*sender)->Start();
  auto off = Open(dir + "/off", nullptr);
  auto on = Open(dir + "/on", sender->get());
  long total_off = 0, total_on = 0;
  for (int r = 0; r < rounds; ++r) {
    // ABBA order: neither side always runs right after the other (disk caches, the receiver's
    // own writes of the previous round).
    long a = 0, b = 0;
    if (r % 2 == 0) {
      a = Round(*off, writers, seconds);
      b = Round(*on, writers, seconds);
    } else {
      b = Round(*on, writers, seconds);
      a = Round(*off, writers, seconds);
    }
    total_off += a;
    total_on += b;
    std::printf("round %d: sink off %.0f events/s, sink on %.0f events/s\n", r + 1, a / seconds,
                b / seconds);
  }
  // Let the sender drain what it queued, then report.
  for (int i = 0; i < 100 && (*sender)->GetStats().queued > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto st = (*sender)->GetStats();
  std::printf("sink off: %.0f events/s\nsink on: %.0f events/s\nratio on/off: %.3f\n",
              total_off / (seconds * rounds), total_on / (seconds * rounds),
              static_cast<double>(total_on) / static_cast<double>(total_off));
  std::printf("sink: %llu of %ld events sent, %llu dropped, %zu still queued, connected %d\n",
              static_cast<unsigned long long>(st.sent), total_on,
              static_cast<unsigned long long>(st.dropped), st.queued, st.connected ? 1 : 0);
  std::printf("writer thread time in the sink hook: %.0f ns per event (%ld events)\n",
              g_hook_events ? static_cast<double>(g_hook_ns) / g_hook_events : 0.0,
              g_hook_events.load());
  (*sender)->Stop();
  return 0;
}
