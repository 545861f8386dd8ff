// The chat core runs on shards: one event-loop thread each. It knows a shard only
// through this interface, so the core has no dependency on Asio and tests can drive
// it with a hand-cranked executor.
#pragma once

#include <functional>

namespace sb::chat {

using Task = std::function<void()>;

class Executor {
 public:
  virtual ~Executor() = default;
  // Runs `t` later on this executor's thread. Tasks posted from one thread run in the
  // order they were posted (FIFO): per-conversation order relies on it.
  virtual void Post(Task t) = 0;
};

}  // namespace sb::chat
