// WsReader::Next on arbitrary bytes, cut into arbitrary pieces: the first code every
// byte a WebSocket client sends meets, before any JSON.
//
// The first input byte picks the piece size and the message limit (small limits make
// the too-big paths reachable); the rest is the wire. Checked on every input:
//  * no crash, no sanitizer report, never a read or write outside the bytes offered;
//  * `used` never exceeds what was offered, and nothing is consumed with kNeedMore;
//  * text messages are valid UTF-8 and no message exceeds the limit;
//  * a close carries a valid code or none; a failure carries 1002, 1007 or 1009;
//  * after a failure the caller stops (as the gateway does).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "base/utf8.h"
#include "protocol/ws_codec.h"

using sb::protocol::WsReader;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t step = 1 + (data[0] & 0x1F);
  const size_t max = (data[0] & 0x20) ? 64 : 65536;
  WsReader reader(max);
  std::string pending;
  for (size_t at = 1; at < size; at += step) {
    pending.append(reinterpret_cast<const char*>(data + at), std::min(step, size - at));
    size_t off = 0;
    for (;;) {
      size_t used = 12345;
      WsReader::Event e = reader.Next(pending.data() + off, pending.size() - off, &used);
      if (e.kind == WsReader::Kind::kNeedMore) {
        if (used != 0) std::abort();
        break;
      }
      if (used > pending.size() - off) std::abort();
      off += used;
      switch (e.kind) {
        case WsReader::Kind::kText:
          if (!sb::IsValidUtf8(e.payload)) std::abort();
          [[fallthrough]];
        case WsReader::Kind::kBinary:
          if (e.payload.size() > max) std::abort();
          break;
        case WsReader::Kind::kPing:
        case WsReader::Kind::kPong:
          if (e.payload.size() > 125) std::abort();
          break;
        case WsReader::Kind::kClose:
          if (e.code != 0 && (e.code < 1000 || e.code >= 5000)) std::abort();
          break;
        case WsReader::Kind::kFail:
          if (e.code != 1002 && e.code != 1007 && e.code != 1009) std::abort();
          return 0;
        default:
          break;
      }
    }
    pending.erase(0, off);
  }
  return 0;
}
