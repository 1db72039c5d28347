// TOTP and recovery codes: RFC 6238 Appendix B vectors, cross-checks against the real `oathtool`
// CLI, the skew window, replay refusal, otpauth URIs, base32 and recovery-code single use.
#include "auth/totp.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <ostream>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/encoding.h"
#include "common/rng.h"
#include "common/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace warden::auth {
namespace {

using common::StrCat;

absl::Time At(int64_t unix_seconds) { return absl::FromUnixSeconds(unix_seconds); }

TotpParams Params(TotpAlgorithm algorithm, int digits = 6) {
  TotpParams p;
  p.algorithm = algorithm;
  p.digits = digits;
  return p;
}

TotpVerifier MakeVerifier(TotpParams params = {}, int skew = 1) {
  TotpVerifierOptions options;
  options.params = params;
  options.skew_steps = skew;
  absl::StatusOr<TotpVerifier> v = TotpVerifier::Create(options);
  EXPECT_TRUE(v.ok()) << v.status();
  return *v;
}

// ---------------------------------------------------------------------------------------------
// Base32

TEST(Base32Test, EncodesRfc4648Vectors) {
  EXPECT_EQ(Base32Encode(""), "");
  EXPECT_EQ(Base32Encode("f"), "MY");
  EXPECT_EQ(Base32Encode("fo"), "MZXQ");
  EXPECT_EQ(Base32Encode("foo"), "MZXW6");
  EXPECT_EQ(Base32Encode("foob"), "MZXW6YQ");
  EXPECT_EQ(Base32Encode("fooba"), "MZXW6YTB");
  EXPECT_EQ(Base32Encode("foobar"), "MZXW6YTBOI");
}

TEST(Base32Test, RoundTripsRandomBytesOfEveryLength) {
  common::SeededRng rng(7);
  for (size_t n = 0; n < 70; ++n) {
    const std::string bytes = rng.Bytes(n);
    const std::string text = Base32Encode(bytes);
    EXPECT_EQ(text.find('='), std::string::npos);
    std::optional<std::string> back = Base32Decode(text);
    ASSERT_TRUE(back.has_value()) << text;
    EXPECT_EQ(*back, bytes);
  }
}

TEST(Base32Test, DecodesCaseInsensitively) {
  EXPECT_EQ(Base32Decode("mzxw6ytboi"), std::optional<std::string>("foobar"));
  EXPECT_EQ(Base32Decode("MzXw6YtBoI"), std::optional<std::string>("foobar"));
}

TEST(Base32Test, RefusesBadInput) {
  EXPECT_FALSE(Base32Decode("MZXW6YQ=").has_value());  // padding
  EXPECT_FALSE(Base32Decode("MZXW 6YQ").has_value());  // space
  EXPECT_FALSE(Base32Decode("MZXW6YQ1").has_value());  // '1' is not in the alphabet
  EXPECT_FALSE(Base32Decode("MZXW6YQ0").has_value());  // nor '0'
  EXPECT_FALSE(Base32Decode("M").has_value());         // impossible lengths
  EXPECT_FALSE(Base32Decode("MZX").has_value());
  EXPECT_FALSE(Base32Decode("MZXW6Y").has_value());
  EXPECT_FALSE(Base32Decode("MZ").has_value());  // non-zero trailing bits ("MY" is "f")
  EXPECT_FALSE(Base32Decode(std::string("MZ\0W", 4)).has_value());
  EXPECT_FALSE(Base32Decode("MZXW\xC3\xA9").has_value());
}

// ---------------------------------------------------------------------------------------------
// Secrets and parameters

TEST(TotpSecretTest, GeneratesHashSizedKeysFromRng) {
  common::SeededRng rng(1);
  EXPECT_EQ(TotpSecret::Generate(rng).bytes().size(), 20u);
  EXPECT_EQ(TotpSecret::Generate(rng, TotpAlgorithm::kSha256).bytes().size(), 32u);
  EXPECT_EQ(TotpSecret::Generate(rng, TotpAlgorithm::kSha512).bytes().size(), 64u);
  EXPECT_NE(TotpSecret::Generate(rng).bytes(), TotpSecret::Generate(rng).bytes());
}

TEST(TotpSecretTest, Base32RoundTrips) {
  common::SeededRng rng(2);
  const TotpSecret s = TotpSecret::Generate(rng);
  EXPECT_EQ(s.Base32().size(), 32u);
  absl::StatusOr<TotpSecret> back = TotpSecret::FromBase32(s.Base32());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->bytes(), s.bytes());
}

TEST(TotpSecretTest, RefusesShortLongOrMalformedSecrets) {
  EXPECT_EQ(TotpSecret::FromBytes(std::string(15, 'x')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TotpSecret::FromBytes(std::string(129, 'x')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(TotpSecret::FromBytes(std::string(16, 'x')).ok());
  EXPECT_EQ(TotpSecret::FromBase32("not base32!").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TotpSecret::FromBase32("MZXW6YTBOI").status().code(),  // 6 bytes: too short
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TotpSecret::FromBase32(std::string(100'000, 'A')).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TotpParamsTest, RefusesUnsupportedDigitsAndPeriod) {
  EXPECT_TRUE(ValidateTotpParams({}).ok());
  EXPECT_TRUE(ValidateTotpParams(Params(TotpAlgorithm::kSha512, 8)).ok());
  TotpParams p;
  p.digits = 7;
  EXPECT_EQ(ValidateTotpParams(p).code(), absl::StatusCode::kInvalidArgument);
  p.digits = 6;
  p.period_seconds = 60;
  EXPECT_EQ(ValidateTotpParams(p).code(), absl::StatusCode::kInvalidArgument);
  p.period_seconds = 30;
  p.algorithm = static_cast<TotpAlgorithm>(9);
  EXPECT_EQ(ValidateTotpParams(p).code(), absl::StatusCode::kInvalidArgument);
}

TEST(TotpVerifierTest, CreateRefusesBadOptions) {
  TotpVerifierOptions o;
  o.skew_steps = 2;
  EXPECT_EQ(TotpVerifier::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.skew_steps = -1;
  EXPECT_EQ(TotpVerifier::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.skew_steps = 0;
  o.params.digits = 10;
  EXPECT_EQ(TotpVerifier::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// RFC 6238 Appendix B

struct Rfc6238Vector {
  int64_t time;
  const char* sha1;
  const char* sha256;
  const char* sha512;
};

constexpr Rfc6238Vector kRfc6238Vectors[] = {
    {59, "94287082", "46119246", "90693936"},
    {1111111109, "07081804", "68084774", "25091201"},
    {1111111111, "14050471", "67062674", "99943326"},
    {1234567890, "89005924", "91819424", "93441116"},
    {2000000000, "69279037", "90698825", "38618901"},
    {20000000000, "65353130", "77737706", "47863826"},
};

// Appendix B seeds: the ASCII digits "1234567890" repeated to the hash's output size.
TotpSecret RfcSeed(TotpAlgorithm algorithm) {
  const std::string digits = "1234567890123456789012345678901234567890123456789012345678901234";
  size_t n = 20;
  if (algorithm == TotpAlgorithm::kSha256) n = 32;
  if (algorithm == TotpAlgorithm::kSha512) n = 64;
  return *TotpSecret::FromBytes(digits.substr(0, n));
}

const char* Expected(const Rfc6238Vector& v, TotpAlgorithm algorithm) {
  switch (algorithm) {
    case TotpAlgorithm::kSha1:
      return v.sha1;
    case TotpAlgorithm::kSha256:
      return v.sha256;
    case TotpAlgorithm::kSha512:
      return v.sha512;
  }
  return "";
}

class Rfc6238Test : public ::testing::TestWithParam<TotpAlgorithm> {};

TEST_P(Rfc6238Test, GeneratesAppendixBCodes) {
  const TotpAlgorithm algorithm = GetParam();
  const TotpSecret seed = RfcSeed(algorithm);
  for (const Rfc6238Vector& v : kRfc6238Vectors) {
    absl::StatusOr<std::string> code = TotpCode(seed, At(v.time), Params(algorithm, 8));
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_EQ(*code, Expected(v, algorithm)) << "T=" << v.time;
  }
}

TEST_P(Rfc6238Test, VerifierAcceptsAppendixBCodes) {
  const TotpAlgorithm algorithm = GetParam();
  const TotpSecret seed = RfcSeed(algorithm);
  const TotpVerifier verifier = MakeVerifier(Params(algorithm, 8));
  for (const Rfc6238Vector& v : kRfc6238Vectors) {
    absl::StatusOr<int64_t> step =
        verifier.Verify(seed, Expected(v, algorithm), kNoTotpStepUsed, At(v.time));
    ASSERT_TRUE(step.ok()) << step.status() << " T=" << v.time;
    EXPECT_EQ(*step, v.time / 30);
  }
}

INSTANTIATE_TEST_SUITE_P(AllAlgorithms, Rfc6238Test,
                         ::testing::Values(TotpAlgorithm::kSha1, TotpAlgorithm::kSha256,
                                           TotpAlgorithm::kSha512),
                         [](const auto& info) {
                           return std::string(TotpAlgorithmName(info.param));
                         });

// ---------------------------------------------------------------------------------------------
// Cross-check against the real oathtool CLI (Debian package oathtool).

bool OathtoolAvailable() { return std::system("oathtool --version >/dev/null 2>&1") == 0; }

bool RunningInCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

// Runs oathtool and returns its code ("" on failure). The arguments are built from base32 and
// digits only, so nothing needs shell quoting.
std::string Oathtool(const std::string& mode, int digits, const std::string& base32,
                     int64_t unix_time) {
  const std::string cmd =
      StrCat("oathtool ", mode, " -d ", digits, " -b ", base32, " --now=@", unix_time, " 2>&1");
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return "";
  std::string out;
  char buf[128];
  while (fgets(buf, sizeof(buf), pipe) != nullptr) out += buf;
  if (pclose(pipe) != 0) return "";
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

struct OathtoolCase {
  TotpAlgorithm algorithm;
  const char* mode;
  int digits;
};

void PrintTo(const OathtoolCase& c, std::ostream* os) { *os << c.mode << " -d " << c.digits; }

// A missing oathtool fails under CI=true (STYLE.md: the real thing, no skipping in CI) and skips
// elsewhere.
#define WARDEN_REQUIRE_OATHTOOL()                                                  \
  do {                                                                             \
    if (!OathtoolAvailable()) {                                                    \
      if (RunningInCi())                                                           \
        FAIL() << "oathtool not found (apt-get install oathtool); required in CI"; \
      GTEST_SKIP() << "oathtool not installed";                                    \
    }                                                                              \
  } while (0)

class OathtoolCrossCheckTest : public ::testing::TestWithParam<OathtoolCase> {
 protected:
  void SetUp() override { WARDEN_REQUIRE_OATHTOOL(); }
};

TEST_P(OathtoolCrossCheckTest, VerifierAcceptsOathtoolCodes) {
  const OathtoolCase& c = GetParam();
  common::SeededRng rng(42 + static_cast<int>(c.algorithm) * 10 + c.digits);
  const TotpParams params = Params(c.algorithm, c.digits);
  const TotpVerifier verifier = MakeVerifier(params);
  const int64_t times[] = {59, 1111111109, 1700000000, 1750000029, 1750000030, 4102444799};
  for (int64_t t : times) {
    const TotpSecret secret = TotpSecret::Generate(rng, c.algorithm);
    const std::string code = Oathtool(c.mode, c.digits, secret.Base32(), t);
    ASSERT_EQ(code.size(), static_cast<size_t>(c.digits)) << "oathtool said: " << code;
    EXPECT_EQ(*TotpCode(secret, At(t), params), code) << "T=" << t;
    absl::StatusOr<int64_t> step = verifier.Verify(secret, code, kNoTotpStepUsed, At(t));
    ASSERT_TRUE(step.ok()) << step.status() << " T=" << t;
    EXPECT_EQ(*step, t / 30);
    // The same oathtool code is then a replay.
    EXPECT_EQ(verifier.Verify(secret, code, *step, At(t)).status().message(), "code already used");
  }
}

TEST(OathtoolAppendixBTest, OathtoolAgreesWithAppendixBVectors) {
  WARDEN_REQUIRE_OATHTOOL();
  const std::pair<TotpAlgorithm, const char*> modes[] = {{TotpAlgorithm::kSha1, "--totp"},
                                                         {TotpAlgorithm::kSha256, "--totp=sha256"},
                                                         {TotpAlgorithm::kSha512, "--totp=sha512"}};
  for (const auto& [algorithm, mode] : modes) {
    const TotpSecret seed = RfcSeed(algorithm);
    for (const Rfc6238Vector& v : kRfc6238Vectors) {
      EXPECT_EQ(Oathtool(mode, 8, seed.Base32(), v.time), Expected(v, algorithm))
          << mode << " T=" << v.time;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllAlgorithms, OathtoolCrossCheckTest,
                         ::testing::Values(OathtoolCase{TotpAlgorithm::kSha1, "--totp", 6},
                                           OathtoolCase{TotpAlgorithm::kSha1, "--totp", 8},
                                           OathtoolCase{TotpAlgorithm::kSha256, "--totp=sha256", 6},
                                           OathtoolCase{TotpAlgorithm::kSha256, "--totp=sha256", 8},
                                           OathtoolCase{TotpAlgorithm::kSha512, "--totp=sha512", 6},
                                           OathtoolCase{TotpAlgorithm::kSha512, "--totp=sha512",
                                                        8}),
                         [](const auto& info) {
                           return StrCat(std::string(TotpAlgorithmName(info.param.algorithm)), "_",
                                         info.param.digits, "digits");
                         });

// ---------------------------------------------------------------------------------------------
// Window, format and replay

class TotpVerifyTest : public ::testing::Test {
 protected:
  static constexpr int64_t kNow = 1'750'000'015;  // mid-step
  static constexpr int64_t kStep = kNow / 30;
  common::SeededRng rng_{3};
  TotpSecret secret_ = TotpSecret::Generate(rng_);
  TotpVerifier verifier_ = MakeVerifier();

  std::string CodeAt(int64_t step) { return *TotpCodeAtStep(secret_, step, TotpParams{}); }
};

TEST_F(TotpVerifyTest, AcceptsOneStepOfSkewEitherSide) {
  for (int64_t d : {-1, 0, 1}) {
    absl::StatusOr<int64_t> step =
        verifier_.Verify(secret_, CodeAt(kStep + d), kNoTotpStepUsed, At(kNow));
    ASSERT_TRUE(step.ok()) << step.status() << " d=" << d;
    EXPECT_EQ(*step, kStep + d);
  }
}

TEST_F(TotpVerifyTest, RefusesTwoStepsOfSkew) {
  for (int64_t d : {-2, 2, -3, 3}) {
    absl::StatusOr<int64_t> step =
        verifier_.Verify(secret_, CodeAt(kStep + d), kNoTotpStepUsed, At(kNow));
    EXPECT_EQ(step.status().code(), absl::StatusCode::kUnauthenticated) << "d=" << d;
    EXPECT_EQ(step.status().message(), "invalid code");
  }
}

TEST_F(TotpVerifyTest, ZeroSkewAcceptsOnlyTheCurrentStep) {
  const TotpVerifier strict = MakeVerifier({}, 0);
  EXPECT_TRUE(strict.Verify(secret_, CodeAt(kStep), kNoTotpStepUsed, At(kNow)).ok());
  EXPECT_FALSE(strict.Verify(secret_, CodeAt(kStep - 1), kNoTotpStepUsed, At(kNow)).ok());
  EXPECT_FALSE(strict.Verify(secret_, CodeAt(kStep + 1), kNoTotpStepUsed, At(kNow)).ok());
}

TEST_F(TotpVerifyTest, StepBoundariesFollowTheClock) {
  const int64_t start = kStep * 30;
  // Last second of the previous step: the current step's code is +1 away, still accepted.
  EXPECT_TRUE(verifier_.Verify(secret_, CodeAt(kStep), kNoTotpStepUsed, At(start - 1)).ok());
  // First second of step+2: kStep is 2 away.
  EXPECT_FALSE(verifier_.Verify(secret_, CodeAt(kStep), kNoTotpStepUsed, At(start + 60)).ok());
}

TEST_F(TotpVerifyTest, RefusesWrongCode) {
  std::string code = CodeAt(kStep);
  code[0] = code[0] == '9' ? '0' : static_cast<char>(code[0] + 1);
  absl::StatusOr<int64_t> step = verifier_.Verify(secret_, code, kNoTotpStepUsed, At(kNow));
  EXPECT_EQ(step.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(step.status().message(), "invalid code");
  // Another account's code is wrong for this one.
  const TotpSecret other = TotpSecret::Generate(rng_);
  EXPECT_EQ(
      verifier_
          .Verify(secret_, *TotpCodeAtStep(other, kStep, TotpParams{}), kNoTotpStepUsed, At(kNow))
          .status()
          .message(),
      "invalid code");
}

TEST_F(TotpVerifyTest, RefusesMalformedCodesAsInvalidArgument) {
  const std::string good = CodeAt(kStep);
  for (const std::string& bad :
       {std::string(""), good.substr(0, 5), good + "0", std::string("12345a"),
        std::string(" 12345"), std::string("12 345"), std::string("-12345"), std::string("+12345"),
        std::string("１２３４５６"),
        std::string("123\0"
                    "56",
                    6),
        std::string(10'000, '1')}) {
    EXPECT_EQ(verifier_.Verify(secret_, bad, kNoTotpStepUsed, At(kNow)).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad.size();
  }
  // An 8-digit verifier refuses 6-digit codes.
  const TotpVerifier eight = MakeVerifier(Params(TotpAlgorithm::kSha1, 8));
  EXPECT_EQ(eight.Verify(secret_, good, kNoTotpStepUsed, At(kNow)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TotpVerifyTest, RefusesReplayOfAcceptedCode) {
  const std::string code = CodeAt(kStep);
  absl::StatusOr<int64_t> first = verifier_.Verify(secret_, code, kNoTotpStepUsed, At(kNow));
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<int64_t> again = verifier_.Verify(secret_, code, *first, At(kNow));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(again.status().message(), "code already used");
  // Still refused 29 s later while the code remains inside the window.
  EXPECT_EQ(verifier_.Verify(secret_, code, *first, At(kNow + 29)).status().message(),
            "code already used");
}

TEST_F(TotpVerifyTest, RefusesOlderCodeAfterNewerWasAccepted) {
  absl::StatusOr<int64_t> first =
      verifier_.Verify(secret_, CodeAt(kStep + 1), kNoTotpStepUsed, At(kNow));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, kStep + 1);
  for (int64_t d : {-1, 0, 1}) {
    EXPECT_EQ(verifier_.Verify(secret_, CodeAt(kStep + d), *first, At(kNow)).status().message(),
              "code already used")
        << d;
  }
}

TEST_F(TotpVerifyTest, AcceptsNextStepAfterPreviousWasUsed) {
  absl::StatusOr<int64_t> first =
      verifier_.Verify(secret_, CodeAt(kStep), kNoTotpStepUsed, At(kNow));
  ASSERT_TRUE(first.ok());
  absl::StatusOr<int64_t> second =
      verifier_.Verify(secret_, CodeAt(kStep + 1), *first, At(kNow + 30));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(*second, kStep + 1);
}

TEST_F(TotpVerifyTest, RefusesTimeBeforeEpoch) {
  EXPECT_EQ(verifier_.Verify(secret_, "123456", kNoTotpStepUsed, At(-100)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TotpVerifyTest, AtEpochOnlyNonNegativeStepsAreCandidates) {
  EXPECT_TRUE(verifier_.Verify(secret_, CodeAt(0), kNoTotpStepUsed, At(0)).ok());
  EXPECT_TRUE(verifier_.Verify(secret_, CodeAt(1), kNoTotpStepUsed, At(0)).ok());
}

// ---------------------------------------------------------------------------------------------
// otpauth URI

TEST(OtpauthUriTest, FormatsDefaultParameters) {
  const TotpSecret secret = *TotpSecret::FromBytes("12345678901234567890");
  absl::StatusOr<std::string> uri = OtpauthUri("gpuwarden", "alice", secret);
  ASSERT_TRUE(uri.ok()) << uri.status();
  EXPECT_EQ(*uri,
            "otpauth://totp/gpuwarden:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
            "&issuer=gpuwarden&algorithm=SHA1&digits=6&period=30");
}

TEST(OtpauthUriTest, FormatsSha512EightDigits) {
  const TotpSecret secret = *TotpSecret::FromBytes("12345678901234567890");
  absl::StatusOr<std::string> uri =
      OtpauthUri("gpuwarden", "bob", secret, Params(TotpAlgorithm::kSha512, 8));
  ASSERT_TRUE(uri.ok());
  EXPECT_THAT(*uri, ::testing::HasSubstr("&algorithm=SHA512&digits=8&period=30"));
  EXPECT_THAT(*uri, ::testing::HasSubstr("&algorithm=SHA512"));
  EXPECT_THAT(OtpauthUri("i", "a", secret, Params(TotpAlgorithm::kSha256)).value(),
              ::testing::HasSubstr("&algorithm=SHA256&digits=6"));
}

TEST(OtpauthUriTest, PercentEncodesIssuerAndAccount) {
  const TotpSecret secret = *TotpSecret::FromBytes("12345678901234567890");
  absl::StatusOr<std::string> uri =
      OtpauthUri("ACME Corp & Sons/GPU", "alice@example.com?x=1#frag:%", secret);
  ASSERT_TRUE(uri.ok()) << uri.status();
  EXPECT_EQ(*uri,
            "otpauth://totp/ACME%20Corp%20%26%20Sons%2FGPU:alice%40example.com%3Fx%3D1%23frag%3A%25"
            "?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=ACME%20Corp%20%26%20Sons%2FGPU"
            "&algorithm=SHA1&digits=6&period=30");
  // UTF-8 bytes are encoded one by one; unreserved punctuation is left alone.
  EXPECT_THAT(OtpauthUri("Zürich-Lab_1.0~", "josé", secret).value(),
              ::testing::StartsWith("otpauth://totp/Z%C3%BCrich-Lab_1.0~:jos%C3%A9?"));
}

TEST(OtpauthUriTest, RefusesBadIssuerOrAccount) {
  const TotpSecret secret = *TotpSecret::FromBytes("12345678901234567890");
  EXPECT_EQ(OtpauthUri("", "alice", secret).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OtpauthUri("gpuwarden", "", secret).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OtpauthUri("evil:issuer", "alice", secret).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OtpauthUri(std::string(257, 'a'), "alice", secret).status().code(),
            absl::StatusCode::kInvalidArgument);
  TotpParams p;
  p.digits = 7;
  EXPECT_EQ(OtpauthUri("gpuwarden", "alice", secret, p).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Recovery codes

TEST(RecoveryCodesTest, GeneratesTenDistinctWellFormedCodes) {
  common::SeededRng rng(5);
  const RecoveryCodes rc = GenerateRecoveryCodes(rng);
  ASSERT_EQ(rc.codes.size(), 10u);
  ASSERT_EQ(rc.hashes.size(), 10u);
  const std::regex shape("[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}");
  std::set<std::string> distinct;
  for (size_t i = 0; i < rc.codes.size(); ++i) {
    EXPECT_TRUE(std::regex_match(rc.codes[i], shape)) << rc.codes[i];
    std::string normal = rc.codes[i];
    std::erase(normal, '-');
    EXPECT_EQ(rc.hashes[i], common::Sha256Hex(normal));
    distinct.insert(rc.codes[i]);
  }
  EXPECT_EQ(distinct.size(), 10u);
  EXPECT_EQ(GenerateRecoveryCodes(rng, 3).codes.size(), 3u);
  EXPECT_TRUE(GenerateRecoveryCodes(rng, 0).codes.empty());
}

TEST(RecoveryCodesTest, EachCodeWorksOnceThenIsRefused) {
  common::SeededRng rng(6);
  const RecoveryCodes rc = GenerateRecoveryCodes(rng);
  std::vector<std::string> hashes = rc.hashes;
  for (size_t i = 0; i < rc.codes.size(); ++i) {
    ASSERT_TRUE(ConsumeRecoveryCode(rc.codes[i], hashes).ok()) << rc.codes[i];
    EXPECT_EQ(hashes.size(), rc.codes.size() - i - 1);
    const absl::Status again = ConsumeRecoveryCode(rc.codes[i], hashes);
    EXPECT_EQ(again.code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(std::string(again.message()), "invalid recovery code");
  }
  EXPECT_TRUE(hashes.empty());
}

TEST(RecoveryCodesTest, NormalisesCaseDashesSpacesAndLookAlikes) {
  common::SeededRng rng(8);
  const RecoveryCodes rc = GenerateRecoveryCodes(rng, 4);
  std::vector<std::string> hashes = rc.hashes;
  std::string upper = rc.codes[0];
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_TRUE(ConsumeRecoveryCode(upper, hashes).ok());
  std::string spaced = rc.codes[1];
  std::replace(spaced.begin(), spaced.end(), '-', ' ');
  EXPECT_TRUE(ConsumeRecoveryCode(StrCat(" ", spaced, " "), hashes).ok());
  std::string bare = rc.codes[2];
  std::erase(bare, '-');
  EXPECT_TRUE(ConsumeRecoveryCode(bare, hashes).ok());
  EXPECT_EQ(hashes.size(), 1u);

  // 'O' reads as '0', 'I' and 'L' as '1'.
  EXPECT_EQ(NormalizeRecoveryCode("OIL0-abcd-EFGH").value(), "0110abcdefgh");
  std::vector<std::string> mine = {common::Sha256Hex("0110abcdefgh")};
  EXPECT_TRUE(ConsumeRecoveryCode("oil0-ABCD-efgh", mine).ok());
  EXPECT_TRUE(mine.empty());
}

TEST(RecoveryCodesTest, RefusesMalformedCodesAndLeavesHashesUnchanged) {
  common::SeededRng rng(9);
  const RecoveryCodes rc = GenerateRecoveryCodes(rng, 3);
  std::vector<std::string> hashes = rc.hashes;
  for (const std::string& bad :
       {std::string(""), std::string("abcd-efgh"), std::string("abcd-efgh-jkmn-p"),
        std::string("abcd-efgh-jkmu"), std::string("abcd_efgh_jkmn"), std::string(65, 'a'),
        std::string("abcd-efgh-jk\0n", 14)}) {
    EXPECT_EQ(ConsumeRecoveryCode(bad, hashes).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ConsumeRecoveryCode("zzzz-zzzz-zzzz", hashes).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(hashes, rc.hashes);
}

}  // namespace
}  // namespace warden::auth
