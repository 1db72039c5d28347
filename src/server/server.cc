#include "server/server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <algorithm>
#include <iostream>
#include <thread>

#include "audit/audit.h"
#include "auth/auth.h"
#include "auth/login_throttle.h"
#include "cluster/cluster.h"
#include "auth/oidc_config.h"
#include "common/clock.h"
#include "common/master_key.h"
#include "common/metrics.h"
#include "common/rng.h"
#include "common/status.h"
#include "common/strings.h"
#include "http/server.h"
#include "pki/pki.h"
#include "server/agent_api.h"
#include "server/api_service.h"
#include "server/audit_syslog.h"
#include "server/sso_service.h"
#include "server/job_service.h"
#include "server/vault_routes.h"
#include "store/store.h"

namespace warden::server {
namespace {

using common::StrCat;

absl::Status EnsureDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(StrCat("cannot create ", dir, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadSecretFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(StrCat("cannot read ", path));
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

class ServerImpl final : public Server {
 public:
  explicit ServerImpl(common::ServerConfig config) : config_(std::move(config)) {}
  ~ServerImpl() override { Stop(); }

  absl::Status Init(std::ostream& out) {
    common::Clock& clock = common::RealClock::Get();
    common::Rng& rng = common::SecureRng::Get();
    WARDEN_RETURN_IF_ERROR(EnsureDir(config_.data_dir));
    // The master key protects secrets at rest (TOTP seeds, the vault's tenant keys); see
    // common/master_key.h for the 0600 rule and the external key command.
    if (!config_.master_key_command.empty() && !config_.master_key_file.empty()) {
      return absl::InvalidArgumentError(
          "config: set master_key_file or master_key_command, not both");
    }
    std::string key_path = config_.master_key_file.empty()
                               ? StrCat(config_.data_dir, "/master.key")
                               : config_.master_key_file;
    absl::StatusOr<common::MasterKey> loaded =
        config_.master_key_command.empty()
            ? common::MasterKey::LoadOrCreate(key_path, rng)
            : common::MasterKey::FromCommand(config_.master_key_command);
    WARDEN_RETURN_IF_ERROR(loaded.status());
    common::MasterKey master_key = std::move(*loaded);
    WARDEN_ASSIGN_OR_RETURN(common::AeadKey totp_key, master_key.DeriveKey("totp-seed/v1"));
    totp_key_ = std::make_unique<common::AeadKey>(std::move(totp_key));

    std::string pki_dir = StrCat(config_.data_dir, "/pki");
    WARDEN_RETURN_IF_ERROR(EnsureDir(pki_dir));
    std::vector<std::string> names;
    std::string host = config_.listen.substr(0, config_.listen.rfind(':'));
    if (!host.empty() && host != "0.0.0.0" && host != "[::]") names.push_back(host);
    char hostname[256] = {};
    if (::gethostname(hostname, sizeof(hostname) - 1) == 0 && hostname[0]) names.push_back(hostname);
    WARDEN_ASSIGN_OR_RETURN(pki_, pki::EnsureServerPki(pki_dir, names, clock));

    std::string url = config_.store_url.empty()
                          ? StrCat("sqlite://", AbsPath(config_.data_dir), "/state.db")
                          : config_.store_url;
    WARDEN_ASSIGN_OR_RETURN(store_, store::OpenStore({url}));

    auth::AuthenticatorOptions aopts;
    aopts.session_idle = config_.session_idle;
    aopts.session_absolute = config_.session_absolute;
    aopts.token_max_ttl = config_.token_max_ttl;
    aopts.totp_key = totp_key_.get();
    aopts.totp_issuer = config_.mfa.issuer;
    // Brute-force defence (login_throttle.h): per (account, source), per source, per account.
    WARDEN_ASSIGN_OR_RETURN(login_throttle_, auth::LoginThrottle::Create(clock));
    aopts.login_gate = login_throttle_.get();
    WARDEN_ASSIGN_OR_RETURN(auth_, auth::Authenticator::Create(*store_, clock, rng, aopts));

    std::string audit_dir = StrCat(config_.data_dir, "/audit");
    audit::AuditOptions audit_opts{.dir = audit_dir};
    audit_opts.poll_waiters = config_.audit_poll_waiters >= 0
                                  ? config_.audit_poll_waiters
                                  : audit::PollWaitersFor(std::thread::hardware_concurrency());
    WARDEN_ASSIGN_OR_RETURN(audit_syslog_, StartAuditSyslog(config_.audit_syslog, audit_opts));
    WARDEN_ASSIGN_OR_RETURN(audit_, audit::OpenAuditLog(audit_opts, clock));

    // Single sign-on: the `oidc:` section is parsed strictly here (a typo refuses to start);
    // providers are contacted lazily, so an IdP outage does not stop the server.
    if (!config_.oidc_yaml.empty()) {
      WARDEN_ASSIGN_OR_RETURN(auto providers, auth::oidc::ParseOidcConfig(config_.oidc_yaml));
      SsoOptions sso_opts;
      sso_opts.authenticator = auth_.get();
      WARDEN_ASSIGN_OR_RETURN(
          sso_, SsoService::Create(std::move(providers), *store_, clock, rng, sso_opts));
    }

    ApiServiceOptions api_opts;
    api_opts.sso = sso_.get();
    api_opts.version = WARDEN_VERSION;
    api_opts.audit_dir = audit_dir;
    api_opts.mfa = config_.mfa;
    api_opts.durable_reads = config_.audit_durable_reads;
    api_opts.render_metrics = [] { return common::metrics::Registry::Default().RenderText(); };
    WARDEN_RETURN_IF_ERROR(InitCluster(pki_dir, clock, rng));
    api_opts.cluster = cluster_.get();
    WARDEN_RETURN_IF_ERROR(InitJobs(clock, rng));
    api_opts.jobs = jobs_.get();
    api_opts.agent_port = [this] { return agent_https_ ? agent_https_->port() : 0; };
    // The encrypted vault (issue 5): tenant keys wrapped under the master key.
    WARDEN_ASSIGN_OR_RETURN(
        vault_, VaultService::Open(StrCat(config_.data_dir, "/vault"), master_key, clock, rng));
    api_opts.vault = vault_.get();
    api_opts.image_dir = StrCat(AbsPath(config_.data_dir), "/images");  // image_routes.cc
    api_opts.image_max_import_bytes = static_cast<uint64_t>(config_.image_max_import_bytes);
    WARDEN_ASSIGN_OR_RETURN(api_, ApiService::Create(*store_, *auth_, *audit_, clock, rng, api_opts));

    // The admin password file matters only on the first start, before any user exists.
    std::string password;
    WARDEN_ASSIGN_OR_RETURN(auto existing_users, store_->ListUsers(std::nullopt));
    if (existing_users.empty() && !config_.admin_password_file.empty()) {
      WARDEN_ASSIGN_OR_RETURN(password, ReadSecretFile(config_.admin_password_file));
    }
    WARDEN_ASSIGN_OR_RETURN(auto created, api_->Bootstrap("admin", password));
    if (created.has_value()) {
      out << "created the first cluster admin: user \"admin\"";
      if (password.empty()) {
        out << ", password: " << *created << "\n  (shown once; change it or keep it safe)";
      } else {
        out << " with the password from " << config_.admin_password_file;
      }
      out << "\n";
      if (config_.mfa.required_for != "none") {
        out << "  admins must use MFA: after the first login run `gpuwarden mfa enroll` and "
               "`gpuwarden mfa confirm CODE`\n";
      }
    }

    for (const RouteSpec& spec : ApiService::Routes()) {
      WARDEN_RETURN_IF_ERROR(router_.Add(spec.method, spec.pattern, nullptr, &spec));
    }
    return absl::OkStatus();
  }

  absl::Status Start() override {
    http::ServerOptions hopts;
    hopts.listen = config_.listen;
    hopts.cert_pem = pki_.server_cert_pem;
    hopts.key_pem = pki_.server_key_pem;
    hopts.chain_pem = pki_.ca_cert_pem;
    hopts.limits = config_.http;
    hopts.threads = config_.threads;
    // Two more than the default 2: job log follows may hold up to two (JobServiceOptions::
    // max_log_waiters) while logins and writes keep theirs.
    hopts.blocking_threads = 4;
    hopts.metrics = &common::metrics::Registry::Default();
    // Requests whose audit event waits for fdatasync (group commit, issue 4) run on the blocking
    // pool, which is large: its threads mostly wait on the audit log's sync, and the more wait
    // together the more share one sync. GETs whose events are queued without waiting
    // (ApiService::AuditsWithoutWaiting) and /healthz run on the event loops, except single
    // sign-on (it talks to the IdP and writes the store) and GETs carrying an IdP JWT (a JWKS
    // refresh may fetch over the network), and job log reads (they may long-poll).
    hopts.runs_inline = [this](const http::Request& req) {
      if (req.method != "GET") return false;
      if (req.raw_path == "/healthz") return true;
      if (req.raw_path.starts_with("/api/v1/oidc/")) return false;
      // Job log reads may long-poll (`job logs -f`): never on an event loop.
      if (req.path.ends_with("/logs")) return false;
      std::string_view authz = req.headers.Get("Authorization");
      if (std::count(authz.begin(), authz.end(), '.') == 2) return false;  // an IdP JWT
      const auto* route = router_.Find(req.method, req.raw_path);
      return api_->AuditsWithoutWaiting(req.method, route ? route->payload : nullptr);
    };
    hopts.blocking_threads = 64;
    // Routes with RouteSpec::stream_body_max get their body streamed (dataset uploads).
    hopts.stream_body_limit = [this](std::string_view method, std::string_view target) {
      const auto* route = router_.Find(method, target.substr(0, target.find('?')));
      return route != nullptr ? api_->StreamBodyLimit(*route->payload) : uint64_t{0};
    };
    // Requests refused by the HTTP layer itself (oversized, malformed) are audited too.
    hopts.on_reject = [this](const http::Request& req, int status, std::string_view reason) {
      ApiRequest areq;
      areq.method = req.method;
      areq.path = req.path;
      areq.source = req.remote_address;
      areq.request_id = req.request_id;
      areq.authorization = std::string(req.headers.Get("Authorization"));
      (void)api_->HandleUnmatched(areq, status, std::string(reason), "http:rejected");
    };
    WARDEN_ASSIGN_OR_RETURN(https_, http::HttpsServer::Create(
                                        hopts, [this](http::Request& req) { return Serve(req); }));
    WARDEN_RETURN_IF_ERROR(https_->Start());
    WARDEN_RETURN_IF_ERROR(jobs_->Start());
    WARDEN_RETURN_IF_ERROR(StartAgentListener(hopts));
    housekeeping_ = std::thread([this] { Housekeeping(); });
    // Tests and scripts find an ephemeral port here.
    std::ofstream info(StrCat(config_.data_dir, "/server.json"));
    info << "{\"url\":\"https://127.0.0.1:" << https_->port() << "\",\"port\":" << https_->port()
         << ",\"agent_port\":" << agent_https_->port()
         << ",\"ca_fingerprint\":\"" << pki_.ca_fingerprint << "\"}\n";
    return absl::OkStatus();
  }

  void Stop() override {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    if (agent_https_) agent_https_->Stop();
    if (jobs_) jobs_->Stop();
    if (cluster_) cluster_->Stop();
    if (https_) https_->Stop();
    if (housekeeping_.joinable()) housekeeping_.join();
    if (audit_syslog_) audit_syslog_->Stop();  // bounded flush of the off-box copies
  }

  int port() const override { return https_ ? https_->port() : 0; }
  std::string ca_fingerprint() const override { return pki_.ca_fingerprint; }

 private:
  // Nodes (issue 6): the CA signs node certificates; the cluster service tracks nodes.
  absl::Status InitCluster(const std::string& pki_dir, common::Clock& clock, common::Rng& rng) {
    WARDEN_ASSIGN_OR_RETURN(node_ca_, pki::NodeCertificateAuthority::Load(pki_dir));
    cluster::ClusterOptions copts;
    copts.heartbeat_interval = config_.heartbeat_interval;
    copts.cert_ttl = config_.node_cert_ttl;
    copts.ca_fingerprint = pki_.ca_fingerprint;
    WARDEN_ASSIGN_OR_RETURN(cluster_, cluster::Cluster::Create(*store_, *node_ca_, clock, rng, copts));
    agent_api_ = std::make_unique<AgentApi>(*cluster_, *audit_);
    return absl::OkStatus();
  }

  // Jobs (issue 6): the scheduler, placements handed to agents, job logs under data_dir/jobs.
  absl::Status InitJobs(common::Clock& clock, common::Rng& rng) {
    JobServiceOptions jopts;
    jopts.data_dir = config_.data_dir;
    // Tests and the demo run the scheduler's independent invariant checker on every placement.
    const char* check = std::getenv("GPUWARDEN_SCHED_CHECK");
    jopts.check_invariants = check != nullptr && std::string(check) == "1";
    WARDEN_ASSIGN_OR_RETURN(jobs_, JobService::Create(*store_, clock, rng, jopts));
    agent_api_->SetJobService(jobs_.get());
    agent_api_->SetDatasetReader([this](const std::string& node, const std::string& job,
                                        uint64_t index, uint64_t first, uint64_t count,
                                        AgentDatasetRead& out) {
      if (api_ == nullptr) return absl::UnavailableError("the API is not running");
      return api_->ReadJobDatasetForAgent(node, job, index, first, count, out);
    });
    agent_api_->SetImageReader([this](const std::string& node, const std::string& job,
                                      const std::string& digest, AgentImage& out) {
      if (api_ == nullptr) return absl::UnavailableError("the API is not running");
      return api_->OpenJobImageForAgent(node, job, digest, out);
    });
    agent_api_->SetDatasetWriter([this](const AgentDatasetWriteBack& in, AgentDatasetWritten& out) {
      if (api_ == nullptr) return absl::UnavailableError("the API is not running");
      return api_->WriteBackJobDatasetForAgent(in, out);
    });
    return absl::OkStatus();
  }

  // The agents' listener: its own port, mTLS required in the handshake (DESIGN: "mTLS to
  // agents"); the admin API port never asks for client certificates.
  absl::Status StartAgentListener(http::ServerOptions opts) {
    opts.listen = config_.agent_listen;
    if (opts.listen.empty()) {
      size_t colon = config_.listen.rfind(':');
      int port = std::atoi(config_.listen.c_str() + colon + 1);
      opts.listen = StrCat(config_.listen.substr(0, colon), ":", port == 0 ? 0 : port + 1);
    }
    opts.client_ca_pem = pki_.ca_cert_pem;
    opts.on_reject = nullptr;
    opts.runs_inline = nullptr;  // every agent call may write the store: blocking pool
    opts.stream_body_limit = AgentApi::StreamBodyLimit;  // dataset write-back bodies
    WARDEN_ASSIGN_OR_RETURN(agent_https_, http::HttpsServer::Create(opts, [this](http::Request& req) {
                              return agent_api_->Serve(req);
                            }));
    WARDEN_RETURN_IF_ERROR(agent_https_->Start());
    cluster_->Start();
    return absl::OkStatus();
  }

  static std::string AbsPath(const std::string& p) {
    if (!p.empty() && p[0] == '/') return p;
    char cwd[4096];
    if (::getcwd(cwd, sizeof(cwd)) == nullptr) return p;
    return StrCat(cwd, "/", p);
  }

  http::Response Serve(http::Request& req) {
    if (req.method == "GET" && req.raw_path == "/healthz") {
      // Unhealthy while the API refuses everything for want of an audit log.
      if (!api_->Healthy()) {
        return http::Response::Json(503, common::Json{{"status", "unavailable"},
                                                      {"audit", "cannot write the audit log"}});
      }
      return http::Response::Json(200, common::Json{{"status", "ok"}});
    }
    http::Response err;
    const auto* route = router_.Match(req, &err);
    ApiRequest areq;
    areq.method = std::move(req.method);
    areq.path = std::move(req.path);
    areq.body = std::move(req.body);
    areq.source = std::move(req.remote_address);
    areq.request_id = req.request_id;  // the server still sends it back
    areq.authorization = std::string(req.headers.Get("Authorization"));
    areq.otp = std::string(req.headers.Get("X-Warden-OTP"));
    areq.query = std::move(req.query);
    if (size_t q = req.target.find('?'); q != std::string::npos) {
      areq.raw_query = req.target.substr(q + 1);
    }
    areq.cookie = std::string(req.headers.Get("Cookie"));
    areq.body_stream = req.body_stream;
    for (auto& [k, v] : req.params) areq.params.emplace(k, v);
    ApiResponse r;
    if (route == nullptr) {
      auto j = common::Json::parse(err.body, nullptr, false);
      std::string message = j.is_object() && j.contains("error") ? j["error"].value("message", "")
                                                                  : std::string("not found");
      r = api_->HandleUnmatched(areq, err.status, message);
      http::Response out;
      out.status = r.status;
      out.body = std::move(r.body);
      out.headers = err.headers;
      return out;
    }
    r = api_->Handle(*route->payload, areq);
    http::Response out;
    out.status = r.status;
    out.headers = std::move(r.headers);
    out.content_type = std::move(r.content_type);
    out.body = std::move(r.body);
    out.body_source = std::move(r.body_source);
    out.content_length = r.content_length;
    return out;
  }

  // Picks up policy changes made by other replicas and sweeps expired sessions.
  void Housekeeping() {
    int64_t generation = store_->PolicyGeneration().value_or(0);
    int ticks = 0;
    std::unique_lock lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, std::chrono::seconds(1));
      if (stopping_) break;
      lock.unlock();
      auto g = store_->PolicyGeneration();
      if (g.ok() && *g != generation) {
        generation = *g;
        (void)api_->RefreshPolicy();
      }
      if (++ticks % 5 == 0) api_->ForgetCachedTenants();  // other replicas' tenant changes
      if (ticks % 60 == 0) (void)auth_->SweepExpiredSessions();
      lock.lock();
    }
  }

  common::ServerConfig config_;
  pki::ServerPki pki_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<common::AeadKey> totp_key_;
  std::unique_ptr<auth::LoginThrottle> login_throttle_;
  std::unique_ptr<auth::Authenticator> auth_;
  std::unique_ptr<audit::SyslogSender> audit_syslog_;  // before audit_: outlives its callback
  std::unique_ptr<audit::AuditLog> audit_;
  std::unique_ptr<VaultService> vault_;  // before api_, which points to it
  std::unique_ptr<SsoService> sso_;
  std::unique_ptr<ApiService> api_;
  http::Router<const RouteSpec*> router_;
  std::unique_ptr<http::HttpsServer> https_;
  std::unique_ptr<pki::NodeCertificateAuthority> node_ca_;
  std::unique_ptr<cluster::Cluster> cluster_;
  std::unique_ptr<AgentApi> agent_api_;
  std::unique_ptr<JobService> jobs_;
  std::unique_ptr<http::HttpsServer> agent_https_;
  std::thread housekeeping_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Create(const common::ServerConfig& config,
                                                       std::ostream& out) {
  auto server = std::make_unique<ServerImpl>(config);
  WARDEN_RETURN_IF_ERROR(server->Init(out));
  return server;
}

int RunServerCommand(int argc, char** argv) {
  CLI::App app{"gpuwarden server: the control plane (HTTPS API, auth, RBAC, audit)", "gpuwarden server"};
  std::string config_file, data_dir, listen, store_url, admin_pw_file, master_key_file;
  int threads = 0;
  app.set_version_flag("--version", "gpuwarden " WARDEN_VERSION);
  app.add_option("--config", config_file, "YAML config file (flags override it)");
  app.add_option("--data-dir", data_dir, "state directory (default ./data)");
  app.add_option("--listen", listen, "address to listen on (default 127.0.0.1:8443; port 0 picks one)");
  app.add_option("--store", store_url, "state store URL: sqlite:///path/state.db (default, in the data dir) or postgres://user:pw@host:port/db");
  app.add_option("--admin-password-file", admin_pw_file, "first start only: the admin's password (else one is generated and printed once)");
  app.add_option("--master-key-file", master_key_file, "master key file (default DATA_DIR/master.key, created 0600)");
  app.add_option("--threads", threads, "HTTP worker threads (default 2)");
  std::string agent_listen;
  app.add_option("--agent-listen", agent_listen, "agents' mTLS address (default: the --listen host, its port + 1; port 0 picks one)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  common::ServerConfig config;
  if (!config_file.empty()) {
    auto loaded = common::LoadServerConfigFile(config_file);
    if (!loaded.ok()) {
      std::cerr << "gpuwarden server: " << loaded.status().message() << "\n";
      return 2;
    }
    config = *loaded;
  }
  if (!data_dir.empty()) config.data_dir = data_dir;
  if (!listen.empty()) config.listen = listen;
  if (!store_url.empty()) config.store_url = store_url;
  if (!admin_pw_file.empty()) config.admin_password_file = admin_pw_file;
  if (!master_key_file.empty()) config.master_key_file = master_key_file;
  if (threads > 0) config.threads = threads;
  if (!agent_listen.empty()) config.agent_listen = agent_listen;

  // Everything the server writes (state, keys, audit) is for its own user only.
  ::umask(077);
  // Block the stop signals in every thread; the main thread waits for them below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto server = Server::Create(config, std::cout);
  if (!server.ok()) {
    std::cerr << "gpuwarden server: " << server.status().message() << "\n";
    return 1;
  }
  if (absl::Status s = (*server)->Start(); !s.ok()) {
    std::cerr << "gpuwarden server: " << s.message() << "\n";
    return 1;
  }
  std::cout << "gpuwarden server listening on https://" << config.listen.substr(0, config.listen.rfind(':'))
            << ":" << (*server)->port() << "\n"
            << "CA fingerprint: " << (*server)->ca_fingerprint() << std::endl;
  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::cout << "stopping (signal " << sig << ")" << std::endl;
  (*server)->Stop();
  return 0;
}

}  // namespace warden::server
