// Private to agent: keeps prepared sandboxes (runtime::Runner::Prepare, runtime/README.md
// "Prepared sandboxes") waiting for the (tenant, image) pairs this node ran most recently, so
// their next job skips the container start. Refills happen on a background thread after each
// job start; the pairs beyond the most recent `max_pairs` are dropped. Off (no thread, nothing
// prepared) when per_pair is 0: the agent's --prepared-sandboxes.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "runtime/runtime.h"

namespace warden::agent {

class WarmPool {
 public:
  WarmPool(runtime::Runner* runner, int per_pair, size_t max_pairs);
  ~WarmPool();  // stops the thread and ends every waiting sandbox
  WarmPool(const WarmPool&) = delete;
  WarmPool& operator=(const WarmPool&) = delete;

  // A job shaped like `spec` just started (cold or prepared): keep `per_pair` sandboxes of its
  // (tenant, image) waiting. Jobs with GPUs or datasets always start cold: ignored. True when
  // the recent pairs changed (the pair was not already the most recent one).
  bool Used(const runtime::SandboxSpec& spec);
  // The recent (tenant, image) pairs, most recent first.
  std::vector<std::pair<std::string, std::string>> RecentPairs();

 private:
  void Loop();

  runtime::Runner* runner_;
  const int per_pair_;
  const size_t max_pairs_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::deque<runtime::SandboxSpec> recent_;  // most recent first; one shape per (tenant, image)
  std::deque<runtime::SandboxSpec> todo_;
  std::thread thread_;
};

}  // namespace warden::agent
