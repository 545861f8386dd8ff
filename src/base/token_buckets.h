// Token buckets by key: the rate limits of the server (login attempts per address and
// per account, connects per address, upload bytes per user per day) are each one of
// these. Every key may take up to `burst` at once and refills at `per_second`; a key
// seen for the first time starts full.
//
// Memory is bounded: at `max_keys` keys, those whose bucket has refilled completely are
// dropped (they hold nothing a fresh bucket would not); if that frees less than half (a
// spray of keys all still draining), all are dropped, which only ever errs on the side
// of admitting. Either way a trim makes room for at least max_keys / 2 new keys, so its
// cost is amortised. Not thread-safe: the owner locks, or keeps one per thread.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <unordered_map>

namespace sb {

template <typename Key, typename Hash = std::hash<Key>>
class TokenBuckets {
 public:
  TokenBuckets(double burst, double per_second, size_t max_keys)
      : burst_(burst), per_ms_(per_second / 1000.0), max_keys_(max_keys) {}

  // Takes `n` from `key`'s bucket at `now_ms` when it holds them (or only checks, with
  // charge = false). When it does not, *wait_s (if given) is the number of seconds
  // until it will, rounded up, or -1 when it never can (n > burst).
  bool Take(const Key& key, double n, int64_t now_ms, bool charge = true, int64_t* wait_s = nullptr) {
    if (buckets_.size() >= max_keys_ && !buckets_.count(key)) Trim(now_ms);
    auto [it, fresh] = buckets_.try_emplace(key, Bucket{burst_, now_ms});
    Bucket& b = it->second;
    if (!fresh) b.tokens = Level(b, now_ms);
    b.at_ms = now_ms;
    if (b.tokens >= n) {
      if (charge) b.tokens -= n;
      return true;
    }
    if (wait_s) {
      *wait_s = n > burst_ || per_ms_ <= 0 ? -1
                                           : static_cast<int64_t>(std::ceil((n - b.tokens) / per_ms_ / 1000.0 - 1e-6));
    }
    return false;
  }

  size_t size() const { return buckets_.size(); }

 private:
  struct Bucket {
    double tokens;
    int64_t at_ms;
  };
  double Level(const Bucket& b, int64_t now_ms) const {
    return std::min(burst_, b.tokens + static_cast<double>(std::max<int64_t>(now_ms - b.at_ms, 0)) * per_ms_);
  }
  void Trim(int64_t now_ms) {
    std::erase_if(buckets_, [&](const auto& e) { return Level(e.second, now_ms) >= burst_; });
    if (buckets_.size() >= max_keys_ / 2) buckets_.clear();
  }

  double burst_;
  double per_ms_;
  size_t max_keys_;
  std::unordered_map<Key, Bucket, Hash> buckets_;
};

}  // namespace sb
