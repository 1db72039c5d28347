// argon2id password hashing through libargon2 (the reference implementation, Debian libargon2).
// We parse the PHC string ourselves rather than calling argon2id_verify so that (a) we learn the
// stored parameters (NeedsRehash) and (b) we can refuse absurd parameters before argon2 allocates
// memory for them: a planted hash with m=4 TiB must not take the server down.
#include <argon2.h>

#include <charconv>
#include <string>
#include <vector>

#include "auth/auth.h"
#include "common/encoding.h"
#include "common/strings.h"

namespace warden::auth {
namespace {

constexpr size_t kSaltBytes = 16;
constexpr size_t kTagBytes = 32;
constexpr uint32_t kMaxMemoryKib = 4u * 1024 * 1024;  // 4 GiB
constexpr uint32_t kMaxIterations = 64;
constexpr uint32_t kMaxParallelism = 64;

struct PhcArgon2id {
  uint32_t m = 0, t = 0, p = 0;
  std::string salt;
  std::string tag;
};

// Standard base64 without padding (PHC's alphabet) -> bytes, via the base64url decoder after a
// strict alphabet check (a '-' or '_' must not slip through as valid PHC).
std::optional<std::string> DecodePhcBase64(std::string_view s) {
  std::string url(s);
  for (char& c : url) {
    if (c == '-' || c == '_' || c == '=') return std::nullopt;
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  return common::Base64UrlDecode(url);
}

bool ParseU32(std::string_view s, uint32_t& out) {
  if (s.empty() || s.size() > 10 || (s.size() > 1 && s[0] == '0')) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

bool ConsumePrefix(std::string_view& s, std::string_view prefix) {
  if (s.substr(0, prefix.size()) != prefix) return false;
  s.remove_prefix(prefix.size());
  return true;
}

// Splits off everything up to the next `sep` (exclusive) and consumes the separator.
std::string_view Field(std::string_view& s, char sep) {
  size_t pos = s.find(sep);
  std::string_view head = s.substr(0, pos);
  s = pos == std::string_view::npos ? std::string_view() : s.substr(pos + 1);
  return head;
}

absl::StatusOr<PhcArgon2id> ParsePhc(std::string_view encoded) {
  auto bad = [](std::string_view why) {
    return absl::InvalidArgumentError(common::StrCat("stored password hash: ", why));
  };
  if (encoded.size() > 512) return bad("too long");
  std::string_view s = encoded;
  if (!ConsumePrefix(s, "$argon2id$")) return bad("not an argon2id PHC string");
  if (!ConsumePrefix(s, "v=19$")) return bad("unsupported argon2 version (want v=19)");
  PhcArgon2id out;
  std::string_view params = Field(s, '$');
  std::string_view m = Field(params, ','), t = Field(params, ','), p = params;
  if (!ConsumePrefix(m, "m=") || !ConsumePrefix(t, "t=") || !ConsumePrefix(p, "p=")) {
    return bad("parameters must be m=..,t=..,p=..");
  }
  if (!ParseU32(m, out.m) || !ParseU32(t, out.t) || !ParseU32(p, out.p)) {
    return bad("parameters are not decimal numbers");
  }
  if (out.t < 1 || out.t > kMaxIterations || out.p < 1 || out.p > kMaxParallelism ||
      out.m < 8 * out.p || out.m > kMaxMemoryKib) {
    return bad("parameters out of range");
  }
  std::string_view salt_b64 = Field(s, '$');
  std::string_view tag_b64 = s;
  if (tag_b64.find('$') != std::string_view::npos) return bad("trailing fields");
  auto salt = DecodePhcBase64(salt_b64);
  auto tag = DecodePhcBase64(tag_b64);
  if (!salt || !tag) return bad("salt or tag is not base64");
  if (salt->size() < ARGON2_MIN_SALT_LENGTH || salt->size() > 64) return bad("bad salt length");
  if (tag->size() < 16 || tag->size() > 64) return bad("bad tag length");
  out.salt = std::move(*salt);
  out.tag = std::move(*tag);
  return out;
}

absl::Status CheckOptions(const PasswordHasherOptions& o) {
  if (o.iterations < 1 || o.iterations > kMaxIterations) {
    return absl::InvalidArgumentError("argon2 iterations must be 1-64");
  }
  if (o.parallelism < 1 || o.parallelism > kMaxParallelism) {
    return absl::InvalidArgumentError("argon2 parallelism must be 1-64");
  }
  if (o.memory_kib < 8 * o.parallelism || o.memory_kib > kMaxMemoryKib) {
    return absl::InvalidArgumentError("argon2 memory must be 8*parallelism KiB to 4 GiB");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidatePassword(std::string_view password) {
  if (password.size() < kMinPasswordBytes || password.size() > kMaxPasswordBytes) {
    return absl::InvalidArgumentError(common::StrCat("password must be ", kMinPasswordBytes, "-",
                                                     kMaxPasswordBytes, " bytes long"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PasswordHasher> PasswordHasher::Create(common::Rng& rng,
                                                      PasswordHasherOptions options) {
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  return PasswordHasher(rng, options);
}

absl::StatusOr<std::string> PasswordHasher::Hash(std::string_view password) const {
  if (absl::Status s = ValidatePassword(password); !s.ok()) return s;
  const std::string salt = rng_->Bytes(kSaltBytes);
  std::string encoded(argon2_encodedlen(options_.iterations, options_.memory_kib,
                                        options_.parallelism, kSaltBytes, kTagBytes, Argon2_id),
                      '\0');
  int rc = argon2id_hash_encoded(options_.iterations, options_.memory_kib, options_.parallelism,
                                 password.data(), password.size(), salt.data(), salt.size(),
                                 kTagBytes, encoded.data(), encoded.size());
  if (rc != ARGON2_OK) {
    return absl::InternalError(common::StrCat("argon2id: ", argon2_error_message(rc)));
  }
  encoded.resize(encoded.find('\0') == std::string::npos ? encoded.size() : encoded.find('\0'));
  return encoded;
}

absl::StatusOr<PasswordVerdict> PasswordHasher::Verify(std::string_view password,
                                                       std::string_view encoded) const {
  auto phc = ParsePhc(encoded);
  if (!phc.ok()) return phc.status();
  // Still spend the argon2 time on a password that breaks the length rule (capped at the maximum
  // so a huge input costs no more than a legal one), then report a mismatch: the outcome must not
  // be distinguishable by timing from a wrong password of legal length.
  const bool length_ok = ValidatePassword(password).ok();
  std::string_view input = password.substr(0, kMaxPasswordBytes);
  std::string computed(phc->tag.size(), '\0');
  int rc = argon2id_hash_raw(phc->t, phc->m, phc->p, input.data(), input.size(), phc->salt.data(),
                             phc->salt.size(), computed.data(), computed.size());
  if (rc != ARGON2_OK) {
    return absl::InternalError(common::StrCat("argon2id: ", argon2_error_message(rc)));
  }
  // Constant time: CRYPTO_memcmp inside; the tag length is public (it is in the stored string).
  const bool equal = common::ConstantTimeEquals(computed, phc->tag);
  if (!equal || !length_ok) return PasswordVerdict::kMismatch;
  if (phc->m < options_.memory_kib || phc->t < options_.iterations ||
      phc->salt.size() < kSaltBytes || phc->tag.size() < kTagBytes) {
    return PasswordVerdict::kNeedsRehash;
  }
  return PasswordVerdict::kMatch;
}

}  // namespace warden::auth
