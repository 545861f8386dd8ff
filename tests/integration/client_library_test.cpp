// The client library itself: every other integration test trusts these pieces, so a
// bug here would show up as a misleading server failure.
#include <chrono>
#include <map>
#include <thread>

#include "test_support.h"

namespace sb::test {
namespace {

using client::WsFrame;

TEST(ClientJsonTest, ReadsTypedValuesAndReportsMissingOnes) {
  Json j =
      Json::Parse(R"({"s":"x\u00e9","i":-42,"u":18446744073709551615,"d":1.5,"b":true,"n":null,)"
                  R"("a":[1,"two",{"three":3}],"o":{"k":"v"},"dup":1,"dup":2})");
  ASSERT_TRUE(j.valid()) << j.error();
  EXPECT_EQ(j["s"].Str(), "x\xc3\xa9"s);
  EXPECT_EQ(j["i"].Int(), -42);
  EXPECT_EQ(j["u"].Int(), std::nullopt) << "does not fit int64";
  EXPECT_EQ(j["u"].Uint(), 18446744073709551615ull);
  EXPECT_EQ(j["d"].Int(), std::nullopt) << "a float is not an integer";
  EXPECT_EQ(j["d"].Double(), 1.5);
  EXPECT_EQ(j["b"].Bool(), true);
  EXPECT_TRUE(j["n"].IsNull());
  EXPECT_TRUE(j.Has("n"));
  EXPECT_EQ(j["a"].Size(), 3u);
  EXPECT_EQ(j["a"][1].Str(), "two"s);
  EXPECT_EQ(j["a"][2]["three"].Int(), 3);
  EXPECT_EQ(j["a"].Items().size(), 3u);
  EXPECT_EQ(j["o"].Keys(), std::vector<std::string>{"k"});
  EXPECT_EQ(j["dup"].Int(), 1) << "first duplicate key wins";

  Json missing = j["a"][7]["x"];
  EXPECT_FALSE(missing.valid());
  EXPECT_EQ(missing.Path(), "$.a[7].x");
  EXPECT_EQ(missing.Dump(), "<missing: $.a[7].x>");
  EXPECT_EQ(j["s"].Int(), std::nullopt) << "wrong type reads as nullopt";
  EXPECT_EQ(j["i"].Str(), std::nullopt);
  EXPECT_EQ(j["o"]["k"].StrOr("fallback"), "v");
  EXPECT_EQ(j["o"]["nope"].IntOr(7), 7);

  // Dump is compact JSON that parses back to the same value.
  Json again = Json::Parse(j["a"].Dump());
  EXPECT_EQ(again.Dump(), j["a"].Dump());
  EXPECT_EQ(j["a"].Dump(), R"([1,"two",{"three":3}])");
}

TEST(ClientJsonTest, InvalidInputIsAValueNotACrash) {
  for (const char* text : {"", "{", "{\"a\":}", "[1,2", "nul", "\"\xff\""}) {
    Json j = Json::Parse(text);
    EXPECT_FALSE(j.valid()) << text;
    EXPECT_FALSE(j.error().empty()) << text;
    EXPECT_FALSE(j["event"].valid());
    EXPECT_EQ(j["event"].Str(), std::nullopt);
  }
  Json none = Json::None("timeout after 5 ms");
  EXPECT_FALSE(none.valid());
  EXPECT_EQ(none.Dump(), "<timeout after 5 ms>");
  EXPECT_EQ(none["seq"].Dump(), "<timeout after 5 ms>") << "lookups keep the reason";
}

TEST(ClientFramesTest, BuildsTheContractsFrames) {
  client::OutgoingMessage m;
  m.client_msg_id = "msg_8a2b3c4d";
  m.conversation_id = "conv_1";
  m.content = "Let us \"finalize\" the plan.\n";
  m.sent_timestamp_ms = 1780416350000;
  m.reply_to = "srv_msg_9";
  Json s = Json::Parse(client::SendMessageFrame(m));
  EXPECT_EQ(s["event"].Str(), "send_message"s);
  EXPECT_EQ(s["client_msg_id"].Str(), "msg_8a2b3c4d"s);
  EXPECT_EQ(s["conversation_id"].Str(), "conv_1"s);
  EXPECT_EQ(s["content"].Str(), m.content);
  EXPECT_EQ(s["content_type"].Str(), "text"s);
  EXPECT_EQ(s["sent_timestamp_ms"].Int(), 1780416350000);
  EXPECT_EQ(s["reply_to"].Str(), "srv_msg_9"s);
  EXPECT_FALSE(s.Has("sender_id"));

  Json r = Json::Parse(client::MessageReceiptFrame("srv_msg_1", "conv_1", "READ", 42, 7));
  EXPECT_EQ(r["event"].Str(), "message_receipt"s);
  EXPECT_EQ(r["message_id"].Str(), "srv_msg_1"s);
  EXPECT_EQ(r["status"].Str(), "READ"s);
  EXPECT_EQ(r["up_to_seq"].Int(), 42);
  EXPECT_EQ(r["receipt_timestamp_ms"].Int(), 7);
  EXPECT_FALSE(Json::Parse(client::MessageReceiptFrame("m", "c", "DELIVERED")).Has("up_to_seq"));

  Json resume = Json::Parse(client::ResumeFrame(std::map<std::string, int64_t>{{"conv_1", 41}}));
  EXPECT_EQ(resume["event"].Str(), "resume"s);
  EXPECT_EQ(resume["cursors"]["conv_1"].Int(), 41);
  EXPECT_TRUE(
      Json::Parse(client::ResumeFrame(std::map<std::string, int64_t>{}))["cursors"].IsObject());
  EXPECT_FALSE(Json::Parse(client::ResumeFrame(std::nullopt)).Has("cursors"));
  EXPECT_EQ(Json::Parse(client::PingFrame())["event"].Str(), "ping"s);

  EXPECT_NE(client::NewClientMsgId(), client::NewClientMsgId());
  EXPECT_EQ(client::UrlEncode("a b&c=d/é~"), "a%20b%26c%3Dd%2F%C3%A9~");
}

class ClientWsTest : public SharedServerTest {};

TEST_F(ClientWsTest, RecvTimesOutAndCloseEndsTheStream) {
  RestClient api = Api();
  TestUser u;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "cli", &u));
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, u, &ws));
  EXPECT_TRUE(ws.is_open());

  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(ws.Recv(Millis(200)), std::nullopt);
  auto waited_ms =
      std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(waited_ms, 190);
  EXPECT_LT(waited_ms, 2000);
  EXPECT_EQ(ws.RecvFrame(Millis(0)).kind, WsFrame::Kind::kTimeout);

  // A frame that arrives while nobody is reading is queued, not lost.
  ASSERT_TRUE(ws.Send(client::PingFrame()));
  std::this_thread::sleep_for(Millis(100));
  EXPECT_TRUE(ws.WaitForEvent("pong", kFrameTimeout).valid());

  EXPECT_TRUE(ws.Close(1000)) << ws.error();
  EXPECT_FALSE(ws.is_open());
  EXPECT_FALSE(ws.Send(client::PingFrame())) << "sending after Close must fail";
  WsFrame f = ws.RecvFrame(Millis(100));
  EXPECT_EQ(f.kind, WsFrame::Kind::kClose) << f.Describe();
  EXPECT_EQ(ws.RecvFrame(Millis(0)).kind, WsFrame::Kind::kClose) << "the end is sticky";
}

TEST_F(ClientWsTest, HttpReportsTransportFailuresAsStatusZero) {
  // A port nothing listens on: the shared server's port right after it was bound is
  // not guaranteed free, so use port 1 (privileged, never ours).
  client::HttpResponse r = client::Http("127.0.0.1", 1, "GET", "/healthz");
  EXPECT_EQ(r.status, 0);
  EXPECT_FALSE(r.error.empty());
  WsClient ws;
  client::WsConnectOptions o;
  EXPECT_FALSE(ws.Connect("127.0.0.1", 1, o));
  EXPECT_EQ(ws.upgrade_status(), 0);
  EXPECT_FALSE(ws.error().empty());
}

}  // namespace
}  // namespace sb::test
