// Feeds arbitrary bytes as an image layer (tar) to the reader and the safe extractor. Parsing must
// return entries or InvalidArgument, never crash; extraction runs into a scratch root beside an
// "outside" directory that must stay empty whatever the archive says (path traversal, symlink and
// hard-link escapes), and no device node or setuid file may appear inside.
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

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
  return 0;
}
