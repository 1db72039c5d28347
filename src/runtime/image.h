// Per-tenant image store. Images arrive as OCI image layouts (a directory, or a tar archive of
// one: oci-archive, `docker save` of Docker 25+) or as legacy `docker save` tar archives (turned
// into a layout first, see DockerArchiveToLayout); every blob is checked against its sha256 digest (index -> manifest -> config -> layers,
// and each uncompressed layer against the config's diff_ids), layers are extracted safely (no
// path traversal, no writes through symlinks, no device nodes, setuid/setgid bits dropped) and
// the image's config env is refused when it sets a loader variable.
//
// Layout on disk: <root>/<tenant>/<manifest hex>/{rootfs/, image.json}. Thread-compatible: one
// importer per tenant at a time (the agent serialises imports).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace warden::runtime {

struct ImageInfo {
  std::string digest;  // "sha256:<manifest hex>"
  std::string rootfs;  // absolute
  std::vector<std::pair<std::string, std::string>> env;
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::string working_dir;
  // sha256 over the extracted root filesystem's regular files and symlinks (paths, modes,
  // contents, link targets), computed at import: VerifyImageRootfs checks a cached image with it.
  std::string rootfs_digest;
};

// Imports `path` (OCI layout dir or tar of one) for `tenant` under `image_root`. InvalidArgument
// for a malformed layout, manifest, config or tar entry, or a loader variable in the config env;
// DataLoss for a digest or size mismatch; Unimplemented for an unsupported layer compression.
// Nothing is left in the store on error.
absl::StatusOr<ImageInfo> ImportImage(const std::string& image_root, const std::string& tenant,
                                      const std::string& path);

// A tenant's imported image. NotFound when `tenant` has no image with that manifest digest (a
// tenant can never name another tenant's image).
absl::StatusOr<ImageInfo> LookupImage(const std::string& image_root, const std::string& tenant,
                                      const std::string& digest);

// Recomputes the rootfs digest of an imported image and compares it with the one recorded at
// import. DataLoss naming the image when a file was changed, added or removed since (a corrupted
// or tampered cache); FailedPrecondition when the image predates rootfs digests. Reads every
// file of the image (cost proportional to its size).
absl::Status VerifyImageRootfs(const ImageInfo& info);

// Removes a tenant's imported image (idempotent: OK when absent). InvalidArgument for a bad
// tenant name or digest.
absl::Status RemoveImage(const std::string& image_root, const std::string& tenant,
                         const std::string& digest);

// The digest RootfsDigest-style of a directory tree (exposed for tests): see ImageInfo.
absl::StatusOr<std::string> ComputeRootfsDigest(const std::string& rootfs);

// Parsers, exposed for tests and fuzz targets.
struct Descriptor {
  std::string media_type;
  std::string digest;  // "sha256:<hex>"
  int64_t size = 0;
};
struct ImageManifest {
  Descriptor config;
  std::vector<Descriptor> layers;
};
struct ImageConfig {
  std::vector<std::pair<std::string, std::string>> env;
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::string working_dir;
  std::vector<std::string> diff_ids;
};
// index.json: the one image manifest for linux/amd64 (or the only one).
absl::StatusOr<Descriptor> ParseImageIndex(std::string_view json);
absl::StatusOr<ImageManifest> ParseImageManifest(std::string_view json);
absl::StatusOr<ImageConfig> ParseImageConfig(std::string_view json);

// Legacy `docker save` archives (docker_archive.cc): manifest.json is
// [{"Config": "<hex>.json", "RepoTags": [...], "Layers": ["<id>/layer.tar", ...]}]. Exactly one
// image per archive; paths relative and inside it. InvalidArgument naming the problem.
struct DockerArchiveManifest {
  std::string config;
  std::vector<std::string> layers;
  std::vector<std::string> repo_tags;
};
absl::StatusOr<DockerArchiveManifest> ParseDockerArchiveManifest(std::string_view json);
// Rewrites an extracted legacy archive in `dir` into an OCI image layout in place (blobs named by
// their sha256, a manifest and index synthesized from them); ImportImage then verifies it like
// any layout. Used only on ImportImage's own extracted copy, never on a caller's directory.
absl::Status DockerArchiveToLayout(const std::string& dir);

}  // namespace warden::runtime
