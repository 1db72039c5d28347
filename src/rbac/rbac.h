// rbac: permissions, roles, bindings and the compiled authorizer (deny by default).
//
// A Permission is (resource, verb); a PermissionSet is a fixed 85-bit bitset. Roles and bindings
// arrive as plain structs (the store module owns their persistence) and are compiled into an
// immutable Policy snapshot. On the request path nothing parses text and nothing allocates in the
// common case: the handler resolves the caller's Grants once (after authentication), resolves the
// tenant once, then asks Grants::Allows(permission, tenant) -- a few bit operations.
// See src/rbac/README.md for the built-in role table and the threat model.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace warden::rbac {

// ---------------------------------------------------------------------------------------------
// Permission catalog
// ---------------------------------------------------------------------------------------------

// Text names are the lower-case enumerator names ("tenants", ..., "metrics"); `data` is the
// contents of datasets, `datasets` their metadata.
enum class Resource : uint8_t {
  kTenants, kUsers, kRoles, kBindings, kTokens, kAudit, kNodes, kPools,
  kJobs, kDatasets, kData, kKeys, kLogs, kAlerts, kPatches, kMetrics,
  kImages,  // per-tenant container images (issue 7)
};
// Verbs are independent: `manage` does NOT imply read/create/update/delete (nor the reverse). It
// names the resource's privileged operations (drain a node, act on other users' tokens, ...).
enum class Verb : uint8_t { kRead, kCreate, kUpdate, kDelete, kManage };

inline constexpr int kNumResources = 17;
inline constexpr int kNumVerbs = 5;
inline constexpr int kNumPermissions = kNumResources * kNumVerbs;  // 85

// One (resource, verb) pair, stored as its catalog index. Cheap to copy; constexpr-constructible
// so route tables can be built without parsing.
class Permission {
 public:
  constexpr Permission(Resource r, Verb v)
      : index_(static_cast<uint8_t>(static_cast<int>(r) * kNumVerbs + static_cast<int>(v))) {}
  // `index` must be < kNumPermissions.
  static constexpr Permission FromIndex(int index) { return Permission(static_cast<uint8_t>(index)); }

  constexpr Resource resource() const { return static_cast<Resource>(index_ / kNumVerbs); }
  constexpr Verb verb() const { return static_cast<Verb>(index_ % kNumVerbs); }
  constexpr int index() const { return index_; }
  // "resource:verb", e.g. "nodes:manage".
  std::string ToString() const;

  friend constexpr bool operator==(Permission a, Permission b) { return a.index_ == b.index_; }

 private:
  explicit constexpr Permission(uint8_t index) : index_(index) {}
  uint8_t index_;
};

// Parses exactly "resource:verb" (lower case, no spaces). Wildcards are refused here: a route
// must name one permission. InvalidArgument names the bad part, e.g.
// `unknown permission "nodes:fly": verb "fly" is not one of read, create, update, delete, manage`.
// Call at route registration, never per request.
absl::StatusOr<Permission> ParsePermission(std::string_view text);

// A set of permissions: two 64-bit words. Value type.
class PermissionSet {
 public:
  constexpr PermissionSet() = default;
  static constexpr PermissionSet All() {
    PermissionSet s;
    s.words_[0] = ~uint64_t{0};
    s.words_[1] = (uint64_t{1} << (kNumPermissions - 64)) - 1;
    return s;
  }
  constexpr PermissionSet& Add(Permission p) {
    words_[p.index() >> 6] |= uint64_t{1} << (p.index() & 63);
    return *this;
  }
  constexpr bool Contains(Permission p) const {
    return (words_[p.index() >> 6] >> (p.index() & 63)) & 1;
  }
  constexpr bool empty() const { return (words_[0] | words_[1]) == 0; }
  int size() const;
  constexpr bool IsSubsetOf(const PermissionSet& o) const {
    return (words_[0] & ~o.words_[0]) == 0 && (words_[1] & ~o.words_[1]) == 0;
  }
  // Permissions in catalog order (resource, then verb).
  std::vector<Permission> ToList() const;
  // "resource:verb" strings in catalog order.
  std::vector<std::string> ToStrings() const;

  friend constexpr PermissionSet operator|(PermissionSet a, const PermissionSet& b) {
    a.words_[0] |= b.words_[0];
    a.words_[1] |= b.words_[1];
    return a;
  }
  friend constexpr PermissionSet operator&(PermissionSet a, const PermissionSet& b) {
    a.words_[0] &= b.words_[0];
    a.words_[1] &= b.words_[1];
    return a;
  }
  // Set difference a \ b.
  friend constexpr PermissionSet operator-(PermissionSet a, const PermissionSet& b) {
    a.words_[0] &= ~b.words_[0];
    a.words_[1] &= ~b.words_[1];
    return a;
  }
  friend constexpr bool operator==(const PermissionSet&, const PermissionSet&) = default;

 private:
  std::array<uint64_t, 2> words_{};
};

// Parses a role definition's permission list. Accepts "resource:verb" plus the wildcards
// "resource:*", "*:verb" and "*:*", expanded here. InvalidArgument names the first bad entry.
absl::StatusOr<PermissionSet> ParsePermissionSet(const std::vector<std::string>& texts);

// ---------------------------------------------------------------------------------------------
// Inputs (owned and persisted by the store; plain data here)
// ---------------------------------------------------------------------------------------------

struct RoleDef {
  std::string id;                        // unique; built-in roles use their name as id
  std::string name;                      // display name
  std::string tenant_id;                 // "" = cluster-wide definition; else owned by that tenant
  std::vector<std::string> permissions;  // "resource:verb" and wildcards
};

struct BindingDef {
  std::string subject_kind;     // "user" or "token"
  std::string subject_id;
  std::string role_id;
  std::string scope_tenant_id;  // "" = cluster scope
};

// The five built-in roles (admin, tenant-admin, developer, auditor, viewer) as cluster-wide
// RoleDefs whose id == name. Compile() always includes them.
const std::vector<RoleDef>& BuiltinRoles();
bool IsBuiltinRole(std::string_view role_id);
inline constexpr std::string_view kAdminRole = "admin";

// ---------------------------------------------------------------------------------------------
// The authorizer
// ---------------------------------------------------------------------------------------------

enum class SubjectKind : uint8_t { kUser, kToken };

class Policy;

// A tenant as interned by one Policy (Policy::TenantIndex). Trivially copyable. Cluster() is "no
// tenant": a cluster-level operation (tenants:create, nodes:manage, ...).
struct TenantRef {
  static constexpr uint32_t kClusterIndex = 0xffffffffu;
  static constexpr uint32_t kUnlistedIndex = 0xfffffffeu;
  static constexpr TenantRef Cluster() { return {kClusterIndex, 0}; }

  constexpr bool is_cluster() const { return index == kClusterIndex; }

  uint32_t index = kClusterIndex;
  uint32_t policy_tag = 0;  // which Policy interned it; a mismatch denies tenant-scope grants
};

// What one subject may do: a cluster-scope mask (applies at every tenant and to cluster-level
// operations) plus a sorted flat array of (tenant index, mask). A value: copy it freely; it does
// not borrow from its Policy, but its tenant indices only mean something to that Policy (using
// it with another Policy's TenantRef fails closed). Default-constructed Grants allow nothing.
class Grants {
 public:
  struct TenantMask {
    uint32_t tenant;
    PermissionSet mask;  // tenant-scope grants, excluding what the cluster mask already grants
  };

  Grants() = default;

  // True iff `p` is granted at `tenant`: by a cluster-scope binding, or (for a tenant of the same
  // Policy) by a binding at that tenant's scope. Cluster-level asks (TenantRef::Cluster()) and
  // tenants with no tenant-scope bindings at all are satisfied only by cluster-scope grants.
  bool Allows(Permission p, TenantRef tenant) const {
    if (cluster_.Contains(p)) return true;
    if (tenant.index >= TenantRef::kUnlistedIndex || tenant.policy_tag != policy_tag_) return false;
    for (const TenantMask& t : tenants_) {  // sorted; usually 1-3 entries
      if (t.tenant >= tenant.index) return t.tenant == tenant.index && t.mask.Contains(p);
    }
    return false;
  }
  // Everything granted at `tenant` (cluster mask included).
  PermissionSet At(TenantRef tenant) const;
  const PermissionSet& cluster() const { return cluster_; }
  const absl::InlinedVector<TenantMask, 3>& tenants() const { return tenants_; }
  // True iff nothing is granted anywhere.
  bool empty() const { return cluster_.empty() && tenants_.empty(); }

 private:
  friend class Policy;
  friend Grants Intersect(const Grants& a, const Grants& b);
  friend absl::StatusOr<std::shared_ptr<const Policy>> Compile(
      const std::vector<RoleDef>& roles, const std::vector<BindingDef>& bindings);
  PermissionSet cluster_;
  absl::InlinedVector<TenantMask, 3> tenants_;
  uint32_t policy_tag_ = 0;
};

// What both a and b allow, at every scope: Allows(p,t) of the result == a.Allows(p,t) &&
// b.Allows(p,t). Used for API tokens: token grants = Intersect(token's binding, owner's current
// grants), so a token never outlives or exceeds its owner's rights. Grants from different Policy
// snapshots intersect to nothing (fail closed).
Grants Intersect(const Grants& a, const Grants& b);

// An immutable compiled snapshot of all roles and bindings. Thread-safe to share: every method is
// const. The caller recompiles when the store's policy generation changes and swaps the
// shared_ptr atomically; a request keeps the snapshot it started with.
class Policy {
 public:
  // Grants of a subject; empty Grants (deny everything) for an unknown subject. One hash lookup,
  // no allocation unless the subject has more than 3 tenant-scope bindings.
  Grants GrantsFor(SubjectKind kind, std::string_view subject_id) const;

  // The TenantRef for a tenant id. A tenant that no binding or role names gets an "unlisted"
  // ref: only cluster-scope grants apply there (so a cluster admin can bootstrap a new tenant,
  // and nobody else can touch it). "" is not a tenant: it maps to an unlisted ref, never to
  // Cluster() -- ask for cluster-level operations with TenantRef::Cluster() explicitly.
  TenantRef TenantIndex(std::string_view tenant_id) const;
  // The id behind a ref of this Policy; "" for Cluster() and unlisted refs.
  std::string_view TenantName(TenantRef tenant) const;

  // Escalation prevention for creating (or updating) a role owned by `role_tenant_id` ("" = a
  // cluster-wide role). OK iff `actor` holds roles:create and every permission in `role_perms`
  // at that scope. PermissionDenied names the first missing permission and the scope, e.g.
  //   cannot grant "nodes:manage": you do not hold it at tenant scope "acme"
  absl::Status CheckCanCreateRole(const Grants& actor, const PermissionSet& role_perms,
                                  std::string_view role_tenant_id) const;

  // Escalation prevention for binding `role` at `scope_tenant_id` ("" = cluster scope).
  // InvalidArgument: `admin` at tenant scope; a tenant-owned role outside its own tenant's scope;
  // unparseable role permissions. PermissionDenied: the actor lacks bindings:create at that
  // scope, or lacks one of the role's permissions there (named as in CheckCanCreateRole).
  absl::Status CheckCanBind(const Grants& actor, const RoleDef& role,
                            std::string_view scope_tenant_id) const;

  size_t num_tenants() const { return tenant_names_.size(); }

 private:
  friend absl::StatusOr<std::shared_ptr<const Policy>> Compile(
      const std::vector<RoleDef>& roles, const std::vector<BindingDef>& bindings);
  Policy() = default;
  TenantRef ScopeRef(std::string_view tenant_id) const;

  uint32_t tag_ = 0;
  absl::flat_hash_map<std::string, uint32_t> tenant_index_;
  std::vector<std::string> tenant_names_;
  absl::flat_hash_map<std::string, Grants> users_;
  absl::flat_hash_map<std::string, Grants> tokens_;
};

// Compiles custom `roles` (the built-in ones are added; a RoleDef with a built-in id is accepted
// only if identical in effect to the built-in) and `bindings` into a Policy.
// InvalidArgument, naming the offending role or binding, for: an empty or duplicate role id; an
// unknown permission text; a binding with an unknown subject kind, empty subject, unknown role,
// `admin` at tenant scope, or a tenant-owned role bound outside its tenant. Nothing is partially
// applied: on error the caller must keep denying (do not keep serving a stale snapshot that
// still holds a deleted grant).
absl::StatusOr<std::shared_ptr<const Policy>> Compile(const std::vector<RoleDef>& roles,
                                                      const std::vector<BindingDef>& bindings);

}  // namespace warden::rbac
