// Cross-tenant shares end to end (issue 5, must-show 2 "share to another tenant without both
// admins"): the real binary over real TLS, the CLI and curl, on SQLite and PostgreSQL. Each attack
// is a request that would be served if its defence were removed: the share routes' RBAC, the copy
// decision and step-up of an offer, the accept's tenant check, and the share gate in front of
// acme's dataset routes for another tenant's principals.
#include <gtest/gtest.h>

#include <thread>

#include "harness.h"

namespace warden::testing {
namespace {

using common::Json;

constexpr char kPw[] = "s3cret-passw0rd";
// acme's tenant admins may export (copy) what is under models/ (and read everything).
constexpr char kAdminExport[] =
    R"({"version": 1, "statements": [{"id": "admins-export-models", "effect": "allow",
        "actions": ["read", "copy"], "principals": ["role:tenant-admin"],
        "resources": ["prefix:models/"]}]})";

std::string Sha256OfFile(const std::string& path) {
  return RunShell("sha256sum " + ShellQuote(path)).out.substr(0, 64);
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

class VaultShareTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    // A short step-up window: the step-up attack waits it out (only acme-admin enrolls in MFA;
    // accounts without MFA pass step-up under required_for: none).
    server_.Start(GetParam(), "mfa: {required_for: none, step_up_window: 2s}\n");
    if (IsSkipped() || HasFatalFailure()) return;
    server_.Login("admin", "admin", server_.admin_password());
    for (const char* t : {"acme", "beta", "gamma"}) {
      ASSERT_EQ(server_.Cli("admin", std::string("tenant create ") + t).code, 0);
    }
    for (const auto& [user, tenant, role] :
         std::vector<std::tuple<std::string, std::string, std::string>>{
             {"alice", "acme", "developer"},
             {"acme-admin", "acme", "tenant-admin"},
             {"bob", "beta", "tenant-admin"},
             {"bea", "beta", "developer"},
             {"vic", "beta", "viewer"},
             {"carol", "gamma", "tenant-admin"}}) {
      RunResult r = server_.Cli("admin", "user create " + user + " --tenant " + tenant +
                                             " --role " + role + " --password-stdin",
                                std::string(kPw) + "\n");
      ASSERT_EQ(r.code, 0) << r.err;
      server_.Login(user, user, kPw);
    }
    dir_ = ::testing::TempDir() + "vault_share_it_" + std::to_string(getpid());
    std::filesystem::create_directories(dir_);
    in_ = dir_ + "/in.bin";
    ASSERT_EQ(RunShell("head -c 300000 /dev/urandom > " + ShellQuote(in_)).code, 0);
    for (const char* name : {"models/llm.pt", "models/v2/ckpt", "secret/plans"}) {
      RunResult put = server_.Cli("alice", std::string("dataset put ") + name + " " + in_);
      ASSERT_EQ(put.code, 0) << put.err;
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void AllowAdminExport() {
    std::ofstream(dir_ + "/export.json") << kAdminExport;
    RunResult r = server_.Cli("acme-admin", "dataset policy set export " + dir_ + "/export.json");
    ASSERT_EQ(r.code, 0) << r.err << r.out;
  }

  // acme-admin offers `args` ("NAME --to T [--prefix]"); returns the share id ("" on failure).
  std::string Offer(const std::string& args, RunResult* out = nullptr) {
    RunResult r = server_.Cli("acme-admin", "dataset share " + args + " -o json");
    if (out) *out = r;
    if (r.code != 0) return "";
    return Json::parse(r.out).value("id", "");
  }

  int Status(const std::string& who, const std::string& method, const std::string& path) {
    return server_.Curl(method, path, server_.Token(who)).code;
  }

  bool Downloads(const std::string& who, const std::string& name) {
    std::string out = dir_ + "/out-" + who;
    std::filesystem::remove(out);
    RunResult r = server_.Cli(who, "dataset get --tenant acme " + name + " " + out);
    bool ok = r.code == 0 && Sha256OfFile(out) == Sha256OfFile(in_);
    EXPECT_EQ(ok, std::filesystem::exists(out)) << who << " " << name;
    return ok;
  }

  // The audit log's events (segment files, in order).
  std::vector<Json> AuditEvents() {
    std::vector<Json> out;
    for (const auto& f : std::filesystem::directory_iterator(server_.dir() + "/data/audit")) {
      if (f.path().extension() != ".jsonl") continue;
      std::ifstream in(f.path());
      for (std::string line; std::getline(in, line);) {
        auto j = Json::parse(line, nullptr, false);
        if (!j.is_discarded()) out.push_back(j.contains("event") ? j["event"] : j);
      }
    }
    return out;
  }

  WardenServer server_;
  std::string dir_, in_;
};

// The whole life of a prefix share: offered by acme's admin, unusable until beta's admin accepts,
// then beta's developer lists, shows and downloads exactly the shared names, until acme revokes.
TEST_P(VaultShareTest, AcceptedPrefixShareLetsTheOtherTenantReadOnlyThatPrefixUntilRevoked) {
  AllowAdminExport();
  const std::string id = Offer("models/ --to beta --prefix");
  ASSERT_FALSE(id.empty());
  // Attack: B reads before acceptance.
  EXPECT_FALSE(Downloads("bea", "models/llm.pt"));
  EXPECT_EQ(Status("bea", "GET", "/api/v1/tenants/acme/datasets/object?name=models/llm.pt"), 403);
  EXPECT_EQ(Status("bea", "GET", "/api/v1/tenants/acme/datasets"), 403);

  RunResult acc = server_.Cli("bob", "dataset accept " + id + " -o json");
  ASSERT_EQ(acc.code, 0) << acc.err << acc.out;
  EXPECT_EQ(Json::parse(acc.out)["state"], "accepted");
  // Both sides list it.
  for (const char* who : {"acme-admin", "bob", "bea"}) {
    RunResult ls = server_.Cli(who, "dataset shares -o json");
    ASSERT_EQ(ls.code, 0) << who << ls.err;
    Json items = Json::parse(ls.out)["items"];
    ASSERT_EQ(items.size(), 1u) << who;
    EXPECT_EQ(items[0]["id"], id);
    EXPECT_EQ(items[0]["owner"], "acme");
    EXPECT_EQ(items[0]["to"], "beta");
    EXPECT_EQ(items[0]["state"], "accepted");
  }
  EXPECT_EQ(server_.Cli("carol", "dataset shares -o json").out.find(id), std::string::npos);

  // Reads through the share: the listing shows the shared names only.
  RunResult ls = server_.Cli("bea", "dataset ls --tenant acme -o json");
  ASSERT_EQ(ls.code, 0) << ls.err;
  std::set<std::string> names;
  Json listed = Json::parse(ls.out);
  for (const auto& o : listed["items"]) names.insert(o["name"].get<std::string>());
  EXPECT_EQ(names, (std::set<std::string>{"models/llm.pt", "models/v2/ckpt"})) << ls.out;
  RunResult show = server_.Cli("bea", "dataset show --tenant acme models/v2/ckpt");
  EXPECT_EQ(show.code, 0) << show.err;
  EXPECT_TRUE(Downloads("bea", "models/llm.pt"));
  EXPECT_TRUE(Downloads("bea", "models/v2/ckpt"));
  // Attack: a name outside the shared prefix, whether it exists or not (no existence oracle).
  EXPECT_FALSE(Downloads("bea", "secret/plans"));
  EXPECT_EQ(Status("bea", "GET", "/api/v1/tenants/acme/datasets/object?name=secret/plans"), 403);
  EXPECT_EQ(Status("bea", "GET", "/api/v1/tenants/acme/datasets/object?name=secret/none"), 403);
  // The share is read-only: no writes, deletes, policies or keys of acme for beta.
  EXPECT_EQ(Status("bob", "DELETE", "/api/v1/tenants/acme/datasets/object?name=models/llm.pt"), 403);
  EXPECT_EQ(Status("bob", "GET", "/api/v1/tenants/acme/keys"), 403);
  EXPECT_EQ(Status("bob", "GET", "/api/v1/tenants/acme/datasets/policies"), 403);
  EXPECT_NE(server_.Cli("bea", "dataset put --tenant acme models/evil " + in_).code, 0);

  // Attack: B reads after revoke.
  RunResult rev = server_.Cli("acme-admin", "dataset unshare " + id);
  ASSERT_EQ(rev.code, 0) << rev.err;
  EXPECT_FALSE(Downloads("bea", "models/llm.pt"));
  EXPECT_EQ(Status("bea", "GET", "/api/v1/tenants/acme/datasets"), 403);
  EXPECT_EQ(Status("bea", "GET", "/api/v1/tenants/acme/datasets/object?name=models/llm.pt"), 403);
  // A revoked share cannot be accepted again.
  EXPECT_NE(server_.Cli("bob", "dataset accept " + id).code, 0);

  // Audit: share, accept, revoke, and every cross-tenant read names the share id.
  std::map<std::string, int> actions;
  int downloads_with_share = 0;
  for (const Json& e : AuditEvents()) {
    std::string action = e.value("action", "");
    std::string reason = e.value("reason", "");
    if (reason.find(id) != std::string::npos) ++actions[action];
    if (action == "data:download" && e.value("actor_name", "") == "bea" &&
        e.value("decision", "") == "allow") {
      EXPECT_EQ(e.value("tenant", ""), "acme");
      EXPECT_NE(reason.find("share " + id), std::string::npos) << reason;
      EXPECT_GT(e.value("bytes", 0), 0);
      ++downloads_with_share;
    }
  }
  EXPECT_GE(downloads_with_share, 2);
  for (const char* a : {"datasets:share", "datasets:share-accept", "datasets:share-revoke",
                        "datasets:list", "datasets:show", "data:download"}) {
    EXPECT_GE(actions[a], 1) << a;
  }
}

// Must-show 2: sharing to another tenant without both admins, and the other ways around them.
TEST_P(VaultShareTest, ShareNeedsTheOwnersAdminWithCopyAndTheReceiversAdmin) {
  // Attack: share without a copy allow (no data policy yet): even acme's admin is refused.
  RunResult r;
  EXPECT_EQ(Offer("models/llm.pt --to beta", &r), "");
  EXPECT_NE(r.err.find("copy"), std::string::npos) << r.err;
  AllowAdminExport();
  // Attack: share by a non-admin of acme (developer), and by beta's admin on acme's behalf.
  RunResult dev = server_.Cli("alice", "dataset share models/llm.pt --to beta");
  EXPECT_NE(dev.code, 0);
  EXPECT_NE(dev.err.find("datasets:manage"), std::string::npos) << dev.err;
  EXPECT_NE(server_.Cli("bob", "dataset share --tenant acme models/llm.pt --to beta").code, 0);
  // The copy allow covers prefix:models/ only: secret/ cannot be shared, nor the whole tenant.
  EXPECT_EQ(Offer("secret/plans --to beta"), "");
  EXPECT_EQ(Offer("secret/ --to beta --prefix"), "");
  EXPECT_EQ(server_.Cli("bob", "dataset shares -o json").out.find("secret"), std::string::npos);

  const std::string id = Offer("models/llm.pt --to beta");
  ASSERT_FALSE(id.empty());
  // Attack: accept by a non-admin of beta.
  EXPECT_NE(server_.Cli("bea", "dataset accept " + id).code, 0);
  // Attack: accept by acme's admin on beta's behalf, through beta's route and through acme's own.
  EXPECT_EQ(Status("acme-admin", "POST", "/api/v1/tenants/beta/shares/" + id + "/accept"), 403);
  EXPECT_EQ(Status("acme-admin", "POST", "/api/v1/tenants/acme/shares/" + id + "/accept"), 404);
  // Attack: a third tenant's admin accepts it for gamma.
  EXPECT_EQ(Status("carol", "POST", "/api/v1/tenants/gamma/shares/" + id + "/accept"), 404);
  EXPECT_FALSE(Downloads("bea", "models/llm.pt"));
  EXPECT_FALSE(Downloads("carol", "models/llm.pt"));

  ASSERT_EQ(server_.Cli("bob", "dataset accept " + id).code, 0);
  EXPECT_TRUE(Downloads("bea", "models/llm.pt"));
  // One object, not its neighbours under the same prefix.
  EXPECT_FALSE(Downloads("bea", "models/v2/ckpt"));
  // Attack: a third tenant reads.
  EXPECT_FALSE(Downloads("carol", "models/llm.pt"));
  EXPECT_EQ(Status("carol", "GET", "/api/v1/tenants/acme/datasets"), 403);
  EXPECT_EQ(Status("carol", "GET", "/api/v1/tenants/acme/datasets/object?name=models/llm.pt"), 403);
  // Attack: beta's user without data:read (a viewer) downloads; metadata (datasets:read) is all
  // a viewer gets, as in its own tenant.
  EXPECT_FALSE(Downloads("vic", "models/llm.pt"));
  EXPECT_EQ(Status("vic", "GET", "/api/v1/tenants/acme/datasets/content?name=models/llm.pt"), 403);
  EXPECT_EQ(Status("vic", "GET", "/api/v1/tenants/acme/datasets/object?name=models/llm.pt"), 200);
  // Only acme revokes: beta's admin cannot, but may decline, which ends beta's reads as well.
  EXPECT_EQ(Status("bob", "DELETE", "/api/v1/tenants/beta/shares/" + id), 404);
  EXPECT_EQ(Status("bob", "DELETE", "/api/v1/tenants/acme/shares/" + id), 403);
  RunResult dec = server_.Cli("bob", "dataset decline " + id + " -o json");
  ASSERT_EQ(dec.code, 0) << dec.err;
  EXPECT_EQ(Json::parse(dec.out)["state"], "declined");
  EXPECT_FALSE(Downloads("bea", "models/llm.pt"));
  bool declined = false;
  for (const Json& e : AuditEvents()) {
    declined = declined || (e.value("action", "") == "datasets:share-decline" &&
                            e.value("reason", "").find(id) != std::string::npos);
  }
  EXPECT_TRUE(declined);
}

// Attack: share without step-up. acme-admin has MFA; once the step-up window has passed, the offer
// is refused until a fresh code comes with it.
TEST_P(VaultShareTest, ShareWithoutStepUpIsRefused) {
  AllowAdminExport();
  RunResult e = server_.Cli("acme-admin", "mfa enroll -o json");
  ASSERT_EQ(e.code, 0) << e.err;
  std::string secret = Json::parse(e.out).value("secret", "");
  auto oath = [&](bool next) {
    return Trim(RunShell("oathtool --totp -b " + ShellQuote(secret) +
                         (next ? " -N 'now + 30 seconds'" : ""))
                    .out);
  };
  ASSERT_EQ(server_.Cli("acme-admin", "mfa confirm " + oath(false)).code, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(3200));  // past the 2 s window
  RunResult stale = server_.Cli("acme-admin", "dataset share models/llm.pt --to beta");
  EXPECT_NE(stale.code, 0);
  EXPECT_NE(stale.err.find("MFA step-up required"), std::string::npos) << stale.err;
  EXPECT_EQ(server_.Cli("bob", "dataset shares -o json").out.find("models/llm.pt"),
            std::string::npos);
  RunResult fresh =
      server_.Cli("acme-admin", "--otp " + oath(true) + " dataset share models/llm.pt --to beta");
  EXPECT_EQ(fresh.code, 0) << fresh.err;
}

INSTANTIATE_TEST_SUITE_P(Stores, VaultShareTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace warden::testing
