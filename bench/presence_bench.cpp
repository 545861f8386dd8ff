// Presence registry cost, in process (no sockets): how many online/offline changes per
// second the chat core announces, and how much memory each online user costs.
//
//   presence_bench [--users 100000] [--subscribers 1] [--rounds 3]
//
// Drives sb::chat::ChatCore on 2 hand-cranked shards with fake sessions (each user one
// device) and the real embedded store in a temp dir. `users` users flap (go offline and
// online `rounds` times); each has `subscribers` watchers who share a conversation
// with it and subscribe to its presence, and stay connected. Grace is 0, so every
// change is announced (the worst case). Prints figures; asserts nothing.
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>

#include "base/clock.h"
#include "chat/chat_core.h"
#include "chat/manual_executor.h"
#include "store/store.h"

using namespace sb;

namespace {


class CountingSession final : public chat::Session {
 public:
  CountingSession(uint64_t id, UserId u) : id_(id), user_(u) {}
  uint64_t id() const override { return id_; }
  UserId user() const override { return user_; }
  const std::string& device_id() const override { return device_; }
  const std::string& session_id() const override { return device_; }
  void Send(std::shared_ptr<const std::string>) override { ++frames; }
  size_t Queued() const override { return 0; }
  void Close(uint16_t code, std::string_view) override { closed_with = code; }
  uint16_t closed_with = 0;
  void WhenQueueBelow(size_t, std::function<void()> fn) override { fn(); }
  uint64_t frames = 0;

 private:
  uint64_t id_;
  UserId user_;
  std::string device_ = "d";
};

long RssKb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  size_t users = 100000, subscribers = 1, rounds = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--users")) users = std::strtoul(argv[i + 1], nullptr, 10);
    else if (!std::strcmp(argv[i], "--subscribers")) subscribers = std::strtoul(argv[i + 1], nullptr, 10);
    else if (!std::strcmp(argv[i], "--rounds")) rounds = std::strtoul(argv[i + 1], nullptr, 10);
    else {
      std::fprintf(stderr, "usage: presence_bench [--users N] [--subscribers S] [--rounds R]\n");
      return 2;
    }
  }
  char tmpl[] = "/tmp/sb_presence_bench_XXXXXX";
  std::string dir = mkdtemp(tmpl);
  store::StoreOptions so;
  so.dir = dir;
  so.sync = store::SyncPolicy::kNone;
  auto opened = store::OpenEmbeddedStore(so);
  if (!opened.ok()) return 1;
  auto st = std::move(opened).value();

  // Targets are users 1..N; watcher k of target t is user N*(k+1)+t. One group each.
  const size_t n = users;
  auto watcher = [&](size_t t, size_t k) { return static_cast<UserId>(n * (k + 1) + t); };
  for (size_t t = 1; t <= n; ++t) {
    store::Conversation c;
    c.id = t;
    c.type = store::ConvType::kGroup;
    c.members.push_back(t);
    for (size_t k = 0; k < subscribers; ++k) c.members.push_back(watcher(t, k));
    bool created;
    if (!st->CreateConversation(c, &created).ok()) return 1;
  }

  ManualClock clock(1795979690000);
  chat::ManualExecutor ex[2];
  chat::CoreOptions opts;
  opts.presence_grace_ms = 0;  // every change is announced: the worst case
  chat::ChatCore core(*st, {&ex[0], &ex[1]}, opts, clock);
  core.Start();
  auto crank = [&] {
    while (ex[0].RunAll() + ex[1].RunAll() > 0) {
    }
  };

  std::vector<std::unique_ptr<CountingSession>> targets, watchers;
  for (size_t t = 1; t <= n; ++t) targets.push_back(std::make_unique<CountingSession>(t, t));
  for (size_t t = 1; t <= n; ++t)
    for (size_t k = 0; k < subscribers; ++k)
      watchers.push_back(std::make_unique<CountingSession>(watcher(t, k), watcher(t, k)));

  long rss0 = RssKb();
  for (auto& s : targets) core.Attach(static_cast<uint32_t>(s->id() % 2), s.get());
  crank();
  long rss1 = RssKb();
  for (auto& w : watchers) core.Attach(static_cast<uint32_t>(w->id() % 2), w.get());
  crank();
  long rss2 = RssKb();
  for (auto& w : watchers) {
    UserId t = (w->id() - 1) % n + 1;
    core.OnFrame(static_cast<uint32_t>(w->id() % 2), w.get(),
                 R"({"event":"presence_subscribe","user_ids":[")" + FormatUserId(t) + "\"]}");
  }
  crank();
  long rss3 = RssKb();

  uint64_t frames_before = 0;
  for (auto& w : watchers) frames_before += w->frames;
  auto t0 = std::chrono::steady_clock::now();
  for (size_t r = 0; r < rounds; ++r) {
    for (auto& s : targets) core.Detach(static_cast<uint32_t>(s->id() % 2), s.get());
    crank();
    for (auto& s : targets) core.Attach(static_cast<uint32_t>(s->id() % 2), s.get());
    crank();
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  uint64_t frames = 0;
  for (auto& w : watchers) frames += w->frames;
  uint64_t changes = 2 * rounds * n;

  std::printf("presence_bench: users=%zu subscribers_per_user=%zu rounds=%zu (2 shards, one thread)\n", n,
              subscribers, rounds);
  std::printf("  online user (no subscriber yet): %.0f bytes (session state + registry entry)\n",
              (rss1 - rss0) * 1024.0 / n);
  std::printf("  watcher sessions: %.0f bytes each; subscriptions: %.0f bytes each\n",
              (rss2 - rss1) * 1024.0 / watchers.size(), (rss3 - rss2) * 1024.0 / watchers.size());
  std::printf("  presence changes: %.0f/s, presence frames to subscribers: %.0f/s (%llu changes, %llu frames)\n",
              changes / secs, (frames - frames_before) / secs, static_cast<unsigned long long>(changes),
              static_cast<unsigned long long>(frames - frames_before));
  for (auto& s : targets) core.Detach(static_cast<uint32_t>(s->id() % 2), s.get());
  for (auto& w : watchers) core.Detach(static_cast<uint32_t>(w->id() % 2), w.get());
  crank();
  core.Stop();
  st.reset();
  std::filesystem::remove_all(dir);
  return 0;
}
