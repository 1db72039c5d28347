#include "store/migrations.h"

#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/strings.h"

namespace warden::store::internal {
namespace {

using common::StrCat;

struct Migration {
  int version;
  std::vector<std::string_view> statements;
};

// Portable SQL only: TEXT, BIGINT, INTEGER for booleans (0/1), expression indexes with
// COALESCE. "No tenant" is NULL so that foreign keys bind only real tenant ids; uniqueness that
// must treat "no tenant" as one value uses COALESCE(tenant_id, '') because both databases treat
// NULLs as distinct in UNIQUE constraints.
// Append new migrations; never edit an applied one.
const std::vector<Migration>& Migrations() {
  static const auto* migrations = new std::vector<Migration>{
      {1,
       {
           "CREATE TABLE tenants ("
           " id TEXT PRIMARY KEY,"
           " name TEXT NOT NULL UNIQUE,"
           " created_at BIGINT NOT NULL)",

           "CREATE TABLE users ("
           " id TEXT PRIMARY KEY,"
           " name TEXT NOT NULL UNIQUE,"
           " tenant_id TEXT REFERENCES tenants (id),"
           " password_hash TEXT NOT NULL,"
           " disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),"
           " created_at BIGINT NOT NULL)",
           "CREATE INDEX users_by_tenant ON users (tenant_id)",

           "CREATE TABLE sessions ("
           " id_hash TEXT PRIMARY KEY,"
           " user_id TEXT NOT NULL REFERENCES users (id),"
           " created_at BIGINT NOT NULL,"
           " last_seen BIGINT NOT NULL,"
           " expires_at BIGINT NOT NULL)",
           "CREATE INDEX sessions_by_user ON sessions (user_id)",
           "CREATE INDEX sessions_by_expiry ON sessions (expires_at)",

           // permissions: a JSON array of "resource:verb" strings.
           "CREATE TABLE roles ("
           " id TEXT PRIMARY KEY,"
           " name TEXT NOT NULL,"
           " tenant_id TEXT REFERENCES tenants (id),"
           " permissions TEXT NOT NULL,"
           " builtin INTEGER NOT NULL DEFAULT 0 CHECK (builtin IN (0, 1)),"
           " created_at BIGINT NOT NULL)",
           "CREATE UNIQUE INDEX roles_by_scope_name ON roles ((COALESCE(tenant_id, '')), name)",
           "CREATE INDEX roles_by_tenant ON roles (tenant_id)",

           "CREATE TABLE api_tokens ("
           " id TEXT PRIMARY KEY,"
           " name TEXT NOT NULL,"
           " token_hash TEXT NOT NULL UNIQUE,"
           " user_id TEXT NOT NULL REFERENCES users (id),"
           " tenant_id TEXT REFERENCES tenants (id),"
           " role_id TEXT NOT NULL REFERENCES roles (id),"
           " created_at BIGINT NOT NULL,"
           " expires_at BIGINT NOT NULL,"
           " revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)))",
           "CREATE INDEX api_tokens_by_user ON api_tokens (user_id)",
           "CREATE INDEX api_tokens_by_tenant ON api_tokens (tenant_id)",
           "CREATE INDEX api_tokens_by_role ON api_tokens (role_id)",

           // subject_id is not a foreign key: it names a user or a token depending on
           // subject_kind, which SQL cannot express portably.
           "CREATE TABLE bindings ("
           " id TEXT PRIMARY KEY,"
           " subject_kind TEXT NOT NULL CHECK (subject_kind IN ('user', 'token')),"
           " subject_id TEXT NOT NULL,"
           " role_id TEXT NOT NULL REFERENCES roles (id),"
           " scope_tenant_id TEXT REFERENCES tenants (id),"
           " created_at BIGINT NOT NULL)",
           "CREATE UNIQUE INDEX bindings_unique ON bindings"
           " (subject_kind, subject_id, role_id, (COALESCE(scope_tenant_id, '')))",
           "CREATE INDEX bindings_by_role ON bindings (role_id)",
           "CREATE INDEX bindings_by_scope ON bindings (scope_tenant_id)",

           // One row: the counter that authorization caches compare against.
           "CREATE TABLE policy_generation ("
           " id INTEGER PRIMARY KEY CHECK (id = 1),"
           " generation BIGINT NOT NULL)",
           "INSERT INTO policy_generation (id, generation) VALUES (1, 0)",
       }},
      // Issue 3: TOTP MFA. Sessions remember whether (and when) a second factor was checked;
      // user_mfa holds the sealed TOTP seed and the replay guard; recovery codes are stored as
      // SHA-256 hex, one row each, so using one is a single DELETE (atomic across replicas).
      {2,
       {
           "ALTER TABLE sessions ADD COLUMN mfa INTEGER NOT NULL DEFAULT 0 CHECK (mfa IN (0, 1))",
           "ALTER TABLE sessions ADD COLUMN mfa_at BIGINT NOT NULL DEFAULT 0",

           "CREATE TABLE user_mfa ("
           " user_id TEXT PRIMARY KEY REFERENCES users (id),"
           " sealed_secret TEXT NOT NULL,"
           " confirmed INTEGER NOT NULL DEFAULT 0 CHECK (confirmed IN (0, 1)),"
           " last_step BIGINT NOT NULL,"
           " created_at BIGINT NOT NULL,"
           " confirmed_at BIGINT NOT NULL DEFAULT 0)",

           "CREATE TABLE mfa_recovery_codes ("
           " user_id TEXT NOT NULL REFERENCES users (id),"
           " code_hash TEXT NOT NULL,"
           " PRIMARY KEY (user_id, code_hash))",
       }},
      // 3: cluster nodes, their join tokens and node certificates (issue 6).
      // Versions need not be contiguous.
      {3,
       {
           // token_hash: SHA-256 hex of the secret; the secret itself is never stored.
           "CREATE TABLE join_tokens ("
           " id TEXT PRIMARY KEY,"
           " token_hash TEXT NOT NULL UNIQUE,"
           " pool TEXT NOT NULL,"
           " created_by TEXT NOT NULL,"
           " created_at BIGINT NOT NULL,"
           " expires_at BIGINT NOT NULL,"
           " used_at BIGINT,"
           " used_by_node TEXT)",

           // labels, taints, inventory: JSON text, interpreted by the cluster module.
           "CREATE TABLE nodes ("
           " id TEXT PRIMARY KEY,"
           " name TEXT NOT NULL UNIQUE,"
           " pool TEXT NOT NULL,"
           " labels TEXT NOT NULL,"
           " taints TEXT NOT NULL,"
           " schedule TEXT NOT NULL CHECK (schedule IN ('active', 'cordoned', 'draining')),"
           " status TEXT NOT NULL CHECK (status IN ('ready', 'unreachable')),"
           " inventory TEXT NOT NULL,"
           " joined_at BIGINT NOT NULL,"
           " last_heartbeat BIGINT NOT NULL)",
           "CREATE INDEX nodes_by_pool ON nodes (pool)",

           // Not a foreign key: a removed node's revoked serials must outlive the node row.
           "CREATE TABLE node_certs ("
           " serial TEXT PRIMARY KEY,"
           " node_id TEXT NOT NULL,"
           " issued_at BIGINT NOT NULL,"
           " not_after BIGINT NOT NULL,"
           " revoked_at BIGINT)",
           "CREATE INDEX node_certs_by_node ON node_certs (node_id)",
       }},
      // 4: jobs (issue 6, the job path). node_id is not a foreign key: a finished job keeps
      // naming the node it ran on after that node is removed.
      {4,
       {
           "CREATE TABLE jobs ("
           " id TEXT PRIMARY KEY,"
           " tenant_id TEXT NOT NULL REFERENCES tenants (id),"
           " name TEXT NOT NULL,"
           " spec TEXT NOT NULL,"
           " state TEXT NOT NULL CHECK (state IN"
           " ('queued', 'placed', 'running', 'done', 'failed', 'cancelled')),"
           " node_id TEXT,"
           " assignment TEXT NOT NULL,"
           " seq BIGINT NOT NULL UNIQUE,"
           " submitted_at BIGINT NOT NULL,"
           " started_at BIGINT NOT NULL DEFAULT 0,"
           " finished_at BIGINT NOT NULL DEFAULT 0,"
           " exit_code BIGINT,"
           " reason TEXT NOT NULL,"
           " submitted_by TEXT NOT NULL,"
           " cancel_requested_at BIGINT NOT NULL DEFAULT 0,"
           " cancel_grace_ms BIGINT NOT NULL DEFAULT 0)",
           "CREATE INDEX jobs_by_tenant ON jobs (tenant_id, seq)",
           "CREATE INDEX jobs_by_state ON jobs (state)",
       }},
      // 5: external (OIDC) identities linked to just-in-time users (issue 3, SSO).
      {5,
       {
           "CREATE TABLE external_identities ("
           " provider TEXT NOT NULL,"
           " subject TEXT NOT NULL,"
           " user_id TEXT NOT NULL REFERENCES users (id),"
           " email TEXT NOT NULL,"
           " created_at BIGINT NOT NULL,"
           " last_login_at BIGINT NOT NULL,"
           " PRIMARY KEY (provider, subject))",
           "CREATE INDEX external_identities_by_user ON external_identities (user_id)",
       }},
      // 6: cross-tenant shares of vault objects (issue 5). A share moves offered -> accepted |
      // declined, and offered/accepted -> revoked (owner) or declined (receiver); the moves are
      // compare-and-set UPDATEs, so a revoke racing an accept on another replica is never lost.
      // No foreign keys: DeleteTenant removes a tenant's shares on both sides itself.
      {6,
       {
           "CREATE TABLE vault_shares ("
           " id TEXT PRIMARY KEY,"
           " owner_tenant_id TEXT NOT NULL,"
           " name TEXT NOT NULL,"
           " is_prefix INTEGER NOT NULL CHECK (is_prefix IN (0, 1)),"
           " target_tenant_id TEXT NOT NULL,"
           " state TEXT NOT NULL CHECK (state IN ('offered', 'accepted', 'declined', 'revoked')),"
           " offered_by TEXT NOT NULL,"
           " offered_at BIGINT NOT NULL,"
           " decided_by TEXT NOT NULL DEFAULT '',"
           " decided_at BIGINT NOT NULL DEFAULT 0,"
           " revoked_by TEXT NOT NULL DEFAULT '',"
           " revoked_at BIGINT NOT NULL DEFAULT 0)",
           "CREATE INDEX vault_shares_by_owner ON vault_shares (owner_tenant_id)",
           "CREATE INDEX vault_shares_by_target ON vault_shares (target_tenant_id, state)",
       }},
      // 7: tenant isolation policy and quota (issue 6). No foreign key: a deleted tenant's row
      // is ignored by the job service.
      {7,
       {
           "CREATE TABLE tenant_policies ("
           " tenant_id TEXT PRIMARY KEY,"
           " policy TEXT NOT NULL,"
           " updated_at BIGINT NOT NULL,"
           " updated_by TEXT NOT NULL)",
       }},
      // 8: node pools dedicated to tenants (issue 6). `tenant_ids` is a JSON array of tenant ids;
      // a pool without a row (or with "[]") is a general pool. No foreign key: the job service
      // ignores the ids of deleted tenants.
      {8,
       {
           "CREATE TABLE pool_dedications ("
           " pool TEXT PRIMARY KEY,"
           " tenant_ids TEXT NOT NULL,"
           " updated_at BIGINT NOT NULL,"
           " updated_by TEXT NOT NULL)",
       }},
  };
  return *migrations;
}

absl::Status MigrateLocked(SqlDb& db, int64_t now) {
  WARDEN_RETURN_IF_ERROR(db.LockForMigration());
  WARDEN_RETURN_IF_ERROR(db.Exec("CREATE TABLE IF NOT EXISTS schema_migrations ("
                                 " version INTEGER PRIMARY KEY,"
                                 " applied_at BIGINT NOT NULL)")
                             .status());
  WARDEN_ASSIGN_OR_RETURN(Rows rows,
                          db.Query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"));
  int64_t current = 0;
  if (!rows.empty()) {
    WARDEN_ASSIGN_OR_RETURN(current, rows[0].Int(0));
  }
  if (current > LatestSchemaVersion()) {
    return absl::FailedPreconditionError(
        StrCat("store: database schema version ", current, " is newer than this binary's ",
               LatestSchemaVersion(), "; upgrade gpuwarden"));
  }
  for (const Migration& m : Migrations()) {
    if (m.version <= current) continue;
    for (std::string_view sql : m.statements) {
      auto r = db.Exec(sql);
      if (!r.ok()) {
        return absl::Status(r.status().code(), StrCat("store: migration ", m.version, ": ",
                                                      std::string(r.status().message())));
      }
    }
    WARDEN_RETURN_IF_ERROR(
        db.Exec("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                {int64_t{m.version}, now})
            .status());
  }
  return absl::OkStatus();
}

}  // namespace

int LatestSchemaVersion() { return Migrations().back().version; }

absl::Status Migrate(SqlDb& db, int64_t now) {
  WARDEN_RETURN_IF_ERROR(db.Begin());
  absl::Status s = MigrateLocked(db, now);
  if (!s.ok()) {
    (void)db.Rollback();  // the migration error is the one worth reporting
    return s;
  }
  return db.Commit();
}

}  // namespace warden::store::internal
