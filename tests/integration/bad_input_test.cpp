// Bytes a client should not send (docs/protocol.md: Transport, Close codes, Limits).
// The answer is an error frame or a close code, never a crash, and never anything that
// disturbs other clients: after each case a separate well-behaved client must still
// get its messages through.
#include "test_support.h"

namespace sb::test {
namespace {

using client::OutgoingMessage;
using client::SendMessageFrame;
using client::WsFrame;

class BadInputTest : public SharedServerTest {
 protected:
  void SetUp() override {
    SharedServerTest::SetUp();
    if (HasFatalFailure()) return;
    RestClient api = Api();
    ASSERT_NO_FATAL_FAILURE(CreateUser(api, "bada", &a_));
    ASSERT_NO_FATAL_FAILURE(CreateUser(api, "badb", &b_));
    ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a_, b_, &conv_));
    ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a_, &ws_));
  }

  // A fresh pair of users on fresh connections sends and receives one message.
  void ExpectOthersUnaffected() {
    RestClient api = Api();
    TestUser x, y;
    ASSERT_NO_FATAL_FAILURE(CreateUser(api, "byx", &x));
    ASSERT_NO_FATAL_FAILURE(CreateUser(api, "byy", &y));
    std::string conv;
    ASSERT_NO_FATAL_FAILURE(CreateDirect(api, x, y, &conv));
    WsClient xw, yw;
    ASSERT_NO_FATAL_FAILURE(ConnectWs(api, x, &xw));
    ASSERT_NO_FATAL_FAILURE(ConnectWs(api, y, &yw));
    Json ack;
    ASSERT_NO_FATAL_FAILURE(SendAndAck(xw, conv, "still here?", &ack));
    std::vector<Json> got;
    ASSERT_NO_FATAL_FAILURE(CollectMessages(yw, conv, 1, &got));
    EXPECT_EQ(got[0]["content"].Str(), "still here?"s);
  }

  // Sends `frame` on the test's connection (reconnecting first if an earlier case
  // closed it) and expects an error frame with `code`.
  void ExpectErrorFrame(const std::string& frame, std::string_view code) {
    SCOPED_TRACE("frame: " + frame.substr(0, 300));
    if (!ws_.is_open()) {
      ws_ = WsClient();
      ASSERT_NO_FATAL_FAILURE(ConnectWs(Api(), a_, &ws_));
    }
    ASSERT_TRUE(ws_.Send(frame)) << ws_.error();
    Json err = ws_.WaitForEvent("error", kFrameTimeout);
    EXPECT_EQ(err["code"].Str(), code) << err;
    EXPECT_TRUE(err["message"].IsString()) << err;
  }

  // Expects the server to close the test's connection with `code`.
  void ExpectClose(uint16_t code) {
    WsFrame f;
    for (int i = 0; i < 50; ++i) {
      f = ws_.RecvFrame(kFrameTimeout);
      if (!f.is_text()) break;  // error frames before the close are allowed
    }
    ASSERT_EQ(f.kind, WsFrame::Kind::kClose)
        << "expected close " << code << ", got " << f.Describe();
    EXPECT_EQ(f.close_code, code) << f.Describe();
  }

  std::string Send(std::string_view content_json_fields) {
    return R"({"event":"send_message","client_msg_id":")" + client::NewClientMsgId() +
           R"(","conversation_id":")" + conv_ + R"(",)" + std::string(content_json_fields) + "}";
  }

  TestUser a_, b_;
  std::string conv_;
  WsClient ws_;
};

TEST_F(BadInputTest, MalformedJsonIsBadRequest) {
  for (const std::string frame : {"{not json", R"({"event":"send_message",)", "[1,2,3]",
                                  R"("just a string")", "", R"({"no_event_field":true})"}) {
    ExpectErrorFrame(frame, "bad_request");
  }
  ExpectOthersUnaffected();
}

TEST_F(BadInputTest, MissingFieldsAreBadRequest) {
  const std::string id = client::NewClientMsgId();
  ExpectErrorFrame(R"({"event":"send_message","conversation_id":")" + conv_ +
                       R"(","content":"x","content_type":"text"})",
                   "bad_request");  // no client_msg_id
  ExpectErrorFrame(R"({"event":"send_message","client_msg_id":")" + id +
                       R"(","content":"x","content_type":"text"})",
                   "bad_request");                                    // no conversation_id
  ExpectErrorFrame(Send(R"("content_type":"text")"), "bad_request");  // no content
  ExpectErrorFrame(
      R"({"event":"message_receipt","conversation_id":")" + conv_ + R"(","status":"DELIVERED"})",
      "bad_request");  // no message_id
  ExpectOthersUnaffected();
}

TEST_F(BadInputTest, WrongTypesAreBadRequest) {
  ExpectErrorFrame(Send(R"("content":12345,"content_type":"text")"), "bad_request");
  ExpectErrorFrame(Send(R"("content":{"text":"hi"},"content_type":"text")"), "bad_request");
  ExpectErrorFrame(Send(R"("content":"hi","content_type":"hologram")"), "bad_request");
  ExpectErrorFrame(Send(R"("content":"hi","content_type":"text","sent_timestamp_ms":"soon")"),
                   "bad_request");
  ExpectErrorFrame(R"({"event":"send_message","client_msg_id":42,"conversation_id":")" + conv_ +
                       R"(","content":"hi","content_type":"text"})",
                   "bad_request");
  ExpectErrorFrame(R"({"event":"send_message","client_msg_id":"x1","conversation_id":7,)"
                   R"("content":"hi","content_type":"text"})",
                   "bad_request");
  ExpectErrorFrame(R"({"event":["send_message"]})", "bad_request");
  ExpectOthersUnaffected();
}

TEST_F(BadInputTest, InvalidClientMsgIdIsBadRequest) {
  // client_msg_id: 1–64 printable ASCII characters.
  for (const std::string& id : {std::string(), std::string(65, 'a'), std::string("caf\xc3\xa9")}) {
    OutgoingMessage m;
    m.client_msg_id = id;
    m.conversation_id = conv_;
    m.content = "hi";
    ExpectErrorFrame(SendMessageFrame(m), "bad_request");
  }
  // 64 characters is still fine.
  Json ack;
  ASSERT_NO_FATAL_FAILURE(SendAndAck(ws_, conv_, "long id", &ack, std::string(64, 'k')));
}

TEST_F(BadInputTest, UnknownEventIsAnError) {
  ExpectErrorFrame(R"({"event":"teleport","to":"mars"})", "bad_request");
  ExpectOthersUnaffected();
}

TEST_F(BadInputTest, ContentOver16KiBIsTooLarge) {
  OutgoingMessage m;
  m.client_msg_id = client::NewClientMsgId();
  m.conversation_id = conv_;
  m.content = std::string(16 * 1024 + 1, 'x');
  ASSERT_TRUE(ws_.Send(SendMessageFrame(m)));
  Json err = AwaitReply(ws_, m.client_msg_id);
  EXPECT_EQ(err["event"].Str(), "error"s) << err;
  EXPECT_EQ(err["code"].Str(), "too_large"s) << err;

  // Exactly 16 KiB is within the limit.
  Json ack;
  ASSERT_NO_FATAL_FAILURE(SendAndAck(ws_, conv_, std::string(16 * 1024, 'y'), &ack));
  std::vector<Json> history;
  ASSERT_NO_FATAL_FAILURE(FetchAllHistory(Api(), a_.access_token, conv_, &history));
  ASSERT_EQ(history.size(), 1u) << "only the 16 KiB message is stored";
  EXPECT_EQ(history[0]["content"].Str()->size(), 16u * 1024);
  ExpectOthersUnaffected();
}

TEST_F(BadInputTest, FrameOver64KiBClosesWith1009) {
  OutgoingMessage m;
  m.client_msg_id = client::NewClientMsgId();
  m.conversation_id = conv_;
  m.content = std::string(70'000, 'z');
  // The write may fail halfway if the server closes on the frame header: that is fine.
  (void)ws_.SendRaw({.opcode = 0x1, .payload = SendMessageFrame(m)});
  ASSERT_NO_FATAL_FAILURE(ExpectClose(1009));
  ExpectOthersUnaffected();
}

TEST_F(BadInputTest, InvalidUtf8TextFrameClosesWith1007) {
  // A lone continuation byte, an overlong '/', and a truncated 3-byte sequence.
  const std::string bad = "bad \x80 \xc0\xaf \xe2\x82";
  std::string frame = R"({"event":"send_message","client_msg_id":"utf8-1","conversation_id":")" +
                      conv_ + R"(","content":")" + bad + R"(","content_type":"text"})";
  ASSERT_TRUE(ws_.SendRaw({.opcode = 0x1, .payload = frame})) << ws_.error();
  ASSERT_NO_FATAL_FAILURE(ExpectClose(1007));

  std::vector<Json> history;
  ASSERT_NO_FATAL_FAILURE(FetchAllHistory(Api(), a_.access_token, conv_, &history));
  EXPECT_EQ(history.size(), 0u) << "the invalid frame must not be stored";
  ExpectOthersUnaffected();
}

TEST_F(BadInputTest, SenderIdOfAnotherUserIsForbidden) {
  OutgoingMessage m;
  m.client_msg_id = client::NewClientMsgId();
  m.conversation_id = conv_;
  m.content = "I am b, honestly";
  m.sender_id = b_.user_id;
  ASSERT_TRUE(ws_.Send(SendMessageFrame(m)));
  Json err = AwaitReply(ws_, m.client_msg_id);
  EXPECT_EQ(err["event"].Str(), "error"s) << err;
  EXPECT_EQ(err["code"].Str(), "forbidden"s) << err;

  // sender_id equal to the token's user is allowed.
  OutgoingMessage own = m;
  own.client_msg_id = client::NewClientMsgId();
  own.sender_id = a_.user_id;
  own.content = "I am a";
  ASSERT_TRUE(ws_.Send(SendMessageFrame(own)));
  Json ack = AwaitReply(ws_, own.client_msg_id);
  EXPECT_EQ(ack["event"].Str(), "message_ack"s) << ack;

  std::vector<Json> history;
  ASSERT_NO_FATAL_FAILURE(FetchAllHistory(Api(), a_.access_token, conv_, &history));
  ASSERT_EQ(history.size(), 1u) << "only the honest message is stored";
  EXPECT_EQ(history[0]["sender_id"].Str(), a_.user_id) << history[0];
  EXPECT_EQ(history[0]["content"].Str(), "I am a"s) << history[0];
  ExpectOthersUnaffected();
}

}  // namespace
}  // namespace sb::test
