#include "chat/commit_queue.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "base/clock.h"
#include "base/log.h"
#include "metrics/metrics.h"

namespace sb::chat {

CommitQueue::CommitQueue(store::Store& store, size_t max_batch, int64_t min_interval_us, Done done,
                         AfterCommit after)
    : store_(store),
      max_batch_(max_batch),
      min_interval_ns_(std::max<int64_t>(0, min_interval_us) * 1000),
      done_(std::move(done)),
      after_(std::move(after)) {}

CommitQueue::~CommitQueue() { Stop(); }

void CommitQueue::Start() {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "commit");
    Run();
  });
}

void CommitQueue::Stop() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool CommitQueue::Push(uint32_t owner_shard, store::Message&& m, size_t max_queued,
                       std::optional<store::Message> rewrite) {
  bool wake;
  const int64_t now = MonoNs();
  {
    std::lock_guard lk(mu_);
    if (queue_.size() >= max_queued) return false;
    queue_.push_back(Item{owner_shard, false, now, std::move(m), {}, std::move(rewrite)});
    wake = WakesCommitter();
  }
  if (wake) cv_.notify_one();
  return true;
}

void CommitQueue::PushReceipt(uint32_t owner_shard, ReceiptChange&& r) {
  bool wake;
  const int64_t now = MonoNs();
  {
    std::lock_guard lk(mu_);
    queue_.push_back(Item{owner_shard, true, now, {}, std::move(r), std::nullopt});
    wake = WakesCommitter();
  }
  if (wake) cv_.notify_one();
}

// The commit thread waits for the first item, or (pacing) for a full batch: only
// those pushes can end its wait. The others would wake it for nothing, once per item.
bool CommitQueue::WakesCommitter() const { return queue_.size() == 1 || queue_.size() == max_batch_; }

size_t CommitQueue::Queued() const {
  std::lock_guard lk(mu_);
  return queue_.size();
}

void CommitQueue::Run() {
  std::vector<Item> taken;
  store::CommitBatch batch;
  std::vector<std::vector<store::Message>> msgs_by_shard;
  std::vector<std::vector<ReceiptChange>> rcpt_by_shard;
  auto& m = metrics::Server();
  int64_t last_start_ns = 0;
  size_t last_taken = 0;
  for (;;) {
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty() && stop_) return;
      // Pacing: a commit starts at least min_interval after the previous one, unless
      // a whole batch is already waiting (or the queue stops). Busy, commits take that
      // long anyway and nothing waits; lightly loaded, what arrives meanwhile shares
      // one write and one fsync instead of each taking its own (an fsync costs
      // ~60-90 us of CPU here, and a wake-up of each shard follows every commit).
      // Only when there is company, though: the last commit carried more than one
      // item, or more than one waits. A lone writer waiting for each ack (one item
      // per commit) would only be slowed down, with nothing to share the fsync.
      if (min_interval_ns_ > 0 && !stop_ && queue_.size() < max_batch_ &&
          (last_taken >= 2 || queue_.size() >= 2)) {
        const int64_t due = last_start_ns + min_interval_ns_;
        const int64_t now = MonoNs();
        if (now < due)
          cv_.wait_for(lk, std::chrono::nanoseconds(due - now),
                       [&] { return stop_ || queue_.size() >= max_batch_; });
      }
      last_start_ns = MonoNs();
      // Whatever accumulated while the last fsync ran is the next batch: the busier
      // the server, the bigger the batches, the fewer fsyncs per message.
      if (queue_.size() <= max_batch_) {
        taken.swap(queue_);
      } else {
        taken.assign(std::make_move_iterator(queue_.begin()),
                     std::make_move_iterator(queue_.begin() + static_cast<std::ptrdiff_t>(max_batch_)));
        queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(max_batch_));
      }
      last_taken = taken.size();
    }
    for (const Item& it : taken)
      m.commit_queue_wait_seconds.Observe(static_cast<double>(last_start_ns - it.queued_ns) / 1e9);
    batch.messages.clear();
    batch.rewrites.clear();
    batch.receipts.clear();
    batch.cursors.clear();
    for (Item& it : taken) {
      if (!it.is_receipt) {
        batch.messages.push_back(std::move(it.msg));
        if (it.rewrite) batch.rewrites.push_back(std::move(*it.rewrite));
        continue;
      }
      if (it.receipt.member_moved) batch.receipts.emplace_back(it.receipt.conv, it.receipt.after);
      if (it.receipt.cursor) batch.cursors.push_back(*it.receipt.cursor);
    }

    int64_t t0 = MonoNs();
    Status s = store_.Commit(batch);
    if (!s.ok()) {
      LOG_ERROR("store_commit_failed").Kv("error", s.message()).Kv("batch", taken.size());
      std::abort();
    }
    m.store_commit_seconds.Observe(static_cast<double>(MonoNs() - t0) / 1e9);
    m.store_commit_batch_size.Observe(static_cast<double>(batch.messages.size()));
    m.store_commits.Inc();
    m.store_commit_messages.Inc(batch.messages.size());
    if (after_ && !batch.messages.empty()) after_(batch.messages);

    uint32_t max_shard = 0;
    for (const Item& it : taken) max_shard = std::max(max_shard, it.shard);
    msgs_by_shard.resize(std::max<size_t>(msgs_by_shard.size(), max_shard + 1));
    rcpt_by_shard.resize(msgs_by_shard.size());
    size_t next_msg = 0;
    for (Item& it : taken) {
      if (it.is_receipt) rcpt_by_shard[it.shard].push_back(std::move(it.receipt));
      else msgs_by_shard[it.shard].push_back(std::move(batch.messages[next_msg++]));
    }
    taken.clear();
    for (uint32_t sh = 0; sh < msgs_by_shard.size(); ++sh) {
      if (msgs_by_shard[sh].empty() && rcpt_by_shard[sh].empty()) continue;
      done_(sh, std::move(msgs_by_shard[sh]), std::move(rcpt_by_shard[sh]));
      msgs_by_shard[sh] = {};
      rcpt_by_shard[sh] = {};
    }
  }
}

}  // namespace sb::chat
