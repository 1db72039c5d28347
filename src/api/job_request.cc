#include "api/job_request.h"

#include <algorithm>

#include "common/ids.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::api {
namespace {

using common::Json;
using common::StrCat;

bool ValidEnvName(std::string_view n) {
  if (n.empty() || n.size() > 128) return false;
  auto alpha = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; };
  if (!alpha(n[0])) return false;
  return std::all_of(n.begin(), n.end(), [&](char c) { return alpha(c) || (c >= '0' && c <= '9'); });
}

absl::Status ForbiddenEnv(std::string_view n) {
  std::string upper(n);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper.starts_with("LD_")) {
    return absl::InvalidArgumentError(
        StrCat("field \"env.", n, "\": dynamic loader variables (LD_*) may not be set by a job"));
  }
  if (upper == "CUDA_VISIBLE_DEVICES" || upper == "NVIDIA_VISIBLE_DEVICES") {
    return absl::InvalidArgumentError(StrCat(
        "field \"env.", n, "\": set by the agent to the job's assigned GPUs; a job may not set it"));
  }
  return absl::OkStatus();
}

bool NameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// '/'-separated segments of NameChar, none empty, "." or "..". `absolute`: starts with '/'.
bool CleanSegments(std::string_view p, bool absolute) {
  if (absolute) {
    if (p.size() < 2 || p.front() != '/') return false;
    p.remove_prefix(1);
  }
  if (p.empty() || p.back() == '/') return false;
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find('/', start);
    if (end == std::string_view::npos) end = p.size();
    std::string_view seg = p.substr(start, end - start);
    if (seg.empty() || seg == "." || seg == "..") return false;
    for (char c : seg) {
      if (!NameChar(c)) return false;
    }
    start = end + 1;
  }
  return true;
}

bool Under(std::string_view path, std::string_view dir) {
  return path == dir || (path.size() > dir.size() && path.starts_with(dir) && path[dir.size()] == '/');
}

absl::StatusOr<std::vector<JobDataset>> DecodeDatasets(const Json& list, bool resolved) {
  if (!list.is_array()) return absl::InvalidArgumentError("field \"datasets\": expected an array of objects");
  if (list.size() > kMaxJobDatasets) {
    return absl::InvalidArgumentError(StrCat("field \"datasets\": more than ", kMaxJobDatasets, " datasets"));
  }
  std::vector<JobDataset> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string f = StrCat("field \"datasets[", i, "]");
    const Json& e = list[i];
    if (!e.is_object()) return absl::InvalidArgumentError(StrCat(f, "\": expected an object"));
    JobDataset d;
    for (const auto& [k, v] : e.items()) {
      const bool server_field = k == "object_id" || k == "version" || k == "size" || k == "sha256" ||
                                k == "chunk_size" || k == "authorized_user" || k == "authorized_token" ||
                                k == "owner_tenant_id" || k == "share_id";
      if (k == "name" || k == "path" || k == "tenant" || k == "object_id" || k == "sha256" ||
          k == "authorized_user" || k == "authorized_token" || k == "owner_tenant_id" ||
          k == "share_id") {
        if (!v.is_string()) return absl::InvalidArgumentError(StrCat(f, ".", k, "\": expected a string"));
      } else if (k == "write") {
        if (!v.is_boolean()) return absl::InvalidArgumentError(StrCat(f, ".write\": expected true or false"));
      } else if (k == "limit_mib" && !resolved) {
        if (!v.is_number_unsigned() || v.get<uint64_t>() == 0 || v.get<uint64_t>() > kMaxWriteLimitMib) {
          return absl::InvalidArgumentError(StrCat(f, ".limit_mib\": expected 1..", kMaxWriteLimitMib));
        }
      } else if (k == "version" || k == "size" || k == "chunk_size") {
        if (!v.is_number_unsigned()) {
          return absl::InvalidArgumentError(StrCat(f, ".", k, "\": expected a non-negative integer"));
        }
      } else {
        return absl::InvalidArgumentError(StrCat(f, "\": unknown key \"", k.substr(0, 64),
                                                 "\" (known: name, path, write, limit_mib, tenant)"));
      }
      if (server_field && !resolved) {
        return absl::InvalidArgumentError(StrCat(f, ".", k, "\": set by the server, not by a client"));
      }
    }
    if (!e.contains("name")) return absl::InvalidArgumentError(StrCat(f, ".name\": required (the vault object)"));
    if (!e.contains("path")) return absl::InvalidArgumentError(StrCat(f, ".path\": required (where the job sees it)"));
    d.name = e["name"].get<std::string>();
    d.path = e["path"].get<std::string>();
    d.write = e.value("write", false);
    if (e.contains("limit_mib") && !resolved) {
      if (!d.write) return absl::InvalidArgumentError(StrCat(f, ".limit_mib\": only for a \"write\": true dataset"));
      d.size = e["limit_mib"].get<uint64_t>() << 20;
    }
    d.tenant = e.value("tenant", "");
    if (d.name.size() > 255 || !CleanSegments(d.name, false)) {
      return absl::InvalidArgumentError(StrCat(
          f, ".name\": not a vault object name (1-255 of [A-Za-z0-9._-/], '/'-separated segments, "
             "no empty, \".\" or \"..\" segment)"));
    }
    if (d.path.size() > kMaxDatasetPathBytes || !CleanSegments(d.path, true)) {
      return absl::InvalidArgumentError(StrCat(
          f, ".path\": must be an absolute, normalized path of [A-Za-z0-9._-/] (no \"..\", \".\", "
             "\"//\" or trailing '/'), at most ", kMaxDatasetPathBytes, " bytes, and not \"/\""));
    }
    for (const char* sys : {"/proc", "/sys", "/dev", "/etc"}) {
      if (Under(d.path, sys)) {
        return absl::InvalidArgumentError(
            StrCat(f, ".path\": \"", d.path, "\" is under ", sys, ", where a dataset may not be mounted"));
      }
    }
    // The sandbox's dataset roots (runtime::kDatasetRoots, which this module does not link):
    // the only places a read-only root offers mount points for datasets.
    if (!Under(d.path, "/data") && !Under(d.path, "/datasets")) {
      return absl::InvalidArgumentError(
          StrCat(f, ".path\": \"", d.path, "\" is not under /data or /datasets (datasets are mounted only there)"));
    }
    if (e.contains("tenant")) {
      WARDEN_RETURN_IF_ERROR(common::ValidateName(StrCat("datasets[", i, "].tenant"), d.tenant));
    }
    for (const JobDataset& other : out) {
      if (Under(d.path, other.path) || Under(other.path, d.path)) {
        return absl::InvalidArgumentError(StrCat(f, ".path\": \"", d.path, "\" collides with \"",
                                                 other.path, "\" (paths must be unique and not nested)"));
      }
    }
    if (resolved) {
      d.object_id = e.value("object_id", "");
      d.version = e.value("version", uint64_t{0});
      d.size = e.value("size", uint64_t{0});
      d.sha256 = e.value("sha256", "");
      d.chunk_size = static_cast<uint32_t>(std::min<uint64_t>(e.value("chunk_size", uint64_t{0}), UINT32_MAX));
      d.authorized_user = e.value("authorized_user", "");
      d.authorized_token = e.value("authorized_token", "");
      d.owner_tenant_id = e.value("owner_tenant_id", "");
      d.share_id = e.value("share_id", "");
    }
    out.push_back(std::move(d));
  }
  return out;
}

absl::StatusOr<JobRun> DecodeRun(const Json& j, bool resolved) {
  JobRun run;
  if (!j.contains("command")) {
    return absl::InvalidArgumentError("field \"command\": required (the program and its arguments)");
  }
  const Json& cmd = j["command"];
  if (!cmd.is_array()) return absl::InvalidArgumentError("field \"command\": expected an array of strings");
  if (cmd.empty()) return absl::InvalidArgumentError("field \"command\": must not be empty");
  if (cmd.size() > kMaxCommandArgs) {
    return absl::InvalidArgumentError(StrCat("field \"command\": more than ", kMaxCommandArgs, " arguments"));
  }
  for (size_t i = 0; i < cmd.size(); ++i) {
    if (!cmd[i].is_string()) {
      return absl::InvalidArgumentError(StrCat("field \"command[", i, "]\": expected a string"));
    }
    std::string a = cmd[i].get<std::string>();
    if (a.size() > kMaxArgBytes) {
      return absl::InvalidArgumentError(StrCat("field \"command[", i, "]\": longer than ", kMaxArgBytes, " bytes"));
    }
    if (a.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(StrCat("field \"command[", i, "]\": contains a NUL byte"));
    }
    if (i == 0 && a.empty()) return absl::InvalidArgumentError("field \"command[0]\": must not be empty");
    run.command.push_back(std::move(a));
  }
  if (j.contains("image")) {
    if (!j["image"].is_string()) return absl::InvalidArgumentError("field \"image\": expected a string");
    run.image = j["image"].get<std::string>();
    // "host" or a manifest digest; that the digest names an image of the job's own tenant is
    // the server's check at submit (image_routes.cc AuthorizeJobImage).
    bool digest = run.image.size() == 71 && run.image.compare(0, 7, "sha256:") == 0 &&
                  std::all_of(run.image.begin() + 7, run.image.end(),
                              [](char ch) { return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'); });
    if (run.image != "host" && !digest) {
      return absl::InvalidArgumentError(StrCat("field \"image\": \"", run.image.substr(0, 80),
                                               "\" is neither \"host\" nor an image digest (sha256:<64 lowercase hex>)"));
    }
  }
  if (j.contains("time_limit")) {
    const Json& t = j["time_limit"];
    absl::Duration d;
    if (!t.is_string() || !absl::ParseDuration(t.get<std::string>(), &d) || d < absl::Seconds(1) ||
        d > absl::Hours(24 * 30)) {
      return absl::InvalidArgumentError(
          "field \"time_limit\": expected a duration from 1s to 720h like \"90s\" or \"2h\"");
    }
    run.time_limit = d;
  }
  if (j.contains("env")) {
    const Json& env = j["env"];
    if (!env.is_object()) return absl::InvalidArgumentError("field \"env\": expected an object of strings");
    if (env.size() > kMaxEnvEntries) {
      return absl::InvalidArgumentError(StrCat("field \"env\": more than ", kMaxEnvEntries, " variables"));
    }
    for (const auto& [k, v] : env.items()) {
      if (!ValidEnvName(k)) {
        return absl::InvalidArgumentError(
            StrCat("field \"env\": \"", k, "\" is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"));
      }
      WARDEN_RETURN_IF_ERROR(ForbiddenEnv(k));
      if (!v.is_string()) return absl::InvalidArgumentError(StrCat("field \"env.", k, "\": expected a string"));
      std::string value = v.get<std::string>();
      if (value.size() > kMaxEnvValueBytes || value.find('\0') != std::string::npos) {
        return absl::InvalidArgumentError(
            StrCat("field \"env.", k, "\": longer than ", kMaxEnvValueBytes, " bytes or holds a NUL"));
      }
      run.env.emplace_back(k, std::move(value));
    }
    std::sort(run.env.begin(), run.env.end());
  }
  if (j.contains("datasets")) {
    WARDEN_ASSIGN_OR_RETURN(run.datasets, DecodeDatasets(j["datasets"], resolved));
  }
  return run;
}

}  // namespace

absl::StatusOr<JobSubmit> ParseJobSubmit(std::string_view body, std::string_view url_tenant) {
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(body, {.max_depth = 4, .max_bytes = kMaxJobSubmitBytes}));
  if (!j.is_object()) return absl::InvalidArgumentError("job spec must be a JSON object");
  JobSubmit out;
  WARDEN_ASSIGN_OR_RETURN(out.run, DecodeRun(j, /*resolved=*/false));
  j.erase("command");
  j.erase("image");
  j.erase("env");
  j.erase("time_limit");
  j.erase("datasets");
  if (j.contains("tenant")) {
    if (!j["tenant"].is_string() || j["tenant"].get<std::string>() != url_tenant) {
      return absl::InvalidArgumentError(StrCat("field \"tenant\": the job is submitted to tenant \"",
                                               url_tenant, "\" (the URL's); it may not name another"));
    }
  } else {
    j["tenant"] = std::string(url_tenant);
  }
  out.placement_json = j.dump();
  return out;
}

Json JobRunToJson(const JobRun& run) {
  Json env = Json::object();
  for (const auto& [k, v] : run.env) env[k] = v;
  Json out{{"command", run.command}, {"image", run.image}, {"env", env}};
  if (run.time_limit > absl::ZeroDuration()) out["time_limit"] = absl::FormatDuration(run.time_limit);
  if (!run.datasets.empty()) {
    Json list = Json::array();
    for (const JobDataset& d : run.datasets) {
      Json e{{"name", d.name}, {"path", d.path}, {"write", d.write}};
      if (!d.tenant.empty()) e["tenant"] = d.tenant;
      if (!d.object_id.empty()) e["object_id"] = d.object_id;
      if (d.version != 0) e["version"] = d.version;
      if (d.size != 0 || !d.object_id.empty()) e["size"] = d.size;
      if (!d.sha256.empty()) e["sha256"] = d.sha256;
      if (d.chunk_size != 0) e["chunk_size"] = d.chunk_size;
      if (!d.authorized_user.empty()) e["authorized_user"] = d.authorized_user;
      if (!d.authorized_token.empty()) e["authorized_token"] = d.authorized_token;
      if (!d.owner_tenant_id.empty()) e["owner_tenant_id"] = d.owner_tenant_id;
      if (!d.share_id.empty()) e["share_id"] = d.share_id;
      list.push_back(std::move(e));
    }
    out["datasets"] = std::move(list);
  }
  return out;
}

absl::StatusOr<JobRun> JobRunFromJson(const Json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("job run spec must be a JSON object");
  WARDEN_ASSIGN_OR_RETURN(auto f, common::JsonFields::Of(j));
  WARDEN_RETURN_IF_ERROR(f.OnlyKeys({"command", "image", "env", "time_limit", "datasets"}));
  return DecodeRun(j, /*resolved=*/true);
}

absl::StatusOr<absl::Duration> ParseCancelRequest(std::string_view body) {
  if (body.empty()) return kDefaultCancelGrace;
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(body, {.max_depth = 2, .max_bytes = 4096}));
  WARDEN_ASSIGN_OR_RETURN(auto f, common::JsonFields::Of(j));
  WARDEN_RETURN_IF_ERROR(f.OnlyKeys({"grace"}));
  WARDEN_ASSIGN_OR_RETURN(auto text, f.OptionalString("grace"));
  if (!text) return kDefaultCancelGrace;
  absl::Duration d;
  if (!absl::ParseDuration(*text, &d) || d < absl::ZeroDuration() || d > absl::Hours(1)) {
    return absl::InvalidArgumentError(
        StrCat("field \"grace\": expected a duration from 0s to 1h like 10s, got \"", *text, "\""));
  }
  return d;
}

}  // namespace warden::api
