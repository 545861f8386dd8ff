// How much of the machine's CPU was left over: read from /proc/stat, for work that
// should only run when the machine has room (the search indexer yields to the chat
// path while it has none; src/search/README.md, "Yielding").
#pragma once

#include <cstdint>
#include <optional>

namespace sb {

class FreeCpuMeter {
 public:
  // The share of all CPUs' time, since the previous call on this meter, that was idle
  // (iowait included) or spent by the calling thread itself: what the caller could
  // use without taking it from anyone. The first call measures since the meter was
  // made. nullopt when /proc/stat cannot be read or no tick has passed (a window
  // shorter than the kernel's 10 ms clock tick). Call from one thread.
  std::optional<double> Sample();

 private:
  struct Reading {
    uint64_t total = 0;  // ticks of every kind except guest (already in user)
    uint64_t idle = 0;   // idle + iowait ticks
    int64_t own_ns = 0;  // the calling thread's CPU time
  };
  static std::optional<Reading> Read();

  std::optional<Reading> last_ = Read();
};

}  // namespace sb
