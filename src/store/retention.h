// History retention: messages older than the configured age are dropped in whole time
// buckets (calendar months by default, UTC), the way a store partitioned by month drops
// a partition. A bucket goes only once all of it is older than the retention age, so a
// message is kept at least that long and at most one bucket longer.
//
// The pass needs no index of buckets: seqs are assigned in server-time order, so the
// first kept message of a conversation is found by binary search over seq (log n point
// reads), and only for conversations whose oldest kept message is past the cut-off
// (one point read for every other conversation). Dropping is one range deletion per
// conversation (Store::DropHistoryBefore). A resume whose cursor lies below what was
// kept reports the conversation in `resume_done.truncated`.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "store/store.h"

namespace sb::store {

enum class RetentionBucket { kSecond, kMinute, kHour, kDay, kWeek, kMonth };

// "second" | "minute" | "hour" | "day" | "week" | "month".
std::optional<RetentionBucket> ParseRetentionBucket(std::string_view s);
// A duration: "0" (keep forever), or a number with a unit: "90s", "15m", "12h", "30d",
// "5y" (a year is 365 days). Milliseconds; nullopt when malformed or negative.
std::optional<int64_t> ParseRetentionAge(std::string_view s);

// The start of the bucket containing `ms` (UTC; weeks start on Monday).
int64_t BucketStart(int64_t ms, RetentionBucket b);

// Messages with server_ms below this are in buckets wholly older than `age_ms` at
// `now_ms`: they may be dropped.
inline int64_t RetentionCutoff(int64_t now_ms, int64_t age_ms, RetentionBucket b) {
  return BucketStart(now_ms - age_ms, b);
}

struct RetentionStats {
  uint64_t conversations = 0;  // looked at
  uint64_t trimmed = 0;        // had something dropped
  uint64_t dropped = 0;        // messages dropped
};

// Told, for every conversation whose history no longer starts at seq 1, the first seq
// kept: derived data (the search index) drops what the store dropped. Called on every
// pass, not only when this pass dropped something, so a derived copy that missed a drop
// (a crash before it applied it) converges at the next pass.
using TrimmedFn = std::function<void(ConvId conv, Seq first_kept)>;

// One pass over every conversation: drops the messages with server_ms < cutoff_ms,
// keeping seq order (the first kept message is the first one at or after the cut-off).
// Stops at the first store error.
Result<RetentionStats> RunRetention(Store& store, int64_t cutoff_ms, const TrimmedFn& trimmed = nullptr);

}  // namespace sb::store
