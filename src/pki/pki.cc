// The internal CA. OpenSSL 3 EVP/X509 APIs only (no deprecated EC_KEY calls).
//
// Threats answered here:
// - Key disclosure on a shared host: every file is created 0600 atomically with
//   open(O_CREAT|O_EXCL|O_NOFOLLOW), never chmod-ed afterwards (no window where it is readable),
//   and existing key files with group/other permissions are refused.
// - Silent CA replacement (which would break every pinned client, or hide a swapped CA): the CA is
//   only ever created when neither CA file exists; anything odd is an error for the operator.
// - Tampered server certificate: it must verify under the CA's key, else DataLoss.
#include "pki/pki.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>
#include <set>

#include "common/encoding.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::pki {

namespace {

using common::StrCat;

struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free(p); }
};
struct ExtFree {
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
struct GensFree {
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
};
struct BnFree {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;


absl::Status SslError(std::string_view what) {
  return absl::InternalError(StrCat(what, ": ", OpenSslErrors()));
}

std::string Join(const std::string& dir, std::string_view file) {
  return StrCat(dir, "/", file);
}

// Reads a whole file; nullopt when it does not exist. `secret` files must not be group/other
// accessible.
absl::StatusOr<std::optional<std::string>> ReadFile(const std::string& path, bool secret) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<std::string>();
    return absl::InternalError(StrCat("open ", path, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return absl::InternalError(StrCat("stat ", path, ": ", std::strerror(err)));
  }
  if (secret && (st.st_mode & 077) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(
        StrCat(path, " is accessible by group or others; it must be mode 0600"));
  }
  std::string data;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return absl::InternalError(StrCat("read ", path, ": ", std::strerror(err)));
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > (1 << 20)) {
      ::close(fd);
      return absl::DataLossError(StrCat(path, " is larger than 1 MiB; not a PEM file"));
    }
  }
  ::close(fd);
  return std::optional<std::string>(std::move(data));
}

// Creates `path` exclusively with mode 0600 and writes `data`; removes it again on failure.
absl::Status WriteNewFile(const std::string& path, std::string_view data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(StrCat("create ", path, ": ", std::strerror(errno)));
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(path.c_str());
      return absl::InternalError(StrCat("write ", path, ": ", std::strerror(err)));
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(path.c_str());
    return absl::InternalError(StrCat("sync ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// Atomically replaces `path` (server certificate renewal) through a 0600 temp file and rename.
absl::Status ReplaceFile(const std::string& path, std::string_view data) {
  std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());  // a leftover of an interrupted renewal; ours to remove
  WARDEN_RETURN_IF_ERROR(WriteNewFile(tmp, data));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return absl::InternalError(StrCat("rename ", tmp, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

X509Ptr ParseCert(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return nullptr;
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

PkeyPtr ParseKey(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return nullptr;
  return PkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

absl::StatusOr<std::string> BioToString(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  if (len < 0) return SslError("BIO_get_mem_data");
  return std::string(data, static_cast<size_t>(len));
}

absl::StatusOr<std::string> CertToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return SslError("PEM_write_bio_X509");
  return BioToString(bio.get());
}

absl::StatusOr<std::string> KeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return SslError("PEM_write_bio_PrivateKey");
  }
  return BioToString(bio.get());
}

absl::StatusOr<PkeyPtr> NewP256Key() {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) return SslError("generate P-256 key");
  return key;
}

std::string FingerprintOf(X509* cert) {
  unsigned char* der = nullptr;
  int len = i2d_X509(cert, &der);
  if (len <= 0) return "";
  std::string digest =
      common::Sha256(std::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(len)));
  OPENSSL_free(der);
  return StrCat("SHA256:", common::HexEncode(digest));
}

absl::Time Asn1ToTime(const ASN1_TIME* t) {
  struct tm tm;
  std::memset(&tm, 0, sizeof(tm));
  if (ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&tm));
}

// One subjectAltName entry in comparable form: "dns:<lowercase>" or "ip:<raw bytes>".
struct SanName {
  bool is_ip = false;
  std::string value;  // DNS name, or 4/16 raw address bytes
  std::string Key() const { return StrCat(is_ip ? "ip:" : "dns:", value); }
};

absl::StatusOr<SanName> ParseSanName(std::string_view name) {
  std::string s(name);
  unsigned char buf[16];
  if (inet_pton(AF_INET, s.c_str(), buf) == 1) return SanName{true, std::string(reinterpret_cast<char*>(buf), 4)};
  if (inet_pton(AF_INET6, s.c_str(), buf) == 1) return SanName{true, std::string(reinterpret_cast<char*>(buf), 16)};
  // RFC 1123 host name: labels of letters, digits and '-', not starting or ending with '-'.
  if (s.empty() || s.size() > 253) {
    return absl::InvalidArgumentError(StrCat("server name \"", s, "\": empty or too long"));
  }
  size_t label_len = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    s[i] = c;
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
    if (!ok) {
      return absl::InvalidArgumentError(
          StrCat("server name \"", name, "\": not a DNS name or IP address"));
    }
    if (c == '.') {
      if (label_len == 0 || s[i - 1] == '-') {
        return absl::InvalidArgumentError(StrCat("server name \"", name, "\": bad DNS label"));
      }
      label_len = 0;
    } else {
      if (label_len == 0 && c == '-') {
        return absl::InvalidArgumentError(StrCat("server name \"", name, "\": bad DNS label"));
      }
      if (++label_len > 63) {
        return absl::InvalidArgumentError(StrCat("server name \"", name, "\": label too long"));
      }
    }
  }
  if (label_len == 0 || s.back() == '-') {
    return absl::InvalidArgumentError(StrCat("server name \"", name, "\": bad DNS label"));
  }
  return SanName{false, s};
}

absl::StatusOr<std::vector<SanName>> ServerNames(const std::vector<std::string>& extra) {
  std::vector<SanName> out;
  std::set<std::string> seen;
  std::vector<std::string> all = {"localhost", "127.0.0.1", "::1"};
  all.insert(all.end(), extra.begin(), extra.end());
  for (const auto& n : all) {
    WARDEN_ASSIGN_OR_RETURN(SanName san, ParseSanName(n));
    if (seen.insert(san.Key()).second) out.push_back(std::move(san));
  }
  return out;
}

std::set<std::string> CertSanKeys(X509* cert) {
  std::set<std::string> keys;
  auto* gens = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (gens == nullptr) return keys;
  for (int i = 0; i < sk_GENERAL_NAME_num(gens); ++i) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(gens, i);
    if (g->type == GEN_DNS) {
      std::string v(reinterpret_cast<const char*>(ASN1_STRING_get0_data(g->d.dNSName)),
                    static_cast<size_t>(ASN1_STRING_length(g->d.dNSName)));
      keys.insert(SanName{false, v}.Key());
    } else if (g->type == GEN_IPADD) {
      std::string v(reinterpret_cast<const char*>(ASN1_STRING_get0_data(g->d.iPAddress)),
                    static_cast<size_t>(ASN1_STRING_length(g->d.iPAddress)));
      keys.insert(SanName{true, v}.Key());
    }
  }
  GENERAL_NAMES_free(gens);
  return keys;
}

absl::Status AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  std::unique_ptr<X509_EXTENSION, ExtFree> ext(
      X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return SslError(StrCat("add extension ", OBJ_nid2sn(nid)));
  }
  return absl::OkStatus();
}

absl::Status AddSans(X509* cert, const std::vector<SanName>& names) {
  std::unique_ptr<GENERAL_NAMES, GensFree> gens(sk_GENERAL_NAME_new_null());
  for (const auto& n : names) {
    GENERAL_NAME* g = GENERAL_NAME_new();
    if (n.is_ip) {
      ASN1_OCTET_STRING* o = ASN1_OCTET_STRING_new();
      ASN1_OCTET_STRING_set(o, reinterpret_cast<const unsigned char*>(n.value.data()),
                            static_cast<int>(n.value.size()));
      GENERAL_NAME_set0_value(g, GEN_IPADD, o);
    } else {
      ASN1_IA5STRING* s = ASN1_IA5STRING_new();
      ASN1_STRING_set(s, n.value.data(), static_cast<int>(n.value.size()));
      GENERAL_NAME_set0_value(g, GEN_DNS, s);
    }
    sk_GENERAL_NAME_push(gens.get(), g);
  }
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, gens.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    return SslError("add subjectAltName");
  }
  return absl::OkStatus();
}

// Fields common to every certificate we issue: v3, 127-bit random serial, validity (backdated
// 5 minutes against clock skew between the server and its clients), subject.
absl::StatusOr<X509Ptr> NewCert(EVP_PKEY* subject_key, std::string_view common_name,
                                absl::Time now, absl::Time not_after) {
  X509Ptr cert(X509_new());
  if (!cert) return SslError("X509_new");
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof(serial)) != 1) return SslError("RAND_bytes");
  serial[0] = static_cast<unsigned char>((serial[0] & 0x7f) | 0x01);
  std::unique_ptr<BIGNUM, BnFree> bn(BN_bin2bn(serial, sizeof(serial), nullptr));
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_set_version(cert.get(), 2) != 1 || !bn ||
      BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get())) == nullptr ||
      ASN1_TIME_set(X509_getm_notBefore(cert.get()), absl::ToTimeT(now - kClockSkewAllowance)) ==
          nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert.get()), absl::ToTimeT(not_after)) == nullptr ||
      X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("gpuwarden"), -1, -1,
                                 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.data()),
                                 static_cast<int>(common_name.size()), -1, 0) != 1 ||
      X509_set_pubkey(cert.get(), subject_key) != 1) {
    return SslError("build certificate");
  }
  return cert;
}

struct CaMaterial {
  X509Ptr cert;
  PkeyPtr key;
  std::string cert_pem;
};

absl::StatusOr<CaMaterial> CreateCa(const std::string& dir, absl::Time now) {
  WARDEN_ASSIGN_OR_RETURN(PkeyPtr key, NewP256Key());
  WARDEN_ASSIGN_OR_RETURN(X509Ptr cert, NewCert(key.get(), "gpuwarden CA", now, now + kCaValidity));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get())) != 1) {
    return SslError("set issuer");
  }
  WARDEN_RETURN_IF_ERROR(AddExt(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE"));
  WARDEN_RETURN_IF_ERROR(
      AddExt(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
  WARDEN_RETURN_IF_ERROR(AddExt(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
  WARDEN_RETURN_IF_ERROR(
      AddExt(cert.get(), cert.get(), NID_authority_key_identifier, "keyid:always"));
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) <= 0) return SslError("sign CA certificate");
  WARDEN_ASSIGN_OR_RETURN(std::string key_pem, KeyToPem(key.get()));
  WARDEN_ASSIGN_OR_RETURN(std::string cert_pem, CertToPem(cert.get()));
  // Key first: a crash between the two writes leaves ca.key without ca.crt, which the next start
  // reports (FailedPrecondition) instead of minting a second CA.
  WARDEN_RETURN_IF_ERROR(WriteNewFile(Join(dir, kCaKeyFile), key_pem));
  WARDEN_RETURN_IF_ERROR(WriteNewFile(Join(dir, kCaCertFile), cert_pem));
  return CaMaterial{std::move(cert), std::move(key), std::move(cert_pem)};
}

absl::StatusOr<CaMaterial> LoadCa(const std::string& dir, const std::string& key_pem,
                                  const std::string& cert_pem) {
  CaMaterial ca;
  ca.cert = ParseCert(cert_pem);
  if (!ca.cert) {
    ERR_clear_error();
    return absl::DataLossError(
        StrCat(Join(dir, kCaCertFile), " is not a readable PEM certificate"));
  }
  ca.key = ParseKey(key_pem);
  if (!ca.key) {
    ERR_clear_error();
    return absl::DataLossError(StrCat(Join(dir, kCaKeyFile), " is not a readable PEM private key"));
  }
  if (X509_check_private_key(ca.cert.get(), ca.key.get()) != 1) {
    ERR_clear_error();
    return absl::DataLossError(StrCat(Join(dir, kCaKeyFile), " does not match ",
                                      Join(dir, kCaCertFile)));
  }
  if (X509_check_ca(ca.cert.get()) == 0) {
    return absl::DataLossError(StrCat(Join(dir, kCaCertFile), " is not a CA certificate"));
  }
  ca.cert_pem = cert_pem;
  return ca;
}

struct ServerMaterial {
  std::string key_pem;
  std::string cert_pem;
  absl::Time not_after;
};

absl::StatusOr<ServerMaterial> IssueServer(const std::string& dir, const CaMaterial& ca,
                                           const std::vector<SanName>& names, absl::Time now,
                                           bool replace) {
  absl::Time ca_not_after = Asn1ToTime(X509_get0_notAfter(ca.cert.get()));
  if (ca_not_after <= now + kServerRenewBefore) {
    return absl::FailedPreconditionError(
        StrCat(Join(dir, kCaCertFile), " expires at ", absl::FormatTime(ca_not_after),
               "; rotate the CA (move the directory away) and re-pin clients"));
  }
  absl::Time not_after = std::min(now + kServerValidity, ca_not_after);
  WARDEN_ASSIGN_OR_RETURN(PkeyPtr key, NewP256Key());
  std::string cn = names.size() > 3 && !names[3].is_ip ? names[3].value : "gpuwarden server";
  WARDEN_ASSIGN_OR_RETURN(X509Ptr cert, NewCert(key.get(), cn, now, not_after));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.cert.get())) != 1) {
    return SslError("set issuer");
  }
  WARDEN_RETURN_IF_ERROR(AddExt(cert.get(), ca.cert.get(), NID_basic_constraints,
                                "critical,CA:FALSE"));
  WARDEN_RETURN_IF_ERROR(
      AddExt(cert.get(), ca.cert.get(), NID_key_usage, "critical,digitalSignature"));
  WARDEN_RETURN_IF_ERROR(AddExt(cert.get(), ca.cert.get(), NID_ext_key_usage, "serverAuth"));
  WARDEN_RETURN_IF_ERROR(AddExt(cert.get(), ca.cert.get(), NID_subject_key_identifier, "hash"));
  WARDEN_RETURN_IF_ERROR(
      AddExt(cert.get(), ca.cert.get(), NID_authority_key_identifier, "keyid:always"));
  WARDEN_RETURN_IF_ERROR(AddSans(cert.get(), names));
  if (X509_sign(cert.get(), ca.key.get(), EVP_sha256()) <= 0) {
    return SslError("sign server certificate");
  }
  ServerMaterial out;
  WARDEN_ASSIGN_OR_RETURN(out.key_pem, KeyToPem(key.get()));
  WARDEN_ASSIGN_OR_RETURN(out.cert_pem, CertToPem(cert.get()));
  out.not_after = not_after;
  auto write = replace ? ReplaceFile : WriteNewFile;
  WARDEN_RETURN_IF_ERROR(write(Join(dir, kServerKeyFile), out.key_pem));
  WARDEN_RETURN_IF_ERROR(write(Join(dir, kServerCertFile), out.cert_pem));
  return out;
}

// Loads the server pair. Returns nullopt when it must be (re-)issued: a file is missing, the key
// does not match the certificate (an interrupted renewal), it expires within the renewal window,
// or it does not cover every requested name.
absl::StatusOr<std::optional<ServerMaterial>> LoadServer(const std::string& dir,
                                                         const CaMaterial& ca,
                                                         const std::vector<SanName>& names,
                                                         absl::Time now) {
  WARDEN_ASSIGN_OR_RETURN(auto key_pem, ReadFile(Join(dir, kServerKeyFile), /*secret=*/true));
  WARDEN_ASSIGN_OR_RETURN(auto cert_pem, ReadFile(Join(dir, kServerCertFile), false));
  if (!key_pem || !cert_pem) return std::optional<ServerMaterial>();
  X509Ptr cert = ParseCert(*cert_pem);
  if (!cert) {
    ERR_clear_error();
    return absl::DataLossError(
        StrCat(Join(dir, kServerCertFile), " is not a readable PEM certificate"));
  }
  PkeyPtr key = ParseKey(*key_pem);
  if (!key) {
    ERR_clear_error();
    return absl::DataLossError(
        StrCat(Join(dir, kServerKeyFile), " is not a readable PEM private key"));
  }
  if (X509_check_issued(ca.cert.get(), cert.get()) != X509_V_OK ||
      X509_verify(cert.get(), X509_get0_pubkey(ca.cert.get())) != 1) {
    ERR_clear_error();
    return absl::DataLossError(StrCat(Join(dir, kServerCertFile), " is not signed by ",
                                      Join(dir, kCaCertFile)));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return std::optional<ServerMaterial>();
  }
  absl::Time not_after = Asn1ToTime(X509_get0_notAfter(cert.get()));
  if (not_after <= now + kServerRenewBefore) return std::optional<ServerMaterial>();
  std::set<std::string> have = CertSanKeys(cert.get());
  for (const auto& n : names) {
    if (!have.count(n.Key())) return std::optional<ServerMaterial>();
  }
  return std::optional<ServerMaterial>(
      ServerMaterial{std::move(*key_pem), std::move(*cert_pem), not_after});
}

}  // namespace

absl::StatusOr<std::string> CertificateFingerprint(std::string_view cert_pem) {
  X509Ptr cert = ParseCert(cert_pem);
  if (!cert) {
    ERR_clear_error();
    return absl::InvalidArgumentError("no PEM certificate found");
  }
  std::string fp = FingerprintOf(cert.get());
  if (fp.empty()) return SslError("i2d_X509");
  return fp;
}

absl::StatusOr<ServerPki> EnsureServerPki(const std::string& dir,
                                          const std::vector<std::string>& names,
                                          const common::Clock& clock) {
  WARDEN_ASSIGN_OR_RETURN(std::vector<SanName> sans, ServerNames(names));
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(StrCat("mkdir ", dir, ": ", std::strerror(errno)));
  }
  absl::Time now = clock.Now();
  ServerPki out;

  WARDEN_ASSIGN_OR_RETURN(auto ca_key_pem, ReadFile(Join(dir, kCaKeyFile), /*secret=*/true));
  WARDEN_ASSIGN_OR_RETURN(auto ca_cert_pem, ReadFile(Join(dir, kCaCertFile), false));
  CaMaterial ca;
  if (!ca_key_pem && !ca_cert_pem) {
    // A fresh directory. Server files without a CA cannot be verified: refuse rather than guess.
    for (const char* f : {kServerKeyFile, kServerCertFile}) {
      if (::access(Join(dir, f).c_str(), F_OK) == 0) {
        return absl::FailedPreconditionError(
            StrCat(Join(dir, f), " exists but the CA files are missing"));
      }
    }
    WARDEN_ASSIGN_OR_RETURN(ca, CreateCa(dir, now));
    out.ca_created = true;
  } else if (!ca_key_pem || !ca_cert_pem) {
    return absl::FailedPreconditionError(
        StrCat(Join(dir, ca_key_pem ? kCaCertFile : kCaKeyFile), " is missing but ",
               Join(dir, ca_key_pem ? kCaKeyFile : kCaCertFile),
               " exists; refusing to create a new CA over it"));
  } else {
    WARDEN_ASSIGN_OR_RETURN(ca, LoadCa(dir, *ca_key_pem, *ca_cert_pem));
  }

  std::optional<ServerMaterial> server;
  if (!out.ca_created) {
    WARDEN_ASSIGN_OR_RETURN(server, LoadServer(dir, ca, sans, now));
  }
  if (!server) {
    WARDEN_ASSIGN_OR_RETURN(ServerMaterial issued,
                            IssueServer(dir, ca, sans, now, /*replace=*/!out.ca_created));
    server = std::move(issued);
    out.server_issued = true;
  }

  out.ca_cert_pem = ca.cert_pem;
  out.server_cert_pem = std::move(server->cert_pem);
  out.server_key_pem = std::move(server->key_pem);
  out.chain_pem = ca.cert_pem;
  out.ca_fingerprint = FingerprintOf(ca.cert.get());
  out.server_not_after = server->not_after;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Node certificates
//
// Threats answered here:
// - A CSR asking for more than it should (another node's name, CA:TRUE, serverAuth): nothing of
//   the CSR but its public key is used; every extension is ours.
// - A CSR for a key the requester does not hold: the CSR's self-signature must verify.
// - Identity confusion: the node id lives in exactly one SAN URI; a certificate with none or
//   several is refused by ReadNodeIdentity.

namespace {

struct ReqFree {
  void operator()(X509_REQ* p) const { X509_REQ_free(p); }
};

bool NodeIdOk(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

bool NodeNameOk(std::string_view name) {
  if (name.empty() || name.size() > 63 || name[0] == '.' || name[0] == '-') return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

std::string SerialHex(X509* cert) {
  std::unique_ptr<BIGNUM, BnFree> bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
  if (!bn) return "";
  char* hex = BN_bn2hex(bn.get());
  std::string out = hex ? hex : "";
  OPENSSL_free(hex);
  return out;
}

absl::Status AddUriSan(X509* cert, std::string_view uri) {
  std::unique_ptr<GENERAL_NAMES, GensFree> gens(sk_GENERAL_NAME_new_null());
  GENERAL_NAME* g = GENERAL_NAME_new();
  ASN1_IA5STRING* s = ASN1_IA5STRING_new();
  ASN1_STRING_set(s, uri.data(), static_cast<int>(uri.size()));
  GENERAL_NAME_set0_value(g, GEN_URI, s);
  sk_GENERAL_NAME_push(gens.get(), g);
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, gens.get(), 1, X509V3_ADD_DEFAULT) != 1) {
    return SslError("add subjectAltName URI");
  }
  return absl::OkStatus();
}

}  // namespace

struct NodeCertificateAuthority::Material {
  CaMaterial ca;
  absl::Time ca_not_after;
};

NodeCertificateAuthority::NodeCertificateAuthority(std::unique_ptr<Material> m)
    : m_(std::move(m)) {}
NodeCertificateAuthority::~NodeCertificateAuthority() = default;

const std::string& NodeCertificateAuthority::ca_cert_pem() const { return m_->ca.cert_pem; }

absl::StatusOr<std::unique_ptr<NodeCertificateAuthority>> NodeCertificateAuthority::Load(
    const std::string& dir) {
  WARDEN_ASSIGN_OR_RETURN(auto key_pem, ReadFile(Join(dir, kCaKeyFile), /*secret=*/true));
  WARDEN_ASSIGN_OR_RETURN(auto cert_pem, ReadFile(Join(dir, kCaCertFile), false));
  if (!key_pem || !cert_pem) {
    return absl::NotFoundError(StrCat("no CA in ", dir, " (", kCaKeyFile, " and ", kCaCertFile,
                                      " are both needed)"));
  }
  auto m = std::make_unique<Material>();
  WARDEN_ASSIGN_OR_RETURN(m->ca, LoadCa(dir, *key_pem, *cert_pem));
  m->ca_not_after = Asn1ToTime(X509_get0_notAfter(m->ca.cert.get()));
  return std::unique_ptr<NodeCertificateAuthority>(new NodeCertificateAuthority(std::move(m)));
}

absl::StatusOr<NodeCertificate> NodeCertificateAuthority::Issue(std::string_view csr_pem,
                                                                std::string_view node_id,
                                                                std::string_view node_name,
                                                                absl::Duration ttl,
                                                                absl::Time now) const {
  if (!NodeIdOk(node_id)) {
    return absl::InvalidArgumentError(StrCat("node id \"", node_id, "\" is not 1-64 of [a-z0-9_-]"));
  }
  if (!NodeNameOk(node_name)) {
    return absl::InvalidArgumentError(
        StrCat("node name \"", node_name, "\" is not 1-63 of [a-z0-9._-]"));
  }
  if (csr_pem.size() > 16384) return absl::InvalidArgumentError("CSR larger than 16 KiB");
  BioPtr bio(BIO_new_mem_buf(csr_pem.data(), static_cast<int>(csr_pem.size())));
  std::unique_ptr<X509_REQ, ReqFree> req(
      bio ? PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!req) {
    ERR_clear_error();
    return absl::InvalidArgumentError("CSR is not a PEM certificate signing request");
  }
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
  if (pub == nullptr || X509_REQ_verify(req.get(), pub) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("CSR signature does not verify with its own key");
  }
  char group[64] = {0};
  size_t group_len = 0;
  if (!EVP_PKEY_is_a(pub, "EC") ||
      EVP_PKEY_get_group_name(pub, group, sizeof(group), &group_len) != 1 ||
      std::string_view(group, group_len) != "prime256v1") {
    ERR_clear_error();
    return absl::InvalidArgumentError("CSR key must be ECDSA P-256");
  }
  absl::Time not_after = std::min(now + ttl, m_->ca_not_after);
  if (not_after <= now) {
    return absl::FailedPreconditionError("the CA has expired; no node certificate can be issued");
  }
  X509* ca_cert = m_->ca.cert.get();
  WARDEN_ASSIGN_OR_RETURN(X509Ptr cert, NewCert(pub, node_name, now, not_after));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert)) != 1) {
    return SslError("set issuer");
  }
  WARDEN_RETURN_IF_ERROR(AddExt(cert.get(), ca_cert, NID_basic_constraints, "critical,CA:FALSE"));
  WARDEN_RETURN_IF_ERROR(AddExt(cert.get(), ca_cert, NID_key_usage, "critical,digitalSignature"));
  WARDEN_RETURN_IF_ERROR(AddExt(cert.get(), ca_cert, NID_ext_key_usage, "clientAuth"));
  WARDEN_RETURN_IF_ERROR(AddExt(cert.get(), ca_cert, NID_subject_key_identifier, "hash"));
  WARDEN_RETURN_IF_ERROR(AddExt(cert.get(), ca_cert, NID_authority_key_identifier, "keyid:always"));
  WARDEN_RETURN_IF_ERROR(AddUriSan(cert.get(), StrCat(kNodeUriPrefix, node_id)));
  if (X509_sign(cert.get(), m_->ca.key.get(), EVP_sha256()) <= 0) {
    return SslError("sign node certificate");
  }
  NodeCertificate out;
  WARDEN_ASSIGN_OR_RETURN(out.cert_pem, CertToPem(cert.get()));
  out.serial = SerialHex(cert.get());
  out.not_before = Asn1ToTime(X509_get0_notBefore(cert.get()));
  out.not_after = Asn1ToTime(X509_get0_notAfter(cert.get()));
  return out;
}

absl::StatusOr<NodeIdentity> ReadNodeIdentity(std::string_view cert) {
  X509Ptr x;
  if (cert.starts_with("-----BEGIN")) {
    x = ParseCert(cert);
  } else {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(cert.data());
    x.reset(d2i_X509(nullptr, &p, static_cast<long>(cert.size())));
  }
  if (!x) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not an X.509 certificate");
  }
  auto* gens = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(x.get(), NID_subject_alt_name, nullptr, nullptr));
  std::unique_ptr<GENERAL_NAMES, GensFree> owned(gens);
  std::string node_id;
  int uris = 0;
  for (int i = 0; gens != nullptr && i < sk_GENERAL_NAME_num(gens); ++i) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(gens, i);
    if (g->type != GEN_URI) continue;
    ++uris;
    std::string_view v(reinterpret_cast<const char*>(ASN1_STRING_get0_data(g->d.uniformResourceIdentifier)),
                       static_cast<size_t>(ASN1_STRING_length(g->d.uniformResourceIdentifier)));
    if (v.starts_with(kNodeUriPrefix)) node_id = std::string(v.substr(sizeof(kNodeUriPrefix) - 1));
  }
  if (uris != 1 || !NodeIdOk(node_id)) {
    return absl::InvalidArgumentError(
        StrCat("certificate carries no node identity (exactly one subjectAltName URI ",
               kNodeUriPrefix, "<id> is required)"));
  }
  NodeIdentity id;
  id.node_id = std::move(node_id);
  id.serial = SerialHex(x.get());
  id.not_before = Asn1ToTime(X509_get0_notBefore(x.get()));
  id.not_after = Asn1ToTime(X509_get0_notAfter(x.get()));
  return id;
}

absl::StatusOr<NodeKeyAndCsr> NewNodeKeyAndCsr(std::string_view node_name) {
  WARDEN_ASSIGN_OR_RETURN(PkeyPtr key, NewP256Key());
  std::unique_ptr<X509_REQ, ReqFree> req(X509_REQ_new());
  if (!req) return SslError("X509_REQ_new");
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  if (X509_REQ_set_version(req.get(), 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(node_name.data()),
                                 static_cast<int>(node_name.size()), -1, 0) != 1 ||
      X509_REQ_set_pubkey(req.get(), key.get()) != 1 ||
      X509_REQ_sign(req.get(), key.get(), EVP_sha256()) <= 0) {
    return SslError("build CSR");
  }
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_REQ(bio.get(), req.get()) != 1) {
    return SslError("PEM_write_bio_X509_REQ");
  }
  NodeKeyAndCsr out;
  WARDEN_ASSIGN_OR_RETURN(out.csr_pem, BioToString(bio.get()));
  WARDEN_ASSIGN_OR_RETURN(out.key_pem, KeyToPem(key.get()));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Join tokens

std::string FormatJoinToken(std::string_view secret, std::string_view ca_fingerprint) {
  std::string_view hex = ca_fingerprint;
  if (hex.starts_with("SHA256:")) hex.remove_prefix(7);
  return StrCat("gwj1.", secret, ".", hex);
}

absl::StatusOr<JoinTokenParts> ParseJoinToken(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  if (!text.starts_with("gwj1.")) {
    return absl::InvalidArgumentError("join token does not start with \"gwj1.\"");
  }
  text.remove_prefix(5);
  size_t dot = text.find('.');
  if (dot == std::string_view::npos) {
    return absl::InvalidArgumentError("join token has no CA fingerprint part");
  }
  std::string_view secret = text.substr(0, dot);
  std::string_view hex = text.substr(dot + 1);
  auto raw = common::Base64UrlDecode(secret);
  if (secret.size() != 43 || !raw || raw->size() != 32) {
    return absl::InvalidArgumentError("join token secret is not 32 bytes of base64url");
  }
  auto fp = common::HexDecode(hex);
  if (hex.size() != 64 || !fp || common::HexEncode(*fp) != hex) {
    return absl::InvalidArgumentError("join token CA fingerprint is not 64 lowercase hex digits");
  }
  return JoinTokenParts{std::string(secret), StrCat("SHA256:", hex)};
}

std::string JoinSecretHash(std::string_view secret) { return common::Sha256Hex(secret); }


std::string OpenSslErrors() {
  std::string out;
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

}  // namespace warden::pki
