// Identifiers: "<prefix>_<26 base32 chars>" (130 random bits), e.g. "usr_...". Names that users
// choose (tenants, users, roles) are validated by ValidateName so they are safe in paths and logs.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "common/rng.h"

namespace warden::common {

std::string NewId(Rng& rng, std::string_view prefix);
// A name is 1-63 chars of [a-z0-9._-], starting with a letter or digit, with no "..".
// Returns InvalidArgument naming `what` and the rule broken.
absl::Status ValidateName(std::string_view what, std::string_view name);

}  // namespace warden::common
