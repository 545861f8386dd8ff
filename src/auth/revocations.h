// Devices logged out before their access tokens expired. Access tokens are verified
// locally (no database on reconnect), so revocation is a small in-memory table that
// every node loads at start and that log-out updates: a token of (user, device)
// issued at or before the revocation time is refused. Thread-safe; reads take a
// shared lock only.
#pragma once

#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "auth/tokens.h"

namespace sb::auth {

class Revocations {
 public:
  void Revoke(UserId user, std::string_view device, int64_t at_s) {
    std::unique_lock lk(mu_);
    int64_t& t = by_device_[Key(user, device)];
    t = std::max(t, at_s);
  }
  bool IsRevoked(const Claims& c) const { return IssuedBeforeRevocation(c.user, c.device_id, c.iat); }
  // Whether a credential of (user, device) issued at `issued_s` is revoked. Second
  // granularity (JWT iat): a device that logs in again within the second of its
  // log-out must retry a second later.
  bool IssuedBeforeRevocation(UserId user, std::string_view device, int64_t issued_s) const {
    std::shared_lock lk(mu_);
    if (by_device_.empty()) return false;
    auto it = by_device_.find(Key(user, device));
    return it != by_device_.end() && issued_s <= it->second;
  }
  size_t size() const {
    std::shared_lock lk(mu_);
    return by_device_.size();
  }

 private:
  static std::string Key(UserId user, std::string_view device) {
    std::string k(reinterpret_cast<const char*>(&user), sizeof user);
    k.append(device);
    return k;
  }
  mutable std::shared_mutex mu_;
  std::unordered_map<std::string, int64_t> by_device_;
};

}  // namespace sb::auth
