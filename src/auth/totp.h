// auth/totp: time-based one-time passwords (RFC 6238) and single-use recovery codes, the building
// blocks of MFA (issue 3). Pure library: no store, no HTTP. The caller persists the secret
// (encrypted), the last accepted step and the recovery-code hashes.
//
// Codes are computed by liboath (oath_totp_generate2, which covers HMAC-SHA1/256/512); comparison,
// skew window and replay refusal are done here so they are constant-time and cannot be skipped.
// Everything in this header is thread-safe (no shared mutable state; Rng must be thread-safe).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rng.h"

namespace warden::auth {

// ---------------------------------------------------------------------------------------------
// Base32 (RFC 4648 section 6), the encoding authenticator apps use for secrets.

// Upper-case alphabet, no '=' padding.
std::string Base32Encode(std::string_view bytes);
// Case-insensitive; no padding, whitespace or other characters accepted. nullopt for a character
// outside the alphabet, an impossible length (1, 3 or 6 characters in the last group) or non-zero
// trailing bits (so each byte string has exactly one spelling).
std::optional<std::string> Base32Decode(std::string_view text);

// ---------------------------------------------------------------------------------------------
// Parameters and secrets

enum class TotpAlgorithm { kSha1, kSha256, kSha512 };

// "SHA1", "SHA256", "SHA512": the spelling of the otpauth `algorithm` parameter.
std::string_view TotpAlgorithmName(TotpAlgorithm algorithm);

// What the authenticator app and the server agree on. Only 6 or 8 digits and a 30 s period are
// accepted (what common apps support); anything else is InvalidArgument wherever params are taken.
struct TotpParams {
  TotpAlgorithm algorithm = TotpAlgorithm::kSha1;
  int digits = 6;
  int period_seconds = 30;
};

// InvalidArgument naming the offending field unless digits is 6 or 8 and period_seconds is 30.
absl::Status ValidateTotpParams(const TotpParams& params);

// RFC 4226 R6: at least 128 bits of shared secret.
inline constexpr size_t kMinTotpSecretBytes = 16;
inline constexpr size_t kMaxTotpSecretBytes = 128;

// The shared HMAC key. A value type holding raw bytes; treat it as a credential (never log it).
class TotpSecret {
 public:
  // A fresh key from `rng`: 20 bytes for SHA-1 (RFC 4226's recommended length), 32 for SHA-256,
  // 64 for SHA-512 (the hash output size, RFC 6238 section 5.1).
  static TotpSecret Generate(common::Rng& rng, TotpAlgorithm algorithm = TotpAlgorithm::kSha1);
  // InvalidArgument unless 16..128 bytes.
  static absl::StatusOr<TotpSecret> FromBytes(std::string_view bytes);
  // InvalidArgument for bad base32 (see Base32Decode) or a length outside 16..128 bytes.
  static absl::StatusOr<TotpSecret> FromBase32(std::string_view text);

  const std::string& bytes() const { return bytes_; }
  std::string Base32() const { return Base32Encode(bytes_); }

 private:
  explicit TotpSecret(std::string bytes) : bytes_(std::move(bytes)) {}
  std::string bytes_;
};

// The time step containing `now`: floor(unix seconds / period). InvalidArgument for bad params.
absl::StatusOr<int64_t> TotpStep(absl::Time now, const TotpParams& params);

// The code for time step `step` (zero-padded to params.digits). InvalidArgument for bad params or
// a negative step; Internal if liboath fails. For enrollment displays, tests and tools; servers
// check codes with TotpVerifier, never by comparing this output themselves.
absl::StatusOr<std::string> TotpCodeAtStep(const TotpSecret& secret, int64_t step,
                                           const TotpParams& params);
// Same, for the step containing `now`.
absl::StatusOr<std::string> TotpCode(const TotpSecret& secret, absl::Time now,
                                     const TotpParams& params);

// Key URI for authenticator apps (Google Authenticator key-uri format):
//   otpauth://totp/Issuer:account?secret=BASE32&issuer=Issuer&algorithm=SHA1&digits=6&period=30
// Issuer and account are percent-encoded (everything outside RFC 3986 "unreserved"; space is %20).
// InvalidArgument for an empty issuer or account, an issuer containing ':' (the label separator;
// apps would split it wrongly), either longer than 256 bytes, or bad params.
absl::StatusOr<std::string> OtpauthUri(std::string_view issuer, std::string_view account,
                                       const TotpSecret& secret, const TotpParams& params = {});

// ---------------------------------------------------------------------------------------------
// Verification

// No code has been accepted yet for this secret: pass this as last_used_step after enrollment.
inline constexpr int64_t kNoTotpStepUsed = -1;

struct TotpVerifierOptions {
  TotpParams params;
  // Clock skew tolerated, in steps either side of the current one: 0 or 1 (the issue's "+/-1 step
  // of clock skew at most").
  int skew_steps = 1;
};

// Checks presented codes against a secret. Stateless and thread-safe; the replay state (the last
// accepted step) belongs to the caller, who must store the step Verify returns before treating the
// user as authenticated. Two concurrent Verify calls with the same last_used_step can both succeed:
// the caller must persist the new step with a compare-and-set (step > stored) to close that race.
class TotpVerifier {
 public:
  using Options = TotpVerifierOptions;

  // InvalidArgument for bad params or skew_steps outside 0..1.
  static absl::StatusOr<TotpVerifier> Create(Options options = {});

  // Accepts `code` if it is the code of the step containing `now` or of one within skew_steps of
  // it, and that step is later than `last_used_step` (replay defence: a code, or an older one, is
  // never accepted twice). Returns the accepted step: the caller's new last_used_step.
  // Errors: InvalidArgument when `code` is not exactly params.digits ASCII digits; Unauthenticated
  // "invalid code" when it matches no step in the window; Unauthenticated "code already used" when
  // it matches only steps <= last_used_step; InvalidArgument when `now` is before the epoch;
  // Internal if liboath fails. Every candidate is computed and compared in constant time.
  absl::StatusOr<int64_t> Verify(const TotpSecret& secret, std::string_view code,
                                 int64_t last_used_step, absl::Time now) const;

  const Options& options() const { return options_; }

 private:
  explicit TotpVerifier(Options options) : options_(options) {}
  Options options_;
};

// ---------------------------------------------------------------------------------------------
// Recovery codes

inline constexpr size_t kDefaultRecoveryCodeCount = 10;
// Each code is 12 characters from a 32-character alphabet (60 bits), shown as "xxxx-xxxx-xxxx".
// The alphabet is Crockford's base32 in lower case (no i, l, o, u); on input 'o' reads as '0' and
// 'i'/'l' as '1', case, dashes and spaces are ignored.
inline constexpr size_t kRecoveryCodeChars = 12;

struct RecoveryCodes {
  std::vector<std::string> codes;   // plaintext "xxxx-xxxx-xxxx"; shown to the user once
  std::vector<std::string> hashes;  // SHA-256 hex of each normalised code, same order; stored
};

// `n` fresh codes from `rng` (n = 0 gives none).
RecoveryCodes GenerateRecoveryCodes(common::Rng& rng, size_t n = kDefaultRecoveryCodeCount);

// The canonical form that is hashed: 12 lower-case alphabet characters, no separators.
// InvalidArgument for anything that does not normalise to that (including input over 64 bytes).
absl::StatusOr<std::string> NormalizeRecoveryCode(std::string_view code);

// Spends a recovery code: on a match its hash is removed from `hashes` (single use) and OK is
// returned; the caller must persist the shortened list. InvalidArgument for a malformed code;
// Unauthenticated "invalid recovery code" when no stored hash matches (also for a code already
// used). `hashes` is unchanged on any error. All hashes are compared, in constant time.
absl::Status ConsumeRecoveryCode(std::string_view code, std::vector<std::string>& hashes);

}  // namespace warden::auth
