// Private to runtime: a streaming tar reader (ustar, GNU long names, PAX path/linkpath/size) and
// the safe extractor used for image layers. Hand-written: libarchive is not among the chosen
// dependencies, and extraction has to be done with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)
// on every step anyway, which no packaged extractor offers.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace warden::runtime {

// Reads up to `n` bytes into `buf`; 0 at end of stream.
using ByteSource = std::function<absl::StatusOr<size_t>(char* buf, size_t n)>;

struct TarEntry {
  enum class Type { kFile, kHardLink, kSymlink, kDir, kCharDev, kBlockDev, kFifo, kOther };
  Type type = Type::kFile;
  std::string path;      // as in the archive (after PAX / GNU long-name overrides)
  std::string linkname;  // symlink target or hard-link source
  uint32_t mode = 0;     // permission bits and setuid/setgid/sticky
  uint64_t size = 0;     // data bytes that follow (files only)
};

class TarReader {
 public:
  explicit TarReader(ByteSource source) : source_(std::move(source)) {}
  // The next entry, nullopt at the end (two zero blocks or end of stream). InvalidArgument for a
  // malformed header (bad checksum, bad number field, oversize PAX record, truncated data).
  absl::StatusOr<std::optional<TarEntry>> Next();
  // Reads the current entry's data in pieces; 0 when it is all read.
  absl::StatusOr<size_t> ReadData(char* buf, size_t n);

 private:
  absl::Status ReadExact(char* buf, size_t n);
  absl::Status SkipRemaining();
  ByteSource source_;
  uint64_t remaining_ = 0;  // data bytes of the current entry not yet read
  uint64_t padding_ = 0;    // zero bytes up to the next 512-byte boundary
};

// Parses one 512-byte header block. nullopt for an all-zero block. Exposed for the fuzz target.
absl::StatusOr<std::optional<TarEntry>> ParseTarHeader(std::string_view block);

// Normalises an archive path: strips "./" and leading '/', refuses ".." components, NUL bytes and
// names over 4096 bytes. "" means the archive root.
absl::StatusOr<std::string> CleanArchivePath(std::string_view path);

struct ExtractOptions {
  bool allow_links = true;      // symlinks and hard links (image layers); off for OCI archives
  // With allow_links off: link entries are skipped (counted in skipped_links) instead of refused.
  // `docker save` (Docker 25+) writes legacy "<id>/layer.tar" symlinks next to the OCI layout's
  // blobs; the import never needs them (blobs are read as plain files, O_NOFOLLOW).
  bool skip_links = false;
  bool apply_whiteouts = true;  // OCI layer whiteouts (.wh.NAME, .wh..wh..opq)
  uint64_t max_total_bytes = 64ull << 30;
  uint64_t max_entries = 1'000'000;
};

struct ExtractStats {
  uint64_t entries = 0;
  uint64_t bytes = 0;
  uint64_t dropped_devices = 0;    // device nodes and fifos are never created
  uint64_t dropped_setid_bits = 0;  // files whose setuid/setgid bits were cleared
  uint64_t skipped_links = 0;       // ExtractOptions::skip_links
};

// Extracts every entry of `reader` under `root_dir` (which must exist). Every path is resolved
// with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), so no entry can write outside root_dir,
// through a symlink an earlier entry planted, or through "..". Files are created with O_EXCL
// and O_NOFOLLOW. InvalidArgument naming the entry on any refusal.
absl::StatusOr<ExtractStats> ExtractTar(TarReader& reader, const std::string& root_dir,
                                        const ExtractOptions& options);

}  // namespace warden::runtime
