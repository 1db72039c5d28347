// Feeds arbitrary bytes as an image layer (tar) to the reader and the safe extractor. Parsing must
// return entries or InvalidArgument, never crash; extraction runs into a scratch root beside an
// "outside" directory that must stay empty whatever the archive says (path traversal, symlink and
// hard-link escapes), and no device node or setuid file may appear inside. The same bytes as an
// OCI archive (links skipped, as `image import` reads docker save output) must leave no link at
// all, and the rootfs digest of whatever was extracted must be computable and stable.
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "runtime/image.h"
#include "runtime/tar.h"

namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace warden::runtime;
  static const fs::path base = fs::temp_directory_path() / ("fuzz_tar_" + std::to_string(getpid()));
  static const struct Cleanup {
    ~Cleanup() {
      std::error_code e;
      fs::remove_all(base, e);
    }
  } cleanup;
  const fs::path root = base / "root", outside = base / "outside";
  std::error_code ec;
  fs::remove_all(root, ec);
  fs::create_directories(root);
  fs::create_directories(outside);

  size_t pos = 0;
  auto source = [&](char* buf, size_t n) -> absl::StatusOr<size_t> {
    size_t k = std::min(n, size - pos);
    std::memcpy(buf, data + pos, k);
    pos += k;
    return k;
  };
  {
    TarReader reader(source);
    for (int i = 0; i < 1000; ++i) {
      auto e = reader.Next();
      if (!e.ok()) {
        if (e.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
        break;
      }
      if (!e->has_value()) break;
      auto clean = CleanArchivePath((*e)->path);
      if (clean.ok() && (clean->find("..") == 0 || (!clean->empty() && (*clean)[0] == '/'))) std::abort();
    }
  }
  pos = 0;
  TarReader reader(source);
  ExtractOptions opts;
  opts.max_total_bytes = 1 << 20;
  (void)ExtractTar(reader, root.string(), opts);
  if (!fs::is_empty(outside)) std::abort();  // an escape
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::none, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    struct stat st;
    if (lstat(it->path().c_str(), &st) != 0) continue;
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode)) std::abort();
    if (S_ISREG(st.st_mode) && (st.st_mode & 06000)) std::abort();
  }
  auto d1 = ComputeRootfsDigest(root.string());
  auto d2 = ComputeRootfsDigest(root.string());
  if (d1.ok() != d2.ok() || (d1.ok() && *d1 != *d2)) std::abort();

  const fs::path archive = base / "archive";
  fs::remove_all(archive, ec);
  fs::create_directories(archive);
  pos = 0;
  TarReader areader(source);
  ExtractOptions aopts;
  aopts.allow_links = false;
  aopts.skip_links = true;
  aopts.apply_whiteouts = false;
  aopts.max_total_bytes = 1 << 20;
  (void)ExtractTar(areader, archive.string(), aopts);
  if (!fs::is_empty(outside)) std::abort();
  for (auto it = fs::recursive_directory_iterator(archive, fs::directory_options::none, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    struct stat st;
    if (lstat(it->path().c_str(), &st) != 0) continue;
    if (S_ISLNK(st.st_mode) || (S_ISREG(st.st_mode) && st.st_nlink > 1)) std::abort();  // a link made it
  }
  return 0;
}
