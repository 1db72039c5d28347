#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <array>
#include <cstdlib>

#include "common/strings.h"
#include "common/clock.h"
#include "common/encoding.h"
#include "common/ids.h"
#include "common/rng.h"

namespace warden::common {

RealClock& RealClock::Get() {
  static RealClock clock;
  return clock;
}

std::string SecureRng::Bytes(size_t n) {
  std::string out(n, '\0');
  // A CSPRNG failure leaves no safe way to mint secrets; stop rather than continue weakly.
  if (n > 0 && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    std::abort();
  }
  return out;
}

SecureRng& SecureRng::Get() {
  static SecureRng rng;
  return rng;
}

std::string SeededRng::Bytes(size_t n) {
  std::lock_guard lock(mu_);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(gen_() & 0xff);
  return out;
}

std::string HexEncode(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 0xf]);
  }
  return out;
}

namespace {
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
constexpr char kB64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
}  // namespace

std::optional<std::string> HexDecode(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return out;
}

std::string Base64UrlEncode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16 | static_cast<uint8_t>(bytes[i + 1]) << 8 |
                 static_cast<uint8_t>(bytes[i + 2]);
    out.push_back(kB64Url[v >> 18 & 63]);
    out.push_back(kB64Url[v >> 12 & 63]);
    out.push_back(kB64Url[v >> 6 & 63]);
    out.push_back(kB64Url[v & 63]);
  }
  size_t rest = bytes.size() - i;
  if (rest == 1) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    out.push_back(kB64Url[v >> 18 & 63]);
    out.push_back(kB64Url[v >> 12 & 63]);
  } else if (rest == 2) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16 | static_cast<uint8_t>(bytes[i + 1]) << 8;
    out.push_back(kB64Url[v >> 18 & 63]);
    out.push_back(kB64Url[v >> 12 & 63]);
    out.push_back(kB64Url[v >> 6 & 63]);
  }
  return out;
}

std::optional<std::string> Base64UrlDecode(std::string_view text) {
  static const auto kTable = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    for (int i = 0; i < 64; ++i) t[static_cast<uint8_t>(kB64Url[i])] = static_cast<int8_t>(i);
    return t;
  }();
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = kTable[static_cast<uint8_t>(c)];
    if (v < 0) return std::nullopt;
    acc = acc << 6 | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>(acc >> bits & 0xff));
    }
  }
  // Non-canonical encodings (stray low bits) are refused so one value has one spelling.
  if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

std::string Sha256(std::string_view data) {
  // Fetched once: OpenSSL 3's one-shot SHA256() looks the algorithm up on every call, which showed
  // in the request-path profile (every bearer token is hashed).
  static EVP_MD* const kSha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  std::string out(SHA256_DIGEST_LENGTH, '\0');
  unsigned int len = 0;
  if (kSha256 == nullptr ||
      EVP_Digest(data.data(), data.size(), reinterpret_cast<unsigned char*>(out.data()), &len,
                 kSha256, nullptr) != 1) {
    std::abort();  // no SHA-256 means no safe way to check credentials
  }
  return out;
}

std::string Sha256Hex(std::string_view data) { return HexEncode(Sha256(data)); }

std::string PercentEncode(std::string_view value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(value.size());
  for (char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string NewId(Rng& rng, std::string_view prefix) {
  static constexpr char kAlphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";  // Crockford base32
  std::string raw = rng.Bytes(17);
  std::string out = StrCat(prefix, "_");
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : raw) {
    acc = acc << 8 | c;
    bits += 8;
    while (bits >= 5 && out.size() < prefix.size() + 1 + 26) {
      bits -= 5;
      out.push_back(kAlphabet[acc >> bits & 31]);
    }
  }
  return out;
}

absl::Status ValidateName(std::string_view what, std::string_view name) {
  if (name.empty() || name.size() > 63) {
    return absl::InvalidArgumentError(
        StrCat(what, " must be 1-63 characters, got ", name.size()));
  }
  auto ok_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  };
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(name[0])) {
    return absl::InvalidArgumentError(
        StrCat(what, " must start with a lowercase letter or digit"));
  }
  for (char c : name) {
    if (!ok_char(c)) {
      return absl::InvalidArgumentError(
          StrCat(what, " may contain only a-z, 0-9, '.', '_' and '-'"));
    }
  }
  if (name.find("..") != std::string_view::npos) {
    return absl::InvalidArgumentError(StrCat(what, " must not contain \"..\""));
  }
  return absl::OkStatus();
}

}  // namespace warden::common
