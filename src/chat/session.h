// A connected device as the chat core sees it. Implemented by the gateway's WebSocket
// session. Owned by the gateway; lives on exactly one shard thread, and the core calls
// it only on that thread, between Attach and Detach.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "base/ids.h"

namespace sb::chat {

class Session {
 public:
  virtual ~Session() = default;
  // Unique within the process for its lifetime.
  virtual uint64_t id() const = 0;
  virtual UserId user() const = 0;
  virtual const std::string& device_id() const = 0;
  virtual const std::string& session_id() const = 0;
  // Queues one text frame. Never blocks. If the session's bounded send queue would
  // overflow, the session closes itself (the client resumes); nothing is dropped
  // silently.
  virtual void Send(std::shared_ptr<const std::string> frame) = 0;
  // Closes the connection with a WebSocket close code after what is queued (the client
  // reconnects; e.g. 1008 when its device was logged out).
  virtual void Close(uint16_t code, std::string_view reason) = 0;
  // Frames queued and not yet written.
  virtual size_t Queued() const = 0;
  // Runs `fn` (on the session's thread) once fewer than `frames` are queued; at once
  // if that is already so. Replays use it so that a catch-up of 10,000 messages flows
  // at the client's pace instead of overflowing the queue. If the session closes
  // first, `fn` is dropped.
  virtual void WhenQueueBelow(size_t frames, std::function<void()> fn) = 0;
};

}  // namespace sb::chat
