#include "base/ids.h"

#include <sodium.h>

namespace sb {
namespace {

constexpr char kHex[] = "0123456789abcdef";

std::optional<uint64_t> ParseHex16(std::string_view s) {
  if (s.size() != 16) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else return std::nullopt;
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  return v;
}

std::optional<uint64_t> ParsePrefixed(std::string_view s, std::string_view prefix) {
  if (s.size() != prefix.size() + 16 || s.substr(0, prefix.size()) != prefix) return std::nullopt;
  auto v = ParseHex16(s.substr(prefix.size()));
  if (!v || *v == 0) return std::nullopt;
  return v;
}

}  // namespace

void AppendHex16(std::string& out, uint64_t v) {
  char buf[16];
  for (int i = 15; i >= 0; --i) {
    buf[i] = kHex[v & 0xf];
    v >>= 4;
  }
  out.append(buf, 16);
}

std::string FormatUserId(UserId id) {
  std::string s = "usr_";
  AppendHex16(s, id);
  return s;
}

std::string FormatConvId(ConvId id) {
  std::string s = "conv_";
  AppendHex16(s, id);
  return s;
}

std::string FormatMessageId(ConvId conv, Seq seq) {
  std::string s = "srv_msg_";
  s.reserve(40);
  AppendHex16(s, conv);
  AppendHex16(s, seq);
  return s;
}

std::optional<UserId> ParseUserId(std::string_view s) { return ParsePrefixed(s, "usr_"); }
std::optional<ConvId> ParseConvId(std::string_view s) { return ParsePrefixed(s, "conv_"); }

std::optional<MessageRef> ParseMessageId(std::string_view s) {
  constexpr std::string_view kPrefix = "srv_msg_";
  if (s.size() != kPrefix.size() + 32 || s.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  auto conv = ParseHex16(s.substr(kPrefix.size(), 16));
  auto seq = ParseHex16(s.substr(kPrefix.size() + 16, 16));
  if (!conv || !seq || *conv == 0 || *seq == 0) return std::nullopt;
  return MessageRef{*conv, *seq};
}

uint64_t RandomId64() {
  static const bool init = sodium_init() >= 0;
  (void)init;
  uint64_t v = 0;
  while (v == 0) randombytes_buf(&v, sizeof v);
  return v;
}

std::string RandomHex(size_t n_bytes) {
  static const bool init = sodium_init() >= 0;
  (void)init;
  std::string raw(n_bytes, '\0');
  randombytes_buf(raw.data(), raw.size());
  std::string out;
  out.reserve(n_bytes * 2);
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xf]);
  }
  return out;
}

bool IsValidClientToken(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (unsigned char c : s)
    if (c < 0x21 || c > 0x7e) return false;
  return true;
}

}  // namespace sb
