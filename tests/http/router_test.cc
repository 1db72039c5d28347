#include "http/router.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "http/http.h"

namespace warden::http {
namespace {

using ::testing::HasSubstr;

struct Perm {
  const char* name = "";
};

Request MakeRequest(std::string method, std::string_view target) {
  Request r;
  r.method = std::move(method);
  EXPECT_TRUE(ParseTarget(target, r).ok()) << target;
  return r;
}

class RouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ok = [](const char* body) {
      return [body](Request&) { return Response::Text(200, body); };
    };
    ASSERT_TRUE(router_.Add("GET", "/api/v1/tenants", ok("list"), Perm{"tenants:list"}).ok());
    ASSERT_TRUE(router_.Add("POST", "/api/v1/tenants", ok("create"), Perm{"tenants:create"}).ok());
    ASSERT_TRUE(router_.Add("GET", "/api/v1/tenants/{tenant}/users/{user}", ok("user"),
                            Perm{"users:get"})
                    .ok());
    ASSERT_TRUE(router_.Add("GET", "/api/v1/tenants/{tenant}/users/me", ok("me"), Perm{"me"}).ok());
    ASSERT_TRUE(router_.Add("DELETE", "/api/v1/tenants/{tenant}", ok("rm"), Perm{"tenants:rm"}).ok());
    ASSERT_TRUE(router_.Add("GET", "/healthz", ok("ok"), Perm{"public"}).ok());
  }
  Router<Perm> router_;
};

TEST_F(RouterTest, MatchesLiteralRouteWithPayload) {
  Request req = MakeRequest("GET", "/api/v1/tenants?limit=5");
  Response err;
  auto* route = router_.Match(req, &err);
  ASSERT_NE(route, nullptr);
  EXPECT_STREQ(route->payload.name, "tenants:list");
  EXPECT_EQ(req.route, "/api/v1/tenants");
  EXPECT_EQ(req.Query("limit"), "5");
  EXPECT_EQ(router_.Dispatch(req).body, "list");
}

TEST_F(RouterTest, CapturesDecodedParams) {
  Request req = MakeRequest("GET", "/api/v1/tenants/acme/users/j%20doe");
  Response err;
  auto* route = router_.Match(req, &err);
  ASSERT_NE(route, nullptr);
  EXPECT_STREQ(route->payload.name, "users:get");
  EXPECT_EQ(req.Param("tenant"), "acme");
  EXPECT_EQ(req.Param("user"), "j doe");
  EXPECT_EQ(req.route, "/api/v1/tenants/{tenant}/users/{user}");
}

TEST_F(RouterTest, LiteralSegmentWinsOverParam) {
  Request req = MakeRequest("GET", "/api/v1/tenants/acme/users/me");
  EXPECT_EQ(router_.Dispatch(req).body, "me");
}

TEST_F(RouterTest, BacktracksFromDeadEndLiteral) {
  Router<int> r;
  ASSERT_TRUE(r.Add("GET", "/a/{x}/c", [](Request&) { return Response::Text(200, "param"); }).ok());
  ASSERT_TRUE(r.Add("GET", "/a/b/d", [](Request&) { return Response::Text(200, "lit"); }).ok());
  Request req = MakeRequest("GET", "/a/b/c");
  EXPECT_EQ(r.Dispatch(req).body, "param");
  EXPECT_EQ(req.Param("x"), "b");
}

TEST_F(RouterTest, UnknownPathIs404WithErrorJson) {
  Request req = MakeRequest("GET", "/api/v1/nope");
  Response resp = router_.Dispatch(req);
  EXPECT_EQ(resp.status, 404);
  auto j = common::Json::parse(resp.body);
  EXPECT_EQ(j["error"]["code"], "NOT_FOUND");
  EXPECT_TRUE(j["error"]["message"].is_string());
  EXPECT_EQ(req.route, "unmatched");
}

TEST_F(RouterTest, TrailingSlashAndEmptyParamAre404) {
  Request a = MakeRequest("GET", "/api/v1/tenants/");
  EXPECT_EQ(router_.Dispatch(a).status, 404);
  Request b = MakeRequest("GET", "/api/v1/tenants//users/x");
  EXPECT_EQ(router_.Dispatch(b).status, 404);
}

TEST_F(RouterTest, WrongMethodIs405WithAllow) {
  Request req = MakeRequest("PUT", "/api/v1/tenants");
  Response resp = router_.Dispatch(req);
  EXPECT_EQ(resp.status, 405);
  ASSERT_EQ(resp.headers.size(), 1u);
  EXPECT_EQ(resp.headers[0].first, "Allow");
  EXPECT_EQ(resp.headers[0].second, "GET, POST");
}

TEST_F(RouterTest, PathTraversalIsRefused) {
  for (const char* target : {"/api/v1/tenants/..%2F..%2Fetc/users/x",
                             "/api/v1/tenants/%2e%2e/users/x", "/api/v1/tenants/a%2Fb/users/x",
                             "/api/v1/tenants/a%00b", "/api/v1/tenants/a%0Ab",
                             "/api/v1/tenants/../users/x", "/api/v1/tenants/a%zz"}) {
    Request req;
    req.method = "DELETE";
    if (!ParseTarget(target, req).ok()) continue;  // malformed escapes already refused there
    Response resp = router_.Dispatch(req);
    EXPECT_EQ(resp.status, 400) << target;
    EXPECT_THAT(resp.body, HasSubstr("INVALID_ARGUMENT")) << target;
  }
}

TEST_F(RouterTest, MalformedPercentEncodingRefusedByParseTarget) {
  Request req;
  EXPECT_EQ(ParseTarget("/api/v1/tenants/a%zz", req).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseTarget("/x?a=%4", req).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseTarget("http://evil/x", req).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RouterTest, QueryParsingDecodesAndFirstWins) {
  Request req = MakeRequest("GET", "/x?a=1&b=hello+world&a=2&c=%2F&flag");
  EXPECT_EQ(req.Query("a"), "1");
  EXPECT_EQ(req.Query("b"), "hello world");
  EXPECT_EQ(req.Query("c"), "/");
  EXPECT_EQ(req.Query("flag"), "");
  EXPECT_EQ(req.raw_path, "/x");
}

TEST_F(RouterTest, RejectsBadPatternsAndDuplicates) {
  Router<int> r;
  auto h = [](Request&) { return Response{}; };
  EXPECT_FALSE(r.Add("GET", "no-slash", h).ok());
  EXPECT_FALSE(r.Add("GET", "/a/{}", h).ok());
  EXPECT_FALSE(r.Add("GET", "/a/{x}/{x}", h).ok());
  EXPECT_FALSE(r.Add("GET", "/a/{x", h).ok());
  ASSERT_TRUE(r.Add("GET", "/a/{x}", h).ok());
  EXPECT_FALSE(r.Add("GET", "/a/{y}", h).ok());  // same shape, same method
  EXPECT_TRUE(r.Add("POST", "/a/{y}", h).ok());
  EXPECT_EQ(r.routes().size(), 2u);
}

TEST(HttpStatusTest, MapsCanonicalCodes) {
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kPermissionDenied), 403);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kAlreadyExists), 409);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kFailedPrecondition), 409);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnimplemented), 501);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInternal), 500);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kDataLoss), 500);
}

TEST(ResponseTest, ErrorJsonShape) {
  Response r = Response::Error(absl::NotFoundError("tenant \"x\" not found"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, R"({"error":{"code":"NOT_FOUND","message":"tenant \"x\" not found"}})");
}

TEST(ResponseTest, InternalErrorsHideDetails) {
  Response r = Response::Error(absl::InternalError("sqlite: /var/lib/secret path"));
  EXPECT_EQ(r.status, 500);
  EXPECT_THAT(r.body, ::testing::Not(HasSubstr("sqlite")));
  EXPECT_THAT(r.body, HasSubstr("\"code\":\"INTERNAL\""));
}

TEST(ResponseTest, JsonWithInvalidUtf8DoesNotThrow) {
  Response r = Response::Json(200, common::Json{{"k", std::string("\xff\xfe")}});
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.body.empty());
}

TEST(HeadersTest, LookupIgnoresCase) {
  Headers h;
  h.Add("Content-Type", "application/json");
  EXPECT_EQ(h.Get("content-type"), "application/json");
  EXPECT_TRUE(h.Has("CONTENT-TYPE"));
  EXPECT_EQ(h.Get("x-missing"), "");
}

}  // namespace
}  // namespace warden::http
