// The deadline wheel of the gateway and the chat core: what fires when, what a
// callback may do to the wheel, and that it agrees with a plain scan over many random
// schedules (the sweep it replaced).
#include "base/timer_wheel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <vector>

namespace sb {
namespace {

struct Item : WheelHook {
  explicit Item(int i = 0) : id(i) {}
  int id;
};
using Wheel = TimerWheel<Item>;

std::vector<int> ExpireIds(Wheel& w, int64_t now) {
  std::vector<int> out;
  w.Expire(now, [&](Item* it) { out.push_back(it->id); });
  std::sort(out.begin(), out.end());
  return out;
}

TEST(TimerWheel, FiresWhatIsDueAndNothingElse) {
  Wheel w(10'000);
  Item a{1}, b{2}, c{3};
  w.Schedule(&a, 10'500);
  w.Schedule(&b, 12'000);
  w.Schedule(&c, 11'999);
  EXPECT_EQ(w.size(), 3u);
  EXPECT_TRUE(ExpireIds(w, 10'499).empty());
  EXPECT_EQ(ExpireIds(w, 10'500), std::vector<int>({1}));
  EXPECT_FALSE(a.scheduled());
  EXPECT_TRUE(ExpireIds(w, 11'998).empty());  // c is in the current tick but not due yet
  EXPECT_EQ(ExpireIds(w, 11'999), std::vector<int>({3}));
  EXPECT_EQ(ExpireIds(w, 12'000), std::vector<int>({2}));
  EXPECT_EQ(w.size(), 0u);
}

TEST(TimerWheel, DeadlinesBeyondOneTurnWaitForTheirLap) {
  Wheel w(0, 1000, 8);  // one turn = 8 s
  Item a{1}, b{2};
  w.Schedule(&a, 3'000);
  w.Schedule(&b, 3'000 + 8'000 * 5);  // same slot, five laps later
  EXPECT_EQ(ExpireIds(w, 3'000), std::vector<int>({1}));
  for (int64_t t = 4'000; t < 43'000; t += 1'000) ASSERT_TRUE(ExpireIds(w, t).empty()) << t;
  EXPECT_EQ(ExpireIds(w, 43'000), std::vector<int>({2}));
}

TEST(TimerWheel, PastDeadlinesAndLongPausesFireAtTheNextExpire) {
  Wheel w(100'000, 1000, 16);
  Item a{1}, b{2}, c{3};
  w.Schedule(&a, 5);        // long past
  w.Schedule(&b, 101'000);  // soon
  w.Schedule(&c, 180'000);  // beyond one turn
  // One Expire an hour later (a suspended process): everything due fires once.
  EXPECT_EQ(ExpireIds(w, 3'700'000), std::vector<int>({1, 2, 3}));
  EXPECT_EQ(w.size(), 0u);
  // Scheduling behind the cursor fires at the next Expire.
  w.Schedule(&a, 3'000'000);
  EXPECT_EQ(ExpireIds(w, 3'700'000), std::vector<int>({1}));
}

TEST(TimerWheel, RescheduleAndCancelReplaceTheEarlierSchedule) {
  Wheel w(0);
  Item a{1}, b{2};
  w.Schedule(&a, 2'000);
  w.Schedule(&a, 5'000);  // moved later: not at 2 s
  w.Schedule(&b, 3'000);
  w.Cancel(&b);
  w.Cancel(&b);  // twice is harmless
  EXPECT_EQ(w.size(), 1u);
  EXPECT_TRUE(ExpireIds(w, 4'000).empty());
  w.ScheduleNoLater(&a, 9'000);  // later than its schedule: unchanged
  EXPECT_EQ(a.due_ms(), 5'000);
  w.ScheduleNoLater(&a, 4'500);  // earlier: moved
  EXPECT_EQ(ExpireIds(w, 4'500), std::vector<int>({1}));
}

TEST(TimerWheel, CallbacksMayRescheduleCancelOthersAndDestroy) {
  Wheel w(0);
  auto a = std::make_unique<Item>();
  a->id = 1;
  Item b{2}, c{3};
  w.Schedule(a.get(), 1'000);
  w.Schedule(&b, 1'000);
  w.Schedule(&c, 1'000);
  std::vector<int> fired;
  w.Expire(1'000, [&](Item* it) {
    fired.push_back(it->id);
    if (it->id == 1) {
      a.reset();  // destroyed inside its own callback
    } else {
      // Whichever of b and c fires first cancels the other and reschedules itself,
      // even into the slot being expired: it waits for the next Expire.
      w.Cancel(it == &b ? &c : &b);
      w.Schedule(it, 1'000);
    }
  });
  ASSERT_EQ(fired.size(), 2u);  // a, and one of b / c
  EXPECT_EQ(w.size(), 1u);
  std::vector<int> again = ExpireIds(w, 1'000);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0], fired[1]);
}

TEST(TimerWheel, DestroyingTheWheelUnlinksWhatIsScheduled) {
  Item a{1};
  {
    Wheel w(0);
    w.Schedule(&a, 1'000);
  }
  EXPECT_FALSE(a.scheduled());
}

// Random schedules, reschedules and cancels against a plain map of deadlines: every
// Expire must fire exactly what a scan for "due <= now" finds.
TEST(TimerWheel, AgreesWithAFullScan) {
  std::mt19937_64 rng(7);
  constexpr int kItems = 500;
  std::vector<Item> items(kItems);
  for (int i = 0; i < kItems; ++i) items[i].id = i;
  Wheel w(1'000'000, 1000, 32);
  std::map<int, int64_t> due;  // the model
  int64_t now = 1'000'000;
  for (int round = 0; round < 2'000; ++round) {
    for (int k = 0; k < 20; ++k) {
      int i = static_cast<int>(rng() % kItems);
      switch (rng() % 4) {
        case 0:
          w.Cancel(&items[i]);
          due.erase(i);
          break;
        default: {
          // Mostly within one turn, sometimes several turns away or in the past.
          int64_t d = now + static_cast<int64_t>(rng() % 40'000) - 2'000;
          if (rng() % 10 == 0) d = now + static_cast<int64_t>(rng() % 300'000);
          w.Schedule(&items[i], d);
          due[i] = d;
        }
      }
    }
    now += static_cast<int64_t>(rng() % 2'500);
    std::vector<int> want;
    for (auto it = due.begin(); it != due.end();) {
      if (it->second <= now) {
        want.push_back(it->first);
        it = due.erase(it);
      } else {
        ++it;
      }
    }
    ASSERT_EQ(ExpireIds(w, now), want) << "round " << round;
    ASSERT_EQ(w.size(), due.size());
  }
}

}  // namespace
}  // namespace sb
