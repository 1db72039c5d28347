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
//   returning; other replicas' changes are picked up within cache_ttl.
#include <algorithm>
#include <optional>

#include "auth/auth.h"
#include "auth/credential_cache_impl.h"
#include "common/encoding.h"
#include "common/ids.h"
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
        cache_(options.cache_max_entries) {}

  absl::StatusOr<LoginResult> Login(const std::string& user_name, const std::string& password,
                                    const std::string& source_addr) override {
    if (options_.login_gate != nullptr) {
      WARDEN_RETURN_IF_ERROR(options_.login_gate->Admit(user_name, source_addr));
    }
    auto result = LoginInner(user_name, password);
    if (options_.login_gate != nullptr) {
      options_.login_gate->Record(user_name, source_addr, result.ok());
    }
    return result;
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
  absl::StatusOr<LoginResult> LoginInner(const std::string& user_name,
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
    return IssueSession(*std::move(user));
  }

  // The one place sessions are born. TOTP (step-up after the password) and OIDC (after the IdP's
  // token is verified) will end here too (issue 3).
  absl::StatusOr<LoginResult> IssueSession(store::User user) {
    const int64_t now_s = clock_.NowUnix();
    LoginResult out;
    out.token = MintSecret(SecretKind::kSession, rng_);
    store::Session session;
    session.id_hash = SecretHash(out.token);
    session.user_id = user.id;
    session.created_at = now_s;
    session.last_seen = now_s;
    session.expires_at = now_s + absolute_s_;
    WARDEN_RETURN_IF_ERROR(store_.CreateSession(session));
    out.expires_at = session.expires_at;
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
