// Test fixture shared by the SQLite (unit) and PostgreSQL (integration) store test binaries.
// Each test gets a fresh, migrated store: a new SQLite file in the test temp dir, or a new
// PostgreSQL schema (selected through the connection's search_path) in the database named by
// WARDEN_TEST_PG_URL. Without that variable PostgreSQL tests skip, unless CI=true: then they fail.
#pragma once

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "store/store.h"

namespace warden::store::testing {

class StoreFixture : public ::testing::Test {
 protected:
  // Creates a fresh database for `backend` ("sqlite" or "postgres") and opens store_ on it.
  // May skip (no PostgreSQL configured) or fail; SetUp callers need do nothing else.
  void Open(const std::string& backend);
  void TearDown() override;

  // Opens another Store on the same database (the test's store_ stays open).
  absl::StatusOr<std::unique_ptr<Store>> Reopen() { return OpenStore({url_}); }

  // Runs SQL directly on the test database, bypassing Store (for checks and fault injection).
  void RawExec(const std::string& sql);

  std::string backend_;
  std::string url_;
  std::string pg_schema_;  // postgres only
  std::string sqlite_path_;  // sqlite only
  std::unique_ptr<Store> store_;
};

// The behaviour suite, parameterised by backend name.
class StoreTest : public StoreFixture, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override { Open(GetParam()); }
};

}  // namespace warden::store::testing
