// OCI image import into the per-tenant store. See image.h.
#include "runtime/image.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "common/ids.h"
#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"
#include "runtime/image_internal.h"
#include "runtime/job_files.h"
#include "runtime/runtime.h"
#include "runtime/tar.h"

namespace warden::runtime {
namespace {

using common::Json;
using common::StrCat;
namespace fs = std::filesystem;

constexpr std::string_view kManifestType = "application/vnd.oci.image.manifest.v1+json";
constexpr std::string_view kDockerManifestType = "application/vnd.docker.distribution.manifest.v2+json";
constexpr size_t kMaxJsonBlob = 4 << 20;

bool IsHex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

absl::StatusOr<Descriptor> ParseDescriptor(const Json& j, std::string_view what) {
  if (!j.is_object()) return absl::InvalidArgumentError(StrCat(what, ": descriptor must be an object"));
  Descriptor d;
  auto mt = j.find("mediaType");
  auto dg = j.find("digest");
  auto sz = j.find("size");
  if (mt == j.end() || !mt->is_string()) return absl::InvalidArgumentError(StrCat(what, ": mediaType missing"));
  if (dg == j.end() || !dg->is_string()) return absl::InvalidArgumentError(StrCat(what, ": digest missing"));
  if (sz == j.end() || !sz->is_number_integer() || sz->get<int64_t>() < 0) {
    return absl::InvalidArgumentError(StrCat(what, ": size missing or negative"));
  }
  d.media_type = mt->get<std::string>();
  d.digest = dg->get<std::string>();
  d.size = sz->get<int64_t>();
  if (d.digest.size() != 71 || d.digest.substr(0, 7) != "sha256:" || !IsHex64(d.digest.substr(7))) {
    return absl::InvalidArgumentError(StrCat(what, ": digest must be sha256:<64 lowercase hex>"));
  }
  return d;
}

absl::StatusOr<std::vector<std::string>> StringArray(const Json& j, std::string_view what) {
  std::vector<std::string> out;
  if (j.is_null()) return out;
  if (!j.is_array()) return absl::InvalidArgumentError(StrCat(what, " must be an array of strings"));
  for (const Json& v : j) {
    if (!v.is_string()) return absl::InvalidArgumentError(StrCat(what, " must be an array of strings"));
    out.push_back(v.get<std::string>());
  }
  return out;
}

std::string Hex(const unsigned char* p, size_t n) {
  static const char* k = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out += k[p[i] >> 4];
    out += k[p[i] & 15];
  }
  return out;
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  void Update(const void* p, size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  std::string HexDigest() {
    unsigned char md[32];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    return Hex(md, len);
  }

 private:
  EVP_MD_CTX* ctx_;
};

std::string BlobPath(const std::string& layout, const std::string& digest) {
  return StrCat(layout, "/blobs/sha256/", digest.substr(7));
}

// Checks a blob's size and sha256 against its descriptor (DataLoss on mismatch).
absl::Status VerifyBlob(const std::string& layout, const Descriptor& d) {
  auto f = internal::DigestFile(BlobPath(layout, d.digest));
  if (absl::IsNotFound(f.status())) {
    return absl::InvalidArgumentError(StrCat("blob ", d.digest, " missing from the layout"));
  }
  if (!f.ok()) return absl::Status(f.status().code(), StrCat("blob ", d.digest, ": ", f.status().message()));
  if (f->size != d.size) return absl::DataLossError(StrCat("blob ", d.digest, ": size ", f->size, " but the descriptor says ", d.size));
  std::string got = StrCat("sha256:", f->hex);
  if (got != d.digest) return absl::DataLossError(StrCat("blob ", d.digest, ": content hashes to ", got));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadVerifiedJson(const std::string& layout, const Descriptor& d) {
  if (d.size > static_cast<int64_t>(kMaxJsonBlob)) return absl::InvalidArgumentError(StrCat("blob ", d.digest, " too large for JSON"));
  WARDEN_RETURN_IF_ERROR(VerifyBlob(layout, d));
  return ReadFileToString(BlobPath(layout, d.digest));
}

// A file source, optionally through gunzip, hashing the bytes it hands out (the diff_id).
class LayerStream {
 public:
  LayerStream(int fd, bool gzip) : fd_(fd), gzip_(gzip) {
    if (gzip_) {
      std::memset(&zs_, 0, sizeof(zs_));
      inflateInit2(&zs_, 32 + MAX_WBITS);
    }
  }
  ~LayerStream() {
    if (gzip_) inflateEnd(&zs_);
    close(fd_);
  }
  absl::StatusOr<size_t> Read(char* out, size_t n) {
    size_t got = 0;
    if (!gzip_) {
      ssize_t r;
      do {
        r = read(fd_, out, n);
      } while (r < 0 && errno == EINTR);
      if (r < 0) return absl::InternalError(StrCat("read layer: ", std::strerror(errno)));
      got = static_cast<size_t>(r);
    } else {
      zs_.next_out = reinterpret_cast<Bytef*>(out);
      zs_.avail_out = static_cast<uInt>(n);
      while (zs_.avail_out == n && !done_) {
        if (zs_.avail_in == 0) {
          ssize_t r = read(fd_, in_, sizeof(in_));
          if (r < 0 && errno == EINTR) continue;
          if (r < 0) return absl::InternalError(StrCat("read layer: ", std::strerror(errno)));
          if (r == 0) {
            if (!eof_ok_) return absl::InvalidArgumentError("layer: truncated gzip stream");
            done_ = true;
            break;
          }
          zs_.next_in = reinterpret_cast<Bytef*>(in_);
          zs_.avail_in = static_cast<uInt>(r);
        }
        int rc = inflate(&zs_, Z_NO_FLUSH);
        if (rc == Z_STREAM_END) {
          // Concatenated gzip members are legal; start over if more input follows.
          eof_ok_ = true;
          if (zs_.avail_in > 0) {
            inflateReset(&zs_);
          } else {
            ssize_t r = read(fd_, in_, sizeof(in_));
            if (r <= 0) {
              done_ = true;
            } else {
              inflateReset(&zs_);
              zs_.next_in = reinterpret_cast<Bytef*>(in_);
              zs_.avail_in = static_cast<uInt>(r);
            }
          }
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
          return absl::InvalidArgumentError(StrCat("layer: corrupt gzip stream (zlib ", rc, ")"));
        } else {
          eof_ok_ = false;
        }
      }
      got = n - zs_.avail_out;
    }
    hash_.Update(out, got);
    return got;
  }
  std::string DiffId() { return StrCat("sha256:", hash_.HexDigest()); }

 private:
  int fd_;
  bool gzip_;
  bool done_ = false;
  bool eof_ok_ = false;
  z_stream zs_;
  char in_[1 << 16];
  Sha256 hash_;
};

absl::StatusOr<ImageInfo> ReadImageJson(const std::string& dir) {
  WARDEN_ASSIGN_OR_RETURN(std::string text, ReadFileToString(dir + "/image.json"));
  Json j = Json::parse(text, nullptr, false);
  if (!j.is_object()) return absl::DataLossError(StrCat(dir, "/image.json is corrupt"));
  ImageInfo info;
  try {
    info.digest = j.at("digest").get<std::string>();
    for (const Json& kv : j.at("env")) info.env.emplace_back(kv.at(0).get<std::string>(), kv.at(1).get<std::string>());
    info.entrypoint = j.at("entrypoint").get<std::vector<std::string>>();
    info.cmd = j.at("cmd").get<std::vector<std::string>>();
    info.working_dir = j.at("working_dir").get<std::string>();
    info.rootfs_digest = j.value("rootfs_digest", std::string());
  } catch (const std::exception& e) {
    return absl::DataLossError(StrCat(dir, "/image.json: ", e.what()));
  }
  info.rootfs = dir + "/rootfs";
  return info;
}

absl::StatusOr<ImageInfo> ImportLayout(const std::string& layout, const std::string& store_dir, const std::string& work) {
  WARDEN_ASSIGN_OR_RETURN(std::string marker, ReadFileToString(layout + "/oci-layout"));
  Json m = Json::parse(marker, nullptr, false);
  if (!m.is_object() || !m.contains("imageLayoutVersion")) {
    return absl::InvalidArgumentError("not an OCI image layout: oci-layout lacks imageLayoutVersion");
  }
  WARDEN_ASSIGN_OR_RETURN(std::string index_text, ReadFileToString(layout + "/index.json"));
  WARDEN_ASSIGN_OR_RETURN(Descriptor mdesc, ParseImageIndex(index_text));
  WARDEN_ASSIGN_OR_RETURN(std::string manifest_text, ReadVerifiedJson(layout, mdesc));
  WARDEN_ASSIGN_OR_RETURN(ImageManifest manifest, ParseImageManifest(manifest_text));
  WARDEN_ASSIGN_OR_RETURN(std::string config_text, ReadVerifiedJson(layout, manifest.config));
  WARDEN_ASSIGN_OR_RETURN(ImageConfig config, ParseImageConfig(config_text));
  // CVE-2025-23266: loader variables in an image's environment. Refused at import, and again when
  // a job starts.
  WARDEN_RETURN_IF_ERROR(ValidateEnv("image config env", config.env));
  if (config.diff_ids.size() != manifest.layers.size()) {
    return absl::InvalidArgumentError(StrCat("image config lists ", config.diff_ids.size(), " diff_ids for ",
                                             manifest.layers.size(), " layers"));
  }
  const std::string final_dir = StrCat(store_dir, "/", mdesc.digest.substr(7));
  if (fs::exists(final_dir + "/image.json")) return ReadImageJson(final_dir);

  std::error_code ec_unused_;
  const std::string rootfs = work + "/rootfs";
  if (mkdir(rootfs.c_str(), 0755) != 0) return absl::InternalError(StrCat("mkdir ", rootfs, ": ", std::strerror(errno)));
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const Descriptor& l = manifest.layers[i];
    bool gzip;
    if (l.media_type == "application/vnd.oci.image.layer.v1.tar" ||
        l.media_type == "application/vnd.docker.image.rootfs.diff.tar") {
      gzip = false;
    } else if (l.media_type == "application/vnd.oci.image.layer.v1.tar+gzip" ||
               l.media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip") {
      gzip = true;
    } else {
      return absl::UnimplementedError(StrCat("layer ", i, ": media type ", l.media_type, " is not supported (tar or tar+gzip)"));
    }
    WARDEN_RETURN_IF_ERROR(VerifyBlob(layout, l));
    int fd = open(BlobPath(layout, l.digest).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return absl::InternalError(StrCat("open layer ", i, ": ", std::strerror(errno)));
    LayerStream stream(fd, gzip);
    TarReader reader([&](char* b, size_t n) { return stream.Read(b, n); });
    ExtractOptions opts;
    auto stats = ExtractTar(reader, rootfs, opts);
    if (!stats.ok()) return absl::InvalidArgumentError(StrCat("layer ", i, ": ", std::string(stats.status().message())));
    // Drain the rest (tar padding after the end blocks) so the diff_id covers the whole stream.
    char sink[4096];
    for (;;) {
      WARDEN_ASSIGN_OR_RETURN(size_t n, stream.Read(sink, sizeof(sink)));
      if (n == 0) break;
    }
    std::string diff_id = stream.DiffId();
    if (diff_id != config.diff_ids[i]) {
      return absl::DataLossError(StrCat("layer ", i, ": uncompressed content hashes to ", diff_id,
                                        " but the config's diff_id is ", config.diff_ids[i]));
    }
  }
  // Mount points the runtime needs on a read-only root (it cannot create them later: the
  // rootfs belongs to host root, the runtime works as the tenant's unprivileged uid).
  for (const char* d : {"proc", "dev", "sys", "tmp", "scratch", "data", "datasets"}) {
    std::string p = StrCat(rootfs, "/", d);
    struct stat st;
    if (lstat(p.c_str(), &st) != 0 && mkdir(p.c_str(), 0755) == 0) chmod(p.c_str(), 0755);  // not the umask
  }
  chmod(rootfs.c_str(), 0755);
  WARDEN_ASSIGN_OR_RETURN(std::string rootfs_digest, ComputeRootfsDigest(rootfs));
  Json env = Json::array();
  for (const auto& [k, v] : config.env) env.push_back({k, v});
  Json info = {{"digest", mdesc.digest},         {"env", env},
               {"entrypoint", config.entrypoint}, {"cmd", config.cmd},
               {"working_dir", config.working_dir}, {"rootfs_digest", rootfs_digest}};
  WARDEN_RETURN_IF_ERROR(WriteFileAtomic(work + "/image.json", info.dump(), 0644, /*durable=*/true));
  fs::remove_all(work + "/layout", ec_unused_);
  chmod(work.c_str(), 0755);
  if (rename(work.c_str(), final_dir.c_str()) != 0) {
    if (fs::exists(final_dir + "/image.json")) return ReadImageJson(final_dir);
    return absl::InternalError(StrCat("cannot move the image into place: ", std::strerror(errno)));
  }
  return ReadImageJson(final_dir);
}

}  // namespace

absl::StatusOr<internal::FileDigest> internal::DigestFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(StrCat("cannot open ", path, ": ", std::strerror(errno)));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(StrCat(path, " is not a regular file"));
  }
  Sha256 h;
  FileDigest out;
  std::vector<unsigned char> buf(1 << 16);
  for (;;) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      return absl::InternalError(StrCat("read ", path, ": ", std::strerror(e)));
    }
    if (n == 0) break;
    if (out.size == 0 && n >= 2 && buf[0] == 0x1f && buf[1] == 0x8b) out.gzip = true;
    h.Update(buf.data(), static_cast<size_t>(n));
    out.size += n;
  }
  close(fd);
  out.hex = h.HexDigest();
  return out;
}

absl::StatusOr<Descriptor> ParseImageIndex(std::string_view json) {
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(json));
  if (!j.is_object()) return absl::InvalidArgumentError("index.json must be an object");
  auto sv = j.find("schemaVersion");
  if (sv == j.end() || !sv->is_number_integer() || sv->get<int64_t>() != 2) {
    return absl::InvalidArgumentError("index.json: schemaVersion must be 2");
  }
  auto ms = j.find("manifests");
  if (ms == j.end() || !ms->is_array() || ms->empty()) return absl::InvalidArgumentError("index.json: no manifests");
  std::vector<Descriptor> candidates;
  for (size_t i = 0; i < ms->size(); ++i) {
    WARDEN_ASSIGN_OR_RETURN(Descriptor d, ParseDescriptor((*ms)[i], StrCat("index.json manifests[", i, "]")));
    if (d.media_type != kManifestType && d.media_type != kDockerManifestType) continue;
    const Json& m = (*ms)[i];
    if (m.contains("platform") && m["platform"].is_object()) {
      const Json& p = m["platform"];
      if (p.value("os", std::string("linux")) != "linux") continue;
#if defined(__x86_64__)
      if (p.value("architecture", std::string("amd64")) != "amd64") continue;
#elif defined(__aarch64__)
      if (p.value("architecture", std::string("arm64")) != "arm64") continue;
#endif
    }
    candidates.push_back(d);
  }
  if (candidates.empty()) return absl::InvalidArgumentError("index.json: no image manifest for this platform");
  if (candidates.size() > 1) return absl::InvalidArgumentError("index.json: several image manifests for this platform; import one image at a time");
  return candidates[0];
}

absl::StatusOr<ImageManifest> ParseImageManifest(std::string_view json) {
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(json));
  if (!j.is_object()) return absl::InvalidArgumentError("manifest must be an object");
  auto sv = j.find("schemaVersion");
  if (sv == j.end() || !sv->is_number_integer() || sv->get<int64_t>() != 2) {
    return absl::InvalidArgumentError("manifest: schemaVersion must be 2");
  }
  ImageManifest m;
  auto c = j.find("config");
  if (c == j.end()) return absl::InvalidArgumentError("manifest: config missing");
  WARDEN_ASSIGN_OR_RETURN(m.config, ParseDescriptor(*c, "manifest config"));
  auto ls = j.find("layers");
  if (ls == j.end() || !ls->is_array()) return absl::InvalidArgumentError("manifest: layers must be an array");
  if (ls->size() > 256) return absl::InvalidArgumentError("manifest: more than 256 layers");
  for (size_t i = 0; i < ls->size(); ++i) {
    WARDEN_ASSIGN_OR_RETURN(Descriptor d, ParseDescriptor((*ls)[i], StrCat("manifest layers[", i, "]")));
    m.layers.push_back(d);
  }
  return m;
}

absl::StatusOr<ImageConfig> ParseImageConfig(std::string_view json) {
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(json));
  if (!j.is_object()) return absl::InvalidArgumentError("image config must be an object");
  ImageConfig out;
  if (j.contains("config") && !j["config"].is_null()) {
    const Json& c = j["config"];
    if (!c.is_object()) return absl::InvalidArgumentError("image config: config must be an object");
    if (c.contains("Env")) {
      WARDEN_ASSIGN_OR_RETURN(auto env, StringArray(c["Env"], "image config Env"));
      for (const std::string& kv : env) {
        size_t eq = kv.find('=');
        if (eq == std::string::npos) return absl::InvalidArgumentError("image config Env: entry without '='");
        out.env.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
      }
    }
    if (c.contains("Entrypoint")) {
      WARDEN_ASSIGN_OR_RETURN(out.entrypoint, StringArray(c["Entrypoint"], "image config Entrypoint"));
    }
    if (c.contains("Cmd")) {
      WARDEN_ASSIGN_OR_RETURN(out.cmd, StringArray(c["Cmd"], "image config Cmd"));
    }
    if (c.contains("WorkingDir")) {
      if (!c["WorkingDir"].is_string()) return absl::InvalidArgumentError("image config WorkingDir must be a string");
      out.working_dir = c["WorkingDir"].get<std::string>();
    }
  }
  auto rf = j.find("rootfs");
  if (rf == j.end() || !rf->is_object()) return absl::InvalidArgumentError("image config: rootfs missing");
  if (rf->value("type", std::string()) != "layers") return absl::InvalidArgumentError("image config: rootfs.type must be \"layers\"");
  if (!rf->contains("diff_ids")) return absl::InvalidArgumentError("image config: rootfs.diff_ids missing");
  WARDEN_ASSIGN_OR_RETURN(out.diff_ids, StringArray((*rf)["diff_ids"], "image config rootfs.diff_ids"));
  for (const std::string& d : out.diff_ids) {
    if (d.size() != 71 || d.substr(0, 7) != "sha256:" || !IsHex64(d.substr(7))) {
      return absl::InvalidArgumentError("image config: diff_ids must be sha256:<64 lowercase hex>");
    }
  }
  return out;
}

absl::StatusOr<ImageInfo> ImportImage(const std::string& image_root, const std::string& tenant, const std::string& path) {
  WARDEN_RETURN_IF_ERROR(common::ValidateName("tenant", tenant));
  if (image_root.empty() || image_root[0] != '/') return absl::InvalidArgumentError("image_root must be absolute");
  const std::string store_dir = StrCat(image_root, "/", tenant);
  std::error_code ec;
  fs::create_directories(store_dir, ec);
  if (ec) return absl::InternalError(StrCat("cannot create ", store_dir, ": ", ec.message()));
  chmod(image_root.c_str(), 0711);
  chmod(store_dir.c_str(), 0711);
  std::random_device rd;
  const std::string work = StrCat(store_dir, "/.import-", rd(), rd());
  if (mkdir(work.c_str(), 0700) != 0) return absl::InternalError(StrCat("mkdir ", work, ": ", std::strerror(errno)));
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code e;
      fs::remove_all(dir, e);
    }
  } cleanup{work};

  struct stat st;
  if (stat(path.c_str(), &st) != 0) return absl::NotFoundError(StrCat("image source ", path, ": ", std::strerror(errno)));
  std::string layout = path;
  if (S_ISREG(st.st_mode)) {
    // A tar of an OCI layout (oci-archive): extracted first, plain files and directories only.
    layout = work + "/layout";
    mkdir(layout.c_str(), 0700);
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return absl::NotFoundError(StrCat("open ", path, ": ", std::strerror(errno)));
    LayerStream stream(fd, false);
    TarReader reader([&](char* b, size_t n) { return stream.Read(b, n); });
    ExtractOptions opts;
    opts.allow_links = false;
    opts.skip_links = true;  // docker save's legacy links into blobs/ (tar.h)
    opts.apply_whiteouts = false;
    auto stats = ExtractTar(reader, layout, opts);
    if (!stats.ok()) return absl::InvalidArgumentError(StrCat("image archive: ", std::string(stats.status().message())));
    // A legacy `docker save` archive (no OCI layout): rewritten into one (docker_archive.cc).
    if (!fs::exists(layout + "/oci-layout") && fs::exists(layout + "/manifest.json")) {
      WARDEN_RETURN_IF_ERROR(DockerArchiveToLayout(layout));
    }
  } else if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(StrCat(path, " is neither an OCI layout directory nor a tar archive"));
  }
  return ImportLayout(layout, store_dir, work);
}

absl::StatusOr<std::string> ComputeRootfsDigest(const std::string& rootfs) {
  // Regular files and symlinks only: directories may gain empty mount points when a runtime
  // prepares the (read-only) root, which changes nothing a job can read.
  std::vector<std::string> paths;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(rootfs, fs::directory_options::none, ec), end; !ec && it != end;
       it.increment(ec)) {
    const fs::file_status st = it->symlink_status(ec);
    if (ec) break;
    if (fs::is_regular_file(st) || fs::is_symlink(st)) paths.push_back(it->path().string());
  }
  if (ec) return absl::InternalError(StrCat("cannot walk ", rootfs, ": ", ec.message()));
  std::sort(paths.begin(), paths.end());
  Sha256 tree;
  std::vector<char> buf(1 << 16);
  for (const std::string& p : paths) {
    struct stat st;
    if (lstat(p.c_str(), &st) != 0) return absl::DataLossError(StrCat(p, " vanished while hashing the image"));
    const std::string rel = p.substr(rootfs.size());
    std::string line = StrCat(S_ISLNK(st.st_mode) ? "l " : "f ", static_cast<unsigned>(st.st_mode & 07777), " ", rel, '\0');
    if (S_ISLNK(st.st_mode)) {
      char target[4096];
      ssize_t n = readlink(p.c_str(), target, sizeof(target));
      if (n < 0) return absl::InternalError(StrCat("readlink ", p, ": ", std::strerror(errno)));
      line.append(target, static_cast<size_t>(n));
    } else {
      int fd = open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) return absl::InternalError(StrCat("open ", p, ": ", std::strerror(errno)));
      Sha256 file;
      for (;;) {
        ssize_t n = read(fd, buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        file.Update(buf.data(), static_cast<size_t>(n));
      }
      close(fd);
      line += file.HexDigest();
    }
    line += '\n';
    tree.Update(line.data(), line.size());
  }
  return StrCat("sha256:", tree.HexDigest());
}

absl::Status VerifyImageRootfs(const ImageInfo& info) {
  if (info.rootfs_digest.empty()) {
    return absl::FailedPreconditionError(StrCat("image ", info.digest, " has no recorded rootfs digest (imported by an older version)"));
  }
  WARDEN_ASSIGN_OR_RETURN(std::string now, ComputeRootfsDigest(info.rootfs));
  if (now != info.rootfs_digest) {
    return absl::DataLossError(StrCat("image ", info.digest, ": the cached root filesystem hashes to ", now,
                                      ", not ", info.rootfs_digest, " as verified at import (corrupted or changed)"));
  }
  return absl::OkStatus();
}

absl::Status RemoveImage(const std::string& image_root, const std::string& tenant, const std::string& digest) {
  WARDEN_RETURN_IF_ERROR(common::ValidateName("tenant", tenant));
  if (digest.size() != 71 || digest.substr(0, 7) != "sha256:" || !IsHex64(digest.substr(7))) {
    return absl::InvalidArgumentError("image digest must be sha256:<64 lowercase hex>");
  }
  const std::string dir = StrCat(image_root, "/", tenant, "/", digest.substr(7));
  // Renamed away first so that a concurrent lookup never sees a half-removed image.
  std::random_device rd;
  const std::string doomed = StrCat(image_root, "/", tenant, "/.removing-", rd(), rd());
  if (rename(dir.c_str(), doomed.c_str()) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::InternalError(StrCat("cannot remove ", dir, ": ", std::strerror(errno)));
  }
  std::error_code ec;
  fs::remove_all(doomed, ec);
  if (ec) return absl::InternalError(StrCat("cannot remove ", doomed, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<ImageInfo> LookupImage(const std::string& image_root, const std::string& tenant, const std::string& digest) {
  WARDEN_RETURN_IF_ERROR(common::ValidateName("tenant", tenant));
  if (digest.size() != 71 || digest.substr(0, 7) != "sha256:" || !IsHex64(digest.substr(7))) {
    return absl::InvalidArgumentError("image digest must be sha256:<64 lowercase hex>");
  }
  std::string dir = StrCat(image_root, "/", tenant, "/", digest.substr(7));
  if (!fs::exists(dir + "/image.json")) return absl::NotFoundError(StrCat("tenant ", tenant, " has no image ", digest));
  return ReadImageJson(dir);
}

}  // namespace warden::runtime
