// Handlers of /api/v1/tenants/{tenant}/datasets and /keys (issue 5): the encrypted vault behind
// HTTPS. RBAC ran in ApiService::Handle (the route's permission at the tenant); here each data
// access is also decided by the tenant's data access policies (vault::AuthorizeDataAccess), and
// the decision (document and statement) and the bytes moved go into the request's audit event.
//
// Object names travel in the query (`?name=run1/ckpt/shard-0`), never in a path segment: the
// router refuses '/' inside a segment, and the vault validates every name (no traversal; names
// never become file paths, see src/vault/README.md).
//
// Bodies are streamed (src/http, RouteSpec::stream_body_max): an upload is one PUT of the whole
// content at an offset, appended to the vault in 4 MiB pieces as it arrives; an interrupted one
// resumes with a PUT from the durable offset (GET the upload). A download is one GET streaming
// every verified chunk, the whole-object SHA-256 checked before its last piece goes out. The
// older bounded forms still work: PUT with a body under 1 MiB is the same append, and GET with
// `chunk`/`count` returns a range of at most 16 chunks. Memory stays bounded on both sides
// whatever the object's size.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/numbers.h"
#include "common/encoding.h"
#include "common/status.h"
#include "common/strings.h"
#include "server/api_service.h"
#include "server/vault_routes.h"
#include "vault/crypto.h"
#include "server/vault_shares.h"

namespace warden::server {
namespace {

using common::Json;
using common::StrCat;

constexpr uint64_t kMaxChunksPerRead = 16;
// Streamed uploads are appended to the vault in pieces of this size (each append makes its whole
// chunks durable: larger pieces mean fewer syncs, at this much memory per upload).
constexpr size_t kUploadPiece = 4 << 20;

absl::StatusOr<VaultService*> VaultOf(VaultService* v) {
  if (v == nullptr) return absl::UnavailableError("the vault is not running on this server");
  return v;
}

absl::StatusOr<Json> ParseBody(const std::string& body) {
  if (body.empty()) return Json::object();
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(body));
  if (!j.is_object()) return absl::InvalidArgumentError("request body must be a JSON object");
  return j;
}

absl::StatusOr<std::string> RequiredQuery(const Call& c, const char* key) {
  auto it = c.req.query.find(key);
  if (it == c.req.query.end() || it->second.empty()) {
    return absl::InvalidArgumentError(StrCat("query parameter \"", key, "\" is required"));
  }
  return it->second;
}

absl::StatusOr<uint64_t> QueryNumber(const Call& c, const char* key, uint64_t fallback) {
  auto it = c.req.query.find(key);
  if (it == c.req.query.end()) return fallback;
  uint64_t v = 0;
  if (!absl::SimpleAtoi(it->second, &v)) {
    return absl::InvalidArgumentError(
        StrCat("query parameter \"", key, "\": expected a non-negative integer, got \"",
               it->second.substr(0, 32), "\""));
  }
  return v;
}

Json ObjectJson(const vault::ObjectInfo& o, const std::string& tenant_name) {
  Json labels = Json::object();
  for (const auto& [k, v] : o.labels) labels[k] = v;
  return Json{{"tenant", tenant_name},       {"name", o.name},
              {"object_id", o.object_id},    {"version", o.version},
              {"size", o.size},              {"sha256", o.sha256_hex},
              {"labels", labels},            {"created_at", o.created_unix},
              {"kek_version", o.kek_version}, {"chunk_size", o.chunk_size}};
}

Json UploadJson(const vault::UploadState& u) {
  return Json{{"upload_id", u.upload_id}, {"name", u.name},         {"object_id", u.object_id},
              {"version", u.version},     {"received", u.received}, {"durable", u.durable}};
}

std::string DecisionText(const vault::AccessDecision& d) {
  if (d.policy.empty()) return d.reason;
  return StrCat(d.reason, " [policy ", d.policy, " statement ", d.statement, "]");
}

// Atomic replace: temp file, fsync, rename, fsync the directory.
absl::Status WriteFileAtomic(const std::string& path, const std::string& data) {
  std::string tmp = StrCat(path, ".tmp");
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return absl::InternalError(StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return absl::InternalError(StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
    }
    off += static_cast<size_t>(n);
  }
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(StrCat("cannot replace ", path, ": ", std::strerror(errno)));
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// VaultService

absl::StatusOr<std::unique_ptr<VaultService>> VaultService::Open(const std::string& dir,
                                                                 const common::MasterKey& master,
                                                                 common::Clock& clock,
                                                                 common::Rng& rng) {
  std::unique_ptr<VaultService> v(new VaultService());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(StrCat("cannot create ", dir, ": ", ec.message()));
  ::chmod(dir.c_str(), 0700);
  vault::KeyringOptions kopts;
  kopts.dir = StrCat(dir, "/keys");
  kopts.clock = &clock;
  kopts.rng = &rng;
  WARDEN_ASSIGN_OR_RETURN(v->keyring_, vault::Keyring::Open(master, kopts));
  vault::ObjectStoreOptions oopts;
  oopts.root = dir;
  oopts.clock = &clock;
  oopts.rng = &rng;
  WARDEN_ASSIGN_OR_RETURN(v->objects_, vault::ObjectStore::Open(*v->keyring_, oopts));
  v->policy_dir_ = StrCat(dir, "/policies");
  std::filesystem::create_directories(v->policy_dir_, ec);
  if (ec) return absl::InternalError(StrCat("cannot create ", v->policy_dir_, ": ", ec.message()));
  ::chmod(v->policy_dir_.c_str(), 0700);
  return v;
}

std::string VaultService::PolicyPath(const std::string& tenant) const {
  // Tenant ids are store-generated ([A-Za-z0-9_-]); checked again in LoadLocked.
  return StrCat(policy_dir_, "/", tenant, ".json");
}

absl::StatusOr<std::map<std::string, std::string>> VaultService::LoadLocked(
    const std::string& tenant) {
  for (char ch : tenant) {
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.')) {
      return absl::InvalidArgumentError("invalid tenant id");
    }
  }
  std::map<std::string, std::string> docs;
  std::ifstream in(PolicyPath(tenant), std::ios::binary);
  if (!in) return docs;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto j = common::ParseJsonStrict(text);
  if (!j.ok() || !j->is_object() || !(*j)["documents"].is_object()) {
    return absl::DataLossError(StrCat("data policy file ", PolicyPath(tenant), " is corrupt"));
  }
  for (const auto& [name, doc] : (*j)["documents"].items()) {
    if (!doc.is_string()) {
      return absl::DataLossError(StrCat("data policy file ", PolicyPath(tenant), " is corrupt"));
    }
    docs[name] = doc.get<std::string>();
  }
  return docs;
}

absl::Status VaultService::SaveLocked(const std::string& tenant,
                                      const std::map<std::string, std::string>& docs) {
  Json j{{"documents", Json::object()}};
  for (const auto& [name, doc] : docs) j["documents"][name] = doc;
  compiled_.erase(tenant);
  return WriteFileAtomic(PolicyPath(tenant), j.dump());
}

absl::StatusOr<std::shared_ptr<const vault::DataPolicySet>> VaultService::Policies(
    const std::string& tenant) {
  std::lock_guard lock(mu_);
  if (auto it = compiled_.find(tenant); it != compiled_.end()) return it->second;
  WARDEN_ASSIGN_OR_RETURN(auto docs, LoadLocked(tenant));
  auto set = std::make_shared<vault::DataPolicySet>();
  for (const auto& [name, text] : docs) {
    auto p = vault::AccessPolicy::Parse(name, text);
    // A stored document that no longer parses must not silently widen access: fail closed.
    if (!p.ok()) {
      return absl::DataLossError(StrCat("stored data policy \"", name,
                                        "\" does not parse: ", std::string(p.status().message())));
    }
    set->Put(*p);
  }
  compiled_[tenant] = set;
  return std::shared_ptr<const vault::DataPolicySet>(set);
}

absl::StatusOr<std::map<std::string, std::string>> VaultService::PolicyDocuments(
    const std::string& tenant) {
  std::lock_guard lock(mu_);
  return LoadLocked(tenant);
}

absl::Status VaultService::PutPolicy(const std::string& tenant, const std::string& name,
                                     const std::string& json) {
  WARDEN_RETURN_IF_ERROR(vault::AccessPolicy::Parse(name, json).status());
  std::lock_guard lock(mu_);
  WARDEN_ASSIGN_OR_RETURN(auto docs, LoadLocked(tenant));
  docs[name] = json;
  return SaveLocked(tenant, docs);
}

absl::Status VaultService::DeletePolicy(const std::string& tenant, const std::string& name) {
  std::lock_guard lock(mu_);
  WARDEN_ASSIGN_OR_RETURN(auto docs, LoadLocked(tenant));
  if (docs.erase(name) == 0) {
    return absl::NotFoundError(StrCat("data policy \"", name, "\" not found"));
  }
  return SaveLocked(tenant, docs);
}

absl::Status VaultService::DropPolicies(const std::string& tenant) {
  std::lock_guard lock(mu_);
  compiled_.erase(tenant);
  std::error_code ec;
  std::filesystem::remove(PolicyPath(tenant), ec);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// The data access decision

absl::Status ApiService::AuthorizeData(Call& c, vault::DataAction action,
                                       const std::string& name, const std::string& object_id) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  // Another tenant's principal reading through a share: the share decides (vault_share_routes.cc).
  if (!c.shared_read_by_tenant_id.empty()) return AuthorizeSharedData(c, action, name);
  WARDEN_ASSIGN_OR_RETURN(auto policies, v->Policies(c.tenant_id));
  vault::AccessRequest r;
  r.action = action;
  r.user_id = c.identity->user_id;
  r.token_id = c.identity->token_id;
  r.object_id = object_id;
  r.name = name;
  // `role:` and `group:` principals (vault_shares.h). Looked up only when the tenant has policy
  // documents; a store error refuses the access (fail closed).
  std::vector<std::string> role_ids;
  if (!policies->empty()) {
    WARDEN_ASSIGN_OR_RETURN(role_ids, CallerRoleIds(store_, *c.identity, c.tenant_id));
    AddCallerPrincipals(*c.identity, role_ids, r);
  }
  std::optional<absl::Duration> mfa_age;
  if (action == vault::DataAction::kCopy) {
    // Export needs the same step-up as every kRouteStepUp route (a session that passed a second
    // factor within mfa.step_up_window, or a code in X-Warden-OTP; accounts that MFA policy does
    // not cover pass). Its refusal is the 403 the client sees.
    absl::Status s = CheckStepUp(c);
    if (!s.ok()) {
      c.data_decision = StrCat("copy: ", std::string(s.message()));
      return s;
    }
    mfa_age = absl::ZeroDuration();
  }
  vault::AccessDecision d = vault::AuthorizeDataAccess(c.grants, c.tenant_ref, *policies, r, mfa_age);
  std::string text = StrCat(vault::DataActionName(action), ": ", DecisionText(d));
  c.data_decision = c.data_decision.empty() ? text : StrCat(c.data_decision, "; ", text);
  if (!d.allowed) return absl::PermissionDeniedError(text);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Objects

absl::StatusOr<Json> ApiService::ListDatasets(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  if (!c.shared_read_by_tenant_id.empty()) return ListSharedDatasets(c);  // only shared names
  std::string prefix;
  if (auto it = c.req.query.find("prefix"); it != c.req.query.end()) prefix = it->second;
  WARDEN_ASSIGN_OR_RETURN(auto objects, v->objects().List(c.tenant_id, prefix));
  Json items = Json::array();
  for (const auto& o : objects) items.push_back(ObjectJson(o, c.tenant_name));
  return Json{{"items", items}};
}

absl::StatusOr<Json> ApiService::ShowDataset(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  WARDEN_ASSIGN_OR_RETURN(std::string name, RequiredQuery(c, "name"));
  WARDEN_ASSIGN_OR_RETURN(uint64_t version, QueryNumber(c, "version", 0));
  WARDEN_ASSIGN_OR_RETURN(vault::ObjectInfo o, v->objects().Stat(c.tenant_id, name, version));
  WARDEN_ASSIGN_OR_RETURN(auto versions, v->objects().Versions(c.tenant_id, name));
  Json out = ObjectJson(o, c.tenant_name);
  Json vs = Json::array();
  for (const auto& x : versions) {
    vs.push_back(Json{{"version", x.version}, {"size", x.size}, {"sha256", x.sha256_hex},
                      {"created_at", x.created_unix}, {"kek_version", x.kek_version}});
  }
  out["versions"] = vs;
  return out;
}

absl::StatusOr<Json> ApiService::DeleteDataset(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  WARDEN_ASSIGN_OR_RETURN(std::string name, RequiredQuery(c, "name"));
  WARDEN_ASSIGN_OR_RETURN(vault::ObjectInfo o, v->objects().Stat(c.tenant_id, name));
  WARDEN_RETURN_IF_ERROR(AuthorizeData(c, vault::DataAction::kWrite, name, o.object_id));
  WARDEN_RETURN_IF_ERROR(v->objects().Delete(c.tenant_id, name));
  return Json{{"deleted", name}, {"object_id", o.object_id}};
}

static absl::StatusOr<Json> StreamDataset(Call& c, VaultService& v, const vault::ObjectInfo& o);

// Download: without `chunk`/`count` the whole object, streamed (StreamDataset); with them a range
// of whole, verified chunks as application/octet-stream. A download takes the
// plaintext out of the tenant, so it needs data:read (route) and the data policies' `read` AND
// `copy` (explicit allow; copy also needs step-up). The event records the bytes sent.
absl::StatusOr<Json> ApiService::ReadDataset(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  WARDEN_ASSIGN_OR_RETURN(std::string name, RequiredQuery(c, "name"));
  WARDEN_ASSIGN_OR_RETURN(uint64_t version, QueryNumber(c, "version", 0));
  const bool ranged = c.req.query.count("chunk") > 0 || c.req.query.count("count") > 0;
  WARDEN_ASSIGN_OR_RETURN(uint64_t first, QueryNumber(c, "chunk", 0));
  WARDEN_ASSIGN_OR_RETURN(uint64_t count, QueryNumber(c, "count", kMaxChunksPerRead));
  if (count == 0 || count > kMaxChunksPerRead) {
    return absl::InvalidArgumentError(
        StrCat("query parameter \"count\" must be 1..", kMaxChunksPerRead));
  }
  WARDEN_ASSIGN_OR_RETURN(vault::ObjectInfo o, v->objects().Stat(c.tenant_id, name, version));
  WARDEN_RETURN_IF_ERROR(AuthorizeData(c, vault::DataAction::kRead, name, o.object_id));
  WARDEN_RETURN_IF_ERROR(AuthorizeData(c, vault::DataAction::kCopy, name, o.object_id));
  if (!ranged) return StreamDataset(c, *v, o);
  std::string out;
  WARDEN_RETURN_IF_ERROR(v->objects()
                             .ReadChunks(c.tenant_id, name, o.version, first, count,
                                         [&](std::string_view chunk) {
                                           out.append(chunk);
                                           return absl::OkStatus();
                                         })
                             .status());
  c.bytes = static_cast<int64_t>(out.size());
  c.raw_body = std::move(out);
  c.content_type = "application/octet-stream";
  return Json();
}

// The whole object as one streamed response (Content-Length = its size). Runs after the data
// decision; Handle records the audit event (durably: kRouteDurableRead) before the server asks
// the source for its first byte. The event's bytes are the object's size; a transfer cut short
// (client gone, integrity failure) is visible to the client as a truncated body.
static absl::StatusOr<Json> StreamDataset(Call& c, VaultService& v, const vault::ObjectInfo& o) {
  struct State {
    std::string pending;  // verified plaintext of the last chunk range, not yet sent
    size_t pos = 0;
    uint64_t next_chunk = 0;
    uint64_t decrypted = 0;
    bool finished = false;
    vault::internal::Sha256Stream sha;
  };
  auto state = std::make_shared<State>();
  c.body_source = [state, store = &v.objects(), tenant = c.tenant_id, name = o.name,
                   version = o.version, size = o.size,
                   sha_hex = o.sha256_hex](char* buf, size_t n) -> absl::StatusOr<size_t> {
    State& st = *state;
    while (st.pos == st.pending.size()) {
      if (st.finished) return size_t{0};
      st.pending.clear();
      st.pos = 0;
      WARDEN_RETURN_IF_ERROR(store
                                 ->ReadChunks(tenant, name, version, st.next_chunk,
                                              kMaxChunksPerRead,
                                              [&](std::string_view chunk) {
                                                st.pending.append(chunk);
                                                return absl::OkStatus();
                                              })
                                 .status());
      st.next_chunk += kMaxChunksPerRead;
      st.decrypted += st.pending.size();
      st.sha.Update(st.pending);
      if (st.decrypted > size || (st.pending.empty() && st.decrypted < size)) {
        return absl::DataLossError("dataset content does not match its recorded size");
      }
      if (st.decrypted == size) {
        st.finished = true;
        // End to end: the last piece goes out only if the whole plaintext hashes as recorded.
        if (common::HexEncode(st.sha.Finish()) != sha_hex) {
          return absl::DataLossError("dataset content does not match its recorded SHA-256");
        }
      }
    }
    size_t take = std::min(n, st.pending.size() - st.pos);
    std::memcpy(buf, st.pending.data() + st.pos, take);
    st.pos += take;
    if (st.pos == st.pending.size() && st.pending.capacity() > (2u << 20)) st.pending.shrink_to_fit();
    return take;
  };
  c.content_length = static_cast<int64_t>(o.size);
  c.content_type = "application/octet-stream";
  c.response_headers.emplace_back("X-Warden-Sha256", o.sha256_hex);
  c.bytes = static_cast<int64_t>(o.size);
  return Json();
}

// Verify: decrypts every chunk on the server and checks size and SHA-256; no plaintext leaves.
absl::StatusOr<Json> ApiService::VerifyDataset(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  WARDEN_ASSIGN_OR_RETURN(std::string name, RequiredQuery(c, "name"));
  WARDEN_ASSIGN_OR_RETURN(uint64_t version, QueryNumber(c, "version", 0));
  WARDEN_ASSIGN_OR_RETURN(vault::ObjectInfo o, v->objects().Stat(c.tenant_id, name, version));
  WARDEN_RETURN_IF_ERROR(AuthorizeData(c, vault::DataAction::kRead, name, o.object_id));
  uint64_t bytes = 0;
  auto r = v->objects().Get(c.tenant_id, name, o.version, [&](std::string_view chunk) {
    bytes += chunk.size();
    return absl::OkStatus();
  });
  Json out = ObjectJson(o, c.tenant_name);
  out["verified"] = r.ok();
  if (!r.ok()) {
    if (r.status().code() != absl::StatusCode::kDataLoss) return r.status();
    out["error"] = std::string(r.status().message());
  }
  out["bytes_checked"] = bytes;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Uploads

absl::StatusOr<Json> ApiService::CreateUpload(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  WARDEN_ASSIGN_OR_RETURN(Json j, ParseBody(c.req.body));
  WARDEN_ASSIGN_OR_RETURN(auto f, common::JsonFields::Of(j));
  WARDEN_RETURN_IF_ERROR(f.OnlyKeys({"name", "labels"}));
  WARDEN_ASSIGN_OR_RETURN(std::string name, f.RequiredString("name"));
  WARDEN_RETURN_IF_ERROR(vault::ValidateObjectName(name));
  vault::Labels labels;
  if (j.contains("labels")) {
    if (!j["labels"].is_object()) return absl::InvalidArgumentError("field \"labels\": expected an object");
    for (const auto& [k, val] : j["labels"].items()) {
      if (!val.is_string()) {
        return absl::InvalidArgumentError(StrCat("label \"", k, "\": expected a string"));
      }
      labels[k] = val.get<std::string>();
    }
  }
  std::string object_id;
  if (auto existing = v->objects().Stat(c.tenant_id, name); existing.ok()) {
    object_id = existing->object_id;
  }
  WARDEN_RETURN_IF_ERROR(AuthorizeData(c, vault::DataAction::kWrite, name, object_id));
  WARDEN_ASSIGN_OR_RETURN(vault::UploadState u, v->objects().BeginUpload(c.tenant_id, name, labels));
  return UploadJson(u);
}

absl::StatusOr<Json> ApiService::AppendUpload(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  const std::string& id = c.req.params["upload"];
  WARDEN_ASSIGN_OR_RETURN(uint64_t offset, QueryNumber(c, "offset", UINT64_MAX));
  if (offset == UINT64_MAX) return absl::InvalidArgumentError("query parameter \"offset\" is required");
  // Uploads are found under the caller's tenant only: another tenant's upload id is NotFound.
  WARDEN_ASSIGN_OR_RETURN(vault::UploadState st, v->objects().UploadStatus(c.tenant_id, id));
  WARDEN_RETURN_IF_ERROR(AuthorizeData(c, vault::DataAction::kWrite, st.name, st.object_id));
  if (c.req.body_stream == nullptr) {
    WARDEN_ASSIGN_OR_RETURN(vault::UploadState u,
                            v->objects().AppendUpload(c.tenant_id, id, offset, c.req.body));
    c.bytes = static_cast<int64_t>(c.req.body.size());
    return UploadJson(u);
  }
  // Streamed: the body is appended piece by piece as it arrives (the server reads no faster
  // than the vault writes). Every whole chunk appended is durable, so a cut stream resumes from
  // UploadStatus's `durable` offset with a new PUT. The claim stops an earlier PUT of the same
  // upload (a killed client's bytes may still be arriving) from appending behind this one.
  WARDEN_ASSIGN_OR_RETURN(st, v->objects().ClaimUpload(c.tenant_id, id));
  const uint64_t writer = st.writer;
  if (offset != st.received) {
    return absl::FailedPreconditionError(
        StrCat("upload ", id, " expects offset ", st.received, ", not ", offset));
  }
  std::string piece(kUploadPiece, '\0');
  vault::UploadState u = st;
  for (;;) {
    size_t filled = 0;
    bool end = false;
    while (filled < piece.size()) {
      absl::StatusOr<size_t> n = c.req.body_stream->Read(piece.data() + filled, piece.size() - filled);
      if (!n.ok()) {
        // What arrived before the cut is kept (durable up to its last whole chunk).
        if (filled > 0) {
          (void)v->objects().AppendUpload(c.tenant_id, id, offset,
                                          std::string_view(piece.data(), filled), writer);
        }
        c.bytes = static_cast<int64_t>(offset + filled - st.received);
        return n.status();
      }
      if (*n == 0) {
        end = true;
        break;
      }
      filled += *n;
    }
    if (filled > 0) {
      WARDEN_ASSIGN_OR_RETURN(u, v->objects().AppendUpload(c.tenant_id, id, offset,
                                                           std::string_view(piece.data(), filled),
                                                           writer));
      offset += filled;
    }
    if (end) break;
  }
  c.bytes = static_cast<int64_t>(offset - st.received);
  return UploadJson(u);
}

absl::StatusOr<Json> ApiService::GetUpload(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  WARDEN_ASSIGN_OR_RETURN(vault::UploadState u,
                          v->objects().UploadStatus(c.tenant_id, c.req.params["upload"]));
  return UploadJson(u);
}

absl::StatusOr<Json> ApiService::CommitUpload(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  WARDEN_ASSIGN_OR_RETURN(Json j, ParseBody(c.req.body));
  WARDEN_ASSIGN_OR_RETURN(auto f, common::JsonFields::Of(j));
  WARDEN_RETURN_IF_ERROR(f.OnlyKeys({"sha256"}));
  WARDEN_ASSIGN_OR_RETURN(auto sha, f.OptionalString("sha256"));
  const std::string& id = c.req.params["upload"];
  WARDEN_ASSIGN_OR_RETURN(vault::UploadState st, v->objects().UploadStatus(c.tenant_id, id));
  WARDEN_RETURN_IF_ERROR(AuthorizeData(c, vault::DataAction::kWrite, st.name, st.object_id));
  WARDEN_ASSIGN_OR_RETURN(vault::ObjectInfo o, v->objects().CommitUpload(c.tenant_id, id, sha));
  c.bytes = static_cast<int64_t>(o.size);
  return ObjectJson(o, c.tenant_name);
}

absl::StatusOr<Json> ApiService::AbortUpload(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  const std::string& id = c.req.params["upload"];
  WARDEN_RETURN_IF_ERROR(v->objects().AbortUpload(c.tenant_id, id));
  return Json{{"aborted", id}};
}

// ---------------------------------------------------------------------------------------------
// Policies and keys

absl::StatusOr<Json> ApiService::GetDataPolicies(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  WARDEN_ASSIGN_OR_RETURN(auto docs, v->PolicyDocuments(c.tenant_id));
  Json out = Json::object();
  for (const auto& [name, text] : docs) {
    auto parsed = common::ParseJsonStrict(text);
    out[name] = parsed.ok() ? *parsed : Json(text);
  }
  return Json{{"policies", out}};
}

absl::StatusOr<Json> ApiService::PutDataPolicy(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  const std::string& name = c.req.params["policy"];
  WARDEN_RETURN_IF_ERROR(v->PutPolicy(c.tenant_id, name, c.req.body));
  return Json{{"policy", name}, {"saved", true}};
}

absl::StatusOr<Json> ApiService::DeleteDataPolicy(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  const std::string& name = c.req.params["policy"];
  WARDEN_RETURN_IF_ERROR(v->DeletePolicy(c.tenant_id, name));
  return Json{{"policy", name}, {"deleted", true}};
}

absl::StatusOr<Json> ApiService::KeyStatus(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  WARDEN_ASSIGN_OR_RETURN(vault::TenantKeyStatus s, v->keyring().Status(c.tenant_id));
  Json versions = Json::array();
  for (const auto& kv : s.versions) {
    versions.push_back(
        Json{{"version", kv.version}, {"created_at", kv.created_unix}, {"wraps", kv.wraps}});
  }
  return Json{{"tenant", c.tenant_name},          {"current_version", s.current_version},
              {"min_version", s.min_version},      {"versions", versions},
              {"shredded", s.shredded},            {"shredded_at", s.shredded_unix}};
}

absl::StatusOr<Json> ApiService::RotateKey(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(VaultService * v, VaultOf(options_.vault));
  WARDEN_ASSIGN_OR_RETURN(Json j, ParseBody(c.req.body));
  WARDEN_ASSIGN_OR_RETURN(auto f, common::JsonFields::Of(j));
  WARDEN_RETURN_IF_ERROR(f.OnlyKeys({"reencrypt"}));
  WARDEN_ASSIGN_OR_RETURN(auto reencrypt, f.OptionalBool("reencrypt"));
  WARDEN_ASSIGN_OR_RETURN(vault::RotationReport r,
                          v->objects().RotateTenantKey(c.tenant_id, reencrypt.value_or(false)));
  return Json{{"tenant", c.tenant_name},
              {"new_version", r.new_version},
              {"rewrapped", r.rewrapped},
              {"reencrypted", r.reencrypted},
              {"uploads_rewrapped", r.uploads_rewrapped}};
}

// Called by DeleteTenant after the tenant's rows are gone: destroys the tenant's keys (every
// object becomes unreadable, also from backups) and removes its files; audited as its own event.
absl::Status ApiService::ShredTenantData(Call& c, const std::string& tenant_id) {
  if (options_.vault == nullptr) return absl::OkStatus();
  absl::Status s = options_.vault->objects().ShredTenant(tenant_id);
  if (s.ok()) s = options_.vault->DropPolicies(tenant_id);
  Audit(c, "keys:shred", s.ok() ? 200 : 500,
        s.ok() ? StrCat("tenant keys of ", tenant_id, " crypto-shredded")
               : std::string(s.message()),
        true);
  return s;
}

}  // namespace warden::server
