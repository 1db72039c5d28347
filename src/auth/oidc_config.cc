// Strict YAML -> ProviderConfig. Every key is known or refused, so a misspelt
// "allow_unverified_emial: false" cannot leave a check at a default the operator did not choose.
#include "auth/oidc_config.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "common/strings.h"
#include "yaml-cpp/yaml.h"

namespace warden::auth::oidc {
namespace {

using common::StrCat;

absl::Status Bad(std::string_view where, std::string_view what) {
  return absl::InvalidArgumentError(StrCat("oidc config ", where, ": ", what));
}

bool ValidName(const std::string& s) {
  if (s.empty() || s.size() > 32) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

absl::StatusOr<std::string> Scalar(const YAML::Node& n, const std::string& where) {
  if (!n.IsScalar()) return Bad(where, "expected a string");
  return n.as<std::string>();
}

absl::StatusOr<std::vector<std::string>> StringList(const YAML::Node& n, const std::string& where) {
  if (!n.IsSequence()) return Bad(where, "expected a list of strings");
  std::vector<std::string> out;
  for (const YAML::Node& item : n) {
    if (!item.IsScalar()) return Bad(where, "expected a list of strings");
    out.push_back(item.as<std::string>());
  }
  return out;
}

absl::StatusOr<bool> Bool(const YAML::Node& n, const std::string& where) {
  if (!n.IsScalar()) return Bad(where, "expected true or false");
  const std::string& v = n.Scalar();
  if (v == "true") return true;
  if (v == "false") return false;
  return Bad(where, StrCat("expected true or false, got \"", v, "\""));
}

// The provider's CA bundle: public data, so no mode rule, but it must be a readable PEM
// certificate (a wrong path must not silently fall back to the system store).
absl::StatusOr<std::string> ReadCaFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(StrCat("ca_file ", path, " cannot be read"));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string pem = ss.str();
  if (pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    return absl::InvalidArgumentError(StrCat("ca_file ", path, " holds no PEM certificate"));
  }
  return pem;
}

absl::StatusOr<ProviderConfig> ParseProvider(const YAML::Node& n, size_t index,
                                             const SecretFileReader& read_secret) {
  std::string where = StrCat("providers[", static_cast<int64_t>(index), "]");
  if (!n.IsMap()) return Bad(where, "expected a mapping");
  ProviderConfig c;
  std::string secret_file;
  std::string ca_file;
  for (const auto& kv : n) {
    std::string key = kv.first.as<std::string>();
    std::string at = StrCat(where, ".", key);
    const YAML::Node& v = kv.second;
    absl::Status st;
    auto str = [&](std::string* out) {
      auto s = Scalar(v, at);
      if (s.ok()) *out = *s;
      return s.status();
    };
    auto list = [&](std::vector<std::string>* out) {
      auto s = StringList(v, at);
      if (s.ok()) *out = *s;
      return s.status();
    };
    auto flag = [&](bool* out) {
      auto b = Bool(v, at);
      if (b.ok()) *out = *b;
      return b.status();
    };
    if (key == "name") {
      st = str(&c.name);
    } else if (key == "issuer") {
      st = str(&c.issuer);
    } else if (key == "client_id") {
      st = str(&c.client_id);
    } else if (key == "client_secret_file") {
      st = str(&secret_file);
    } else if (key == "redirect_uri") {
      st = str(&c.redirect_uri);
    } else if (key == "scopes") {
      st = list(&c.scopes);
    } else if (key == "access_token_audiences") {
      st = list(&c.access_token_audiences);
    } else if (key == "ca_file") {
      st = str(&ca_file);
    } else if (key == "mfa_amr") {
      st = list(&c.mfa_amr);
    } else if (key == "groups_claim") {
      st = str(&c.groups_claim);
    } else if (key == "require_at_jwt_typ") {
      st = flag(&c.require_at_jwt_typ);
    } else if (key == "allow_unverified_email") {
      st = flag(&c.allow_unverified_email);
    } else if (key == "max_skew_seconds") {
      int64_t s = -1;
      try {
        s = v.as<int64_t>();
      } catch (const YAML::Exception&) {
      }
      if (s < 0 || s > 300) return Bad(at, "expected a number of seconds from 0 to 300");
      c.max_skew = absl::Seconds(s);
    } else if (key == "allowed_algs") {
      std::vector<std::string> names;
      st = list(&names);
      if (st.ok()) {
        c.allowed_algs.clear();
        for (const std::string& a : names) {
          std::optional<jose::JwsAlg> alg = jose::JwsAlgFromName(a);
          if (!alg) {
            return Bad(at, StrCat("alg \"", a,
                                  "\" is not supported (RS256/384/512, PS256/384/512, ES256/384, "
                                  "EdDSA; none and HS* are never accepted)"));
          }
          c.allowed_algs.push_back(*alg);
        }
        if (c.allowed_algs.empty()) return Bad(at, "must name at least one alg");
      }
    } else if (key == "mappings") {
      if (!v.IsSequence()) return Bad(at, "expected a list of {group, tenant, role}");
      for (const YAML::Node& m : v) {
        if (!m.IsMap()) return Bad(at, "expected a list of {group, tenant, role}");
        GroupMapping gm;
        for (const auto& mkv : m) {
          std::string mk = mkv.first.as<std::string>();
          auto s = Scalar(mkv.second, StrCat(at, ".", mk));
          if (!s.ok()) return s.status();
          if (mk == "group") {
            gm.group = *s;
          } else if (mk == "tenant") {
            gm.tenant = *s;
          } else if (mk == "role") {
            gm.role = *s;
          } else {
            return Bad(at, StrCat("unknown key \"", mk, "\" in a mapping"));
          }
        }
        if (gm.group.empty() || gm.role.empty()) return Bad(at, "a mapping needs group and role");
        c.mappings.push_back(std::move(gm));
      }
    } else {
      return Bad(where, StrCat("unknown key \"", key, "\""));
    }
    if (!st.ok()) return st;
  }
  if (!ValidName(c.name)) {
    return Bad(where, "name must be 1-32 characters of a-z, 0-9 and -");
  }
  where = StrCat("provider \"", c.name, "\"");
  if (!SplitHttpsUrl(c.issuer).ok()) return Bad(where, "issuer must be an https URL");
  if (c.client_id.empty()) return Bad(where, "client_id is required");
  if (!c.redirect_uri.empty() && !SplitHttpsUrl(c.redirect_uri).ok()) {
    return Bad(where, "redirect_uri must be an https URL");
  }
  if (std::find(c.scopes.begin(), c.scopes.end(), "openid") == c.scopes.end()) {
    return Bad(where, "scopes must include openid");
  }
  if (c.mappings.empty()) {
    return Bad(where, "no mappings: nobody from this provider could ever log in");
  }
  if (!ca_file.empty()) {
    absl::StatusOr<std::string> pem = ReadCaFile(ca_file);
    if (!pem.ok()) return Bad(where, std::string(pem.status().message()));
    c.ca_pem = *pem;
  }
  if (!secret_file.empty()) {
    absl::StatusOr<std::string> secret = read_secret(secret_file);
    if (!secret.ok()) return Bad(where, std::string(secret.status().message()));
    c.client_secret = *secret;
  }
  return c;
}

}  // namespace

absl::StatusOr<std::string> ReadSecretFile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return absl::NotFoundError(StrCat(path, ": cannot stat"));
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(
        StrCat(path, " is readable by group or others; chmod 600 it"));
  }
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  if (line.empty())
    return absl::InvalidArgumentError(StrCat(path, " has no secret on its first line"));
  return line;
}

absl::StatusOr<std::vector<ProviderConfig>> ParseOidcConfig(std::string_view yaml_text,
                                                            const SecretFileReader& read_secret) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    return Bad("", StrCat("YAML error: ", e.what()));
  }
  std::vector<ProviderConfig> out;
  try {
    if (!root.IsMap()) return Bad("", "expected a mapping with \"providers\"");
    for (const auto& kv : root) {
      std::string key = kv.first.as<std::string>();
      if (key != "providers") return Bad("", StrCat("unknown key \"", key, "\""));
    }
    const YAML::Node providers = root["providers"];
    if (!providers.IsSequence()) return Bad("providers", "expected a list");
    std::set<std::string> names;
    for (size_t i = 0; i < providers.size(); ++i) {
      absl::StatusOr<ProviderConfig> p = ParseProvider(providers[i], i, read_secret);
      if (!p.ok()) return p.status();
      if (!names.insert(p->name).second) {
        return Bad("providers", StrCat("two providers are named \"", p->name, "\""));
      }
      out.push_back(std::move(*p));
    }
  } catch (const YAML::Exception& e) {
    return Bad("", StrCat("YAML error: ", e.what()));
  }
  return out;
}

}  // namespace warden::auth::oidc
