#include "pki/pki.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace warden::pki {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/pki_test_XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string File(const char* name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::trunc);
  out << data;
}

X509* Parse(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return x;
}

TEST(PkiTest, CreatesCaAndServerCertificateWithMode0600) {
  TempDir dir;
  common::FakeClock clock;
  auto pki = EnsureServerPki(dir.path(), {"gpu-ctl.example.com", "10.1.2.3"}, clock);
  ASSERT_TRUE(pki.ok()) << pki.status();
  EXPECT_TRUE(pki->ca_created);
  EXPECT_TRUE(pki->server_issued);
  for (const char* f : {kCaKeyFile, kCaCertFile, kServerKeyFile, kServerCertFile}) {
    struct stat st;
    ASSERT_EQ(::stat(dir.File(f).c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << f;
  }
  EXPECT_EQ(ReadAll(dir.File(kCaCertFile)), pki->ca_cert_pem);
  EXPECT_EQ(pki->chain_pem, pki->ca_cert_pem);
  EXPECT_THAT(pki->ca_fingerprint, StartsWith("SHA256:"));
  EXPECT_EQ(pki->ca_fingerprint.size(), 7u + 64u);
  EXPECT_EQ(pki->server_not_after, clock.Now() + kServerValidity);
}

TEST(PkiTest, CaIsConstrainedSelfSignedP256) {
  TempDir dir;
  common::FakeClock clock;
  auto pki = EnsureServerPki(dir.path(), {}, clock);
  ASSERT_TRUE(pki.ok()) << pki.status();
  X509* ca = Parse(pki->ca_cert_pem);
  ASSERT_NE(ca, nullptr);
  EXPECT_EQ(X509_check_ca(ca), 1);
  EXPECT_EQ(X509_check_issued(ca, ca), X509_V_OK);
  EXPECT_TRUE(X509_get_extension_flags(ca) & EXFLAG_CA);
  EXPECT_EQ(X509_get_key_usage(ca), static_cast<uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  int crit = 0;
  auto* bc = static_cast<BASIC_CONSTRAINTS*>(
      X509_get_ext_d2i(ca, NID_basic_constraints, &crit, nullptr));
  ASSERT_NE(bc, nullptr);
  EXPECT_EQ(crit, 1);
  BASIC_CONSTRAINTS_free(bc);
  EVP_PKEY* key = X509_get0_pubkey(ca);
  EXPECT_EQ(EVP_PKEY_get_base_id(key), EVP_PKEY_EC);
  char group[64];
  size_t len = 0;
  ASSERT_EQ(EVP_PKEY_get_group_name(key, group, sizeof(group), &len), 1);
  EXPECT_EQ(std::string(group, len), "prime256v1");
  // 10 years.
  int days = 0, secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(ca), X509_get0_notAfter(ca)), 1);
  EXPECT_GE(days, 3650);
  X509_free(ca);
}

TEST(PkiTest, ServerCertificateChainsToCaWithSansAndServerAuth) {
  TempDir dir;
  common::FakeClock clock;
  auto pki = EnsureServerPki(dir.path(), {"gpu-ctl.example.com", "10.1.2.3"}, clock);
  ASSERT_TRUE(pki.ok()) << pki.status();
  X509* ca = Parse(pki->ca_cert_pem);
  X509* server = Parse(pki->server_cert_pem);
  ASSERT_NE(server, nullptr);
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, server, nullptr);
  X509_STORE_CTX_set_time(ctx, 0, absl::ToTimeT(clock.Now()));
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
  EXPECT_EQ(X509_verify_cert(ctx), 1) << X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  EXPECT_EQ(X509_check_host(server, "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(server, "gpu-ctl.example.com", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(server, "evil.example.com", 0, 0, nullptr), 0);
  EXPECT_EQ(X509_check_ip_asc(server, "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(server, "::1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(server, "10.1.2.3", 0), 1);
  EXPECT_TRUE(X509_get_extended_key_usage(server) & XKU_SSL_SERVER);
  EXPECT_EQ(X509_check_ca(server), 0);
  X509_free(server);
  X509_free(ca);
}

TEST(PkiTest, SecondCallLoadsWithoutChanges) {
  TempDir dir;
  common::FakeClock clock;
  auto first = EnsureServerPki(dir.path(), {}, clock);
  ASSERT_TRUE(first.ok()) << first.status();
  clock.Advance(absl::Hours(24 * 100));
  auto second = EnsureServerPki(dir.path(), {}, clock);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->ca_created);
  EXPECT_FALSE(second->server_issued);
  EXPECT_EQ(first->ca_cert_pem, second->ca_cert_pem);
  EXPECT_EQ(first->server_cert_pem, second->server_cert_pem);
  EXPECT_EQ(first->server_key_pem, second->server_key_pem);
  EXPECT_EQ(first->ca_fingerprint, second->ca_fingerprint);
}

TEST(PkiTest, ReissuesServerCertificateNearExpiryKeepingCa) {
  TempDir dir;
  common::FakeClock clock;
  auto first = EnsureServerPki(dir.path(), {}, clock);
  ASSERT_TRUE(first.ok()) << first.status();
  clock.Advance(absl::Hours(24 * 340));  // within 30 days of the 1-year expiry
  auto second = EnsureServerPki(dir.path(), {}, clock);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->ca_created);
  EXPECT_TRUE(second->server_issued);
  EXPECT_EQ(first->ca_fingerprint, second->ca_fingerprint);
  EXPECT_NE(first->server_cert_pem, second->server_cert_pem);
  EXPECT_EQ(ReadAll(dir.File(kServerCertFile)), second->server_cert_pem);
  struct stat st;
  ASSERT_EQ(::stat(dir.File(kServerKeyFile).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(PkiTest, ReissuesWhenNewNameRequested) {
  TempDir dir;
  common::FakeClock clock;
  ASSERT_TRUE(EnsureServerPki(dir.path(), {}, clock).ok());
  auto second = EnsureServerPki(dir.path(), {"new.example.com"}, clock);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->server_issued);
  X509* server = Parse(second->server_cert_pem);
  EXPECT_EQ(X509_check_host(server, "new.example.com", 0, 0, nullptr), 1);
  X509_free(server);
}

TEST(PkiTest, CorruptCaCertificateIsDataLossNamingFile) {
  TempDir dir;
  common::FakeClock clock;
  ASSERT_TRUE(EnsureServerPki(dir.path(), {}, clock).ok());
  std::string before_key = ReadAll(dir.File(kCaKeyFile));
  WriteAll(dir.File(kCaCertFile), "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n");
  auto again = EnsureServerPki(dir.path(), {}, clock);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("ca.crt"));
  EXPECT_EQ(ReadAll(dir.File(kCaKeyFile)), before_key);  // nothing overwritten
}

TEST(PkiTest, CorruptServerKeyIsDataLossNamingFile) {
  TempDir dir;
  common::FakeClock clock;
  ASSERT_TRUE(EnsureServerPki(dir.path(), {}, clock).ok());
  WriteAll(dir.File(kServerKeyFile), "not a key");
  ::chmod(dir.File(kServerKeyFile).c_str(), 0600);
  auto again = EnsureServerPki(dir.path(), {}, clock);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("server.key"));
}

TEST(PkiTest, MismatchedCaKeyIsDataLoss) {
  TempDir a, b;
  common::FakeClock clock;
  ASSERT_TRUE(EnsureServerPki(a.path(), {}, clock).ok());
  ASSERT_TRUE(EnsureServerPki(b.path(), {}, clock).ok());
  WriteAll(a.File(kCaKeyFile), ReadAll(b.File(kCaKeyFile)));
  auto again = EnsureServerPki(a.path(), {}, clock);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("ca.key"));
}

TEST(PkiTest, ServerCertificateFromAnotherCaIsDataLoss) {
  TempDir a, b;
  common::FakeClock clock;
  ASSERT_TRUE(EnsureServerPki(a.path(), {}, clock).ok());
  ASSERT_TRUE(EnsureServerPki(b.path(), {}, clock).ok());
  WriteAll(a.File(kServerCertFile), ReadAll(b.File(kServerCertFile)));
  WriteAll(a.File(kServerKeyFile), ReadAll(b.File(kServerKeyFile)));
  auto again = EnsureServerPki(a.path(), {}, clock);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("server.crt"));
}

TEST(PkiTest, MissingCaCertificateWithKeyIsRefusedNotRecreated) {
  TempDir dir;
  common::FakeClock clock;
  ASSERT_TRUE(EnsureServerPki(dir.path(), {}, clock).ok());
  std::string key = ReadAll(dir.File(kCaKeyFile));
  ::unlink(dir.File(kCaCertFile).c_str());
  auto again = EnsureServerPki(dir.path(), {}, clock);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadAll(dir.File(kCaKeyFile)), key);
  EXPECT_FALSE(std::filesystem::exists(dir.File(kCaCertFile)));
}

TEST(PkiTest, GroupReadableKeyIsRefused) {
  TempDir dir;
  common::FakeClock clock;
  ASSERT_TRUE(EnsureServerPki(dir.path(), {}, clock).ok());
  ::chmod(dir.File(kCaKeyFile).c_str(), 0640);
  auto again = EnsureServerPki(dir.path(), {}, clock);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("0600"));
}

TEST(PkiTest, InvalidServerNameIsRejected) {
  TempDir dir;
  common::FakeClock clock;
  for (const char* bad : {"a,DNS:evil.com", "bad host", "-x.example", "x..y", ""}) {
    auto pki = EnsureServerPki(dir.path(), {bad}, clock);
    ASSERT_FALSE(pki.ok()) << bad;
    EXPECT_EQ(pki.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(std::filesystem::exists(dir.File(kCaKeyFile)));
}

TEST(PkiTest, FingerprintIsSha256OfDer) {
  TempDir dir;
  common::FakeClock clock;
  auto pki = EnsureServerPki(dir.path(), {}, clock);
  ASSERT_TRUE(pki.ok()) << pki.status();
  auto fp = CertificateFingerprint(pki->ca_cert_pem);
  ASSERT_TRUE(fp.ok()) << fp.status();
  EXPECT_EQ(*fp, pki->ca_fingerprint);
  // Cross-check against the openssl tool when it is installed.
  if (std::system("command -v openssl >/dev/null 2>&1") == 0) {
    std::string cmd = "openssl x509 -in " + dir.File(kCaCertFile) +
                      " -outform DER | sha256sum | cut -d' ' -f1 > " + dir.File("fp.txt");
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    std::string hex = ReadAll(dir.File("fp.txt"));
    while (!hex.empty() && hex.back() == '\n') hex.pop_back();
    EXPECT_EQ(*fp, "SHA256:" + hex);
  }
  EXPECT_EQ(CertificateFingerprint("nope").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace warden::pki
