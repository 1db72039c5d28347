// Feeds arbitrary bytes to the server config loader (YAML). It must return a config or an
// InvalidArgument; a returned config keeps its invariants.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto config = warden::common::ParseServerConfig(
      std::string_view(reinterpret_cast<const char*>(data), size));
  if (config.ok()) {
    if (config->session_idle > config->session_absolute) std::abort();
    if (config->threads < 1) std::abort();
  }
  return 0;
}
