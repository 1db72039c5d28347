// SyslogSender: the audit log's optional second sink (issue 4): an off-box copy of every durable
// audit event, sent as RFC 5424 messages over TLS with RFC 5425 octet-counting framing.
//
// The primary log stays the source of truth and fail-closed; this sink never blocks or fails an
// audited request. Events are handed over (Enqueue) by the audit writer after their fdatasync and
// wait in a bounded in-memory queue; one background thread connects (verifying the receiver's
// certificate against a CA file and a host name, optionally presenting a client certificate),
// sends in seq order and reconnects with exponential back-off. When the queue is full the OLDEST
// queued event is dropped and counted; the next message that reaches the receiver is a "gap"
// notice with the number and seq range dropped (the events themselves are in the primary log).
//
// Delivery is at least once per connection attempt: events written to a connection that then
// fails are sent again on the next one (the receiver may see a seq twice). TLS syslog has no
// application acknowledgement: what the kernel accepted just before the receiver died can still
// be lost; the receiver sees that as a hole in `seq`.
//
// Thread-safe. Lifecycle: Create, Start, Enqueue from any thread, Stop (also by the destructor).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "audit/syslog_format.h"

namespace warden::audit {

// One connection to the receiver. The sender uses it from its own thread only, except
// Interrupt(), which Stop() calls from another thread. Tests substitute a fake.
class SyslogTransport {
 public:
  virtual ~SyslogTransport() = default;
  // Opens a new connection (closing any previous one). An error names what failed (refused,
  // timed out, certificate not trusted, name mismatch, ...).
  virtual absl::Status Connect() = 0;
  // Writes all of `bytes`; an error means the connection is unusable.
  virtual absl::Status Write(std::string_view bytes) = 0;
  // True when the connection is known to be closed by the peer (checked without blocking before
  // each write, so that events are not written into a connection that is already dead).
  virtual bool PeerClosed() = 0;
  virtual void Close() = 0;
  // Makes a Connect or Write blocked in another thread return soon with an error.
  virtual void Interrupt() = 0;
};

struct SyslogSenderOptions {
  std::string address;      // receiver "host:port" (6514 is the IANA port for syslog over TLS)
  std::string server_name;  // the name the receiver's certificate must carry; empty: the host
  std::string ca_file;      // PEM CA certificate(s) the receiver's certificate must chain to
  std::string client_cert;  // optional PEM client certificate chain (mTLS), with client_key
  std::string client_key;
  // Skips certificate verification. For experiments only: anybody on the path can then read and
  // suppress the copies. Create logs a warning on stderr every time it is set.
  bool insecure_skip_verify = false;
  size_t queue_max = 10000;  // events held while the receiver is slow or away
  SyslogHeader header;       // HOSTNAME and APP-NAME of every message
  absl::Duration backoff_initial = absl::Milliseconds(250);  // first retry after a failure
  absl::Duration backoff_max = absl::Seconds(30);            // retries never wait longer
  absl::Duration io_timeout = absl::Seconds(5);     // connect, handshake, one write
  absl::Duration flush_timeout = absl::Seconds(2);  // Stop sends what it can within this
  size_t max_batch = 256;                           // events per write
  // nullptr: the OpenSSL transport built from the options above. Not owned.
  SyslogTransport* transport = nullptr;
};

// The next back-off after a failed attempt that waited `current`: doubled, within
// [backoff_initial, backoff_max].
absl::Duration NextSyslogBackoff(absl::Duration current, const SyslogSenderOptions& options);

// The OpenSSL transport (TLS 1.2+, peer verification against ca_file and server_name).
// InvalidArgument naming the setting when the address, CA file or client key pair is unusable.
absl::StatusOr<std::unique_ptr<SyslogTransport>> MakeTlsSyslogTransport(
    const SyslogSenderOptions& options);

class SyslogSender {
 public:
  struct Stats {
    uint64_t sent = 0;     // audit events written to a connection
    uint64_t dropped = 0;  // audit events dropped because the queue was full
    size_t queued = 0;
    bool connected = false;
    uint64_t gap_notices = 0;  // gap messages written
  };

  virtual ~SyslogSender() = default;
  // Starts the sending thread. Call once.
  virtual void Start() = 0;
  // Sends what is queued for at most flush_timeout, then closes the connection and joins the
  // thread; never hangs. Events still queued are dropped (they are in the primary log).
  // Idempotent.
  virtual void Stop() = 0;
  // Queues one durable event (`line` is its logged bytes, without '\n'). Never blocks on the
  // network; when the queue is full the oldest event is dropped and counted.
  virtual void Enqueue(uint64_t seq, int64_t time_ms, std::string_view line) = 0;
  virtual Stats GetStats() const = 0;
};

// InvalidArgument naming the setting for a bad header, queue size or TLS setting.
absl::StatusOr<std::unique_ptr<SyslogSender>> CreateSyslogSender(const SyslogSenderOptions& options);

}  // namespace warden::audit
