#include "base/cpu_meter.h"

#include <gtest/gtest.h>
#include <time.h>
#include <unistd.h>

namespace sb {
namespace {

int64_t ThreadCpuNs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// The caller's own CPU time counts as free: a thread that keeps one CPU busy sees at
// least its share of the machine free, whatever else runs.
TEST(FreeCpuMeter, CountsTheCallersOwnTimeAsFree) {
  FreeCpuMeter meter;
  const int64_t start = ThreadCpuNs();
  volatile uint64_t sink = 0;
  while (ThreadCpuNs() - start < 300'000'000) sink = sink + 1;  // 300 ms of this thread's CPU
  std::optional<double> free = meter.Sample();
  ASSERT_TRUE(free.has_value()) << "/proc/stat unreadable";
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  EXPECT_GE(*free, 0.7 / static_cast<double>(cpus));  // ticks are 10 ms: some slack
  EXPECT_LE(*free, 1.0);
}

}  // namespace
}  // namespace sb
