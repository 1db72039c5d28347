#include "agent/warm_pool.h"

#include <iostream>

namespace warden::agent {

WarmPool::WarmPool(runtime::Runner* runner, int per_pair, size_t max_pairs)
    : runner_(runner), per_pair_(per_pair), max_pairs_(max_pairs == 0 ? 1 : max_pairs) {
  if (per_pair_ > 0) thread_ = std::thread([this] { Loop(); });
}

WarmPool::~WarmPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (per_pair_ > 0) runner_->DropPrepared("", "");
}

bool WarmPool::Used(const runtime::SandboxSpec& spec) {
  if (per_pair_ <= 0 || !spec.gpus.empty() || !spec.datasets.empty()) return false;
  std::string drop_tenant, drop_image;
  bool changed = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    changed = recent_.empty() || recent_.front().tenant != spec.tenant || recent_.front().image != spec.image;
    for (auto it = recent_.begin(); it != recent_.end(); ++it) {
      if (it->tenant == spec.tenant && it->image == spec.image) {
        recent_.erase(it);
        break;
      }
    }
    recent_.push_front(spec);
    if (recent_.size() > max_pairs_) {
      drop_tenant = recent_.back().tenant;
      drop_image = recent_.back().image;
      recent_.pop_back();
    }
    todo_.push_back(spec);
  }
  cv_.notify_all();
  if (!drop_tenant.empty()) runner_->DropPrepared(drop_tenant, drop_image);
  return changed;
}

std::vector<std::pair<std::string, std::string>> WarmPool::RecentPairs() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& r : recent_) out.emplace_back(r.tenant, r.image);
  return out;
}

void WarmPool::Loop() {
  for (;;) {
    runtime::SandboxSpec like;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !todo_.empty(); });
      if (stop_) return;
      like = std::move(todo_.front());
      todo_.pop_front();
      bool still_recent = false;
      for (const auto& r : recent_) still_recent = still_recent || (r.tenant == like.tenant && r.image == like.image);
      if (!still_recent) continue;
    }
    while (runner_->PreparedCount(like.tenant, like.image) < per_pair_) {
      absl::Status st = runner_->Prepare(like);
      if (!st.ok()) {
        // Not fatal: that pair's jobs keep starting cold.
        std::cerr << "gpuwarden agent: cannot prepare a sandbox for tenant " << like.tenant << " image " << like.image
                  << ": " << st.message() << "\n";
        break;
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
  }
}

}  // namespace warden::agent
