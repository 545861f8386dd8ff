// Accounts, sessions and WebSocket authentication (docs/protocol.md: REST, Transport).
#include <cstdlib>

#include "test_support.h"

namespace sb::test {
namespace {

using client::HttpResponse;
using client::NowMs;
using client::Session;
using client::WsConnectOptions;
using client::WsFrame;

class AuthTest : public SharedServerTest {};
class WebSocketAuthTest : public SharedServerTest {};

// Server clocks are the test machine's clock; this only catches seconds-vs-ms or zero.
void ExpectRecentMs(const Json& v, std::string_view what) {
  ASSERT_TRUE(v.IsInt()) << what << " must be an integer (Unix ms): " << v;
  EXPECT_LT(std::abs(*v.Int() - NowMs()), 60'000) << what << " is not Unix milliseconds now: " << v;
}

TEST_F(AuthTest, RegisterReturns201WithUserFields) {
  RestClient api = Api();
  const std::string name = UniqueName("reg");
  HttpResponse r = api.RegisterUser(name, kPassword, "Reg User");
  ASSERT_EQ(r.status, 201) << r.Describe();
  Json j = r.json();
  ASSERT_TRUE(j["user_id"].IsString()) << r.Describe();
  const std::string id = *j["user_id"].Str();
  EXPECT_EQ(id.rfind("usr_", 0), 0u) << "user ids are strings usr_…: " << id;
  EXPECT_EQ(j["username"].Str(), name) << r.Describe();
  EXPECT_EQ(j["display_name"].Str(), "Reg User"s) << r.Describe();

  // GET /v1/users/{id} answers the same fields.
  HttpResponse login = api.Login(name, kPassword);
  ASSERT_EQ(login.status, 200) << login.Describe();
  std::string token = login.json()["access_token"].StrOr("");
  HttpResponse get = api.GetUser(token, id);
  ASSERT_EQ(get.status, 200) << get.Describe();
  EXPECT_EQ(get.json()["user_id"].Str(), id) << get.Describe();
  EXPECT_EQ(get.json()["username"].Str(), name) << get.Describe();
  EXPECT_EQ(get.json()["display_name"].Str(), "Reg User"s) << get.Describe();
}

TEST_F(AuthTest, AUserIsFoundByExactUsername) {
  RestClient api = Api();
  TestUser asker;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, UniqueName("ask"), &asker));
  const std::string name = UniqueName("findme");
  HttpResponse reg = api.RegisterUser(name, kPassword, "Find Me");
  ASSERT_EQ(reg.status, 201) << reg.Describe();
  std::string upper = name;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const std::string& q : {name, upper}) {
    HttpResponse r = api.Request("GET", "/v1/users?username=" + q, {}, asker.access_token);
    ASSERT_EQ(r.status, 200) << q << " " << r.Describe();
    EXPECT_EQ(r.json()["user_id"].Str(), reg.json()["user_id"].Str());
    EXPECT_EQ(r.json()["username"].Str(), name);
    EXPECT_EQ(r.json()["display_name"].Str(), "Find Me"s);
  }
  // Exact names only: a prefix, an unknown or an impossible name are the same 404.
  for (const std::string& q : {name.substr(0, name.size() - 1), UniqueName("ghost"), std::string("a%20b"),
                               std::string(40, 'x')}) {
    HttpResponse r = api.Request("GET", "/v1/users?username=" + q, {}, asker.access_token);
    EXPECT_EQ(r.status, 404) << q << " " << r.Describe();
    EXPECT_EQ(r.ErrorCode(), "not_found") << r.Describe();
  }
  EXPECT_EQ(api.Request("GET", "/v1/users", {}, asker.access_token).status, 400);
  EXPECT_EQ(api.Request("GET", "/v1/users?username=" + name).status, 401) << "a token is needed";
}

TEST_F(AuthTest, TheWebClientIsServedAtTheRoot) {
  RestClient api = Api();
  HttpResponse page = api.Request("GET", "/");
  ASSERT_EQ(page.status, 200) << page.Describe();
  EXPECT_EQ(page.Header("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(page.body.find("<script type=\"module\" src=\"/app.js\">"), std::string::npos);
  const std::string csp = page.Header("Content-Security-Policy");
  EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("script-src 'self'"), std::string::npos) << csp;
  EXPECT_EQ(page.Header("X-Content-Type-Options"), "nosniff");
  HttpResponse js = api.Request("GET", "/app.js");
  ASSERT_EQ(js.status, 200);
  EXPECT_EQ(js.Header("Content-Type"), "text/javascript; charset=utf-8");
  EXPECT_NE(js.body.find("/v1/ws"), std::string::npos);
  EXPECT_EQ(api.Request("GET", "/app.css").Header("Content-Type"), "text/css; charset=utf-8");
  EXPECT_EQ(api.Request("GET", "/index.html").status, 404) << "one name per file";
  EXPECT_EQ(api.Request("POST", "/").status, 404);
}

TEST_F(AuthTest, DuplicateUsernameIs409Conflict) {
  RestClient api = Api();
  const std::string name = UniqueName("dup");
  HttpResponse first = api.RegisterUser(name, kPassword);
  ASSERT_EQ(first.status, 201) << first.Describe();
  HttpResponse again = api.RegisterUser(name, "another-password-1");
  EXPECT_EQ(again.status, 409) << again.Describe();
  EXPECT_EQ(again.ErrorCode(), "conflict") << again.Describe();
  EXPECT_TRUE(again.json()["error"]["message"].IsString())
      << "errors are {\"error\":{\"code\",\"message\"}}: " << again.Describe();
}

TEST_F(AuthTest, LoginReturnsTokensForTheGivenDevice) {
  RestClient api = Api();
  const std::string name = UniqueName("login");
  HttpResponse reg = api.RegisterUser(name, kPassword);
  ASSERT_EQ(reg.status, 201) << reg.Describe();
  const std::string user_id = reg.json()["user_id"].StrOr("");

  HttpResponse r = api.Login(name, kPassword, "phone-1");
  ASSERT_EQ(r.status, 200) << r.Describe();
  Json j = r.json();
  EXPECT_TRUE(j["access_token"].IsString() && !j["access_token"].Str()->empty()) << r.Describe();
  EXPECT_TRUE(j["refresh_token"].IsString() && !j["refresh_token"].Str()->empty()) << r.Describe();
  EXPECT_EQ(j["token_type"].Str(), "Bearer"s) << r.Describe();
  ASSERT_TRUE(j["expires_in"].IsInt()) << r.Describe();
  EXPECT_GT(*j["expires_in"].Int(), 0) << r.Describe();
  EXPECT_EQ(j["user_id"].Str(), user_id) << r.Describe();
  EXPECT_EQ(j["device_id"].Str(), "phone-1"s) << r.Describe();

  // device_id is optional: the server then names the device itself.
  HttpResponse no_dev = api.Login(name, kPassword);
  ASSERT_EQ(no_dev.status, 200) << no_dev.Describe();
  ASSERT_TRUE(no_dev.json()["device_id"].IsString()) << no_dev.Describe();
  EXPECT_FALSE(no_dev.json()["device_id"].Str()->empty()) << no_dev.Describe();
}

TEST_F(AuthTest, WrongPasswordIs401) {
  RestClient api = Api();
  TestUser u;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "wrongpw", &u));
  HttpResponse r = api.Login(u.username, "not-the-password");
  EXPECT_EQ(r.status, 401) << r.Describe();
  EXPECT_EQ(r.ErrorCode(), "unauthorized") << r.Describe();
  EXPECT_FALSE(r.json().Has("access_token")) << r.Describe();
}

TEST_F(AuthTest, RestCallsWithoutAValidTokenAre401) {
  RestClient api = Api();
  HttpResponse none = api.ListConversations("");
  EXPECT_EQ(none.status, 401) << "GET /v1/conversations without a token: " << none.Describe();
  EXPECT_EQ(none.ErrorCode(), "unauthorized") << none.Describe();
  HttpResponse bad = api.ListConversations("not.a.token");
  EXPECT_EQ(bad.status, 401) << "GET /v1/conversations with a garbage token: " << bad.Describe();
}

TEST_F(AuthTest, RefreshReturnsANewWorkingAccessToken) {
  RestClient api = Api();
  TestUser u;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "refresh", &u, "tablet-7"));

  HttpResponse r = api.Refresh(u.refresh_token);
  ASSERT_EQ(r.status, 200) << r.Describe();
  std::optional<Session> s = Session::FromResponse(r);
  ASSERT_TRUE(s.has_value()) << "refresh answer must have the login shape: " << r.Describe();
  EXPECT_EQ(s->token_type, "Bearer");
  EXPECT_GT(s->expires_in, 0);
  EXPECT_EQ(s->user_id, u.user_id);
  EXPECT_EQ(s->device_id, "tablet-7") << "a refreshed session stays on its device";
  EXPECT_FALSE(s->access_token.empty());
  EXPECT_FALSE(s->refresh_token.empty());

  HttpResponse list = api.ListConversations(s->access_token);
  EXPECT_EQ(list.status, 200) << "refreshed access token refused by REST: " << list.Describe();

  WsClient ws;
  WsConnectOptions o;
  o.access_token = s->access_token;
  ASSERT_TRUE(ws.Connect(api.host(), api.port(), o))
      << "refreshed access token refused by the WebSocket: HTTP " << ws.upgrade_status() << " "
      << ws.upgrade_body();
  Json welcome = ws.WaitForEvent("welcome", kFrameTimeout);
  EXPECT_EQ(welcome["user_id"].Str(), u.user_id) << welcome;
  EXPECT_EQ(welcome["device_id"].Str(), "tablet-7"s) << welcome;

  HttpResponse garbage = api.Refresh("this-is-not-a-refresh-token");
  EXPECT_EQ(garbage.status, 401) << garbage.Describe();
  EXPECT_EQ(garbage.ErrorCode(), "unauthorized") << garbage.Describe();
}

// ---- WebSocket upgrade -------------------------------------------------------------

std::string Base64Url(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 0x3f]);
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(acc << (6 - bits)) & 0x3f]);
  return out;
}

// Connects with the given options and expects a plain HTTP 401 and no upgrade.
void ExpectRefused(const RestClient& api, const WsConnectOptions& o, std::string_view what) {
  WsClient ws;
  bool upgraded = ws.Connect(api.host(), api.port(), o);
  EXPECT_FALSE(upgraded) << what << ": the upgrade must be refused";
  EXPECT_EQ(ws.upgrade_status(), 401) << what << ": " << ws.error() << " " << ws.upgrade_body();
}

TEST_F(WebSocketAuthTest, UpgradeWithoutTokenIs401) {
  ExpectRefused(Api(), WsConnectOptions{}, "no token");
}

TEST_F(WebSocketAuthTest, UpgradeWithBadTokensIs401) {
  RestClient api = Api();
  TestUser u;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "wsbad", &u));
  const std::string& good = u.access_token;

  {
    WsConnectOptions o;
    o.access_token = "garbage";
    ExpectRefused(api, o, "Bearer garbage");
  }
  {
    WsConnectOptions o;
    o.access_token = "aaaa.bbbb.cccc";
    ExpectRefused(api, o, "Bearer aaaa.bbbb.cccc");
  }
  {
    WsConnectOptions o;
    o.extra_headers = {{"Authorization", "Basic dXNlcjpwYXNz"}};
    ExpectRefused(api, o, "Authorization: Basic");
  }
  {
    WsConnectOptions o;
    o.extra_headers = {{"Authorization", "Bearer"}};
    ExpectRefused(api, o, "Authorization: Bearer with no token");
  }
  {
    WsConnectOptions o;
    o.access_token = "%%%garbage###";
    o.token_in_query = true;
    ExpectRefused(api, o, "access_token=garbage query parameter");
  }

  // A real token with one signature character changed (a middle one: the last
  // base64url character can carry only padding bits).
  size_t last_dot = good.rfind('.');
  ASSERT_NE(last_dot, std::string::npos) << "access tokens are JWTs: " << good;
  ASSERT_GT(good.size() - last_dot, 8u) << good;
  {
    std::string tampered = good;
    char& c = tampered[last_dot + 4];
    c = (c == 'A') ? 'B' : 'A';
    WsConnectOptions o;
    o.access_token = tampered;
    ExpectRefused(api, o, "token with a tampered signature");
  }
  // The same claims re-signed with "alg":"none": the algorithm is pinned.
  {
    size_t first_dot = good.find('.');
    std::string payload = good.substr(first_dot + 1, last_dot - first_dot - 1);
    WsConnectOptions o;
    o.access_token = Base64Url(R"({"alg":"none","typ":"JWT"})") + "." + payload + ".";
    ExpectRefused(api, o, "alg=none token");
  }
}

TEST_F(WebSocketAuthTest, WelcomeIsTheFirstFrame) {
  RestClient api = Api();
  TestUser u;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "welcome", &u, "desk-3"));
  WsClient ws;
  WsConnectOptions o;
  o.access_token = u.access_token;
  ASSERT_TRUE(ws.Connect(api.host(), api.port(), o))
      << "HTTP " << ws.upgrade_status() << " " << ws.error() << " " << ws.upgrade_body();
  EXPECT_EQ(ws.upgrade_status(), 101);

  WsFrame f = ws.RecvFrame(kFrameTimeout);
  ASSERT_TRUE(f.is_text()) << f.Describe();
  Json w = f.json();
  ASSERT_EQ(w["event"].Str(), "welcome"s) << "first frame: " << w;
  EXPECT_EQ(w["user_id"].Str(), u.user_id) << w;
  EXPECT_EQ(w["device_id"].Str(), "desk-3"s) << w;
  EXPECT_TRUE(w["session_id"].IsString() && !w["session_id"].Str()->empty()) << w;
  EXPECT_TRUE(w["node_id"].IsString() && !w["node_id"].Str()->empty()) << w;
  ASSERT_TRUE(w["heartbeat_interval_ms"].IsInt()) << w;
  EXPECT_GT(*w["heartbeat_interval_ms"].Int(), 0) << w;
  ExpectRecentMs(w["server_timestamp_ms"], "welcome.server_timestamp_ms");
}

TEST_F(WebSocketAuthTest, TokenInQueryParameterIsAccepted) {
  RestClient api = Api();
  TestUser u;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "wsquery", &u));
  WsClient ws;
  WsConnectOptions o;
  o.access_token = u.access_token;
  o.token_in_query = true;
  ASSERT_TRUE(ws.Connect(api.host(), api.port(), o))
      << "?access_token= refused: HTTP " << ws.upgrade_status() << " " << ws.upgrade_body();
  Json w = ws.WaitForEvent("welcome", kFrameTimeout);
  EXPECT_EQ(w["user_id"].Str(), u.user_id) << w;
}

TEST_F(WebSocketAuthTest, PingGetsPong) {
  RestClient api = Api();
  TestUser u;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "ping", &u));
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, u, &ws));
  ASSERT_TRUE(ws.Send(client::PingFrame())) << ws.error();
  Json pong = ws.WaitForEvent("pong", kFrameTimeout);
  ASSERT_TRUE(pong.valid()) << pong;
  ExpectRecentMs(pong["server_timestamp_ms"], "pong.server_timestamp_ms");
}

}  // namespace
}  // namespace sb::test
