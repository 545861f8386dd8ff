// Group commit. Shards hand sequenced messages (and receipt/cursor changes) to one
// commit thread, which writes whatever has accumulated as one atomic store batch (one
// fsync for the lot), then hands each item back to the shard that pushed it. Commits
// are paced: at most one per `min_interval_us` once commits are shared, so a lightly
// loaded server does not spend an fsync (and a wake-up of every shard) on each message.
//
// Ordering: items pushed by one shard are committed and handed back in push order,
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
#include <optional>
#include <thread>
#include <vector>

#include "store/store.h"

namespace sb::chat {

// A member's receipt state moved (or only a device cursor did): written in the next
// batch, then routed to the senders of the covered messages by the owner shard.
struct ReceiptChange {
  ConvId conv = 0;
  store::MemberReceipt before;  // the member's state before this change
  store::MemberReceipt after;   // what is written
  std::optional<store::DeviceCursor> cursor;
  bool member_moved = false;
};

class CommitQueue {
 public:
  // Called on the commit thread after each successful commit with the items of one
  // owner shard, in push order.
  using Done = std::function<void(uint32_t shard, std::vector<store::Message>&& msgs,
                                  std::vector<ReceiptChange>&& receipts)>;

  // Called on the commit thread after each commit with the new messages (derived
  // indexes such as search); must be quick.
  using AfterCommit = std::function<void(const std::vector<store::Message>&)>;

  // `min_interval_us`: the shortest time between the starts of two commits (0: none);
  // a commit waits out the rest of it for more items unless `max_batch` are waiting,
  // or it would be alone (the last commit had one item and one waits).
  CommitQueue(store::Store& store, size_t max_batch, int64_t min_interval_us, Done done,
              AfterCommit after = nullptr);
  ~CommitQueue();

  void Start();
  // Commits everything already pushed, then stops the thread.
  void Stop();
  // Thread-safe. Returns false (and keeps nothing) when more than `max_queued`
  // items wait: the caller answers "unavailable" and the client retries.
  // `rewrite`: the new version of an earlier message (the target of an edit or
  // delete), written in the same batch.
  bool Push(uint32_t owner_shard, store::Message&& m, size_t max_queued,
            std::optional<store::Message> rewrite = std::nullopt);
  // Receipt changes are never refused: they are small and bounded by what was sent.
  void PushReceipt(uint32_t owner_shard, ReceiptChange&& r);
  size_t Queued() const;

 private:
  void Run();
  // With mu_ held, after a push: whether the commit thread may be waiting for it.
  bool WakesCommitter() const;

  struct Item {
    uint32_t shard;
    bool is_receipt;
    int64_t queued_ns;  // MonoNs() at the push
    store::Message msg;
    ReceiptChange receipt;
    std::optional<store::Message> rewrite;
  };

  store::Store& store_;
  const size_t max_batch_;
  const int64_t min_interval_ns_;
  Done done_;
  AfterCommit after_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Item> queue_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sb::chat
