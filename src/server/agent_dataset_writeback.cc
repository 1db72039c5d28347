// Write-back of a job's `write` datasets (issue 7 "Datasets"; job_datasets.h):
//   submit:  AuthorizeJobWriteDataset decides data `write` on the name for the submitter (the
//            name may not exist yet: the job then creates its first version) and fixes the
//            limit; nothing is read from the vault for it (the job's directory starts empty);
//   job end: the agent of the node the job is placed on streams the job's output file in
//            PUT /agent/v1/nodes/{node}/jobs/{job}/datasets/{index} (mTLS, node = {node}).
//
// Threats answered here:
// - a forged upload for another node's job or another job of this node: the job must be placed
//   or running on the node the certificate proves (JobService::DatasetForNode), and the dataset
//   at {index} must be a `write` one of that job;
// - a grant revoked between submit and job end: `write` is re-decided for the submitter with
//   today's state (user enabled, token valid, RBAC and data policies) before any byte is kept;
// - a cut or oversized upload leaving half a version: the bytes go into a vault upload that is
//   published only after the last byte arrived, the size stayed within the dataset's limit and
//   the SHA-256 equals the agent's; any error aborts the upload;
// - an unrecorded write: the durable audit event (datasets:write-back, bytes and sha256) is
//   appended before the version is published; if it cannot be, nothing is published;
// - a replay (the same job's output stored twice): every version records its job and index in
//   labels, and a second write-back for the same pair is refused (409).
#include <openssl/evp.h>

#include <memory>
#include <mutex>

#include "absl/strings/numbers.h"
#include "api/job_request.h"
#include "common/encoding.h"
#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"
#include "server/agent_api.h"
#include "server/api_service.h"
#include "server/job_datasets.h"
#include "server/job_service.h"
#include "server/vault_routes.h"
#include "vault/access_policy.h"
#include "vault/format.h"

namespace warden::server {
namespace {

using common::StrCat;

constexpr char kRouteSuffix[] = "/datasets/";
constexpr size_t kPiece = 1 << 20;

// Serialises the "already written back?" check with the publish, so two concurrent uploads for
// the same job and index cannot both be published.
std::mutex& PublishMutex() {
  static std::mutex mu;
  return mu;
}

bool WrittenBefore(VaultService& vault, const std::string& tenant_id, const std::string& name,
                   const std::string& job_id, uint64_t index) {
  auto versions = vault.objects().Versions(tenant_id, name);
  if (!versions.ok()) return false;  // NotFound: the first version
  for (const vault::ObjectInfo& v : *versions) {
    auto j = v.labels.find("gpuwarden-job");
    auto i = v.labels.find("gpuwarden-job-dataset");
    if (j != v.labels.end() && j->second == job_id && i != v.labels.end() && i->second == StrCat(index)) {
      return true;
    }
  }
  return false;
}

}  // namespace

absl::Status ApiService::AuthorizeJobWriteDataset(Call& c, const std::string& where, api::JobDataset& d) {
  if (options_.vault == nullptr) return absl::UnavailableError("the vault is not running on this server");
  WARDEN_RETURN_IF_ERROR(vault::ValidateObjectName(d.name));
  std::string object_id;
  if (auto o = options_.vault->objects().Stat(c.tenant_id, d.name); o.ok()) object_id = o->object_id;
  const std::string before = c.data_decision;
  absl::Status s = AuthorizeData(c, vault::DataAction::kWrite, d.name, object_id);
  std::string added = c.data_decision.substr(std::min(before.size(), c.data_decision.size()));
  if (!added.empty() && added.starts_with("; ")) added = added.substr(2);
  std::string text = StrCat("mount-write ", where, added);
  c.data_decision = before.empty() ? text : StrCat(before, "; ", text);
  if (!s.ok()) return absl::Status(s.code(), StrCat(where, s.message()));
  if (d.size == 0) d.size = api::kDefaultWriteLimitMib << 20;
  d.object_id.clear();  // nothing is pinned: the job's directory starts empty
  d.version = 0;
  d.sha256.clear();
  d.authorized_user = c.identity->user_id;
  d.authorized_token = c.identity->token_id;
  return absl::OkStatus();
}

absl::Status ApiService::WriteBackJobDatasetForAgent(const AgentDatasetWriteBack& in, AgentDatasetWritten& out) {
  if (options_.jobs == nullptr) return absl::UnavailableError("the job service is not running");
  if (options_.vault == nullptr) return absl::UnavailableError("the vault is not running on this server");
  if (in.sha256.size() != 64 || in.sha256.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return absl::InvalidArgumentError("header X-Content-Sha256 must be the body's SHA-256 (64 lowercase hex)");
  }
  WARDEN_ASSIGN_OR_RETURN(JobService::NodeJobDataset nd, options_.jobs->DatasetForNode(in.node_id, in.job_id, in.index));
  const api::JobDataset& d = nd.dataset;
  out.tenant_name = TenantNameOf(nd.tenant_id);
  out.name = d.name;
  if (!d.write || d.authorized_user.empty()) {
    out.decision = StrCat("dataset ", in.index, " of job ", in.job_id, " is not a write dataset");
    return absl::PermissionDeniedError(out.decision);
  }
  if (!d.tenant.empty() && d.tenant != out.tenant_name) {
    out.decision = "write-back into another tenant's dataset";
    return absl::PermissionDeniedError(out.decision);
  }
  VaultService& vault = *options_.vault;
  if (WrittenBefore(vault, nd.tenant_id, d.name, in.job_id, in.index)) {
    return absl::AlreadyExistsError(
        StrCat("job ", in.job_id, " already wrote dataset ", in.index, " \"", d.name, "\" back"));
  }

  // Re-decide `write` for the submitter with today's state.
  std::string object_id;
  if (auto o = vault.objects().Stat(nd.tenant_id, d.name); o.ok()) object_id = o->object_id;
  WARDEN_RETURN_IF_ERROR(
      RecheckJobSubmitter(nd.tenant_id, d, vault::DataAction::kWrite, object_id, out.decision));

  // Stream into an upload; publish only a complete, verified, audited version.
  vault::Labels labels{{"gpuwarden-job", in.job_id}, {"gpuwarden-job-dataset", StrCat(in.index)}};
  WARDEN_ASSIGN_OR_RETURN(vault::UploadState up, vault.objects().BeginUpload(nd.tenant_id, d.name, labels));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr);
  auto fail = [&](absl::Status s) {
    (void)vault.objects().AbortUpload(nd.tenant_id, up.upload_id);
    return s;
  };
  std::string buf(kPiece, '\0');
  for (;;) {
    absl::StatusOr<size_t> n = in.body(buf.data(), buf.size());
    if (!n.ok()) {
      return fail(absl::Status(n.status().code(), StrCat("the upload was cut after ", out.bytes,
                                                         " bytes (nothing stored): ", n.status().message())));
    }
    if (*n == 0) break;
    if (out.bytes + *n > d.size) {
      return fail(absl::ResourceExhaustedError(StrCat("dataset \"", d.name, "\": the job's output exceeds its limit of ",
                                                      d.size, " bytes (nothing stored)")));
    }
    EVP_DigestUpdate(md.get(), buf.data(), *n);
    auto appended = vault.objects().AppendUpload(nd.tenant_id, up.upload_id, out.bytes, std::string_view(buf.data(), *n));
    if (!appended.ok()) return fail(appended.status());
    out.bytes += *n;
  }
  std::fill(buf.begin(), buf.end(), '\0');  // no plaintext left in freed heap
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(md.get(), digest, &len);
  out.sha256 = common::HexEncode(std::string_view(reinterpret_cast<char*>(digest), len));
  if (out.sha256 != in.sha256) {
    return fail(absl::DataLossError(StrCat("the body's SHA-256 ", out.sha256, " differs from the agent's ", in.sha256,
                                           " (nothing stored)")));
  }
  std::lock_guard<std::mutex> lock(PublishMutex());
  if (WrittenBefore(vault, nd.tenant_id, d.name, in.job_id, in.index)) {
    return fail(absl::AlreadyExistsError(
        StrCat("job ", in.job_id, " already wrote dataset ", in.index, " \"", d.name, "\" back")));
  }
  if (in.before_commit) {
    if (absl::Status a = in.before_commit(out); !a.ok()) return fail(a);
  }
  WARDEN_ASSIGN_OR_RETURN(vault::ObjectInfo o, vault.objects().CommitUpload(nd.tenant_id, up.upload_id, out.sha256));
  out.version = o.version;
  return absl::OkStatus();
}

uint64_t AgentApi::StreamBodyLimit(std::string_view method, std::string_view target) {
  // PUT /agent/v1/nodes/{node}/jobs/{job}/datasets/{index}: the router checks the rest.
  if (method != "PUT") return 0;
  std::string_view path = target.substr(0, target.find('?'));
  size_t at = path.rfind(kRouteSuffix);
  if (!path.starts_with("/agent/v1/nodes/") || at == std::string_view::npos) return 0;
  return kMaxWriteBackBytes;
}

http::Response AgentApi::JobDatasetWriteBack(http::Request& req, const cluster::AgentPeer& peer) {
  const std::string job(req.Param("job"));
  AgentDatasetWriteBack in;
  in.node_id = peer.node_id;
  in.job_id = job;
  in.sha256 = std::string(req.headers.Get("X-Content-Sha256"));
  AgentDatasetWritten out;
  absl::Status s;
  bool audit_down = false;
  audit::AuditEvent e = NodeEvent(req, peer, "datasets:write-back");
  auto describe = [&](const AgentDatasetWritten& w, const absl::Status& st) {
    std::string what = w.name.empty() ? StrCat("job ", job, " dataset ", in.index)
                                      : StrCat("job ", job, " dataset ", in.index, " \"", w.name, "\"");
    return StrCat(what, " ", w.bytes, " bytes sha256 ", w.sha256.empty() ? "-" : w.sha256,
                  st.ok() ? "" : StrCat(": ", st.message()), w.decision.empty() ? "" : StrCat(" | ", w.decision))
        .substr(0, 512);
  };
  if (!writer_) {
    s = absl::UnavailableError("dataset write-back is not served by this server");
  } else if (!absl::SimpleAtoi(std::string(req.Param("index")), &in.index)) {
    s = absl::InvalidArgumentError("dataset index must be a non-negative integer");
  } else if (req.body_stream == nullptr) {
    s = absl::InvalidArgumentError("the write-back body must be streamed");
  } else {
    in.body = [&req](char* buf, size_t n) { return req.body_stream->Read(buf, n); };
    // The durable allow event comes before the version is published (fail closed).
    in.before_commit = [&](const AgentDatasetWritten& w) {
      audit::AuditEvent allow = e;
      allow.tenant = w.tenant_name;
      allow.decision = "allow";
      allow.status = 201;
      allow.bytes = static_cast<int64_t>(w.bytes);
      allow.reason = describe(w, absl::OkStatus());
      if (absl::Status a = audit_.Append(std::move(allow)); !a.ok()) {
        audit_down = true;
        return absl::UnavailableError("audit log unavailable; write-back refused");
      }
      return absl::OkStatus();
    };
    s = writer_(in, out);
  }
  http::Response r;
  if (s.ok()) {
    r.status = 201;
    r.body = common::Json{{"name", out.name}, {"version", out.version}, {"size", out.bytes}, {"sha256", out.sha256}}.dump();
    return r;
  }
  r = http::Response::Error(s);
  if (!audit_down) {
    e.tenant = out.tenant_name;
    e.decision = "deny";
    e.status = r.status;
    e.bytes = 0;
    e.reason = describe(out, s);
    (void)audit_.Append(std::move(e));
  }
  return r;
}

}  // namespace warden::server
