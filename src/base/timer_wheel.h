// A hashed timing wheel for deadlines that are many, coarse and mostly moved or
// cancelled before they fire: keep-alive pings, idle and presence timeouts, token
// expiry. Each object carries its link (WheelHook), so scheduling and cancelling are
// O(1) with no allocation, and Expire visits only the slots whose time has come
// instead of every object: a shard with 500,000 idle connections looks at the few
// whose deadline passed, not at all of them every second.
//
// Time is split into ticks (1 s by default) and the wheel has a fixed number of slots;
// a deadline further away than one turn of the wheel waits in its slot for its lap.
// Deadlines are met to the tick: Expire(now) fires everything due at or before `now`
// among the slots it visits, so a caller that expires once per tick fires each
// deadline at most one tick late. Deadlines in the past fire at the next Expire.
//
// Lazy use is the cheap way to track activity: schedule the earliest moment something
// *could* be due, and when it fires, check whether it really is (the object may have
// been active since) and schedule the next moment if not.
//
// Not thread-safe: one wheel per event loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>

namespace sb {

// The link of an object in one TimerWheel: an object that can be scheduled derives
// from it. Not copyable: a copy would be linked to nothing while its neighbours point
// at the original.
class WheelHook {
 public:
  WheelHook() = default;
  WheelHook(const WheelHook&) = delete;
  WheelHook& operator=(const WheelHook&) = delete;

  bool scheduled() const { return wheel_prev_ != nullptr; }
  int64_t due_ms() const { return wheel_due_; }

 private:
  template <typename T>
  friend class TimerWheel;
  WheelHook* wheel_prev_ = nullptr;
  WheelHook* wheel_next_ = nullptr;
  int64_t wheel_due_ = 0;
};

template <typename T>
class TimerWheel {
  static_assert(std::is_base_of_v<WheelHook, T>, "a scheduled type derives from WheelHook");

 public:
  explicit TimerWheel(int64_t now_ms, int64_t tick_ms = 1000, size_t slots = 64)
      : tick_ms_(tick_ms > 0 ? tick_ms : 1),
        nslots_(slots > 0 ? slots : 1),
        slots_(std::make_unique<WheelHook[]>(nslots_)),
        cursor_(TickOf(now_ms)) {
    for (size_t i = 0; i < nslots_; ++i) slots_[i].wheel_prev_ = slots_[i].wheel_next_ = &slots_[i];
  }
  ~TimerWheel() {
    // Objects outlive the wheel only at shutdown; leave their hooks unlinked.
    for (size_t i = 0; i < nslots_; ++i) {
      WheelHook* s = &slots_[i];
      while (s->wheel_next_ != s) Unlink(s->wheel_next_);
    }
  }
  TimerWheel(const TimerWheel&) = delete;
  TimerWheel& operator=(const TimerWheel&) = delete;

  // (Re)schedules `obj` at `due_ms`, replacing any earlier schedule.
  void Schedule(T* obj, int64_t due_ms) {
    WheelHook& h = *obj;
    if (h.scheduled()) Unlink(&h);
    h.wheel_due_ = due_ms;
    int64_t tick = TickOf(due_ms);
    if (tick < cursor_) tick = cursor_;  // already past: fires at the next Expire
    LinkBefore(&slots_[SlotOf(tick)], &h);
    ++size_;
  }

  // Schedules `obj` at `due_ms` unless it is already scheduled at or before it.
  void ScheduleNoLater(T* obj, int64_t due_ms) {
    const WheelHook& h = *obj;
    if (!h.scheduled() || due_ms < h.wheel_due_) Schedule(obj, due_ms);
  }

  void Cancel(T* obj) {
    WheelHook& h = *obj;
    if (h.scheduled()) Unlink(&h);
  }

  size_t size() const { return size_; }

  // Calls fn(T*) for every object due at or before `now_ms`, each unscheduled first.
  // fn may schedule or cancel any object (the one it was given included), and may
  // destroy the one it was given, which is no longer linked.
  template <typename F>
  void Expire(int64_t now_ms, F&& fn) {
    const int64_t end = TickOf(now_ms);
    if (end < cursor_) return;
    // Visit every tick from the cursor to now once; after a long pause, each slot once.
    const int64_t span = end - cursor_ + 1;
    const int64_t visits = span < static_cast<int64_t>(nslots_) ? span : static_cast<int64_t>(nslots_);
    for (int64_t i = 0; i < visits; ++i) {
      WheelHook* slot = &slots_[SlotOf(cursor_ + i)];
      if (slot->wheel_next_ == slot) continue;
      // Move the slot's objects to a local list: what fn schedules meanwhile (even
      // into this slot) waits for a later Expire, and what fn cancels leaves the
      // local list as it would the slot.
      WheelHook pending;
      pending.wheel_prev_ = pending.wheel_next_ = &pending;
      Splice(slot, &pending);
      while (pending.wheel_next_ != &pending) {
        WheelHook* h = pending.wheel_next_;
        if (h->wheel_due_ > now_ms) {
          // A later lap of this slot, or later within the current tick: back it goes.
          Unlink(h);
          int64_t tick = TickOf(h->wheel_due_);
          LinkBefore(&slots_[SlotOf(tick < cursor_ ? cursor_ : tick)], h);
          ++size_;
          continue;
        }
        Unlink(h);
        fn(static_cast<T*>(h));
      }
    }
    // The current tick stays the cursor: what is due later within it fires next time.
    cursor_ = end;
  }

 private:
  int64_t TickOf(int64_t ms) const { return ms >= 0 ? ms / tick_ms_ : -((-ms + tick_ms_ - 1) / tick_ms_); }
  size_t SlotOf(int64_t tick) const {
    int64_t m = tick % static_cast<int64_t>(nslots_);
    return static_cast<size_t>(m < 0 ? m + static_cast<int64_t>(nslots_) : m);
  }
  static void LinkBefore(WheelHook* at, WheelHook* h) {
    h->wheel_prev_ = at->wheel_prev_;
    h->wheel_next_ = at;
    at->wheel_prev_->wheel_next_ = h;
    at->wheel_prev_ = h;
  }
  void Unlink(WheelHook* h) {
    h->wheel_prev_->wheel_next_ = h->wheel_next_;
    h->wheel_next_->wheel_prev_ = h->wheel_prev_;
    h->wheel_prev_ = h->wheel_next_ = nullptr;
    --size_;
  }
  // Moves every hook of list `from` to the empty list `to` (sizes unchanged).
  static void Splice(WheelHook* from, WheelHook* to) {
    to->wheel_next_ = from->wheel_next_;
    to->wheel_prev_ = from->wheel_prev_;
    to->wheel_next_->wheel_prev_ = to;
    to->wheel_prev_->wheel_next_ = to;
    from->wheel_prev_ = from->wheel_next_ = from;
  }

  const int64_t tick_ms_;
  const size_t nslots_;
  std::unique_ptr<WheelHook[]> slots_;  // sentinels of circular lists; never move
  int64_t cursor_;                      // the first tick not yet fully expired
  size_t size_ = 0;
};

}  // namespace sb
