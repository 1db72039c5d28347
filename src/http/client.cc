// libcurl adapter. curl errors become absl::Status here; nothing throws.
#include "http/client.h"

#include <strings.h>

#include <curl/curl.h>

#include <algorithm>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "absl/strings/cord.h"
#include "common/status.h"
#include "common/strings.h"
#include "http/http.h"
#include "pki/pki.h"

namespace warden::http {

namespace {

using common::StrCat;

constexpr char kPinnedCaMismatchPayload[] = "type.gpuwarden.dev/http.PinnedCaMismatch";

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

size_t WriteBody(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

size_t WriteHeader(char* data, size_t size, size_t n, void* user) {
  auto* headers = static_cast<std::vector<std::pair<std::string, std::string>>*>(user);
  std::string_view line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {
    headers->clear();  // a new response (e.g. after 100 Continue): keep only the last one's
    return size * n;
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) return size * n;
  std::string_view name = line.substr(0, colon);
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) {
    value.remove_suffix(1);
  }
  headers->emplace_back(std::string(name), std::string(value));
  return size * n;
}

bool IsHttpsUrl(std::string_view url) {
  return url.size() > 8 && EqualsIgnoreCase(url.substr(0, 8), "https://");
}

absl::Status CurlError(CURLcode code, const char* errbuf, bool pinned, std::string_view url) {
  std::string detail = errbuf[0] != '\0' ? std::string(errbuf) : curl_easy_strerror(code);
  switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION: {
      if (detail.find("subject name") != std::string::npos ||
          detail.find("host name") != std::string::npos) {
        return absl::UnauthenticatedError(
            StrCat("server certificate does not name the host of ", url, ": ", detail));
      }
      if (pinned) {
        absl::Status s = absl::UnauthenticatedError(StrCat(
            "server certificate does not chain to the pinned CA (the server's CA fingerprint "
            "changed, or the connection is intercepted): ",
            detail));
        s.SetPayload(kPinnedCaMismatchPayload, absl::Cord("1"));
        return s;
      }
      return absl::UnauthenticatedError(StrCat("server certificate is not trusted: ", detail));
    }
    case CURLE_OPERATION_TIMEDOUT:
      return absl::DeadlineExceededError(StrCat("request to ", url, " timed out: ", detail));
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
      return absl::UnavailableError(StrCat("cannot reach ", url, ": ", detail));
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return absl::InvalidArgumentError(StrCat("bad URL ", url, ": ", detail));
    default:
      return absl::UnavailableError(StrCat("request to ", url, " failed: ", detail));
  }
}

struct SlistFree {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

void CommonOptions(CURL* curl, absl::Duration timeout, absl::Duration connect_timeout) {
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https");
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(absl::ToInt64Milliseconds(timeout)));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(connect_timeout)));
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "gpuwarden/" WARDEN_VERSION);
}

}  // namespace

std::string_view ClientResponse::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (EqualsIgnoreCase(k, name)) return v;
  }
  return {};
}

bool IsPinnedCaMismatch(const absl::Status& status) {
  return status.GetPayload(kPinnedCaMismatchPayload).has_value();
}

HttpsClient::HttpsClient(ClientOptions options) : options_(std::move(options)) {}

HttpsClient::~HttpsClient() {
  if (curl_ != nullptr) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

absl::StatusOr<std::unique_ptr<HttpsClient>> HttpsClient::Create(ClientOptions options) {
  if (!IsHttpsUrl(options.base_url)) {
    return absl::InvalidArgumentError(
        StrCat("server URL \"", options.base_url, "\" must start with https://"));
  }
  while (!options.base_url.empty() && options.base_url.back() == '/') options.base_url.pop_back();
  if (!options.ca_pem.empty() && !pki::CertificateFingerprint(options.ca_pem).ok()) {
    return absl::InvalidArgumentError("pinned CA is not a PEM certificate");
  }
  if (options.client_cert_pem.empty() != options.client_key_pem.empty()) {
    return absl::InvalidArgumentError("a client certificate needs its key, and a key its certificate");
  }
  GlobalInit();
  std::unique_ptr<HttpsClient> client(new HttpsClient(std::move(options)));
  client->curl_ = curl_easy_init();
  if (client->curl_ == nullptr) return absl::InternalError("curl_easy_init failed");
  return client;
}

namespace {

// State of one streamed transfer, shared with curl's callbacks.
struct StreamState {
  CURL* curl = nullptr;
  const StreamTransfer* transfer = nullptr;
  ClientResponse* out = nullptr;
  absl::Status error;  // first callback error: the transfer was aborted for it
};

constexpr size_t kMaxErrorBody = 1 << 20;

size_t ReadStream(char* buf, size_t size, size_t nitems, void* userdata) {
  auto* st = static_cast<StreamState*>(userdata);
  absl::StatusOr<size_t> n = st->transfer->source(buf, size * nitems);
  if (!n.ok()) {
    st->error = n.status();
    return CURL_READFUNC_ABORT;
  }
  return std::min(*n, size * nitems);
}

size_t WriteStream(char* ptr, size_t size, size_t nmemb, void* userdata) {
  auto* st = static_cast<StreamState*>(userdata);
  size_t n = size * nmemb;
  long status = 0;
  curl_easy_getinfo(st->curl, CURLINFO_RESPONSE_CODE, &status);
  if (status >= 200 && status < 300 && st->transfer->sink) {
    absl::Status s = st->transfer->sink(std::string_view(ptr, n));
    if (!s.ok()) {
      st->error = s;
      return 0;  // aborts the transfer
    }
    return n;
  }
  if (st->out->body.size() + n > kMaxErrorBody) {
    st->error = absl::ResourceExhaustedError("error response body over 1 MiB");
    return 0;
  }
  st->out->body.append(ptr, n);
  return n;
}

}  // namespace

absl::StatusOr<ClientResponse> HttpsClient::Do(
    std::string_view method, std::string_view path, std::string_view body,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  return Perform(method, path, body, headers, nullptr);
}

absl::StatusOr<ClientResponse> HttpsClient::Stream(
    std::string_view method, std::string_view path, const StreamTransfer& transfer,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  return Perform(method, path, {}, headers, &transfer);
}

absl::StatusOr<ClientResponse> HttpsClient::Perform(
    std::string_view method, std::string_view path, std::string_view body,
    const std::vector<std::pair<std::string, std::string>>& headers,
    const StreamTransfer* transfer) {
  std::lock_guard lock(mu_);
  CURL* curl = static_cast<CURL*>(curl_);
  curl_easy_reset(curl);  // keeps the connection cache: keep-alive survives
  std::string url = StrCat(options_.base_url, path);
  std::string method_str(method);
  char errbuf[CURL_ERROR_SIZE] = {0};
  ClientResponse out;

  CommonOptions(curl, options_.timeout, options_.connect_timeout);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
  bool pinned = !options_.ca_pem.empty();
  if (pinned) {
    curl_blob blob{const_cast<char*>(options_.ca_pem.data()), options_.ca_pem.size(),
                   CURL_BLOB_COPY};
    curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &blob);
    // Pinning means the system store must not also vouch for the server.
    curl_easy_setopt(curl, CURLOPT_CAINFO, nullptr);
    curl_easy_setopt(curl, CURLOPT_CAPATH, nullptr);
  }
  if (!options_.client_cert_pem.empty()) {
    curl_blob cert{const_cast<char*>(options_.client_cert_pem.data()),
                   options_.client_cert_pem.size(), CURL_BLOB_COPY};
    curl_blob key{const_cast<char*>(options_.client_key_pem.data()),
                  options_.client_key_pem.size(), CURL_BLOB_COPY};
    curl_easy_setopt(curl, CURLOPT_SSLCERT_BLOB, &cert);
    curl_easy_setopt(curl, CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(curl, CURLOPT_SSLKEY_BLOB, &key);
    curl_easy_setopt(curl, CURLOPT_SSLKEYTYPE, "PEM");
  }
  StreamState stream{curl, transfer, &out, absl::OkStatus()};
  if (transfer != nullptr) {
    // Large transfers: no total deadline, but a stalled one is cut.
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 0L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME,
                     static_cast<long>(std::max<int64_t>(1, absl::ToInt64Seconds(transfer->stall_timeout))));
  }
  if (transfer != nullptr && transfer->source) {
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);  // PUT unless overridden below
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, ReadStream);
    curl_easy_setopt(curl, CURLOPT_READDATA, &stream);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(transfer->size));
    if (method != "PUT") curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method_str.c_str());
  } else if (method == "GET" && body.empty()) {
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  } else if (method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else {
    if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    }
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method_str.c_str());
  }
  std::unique_ptr<curl_slist, SlistFree> list;
  // No "Expect: 100-continue" unless the caller asks for it (an upload that the server may refuse
  // before reading its body: the refusal then arrives before the body is sent).
  bool caller_expect = false;
  for (const auto& h : headers) {
    if (h.first.size() == 6 && strncasecmp(h.first.c_str(), "expect", 6) == 0) caller_expect = true;
  }
  curl_slist* raw = caller_expect ? nullptr : curl_slist_append(nullptr, "Expect:");
  for (const auto& [k, v] : headers) {
    if (k.find_first_of("\r\n:") != std::string::npos ||
        v.find_first_of("\r\n") != std::string::npos) {
      curl_slist_free_all(raw);
      return absl::InvalidArgumentError(StrCat("header \"", k, "\" contains a line break"));
    }
    raw = curl_slist_append(raw, StrCat(k, ": ", v).c_str());
  }
  list.reset(raw);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list.get());
  if (transfer != nullptr) {
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, WriteStream);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &stream);
  } else {
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, WriteBody);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &out.body);
  }
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, WriteHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &out.headers);

  CURLcode rc = curl_easy_perform(curl);
  if (!stream.error.ok()) return stream.error;
  if (rc != CURLE_OK) return CurlError(rc, errbuf, pinned, url);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  out.status = static_cast<int>(status);
  return out;
}

absl::StatusOr<ServerCaChain> FetchServerCaChain(const std::string& url,
                                                 absl::Duration timeout) {
  if (!IsHttpsUrl(url)) {
    return absl::InvalidArgumentError(StrCat("server URL \"", url, "\" must start with https://"));
  }
  GlobalInit();
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return absl::InternalError("curl_easy_init failed");
  char errbuf[CURL_ERROR_SIZE] = {0};
  std::string sink;
  CommonOptions(curl.get(), timeout, timeout);
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, errbuf);
  // Trust on first use: the one connection made without verification. Nothing secret is sent on
  // it (no credentials, no body); its only product is the chain, which the user confirms by
  // fingerprint before it is pinned.
  curl_easy_setopt(curl.get(), CURLOPT_SSL_VERIFYPEER, 0L);
  curl_easy_setopt(curl.get(), CURLOPT_SSL_VERIFYHOST, 0L);
  curl_easy_setopt(curl.get(), CURLOPT_CERTINFO, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, WriteBody);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &sink);
  CURLcode rc = curl_easy_perform(curl.get());
  if (rc != CURLE_OK) return CurlError(rc, errbuf, false, url);

  curl_certinfo* info = nullptr;
  if (curl_easy_getinfo(curl.get(), CURLINFO_CERTINFO, &info) != CURLE_OK || info == nullptr ||
      info->num_of_certs <= 0) {
    return absl::FailedPreconditionError("the server sent no certificates");
  }
  std::vector<std::string> pems;
  for (int i = 0; i < info->num_of_certs; ++i) {
    for (curl_slist* s = info->certinfo[i]; s != nullptr; s = s->next) {
      std::string_view entry(s->data);
      if (entry.rfind("Cert:", 0) == 0) pems.emplace_back(entry.substr(5));
    }
  }
  if (pems.size() < 2) {
    return absl::FailedPreconditionError(
        "the server sent only its own certificate, not its CA; cannot pin the CA");
  }
  // Check that the top-most certificate is a self-signed CA that the leaf chains to, so what is
  // pinned is really what will verify the server later.
  auto parse = [](const std::string& pem) {
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    return x;
  };
  X509* top = parse(pems.back());
  X509* leaf = parse(pems.front());
  absl::Status result = absl::OkStatus();
  if (top == nullptr || leaf == nullptr) {
    result = absl::FailedPreconditionError("the server's certificate chain is unreadable");
  } else if (X509_check_issued(top, top) != X509_V_OK || X509_check_ca(top) == 0) {
    result = absl::FailedPreconditionError(
        "the last certificate the server sent is not a self-signed CA");
  } else {
    X509_STORE* store = X509_STORE_new();
    X509_STORE_add_cert(store, top);
    STACK_OF(X509)* untrusted = sk_X509_new_null();
    for (size_t i = 1; i + 1 < pems.size(); ++i) {
      if (X509* mid = parse(pems[i])) sk_X509_push(untrusted, mid);
    }
    X509_STORE_CTX* ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, leaf, untrusted);
    if (X509_verify_cert(ctx) != 1) {
      result = absl::FailedPreconditionError(
          StrCat("the server's certificate does not chain to the CA it sent: ",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx))));
    }
    X509_STORE_CTX_free(ctx);
    sk_X509_pop_free(untrusted, X509_free);
    X509_STORE_free(store);
  }
  X509_free(top);
  X509_free(leaf);
  ERR_clear_error();
  WARDEN_RETURN_IF_ERROR(result);
  ServerCaChain out;
  out.ca_pem = pems.back();
  WARDEN_ASSIGN_OR_RETURN(out.fingerprint, pki::CertificateFingerprint(out.ca_pem));
  return out;
}

}  // namespace warden::http
