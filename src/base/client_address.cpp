#include "base/client_address.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>
#include <optional>

namespace sb {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// An address as 16 bytes (IPv4 mapped into ::ffff:0:0/96) and whether it was IPv4.
std::optional<std::array<uint8_t, 16>> ParseAddress(std::string_view text, bool* v4 = nullptr) {
  if (text.empty() || text.size() > 45) return std::nullopt;
  char buf[46];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  std::array<uint8_t, 16> out{};
  in_addr a4;
  if (inet_pton(AF_INET, buf, &a4) == 1) {
    out[10] = out[11] = 0xff;
    std::memcpy(out.data() + 12, &a4, 4);
    if (v4) *v4 = true;
    return out;
  }
  in6_addr a6;
  if (inet_pton(AF_INET6, buf, &a6) == 1) {
    std::memcpy(out.data(), &a6, 16);
    if (v4) *v4 = false;
    return out;
  }
  return std::nullopt;
}

}  // namespace

Result<TrustedProxies> TrustedProxies::Parse(std::string_view list) {
  TrustedProxies t;
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view entry = Trim(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    if (entry.empty()) continue;
    std::string_view addr = entry;
    std::optional<int> prefix;
    if (size_t slash = entry.find('/'); slash != std::string_view::npos) {
      addr = entry.substr(0, slash);
      std::string_view p = entry.substr(slash + 1);
      int v = -1;
      auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
      if (ec != std::errc() || end != p.data() + p.size() || p.empty()) {
        return BadRequest("server.trusted_proxies: bad prefix length in '" + std::string(entry) + "'");
      }
      prefix = v;
    }
    bool v4 = false;
    auto bytes = ParseAddress(addr, &v4);
    if (!bytes) return BadRequest("server.trusted_proxies: '" + std::string(entry) + "' is not an IP address or range");
    int max = v4 ? 32 : 128;
    int bits = prefix.value_or(max);
    if (bits < 0 || bits > max) {
      return BadRequest("server.trusted_proxies: prefix length out of range in '" + std::string(entry) + "'");
    }
    Range r;
    r.bytes = *bytes;
    r.prefix = v4 ? 96 + bits : bits;
    t.ranges_.push_back(r);
  }
  return t;
}

bool TrustedProxies::Contains(std::string_view addr) const {
  if (ranges_.empty()) return false;
  auto bytes = ParseAddress(Trim(addr));
  if (!bytes) return false;
  for (const Range& r : ranges_) {
    int full = r.prefix / 8, rest = r.prefix % 8;
    if (std::memcmp(bytes->data(), r.bytes.data(), static_cast<size_t>(full)) != 0) continue;
    if (rest != 0) {
      auto mask = static_cast<uint8_t>(0xff << (8 - rest));
      if ((((*bytes)[static_cast<size_t>(full)]) & mask) != (r.bytes[static_cast<size_t>(full)] & mask)) continue;
    }
    return true;
  }
  return false;
}

std::string TrustedProxies::ClientOf(std::string_view peer, std::string_view forwarded_for) const {
  if (!Contains(peer)) return std::string(peer);
  std::string_view client = peer;
  while (!forwarded_for.empty()) {
    size_t comma = forwarded_for.rfind(',');
    std::string_view entry =
        Trim(comma == std::string_view::npos ? forwarded_for : forwarded_for.substr(comma + 1));
    forwarded_for = comma == std::string_view::npos ? std::string_view() : forwarded_for.substr(0, comma);
    if (!ParseAddress(entry)) break;  // not an address: believe nothing further left
    client = entry;
    if (!Contains(entry)) break;
  }
  return std::string(client);
}

}  // namespace sb
