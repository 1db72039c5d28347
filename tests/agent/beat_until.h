// Heartbeats a JobRunner until a condition holds: its transfers (image, datasets, write-back) run
// on its worker thread, so a test drives beats as the agent's session would.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "agent/job_runner.h"

namespace warden::agent::testing {

inline LogShipper NoLogs() {
  return [](const std::string&, const std::string&, int64_t offset, std::string_view data) {
    return absl::StatusOr<int64_t>(offset + static_cast<int64_t>(data.size()));
  };
}

// Calls `pred` before each beat (it may beat itself, e.g. to look at the report); true once it
// holds, false after ~10 s.
inline bool BeatUntil(JobRunner& runner, const std::function<bool()>& pred) {
  for (int i = 0; i < 1000; ++i) {
    if (pred()) return true;
    (void)runner.BuildReport(NoLogs(), {});
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

}  // namespace warden::agent::testing
