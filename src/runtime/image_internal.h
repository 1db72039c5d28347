// Private to the runtime module's image import (image.cc, docker_archive.cc).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace warden::runtime::internal {

struct FileDigest {
  std::string hex;      // sha256 of the content, lowercase hex
  int64_t size = 0;
  bool gzip = false;    // starts with the gzip magic (1f 8b)
};

// The sha256 and size of the regular file at `path`, opened with O_NOFOLLOW (a link is never
// followed). NotFound when it cannot be opened (missing, or a link); InvalidArgument when it is
// not a regular file; Internal on a read error.
absl::StatusOr<FileDigest> DigestFile(const std::string& path);

}  // namespace warden::runtime::internal
