// Compiling roles and bindings into per-subject Grants, and the escalation checks.
#include <atomic>
#include <map>

#include "common/status.h"
#include "common/strings.h"
#include "rbac/rbac.h"

namespace warden::rbac {
namespace {

using common::StrCat;

// Each snapshot gets its own tag so that a TenantRef or Grants carried over from an older snapshot
// (tenant indices are renumbered on every compile) can never match a tenant of a newer one.
std::atomic<uint32_t> g_next_policy_tag{1};

uint32_t NextPolicyTag() {
  uint32_t tag = g_next_policy_tag.fetch_add(1, std::memory_order_relaxed);
  return tag == 0 ? g_next_policy_tag.fetch_add(1, std::memory_order_relaxed) : tag;
}

std::string ScopeText(std::string_view tenant_id) {
  return tenant_id.empty() ? std::string("cluster scope")
                           : StrCat("tenant scope \"", tenant_id, "\"");
}

// Where a role may be bound. Shared by Compile (stored bindings) and CheckCanBind (new ones) so the
// two can never disagree.
absl::Status CheckBindingTarget(const RoleDef& role, std::string_view scope_tenant_id) {
  // A tenant-scoped "admin" would read as "admin of acme" but admin holds cluster-level
  // permissions (tenants:create, nodes:manage) that a tenant scope cannot confine; refuse it
  // rather than let the name mislead.
  if (role.id == kAdminRole && !scope_tenant_id.empty()) {
    return absl::InvalidArgumentError(
        StrCat("role \"admin\" can be bound only at cluster scope, not at ",
               ScopeText(scope_tenant_id), "; bind \"tenant-admin\" there instead"));
  }
  // A tenant's custom role is that tenant's to define; letting it apply elsewhere would let one
  // tenant's admins shape another tenant's grants.
  if (!role.tenant_id.empty() && role.tenant_id != scope_tenant_id) {
    return absl::InvalidArgumentError(StrCat(
        "role \"", role.id, "\" belongs to tenant \"", role.tenant_id,
        "\" and can be bound only at that tenant's scope, not at ", ScopeText(scope_tenant_id)));
  }
  return absl::OkStatus();
}

const RoleDef* FindBuiltin(std::string_view id) {
  for (const RoleDef& r : BuiltinRoles()) {
    if (r.id == id) return &r;
  }
  return nullptr;
}

absl::StatusOr<PermissionSet> RolePermissions(const RoleDef& role) {
  auto perms = ParsePermissionSet(role.permissions);
  if (!perms.ok()) {
    return absl::InvalidArgumentError(
        StrCat("role \"", role.id, "\": ", perms.status().message()));
  }
  return *perms;
}

struct CompiledRole {
  const RoleDef* def;
  PermissionSet perms;
};

struct SubjectAcc {
  PermissionSet cluster;
  std::map<uint32_t, PermissionSet> tenants;  // ordered: Grants needs a sorted array
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Grants

PermissionSet Grants::At(TenantRef tenant) const {
  PermissionSet out = cluster_;
  if (tenant.index >= TenantRef::kUnlistedIndex || tenant.policy_tag != policy_tag_) return out;
  for (const TenantMask& t : tenants_) {
    if (t.tenant == tenant.index) return out | t.mask;
  }
  return out;
}

Grants Intersect(const Grants& a, const Grants& b) {
  Grants out;
  if (a.policy_tag_ != b.policy_tag_) return out;  // different snapshots: fail closed
  out.policy_tag_ = a.policy_tag_;
  out.cluster_ = a.cluster_ & b.cluster_;
  // Merge the two sorted arrays; at tenant t the effective sets are cluster|tenant(t) on each side.
  size_t i = 0, j = 0;
  while (i < a.tenants_.size() || j < b.tenants_.size()) {
    uint32_t ta = i < a.tenants_.size() ? a.tenants_[i].tenant : TenantRef::kClusterIndex;
    uint32_t tb = j < b.tenants_.size() ? b.tenants_[j].tenant : TenantRef::kClusterIndex;
    uint32_t t = std::min(ta, tb);
    PermissionSet ea = a.cluster_, eb = b.cluster_;
    if (ta == t) ea = ea | a.tenants_[i++].mask;
    if (tb == t) eb = eb | b.tenants_[j++].mask;
    PermissionSet m = (ea & eb) - out.cluster_;
    if (!m.empty()) out.tenants_.push_back({t, m});
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Policy

Grants Policy::GrantsFor(SubjectKind kind, std::string_view subject_id) const {
  const auto& map = kind == SubjectKind::kUser ? users_ : tokens_;
  auto it = map.find(absl::string_view(subject_id.data(), subject_id.size()));
  if (it == map.end()) return Grants();
  return it->second;
}

TenantRef Policy::TenantIndex(std::string_view tenant_id) const {
  auto it = tenant_index_.find(absl::string_view(tenant_id.data(), tenant_id.size()));
  if (it == tenant_index_.end()) return {TenantRef::kUnlistedIndex, tag_};
  return {it->second, tag_};
}

std::string_view Policy::TenantName(TenantRef tenant) const {
  if (tenant.policy_tag != tag_ || tenant.index >= tenant_names_.size()) return {};
  return tenant_names_[tenant.index];
}

TenantRef Policy::ScopeRef(std::string_view tenant_id) const {
  return tenant_id.empty() ? TenantRef::Cluster() : TenantIndex(tenant_id);
}

absl::Status Policy::CheckCanCreateRole(const Grants& actor, const PermissionSet& role_perms,
                                        std::string_view role_tenant_id) const {
  TenantRef scope = ScopeRef(role_tenant_id);
  if (!actor.Allows(Permission(Resource::kRoles, Verb::kCreate), scope)) {
    return absl::PermissionDeniedError(
        StrCat("you do not hold \"roles:create\" at ", ScopeText(role_tenant_id)));
  }
  // Threat: privilege escalation by minting a role broader than oneself and binding it (to
  // oneself or an accomplice). Every permission in the role must already be held at its scope.
  for (Permission p : role_perms.ToList()) {
    if (!actor.Allows(p, scope)) {
      return absl::PermissionDeniedError(StrCat("cannot grant \"", p.ToString(),
                                                "\": you do not hold it at ",
                                                ScopeText(role_tenant_id)));
    }
  }
  return absl::OkStatus();
}

absl::Status Policy::CheckCanBind(const Grants& actor, const RoleDef& role,
                                  std::string_view scope_tenant_id) const {
  // A built-in role is judged by the built-in definition, never by a caller-supplied copy.
  const RoleDef* builtin = FindBuiltin(role.id);
  const RoleDef& def = builtin != nullptr ? *builtin : role;
  WARDEN_RETURN_IF_ERROR(CheckBindingTarget(def, scope_tenant_id));
  WARDEN_ASSIGN_OR_RETURN(PermissionSet perms, RolePermissions(def));
  TenantRef scope = ScopeRef(scope_tenant_id);
  if (!actor.Allows(Permission(Resource::kBindings, Verb::kCreate), scope)) {
    return absl::PermissionDeniedError(
        StrCat("you do not hold \"bindings:create\" at ", ScopeText(scope_tenant_id)));
  }
  for (Permission p : perms.ToList()) {
    if (!actor.Allows(p, scope)) {
      return absl::PermissionDeniedError(StrCat("cannot grant \"", p.ToString(),
                                                "\": you do not hold it at ",
                                                ScopeText(scope_tenant_id)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Policy>> Compile(const std::vector<RoleDef>& roles,
                                                      const std::vector<BindingDef>& bindings) {
  std::shared_ptr<Policy> policy(new Policy());
  policy->tag_ = NextPolicyTag();
  auto intern = [&](const std::string& tenant_id) -> uint32_t {
    auto [it, inserted] =
        policy->tenant_index_.try_emplace(tenant_id, uint32_t(policy->tenant_names_.size()));
    if (inserted) policy->tenant_names_.push_back(tenant_id);
    return it->second;
  };

  absl::flat_hash_map<std::string, CompiledRole> compiled;
  for (const RoleDef& r : BuiltinRoles()) {
    WARDEN_ASSIGN_OR_RETURN(PermissionSet perms, RolePermissions(r));
    compiled.emplace(r.id, CompiledRole{&r, perms});
  }
  for (const RoleDef& r : roles) {
    if (r.id.empty()) {
      return absl::InvalidArgumentError(StrCat("role \"", r.name, "\": empty id"));
    }
    WARDEN_ASSIGN_OR_RETURN(PermissionSet perms, RolePermissions(r));
    if (const RoleDef* b = FindBuiltin(r.id)) {
      // The store may list built-ins alongside custom roles; a copy that differs (e.g. a widened
      // row in the database) is refused, the compiled built-in is never taken from input.
      if (!r.tenant_id.empty() || perms != compiled.at(b->id).perms) {
        return absl::InvalidArgumentError(
            StrCat("role \"", r.id, "\" redefines a built-in role with different permissions"));
      }
      continue;
    }
    if (!compiled.emplace(r.id, CompiledRole{&r, perms}).second) {
      return absl::InvalidArgumentError(StrCat("role \"", r.id, "\": duplicate role id"));
    }
    if (!r.tenant_id.empty()) intern(r.tenant_id);
  }

  absl::flat_hash_map<std::string, SubjectAcc> users, tokens;
  for (size_t i = 0; i < bindings.size(); ++i) {
    const BindingDef& b = bindings[i];
    auto where = [&] {
      return StrCat("binding ", i, " (", b.subject_kind, " \"", b.subject_id, "\" -> role \"",
                    b.role_id, "\"): ");
    };
    absl::flat_hash_map<std::string, SubjectAcc>* subjects = nullptr;
    if (b.subject_kind == "user") {
      subjects = &users;
    } else if (b.subject_kind == "token") {
      subjects = &tokens;
    } else {
      return absl::InvalidArgumentError(
          StrCat(where(), "subject kind must be \"user\" or \"token\""));
    }
    if (b.subject_id.empty()) {
      return absl::InvalidArgumentError(StrCat(where(), "empty subject id"));
    }
    auto role = compiled.find(b.role_id);
    if (role == compiled.end()) {
      return absl::InvalidArgumentError(StrCat(where(), "unknown role"));
    }
    absl::Status target = CheckBindingTarget(*role->second.def, b.scope_tenant_id);
    if (!target.ok()) return absl::InvalidArgumentError(StrCat(where(), target.message()));
    SubjectAcc& acc = (*subjects)[b.subject_id];
    if (b.scope_tenant_id.empty()) {
      acc.cluster = acc.cluster | role->second.perms;
    } else {
      PermissionSet& m = acc.tenants[intern(b.scope_tenant_id)];
      m = m | role->second.perms;
    }
  }

  auto finish = [&](absl::flat_hash_map<std::string, SubjectAcc>& in,
                    absl::flat_hash_map<std::string, Grants>& out) {
    out.reserve(in.size());
    for (auto& [id, acc] : in) {
      Grants g;
      g.policy_tag_ = policy->tag_;
      g.cluster_ = acc.cluster;
      for (const auto& [tenant, mask] : acc.tenants) {
        PermissionSet extra = mask - acc.cluster;  // the cluster mask is checked first anyway
        if (!extra.empty()) g.tenants_.push_back({tenant, extra});
      }
      out.emplace(id, std::move(g));
    }
  };
  finish(users, policy->users_);
  finish(tokens, policy->tokens_);
  return std::shared_ptr<const Policy>(std::move(policy));
}

}  // namespace warden::rbac
