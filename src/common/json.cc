#include "common/json.h"

#include <set>
#include <vector>

#include "common/strings.h"

namespace warden::common {
namespace {

// Thrown from the parser callback to abort parsing; caught in ParseJsonStrict only.
struct JsonRejected {
  std::string message;
};

std::string TypeName(const Json& j) { return j.type_name(); }

}  // namespace

absl::StatusOr<Json> ParseJsonStrict(std::string_view text, const JsonLimits& limits) {
  if (text.size() > limits.max_bytes) {
    return absl::InvalidArgumentError(
        StrCat("JSON body is ", text.size(), " bytes; the limit is ", limits.max_bytes));
  }
  // One entry per open container: the keys seen so far (objects) or nullopt (arrays).
  std::vector<std::optional<std::set<std::string>>> open;
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) -> bool {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (depth >= limits.max_depth) {
          throw JsonRejected{StrCat("JSON nesting deeper than ", limits.max_depth, " levels")};
        }
        if (event == Json::parse_event_t::object_start) {
          open.emplace_back(std::set<std::string>{});
        } else {
          open.emplace_back(std::nullopt);
        }
        break;
      case Json::parse_event_t::object_end:
      case Json::parse_event_t::array_end:
        if (!open.empty()) open.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!open.empty() && open.back().has_value()) {
          const std::string& key = parsed.get_ref<const std::string&>();
          if (!open.back()->insert(key).second) {
            throw JsonRejected{StrCat("duplicate JSON key \"", key, "\"")};
          }
        }
        break;
      case Json::parse_event_t::value:
        break;
    }
    return true;
  };
  try {
    Json result = Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                              /*ignore_comments=*/false);
    return result;
  } catch (const JsonRejected& e) {
    return absl::InvalidArgumentError(e.message);
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(
        StrCat("malformed JSON at byte ", e.byte, ": ", e.what()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(StrCat("malformed JSON: ", e.what()));
  }
}

absl::StatusOr<JsonFields> JsonFields::Of(const Json& obj) {
  if (!obj.is_object()) {
    return absl::InvalidArgumentError(
        StrCat("expected a JSON object, got ", TypeName(obj)));
  }
  return JsonFields(&obj);
}

absl::StatusOr<std::string> JsonFields::RequiredString(std::string_view key) const {
  auto it = obj_->find(key);
  if (it == obj_->end()) {
    return absl::InvalidArgumentError(StrCat("field \"", key, "\" is required"));
  }
  if (!it->is_string()) {
    return absl::InvalidArgumentError(
        StrCat("field \"", key, "\": expected string, got ", TypeName(*it)));
  }
  return it->get<std::string>();
}

absl::StatusOr<std::optional<std::string>> JsonFields::OptionalString(std::string_view key) const {
  auto it = obj_->find(key);
  if (it == obj_->end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) {
    return absl::InvalidArgumentError(
        StrCat("field \"", key, "\": expected string, got ", TypeName(*it)));
  }
  return std::optional<std::string>(it->get<std::string>());
}

absl::StatusOr<std::optional<int64_t>> JsonFields::OptionalInt(std::string_view key) const {
  auto it = obj_->find(key);
  if (it == obj_->end() || it->is_null()) return std::optional<int64_t>();
  if (it->is_number_unsigned()) {
    uint64_t v = it->get<uint64_t>();
    if (v > static_cast<uint64_t>(INT64_MAX)) {
      return absl::InvalidArgumentError(StrCat("field \"", key, "\": integer out of range"));
    }
    return std::optional<int64_t>(static_cast<int64_t>(v));
  }
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(
        StrCat("field \"", key, "\": expected integer, got ", TypeName(*it)));
  }
  return std::optional<int64_t>(it->get<int64_t>());
}

absl::StatusOr<std::optional<bool>> JsonFields::OptionalBool(std::string_view key) const {
  auto it = obj_->find(key);
  if (it == obj_->end() || it->is_null()) return std::optional<bool>();
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(
        StrCat("field \"", key, "\": expected boolean, got ", TypeName(*it)));
  }
  return std::optional<bool>(it->get<bool>());
}

absl::StatusOr<std::vector<std::string>> JsonFields::StringList(std::string_view key) const {
  std::vector<std::string> out;
  auto it = obj_->find(key);
  if (it == obj_->end() || it->is_null()) return out;
  if (!it->is_array()) {
    return absl::InvalidArgumentError(
        StrCat("field \"", key, "\": expected array of strings, got ", TypeName(*it)));
  }
  for (const auto& v : *it) {
    if (!v.is_string()) {
      return absl::InvalidArgumentError(StrCat(
          "field \"", key, "\": expected array of strings, found ", TypeName(v)));
    }
    out.push_back(v.get<std::string>());
  }
  return out;
}

absl::Status JsonFields::OnlyKeys(std::initializer_list<std::string_view> known) const {
  for (const auto& [key, value] : obj_->items()) {
    bool found = false;
    for (auto k : known) found = found || k == key;
    if (!found) return absl::InvalidArgumentError(StrCat("unknown field \"", key, "\""));
  }
  return absl::OkStatus();
}

}  // namespace warden::common
