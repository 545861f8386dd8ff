#include "test_support.h"

#include <atomic>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "base/ids.h"

namespace sb::test {

using client::OutgoingMessage;
using client::Session;
using client::WsFrame;
using SteadyClock = std::chrono::steady_clock;

std::string UniqueName(std::string_view base) {
  static const std::string run = sb::RandomHex(4);
  static std::atomic<int> counter{0};
  return std::string(base) + "_" + run + "_" + std::to_string(++counter);
}

void CreateUser(const RestClient& api, std::string_view base, TestUser* out,
                std::string_view device_id) {
  const std::string name = UniqueName(base);
  client::HttpResponse reg = api.RegisterUser(name, kPassword);
  ASSERT_EQ(reg.status, 201) << "POST /v1/users " << name << ": " << reg.Describe();
  TestUser u;
  u.username = name;
  u.user_id = reg.json()["user_id"].StrOr("");
  ASSERT_FALSE(u.user_id.empty()) << "register answer has no user_id: " << reg.Describe();
  ASSERT_NO_FATAL_FAILURE(LoginDevice(api, u, device_id, out));
}

void LoginDevice(const RestClient& api, const TestUser& user, std::string_view device_id,
                 TestUser* out) {
  client::HttpResponse r = api.Login(user.username, kPassword, device_id);
  ASSERT_EQ(r.status, 200) << "POST /v1/sessions " << user.username << ": " << r.Describe();
  std::optional<Session> s = Session::FromResponse(r);
  ASSERT_TRUE(s.has_value()) << "login answer lacks a field of the contract: " << r.Describe();
  ASSERT_EQ(s->user_id, user.user_id) << r.Describe();
  *out = user;
  out->device_id = s->device_id;
  out->access_token = s->access_token;
  out->refresh_token = s->refresh_token;
}

void ConnectWs(const RestClient& api, const TestUser& user, WsClient* ws) {
  client::WsConnectOptions o;
  o.access_token = user.access_token;
  ASSERT_TRUE(ws->Connect(api.host(), api.port(), o))
      << "WebSocket upgrade refused for " << user.username << ": HTTP " << ws->upgrade_status()
      << " (" << ws->error() << ") " << ws->upgrade_body();
  WsFrame f = ws->RecvFrame(kFrameTimeout);
  ASSERT_TRUE(f.is_text()) << "expected the welcome frame, got " << f.Describe();
  Json j = f.json();
  ASSERT_EQ(j["event"].Str(), "welcome"s) << "first frame must be welcome: " << j;
}

void CreateDirect(const RestClient& api, const TestUser& user, const TestUser& other,
                  std::string* conversation_id) {
  client::HttpResponse r = api.CreateConversation(user.access_token, "direct", {other.user_id});
  ASSERT_TRUE(r.status == 201 || r.status == 200)
      << "POST /v1/conversations direct: " << r.Describe();
  *conversation_id = r.json()["conversation_id"].StrOr("");
  ASSERT_FALSE(conversation_id->empty()) << r.Describe();
}

Json AwaitReply(WsClient& ws, std::string_view client_msg_id, Millis timeout) {
  auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<Millis>(deadline - SteadyClock::now());
    if (left <= Millis(0)) {
      return Json::None("no message_ack or error for " + std::string(client_msg_id) + " within " +
                        std::to_string(timeout.count()) + " ms");
    }
    WsFrame f = ws.RecvFrame(left);
    if (!f.is_text()) {
      if (f.kind == WsFrame::Kind::kTimeout) continue;
      return Json::None(f.Describe() + " while waiting for the ack of " +
                        std::string(client_msg_id));
    }
    Json j = f.json();
    auto ev = j["event"].Str();
    if (ev == "error") return j;
    if (ev == "message_ack" && j["client_msg_id"].Str() == client_msg_id) return j;
  }
}

void CollectMessages(WsClient& ws, std::string_view conversation_id, size_t n,
                     std::vector<Json>* out, Millis timeout) {
  std::set<std::string> seen;
  auto deadline = SteadyClock::now() + timeout;
  while (seen.size() < n) {
    auto left = std::chrono::duration_cast<Millis>(deadline - SteadyClock::now());
    ASSERT_GT(left.count(), 0) << "got " << seen.size() << " of " << n << " message frames of "
                               << conversation_id << " within " << timeout.count() << " ms";
    WsFrame f = ws.RecvFrame(left);
    if (f.kind == WsFrame::Kind::kTimeout) continue;
    ASSERT_TRUE(f.is_text()) << "while waiting for message frames: " << f.Describe();
    Json j = f.json();
    if (j["event"].Str() != "message" || j["conversation_id"].Str() != conversation_id) continue;
    if (!seen.insert(j["message_id"].StrOr("")).second) continue;
    out->push_back(j);
  }
}

void SendAndAck(WsClient& ws, std::string_view conversation_id, std::string_view content, Json* ack,
                std::string client_msg_id) {
  OutgoingMessage m;
  m.client_msg_id = client_msg_id;
  m.conversation_id = std::string(conversation_id);
  m.content = std::string(content);
  ASSERT_TRUE(ws.Send(client::SendMessageFrame(m))) << ws.error();
  Json j = AwaitReply(ws, client_msg_id, kFrameTimeout);
  ASSERT_EQ(j["event"].Str(), "message_ack"s) << "send_message " << client_msg_id << ": " << j;
  ASSERT_EQ(j["conversation_id"].Str(), conversation_id) << j;
  *ack = j;
}

void SendBatch(WsClient& ws, std::string_view conversation_id,
               const std::vector<std::string>& contents, std::vector<Acked>* acks) {
  std::map<std::string, std::string> pending;  // client_msg_id -> content
  for (const auto& c : contents) {
    OutgoingMessage m;
    m.client_msg_id = client::NewClientMsgId();
    m.conversation_id = std::string(conversation_id);
    m.content = c;
    pending.emplace(m.client_msg_id, c);
    ASSERT_TRUE(ws.Send(client::SendMessageFrame(m))) << ws.error();
  }
  auto deadline = SteadyClock::now() + Millis(10000) + Millis(20) * contents.size();
  while (!pending.empty()) {
    auto left = std::chrono::duration_cast<Millis>(deadline - SteadyClock::now());
    ASSERT_GT(left.count(), 0) << pending.size() << " of " << contents.size()
                               << " sends never acknowledged";
    WsFrame f = ws.RecvFrame(left);
    if (f.kind == WsFrame::Kind::kTimeout) continue;
    ASSERT_TRUE(f.is_text()) << "while collecting acks: " << f.Describe();
    Json j = f.json();
    auto ev = j["event"].Str();
    ASSERT_NE(ev, "error") << "while collecting acks: " << j;
    if (ev != "message_ack") continue;
    auto id = j["client_msg_id"].StrOr("");
    auto it = pending.find(id);
    if (it == pending.end()) continue;  // an ack of an earlier batch
    Acked a;
    a.client_msg_id = id;
    a.message_id = j["message_id"].StrOr("");
    a.seq = j["seq"].IntOr(0);
    a.content = it->second;
    ASSERT_FALSE(a.message_id.empty()) << j;
    ASSERT_GT(a.seq, 0) << j;
    acks->push_back(std::move(a));
    pending.erase(it);
  }
}

void FetchAllHistory(const RestClient& api, std::string_view token,
                     std::string_view conversation_id, std::vector<Json>* messages) {
  int64_t after = 0;
  for (int page = 0; page < 10000; ++page) {
    client::HttpResponse r =
        api.History(token, conversation_id, {.after_seq = after, .limit = 200});
    ASSERT_EQ(r.status, 200) << "history after_seq=" << after << ": " << r.Describe();
    Json j = r.json();
    ASSERT_TRUE(j["messages"].IsArray()) << r.Describe();
    for (const Json& m : j["messages"].Items()) {
      messages->push_back(m);
      after = std::max(after, m["seq"].IntOr(0));
    }
    auto more = j["has_more"].Bool();
    ASSERT_TRUE(more.has_value()) << "has_more missing: " << r.Describe();
    if (!*more) return;
    ASSERT_GT(j["messages"].Size(), 0u) << "has_more with an empty page: " << r.Describe();
  }
  FAIL() << "history walk did not end";
}

std::string ErrorCodeOf(const Json& frame) {
  if (frame["event"].Str() != "error") return "";
  return frame["code"].StrOr("");
}

// ---- SharedServerTest --------------------------------------------------------------

ServerProcess* SharedServerTest::server_ = nullptr;

void SharedServerTest::SetUpTestSuite() {
  server_ = new ServerProcess();
  server_->Start();  // a failure is reported by each test's SetUp
}

void SharedServerTest::TearDownTestSuite() {
  if (server_ && server_->running()) {
    std::optional<int> code = server_->Stop();
    EXPECT_EQ(code, 0) << "shared server did not exit cleanly on SIGTERM: " << server_->error()
                       << "\nlog tail:\n"
                       << server_->LogTail();
  }
  delete server_;
  server_ = nullptr;
}

void SharedServerTest::SetUp() {
  ASSERT_NE(server_, nullptr);
  if (!server_->CheckAlive() && server_->port() != 0) {
    // An earlier test crashed it (and was blamed for it); give this one a server.
    server_->Restart();
  }
  ASSERT_TRUE(server_->running()) << "server did not start: " << server_->error();
}

void SharedServerTest::TearDown() {
  // SetUp's failure already said why there was no server.
  if (!server_ || server_->port() == 0) return;
  if (!server_->CheckAlive()) {
    ADD_FAILURE() << "the server died during this test: " << server_->error() << "\nlog tail:\n"
                  << server_->LogTail();
  } else if (HasFailure()) {
    std::cout << "---- server log tail (" << server_->log_path()
              << "; SB_KEEP_TEST_DATA=1 keeps it) ----\n"
              << server_->LogTail(25) << "----\n";
  }
}

}  // namespace sb::test

// ---- Resume and multi-connection watching ------------------------------------------

namespace sb::test {

void Resume(WsClient& ws, const std::optional<std::map<std::string, int64_t>>& cursors,
            ResumeResult* out, Millis timeout) {
  ASSERT_TRUE(ws.Send(client::ResumeFrame(cursors))) << "sending resume: " << ws.error();
  auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<Millis>(deadline - SteadyClock::now());
    ASSERT_GT(left.count(), 0) << "no resume_done within " << timeout.count() << " ms (after "
                               << out->frames.size() << " other frames)";
    WsFrame f = ws.RecvFrame(left);
    if (f.kind == WsFrame::Kind::kTimeout) continue;
    ASSERT_TRUE(f.is_text()) << "while waiting for resume_done: " << f.Describe();
    Json j = f.json();
    ASSERT_NE(j["event"].Str(), "error"s) << "resume answered with an error: " << j;
    if (j["event"].Str() == "resume_done") {
      out->done = j;
      return;
    }
    out->frames.push_back(j);
  }
}

void ConnectAndResume(const RestClient& api, const TestUser& user, WsClient* ws,
                      ResumeResult* out) {
  ResumeResult ignored;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, user, ws));
  ASSERT_NO_FATAL_FAILURE(Resume(*ws, std::nullopt, out ? out : &ignored));
}

std::vector<Json> FramesOf(const std::vector<Json>& frames, std::string_view event) {
  std::vector<Json> out;
  for (const Json& f : frames)
    if (f["event"].Str() == event) out.push_back(f);
  return out;
}

std::vector<std::vector<Json>> DrainAll(const std::vector<WsClient*>& clients, Millis window) {
  std::vector<std::vector<Json>> out(clients.size());
  std::vector<bool> ended(clients.size(), false);
  auto deadline = SteadyClock::now() + window;
  while (SteadyClock::now() < deadline) {
    bool progressed = false;
    for (size_t i = 0; i < clients.size(); ++i) {
      if (ended[i]) continue;
      WsFrame f = clients[i]->RecvFrame(Millis(0));
      if (f.kind == WsFrame::Kind::kTimeout) continue;
      progressed = true;
      if (f.is_text()) out[i].push_back(f.json());
      else if (f.kind != WsFrame::Kind::kBinary) ended[i] = true;  // closed: nothing more comes
    }
    // Polling with zero timeouts keeps every connection read; sleep only when idle.
    if (!progressed) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return out;
}

void ExpectNoEvent(const std::vector<NamedWs>& clients, std::string_view event, Millis window,
                   std::string_view context) {
  std::vector<WsClient*> ws;
  for (const NamedWs& c : clients) ws.push_back(c.ws);
  std::vector<std::vector<Json>> got = DrainAll(ws, window);
  for (size_t i = 0; i < clients.size(); ++i) {
    for (const Json& f : FramesOf(got[i], event)) {
      ADD_FAILURE() << clients[i].who << " got an unexpected " << event << " frame " << context
                    << ": " << f;
    }
  }
}

}  // namespace sb::test
