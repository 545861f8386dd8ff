#include <gtest/gtest.h>
#include <sstream>
#include <fstream>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <sqlite3.h>

#include "base/ids.h"
#include "search/search_index.h"
#include "metrics/metrics.h"

namespace sb::search {
namespace {

namespace fs = std::filesystem;
using store::ContentType;
using store::Message;
using Plan = SearchIndex::Plan;

// A fresh directory per test, removed on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "sb_search_test_XXXXXX").string();
    char* p = mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string sub(const std::string& s) const { return path_ + "/" + s; }

 private:
  std::string path_;
};

Message Msg(ConvId conv, Seq seq, ContentType type, std::string content, std::string target = "") {
  Message m;
  m.conv = conv;
  m.seq = seq;
  m.sender = 7;
  m.content_type = type;
  m.content = std::move(content);
  m.target_message_id = std::move(target);
  if (type == ContentType::kImage || type == ContentType::kFile) m.media_url = "https://media.example/x";
  return m;
}
Message Text(ConvId conv, Seq seq, std::string content) { return Msg(conv, seq, ContentType::kText, std::move(content)); }
Message Edit(ConvId conv, Seq seq, ConvId tconv, Seq tseq, std::string content) {
  return Msg(conv, seq, ContentType::kEdit, std::move(content), FormatMessageId(tconv, tseq));
}
Message Delete(ConvId conv, Seq seq, ConvId tconv, Seq tseq) {
  return Msg(conv, seq, ContentType::kDelete, "", FormatMessageId(tconv, tseq));
}

// Conversation ids as the server makes them: large random-looking 64-bit values,
// including ones with the top bit set (stored signed in SQLite).
constexpr ConvId kA = 0x00a1b2c3d4e5f607;
constexpr ConvId kB = 0xf0e1d2c3b4a59687;
constexpr ConvId kC = 0x1000000000000001;

class SearchIndexTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    index_.reset();
    auto r = SearchIndex::Open(dir_.sub("search.db"));
    ASSERT_TRUE(r.ok()) << r.status().message();
    index_ = std::move(r.value());
  }

  void Feed(std::vector<Message> batch) {
    index_->Enqueue(std::move(batch));
    index_->WaitIdle();
  }

  // (conv, seq) of the hits, in rank order; fails the test on an error.
  std::vector<std::pair<ConvId, Seq>> Find(std::string_view q, const std::vector<ConvId>& convs,
                                           size_t limit = 100, size_t offset = 0, Plan plan = Plan::kAuto) {
    auto r = index_->Search(q, convs, limit, offset, plan);
    EXPECT_TRUE(r.ok()) << "query '" << q << "': " << r.status().message();
    std::vector<std::pair<ConvId, Seq>> out;
    if (r.ok())
      for (const Hit& h : *r) out.emplace_back(h.conv, h.seq);
    return out;
  }

  using Ids = std::vector<std::pair<ConvId, Seq>>;

  TempDir dir_;
  std::unique_ptr<SearchIndex> index_;
};

TEST_F(SearchIndexTest, IndexesTextAndCaptionsAndRanksBetterMatchesFirst) {
  Feed({Text(kA, 1, "the quarterly report is attached, please read the whole thing before friday"),
        Text(kA, 2, "report report"),
        Text(kA, 3, "lunch at noon?"),
        Msg(kA, 4, ContentType::kImage, "whiteboard photo of the report draft"),
        Msg(kA, 5, ContentType::kFile, "budget.xlsx")});
  // Short messages that say it twice beat a long one that says it once.
  auto hits = Find("report", {kA});
  ASSERT_EQ(hits.size(), 3u);
  EXPECT_EQ(hits[0], std::make_pair(kA, Seq{2}));
  std::set<Seq> seqs;
  for (auto& h : hits) seqs.insert(h.second);
  EXPECT_EQ(seqs, (std::set<Seq>{1, 2, 4}));

  auto r = index_->Search("report", {kA}, 10);
  ASSERT_TRUE(r.ok());
  for (size_t i = 1; i < r->size(); ++i) EXPECT_GE((*r)[i - 1].rank, (*r)[i].rank);
  EXPECT_GT((*r)[0].rank, 0.0);

  EXPECT_EQ(Find("budget", {kA}), (Ids{{kA, 5}}));
  EXPECT_EQ(Find("xlsx", {kA}), (Ids{{kA, 5}}));
  // Every word must occur.
  EXPECT_EQ(Find("report whiteboard", {kA}), (Ids{{kA, 4}}));
  EXPECT_TRUE(Find("report lunch", {kA}).empty());
  EXPECT_TRUE(Find("nothing-like-this", {kA}).empty());
  // Case-insensitive.
  EXPECT_EQ(Find("LUNCH", {kA}), (Ids{{kA, 3}}));
}

TEST_F(SearchIndexTest, RarerWordsWeighMore) {
  std::vector<Message> batch;
  Seq seq = 1;
  // "common" is everywhere, "zebra" in one message: a message with both ranks above
  // one with "common" twice.
  for (int i = 0; i < 50; ++i) batch.push_back(Text(kA, seq++, "common filler words number " + std::to_string(i)));
  batch.push_back(Text(kA, seq++, "common common stuff here"));
  batch.push_back(Text(kA, seq++, "common zebra stuff here"));
  Feed(std::move(batch));
  auto r = index_->Search("common zebra", {kA}, 10);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  auto any = Find("common", {kA}, 100);
  EXPECT_EQ(any.size(), 52u);
  auto zebra = index_->Search("zebra", {kA}, 10);
  auto common = index_->Search("common", {kA}, 100);
  ASSERT_TRUE(zebra.ok() && common.ok());
  EXPECT_GT((*zebra)[0].rank, (*common)[0].rank);
}

TEST_F(SearchIndexTest, EditReplacesText) {
  Feed({Text(kA, 1, "meet at the old station"), Text(kA, 2, "ok")});
  ASSERT_EQ(Find("station", {kA}), (Ids{{kA, 1}}));
  Feed({Edit(kA, 3, kA, 1, "meet at the new harbour")});
  EXPECT_TRUE(Find("station", {kA}).empty());
  EXPECT_TRUE(Find("old", {kA}).empty());
  // The hit is the edited message itself, not the edit.
  EXPECT_EQ(Find("harbour", {kA}), (Ids{{kA, 1}}));
  EXPECT_EQ(Find("meet", {kA}), (Ids{{kA, 1}}));
  // A second edit replaces the first.
  Feed({Edit(kA, 4, kA, 1, "never mind")});
  EXPECT_TRUE(Find("harbour", {kA}).empty());
  EXPECT_EQ(Find("mind", {kA}), (Ids{{kA, 1}}));
  // Text and edit in one batch (one transaction).
  Feed({Text(kA, 5, "first draft"), Edit(kA, 6, kA, 5, "final version")});
  EXPECT_TRUE(Find("draft", {kA}).empty());
  EXPECT_EQ(Find("final", {kA}), (Ids{{kA, 5}}));
}

// The writer applies one transaction's rows in rowid order, not commit order: every
// conversation's own operations must still take effect in their seq order (two edits of
// one message, a delete after an insert), and a message fed again is still skipped.
TEST_F(SearchIndexTest, OneTransactionInterleavingConversationsKeepsEachOnesOrder) {
  Feed({Text(kB, 1, "bravo one"), Text(kA, 1, "alpha one"), Text(kC, 1, "charlie one"),
        Text(kA, 2, "alpha two"), Edit(kB, 2, kB, 1, "bravo edited"), Edit(kA, 3, kA, 1, "alpha first edit"),
        Text(kC, 2, "charlie two"), Edit(kA, 4, kA, 1, "alpha second edit"), Delete(kA, 5, kA, 2),
        Text(kB, 3, "bravo three"), Text(kA, 3, "stale refeed")});
  EXPECT_EQ(Find("one", {kA, kB, kC}), (Ids{{kC, 1}}));
  using IdSet = std::set<std::pair<ConvId, Seq>>;
  auto bravo = Find("bravo", {kB});
  EXPECT_EQ(IdSet(bravo.begin(), bravo.end()), (IdSet{{kB, 1}, {kB, 3}}));
  EXPECT_EQ(Find("edited", {kB}), (Ids{{kB, 1}}));
  EXPECT_EQ(Find("second", {kA}), (Ids{{kA, 1}}));
  EXPECT_TRUE(Find("first", {kA}).empty()) << "the later edit wins";
  EXPECT_EQ(Find("two", {kA, kC}), (Ids{{kC, 2}})) << "alpha two was deleted";
  EXPECT_TRUE(Find("stale", {kA}).empty()) << "seq 3 was already applied";
  auto up = index_->IndexedUpTo();
  ASSERT_TRUE(up.ok()) << up.status().message();
  EXPECT_EQ(IdSet(up->begin(), up->end()), (IdSet{{kA, 5}, {kB, 3}, {kC, 2}}));
}

TEST_F(SearchIndexTest, EditAddsACaptionToMedia) {
  Feed({Msg(kA, 1, ContentType::kImage, "")});
  Feed({Edit(kA, 2, kA, 1, "sunset over the bay")});
  EXPECT_EQ(Find("sunset", {kA}), (Ids{{kA, 1}}));
}

TEST_F(SearchIndexTest, DeleteRemoves) {
  Feed({Text(kA, 1, "secret plan alpha"), Text(kA, 2, "plan beta")});
  Feed({Delete(kA, 3, kA, 1)});
  EXPECT_TRUE(Find("alpha", {kA}).empty());
  EXPECT_EQ(Find("plan", {kA}), (Ids{{kA, 2}}));
  // An edit after the delete does not bring it back.
  Feed({Edit(kA, 4, kA, 1, "secret plan gamma")});
  EXPECT_TRUE(Find("gamma", {kA}).empty());
  // Delete of an edited message removes the edited text.
  Feed({Edit(kA, 5, kA, 2, "plan delta"), Delete(kA, 6, kA, 2)});
  EXPECT_TRUE(Find("plan", {kA}).empty());
  EXPECT_TRUE(Find("delta", {kA}).empty());
  // Deleting something absent is harmless.
  Feed({Delete(kA, 7, kA, 99), Delete(kA, 8, kA, 1)});
  EXPECT_TRUE(index_->GetStats().failed == false);
}

// History retention dropped a conversation's oldest messages from the store: their
// rows go from the index as well, whatever was indexed or still queued.
TEST_F(SearchIndexTest, RetentionDropsTakeTheRowsAlong) {
  Feed({Text(kA, 1, "ancient harbour"), Text(kA, 2, "ancient lighthouse"), Text(kA, 3, "ancient market"),
        Text(kA, 4, "recent harbour"), Text(kB, 1, "ancient harbour elsewhere")});
  index_->DropBefore(kA, 3);
  index_->WaitIdle();
  EXPECT_EQ(Find("ancient", {kA}), (Ids{{kA, 3}})) << "seqs 1 and 2 went, 3 stays";
  EXPECT_EQ(Find("harbour", {kA, kB}).size(), 2u) << "kA's 4 and kB's 1: another conversation is untouched";
  // Again, and for a conversation the index never saw: harmless.
  index_->DropBefore(kA, 3);
  index_->DropBefore(kC, 10);
  index_->DropBefore(kA, 1);  // "nothing dropped"
  index_->WaitIdle();
  EXPECT_EQ(Find("ancient", {kA}), (Ids{{kA, 3}}));
  // A message below the floor that reaches the indexer after the drop (it was queued
  // behind it) is not indexed; one above it is.
  index_->DropBefore(kA, 6);
  Feed({Text(kA, 5, "straggler words"), Text(kA, 6, "fresh words")});
  EXPECT_EQ(Find("words", {kA}), (Ids{{kA, 6}}));
  EXPECT_TRUE(Find("ancient", {kA}).empty());
  // A pass over more trimmed conversations than one transaction takes (10,000): applied
  // in several, and WaitIdle waits for all of them.
  for (ConvId c = 1; c <= 10'500; ++c) index_->DropBefore(c, 3);
  index_->DropBefore(kA, 7);
  index_->WaitIdle();
  EXPECT_TRUE(Find("words", {kA}).empty());
  EXPECT_EQ(Find("harbour", {kB}), (Ids{{kB, 1}}));
  EXPECT_FALSE(index_->GetStats().failed);
}

TEST_F(SearchIndexTest, CatchUpFromTheStoreMatchesTheLivePath) {
  // What the store returns after the edit and the delete committed: the edited target
  // already carries its new text, the deleted one is a tombstone.
  Message edited = Text(kA, 1, "rewritten text");
  edited.edited_ms = 5;
  Message tomb = Text(kA, 2, "");
  tomb.deleted = true;
  Feed({edited, tomb, Edit(kA, 3, kA, 1, "rewritten text"), Delete(kA, 4, kA, 2)});
  EXPECT_EQ(Find("rewritten", {kA}), (Ids{{kA, 1}}));
  auto up = index_->IndexedUpTo();
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(*up, (std::vector<std::pair<ConvId, Seq>>{{kA, 4}}));
  // A tombstone with leftover text (defensive) is not indexed either.
  Message odd = Text(kA, 5, "ghost words");
  odd.deleted = true;
  Feed({odd});
  EXPECT_TRUE(Find("ghost", {kA}).empty());
}

TEST_F(SearchIndexTest, ReactionsAreNotIndexed) {
  Feed({Text(kA, 1, "hello"), Msg(kA, 2, ContentType::kReaction, "thumbsup", FormatMessageId(kA, 1))});
  EXPECT_TRUE(Find("thumbsup", {kA}).empty());
  // An edit aimed at a reaction (or any seq with no indexed message) invents nothing.
  Feed({Edit(kA, 3, kA, 2, "sneaky text"), Edit(kA, 4, kA, 40, "more sneaky text")});
  EXPECT_TRUE(Find("sneaky", {kA}).empty());
  // The reaction still counts as applied.
  auto up = index_->IndexedUpTo();
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(*up, (std::vector<std::pair<ConvId, Seq>>{{kA, 4}}));
}

TEST_F(SearchIndexTest, EditsAndDeletesCannotReachAnotherConversation) {
  Feed({Text(kA, 1, "private words of A"), Text(kB, 1, "words of B")});
  // Edit/delete in B that name A's message: ignored.
  Feed({Edit(kB, 2, kA, 1, "hijacked"), Delete(kB, 3, kA, 1)});
  EXPECT_TRUE(Find("hijacked", {kA, kB}).empty());
  EXPECT_EQ(Find("private", {kA}), (Ids{{kA, 1}}));
  // Targets that are not earlier messages, or not message ids at all: ignored.
  Message bad = Edit(kA, 2, kA, 1, "garbage");
  bad.target_message_id = "not-an-id";
  Feed({bad, Edit(kA, 3, kA, 3, "self edit"), Edit(kA, 4, kA, 9, "future edit")});
  EXPECT_EQ(Find("private", {kA}), (Ids{{kA, 1}}));
  EXPECT_TRUE(Find("garbage", {kA}).empty());
}

TEST_F(SearchIndexTest, ConversationFilterIsNeverCrossed) {
  Feed({Text(kA, 1, "launch code red"), Text(kB, 1, "launch code blue"), Text(kC, 1, "launch code green"),
        Text(kB, 2, "launch party")});
  for (Plan plan : {Plan::kAuto, Plan::kScanAll, Plan::kPerConversation}) {
    SCOPED_TRACE(static_cast<int>(plan));
    EXPECT_EQ(Find("launch", {kA}, 100, 0, plan), (Ids{{kA, 1}}));
    EXPECT_EQ(Find("blue", {kA, kC}, 100, 0, plan), Ids{});
    auto hits = Find("launch", {kB, kC}, 100, 0, plan);
    EXPECT_EQ(hits.size(), 3u);
    for (auto& h : hits) EXPECT_NE(h.first, kA);
    // Unknown conversations are simply empty.
    EXPECT_TRUE(Find("launch", {12345}, 100, 0, plan).empty());
    EXPECT_TRUE(Find("launch", {}, 100, 0, plan).empty());
    // Duplicates in the list change nothing.
    EXPECT_EQ(Find("red", {kA, kA, kA}, 100, 0, plan), (Ids{{kA, 1}}));
  }
}

TEST_F(SearchIndexTest, DiacriticsAndCaseAreFolded) {
  Feed({Text(kA, 1, "Un café crème à Orléans"), Text(kA, 2, "naïve résumé"), Text(kA, 3, "cafe without accent"),
        Text(kA, 4, "Ελληνικά Straße Łódź Ñandú Ångström")});
  EXPECT_EQ(Find("cafe", {kA}).size(), 2u);
  EXPECT_EQ(Find("CAFÉ", {kA}).size(), 2u);
  EXPECT_EQ(Find("creme orleans", {kA}), (Ids{{kA, 1}}));
  EXPECT_EQ(Find("naive resume", {kA}), (Ids{{kA, 2}}));
  EXPECT_EQ(Find("RÉSUMÉ", {kA}), (Ids{{kA, 2}}));
  EXPECT_EQ(Find("nandu angstrom", {kA}), (Ids{{kA, 4}}));
  // unicode61 folds case in every script but strips diacritics from Latin letters
  // that decompose (Ł does not, nor Greek tonos): documented in the README.
  EXPECT_EQ(Find("ΕΛΛΗΝΙΚΆ", {kA}), (Ids{{kA, 4}}));
  EXPECT_EQ(Find("ŁÓDŹ", {kA}), (Ids{{kA, 4}}));
  EXPECT_EQ(Find("łodz", {kA}), (Ids{{kA, 4}}));
}

TEST_F(SearchIndexTest, QuerySyntaxIsPlainWords) {
  Feed({Text(kA, 1, "a or b"), Text(kA, 2, "a only"), Text(kA, 3, "near the col with foo and x"),
        Text(kA, 4, "body secret"), Text(kA, 5, "not and or")});
  // Operators are words: "a OR b" needs a, or and b.
  EXPECT_EQ(Find("a OR b", {kA}), (Ids{{kA, 1}}));
  EXPECT_EQ(Find("NEAR(", {kA}), (Ids{{kA, 3}}));
  EXPECT_EQ(Find("NEAR(col x)", {kA}), (Ids{{kA, 3}}));
  EXPECT_EQ(Find("col:foo", {kA}), (Ids{{kA, 3}}));
  EXPECT_EQ(Find("body:secret", {kA}), (Ids{{kA, 4}}));  // the real column's name
  EXPECT_EQ(Find("-x", {kA}), (Ids{{kA, 3}}));
  EXPECT_EQ(Find("foo*", {kA}), (Ids{{kA, 3}}));  // no prefix query: the word foo
  EXPECT_TRUE(Find("fo*", {kA}).empty());
  EXPECT_EQ(Find("NOT AND OR", {kA}), (Ids{{kA, 5}}));
  EXPECT_EQ(Find("a NOT b", {kA}), Ids{});  // no "not" in message 1
  EXPECT_EQ(Find("{body}: secret", {kA}), (Ids{{kA, 4}}));
  EXPECT_EQ(Find("^body + secret", {kA}), (Ids{{kA, 4}}));
  // Nothing but syntax: no word, no match, no error.
  EXPECT_EQ(Find("NEAR(\"", {kA}), (Ids{{kA, 3}}));
  EXPECT_EQ(Find("\" OR \"", {kA}), (Ids{{kA, 5}, {kA, 1}}));  // the word "or"; shorter first
  for (std::string_view q : {"\"", "*", "\"\"", "(", ")", "-", ":", "^", "+", "\" \" \"", "'; DROP TABLE msg; --"}) {
    auto r = index_->Search(q, {kA}, 10);
    ASSERT_TRUE(r.ok()) << q << ": " << r.status().message();
    if (q.find("DROP") == std::string_view::npos) {
      EXPECT_TRUE(r->empty()) << q;
    }
  }
  // The table survived the last one.
  EXPECT_EQ(Find("secret", {kA}), (Ids{{kA, 4}}));
  // Control characters and NUL are separators, not terminators.
  EXPECT_EQ(Find(std::string_view("a\0b or", 6), {kA}), (Ids{{kA, 1}}));
}

TEST_F(SearchIndexTest, RejectsEmptyOversizedAndInvalidQueries) {
  Feed({Text(kA, 1, "hello world")});
  for (std::string_view q : {"", " ", "\t\n  "}) {
    auto r = index_->Search(q, {kA}, 10);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kBadRequest);
  }
  std::string big(257, 'a');
  auto r = index_->Search(big, {kA}, 10);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kBadRequest);
  // 256 bytes is allowed.
  std::string ok = "hello " + std::string(250, 'z');
  ASSERT_EQ(ok.size(), 256u);
  EXPECT_TRUE(index_->Search(ok, {kA}, 10).ok());
  // Not UTF-8.
  r = index_->Search("hello \xff\xfe", {kA}, 10);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kBadRequest);
  // Too many distinct words; repeated words count once.
  r = index_->Search("a b c d e f g h i j k l m n o p q", {kA}, 10);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kBadRequest);
  EXPECT_TRUE(index_->Search("hello hello hello hello hello hello hello hello hello hello hello hello hello "
                             "hello hello hello hello hello world",
                             {kA}, 10)
                  .ok());
  // Window too large.
  r = index_->Search("hello", {kA}, kMaxResultWindow, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kBadRequest);
  // limit 0 is simply nothing.
  r = index_->Search("hello", {kA}, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
}

TEST_F(SearchIndexTest, PaginationIsStableAndDisjoint) {
  std::vector<Message> batch;
  // Different lengths give different scores; equal ones tie-break on (conv, seq).
  for (Seq s = 1; s <= 25; ++s) {
    std::string text = "needle";
    for (Seq i = 0; i < s % 5; ++i) text += " hay";
    batch.push_back(Text(s % 2 ? kA : kB, s, text));
  }
  Feed(std::move(batch));
  for (Plan plan : {Plan::kScanAll, Plan::kPerConversation}) {
    auto all = Find("needle", {kA, kB}, 100, 0, plan);
    ASSERT_EQ(all.size(), 25u);
    Ids paged;
    for (size_t off = 0; off < 30; off += 10) {
      auto page = Find("needle", {kA, kB}, 10, off, plan);
      EXPECT_EQ(page.size(), off < 20 ? 10u : 5u);
      paged.insert(paged.end(), page.begin(), page.end());
    }
    EXPECT_EQ(paged, all);
    EXPECT_TRUE(Find("needle", {kA, kB}, 10, 25, plan).empty());
  }
}

TEST_F(SearchIndexTest, PlansAgree) {
  std::mt19937 rng(42);
  const char* words[] = {"alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "tau"};
  std::vector<ConvId> convs;
  for (int i = 0; i < 20; ++i) convs.push_back(1000 + static_cast<ConvId>(i) * 7919);
  std::vector<Message> batch;
  for (int i = 0; i < 2000; ++i) {
    std::string text;
    int n = 1 + static_cast<int>(rng() % 8);
    for (int w = 0; w < n; ++w) text += std::string(words[rng() % 8]) + " ";
    ConvId c = convs[rng() % convs.size()];
    batch.push_back(Text(c, static_cast<Seq>(i + 1), text));  // seqs unique per conv
  }
  Feed(std::move(batch));
  std::vector<ConvId> mine(convs.begin(), convs.begin() + 7);
  for (const char* q : {"alpha", "beta gamma", "omega tau sigma", "kappa kappa"}) {
    auto a = index_->Search(q, mine, 50, 5, Plan::kScanAll);
    auto b = index_->Search(q, mine, 50, 5, Plan::kPerConversation);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(a->size(), b->size()) << q;
    ASSERT_FALSE(a->empty()) << q;
    for (size_t i = 0; i < a->size(); ++i) {
      EXPECT_EQ((*a)[i].conv, (*b)[i].conv);
      EXPECT_EQ((*a)[i].seq, (*b)[i].seq);
      EXPECT_DOUBLE_EQ((*a)[i].rank, (*b)[i].rank);
      EXPECT_NE(std::find(mine.begin(), mine.end(), (*a)[i].conv), mine.end());
    }
  }
}

TEST_F(SearchIndexTest, ThousandsOfConversations) {
  std::vector<ConvId> all;
  std::vector<Message> batch;
  for (ConvId i = 0; i < 3000; ++i) {
    ConvId c = 0x9e3779b97f4a7c15ULL * (i + 1);
    all.push_back(c);
    batch.push_back(Text(c, 1, i % 3 ? "status update" : "status report"));
  }
  Feed(std::move(batch));
  // The caller belongs to 2,500 of them plus 500 the index never saw.
  std::vector<ConvId> mine(all.begin(), all.begin() + 2500);
  for (ConvId i = 0; i < 500; ++i) mine.push_back(424242 + i);
  std::set<ConvId> allowed(mine.begin(), mine.end());
  for (Plan plan : {Plan::kAuto, Plan::kScanAll, Plan::kPerConversation}) {
    auto hits = Find("status report", mine, kMaxResultWindow, 0, plan);
    EXPECT_EQ(hits.size(), 834u);  // i % 3 == 0 for i < 2500
    for (auto& h : hits) EXPECT_TRUE(allowed.count(h.first));
  }
}

TEST_F(SearchIndexTest, SeqBeyondRowidRangeIsSkippedNotAliased) {
  constexpr Seq kBig = Seq{1} << 32;
  Feed({Text(kA, 1, "small seq"), Text(kA, kBig + 1, "huge seq")});
  EXPECT_EQ(Find("seq", {kA}), (Ids{{kA, 1}}));
  auto up = index_->IndexedUpTo();
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(*up, (std::vector<std::pair<ConvId, Seq>>{{kA, kBig + 1}}));
  EXPECT_FALSE(index_->GetStats().failed);
}

TEST_F(SearchIndexTest, IndexedUpToSurvivesReopenAndReplayIsSkipped) {
  auto up = index_->IndexedUpTo();
  ASSERT_TRUE(up.ok());
  EXPECT_TRUE(up->empty());
  Feed({Text(kA, 1, "one"), Text(kA, 2, "two"), Text(kB, 1, "uno")});
  Feed({Edit(kA, 3, kA, 1, "eins"), Msg(kB, 2, ContentType::kReaction, "x", FormatMessageId(kB, 1))});
  Reopen();
  up = index_->IndexedUpTo();
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(*up, (std::vector<std::pair<ConvId, Seq>>{{kA, 3}, {kB, 2}}));  // ascending by id
  EXPECT_EQ(Find("eins", {kA}), (Ids{{kA, 1}}));
  // Catch-up re-feeds an overlap: what was applied is not applied again (the edit is
  // not undone), what is new is.
  Feed({Text(kA, 1, "one"), Text(kA, 2, "two"), Edit(kA, 3, kA, 1, "eins"), Text(kA, 4, "vier")});
  EXPECT_TRUE(Find("one", {kA}).empty());
  EXPECT_EQ(Find("vier", {kA}), (Ids{{kA, 4}}));
  up = index_->IndexedUpTo();
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(*up, (std::vector<std::pair<ConvId, Seq>>{{kA, 4}, {kB, 2}}));
  // New conversations after a reopen get their own ids (no collision with old ones).
  Reopen();
  Feed({Text(kC, 1, "uno again")});
  EXPECT_EQ(Find("uno", {kB}), (Ids{{kB, 1}}));
  EXPECT_EQ(Find("uno", {kC}), (Ids{{kC, 1}}));
}

// A new index file gets 2 KB pages (fewer bytes written per touched conversation).
TEST_F(SearchIndexTest, NewIndexFilesUseTwoKilobytePages) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(dir_.sub("search.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), 2048);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST_F(SearchIndexTest, DestructorDrainsTheQueue) {
  for (Seq s = 1; s <= 200; ++s) index_->Enqueue({Text(kA, s, "drained message")});
  Reopen();  // destroys the old index: everything enqueued must be applied
  auto up = index_->IndexedUpTo();
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(*up, (std::vector<std::pair<ConvId, Seq>>{{kA, 200}}));
  EXPECT_EQ(Find("drained", {kA}, 1000).size(), 200u);
}

// Under light load the indexer lets batches gather into one transaction (one FTS5
// segment) instead of writing each commit's few messages on its own.
TEST_F(SearchIndexTest, SmallBatchesGatherIntoOneTransaction) {
  index_.reset();
  SearchIndex::Options opt;
  opt.gather_ms = 60'000;  // longer than the test: only gather_messages ends the wait
  opt.gather_messages = 30;
  auto r = SearchIndex::Open(dir_.sub("gather.db"), opt);
  ASSERT_TRUE(r.ok());
  auto& idx = *r.value();
  const uint64_t before = idx.GetStats().transactions;
  for (Seq s = 1; s <= 30; ++s) idx.Enqueue({Text(kA, s, "gathered word" + std::to_string(s))});
  for (int i = 0; i < 5000 && idx.GetStats().indexed_messages < 30; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  auto st = idx.GetStats();
  EXPECT_EQ(st.indexed_messages, 30u);
  EXPECT_EQ(st.transactions - before, 1u) << "30 one-message batches, one transaction";
  // WaitIdle does not sit out the gathering window (60 s here).
  idx.Enqueue({Text(kA, 31, "alone")});
  auto t0 = std::chrono::steady_clock::now();
  idx.WaitIdle();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
  auto hits = idx.Search("alone", {kA}, 10, 0);
  ASSERT_TRUE(hits.ok());
  EXPECT_EQ(hits->size(), 1u);
}

TEST_F(SearchIndexTest, BacklogGaugeCountsWhatWaitsAndRunsAtLowPriority) {
  index_.reset();
  SearchIndex::Options opt;
  opt.gather_ms = 60'000;
  opt.gather_messages = 1'000;  // nothing below this is applied before WaitIdle
  auto r = SearchIndex::Open(dir_.sub("backlog.db"), opt);
  ASSERT_TRUE(r.ok());
  auto& idx = *r.value();
  auto& gauge = metrics::Server().search_backlog;
  const int64_t base = gauge.Value();
  for (Seq s = 1; s <= 5; ++s) idx.Enqueue({Text(kA, s, "waiting " + std::to_string(s))});
  EXPECT_EQ(gauge.Value() - base, 5) << "five messages wait for the gathering window";
  idx.WaitIdle();
  EXPECT_EQ(gauge.Value() - base, 0);
  // The indexer thread runs niced (Options::nice, 10 by default).
  bool found = false;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(e.path() / "comm");
    std::string name;
    std::getline(comm, name);
    if (name != "indexer") continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    std::getline(stat, line);
    // Fields after the ")" that ends the name: state is field 3, nice is field 19.
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    std::string field;
    for (int i = 3; i <= 19 && rest >> field; ++i) {
    }
    EXPECT_EQ(field, "10") << line;
    found = true;
  }
  EXPECT_TRUE(found) << "no thread named indexer";
}

TEST_F(SearchIndexTest, QueueOverflowStopsTheIndexTruthfully) {
  index_.reset();
  SearchIndex::Options opt;
  opt.max_queued_messages = 3;
  auto r = SearchIndex::Open(dir_.sub("small.db"), opt);
  ASSERT_TRUE(r.ok());
  auto& idx = *r.value();
  // Enqueue faster than it can index, with a batch that cannot fit at once.
  idx.Enqueue({Text(kA, 1, "x1"), Text(kA, 2, "x2")});
  idx.Enqueue({Text(kA, 3, "x3"), Text(kA, 4, "x4")});  // over the bound unless the first was applied
  idx.Enqueue({Text(kA, 5, "x5"), Text(kA, 6, "x6"), Text(kA, 7, "x7"), Text(kA, 8, "x8")});  // never fits
  idx.Enqueue({Text(kA, 9, "x9")});
  idx.WaitIdle();
  EXPECT_TRUE(idx.GetStats().failed);
  auto up = idx.IndexedUpTo();
  ASSERT_TRUE(up.ok());
  ASSERT_EQ(up->size(), 1u);
  // Never past a dropped message: either 2 or 4, never 9.
  EXPECT_TRUE((*up)[0].second == 2 || (*up)[0].second == 4) << (*up)[0].second;
}

// What the commit thread and the store do together, for the catch-up tests: a commit
// stores the messages (an edit rewrites its target, a delete leaves a tombstone), then
// hands the batch to the index.
class FakeStore {
 public:
  void Commit(SearchIndex& idx, std::vector<Message> batch) {
    Store(batch);
    idx.Enqueue(std::move(batch));
  }
  // The store's half of a commit only (what a crash before indexing leaves).
  void Store(const std::vector<Message>& batch) {
    {
      std::lock_guard lk(mu_);
      for (const Message& m : batch) {
        auto& conv = convs_[m.conv];
        if (m.content_type == ContentType::kEdit || m.content_type == ContentType::kDelete) {
          auto id = ParseMessageId(m.target_message_id);
          auto t = conv.find(id->seq);
          if (t != conv.end()) {
            if (m.content_type == ContentType::kEdit) {
              t->second.content = m.content;
              t->second.edited_ms = 1;
            } else {
              t->second.content.clear();
              t->second.deleted = true;
            }
          }
        }
        conv[m.seq] = m;
      }
    }
  }
  Result<std::vector<Message>> ReadAfter(ConvId c, Seq after, size_t limit) {
    std::unique_lock lk(mu_);
    released_.wait(lk, [&] { return !held_; });
    ++reads_;
    if (fail_) return Internal("store unavailable");
    std::vector<Message> out;
    auto& conv = convs_[c];
    for (auto it = conv.upper_bound(after); it != conv.end() && out.size() < limit; ++it) out.push_back(it->second);
    return out;
  }
  SearchIndex::Options Options() {
    SearchIndex::Options opt;
    opt.source = [this](ConvId c, Seq after, size_t limit) { return ReadAfter(c, after, limit); };
    return opt;
  }
  int reads() {
    std::lock_guard lk(mu_);
    return reads_;
  }
  void set_fail(bool f) {
    std::lock_guard lk(mu_);
    fail_ = f;
  }
  // While held, reads wait: the catch-up cannot finish before the test says so.
  void Hold(bool h) {
    {
      std::lock_guard lk(mu_);
      held_ = h;
    }
    released_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable released_;
  bool held_ = false;
  std::map<ConvId, std::map<Seq, Message>> convs_;
  int reads_ = 0;
  bool fail_ = false;
};

// Past max_queued_messages, with a store to read from, the index does not stop: it
// notes the conversations, reads their messages back from the store once the queue is
// drained, and queues again when it has caught up (a long peak, not a crash).
TEST_F(SearchIndexTest, QueueOverflowCatchesUpFromTheStore) {
  index_.reset();
  FakeStore store;
  SearchIndex::Options opt = store.Options();
  opt.max_queued_messages = 3;
  opt.gather_ms = 60'000;  // nothing is applied before WaitIdle: the queue must overflow
  opt.gather_messages = 1'000;
  auto r = SearchIndex::Open(dir_.sub("behind.db"), opt);
  ASSERT_TRUE(r.ok());
  auto& idx = *r.value();
  auto& gauge = metrics::Server().search_backlog;
  const int64_t base = gauge.Value();
  store.Hold(true);  // the indexer may apply what was queued, but not catch up yet
  store.Commit(idx, {Text(kA, 1, "early alpha"), Text(kB, 1, "early beta")});
  store.Commit(idx, {Text(kA, 2, "overflowing alpha"), Text(kA, 3, "doomed words")});  // past 3: behind
  EXPECT_TRUE(idx.GetStats().catching_up);
  EXPECT_EQ(idx.GetStats().catch_ups, 1u);
  store.Commit(idx, {Text(kC, 1, "gamma arrives"), Edit(kA, 4, kA, 1, "rewritten alpha")});
  store.Commit(idx, {Delete(kA, 5, kA, 3), Text(kB, 2, "later beta")});
  EXPECT_TRUE(idx.GetStats().catching_up);
  // Not yet searchable: the six that arrived while behind, and the first two unless
  // the indexer has applied that queued batch already.
  EXPECT_GE(gauge.Value() - base, 6);
  EXPECT_LE(gauge.Value() - base, 8);
  store.Hold(false);
  idx.WaitIdle();  // waits for the catch-up, not only for the queue
  auto st = idx.GetStats();
  EXPECT_FALSE(st.failed);
  EXPECT_FALSE(st.catching_up);
  EXPECT_GT(store.reads(), 0);
  EXPECT_EQ(gauge.Value() - base, 0);
  auto up = idx.IndexedUpTo();
  ASSERT_TRUE(up.ok());
  std::vector<std::pair<ConvId, Seq>> want = {{kA, 5}, {kB, 2}, {kC, 1}};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(*up, want);
  auto find = [&](std::string_view q, std::vector<ConvId> convs) {
    auto h = idx.Search(q, convs, 100, 0);
    EXPECT_TRUE(h.ok());
    Ids out;
    if (h.ok())
      for (const Hit& x : *h) out.emplace_back(x.conv, x.seq);
    std::sort(out.begin(), out.end());
    return out;
  };
  EXPECT_EQ(find("alpha", {kA}), (Ids{{kA, 1}, {kA, 2}}));
  EXPECT_EQ(find("rewritten", {kA}), (Ids{{kA, 1}}));
  EXPECT_TRUE(find("early", {kA}).empty()) << "the edit replaced the text";
  EXPECT_TRUE(find("doomed", {kA}).empty()) << "the delete removed it";
  EXPECT_EQ(find("beta", {kB}), (Ids{{kB, 1}, {kB, 2}}));
  EXPECT_EQ(find("gamma", {kC}), (Ids{{kC, 1}}));
  // Caught up: batches are queued again, not read back.
  int reads = store.reads();
  store.Commit(idx, {Text(kC, 2, "queued again")});
  idx.WaitIdle();
  EXPECT_EQ(store.reads(), reads);
  EXPECT_EQ(find("queued", {kC}), (Ids{{kC, 2}}));
  EXPECT_EQ(idx.GetStats().catch_ups, 1u);
}

// Polls `done` for up to 10 s (the indexer works on its own thread).
template <typename F>
bool Eventually(F done) {
  for (int i = 0; i < 1000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

// An index whose free CPU the test sets (Options::free_cpu), checked every 5 ms.
struct YieldingIndex {
  FakeStore store;
  std::atomic<double> free_cpu{0.05};
  std::unique_ptr<SearchIndex> idx;
  bool Open(const std::string& path, int64_t max_yield_ms) {
    SearchIndex::Options opt = store.Options();
    opt.gather_ms = 0;  // without a pause everything would be indexed at once
    opt.yield_below_free_cpu = 0.2;
    opt.yield_check_ms = 5;
    opt.max_yield_ms = max_yield_ms;
    opt.free_cpu = [this]() -> std::optional<double> { return free_cpu.load(); };
    auto r = SearchIndex::Open(path, opt);
    if (!r.ok()) return false;
    idx = std::move(r).value();
    return true;
  }
  size_t Found(std::string_view q, ConvId conv) {
    auto h = idx->Search(q, {conv}, 100, 0);
    return h.ok() ? h->size() : 0;
  }
};

// While less CPU than yield_below_free_cpu is free, nothing is indexed and committed
// batches are not kept in memory (only their conversations); once enough is free the
// index catches up from the store, edits included.
TEST_F(SearchIndexTest, YieldsWhileTheCpuIsShortAndCatchesUpFromTheStoreAfter) {
  index_.reset();
  YieldingIndex y;
  ASSERT_TRUE(y.Open(dir_.sub("yield.db"), 600'000));
  ASSERT_TRUE(Eventually([&] { return y.idx->GetStats().yielding; }));
  auto& gauge = metrics::Server().search_backlog;
  const int64_t base = gauge.Value();
  y.store.Commit(*y.idx, {Text(kA, 1, "paused alpha"), Text(kB, 1, "paused beta")});
  y.store.Commit(*y.idx, {Edit(kA, 2, kA, 1, "edited alpha")});
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto st = y.idx->GetStats();
  EXPECT_TRUE(st.yielding);
  EXPECT_TRUE(st.catching_up);
  EXPECT_EQ(st.queued_messages, 0u) << "a pause keeps conversations, not messages";
  EXPECT_EQ(gauge.Value() - base, 3) << "still waiting, so still in the backlog";
  EXPECT_EQ(y.Found("alpha", kA), 0u);
  EXPECT_EQ(y.store.reads(), 0);

  y.free_cpu = 0.25;  // above the threshold, below threshold + kResumeMargin: still paused
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(y.idx->GetStats().yielding);

  y.free_cpu = 0.5;
  ASSERT_TRUE(Eventually([&] {
    auto s = y.idx->GetStats();
    return !s.yielding && !s.catching_up;
  }));
  EXPECT_GT(y.store.reads(), 0);
  EXPECT_EQ(y.Found("edited", kA), 1u);
  EXPECT_EQ(y.Found("paused", kA), 0u) << "the edit replaced the text";
  EXPECT_EQ(y.Found("beta", kB), 1u);
  EXPECT_EQ(gauge.Value() - base, 0);
  EXPECT_EQ(y.idx->GetStats().yields, 1u);
  // Queued and indexed again as usual.
  y.store.Commit(*y.idx, {Text(kC, 1, "after the peak")});
  ASSERT_TRUE(Eventually([&] { return y.Found("peak", kC) == 1; }));
}

// A pause ends after max_yield_ms whatever the CPU; the index then catches up
// completely before it may pause again.
TEST_F(SearchIndexTest, APauseEndsAfterMaxYieldAndTheIndexCatchesUpBeforeTheNext) {
  index_.reset();
  YieldingIndex y;
  ASSERT_TRUE(y.Open(dir_.sub("maxyield.db"), 200));
  ASSERT_TRUE(Eventually([&] { return y.idx->GetStats().yielding; }));
  y.store.Commit(*y.idx, {Text(kA, 1, "starved words")});
  ASSERT_TRUE(Eventually([&] { return y.Found("starved", kA) == 1; })) << "indexed although the CPU stays short";
  // Caught up, it pauses again: the CPU is still short.
  ASSERT_TRUE(Eventually([&] { return y.idx->GetStats().yields >= 2; }));
}

// Someone waiting for the index (WaitIdle, the start's CatchUpFromSource, shutdown)
// never waits for a pause.
TEST_F(SearchIndexTest, WaitIdleEndsAPause) {
  index_.reset();
  YieldingIndex y;
  ASSERT_TRUE(y.Open(dir_.sub("waitidle.db"), 600'000));
  ASSERT_TRUE(Eventually([&] { return y.idx->GetStats().yielding; }));
  y.store.Commit(*y.idx, {Text(kA, 1, "wanted now")});
  y.idx->WaitIdle();
  EXPECT_EQ(y.Found("wanted", kA), 1u);
  // And a destructor during a pause leaves what is not indexed to the next start.
  y.store.Commit(*y.idx, {Text(kA, 2, "left for later")});
  y.idx.reset();
}

// Without yield_below_free_cpu the free CPU is never asked.
TEST_F(SearchIndexTest, NoYieldingUnlessConfigured) {
  index_.reset();
  FakeStore store;
  std::atomic<int> asked{0};
  SearchIndex::Options opt = store.Options();
  opt.gather_ms = 0;
  opt.yield_check_ms = 1;
  opt.free_cpu = [&]() -> std::optional<double> {
    ++asked;
    return 0.0;
  };
  auto r = SearchIndex::Open(dir_.sub("noyield.db"), opt);
  ASSERT_TRUE(r.ok());
  store.Commit(**r, {Text(kA, 1, "plain indexing")});
  (*r)->WaitIdle();
  EXPECT_EQ(asked.load(), 0);
  EXPECT_EQ((*r)->GetStats().yields, 0u);
}

// The start's catch-up: messages the store holds and the index never got (a crash
// between commit and indexing) are read from the source; without one it is an error.
TEST_F(SearchIndexTest, CatchUpFromSourceIndexesWhatOnlyTheStoreHas) {
  EXPECT_FALSE(index_->CatchUpFromSource({kA}).ok()) << "no source";
  index_.reset();
  FakeStore store;
  auto r = SearchIndex::Open(dir_.sub("start.db"), store.Options());
  ASSERT_TRUE(r.ok());
  auto& idx = *r.value();
  store.Commit(idx, {Text(kA, 1, "indexed before the crash")});
  idx.WaitIdle();
  store.Store({Text(kA, 2, "lost at the crash"), Text(kB, 1, "also lost")});  // never enqueued
  ASSERT_TRUE(idx.CatchUpFromSource({kA, kB, kC}).ok());
  auto up = idx.IndexedUpTo();
  ASSERT_TRUE(up.ok());
  std::vector<std::pair<ConvId, Seq>> want = {{kA, 2}, {kB, 1}};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(*up, want);
  auto hits = idx.Search("lost", {kA, kB}, 10, 0);
  ASSERT_TRUE(hits.ok());
  EXPECT_EQ(hits->size(), 2u);
  EXPECT_FALSE(idx.GetStats().catching_up);
}

// A store read that fails while catching up stops the index (as a failed write does)
// without moving IndexedUpTo past what was applied, and WaitIdle still returns.
TEST_F(SearchIndexTest, FailedStoreReadWhileBehindStopsTruthfully) {
  index_.reset();
  FakeStore store;
  SearchIndex::Options opt = store.Options();
  opt.max_queued_messages = 2;
  opt.gather_ms = 60'000;
  opt.gather_messages = 1'000;
  auto r = SearchIndex::Open(dir_.sub("behind_fail.db"), opt);
  ASSERT_TRUE(r.ok());
  auto& idx = *r.value();
  const int64_t base = metrics::Server().search_backlog.Value();
  store.set_fail(true);
  store.Commit(idx, {Text(kA, 1, "one"), Text(kA, 2, "two")});
  store.Commit(idx, {Text(kA, 3, "three")});  // behind
  idx.WaitIdle();
  EXPECT_TRUE(idx.GetStats().failed);
  EXPECT_EQ(metrics::Server().search_backlog.Value() - base, 0);
  auto up = idx.IndexedUpTo();
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(*up, (std::vector<std::pair<ConvId, Seq>>{{kA, 2}}));
  store.Commit(idx, {Text(kA, 4, "four")});  // stopped: ignored, not waited for
  idx.WaitIdle();
}

TEST_F(SearchIndexTest, ConcurrentSearchWhileIndexing) {
  constexpr int kConvs = 40;
  constexpr int kBatches = 300;
  std::vector<ConvId> convs;
  for (int i = 0; i < kConvs; ++i) convs.push_back(0x7000000000000000ULL + static_cast<ConvId>(i));
  std::atomic<bool> done{false};
  std::atomic<int> errors{0}, searches{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      const char* qs[] = {"apple", "banana cherry", "apple banana", "durian", "nothing"};
      while (!done.load()) {
        std::vector<ConvId> mine;
        for (ConvId c : convs)
          if (rng() % 3 == 0) mine.push_back(c);
        auto r = index_->Search(qs[rng() % 5], mine, 20, rng() % 3,
                                static_cast<Plan>(rng() % 3));
        if (!r.ok()) ++errors;
        ++searches;
      }
    });
  }
  const char* words[] = {"apple", "banana", "cherry", "durian"};
  std::vector<Seq> next(kConvs, 1);
  std::mt19937 rng(99);
  for (int b = 0; b < kBatches; ++b) {
    std::vector<Message> batch;
    for (int i = 0; i < 20; ++i) {
      int c = static_cast<int>(rng() % kConvs);
      Seq s = next[static_cast<size_t>(c)]++;
      if (s > 3 && rng() % 10 == 0) {
        batch.push_back(Edit(convs[static_cast<size_t>(c)], s, convs[static_cast<size_t>(c)], s - 2, "edited apple"));
      } else if (s > 3 && rng() % 20 == 0) {
        batch.push_back(Delete(convs[static_cast<size_t>(c)], s, convs[static_cast<size_t>(c)], s - 1));
      } else {
        batch.push_back(Text(convs[static_cast<size_t>(c)], s,
                             std::string(words[rng() % 4]) + " " + words[rng() % 4] + " pie"));
      }
    }
    index_->Enqueue(std::move(batch));
    if (b % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  index_->WaitIdle();
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(searches.load(), 0);
  EXPECT_FALSE(index_->GetStats().failed);
  auto up = index_->IndexedUpTo();
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(up->size(), static_cast<size_t>(kConvs));
  EXPECT_FALSE(Find("pie", convs, 10).empty());
}

}  // namespace
}  // namespace sb::search
