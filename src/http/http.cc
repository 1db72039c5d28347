// Request/Response helpers, the status mapping and the router trie (no Beast in this file).
#include <algorithm>
#include <array>

#include "common/strings.h"
#include "http/http.h"
#include "http/router.h"

namespace warden::http {

using common::StrCat;

namespace {
char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

std::string_view Headers::Get(std::string_view name) const {
  for (const auto& [k, v] : fields_) {
    if (EqualsIgnoreCase(k, name)) return v;
  }
  return {};
}

bool Headers::Has(std::string_view name) const {
  for (const auto& f : fields_) {
    if (EqualsIgnoreCase(f.first, name)) return true;
  }
  return false;
}

void Headers::Add(std::string name, std::string value) {
  fields_.emplace_back(std::move(name), std::move(value));
}

std::string_view Request::Param(std::string_view name) const {
  for (const auto& [k, v] : params) {
    if (k == name) return v;
  }
  return {};
}

std::string_view Request::Query(std::string_view name) const {
  auto it = query.find(std::string(name));
  return it == query.end() ? std::string_view() : std::string_view(it->second);
}

void Request::Reset() {
  method.clear();
  target.clear();
  raw_path.clear();
  path.clear();
  query.clear();
  headers.Clear();
  body.clear();
  request_id.clear();
  peer_certificate_der.clear();
  body_stream = nullptr;
  params.clear();
  route = "unmatched";
  context = nullptr;
}

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kFailedPrecondition:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorCodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

Response Response::Json(int status, const common::Json& json) {
  Response r;
  r.status = status;
  // replace: invalid UTF-8 from a handler must not throw out of the server.
  r.body = json.dump(-1, ' ', false, common::Json::error_handler_t::replace);
  return r;
}

Response Response::Text(int status, std::string body) {
  Response r;
  r.status = status;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(body);
  return r;
}

Response Response::Later(Deferred deferred) {
  Response r;
  r.deferred = std::make_shared<Deferred>(std::move(deferred));
  return r;
}

Response Response::Error(int http_status, absl::StatusCode code, std::string_view message) {
  common::Json j = {{"error", {{"code", ErrorCodeName(code)}, {"message", std::string(message)}}}};
  return Json(http_status, j);
}

Response Response::Error(const absl::Status& status) {
  absl::StatusCode code = status.ok() ? absl::StatusCode::kUnknown : status.code();
  std::string message(status.message());
  if (code == absl::StatusCode::kInternal || code == absl::StatusCode::kUnknown ||
      code == absl::StatusCode::kDataLoss) {
    message = "internal error; quote the X-Request-Id header when reporting it";
  }
  return Error(HttpStatusFor(code), code, message);
}

bool PercentDecode(std::string_view in, std::string& out, bool plus_is_space) {
  out.clear();
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int hi = HexDigit(in[i + 1]), lo = HexDigit(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out.push_back(static_cast<char>(hi << 4 | lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return true;
}

absl::Status ParseTarget(std::string_view target, Request& req) {
  if (target.empty() || target[0] != '/') {
    return absl::InvalidArgumentError("request target must be an absolute path (origin-form)");
  }
  req.target.assign(target);
  size_t q = target.find('?');
  std::string_view raw_path = target.substr(0, q);
  req.raw_path.assign(raw_path);
  if (!PercentDecode(raw_path, req.path)) {
    return absl::InvalidArgumentError("malformed percent-encoding in path");
  }
  req.query.clear();
  if (q == std::string_view::npos) return absl::OkStatus();
  std::string_view qs = target.substr(q + 1);
  std::string key, value;
  while (!qs.empty()) {
    size_t amp = qs.find('&');
    std::string_view pair = qs.substr(0, amp);
    qs = amp == std::string_view::npos ? std::string_view() : qs.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    if (!PercentDecode(pair.substr(0, eq), key, true) ||
        !PercentDecode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1),
                       value, true)) {
      return absl::InvalidArgumentError("malformed percent-encoding in query string");
    }
    req.query.emplace(key, value);
  }
  return absl::OkStatus();
}

// ---- PathTrie ----

struct PathTrie::Node {
  struct Endpoint {
    std::string method;
    size_t index;
    std::vector<std::string> param_names;
  };
  std::vector<std::pair<std::string, std::unique_ptr<Node>>> literals;
  std::unique_ptr<Node> param;
  std::vector<Endpoint> endpoints;
};

PathTrie::PathTrie() : root_(std::make_unique<Node>()) {}
PathTrie::~PathTrie() = default;
PathTrie::PathTrie(PathTrie&&) noexcept = default;
PathTrie& PathTrie::operator=(PathTrie&&) noexcept = default;

namespace {

constexpr size_t kMaxSegments = 32;

// Splits "/a/b" into {"a","b"}; "/" into {}. False when there are more than kMaxSegments.
bool SplitPath(std::string_view path, std::array<std::string_view, kMaxSegments>& out,
               size_t& n) {
  n = 0;
  if (path.size() <= 1) return true;
  std::string_view rest = path.substr(1);
  for (;;) {
    if (n == kMaxSegments) return false;
    size_t slash = rest.find('/');
    out[n++] = rest.substr(0, slash);
    if (slash == std::string_view::npos) return true;
    rest = rest.substr(slash + 1);
  }
}

bool ValidParamName(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_';
    if (!ok) return false;
  }
  return true;
}

// Why a decoded segment is refused, or nullptr when it is acceptable.
const char* SegmentProblem(std::string_view s) {
  if (s.find('/') != std::string_view::npos) return "contains an encoded '/'";
  if (s.find("..") != std::string_view::npos) return "contains '..'";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return "contains a control character";
  }
  return nullptr;
}

}  // namespace

absl::Status PathTrie::Add(std::string_view method, std::string_view pattern, size_t index) {
  if (pattern.empty() || pattern[0] != '/') {
    return absl::InvalidArgumentError(StrCat("route pattern \"", pattern, "\" must start with '/'"));
  }
  if (method.empty()) return absl::InvalidArgumentError("route method is empty");
  std::array<std::string_view, kMaxSegments> segs;
  size_t n = 0;
  if (!SplitPath(pattern, segs, n)) {
    return absl::InvalidArgumentError(StrCat("route pattern \"", pattern, "\" is too deep"));
  }
  Node* node = root_.get();
  std::vector<std::string> names;
  for (size_t i = 0; i < n; ++i) {
    std::string_view s = segs[i];
    if (!s.empty() && s.front() == '{') {
      if (s.back() != '}' || !ValidParamName(s.substr(1, s.size() - 2))) {
        return absl::InvalidArgumentError(
            StrCat("route pattern \"", pattern, "\": bad parameter segment \"", s, "\""));
      }
      std::string name(s.substr(1, s.size() - 2));
      if (std::find(names.begin(), names.end(), name) != names.end()) {
        return absl::InvalidArgumentError(
            StrCat("route pattern \"", pattern, "\": parameter \"", name, "\" used twice"));
      }
      names.push_back(std::move(name));
      if (!node->param) node->param = std::make_unique<Node>();
      node = node->param.get();
      continue;
    }
    if (s.empty() || s.find_first_of("{}%") != std::string_view::npos) {
      return absl::InvalidArgumentError(
          StrCat("route pattern \"", pattern, "\": bad literal segment \"", s, "\""));
    }
    auto it = std::find_if(node->literals.begin(), node->literals.end(),
                           [&](const auto& p) { return p.first == s; });
    if (it == node->literals.end()) {
      node->literals.emplace_back(std::string(s), std::make_unique<Node>());
      it = node->literals.end() - 1;
    }
    node = it->second.get();
  }
  for (const auto& e : node->endpoints) {
    if (e.method == method) {
      return absl::InvalidArgumentError(
          StrCat("route ", method, " ", pattern, " conflicts with an existing route"));
    }
  }
  node->endpoints.push_back(Node::Endpoint{std::string(method), index, std::move(names)});
  return absl::OkStatus();
}

namespace {

struct MatchState {
  const std::string* decoded;
  size_t n;
  std::array<size_t, kMaxSegments> captures;
  size_t n_captures = 0;
};

template <typename NodeT>
const NodeT* Walk(const NodeT* node, size_t i, MatchState& st) {
  if (i == st.n) return node->endpoints.empty() ? nullptr : node;
  const std::string& seg = st.decoded[i];
  for (const auto& [lit, child] : node->literals) {
    if (lit == seg) {
      if (const NodeT* r = Walk(child.get(), i + 1, st)) return r;
      break;
    }
  }
  if (node->param && !seg.empty()) {
    st.captures[st.n_captures++] = i;
    if (const NodeT* r = Walk(node->param.get(), i + 1, st)) return r;
    --st.n_captures;
  }
  return nullptr;
}

}  // namespace

PathMatch PathTrie::Match(std::string_view method, std::string_view raw_path,
                          std::vector<std::pair<std::string, std::string>>* params) const {
  PathMatch out;
  std::array<std::string_view, kMaxSegments> segs;
  size_t n = 0;
  if (raw_path.empty() || raw_path[0] != '/' || !SplitPath(raw_path, segs, n)) {
    out.kind = PathMatch::Kind::kNotFound;
    return out;
  }
  // Reused per thread: matching an ordinary path allocates nothing after warm-up.
  thread_local std::array<std::string, kMaxSegments> decoded;
  for (size_t i = 0; i < n; ++i) {
    if (!PercentDecode(segs[i], decoded[i])) {
      out.kind = PathMatch::Kind::kBadPath;
      out.error = "malformed percent-encoding in path";
      return out;
    }
    if (const char* problem = SegmentProblem(decoded[i])) {
      out.kind = PathMatch::Kind::kBadPath;
      out.error = StrCat("path segment ", i + 1, " ", problem);
      return out;
    }
  }
  MatchState st{decoded.data(), n, {}, 0};
  const Node* node = Walk(root_.get(), 0, st);
  if (node == nullptr) {
    out.kind = PathMatch::Kind::kNotFound;
    return out;
  }
  for (const auto& e : node->endpoints) {
    if (e.method == method) {
      out.kind = PathMatch::Kind::kFound;
      out.route_index = e.index;
      if (params != nullptr) {
        for (size_t k = 0; k < st.n_captures && k < e.param_names.size(); ++k) {
          params->emplace_back(e.param_names[k], decoded[st.captures[k]]);
        }
      }
      return out;
    }
  }
  out.kind = PathMatch::Kind::kMethodNotAllowed;
  for (const auto& e : node->endpoints) {
    if (!out.allow.empty()) out.allow += ", ";
    out.allow += e.method;
  }
  return out;
}

Response PathMatchError(const PathMatch& m) {
  switch (m.kind) {
    case PathMatch::Kind::kMethodNotAllowed: {
      Response r = Response::Error(405, absl::StatusCode::kUnimplemented,
                                   StrCat("method not allowed; allowed: ", m.allow));
      r.headers.emplace_back("Allow", m.allow);
      return r;
    }
    case PathMatch::Kind::kBadPath:
      return Response::Error(400, absl::StatusCode::kInvalidArgument, m.error);
    default:
      return Response::Error(404, absl::StatusCode::kNotFound, "no such API path");
  }
}

}  // namespace warden::http
