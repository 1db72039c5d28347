// Per-tenant container images (issue 7):
//   POST   /api/v1/tenants/{tenant}/images             body: an OCI image layout tar (streamed)
//   GET    /api/v1/tenants/{tenant}/images             list
//   GET    /api/v1/tenants/{tenant}/images/{digest}    show (config env, entrypoint, cmd)
//   DELETE /api/v1/tenants/{tenant}/images/{digest}
//   GET    /agent/v1/nodes/{node}/jobs/{job}/image?digest=sha256:...   (agents' mTLS API)
//
// Store: DATA_DIR/images/<tenant id>/<manifest hex>/ through runtime's image store
// (runtime::ImportImage verifies every digest, sanitizes every layer entry and refuses loader
// variables), plus image.tar (the archive as uploaded, served to agents, which verify it all
// again) and meta.json (size, who imported it, when). The rootfs the server's import extracted
// is deleted once verified: the server never runs images. Keyed by tenant id, not name, so a
// tenant deleted and re-created under the same name does not inherit the old tenant's images.
// A job may name only an image of its own tenant: checked at submit (AuthorizeJobImage) and
// again when its agent fetches it (the lookup is under the job's tenant, and the digest the
// agent asks for must be the job's).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>

#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"
#include "runtime/image.h"
#include "server/agent_api.h"
#include "server/api_service.h"
#include "server/job_service.h"

namespace warden::server {
namespace {

using common::Json;
using common::StrCat;
namespace fs = std::filesystem;

constexpr size_t kPiece = 1 << 20;

bool IsImageDigest(std::string_view d) {
  if (d.size() != 71 || d.substr(0, 7) != "sha256:") return false;
  for (char ch : d.substr(7)) {
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
  }
  return true;
}

absl::Status CheckDigest(std::string_view d) {
  if (IsImageDigest(d)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      StrCat("image digest must be sha256:<64 lowercase hex>, got \"", d.substr(0, 80), "\""));
}

std::string ImageDir(const std::string& root, const std::string& tenant_id, std::string_view digest) {
  return StrCat(root, "/", tenant_id, "/", digest.substr(7));
}

absl::Status WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return absl::InternalError(StrCat("write: ", std::strerror(errno)));
    p += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

absl::StatusOr<Json> ReadMeta(const std::string& dir) {
  std::string text;
  {
    int fd = ::open((dir + "/meta.json").c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return absl::NotFoundError("no meta.json");
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
      if (text.size() > (1 << 20)) break;
    }
    ::close(fd);
  }
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(text));
  if (!j.is_object()) return absl::DataLossError(StrCat(dir, "/meta.json is not an object"));
  return j;
}

// A digest mismatch is the uploader's problem to see (DataLoss would be answered as an opaque 500).
absl::Status ForClient(const absl::Status& s) {
  if (s.code() == absl::StatusCode::kDataLoss) {
    return absl::InvalidArgumentError(StrCat("image verification failed: ", s.message()));
  }
  if (s.code() == absl::StatusCode::kNotFound) {
    return absl::InvalidArgumentError(StrCat("image archive: ", s.message()));
  }
  return s;
}

}  // namespace

uint64_t ApiService::StreamBodyLimit(const RouteSpec& route) const {
  if (route.handler == &ApiService::ImportImage) return options_.image_max_import_bytes;
  return route.stream_body_max;
}

absl::StatusOr<Json> ApiService::ImportImage(Call& c) {
  if (options_.image_dir.empty()) return absl::UnavailableError("images are not stored by this server");
  const std::string tenant_dir = StrCat(options_.image_dir, "/", c.tenant_id);
  std::error_code ec;
  fs::create_directories(tenant_dir, ec);
  if (ec) return absl::InternalError(StrCat("cannot create ", tenant_dir, ": ", ec.message()));
  // The upload goes to a private temporary file first; nothing is visible under the tenant until
  // every digest has verified.
  std::random_device rd;
  const std::string tmp = StrCat(tenant_dir, "/.upload-", rd(), rd(), ".tar");
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  struct Cleanup {
    std::string path;
    int fd;
    ~Cleanup() {
      if (fd >= 0) ::close(fd);
      if (!path.empty()) ::unlink(path.c_str());
    }
  } cleanup{tmp, fd};
  uint64_t size = 0;
  if (c.req.body_stream == nullptr) {
    WARDEN_RETURN_IF_ERROR(WriteAll(fd, c.req.body.data(), c.req.body.size()));
    size = c.req.body.size();
  } else {
    std::string piece(kPiece, '\0');
    for (;;) {
      // A body over images.max_import_bytes fails this read; the client gets 413 (http/server.cc).
      WARDEN_ASSIGN_OR_RETURN(size_t n, c.req.body_stream->Read(piece.data(), piece.size()));
      if (n == 0) break;
      WARDEN_RETURN_IF_ERROR(WriteAll(fd, piece.data(), n));
      size += n;
    }
  }
  c.bytes = static_cast<int64_t>(size);
  if (size == 0) return absl::InvalidArgumentError("empty body: expected an OCI image layout tar (gpuwarden image import FILE)");
  if (::fsync(fd) != 0) return absl::InternalError(StrCat("fsync ", tmp, ": ", std::strerror(errno)));
  ::close(fd);
  cleanup.fd = -1;

  auto info = runtime::ImportImage(options_.image_dir, c.tenant_id, tmp);
  if (!info.ok()) {
    c.data_decision = StrCat("image archive of ", size, " bytes refused");
    return ForClient(info.status());
  }
  const std::string dir = ImageDir(options_.image_dir, c.tenant_id, info->digest);
  if (::rename(tmp.c_str(), (dir + "/image.tar").c_str()) != 0) {
    return absl::InternalError(StrCat("cannot store the image archive: ", std::strerror(errno)));
  }
  cleanup.path.clear();
  fs::remove_all(dir + "/rootfs", ec);  // verified; the server never runs images
  Json meta{{"digest", info->digest},
            {"tenant", c.tenant_name},
            {"size", size},
            {"imported_at", clock_.NowUnix()},
            {"imported_by", c.identity ? c.identity->user_name : std::string()}};
  {
    const std::string mtmp = dir + "/meta.json.tmp";
    int mfd = ::open(mtmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (mfd < 0) return absl::InternalError(StrCat("cannot write ", mtmp, ": ", std::strerror(errno)));
    const std::string text = meta.dump();
    absl::Status w = WriteAll(mfd, text.data(), text.size());
    if (w.ok() && ::fsync(mfd) != 0) w = absl::InternalError(StrCat("fsync ", mtmp, ": ", std::strerror(errno)));
    ::close(mfd);
    WARDEN_RETURN_IF_ERROR(w);
    if (::rename(mtmp.c_str(), (dir + "/meta.json").c_str()) != 0) {
      return absl::InternalError(StrCat("cannot store meta.json: ", std::strerror(errno)));
    }
  }
  c.data_decision = StrCat("image ", info->digest, " (", size, " bytes) verified and stored");
  meta["env"] = Json::array();
  for (const auto& [k, v] : info->env) meta["env"].push_back(StrCat(k, "=", v));
  meta["entrypoint"] = info->entrypoint;
  meta["cmd"] = info->cmd;
  return meta;
}

absl::StatusOr<Json> ApiService::ListImages(Call& c) {
  if (options_.image_dir.empty()) return absl::UnavailableError("images are not stored by this server");
  Json items = Json::array();
  std::error_code ec;
  std::vector<Json> found;
  for (const auto& e : fs::directory_iterator(StrCat(options_.image_dir, "/", c.tenant_id), ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() != 64 || !IsImageDigest(StrCat("sha256:", name))) continue;
    auto meta = ReadMeta(e.path().string());
    if (meta.ok()) found.push_back(std::move(*meta));  // an import still in progress has none yet
  }
  std::sort(found.begin(), found.end(), [](const Json& a, const Json& b) {
    return a.value("imported_at", int64_t{0}) > b.value("imported_at", int64_t{0});
  });
  for (Json& j : found) items.push_back(std::move(j));
  return Json{{"items", items}};
}

absl::StatusOr<Json> ApiService::ShowImage(Call& c) {
  if (options_.image_dir.empty()) return absl::UnavailableError("images are not stored by this server");
  const std::string& digest = c.req.params["digest"];
  WARDEN_RETURN_IF_ERROR(CheckDigest(digest));
  const std::string dir = ImageDir(options_.image_dir, c.tenant_id, digest);
  auto meta = ReadMeta(dir);
  if (!meta.ok()) return absl::NotFoundError(StrCat("tenant \"", c.tenant_name, "\" has no image ", digest));
  auto info = runtime::LookupImage(options_.image_dir, c.tenant_id, digest);
  if (info.ok()) {
    (*meta)["env"] = Json::array();
    for (const auto& [k, v] : info->env) (*meta)["env"].push_back(StrCat(k, "=", v));
    (*meta)["entrypoint"] = info->entrypoint;
    (*meta)["cmd"] = info->cmd;
    (*meta)["working_dir"] = info->working_dir;
  }
  return *meta;
}

absl::StatusOr<Json> ApiService::DeleteImage(Call& c) {
  if (options_.image_dir.empty()) return absl::UnavailableError("images are not stored by this server");
  const std::string& digest = c.req.params["digest"];
  WARDEN_RETURN_IF_ERROR(CheckDigest(digest));
  const std::string dir = ImageDir(options_.image_dir, c.tenant_id, digest);
  struct stat st;
  if (::stat((dir + "/meta.json").c_str(), &st) != 0) {
    return absl::NotFoundError(StrCat("tenant \"", c.tenant_name, "\" has no image ", digest));
  }
  c.data_decision = StrCat("image ", digest);
  WARDEN_RETURN_IF_ERROR(runtime::RemoveImage(options_.image_dir, c.tenant_id, digest));
  return Json{{"deleted", digest}};
}

absl::Status ApiService::AuthorizeJobImage(Call& c, const api::JobRun& run) {
  if (run.image == "host") return absl::OkStatus();
  WARDEN_RETURN_IF_ERROR(CheckDigest(run.image));
  struct stat st;
  if (options_.image_dir.empty() ||
      ::stat((ImageDir(options_.image_dir, c.tenant_id, run.image) + "/image.tar").c_str(), &st) != 0) {
    // Same answer whether another tenant has that digest or nobody has: no oracle.
    return absl::InvalidArgumentError(StrCat("unknown image ", run.image, ": tenant \"", c.tenant_name,
                                             "\" has not imported it (gpuwarden image ls)"));
  }
  return absl::OkStatus();
}

absl::Status ApiService::OpenJobImageForAgent(const std::string& node_id, const std::string& job_id,
                                              const std::string& expected_digest, AgentImage& out) {
  if (options_.jobs == nullptr) return absl::UnavailableError("the job service is not running");
  if (options_.image_dir.empty()) return absl::UnavailableError("images are not stored by this server");
  WARDEN_ASSIGN_OR_RETURN(auto job, options_.jobs->ImageForNode(node_id, job_id));
  out.tenant_id = job.first;
  out.tenant_name = TenantNameOf(job.first);
  out.digest = job.second;
  if (job.second == "host") return absl::NotFoundError(StrCat("job \"", job_id, "\" uses the host image"));
  if (expected_digest != job.second) {
    return absl::NotFoundError(StrCat("job \"", job_id, "\" does not use image ", expected_digest.substr(0, 80)));
  }
  // Looked up under the job's own tenant: another tenant's copy of the digest is never served.
  const std::string path = ImageDir(options_.image_dir, job.first, job.second) + "/image.tar";
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(StrCat("image ", job.second, " of job \"", job_id, "\" is no longer stored (deleted?)"));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError(StrCat("fstat ", path, ": ", std::strerror(errno)));
  }
  out.fd = fd;
  out.size = st.st_size;
  return absl::OkStatus();
}

absl::StatusOr<std::pair<std::string, std::string>> JobService::ImageForNode(const std::string& node_id,
                                                                             const std::string& job_id) {
  std::lock_guard lock(mu_);
  auto it = active_.find(job_id);
  if (it == active_.end() || it->second.rec.node_id != node_id ||
      (it->second.rec.state != "placed" && it->second.rec.state != "running")) {
    return absl::NotFoundError(StrCat("job \"", job_id, "\" is not assigned to this node"));
  }
  return std::make_pair(it->second.rec.tenant_id, it->second.run.image);
}

http::Response AgentApi::JobImage(http::Request& req, const cluster::AgentPeer& peer) {
  const std::string job(req.Param("job"));
  const std::string digest(req.Query("digest"));
  AgentImage img;
  absl::Status s = images_ ? images_(peer.node_id, job, digest, img)
                           : absl::UnavailableError("images are not served by this server");
  http::Response r = s.ok() ? http::Response{} : http::Response::Error(s);
  // One durable event per fetch (digest, tenant, bytes); no byte leaves unless it was recorded.
  audit::AuditEvent e = NodeEvent(req, peer, "images:fetch");
  e.tenant = img.tenant_name;
  e.decision = s.ok() ? "allow" : "deny";
  e.status = r.status;
  e.bytes = s.ok() ? img.size : 0;
  e.reason = StrCat("job ", job, " image ", digest.substr(0, 80), s.ok() ? "" : StrCat(": ", s.message()))
                 .substr(0, 512);
  if (absl::Status a = audit_.Append(std::move(e)); !a.ok()) {
    if (img.fd >= 0) ::close(img.fd);
    return http::Response::Error(absl::UnavailableError("audit log unavailable; request refused"));
  }
  if (!s.ok()) return r;
  r.status = 200;
  r.content_type = "application/x-tar";
  r.content_length = img.size;
  auto fd = std::shared_ptr<int>(new int(img.fd), [](int* p) {
    ::close(*p);
    delete p;
  });
  r.body_source = [fd](char* buf, size_t n) -> absl::StatusOr<size_t> {
    for (;;) {
      ssize_t got = ::read(*fd, buf, n);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return absl::InternalError(StrCat("read image: ", std::strerror(errno)));
      return static_cast<size_t>(got);
    }
  };
  return r;
}

}  // namespace warden::server
