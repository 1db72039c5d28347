// The store suite on a real PostgreSQL (WARDEN_TEST_PG_URL; see tools/pg-start.sh), plus the
// behaviour only a server can show: surviving a dropped connection.
#include "gtest/gtest.h"
#include "store/sql_db.h"
#include "store_fixture.h"

namespace warden::store::testing {
namespace {

INSTANTIATE_TEST_SUITE_P(Postgres, StoreTest, ::testing::Values("postgres"));

class PostgresStoreTest : public StoreFixture {
 protected:
  void SetUp() override { Open("postgres"); }

  // Terminates the store's server connection, as a server restart or failover would.
  void KillStoreConnection() {
    auto admin = internal::OpenPostgresDb(url_);
    ASSERT_TRUE(admin.ok()) << admin.status();
    // The fixture names each test's connection after its schema (application_name).
    auto killed = (*admin)->Query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = ? AND pid <> pg_backend_pid()",
        {pg_schema_});
    ASSERT_TRUE(killed.ok()) << killed.status();
    ASSERT_EQ(killed->size(), 1u) << "the store's connection was not found";
    EXPECT_EQ((*killed)[0].String(0), "t");
  }
};

TEST_F(PostgresStoreTest, ReconnectsOnceAfterTheServerDropsTheConnection) {
  ASSERT_TRUE(store_->CreateTenant({"t1", "acme", 1}).ok());
  KillStoreConnection();
  auto tenant = store_->GetTenant("t1");
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->name, "acme");
  // Writes open a transaction, whose BEGIN is the statement that reconnects.
  KillStoreConnection();
  EXPECT_TRUE(store_->CreateTenant({"t2", "beta", 1}).ok());
  EXPECT_TRUE(store_->GetTenant("t2").ok());
}

TEST_F(PostgresStoreTest, ConnectionLostInsideTransactionIsUnavailableAndRollsBack) {
  absl::Status s = store_->InTransaction([&]() -> absl::Status {
    if (auto st = store_->CreateTenant({"t1", "acme", 1}); !st.ok()) return st;
    KillStoreConnection();
    return store_->CreateTenant({"t2", "beta", 1});
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  // The next call reconnects; nothing of the lost transaction survived.
  EXPECT_EQ(store_->GetTenant("t1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetTenant("t2").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace warden::store::testing
