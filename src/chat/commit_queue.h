// Group commit. Shards hand sequenced messages to one commit thread, which writes
// whatever has accumulated as one atomic store batch (one fsync for the lot), then
// hands each message back to the shard that owns its conversation.
//
// Ordering: messages pushed by one shard are committed and handed back in push order,
// so a conversation's messages (all pushed by its owning shard, in seq order) reach
// the store and come back in seq order. A failed commit is fatal (the process
// aborts): the sequencer has already handed out those seqs, and continuing would
// leave a gap. Restart recovers from the store; nothing acknowledged is lost, because
// nothing in the failed batch was acknowledged.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "store/store.h"

namespace sb::chat {

class CommitQueue {
 public:
  // Called on the commit thread after each successful commit with the messages of one
  // owner shard, in push order.
  using Done = std::function<void(uint32_t shard, std::vector<store::Message>&& msgs)>;

  CommitQueue(store::Store& store, size_t max_batch, Done done);
  ~CommitQueue();

  void Start();
  // Commits everything already pushed, then stops the thread.
  void Stop();
  // Thread-safe. Returns false (and keeps nothing) when more than `max_queued`
  // messages wait: the caller answers "unavailable" and the client retries.
  bool Push(uint32_t owner_shard, store::Message&& m, size_t max_queued);
  size_t Queued() const;

 private:
  void Run();

  store::Store& store_;
  const size_t max_batch_;
  Done done_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<uint32_t, store::Message>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sb::chat
