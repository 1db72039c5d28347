// Status helpers shared by every module: absl::Status / absl::StatusOr are the error currency
// (STYLE.md "Errors"); these macros keep early returns short.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define WARDEN_CONCAT_INNER(a, b) a##b
#define WARDEN_CONCAT(a, b) WARDEN_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` is not OK.
#define WARDEN_RETURN_IF_ERROR(expr)              \
  do {                                            \
    ::absl::Status warden_status_ = (expr);       \
    if (!warden_status_.ok()) return warden_status_; \
  } while (0)

// WARDEN_ASSIGN_OR_RETURN(auto x, Foo()); declares x from a StatusOr or returns its error.
#define WARDEN_ASSIGN_OR_RETURN(lhs, expr) \
  WARDEN_ASSIGN_OR_RETURN_IMPL(WARDEN_CONCAT(warden_statusor_, __LINE__), lhs, expr)
#define WARDEN_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(*tmp)
