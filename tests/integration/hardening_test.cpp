// Hostile-client protections in the gateway: browser origins, connections that
// outlive their token, and the per-address connection rate.
#include <gtest/gtest.h>

#include <thread>

#include "server_process.h"
#include "test_support.h"

namespace sb::test {
namespace {

using client::RestClient;
using client::WsClient;
using client::WsConnectOptions;

class HardeningTest : public ::testing::Test {
 protected:
  void StartServer(std::vector<std::string> args) {
    server_ = std::make_unique<ServerProcess>(ServerProcess::Options{std::move(args), std::chrono::milliseconds(20000)});
    ASSERT_TRUE(server_->Start()) << server_->error();
    api_ = std::make_unique<RestClient>(server_->host(), server_->port());
  }
  WsConnectOptions Opts(const TestUser& u, std::string origin = "") {
    WsConnectOptions o;
    o.access_token = u.access_token;
    if (!origin.empty()) o.extra_headers.emplace_back("Origin", origin);
    return o;
  }
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<RestClient> api_;
};

TEST_F(HardeningTest, CrossSiteBrowserUpgradesAreRefused) {
  StartServer({});
  TestUser u;
  CreateUser(*api_, "origin", &u);
  std::string host = "127.0.0.1:" + std::to_string(server_->port());
  {
    WsClient ws;
    EXPECT_FALSE(ws.Connect(server_->host(), server_->port(), Opts(u, "https://evil.example")));
    EXPECT_EQ(ws.upgrade_status(), 403) << "a page on another site must not use the visitor's token";
  }
  {
    WsClient ws;
    EXPECT_TRUE(ws.Connect(server_->host(), server_->port(), Opts(u, "http://" + host)))
        << "same origin: " << ws.upgrade_status() << " " << ws.upgrade_body();
  }
  {
    WsClient ws;
    EXPECT_TRUE(ws.Connect(server_->host(), server_->port(), Opts(u))) << "no Origin: not a browser";
  }
}

TEST_F(HardeningTest, ConfiguredOriginsAreAllowed) {
  StartServer({"--set", "server.allowed_origins=https://chat.example.com, https://app.example.com"});
  TestUser u;
  CreateUser(*api_, "origins", &u);
  WsClient a, b, c;
  EXPECT_TRUE(a.Connect(server_->host(), server_->port(), Opts(u, "https://app.example.com")));
  EXPECT_FALSE(b.Connect(server_->host(), server_->port(), Opts(u, "https://chat.example.com.evil.net")));
  EXPECT_EQ(b.upgrade_status(), 403);
  EXPECT_FALSE(c.Connect(server_->host(), server_->port(),
                         Opts(u, "http://127.0.0.1:" + std::to_string(server_->port()))))
      << "with a list, same-origin is not implied";
}

// CORS for REST and attachments follows the same list: a page of a listed origin may
// read the answers (preflights answered, Access-Control-Allow-Origin on every answer,
// errors and attachment bytes included); any other origin gets no CORS header and a
// refused preflight, so the browser keeps the answers from it. tests/browser runs the
// same in Chromium.
TEST_F(HardeningTest, CorsFollowsTheAllowedOrigins) {
  StartServer({"--set", "server.allowed_origins=https://app.example.com"});
  TestUser u;
  CreateUser(*api_, "cors", &u);
  const std::string app = "https://app.example.com";
  auto preflight = [&](const std::string& origin, const std::string& target) {
    return api_->Request("OPTIONS", target, {}, {},
                         {{"Origin", origin}, {"Access-Control-Request-Method", "POST"},
                          {"Access-Control-Request-Headers", "authorization, content-type"}});
  };
  for (const char* target : {"/v1/sessions", "/v1/conversations", "/v1/attachments"}) {
    auto ok = preflight(app, target);
    EXPECT_EQ(ok.status, 204) << target << " " << ok.Describe();
    EXPECT_EQ(ok.Header("Access-Control-Allow-Origin"), app) << target;
    EXPECT_NE(ok.Header("Access-Control-Allow-Methods").find("POST"), std::string::npos) << target;
    EXPECT_NE(ok.Header("Access-Control-Allow-Headers").find("Authorization"), std::string::npos) << target;
    EXPECT_EQ(ok.Header("Vary"), "Origin");
    EXPECT_EQ(ok.Header("Content-Length"), "") << "a 204 has no body";
    auto no = preflight("https://evil.example", target);
    EXPECT_EQ(no.status, 403) << target << " " << no.Describe();
    EXPECT_EQ(no.ErrorCode(), "forbidden");
    EXPECT_EQ(no.Header("Access-Control-Allow-Origin"), "") << target;
  }

  // Answers, successes and errors alike, name the listed origin and only it.
  auto list = api_->Request("GET", "/v1/conversations", {}, u.access_token, {{"Origin", app}});
  EXPECT_EQ(list.status, 200) << list.Describe();
  EXPECT_EQ(list.Header("Access-Control-Allow-Origin"), app);
  EXPECT_NE(list.Header("Access-Control-Expose-Headers").find("Retry-After"), std::string::npos);
  auto denied = api_->Request("GET", "/v1/conversations", {}, "not-a-token", {{"Origin", app}});
  EXPECT_EQ(denied.status, 401);
  EXPECT_EQ(denied.Header("Access-Control-Allow-Origin"), app) << "the page can read why it was refused";
  auto evil = api_->Request("GET", "/v1/conversations", {}, u.access_token, {{"Origin", "https://evil.example"}});
  EXPECT_EQ(evil.status, 200) << "the server answers; the browser hides it";
  EXPECT_EQ(evil.Header("Access-Control-Allow-Origin"), "");
  auto native = api_->Request("GET", "/v1/conversations", {}, u.access_token);
  EXPECT_EQ(native.Header("Access-Control-Allow-Origin"), "") << "no Origin: not a browser";

  // Attachments stream outside the REST path: same headers on upload and download.
  auto up = api_->Request("POST", "/v1/attachments", "GIF89a-cors-bytes", u.access_token,
                          {{"Origin", app}, {"Content-Type", "image/gif"}});
  ASSERT_EQ(up.status, 201) << up.Describe();
  EXPECT_EQ(up.Header("Access-Control-Allow-Origin"), app);
  const std::string media = *up.json()["media_url"].Str();
  auto down = api_->Request("GET", media, {}, u.access_token, {{"Origin", app}});
  EXPECT_EQ(down.status, 200) << down.Describe();
  EXPECT_EQ(down.body, "GIF89a-cors-bytes");
  EXPECT_EQ(down.Header("Access-Control-Allow-Origin"), app);
  auto down_evil = api_->Request("GET", media, {}, u.access_token, {{"Origin", "https://evil.example"}});
  EXPECT_EQ(down_evil.Header("Access-Control-Allow-Origin"), "");
  auto up_denied = api_->Request("POST", "/v1/attachments", "x", "not-a-token", {{"Origin", app}});
  EXPECT_EQ(up_denied.status, 401);
  EXPECT_EQ(up_denied.Header("Access-Control-Allow-Origin"), app);
}

// Without a list, REST sends no CORS headers at all: a web client must then be served
// from the API's own origin (same-origin calls need none).
TEST_F(HardeningTest, NoCorsWithoutAllowedOrigins) {
  StartServer({});
  TestUser u;
  CreateUser(*api_, "nocors", &u);
  const std::string self = "http://127.0.0.1:" + std::to_string(server_->port());
  auto pre = api_->Request("OPTIONS", "/v1/sessions", {}, {},
                           {{"Origin", "https://app.example.com"}, {"Access-Control-Request-Method", "POST"}});
  EXPECT_EQ(pre.status, 403) << pre.Describe();
  auto list = api_->Request("GET", "/v1/conversations", {}, u.access_token, {{"Origin", self}});
  EXPECT_EQ(list.status, 200);
  EXPECT_EQ(list.Header("Access-Control-Allow-Origin"), "");
}

TEST_F(HardeningTest, SocketClosesWith1008WhenItsTokenExpires) {
  StartServer({"--set", "auth.access_ttl_s=10", "--set", "auth.leeway_s=0"});
  TestUser u;
  CreateUser(*api_, "expiry", &u);
  WsClient ws;
  ASSERT_TRUE(ws.Connect(server_->host(), server_->port(), Opts(u)));
  auto start = std::chrono::steady_clock::now();
  for (;;) {
    auto f = ws.RecvFrame(Millis(15000));
    if (f.kind == client::WsFrame::Kind::kText) continue;  // welcome, pings answered by the library
    ASSERT_EQ(f.kind, client::WsFrame::Kind::kClose) << f.Describe();
    EXPECT_EQ(f.close_code, 1008);
    break;
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GT(secs, 7.0) << "not before the token expires";
  EXPECT_LT(secs, 13.0) << "at its expiry";
  // The expired token no longer opens a socket; a refreshed one does.
  WsClient again;
  EXPECT_FALSE(again.Connect(server_->host(), server_->port(), Opts(u)));
  EXPECT_EQ(again.upgrade_status(), 401);
  auto r = api_->Refresh(u.refresh_token);
  ASSERT_EQ(r.status, 200) << r.Describe();
  u.access_token = *r.json()["access_token"].Str();
  WsClient fresh;
  EXPECT_TRUE(fresh.Connect(server_->host(), server_->port(), Opts(u)));
}

// docs/protocol.md: a connection silent for half of server.idle_timeout_ms is pinged,
// and closed when the silence lasts the whole timeout (checked once a second). One
// that answers the pings stays open however long it is otherwise quiet.
TEST_F(HardeningTest, SilentConnectionsArePingedThenDropped) {
  StartServer({"--set", "server.idle_timeout_ms=2000"});
  TestUser u;
  CreateUser(*api_, "silent", &u);
  using Clock = std::chrono::steady_clock;
  auto secs_since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };

  RawWs mute;
  OpenRawWs(*api_, u, &mute);
  const auto opened = Clock::now();

  // The mute one: a ping after ~1 s of silence, then the end of the connection.
  WireFrame f;
  std::optional<double> ping_at;
  for (;;) {
    RawWs::Got g = mute.Next(&f, Millis(6000));
    if (g != RawWs::Got::kFrame || f.opcode == 0x8) break;  // closed (with or without a frame)
    if (f.opcode == 0x9 && !ping_at) ping_at = secs_since(opened);
  }
  double gone_at = secs_since(opened);
  ASSERT_TRUE(ping_at.has_value()) << "no ping before the connection ended";
  EXPECT_GE(*ping_at, 0.9) << "pinged before half the idle timeout";
  EXPECT_LT(*ping_at, 2.5) << "half the timeout plus at most a second";
  EXPECT_GE(gone_at, 1.9) << "dropped before the idle timeout";
  EXPECT_LT(gone_at, 5.5) << "the whole timeout, each check at most a second late (and slack)";

  // The polite one answers every ping, and it is still there three timeouts later.
  RawWs polite;
  OpenRawWs(*api_, u, &polite);
  int pongs = 0;
  const auto polite_from = Clock::now();
  bool polite_closed = false;
  while (secs_since(polite_from) < 6.0) {
    RawWs::Got g = polite.Next(&f, Millis(500));
    if (g == RawWs::Got::kTimeout) continue;
    if (g == RawWs::Got::kClosed || f.opcode == 0x8) {
      polite_closed = true;
      break;
    }
    if (f.opcode == 0x9) {
      ASSERT_TRUE(polite.SendFrame({.opcode = 0xA, .payload = f.payload}));
      ++pongs;
    }
  }
  EXPECT_FALSE(polite_closed) << "a connection that answers pings was dropped after " << pongs << " pongs";
  EXPECT_GE(pongs, 2) << "pinged again after each answered ping's silence";
  ASSERT_TRUE(polite.SendText(R"({"event":"ping"})"));
  bool ponged = false;
  while (polite.Next(&f, Millis(3000)) == RawWs::Got::kFrame) {
    if (f.opcode == 0x1 && Json::Parse(f.payload)["event"].Str() == std::string("pong")) {
      ponged = true;
      break;
    }
  }
  EXPECT_TRUE(ponged) << "still served";
}

TEST_F(HardeningTest, OneAddressCannotOpenConnectionsWithoutLimit) {
  StartServer({"--set", "server.connects_per_ip_per_s=4"});
  TestUser u;
  CreateUser(*api_, "storm", &u);
  int ok = 0, refused = 0;
  std::vector<std::unique_ptr<WsClient>> open;
  for (int i = 0; i < 40; ++i) {
    auto ws = std::make_unique<WsClient>();
    WsConnectOptions o = Opts(u);
    o.timeout = Millis(2000);
    if (ws->Connect(server_->host(), server_->port(), o)) {
      ++ok;
      open.push_back(std::move(ws));
    } else {
      ++refused;
    }
  }
  EXPECT_GT(refused, 0) << "a burst of 40 connections from one address is cut";
  EXPECT_GE(ok, 4) << "the burst allowance is honoured";
  EXPECT_LE(ok, 20);
  // Once the bucket refills, the same address connects again, and the server serves.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  WsClient later;
  EXPECT_TRUE(later.Connect(server_->host(), server_->port(), Opts(u)));
  EXPECT_EQ(api_->Request("GET", "/healthz").status, 200);
}

// Behind a reverse proxy listed in server.trusted_proxies the per-address limits apply to
// the client address it forwards (X-Forwarded-For), not to the proxy; a peer that is not
// listed cannot pick its address with that header. Here the "proxy" is the test itself
// on 127.0.0.1.
TEST_F(HardeningTest, TrustedProxiesForwardTheClientAddress) {
  // A proxied client over its limit is refused at the upgrade, with 429; a direct one
  // already at accept (the socket is closed, no HTTP answer).
  auto connects = [&](const TestUser& u, auto forwarded_for, bool proxied = true) {
    int ok = 0;
    std::vector<std::unique_ptr<WsClient>> open;
    for (int i = 0; i < 30; ++i) {
      auto ws = std::make_unique<WsClient>();
      WsConnectOptions o = Opts(u);
      o.timeout = Millis(2000);
      o.extra_headers.emplace_back("X-Forwarded-For", forwarded_for(i));
      if (ws->Connect(server_->host(), server_->port(), o)) {
        ++ok;
        open.push_back(std::move(ws));
      } else if (proxied) {
        EXPECT_EQ(ws->upgrade_status(), 429) << ws->upgrade_body();
      }
    }
    return ok;
  };
  auto same = [](int) { return std::string("198.51.100.7"); };
  auto spread = [](int i) { return "198.51.100.7, 203.0.113." + std::to_string(i + 1); };

  StartServer({"--set", "server.connects_per_ip_per_s=4", "--set", "server.trusted_proxies=10.0.0.0/8, 127.0.0.1"});
  TestUser u;
  CreateUser(*api_, "proxied", &u);
  EXPECT_EQ(connects(u, spread), 30) << "thirty clients behind one proxy are not one address";
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  int one = connects(u, same);
  EXPECT_GE(one, 4) << "the burst allowance is honoured";
  EXPECT_LE(one, 20) << "one client behind the proxy is still limited";

  // Logins: the per-address attempt limit follows the forwarded address too.
  server_.reset();
  StartServer({"--set", "limits.login_attempts_per_ip_per_min=3", "--set", "server.trusted_proxies=127.0.0.1"});
  TestUser a;
  CreateUser(*api_, "proxiedlogin", &a);  // registration and login: 2 attempts from 127.0.0.1
  auto login_from = [&](const std::string& xff) {
    std::string body = R"({"username":")" + a.username + R"(","password":"wrong-password"})";
    return api_->Request("POST", "/v1/sessions", body, {}, {{"X-Forwarded-For", xff}}).status;
  };
  for (int i = 0; i < 3; ++i) EXPECT_EQ(login_from("192.0.2.50"), 401);
  EXPECT_EQ(login_from("192.0.2.50"), 429) << "this client's attempts are used up";
  EXPECT_EQ(login_from("192.0.2.51"), 401) << "another client behind the same proxy is not";

  // Not trusted (the default): the header changes nothing, every client is 127.0.0.1.
  server_.reset();
  StartServer({"--set", "server.connects_per_ip_per_s=4"});
  TestUser v;
  CreateUser(*api_, "unproxied", &v);
  EXPECT_LE(connects(v, spread, false), 20) << "a client cannot escape its limit by naming other addresses";
}

}  // namespace
}  // namespace sb::test

namespace sb::test {
namespace {

TEST_F(HardeningTest, PasswordGuessingIsThrottledPerAccountAndPerAddress) {
  StartServer({"--set", "limits.login_failures_per_account_burst=3", "--set",
               "limits.login_failures_per_account_per_min=1", "--set", "limits.login_attempts_per_ip_per_min=12"});
  TestUser victim, other;
  CreateUser(*api_, "victim", &victim);
  CreateUser(*api_, "bystander", &other);  // 2 logins so far from this address
  for (int i = 0; i < 3; ++i) EXPECT_EQ(api_->Login(victim.username, "wrong-password").status, 401);
  auto locked = api_->Login(victim.username, "wrong-password");
  EXPECT_EQ(locked.status, 429) << locked.Describe();
  EXPECT_EQ(locked.ErrorCode(), "rate_limited");
  // The right password does not get through a locked account either (no oracle) ...
  EXPECT_EQ(api_->Login(victim.username, kPassword).status, 429);
  // ... while other accounts are unaffected.
  EXPECT_EQ(api_->Login(other.username, kPassword).status, 200);
  // The address as a whole: 12 attempts a minute, then 429 for everyone from it.
  int limited = 0;
  for (int i = 0; i < 10; ++i) limited += api_->Login(other.username, kPassword).status == 429;
  EXPECT_GT(limited, 0);
  // Existing sessions keep working.
  EXPECT_EQ(api_->GetUser(other.access_token, other.user_id).status, 200);
}

TEST_F(HardeningTest, UsernameLookupsAreLimitedPerUser) {
  StartServer({"--set", "limits.user_lookups_per_user_per_min=3"});
  TestUser walker, other;
  CreateUser(*api_, "walker", &walker);
  CreateUser(*api_, "neighbour", &other);
  for (int i = 0; i < 3; ++i) {
    auto r = api_->Request("GET", "/v1/users?username=name" + std::to_string(i), {}, walker.access_token);
    EXPECT_EQ(r.status, 404) << r.Describe();
  }
  auto limited = api_->Request("GET", "/v1/users?username=" + other.username, {}, walker.access_token);
  EXPECT_EQ(limited.status, 429) << limited.Describe();
  EXPECT_EQ(limited.ErrorCode(), "rate_limited");
  const std::string retry = limited.Header("Retry-After");
  EXPECT_TRUE(retry == "20" || retry == "19") << "one lookup every 20 s: " << retry;
  // Per user: the other one is not held back, and other calls of the walker still work.
  EXPECT_EQ(api_->Request("GET", "/v1/users?username=" + walker.username, {}, other.access_token).status, 200);
  EXPECT_EQ(api_->GetUser(walker.access_token, other.user_id).status, 200);
}

}  // namespace
}  // namespace sb::test

namespace sb::test {
namespace {

TEST_F(HardeningTest, LogoutRevokesTheDeviceEverywhereAtOnce) {
  StartServer({});
  TestUser u, other_device;
  CreateUser(*api_, "logout", &u, "phone");
  LoginDevice(*api_, u, "laptop", &other_device);
  WsClient phone, laptop;
  ASSERT_TRUE(phone.Connect(server_->host(), server_->port(), Opts(u)));
  ASSERT_TRUE(laptop.Connect(server_->host(), server_->port(), Opts(other_device)));
  phone.WaitForEvent("welcome");
  laptop.WaitForEvent("welcome");

  auto r = api_->Request("POST", "/v1/sessions/logout", R"({"refresh_token":")" + u.refresh_token + "\"}",
                         u.access_token);
  ASSERT_EQ(r.status, 204) << r.Describe();
  // The open socket of that device is closed with 1008 ...
  for (;;) {
    auto f = phone.RecvFrame(Millis(5000));
    if (f.kind == client::WsFrame::Kind::kText) continue;
    ASSERT_EQ(f.kind, client::WsFrame::Kind::kClose) << f.Describe();
    EXPECT_EQ(f.close_code, 1008);
    break;
  }
  // ... its access token opens nothing and calls nothing, its refresh token is dead ...
  WsClient again;
  EXPECT_FALSE(again.Connect(server_->host(), server_->port(), Opts(u)));
  EXPECT_EQ(again.upgrade_status(), 401);
  EXPECT_EQ(api_->GetUser(u.access_token, u.user_id).status, 401);
  EXPECT_EQ(api_->Refresh(u.refresh_token).status, 401);
  // ... the user's other device is untouched ...
  laptop.Send(client::PingFrame());
  EXPECT_TRUE(laptop.WaitForEvent("pong").valid()) << "the laptop stays connected";
  EXPECT_EQ(api_->GetUser(other_device.access_token, u.user_id).status, 200);
  // ... and logging in again (a second later: iat has second granularity) works.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  TestUser back;
  LoginDevice(*api_, u, "phone", &back);
  WsClient fresh;
  EXPECT_TRUE(fresh.Connect(server_->host(), server_->port(), Opts(back)));
  // The revocation survives a restart.
  ASSERT_TRUE(server_->Stop().has_value());
  ASSERT_TRUE(server_->Restart()) << server_->error();
  RestClient api2(server_->host(), server_->port());
  EXPECT_EQ(api2.GetUser(u.access_token, u.user_id).status, 401);
  EXPECT_EQ(api2.GetUser(back.access_token, u.user_id).status, 200);
}

}  // namespace
}  // namespace sb::test

namespace sb::test {
namespace {

TEST_F(HardeningTest, OneUserCannotHoldUnboundedConnections) {
  StartServer({"--set", "server.max_connections_per_user=3"});
  TestUser u;
  CreateUser(*api_, "hoarder", &u);
  std::vector<std::unique_ptr<WsClient>> open;
  for (int i = 0; i < 3; ++i) {
    open.push_back(std::make_unique<WsClient>());
    ASSERT_TRUE(open.back()->Connect(server_->host(), server_->port(), Opts(u))) << i;
    open.back()->WaitForEvent("welcome");
  }
  WsClient fourth;
  EXPECT_FALSE(fourth.Connect(server_->host(), server_->port(), Opts(u)));
  EXPECT_EQ(fourth.upgrade_status(), 429);
  // Another user is not affected, and a slot frees when a connection closes.
  TestUser other;
  CreateUser(*api_, "other", &other);
  WsClient theirs;
  EXPECT_TRUE(theirs.Connect(server_->host(), server_->port(), Opts(other)));
  open.back()->Close();
  open.pop_back();
  bool reconnected = false;
  for (int i = 0; i < 50 && !reconnected; ++i) {
    WsClient again;
    reconnected = again.Connect(server_->host(), server_->port(), Opts(u));
    if (!reconnected) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(reconnected);
}

}  // namespace
}  // namespace sb::test
