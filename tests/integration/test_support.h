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
