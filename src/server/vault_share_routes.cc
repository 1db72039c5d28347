// Cross-tenant shares (issue 5): /api/v1/tenants/{tenant}/shares and reads of another tenant's
// objects through an accepted share. The rules are vault::ShareBook's (src/vault/share.h); the
// records live in the state store (StoreShareRecords, migration 6).
//
//   offer    POST   /tenants/A/shares {"name", "to": "B", "prefix"}  A's datasets:manage + the copy
//                                                                    decision of A's data policies
//                                                                    + MFA step-up (kRouteStepUp)
//   accept   POST   /tenants/B/shares/{id}/accept                    B's datasets:manage
//   decline  POST   /tenants/B/shares/{id}/decline                   B's datasets:manage
//   revoke   DELETE /tenants/A/shares/{id}                           A's datasets:manage
//   list     GET    /tenants/T/shares                                T's datasets:read; shares T
//                                                                    owns or was offered
//
// Reads by B's principals go through A's own dataset routes (`dataset get --tenant A NAME`): the
// routes flagged kRouteSharedRead check the route's permission at the caller's home tenant B when
// the caller has none at A, and go on only when an accepted share covers the named object. What
// each read needs then (threat: a share must not widen what B's own admins let B's users do, and
// must not let data leave the cluster without the step-up every export needs):
//   list / show   B's datasets:read + a share (the listing shows shared names only)
//   download      B's data:read + a share covering the name + MFA step-up (the share is the
//                 owner's copy allow, given with A's admin's step-up; the reader's step-up
//                 covers the data leaving for B's client). B's data policies govern B's objects,
//                 not A's, and are not consulted.
// Every such read is audited under tenant A with the share id in the reason.
#include "common/status.h"
#include "common/strings.h"
#include "server/api_service.h"
#include "server/vault_routes.h"
#include "server/vault_shares.h"
#include "vault/format.h"

namespace warden::server {
namespace {

using common::Json;
using common::StrCat;

vault::Share FromStore(const store::VaultShare& v) {
  vault::Share s;
  s.id = v.id;
  s.owner_tenant = v.owner_tenant_id;
  s.name = v.name;
  s.prefix = v.is_prefix;
  s.target_tenant = v.target_tenant_id;
  // The column's CHECK constraint admits only the four names; anything else reads as revoked
  // (fail closed).
  s.state = vault::ParseShareState(v.state).value_or(vault::ShareState::kRevoked);
  s.offered_by = v.offered_by;
  s.offered_unix = v.offered_at;
  s.decided_by = v.decided_by;
  s.decided_unix = v.decided_at;
  s.revoked_by = v.revoked_by;
  s.revoked_unix = v.revoked_at;
  return s;
}

absl::StatusOr<Json> ParseObjectBody(const std::string& body) {
  if (body.empty()) return absl::InvalidArgumentError("request body must be a JSON object");
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(body));
  if (!j.is_object()) return absl::InvalidArgumentError("request body must be a JSON object");
  return j;
}

const rbac::Permission kDataRead(rbac::Resource::kData, rbac::Verb::kRead);

}  // namespace

// ---------------------------------------------------------------------------------------------
// StoreShareRecords and the helpers other code calls

absl::Status StoreShareRecords::Insert(const vault::Share& s) {
  store::VaultShare v;
  v.id = s.id;
  v.owner_tenant_id = s.owner_tenant;
  v.name = s.name;
  v.is_prefix = s.prefix;
  v.target_tenant_id = s.target_tenant;
  v.state = std::string(vault::ShareStateName(s.state));
  v.offered_by = s.offered_by;
  v.offered_at = s.offered_unix;
  return store_.CreateVaultShare(v);
}

absl::StatusOr<vault::Share> StoreShareRecords::Get(std::string_view id) {
  WARDEN_ASSIGN_OR_RETURN(store::VaultShare v, store_.GetVaultShare(std::string(id)));
  return FromStore(v);
}

absl::StatusOr<vault::Share> StoreShareRecords::Transition(std::string_view id,
                                                           std::vector<vault::ShareState> from,
                                                           vault::ShareState to,
                                                           std::string_view by, int64_t at) {
  std::vector<std::string> names;
  for (auto f : from) names.emplace_back(vault::ShareStateName(f));
  WARDEN_ASSIGN_OR_RETURN(store::VaultShare v,
                          store_.TransitionVaultShare(std::string(id), names,
                                                      std::string(vault::ShareStateName(to)),
                                                      std::string(by), at));
  return FromStore(v);
}

absl::StatusOr<std::vector<vault::Share>> StoreShareRecords::List(std::string_view tenant) {
  WARDEN_ASSIGN_OR_RETURN(auto rows, store_.ListVaultShares(std::string(tenant)));
  std::vector<vault::Share> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(FromStore(r));
  return out;
}

absl::StatusOr<std::optional<vault::Share>> ShareAllows(store::Store& store,
                                                        const std::string& owner_tenant_id,
                                                        const std::string& name,
                                                        const std::string& reader_tenant_id) {
  if (owner_tenant_id.empty() || reader_tenant_id.empty() || owner_tenant_id == reader_tenant_id) {
    return std::optional<vault::Share>();
  }
  StoreShareRecords records(store);
  vault::ShareBook book(records, common::RealClock::Get(), common::SecureRng::Get());
  return book.Find(owner_tenant_id, name, reader_tenant_id);
}

absl::StatusOr<std::vector<std::string>> CallerRoleIds(store::Store& store,
                                                       const auth::Identity& id,
                                                       const std::string& tenant_id) {
  std::vector<std::string> role_ids;
  WARDEN_ASSIGN_OR_RETURN(auto bindings, store.ListBindings());
  const bool token = !id.token_id.empty();
  for (const auto& b : bindings) {
    const bool mine = token ? (b.subject_kind == "token" && b.subject_id == id.token_id)
                            : (b.subject_kind == "user" && b.subject_id == id.user_id);
    if (mine && (b.scope_tenant_id.empty() || b.scope_tenant_id == tenant_id)) {
      role_ids.push_back(b.role_id);
    }
  }
  return role_ids;
}

void AddCallerPrincipals(const auth::Identity& id, const std::vector<std::string>& role_ids,
                         vault::AccessRequest& r) {
  for (const auto& role : role_ids) r.roles.push_back(role);
  for (const auto& g : id.groups) r.groups.push_back(g);
}

// ---------------------------------------------------------------------------------------------
// Reads through a share

bool ApiService::SharedReadAllowed(Call& c, const rbac::Permission& permission) {
  if (!c.identity || c.identity->home_tenant_id.empty() || c.tenant_id.empty() ||
      c.identity->home_tenant_id == c.tenant_id) {
    return false;
  }
  const std::string& reader = c.identity->home_tenant_id;
  // The reader's own RBAC, at the reader's own tenant: a share never grants more than B's
  // admins granted the caller at B.
  if (!c.grants.Allows(permission, c.policy->TenantIndex(reader))) return false;
  StoreShareRecords records(store_);
  vault::ShareBook book(records, clock_, rng_);
  auto it = c.req.query.find("name");
  if (it != c.req.query.end()) {
    // Checked before the handler looks the name up: a name that no share covers is refused
    // whether or not it exists in A (no existence oracle for A's names).
    auto share = book.Find(c.tenant_id, it->second, reader);
    if (!share.ok() || !share->has_value()) return false;
    c.data_decision = StrCat("shared read: share ", (*share)->id, " from ", c.tenant_name, " to ",
                             TenantNameOf(reader));
  } else {
    auto shares = book.List(reader);
    if (!shares.ok()) return false;
    bool any = false;
    for (const auto& s : *shares) {
      any = any || (s.owner_tenant == c.tenant_id && s.target_tenant == reader &&
                    s.state == vault::ShareState::kAccepted);
    }
    if (!any) return false;
  }
  c.shared_read_by_tenant_id = reader;
  return true;
}

absl::Status ApiService::AuthorizeSharedData(Call& c, vault::DataAction action,
                                             const std::string& name) {
  const std::string& reader = c.shared_read_by_tenant_id;
  auto refuse = [&](std::string why) {
    c.data_decision = StrCat(vault::DataActionName(action), ": ", why);
    return absl::PermissionDeniedError(why);
  };
  if (action != vault::DataAction::kRead && action != vault::DataAction::kCopy) {
    return refuse(StrCat("objects shared from ", c.tenant_name, " are read-only"));
  }
  if (!c.grants.Allows(kDataRead, c.policy->TenantIndex(reader))) {
    return refuse(StrCat("rbac: data:read not granted at tenant ", TenantNameOf(reader)));
  }
  WARDEN_ASSIGN_OR_RETURN(auto share, ShareAllows(store_, c.tenant_id, name, reader));
  if (!share) {
    return refuse(StrCat("no accepted share of \"", name, "\" from ", c.tenant_name, " to ",
                         TenantNameOf(reader)));
  }
  if (action == vault::DataAction::kCopy) {
    absl::Status s = CheckStepUp(c);
    if (!s.ok()) {
      c.data_decision = StrCat("copy: ", std::string(s.message()));
      return s;
    }
  }
  std::string text = StrCat(vault::DataActionName(action), ": allowed by share ", share->id,
                            " from ", c.tenant_name, " to ", TenantNameOf(reader),
                            " (accepted by ", share->decided_by, ")");
  // The first decision of the call replaces the gate's note; later ones are appended.
  c.data_decision = c.data_decision.rfind("shared read:", 0) == 0
                        ? text
                        : StrCat(c.data_decision, "; ", text);
  return absl::OkStatus();
}

absl::StatusOr<Json> ApiService::ListSharedDatasets(Call& c) {
  if (options_.vault == nullptr) {
    return absl::UnavailableError("the vault is not running on this server");
  }
  const std::string& reader = c.shared_read_by_tenant_id;
  StoreShareRecords records(store_);
  vault::ShareBook book(records, clock_, rng_);
  WARDEN_ASSIGN_OR_RETURN(auto shares, book.List(reader));
  std::vector<vault::Share> usable;
  std::string ids;
  for (auto& s : shares) {
    if (s.owner_tenant == c.tenant_id && s.target_tenant == reader &&
        s.state == vault::ShareState::kAccepted) {
      ids += ids.empty() ? s.id : StrCat(",", s.id);
      usable.push_back(std::move(s));
    }
  }
  std::string prefix;
  if (auto it = c.req.query.find("prefix"); it != c.req.query.end()) prefix = it->second;
  WARDEN_ASSIGN_OR_RETURN(auto objects, options_.vault->objects().List(c.tenant_id, prefix));
  Json items = Json::array();
  for (const auto& o : objects) {
    std::string via;
    for (const auto& s : usable) {
      if (vault::ShareCovers(s, o.name)) {
        via = s.id;
        break;
      }
    }
    if (via.empty()) continue;
    Json labels = Json::object();
    for (const auto& [k, v] : o.labels) labels[k] = v;
    items.push_back(Json{{"tenant", c.tenant_name},  {"name", o.name},
                         {"object_id", o.object_id}, {"version", o.version},
                         {"size", o.size},           {"sha256", o.sha256_hex},
                         {"labels", labels},         {"created_at", o.created_unix},
                         {"shared_by_share", via}});
  }
  c.data_decision = StrCat("shared listing: shares ", ids, " from ", c.tenant_name, " to ",
                           TenantNameOf(reader));
  return Json{{"items", items}};
}

// ---------------------------------------------------------------------------------------------
// Share routes

namespace {

Json ShareJson(const vault::Share& s, const std::string& owner_name,
               const std::string& target_name) {
  return Json{{"id", s.id},
              {"owner", owner_name},
              {"name", s.name},
              {"prefix", s.prefix},
              {"to", target_name},
              {"state", std::string(vault::ShareStateName(s.state))},
              {"offered_by", s.offered_by},
              {"offered_at", s.offered_unix},
              {"decided_by", s.decided_by},
              {"decided_at", s.decided_unix},
              {"revoked_by", s.revoked_by},
              {"revoked_at", s.revoked_unix}};
}

}  // namespace

absl::StatusOr<Json> ApiService::CreateShare(Call& c) {
  if (options_.vault == nullptr) {
    return absl::UnavailableError("the vault is not running on this server");
  }
  WARDEN_ASSIGN_OR_RETURN(Json j, ParseObjectBody(c.req.body));
  WARDEN_ASSIGN_OR_RETURN(auto f, common::JsonFields::Of(j));
  WARDEN_RETURN_IF_ERROR(f.OnlyKeys({"name", "to", "prefix"}));
  WARDEN_ASSIGN_OR_RETURN(std::string name, f.RequiredString("name"));
  WARDEN_ASSIGN_OR_RETURN(std::string to, f.RequiredString("to"));
  WARDEN_ASSIGN_OR_RETURN(auto prefix_opt, f.OptionalBool("prefix"));
  const bool prefix = prefix_opt.value_or(false);
  auto target = store_.GetTenantByName(to);
  if (!target.ok()) {
    if (target.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(StrCat("tenant \"", to, "\" not found"));
    }
    return target.status();
  }
  // One object: it must exist, and statements on its object id apply to the copy decision.
  std::string object_id;
  if (!prefix) {
    WARDEN_RETURN_IF_ERROR(vault::ValidateObjectName(name));
    WARDEN_ASSIGN_OR_RETURN(vault::ObjectInfo o, options_.vault->objects().Stat(c.tenant_id, name));
    object_id = o.object_id;
  }
  WARDEN_ASSIGN_OR_RETURN(auto policies, options_.vault->Policies(c.tenant_id));
  WARDEN_ASSIGN_OR_RETURN(std::vector<std::string> role_ids,
                          CallerRoleIds(store_, *c.identity, c.tenant_id));
  vault::AccessRequest r;
  r.action = vault::DataAction::kCopy;
  r.user_id = c.identity->user_id;
  r.token_id = c.identity->token_id;
  r.object_id = object_id;
  r.name = name;
  AddCallerPrincipals(*c.identity, role_ids, r);
  StoreShareRecords records(store_);
  vault::ShareBook book(records, clock_, rng_);
  // kRouteStepUp already required a second factor within the step-up window for this request.
  auto s = book.Offer(c.grants, c.tenant_ref, *policies, r, absl::ZeroDuration(), c.tenant_id,
                      target->id, prefix);
  if (!s.ok()) {
    c.data_decision = StrCat("share: ", std::string(s.status().message()));
    return s.status();
  }
  c.data_decision = StrCat("share ", s->id, " offered: ", s->prefix ? "prefix " : "", "\"", name,
                           "\" from ", c.tenant_name, " to ", to);
  return ShareJson(*s, c.tenant_name, to);
}

absl::StatusOr<Json> ApiService::ListShares(Call& c) {
  StoreShareRecords records(store_);
  vault::ShareBook book(records, clock_, rng_);
  WARDEN_ASSIGN_OR_RETURN(auto shares, book.List(c.tenant_id));
  Json items = Json::array();
  for (const auto& s : shares) {
    items.push_back(ShareJson(s, TenantNameOf(s.owner_tenant), TenantNameOf(s.target_tenant)));
  }
  return Json{{"items", items}};
}

namespace {

// Accept, decline and revoke: one ShareBook step on the share in the path, its outcome (or
// refusal) recorded with the share id in the call's audit event.
template <typename Step, typename NameOf>
absl::StatusOr<Json> ShareStep(Call& c, const char* verb, const char* done, Step step,
                               NameOf name_of) {
  const std::string& id = c.req.params["share"];
  absl::StatusOr<vault::Share> s = step(id);
  if (!s.ok()) {
    c.data_decision = StrCat("share ", id, " ", verb, ": ", std::string(s.status().message()));
    return s.status();
  }
  c.data_decision = StrCat("share ", s->id, " ", done, " by tenant ", c.tenant_name);
  return ShareJson(*s, name_of(s->owner_tenant), name_of(s->target_tenant));
}

}  // namespace

absl::StatusOr<Json> ApiService::AcceptShare(Call& c) {
  StoreShareRecords records(store_);
  vault::ShareBook book(records, clock_, rng_);
  return ShareStep(
      c, "accept", "accepted",
      [&](const std::string& id) {
        return book.Accept(c.grants, c.tenant_ref, c.identity->user_id, id, c.tenant_id);
      },
      [&](const std::string& t) { return TenantNameOf(t); });
}

absl::StatusOr<Json> ApiService::DeclineShare(Call& c) {
  StoreShareRecords records(store_);
  vault::ShareBook book(records, clock_, rng_);
  return ShareStep(
      c, "decline", "declined",
      [&](const std::string& id) {
        return book.Decline(c.grants, c.tenant_ref, c.identity->user_id, id, c.tenant_id);
      },
      [&](const std::string& t) { return TenantNameOf(t); });
}

absl::StatusOr<Json> ApiService::RevokeShare(Call& c) {
  StoreShareRecords records(store_);
  vault::ShareBook book(records, clock_, rng_);
  return ShareStep(
      c, "revoke", "revoked",
      [&](const std::string& id) {
        return book.Revoke(c.grants, c.tenant_ref, c.identity->user_id, c.tenant_id, id);
      },
      [&](const std::string& t) { return TenantNameOf(t); });
}

}  // namespace warden::server
