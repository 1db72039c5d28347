// JobResult: how a job ended. Kept free of Abseil so that the shim, a static executable with no
// shared-library start-up cost, can share it (runtime.h includes this).
#pragma once

#include <cstdint>
#include <string>

namespace warden::runtime {

struct ResourceUsage {
  uint64_t peak_memory_bytes = 0;
  uint64_t cpu_time_usec = 0;
};

struct JobResult {
  int exit_code = -1;   // the process's exit status, or 128 + signal
  int signal = 0;       // the signal that ended it, 0 if it exited
  bool oom_killed = false;      // the kernel's OOM killer killed a process in the job's cgroup
  bool wall_time_exceeded = false;
  bool cancelled = false;
  bool lost = false;    // the shim died before recording the result (exit status unknown)
  ResourceUsage usage;
  std::string error;    // non-empty when the runtime failed to start the job
};

}  // namespace warden::runtime
