// GET /v1/search end to end: indexed after commit, only the caller's conversations,
// edits and deletes reflected.
#include <gtest/gtest.h>

#include <thread>

#include "server_process.h"
#include "test_support.h"

namespace sb::test {
namespace {

using client::WsClient;

class SearchTest : public SharedServerTest {
 protected:
  // The index follows the store asynchronously: poll briefly.
  Json SearchUntil(const RestClient& api, const TestUser& u, const std::string& q, size_t want,
                   const std::string& conv = "") {
    Json last;
    for (int i = 0; i < 100; ++i) {
      auto r = api.Search(u.access_token, q, conv.empty() ? std::nullopt : std::optional<std::string_view>(conv));
      EXPECT_EQ(r.status, 200) << r.Describe();
      last = r.json();
      if (last["results"].Size() == want) return last;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return last;
  }
};

TEST_F(SearchTest, FindsOnlyTheCallersMessagesAndFollowsEditsAndDeletes) {
  auto api = Api();
  TestUser a, b, stranger;
  CreateUser(api, "sa", &a);
  CreateUser(api, "sb", &b);
  CreateUser(api, "sx", &stranger);
  std::string conv;
  CreateDirect(api, a, b, &conv);
  WsClient ws;
  ConnectAndResume(api, a, &ws);
  Json m1, m2;
  SendAndAck(ws, conv, "the quarterly report is ready", &m1);
  SendAndAck(ws, conv, "lunch at the café?", &m2);

  auto found = SearchUntil(api, b, "quarterly report", 1);
  ASSERT_EQ(found["results"].Size(), 1u) << found.Dump();
  EXPECT_EQ(found["results"][0]["message_id"].Str(), m1["message_id"].Str());
  EXPECT_EQ(SearchUntil(api, b, "cafe", 1)["results"].Size(), 1u) << "diacritics folded";
  EXPECT_EQ(SearchUntil(api, stranger, "quarterly", 0)["results"].Size(), 0u) << "a stranger finds nothing";
  EXPECT_EQ(api.Search(stranger.access_token, "quarterly", conv).status, 404);
  EXPECT_EQ(api.Search(a.access_token, "").status, 400);

  // Edit: new words match, old ones do not. Delete: gone.
  ws.Send(client::SendMessageFrame({.client_msg_id = "e1", .conversation_id = conv, .content = "the annual summary",
                                    .content_type = "edit", .target_message_id = *m1["message_id"].Str()}));
  ASSERT_EQ(AwaitReply(ws, "e1")["event"].Str(), "message_ack");
  EXPECT_EQ(SearchUntil(api, b, "annual summary", 1)["results"].Size(), 1u);
  EXPECT_EQ(SearchUntil(api, b, "quarterly", 0)["results"].Size(), 0u);
  ws.Send(client::SendMessageFrame({.client_msg_id = "d1", .conversation_id = conv, .content = "",
                                    .content_type = "delete", .target_message_id = *m2["message_id"].Str()}));
  ASSERT_EQ(AwaitReply(ws, "d1")["event"].Str(), "message_ack");
  EXPECT_EQ(SearchUntil(api, b, "lunch", 0)["results"].Size(), 0u);
  // History shows the tombstone and the edit.
  auto h = api.History(b.access_token, conv, {.after_seq = 0});
  ASSERT_EQ(h.status, 200);
  EXPECT_EQ(h.json()["messages"][0]["content"].Str(), "the annual summary");
  EXPECT_TRUE(h.json()["messages"][0]["edited_ms"].Int().has_value());
  EXPECT_EQ(h.json()["messages"][1]["deleted"].Bool(), true);
  EXPECT_EQ(h.json()["messages"][1]["content"].Str(), "");
}

// search.index_delay_ms holds committed messages back from the index: with a minute,
// a message is not searchable a second after its ack. A graceful stop writes what was
// held (the indexer drains its queue), so after a restart it is found.
// Users `prefix`a and `prefix`b in a direct conversation on `server` (started with a
// minute's index delay), a sending each of `texts`; *b for the searches.
void SendHeldBack(ServerProcess& server, const std::string& prefix, const std::vector<std::string>& texts,
                  TestUser* b) {
  ASSERT_TRUE(server.Start()) << server.error();
  RestClient api(server.host(), server.port());
  TestUser a;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, prefix + "a", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, prefix + "b", b));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, *b, &conv));
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a, &ws));
  for (const auto& t : texts) {
    Json ack;
    ASSERT_NO_FATAL_FAILURE(SendAndAck(ws, conv, t, &ack));
  }
}

// No pausing for a saturated CPU here: the catch-up after a pause indexes at once,
// which is not what these tests look at (SearchIndexTest covers pauses).
ServerProcess::Options HeldBackOptions() {
  return ServerProcess::Options{
      {"--set", "search.index_delay_ms=60000", "--set", "search.yield_below_free_cpu_pct=0"}};
}

TEST(SearchDelayTest, TheIndexDelayHoldsMessagesBackUntilItEnds) {
  ServerProcess server(HeldBackOptions());
  TestUser b;
  ASSERT_NO_FATAL_FAILURE(SendHeldBack(server, "sd", {"held back walrus"}, &b));
  RestClient api(server.host(), server.port());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto r = api.Search(b.access_token, "walrus");
  ASSERT_EQ(r.status, 200) << r.Describe();
  EXPECT_EQ(r.json()["results"].Size(), 0u) << "searchable before the delay ended: " << r.body;

  ASSERT_EQ(server.Stop(), std::optional<int>(0)) << server.LogTail(20);
  ASSERT_TRUE(server.Restart()) << server.error();
  RestClient api2(server.host(), server.port());
  auto found = api2.Search(b.access_token, "walrus");  // the signing keys live in the data dir
  ASSERT_EQ(found.status, 200) << found.Describe();
  EXPECT_EQ(found.json()["results"].Size(), 1u) << found.body;
}

// A crash leaves the index behind the store (here: the message is held back by a
// minute's index delay, then the server is killed). The next start reads what the
// index lacks from the store before it accepts connections: the first search finds it.
TEST(SearchDelayTest, AfterACrashTheStartCatchesTheIndexUp) {
  ServerProcess server(HeldBackOptions());
  TestUser b;
  ASSERT_NO_FATAL_FAILURE(SendHeldBack(server, "sc", {"crashed narwhal", "second narwhal"}, &b));
  server.Kill9();
  ASSERT_TRUE(server.Restart()) << server.error();
  RestClient api2(server.host(), server.port());
  auto found = api2.Search(b.access_token, "narwhal");
  ASSERT_EQ(found.status, 200) << found.Describe();
  EXPECT_EQ(found.json()["results"].Size(), 2u) << found.body;
  EXPECT_NE(server.Log().find("event=search_caught_up messages=2"), std::string::npos) << server.LogTail(20);
}

}  // namespace
}  // namespace sb::test
