// Test helper for audit_crash_test: opens the audit log in argv[1] and appends from argv[2]
// threads until killed, printing "ACK <seq> <request_id>" for each acknowledged event (one write()
// per line, so a kill never leaves a line the test would misread). Exit code 3 when the log does
// not open (the test prints the message).
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "audit/audit.h"

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  warden::audit::AuditOptions opts;
  opts.dir = argv[1];
  opts.checkpoint_every = 50;
  opts.checkpoint_interval = absl::Milliseconds(5);
  opts.segment_bytes = 16 * 1024;  // many segment switches, so kills land in them too
  auto log = warden::audit::OpenAuditLog(opts, warden::common::RealClock::Get());
  if (!log.ok()) {
    std::fprintf(stderr, "open: %s\n", std::string(log.status().message()).c_str());
    return 3;
  }
  int threads = std::atoi(argv[2]);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (long i = 0;; ++i) {
        warden::audit::AuditEvent e;
        e.request_id = "w" + std::to_string(getpid()) + "-" + std::to_string(t) + "-" + std::to_string(i);
        e.action = "crash:test";
        e.resource = std::string(static_cast<size_t>(50 + (i * 37) % 400), 'r');
        auto seq = (*log)->AppendForSeq(e);
        if (!seq.ok()) {
          std::fprintf(stderr, "append: %s\n", std::string(seq.status().message()).c_str());
          std::_Exit(4);
        }
        std::string line = "ACK " + std::to_string(*seq) + " " + e.request_id + "\n";
        if (::write(1, line.data(), line.size()) != static_cast<ssize_t>(line.size())) std::_Exit(5);
      }
    });
  }
  for (auto& w : workers) w.join();
  return 0;
}
