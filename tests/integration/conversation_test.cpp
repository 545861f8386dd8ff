// Conversations over REST (docs/protocol.md: POST/GET /v1/conversations...).
#include <algorithm>
#include <set>
#include <thread>

#include "base/ids.h"
#include "test_support.h"

namespace sb::test {
namespace {

using client::HttpResponse;

class ConversationTest : public SharedServerTest {};

std::set<std::string> StringSet(const Json& array) {
  std::set<std::string> out;
  for (const Json& v : array.Items()) out.insert(v.StrOr("<not a string>"));
  return out;
}

TEST_F(ConversationTest, DirectConversationIsCreatedOncePerPair) {
  RestClient api = Api();
  TestUser a, b;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "dira", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "dirb", &b));

  HttpResponse r = api.CreateConversation(a.access_token, "direct", {b.user_id});
  ASSERT_EQ(r.status, 201) << r.Describe();
  Json c = r.json();
  const std::string id = c["conversation_id"].StrOr("");
  EXPECT_EQ(id.rfind("conv_", 0), 0u) << "conversation ids are conv_…: " << r.Describe();
  EXPECT_EQ(c["type"].Str(), "direct"s) << r.Describe();
  EXPECT_TRUE(c.Has("title")) << r.Describe();
  EXPECT_EQ(StringSet(c["member_ids"]), (std::set<std::string>{a.user_id, b.user_id}))
      << "the caller is always a member: " << r.Describe();
  ASSERT_TRUE(c["created_ms"].IsInt()) << r.Describe();
  EXPECT_GT(*c["created_ms"].Int(), 0) << r.Describe();

  HttpResponse again = api.CreateConversation(a.access_token, "direct", {b.user_id});
  EXPECT_EQ(again.status, 200) << "the same pair again: " << again.Describe();
  EXPECT_EQ(again.json()["conversation_id"].Str(), id) << again.Describe();

  HttpResponse reverse = api.CreateConversation(b.access_token, "direct", {a.user_id});
  EXPECT_EQ(reverse.status, 200) << "the same pair from the other side: " << reverse.Describe();
  EXPECT_EQ(reverse.json()["conversation_id"].Str(), id) << reverse.Describe();

  HttpResponse listed_self =
      api.CreateConversation(a.access_token, "direct", {a.user_id, b.user_id});
  EXPECT_EQ(listed_self.status, 200)
      << "member_ids naming the caller too is the same pair: " << listed_self.Describe();
  EXPECT_EQ(listed_self.json()["conversation_id"].Str(), id) << listed_self.Describe();
}

TEST_F(ConversationTest, GroupIsCreatedWithTitleAndTheCallerAsMember) {
  RestClient api = Api();
  TestUser a, b, c;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "grpa", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "grpb", &b));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "grpc", &c));

  HttpResponse r =
      api.CreateConversation(a.access_token, "group", {b.user_id, c.user_id}, "Launch plan");
  ASSERT_EQ(r.status, 201) << r.Describe();
  Json g = r.json();
  const std::string id = g["conversation_id"].StrOr("");
  EXPECT_EQ(id.rfind("conv_", 0), 0u) << r.Describe();
  EXPECT_EQ(g["type"].Str(), "group"s) << r.Describe();
  EXPECT_EQ(g["title"].Str(), "Launch plan"s) << r.Describe();
  EXPECT_EQ(StringSet(g["member_ids"]), (std::set<std::string>{a.user_id, b.user_id, c.user_id}))
      << r.Describe();
  EXPECT_TRUE(g["created_ms"].IsInt()) << r.Describe();

  // Every member sees it with the same fields.
  HttpResponse get = api.GetConversation(c.access_token, id);
  ASSERT_EQ(get.status, 200) << get.Describe();
  EXPECT_EQ(get.json()["title"].Str(), "Launch plan"s) << get.Describe();
  EXPECT_EQ(get.json()["type"].Str(), "group"s) << get.Describe();
}

TEST_F(ConversationTest, ListShowsTheCallersConversationsMostRecentFirst) {
  RestClient api = Api();
  TestUser a, b, c;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "lsta", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "lstb", &b));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "lstc", &c));

  std::string direct;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &direct));
  HttpResponse gr = api.CreateConversation(a.access_token, "group", {b.user_id, c.user_id}, "Crew");
  ASSERT_EQ(gr.status, 201) << gr.Describe();
  const std::string group = gr.json()["conversation_id"].StrOr("");

  // The direct conversation gets the latest activity, so it must come first. Activity
  // times are milliseconds: wait so the message is not in the group's creation ms,
  // where the order would be a tie.
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a, &ws));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  Json ack;
  ASSERT_NO_FATAL_FAILURE(SendAndAck(ws, direct, "hello list", &ack));

  HttpResponse r = api.ListConversations(a.access_token);
  ASSERT_EQ(r.status, 200) << r.Describe();
  Json j = r.json();
  ASSERT_TRUE(j["conversations"].IsArray()) << r.Describe();
  EXPECT_TRUE(j.Has("next_cursor")) << r.Describe();
  std::vector<std::string> ids;
  for (const Json& e : j["conversations"].Items()) {
    ids.push_back(e["conversation_id"].StrOr(""));
    for (const char* field : {"conversation_id", "type", "title", "last_seq", "last_message_id",
                              "last_message_preview", "last_message_ms", "unread_count"}) {
      EXPECT_TRUE(e.Has(field)) << "list entry lacks " << field << ": " << e;
    }
  }
  ASSERT_EQ(ids.size(), 2u) << r.Describe();
  EXPECT_EQ(ids[0], direct) << "most recent activity first: " << r.Describe();
  EXPECT_EQ(ids[1], group) << r.Describe();

  Json first = j["conversations"][0];
  EXPECT_EQ(first["type"].Str(), "direct"s) << first;
  EXPECT_EQ(first["last_seq"].Int(), 1) << first;
  EXPECT_EQ(first["last_message_id"].Str(), ack["message_id"].Str()) << first;
  auto preview = first["last_message_preview"].Str();
  ASSERT_TRUE(preview.has_value()) << first;
  EXPECT_EQ(std::string("hello list").rfind(*preview, 0), 0u)
      << "a preview is a prefix of the content: " << first;
  EXPECT_TRUE(first["last_message_ms"].IsInt()) << first;
  EXPECT_TRUE(first["unread_count"].IsInt()) << first;
  Json second = j["conversations"][1];
  EXPECT_EQ(second["title"].Str(), "Crew"s) << second;
  EXPECT_EQ(second["last_seq"].Int(), 0) << second;

  // c is only in the group.
  HttpResponse rc = api.ListConversations(c.access_token);
  ASSERT_EQ(rc.status, 200) << rc.Describe();
  std::vector<std::string> c_ids;
  for (const Json& e : rc.json()["conversations"].Items())
    c_ids.push_back(e["conversation_id"].StrOr(""));
  EXPECT_EQ(c_ids, std::vector<std::string>{group}) << rc.Describe();
}

TEST_F(ConversationTest, GetAnswersMembersAndIs404ForEveryoneElse) {
  RestClient api = Api();
  TestUser a, b, outsider;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "geta", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "getb", &b));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "geto", &outsider));
  std::string id;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &id));

  HttpResponse r = api.GetConversation(b.access_token, id);
  ASSERT_EQ(r.status, 200) << r.Describe();
  Json c = r.json();
  EXPECT_EQ(c["conversation_id"].Str(), id) << r.Describe();
  EXPECT_EQ(c["type"].Str(), "direct"s) << r.Describe();
  EXPECT_TRUE(c.Has("title")) << r.Describe();
  EXPECT_EQ(StringSet(c["member_ids"]), (std::set<std::string>{a.user_id, b.user_id}))
      << r.Describe();
  EXPECT_TRUE(c["created_ms"].IsInt()) << r.Describe();
  EXPECT_EQ(c["last_seq"].Int(), 0) << r.Describe();

  // A non-member learns nothing, not even that the conversation exists: the answer is
  // the one for an id that was never created.
  HttpResponse foreign = api.GetConversation(outsider.access_token, id);
  HttpResponse missing = api.GetConversation(a.access_token, sb::FormatConvId(sb::RandomId64()));
  EXPECT_EQ(foreign.status, 404) << "non-member: " << foreign.Describe();
  EXPECT_EQ(foreign.ErrorCode(), "not_found") << foreign.Describe();
  EXPECT_EQ(missing.status, 404) << "nonexistent id: " << missing.Describe();
  EXPECT_EQ(missing.ErrorCode(), "not_found") << missing.Describe();
}


// The list is paged with an opaque cursor that neither repeats nor skips a row,
// unread counts follow READ receipts, and the preview follows edits and deletes
// (a deleted message's text never shows in the list).
TEST_F(ConversationTest, ListPagesUnreadCountsAndPreviewsFollowTheConversation) {
  RestClient api = Api();
  TestUser a, b;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "pga", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "pgb", &b));
  WsClient aw, bw;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a, &aw));
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, b, &bw));

  // Seven groups, each with one message, sent in order: the newest activity is the last.
  std::vector<std::string> convs;
  for (int i = 0; i < 7; ++i) {
    HttpResponse gr = api.CreateConversation(a.access_token, "group", {b.user_id}, "g" + std::to_string(i));
    ASSERT_EQ(gr.status, 201) << gr.Describe();
    convs.push_back(gr.json()["conversation_id"].StrOr(""));
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
    Json ack;
    ASSERT_NO_FATAL_FAILURE(SendAndAck(aw, convs.back(), "message " + std::to_string(i), &ack));
  }
  std::vector<std::string> seen;
  std::optional<std::string> cursor;
  for (int page = 0; page < 5; ++page) {
    HttpResponse r = cursor ? api.ListConversations(b.access_token, 3, *cursor) : api.ListConversations(b.access_token, 3);
    ASSERT_EQ(r.status, 200) << r.Describe();
    Json j = r.json();
    for (const Json& e : j["conversations"].Items()) seen.push_back(e["conversation_id"].StrOr(""));
    if (!j["next_cursor"].Str()) break;
    cursor = *j["next_cursor"].Str();
  }
  std::vector<std::string> want(convs.rbegin(), convs.rend());
  EXPECT_EQ(seen, want) << "newest activity first, every conversation once";
  EXPECT_EQ(api.ListConversations(b.access_token, 3, "garbage").status, 400);

  // Unread: b has one unread message in every group; READ up to it clears one.
  auto entry_of = [&](const TestUser& u, const std::string& conv) {
    HttpResponse r = api.ListConversations(u.access_token, 200);
    for (const Json& e : r.json()["conversations"].Items())
      if (e["conversation_id"].StrOr("") == conv) return e;
    return Json();
  };
  EXPECT_EQ(entry_of(b, convs[0])["unread_count"].Int(), 1);
  ASSERT_TRUE(bw.Send(R"({"event":"message_receipt","conversation_id":")" + convs[0] +
                      R"(","status":"READ","up_to_seq":1})"));
  bool cleared = false;
  for (int i = 0; i < 200 && !cleared; ++i) {  // the receipt is stored by the commit thread
    cleared = entry_of(b, convs[0])["unread_count"].Int() == 0;
    if (!cleared) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(cleared) << entry_of(b, convs[0]);
  EXPECT_EQ(entry_of(b, convs[1])["unread_count"].Int(), 1);

  // An edit of the latest message shows its new text; a delete leaves no text behind.
  Json ack;
  ASSERT_NO_FATAL_FAILURE(SendAndAck(aw, convs[6], "secret plan", &ack));
  const std::string target = ack["message_id"].StrOr("");
  ASSERT_TRUE(aw.Send(R"({"event":"send_message","client_msg_id":"ed1","conversation_id":")" + convs[6] +
                      R"(","content_type":"edit","target_message_id":")" + target + R"(","content":"public plan"})"));
  ASSERT_EQ(AwaitReply(aw, "ed1")["event"].Str(), "message_ack"s);
  Json e = entry_of(b, convs[6]);
  EXPECT_EQ(e["last_message_preview"].Str(), "public plan"s) << e;
  EXPECT_EQ(e["last_message_content_type"].Str(), "edit"s) << e;
  EXPECT_EQ(e["unread_count"].Int(), 3) << e;
  ASSERT_TRUE(aw.Send(R"({"event":"send_message","client_msg_id":"del1","conversation_id":")" + convs[6] +
                      R"(","content_type":"delete","target_message_id":")" + target + R"(","content":""})"));
  ASSERT_EQ(AwaitReply(aw, "del1")["event"].Str(), "message_ack"s);
  e = entry_of(b, convs[6]);
  EXPECT_EQ(e["last_message_preview"].Str(), ""s) << e;
  EXPECT_EQ(e["last_message_content_type"].Str(), "delete"s) << e;
  EXPECT_EQ(e["last_message_sender_id"].Str(), a.user_id) << e;
  EXPECT_EQ(e.Dump().find("plan"), std::string::npos) << e;
}

}  // namespace
}  // namespace sb::test
