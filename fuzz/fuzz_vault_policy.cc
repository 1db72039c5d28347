// Feeds arbitrary bytes to the data access policy parser (tenant admins upload these documents).
// It must return a policy or InvalidArgument, never crash; a parsed policy must evaluate any
// request without crashing, and an explicit deny must never be reported as an allow.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "vault/access_policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace warden::vault;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto policy = AccessPolicy::Parse("fuzz", text);
  if (!policy.ok()) {
    if (policy.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  DataPolicySet set;
  set.Put(*policy);
  for (DataAction a :
       {DataAction::kRead, DataAction::kWrite, DataAction::kCopy, DataAction::kAdmin}) {
    AccessRequest r;
    r.action = a;
    r.user_id = "usr_1";
    r.token_id = "tok_1";
    r.roles = {"developer"};
    r.groups = {"ml"};
    r.object_id = "obj_1";
    r.name = "datasets/x";
    auto m = (*policy)->Evaluate(r);
    AccessDecision d = set.Evaluate(r);
    if (m.matched && m.deny && d.allowed) std::abort();
    if (d.allowed != (m.matched && !m.deny)) std::abort();
  }
  return 0;
}
