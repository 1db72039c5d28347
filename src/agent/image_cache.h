// ImageCache: the agent's per-tenant cache of job images (issue 7), in runtime's image store at
// DATA_DIR/images/<tenant id>/<manifest hex>/ (the root the sandbox runner reads rootfs from).
//
// Before a job with an image starts, Ensure makes the image present and intact: a cached image
// is reused when its root filesystem still hashes to the digest recorded at import
// (runtime::VerifyImageRootfs); a missing one, or a cached one that no longer matches (corrupted
// or changed on disk), is fetched from the server over the mTLS agent API as the OCI archive the
// tenant imported, and runtime::ImportImage verifies every digest again (index, manifest, config,
// layers, diff_ids), sanitizes every layer entry and refuses loader variables, before the image
// becomes visible. Images are addressed by content: two tenants that imported the same digest
// get the same bytes, each in their own directory; which tenant may use which digest is the
// server's decision (checked at submit and at fetch).
// Used from the job runner's transfer worker only (one thread; job_runner.h); not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"

namespace warden::agent {

// Downloads job `job_id`'s image archive (which must be image `digest`) into the file `dest`
// (created by the fetcher). NotFound when the server will not serve it for that job.
using ImageFetcher = std::function<absl::Status(const std::string& job_id, const std::string& digest,
                                                const std::string& dest)>;

class ImageCache {
 public:
  explicit ImageCache(std::string image_root) : root_(std::move(image_root)) {}

  // Makes image `digest` ("sha256:<hex>") of `tenant` usable for job `job_id`. Errors name the
  // image and what failed (fetch refused, verification, a second corruption right after a
  // refetch); the job must then not start.
  absl::Status Ensure(const std::string& tenant, const std::string& job_id, const std::string& digest,
                      const ImageFetcher& fetch);

  uint64_t fetches() const { return fetches_; }        // archives downloaded
  uint64_t hits() const { return hits_; }              // cached and intact, reused
  uint64_t corrupted() const { return corrupted_; }    // cached but no longer matching: refetched

 private:
  absl::Status Fetch(const std::string& tenant, const std::string& job_id, const std::string& digest,
                     const ImageFetcher& fetch);
  std::string root_;
  uint64_t fetches_ = 0, hits_ = 0, corrupted_ = 0;
};

}  // namespace warden::agent
