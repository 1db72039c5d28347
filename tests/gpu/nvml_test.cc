// The NVML backend's loading paths that every machine can check: a missing library is NotFound
// with a message naming it (the agent then reports zero GPUs), and a library that is not NVML is
// refused without crashing. tests/gpu/nvml_inventory.sh checks the real thing on a GPU machine.
#include <gtest/gtest.h>

#include "gpu/gpu.h"

namespace warden::gpu {
namespace {

TEST(NvmlBackendTest, MissingLibraryIsNotFoundWithAClearMessage) {
  auto b = CreateNvmlBackend("/nonexistent/libnvidia-ml.so.1");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(b.status().message()).find("no NVIDIA driver"), std::string::npos)
      << b.status();
}

TEST(NvmlBackendTest, ALibraryWithoutNvmlFunctionsIsRefused) {
  auto b = CreateNvmlBackend("libc.so.6");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition) << b.status();
  EXPECT_NE(std::string(b.status().message()).find("nvmlInit_v2"), std::string::npos) << b.status();
}

}  // namespace
}  // namespace warden::gpu
