// server.trusted_proxies: which peers are proxies, and which X-Forwarded-For entry is
// the client behind them (base/client_address.h).
#include "base/client_address.h"

#include <gtest/gtest.h>

namespace sb {
namespace {

TrustedProxies Trust(std::string_view list) {
  auto t = TrustedProxies::Parse(list);
  EXPECT_TRUE(t.ok()) << list << ": " << t.status().message();
  return t.ok() ? *t : TrustedProxies();
}

TEST(TrustedProxies, AddressesAndRangesOfBothFamilies) {
  TrustedProxies t = Trust(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8,::1,172.16.0.0/12");
  EXPECT_TRUE(t.Contains("10.1.2.3"));
  EXPECT_TRUE(t.Contains("192.168.1.7"));
  EXPECT_FALSE(t.Contains("192.168.1.8"));
  EXPECT_TRUE(t.Contains("172.31.255.255"));
  EXPECT_FALSE(t.Contains("172.32.0.0")) << "/12 ends at 172.31";
  EXPECT_TRUE(t.Contains("fd12:3456::1"));
  EXPECT_FALSE(t.Contains("fe80::1"));
  EXPECT_TRUE(t.Contains("::1"));
  EXPECT_TRUE(t.Contains("::ffff:10.9.9.9")) << "IPv4-mapped counts as IPv4";
  EXPECT_FALSE(t.Contains("11.0.0.1"));
  EXPECT_FALSE(t.Contains("not-an-address"));
  EXPECT_FALSE(t.Contains(""));
  EXPECT_TRUE(Trust("").empty());
  EXPECT_TRUE(Trust(" , ").empty());
  EXPECT_TRUE(Trust("0.0.0.0/0").Contains("8.8.8.8"));
}

TEST(TrustedProxies, BadEntriesAreRefusedByName) {
  for (const char* bad : {"10.0.0.0/33", "::/129", "10.0.0.1/", "10.0.0.1/x", "10.0.0.1/-1", "proxy.example.com",
                          "10.0.0", "1.2.3.4, 5.6.7.8/8/8"}) {
    auto t = TrustedProxies::Parse(bad);
    ASSERT_FALSE(t.ok()) << bad;
    EXPECT_EQ(t.status().code(), Code::kBadRequest) << bad;
  }
}

TEST(TrustedProxies, TheClientIsTheRightmostUntrustedHop) {
  TrustedProxies t = Trust("10.0.0.0/8");
  // Not from a proxy: the peer, whatever it claims.
  EXPECT_EQ(t.ClientOf("203.0.113.9", "198.51.100.1"), "203.0.113.9");
  // From a proxy: the address it received the request from.
  EXPECT_EQ(t.ClientOf("10.0.0.2", "198.51.100.1"), "198.51.100.1");
  // A client's own forged entries sit left of what the proxy appended: ignored.
  EXPECT_EQ(t.ClientOf("10.0.0.2", "1.1.1.1, 2.2.2.2, 198.51.100.1"), "198.51.100.1");
  // Two trusted proxies in a row: skip the inner one.
  EXPECT_EQ(t.ClientOf("10.0.0.2", "198.51.100.1,10.0.0.3"), "198.51.100.1");
  // Only proxies: the leftmost.
  EXPECT_EQ(t.ClientOf("10.0.0.2", "10.0.0.4, 10.0.0.3"), "10.0.0.4");
  // No header: the proxy itself.
  EXPECT_EQ(t.ClientOf("10.0.0.2", ""), "10.0.0.2");
  // Garbage stops the walk at the last address that parsed.
  EXPECT_EQ(t.ClientOf("10.0.0.2", "198.51.100.1, unknown"), "10.0.0.2");
  EXPECT_EQ(t.ClientOf("10.0.0.2", "garbage, 10.0.0.3"), "10.0.0.3");
  EXPECT_EQ(t.ClientOf("10.0.0.2", "2001:db8::5"), "2001:db8::5");
  // No trusted proxies at all: always the peer.
  EXPECT_EQ(TrustedProxies().ClientOf("10.0.0.2", "198.51.100.1"), "10.0.0.2");
}

}  // namespace
}  // namespace sb
