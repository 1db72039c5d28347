// `gpuwarden dataset share|accept|decline|shares|unshare`: cross-tenant shares of vault objects
// (issue 5; routes in src/server/vault_share_routes.cc, docs/api.md "Shares").
//
//   dataset share [--tenant A] NAME --to B [--prefix]   A's tenant admin offers NAME (or every name
//                                                       under the prefix NAME) to tenant B; step-up
//   dataset accept [--tenant B] ID                      B's tenant admin accepts
//   dataset decline [--tenant B] ID                     B's tenant admin declines (or drops)
//   dataset shares [--tenant T] [-o json]               shares T owns or was offered
//   dataset unshare [--tenant A] ID                     A's tenant admin revokes
//
// Reading shared objects needs no verb of its own: `dataset ls|show|get --tenant A ...`.
#include <cstdio>
#include <iostream>

#include "cli/cli_internal.h"
#include "common/strings.h"

namespace warden::cli::internal {
namespace {

using common::Json;
using common::StrCat;

// Share ids are server-minted ("shr_..."): anything else is refused before it reaches a path.
const std::string& CheckedId(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 64;
  for (char ch : id) {
    ok = ok && ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                ch == '_' || ch == '-');
  }
  if (!ok) Fail(StrCat("\"", id, "\" is not a share id"), 2);
  return id;
}

std::string When(int64_t unix) {
  if (unix == 0) return "-";
  time_t t = static_cast<time_t>(unix);
  char buf[32];
  struct tm tm {};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void PrintShares(const Json& items) {
  std::printf("%-26s %-10s %-14s %-14s %-30s %s\n", "ID", "STATE", "FROM", "TO", "NAME", "OFFERED");
  for (const auto& s : items) {
    std::string name = s.value("name", "");
    if (s.value("prefix", false)) name += " (prefix)";
    std::printf("%-26s %-10s %-14s %-14s %-30s %s\n", s.value("id", "").c_str(),
                s.value("state", "").c_str(), s.value("owner", "").c_str(),
                s.value("to", "").c_str(), name.c_str(), When(s.value("offered_at", int64_t{0})).c_str());
  }
}

}  // namespace

void AddDatasetShareCommands(CLI::App& ds, DatasetShareCommands& c) {
  auto tenant = [&](CLI::App* cmd, const char* help) { cmd->add_option("--tenant", c.tenant, help); };
  c.share = ds.add_subcommand("share", "offer NAME (or a name prefix) to another tenant");
  c.share->add_option("name", c.name, "object name, or a name prefix with --prefix")->required();
  c.share->add_option("--to", c.to, "the receiving tenant")->required();
  c.share->add_flag("--prefix", c.prefix, "share every object whose name starts with NAME");
  tenant(c.share, "owner tenant (default: your own tenant)");
  c.accept = ds.add_subcommand("accept", "accept share ID offered to your tenant");
  c.accept->add_option("id", c.id, "share id")->required();
  tenant(c.accept, "receiving tenant (default: your own tenant)");
  c.decline = ds.add_subcommand("decline", "decline (or drop) share ID offered to your tenant");
  c.decline->add_option("id", c.id, "share id")->required();
  tenant(c.decline, "receiving tenant (default: your own tenant)");
  c.shares = ds.add_subcommand("shares", "list shares your tenant owns or was offered");
  tenant(c.shares, "tenant (default: your own tenant)");
  c.unshare = ds.add_subcommand("unshare", "revoke share ID (owner side)");
  c.unshare->add_option("id", c.id, "share id")->required();
  tenant(c.unshare, "owner tenant (default: your own tenant)");
}

bool RunDatasetShareCommand(DatasetShareCommands& c, const Session& s, const std::string& output) {
  if (!c.share->parsed() && !c.accept->parsed() && !c.decline->parsed() && !c.shares->parsed() &&
      !c.unshare->parsed()) {
    return false;
  }
  std::string tenant = c.tenant.empty() ? s.tenant : c.tenant;
  if (tenant.empty()) Fail("--tenant is required (your account has no home tenant)", 2);
  const std::string base = StrCat("/api/v1/tenants/", tenant, "/shares");
  auto show = [&](const Json& j, const std::string& what) {
    if (output == "json") {
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << what << " " << j.value("id", "") << " (" << j.value("state", "") << ")\n";
    }
  };
  if (c.share->parsed()) {
    Json body{{"name", c.name}, {"to", c.to}, {"prefix", c.prefix}};
    show(Request(s, "POST", base, body), StrCat("offered ", c.name, " to ", c.to, " as share"));
  } else if (c.accept->parsed()) {
    show(Request(s, "POST", StrCat(base, "/", CheckedId(c.id), "/accept"), Json::object()),
         "accepted share");
  } else if (c.decline->parsed()) {
    show(Request(s, "POST", StrCat(base, "/", CheckedId(c.id), "/decline"), Json::object()),
         "declined share");
  } else if (c.unshare->parsed()) {
    show(Request(s, "DELETE", StrCat(base, "/", CheckedId(c.id))), "revoked share");
  } else {
    Json j = Request(s, "GET", base);
    if (output == "json") {
      std::cout << j.dump(2) << "\n";
    } else {
      PrintShares(j["items"]);
    }
  }
  return true;
}

}  // namespace warden::cli::internal
