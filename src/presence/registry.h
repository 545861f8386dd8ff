// The presence registry: which devices of a user are connected, on which gateway, and
// when the user was last seen. It is the seam the cluster shape fills with Redis,
// using the seed's keys:
//   presence:user_session:<user>   hash: device -> gateway node, plus last_seen_ms
//   presence:status:<user>         "online" EX <ttl>, refreshed by heartbeats
// The one-node shape keeps it in memory (MemoryRegistry), one instance per shard,
// holding the users that shard owns (user id % shards).
//
// What is *not* here: who subscribed to whom, flap damping and privacy. Those are the
// chat core's (src/chat/presence.cpp), on top of any registry.
//
// Threading: an instance is used by one thread (the owning shard); a shared backend
// (Redis) does its own synchronisation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "base/ids.h"

namespace sb::presence {

class Registry {
 public:
  struct State {
    size_t devices = 0;        // connected devices
    int64_t last_seen_ms = 0;  // when the last device left; 0 if never seen
  };
  virtual ~Registry() = default;
  // Device `device_key` of `user` is connected at gateway `node`. True when it is the
  // user's only connected device (the user came online).
  virtual bool DeviceOnline(UserId user, uint64_t device_key, std::string_view node, int64_t now_ms) = 0;
  // The device is gone (closed or silent past the TTL). True when the user has no
  // device left: the user went offline at `now_ms`, which becomes last seen. Unknown
  // devices are ignored (false).
  virtual bool DeviceOffline(UserId user, uint64_t device_key, int64_t now_ms) = 0;
  virtual State Get(UserId user) const = 0;
  // Users tracked (online now or seen since start).
  virtual size_t Users() const = 0;
};

// In memory; forgets everything on restart (last seen included).
class MemoryRegistry final : public Registry {
 public:
  bool DeviceOnline(UserId user, uint64_t device_key, std::string_view node, int64_t now_ms) override {
    Entry& e = users_[user];
    bool first = e.devices.empty();
    e.devices[device_key] = std::string(node);
    return first;
  }
  bool DeviceOffline(UserId user, uint64_t device_key, int64_t now_ms) override {
    auto it = users_.find(user);
    if (it == users_.end() || it->second.devices.erase(device_key) == 0) return false;
    if (!it->second.devices.empty()) return false;
    it->second.last_seen_ms = now_ms;
    return true;
  }
  State Get(UserId user) const override {
    auto it = users_.find(user);
    if (it == users_.end()) return {};
    return {it->second.devices.size(), it->second.last_seen_ms};
  }
  size_t Users() const override { return users_.size(); }

 private:
  struct Entry {
    std::unordered_map<uint64_t, std::string> devices;  // device key -> gateway node
    int64_t last_seen_ms = 0;
  };
  std::unordered_map<UserId, Entry> users_;
};

}  // namespace sb::presence
