// auth: who is calling. Local accounts (argon2id passwords), login sessions and API tokens.
//
// Request path: http hands the bearer secret to Authenticator::Authenticate, which answers with an
// Identity (or Unauthenticated); rbac then decides what that identity may do. Secrets are opaque
// random strings ("gws_..." sessions, "gwt_..." API tokens); only their SHA-256 hex is stored.
//
// Issue 3: TOTP MFA (enrollment, login with a second factor, step-up that rotates the session,
// admin reset) lives here too; brute-force throttling is a LoginGate (login_throttle.h). OIDC will
// add entry points that end in the same private session issuance.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/master_key.h"
#include "common/rng.h"
#include "store/store.h"

namespace warden::auth {

// ---------------------------------------------------------------------------------------------
// Passwords

// Passwords are 8 to 1024 bytes (any bytes; UTF-8 is not normalised). The upper bound keeps a
// single login from costing more than one argon2 pass over a small input (hashing-DoS).
inline constexpr size_t kMinPasswordBytes = 8;
inline constexpr size_t kMaxPasswordBytes = 1024;

// argon2id cost. The defaults are the OWASP Password Storage Cheat Sheet's first recommendation
// (m=19 MiB, t=2, p=1). Tests lower memory_kib (e.g. 1024) to stay fast; servers keep the default.
struct PasswordHasherOptions {
  uint32_t memory_kib = 19456;
  uint32_t iterations = 2;
  uint32_t parallelism = 1;
};

enum class PasswordVerdict {
  kMismatch,     // wrong password
  kMatch,        // right password, stored parameters at least as strong as current
  kNeedsRehash,  // right password, but stored parameters are below current: rehash and store
};

// Hashes and verifies passwords as PHC strings: $argon2id$v=19$m=..,t=..,p=..$<salt>$<tag>, with a
// 16-byte salt from the injected Rng and a 32-byte tag. Stateless apart from its options;
// thread-safe (the Rng must be). Each call costs one full argon2id evaluation (about 20-40 ms at
// the defaults).
class PasswordHasher {
 public:
  // InvalidArgument when the options are below argon2's minimums (t>=1, p>=1, m>=8*p) or absurd
  // (m > 4 GiB, t > 64, p > 64).
  static absl::StatusOr<PasswordHasher> Create(common::Rng& rng,
                                               PasswordHasherOptions options = {});

  // PHC-encoded argon2id hash of `password` with a fresh salt. InvalidArgument when the password
  // is outside 8-1024 bytes (the message states the rule).
  absl::StatusOr<std::string> Hash(std::string_view password) const;

  // Checks `password` against a stored PHC string, recomputing with the stored parameters (so
  // hashes made with other, stronger parameters still verify) and comparing in constant time.
  // InvalidArgument when `encoded` is not a well-formed argon2id v=19 PHC string or its parameters
  // are out of range (a guard against a planted hash that would cost gigabytes). A password outside
  // the length rule is simply kMismatch (it can never have been set).
  absl::StatusOr<PasswordVerdict> Verify(std::string_view password, std::string_view encoded) const;

  const PasswordHasherOptions& options() const { return options_; }

 private:
  PasswordHasher(common::Rng& rng, PasswordHasherOptions options) : rng_(&rng), options_(options) {}
  common::Rng* rng_;
  PasswordHasherOptions options_;
};

// InvalidArgument (stating the 8-1024 byte rule) unless `password` fits it.
absl::Status ValidatePassword(std::string_view password);

// ---------------------------------------------------------------------------------------------
// Bearer secrets

enum class SecretKind { kSession, kApiToken };

inline constexpr std::string_view kSessionPrefix = "gws_";
inline constexpr std::string_view kApiTokenPrefix = "gwt_";
// prefix + base64url(32 random bytes) without padding = 4 + 43 characters.
inline constexpr size_t kSecretLength = 47;

// A fresh secret: prefix + base64url of 32 bytes (256 bits) from `rng`.
std::string MintSecret(SecretKind kind, common::Rng& rng);

// Classifies a presented secret without touching any store: Unauthenticated "malformed token"
// for a wrong prefix, wrong length, characters outside base64url or non-canonical trailing bits.
// Cost is bounded by kSecretLength whatever the input size.
absl::StatusOr<SecretKind> ParseSecret(std::string_view presented);

// The form in which a secret is stored and looked up: SHA-256 hex.
std::string SecretHash(std::string_view secret);

// ---------------------------------------------------------------------------------------------
// Authenticator

// Who a request is from. For kSession, session_hash is set and the token_* fields are empty; for
// kApiToken, token_id/token_tenant_id/token_role_id are set (the token acts with that role at that
// tenant scope only) and session_hash is empty. user_* always describe the (owning) user.
struct Identity {
  // kIdpToken: a JWT access token of a configured OIDC provider (built by the server's SSO layer;
  // Authenticate never returns it). It acts with its user's bindings, like a session; mfa says
  // whether the token asserts a second factor (amr), and mfa_at stays 0.
  enum class Kind { kSession, kApiToken, kIdpToken };
  Kind kind = Kind::kSession;
  std::string user_id;
  std::string user_name;
  std::string home_tenant_id;  // empty: cluster operator
  std::string session_hash;
  std::string token_id;
  std::string token_tenant_id;  // empty: cluster scope
  std::string token_role_id;
  int64_t expires_at = 0;  // absolute expiry of the session or token (Unix seconds)
  // Sessions: opened with a second factor, and when a second factor was last checked (login or
  // step-up; Unix seconds, 0 never). API tokens: mfa says whether the owner has MFA enabled
  // (mfa_at stays 0, so a token always needs a fresh code for step-up).
  bool mfa = false;
  int64_t mfa_at = 0;
  // kIdpToken: the groups the IdP asserted in this token (its groups claim), matched by `group:`
  // principals of data policies. Sessions and API tokens carry none (no local group concept).
  std::vector<std::string> groups;
};

// The answer Login gives when the password was right but the user has MFA enabled and sent no
// code: the client asks for one and sends password and code again.
inline constexpr std::string_view kMfaRequiredMessage = "MFA code required";

struct LoginAttempt {
  std::string user_name;
  std::string password;
  std::string otp;          // TOTP code or recovery code; empty: none sent
  std::string source_addr;  // client address ("ip:port"), for the LoginGate
};


struct LoginResult {
  std::string token;       // "gws_..."; shown to the client once, never stored
  int64_t expires_at = 0;  // absolute expiry (Unix seconds); idle expiry may come first
  store::User user;        // password_hash cleared
  bool mfa = false;        // the session was opened (or stepped up) with a second factor
};

struct NewApiToken {
  std::string secret;     // "gwt_..."; shown once, never stored
  store::ApiToken token;  // as stored (token_hash is the secret's SHA-256 hex)
};

// A started TOTP enrollment: what the authenticator app needs. Shown once.
struct MfaEnrollment {
  std::string secret_base32;
  std::string otpauth_uri;
};

struct MfaConfirmation {
  std::vector<std::string> recovery_codes;  // plaintext, shown once; only hashes are stored
  LoginResult session;  // the caller's new session (the one used to confirm has ended)
};

struct MfaState {
  bool enrolled = false;   // an enrollment exists (pending or confirmed)
  bool confirmed = false;  // MFA is on: login needs a code
  int64_t recovery_codes_left = 0;
  int64_t confirmed_at = 0;
};

// Seam for brute-force throttling (issue 3). Login calls Admit before looking at the password and
// Record after deciding; a non-OK Admit (e.g. ResourceExhausted) is returned to the caller
// unchanged and no password work is done. Implementations must be thread-safe.
class LoginGate {
 public:
  virtual ~LoginGate() = default;
  virtual absl::Status Admit(std::string_view user_name, std::string_view source_addr) = 0;
  virtual void Record(std::string_view user_name, std::string_view source_addr, bool success) = 0;
};

struct AuthenticatorOptions {
  absl::Duration session_idle = absl::Hours(1);
  absl::Duration session_absolute = absl::Hours(12);
  absl::Duration token_max_ttl = absl::Hours(24 * 365);
  // A session's last_seen is written to the store at most this often (write-behind); between
  // writes the in-memory value is authoritative on this replica.
  absl::Duration last_seen_write_interval = absl::Minutes(1);
  // How long a cached session/token/user state is trusted before it is re-read from the store.
  // Changes made through this Authenticator apply at once; changes made by another replica apply
  // within cache_ttl (the staleness bound): 1 s, so a logout, revocation or disable on one replica
  // reaches every replica sharing the store within a second (one indexed store read per
  // credential per second and replica is the price).
  absl::Duration cache_ttl = absl::Seconds(1);
  size_t cache_max_entries = 100'000;  // 0 disables the cache (every request reads the store)
  // TOTP seeds are sealed under this key (derived from the master key, purpose "totp-seed/v1").
  // Not owned. Without it every MFA operation is FailedPrecondition "MFA is not configured".
  const common::AeadKey* totp_key = nullptr;
  std::string totp_issuer = "gpuwarden";  // shown by authenticator apps
  PasswordHasherOptions hasher;
  LoginGate* login_gate = nullptr;  // not owned; must outlive the Authenticator
};

// Logs users in and authenticates bearer secrets. Holds references to the store, clock and rng
// (all must outlive it) and a bounded in-memory cache of recently seen sessions and tokens, so the
// request path neither writes nor reads the store per request. Thread-safe.
//
// State changes made through these methods (logout, revoke, disable, password change) invalidate
// the affected cache entries before returning: the next Authenticate sees them. Changes made
// elsewhere (another replica, direct store writes) are seen within options.cache_ttl.
class Authenticator {
 public:
  using Options = AuthenticatorOptions;

  // InvalidArgument for non-positive durations or bad hasher options.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(store::Store& store,
                                                               common::Clock& clock,
                                                               common::Rng& rng, Options options);
  virtual ~Authenticator() = default;

  // Verifies the password and opens a new session (a fresh random id every time: session fixation
  // defence). Unauthenticated "invalid user name or password" for an unknown user, a wrong
  // password, a disabled or password-less (SSO-only) user alike, with the same argon2 work in each
  // case. A stored hash below current parameters is upgraded on success. `source_addr` is passed to
  // the LoginGate. Store failures come back as their own status (e.g. Unavailable).
  //
  // With MFA enabled for the user, the password alone is Unauthenticated kMfaRequiredMessage
  // (only once the password was right); attempt.otp then must be a current TOTP code (not used
  // before: Unauthenticated "code already used") or an unused recovery code (spent by this
  // call), else Unauthenticated "invalid MFA code". Such sessions carry mfa = true, mfa_at = now.
  // Every password or code failure is recorded with the LoginGate and counted in
  // warden_login_failures_total{reason}.
  virtual absl::StatusOr<LoginResult> Login(const LoginAttempt& attempt) = 0;
  absl::StatusOr<LoginResult> Login(const std::string& user_name, const std::string& password,
                                    const std::string& source_addr) {
    return Login(LoginAttempt{user_name, password, "", source_addr});
  }

  // Opens a session for a user whose identity was proven elsewhere: single sign-on, after the
  // server verified the IdP's token and mapped it to `user_id`. No password is involved and none
  // is needed (SSO users have none). As with Login: a fresh random session id every time (session
  // fixation), absolute expiry session_absolute from now. `mfa` says whether the login satisfied
  // a second factor (the IdP asserted one); such sessions carry mfa = true, mfa_at = now.
  // NotFound for an unknown user; Unauthenticated "invalid user name or password" for a disabled
  // one (the same answer as a password login of a disabled user).
  virtual absl::StatusOr<LoginResult> OpenSession(const std::string& user_id, bool mfa) = 0;

  // Checks a password like Login (same throttling, same timing, same failure message) without
  // opening a session and without asking for a second factor. For re-authentication of a user who
  // already holds a session (password change).
  virtual absl::Status VerifyPassword(const std::string& user_name, const std::string& password,
                                      const std::string& source_addr) = 0;

  // ---- MFA (TOTP). `who` must be a session (PermissionDenied for API tokens). ----

  // Starts (or restarts, while unconfirmed) an enrollment with a fresh 160-bit seed.
  // FailedPrecondition "MFA is already enabled" when confirmed.
  virtual absl::StatusOr<MfaEnrollment> MfaEnroll(const Identity& who) = 0;
  // Confirms the pending enrollment with a current code: MFA is on from now, 10 recovery codes are
  // issued, every other session of the user ends and the caller's session is replaced by a new one
  // with mfa = true (session ids change whenever a session gains rights). FailedPrecondition when
  // nothing is pending; Unauthenticated "invalid MFA code" for a wrong code.
  virtual absl::StatusOr<MfaConfirmation> MfaConfirm(const Identity& who, const std::string& code,
                                                     const std::string& source_addr) = 0;
  // Turns MFA off; needs a current code or a recovery code. Ends every session of the user.
  virtual absl::Status MfaDisable(const Identity& who, const std::string& code,
                                  const std::string& source_addr) = 0;
  virtual absl::StatusOr<MfaState> GetMfaState(const std::string& user_id) = 0;
  // Admin reset for a user who lost the device: removes the enrollment and its recovery codes and
  // ends every session of the user. Codes from the old seed never work again (a new enrollment
  // gets a new seed). OK if the user had none.
  virtual absl::Status MfaReset(const std::string& user_id) = 0;
  // Step-up: checks a code for the session's user and replaces the session by a new one (new id,
  // same absolute expiry) with mfa_at = now; the old id stops working at once.
  virtual absl::StatusOr<LoginResult> StepUp(const Identity& who, const std::string& code,
                                             const std::string& source_addr) = 0;
  // Checks a code for one request (the X-Warden-OTP header) without changing the session: OK, or
  // Unauthenticated "invalid MFA code" / "code already used", FailedPrecondition when the user
  // has no MFA. Spends the code (a TOTP step or recovery code is accepted once).
  virtual absl::Status CheckSecondFactor(const Identity& who, const std::string& code,
                                         const std::string& source_addr) = 0;

  // Ends the session `token` names. OK if it was already gone (idempotent). Unauthenticated
  // "malformed token" for a malformed secret; InvalidArgument for an API token (revoke those).
  virtual absl::Status Logout(const std::string& token) = 0;
  // Ends every session of the user (API tokens are untouched). OK for a user without sessions.
  virtual absl::Status LogoutEverywhere(const std::string& user_id) = 0;

  // Resolves a bearer secret. Unauthenticated with: "malformed token" (before any store lookup);
  // "session expired" (idle longer than session_idle or past absolute expiry); "token expired";
  // "token revoked"; "invalid token" (unknown, user disabled or deleted). Other codes (Unavailable)
  // mean the store could not be read. Writes the store at most once per last_seen_write_interval
  // per session.
  virtual absl::StatusOr<Identity> Authenticate(std::string_view bearer_token) = 0;

  // Issues an API token for `owner_user_id`, scoped to `tenant_id` (empty: cluster) with `role_id`.
  // The caller (rbac) must already have checked that the requester holds every permission of the
  // role at that scope (escalation prevention); this method does not. InvalidArgument for a bad
  // name or a ttl under 1s or above token_max_ttl; NotFound for an unknown owner;
  // FailedPrecondition for a disabled owner or (from the store) an unknown tenant or role.
  virtual absl::StatusOr<NewApiToken> CreateApiToken(const std::string& owner_user_id,
                                                     const std::string& name,
                                                     const std::string& tenant_id,
                                                     const std::string& role_id,
                                                     absl::Duration ttl) = 0;
  // NotFound for an unknown id. Revoking twice is OK.
  virtual absl::Status RevokeApiToken(const std::string& token_id) = 0;

  // Disables the user, deletes its sessions and stops its API tokens (until EnableUser), in one
  // store transaction. NotFound for an unknown user (nothing changed).
  virtual absl::Status DisableUser(const std::string& user_id) = 0;
  virtual absl::Status EnableUser(const std::string& user_id) = 0;

  // Sets a new password (InvalidArgument per the length rule) and ends every session of the user
  // except `keep_session_hash` (the caller's own session when users change their own password;
  // empty when an admin resets it). API tokens are untouched.
  virtual absl::Status SetPassword(const std::string& user_id, const std::string& new_password,
                                   const std::string& keep_session_hash = {}) = 0;

  // PHC hash for a new account (the caller creates the store::User). InvalidArgument per the rule.
  virtual absl::StatusOr<std::string> HashNewPassword(const std::string& password) = 0;

  // Deletes sessions past their absolute expiry; returns how many. For a periodic sweeper.
  virtual absl::StatusOr<int64_t> SweepExpiredSessions() = 0;
};

}  // namespace warden::auth
