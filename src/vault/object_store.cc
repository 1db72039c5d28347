#include "vault/object_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "common/encoding.h"
#include "common/ids.h"
#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"
#include "vault/crypto.h"
#include "vault/pipeline.h"

namespace warden::vault {

namespace fs = std::filesystem;
using common::StrCat;

namespace {

constexpr int kMetaFormat = 1;
constexpr size_t kIoBuffer = 1 << 20;
constexpr char kMetaSuffix[] = ".meta.json";

absl::Status Errno(std::string_view what, const std::string& path) {
  return absl::UnavailableError(StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError(StrCat("write failed: ", std::strerror(errno)));
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// Closes a descriptor on every return path.
struct FdCloser {
  int fd = -1;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

std::string KeyContext(std::string_view object_id, uint64_t version) {
  return StrCat("object|", object_id, "|", version);
}

std::string VersionFile(uint64_t version) { return StrCat("v", version, ".gwv"); }
std::string MetaFile(uint64_t version) { return StrCat("v", version, kMetaSuffix); }

// "v<digits>.meta.json" -> version; anything else -> 0.
uint64_t VersionOfMetaFile(std::string_view f) {
  std::string_view suffix = kMetaSuffix;
  if (f.size() <= 1 + suffix.size() || f[0] != 'v' ||
      f.substr(f.size() - suffix.size()) != suffix) {
    return 0;
  }
  std::string_view digits = f.substr(1, f.size() - 1 - suffix.size());
  if (digits.empty() || digits.size() > 18 || digits[0] == '0') return 0;
  uint64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return 0;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

common::Json LabelsJson(const Labels& labels) {
  common::Json j = common::Json::object();
  for (const auto& [k, v] : labels) j[k] = v;
  return j;
}

// An upload's ciphertext file: "data.part", then "data.<n>.part" after its n-th re-key.
std::string PartFileName(uint64_t rekeys) {
  return rekeys == 0 ? std::string("data.part") : StrCat("data.", rekeys, ".part");
}

// How often an upload was re-keyed on resume (0 for states written before re-keying existed).
uint64_t UploadRekeys(const common::Json& state) {
  auto it = state.find("rekeys");
  return it != state.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

}  // namespace

absl::Status ValidateLabels(const Labels& labels) {
  if (labels.size() > 32) return absl::InvalidArgumentError("at most 32 labels");
  for (const auto& [k, v] : labels) {
    WARDEN_RETURN_IF_ERROR(ValidateComponent("label key", k));
    if (v.size() > 255) {
      return absl::InvalidArgumentError(StrCat("label ", k, ": value longer than 255 bytes"));
    }
    for (char c : v) {
      if (c < 0x20 || c > 0x7e) {
        return absl::InvalidArgumentError(StrCat("label ", k, ": value must be printable ASCII"));
      }
    }
  }
  return absl::OkStatus();
}

struct ObjectStore::Meta {
  ObjectInfo info;
  WrappedKey key;
  std::string content;  // file name inside the object's directory
  // Hex content digest tag (ObjectEncryptor::DigestTag) over size and sha256; empty in versions
  // written before it existed (their reads re-hash).
  std::string digest_tag;

  std::string Encode() const {
    common::Json j = {{"format", kMetaFormat},
                      {"tenant", info.tenant},
                      {"name", info.name},
                      {"object_id", info.object_id},
                      {"version", info.version},
                      {"size", info.size},
                      {"sha256", info.sha256_hex},
                      {"labels", LabelsJson(info.labels)},
                      {"created_unix", info.created_unix},
                      {"chunk_size", info.chunk_size},
                      {"kek_version", key.kek_version},
                      {"wrapped_key", common::Base64UrlEncode(key.blob)},
                      {"content", content}};
    if (!digest_tag.empty()) j["digest_tag"] = digest_tag;
    return j.dump(1);
  }

  static absl::StatusOr<Meta> Decode(std::string_view text, const std::string& where) {
    auto bad = [&](std::string_view why) {
      return absl::DataLossError(StrCat("object metadata ", where, " is corrupt: ", why));
    };
    auto j = common::ParseJsonStrict(text);
    if (!j.ok() || !j->is_object()) return bad("not a JSON object");
    Meta m;
    try {
      if (j->at("format").get<int>() != kMetaFormat) return bad("unknown format");
      m.info.tenant = j->at("tenant").get<std::string>();
      m.info.name = j->at("name").get<std::string>();
      m.info.object_id = j->at("object_id").get<std::string>();
      m.info.version = j->at("version").get<uint64_t>();
      m.info.size = j->at("size").get<uint64_t>();
      m.info.sha256_hex = j->at("sha256").get<std::string>();
      for (const auto& [k, v] : j->at("labels").items()) m.info.labels[k] = v.get<std::string>();
      m.info.created_unix = j->at("created_unix").get<int64_t>();
      m.info.chunk_size = j->at("chunk_size").get<uint32_t>();
      m.key.kek_version = j->at("kek_version").get<uint32_t>();
      m.info.kek_version = m.key.kek_version;
      auto blob = common::Base64UrlDecode(j->at("wrapped_key").get<std::string>());
      if (!blob) return bad("wrapped_key is not base64url");
      m.key.blob = std::move(*blob);
      m.content = j->at("content").get<std::string>();
      if (j->contains("digest_tag")) m.digest_tag = j->at("digest_tag").get<std::string>();
    } catch (const std::exception& e) {
      return bad(e.what());
    }
    // The content file name must stay inside the object directory.
    if (!ValidateComponent("content file", m.content).ok()) return bad("bad content file name");
    return m;
  }
};

struct ObjectStore::Session {
  std::mutex mu;
  std::string tenant, upload_id, name, object_id;
  uint64_t version = 0;
  Labels labels;
  uint32_t chunk_size = 0;
  std::string salt;
  int64_t created_unix = 0;
  std::string part;  // path of the upload's current ciphertext file
  int fd = -1;
  std::unique_ptr<ObjectEncryptor> enc;
  // Put with the pipeline hashes on a helper thread, not in the encryptor; the raw SHA-256 it
  // computed is set here before the commit.
  bool external_hash = false;
  std::string sha256;
  bool done = false;
  uint64_t writer = 0;  // the newest streaming writer's claim
  ~Session() {
    if (fd >= 0) ::close(fd);
  }
};

ObjectStore::ObjectStore(Keyring& keyring, ObjectStoreOptions options)
    : keyring_(keyring), options_(std::move(options)) {}
ObjectStore::~ObjectStore() = default;

absl::StatusOr<std::unique_ptr<ObjectStore>> ObjectStore::Open(Keyring& keyring,
                                                               ObjectStoreOptions options) {
  if (options.root.empty()) return absl::InvalidArgumentError("vault root is empty");
  if (options.clock == nullptr) options.clock = &common::RealClock::Get();
  if (options.rng == nullptr) options.rng = &common::SecureRng::Get();
  if (options.chunk_size < kMinChunkSize || options.chunk_size > kMaxChunkSize ||
      (options.chunk_size & (options.chunk_size - 1)) != 0) {
    return absl::InvalidArgumentError("chunk size must be a power of two in 4 KiB..16 MiB");
  }
  WARDEN_RETURN_IF_ERROR(internal::MakeDirs(options.root + "/tenants"));
  std::unique_ptr<ObjectStore> store(new ObjectStore(keyring, std::move(options)));
  WARDEN_RETURN_IF_ERROR(store->Recover());
  return store;
}

std::string ObjectStore::TenantDir(std::string_view tenant) const {
  return StrCat(options_.root, "/tenants/", tenant);
}
std::string ObjectStore::ObjectDir(std::string_view tenant, std::string_view object_id) const {
  return StrCat(TenantDir(tenant), "/objects/", object_id);
}
std::string ObjectStore::NamePath(std::string_view tenant, std::string_view name) const {
  // Names are hashed into file names: a name never becomes a path (no traversal by design).
  return StrCat(TenantDir(tenant), "/names/", common::Sha256Hex(name), ".json");
}
std::string ObjectStore::UploadDir(std::string_view tenant, std::string_view upload_id) const {
  return StrCat(TenantDir(tenant), "/uploads/", upload_id);
}

absl::Status ObjectStore::Recover() {
  std::error_code ec;
  for (const auto& tdir : fs::directory_iterator(options_.root + "/tenants", ec)) {
    std::string tname = tdir.path().filename().string();
    if (!tname.empty() && tname[0] == '.') {  // leftovers of an interrupted shred
      fs::remove_all(tdir.path(), ec);
      continue;
    }
    std::error_code ec2;
    // A name entry is written whole by rename (BeginUpload): a kill before the rename leaves its
    // temporary, never read.
    for (const auto& f : fs::directory_iterator(tdir.path() / "names", ec2)) {
      if (f.path().filename().string().find(".tmp.") != std::string::npos) fs::remove(f.path(), ec);
    }
    for (const auto& odir : fs::directory_iterator(tdir.path() / "objects", ec2)) {
      std::vector<std::string> referenced;
      std::vector<fs::path> contents;
      std::error_code ec3;
      for (const auto& f : fs::directory_iterator(odir.path(), ec3)) {
        std::string fn = f.path().filename().string();
        if (fn.find(".tmp.") != std::string::npos) {
          fs::remove(f.path(), ec);
        } else if (VersionOfMetaFile(fn) != 0) {
          auto text = internal::ReadSmallFile(f.path().string());
          if (!text.ok()) return text.status();
          WARDEN_ASSIGN_OR_RETURN(Meta m, Meta::Decode(*text, f.path().string()));
          referenced.push_back(m.content);
        } else if (fn.size() > 4 && fn.substr(fn.size() - 4) == ".gwv") {
          contents.push_back(f.path());
        }
      }
      // Content no metadata names: an upload that crashed between its two renames, or the old
      // file of an interrupted re-encryption. Never visible, so removing it loses nothing.
      for (const auto& c : contents) {
        if (std::find(referenced.begin(), referenced.end(), c.filename().string()) ==
            referenced.end()) {
          fs::remove(c, ec);
        }
      }
    }
    for (const auto& udir : fs::directory_iterator(tdir.path() / "uploads", ec2)) {
      // The state names the current part file; others are the old or new file of a re-key
      // (LoadSession) that a crash interrupted, never referenced, so removing them loses nothing.
      std::string current;
      auto state_text = internal::ReadSmallFile((udir.path() / "state.json").string());
      if (state_text.ok()) {
        auto state = common::ParseJsonStrict(*state_text);
        if (state.ok() && state->is_object()) current = PartFileName(UploadRekeys(*state));
      }
      if (current.empty() || !fs::exists(udir.path() / current)) {
        fs::remove_all(udir.path(), ec);
        continue;
      }
      for (const auto& f : fs::directory_iterator(udir.path(), ec)) {
        const std::string fn = f.path().filename().string();
        const bool stray_part = fn.size() > 5 && fn.substr(fn.size() - 5) == ".part" && fn != current;
        if (fn.find(".tmp.") != std::string::npos || stray_part) fs::remove(f.path(), ec);
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ObjectStore::ObjectIdForName(std::string_view tenant,
                                                         std::string_view name) {
  auto text = internal::ReadSmallFile(NamePath(tenant, name));
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(StrCat("object \"", name, "\" not found in tenant ", tenant));
  }
  if (!text.ok()) return text.status();
  auto j = common::ParseJsonStrict(*text);
  if (!j.ok() || !j->is_object() || !j->contains("name") || !j->contains("object_id") ||
      !(*j)["name"].is_string() || !(*j)["object_id"].is_string() || (*j)["name"] != name) {
    return absl::DataLossError(StrCat("name entry for \"", name, "\" is corrupt"));
  }
  std::string id = (*j)["object_id"].get<std::string>();
  WARDEN_RETURN_IF_ERROR(ValidateComponent("object id", id));
  return id;
}

absl::StatusOr<ObjectStore::Meta> ObjectStore::ReadMeta(std::string_view tenant,
                                                        std::string_view object_id,
                                                        uint64_t version) {
  std::string path = StrCat(ObjectDir(tenant, object_id), "/", MetaFile(version));
  auto text = internal::ReadSmallFile(path);
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(
        StrCat("object ", object_id, " version ", version, " not found in tenant ", tenant));
  }
  if (!text.ok()) return text.status();
  WARDEN_ASSIGN_OR_RETURN(Meta m, Meta::Decode(*text, path));
  // Metadata copied in from another object or tenant is refused before any key is touched.
  if (m.info.tenant != tenant || m.info.object_id != object_id || m.info.version != version) {
    return absl::DataLossError(StrCat("object metadata ", path, " belongs to tenant ",
                                      m.info.tenant, " object ", m.info.object_id, " version ",
                                      m.info.version));
  }
  return m;
}

absl::StatusOr<std::vector<uint64_t>> ObjectStore::VisibleVersions(std::string_view tenant,
                                                                   std::string_view object_id) {
  std::vector<uint64_t> out;
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(ObjectDir(tenant, object_id), ec)) {
    uint64_t v = VersionOfMetaFile(f.path().filename().string());
    if (v != 0) out.push_back(v);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// ---- uploads ----

absl::StatusOr<UploadState> ObjectStore::BeginUpload(std::string_view tenant, std::string_view name,
                                                     const Labels& labels) {
  return BeginUploadImpl(tenant, name, labels, /*encryptor_hashes=*/true);
}

absl::StatusOr<UploadState> ObjectStore::BeginUploadImpl(std::string_view tenant,
                                                         std::string_view name,
                                                         const Labels& labels,
                                                         bool encryptor_hashes) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  WARDEN_RETURN_IF_ERROR(ValidateObjectName(name));
  WARDEN_RETURN_IF_ERROR(ValidateLabels(labels));
  auto s = std::make_unique<Session>();
  s->tenant = std::string(tenant);
  s->name = std::string(name);
  s->labels = labels;
  s->chunk_size = options_.chunk_size;
  s->created_unix = options_.clock->NowUnix();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto keys = keyring_.Status(tenant);
    if (keys.ok() && keys->shredded) {
      return absl::FailedPreconditionError(
          StrCat("tenant ", tenant, "'s keys were destroyed (crypto-shredded); it stores nothing"));
    }
    if (!keys.ok() && !absl::IsNotFound(keys.status())) return keys.status();
    auto oid = ObjectIdForName(tenant, name);
    if (absl::IsNotFound(oid.status())) {
      std::string id = common::NewId(*options_.rng, "obj");
      WARDEN_RETURN_IF_ERROR(internal::MakeDirs(StrCat(TenantDir(tenant), "/names")));
      common::Json entry = {{"name", s->name}, {"object_id", id}};
      WARDEN_RETURN_IF_ERROR(internal::WriteFileAtomic(NamePath(tenant, name), entry.dump()));
      oid = id;
    }
    if (!oid.ok()) return oid.status();
    s->object_id = *oid;
    std::string odir = ObjectDir(tenant, s->object_id);
    WARDEN_RETURN_IF_ERROR(internal::MakeDirs(odir));
    uint64_t next = 1;
    auto nv = internal::ReadSmallFile(odir + "/next_version");
    if (nv.ok()) {
      auto j = common::ParseJsonStrict(*nv);
      if (!j.ok() || !j->is_number_unsigned()) {
        return absl::DataLossError(StrCat(odir, "/next_version is corrupt"));
      }
      next = j->get<uint64_t>();
    }
    // Version numbers are never reused (an abandoned upload leaves a gap): a header and a wrapped
    // key bound to (object, version) must never match two different contents.
    WARDEN_RETURN_IF_ERROR(
        internal::WriteFileAtomic(odir + "/next_version", common::Json(next + 1).dump()));
    s->version = next;
  }
  std::string dek = options_.rng->Bytes(internal::kKeySize);
  s->salt = options_.rng->Bytes(32);
  auto wrapped = keyring_.Wrap(tenant, KeyContext(s->object_id, s->version), dek);
  if (!wrapped.ok()) {
    internal::Wipe(dek);
    return wrapped.status();
  }
  s->upload_id = common::NewId(*options_.rng, "upl");
  std::string udir = UploadDir(tenant, s->upload_id);
  WARDEN_RETURN_IF_ERROR(internal::MakeDirs(udir));
  std::string part = udir + "/" + PartFileName(0);
  s->part = part;
  s->fd = ::open(part.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (s->fd < 0) {
    internal::Wipe(dek);
    return Errno("cannot create", part);
  }
  ObjectHeader h{s->chunk_size, s->salt, s->tenant, s->object_id, s->version};
  int fd = s->fd;
  auto enc = ObjectEncryptor::Create(
      dek, h, [fd](std::string_view b) { return WriteAll(fd, b); }, encryptor_hashes);
  internal::Wipe(dek);
  if (!enc.ok()) return enc.status();
  s->enc = std::move(*enc);
  s->external_hash = !encryptor_hashes;
  if (::fsync(s->fd) != 0) return Errno("fsync", part);
  common::Json state = {{"format", kMetaFormat},
                        {"tenant", s->tenant},
                        {"upload_id", s->upload_id},
                        {"name", s->name},
                        {"object_id", s->object_id},
                        {"version", s->version},
                        {"labels", LabelsJson(labels)},
                        {"chunk_size", s->chunk_size},
                        {"salt", common::Base64UrlEncode(s->salt)},
                        {"kek_version", wrapped->kek_version},
                        {"wrapped_key", common::Base64UrlEncode(wrapped->blob)},
                        {"rekeys", 0},
                        {"created_unix", s->created_unix}};
  WARDEN_RETURN_IF_ERROR(internal::WriteFileAtomic(udir + "/state.json", state.dump(1)));
  UploadState out{s->upload_id, s->tenant, s->name, s->object_id, s->version, 0, 0};
  std::lock_guard<std::mutex> lock(sessions_mu_);
  sessions_[StrCat(tenant, "/", s->upload_id)] = std::move(s);
  return out;
}

// Rebuilds a session from disk after a restart. The chunks that verify are kept; a torn or
// unverifiable tail after them is dropped. The upload then goes on under a fresh data key and
// salt ("re-key"): the crash may have left the next chunk index sealed, whole or in part, on the
// disk, and sealing different bytes at that index under the old key would reuse a GCM nonce (a
// copy of the disk would show the XOR of the two plaintexts, and two whole tags under one nonce
// give away the authentication key). So the verified prefix is decrypted and re-encrypted into a
// new part file, and the atomic rewrite of state.json (new salt, wrapped key and part file name)
// makes it current. A crash before that rewrite leaves the old part current; after it, the old
// one is unreferenced (Recover removes it).
absl::Status ObjectStore::LoadSession(Session& s) {
  std::string udir = UploadDir(s.tenant, s.upload_id);
  auto text = internal::ReadSmallFile(udir + "/state.json");
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(StrCat("upload ", s.upload_id, " not found in tenant ", s.tenant));
  }
  if (!text.ok()) return text.status();
  auto j = common::ParseJsonStrict(*text);
  WrappedKey wk;
  uint64_t rekeys = 0;
  try {
    if (!j.ok() || (*j)["tenant"] != s.tenant || (*j)["upload_id"] != s.upload_id) {
      return absl::DataLossError(StrCat("upload state of ", s.upload_id, " is corrupt"));
    }
    s.name = (*j)["name"].get<std::string>();
    s.object_id = (*j)["object_id"].get<std::string>();
    s.version = (*j)["version"].get<uint64_t>();
    for (const auto& [k, v] : (*j)["labels"].items()) s.labels[k] = v.get<std::string>();
    s.chunk_size = (*j)["chunk_size"].get<uint32_t>();
    s.salt = common::Base64UrlDecode((*j)["salt"].get<std::string>()).value_or("");
    s.created_unix = (*j)["created_unix"].get<int64_t>();
    wk.kek_version = (*j)["kek_version"].get<uint32_t>();
    wk.blob = common::Base64UrlDecode((*j)["wrapped_key"].get<std::string>()).value_or("");
    rekeys = UploadRekeys(*j);
  } catch (const std::exception& e) {
    return absl::DataLossError(StrCat("upload state of ", s.upload_id, " is corrupt: ", e.what()));
  }
  WARDEN_RETURN_IF_ERROR(ValidateComponent("object id", s.object_id));
  if (s.chunk_size < kMinChunkSize || s.chunk_size > kMaxChunkSize) {
    return absl::DataLossError(StrCat("upload state of ", s.upload_id, " has a bad chunk size"));
  }
  const std::string old_part = StrCat(udir, "/", PartFileName(rekeys));
  const std::string new_part = StrCat(udir, "/", PartFileName(rekeys + 1));
  struct Fd {
    int fd = -1;
    ~Fd() {
      if (fd >= 0) ::close(fd);
    }
  } in, out;
  in.fd = ::open(old_part.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (in.fd < 0) return Errno("cannot open", old_part);
  struct stat st {};
  if (::fstat(in.fd, &st) != 0) return Errno("cannot stat", old_part);
  const ObjectHeader old_header{s.chunk_size, s.salt, s.tenant, s.object_id, s.version};
  const uint64_t header_size = EncodeHeader(old_header).size();
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < header_size) {
    return absl::DataLossError(StrCat("upload ", s.upload_id, " lost its header; start again"));
  }

  // Both data keys are wiped whichever way this returns.
  std::string old_dek, new_dek;
  struct WipeOnReturn {
    std::string& a;
    std::string& b;
    ~WipeOnReturn() {
      internal::Wipe(a);
      internal::Wipe(b);
    }
  } wipe{old_dek, new_dek};
  WARDEN_ASSIGN_OR_RETURN(old_dek, keyring_.Unwrap(s.tenant, KeyContext(s.object_id, s.version), wk));

  // The new file: a fresh data key and salt, the same object, version and chunk size.
  ::unlink(new_part.c_str());  // left by a re-key that a crash cut short
  out.fd = ::open(new_part.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (out.fd < 0) return Errno("cannot create", new_part);
  auto discard_new = [&](absl::Status why) {
    ::unlink(new_part.c_str());
    return why;
  };
  new_dek = options_.rng->Bytes(internal::kKeySize);
  const std::string new_salt = options_.rng->Bytes(32);
  const ObjectHeader new_header{s.chunk_size, new_salt, s.tenant, s.object_id, s.version};
  const int out_fd = out.fd;
  auto enc = ObjectEncryptor::Create(
      new_dek, new_header, [out_fd](std::string_view b) { return WriteAll(out_fd, b); });
  if (!enc.ok()) return discard_new(enc.status());

  // Verify the old file's whole chunks, handing each verified chunk's plaintext to the new file.
  absl::Status write_error;
  auto to_new_file = [&](std::string_view plain) {
    write_error = (*enc)->Update(plain);
    return write_error;
  };
  auto dec = ObjectDecryptor::Create(old_dek, {s.tenant, s.object_id, s.version}, to_new_file,
                                     /*expect_final=*/false, /*hash_plaintext=*/false);
  if (!dec.ok()) return discard_new(dec.status());
  const uint64_t ct = s.chunk_size + kChunkTagSize;
  const uint64_t to_read = header_size + (size - header_size) / ct * ct;
  std::string buf(kIoBuffer, '\0');
  absl::Status vs;
  for (uint64_t off = 0; vs.ok() && off < to_read;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), to_read - off));
    ssize_t r = ::pread(in.fd, buf.data(), n, static_cast<off_t>(off));
    if (r <= 0) return discard_new(Errno("cannot read", old_part));
    vs = (*dec)->Update(std::string_view(buf.data(), static_cast<size_t>(r)));
    off += static_cast<uint64_t>(r);
  }
  if (vs.ok()) vs = (*dec)->Finish();
  // A chunk that does not verify ends the kept prefix; the sink's own failure is an I/O error.
  if (!write_error.ok()) return discard_new(write_error);
  const uint64_t good = (*dec)->chunks();
  // A commit that a crash cut short (after the final chunk was sealed, before the rename) left
  // the final chunk after the verified ones: it does not open as a non-final chunk, but it does
  // as the final one, and then the client sent everything. Its plaintext is kept like the
  // others, so `durable` does not go back and the client can commit at once. (`dec` stays
  // failed after the chunk that did not open, so a second decryptor opens it.)
  const uint64_t kept_before_tail = (*enc)->plaintext_bytes();
  const uint64_t tail_at = header_size + good * ct;
  if (size > tail_at && size - tail_at <= ct) {
    std::string header_bytes(static_cast<size_t>(header_size), '\0');
    std::string tail(static_cast<size_t>(size - tail_at), '\0');
    auto last = ObjectDecryptor::Create(old_dek, {s.tenant, s.object_id, s.version}, to_new_file,
                                        /*expect_final=*/false, /*hash_plaintext=*/false);
    if (last.ok() &&
        ::pread(in.fd, header_bytes.data(), header_bytes.size(), 0) ==
            static_cast<ssize_t>(header_bytes.size()) &&
        ::pread(in.fd, tail.data(), tail.size(), static_cast<off_t>(tail_at)) ==
            static_cast<ssize_t>(tail.size()) &&
        (*last)->Update(header_bytes).ok()) {
      (void)(*last)->OpenChunkAt(good, /*final=*/true, tail);  // kept only if it verified
    }
    if (!write_error.ok()) return discard_new(write_error);
  }
  const uint64_t tail_plain = (*enc)->plaintext_bytes() - kept_before_tail;
  if (kept_before_tail != good * s.chunk_size || tail_plain > s.chunk_size) {
    return discard_new(absl::InternalError(StrCat("upload ", s.upload_id, ": re-key kept ",
                                                  (*enc)->plaintext_bytes(), " bytes of ", good,
                                                  " chunks")));
  }
  // Every verified chunk goes to the new file now, the last one sealed as not final; it stays
  // in the encryptor too, and the next sealing of it (more data, or the commit's final chunk)
  // is written over it. So `durable` never goes back, and the object never ends in an empty
  // final chunk (a reader takes the chunk count from the size).
  const bool full_held = (*enc)->buffered() == s.chunk_size;
  absl::Status ahead = (*enc)->WriteHeldAhead();
  if (!ahead.ok() || ::fsync(out.fd) != 0 ||
      (full_held && ::lseek(out.fd,
                            static_cast<off_t>(EncodeHeader(new_header).size() +
                                               ((*enc)->chunks_written() - 1) * ct),
                            SEEK_SET) < 0)) {
    return discard_new(ahead.ok() ? Errno("fsync", new_part) : ahead);
  }
  Hook("rekey");

  // Commit point: state.json names the new file, salt and key. Under mu_, as a rotation
  // rewrites upload states under it too; the key is wrapped under the tenant's current version.
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto wrapped = keyring_.Wrap(s.tenant, KeyContext(s.object_id, s.version), new_dek);
    if (!wrapped.ok()) return discard_new(wrapped.status());
    (*j)["salt"] = common::Base64UrlEncode(new_salt);
    (*j)["kek_version"] = wrapped->kek_version;
    (*j)["wrapped_key"] = common::Base64UrlEncode(wrapped->blob);
    (*j)["rekeys"] = rekeys + 1;
    absl::Status ws = internal::WriteFileAtomic(udir + "/state.json", j->dump(1));
    if (!ws.ok()) return discard_new(ws);
  }
  ::unlink(old_part.c_str());  // a crash before this leaves a stray file Recover() removes
  s.salt = new_salt;
  s.part = new_part;
  s.fd = out.fd;
  out.fd = -1;
  s.enc = std::move(*enc);
  return absl::OkStatus();
}

absl::StatusOr<ObjectStore::Session*> ObjectStore::SessionFor(std::string_view tenant,
                                                              std::string_view upload_id) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  WARDEN_RETURN_IF_ERROR(ValidateComponent("upload id", upload_id));
  std::string key = StrCat(tenant, "/", upload_id);
  auto find = [&]() -> Session* {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    auto it = sessions_.find(key);
    return it == sessions_.end() ? nullptr : it->second.get();
  };
  if (Session* s = find()) return s;
  // Loading re-keys the upload (it takes mu_), so it runs outside sessions_mu_, one at a time.
  std::lock_guard<std::mutex> load(load_mu_);
  if (Session* s = find()) return s;
  auto s = std::make_unique<Session>();
  s->tenant = std::string(tenant);
  s->upload_id = std::string(upload_id);
  WARDEN_RETURN_IF_ERROR(LoadSession(*s));
  Session* raw = s.get();
  // Under mu_, as ShredTenant erases sessions under it: a tenant shredded while this upload was
  // loading gets no session (and its new data key goes with `s`).
  std::lock_guard<std::mutex> ns(mu_);
  auto keys = keyring_.Status(tenant);
  if (keys.ok() && keys->shredded) {
    return absl::FailedPreconditionError(
        StrCat("tenant ", tenant, "'s keys were destroyed (crypto-shredded); it stores nothing"));
  }
  std::lock_guard<std::mutex> lock(sessions_mu_);
  sessions_[key] = std::move(s);
  return raw;
}

namespace {
template <typename S>
UploadState StateOf(const S& s) {
  return UploadState{s.upload_id,
                     s.tenant,
                     s.name,
                     s.object_id,
                     s.version,
                     s.enc->plaintext_bytes(),
                     s.enc->chunks_written() * s.chunk_size,
                     s.writer};
}
}  // namespace

absl::StatusOr<UploadState> ObjectStore::AppendUpload(std::string_view tenant,
                                                      std::string_view upload_id, uint64_t offset,
                                                      std::string_view data, uint64_t writer) {
  WARDEN_ASSIGN_OR_RETURN(Session * s, SessionFor(tenant, upload_id));
  std::lock_guard<std::mutex> lock(s->mu);
  if (s->done) return absl::FailedPreconditionError(StrCat("upload ", upload_id, " is finished"));
  if (writer != 0 && writer != s->writer) {
    return absl::AbortedError(StrCat("upload ", upload_id, " was taken over by a newer request"));
  }
  if (offset != s->enc->plaintext_bytes()) {
    return absl::FailedPreconditionError(StrCat("upload ", upload_id, " expects offset ",
                                                s->enc->plaintext_bytes(), ", got ", offset));
  }
  WARDEN_RETURN_IF_ERROR(s->enc->Update(data));
  if (::fdatasync(s->fd) != 0) return Errno("fdatasync", UploadDir(tenant, upload_id));
  return StateOf(*s);
}

absl::StatusOr<UploadState> ObjectStore::ClaimUpload(std::string_view tenant,
                                                     std::string_view upload_id) {
  WARDEN_ASSIGN_OR_RETURN(Session * s, SessionFor(tenant, upload_id));
  std::lock_guard<std::mutex> lock(s->mu);
  if (s->done) return absl::FailedPreconditionError(StrCat("upload ", upload_id, " is finished"));
  ++s->writer;
  return StateOf(*s);
}

absl::StatusOr<UploadState> ObjectStore::UploadStatus(std::string_view tenant,
                                                      std::string_view upload_id) {
  WARDEN_ASSIGN_OR_RETURN(Session * s, SessionFor(tenant, upload_id));
  std::lock_guard<std::mutex> lock(s->mu);
  return StateOf(*s);
}

absl::Status ObjectStore::AbortUpload(std::string_view tenant, std::string_view upload_id) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  WARDEN_RETURN_IF_ERROR(ValidateComponent("upload id", upload_id));
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    sessions_.erase(StrCat(tenant, "/", upload_id));
  }
  std::error_code ec;
  if (fs::remove_all(UploadDir(tenant, upload_id), ec) == 0) {
    return absl::NotFoundError(StrCat("upload ", upload_id, " not found in tenant ", tenant));
  }
  return absl::OkStatus();
}

absl::StatusOr<ObjectInfo> ObjectStore::Publish(Session& s,
                                                std::optional<std::string> expected_sha256_hex) {
  WARDEN_RETURN_IF_ERROR(s.enc->Finish());
  s.done = true;
  std::string udir = UploadDir(s.tenant, s.upload_id);
  if (::fsync(s.fd) != 0) return Errno("fsync", s.part);
  Hook("sealed");
  ::close(s.fd);
  s.fd = -1;
  Meta m;
  m.info.tenant = s.tenant;
  m.info.name = s.name;
  m.info.object_id = s.object_id;
  m.info.version = s.version;
  m.info.size = s.enc->plaintext_bytes();
  const std::string& sha = s.external_hash ? s.sha256 : s.enc->sha256();
  if (sha.size() != 32) return absl::InternalError("upload finished without a plaintext SHA-256");
  m.info.sha256_hex = common::HexEncode(sha);
  m.digest_tag = common::HexEncode(s.enc->DigestTag(m.info.size, sha));
  m.info.labels = s.labels;
  m.info.created_unix = s.created_unix;
  m.info.chunk_size = s.chunk_size;
  if (expected_sha256_hex && *expected_sha256_hex != m.info.sha256_hex) {
    std::error_code ec;
    fs::remove_all(udir, ec);
    return absl::DataLossError(StrCat("uploaded data has SHA-256 ", m.info.sha256_hex,
                                      ", the client announced ", *expected_sha256_hex,
                                      "; nothing was stored"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  // The wrapped key is read back from the upload state: a rotation may have rewrapped it.
  auto text = internal::ReadSmallFile(udir + "/state.json");
  if (!text.ok()) return text.status();
  auto j = common::ParseJsonStrict(*text);
  if (!j.ok()) return absl::DataLossError("upload state is corrupt");
  try {
    m.key.kek_version = (*j)["kek_version"].get<uint32_t>();
    m.key.blob = common::Base64UrlDecode((*j)["wrapped_key"].get<std::string>()).value_or("");
  } catch (const std::exception& e) {
    return absl::DataLossError(StrCat("upload state is corrupt: ", e.what()));
  }
  m.info.kek_version = m.key.kek_version;
  m.content = VersionFile(s.version);
  std::string odir = ObjectDir(s.tenant, s.object_id);
  WARDEN_RETURN_IF_ERROR(internal::MakeDirs(odir));
  std::string content = StrCat(odir, "/", m.content);
  if (::rename(s.part.c_str(), content.c_str()) != 0) {
    return Errno("cannot publish", content);
  }
  WARDEN_RETURN_IF_ERROR(internal::SyncDir(odir));
  Hook("publish");
  // The metadata rename is the commit point: before it the version does not exist.
  WARDEN_RETURN_IF_ERROR(
      internal::WriteFileAtomic(StrCat(odir, "/", MetaFile(s.version)), m.Encode()));
  std::error_code ec;
  fs::remove_all(udir, ec);
  return m.info;
}

absl::StatusOr<ObjectInfo> ObjectStore::CommitUpload(
    std::string_view tenant, std::string_view upload_id,
    std::optional<std::string> expected_sha256_hex) {
  WARDEN_ASSIGN_OR_RETURN(Session * s, SessionFor(tenant, upload_id));
  absl::StatusOr<ObjectInfo> out;
  {
    std::lock_guard<std::mutex> lock(s->mu);
    if (s->done) return absl::FailedPreconditionError(StrCat("upload ", upload_id, " is finished"));
    out = Publish(*s, std::move(expected_sha256_hex));
  }
  std::lock_guard<std::mutex> lock(sessions_mu_);
  sessions_.erase(StrCat(tenant, "/", upload_id));
  return out;
}

// Upload half of the two-core pipeline: this thread reads a piece and seals and writes it while
// the helper computes the plaintext SHA-256 over the same piece (both only read it). The hash
// cannot be split (SHA-256 is sequential), so it gets a core of its own; reading, sealing and
// writing on this one cost about as much (bench/RESULTS.md "Vault on two cores").
absl::Status ObjectStore::PipelinedPut(Session& s, const ByteSource& source) {
  internal::Sha256Stream hash;
  internal::PieceRing ring(options_.pipeline_piece_size, options_.pipeline_pieces,
                           [&hash](std::string_view piece) {
                             hash.Update(piece);
                             return absl::OkStatus();
                           });
  while (true) {
    WARDEN_ASSIGN_OR_RETURN(char* buf, ring.Acquire());
    // An error below destroys the ring, which stops the helper before `hash` goes away.
    WARDEN_ASSIGN_OR_RETURN(size_t n, source(buf, ring.piece_size()));
    if (n == 0) break;
    if (n > ring.piece_size()) return absl::InternalError("byte source overfilled its buffer");
    WARDEN_RETURN_IF_ERROR(ring.Publish(n));
    WARDEN_RETURN_IF_ERROR(s.enc->Update(std::string_view(buf, n)));
    Hook("chunk");
  }
  WARDEN_RETURN_IF_ERROR(ring.Finish());
  s.sha256 = hash.Finish();
  return absl::OkStatus();
}

absl::StatusOr<ObjectInfo> ObjectStore::Put(std::string_view tenant, std::string_view name,
                                            const Labels& labels, const ByteSource& source) {
  const bool pipelined = options_.pipeline;
  WARDEN_ASSIGN_OR_RETURN(UploadState up,
                          BeginUploadImpl(tenant, name, labels, /*encryptor_hashes=*/!pipelined));
  WARDEN_ASSIGN_OR_RETURN(Session * s, SessionFor(tenant, up.upload_id));
  absl::Status st;
  {
    std::lock_guard<std::mutex> lock(s->mu);
    std::string buf(pipelined ? 0 : kIoBuffer, '\0');
    if (pipelined) st = PipelinedPut(*s, source);
    while (!pipelined) {
      auto n = source(buf.data(), buf.size());
      if (!n.ok()) {
        st = n.status();
        break;
      }
      if (*n == 0) break;
      st = s->enc->Update(std::string_view(buf.data(), *n));
      if (!st.ok()) break;
      Hook("chunk");
    }
  }
  if (!st.ok()) {
    (void)AbortUpload(tenant, up.upload_id);
    return st;
  }
  return CommitUpload(tenant, up.upload_id, std::nullopt);
}

absl::StatusOr<ObjectInfo> ObjectStore::PutFile(std::string_view tenant, std::string_view name,
                                                const Labels& labels, const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("cannot open", path);
  auto out =
      Put(tenant, name, labels, [fd, &path](char* buf, size_t cap) -> absl::StatusOr<size_t> {
        while (true) {
          ssize_t n = ::read(fd, buf, cap);
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) return Errno("cannot read", path);
          return static_cast<size_t>(n);
        }
      });
  ::close(fd);
  return out;
}

// ---- reads ----

absl::StatusOr<ObjectInfo> ObjectStore::GetById(std::string_view tenant, std::string_view object_id,
                                                uint64_t version, const ByteSink& sink) {
  return GetImpl(tenant, object_id, version, sink, /*pipelined=*/false);
}

absl::StatusOr<ObjectInfo> ObjectStore::GetImpl(std::string_view tenant, std::string_view object_id,
                                                uint64_t version, const ByteSink& sink,
                                                bool pipelined, int out_fd) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  WARDEN_RETURN_IF_ERROR(ValidateComponent("object id", object_id));
  Meta m;
  std::string path;
  FdCloser file;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (version == 0) {
      WARDEN_ASSIGN_OR_RETURN(auto versions, VisibleVersions(tenant, object_id));
      if (versions.empty()) {
        return absl::NotFoundError(StrCat("object ", object_id, " not found in tenant ", tenant));
      }
      version = versions.back();
    }
    WARDEN_ASSIGN_OR_RETURN(m, ReadMeta(tenant, object_id, version));
    // Opened under the lock: a concurrent re-encryption may unlink this file right after, and
    // the open descriptor keeps the version it belongs to readable.
    path = StrCat(ObjectDir(tenant, object_id), "/", m.content);
    file.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (file.fd < 0) {
      return absl::DataLossError(StrCat("content of object ", object_id, " version ", version,
                                        " is missing: ", std::strerror(errno)));
    }
  }
  const int fd = file.fd;
  // With a content digest tag the chunk tags and the digest tag together vouch for the recorded
  // SHA-256 (README.md "Content digest tag"), so the plaintext is not hashed again unless asked.
  std::string tag;
  if (!m.digest_tag.empty()) {
    auto raw = common::HexDecode(m.digest_tag);
    if (!raw || raw->size() != 32) {
      return absl::DataLossError(
          StrCat("object ", object_id, " version ", version, " has a malformed digest tag"));
    }
    tag = std::move(*raw);
  }
  const bool rehash = tag.empty() || options_.rehash_on_read;
  WARDEN_ASSIGN_OR_RETURN(std::string dek,
                          keyring_.Unwrap(tenant, KeyContext(object_id, version), m.key));
  const ObjectDecryptor::Expect expect{std::string(tenant), std::string(object_id), version};
  if (pipelined && out_fd >= 0 && !rehash) {
    // Nothing to hash: both threads open chunks (README.md "Two-core file transfers").
    auto recorded = common::HexDecode(m.info.sha256_hex);
    absl::Status st = recorded ? internal::OpenToFileOnTwoThreads(
                                     dek, expect, fd, m.info.size, *recorded, tag,
                                     m.info.chunk_size, options_.pipeline_piece_size, out_fd)
                               : absl::DataLossError(StrCat("object ", object_id, " version ",
                                                            version, " has a malformed SHA-256"));
    internal::Wipe(dek);
    if (!st.ok()) return st;
    return m.info;
  }
  internal::Sha256Stream hash;  // the helper's, when pipelined
  // Download half of the pipeline: this thread reads and opens chunks and copies the verified
  // plaintext into pieces; the helper hands full pieces to `sink` (and hashes them if needed).
  std::optional<internal::PieceRing> ring;
  char* piece = nullptr;
  size_t fill = 0;
  ByteSink to_ring = [&](std::string_view chunk) -> absl::Status {
    while (!chunk.empty()) {
      if (piece == nullptr) {
        WARDEN_ASSIGN_OR_RETURN(piece, ring->Acquire());
        fill = 0;
      }
      size_t n = std::min(chunk.size(), ring->piece_size() - fill);
      std::memcpy(piece + fill, chunk.data(), n);
      fill += n;
      chunk.remove_prefix(n);
      if (fill == ring->piece_size()) {
        piece = nullptr;
        WARDEN_RETURN_IF_ERROR(ring->Publish(fill));
      }
    }
    return absl::OkStatus();
  };
  if (pipelined) {
    ring.emplace(options_.pipeline_piece_size, options_.pipeline_pieces,
                 [&hash, &sink, rehash](std::string_view p) {
                   if (rehash) hash.Update(p);
                   return sink(p);
                 });
  }
  auto dec =
      ObjectDecryptor::Create(dek, expect, pipelined ? to_ring : sink,
                              /*expect_final=*/true, /*hash_plaintext=*/rehash && !pipelined);
  internal::Wipe(dek);
  if (!dec.ok()) return dec.status();
  std::string buf(kIoBuffer, '\0');
  absl::Status st;
  while (st.ok()) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      st = Errno("cannot read", path);
      break;
    }
    if (n == 0) break;
    st = (*dec)->Update(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
  if (st.ok()) st = (*dec)->Finish();
  std::string sha;
  if (st.ok() && pipelined) {
    if (piece != nullptr) st = ring->Publish(fill);
    // Joins the helper: every verified piece reached the sink, or its first error is here.
    absl::Status done = ring->Finish();
    if (st.ok()) st = done;
    if (st.ok() && rehash) sha = hash.Finish();
  } else if (st.ok() && rehash) {
    sha = (*dec)->sha256();
  }
  if (!st.ok()) return st;  // an unfinished ring is stopped by its destructor
  if ((*dec)->plaintext_bytes() != m.info.size ||
      (rehash && common::HexEncode(sha) != m.info.sha256_hex)) {
    return absl::DataLossError(StrCat("object ", object_id, " version ", version,
                                      " does not match its recorded size and SHA-256"));
  }
  if (!tag.empty()) {
    auto recorded = common::HexDecode(m.info.sha256_hex);
    if (!recorded) {
      return absl::DataLossError(
          StrCat("object ", object_id, " version ", version, " has a malformed SHA-256"));
    }
    WARDEN_RETURN_IF_ERROR((*dec)->VerifyDigestTag(m.info.size, *recorded, tag));
  }
  return m.info;
}

absl::StatusOr<ObjectInfo> ObjectStore::Get(std::string_view tenant, std::string_view name,
                                            uint64_t version, const ByteSink& sink) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  WARDEN_RETURN_IF_ERROR(ValidateObjectName(name));
  std::string oid;
  {
    std::lock_guard<std::mutex> lock(mu_);
    WARDEN_ASSIGN_OR_RETURN(oid, ObjectIdForName(tenant, name));
  }
  return GetById(tenant, oid, version, sink);
}

absl::StatusOr<ObjectInfo> ObjectStore::GetToFile(std::string_view tenant, std::string_view name,
                                                  uint64_t version, const std::string& out_path) {
  std::string tmp = StrCat(out_path, ".partial.", common::HexEncode(options_.rng->Bytes(6)));
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  WARDEN_RETURN_IF_ERROR(ValidateObjectName(name));
  std::string oid;
  {
    std::lock_guard<std::mutex> lock(mu_);
    WARDEN_ASSIGN_OR_RETURN(oid, ObjectIdForName(tenant, name));
  }
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Errno("cannot create", tmp);
  // With the pipeline the sink runs on the helper thread (one piece at a time, in order).
  auto info = GetImpl(
      tenant, oid, version, [fd](std::string_view b) { return WriteAll(fd, b); }, options_.pipeline,
      fd);
  if (info.ok() && ::fsync(fd) != 0) info = Errno("fsync", tmp);
  ::close(fd);
  if (!info.ok()) {
    ::unlink(tmp.c_str());  // verified chunks already written are discarded with the rest
    return info;
  }
  if (::rename(tmp.c_str(), out_path.c_str()) != 0) {
    absl::Status s = Errno("cannot rename to", out_path);
    ::unlink(tmp.c_str());
    return s;
  }
  return info;
}

absl::StatusOr<ObjectInfo> ObjectStore::ReadChunks(std::string_view tenant, std::string_view name,
                                                   uint64_t version, uint64_t first_chunk,
                                                   uint64_t max_chunks, const ByteSink& sink) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  WARDEN_RETURN_IF_ERROR(ValidateObjectName(name));
  Meta m;
  std::string oid;
  FdCloser file;
  {
    std::lock_guard<std::mutex> lock(mu_);
    WARDEN_ASSIGN_OR_RETURN(oid, ObjectIdForName(tenant, name));
    if (version == 0) {
      WARDEN_ASSIGN_OR_RETURN(auto versions, VisibleVersions(tenant, oid));
      if (versions.empty()) {
        return absl::NotFoundError(StrCat("object \"", name, "\" not found in tenant ", tenant));
      }
      version = versions.back();
    }
    WARDEN_ASSIGN_OR_RETURN(m, ReadMeta(tenant, oid, version));
    std::string path = StrCat(ObjectDir(tenant, oid), "/", m.content);
    file.fd =
        ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);  // under the lock, as GetById
    if (file.fd < 0) return absl::DataLossError(StrCat("content of object ", oid, " is missing"));
  }
  const int fd = file.fd;
  const uint64_t cs = m.info.chunk_size;
  if (cs < kMinChunkSize || cs > kMaxChunkSize) {
    return absl::DataLossError(StrCat("object ", oid, " metadata has a bad chunk size"));
  }
  const uint64_t total = m.info.size == 0 ? 1 : (m.info.size + cs - 1) / cs;
  if (first_chunk >= total) {
    return absl::OutOfRangeError(StrCat("object \"", name, "\" has ", total, " chunks"));
  }
  WARDEN_ASSIGN_OR_RETURN(std::string dek,
                          keyring_.Unwrap(tenant, KeyContext(oid, version), m.key));
  auto dec = ObjectDecryptor::Create(dek, {std::string(tenant), oid, version}, sink);
  internal::Wipe(dek);
  absl::Status st = dec.status();
  std::string buf(kMaxHeaderSize, '\0');
  size_t header_len = 0;
  if (st.ok()) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), 0);
    auto h =
        ParseHeader(std::string_view(buf.data(), n > 0 ? static_cast<size_t>(n) : 0), &header_len);
    st = h.ok() ? (*dec)->Update(std::string_view(buf.data(), header_len)) : h.status();
    if (st.ok() && h->chunk_size != cs)
      st = absl::DataLossError("chunk size differs from metadata");
  }
  const uint64_t ct = cs + kChunkTagSize;
  for (uint64_t i = first_chunk; st.ok() && i < total && i - first_chunk < max_chunks; ++i) {
    bool final = i + 1 == total;
    size_t want =
        final ? static_cast<size_t>(m.info.size - i * cs + kChunkTagSize) : static_cast<size_t>(ct);
    buf.resize(want);
    ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(header_len + i * ct));
    if (n != static_cast<ssize_t>(want)) {
      st = absl::DataLossError(StrCat("object ", oid, " is truncated at chunk ", i));
      break;
    }
    st = (*dec)->OpenChunkAt(i, final, buf);
  }
  if (!st.ok()) return st;
  return m.info;
}

absl::StatusOr<ObjectInfo> ObjectStore::Stat(std::string_view tenant, std::string_view name,
                                             uint64_t version) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  WARDEN_RETURN_IF_ERROR(ValidateObjectName(name));
  std::lock_guard<std::mutex> lock(mu_);
  WARDEN_ASSIGN_OR_RETURN(std::string oid, ObjectIdForName(tenant, name));
  if (version == 0) {
    WARDEN_ASSIGN_OR_RETURN(auto versions, VisibleVersions(tenant, oid));
    if (versions.empty()) {
      return absl::NotFoundError(StrCat("object \"", name, "\" not found in tenant ", tenant));
    }
    version = versions.back();
  }
  WARDEN_ASSIGN_OR_RETURN(Meta m, ReadMeta(tenant, oid, version));
  return m.info;
}

absl::StatusOr<std::vector<ObjectInfo>> ObjectStore::Versions(std::string_view tenant,
                                                              std::string_view name) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  WARDEN_RETURN_IF_ERROR(ValidateObjectName(name));
  std::lock_guard<std::mutex> lock(mu_);
  WARDEN_ASSIGN_OR_RETURN(std::string oid, ObjectIdForName(tenant, name));
  WARDEN_ASSIGN_OR_RETURN(auto versions, VisibleVersions(tenant, oid));
  std::vector<ObjectInfo> out;
  for (uint64_t v : versions) {
    WARDEN_ASSIGN_OR_RETURN(Meta m, ReadMeta(tenant, oid, v));
    out.push_back(std::move(m.info));
  }
  return out;
}

absl::StatusOr<std::vector<ObjectInfo>> ObjectStore::List(std::string_view tenant,
                                                          std::string_view prefix) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ObjectInfo> out;
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(StrCat(TenantDir(tenant), "/names"), ec)) {
    std::string fn = f.path().filename().string();
    if (fn.find(".tmp.") != std::string::npos) continue;
    auto text = internal::ReadSmallFile(f.path().string());
    if (!text.ok()) return text.status();
    auto j = common::ParseJsonStrict(*text);
    if (!j.ok() || !j->is_object() || !(*j)["name"].is_string() || !(*j)["object_id"].is_string()) {
      return absl::DataLossError(StrCat("name entry ", f.path().string(), " is corrupt"));
    }
    std::string name = (*j)["name"].get<std::string>();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    std::string oid = (*j)["object_id"].get<std::string>();
    WARDEN_RETURN_IF_ERROR(ValidateComponent("object id", oid));
    WARDEN_ASSIGN_OR_RETURN(auto versions, VisibleVersions(tenant, oid));
    if (versions.empty()) continue;  // nothing published yet: not visible
    WARDEN_ASSIGN_OR_RETURN(Meta m, ReadMeta(tenant, oid, versions.back()));
    out.push_back(std::move(m.info));
  }
  std::sort(out.begin(), out.end(),
            [](const ObjectInfo& a, const ObjectInfo& b) { return a.name < b.name; });
  return out;
}

absl::Status ObjectStore::Delete(std::string_view tenant, std::string_view name) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  WARDEN_RETURN_IF_ERROR(ValidateObjectName(name));
  std::lock_guard<std::mutex> lock(mu_);
  WARDEN_ASSIGN_OR_RETURN(std::string oid, ObjectIdForName(tenant, name));
  WARDEN_ASSIGN_OR_RETURN(auto versions, VisibleVersions(tenant, oid));
  if (versions.empty()) {
    return absl::NotFoundError(StrCat("object \"", name, "\" not found in tenant ", tenant));
  }
  std::string odir = ObjectDir(tenant, oid);
  // Metadata first (each unlink hides one version), then content, then the name.
  for (uint64_t v : versions) {
    std::string meta = StrCat(odir, "/", MetaFile(v));
    if (::unlink(meta.c_str()) != 0) return Errno("cannot delete", meta);
  }
  WARDEN_RETURN_IF_ERROR(internal::SyncDir(odir));
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(odir, ec)) {
    std::string fn = f.path().filename().string();
    if (fn.size() > 4 && fn.substr(fn.size() - 4) == ".gwv") fs::remove(f.path(), ec);
  }
  return absl::OkStatus();  // the name and next_version stay, so version numbers never repeat
}

// ---- keys ----

absl::Status ObjectStore::ReencryptLocked(std::string_view tenant, Meta& m) {
  std::string odir = ObjectDir(tenant, m.info.object_id);
  WARDEN_ASSIGN_OR_RETURN(
      std::string old_dek,
      keyring_.Unwrap(tenant, KeyContext(m.info.object_id, m.info.version), m.key));
  std::string dek = options_.rng->Bytes(internal::kKeySize);
  ObjectHeader h{m.info.chunk_size, options_.rng->Bytes(32), std::string(tenant), m.info.object_id,
                 m.info.version};
  std::string new_content =
      StrCat("v", m.info.version, ".", common::HexEncode(options_.rng->Bytes(4)), ".gwv");
  std::string new_path = StrCat(odir, "/", new_content);
  int out = ::open(new_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (out < 0) {
    internal::Wipe(old_dek);
    internal::Wipe(dek);
    return Errno("cannot create", new_path);
  }
  auto enc =
      ObjectEncryptor::Create(dek, h, [out](std::string_view b) { return WriteAll(out, b); });
  absl::Status st = enc.status();
  std::string old_path = StrCat(odir, "/", m.content);
  int in = -1;
  if (st.ok()) {
    in = ::open(old_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (in < 0) st = Errno("cannot open", old_path);
  }
  std::unique_ptr<ObjectDecryptor> dec;
  if (st.ok()) {
    auto d =
        ObjectDecryptor::Create(old_dek, {std::string(tenant), m.info.object_id, m.info.version},
                                [&](std::string_view b) { return (*enc)->Update(b); });
    st = d.status();
    if (st.ok()) dec = std::move(*d);
  }
  std::string buf(kIoBuffer, '\0');
  while (st.ok()) {
    ssize_t n = ::read(in, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) st = Errno("cannot read", old_path);
    if (n <= 0) break;
    st = dec->Update(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
  if (in >= 0) ::close(in);
  if (st.ok()) st = dec->Finish();
  if (st.ok()) st = (*enc)->Finish();
  if (st.ok() && common::HexEncode((*enc)->sha256()) != m.info.sha256_hex) {
    st = absl::DataLossError(StrCat("object ", m.info.object_id, " version ", m.info.version,
                                    " does not match its SHA-256; not re-encrypted"));
  }
  if (st.ok() && ::fsync(out) != 0) st = Errno("fsync", new_path);
  ::close(out);
  internal::Wipe(old_dek);
  absl::StatusOr<WrappedKey> wrapped =
      st.ok() ? keyring_.Wrap(tenant, KeyContext(m.info.object_id, m.info.version), dek)
              : absl::StatusOr<WrappedKey>(st);
  internal::Wipe(dek);
  if (!wrapped.ok()) {
    ::unlink(new_path.c_str());
    return wrapped.status();
  }
  WARDEN_RETURN_IF_ERROR(internal::SyncDir(odir));
  Meta next = m;
  next.key = *wrapped;
  next.info.kek_version = wrapped->kek_version;
  next.content = new_content;
  next.digest_tag = common::HexEncode((*enc)->DigestTag(m.info.size, (*enc)->sha256()));
  WARDEN_RETURN_IF_ERROR(
      internal::WriteFileAtomic(StrCat(odir, "/", MetaFile(m.info.version)), next.Encode()));
  ::unlink(old_path.c_str());  // a crash before this leaves an unreferenced file Recover() removes
  m = std::move(next);
  Hook("reencrypt");
  return absl::OkStatus();
}

absl::StatusOr<RotationReport> ObjectStore::RotateTenantKey(std::string_view tenant,
                                                            bool reencrypt) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  std::lock_guard<std::mutex> lock(mu_);
  RotationReport report;
  // The new version is durable in the keyring before any data key is wrapped under it, and the
  // old versions stay: an interrupted rotation leaves every object under an existing version.
  WARDEN_ASSIGN_OR_RETURN(report.new_version, keyring_.Rotate(tenant));
  std::error_code ec;
  for (const auto& odir : fs::directory_iterator(StrCat(TenantDir(tenant), "/objects"), ec)) {
    std::string oid = odir.path().filename().string();
    if (!ValidateComponent("object id", oid).ok()) continue;
    WARDEN_ASSIGN_OR_RETURN(auto versions, VisibleVersions(tenant, oid));
    for (uint64_t v : versions) {
      WARDEN_ASSIGN_OR_RETURN(Meta m, ReadMeta(tenant, oid, v));
      if (reencrypt) {
        WARDEN_RETURN_IF_ERROR(ReencryptLocked(tenant, m));
        ++report.reencrypted;
        continue;
      }
      if (m.key.kek_version >= report.new_version) continue;
      WARDEN_ASSIGN_OR_RETURN(std::string dek, keyring_.Unwrap(tenant, KeyContext(oid, v), m.key));
      auto wrapped = keyring_.Wrap(tenant, KeyContext(oid, v), dek);
      internal::Wipe(dek);
      if (!wrapped.ok()) return wrapped.status();
      m.key = *wrapped;
      m.info.kek_version = wrapped->kek_version;
      // Only the metadata file is rewritten; the content file is not opened.
      WARDEN_RETURN_IF_ERROR(
          internal::WriteFileAtomic(StrCat(odir.path().string(), "/", MetaFile(v)), m.Encode()));
      ++report.rewrapped;
      Hook("rewrap");
    }
  }
  for (const auto& udir : fs::directory_iterator(StrCat(TenantDir(tenant), "/uploads"), ec)) {
    std::string path = (udir.path() / "state.json").string();
    auto text = internal::ReadSmallFile(path);
    if (!text.ok()) continue;
    auto j = common::ParseJsonStrict(*text);
    if (!j.ok() || !j->is_object()) continue;
    try {
      WrappedKey wk{(*j)["kek_version"].get<uint32_t>(),
                    common::Base64UrlDecode((*j)["wrapped_key"].get<std::string>()).value_or("")};
      std::string ctx =
          KeyContext((*j)["object_id"].get<std::string>(), (*j)["version"].get<uint64_t>());
      if (wk.kek_version >= report.new_version) continue;
      WARDEN_ASSIGN_OR_RETURN(std::string dek, keyring_.Unwrap(tenant, ctx, wk));
      auto wrapped = keyring_.Wrap(tenant, ctx, dek);
      internal::Wipe(dek);
      if (!wrapped.ok()) return wrapped.status();
      (*j)["kek_version"] = wrapped->kek_version;
      (*j)["wrapped_key"] = common::Base64UrlEncode(wrapped->blob);
    } catch (const std::exception& e) {
      return absl::DataLossError(StrCat("upload state ", path, " is corrupt: ", e.what()));
    }
    WARDEN_RETURN_IF_ERROR(internal::WriteFileAtomic(path, j->dump(1)));
    ++report.uploads_rewrapped;
  }
  return report;
}

absl::Status ObjectStore::ShredTenant(std::string_view tenant) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  std::lock_guard<std::mutex> lock(mu_);
  WARDEN_RETURN_IF_ERROR(keyring_.Shred(tenant));
  {
    std::lock_guard<std::mutex> slock(sessions_mu_);
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      it = it->second->tenant == tenant ? sessions_.erase(it) : std::next(it);
    }
  }
  // The keys are gone, so the files are already unreadable; removing them frees the space.
  std::string dir = TenantDir(tenant);
  std::string trash = StrCat(options_.root, "/tenants/.shredded-", tenant, "-",
                             common::HexEncode(options_.rng->Bytes(4)));
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    if (::rename(dir.c_str(), trash.c_str()) != 0) return Errno("cannot move", dir);
    fs::remove_all(trash, ec);
  }
  return absl::OkStatus();
}

}  // namespace warden::vault
