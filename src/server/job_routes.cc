// Handlers of /api/v1/tenants/{tenant}/jobs (issue 6). Authorization happened in
// ApiService::Handle at the URL's tenant (jobs:create, jobs:read, jobs:update, logs:read);
// JobService answers 404 for a job id of another tenant, so a caller who may act in tenant B
// cannot reach tenant A's jobs by naming them under B's URL (IDOR).
#include "absl/strings/numbers.h"
#include "api/job_request.h"
#include "common/status.h"
#include "common/strings.h"
#include "server/api_service.h"
#include "server/job_service.h"

namespace warden::server {
namespace {

using common::Json;
using common::StrCat;

absl::StatusOr<JobService*> JobsOf(JobService* j) {
  if (j == nullptr) return absl::UnavailableError("the job service is not running");
  return j;
}

std::string Query(const Call& c, const std::string& key) {
  auto it = c.req.query.find(key);
  return it == c.req.query.end() ? std::string() : it->second;
}

absl::StatusOr<int64_t> QueryInt(const Call& c, const std::string& key, int64_t def, int64_t max) {
  std::string v = Query(c, key);
  if (v.empty()) return def;
  int64_t out = 0;
  if (!absl::SimpleAtoi(v, &out) || out < 0 || out > max) {
    return absl::InvalidArgumentError(
        StrCat("query \"", key, "\": expected an integer from 0 to ", max, ", got \"", v, "\""));
  }
  return out;
}

}  // namespace

absl::StatusOr<Json> ApiService::SubmitJob(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(JobService * jobs, JobsOf(options_.jobs));
  // The image must be one the job's own tenant imported (image_routes.cc), checked before the job
  // exists; a body that does not parse is refused by Submit with the field named.
  if (auto sub = api::ParseJobSubmit(c.req.body, c.tenant_name); sub.ok()) {
    WARDEN_RETURN_IF_ERROR(AuthorizeJobImage(c, sub->run));
  }
  WARDEN_ASSIGN_OR_RETURN(
      store::Job j,
      jobs->Submit(c.tenant_id, c.tenant_name, c.req.body, c.identity->user_id,
                   [&](api::JobRun& run) { return AuthorizeJobDatasets(c, run); }));
  Json out = jobs->JobJson(j);
  out["tenant"] = c.tenant_name;
  return out;
}

absl::StatusOr<Json> ApiService::ListJobs(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(JobService * jobs, JobsOf(options_.jobs));
  std::optional<std::string> state;
  if (std::string s = Query(c, "state"); !s.empty()) state = s;
  WARDEN_ASSIGN_OR_RETURN(auto list, jobs->List(c.tenant_id, state));
  Json items = Json::array();
  for (const auto& j : list) {
    Json e = jobs->JobJson(j);
    e["tenant"] = c.tenant_name;
    items.push_back(std::move(e));
  }
  return Json{{"items", items}};
}

absl::StatusOr<Json> ApiService::GetJob(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(JobService * jobs, JobsOf(options_.jobs));
  WARDEN_ASSIGN_OR_RETURN(store::Job j, jobs->Get(c.tenant_id, c.req.params["job"]));
  Json out = jobs->JobJson(j);
  out["tenant"] = c.tenant_name;
  return out;
}

absl::StatusOr<Json> ApiService::CancelJob(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(JobService * jobs, JobsOf(options_.jobs));
  WARDEN_ASSIGN_OR_RETURN(absl::Duration grace, api::ParseCancelRequest(c.req.body));
  WARDEN_ASSIGN_OR_RETURN(store::Job j, jobs->Cancel(c.tenant_id, c.req.params["job"], grace));
  Json out = jobs->JobJson(j);
  out["tenant"] = c.tenant_name;
  return out;
}

// GET .../logs?stream=stdout|stderr&offset=N[&wait=S][&tail=N]: the bytes from offset (at most
// 1 MiB), or the last `tail` lines. With wait (seconds, at most 60) the call long-polls until
// new output arrives or the job ends: `job logs -f` loops on next_offset until "ended".
absl::StatusOr<Json> ApiService::JobLogs(Call& c) {
  WARDEN_ASSIGN_OR_RETURN(JobService * jobs, JobsOf(options_.jobs));
  std::string stream = Query(c, "stream");
  if (stream.empty()) stream = "stdout";
  WARDEN_ASSIGN_OR_RETURN(int64_t offset, QueryInt(c, "offset", 0, int64_t{1} << 50));
  WARDEN_ASSIGN_OR_RETURN(int64_t wait, QueryInt(c, "wait", 0, 60));
  WARDEN_ASSIGN_OR_RETURN(int64_t tail, QueryInt(c, "tail", 0, 100000));
  WARDEN_ASSIGN_OR_RETURN(JobLogRead r, jobs->ReadLog(c.tenant_id, c.req.params["job"], stream,
                                                      offset, static_cast<int>(tail),
                                                      absl::Seconds(wait)));
  return Json{{"job", c.req.params["job"]}, {"stream", stream},        {"offset", r.offset},
              {"next_offset", r.next_offset}, {"ended", r.ended},     {"truncated", r.truncated},
              {"data", r.data}};
}

}  // namespace warden::server
