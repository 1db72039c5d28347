// MFA through the Authenticator (real SQLite store, FakeClock, seeded Rng) and the LoginThrottle.
// Each test names the attack it would let through if the defence were removed.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <set>

#include "auth/auth.h"
#include "auth/login_throttle.h"
#include "auth/totp.h"
#include "common/master_key.h"
#include "common/metrics.h"

namespace warden::auth {
namespace {

class MfaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "mfa_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    auto s = store::OpenStore({"sqlite://" + dir_ + "/state.db"});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
    auto master = common::MasterKey::FromBytes(std::string(32, 'm'));
    key_ = std::make_unique<common::AeadKey>(*master->DeriveKey("totp-seed/v1"));
    auth_ = Make(key_.get());
    auto hash = auth_->HashNewPassword("alice-password");
    ASSERT_TRUE(store_->CreateUser({.id = "usr_alice", .name = "alice", .tenant_id = "",
                                    .password_hash = *hash, .disabled = false, .created_at = 1})
                    .ok());
  }
  void TearDown() override {
    auth_.reset();
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::unique_ptr<Authenticator> Make(const common::AeadKey* key, LoginGate* gate = nullptr) {
    AuthenticatorOptions o;
    o.hasher.memory_kib = 1024;
    o.hasher.iterations = 1;
    o.totp_key = key;
    o.login_gate = gate;
    auto a = Authenticator::Create(*store_, clock_, rng_, o);
    EXPECT_TRUE(a.ok()) << a.status();
    return *std::move(a);
  }

  absl::StatusOr<LoginResult> Login(const std::string& otp = "", const std::string& pw = "alice-password",
                                    const std::string& src = "192.0.2.1:5000") {
    return auth_->Login(LoginAttempt{"alice", pw, otp, src});
  }
  Identity Session(const std::string& token) {
    auto id = auth_->Authenticate(token);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.value_or(Identity{});
  }
  std::string Code(const TotpSecret& s, absl::Duration offset = absl::ZeroDuration()) {
    return *TotpCode(s, clock_.Now() + offset, TotpParams{});
  }
  // Enrolls and confirms alice; returns the seed and the recovery codes; token_ is the new session.
  TotpSecret EnableMfa(std::vector<std::string>* recovery = nullptr) {
    auto login = Login();
    EXPECT_TRUE(login.ok()) << login.status();
    Identity who = Session(login->token);
    auto e = auth_->MfaEnroll(who);
    EXPECT_TRUE(e.ok()) << e.status();
    TotpSecret secret = *TotpSecret::FromBase32(e->secret_base32);
    auto c = auth_->MfaConfirm(who, Code(secret), "192.0.2.1:5000");
    EXPECT_TRUE(c.ok()) << c.status();
    if (recovery) *recovery = c->recovery_codes;
    token_ = c->session.token;
    clock_.Advance(absl::Seconds(30));  // the confirming code's step is spent
    return secret;
  }
  static std::string Msg(const absl::Status& s) { return std::string(s.message()); }

  std::string dir_;
  std::unique_ptr<store::Store> store_;
  common::FakeClock clock_;
  common::SeededRng rng_{7};
  std::unique_ptr<common::AeadKey> key_;
  std::unique_ptr<Authenticator> auth_;
  std::string token_;
};

TEST_F(MfaTest, EnrollmentGivesAUriAndNeedsConfirmationBeforeLoginAsksForCodes) {
  auto login = Login();
  ASSERT_TRUE(login.ok());
  Identity who = Session(login->token);
  EXPECT_FALSE(who.mfa);
  auto e = auth_->MfaEnroll(who);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->otpauth_uri.starts_with("otpauth://totp/gpuwarden:alice?secret=" + e->secret_base32));
  EXPECT_EQ(e->secret_base32.size(), 32u);  // 160 bits
  // Pending: the password alone still logs in.
  EXPECT_TRUE(Login().ok());
  EXPECT_FALSE(auth_->GetMfaState("usr_alice")->confirmed);
  TotpSecret secret = *TotpSecret::FromBase32(e->secret_base32);
  EXPECT_EQ(Msg(auth_->MfaConfirm(who, "000000", "x").status()), "invalid MFA code");
  auto c = auth_->MfaConfirm(who, Code(secret), "192.0.2.1:5000");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->recovery_codes.size(), 10u);
  // The confirming session was replaced: the old id is dead, the new one carries MFA.
  EXPECT_FALSE(auth_->Authenticate(login->token).ok());
  Identity now = Session(c->session.token);
  EXPECT_TRUE(now.mfa);
  EXPECT_EQ(now.mfa_at, clock_.NowUnix());
  MfaState st = *auth_->GetMfaState("usr_alice");
  EXPECT_TRUE(st.confirmed);
  EXPECT_EQ(st.recovery_codes_left, 10);
}

TEST_F(MfaTest, StolenPasswordAloneIsNotEnough) {
  TotpSecret secret = EnableMfa();
  auto r = Login();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Msg(r.status()), kMfaRequiredMessage);
  EXPECT_EQ(Msg(Login("123456").status()), "invalid MFA code");
  EXPECT_EQ(Msg(Login("12345").status()), "invalid MFA code");
  // A wrong password with a right code is the ordinary password failure.
  EXPECT_EQ(Msg(Login(Code(secret), "wrong-password").status()), "invalid user name or password");
  auto ok = Login(Code(secret));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(Session(ok->token).mfa);
}

TEST_F(MfaTest, ACodeIsAcceptedOnceEvenWithinItsWindow) {
  TotpSecret secret = EnableMfa();
  std::string code = Code(secret);
  ASSERT_TRUE(Login(code).ok());
  auto replay = Login(code);
  EXPECT_EQ(replay.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(Msg(replay.status()).starts_with("code already used"));
  // An older code (previous step, inside the skew window) is refused too once a later one was used.
  EXPECT_FALSE(Login(Code(secret, absl::Seconds(-30))).ok());
  clock_.Advance(absl::Seconds(30));
  EXPECT_TRUE(Login(Code(secret)).ok());
}

TEST_F(MfaTest, SkewIsOneStepEitherSideAtMost) {
  TotpSecret secret = EnableMfa();
  clock_.Advance(absl::Seconds(60));  // well past the step that confirmed the enrollment
  EXPECT_FALSE(Login(Code(secret, absl::Seconds(-60))).ok());  // two steps old
  EXPECT_FALSE(Login(Code(secret, absl::Seconds(60))).ok());   // two steps ahead
  EXPECT_TRUE(Login(Code(secret, absl::Seconds(-30))).ok());
  EXPECT_TRUE(Login(Code(secret, absl::Seconds(30))).ok());
}

TEST_F(MfaTest, RecoveryCodesWorkOnceEach) {
  std::vector<std::string> codes;
  EnableMfa(&codes);
  ASSERT_EQ(codes.size(), 10u);
  for (const std::string& c : codes) {
    EXPECT_TRUE(Login(c).ok()) << c;
    EXPECT_EQ(Msg(Login(c).status()), "invalid MFA code") << c;
  }
  EXPECT_EQ(auth_->GetMfaState("usr_alice")->recovery_codes_left, 0);
  EXPECT_FALSE(Login("abcd-efgh-jkmn").ok());
}

TEST_F(MfaTest, AdminResetMakesThePreviousOwnersCodesFail) {
  std::vector<std::string> old_recovery;
  TotpSecret old_secret = EnableMfa(&old_recovery);
  ASSERT_TRUE(auth_->MfaReset("usr_alice").ok());
  EXPECT_FALSE(auth_->Authenticate(token_).ok());  // every session ended
  EXPECT_FALSE(auth_->GetMfaState("usr_alice")->enrolled);
  // The new owner enrolls a new device.
  TotpSecret new_secret = EnableMfa();
  ASSERT_NE(new_secret.bytes(), old_secret.bytes());
  EXPECT_EQ(Msg(Login(Code(old_secret)).status()), "invalid MFA code");
  EXPECT_EQ(Msg(Login(old_recovery[0]).status()), "invalid MFA code");
  EXPECT_TRUE(Login(Code(new_secret)).ok());
}

TEST_F(MfaTest, StepUpReplacesTheSessionAndRecordsWhen) {
  TotpSecret secret = EnableMfa();
  Identity before = Session(token_);
  clock_.Advance(absl::Minutes(20));
  auto up = auth_->StepUp(Session(token_), Code(secret), "192.0.2.1:5000");
  ASSERT_TRUE(up.ok()) << up.status();
  EXPECT_NE(up->token, token_);
  EXPECT_EQ(auth_->Authenticate(token_).status().code(), absl::StatusCode::kUnauthenticated);
  Identity after = Session(up->token);
  EXPECT_EQ(after.mfa_at, clock_.NowUnix());
  EXPECT_EQ(after.expires_at, before.expires_at);  // step-up does not extend the login
  // A wrong code changes nothing.
  EXPECT_FALSE(auth_->StepUp(after, "000000", "x").ok());
  EXPECT_TRUE(auth_->Authenticate(up->token).ok());
}

TEST_F(MfaTest, DisableNeedsACodeAndEndsSessions) {
  std::vector<std::string> recovery;
  EnableMfa(&recovery);
  Identity who = Session(token_);
  EXPECT_EQ(Msg(auth_->MfaDisable(who, "000000", "x")), "invalid MFA code");
  EXPECT_TRUE(auth_->GetMfaState("usr_alice")->confirmed);
  ASSERT_TRUE(auth_->MfaDisable(who, recovery[3], "x").ok());
  EXPECT_FALSE(auth_->GetMfaState("usr_alice")->enrolled);
  EXPECT_FALSE(auth_->Authenticate(token_).ok());
  EXPECT_TRUE(Login().ok());  // password only again
}

TEST_F(MfaTest, SeedIsSealedAndBoundToTheMasterKey) {
  TotpSecret secret = EnableMfa();
  store::UserMfa row = *store_->GetUserMfa("usr_alice");
  EXPECT_EQ(row.sealed_secret.find(secret.Base32()), std::string::npos);
  EXPECT_EQ(row.sealed_secret.find(secret.bytes()), std::string::npos);
  // Another master key cannot open it: the login fails closed with DataLoss, never accepts.
  auto other = common::MasterKey::FromBytes(std::string(32, 'o'))->DeriveKey("totp-seed/v1");
  auto auth_other = Make(&*other);
  auto r = auth_other->Login(LoginAttempt{"alice", "alice-password", Code(secret), "x"});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
}

TEST_F(MfaTest, ApiTokensCannotManageMfa) {
  Identity token_id;
  token_id.kind = Identity::Kind::kApiToken;
  token_id.user_id = "usr_alice";
  EXPECT_EQ(auth_->MfaEnroll(token_id).status().code(), absl::StatusCode::kPermissionDenied);
}

// ---- throttling through the Authenticator ----

TEST_F(MfaTest, PasswordGuessingIsThrottledAndCountedButTheUserLogsInElsewhere) {
  auto throttle = *LoginThrottle::Create(clock_);
  auth_ = Make(key_.get(), throttle.get());
  auto& failures = common::metrics::Registry::Default().AddCounter(
      "warden_login_failures_total", "", {"reason"});
  std::string before = common::metrics::Registry::Default().RenderText();
  // The same 1000 guesses against alice and against a name that does not exist: the answers
  // must be indistinguishable (same counts, same messages).
  auto guess = [&](const std::string& user, const std::string& src, std::set<std::string>& msgs) {
    int checked = 0;
    for (int i = 0; i < 1000; ++i) {
      auto r = auth_->Login(LoginAttempt{user, "guess-" + std::to_string(i), "", src});
      EXPECT_FALSE(r.ok());
      if (r.status().code() != absl::StatusCode::kResourceExhausted) ++checked;
      msgs.insert(Msg(r.status()).substr(0, 30));
      clock_.Advance(absl::Milliseconds(10));  // 10 s of guessing in all
    }
    return checked;
  };
  std::set<std::string> alice_msgs, ghost_msgs;
  int checked = guess("alice", "203.0.113.9:4000", alice_msgs);
  EXPECT_LE(checked, 12);  // 5 free, then back-off 1, 2, 4 s ...
  // The real user, from another address, at once.
  EXPECT_TRUE(Login("", "alice-password", "198.51.100.7:1234").ok());
  EXPECT_EQ(guess("ghost", "203.0.113.10:4000", ghost_msgs), checked);
  EXPECT_EQ(alice_msgs, ghost_msgs);
  (void)failures;
  std::string after = common::metrics::Registry::Default().RenderText();
  EXPECT_NE(after.find("warden_login_failures_total{reason=\"throttled\"}"), std::string::npos);
  EXPECT_NE(after.find("warden_login_failures_total{reason=\"invalid_credentials\"}"), std::string::npos);
}

TEST_F(MfaTest, CodeGuessingIsThrottledToo) {
  EnableMfa();
  auto throttle = *LoginThrottle::Create(clock_);
  auth_ = Make(key_.get(), throttle.get());
  int throttled = 0;
  for (int i = 0; i < 50; ++i) {
    auto r = Login(std::to_string(100000 + i));
    throttled += r.status().code() == absl::StatusCode::kResourceExhausted;
  }
  EXPECT_GE(throttled, 44);
}

// ---- LoginThrottle alone ----

// Single sign-on's entry point: a session without a password, a new id every time, MFA as the
// IdP asserted it, never for a disabled user.
TEST_F(MfaTest, OpenSessionIssuesAFreshSessionWithoutAPassword) {
  auto a = auth_->OpenSession("usr_alice", /*mfa=*/false);
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = auth_->OpenSession("usr_alice", /*mfa=*/true);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE(a->token, b->token);
  EXPECT_TRUE(a->user.password_hash.empty());
  Identity ida = Session(a->token);
  EXPECT_EQ(ida.user_id, "usr_alice");
  EXPECT_FALSE(ida.mfa);
  EXPECT_EQ(ida.mfa_at, 0);
  Identity idb = Session(b->token);
  EXPECT_TRUE(idb.mfa);
  EXPECT_EQ(idb.mfa_at, clock_.NowUnix());
  EXPECT_EQ(b->expires_at, clock_.NowUnix() + 12 * 3600);
  EXPECT_TRUE(absl::IsNotFound(auth_->OpenSession("usr_nobody", false).status()));
  ASSERT_TRUE(auth_->DisableUser("usr_alice").ok());
  auto refused = auth_->OpenSession("usr_alice", true);
  EXPECT_TRUE(absl::IsUnauthenticated(refused.status())) << refused.status();
  EXPECT_FALSE(auth_->Authenticate(b->token).ok());  // disabling ended the SSO sessions too
}

class LoginThrottleTest : public ::testing::Test {
 protected:
  common::FakeClock clock_;
  std::unique_ptr<LoginThrottle> t_ = *LoginThrottle::Create(clock_);
  void Fail(const std::string& u, const std::string& src, int n = 1) {
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(t_->Admit(u, src).ok()) << i;
      t_->Record(u, src, false);
    }
  }
};

TEST_F(LoginThrottleTest, PairBacksOffExponentially) {
  Fail("bob", "10.0.0.1:1", 5);
  auto r = t_->Admit("bob", "10.0.0.1:2");  // same address, another port
  EXPECT_TRUE(r.ok()) << r;  // the 5th failure is still free: no delay yet
  t_->Record("bob", "10.0.0.1:2", false);  // 6th: 1 s
  EXPECT_EQ(t_->Admit("bob", "10.0.0.1:3").code(), absl::StatusCode::kResourceExhausted);
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(t_->Admit("bob", "10.0.0.1:3").ok());
  // Reserved until Record: a concurrent attempt in the same slot is refused.
  EXPECT_FALSE(t_->Admit("bob", "10.0.0.1:4").ok());
  t_->Record("bob", "10.0.0.1:3", false);  // 7th: 2 s
  clock_.Advance(absl::Seconds(1));
  EXPECT_FALSE(t_->Admit("bob", "10.0.0.1:3").ok());
  clock_.Advance(absl::Seconds(1));
  EXPECT_TRUE(t_->Admit("bob", "10.0.0.1:3").ok());
  // Another source is untouched.
  EXPECT_TRUE(t_->Admit("bob", "10.0.0.2:1").ok());
  // Failures are forgotten after an hour of quiet.
  clock_.Advance(absl::Hours(2));
  EXPECT_TRUE(t_->Admit("bob", "10.0.0.1:3").ok());
}

TEST_F(LoginThrottleTest, OneSourceSprayingManyAccountsIsThrottled) {
  for (int i = 0; i < 20; ++i) Fail("user" + std::to_string(i), "10.9.9.9:1");
  t_->Record("user20", "10.9.9.9:1", false);
  EXPECT_EQ(t_->Admit("fresh-name", "10.9.9.9:1").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(t_->Admit("fresh-name", "10.9.9.10:1").ok());
}

TEST_F(LoginThrottleTest, DistributedGuessingCannotLockOutTheUserFromAKnownAddress) {
  ASSERT_TRUE(t_->Admit("carol", "192.0.2.50:1").ok());
  t_->Record("carol", "192.0.2.50:1", true);  // carol's usual address
  // 150 attacker addresses, one guess each: no pair or source limit trips, the account one does.
  for (int i = 0; i < 150; ++i) {
    std::string src = "198.18.0." + std::to_string(i) + ":1";
    absl::Status s = t_->Admit("carol", src);
    if (s.ok()) t_->Record("carol", src, false);
  }
  EXPECT_EQ(t_->Admit("carol", "198.18.1.1:1").code(), absl::StatusCode::kResourceExhausted);
  // Carol from her known address is not slowed at all...
  EXPECT_TRUE(t_->Admit("carol", "192.0.2.50:1").ok());
  t_->Record("carol", "192.0.2.50:1", true);
  // ...and from a new address waits at most account_max_delay (30 s), never hours.
  clock_.Advance(absl::Seconds(30));
  EXPECT_TRUE(t_->Admit("carol", "203.0.113.77:1").ok());
}

TEST_F(LoginThrottleTest, RefusalMessageIsTheSameForEveryKey) {
  Fail("dave", "10.1.1.1:1", 6);
  absl::Status pair = t_->Admit("dave", "10.1.1.1:1");
  Fail("x", "10.1.1.2:1", 0);
  EXPECT_TRUE(std::string(pair.message()).starts_with("too many failed login attempts; try again in"));
}

TEST_F(LoginThrottleTest, SourceKeyDropsThePortAndGroupsIpv6By64) {
  EXPECT_EQ(LoginThrottle::SourceKey("127.0.0.2:5555"), "127.0.0.2");
  EXPECT_EQ(LoginThrottle::SourceKey("[2001:db8:1:2:3:4:5:6]:443"), "2001:db8:1:2::/64");
  EXPECT_EQ(LoginThrottle::SourceKey("[2001:db8:1:2:ffff::1]:443"), "2001:db8:1:2::/64");
  EXPECT_EQ(LoginThrottle::SourceKey("[::ffff:10.0.0.1]:80"), "10.0.0.1");
  EXPECT_EQ(LoginThrottle::SourceKey("garbage"), "garbage");
}

}  // namespace
}  // namespace warden::auth
