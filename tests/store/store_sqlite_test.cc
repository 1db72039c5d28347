// The store suite on SQLite, plus what only the SQLite file and URL handling can show.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/sql_db.h"
#include "store_fixture.h"

namespace warden::store::testing {
namespace {

using common::StrCat;
using ::testing::HasSubstr;
using ::testing::Not;

INSTANTIATE_TEST_SUITE_P(Sqlite, StoreTest, ::testing::Values("sqlite"));

std::string TempPath(const std::string& name) {
  std::string path = StrCat(::testing::TempDir(), "warden_store_", getpid(), "_", name);
  std::filesystem::remove(path);
  std::filesystem::remove(path + "-wal");
  std::filesystem::remove(path + "-shm");
  return path;
}

TEST(OpenStoreTest, RejectsUnknownSchemeNamingTheAcceptedOnesWithoutEchoingSecrets) {
  auto s = OpenStore({"mysql://root:hunter2@db/warden"});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  std::string msg(s.status().message());
  EXPECT_THAT(msg, HasSubstr("\"mysql\""));
  EXPECT_THAT(msg, HasSubstr("sqlite:///"));
  EXPECT_THAT(msg, HasSubstr("postgres://"));
  EXPECT_THAT(msg, Not(HasSubstr("hunter2")));
  EXPECT_EQ(OpenStore({"/var/lib/state.db"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenStore({""}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenStore({"sqlite://"}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(OpenStoreTest, UnreachablePostgresIsUnavailable) {
  auto s = OpenStore({"postgres://postgres:secret@127.0.0.1:1/warden?connect_timeout=2"});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable) << s.status();
  EXPECT_THAT(std::string(s.status().message()), Not(HasSubstr("secret")));
}

TEST(OpenStoreTest, UnopenableSqlitePathIsUnavailable) {
  auto s = OpenStore({"sqlite:///nonexistent-dir-for-warden-test/state.db"});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable) << s.status();
}

TEST(OpenStoreTest, CorruptSqliteFileIsDataLoss) {
  std::string path = TempPath("corrupt.db");
  {
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < 512; ++i) out << "this is not a database ";
  }
  auto s = OpenStore({StrCat("sqlite://", path)});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  std::filesystem::remove(path);
}

TEST(OpenStoreTest, DatabaseFromNewerBinaryIsFailedPrecondition) {
  std::string path = TempPath("newer.db");
  ASSERT_TRUE(OpenStore({StrCat("sqlite://", path)}).ok());
  {
    auto db = internal::OpenSqliteDb(path);
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE((*db)->Exec("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                            {int64_t{999}, int64_t{1}})
                    .ok());
  }
  auto s = OpenStore({StrCat("sqlite://", path)});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition) << s.status();
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("999"));
  std::filesystem::remove(path);
}

TEST(OpenStoreTest, SqliteUsesWalAndForeignKeys) {
  std::string path = TempPath("pragmas.db");
  ASSERT_TRUE(OpenStore({StrCat("sqlite://", path)}).ok());
  auto db = internal::OpenSqliteDb(path);
  ASSERT_TRUE(db.ok());
  auto mode = (*db)->Query("PRAGMA journal_mode");
  ASSERT_TRUE(mode.ok());
  EXPECT_EQ((*mode)[0].String(0), "wal");
  auto fk = (*db)->Query("PRAGMA foreign_keys");
  ASSERT_TRUE(fk.ok());
  EXPECT_EQ((*fk)[0].String(0), "1");
  std::filesystem::remove(path);
  std::filesystem::remove(path + "-wal");
  std::filesystem::remove(path + "-shm");
}

TEST(SqlDbTest, RewritesPlaceholdersOutsideLiteralsIdentifiersAndComments) {
  EXPECT_EQ(internal::RewritePlaceholders("SELECT a FROM t WHERE b = ? AND c = ?"),
            "SELECT a FROM t WHERE b = $1 AND c = $2");
  EXPECT_EQ(internal::RewritePlaceholders("SELECT '?', 'it''s ?', \"q?\" FROM t WHERE x = ?"),
            "SELECT '?', 'it''s ?', \"q?\" FROM t WHERE x = $1");
  EXPECT_EQ(internal::RewritePlaceholders("SELECT ? -- why?\n, ?"), "SELECT $1 -- why?\n, $2");
  EXPECT_EQ(internal::RewritePlaceholders("no params"), "no params");
}

TEST(SqlDbTest, ValidateTextAcceptsUtf8AndRejectsNulAndMalformedSequences) {
  EXPECT_TRUE(internal::ValidateText("").ok());
  EXPECT_TRUE(internal::ValidateText("plain ascii").ok());
  EXPECT_TRUE(internal::ValidateText("ünïcødé 日本語 🚀").ok());
  EXPECT_FALSE(internal::ValidateText(std::string("a\0b", 3)).ok());
  EXPECT_FALSE(internal::ValidateText("\xff").ok());
  EXPECT_FALSE(internal::ValidateText("\xc0\x80").ok());          // overlong NUL
  EXPECT_FALSE(internal::ValidateText("\xed\xa0\x80").ok());      // surrogate
  EXPECT_FALSE(internal::ValidateText("\xf4\x90\x80\x80").ok());  // above U+10FFFF
  EXPECT_FALSE(internal::ValidateText("\xe6\x97").ok());          // truncated
}

TEST(SqlDbTest, CommitWithoutBeginIsFailedPrecondition) {
  std::string path = TempPath("nobegin.db");
  auto db = internal::OpenSqliteDb(path);
  ASSERT_TRUE(db.ok());
  EXPECT_EQ((*db)->Commit().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*db)->Rollback().code(), absl::StatusCode::kFailedPrecondition);
  db->reset();
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace warden::store::testing
