// Switchboard C++ client library: what the integration tests, the consistency checker
// and the tools use to talk to a server exactly as any other client would.
//
// Everything here is blocking and single-threaded per object: a call returns when its
// work is done or its timeout expires. No exceptions escape; failures are values
// (HttpResponse::status == 0, WsFrame::kError, ...). Boost.Asio/Beast stay inside
// the .cpp (pimpl) so that translation units including this header compile fast.
//
// The wire contract is docs/protocol.md (a copy of /work/shared/protocol.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sb_json.h"

namespace sb::client {

using Headers = std::vector<std::pair<std::string, std::string>>;
using Millis = std::chrono::milliseconds;

inline constexpr Millis kDefaultTimeout{10000};

// ---- Where the server is: host, port, TLS ------------------------------------------

// TLS towards the server (https://, wss://). The server's certificate is always
// verified: chain up to a trusted CA, and the name (or IP address) connected to.
struct TlsConfig {
  bool enabled = false;
  // PEM file of the CA certificate(s) to trust for this server instead of the
  // system's trust store, e.g. a private or test CA. Empty: the system store.
  std::string ca_file;
  // Host name (or IP address) the certificate must be valid for, also sent as SNI.
  // Empty: the host connected to.
  std::string server_name;
};

struct Endpoint {
  std::string host;
  uint16_t port = 0;
  TlsConfig tls;
  // "http://host:port" or "https://host:port" (IPv6 hosts in brackets).
  std::string Url() const;
};

// Parses http://, https://, ws:// and wss:// URLs; https and wss turn TLS on. The
// default ports are 80 and 443; a path is ignored; IPv6 hosts are written [::1].
// nullopt (with *error when given) for anything else.
std::optional<Endpoint> ParseUrl(std::string_view url, std::string* error = nullptr);

// ---- HTTP/1.1 ----------------------------------------------------------------------

struct HttpResponse {
  int status = 0;   // 0: no response (connect/IO failure or timeout; see error)
  Headers headers;  // in the order received
  std::string body;
  std::string error;  // transport error text when status == 0

  // First header with this name, case-insensitive; empty when absent.
  std::string Header(std::string_view name) const;
  // The body parsed as JSON (invalid Json when it is not JSON).
  Json json() const { return Json::Parse(body); }
  // The contract's error code from {"error":{"code":...}}, or "" when absent.
  std::string ErrorCode() const;
  // "HTTP 404 {...body...}" for failure messages.
  std::string Describe() const;
};

// One request on a fresh connection (Connection: close). `method` may be any token,
// including ones the server does not know. A non-empty body without a Content-Type in
// `headers` is sent as application/json.
HttpResponse Http(const std::string& host, uint16_t port, std::string_view method,
                  std::string_view target, std::string_view body = {}, Headers headers = {},
                  Millis timeout = kDefaultTimeout);
// The same over TLS when ep.tls.enabled (a failed handshake or certificate check:
// status 0, error says why).
HttpResponse Http(const Endpoint& ep, std::string_view method, std::string_view target,
                  std::string_view body = {}, Headers headers = {}, Millis timeout = kDefaultTimeout);

// Percent-encodes everything but RFC 3986 unreserved characters (for query values).
std::string UrlEncode(std::string_view s);

// ---- REST calls of the contract ----------------------------------------------------

// A login or refresh answer (POST /v1/sessions, POST /v1/sessions/refresh).
struct Session {
  std::string access_token;
  std::string refresh_token;
  std::string token_type;
  int64_t expires_in = 0;
  std::string user_id;
  std::string device_id;

  // nullopt unless the response is 200 with every field of the contract's shape.
  static std::optional<Session> FromResponse(const HttpResponse& r);
};

// Default member initializers let callers use designated initializers
// ({.after_seq = 0, .limit = 200}) without -Wmissing-field-initializers.
struct HistoryQuery {
  std::optional<int64_t> before_seq = std::nullopt;  // newest first
  std::optional<int64_t> after_seq = std::nullopt;   // oldest first
  std::optional<int64_t> limit = std::nullopt;       // server default 50, max 200
};

// Thin wrappers that build the contract's requests; they return the raw response so
// callers can assert on status, error codes and every field. Tokens are passed per
// call because tests act as several users against one server.
class RestClient {
 public:
  RestClient(std::string host, uint16_t port) : ep_{std::move(host), port, {}} {}
  explicit RestClient(Endpoint ep) : ep_(std::move(ep)) {}

  const std::string& host() const { return ep_.host; }
  uint16_t port() const { return ep_.port; }
  const Endpoint& endpoint() const { return ep_; }
  const TlsConfig& tls() const { return ep_.tls; }

  // Any call; `token` (when non-empty) goes into Authorization: Bearer.
  HttpResponse Request(std::string_view method, std::string_view target, std::string_view body = {},
                       std::string_view token = {}, Headers headers = {}) const;

  HttpResponse RegisterUser(std::string_view username, std::string_view password,
                            std::optional<std::string_view> display_name = std::nullopt) const;
  HttpResponse Login(std::string_view username, std::string_view password,
                     std::optional<std::string_view> device_id = std::nullopt) const;
  HttpResponse Refresh(std::string_view refresh_token) const;
  HttpResponse GetUser(std::string_view token, std::string_view user_id) const;
  HttpResponse GetPresence(std::string_view token, std::string_view user_id) const;

  // type: "direct" or "group".
  HttpResponse CreateConversation(std::string_view token, std::string_view type,
                                  const std::vector<std::string>& member_ids,
                                  std::optional<std::string_view> title = std::nullopt) const;
  HttpResponse GetConversation(std::string_view token, std::string_view conversation_id) const;
  HttpResponse ListConversations(std::string_view token,
                                 std::optional<int64_t> limit = std::nullopt,
                                 std::optional<std::string_view> cursor = std::nullopt) const;
  HttpResponse AddMembers(std::string_view token, std::string_view conversation_id,
                          const std::vector<std::string>& user_ids) const;
  HttpResponse RemoveMember(std::string_view token, std::string_view conversation_id,
                            std::string_view user_id) const;
  HttpResponse History(std::string_view token, std::string_view conversation_id,
                       const HistoryQuery& q = {}) const;
  HttpResponse Receipts(std::string_view token, std::string_view conversation_id,
                        int64_t seq) const;
  HttpResponse Search(std::string_view token, std::string_view q,
                      std::optional<std::string_view> conversation_id = std::nullopt,
                      std::optional<int64_t> limit = std::nullopt) const;

 private:
  Endpoint ep_;
};

// ---- WebSocket frames the client sends ---------------------------------------------

struct OutgoingMessage {
  std::string client_msg_id;
  std::string conversation_id;
  std::string content;
  std::string content_type = "text";
  std::optional<int64_t> sent_timestamp_ms = std::nullopt;  // now when unset
  std::optional<std::string> sender_id = std::nullopt;
  std::optional<std::string> media_url = std::nullopt;
  std::optional<std::string> target_message_id = std::nullopt;
  std::optional<std::string> reply_to = std::nullopt;
};

std::string SendMessageFrame(const OutgoingMessage& m);
// status: "DELIVERED" or "READ". receipt_timestamp_ms defaults to now.
std::string MessageReceiptFrame(std::string_view message_id, std::string_view conversation_id,
                                std::string_view status,
                                std::optional<int64_t> up_to_seq = std::nullopt,
                                std::optional<int64_t> receipt_timestamp_ms = std::nullopt);
// Empty cursors: `"cursors":{}`; nullopt: no cursors field at all.
std::string ResumeFrame(const std::optional<std::map<std::string, int64_t>>& cursors);
std::string PingFrame();
std::string TypingFrame(std::string_view conversation_id, std::string_view state);
std::string PresenceSubscribeFrame(const std::vector<std::string>& user_ids);

// A fresh client_msg_id (printable ASCII, well under 64 characters).
std::string NewClientMsgId();
int64_t NowMs();

// ---- WebSocket client --------------------------------------------------------------

struct WsConnectOptions {
  std::string target = "/v1/ws";
  // Empty: no credentials at all. Otherwise sent as Authorization: Bearer, or as the
  // access_token query parameter when token_in_query.
  std::string access_token;
  bool token_in_query = false;
  // Sent as given (after the above); e.g. a malformed Authorization header.
  Headers extra_headers;
  Millis timeout = kDefaultTimeout;  // TCP connect + TLS handshake + upgrade
  // wss:// when tls.enabled.
  TlsConfig tls;
  // Largest message accepted from the server before the client fails the stream.
  size_t max_incoming_message = 64u << 20;
};

struct WsFrame {
  enum class Kind { kText, kBinary, kClose, kTimeout, kError };
  Kind kind = Kind::kTimeout;
  std::string data;                    // payload for kText / kBinary
  std::optional<uint16_t> close_code;  // kClose: the peer's code (1005 when it sent none)
  std::string close_reason;            // kClose
  std::string error;                   // kError: why the stream ended without a close frame

  bool is_text() const { return kind == Kind::kText; }
  Json json() const { return Json::Parse(data); }
  // One line for failure messages.
  std::string Describe() const;
};

// "kClose", ... so that gtest failure messages name the kind.
std::ostream& operator<<(std::ostream& os, WsFrame::Kind k);

class WsClient {
 public:
  WsClient();
  ~WsClient();  // closes politely (1000) if still open, waiting at most ~1 s
  WsClient(WsClient&&) noexcept;
  WsClient& operator=(WsClient&&) noexcept;
  WsClient(const WsClient&) = delete;
  WsClient& operator=(const WsClient&) = delete;

  // TCP connect (+ TLS handshake when opts.tls.enabled) + upgrade. True on 101.
  // Otherwise upgrade_status() holds the HTTP status the server answered (e.g. 401; 0
  // if none) and error() why.
  bool Connect(const std::string& host, uint16_t port, const WsConnectOptions& opts);
  // Connect to `ep` with its TLS settings (opts.tls is ignored).
  bool Connect(const Endpoint& ep, WsConnectOptions opts);
  int upgrade_status() const;
  const std::string& upgrade_body() const;  // response body of a refused upgrade
  const Headers& upgrade_headers() const;
  const std::string& error() const;

  // True from a successful Connect until a close frame, an error or Close().
  bool is_open() const;

  // Sends one text/binary message. False (see error()) when the stream is not open or
  // the write fails or takes longer than `timeout`.
  bool Send(std::string_view text, Millis timeout = kDefaultTimeout);
  bool SendBinary(std::string_view bytes, Millis timeout = kDefaultTimeout);
  // Writes one frame byte-for-byte as given, bypassing the WebSocket library's checks,
  // for bad-input tests: any opcode (0x1 text, 0x2 binary, 0x8 close, ...), any
  // payload (invalid UTF-8, oversize), FIN and RSV bits, masked or not. The payload is
  // masked with a random key when `masked`, as RFC 6455 requires of clients.
  struct RawFrame {
    uint8_t opcode = 0x1;
    std::string payload;
    bool fin = true;
    uint8_t rsv = 0;  // bits 4..6 of the first byte, e.g. 0x40 for RSV1
    bool masked = true;
  };
  bool SendRaw(const RawFrame& f, Millis timeout = kDefaultTimeout);
  // Arbitrary bytes straight onto the TCP stream (partial frames, garbage); over TLS,
  // onto the TLS stream (encrypted as usual).
  bool SendRawBytes(std::string_view bytes, Millis timeout = kDefaultTimeout);

  // The next event from the server, waiting at most `timeout`. Frames are read
  // continuously and queued, so nothing is lost between calls. After kClose or kError
  // every further call returns the same kind again (without data).
  WsFrame RecvFrame(Millis timeout = kDefaultTimeout);
  // The next text payload; nullopt on timeout, close or error (see CloseCode()).
  std::optional<std::string> Recv(Millis timeout = kDefaultTimeout);
  // The next frame whose "event" equals `event`, skipping others (appended to
  // `skipped` when given). Invalid Json on timeout/close/error.
  Json WaitForEvent(std::string_view event, Millis timeout = kDefaultTimeout,
                    std::vector<Json>* skipped = nullptr);
  // Every text frame arriving within `window` (e.g. to check that nothing arrives).
  std::vector<Json> Drain(Millis window);

  // The close code the server sent, once a close frame has been received.
  std::optional<uint16_t> CloseCode() const;
  const std::string& CloseReason() const;

  // Starts the closing handshake and waits (bounded) for the server's close frame.
  // True if the handshake completed.
  bool Close(uint16_t code = 1000, std::string_view reason = {}, Millis timeout = Millis(3000));
  // Drops the TCP connection without a closing handshake (a crashed client).
  void Abort();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sb::client
