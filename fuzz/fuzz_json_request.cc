// Feeds arbitrary bytes to every API request decoder. A decoder must return a value or an
// InvalidArgument, never crash, hang or leak; a decoded value must satisfy its validation rules.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/api.h"
#include "common/ids.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  (void)warden::api::DecodeLogin(body);
  if (auto p = warden::api::DecodeChangePassword(body); p.ok()) {
    if (p->new_password.size() < 8) std::abort();
  }
  if (auto t = warden::api::DecodeCreateTenant(body); t.ok()) {
    if (!warden::common::ValidateName("tenant", t->name).ok()) std::abort();
  }
  if (auto u = warden::api::DecodeCreateUser(body); u.ok()) {
    if (u->password.size() < 8) std::abort();
  }
  (void)warden::api::DecodeCreateRole(body);
  if (auto b = warden::api::DecodeCreateBinding(body); b.ok()) {
    if (b->subject_kind != "user" && b->subject_kind != "token") std::abort();
  }
  (void)warden::api::DecodeCreateToken(body);
  return 0;
}
