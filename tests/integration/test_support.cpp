#include "test_support.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstring>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <utility>

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
  o.tls = api.tls();  // wss:// when the API speaks https://
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

// ---- Raw bytes on the wire ---------------------------------------------------------

namespace sb::test {

namespace {

using SteadyTime = std::chrono::steady_clock::time_point;

int MillisLeft(SteadyTime deadline) {
  auto left = std::chrono::duration_cast<Millis>(deadline - SteadyClock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left, 1 << 30));
}

std::string Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return std::string(s);
}

// Parses a response head ("HTTP/1.1 200 OK\r\nName: value\r\n...") into `out`.
bool ParseHead(std::string_view head, client::HttpResponse* out) {
  size_t eol = head.find("\r\n");
  std::string_view status_line = head.substr(0, eol);
  if (status_line.rfind("HTTP/", 0) != 0) return false;
  size_t sp = status_line.find(' ');
  if (sp == std::string_view::npos || sp + 4 > status_line.size()) return false;
  int code = 0;
  for (size_t i = sp + 1; i < sp + 4; ++i) {
    if (status_line[i] < '0' || status_line[i] > '9') return false;
    code = code * 10 + (status_line[i] - '0');
  }
  out->status = code;
  out->headers.clear();
  while (eol != std::string_view::npos) {
    size_t start = eol + 2;
    eol = head.find("\r\n", start);
    std::string_view line = head.substr(start, eol == std::string_view::npos ? head.npos : eol - start);
    if (line.empty()) continue;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    out->headers.emplace_back(Trim(line.substr(0, colon)), Trim(line.substr(colon + 1)));
  }
  return true;
}

}  // namespace

RawConn::~RawConn() { Close(); }

RawConn::RawConn(RawConn&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)),
      peer_closed_(o.peer_closed_),
      buf_(std::move(o.buf_)),
      error_(std::move(o.error_)) {}

RawConn& RawConn::operator=(RawConn&& o) noexcept {
  if (this != &o) {
    Close();
    fd_ = std::exchange(o.fd_, -1);
    peer_closed_ = o.peer_closed_;
    buf_ = std::move(o.buf_);
    error_ = std::move(o.error_);
  }
  return *this;
}

bool RawConn::Connect(const std::string& host, uint16_t port, int rcvbuf) {
  Close();
  peer_closed_ = false;
  buf_.clear();
  error_.clear();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    error_ = "not an IPv4 address: " + host;
    return false;
  }
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    error_ = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (rcvbuf > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  // A blocking connect to loopback is immediate; the socket turns non-blocking after.
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    error_ = std::string("connect: ") + std::strerror(errno);
    Close();
    return false;
  }
  ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
  return true;
}

bool RawConn::Write(std::string_view bytes, Millis timeout) {
  if (fd_ < 0) {
    error_ = "write: not connected";
    return false;
  }
  auto deadline = SteadyClock::now() + timeout;
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      error_ = std::string("write: ") + std::strerror(errno);
      return false;
    }
    pollfd p{fd_, POLLOUT, 0};
    int left = MillisLeft(deadline);
    if (left == 0 || ::poll(&p, 1, left) == 0) {
      error_ = "write: timeout with " + std::to_string(bytes.size()) + " bytes unsent";
      return false;
    }
  }
  return true;
}

RawConn::ReadResult RawConn::ReadSome(Millis timeout) {
  if (fd_ < 0 || peer_closed_) return ReadResult::kClosed;
  auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    char chunk[16384];
    ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n > 0) {
      buf_.append(chunk, static_cast<size_t>(n));
      return ReadResult::kData;
    }
    if (n == 0) {
      peer_closed_ = true;
      return ReadResult::kClosed;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      error_ = std::string("read: ") + std::strerror(errno);
      peer_closed_ = true;
      return ReadResult::kClosed;
    }
    pollfd p{fd_, POLLIN, 0};
    int left = MillisLeft(deadline);
    if (left == 0 || ::poll(&p, 1, left) == 0) return ReadResult::kTimeout;
  }
}

bool RawConn::WaitClosed(Millis timeout) {
  auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    ReadResult r = ReadSome(std::chrono::duration_cast<Millis>(deadline - SteadyClock::now()));
    if (r == ReadResult::kClosed) return true;
    if (r == ReadResult::kTimeout) return false;
  }
}

void RawConn::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

client::HttpResponse ReadHttpResponse(RawConn& conn, Millis timeout, bool head_only) {
  client::HttpResponse out;
  auto deadline = SteadyClock::now() + timeout;
  std::string& buf = conn.buffer();
  auto more = [&]() {
    return conn.ReadSome(std::chrono::duration_cast<Millis>(deadline - SteadyClock::now()));
  };
  size_t head_end;
  while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
    RawConn::ReadResult r = more();
    if (r == RawConn::ReadResult::kTimeout) {
      out.error = "no complete response head within " + std::to_string(timeout.count()) +
                  " ms (got " + std::to_string(buf.size()) + " bytes)";
      return out;
    }
    if (r == RawConn::ReadResult::kClosed) {
      out.error = "connection closed after " + std::to_string(buf.size()) + " bytes" +
                  (conn.error().empty() ? "" : " (" + conn.error() + ")") +
                  (buf.empty() ? "" : ": " + buf.substr(0, 200));
      return out;
    }
  }
  client::HttpResponse parsed;
  if (!ParseHead(std::string_view(buf).substr(0, head_end), &parsed)) {
    out.error = "not an HTTP response: " + buf.substr(0, 200);
    return out;
  }
  std::string length = parsed.Header("Content-Length");
  size_t body_start = head_end + 4;
  if (head_only || parsed.status == 101 || parsed.status == 204 || parsed.status == 304) {
    buf.erase(0, body_start);
    return parsed;
  }
  if (!length.empty()) {
    size_t n = std::strtoull(length.c_str(), nullptr, 10);
    while (buf.size() < body_start + n) {
      if (more() != RawConn::ReadResult::kData) {
        out.error = "incomplete body: " + std::to_string(buf.size() - body_start) + " of " +
                    std::to_string(n) + " bytes";
        return out;
      }
    }
    parsed.body = buf.substr(body_start, n);
    buf.erase(0, body_start + n);
    return parsed;
  }
  // No length: the body runs until the server closes.
  while (more() == RawConn::ReadResult::kData) {
  }
  parsed.body = buf.substr(body_start);
  buf.clear();
  return parsed;
}

client::HttpResponse RawHttp(const std::string& host, uint16_t port, std::string_view request,
                             Millis timeout) {
  RawConn c;
  client::HttpResponse out;
  if (!c.Connect(host, port)) {
    out.error = c.error();
    return out;
  }
  // The server may answer (and close) before the whole request is written, e.g. on
  // a head that is too large: a failed write still leaves an answer to read.
  (void)c.Write(request, timeout);
  return ReadHttpResponse(c, timeout);
}

std::string EncodeFrame(const FrameSpec& f) {
  std::string out;
  out.reserve(f.payload.size() + 14);
  out.push_back(static_cast<char>((f.fin ? 0x80 : 0) | (f.rsv & 0x70) | (f.opcode & 0x0f)));
  const uint8_t mask_bit = f.masked ? 0x80 : 0;
  const uint64_t n = f.declared_length.value_or(f.payload.size());
  int bytes = f.length_bytes;
  if (bytes == 0) bytes = n < 126 ? 0 : n <= 0xffff ? 2 : 8;
  if (bytes == 0) {
    out.push_back(static_cast<char>(mask_bit | n));
  } else {
    out.push_back(static_cast<char>(mask_bit | (bytes == 2 ? 126 : 127)));
    for (int shift = (bytes - 1) * 8; shift >= 0; shift -= 8)
      out.push_back(static_cast<char>((n >> shift) & 0xff));
  }
  if (f.masked) {
    // Masking only has to defeat intermediaries' caches; any varying key will do.
    thread_local std::mt19937 rng{std::random_device{}()};
    uint32_t k = rng();
    char key[4] = {static_cast<char>(k >> 24), static_cast<char>(k >> 16),
                   static_cast<char>(k >> 8), static_cast<char>(k)};
    out.append(key, 4);
    for (size_t i = 0; i < f.payload.size(); ++i)
      out.push_back(static_cast<char>(f.payload[i] ^ key[i % 4]));
  } else {
    out += f.payload;
  }
  return out;
}

std::optional<uint16_t> WireFrame::close_code() const {
  if (payload.size() < 2) return std::nullopt;
  return static_cast<uint16_t>((static_cast<uint8_t>(payload[0]) << 8) |
                               static_cast<uint8_t>(payload[1]));
}

std::string WireFrame::Describe() const {
  static const char* const kNames[16] = {"continuation", "text", "binary", "op3",  "op4",  "op5",
                                         "op6",          "op7",  "close",  "ping", "pong", "opB",
                                         "opC",          "opD",  "opE",    "opF"};
  std::string out = std::string(kNames[opcode & 0x0f]) + (fin ? "" : " (not fin)");
  if (opcode == 0x8) {
    auto code = close_code();
    out += code ? " code " + std::to_string(*code) : std::string(" without a code");
    if (payload.size() > 2) out += " reason '" + payload.substr(2) + "'";
    return out;
  }
  out += " of " + std::to_string(payload.size()) + " bytes";
  if (!payload.empty()) out += ": " + payload.substr(0, 300);
  return out;
}

std::string StdBase64(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (uint32_t(uint8_t(bytes[i])) << 16) | (uint32_t(uint8_t(bytes[i + 1])) << 8) |
                 uint8_t(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out.push_back(kAlphabet[(v >> s) & 63]);
  }
  if (size_t rest = bytes.size() - i; rest > 0) {
    uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
    if (rest == 2) v |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::string NewWebSocketKey() {
  thread_local std::mt19937 rng{std::random_device{}()};
  std::string raw(16, '\0');
  for (char& c : raw) c = static_cast<char>(rng() & 0xff);
  return StdBase64(raw);
}

std::string WebSocketAccept(std::string_view key) {
  // The GUID every RFC 6455 server appends to the key.
  const std::string input = std::string(key) + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(input.data(), input.size(), digest, &len, EVP_sha1(), nullptr) != 1) return {};
  return StdBase64(std::string_view(reinterpret_cast<const char*>(digest), len));
}

std::string UpgradeRequest(const UpgradeSpec& s, const std::string& host, uint16_t port,
                           std::string* key_out) {
  std::string r = s.method + " " + s.target + " " + s.version + "\r\n";
  if (s.host) r += "Host: " + (s.host->empty() ? host + ":" + std::to_string(port) : *s.host) + "\r\n";
  if (s.upgrade) r += "Upgrade: " + *s.upgrade + "\r\n";
  if (s.connection) r += "Connection: " + *s.connection + "\r\n";
  std::string key;
  if (s.key) {
    key = s.key->empty() ? NewWebSocketKey() : *s.key;
    r += "Sec-WebSocket-Key: " + key + "\r\n";
  }
  if (key_out) *key_out = key;
  if (s.ws_version) r += "Sec-WebSocket-Version: " + *s.ws_version + "\r\n";
  if (!s.token.empty()) r += "Authorization: Bearer " + s.token + "\r\n";
  for (const auto& [k, v] : s.extra) r += k + ": " + v + "\r\n";
  r += "\r\n";
  return r;
}

bool RawWs::Open(const std::string& host, uint16_t port, const std::string& request,
                 Millis timeout) {
  upgrade_ = client::HttpResponse();
  if (!conn_.Connect(host, port)) {
    upgrade_.error = conn_.error();
    return false;
  }
  if (!conn_.Write(request, timeout)) {
    upgrade_.error = conn_.error();
    return false;
  }
  upgrade_ = ReadHttpResponse(conn_, timeout);
  return upgrade_.status == 101;
}

RawWs::Got RawWs::Next(WireFrame* out, Millis timeout) {
  auto deadline = SteadyClock::now() + timeout;
  std::string& b = conn_.buffer();
  for (;;) {
    // A whole frame in the buffer? Server frames are unmasked, but parse a mask anyway
    // so that a masked one is reported rather than misread.
    if (b.size() >= 2) {
      const uint8_t b0 = static_cast<uint8_t>(b[0]), b1 = static_cast<uint8_t>(b[1]);
      size_t pos = 2;
      uint64_t len = b1 & 0x7f;
      size_t ext = len == 126 ? 2 : len == 127 ? 8 : 0;
      bool masked = (b1 & 0x80) != 0;
      if (b.size() >= pos + ext + (masked ? 4 : 0)) {
        if (ext) {
          len = 0;
          for (size_t i = 0; i < ext; ++i) len = (len << 8) | static_cast<uint8_t>(b[pos + i]);
          pos += ext;
        }
        char key[4] = {0, 0, 0, 0};
        if (masked) {
          std::memcpy(key, b.data() + pos, 4);
          pos += 4;
        }
        if (b.size() >= pos + len) {
          out->fin = (b0 & 0x80) != 0;
          out->rsv = b0 & 0x70;
          out->opcode = b0 & 0x0f;
          out->masked = masked;
          out->payload = b.substr(pos, len);
          if (masked)
            for (size_t i = 0; i < out->payload.size(); ++i) out->payload[i] ^= key[i % 4];
          b.erase(0, pos + len);
          return Got::kFrame;
        }
      }
    }
    RawConn::ReadResult r =
        conn_.ReadSome(std::chrono::duration_cast<Millis>(deadline - SteadyClock::now()));
    if (r == RawConn::ReadResult::kClosed) return Got::kClosed;
    if (r == RawConn::ReadResult::kTimeout) return Got::kTimeout;
  }
}

void OpenRawWs(const RestClient& api, const TestUser& user, RawWs* ws) {
  UpgradeSpec spec;
  spec.token = user.access_token;
  ASSERT_TRUE(ws->Open(api.host(), api.port(), UpgradeRequest(spec, api.host(), api.port())))
      << "raw upgrade refused for " << user.username << ": " << ws->upgrade().Describe();
  WireFrame f;
  ASSERT_EQ(ws->Next(&f), RawWs::Got::kFrame) << "no welcome frame";
  ASSERT_EQ(f.opcode, 0x1) << "expected the welcome text frame, got " << f.Describe();
  Json j = Json::Parse(f.payload);
  ASSERT_EQ(j["event"].Str(), "welcome"s) << f.Describe();
}

void Bystanders::Start(const RestClient& api) {
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "bysx", &x_));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "bysy", &y_));
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, x_, y_, &conv_));
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, x_, &xw_));
  // y speaks first (resume) so that live messages reach it at once rather than after
  // the server's first-frame wait.
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, y_, &yw_));
}

void Bystanders::ExpectChat(std::string_view context) {
  SCOPED_TRACE("bystanders " + std::string(context));
  const std::string text = "still served " + client::NewClientMsgId();
  Json ack;
  ASSERT_NO_FATAL_FAILURE(SendAndAck(xw_, conv_, text, &ack));
  std::vector<Json> got;
  ASSERT_NO_FATAL_FAILURE(CollectMessages(yw_, conv_, 1, &got));
  EXPECT_EQ(got[0]["content"].Str(), text) << got[0];
}

}  // namespace sb::test
