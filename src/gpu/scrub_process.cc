// The scrub report's JSON form and the subprocess scrubber the agent uses. Why a child process:
// the CUDA driver is initialised once per process and cannot be re-targeted (a MIG instance is
// visible only through CUDA_VISIBLE_DEVICES, read at cuInit), a driver fault or hang must not
// take the agent down with it, and the child's exit tears its CUDA context down completely.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <set>

#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"
#include "gpu/handoff.h"

extern char** environ;

namespace warden::gpu {
namespace {

using common::Json;
using common::StrCat;

constexpr size_t kMaxReportBytes = 64 * 1024;

class SubprocessScrubber final : public MemoryScrubber {
 public:
  SubprocessScrubber(std::vector<std::string> argv, absl::Duration timeout)
      : argv_(std::move(argv)), timeout_(timeout) {}

  absl::StatusOr<ScrubReport> Scrub(std::string_view uuid, const ScrubOptions& o) override {
    if (argv_.empty()) return absl::InvalidArgumentError("scrub command is empty");
    for (char c : uuid) {
      // UUIDs are hex, dashes and the prefix; anything else never reaches argv or the env.
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') {
        return absl::InvalidArgumentError("device UUID has characters other than [A-Za-z0-9-]");
      }
    }
    std::vector<std::string> args = argv_;
    args.push_back("--uuid");
    args.push_back(std::string(uuid));
    args.push_back("--min-fraction");
    args.push_back(StrCat(o.min_fraction));
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, "CUDA_VISIBLE_DEVICES=", 21) != 0) env.push_back(*e);
    }
    env.push_back(StrCat("CUDA_VISIBLE_DEVICES=", uuid));
    std::vector<char*> cargv, cenv;
    for (auto& a : args) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    for (auto& e : env) cenv.push_back(e.data());
    cenv.push_back(nullptr);

    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) {
      return absl::InternalError(StrCat("pipe: ", std::strerror(errno)));
    }
    pid_t pid = ::fork();
    if (pid < 0) {
      ::close(out[0]);
      ::close(out[1]);
      return absl::InternalError(StrCat("fork: ", std::strerror(errno)));
    }
    if (pid == 0) {
      ::dup2(out[1], 1);
      int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull >= 0) ::dup2(devnull, 0);
      ::execve(cargv[0], cargv.data(), cenv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    std::string text;
    bool timed_out = false;
    const auto deadline =
        std::chrono::steady_clock::now() + absl::ToChronoMilliseconds(timeout_);
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        timed_out = true;
        break;
      }
      pollfd pfd{out[0], POLLIN, 0};
      int n = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) continue;
      char buf[4096];
      ssize_t got = ::read(out[0], buf, sizeof(buf));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;
      if (text.size() < kMaxReportBytes) text.append(buf, static_cast<size_t>(got));
    }
    ::close(out[0]);
    if (timed_out) ::kill(pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (timed_out) {
      return absl::DeadlineExceededError(
          StrCat("scrub of ", uuid, " did not finish within ", absl::FormatDuration(timeout_),
                 " and was killed"));
    }
    if (WIFSIGNALED(status)) {
      return absl::UnavailableError(
          StrCat("scrub of ", uuid, " died with signal ", WTERMSIG(status)));
    }
    // Exit 0: passed; 3: ran and did not pass (report on stdout); anything else: could not run,
    // stdout carries {"error": ...}.
    auto j = common::ParseJsonStrict(text, {.max_depth = 4, .max_bytes = kMaxReportBytes});
    if (j.ok() && j->is_object() && j->contains("error") && (*j)["error"].is_string()) {
      std::string why = (*j)["error"].get<std::string>();
      if (why.size() > 512) why.resize(512);
      return absl::UnavailableError(StrCat("scrub of ", uuid, ": ", why));
    }
    auto report = ScrubReportFromJson(text);
    if (!report.ok()) {
      return absl::UnavailableError(StrCat("scrub of ", uuid, " exited with status ",
                                           WEXITSTATUS(status), " and no valid report: ",
                                           report.status().message()));
    }
    if (report->device_uuid != uuid) {
      return absl::UnavailableError(StrCat("scrub of ", uuid, " reported another device"));
    }
    if (report->passed != (WEXITSTATUS(status) == 0)) {
      return absl::UnavailableError(StrCat("scrub of ", uuid, ": exit status ",
                                           WEXITSTATUS(status), " contradicts its report"));
    }
    return report;
  }

 private:
  std::vector<std::string> argv_;
  absl::Duration timeout_;
};

}  // namespace

std::unique_ptr<MemoryScrubber> NewSubprocessScrubber(std::vector<std::string> argv,
                                                      absl::Duration timeout) {
  return std::make_unique<SubprocessScrubber>(std::move(argv), timeout);
}

std::string ScrubReportToJson(const ScrubReport& r) {
  return Json{{"device_uuid", r.device_uuid},
              {"device_name", r.device_name},
              {"total_bytes", r.total_bytes},
              {"free_bytes", r.free_bytes},
              {"scrubbed_bytes", r.scrubbed_bytes},
              {"chunks", r.chunks},
              {"fraction_of_free", r.fraction_of_free},
              {"write_seconds", r.write_seconds},
              {"write_gbps", r.write_gbps},
              {"verify_seconds", r.verify_seconds},
              {"verify_gbps", r.verify_gbps},
              {"total_seconds", r.total_seconds},
              {"pattern_mismatches", r.pattern_mismatches},
              {"zero_mismatches", r.zero_mismatches},
              {"passed", r.passed},
              {"failure", r.failure}}
      .dump();
}

absl::StatusOr<ScrubReport> ScrubReportFromJson(std::string_view text) {
  auto bad = [](std::string_view why) {
    return absl::InvalidArgumentError(StrCat("scrub report: ", why));
  };
  auto parsed = common::ParseJsonStrict(text, {.max_depth = 2, .max_bytes = kMaxReportBytes});
  if (!parsed.ok()) return bad(std::string(parsed.status().message()));
  const Json& j = *parsed;
  static const std::set<std::string> kKeys = {
      "device_uuid",   "device_name",    "total_bytes",        "free_bytes",
      "scrubbed_bytes", "chunks",        "fraction_of_free",   "write_seconds",
      "write_gbps",    "verify_seconds", "verify_gbps",        "total_seconds",
      "pattern_mismatches", "zero_mismatches", "passed",       "failure"};
  if (!j.is_object()) return bad("not an object");
  for (const auto& [k, v] : j.items()) {
    if (!kKeys.count(k)) return bad(StrCat("unknown key ", k));
  }
  if (j.size() != kKeys.size()) return bad("missing keys");
  ScrubReport r;
  try {
    r.device_uuid = j.at("device_uuid").get<std::string>();
    r.device_name = j.at("device_name").get<std::string>();
    r.total_bytes = j.at("total_bytes").get<uint64_t>();
    r.free_bytes = j.at("free_bytes").get<uint64_t>();
    r.scrubbed_bytes = j.at("scrubbed_bytes").get<uint64_t>();
    r.chunks = j.at("chunks").get<int>();
    r.fraction_of_free = j.at("fraction_of_free").get<double>();
    r.write_seconds = j.at("write_seconds").get<double>();
    r.write_gbps = j.at("write_gbps").get<double>();
    r.verify_seconds = j.at("verify_seconds").get<double>();
    r.verify_gbps = j.at("verify_gbps").get<double>();
    r.total_seconds = j.at("total_seconds").get<double>();
    r.pattern_mismatches = j.at("pattern_mismatches").get<uint64_t>();
    r.zero_mismatches = j.at("zero_mismatches").get<uint64_t>();
    r.passed = j.at("passed").get<bool>();
    r.failure = j.at("failure").get<std::string>();
  } catch (const Json::exception& e) {
    return bad(StrCat("wrong type: ", e.what()));
  }
  // The verdict is re-derived, not trusted: a report cannot claim a pass with mismatches.
  if (r.passed && (r.pattern_mismatches + r.zero_mismatches > 0 || !r.failure.empty())) {
    return bad("claims a pass with mismatches or a failure");
  }
  return r;
}

}  // namespace warden::gpu
