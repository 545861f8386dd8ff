#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <stdlib.h>

#include <array>
#include <atomic>
#include <filesystem>
#include <limits>
#include <random>
#include <thread>

#include "base/clock.h"
#include "store/embedded/rocks_store.h"
#include "store/store.h"

namespace sb::store {
namespace {

constexpr Seq kNewest = std::numeric_limits<Seq>::max();

std::vector<Seq> Seqs(const std::vector<Message>& ms) {
  std::vector<Seq> out;
  for (const auto& m : ms) out.push_back(m.seq);
  return out;
}

Message Msg(ConvId conv, Seq seq, std::string client_msg_id = "") {
  Message m;
  m.conv = conv;
  m.seq = seq;
  m.sender = 0x1111;
  m.sender_device = "dev-1";
  m.client_msg_id = client_msg_id.empty() ? "c-" + std::to_string(conv) + "-" + std::to_string(seq)
                                          : std::move(client_msg_id);
  m.content = "message " + std::to_string(seq) + " of " + std::to_string(conv);
  m.sent_ms = 1'700'000'000'000 + static_cast<int64_t>(seq);
  m.server_ms = WallMs();
  m.fingerprint = conv * 31 + seq;
  return m;
}

User MkUser(UserId id, std::string username, std::string display_name = "") {
  User u;
  u.id = id;
  u.username = std::move(username);
  u.display_name = std::move(display_name);
  return u;
}

Conversation MkConv(ConvId id, ConvType type, std::vector<UserId> members, UserId created_by = 0) {
  Conversation c;
  c.id = id;
  c.type = type;
  c.members = std::move(members);
  c.created_by = created_by;
  return c;
}

RefreshToken MkToken(std::string hash, UserId user, std::string device = "") {
  RefreshToken t;
  t.token_hash = std::move(hash);
  t.user = user;
  t.device_id = std::move(device);
  return t;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sb_store_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    // A subdirectory that does not exist yet: Open must create it.
    options_.dir = root_ + "/data/store";
    options_.cache_bytes = 8 << 20;
    options_.write_buffer_bytes = 4 << 20;
    Reopen();
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  void Reopen() {
    store_.reset();
    auto s = RocksStore::Open(options_, tuning_);
    ASSERT_TRUE(s.ok()) << s.status().message();
    store_ = std::move(s).value();
  }
  void Append(std::vector<Message> batch) {
    Status s = store_->AppendMessages(batch);
    ASSERT_TRUE(s.ok()) << s.message();
  }

  std::string root_;
  StoreOptions options_;
  RocksTuning tuning_;
  std::unique_ptr<RocksStore> store_;
};

TEST(StoreNames, ConvAndContentTypes) {
  EXPECT_EQ(ConvTypeName(ConvType::kDirect), "direct");
  EXPECT_EQ(ConvTypeName(ConvType::kGroup), "group");
  for (auto t : {ContentType::kText, ContentType::kImage, ContentType::kFile, ContentType::kReaction,
                 ContentType::kEdit, ContentType::kDelete}) {
    auto parsed = ParseContentType(ContentTypeName(t));
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, t);
  }
  EXPECT_EQ(ContentTypeName(ContentType::kReaction), "reaction");
  EXPECT_FALSE(ParseContentType("Text").has_value());
  EXPECT_FALSE(ParseContentType("").has_value());
  EXPECT_FALSE(ParseContentType("unknown").has_value());
}

TEST_F(StoreTest, UserCreateGetFindConflict) {
  User u{.id = 0xabc, .username = "alice", .display_name = "Alice A.",
         .password_hash = "$argon2id$v=19$m=65536,t=2,p=1$salt$hash", .created_ms = 1234};
  ASSERT_TRUE(store_->CreateUser(u).ok());

  auto got = store_->GetUser(0xabc);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->id, u.id);
  EXPECT_EQ(got->username, u.username);
  EXPECT_EQ(got->display_name, u.display_name);
  EXPECT_EQ(got->password_hash, u.password_hash);
  EXPECT_EQ(got->created_ms, u.created_ms);

  auto found = store_->FindUserByUsername("alice");
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->id, u.id);

  User same_name = u;
  same_name.id = 0xdef;
  EXPECT_EQ(store_->CreateUser(same_name).code(), Code::kConflict);
  User same_id = u;
  same_id.username = "bob";
  EXPECT_EQ(store_->CreateUser(same_id).code(), Code::kConflict);
  // A refused create leaves no trace behind.
  EXPECT_EQ(store_->FindUserByUsername("bob").status().code(), Code::kNotFound);
  EXPECT_EQ(store_->GetUser(0xdef).status().code(), Code::kNotFound);
  EXPECT_EQ(store_->FindUserByUsername("alic").status().code(), Code::kNotFound);
  EXPECT_EQ(store_->FindUserByUsername("alicee").status().code(), Code::kNotFound);

  EXPECT_EQ(store_->CreateUser(MkUser(0, "zero")).code(), Code::kBadRequest);
  EXPECT_EQ(store_->CreateUser(MkUser(7, "")).code(), Code::kBadRequest);
}

TEST_F(StoreTest, RefreshTokenPutGetDelete) {
  // Raw SHA-256 bytes, zeros included.
  std::string hash(32, '\0');
  for (size_t i = 0; i < hash.size(); i += 3) hash[i] = static_cast<char>(0xf0 + i % 16);
  RefreshToken t{.token_hash = hash, .user = 42, .device_id = "phone", .created_ms = 10,
                 .expires_ms = 99'000};
  ASSERT_TRUE(store_->PutRefreshToken(t).ok());
  auto got = store_->GetRefreshToken(hash);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->token_hash, hash);
  EXPECT_EQ(got->user, 42u);
  EXPECT_EQ(got->device_id, "phone");
  EXPECT_EQ(got->created_ms, 10);
  EXPECT_EQ(got->expires_ms, 99'000);

  EXPECT_EQ(store_->GetRefreshToken(std::string(32, 'x')).status().code(), Code::kNotFound);
  ASSERT_TRUE(store_->DeleteRefreshToken(hash).ok());
  EXPECT_EQ(store_->GetRefreshToken(hash).status().code(), Code::kNotFound);
  EXPECT_TRUE(store_->DeleteRefreshToken(hash).ok());
}

TEST_F(StoreTest, ConversationCreateGet) {
  Conversation c{.id = 77, .type = ConvType::kGroup, .title = "team",
                 .members = {30, 10, 20, 10}, .admins = {}, .created_by = 10, .created_ms = 555};
  bool created = false;
  auto r = store_->CreateConversation(c, &created);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(created);
  EXPECT_EQ(r->members, (std::vector<UserId>{10, 20, 30}));

  auto got = store_->GetConversation(77);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->id, 77u);
  EXPECT_EQ(got->type, ConvType::kGroup);
  EXPECT_EQ(got->title, "team");
  EXPECT_EQ(got->members, (std::vector<UserId>{10, 20, 30}));
  EXPECT_EQ(got->created_by, 10u);
  EXPECT_EQ(got->created_ms, 555);

  EXPECT_EQ(store_->GetConversation(78).status().code(), Code::kNotFound);
  EXPECT_EQ(store_->CreateConversation(c, &created).status().code(), Code::kConflict);
  EXPECT_FALSE(created);

  Conversation bad_direct = MkConv(80, ConvType::kDirect, {5, 5});
  EXPECT_EQ(store_->CreateConversation(bad_direct, nullptr).status().code(), Code::kBadRequest);
  Conversation zero = MkConv(0, ConvType::kGroup, {1});
  EXPECT_EQ(store_->CreateConversation(zero, nullptr).status().code(), Code::kBadRequest);
}

TEST_F(StoreTest, DirectPairReturnsSameConversation) {
  Conversation first = MkConv(100, ConvType::kDirect, {2, 1}, 2);
  bool created = false;
  auto a = store_->CreateConversation(first, &created);
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(created);

  // The other member asks, with a fresh id: gets the existing one.
  Conversation second = MkConv(200, ConvType::kDirect, {1, 2}, 1);
  auto b = store_->CreateConversation(second, &created);
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(created);
  EXPECT_EQ(b->id, 100u);
  EXPECT_EQ(b->created_by, 2u);
  EXPECT_EQ(store_->GetConversation(200).status().code(), Code::kNotFound);

  // A different pair sharing one member is a different conversation.
  Conversation third = MkConv(300, ConvType::kDirect, {1, 3});
  auto c = store_->CreateConversation(third, &created);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(created);
  EXPECT_EQ(c->id, 300u);
}

TEST_F(StoreTest, DirectPairConcurrentCreatesExactlyOne) {
  constexpr int kThreads = 8;
  std::atomic<int> created_count{0};
  std::atomic<int> errors{0};
  std::vector<ConvId> ids(kThreads);
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      while (!go.load()) std::this_thread::yield();
      Conversation c = MkConv(1000u + i, ConvType::kDirect,
                              {i % 2 ? 7u : 9u, i % 2 ? 9u : 7u});
      bool created = false;
      auto r = store_->CreateConversation(c, &created);
      if (!r.ok()) {
        ++errors;
        return;
      }
      ids[i] = r->id;
      if (created) ++created_count;
    });
  }
  go = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(created_count.load(), 1);
  for (ConvId id : ids) EXPECT_EQ(id, ids[0]);
  auto of7 = store_->ListConversationsOf(7);
  ASSERT_TRUE(of7.ok());
  EXPECT_EQ(*of7, std::vector<ConvId>{ids[0]});
}

TEST_F(StoreTest, ListConversationsOfAscendingAndSeparate) {
  const UserId u = 500;
  // Ids above 2^63 must still sort after smaller ones (unsigned, big-endian keys).
  const std::vector<ConvId> mine = {0x8000000000000001ull, 3, 0x100, 0xffffffffffffffffull, 2};
  for (ConvId id : mine) {
    Conversation c = MkConv(id, ConvType::kGroup, {u, u + 1});
    ASSERT_TRUE(store_->CreateConversation(c, nullptr).ok());
  }
  // Neighbouring user ids share key bytes; they must not leak into each other.
  Conversation other = MkConv(4, ConvType::kGroup, {u - 1, u + 1});
  ASSERT_TRUE(store_->CreateConversation(other, nullptr).ok());

  auto list = store_->ListConversationsOf(u);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, (std::vector<ConvId>{2, 3, 0x100, 0x8000000000000001ull, 0xffffffffffffffffull}));
  auto next = store_->ListConversationsOf(u + 1);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->size(), 6u);
  auto prev = store_->ListConversationsOf(u - 1);
  ASSERT_TRUE(prev.ok());
  EXPECT_EQ(*prev, std::vector<ConvId>{4});
  auto none = store_->ListConversationsOf(12345);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST_F(StoreTest, EmptyConversationReads) {
  auto last = store_->LastSeq(9);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(*last, 0u);
  auto before = store_->ReadBefore(9, kNewest, 50);
  ASSERT_TRUE(before.ok());
  EXPECT_TRUE(before->empty());
  auto after = store_->ReadAfter(9, 0, 50);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->empty());
  EXPECT_EQ(store_->GetMessage(9, 1).status().code(), Code::kNotFound);
  auto dedup = store_->FindDedup(9, "nope");
  ASSERT_TRUE(dedup.ok());
  EXPECT_FALSE(dedup->has_value());
  EXPECT_TRUE(store_->AppendMessages({}).ok());
}

TEST_F(StoreTest, AppendLastSeqAndPaginationEdges) {
  const ConvId c = 42;
  std::vector<Message> batch;
  for (Seq s = 1; s <= 10; ++s) batch.push_back(Msg(c, s));
  Append(batch);

  auto last = store_->LastSeq(c);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(*last, 10u);

  auto page = store_->ReadBefore(c, kNewest, 3);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Seqs(*page), (std::vector<Seq>{10, 9, 8}));
  page = store_->ReadBefore(c, 8, 3);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Seqs(*page), (std::vector<Seq>{7, 6, 5}));
  page = store_->ReadBefore(c, 3, 100);  // limit larger than what is left
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Seqs(*page), (std::vector<Seq>{2, 1}));
  page = store_->ReadBefore(c, 2, 100);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Seqs(*page), std::vector<Seq>{1});
  page = store_->ReadBefore(c, 1, 100);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->empty());
  page = store_->ReadBefore(c, 0, 100);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->empty());
  page = store_->ReadBefore(c, 11, 0);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->empty());
  page = store_->ReadBefore(c, 11, 1);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Seqs(*page), std::vector<Seq>{10});

  page = store_->ReadAfter(c, 0, 3);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Seqs(*page), (std::vector<Seq>{1, 2, 3}));
  page = store_->ReadAfter(c, 3, 3);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Seqs(*page), (std::vector<Seq>{4, 5, 6}));
  page = store_->ReadAfter(c, 8, 100);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Seqs(*page), (std::vector<Seq>{9, 10}));
  page = store_->ReadAfter(c, 10, 100);  // after_seq = last
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->empty());
  page = store_->ReadAfter(c, kNewest, 100);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->empty());

  auto m = store_->GetMessage(c, 5);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->content, "message 5 of 42");
  EXPECT_EQ(store_->GetMessage(c, 11).status().code(), Code::kNotFound);

  // Batches arriving later continue the sequence; gaps are the sequencer's business.
  Append({Msg(c, 11), Msg(c, 13)});
  last = store_->LastSeq(c);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(*last, 13u);
  page = store_->ReadBefore(c, kNewest, 3);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Seqs(*page), (std::vector<Seq>{13, 11, 10}));
}

TEST_F(StoreTest, PaginationWithGapsMatchesModel) {
  // ReadBefore reads forward from an estimated start and completes backward when
  // gaps leave it short; check both paths against a plain ordered set.
  const ConvId c = 77;
  Append({Msg(c, 1), Msg(c, 2), Msg(c, 3), Msg(c, 10), Msg(c, 20), Msg(c, 21), Msg(c, 100)});
  auto page = store_->ReadBefore(c, kNewest, 3);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Seqs(*page), (std::vector<Seq>{100, 21, 20}));
  page = store_->ReadBefore(c, kNewest, 5);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Seqs(*page), (std::vector<Seq>{100, 21, 20, 10, 3}));
  page = store_->ReadBefore(c, 21, 4);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Seqs(*page), (std::vector<Seq>{20, 10, 3, 2}));
  page = store_->ReadBefore(c, 101, std::numeric_limits<size_t>::max());
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Seqs(*page), (std::vector<Seq>{100, 21, 20, 10, 3, 2, 1}));

  std::mt19937_64 rng(99);
  std::vector<Seq> model;  // ascending
  std::vector<Message> batch;
  for (Seq s = 1; s <= 400; ++s)
    if (rng() % 3 != 0 || (s > 150 && s < 200)) {
      model.push_back(s);
      batch.push_back(Msg(78, s));
    }
  Append(batch);
  for (int i = 0; i < 300; ++i) {
    const Seq bound = rng() % 420;
    const size_t limit = 1 + rng() % 60;
    std::vector<Seq> want_before, want_after;
    for (auto it = model.rbegin(); it != model.rend() && want_before.size() < limit; ++it)
      if (*it < bound) want_before.push_back(*it);
    for (Seq s : model)
      if (s > bound && want_after.size() < limit) want_after.push_back(s);
    auto before = store_->ReadBefore(78, bound, limit);
    ASSERT_TRUE(before.ok());
    EXPECT_EQ(Seqs(*before), want_before) << "before " << bound << " limit " << limit;
    auto after = store_->ReadAfter(78, bound, limit);
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(Seqs(*after), want_after) << "after " << bound << " limit " << limit;
  }
}

// The non-default layouts the benchmark compares must read exactly the same; the
// prefix bloom in particular switches iterators to prefix mode.
TEST_F(StoreTest, TuningVariantsReadTheSame) {
  for (bool prefix : {true, false}) {
    for (bool lz4 : {true, false}) {
      tuning_.message_prefix_bloom = prefix;
      tuning_.compress_messages = lz4;
      tuning_.message_block_bytes = lz4 ? 4 << 10 : 16 << 10;
      Reopen();
      const ConvId base = (prefix ? 1000 : 2000) + (lz4 ? 100 : 0);
      std::vector<Message> batch;
      for (ConvId c = base; c < base + 3; ++c)
        for (Seq s = 1; s <= 30; ++s) batch.push_back(Msg(c, s));
      Append(batch);
      for (int pass = 0; pass < 2; ++pass) {  // memtable, then SST files
        for (ConvId c = base; c < base + 3; ++c) {
          auto last = store_->LastSeq(c);
          ASSERT_TRUE(last.ok());
          EXPECT_EQ(*last, 30u);
          auto page = store_->ReadBefore(c, kNewest, 4);
          ASSERT_TRUE(page.ok());
          EXPECT_EQ(Seqs(*page), (std::vector<Seq>{30, 29, 28, 27}));
          page = store_->ReadAfter(c, 28, 10);
          ASSERT_TRUE(page.ok());
          EXPECT_EQ(Seqs(*page), (std::vector<Seq>{29, 30}));
          page = store_->ReadAfter(c, 0, 100);
          ASSERT_TRUE(page.ok());
          EXPECT_EQ(page->size(), 30u);
          for (const auto& m : *page) EXPECT_EQ(m.conv, c);
          EXPECT_TRUE(store_->GetMessage(c, 15).ok());
        }
        auto none = store_->LastSeq(base + 3);
        ASSERT_TRUE(none.ok());
        EXPECT_EQ(*none, 0u);
        EXPECT_EQ(store_->GetMessage(base + 3, 1).status().code(), Code::kNotFound);
        ASSERT_TRUE(store_->CompactAll().ok());
      }
    }
  }
}

TEST_F(StoreTest, ConversationsNeverMix) {
  // Neighbouring ids, ids that differ only in the top byte, and the extremes.
  const std::vector<ConvId> convs = {1, 2, 3, 0x0100000000000002ull, 0xfffffffffffffffeull,
                                     0xffffffffffffffffull};
  std::vector<Message> batch;
  for (Seq s = 1; s <= 20; ++s)
    for (size_t i = 0; i < convs.size(); ++i)
      if (s <= 10 + 2 * i) batch.push_back(Msg(convs[i], s));
  Append(batch);
  // Also the 256 boundary of seq (a carry into the next key byte).
  Append({Msg(2, 255), Msg(2, 256), Msg(2, 257)});

  for (size_t i = 0; i < convs.size(); ++i) {
    const ConvId c = convs[i];
    const Seq expect_last = c == 2 ? 257 : 10 + 2 * i;
    auto last = store_->LastSeq(c);
    ASSERT_TRUE(last.ok());
    EXPECT_EQ(*last, expect_last) << c;
    auto all = store_->ReadAfter(c, 0, 1000);
    ASSERT_TRUE(all.ok());
    for (const auto& m : *all) EXPECT_EQ(m.conv, c);
    for (size_t k = 1; k < all->size(); ++k) EXPECT_LT((*all)[k - 1].seq, (*all)[k].seq);
    auto newest = store_->ReadBefore(c, kNewest, 1000);
    ASSERT_TRUE(newest.ok());
    EXPECT_EQ(newest->size(), all->size());
    for (const auto& m : *newest) {
      EXPECT_EQ(m.conv, c);
      EXPECT_EQ(m.content, "message " + std::to_string(m.seq) + " of " + std::to_string(c));
    }
  }
  auto page = store_->ReadBefore(2, 257, 3);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Seqs(*page), (std::vector<Seq>{256, 255, 12}));
  // Conversations that exist only as neighbours read as empty.
  for (ConvId c : {0ull, 4ull, 0x0100000000000001ull, 0x0100000000000003ull}) {
    auto last = store_->LastSeq(c);
    ASSERT_TRUE(last.ok());
    EXPECT_EQ(*last, 0u) << c;
    auto before = store_->ReadBefore(c, kNewest, 10);
    ASSERT_TRUE(before.ok());
    EXPECT_TRUE(before->empty()) << c;
    auto after = store_->ReadAfter(c, 0, 10);
    ASSERT_TRUE(after.ok());
    EXPECT_TRUE(after->empty()) << c;
  }
}

TEST_F(StoreTest, DedupWrittenWithMessageAndReplaced) {
  Message m = Msg(5, 1, "client-key-1");
  m.server_ms = 1000;
  m.fingerprint = 0xfeed;
  Append({m});
  auto d = store_->FindDedup(5, "client-key-1");
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(d->has_value());
  EXPECT_EQ((*d)->seq, 1u);
  EXPECT_EQ((*d)->server_ms, 1000);
  EXPECT_EQ((*d)->fingerprint, 0xfeedu);

  // Same key in another conversation is another entry.
  d = store_->FindDedup(6, "client-key-1");
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->has_value());

  Message later = Msg(5, 7, "client-key-1");
  later.server_ms = 2000;
  later.fingerprint = 0xbeef;
  Append({Msg(5, 6), later});
  d = store_->FindDedup(5, "client-key-1");
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(d->has_value());
  EXPECT_EQ((*d)->seq, 7u);
  EXPECT_EQ((*d)->server_ms, 2000);
  EXPECT_EQ((*d)->fingerprint, 0xbeefu);
  // The message the old entry pointed at is untouched.
  EXPECT_TRUE(store_->GetMessage(5, 1).ok());

  // Within one batch the later message wins too.
  Message x1 = Msg(5, 8, "dup"), x2 = Msg(5, 9, "dup");
  Append({x1, x2});
  d = store_->FindDedup(5, "dup");
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(d->has_value());
  EXPECT_EQ((*d)->seq, 9u);

  // A prefix of an existing key is not a hit.
  d = store_->FindDedup(5, "client-key-");
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->has_value());
}

TEST_F(StoreTest, DedupEntriesExpireOnlyAfterWindowPlusGrace) {
  const int64_t now = WallMs();
  Message ancient = Msg(8, 1, "ancient");
  ancient.server_ms = 1000;
  Message expired = Msg(8, 2, "expired");
  expired.server_ms = now - kDedupWindowMs - 2 * 3600 * 1000;
  Message in_grace = Msg(8, 3, "in-grace");
  in_grace.server_ms = now - kDedupWindowMs - 10 * 60 * 1000;
  Message fresh = Msg(8, 4, "fresh");
  fresh.server_ms = now;
  Append({ancient, expired, in_grace, fresh});

  // Still stored: returned whatever its age.
  auto d = store_->FindDedup(8, "ancient");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->has_value());

  ASSERT_TRUE(store_->CompactAll().ok());
  for (const char* gone : {"ancient", "expired"}) {
    d = store_->FindDedup(8, gone);
    ASSERT_TRUE(d.ok());
    EXPECT_FALSE(d->has_value()) << gone;
  }
  for (const char* kept : {"in-grace", "fresh"}) {
    d = store_->FindDedup(8, kept);
    ASSERT_TRUE(d.ok());
    EXPECT_TRUE(d->has_value()) << kept;
  }
  // Messages are never expired.
  auto all = store_->ReadAfter(8, 0, 10);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 4u);
}

TEST_F(StoreTest, AllMessageFieldsRoundTrip) {
  std::vector<Message> batch;
  Seq seq = 1;
  for (auto ct : {ContentType::kText, ContentType::kImage, ContentType::kFile, ContentType::kReaction,
                  ContentType::kEdit, ContentType::kDelete}) {
    Message m;
    m.conv = 0x0123456789abcdefull;
    m.seq = seq++;
    m.sender = 0xfedcba9876543210ull;
    m.sender_device = "device-\x7e";
    m.client_msg_id = "cmid-" + std::to_string(m.seq);
    m.content_type = ct;
    m.content = std::string("bin\0ary \xff\xfe utf8 \xc3\xa9", 19) + std::string(300, 'z');
    m.media_url = ct == ContentType::kImage ? "https://media.example/x.png" : "";
    m.target_message_id = ct == ContentType::kEdit ? FormatMessageId(m.conv, 1) : "";
    m.reply_to = "srv_msg_reply";
    m.sent_ms = -5;  // a client clock can be anything
    m.server_ms = std::numeric_limits<int64_t>::max();
    m.fingerprint = std::numeric_limits<uint64_t>::max();
    batch.push_back(m);
  }
  Append(batch);
  auto all = store_->ReadAfter(batch[0].conv, 0, 100);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    const Message& a = batch[i];
    const Message& b = (*all)[i];
    EXPECT_EQ(a.conv, b.conv);
    EXPECT_EQ(a.seq, b.seq);
    EXPECT_EQ(a.sender, b.sender);
    EXPECT_EQ(a.sender_device, b.sender_device);
    EXPECT_EQ(a.client_msg_id, b.client_msg_id);
    EXPECT_EQ(a.content_type, b.content_type);
    EXPECT_EQ(a.content, b.content);
    EXPECT_EQ(a.media_url, b.media_url);
    EXPECT_EQ(a.target_message_id, b.target_message_id);
    EXPECT_EQ(a.reply_to, b.reply_to);
    EXPECT_EQ(a.sent_ms, b.sent_ms);
    EXPECT_EQ(a.server_ms, b.server_ms);
    EXPECT_EQ(a.fingerprint, b.fingerprint);
  }
  // An all-defaults message (empty strings, zero times) round-trips too.
  Message empty;
  empty.conv = 3;
  empty.seq = 1;
  Append({empty});
  auto got = store_->GetMessage(3, 1);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->content, "");
  EXPECT_EQ(got->sender, 0u);
  EXPECT_EQ(got->content_type, ContentType::kText);
  // No client key, no dedup entry.
  auto d = store_->FindDedup(3, "");
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->has_value());
}

TEST_F(StoreTest, ReopenKeepsEverything) {
  options_.sync = SyncPolicy::kNone;  // a clean close must still keep everything
  Reopen();
  ASSERT_TRUE(store_->CreateUser(MkUser(1, "u1", "One")).ok());
  ASSERT_TRUE(store_->PutRefreshToken(MkToken("h1", 1)).ok());
  ASSERT_TRUE(store_->CreateConversation(
                        MkConv(10, ConvType::kDirect, {1, 2}), nullptr)
                  .ok());
  std::vector<Message> batch;
  for (Seq s = 1; s <= 100; ++s) batch.push_back(Msg(10, s));
  Append(batch);
  // Half of it flushed to SST files, half only in the WAL, so both paths are checked.
  ASSERT_TRUE(store_->CompactAll().ok());
  batch.clear();
  for (Seq s = 101; s <= 150; ++s) batch.push_back(Msg(10, s));
  Append(batch);

  Reopen();
  auto u = store_->FindUserByUsername("u1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->display_name, "One");
  EXPECT_TRUE(store_->GetRefreshToken("h1").ok());
  bool created = true;
  auto c = store_->CreateConversation(MkConv(11, ConvType::kDirect, {2, 1}),
                                      &created);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(created);
  EXPECT_EQ(c->id, 10u);
  auto list = store_->ListConversationsOf(2);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, std::vector<ConvId>{10});
  auto last = store_->LastSeq(10);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(*last, 150u);
  auto all = store_->ReadAfter(10, 0, 1000);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 150u);
  auto d = store_->FindDedup(10, "c-10-77");
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(d->has_value());
  EXPECT_EQ((*d)->seq, 77u);
}

TEST_F(StoreTest, ConcurrentAppendsToDistinctConversations) {
  constexpr int kThreads = 4;
  constexpr int kBatches = 50;
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int b = 0; b < kBatches; ++b) {
        std::vector<Message> batch;
        for (int i = 0; i < 10; ++i) batch.push_back(Msg(100 + t, b * 10 + i + 1));
        if (!store_->AppendMessages(batch).ok()) ++errors;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  for (int t = 0; t < kThreads; ++t) {
    auto last = store_->LastSeq(100 + t);
    ASSERT_TRUE(last.ok());
    EXPECT_EQ(*last, static_cast<Seq>(kBatches * 10));
  }
}

TEST_F(StoreTest, CorruptedValuesAreErrorsNotCrashes) {
  Append({Msg(1, 1), Msg(1, 2), Msg(1, 3)});
  ASSERT_TRUE(store_->CreateUser(MkUser(9, "nine")).ok());
  ASSERT_TRUE(store_->CreateConversation(MkConv(4, ConvType::kGroup, {9}), nullptr).ok());
  store_.reset();

  {
    // Write garbage with a raw handle, as a disk or a bug might.
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
        {RocksStore::kMetaCf, {}}, {RocksStore::kMessagesCf, {}}, {RocksStore::kDedupCf, {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> h;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), options_.dir, cfs, &h, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    namespace f = rocks_format;
    rocksdb::WriteOptions wo;
    ASSERT_TRUE(db->Put(wo, h[1], f::MessageKey(1, 2), "\x01garbage").ok());
    ASSERT_TRUE(db->Put(wo, h[1], f::MessageKey(1, 4), "").ok());
    ASSERT_TRUE(db->Put(wo, h[1], f::MessagePrefix(2) + "short", f::EncodeMessage(Msg(2, 1))).ok());
    ASSERT_TRUE(db->Put(wo, h[0], f::UserKey(9), "\x02" + std::string(30, '\xff')).ok());
    ASSERT_TRUE(db->Put(wo, h[0], f::UsernameKey("ghost"), f::EncodeId(12345)).ok());
    // A member count that claims far more members than there are bytes.
    std::string conv_val = f::EncodeConversation(MkConv(4, ConvType::kGroup, {9}));
    conv_val.replace(conv_val.size() - 9, 1, "\xff");
    ASSERT_TRUE(db->Put(wo, h[0], f::ConvKey(4), conv_val).ok());
    ASSERT_TRUE(db->Put(wo, h[0], f::TokenKey("t"), "\x01\x00").ok());
    ASSERT_TRUE(db->Put(wo, h[2], f::DedupKey(1, "c-1-1"), "\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").ok());
    for (auto* ch : h) db->DestroyColumnFamilyHandle(ch);
    ASSERT_TRUE(db->Close().ok());
  }

  Reopen();
  EXPECT_EQ(store_->GetMessage(1, 2).status().code(), Code::kInternal);
  EXPECT_EQ(store_->GetMessage(1, 4).status().code(), Code::kInternal);
  EXPECT_TRUE(store_->GetMessage(1, 3).ok());
  EXPECT_EQ(store_->ReadBefore(1, kNewest, 10).status().code(), Code::kInternal);
  EXPECT_EQ(store_->ReadAfter(1, 0, 10).status().code(), Code::kInternal);
  // A page that stops short of the damaged record is still served.
  auto page = store_->ReadAfter(1, 0, 1);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Seqs(*page), std::vector<Seq>{1});
  EXPECT_EQ(store_->LastSeq(2).status().code(), Code::kInternal);
  EXPECT_EQ(store_->ReadAfter(2, 0, 10).status().code(), Code::kInternal);
  EXPECT_EQ(store_->GetUser(9).status().code(), Code::kInternal);
  EXPECT_EQ(store_->FindUserByUsername("nine").status().code(), Code::kInternal);
  EXPECT_EQ(store_->FindUserByUsername("ghost").status().code(), Code::kInternal);
  EXPECT_EQ(store_->GetConversation(4).status().code(), Code::kInternal);
  EXPECT_EQ(store_->GetRefreshToken("t").status().code(), Code::kInternal);
  EXPECT_EQ(store_->FindDedup(1, "c-1-1").status().code(), Code::kInternal);
}

// ---- the record format, directly ------------------------------------------------

TEST(StoreFormat, KeyLayoutIsBigEndianAndPrefixed) {
  namespace f = rocks_format;
  EXPECT_EQ(f::MessageKey(0x0102030405060708ull, 0x1112131415161718ull),
            std::string("m\x01\x02\x03\x04\x05\x06\x07\x08\x11\x12\x13\x14\x15\x16\x17\x18", 17));
  EXPECT_EQ(f::DedupKey(1, "abc"), std::string("d\0\0\0\0\0\0\0\x01" "abc", 12));
  EXPECT_EQ(f::PairKey(9, 3), f::PairKey(3, 9));
  EXPECT_EQ(f::PairKey(3, 9), std::string("p\0\0\0\0\0\0\0\x03\0\0\0\0\0\0\0\x09", 17));
  EXPECT_EQ(f::MemberKey(1, 2).substr(0, 9), f::MemberPrefix(1));
  EXPECT_EQ(f::UserKey(1)[0], 'u');
  EXPECT_EQ(f::UsernameKey("al"), "nal");
  EXPECT_EQ(f::TokenKey("h"), "rh");
  EXPECT_EQ(f::ConvKey(1)[0], 'c');
  // Bytewise order is numeric order, across byte carries and the sign bit.
  EXPECT_LT(f::MessageKey(1, 255), f::MessageKey(1, 256));
  EXPECT_LT(f::MessageKey(1, 0x7fffffffffffffffull), f::MessageKey(1, 0x8000000000000000ull));
  EXPECT_LT(f::MessageKey(1, std::numeric_limits<Seq>::max()), f::MessageKey(2, 0));
}

TEST(StoreFormat, DecodersRejectEveryTruncationAndSurviveBitFlips) {
  namespace f = rocks_format;
  Message m = Msg(1, 2, "cmid");
  m.media_url = "u";
  m.reply_to = "r";
  const std::string msg = f::EncodeMessage(m);
  const std::string user = f::EncodeUser(User{.id = 1, .username = "n", .display_name = "d",
                                               .password_hash = "p", .created_ms = 5});
  const std::string token = f::EncodeToken(MkToken("", 3, "dev"));
  const std::string conv = f::EncodeConversation(
      Conversation{.id = 1, .type = ConvType::kDirect, .title = "t", .members = {1, 2}, .admins = {}});
  const std::string dedup = f::EncodeDedup(DedupEntry{.seq = 300, .server_ms = 1, .fingerprint = 2});
  const std::string id = f::EncodeId(77);

  auto decode_all = [](std::string_view v) {
    Message mo;
    User uo;
    RefreshToken to;
    Conversation co;
    DedupEntry dd;
    uint64_t io;
    return std::array<bool, 6>{f::DecodeMessage(v, 1, 2, &mo).ok(), f::DecodeUser(v, 1, &uo).ok(),
                               f::DecodeToken(v, "h", &to).ok(),
                               f::DecodeConversation(v, 1, &co).ok(), f::DecodeDedup(v, &dd).ok(),
                               f::DecodeId(v, &io).ok()};
  };
  const std::string* records[] = {&msg, &user, &token, &conv, &dedup, &id};
  for (size_t r = 0; r < 6; ++r) {
    const std::string& full = *records[r];
    EXPECT_TRUE(decode_all(full)[r]) << r;
    for (size_t n = 0; n < full.size(); ++n)
      EXPECT_FALSE(decode_all(std::string_view(full).substr(0, n))[r]) << r << " truncated to " << n;
    std::string longer = full + "x";
    EXPECT_FALSE(decode_all(longer)[r]) << r << " with trailing byte";
    std::string newer = full;
    newer[0] = 2;  // a version this build does not know
    EXPECT_FALSE(decode_all(newer)[r]) << r;
  }

  // Random damage: any outcome but a crash (or, under ASan, a bad read) is fine.
  std::mt19937_64 rng(12345);
  for (int iter = 0; iter < 20000; ++iter) {
    std::string v = *records[iter % 6];
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) v[rng() % v.size()] ^= static_cast<char>(1u << (rng() % 8));
    (void)decode_all(v);
    std::string noise(rng() % 64, '\0');
    for (char& ch : noise) ch = static_cast<char>(rng());
    (void)decode_all(noise);
  }

  // Content types outside the enum are rejected, not cast.
  Message bad = m;
  std::string v = f::EncodeMessage(bad);
  v[9] = 7;  // version(1) + sender(8), then the content type byte
  Message out;
  EXPECT_FALSE(f::DecodeMessage(v, 1, 2, &out).ok());
  v[9] = 0;
  EXPECT_FALSE(f::DecodeMessage(v, 1, 2, &out).ok());
}

}  // namespace
}  // namespace sb::store
