// Shared by the OIDC integration tests: the test IdP (tools/oidc-start.sh, or the one
// tools/run-tests.sh started) and a minimal cookie-keeping "browser" that follows redirects and
// submits oidc-provider's login, consent and device-code forms over HTTP.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "auth/oidc.h"
#include "common/encoding.h"
#include "harness.h"

namespace warden::auth::oidc {
namespace {

using warden::testing::Env;
using warden::testing::ReadFile;
using warden::testing::RunShell;

struct Idp {
  std::string issuer;
  std::string ca_pem;
  std::string dir;  // non-empty when this suite started the provider itself
  std::string ca_path;
};

// The IdP under test: WARDEN_TEST_OIDC_ISSUER/_CA when set (tools/run-tests.sh), else one
// started here with tools/oidc-start.sh (needs tools/node). `tag` keeps parallel starts apart.
// issuer or ca_pem stay empty when none is available (callers fail under CI=true, else skip).
inline Idp* StartTestIdp(const std::string& tag, bool own = false) {
  Idp* idp = new Idp();
  std::string ca_path;
  if (!own) {
    idp->issuer = Env("WARDEN_TEST_OIDC_ISSUER");
    ca_path = Env("WARDEN_TEST_OIDC_CA");
  }
  if (idp->issuer.empty()) {
    idp->dir = ::testing::TempDir() + "warden_oidc_" + tag + "_" + std::to_string(getpid());
    const int port = warden::testing::FreeLoopbackPort();
    auto r = RunShell("bash tools/oidc-start.sh " + idp->dir + " " + std::to_string(port));
    if (r.code == 0) {
      std::string out = r.out;
      while (!out.empty() && out.back() == '\n') out.pop_back();
      idp->issuer = out.substr(out.rfind('\n') + 1);
      ca_path = idp->dir + "/ca.crt";
    } else {
      std::fprintf(stderr, "oidc-start failed: %s\n", r.err.c_str());
    }
  }
  if (!ca_path.empty()) idp->ca_pem = ReadFile(ca_path);
  idp->ca_path = ca_path;
  return idp;
}

inline void StopTestIdp(Idp* idp) {
  if (idp == nullptr) return;
  if (!idp->dir.empty()) {
    RunShell("bash tools/oidc-stop.sh " + idp->dir);
    std::filesystem::remove_all(idp->dir);
  }
  delete idp;
}

std::string Basic(const std::string& id, const std::string& secret) {
  std::string raw = id + ":" + secret;
  std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(raw.data()),
                          static_cast<int>(raw.size()));
  out.resize(static_cast<size_t>(n));
  return "Basic " + out;
}

// A minimal browser: cookies by (path, name), redirects, and the provider's HTML forms.
class Browser {
 public:
  // The last URL requested (e.g. the callback a login ended at).
  const std::string& last_url() const { return last_url_; }

  explicit Browser(OidcHttp& http) : http_(http) {}

  // Follows `url` until a redirect to `stop_prefix` (returned) or a page without a form (its body
  // is returned). Logs in as `login` when asked; accepts consent and device confirmation.
  absl::StatusOr<std::string> Drive(std::string url, const std::string& login,
                                    const std::string& stop_prefix) {
    std::string method = "GET";
    std::string body;
    for (int step = 0; step < 20; ++step) {
      absl::StatusOr<http::ClientResponse> r = Request(method, url, body);
      if (!r.ok()) return r.status();
      if (r->status >= 300 && r->status < 400) {
        std::string loc(r->Header("Location"));
        if (!loc.empty() && loc[0] == '/') loc = Origin(url) + loc;
        if (loc.rfind(stop_prefix, 0) == 0) return loc;
        url = loc;
        method = "GET";
        body.clear();
        continue;
      }
      if (r->status != 200) {
        return absl::InternalError("HTTP " + std::to_string(r->status) + " at " + url + ": " +
                                   r->body.substr(0, 300));
      }
      std::smatch form;
      if (!std::regex_search(r->body, form, std::regex(R"(<form[^>]*>([\s\S]*?)</form>)"))) {
        return r->body;  // a final page
      }
      std::smatch action;
      std::string tag = form.str(0).substr(0, form.str(0).find('>'));
      if (std::regex_search(tag, action, std::regex(R"(action="([^"]*)\")"))) {
        std::string target = std::regex_replace(action.str(1), std::regex("&amp;"), "&");
        url = !target.empty() && target[0] == '/' ? Origin(url) + target : target;
      }
      body.clear();
      std::string inner = form.str(1);
      std::regex input(R"(<input([^>]*)>)");
      for (auto it = std::sregex_iterator(inner.begin(), inner.end(), input);
           it != std::sregex_iterator(); ++it) {
        std::string attrs = (*it)[1];
        std::smatch name, value;
        if (!std::regex_search(attrs, name, std::regex(R"(name="([^"]*)\")"))) continue;
        std::string v;
        if (std::regex_search(attrs, value, std::regex(R"(value="([^"]*)\")"))) v = value.str(1);
        if (name.str(1) == "login") v = login;
        if (name.str(1) == "password") v = "any-password";
        body += (body.empty() ? "" : "&") + common::PercentEncode(name.str(1)) + "=" +
                common::PercentEncode(v);
      }
      method = "POST";
    }
    return absl::InternalError("too many steps");
  }

 private:
  static std::string Origin(const std::string& url) { return SplitHttpsUrl(url)->first; }

  absl::StatusOr<http::ClientResponse> Request(const std::string& method, const std::string& url,
                                               const std::string& body) {
    std::string path = SplitHttpsUrl(url)->second;
    path = path.substr(0, path.find('?'));
    std::string cookie;
    for (const auto& [key, value] : cookies_) {
      if (path.rfind(key.first, 0) != 0) continue;
      cookie += (cookie.empty() ? "" : "; ") + key.second + "=" + value;
    }
    std::vector<std::pair<std::string, std::string>> headers;
    if (!cookie.empty()) headers.emplace_back("Cookie", cookie);
    if (method == "POST") {
      headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
    }
    last_url_ = url;
    absl::StatusOr<http::ClientResponse> r = http_.Do(method, url, body, headers);
    if (!r.ok()) return r;
    for (const auto& [k, v] : r->headers) {
      if (strcasecmp(k.c_str(), "Set-Cookie") != 0) continue;
      std::string nv = v.substr(0, v.find(';'));
      std::string name = nv.substr(0, nv.find('='));
      std::string value = nv.substr(nv.find('=') + 1);
      std::string cpath = "/";
      std::smatch m;
      if (std::regex_search(v, m, std::regex(R"(;\s*path=([^;]*))", std::regex::icase))) {
        cpath = m.str(1);
      }
      bool expired = value.empty() || v.find("1970") != std::string::npos;
      if (expired) {
        cookies_.erase({cpath, name});
      } else {
        cookies_[{cpath, name}] = value;
      }
    }
    return r;
  }

  OidcHttp& http_;
  std::map<std::pair<std::string, std::string>, std::string> cookies_;
  std::string last_url_;
};

}  // namespace
}  // namespace warden::auth::oidc
