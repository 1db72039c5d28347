// Feeds arbitrary bytes to the untrusted inputs of the server's single sign-on layer before any
// IdP is involved: a bearer credential (JWT shape check, JWS parse, payload JSON, routing by iss),
// a callback query string with a binding cookie, and a device-login handle. The IdP is
// unreachable here (its transport fails), so the invariant is: nothing crashes and nothing is
// ever accepted.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/rng.h"
#include "server/sso_service.h"
#include "store/store.h"

namespace {

namespace oidc = warden::auth::oidc;

class DeadIdp final : public oidc::OidcHttp {
 public:
  absl::StatusOr<warden::http::ClientResponse> Do(
      std::string_view, std::string_view, std::string_view,
      const std::vector<std::pair<std::string, std::string>>&) override {
    return absl::UnavailableError("no network in the fuzzer");
  }
};

struct World {
  World() {
    std::string dir = std::filesystem::temp_directory_path() / "fuzz_sso_XXXXXX";
    if (mkdtemp(dir.data()) == nullptr) std::abort();
    static std::string made;
    made = dir;
    std::atexit([] { std::filesystem::remove_all(made); });
    store = std::move(*warden::store::OpenStore({"sqlite://" + dir + "/state.db"}));
    oidc::ProviderConfig c;
    c.name = "corp";
    c.issuer = "https://idp.example";
    c.client_id = "gpuwarden";
    c.redirect_uri = "https://gw.example/api/v1/oidc/corp/callback";
    c.access_token_audiences = {"https://gw.example/api"};
    c.mappings = {{"g", "", "viewer"}};
    warden::server::SsoOptions o;
    o.transport = [](const oidc::ProviderConfig&) { return std::make_unique<DeadIdp>(); };
    sso = std::move(*warden::server::SsoService::Create({c}, *store, clock, rng, o));
  }
  warden::common::FakeClock clock;
  warden::common::SeededRng rng{1};
  std::unique_ptr<warden::store::Store> store;
  std::unique_ptr<warden::server::SsoService> sso;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* w = new World();
  std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)warden::server::SsoService::LooksLikeJwt(text);
  if (w->sso->AuthenticateBearer(text).ok()) std::abort();
  size_t cut = text.find('\n');
  std::string_view query = text.substr(0, cut);
  std::string_view cookie = cut == std::string_view::npos ? "" : text.substr(cut + 1);
  if (w->sso->FinishBrowserLogin("corp", query, cookie).ok()) std::abort();
  bool slow = false;
  if (w->sso->PollDeviceLogin("corp", std::string(text), &slow).ok()) std::abort();
  return 0;
}
