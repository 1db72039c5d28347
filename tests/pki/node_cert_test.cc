// Node certificates and join tokens (pki.h "Node identity", "Join tokens").
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <filesystem>

#include "common/encoding.h"
#include "pki/pki.h"

namespace warden::pki {
namespace {

class NodeCertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "node_cert_" + std::to_string(getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    auto pki = EnsureServerPki(dir_, {}, clock_);
    ASSERT_TRUE(pki.ok()) << pki.status();
    ca_pem_ = pki->ca_cert_pem;
    auto ca = NodeCertificateAuthority::Load(dir_);
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::move(*ca);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  common::FakeClock clock_;
  std::string dir_, ca_pem_;
  std::unique_ptr<NodeCertificateAuthority> ca_;
};

TEST_F(NodeCertTest, IssuedCertificateCarriesOnlyOurIdentityAndChainsToTheCa) {
  auto kc = NewNodeKeyAndCsr("gpu-01");
  ASSERT_TRUE(kc.ok());
  auto cert = ca_->Issue(kc->csr_pem, "nod_abc", "gpu-01", kNodeCertValidity, clock_.Now());
  ASSERT_TRUE(cert.ok()) << cert.status();
  auto id = ReadNodeIdentity(cert->cert_pem);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->node_id, "nod_abc");
  EXPECT_EQ(id->serial, cert->serial);
  EXPECT_EQ(id->not_after - clock_.Now(), absl::Hours(24));
  EXPECT_EQ(ca_->ca_cert_pem(), ca_pem_);
  // Chain and EKU: verify as a TLS client certificate would be.
  BIO* b = BIO_new_mem_buf(cert->cert_pem.data(), static_cast<int>(cert->cert_pem.size()));
  X509* leaf = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  b = BIO_new_mem_buf(ca_pem_.data(), static_cast<int>(ca_pem_.size()));
  X509* ca = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf, nullptr);
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
  X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx), absl::ToTimeT(clock_.Now()));
  EXPECT_EQ(X509_verify_cert(ctx), 1)
      << X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
  X509_STORE_CTX_cleanup(ctx);
  // Not usable as a server certificate (EKU clientAuth only).
  X509_STORE_CTX_init(ctx, store, leaf, nullptr);
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
  X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx), absl::ToTimeT(clock_.Now()));
  EXPECT_NE(X509_verify_cert(ctx), 1);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  X509_free(ca);
  X509_free(leaf);
}

TEST_F(NodeCertTest, CsrWithForeignSignatureOrWrongKeyTypeIsRefused) {
  auto a = NewNodeKeyAndCsr("gpu-01");
  ASSERT_TRUE(a.ok());
  std::string tampered = a->csr_pem;
  tampered[tampered.size() / 2] = tampered[tampered.size() / 2] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(ca_->Issue(tampered, "nod_a", "gpu-01", absl::Hours(1), clock_.Now()).ok());
  EXPECT_FALSE(ca_->Issue("not a csr", "nod_a", "gpu-01", absl::Hours(1), clock_.Now()).ok());
  // An Ed25519 CSR (not P-256) is refused.
  EVP_PKEY* k = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  X509_REQ* req = X509_REQ_new();
  X509_REQ_set_pubkey(req, k);
  X509_REQ_sign(req, k, nullptr);
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_REQ(b, req);
  char* data = nullptr;
  long len = BIO_get_mem_data(b, &data);
  std::string ed(data, static_cast<size_t>(len));
  BIO_free(b);
  X509_REQ_free(req);
  EVP_PKEY_free(k);
  auto r = ca_->Issue(ed, "nod_a", "gpu-01", absl::Hours(1), clock_.Now());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(r.status().message()).find("P-256"), std::string::npos);
}

TEST_F(NodeCertTest, BadNodeIdsAndNamesAreRefused) {
  auto a = NewNodeKeyAndCsr("gpu-01");
  for (std::string id : {std::string(), std::string("UPPER"), std::string("has space"),
                         std::string("a/b"), std::string(65, 'a')}) {
    EXPECT_FALSE(ca_->Issue(a->csr_pem, id, "gpu-01", absl::Hours(1), clock_.Now()).ok()) << id;
  }
  EXPECT_FALSE(ca_->Issue(a->csr_pem, "nod_a", "CN=evil,O=x", absl::Hours(1), clock_.Now()).ok());
}

TEST_F(NodeCertTest, ServerCertificateCarriesNoNodeIdentity) {
  auto pki = EnsureServerPki(dir_, {}, clock_);
  ASSERT_TRUE(pki.ok());
  EXPECT_FALSE(ReadNodeIdentity(pki->server_cert_pem).ok());
  EXPECT_FALSE(ReadNodeIdentity("garbage").ok());
}

TEST_F(NodeCertTest, ValidityIsCappedAtTheCaExpiry) {
  auto a = NewNodeKeyAndCsr("gpu-01");
  auto cert = ca_->Issue(a->csr_pem, "nod_a", "gpu-01", absl::Hours(24 * 365 * 20), clock_.Now());
  ASSERT_TRUE(cert.ok());
  EXPECT_LE(cert->not_after, clock_.Now() + kCaValidity);
}

TEST(JoinTokenTest, FormatParseRoundTripAndStrictness) {
  std::string secret = common::Base64UrlEncode(std::string(32, '\x07'));
  std::string fp = "SHA256:" + std::string(64, 'b');
  std::string text = FormatJoinToken(secret, fp);
  EXPECT_EQ(text.rfind("gwj1.", 0), 0u);
  auto p = ParseJoinToken("  " + text + "\n");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->secret, secret);
  EXPECT_EQ(p->ca_fingerprint, fp);
  EXPECT_NE(JoinSecretHash(secret), secret);
  EXPECT_EQ(JoinSecretHash(secret).size(), 64u);
  for (std::string bad :
       {std::string(""), "gwj2." + secret + "." + std::string(64, 'b'), "gwj1." + secret,
        "gwj1." + secret + "." + std::string(64, 'B'),
        "gwj1." + secret + "." + std::string(63, 'b'), "gwj1.short." + std::string(64, 'b')}) {
    EXPECT_FALSE(ParseJoinToken(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace warden::pki
