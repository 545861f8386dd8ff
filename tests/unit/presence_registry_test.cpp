#include <gtest/gtest.h>

#include "presence/registry.h"

namespace sb::presence {
namespace {

TEST(MemoryRegistry, FirstDeviceOnlineLastDeviceOfflineAndLastSeen) {
  MemoryRegistry r;
  EXPECT_EQ(r.Get(7).devices, 0u);
  EXPECT_EQ(r.Get(7).last_seen_ms, 0) << "never seen";
  EXPECT_TRUE(r.DeviceOnline(7, 1, "node-a", 100)) << "the first device brings the user online";
  EXPECT_FALSE(r.DeviceOnline(7, 2, "node-b", 110));
  EXPECT_EQ(r.Get(7).devices, 2u);
  EXPECT_FALSE(r.DeviceOffline(7, 1, 200)) << "one device remains";
  EXPECT_FALSE(r.DeviceOffline(7, 99, 210)) << "unknown devices are ignored";
  EXPECT_EQ(r.Get(7).last_seen_ms, 0);
  EXPECT_TRUE(r.DeviceOffline(7, 2, 300)) << "the last device takes the user offline";
  EXPECT_EQ(r.Get(7).devices, 0u);
  EXPECT_EQ(r.Get(7).last_seen_ms, 300);
  EXPECT_FALSE(r.DeviceOffline(7, 2, 400)) << "twice is once";
  EXPECT_EQ(r.Get(7).last_seen_ms, 300);
  EXPECT_EQ(r.Users(), 1u);
}

}  // namespace
}  // namespace sb::presence
