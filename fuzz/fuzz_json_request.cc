// Feeds arbitrary bytes to every API request decoder (and to ParseOtp as a header value). A decoder must return a value or an
// InvalidArgument, never crash, hang or leak; a decoded value must satisfy its validation rules.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/api.h"
#include "common/ids.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  if (auto l = warden::api::DecodeLogin(body); l.ok() && !l->otp.empty()) {
    if (!warden::api::ParseOtp("otp", l->otp).ok()) std::abort();  // parsed form re-parses
  }
  if (auto m = warden::api::DecodeMfaCode(body); m.ok()) {
    if (m->code.empty() || m->code.size() > 64) std::abort();
  }
  // The same bytes as an X-Warden-OTP header value.
  if (auto o = warden::api::ParseOtp("X-Warden-OTP", body); o.ok()) {
    if (o->empty() || o->size() > 64 || o->front() == ' ' || o->back() == ' ') std::abort();
  }
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
  (void)warden::api::DecodeNodePool(body);
  if (auto p = warden::api::DecodePoolDedication(body); p.ok()) {
    if (p->dedicated_to.size() > 64) std::abort();
  }
  return 0;
}
