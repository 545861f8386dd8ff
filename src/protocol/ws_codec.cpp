#include "protocol/ws_codec.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <cstring>

#include "base/utf8.h"

namespace sb::protocol {

std::string WsAcceptKey(std::string_view client_key) {
  static constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string in;
  in.reserve(client_key.size() + kGuid.size());
  in.append(client_key).append(kGuid);
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(in.data()), in.size(), digest);
  unsigned char out[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
  int n = EVP_EncodeBlock(out, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
}

size_t WsFrameHeader(uint8_t opcode, uint64_t payload_len, uint8_t out[kWsMaxHeaderBytes]) {
  out[0] = static_cast<uint8_t>(0x80 | opcode);
  if (payload_len < 126) {
    out[1] = static_cast<uint8_t>(payload_len);
    return 2;
  }
  if (payload_len <= 0xFFFF) {
    out[1] = 126;
    out[2] = static_cast<uint8_t>(payload_len >> 8);
    out[3] = static_cast<uint8_t>(payload_len);
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; ++i) out[2 + i] = static_cast<uint8_t>(payload_len >> (56 - 8 * i));
  return 10;
}

namespace {

// XORs p[0..n) with the 4-byte key repeated (RFC 6455 §5.3; masking and unmasking are
// the same), eight bytes at a time.
void ApplyMask(char* p, size_t n, const unsigned char key[4]) {
  uint32_t k32;
  std::memcpy(&k32, key, 4);
  uint64_t k64 = (static_cast<uint64_t>(k32) << 32) | k32;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    w ^= k64;
    std::memcpy(p + i, &w, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<char>(p[i] ^ key[i & 3]);
}

}  // namespace

std::string WsClientFrame(uint8_t opcode, std::string_view payload, uint32_t mask, bool fin) {
  uint8_t h[kWsMaxHeaderBytes];
  size_t n = WsFrameHeader(opcode, payload.size(), h);
  if (!fin) h[0] &= 0x7F;
  h[1] |= 0x80;  // masked
  const unsigned char key[4] = {static_cast<unsigned char>(mask >> 24), static_cast<unsigned char>(mask >> 16),
                                static_cast<unsigned char>(mask >> 8), static_cast<unsigned char>(mask)};
  std::string f;
  f.resize(n + 4 + payload.size());
  std::memcpy(f.data(), h, n);
  std::memcpy(f.data() + n, key, 4);
  if (!payload.empty()) std::memcpy(f.data() + n + 4, payload.data(), payload.size());
  ApplyMask(f.data() + n + 4, payload.size(), key);
  return f;
}

std::string WsClosePayload(uint16_t code, std::string_view reason) {
  // 125 bytes at most in a control frame, two of them the code; the reason is cut at
  // a code point so that it stays valid UTF-8.
  std::string p;
  p.push_back(static_cast<char>(code >> 8));
  p.push_back(static_cast<char>(code & 0xFF));
  p += TruncateUtf8(reason, 123);
  return p;
}

namespace {

// §7.4: what a peer may put in a close frame. 1012-1014 were registered with IANA
// after the RFC and are accepted; 1004-1006 and 1015 must never be sent.
bool ValidCloseCode(uint16_t c) {
  return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

uint16_t Be16(const unsigned char* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

}  // namespace

WsReader::Event WsReader::Fail(uint16_t code, std::string_view reason) {
  Event e;
  e.kind = Kind::kFail;
  e.code = code;
  e.reason = reason;
  return e;
}

WsReader::Event WsReader::Next(char* data, size_t size, size_t* used) {
  *used = 0;
  if (msg_opcode_ == 0 && !msg_.empty()) {
    // The last call handed out a joined message: its buffer is free again. A large
    // one is given back rather than kept for the life of the connection.
    if (msg_.capacity() > 4096) std::string().swap(msg_);
    else msg_.clear();
  }
  if (size < 2) return {};
  const auto* u = reinterpret_cast<const unsigned char*>(data);
  const bool fin = u[0] & 0x80;
  const uint8_t op = u[0] & 0x0F;
  const bool control = op & 0x8;
  if (u[0] & 0x70) return Fail(kWsCloseProtocolError, "reserved bits set (no extension was negotiated)");
  if ((op > kWsBinary && op < kWsClose) || op > kWsPong) return Fail(kWsCloseProtocolError, "reserved opcode");
  if (!(u[1] & 0x80)) return Fail(kWsCloseProtocolError, "client frames must be masked");
  uint64_t len = u[1] & 0x7F;
  size_t header = 2;
  if (control) {
    if (!fin) return Fail(kWsCloseProtocolError, "fragmented control frame");
    if (len > 125) return Fail(kWsCloseProtocolError, "control frame over 125 bytes");
  } else if (len == 126) {
    if (size < 4) return {};
    len = Be16(u + 2);
    header = 4;
    if (len < 126) return Fail(kWsCloseProtocolError, "frame length not minimally encoded");
  } else if (len == 127) {
    if (size < 10) return {};
    len = 0;
    for (int i = 0; i < 8; ++i) len = len << 8 | u[2 + i];
    header = 10;
    if (len >> 63) return Fail(kWsCloseProtocolError, "frame length with its top bit set");
    if (len <= 0xFFFF) return Fail(kWsCloseProtocolError, "frame length not minimally encoded");
  }
  if (!control) {
    if (op == kWsContinuation && msg_opcode_ == 0)
      return Fail(kWsCloseProtocolError, "continuation frame without a message in progress");
    if (op != kWsContinuation && msg_opcode_ != 0)
      return Fail(kWsCloseProtocolError, "new message inside a fragmented one");
    // Decided on the header alone: a too-large message is never buffered.
    if (len > max_ || msg_.size() + len > max_) return Fail(kWsCloseTooBig, "message too big");
  }
  if (size - header < 4 || size - header - 4 < len) return {};
  const unsigned char* key = u + header;
  char* payload = data + header + 4;
  const size_t n = static_cast<size_t>(len);
  ApplyMask(payload, n, key);
  *used = header + 4 + n;
  const std::string_view body(payload, n);

  Event e;
  switch (op) {
    case kWsPing:
      e.kind = Kind::kPing;
      e.payload = body;
      return e;
    case kWsPong:
      e.kind = Kind::kPong;
      e.payload = body;
      return e;
    case kWsClose:
      e.kind = Kind::kClose;
      if (n == 0) return e;
      if (n == 1) return Fail(kWsCloseProtocolError, "close frame with a 1-byte body");
      e.code = Be16(reinterpret_cast<const unsigned char*>(payload));
      if (!ValidCloseCode(e.code)) return Fail(kWsCloseProtocolError, "invalid close code");
      e.reason = body.substr(2);
      if (!IsValidUtf8(e.reason)) return Fail(kWsCloseInvalidPayload, "close reason is not UTF-8");
      return e;
    default:
      break;
  }

  std::string_view message;
  uint8_t kind_op;
  if (fin && op != kWsContinuation) {
    // The usual case: a whole message in one frame, handed out where it lies.
    message = body;
    kind_op = op;
  } else {
    if (op != kWsContinuation) msg_opcode_ = op;
    msg_.append(body);
    if (!fin) {
      e.kind = Kind::kFragment;
      return e;
    }
    kind_op = msg_opcode_;
    msg_opcode_ = 0;
    message = msg_;
  }
  if (kind_op == kWsText) {
    if (!IsValidUtf8(message)) return Fail(kWsCloseInvalidPayload, "text message is not valid UTF-8");
    e.kind = Kind::kText;
  } else {
    e.kind = Kind::kBinary;
  }
  e.payload = message;
  return e;
}

}  // namespace sb::protocol
