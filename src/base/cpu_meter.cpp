#include "base/cpu_meter.h"

#include <time.h>
#include <unistd.h>

#include <cstdio>

namespace sb {

std::optional<FreeCpuMeter::Reading> FreeCpuMeter::Read() {
  std::FILE* f = std::fopen("/proc/stat", "re");
  if (!f) return std::nullopt;
  // "cpu  user nice system idle iowait irq softirq steal guest guest_nice" (USER_HZ ticks)
  unsigned long long v[8] = {};
  int n = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                      &v[5], &v[6], &v[7]);
  std::fclose(f);
  if (n < 5) return std::nullopt;  // steal and the rest are absent on old kernels
  Reading r;
  for (int i = 0; i < n; ++i) r.total += v[i];
  r.idle = v[3] + v[4];
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return std::nullopt;
  r.own_ns = static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  return r;
}

std::optional<double> FreeCpuMeter::Sample() {
  std::optional<Reading> now = Read();
  if (!now) return std::nullopt;
  std::optional<Reading> before = last_;
  if (!before || now->total <= before->total) {
    if (!before) last_ = now;
    return std::nullopt;  // keep the start of the window until a tick has passed
  }
  last_ = now;
  static const long kTicksPerS = sysconf(_SC_CLK_TCK);
  const double total = static_cast<double>(now->total - before->total);
  const double own_ticks = static_cast<double>(now->own_ns - before->own_ns) * static_cast<double>(kTicksPerS) / 1e9;
  double free = (static_cast<double>(now->idle - before->idle) + own_ticks) / total;
  return free < 0 ? 0 : (free > 1 ? 1 : free);
}

}  // namespace sb
