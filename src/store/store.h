// Store: gpuwarden's durable state behind one interface, with two backends chosen by URL:
//   sqlite:///abs/path/state.db (default; WAL) and postgres://user:pw@host:port/db (HA).
// Both run the same versioned migrations and the same SQL through one repository layer, so a
// test suite written against Store runs unchanged on either (tests/store/).
// Thread-safe: every method may be called from any thread. All SQL is parameterised.
//
// Errors: NotFound (no such row), AlreadyExists (unique name taken), InvalidArgument (bad URL,
// empty id or name, text with a NUL byte or invalid UTF-8), FailedPrecondition (a referenced
// tenant/user/role does not exist, or a row is still in use), Unavailable (the database cannot be
// reached), DataLoss (corrupt database; every later call fails too), Aborted (a transaction the
// database rolled back). A failed call leaves the store unchanged.
// Strings are stored verbatim; the store does not validate names (callers do, common/ids.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace warden::store {

// Timestamps are Unix seconds. Empty tenant_id means "cluster" (not inside any tenant).
struct Tenant {
  std::string id;
  std::string name;
  int64_t created_at = 0;
};

struct User {
  std::string id;
  std::string name;          // globally unique login name
  std::string tenant_id;     // home tenant; empty for cluster operators
  std::string password_hash; // PHC string (argon2id); empty for SSO-only users
  bool disabled = false;
  int64_t created_at = 0;
};

struct Session {
  std::string id_hash;  // SHA-256 hex of the opaque session token; the token itself is never stored
  std::string user_id;
  int64_t created_at = 0;
  int64_t last_seen = 0;
  int64_t expires_at = 0;  // absolute expiry
  bool mfa = false;        // opened with a second factor (TOTP or recovery code)
  int64_t mfa_at = 0;      // when a second factor was last checked for this session (0: never)
};

// A user's TOTP enrollment. The seed is stored sealed (AES-256-GCM under a key derived from the
// master key, bound to the user id); the store never holds it in clear.
struct UserMfa {
  std::string user_id;
  std::string sealed_secret;  // base64url of the sealed seed
  bool confirmed = false;     // false: enrolled, waiting for the first valid code
  int64_t last_step = -1;     // last accepted TOTP time step (-1: none); codes at or before it fail
  int64_t created_at = 0;
  int64_t confirmed_at = 0;
};

struct ApiToken {
  std::string id;
  std::string name;
  std::string token_hash;  // SHA-256 hex of the secret
  std::string user_id;     // owner
  std::string tenant_id;   // scope; empty = cluster
  std::string role_id;     // the role the token acts with, at tenant_id's scope
  int64_t created_at = 0;
  int64_t expires_at = 0;
  bool revoked = false;
};

struct Role {
  std::string id;
  std::string name;
  std::string tenant_id;                 // empty: cluster-wide role (built-ins are cluster-wide)
  std::vector<std::string> permissions;  // "resource:verb"
  bool builtin = false;
  int64_t created_at = 0;
};

struct Binding {
  std::string id;
  std::string subject_kind;  // "user" or "token"
  std::string subject_id;
  std::string role_id;
  std::string scope_tenant_id;  // empty = cluster scope
  int64_t created_at = 0;
};

// Cluster (issue 6). A join token is single-use: UseJoinToken marks it used atomically.
struct JoinToken {
  std::string id;
  std::string token_hash;  // SHA-256 hex of the secret
  std::string pool;        // the node pool a node joining with it lands in
  std::string created_by;  // user id
  int64_t created_at = 0;
  int64_t expires_at = 0;
  int64_t used_at = 0;       // 0: not used yet
  std::string used_by_node;  // node id, once used
};

struct Node {
  std::string id;
  std::string name;  // unique
  std::string pool;
  std::string labels_json = "{}";     // JSON object of string -> string
  std::string taints_json = "[]";     // JSON array of taint objects
  std::string schedule = "active";    // active | cordoned | draining
  std::string status = "ready";       // ready | unreachable
  std::string inventory_json = "{}";  // the agent's last inventory, as decoded and re-encoded
  int64_t joined_at = 0;
  int64_t last_heartbeat = 0;
};

struct NodeCert {
  std::string serial;  // uppercase hex
  std::string node_id;
  int64_t issued_at = 0;
  int64_t not_after = 0;
  int64_t revoked_at = 0;  // 0: not revoked
};

// A user's identity at an external identity provider (OIDC SSO, issue 3; schema version 5): the
// provider's configured name and its "sub", linked to the just-in-time gpuwarden user created at
// the first SSO login. (provider, subject) is unique: one IdP account is one gpuwarden user.
struct ExternalIdentity {
  std::string provider;
  std::string subject;
  std::string user_id;
  std::string email;  // as last asserted by the IdP ("" when none)
  int64_t created_at = 0;
  int64_t last_login_at = 0;
};

// Jobs (issue 6, migration 4). `spec_json` is the whole submitted spec (placement and run parts,
// canonical JSON); `assignment_json` the GPUs the scheduler gave it on `node_id` (a JSON array,
// "[]" when none). state: queued | placed | running | done | failed | cancelled. `seq` is the
// submission order (unique, assigned by CreateJob when 0). exit_code is meaningful only when
// has_exit_code. cancel_requested_at/cancel_grace_ms: a cancel asked for while the job was
// running (0: none).
struct Job {
  std::string id;
  std::string tenant_id;
  std::string name;
  std::string spec_json = "{}";
  std::string state = "queued";
  std::string node_id;
  std::string assignment_json = "[]";
  int64_t seq = 0;
  int64_t submitted_at = 0;
  int64_t started_at = 0;
  int64_t finished_at = 0;
  bool has_exit_code = false;
  int64_t exit_code = 0;
  std::string reason;
  std::string submitted_by;  // user id
  int64_t cancel_requested_at = 0;
  int64_t cancel_grace_ms = 0;
};

// A tenant's isolation policy and quota (issue 6, migration 7): `policy_json` is the canonical
// sched::TenantPolicyToJson text ({"isolation":...,"quota":{...}}); the job service decodes it.
struct TenantPolicy {
  std::string tenant_id;
  std::string policy_json = "{}";
  int64_t updated_at = 0;
  std::string updated_by;  // user id
};

// A node pool's dedication (issue 6, migration 8): `tenant_ids_json` is a JSON array of the ids
// of the tenants the pool is reserved for, sorted; "[]" makes it a general pool again.
struct PoolDedication {
  std::string pool;
  std::string tenant_ids_json = "[]";
  int64_t updated_at = 0;
  std::string updated_by;  // user id
};

// A cross-tenant share of vault objects (issue 5, migration 6): `name` in the owner tenant (a
// name prefix when is_prefix) offered to the target tenant. state: offered | accepted | declined |
// revoked. decided_*: who accepted or declined; revoked_*: who revoked (owner side).
struct VaultShare {
  std::string id;
  std::string owner_tenant_id;
  std::string name;
  bool is_prefix = false;
  std::string target_tenant_id;
  std::string state = "offered";
  std::string offered_by;
  int64_t offered_at = 0;
  std::string decided_by;
  int64_t decided_at = 0;
  std::string revoked_by;
  int64_t revoked_at = 0;
};

struct StoreOptions {
  std::string url;  // sqlite:///path or postgres://...
};

class Store {
 public:
  virtual ~Store() = default;

  // Name of the backend: "sqlite" or "postgres".
  virtual std::string Backend() const = 0;
  // Highest migration version applied.
  virtual absl::StatusOr<int> SchemaVersion() = 0;
  // Runs `fn` in one transaction: commits if it returns OK, rolls back otherwise. Calls on this
  // Store from inside `fn` on the same thread join the transaction; other threads' calls wait
  // until it ends. A nested InTransaction (and every write method, which is one) that fails
  // undoes only its own writes, so `fn` may handle e.g. AlreadyExists and carry on.
  virtual absl::Status InTransaction(const std::function<absl::Status()>& fn) = 0;

  // Tenants. Names are unique. DeleteTenant fails with FailedPrecondition while users remain.
  virtual absl::Status CreateTenant(const Tenant& t) = 0;
  virtual absl::StatusOr<Tenant> GetTenant(const std::string& id) = 0;
  virtual absl::StatusOr<Tenant> GetTenantByName(const std::string& name) = 0;
  virtual absl::StatusOr<std::vector<Tenant>> ListTenants() = 0;
  virtual absl::Status DeleteTenant(const std::string& id) = 0;

  // Users. Names are unique across the cluster.
  virtual absl::Status CreateUser(const User& u) = 0;
  virtual absl::StatusOr<User> GetUser(const std::string& id) = 0;
  virtual absl::StatusOr<User> GetUserByName(const std::string& name) = 0;
  // All users when tenant_id is nullopt, else those of that tenant.
  virtual absl::StatusOr<std::vector<User>> ListUsers(std::optional<std::string> tenant_id) = 0;
  virtual absl::Status SetUserDisabled(const std::string& id, bool disabled) = 0;
  virtual absl::Status SetUserPassword(const std::string& id, const std::string& hash) = 0;

  // Sessions.
  virtual absl::Status CreateSession(const Session& s) = 0;
  virtual absl::StatusOr<Session> GetSession(const std::string& id_hash) = 0;
  virtual absl::Status TouchSession(const std::string& id_hash, int64_t last_seen) = 0;
  virtual absl::Status DeleteSession(const std::string& id_hash) = 0;
  virtual absl::Status DeleteUserSessions(const std::string& user_id) = 0;
  // Removes sessions whose absolute expiry is before `now`; returns how many.
  virtual absl::StatusOr<int64_t> DeleteExpiredSessions(int64_t now) = 0;

  // MFA (TOTP) enrollment and recovery codes (schema version 2).
  // Starts (or restarts) an enrollment: stores `m` unconfirmed, replacing an unconfirmed one.
  // FailedPrecondition "MFA is already enabled" when a confirmed enrollment exists;
  // FailedPrecondition when the user does not exist.
  virtual absl::Status PutPendingMfa(const UserMfa& m) = 0;
  // NotFound when the user has no enrollment (pending or confirmed).
  virtual absl::StatusOr<UserMfa> GetUserMfa(const std::string& user_id) = 0;
  // Marks the pending enrollment confirmed at `now` with `step` as the last accepted step and
  // replaces the user's recovery codes with `recovery_hashes`, in one transaction. NotFound: no
  // enrollment; FailedPrecondition: already confirmed; Aborted: `step` is not after the stored
  // last step (another request used the code first).
  virtual absl::Status ConfirmMfa(const std::string& user_id, int64_t step, int64_t now,
                                  const std::vector<std::string>& recovery_hashes) = 0;
  // Compare-and-set of the replay guard: stores `step` only if it is after the stored last step.
  // Aborted "code already used" otherwise (so two replicas cannot both accept one code);
  // NotFound without a confirmed enrollment.
  virtual absl::Status AdvanceMfaStep(const std::string& user_id, int64_t step) = 0;
  // Deletes the recovery code with this hash (single use). NotFound when the user has no such
  // unused code.
  virtual absl::Status ConsumeRecoveryCode(const std::string& user_id,
                                           const std::string& code_hash) = 0;
  virtual absl::StatusOr<int64_t> CountRecoveryCodes(const std::string& user_id) = 0;
  // Removes the enrollment and every recovery code of the user. OK if there was none.
  virtual absl::Status DeleteUserMfa(const std::string& user_id) = 0;

  // API tokens.
  virtual absl::Status CreateToken(const ApiToken& t) = 0;
  virtual absl::StatusOr<ApiToken> GetToken(const std::string& id) = 0;
  virtual absl::StatusOr<ApiToken> GetTokenByHash(const std::string& token_hash) = 0;
  // Filters are ANDed; nullopt means any.
  virtual absl::StatusOr<std::vector<ApiToken>> ListTokens(std::optional<std::string> tenant_id,
                                                           std::optional<std::string> user_id) = 0;
  virtual absl::Status RevokeToken(const std::string& id) = 0;

  // Roles. (tenant_id, name) is unique.
  virtual absl::Status CreateRole(const Role& r) = 0;
  virtual absl::StatusOr<Role> GetRole(const std::string& id) = 0;
  virtual absl::StatusOr<Role> GetRoleByName(const std::string& tenant_id,
                                             const std::string& name) = 0;
  virtual absl::StatusOr<std::vector<Role>> ListRoles() = 0;
  // FailedPrecondition while bindings or tokens refer to the role.
  virtual absl::Status DeleteRole(const std::string& id) = 0;

  // Bindings. (subject_kind, subject_id, role_id, scope_tenant_id) is unique.
  virtual absl::Status CreateBinding(const Binding& b) = 0;
  virtual absl::StatusOr<std::vector<Binding>> ListBindings() = 0;
  virtual absl::Status DeleteBinding(const std::string& id) = 0;

  // External (SSO) identities (schema version 5). LinkExternalIdentity: AlreadyExists when
  // (provider, subject) is linked already, FailedPrecondition when the user does not exist.
  // GetExternalIdentity: NotFound when not linked. TouchExternalIdentity records a login (and the
  // e-mail the IdP asserted then); NotFound when not linked.
  virtual absl::Status LinkExternalIdentity(const ExternalIdentity& x) = 0;
  virtual absl::StatusOr<ExternalIdentity> GetExternalIdentity(const std::string& provider,
                                                               const std::string& subject) = 0;
  virtual absl::Status TouchExternalIdentity(const std::string& provider,
                                             const std::string& subject, const std::string& email,
                                             int64_t at) = 0;

  // Bumped by every change to users, roles, bindings or tokens: callers that cache compiled
  // authorization state compare it to decide when to rebuild.
  virtual absl::StatusOr<int64_t> PolicyGeneration() = 0;

  // Join tokens. UseJoinToken marks the token with `token_hash` used by `node_id` at `now` and
  // returns it (as it was before): NotFound for an unknown hash, FailedPrecondition "already
  // used" or "expired" (expires_at <= now). Exactly one of several concurrent callers succeeds.
  virtual absl::Status CreateJoinToken(const JoinToken& t) = 0;
  virtual absl::StatusOr<std::vector<JoinToken>> ListJoinTokens() = 0;
  virtual absl::StatusOr<JoinToken> UseJoinToken(const std::string& token_hash, int64_t now,
                                                 const std::string& node_id) = 0;

  // Nodes. Names are unique. UpdateNode replaces every column but id, name and joined_at.
  virtual absl::Status CreateNode(const Node& n) = 0;
  virtual absl::StatusOr<Node> GetNode(const std::string& id) = 0;
  virtual absl::StatusOr<Node> GetNodeByName(const std::string& name) = 0;
  virtual absl::StatusOr<std::vector<Node>> ListNodes() = 0;
  virtual absl::Status UpdateNode(const Node& n) = 0;
  virtual absl::Status DeleteNode(const std::string& id) = 0;

  // Node certificates: every serial the CA issued to a node, and its revocation.
  virtual absl::Status AddNodeCert(const NodeCert& c) = 0;
  virtual absl::StatusOr<NodeCert> GetNodeCert(const std::string& serial) = 0;
  // Revokes every not yet revoked certificate of the node; returns how many.
  virtual absl::StatusOr<int64_t> RevokeNodeCerts(const std::string& node_id, int64_t now) = 0;

  // Jobs (schema version 4). CreateJob assigns `seq` (max + 1) when it is 0 and returns the job
  // as stored; FailedPrecondition for an unknown tenant. UpdateJob replaces every column but id,
  // tenant_id, name, spec_json, seq, submitted_at and submitted_by. ListJobs filters are ANDed
  // (nullopt: any) and the result is in submission order. `active_only` keeps queued, placed and
  // running jobs.
  virtual absl::StatusOr<Job> CreateJob(const Job& j) = 0;
  virtual absl::StatusOr<Job> GetJob(const std::string& id) = 0;
  virtual absl::StatusOr<std::vector<Job>> ListJobs(std::optional<std::string> tenant_id,
                                                    std::optional<std::string> state,
                                                    bool active_only = false) = 0;
  virtual absl::Status UpdateJob(const Job& j) = 0;

  // Tenant isolation policy and quota (schema version 7). Put inserts or replaces the tenant's
  // row; List returns every row (tenants without one have the defaults).
  virtual absl::Status PutTenantPolicy(const TenantPolicy& p) = 0;
  virtual absl::StatusOr<std::vector<TenantPolicy>> ListTenantPolicies() = 0;
  // Pool dedications (schema version 8). Put inserts or replaces the pool's row; List returns
  // every row, by pool name.
  virtual absl::Status PutPoolDedication(const PoolDedication& d) = 0;
  virtual absl::StatusOr<std::vector<PoolDedication>> ListPoolDedications() = 0;
  // Vault shares (schema version 6). CreateVaultShare: AlreadyExists for a taken id.
  // GetVaultShare: NotFound. TransitionVaultShare moves the share to `to` only if its state is one
  // of `from` now (one compare-and-set UPDATE), recording `by`/`at` as decided_* (accepted,
  // declined) or revoked_* (revoked); NotFound for an unknown id, FailedPrecondition naming the
  // current state otherwise. ListVaultShares: the shares a tenant owns or was offered, oldest first.
  virtual absl::Status CreateVaultShare(const VaultShare& s) = 0;
  virtual absl::StatusOr<VaultShare> GetVaultShare(const std::string& id) = 0;
  virtual absl::StatusOr<VaultShare> TransitionVaultShare(const std::string& id,
                                                          const std::vector<std::string>& from,
                                                          const std::string& to,
                                                          const std::string& by, int64_t at) = 0;
  virtual absl::StatusOr<std::vector<VaultShare>> ListVaultShares(const std::string& tenant_id) = 0;
};

// Opens (creating if needed) and migrates the store at options.url.
absl::StatusOr<std::unique_ptr<Store>> OpenStore(const StoreOptions& options);

}  // namespace warden::store
