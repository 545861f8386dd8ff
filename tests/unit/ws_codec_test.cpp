// The server's WebSocket framing without sockets: what the reader makes of bytes
// arriving in any pieces, and the frames the writer builds. The wire behaviour over a
// real connection is tests/integration/rfc6455_test.cpp.
#include "protocol/ws_codec.h"

#include "base/utf8.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace sb::protocol {
namespace {

// A masked client frame.
std::string ClientFrame(uint8_t opcode, std::string_view payload, bool fin = true) {
  return WsClientFrame(opcode, payload, 0x37fa213d, fin);
}

struct Seen {
  WsReader::Kind kind;
  std::string payload;
  uint16_t code;
};

// Feeds `wire` to a reader in pieces of at most `step` bytes, keeping what it did not
// consume as the gateway does, and records every event but fragments.
std::vector<Seen> Read(const std::string& wire, size_t step, size_t max = 1 << 16) {
  WsReader r(max);
  std::vector<Seen> out;
  std::string pending;
  for (size_t at = 0; at < wire.size(); at += step) {
    pending += wire.substr(at, step);
    size_t off = 0;
    for (;;) {
      size_t used = 0;
      WsReader::Event e = r.Next(pending.data() + off, pending.size() - off, &used);
      if (e.kind == WsReader::Kind::kNeedMore) break;
      off += used;
      if (e.kind == WsReader::Kind::kFragment) continue;
      out.push_back({e.kind, std::string(e.kind == WsReader::Kind::kFail ? e.reason : e.payload), e.code});
      if (e.kind == WsReader::Kind::kFail) return out;
    }
    pending.erase(0, off);
  }
  return out;
}

TEST(WsCodec, AcceptKeyOfTheRfcExample) {
  EXPECT_EQ(WsAcceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(WsCodec, HeaderUsesTheShortestLength) {
  uint8_t h[kWsMaxHeaderBytes];
  ASSERT_EQ(WsFrameHeader(kWsText, 125, h), 2u);
  EXPECT_EQ(h[0], 0x81);
  EXPECT_EQ(h[1], 125);
  ASSERT_EQ(WsFrameHeader(kWsText, 126, h), 4u);
  EXPECT_EQ(h[1], 126);
  EXPECT_EQ((h[2] << 8) | h[3], 126);
  ASSERT_EQ(WsFrameHeader(kWsBinary, 65535, h), 4u);
  ASSERT_EQ(WsFrameHeader(kWsText, 65536, h), 10u);
  EXPECT_EQ(h[1], 127);
  EXPECT_EQ(h[7], 1);  // 65536 = 0x10000
  EXPECT_EQ(h[8], 0);
  EXPECT_EQ(h[9], 0);
}

TEST(WsCodec, ClientFramesAreMaskedAsTheRfcExample) {
  // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
  EXPECT_EQ(WsClientFrame(kWsText, "Hello", 0x37fa213d), std::string("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11));
}

TEST(WsCodec, EveryPayloadByteIsMaskedWithItsKeyByte) {
  // Lengths around the 8-byte steps and the 126 / 65536 header sizes, every offset
  // checked against payload[i] ^ key[i % 4].
  const uint32_t mask = 0x9c41e207;
  const unsigned char key[4] = {0x9c, 0x41, 0xe2, 0x07};
  for (size_t len : {size_t{0}, size_t{1}, size_t{3}, size_t{4}, size_t{7}, size_t{8}, size_t{9}, size_t{15},
                     size_t{16}, size_t{17}, size_t{125}, size_t{126}, size_t{127}, size_t{1000}, size_t{65536}}) {
    std::string payload(len, '\0');
    for (size_t i = 0; i < len; ++i) payload[i] = static_cast<char>((i * 131 + 7) & 0xFF);
    const std::string f = WsClientFrame(kWsBinary, payload, mask);
    const size_t head = len < 126 ? 2 : len < 65536 ? 4 : 10;
    ASSERT_EQ(f.size(), head + 4 + len);
    ASSERT_EQ(f.compare(head, 4, reinterpret_cast<const char*>(key), 4), 0) << len;
    for (size_t i = 0; i < len; ++i)
      ASSERT_EQ(static_cast<unsigned char>(f[head + 4 + i]), static_cast<unsigned char>(payload[i]) ^ key[i % 4])
          << "length " << len << ", byte " << i;
  }
}

TEST(WsCodec, ClosePayloadIsCutAtACodePoint) {
  std::string reason(122, 'r');
  reason += "\xe2\x82\xac";  // a 3-byte code point across the 123-byte limit
  std::string p = WsClosePayload(1008, reason);
  EXPECT_EQ(p.size(), 2u + 122u);
  EXPECT_EQ(static_cast<unsigned char>(p[0]) << 8 | static_cast<unsigned char>(p[1]), 1008);
  EXPECT_TRUE(IsValidUtf8(std::string_view(p).substr(2)));
}

TEST(WsCodec, Utf8AsTheReaderChecksIt) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii that is longer than eight bytes"));
  EXPECT_TRUE(IsValidUtf8("\xc3\xbc \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf \xed\x9f\xbf \xee\x80\x80"));
  for (const char* bad : {"\xff", "\x80", "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xf0\x80\x80\xaf", "\xed\xa0\x80",
                          "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xe2\x82", "abcdefgh\xe2\x82 "}) {
    EXPECT_FALSE(IsValidUtf8(bad)) << bad;
  }
}

TEST(WsCodec, EveryWayOfCuttingTheBytesGivesTheSameEvents) {
  std::string big(70000 - 1, 'x');  // a 64-bit length (limit raised below)
  std::string wire = ClientFrame(kWsText, "{\"event\":\"ping\"}") + ClientFrame(kWsPing, "hi") +
                     ClientFrame(kWsText, "{\"ev", false) + ClientFrame(kWsPong, "") +
                     ClientFrame(kWsContinuation, "ent\":", false) + ClientFrame(kWsContinuation, "1}") +
                     ClientFrame(kWsBinary, std::string(300, '\xff')) + ClientFrame(kWsText, big) +
                     ClientFrame(kWsClose, std::string("\x03\xe8" "bye", 5));
  std::vector<Seen> whole = Read(wire, wire.size(), 1 << 17);
  ASSERT_EQ(whole.size(), 7u);
  EXPECT_EQ(whole[0].kind, WsReader::Kind::kText);
  EXPECT_EQ(whole[0].payload, "{\"event\":\"ping\"}");
  EXPECT_EQ(whole[1].kind, WsReader::Kind::kPing);
  EXPECT_EQ(whole[1].payload, "hi");
  EXPECT_EQ(whole[2].kind, WsReader::Kind::kPong);
  EXPECT_EQ(whole[3].kind, WsReader::Kind::kText);
  EXPECT_EQ(whole[3].payload, "{\"event\":1}");
  EXPECT_EQ(whole[4].kind, WsReader::Kind::kBinary);
  EXPECT_EQ(whole[4].payload, std::string(300, '\xff'));
  EXPECT_EQ(whole[5].payload, big);
  EXPECT_EQ(whole[6].kind, WsReader::Kind::kClose);
  EXPECT_EQ(whole[6].code, 1000);
  for (size_t step : {1, 2, 3, 7, 100, 4096}) {
    std::vector<Seen> cut = Read(wire, step, 1 << 17);
    ASSERT_EQ(cut.size(), whole.size()) << "step " << step;
    for (size_t i = 0; i < cut.size(); ++i) {
      EXPECT_EQ(cut[i].kind, whole[i].kind) << "step " << step << " event " << i;
      EXPECT_EQ(cut[i].payload, whole[i].payload) << "step " << step << " event " << i;
    }
  }
}

TEST(WsCodec, TooBigIsRefusedOnTheHeaderAlone) {
  std::string wire = ClientFrame(kWsText, std::string(2000, 'a'));
  std::vector<Seen> seen = Read(wire.substr(0, 8), 8, 1024);  // header and mask only
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].kind, WsReader::Kind::kFail);
  EXPECT_EQ(seen[0].code, kWsCloseTooBig);
  // Fragments each under the limit, together over it.
  wire = ClientFrame(kWsText, std::string(600, 'a'), false) + ClientFrame(kWsContinuation, std::string(600, 'a'));
  seen = Read(wire, wire.size(), 1024);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].code, kWsCloseTooBig);
}

TEST(WsCodec, ProtocolViolationsFail) {
  struct Case {
    const char* what;
    std::string wire;
    uint16_t code;
  };
  std::string unmasked = ClientFrame(kWsText, "x");
  unmasked[1] = static_cast<char>(unmasked[1] & 0x7F);
  std::string rsv = ClientFrame(kWsText, "x");
  rsv[0] = static_cast<char>(rsv[0] | 0x40);
  std::vector<Case> cases = {
      {"unmasked", unmasked, kWsCloseProtocolError},
      {"reserved bit", rsv, kWsCloseProtocolError},
      {"reserved opcode", ClientFrame(0x3, "x"), kWsCloseProtocolError},
      {"continuation first", ClientFrame(kWsContinuation, "x"), kWsCloseProtocolError},
      {"fragmented ping", ClientFrame(kWsPing, "x", false), kWsCloseProtocolError},
      {"long ping", ClientFrame(kWsPing, std::string(126, 'p')), kWsCloseProtocolError},
      {"new message inside one", ClientFrame(kWsText, "a", false) + ClientFrame(kWsText, "b"),
       kWsCloseProtocolError},
      {"1-byte close", ClientFrame(kWsClose, "\x03"), kWsCloseProtocolError},
      {"close code 1005", ClientFrame(kWsClose, "\x03\xed"), kWsCloseProtocolError},
      {"close code 5000", ClientFrame(kWsClose, "\x13\x88"), kWsCloseProtocolError},
      {"invalid text", ClientFrame(kWsText, "\xc0\xaf"), kWsCloseInvalidPayload},
      {"invalid across fragments", ClientFrame(kWsText, "\xed", false) + ClientFrame(kWsContinuation, "\xa0\x80"),
       kWsCloseInvalidPayload},
  };
  for (const Case& c : cases) {
    std::vector<Seen> seen = Read(c.wire, c.wire.size());
    ASSERT_FALSE(seen.empty()) << c.what;
    EXPECT_EQ(seen.back().kind, WsReader::Kind::kFail) << c.what;
    EXPECT_EQ(seen.back().code, c.code) << c.what;
  }
}

TEST(WsCodec, RandomBytesNeverCrashOrOverrun) {
  std::mt19937 rng(7);
  for (int round = 0; round < 2000; ++round) {
    std::string wire(rng() % 64, '\0');
    for (char& c : wire) c = static_cast<char>(rng());
    std::vector<Seen> seen = Read(wire, 1 + rng() % 8, 256);
    for (const Seen& s : seen) {
      if (s.kind == WsReader::Kind::kText) {
        EXPECT_TRUE(IsValidUtf8(s.payload));
      }
    }
  }
}

}  // namespace
}  // namespace sb::protocol
