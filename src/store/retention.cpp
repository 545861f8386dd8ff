#include "store/retention.h"

#include <charconv>
#include <chrono>

namespace sb::store {

std::optional<RetentionBucket> ParseRetentionBucket(std::string_view s) {
  if (s == "second") return RetentionBucket::kSecond;
  if (s == "minute") return RetentionBucket::kMinute;
  if (s == "hour") return RetentionBucket::kHour;
  if (s == "day") return RetentionBucket::kDay;
  if (s == "week") return RetentionBucket::kWeek;
  if (s == "month") return RetentionBucket::kMonth;
  return std::nullopt;
}

std::optional<int64_t> ParseRetentionAge(std::string_view s) {
  if (s == "0") return 0;
  if (s.size() < 2) return std::nullopt;
  int64_t unit_ms = 0;
  switch (s.back()) {
    case 's': unit_ms = 1000; break;
    case 'm': unit_ms = 60'000; break;
    case 'h': unit_ms = 3'600'000; break;
    case 'd': unit_ms = 86'400'000; break;
    case 'y': unit_ms = 365LL * 86'400'000; break;
    default: return std::nullopt;
  }
  std::string_view num = s.substr(0, s.size() - 1);
  int64_t n = 0;
  auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), n);
  if (ec != std::errc() || p != num.data() + num.size() || n <= 0) return std::nullopt;
  if (n > INT64_MAX / unit_ms / 2) return std::nullopt;  // far beyond any calendar
  return n * unit_ms;
}

int64_t BucketStart(int64_t ms, RetentionBucket b) {
  using namespace std::chrono;
  auto floor_to = [ms](int64_t width) {
    int64_t q = ms / width;
    if (ms % width < 0) --q;
    return q * width;
  };
  switch (b) {
    case RetentionBucket::kSecond: return floor_to(1000);
    case RetentionBucket::kMinute: return floor_to(60'000);
    case RetentionBucket::kHour: return floor_to(3'600'000);
    case RetentionBucket::kDay: return floor_to(86'400'000);
    case RetentionBucket::kWeek: {
      // 1970-01-01 was a Thursday; weeks start on Monday (1970-01-05).
      constexpr int64_t kMonday = 4LL * 86'400'000;
      int64_t w = 7LL * 86'400'000;
      int64_t shifted = ms - kMonday;
      int64_t q = shifted / w;
      if (shifted % w < 0) --q;
      return q * w + kMonday;
    }
    case RetentionBucket::kMonth: {
      sys_days day = floor<days>(sys_time<milliseconds>(milliseconds(ms)));
      year_month_day ymd(day);
      sys_days first = sys_days(ymd.year() / ymd.month() / 1);
      return duration_cast<milliseconds>(first.time_since_epoch()).count();
    }
  }
  return ms;
}

namespace {

// Drops conv's messages with server_ms < cutoff_ms, given the first seq it still holds;
// returns the first seq kept afterwards.
Result<Seq> TrimConversation(Store& store, ConvId conv, Seq first, int64_t cutoff_ms, RetentionStats& stats) {
  auto last = store.LastSeq(conv);
  if (!last.ok()) return last.status();
  if (*last < first) return first;  // nothing stored
  auto server_ms = [&](Seq seq) -> Result<int64_t> {
    auto m = store.GetMessage(conv, seq);
    if (!m.ok()) return m.status();
    return m->server_ms;
  };
  auto oldest = server_ms(first);
  if (!oldest.ok()) return oldest.status();
  if (*oldest >= cutoff_ms) return first;  // the common case: one read
  // The first seq in (first, last + 1] whose message is at or after the cut-off.
  Seq lo = first + 1, hi = *last + 1;
  while (lo < hi) {
    Seq mid = lo + (hi - lo) / 2;
    auto t = server_ms(mid);
    if (!t.ok()) return t.status();
    if (*t >= cutoff_ms) hi = mid;
    else lo = mid + 1;
  }
  if (Status s = store.DropHistoryBefore(conv, lo); !s.ok()) return s;
  ++stats.trimmed;
  stats.dropped += lo - first;
  return lo;
}

}  // namespace

Result<RetentionStats> RunRetention(Store& store, int64_t cutoff_ms, const TrimmedFn& trimmed) {
  RetentionStats stats;
  auto ids = store.AllConversationIds();
  if (!ids.ok()) return ids.status();
  for (ConvId conv : *ids) {
    ++stats.conversations;
    auto first = store.FirstRetained(conv);
    if (!first.ok()) return first.status();
    auto kept = TrimConversation(store, conv, *first, cutoff_ms, stats);
    if (!kept.ok()) return kept.status();
    // Every pass, not only when this one dropped something (retention.h).
    if (trimmed && *kept > 1) trimmed(conv, *kept);
  }
  return stats;
}

}  // namespace sb::store
