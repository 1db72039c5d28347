// TOTP (RFC 6238 over RFC 4226 HOTP) and recovery codes. liboath computes the codes; the window,
// replay rule and comparison live here because liboath's validators compare with strcmp (timing
// leak) and know nothing of the last accepted step.
#include "auth/totp.h"

#include <liboath/oath.h>

#include <array>
#include <limits>

#include "common/encoding.h"
#include "common/strings.h"

namespace warden::auth {
namespace {

constexpr char kBase32Alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

// Value of each base32 character (either case), -1 for anything else.
constexpr std::array<int8_t, 256> kBase32Value = [] {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 32; ++i) {
    const char c = kBase32Alphabet[i];
    t[static_cast<uint8_t>(c)] = static_cast<int8_t>(i);
    if (c >= 'A' && c <= 'Z') t[static_cast<uint8_t>(c - 'A' + 'a')] = static_cast<int8_t>(i);
  }
  return t;
}();

// Crockford base32, lower case: no i, l, o, u, so a code read aloud or copied by hand has no
// look-alike characters.
constexpr char kRecoveryAlphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";
static_assert(sizeof(kRecoveryAlphabet) - 1 == 32);
constexpr size_t kMaxRecoveryInput = 64;

int OathFlags(TotpAlgorithm algorithm) {
  switch (algorithm) {
    case TotpAlgorithm::kSha1:
      return 0;
    case TotpAlgorithm::kSha256:
      return OATH_TOTP_HMAC_SHA256;
    case TotpAlgorithm::kSha512:
      return OATH_TOTP_HMAC_SHA512;
  }
  return 0;
}

// oath_init must run once before any other liboath call; a function-local static makes that
// thread-safe.
bool OathReady() {
  static const bool ready = oath_init() == OATH_OK;
  return ready;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Base32

std::string Base32Encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 8 + 4) / 5);
  uint32_t buffer = 0;
  int bits = 0;
  for (char ch : bytes) {
    buffer = (buffer << 8) | static_cast<uint8_t>(ch);
    bits += 8;
    while (bits >= 5) {
      out.push_back(kBase32Alphabet[(buffer >> (bits - 5)) & 0x1F]);
      bits -= 5;
    }
  }
  if (bits > 0) out.push_back(kBase32Alphabet[(buffer << (5 - bits)) & 0x1F]);
  return out;
}

std::optional<std::string> Base32Decode(std::string_view text) {
  // A final group of 1, 3 or 6 characters cannot come from whole bytes.
  const size_t tail = text.size() % 8;
  if (tail == 1 || tail == 3 || tail == 6) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 5 / 8);
  uint32_t buffer = 0;
  int bits = 0;
  for (char ch : text) {
    const int8_t v = kBase32Value[static_cast<uint8_t>(ch)];
    if (v < 0) return std::nullopt;
    buffer = (buffer << 5) | static_cast<uint32_t>(v);
    bits += 5;
    if (bits >= 8) {
      out.push_back(static_cast<char>((buffer >> (bits - 8)) & 0xFF));
      bits -= 8;
    }
  }
  // Leftover bits are padding and must be zero: one spelling per byte string.
  if (bits > 0 && (buffer & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Parameters and secrets

std::string_view TotpAlgorithmName(TotpAlgorithm algorithm) {
  switch (algorithm) {
    case TotpAlgorithm::kSha1:
      return "SHA1";
    case TotpAlgorithm::kSha256:
      return "SHA256";
    case TotpAlgorithm::kSha512:
      return "SHA512";
  }
  return "SHA1";
}

absl::Status ValidateTotpParams(const TotpParams& params) {
  switch (params.algorithm) {
    case TotpAlgorithm::kSha1:
    case TotpAlgorithm::kSha256:
    case TotpAlgorithm::kSha512:
      break;
    default:
      return absl::InvalidArgumentError("totp algorithm must be SHA1, SHA256 or SHA512");
  }
  if (params.digits != 6 && params.digits != 8) {
    return absl::InvalidArgumentError("totp digits must be 6 or 8");
  }
  if (params.period_seconds != 30) {
    return absl::InvalidArgumentError("totp period must be 30 seconds");
  }
  return absl::OkStatus();
}

TotpSecret TotpSecret::Generate(common::Rng& rng, TotpAlgorithm algorithm) {
  size_t n = 20;
  if (algorithm == TotpAlgorithm::kSha256) n = 32;
  if (algorithm == TotpAlgorithm::kSha512) n = 64;
  return TotpSecret(rng.Bytes(n));
}

absl::StatusOr<TotpSecret> TotpSecret::FromBytes(std::string_view bytes) {
  if (bytes.size() < kMinTotpSecretBytes || bytes.size() > kMaxTotpSecretBytes) {
    return absl::InvalidArgumentError(common::StrCat("totp secret must be ", kMinTotpSecretBytes,
                                                     " to ", kMaxTotpSecretBytes, " bytes"));
  }
  return TotpSecret(std::string(bytes));
}

absl::StatusOr<TotpSecret> TotpSecret::FromBase32(std::string_view text) {
  // Bound the work before decoding: 128 bytes are 205 base32 characters.
  if (text.size() > (kMaxTotpSecretBytes * 8 + 4) / 5) {
    return absl::InvalidArgumentError("totp secret is too long");
  }
  std::optional<std::string> bytes = Base32Decode(text);
  if (!bytes) return absl::InvalidArgumentError("totp secret is not valid base32");
  return FromBytes(*bytes);
}

absl::StatusOr<int64_t> TotpStep(absl::Time now, const TotpParams& params) {
  if (absl::Status s = ValidateTotpParams(params); !s.ok()) return s;
  const int64_t t = absl::ToUnixSeconds(now);
  if (t < 0) return absl::InvalidArgumentError("time is before the Unix epoch");
  return t / params.period_seconds;
}

absl::StatusOr<std::string> TotpCodeAtStep(const TotpSecret& secret, int64_t step,
                                           const TotpParams& params) {
  if (absl::Status s = ValidateTotpParams(params); !s.ok()) return s;
  if (step < 0) return absl::InvalidArgumentError("totp step is negative");
  if (step > std::numeric_limits<time_t>::max() / params.period_seconds) {
    return absl::InvalidArgumentError("totp step is too large");
  }
  if (!OathReady()) return absl::InternalError("liboath initialisation failed");
  // liboath takes a time, not a step: the step's first second gives exactly that step.
  std::array<char, 16> out{};
  const int rc = oath_totp_generate2(secret.bytes().data(), secret.bytes().size(),
                                     static_cast<time_t>(step * params.period_seconds),
                                     static_cast<unsigned>(params.period_seconds), 0,
                                     static_cast<unsigned>(params.digits),
                                     OathFlags(params.algorithm), out.data());
  if (rc != OATH_OK) {
    return absl::InternalError(common::StrCat("liboath: ", oath_strerror(rc)));
  }
  return std::string(out.data(), static_cast<size_t>(params.digits));
}

absl::StatusOr<std::string> TotpCode(const TotpSecret& secret, absl::Time now,
                                     const TotpParams& params) {
  absl::StatusOr<int64_t> step = TotpStep(now, params);
  if (!step.ok()) return step.status();
  return TotpCodeAtStep(secret, *step, params);
}

absl::StatusOr<std::string> OtpauthUri(std::string_view issuer, std::string_view account,
                                       const TotpSecret& secret, const TotpParams& params) {
  if (absl::Status s = ValidateTotpParams(params); !s.ok()) return s;
  if (issuer.empty() || account.empty()) {
    return absl::InvalidArgumentError("otpauth issuer and account must not be empty");
  }
  if (issuer.size() > 256 || account.size() > 256) {
    return absl::InvalidArgumentError("otpauth issuer and account must be at most 256 bytes");
  }
  if (issuer.find(':') != std::string_view::npos) {
    return absl::InvalidArgumentError("otpauth issuer must not contain ':'");
  }
  const std::string enc_issuer = common::PercentEncode(issuer);
  return common::StrCat("otpauth://totp/", enc_issuer, ":", common::PercentEncode(account),
                        "?secret=", secret.Base32(), "&issuer=", enc_issuer,
                        "&algorithm=", TotpAlgorithmName(params.algorithm),
                        "&digits=", params.digits, "&period=", params.period_seconds);
}

// ---------------------------------------------------------------------------------------------
// Verification

absl::StatusOr<TotpVerifier> TotpVerifier::Create(Options options) {
  if (absl::Status s = ValidateTotpParams(options.params); !s.ok()) return s;
  if (options.skew_steps < 0 || options.skew_steps > 1) {
    return absl::InvalidArgumentError("totp skew_steps must be 0 or 1");
  }
  return TotpVerifier(options);
}

absl::StatusOr<int64_t> TotpVerifier::Verify(const TotpSecret& secret, std::string_view code,
                                             int64_t last_used_step, absl::Time now) const {
  const TotpParams& params = options_.params;
  if (code.size() != static_cast<size_t>(params.digits)) {
    return absl::InvalidArgumentError(
        common::StrCat("totp code must be ", params.digits, " digits"));
  }
  for (char c : code) {
    if (c < '0' || c > '9') {
      return absl::InvalidArgumentError(
          common::StrCat("totp code must be ", params.digits, " digits"));
    }
  }
  absl::StatusOr<int64_t> current = TotpStep(now, params);
  if (!current.ok()) return current.status();

  // Every candidate in the window is computed and compared whatever the outcome, so response time
  // does not reveal which step (if any) matched. The latest matching step wins: it leaves the
  // smallest set of codes still acceptable afterwards.
  bool matched_any = false;
  int64_t accepted = kNoTotpStepUsed;
  for (int64_t step = *current - options_.skew_steps; step <= *current + options_.skew_steps;
       ++step) {
    if (step < 0) continue;
    absl::StatusOr<std::string> expected = TotpCodeAtStep(secret, step, params);
    if (!expected.ok()) return expected.status();
    const bool match = common::ConstantTimeEquals(*expected, code);
    matched_any |= match;
    // Replay defence (issue 3: "a code accepted once is refused again within its window"): a step
    // at or before the last accepted one is never accepted again, even with a different code.
    if (match && step > last_used_step) accepted = step;
  }
  if (accepted != kNoTotpStepUsed) return accepted;
  if (matched_any) return absl::UnauthenticatedError("code already used");
  return absl::UnauthenticatedError("invalid code");
}

// ---------------------------------------------------------------------------------------------
// Recovery codes

RecoveryCodes GenerateRecoveryCodes(common::Rng& rng, size_t n) {
  RecoveryCodes result;
  result.codes.reserve(n);
  result.hashes.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    // 256 is a multiple of 32, so byte % 32 is uniform: exactly 5 bits per character.
    const std::string bytes = rng.Bytes(kRecoveryCodeChars);
    std::string normal;
    std::string shown;
    for (size_t j = 0; j < kRecoveryCodeChars; ++j) {
      const char c = kRecoveryAlphabet[static_cast<uint8_t>(bytes[j]) % 32];
      normal.push_back(c);
      if (j > 0 && j % 4 == 0) shown.push_back('-');
      shown.push_back(c);
    }
    result.hashes.push_back(common::Sha256Hex(normal));
    result.codes.push_back(std::move(shown));
  }
  return result;
}

absl::StatusOr<std::string> NormalizeRecoveryCode(std::string_view code) {
  if (code.size() > kMaxRecoveryInput) {
    return absl::InvalidArgumentError("recovery code is too long");
  }
  std::string out;
  for (char ch : code) {
    if (ch == '-' || ch == ' ') continue;
    char c = (ch >= 'A' && ch <= 'Z') ? static_cast<char>(ch - 'A' + 'a') : ch;
    if (c == 'o') c = '0';
    if (c == 'i' || c == 'l') c = '1';
    bool in_alphabet = false;
    for (size_t k = 0; k < 32; ++k) in_alphabet |= kRecoveryAlphabet[k] == c;
    if (!in_alphabet) {
      return absl::InvalidArgumentError(
          "recovery code has a character outside its alphabet (expected xxxx-xxxx-xxxx)");
    }
    out.push_back(c);
  }
  if (out.size() != kRecoveryCodeChars) {
    return absl::InvalidArgumentError(
        common::StrCat("recovery code must be ", kRecoveryCodeChars, " characters"));
  }
  return out;
}

absl::Status ConsumeRecoveryCode(std::string_view code, std::vector<std::string>& hashes) {
  absl::StatusOr<std::string> normal = NormalizeRecoveryCode(code);
  if (!normal.ok()) return normal.status();
  const std::string hash = common::Sha256Hex(*normal);
  // Compare against every stored hash so timing does not reveal which slot (if any) matched.
  size_t found = hashes.size();
  for (size_t i = 0; i < hashes.size(); ++i) {
    if (common::ConstantTimeEquals(hashes[i], hash) && found == hashes.size()) found = i;
  }
  if (found == hashes.size()) return absl::UnauthenticatedError("invalid recovery code");
  hashes.erase(hashes.begin() + static_cast<std::ptrdiff_t>(found));
  return absl::OkStatus();
}

}  // namespace warden::auth
