#include "common/config.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "common/strings.h"

namespace warden::common {
namespace {

using Setter = std::function<absl::Status(const YAML::Node&, const std::string& key)>;

absl::Status NotScalar(const std::string& key) {
  return absl::InvalidArgumentError(StrCat("config key \"", key, "\": expected a value"));
}

Setter String(std::string* out) {
  return [out](const YAML::Node& n, const std::string& key) -> absl::Status {
    if (!n.IsScalar()) return NotScalar(key);
    *out = n.Scalar();
    return absl::OkStatus();
  };
}

template <typename T>
Setter Integer(T* out, int64_t min, int64_t max) {
  return [out, min, max](const YAML::Node& n, const std::string& key) -> absl::Status {
    if (!n.IsScalar()) return NotScalar(key);
    int64_t v = 0;
    const std::string& s = n.Scalar();
    size_t used = 0;
    try {
      v = std::stoll(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != s.size()) {
      return absl::InvalidArgumentError(
          StrCat("config key \"", key, "\": expected an integer, got \"", s, "\""));
    }
    if (v < min || v > max) {
      return absl::InvalidArgumentError(StrCat("config key \"", key, "\": ", v,
                                                     " is out of range [", min, ", ", max, "]"));
    }
    *out = static_cast<T>(v);
    return absl::OkStatus();
  };
}

Setter OneOf(std::string* out, std::vector<std::string> allowed) {
  return [out, allowed](const YAML::Node& n, const std::string& key) -> absl::Status {
    if (!n.IsScalar()) return NotScalar(key);
    for (const auto& a : allowed) {
      if (n.Scalar() == a) {
        *out = a;
        return absl::OkStatus();
      }
    }
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    return absl::InvalidArgumentError(
        StrCat("config key \"", key, "\": expected one of ", list, ", got \"", n.Scalar(), "\""));
  };
}

Setter StringList(std::vector<std::string>* out) {
  return [out](const YAML::Node& n, const std::string& key) -> absl::Status {
    if (!n.IsSequence()) {
      return absl::InvalidArgumentError(StrCat("config key \"", key, "\": expected a list"));
    }
    out->clear();
    for (const auto& item : n) {
      if (!item.IsScalar()) {
        return absl::InvalidArgumentError(
            StrCat("config key \"", key, "\": list entries must be strings"));
      }
      out->push_back(item.Scalar());
    }
    return absl::OkStatus();
  };
}

Setter Bool(bool* out) {
  return [out](const YAML::Node& n, const std::string& key) -> absl::Status {
    if (!n.IsScalar()) return NotScalar(key);
    const std::string& v = n.Scalar();
    if (v == "true") {
      *out = true;
    } else if (v == "false") {
      *out = false;
    } else {
      return absl::InvalidArgumentError(
          StrCat("config key \"", key, "\": expected true or false, got \"", v, "\""));
    }
    return absl::OkStatus();
  };
}

// A whole section kept as YAML text for a module that parses it itself (the `oidc` section).
Setter RawSection(std::string* out) {
  return [out](const YAML::Node& n, const std::string& key) -> absl::Status {
    if (!n.IsMap()) {
      return absl::InvalidArgumentError(StrCat("config key \"", key, "\": expected a mapping"));
    }
    YAML::Emitter emitter;
    emitter << n;
    *out = emitter.c_str();
    return absl::OkStatus();
  };
}

Setter Duration(absl::Duration* out) {
  return [out](const YAML::Node& n, const std::string& key) -> absl::Status {
    if (!n.IsScalar()) return NotScalar(key);
    absl::Duration d;
    if (!absl::ParseDuration(n.Scalar(), &d) || d <= absl::ZeroDuration() ||
        d > absl::Hours(24 * 366)) {
      return absl::InvalidArgumentError(StrCat(
          "config key \"", key, "\": expected a positive duration like 30s, 10m or 8h, got \"",
          n.Scalar(), "\""));
    }
    *out = d;
    return absl::OkStatus();
  };
}

absl::Status Apply(const YAML::Node& node, const std::string& prefix,
                   const std::map<std::string, Setter>& setters) {
  if (!node.IsMap()) {
    return absl::InvalidArgumentError(
        prefix.empty() ? "config must be a mapping of keys to values"
                       : StrCat("config key \"", prefix, "\": expected a mapping"));
  }
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) return absl::InvalidArgumentError("config keys must be strings");
    std::string key = prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar();
    auto it = setters.find(key);
    if (it != setters.end()) {
      if (absl::Status s = it->second(kv.second, key); !s.ok()) return s;
      continue;
    }
    // A section ("http", "session") recurses; anything else is unknown.
    bool is_section = false;
    for (const auto& [name, _] : setters) {
      if (name.rfind(key + ".", 0) == 0) is_section = true;
    }
    if (!is_section) return absl::InvalidArgumentError(StrCat("unknown config key \"", key, "\""));
    if (absl::Status s = Apply(kv.second, key, setters); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// RFC 5424 HOSTNAME / APP-NAME: 1..max printable US-ASCII characters, no spaces.
absl::Status CheckSyslogName(const std::string& key, const std::string& value, size_t max) {
  if (value.empty() || value.size() > max) {
    return absl::InvalidArgumentError(
        StrCat("config key \"", key, "\": must be 1..", max, " characters (RFC 5424)"));
  }
  for (char c : value) {
    if (c < 33 || c > 126) {
      return absl::InvalidArgumentError(StrCat(
          "config key \"", key, "\": only printable US-ASCII without spaces (RFC 5424), got \"",
          value, "\""));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateAuditSyslog(const AuditSyslogConfig& c) {
  const bool any_set = !c.ca_file.empty() || !c.server_name.empty() || !c.client_cert.empty() ||
                       !c.client_key.empty() || c.insecure_skip_verify || !c.hostname.empty();
  if (c.address.empty()) {
    if (any_set) {
      return absl::InvalidArgumentError(
          "config key \"audit.syslog.address\": required when audit.syslog is configured");
    }
    return absl::OkStatus();
  }
  size_t colon = c.address.rfind(':');
  std::string host = colon == std::string::npos ? "" : c.address.substr(0, colon);
  std::string port = colon == std::string::npos ? "" : c.address.substr(colon + 1);
  int64_t p = 0;
  for (char ch : port) p = (ch >= '0' && ch <= '9' && p <= 65535) ? p * 10 + (ch - '0') : 65536;
  if (host.empty() || port.empty() || p < 1 || p > 65535 ||
      host.find_first_of(" \t/") != std::string::npos) {
    return absl::InvalidArgumentError(StrCat("config key \"audit.syslog.address\": expected "
                                             "host:port with a port in 1..65535, got \"",
                                             c.address, "\""));
  }
  if (c.ca_file.empty() && !c.insecure_skip_verify) {
    return absl::InvalidArgumentError(
        "config key \"audit.syslog.ca_file\": required (the receiver's certificate is verified "
        "against it; insecure_skip_verify: true is the explicit, logged opt-out)");
  }
  if (c.client_cert.empty() != c.client_key.empty()) {
    return absl::InvalidArgumentError(
        "config keys \"audit.syslog.client_cert\" and \"audit.syslog.client_key\": set both "
        "or neither");
  }
  if (!c.hostname.empty()) {
    if (absl::Status s = CheckSyslogName("audit.syslog.hostname", c.hostname, 255); !s.ok()) {
      return s;
    }
  }
  return CheckSyslogName("audit.syslog.app_name", c.app_name, 48);
}

}  // namespace

absl::StatusOr<ServerConfig> ParseServerConfig(std::string_view yaml_text) {
  ServerConfig config;
  const std::map<std::string, Setter> setters = {
      {"data_dir", String(&config.data_dir)},
      {"listen", String(&config.listen)},
      {"store", String(&config.store_url)},
      {"admin_password_file", String(&config.admin_password_file)},
      {"master_key_file", String(&config.master_key_file)},
      {"master_key_command", StringList(&config.master_key_command)},
      {"threads", Integer(&config.threads, 1, 256)},
      {"session.idle", Duration(&config.session_idle)},
      {"session.absolute", Duration(&config.session_absolute)},
      {"token.max_ttl", Duration(&config.token_max_ttl)},
      {"http.max_header_bytes", Integer(&config.http.max_header_bytes, 1024, 1 << 20)},
      {"http.max_body_bytes", Integer(&config.http.max_body_bytes, 1024, int64_t{1} << 40)},
      {"http.header_timeout", Duration(&config.http.header_timeout)},
      {"http.request_timeout", Duration(&config.http.request_timeout)},
      {"http.idle_timeout", Duration(&config.http.idle_timeout)},
      {"http.max_connections", Integer(&config.http.max_connections, 1, 1 << 20)},
      {"mfa.required_for", OneOf(&config.mfa.required_for, {"none", "admins", "all"})},
      {"mfa.all_users_in_tenants", StringList(&config.mfa.all_users_in_tenants)},
      {"mfa.step_up_window", Duration(&config.mfa.step_up_window)},
      {"mfa.issuer", String(&config.mfa.issuer)},
      {"audit.durable_reads", Bool(&config.audit_durable_reads)},
      {"audit.poll_waiters", Integer(&config.audit_poll_waiters, 0, 64)},
      {"audit.syslog.address", String(&config.audit_syslog.address)},
      {"audit.syslog.ca_file", String(&config.audit_syslog.ca_file)},
      {"audit.syslog.server_name", String(&config.audit_syslog.server_name)},
      {"audit.syslog.client_cert", String(&config.audit_syslog.client_cert)},
      {"audit.syslog.client_key", String(&config.audit_syslog.client_key)},
      {"audit.syslog.insecure_skip_verify", Bool(&config.audit_syslog.insecure_skip_verify)},
      {"audit.syslog.queue_max", Integer(&config.audit_syslog.queue_max, 1, 10'000'000)},
      {"audit.syslog.hostname", String(&config.audit_syslog.hostname)},
      {"audit.syslog.app_name", String(&config.audit_syslog.app_name)},
      {"agent.listen", String(&config.agent_listen)},
      {"agent.heartbeat_interval", Duration(&config.heartbeat_interval)},
      {"agent.cert_ttl", Duration(&config.node_cert_ttl)},
      {"oidc", RawSection(&config.oidc_yaml)},
      {"images.max_import_bytes", Integer(&config.image_max_import_bytes, 1024, int64_t{1} << 40)},
  };
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(StrCat("config is not valid YAML: ", e.what()));
  }
  if (root.IsNull()) return config;  // an empty file means all defaults
  try {
    if (absl::Status s = Apply(root, "", setters); !s.ok()) return s;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(StrCat("config is not valid YAML: ", e.what()));
  }
  if (config.session_idle > config.session_absolute) {
    return absl::InvalidArgumentError("config: session.idle must not exceed session.absolute");
  }
  if (absl::Status s = ValidateAuditSyslog(config.audit_syslog); !s.ok()) return s;
  return config;
}

absl::StatusOr<ServerConfig> LoadServerConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(StrCat("cannot read config file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto config = ParseServerConfig(ss.str());
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        StrCat(path, ": ", config.status().message()));
  }
  return config;
}

}  // namespace warden::common
