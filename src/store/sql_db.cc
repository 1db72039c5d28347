#include "store/sql_db.h"

#include <charconv>

#include "common/strings.h"

namespace warden::store::internal {

using common::StrCat;

absl::StatusOr<int64_t> Row::Int(size_t i) const {
  const auto& cell = cells_.at(i);
  if (!cell.has_value()) return 0;
  int64_t v = 0;
  const char* begin = cell->data();
  const char* end = begin + cell->size();
  auto [ptr, ec] = std::from_chars(begin, end, v);
  if (ec != std::errc() || ptr != end) {
    // Our schema only puts integers in integer columns; anything else means the file or the
    // server handed us something we never wrote.
    return absl::DataLossError(StrCat("store: expected an integer in column ", i, ", got \"",
                                      *cell, "\""));
  }
  return v;
}

absl::StatusOr<int64_t> SqlDb::Exec(std::string_view sql, const Params& params) {
  std::lock_guard lock(mu_);
  return DoExec(sql, params);
}

absl::StatusOr<Rows> SqlDb::Query(std::string_view sql, const Params& params) {
  std::lock_guard lock(mu_);
  return DoQuery(sql, params);
}

absl::Status SqlDb::Begin() {
  mu_.lock();  // released by the matching Commit()/Rollback()
  absl::Status s;
  if (depth_ == 0) {
    s = DoBegin();
  } else {
    // Savepoints make a nested level undoable on its own, and keep PostgreSQL's transaction
    // usable after a failed statement inside it (it would otherwise refuse everything until
    // ROLLBACK), so both backends behave alike.
    s = DoExec(StrCat("SAVEPOINT warden_sp", depth_), {}).status();
  }
  if (!s.ok()) {
    mu_.unlock();
    return s;
  }
  ++depth_;
  return absl::OkStatus();
}

absl::Status SqlDb::Commit() { return EndLevel(true); }
absl::Status SqlDb::Rollback() { return EndLevel(false); }

absl::Status SqlDb::EndLevel(bool commit) {
  // Locking again is harmless for the owner (recursive) and makes a stray call from another
  // thread wait and then see depth 0 instead of racing the owner.
  std::lock_guard lock(mu_);
  if (depth_ == 0) return absl::FailedPreconditionError("store: no open transaction");
  absl::Status s;
  if (depth_ == 1) {
    s = DoExec(commit ? "COMMIT" : "ROLLBACK", {}).status();
    if (!s.ok() && commit) {
      // A failed COMMIT may leave SQLite's transaction open; close it so the connection is
      // usable. (PostgreSQL has already ended it; its ROLLBACK is then a no-op warning.)
      (void)DoExec("ROLLBACK", {});
    }
  } else {
    std::string sp = StrCat("warden_sp", depth_ - 1);
    if (commit) {
      s = DoExec(StrCat("RELEASE SAVEPOINT ", sp), {}).status();
    } else {
      s = DoExec(StrCat("ROLLBACK TO SAVEPOINT ", sp), {}).status();
      if (s.ok()) s = DoExec(StrCat("RELEASE SAVEPOINT ", sp), {}).status();
    }
  }
  --depth_;
  mu_.unlock();  // the lock taken by Begin()
  return s;
}

std::string RewritePlaceholders(std::string_view sql) {
  std::string out;
  out.reserve(sql.size() + 16);
  int n = 0;
  enum class State { kCode, kString, kIdent, kComment } state = State::kCode;
  for (size_t i = 0; i < sql.size(); ++i) {
    char c = sql[i];
    switch (state) {
      case State::kCode:
        if (c == '?') {
          out += StrCat("$", ++n);
          continue;
        }
        if (c == '\'') state = State::kString;
        if (c == '"') state = State::kIdent;
        if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') state = State::kComment;
        break;
      case State::kString:  // '' inside a literal closes and reopens it: same result
        if (c == '\'') state = State::kCode;
        break;
      case State::kIdent:
        if (c == '"') state = State::kCode;
        break;
      case State::kComment:
        if (c == '\n') state = State::kCode;
        break;
    }
    out.push_back(c);
  }
  return out;
}

absl::Status ValidateText(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b == 0) return absl::InvalidArgumentError("store: text contains a NUL byte");
    if (b < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if ((b & 0xE0) == 0xC0) {
      len = 2;
      cp = b & 0x1F;
    } else if ((b & 0xF0) == 0xE0) {
      len = 3;
      cp = b & 0x0F;
    } else if ((b & 0xF8) == 0xF0) {
      len = 4;
      cp = b & 0x07;
    } else {
      return absl::InvalidArgumentError("store: text is not valid UTF-8");
    }
    if (i + len > s.size()) return absl::InvalidArgumentError("store: text is not valid UTF-8");
    for (size_t k = 1; k < len; ++k) {
      auto cb = static_cast<unsigned char>(s[i + k]);
      if ((cb & 0xC0) != 0x80) return absl::InvalidArgumentError("store: text is not valid UTF-8");
      cp = (cp << 6) | (cb & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return absl::InvalidArgumentError("store: text is not valid UTF-8");
    }
    i += len;
  }
  return absl::OkStatus();
}

}  // namespace warden::store::internal
