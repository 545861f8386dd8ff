// A log-linear latency histogram in the spirit of HdrHistogram, small enough to own.
//
// Values are unsigned integers (the load generator records nanoseconds). Below 128
// every value has its own bucket; above, each power-of-two octave is split into 128
// equal buckets, so a bucket is at most 1/128 of its lower bound wide and the midpoint
// we report is within 0.4% of any value that fell in it. Octaves run up to 2^36 ns
// (~68.7 s), which covers 1 µs .. 60 s with room; larger values land in the last
// bucket, and the exact min and max are kept on the side so the extremes are never
// rounded. Fixed size (3,840 counters, 30 KiB), no allocation while recording, so one
// histogram per thread per metric is cheap and merging is a plain element-wise sum.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <limits>

namespace sb::bench {

class Histogram {
 public:
  static constexpr int kSubBits = 7;
  static constexpr uint64_t kSub = uint64_t{1} << kSubBits;  // buckets per octave
  static constexpr int kMaxExp = 35;                          // top octave [2^35, 2^36)
  static constexpr size_t kBuckets = (kMaxExp - kSubBits + 2) * kSub;
  static constexpr uint64_t kMaxTrackable = (uint64_t{1} << (kMaxExp + 1)) - 1;

  void Record(uint64_t v) { RecordN(v, 1); }

  void RecordN(uint64_t v, uint64_t n) {
    if (n == 0) return;
    counts_[Index(std::min(v, kMaxTrackable))] += n;
    total_ += n;
    sum_ += static_cast<double>(v) * static_cast<double>(n);
    min_ = std::min(min_, v);
    max_ = std::max(max_, v);
  }

  // Negative values (a clock that went backwards across threads) count as zero rather
  // than wrapping to 2^64 and poisoning the maximum.
  void RecordSigned(int64_t v) { Record(v < 0 ? 0 : static_cast<uint64_t>(v)); }

  void Merge(const Histogram& o) {
    for (size_t i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
    total_ += o.total_;
    sum_ += o.sum_;
    min_ = std::min(min_, o.min_);
    max_ = std::max(max_, o.max_);
  }

  void Reset() { *this = Histogram(); }

  uint64_t Count() const { return total_; }
  uint64_t Min() const { return total_ ? min_ : 0; }
  uint64_t Max() const { return total_ ? max_ : 0; }
  double Mean() const { return total_ ? sum_ / static_cast<double>(total_) : 0.0; }

  // The value at or below which p percent of the recorded values lie (p in [0, 100]),
  // as the midpoint of the bucket that holds that rank, clamped to the exact extremes.
  uint64_t Percentile(double p) const {
    if (total_ == 0) return 0;
    if (p <= 0) return min_;
    if (p >= 100) return max_;
    // Rank of the wanted value, 1-based; ceil so p99 of 100 values is the 99th.
    double want = p / 100.0 * static_cast<double>(total_);
    uint64_t rank = static_cast<uint64_t>(want);
    if (static_cast<double>(rank) < want) ++rank;
    if (rank == 0) rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) {
        uint64_t mid = BucketLow(i) + BucketWidth(i) / 2;
        return std::clamp(mid, min_, max_);
      }
    }
    return max_;
  }

  // Bucket geometry, public so a test can check the precision claim.
  static size_t Index(uint64_t v) {
    if (v < kSub) return static_cast<size_t>(v);
    int e = std::bit_width(v) - 1;  // v in [2^e, 2^(e+1)), e >= kSubBits
    int shift = e - kSubBits;       // (v >> shift) in [kSub, 2*kSub)
    return static_cast<size_t>((shift + 1) * kSub + ((v >> shift) - kSub));
  }
  static uint64_t BucketLow(size_t i) {
    if (i < kSub) return i;
    uint64_t shift = i / kSub - 1;
    return (kSub + i % kSub) << shift;
  }
  static uint64_t BucketWidth(size_t i) {
    if (i < kSub) return 1;
    return uint64_t{1} << (i / kSub - 1);
  }

 private:
  std::array<uint64_t, kBuckets> counts_{};
  uint64_t total_ = 0;
  double sum_ = 0;
  uint64_t min_ = std::numeric_limits<uint64_t>::max();
  uint64_t max_ = 0;
};

}  // namespace sb::bench
