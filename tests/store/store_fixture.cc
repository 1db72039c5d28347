#include "store_fixture.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "common/strings.h"
#include "store/sql_db.h"

namespace warden::store::testing {
namespace {

using common::StrCat;

std::atomic<int> next_db{0};

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// One admin connection per test binary, used to create and drop per-test schemas.
internal::SqlDb* PgAdmin(const std::string& url) {
  static std::unique_ptr<internal::SqlDb> admin = [&]() -> std::unique_ptr<internal::SqlDb> {
    auto db = internal::OpenPostgresDb(url);
    if (!db.ok()) {
      ADD_FAILURE() << "cannot connect to WARDEN_TEST_PG_URL: " << db.status();
      return nullptr;
    }
    return std::move(*db);
  }();
  return admin.get();
}

}  // namespace

void StoreFixture::Open(const std::string& backend) {
  backend_ = backend;
  int n = next_db++;
  if (backend == "sqlite") {
    sqlite_path_ = StrCat(::testing::TempDir(), "warden_store_test_", getpid(), "_", n, ".db");
    std::filesystem::remove(sqlite_path_);
    url_ = StrCat("sqlite://", sqlite_path_);
  } else if (backend == "postgres") {
    std::string base = Env("WARDEN_TEST_PG_URL");
    if (base.empty()) {
      if (Env("CI") == "true") {
        FAIL() << "WARDEN_TEST_PG_URL is not set but CI=true: start PostgreSQL with "
                  "tools/pg-start.sh and export the URL it prints";
      }
      GTEST_SKIP() << "WARDEN_TEST_PG_URL not set; start PostgreSQL with "
                      "`tools/pg-start.sh DIR PORT` and export the URL it prints";
    }
    internal::SqlDb* admin = PgAdmin(base);
    ASSERT_NE(admin, nullptr);
    // Our own name (pid and counter): safe to splice into DDL, which cannot bind identifiers.
    pg_schema_ = StrCat("warden_t_", getpid(), "_", n);
    auto created = admin->Exec(StrCat("CREATE SCHEMA ", pg_schema_));
    ASSERT_TRUE(created.ok()) << created.status();
    url_ = StrCat(base, base.find('?') == std::string::npos ? "?" : "&",
                  "options=-csearch_path%3D", pg_schema_, "&application_name=", pg_schema_);
  } else {
    FAIL() << "unknown backend " << backend;
  }
  auto store = OpenStore({url_});
  ASSERT_TRUE(store.ok()) << store.status();
  store_ = std::move(*store);
}

void StoreFixture::TearDown() {
  store_.reset();
  if (!sqlite_path_.empty()) {
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::filesystem::remove(sqlite_path_ + suffix);
    }
  }
  if (!pg_schema_.empty()) {
    auto dropped = PgAdmin("")->Exec(StrCat("DROP SCHEMA ", pg_schema_, " CASCADE"));
    EXPECT_TRUE(dropped.ok()) << dropped.status();
  }
}

void StoreFixture::RawExec(const std::string& sql) {
  absl::StatusOr<std::unique_ptr<internal::SqlDb>> db;
  if (backend_ == "sqlite") {
    db = internal::OpenSqliteDb(sqlite_path_);
  } else {
    db = internal::OpenPostgresDb(url_);
  }
  ASSERT_TRUE(db.ok()) << db.status();
  auto r = (*db)->Exec(sql);
  ASSERT_TRUE(r.ok()) << r.status();
}

}  // namespace warden::store::testing
