// Group membership and roles over REST, with their effect on open sockets.
#include <gtest/gtest.h>

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
