// `docker save` archives in the legacy format (Docker before 25, e.g. Debian 12's docker.io
// 20.10): manifest.json naming a config file and one uncompressed `<id>/layer.tar` per layer, no
// OCI layout. ImportImage extracts the archive, then DockerArchiveToLayout rewrites that
// extracted copy into an OCI image layout: the config and layers become blobs named by their
// sha256, and a manifest and index are synthesized from them. The layout then goes through the
// same verified import as any other (digests, diff_ids, safe extraction, loader variables), and
// since the synthesized manifest depends only on the blobs, the same archive always yields the
// same image digest (the server and every agent agree on it). See image.h.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"
#include "runtime/image.h"
#include "runtime/image_internal.h"
#include "runtime/job_files.h"

namespace warden::runtime {
namespace {

using common::Json;
using common::StrCat;
namespace fs = std::filesystem;

constexpr size_t kMaxLayers = 256;

// A path inside the archive: relative, no "..", no empty or "." components, no NUL.
absl::Status CheckArchivePath(std::string_view what, std::string_view p) {
  if (p.empty() || p.size() > 4096 || p.front() == '/' || p.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(StrCat(what, ": \"", p, "\" is not a relative path"));
  }
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find('/', start);
    if (end == std::string_view::npos) end = p.size();
    std::string_view part = p.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") {
      return absl::InvalidArgumentError(StrCat(what, ": \"", p, "\" leaves the archive"));
    }
    start = end + 1;
  }
  return absl::OkStatus();
}

// sha256 and size of an archive member (never through a link), with errors naming it.
absl::StatusOr<internal::FileDigest> DigestMember(const std::string& path, std::string_view what) {
  auto d = internal::DigestFile(path);
  if (absl::IsNotFound(d.status())) {
    return absl::InvalidArgumentError(
        StrCat(what, " is missing from the archive (or is a link, which is not followed)"));
  }
  if (absl::IsInvalidArgument(d.status())) {
    return absl::InvalidArgumentError(StrCat(what, " is not a regular file"));
  }
  return d;
}

// Moves `from` to blobs/sha256/<hex> (a layer listed twice is one blob).
absl::Status PlaceBlob(const std::string& dir, const std::string& from, const std::string& hex) {
  const std::string to = StrCat(dir, "/blobs/sha256/", hex);
  struct stat st;
  if (lstat(to.c_str(), &st) == 0) return absl::OkStatus();
  if (link(from.c_str(), to.c_str()) != 0) {
    return absl::InternalError(StrCat("cannot place blob ", hex, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DockerArchiveManifest> ParseDockerArchiveManifest(std::string_view json) {
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(json));
  if (!j.is_array()) {
    return absl::InvalidArgumentError("docker archive manifest.json must be an array");
  }
  if (j.size() != 1) {
    return absl::InvalidArgumentError(
        StrCat("docker archive holds ", j.size(),
               " images; save and import one image at a time"));
  }
  const Json& e = j[0];
  if (!e.is_object()) {
    return absl::InvalidArgumentError("docker archive manifest.json entry must be an object");
  }
  DockerArchiveManifest out;
  auto config = e.find("Config");
  if (config == e.end() || !config->is_string()) {
    return absl::InvalidArgumentError("docker archive manifest.json: \"Config\" must be a string");
  }
  out.config = config->get<std::string>();
  WARDEN_RETURN_IF_ERROR(CheckArchivePath("docker archive Config", out.config));
  auto layers = e.find("Layers");
  if (layers == e.end() || !layers->is_array()) {
    return absl::InvalidArgumentError("docker archive manifest.json: \"Layers\" must be an array");
  }
  if (layers->size() > kMaxLayers) {
    return absl::InvalidArgumentError(
        StrCat("docker archive lists ", layers->size(), " layers; at most ", kMaxLayers));
  }
  for (const Json& l : *layers) {
    if (!l.is_string()) {
      return absl::InvalidArgumentError("docker archive manifest.json: a layer is not a string");
    }
    out.layers.push_back(l.get<std::string>());
    WARDEN_RETURN_IF_ERROR(CheckArchivePath("docker archive layer", out.layers.back()));
  }
  auto tags = e.find("RepoTags");
  if (tags != e.end() && !tags->is_null()) {
    if (!tags->is_array()) {
      return absl::InvalidArgumentError("docker archive manifest.json: \"RepoTags\" must be an array");
    }
    for (const Json& t : *tags) {
      if (t.is_string()) out.repo_tags.push_back(t.get<std::string>());
    }
  }
  return out;
}

absl::Status DockerArchiveToLayout(const std::string& dir) {
  struct stat mst;
  if (lstat((dir + "/manifest.json").c_str(), &mst) != 0 || !S_ISREG(mst.st_mode) ||
      mst.st_size > (4 << 20)) {
    return absl::InvalidArgumentError("docker archive manifest.json: not a regular file of at most 4 MiB");
  }
  WARDEN_ASSIGN_OR_RETURN(std::string text, ReadFileToString(dir + "/manifest.json"));
  WARDEN_ASSIGN_OR_RETURN(DockerArchiveManifest m, ParseDockerArchiveManifest(text));
  std::error_code ec;
  fs::create_directories(dir + "/blobs/sha256", ec);
  if (ec) return absl::InternalError(StrCat("cannot create blobs/sha256: ", ec.message()));

  WARDEN_ASSIGN_OR_RETURN(internal::FileDigest config,
                          DigestMember(StrCat(dir, "/", m.config), StrCat("config ", m.config)));
  WARDEN_RETURN_IF_ERROR(PlaceBlob(dir, StrCat(dir, "/", m.config), config.hex));
  Json layers = Json::array();
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const std::string path = StrCat(dir, "/", m.layers[i]);
    WARDEN_ASSIGN_OR_RETURN(internal::FileDigest d,
                            DigestMember(path, StrCat("layer ", i, " (", m.layers[i], ")")));
    WARDEN_RETURN_IF_ERROR(PlaceBlob(dir, path, d.hex));
    layers.push_back(Json{{"mediaType", d.gzip ? "application/vnd.oci.image.layer.v1.tar+gzip"
                                               : "application/vnd.oci.image.layer.v1.tar"},
                          {"digest", StrCat("sha256:", d.hex)},
                          {"size", d.size}});
  }
  // Keys serialize sorted, so the manifest (and the image digest) depend on the blobs alone.
  Json manifest{{"schemaVersion", 2},
                {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                {"config",
                 Json{{"mediaType", "application/vnd.oci.image.config.v1+json"},
                      {"digest", StrCat("sha256:", config.hex)},
                      {"size", config.size}}},
                {"layers", layers}};
  const std::string manifest_text = manifest.dump();
  const std::string tmp = dir + "/.manifest";
  WARDEN_RETURN_IF_ERROR(WriteFileAtomic(tmp, manifest_text, 0600, /*durable=*/false));
  WARDEN_ASSIGN_OR_RETURN(internal::FileDigest md, DigestMember(tmp, "synthesized manifest"));
  WARDEN_RETURN_IF_ERROR(PlaceBlob(dir, tmp, md.hex));
  Json index{{"schemaVersion", 2},
             {"manifests", Json::array({Json{{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                                             {"digest", StrCat("sha256:", md.hex)},
                                             {"size", md.size}}})}};
  WARDEN_RETURN_IF_ERROR(WriteFileAtomic(dir + "/index.json", index.dump(), 0600, false));
  return WriteFileAtomic(dir + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})", 0600, false);
}

}  // namespace warden::runtime
