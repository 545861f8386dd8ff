// Presence and typing (docs/protocol.md: presence_subscribe, presence, typing,
// GET /v1/users/{id}/presence). The server's grace (5 s before "offline") and typing
// expiry (6 s) are not configurable, so these tests wait for real; they share one
// server and each waits only once.
#include <functional>
#include <thread>

#include "test_support.h"

namespace sb::test {
namespace {

using client::NowMs;
using client::PresenceSubscribeFrame;
using client::TypingFrame;
using client::WsFrame;

class PresenceTest : public SharedServerTest {};

// The server's settings these tests are built around (not configurable).
constexpr int64_t kGraceMs = 5000;
constexpr int64_t kTypingTtlMs = 6000;
// Its periodic sweep runs once a second, so a timed event may come up to this late.
constexpr int64_t kSweepSlackMs = 1000 + 500;

struct Arrival {
  size_t client;   // index into the watched clients
  Json frame;
  int64_t at_ms;   // Unix ms when the test read it
};

// Reads all `clients` together, recording each text frame with its arrival time, until
// `stop` returns true for one of them (that frame is included) or `window` passes.
std::vector<Arrival> Watch(const std::vector<WsClient*>& clients, Millis window,
                           const std::function<bool(const Arrival&)>& stop = nullptr) {
  std::vector<Arrival> out;
  auto deadline = std::chrono::steady_clock::now() + window;
  while (std::chrono::steady_clock::now() < deadline) {
    bool progressed = false;
    for (size_t i = 0; i < clients.size(); ++i) {
      WsFrame f = clients[i]->RecvFrame(Millis(0));
      if (!f.is_text()) continue;
      progressed = true;
      out.push_back({i, f.json(), NowMs()});
      if (stop && stop(out.back())) return out;
    }
    if (!progressed) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return out;
}

std::vector<Arrival> Of(const std::vector<Arrival>& all, size_t client, std::string_view event) {
  std::vector<Arrival> out;
  for (const Arrival& a : all)
    if (a.client == client && a.frame["event"].Str() == event) out.push_back(a);
  return out;
}

std::string Dump(const std::vector<Arrival>& all) {
  std::string s;
  for (const Arrival& a : all) s += "\n  [" + std::to_string(a.client) + "] " + a.frame.Dump();
  return s;
}

void ExpectPresence(const Json& p, const std::string& user_id, const std::string& status) {
  EXPECT_EQ(p["event"].Str(), "presence"s) << p;
  EXPECT_EQ(p["user_id"].Str(), user_id) << p;
  EXPECT_EQ(p["status"].Str(), status) << p;
  EXPECT_TRUE(p.Has("last_seen_ms")) << "presence frames carry last_seen_ms: " << p;
}

TEST_F(PresenceTest, ContactSeesOnlineThenOfflineAfterGraceAndStrangersLearnNothing) {
  RestClient api = Api();
  TestUser a, b, s;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "pra", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "prb", &b));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "prs", &s));  // shares no conversation
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &conv));
  WsClient bws, sws;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, b, &bws));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, s, &sws));

  // Only A is a contact of B: the stranger, an unknown id and a malformed one get no
  // answer at all.
  const std::string unknown = "usr_00000000deadbeef";
  ASSERT_TRUE(bws.Send(PresenceSubscribeFrame({a.user_id, s.user_id, unknown, "not-a-user"})));
  ASSERT_TRUE(sws.Send(PresenceSubscribeFrame({a.user_id, b.user_id})));
  Json p = bws.WaitForEvent("presence", kFrameTimeout);
  ASSERT_TRUE(p.valid()) << "no immediate presence for a contact: " << p.error();
  ExpectPresence(p, a.user_id, "offline");
  EXPECT_TRUE(p["last_seen_ms"].IsNull()) << "A was never online: " << p;

  WsClient aws;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a, &aws));
  p = bws.WaitForEvent("presence", kFrameTimeout);
  ASSERT_TRUE(p.valid()) << "no presence when A connected: " << p.error();
  ExpectPresence(p, a.user_id, "online");

  client::HttpResponse r = api.GetPresence(b.access_token, a.user_id);
  ASSERT_EQ(r.status, 200) << r.Describe();
  EXPECT_EQ(r.json()["user_id"].Str(), a.user_id) << r.Describe();
  EXPECT_EQ(r.json()["status"].Str(), "online"s) << r.Describe();
  EXPECT_TRUE(r.json().Has("last_seen_ms")) << r.Describe();
  const std::pair<const TestUser*, std::string> strangers[] = {
      {&s, a.user_id}, {&s, b.user_id}, {&b, s.user_id}, {&b, unknown}};
  for (const auto& [viewer, target] : strangers) {
    client::HttpResponse sr = api.GetPresence(viewer->access_token, target);
    EXPECT_EQ(sr.status, 404) << viewer->username << " asking for " << target << ": "
                              << sr.Describe();
    EXPECT_EQ(sr.ErrorCode(), "not_found") << sr.Describe();
  }

  // A's only device leaves; offline is announced after the grace, with the time it left.
  const int64_t t0 = NowMs();
  ASSERT_TRUE(aws.Close()) << "A's closing handshake";
  const int64_t t1 = NowMs();
  std::vector<Arrival> seen =
      Watch({&bws, &sws}, Millis(kGraceMs + kSweepSlackMs + 1500), [](const Arrival& x) {
        return x.client == 0 && x.frame["event"].Str() == "presence";
      });
  std::vector<Arrival> offline = Of(seen, 0, "presence");
  ASSERT_EQ(offline.size(), 1u) << "B got no offline within the grace + "
                                << kSweepSlackMs + 1500 << " ms:" << Dump(seen);
  ExpectPresence(offline[0].frame, a.user_id, "offline");
  ASSERT_TRUE(offline[0].frame["last_seen_ms"].IsInt()) << offline[0].frame;
  const int64_t last_seen = *offline[0].frame["last_seen_ms"].Int();
  EXPECT_GE(last_seen, t0 - 50) << "last_seen_ms before A closed (closed at " << t0 << ")";
  EXPECT_LE(last_seen, t1 + 1000) << "last_seen_ms long after A closed (at " << t1 << ")";
  EXPECT_GE(offline[0].at_ms - t0, kGraceMs - 100) << "offline announced before the grace passed";
  EXPECT_LE(offline[0].at_ms - t1, kGraceMs + kSweepSlackMs) << "offline announced late";
  // Everything the stranger got since its subscription (A's online and offline included).
  EXPECT_TRUE(Of(seen, 1, "presence").empty()) << "the stranger got presence:" << Dump(seen);

  r = api.GetPresence(b.access_token, a.user_id);
  ASSERT_EQ(r.status, 200) << r.Describe();
  EXPECT_EQ(r.json()["status"].Str(), "offline"s) << r.Describe();
  EXPECT_EQ(r.json()["last_seen_ms"].Int(), last_seen) << r.Describe();
}

TEST_F(PresenceTest, ReconnectWithinTheGraceAnnouncesNothing) {
  RestClient api = Api();
  TestUser a, b;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "pfa", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "pfb", &b));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &conv));
  WsClient bws, aws;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a, &aws));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, b, &bws));
  ASSERT_TRUE(bws.Send(PresenceSubscribeFrame({a.user_id})));
  Json p = bws.WaitForEvent("presence", kFrameTimeout);
  ASSERT_TRUE(p.valid()) << p.error();
  ExpectPresence(p, a.user_id, "online");

  // A network drop (no closing handshake) and a reconnect well within a second; the
  // pause lets the server notice the drop first, so the grace is what is tested.
  const auto t0 = std::chrono::steady_clock::now();
  aws.Abort();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  WsClient again;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a, &again));
  ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1))
      << "the reconnect took over a second; the test needs a flap";

  auto left = std::chrono::duration_cast<Millis>(t0 + Millis(kGraceMs + 1000) -
                                                 std::chrono::steady_clock::now());
  ExpectNoEvent({{&bws, "B"}}, "presence", left, "while A flapped within the grace");
  client::HttpResponse r = api.GetPresence(b.access_token, a.user_id);
  ASSERT_EQ(r.status, 200) << r.Describe();
  EXPECT_EQ(r.json()["status"].Str(), "online"s) << r.Describe();
}

TEST_F(PresenceTest, TypingGoesToOtherMembersOnlyAndExpires) {
  RestClient api = Api();
  TestUser a_phone, a_laptop, b, s;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "tya", &a_phone, "phone"));
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api, a_phone, "laptop", &a_laptop));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "tyb", &b));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "tys", &s));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a_phone, b, &conv));
  WsClient phone, laptop, bws, sws;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a_phone, &phone));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a_laptop, &laptop));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, b, &bws));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, s, &sws));

  auto expect_typing = [&](WsClient& ws, std::string_view who, const std::string& user,
                           const std::string& state) {
    Json t = ws.WaitForEvent("typing", kFrameTimeout);
    ASSERT_TRUE(t.valid()) << who << " got no typing frame: " << t.error();
    EXPECT_EQ(t["conversation_id"].Str(), conv) << who << ": " << t;
    EXPECT_EQ(t["user_id"].Str(), user) << who << ": " << t;
    EXPECT_EQ(t["state"].Str(), state) << who << ": " << t;
  };

  // A types on the phone: B sees it.
  ASSERT_TRUE(phone.Send(TypingFrame(conv, "started")));
  ASSERT_NO_FATAL_FAILURE(expect_typing(bws, "B", a_phone.user_id, "started"));
  ASSERT_TRUE(phone.Send(TypingFrame(conv, "stopped")));
  ASSERT_NO_FATAL_FAILURE(expect_typing(bws, "B", a_phone.user_id, "stopped"));
  // B types: both of A's devices see it (and, being the first typing frames they get,
  // A's own typing was not echoed to them).
  ASSERT_TRUE(bws.Send(TypingFrame(conv, "started")));
  ASSERT_TRUE(bws.Send(TypingFrame(conv, "stopped")));
  for (auto [ws, who] : {std::pair{&phone, "A's phone"}, std::pair{&laptop, "A's laptop"}}) {
    ASSERT_NO_FATAL_FAILURE(expect_typing(*ws, who, b.user_id, "started"));
    ASSERT_NO_FATAL_FAILURE(expect_typing(*ws, who, b.user_id, "stopped"));
  }

  // A starts and never stops: B is told `stopped` after the expiry. Meanwhile the
  // stranger tries to type in the conversation.
  const int64_t t_start = NowMs();
  ASSERT_TRUE(phone.Send(TypingFrame(conv, "started")));
  ASSERT_TRUE(sws.Send(TypingFrame(conv, "started")));
  bool b_started = false;
  std::vector<Arrival> seen = Watch(
      {&bws, &phone, &laptop, &sws}, Millis(kTypingTtlMs + kSweepSlackMs + 1500),
      [&](const Arrival& x) {
        if (x.client != 0 || x.frame["event"].Str() != "typing") return false;
        if (x.frame["state"].Str() == "started") b_started = true;
        return x.frame["state"].Str() == "stopped";
      });
  std::vector<Arrival> b_typing = Of(seen, 0, "typing");
  ASSERT_EQ(b_typing.size(), 2u) << "B: expected started, then stopped by expiry:" << Dump(seen);
  EXPECT_TRUE(b_started) << Dump(seen);
  for (const Arrival& t : b_typing) {
    EXPECT_EQ(t.frame["conversation_id"].Str(), conv) << t.frame;
    EXPECT_EQ(t.frame["user_id"].Str(), a_phone.user_id) << t.frame;
  }
  EXPECT_EQ(b_typing[1].frame["state"].Str(), "stopped"s) << b_typing[1].frame;
  const int64_t expired_after = b_typing[1].at_ms - t_start;
  EXPECT_GE(expired_after, kTypingTtlMs - 100) << "typing expired early";
  EXPECT_LE(expired_after, kTypingTtlMs + kSweepSlackMs) << "typing expired late";

  EXPECT_TRUE(Of(seen, 1, "typing").empty()) << "typist's own device got typing:" << Dump(seen);
  EXPECT_TRUE(Of(seen, 2, "typing").empty()) << "typist's other device got typing:" << Dump(seen);
  EXPECT_TRUE(Of(seen, 3, "typing").empty()) << "the stranger got typing:" << Dump(seen);
  std::vector<Arrival> s_errors = Of(seen, 3, "error");
  ASSERT_EQ(s_errors.size(), 1u) << "a non-member's typing is refused:" << Dump(seen);
  EXPECT_EQ(s_errors[0].frame["code"].Str(), "forbidden"s) << s_errors[0].frame;
}

}  // namespace
}  // namespace sb::test
