#include "common/master_key.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/encoding.h"

namespace warden::common {
namespace {

std::string TempPath(const std::string& name) {
  std::string dir = ::testing::TempDir() + "master_key_test_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::string p = dir + "/" + name;
  std::filesystem::remove(p);
  return p;
}

TEST(MasterKeyTest, CreatesA0600KeyOnceAndLoadsTheSameBytesLater) {
  SeededRng rng(1);
  std::string path = TempPath("create.key");
  auto first = MasterKey::LoadOrCreate(path, rng);
  ASSERT_TRUE(first.ok()) << first.status();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 32);
  auto second = MasterKey::LoadOrCreate(path, rng);
  ASSERT_TRUE(second.ok());
  // Same key: what one sealed, the other opens.
  auto k1 = first->DeriveKey("totp-seed/v1");
  auto k2 = second->DeriveKey("totp-seed/v1");
  ASSERT_TRUE(k1.ok() && k2.ok());
  auto sealed = k1->Seal("secret", "ctx", rng);
  ASSERT_TRUE(sealed.ok());
  auto opened = k2->Open(*sealed, "ctx");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, "secret");
}

TEST(MasterKeyTest, RefusesAKeyReadableByGroupOrOthers) {
  SeededRng rng(2);
  std::string path = TempPath("open.key");
  ASSERT_TRUE(MasterKey::LoadOrCreate(path, rng).ok());
  for (mode_t mode : {0640, 0604, 0660}) {
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
    auto k = MasterKey::LoadOrCreate(path, rng);
    ASSERT_FALSE(k.ok());
    EXPECT_EQ(k.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(std::string(k.status().message()).find("chmod 600"), std::string::npos);
  }
}

TEST(MasterKeyTest, RefusesAKeyOfTheWrongSize) {
  SeededRng rng(3);
  std::string path = TempPath("short.key");
  {
    std::ofstream f(path);
    f << "too short";
  }
  ::chmod(path.c_str(), 0600);
  auto k = MasterKey::LoadOrCreate(path, rng);
  ASSERT_FALSE(k.ok());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kDataLoss);
}

TEST(AeadKeyTest, TamperingWrongContextOrWrongPurposeFailAuthentication) {
  SeededRng rng(4);
  auto master = MasterKey::FromBytes(std::string(32, 'k'));
  ASSERT_TRUE(master.ok());
  auto key = master->DeriveKey("totp-seed/v1");
  auto other = master->DeriveKey("vault/v1");
  ASSERT_TRUE(key.ok() && other.ok());
  auto sealed = key->Seal("seed bytes", "totp-seed:usr_1", rng);
  ASSERT_TRUE(sealed.ok());
  EXPECT_EQ(sealed->size(), 1 + 12 + 10 + 16u);
  EXPECT_TRUE(key->Open(*sealed, "totp-seed:usr_1").ok());
  // Another user's row: the AAD differs.
  EXPECT_EQ(key->Open(*sealed, "totp-seed:usr_2").status().code(), absl::StatusCode::kDataLoss);
  // Another purpose's key.
  EXPECT_EQ(other->Open(*sealed, "totp-seed:usr_1").status().code(), absl::StatusCode::kDataLoss);
  // Each byte flipped.
  for (size_t i = 0; i < sealed->size(); ++i) {
    std::string t = *sealed;
    t[i] = static_cast<char>(t[i] ^ 1);
    EXPECT_FALSE(key->Open(t, "totp-seed:usr_1").ok()) << i;
  }
  EXPECT_FALSE(key->Open(sealed->substr(0, 20), "totp-seed:usr_1").ok());
  // Two seals of the same plaintext differ (fresh nonce).
  auto again = key->Seal("seed bytes", "totp-seed:usr_1", rng);
  EXPECT_NE(*again, *sealed);
}

// The vault keeps its own key hierarchy under the master key (server/vault_routes.cc): the raw
// derived secret must be the key DeriveKey would build for the same purpose, differ between
// purposes, and differ from the master key itself.
TEST(MasterKeyTest, DeriveSecretIsThePurposeBoundKey) {
  SeededRng rng(5);
  auto master = MasterKey::FromBytes(std::string(32, 'k'));
  ASSERT_TRUE(master.ok());
  auto vault = master->DeriveSecret("vault-kek-wrap/v1");
  auto totp = master->DeriveSecret("totp-seed/v1");
  ASSERT_TRUE(vault.ok() && totp.ok());
  EXPECT_EQ(vault->size(), 32u);
  EXPECT_NE(*vault, *totp);
  EXPECT_NE(*vault, std::string(32, 'k'));
  EXPECT_EQ(*master->DeriveSecret("vault-kek-wrap/v1"), *vault);  // deterministic
  auto sealed = master->DeriveKey("vault-kek-wrap/v1")->Seal("kek", "ctx", rng);
  ASSERT_TRUE(sealed.ok());
  EXPECT_TRUE(AeadKey::FromBytes(*vault)->Open(*sealed, "ctx").ok());
  EXPECT_FALSE(AeadKey::FromBytes(*totp)->Open(*sealed, "ctx").ok());
}

TEST(AeadKeyTest, KeysMustBe32Bytes) {
  EXPECT_FALSE(AeadKey::FromBytes("short").ok());
  EXPECT_FALSE(MasterKey::FromBytes(std::string(31, 'x')).ok());
}


// A fresh directory per test for key files (removed at the end).
class KeyDir {
 public:
  KeyDir() {
    static int n = 0;
    path_ = ::testing::TempDir() + "master_key_file_" + std::to_string(::getpid()) + "_" +
            std::to_string(n++);
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~KeyDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, const std::string& data, mode_t mode) {
  std::filesystem::remove(path);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ::close(fd);
  ::chmod(path.c_str(), mode);
}

TEST(MasterKeyFileTest, ReadsRawAndHexKeyFilesWithMode0600) {
  KeyDir dir;
  std::string raw(32, 'k');
  WriteFile(dir.path() + "/raw.key", raw, 0600);
  auto a = MasterKey::FromFile(dir.path() + "/raw.key");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*a->DeriveSecret("t"), *MasterKey::FromBytes(raw)->DeriveSecret("t"));
  WriteFile(dir.path() + "/hex.key", common::HexEncode(raw) + "\n", 0400);
  auto b = MasterKey::FromFile(dir.path() + "/hex.key");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*b->DeriveSecret("t"), *MasterKey::FromBytes(raw)->DeriveSecret("t"));
}

TEST(MasterKeyFileTest, RefusesKeyFileReadableByGroupOrOthers) {
  KeyDir dir;
  std::string path = dir.path() + "/master.key";
  for (mode_t mode : {0644, 0640, 0604, 0660, 0602}) {
    WriteFile(path, std::string(32, 'k'), mode);
    auto k = MasterKey::FromFile(path);
    ASSERT_FALSE(k.ok()) << "mode " << mode;
    EXPECT_EQ(k.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(std::string(k.status().message()).find("chmod 600"), std::string::npos) << k.status();
  }
  WriteFile(path, std::string(32, 'k'), 0644);
  auto k = MasterKey::FromFile(path);
  EXPECT_NE(std::string(k.status().message()).find("has mode 0644"), std::string::npos);
}

TEST(MasterKeyFileTest, RefusesSymlinkAndWrongLength) {
  KeyDir dir;
  WriteFile(dir.path() + "/real.key", std::string(32, 'k'), 0600);
  ASSERT_EQ(::symlink((dir.path() + "/real.key").c_str(), (dir.path() + "/link.key").c_str()), 0);
  EXPECT_FALSE(MasterKey::FromFile(dir.path() + "/link.key").ok());
  WriteFile(dir.path() + "/short.key", std::string(31, 'k'), 0600);
  EXPECT_FALSE(MasterKey::FromFile(dir.path() + "/short.key").ok());
}

TEST(MasterKeyFileTest, ReadsKeyFromExternalCommand) {
  std::string hex = common::HexEncode(std::string(32, '\x5a'));
  auto k = MasterKey::FromCommand({"/bin/sh", "-c", "echo " + hex});
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(*k->DeriveSecret("t"), *MasterKey::FromBytes(std::string(32, '\x5a'))->DeriveSecret("t"));
  EXPECT_FALSE(MasterKey::FromCommand({"/bin/sh", "-c", "echo nothex"}).ok());
  EXPECT_FALSE(MasterKey::FromCommand({"/bin/sh", "-c", "echo " + hex + "; exit 3"}).ok());
  auto missing = MasterKey::FromCommand({"/nonexistent/kms-unseal"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find("/nonexistent/kms-unseal failed"),
            std::string::npos)
      << missing.status();
  auto slow = MasterKey::FromCommand({"/bin/sh", "-c", "sleep 5"}, 200);
  ASSERT_FALSE(slow.ok());
  EXPECT_NE(std::string(slow.status().message()).find("did not finish"), std::string::npos);
}

}  // namespace
}  // namespace warden::common
