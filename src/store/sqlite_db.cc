// SQLite backend of SqlDb: one connection, serialised by SqlDb's mutex.
#include <sqlite3.h>

#include <map>
#include <string>

#include "common/strings.h"
#include "store/sql_db.h"

namespace warden::store::internal {
namespace {

using common::StrCat;

class SqliteDb final : public SqlDb {
 public:
  explicit SqliteDb(sqlite3* db) : db_(db) {}
  ~SqliteDb() override {
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }

  std::string Backend() const override { return "sqlite"; }

  absl::Status Configure() {
    // busy_timeout first: another process (a CLI run against the same file) may hold the lock.
    // foreign_keys is per connection and off by default in SQLite.
    // synchronous=FULL: in WAL mode NORMAL may lose the last commits on power failure; a revoked
    // token or disabled user that silently comes back after a crash is a security regression,
    // worth one fsync per commit at control-plane write rates (README.md).
    for (const char* pragma : {"PRAGMA busy_timeout = 5000", "PRAGMA journal_mode = WAL",
                               "PRAGMA synchronous = FULL", "PRAGMA foreign_keys = ON"}) {
      auto rows = DoQuery(pragma, {});
      if (!rows.ok()) return rows.status();
    }
    auto mode = DoQuery("PRAGMA journal_mode", {});
    if (!mode.ok()) return mode.status();
    if (mode->empty() || (*mode)[0].String(0) != "wal") {
      return absl::UnavailableError("sqlite: could not enable WAL journal mode");
    }
    return absl::OkStatus();
  }

  absl::Status LockForMigration() override {
    // BEGIN IMMEDIATE (DoBegin) already holds the database's write lock.
    return absl::OkStatus();
  }

 protected:
  absl::StatusOr<int64_t> DoExec(std::string_view sql, const Params& params) override {
    auto rows = Run(sql, params, /*collect=*/false);
    if (!rows.ok()) return rows.status();
    return sqlite3_changes64(db_);
  }

  absl::StatusOr<Rows> DoQuery(std::string_view sql, const Params& params) override {
    return Run(sql, params, /*collect=*/true);
  }

  absl::Status DoBegin() override {
    // IMMEDIATE takes the write lock up front: a deferred transaction that reads and then writes
    // can fail with SQLITE_BUSY midway when another process wrote in between.
    return DoExec("BEGIN IMMEDIATE", {}).status();
  }

 private:
  // Maps a SQLite result code (extended codes on) to the store's canonical errors.
  absl::Status Error(int rc, std::string_view sql) {
    std::string msg = StrCat("sqlite: ", sqlite3_errmsg(db_));
    switch (rc & 0xFF) {
      case SQLITE_CORRUPT:
      case SQLITE_NOTADB:
        // The file is not what we wrote. Stop every later call (STYLE.md: corruption returns
        // DataLoss and stops writes; it is never repaired silently).
        corrupt_ = true;
        return absl::DataLossError(StrCat(msg, " (database file is corrupt)"));
      case SQLITE_CONSTRAINT:
        switch (rc) {
          case SQLITE_CONSTRAINT_UNIQUE:
          case SQLITE_CONSTRAINT_PRIMARYKEY:
            return absl::AlreadyExistsError(msg);
          case SQLITE_CONSTRAINT_FOREIGNKEY:
            return absl::FailedPreconditionError(msg);
          default:
            return absl::InvalidArgumentError(msg);
        }
      case SQLITE_BUSY:
      case SQLITE_LOCKED:
      case SQLITE_CANTOPEN:
      case SQLITE_IOERR:
      case SQLITE_FULL:
      case SQLITE_READONLY:
        return absl::UnavailableError(msg);
      default:
        return absl::InternalError(StrCat(msg, " in: ", sql));
    }
  }

  absl::StatusOr<Rows> Run(std::string_view sql, const Params& params, bool collect) {
    if (corrupt_) return absl::DataLossError("sqlite: database is corrupt; store stopped");
    // Statements are prepared once per SQL text and reused: the repository issues a small fixed
    // set of statements, and preparing them was the largest cost of a cached read.
    sqlite3_stmt* stmt = nullptr;
    int rc = SQLITE_OK;
    auto cached = statements_.find(sql);
    if (cached != statements_.end()) {
      stmt = cached->second;
    } else {
      rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
      if (rc != SQLITE_OK) return Error(rc, sql);
      if (statements_.size() < kMaxCachedStatements) {
        cached = statements_.emplace(std::string(sql), stmt).first;
      }
    }
    bool owned = cached == statements_.end();  // not cached: finalize after this call
    struct Releaser {
      sqlite3_stmt* s;
      bool owned;
      ~Releaser() {
        if (owned) {
          sqlite3_finalize(s);
        } else {
          sqlite3_reset(s);
          sqlite3_clear_bindings(s);
        }
      }
    } releaser{stmt, owned};
    if (sqlite3_bind_parameter_count(stmt) != static_cast<int>(params.size())) {
      return absl::InternalError(StrCat("sqlite: statement wants ",
                                        sqlite3_bind_parameter_count(stmt), " parameters, got ",
                                        params.size(), ": ", sql));
    }
    for (size_t i = 0; i < params.size(); ++i) {
      int idx = static_cast<int>(i) + 1;
      const Param& p = params[i];
      if (std::holds_alternative<std::monostate>(p)) {
        rc = sqlite3_bind_null(stmt, idx);
      } else if (const auto* v = std::get_if<int64_t>(&p)) {
        rc = sqlite3_bind_int64(stmt, idx, *v);
      } else {
        const std::string& s = std::get<std::string>(p);
        if (auto st = ValidateText(s); !st.ok()) return st;
        rc = sqlite3_bind_text(stmt, idx, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
      }
      if (rc != SQLITE_OK) return Error(rc, sql);
    }
    Rows rows;
    while (true) {
      rc = sqlite3_step(stmt);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return Error(sqlite3_extended_errcode(db_), sql);
      if (!collect) continue;
      int n = sqlite3_column_count(stmt);
      std::vector<std::optional<std::string>> cells;
      cells.reserve(n);
      for (int c = 0; c < n; ++c) {
        if (sqlite3_column_type(stmt, c) == SQLITE_NULL) {
          cells.emplace_back(std::nullopt);
        } else {
          const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, c));
          int len = sqlite3_column_bytes(stmt, c);
          cells.emplace_back(std::string(text ? text : "", text ? len : 0));
        }
      }
      rows.emplace_back(std::move(cells));
    }
    return rows;
  }

  static constexpr size_t kMaxCachedStatements = 256;
  sqlite3* db_;
  std::map<std::string, sqlite3_stmt*, std::less<>> statements_;  // guarded like db_
  bool corrupt_ = false;  // guarded by SqlDb's mutex (all calls come through Do*)
};

}  // namespace

absl::StatusOr<std::unique_ptr<SqlDb>> OpenSqliteDb(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("sqlite: empty database path");
  sqlite3* db = nullptr;
  // NOMUTEX: SqlDb's own mutex already serialises every use of the connection.
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = StrCat("sqlite: cannot open \"", path, "\": ",
                             db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close_v2(db);
    return absl::UnavailableError(msg);
  }
  sqlite3_extended_result_codes(db, 1);
  auto sqlite = std::make_unique<SqliteDb>(db);
  if (auto s = sqlite->Configure(); !s.ok()) return s;
  return std::unique_ptr<SqlDb>(std::move(sqlite));
}

}  // namespace warden::store::internal
