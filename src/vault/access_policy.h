// Data access policies: JSON documents that grant or deny read / write / copy / admin on a
// tenant's objects (by object id, exact name or name prefix) to users, roles, groups or API
// tokens. Parsed and compiled once (action bitmasks, hashed principal and name sets); evaluated
// per request without parsing. Explicit deny wins; nothing matching means deny.
//
// Document (strict JSON: unknown keys and duplicate keys are refused):
//   {"version": 1,
//    "statements": [
//      {"id": "ml-read", "effect": "allow", "actions": ["read", "copy"],
//       "principals": ["group:ml", "role:developer", "user:usr_1", "token:tok_1", "*"],
//       "resources": ["prefix:datasets/", "name:ckpt/final.pt", "object:obj_1", "*"]}]}
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rbac/rbac.h"

namespace warden::vault {

enum class DataAction : uint8_t { kRead = 1, kWrite = 2, kCopy = 4, kAdmin = 8 };
std::string_view DataActionName(DataAction a);

inline constexpr size_t kMaxPolicyBytes = 64 * 1024;
inline constexpr size_t kMaxStatements = 256;
inline constexpr size_t kMaxEntriesPerList = 128;

// Who asks and for what. Views must outlive the call.
struct AccessRequest {
  DataAction action = DataAction::kRead;
  std::string_view user_id;              // the acting user (a token's owner when a token acts)
  std::string_view token_id;             // "" unless the request came with an API token
  std::vector<std::string_view> roles;   // role ids the caller holds at this tenant
  std::vector<std::string_view> groups;  // groups from the identity provider
  std::string_view object_id;
  std::string_view name;
};

struct AccessDecision {
  bool allowed = false;
  std::string policy;     // name of the document whose statement decided ("" if none)
  std::string statement;  // that statement's id
  std::string reason;     // for the audit event and the 403 body
};

// One compiled document. Immutable after Parse; thread-safe to share.
class AccessPolicy {
 public:
  // InvalidArgument naming the statement and field for anything malformed: unknown action,
  // principal kind or resource kind; bad object name in a resource (traversal refused); empty
  // lists; over kMaxPolicyBytes / kMaxStatements / kMaxEntriesPerList.
  static absl::StatusOr<std::shared_ptr<const AccessPolicy>> Parse(std::string_view name,
                                                                   std::string_view json);

  struct Match {
    bool matched = false;
    bool deny = false;
    size_t statement = 0;
  };
  // First deny statement that matches, else the first allow, else no match.
  Match Evaluate(const AccessRequest& req) const;
  // True iff some allow statement's resources cover the request's object (whatever its action).
  bool Covers(const AccessRequest& req) const;
  const std::string& name() const { return name_; }
  const std::string& statement_id(size_t i) const { return statements_[i].id; }
  size_t size() const { return statements_.size(); }

 private:
  struct Statement {
    std::string id;
    bool deny = false;
    uint8_t actions = 0;
    bool any_principal = false;
    absl::flat_hash_set<std::string> users, roles, groups, tokens;
    bool any_resource = false;
    absl::flat_hash_set<std::string> names, objects;
    std::vector<std::string> prefixes;
  };
  static bool PrincipalMatches(const Statement& s, const AccessRequest& req);
  static bool ResourceMatches(const Statement& s, const AccessRequest& req);

  std::string name_;
  std::vector<Statement> statements_;
};

// All documents attached to one tenant's data, evaluated together (deny in any wins).
class DataPolicySet {
 public:
  void Put(std::shared_ptr<const AccessPolicy> policy);  // replaces a document of the same name
  bool Remove(std::string_view name);
  // Deny in any document wins; else the first allow; else not allowed. `governed` (optional
  // out) tells whether any document covers the object at all.
  AccessDecision Evaluate(const AccessRequest& req, bool* governed = nullptr) const;
  bool empty() const { return policies_.empty(); }

 private:
  std::vector<std::shared_ptr<const AccessPolicy>> policies_;
};

// How long a copy (export out of the tenant) may follow the caller's last MFA step-up.
inline constexpr absl::Duration kCopyStepUpWindow = absl::Minutes(15);

// The full decision for a data access, after the RBAC authorizer:
//   1. rbac: read and copy need data:read, write needs data:create, admin needs datasets:manage
//      at the object's tenant (deny by default, as for every route);
//   2. copy additionally needs an MFA step-up no older than kCopyStepUpWindow (`mfa_age`);
//   3. the tenant's data policies: a matching deny refuses; a matching allow admits; an object
//      that some allow statement's resources cover (any action) is "governed" and needs an allow;
//      an ungoverned object is admitted by RBAC alone for read, write and admin. Copy always
//      needs an explicit allow (no document means no copy).
AccessDecision AuthorizeDataAccess(const rbac::Grants& grants, rbac::TenantRef tenant,
                                   const DataPolicySet& policies, const AccessRequest& req,
                                   std::optional<absl::Duration> mfa_age);

}  // namespace warden::vault
