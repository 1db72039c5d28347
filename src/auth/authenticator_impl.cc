// Authenticator over store::Store with an in-memory credential cache (credential_cache_impl.h).
//
// Threats and the answers here:
// - Credential stuffing / user enumeration: one message for every login failure, and the same
//   argon2 work whether or not the user exists (a dummy hash stands in for unknown users).
// - Session fixation: every login mints a new random session secret; nothing a client presents is
//   ever adopted as a session id.
// - Stolen database: only SHA-256 of 256-bit secrets is stored (no offline guessing is feasible
//   at that entropy, so a fast hash is enough), passwords only as argon2id.
// - Garbage bearer tokens: refused by ParseSecret before any cache or store work.
// - Lingering access after disable/logout/revoke: those calls invalidate the cache before
//   returning; other replicas' changes are picked up within cache_ttl (1 s by default).
// - Stolen password: users with MFA need a TOTP code (or a single-use recovery code) too. A code
//   is accepted once: the last accepted time step is advanced with a compare-and-set in the store,
//   so two replicas cannot both accept it. Seeds are sealed (AES-256-GCM, bound to the user id).
// - Session riding after a privilege change: confirming MFA and step-up mint a new session id and
//   delete the old one, so an id captured before the change never carries the new rights.
// - Online guessing: the LoginGate (login_throttle.h) sees every password and code attempt.
#include <algorithm>
#include <optional>

#include "auth/auth.h"
#include "auth/credential_cache_impl.h"
#include "auth/totp.h"
#include "common/encoding.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::auth {
namespace {

using internal::CachedCredential;
using internal::CredentialCache;

constexpr char kLoginFailed[] = "invalid user name or password";
constexpr size_t kMaxUserNameBytes = 256;

absl::Status LoginFailed() { return absl::UnauthenticatedError(kLoginFailed); }
absl::Status InvalidToken() { return absl::UnauthenticatedError("invalid token"); }
absl::Status SessionExpired() { return absl::UnauthenticatedError("session expired"); }
absl::Status InvalidCode() { return absl::UnauthenticatedError("invalid MFA code"); }
absl::Status CodeReplayed() {
  return absl::UnauthenticatedError("code already used; wait for the next code");
}
absl::Status NotConfigured() {
  return absl::FailedPreconditionError("MFA is not configured on this server (no master key)");
}

// warden_login_failures_total{reason}: every refused login, password re-check or second-factor
// check, by why. Alerting (issue 10) watches it for login storms.
common::metrics::CounterFamily& LoginFailures() {
  static auto& family = common::metrics::Registry::Default().AddCounter(
      "warden_login_failures_total",
      "Refused logins and second-factor checks, by reason (invalid_credentials, invalid_otp, "
      "otp_replay, throttled)",
      {"reason"});
  return family;
}
void CountFailure(const absl::Status& s) {
  if (s.ok()) return;
  std::string_view reason;
  const std::string msg(s.message());
  if (absl::IsResourceExhausted(s)) {
    reason = "throttled";
  } else if (!absl::IsUnauthenticated(s) || msg == kMfaRequiredMessage) {
    return;  // store trouble or "send your code": not a failed guess
  } else if (msg == kLoginFailed) {
    reason = "invalid_credentials";
  } else if (msg.starts_with("code already used")) {
    reason = "otp_replay";
  } else {
    reason = "invalid_otp";
  }
  LoginFailures().WithLabels({reason}).Inc();
}

std::string SeedAad(const std::string& user_id) { return common::StrCat("totp-seed/v1:", user_id); }

// A TOTP code is all digits; anything else is tried as a recovery code.
bool LooksLikeTotp(std::string_view code) {
  return !code.empty() && std::all_of(code.begin(), code.end(),
                                      [](char c) { return c >= '0' && c <= '9'; });
}

// Outcome of consulting the cache on the request path.
struct CacheOutcome {
  enum class Kind { kMiss, kHit, kRefused };
  Kind kind = Kind::kMiss;
  Identity identity;             // kHit
  bool write_last_seen = false;  // kHit: this request is the one that refreshes the store
  absl::Status refusal;          // kRefused
  std::optional<int64_t> carried_last_seen;  // kMiss after TTL: activity the store may not have
};

class AuthenticatorImpl final : public Authenticator {
 public:
  AuthenticatorImpl(store::Store& store, common::Clock& clock, common::Rng& rng, Options options,
                    PasswordHasher hasher, std::string dummy_hash)
      : store_(store),
        clock_(clock),
        rng_(rng),
        options_(options),
        hasher_(hasher),
        dummy_hash_(std::move(dummy_hash)),
        idle_s_(absl::ToInt64Seconds(options.session_idle)),
        absolute_s_(absl::ToInt64Seconds(options.session_absolute)),
        write_interval_s_(absl::ToInt64Seconds(options.last_seen_write_interval)),
        verifier_(*TotpVerifier::Create()),
        cache_(options.cache_max_entries) {}

  absl::StatusOr<LoginResult> Login(const LoginAttempt& a) override {
    absl::StatusOr<LoginResult> result = Gated(a.user_name, a.source_addr, [&] {
      return LoginInner(a.user_name, a.password, a.otp);
    });
    CountFailure(result.status());
    return result;
  }

  absl::StatusOr<LoginResult> OpenSession(const std::string& user_id, bool mfa) override {
    WARDEN_ASSIGN_OR_RETURN(store::User user, store_.GetUser(user_id));
    if (user.disabled) return LoginFailed();
    const int64_t now_s = clock_.NowUnix();
    return IssueSession(std::move(user), now_s, now_s + absolute_s_, mfa);
  }

  absl::Status VerifyPassword(const std::string& user_name, const std::string& password,
                              const std::string& source_addr) override {
    absl::StatusOr<store::User> user = Gated(user_name, source_addr, [&] {
      return CheckPassword(user_name, password);
    });
    CountFailure(user.status());
    return user.status();
  }

  // ---- MFA ----

  absl::StatusOr<MfaEnrollment> MfaEnroll(const Identity& who) override {
    WARDEN_RETURN_IF_ERROR(RequireSession(who));
    if (options_.totp_key == nullptr) return NotConfigured();
    TotpSecret secret = TotpSecret::Generate(rng_);
    WARDEN_ASSIGN_OR_RETURN(std::string sealed,
                            options_.totp_key->Seal(secret.bytes(), SeedAad(who.user_id), rng_));
    store::UserMfa m;
    m.user_id = who.user_id;
    m.sealed_secret = common::Base64UrlEncode(sealed);
    m.last_step = kNoTotpStepUsed;
    m.created_at = clock_.NowUnix();
    WARDEN_RETURN_IF_ERROR(store_.PutPendingMfa(m));
    MfaEnrollment out;
    out.secret_base32 = secret.Base32();
    WARDEN_ASSIGN_OR_RETURN(out.otpauth_uri,
                            OtpauthUri(options_.totp_issuer, who.user_name, secret));
    return out;
  }

  absl::StatusOr<MfaConfirmation> MfaConfirm(const Identity& who, const std::string& code,
                                             const std::string& source_addr) override {
    WARDEN_RETURN_IF_ERROR(RequireSession(who));
    if (options_.totp_key == nullptr) return NotConfigured();
    auto result = Gated(who.user_name, source_addr, [&]() -> absl::StatusOr<MfaConfirmation> {
      auto m = store_.GetUserMfa(who.user_id);
      if (absl::IsNotFound(m.status())) {
        return absl::FailedPreconditionError("no MFA enrollment to confirm; run mfa enroll first");
      }
      if (!m.ok()) return m.status();
      if (m->confirmed) return absl::FailedPreconditionError("MFA is already enabled");
      WARDEN_ASSIGN_OR_RETURN(TotpSecret secret, OpenSeed(*m));
      if (!LooksLikeTotp(code)) return InvalidCode();
      auto step = verifier_.Verify(secret, code, m->last_step, clock_.Now());
      if (!step.ok()) return MapVerifyError(step.status());
      RecoveryCodes codes = GenerateRecoveryCodes(rng_);
      MfaConfirmation out;
      WARDEN_RETURN_IF_ERROR(store_.InTransaction([&]() -> absl::Status {
        absl::Status s = store_.ConfirmMfa(who.user_id, *step, clock_.NowUnix(), codes.hashes);
        if (absl::IsAborted(s)) return CodeReplayed();
        WARDEN_RETURN_IF_ERROR(s);
        // Sessions opened with the password alone end; the caller continues in a new one.
        WARDEN_RETURN_IF_ERROR(store_.DeleteUserSessions(who.user_id));
        WARDEN_ASSIGN_OR_RETURN(store::User user, store_.GetUser(who.user_id));
        const int64_t now_s = clock_.NowUnix();
        WARDEN_ASSIGN_OR_RETURN(out.session, IssueSession(std::move(user), now_s, now_s + absolute_s_,
                                                          /*mfa=*/true));
        return absl::OkStatus();
      }));
      cache_.InvalidateUser(who.user_id);
      out.recovery_codes = std::move(codes.codes);
      return out;
    });
    CountFailure(result.status());
    return result;
  }

  absl::Status MfaDisable(const Identity& who, const std::string& code,
                          const std::string& source_addr) override {
    WARDEN_RETURN_IF_ERROR(RequireSession(who));
    WARDEN_RETURN_IF_ERROR(CheckSecondFactor(who, code, source_addr));
    WARDEN_RETURN_IF_ERROR(store_.InTransaction([&]() -> absl::Status {
      WARDEN_RETURN_IF_ERROR(store_.DeleteUserMfa(who.user_id));
      return store_.DeleteUserSessions(who.user_id);
    }));
    cache_.InvalidateUser(who.user_id);
    return absl::OkStatus();
  }

  absl::StatusOr<MfaState> GetMfaState(const std::string& user_id) override {
    MfaState out;
    auto m = store_.GetUserMfa(user_id);
    if (absl::IsNotFound(m.status())) return out;
    if (!m.ok()) return m.status();
    out.enrolled = true;
    out.confirmed = m->confirmed;
    out.confirmed_at = m->confirmed_at;
    WARDEN_ASSIGN_OR_RETURN(out.recovery_codes_left, store_.CountRecoveryCodes(user_id));
    return out;
  }

  absl::Status MfaReset(const std::string& user_id) override {
    WARDEN_RETURN_IF_ERROR(store_.GetUser(user_id).status());
    WARDEN_RETURN_IF_ERROR(store_.InTransaction([&]() -> absl::Status {
      WARDEN_RETURN_IF_ERROR(store_.DeleteUserMfa(user_id));
      return store_.DeleteUserSessions(user_id);
    }));
    cache_.InvalidateUser(user_id);
    return absl::OkStatus();
  }

  absl::StatusOr<LoginResult> StepUp(const Identity& who, const std::string& code,
                                     const std::string& source_addr) override {
    WARDEN_RETURN_IF_ERROR(RequireSession(who));
    WARDEN_RETURN_IF_ERROR(CheckSecondFactor(who, code, source_addr));
    LoginResult out;
    WARDEN_RETURN_IF_ERROR(store_.InTransaction([&]() -> absl::Status {
      auto old = store_.GetSession(who.session_hash);
      if (absl::IsNotFound(old.status())) return InvalidToken();
      WARDEN_RETURN_IF_ERROR(old.status());
      WARDEN_RETURN_IF_ERROR(store_.DeleteSession(who.session_hash));
      WARDEN_ASSIGN_OR_RETURN(store::User user, store_.GetUser(who.user_id));
      // The new session keeps the old one's start and absolute expiry: step-up proves presence,
      // it does not extend how long a login lasts.
      WARDEN_ASSIGN_OR_RETURN(out, IssueSession(std::move(user), old->created_at, old->expires_at,
                                                /*mfa=*/true));
      return absl::OkStatus();
    }));
    cache_.Invalidate(who.session_hash);
    return out;
  }

  absl::Status CheckSecondFactor(const Identity& who, const std::string& code,
                                 const std::string& source_addr) override {
    if (options_.totp_key == nullptr) return NotConfigured();
    absl::StatusOr<bool> r = Gated(who.user_name, source_addr, [&]() -> absl::StatusOr<bool> {
      auto m = store_.GetUserMfa(who.user_id);
      if (absl::IsNotFound(m.status()) || (m.ok() && !m->confirmed)) {
        return absl::FailedPreconditionError("MFA is not enabled for this user; run mfa enroll");
      }
      if (!m.ok()) return m.status();
      WARDEN_RETURN_IF_ERROR(SpendSecondFactor(*m, code));
      return true;
    });
    CountFailure(r.status());
    return r.status();
  }

  absl::Status Logout(const std::string& token) override {
    WARDEN_ASSIGN_OR_RETURN(SecretKind kind, ParseSecret(token));
    if (kind != SecretKind::kSession) {
      return absl::InvalidArgumentError("logout takes a session token; revoke API tokens instead");
    }
    const std::string hash = SecretHash(token);
    absl::Status s = store_.DeleteSession(hash);
    if (!s.ok() && !absl::IsNotFound(s)) return s;
    cache_.Invalidate(hash);
    return absl::OkStatus();
  }

  absl::Status LogoutEverywhere(const std::string& user_id) override {
    WARDEN_RETURN_IF_ERROR(store_.DeleteUserSessions(user_id));
    cache_.InvalidateUser(user_id);
    return absl::OkStatus();
  }

  absl::StatusOr<Identity> Authenticate(std::string_view bearer_token) override {
    WARDEN_ASSIGN_OR_RETURN(SecretKind kind, ParseSecret(bearer_token));
    const std::string hash = SecretHash(bearer_token);
    const absl::Time now = clock_.Now();
    const int64_t now_s = absl::ToUnixSeconds(now);

    CacheOutcome outcome = cache_.WithEntry(
        hash, CacheOutcome{},
        [&](CachedCredential& e, bool& keep) { return CheckCached(e, kind, now, now_s, keep); });
    switch (outcome.kind) {
      case CacheOutcome::Kind::kRefused:
        return outcome.refusal;
      case CacheOutcome::Kind::kHit:
        if (outcome.write_last_seen) {
          // Write-behind of last_seen, outside any cache lock. NotFound means another replica
          // deleted the session (logout, disable): honour that now rather than after cache_ttl.
          absl::Status s = store_.TouchSession(hash, now_s);
          if (absl::IsNotFound(s)) {
            cache_.Invalidate(hash);
            return InvalidToken();
          }
          // Other failures (store briefly unavailable) do not fail the request; the next
          // request after the interval tries again.
        }
        return std::move(outcome.identity);
      case CacheOutcome::Kind::kMiss:
        break;
    }
    return kind == SecretKind::kSession ? LoadSession(hash, now, now_s, outcome.carried_last_seen)
                                        : LoadApiToken(hash, now, now_s);
  }

  absl::StatusOr<NewApiToken> CreateApiToken(const std::string& owner_user_id,
                                             const std::string& name, const std::string& tenant_id,
                                             const std::string& role_id,
                                             absl::Duration ttl) override {
    WARDEN_RETURN_IF_ERROR(common::ValidateName("token name", name));
    if (ttl < absl::Seconds(1)) {
      return absl::InvalidArgumentError("token ttl must be at least 1s");
    }
    if (ttl > options_.token_max_ttl) {
      return absl::InvalidArgumentError(common::StrCat(
          "token ttl exceeds the maximum of ", absl::ToInt64Seconds(options_.token_max_ttl), "s"));
    }
    WARDEN_ASSIGN_OR_RETURN(store::User owner, store_.GetUser(owner_user_id));
    if (owner.disabled) {
      return absl::FailedPreconditionError("cannot issue a token to a disabled user");
    }
    const int64_t now_s = clock_.NowUnix();
    NewApiToken out;
    out.secret = MintSecret(SecretKind::kApiToken, rng_);
    out.token.id = common::NewId(rng_, "tok");
    out.token.name = name;
    out.token.token_hash = SecretHash(out.secret);
    out.token.user_id = owner_user_id;
    out.token.tenant_id = tenant_id;
    out.token.role_id = role_id;
    out.token.created_at = now_s;
    out.token.expires_at = now_s + absl::ToInt64Seconds(ttl);
    out.token.revoked = false;
    WARDEN_RETURN_IF_ERROR(store_.CreateToken(out.token));
    return out;
  }

  absl::Status RevokeApiToken(const std::string& token_id) override {
    WARDEN_ASSIGN_OR_RETURN(store::ApiToken token, store_.GetToken(token_id));
    WARDEN_RETURN_IF_ERROR(store_.RevokeToken(token_id));
    cache_.Invalidate(token.token_hash);
    return absl::OkStatus();
  }

  absl::Status DisableUser(const std::string& user_id) override {
    WARDEN_RETURN_IF_ERROR(store_.InTransaction([&]() -> absl::Status {
      WARDEN_RETURN_IF_ERROR(store_.SetUserDisabled(user_id, true));
      return store_.DeleteUserSessions(user_id);
    }));
    cache_.InvalidateUser(user_id);
    return absl::OkStatus();
  }

  absl::Status EnableUser(const std::string& user_id) override {
    WARDEN_RETURN_IF_ERROR(store_.SetUserDisabled(user_id, false));
    cache_.InvalidateUser(user_id);
    return absl::OkStatus();
  }

  absl::Status SetPassword(const std::string& user_id, const std::string& new_password,
                           const std::string& keep_session_hash) override {
    WARDEN_ASSIGN_OR_RETURN(std::string hash, hasher_.Hash(new_password));
    WARDEN_RETURN_IF_ERROR(store_.InTransaction([&]() -> absl::Status {
      WARDEN_RETURN_IF_ERROR(store_.SetUserPassword(user_id, hash));
      // The store has no "delete all but one"; keep the caller's session by re-creating it inside
      // the same transaction. A keep hash of someone else's session is ignored.
      std::optional<store::Session> kept;
      if (!keep_session_hash.empty()) {
        auto s = store_.GetSession(keep_session_hash);
        if (s.ok() && s->user_id == user_id)
          kept = *s;
        else if (!s.ok() && !absl::IsNotFound(s.status()))
          return s.status();
      }
      WARDEN_RETURN_IF_ERROR(store_.DeleteUserSessions(user_id));
      if (kept) WARDEN_RETURN_IF_ERROR(store_.CreateSession(*kept));
      return absl::OkStatus();
    }));
    cache_.InvalidateUser(user_id);
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> HashNewPassword(const std::string& password) override {
    return hasher_.Hash(password);
  }

  absl::StatusOr<int64_t> SweepExpiredSessions() override {
    return store_.DeleteExpiredSessions(clock_.NowUnix());
  }

 private:
  // Runs `fn` between the LoginGate's Admit and Record. Only guesses count as failures: a store
  // error, or "send your code", is neither success nor failure.
  template <typename Fn>
  auto Gated(std::string_view user_name, std::string_view source_addr, Fn&& fn) -> decltype(fn()) {
    LoginGate* gate = options_.login_gate;
    if (gate != nullptr) WARDEN_RETURN_IF_ERROR(gate->Admit(user_name, source_addr));
    auto result = fn();
    if (gate != nullptr) {
      const absl::Status& s = result.status();
      const bool guess_failed = absl::IsUnauthenticated(s) && std::string(s.message()) != kMfaRequiredMessage;
      if (s.ok() || guess_failed) gate->Record(user_name, source_addr, s.ok());
    }
    return result;
  }

  absl::StatusOr<store::User> CheckPassword(const std::string& user_name,
                                            const std::string& password) {
    // Lengths outside the rules are refused without hashing: the sender already knows its own
    // input's length, so this reveals nothing about the account, and it caps the cost per attempt.
    if (user_name.empty() || user_name.size() > kMaxUserNameBytes ||
        !ValidatePassword(password).ok()) {
      return LoginFailed();
    }
    auto user = store_.GetUserByName(user_name);
    if (!user.ok() && !absl::IsNotFound(user.status())) return user.status();
    // Unknown and SSO-only users verify against the dummy hash so that timing does not tell them
    // apart from a known user with a wrong password.
    const bool have_hash = user.ok() && !user->password_hash.empty();
    auto verdict = hasher_.Verify(password, have_hash ? user->password_hash : dummy_hash_);
    if (!verdict.ok()) {
      // A corrupt stored hash: burn the same time anyway, then fail like any other login.
      (void)hasher_.Verify(password, dummy_hash_);
      return LoginFailed();
    }
    if (!have_hash || *verdict == PasswordVerdict::kMismatch || user->disabled) {
      return LoginFailed();
    }
    if (*verdict == PasswordVerdict::kNeedsRehash) {
      // Upgrade to current parameters while we hold the plaintext; failure is not fatal (the old
      // hash still verifies and the next login retries).
      if (auto rehashed = hasher_.Hash(password); rehashed.ok()) {
        (void)store_.SetUserPassword(user->id, *rehashed);
      }
    }
    return user;
  }

  absl::StatusOr<LoginResult> LoginInner(const std::string& user_name, const std::string& password,
                                         const std::string& otp) {
    WARDEN_ASSIGN_OR_RETURN(store::User user, CheckPassword(user_name, password));
    auto m = store_.GetUserMfa(user.id);
    if (!m.ok() && !absl::IsNotFound(m.status())) return m.status();
    const bool mfa_on = m.ok() && m->confirmed;
    const int64_t now_s = clock_.NowUnix();
    if (mfa_on) {
      if (otp.empty()) return absl::UnauthenticatedError(std::string(kMfaRequiredMessage));
      if (options_.totp_key == nullptr) return NotConfigured();
      WARDEN_RETURN_IF_ERROR(SpendSecondFactor(*m, otp));
    }
    return IssueSession(std::move(user), now_s, now_s + absolute_s_, mfa_on);
  }

  static absl::Status RequireSession(const Identity& who) {
    if (who.kind != Identity::Kind::kSession) {
      return absl::PermissionDeniedError("MFA is managed from a login session, not an API token");
    }
    return absl::OkStatus();
  }

  absl::StatusOr<TotpSecret> OpenSeed(const store::UserMfa& m) {
    if (options_.totp_key == nullptr) return NotConfigured();
    auto sealed = common::Base64UrlDecode(m.sealed_secret);
    if (!sealed) return absl::DataLossError("stored TOTP seed is not base64url");
    auto seed = options_.totp_key->Open(*sealed, SeedAad(m.user_id));
    if (!seed.ok()) {
      return absl::DataLossError(common::StrCat("stored TOTP seed of user \"", m.user_id,
                                                "\" cannot be opened with this master key: ",
                                                std::string(seed.status().message())));
    }
    return TotpSecret::FromBytes(*seed);
  }

  static absl::Status MapVerifyError(const absl::Status& s) {
    if (absl::IsInvalidArgument(s)) return InvalidCode();  // not N digits
    if (absl::IsUnauthenticated(s)) {
      return std::string(s.message()).starts_with("code already used") ? CodeReplayed()
                                                                         : InvalidCode();
    }
    return s;
  }

  // Accepts a TOTP code (advancing the replay guard with a compare-and-set, so a code works once
  // across all replicas) or a recovery code (deleted as it is used) of a confirmed enrollment.
  absl::Status SpendSecondFactor(const store::UserMfa& m, const std::string& code) {
    if (LooksLikeTotp(code)) {
      WARDEN_ASSIGN_OR_RETURN(TotpSecret secret, OpenSeed(m));
      auto step = verifier_.Verify(secret, code, m.last_step, clock_.Now());
      if (!step.ok()) return MapVerifyError(step.status());
      absl::Status s = store_.AdvanceMfaStep(m.user_id, *step);
      if (absl::IsAborted(s) || absl::IsNotFound(s)) return CodeReplayed();
      return s;
    }
    auto normal = NormalizeRecoveryCode(code);
    if (!normal.ok()) return InvalidCode();
    absl::Status s = store_.ConsumeRecoveryCode(m.user_id, common::Sha256Hex(*normal));
    if (absl::IsNotFound(s)) return InvalidCode();
    return s;
  }

  // The one place sessions are born: password login, MFA confirmation, step-up, and single
  // sign-on (OpenSession, after the IdP's token was verified).
  absl::StatusOr<LoginResult> IssueSession(store::User user, int64_t created_at,
                                           int64_t expires_at, bool mfa) {
    const int64_t now_s = clock_.NowUnix();
    LoginResult out;
    out.token = MintSecret(SecretKind::kSession, rng_);
    store::Session session;
    session.id_hash = SecretHash(out.token);
    session.user_id = user.id;
    session.created_at = created_at;
    session.last_seen = now_s;
    session.expires_at = expires_at;
    session.mfa = mfa;
    session.mfa_at = mfa ? now_s : 0;
    WARDEN_RETURN_IF_ERROR(store_.CreateSession(session));
    out.expires_at = session.expires_at;
    out.mfa = mfa;
    user.password_hash.clear();
    out.user = std::move(user);
    return out;
  }

  // Runs under the entry's shard lock: no store calls here.
  CacheOutcome CheckCached(CachedCredential& e, SecretKind kind, absl::Time now, int64_t now_s,
                           bool& keep) {
    CacheOutcome out;
    if (now - e.loaded_at >= options_.cache_ttl || now < e.loaded_at) {
      // Stale: re-read the store, but keep the activity this replica saw.
      if (kind == SecretKind::kSession) out.carried_last_seen = e.last_seen;
      keep = false;
      return out;
    }
    const bool is_session = e.identity.kind == Identity::Kind::kSession;
    if (is_session != (kind == SecretKind::kSession)) {  // cannot happen: prefixes differ
      keep = false;
      return out;
    }
    if (is_session) {
      if (now_s >= e.expires_at || now_s - e.last_seen > idle_s_) {
        keep = false;
        out.kind = CacheOutcome::Kind::kRefused;
        out.refusal = SessionExpired();
        return out;
      }
      e.last_seen = std::max(e.last_seen, now_s);
      if (now_s - e.last_written >= write_interval_s_) {
        e.last_written = now_s;
        out.write_last_seen = true;
      }
    } else if (now_s >= e.expires_at) {
      keep = false;
      out.kind = CacheOutcome::Kind::kRefused;
      out.refusal = absl::UnauthenticatedError("token expired");
      return out;
    }
    out.kind = CacheOutcome::Kind::kHit;
    out.identity = e.identity;
    return out;
  }

  absl::StatusOr<Identity> LoadSession(const std::string& hash, absl::Time now, int64_t now_s,
                                       std::optional<int64_t> carried_last_seen) {
    const uint64_t epoch = cache_.Epoch();
    auto session = store_.GetSession(hash);
    if (absl::IsNotFound(session.status())) return InvalidToken();
    if (!session.ok()) return session.status();
    const int64_t last_seen = std::max(session->last_seen, carried_last_seen.value_or(0));
    if (now_s >= session->expires_at || now_s - last_seen > idle_s_) {
      // Expired sessions are useless; drop them now instead of waiting for the sweeper (which only
      // knows about absolute expiry). Best effort.
      (void)store_.DeleteSession(hash);
      return SessionExpired();
    }
    auto user = store_.GetUser(session->user_id);
    if (absl::IsNotFound(user.status())) return InvalidToken();
    if (!user.ok()) return user.status();
    if (user->disabled) return InvalidToken();

    CachedCredential e;
    e.identity.kind = Identity::Kind::kSession;
    e.identity.user_id = user->id;
    e.identity.user_name = user->name;
    e.identity.home_tenant_id = user->tenant_id;
    e.identity.session_hash = hash;
    e.identity.expires_at = session->expires_at;
    e.identity.mfa = session->mfa;
    e.identity.mfa_at = session->mfa_at;
    e.expires_at = session->expires_at;
    e.last_seen = now_s;
    e.last_written = session->last_seen;
    e.loaded_at = now;
    if (now_s - session->last_seen >= write_interval_s_) {
      absl::Status s = store_.TouchSession(hash, now_s);
      if (absl::IsNotFound(s)) return InvalidToken();
      if (s.ok()) e.last_written = now_s;
    }
    Identity identity = e.identity;
    cache_.Put(hash, std::move(e), epoch);
    return identity;
  }

  absl::StatusOr<Identity> LoadApiToken(const std::string& hash, absl::Time now, int64_t now_s) {
    const uint64_t epoch = cache_.Epoch();
    auto token = store_.GetTokenByHash(hash);
    if (absl::IsNotFound(token.status())) return InvalidToken();
    if (!token.ok()) return token.status();
    if (token->revoked) return absl::UnauthenticatedError("token revoked");
    if (now_s >= token->expires_at) return absl::UnauthenticatedError("token expired");
    auto user = store_.GetUser(token->user_id);
    if (absl::IsNotFound(user.status())) return InvalidToken();
    if (!user.ok()) return user.status();
    if (user->disabled) return InvalidToken();

    CachedCredential e;
    e.identity.kind = Identity::Kind::kApiToken;
    e.identity.user_id = user->id;
    e.identity.user_name = user->name;
    e.identity.home_tenant_id = user->tenant_id;
    e.identity.token_id = token->id;
    e.identity.token_tenant_id = token->tenant_id;
    e.identity.token_role_id = token->role_id;
    e.identity.expires_at = token->expires_at;
    // Whether the owner has MFA on: the MFA policy refuses administrative use of a token whose
    // owner has not enrolled, exactly as for the owner's sessions.
    auto owner_mfa = store_.GetUserMfa(user->id);
    if (!owner_mfa.ok() && !absl::IsNotFound(owner_mfa.status())) return owner_mfa.status();
    e.identity.mfa = owner_mfa.ok() && owner_mfa->confirmed;
    e.expires_at = token->expires_at;
    e.loaded_at = now;
    Identity identity = e.identity;
    cache_.Put(hash, std::move(e), epoch);
    return identity;
  }

  store::Store& store_;
  common::Clock& clock_;
  common::Rng& rng_;
  const Options options_;
  const PasswordHasher hasher_;
  const std::string dummy_hash_;
  const int64_t idle_s_;
  const int64_t absolute_s_;
  const int64_t write_interval_s_;
  const TotpVerifier verifier_;
  CredentialCache cache_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(store::Store& store,
                                                                     common::Clock& clock,
                                                                     common::Rng& rng,
                                                                     Options options) {
  auto positive = [](absl::Duration d, std::string_view what) -> absl::Status {
    if (d < absl::Seconds(1)) {
      return absl::InvalidArgumentError(common::StrCat(what, " must be at least 1s"));
    }
    return absl::OkStatus();
  };
  WARDEN_RETURN_IF_ERROR(positive(options.session_idle, "session_idle"));
  WARDEN_RETURN_IF_ERROR(positive(options.session_absolute, "session_absolute"));
  WARDEN_RETURN_IF_ERROR(positive(options.token_max_ttl, "token_max_ttl"));
  WARDEN_RETURN_IF_ERROR(positive(options.last_seen_write_interval, "last_seen_write_interval"));
  if (options.cache_ttl < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("cache_ttl must not be negative");
  }
  WARDEN_ASSIGN_OR_RETURN(PasswordHasher hasher, PasswordHasher::Create(rng, options.hasher));
  // The stand-in for users without a usable hash; its password is random and thrown away, so
  // nothing verifies against it. Made with current parameters so it costs what real users cost.
  WARDEN_ASSIGN_OR_RETURN(std::string dummy, hasher.Hash(common::Base64UrlEncode(rng.Bytes(32))));
  return std::unique_ptr<Authenticator>(
      new AuthenticatorImpl(store, clock, rng, options, hasher, std::move(dummy)));
}

}  // namespace warden::auth
