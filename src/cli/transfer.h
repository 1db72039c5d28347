// Shared by the CLI's bulk transfers (`dataset put|get`, `image import`): one keep-alive HTTPS
// connection per transfer, a progress line on stderr, and the server's error message.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cli/cli_internal.h"
#include "common/json.h"
#include "http/client.h"

namespace warden::cli::internal {

// "12.3 MiB" style sizes (B, KiB, MiB, GiB, TiB).
std::string HumanBytes(double bytes);

// The message of an {"error":{...}} reply, else "HTTP <status>".
std::string ErrorOf(const http::ClientResponse& r);

// Progress on stderr: bytes, rate, ETA. Redrawn at most 5 times a second; off when `on` is false.
class Progress {
 public:
  Progress(bool on, uint64_t total, uint64_t start);
  void Update(uint64_t done, bool final = false);

 private:
  bool on_;
  uint64_t total_, start_bytes_;
  std::chrono::steady_clock::time_point t0_, last_{};
};

// One connection for a whole transfer (keep-alive); network errors Fail() except in Stream.
class Transfer {
 public:
  explicit Transfer(const Session& s, absl::Duration timeout = absl::Minutes(5));
  http::ClientResponse Do(const std::string& method, const std::string& path,
                          std::string_view body, const char* content_type);
  // A streamed transfer; the error (source, sink or network) is returned, not fatal, so that
  // the caller can clean up first. `expect_continue` sends `Expect: 100-continue`, so a refusal
  // (permission, size) comes back before the body is sent.
  absl::StatusOr<http::ClientResponse> Stream(const std::string& method, const std::string& path,
                                              const http::StreamTransfer& transfer,
                                              const char* content_type,
                                              bool expect_continue = false);
  common::Json DoJson(const std::string& method, const std::string& path, const common::Json& body);

 private:
  std::vector<std::pair<std::string, std::string>> Headers(const char* content_type) const;

  Session s_;
  std::unique_ptr<http::HttpsClient> client_;
};

}  // namespace warden::cli::internal
