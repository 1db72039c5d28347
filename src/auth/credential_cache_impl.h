// CredentialCache: the request path's memory of recently authenticated sessions and API tokens,
// keyed by the secret's SHA-256 hex. Private to auth.
//
// Bounded (max_entries in total, split over kShards shards each behind its own mutex, so two
// request threads rarely contend). When a shard is full an arbitrary entry is dropped: every entry
// can be rebuilt from the store, so eviction only costs a store read.
//
// Invalidation vs. concurrent fills: a request that missed the cache reads the store and then
// inserts. If an invalidation (logout, revoke, disable) lands between that read and the insert, the
// insert would resurrect stale state. So every invalidation bumps `epoch_` *after* its store write
// and *before* erasing; a fill remembers the epoch from before its store read and inserts only if
// the epoch is unchanged, checked under the shard lock. Either the fill inserted before the bump
// (then the erase, which takes the same lock later, removes it) or it sees the new epoch and skips.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "absl/time/time.h"
#include "auth/auth.h"

namespace warden::auth::internal {

struct CachedCredential {
  Identity identity;
  int64_t expires_at = 0;    // absolute expiry of the session/token (Unix seconds)
  int64_t last_seen = 0;     // sessions: last activity seen by this replica
  int64_t last_written = 0;  // sessions: the last_seen value known to be in the store
  absl::Time loaded_at;      // trusted until loaded_at + ttl
};

class CredentialCache {
 public:
  static constexpr size_t kShards = 32;

  explicit CredentialCache(size_t max_entries)
      : per_shard_(max_entries == 0 ? 0 : (max_entries + kShards - 1) / kShards) {}

  bool enabled() const { return per_shard_ > 0; }
  uint64_t Epoch() const { return epoch_.load(); }

  // Runs `fn` on the entry for `hash` under its shard's lock and returns what it returns; returns
  // `if_absent` without calling `fn` when there is no entry. `fn` may modify the entry; it returns
  // true to keep it, false to erase it, through `keep`.
  template <typename R, typename Fn>
  R WithEntry(const std::string& hash, R if_absent, Fn&& fn) {
    Shard& shard = ShardFor(hash);
    std::lock_guard lock(shard.mu);
    auto it = shard.map.find(hash);
    if (it == shard.map.end()) return if_absent;
    bool keep = true;
    R result = fn(it->second, keep);
    if (!keep) shard.map.erase(it);
    return result;
  }

  // Inserts (or replaces) unless an invalidation happened since `epoch_before_load`.
  void Put(const std::string& hash, CachedCredential entry, uint64_t epoch_before_load) {
    if (!enabled()) return;
    Shard& shard = ShardFor(hash);
    std::lock_guard lock(shard.mu);
    if (epoch_.load() != epoch_before_load) return;
    auto it = shard.map.find(hash);
    if (it != shard.map.end()) {
      it->second = std::move(entry);
      return;
    }
    if (shard.map.size() >= per_shard_) shard.map.erase(shard.map.begin());
    shard.map.emplace(hash, std::move(entry));
  }

  // Call after the store write that made the entry stale.
  void Invalidate(const std::string& hash) {
    epoch_.fetch_add(1);
    Shard& shard = ShardFor(hash);
    std::lock_guard lock(shard.mu);
    shard.map.erase(hash);
  }

  // Drops every entry of the user (sessions and tokens). O(entries); used only on rare admin
  // actions (disable, password change, logout everywhere).
  void InvalidateUser(const std::string& user_id) {
    epoch_.fetch_add(1);
    for (Shard& shard : shards_) {
      std::lock_guard lock(shard.mu);
      std::erase_if(shard.map,
                    [&](const auto& kv) { return kv.second.identity.user_id == user_id; });
    }
  }

  size_t Size() {
    size_t n = 0;
    for (Shard& shard : shards_) {
      std::lock_guard lock(shard.mu);
      n += shard.map.size();
    }
    return n;
  }

 private:
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, CachedCredential> map;
  };

  Shard& ShardFor(const std::string& hash) {
    return shards_[std::hash<std::string>{}(hash) % kShards];
  }

  const size_t per_shard_;
  std::atomic<uint64_t> epoch_{0};
  std::array<Shard, kShards> shards_;
};

}  // namespace warden::auth::internal
