// ApiService: the JSON API under /api/v1/ as one table of routes, each declaring the permission
// it needs and the scope it is checked at, and the pipeline every request passes:
//   authenticate -> resolve scope -> authorize -> handler -> audit (exactly one event).
// The table is validated when the service is created: a route without a permission (or an
// explicit "public"/"authenticated") refuses to start the server.
// Thread-safe; owns nothing but caches (compiled RBAC policy, tenant names).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "audit/audit.h"
#include "auth/auth.h"
#include "cluster/cluster.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/json.h"
#include "common/rng.h"
#include "http/http.h"
#include "rbac/rbac.h"
#include "store/store.h"

namespace warden::vault {
enum class DataAction : uint8_t;
}  // namespace warden::vault
namespace warden::api {
struct JobRun;
struct JobDataset;
}  // namespace warden::api

namespace warden::server {

class VaultService;  // vault_routes.h
struct AgentDatasetRead;  // job_datasets.h
struct SharedMountDecision;  // job_datasets.h
struct AgentImage;        // agent_api.h
struct AgentDatasetWriteBack;  // job_datasets.h
struct AgentDatasetWritten;    // job_datasets.h

struct ApiRequest {
  std::string method;
  std::string path;
  std::string body;
  std::string source;      // client ip:port
  std::string request_id;
  std::string authorization;  // the Authorization header, as sent
  std::string otp;            // the X-Warden-OTP header (a second factor for step-up), as sent
  std::map<std::string, std::string> params;  // path parameters, already percent-decoded
  std::map<std::string, std::string> query;
  std::string raw_query;  // the query string as sent (OIDC callbacks check it whole)
  std::string cookie;     // the Cookie header, as sent (only the SSO login binding reads it)
  // Routes with RouteSpec::stream_body_max: the body, pulled in pieces (`body` stays empty).
  http::BodyReader* body_stream = nullptr;
};

struct ApiResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra fields (Location, Set-Cookie)
  http::BodySource body_source;  // streamed body (then `body` is unused); see http::Response
  int64_t content_length = -1;
};

class ApiService;
class JobService;  // job_service.h

// How a route's permission is scoped.
enum class Scope {
  kCluster,  // checked at cluster scope
  kTenant,   // checked at the tenant named by the {tenant} path parameter
  kAny,      // allowed if held at cluster scope or at any tenant; the handler filters results
};

// RouteSpec::flags.
// Step-up (issue 3): the route needs a second factor checked within MfaConfig::step_up_window, or
// a fresh code in the X-Warden-OTP header. For role binding changes, token creation, and later
// dataset copy/export, key rotation and patch rollouts.
inline constexpr unsigned kRouteStepUp = 1;
// Usable by a user who must enroll in MFA and has not yet (every other route answers 403 "MFA
// enrollment required"): MFA enrollment itself, whoami, logout.
inline constexpr unsigned kRouteMfaExempt = 2;
// A GET that reads data an auditor must be able to prove was read (audit events and exports,
// later dataset downloads): its audit event is durable (fdatasync) before the response, like a
// mutation's. Other GETs are audited without waiting for the disk unless audit.durable_reads.
inline constexpr unsigned kRouteDurableRead = 4;
// The route table's body limit of image imports; the enforced one is
// ApiServiceOptions::image_max_import_bytes (ApiService::StreamBodyLimit).
inline constexpr uint64_t kMaxImageImportBytes = uint64_t{1} << 40;
// The most one streamed dataset upload request (PUT .../uploads/{upload}) may carry: 1 TiB.
inline constexpr uint64_t kMaxStreamedUploadBytes = uint64_t{1} << 40;
// A dataset read (list, show, content) that another tenant's principal may make through an
// accepted share (issue 5, vault_share_routes.cc): when the caller lacks the route's permission at
// {tenant}, it is checked at the caller's home tenant instead, and the request goes on only if an
// accepted, unrevoked share from {tenant} to that home tenant covers the named object (for a
// listing: some share exists; the listing is filtered to shared names). Call::shared_read says so.
inline constexpr unsigned kRouteSharedRead = 8;

struct RouteSpec {
  const char* method;
  const char* pattern;     // e.g. "/api/v1/tenants/{tenant}/users"
  const char* permission;  // "resource:verb", or "public", or "authenticated"
  Scope scope;
  const char* action;      // audit action; nullptr: the permission
  // The handler; receives the request after authorization.
  absl::StatusOr<common::Json> (ApiService::*handler)(struct Call&);
  int ok_status = 200;
  unsigned flags = 0;  // kRouteStepUp, kRouteMfaExempt, kRouteDurableRead
  // > 0: the request body is streamed to the handler (ApiRequest::body_stream) up to this many
  // bytes instead of being buffered under http.max_body_bytes (dataset uploads).
  uint64_t stream_body_max = 0;
};

// Everything a handler knows about the call in progress.
struct Call {
  explicit Call(ApiRequest& r) : req(r) {}
  ApiRequest& req;
  std::optional<auth::Identity> identity;
  rbac::Grants grants;
  std::shared_ptr<const rbac::Policy> policy;
  std::string tenant_id;    // resolved {tenant}; empty for cluster scope
  std::string tenant_name;
  rbac::TenantRef tenant_ref = rbac::TenantRef::Cluster();
  // Filled by handlers: the audit event's actor for unauthenticated calls (login), and a
  // non-JSON body (metrics).
  std::string actor_name;
  std::optional<std::string> raw_body;
  std::string content_type;
  // A streamed response body (dataset downloads), produced after the audit event is recorded.
  http::BodySource body_source;
  int64_t content_length = -1;
  std::vector<std::pair<std::string, std::string>> response_headers;  // sent whatever the outcome
  // Data access (vault_routes.cc): bytes read or written, and the data policy decision(s)
  // (document and statement), recorded in the audit event.
  int64_t bytes = 0;
  std::string data_decision;
  // Set when the call reads {tenant}'s data through a share (kRouteSharedRead): the reader's home
  // tenant id; the data decisions then go through AuthorizeSharedData.
  std::string shared_read_by_tenant_id;
};

struct ApiServiceOptions {
  std::string version;
  std::string audit_dir;  // where ListAudit reads events from
  // Renders /metrics (the process's Prometheus registry).
  std::function<std::string()> render_metrics;
  common::MfaConfig mfa;  // who must have MFA, the step-up window
  bool durable_reads = false;  // every GET's audit event waits for fdatasync (audit.durable_reads)
  // Nodes and join (issue 6; handlers in node_routes.cc). Null: those routes answer 503.
  cluster::Cluster* cluster = nullptr;
  std::function<int()> agent_port;  // the agents' mTLS port, told to joining agents
  class SsoService* sso = nullptr;  // OIDC single sign-on (sso_service.h); null: none configured
  // Jobs (issue 6; handlers in job_routes.cc). Null: those routes answer 503.
  JobService* jobs = nullptr;
  // The encrypted vault (issue 5; handlers in vault_routes.cc). Null: those routes answer 503.
  VaultService* vault = nullptr;
  // Per-tenant container images (issue 7; image_routes.cc): DATA_DIR/images. Empty: the image
  // routes answer 503 and jobs may name only the host image.
  std::string image_dir;
  uint64_t image_max_import_bytes = uint64_t{16} << 30;  // images.max_import_bytes (413 above)
};

class ApiService {
 public:
  static absl::StatusOr<std::unique_ptr<ApiService>> Create(store::Store& store,
                                                           auth::Authenticator& authenticator,
                                                           audit::AuditLog& audit,
                                                           common::Clock& clock, common::Rng& rng,
                                                           ApiServiceOptions options);

  // The route table (static; validated by Create).
  static const std::vector<RouteSpec>& Routes();

 private:
  struct CompiledRoute {
    std::optional<rbac::Permission> permission;
    bool is_public = false;
  };

 public:
  // Checks a route table: every route names a valid permission ("resource:verb") or says
  // "public"/"authenticated", and tenant-scoped routes have a {tenant} parameter. Internal error
  // naming the route otherwise; the server refuses to start on it.
  static absl::StatusOr<std::map<const RouteSpec*, CompiledRoute>> CompileRoutes(
      const std::vector<RouteSpec>& routes);

  // Runs the whole pipeline for a matched route. Never throws; every outcome (including 401/403/
  // 404/500) is returned as a JSON response and recorded as exactly one audit event.
  ApiResponse Handle(const RouteSpec& route, ApiRequest& req);
  // For requests that matched no route (404/405), and (with action "http:rejected") requests the
  // HTTP layer refused itself (413/431/400): answered and audited the same way.
  ApiResponse HandleUnmatched(ApiRequest& req, int status, const std::string& message,
                              const char* action = "api:unmatched");

  // Whether a request to `route` (nullptr: no route matched) may have its audit event queued
  // without waiting for the disk: GETs, unless the route has kRouteDurableRead or the server runs
  // with audit.durable_reads. Such requests run on the event loops; the rest on the blocking pool.
  bool AuditsWithoutWaiting(std::string_view method, const RouteSpec* route) const;

  // False while the audit log cannot write (the API then refuses everything with 503).
  bool Healthy() const { return audit_.Healthy(); }
  // Drops cached tenant records so changes made by other replicas are seen (housekeeping).
  void ForgetCachedTenants();
  // Reloads roles and bindings from the store and swaps the compiled policy.
  absl::Status RefreshPolicy();
  // Creates the first cluster admin if no user exists. Returns the password used (generated
  // when `password` is empty) or std::nullopt when an admin already existed.
  absl::StatusOr<std::optional<std::string>> Bootstrap(const std::string& admin_name,
                                                       const std::string& password);

  // Handlers (public so the route table can name them).
  absl::StatusOr<common::Json> Version(Call& c);
  absl::StatusOr<common::Json> Login(Call& c);
  absl::StatusOr<common::Json> Logout(Call& c);
  absl::StatusOr<common::Json> WhoAmI(Call& c);
  absl::StatusOr<common::Json> ChangePassword(Call& c);
  absl::StatusOr<common::Json> ListTenants(Call& c);
  absl::StatusOr<common::Json> CreateTenant(Call& c);
  absl::StatusOr<common::Json> GetTenant(Call& c);
  absl::StatusOr<common::Json> DeleteTenant(Call& c);
  absl::StatusOr<common::Json> ListUsers(Call& c);
  absl::StatusOr<common::Json> CreateUser(Call& c);
  absl::StatusOr<common::Json> DisableUser(Call& c);
  absl::StatusOr<common::Json> EnableUser(Call& c);
  absl::StatusOr<common::Json> ListRoles(Call& c);
  absl::StatusOr<common::Json> CreateRole(Call& c);
  absl::StatusOr<common::Json> DeleteRole(Call& c);
  absl::StatusOr<common::Json> ListBindings(Call& c);
  absl::StatusOr<common::Json> CreateBinding(Call& c);
  absl::StatusOr<common::Json> DeleteBinding(Call& c);
  absl::StatusOr<common::Json> ListTokens(Call& c);
  absl::StatusOr<common::Json> CreateToken(Call& c);
  absl::StatusOr<common::Json> RevokeToken(Call& c);
  absl::StatusOr<common::Json> ListAudit(Call& c);
  // MFA and session routes (mfa_routes.cc).
  absl::StatusOr<common::Json> MfaStatus(Call& c);
  absl::StatusOr<common::Json> MfaEnroll(Call& c);
  absl::StatusOr<common::Json> MfaConfirm(Call& c);
  absl::StatusOr<common::Json> MfaDisable(Call& c);
  absl::StatusOr<common::Json> MfaStepUp(Call& c);
  absl::StatusOr<common::Json> MfaReset(Call& c);
  absl::StatusOr<common::Json> LogoutAll(Call& c);
  // node_routes.cc
  absl::StatusOr<common::Json> CreateJoinToken(Call& c);
  absl::StatusOr<common::Json> ListJoinTokens(Call& c);
  absl::StatusOr<common::Json> JoinNode(Call& c);
  absl::StatusOr<common::Json> ListNodes(Call& c);
  absl::StatusOr<common::Json> GetNode(Call& c);
  absl::StatusOr<common::Json> CordonNode(Call& c);
  absl::StatusOr<common::Json> UncordonNode(Call& c);
  absl::StatusOr<common::Json> DrainNode(Call& c);
  absl::StatusOr<common::Json> LabelNode(Call& c);
  absl::StatusOr<common::Json> TaintNode(Call& c);
  absl::StatusOr<common::Json> PatchNode(Call& c);  // node_pool_routes.cc (issue 6)
  absl::StatusOr<common::Json> ListPools(Call& c);  // node_pool_routes.cc (issue 6)
  absl::StatusOr<common::Json> PutPool(Call& c);    // node_pool_routes.cc (issue 6)
  absl::StatusOr<common::Json> DeleteNode(Call& c);
  absl::StatusOr<common::Json> SetNodeSchedule(Call& c, const char* schedule);
  // audit_routes.cc
  absl::StatusOr<common::Json> QueryAudit(Call& c);
  absl::StatusOr<common::Json> ExportAudit(Call& c);
  absl::StatusOr<common::Json> GetAuditCheckpoint(Call& c);
  absl::StatusOr<common::Json> GetAuditPublicKey(Call& c);
  absl::StatusOr<common::Json> AuditInclusionProof(Call& c);
  absl::StatusOr<common::Json> AuditConsistencyProof(Call& c);
  // Single sign-on routes (oidc_routes.cc).
  absl::StatusOr<common::Json> SsoProviders(Call& c);
  absl::StatusOr<common::Json> SsoLoginStart(Call& c);
  absl::StatusOr<common::Json> SsoCallback(Call& c);
  absl::StatusOr<common::Json> SsoDeviceStart(Call& c);
  absl::StatusOr<common::Json> SsoDevicePoll(Call& c);
  // job_routes.cc
  absl::StatusOr<common::Json> SubmitJob(Call& c);
  absl::StatusOr<common::Json> ListJobs(Call& c);
  absl::StatusOr<common::Json> GetJob(Call& c);
  absl::StatusOr<common::Json> CancelJob(Call& c);
  absl::StatusOr<common::Json> JobLogs(Call& c);
  // tenant_policy_routes.cc
  absl::StatusOr<common::Json> GetTenantPolicy(Call& c);
  absl::StatusOr<common::Json> PutTenantPolicy(Call& c);
  // vault_routes.cc
  absl::StatusOr<common::Json> ListDatasets(Call& c);
  absl::StatusOr<common::Json> ShowDataset(Call& c);
  absl::StatusOr<common::Json> DeleteDataset(Call& c);
  absl::StatusOr<common::Json> ReadDataset(Call& c);
  absl::StatusOr<common::Json> VerifyDataset(Call& c);
  absl::StatusOr<common::Json> CreateUpload(Call& c);
  absl::StatusOr<common::Json> AppendUpload(Call& c);
  absl::StatusOr<common::Json> GetUpload(Call& c);
  absl::StatusOr<common::Json> CommitUpload(Call& c);
  absl::StatusOr<common::Json> AbortUpload(Call& c);
  absl::StatusOr<common::Json> GetDataPolicies(Call& c);
  absl::StatusOr<common::Json> PutDataPolicy(Call& c);
  absl::StatusOr<common::Json> DeleteDataPolicy(Call& c);
  absl::StatusOr<common::Json> KeyStatus(Call& c);
  absl::StatusOr<common::Json> RotateKey(Call& c);
  // job_datasets.cc: a dataset range for the agent a job is placed on, re-authorized for the
  // job's submitter (job_datasets.h AgentDatasetReader).
  absl::Status ReadJobDatasetForAgent(const std::string& node_id, const std::string& job_id,
                                      uint64_t index, uint64_t first_chunk, uint64_t count,
                                      AgentDatasetRead& out);
  // agent_dataset_writeback.cc: a job's `write` dataset streamed back by its agent, re-authorized
  // for the job's submitter and stored as the name's next version (job_datasets.h).
  absl::Status WriteBackJobDatasetForAgent(const AgentDatasetWriteBack& in, AgentDatasetWritten& out);
  // vault_share_routes.cc: cross-tenant shares.
  absl::StatusOr<common::Json> CreateShare(Call& c);
  absl::StatusOr<common::Json> ListShares(Call& c);
  absl::StatusOr<common::Json> AcceptShare(Call& c);
  absl::StatusOr<common::Json> DeclineShare(Call& c);
  absl::StatusOr<common::Json> RevokeShare(Call& c);
  // image_routes.cc: per-tenant container images (issue 7).
  absl::StatusOr<common::Json> ImportImage(Call& c);
  absl::StatusOr<common::Json> ListImages(Call& c);
  absl::StatusOr<common::Json> ShowImage(Call& c);
  absl::StatusOr<common::Json> DeleteImage(Call& c);
  // The image archive of a job placed on `node_id`, looked up in the JOB's tenant only
  // (agent_api.h AgentImageReader).
  absl::Status OpenJobImageForAgent(const std::string& node_id, const std::string& job_id,
                                    const std::string& expected_digest, struct AgentImage& out);
  // The streamed-body limit of `route` (server.cc): the configured image limit for image
  // imports, RouteSpec::stream_body_max otherwise.
  uint64_t StreamBodyLimit(const RouteSpec& route) const;

 private:
  ApiService(store::Store& store, auth::Authenticator& authenticator, audit::AuditLog& audit,
             common::Clock& clock, common::Rng& rng, ApiServiceOptions options)
      : store_(store), auth_(authenticator), audit_(audit), clock_(clock), rng_(rng),
        options_(std::move(options)) {}

  std::shared_ptr<const rbac::Policy> policy() const;
  absl::Status ResolveTenant(Call& c);
  rbac::Grants GrantsOf(const rbac::Policy& policy, const auth::Identity& id) const;
  absl::StatusOr<store::User> UserInScope(Call& c, const std::string& name);
  absl::StatusOr<store::Role> RoleByName(Call& c, const std::string& name);
  rbac::RoleDef ToRoleDef(const store::Role& r) const;
  common::Json UserJson(const store::User& u);
  common::Json RoleJson(const store::Role& r);
  std::string TenantNameOf(const std::string& tenant_id);
  void Audit(const Call& c, const char* action, int status, const std::string& reason,
             bool wait);
  // MFA policy (mfa_routes.cc): whether `grants` (of a user at home tenant `home_tenant_id`) make
  // MFA mandatory under options_.mfa; and the per-request checks run after authorization.
  bool NeedsMfa(const rbac::Grants& grants, const std::string& home_tenant_id);
  absl::Status CheckMfaPolicy(const RouteSpec& route, Call& c);
  absl::Status CheckStepUp(Call& c);
  // Who a bearer credential is (oidc_routes.cc): our own gws_/gwt_ secrets go to the
  // Authenticator, IdP JWT access tokens to the SsoService.
  absl::StatusOr<auth::Identity> AuthenticateCaller(const std::string& token);
  // The session answer of an SSO login (shaped like Login's) for `principal`.
  absl::StatusOr<common::Json> SsoSession(Call& c, const struct SsoPrincipal& principal,
                                          const char* flow);
  // vault_routes.cc: the data policy decision for one access (records it in c.data_decision;
  // PermissionDenied naming the policy and statement when refused); crypto-shredding on tenant
  // deletion (audited as "keys:shred").
  absl::Status AuthorizeData(Call& c, vault::DataAction action, const std::string& name,
                             const std::string& object_id);
  absl::Status ShredTenantData(Call& c, const std::string& tenant_id);
  // job_datasets.cc: authorizes and pins each dataset a submitted job names (records the
  // decisions in c.data_decision); PermissionDenied for a cross-tenant mount or a refused read.
  absl::Status AuthorizeJobDatasets(Call& c, api::JobRun& run);
  absl::Status AuthorizeJobDataset(Call& c, size_t index, api::JobDataset& d);
  // job_dataset_shares.cc: a dataset of another tenant mounted into c's tenant's job through an
  // accepted share (submit), and the checks submit and every agent fetch share.
  absl::Status AuthorizeSharedJobDataset(Call& c, const std::string& where, api::JobDataset& d);
  absl::Status SharedMountGate(const rbac::Grants& grants, rbac::TenantRef job_tenant_ref,
                               const std::string& owner_tenant_id, const std::string& job_tenant_id,
                               const std::string& name, SharedMountDecision& out);
  absl::Status SharedMountPolicy(const auth::Identity& id, const std::string& owner_tenant_id,
                                 const std::string& job_tenant_id, const std::string& name,
                                 const std::string& object_id, SharedMountDecision& out);
  // job_datasets.cc: chunks of the object version a job's dataset pinned, from its owner tenant.
  absl::Status ReadPinnedChunks(const std::string& owner_tenant_id, const api::JobDataset& d,
                                uint64_t first_chunk, uint64_t count, AgentDatasetRead& out);
  // image_routes.cc: a job's image is "host" or a digest the JOB'S tenant imported
  // (InvalidArgument "unknown image" otherwise, also for another tenant's digest).
  absl::Status AuthorizeJobImage(Call& c, const api::JobRun& run);
  // agent_dataset_writeback.cc: a `write` dataset at submit (data `write` on the name).
  absl::Status AuthorizeJobWriteDataset(Call& c, const std::string& where, api::JobDataset& d);
  // job_datasets.cc: `action` on dataset `d` of a job re-decided for the job's
  // submitter with today's state (user enabled, token unrevoked and unexpired, RBAC under the
  // current policy, the tenant's data policies with `role:` principals); `decision` says why.
  // ReadJobDatasetForAgent makes it for `read`, the write-back for `write` (job_datasets.cc).
  absl::StatusOr<auth::Identity> JobSubmitterIdentity(const api::JobDataset& d, std::string_view verb,
                                                      std::string& decision);
  absl::Status RecheckJobSubmitter(const std::string& tenant_id, const api::JobDataset& d,
                                   vault::DataAction action, const std::string& object_id,
                                   std::string& decision);
  // vault_share_routes.cc: whether a caller without `permission` at {tenant} may read there
  // through a share (kRouteSharedRead; sets c.shared_read_by_tenant_id); the data decision of such
  // a read (records the share id in c.data_decision); a listing filtered to shared names.
  bool SharedReadAllowed(Call& c, const rbac::Permission& permission);
  absl::Status AuthorizeSharedData(Call& c, vault::DataAction action, const std::string& name);
  absl::StatusOr<common::Json> ListSharedDatasets(Call& c);

  store::Store& store_;
  auth::Authenticator& auth_;
  audit::AuditLog& audit_;
  common::Clock& clock_;
  common::Rng& rng_;
  ApiServiceOptions options_;
  std::map<const RouteSpec*, CompiledRoute> compiled_;

  mutable std::mutex mu_;
  std::shared_ptr<const rbac::Policy> policy_;  // guarded by mu_
  // Tenants rarely change and are read on every tenant-scoped request: cached here, updated by
  // this replica's own changes and dropped by ForgetCachedTenants (other replicas' changes).
  std::map<std::string, store::Tenant, std::less<>> tenants_;  // id -> tenant, guarded by mu_
  std::map<std::string, std::string, std::less<>> tenant_ids_;  // name -> id, guarded by mu_
  void CacheTenant(const store::Tenant& t);  // requires mu_
};

}  // namespace warden::server
