// The embedded store's delivery state: receipts, device cursors, settings, and the
// atomic commit batch that carries them with messages.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <map>

#include "store/store.h"

namespace sb::store {
namespace {

class DeliveryStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sb_delivery_store_XXXXXX";
    dir_ = mkdtemp(tmpl);
    Open();
  }
  void Open() {
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
  std::string dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(DeliveryStoreTest, CommitWritesMessagesReceiptsAndCursorsTogether) {
  CommitBatch b;
  Message m;
  m.conv = 7;
  m.seq = 1;
  m.sender = 1;
  m.client_msg_id = "c1";
  m.content = "hi";
  b.messages.push_back(m);
  b.receipts.push_back({7, MemberReceipt{2, 1, 0, 100, 0}});
  b.receipts.push_back({7, MemberReceipt{3, 1, 1, 100, 101}});
  b.receipts.push_back({8, MemberReceipt{2, 9, 9, 1, 1}});
  b.cursors.push_back({2, "phone", 7, 1});
  b.cursors.push_back({2, "phone", 8, 9});
  b.cursors.push_back({2, "phone-2", 7, 5});
  ASSERT_TRUE(store_->Commit(b).ok());
  EXPECT_EQ(*store_->LastSeq(7), 1u);
  ASSERT_TRUE(store_->FindDedup(7, "c1")->has_value());

  auto r = store_->GetReceipts(7);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 2u) << "only conversation 7";
  EXPECT_EQ((*r)[0].user, 2u);
  EXPECT_EQ((*r)[1].user, 3u);
  EXPECT_EQ((*r)[1].read, 1u);
  EXPECT_EQ((*r)[1].read_ms, 101);

  auto c = store_->GetDeviceCursors(2, "phone");
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->size(), 2u) << "'phone-2' is another device, not a prefix match";
  EXPECT_EQ((*c)[0], (std::pair<ConvId, Seq>{7, 1}));
  EXPECT_EQ((*c)[1], (std::pair<ConvId, Seq>{8, 9}));
  EXPECT_TRUE(store_->GetDeviceCursors(2, "tablet")->empty());
  EXPECT_EQ(*store_->GetDeviceCursor(2, "phone", 8), 9u);
  EXPECT_EQ(*store_->GetDeviceCursor(2, "phone", 9), 0u);
  EXPECT_EQ(*store_->GetDeviceCursor(2, "tablet", 8), 0u);

  // Replaced, and kept across a reopen.
  CommitBatch b2;
  b2.receipts.push_back({7, MemberReceipt{2, 4, 3, 200, 201}});
  b2.cursors.push_back({2, "phone", 7, 4});
  ASSERT_TRUE(store_->Commit(b2).ok());
  store_.reset();
  Open();
  r = store_->GetReceipts(7);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0].delivered, 4u);
  EXPECT_EQ((*r)[0].read, 3u);
  EXPECT_EQ((*store_->GetDeviceCursors(2, "phone"))[0].second, 4u);
}

TEST_F(DeliveryStoreTest, SettingsDefaultAndPersist) {
  auto s = store_->GetUserSettings(42);
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->hide_last_seen);
  ASSERT_TRUE(store_->PutUserSettings(42, UserSettings{true}).ok());
  store_.reset();
  Open();
  EXPECT_TRUE(store_->GetUserSettings(42)->hide_last_seen);
  EXPECT_FALSE(store_->GetUserSettings(43)->hide_last_seen);
}


TEST_F(DeliveryStoreTest, ConversationListEntriesCarryTheLatestMessageAndTheReadMark) {
  bool created;
  for (ConvId id : {ConvId{10}, ConvId{11}, ConvId{12}}) {
    Conversation c;
    c.id = id;
    c.type = ConvType::kGroup;
    c.members = {1, 2};
    c.title = "t" + std::to_string(id);
    ASSERT_TRUE(store_->CreateConversation(c, &created).ok());
  }
  auto msg = [](ConvId conv, Seq seq, std::string text, int64_t ms) {
    Message m;
    m.conv = conv;
    m.seq = seq;
    m.sender = 1;
    m.client_msg_id = "k" + std::to_string(conv) + "_" + std::to_string(seq);
    m.content = std::move(text);
    m.server_ms = ms;
    return m;
  };
  // Two batches for conversation 10 (the later one wins), one for 11, none for 12; the
  // preview is cut on a UTF-8 boundary.
  CommitBatch b1;
  b1.messages = {msg(10, 1, "first", 100), msg(10, 2, "second", 101), msg(11, 1, std::string(130, 'x') + "é", 102)};
  b1.receipts.push_back({10, MemberReceipt{2, 2, 1, 101, 101}});
  ASSERT_TRUE(store_->Commit(b1).ok());
  CommitBatch b2;
  b2.messages = {msg(10, 3, std::string(kPreviewBytes - 1, 'y') + "é", 200)};
  ASSERT_TRUE(store_->Commit(b2).ok());

  auto list = store_->ListConversationEntries(2);
  ASSERT_TRUE(list.ok()) << list.status().message();
  ASSERT_EQ(list->size(), 3u);
  std::map<ConvId, ConversationListEntry> by_id;
  for (auto& e : *list) by_id[e.conv.id] = e;
  EXPECT_EQ(by_id[10].summary.last_seq, 3u);
  EXPECT_EQ(by_id[10].summary.last_ms, 200);
  EXPECT_EQ(by_id[10].summary.preview, std::string(kPreviewBytes - 1, 'y')) << "no half character";
  EXPECT_EQ(by_id[10].read, 1u);
  EXPECT_EQ(by_id[10].conv.title, "t10");
  EXPECT_EQ(by_id[11].summary.last_seq, 1u);
  EXPECT_EQ(by_id[11].summary.preview, std::string(kPreviewBytes, 'x'));
  EXPECT_EQ(by_id[11].read, 0u);
  EXPECT_EQ(by_id[12].summary.last_seq, 0u);
  // Messages stored without a summary (a store from before summaries) still list.
  ASSERT_TRUE(store_->AppendMessages(std::vector<Message>{msg(12, 1, "old", 50)}).ok());
  list = store_->ListConversationEntries(2);
  ASSERT_TRUE(list.ok());
  for (auto& e : *list)
    if (e.conv.id == 12) {
      EXPECT_EQ(e.summary.last_seq, 1u);
      EXPECT_EQ(e.summary.preview, "old");
    }
  EXPECT_TRUE(store_->ListConversationEntries(99)->empty());
}

}  // namespace
}  // namespace sb::store
