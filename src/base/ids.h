// Identifiers. Internally users and conversations are 64-bit numbers; on the wire
// they are strings with a type prefix and 16 lowercase hex digits:
//   usr_00a1b2c3d4e5f607   conv_00a1b2c3d4e5f607
// A server message id names its conversation and seq, so any message can be found
// without a secondary index:  srv_msg_<conv 16 hex><seq 16 hex>.
// Parsing is strict: anything else is "no such id" (never an exception).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sb {

using UserId = uint64_t;
using ConvId = uint64_t;
using Seq = uint64_t;

// The 16 lowercase hex digits of `v`, appended (every id format above).
void AppendHex16(std::string& out, uint64_t v);
std::string FormatUserId(UserId id);
std::string FormatConvId(ConvId id);
std::string FormatMessageId(ConvId conv, Seq seq);

std::optional<UserId> ParseUserId(std::string_view s);
std::optional<ConvId> ParseConvId(std::string_view s);
struct MessageRef {
  ConvId conv;
  Seq seq;
};
std::optional<MessageRef> ParseMessageId(std::string_view s);

// A fresh non-zero random 64-bit id from the OS CSPRNG (libsodium).
uint64_t RandomId64();
// n random bytes rendered as lowercase hex (2n characters).
std::string RandomHex(size_t n_bytes);

// client_msg_id and device_id: 1..64 printable ASCII characters (0x21..0x7e).
bool IsValidClientToken(std::string_view s);

}  // namespace sb
