// LoginThrottle: the brute-force defence behind auth::LoginGate. Exponential back-off keyed three
// ways, chosen so that an attacker cannot lock the real user out (docs/threat-model.md):
//
//   (account, source)  a few free failures, then back-off doubling to max_delay. Stops one
//                      address from guessing one account; touches nobody else.
//   source             more free failures (offices behind one NAT), then back-off. Stops one
//                      address from spraying many accounts (or unknown names).
//   account            a generous budget across all sources (distributed guessing), then a
//                      back-off capped at account_max_delay (seconds, not hours) that applies only
//                      to sources that never logged in to that account successfully. The real
//                      user from a known address is never slowed by it, and from a new address
//                      waits at most account_max_delay: no hard lockout an attacker can trigger.
//
// Sources are IP addresses without the port; IPv6 addresses count per /64 (one host usually owns
// a whole /64). Unknown account names are throttled exactly like real ones, so a refusal says
// nothing about whether the account exists. A refused attempt does no password work and does not
// count as a failure. In the back-off regime Admit reserves the next slot before the password is
// checked, so concurrent requests cannot slip several guesses into one slot.
//
// State is in memory, per replica (N replicas give an attacker at most N times the budget), bounded
// by max_entries per key kind; failures are forgotten after forget_after without a new one.
// Thread-safe (one mutex; every operation is O(1) map work).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "auth/auth.h"
#include "common/clock.h"

namespace warden::auth {

struct LoginThrottleOptions {
  int pair_free_failures = 5;
  int source_free_failures = 20;
  int account_free_failures = 100;
  absl::Duration base_delay = absl::Seconds(1);  // first back-off; doubles per further failure
  absl::Duration max_delay = absl::Minutes(15);
  absl::Duration account_max_delay = absl::Seconds(30);
  absl::Duration forget_after = absl::Hours(1);         // failures expire this long after the last
  absl::Duration known_source_ttl = absl::Hours(24 * 30);  // a successful source stays "known"
  size_t max_entries = 100'000;                         // per key kind
};

class LoginThrottle final : public LoginGate {
 public:
  using Options = LoginThrottleOptions;
  // InvalidArgument for negative counts or non-positive durations.
  static absl::StatusOr<std::unique_ptr<LoginThrottle>> Create(common::Clock& clock,
                                                               Options options = {});
  ~LoginThrottle() override;

  // ResourceExhausted "too many failed login attempts; try again in N s" while any applicable key
  // is backing off. The message is the same whichever key refused and whether or not the account
  // exists.
  absl::Status Admit(std::string_view user_name, std::string_view source_addr) override;
  void Record(std::string_view user_name, std::string_view source_addr, bool success) override;

  // "ip" of "ip:port" / "[v6]:port", IPv6 reduced to its /64 ("2001:db8:1:2::/64"). Exposed for
  // tests. An unparseable address is returned unchanged (it still throttles as one source).
  static std::string SourceKey(std::string_view source_addr);

 private:
  struct State;
  LoginThrottle(common::Clock& clock, Options options);
  common::Clock& clock_;
  const Options options_;
  std::unique_ptr<State> state_;
};

}  // namespace warden::auth
