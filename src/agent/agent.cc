// `gpuwarden agent`: join, then heartbeat over mTLS until stopped.
//
// Threats answered here:
// - A man in the middle at join time: the join token names the server CA's fingerprint; the agent
//   pins that CA before the token's secret leaves the machine.
// - Theft of the node key: it is generated on the node, written 0600 (O_EXCL, never chmod-ed),
//   and never sent anywhere; only CSRs are.
// - A long-lived stolen certificate: certificates last 24 h by default and are renewed (with a
//   fresh key) at two thirds of their life.
#include "agent/agent.h"
#include "agent/dataset_stager.h"
#include "agent/gpu_handoff.h"
#include "agent/image_cache.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "agent/job_runner.h"
#include "agent/mig_manager.h"
#include "agent/sandbox_setup.h"
#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"
#include "http/client.h"
#include "pki/pki.h"
#include "runtime/runtime.h"

namespace warden::agent {
namespace {

using common::Json;
using common::StrCat;

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }
std::atomic<bool> g_exit_now{false};  // a push request is still in flight at exit (WorkWaiter)

void Log(const std::string& line) {
  auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  char ts[32];
  std::strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
  std::cerr << ts << " agent: " << line << std::endl;
}

// Wakes the session loop early: the server pushed a change (WorkWaiter below).
std::mutex g_wake_mu;
std::condition_variable g_wake_cv;
bool g_woken = false;  // guarded by g_wake_mu

void WakeSession() {
  {
    std::lock_guard lock(g_wake_mu);
    g_woken = true;
  }
  g_wake_cv.notify_all();
}

// Sleeps up to `d`, returning early when woken (true; *woken set) or asked to stop (false). The
// stop flag is set from a signal handler, which cannot notify: it is checked every 20 ms.
bool SleepOrStop(absl::Duration d, bool* woken = nullptr) {
  auto until = std::chrono::steady_clock::now() + absl::ToChronoMilliseconds(d);
  std::unique_lock lock(g_wake_mu);
  while (!g_woken && std::chrono::steady_clock::now() < until) {
    if (g_stop.load()) return false;
    g_wake_cv.wait_until(lock, std::min(until, std::chrono::steady_clock::now() +
                                                   std::chrono::milliseconds(20)));
  }
  if (woken != nullptr) *woken = g_woken;
  g_woken = false;
  return !g_stop.load();
}

// Push from the server: long-polls /agent/v1/nodes/{id}/wait on its own connection and wakes the
// session loop the moment the node's assignments change, so a placed job starts now instead of
// at the next heartbeat (server/job_service.h WatchNode). Heartbeats stay the source of
// truth: a lost wake only costs latency. The identity (certificate and key) is replaced after a
// renewal through SetClient.
class WorkWaiter {
 public:
  ~WorkWaiter() { Stop(); }

  void SetClient(http::ClientOptions opts, std::string path) {
    std::lock_guard lock(sh_->mu);
    opts.timeout = absl::Seconds(40);  // the server answers within 20 s
    sh_->opts = std::move(opts);
    sh_->path = std::move(path);
    ++sh_->version;
    if (!thread_.joinable()) thread_ = std::thread([sh = sh_] { Loop(*sh); });
  }

  // Asks the thread to stop and joins it once its request returns. A request in flight can last
  // up to the server's 20 s wait, so Stop gives it `grace` and otherwise detaches it (it owns its
  // state through a shared_ptr); g_exit_now then tells RunAgentCommand to end the process without
  // exit-time destructors (OpenSSL's among them) running under that thread.
  void Stop(absl::Duration grace = absl::Milliseconds(300)) {
    sh_->stop.store(true);
    if (!thread_.joinable()) return;
    auto until = std::chrono::steady_clock::now() + absl::ToChronoMilliseconds(grace);
    while (!sh_->done.load() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (sh_->done.load()) {
      thread_.join();
    } else {
      thread_.detach();
      g_exit_now.store(true);
    }
  }

 private:
  struct Shared {
    std::mutex mu;
    http::ClientOptions opts;  // guarded by mu
    std::string path;          // guarded by mu
    uint64_t version = 0;      // guarded by mu
    std::atomic<bool> stop{false}, done{false};
  };

  static void Loop(Shared& sh) {
    std::unique_ptr<http::HttpsClient> client;
    uint64_t have_version = 0, generation = 0;
    while (!sh.stop.load() && !g_stop.load()) {
      std::string path;
      {
        std::lock_guard lock(sh.mu);
        if (have_version != sh.version || !client) {
          auto c = http::HttpsClient::Create(sh.opts);
          if (c.ok()) client = std::move(*c);
          have_version = sh.version;
        }
        path = sh.path;
      }
      absl::Duration pause = absl::Seconds(1);
      if (client) {
        const absl::Time asked = absl::Now();
        auto resp = client->Do("POST", path, Json{{"generation", generation}}.dump(),
                               {{"Content-Type", "application/json"}});
        if (resp.ok() && resp->status == 200) {
          auto j = common::ParseJsonStrict(resp->body);
          uint64_t g = j.ok() && j->is_object() ? j->value("generation", generation) : generation;
          // An unchanged answer that came at once (a server shutting down) is not asked again
          // in a tight loop.
          pause = absl::Now() - asked < absl::Seconds(1) && g == generation ? absl::Seconds(1)
                                                                              : absl::ZeroDuration();
          if (g != generation) {
            generation = g;
            WakeSession();
          }
        } else if (resp.ok() && resp->status == 429) {
          pause = absl::Seconds(30);  // too many agents wait already: heartbeats only for now
        } else if (!resp.ok()) {
          client.reset();
        }
      }
      for (auto until = absl::Now() + pause;
           absl::Now() < until && !sh.stop.load() && !g_stop.load();) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    sh.done.store(true);
  }

  std::shared_ptr<Shared> sh_ = std::make_shared<Shared>();
  std::thread thread_;
};

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Creates `path` with mode `mode` exclusively (after removing a leftover), writes and fsyncs.
absl::Status WriteFileExclusive(const std::string& path, std::string_view data, mode_t mode) {
  ::unlink(path.c_str());
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return absl::InternalError(StrCat("create ", path, ": ", std::strerror(errno)));
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) {
    ::unlink(path.c_str());
    return absl::InternalError(StrCat("write ", path));
  }
  return absl::OkStatus();
}

struct Paths {
  std::string dir;
  std::string Ca() const { return dir + "/ca.crt"; }
  std::string Key() const { return dir + "/node.key"; }
  std::string Cert() const { return dir + "/node.crt"; }
  std::string State() const { return dir + "/node.json"; }
};

struct NodeState {
  std::string node_id;
  std::string name;
  std::string server_url;
  std::string agent_url;
  std::string ca_pem;
  std::string key_pem;
  std::string cert_pem;
};

// Finishes a renewal interrupted between its renames: node.crt.new (complete, it parses) wins
// together with node.key.new; anything else left over is discarded.
void RecoverRenewal(const Paths& p) {
  std::string crt_new = p.Cert() + ".new", key_new = p.Key() + ".new";
  auto cert = ReadWholeFile(crt_new);
  if (cert.ok() && pki::ReadNodeIdentity(*cert).ok()) {
    if (::access(key_new.c_str(), F_OK) == 0) ::rename(key_new.c_str(), p.Key().c_str());
    ::rename(crt_new.c_str(), p.Cert().c_str());
    Log("completed an interrupted certificate renewal");
  }
  ::unlink(crt_new.c_str());
  ::unlink(key_new.c_str());
}

absl::StatusOr<std::optional<NodeState>> LoadState(const Paths& p) {
  if (::access(p.State().c_str(), F_OK) != 0) return std::optional<NodeState>();
  RecoverRenewal(p);
  WARDEN_ASSIGN_OR_RETURN(std::string state_text, ReadWholeFile(p.State()));
  auto j = common::ParseJsonStrict(state_text);
  if (!j.ok() || !j->is_object()) {
    return absl::DataLossError(StrCat(p.State(), " is corrupt; remove the data dir and rejoin"));
  }
  NodeState s;
  s.node_id = j->value("node_id", "");
  s.name = j->value("name", "");
  s.server_url = j->value("server", "");
  s.agent_url = j->value("agent_url", "");
  struct stat st {};
  if (::stat(p.Key().c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(
        StrCat(p.Key(), " is accessible by group or others; it must be mode 0600"));
  }
  WARDEN_ASSIGN_OR_RETURN(s.ca_pem, ReadWholeFile(p.Ca()));
  WARDEN_ASSIGN_OR_RETURN(s.key_pem, ReadWholeFile(p.Key()));
  WARDEN_ASSIGN_OR_RETURN(s.cert_pem, ReadWholeFile(p.Cert()));
  if (s.node_id.empty() || s.agent_url.empty()) {
    return absl::DataLossError(StrCat(p.State(), " lacks node_id or agent_url"));
  }
  return std::optional<NodeState>(std::move(s));
}

std::string ErrorText(const http::ClientResponse& r) {
  auto j = common::ParseJsonStrict(r.body);
  if (j.ok() && j->is_object() && j->contains("error") && (*j)["error"].is_object()) {
    return StrCat("HTTP ", r.status, ": ", (*j)["error"].value("message", ""));
  }
  return StrCat("HTTP ", r.status);
}

std::string DefaultNodeName() {
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  std::string out;
  for (char c : std::string(host)) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.push_back((std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_')
                      ? c
                      : '-');
  }
  while (!out.empty() && !std::isalnum(static_cast<unsigned char>(out[0]))) out.erase(0, 1);
  if (out.size() > 63) out.resize(63);
  return out.empty() ? "node" : out;
}

// "https://host:port[/...]" -> "https://host:agent_port".
absl::StatusOr<std::string> AgentUrl(const std::string& server_url, int agent_port) {
  std::string rest = server_url.substr(std::min<size_t>(server_url.size(), 8));
  rest = rest.substr(0, rest.find('/'));
  size_t colon = rest.rfind(':');
  std::string host =
      (colon == std::string::npos || rest.back() == ']') ? rest : rest.substr(0, colon);
  if (host.empty() || agent_port <= 0 || agent_port > 65535) {
    return absl::InvalidArgumentError(StrCat("cannot derive the agent URL from ", server_url));
  }
  return StrCat("https://", host, ":", agent_port);
}

absl::StatusOr<NodeState> Join(const Paths& p, const std::string& server_url,
                               const std::string& token_file, const std::string& name,
                               const cluster::NodeInventory& inventory) {
  WARDEN_ASSIGN_OR_RETURN(std::string token, ReadWholeFile(token_file));
  WARDEN_ASSIGN_OR_RETURN(pki::JoinTokenParts parts, pki::ParseJoinToken(token));
  // Pin the CA the token names before the secret is sent anywhere.
  WARDEN_ASSIGN_OR_RETURN(http::ServerCaChain ca, http::FetchServerCaChain(server_url));
  if (ca.fingerprint != parts.ca_fingerprint) {
    return absl::UnauthenticatedError(
        StrCat("server CA is ", ca.fingerprint, " but the join token names ", parts.ca_fingerprint,
               ": refusing to join (wrong server, or the connection is intercepted)"));
  }
  WARDEN_ASSIGN_OR_RETURN(pki::NodeKeyAndCsr kc, pki::NewNodeKeyAndCsr(name));
  http::ClientOptions opts;
  opts.base_url = server_url;
  opts.ca_pem = ca.ca_pem;
  WARDEN_ASSIGN_OR_RETURN(auto client, http::HttpsClient::Create(opts));
  Json body{
      {"csr", kc.csr_pem}, {"name", name}, {"inventory", cluster::EncodeInventory(inventory)}};
  // The whole token text goes back (the server checks the CA part too); trim whitespace.
  std::string t = token;
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  body["token"] = t;
  WARDEN_ASSIGN_OR_RETURN(http::ClientResponse resp,
                          client->Do("POST", "/api/v1/nodes/join", body.dump(),
                                     {{"Content-Type", "application/json"}}));
  if (resp.status != 201) {
    return absl::PermissionDeniedError(StrCat("join refused: ", ErrorText(resp)));
  }
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(resp.body));
  NodeState s;
  s.server_url = server_url;
  s.name = name;
  s.ca_pem = ca.ca_pem;
  s.key_pem = kc.key_pem;
  s.cert_pem = j.value("certificate", "");
  if (!j.contains("node") || !j["node"].is_object()) {
    return absl::InternalError("join reply lacks the node");
  }
  s.node_id = j["node"].value("id", "");
  WARDEN_ASSIGN_OR_RETURN(s.agent_url, AgentUrl(server_url, j.value("agent_port", 0)));
  WARDEN_ASSIGN_OR_RETURN(pki::NodeIdentity id, pki::ReadNodeIdentity(s.cert_pem));
  if (id.node_id != s.node_id)
    return absl::InternalError("join reply: certificate names another node");

  WARDEN_RETURN_IF_ERROR(WriteFileExclusive(p.Ca(), s.ca_pem, 0644));
  WARDEN_RETURN_IF_ERROR(WriteFileExclusive(p.Key(), s.key_pem, 0600));
  WARDEN_RETURN_IF_ERROR(WriteFileExclusive(p.Cert(), s.cert_pem, 0644));
  Json state{{"node_id", s.node_id},
             {"name", s.name},
             {"server", s.server_url},
             {"agent_url", s.agent_url}};
  // Written last: its presence means the join completed.
  WARDEN_RETURN_IF_ERROR(WriteFileExclusive(p.State(), state.dump(2) + "\n", 0644));
  return s;
}

class Session {
 public:
  Session(Paths paths, NodeState state, std::unique_ptr<gpu::GpuBackend> backend,
          std::string backend_name, JobRunner* runner)
      : paths_(std::move(paths)),
        state_(std::move(state)),
        backend_(std::move(backend)),
        backend_name_(std::move(backend_name)),
        runner_(runner) {}

  // Runs until stopped (0) or the node is removed (4).
  int Run() {
    absl::Duration interval = absl::Seconds(5);
    absl::Duration backoff = absl::ZeroDuration();
    std::mt19937 jitter(std::random_device{}());
    bool connected = false;
    bool woken = false;  // the server pushed work: beat now, without shipping output first
    while (!g_stop.load()) {
      absl::Status s = MaybeRenew();
      if (s.ok()) s = Beat(&interval, /*quick=*/woken);
      if (s.ok()) {
        if (!connected)
          Log(StrCat("connected to ", state_.agent_url, " as node ", state_.name, " (",
                     state_.node_id, ")"));
        connected = true;
        backoff = absl::ZeroDuration();
        if (!SleepOrStop(runner_->NextBeat(interval), &woken)) break;
        continue;
      }
      std::string msg(s.message());
      if (s.code() == absl::StatusCode::kUnauthenticated &&
          (msg.find("revoked") != std::string::npos || msg.find("removed") != std::string::npos)) {
        Log(StrCat("the server refuses this node: ", s.message(),
                   "; it was removed from the cluster. Join again with a new token."));
        return 4;
      }
      connected = false;
      sent_inventory_.clear();  // resend the inventory once back
      // Exponential back-off, 0.5 s doubling to 30 s, with +-20% jitter so that a fleet of agents
      // does not reconnect in lockstep after a server restart.
      backoff = backoff == absl::ZeroDuration() ? absl::Milliseconds(500)
                                                : std::min(backoff * 2, absl::Seconds(30));
      double f = std::uniform_real_distribution<double>(0.8, 1.2)(jitter);
      absl::Duration wait = backoff * f;
      Log(StrCat("heartbeat failed: ", s.message(), "; retrying in ",
                 absl::FormatDuration(absl::Milliseconds(absl::ToInt64Milliseconds(wait)))));
      if (!SleepOrStop(wait)) break;
    }
    Log("stopping");
    return 0;
  }

 private:
  absl::Status EnsureClient() {
    if (client_) return absl::OkStatus();
    http::ClientOptions opts;
    opts.base_url = state_.agent_url;
    opts.ca_pem = state_.ca_pem;
    opts.client_cert_pem = state_.cert_pem;
    opts.client_key_pem = state_.key_pem;
    opts.timeout = absl::Seconds(10);
    opts.connect_timeout = absl::Seconds(5);
    WARDEN_ASSIGN_OR_RETURN(client_, http::HttpsClient::Create(opts));
    waiter_.SetClient(opts, StrCat("/agent/v1/nodes/", state_.node_id, "/wait"));
    {
      std::lock_guard lock(xfer_mu_);  // the transfer worker's next connection uses this identity
      xfer_opts_ = opts;
      xfer_opts_.timeout = absl::Seconds(60);
      ++xfer_gen_;
    }
    return absl::OkStatus();
  }

  // The transfer worker's connection, made from the identity the session thread last connected
  // with (renewed certificates included). Worker thread only.
  absl::StatusOr<http::HttpsClient*> TransferClient() {
    http::ClientOptions opts;
    uint64_t gen;
    {
      std::lock_guard lock(xfer_mu_);
      opts = xfer_opts_;
      gen = xfer_gen_;
    }
    if (gen == 0) return absl::UnavailableError("not connected to the server yet");
    if (xfer_client_ == nullptr || xfer_client_gen_ != gen) {
      WARDEN_ASSIGN_OR_RETURN(xfer_client_, http::HttpsClient::Create(opts));
      xfer_client_gen_ = gen;
    }
    return xfer_client_.get();
  }

  absl::StatusOr<Json> Post(const std::string& what, const Json& body) {
    WARDEN_RETURN_IF_ERROR(EnsureClient());
    auto resp = client_->Do("POST", StrCat("/agent/v1/nodes/", state_.node_id, "/", what),
                            body.dump(), {{"Content-Type", "application/json"}});
    if (!resp.ok()) {
      client_.reset();  // a fresh connection next time
      return resp.status();
    }
    if (resp->status == 401) return absl::UnauthenticatedError(ErrorText(*resp));
    if (resp->status != 200) return absl::UnavailableError(ErrorText(*resp));
    return common::ParseJsonStrict(resp->body);
  }

  absl::Status Beat(absl::Duration* interval, bool quick) {
    auto inv = CollectInventory(backend_.get(), backend_name_);
    if (!inv.ok()) return inv.status();
    if (handoff_ != nullptr) {  // issue 7: devices stay quarantined if the state cannot be saved
      if (absl::Status hs = handoff_->Annotate(*inv); !hs.ok()) Log(StrCat("GPU handoff: ", hs.message()));
    }
    runner_->AnnotateMig(inv->gpus);  // which job each MIG instance is for (issue 6)
    std::string text = cluster::EncodeInventory(*inv).dump();
    Json body = runner_->BuildReport(
        [this](const std::string& job, const std::string& stream, int64_t offset,
               std::string_view data) { return ShipLog(job, stream, offset, data); },
        inv->gpus, /*ship_logs=*/!quick);
    if (text != sent_inventory_) body["inventory"] = cluster::EncodeInventory(*inv);
    WARDEN_ASSIGN_OR_RETURN(Json reply, Post("heartbeat", body));
    sent_inventory_ = text;
    runner_->Apply(reply.value("jobs", Json::array()));
    int64_t ms = reply.value("heartbeat_interval_ms", int64_t{5000});
    *interval = absl::Milliseconds(std::clamp<int64_t>(ms, 50, 600000));
    std::string schedule = reply.value("schedule", "active");
    if (schedule != schedule_) {
      if (!schedule_.empty()) Log(StrCat("node is now ", schedule));
      schedule_ = schedule;
    }
    return absl::OkStatus();
  }

  // The three transfers below run on the JobRunner's worker thread (job_runner.h), over their own
  // connection (TransferClient), so that the heartbeat never waits for them.
  // A job's image archive from the server into `dest` (image_cache.h ImageFetcher), streamed.
 public:
  absl::Status FetchImage(const std::string& job, const std::string& digest, const std::string& dest) {
    WARDEN_ASSIGN_OR_RETURN(http::HttpsClient * client, TransferClient());
    int fd = ::open(dest.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return absl::InternalError(StrCat("cannot create ", dest, ": ", std::strerror(errno)));
    http::StreamTransfer t;
    t.sink = [fd](std::string_view piece) -> absl::Status {
      while (!piece.empty()) {
        ssize_t w = ::write(fd, piece.data(), piece.size());
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return absl::InternalError(StrCat("write image: ", std::strerror(errno)));
        piece.remove_prefix(static_cast<size_t>(w));
      }
      return absl::OkStatus();
    };
    auto resp = client->Stream("GET",
                                StrCat("/agent/v1/nodes/", state_.node_id, "/jobs/", job,
                                       "/image?digest=", digest),
                                t);
    ::close(fd);
    if (!resp.ok()) {
      xfer_client_.reset();
      return resp.status();
    }
    if (resp->status == 200) return absl::OkStatus();
    std::string text = ErrorText(*resp);
    if (resp->status == 404) return absl::NotFoundError(text);
    if (resp->status == 403) return absl::PermissionDeniedError(text);
    return absl::UnavailableError(text);
  }

  // A range of one of a job's datasets from the server (dataset_stager.h DatasetFetcher).
  absl::StatusOr<std::string> FetchDataset(const std::string& job, uint64_t index,
                                           uint64_t first_chunk, uint64_t count) {
    WARDEN_ASSIGN_OR_RETURN(http::HttpsClient * client, TransferClient());
    auto resp = client->Do("POST",
                            StrCat("/agent/v1/nodes/", state_.node_id, "/jobs/", job, "/datasets/",
                                   index, "?chunk=", first_chunk, "&count=", count),
                            "", {{"Content-Type", "application/octet-stream"}});
    if (!resp.ok()) {
      xfer_client_.reset();
      return resp.status();
    }
    if (resp->status == 200) return std::move(resp->body);
    std::string text = ErrorText(*resp);
    if (text.find("integrity") != std::string::npos) return absl::DataLossError(text);
    if (resp->status == 403) return absl::PermissionDeniedError(text);
    if (resp->status == 404) return absl::NotFoundError(text);
    return absl::UnavailableError(text);
  }

  // A job's `write` dataset output to the server, streamed from `fd` (dataset_stager.h
  // DatasetUploader; the server's route is agent_dataset_writeback.cc).
  absl::Status UploadDataset(const std::string& job, uint64_t index, int fd, uint64_t size,
                             const std::string& sha256) {
    WARDEN_ASSIGN_OR_RETURN(http::HttpsClient * client, TransferClient());
    http::StreamTransfer t;
    t.size = static_cast<int64_t>(size);
    t.source = [fd](char* buf, size_t n) -> absl::StatusOr<size_t> {
      for (;;) {
        ssize_t r = ::read(fd, buf, n);
        if (r >= 0) return static_cast<size_t>(r);
        if (errno != EINTR) return absl::InternalError(StrCat("reading the job's output: ", std::strerror(errno)));
      }
    };
    auto resp = client->Stream("PUT", StrCat("/agent/v1/nodes/", state_.node_id, "/jobs/", job, "/datasets/", index),
                                t, {{"Content-Type", "application/octet-stream"}, {"X-Content-Sha256", sha256}});
    if (!resp.ok()) {
      xfer_client_.reset();
      return resp.status().code() == absl::StatusCode::kInternal ? resp.status()
                                                                   : absl::UnavailableError(resp.status().message());
    }
    if (resp->status == 201) {
      Log(StrCat("job ", job, ": wrote dataset ", index, " back (", size, " bytes, sha256 ", sha256, ")"));
      return absl::OkStatus();
    }
    std::string text = ErrorText(*resp);
    auto body = common::ParseJsonStrict(resp->body);
    const bool again = resp->status == 409 && body.ok() && body->is_object() && body->contains("error") &&
                       (*body)["error"].is_object() && (*body)["error"].value("code", "") == "ALREADY_EXISTS";
    if (again) return absl::AlreadyExistsError(text);
    if (resp->status == 403) return absl::PermissionDeniedError(text);
    if (resp->status == 404) return absl::NotFoundError(text);
    if (resp->status >= 400 && resp->status < 500) return absl::FailedPreconditionError(text);
    return absl::UnavailableError(text);
  }

 private:
  // One chunk of a job's output to the server (job_runner.h).
  absl::StatusOr<int64_t> ShipLog(const std::string& job, const std::string& stream,
                                  int64_t offset, std::string_view data) {
    WARDEN_RETURN_IF_ERROR(EnsureClient());
    auto resp = client_->Do("POST",
                            StrCat("/agent/v1/nodes/", state_.node_id, "/jobs/", job,
                                   "/logs?stream=", stream, "&offset=", offset),
                            std::string(data), {{"Content-Type", "application/octet-stream"}});
    if (!resp.ok()) {
      client_.reset();
      return resp.status();
    }
    if (resp->status != 200) return absl::UnavailableError(ErrorText(*resp));
    WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(resp->body));
    return j.value("next_offset", offset);
  }

  // Renews at two thirds of the certificate's life, with a fresh key.
  absl::Status MaybeRenew() {
    WARDEN_ASSIGN_OR_RETURN(pki::NodeIdentity id, pki::ReadNodeIdentity(state_.cert_pem));
    absl::Time issued = id.not_before + pki::kClockSkewAllowance;
    absl::Time renew_at = issued + (id.not_after - issued) * 2 / 3;
    if (absl::Now() < renew_at) return absl::OkStatus();
    WARDEN_ASSIGN_OR_RETURN(pki::NodeKeyAndCsr kc, pki::NewNodeKeyAndCsr(state_.name));
    WARDEN_ASSIGN_OR_RETURN(Json reply, Post("renew", Json{{"csr", kc.csr_pem}}));
    std::string cert = reply.value("certificate", "");
    WARDEN_ASSIGN_OR_RETURN(pki::NodeIdentity fresh, pki::ReadNodeIdentity(cert));
    if (fresh.node_id != state_.node_id)
      return absl::InternalError("renewal returned another node's certificate");
    // Both new files complete before either replaces the old (RecoverRenewal finishes the job
    // after a crash between the renames).
    WARDEN_RETURN_IF_ERROR(WriteFileExclusive(paths_.Key() + ".new", kc.key_pem, 0600));
    WARDEN_RETURN_IF_ERROR(WriteFileExclusive(paths_.Cert() + ".new", cert, 0644));
    if (::rename((paths_.Key() + ".new").c_str(), paths_.Key().c_str()) != 0 ||
        ::rename((paths_.Cert() + ".new").c_str(), paths_.Cert().c_str()) != 0) {
      return absl::InternalError(StrCat("cannot install the renewed certificate in ", paths_.dir));
    }
    state_.key_pem = kc.key_pem;
    state_.cert_pem = cert;
    client_.reset();
    Log(StrCat("renewed the node certificate (serial ", fresh.serial, ", valid until ",
               absl::FormatTime(fresh.not_after, absl::UTCTimeZone()), ")"));
    return absl::OkStatus();
  }

  Paths paths_;
  NodeState state_;
  std::unique_ptr<gpu::GpuBackend> backend_;
  std::string backend_name_;
  std::unique_ptr<http::HttpsClient> client_;
  std::mutex xfer_mu_;
  http::ClientOptions xfer_opts_;  // guarded by xfer_mu_
  uint64_t xfer_gen_ = 0;          // guarded by xfer_mu_; bumped with each new identity/connection
  std::unique_ptr<http::HttpsClient> xfer_client_;  // transfer worker only
  uint64_t xfer_client_gen_ = 0;                    // transfer worker only
  std::string sent_inventory_;
  std::string schedule_;
  JobRunner* runner_;
  WorkWaiter waiter_;

 public:
  std::unique_ptr<GpuHandoffService> handoff_;  // GPU handoff (issue 7); null without GPUs
};

}  // namespace

static int RunAgentMain(int argc, char** argv) {
  CLI::App app{"gpuwarden agent: the node agent (joins over a one-time token, then mTLS only)",
               "gpuwarden agent"};
  if (argc > 1 && std::string_view(argv[1]) == "scrub") return RunScrubCommand(argc - 1, argv + 1);
  if (argc > 1 && std::string_view(argv[1]) == "handoff") {
    return RunHandoffCommand(argc - 1, argv + 1);
  }
  if (argc > 1 && std::string_view(argv[1]) == "mig") return RunMigCommand(argc - 1, argv + 1);
  // Hidden: the sandbox's per-job shim (runtime::ShimMain) where warden-sandbox-shim is not
  // installed next to this binary (sandbox_setup.h).
  if (argc > 1 && std::string_view(argv[1]) == "shim") return runtime::ShimMain(argc - 1, argv + 1);
  std::string server, token_file, data_dir, gpus = "nvml", name;
  bool inventory_only = false;
  std::string executor_name = "auto", oci_runtime = "auto";
  int prepared_sandboxes = 1;
  std::string gpu_driver_dirs = "auto";
  app.add_option("--server", server, "server URL, e.g. https://10.0.0.1:8443 (needed to join)");
  app.add_option("--join-token", token_file, "file holding the one-time join token (first start)");
  app.add_option("--data-dir", data_dir, "agent state: key, certificate, pinned CA");
  app.add_option("--gpus", gpus, "GPU backend: nvml (default) or sim:SPEC, e.g. sim:4xH100-80GB");
  app.add_option("--name", name, "node name (default: the host name)");
  app.add_flag("--inventory", inventory_only, "print this node's inventory as JSON and exit");
  app.add_option("--executor", executor_name,
                 "how placed jobs run: sandbox (OCI runtime or bubblewrap; the default where one "
                 "works), process (plain processes, NOT a security boundary: development only) "
                 "or none (jobs are refused)")
      ->check(CLI::IsMember({"auto", "sandbox", "none", "process"}));
  app.add_option("--oci-runtime", oci_runtime,
                 "the sandbox's runtime: runc, crun, bwrap or auto (default: the first that works "
                 "of runc, crun, bwrap)")
      ->check(CLI::IsMember({"auto", "runc", "crun", "bwrap"}));
  app.add_option("--prepared-sandboxes", prepared_sandboxes,
                 "sandboxes kept ready per recently run (tenant, image), so the next such job skips the "
                 "container start (runc/crun; jobs with GPUs or datasets start cold); default 1, 0: off")
      ->check(CLI::Range(0, 4));
  app.add_option("--gpu-driver-dirs", gpu_driver_dirs,
                 "host directories holding the NVIDIA driver's libraries, bound read-only into GPU jobs "
                 "with LD_LIBRARY_PATH set to them: auto (default: where libcuda.so.1 and "
                 "libnvidia-ml.so.1 are found, when that is a mount other than /, e.g. "
                 "/usr/local/nvidia), none, or DIR[,DIR...]");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (name.empty()) name = DefaultNodeName();
  std::string note;
  auto backend = MakeGpuBackend(gpus, name, &note);
  if (!backend.ok()) {
    std::cerr << "gpuwarden agent: " << backend.status().message() << "\n";
    return 2;
  }
  if (!note.empty()) Log(note);
  std::string backend_name = gpus.rfind("sim:", 0) == 0 ? "sim" : "nvml";
  auto inventory = CollectInventory(backend->get(), backend_name);
  if (!inventory.ok()) {
    std::cerr << "gpuwarden agent: inventory: " << inventory.status().message() << "\n";
    return 1;
  }
  if (inventory_only) {
    std::cout << cluster::EncodeInventory(*inventory).dump(2) << "\n";
    return 0;
  }
  if (data_dir.empty()) {
    std::cerr << "gpuwarden agent: --data-dir is required\n";
    return 2;
  }
  ::umask(077);
  if (::mkdir(data_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    std::cerr << "gpuwarden agent: cannot create " << data_dir << ": " << std::strerror(errno)
              << "\n";
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  Paths paths{data_dir};
  auto loaded = LoadState(paths);
  if (!loaded.ok()) {
    std::cerr << "gpuwarden agent: " << loaded.status().message() << "\n";
    return 1;
  }
  NodeState state;
  if (loaded->has_value()) {
    state = std::move(**loaded);
  } else {
    if (server.empty() || token_file.empty()) {
      std::cerr
          << "gpuwarden agent: not joined yet; --server URL and --join-token FILE are required\n";
      return 2;
    }
    if (server.rfind("https://", 0) != 0) server = "https://" + server;
    while (!server.empty() && server.back() == '/') server.pop_back();
    // The join itself retries with back-off while the server is unreachable; a refusal is final.
    absl::Duration backoff = absl::Milliseconds(500);
    for (;;) {
      auto joined = Join(paths, server, token_file, name, *inventory);
      if (joined.ok()) {
        state = std::move(*joined);
        Log(StrCat("joined as node ", state.name, " (", state.node_id, ")"));
        break;
      }
      if (joined.status().code() != absl::StatusCode::kUnavailable &&
          joined.status().code() != absl::StatusCode::kDeadlineExceeded) {
        std::cerr << "gpuwarden agent: " << joined.status().message() << "\n";
        return 1;
      }
      Log(StrCat("cannot reach ", server, " (", joined.status().message(), "); retrying"));
      if (!SleepOrStop(backoff)) return 0;
      backoff = std::min(backoff * 2, absl::Seconds(30));
    }
  }
  // Jobs (issues 6, 7): the executor seam (executor.h). The sandbox unless told otherwise.
  std::unique_ptr<JobExecutor> executor;
  std::string no_executor_reason = "this agent runs no jobs (started with --executor=none)";
  if (executor_name == "sandbox" || executor_name == "auto") {
    std::string chosen;
    auto created = CreateAgentSandbox({.data_dir = data_dir,
                                       .oci_runtime = oci_runtime,
                                       .backend = backend->get(),
                                       .simulated_gpus = backend_name == "sim",
                                       .prepared_sandboxes = prepared_sandboxes,
                                       .gpu_driver_dirs = gpu_driver_dirs},
                                      &chosen);
    if (created.ok()) {
      executor = std::move(*created);
      Log(StrCat("job executor: sandbox, runtime ", chosen));
    } else if (executor_name == "sandbox") {
      std::cerr << "gpuwarden agent: --executor=sandbox: " << created.status().message() << "\n";
      return 1;
    } else {
      no_executor_reason = StrCat("this agent runs no jobs: its sandbox cannot run here (",
                                  created.status().message(), ")");
      Log(StrCat("job executor: none; ", no_executor_reason));
    }
  }
  if (executor_name == "process") {
    auto created = CreateProcessExecutor(data_dir + "/jobs");
    if (!created.ok()) {
      std::cerr << "gpuwarden agent: " << created.status().message() << "\n";
      return 1;
    }
    executor = std::move(*created);
    Log("job executor: process (plain processes, NOT a security boundary; development only)");
  }
  JobRunner runner(executor.get(), no_executor_reason);
  // Issue 7: the verified GPU handoff. Created before the runner re-attaches, so re-attached jobs
  // keep their GPUs assigned and release them into the handoff when they end.
  gpu::GpuBackend* gpu_backend = backend->get();
  std::unique_ptr<GpuHandoffService> handoff;
  if (gpu_backend != nullptr) {
    auto created = GpuHandoffService::Create({.data_dir = data_dir}, gpu_backend, backend_name);
    if (!created.ok()) {
      std::cerr << "gpuwarden agent: GPU handoff: " << created.status().message() << "\n";
      return 1;
    }
    handoff = std::move(*created);
    runner.SetHandoff(handoff.get());
  }
  // Issue 6: MIG instances created per job at the scheduler's placement (mig_manager.h).
  std::unique_ptr<MigManager> mig;
  if (gpu_backend != nullptr) {
    auto created = MigManager::Create(gpu_backend, data_dir + "/mig-instances.json");
    if (created.ok()) {
      mig = std::move(*created);
      runner.SetMigManager(mig.get());
    } else {  // MIG jobs fail to start with this reason; nothing is destroyed on its word
      Log(StrCat("MIG instances: ", created.status().message(), "; MIG jobs cannot start"));
    }
  }
  // Issue 7: vault datasets, staged into a per-job tmpfs under the agent's data dir.
  std::unique_ptr<DatasetStager> stager;
  if (executor != nullptr) {
    DatasetStagerOptions sopts;
    sopts.dir = data_dir + "/datasets";
    if (const char* m = std::getenv("GPUWARDEN_DATASET_NO_MOUNT"); m != nullptr && std::string(m) == "1") {
      sopts.try_mount = false;  // tests of the /dev/shm fallback
    }
    auto created = DatasetStager::Create(sopts);
    if (!created.ok()) {
      std::cerr << "gpuwarden agent: datasets: " << created.status().message() << "\n";
      return 1;
    }
    stager = std::move(*created);
    runner.SetDatasetStager(stager.get());
  }
  // Issue 7: job images, fetched from the server into the sandbox's image store and reused.
  std::unique_ptr<ImageCache> images;
  if (executor != nullptr && executor->name() == "sandbox") {
    images = std::make_unique<ImageCache>(data_dir + "/images");
  }
  if (absl::Status s = runner.Recover(); !s.ok()) {
    std::cerr << "gpuwarden agent: recovering jobs: " << s.message() << "\n";
    return 1;
  }
  if (runner.size() > 0) Log(StrCat("re-attached to ", runner.size(), " job(s) from before the restart"));
  for (const MigRecord& r : runner.mig_report().destroyed) {
    Log(StrCat("MIG: destroyed orphan instance ", r.mig_uuid, " on ", r.gpu_uuid, " (job ", r.job_id, " is gone)"));
  }
  for (const MigRecord& r : runner.mig_report().foreign) {
    Log(StrCat("MIG: instance ", r.mig_uuid, " on ", r.gpu_uuid, " was not created by this agent: left alone"));
  }
  for (const std::string& e : runner.mig_report().errors) Log(StrCat("MIG: ", e));
  Session session(paths, std::move(state), std::move(*backend), backend_name, &runner);
  runner.SetDatasetFetcher([&session](const std::string& job, uint64_t index, uint64_t first,
                                      uint64_t count) {
    return session.FetchDataset(job, index, first, count);
  });
  if (images != nullptr) {
    runner.SetImagePreparer([&session, cache = images.get()](const ExecSpec& spec) {
      absl::Status s = cache->Ensure(spec.tenant, spec.job_id, spec.image,
                                     [&session](const std::string& job, const std::string& digest,
                                                const std::string& dest) {
                                       return session.FetchImage(job, digest, dest);
                                     });
      Log(StrCat("job ", spec.job_id, " image ", spec.image, ": ",
                 s.ok() ? "ready" : std::string(s.message()), " (fetched ", cache->fetches(),
                 ", reused ", cache->hits(), ", corrupted ", cache->corrupted(), ")"));
      return s;
    });
  }
  runner.SetDatasetUploader([&session](const std::string& job, uint64_t index, int fd, uint64_t size,
                                       const std::string& sha256) {
    return session.UploadDataset(job, index, fd, size, sha256);
  });
  if (handoff != nullptr) {
    session.handoff_ = std::move(handoff);
    session.handoff_->Start();
  }
  runner.SetTransferDone(WakeSession);  // a prepared job starts at once, not at the next beat
  const int rc = session.Run();
  runner.StopTransfers();  // before the session its transfers use goes away
  return rc;
}

int RunAgentCommand(int argc, char** argv) {
  int rc = RunAgentMain(argc, argv);
  if (g_exit_now.load()) {  // every local is destroyed; only exit-time destructors are skipped
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
    std::_Exit(rc);
  }
  return rc;
}

}  // namespace warden::agent
