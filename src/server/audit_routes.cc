// Handlers of the audit API (issue 4): query with paging, export as JSON lines with proof
// material, the latest (or a given) signed checkpoint, the audit public key, inclusion and
// consistency proofs. Scoping: the cluster routes need audit:read at cluster scope (auditors,
// admins); the /tenants/{tenant}/audit/... routes need it at that tenant (tenant-admins) and only
// ever show that tenant's events.
#include <charconv>

#include "common/encoding.h"
#include "common/status.h"
#include "common/strings.h"
#include "server/api_service.h"

namespace warden::server {
namespace {

using common::Json;
using common::StrCat;

std::string Hex(const audit::MerkleHash& h) { return common::HexEncode(audit::MerkleHashBytes(h)); }

Json HashList(const std::vector<audit::MerkleHash>& hashes) {
  Json out = Json::array();
  for (const auto& h : hashes) out.push_back(Hex(h));
  return out;
}

Json CheckpointJson(const audit::Checkpoint& cp) {
  return Json{{"seq", cp.seq},           {"tree_size", cp.tree_size}, {"root", Hex(cp.root)},
              {"time_ms", cp.time_ms},   {"prev", Hex(cp.prev)},      {"key_id", cp.key_id},
              {"text", cp.Encode()}};
}

// Parses query parameter `key` as an integer in [min, max]; `fallback` when absent.
absl::StatusOr<int64_t> IntParam(const Call& c, const char* key, int64_t fallback, int64_t min,
                                 int64_t max) {
  auto it = c.req.query.find(key);
  if (it == c.req.query.end()) return fallback;
  int64_t v = 0;
  const std::string& s = it->second;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || v < min || v > max) {
    return absl::InvalidArgumentError(
        StrCat("query parameter \"", key, "\" must be an integer in ", min, "..", max));
  }
  return v;
}

std::optional<std::string> StrParam(const Call& c, const char* key) {
  auto it = c.req.query.find(key);
  if (it == c.req.query.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<audit::AuditQuery> QueryFrom(const Call& c) {
  audit::AuditQuery q;
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  WARDEN_ASSIGN_OR_RETURN(q.from_ms, IntParam(c, "from_ms", 0, 0, kMax));
  WARDEN_ASSIGN_OR_RETURN(q.to_ms, IntParam(c, "to_ms", kMax, 0, kMax));
  WARDEN_ASSIGN_OR_RETURN(q.after_seq, IntParam(c, "after", -1, -1, kMax));
  WARDEN_ASSIGN_OR_RETURN(int64_t limit, IntParam(c, "limit", 100, 1, 10000));
  q.limit = static_cast<int>(limit);
  q.actor = StrParam(c, "actor");
  q.action = StrParam(c, "action");
  q.resource = StrParam(c, "resource");
  q.decision = StrParam(c, "decision");
  if (auto outcome = StrParam(c, "outcome")) q.decision = outcome;  // alias
  if (c.req.query.count("status")) {
    WARDEN_ASSIGN_OR_RETURN(int64_t st, IntParam(c, "status", 0, 100, 599));
    q.status = static_cast<int>(st);
  }
  // Threat: a tenant-admin reading other tenants' events. On a tenant route the tenant filter is
  // the route's tenant, whatever the query says.
  if (!c.tenant_id.empty()) {
    q.tenant = c.tenant_name;
  } else {
    q.tenant = StrParam(c, "tenant");
  }
  return q;
}

absl::StatusOr<Json> EventJson(const std::string& line) {
  auto j = common::ParseJsonStrict(line);
  if (!j.ok()) return absl::DataLossError(StrCat("audit event does not parse: ", j.status().message()));
  return *j;
}

}  // namespace

absl::StatusOr<Json> ApiService::QueryAudit(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(audit::AuditQuery q, QueryFrom(c));
  WARDEN_ASSIGN_OR_RETURN(audit::AuditPage page, audit_.Query(q));
  Json items = Json::array();
  for (const std::string& line : page.lines) {
    WARDEN_ASSIGN_OR_RETURN(Json e, EventJson(line));
    items.push_back(std::move(e));
  }
  Json out{{"items", std::move(items)}};
  out["next_after"] = page.next_after_seq >= 0 ? Json(page.next_after_seq) : Json();
  return out;
}

absl::StatusOr<Json> ApiService::ExportAudit(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(audit::AuditQuery q, QueryFrom(c));
  // Proofs are against the newest checkpoint; events after it get none (yet).
  auto cp = audit_.LatestCheckpoint();
  if (!cp.ok() && !absl::IsNotFound(cp.status())) return cp.status();
  WARDEN_ASSIGN_OR_RETURN(audit::AuditPage page, audit_.Query(q));
  std::string body;
  Json head{{"format", "gpuwarden-audit-export/v1"}, {"public_key", audit_.PublicKeyPem()}};
  if (cp.ok()) head["checkpoint"] = CheckpointJson(*cp);
  body += head.dump() + "\n";
  for (size_t i = 0; i < page.lines.size(); ++i) {
    const audit::AuditEvent& e = page.items[i];
    Json row{{"seq", e.seq}, {"line", page.lines[i]}};
    WARDEN_ASSIGN_OR_RETURN(row["event"], EventJson(page.lines[i]));
    if (cp.ok() && static_cast<uint64_t>(e.seq) < cp->tree_size) {
      WARDEN_ASSIGN_OR_RETURN(audit::AuditInclusion inc,
                              audit_.InclusionProof(static_cast<uint64_t>(e.seq), cp->tree_size));
      row["tree_size"] = inc.tree_size;
      row["leaf_hash"] = Hex(inc.leaf_hash);
      row["proof"] = HashList(inc.proof);
    }
    body += row.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
  }
  Json tail{{"next_after", page.next_after_seq >= 0 ? Json(page.next_after_seq) : Json()}};
  body += tail.dump() + "\n";
  c.raw_body = std::move(body);
  c.content_type = "application/x-ndjson";
  return Json();
}

absl::StatusOr<Json> ApiService::GetAuditCheckpoint(Call& c) {
  if (c.req.query.count("seq")) {
    WARDEN_ASSIGN_OR_RETURN(int64_t seq, IntParam(c, "seq", 0, 0, std::numeric_limits<int64_t>::max()));
    auto all = audit_.Checkpoints();
    if (static_cast<uint64_t>(seq) >= all.size()) {
      return absl::NotFoundError(StrCat("no audit checkpoint with seq ", seq));
    }
    return CheckpointJson(all[static_cast<size_t>(seq)]);
  }
  WARDEN_ASSIGN_OR_RETURN(audit::Checkpoint cp, audit_.LatestCheckpoint());
  return CheckpointJson(cp);
}

absl::StatusOr<Json> ApiService::GetAuditPublicKey(Call&) {
  std::string pem = audit_.PublicKeyPem();
  WARDEN_ASSIGN_OR_RETURN(audit::AuditVerifyingKey key, audit::AuditVerifyingKey::FromPem(pem));
  return Json{{"public_key", pem}, {"key_id", key.KeyId()}};
}

absl::StatusOr<Json> ApiService::AuditInclusionProof(Call& c) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  if (!c.req.query.count("seq")) return absl::InvalidArgumentError("query parameter \"seq\" is required");
  WARDEN_ASSIGN_OR_RETURN(int64_t seq, IntParam(c, "seq", 0, 0, kMax));
  WARDEN_ASSIGN_OR_RETURN(int64_t size, IntParam(c, "tree_size", 0, 0, kMax));
  if (seq >= audit_.Size()) return absl::NotFoundError(StrCat("no audit event with seq ", seq));
  WARDEN_ASSIGN_OR_RETURN(audit::AuditInclusion inc,
                          audit_.InclusionProof(static_cast<uint64_t>(seq), static_cast<uint64_t>(size)));
  WARDEN_ASSIGN_OR_RETURN(Json event, EventJson(inc.line));
  // A tenant-admin gets proofs only for their tenant's events; another tenant's event looks
  // missing (no oracle of what exists elsewhere).
  if (!c.tenant_id.empty() && event.value("tenant", "") != c.tenant_name) {
    return absl::NotFoundError(StrCat("no audit event with seq ", seq, " in tenant \"", c.tenant_name, "\""));
  }
  Json out{{"seq", inc.seq},           {"tree_size", inc.tree_size}, {"line", inc.line},
           {"event", std::move(event)}, {"leaf_hash", Hex(inc.leaf_hash)}, {"root", Hex(inc.root)},
           {"proof", HashList(inc.proof)}};
  if (inc.checkpoint) out["checkpoint"] = CheckpointJson(*inc.checkpoint);
  return out;
}

absl::StatusOr<Json> ApiService::AuditConsistencyProof(Call& c) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  if (!c.req.query.count("from") || !c.req.query.count("to")) {
    return absl::InvalidArgumentError("query parameters \"from\" and \"to\" (tree sizes) are required");
  }
  WARDEN_ASSIGN_OR_RETURN(int64_t from, IntParam(c, "from", 0, 0, kMax));
  WARDEN_ASSIGN_OR_RETURN(int64_t to, IntParam(c, "to", 0, 0, kMax));
  auto s1 = static_cast<uint64_t>(from), s2 = static_cast<uint64_t>(to);
  WARDEN_ASSIGN_OR_RETURN(auto proof, audit_.ConsistencyProof(s1, s2));
  WARDEN_ASSIGN_OR_RETURN(audit::MerkleHash r1, audit_.RootAt(s1));
  WARDEN_ASSIGN_OR_RETURN(audit::MerkleHash r2, audit_.RootAt(s2));
  return Json{{"from", s1}, {"to", s2}, {"root1", Hex(r1)}, {"root2", Hex(r2)}, {"proof", HashList(proof)}};
}

}  // namespace warden::server
