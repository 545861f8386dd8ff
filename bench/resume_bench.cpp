// How long a device that missed N messages takes to catch up with `resume`.
//
//   resume_bench --url http://127.0.0.1:PORT [--missed 10000] [--convs 1]
//
// Registers two users, makes `convs` direct conversations between them, lets user A
// send `missed` messages (spread over the conversations) while B is away, then
// connects B with `resume` from cursor 0 and measures the time from sending `resume`
// to `resume_done`, and to the last `message` frame. Prints figures; asserts nothing.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "sb_client.h"

using namespace sb::client;

namespace {

struct Args {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  int missed = 10000;
  int convs = 1;
  int window = 200;
};

bool Parse(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (k == "--help" || k == "-h") return false;
    if (!v) return false;
    if (k == "--url") {
      std::string u = v;
      auto p = u.find("://");
      if (p != std::string::npos) u = u.substr(p + 3);
      auto c = u.rfind(':');
      if (c == std::string::npos) return false;
      a->host = u.substr(0, c);
      a->port = static_cast<uint16_t>(std::atoi(u.c_str() + c + 1));
    } else if (k == "--missed") {
      a->missed = std::atoi(v);
    } else if (k == "--convs") {
      a->convs = std::max(1, std::atoi(v));
    } else {
      return false;
    }
    ++i;
  }
  return a->port != 0;
}

std::optional<Session> NewUser(const RestClient& rest, const std::string& name, const std::string& device) {
  if (rest.RegisterUser(name, "benchmark-password").status != 201) return std::nullopt;
  return Session::FromResponse(rest.Login(name, "benchmark-password", device));
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (!Parse(argc, argv, &a)) {
    std::fprintf(stderr, "usage: resume_bench --url http://HOST:PORT [--missed N] [--convs C]\n");
    return 2;
  }
  RestClient rest(a.host, a.port);
  std::string tag = NewClientMsgId().substr(0, 8);
  for (char& c : tag) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto alice = NewUser(rest, "ra" + tag, "a-phone");
  auto bob = NewUser(rest, "rb" + tag, "b-phone");
  if (!alice || !bob) {
    std::fprintf(stderr, "resume_bench: could not create users\n");
    return 1;
  }
  std::vector<std::string> convs;
  for (int i = 0; i < a.convs; ++i) {
    // Direct conversations are one per pair: the extra ones are small groups.
    auto r = rest.CreateConversation(alice->access_token, i == 0 ? "direct" : "group", {bob->user_id});
    auto id = r.json()["conversation_id"].Str();
    if (!id) {
      std::fprintf(stderr, "resume_bench: create conversation: %s\n", r.Describe().c_str());
      return 1;
    }
    convs.push_back(*id);
  }

  // A sends while B is away, keeping `window` sends in flight.
  WsClient ws_a;
  WsConnectOptions oa;
  oa.access_token = alice->access_token;
  if (!ws_a.Connect(a.host, a.port, oa)) return 1;
  ws_a.WaitForEvent("welcome");
  int sent = 0, acked = 0;
  auto t0 = std::chrono::steady_clock::now();
  while (acked < a.missed) {
    while (sent < a.missed && sent - acked < a.window) {
      OutgoingMessage m;
      m.client_msg_id = "m" + std::to_string(sent);
      m.conversation_id = convs[sent % convs.size()];
      m.content = "a message of about the usual length for a chat, " + std::to_string(sent);
      ws_a.Send(SendMessageFrame(m));
      ++sent;
    }
    auto f = ws_a.RecvFrame(Millis(10000));
    if (!f.is_text()) {
      std::fprintf(stderr, "resume_bench: sender stream ended: %s\n", f.Describe().c_str());
      return 1;
    }
    auto j = f.json();
    if (j["event"].Str() == "message_ack") ++acked;
    else if (j["event"].Str() == "error") {
      std::fprintf(stderr, "resume_bench: %s\n", f.data.c_str());
      return 1;
    }
  }
  double send_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  WsClient ws_b;
  WsConnectOptions ob;
  ob.access_token = bob->access_token;
  if (!ws_b.Connect(a.host, a.port, ob)) return 1;
  ws_b.WaitForEvent("welcome");
  std::map<std::string, int64_t> cursors;
  for (auto& c : convs) cursors[c] = 0;
  auto r0 = std::chrono::steady_clock::now();
  ws_b.Send(ResumeFrame(cursors));
  int got = 0;
  double done_s = 0;
  for (;;) {
    auto f = ws_b.RecvFrame(Millis(30000));
    if (!f.is_text()) {
      std::fprintf(stderr, "resume_bench: receiver stream ended: %s\n", f.Describe().c_str());
      return 1;
    }
    auto j = f.json();
    auto ev = j["event"].Str();
    if (ev == "message") ++got;
    if (ev == "resume_done") {
      done_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - r0).count();
      break;
    }
  }
  std::printf("resume_bench: missed=%d convs=%d replayed=%d\n", a.missed, a.convs, got);
  std::printf("  sending them (window %d): %.2f s (%.0f msg/s)\n", a.window, send_s, a.missed / send_s);
  std::printf("  resume -> resume_done: %.3f s (%.0f msg/s replayed)\n", done_s, got / done_s);
  return got == a.missed ? 0 : 1;
}
