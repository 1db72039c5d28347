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

#include <memory>
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

// ---------------------------------------------------------------------------------------------
// Node identity (agents' mTLS)
//
// A node certificate is an ECDSA P-256 leaf signed by the CA above, CA:FALSE, keyUsage
// digitalSignature, EKU clientAuth, subject "O=gpuwarden, CN=<node name>" (informational only),
// and exactly one subjectAltName URI "urn:gpuwarden:node:<node id>": the node identity. The
// server trusts only the URI, never the CN or anything the CSR asked for; the CSR contributes its
// public key and nothing else. Certificates are short-lived (default 24 h) and renewed by the
// agent at two thirds of their life. Serials are 127-bit random, rendered as uppercase hex.

inline constexpr char kNodeUriPrefix[] = "urn:gpuwarden:node:";
inline constexpr absl::Duration kNodeCertValidity = absl::Hours(24);
// Every certificate's notBefore is backdated by this much against clock skew; a certificate's
// "life" (what renewal at two thirds refers to) starts at notBefore + kClockSkewAllowance.
inline constexpr absl::Duration kClockSkewAllowance = absl::Minutes(5);

struct NodeCertificate {
  std::string cert_pem;
  std::string serial;  // uppercase hex, as ReadNodeIdentity returns it
  absl::Time not_before;
  absl::Time not_after;
};

// What a node certificate says. ReadNodeIdentity does NOT verify the signature or validity: the
// TLS layer verified the chain; callers compare not_after with their clock and the serial with
// their revocation records.
struct NodeIdentity {
  std::string node_id;
  std::string serial;
  absl::Time not_before;
  absl::Time not_after;
};

// Signs node certificates with the CA of a PKI directory. Holds the CA key in memory; immutable
// after Load, so Issue is thread-safe.
class NodeCertificateAuthority {
 public:
  // Loads ca.key/ca.crt from `dir` (created by EnsureServerPki). NotFound when they are missing;
  // DataLoss / FailedPrecondition as EnsureServerPki for unreadable or exposed files.
  static absl::StatusOr<std::unique_ptr<NodeCertificateAuthority>> Load(const std::string& dir);
  ~NodeCertificateAuthority();

  // Issues a certificate for `node_id` over the public key of `csr_pem`. InvalidArgument when the
  // CSR does not parse, its self-signature does not verify (proof of possession of the key), its
  // key is not EC P-256, or node_id / node_name are not plain identifiers (node_id: 1-64 of
  // [a-z0-9_-]; node_name: 1-63 of [a-z0-9._-]). Validity: now - 5 min .. min(now + ttl, CA
  // expiry); FailedPrecondition when that leaves nothing (CA expired).
  absl::StatusOr<NodeCertificate> Issue(std::string_view csr_pem, std::string_view node_id,
                                        std::string_view node_name, absl::Duration ttl,
                                        absl::Time now) const;
  const std::string& ca_cert_pem() const;

 private:
  struct Material;
  explicit NodeCertificateAuthority(std::unique_ptr<Material> m);
  std::unique_ptr<Material> m_;
};

// Reads the identity from a certificate given as DER (what the TLS layer hands over) or PEM.
// InvalidArgument when it does not parse, or has not exactly one urn:gpuwarden:node: URI with a
// valid node id.
absl::StatusOr<NodeIdentity> ReadNodeIdentity(std::string_view cert_der_or_pem);

// A fresh P-256 key (PKCS#8 PEM, secret) and a CSR for it signed with it (CN = node_name).
struct NodeKeyAndCsr {
  std::string key_pem;
  std::string csr_pem;
};
absl::StatusOr<NodeKeyAndCsr> NewNodeKeyAndCsr(std::string_view node_name);

// ---------------------------------------------------------------------------------------------
// Join tokens
//
// Text form (what `gpuwarden node join-token create` prints and the agent reads from its token
// file): "gwj1.<secret>.<ca>" where <secret> is 32 random bytes in base64url (43 chars, no
// padding) and <ca> is the 64 lowercase hex digits of the CA fingerprint. The agent pins the CA
// whose fingerprint the token names before it sends the secret anywhere, so a man in the middle
// at join time learns nothing. The server stores only JoinSecretHash(secret).
struct JoinTokenParts {
  std::string secret;          // the base64url text
  std::string ca_fingerprint;  // "SHA256:<hex>", the CertificateFingerprint format
};
// `ca_fingerprint` in the "SHA256:<hex>" format.
std::string FormatJoinToken(std::string_view secret, std::string_view ca_fingerprint);
// InvalidArgument naming the part that is wrong; surrounding whitespace is ignored.
absl::StatusOr<JoinTokenParts> ParseJoinToken(std::string_view text);
// SHA-256 hex of the secret text: the stored form.
std::string JoinSecretHash(std::string_view secret);

}  // namespace warden::pki
