// Group membership and roles over REST, with their effect on open sockets.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <functional>

#include "test_support.h"

namespace sb::test {
namespace {

using client::WsClient;

class GroupsTest : public SharedServerTest {
 protected:
  std::string Ids(const std::vector<const TestUser*>& users) {
    std::string out = "[";
    for (size_t i = 0; i < users.size(); ++i) out += (i ? ",\"" : "\"") + users[i]->user_id + "\"";
    return out + "]";
  }
};

TEST_F(GroupsTest, OwnerAdminsAndMembersHaveTheirRights) {
  auto api = Api();
  TestUser owner, bob, carol, dave, erin;
  CreateUser(api, "gowner", &owner);
  CreateUser(api, "gbob", &bob);
  CreateUser(api, "gcarol", &carol);
  CreateUser(api, "gdave", &dave);
  CreateUser(api, "gerin", &erin);
  auto r = api.CreateConversation(owner.access_token, "group", {bob.user_id, carol.user_id}, "team");
  ASSERT_EQ(r.status, 201) << r.Describe();
  std::string conv = *r.json()["conversation_id"].Str();
  EXPECT_EQ(r.json()["owner_id"].Str(), owner.user_id);

  // A plain member cannot add, rename or appoint.
  auto add = api.Request("POST", "/v1/conversations/" + conv + "/members", R"({"user_ids":)" + Ids({&dave}) + "}",
                         bob.access_token);
  EXPECT_EQ(add.status, 403) << add.Describe();
  EXPECT_EQ(api.Request("PATCH", "/v1/conversations/" + conv, R"({"title":"mine"})", bob.access_token).status, 403);
  EXPECT_EQ(api.Request("PUT", "/v1/conversations/" + conv + "/admins/" + carol.user_id, "", bob.access_token).status,
            403);
  // The owner appoints Bob; Bob adds Dave and renames.
  auto appoint = api.Request("PUT", "/v1/conversations/" + conv + "/admins/" + bob.user_id, "", owner.access_token);
  ASSERT_EQ(appoint.status, 200) << appoint.Describe();
  EXPECT_EQ(appoint.json()["admin_ids"][0].Str(), bob.user_id);
  add = api.Request("POST", "/v1/conversations/" + conv + "/members", R"({"user_ids":)" + Ids({&dave}) + "}",
                    bob.access_token);
  ASSERT_EQ(add.status, 200) << add.Describe();
  EXPECT_EQ(add.json()["member_ids"].Size(), 4u);
  auto renamed = api.Request("PATCH", "/v1/conversations/" + conv, R"({"title":"renamed"})", bob.access_token);
  ASSERT_EQ(renamed.status, 200) << renamed.Describe();
  EXPECT_EQ(renamed.json()["title"].Str(), "renamed");
  // Nobody removes the owner; an admin cannot remove another admin; a member can leave.
  EXPECT_EQ(api.Request("DELETE", "/v1/conversations/" + conv + "/members/" + owner.user_id, "", bob.access_token)
                .status,
            403);
  EXPECT_EQ(api.Request("DELETE", "/v1/conversations/" + conv + "/members/" + carol.user_id, "", dave.access_token)
                .status,
            403);
  EXPECT_EQ(api.Request("DELETE", "/v1/conversations/" + conv + "/members/" + dave.user_id, "", dave.access_token)
                .status,
            204);
  // Outsiders learn nothing: the same 404 as a conversation that does not exist.
  auto outsider = api.Request("POST", "/v1/conversations/" + conv + "/members", R"({"user_ids":)" + Ids({&erin}) + "}",
                              erin.access_token);
  EXPECT_EQ(outsider.status, 404);
  // Unknown users and direct conversations are refused.
  auto bad = api.Request("POST", "/v1/conversations/" + conv + "/members",
                         R"({"user_ids":["usr_00000000000000ff"]})", owner.access_token);
  EXPECT_EQ(bad.status, 400);
  std::string direct;
  CreateDirect(api, owner, erin, &direct);
  EXPECT_EQ(api.Request("POST", "/v1/conversations/" + direct + "/members", R"({"user_ids":)" + Ids({&bob}) + "}",
                        owner.access_token)
                .status,
            400);
  auto got = api.GetConversation(owner.access_token, conv);
  EXPECT_EQ(got.json()["member_ids"].Size(), 3u);
}

TEST_F(GroupsTest, RemovalTakesEffectOnOpenSocketsAtOnce) {
  auto api = Api();
  TestUser owner, bob, carol;
  CreateUser(api, "rowner", &owner);
  CreateUser(api, "rbob", &bob);
  CreateUser(api, "rcarol", &carol);
  auto r = api.CreateConversation(owner.access_token, "group", {bob.user_id, carol.user_id}, "t");
  ASSERT_EQ(r.status, 201);
  std::string conv = *r.json()["conversation_id"].Str();
  WsClient wo, wb, wc;
  ConnectAndResume(api, owner, &wo);
  ConnectAndResume(api, bob, &wb);
  ConnectAndResume(api, carol, &wc);
  Json ack;
  SendAndAck(wo, conv, "before", &ack);
  std::vector<Json> got;
  CollectMessages(wc, conv, 1, &got);

  ASSERT_EQ(api.Request("DELETE", "/v1/conversations/" + conv + "/members/" + carol.user_id, "", owner.access_token)
                .status,
            204);
  SendAndAck(wo, conv, "after", &ack);
  CollectMessages(wb, conv, 2, &got);  // Bob still gets both
  ExpectNoEvent({{&wc, "carol"}}, "message", kQuietWindow, "after her removal");
  // Carol can neither send, nor read, nor look.
  wc.Send(client::SendMessageFrame({.client_msg_id = "c1", .conversation_id = conv, .content = "hello?"}));
  EXPECT_EQ(ErrorCodeOf(AwaitReply(wc, "c1")), "forbidden");
  EXPECT_EQ(api.History(carol.access_token, conv).status, 404);
  EXPECT_EQ(api.GetConversation(carol.access_token, conv).status, 404);
  auto list = api.ListConversations(carol.access_token);
  for (auto& c : list.json()["conversations"].Items()) EXPECT_NE(c["conversation_id"].Str(), conv);
}

// The first `event` frame about `conv` on `ws` that `want` accepts (other frames are
// skipped: each change sends one, and a device may not have read the earlier ones), or
// a None.
Json AwaitConversationEvent(WsClient& ws, std::string_view event, const std::string& conv,
                            const std::function<bool(const Json&)>& want = [](const Json&) { return true; }) {
  auto deadline = std::chrono::steady_clock::now() + kFrameTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto text = ws.Recv(std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now()));
    if (!text) break;
    Json f = Json::Parse(*text);
    if (!f.valid()) continue;
    if (f["event"].Str() == std::string(event) && f["conversation_id"].Str() == conv && want(f)) return f;
  }
  return Json::None("no " + std::string(event) + " for " + conv);
}

std::vector<std::string> IdsOf(const Json& array) {
  std::vector<std::string> out;
  for (auto& v : array.Items()) out.push_back(*v.Str());
  std::sort(out.begin(), out.end());
  return out;
}

// Open devices learn of membership, title and role changes as they happen: every
// member's devices get the conversation's new record, a removed member's devices only
// that they are out, and nobody else anything.
TEST_F(GroupsTest, MembersLearnOfChangesOnTheirOpenSockets) {
  auto api = Api();
  TestUser owner, bob, carol, dave;
  CreateUser(api, "uowner", &owner);
  CreateUser(api, "ubob", &bob);
  CreateUser(api, "ucarol", &carol);
  CreateUser(api, "udave", &dave);
  WsClient wo, wb, wb2, wc, wd;
  ConnectAndResume(api, owner, &wo);
  ConnectAndResume(api, bob, &wb);
  TestUser bob_laptop;
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api, bob, "laptop", &bob_laptop));
  ConnectAndResume(api, bob_laptop, &wb2);
  ConnectAndResume(api, carol, &wc);
  ConnectAndResume(api, dave, &wd);

  // Created: the members' devices are told, the creator's too.
  auto r = api.CreateConversation(owner.access_token, "group", {bob.user_id}, "plans");
  ASSERT_EQ(r.status, 201) << r.Describe();
  const std::string conv = *r.json()["conversation_id"].Str();
  for (WsClient* ws : {&wo, &wb, &wb2}) {
    Json f = AwaitConversationEvent(*ws, "conversation_updated", conv);
    ASSERT_EQ(f["title"].Str(), "plans"s) << f;
    EXPECT_EQ(f["type"].Str(), "group"s);
    EXPECT_EQ(f["owner_id"].Str(), owner.user_id);
    EXPECT_EQ(f["member_count"].Int(), 2);
    EXPECT_EQ(IdsOf(f["members_added"]), (std::vector<std::string>{std::min(owner.user_id, bob.user_id),
                                                                     std::max(owner.user_id, bob.user_id)}));
    EXPECT_FALSE(f.Has("member_ids")) << "changes carry who joined and left, not the whole list";
  }
  // Renamed, a member added (and one already in: not counted), an admin appointed.
  auto members_are = [](int64_t n) { return [n](const Json& f) { return f["member_count"].Int() == n; }; };
  ASSERT_EQ(api.Request("PATCH", "/v1/conversations/" + conv, R"({"title":"trip"})", owner.access_token).status, 200);
  Json renamed = AwaitConversationEvent(wb, "conversation_updated", conv);
  EXPECT_EQ(renamed["title"].Str(), "trip"s);
  EXPECT_FALSE(renamed.Has("members_added") || renamed.Has("members_removed")) << renamed;
  ASSERT_EQ(api.Request("POST", "/v1/conversations/" + conv + "/members", R"({"user_ids":)" + Ids({&carol, &bob}) + "}",
                        owner.access_token)
                .status,
            200);
  Json added = AwaitConversationEvent(wc, "conversation_updated", conv);
  EXPECT_EQ(added["title"].Str(), "trip"s) << added;
  EXPECT_EQ(added["member_count"].Int(), 3);
  EXPECT_EQ(IdsOf(added["members_added"]), (std::vector<std::string>{carol.user_id}));
  EXPECT_TRUE(AwaitConversationEvent(wb2, "conversation_updated", conv, members_are(3)).valid())
      << "bob's other device sees carol added";
  ASSERT_EQ(api.Request("PUT", "/v1/conversations/" + conv + "/admins/" + carol.user_id, "", owner.access_token).status,
            200);
  EXPECT_TRUE(AwaitConversationEvent(wb, "conversation_updated", conv,
                                     [&](const Json& f) { return f["admin_ids"][0].Str() == carol.user_id; })
                  .valid())
      << "carol appointed";

  // Bob removed: both his devices are told he is out, and nothing of the group's new
  // state; the others see him gone.
  ASSERT_EQ(api.Request("DELETE", "/v1/conversations/" + conv + "/members/" + bob.user_id, "", owner.access_token)
                .status,
            204);
  for (WsClient* ws : {&wb, &wb2}) {
    Json gone = AwaitConversationEvent(*ws, "conversation_removed", conv);
    ASSERT_TRUE(gone.valid()) << gone.error();
    EXPECT_EQ(gone.Keys(), (std::vector<std::string>{"event", "conversation_id"})) << "nothing but that he is out";
  }
  Json left = AwaitConversationEvent(wc, "conversation_updated", conv, members_are(2));
  EXPECT_EQ(IdsOf(left["members_removed"]), (std::vector<std::string>{bob.user_id})) << left;
  // Nobody outside heard of any of it.
  ExpectNoEvent({{&wd, "dave"}}, "conversation_updated", kQuietWindow, "a stranger to the group");
  ExpectNoEvent({{&wb, "bob's phone"}, {&wb2, "bob's laptop"}}, "conversation_updated", kQuietWindow,
                "after his removal");
}

TEST_F(GroupsTest, GroupSizeIsBounded) {
  auto api = Api();
  TestUser owner;
  CreateUser(api, "bigowner", &owner);
  std::string ids = "[";
  for (int i = 1; i <= 1000; ++i) {
    char id[32];
    std::snprintf(id, sizeof id, "usr_%016x", i);
    ids += std::string(i > 1 ? "," : "") + "\"" + id + "\"";
  }
  ids += "]";
  auto r = api.Request("POST", "/v1/conversations", R"({"type":"group","member_ids":)" + ids + "}",
                       owner.access_token);
  EXPECT_EQ(r.status, 400) << r.Describe();
  EXPECT_NE(r.body.find("at most 1000"), std::string::npos) << "1,000 others + the caller: " << r.Describe();
}

}  // namespace
}  // namespace sb::test
