// Test helpers for live HTTPS server tests: a blocking raw OpenSSL client with full control over
// protocol versions and the bytes on the wire.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

namespace warden::http {

inline std::string MakeTempDir() {
  char tmpl[] = "/tmp/http_test_XXXXXX";
  return ::mkdtemp(tmpl);
}

inline int ConnectTcp(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{5, 0};  // a hung test fails instead of blocking forever
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

struct RawResponse {
  int status = 0;
  std::string head;
  std::string body;
};

// A blocking OpenSSL client with full control over protocol versions and bytes on the wire.
class TlsConn {
 public:
  explicit TlsConn(int port, int min_version = 0, int max_version = 0) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (min_version != 0 || max_version != 0) {
      // Debian's OpenSSL refuses TLS < 1.2 at the default security level; lower it so the
      // client really offers the old protocol and the *server* is what refuses.
      SSL_CTX_set_security_level(ctx_, 0);
      SSL_CTX_set_cipher_list(ctx_, "ALL:@SECLEVEL=0");
      SSL_CTX_set_min_proto_version(ctx_, min_version);
      SSL_CTX_set_max_proto_version(ctx_, max_version);
    }
    fd_ = ConnectTcp(port);
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
  }
  ~TlsConn() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }
  bool Handshake() {
    bool ok = fd_ >= 0 && SSL_connect(ssl_) == 1;
    ERR_clear_error();
    return ok;
  }
  int version() const { return SSL_version(ssl_); }
  bool Write(std::string_view data) {
    return SSL_write(ssl_, data.data(), static_cast<int>(data.size())) ==
           static_cast<int>(data.size());
  }
  // Reads one response (Content-Length framed). nullopt on EOF/error.
  std::optional<RawResponse> ReadResponse() {
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill()) return std::nullopt;
    }
    RawResponse r;
    r.head = buf_.substr(0, end + 4);
    buf_.erase(0, end + 4);
    r.status = std::atoi(r.head.c_str() + 9);
    size_t len = 0;
    std::string lower = r.head;
    for (auto& c : lower) c = static_cast<char>(std::tolower(c));
    size_t cl = lower.find("content-length:");
    if (cl != std::string::npos) len = std::strtoul(lower.c_str() + cl + 15, nullptr, 10);
    while (buf_.size() < len) {
      if (!Fill()) return std::nullopt;
    }
    r.body = buf_.substr(0, len);
    buf_.erase(0, len);
    return r;
  }
  // Reads a chunked body after ReadResponse returned its head (the body it returned is empty):
  // nullopt when the stream ends before the final chunk.
  std::optional<std::string> ReadChunkedBody() {
    std::string body;
    for (;;) {
      size_t eol;
      while ((eol = buf_.find("\r\n")) == std::string::npos) {
        if (!Fill()) return std::nullopt;
      }
      size_t n = std::strtoul(buf_.c_str(), nullptr, 16);
      buf_.erase(0, eol + 2);
      while (buf_.size() < n + 2) {
        if (!Fill()) return std::nullopt;
      }
      body.append(buf_, 0, n);
      buf_.erase(0, n + 2);
      if (n == 0) return body;
    }
  }
  // Reads a response head only (through the blank line), leaving the body unread.
  bool ReadHead() {
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill()) return false;
    }
    buf_.erase(0, end + 4);
    return true;
  }
  // Reads up to `n` raw bytes (after what is buffered); 0 on EOF/error.
  size_t ReadSome(size_t n) {
    if (buf_.empty() && !Fill()) return 0;
    size_t take = std::min(n, buf_.size());
    buf_.erase(0, take);
    return take;
  }
  int fd() const { return fd_; }
  // True when the server closed the connection (EOF or reset) before `timeout`.
  bool WaitForClose() {
    char c[256];
    for (;;) {
      int n = SSL_read(ssl_, c, sizeof(c));
      if (n > 0) continue;
      int err = SSL_get_error(ssl_, n);
      ERR_clear_error();
      if (err == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
      return true;
    }
  }

 private:
  bool Fill() {
    char tmp[4096];
    int n = SSL_read(ssl_, tmp, sizeof(tmp));
    if (n <= 0) {
      ERR_clear_error();
      return false;
    }
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  std::string buf_;
};

}  // namespace warden::http
