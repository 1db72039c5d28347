// The job half of the agents' mTLS API: job reports in heartbeats and the log-shipping route.
// The node is already authenticated (AgentApi::Serve); JobService checks that a job belongs to
// the node before accepting anything about it.
#include "common/json.h"
#include "common/strings.h"
#include "server/agent_api.h"

namespace warden::server {

using common::Json;
using common::StrCat;

namespace {

constexpr size_t kMaxReports = 1024;

absl::Status UuidList(const Json& j, const char* field, std::vector<std::string>& out) {
  if (!j.contains(field)) return absl::OkStatus();
  const Json& list = j[field];
  if (!list.is_array() || list.size() > 64) {
    return absl::InvalidArgumentError(StrCat("field \"gpus.", field, "\": expected at most 64 UUIDs"));
  }
  for (const Json& u : list) {
    if (!u.is_string() || u.get<std::string>().size() > 128) {
      return absl::InvalidArgumentError(StrCat("field \"gpus.", field, "\": expected UUID strings"));
    }
    out.push_back(u.get<std::string>());
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status DecodeAgentJobReports(const Json& body, std::vector<AgentJobReport>& reports,
                                   AgentGpuReport& gpus) {
  if (body.contains("jobs")) {
    const Json& list = body["jobs"];
    if (!list.is_array()) return absl::InvalidArgumentError("field \"jobs\": expected an array");
    if (list.size() > kMaxReports) {
      return absl::InvalidArgumentError(StrCat("field \"jobs\": more than ", kMaxReports, " reports"));
    }
    for (size_t i = 0; i < list.size(); ++i) {
      const Json& r = list[i];
      auto f = common::JsonFields::Of(r);
      if (!f.ok()) return absl::InvalidArgumentError(StrCat("field \"jobs[", i, "]\": expected an object"));
      if (auto s = f->OnlyKeys({"id", "state", "exit_code", "reason"}); !s.ok()) return s;
      AgentJobReport rep;
      auto id = f->RequiredString("id");
      auto state = f->RequiredString("state");
      auto code = f->OptionalInt("exit_code");
      auto reason = f->OptionalString("reason");
      if (!id.ok()) return id.status();
      if (!state.ok()) return state.status();
      if (!code.ok()) return code.status();
      if (!reason.ok()) return reason.status();
      rep.id = *id;
      rep.state = *state;
      static const char* kStates[] = {"running", "exited", "failed_to_start", "cancelled", "oom", "lost",
                                      "write_back_failed"};
      bool known = false;
      for (const char* k : kStates) known = known || rep.state == k;
      if (!known) {
        return absl::InvalidArgumentError(StrCat("field \"jobs[", i, "].state\": \"", rep.state,
                                                 "\" is not a job state an agent reports"));
      }
      if (*code) {
        rep.has_exit_code = true;
        rep.exit_code = **code;
      }
      rep.reason = reason->value_or("").substr(0, 512);
      reports.push_back(std::move(rep));
    }
  }
  if (body.contains("gpus")) {
    const Json& g = body["gpus"];
    auto f = common::JsonFields::Of(g);
    if (!f.ok()) return absl::InvalidArgumentError("field \"gpus\": expected an object");
    if (auto s = f->OnlyKeys({"clean", "dirty"}); !s.ok()) return s;
    if (auto s = UuidList(g, "clean", gpus.clean); !s.ok()) return s;
    if (auto s = UuidList(g, "dirty", gpus.dirty); !s.ok()) return s;
  }
  return absl::OkStatus();
}

http::Response AgentApi::JobLogs(http::Request& req, const cluster::AgentPeer& peer) {
  if (jobs_ == nullptr) {
    return http::Response::Error(absl::UnavailableError("the job service is not running"));
  }
  std::string stream = req.query.count("stream") ? req.query["stream"] : "";
  int64_t offset = -1;
  if (req.query.count("offset")) {
    const std::string& o = req.query["offset"];
    if (!o.empty() && o.size() < 19 && o.find_first_not_of("0123456789") == std::string::npos) {
      offset = std::stoll(o);
    }
  }
  if (offset < 0) {
    return http::Response::Error(
        absl::InvalidArgumentError("query \"offset\": expected a non-negative integer"));
  }
  auto next = jobs_->AppendLog(peer.node_id, std::string(req.Param("job")), stream, offset, req.body);
  if (!next.ok()) {
    http::Response r = http::Response::Error(next.status());
    // Refusals name a job this node does not hold: worth a line in the audit log.
    Audit(req, peer.node_name, "jobs:logs-ship", r.status, std::string(next.status().message()));
    return r;
  }
  return http::Response::Json(200, Json{{"next_offset", *next}});
}

http::Response AgentApi::WaitForWork(http::Request& req, const cluster::AgentPeer& peer) {
  if (jobs_ == nullptr) {
    return http::Response::Error(absl::UnavailableError("the job service is not running"));
  }
  auto j = common::ParseJsonStrict(req.body, {.max_depth = 2, .max_bytes = 256});
  if (!j.ok() || !j->is_object() || j->size() != 1 || !j->contains("generation") ||
      !(*j)["generation"].is_number_unsigned()) {
    return http::Response::Error(
        absl::InvalidArgumentError("body must be {\"generation\": <non-negative integer>}"));
  }
  // Shorter than the agent's client timeout, long enough that idle agents cost little. The wait
  // holds no thread: the answer is written when the node's generation moves (or at the timeout,
  // or when the server stops).
  constexpr std::chrono::seconds kMaxNodeWait{20};
  const uint64_t seen = (*j)["generation"].get<uint64_t>();
  JobService* jobs = jobs_;
  std::string node_id = peer.node_id;
  http::Deferred wait;
  wait.timeout = kMaxNodeWait;
  wait.on_timeout = [seen] { return http::Response::Json(200, Json{{"generation", seen}}); };
  wait.start = [jobs, node_id, seen](http::Deferred::Complete complete) -> std::function<void()> {
    auto id = jobs->WatchNode(node_id, seen, [complete](uint64_t gen) {
      complete(http::Response::Json(200, Json{{"generation", gen}}));
    });
    if (!id.ok()) {
      complete(http::Response::Error(id.status()));
      return nullptr;
    }
    if (*id == 0) return nullptr;
    return [jobs, node_id, watch = *id] { jobs->CancelNodeWatch(node_id, watch); };
  };
  return http::Response::Later(std::move(wait));
}

}  // namespace warden::server
