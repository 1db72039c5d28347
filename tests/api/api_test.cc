#include "api/api.h"

#include <gtest/gtest.h>

namespace warden::api {
namespace {

std::string Err(const absl::Status& s) { return std::string(s.message()); }

TEST(DecodeTest, LoginAcceptsUserAndPassword) {
  auto r = DecodeLogin(R"({"user":"alice","password":"pw123456"})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->user, "alice");
}

TEST(DecodeTest, EmptyBodyIsAClearError) {
  EXPECT_EQ(Err(DecodeCreateTenant("").status()), "request body is empty; expected JSON");
}

TEST(DecodeTest, DuplicateKeysAreRefused) {
  auto r = DecodeCreateBinding(R"({"user":"bob","role":"viewer","role":"admin"})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(Err(r.status()), "duplicate JSON key \"role\"");
}

TEST(DecodeTest, WrongTypesAndUnknownFieldsAreNamed) {
  EXPECT_EQ(Err(DecodeCreateTenant(R"({"name":["acme"]})").status()),
            "field \"name\": expected string, got array");
  EXPECT_EQ(Err(DecodeCreateTenant(R"({"name":"acme","admin":true})").status()),
            "unknown field \"admin\"");
  EXPECT_EQ(Err(DecodeCreateTenant("[]").status()), "expected a JSON object, got array");
}

TEST(DecodeTest, NamesWithTraversalOrSqlAreRefused) {
  EXPECT_FALSE(DecodeCreateTenant(R"({"name":"../../etc"})").ok());
  EXPECT_FALSE(DecodeCreateUser(R"({"name":"x'; DROP TABLE users;--","password":"12345678"})").ok());
}

TEST(DecodeTest, ShortPasswordIsRefused) {
  EXPECT_EQ(Err(DecodeCreateUser(R"({"name":"bob","password":"short"})").status()),
            "field \"password\" must be at least 8 bytes");
}

TEST(DecodeTest, BindingNeedsExactlyOneSubject) {
  EXPECT_FALSE(DecodeCreateBinding(R"({"role":"viewer"})").ok());
  EXPECT_FALSE(DecodeCreateBinding(R"({"user":"a","token":"t","role":"viewer"})").ok());
  auto r = DecodeCreateBinding(R"({"token":"tok_1","role":"viewer"})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->subject_kind, "token");
}

TEST(DecodeTest, TokenTtlParsesDurations) {
  auto r = DecodeCreateToken(R"({"name":"ci","role":"developer","ttl":"90m"})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ttl, absl::Minutes(90));
  EXPECT_FALSE(DecodeCreateToken(R"({"name":"ci","role":"developer","ttl":"-5m"})").ok());
  EXPECT_FALSE(DecodeCreateToken(R"({"name":"ci","role":"developer","ttl":5})").ok());
}

TEST(DecodeTest, ChangePasswordNeedsBothFieldsAndAnEightByteNewOne) {
  EXPECT_TRUE(DecodeChangePassword(R"({"current_password":"x","new_password":"12345678"})").ok());
  EXPECT_EQ(Err(DecodeChangePassword(R"({"current_password":"x","new_password":"short"})").status()),
            "field \"new_password\" must be at least 8 bytes");
  EXPECT_FALSE(DecodeChangePassword(R"({"new_password":"12345678"})").ok());
  EXPECT_FALSE(DecodeChangePassword(R"({"current_password":1,"new_password":"12345678"})").ok());
}

TEST(DecodeTest, PoolDedicationNeedsItsListAndNothingElse) {
  auto r = DecodePoolDedication(R"({"dedicated_to":["acme","beta"]})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->dedicated_to, (std::vector<std::string>{"acme", "beta"}));
  EXPECT_TRUE(DecodePoolDedication(R"({"dedicated_to":[]})")->dedicated_to.empty());  // general
  EXPECT_EQ(Err(DecodePoolDedication("{}").status()),
            "field \"dedicated_to\": required (tenant names; [] makes the pool general)");
  EXPECT_EQ(Err(DecodePoolDedication(R"({"dedicated":["acme"]})").status()),
            "unknown field \"dedicated\"");
  EXPECT_FALSE(DecodePoolDedication(R"({"dedicated_to":"acme"})").ok());
  EXPECT_FALSE(DecodePoolDedication(R"({"dedicated_to":[1]})").ok());
  EXPECT_FALSE(DecodePoolDedication("").ok());
  std::string many = R"({"dedicated_to":[)";
  for (int i = 0; i < 65; ++i) many += (i ? "," : "") + std::string("\"t") + std::to_string(i) + "\"";
  EXPECT_EQ(Err(DecodePoolDedication(many + "]}").status()), "field \"dedicated_to\": at most 64 tenants");
}

TEST(DecodeTest, NodePoolIsRequiredAndAlone) {
  EXPECT_EQ(*DecodeNodePool(R"({"pool":"gpu-b"})"), "gpu-b");
  EXPECT_EQ(Err(DecodeNodePool("{}").status()), "field \"pool\": required (the node's new pool)");
  EXPECT_EQ(Err(DecodeNodePool(R"({"pool":"a","labels":{}})").status()), "unknown field \"labels\"");
  EXPECT_FALSE(DecodeNodePool(R"({"pool":1})").ok());
}

TEST(DecodeTest, RoleNeedsPermissions) {
  EXPECT_FALSE(DecodeCreateRole(R"({"name":"r","permissions":[]})").ok());
  EXPECT_FALSE(DecodeCreateRole(R"({"name":"r","permissions":[1]})").ok());
  EXPECT_TRUE(DecodeCreateRole(R"({"name":"r","permissions":["jobs:read"]})").ok());
}

}  // namespace
}  // namespace warden::api

namespace warden::api {
namespace {

TEST(DecodeMfaTest, LoginTakesAnOptionalSecondFactor) {
  auto r = DecodeLogin(R"({"user":"alice","password":"pw123456","otp":" 123456 "})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->otp, "123456");
  EXPECT_TRUE(DecodeLogin(R"({"user":"alice","password":"pw123456"})")->otp.empty());
  EXPECT_FALSE(DecodeLogin(R"({"user":"alice","password":"pw123456","otp":""})").ok());
  EXPECT_FALSE(DecodeLogin(R"({"user":"alice","password":"pw123456","otp":12})").ok());
}

TEST(DecodeMfaTest, CodesAreDigitsOrRecoveryCodesOnly) {
  EXPECT_EQ(*ParseOtp("h", "12345678"), "12345678");
  EXPECT_EQ(*ParseOtp("h", "abcd-efgh-jkmn"), "abcd-efgh-jkmn");
  for (std::string_view bad : {"", "   ", "12345", "1234567", "123456789", "12 34;56", "abc\ndef",
                               "abcd_efgh", "\xc3\xa9\xc3\xa9\xc3\xa9"}) {
    auto r = ParseOtp("X-Warden-OTP", bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_NE(std::string(r.status().message()).find("X-Warden-OTP"), std::string::npos);
  }
  EXPECT_FALSE(ParseOtp("h", std::string(65, 'a')).ok());
  EXPECT_EQ(DecodeMfaCode(R"({"code":"654321"})")->code, "654321");
  EXPECT_FALSE(DecodeMfaCode(R"({"code":"654321","extra":1})").ok());
  EXPECT_FALSE(DecodeMfaCode(R"({})").ok());
}

}  // namespace
}  // namespace warden::api
