#include "cli/cli.h"

#include "cli/cli_internal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/job_cmd.h"
#include "cli/image_cmd.h"
#include "cli/tenant_policy_cmd.h"
#include "cli/node_cmd.h"
#include "cli/audit_cmd.h"
#include "common/json.h"
#include "common/strings.h"
#include "http/client.h"

namespace warden::cli {
namespace internal {

using common::Json;
using common::StrCat;

[[noreturn]] void Fail(std::string message, int code) { throw CliError{std::move(message), code}; }

// ---------------------------------------------------------------------------------------------
// Credentials

std::string ConfigDir() {
  if (const char* d = std::getenv("GPUWARDEN_CONFIG_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x) return StrCat(x, "/gpuwarden");
  const char* home = std::getenv("HOME");
  return StrCat(home ? home : ".", "/.config/gpuwarden");
}

std::string CredentialsPath() { return ConfigDir() + "/credentials.json"; }

Json LoadCredentials() {
  std::ifstream in(CredentialsPath());
  if (!in) return Json{{"servers", Json::object()}};
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = common::ParseJsonStrict(ss.str());
  if (!j.ok() || !j->is_object()) {
    Fail(StrCat(CredentialsPath(), " is corrupt (", std::string(j.status().message()),
                "); remove it and log in again"));
  }
  if (!j->contains("servers") || !(*j)["servers"].is_object()) (*j)["servers"] = Json::object();
  return *j;
}

void SaveCredentials(const Json& creds) {
  std::string dir = ConfigDir();
  // mkdir -p with 0700 on the last component; parents get the usual umask.
  for (size_t pos = 1; pos != std::string::npos;) {
    pos = dir.find('/', pos + 1);
    std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), pos == std::string::npos ? 0700 : 0755) != 0 && errno != EEXIST) {
      Fail(StrCat("cannot create ", part, ": ", std::strerror(errno)));
    }
  }
  std::string tmp = CredentialsPath() + ".tmp";
  {
    // The file holds bearer tokens: create it 0600 before writing anything into it.
    ::unlink(tmp.c_str());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) Fail(StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
    std::string data = creds.dump(2) + "\n";
    bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
    ::close(fd);
    if (!ok) Fail(StrCat("cannot write ", tmp));
  }
  if (::rename(tmp.c_str(), CredentialsPath().c_str()) != 0) {
    Fail(StrCat("cannot replace ", CredentialsPath(), ": ", std::strerror(errno)));
  }
}

std::string PinServerCa(Json& entry, const std::string& url, const std::string& expect_fp) {
  if (!entry.is_object()) entry = Json::object();
  std::string ca_pem = entry.value("ca_pem", "");
  if (ca_pem.empty()) {
    auto ca = http::FetchServerCaChain(url);
    if (!ca.ok()) Fail(StrCat("cannot reach ", url, ": ", std::string(ca.status().message())), 3);
    if (!expect_fp.empty() && expect_fp != ca->fingerprint) {
      Fail(StrCat("server CA fingerprint is ", ca->fingerprint, ", expected ", expect_fp,
                  "; refusing to trust it"), 3);
    }
    std::cerr << "pinned the server CA of " << url << "\n  fingerprint " << ca->fingerprint << "\n";
    ca_pem = ca->ca_pem;
    entry["ca_pem"] = ca_pem;
    entry["ca_fingerprint"] = ca->fingerprint;
  } else if (!expect_fp.empty() && expect_fp != entry.value("ca_fingerprint", "")) {
    Fail(StrCat("pinned CA fingerprint is ", entry.value("ca_fingerprint", ""), ", expected ",
                expect_fp), 3);
  }
  return ca_pem;
}

std::string NormalizeUrl(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  if (url.rfind("https://", 0) != 0) {
    if (url.rfind("http://", 0) == 0) Fail("the server speaks HTTPS only; use an https:// URL", 2);
    url = "https://" + url;
  }
  return url;
}

// ---------------------------------------------------------------------------------------------
// Talking to the server

Session CurrentSession(const std::string& server_flag) {
  Json creds = LoadCredentials();
  std::string url = server_flag.empty() ? creds.value("current", "") : NormalizeUrl(server_flag);
  if (url.empty() || !creds["servers"].contains(url)) {
    Fail("not logged in; run: gpuwarden login --server URL --user NAME", 3);
  }
  const Json& s = creds["servers"][url];
  Session out{url, s.value("ca_pem", ""), s.value("token", ""), s.value("user", ""),
              s.value("tenant", "")};
  if (out.token.empty()) Fail(StrCat("not logged in to ", url, "; run: gpuwarden login"), 3);
  return out;
}

std::string ErrorMessage(const http::ClientResponse& r) {
  auto j = common::ParseJsonStrict(r.body);
  if (j.ok() && j->is_object() && j->contains("error") && (*j)["error"].is_object()) {
    return (*j)["error"].value("message", StrCat("HTTP ", r.status));
  }
  return StrCat("HTTP ", r.status);
}

Json Request(const Session& s, const std::string& method, const std::string& path,
             const Json& body) {
  http::ClientOptions opts;
  opts.base_url = s.url;
  opts.ca_pem = s.ca_pem;
  auto client = http::HttpsClient::Create(opts);
  if (!client.ok()) Fail(std::string(client.status().message()), 3);
  std::vector<std::pair<std::string, std::string>> headers = {
      {"Authorization", "Bearer " + s.token}};
  if (!s.otp.empty()) headers.emplace_back("X-Warden-OTP", s.otp);
  std::string payload;
  if (!body.is_null()) {
    payload = body.dump();
    headers.emplace_back("Content-Type", "application/json");
  }
  auto resp = (*client)->Do(method, path, payload, headers);
  if (!resp.ok()) {
    std::string msg(resp.status().message());
    if (http::IsPinnedCaMismatch(resp.status())) {
      Fail(StrCat(msg, "\nThe server's CA is not the one pinned at first login: this may be an "
                       "attack. If the server was legitimately re-keyed, run: gpuwarden logout "
                       "--forget, then log in again and check the new fingerprint."),
           3);
    }
    Fail(msg, 3);
  }
  if (resp->status == 401) Fail(StrCat(ErrorMessage(*resp), " (log in again: gpuwarden login)"));
  if (resp->status == 403 && s.otp.empty() && ::isatty(STDIN_FILENO) &&
      ErrorMessage(*resp).starts_with("MFA step-up required")) {
    Session again = s;
    again.otp = PromptLine("this action needs a fresh MFA code: ", "--otp CODE");
    return Request(again, method, path, body);
  }
  if (resp->status >= 400) Fail(ErrorMessage(*resp));
  auto j = common::ParseJsonStrict(resp->body);
  if (!j.ok()) Fail(StrCat("server sent a malformed reply: ", std::string(j.status().message())));
  return *j;
}

// ---------------------------------------------------------------------------------------------
// Output

std::string FormatTime(int64_t unix) {
  if (unix <= 0) return "-";
  std::time_t t = unix;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M", &tm);
  return buf;
}

std::string Cell(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  if (v.is_null()) return "-";
  if (v.is_array()) {
    std::string out;
    for (const auto& e : v) out += (out.empty() ? "" : ",") + Cell(e);
    return out;
  }
  return v.dump();
}

struct Column {
  const char* header;
  const char* key;
  bool time = false;
};

void PrintTable(const Json& items, const std::vector<Column>& cols) {
  std::vector<std::vector<std::string>> rows;
  rows.emplace_back();
  for (const auto& c : cols) rows.back().push_back(c.header);
  for (const auto& item : items) {
    rows.emplace_back();
    for (const auto& c : cols) {
      const Json& v = item.contains(c.key) ? item[c.key] : Json();
      rows.back().push_back(c.time && v.is_number_integer() ? FormatTime(v.get<int64_t>()) : Cell(v));
    }
  }
  std::vector<size_t> width(cols.size(), 0);
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

void Output(const std::string& format, const Json& j, const std::vector<Column>& cols) {
  if (format == "json") {
    std::cout << j.dump(2) << "\n";
  } else {
    PrintTable(j.contains("items") ? j["items"] : Json::array({j}), cols);
  }
}

std::string ReadPassword(bool from_stdin, const std::string& prompt) {
  std::string pw;
  if (from_stdin) {
    if (!std::getline(std::cin, pw)) Fail("no password on standard input", 2);
  } else {
    if (!::isatty(STDIN_FILENO)) {
      Fail("no terminal to ask for a password; use --password-stdin", 2);
    }
    std::cerr << prompt;
    termios old{};
    tcgetattr(STDIN_FILENO, &old);
    termios quiet = old;
    quiet.c_lflag &= ~ECHO;
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    std::getline(std::cin, pw);
    tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::cerr << "\n";
  }
  if (!pw.empty() && pw.back() == '\r') pw.pop_back();
  return pw;
}

std::string PromptLine(const std::string& prompt, const std::string& what_flag) {
  if (!::isatty(STDIN_FILENO)) Fail(StrCat("no terminal to ask on; use ", what_flag), 2);
  std::cerr << prompt;
  std::string line;
  std::getline(std::cin, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line;
}

void StoreToken(const Session& s, const std::string& token) {
  Json creds = LoadCredentials();
  if (token.empty()) {
    creds["servers"][s.url].erase("token");
  } else {
    creds["servers"][s.url]["token"] = token;
  }
  SaveCredentials(creds);
}

// URL prefix for a tenant-scoped resource: "/api/v1/tenants/T" or "/api/v1" for cluster scope.
std::string ScopePrefix(const Session& s, const std::string& tenant_flag, bool cluster) {
  if (cluster) return "/api/v1";
  std::string tenant = tenant_flag.empty() ? s.tenant : tenant_flag;
  return tenant.empty() ? "/api/v1" : StrCat("/api/v1/tenants/", tenant);
}

const std::vector<Column> kTenantCols = {{"NAME", "name"}, {"ID", "id"}, {"CREATED", "created_at", true}};
const std::vector<Column> kUserCols = {{"NAME", "name"}, {"TENANT", "tenant"}, {"DISABLED", "disabled"},
                                       {"ID", "id"}, {"CREATED", "created_at", true}};
const std::vector<Column> kRoleCols = {{"NAME", "name"}, {"TENANT", "tenant"}, {"BUILTIN", "builtin"},
                                       {"PERMISSIONS", "permissions"}};
const std::vector<Column> kBindingCols = {{"ID", "id"}, {"KIND", "subject_kind"}, {"SUBJECT", "subject"},
                                          {"ROLE", "role"}, {"SCOPE", "scope"}};
const std::vector<Column> kTokenCols = {{"ID", "id"}, {"NAME", "name"}, {"USER", "user"},
                                        {"TENANT", "tenant"}, {"ROLE", "role"},
                                        {"EXPIRES", "expires_at", true}, {"REVOKED", "revoked"}};
const std::vector<Column> kAuditCols = {{"SEQ", "seq"}, {"ACTOR", "actor_name"}, {"TENANT", "tenant"},
                                        {"ACTION", "action"}, {"DECISION", "decision"},
                                        {"STATUS", "status"}, {"RESOURCE", "resource"}};

}  // namespace internal

using namespace internal;  // NOLINT(google-build-using-namespace): the verbs' own helpers

int RunCli(int argc, char** argv) {
  CLI::App app{"gpuwarden: security control plane for multi-tenant GPU clusters", "gpuwarden"};
  app.require_subcommand(1);
  app.fallthrough();  // --server and -o work before or after the verb
  app.set_version_flag("--version", StrCat("gpuwarden ", WARDEN_VERSION));
  app.footer("Run `gpuwarden VERB --help` for a verb's options. `gpuwarden server --help` starts the control plane.");
  std::string server_flag, output = "table";
  app.add_option("--server", server_flag, "server URL (default: the one you last logged in to)");
  app.add_option("-o,--output", output, "output format: table or json")
      ->check(CLI::IsMember({"table", "json"}));
  std::string otp_flag;
  app.add_option("--otp", otp_flag,
                 "MFA code: for login, and sent as X-Warden-OTP with actions that need step-up");

  // login / logout / whoami
  auto* login = app.add_subcommand("login", "log in and remember the session (pins the server CA on first use)");
  std::string login_user, expect_fp;
  bool password_stdin = false;
  login->add_option("--user", login_user, "user name (not with --sso)");
  login->add_flag("--password-stdin", password_stdin, "read the password from standard input");
  login->add_option("--ca-fingerprint", expect_fp, "expected CA fingerprint (SHA256:...); refuse any other");
  auto* logout = app.add_subcommand("logout", "end the session on the server and forget the token");
  bool forget = false, logout_all = false;
  logout->add_flag("--forget", forget, "also forget the pinned CA of this server");
  logout->add_flag("--all", logout_all, "end every session of your user, on every device");
  auto* whoami = app.add_subcommand("whoami", "show who you are logged in as and your role bindings");
  auto* passwd = app.add_subcommand("passwd", "change your password (your other sessions end)");
  passwd->add_flag("--password-stdin", password_stdin,
                   "read the current and the new password from two lines of standard input");

  // tenant
  auto* tenant = app.add_subcommand("tenant", "manage tenants")->require_subcommand(1);
  std::string name;
  auto* tenant_create = tenant->add_subcommand("create", "create a tenant");
  tenant_create->add_option("name", name, "tenant name")->required();
  auto* tenant_ls = tenant->add_subcommand("ls", "list tenants you can see");
  auto* tenant_rm = tenant->add_subcommand("rm", "delete a tenant (it must have no users)");
  tenant_rm->add_option("name", name, "tenant name")->required();
  TenantPolicyCommands policy_cmds = AddTenantPolicyCommands(*tenant);  // tenant_policy_cmd.cc

  // user
  std::string tenant_flag, role_flag;
  bool cluster = false;
  auto add_scope = [&](CLI::App* cmd) {
    cmd->add_option("--tenant", tenant_flag, "tenant (default: your own tenant)");
    cmd->add_flag("--cluster", cluster, "act at cluster scope instead of a tenant");
  };
  auto* user = app.add_subcommand("user", "manage users")->require_subcommand(1);
  auto* user_create = user->add_subcommand("create", "create a user (password from stdin or generated)");
  user_create->add_option("name", name, "user name")->required();
  user_create->add_option("--role", role_flag, "bind this role to the new user at the same scope");
  user_create->add_flag("--password-stdin", password_stdin, "read the password from standard input");
  add_scope(user_create);
  auto* user_ls = user->add_subcommand("ls", "list users");
  add_scope(user_ls);
  auto* user_disable = user->add_subcommand("disable", "disable a user: their sessions and tokens stop working at once");
  user_disable->add_option("name", name, "user name")->required();
  add_scope(user_disable);
  auto* user_enable = user->add_subcommand("enable", "enable a disabled user");
  user_enable->add_option("name", name, "user name")->required();
  add_scope(user_enable);

  // role
  auto* role = app.add_subcommand("role", "manage roles and role bindings")->require_subcommand(1);
  auto* role_ls = role->add_subcommand("ls", "list roles");
  add_scope(role_ls);
  std::vector<std::string> perms;
  auto* role_create = role->add_subcommand("create", "create a custom role");
  role_create->add_option("name", name, "role name")->required();
  role_create->add_option("--perm", perms, "permission resource:verb (repeat or comma-separate)")
      ->required()->delimiter(',');
  add_scope(role_create);
  auto* role_rm = role->add_subcommand("rm", "delete a custom role");
  role_rm->add_option("name", name, "role name")->required();
  add_scope(role_rm);
  std::string bind_user, bind_token;
  auto* role_bind = role->add_subcommand("bind", "bind a role to a user or token");
  role_bind->add_option("role", name, "role name")->required();
  auto* bu = role_bind->add_option("--user", bind_user, "user name");
  role_bind->add_option("--token", bind_token, "token id")->excludes(bu);
  add_scope(role_bind);
  auto* role_unbind = role->add_subcommand("unbind", "remove a role binding from a user or token");
  role_unbind->add_option("role", name, "role name")->required();
  auto* ubu = role_unbind->add_option("--user", bind_user, "user name");
  role_unbind->add_option("--token", bind_token, "token id")->excludes(ubu);
  add_scope(role_unbind);
  auto* role_bindings = role->add_subcommand("bindings", "list role bindings");
  add_scope(role_bindings);

  // token
  auto* token = app.add_subcommand("token", "manage API tokens")->require_subcommand(1);
  std::string ttl = "720h";
  auto* token_create = token->add_subcommand("create", "create an API token (the secret is shown once)");
  token_create->add_option("name", name, "token name")->required();
  token_create->add_option("--role", role_flag, "role the token acts with")->required();
  token_create->add_option("--ttl", ttl, "lifetime, e.g. 24h (default 720h)");
  add_scope(token_create);
  auto* token_ls = token->add_subcommand("ls", "list API tokens");
  add_scope(token_ls);
  auto* token_revoke = token->add_subcommand("revoke", "revoke an API token");
  token_revoke->add_option("id", name, "token id")->required();
  add_scope(token_revoke);

  // audit
  auto* audit = app.add_subcommand("audit", "read the audit log")->require_subcommand(1);
  int limit = 50;
  std::string actor, action;
  auto* audit_ls = audit->add_subcommand("ls", "list recent audit events");
  audit_ls->add_option("--limit", limit, "how many of the latest events (default 50)");
  audit_ls->add_option("--actor", actor, "only events by this user");
  audit_ls->add_option("--action", action, "only this action, e.g. users:create");
  add_scope(audit_ls);
  AuditCommands audit_cmds(*audit);  // verify, pubkey, checkpoint, query, export, proof, ...
  for (CLI::App* cmd : audit_cmds.Scoped()) add_scope(cmd);

  MfaCommands mfa;
  AddMfaCommands(app, mfa);
  NodeCommands node_cmds = AddNodeCommands(app);  // node_cmd.cc
  SsoCommands sso;
  AddSsoCommands(app, *login, sso);
  JobCommands job_cmds = AddJobCommands(app);     // job_cmd.cc
  DatasetCommands dataset_cmds;
  AddDatasetCommands(app, dataset_cmds);  // dataset_cmd.cc
  ImageCommands image_cmds;
  AddImageCommands(app, image_cmds);  // image_cmd.cc

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (audit_cmds.OfflineParsed()) return audit_cmds.RunOffline();
    if (RunSsoCommand(sso, server_flag, expect_fp, output)) return 0;
    if (login->parsed()) {
      if (server_flag.empty()) Fail("--server URL is required to log in", 2);
      if (login_user.empty()) Fail("--user NAME is required (or log in with --sso)", 2);
      std::string url = NormalizeUrl(server_flag);
      Json creds = LoadCredentials();
      Json& entry = creds["servers"][url];
      std::string ca_pem = PinServerCa(entry, url, expect_fp);
      std::string pw = ReadPassword(password_stdin, "password for " + login_user + ": ");
      Session s{url, ca_pem, "", login_user, ""};
      http::ClientOptions opts{url, ca_pem};
      auto client = http::HttpsClient::Create(opts);
      if (!client.ok()) Fail(std::string(client.status().message()), 3);
      Json body{{"user", login_user}, {"password", pw}};
      if (!otp_flag.empty()) body["otp"] = otp_flag;
      auto post = [&] {
        auto resp = (*client)->Do("POST", "/api/v1/login", body.dump(),
                                  {{"Content-Type", "application/json"}});
        if (!resp.ok()) {
          if (http::IsPinnedCaMismatch(resp.status())) {
            Fail(StrCat(std::string(resp.status().message()),
                        "\nThe server's CA changed since you first logged in. Refusing."), 3);
          }
          Fail(std::string(resp.status().message()), 3);
        }
        return *resp;
      };
      http::ClientResponse first = post();
      auto* resp = &first;
      http::ClientResponse second;
      // Password right, MFA on: ask for the code and send both again.
      if (resp->status == 401 && ErrorMessage(*resp) == "MFA code required" && otp_flag.empty()) {
        body["otp"] = PromptLine(StrCat("MFA code for ", login_user, ": "), "--otp CODE");
        second = post();
        resp = &second;
      }
      if (resp->status != 200) Fail(ErrorMessage(*resp));
      Json j = Json::parse(resp->body);
      entry["token"] = j["token"];
      entry["user"] = login_user;
      entry["tenant"] = j["user"].value("tenant", "");
      entry["expires_at"] = j["expires_at"];
      creds["current"] = url;
      SaveCredentials(creds);
      std::cout << "logged in to " << url << " as " << login_user << "\n";
      if (j.value("mfa_enrollment_required", false)) {
        std::cerr << "MFA enrollment required: your role bindings need a second factor.\n"
                     "  run: gpuwarden mfa enroll   (scan the QR code), then: gpuwarden mfa "
                     "confirm CODE\n  until then every other command is refused\n";
      }
      return 0;
    }
    if (logout->parsed()) {
      Json creds = LoadCredentials();
      Session s = CurrentSession(server_flag);
      try {
        Request(s, "POST", logout_all ? "/api/v1/logout/all" : "/api/v1/logout");
      } catch (const CliError& e) {
        if (logout_all) throw;  // "everywhere" must not be reported done when it was not
        std::cerr << "gpuwarden: server-side logout failed (" << e.message << "); forgetting the token anyway\n";
      }
      if (forget) {
        creds["servers"].erase(s.url);
      } else {
        creds["servers"][s.url].erase("token");
      }
      SaveCredentials(creds);
      std::cout << (logout_all ? "logged out everywhere (every session of " + s.user + ") on "
                               : std::string("logged out of "))
                << s.url << "\n";
      return 0;
    }

    Session s = CurrentSession(server_flag);
    s.otp = otp_flag;
    if (RunMfaCommand(mfa, s, output)) return 0;
    if (RunDatasetCommand(dataset_cmds, s, output)) return 0;
    if (RunImageCommand(image_cmds, s, output)) return 0;
    if (whoami->parsed()) {
      Json j = Request(s, "GET", "/api/v1/whoami");
      if (output == "json") {
        std::cout << j.dump(2) << "\n";
      } else {
        std::cout << "user:    " << j.value("user", "") << "\n"
                  << "tenant:  " << (j.value("tenant", "").empty() ? "(cluster)" : j.value("tenant", "")) << "\n"
                  << "server:  " << s.url << "\n"
                  << "expires: " << FormatTime(j.value("expires_at", int64_t{0})) << " UTC\n"
                  << "mfa:     " << (j.value("mfa", false) ? "yes" : "no") << "\n"
                  << "roles:\n";
        for (const auto& b : j["bindings"]) {
          std::cout << "  " << b.value("role", "") << " at " << b.value("scope", "") << "\n";
        }
      }
      return 0;
    }
    if (passwd->parsed()) {
      std::string current = ReadPassword(password_stdin, "current password: ");
      std::string next = ReadPassword(password_stdin, "new password: ");
      if (!password_stdin && ReadPassword(false, "new password again: ") != next) {
        Fail("the new passwords do not match", 2);
      }
      Request(s, "POST", "/api/v1/password", {{"current_password", current}, {"new_password", next}});
      std::cout << "password changed; your other sessions have ended\n";
      return 0;
    }
    if (job_cmds.Parsed()) {
      RunJobCommand(job_cmds, {[&](const std::string& m, const std::string& p, const Json& b) {
                                 return Request(s, m, p, b);
                               },
                               [](const std::string& msg, int code) { Fail(msg, code); }, output,
                               s.tenant});
      return 0;
    }
    if (policy_cmds.Parsed()) {
      RunTenantPolicyCommand(policy_cmds,
                             {[&](const std::string& m, const std::string& p, const Json& b) {
                                return Request(s, m, p, b);
                              },
                              [](const std::string& msg, int code) { Fail(msg, code); }, output,
                              s.tenant});
      return 0;
    }
    if (node_cmds.Parsed()) {
      RunNodeCommand(node_cmds, {[&](const std::string& m, const std::string& p, const Json& b) {
                                   return Request(s, m, p, b);
                                 },
                                 [](const std::string& msg, int code) { Fail(msg, code); }, output});
      return 0;
    }
    if (tenant_create->parsed()) {
      Json j = Request(s, "POST", "/api/v1/tenants", {{"name", name}});
      Output(output, j, kTenantCols);
    } else if (tenant_ls->parsed()) {
      Output(output, Request(s, "GET", "/api/v1/tenants"), kTenantCols);
    } else if (tenant_rm->parsed()) {
      Request(s, "DELETE", "/api/v1/tenants/" + name);
      std::cout << "deleted tenant " << name << "\n";
    } else if (user_create->parsed()) {
      std::string pw;
      bool generated = false;
      if (password_stdin) {
        pw = ReadPassword(true, "");
      } else {
        // A random initial password, shown once, so nothing weak is ever set by default.
        std::ifstream urandom("/dev/urandom", std::ios::binary);
        static const char kAlpha[] = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        for (int i = 0; i < 20; ++i) pw.push_back(kAlpha[static_cast<unsigned char>(urandom.get()) % (sizeof(kAlpha) - 1)]);
        generated = true;
      }
      Json body{{"name", name}, {"password", pw}};
      if (!role_flag.empty()) body["role"] = role_flag;
      Json j = Request(s, "POST", ScopePrefix(s, tenant_flag, cluster) + "/users", body);
      if (generated) j["password"] = pw;
      if (output == "json") {
        std::cout << j.dump(2) << "\n";
      } else {
        std::cout << "created user " << name
                  << (j.value("tenant", "").empty() ? std::string() : " in tenant " + j.value("tenant", ""))
                  << (j.contains("role") ? " with role " + j.value("role", "") : std::string()) << "\n";
        if (generated) std::cout << "initial password: " << pw << "\n";
      }
    } else if (user_ls->parsed()) {
      Output(output, Request(s, "GET", ScopePrefix(s, tenant_flag, cluster) + "/users"), kUserCols);
    } else if (user_disable->parsed() || user_enable->parsed()) {
      const char* verb = user_disable->parsed() ? "disable" : "enable";
      Json j = Request(s, "POST", StrCat(ScopePrefix(s, tenant_flag, cluster), "/users/", name, "/", verb));
      Output(output, j, kUserCols);
    } else if (role_ls->parsed()) {
      Output(output, Request(s, "GET", ScopePrefix(s, tenant_flag, cluster) + "/roles"), kRoleCols);
    } else if (role_create->parsed()) {
      Json j = Request(s, "POST", ScopePrefix(s, tenant_flag, cluster) + "/roles",
                       {{"name", name}, {"permissions", perms}});
      Output(output, j, kRoleCols);
    } else if (role_rm->parsed()) {
      Request(s, "DELETE", StrCat(ScopePrefix(s, tenant_flag, cluster), "/roles/", name));
      std::cout << "deleted role " << name << "\n";
    } else if (role_bind->parsed()) {
      if (bind_user.empty() && bind_token.empty()) Fail("--user or --token is required", 2);
      Json body{{"role", name}};
      if (!bind_user.empty()) body["user"] = bind_user; else body["token"] = bind_token;
      Json j = Request(s, "POST", ScopePrefix(s, tenant_flag, cluster) + "/bindings", body);
      Output(output, j, kBindingCols);
    } else if (role_unbind->parsed()) {
      if (bind_user.empty() && bind_token.empty()) Fail("--user or --token is required", 2);
      std::string prefix = ScopePrefix(s, tenant_flag, cluster);
      Json list = Request(s, "GET", prefix + "/bindings");
      std::string subject = bind_user.empty() ? bind_token : bind_user;
      std::string id;
      for (const auto& b : list["items"]) {
        if (b.value("role", "") == name && b.value("subject", "") == subject) id = b.value("id", "");
      }
      if (id.empty()) Fail(StrCat("no binding of role ", name, " to ", subject, " at this scope"));
      Request(s, "DELETE", StrCat(prefix, "/bindings/", id));
      std::cout << "unbound role " << name << " from " << subject << "\n";
    } else if (role_bindings->parsed()) {
      Output(output, Request(s, "GET", ScopePrefix(s, tenant_flag, cluster) + "/bindings"), kBindingCols);
    } else if (token_create->parsed()) {
      Json j = Request(s, "POST", ScopePrefix(s, tenant_flag, cluster) + "/tokens",
                       {{"name", name}, {"role", role_flag}, {"ttl", ttl}});
      if (output == "json") {
        std::cout << j.dump(2) << "\n";
      } else {
        std::cout << "token " << j.value("id", "") << " (" << name << ", role " << j.value("role", "")
                  << ", expires " << FormatTime(j.value("expires_at", int64_t{0})) << " UTC)\n"
                  << "secret (shown once): " << j.value("secret", "") << "\n";
      }
    } else if (token_ls->parsed()) {
      Output(output, Request(s, "GET", ScopePrefix(s, tenant_flag, cluster) + "/tokens"), kTokenCols);
    } else if (token_revoke->parsed()) {
      Request(s, "DELETE", StrCat(ScopePrefix(s, tenant_flag, cluster), "/tokens/", name));
      std::cout << "revoked token " << name << "\n";
    } else if (audit_ls->parsed()) {
      std::string path = StrCat(ScopePrefix(s, tenant_flag, cluster), "/audit?limit=", limit);
      if (!actor.empty()) path += "&actor=" + actor;
      if (!action.empty()) path += "&action=" + action;
      Output(output, Request(s, "GET", path), kAuditCols);
    } else if (audit_cmds.OnlineParsed()) {
      return audit_cmds.RunOnline(
          [&](const std::string& m, const std::string& p) { return Request(s, m, p); },
          ScopePrefix(s, tenant_flag, cluster), output);
    }
    return 0;
  } catch (const CliError& e) {
    std::cerr << "gpuwarden: " << e.message << "\n";
    return e.code;
  }
}

}  // namespace warden::cli
