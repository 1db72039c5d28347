// OIDC provider configuration (issue 3): the YAML an operator writes for each identity provider,
// parsed strictly into oidc::ProviderConfig; the server reads it from its config's `oidc:` section;
// docs/oidc.md shows the Keycloak, Okta and Entra ID examples that tests parse with this.
//
//   providers:
//     - name: corp                                   # [a-z0-9-], 1-32 chars, unique
//       issuer: https://idp.example.com/realms/gpu   # exactly the tokens' "iss"; https
//       client_id: gpuwarden
//       client_secret_file: /etc/gpuwarden/corp.secret   # 0600 or 0400; first line is the secret
//       redirect_uri: https://gpuwarden.example.com/api/v1/oidc/corp/callback
//       scopes: [openid, email, groups]              # default
//       allowed_algs: [RS256, ES256]                 # default; none/HS* refused
//       access_token_audiences: [https://gpuwarden.example.com/api]  # bearer JWTs; [] = none
//       require_at_jwt_typ: true                     # false for IdPs issuing typ "JWT"
//       ca_file: /etc/gpuwarden/oidc/corp-ca.pem      # optional: pin the IdP's TLS CA
//       mfa_amr: [mfa, otp, hwk]                     # default; [] = never trust the IdP's MFA
//       groups_claim: groups
//       allow_unverified_email: false
//       max_skew_seconds: 60                         # 0-300
//       mappings:
//         - {group: gpu-admins, role: admin}         # no tenant: cluster scope
//         - {group: ml-team, tenant: ml, role: developer}
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "auth/oidc.h"

namespace warden::auth::oidc {

// Reads a secret file; the default refuses files readable by group or others (like key files).
using SecretFileReader = std::function<absl::StatusOr<std::string>(const std::string& path)>;
absl::StatusOr<std::string> ReadSecretFile(const std::string& path);

// InvalidArgument naming the provider and key for: YAML syntax errors, unknown keys (typos must
// not silently disable a check), wrong types, a bad or duplicate name, a non-https issuer or
// redirect_uri, an unreadable ca_file or one without a PEM certificate, an unknown or refused alg, a mapping without group or role, a skew over 300 s, or
// an unreadable/too-open secret file (the reader's error). `providers: []` is valid (no SSO).
absl::StatusOr<std::vector<ProviderConfig>> ParseOidcConfig(
    std::string_view yaml_text, const SecretFileReader& read_secret = ReadSecretFile);

}  // namespace warden::auth::oidc
