// A catalogue of hostile and broken input over HTTP, the WebSocket upgrade and frames,
// beyond what bad_input_test.cpp covers (malformed JSON frames, missing fields, wrong
// field types, invalid client_msg_id, unknown events, content over 16 KiB, frames over
// 64 KiB, invalid UTF-8 and a forged sender_id live there and are not repeated here).
//
// Every case asserts the specific answer the server gives (status and error code, error
// frame or close code) and that a pair of well-behaved users, connected before the bad
// input arrived, still chats afterwards: the server must keep serving everyone else.
// Where the answer is a choice the contract does not spell out, the comment says what
// the server does and why that is acceptable.
#include <cstdio>
#include <thread>

#include "test_support.h"

namespace sb::test {
namespace {

using client::Headers;
using client::HttpResponse;
using client::OutgoingMessage;
using client::WsFrame;
using SteadyClock = std::chrono::steady_clock;

const std::string kPing = R"({"event":"ping"})";

// An HTTP/1.1 request as raw bytes, with Host and Connection: close unless the
// caller's own lines say otherwise. `head_lines` are complete lines without CRLF.
std::string RawRequest(std::string_view request_line, const std::vector<std::string>& head_lines,
                       std::string_view body = {}) {
  std::string r = std::string(request_line) + "\r\nHost: 127.0.0.1\r\n";
  bool has_connection = false;
  for (const std::string& l : head_lines) {
    if (l.rfind("Connection:", 0) == 0) has_connection = true;
    r += l + "\r\n";
  }
  if (!has_connection) r += "Connection: close\r\n";
  r += "\r\n";
  r += body;
  return r;
}

class BadInputCatalogueTest : public SharedServerTest {
 protected:
  void SetUp() override {
    SharedServerTest::SetUp();
    if (HasFatalFailure()) return;
    RestClient api = Api();
    ASSERT_NO_FATAL_FAILURE(bystanders_.Start(api));
    ASSERT_NO_FATAL_FAILURE(CreateUser(api, "cata", &a_));
    ASSERT_NO_FATAL_FAILURE(CreateUser(api, "catb", &b_));
    ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a_, b_, &conv_ab_));
  }

  void TearDown() override {
    if (!HasFatalFailure() && server().CheckAlive()) bystanders_.ExpectChat("after the case");
    SharedServerTest::TearDown();
  }

  HttpResponse Raw(std::string_view bytes) {
    return RawHttp(server().host(), server().port(), bytes);
  }

  // Expects `r` to be the contract's error answer: `status` and {"error":{"code",...}}.
  static void ExpectError(const HttpResponse& r, int status, std::string_view code,
                          std::string_view what) {
    SCOPED_TRACE(std::string(what));
    EXPECT_EQ(r.status, status) << r.Describe() << " " << r.error;
    EXPECT_EQ(r.ErrorCode(), code) << r.Describe();
    EXPECT_TRUE(r.json()["error"]["message"].IsString()) << r.Describe();
  }

  // A WsClient for `u` whose welcome has been read, and an error-frame expectation.
  void ExpectErrorFrame(WsClient& ws, const std::string& frame, std::string_view code,
                        Json* out = nullptr) {
    SCOPED_TRACE("frame: " + frame.substr(0, 200));
    ASSERT_TRUE(ws.Send(frame)) << ws.error();
    Json err = ws.WaitForEvent("error", kFrameTimeout);
    EXPECT_EQ(err["code"].Str(), std::string(code)) << err;
    EXPECT_TRUE(err["message"].IsString()) << err;
    if (out) *out = err;
  }

  // The connection still answers an application ping.
  static void ExpectPong(WsClient& ws) {
    ASSERT_TRUE(ws.Send(kPing)) << ws.error();
    Json pong = ws.WaitForEvent("pong", kFrameTimeout);
    EXPECT_TRUE(pong.valid()) << "the connection stopped answering: " << pong.error();
  }

  Bystanders bystanders_;
  TestUser a_, b_;
  std::string conv_ab_;
};

// ---- HTTP: request line and head -------------------------------------------------

// Kind 1: a request line that is not HTTP.
TEST_F(BadInputCatalogueTest, RequestLineGarbage) {
  for (std::string_view bytes : {std::string_view("GARBAGE\r\n\r\n"),
                                 std::string_view("GET\r\n\r\n"),
                                 std::string_view("\x01\x02\x03 / HTTP/1.1\r\n\r\n"),
                                 std::string_view("GET /healthz HTTP/1.1 extra words\r\n\r\n"),
                                 std::string_view("GET /healthz FTP/1.1\r\n\r\n")}) {
    ExpectError(Raw(bytes), 400, "bad_request", "request: " + std::string(bytes.substr(0, 40)));
  }
}

// Kind 2: a method nobody defines. Beast accepts any token as a method; our router
// knows none of them, so an authenticated caller gets 404 (an unauthenticated one
// gets 401 first: authentication precedes routing for every non-public call).
TEST_F(BadInputCatalogueTest, AbsurdMethod) {
  RestClient api = Api();
  const std::string method = "FROBNICATE" + std::string(200, 'X');
  ExpectError(api.Request(method, "/v1/conversations", {}, a_.access_token), 404, "not_found",
              "absurd method with a token");
  ExpectError(api.Request(method, "/v1/conversations"), 401, "unauthorized",
              "absurd method without a token");
  // A method with characters HTTP does not allow in a token is a malformed request.
  ExpectError(Raw(RawRequest("GE(T /healthz HTTP/1.1", {})), 400, "bad_request",
              "method with a separator character");
}

// Kind 3: a header line without a colon.
TEST_F(BadInputCatalogueTest, HeaderLineWithoutColon) {
  ExpectError(Raw(RawRequest("GET /healthz HTTP/1.1", {"ThisLineHasNoColon"})), 400,
              "bad_request", "header without colon");
  ExpectError(Raw(RawRequest("GET /healthz HTTP/1.1", {": value without a name"})), 400,
              "bad_request", "header without a name");
}

// Kind 4: a head over server.max_header_bytes (8 KiB): 431 with too_large.
TEST_F(BadInputCatalogueTest, HeadersOver8KiBAre431) {
  ExpectError(Raw(RawRequest("GET /healthz HTTP/1.1", {"X-Filler: " + std::string(9000, 'a')})),
              431, "too_large", "one 9,000-byte header");
  std::vector<std::string> many;
  for (int i = 0; i < 200; ++i) many.push_back("X-H" + std::to_string(i) + ": " + std::string(40, 'b'));
  ExpectError(Raw(RawRequest("GET /healthz HTTP/1.1", many)), 431, "too_large",
              "200 headers of 45 bytes");
  // Just under the limit is served.
  HttpResponse ok = Raw(RawRequest("GET /healthz HTTP/1.1", {"X-Filler: " + std::string(7000, 'a')}));
  EXPECT_EQ(ok.status, 200) << ok.Describe() << ok.error;
}

// Kind 5: a body over limits.max_rest_body_bytes (1 MiB): 413 too_large, decided on the
// declared length before any body byte is read (only the head is sent).
TEST_F(BadInputCatalogueTest, BodyOverRestLimitIs413) {
  ExpectError(Raw(RawRequest("POST /v1/users HTTP/1.1",
                             {"Content-Type: application/json", "Content-Length: 1048577"})),
              413, "too_large", "declared 1 MiB + 1");
  ExpectError(Raw(RawRequest("POST /v1/users HTTP/1.1",
                             {"Content-Type: application/json",
                              "Content-Length: 99999999999999999"})),
              413, "too_large", "declared 100 PB");
}

// Kind 6: Content-Length shorter than the body: the server takes the declared bytes as
// the body (not JSON: 400), and the rest as the next request on the connection, which
// is not HTTP (400) and ends the connection.
TEST_F(BadInputCatalogueTest, ContentLengthShorterThanBody) {
  RawConn c;
  ASSERT_TRUE(c.Connect(server().host(), server().port())) << c.error();
  ASSERT_TRUE(c.Write(RawRequest("POST /v1/users HTTP/1.1",
                                 {"Content-Type: application/json", "Content-Length: 5",
                                  "Connection: keep-alive"},
                                 R"({"username":"smuggled_user","password":"pw-long-enough"})")));
  HttpResponse first = ReadHttpResponse(c);
  ExpectError(first, 400, "bad_request", "the declared 5 bytes are not JSON");
  HttpResponse second = ReadHttpResponse(c);
  ExpectError(second, 400, "bad_request", "the rest of the body read as a request");
  EXPECT_TRUE(c.WaitClosed(Millis(3000))) << "the server keeps a desynchronized connection";
  // Nothing was created from the smuggled bytes.
  EXPECT_EQ(Api().Login("smuggled_user", "pw-long-enough").status, 401);
}

// Kind 7: a negative or non-numeric Content-Length.
TEST_F(BadInputCatalogueTest, NegativeOrGarbageContentLength) {
  for (std::string cl : {"-1", "abc", "1e3", "0x10", "5, 6"}) {
    ExpectError(Raw(RawRequest("POST /v1/users HTTP/1.1", {"Content-Length: " + cl}, "{}")), 400,
                "bad_request", "Content-Length: " + cl);
  }
}

// Kind 8: two different Content-Length headers (request smuggling): refused, never
// guessed.
TEST_F(BadInputCatalogueTest, ConflictingContentLengths) {
  ExpectError(Raw(RawRequest("POST /v1/users HTTP/1.1", {"Content-Length: 2", "Content-Length: 40"},
                             "{}")),
              400, "bad_request", "Content-Length 2 and 40");
}

// Kind 9: chunked encoding garbage.
TEST_F(BadInputCatalogueTest, ChunkedGarbage) {
  for (std::string body : {std::string("ZZZ\r\n{}\r\n0\r\n\r\n"),    // size not hex
                           std::string("2\r\n{}XX0\r\n\r\n"),          // no CRLF after data
                           std::string("-2\r\n{}\r\n0\r\n\r\n"),       // negative size
                           std::string("fffffffffffffffffff\r\n")}) {  // size overflows
    ExpectError(Raw(RawRequest("POST /v1/users HTTP/1.1", {"Transfer-Encoding: chunked"}, body)),
                400, "bad_request", "chunked body: " + body.substr(0, 20));
  }
  // A well-formed chunked body is accepted (and then judged as JSON: this one is a
  // valid registration).
  const std::string name = UniqueName("chunk");
  const std::string json =
      R"({"username":")" + name + R"(","password":")" + std::string(kPassword) + R"("})";
  char size[32];
  std::snprintf(size, sizeof size, "%zx", json.size());
  HttpResponse ok = Raw(RawRequest("POST /v1/users HTTP/1.1",
                                   {"Transfer-Encoding: chunked", "Content-Type: application/json"},
                                   std::string(size) + "\r\n" + json + "\r\n0\r\n\r\n"));
  EXPECT_EQ(ok.status, 201) << ok.Describe() << ok.error;
}

// Kind 10: Content-Length together with Transfer-Encoding (RFC 9112 §6.1: a server MAY
// reject it; if not, chunked wins and the connection must close after the response).
// This server's parser rejects it outright.
TEST_F(BadInputCatalogueTest, ContentLengthWithTransferEncoding) {
  ExpectError(Raw(RawRequest("POST /v1/users HTTP/1.1",
                             {"Content-Length: 4", "Transfer-Encoding: chunked"},
                             "2\r\n{}\r\n0\r\n\r\n")),
              400, "bad_request", "both framings");
}

// ---- REST bodies -----------------------------------------------------------------

// Kind 11: POST /v1/users with bodies that are not a valid registration.
TEST_F(BadInputCatalogueTest, RegistrationGarbage) {
  RestClient api = Api();
  const std::string pw = std::string(kPassword);
  struct Case {
    const char* what;
    std::string body;
  };
  for (const Case& c : std::vector<Case>{
           {"not JSON", "username=x&password=y"},
           {"JSON array", R"(["u","p"])"},
           {"JSON null", "null"},
           {"empty body", ""},
           {"wrong types", R"({"username":5,"password":true})"},
           {"username object", R"({"username":{"a":1},"password":")" + pw + R"("})"},
           {"huge username", R"({"username":")" + std::string(10000, 'u') + R"(","password":")" + pw + R"("})"},
           {"unicode username", R"({"username":"j\u00fcrgen_)" + UniqueName("u") + R"(","password":")" + pw + R"("})"},
           {"raw UTF-8 username", "{\"username\":\"\xc3\xbc" + UniqueName("u") + R"(","password":")" + pw + R"("})"},
           {"username with space", R"({"username":"a b c","password":")" + pw + R"("})"},
           {"username too short", R"({"username":"ab","password":")" + pw + R"("})"},
           {"missing password", R"({"username":")" + UniqueName("nopw") + R"("})"},
           {"null password", R"({"username":")" + UniqueName("nopw") + R"(","password":null})"},
           {"short password", R"({"username":")" + UniqueName("shortpw") + R"(","password":"1234567"})"},
           {"display_name over 128 bytes", R"({"username":")" + UniqueName("dn") + R"(","password":")" + pw +
                                               R"(","display_name":")" + std::string(129, 'd') + R"("})"},
       }) {
    ExpectError(api.Request("POST", "/v1/users", c.body), 400, "bad_request", c.what);
  }
}

// Kind 12: login as an unknown user and with a wrong password: the same 401, byte for
// byte, so the answer does not reveal who has an account.
TEST_F(BadInputCatalogueTest, LoginUnknownUserAndWrongPasswordLookAlike) {
  RestClient api = Api();
  HttpResponse unknown = api.Login(UniqueName("nobody"), kPassword);
  HttpResponse wrong = api.Login(a_.username, "not-the-password");
  ExpectError(unknown, 401, "unauthorized", "unknown user");
  ExpectError(wrong, 401, "unauthorized", "wrong password");
  EXPECT_EQ(unknown.body, wrong.body);
  // Malformed login bodies are 400, not 401: nothing was checked.
  ExpectError(api.Request("POST", "/v1/sessions", R"({"username":"x"})"), 400, "bad_request",
              "login without password");
  ExpectError(api.Request("POST", "/v1/sessions", "[]"), 400, "bad_request", "login array");
}

// Kind 13: refresh with a garbage, empty, oversized or missing token.
TEST_F(BadInputCatalogueTest, RefreshWithGarbageTokens) {
  RestClient api = Api();
  ExpectError(api.Refresh("garbage"), 401, "unauthorized", "garbage refresh token");
  ExpectError(api.Refresh(""), 401, "unauthorized", "empty refresh token");
  ExpectError(api.Refresh(std::string(300, 'r')), 401, "unauthorized", "300-byte refresh token");
  // An access token is not a refresh token.
  ExpectError(api.Refresh(a_.access_token), 401, "unauthorized", "access token as refresh token");
  ExpectError(api.Request("POST", "/v1/sessions/refresh", "{}"), 400, "bad_request",
              "no refresh_token field");
  ExpectError(api.Request("POST", "/v1/sessions/refresh", R"({"refresh_token":42})"), 400,
              "bad_request", "refresh_token not a string");
  // The real one still works after all that.
  EXPECT_EQ(api.Refresh(a_.refresh_token).status, 200);
}

// ---- REST routes and ids ---------------------------------------------------------

// Kind 14: unknown routes.
TEST_F(BadInputCatalogueTest, UnknownRouteIs404) {
  RestClient api = Api();
  for (const char* target : {"/v1/nope", "/v2/conversations", "/favicon.ico", "/app", "/v1", "/v1/users/x/y/z",
                             "/healthz/extra"}) {
    ExpectError(api.Request("GET", target, {}, a_.access_token), 404, "not_found", target);
  }
}

// Kind 15: a known route with the wrong method. The server answers 404 not_found
// (no route matches method and path) rather than 405 with Allow: the contract only
// asks for "a fitting HTTP status" and the error shape.
TEST_F(BadInputCatalogueTest, WrongMethodOnKnownRoute) {
  RestClient api = Api();
  struct Case {
    const char* method;
    std::string target;
  };
  for (const Case& c : std::vector<Case>{{"DELETE", "/v1/conversations"},
                                         {"PUT", "/v1/conversations/" + conv_ab_},
                                         {"GET", "/v1/sessions"},
                                         {"GET", "/v1/sessions/refresh"},
                                         {"PATCH", "/v1/users/" + a_.user_id},
                                         {"POST", "/v1/conversations/" + conv_ab_ + "/messages"}}) {
    ExpectError(api.Request(c.method, c.target, "{}", a_.access_token), 404, "not_found",
                std::string(c.method) + " " + c.target);
  }
}

// Kind 16: path traversal in ids. Percent-decoding happens before routing, and an id
// that is not a conversation id is "no such conversation", like any other.
TEST_F(BadInputCatalogueTest, PathTraversalInIds) {
  RestClient api = Api();
  HttpResponse none = api.GetConversation(a_.access_token, "conv_0000000000000001");
  ExpectError(none, 404, "not_found", "a conversation that does not exist");
  for (const std::string& target : std::vector<std::string>{
           "/v1/conversations/..%2f..", "/v1/conversations/..%2f..%2fusers%2f" + a_.user_id,
        "/v1/conversations/%2e%2e/messages", "/v1/conversations/..%2f" + conv_ab_ + "/messages",
        "/v1/conversations/" + conv_ab_ + "%2f..%2f..%2fhealthz",
        "/v1/users/..%2f..%2fhealthz", "/v1/conversations/%00"}) {
    HttpResponse r = api.Request("GET", target, {}, a_.access_token);
    ExpectError(r, 404, "not_found", target);
  }
  // The same body as the plain nonexistent conversation: nothing about the path leaks.
  EXPECT_EQ(api.Request("GET", "/v1/conversations/%2e%2e", {}, a_.access_token).body, none.body);
}

// Kind 16b: attachments. Ids are validated before anything touches the store or the
// filesystem: traversal, short, non-hex and upper-case ids get exactly the 404 of an
// unknown id. An upload is judged on its head: no token 401 and a declared size over
// the limit 413 (only the head is sent: the answers come without any body), a
// Content-Type that is not a media type 400. A send_message whose media_url is a
// traversal under /v1/attachments/ is not_found.
TEST_F(BadInputCatalogueTest, AttachmentIdsAndUploadHeads) {
  RestClient api = Api();
  HttpResponse none = api.Request("GET", "/v1/attachments/att_" + std::string(64, '0'), {}, a_.access_token);
  ExpectError(none, 404, "not_found", "an attachment that does not exist");
  for (const std::string& target : std::vector<std::string>{
           "/v1/attachments/..%2f..%2fstore%2fCURRENT", "/v1/attachments/att_..%2f..%2fkeys",
           "/v1/attachments/att_1234", "/v1/attachments/att_" + std::string(64, 'z'),
           "/v1/attachments/att_" + std::string(64, 'F'), "/v1/attachments/%00"}) {
    HttpResponse r = api.Request("GET", target, {}, a_.access_token);
    ExpectError(r, 404, "not_found", target);
    EXPECT_EQ(r.body, none.body) << target;
  }
  ExpectError(Raw(RawRequest("POST /v1/attachments HTTP/1.1", {"Content-Type: image/png", "Content-Length: 26214400"})),
              401, "unauthorized", "upload without a token, head only");
  ExpectError(Raw(RawRequest("POST /v1/attachments HTTP/1.1",
                             {"Authorization: Bearer " + a_.access_token, "Content-Length: 26214401"})),
              413, "too_large", "declared one byte over the attachment limit, head only");
  ExpectError(Raw(RawRequest("POST /v1/attachments HTTP/1.1",
                             {"Authorization: Bearer " + a_.access_token, "Content-Type: no-slash",
                              "Content-Length: 3"},
                             "abc")),
              400, "bad_request", "a Content-Type that is not a media type");
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a_, &ws));
  OutgoingMessage m;
  m.client_msg_id = client::NewClientMsgId();
  m.conversation_id = conv_ab_;
  m.content_type = "file";
  m.media_url = "/v1/attachments/../../../etc/passwd";
  ASSERT_NO_FATAL_FAILURE(ExpectErrorFrame(ws, client::SendMessageFrame(m), "not_found"));
}

// Kind 17: ids of the wrong type.
TEST_F(BadInputCatalogueTest, IdsOfTheWrongType) {
  RestClient api = Api();
  HttpResponse none = api.GetConversation(a_.access_token, "conv_0000000000000001");
  HttpResponse user_as_conv = api.GetConversation(a_.access_token, b_.user_id);
  ExpectError(user_as_conv, 404, "not_found", "a usr_ id as a conversation id");
  EXPECT_EQ(user_as_conv.body, none.body) << "must look exactly like a missing conversation";
  ExpectError(api.History(a_.access_token, a_.user_id), 404, "not_found", "usr_ id in history");
  ExpectError(api.GetUser(a_.access_token, conv_ab_), 404, "not_found", "a conv_ id as a user id");
  ExpectError(api.Request("GET", "/v1/conversations/" + conv_ab_ + "/messages/abc/receipts", {},
                          a_.access_token),
              404, "not_found", "a non-numeric seq");
  ExpectError(api.Request("GET", "/v1/conversations/" + conv_ab_ + "/messages/-1/receipts", {},
                          a_.access_token),
              404, "not_found", "a negative seq");
}

// Kind 18: history queries that make no sense (docs/protocol.md, "Messages as built").
TEST_F(BadInputCatalogueTest, HistoryQueryGarbage) {
  RestClient api = Api();
  const std::string base = "/v1/conversations/" + conv_ab_ + "/messages";
  for (const char* q : {"?before_seq=-1", "?after_seq=-5", "?limit=abc", "?limit=0", "?limit=-3",
                        "?before_seq=5&after_seq=1", "?after_seq=18446744073709551616",
                        "?before_seq=1.5", "?limit="}) {
    ExpectError(api.Request("GET", base + q, {}, a_.access_token), 400, "bad_request", q);
  }
  // An oversized limit is capped, not refused.
  HttpResponse capped = api.Request("GET", base + "?limit=1000000", {}, a_.access_token);
  EXPECT_EQ(capped.status, 200) << capped.Describe();
  EXPECT_TRUE(capped.json()["messages"].IsArray()) << capped.Describe();
}

// Kind 19: conversation creation with impossible members.
TEST_F(BadInputCatalogueTest, ConversationCreateGarbage) {
  RestClient api = Api();
  // 1,001 other members (well-formed ids): over the 1,000-member limit with the caller.
  std::vector<std::string> many;
  for (int i = 1; i <= 1001; ++i) {
    char id[32];
    std::snprintf(id, sizeof id, "usr_%016x", i);
    many.push_back(id);
  }
  ExpectError(api.CreateConversation(a_.access_token, "group", many), 400, "bad_request",
              "1,001 members");
  ExpectError(api.CreateConversation(a_.access_token, "direct", {a_.user_id}), 400, "bad_request",
              "direct with self only");
  ExpectError(api.CreateConversation(a_.access_token, "direct", {}), 400, "bad_request",
              "direct with nobody");
  TestUser c;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "catc", &c));
  ExpectError(api.CreateConversation(a_.access_token, "direct", {b_.user_id, c.user_id}), 400,
              "bad_request", "direct with two others");
  ExpectError(api.CreateConversation(a_.access_token, "group", {"usr_00000000deadbeef"}), 400,
              "bad_request", "unknown member");
  ExpectError(api.CreateConversation(a_.access_token, "group", {"not-an-id"}), 400, "bad_request",
              "malformed member id");
  ExpectError(api.CreateConversation(a_.access_token, "group", {conv_ab_}), 400, "bad_request",
              "a conv_ id as a member");
  ExpectError(api.CreateConversation(a_.access_token, "triangle", {b_.user_id}), 400,
              "bad_request", "unknown type");
  ExpectError(api.Request("POST", "/v1/conversations", R"({"type":"group","member_ids":"usr_x"})",
                          a_.access_token),
              400, "bad_request", "member_ids not an array");
  ExpectError(api.Request("POST", "/v1/conversations", R"({"type":"group","member_ids":[1,2]})",
                          a_.access_token),
              400, "bad_request", "member_ids of numbers");
  ExpectError(api.CreateConversation(a_.access_token, "group", {b_.user_id}, std::string(257, 't')),
              400, "bad_request", "title over 256 bytes");
}

// ---- The WebSocket upgrade -------------------------------------------------------

// Kind 20: a token in both the Authorization header and the access_token query
// parameter. The header wins, and is not merely preferred: a bad header is refused even
// when the query holds a good token (no fallback that could mask a broken client).
TEST_F(BadInputCatalogueTest, TokenInHeaderAndQuery) {
  RestClient api = Api();
  {
    UpgradeSpec s;
    s.token = a_.access_token;
    s.target = "/v1/ws?access_token=garbage";
    RawWs ws;
    EXPECT_TRUE(ws.Open(api.host(), api.port(), UpgradeRequest(s, api.host(), api.port())))
        << "a good header with a bad query token: " << ws.upgrade().Describe();
    WireFrame f;
    ASSERT_EQ(ws.Next(&f), RawWs::Got::kFrame);
    Json welcome = Json::Parse(f.payload);
    EXPECT_EQ(welcome["user_id"].Str(), a_.user_id) << f.Describe();
  }
  {
    UpgradeSpec s;
    s.token = "garbage";
    s.target = "/v1/ws?access_token=" + client::UrlEncode(a_.access_token);
    RawWs ws;
    EXPECT_FALSE(ws.Open(api.host(), api.port(), UpgradeRequest(s, api.host(), api.port())));
    ExpectError(ws.upgrade(), 401, "unauthorized", "a bad header with a good query token");
  }
  {
    // Two different good tokens: the header's user is the one connected.
    UpgradeSpec s;
    s.token = a_.access_token;
    s.target = "/v1/ws?access_token=" + client::UrlEncode(b_.access_token);
    RawWs ws;
    ASSERT_TRUE(ws.Open(api.host(), api.port(), UpgradeRequest(s, api.host(), api.port())))
        << ws.upgrade().Describe();
    WireFrame f;
    ASSERT_EQ(ws.Next(&f), RawWs::Got::kFrame);
    EXPECT_EQ(Json::Parse(f.payload)["user_id"].Str(), a_.user_id) << f.Describe();
  }
}

// Kind 21: bad tokens on the upgrade: garbage, truncated, wrong scheme, a tampered
// payload. (An expired token cannot be made without the server's key.) All 401 with the
// JSON error body, and no upgrade.
TEST_F(BadInputCatalogueTest, BadTokensOnUpgrade) {
  RestClient api = Api();
  const std::string& t = a_.access_token;
  std::string tampered = t;
  size_t dot = tampered.find('.');
  ASSERT_NE(dot, std::string::npos);
  tampered[dot + 5] = tampered[dot + 5] == 'A' ? 'B' : 'A';
  struct Case {
    const char* what;
    Headers headers;
    std::string target;
  };
  for (const Case& c : std::vector<Case>{
           {"garbage", {{"Authorization", "Bearer garbage"}}, "/v1/ws"},
           {"truncated", {{"Authorization", "Bearer " + t.substr(0, t.size() - 10)}}, "/v1/ws"},
           {"header and payload only", {{"Authorization", "Bearer " + t.substr(0, t.rfind('.'))}}, "/v1/ws"},
           {"tampered payload", {{"Authorization", "Bearer " + tampered}}, "/v1/ws"},
           {"Basic scheme", {{"Authorization", "Basic " + StdBase64("a:b")}}, "/v1/ws"},
           {"empty bearer", {{"Authorization", "Bearer "}}, "/v1/ws"},
           {"garbage in query", {}, "/v1/ws?access_token=garbage"},
           {"no token at all", {}, "/v1/ws"},
       }) {
    UpgradeSpec s;
    s.target = c.target;
    s.extra = c.headers;
    RawWs ws;
    EXPECT_FALSE(ws.Open(api.host(), api.port(), UpgradeRequest(s, api.host(), api.port())))
        << c.what;
    ExpectError(ws.upgrade(), 401, "unauthorized", c.what);
  }
}

// Kind 22: an upgrade on another path: 404 with the JSON body, no upgrade, even with a
// valid token.
TEST_F(BadInputCatalogueTest, UpgradeOnAnotherPath) {
  RestClient api = Api();
  for (const char* target : {"/v1/ws/extra", "/v1/wsx", "/v1/ws/", "/ws", "/v1/ws%2fextra"}) {
    UpgradeSpec s;
    s.token = a_.access_token;
    s.target = target;
    RawWs ws;
    EXPECT_FALSE(ws.Open(api.host(), api.port(), UpgradeRequest(s, api.host(), api.port())))
        << target;
    ExpectError(ws.upgrade(), 404, "not_found", target);
  }
}

// ---- Frames ------------------------------------------------------------------------

// Kind 23: 100 frames of garbage JSON in one burst: one error each, in order, and the
// connection survives.
TEST_F(BadInputCatalogueTest, GarbageJsonBurst) {
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(Api(), a_, &ws));
  for (int i = 0; i < 100; ++i) {
    std::string junk = (i % 4 == 0)   ? "{\"event\":" + std::to_string(i)
                       : (i % 4 == 1) ? std::string(static_cast<size_t>(i), '}')
                       : (i % 4 == 2) ? "nul" + std::to_string(i)
                                      : "[\"event\",\"ping\"," + std::to_string(i) + "]";
    ASSERT_TRUE(ws.Send(junk)) << "frame " << i << ": " << ws.error();
  }
  for (int i = 0; i < 100; ++i) {
    Json err = ws.WaitForEvent("error", kFrameTimeout);
    ASSERT_EQ(err["code"].Str(), "bad_request"s) << "answer " << i << ": " << err;
  }
  ASSERT_NO_FATAL_FAILURE(ExpectPong(ws));
}

// Kind 24: deeply nested JSON (10,000 levels): refused by the parser's depth limit, no
// stack exhaustion, the connection survives.
TEST_F(BadInputCatalogueTest, DeeplyNestedJson) {
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(Api(), a_, &ws));
  ExpectErrorFrame(ws, std::string(10000, '['), "bad_request");
  ExpectErrorFrame(ws, std::string(10000, '[') + std::string(10000, ']'), "bad_request");
  std::string objects;
  for (int i = 0; i < 10000; ++i) objects += "{\"a\":";
  objects += "1" + std::string(10000, '}');
  ExpectErrorFrame(ws, objects, "bad_request");
  // Deep nesting inside an otherwise valid send_message: the unknown field is still
  // parsed, so this is refused too, and nothing is stored.
  std::string nested_field = R"({"event":"send_message","client_msg_id":"deep-1","conversation_id":")" +
                             conv_ab_ + R"(","content":"x","extra":)" + std::string(5000, '[') +
                             std::string(5000, ']') + "}";
  ExpectErrorFrame(ws, nested_field, "bad_request");
  ASSERT_NO_FATAL_FAILURE(ExpectPong(ws));
  std::vector<Json> history;
  ASSERT_NO_FATAL_FAILURE(FetchAllHistory(Api(), a_.access_token, conv_ab_, &history));
  EXPECT_EQ(history.size(), 0u);
}

// Kind 25: a frame of exactly 64 KiB of whitespace: within the frame limit, so it is
// parsed (an empty document: bad_request), not closed with 1009.
TEST_F(BadInputCatalogueTest, FrameOf64KiBWhitespace) {
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(Api(), a_, &ws));
  ExpectErrorFrame(ws, std::string(64 * 1024, ' '), "bad_request");
  ExpectErrorFrame(ws, std::string(64 * 1024, '\n'), "bad_request");
  ASSERT_NO_FATAL_FAILURE(ExpectPong(ws));
}

// Kind 26: send_message into another user's conversation: forbidden, with exactly the
// answer a nonexistent or malformed conversation id gets (nothing reveals that it
// exists), and nothing stored.
TEST_F(BadInputCatalogueTest, SendToAnotherUsersConversation) {
  RestClient api = Api();
  TestUser c;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "catc", &c));
  std::string conv_bc;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, b_, c, &conv_bc));
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a_, &ws));
  std::vector<std::string> messages;
  for (const std::string& conv : {conv_bc, std::string("conv_00000000000000ff"), std::string("conv_../x")}) {
    OutgoingMessage m;
    m.client_msg_id = client::NewClientMsgId();
    m.conversation_id = conv;
    m.content = "let me in";
    Json err;
    ASSERT_NO_FATAL_FAILURE(ExpectErrorFrame(ws, client::SendMessageFrame(m), "forbidden", &err));
    EXPECT_EQ(err["client_msg_id"].Str(), m.client_msg_id) << err;
    messages.push_back(err["message"].StrOr(""));
  }
  EXPECT_EQ(messages[0], messages[1]) << "someone else's conversation vs a nonexistent one";
  EXPECT_EQ(messages[0], messages[2]) << "someone else's conversation vs a malformed id";
  std::vector<Json> history;
  ASSERT_NO_FATAL_FAILURE(FetchAllHistory(api, b_.access_token, conv_bc, &history));
  EXPECT_EQ(history.size(), 0u) << "nothing may be stored in the foreign conversation";
}

// Kind 27: message_receipt and typing for a conversation the user is not in:
// forbidden, like a nonexistent one; the real members hear nothing.
TEST_F(BadInputCatalogueTest, ReceiptAndTypingForAForeignConversation) {
  RestClient api = Api();
  TestUser c;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "catc", &c));
  std::string conv_bc;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, b_, c, &conv_bc));
  WsClient bw, cw, aw;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, b_, &bw));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, c, &cw));
  Json ack;
  ASSERT_NO_FATAL_FAILURE(SendAndAck(bw, conv_bc, "private", &ack));
  const std::string msg_id = ack["message_id"].StrOr("");
  std::vector<Json> got;
  ASSERT_NO_FATAL_FAILURE(CollectMessages(cw, conv_bc, 1, &got));

  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a_, &aw));
  Json foreign, missing;
  ASSERT_NO_FATAL_FAILURE(ExpectErrorFrame(
      aw, client::MessageReceiptFrame(msg_id, conv_bc, "READ"), "forbidden", &foreign));
  ASSERT_NO_FATAL_FAILURE(ExpectErrorFrame(
      aw, client::MessageReceiptFrame("srv_msg_00000000000000ff0000000000000001",
                                      "conv_00000000000000ff", "READ"),
      "forbidden", &missing));
  EXPECT_EQ(foreign["message"].Str(), missing["message"].Str());
  ASSERT_NO_FATAL_FAILURE(ExpectErrorFrame(
      aw, client::MessageReceiptFrame(msg_id, conv_bc, "DELIVERED", 1), "forbidden"));
  ASSERT_NO_FATAL_FAILURE(
      ExpectErrorFrame(aw, client::TypingFrame(conv_bc, "started"), "forbidden"));
  ExpectNoEvent({{&bw, "b (the sender)"}, {&cw, "c"}}, "message_receipt", kQuietWindow,
                "after a stranger's receipt");
  // The stranger's READ did not move anything.
  HttpResponse receipts = api.Receipts(b_.access_token, conv_bc, 1);
  ASSERT_EQ(receipts.status, 200) << receipts.Describe();
  EXPECT_EQ(receipts.json()["receipts"][0]["status"].Str(), "SENT"s) << receipts.Describe();
}

// Kind 28: a binary frame: error bad_request, the connection stays open.
TEST_F(BadInputCatalogueTest, BinaryFrameIsBadRequest) {
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(Api(), a_, &ws));
  ASSERT_TRUE(ws.SendBinary(kPing)) << ws.error();
  Json err = ws.WaitForEvent("error", kFrameTimeout);
  EXPECT_EQ(err["code"].Str(), "bad_request"s) << err;
  ASSERT_TRUE(ws.SendBinary(std::string(1000, '\0'))) << ws.error();
  err = ws.WaitForEvent("error", kFrameTimeout);
  EXPECT_EQ(err["code"].Str(), "bad_request"s) << err;
  ASSERT_NO_FATAL_FAILURE(ExpectPong(ws));
  Json ack;
  ASSERT_NO_FATAL_FAILURE(SendAndAck(ws, conv_ab_, "after binary", &ack));
}

// ---- Slow clients: a dedicated server with a 1 s handshake timeout ----------------

class BadInputCatalogueSlowClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess(
        ServerProcess::Options{.extra_args = {"--set", "server.handshake_timeout_ms=1000"}});
    server_->Start();
  }
  static void TearDownTestSuite() {
    if (server_ && server_->running()) {
      EXPECT_EQ(server_->Stop(), 0) << server_->LogTail();
    }
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(server_->running()) << server_->error();
    ASSERT_NO_FATAL_FAILURE(bystanders_.Start(Api()));
  }
  void TearDown() override {
    if (!HasFatalFailure() && server_->CheckAlive()) bystanders_.ExpectChat("after the case");
    EXPECT_TRUE(server_->CheckAlive()) << server_->error() << server_->LogTail();
  }
  static RestClient Api() { return RestClient(server_->host(), server_->port()); }

  // Writes `head` one byte per `interval` until the server closes the connection.
  // Returns how long after connecting the connection was closed (nullopt if it never
  // was within `limit`); the bystanders chat once, while the slow client is connected.
  std::optional<Millis> DripUntilClosed(RawConn& c, std::string_view head, Millis interval,
                                        Millis limit) {
    const auto start = SteadyClock::now();
    bool chatted = false;
    for (size_t i = 0; SteadyClock::now() - start < limit; ++i) {
      if (i < head.size() && !c.Write(head.substr(i, 1))) break;  // already closed
      if (!chatted) {
        bystanders_.ExpectChat("while a slow client holds a connection");
        chatted = true;
      }
      auto until = std::min(SteadyClock::now() + interval, start + limit);
      while (SteadyClock::now() < until) {
        auto left = std::chrono::duration_cast<Millis>(until - SteadyClock::now());
        if (c.ReadSome(left) == RawConn::ReadResult::kClosed)
          return std::chrono::duration_cast<Millis>(SteadyClock::now() - start);
      }
    }
    if (c.WaitClosed(Millis(0)) || c.peer_closed())
      return std::chrono::duration_cast<Millis>(SteadyClock::now() - start);
    return std::nullopt;
  }

  static ServerProcess* server_;
  Bystanders bystanders_;
};

ServerProcess* BadInputCatalogueSlowClientTest::server_ = nullptr;

// Kind 29: slowloris: the HTTP head one byte per second. The server drops the
// connection once server.handshake_timeout_ms (1 s here) has passed since it started
// reading the request, without answering, while serving everyone else meanwhile.
TEST_F(BadInputCatalogueSlowClientTest, SlowlorisHeadIsCutAtTheHandshakeTimeout) {
  RawConn c;
  ASSERT_TRUE(c.Connect(server_->host(), server_->port())) << c.error();
  std::optional<Millis> closed = DripUntilClosed(
      c, "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n", Millis(1000),
      Millis(6000));
  ASSERT_TRUE(closed.has_value()) << "a one-byte-per-second client was still connected after 6 s";
  EXPECT_LE(closed->count(), 3000) << "closed only after " << closed->count() << " ms";
  EXPECT_GE(closed->count(), 800) << "closed before the timeout: " << closed->count() << " ms";
  EXPECT_EQ(c.buffer(), "") << "a timed-out request gets no answer";
}

// Kind 30: a connection that says nothing at all is closed at the same timeout.
TEST_F(BadInputCatalogueSlowClientTest, SilentConnectionIsClosed) {
  RawConn c;
  ASSERT_TRUE(c.Connect(server_->host(), server_->port())) << c.error();
  std::optional<Millis> closed = DripUntilClosed(c, "", Millis(250), Millis(6000));
  ASSERT_TRUE(closed.has_value()) << "a silent connection was still open after 6 s";
  EXPECT_LE(closed->count(), 3000) << closed->count() << " ms";
}

// Kind 31: Content-Length larger than the body that follows: the server waits for the
// rest only until the handshake timeout, then drops the connection without answering
// (it never acts on a partial body).
TEST_F(BadInputCatalogueSlowClientTest, ContentLengthLongerThanBodyTimesOut) {
  const std::string name = UniqueName("partial");
  RawConn c;
  ASSERT_TRUE(c.Connect(server_->host(), server_->port())) << c.error();
  const std::string body =
      R"({"username":")" + name + R"(","password":")" + std::string(kPassword) + R"("})";
  ASSERT_TRUE(c.Write(RawRequest("POST /v1/users HTTP/1.1",
                                 {"Content-Type: application/json",
                                  "Content-Length: " + std::to_string(body.size() + 50)},
                                 body)));
  std::optional<Millis> closed = DripUntilClosed(c, "", Millis(250), Millis(6000));
  ASSERT_TRUE(closed.has_value()) << "still waiting for the missing body after 6 s";
  EXPECT_LE(closed->count(), 3000) << closed->count() << " ms";
  EXPECT_EQ(c.buffer(), "") << "no answer to a request whose body never completed";
  EXPECT_EQ(Api().Login(name, kPassword).status, 401) << "the partial request created a user";
}

// ---- A reader that never reads: a dedicated server with a small send queue --------

class BadInputCatalogueFloodTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess(ServerProcess::Options{
        .extra_args = {"--set", "limits.send_queue_max_frames=64", "--set",
                       "limits.send_rate_per_s=100000", "--set", "limits.send_burst=100000"}});
    server_->Start();
  }
  static void TearDownTestSuite() {
    if (server_ && server_->running()) {
      EXPECT_EQ(server_->Stop(), 0) << server_->LogTail();
    }
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(server_->running()) << server_->error(); }
  static RestClient Api() { return RestClient(server_->host(), server_->port()); }

  static int64_t Overflows() {
    HttpResponse m = Api().Request("GET", "/metrics");
    const std::string key = "\nswitchboard_send_queue_overflows_total ";
    size_t at = m.body.find(key);
    if (at == std::string::npos) return -1;
    return std::strtoll(m.body.c_str() + at + key.size(), nullptr, 10);
  }

  static ServerProcess* server_;
};

ServerProcess* BadInputCatalogueFloodTest::server_ = nullptr;

// Kind 32: a client that never reads while a peer floods it. Once its socket buffers
// and its 64-frame send queue are full, the server closes it with 1013 ("send queue
// overflow") instead of dropping frames or growing without bound; the flooder and
// everyone else keep being served throughout.
//
// The close frame queues behind the frame the server is still trying to write, so the
// victim sees it once it reads again: the test reads after the overflow is counted.
TEST_F(BadInputCatalogueFloodTest, NonReaderIsClosedWith1013) {
  RestClient api = Api();
  Bystanders bystanders;
  ASSERT_NO_FATAL_FAILURE(bystanders.Start(api));
  TestUser flooder, victim;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "flood", &flooder));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "victim", &victim));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, flooder, victim, &conv));
  const int64_t overflows_before = Overflows();
  ASSERT_GE(overflows_before, 0) << "no send_queue_overflows metric";

  // The victim: a small receive window, one frame to start live delivery at once, and
  // from then on no reads at all.
  RawWs victim_ws;
  {
    UpgradeSpec s;
    s.token = victim.access_token;
    ASSERT_TRUE(victim_ws.conn().Connect(api.host(), api.port(), /*rcvbuf=*/4096));
    ASSERT_TRUE(victim_ws.Send(UpgradeRequest(s, api.host(), api.port())));
    HttpResponse up = ReadHttpResponse(victim_ws.conn());
    ASSERT_EQ(up.status, 101) << up.Describe() << up.error;
    ASSERT_TRUE(victim_ws.SendText(kPing));
  }

  WsClient fw;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, flooder, &fw));
  const std::string content(16 * 1024, 'f');  // the largest content: fills buffers fastest
  int acked = 0, sent = 0;
  bool overflowed = false;
  const auto deadline = SteadyClock::now() + std::chrono::seconds(30);
  while (!overflowed && SteadyClock::now() < deadline) {
    std::vector<Acked> acks;
    ASSERT_NO_FATAL_FAILURE(SendBatch(fw, conv, std::vector<std::string>(50, content), &acks));
    sent += 50;
    acked += static_cast<int>(acks.size());
    overflowed = Overflows() > overflows_before;
    if (sent == 100) bystanders.ExpectChat("while the flood runs");
  }
  ASSERT_TRUE(overflowed) << "no send queue overflow after " << sent << " messages";
  EXPECT_EQ(acked, sent) << "the flooder must get every ack";
  bystanders.ExpectChat("after the overflow");

  // Now the victim reads: the messages that made it into its socket, then 1013.
  int delivered = 0;
  std::optional<WireFrame> close;
  for (;;) {
    WireFrame f;
    RawWs::Got got = victim_ws.Next(&f, kFrameTimeout);
    ASSERT_EQ(got, RawWs::Got::kFrame) << "after " << delivered << " messages the victim got "
                                       << (got == RawWs::Got::kTimeout ? "nothing" : "EOF")
                                       << " instead of a close frame";
    if (f.opcode == 0x8) {
      close = f;
      break;
    }
    if (f.opcode == 0x1 && Json::Parse(f.payload)["event"].Str() == "message") ++delivered;
  }
  // How far the flood got, for whoever tunes the limits (in --gtest_output=xml).
  RecordProperty("messages_sent", sent);
  RecordProperty("messages_delivered_before_close", delivered);
  EXPECT_EQ(close->close_code(), std::optional<uint16_t>(1013)) << close->Describe();
  EXPECT_EQ(close->payload.substr(2), "send queue overflow");
  EXPECT_LT(delivered, sent) << "an overflow means some messages were not written";
  // Complete the closing handshake as a client should; the server then ends TCP.
  ASSERT_TRUE(victim_ws.SendFrame({.opcode = 0x8, .payload = std::string("\x03\xf5", 2)}));
  EXPECT_TRUE(victim_ws.conn().WaitClosed(Millis(3000))) << "TCP stays open after the 1013";

  // The flooder was never disturbed, and the victim can come back and catch up.
  ASSERT_TRUE(fw.Send(kPing)) << fw.error();
  EXPECT_TRUE(fw.WaitForEvent("pong").valid());
  std::vector<Json> history;
  ASSERT_NO_FATAL_FAILURE(FetchAllHistory(api, victim.access_token, conv, &history));
  EXPECT_EQ(static_cast<int>(history.size()), sent) << "every acked message is in history";
  bystanders.ExpectChat("after the victim was closed");
}

}  // namespace
}  // namespace sb::test
