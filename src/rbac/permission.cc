// The permission catalog and the built-in roles. Text is parsed only here, at route registration
// and role compilation; the request path sees bit indices.
#include <bit>

#include "common/status.h"
#include "common/strings.h"
#include "rbac/rbac.h"

namespace warden::rbac {
namespace {

using common::StrCat;

constexpr std::array<std::string_view, kNumResources> kResourceNames = {
    "tenants", "users", "roles", "bindings", "tokens", "audit", "nodes",   "pools",
    "jobs",    "datasets", "data", "keys",  "logs",   "alerts", "patches", "metrics",
    "images",
};
constexpr std::array<std::string_view, kNumVerbs> kVerbNames = {"read", "create", "update",
                                                                 "delete", "manage"};

int FindResource(std::string_view s) {
  for (int i = 0; i < kNumResources; ++i) {
    if (kResourceNames[i] == s) return i;
  }
  return -1;
}

int FindVerb(std::string_view s) {
  for (int i = 0; i < kNumVerbs; ++i) {
    if (kVerbNames[i] == s) return i;
  }
  return -1;
}

// Splits and resolves one entry; a wildcard part comes back as -2 when `allow_wildcards`.
absl::Status ParseParts(std::string_view text, bool allow_wildcards, int& resource, int& verb) {
  size_t colon = text.find(':');
  if (colon == std::string_view::npos || text.find(':', colon + 1) != std::string_view::npos) {
    return absl::InvalidArgumentError(
        StrCat("invalid permission \"", text, "\": expected \"resource:verb\""));
  }
  std::string_view r = text.substr(0, colon), v = text.substr(colon + 1);
  if (allow_wildcards && r == "*") {
    resource = -2;
  } else if ((resource = FindResource(r)) < 0) {
    std::string known;
    for (auto name : kResourceNames) known = known.empty() ? std::string(name) : StrCat(known, ", ", name);
    return absl::InvalidArgumentError(StrCat("unknown permission \"", text, "\": resource \"", r,
                                             "\" is not one of ", known));
  }
  if (allow_wildcards && v == "*") {
    verb = -2;
  } else if ((verb = FindVerb(v)) < 0) {
    return absl::InvalidArgumentError(
        StrCat("unknown permission \"", text, "\": verb \"", v,
               "\" is not one of read, create, update, delete, manage"));
  }
  if (!allow_wildcards && text.find('*') != std::string_view::npos) {
    // Unreachable today (no name contains '*'), kept so the message stays clear if one ever does.
    return absl::InvalidArgumentError(
        StrCat("invalid permission \"", text, "\": wildcards are accepted only in role definitions"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string Permission::ToString() const {
  return StrCat(kResourceNames[index_ / kNumVerbs], ":", kVerbNames[index_ % kNumVerbs]);
}

absl::StatusOr<Permission> ParsePermission(std::string_view text) {
  if (text.find('*') != std::string_view::npos) {
    return absl::InvalidArgumentError(StrCat(
        "invalid permission \"", text, "\": wildcards are accepted only in role definitions"));
  }
  int r = 0, v = 0;
  WARDEN_RETURN_IF_ERROR(ParseParts(text, /*allow_wildcards=*/false, r, v));
  return Permission(static_cast<Resource>(r), static_cast<Verb>(v));
}

absl::StatusOr<PermissionSet> ParsePermissionSet(const std::vector<std::string>& texts) {
  PermissionSet set;
  for (const std::string& text : texts) {
    int r = 0, v = 0;
    WARDEN_RETURN_IF_ERROR(ParseParts(text, /*allow_wildcards=*/true, r, v));
    for (int ri = 0; ri < kNumResources; ++ri) {
      if (r != -2 && r != ri) continue;
      for (int vi = 0; vi < kNumVerbs; ++vi) {
        if (v != -2 && v != vi) continue;
        set.Add(Permission(static_cast<Resource>(ri), static_cast<Verb>(vi)));
      }
    }
  }
  return set;
}

int PermissionSet::size() const { return std::popcount(words_[0]) + std::popcount(words_[1]); }

std::vector<Permission> PermissionSet::ToList() const {
  std::vector<Permission> out;
  for (int i = 0; i < kNumPermissions; ++i) {
    Permission p = Permission::FromIndex(i);
    if (Contains(p)) out.push_back(p);
  }
  return out;
}

std::vector<std::string> PermissionSet::ToStrings() const {
  std::vector<std::string> out;
  for (Permission p : ToList()) out.push_back(p.ToString());
  return out;
}

// The built-in role table; src/rbac/README.md documents it and rbac_test pins it.
const std::vector<RoleDef>& BuiltinRoles() {
  static const std::vector<RoleDef>* roles = new std::vector<RoleDef>{
      {"admin", "admin", "", {"*:*"}},
      {"tenant-admin",
       "tenant-admin",
       "",
       {"users:*", "roles:*", "bindings:*", "tokens:*", "jobs:*", "datasets:*", "data:*", "keys:*",
        "logs:*", "alerts:*", "audit:read", "tenants:read", "nodes:read", "pools:read",
        "metrics:read", "images:*"}},
      {"developer",
       "developer",
       "",
       {"jobs:read", "jobs:create", "jobs:update", "jobs:delete", "datasets:read",
        "datasets:create", "datasets:update", "data:read", "data:create", "logs:read",
        "tokens:read", "tokens:create", "tokens:delete", "roles:read", "tenants:read",
        "nodes:read", "pools:read", "metrics:read", "images:read", "images:create"}},
      {"auditor",
       "auditor",
       "",
       {"tenants:read", "users:read", "roles:read", "bindings:read", "tokens:read", "audit:read",
        "nodes:read", "pools:read", "jobs:read", "datasets:read", "keys:read", "logs:read",
        "alerts:read", "patches:read", "metrics:read", "images:read"}},
      {"viewer",
       "viewer",
       "",
       {"tenants:read", "nodes:read", "pools:read", "jobs:read", "datasets:read", "images:read"}},
  };
  return *roles;
}

bool IsBuiltinRole(std::string_view role_id) {
  for (const RoleDef& r : BuiltinRoles()) {
    if (r.id == role_id) return true;
  }
  return false;
}

}  // namespace warden::rbac
