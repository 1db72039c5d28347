// ImageCache (image_cache.h).
#include "agent/image_cache.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

#include "common/metrics.h"
#include "common/status.h"
#include "common/strings.h"
#include "runtime/image.h"

namespace warden::agent {
namespace {

using common::StrCat;

common::metrics::CounterFamily& ImageEvents() {
  static auto& f = common::metrics::Registry::Default().AddCounter(
      "agent_image_cache_total", "job images: fetched from the server, reused from the cache, "
                                 "or found corrupted in the cache",
      {"outcome"});
  return f;
}

}  // namespace

absl::Status ImageCache::Fetch(const std::string& tenant, const std::string& job_id, const std::string& digest,
                               const ImageFetcher& fetch) {
  const std::string tenant_dir = StrCat(root_, "/", tenant);
  std::error_code ec;
  std::filesystem::create_directories(tenant_dir, ec);
  if (ec) return absl::InternalError(StrCat("cannot create ", tenant_dir, ": ", ec.message()));
  ::chmod(tenant_dir.c_str(), 0711);
  std::random_device rd;
  const std::string tmp = StrCat(tenant_dir, "/.fetch-", rd(), rd(), ".tar");
  struct Cleanup {
    std::string path;
    ~Cleanup() { ::unlink(path.c_str()); }
  } cleanup{tmp};
  ++fetches_;
  ImageEvents().WithLabels({"fetched"}).Inc();
  if (absl::Status s = fetch(job_id, digest, tmp); !s.ok()) {
    return absl::Status(s.code(), StrCat("fetching image ", digest, " from the server: ", s.message()));
  }
  auto info = runtime::ImportImage(root_, tenant, tmp);
  if (!info.ok()) {
    return absl::Status(info.status().code(),
                        StrCat("image ", digest, " from the server failed verification: ", info.status().message()));
  }
  if (info->digest != digest) {
    // A different (but internally consistent) image: never used for this job.
    (void)runtime::RemoveImage(root_, tenant, info->digest);
    return absl::DataLossError(StrCat("the server sent image ", info->digest, " for job ", job_id,
                                      ", which names ", digest));
  }
  return absl::OkStatus();
}

absl::Status ImageCache::Ensure(const std::string& tenant, const std::string& job_id, const std::string& digest,
                                const ImageFetcher& fetch) {
  auto cached = runtime::LookupImage(root_, tenant, digest);
  if (cached.ok()) {
    absl::Status intact = runtime::VerifyImageRootfs(*cached);
    if (intact.ok()) {
      ++hits_;
      ImageEvents().WithLabels({"reused"}).Inc();
      return absl::OkStatus();
    }
    // Corrupted (or from before rootfs digests): dropped and fetched again, verified from scratch.
    ++corrupted_;
    ImageEvents().WithLabels({"corrupted"}).Inc();
    WARDEN_RETURN_IF_ERROR(runtime::RemoveImage(root_, tenant, digest));
  } else if (cached.status().code() != absl::StatusCode::kNotFound) {
    (void)runtime::RemoveImage(root_, tenant, digest);  // unreadable image.json: start over
  }
  WARDEN_RETURN_IF_ERROR(Fetch(tenant, job_id, digest, fetch));
  auto info = runtime::LookupImage(root_, tenant, digest);
  if (!info.ok()) return info.status();
  return runtime::VerifyImageRootfs(*info);
}

}  // namespace warden::agent
