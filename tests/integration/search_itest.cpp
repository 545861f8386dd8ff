// GET /v1/search end to end: indexed after commit, only the caller's conversations,
// edits and deletes reflected.
#include <gtest/gtest.h>

#include <thread>

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

}  // namespace
}  // namespace sb::test
