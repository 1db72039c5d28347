// Helpers shared by the CLI's verb files (cli.cc, mfa_cmd.cc). Private to the cli module.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "common/json.h"

namespace warden::cli::internal {

// A failure that ends the command: printed as one line, exit code attached.
struct CliError {
  std::string message;
  int code = 1;
};
[[noreturn]] void Fail(std::string message, int code = 1);

struct Session {
  std::string url;
  std::string ca_pem;
  std::string token;
  std::string user;
  std::string tenant;  // home tenant of the logged-in user
  std::string otp;     // --otp: sent as X-Warden-OTP (a second factor for step-up actions)
};

common::Json LoadCredentials();
// "https://host:port" without a trailing slash; Fail()s for http://.
std::string NormalizeUrl(std::string url);
// The CA of `url` from its credentials entry, or fetched and pinned into `entry` on first use
// (trust on first use, or checked against `expect_fp` when given). Fail()s on a mismatch.
std::string PinServerCa(common::Json& entry, const std::string& url, const std::string& expect_fp);
void SaveCredentials(const common::Json& creds);
// Replaces the remembered session token of s.url (after MFA confirmation or step-up, which
// rotate the session id), or forgets it when `token` is empty.
void StoreToken(const Session& s, const std::string& token);

// One API call; Fail()s on transport errors and non-2xx answers (with the server's message).
// A 403 "MFA step-up required" is retried once with a code read from the terminal, when there
// is one and no --otp was given.
common::Json Request(const Session& s, const std::string& method, const std::string& path,
                     const common::Json& body = nullptr);

// Reads one line from the terminal (prompt on stderr), echo on; Fail()s without a terminal.
std::string PromptLine(const std::string& prompt, const std::string& what_flag);

// "/api/v1/tenants/T" or "/api/v1" for cluster scope.
std::string ScopePrefix(const Session& s, const std::string& tenant_flag, bool cluster);

// The `gpuwarden mfa ...` verbs (mfa_cmd.cc).
struct MfaCommands {
  CLI::App* enroll = nullptr;
  CLI::App* confirm = nullptr;
  CLI::App* disable = nullptr;
  CLI::App* status = nullptr;
  CLI::App* step_up = nullptr;
  CLI::App* reset = nullptr;
  std::string code, user, tenant;
  bool cluster = false;
  bool no_qr = false;
};
void AddMfaCommands(CLI::App& app, MfaCommands& cmds);
// Runs the parsed mfa verb, if any; returns false when none was parsed.
bool RunMfaCommand(MfaCommands& cmds, const Session& s, const std::string& output);

// The QR code of `text` drawn with Unicode half blocks (two modules per character cell, light
// modules drawn, for terminals with a dark background), with a quiet zone. InvalidArgument-like
// failures (text too long for a QR code) come back as an empty string.
std::string TerminalQr(const std::string& text);

// `gpuwarden login --sso [--provider NAME]` and `gpuwarden sso providers` (sso_cmd.cc).
struct SsoCommands {
  CLI::App* login = nullptr;
  CLI::App* providers = nullptr;
  bool sso = false;
  std::string provider;
};
void AddSsoCommands(CLI::App& app, CLI::App& login, SsoCommands& cmds);
// Runs `login --sso` or an sso verb, if parsed; returns false otherwise.
bool RunSsoCommand(SsoCommands& cmds, const std::string& server_flag, const std::string& expect_fp,
                   const std::string& output);

// `gpuwarden dataset share|accept|decline|shares|unshare` (dataset_share_cmd.cc), under the
// `dataset` verb that AddDatasetCommands creates.
struct DatasetShareCommands {
  CLI::App *share = nullptr, *accept = nullptr, *decline = nullptr, *shares = nullptr,
           *unshare = nullptr;
  std::string tenant, name, to, id;
  bool prefix = false;
};
void AddDatasetShareCommands(CLI::App& dataset, DatasetShareCommands& cmds);
// Runs the parsed share verb, if any; returns false when none was parsed.
bool RunDatasetShareCommand(DatasetShareCommands& cmds, const Session& s, const std::string& output);

// The `gpuwarden dataset ...` and `gpuwarden key ...` verbs (dataset_cmd.cc).
struct DatasetCommands {
  CLI::App *put = nullptr, *get = nullptr, *ls = nullptr, *show = nullptr, *rm = nullptr,
           *verify = nullptr, *policy_get = nullptr, *policy_set = nullptr, *policy_rm = nullptr,
           *key_status = nullptr, *key_rotate = nullptr;
  std::string tenant, name, file, out, output;
  uint64_t version = 0;
  bool progress = false;
  bool reencrypt = false;
  DatasetShareCommands shares;
};
void AddDatasetCommands(CLI::App& app, DatasetCommands& cmds);
// Runs the parsed dataset/key verb, if any; returns false when none was parsed.
bool RunDatasetCommand(DatasetCommands& cmds, const Session& s, const std::string& output);

}  // namespace warden::cli::internal
