// `gpuwarden login --sso [--provider NAME]`: single sign-on from a terminal with the OAuth device
// authorization grant (RFC 8628), through the server (the IdP's device_code never reaches this
// machine; the CLI holds only an opaque handle). The session it gets is remembered exactly like
// a password login's. `gpuwarden sso providers` lists the server's identity providers.
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <iostream>
#include <thread>

#include "cli/cli_internal.h"
#include "common/strings.h"

namespace warden::cli::internal {

using common::Json;
using common::StrCat;

void AddSsoCommands(CLI::App& app, CLI::App& login, SsoCommands& c) {
  c.login = &login;
  login.add_flag("--sso", c.sso,
                 "log in through the server's identity provider (device flow: open the URL shown "
                 "and enter the code)");
  login.add_option("--provider", c.provider,
                   "identity provider for --sso (default: the only one configured)");
  auto* sso = app.add_subcommand("sso", "single sign-on (OpenID Connect)")->require_subcommand(1);
  c.providers = sso->add_subcommand("providers", "list the server's identity providers");
}

namespace {

// The server to talk to without a session: --server (pinning its CA on first use) or the one
// last logged in to.
Session PublicSession(const std::string& server_flag, const std::string& expect_fp, Json& creds) {
  std::string url = server_flag.empty() ? creds.value("current", "") : NormalizeUrl(server_flag);
  if (url.empty()) Fail("--server URL is required", 2);
  Session s;
  s.url = url;
  s.ca_pem = PinServerCa(creds["servers"][url], url, expect_fp);
  return s;
}

std::string ChooseProvider(const Session& s, const std::string& wanted) {
  if (!wanted.empty()) return wanted;
  Json j = Request(s, "GET", "/api/v1/oidc/providers");
  const Json& items = j["items"];
  if (items.size() == 1) return items[0].value("name", "");
  if (items.empty()) Fail("this server has no single sign-on provider configured", 1);
  std::string names;
  for (const Json& p : items) names += StrCat(names.empty() ? "" : ", ", p.value("name", ""));
  Fail(StrCat("this server has several identity providers (", names, "); pick one with --provider"),
       2);
}

}  // namespace

bool RunSsoCommand(SsoCommands& c, const std::string& server_flag, const std::string& expect_fp,
                   const std::string& output) {
  if (c.providers != nullptr && c.providers->parsed()) {
    Json creds = LoadCredentials();
    Session s = PublicSession(server_flag, expect_fp, creds);
    Json j = Request(s, "GET", "/api/v1/oidc/providers");
    if (output == "json") {
      std::cout << j.dump(2) << "\n";
    } else if (j["items"].empty()) {
      std::cout << "no identity providers configured\n";
    } else {
      for (const Json& p : j["items"]) {
        std::cout << p.value("name", "") << "\t" << p.value("issuer", "") << "\n";
      }
    }
    return true;
  }
  if (c.login == nullptr || !c.login->parsed() || !c.sso) return false;
  if (server_flag.empty()) Fail("--server URL is required to log in", 2);
  Json creds = LoadCredentials();
  Session s = PublicSession(server_flag, expect_fp, creds);
  const std::string provider = ChooseProvider(s, c.provider);
  const std::string base = StrCat("/api/v1/oidc/", provider, "/device");
  Json start = Request(s, "POST", base);
  const std::string complete = start.value("verification_uri_complete", "");
  std::cerr << "To log in with " << provider << ", open\n  "
            << (complete.empty() ? start.value("verification_uri", "") : complete) << "\n"
            << "and check that it shows the code " << start.value("user_code", "") << "\n"
            << "waiting for approval..." << std::endl;
  int64_t interval = std::max<int64_t>(1, start.value("interval", int64_t{5}));
  const std::time_t deadline = std::time(nullptr) + start.value("expires_in", int64_t{300}) + 5;
  Json poll_body{{"handle", start.value("handle", "")}};
  Json done;
  while (true) {
    std::this_thread::sleep_for(std::chrono::seconds(interval));
    if (std::time(nullptr) > deadline) Fail("the login was not approved in time; try again");
    Json r = Request(s, "POST", base + "/poll", poll_body);
    const std::string status = r.value("status", "");
    if (status == "ok") {
      done = std::move(r);
      break;
    }
    if (status == "slow_down") interval += 5;  // RFC 8628 3.5
  }
  const std::string user = done["user"].value("name", "");
  Json& entry = creds["servers"][s.url];
  entry["token"] = done["token"];
  entry["user"] = user;
  entry["tenant"] = done["user"].value("tenant", "");
  entry["expires_at"] = done["expires_at"];
  entry["sso_provider"] = provider;
  creds["current"] = s.url;
  SaveCredentials(creds);
  std::cout << "logged in to " << s.url << " as " << user << " (single sign-on via " << provider
            << ")\n";
  if (done.value("mfa_step_up_required", false)) {
    std::cerr << "your identity provider did not assert a second factor and your role bindings "
                 "need one:\n  run: gpuwarden mfa step-up CODE   before administrative actions\n";
  } else if (done.value("mfa_enrollment_required", false)) {
    std::cerr << "MFA enrollment required: your role bindings need a second factor and your "
                 "identity provider did not assert one.\n  run: gpuwarden mfa enroll, then: "
                 "gpuwarden mfa confirm CODE\n";
  }
  return true;
}

}  // namespace warden::cli::internal
