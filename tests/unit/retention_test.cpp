// History retention (store/retention.h): bucket arithmetic, age parsing, and the pass
// over a real embedded store.
#include "store/retention.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <map>

namespace sb::store {
namespace {

constexpr int64_t kDay = 86'400'000;
// 2026-03-15T10:20:30.456Z
constexpr int64_t kMid = 1773570030456;

TEST(RetentionBucketTest, BucketsStartWhereTheCalendarSays) {
  EXPECT_EQ(BucketStart(kMid, RetentionBucket::kSecond), 1773570030000);
  EXPECT_EQ(BucketStart(kMid, RetentionBucket::kMinute), 1773570000000);
  EXPECT_EQ(BucketStart(kMid, RetentionBucket::kHour), 1773568800000);
  EXPECT_EQ(BucketStart(kMid, RetentionBucket::kDay), 1773532800000);      // 2026-03-15T00:00Z
  EXPECT_EQ(BucketStart(kMid, RetentionBucket::kWeek), 1773014400000);     // Monday 2026-03-09
  EXPECT_EQ(BucketStart(kMid, RetentionBucket::kMonth), 1772323200000);    // 2026-03-01T00:00Z
  EXPECT_EQ(BucketStart(1772323200000, RetentionBucket::kMonth), 1772323200000) << "a bucket's start is its own";
  EXPECT_EQ(BucketStart(1772323199999, RetentionBucket::kMonth), 1769904000000) << "2026-02-01";
  EXPECT_EQ(BucketStart(-1, RetentionBucket::kDay), -kDay) << "before 1970 floors down";
}

TEST(RetentionBucketTest, AgesAndBucketNamesParse) {
  EXPECT_EQ(ParseRetentionAge("0"), 0);
  EXPECT_EQ(ParseRetentionAge("90s"), 90'000);
  EXPECT_EQ(ParseRetentionAge("15m"), 900'000);
  EXPECT_EQ(ParseRetentionAge("30d"), 30 * kDay);
  EXPECT_EQ(ParseRetentionAge("5y"), 5 * 365 * kDay);
  for (const char* bad : {"", "5", "y", "-5d", "5w", "5 d", "1.5d", "0d", "99999999999999999y"})
    EXPECT_FALSE(ParseRetentionAge(bad)) << bad;
  EXPECT_EQ(ParseRetentionBucket("month"), RetentionBucket::kMonth);
  EXPECT_FALSE(ParseRetentionBucket("fortnight"));
  // A message is kept at least the retention age: at 2026-03-15 with 30 days, the cut
  // is the start of the month holding 2026-02-13, i.e. 2026-02-01.
  EXPECT_EQ(RetentionCutoff(kMid, 30 * kDay, RetentionBucket::kMonth), 1769904000000);
}

class RetentionStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sb_retention_XXXXXX";
    dir_ = mkdtemp(tmpl);
    Open();
  }
  void Open() {
    store_.reset();
    StoreOptions o;
    o.dir = dir_;
    o.sync = SyncPolicy::kNone;
    auto s = OpenEmbeddedStore(o);
    ASSERT_TRUE(s.ok()) << s.status().message();
    store_ = std::move(s).value();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Conv(ConvId id) {
    Conversation c;
    c.id = id;
    c.type = ConvType::kGroup;
    c.members = {1, 2};
    bool created;
    ASSERT_TRUE(store_->CreateConversation(c, &created).ok());
  }
  // Messages 1..n of `conv`, message i sent at start + i * step.
  void Fill(ConvId conv, Seq n, int64_t start, int64_t step) {
    CommitBatch b;
    for (Seq i = 1; i <= n; ++i) {
      Message m;
      m.conv = conv;
      m.seq = i;
      m.sender = 1;
      m.client_msg_id = "m" + std::to_string(i);
      m.content = "text " + std::to_string(i);
      m.server_ms = start + static_cast<int64_t>(i) * step;
      b.messages.push_back(m);
    }
    ASSERT_TRUE(store_->Commit(b).ok());
  }
  std::string dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(RetentionStoreTest, DropsWholeBucketsAndKeepsTheSequenceGoing) {
  Conv(1);
  Conv(2);
  Conv(3);
  // Conversation 1: one message a day for 100 days from 2026-01-01; 2: all recent;
  // 3: no message.
  const int64_t jan1 = 1767225600000;
  Fill(1, 100, jan1 - kDay, kDay);  // message i on day i-1 of 2026
  Fill(2, 10, jan1 + 200 * kDay, 1000);
  // Keep 30 days at 2026-04-20 with monthly buckets: everything before 2026-03-01 goes
  // (January: 31 messages, February: 28).
  const int64_t now = jan1 + 109 * kDay;
  int64_t cutoff = RetentionCutoff(now, 30 * kDay, RetentionBucket::kMonth);
  EXPECT_EQ(cutoff, jan1 + 59 * kDay);
  auto r = RunRetention(*store_, cutoff);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->conversations, 3u);
  EXPECT_EQ(r->trimmed, 1u);
  EXPECT_EQ(r->dropped, 59u);
  EXPECT_EQ(*store_->FirstRetained(1), 60u);
  EXPECT_EQ(*store_->FirstRetained(2), 1u);
  EXPECT_EQ(store_->GetMessage(1, 59).status().code(), Code::kNotFound);
  ASSERT_TRUE(store_->GetMessage(1, 60).ok());
  auto page = store_->ReadAfter(1, 0, 10);
  ASSERT_TRUE(page.ok());
  ASSERT_FALSE(page->empty());
  EXPECT_EQ(page->front().seq, 60u) << "history starts at the first kept message";
  auto older = store_->ReadBefore(1, 65, 50);
  ASSERT_TRUE(older.ok());
  EXPECT_EQ(older->size(), 5u);
  // A second pass at the same time drops nothing more.
  r = RunRetention(*store_, cutoff);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->dropped, 0u);

  // Everything old: the sequence still continues after the last dropped seq, also
  // after a restart (the sequencer asks LastSeq).
  r = RunRetention(*store_, jan1 + 365 * kDay);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->dropped, 41u + 10u);
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_EQ(*store_->LastSeq(1), 100u);
  EXPECT_EQ(*store_->LastSeq(2), 10u);
  EXPECT_EQ(*store_->FirstRetained(1), 101u);
  EXPECT_TRUE(store_->ReadAfter(1, 0, 10)->empty());
  EXPECT_TRUE(store_->DropHistoryBefore(1, 50).ok()) << "never moves back";
  EXPECT_EQ(*store_->FirstRetained(1), 101u);
}

// An edit or delete is sequenced after the core read its target; retention may drop
// the target before the commit. The rewrite must not put it back below the mark (nor
// take back the attachment reference the drop released); rewrites above it go in.
TEST_F(RetentionStoreTest, ARewriteOfADroppedMessageDoesNotBringItBack) {
  Conv(1);
  Fill(1, 10, 1767225600000, 1000);
  auto target = store_->GetMessage(1, 3);
  auto kept = store_->GetMessage(1, 7);
  ASSERT_TRUE(target.ok() && kept.ok());
  ASSERT_TRUE(store_->DropHistoryBefore(1, 6).ok());

  CommitBatch b;
  Message tombstone = *target;
  tombstone.deleted = true;
  tombstone.content.clear();
  b.rewrites.push_back(tombstone);
  Message edited = *kept;
  edited.content = "edited";
  b.rewrites.push_back(edited);
  ASSERT_TRUE(store_->Commit(b).ok());

  auto check = [&](const char* when) {
    EXPECT_EQ(store_->GetMessage(1, 3).status().code(), Code::kNotFound) << when;
    auto page = store_->ReadAfter(1, 0, 100);
    ASSERT_TRUE(page.ok()) << when;
    ASSERT_EQ(page->size(), 5u) << when;
    EXPECT_EQ(page->front().seq, 6u) << when << ": history starts at the mark";
    EXPECT_EQ((*page)[1].content, "edited") << when;
    auto older = store_->ReadBefore(1, 6, 10);
    ASSERT_TRUE(older.ok()) << when;
    EXPECT_TRUE(older->empty()) << when;
  };
  ASSERT_NO_FATAL_FAILURE(check("live"));
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(check("after a restart"));
}

// Derived data (the search index) is told the first kept seq of every trimmed
// conversation on every pass, so a copy that missed a drop converges.
TEST_F(RetentionStoreTest, TellsWhatWasTrimmedOnEveryPass) {
  Conv(1);
  Conv(2);
  Conv(3);
  const int64_t jan1 = 1767225600000;
  Fill(1, 100, jan1 - kDay, kDay);
  Fill(2, 10, jan1 + 200 * kDay, 1000);
  const int64_t cutoff = jan1 + 59 * kDay;
  std::map<ConvId, Seq> told;
  auto record = [&](ConvId c, Seq first_kept) { told[c] = first_kept; };
  ASSERT_TRUE(RunRetention(*store_, cutoff, record).ok());
  EXPECT_EQ(told, (std::map<ConvId, Seq>{{1, 60}})) << "only the trimmed conversation";
  told.clear();
  auto r = RunRetention(*store_, cutoff, record);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->dropped, 0u);
  EXPECT_EQ(told, (std::map<ConvId, Seq>{{1, 60}})) << "again on a pass that drops nothing";
  told.clear();
  ASSERT_TRUE(RunRetention(*store_, jan1 + 365 * kDay, record).ok());
  EXPECT_EQ(told, (std::map<ConvId, Seq>{{1, 101}, {2, 11}})) << "emptied conversations too";
}

// The messages memtable inserts with a per-conversation hint (rocks_store.cpp,
// MessageInsertHint). Interleaved conversations, a rewrite of an older message, a
// dropped range in the same memtable and a WAL replay must all leave every
// conversation's history whole and in order. With the range tombstone inside the
// hint's domain, Debian's RocksDB aborts in the drop.
TEST_F(RetentionStoreTest, HintedInsertsSurviveRewritesDropsAndReplay) {
  for (ConvId c = 1; c <= 5; ++c) Conv(c);
  auto round = [&](Seq seq) {
    CommitBatch b;
    for (ConvId c = 1; c <= 5; ++c) {
      Message m;
      m.conv = c;
      m.seq = seq;
      m.sender = 1;
      m.client_msg_id = "c" + std::to_string(c) + "-" + std::to_string(seq);
      m.content = "text " + std::to_string(seq);
      m.server_ms = 1767225600000 + static_cast<int64_t>(seq);
      b.messages.push_back(m);
    }
    ASSERT_TRUE(store_->Commit(b).ok());
  };
  for (Seq s = 1; s <= 40; ++s) ASSERT_NO_FATAL_FAILURE(round(s));
  // An edit rewrites an older message of conversation 2 behind the hint's position.
  auto old = store_->GetMessage(2, 5);
  ASSERT_TRUE(old.ok());
  CommitBatch edit;
  Message rewritten = *old;
  rewritten.content = "edited";
  edit.rewrites.push_back(rewritten);
  ASSERT_TRUE(store_->Commit(edit).ok());
  ASSERT_TRUE(store_->DropHistoryBefore(3, 20).ok());
  for (Seq s = 41; s <= 60; ++s) ASSERT_NO_FATAL_FAILURE(round(s));

  auto check = [&](const char* when) {
    for (ConvId c = 1; c <= 5; ++c) {
      auto page = store_->ReadAfter(c, 0, 100);
      ASSERT_TRUE(page.ok()) << when;
      Seq first = c == 3 ? 20 : 1;
      ASSERT_EQ(page->size(), 61 - first) << when << " conversation " << c;
      for (size_t i = 0; i < page->size(); ++i) {
        const Message& m = (*page)[i];
        EXPECT_EQ(m.conv, c) << when;
        EXPECT_EQ(m.seq, first + i) << when << " conversation " << c;
        std::string want = c == 2 && m.seq == 5 ? "edited" : "text " + std::to_string(m.seq);
        EXPECT_EQ(m.content, want) << when << " conversation " << c << " seq " << m.seq;
      }
    }
  };
  ASSERT_NO_FATAL_FAILURE(check("live"));
  ASSERT_NO_FATAL_FAILURE(Open());  // the memtable comes back from the WAL, hints again
  ASSERT_NO_FATAL_FAILURE(check("after replay"));
}

}  // namespace
}  // namespace sb::store
