// Receipts (docs/protocol.md: message_receipt both ways, Guarantee 5): cumulative,
// forward-only, one frame per moved status to every device of each original sender,
// READ covering DELIVERED, receipts an offline sender missed handed over on resume,
// and a user's devices acting as one recipient.
#include <cstdlib>

#include "test_support.h"

namespace sb::test {
namespace {

using client::MessageReceiptFrame;
using client::NowMs;

class ReceiptTest : public SharedServerTest {};

// What a routed message_receipt must say.
struct WantReceipt {
  std::string conversation_id;
  std::string recipient_id;  // who received or read
  std::string sender_id;     // whose messages are covered
  std::string status;        // DELIVERED | READ
  int64_t up_to_seq = 0;
  std::string message_id;  // the id of the up_to_seq message
};

void ExpectReceipt(const Json& r, const WantReceipt& w) {
  EXPECT_EQ(r["event"].Str(), "message_receipt"s) << r;
  EXPECT_EQ(r["conversation_id"].Str(), w.conversation_id) << r;
  EXPECT_EQ(r["recipient_id"].Str(), w.recipient_id) << "recipient_id: " << r;
  EXPECT_EQ(r["sender_id"].Str(), w.sender_id) << "sender_id: " << r;
  EXPECT_EQ(r["status"].Str(), w.status) << "status: " << r;
  EXPECT_EQ(r["up_to_seq"].Int(), w.up_to_seq) << "up_to_seq: " << r;
  EXPECT_EQ(r["message_id"].Str(), w.message_id) << "message_id must name the up_to message: " << r;
  ASSERT_TRUE(r["receipt_timestamp_ms"].IsInt()) << "receipt_timestamp_ms: " << r;
  EXPECT_LT(std::abs(*r["receipt_timestamp_ms"].Int() - NowMs()), 60'000)
      << "receipt_timestamp_ms is not a current Unix time in ms: " << r;
}

// The next message_receipt on `ws`, skipping other frames (live messages, ...).
void NextReceipt(WsClient& ws, std::string_view who, Json* out) {
  Json r = ws.WaitForEvent("message_receipt", kFrameTimeout);
  ASSERT_TRUE(r.valid()) << who << " got no message_receipt: " << r.error();
  *out = r;
}

// A sends 3 messages from one of two devices; B acknowledges them in different ways.
TEST_F(ReceiptTest, DirectReceiptsAreCumulativeForwardOnlyAndReachEverySenderDevice) {
  RestClient api = Api();
  TestUser a_phone, a_laptop, b;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rca", &a_phone, "phone"));
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api, a_phone, "laptop", &a_laptop));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rcb", &b));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a_phone, b, &conv));
  WsClient phone, laptop, bws;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a_phone, &phone));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a_laptop, &laptop));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, b, &bws));

  std::vector<std::string> ids;  // ids[seq - 1]
  for (int i = 1; i <= 3; ++i) {
    Json ack;
    ASSERT_NO_FATAL_FAILURE(SendAndAck(phone, conv, "receipt me " + std::to_string(i), &ack));
    ASSERT_EQ(ack["seq"].Int(), i) << ack;
    ids.push_back(ack["message_id"].StrOr(""));
  }
  std::vector<Json> got;
  ASSERT_NO_FATAL_FAILURE(CollectMessages(bws, conv, 3, &got));

  const std::vector<NamedWs> everyone = {
      {&phone, "A's phone"}, {&laptop, "A's laptop"}, {&bws, "B (the recipient)"}};
  const std::vector<NamedWs> a_devices = {everyone[0], everyone[1]};
  auto want = [&](std::string status, int64_t up_to) {
    return WantReceipt{conv, b.user_id, a_phone.user_id, std::move(status), up_to, ids[up_to - 1]};
  };

  // One cumulative DELIVERED for the three, on both of A's devices (not only the one
  // that sent them).
  ASSERT_TRUE(bws.Send(MessageReceiptFrame(ids[2], conv, "DELIVERED", 3)));
  for (const NamedWs& d : a_devices) {
    SCOPED_TRACE(d.who);
    Json r;
    ASSERT_NO_FATAL_FAILURE(NextReceipt(*d.ws, d.who, &r));
    ExpectReceipt(r, want("DELIVERED", 3));
  }
  ExpectNoEvent(everyone, "message_receipt", Millis(300), "after DELIVERED up_to 3 (one per device)");

  // READ of a prefix: READ up to 2 and nothing about DELIVERED, which did not move.
  ASSERT_TRUE(bws.Send(MessageReceiptFrame(ids[1], conv, "READ", 2)));
  for (const NamedWs& d : a_devices) {
    SCOPED_TRACE(d.who);
    Json r;
    ASSERT_NO_FATAL_FAILURE(NextReceipt(*d.ws, d.who, &r));
    ExpectReceipt(r, want("READ", 2));
  }
  ExpectNoEvent(everyone, "message_receipt", Millis(300), "after READ up_to 2 (one per device)");

  // Backward (DELIVERED 1 after DELIVERED 3) and repeated (READ 2 again): not routed.
  ASSERT_TRUE(bws.Send(MessageReceiptFrame(ids[0], conv, "DELIVERED", 1)));
  ASSERT_TRUE(bws.Send(MessageReceiptFrame(ids[1], conv, "READ", 2)));
  ExpectNoEvent(everyone, "message_receipt", Millis(300),
                "after a backward DELIVERED up_to 1 and a repeated READ up_to 2");

  // Beyond the last stored seq: clamped to 3, so it names message 3. It also serves as
  // a barrier: the receipts above were handled before it, so had either been routed,
  // it would have arrived first.
  ASSERT_TRUE(bws.Send(MessageReceiptFrame("", conv, "READ", 99)));
  for (const NamedWs& d : a_devices) {
    SCOPED_TRACE(d.who);
    Json r;
    ASSERT_NO_FATAL_FAILURE(NextReceipt(*d.ws, d.who, &r));
    ExpectReceipt(r, want("READ", 3));
  }
  ExpectNoEvent(everyone, "message_receipt", Millis(300), "after READ up_to 99 (clamped to 3)");

  // Someone outside the conversation cannot mark its messages.
  TestUser outsider;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rco", &outsider));
  WsClient ows;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, outsider, &ows));
  ASSERT_TRUE(ows.Send(MessageReceiptFrame(ids[2], conv, "READ", 3)));
  Json err = ows.WaitForEvent("error", kFrameTimeout);
  EXPECT_EQ(err["code"].Str(), "forbidden"s) << "a non-member's receipt: " << err;
  ExpectNoEvent(a_devices, "message_receipt", Millis(300), "after a non-member's READ");
}

// Group of 4: A and C sent, D reads; each sender gets its own frame, B none.
TEST_F(ReceiptTest, GroupReceiptGoesOncePerSenderOfTheCoveredMessages) {
  RestClient api = Api();
  TestUser a, b, c, d;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rga", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rgb", &b));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rgc", &c));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rgd", &d));
  client::HttpResponse cr =
      api.CreateConversation(a.access_token, "group", {b.user_id, c.user_id, d.user_id}, "four");
  ASSERT_EQ(cr.status, 201) << cr.Describe();
  const std::string conv = cr.json()["conversation_id"].StrOr("");
  ASSERT_FALSE(conv.empty()) << cr.Describe();

  WsClient aws, bws, cws, dws;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a, &aws));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, b, &bws));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, c, &cws));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, d, &dws));
  const std::vector<NamedWs> everyone = {{&aws, "A"}, {&bws, "B"}, {&cws, "C"}, {&dws, "D"}};

  // Seqs 1 (A), 2 (C), 3 (A): sent one after another so the seq order is known.
  std::vector<std::string> ids;
  const std::pair<WsClient*, const char*> senders[] = {{&aws, "A"}, {&cws, "C"}, {&aws, "A"}};
  for (auto [ws, who] : senders) {
    Json ack;
    ASSERT_NO_FATAL_FAILURE(SendAndAck(*ws, conv, std::string("from ") + who, &ack));
    ASSERT_EQ(ack["seq"].Int(), static_cast<int64_t>(ids.size() + 1)) << ack;
    ids.push_back(ack["message_id"].StrOr(""));
  }
  std::vector<Json> got;
  ASSERT_NO_FATAL_FAILURE(CollectMessages(dws, conv, 3, &got));

  // D reads all three without a DELIVERED first: READ moves both statuses, and only
  // READ is reported.
  ASSERT_TRUE(dws.Send(MessageReceiptFrame(ids[2], conv, "READ", 3)));
  {
    Json r;
    ASSERT_NO_FATAL_FAILURE(NextReceipt(aws, "A", &r));
    ExpectReceipt(r, {conv, d.user_id, a.user_id, "READ", 3, ids[2]});
    ASSERT_NO_FATAL_FAILURE(NextReceipt(cws, "C", &r));
    ExpectReceipt(r, {conv, d.user_id, c.user_id, "READ", 3, ids[2]});
  }
  ExpectNoEvent(everyone, "message_receipt", Millis(300),
                "after D's READ up_to 3 (one READ each to A and C; B sent nothing in range)");

  // B sends seq 4; D's DELIVERED up_to 4 covers only it beyond what D read: B alone is
  // told, with DELIVERED.
  Json ack4;
  ASSERT_NO_FATAL_FAILURE(SendAndAck(bws, conv, "from B", &ack4));
  ASSERT_EQ(ack4["seq"].Int(), 4) << ack4;
  got.clear();
  ASSERT_NO_FATAL_FAILURE(CollectMessages(dws, conv, 1, &got));
  ASSERT_TRUE(dws.Send(MessageReceiptFrame(ack4["message_id"].StrOr(""), conv, "DELIVERED", 4)));
  {
    Json r;
    ASSERT_NO_FATAL_FAILURE(NextReceipt(bws, "B", &r));
    ExpectReceipt(r, {conv, d.user_id, b.user_id, "DELIVERED", 4, ack4["message_id"].StrOr("")});
  }
  ExpectNoEvent(everyone, "message_receipt", Millis(300),
                "after D's DELIVERED up_to 4 (only B's message is newly covered)");
}

// A receipt for a sender with no device online is not lost: the sender's next resume
// hands it over before resume_done.
TEST_F(ReceiptTest, OfflineSenderGetsMissedReadOnResume) {
  RestClient api = Api();
  TestUser a, b;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "roa", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rob", &b));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &conv));
  WsClient bws;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, b, &bws));

  std::vector<std::string> ids;
  {
    WsClient aws;
    ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a, &aws));
    for (int i = 1; i <= 2; ++i) {
      Json ack;
      ASSERT_NO_FATAL_FAILURE(SendAndAck(aws, conv, "read me later " + std::to_string(i), &ack));
      ids.push_back(ack["message_id"].StrOr(""));
    }
    ASSERT_TRUE(aws.Close()) << "A's closing handshake";
  }
  std::vector<Json> got;
  ASSERT_NO_FATAL_FAILURE(CollectMessages(bws, conv, 2, &got));
  ASSERT_TRUE(bws.Send(MessageReceiptFrame(ids[1], conv, "READ", 2)));
  // Nothing acknowledges a receipt, so B replies on the same socket and waits for that
  // ack: the server handles one socket's frames in order and acks only what is stored,
  // so the READ is stored by then and A's resume must report it.
  Json reply;
  ASSERT_NO_FATAL_FAILURE(SendAndAck(bws, conv, "read it", &reply));
  ASSERT_EQ(reply["seq"].Int(), 3) << reply;

  WsClient aws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a, &aws));
  ResumeResult res;
  ASSERT_NO_FATAL_FAILURE(Resume(aws, std::nullopt, &res));
  std::vector<Json> receipts = FramesOf(res.frames, "message_receipt");
  ASSERT_EQ(receipts.size(), 1u)
      << "expected exactly B's READ (which covers DELIVERED) before resume_done; frames: "
      << ::testing::PrintToString(res.frames);
  ExpectReceipt(receipts[0], {conv, b.user_id, a.user_id, "READ", 2, ids[1]});
  // The device never acknowledged anything, so the replay carries the whole history.
  std::vector<Json> msgs = FramesOf(res.frames, "message");
  ASSERT_EQ(msgs.size(), 3u) << ::testing::PrintToString(res.frames);
  for (size_t i = 0; i < msgs.size(); ++i) EXPECT_EQ(msgs[i]["seq"].Int(), static_cast<int64_t>(i + 1));
  EXPECT_EQ(res.done["replayed"].Int(), 3) << res.done;
  ExpectNoEvent({{&aws, "A after resume"}}, "message_receipt", Millis(300),
                "after resume_done (the READ was already handed over)");
}

// Two devices per user: a send reaches the sender's other device live, and a READ from
// any of the recipient's devices is the recipient's READ; delivery cursors stay per
// device.
TEST_F(ReceiptTest, DevicesShareMessagesAndActAsOneRecipient) {
  RestClient api = Api();
  TestUser a1, a2, b1, b2;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rda", &a1, "a-one"));
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api, a1, "a-two", &a2));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rdb", &b1, "b-one"));
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api, b1, "b-two", &b2));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a1, b1, &conv));
  WsClient a1ws, a2ws, b1ws, b2ws;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a1, &a1ws));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a2, &a2ws));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, b1, &b1ws));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, b2, &b2ws));

  Json ack;
  ASSERT_NO_FATAL_FAILURE(SendAndAck(a1ws, conv, "from device one", &ack));
  const std::string id = ack["message_id"].StrOr("");
  const std::pair<WsClient*, const char*> receivers[] = {
      {&a2ws, "A's other device"}, {&b1ws, "B's device one"}, {&b2ws, "B's device two"}};
  for (auto [ws, who] : receivers) {
    SCOPED_TRACE(who);
    std::vector<Json> got;
    ASSERT_NO_FATAL_FAILURE(CollectMessages(*ws, conv, 1, &got));
    EXPECT_EQ(got[0]["message_id"].Str(), id) << got[0];
    EXPECT_EQ(got[0]["sender_id"].Str(), a1.user_id) << got[0];
    EXPECT_EQ(got[0]["content"].Str(), "from device one"s) << got[0];
  }

  ASSERT_TRUE(b2ws.Send(MessageReceiptFrame(id, conv, "READ", 1)));
  for (auto [ws, who] : {std::pair{&a1ws, "A's device one"}, std::pair{&a2ws, "A's device two"}}) {
    SCOPED_TRACE(who);
    Json r;
    ASSERT_NO_FATAL_FAILURE(NextReceipt(*ws, who, &r));
    ExpectReceipt(r, {conv, b1.user_id, a1.user_id, "READ", 1, id});
  }
  // B's other device acknowledging the same message moves nothing for the user.
  ASSERT_TRUE(b1ws.Send(MessageReceiptFrame(id, conv, "DELIVERED", 1)));
  ExpectNoEvent({{&a1ws, "A's device one"}, {&a2ws, "A's device two"}}, "message_receipt",
                Millis(300), "after B's second device sent DELIVERED for what B already read");

  // Delivery is still tracked per device: device two acknowledged (READ), so a new
  // connection of it replays nothing; a device that never acknowledged gets it again.
  b2ws.Close();
  WsClient b2again;
  ResumeResult res2;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, b2, &b2again));
  ASSERT_NO_FATAL_FAILURE(Resume(b2again, std::nullopt, &res2));
  EXPECT_EQ(FramesOf(res2.frames, "message").size(), 0u)
      << "device two acknowledged seq 1 with its READ: " << ::testing::PrintToString(res2.frames);
  EXPECT_EQ(res2.done["replayed"].Int(), 0) << res2.done;

  TestUser b3;
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api, b1, "b-three", &b3));
  WsClient b3ws;
  ResumeResult res3;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, b3, &b3ws));
  ASSERT_NO_FATAL_FAILURE(Resume(b3ws, std::nullopt, &res3));
  std::vector<Json> replayed = FramesOf(res3.frames, "message");
  ASSERT_EQ(replayed.size(), 1u) << "a device that never acknowledged gets the message: "
                                 << ::testing::PrintToString(res3.frames);
  EXPECT_EQ(replayed[0]["message_id"].Str(), id) << replayed[0];
  EXPECT_EQ(res3.done["replayed"].Int(), 1) << res3.done;
}

}  // namespace
}  // namespace sb::test
