// A group at the contract's largest size (1,000 members) with every member connected:
// one message reaches all 999 other members exactly once, a burst keeps seq order at
// every member, and the sender's own other device gets it too. Its own server, so the
// per-address connect limit can be lifted for 1,000 sockets from one test process.
// Then the receipts: the sender is told "delivered to all" / "read by all" once the
// slowest member moves, not once per member.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <set>

#include "server_process.h"
#include "test_support.h"

namespace sb::test {
namespace {

using client::HttpResponse;

class BigGroupTest : public ::testing::Test {
 protected:
  BigGroupTest()
      : server_(ServerProcess::Options{{"--set", "server.connects_per_ip_per_s=0", "--set",
                                        "limits.max_rest_body_bytes=1048576"}}) {}
  void SetUp() override {
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 2 * kMembers + 64)
      GTEST_FAIL() << "needs " << 2 * kMembers + 64 << " open files, the hard limit is " << rl.rlim_max;
    ASSERT_TRUE(server_.Start()) << server_.error();
  }
  void TearDown() override {
    if (HasFailure()) std::cout << "---- server log tail ----\n" << server_.LogTail(30) << "----\n";
  }
  RestClient Api() const { return RestClient(server_.host(), server_.port()); }
  static constexpr size_t kMembers = 1000;
  ServerProcess server_;
};

TEST_F(BigGroupTest, EveryOneOfAThousandConnectedMembersGetsEveryMessageInOrder) {
  RestClient api = Api();
  std::vector<TestUser> users(kMembers);
  for (size_t i = 0; i < kMembers; ++i) ASSERT_NO_FATAL_FAILURE(CreateUser(api, "big", &users[i]));
  std::vector<std::string> others;
  for (size_t i = 1; i < kMembers; ++i) others.push_back(users[i].user_id);
  HttpResponse gr = api.CreateConversation(users[0].access_token, "group", others, "everyone");
  ASSERT_EQ(gr.status, 201) << gr.Describe().substr(0, 300);
  const std::string conv = gr.json()["conversation_id"].StrOr("");
  ASSERT_EQ(gr.json()["member_ids"].Items().size(), kMembers);

  // Every member connected (the owner twice: a second device gets its own messages).
  std::vector<WsClient> ws(kMembers);
  for (size_t i = 0; i < kMembers; ++i) {
    ASSERT_NO_FATAL_FAILURE(ConnectWs(api, users[i], &ws[i])) << "member " << i;
    ASSERT_TRUE(ws[i].Send(R"({"event":"ping"})"));  // first frame: live delivery starts now
  }
  TestUser second;
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api, users[0], "dev-2", &second));
  WsClient owner2;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, second, &owner2));
  ASSERT_TRUE(owner2.Send(R"({"event":"ping"})"));

  constexpr size_t kBurst = 20;
  std::vector<std::string> contents;
  for (size_t i = 0; i < kBurst; ++i) contents.push_back("to all " + std::to_string(i));
  std::vector<Acked> acks;
  ASSERT_NO_FATAL_FAILURE(SendBatch(ws[0], conv, contents, &acks));
  ASSERT_EQ(acks.size(), kBurst);

  auto check = [&](WsClient& c, const std::string& who) {
    std::vector<Json> got;
    ASSERT_NO_FATAL_FAILURE(CollectMessages(c, conv, kBurst, &got)) << who;
    for (size_t k = 0; k < kBurst; ++k) {
      EXPECT_EQ(got[k]["seq"].Int(), static_cast<int64_t>(k + 1)) << who;
      EXPECT_EQ(got[k]["content"].Str(), contents[k]) << who;
    }
  };
  for (size_t i = 1; i < kMembers; ++i) ASSERT_NO_FATAL_FAILURE(check(ws[i], "member " + std::to_string(i)));
  ASSERT_NO_FATAL_FAILURE(check(owner2, "the sender's second device"));
  // Nothing more, nothing twice: a short quiet window on a sample of members.
  for (size_t i : {size_t{1}, size_t{499}, kMembers - 1}) {
    for (const Json& extra : ws[i].Drain(std::chrono::milliseconds(100)))
      EXPECT_NE(extra["event"].Str(), std::optional<std::string>("message")) << "member " << i << ": " << extra;
  }
  EXPECT_TRUE(server_.CheckAlive()) << server_.error();

  // Receipts: above chat.receipts_max_members the sender hears "delivered to all" and
  // "read by all" (all_members), not 999 frames per message. Every member but the
  // last reads everything: nothing yet, the last member still has nothing.
  const std::string up_to = std::to_string(kBurst);
  auto receipt = [&](const char* status) {
    return std::string(R"({"event":"message_receipt","conversation_id":")") + conv + R"(","status":")" + status +
           R"(","up_to_seq":)" + up_to + "}";
  };
  for (size_t i = 1; i + 1 < kMembers; ++i) ASSERT_TRUE(ws[i].Send(receipt("READ"))) << "member " << i;
  // The server handles a connection's frames in order: once member 998's receipt has
  // been answered (a pong to a ping sent after it), every receipt is in.
  ASSERT_TRUE(ws[kMembers - 2].Send(R"({"event":"ping"})"));
  ASSERT_TRUE(ws[kMembers - 2].WaitForEvent("pong").IsObject());
  ExpectNoEvent({{&ws[0], "the sender"}, {&owner2, "the sender's second device"}}, "message_receipt",
                std::chrono::milliseconds(300), "before the last member acknowledged");
  ASSERT_TRUE(ws[kMembers - 1].Send(receipt("DELIVERED")));
  for (WsClient* c : {&ws[0], &owner2}) {
    Json r = c->WaitForEvent("message_receipt");
    ASSERT_TRUE(r.IsObject()) << "no aggregate DELIVERED receipt";
    EXPECT_EQ(r["status"].Str(), std::optional<std::string>("DELIVERED")) << r;
    EXPECT_EQ(r["up_to_seq"].Int(), static_cast<int64_t>(kBurst)) << r;
    EXPECT_EQ(r["all_members"].Bool(), std::optional<bool>(true)) << r;
    EXPECT_EQ(r["sender_id"].Str(), std::optional<std::string>(users[0].user_id)) << r;
  }
  ASSERT_TRUE(ws[kMembers - 1].Send(receipt("READ")));
  for (WsClient* c : {&ws[0], &owner2}) {
    Json r = c->WaitForEvent("message_receipt");
    ASSERT_TRUE(r.IsObject()) << "no aggregate READ receipt";
    EXPECT_EQ(r["status"].Str(), std::optional<std::string>("READ")) << r;
    EXPECT_EQ(r["up_to_seq"].Int(), static_cast<int64_t>(kBurst)) << r;
  }
  // Members who sent nothing are told nothing.
  ExpectNoEvent({{&ws[1], "member 1"}, {&ws[kMembers - 1], "the last member"}}, "message_receipt",
                std::chrono::milliseconds(100), "members without messages");
}

}  // namespace
}  // namespace sb::test
