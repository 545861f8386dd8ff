#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <random>

#include <simdjson.h>

#include "base/ids.h"
#include "base/json_writer.h"
#include "base/utf8.h"
#include "protocol/client_frames.h"
#include "protocol/server_frames.h"

namespace sb::protocol {
namespace {

class ParseTest : public ::testing::Test {
 protected:
  std::optional<ClientFrame> Parse(std::string_view s) { return parser_.Parse(s, &err_); }
  Limits limits_;
  FrameParser parser_{limits_};
  FrameError err_;
};

TEST_F(ParseTest, SendMessageAllFields) {
  auto f = Parse(R"({"event":"send_message","client_msg_id":"msg_1","conversation_id":"conv_1",
    "sender_id":"usr_a","content":"hi","content_type":"text","sent_timestamp_ms":1780416350000,
    "reply_to":"srv_msg_00000000000000010000000000000002","unknown":[1,2]})");
  ASSERT_TRUE(f) << err_.status.message();
  auto& m = std::get<SendMessage>(*f);
  EXPECT_EQ(m.client_msg_id, "msg_1");
  EXPECT_EQ(m.conversation_id, "conv_1");
  EXPECT_EQ(*m.sender_id, "usr_a");
  EXPECT_EQ(m.content, "hi");
  EXPECT_EQ(m.content_type, store::ContentType::kText);
  EXPECT_EQ(m.sent_timestamp_ms, 1780416350000);
  EXPECT_EQ(m.reply_to, "srv_msg_00000000000000010000000000000002");
}

TEST_F(ParseTest, ContentTypeDefaultsToText) {
  auto f = Parse(R"({"event":"send_message","client_msg_id":"a","conversation_id":"c","content":"x"})");
  ASSERT_TRUE(f);
  EXPECT_EQ(std::get<SendMessage>(*f).content_type, store::ContentType::kText);
}

TEST_F(ParseTest, EveryFieldIsFoundByItsNameWhereverItIs) {
  // Each field of each event given a value of the wrong type, after other fields and
  // before others: the error names that field, so the parser read it under its name.
  struct Case {
    std::string event, field, bad, want;
  };
  const std::string msg = R"("client_msg_id":"m1","conversation_id":"c","content":"x")";
  const std::vector<Case> cases = {
      {"send_message", "client_msg_id", "1", "must be a string"},
      {"send_message", "conversation_id", "1", "must be a string"},
      {"send_message", "sender_id", "1", "must be a string"},
      {"send_message", "content", "1", "must be a string"},
      {"send_message", "content_type", "1", "must be a string"},
      {"send_message", "media_url", "1", "must be a string"},
      {"send_message", "target_message_id", "1", "must be a string"},
      {"send_message", "reply_to", "1", "must be a string"},
      {"send_message", "sent_timestamp_ms", "\"1\"", "must be an integer"},
      {"message_receipt", "message_id", "1", "must be a string"},
      {"message_receipt", "status", "1", "must be a string"},
      {"message_receipt", "up_to_seq", "\"1\"", "must be an integer"},
      {"message_receipt", "receipt_timestamp_ms", "\"1\"", "must be an integer"},
      {"typing", "state", "1", "must be a string"},
      {"resume", "cursors", "1", "must be an object"},
      {"presence_subscribe", "user_ids", "1", "must be an array"},
  };
  for (const Case& c : cases) {
    std::string rest = c.event == "send_message" ? msg
                       : c.event == "message_receipt" ? R"("conversation_id":"c","status":"READ","up_to_seq":1)"
                       : c.event == "typing" ? R"("conversation_id":"c","state":"started")"
                                             : R"("x":1)";
    // The bad value first: as the first occurrence it is the one that counts.
    std::string frame = R"({"a":null,")" + c.field + "\":" + c.bad + R"(,"event":")" + c.event + "\"," + rest +
                        R"(,"zzz":true})";
    EXPECT_FALSE(Parse(frame)) << frame;
    EXPECT_NE(err_.status.message().find("'" + c.field + "' " + c.want), std::string::npos)
        << frame << " -> " << err_.status.message();
  }
}

TEST_F(ParseTest, ARepeatedFieldCountsByItsFirstOccurrenceAndNullIsAbsent) {
  auto f = Parse(R"({"event":"send_message","client_msg_id":"a","client_msg_id":"b","conversation_id":"c",
    "content":"first","content":"second","content_type":null})");
  ASSERT_TRUE(f) << err_.status.message();
  auto& m = std::get<SendMessage>(*f);
  EXPECT_EQ(m.client_msg_id, "a");
  EXPECT_EQ(m.content, "first");
  EXPECT_EQ(m.content_type, store::ContentType::kText) << "null is as if absent";
  EXPECT_FALSE(Parse(R"({"event":"send_message","client_msg_id":null,"client_msg_id":"b","conversation_id":"c",
    "content":"x"})"));
  EXPECT_EQ(err_.status.message(), "missing field 'client_msg_id'");
  // Keys are compared unescaped.
  f = Parse(R"({"\u0065vent":"typing","conversation_id":"c","st\u0061te":"stopped"})");
  ASSERT_TRUE(f) << err_.status.message();
  EXPECT_EQ(std::get<Typing>(*f).state, "stopped");
}

TEST_F(ParseTest, MalformedJsonIsBadRequest) {
  EXPECT_FALSE(Parse("{bad"));
  EXPECT_EQ(err_.status.code(), Code::kBadRequest);
  EXPECT_FALSE(Parse("[1,2]"));
  EXPECT_EQ(err_.status.code(), Code::kBadRequest);
  EXPECT_FALSE(Parse(""));
  EXPECT_EQ(err_.status.code(), Code::kBadRequest);
}

TEST_F(ParseTest, MissingAndWrongTypedFields) {
  EXPECT_FALSE(Parse(R"({"client_msg_id":"a"})"));
  EXPECT_EQ(err_.status.code(), Code::kBadRequest);
  EXPECT_FALSE(Parse(R"({"event":"send_message","conversation_id":"c","content":"x"})"));
  EXPECT_EQ(err_.status.code(), Code::kBadRequest);
  EXPECT_FALSE(Parse(R"({"event":"send_message","client_msg_id":"a","conversation_id":7,"content":"x"})"));
  EXPECT_EQ(err_.status.code(), Code::kBadRequest);
  EXPECT_EQ(err_.client_msg_id, "a") << "errors echo the client_msg_id";
  EXPECT_FALSE(Parse(R"({"event":"send_message","client_msg_id":"a","conversation_id":"c","content":"x","sent_timestamp_ms":"now"})"));
  EXPECT_EQ(err_.status.code(), Code::kBadRequest);
  EXPECT_FALSE(Parse(R"({"event":5})"));
  EXPECT_EQ(err_.status.code(), Code::kBadRequest);
}

TEST_F(ParseTest, UnknownEventAndContentType) {
  EXPECT_FALSE(Parse(R"({"event":"launch_rockets"})"));
  EXPECT_EQ(err_.status.code(), Code::kBadRequest);
  EXPECT_NE(err_.status.message().find("launch_rockets"), std::string::npos);
  EXPECT_FALSE(Parse(R"({"event":"send_message","client_msg_id":"a","conversation_id":"c","content":"x","content_type":"video"})"));
  EXPECT_EQ(err_.status.code(), Code::kBadRequest);
}

TEST_F(ParseTest, ClientMsgIdRules) {
  EXPECT_FALSE(Parse(R"({"event":"send_message","client_msg_id":"","conversation_id":"c","content":"x"})"));
  std::string long_id(65, 'a');
  EXPECT_FALSE(Parse(R"({"event":"send_message","client_msg_id":")" + long_id + R"(","conversation_id":"c","content":"x"})"));
  EXPECT_FALSE(Parse(R"({"event":"send_message","client_msg_id":"has space","conversation_id":"c","content":"x"})"));
  EXPECT_TRUE(Parse(R"({"event":"send_message","client_msg_id":")" + std::string(64, 'z') + R"(","conversation_id":"c","content":"x"})"));
}

TEST_F(ParseTest, ContentLimitIsTooLarge) {
  std::string big(limits_.max_content_bytes + 1, 'x');
  EXPECT_FALSE(Parse(R"({"event":"send_message","client_msg_id":"a","conversation_id":"c","content":")" + big + "\"}"));
  EXPECT_EQ(err_.status.code(), Code::kTooLarge);
  std::string ok(limits_.max_content_bytes, 'x');
  EXPECT_TRUE(Parse(R"({"event":"send_message","client_msg_id":"a","conversation_id":"c","content":")" + ok + "\"}"));
}

TEST_F(ParseTest, ContentTypeRequirements) {
  EXPECT_FALSE(Parse(R"({"event":"send_message","client_msg_id":"a","conversation_id":"c","content_type":"image"})"));
  EXPECT_TRUE(Parse(R"({"event":"send_message","client_msg_id":"a","conversation_id":"c","content_type":"image","media_url":"/v1/attachments/x"})"));
  EXPECT_FALSE(Parse(R"({"event":"send_message","client_msg_id":"a","conversation_id":"c","content_type":"edit","content":"new"})"));
  EXPECT_FALSE(Parse(R"({"event":"send_message","client_msg_id":"a","conversation_id":"c","content_type":"delete","target_message_id":"nope"})"));
  EXPECT_TRUE(Parse(R"({"event":"send_message","client_msg_id":"a","conversation_id":"c","content_type":"delete","target_message_id":"srv_msg_00000000000000010000000000000002"})"));
  EXPECT_FALSE(Parse(R"({"event":"send_message","client_msg_id":"a","conversation_id":"c","content":""})"));
}

TEST_F(ParseTest, InvalidUtf8Rejected) {
  std::string s = R"({"event":"send_message","client_msg_id":"a","conversation_id":"c","content":"\xff\xfe"})";
  EXPECT_FALSE(Parse(s));
  EXPECT_EQ(err_.status.code(), Code::kBadRequest);
}

TEST_F(ParseTest, OtherEvents) {
  EXPECT_TRUE(std::holds_alternative<Ping>(*Parse(R"({"event":"ping"})")));
  auto r = Parse(R"({"event":"message_receipt","conversation_id":"c","status":"READ","up_to_seq":42})");
  ASSERT_TRUE(r);
  EXPECT_EQ(*std::get<MessageReceipt>(*r).up_to_seq, 42u);
  EXPECT_FALSE(Parse(R"({"event":"message_receipt","conversation_id":"c","status":"SEEN","up_to_seq":1})"));
  auto res = Parse(R"({"event":"resume","cursors":{"conv_1":41,"conv_7":1200}})");
  ASSERT_TRUE(res);
  EXPECT_EQ(std::get<Resume>(*res).cursors.at("conv_7"), 1200u);
  EXPECT_FALSE(Parse(R"({"event":"resume","cursors":{"conv_1":-1}})"));
  EXPECT_TRUE(Parse(R"({"event":"resume"})"));
  EXPECT_FALSE(Parse(R"({"event":"typing","conversation_id":"c","state":"maybe"})"));
  EXPECT_TRUE(Parse(R"({"event":"presence_subscribe","user_ids":["usr_a"]})"));
  EXPECT_FALSE(Parse(R"({"event":"presence_subscribe","user_ids":[1]})"));
}

TEST(ServerFrames, MessageFrameRoundTripsAsJson) {
  store::Message m;
  m.conv = 0x1234;
  m.seq = 7;
  m.sender = 0xabc;
  m.client_msg_id = "cm\"1";
  m.content = "line1\nline2 \xc3\xa9 \x01";
  m.content_type = store::ContentType::kReaction;
  m.target_message_id = FormatMessageId(0x1234, 3);
  m.sent_ms = 5;
  m.server_ms = 6;
  std::string f = MessageFrame(m);
  simdjson::dom::parser p;
  simdjson::dom::element doc;
  ASSERT_EQ(p.parse(f).get(doc), simdjson::SUCCESS) << f;
  EXPECT_EQ(std::string_view(doc["event"]), "message");
  EXPECT_EQ(std::string_view(doc["content"]), m.content);
  EXPECT_EQ(std::string_view(doc["client_msg_id"]), m.client_msg_id);
  EXPECT_EQ(uint64_t(doc["seq"]), 7u);
  EXPECT_EQ(std::string_view(doc["content_type"]), "reaction");
  EXPECT_EQ(std::string_view(doc["message_id"]), FormatMessageId(0x1234, 7));
  EXPECT_EQ(std::string_view(doc["conversation_id"]), FormatConvId(0x1234));
  EXPECT_EQ(std::string_view(doc["sender_id"]), FormatUserId(0xabc));
}

TEST(Ids, FormatAndParse) {
  EXPECT_EQ(FormatUserId(1), "usr_0000000000000001");
  EXPECT_EQ(*ParseUserId("usr_00000000000000ff"), 255u);
  EXPECT_FALSE(ParseUserId("usr_00000000000000FF"));
  EXPECT_FALSE(ParseUserId("usr_0000000000000000"));
  EXPECT_FALSE(ParseUserId("conv_0000000000000001"));
  EXPECT_FALSE(ParseConvId("conv_1"));
  auto r = ParseMessageId(FormatMessageId(42, 9));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->conv, 42u);
  EXPECT_EQ(r->seq, 9u);
  EXPECT_FALSE(ParseMessageId("srv_msg_982736451"));
  EXPECT_NE(RandomId64(), RandomId64());
}

TEST(Utf8, ValidateAndTruncate) {
  EXPECT_TRUE(IsValidUtf8("h\xc3\xa9llo \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));          // truncated
  EXPECT_EQ(TruncateUtf8("\xc3\xa9\xc3\xa9", 3), "\xc3\xa9");
  EXPECT_EQ(TruncateUtf8("abc", 10), "abc");
}

TEST(JsonWriter, NestingAndEscapes) {
  JsonWriter w;
  w.BeginObject().Field("a", 1).Key("b").BeginArray().String("x").Int(-2).Bool(true).Null().EndArray();
  w.Key("c").BeginObject().EndObject().Field("d", "q\"\\\t").EndObject();
  EXPECT_EQ(w.str(), R"({"a":1,"b":["x",-2,true,null],"c":{},"d":"q\"\\\t"})");
}

// A literal key skips the escape scan (checked when compiled); any other key is
// escaped. Both must write the same bytes for the same clean key.
TEST(JsonWriter, LiteralKeysAreWrittenAsEscapedOnesWouldBe) {
  EXPECT_TRUE(JsonWriter::KeyName("event").literal());
  EXPECT_FALSE(JsonWriter::KeyName(std::string_view("event")).literal());
  EXPECT_FALSE(JsonWriter::KeyName(std::string("event")).literal());
  JsonWriter lit, esc;
  lit.BeginObject().Key("event").String("x").Field("conversation_id", "c").Field("seq", 3).Key("").Int(0).EndObject();
  esc.BeginObject().Key(std::string_view("event")).String("x").Field(std::string_view("conversation_id"), "c");
  esc.Field(std::string("seq"), 3).Key(std::string_view("")).Int(0).EndObject();
  EXPECT_EQ(lit.str(), esc.str());
  EXPECT_EQ(lit.str(), R"({"event":"x","conversation_id":"c","seq":3,"":0})");
  // A runtime key with something to escape goes through the escaping path.
  JsonWriter dyn;
  dyn.BeginObject().Field(std::string("a\"b"), 1).EndObject();
  EXPECT_EQ(dyn.str(), R"({"a\"b":1})");
}

// The byte-at-a-time rule of RFC 8259 the writer's eight-bytes-at-a-time scan must
// agree with: the seven short escapes, \u00XX for the other control bytes.
std::string ReferenceEscape(std::string_view v) {
  const std::map<unsigned char, std::string> named = {{'"', "\\\""}, {'\\', "\\\\"}, {'\n', "\\n"}, {'\r', "\\r"},
                                                      {'\t', "\\t"},  {'\b', "\\b"},  {'\f', "\\f"}};
  std::string out = "\"";
  for (unsigned char c : v) {
    if (auto it = named.find(c); it != named.end()) {
      out += it->second;
    } else if (c < 0x20) {
      char u[8];
      std::snprintf(u, sizeof u, "\\u%04x", c);
      out += u;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

TEST(JsonWriter, EscapingAgreesWithTheByteRuleAtEveryPosition) {
  // Every byte value at every offset of strings around the 8-byte chunk size, alone and
  // among clean bytes, plus random strings over a byte mix heavy in special bytes.
  for (size_t len : {1u, 7u, 8u, 9u, 15u, 16u, 17u, 33u}) {
    for (size_t at = 0; at < len; ++at) {
      for (int b = 0; b < 256; ++b) {
        std::string v(len, 'a');
        v[at] = static_cast<char>(b);
        std::string out;
        JsonWriter::Escape(out, v);
        ASSERT_EQ(out, ReferenceEscape(v)) << "len " << len << " at " << at << " byte " << b;
      }
    }
  }
  std::mt19937 rng(7);
  const std::string mix = std::string("\"\\\n\x01\x1f\x7f ~\x80\xff") + "abcdefgh";
  for (int i = 0; i < 2000; ++i) {
    std::string v(rng() % 70, ' ');
    for (char& c : v) c = mix[rng() % mix.size()];
    std::string out = "prefix";
    JsonWriter::Escape(out, v);
    ASSERT_EQ(out, "prefix" + ReferenceEscape(v));
  }
}

TEST(JsonWriter, IdsAndDeepNesting) {
  JsonWriter w;
  w.BeginObject().Key("u").UserId(0xa1).Key("c").ConvId(0x00a1b2c3d4e5f607ull).Key("m").MessageId(2, 0x10);
  w.Key("l").BeginArray().UserId(1).ConvId(2).EndArray().EndObject();
  EXPECT_EQ(w.str(), R"({"u":"usr_00000000000000a1","c":"conv_00a1b2c3d4e5f607",)"
                     R"("m":"srv_msg_00000000000000020000000000000010","l":["usr_0000000000000001",)"
                     R"("conv_0000000000000002"]})");
  EXPECT_EQ(R"("usr_00000000000000a1")", "\"" + FormatUserId(0xa1) + "\"");
  EXPECT_EQ(R"("srv_msg_00000000000000020000000000000010")", "\"" + FormatMessageId(2, 0x10) + "\"");

  // Commas stay right past 64 levels (where the bit stack hands over to a vector) and
  // after coming back up.
  JsonWriter d;
  d.BeginArray();
  std::string want = "[";
  for (int i = 0; i < 100; ++i) {
    d.BeginArray().Int(i);
    want += (i == 0 ? "[" : ",[") + std::to_string(i);
  }
  for (int i = 0; i < 100; ++i) {
    d.EndArray().Int(-i);
    want += "]," + std::to_string(-i);
  }
  d.EndArray();
  want += "]";
  EXPECT_EQ(d.str(), want);
}

}  // namespace
}  // namespace sb::protocol

#include "api/http_types.h"

namespace sb::api {
namespace {

TEST(HttpTypes, PathSegmentsSkipEmptyOnes) {
  EXPECT_EQ(PathSegments("/v1/conversations//x/"), (std::vector<std::string_view>{"v1", "conversations", "x"}));
  EXPECT_TRUE(PathSegments("/").empty());
  EXPECT_TRUE(PathSegments("").empty());
  EXPECT_EQ(PathSegments("/v1"), (std::vector<std::string_view>{"v1"}));
}

}  // namespace
}  // namespace sb::api
