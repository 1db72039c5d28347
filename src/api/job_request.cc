#include "api/job_request.h"

#include <algorithm>

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

absl::StatusOr<JobRun> DecodeRun(const Json& j) {
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
    if (run.image != "host") {
      return absl::InvalidArgumentError(StrCat("field \"image\": \"", run.image,
                                               "\" is not available; only \"host\" is supported so far"));
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
  return run;
}

}  // namespace

absl::StatusOr<JobSubmit> ParseJobSubmit(std::string_view body, std::string_view url_tenant) {
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(body, {.max_depth = 4, .max_bytes = kMaxJobSubmitBytes}));
  if (!j.is_object()) return absl::InvalidArgumentError("job spec must be a JSON object");
  JobSubmit out;
  WARDEN_ASSIGN_OR_RETURN(out.run, DecodeRun(j));
  j.erase("command");
  j.erase("image");
  j.erase("env");
  j.erase("time_limit");
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
  return out;
}

absl::StatusOr<JobRun> JobRunFromJson(const Json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("job run spec must be a JSON object");
  WARDEN_ASSIGN_OR_RETURN(auto f, common::JsonFields::Of(j));
  WARDEN_RETURN_IF_ERROR(f.OnlyKeys({"command", "image", "env", "time_limit"}));
  return DecodeRun(j);
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
