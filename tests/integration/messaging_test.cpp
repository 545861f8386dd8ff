// Sending, acknowledging, fan-out, idempotent retries and membership
// (docs/protocol.md: send_message, message_ack, message, Guarantees 2 and 4).
#include <cstdlib>

#include "test_support.h"

namespace sb::test {
namespace {

using client::HttpResponse;
using client::NowMs;
using client::OutgoingMessage;
using client::SendMessageFrame;

class MessagingTest : public SharedServerTest {};

TEST_F(MessagingTest, AckToSenderMessageToOtherMembersAndOtherDevices) {
  RestClient api = Api();
  TestUser a_phone, a_laptop, b;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "fana", &a_phone, "phone"));
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api, a_phone, "laptop", &a_laptop));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "fanb", &b));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a_phone, b, &conv));

  WsClient phone, laptop, bws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a_phone, &phone));
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a_laptop, &laptop));
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, b, &bws));

  const std::vector<std::string> contents = {"first", "second, with \"quotes\"", "third ✓"};
  std::vector<Json> acks;
  std::vector<int64_t> sent_ms;
  for (size_t i = 0; i < contents.size(); ++i) {
    OutgoingMessage m;
    m.client_msg_id = client::NewClientMsgId();
    m.conversation_id = conv;
    m.content = contents[i];
    m.sent_timestamp_ms = NowMs();
    sent_ms.push_back(*m.sent_timestamp_ms);
    ASSERT_TRUE(phone.Send(SendMessageFrame(m))) << phone.error();
    Json ack = AwaitReply(phone, m.client_msg_id);
    ASSERT_EQ(ack["event"].Str(), "message_ack"s) << ack;
    EXPECT_EQ(ack["client_msg_id"].Str(), m.client_msg_id) << ack;
    EXPECT_EQ(ack["conversation_id"].Str(), conv) << ack;
    EXPECT_EQ(ack["seq"].Int(), static_cast<int64_t>(i + 1)) << "seq is 1, 2, 3, …: " << ack;
    EXPECT_EQ(ack["duplicate"].Bool(), false) << ack;
    EXPECT_EQ(ack["message_id"].StrOr("").rfind("srv_msg_", 0), 0u)
        << "message ids are srv_msg_…: " << ack;
    ASSERT_TRUE(ack["server_timestamp_ms"].IsInt()) << ack;
    EXPECT_LT(std::abs(*ack["server_timestamp_ms"].Int() - NowMs()), 60'000) << ack;
    acks.push_back(ack);
  }

  // The other member and the sender's other device get every message, in seq order.
  const std::pair<WsClient*, const char*> receivers[] = {{&bws, "other member"},
                                                         {&laptop, "sender's other device"}};
  for (auto [ws, who] : receivers) {
    SCOPED_TRACE(who);
    std::vector<Json> got;
    ASSERT_NO_FATAL_FAILURE(CollectMessages(*ws, conv, contents.size(), &got));
    for (size_t i = 0; i < got.size(); ++i) {
      const Json& m = got[i];
      EXPECT_EQ(m["message_id"].Str(), acks[i]["message_id"].Str()) << m;
      EXPECT_EQ(m["conversation_id"].Str(), conv) << m;
      EXPECT_EQ(m["seq"].Int(), static_cast<int64_t>(i + 1)) << m;
      EXPECT_EQ(m["sender_id"].Str(), a_phone.user_id) << m;
      EXPECT_EQ(m["content"].Str(), contents[i]) << m;
      EXPECT_EQ(m["content_type"].Str(), "text"s) << m;
      EXPECT_EQ(m["client_msg_id"].Str(), acks[i]["client_msg_id"].Str()) << m;
      EXPECT_EQ(m["sent_timestamp_ms"].Int(), sent_ms[i]) << m;
      EXPECT_TRUE(m["server_timestamp_ms"].IsInt()) << m;
    }
  }

  // The sending device has its acks and must not get its own messages back.
  for (const Json& f : phone.Drain(kQuietWindow)) {
    EXPECT_NE(f["event"].Str(), "message"s) << "the sending device got its own message: " << f;
  }
}

TEST_F(MessagingTest, RetriedClientMsgIdIsStoredOnceAndConflictsOnNewContent) {
  RestClient api = Api();
  TestUser a, b;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "dupa", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "dupb", &b));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &conv));
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a, &ws));

  OutgoingMessage m;
  m.client_msg_id = client::NewClientMsgId();
  m.conversation_id = conv;
  m.content = "exactly once, please";
  m.sent_timestamp_ms = NowMs();
  const std::string frame = SendMessageFrame(m);

  ASSERT_TRUE(ws.Send(frame));
  Json first = AwaitReply(ws, m.client_msg_id);
  ASSERT_EQ(first["event"].Str(), "message_ack"s) << first;
  EXPECT_EQ(first["duplicate"].Bool(), false) << first;

  ASSERT_TRUE(ws.Send(frame));
  Json retry = AwaitReply(ws, m.client_msg_id);
  ASSERT_EQ(retry["event"].Str(), "message_ack"s) << "a retry is acknowledged again: " << retry;
  EXPECT_EQ(retry["message_id"].Str(), first["message_id"].Str()) << retry;
  EXPECT_EQ(retry["seq"].Int(), first["seq"].Int()) << retry;
  EXPECT_EQ(retry["duplicate"].Bool(), true) << retry;

  // A retry after a reconnect (the usual case: the ack was lost with the connection).
  ws.Close();
  WsClient ws2;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a, &ws2));
  ASSERT_TRUE(ws2.Send(frame));
  Json retry2 = AwaitReply(ws2, m.client_msg_id);
  ASSERT_EQ(retry2["event"].Str(), "message_ack"s) << retry2;
  EXPECT_EQ(retry2["message_id"].Str(), first["message_id"].Str()) << retry2;
  EXPECT_EQ(retry2["seq"].Int(), first["seq"].Int()) << retry2;
  EXPECT_EQ(retry2["duplicate"].Bool(), true) << retry2;

  // Same client_msg_id, different content: not a retry.
  OutgoingMessage changed = m;
  changed.content = "something else entirely";
  ASSERT_TRUE(ws2.Send(SendMessageFrame(changed)));
  Json conflict = AwaitReply(ws2, m.client_msg_id);
  EXPECT_EQ(conflict["event"].Str(), "error"s) << conflict;
  EXPECT_EQ(conflict["code"].Str(), "conflict"s) << conflict;

  std::vector<Json> history;
  ASSERT_NO_FATAL_FAILURE(FetchAllHistory(api, b.access_token, conv, &history));
  ASSERT_EQ(history.size(), 1u) << "one stored copy per client_msg_id";
  EXPECT_EQ(history[0]["client_msg_id"].Str(), m.client_msg_id) << history[0];
  EXPECT_EQ(history[0]["message_id"].Str(), first["message_id"].Str()) << history[0];
  EXPECT_EQ(history[0]["content"].Str(), "exactly once, please"s) << history[0];
}

TEST_F(MessagingTest, NonMemberSendIsForbiddenAndNothingIsStored) {
  RestClient api = Api();
  TestUser a, b, outsider;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "nma", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "nmb", &b));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "nmo", &outsider));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &conv));
  WsClient bws, ows;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, b, &bws));
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, outsider, &ows));

  OutgoingMessage m;
  m.client_msg_id = client::NewClientMsgId();
  m.conversation_id = conv;
  m.content = "let me in";
  ASSERT_TRUE(ows.Send(SendMessageFrame(m)));
  Json err = AwaitReply(ows, m.client_msg_id);
  EXPECT_EQ(err["event"].Str(), "error"s) << err;
  EXPECT_EQ(err["code"].Str(), "forbidden"s) << err;
  EXPECT_EQ(err["client_msg_id"].Str(), m.client_msg_id) << "the error names the message: " << err;

  for (const Json& f : bws.Drain(kQuietWindow)) {
    EXPECT_NE(f["event"].Str(), "message"s) << "a member got the outsider's message: " << f;
  }
  HttpResponse h = api.History(a.access_token, conv, {.after_seq = 0});
  ASSERT_EQ(h.status, 200) << h.Describe();
  EXPECT_EQ(h.json()["messages"].Size(), 0u) << "nothing may be stored: " << h.Describe();
  HttpResponse c = api.GetConversation(a.access_token, conv);
  EXPECT_EQ(c.json()["last_seq"].Int(), 0) << c.Describe();

  HttpResponse oh = api.History(outsider.access_token, conv, {.after_seq = 0});
  EXPECT_EQ(oh.status, 404) << "a non-member's history request: " << oh.Describe();
  EXPECT_EQ(oh.ErrorCode(), "not_found") << oh.Describe();
}

}  // namespace
}  // namespace sb::test
