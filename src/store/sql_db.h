// SqlDb: the private seam between the repository layer (sql_store.cc) and a database driver.
// One SQL dialect is written once, with `?` placeholders; each backend binds parameters (never
// splices them into SQL) and maps driver errors onto canonical codes:
//   unique violation -> AlreadyExists      foreign-key violation -> FailedPrecondition
//   check violation / bad text -> InvalidArgument   connection lost -> Unavailable
//   corrupt database -> DataLoss (sticky: every later call fails the same way)
//
// Thread-safe. A transaction holds the connection for its thread from Begin() to the matching
// Commit()/Rollback(); other threads block until then. Begin() on a thread that already holds a
// transaction opens a savepoint inside it (it joins the outer transaction); Rollback() of such a
// nested level undoes only that level's changes.
//
// Not part of the public interface: only store code and the store tests include it.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace warden::store::internal {

// A bound parameter: SQL NULL, an integer or text.
using Param = std::variant<std::monostate, int64_t, std::string>;
using Params = std::vector<Param>;

// One result row; cells are text (integers rendered in decimal), nullopt for SQL NULL.
class Row {
 public:
  explicit Row(std::vector<std::optional<std::string>> cells) : cells_(std::move(cells)) {}
  size_t size() const { return cells_.size(); }
  bool IsNull(size_t i) const { return !cells_.at(i).has_value(); }
  // Text of column i; "" for NULL.
  std::string String(size_t i) const { return cells_.at(i).value_or(""); }
  // Integer of column i; 0 for NULL; DataLoss when the cell is not a decimal integer.
  absl::StatusOr<int64_t> Int(size_t i) const;

 private:
  std::vector<std::optional<std::string>> cells_;
};
using Rows = std::vector<Row>;

// Maps "" to NULL: the store keeps "no tenant" as NULL so foreign keys apply only to real ids.
inline Param NullIfEmpty(const std::string& s) {
  return s.empty() ? Param{} : Param{s};
}

class SqlDb {
 public:
  virtual ~SqlDb() = default;
  SqlDb(const SqlDb&) = delete;
  SqlDb& operator=(const SqlDb&) = delete;

  // "sqlite" or "postgres".
  virtual std::string Backend() const = 0;

  // Runs one statement; returns the number of rows it changed.
  absl::StatusOr<int64_t> Exec(std::string_view sql, const Params& params = {});
  // Runs one statement; returns its rows.
  absl::StatusOr<Rows> Query(std::string_view sql, const Params& params = {});

  // Transactions; see the class comment for nesting. Every successful Begin() must be matched by
  // exactly one Commit() or Rollback() on the same thread. A failed Commit() leaves nothing to
  // roll back at that level (the level is closed either way).
  absl::Status Begin();
  absl::Status Commit();
  absl::Status Rollback();

  // Serialises schema migration across processes sharing the database. Must be called inside a
  // transaction; the lock is released when that transaction ends.
  virtual absl::Status LockForMigration() = 0;

 protected:
  SqlDb() = default;

  // Driver primitives, called with mu_ held.
  virtual absl::StatusOr<int64_t> DoExec(std::string_view sql, const Params& params) = 0;
  virtual absl::StatusOr<Rows> DoQuery(std::string_view sql, const Params& params) = 0;
  // Opens the outermost transaction (BEGIN, or BEGIN IMMEDIATE on SQLite). Called before the
  // depth is raised, so InTransaction() is still false inside it.
  virtual absl::Status DoBegin() = 0;

  // True while a transaction is open (called with mu_ held, so only the owning thread sees true).
  // Backends must not re-run a statement after a lost connection while this is true.
  bool InTransaction() const { return depth_ > 0; }

 private:
  absl::Status EndLevel(bool commit);

  // Held by a transaction's thread from Begin() until the outermost Commit()/Rollback(); the
  // recursion lets Exec/Query and nested Begin() on that thread re-enter.
  std::recursive_mutex mu_;
  int depth_ = 0;  // guarded by mu_
};

// Opens a SQLite database file (created if missing) in WAL mode with foreign keys on.
absl::StatusOr<std::unique_ptr<SqlDb>> OpenSqliteDb(const std::string& path);
// Connects to PostgreSQL; `conninfo` is passed to libpq unchanged (URL or key=value form).
absl::StatusOr<std::unique_ptr<SqlDb>> OpenPostgresDb(const std::string& conninfo);

// Rewrites `?` placeholders to $1..$n for PostgreSQL, leaving `?` inside '...' literals,
// "..." identifiers and -- comments alone.
std::string RewritePlaceholders(std::string_view sql);

// Validates a text parameter the same way for both backends: no NUL bytes (libpq passes C
// strings, so NUL would silently truncate) and well-formed UTF-8 (PostgreSQL rejects anything
// else; SQLite would store it, and the backends must agree).
absl::Status ValidateText(std::string_view s);

}  // namespace warden::store::internal
