// The chat event dispatcher: ChatCore::OnFrame with fake sessions on two hand-cranked
// shard executors and the real embedded store (temp dir, fsync none), as in
// tests/unit/chat_core_test.cpp. The commit thread is real.
//
// Fixture (made once, remade when the store has grown past kResetMessages):
//   users alice=11, bob=22, carol=33 (the core needs no user records);
//   conv 1001 group {alice, bob, carol} (owner shard 1), conv 2002 direct {bob, carol}
//   (shard 0: alice is a stranger there), conv 3003 direct {alice, bob} (shard 1).
// Each input is split on 0xff into frames (at most kMaxFrames). A frame may start
// with a control prefix 0xfe <ctl> (0xfe never occurs in UTF-8, so never in a valid
// frame):  ctl bit 0: sent by bob (on shard 1) instead of alice (on shard 0);
//          bit 1: crank both executors before this frame (interleaving);
//          bit 2: advance the clock by ((ctl >> 3) + 1) s and Tick both shards.
// Both sessions attach at the start of the input and detach at its end, after the
// executors were cranked until idle and the commit thread had nothing in flight.
//
// Invariants:
//  * the core never crashes (sanitizers), and becomes idle;
//  * every frame the core sends is one JSON object with a string "event";
//  * every non-duplicate message_ack names a stored message with that client_msg_id;
//  * seqs per conversation in the store are gap-free: LastSeq equals the number of
//    stored messages, and ReadAfter returns exactly 1..LastSeq (checked incrementally);
//  * stored messages come from members and respect the content limit.
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/ids.h"
#include "chat/chat_core.h"
#include "chat/manual_executor.h"
#include "fuzz_support.h"
#include "store/store.h"

namespace sb::fuzz {
namespace {

using chat::ChatCore;
using chat::Executor;
using chat::ManualExecutor;
using chat::Task;

constexpr UserId kAlice = 11, kBob = 22, kCarol = 33;
constexpr ConvId kConvs[] = {1001, 2002, 3003};
constexpr size_t kMaxFrames = 64;
// Resume replays a conversation's whole history: remake the store before that gets slow.
constexpr uint64_t kResetMessages = 500;


struct Ack {
  std::string conv, client_msg_id;
  uint64_t seq;
};

class FakeSession final : public chat::Session {
 public:
  FakeSession(uint64_t id, UserId u, std::string dev, std::vector<Ack>* acks)
      : id_(id), user_(u), dev_(std::move(dev)), sid_("ses_" + std::to_string(id)), acks_(acks) {}
  uint64_t id() const override { return id_; }
  UserId user() const override { return user_; }
  const std::string& device_id() const override { return dev_; }
  const std::string& session_id() const override { return sid_; }
  void Send(std::shared_ptr<const std::string> f) override {
    simdjson::dom::element doc;
    simdjson::dom::object o;
    std::string_view ev;
    FUZZ_CHECK(json_.parse(f->data(), f->size(), true).get(doc) == simdjson::SUCCESS &&
                   doc.get_object().get(o) == simdjson::SUCCESS && o["event"].get_string().get(ev) == simdjson::SUCCESS,
               "the core sent a frame that is not a JSON object with an event: %s", f->c_str());
    if (ev == "message_ack") {
      bool dup = false;
      std::string_view conv, cmid;
      uint64_t seq = 0;
      FUZZ_CHECK(o["duplicate"].get_bool().get(dup) == simdjson::SUCCESS &&
                     o["conversation_id"].get_string().get(conv) == simdjson::SUCCESS &&
                     o["client_msg_id"].get_string().get(cmid) == simdjson::SUCCESS &&
                     o["seq"].get_uint64().get(seq) == simdjson::SUCCESS,
                 "malformed message_ack: %s", f->c_str());
      if (!dup) acks_->push_back({std::string(conv), std::string(cmid), seq});
    }
  }
  void Close(uint16_t, std::string_view) override {}
  size_t Queued() const override { return 0; }
  void WhenQueueBelow(size_t, std::function<void()> fn) override { fn(); }

 private:
  uint64_t id_;
  UserId user_;
  std::string dev_, sid_;
  std::vector<Ack>* acks_;
  simdjson::dom::parser json_;
};

struct Env {
  TempDir dir{"fuzz-dispatch"};
  ManualClock clock{1795979690000};
  ManualExecutor ex[2];
  std::unique_ptr<store::Store> store;
  std::unique_ptr<ChatCore> core;
  std::map<ConvId, Seq> checked;  // seqs verified gap-free so far
  int generation = 0;
  uint64_t next_session = 1;

  Env() { Open(); }

  chat::CoreOptions Options() {
    chat::CoreOptions o;
    o.limits.send_burst = 1e6;  // the rate limiter uses the real clock: keep runs reproducible
    o.replay_page = 64;
    return o;
  }

  void Open() {
    store::StoreOptions so;
    so.dir = dir.path() + "/store-" + std::to_string(generation);
    so.sync = store::SyncPolicy::kNone;
    so.cache_bytes = 8 << 20;
    so.write_buffer_bytes = 4 << 20;
    auto opened = store::OpenEmbeddedStore(so);
    FUZZ_CHECK(opened.ok(), "open store: %s", opened.status().message().c_str());
    store = std::move(opened).value();
    core = std::make_unique<ChatCore>(*store, std::vector<Executor*>{&ex[0], &ex[1]}, Options(), clock);
    core->Start();
    auto add = [&](ConvId id, store::ConvType t, std::vector<UserId> members) {
      store::Conversation c;
      c.id = id;
      c.type = t;
      c.members = std::move(members);
      bool created = false;
      FUZZ_CHECK(store->CreateConversation(c, &created).ok() && created, "create conversation");
    };
    add(1001, store::ConvType::kGroup, {kAlice, kBob, kCarol});
    add(2002, store::ConvType::kDirect, {kBob, kCarol});
    add(3003, store::ConvType::kDirect, {kAlice, kBob});
    checked.clear();
  }

  void Close() {
    core->Stop();
    while (ex[0].RunAll() + ex[1].RunAll() > 0) {
    }
    core.reset();
    store.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir.path() + "/store-" + std::to_string(generation), ec);
    ++generation;
  }

  // Cranks both shards until nothing is queued and no message is in flight.
  void Idle() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
      size_t ran = ex[0].RunAll() + ex[1].RunAll();
      if (ran == 0 && core->InFlight() == 0) return;
      if (ran == 0) {
        FUZZ_CHECK(std::chrono::steady_clock::now() < deadline, "the core did not become idle (in flight: %lld)",
                   (long long)core->InFlight());
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
    }
  }

  // Returns the number of stored messages over all conversations.
  uint64_t CheckStore() {
    uint64_t total = 0;
    for (ConvId conv : kConvs) {
      auto last = store->LastSeq(conv);
      FUZZ_CHECK(last.ok(), "LastSeq: %s", last.status().message().c_str());
      Seq& from = checked[conv];
      FUZZ_CHECK(*last >= from, "LastSeq went backwards: %llu < %llu", (unsigned long long)*last,
                 (unsigned long long)from);
      if (*last > from) {
        auto msgs = store->ReadAfter(conv, from, *last - from + 1);
        FUZZ_CHECK(msgs.ok(), "ReadAfter: %s", msgs.status().message().c_str());
        FUZZ_CHECK(msgs->size() == *last - from, "conv %llu: %zu messages after seq %llu, LastSeq %llu (gap)",
                   (unsigned long long)conv, msgs->size(), (unsigned long long)from, (unsigned long long)*last);
        auto c = store->GetConversation(conv);
        FUZZ_CHECK(c.ok(), "GetConversation");
        for (size_t i = 0; i < msgs->size(); ++i) {
          const store::Message& m = (*msgs)[i];
          FUZZ_CHECK(m.seq == from + 1 + i, "conv %llu: seq %llu where %llu was due", (unsigned long long)conv,
                     (unsigned long long)m.seq, (unsigned long long)(from + 1 + i));
          FUZZ_CHECK(std::binary_search(c->members.begin(), c->members.end(), m.sender),
                     "stored a message from non-member %llu", (unsigned long long)m.sender);
          FUZZ_CHECK(m.content.size() <= Options().limits.max_content_bytes, "stored oversized content");
        }
        from = *last;
      }
      total += *last;
    }
    return total;
  }
};

Env& E() {
  static Env* env = new Env();  // never destroyed: the commit thread runs until exit
  return *env;
}

}  // namespace
}  // namespace sb::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  sb::fuzz::QuietLogs();
  sb::fuzz::E();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sb;
  using namespace sb::fuzz;
  Env& e = E();
  std::vector<Ack> acks;
  FakeSession alice(e.next_session++, kAlice, "phone", &acks);
  FakeSession bob(e.next_session++, kBob, "laptop", &acks);
  e.core->Attach(0, &alice);
  e.core->Attach(1, &bob);

  auto frames = SplitFF(AsView(data, size));
  if (frames.size() > kMaxFrames) frames.resize(kMaxFrames);
  for (std::string_view f : frames) {
    uint8_t ctl = 0;
    if (f.size() >= 2 && static_cast<uint8_t>(f[0]) == 0xfe) {
      ctl = static_cast<uint8_t>(f[1]);
      f.remove_prefix(2);
    }
    if (ctl & 2) {
      e.ex[0].RunAll();
      e.ex[1].RunAll();
    }
    if (ctl & 4) {
      e.clock.Advance(((ctl >> 3) + 1) * 1000);
      e.core->Tick(0);
      e.core->Tick(1);
    }
    if (ctl & 1) e.core->OnFrame(1, &bob, f);
    else e.core->OnFrame(0, &alice, f);
  }
  e.Idle();
  e.core->Detach(0, &alice);
  e.core->Detach(1, &bob);
  e.Idle();

  uint64_t total = e.CheckStore();
  for (const Ack& a : acks) {
    auto conv = ParseConvId(a.conv);
    FUZZ_CHECK(conv.has_value(), "ack names conversation '%s'", a.conv.c_str());
    auto m = e.store->GetMessage(*conv, a.seq);
    FUZZ_CHECK(m.ok(), "acked message %s/%llu is not stored", a.conv.c_str(), (unsigned long long)a.seq);
    FUZZ_CHECK(m->client_msg_id == a.client_msg_id, "ack for '%s' names a message stored as '%s'",
               a.client_msg_id.c_str(), m->client_msg_id.c_str());
  }
  if (total > kResetMessages) {
    e.Close();
    e.Open();
  }
  return 0;
}
