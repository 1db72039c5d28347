// Feeds arbitrary bytes to the JWK Set parser. Invariants: nothing crashes; every key kept has an
// OpenSSL key and a kid unique in the set; selection never returns a key that cannot verify.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string_view>

#include "auth/jose.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace jose = warden::auth::jose;
  auto set = jose::JwkSet::Parse(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!set.ok()) return 0;
  std::set<std::string> kids;
  for (const jose::Jwk& k : set->keys()) {
    if (k.pkey() == nullptr) std::abort();
    if (!k.kid().empty() && !kids.insert(k.kid()).second) std::abort();
  }
  for (jose::JwsAlg alg : jose::AllJwsAlgs()) {
    jose::JwsHeader h;
    h.alg = alg;
    for (const std::string& kid :
         {std::string(), set->keys().empty() ? "" : set->keys()[0].kid()}) {
      h.kid = kid;
      const jose::Jwk* k = set->Select(h);
      if (k != nullptr && !k->CanVerify(alg)) std::abort();
    }
  }
  return 0;
}
