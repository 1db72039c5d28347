#include "vault/access_policy.h"

#include <algorithm>
#include <utility>

#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"
#include "vault/format.h"

namespace warden::vault {

using common::StrCat;

std::string_view DataActionName(DataAction a) {
  switch (a) {
    case DataAction::kRead:
      return "read";
    case DataAction::kWrite:
      return "write";
    case DataAction::kCopy:
      return "copy";
    case DataAction::kAdmin:
      return "admin";
  }
  return "?";
}

namespace {

std::optional<DataAction> ParseAction(std::string_view s) {
  if (s == "read") return DataAction::kRead;
  if (s == "write") return DataAction::kWrite;
  if (s == "copy") return DataAction::kCopy;
  if (s == "admin") return DataAction::kAdmin;
  return std::nullopt;
}

// Principal and token/user/role/group ids share one conservative alphabet.
absl::Status ValidatePrincipalValue(std::string_view what, std::string_view v) {
  if (v.empty() || v.size() > 128)
    return absl::InvalidArgumentError(StrCat(what, " must be 1-128 characters"));
  for (char c : v) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '@';
    if (!ok)
      return absl::InvalidArgumentError(
          StrCat(what, " \"", v, "\" has a character outside [A-Za-z0-9._@-]"));
  }
  return absl::OkStatus();
}

// Debian's Abseil has its own string_view: heterogeneous lookup needs absl::string_view.
bool Has(const absl::flat_hash_set<std::string>& set, std::string_view v) {
  return set.contains(absl::string_view(v.data(), v.size()));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const AccessPolicy>> AccessPolicy::Parse(std::string_view name,
                                                                        std::string_view json) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("policy name", name));
  if (json.size() > kMaxPolicyBytes) {
    return absl::InvalidArgumentError(
        StrCat("policy document is larger than ", kMaxPolicyBytes, " bytes"));
  }
  common::JsonLimits limits;
  limits.max_depth = 8;
  limits.max_bytes = kMaxPolicyBytes;
  WARDEN_ASSIGN_OR_RETURN(common::Json doc, common::ParseJsonStrict(json, limits));
  WARDEN_ASSIGN_OR_RETURN(auto top, common::JsonFields::Of(doc));
  WARDEN_RETURN_IF_ERROR(top.OnlyKeys({"version", "statements"}));
  WARDEN_ASSIGN_OR_RETURN(auto version, top.OptionalInt("version"));
  if (!version || *version != 1) {
    return absl::InvalidArgumentError("policy document: \"version\" must be 1");
  }
  if (!doc.contains("statements") || !doc["statements"].is_array()) {
    return absl::InvalidArgumentError("policy document: \"statements\" must be an array");
  }
  const auto& stmts = doc["statements"];
  if (stmts.empty() || stmts.size() > kMaxStatements) {
    return absl::InvalidArgumentError(StrCat("policy document: 1-", kMaxStatements, " statements"));
  }
  auto policy = std::shared_ptr<AccessPolicy>(new AccessPolicy());
  policy->name_ = std::string(name);
  absl::flat_hash_set<std::string> ids;
  for (size_t i = 0; i < stmts.size(); ++i) {
    auto where = [&](std::string_view field) {
      return StrCat("statement ", i, " \"", field, "\": ");
    };
    auto fields_or = common::JsonFields::Of(stmts[i]);
    if (!fields_or.ok()) {
      return absl::InvalidArgumentError(StrCat("statement ", i, ": must be an object"));
    }
    const auto& f = *fields_or;
    absl::Status keys = f.OnlyKeys({"id", "effect", "actions", "principals", "resources"});
    if (!keys.ok())
      return absl::InvalidArgumentError(StrCat("statement ", i, ": ", keys.message()));
    Statement s;
    auto wrap = [&](absl::Status st) {
      return absl::InvalidArgumentError(StrCat("statement ", i, ": ", st.message()));
    };
    auto id = f.OptionalString("id");
    if (!id.ok()) return wrap(id.status());
    s.id = id->value_or(StrCat("#", i));
    if (absl::Status st = ValidatePrincipalValue("id", s.id); !st.ok() && id->has_value()) {
      return wrap(st);
    }
    if (!ids.insert(s.id).second)
      return absl::InvalidArgumentError(StrCat(where("id"), "duplicate id ", s.id));
    auto effect = f.RequiredString("effect");
    if (!effect.ok()) return wrap(effect.status());
    if (*effect == "deny") {
      s.deny = true;
    } else if (*effect != "allow") {
      return absl::InvalidArgumentError(StrCat(where("effect"), "must be \"allow\" or \"deny\""));
    }
    auto lists = [&](std::string_view key) -> absl::StatusOr<std::vector<std::string>> {
      auto l = f.StringList(key);
      if (!l.ok()) return wrap(l.status());
      if (l->empty() || l->size() > kMaxEntriesPerList) {
        return absl::InvalidArgumentError(
            StrCat(where(key), "needs 1-", kMaxEntriesPerList, " entries"));
      }
      return l;
    };
    WARDEN_ASSIGN_OR_RETURN(auto actions, lists("actions"));
    for (const auto& a : actions) {
      if (a == "*") {
        s.actions = 0x0f;
        continue;
      }
      auto act = ParseAction(a);
      if (!act) {
        return absl::InvalidArgumentError(
            StrCat(where("actions"), "unknown action \"", a, "\" (read, write, copy, admin, *)"));
      }
      s.actions |= static_cast<uint8_t>(*act);
    }
    WARDEN_ASSIGN_OR_RETURN(auto principals, lists("principals"));
    for (const auto& p : principals) {
      if (p == "*") {
        s.any_principal = true;
        continue;
      }
      size_t colon = p.find(':');
      std::string kind = p.substr(0, colon == std::string::npos ? p.size() : colon);
      std::string value = colon == std::string::npos ? "" : p.substr(colon + 1);
      absl::flat_hash_set<std::string>* set = nullptr;
      if (kind == "user") set = &s.users;
      if (kind == "role") set = &s.roles;
      if (kind == "group") set = &s.groups;
      if (kind == "token") set = &s.tokens;
      if (set == nullptr || colon == std::string::npos) {
        return absl::InvalidArgumentError(
            StrCat(where("principals"), "\"", p,
                   "\" must be user:ID, role:ID, group:NAME, token:ID or *"));
      }
      if (absl::Status st = ValidatePrincipalValue(kind, value); !st.ok()) {
        return absl::InvalidArgumentError(StrCat(where("principals"), st.message()));
      }
      set->insert(value);
    }
    WARDEN_ASSIGN_OR_RETURN(auto resources, lists("resources"));
    for (const auto& r : resources) {
      if (r == "*") {
        s.any_resource = true;
        continue;
      }
      size_t colon = r.find(':');
      std::string kind = r.substr(0, colon == std::string::npos ? r.size() : colon);
      std::string value = colon == std::string::npos ? "" : r.substr(colon + 1);
      absl::Status st;
      if (colon == std::string::npos) {
        st = absl::InvalidArgumentError("must be object:ID, name:NAME, prefix:PREFIX or *");
      } else if (kind == "object") {
        st = ValidateComponent("object id", value);
        if (st.ok()) s.objects.insert(value);
      } else if (kind == "name") {
        st = ValidateObjectName(value);
        if (st.ok()) s.names.insert(value);
      } else if (kind == "prefix") {
        // A prefix is a name, optionally ending in '/': the same traversal rules apply.
        std::string_view base = value;
        if (!base.empty() && base.back() == '/') base.remove_suffix(1);
        st = ValidateObjectName(base);
        if (st.ok()) s.prefixes.push_back(value);
      } else {
        st = absl::InvalidArgumentError("must be object:ID, name:NAME, prefix:PREFIX or *");
      }
      if (!st.ok()) {
        return absl::InvalidArgumentError(
            StrCat(where("resources"), "\"", r, "\": ", st.message()));
      }
    }
    policy->statements_.push_back(std::move(s));
  }
  return std::shared_ptr<const AccessPolicy>(std::move(policy));
}

bool AccessPolicy::PrincipalMatches(const Statement& s, const AccessRequest& req) {
  if (s.any_principal) return true;
  if (!req.user_id.empty() && Has(s.users, req.user_id)) return true;
  if (!req.token_id.empty() && Has(s.tokens, req.token_id)) return true;
  for (std::string_view r : req.roles) {
    if (Has(s.roles, r)) return true;
  }
  for (std::string_view g : req.groups) {
    if (Has(s.groups, g)) return true;
  }
  return false;
}

bool AccessPolicy::ResourceMatches(const Statement& s, const AccessRequest& req) {
  if (s.any_resource) return true;
  if (!req.object_id.empty() && Has(s.objects, req.object_id)) return true;
  if (!req.name.empty() && Has(s.names, req.name)) return true;
  for (const auto& p : s.prefixes) {
    if (req.name.size() >= p.size() && req.name.compare(0, p.size(), p) == 0) return true;
  }
  return false;
}

AccessPolicy::Match AccessPolicy::Evaluate(const AccessRequest& req) const {
  Match allow;
  const uint8_t bit = static_cast<uint8_t>(req.action);
  for (size_t i = 0; i < statements_.size(); ++i) {
    const Statement& s = statements_[i];
    if ((s.actions & bit) == 0) continue;  // the cheap test first
    if (!ResourceMatches(s, req) || !PrincipalMatches(s, req)) continue;
    if (s.deny) return Match{true, true, i};
    if (!allow.matched) allow = Match{true, false, i};
  }
  return allow;
}

bool AccessPolicy::Covers(const AccessRequest& req) const {
  for (const Statement& s : statements_) {
    // Only allows govern: a deny subtracts from whatever else admits, it restricts nothing else.
    if (!s.deny && ResourceMatches(s, req)) return true;
  }
  return false;
}

void DataPolicySet::Put(std::shared_ptr<const AccessPolicy> policy) {
  Remove(policy->name());
  policies_.push_back(std::move(policy));
  std::sort(policies_.begin(), policies_.end(),
            [](const auto& a, const auto& b) { return a->name() < b->name(); });
}

bool DataPolicySet::Remove(std::string_view name) {
  auto it = std::find_if(policies_.begin(), policies_.end(),
                         [&](const auto& p) { return p->name() == name; });
  if (it == policies_.end()) return false;
  policies_.erase(it);
  return true;
}

AccessDecision DataPolicySet::Evaluate(const AccessRequest& req, bool* governed) const {
  AccessDecision allow;
  bool covered = false;
  for (const auto& p : policies_) {
    AccessPolicy::Match m = p->Evaluate(req);
    if (m.matched && m.deny) {
      if (governed) *governed = true;
      return AccessDecision{
          false, p->name(), p->statement_id(m.statement),
          StrCat("denied by policy ", p->name(), " statement ", p->statement_id(m.statement))};
    }
    if (m.matched && !allow.allowed) {
      allow = AccessDecision{
          true, p->name(), p->statement_id(m.statement),
          StrCat("allowed by policy ", p->name(), " statement ", p->statement_id(m.statement))};
    }
    if (!covered) covered = p->Covers(req);
  }
  if (governed) *governed = covered || allow.allowed;
  if (allow.allowed) return allow;
  return AccessDecision{false, "", "",
                        StrCat("no data policy statement allows ", DataActionName(req.action))};
}

AccessDecision AuthorizeDataAccess(const rbac::Grants& grants, rbac::TenantRef tenant,
                                   const DataPolicySet& policies, const AccessRequest& req,
                                   std::optional<absl::Duration> mfa_age) {
  using rbac::Permission;
  using rbac::Resource;
  using rbac::Verb;
  Permission needed(Resource::kData, Verb::kRead);
  switch (req.action) {
    case DataAction::kRead:
    case DataAction::kCopy:
      break;
    case DataAction::kWrite:
      needed = Permission(Resource::kData, Verb::kCreate);
      break;
    case DataAction::kAdmin:
      needed = Permission(Resource::kDatasets, Verb::kManage);
      break;
  }
  if (!grants.Allows(needed, tenant)) {
    return AccessDecision{false, "", "", StrCat("rbac: ", needed.ToString(), " not granted")};
  }
  if (req.action == DataAction::kCopy &&
      (!mfa_age.has_value() || *mfa_age < absl::ZeroDuration() || *mfa_age > kCopyStepUpWindow)) {
    return AccessDecision{false, "", "", "copy requires an MFA step-up within the last 15 minutes"};
  }
  bool governed = false;
  AccessDecision d = policies.Evaluate(req, &governed);
  if (d.allowed || !d.policy.empty()) return d;  // an allow, or an explicit deny
  if (req.action == DataAction::kCopy) {
    return AccessDecision{false, "", "", "copy needs an explicit allow in a data policy"};
  }
  if (governed) return d;
  return AccessDecision{true, "", "", StrCat("rbac: ", needed.ToString())};
}

}  // namespace warden::vault
