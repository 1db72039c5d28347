// pki: gpuwarden's internal certificate authority and the server's TLS identity.
//
// EnsureServerPki creates (first start) or loads (later starts) a self-signed ECDSA P-256 CA and a
// server certificate it signs, stored as PEM files in the data dir, each mode 0600. The CA is
// never replaced or overwritten; the server certificate is re-issued when it is about to expire or
// does not cover the requested names. Functions here are stateless and thread-safe, but two
// processes must not call EnsureServerPki on one directory at the same time.
//
// CA fingerprint format (what the CLI pins, like ssh host keys): "SHA256:" followed by 64
// lowercase hex digits of SHA-256 over the certificate's DER encoding, no separators. It equals
// `openssl x509 -in ca.crt -outform DER | sha256sum`.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace warden::pki {

// File names inside the PKI directory.
inline constexpr char kCaKeyFile[] = "ca.key";
inline constexpr char kCaCertFile[] = "ca.crt";
inline constexpr char kServerKeyFile[] = "server.key";
inline constexpr char kServerCertFile[] = "server.crt";

inline constexpr absl::Duration kCaValidity = absl::Hours(24 * 3650);      // 10 years
inline constexpr absl::Duration kServerValidity = absl::Hours(24 * 365);   // 1 year
inline constexpr absl::Duration kServerRenewBefore = absl::Hours(24 * 30);  // re-issue window

struct ServerPki {
  std::string ca_cert_pem;
  std::string server_cert_pem;
  std::string server_key_pem;  // PKCS#8 PEM; secret
  // What the TLS server should send after its own certificate (the CA), so that clients can read
  // the CA from the handshake for trust on first use.
  std::string chain_pem;
  std::string ca_fingerprint;  // see the format above
  bool ca_created = false;      // this call created the CA
  bool server_issued = false;   // this call issued a new server certificate
  absl::Time server_not_after;
};

// Creates or loads the PKI in `dir` (created 0700 if missing).
// `names` are extra DNS names or IP literals for the server certificate's subjectAltName;
// localhost, 127.0.0.1 and ::1 are always included.
// Errors: InvalidArgument for a name that is neither a DNS name nor an IP literal;
// DataLoss naming the file when a file is unreadable as PEM, the CA key does not match the CA
// certificate, or the server certificate was not signed by this CA (tampering or a mixed-up
// directory: nothing is overwritten); FailedPrecondition when only one of ca.key/ca.crt exists or
// a key file is readable by group/others; Internal for OpenSSL or filesystem failures.
// On failure no existing file is modified.
absl::StatusOr<ServerPki> EnsureServerPki(const std::string& dir,
                                          const std::vector<std::string>& names,
                                          const common::Clock& clock);

// The fingerprint (format above) of the first certificate in `cert_pem`.
// InvalidArgument if it holds no parseable certificate.
absl::StatusOr<std::string> CertificateFingerprint(std::string_view cert_pem);

// Drains this thread's OpenSSL error queue into one "; "-separated line (for error messages).
std::string OpenSslErrors();

// Future: agents' CSR signing (issue: node mTLS) belongs here, as
//   absl::StatusOr<std::string> SignNodeCsr(const std::string& dir, std::string_view csr_pem, ...)
// reusing the CA loading of pki.cc; keep CA private-key handling inside this module.

}  // namespace warden::pki
