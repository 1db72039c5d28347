// SqlStore: the one repository layer over SqlDb, shared by both backends. Every write runs in a
// transaction (a savepoint when the caller already holds one), so a failed call leaves nothing
// behind and the PostgreSQL backend may safely re-run statements outside transactions after a
// reconnect (postgres_db.cc).
#include <string_view>

#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"
#include "store/migrations.h"
#include "store/sql_db.h"
#include "store/store.h"

namespace warden::store {
namespace {

using common::StrCat;
using internal::NullIfEmpty;
using internal::Param;
using internal::Params;
using internal::Row;
using internal::Rows;
using internal::SqlDb;

// Keeps the code, replaces the driver's text with one that names the thing in our terms.
absl::Status Reword(const absl::Status& s, absl::StatusCode code, std::string message) {
  if (s.code() != code) return s;
  return absl::Status(code, std::move(message));
}

absl::Status RequireNonEmpty(std::string_view what, const std::string& value) {
  if (value.empty()) return absl::InvalidArgumentError(StrCat(what, " must not be empty"));
  return absl::OkStatus();
}

absl::StatusOr<std::string> EncodePermissions(const std::vector<std::string>& permissions) {
  for (const auto& p : permissions) {
    // Checked here so the JSON encoder below never sees invalid UTF-8 (it would throw).
    if (auto s = internal::ValidateText(p); !s.ok()) {
      return absl::InvalidArgumentError(
          StrCat("role permission: ", std::string(s.message())));
    }
  }
  try {
    return common::Json(permissions).dump();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(StrCat("role permissions: ", e.what()));
  }
}

absl::StatusOr<std::vector<std::string>> DecodePermissions(const std::string& text) {
  auto json = common::Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_array()) {
    return absl::DataLossError("store: role permissions column is not a JSON array");
  }
  std::vector<std::string> out;
  for (const auto& p : json) {
    if (!p.is_string()) {
      return absl::DataLossError("store: role permissions column holds a non-string");
    }
    out.push_back(p.get<std::string>());
  }
  return out;
}

constexpr std::string_view kTenantCols = "id, name, created_at";
constexpr std::string_view kUserCols = "id, name, tenant_id, password_hash, disabled, created_at";
constexpr std::string_view kSessionCols =
    "id_hash, user_id, created_at, last_seen, expires_at, mfa, mfa_at";
constexpr std::string_view kMfaCols =
    "user_id, sealed_secret, confirmed, last_step, created_at, confirmed_at";
constexpr std::string_view kTokenCols =
    "id, name, token_hash, user_id, tenant_id, role_id, created_at, expires_at, revoked";
constexpr std::string_view kRoleCols = "id, name, tenant_id, permissions, builtin, created_at";
constexpr std::string_view kExternalIdentityCols =
    "provider, subject, user_id, email, created_at, last_login_at";
constexpr std::string_view kVaultShareCols =
    "id, owner_tenant_id, name, is_prefix, target_tenant_id, state, offered_by, offered_at,"
    " decided_by, decided_at, revoked_by, revoked_at";

// One column into a field, by the field's type: text, integer, or a 0/1 flag.
absl::Status Cell(const Row& r, size_t i, std::string& out) {
  out = r.String(i);
  return absl::OkStatus();
}
absl::Status Cell(const Row& r, size_t i, int64_t& out) {
  WARDEN_ASSIGN_OR_RETURN(out, r.Int(i));
  return absl::OkStatus();
}
absl::Status Cell(const Row& r, size_t i, bool& out) {
  WARDEN_ASSIGN_OR_RETURN(int64_t v, r.Int(i));
  out = v != 0;
  return absl::OkStatus();
}

// A new T from the row's columns 0, 1, ... into `fields`, in that order: the k*Cols lists name
// the columns in the same order as each decoder's fields.
template <typename T, typename... F>
absl::StatusOr<T> Decode(const Row& r, F T::*... fields) {
  T out;
  size_t i = 0;
  absl::Status s;
  ((s = s.ok() ? Cell(r, i++, out.*fields) : s), ...);
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<VaultShare> ToVaultShare(const Row& r) {
  using V = VaultShare;
  return Decode(r, &V::id, &V::owner_tenant_id, &V::name, &V::is_prefix, &V::target_tenant_id,
                &V::state, &V::offered_by, &V::offered_at, &V::decided_by, &V::decided_at,
                &V::revoked_by, &V::revoked_at);
}

constexpr std::string_view kBindingCols =
    "id, subject_kind, subject_id, role_id, scope_tenant_id, created_at";

absl::StatusOr<ExternalIdentity> ToExternalIdentity(const Row& r) {
  using X = ExternalIdentity;
  return Decode(r, &X::provider, &X::subject, &X::user_id, &X::email, &X::created_at,
                &X::last_login_at);
}

absl::StatusOr<Tenant> ToTenant(const Row& r) {
  return Decode(r, &Tenant::id, &Tenant::name, &Tenant::created_at);
}

absl::StatusOr<User> ToUser(const Row& r) {
  return Decode(r, &User::id, &User::name, &User::tenant_id, &User::password_hash, &User::disabled,
                &User::created_at);
}

absl::StatusOr<Session> ToSession(const Row& r) {
  using S = Session;
  return Decode(r, &S::id_hash, &S::user_id, &S::created_at, &S::last_seen, &S::expires_at,
                &S::mfa, &S::mfa_at);
}

absl::StatusOr<UserMfa> ToUserMfa(const Row& r) {
  using M = UserMfa;
  return Decode(r, &M::user_id, &M::sealed_secret, &M::confirmed, &M::last_step, &M::created_at,
                &M::confirmed_at);
}

absl::StatusOr<ApiToken> ToToken(const Row& r) {
  using T = ApiToken;
  return Decode(r, &T::id, &T::name, &T::token_hash, &T::user_id, &T::tenant_id, &T::role_id,
                &T::created_at, &T::expires_at, &T::revoked);
}

absl::StatusOr<Role> ToRole(const Row& r) {
  // Column 3 (permissions) is JSON: decoded on its own after the plain columns.
  Role role;
  role.id = r.String(0);
  role.name = r.String(1);
  role.tenant_id = r.String(2);
  WARDEN_ASSIGN_OR_RETURN(role.permissions, DecodePermissions(r.String(3)));
  WARDEN_RETURN_IF_ERROR(Cell(r, 4, role.builtin));
  WARDEN_RETURN_IF_ERROR(Cell(r, 5, role.created_at));
  return role;
}

absl::StatusOr<Binding> ToBinding(const Row& r) {
  using B = Binding;
  return Decode(r, &B::id, &B::subject_kind, &B::subject_id, &B::role_id, &B::scope_tenant_id,
                &B::created_at);
}

constexpr std::string_view kJoinTokenCols =
    "id, token_hash, pool, created_by, created_at, expires_at, used_at, used_by_node";
constexpr std::string_view kNodeCols =
    "id, name, pool, labels, taints, schedule, status, inventory, joined_at, last_heartbeat";
constexpr std::string_view kNodeCertCols = "serial, node_id, issued_at, not_after, revoked_at";

constexpr std::string_view kJobCols =
    "id, tenant_id, name, spec, state, node_id, assignment, seq, submitted_at, started_at,"
    " finished_at, exit_code, reason, submitted_by, cancel_requested_at, cancel_grace_ms";

absl::StatusOr<Job> ToJob(const Row& r) {
  using J = Job;
  // Columns 0-10 plain; 11 (exit_code) may be NULL; 12-15 plain again.
  WARDEN_ASSIGN_OR_RETURN(Job j, Decode(r, &J::id, &J::tenant_id, &J::name, &J::spec_json,
                                        &J::state, &J::node_id, &J::assignment_json, &J::seq,
                                        &J::submitted_at, &J::started_at, &J::finished_at));
  j.has_exit_code = !r.IsNull(11);
  WARDEN_RETURN_IF_ERROR(Cell(r, 11, j.exit_code));
  j.reason = r.String(12);
  j.submitted_by = r.String(13);
  WARDEN_RETURN_IF_ERROR(Cell(r, 14, j.cancel_requested_at));
  WARDEN_RETURN_IF_ERROR(Cell(r, 15, j.cancel_grace_ms));
  return j;
}

absl::StatusOr<JoinToken> ToJoinToken(const Row& r) {
  using T = JoinToken;
  return Decode(r, &T::id, &T::token_hash, &T::pool, &T::created_by, &T::created_at,
                &T::expires_at, &T::used_at, &T::used_by_node);
}

absl::StatusOr<Node> ToNode(const Row& r) {
  using N = Node;
  return Decode(r, &N::id, &N::name, &N::pool, &N::labels_json, &N::taints_json, &N::schedule,
                &N::status, &N::inventory_json, &N::joined_at, &N::last_heartbeat);
}

absl::StatusOr<NodeCert> ToNodeCert(const Row& r) {
  using C = NodeCert;
  return Decode(r, &C::serial, &C::node_id, &C::issued_at, &C::not_after, &C::revoked_at);
}

absl::StatusOr<TenantPolicy> ToTenantPolicy(const Row& r) {
  using P = TenantPolicy;
  return Decode(r, &P::tenant_id, &P::policy_json, &P::updated_at, &P::updated_by);
}

absl::StatusOr<PoolDedication> ToPoolDedication(const Row& r) {
  using P = PoolDedication;
  return Decode(r, &P::pool, &P::tenant_ids_json, &P::updated_at, &P::updated_by);
}

template <typename T>
absl::StatusOr<std::vector<T>> ToList(const Rows& rows, absl::StatusOr<T> (*convert)(const Row&)) {
  std::vector<T> out;
  out.reserve(rows.size());
  for (const Row& r : rows) {
    WARDEN_ASSIGN_OR_RETURN(T v, convert(r));
    out.push_back(std::move(v));
  }
  return out;
}

class SqlStore final : public Store {
 public:
  explicit SqlStore(std::unique_ptr<SqlDb> db) : db_(std::move(db)) {}

  std::string Backend() const override { return db_->Backend(); }

  absl::StatusOr<int> SchemaVersion() override {
    WARDEN_ASSIGN_OR_RETURN(Rows rows,
                            db_->Query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"));
    if (rows.empty()) return 0;
    WARDEN_ASSIGN_OR_RETURN(int64_t v, rows[0].Int(0));
    return static_cast<int>(v);
  }

  absl::Status InTransaction(const std::function<absl::Status()>& fn) override {
    WARDEN_RETURN_IF_ERROR(db_->Begin());
    absl::Status s = fn();
    if (!s.ok()) {
      (void)db_->Rollback();  // fn's error says why; a rollback failure adds nothing useful
      return s;
    }
    return db_->Commit();
  }

  // ---- tenants ----

  absl::Status CreateTenant(const Tenant& t) override {
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("tenant id", t.id));
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("tenant name", t.name));
    absl::Status s = Write(/*policy=*/false, [&]() {
      return db_->Exec("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)",
                       {t.id, t.name, t.created_at})
          .status();
    });
    if (s.code() == absl::StatusCode::kAlreadyExists) {
      return absl::AlreadyExistsError(TakenMessage("tenant", "tenants", t.id, t.name));
    }
    return s;
  }

  absl::StatusOr<Tenant> GetTenant(const std::string& id) override {
    return One<Tenant>(StrCat("SELECT ", kTenantCols, " FROM tenants WHERE id = ?"), {id},
                       ToTenant, StrCat("tenant \"", id, "\" not found"));
  }

  absl::StatusOr<Tenant> GetTenantByName(const std::string& name) override {
    return One<Tenant>(StrCat("SELECT ", kTenantCols, " FROM tenants WHERE name = ?"), {name},
                       ToTenant, StrCat("tenant \"", name, "\" not found"));
  }

  absl::StatusOr<std::vector<Tenant>> ListTenants() override {
    WARDEN_ASSIGN_OR_RETURN(
        Rows rows, db_->Query(StrCat("SELECT ", kTenantCols, " FROM tenants ORDER BY name, id")));
    return ToList<Tenant>(rows, ToTenant);
  }

  absl::Status DeleteTenant(const std::string& id) override {
    absl::Status s = Write(/*policy=*/false, [&]() -> absl::Status {
      WARDEN_RETURN_IF_ERROR(GetTenant(id).status());
      WARDEN_ASSIGN_OR_RETURN(int64_t users,
                              Count("SELECT COUNT(*) FROM users WHERE tenant_id = ?", {id}));
      if (users > 0) {
        return absl::FailedPreconditionError(
            StrCat("tenant \"", id, "\" still has ", users, " user(s); move or remove them first"));
      }
      // Shares name tenants by id without a foreign key: both sides go with the tenant.
      WARDEN_RETURN_IF_ERROR(
          db_->Exec("DELETE FROM vault_shares WHERE owner_tenant_id = ? OR target_tenant_id = ?",
                    {id, id})
              .status());
      return db_->Exec("DELETE FROM tenants WHERE id = ?", {id}).status();
    });
    if (s.code() == absl::StatusCode::kFailedPrecondition) {
      return absl::FailedPreconditionError(ExplainTenantInUse(id, s));
    }
    return s;
  }

  // ---- users ----

  absl::Status CreateUser(const User& u) override {
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("user id", u.id));
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("user name", u.name));
    absl::Status s = Write(/*policy=*/true, [&]() {
      return db_
          ->Exec("INSERT INTO users (id, name, tenant_id, password_hash, disabled, created_at)"
                 " VALUES (?, ?, ?, ?, ?, ?)",
                 {u.id, u.name, NullIfEmpty(u.tenant_id), u.password_hash,
                  int64_t{u.disabled ? 1 : 0}, u.created_at})
          .status();
    });
    if (s.code() == absl::StatusCode::kAlreadyExists) {
      return absl::AlreadyExistsError(TakenMessage("user", "users", u.id, u.name));
    }
    return Reword(s, absl::StatusCode::kFailedPrecondition,
                  StrCat("user \"", u.name, "\": tenant \"", u.tenant_id, "\" does not exist"));
  }

  absl::StatusOr<User> GetUser(const std::string& id) override {
    return One<User>(StrCat("SELECT ", kUserCols, " FROM users WHERE id = ?"), {id}, ToUser,
                     StrCat("user \"", id, "\" not found"));
  }

  absl::StatusOr<User> GetUserByName(const std::string& name) override {
    return One<User>(StrCat("SELECT ", kUserCols, " FROM users WHERE name = ?"), {name}, ToUser,
                     StrCat("user \"", name, "\" not found"));
  }

  absl::StatusOr<std::vector<User>> ListUsers(std::optional<std::string> tenant_id) override {
    std::string sql = StrCat("SELECT ", kUserCols, " FROM users");
    Params params;
    AddTenantFilter(sql, params, "tenant_id", tenant_id);
    sql += " ORDER BY name, id";
    WARDEN_ASSIGN_OR_RETURN(Rows rows, db_->Query(sql, params));
    return ToList<User>(rows, ToUser);
  }

  absl::Status SetUserDisabled(const std::string& id, bool disabled) override {
    return UpdateOne(/*policy=*/true, "UPDATE users SET disabled = ? WHERE id = ?",
                     {int64_t{disabled ? 1 : 0}, id}, StrCat("user \"", id, "\" not found"));
  }

  absl::Status SetUserPassword(const std::string& id, const std::string& hash) override {
    return UpdateOne(/*policy=*/true, "UPDATE users SET password_hash = ? WHERE id = ?",
                     {hash, id}, StrCat("user \"", id, "\" not found"));
  }

  // ---- sessions ----

  absl::Status CreateSession(const Session& s) override {
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("session id hash", s.id_hash));
    absl::Status st = Write(/*policy=*/false, [&]() {
      return db_
          ->Exec("INSERT INTO sessions (id_hash, user_id, created_at, last_seen, expires_at, mfa,"
                 " mfa_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 {s.id_hash, s.user_id, s.created_at, s.last_seen, s.expires_at,
                  int64_t{s.mfa ? 1 : 0}, s.mfa_at})
          .status();
    });
    // Never echo id_hash: it is what an attacker would need to look the session up.
    st = Reword(st, absl::StatusCode::kAlreadyExists, "session already exists");
    return Reword(st, absl::StatusCode::kFailedPrecondition,
                  StrCat("session: user \"", s.user_id, "\" does not exist"));
  }

  absl::StatusOr<Session> GetSession(const std::string& id_hash) override {
    return One<Session>(StrCat("SELECT ", kSessionCols, " FROM sessions WHERE id_hash = ?"),
                        {id_hash}, ToSession, "session not found");
  }

  absl::Status TouchSession(const std::string& id_hash, int64_t last_seen) override {
    return UpdateOne(/*policy=*/false, "UPDATE sessions SET last_seen = ? WHERE id_hash = ?",
                     {last_seen, id_hash}, "session not found");
  }

  absl::Status DeleteSession(const std::string& id_hash) override {
    return UpdateOne(/*policy=*/false, "DELETE FROM sessions WHERE id_hash = ?", {id_hash},
                     "session not found");
  }

  absl::Status DeleteUserSessions(const std::string& user_id) override {
    return Write(/*policy=*/false, [&]() {
      return db_->Exec("DELETE FROM sessions WHERE user_id = ?", {user_id}).status();
    });
  }

  absl::StatusOr<int64_t> DeleteExpiredSessions(int64_t now) override {
    int64_t deleted = 0;
    WARDEN_RETURN_IF_ERROR(Write(/*policy=*/false, [&]() -> absl::Status {
      WARDEN_ASSIGN_OR_RETURN(deleted,
                              db_->Exec("DELETE FROM sessions WHERE expires_at < ?", {now}));
      return absl::OkStatus();
    }));
    return deleted;
  }

  // ---- MFA ----

  absl::Status PutPendingMfa(const UserMfa& m) override {
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("user id", m.user_id));
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("sealed secret", m.sealed_secret));
    absl::Status s = Write(/*policy=*/false, [&]() -> absl::Status {
      auto existing = GetUserMfa(m.user_id);
      if (existing.ok() && existing->confirmed) {
        return absl::FailedPreconditionError(
            "MFA is already enabled for this user; disable it first");
      }
      if (!existing.ok() && !absl::IsNotFound(existing.status())) return existing.status();
      WARDEN_RETURN_IF_ERROR(
          db_->Exec("DELETE FROM user_mfa WHERE user_id = ?", {m.user_id}).status());
      return db_
          ->Exec("INSERT INTO user_mfa (user_id, sealed_secret, confirmed, last_step, created_at,"
                 " confirmed_at) VALUES (?, ?, 0, ?, ?, 0)",
                 {m.user_id, m.sealed_secret, m.last_step, m.created_at})
          .status();
    });
    if (s.code() == absl::StatusCode::kFailedPrecondition &&
        std::string(s.message()).find("already enabled") == std::string::npos) {
      return absl::FailedPreconditionError(StrCat("user \"", m.user_id, "\" does not exist"));
    }
    return s;
  }

  absl::StatusOr<UserMfa> GetUserMfa(const std::string& user_id) override {
    return One<UserMfa>(StrCat("SELECT ", kMfaCols, " FROM user_mfa WHERE user_id = ?"), {user_id},
                        ToUserMfa, "MFA is not enrolled for this user");
  }

  absl::Status ConfirmMfa(const std::string& user_id, int64_t step, int64_t now,
                          const std::vector<std::string>& recovery_hashes) override {
    return Write(/*policy=*/false, [&]() -> absl::Status {
      WARDEN_ASSIGN_OR_RETURN(UserMfa m, GetUserMfa(user_id));
      if (m.confirmed) return absl::FailedPreconditionError("MFA is already enabled");
      WARDEN_ASSIGN_OR_RETURN(
          int64_t n, db_->Exec("UPDATE user_mfa SET confirmed = 1, confirmed_at = ?, last_step = ?"
                               " WHERE user_id = ? AND confirmed = 0 AND last_step < ?",
                               {now, step, user_id, step}));
      if (n != 1) return absl::AbortedError("code already used");
      WARDEN_RETURN_IF_ERROR(
          db_->Exec("DELETE FROM mfa_recovery_codes WHERE user_id = ?", {user_id}).status());
      for (const std::string& h : recovery_hashes) {
        WARDEN_RETURN_IF_ERROR(
            db_->Exec("INSERT INTO mfa_recovery_codes (user_id, code_hash) VALUES (?, ?)",
                      {user_id, h})
                .status());
      }
      return absl::OkStatus();
    });
  }

  absl::Status AdvanceMfaStep(const std::string& user_id, int64_t step) override {
    return Write(/*policy=*/false, [&]() -> absl::Status {
      WARDEN_ASSIGN_OR_RETURN(
          int64_t n, db_->Exec("UPDATE user_mfa SET last_step = ?"
                               " WHERE user_id = ? AND confirmed = 1 AND last_step < ?",
                               {step, user_id, step}));
      if (n == 1) return absl::OkStatus();
      WARDEN_ASSIGN_OR_RETURN(UserMfa m, GetUserMfa(user_id));
      if (!m.confirmed) return absl::NotFoundError("MFA is not enabled for this user");
      return absl::AbortedError("code already used");
    });
  }

  absl::Status ConsumeRecoveryCode(const std::string& user_id,
                                   const std::string& code_hash) override {
    return UpdateOne(/*policy=*/false,
                     "DELETE FROM mfa_recovery_codes WHERE user_id = ? AND code_hash = ?",
                     {user_id, code_hash}, "invalid recovery code");
  }

  absl::StatusOr<int64_t> CountRecoveryCodes(const std::string& user_id) override {
    return Count("SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = ?", {user_id});
  }

  absl::Status DeleteUserMfa(const std::string& user_id) override {
    return Write(/*policy=*/false, [&]() -> absl::Status {
      WARDEN_RETURN_IF_ERROR(
          db_->Exec("DELETE FROM mfa_recovery_codes WHERE user_id = ?", {user_id}).status());
      return db_->Exec("DELETE FROM user_mfa WHERE user_id = ?", {user_id}).status();
    });
  }

  // ---- API tokens ----

  absl::Status CreateToken(const ApiToken& t) override {
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("token id", t.id));
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("token hash", t.token_hash));
    absl::Status s = Write(/*policy=*/true, [&]() {
      return db_
          ->Exec("INSERT INTO api_tokens (id, name, token_hash, user_id, tenant_id, role_id,"
                 " created_at, expires_at, revoked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 {t.id, t.name, t.token_hash, t.user_id, NullIfEmpty(t.tenant_id), t.role_id,
                  t.created_at, t.expires_at, int64_t{t.revoked ? 1 : 0}})
          .status();
    });
    s = Reword(s, absl::StatusCode::kAlreadyExists,
               StrCat("token \"", t.name, "\": id or secret hash already in use"));
    return Reword(s, absl::StatusCode::kFailedPrecondition,
                  StrCat("token \"", t.name, "\": user \"", t.user_id, "\", role \"", t.role_id,
                         "\" or tenant \"", t.tenant_id, "\" does not exist"));
  }

  absl::StatusOr<ApiToken> GetToken(const std::string& id) override {
    return One<ApiToken>(StrCat("SELECT ", kTokenCols, " FROM api_tokens WHERE id = ?"), {id},
                         ToToken, StrCat("token \"", id, "\" not found"));
  }

  absl::StatusOr<ApiToken> GetTokenByHash(const std::string& token_hash) override {
    return One<ApiToken>(StrCat("SELECT ", kTokenCols, " FROM api_tokens WHERE token_hash = ?"),
                         {token_hash}, ToToken, "token not found");
  }

  absl::StatusOr<std::vector<ApiToken>> ListTokens(std::optional<std::string> tenant_id,
                                                   std::optional<std::string> user_id) override {
    std::string sql = StrCat("SELECT ", kTokenCols, " FROM api_tokens");
    Params params;
    bool filtered = AddTenantFilter(sql, params, "tenant_id", tenant_id);
    if (user_id.has_value()) {
      sql += filtered ? " AND user_id = ?" : " WHERE user_id = ?";
      params.emplace_back(*user_id);
    }
    sql += " ORDER BY created_at, id";
    WARDEN_ASSIGN_OR_RETURN(Rows rows, db_->Query(sql, params));
    return ToList<ApiToken>(rows, ToToken);
  }

  absl::Status RevokeToken(const std::string& id) override {
    return UpdateOne(/*policy=*/true, "UPDATE api_tokens SET revoked = 1 WHERE id = ?", {id},
                     StrCat("token \"", id, "\" not found"));
  }

  // ---- roles ----

  absl::Status CreateRole(const Role& r) override {
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("role id", r.id));
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("role name", r.name));
    WARDEN_ASSIGN_OR_RETURN(std::string permissions, EncodePermissions(r.permissions));
    absl::Status s = Write(/*policy=*/true, [&]() {
      return db_
          ->Exec("INSERT INTO roles (id, name, tenant_id, permissions, builtin, created_at)"
                 " VALUES (?, ?, ?, ?, ?, ?)",
                 {r.id, r.name, NullIfEmpty(r.tenant_id), permissions,
                  int64_t{r.builtin ? 1 : 0}, r.created_at})
          .status();
    });
    if (s.code() == absl::StatusCode::kAlreadyExists) {
      std::string scope =
          r.tenant_id.empty() ? "the cluster" : StrCat("tenant \"", r.tenant_id, "\"");
      if (GetRoleByName(r.tenant_id, r.name).ok()) {
        return absl::AlreadyExistsError(
            StrCat("role \"", r.name, "\" already exists in ", scope));
      }
      return absl::AlreadyExistsError(StrCat("role id \"", r.id, "\" is taken"));
    }
    return Reword(s, absl::StatusCode::kFailedPrecondition,
                  StrCat("role \"", r.name, "\": tenant \"", r.tenant_id, "\" does not exist"));
  }

  absl::StatusOr<Role> GetRole(const std::string& id) override {
    return One<Role>(StrCat("SELECT ", kRoleCols, " FROM roles WHERE id = ?"), {id}, ToRole,
                     StrCat("role \"", id, "\" not found"));
  }

  absl::StatusOr<Role> GetRoleByName(const std::string& tenant_id,
                                     const std::string& name) override {
    // COALESCE matches the unique index, so "" finds cluster-wide roles (stored as NULL).
    return One<Role>(
        StrCat("SELECT ", kRoleCols, " FROM roles WHERE COALESCE(tenant_id, '') = ? AND name = ?"),
        {tenant_id, name}, ToRole,
        StrCat("role \"", name, "\" not found in ",
               tenant_id.empty() ? "the cluster" : StrCat("tenant \"", tenant_id, "\"")));
  }

  absl::StatusOr<std::vector<Role>> ListRoles() override {
    WARDEN_ASSIGN_OR_RETURN(Rows rows, db_->Query(StrCat("SELECT ", kRoleCols,
                                                         " FROM roles ORDER BY"
                                                         " COALESCE(tenant_id, ''), name, id")));
    return ToList<Role>(rows, ToRole);
  }

  absl::Status DeleteRole(const std::string& id) override {
    return Write(/*policy=*/true, [&]() -> absl::Status {
      WARDEN_RETURN_IF_ERROR(GetRole(id).status());
      WARDEN_ASSIGN_OR_RETURN(int64_t bindings,
                              Count("SELECT COUNT(*) FROM bindings WHERE role_id = ?", {id}));
      WARDEN_ASSIGN_OR_RETURN(int64_t tokens,
                              Count("SELECT COUNT(*) FROM api_tokens WHERE role_id = ?", {id}));
      if (bindings > 0 || tokens > 0) {
        return absl::FailedPreconditionError(StrCat("role \"", id, "\" is used by ", bindings,
                                                    " binding(s) and ", tokens, " token(s)"));
      }
      return db_->Exec("DELETE FROM roles WHERE id = ?", {id}).status();
    });
  }

  // ---- bindings ----

  absl::Status CreateBinding(const Binding& b) override {
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("binding id", b.id));
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("binding subject id", b.subject_id));
    if (b.subject_kind != "user" && b.subject_kind != "token") {
      return absl::InvalidArgumentError(
          StrCat("binding subject kind must be \"user\" or \"token\", got \"", b.subject_kind,
                 "\""));
    }
    absl::Status s = Write(/*policy=*/true, [&]() {
      return db_
          ->Exec("INSERT INTO bindings (id, subject_kind, subject_id, role_id, scope_tenant_id,"
                 " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                 {b.id, b.subject_kind, b.subject_id, b.role_id, NullIfEmpty(b.scope_tenant_id),
                  b.created_at})
          .status();
    });
    s = Reword(s, absl::StatusCode::kAlreadyExists,
               StrCat("binding of ", b.subject_kind, " \"", b.subject_id, "\" to role \"",
                      b.role_id, "\" already exists (or its id is taken)"));
    return Reword(s, absl::StatusCode::kFailedPrecondition,
                  StrCat("binding: role \"", b.role_id, "\" or tenant \"", b.scope_tenant_id,
                         "\" does not exist"));
  }

  absl::StatusOr<std::vector<Binding>> ListBindings() override {
    WARDEN_ASSIGN_OR_RETURN(
        Rows rows,
        db_->Query(StrCat("SELECT ", kBindingCols, " FROM bindings ORDER BY created_at, id")));
    return ToList<Binding>(rows, ToBinding);
  }

  absl::Status DeleteBinding(const std::string& id) override {
    return UpdateOne(/*policy=*/true, "DELETE FROM bindings WHERE id = ?", {id},
                     StrCat("binding \"", id, "\" not found"));
  }

  // ---- cluster: join tokens, nodes, node certificates ----

  absl::Status CreateJoinToken(const JoinToken& t) override {
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("join token id", t.id));
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("join token hash", t.token_hash));
    return Write(/*policy=*/false, [&]() {
      return db_->Exec(StrCat("INSERT INTO join_tokens (", kJoinTokenCols,
                              ") VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)"),
                       {t.id, t.token_hash, t.pool, t.created_by, t.created_at, t.expires_at})
          .status();
    });
  }

  absl::StatusOr<std::vector<JoinToken>> ListJoinTokens() override {
    WARDEN_ASSIGN_OR_RETURN(
        Rows rows, db_->Query(StrCat("SELECT ", kJoinTokenCols, " FROM join_tokens ORDER BY created_at, id")));
    return ToList<JoinToken>(rows, ToJoinToken);
  }

  absl::StatusOr<JoinToken> UseJoinToken(const std::string& token_hash, int64_t now,
                                         const std::string& node_id) override {
    JoinToken out;
    WARDEN_RETURN_IF_ERROR(Write(/*policy=*/false, [&]() -> absl::Status {
      WARDEN_ASSIGN_OR_RETURN(
          out, One<JoinToken>(StrCat("SELECT ", kJoinTokenCols, " FROM join_tokens WHERE token_hash = ?"),
                              {token_hash}, ToJoinToken, "join token not recognised"));
      if (out.used_at != 0) return absl::FailedPreconditionError("join token already used");
      if (out.expires_at <= now) return absl::FailedPreconditionError("join token expired");
      // The guard in WHERE makes the use atomic across replicas sharing one PostgreSQL.
      WARDEN_ASSIGN_OR_RETURN(
          int64_t n, db_->Exec("UPDATE join_tokens SET used_at = ?, used_by_node = ?"
                               " WHERE token_hash = ? AND used_at IS NULL",
                               {now, node_id, token_hash}));
      if (n != 1) return absl::FailedPreconditionError("join token already used");
      return absl::OkStatus();
    }));
    return out;
  }

  absl::Status CreateNode(const Node& n) override {
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("node id", n.id));
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("node name", n.name));
    absl::Status s = Write(/*policy=*/false, [&]() {
      return db_->Exec(StrCat("INSERT INTO nodes (", kNodeCols,
                              ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                       {n.id, n.name, n.pool, n.labels_json, n.taints_json, n.schedule, n.status,
                        n.inventory_json, n.joined_at, n.last_heartbeat})
          .status();
    });
    if (s.code() == absl::StatusCode::kAlreadyExists) {
      return absl::AlreadyExistsError(TakenMessage("node", "nodes", n.id, n.name));
    }
    return s;
  }

  absl::StatusOr<Node> GetNode(const std::string& id) override {
    return One<Node>(StrCat("SELECT ", kNodeCols, " FROM nodes WHERE id = ?"), {id}, ToNode,
                     StrCat("node id \"", id, "\" not found"));
  }

  absl::StatusOr<Node> GetNodeByName(const std::string& name) override {
    return One<Node>(StrCat("SELECT ", kNodeCols, " FROM nodes WHERE name = ?"), {name}, ToNode,
                     StrCat("node \"", name, "\" not found"));
  }

  absl::StatusOr<std::vector<Node>> ListNodes() override {
    WARDEN_ASSIGN_OR_RETURN(Rows rows,
                            db_->Query(StrCat("SELECT ", kNodeCols, " FROM nodes ORDER BY name")));
    return ToList<Node>(rows, ToNode);
  }

  absl::Status UpdateNode(const Node& n) override {
    return UpdateOne(/*policy=*/false,
                     "UPDATE nodes SET pool = ?, labels = ?, taints = ?, schedule = ?, status = ?,"
                     " inventory = ?, last_heartbeat = ? WHERE id = ?",
                     {n.pool, n.labels_json, n.taints_json, n.schedule, n.status, n.inventory_json,
                      n.last_heartbeat, n.id},
                     StrCat("node id \"", n.id, "\" not found"));
  }

  absl::Status DeleteNode(const std::string& id) override {
    return UpdateOne(/*policy=*/false, "DELETE FROM nodes WHERE id = ?", {id},
                     StrCat("node id \"", id, "\" not found"));
  }

  absl::Status AddNodeCert(const NodeCert& c) override {
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("certificate serial", c.serial));
    return Write(/*policy=*/false, [&]() {
      return db_->Exec(StrCat("INSERT INTO node_certs (", kNodeCertCols, ") VALUES (?, ?, ?, ?, ?)"),
                       {c.serial, c.node_id, c.issued_at, c.not_after,
                        c.revoked_at == 0 ? Param{} : Param{c.revoked_at}})
          .status();
    });
  }

  absl::StatusOr<NodeCert> GetNodeCert(const std::string& serial) override {
    return One<NodeCert>(StrCat("SELECT ", kNodeCertCols, " FROM node_certs WHERE serial = ?"),
                         {serial}, ToNodeCert, StrCat("certificate serial ", serial, " unknown"));
  }

  absl::StatusOr<int64_t> RevokeNodeCerts(const std::string& node_id, int64_t now) override {
    int64_t n = 0;
    WARDEN_RETURN_IF_ERROR(Write(/*policy=*/false, [&]() -> absl::Status {
      WARDEN_ASSIGN_OR_RETURN(n, db_->Exec("UPDATE node_certs SET revoked_at = ?"
                                           " WHERE node_id = ? AND revoked_at IS NULL",
                                           {now, node_id}));
      return absl::OkStatus();
    }));
    return n;
  }

  // ---- external identities ----

  absl::Status LinkExternalIdentity(const ExternalIdentity& x) override {
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("identity provider", x.provider));
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("identity subject", x.subject));
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("user id", x.user_id));
    absl::Status st = Write(/*policy=*/false, [&]() {
      return db_
          ->Exec("INSERT INTO external_identities (provider, subject, user_id, email, created_at,"
                 " last_login_at) VALUES (?, ?, ?, ?, ?, ?)",
                 {x.provider, x.subject, x.user_id, x.email, x.created_at, x.last_login_at})
          .status();
    });
    st = Reword(st, absl::StatusCode::kAlreadyExists,
                StrCat("identity \"", x.subject, "\" of provider \"", x.provider,
                       "\" is already linked"));
    return Reword(st, absl::StatusCode::kFailedPrecondition,
                  StrCat("identity link: user \"", x.user_id, "\" does not exist"));
  }

  absl::StatusOr<ExternalIdentity> GetExternalIdentity(const std::string& provider,
                                                       const std::string& subject) override {
    return One<ExternalIdentity>(
        StrCat("SELECT ", kExternalIdentityCols,
               " FROM external_identities WHERE provider = ? AND subject = ?"),
        {provider, subject}, ToExternalIdentity,
        StrCat("identity \"", subject, "\" of provider \"", provider, "\" is not linked"));
  }

  absl::Status TouchExternalIdentity(const std::string& provider, const std::string& subject,
                                     const std::string& email, int64_t at) override {
    return UpdateOne(/*policy=*/false,
                     "UPDATE external_identities SET email = ?, last_login_at = ?"
                     " WHERE provider = ? AND subject = ?",
                     {email, at, provider, subject},
                     StrCat("identity \"", subject, "\" of provider \"", provider,
                            "\" is not linked"));
  }

  absl::StatusOr<Job> CreateJob(const Job& in) override {
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("job id", in.id));
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("job tenant", in.tenant_id));
    Job j = in;
    absl::Status s = Write(/*policy=*/false, [&]() -> absl::Status {
      if (j.seq == 0) {
        WARDEN_ASSIGN_OR_RETURN(int64_t max, Count("SELECT COALESCE(MAX(seq), 0) FROM jobs", {}));
        j.seq = max + 1;
      }
      return db_->Exec(StrCat("INSERT INTO jobs (", kJobCols,
                              ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                       {j.id, j.tenant_id, j.name, j.spec_json, j.state, NullIfEmpty(j.node_id),
                        j.assignment_json, j.seq, j.submitted_at, j.started_at, j.finished_at,
                        j.has_exit_code ? Param{j.exit_code} : Param{}, j.reason, j.submitted_by,
                        j.cancel_requested_at, j.cancel_grace_ms})
          .status();
    });
    if (s.code() == absl::StatusCode::kAlreadyExists) {
      return absl::AlreadyExistsError(StrCat("job id \"", j.id, "\" or sequence ", j.seq, " is taken"));
    }
    if (s.code() == absl::StatusCode::kFailedPrecondition) {
      return absl::FailedPreconditionError(StrCat("tenant \"", j.tenant_id, "\" does not exist"));
    }
    WARDEN_RETURN_IF_ERROR(s);
    return j;
  }

  absl::StatusOr<Job> GetJob(const std::string& id) override {
    return One<Job>(StrCat("SELECT ", kJobCols, " FROM jobs WHERE id = ?"), {id}, ToJob,
                    StrCat("job \"", id, "\" not found"));
  }

  absl::StatusOr<std::vector<Job>> ListJobs(std::optional<std::string> tenant_id,
                                            std::optional<std::string> state,
                                            bool active_only) override {
    std::string sql = StrCat("SELECT ", kJobCols, " FROM jobs WHERE 1 = 1");
    Params params;
    if (tenant_id) {
      sql += " AND tenant_id = ?";
      params.emplace_back(*tenant_id);
    }
    if (state) {
      sql += " AND state = ?";
      params.emplace_back(*state);
    }
    if (active_only) sql += " AND state IN ('queued', 'placed', 'running')";
    sql += " ORDER BY seq";
    WARDEN_ASSIGN_OR_RETURN(Rows rows, db_->Query(sql, params));
    return ToList<Job>(rows, ToJob);
  }

  absl::Status UpdateJob(const Job& j) override {
    return UpdateOne(/*policy=*/false,
                     "UPDATE jobs SET state = ?, node_id = ?, assignment = ?, started_at = ?,"
                     " finished_at = ?, exit_code = ?, reason = ?, cancel_requested_at = ?,"
                     " cancel_grace_ms = ? WHERE id = ?",
                     {j.state, NullIfEmpty(j.node_id), j.assignment_json, j.started_at,
                      j.finished_at, j.has_exit_code ? Param{j.exit_code} : Param{}, j.reason,
                      j.cancel_requested_at, j.cancel_grace_ms, j.id},
                     StrCat("job \"", j.id, "\" not found"));
  }

  absl::Status PutTenantPolicy(const TenantPolicy& p) override {
    return Write(/*policy=*/false, [&]() -> absl::Status {
      return db_
          ->Exec("INSERT INTO tenant_policies (tenant_id, policy, updated_at, updated_by)"
                 " VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id) DO UPDATE SET"
                 " policy = excluded.policy, updated_at = excluded.updated_at,"
                 " updated_by = excluded.updated_by",
                 {p.tenant_id, p.policy_json, p.updated_at, p.updated_by})
          .status();
    });
  }

  absl::StatusOr<std::vector<TenantPolicy>> ListTenantPolicies() override {
    WARDEN_ASSIGN_OR_RETURN(
        Rows rows, db_->Query("SELECT tenant_id, policy, updated_at, updated_by"
                              " FROM tenant_policies ORDER BY tenant_id"));
    return ToList(rows, &ToTenantPolicy);
  }

  absl::Status PutPoolDedication(const PoolDedication& d) override {
    return Write(/*policy=*/false, [&]() -> absl::Status {
      return db_
          ->Exec("INSERT INTO pool_dedications (pool, tenant_ids, updated_at, updated_by)"
                 " VALUES (?, ?, ?, ?) ON CONFLICT (pool) DO UPDATE SET"
                 " tenant_ids = excluded.tenant_ids, updated_at = excluded.updated_at,"
                 " updated_by = excluded.updated_by",
                 {d.pool, d.tenant_ids_json, d.updated_at, d.updated_by})
          .status();
    });
  }

  absl::StatusOr<std::vector<PoolDedication>> ListPoolDedications() override {
    WARDEN_ASSIGN_OR_RETURN(Rows rows, db_->Query("SELECT pool, tenant_ids, updated_at, updated_by"
                                                  " FROM pool_dedications ORDER BY pool"));
    return ToList(rows, &ToPoolDedication);
  }

  absl::StatusOr<int64_t> PolicyGeneration() override {
    WARDEN_ASSIGN_OR_RETURN(Rows rows,
                            db_->Query("SELECT generation FROM policy_generation WHERE id = 1"));
    if (rows.empty()) return absl::DataLossError("store: policy_generation row is missing");
    return rows[0].Int(0);
  }

  // ---- vault shares ----

  absl::Status CreateVaultShare(const VaultShare& v) override {
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("share id", v.id));
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("share owner tenant", v.owner_tenant_id));
    WARDEN_RETURN_IF_ERROR(RequireNonEmpty("share target tenant", v.target_tenant_id));
    absl::Status st = Write(/*policy=*/false, [&]() {
      return db_
          ->Exec(StrCat("INSERT INTO vault_shares (", kVaultShareCols,
                        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                 {v.id, v.owner_tenant_id, v.name, int64_t{v.is_prefix ? 1 : 0},
                  v.target_tenant_id, v.state, v.offered_by, v.offered_at, v.decided_by,
                  v.decided_at, v.revoked_by, v.revoked_at})
          .status();
    });
    return Reword(st, absl::StatusCode::kAlreadyExists, StrCat("share id \"", v.id, "\" is taken"));
  }

  absl::StatusOr<VaultShare> GetVaultShare(const std::string& id) override {
    return One<VaultShare>(StrCat("SELECT ", kVaultShareCols, " FROM vault_shares WHERE id = ?"),
                           {id}, ToVaultShare, StrCat("share ", id, " not found"));
  }

  absl::StatusOr<VaultShare> TransitionVaultShare(const std::string& id,
                                                  const std::vector<std::string>& from,
                                                  const std::string& to, const std::string& by,
                                                  int64_t at) override {
    if (from.empty()) return absl::InvalidArgumentError("share transition needs a from state");
    const bool revoke = to == "revoked";
    std::string sql = StrCat("UPDATE vault_shares SET state = ?, ",
                             revoke ? "revoked_by = ?, revoked_at = ?" : "decided_by = ?, decided_at = ?",
                             " WHERE id = ? AND state IN (");
    Params params{Param{to}, Param{by}, Param{at}, Param{id}};
    for (size_t i = 0; i < from.size(); ++i) {
      sql += i == 0 ? "?" : ", ?";
      params.emplace_back(from[i]);
    }
    sql += ")";
    absl::StatusOr<VaultShare> out;
    absl::Status st = Write(/*policy=*/false, [&]() -> absl::Status {
      WARDEN_ASSIGN_OR_RETURN(int64_t n, db_->Exec(sql, params));
      WARDEN_ASSIGN_OR_RETURN(VaultShare now, GetVaultShare(id));
      if (n == 0) {
        return absl::FailedPreconditionError(
            StrCat("share ", id, " is ", now.state, ", not ", from.size() == 1 ? from[0] : StrCat(from[0], " or ", from.back())));
      }
      out = std::move(now);
      return absl::OkStatus();
    });
    if (!st.ok()) return st;
    return out;
  }

  absl::StatusOr<std::vector<VaultShare>> ListVaultShares(const std::string& tenant_id) override {
    WARDEN_ASSIGN_OR_RETURN(
        Rows rows, db_->Query(StrCat("SELECT ", kVaultShareCols,
                                     " FROM vault_shares WHERE owner_tenant_id = ? OR"
                                     " target_tenant_id = ? ORDER BY offered_at, id"),
                              {tenant_id, tenant_id}));
    return ToList<VaultShare>(rows, ToVaultShare);
  }

 private:
  // Runs `fn` as one transaction (joined to the caller's, if any) and bumps the policy
  // generation in the same transaction when `policy`, so a cache can never see the change
  // without the new generation or the other way round.
  absl::Status Write(bool policy, const std::function<absl::Status()>& fn) {
    return InTransaction([&]() -> absl::Status {
      WARDEN_RETURN_IF_ERROR(fn());
      if (!policy) return absl::OkStatus();
      return db_->Exec("UPDATE policy_generation SET generation = generation + 1 WHERE id = 1")
          .status();
    });
  }

  // A write that must touch exactly one row; NotFound otherwise.
  absl::Status UpdateOne(bool policy, std::string_view sql, const Params& params,
                         std::string not_found) {
    return Write(policy, [&]() -> absl::Status {
      WARDEN_ASSIGN_OR_RETURN(int64_t n, db_->Exec(sql, params));
      if (n == 0) return absl::NotFoundError(not_found);
      return absl::OkStatus();
    });
  }

  template <typename T>
  absl::StatusOr<T> One(const std::string& sql, const Params& params,
                        absl::StatusOr<T> (*convert)(const Row&), std::string not_found) {
    WARDEN_ASSIGN_OR_RETURN(Rows rows, db_->Query(sql, params));
    if (rows.empty()) return absl::NotFoundError(std::move(not_found));
    return convert(rows[0]);
  }

  absl::StatusOr<int64_t> Count(std::string_view sql, const Params& params) {
    WARDEN_ASSIGN_OR_RETURN(Rows rows, db_->Query(sql, params));
    if (rows.empty()) return 0;
    return rows[0].Int(0);
  }

  // nullopt: no filter; "": rows outside any tenant (NULL); else that tenant. Appends a WHERE
  // clause and returns whether it did.
  static bool AddTenantFilter(std::string& sql, Params& params, std::string_view column,
                              const std::optional<std::string>& tenant_id) {
    if (!tenant_id.has_value()) return false;
    if (tenant_id->empty()) {
      sql += StrCat(" WHERE ", column, " IS NULL");
    } else {
      sql += StrCat(" WHERE ", column, " = ?");
      params.emplace_back(*tenant_id);
    }
    return true;
  }

  // Which unique column a failed insert collided with, for a message an operator can act on.
  std::string TakenMessage(std::string_view what, std::string_view table, const std::string& id,
                           const std::string& name) {
    auto n = Count(StrCat("SELECT COUNT(*) FROM ", table, " WHERE name = ?"), {name});
    if (n.ok() && *n > 0) return StrCat(what, " \"", name, "\" already exists");
    return StrCat(what, " id \"", id, "\" is taken");
  }

  std::string ExplainTenantInUse(const std::string& id, const absl::Status& s) {
    // Our own precondition messages are already specific; a raw FK violation means roles,
    // tokens or bindings still point at the tenant.
    std::string_view msg = std::string_view(s.message().data(), s.message().size());
    if (!msg.starts_with("sqlite:") && !msg.starts_with("postgres:")) return std::string(msg);
    return StrCat("tenant \"", id, "\" is still referenced by roles, tokens or bindings");
  }

  std::unique_ptr<SqlDb> db_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> OpenStore(const StoreOptions& options) {
  const std::string& url = options.url;
  std::unique_ptr<SqlDb> db;
  constexpr std::string_view kSqlite = "sqlite://";
  if (url.starts_with(kSqlite)) {
    std::string path = url.substr(kSqlite.size());  // sqlite:///abs -> /abs; sqlite://rel -> rel
    if (path.empty()) {
      return absl::InvalidArgumentError("store URL \"sqlite://\" names no database file");
    }
    WARDEN_ASSIGN_OR_RETURN(db, internal::OpenSqliteDb(path));
  } else if (url.starts_with("postgres://") || url.starts_with("postgresql://")) {
    WARDEN_ASSIGN_OR_RETURN(db, internal::OpenPostgresDb(url));
  } else {
    // Echo only the scheme: the rest of a URL may carry a password.
    size_t colon = url.find("://");
    std::string scheme = colon == std::string::npos ? "" : url.substr(0, colon);
    return absl::InvalidArgumentError(StrCat(
        "store URL ", scheme.empty() ? std::string("has no scheme") : StrCat("scheme \"", scheme, "\" is not supported"),
        "; use sqlite:///path/to/state.db, postgres:// or postgresql://"));
  }
  WARDEN_RETURN_IF_ERROR(internal::Migrate(*db, common::RealClock::Get().NowUnix()));
  return std::unique_ptr<Store>(std::make_unique<SqlStore>(std::move(db)));
}

}  // namespace warden::store
