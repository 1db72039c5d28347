#include "auth/login_throttle.h"

#include <arpa/inet.h>

#include <algorithm>
#include <mutex>
#include <unordered_map>

#include "common/strings.h"

namespace warden::auth {

namespace {

struct Counter {
  int failures = 0;
  absl::Time last_failure = absl::InfinitePast();
  absl::Time next_allowed = absl::InfinitePast();
};

// Failures beyond `free`: delay = base * 2^(excess - 1), capped.
absl::Duration Delay(int failures, int free, absl::Duration base, absl::Duration cap) {
  const int excess = failures - free;
  if (excess <= 0) return absl::ZeroDuration();
  absl::Duration d = base;
  for (int i = 1; i < excess && d < cap; ++i) d *= 2;
  return std::min(d, cap);
}

}  // namespace

struct LoginThrottle::State {
  std::mutex mu;
  std::unordered_map<std::string, Counter> pairs;     // user \x1f source
  std::unordered_map<std::string, Counter> sources;
  std::unordered_map<std::string, Counter> accounts;
  std::unordered_map<std::string, absl::Time> known;  // user \x1f source -> last success
};

LoginThrottle::LoginThrottle(common::Clock& clock, Options options)
    : clock_(clock), options_(options), state_(std::make_unique<State>()) {}
LoginThrottle::~LoginThrottle() = default;

absl::StatusOr<std::unique_ptr<LoginThrottle>> LoginThrottle::Create(common::Clock& clock,
                                                                     Options options) {
  if (options.pair_free_failures < 0 || options.source_free_failures < 0 ||
      options.account_free_failures < 0) {
    return absl::InvalidArgumentError("login throttle: free failure counts must not be negative");
  }
  for (absl::Duration d : {options.base_delay, options.max_delay, options.account_max_delay,
                           options.forget_after, options.known_source_ttl}) {
    if (d <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("login throttle: durations must be positive");
    }
  }
  if (options.max_entries == 0) {
    return absl::InvalidArgumentError("login throttle: max_entries must be positive");
  }
  return std::unique_ptr<LoginThrottle>(new LoginThrottle(clock, options));
}

std::string LoginThrottle::SourceKey(std::string_view addr) {
  std::string host(addr);
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    host = close == std::string::npos ? host.substr(1) : host.substr(1, close - 1);
  } else if (std::count(host.begin(), host.end(), ':') == 1) {
    host = host.substr(0, host.find(':'));  // IPv4 "a.b.c.d:port"
  }
  in6_addr v6{};
  if (host.find(':') != std::string::npos && ::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    // IPv4-mapped addresses are IPv4 sources.
    static const unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::equal(kMapped, kMapped + 12, v6.s6_addr)) {
      return common::StrCat(v6.s6_addr[12], ".", v6.s6_addr[13], ".", v6.s6_addr[14], ".",
                            v6.s6_addr[15]);
    }
    std::fill(v6.s6_addr + 8, v6.s6_addr + 16, 0);
    char buf[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET6, &v6, buf, sizeof(buf));
    return common::StrCat(buf, "/64");
  }
  return host;
}

namespace {

// The counter for `key`, reset if its failures are older than forget_after. Bounded: a full map
// first drops expired entries, then an arbitrary one (an attacker flooding names loses only the
// state of other flooded names, and the per-source key still holds him).
Counter& Slot(std::unordered_map<std::string, Counter>& map, const std::string& key, absl::Time now,
              const LoginThrottleOptions& o) {
  auto it = map.find(key);
  if (it == map.end()) {
    if (map.size() >= o.max_entries) {
      std::erase_if(map, [&](const auto& kv) {
        return now - kv.second.last_failure > o.forget_after && now >= kv.second.next_allowed;
      });
      if (map.size() >= o.max_entries) map.erase(map.begin());
    }
    it = map.emplace(key, Counter{}).first;
  } else if (now - it->second.last_failure > o.forget_after && now >= it->second.next_allowed) {
    it->second = Counter{};
  }
  return it->second;
}

}  // namespace

absl::Status LoginThrottle::Admit(std::string_view user_name, std::string_view source_addr) {
  const absl::Time now = clock_.Now();
  const std::string source = SourceKey(source_addr);
  const std::string pair = common::StrCat(user_name, "\x1f", source);
  std::lock_guard lock(state_->mu);
  auto known = state_->known.find(pair);
  const bool known_source =
      known != state_->known.end() && now - known->second <= options_.known_source_ttl;

  struct Check {
    Counter* c;
    int free;
    absl::Duration cap;
  };
  Check checks[3] = {
      {&Slot(state_->pairs, pair, now, options_), options_.pair_free_failures, options_.max_delay},
      {&Slot(state_->sources, source, now, options_), options_.source_free_failures,
       options_.max_delay},
      {known_source ? nullptr : &Slot(state_->accounts, std::string(user_name), now, options_),
       options_.account_free_failures, options_.account_max_delay},
  };
  absl::Time until = absl::InfinitePast();
  for (const Check& k : checks) {
    if (k.c != nullptr && now < k.c->next_allowed) until = std::max(until, k.c->next_allowed);
  }
  if (until > now) {
    const int64_t wait = std::max<int64_t>(1, absl::ToInt64Seconds(absl::Ceil(until - now, absl::Seconds(1))));
    return absl::ResourceExhaustedError(
        common::StrCat("too many failed login attempts; try again in ", wait, " s"));
  }
  // Admitted. In the back-off regime, reserve: until Record says how it went, the next attempt on
  // these keys waits as if this one failed.
  for (const Check& k : checks) {
    if (k.c == nullptr || k.c->failures < k.free) continue;
    k.c->next_allowed = now + Delay(k.c->failures + 1, k.free, options_.base_delay, k.cap);
  }
  return absl::OkStatus();
}

void LoginThrottle::Record(std::string_view user_name, std::string_view source_addr,
                           bool success) {
  const absl::Time now = clock_.Now();
  const std::string source = SourceKey(source_addr);
  const std::string pair = common::StrCat(user_name, "\x1f", source);
  std::lock_guard lock(state_->mu);
  if (success) {
    // The pair is proven; the source and account counters are not reset, or an attacker holding
    // one valid account could clear his own source's record, and a victim's success would clear a
    // distributed attacker's account record.
    state_->pairs.erase(pair);
    // Give back the slot Admit reserved on the shared keys: a success is not a failure.
    auto release = [&](std::unordered_map<std::string, Counter>& map, const std::string& key,
                       int free, absl::Duration cap) {
      auto it = map.find(key);
      if (it == map.end()) return;
      it->second.next_allowed =
          it->second.last_failure + Delay(it->second.failures, free, options_.base_delay, cap);
    };
    release(state_->sources, source, options_.source_free_failures, options_.max_delay);
    release(state_->accounts, std::string(user_name), options_.account_free_failures,
            options_.account_max_delay);
    if (state_->known.size() >= options_.max_entries) {
      std::erase_if(state_->known,
                    [&](const auto& kv) { return now - kv.second > options_.known_source_ttl; });
      if (state_->known.size() >= options_.max_entries) state_->known.erase(state_->known.begin());
    }
    state_->known[pair] = now;
    return;
  }
  auto fail = [&](Counter& c, int free, absl::Duration cap) {
    ++c.failures;
    c.last_failure = now;
    c.next_allowed = now + Delay(c.failures, free, options_.base_delay, cap);
  };
  fail(Slot(state_->pairs, pair, now, options_), options_.pair_free_failures, options_.max_delay);
  fail(Slot(state_->sources, source, now, options_), options_.source_free_failures,
       options_.max_delay);
  fail(Slot(state_->accounts, std::string(user_name), now, options_),
       options_.account_free_failures, options_.account_max_delay);
}

}  // namespace warden::auth
