#include "audit/syslog_sender.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "common/metrics.h"
#include "common/strings.h"

namespace warden::audit {

using common::StrCat;

namespace {

struct SinkMetrics {
  common::metrics::Counter& sent;
  common::metrics::Counter& dropped;
  common::metrics::Gauge& queue_depth;
  common::metrics::Gauge& connected;
  common::metrics::Counter& connect_failures;

  static SinkMetrics& Get() {
    auto& r = common::metrics::Registry::Default();
    static SinkMetrics m{
        r.AddCounter("warden_audit_syslog_sent_total",
                     "Audit events written to the syslog receiver (second sink).")
            .WithLabels({}),
        r.AddCounter("warden_audit_syslog_dropped_total",
                     "Audit events the syslog sink dropped because its queue was full (they are "
                     "in the primary log; the receiver gets a gap notice).")
            .WithLabels({}),
        r.AddGauge("warden_audit_syslog_queue_depth",
                   "Audit events waiting for the syslog receiver.")
            .WithLabels({}),
        r.AddGauge("warden_audit_syslog_connected",
                   "1 while the syslog sink holds a verified TLS connection to its receiver.")
            .WithLabels({}),
        r.AddCounter("warden_audit_syslog_connect_failures_total",
                     "Failed connection attempts to the syslog receiver (refused, timed out, "
                     "certificate not trusted).")
            .WithLabels({}),
    };
    return m;
  }
};

std::string OpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    out += out.empty() ? buf : StrCat("; ", buf);
  }
  return out.empty() ? "no OpenSSL error queued" : out;
}

// "host:port" or "[v6]:port".
absl::Status SplitAddress(const std::string& address, std::string& host, std::string& port) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return absl::InvalidArgumentError(
        StrCat("syslog address \"", address, "\" must be host:port"));
  }
  host = address.substr(0, colon);
  port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int p = 0;
  for (char c : port) {
    if (c < '0' || c > '9' || p > 65535) p = 65536;
    else p = p * 10 + (c - '0');
  }
  if (p < 1 || p > 65535) {
    return absl::InvalidArgumentError(
        StrCat("syslog address \"", address, "\": port must be 1..65535"));
  }
  return absl::OkStatus();
}

bool IsIpLiteral(const std::string& host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// TLS over a blocking socket with send/receive timeouts (the sender has its own thread).
class TlsSyslogTransport final : public SyslogTransport {
 public:
  static absl::StatusOr<std::unique_ptr<SyslogTransport>> Create(const SyslogSenderOptions& o) {
    auto t = std::unique_ptr<TlsSyslogTransport>(new TlsSyslogTransport(o));
    if (absl::Status s = SplitAddress(o.address, t->host_, t->port_); !s.ok()) return s;
    t->name_ = o.server_name.empty() ? t->host_ : o.server_name;
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == nullptr) return absl::InternalError(StrCat("syslog TLS: ", OpenSslErrors()));
    t->ctx_ = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (o.insecure_skip_verify) {
      SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    } else {
      if (o.ca_file.empty()) {
        return absl::InvalidArgumentError(
            "syslog: ca_file is required (the receiver's certificate must be verified; "
            "insecure_skip_verify is the explicit opt-out)");
      }
      if (SSL_CTX_load_verify_locations(ctx, o.ca_file.c_str(), nullptr) != 1) {
        return absl::InvalidArgumentError(StrCat("syslog: cannot load ca_file ", o.ca_file, ": ",
                                                 OpenSslErrors()));
      }
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    }
    if (o.client_cert.empty() != o.client_key.empty()) {
      return absl::InvalidArgumentError("syslog: client_cert and client_key go together");
    }
    if (!o.client_cert.empty()) {
      if (SSL_CTX_use_certificate_chain_file(ctx, o.client_cert.c_str()) != 1) {
        return absl::InvalidArgumentError(StrCat("syslog: cannot load client_cert ",
                                                 o.client_cert, ": ", OpenSslErrors()));
      }
      if (SSL_CTX_use_PrivateKey_file(ctx, o.client_key.c_str(), SSL_FILETYPE_PEM) != 1 ||
          SSL_CTX_check_private_key(ctx) != 1) {
        return absl::InvalidArgumentError(StrCat("syslog: cannot use client_key ", o.client_key,
                                                 " with client_cert: ", OpenSslErrors()));
      }
    }
    return std::unique_ptr<SyslogTransport>(std::move(t));
  }

  ~TlsSyslogTransport() override {
    Close();
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }

  absl::Status Connect() override {
    Close();
    ERR_clear_error();
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (int rc = getaddrinfo(host_.c_str(), port_.c_str(), &hints, &res); rc != 0) {
      return absl::UnavailableError(
          StrCat("syslog: cannot resolve ", host_, ": ", gai_strerror(rc)));
    }
    std::string last_error = "no address";
    int fd = -1;
    for (addrinfo* ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
      int s = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                       ai->ai_protocol);
      if (s < 0) {
        last_error = std::strerror(errno);
        continue;
      }
      int rc = ::connect(s, ai->ai_addr, ai->ai_addrlen);
      if (rc != 0 && errno == EINPROGRESS) {
        // Waits for the connection or for Interrupt (the eventfd), whichever comes first.
        pollfd p[2] = {{s, POLLOUT, 0}, {wake_fd_, POLLIN, 0}};
        rc = ::poll(p, 2, TimeoutMs());
        int err = 0;
        socklen_t len = sizeof(err);
        if (rc >= 1 && (p[1].revents & POLLIN)) {
          errno = ECANCELED;
          rc = -1;
        } else if (rc == 1 && ::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
                   err == 0) {
          rc = 0;
        } else {
          errno = rc == 0 ? ETIMEDOUT : (err != 0 ? err : errno);
          rc = -1;
        }
      }
      if (rc != 0) {
        last_error = std::strerror(errno);
        ::close(s);
        continue;
      }
      fd = s;
    }
    freeaddrinfo(res);
    if (fd < 0) {
      return absl::UnavailableError(
          StrCat("syslog: cannot connect to ", host_, ":", port_, ": ", last_error));
    }
    // Blocking from here on, each send/receive bounded by the I/O timeout.
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    timeval tv{};
    int64_t ms = TimeoutMs();
    tv.tv_sec = ms / 1000;
    tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    {
      std::lock_guard lock(fd_mu_);
      fd_ = fd;
      if (interrupted_) ::shutdown(fd_, SHUT_RDWR);
    }
    SSL* ssl = SSL_new(ctx_);
    if (ssl == nullptr) {
      Close();
      return absl::InternalError(StrCat("syslog TLS: ", OpenSslErrors()));
    }
    ssl_ = ssl;
    SSL_set_fd(ssl, fd);
    if (!options_.insecure_skip_verify) {
      // The receiver must prove it is the configured name (RFC 5425 section 5.2): a certificate
      // from the right CA issued to another host must not receive the audit trail.
      if (IsIpLiteral(name_)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name_.c_str());
      } else {
        SSL_set1_host(ssl, name_.c_str());
      }
    }
    if (!IsIpLiteral(name_)) SSL_set_tlsext_host_name(ssl, name_.c_str());
    if (SSL_connect(ssl) != 1) {
      long verify = SSL_get_verify_result(ssl);
      std::string why = verify != X509_V_OK
                            ? StrCat("receiver certificate not accepted for \"", name_,
                                     "\": ", X509_verify_cert_error_string(verify))
                            : OpenSslErrors();
      Close();
      return absl::UnavailableError(
          StrCat("syslog: TLS handshake with ", host_, ":", port_, " failed: ", why));
    }
    return absl::OkStatus();
  }

  absl::Status Write(std::string_view bytes) override {
    if (ssl_ == nullptr) return absl::UnavailableError("syslog: not connected");
    ERR_clear_error();
    size_t done = 0;
    while (done < bytes.size()) {
      size_t n = 0;
      int rc = SSL_write_ex(ssl_, bytes.data() + done, bytes.size() - done, &n);
      if (rc != 1) {
        int err = SSL_get_error(ssl_, rc);
        std::string why = err == SSL_ERROR_SYSCALL ? std::string(std::strerror(errno))
                                                   : OpenSslErrors();
        return absl::UnavailableError(StrCat("syslog: write to ", host_, ":", port_,
                                             " failed: ", why));
      }
      done += n;
    }
    return absl::OkStatus();
  }

  bool PeerClosed() override {
    if (ssl_ == nullptr) return true;
    pollfd p{fd_, POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
    // Readable: a syslog receiver sends no application data, but TLS 1.3 session tickets or a
    // close_notify may be waiting. Read without blocking to tell them apart.
    int flags = ::fcntl(fd_, F_GETFL);
    ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
    char buf[512];
    bool closed = false;
    while (true) {
      size_t n = 0;
      ERR_clear_error();
      int rc = SSL_read_ex(ssl_, buf, sizeof(buf), &n);
      if (rc == 1) continue;  // unexpected data: ignored
      int err = SSL_get_error(ssl_, rc);
      closed = !(err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE);
      break;
    }
    ::fcntl(fd_, F_SETFL, flags);
    return closed;
  }

  void Close() override {
    if (ssl_ != nullptr) {
      SSL_free(ssl_);  // no close_notify: the peer may be gone, and a write could block
      ssl_ = nullptr;
    }
    std::lock_guard lock(fd_mu_);
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

  // Permanent: the transport is interrupted only when the sender stops.
  void Interrupt() override {
    std::lock_guard lock(fd_mu_);
    interrupted_ = true;
    uint64_t one = 1;
    if (wake_fd_ >= 0) (void)!::write(wake_fd_, &one, sizeof(one));
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
  }

 private:
  explicit TlsSyslogTransport(const SyslogSenderOptions& o)
      : options_(o), wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  int TimeoutMs() const {
    return static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(options_.io_timeout),
                                                1, 600'000));
  }

  SyslogSenderOptions options_;
  std::string host_, port_, name_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::mutex fd_mu_;  // fd_ is read by Interrupt from another thread
  int fd_ = -1;
  bool interrupted_ = false;
  int wake_fd_ = -1;
};

struct QueuedEvent {
  uint64_t seq;
  int64_t time_ms;
  std::string line;
};

// Events dropped and not yet reported to the receiver.
struct Gap {
  uint64_t count = 0;
  uint64_t first_seq = 0;
  uint64_t last_seq = 0;
  void Add(uint64_t seq) {
    first_seq = count == 0 ? seq : std::min(first_seq, seq);
    last_seq = count == 0 ? seq : std::max(last_seq, seq);
    ++count;
  }
  void Merge(const Gap& g) {
    if (g.count == 0) return;
    first_seq = count == 0 ? g.first_seq : std::min(first_seq, g.first_seq);
    last_seq = count == 0 ? g.last_seq : std::max(last_seq, g.last_seq);
    count += g.count;
  }
};

class SyslogSenderImpl final : public SyslogSender {
 public:
  SyslogSenderImpl(const SyslogSenderOptions& options, std::unique_ptr<SyslogTransport> owned)
      : options_(options),
        owned_(std::move(owned)),
        transport_(options.transport ? *options.transport : *owned_),
        metrics_(SinkMetrics::Get()) {
    metrics_.connected.Set(0);
    metrics_.queue_depth.Set(0);
  }
  ~SyslogSenderImpl() override { Stop(); }

  void Start() override {
    std::lock_guard lock(mu_);
    if (started_) return;
    started_ = true;
    thread_ = std::thread([this] { Run(); });
  }

  void Stop() override {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
      flush_deadline_ = std::chrono::steady_clock::now() +
                        absl::ToChronoNanoseconds(options_.flush_timeout);
    }
    cv_.notify_all();
    if (!thread_.joinable()) return;
    // The thread sends what it can until the deadline; a Connect or Write still blocked then is
    // interrupted, so Stop returns within about flush_timeout.
    std::unique_lock lock(mu_);
    if (!cv_.wait_until(lock, flush_deadline_, [&] { return finished_; })) {
      lock.unlock();
      transport_.Interrupt();
    } else {
      lock.unlock();
    }
    thread_.join();
  }

  void Enqueue(uint64_t seq, int64_t time_ms, std::string_view line) override {
    std::lock_guard lock(mu_);
    if (queue_.size() >= options_.queue_max) {
      // Drop the oldest: the receiver keeps the most recent history (what an intruder would
      // most want gone), and the gap is one seq range announced ahead of what follows.
      gap_.Add(queue_.front().seq);
      queue_.pop_front();
      ++dropped_;
      metrics_.dropped.Inc();
    }
    queue_.push_back(QueuedEvent{seq, time_ms, std::string(line)});
    metrics_.queue_depth.Set(static_cast<double>(queue_.size()));
    cv_.notify_all();
  }

  Stats GetStats() const override {
    std::lock_guard lock(mu_);
    return Stats{sent_, dropped_, queue_.size() + inflight_, connected_, gap_notices_};
  }

 private:
  bool PastFlushDeadline() const {
    return stopping_ && std::chrono::steady_clock::now() >= flush_deadline_;
  }

  void SetConnected(bool c) {
    connected_ = c;
    metrics_.connected.Set(c ? 1 : 0);
  }

  void Run() {
    absl::Duration backoff = options_.backoff_initial;
    bool connected = false;
    std::string last_error;
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty() || gap_.count > 0; });
      if (queue_.empty() && gap_.count == 0) break;  // stopping with nothing left
      if (PastFlushDeadline()) break;
      if (!connected) {
        lock.unlock();
        absl::Status s = transport_.Connect();
        lock.lock();
        if (!s.ok()) {
          metrics_.connect_failures.Inc();
          // Logged when the reason changes, not at every retry.
          if (std::string(s.message()) != last_error) {
            last_error = std::string(s.message());
            std::fprintf(stderr, "audit syslog sink: %s (retrying with back-off up to %s)\n",
                         last_error.c_str(), absl::FormatDuration(options_.backoff_max).c_str());
          }
          if (stopping_) break;  // no retries while stopping: Stop must not wait for back-off
          cv_.wait_for(lock, absl::ToChronoNanoseconds(backoff), [&] { return stopping_; });
          backoff = NextSyslogBackoff(backoff, options_);
          continue;
        }
        connected = true;
        last_error.clear();
        SetConnected(true);
        std::fprintf(stderr, "audit syslog sink: connected to %s\n", options_.address.c_str());
      }
      // Take a batch (and any gap to report) out of the queue; it goes back on failure.
      std::vector<QueuedEvent> batch;
      size_t n = std::min(queue_.size(), options_.max_batch);
      batch.reserve(n);
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      inflight_ = batch.size();
      Gap gap = gap_;
      gap_ = Gap{};
      lock.unlock();

      absl::Status s;
      if (transport_.PeerClosed()) {
        s = absl::UnavailableError(StrCat("syslog: ", options_.address, " closed the connection"));
      } else {
        std::string bytes;
        int64_t now_ms = absl::ToUnixMillis(absl::Now());
        if (gap.count > 0) {
          auto msg = FormatSyslogGapMessage(options_.header, now_ms, gap.count, gap.first_seq,
                                            gap.last_seq);
          if (msg.ok()) bytes += FrameOctetCounted(*msg);
        }
        for (const QueuedEvent& e : batch) {
          auto msg = FormatSyslogAuditMessage(options_.header, e.seq, e.time_ms, e.line);
          if (msg.ok()) bytes += FrameOctetCounted(*msg);  // the header was validated by Create
        }
        s = transport_.Write(bytes);
      }

      lock.lock();
      inflight_ = 0;
      if (s.ok()) {
        // Only a write that worked resets the back-off: a receiver that completes handshakes
        // and then drops every connection is retried at the back-off pace, not in a loop.
        backoff = options_.backoff_initial;
        sent_ += batch.size();
        metrics_.sent.Inc(static_cast<double>(batch.size()));
        if (gap.count > 0) ++gap_notices_;
      } else {
        // Put the batch back in front, oldest first; what no longer fits is dropped (oldest).
        for (auto it = batch.rbegin(); it != batch.rend(); ++it) {
          queue_.push_front(std::move(*it));
        }
        gap_.Merge(gap);
        while (queue_.size() > options_.queue_max) {
          gap_.Add(queue_.front().seq);
          queue_.pop_front();
          ++dropped_;
          metrics_.dropped.Inc();
        }
        lock.unlock();
        transport_.Close();
        lock.lock();
        connected = false;
        SetConnected(false);
        std::fprintf(stderr, "audit syslog sink: %s; reconnecting\n",
                     std::string(s.message()).c_str());
        if (!stopping_) {
          cv_.wait_for(lock, absl::ToChronoNanoseconds(backoff), [&] { return stopping_; });
          backoff = NextSyslogBackoff(backoff, options_);
        }
      }
      metrics_.queue_depth.Set(static_cast<double>(queue_.size()));
    }
    finished_ = true;
    lock.unlock();
    transport_.Close();
    lock.lock();
    SetConnected(false);
    cv_.notify_all();
  }

  const SyslogSenderOptions options_;
  std::unique_ptr<SyslogTransport> owned_;
  SyslogTransport& transport_;
  SinkMetrics& metrics_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<QueuedEvent> queue_;
  size_t inflight_ = 0;
  Gap gap_;
  uint64_t sent_ = 0, dropped_ = 0, gap_notices_ = 0;
  bool connected_ = false;
  bool started_ = false, stopping_ = false, finished_ = false;
  std::chrono::steady_clock::time_point flush_deadline_{};
  std::thread thread_;
};

}  // namespace

absl::Duration NextSyslogBackoff(absl::Duration current, const SyslogSenderOptions& options) {
  return std::clamp(current * 2, options.backoff_initial, options.backoff_max);
}

absl::StatusOr<std::unique_ptr<SyslogTransport>> MakeTlsSyslogTransport(
    const SyslogSenderOptions& options) {
  return TlsSyslogTransport::Create(options);
}

absl::StatusOr<std::unique_ptr<SyslogSender>> CreateSyslogSender(
    const SyslogSenderOptions& options) {
  if (absl::Status s = ValidateSyslogHeader(options.header); !s.ok()) return s;
  if (options.queue_max < 1) {
    return absl::InvalidArgumentError("syslog: queue_max must be at least 1");
  }
  if (options.max_batch < 1) return absl::InvalidArgumentError("syslog: max_batch must be >= 1");
  if (options.backoff_initial <= absl::ZeroDuration() ||
      options.backoff_max < options.backoff_initial) {
    return absl::InvalidArgumentError(
        "syslog: back-off must be positive and backoff_max >= backoff_initial");
  }
  std::unique_ptr<SyslogTransport> owned;
  if (options.transport == nullptr) {
    auto t = MakeTlsSyslogTransport(options);
    if (!t.ok()) return t.status();
    owned = *std::move(t);
  }
  if (options.insecure_skip_verify) {
    std::fprintf(stderr,
                 "WARNING: audit syslog sink: insecure_skip_verify is set: the receiver at %s is "
                 "NOT authenticated; anybody on the path can read or suppress the audit copies\n",
                 options.address.c_str());
  }
  return std::unique_ptr<SyslogSender>(new SyslogSenderImpl(options, std::move(owned)));
}

}  // namespace warden::audit
