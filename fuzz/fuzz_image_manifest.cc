// Feeds arbitrary bytes to the OCI image parsers (index.json, manifest, config): tenants upload
// these. Each must return a value or InvalidArgument, never crash; an accepted config's env goes
// through the loader-variable check, which must not crash either.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "runtime/image.h"
#include "runtime/runtime.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace warden::runtime;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto index = ParseImageIndex(text);
  if (!index.ok() && index.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
  if (index.ok() && (index->digest.size() != 71 || index->size < 0)) std::abort();
  auto manifest = ParseImageManifest(text);
  if (!manifest.ok() && manifest.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
  if (manifest.ok()) {
    for (const Descriptor& d : manifest->layers) {
      // Digests become file names under blobs/sha256: never anything but 64 hex digits.
      if (d.digest.size() != 71 || d.digest.find('/') != std::string::npos) std::abort();
    }
  }
  auto legacy = ParseDockerArchiveManifest(text);
  if (!legacy.ok() && legacy.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
  if (legacy.ok()) {
    // Paths are joined under the extracted archive: never absolute, never "..".
    for (const std::string& p : legacy->layers) {
      const std::string q = "/" + p + "/";
      if (p.empty() || p[0] == '/' || q.find("/../") != std::string::npos ||
          q.find("/./") != std::string::npos || q.find("//") != std::string::npos) {
        std::abort();
      }
    }
  }
  auto config = ParseImageConfig(text);
  if (!config.ok() && config.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
  if (config.ok()) {
    absl::Status st = ValidateEnv("image config env", config->env);
    for (const auto& [k, v] : config->env) {
      if (IsLoaderVariable(k) && st.ok()) std::abort();  // a loader variable must never pass
    }
  }
  return 0;
}
