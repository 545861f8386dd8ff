#include "chat/commit_queue.h"

#include <cstdlib>

#include "base/clock.h"
#include "base/log.h"
#include "metrics/metrics.h"

namespace sb::chat {

CommitQueue::CommitQueue(store::Store& store, size_t max_batch, Done done)
    : store_(store), max_batch_(max_batch), done_(std::move(done)) {}

CommitQueue::~CommitQueue() { Stop(); }

void CommitQueue::Start() { thread_ = std::thread([this] { Run(); }); }

void CommitQueue::Stop() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool CommitQueue::Push(uint32_t owner_shard, store::Message&& m, size_t max_queued) {
  {
    std::lock_guard lk(mu_);
    if (queue_.size() >= max_queued) return false;
    queue_.emplace_back(owner_shard, std::move(m));
  }
  cv_.notify_one();
  return true;
}

size_t CommitQueue::Queued() const {
  std::lock_guard lk(mu_);
  return queue_.size();
}

void CommitQueue::Run() {
  std::vector<std::pair<uint32_t, store::Message>> taken;
  std::vector<store::Message> batch;
  std::vector<std::vector<store::Message>> by_shard;
  auto& m = metrics::Server();
  for (;;) {
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty() && stop_) return;
      // Whatever accumulated while the last fsync ran is the next batch: the busier
      // the server, the bigger the batches, the fewer fsyncs per message.
      if (queue_.size() <= max_batch_) {
        taken.swap(queue_);
      } else {
        taken.assign(std::make_move_iterator(queue_.begin()),
                     std::make_move_iterator(queue_.begin() + max_batch_));
        queue_.erase(queue_.begin(), queue_.begin() + max_batch_);
      }
    }
    batch.clear();
    batch.reserve(taken.size());
    for (auto& [shard, msg] : taken) batch.push_back(std::move(msg));

    int64_t t0 = MonoNs();
    Status s = store_.AppendMessages(batch);
    if (!s.ok()) {
      LOG_ERROR("store_commit_failed").Kv("error", s.message()).Kv("batch", batch.size());
      std::abort();
    }
    m.store_commit_seconds.Observe(static_cast<double>(MonoNs() - t0) / 1e9);
    m.store_commit_batch_size.Observe(static_cast<double>(batch.size()));
    m.store_commits.Inc();
    m.store_commit_messages.Inc(batch.size());

    uint32_t max_shard = 0;
    for (auto& [shard, msg] : taken) max_shard = std::max(max_shard, shard);
    by_shard.resize(std::max<size_t>(by_shard.size(), max_shard + 1));
    for (size_t i = 0; i < taken.size(); ++i) by_shard[taken[i].first].push_back(std::move(batch[i]));
    taken.clear();
    for (uint32_t sh = 0; sh < by_shard.size(); ++sh) {
      if (by_shard[sh].empty()) continue;
      done_(sh, std::move(by_shard[sh]));
      by_shard[sh] = {};
    }
  }
}

}  // namespace sb::chat
