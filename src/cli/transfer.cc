#include "cli/transfer.h"

#include <cstdio>
#include <iostream>

#include "common/strings.h"

namespace warden::cli::internal {

using common::Json;
using common::StrCat;

std::string HumanBytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}

std::string ErrorOf(const http::ClientResponse& r) {
  auto j = common::ParseJsonStrict(r.body);
  if (j.ok() && j->is_object() && j->contains("error") && (*j)["error"].is_object()) {
    return (*j)["error"].value("message", StrCat("HTTP ", r.status));
  }
  return StrCat("HTTP ", r.status);
}

Progress::Progress(bool on, uint64_t total, uint64_t start)
    : on_(on), total_(total), start_bytes_(start), t0_(std::chrono::steady_clock::now()) {}

void Progress::Update(uint64_t done, bool final) {
  if (!on_) return;
  auto now = std::chrono::steady_clock::now();
  if (!final && now - last_ < std::chrono::milliseconds(200)) return;
  last_ = now;
  double secs = std::chrono::duration<double>(now - t0_).count();
  double rate = secs > 0 ? static_cast<double>(done - start_bytes_) / secs : 0;
  std::string eta = "-";
  if (rate > 0 && total_ >= done) {
    auto left = static_cast<int64_t>(static_cast<double>(total_ - done) / rate);
    eta = StrCat(left / 60, ":", left % 60 < 10 ? "0" : "", left % 60);
  }
  int pct = total_ ? static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total_)) : 100;
  std::cerr << "\r" << HumanBytes(static_cast<double>(done)) << " / "
            << HumanBytes(static_cast<double>(total_)) << " (" << pct << "%)  "
            << HumanBytes(rate) << "/s  ETA " << eta << "    " << (final ? "\n" : "")
            << std::flush;
}

Transfer::Transfer(const Session& s, absl::Duration timeout) : s_(s) {
  http::ClientOptions opts;
  opts.base_url = s.url;
  opts.ca_pem = s.ca_pem;
  opts.timeout = timeout;
  auto c = http::HttpsClient::Create(opts);
  if (!c.ok()) Fail(std::string(c.status().message()), 3);
  client_ = std::move(*c);
}

http::ClientResponse Transfer::Do(const std::string& method, const std::string& path,
                                  std::string_view body, const char* content_type) {
  auto r = client_->Do(method, path, body, Headers(content_type));
  if (!r.ok()) Fail(std::string(r.status().message()), 3);
  return std::move(*r);
}

absl::StatusOr<http::ClientResponse> Transfer::Stream(const std::string& method,
                                                      const std::string& path,
                                                      const http::StreamTransfer& transfer,
                                                      const char* content_type,
                                                      bool expect_continue) {
  auto headers = Headers(content_type);
  if (expect_continue) headers.emplace_back("Expect", "100-continue");
  return client_->Stream(method, path, transfer, headers);
}

Json Transfer::DoJson(const std::string& method, const std::string& path, const Json& body) {
  auto r = Do(method, path, body.is_null() ? "" : body.dump(),
              body.is_null() ? nullptr : "application/json");
  if (r.status >= 400) Fail(ErrorOf(r));
  auto j = common::ParseJsonStrict(r.body);
  if (!j.ok()) Fail("server sent a malformed reply");
  return *j;
}

std::vector<std::pair<std::string, std::string>> Transfer::Headers(const char* content_type) const {
  std::vector<std::pair<std::string, std::string>> headers = {{"Authorization", "Bearer " + s_.token}};
  if (!s_.otp.empty()) headers.emplace_back("X-Warden-OTP", s_.otp);
  if (content_type != nullptr) headers.emplace_back("Content-Type", content_type);
  return headers;
}

}  // namespace warden::cli::internal
