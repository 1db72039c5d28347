#include "api/api.h"

#include "common/ids.h"
#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::api {
namespace {

using common::JsonFields;
using common::StrCat;

// Parses `body` as a JSON object and checks it has only `keys`.
absl::StatusOr<common::Json> ParseObject(std::string_view body,
                                         std::initializer_list<std::string_view> keys) {
  if (body.empty()) return absl::InvalidArgumentError("request body is empty; expected JSON");
  WARDEN_ASSIGN_OR_RETURN(common::Json j, common::ParseJsonStrict(body));
  WARDEN_ASSIGN_OR_RETURN(JsonFields f, JsonFields::Of(j));
  WARDEN_RETURN_IF_ERROR(f.OnlyKeys(keys));
  return j;
}

absl::Status CheckLength(std::string_view field, const std::string& v, size_t max) {
  if (v.size() > max) {
    return absl::InvalidArgumentError(StrCat("field \"", field, "\" is longer than ", max, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ParseOtp(std::string_view field, std::string_view text) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  if (text.empty()) return absl::InvalidArgumentError(StrCat(field, ": empty MFA code"));
  if (text.size() > 64) {
    return absl::InvalidArgumentError(StrCat(field, ": MFA code is longer than 64 bytes"));
  }
  bool digits = true;
  for (char c : text) {
    const bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alnum && c != '-' && c != ' ') {
      return absl::InvalidArgumentError(
          StrCat(field, ": MFA code must be 6 or 8 digits or a recovery code (letters, digits, -)"));
    }
    digits = digits && c >= '0' && c <= '9';
  }
  if (digits && text.size() != 6 && text.size() != 8) {
    return absl::InvalidArgumentError(StrCat(field, ": a TOTP code has 6 or 8 digits"));
  }
  return std::string(text);
}

absl::StatusOr<LoginRequest> DecodeLogin(std::string_view body) {
  WARDEN_ASSIGN_OR_RETURN(common::Json j, ParseObject(body, {"user", "password", "otp"}));
  JsonFields f = *JsonFields::Of(j);
  LoginRequest r;
  WARDEN_ASSIGN_OR_RETURN(r.user, f.RequiredString("user"));
  WARDEN_ASSIGN_OR_RETURN(r.password, f.RequiredString("password"));
  WARDEN_RETURN_IF_ERROR(CheckLength("user", r.user, 63));
  WARDEN_RETURN_IF_ERROR(CheckLength("password", r.password, 1024));
  WARDEN_ASSIGN_OR_RETURN(auto otp, f.OptionalString("otp"));
  if (otp) {
    WARDEN_ASSIGN_OR_RETURN(r.otp, ParseOtp("field \"otp\"", *otp));
  }
  return r;
}

absl::StatusOr<MfaCodeRequest> DecodeMfaCode(std::string_view body) {
  WARDEN_ASSIGN_OR_RETURN(common::Json j, ParseObject(body, {"code"}));
  JsonFields f = *JsonFields::Of(j);
  MfaCodeRequest r;
  WARDEN_ASSIGN_OR_RETURN(std::string code, f.RequiredString("code"));
  WARDEN_ASSIGN_OR_RETURN(r.code, ParseOtp("field \"code\"", code));
  return r;
}

absl::StatusOr<ChangePasswordRequest> DecodeChangePassword(std::string_view body) {
  WARDEN_ASSIGN_OR_RETURN(common::Json j, ParseObject(body, {"current_password", "new_password"}));
  JsonFields f = *JsonFields::Of(j);
  ChangePasswordRequest r;
  WARDEN_ASSIGN_OR_RETURN(r.current_password, f.RequiredString("current_password"));
  WARDEN_ASSIGN_OR_RETURN(r.new_password, f.RequiredString("new_password"));
  WARDEN_RETURN_IF_ERROR(CheckLength("current_password", r.current_password, 1024));
  WARDEN_RETURN_IF_ERROR(CheckLength("new_password", r.new_password, 1024));
  if (r.new_password.size() < 8) {
    return absl::InvalidArgumentError("field \"new_password\" must be at least 8 bytes");
  }
  return r;
}

absl::StatusOr<CreateTenantRequest> DecodeCreateTenant(std::string_view body) {
  WARDEN_ASSIGN_OR_RETURN(common::Json j, ParseObject(body, {"name"}));
  JsonFields f = *JsonFields::Of(j);
  CreateTenantRequest r;
  WARDEN_ASSIGN_OR_RETURN(r.name, f.RequiredString("name"));
  WARDEN_RETURN_IF_ERROR(common::ValidateName("tenant name", r.name));
  return r;
}

absl::StatusOr<CreateUserRequest> DecodeCreateUser(std::string_view body) {
  WARDEN_ASSIGN_OR_RETURN(common::Json j, ParseObject(body, {"name", "password", "role"}));
  JsonFields f = *JsonFields::Of(j);
  CreateUserRequest r;
  WARDEN_ASSIGN_OR_RETURN(r.name, f.RequiredString("name"));
  WARDEN_ASSIGN_OR_RETURN(r.password, f.RequiredString("password"));
  WARDEN_ASSIGN_OR_RETURN(auto role, f.OptionalString("role"));
  if (role) {
    WARDEN_RETURN_IF_ERROR(common::ValidateName("role name", *role));
    r.role = *role;
  }
  WARDEN_RETURN_IF_ERROR(common::ValidateName("user name", r.name));
  WARDEN_RETURN_IF_ERROR(CheckLength("password", r.password, 1024));
  if (r.password.size() < 8) {
    return absl::InvalidArgumentError("field \"password\" must be at least 8 bytes");
  }
  return r;
}

absl::StatusOr<CreateRoleRequest> DecodeCreateRole(std::string_view body) {
  WARDEN_ASSIGN_OR_RETURN(common::Json j, ParseObject(body, {"name", "permissions"}));
  JsonFields f = *JsonFields::Of(j);
  CreateRoleRequest r;
  WARDEN_ASSIGN_OR_RETURN(r.name, f.RequiredString("name"));
  WARDEN_RETURN_IF_ERROR(common::ValidateName("role name", r.name));
  WARDEN_ASSIGN_OR_RETURN(r.permissions, f.StringList("permissions"));
  if (r.permissions.empty()) {
    return absl::InvalidArgumentError("field \"permissions\" must list at least one permission");
  }
  if (r.permissions.size() > 256) {
    return absl::InvalidArgumentError("field \"permissions\" lists more than 256 entries");
  }
  for (const auto& p : r.permissions) WARDEN_RETURN_IF_ERROR(CheckLength("permissions[]", p, 64));
  return r;
}

absl::StatusOr<CreateBindingRequest> DecodeCreateBinding(std::string_view body) {
  WARDEN_ASSIGN_OR_RETURN(common::Json j, ParseObject(body, {"user", "token", "role"}));
  JsonFields f = *JsonFields::Of(j);
  CreateBindingRequest r;
  WARDEN_ASSIGN_OR_RETURN(auto user, f.OptionalString("user"));
  WARDEN_ASSIGN_OR_RETURN(auto token, f.OptionalString("token"));
  if (user.has_value() == token.has_value()) {
    return absl::InvalidArgumentError("exactly one of fields \"user\" and \"token\" is required");
  }
  r.subject_kind = user ? "user" : "token";
  r.subject = user ? *user : *token;
  WARDEN_ASSIGN_OR_RETURN(r.role, f.RequiredString("role"));
  WARDEN_RETURN_IF_ERROR(common::ValidateName("role name", r.role));
  if (user) {
    WARDEN_RETURN_IF_ERROR(common::ValidateName("user name", r.subject));
  } else {
    WARDEN_RETURN_IF_ERROR(CheckLength("token", r.subject, 64));
  }
  return r;
}

absl::StatusOr<CreateTokenRequest> DecodeCreateToken(std::string_view body) {
  WARDEN_ASSIGN_OR_RETURN(common::Json j, ParseObject(body, {"name", "role", "ttl"}));
  JsonFields f = *JsonFields::Of(j);
  CreateTokenRequest r;
  WARDEN_ASSIGN_OR_RETURN(r.name, f.RequiredString("name"));
  WARDEN_RETURN_IF_ERROR(common::ValidateName("token name", r.name));
  WARDEN_ASSIGN_OR_RETURN(r.role, f.RequiredString("role"));
  WARDEN_RETURN_IF_ERROR(common::ValidateName("role name", r.role));
  WARDEN_ASSIGN_OR_RETURN(auto ttl, f.OptionalString("ttl"));
  if (ttl) {
    absl::Duration d;
    if (!absl::ParseDuration(*ttl, &d) || d <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          StrCat("field \"ttl\": expected a positive duration like 24h or 90m, got \"", *ttl, "\""));
    }
    r.ttl = d;
  }
  return r;
}

absl::StatusOr<PoolDedicationRequest> DecodePoolDedication(std::string_view body) {
  WARDEN_ASSIGN_OR_RETURN(common::Json j, ParseObject(body, {"dedicated_to"}));
  if (!j.contains("dedicated_to")) {
    return absl::InvalidArgumentError(
        "field \"dedicated_to\": required (tenant names; [] makes the pool general)");
  }
  PoolDedicationRequest r;
  WARDEN_ASSIGN_OR_RETURN(r.dedicated_to, JsonFields::Of(j)->StringList("dedicated_to"));
  if (r.dedicated_to.size() > 64) {
    return absl::InvalidArgumentError("field \"dedicated_to\": at most 64 tenants");
  }
  return r;
}

absl::StatusOr<std::string> DecodeNodePool(std::string_view body) {
  WARDEN_ASSIGN_OR_RETURN(common::Json j, ParseObject(body, {"pool"}));
  WARDEN_ASSIGN_OR_RETURN(auto pool, JsonFields::Of(j)->OptionalString("pool"));
  if (!pool) return absl::InvalidArgumentError("field \"pool\": required (the node's new pool)");
  return *pool;
}

}  // namespace warden::api
