// Restarts, crashes and draining (docs/protocol.md: Guarantees 1, 2 and 4; close
// code 1001). Each test owns its server, since it stops or kills it.
#include <signal.h>

#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "test_support.h"

namespace sb::test {
namespace {

using client::OutgoingMessage;
using client::SendMessageFrame;
using client::WsFrame;

class DurabilityTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.Start()) << server_.error(); }
  void TearDown() override {
    if (HasFailure()) {
      std::cout << "---- server log tail (" << server_.log_path() << ") ----\n"
                << server_.LogTail(40) << "----\n";
    }
  }
  RestClient Api() const { return RestClient(server_.host(), server_.port()); }

  ServerProcess server_;
};

TEST_F(DurabilityTest, RestartKeepsHistoryAndSeqContinues) {
  TestUser a, b;
  std::string conv;
  std::vector<Json> before;
  {
    RestClient api = Api();
    ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rsa", &a));
    ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rsb", &b));
    ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &conv));
    WsClient ws;
    ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a, &ws));
    std::vector<std::string> contents;
    for (int i = 0; i < 10; ++i) contents.push_back("before restart " + std::to_string(i));
    std::vector<Acked> acks;
    ASSERT_NO_FATAL_FAILURE(SendBatch(ws, conv, contents, &acks));
    ASSERT_NO_FATAL_FAILURE(FetchAllHistory(api, b.access_token, conv, &before));
    ASSERT_EQ(before.size(), 10u);
    ws.Close();
  }

  std::optional<int> code = server_.Stop();
  ASSERT_EQ(code, 0) << "SIGTERM must end the server cleanly: " << server_.error();
  ASSERT_TRUE(server_.Restart()) << server_.error();

  RestClient api = Api();
  // Log in again: whether tokens outlive a restart is not part of the contract.
  TestUser a2, b2;
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api, a, "after-restart", &a2));
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api, b, "after-restart", &b2));
  std::vector<Json> after;
  ASSERT_NO_FATAL_FAILURE(FetchAllHistory(api, b2.access_token, conv, &after));
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(after[i].Dump(), before[i].Dump()) << "message " << i << " changed by the restart";
  }
  client::HttpResponse c = api.GetConversation(a2.access_token, conv);
  EXPECT_EQ(c.json()["last_seq"].Int(), 10) << c.Describe();

  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a2, &ws));
  Json ack;
  ASSERT_NO_FATAL_FAILURE(SendAndAck(ws, conv, "after restart", &ack));
  EXPECT_EQ(ack["seq"].Int(), 11) << "seq continues without a gap after a restart: " << ack;
}

TEST_F(DurabilityTest, KillDashNineRightAfterAcksLosesNothing) {
  constexpr int kConnections = 4;
  constexpr int kPerConnection = 50;  // under the per-connection burst of 100
  RestClient api = Api();
  TestUser a, b;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "k9a", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "k9b", &b));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &conv));
  std::vector<WsClient> conns(kConnections);
  for (int c = 0; c < kConnections; ++c) {
    TestUser dev;
    ASSERT_NO_FATAL_FAILURE(LoginDevice(api, a, "k9-dev-" + std::to_string(c), &dev));
    ASSERT_NO_FATAL_FAILURE(ConnectWs(api, dev, &conns[c]));
  }

  // Everything in flight at once, then collect acks as they come.
  std::map<std::string, std::string> content_of;  // client_msg_id -> content
  std::set<std::string> pending;
  for (int i = 0; i < kPerConnection; ++i) {
    for (int c = 0; c < kConnections; ++c) {
      OutgoingMessage m;
      m.client_msg_id = client::NewClientMsgId();
      m.conversation_id = conv;
      m.content = "crash test " + std::to_string(c) + "/" + std::to_string(i);
      content_of[m.client_msg_id] = m.content;
      pending.insert(m.client_msg_id);
      ASSERT_TRUE(conns[c].Send(SendMessageFrame(m))) << conns[c].error();
    }
  }
  std::map<std::string, Json> acked;  // client_msg_id -> ack
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!pending.empty()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline)
        << pending.size() << " sends not acknowledged within 30 s";
    bool progressed = false;
    for (auto& ws : conns) {
      WsFrame f = ws.RecvFrame(Millis(0));
      if (f.kind == WsFrame::Kind::kTimeout) continue;
      ASSERT_TRUE(f.is_text()) << f.Describe();
      progressed = true;
      Json j = f.json();
      ASSERT_NE(j["event"].Str(), "error"s) << j;
      if (j["event"].Str() != "message_ack") continue;
      std::string id = j["client_msg_id"].StrOr("");
      if (pending.erase(id) == 1) acked.emplace(id, j);
    }
    // Polling keeps the kill as close to the last ack as we can observe it.
    if (!progressed) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  server_.Kill9();  // the instant the last ack is in

  ASSERT_TRUE(server_.Restart()) << server_.error();
  RestClient api2 = Api();
  TestUser reader;
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api2, b, "reader", &reader));
  std::vector<Json> history;
  ASSERT_NO_FATAL_FAILURE(FetchAllHistory(api2, reader.access_token, conv, &history));

  std::map<std::string, int> copies;
  for (size_t i = 0; i < history.size(); ++i) {
    const Json& m = history[i];
    EXPECT_EQ(m["seq"].Int(), static_cast<int64_t>(i + 1)) << "seq must be 1..N without gaps";
    ++copies[m["client_msg_id"].StrOr("")];
  }
  for (const auto& [id, ack] : acked) {
    auto it = copies.find(id);
    ASSERT_NE(it, copies.end()) << "acknowledged message lost by kill -9: " << ack;
    EXPECT_EQ(it->second, 1) << "stored " << it->second << " times: " << ack;
  }
  for (const Json& m : history) {
    std::string id = m["client_msg_id"].StrOr("");
    auto it = acked.find(id);
    if (it == acked.end()) continue;
    EXPECT_EQ(m["seq"].Int(), it->second["seq"].Int()) << "stored seq differs from the ack";
    EXPECT_EQ(m["message_id"].Str(), it->second["message_id"].Str()) << m;
    EXPECT_EQ(m["content"].Str(), content_of[id]) << m;
  }
  EXPECT_EQ(history.size(), acked.size()) << "every message was acknowledged, so N is exact";
}

TEST_F(DurabilityTest, SigtermClosesClientsWith1001AndExits0) {
  RestClient api = Api();
  TestUser u;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "drain", &u));
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, u, &ws));

  ASSERT_TRUE(server_.Signal(SIGTERM));
  WsFrame f;
  for (int i = 0; i < 100; ++i) {
    f = ws.RecvFrame(std::chrono::seconds(10));
    if (!f.is_text()) break;
  }
  EXPECT_EQ(f.kind, WsFrame::Kind::kClose) << "a draining server closes sockets: " << f.Describe();
  EXPECT_EQ(f.close_code, 1001) << f.Describe();
  std::optional<int> code = server_.WaitExit(std::chrono::seconds(15));
  EXPECT_EQ(code, 0) << "exit status after SIGTERM (nullopt: still running after 15 s)";
  if (!code) server_.Kill9();
}

}  // namespace
}  // namespace sb::test
