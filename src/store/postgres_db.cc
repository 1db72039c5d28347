// PostgreSQL backend of SqlDb: one libpq connection, serialised by SqlDb's mutex. Enough for a
// control plane whose writes are small and whose hot reads are cached by callers (rbac compiles
// policy once per PolicyGeneration); a pool is the next step if profiles say so (README.md).
#include <libpq-fe.h>

#include <charconv>
#include <cstring>

#include "common/strings.h"
#include "store/sql_db.h"

namespace warden::store::internal {
namespace {

using common::StrCat;

// Key of the advisory lock that serialises migrations between server replicas ("warden").
constexpr int64_t kMigrationLockKey = 0x77617264656e;

void IgnoreNotice(void*, const char*) {
  // CREATE ... IF NOT EXISTS and similar emit NOTICEs; libpq would print them to stderr.
}

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

class PostgresDb final : public SqlDb {
 public:
  explicit PostgresDb(PGconn* conn) : conn_(conn) {}
  ~PostgresDb() override { PQfinish(conn_); }

  std::string Backend() const override { return "postgres"; }

  absl::Status Configure() {
    PQsetNoticeProcessor(conn_, IgnoreNotice, nullptr);
    // Text parameters and results are exchanged as UTF-8 whatever the server's locale says.
    if (PQsetClientEncoding(conn_, "UTF8") != 0) {
      return absl::UnavailableError(
          StrCat("postgres: cannot set client encoding: ", PQerrorMessage(conn_)));
    }
    return absl::OkStatus();
  }

  absl::Status LockForMigration() override {
    // Replicas started together would otherwise race on CREATE TABLE IF NOT EXISTS (which is
    // not atomic in PostgreSQL) and on the version bookkeeping.
    return Query("SELECT pg_advisory_xact_lock(?)", {kMigrationLockKey}).status();
  }

 protected:
  absl::StatusOr<int64_t> DoExec(std::string_view sql, const Params& params) override {
    auto res = Run(sql, params);
    if (!res.ok()) return res.status();
    const char* tuples = PQcmdTuples(res->get());
    int64_t n = 0;
    if (tuples != nullptr && *tuples != '\0') {
      std::from_chars(tuples, tuples + std::strlen(tuples), n);
    }
    return n;
  }

  absl::StatusOr<Rows> DoQuery(std::string_view sql, const Params& params) override {
    auto res = Run(sql, params);
    if (!res.ok()) return res.status();
    PGresult* r = res->get();
    int nrows = PQntuples(r);
    int ncols = PQnfields(r);
    Rows rows;
    rows.reserve(nrows);
    for (int i = 0; i < nrows; ++i) {
      std::vector<std::optional<std::string>> cells;
      cells.reserve(ncols);
      for (int c = 0; c < ncols; ++c) {
        if (PQgetisnull(r, i, c)) {
          cells.emplace_back(std::nullopt);
        } else {
          cells.emplace_back(std::string(PQgetvalue(r, i, c), PQgetlength(r, i, c)));
        }
      }
      rows.emplace_back(std::move(cells));
    }
    return rows;
  }

  absl::Status DoBegin() override { return DoExec("BEGIN", {}).status(); }

 private:
  absl::Status Error(PGresult* r, std::string_view sql) {
    const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    const char* text = r ? PQresultErrorMessage(r) : nullptr;
    std::string msg = StrCat("postgres: ", (text && *text) ? text : PQerrorMessage(conn_));
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    std::string_view code = state ? state : "";
    if (code.empty()) {
      if (PQstatus(conn_) == CONNECTION_BAD) return absl::UnavailableError(msg);
      return absl::InternalError(StrCat(msg, " in: ", sql));
    }
    if (code == "23505") return absl::AlreadyExistsError(msg);
    if (code == "23503") return absl::FailedPreconditionError(msg);
    if (code.starts_with("23") || code.starts_with("22")) return absl::InvalidArgumentError(msg);
    if (code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")) {
      return absl::UnavailableError(msg);
    }
    if (code == "XX001" || code == "XX002") return absl::DataLossError(msg);
    if (code.starts_with("40") || code == "25P02") return absl::AbortedError(msg);
    return absl::InternalError(StrCat(msg, " [", code, "] in: ", sql));
  }

  absl::StatusOr<Result> Run(std::string_view sql, const Params& params) {
    std::string text = RewritePlaceholders(sql);
    std::vector<std::string> storage;
    storage.reserve(params.size());
    std::vector<const char*> values(params.size(), nullptr);
    for (size_t i = 0; i < params.size(); ++i) {
      const Param& p = params[i];
      if (const auto* v = std::get_if<int64_t>(&p)) {
        storage.push_back(std::to_string(*v));
      } else if (const auto* s = std::get_if<std::string>(&p)) {
        if (auto st = ValidateText(*s); !st.ok()) return st;
        storage.push_back(*s);
      } else {
        storage.emplace_back();
        continue;  // NULL
      }
      values[i] = storage.back().c_str();
    }
    // A server restart or idle timeout breaks the connection silently; the next statement finds
    // out. Outside a transaction we reconnect and run it once more. That is safe because the
    // store runs every write inside a transaction, so what runs here unprotected is a read or
    // BEGIN. Inside a transaction the work so far is gone with the connection: report it.
    for (int attempt = 0;; ++attempt) {
      if (PQstatus(conn_) != CONNECTION_OK) {
        if (InTransaction()) {
          return absl::UnavailableError("postgres: connection lost inside a transaction");
        }
        PQreset(conn_);
        if (PQstatus(conn_) != CONNECTION_OK) {
          return absl::UnavailableError(StrCat("postgres: reconnect failed: ",
                                               PQerrorMessage(conn_)));
        }
        if (auto s = Configure(); !s.ok()) return s;
      }
      Result res(PQexecParams(conn_, text.c_str(), static_cast<int>(values.size()), nullptr,
                              values.data(), nullptr, nullptr, /*resultFormat=*/0));
      ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
      if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (sql == "COMMIT" && std::string_view(PQcmdStatus(res.get())) == "ROLLBACK") {
          // PostgreSQL answers COMMIT of a transaction that an earlier error aborted with a
          // successful ROLLBACK; the caller must not believe its writes landed.
          return absl::AbortedError(
              "postgres: transaction was aborted by an earlier error and rolled back");
        }
        return res;
      }
      if (attempt == 0 && PQstatus(conn_) == CONNECTION_BAD && !InTransaction()) continue;
      return Error(res.get(), sql);
    }
  }

  PGconn* conn_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<SqlDb>> OpenPostgresDb(const std::string& conninfo) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  if (conn == nullptr) return absl::ResourceExhaustedError("postgres: out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    // libpq's message names host and port, never the password.
    std::string msg = StrCat("postgres: cannot connect: ", PQerrorMessage(conn));
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    PQfinish(conn);
    return absl::UnavailableError(msg);
  }
  auto db = std::make_unique<PostgresDb>(conn);
  if (auto s = db->Configure(); !s.ok()) return s;
  return std::unique_ptr<SqlDb>(std::move(db));
}

}  // namespace warden::store::internal
