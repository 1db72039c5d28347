// `gpuwarden job ...`: submit, list, show, cancel and read the output of jobs over
// /api/v1/tenants/{tenant}/jobs.
#include "cli/job_cmd.h"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "cli/node_cmd.h"
#include "absl/strings/numbers.h"
#include "common/strings.h"

namespace warden::cli {
namespace {

using common::Json;
using common::StrCat;

std::string When(int64_t unix) {
  if (unix <= 0) return "-";
  std::time_t t = unix;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string Or(const std::string& s) { return s.empty() ? "-" : s; }

std::string GpuText(const Json& j) {
  std::string out;
  for (const auto& a : j.value("assignment", Json::array())) {
    std::string e = a.value("uuid", "");
    if (a.contains("mig_profile")) e += StrCat("[", a.value("mig_profile", ""), "@", a.value("mig_start", 0), "]");
    if (a.value("millis", 1000) < 1000) e += StrCat("[", a.value("millis", 0) / 10.0, "%]");
    out += StrCat(out.empty() ? "" : ",", e);
  }
  return Or(out);
}


std::string ExitText(const Json& j) {
  return j.contains("exit_code") && !j["exit_code"].is_null() ? j["exit_code"].dump() : "-";
}

void PrintJob(const Json& j) {
  std::cout << "id:         " << j.value("id", "") << "\n"
            << "name:       " << j.value("name", "") << "\n"
            << "tenant:     " << j.value("tenant", "") << "\n"
            << "state:      " << j.value("state", "")
            << (j.value("cancel_requested", false) ? " (cancel requested)" : "") << "\n"
            << "reason:     " << Or(j.value("reason", "")) << "\n"
            << "node:       " << Or(j.value("node", "")) << "\n"
            << "gpus:       " << GpuText(j) << "\n"
            << "exit code:  " << ExitText(j) << "\n"
            << "submitted:  " << When(j.value("submitted_at", int64_t{0})) << " UTC\n"
            << "started:    " << When(j.value("started_at", int64_t{0})) << "\n"
            << "finished:   " << When(j.value("finished_at", int64_t{0})) << "\n";
  const Json spec = j.value("spec", Json::object());
  std::string cmd;
  for (const auto& a : spec.value("run", Json::object()).value("command", Json::array())) {
    cmd += StrCat(cmd.empty() ? "" : " ", a.get<std::string>());
  }
  std::cout << "command:    " << Or(cmd) << "\n"
            << "placement:  " << spec.value("placement", Json::object()).dump() << "\n";
}

}  // namespace

JobCommands AddJobCommands(CLI::App& app) {
  auto st = std::make_shared<JobCommands::State>();
  JobCommands c;
  c.state = st;
  c.job = app.add_subcommand("job", "submit and follow jobs")->require_subcommand(1);
  c.job->add_option("--tenant", st->tenant, "tenant (default: your own tenant)");
  c.submit = c.job->add_subcommand(
      "submit",
      "submit a job: -f SPEC.json, or flags and the command after --\n"
      "  e.g. gpuwarden job submit --name train --gpus 1 -- python3 train.py --epochs 3");
  c.submit->add_option("-f,--file", st->file,
                       "job spec JSON (scheduler fields plus command, image, env); flags below "
                       "are then not allowed");
  c.submit->add_option("--name", st->name, "job name (default: the program's name)");
  c.submit->add_option("--gpus", st->gpus, "whole GPUs, all on one node");
  c.submit->add_option("--mig", st->mig, "a MIG profile instead, e.g. 1g.10gb or 3g.40gb");
  c.submit->add_option("--fraction", st->fraction, "a time-sliced share of one GPU, e.g. 0.25");
  c.submit->add_option("--cpu-millis", st->cpu_millis, "CPU in thousandths of a core (default 1000)");
  c.submit->add_option("--memory-mib", st->memory_mib, "memory in MiB (default 1024)");
  c.submit->add_option("--priority", st->priority, "-1000..1000, higher first within the tenant");
  c.submit->add_option("--isolation", st->isolation, "shared, mig, exclusive or dedicated");
  c.submit->add_option("--pool", st->pool, "node pool");
  c.submit->add_option("--gpu-model", st->gpu_model, "GPU model, e.g. H100-80GB");
  c.submit->add_option("--image", st->image, "host (default) or an image digest sha256:... imported with `gpuwarden image import`");
  c.submit->add_option("--env", st->env, "KEY=VALUE for the job's environment (repeatable)");
  c.submit->add_option("--time-limit", st->time_limit,
                       "wall-time limit, e.g. 90s or 2h (1s..720h; default: the agent's, 24h)");
  c.submit->add_option("--dataset", st->datasets,
                       "NAME:PATH mounts your tenant's vault dataset NAME read-only at PATH; "
                       "TENANT:NAME:PATH mounts TENANT's dataset shared to this job's tenant "
                       "(accepted share + read and copy at TENANT) (repeatable)")
      ->allow_extra_args(false);
  c.submit->add_option("--write-dataset", st->write_datasets,
                       "NAME:PATH[:LIMIT_MIB] gives the job an empty writable directory PATH (a tmpfs of "
                       "LIMIT_MIB, default 256); if the job exits 0, the file PATH/<last segment of NAME> "
                       "becomes the next version of your dataset NAME (repeatable; needs data write)")
      ->allow_extra_args(false);
  c.submit->add_option("command", st->command, "the program and its arguments (after --)");
  c.ls = c.job->add_subcommand("ls", "list jobs");
  c.ls->add_option("--state", st->state, "only jobs in this state: queued, placed, running, done, failed, cancelled");
  c.show = c.job->add_subcommand("show", "show one job: state, node, GPUs, exit code, spec");
  c.show->add_option("id", st->id, "job id")->required();
  c.cancel = c.job->add_subcommand("cancel", "cancel a job (SIGTERM, then SIGKILL after the grace period)");
  c.cancel->add_option("id", st->id, "job id")->required();
  c.cancel->add_option("--grace", st->grace, "time between SIGTERM and SIGKILL (default 10s, at most 1h)");
  c.logs = c.job->add_subcommand("logs", "print a job's output");
  c.logs->add_option("id", st->id, "job id")->required();
  c.logs->add_flag("-f,--follow", st->follow, "keep printing new output until the job ends");
  c.logs->add_flag("--stderr", st->stderr_stream, "print standard error instead of standard output");
  c.logs->add_option("--tail", st->tail, "only the last N lines (then follow, with -f)");
  return c;
}

bool JobCommands::Parsed() const { return job != nullptr && job->parsed(); }

void RunJobCommand(const JobCommands& c, const JobCommandContext& ctx) {
  const auto& s = *c.state;
  const bool json = ctx.output == "json";
  const std::string tenant = s.tenant.empty() ? ctx.default_tenant : s.tenant;
  if (tenant.empty()) {
    ctx.fail("no tenant: you are a cluster operator; name one with --tenant", 2);
  }
  const std::string base = StrCat("/api/v1/tenants/", tenant, "/jobs");
  if (c.submit->parsed()) {
    Json body;
    if (!s.file.empty()) {
      if (!s.command.empty() || s.gpus || !s.mig.empty() || s.fraction > 0) {
        ctx.fail("-f SPEC.json carries the whole spec; do not add a command or GPU flags", 2);
      }
      std::ifstream in(s.file == "-" ? "/dev/stdin" : s.file);
      if (!in) ctx.fail(StrCat("cannot read ", s.file), 2);
      std::stringstream ss;
      ss << in.rdbuf();
      body = Json::parse(ss.str(), nullptr, false);
      if (body.is_discarded() || !body.is_object()) ctx.fail(StrCat(s.file, " is not a JSON object"), 2);
    } else {
      if (s.command.empty()) ctx.fail("no command: put it after --, or give -f SPEC.json", 2);
      int kinds = (s.gpus > 0) + !s.mig.empty() + (s.fraction > 0);
      if (kinds > 1) ctx.fail("choose one of --gpus, --mig and --fraction", 2);
      std::string name = s.name;
      if (name.empty()) {
        name = s.command[0].substr(s.command[0].rfind('/') + 1);
        for (char& ch : name) {
          ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
          if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.') ch = '-';
        }
      }
      body = Json{{"name", name}, {"command", s.command}, {"image", s.image}};
      if (s.gpus > 0) body["gpus"] = s.gpus;
      if (!s.mig.empty()) body["mig_profile"] = s.mig;
      if (s.fraction > 0) body["gpu_fraction"] = s.fraction;
      if (s.cpu_millis > 0) body["cpu_millis"] = s.cpu_millis;
      if (s.memory_mib > 0) body["memory_mib"] = s.memory_mib;
      if (s.priority != 0) body["priority"] = s.priority;
      if (!s.isolation.empty()) body["isolation"] = s.isolation;
      if (!s.pool.empty()) body["pool"] = s.pool;
      if (!s.gpu_model.empty()) body["gpu_model"] = s.gpu_model;
      if (!s.time_limit.empty()) body["time_limit"] = s.time_limit;
      Json env = Json::object();
      for (const auto& kv : s.env) {
        size_t eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) ctx.fail(StrCat("--env \"", kv, "\": expected KEY=VALUE"), 2);
        env[kv.substr(0, eq)] = kv.substr(eq + 1);
      }
      if (!env.empty()) body["env"] = env;
      Json datasets = Json::array();
      for (const auto& spec : s.datasets) {
        // NAME:PATH (the job's own tenant) or TENANT:NAME:PATH (another tenant's dataset through
        // an accepted share). Neither object names nor paths may contain ':'.
        size_t colon = spec.rfind(':');
        size_t first = spec.find(':');
        std::string tenant = first != colon ? spec.substr(0, first) : "";
        size_t name_at = first != colon ? first + 1 : 0;
        if (colon == std::string::npos || colon == name_at || colon + 1 == spec.size() ||
            (first != colon && (first == 0 || spec.find(':', first + 1) != colon))) {
          ctx.fail(StrCat("--dataset \"", spec, "\": expected NAME:PATH or TENANT:NAME:PATH"), 2);
        }
        Json e{{"name", spec.substr(name_at, colon - name_at)}, {"path", spec.substr(colon + 1)}};
        if (!tenant.empty()) e["tenant"] = tenant;
        datasets.push_back(std::move(e));
      }
      for (const auto& spec : s.write_datasets) {
        size_t colon = spec.find(':');
        size_t second = colon == std::string::npos ? std::string::npos : spec.find(':', colon + 1);
        std::string path = spec.substr(colon == std::string::npos ? 0 : colon + 1,
                                       second == std::string::npos ? std::string::npos : second - colon - 1);
        if (colon == std::string::npos || colon == 0 || path.empty()) {
          ctx.fail(StrCat("--write-dataset \"", spec, "\": expected NAME:PATH[:LIMIT_MIB]"), 2);
        }
        Json e{{"name", spec.substr(0, colon)}, {"path", path}, {"write", true}};
        if (second != std::string::npos) {
          uint64_t mib = 0;
          if (!absl::SimpleAtoi(spec.substr(second + 1), &mib)) {
            ctx.fail(StrCat("--write-dataset \"", spec, "\": LIMIT_MIB must be a number"), 2);
          }
          e["limit_mib"] = mib;
        }
        datasets.push_back(std::move(e));
      }
      if (!datasets.empty()) body["datasets"] = datasets;
    }
    Json j = ctx.request("POST", base, body);
    if (json) {
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << "submitted job " << j.value("id", "") << " (" << j.value("name", "") << ") to tenant "
                << tenant << "\n"
                << "  follow it: gpuwarden job show " << j.value("id", "") << "; gpuwarden job logs -f "
                << j.value("id", "") << "\n";
    }
  } else if (c.ls->parsed()) {
    Json j = ctx.request("GET", s.state.empty() ? base : StrCat(base, "?state=", s.state), nullptr);
    if (json) {
      std::cout << j.dump(2) << "\n";
      return;
    }
    std::vector<std::vector<std::string>> rows = {
        {"ID", "NAME", "STATE", "NODE", "GPUS", "EXIT", "SUBMITTED", "REASON"}};
    for (const auto& e : j["items"]) {
      std::string reason = e.value("reason", "");
      if (reason.size() > 60) reason = reason.substr(0, 57) + "...";
      rows.push_back({e.value("id", ""), e.value("name", ""), e.value("state", ""),
                      Or(e.value("node", "")), GpuText(e), ExitText(e),
                      When(e.value("submitted_at", int64_t{0})), Or(reason)});
    }
    PrintRows(rows);
  } else if (c.show->parsed()) {
    Json j = ctx.request("GET", StrCat(base, "/", s.id), nullptr);
    if (json) {
      std::cout << j.dump(2) << "\n";
    } else {
      PrintJob(j);
    }
  } else if (c.cancel->parsed()) {
    Json j = ctx.request("POST", StrCat(base, "/", s.id, "/cancel"), Json{{"grace", s.grace}});
    if (json) {
      std::cout << j.dump(2) << "\n";
    } else if (j.value("state", "") == "cancelled") {
      std::cout << "cancelled job " << s.id << "\n";
    } else {
      std::cout << "cancelling job " << s.id << ": SIGTERM now, SIGKILL after " << s.grace << "\n";
    }
  } else if (c.logs->parsed()) {
    const std::string stream = s.stderr_stream ? "stderr" : "stdout";
    const std::string path = StrCat(base, "/", s.id, "/logs?stream=", stream);
    int64_t offset = 0;
    if (s.tail > 0) {
      Json j = ctx.request("GET", StrCat(path, "&tail=", s.tail), nullptr);
      std::cout << j.value("data", "") << std::flush;
      offset = j.value("next_offset", int64_t{0});
      if (!s.follow) return;
    }
    for (;;) {
      Json j = ctx.request("GET", StrCat(path, "&offset=", offset, s.follow ? "&wait=20" : ""), nullptr);
      std::cout << j.value("data", "") << std::flush;
      offset = j.value("next_offset", offset);
      const bool more = !j.value("data", "").empty();
      if (j.value("ended", false) && !more) break;
      if (!s.follow && !more) break;
      // The server answers at once (without waiting) when too many follows wait already.
      if (!more) std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
}

}  // namespace warden::cli
