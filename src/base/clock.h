// Time sources. Code that decides by time (token expiry, dedup windows, presence)
// takes a Clock so tests can drive it instead of sleeping.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace sb {

inline int64_t WallMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}
inline int64_t MonoNs() {
  using namespace std::chrono;
  return duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
}

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() const = 0;  // Unix milliseconds
};

class SystemClock final : public Clock {
 public:
  int64_t NowMs() const override { return WallMs(); }
  static const SystemClock& Instance() {
    static const SystemClock c;
    return c;
  }
};

// A clock tests move by hand. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_ms) : now_(start_ms) {}
  int64_t NowMs() const override { return now_.load(); }
  void Advance(int64_t ms) { now_ += ms; }
  void Set(int64_t ms) { now_ = ms; }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace sb
