#include "vault/keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "common/encoding.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace warden::vault {
namespace {

using testing::TempDir;


class KeyringTest : public ::testing::Test {
 protected:
  std::unique_ptr<Keyring> Open(const std::string& master = std::string(32, 'm'),
                                uint64_t max_wraps = uint64_t{1} << 31) {
    KeyringOptions o;
    o.dir = dir_.path() + "/keys";
    o.max_wraps_per_version = max_wraps;
    o.wrap_reservation_block = 4;
    auto mk = common::MasterKey::FromBytes(master);
    auto k = Keyring::Open(*mk, o);
    EXPECT_TRUE(k.ok()) << k.status();
    return std::move(*k);
  }
  TempDir dir_;
  std::string dek_ = std::string(32, 'd');
};

TEST_F(KeyringTest, WrapUnwrapRoundTripAcrossRestart) {
  WrappedKey w;
  {
    auto k = Open();
    auto r = k->Wrap("acme", "obj_1|1", dek_);
    ASSERT_TRUE(r.ok()) << r.status();
    w = *r;
    EXPECT_EQ(w.kek_version, 1u);
  }
  auto k = Open();
  auto d = k->Unwrap("acme", "obj_1|1", w);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d, dek_);
}

TEST_F(KeyringTest, WrappedKeyBoundToTenantAndContext) {
  auto k = Open();
  auto w = k->Wrap("acme", "obj_1|1", dek_);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(k->Wrap("other", "obj_1|1", dek_).ok());
  EXPECT_EQ(k->Unwrap("acme", "obj_2|1", *w).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(k->Unwrap("other", "obj_1|1", *w).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(KeyringTest, WrongMasterKeyCannotUnwrap) {
  WrappedKey w;
  {
    auto k = Open();
    w = *k->Wrap("acme", "c", dek_);
  }
  auto k = Open(std::string(32, 'x'));
  EXPECT_EQ(k->Unwrap("acme", "c", w).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(KeyringTest, RotationKeepsOldVersionsReadableUntilMinimumRaised) {
  auto k = Open();
  auto w1 = *k->Wrap("acme", "c", dek_);
  auto v2 = k->Rotate("acme");
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(*v2, 2u);
  auto w2 = *k->Wrap("acme", "c", dek_);
  EXPECT_EQ(w2.kek_version, 2u);
  EXPECT_TRUE(k->Unwrap("acme", "c", w1).ok());
  ASSERT_TRUE(k->SetMinVersion("acme", 2, false).ok());
  auto below = k->Unwrap("acme", "c", w1);
  EXPECT_EQ(below.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(below.status().message()).find("below the minimum"), std::string::npos);
  EXPECT_TRUE(k->Unwrap("acme", "c", w2).ok());
  // Persisted: a restarted keyring enforces it too.
  auto k2 = Open();
  EXPECT_EQ(k2->Unwrap("acme", "c", w1).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(k2->SetMinVersion("acme", 1, false).ok()) << "minimum must not go down";
  EXPECT_FALSE(k2->SetMinVersion("acme", 3, false).ok()) << "above current";
}

TEST_F(KeyringTest, UsageCounterRotatesBeforeLimit) {
  auto k = Open(std::string(32, 'm'), /*max_wraps=*/3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(k->Wrap("acme", "c", dek_)->kek_version, 1u);
  EXPECT_EQ(k->Wrap("acme", "c", dek_)->kek_version, 2u);
  auto st = k->Status("acme");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->current_version, 2u);
  EXPECT_EQ(st->versions[0].wraps, 3u);
}

TEST_F(KeyringTest, CounterSurvivesRestartAsUpperBound) {
  {
    auto k = Open(std::string(32, 'm'), 6);
    ASSERT_TRUE(k->Wrap("acme", "c", dek_).ok());  // reserves a block of 4
  }
  auto k = Open(std::string(32, 'm'), 6);
  auto st = k->Status("acme");
  EXPECT_EQ(st->versions[0].wraps, 4u);  // the whole reserved block counts as used
  EXPECT_EQ(k->Wrap("acme", "c", dek_)->kek_version, 1u);
  EXPECT_EQ(k->Wrap("acme", "c", dek_)->kek_version, 1u);
  EXPECT_EQ(k->Wrap("acme", "c", dek_)->kek_version, 2u);
}

TEST_F(KeyringTest, ShredMakesKeysUnusableForever) {
  auto k = Open();
  auto w = *k->Wrap("acme", "c", dek_);
  ASSERT_TRUE(k->Shred("acme").ok());
  auto r = k->Unwrap("acme", "c", w);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(r.status().message()).find("crypto-shredded"), std::string::npos);
  EXPECT_FALSE(k->Wrap("acme", "c", dek_).ok()) << "no fresh keyring for a shredded tenant";
  struct stat st {};
  EXPECT_NE(::stat((dir_.path() + "/keys/acme.keyring.json").c_str(), &st), 0);
  auto k2 = Open();
  EXPECT_EQ(k2->Unwrap("acme", "c", w).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(k2->Status("acme")->shredded);
}

TEST_F(KeyringTest, RefusesBadTenantNames) {
  auto k = Open();
  EXPECT_EQ(k->Wrap("../etc", "c", dek_).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(k->Wrap("a/b", "c", dek_).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(k->Wrap("", "c", dek_).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace warden::vault
