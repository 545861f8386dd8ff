// The chat core driven by hand-cranked shard executors, fake sessions and the real
// embedded store in a temp dir: sequencing, dedup, membership and routing.
#include <gtest/gtest.h>
#include <simdjson.h>
#include <stdlib.h>

#include <deque>
#include <map>
#include <filesystem>
#include <future>
#include <mutex>

#include "base/clock.h"
#include "chat/chat_core.h"
#include "chat/manual_executor.h"
#include "store/store.h"

namespace sb::chat {
namespace {


class FakeSession final : public Session {
 public:
  FakeSession(uint64_t id, UserId u, std::string dev) : id_(id), user_(u), dev_(std::move(dev)), sid_("ses_" + std::to_string(id)) {}
  uint64_t id() const override { return id_; }
  UserId user() const override { return user_; }
  const std::string& device_id() const override { return dev_; }
  const std::string& session_id() const override { return sid_; }
  void Send(std::shared_ptr<const std::string> f) override { frames.push_back(*f); }
  size_t Queued() const override { return 0; }
  void Close(uint16_t code, std::string_view) override { closed_with = code; }
  uint16_t closed_with = 0;
  void WhenQueueBelow(size_t, std::function<void()> fn) override { fn(); }

  // Frames whose "event" is `ev`, parsed.
  std::vector<std::string> Events(std::string_view ev) const {
    std::vector<std::string> out;
    for (auto& f : frames)
      if (f.find("\"event\":\"" + std::string(ev) + "\"") != std::string::npos) out.push_back(f);
    return out;
  }
  std::vector<std::string> frames;

 private:
  uint64_t id_;
  UserId user_;
  std::string dev_, sid_;
};

uint64_t Field(const std::string& json, const char* key) {
  simdjson::dom::parser p;
  return uint64_t(p.parse(json)[key]);
}
std::string StrField(const std::string& json, const char* key) {
  simdjson::dom::parser p;
  return std::string(std::string_view(p.parse(json)[key]));
}
bool BoolField(const std::string& json, const char* key) {
  simdjson::dom::parser p;
  return bool(p.parse(json)[key]);
}
bool HasField(const std::string& json, const char* key) {
  simdjson::dom::parser p;
  return p.parse(json)[key].error() == simdjson::SUCCESS;
}

class ChatCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sb_core_test_XXXXXX";
    dir_ = mkdtemp(tmpl);
    store::StoreOptions so;
    so.dir = dir_ + "/store";
    so.sync = store::SyncPolicy::kNone;
    auto opened = store::OpenEmbeddedStore(so);
    ASSERT_TRUE(opened.ok()) << opened.status().message();
    store_ = std::move(opened).value();
    core_ = std::make_unique<ChatCore>(*store_, std::vector<Executor*>{&ex_[0], &ex_[1]}, Options(), clock_);
    core_->Start();
    store::Conversation c;
    c.id = 1001;
    c.type = store::ConvType::kGroup;
    c.members = {kAlice, kBob, kCarol};
    bool created;
    ASSERT_TRUE(store_->CreateConversation(c, &created).ok());
    conv_ = FormatConvId(c.id);
    store::Conversation other;
    other.id = 2002;
    other.type = store::ConvType::kDirect;
    other.members = {kBob, kCarol};
    ASSERT_TRUE(store_->CreateConversation(other, &created).ok());
  }
  // Fake sessions send no first frame: start live delivery at once unless a test
  // wants the first-frame wait.
  virtual CoreOptions Options() {
    CoreOptions o;
    o.first_frame_wait_ms = 0;
    return o;
  }

  void TearDown() override {
    ex_[0].RunAll();
    ex_[1].RunAll();
    core_->Stop();
    core_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  // Cranks the shards until `pred` holds (the commit thread runs for real).
  template <typename P>
  bool Until(P pred) {
    for (int i = 0; i < 5000; ++i) {
      ex_[0].RunAll();
      ex_[1].RunAll();
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }
  std::string Send(const std::string& cmid, const std::string& content, const std::string& conv = "") {
    return R"({"event":"send_message","client_msg_id":")" + cmid + R"(","conversation_id":")" +
           (conv.empty() ? conv_ : conv) + R"(","content":")" + content + "\"}";
  }

  static constexpr UserId kAlice = 11, kBob = 22, kCarol = 33, kMallory = 44;
  std::string dir_;
  ManualClock clock_{1795979690000};
  ManualExecutor ex_[2];
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<ChatCore> core_;
  std::string conv_;
};

TEST_F(ChatCoreTest, WelcomeOnAttach) {
  FakeSession a(1, kAlice, "phone");
  core_->Attach(0, &a);
  ASSERT_EQ(a.frames.size(), 1u);
  EXPECT_EQ(StrField(a.frames[0], "event"), "welcome");
  EXPECT_EQ(StrField(a.frames[0], "user_id"), FormatUserId(kAlice));
  EXPECT_EQ(StrField(a.frames[0], "device_id"), "phone");
  core_->Detach(0, &a);
}

TEST_F(ChatCoreTest, SeqIsGapFreeAndFanOutReachesEveryOtherDevice) {
  FakeSession a1(1, kAlice, "phone"), a2(2, kAlice, "laptop"), b(3, kBob, "phone"), m(4, kMallory, "x");
  core_->Attach(0, &a1);
  core_->Attach(1, &a2);
  core_->Attach(1, &b);
  core_->Attach(0, &m);
  for (int i = 0; i < 50; ++i) core_->OnFrame(0, &a1, Send("c" + std::to_string(i), "hello " + std::to_string(i)));
  ASSERT_TRUE(Until([&] { return a1.Events("message_ack").size() == 50 && b.Events("message").size() == 50; }));
  auto acks = a1.Events("message_ack");
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(Field(acks[i], "seq"), uint64_t(i + 1));
    EXPECT_EQ(StrField(acks[i], "client_msg_id"), "c" + std::to_string(i));
  }
  auto got = b.Events("message");
  for (int i = 0; i < 50; ++i) EXPECT_EQ(Field(got[i], "seq"), uint64_t(i + 1)) << "in seq order";
  EXPECT_EQ(a2.Events("message").size(), 50u) << "the sender's other device gets every message";
  EXPECT_EQ(a1.Events("message").size(), 0u) << "the sending device gets acks, not copies";
  EXPECT_EQ(m.Events("message").size(), 0u) << "non-members get nothing";
  EXPECT_EQ(*store_->LastSeq(1001), 50u);
  for (auto* s : {&a1, &a2, &b, &m}) core_->Detach(s == &a1 || s == &m ? 0 : 1, s);
}

TEST_F(ChatCoreTest, RetryIsAckedAsDuplicateAndStoredOnce) {
  FakeSession a(1, kAlice, "phone");
  core_->Attach(0, &a);
  // The retry arrives while the first is still in flight, then again after commit.
  core_->OnFrame(0, &a, Send("same", "hi"));
  core_->OnFrame(0, &a, Send("same", "hi"));
  ASSERT_TRUE(Until([&] { return a.Events("message_ack").size() == 2; }));
  core_->OnFrame(0, &a, Send("same", "hi"));
  ASSERT_TRUE(Until([&] { return a.Events("message_ack").size() == 3; }));
  auto acks = a.Events("message_ack");
  EXPECT_EQ(StrField(acks[0], "message_id"), StrField(acks[1], "message_id"));
  EXPECT_EQ(StrField(acks[0], "message_id"), StrField(acks[2], "message_id"));
  int dups = 0;
  for (auto& f : acks) dups += f.find("\"duplicate\":true") != std::string::npos;
  EXPECT_EQ(dups, 2);
  EXPECT_EQ(*store_->LastSeq(1001), 1u);
  core_->Detach(0, &a);
}

TEST_F(ChatCoreTest, SameKeyDifferentBodyIsConflict) {
  FakeSession a(1, kAlice, "phone");
  core_->Attach(0, &a);
  core_->OnFrame(0, &a, Send("k", "one"));
  core_->OnFrame(0, &a, Send("k", "two"));  // in flight
  ASSERT_TRUE(Until([&] { return a.Events("message_ack").size() == 1 && a.Events("error").size() == 1; }));
  core_->OnFrame(0, &a, Send("k", "three"));  // committed
  ASSERT_TRUE(Until([&] { return a.Events("error").size() == 2; }));
  for (auto& e : a.Events("error")) {
    EXPECT_EQ(StrField(e, "code"), "conflict");
    EXPECT_EQ(StrField(e, "client_msg_id"), "k");
  }
  EXPECT_EQ(*store_->LastSeq(1001), 1u);
  core_->Detach(0, &a);
}

TEST_F(ChatCoreTest, DedupWindowExpires) {
  FakeSession a(1, kAlice, "phone");
  core_->Attach(0, &a);
  core_->OnFrame(0, &a, Send("k", "one"));
  ASSERT_TRUE(Until([&] { return a.Events("message_ack").size() == 1; }));
  clock_.Advance(store::kDedupWindowMs + 1);
  core_->OnFrame(0, &a, Send("k", "one"));
  ASSERT_TRUE(Until([&] { return a.Events("message_ack").size() == 2; }));
  EXPECT_EQ(Field(a.Events("message_ack")[1], "seq"), 2u) << "after 24 h the key is new again";
  core_->Detach(0, &a);
}

TEST_F(ChatCoreTest, NonMembersAndBadIdsAreForbidden) {
  FakeSession m(1, kMallory, "x"), a(2, kAlice, "phone");
  core_->Attach(0, &m);
  core_->Attach(0, &a);
  core_->OnFrame(0, &m, Send("m1", "let me in"));
  core_->OnFrame(0, &a, Send("m2", "not mine", FormatConvId(2002)));
  core_->OnFrame(0, &a, Send("m3", "nowhere", FormatConvId(999999)));
  core_->OnFrame(0, &a, Send("m4", "garbage", "conv_nope"));
  core_->OnFrame(0, &a, R"({"event":"send_message","client_msg_id":"m5","conversation_id":")" + conv_ +
                            R"(","content":"x","sender_id":")" + FormatUserId(kBob) + "\"}");
  ASSERT_TRUE(Until([&] { return m.Events("error").size() == 1 && a.Events("error").size() == 4; }));
  EXPECT_EQ(StrField(m.Events("error")[0], "code"), "forbidden");
  for (auto& e : a.Events("error")) EXPECT_EQ(StrField(e, "code"), "forbidden") << e;
  // Unknown, foreign and malformed conversation ids answer alike.
  std::map<std::string, std::string> by_id;
  for (auto& e : a.Events("error")) by_id[StrField(e, "client_msg_id")] = StrField(e, "message");
  EXPECT_EQ(by_id["m2"], StrField(m.Events("error")[0], "message"));
  EXPECT_EQ(by_id["m3"], by_id["m2"]);
  EXPECT_EQ(by_id["m4"], by_id["m2"]);
  EXPECT_NE(by_id["m5"], by_id["m2"]);
  EXPECT_EQ(*store_->LastSeq(1001), 0u);
  EXPECT_EQ(*store_->LastSeq(2002), 0u);
  core_->Detach(0, &m);
  core_->Detach(0, &a);
}

TEST_F(ChatCoreTest, SequencerResumesFromStoreAfterRestart) {
  FakeSession a(1, kAlice, "phone");
  core_->Attach(0, &a);
  for (int i = 0; i < 5; ++i) core_->OnFrame(0, &a, Send("r" + std::to_string(i), "x"));
  ASSERT_TRUE(Until([&] { return a.Events("message_ack").size() == 5; }));
  core_->Detach(0, &a);
  ex_[0].RunAll();  // tasks posted by the old core run against the old core
  ex_[1].RunAll();
  core_->Stop();
  core_ = std::make_unique<ChatCore>(*store_, std::vector<Executor*>{&ex_[0], &ex_[1]}, CoreOptions{}, clock_);
  core_->Start();
  FakeSession a2(2, kAlice, "phone");
  core_->Attach(1, &a2);
  core_->OnFrame(1, &a2, Send("r0", "x"));  // a retry across the restart
  core_->OnFrame(1, &a2, Send("r9", "x"));
  ASSERT_TRUE(Until([&] { return a2.Events("message_ack").size() == 2; }));
  EXPECT_EQ(Field(a2.Events("message_ack")[0], "seq"), 1u);
  EXPECT_EQ(Field(a2.Events("message_ack")[1], "seq"), 6u);
  core_->Detach(1, &a2);
}

TEST_F(ChatCoreTest, RateLimitPerConnection) {
  FakeSession a(1, kAlice, "phone");
  core_->Attach(0, &a);
  for (int i = 0; i < 150; ++i) core_->OnFrame(0, &a, Send("rl" + std::to_string(i), "x"));
  ASSERT_TRUE(Until([&] { return a.Events("message_ack").size() + a.Events("error").size() == 150; }));
  // Burst 100, plus whatever refilled during the loop (50/s).
  EXPECT_GE(a.Events("message_ack").size(), 100u);
  EXPECT_LT(a.Events("message_ack").size(), 110u);
  EXPECT_EQ(StrField(a.Events("error")[0], "code"), "rate_limited");
  core_->Detach(0, &a);
}

TEST_F(ChatCoreTest, PingPong) {
  FakeSession a(1, kAlice, "phone");
  core_->Attach(0, &a);
  core_->OnFrame(0, &a, R"({"event":"ping"})");
  ASSERT_EQ(a.Events("pong").size(), 1u);
  EXPECT_GT(Field(a.Events("pong")[0], "server_timestamp_ms"), 0u);
  core_->Detach(0, &a);
}

// ---- receipts and resume ----------------------------------------------------------

class DeliveryTest : public ChatCoreTest {
 protected:
  CoreOptions Options() override {
    CoreOptions o;
    o.limits.send_burst = 1e6;  // these tests send fast on purpose
    o.first_frame_wait_ms = 1000;  // the clock does not move: new sessions wait for their first frame
    return o;
  }
  std::string Receipt(const char* status, Seq up_to) {
    return R"({"event":"message_receipt","conversation_id":")" + conv_ + R"(","status":")" + status +
           R"(","up_to_seq":)" + std::to_string(up_to) + "}";
  }
  std::string Resume(std::optional<Seq> cursor) {
    if (!cursor) return R"({"event":"resume"})";
    return R"({"event":"resume","cursors":{")" + conv_ + "\":" + std::to_string(*cursor) + "}}";
  }
  void SendN(FakeSession& s, uint32_t shard, int n, const std::string& prefix) {
    size_t before = s.Events("message_ack").size();
    for (int i = 0; i < n; ++i) core_->OnFrame(shard, &s, Send(prefix + std::to_string(i), "m" + std::to_string(i)));
    ASSERT_TRUE(Until([&] { return s.Events("message_ack").size() == before + n; }));
  }
  static std::vector<uint64_t> Seqs(const FakeSession& s) {
    std::vector<uint64_t> out;
    for (auto& f : s.Events("message")) out.push_back(Field(f, "seq"));
    return out;
  }
};

TEST_F(DeliveryTest, ReceiptsRouteToEverySenderDeviceAndOnlyMoveForward) {
  FakeSession a1(1, kAlice, "phone"), a2(2, kAlice, "laptop"), b(3, kBob, "phone"), c(4, kCarol, "phone");
  core_->Attach(0, &a1);
  core_->Attach(1, &a2);
  core_->Attach(1, &b);
  core_->Attach(0, &c);
  SendN(a1, 0, 3, "a");
  core_->OnFrame(1, &b, Receipt("DELIVERED", 3));
  ASSERT_TRUE(Until([&] { return a1.Events("message_receipt").size() == 1 && a2.Events("message_receipt").size() == 1; }));
  auto r = a1.Events("message_receipt")[0];
  EXPECT_EQ(StrField(r, "status"), "DELIVERED");
  EXPECT_EQ(StrField(r, "recipient_id"), FormatUserId(kBob));
  EXPECT_EQ(StrField(r, "sender_id"), FormatUserId(kAlice));
  EXPECT_EQ(Field(r, "up_to_seq"), 3u);
  EXPECT_EQ(StrField(r, "message_id"), FormatMessageId(1001, 3));
  EXPECT_TRUE(c.Events("message_receipt").empty()) << "only the senders of covered messages";

  core_->OnFrame(1, &b, Receipt("DELIVERED", 2));  // backward: not routed
  core_->OnFrame(1, &b, Receipt("DELIVERED", 3));  // same: not routed
  core_->OnFrame(1, &b, Receipt("READ", 99));      // beyond the end: clamped to 3
  ASSERT_TRUE(Until([&] { return a1.Events("message_receipt").size() == 2; }));
  EXPECT_EQ(StrField(a1.Events("message_receipt")[1], "status"), "READ");
  EXPECT_EQ(Field(a1.Events("message_receipt")[1], "up_to_seq"), 3u);
  // Let anything else that was queued arrive: still exactly two.
  for (int i = 0; i < 20; ++i) Until([] { return true; }), std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(a1.Events("message_receipt").size(), 2u);

  // Receipts by message_id; Carol's message gets Bob's receipt, Alice's do not again.
  SendN(c, 0, 1, "c");
  core_->OnFrame(1, &b, R"({"event":"message_receipt","conversation_id":")" + conv_ +
                            R"(","message_id":")" + FormatMessageId(1001, 4) + R"(","status":"DELIVERED"})");
  ASSERT_TRUE(Until([&] { return c.Events("message_receipt").size() == 1; }));
  EXPECT_EQ(Field(c.Events("message_receipt")[0], "up_to_seq"), 4u);
  EXPECT_EQ(a1.Events("message_receipt").size(), 2u);

  auto states = store_->GetReceipts(1001);
  ASSERT_TRUE(states.ok());
  ASSERT_EQ(states->size(), 1u);
  EXPECT_EQ((*states)[0].user, kBob);
  EXPECT_EQ((*states)[0].delivered, 4u);
  EXPECT_EQ((*states)[0].read, 3u);
  for (auto* s : {&a1, &c}) core_->Detach(0, s);
  for (auto* s : {&a2, &b}) core_->Detach(1, s);
}

TEST_F(DeliveryTest, EditsAndDeletesRewriteTheirTargetAndOnlyTheAuthorMayDoThem) {
  FakeSession a(1, kAlice, "phone"), b(2, kBob, "phone");
  core_->Attach(0, &a);
  core_->Attach(1, &b);
  SendN(a, 0, 2, "orig");  // seq 1 ("m0"), seq 2 ("m1")
  auto frame = [&](const char* cmid, const char* type, Seq target, const char* content, ConvId target_conv = 1001) {
    return std::string(R"({"event":"send_message","client_msg_id":")") + cmid + R"(","conversation_id":")" + conv_ +
           R"(","content_type":")" + type + R"(","target_message_id":")" + FormatMessageId(target_conv, target) +
           R"(","content":")" + content + R"("})";
  };
  core_->OnFrame(1, &b, frame("b-edit", "edit", 1, "hijacked"));
  core_->OnFrame(1, &b, frame("b-react", "reaction", 1, "+1"));
  core_->OnFrame(0, &a, frame("a-edit1", "edit", 1, "first edit"));
  core_->OnFrame(0, &a, frame("a-edit2", "edit", 1, "second edit"));  // builds on the first, in flight
  core_->OnFrame(0, &a, frame("a-del", "delete", 2, ""));
  core_->OnFrame(0, &a, frame("a-nowhere", "edit", 99, "x"));
  core_->OnFrame(0, &a, frame("a-other", "edit", 1, "x", 2002));  // a message id of another conversation
  ASSERT_TRUE(Until([&] { return a.Events("message_ack").size() == 5 && a.Events("error").size() == 2 &&
                                 b.Events("error").size() == 1 && b.Events("message_ack").size() == 1; }));
  EXPECT_EQ(StrField(b.Events("error")[0], "code"), "forbidden");
  EXPECT_EQ(StrField(b.Events("error")[0], "client_msg_id"), "b-edit");
  for (auto& e : a.Events("error")) EXPECT_EQ(StrField(e, "code"), "not_found") << e;

  auto m1 = store_->GetMessage(1001, 1);
  ASSERT_TRUE(m1.ok());
  EXPECT_EQ(m1->content, "second edit");
  EXPECT_GT(m1->edited_ms, 0);
  EXPECT_FALSE(m1->deleted);
  auto m2 = store_->GetMessage(1001, 2);
  ASSERT_TRUE(m2.ok());
  EXPECT_TRUE(m2->deleted);
  EXPECT_TRUE(m2->content.empty()) << "a deleted message's content is gone";
  EXPECT_EQ(*store_->LastSeq(1001), 6u) << "2 originals + reaction + 2 edits + delete, each in sequence";

  core_->OnFrame(0, &a, frame("a-edit-deleted", "edit", 2, "back"));
  ASSERT_TRUE(Until([&] { return a.Events("error").size() == 3; }));
  EXPECT_EQ(StrField(a.Events("error")[2], "code"), "bad_request");
  core_->Detach(0, &a);
  core_->Detach(1, &b);
}

TEST_F(DeliveryTest, ReceiptsFromStrangersAreForbidden) {
  FakeSession m(1, kMallory, "x");
  core_->Attach(0, &m);
  core_->OnFrame(0, &m, Receipt("READ", 1));
  ASSERT_TRUE(Until([&] { return m.Events("error").size() == 1; }));
  EXPECT_EQ(StrField(m.Events("error")[0], "code"), "forbidden");
  core_->Detach(0, &m);
}

TEST_F(DeliveryTest, ResumeReplaysAfterTheCursorOrTheServerRecord) {
  FakeSession a(1, kAlice, "phone");
  core_->Attach(0, &a);
  SendN(a, 0, 5, "r");

  FakeSession b1(2, kBob, "phone");
  core_->Attach(1, &b1);
  core_->OnFrame(1, &b1, Resume(2));
  ASSERT_TRUE(Until([&] { return b1.Events("resume_done").size() == 1; }));
  EXPECT_EQ(Seqs(b1), (std::vector<uint64_t>{3, 4, 5}));
  EXPECT_EQ(Field(b1.Events("resume_done")[0], "replayed"), 3u);
  EXPECT_EQ(Field(b1.Events("resume_done")[0], "conversations"), 2u);
  core_->OnFrame(1, &b1, Receipt("DELIVERED", 4));
  ASSERT_TRUE(Until([&] { return a.Events("message_receipt").size() == 1; }));
  core_->Detach(1, &b1);

  // Same device, no cursors: the server's record (4) decides.
  FakeSession b2(3, kBob, "phone");
  core_->Attach(0, &b2);
  core_->OnFrame(0, &b2, Resume(std::nullopt));
  ASSERT_TRUE(Until([&] { return b2.Events("resume_done").size() == 1; }));
  EXPECT_EQ(Seqs(b2), (std::vector<uint64_t>{5}));
  // Another device has acknowledged nothing: it gets everything.
  FakeSession b3(4, kBob, "tablet");
  core_->Attach(1, &b3);
  core_->OnFrame(1, &b3, Resume(std::nullopt));
  ASSERT_TRUE(Until([&] { return b3.Events("resume_done").size() == 1; }));
  EXPECT_EQ(Seqs(b3), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  core_->Detach(0, &a);
  core_->Detach(0, &b2);
  core_->Detach(1, &b3);
}

TEST_F(DeliveryTest, SendsDuringResumeAreNeitherLostNorDoubledNorReordered) {
  FakeSession a(1, kAlice, "phone");
  core_->Attach(0, &a);
  SendN(a, 0, 300, "before");  // in the store before the resume
  FakeSession b(2, kBob, "phone");
  core_->Attach(1, &b);
  // 600 more sends race with the replay: some are committed before it reads, some
  // while it pages, some after.
  for (int i = 0; i < 600; ++i) {
    core_->OnFrame(0, &a, Send("during" + std::to_string(i), "x"));
    if (i == 100) core_->OnFrame(1, &b, Resume(0));
    if (i % 50 == 0) {
      ex_[0].RunAll();
      ex_[1].RunAll();
    }
  }
  ASSERT_TRUE(Until([&] { return b.Events("resume_done").size() == 1 && Seqs(b).size() >= 900; }));
  std::vector<uint64_t> want(900);
  for (int i = 0; i < 900; ++i) want[i] = i + 1;
  EXPECT_EQ(Seqs(b), want);
  core_->Detach(0, &a);
  core_->Detach(1, &b);
}

TEST_F(DeliveryTest, SenderWhoWasAwayGetsMissedReceiptsOnResume) {
  FakeSession a(1, kAlice, "phone");
  core_->Attach(0, &a);
  SendN(a, 0, 2, "x");
  core_->Detach(0, &a);
  FakeSession b(2, kBob, "phone");
  core_->Attach(1, &b);
  core_->OnFrame(1, &b, Receipt("READ", 2));
  ASSERT_TRUE(Until([&] { return store_->GetReceipts(1001).ok() && !store_->GetReceipts(1001)->empty(); }));
  for (int i = 0; i < 3; ++i) ex_[0].RunAll(), ex_[1].RunAll();  // the live routing (to no one) is done
  FakeSession a2(3, kAlice, "phone");
  core_->Attach(0, &a2);
  core_->OnFrame(0, &a2, Resume(2));
  ASSERT_TRUE(Until([&] { return a2.Events("resume_done").size() == 1; }));
  auto rs = a2.Events("message_receipt");
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(StrField(rs[0], "status"), "READ");
  EXPECT_EQ(StrField(rs[0], "recipient_id"), FormatUserId(kBob));
  EXPECT_EQ(Field(rs[0], "up_to_seq"), 2u);
  core_->Detach(1, &b);
  core_->Detach(0, &a2);
}

TEST_F(DeliveryTest, AConversationLeftDuringTheResumeGetsNoReceiptReplay) {
  FakeSession a(1, kAlice, "phone");
  core_->Attach(0, &a);
  SendN(a, 0, 300, "x");  // more than one replay page (256)
  core_->Detach(0, &a);
  FakeSession b(2, kBob, "phone");
  core_->Attach(1, &b);
  core_->OnFrame(1, &b, Receipt("READ", 300));
  ASSERT_TRUE(Until([&] { return store_->GetReceipts(1001).ok() && !store_->GetReceipts(1001)->empty(); }));
  for (int i = 0; i < 3; ++i) ex_[0].RunAll(), ex_[1].RunAll();
  FakeSession a2(3, kAlice, "phone");
  core_->Attach(0, &a2);
  core_->OnFrame(0, &a2, Resume(0));
  // The first page went out; the rest waits on the shard. Alice leaves meanwhile.
  ASSERT_TRUE(a2.Events("resume_done").empty());
  ASSERT_EQ(Seqs(a2).size(), 256u);
  auto left = store_->UpdateConversation(1001, [](store::Conversation& c) {
    c.members.erase(std::remove(c.members.begin(), c.members.end(), kAlice), c.members.end());
    return Status::Ok();
  });
  ASSERT_TRUE(left.ok()) << left.status().message();
  ASSERT_TRUE(Until([&] { return a2.Events("resume_done").size() == 1; }));
  EXPECT_TRUE(a2.Events("message_receipt").empty()) << a2.Events("message_receipt")[0];
  core_->Detach(1, &b);
  core_->Detach(0, &a2);
}

// ---- presence and typing (clock driven by hand, no sleeps) ------------------------

class PresenceTest : public ChatCoreTest {
 protected:
  void Tick() {
    core_->Tick(0);
    core_->Tick(1);
    Crank();
  }
  void Crank() {
    for (int i = 0; i < 4; ++i) {
      ex_[0].RunAll();
      ex_[1].RunAll();
    }
  }
  void Subscribe(FakeSession& s, uint32_t shard, UserId target) {
    core_->OnFrame(shard, &s, R"({"event":"presence_subscribe","user_ids":[")" + FormatUserId(target) + "\"]}");
    Crank();
  }
  // Alice's device `a` on shard 1, Bob's `b` on shard 0 watching Alice.
  void BobWatchesAlice(FakeSession& a, FakeSession& b) {
    core_->Attach(1, &a);
    core_->Attach(0, &b);
    Crank();
    Subscribe(b, 0, kAlice);
  }
  std::vector<std::string> PresenceOf(const FakeSession& s, UserId u) {
    std::vector<std::string> out;
    for (auto& f : s.Events("presence"))
      if (StrField(f, "user_id") == FormatUserId(u)) out.push_back(f);
    return out;
  }
  static bool IsNull(const std::string& f, const char* key) {
    simdjson::dom::parser p;
    return p.parse(f)[key].is_null();
  }
};

TEST_F(PresenceTest, OnlineOfflineAndLastSeen) {
  FakeSession b(2, kBob, "phone");
  core_->Attach(0, &b);
  Crank();
  Subscribe(b, 0, kAlice);
  auto p = PresenceOf(b, kAlice);
  ASSERT_EQ(p.size(), 1u) << "the current state answers a subscription: " << ::testing::PrintToString(b.frames);
  EXPECT_EQ(StrField(p[0], "status"), "offline");
  EXPECT_TRUE(IsNull(p[0], "last_seen_ms")) << "never seen";

  FakeSession a(1, kAlice, "phone");
  core_->Attach(1, &a);
  Crank();
  p = PresenceOf(b, kAlice);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(StrField(p[1], "status"), "online");

  clock_.Advance(1000);
  int64_t left_at = clock_.NowMs();
  core_->Detach(1, &a);
  Crank();
  EXPECT_EQ(PresenceOf(b, kAlice).size(), 2u) << "offline waits for the grace";
  clock_.Advance(4999);
  Tick();
  EXPECT_EQ(PresenceOf(b, kAlice).size(), 2u);
  clock_.Advance(1);
  Tick();
  p = PresenceOf(b, kAlice);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(StrField(p[2], "status"), "offline");
  EXPECT_EQ(int64_t(Field(p[2], "last_seen_ms")), left_at);
  core_->Detach(0, &b);
}

TEST_F(PresenceTest, SilentDeviceExpiresAndComesBackWithAnyFrame) {
  FakeSession a(1, kAlice, "phone"), b(2, kBob, "phone");
  BobWatchesAlice(a, b);
  ASSERT_EQ(StrField(PresenceOf(b, kAlice).back(), "status"), "online");
  clock_.Advance(29999);
  Tick();
  EXPECT_EQ(PresenceOf(b, kAlice).size(), 1u) << "heartbeat TTL is 30 s";
  clock_.Advance(1);
  Tick();  // device expires; offline is pending its grace
  clock_.Advance(5000);
  Tick();
  ASSERT_EQ(PresenceOf(b, kAlice).size(), 2u);
  EXPECT_EQ(StrField(PresenceOf(b, kAlice).back(), "status"), "offline");
  core_->OnFrame(1, &a, R"({"event":"ping"})");
  Crank();
  ASSERT_EQ(PresenceOf(b, kAlice).size(), 3u);
  EXPECT_EQ(StrField(PresenceOf(b, kAlice).back(), "status"), "online");
  // Back online, it is watched again: heard from every 20 s it stays online however
  // long, and 30 s of silence take it offline once more.
  for (int i = 0; i < 4; ++i) {
    clock_.Advance(20000);
    Tick();
    core_->OnFrame(1, &a, R"({"event":"ping"})");
    Crank();
  }
  EXPECT_EQ(PresenceOf(b, kAlice).size(), 3u) << "a device heard from every 20 s stays online";
  clock_.Advance(30000);
  Tick();
  clock_.Advance(5000);
  Tick();
  ASSERT_EQ(PresenceOf(b, kAlice).size(), 4u);
  EXPECT_EQ(StrField(PresenceOf(b, kAlice).back(), "status"), "offline");
  core_->Detach(1, &a);
  core_->Detach(0, &b);
}

TEST_F(PresenceTest, ReconnectWithinGraceAnnouncesNothing) {
  FakeSession a(1, kAlice, "phone"), b(2, kBob, "phone");
  BobWatchesAlice(a, b);
  size_t before = b.frames.size();
  for (int i = 0; i < 20; ++i) {  // a flapping phone
    core_->Detach(1, &a);
    Crank();
    clock_.Advance(1000);
    Tick();
    core_->Attach(1, &a);
    Crank();
  }
  clock_.Advance(10000);
  Tick();
  EXPECT_EQ(b.frames.size(), before) << "no presence frames for a flap within the grace";
  core_->Detach(1, &a);
  core_->Detach(0, &b);
}

// Left, back, left again within the grace: the grace counts from the last departure,
// and offline is announced once, with that departure as last seen.
TEST_F(PresenceTest, GraceCountsFromTheLastDeparture) {
  FakeSession a(1, kAlice, "phone"), b(2, kBob, "phone");
  BobWatchesAlice(a, b);
  const size_t before = PresenceOf(b, kAlice).size();
  core_->Detach(1, &a);
  Crank();
  clock_.Advance(3000);
  Tick();
  core_->Attach(1, &a);
  Crank();
  clock_.Advance(1000);
  const int64_t left_again = clock_.NowMs();
  core_->Detach(1, &a);
  Crank();
  clock_.Advance(1000);  // 5 s after the first departure
  Tick();
  EXPECT_EQ(PresenceOf(b, kAlice).size(), before) << "the first departure's grace no longer counts";
  clock_.Advance(3999);
  Tick();
  EXPECT_EQ(PresenceOf(b, kAlice).size(), before);
  clock_.Advance(1);  // 5 s after the second
  Tick();
  auto p = PresenceOf(b, kAlice);
  ASSERT_EQ(p.size(), before + 1);
  EXPECT_EQ(StrField(p.back(), "status"), "offline");
  EXPECT_EQ(int64_t(Field(p.back(), "last_seen_ms")), left_again);
  clock_.Advance(10000);
  Tick();
  EXPECT_EQ(PresenceOf(b, kAlice).size(), before + 1) << "announced once";
  core_->Detach(0, &b);
}

TEST_F(PresenceTest, StrangersLearnNothing) {
  FakeSession a(1, kAlice, "phone"), m(4, kMallory, "x");
  core_->Attach(1, &a);
  core_->Attach(0, &m);
  Crank();
  Subscribe(m, 0, kAlice);
  Subscribe(m, 0, 987654321);  // does not exist
  EXPECT_TRUE(m.Events("presence").empty());
  EXPECT_TRUE(m.Events("error").empty()) << "same silence for strangers and unknown ids";
  auto q = std::async(std::launch::async, [&] {
    return std::make_pair(core_->QueryPresence(kMallory, kAlice), core_->QueryPresence(kBob, kAlice));
  });
  while (q.wait_for(std::chrono::milliseconds(1)) != std::future_status::ready) Crank();
  auto [stranger, friend_view] = q.get();
  EXPECT_FALSE(stranger.has_value());
  ASSERT_TRUE(friend_view.has_value());
  EXPECT_TRUE(friend_view->online);
  core_->Detach(1, &a);
  core_->Detach(0, &m);
}

TEST_F(PresenceTest, HiddenLastSeenIsNeverShown) {
  ASSERT_TRUE(store_->PutUserSettings(kAlice, store::UserSettings{true}).ok());
  FakeSession a(1, kAlice, "phone"), b(2, kBob, "phone");
  BobWatchesAlice(a, b);
  core_->Detach(1, &a);
  Crank();
  clock_.Advance(6000);
  Tick();
  auto p = PresenceOf(b, kAlice);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(StrField(p[1], "status"), "offline") << "status stays visible";
  EXPECT_TRUE(IsNull(p[1], "last_seen_ms"));
  core_->Detach(0, &b);
}

TEST_F(PresenceTest, SubscriptionLimit) {
  FakeSession b(2, kBob, "phone");
  core_->Attach(0, &b);
  std::string ids;
  for (int i = 0; i < 501; ++i) ids += (i ? ",\"" : "\"") + FormatUserId(1000 + i) + "\"";
  core_->OnFrame(0, &b, R"({"event":"presence_subscribe","user_ids":[)" + ids + "]}");
  ASSERT_EQ(b.Events("error").size(), 1u);
  EXPECT_EQ(StrField(b.Events("error")[0], "code"), "bad_request");
  core_->Detach(0, &b);
}

TEST_F(PresenceTest, TypingRelayAndExpiry) {
  FakeSession a1(1, kAlice, "phone"), a2(5, kAlice, "laptop"), b(2, kBob, "phone"), m(4, kMallory, "x");
  core_->Attach(1, &a1);
  core_->Attach(0, &a2);
  core_->Attach(0, &b);
  core_->Attach(1, &m);
  Crank();
  std::string started = R"({"event":"typing","conversation_id":")" + conv_ + R"(","state":"started"})";
  core_->OnFrame(1, &a1, started);
  core_->OnFrame(1, &a1, started);  // refresh, not a second relay
  Crank();
  ASSERT_EQ(b.Events("typing").size(), 1u);
  EXPECT_EQ(StrField(b.Events("typing")[0], "user_id"), FormatUserId(kAlice));
  EXPECT_EQ(StrField(b.Events("typing")[0], "state"), "started");
  EXPECT_TRUE(a2.Events("typing").empty()) << "not echoed to the typist's own devices";
  EXPECT_TRUE(m.Events("typing").empty());

  core_->OnFrame(1, &m, R"({"event":"typing","conversation_id":")" + conv_ + R"(","state":"started"})");
  Crank();
  ASSERT_EQ(m.Events("error").size(), 1u);
  EXPECT_EQ(StrField(m.Events("error")[0], "code"), "forbidden");

  clock_.Advance(5999);
  Tick();
  EXPECT_EQ(b.Events("typing").size(), 1u);
  clock_.Advance(1);
  Tick();
  ASSERT_EQ(b.Events("typing").size(), 2u) << "started without stopped expires";
  EXPECT_EQ(StrField(b.Events("typing")[1], "state"), "stopped");

  core_->OnFrame(1, &a1, started);
  core_->OnFrame(1, &a1, R"({"event":"typing","conversation_id":")" + conv_ + R"(","state":"stopped"})");
  Crank();
  ASSERT_EQ(b.Events("typing").size(), 4u);
  EXPECT_EQ(StrField(b.Events("typing")[3], "state"), "stopped");
  for (auto* s : {&a1, &m}) core_->Detach(1, s);
  for (auto* s : {&a2, &b}) core_->Detach(0, s);
}

TEST(Fingerprint, DistinguishesFieldBoundaries) {
  using store::ContentType;
  EXPECT_NE(BodyFingerprint(ContentType::kText, "ab", "", "", ""), BodyFingerprint(ContentType::kText, "a", "b", "", ""));
  EXPECT_NE(BodyFingerprint(ContentType::kText, "a", "", "", ""), BodyFingerprint(ContentType::kEdit, "a", "", "", ""));
  EXPECT_EQ(BodyFingerprint(ContentType::kText, "a", "", "", ""), BodyFingerprint(ContentType::kText, "a", "", "", ""));
}


// The group bulkhead: group fan-out runs in slices on each shard, so 1:1 traffic (and
// small groups) are not stuck behind a flood of large-group messages, and group
// senders are pushed back once the lanes hold too much work.
class BulkheadTest : public ChatCoreTest {
 protected:
  CoreOptions Options() override {
    CoreOptions o = ChatCoreTest::Options();
    o.bulk_slice_sends = 1;
    o.max_bulk_backlog = 600;
    o.limits.send_rate_per_s = 1e6;
    o.limits.send_burst = 1e6;
    return o;
  }
  void SetUp() override {
    ChatCoreTest::SetUp();
    bool created;
    store::Conversation big;  // owner shard 0
    big.id = 4000;
    big.type = store::ConvType::kGroup;
    big.members.push_back(kAlice);
    for (UserId u = 100; u < 100 + kBigOthers; ++u) big.members.push_back(u);
    ASSERT_TRUE(store_->CreateConversation(big, &created).ok());
    store::Conversation small;  // owner shard 0
    small.id = 4002;
    small.type = store::ConvType::kGroup;
    small.members = {kAlice, kDave};
    ASSERT_TRUE(store_->CreateConversation(small, &created).ok());
    store::Conversation direct;  // owner shard 1
    direct.id = 3001;
    direct.type = store::ConvType::kDirect;
    direct.members = {kBob, kDave};
    ASSERT_TRUE(store_->CreateConversation(direct, &created).ok());
    for (UserId u = 100; u < 100 + kBigOthers; ++u) {
      members_.push_back(std::make_unique<FakeSession>(u, u, "d"));
      core_->Attach(0, members_.back().get());
    }
  }
  void TearDown() override {
    for (auto& m : members_) core_->Detach(0, m.get());
    ChatCoreTest::TearDown();
  }
  size_t GroupFramesDelivered() const {
    size_t n = 0;
    for (auto& m : members_) n += m->Events("message").size();
    return n;
  }
  // Cranks one shard a task at a time (sleeping while the commit thread works) until
  // `pred` holds.
  template <typename P>
  bool CrankUntil(int shard, P pred) {
    for (int i = 0; i < 20000; ++i) {
      if (pred()) return true;
      if (!ex_[shard].RunOne()) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return pred();
  }
  // Waits, without running any shard task, until the store holds `seq` of `conv`, and
  // a little longer for the commit thread to post the batch back.
  bool WaitStored(ConvId conv, Seq seq) {
    for (int i = 0; i < 10000; ++i) {
      auto last = store_->LastSeq(conv);
      if (last.ok() && *last >= seq) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }
  static constexpr UserId kDave = 55;
  static constexpr UserId kBigOthers = 39;
  std::vector<std::unique_ptr<FakeSession>> members_;
};

TEST_F(BulkheadTest, DirectMessageOvertakesAGroupFlood) {
  FakeSession alice(1, kAlice, "a"), bob(2, kBob, "b"), dave(3, kDave, "d");
  core_->Attach(0, &alice);
  core_->Attach(1, &bob);
  core_->Attach(0, &dave);
  constexpr size_t kFlood = 10;
  for (size_t i = 0; i < kFlood; ++i) core_->OnFrame(0, &alice, Send("g" + std::to_string(i), "flood", "conv_0000000000000fa0"));
  ASSERT_TRUE(CrankUntil(0, [&] { return alice.Events("message_ack").size() == kFlood; }));
  const size_t total = kFlood * kBigOthers;
  ASSERT_LT(GroupFramesDelivered(), total);  // the flood is still being fanned out
  // Bob's direct message is sequenced on shard 1; once Bob has its ack, its delivery
  // to Dave is queued on shard 0 behind the group work that is already there.
  core_->OnFrame(1, &bob, Send("d1", "hi dave", "conv_0000000000000bb9"));
  ASSERT_TRUE(CrankUntil(1, [&] { return bob.Events("message_ack").size() == 1; }));
  ASSERT_TRUE(CrankUntil(0, [&] { return dave.Events("message").size() == 1; }));
  size_t before = GroupFramesDelivered();
  EXPECT_LT(before, total) << "the direct message waited for the whole group flood";
  // Everything arrives, and every member gets the group's messages in seq order.
  ASSERT_TRUE(Until([&] { return GroupFramesDelivered() == total; }));
  for (auto& m : members_) {
    auto msgs = m->Events("message");
    ASSERT_EQ(msgs.size(), kFlood);
    for (size_t i = 0; i < kFlood; ++i) EXPECT_EQ(Field(msgs[i], "seq"), i + 1);
  }
  core_->Detach(0, &alice);
  core_->Detach(1, &bob);
  core_->Detach(0, &dave);
}

TEST_F(BulkheadTest, SmallGroupTakesItsTurnInsteadOfWaitingBehindALargeOne) {
  FakeSession alice(1, kAlice, "a"), dave(3, kDave, "d");
  core_->Attach(0, &alice);
  core_->Attach(0, &dave);
  constexpr size_t kFlood = 10;
  for (size_t i = 0; i < kFlood; ++i) core_->OnFrame(0, &alice, Send("g" + std::to_string(i), "flood", "conv_0000000000000fa0"));
  core_->OnFrame(0, &alice, Send("s1", "to the small group", "conv_0000000000000fa2"));
  // Nothing is cranked until every message is in the store (and its commit posted
  // back), so the whole flood is queued when the fan-out starts.
  ASSERT_TRUE(WaitStored(4000, kFlood) && WaitStored(4002, 1));
  ASSERT_TRUE(CrankUntil(0, [&] { return dave.Events("message").size() == 1; }));
  EXPECT_LT(GroupFramesDelivered(), kFlood * kBigOthers);
  ASSERT_TRUE(Until([&] { return GroupFramesDelivered() == kFlood * kBigOthers; }));
  core_->Detach(0, &alice);
  core_->Detach(0, &dave);
}

TEST_F(BulkheadTest, GroupSendersArePushedBackWhenTheLanesAreFullAndDirectOnesAreNot) {
  FakeSession alice(1, kAlice, "a"), bob(2, kBob, "b"), dave(3, kDave, "d");
  core_->Attach(0, &alice);
  core_->Attach(1, &bob);
  core_->Attach(0, &dave);
  // Shard 0 runs only what is queued each round, so its lane drains one member visit
  // per round (a slice is 1 here) while each commit adds 40 per message: the lane
  // passes max_bulk_backlog (600) within a few rounds of 10 messages. (Shard 1 is not
  // cranked: its share never reaches its lane.)
  constexpr size_t kRounds = 6, kPerRound = 10, kFlood = kRounds * kPerRound;
  for (size_t r = 0; r < kRounds; ++r) {
    for (size_t i = 0; i < kPerRound; ++i)
      core_->OnFrame(0, &alice, Send("g" + std::to_string(r * kPerRound + i), "flood", "conv_0000000000000fa0"));
    const size_t want = (r + 1) * kPerRound;
    for (int i = 0; i < 20000 && alice.Events("message_ack").size() + alice.Events("error").size() < want; ++i) {
      ex_[0].RunQueued();
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    ASSERT_EQ(alice.Events("message_ack").size() + alice.Events("error").size(), want);
  }
  auto errors = alice.Events("error");
  ASSERT_FALSE(errors.empty());
  EXPECT_EQ(StrField(errors[0], "code"), "unavailable");
  // A direct message is still accepted and delivered.
  core_->OnFrame(1, &bob, Send("d1", "still here", "conv_0000000000000bb9"));
  ASSERT_TRUE(Until([&] { return bob.Events("message_ack").size() == 1 && dave.Events("message").size() == 1; }));
  // Once the lanes drained, group sends are accepted again.
  core_->OnFrame(0, &alice, Send("again", "after the flood", "conv_0000000000000fa0"));
  ASSERT_TRUE(Until([&] { return alice.Events("message_ack").size() == kFlood - errors.size() + 1; }));
  core_->Detach(0, &alice);
  core_->Detach(1, &bob);
  core_->Detach(0, &dave);
}


// In a group larger than receipts_max_members, members' receipts are stored (unread
// counts, the listing endpoint) but not pushed one by one: one frame per member per
// message would flood the senders. Senders get "delivered to all" / "read by all"
// (`all_members`), when the slowest of the other members moves.
class LargeGroupReceiptsTest : public DeliveryTest {
 protected:
  CoreOptions Options() override {
    CoreOptions o = DeliveryTest::Options();
    o.receipts_max_members = 2;  // the 3-member group counts as large
    return o;
  }
  // Alice and Carol on shard 0, Bob on shard 1, attached for every test.
  void SetUp() override {
    DeliveryTest::SetUp();
    core_->Attach(0, &a);
    core_->Attach(1, &b);
    core_->Attach(0, &c);
  }
  void TearDown() override {
    if (a_attached) core_->Detach(0, &a);
    core_->Detach(1, &b);
    core_->Detach(0, &c);
    DeliveryTest::TearDown();
  }
  FakeSession a{1, kAlice, "phone"}, b{3, kBob, "phone"}, c{4, kCarol, "phone"};
  bool a_attached = true;
  // Lets anything still queued arrive.
  void Settle() {
    for (int i = 0; i < 20; ++i) Until([] { return true; }), std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // u's stored receipt mark (`read` or `delivered`) in the group is `value`.
  bool StoredMark(UserId u, Seq store::MemberReceipt::*mark, Seq value) {
    auto r = store_->GetReceipts(1001);
    if (!r.ok()) return false;
    for (auto& m : *r)
      if (m.user == u && m.*mark == value) return true;
    return false;
  }
  bool StoredRead(UserId u, Seq read) { return StoredMark(u, &store::MemberReceipt::read, read); }
};

TEST_F(LargeGroupReceiptsTest, OneMembersReceiptIsStoredNotPushed) {
  SendN(a, 0, 3, "a");
  core_->OnFrame(1, &b, Receipt("READ", 3));
  ASSERT_TRUE(Until([&] { return StoredRead(kBob, 3); }));
  Settle();
  EXPECT_TRUE(a.Events("message_receipt").empty()) << "Carol has not received anything yet";
}

TEST_F(LargeGroupReceiptsTest, TheSlowestMemberMovesTheAggregate) {
  SendN(a, 0, 3, "a");  // seqs 1-3 by Alice
  core_->OnFrame(1, &b, Receipt("READ", 3));
  core_->OnFrame(0, &c, Receipt("DELIVERED", 2));
  // Bob read 3, Carol received 2: delivered to all up to 2, read by all: nothing yet.
  ASSERT_TRUE(Until([&] { return a.Events("message_receipt").size() == 1; }));
  auto r = a.Events("message_receipt")[0];
  EXPECT_EQ(StrField(r, "status"), "DELIVERED");
  EXPECT_EQ(Field(r, "up_to_seq"), 2u);
  EXPECT_EQ(StrField(r, "sender_id"), FormatUserId(kAlice));
  EXPECT_EQ(StrField(r, "message_id"), FormatMessageId(1001, 2));
  EXPECT_TRUE(BoolField(r, "all_members"));
  EXPECT_FALSE(HasField(r, "recipient_id")) << "no single recipient";
  // Carol reads 3: read by all up to 3 (READ implies DELIVERED: no DELIVERED 3 frame).
  core_->OnFrame(0, &c, Receipt("READ", 3));
  ASSERT_TRUE(Until([&] { return a.Events("message_receipt").size() == 2; }));
  r = a.Events("message_receipt")[1];
  EXPECT_EQ(StrField(r, "status"), "READ");
  EXPECT_EQ(Field(r, "up_to_seq"), 3u);
  Settle();
  EXPECT_EQ(a.Events("message_receipt").size(), 2u);
  // Nobody else is told: Bob and Carol sent nothing.
  EXPECT_TRUE(b.Events("message_receipt").empty());
  EXPECT_TRUE(c.Events("message_receipt").empty());
}

// The sender's own receipts do not hold its aggregate back: "all" means all the others.
TEST_F(LargeGroupReceiptsTest, ASendersOwnMarkDoesNotCount) {
  SendN(a, 0, 2, "a");  // 1-2 by Alice, who never sends a receipt
  SendN(b, 1, 1, "b");  // 3 by Bob
  core_->OnFrame(1, &b, Receipt("DELIVERED", 3));
  core_->OnFrame(0, &c, Receipt("DELIVERED", 3));
  // Alice: Bob and Carol have everything. Bob: Alice has nothing, so no frame for him.
  ASSERT_TRUE(Until([&] { return a.Events("message_receipt").size() == 1; }));
  EXPECT_EQ(Field(a.Events("message_receipt")[0], "up_to_seq"), 3u);
  Settle();
  EXPECT_TRUE(b.Events("message_receipt").empty());
  // Alice acknowledges: now Bob's message is delivered to all.
  core_->OnFrame(0, &a, Receipt("DELIVERED", 3));
  ASSERT_TRUE(Until([&] { return b.Events("message_receipt").size() == 1; }));
  EXPECT_EQ(Field(b.Events("message_receipt")[0], "up_to_seq"), 3u);
  EXPECT_EQ(StrField(b.Events("message_receipt")[0], "status"), "DELIVERED");
  Settle();
  EXPECT_EQ(a.Events("message_receipt").size(), 1u) << "Alice's aggregate did not move again";
}

// One member far behind (never acknowledging) while the others move: only that member's
// own "all" moves, and it hears of it only for messages it sent since its last frame.
TEST_F(LargeGroupReceiptsTest, ALoneLaggardHearsOnlyAboutItsOwnMessages) {
  SendN(a, 0, 2, "a");  // 1-2 by Alice
  SendN(c, 0, 1, "c");  // 3 by Carol, who never acknowledges anything
  core_->OnFrame(1, &b, Receipt("DELIVERED", 3));
  core_->OnFrame(0, &a, Receipt("DELIVERED", 3));
  ASSERT_TRUE(Until([&] { return c.Events("message_receipt").size() == 1; }));
  EXPECT_EQ(Field(c.Events("message_receipt")[0], "up_to_seq"), 3u);
  SendN(a, 0, 1, "a2");  // 4 by Alice
  core_->OnFrame(1, &b, Receipt("DELIVERED", 4));
  core_->OnFrame(0, &a, Receipt("DELIVERED", 4));
  SendN(c, 0, 1, "c2");  // 5 by Carol
  core_->OnFrame(1, &b, Receipt("DELIVERED", 5));
  core_->OnFrame(0, &a, Receipt("DELIVERED", 5));
  ASSERT_TRUE(Until([&] { return c.Events("message_receipt").size() == 2; }));
  EXPECT_EQ(Field(c.Events("message_receipt")[1], "up_to_seq"), 5u) << "nothing for 4 (Alice's)" << c.Events("message_receipt")[1] << c.Events("message_receipt")[0];
  Settle();
  EXPECT_EQ(c.Events("message_receipt").size(), 2u);
  EXPECT_TRUE(a.Events("message_receipt").empty()) << "Carol has none of Alice's messages";
}

// A sender who was away gets the aggregate state from `resume`.
TEST_F(LargeGroupReceiptsTest, ResumeReplaysTheAggregate) {
  SendN(a, 0, 3, "a");
  core_->Detach(0, &a);
  a_attached = false;
  core_->OnFrame(1, &b, Receipt("READ", 3));
  core_->OnFrame(0, &c, Receipt("READ", 1));
  core_->OnFrame(0, &c, Receipt("DELIVERED", 3));
  // Every receipt committed before the resume reads them (under TSan the last one could
  // still be in the commit queue).
  ASSERT_TRUE(Until([&] {
    return StoredRead(kCarol, 1) && StoredRead(kBob, 3) && StoredMark(kCarol, &store::MemberReceipt::delivered, 3);
  }));
  FakeSession a2(5, kAlice, "phone");
  core_->Attach(0, &a2);
  core_->OnFrame(0, &a2, Resume(3));
  ASSERT_TRUE(Until([&] { return a2.Events("resume_done").size() == 1; }));
  auto rs = a2.Events("message_receipt");
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(StrField(rs[0], "status"), "READ");
  EXPECT_EQ(Field(rs[0], "up_to_seq"), 1u);
  EXPECT_EQ(StrField(rs[1], "status"), "DELIVERED");
  EXPECT_EQ(Field(rs[1], "up_to_seq"), 3u);
  for (auto& r : rs) EXPECT_TRUE(BoolField(r, "all_members"));
  core_->Detach(0, &a2);
}

}  // namespace
}  // namespace sb::chat
