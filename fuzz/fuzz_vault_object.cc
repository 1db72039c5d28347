// Feeds arbitrary bytes to the vault's object header parser and streaming chunk decryptor (what
// a tampered disk or a malicious upload presents). Both must return OK or a clean error, never
// crash or over-read. When the whole stream authenticates (seed inputs), re-encrypting the
// released plaintext under the same key and header must reproduce the input byte for byte: the
// format has exactly one encoding per plaintext, so nothing unauthenticated slipped through.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "vault/format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace warden::vault;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t consumed = 0;
  auto header = ParseHeader(in, &consumed);
  if (!header.ok()) {
    auto code = header.status().code();
    if (code != absl::StatusCode::kDataLoss && code != absl::StatusCode::kUnavailable) std::abort();
  } else if (consumed > kMaxHeaderSize || consumed > size) {
    std::abort();
  }
  static const std::string kKey(32, 'F');
  ObjectDecryptor::Expect expect{"acme", "obj_fuzz", 1};
  if (header.ok()) expect = {header->tenant, header->object_id, header->version};
  std::string plain;
  auto dec = ObjectDecryptor::Create(kKey, expect, [&](std::string_view b) {
    plain.append(b);
    return absl::OkStatus();
  });
  if (!dec.ok()) std::abort();
  // Feed in uneven pieces so buffering across chunk and header boundaries is exercised.
  size_t step = size == 0 ? 1 : 1 + data[0] % 97;
  absl::Status st;
  for (size_t i = 0; i < size && st.ok(); i += step) st = (*dec)->Update(in.substr(i, step));
  if (st.ok()) st = (*dec)->Finish();
  if (!st.ok()) {
    if (st.code() != absl::StatusCode::kDataLoss) std::abort();
    return 0;
  }
  if (!header.ok()) std::abort();  // authenticated without a valid header
  std::string again;
  auto enc = ObjectEncryptor::Create(kKey, *header, [&](std::string_view b) {
    again.append(b);
    return absl::OkStatus();
  });
  if (!enc.ok() || !(*enc)->Update(plain).ok() || !(*enc)->Finish().ok()) std::abort();
  if (again != in) std::abort();
  return 0;
}
