// RFC 6455 framing for the server side of a WebSocket, with no I/O: the gateway feeds
// it the bytes it read and writes the headers it builds. No extension is ever
// negotiated, so the RSV bits stay reserved; server frames are never masked and never
// fragmented.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sb::protocol {

// Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455 §4.2.2).
std::string WsAcceptKey(std::string_view client_key);

// Opcodes (§5.2).
inline constexpr uint8_t kWsContinuation = 0x0;
inline constexpr uint8_t kWsText = 0x1;
inline constexpr uint8_t kWsBinary = 0x2;
inline constexpr uint8_t kWsClose = 0x8;
inline constexpr uint8_t kWsPing = 0x9;
inline constexpr uint8_t kWsPong = 0xA;

// Close codes the server sends (§7.4.1).
inline constexpr uint16_t kWsCloseNormal = 1000;
inline constexpr uint16_t kWsCloseProtocolError = 1002;
inline constexpr uint16_t kWsCloseInvalidPayload = 1007;
inline constexpr uint16_t kWsCloseTooBig = 1009;

inline constexpr size_t kWsMaxHeaderBytes = 10;  // an unmasked server frame's header

// Writes the header of one unfragmented, unmasked frame into `out`; returns its length.
size_t WsFrameHeader(uint8_t opcode, uint64_t payload_len, uint8_t out[kWsMaxHeaderBytes]);

// A whole client frame (masked with `mask`, as RFC 6455 §5.3 requires of clients): for
// the load generator and tests, which speak to the server as clients do.
std::string WsClientFrame(uint8_t opcode, std::string_view payload, uint32_t mask, bool fin = true);

// The payload of a close frame: the code in network order, then the reason (cut to
// fit the 125-byte limit of control frames, at a UTF-8 boundary).
std::string WsClosePayload(uint16_t code, std::string_view reason);

// Incremental parser of client frames. Bytes arrive in any pieces; the caller keeps
// what Next() did not consume and offers it again with more. Fragmented messages are
// joined here, so a text or binary event is always a whole message.
class WsReader {
 public:
  explicit WsReader(size_t max_message_bytes) : max_(max_message_bytes) {}

  enum class Kind {
    kNeedMore,  // no complete frame in the bytes offered (nothing consumed)
    kFragment,  // a fragment was taken into the message in progress; call again
    kText,      // a whole text message (valid UTF-8)
    kBinary,    // a whole binary message
    kPing,
    kPong,
    kClose,     // the peer's close: code (0 when it sent none) and reason
    kFail,      // a protocol violation: close with `code` and `reason`, read no further
  };
  struct Event {
    Kind kind = Kind::kNeedMore;
    // Text, binary, ping and pong: the unmasked payload. It points into the bytes
    // offered or into the reader's own message buffer and is valid until the next call.
    std::string_view payload;
    uint16_t code = 0;
    std::string_view reason;  // kClose: the peer's reason; kFail: ours
  };

  // Parses at most one frame from [data, data + size) and unmasks it in place.
  // `*used` is set to the bytes consumed (0 with kNeedMore). Once a kFail has been
  // returned the stream is broken and the caller must stop reading.
  Event Next(char* data, size_t size, size_t* used);

  // True while fragments of a message are held (the memory it costs is `held()`).
  bool in_message() const { return msg_opcode_ != 0; }
  size_t held() const { return msg_.capacity(); }

 private:
  Event Fail(uint16_t code, std::string_view reason);

  size_t max_;
  std::string msg_;          // the message in progress, unmasked
  uint8_t msg_opcode_ = 0;   // its opcode (text or binary); 0: none in progress
};

}  // namespace sb::protocol
