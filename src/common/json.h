// Strict JSON for untrusted input. nlohmann::json alone accepts duplicate keys (last wins) and
// unbounded nesting; request bodies must reject both with a clear message (issue 2, attack list).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace warden::common {

using Json = nlohmann::json;

struct JsonLimits {
  int max_depth = 32;
  size_t max_bytes = 1 << 20;
};

// Parses `text` as one JSON value. InvalidArgument on syntax errors (with the byte offset),
// duplicate object keys (naming the key), nesting deeper than max_depth or oversize input.
absl::StatusOr<Json> ParseJsonStrict(std::string_view text, const JsonLimits& limits = {});

// Typed field access for request decoders; every error is InvalidArgument naming the field and
// the expected type, e.g. `field "name": expected string, got number`.
class JsonFields {
 public:
  // `obj` must outlive this object. Fails unless `obj` is an object.
  static absl::StatusOr<JsonFields> Of(const Json& obj);

  absl::StatusOr<std::string> RequiredString(std::string_view key) const;
  absl::StatusOr<std::optional<std::string>> OptionalString(std::string_view key) const;
  absl::StatusOr<std::optional<int64_t>> OptionalInt(std::string_view key) const;
  absl::StatusOr<std::optional<bool>> OptionalBool(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> StringList(std::string_view key) const;
  // Fails naming the first key not in `known` (typos must not be silently ignored).
  absl::Status OnlyKeys(std::initializer_list<std::string_view> known) const;

 private:
  explicit JsonFields(const Json* obj) : obj_(obj) {}
  const Json* obj_;
};

}  // namespace warden::common
