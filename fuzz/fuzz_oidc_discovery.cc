// Feeds arbitrary bytes to the OIDC discovery document parser, the token response parser and the
// callback query parser. Invariants: nothing crashes; an accepted discovery document names exactly
// the expected issuer and only https endpoints.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "auth/oidc.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace oidc = warden::auth::oidc;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto m = oidc::ParseDiscoveryDocument(text, "https://idp.example.com");
  if (m.ok()) {
    if (m->issuer != "https://idp.example.com") std::abort();
    for (const std::string* url : {&m->authorization_endpoint, &m->token_endpoint, &m->jwks_uri}) {
      if (!oidc::SplitHttpsUrl(*url).ok()) std::abort();
    }
  }
  auto t = oidc::ParseTokenResponse(text);
  if (t.ok() && t->access_token.empty()) std::abort();
  auto q = oidc::ParseQuery(text);
  if (q.ok() && q->size() > 64) std::abort();
  (void)oidc::SplitHttpsUrl(text);
  return 0;
}
