// Resume (docs/protocol.md: resume, resume_done; Guarantees 1–3): the replay after a
// cursor, the server's per-device record when there is no cursor, no gap and no
// duplicate between the replay and live delivery under a concurrent burst, and a
// kill -9 in the middle of a burst losing nothing acknowledged.
#include <atomic>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "test_support.h"

namespace sb::test {
namespace {

using client::MessageReceiptFrame;
using client::OutgoingMessage;
using client::SendMessageFrame;
using client::WsFrame;
using SteadyClock = std::chrono::steady_clock;

class ResumeTest : public SharedServerTest {};

// Joins on every way out of a test: a failed ASSERT returns early, and destroying a
// joinable std::thread would end the whole run.
struct JoinAll {
  std::vector<std::thread>& threads;
  ~JoinAll() {
    for (auto& t : threads)
      if (t.joinable()) t.join();
  }
};

// The `message` frames of `frames`, grouped by conversation, each in arrival order.
std::map<std::string, std::vector<Json>> MessagesByConv(const std::vector<Json>& frames) {
  std::map<std::string, std::vector<Json>> out;
  for (const Json& f : FramesOf(frames, "message")) out[f["conversation_id"].StrOr("")].push_back(f);
  return out;
}

// `got` must be exactly the messages of `acks` with seq first..last, in seq order.
void ExpectReplay(const std::vector<Json>& got, const std::vector<Json>& acks, int64_t first,
                  int64_t last, std::string_view what) {
  std::vector<int64_t> seqs;
  for (const Json& m : got) seqs.push_back(m["seq"].IntOr(-1));
  std::vector<int64_t> want;
  for (int64_t s = first; s <= last; ++s) want.push_back(s);
  ASSERT_EQ(seqs, want) << what << ": the replay must be exactly the later seqs, in order";
  for (const Json& m : got) {
    const Json& ack = acks[static_cast<size_t>(*m["seq"].Int() - 1)];
    EXPECT_EQ(m["message_id"].Str(), ack["message_id"].Str()) << what << ": " << m;
    EXPECT_EQ(m["conversation_id"].Str(), ack["conversation_id"].Str()) << what << ": " << m;
    EXPECT_EQ(m["client_msg_id"].Str(), ack["client_msg_id"].Str()) << what << ": " << m;
  }
}

void ExpectDone(const Json& done, int64_t replayed, int64_t conversations, std::string_view what) {
  EXPECT_EQ(done["event"].Str(), "resume_done"s) << what << ": " << done;
  EXPECT_EQ(done["replayed"].Int(), replayed) << what << ": replayed: " << done;
  EXPECT_EQ(done["conversations"].Int(), conversations) << what << ": conversations: " << done;
  EXPECT_TRUE(done["truncated"].IsArray()) << what << ": truncated: " << done;
  EXPECT_EQ(done["truncated"].Size(), 0u) << what << ": nothing was deleted: " << done;
}

TEST_F(ResumeTest, CursorsAndThePerDeviceRecordDecideWhatIsReplayed) {
  RestClient api = Api();
  TestUser a, b_tab, b_phone, b_laptop, c;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rsma", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rsmb", &b_tab, "b-tab"));
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api, b_tab, "b-phone", &b_phone));
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api, b_tab, "b-laptop", &b_laptop));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rsmc", &c));
  std::string direct;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b_tab, &direct));
  client::HttpResponse gr =
      api.CreateConversation(a.access_token, "group", {b_tab.user_id, c.user_id}, "three");
  ASSERT_EQ(gr.status, 201) << gr.Describe();
  const std::string group = gr.json()["conversation_id"].StrOr("");

  WsClient aws;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a, &aws));
  std::vector<Json> direct_acks, group_acks;  // [seq - 1]
  for (int i = 1; i <= 5; ++i) {
    Json ack;
    ASSERT_NO_FATAL_FAILURE(SendAndAck(aws, direct, "direct " + std::to_string(i), &ack));
    direct_acks.push_back(ack);
  }
  for (int i = 1; i <= 3; ++i) {
    Json ack;
    ASSERT_NO_FATAL_FAILURE(SendAndAck(aws, group, "group " + std::to_string(i), &ack));
    group_acks.push_back(ack);
  }

  {  // Cursors for both conversations: only what follows them.
    WsClient ws;
    ResumeResult res;
    ASSERT_NO_FATAL_FAILURE(ConnectWs(api, b_tab, &ws));
    ASSERT_NO_FATAL_FAILURE(Resume(ws, std::map<std::string, int64_t>{{direct, 2}, {group, 3}}, &res));
    auto by = MessagesByConv(res.frames);
    ASSERT_NO_FATAL_FAILURE(ExpectReplay(by[direct], direct_acks, 3, 5, "direct after cursor 2"));
    EXPECT_EQ(by[group].size(), 0u) << "the group cursor is at its last seq: "
                                    << ::testing::PrintToString(by[group]);
    ExpectDone(res.done, 3, 2, "cursors {direct:2, group:3}");
  }

  {  // No cursors, a device that acknowledged nothing: everything; then it acks 4.
    WsClient ws;
    ResumeResult res;
    ASSERT_NO_FATAL_FAILURE(ConnectWs(api, b_phone, &ws));
    ASSERT_NO_FATAL_FAILURE(Resume(ws, std::nullopt, &res));
    auto by = MessagesByConv(res.frames);
    ASSERT_NO_FATAL_FAILURE(ExpectReplay(by[direct], direct_acks, 1, 5, "direct, no record"));
    ASSERT_NO_FATAL_FAILURE(ExpectReplay(by[group], group_acks, 1, 3, "group, no record"));
    ExpectDone(res.done, 8, 2, "no cursors, nothing acknowledged");

    ASSERT_TRUE(ws.Send(MessageReceiptFrame(direct_acks[3]["message_id"].StrOr(""), direct,
                                            "DELIVERED", 4)));
    // A's DELIVERED receipt is routed only once the change is stored, which is what the
    // next resume of this device reads.
    Json r = aws.WaitForEvent("message_receipt", kFrameTimeout);
    ASSERT_TRUE(r.valid()) << "A got no DELIVERED receipt: " << r.error();
    ASSERT_EQ(r["up_to_seq"].Int(), 4) << r;
    ws.Close();
  }

  {  // Same device again, no cursors: direct after its record (4), group from the start.
    WsClient ws;
    ResumeResult res;
    ASSERT_NO_FATAL_FAILURE(ConnectWs(api, b_phone, &ws));
    ASSERT_NO_FATAL_FAILURE(Resume(ws, std::nullopt, &res));
    auto by = MessagesByConv(res.frames);
    ASSERT_NO_FATAL_FAILURE(ExpectReplay(by[direct], direct_acks, 5, 5, "direct after record 4"));
    ASSERT_NO_FATAL_FAILURE(ExpectReplay(by[group], group_acks, 1, 3, "group, never acked"));
    ExpectDone(res.done, 4, 2, "no cursors after DELIVERED up_to 4");
  }

  {  // A cursor for the group only: the direct conversation still uses the record.
    WsClient ws;
    ResumeResult res;
    ASSERT_NO_FATAL_FAILURE(ConnectWs(api, b_phone, &ws));
    ASSERT_NO_FATAL_FAILURE(Resume(ws, std::map<std::string, int64_t>{{group, 2}}, &res));
    auto by = MessagesByConv(res.frames);
    ASSERT_NO_FATAL_FAILURE(ExpectReplay(by[direct], direct_acks, 5, 5, "direct, record 4"));
    ASSERT_NO_FATAL_FAILURE(ExpectReplay(by[group], group_acks, 3, 3, "group after cursor 2"));
    ExpectDone(res.done, 2, 2, "cursors {group:2} after DELIVERED up_to 4");
  }

  {  // Another device of B: the record is per device, so everything (empty cursors).
    WsClient ws;
    ResumeResult res;
    ASSERT_NO_FATAL_FAILURE(ConnectWs(api, b_laptop, &ws));
    ASSERT_NO_FATAL_FAILURE(Resume(ws, std::map<std::string, int64_t>{}, &res));
    auto by = MessagesByConv(res.frames);
    ASSERT_NO_FATAL_FAILURE(ExpectReplay(by[direct], direct_acks, 1, 5, "direct, other device"));
    ASSERT_NO_FATAL_FAILURE(ExpectReplay(by[group], group_acks, 1, 3, "group, other device"));
    ExpectDone(res.done, 8, 2, "empty cursors on a device that acknowledged nothing");
  }
}

// B's device resumes while A's devices send a burst: every seq arrives exactly once and
// in order, whether it came by the replay, was held during it, or came live after it.
TEST_F(ResumeTest, ResumeDuringABurstHasNoGapNoDuplicateAndKeepsOrder) {
  constexpr int kPrefill = 300;  // more than one replay page, so the replay is paced
  constexpr int kSenders = 5;
  constexpr int kPerSender = 100;  // the per-connection burst: none is rate limited
  constexpr int64_t kTotal = kPrefill + kSenders * kPerSender;
  RestClient api = Api();
  TestUser a, b;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rcea", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rceb", &b, "b-race"));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &conv));

  std::map<int64_t, std::string> id_of_seq;
  for (int c = 0; c < kPrefill / 100; ++c) {
    TestUser dev;
    ASSERT_NO_FATAL_FAILURE(LoginDevice(api, a, "prefill-" + std::to_string(c), &dev));
    WsClient ws;
    ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, dev, &ws));
    std::vector<std::string> contents;
    for (int i = 0; i < 100; ++i) contents.push_back("prefill " + std::to_string(c * 100 + i));
    std::vector<Acked> acks;
    ASSERT_NO_FATAL_FAILURE(SendBatch(ws, conv, contents, &acks));
    for (const Acked& k : acks) id_of_seq[k.seq] = k.message_id;
  }

  std::vector<WsClient> senders(kSenders);
  for (int c = 0; c < kSenders; ++c) {
    TestUser dev;
    ASSERT_NO_FATAL_FAILURE(LoginDevice(api, a, "burst-" + std::to_string(c), &dev));
    ASSERT_NO_FATAL_FAILURE(ConnectWs(api, dev, &senders[c]));
  }
  WsClient bws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, b, &bws));

  // Each sender thread owns its connection (WsClient is single-threaded): everything
  // pipelined at once, then its acks.
  std::atomic<int> acked{0};
  std::mutex mu;
  std::vector<std::string> sender_errors;
  std::vector<std::thread> threads;
  JoinAll join_all{threads};
  for (int c = 0; c < kSenders; ++c) {
    threads.emplace_back([&, c] {
      WsClient& ws = senders[c];
      std::set<std::string> pending;
      for (int i = 0; i < kPerSender; ++i) {
        OutgoingMessage m;
        m.client_msg_id = client::NewClientMsgId();
        m.conversation_id = conv;
        m.content = "burst " + std::to_string(c) + "/" + std::to_string(i);
        pending.insert(m.client_msg_id);
        if (!ws.Send(SendMessageFrame(m))) {
          std::lock_guard lk(mu);
          sender_errors.push_back("send failed: " + ws.error());
          return;
        }
      }
      auto deadline = SteadyClock::now() + std::chrono::seconds(20);
      while (!pending.empty() && SteadyClock::now() < deadline) {
        WsFrame f = ws.RecvFrame(Millis(200));
        if (f.kind == WsFrame::Kind::kTimeout) continue;
        std::lock_guard lk(mu);
        if (!f.is_text()) {
          sender_errors.push_back("sender connection ended: " + f.Describe());
          return;
        }
        Json j = f.json();
        if (j["event"].Str() == "error") sender_errors.push_back("error frame: " + j.Dump());
        if (j["event"].Str() != "message_ack" || pending.erase(j["client_msg_id"].StrOr("")) == 0)
          continue;
        id_of_seq[j["seq"].IntOr(0)] = j["message_id"].StrOr("");
        acked.fetch_add(1);
      }
      if (!pending.empty()) {
        std::lock_guard lk(mu);
        sender_errors.push_back(std::to_string(pending.size()) + " sends never acknowledged");
      }
    });
  }
  // The resume goes out once the burst is being committed, so that messages reach B
  // before its first frame, during the replay, and after it.
  auto trigger_deadline = SteadyClock::now() + std::chrono::seconds(10);
  while (acked.load() == 0 && SteadyClock::now() < trigger_deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  const int acked_at_resume = acked.load();
  ASSERT_TRUE(bws.Send(client::ResumeFrame(std::nullopt))) << bws.error();

  std::vector<int64_t> seqs;  // message frames of conv, in arrival order
  std::vector<std::string> ids;
  Json done;
  size_t messages_before_done = 0;
  auto deadline = SteadyClock::now() + std::chrono::seconds(30);
  while ((!done.valid() || static_cast<int64_t>(seqs.size()) < kTotal) &&
         SteadyClock::now() < deadline) {
    WsFrame f = bws.RecvFrame(Millis(200));
    if (f.kind == WsFrame::Kind::kTimeout) continue;
    ASSERT_TRUE(f.is_text()) << "B's connection: " << f.Describe();
    Json j = f.json();
    auto ev = j["event"].Str();
    ASSERT_NE(ev, "error"s) << j;
    if (ev == "resume_done") {
      EXPECT_FALSE(done.valid()) << "a second resume_done: " << j;
      done = j;
      messages_before_done = seqs.size();
    } else if (ev == "message") {
      EXPECT_EQ(j["conversation_id"].Str(), conv) << j;
      seqs.push_back(j["seq"].IntOr(-1));
      ids.push_back(j["message_id"].StrOr(""));
    }
  }
  for (auto& t : threads) t.join();
  {
    std::lock_guard lk(mu);
    ASSERT_TRUE(sender_errors.empty()) << ::testing::PrintToString(sender_errors);
  }
  ASSERT_EQ(acked.load(), kSenders * kPerSender);
  ASSERT_EQ(static_cast<int64_t>(id_of_seq.size()), kTotal) << "acked seqs are not distinct";
  EXPECT_LT(acked_at_resume, kSenders * kPerSender) << "the burst was over before the resume";

  // Extra frames after the last expected one would be duplicates.
  for (const Json& f : FramesOf(bws.Drain(Millis(300)), "message")) {
    seqs.push_back(f["seq"].IntOr(-1));
    ids.push_back(f["message_id"].StrOr(""));
  }
  ASSERT_TRUE(done.valid()) << "no resume_done within 30 s (got " << seqs.size() << " messages)";
  // How the race went this time (which paths of the server it went through).
  std::cout << "[ info ] resume sent after " << acked_at_resume << " of "
            << kSenders * kPerSender << " burst acks; resume_done after " << messages_before_done
            << " message frames, replayed=" << done["replayed"].IntOr(-1) << "\n";
  std::vector<int64_t> want;
  for (int64_t s = 1; s <= kTotal; ++s) want.push_back(s);
  if (seqs != want) {
    // Say where it first goes wrong instead of printing 800 numbers.
    size_t i = 0;
    while (i < seqs.size() && i < want.size() && seqs[i] == want[i]) ++i;
    std::string around;
    for (size_t k = (i > 3 ? i - 3 : 0); k < std::min(seqs.size(), i + 5); ++k)
      around += std::to_string(seqs[k]) + " ";
    FAIL() << "B must get seq 1.." << kTotal << " exactly once, in order; got " << seqs.size()
           << " message frames, first difference at frame " << i << " (frames around it: "
           << around << "), resume_done after frame " << messages_before_done;
  }
  for (size_t i = 0; i < ids.size(); ++i)
    EXPECT_EQ(ids[i], id_of_seq[static_cast<int64_t>(i + 1)]) << "seq " << i + 1;
  EXPECT_EQ(done["conversations"].Int(), 1) << done;
  EXPECT_EQ(done["truncated"].Size(), 0u) << done;
  // Only what was stored when the replay read the store counts as replayed; what was
  // held and sent after it may or may not.
  ASSERT_TRUE(done["replayed"].IsInt()) << done;
  EXPECT_GE(*done["replayed"].Int(), kPrefill) << done;
  EXPECT_LE(*done["replayed"].Int(), static_cast<int64_t>(messages_before_done)) << done;
}

// Tests that stop, kill and restart the server own it.
class ResumeRestartTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.Start()) << server_.error(); }
  void TearDown() override {
    if (HasFailure()) {
      std::cout << "---- server log tail (" << server_.log_path() << ") ----\n"
                << server_.LogTail(40) << "----\n";
    }
  }
  RestClient Api() const { return RestClient(server_.host(), server_.port()); }

  ServerProcess server_;
};

// kill -9 in the middle of a burst from three connections: the acknowledged messages
// are all stored once with gap-free seqs, and B's device, which acknowledged a prefix
// before the crash, gets everything after it by resuming with no cursors.
TEST_F(ResumeRestartTest, KillDuringBurstLosesNothingAckedAndResumeContinuesAfterTheAck) {
  constexpr int kPre = 20;
  constexpr int kSenders = 3;
  constexpr int kPerSender = 100;
  constexpr int kKillAfterAcks = kSenders * kPerSender / 2;
  RestClient api = Api();
  TestUser a, b;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "kca", &a, "a-pre"));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "kcb", &b, "b-phone"));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &conv));

  std::map<std::string, Json> acked;  // client_msg_id -> ack, from every phase
  WsClient pre, bws;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a, &pre));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, b, &bws));
  {
    std::vector<std::string> contents;
    for (int i = 0; i < kPre; ++i) contents.push_back("before the burst " + std::to_string(i));
    std::vector<Acked> acks;
    ASSERT_NO_FATAL_FAILURE(SendBatch(pre, conv, contents, &acks));
    for (const Acked& k : acks)
      acked[k.client_msg_id] = Json::Parse(R"({"seq":)" + std::to_string(k.seq) +
                                           R"(,"message_id":")" + k.message_id + R"("})");
  }
  std::vector<Json> got;
  ASSERT_NO_FATAL_FAILURE(CollectMessages(bws, conv, kPre, &got));
  ASSERT_TRUE(bws.Send(MessageReceiptFrame("", conv, "DELIVERED", kPre)));
  // A sees the receipt only once it is stored: B's acknowledged prefix is now durable.
  Json r = pre.WaitForEvent("message_receipt", kFrameTimeout);
  ASSERT_TRUE(r.valid()) << "no DELIVERED receipt for the prefix: " << r.error();
  ASSERT_EQ(r["up_to_seq"].Int(), kPre) << r;
  int64_t b_seen = kPre;  // highest seq B holds, all below it included
  std::optional<int64_t> b_acked_in_burst;

  std::vector<WsClient> senders(kSenders);
  for (int c = 0; c < kSenders; ++c) {
    TestUser dev;
    ASSERT_NO_FATAL_FAILURE(LoginDevice(api, a, "a-burst-" + std::to_string(c), &dev));
    ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, dev, &senders[c]));
  }
  std::atomic<int> acked_count{0}, sent_count{0};
  std::mutex mu;
  std::vector<std::string> sender_errors;
  std::vector<std::thread> threads;
  JoinAll join_all{threads};
  for (int c = 0; c < kSenders; ++c) {
    threads.emplace_back([&, c] {
      WsClient& ws = senders[c];
      int sent = 0, mine = 0;  // this connection's sends and acks
      auto take_acks = [&](Millis wait) {
        for (;;) {
          WsFrame f = ws.RecvFrame(wait);
          if (!f.is_text()) return f.kind == WsFrame::Kind::kTimeout;  // false: connection gone
          Json j = f.json();
          std::lock_guard lk(mu);
          if (j["event"].Str() == "error") sender_errors.push_back("error frame: " + j.Dump());
          if (j["event"].Str() != "message_ack") continue;
          acked[j["client_msg_id"].StrOr("")] = j;
          acked_count.fetch_add(1);
          ++mine;
        }
      };
      // Paced, so that the kill lands while sends are still going out and committing.
      for (int i = 0; i < kPerSender; ++i) {
        OutgoingMessage m;
        m.client_msg_id = client::NewClientMsgId();
        m.conversation_id = conv;
        m.content = "burst " + std::to_string(c) + "/" + std::to_string(i);
        if (!ws.Send(SendMessageFrame(m))) return;  // the server is gone
        ++sent;
        sent_count.fetch_add(1);
        if (!take_acks(Millis(0))) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(3));
      }
      // Acks that were on their way when the server died still count.
      auto deadline = SteadyClock::now() + std::chrono::seconds(10);
      while (mine < sent && SteadyClock::now() < deadline && take_acks(Millis(100))) {
      }
    });
  }

  auto deadline = SteadyClock::now() + std::chrono::seconds(20);
  while (acked_count.load() < kKillAfterAcks && SteadyClock::now() < deadline) {
    // B keeps reading (as a live client does) and acknowledges once, mid-burst.
    WsFrame f = bws.RecvFrame(Millis(0));
    if (f.is_text()) {
      Json j = f.json();
      if (j["event"].Str() == "message" && j["seq"].IntOr(0) == b_seen + 1) b_seen = *j["seq"].Int();
      if (!b_acked_in_burst && b_seen >= kPre + 40) {
        ASSERT_TRUE(bws.Send(MessageReceiptFrame("", conv, "DELIVERED", b_seen)));
        b_acked_in_burst = b_seen;
      }
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  const int sent_at_kill = sent_count.load();
  const int acked_at_kill = acked_count.load();
  server_.Kill9();
  for (auto& t : threads) t.join();
  ASSERT_GE(acked_at_kill, kKillAfterAcks) << "the burst did not get going within 20 s";
  EXPECT_LT(sent_at_kill, kSenders * kPerSender)
      << "the kill landed after the last send (machine too slow?), not in the middle";
  {
    std::lock_guard lk(mu);
    EXPECT_TRUE(sender_errors.empty()) << ::testing::PrintToString(sender_errors);
  }
  std::cout << "[ info ] kill -9 after " << sent_at_kill << " sends and " << acked_at_kill
            << " acks of the burst; " << acked.size() << " acked in all; B acknowledged up to "
            << kPre << (b_acked_in_burst ? " then " + std::to_string(*b_acked_in_burst) : "")
            << "\n";

  ASSERT_TRUE(server_.Restart()) << server_.error();
  RestClient api2 = Api();
  TestUser b_again;
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api2, b, "b-phone", &b_again));
  std::vector<Json> history;
  ASSERT_NO_FATAL_FAILURE(FetchAllHistory(api2, b_again.access_token, conv, &history));
  std::map<std::string, int> copies;
  for (size_t i = 0; i < history.size(); ++i) {
    EXPECT_EQ(history[i]["seq"].Int(), static_cast<int64_t>(i + 1)) << "seq must be 1..N without gaps";
    ++copies[history[i]["client_msg_id"].StrOr("")];
  }
  for (const auto& [id, ack] : acked) {
    auto it = copies.find(id);
    ASSERT_NE(it, copies.end()) << "acknowledged message lost by kill -9: " << ack;
    EXPECT_EQ(it->second, 1) << "stored " << it->second << " times: " << ack;
    const Json& stored = history[static_cast<size_t>(ack["seq"].IntOr(1) - 1)];
    EXPECT_EQ(stored["message_id"].Str(), ack["message_id"].Str()) << "stored seq differs from the ack";
  }
  const int64_t n = static_cast<int64_t>(history.size());

  WsClient ws;
  ResumeResult res;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api2, b_again, &ws));
  ASSERT_NO_FATAL_FAILURE(Resume(ws, std::nullopt, &res));
  std::vector<Json> replayed = FramesOf(res.frames, "message");
  ASSERT_FALSE(replayed.empty()) << "B acknowledged at most " << b_seen << " of " << n
                                 << " stored messages, yet nothing was replayed";
  // The record is what B acknowledged before the crash: kPre for sure (A saw that
  // receipt), the mid-burst ack if it was stored before the kill.
  const int64_t from = replayed[0]["seq"].IntOr(-1) - 1;
  EXPECT_GE(from, kPre) << "the replay repeats what B acknowledged (and was told stored)";
  EXPECT_LE(from, b_acked_in_burst.value_or(kPre)) << "the replay skips what B never acknowledged";
  for (size_t i = 0; i < replayed.size(); ++i) {
    const int64_t seq = from + 1 + static_cast<int64_t>(i);
    ASSERT_EQ(replayed[i]["seq"].Int(), seq) << "replay must run from " << from + 1 << " to " << n
                                             << " without gaps: " << replayed[i];
    EXPECT_EQ(replayed[i]["message_id"].Str(), history[static_cast<size_t>(seq - 1)]["message_id"].Str());
  }
  EXPECT_EQ(from + static_cast<int64_t>(replayed.size()), n)
      << "the replay must reach the last stored message";
  EXPECT_EQ(res.done["replayed"].Int(), static_cast<int64_t>(replayed.size())) << res.done;
}

// The device record is the highest seq the device acknowledged, across restarts too:
// after a restart, a READ of an older message (the usual "read up to here" after
// "delivered everything") must not pull the record back.
TEST_F(ResumeRestartTest, DeviceRecordNeverMovesBackAfterARestart) {
  TestUser a, b;
  std::string conv;
  std::vector<std::string> ids;
  {
    RestClient api = Api();
    ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rra", &a));
    ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rrb", &b, "b-phone"));
    ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &conv));
    WsClient aws, bws;
    ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a, &aws));
    ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, b, &bws));
    for (int i = 1; i <= 10; ++i) {
      Json ack;
      ASSERT_NO_FATAL_FAILURE(SendAndAck(aws, conv, "m" + std::to_string(i), &ack));
      ids.push_back(ack["message_id"].StrOr(""));
    }
    std::vector<Json> got;
    ASSERT_NO_FATAL_FAILURE(CollectMessages(bws, conv, 10, &got));
    ASSERT_TRUE(bws.Send(MessageReceiptFrame(ids[9], conv, "DELIVERED", 10)));
    Json r = aws.WaitForEvent("message_receipt", kFrameTimeout);  // stored by now
    ASSERT_TRUE(r.valid()) << r.error();
    ASSERT_EQ(r["up_to_seq"].Int(), 10) << r;
  }
  std::optional<int> code = server_.Stop();
  ASSERT_EQ(code, 0) << "SIGTERM must end the server cleanly: " << server_.error();
  ASSERT_TRUE(server_.Restart()) << server_.error();

  RestClient api = Api();
  TestUser a2, b2;
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api, a, "a-after", &a2));
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api, b, "b-phone", &b2));
  WsClient aws;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, a2, &aws));
  {
    WsClient bws;
    ResumeResult res;
    ASSERT_NO_FATAL_FAILURE(ConnectWs(api, b2, &bws));
    ASSERT_NO_FATAL_FAILURE(Resume(bws, std::nullopt, &res));
    EXPECT_EQ(FramesOf(res.frames, "message").size(), 0u)
        << "the record (10) survived the restart: " << ::testing::PrintToString(res.frames);
    // The user reads up to message 5 of the 10 the device holds.
    ASSERT_TRUE(bws.Send(MessageReceiptFrame(ids[4], conv, "READ", 5)));
    Json r = aws.WaitForEvent("message_receipt", kFrameTimeout);  // stored by now
    ASSERT_TRUE(r.valid()) << r.error();
    ASSERT_EQ(r["status"].Str(), "READ"s) << r;
    ASSERT_EQ(r["up_to_seq"].Int(), 5) << r;
  }
  WsClient bws;
  ResumeResult res;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, b2, &bws));
  ASSERT_NO_FATAL_FAILURE(Resume(bws, std::nullopt, &res));
  std::vector<Json> replayed = FramesOf(res.frames, "message");
  std::string seqs;
  for (const Json& m : replayed) seqs += std::to_string(m["seq"].IntOr(-1)) + " ";
  EXPECT_TRUE(replayed.empty())
      << "the device acknowledged up to 10 (DELIVERED) before the restart; its READ up_to 5 "
         "after it must not move its record back, yet the resume replayed seqs: "
      << seqs;
  EXPECT_EQ(res.done["replayed"].Int(), 0) << res.done;
}

}  // namespace
}  // namespace sb::test
