// An Executor whose tasks run only when someone calls RunAll: tests, fuzz targets and
// in-process benchmarks drive the chat core's shards with it, deterministically and
// without Asio. Post is thread-safe (the commit thread posts too).
#pragma once

#include <deque>
#include <mutex>

#include "chat/executor.h"

namespace sb::chat {

class ManualExecutor final : public Executor {
 public:
  void Post(Task t) override {
    std::lock_guard lk(mu_);
    q_.push_back(std::move(t));
  }
  // Runs the oldest queued task, if any; false when none was queued.
  bool RunOne() {
    Task t;
    {
      std::lock_guard lk(mu_);
      if (q_.empty()) return false;
      t = std::move(q_.front());
      q_.pop_front();
    }
    t();
    return true;
  }
  // Tasks queued now.
  size_t Size() {
    std::lock_guard lk(mu_);
    return q_.size();
  }
  // Runs the tasks queued now, not those they post; how many ran.
  size_t RunQueued() {
    size_t n = Size();
    for (size_t i = 0; i < n; ++i) RunOne();
    return n;
  }
  // Runs queued tasks, including those they post, until none is left; how many ran.
  size_t RunAll() {
    size_t n = 0;
    for (;;) {
      Task t;
      {
        std::lock_guard lk(mu_);
        if (q_.empty()) return n;
        t = std::move(q_.front());
        q_.pop_front();
      }
      t();
      ++n;
    }
  }

 private:
  std::mutex mu_;
  std::deque<Task> q_;
};

}  // namespace sb::chat
