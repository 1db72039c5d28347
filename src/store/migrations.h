// Versioned schema migrations, the same portable SQL on SQLite and PostgreSQL. Private to store.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "store/sql_db.h"

namespace warden::store::internal {

// Highest schema version this binary knows.
int LatestSchemaVersion();

// Brings the database up to LatestSchemaVersion() in one transaction, recording each applied
// version with `now` in schema_migrations. Idempotent. FailedPrecondition when the database was
// migrated by a newer binary (its schema version is above ours); nothing is changed on failure.
absl::Status Migrate(SqlDb& db, int64_t now);

}  // namespace warden::store::internal
