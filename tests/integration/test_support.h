// Shared pieces of the integration tests: users, sockets, sending with acks, history
// walks, and a fixture that runs one server per test suite.
//
// Helpers that can fail use gtest assertions and return through an out-parameter, so
// call them under ASSERT_NO_FATAL_FAILURE(...) to stop the test at the first problem.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sb_client.h"
#include "server_process.h"

namespace sb::test {

// "text"s: gtest prints a C string compared with a std::optional<std::string> as a
// pointer, so expected values are written as std::string literals.
using namespace std::string_literals;

using client::Json;
using client::RestClient;
using client::WsClient;
using Millis = std::chrono::milliseconds;

inline constexpr std::string_view kPassword = "pw-Correct-Horse-42";
// How long to wait for a frame the contract says must come.
inline constexpr Millis kFrameTimeout{5000};
// How long to watch for a frame the contract says must NOT come.
inline constexpr Millis kQuietWindow{400};

// A username unique to this test process and call: lower-case letters, digits, '_'.
std::string UniqueName(std::string_view base);

struct TestUser {
  std::string username;
  std::string user_id;
  std::string device_id;
  std::string access_token;
  std::string refresh_token;
};

// Registers `UniqueName(base)` and logs it in as `device_id`.
void CreateUser(const RestClient& api, std::string_view base, TestUser* out,
                std::string_view device_id = "dev-1");
// Logs an existing user in as another device.
void LoginDevice(const RestClient& api, const TestUser& user, std::string_view device_id,
                 TestUser* out);

// Connects with the user's token and consumes the `welcome` frame.
void ConnectWs(const RestClient& api, const TestUser& user, WsClient* ws);

// POST /v1/conversations type=direct with `other`, expecting 201 or 200.
void CreateDirect(const RestClient& api, const TestUser& user, const TestUser& other,
                  std::string* conversation_id);

// The message_ack for `client_msg_id`, or the first error frame (which may or may not
// name the message), skipping unrelated frames. Json::None on timeout or close.
Json AwaitReply(WsClient& ws, std::string_view client_msg_id, Millis timeout = kFrameTimeout);

// The next `n` distinct `message` frames of `conversation_id`, in arrival order.
// Redeliveries (same message_id) are dropped, as the contract tells clients to.
void CollectMessages(WsClient& ws, std::string_view conversation_id, size_t n,
                     std::vector<Json>* out, Millis timeout = kFrameTimeout);

// One send_message and its message_ack (asserted to match the request).
void SendAndAck(WsClient& ws, std::string_view conversation_id, std::string_view content, Json* ack,
                std::string client_msg_id = client::NewClientMsgId());

struct Acked {
  std::string client_msg_id;
  std::string message_id;
  std::string content;
  int64_t seq = 0;
};

// Pipelines every send, then collects one ack per client_msg_id (in any order).
// Keep a batch under the per-connection burst (100).
void SendBatch(WsClient& ws, std::string_view conversation_id,
               const std::vector<std::string>& contents, std::vector<Acked>* acks);

// Every message of a conversation, oldest first, by walking after_seq pages.
void FetchAllHistory(const RestClient& api, std::string_view token,
                     std::string_view conversation_id, std::vector<Json>* messages);

// The error frame's code ("" when `frame` is not an error).
std::string ErrorCodeOf(const Json& frame);

// One server for all tests of a suite: tests that share it must not depend on
// global state (fresh users per test; nothing restarts it).
class SharedServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite();
  static void TearDownTestSuite();
  void SetUp() override;
  void TearDown() override;

  static RestClient Api() { return RestClient(server_->host(), server_->port()); }
  static ServerProcess& server() { return *server_; }

 private:
  static ServerProcess* server_;
};

}  // namespace sb::test

// ---- Resume and multi-connection watching (receipts, resume and presence tests) ----

namespace sb::test {

// What one `resume` produced: the text frames that came before `resume_done`, in
// arrival order, and `resume_done` itself.
struct ResumeResult {
  std::vector<Json> frames;
  Json done;
};

// Sends `resume` (nullopt: no cursors field; an empty map: "cursors":{}) and collects
// frames up to `resume_done`. Fails on an error frame, a close or a timeout.
void Resume(WsClient& ws, const std::optional<std::map<std::string, int64_t>>& cursors,
            ResumeResult* out, Millis timeout = kFrameTimeout);

// ConnectWs, then a resume without cursors: the server holds live `message` frames back
// until a new connection's first frame (so that a resume can order them after its
// replay), and a test that wants live delivery at once must speak first.
void ConnectAndResume(const RestClient& api, const TestUser& user, WsClient* ws,
                      ResumeResult* out = nullptr);

// The frames of `frames` whose "event" is `event`, in order.
std::vector<Json> FramesOf(const std::vector<Json>& frames, std::string_view event);

// Every text frame each client receives within `window` (result[i] for clients[i]),
// polling all of them in one window: checking several connections for silence one
// after another would multiply the wait.
std::vector<std::vector<Json>> DrainAll(const std::vector<WsClient*>& clients, Millis window);

// A connection and the name failure messages give it.
struct NamedWs {
  WsClient* ws;
  std::string who;
};

// Fails (naming the connection and `context`) for every `event` frame any of `clients`
// receives within `window`.
void ExpectNoEvent(const std::vector<NamedWs>& clients, std::string_view event, Millis window,
                   std::string_view context);

}  // namespace sb::test

// ---- Raw bytes on the wire (RFC 6455 conformance and the bad-input catalogue) ------
//
// The client library is built on Beast, which refuses to produce malformed frames and
// handles control frames itself (a pong never reaches the caller). These pieces speak
// TCP directly, so a test can send any byte sequence and see every frame the server
// sends back, close frames and pongs included.

namespace sb::test {

// A plain TCP connection, driven by the calling thread with poll() timeouts.
class RawConn {
 public:
  RawConn() = default;
  ~RawConn();
  RawConn(RawConn&& o) noexcept;
  RawConn& operator=(RawConn&& o) noexcept;
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;

  // rcvbuf > 0 sets SO_RCVBUF before connecting: a small receive window makes a client
  // that does not read back up the server's socket quickly.
  bool Connect(const std::string& host, uint16_t port, int rcvbuf = 0);
  // Writes every byte; false (see error()) on a write error, a closed peer or timeout.
  bool Write(std::string_view bytes, Millis timeout = kFrameTimeout);

  enum class ReadResult { kData, kTimeout, kClosed };
  // Waits up to `timeout` for bytes and appends what one read returns to buffer().
  // kClosed once the peer has ended the stream (FIN or reset; see error()).
  ReadResult ReadSome(Millis timeout);
  // Reads (appending to buffer()) until the peer ends the stream: true, or false when
  // it is still open after `timeout`.
  bool WaitClosed(Millis timeout);

  std::string& buffer() { return buf_; }
  bool connected() const { return fd_ >= 0; }
  bool peer_closed() const { return peer_closed_; }
  const std::string& error() const { return error_; }
  void Close();

 private:
  int fd_ = -1;
  bool peer_closed_ = false;
  std::string buf_;
  std::string error_;
};

// Reads one HTTP response from the front of conn's buffer (reading more as needed):
// the head, then a Content-Length body, or everything until the peer closes when the
// head has no length (a 101 has no body). The response is consumed from the buffer;
// what follows it (WebSocket frames after a 101) stays. status 0 when no complete
// response arrives within `timeout` (error says why).
// `head_only`: the answer to a HEAD request (a Content-Length but no body follows).
client::HttpResponse ReadHttpResponse(RawConn& conn, Millis timeout = kFrameTimeout, bool head_only = false);

// `request` written byte for byte on a fresh connection, and the one response read
// back (status 0: none, e.g. because the server closed without answering).
client::HttpResponse RawHttp(const std::string& host, uint16_t port, std::string_view request,
                             Millis timeout = kFrameTimeout);

// A client frame to encode. Everything a malformed frame needs is adjustable.
struct FrameSpec {
  uint8_t opcode = 0x1;
  std::string payload;
  bool fin = true;
  uint8_t rsv = 0;      // bits 4..6 of the first byte: 0x40 RSV1, 0x20 RSV2, 0x10 RSV3
  bool masked = true;   // clients must mask (RFC 6455 §5.3)
  // 0: the minimal length encoding; 2 or 8: force the 16- or 64-bit form.
  int length_bytes = 0;
  // Written as the length instead of payload.size() (a header that lies).
  std::optional<uint64_t> declared_length = std::nullopt;
};
std::string EncodeFrame(const FrameSpec& f);

// One frame as the server sent it.
struct WireFrame {
  uint8_t opcode = 0;
  bool fin = true;
  uint8_t rsv = 0;
  bool masked = false;
  std::string payload;

  // A close frame's status code; nullopt when its payload is empty.
  std::optional<uint16_t> close_code() const;
  std::string Describe() const;
};

// A random Sec-WebSocket-Key (16 random bytes, base64).
std::string NewWebSocketKey();
// The Sec-WebSocket-Accept a server must answer for `key` (RFC 6455 §4.2.2 step 5.4:
// base64 of the SHA-1 of the key followed by the protocol's fixed GUID).
std::string WebSocketAccept(std::string_view key);
// Base64 with the standard alphabet and padding (what the handshake uses).
std::string StdBase64(std::string_view bytes);

// An upgrade request; every part can be left out or spoiled. nullopt drops a header.
struct UpgradeSpec {
  std::string method = "GET";
  std::string target = "/v1/ws";
  std::string version = "HTTP/1.1";
  std::string token;  // Authorization: Bearer, when non-empty
  std::optional<std::string> host = "";  // "": host:port of the server
  std::optional<std::string> upgrade = "websocket";
  std::optional<std::string> connection = "Upgrade";
  std::optional<std::string> key = "";  // "": a fresh NewWebSocketKey()
  std::optional<std::string> ws_version = "13";
  client::Headers extra;
};
// The request bytes; *key_out (when given) receives the key actually sent.
std::string UpgradeRequest(const UpgradeSpec& spec, const std::string& host, uint16_t port,
                           std::string* key_out = nullptr);

// A WebSocket connection over RawConn: the test writes bytes, and reads the server's
// frames exactly as they arrive.
class RawWs {
 public:
  // Connects, writes `request` and reads the answer. True on 101 (see upgrade()).
  bool Open(const std::string& host, uint16_t port, const std::string& request,
            Millis timeout = kFrameTimeout);
  const client::HttpResponse& upgrade() const { return upgrade_; }

  bool Send(std::string_view bytes, Millis timeout = kFrameTimeout) {
    return conn_.Write(bytes, timeout);
  }
  bool SendFrame(const FrameSpec& f, Millis timeout = kFrameTimeout) {
    return conn_.Write(EncodeFrame(f), timeout);
  }
  // A masked text frame (what any well-behaved client sends).
  bool SendText(std::string_view text) { return SendFrame({.opcode = 0x1, .payload = std::string(text)}); }

  enum class Got { kFrame, kTimeout, kClosed };
  // The next server frame; kClosed when the TCP stream ended before a whole frame.
  Got Next(WireFrame* out, Millis timeout = kFrameTimeout);

  RawConn& conn() { return conn_; }

 private:
  RawConn conn_;
  client::HttpResponse upgrade_;
};

// Opens a RawWs for `user` (Authorization header) and consumes the welcome frame.
void OpenRawWs(const RestClient& api, const TestUser& user, RawWs* ws);

// Two users in a direct conversation, connected before a hostile client acts: a test
// shows that the server kept serving them during and after the attack.
class Bystanders {
 public:
  void Start(const RestClient& api);
  // x sends a message: the ack reaches x and the message reaches y.
  void ExpectChat(std::string_view context);

 private:
  TestUser x_, y_;
  std::string conv_;
  WsClient xw_, yw_;
};

}  // namespace sb::test
