// The client's address behind reverse proxies the operator trusts
// (`server.trusted_proxies`). A connection from a trusted proxy carries the client's
// address in X-Forwarded-For, each proxy appending the address it received the request
// from; only the entries added by trusted proxies can be believed, so the client is the
// rightmost entry that is not itself a trusted proxy (what nginx's real_ip module does
// with `real_ip_recursive on`). A connection from anyone else is its own peer address,
// whatever headers it sends: a client cannot choose the address its limits are kept
// under.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace sb {

class TrustedProxies {
 public:
  TrustedProxies() = default;
  // A comma-separated list of IPv4/IPv6 addresses and CIDR ranges ("10.0.0.0/8,
  // 127.0.0.1, fd00::/8"); empty: none (X-Forwarded-For is ignored). kBadRequest names
  // the entry that does not parse.
  static Result<TrustedProxies> Parse(std::string_view list);

  bool empty() const { return ranges_.empty(); }
  // `addr` (textual) is inside one of the ranges. IPv4-mapped IPv6 addresses
  // (::ffff:10.0.0.1) count as their IPv4 address.
  bool Contains(std::string_view addr) const;
  // The address the client's limits and logs go by: `peer` itself unless it is a trusted
  // proxy; then, walking `forwarded_for` (the X-Forwarded-For value, possibly several
  // headers joined by commas) from the right, the first entry that is not a trusted
  // proxy, or the leftmost one when all are. An entry that does not parse ends the walk
  // at the last address that did.
  std::string ClientOf(std::string_view peer, std::string_view forwarded_for) const;

 private:
  struct Range {
    std::array<uint8_t, 16> bytes{};  // IPv4 as IPv4-mapped IPv6
    int prefix = 128;                 // bits of `bytes` that must match
  };
  std::vector<Range> ranges_;
};

}  // namespace sb
