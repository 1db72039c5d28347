// The JSON request bodies of the HTTP API under /api/v1/ and their strict decoders. Every decoder
// takes untrusted bytes and returns either a validated value or InvalidArgument naming the field
// and the rule broken (duplicate keys, deep nesting, wrong types, unknown fields, bad names).
// Pure functions, thread-safe; depends only on common (so fuzz/ can target it cheaply).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace warden::api {

struct LoginRequest {
  std::string user;
  std::string password;
  std::string otp;  // optional second factor: TOTP code or recovery code (checked by ParseOtp)
};

// Bodies of POST /api/v1/mfa/confirm, /mfa/disable and /mfa/step-up.
struct MfaCodeRequest {
  std::string code;
};

struct CreateTenantRequest {
  std::string name;
};

struct CreateUserRequest {
  std::string name;
  std::string password;
  std::string role;  // optional: bound to the new user at the URL's scope in the same transaction
};

struct CreateRoleRequest {
  std::string name;
  std::vector<std::string> permissions;  // "resource:verb"; checked against the catalog by rbac
};

// Binds a role to a user or an API token at the scope of the URL (cluster or tenant).
struct CreateBindingRequest {
  std::string subject_kind;  // "user" or "token"
  std::string subject;       // user name or token id
  std::string role;          // role name
};

struct CreateTokenRequest {
  std::string name;
  std::string role;
  absl::Duration ttl = absl::Hours(24 * 30);
};

struct ChangePasswordRequest {
  std::string current_password;
  std::string new_password;
};

// PUT /api/v1/pools/{pool} (issue 6): the tenants (names) the pool is dedicated to; empty makes
// it a general pool. The field is required; at most 64 names.
struct PoolDedicationRequest {
  std::vector<std::string> dedicated_to;
};

absl::StatusOr<LoginRequest> DecodeLogin(std::string_view body);
absl::StatusOr<MfaCodeRequest> DecodeMfaCode(std::string_view body);
// A second factor as sent in a body field or the X-Warden-OTP header: a TOTP code (6 or 8 ASCII
// digits) or a recovery code (at most 64 bytes of letters, digits, '-' and ' '). Returned with
// surrounding spaces trimmed. InvalidArgument naming `field` for anything else (empty included).
absl::StatusOr<std::string> ParseOtp(std::string_view field, std::string_view text);
absl::StatusOr<ChangePasswordRequest> DecodeChangePassword(std::string_view body);
absl::StatusOr<CreateTenantRequest> DecodeCreateTenant(std::string_view body);
absl::StatusOr<CreateUserRequest> DecodeCreateUser(std::string_view body);
absl::StatusOr<CreateRoleRequest> DecodeCreateRole(std::string_view body);
absl::StatusOr<CreateBindingRequest> DecodeCreateBinding(std::string_view body);
absl::StatusOr<CreateTokenRequest> DecodeCreateToken(std::string_view body);
absl::StatusOr<PoolDedicationRequest> DecodePoolDedication(std::string_view body);
// PATCH /api/v1/nodes/{node} (issue 6): {"pool": P}, the node's new pool (the field is required;
// the name is checked by the cluster service).
absl::StatusOr<std::string> DecodeNodePool(std::string_view body);

}  // namespace warden::api
