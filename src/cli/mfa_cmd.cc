// `gpuwarden mfa enroll|confirm|disable|status|step-up|reset`: TOTP enrollment and use from the
// command line. Confirmation and step-up rotate the session id on the server; the new token
// replaces the remembered one here.
#include <qrencode.h>

#include <iostream>

#include "cli/cli_internal.h"
#include "common/strings.h"

namespace warden::cli::internal {

using common::Json;
using common::StrCat;

std::string TerminalQr(const std::string& text) {
  QRcode* qr = QRcode_encodeString(text.c_str(), 0, QR_ECLEVEL_M, QR_MODE_8, 1);
  if (qr == nullptr) return "";
  const int w = qr->width;
  constexpr int kQuiet = 2;
  // Module (x, y) is dark when bit 0 of its byte is set; outside the symbol is the light quiet
  // zone.
  auto dark = [&](int x, int y) {
    if (x < 0 || y < 0 || x >= w || y >= w) return false;
    return (qr->data[y * w + x] & 1) != 0;
  };
  std::string out;
  for (int y = -kQuiet; y < w + kQuiet; y += 2) {
    for (int x = -kQuiet; x < w + kQuiet; ++x) {
      const bool top_light = !dark(x, y);
      const bool bottom_light = y + 1 < w + kQuiet && !dark(x, y + 1);
      if (top_light && bottom_light) {
        out += "\u2588";  // full block
      } else if (top_light) {
        out += "\u2580";  // upper half
      } else if (bottom_light) {
        out += "\u2584";  // lower half
      } else {
        out += " ";
      }
    }
    out += "\n";
  }
  QRcode_free(qr);
  return out;
}

void AddMfaCommands(CLI::App& app, MfaCommands& c) {
  auto* mfa = app.add_subcommand("mfa", "TOTP second factor: enroll, confirm, disable, step up")
                  ->require_subcommand(1);
  c.enroll = mfa->add_subcommand(
      "enroll", "start MFA: shows the otpauth:// URI and a QR code for your authenticator app");
  c.enroll->add_flag("--no-qr", c.no_qr, "do not draw the QR code");
  c.confirm = mfa->add_subcommand(
      "confirm", "turn MFA on with a first code from the app; prints 10 single-use recovery codes");
  c.confirm->add_option("code", c.code, "the code your app shows now")->required();
  c.disable = mfa->add_subcommand("disable", "turn MFA off (needs a current code or a recovery code)");
  c.disable->add_option("code", c.code, "a current code or a recovery code")->required();
  c.status = mfa->add_subcommand("status", "show whether MFA is on and how many recovery codes are left");
  c.step_up = mfa->add_subcommand(
      "step-up", "prove presence with a code before sensitive actions (your session id changes)");
  c.step_up->add_option("code", c.code, "a current code (asked for when omitted)");
  c.reset = mfa->add_subcommand(
      "reset", "admin: remove a user's MFA (lost device); their sessions end, old codes stop working");
  c.reset->add_option("user", c.user, "user name")->required();
  c.reset->add_option("--tenant", c.tenant, "the user's tenant (default: your own tenant)");
  c.reset->add_flag("--cluster", c.cluster, "act at cluster scope");
}

bool RunMfaCommand(MfaCommands& c, const Session& s, const std::string& output) {
  if (c.enroll->parsed()) {
    Json j = Request(s, "POST", "/api/v1/mfa/enroll");
    if (output == "json") {
      std::cout << j.dump(2) << "\n";
      return true;
    }
    const std::string uri = j.value("otpauth_uri", "");
    if (!c.no_qr) std::cout << TerminalQr(uri);
    std::cout << "add this account to your authenticator app (scan the QR code or enter the secret)\n"
              << "  uri:    " << uri << "\n"
              << "  secret: " << j.value("secret", "") << "  (SHA1, 6 digits, 30 s)\n"
              << "then turn MFA on with: gpuwarden mfa confirm CODE\n";
    return true;
  }
  if (c.confirm->parsed()) {
    Json j = Request(s, "POST", "/api/v1/mfa/confirm", {{"code", c.code}});
    StoreToken(s, j.value("token", ""));
    if (output == "json") {
      j.erase("token");
      std::cout << j.dump(2) << "\n";
      return true;
    }
    std::cout << "MFA is on; your other sessions have ended and this one was renewed.\n"
              << "recovery codes (each works once; store them offline, shown only now):\n";
    for (const auto& code : j["recovery_codes"]) std::cout << "  " << code.get<std::string>() << "\n";
    return true;
  }
  if (c.disable->parsed()) {
    Request(s, "POST", "/api/v1/mfa/disable", {{"code", c.code}});
    StoreToken(s, "");
    std::cout << "MFA is off; every session of yours has ended (log in again)\n";
    return true;
  }
  if (c.status->parsed()) {
    Json j = Request(s, "GET", "/api/v1/mfa");
    if (output == "json") {
      std::cout << j.dump(2) << "\n";
      return true;
    }
    std::cout << "mfa:            "
              << (j.value("enabled", false) ? "on"
                                            : (j.value("enrolled", false) ? "pending confirmation" : "off"))
              << "\n"
              << "required:       " << (j.value("required", false) ? "yes" : "no") << "\n"
              << "recovery codes: " << j.value("recovery_codes_left", int64_t{0}) << " left\n";
    return true;
  }
  if (c.step_up->parsed()) {
    std::string code = c.code.empty() ? PromptLine("MFA code: ", "a CODE argument") : c.code;
    Json j = Request(s, "POST", "/api/v1/mfa/step-up", {{"code", code}});
    StoreToken(s, j.value("token", ""));
    std::cout << "stepped up: sensitive actions are allowed for the next minutes (new session id)\n";
    return true;
  }
  if (c.reset->parsed()) {
    Request(s, "POST", StrCat(ScopePrefix(s, c.tenant, c.cluster), "/users/", c.user, "/mfa/reset"));
    std::cout << "MFA of " << c.user << " removed; their sessions have ended. They log in with "
              << "their password and enroll again.\n";
    return true;
  }
  return false;
}

}  // namespace warden::cli::internal
