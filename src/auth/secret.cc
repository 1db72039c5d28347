// Bearer secrets. The format check runs before any store or cache work so garbage (random
// strings, oversized headers, wrong token kinds) is refused for the price of a prefix compare and
// at most 43 table lookups.
#include <array>

#include "auth/auth.h"
#include "common/encoding.h"

namespace warden::auth {
namespace {

constexpr size_t kSecretBytes = 32;
constexpr size_t kPrefixLength = 4;
static_assert(kSecretLength == kPrefixLength + (kSecretBytes * 8 + 5) / 6);

// Value of each base64url character, -1 for anything else.
constexpr std::array<int8_t, 256> kB64UrlValue = [] {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (int i = 0; i < 64; ++i) t[static_cast<uint8_t>(kAlphabet[i])] = static_cast<int8_t>(i);
  return t;
}();

absl::Status Malformed() { return absl::UnauthenticatedError("malformed token"); }

}  // namespace

std::string MintSecret(SecretKind kind, common::Rng& rng) {
  std::string out(kind == SecretKind::kSession ? kSessionPrefix : kApiTokenPrefix);
  out += common::Base64UrlEncode(rng.Bytes(kSecretBytes));
  return out;
}

absl::StatusOr<SecretKind> ParseSecret(std::string_view presented) {
  if (presented.size() != kSecretLength) return Malformed();
  SecretKind kind;
  std::string_view prefix = presented.substr(0, kPrefixLength);
  if (prefix == kSessionPrefix) {
    kind = SecretKind::kSession;
  } else if (prefix == kApiTokenPrefix) {
    kind = SecretKind::kApiToken;
  } else {
    return Malformed();
  }
  int last = 0;
  for (char c : presented.substr(kPrefixLength)) {
    const int8_t v = kB64UrlValue[static_cast<uint8_t>(c)];
    if (v < 0) return Malformed();
    last = static_cast<uint8_t>(v);
  }
  // 32 bytes fill 42 characters and 4 bits of the 43rd; its 2 low bits must be zero, so each
  // secret has exactly one spelling.
  if ((last & 0x3) != 0) return Malformed();
  return kind;
}

std::string SecretHash(std::string_view secret) { return common::Sha256Hex(secret); }

}  // namespace warden::auth
