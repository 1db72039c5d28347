// The `gpuwarden` command-line client: login (pinning the server's CA on first use, like ssh),
// and the verbs over the HTTP API (tenant, user, role, token, audit). Human-readable tables by
// default, `-o json` on every listing; a failure prints one line "gpuwarden: <reason>" on stderr
// and exits non-zero.
//
// Credentials live in $GPUWARDEN_CONFIG_DIR, else $XDG_CONFIG_HOME/gpuwarden, else
// ~/.config/gpuwarden: credentials.json (mode 0600, directory 0700) holding, per server URL, the
// pinned CA certificate, its fingerprint, the user and the session token.
#pragma once

namespace warden::cli {

// Runs one CLI invocation (argv[0] is the program). Returns the process exit code:
// 0 success, 1 the server refused or failed, 2 usage error, 3 cannot reach/trust the server.
int RunCli(int argc, char** argv);

}  // namespace warden::cli
