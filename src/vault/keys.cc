#include "vault/keys.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "common/encoding.h"
#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"
#include "vault/crypto.h"
#include "vault/format.h"

namespace warden::vault {

using common::StrCat;
using internal::kGcmNonceSize;
using internal::kKeySize;

namespace {

constexpr int kKeyringFormat = 1;
constexpr uint8_t kWrapFormat = 1;

}  // namespace

// ---- Keyring ----

Keyring::Keyring(std::string master_bytes, KeyringOptions options)
    : master_(std::move(master_bytes)), options_(std::move(options)) {}

Keyring::~Keyring() {
  internal::Wipe(master_);
  for (auto& [name, t] : tenants_) {
    for (auto& [v, k] : t->keks) internal::Wipe(k);
  }
}

absl::StatusOr<std::unique_ptr<Keyring>> Keyring::Open(const common::MasterKey& master,
                                                       KeyringOptions options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("keyring dir is empty");
  if (options.clock == nullptr) options.clock = &common::RealClock::Get();
  if (options.rng == nullptr) options.rng = &common::SecureRng::Get();
  if (options.max_wraps_per_version == 0 || options.wrap_reservation_block == 0) {
    return absl::InvalidArgumentError("keyring limits must be positive");
  }
  WARDEN_RETURN_IF_ERROR(internal::MakeDirs(options.dir));
  // A keyring write killed between its temporary file and the rename leaves "<tenant>.keyring.
  // json.tmp.<random>": never read (the keyring is the renamed file), removed here. One process
  // owns a keyring directory at a time, so no live writer's file can be caught by this.
  std::error_code ec;
  for (const auto& f : std::filesystem::directory_iterator(options.dir, ec)) {
    if (f.path().filename().string().find(".tmp.") != std::string::npos) {
      std::filesystem::remove(f.path(), ec);
    }
  }
  // The KEK-wrapping key is derived, not the master key itself, so the master key serves other
  // purposes (TOTP seeds, ...) under other HKDF labels without key reuse across them: the
  // server's one master key -> HKDF "vault-kek-wrap/v1" (common::MasterKey) -> HKDF "gpuwarden/
  // vault/v1 kek-wrap" (the vault's own label, kept so existing keyrings still open).
  WARDEN_ASSIGN_OR_RETURN(std::string vault_root, master.DeriveSecret("vault-kek-wrap/v1"));
  auto wrapping_or = internal::Hkdf(vault_root, "", "gpuwarden/vault/v1 kek-wrap", kKeySize);
  internal::Wipe(vault_root);
  WARDEN_ASSIGN_OR_RETURN(std::string wrapping, std::move(wrapping_or));
  return std::unique_ptr<Keyring>(new Keyring(std::move(wrapping), std::move(options)));
}

std::string Keyring::KeyringPath(std::string_view tenant) const {
  return StrCat(options_.dir, "/", tenant, ".keyring.json");
}
std::string Keyring::TombstonePath(std::string_view tenant) const {
  return StrCat(options_.dir, "/", tenant, ".shredded");
}

absl::Status Keyring::CheckNotShreddedLocked(std::string_view tenant) {
  struct stat st {};
  if (::stat(TombstonePath(tenant).c_str(), &st) == 0) {
    return absl::FailedPreconditionError(StrCat(
        "tenant ", tenant, "'s keys were destroyed (crypto-shredded); its data cannot be read"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Keyring::Tenant*> Keyring::LoadLocked(std::string_view tenant, bool create) {
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  WARDEN_RETURN_IF_ERROR(CheckNotShreddedLocked(tenant));
  auto it = tenants_.find(tenant);
  if (it != tenants_.end()) return it->second.get();
  auto t = std::make_unique<Tenant>();
  t->name = std::string(tenant);
  auto text = internal::ReadSmallFile(KeyringPath(tenant));
  if (absl::IsNotFound(text.status())) {
    if (!create) return absl::NotFoundError(StrCat("tenant ", tenant, " has no keys yet"));
    WARDEN_RETURN_IF_ERROR(AddVersionLocked(*t).status());
  } else {
    if (!text.ok()) return text.status();
    auto json = common::ParseJsonStrict(*text);
    auto bad = [&](std::string_view why) {
      return absl::DataLossError(StrCat("keyring of tenant ", tenant, " is corrupt: ", why));
    };
    if (!json.ok() || !json->is_object()) return bad("not a JSON object");
    try {
      if (json->at("format").get<int>() != kKeyringFormat) return bad("unknown format");
      if (json->at("tenant").get<std::string>() != tenant) return bad("names another tenant");
      t->current = json->at("current").get<uint32_t>();
      t->min_version = json->at("min_version").get<uint32_t>();
      for (const auto& v : json->at("versions")) {
        Version ver;
        ver.version = v.at("version").get<uint32_t>();
        ver.created_unix = v.at("created_unix").get<int64_t>();
        auto blob = common::Base64UrlDecode(v.at("wrapped").get<std::string>());
        if (!blob) return bad("wrapped key is not base64url");
        ver.wrapped = std::move(*blob);
        ver.reserved = v.at("wraps_reserved").get<uint64_t>();
        // Whatever was reserved before a restart counts as used.
        ver.used = ver.reserved;
        t->versions[ver.version] = std::move(ver);
      }
    } catch (const std::exception& e) {
      return bad(e.what());
    }
    if (t->versions.count(t->current) == 0) return bad("current version has no key");
  }
  Tenant* raw = t.get();
  tenants_[raw->name] = std::move(t);
  return raw;
}

absl::Status Keyring::SaveLocked(const Tenant& t) {
  common::Json versions = common::Json::array();
  for (const auto& [v, ver] : t.versions) {
    versions.push_back({{"version", ver.version},
                        {"created_unix", ver.created_unix},
                        {"wrapped", common::Base64UrlEncode(ver.wrapped)},
                        {"wraps_reserved", ver.reserved}});
  }
  common::Json doc = {{"format", kKeyringFormat},
                      {"tenant", t.name},
                      {"current", t.current},
                      {"min_version", t.min_version},
                      {"versions", versions}};
  return internal::WriteFileAtomic(KeyringPath(t.name), doc.dump(1));
}

absl::StatusOr<uint32_t> Keyring::AddVersionLocked(Tenant& t) {
  uint32_t v = t.versions.empty() ? 1 : t.versions.rbegin()->first + 1;
  std::string kek = options_.rng->Bytes(kKeySize);
  std::string nonce = options_.rng->Bytes(kGcmNonceSize);
  std::string aad = StrCat("gpuwarden/vault/v1 kek|", t.name, "|", v);
  WARDEN_ASSIGN_OR_RETURN(std::string sealed, internal::GcmSeal(master_, nonce, aad, kek));
  Version ver;
  ver.version = v;
  ver.created_unix = options_.clock->NowUnix();
  ver.wrapped = nonce + sealed;
  Tenant copy_for_save;  // persist before using: a key that was never saved must never wrap data
  copy_for_save.name = t.name;
  copy_for_save.current = v;
  copy_for_save.min_version = t.min_version;
  copy_for_save.versions = t.versions;
  copy_for_save.versions[v] = ver;
  WARDEN_RETURN_IF_ERROR(SaveLocked(copy_for_save));
  t.versions[v] = std::move(ver);
  t.current = v;
  t.keks[v] = std::move(kek);
  return v;
}

absl::StatusOr<std::string> Keyring::KekLocked(Tenant& t, uint32_t version) {
  if (version < t.min_version) {
    return absl::FailedPreconditionError(StrCat("key version ", version, " of tenant ", t.name,
                                                " is below the minimum decryptable version ",
                                                t.min_version));
  }
  auto cached = t.keks.find(version);
  if (cached != t.keks.end()) return cached->second;
  auto it = t.versions.find(version);
  if (it == t.versions.end()) {
    return absl::NotFoundError(StrCat("tenant ", t.name, " has no key version ", version));
  }
  const std::string& w = it->second.wrapped;
  if (w.size() < kGcmNonceSize) return absl::DataLossError("wrapped tenant key is truncated");
  std::string aad = StrCat("gpuwarden/vault/v1 kek|", t.name, "|", version);
  auto kek = internal::GcmOpen(master_, w.substr(0, kGcmNonceSize), aad, w.substr(kGcmNonceSize));
  if (!kek.ok()) {
    return absl::DataLossError(StrCat("key version ", version, " of tenant ", t.name,
                                      " does not unwrap: wrong master key or altered keyring"));
  }
  t.keks[version] = *kek;
  return *kek;
}

absl::StatusOr<WrappedKey> Keyring::Wrap(std::string_view tenant, std::string_view context,
                                         std::string_view data_key) {
  std::lock_guard<std::mutex> lock(mu_);
  WARDEN_ASSIGN_OR_RETURN(Tenant * t, LoadLocked(tenant, /*create=*/true));
  Version* cur = &t->versions[t->current];
  if (cur->used >= options_.max_wraps_per_version) {
    WARDEN_RETURN_IF_ERROR(AddVersionLocked(*t).status());
    cur = &t->versions[t->current];
  }
  if (cur->used >= cur->reserved) {
    uint64_t old = cur->reserved;
    cur->reserved = std::min(options_.max_wraps_per_version, old + options_.wrap_reservation_block);
    absl::Status saved = SaveLocked(*t);
    if (!saved.ok()) {
      cur->reserved = old;
      return saved;
    }
  }
  WARDEN_ASSIGN_OR_RETURN(std::string kek, KekLocked(*t, t->current));
  std::string nonce = options_.rng->Bytes(kGcmNonceSize);
  std::string aad = StrCat("gpuwarden/vault/v1 dek|", tenant, "|", t->current, "|", context);
  WARDEN_ASSIGN_OR_RETURN(std::string sealed, internal::GcmSeal(kek, nonce, aad, data_key));
  ++cur->used;
  WrappedKey out;
  out.kek_version = t->current;
  out.blob = std::string(1, static_cast<char>(kWrapFormat)) + nonce + sealed;
  return out;
}

absl::StatusOr<std::string> Keyring::Unwrap(std::string_view tenant, std::string_view context,
                                            const WrappedKey& wrapped) {
  std::lock_guard<std::mutex> lock(mu_);
  WARDEN_ASSIGN_OR_RETURN(Tenant * t, LoadLocked(tenant, /*create=*/false));
  WARDEN_ASSIGN_OR_RETURN(std::string kek, KekLocked(*t, wrapped.kek_version));
  const std::string& b = wrapped.blob;
  if (b.size() != 1 + kGcmNonceSize + kKeySize + internal::kGcmTagSize ||
      static_cast<uint8_t>(b[0]) != kWrapFormat) {
    return absl::DataLossError("wrapped data key has the wrong size or format");
  }
  std::string aad =
      StrCat("gpuwarden/vault/v1 dek|", tenant, "|", wrapped.kek_version, "|", context);
  auto key = internal::GcmOpen(kek, b.substr(1, kGcmNonceSize), aad, b.substr(1 + kGcmNonceSize));
  internal::Wipe(kek);
  if (!key.ok()) {
    return absl::DataLossError(
        "data key does not unwrap for this tenant and object (moved or altered metadata)");
  }
  return key;
}

absl::StatusOr<uint32_t> Keyring::Rotate(std::string_view tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  WARDEN_ASSIGN_OR_RETURN(Tenant * t, LoadLocked(tenant, /*create=*/true));
  return AddVersionLocked(*t);
}

absl::Status Keyring::SetMinVersion(std::string_view tenant, uint32_t min_version,
                                    bool destroy_below) {
  std::lock_guard<std::mutex> lock(mu_);
  WARDEN_ASSIGN_OR_RETURN(Tenant * t, LoadLocked(tenant, /*create=*/false));
  if (min_version == 0 || min_version > t->current) {
    return absl::InvalidArgumentError(StrCat("minimum version ", min_version,
                                             " must be between 1 and the current version ",
                                             t->current));
  }
  if (min_version < t->min_version) {
    return absl::InvalidArgumentError(
        StrCat("minimum version can only rise (it is ", t->min_version, ")"));
  }
  Tenant next;
  next.name = t->name;
  next.current = t->current;
  next.min_version = min_version;
  next.versions = t->versions;
  if (destroy_below) {
    for (auto it = next.versions.begin(); it != next.versions.end();) {
      it = it->first < min_version ? next.versions.erase(it) : std::next(it);
    }
  }
  WARDEN_RETURN_IF_ERROR(SaveLocked(next));
  t->min_version = min_version;
  if (destroy_below) t->versions = next.versions;
  for (auto it = t->keks.begin(); it != t->keks.end();) {
    if (it->first < min_version) {
      internal::Wipe(it->second);
      it = t->keks.erase(it);
    } else {
      ++it;
    }
  }
  return absl::OkStatus();
}

absl::Status Keyring::Shred(std::string_view tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  WARDEN_RETURN_IF_ERROR(CheckNotShreddedLocked(tenant));
  // Tombstone first: after a crash between the two steps the tenant is refused, never silently
  // given a fresh keyring under which its old objects would look merely "corrupt".
  common::Json tomb = {{"tenant", std::string(tenant)},
                       {"shredded_unix", options_.clock->NowUnix()}};
  WARDEN_RETURN_IF_ERROR(internal::WriteFileAtomic(TombstonePath(tenant), tomb.dump()));
  auto it = tenants_.find(tenant);
  if (it != tenants_.end()) {
    for (auto& [v, k] : it->second->keks) internal::Wipe(k);
    tenants_.erase(it);
  }
  std::string path = KeyringPath(tenant);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::UnavailableError(StrCat("cannot delete ", path, ": ", std::strerror(errno)));
  }
  return internal::SyncDir(options_.dir);
}

absl::StatusOr<TenantKeyStatus> Keyring::Status(std::string_view tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  TenantKeyStatus out;
  out.tenant = std::string(tenant);
  WARDEN_RETURN_IF_ERROR(ValidateComponent("tenant", tenant));
  auto tomb = internal::ReadSmallFile(TombstonePath(tenant));
  if (tomb.ok()) {
    out.shredded = true;
    auto j = common::ParseJsonStrict(*tomb);
    if (j.ok() && j->is_object() && j->contains("shredded_unix") &&
        (*j)["shredded_unix"].is_number_integer()) {
      out.shredded_unix = (*j)["shredded_unix"].get<int64_t>();
    }
    return out;
  }
  WARDEN_ASSIGN_OR_RETURN(Tenant * t, LoadLocked(tenant, /*create=*/false));
  out.current_version = t->current;
  out.min_version = t->min_version;
  for (const auto& [v, ver] : t->versions) {
    out.versions.push_back({ver.version, ver.created_unix, ver.used});
  }
  return out;
}

}  // namespace warden::vault
