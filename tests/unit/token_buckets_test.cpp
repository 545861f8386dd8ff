// TokenBuckets: the one rate-limit mechanism behind login throttling, the per-address
// connect rate and the daily upload quota.
#include "base/token_buckets.h"

#include <gtest/gtest.h>

#include <string>

namespace sb {
namespace {

TEST(TokenBuckets, BurstThenRefillAtTheRate) {
  TokenBuckets<std::string> b(3, 2, 100);  // 3 at once, 2 a second
  int64_t t = 1'000'000;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(b.Take("ip", 1, t)) << i;
  int64_t wait = 0;
  EXPECT_FALSE(b.Take("ip", 1, t, true, &wait));
  EXPECT_EQ(wait, 1) << "half a second to the next token, rounded up";
  EXPECT_TRUE(b.Take("other", 1, t)) << "keys are independent";
  EXPECT_FALSE(b.Take("ip", 1, t + 400));
  EXPECT_TRUE(b.Take("ip", 1, t + 600));
  // Never above the burst, however long the wait.
  t += 3'600'000;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(b.Take("ip", 1, t)) << i;
  EXPECT_FALSE(b.Take("ip", 1, t));
  // A clock that steps back refills nothing and takes nothing away.
  EXPECT_FALSE(b.Take("ip", 1, t - 10'000));
}

TEST(TokenBuckets, CheckingDoesNotCharge) {
  TokenBuckets<int> b(2, 1, 100);
  EXPECT_TRUE(b.Take(7, 2, 0, /*charge=*/false));
  EXPECT_TRUE(b.Take(7, 2, 0, false));
  EXPECT_TRUE(b.Take(7, 2, 0));
  EXPECT_FALSE(b.Take(7, 1, 0, false));
}

TEST(TokenBuckets, WaitIsWhenAmountsFitOrNever) {
  TokenBuckets<int> b(86'400, 1, 100);  // a "day" of units, one a second
  EXPECT_TRUE(b.Take(1, 86'000, 0));
  int64_t wait = 0;
  EXPECT_FALSE(b.Take(1, 1'000, 0, true, &wait));
  EXPECT_EQ(wait, 600);
  EXPECT_FALSE(b.Take(1, 1'000, 100'000, true, &wait));
  EXPECT_EQ(wait, 500);
  EXPECT_FALSE(b.Take(1, 90'000, 100'000, true, &wait));
  EXPECT_EQ(wait, -1) << "more than the burst never fits";
  EXPECT_TRUE(b.Take(1, 999, 600'000));
}

TEST(TokenBuckets, MemoryIsBoundedWithoutForgettingDrainedKeysNeedlessly) {
  TokenBuckets<int> b(1, 1, 10);
  // Ten keys, all drained: the eleventh key finds no full bucket to drop, so all go
  // (which admits: a forgotten key starts full).
  for (int k = 0; k < 10; ++k) EXPECT_TRUE(b.Take(k, 1, 0));
  EXPECT_EQ(b.size(), 10u);
  EXPECT_TRUE(b.Take(10, 1, 0));
  EXPECT_EQ(b.size(), 1u);
  EXPECT_TRUE(b.Take(0, 1, 0)) << "forgotten: full again";

  // Keys that refilled are dropped first; a draining one keeps its state.
  TokenBuckets<int> c(1, 1, 10);
  for (int k = 0; k < 9; ++k) EXPECT_TRUE(c.Take(k, 1, 0));
  EXPECT_TRUE(c.Take(99, 1, 5'000));  // key 99 drained at 5 s; 0..8 are full again by then
  EXPECT_EQ(c.size(), 10u);
  EXPECT_TRUE(c.Take(100, 1, 5'000));  // the 11th key: the nine refilled ones go
  EXPECT_EQ(c.size(), 2u);
  EXPECT_FALSE(c.Take(99, 1, 5'000)) << "still drained: remembered";
}

}  // namespace
}  // namespace sb
