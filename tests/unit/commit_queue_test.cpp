// The group-commit queue's pacing (chat/commit_queue.h): what arrives within the
// interval after a shared commit started shares the next commit; a full batch, a
// stop, or a writer alone does not wait the interval out. Runs the real embedded
// store in a temp dir.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "base/clock.h"
#include "chat/commit_queue.h"
#include "store/store.h"
#include "temp_store.h"

namespace sb::chat {
namespace {

class CommitQueueTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(store_.ok()) << store_.error(); }
  void TearDown() override { queue_.reset(); }

  void Make(size_t max_batch, int64_t interval_us, bool start = true) {
    queue_ = std::make_unique<CommitQueue>(
        *store_, max_batch, interval_us,
        [this](uint32_t, std::vector<store::Message>&& msgs, std::vector<ReceiptChange>&&) {
          std::lock_guard lk(mu_);
          std::vector<Seq> seqs;
          for (const auto& m : msgs) seqs.push_back(m.seq);
          commits_.push_back(std::move(seqs));
          commit_ns_.push_back(MonoNs());
          cv_.notify_all();
        });
    if (start) queue_->Start();
  }

  void Push(Seq seq) {
    store::Message m;
    m.conv = 7;
    m.seq = seq;
    m.sender = 1;
    m.client_msg_id = "c" + std::to_string(seq);
    m.content = "hello";
    m.server_ms = 1;
    ASSERT_TRUE(queue_->Push(0, std::move(m), 1000));
  }

  // Waits (at most 20 s) until `n` commits were handed back.
  void WaitCommits(size_t n) {
    std::unique_lock lk(mu_);
    ASSERT_TRUE(cv_.wait_for(lk, std::chrono::seconds(20), [&] { return commits_.size() >= n; }))
        << "only " << commits_.size() << " commits";
  }

  std::vector<std::vector<Seq>> Commits() {
    std::lock_guard lk(mu_);
    return commits_;
  }

  test::TempStore store_{"sb_commitq_test"};
  std::unique_ptr<CommitQueue> queue_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::vector<Seq>> commits_;
  std::vector<int64_t> commit_ns_;
};

TEST_F(CommitQueueTest, WhatArrivesWithinTheIntervalSharesTheNextCommit) {
  Make(/*max_batch=*/2048, /*interval_us=*/300'000, /*start=*/false);
  Push(1);
  Push(2);
  const int64_t t0 = MonoNs();
  queue_->Start();
  WaitCommits(1);  // the first commit does not wait: nothing was committed before
  for (Seq s = 3; s <= 6; ++s) Push(s);
  WaitCommits(2);
  std::vector<std::vector<Seq>> want = {{1, 2}, {3, 4, 5, 6}};
  EXPECT_EQ(Commits(), want);
  {
    std::lock_guard lk(mu_);
    // The second commit started no earlier than 300 ms after the first one started.
    EXPECT_GE(commit_ns_[1] - t0, 300'000'000);
  }
  auto page = store_->ReadAfter(7, 0, 10);
  ASSERT_TRUE(page.ok()) << page.status().message();
  EXPECT_EQ(page->size(), 6u);
}

TEST_F(CommitQueueTest, ALoneWriterWaitingForEachCommitIsNotPaced) {
  // One item per commit, one waiting: nothing would share the fsync, so no wait (with
  // an interval of a minute, waiting would show).
  Make(/*max_batch=*/2048, /*interval_us=*/60'000'000);
  const int64_t t0 = MonoNs();
  for (Seq s = 1; s <= 3; ++s) {
    Push(s);
    WaitCommits(s);
  }
  std::vector<std::vector<Seq>> want = {{1}, {2}, {3}};
  EXPECT_EQ(Commits(), want);
  EXPECT_LT(MonoNs() - t0, 30'000'000'000);
}

TEST_F(CommitQueueTest, AFullBatchDoesNotWaitTheIntervalOut) {
  Make(/*max_batch=*/4, /*interval_us=*/60'000'000, /*start=*/false);  // a minute
  Push(1);
  Push(2);
  const int64_t t0 = MonoNs();
  queue_->Start();
  WaitCommits(1);
  for (Seq s = 3; s <= 6; ++s) Push(s);
  WaitCommits(2);
  std::vector<std::vector<Seq>> want = {{1, 2}, {3, 4, 5, 6}};
  EXPECT_EQ(Commits(), want);
  EXPECT_LT(MonoNs() - t0, 30'000'000'000);  // well before the minute
}

TEST_F(CommitQueueTest, StopCommitsWhatWaitsWithoutWaitingTheIntervalOut) {
  Make(/*max_batch=*/2048, /*interval_us=*/60'000'000, /*start=*/false);
  Push(1);
  Push(2);
  const int64_t t0 = MonoNs();
  queue_->Start();
  WaitCommits(1);
  Push(3);
  Push(4);
  queue_->Stop();
  std::vector<std::vector<Seq>> want = {{1, 2}, {3, 4}};
  EXPECT_EQ(Commits(), want);
  EXPECT_LT(MonoNs() - t0, 30'000'000'000);
}

}  // namespace
}  // namespace sb::chat
