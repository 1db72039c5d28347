// Router: maps (method, path) to a registered route without regular expressions. Patterns are
// split once into segments and stored in a trie; literal segments win over `{param}` segments,
// with backtracking when a literal branch dead-ends.
//
// Every route carries a caller-chosen Payload (e.g. the permission the route requires), so one
// table states each route's handler and authorization together. Register all routes before
// serving: Add is not thread-safe, Match is (const, no shared mutable state).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "http/http.h"

namespace warden::http {

using Handler = std::function<Response(Request&)>;

// Outcome of matching a path, independent of the route payload.
struct PathMatch {
  enum class Kind { kFound, kNotFound, kMethodNotAllowed, kBadPath };
  Kind kind = Kind::kNotFound;
  size_t route_index = 0;  // kFound only
  std::string allow;       // kMethodNotAllowed: "GET, POST"
  std::string error;       // kBadPath: why the path was refused
};

// The payload-free trie; Router<P> wraps it. Exposed for tests and for callers that keep their
// own route table.
class PathTrie {
 public:
  PathTrie();
  ~PathTrie();
  PathTrie(PathTrie&&) noexcept;
  PathTrie& operator=(PathTrie&&) noexcept;

  // Registers `pattern` ("/api/v1/tenants/{tenant}") for `method` as route `index`.
  // InvalidArgument for a pattern not starting with '/', an empty or malformed `{}` segment, a
  // parameter name used twice, or a duplicate (method, path shape).
  absl::Status Add(std::string_view method, std::string_view pattern, size_t index);

  // Matches the still-encoded `raw_path`. On kFound appends decoded params to `params`.
  // Path defence: every segment is percent-decoded; a malformed escape, or a decoded segment
  // containing '/', "..", NUL or another control character, is kBadPath (400) before any lookup,
  // so encoded traversal ("..%2F..", "%2e%2e") never reaches a handler.
  PathMatch Match(std::string_view method, std::string_view raw_path,
                  std::vector<std::pair<std::string, std::string>>* params) const;

 private:
  struct Node;
  std::unique_ptr<Node> root_;
};

// Turns a non-found PathMatch into the error response (404, 405 with Allow, 400).
Response PathMatchError(const PathMatch& match);

template <typename Payload>
class Router {
 public:
  struct Route {
    std::string method;
    std::string pattern;
    Handler handler;
    Payload payload;
  };

  absl::Status Add(std::string_view method, std::string_view pattern, Handler handler,
                   Payload payload = Payload{}) {
    absl::Status s = trie_.Add(method, pattern, routes_.size());
    if (!s.ok()) return s;
    routes_.push_back(std::make_unique<Route>(
        Route{std::string(method), std::string(pattern), std::move(handler), std::move(payload)}));
    return absl::OkStatus();
  }

  // Matches `req` (method, raw_path). On success fills req.params and req.route and returns the
  // route; otherwise returns nullptr and sets `*error` to the 400/404/405 response.
  const Route* Match(Request& req, Response* error) const {
    req.params.clear();
    PathMatch m = trie_.Match(req.method, req.raw_path, &req.params);
    if (m.kind != PathMatch::Kind::kFound) {
      *error = PathMatchError(m);
      return nullptr;
    }
    const Route* r = routes_[m.route_index].get();
    req.route = r->pattern;
    return r;
  }

  // The route `method` `raw_path` would match, filling nothing; nullptr when none would.
  const Route* Find(std::string_view method, std::string_view raw_path) const {
    std::vector<std::pair<std::string, std::string>> params;
    PathMatch m = trie_.Match(method, raw_path, &params);
    return m.kind == PathMatch::Kind::kFound ? routes_[m.route_index].get() : nullptr;
  }

  // Matches and calls the route's handler, or returns the routing error.
  Response Dispatch(Request& req) const {
    Response error;
    const Route* r = Match(req, &error);
    if (r == nullptr) return error;
    return r->handler(req);
  }

  // For startup checks such as "every route declares a permission".
  const std::vector<std::unique_ptr<Route>>& routes() const { return routes_; }

 private:
  PathTrie trie_;
  std::vector<std::unique_ptr<Route>> routes_;  // stable addresses: req.route points into them
};

}  // namespace warden::http
