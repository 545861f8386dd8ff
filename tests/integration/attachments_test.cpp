// Attachments end to end over real sockets: upload, share in a message, download by
// other members; who may read; limits; streaming (the server's memory does not grow
// with the size of an upload); temp files after a crash.
#include <gtest/gtest.h>
#include <sodium.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "test_support.h"

namespace sb::test {
namespace {

using client::Headers;
using client::HttpResponse;
using client::OutgoingMessage;
using SteadyClock = std::chrono::steady_clock;
namespace fs = std::filesystem;

// Bytes with every value in them (binary-safe transport), different per seed.
std::string RandomBytes(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<char>(x >> 24);
  }
  return out;
}

std::string Hex(const unsigned char* p, size_t n) {
  static const char* k = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out.push_back(k[p[i] >> 4]);
    out.push_back(k[p[i] & 15]);
  }
  return out;
}

std::string Sha256Hex(std::string_view b) {
  unsigned char d[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(d, reinterpret_cast<const unsigned char*>(b.data()), b.size());
  return Hex(d, sizeof d);
}

HttpResponse Upload(const RestClient& api, std::string_view token, std::string_view bytes,
                    std::string_view content_type) {
  Headers h;
  if (!content_type.empty()) h.emplace_back("Content-Type", std::string(content_type));
  return api.Request("POST", "/v1/attachments", bytes, token, h);
}

// A new user (`name`) who has uploaded `bytes` as image/png; `id`: the attachment's.
void NewUploader(const RestClient& api, std::string_view name, std::string_view bytes, TestUser* user,
                 std::string* id) {
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, name, user));
  HttpResponse up = Upload(api, user->access_token, bytes, "image/png");
  ASSERT_EQ(up.status, 201) << up.Describe();
  *id = *up.json()["attachment_id"].Str();
}

HttpResponse Download(const RestClient& api, std::string_view token, std::string_view id_or_path) {
  std::string target = id_or_path.substr(0, 1) == "/" ? std::string(id_or_path)
                                                       : "/v1/attachments/" + std::string(id_or_path);
  return api.Request("GET", target, {}, token);
}

// An upload head as raw bytes (the body is written separately, or never).
std::string UploadHead(std::string_view token, const std::vector<std::string>& lines) {
  std::string r = "POST /v1/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  if (!token.empty()) r += "Authorization: Bearer " + std::string(token) + "\r\n";
  for (const auto& l : lines) r += l + "\r\n";
  return r + "\r\n";
}

std::string ChunkedBody(std::string_view bytes, size_t piece) {
  std::string out;
  for (size_t i = 0; i < bytes.size(); i += piece) {
    size_t n = std::min(piece, bytes.size() - i);
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", n);
    out += size;
    out.append(bytes.substr(i, n));
    out += "\r\n";
  }
  return out + "0\r\n\r\n";
}

size_t FilesUnder(const std::string& dir) {
  size_t n = 0;
  std::error_code ec;
  for (auto& e : fs::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file()) ++n;
  return n;
}

// kB of a /proc/<pid>/status field (VmRSS: now; VmHWM: the peak so far).
int64_t ProcKb(pid_t pid, std::string_view field) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(std::string(field) + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  return -1;
}

// Sends an image message with `media_url`; the ack or the error frame.
Json SendMedia(WsClient& ws, const std::string& conv, const std::string& media_url,
               const std::string& content_type = "image") {
  OutgoingMessage m;
  m.client_msg_id = client::NewClientMsgId();
  m.conversation_id = conv;
  m.content_type = content_type;
  m.media_url = media_url;
  EXPECT_TRUE(ws.Send(client::SendMessageFrame(m))) << ws.error();
  return AwaitReply(ws, m.client_msg_id);
}

class AttachmentsTest : public SharedServerTest {
 protected:
  // Under ASan, detect_stack_use_after_return gives every thread a "fake stack" whose
  // pages are touched bit by bit as calls come and go: 5 to 15 MB of the server's peak
  // memory during any long request, which A25MiBUploadIsStreamed would count as the
  // upload's. This suite's server runs without it (its own ASAN_OPTIONS are appended,
  // so they win); every other server of the ASan stage keeps it.
  static void SetUpTestSuite() {
#if defined(__SANITIZE_ADDRESS__)
    const char* before = std::getenv("ASAN_OPTIONS");
    const std::string saved = before ? before : "";
    const std::string opts = saved.empty() ? "detect_stack_use_after_return=0"
                                           : saved + ":detect_stack_use_after_return=0";
    ::setenv("ASAN_OPTIONS", opts.c_str(), 1);
    SharedServerTest::SetUpTestSuite();
    if (before) {
      ::setenv("ASAN_OPTIONS", saved.c_str(), 1);
    } else {
      ::unsetenv("ASAN_OPTIONS");
    }
#else
    SharedServerTest::SetUpTestSuite();
#endif
  }
  // Uploads and checks the 201 answer's shape; *id and *url receive the answer's.
  void UploadOk(const TestUser& u, std::string_view bytes, std::string_view ct, std::string* id,
                std::string* url = nullptr) {
    HttpResponse r = Upload(Api(), u.access_token, bytes, ct);
    ASSERT_EQ(r.status, 201) << r.Describe();
    Json j = r.json();
    ASSERT_TRUE(j["attachment_id"].IsString()) << r.body;
    *id = *j["attachment_id"].Str();
    EXPECT_EQ(*id, "att_" + Sha256Hex(bytes)) << "the id is the SHA-256 of the bytes";
    EXPECT_EQ(j["media_url"].Str(), "/v1/attachments/" + *id);
    EXPECT_EQ(j["size"].Int(), static_cast<int64_t>(bytes.size()));
    if (url) *url = *j["media_url"].Str();
  }
  std::string TempDir() const { return server().data_dir() + "/attachments/tmp"; }
};

TEST_F(AttachmentsTest, UploadShareAndDownloadTheExactBytes) {
  auto api = Api();
  TestUser alice, bob, carol;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_alice", &alice));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_bob", &bob));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_carol", &carol));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, alice, bob, &conv));

  const std::string png = "\x89PNG\r\n\x1a\n" + RandomBytes(300000, 1);
  std::string id, url;
  ASSERT_NO_FATAL_FAILURE(UploadOk(alice, png, "image/png", &id, &url));

  WsClient aw, bw;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, alice, &aw));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, bob, &bw));
  Json ack = SendMedia(aw, conv, url);
  ASSERT_EQ(ack["event"].Str(), "message_ack"s) << ack;
  std::vector<Json> got;
  ASSERT_NO_FATAL_FAILURE(CollectMessages(bw, conv, 1, &got));
  EXPECT_EQ(got[0]["content_type"].Str(), "image"s);
  EXPECT_EQ(got[0]["media_url"].Str(), url);

  // Bob, a member of the conversation, downloads exactly what Alice uploaded.
  HttpResponse d = Download(api, bob.access_token, *got[0]["media_url"].Str());
  ASSERT_EQ(d.status, 200) << d.Describe();
  EXPECT_EQ(d.body.size(), png.size());
  EXPECT_TRUE(d.body == png) << "downloaded bytes differ from the upload";
  EXPECT_EQ(d.Header("Content-Type"), "image/png");
  EXPECT_EQ(d.Header("Content-Length"), std::to_string(png.size()));
  EXPECT_EQ(d.Header("Cache-Control"), "private");
  EXPECT_EQ(d.Header("X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(d.Header("Content-Disposition"), "") << "an image is shown inline";

  // History carries the media_url too.
  HttpResponse h = api.History(bob.access_token, conv);
  ASSERT_EQ(h.status, 200) << h.Describe();
  EXPECT_EQ(h.json()["messages"][0]["media_url"].Str(), url);

  // Carol shares no conversation referencing it: the 404 of an id that does not exist.
  HttpResponse none = Download(api, carol.access_token, "att_" + std::string(64, '0'));
  EXPECT_EQ(none.status, 404) << none.Describe();
  HttpResponse stranger = Download(api, carol.access_token, id);
  EXPECT_EQ(stranger.status, 404) << stranger.Describe();
  EXPECT_EQ(stranger.body, none.body);
  // No token, or a bad one: 401.
  EXPECT_EQ(Download(api, "", id).status, 401);
  EXPECT_EQ(Download(api, "not-a-token", id).status, 401);
}

TEST_F(AttachmentsTest, NonImagesAreServedAsDownloadsAndContentTypesAreChecked) {
  auto api = Api();
  TestUser alice;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_types", &alice));
  std::string id;
  ASSERT_NO_FATAL_FAILURE(UploadOk(alice, "<script>alert(1)</script>", "text/html", &id));
  HttpResponse d = Download(api, alice.access_token, id);
  ASSERT_EQ(d.status, 200) << d.Describe();
  EXPECT_EQ(d.Header("Content-Type"), "text/html");
  EXPECT_EQ(d.Header("Content-Disposition"), "attachment");
  EXPECT_EQ(d.Header("X-Content-Type-Options"), "nosniff");
  std::string svg_id;
  ASSERT_NO_FATAL_FAILURE(UploadOk(alice, "<svg/>", "image/svg+xml", &svg_id));
  EXPECT_EQ(Download(api, alice.access_token, svg_id).Header("Content-Disposition"), "attachment");

  // No Content-Type: application/octet-stream (sent raw: the client library would add
  // application/json). A nonsense one: 400.
  RawConn c;
  ASSERT_TRUE(c.Connect(server().host(), server().port())) << c.error();
  ASSERT_TRUE(c.Write(UploadHead(alice.access_token, {"Content-Length: 3", "Connection: close"}) + "xyz"));
  HttpResponse plain = ReadHttpResponse(c);
  ASSERT_EQ(plain.status, 201) << plain.Describe() << plain.error;
  EXPECT_EQ(plain.json()["content_type"].Str(), "application/octet-stream"s);
  HttpResponse bad = Upload(api, alice.access_token, "abc", "not a type");
  EXPECT_EQ(bad.status, 400) << bad.Describe();
  EXPECT_EQ(bad.ErrorCode(), "bad_request");

  // Identical bytes are one attachment.
  std::string again;
  ASSERT_NO_FATAL_FAILURE(UploadOk(alice, "<script>alert(1)</script>", "text/html", &again));
  EXPECT_EQ(again, id);
  // An empty upload is refused.
  HttpResponse empty = Upload(api, alice.access_token, "", "image/png");
  EXPECT_EQ(empty.status, 400) << empty.Describe();
  EXPECT_EQ(FilesUnder(TempDir()), 0u);
}

TEST_F(AttachmentsTest, ARemovedMemberLosesAccess) {
  auto api = Api();
  TestUser alice, bob, carol;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_gal", &alice));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_gbo", &bob));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_gca", &carol));
  auto g = api.CreateConversation(alice.access_token, "group", {bob.user_id, carol.user_id}, "pics");
  ASSERT_EQ(g.status, 201) << g.Describe();
  std::string conv = *g.json()["conversation_id"].Str();
  const std::string bytes = RandomBytes(70000, 2);
  std::string id, url;
  ASSERT_NO_FATAL_FAILURE(UploadOk(alice, bytes, "image/jpeg", &id, &url));
  WsClient aw;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, alice, &aw));
  Json ack = SendMedia(aw, conv, url);
  ASSERT_EQ(ack["event"].Str(), "message_ack"s) << ack;

  EXPECT_EQ(Download(api, carol.access_token, id).status, 200);
  ASSERT_EQ(api.RemoveMember(alice.access_token, conv, carol.user_id).status, 204);
  HttpResponse gone = Download(api, carol.access_token, id);
  EXPECT_EQ(gone.status, 404) << gone.Describe();
  EXPECT_EQ(gone.ErrorCode(), "not_found");
  HttpResponse still = Download(api, bob.access_token, id);
  EXPECT_EQ(still.status, 200) << still.Describe();
  EXPECT_TRUE(still.body == bytes);
}

TEST_F(AttachmentsTest, DeletingTheMessageWithdrawsTheAttachmentFromTheOtherMembers) {
  auto api = Api();
  TestUser alice, bob;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_dal", &alice));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_dbo", &bob));
  auto g = api.CreateConversation(alice.access_token, "group", {bob.user_id}, "oops");
  ASSERT_EQ(g.status, 201) << g.Describe();
  std::string conv = *g.json()["conversation_id"].Str();
  const std::string bytes = RandomBytes(30000, 3);
  std::string id, url;
  ASSERT_NO_FATAL_FAILURE(UploadOk(alice, bytes, "image/png", &id, &url));
  WsClient aw;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, alice, &aw));
  Json first = SendMedia(aw, conv, url);
  Json second = SendMedia(aw, conv, url);
  ASSERT_EQ(first["event"].Str(), "message_ack"s) << first;
  ASSERT_EQ(second["event"].Str(), "message_ack"s) << second;
  EXPECT_EQ(Download(api, bob.access_token, id).status, 200);

  auto remove = [&](const Json& ack) {
    OutgoingMessage d;
    d.client_msg_id = client::NewClientMsgId();
    d.conversation_id = conv;
    d.content_type = "delete";
    d.target_message_id = *ack["message_id"].Str();
    ASSERT_TRUE(aw.Send(client::SendMessageFrame(d))) << aw.error();
    Json r = AwaitReply(aw, d.client_msg_id);
    ASSERT_EQ(r["event"].Str(), "message_ack"s) << r;
  };
  // One of the two messages deleted: the other still shares the picture.
  ASSERT_NO_FATAL_FAILURE(remove(first));
  EXPECT_EQ(Download(api, bob.access_token, id).status, 200);
  // Both: Bob can neither download nor forward it; Alice, who uploaded it, still can
  // (until the unreferenced-attachment sweep).
  ASSERT_NO_FATAL_FAILURE(remove(second));
  HttpResponse gone = Download(api, bob.access_token, id);
  EXPECT_EQ(gone.status, 404) << gone.Describe();
  EXPECT_EQ(gone.ErrorCode(), "not_found");
  WsClient bw;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, bob, &bw));
  Json forward = SendMedia(bw, conv, url);
  EXPECT_EQ(ErrorCodeOf(forward), "not_found") << forward;
  HttpResponse own = Download(api, alice.access_token, id);
  EXPECT_EQ(own.status, 200) << own.Describe();
  EXPECT_TRUE(own.body == bytes);
}

TEST_F(AttachmentsTest, SendingSomeoneElsesAttachmentIsRefused) {
  auto api = Api();
  TestUser alice, bob, carol;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_sal", &alice));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_sbo", &bob));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_sca", &carol));
  std::string ab, bc;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, alice, bob, &ab));
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, bob, carol, &bc));
  std::string id, url;
  ASSERT_NO_FATAL_FAILURE(UploadOk(alice, RandomBytes(5000, 3), "image/png", &id, &url));

  WsClient aw, bw;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, alice, &aw));
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, bob, &bw));
  // Bob has only seen the URL somewhere: he may not send it, nor any id he guesses.
  Json refused = SendMedia(bw, bc, url);
  EXPECT_EQ(ErrorCodeOf(refused), "not_found") << refused;
  Json guessed = SendMedia(bw, bc, "/v1/attachments/att_" + std::string(64, 'a'));
  EXPECT_EQ(ErrorCodeOf(guessed), "not_found") << guessed;
  EXPECT_EQ(guessed["message"].Str(), refused["message"].Str()) << "unknown and not-yours look alike";
  Json malformed = SendMedia(bw, bc, "/v1/attachments/../../etc/passwd", "file");
  EXPECT_EQ(ErrorCodeOf(malformed), "not_found") << malformed;
  Json absolute = SendMedia(bw, bc, "https://chat.example.com" + url);
  EXPECT_EQ(ErrorCodeOf(absolute), "not_found") << absolute;
  // External URLs stay allowed.
  Json external = SendMedia(bw, bc, "https://cdn.example/cat.png");
  EXPECT_EQ(external["event"].Str(), "message_ack"s) << external;
  EXPECT_EQ(Download(api, carol.access_token, id).status, 404);

  // Once Alice shares it with Bob, Bob may forward it, and Carol may then read it.
  Json shared = SendMedia(aw, ab, url);
  ASSERT_EQ(shared["event"].Str(), "message_ack"s) << shared;
  Json forwarded = SendMedia(bw, bc, "https://chat.example.com" + url);
  EXPECT_EQ(forwarded["event"].Str(), "message_ack"s) << forwarded;
  EXPECT_EQ(Download(api, carol.access_token, id).status, 200);
}

TEST_F(AttachmentsTest, BadIdsAre404) {
  auto api = Api();
  TestUser alice;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_bad", &alice));
  HttpResponse none = Download(api, alice.access_token, "att_" + std::string(64, '0'));
  ASSERT_EQ(none.status, 404) << none.Describe();
  const std::string hex = std::string(63, 'a') + "b";
  for (const std::string& target : std::vector<std::string>{
           "/v1/attachments/..%2F..%2Fetc%2Fpasswd", "/v1/attachments/..%2f..%2f..%2fstore%2fCURRENT",
           "/v1/attachments/att_%2e%2e%2f%2e%2e", "/v1/attachments/att_abc", "/v1/attachments/" + hex,
           "/v1/attachments/att_" + std::string(64, 'G'), "/v1/attachments/att_" + std::string(64, 'A'),
           "/v1/attachments/att_" + hex + "0", "/v1/attachments/att_" + hex + "%00",
           "/v1/attachments/att_" + hex + "/x"}) {
    HttpResponse r = Download(api, alice.access_token, target);
    EXPECT_EQ(r.status, 404) << target << " " << r.Describe();
    EXPECT_EQ(r.ErrorCode(), "not_found") << target;
  }
  // Raw, undecoded traversal in the request line.
  HttpResponse raw = RawHttp(server().host(), server().port(),
                             "GET /v1/attachments/../../etc/passwd HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                                 alice.access_token + "\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(raw.status, 404) << raw.Describe();
  // Other methods on the routes: no such endpoint.
  EXPECT_EQ(api.Request("DELETE", "/v1/attachments/att_" + hex, {}, alice.access_token).status, 404);
  EXPECT_EQ(api.Request("GET", "/v1/attachments", {}, alice.access_token).status, 404);
}

TEST_F(AttachmentsTest, NoTokenIs401BeforeAnyBodyByteIsRead) {
  // Only the head is sent, announcing 20 MB: the answer comes at once, so the server
  // did not wait for (or read) a body.
  for (std::string token : {std::string(), std::string("garbage.token.here")}) {
    RawConn c;
    ASSERT_TRUE(c.Connect(server().host(), server().port())) << c.error();
    ASSERT_TRUE(c.Write(UploadHead(token, {"Content-Type: image/png", "Content-Length: 20000000"})));
    HttpResponse r = ReadHttpResponse(c);
    EXPECT_EQ(r.status, 401) << r.Describe() << r.error;
    EXPECT_EQ(r.ErrorCode(), "unauthorized");
    EXPECT_TRUE(c.WaitClosed(Millis(5000))) << "the connection stays open after a refused upload";
  }
  EXPECT_EQ(FilesUnder(TempDir()), 0u);
}

TEST_F(AttachmentsTest, OverTheLimitIs413AndLeavesNoFile) {
  auto api = Api();
  TestUser alice;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_big", &alice));
  const size_t before = FilesUnder(server().data_dir() + "/attachments");
  // Declared: judged on the head.
  RawConn c;
  ASSERT_TRUE(c.Connect(server().host(), server().port())) << c.error();
  ASSERT_TRUE(c.Write(UploadHead(alice.access_token, {"Content-Length: " + std::to_string((25u << 20) + 1)})));
  HttpResponse r = ReadHttpResponse(c);
  EXPECT_EQ(r.status, 413) << r.Describe() << r.error;
  EXPECT_EQ(r.ErrorCode(), "too_large");
  // Chunked (no length to judge in advance): cut as it arrives, one byte over, and the
  // partial file is removed.
  RawConn k;
  ASSERT_TRUE(k.Connect(server().host(), server().port())) << k.error();
  ASSERT_TRUE(k.Write(UploadHead(alice.access_token, {"Transfer-Encoding: chunked"}) +
                          ChunkedBody(RandomBytes((25u << 20) + 1, 4), 1 << 20),
                      Millis(30000)))
      << k.error();
  HttpResponse kr = ReadHttpResponse(k);
  EXPECT_EQ(kr.status, 413) << kr.Describe() << kr.error;
  EXPECT_EQ(kr.ErrorCode(), "too_large");
  EXPECT_EQ(FilesUnder(TempDir()), 0u);
  EXPECT_EQ(FilesUnder(server().data_dir() + "/attachments"), before);
}

// A body sent in chunked encoding (no Content-Length) with Expect: 100-continue.
TEST_F(AttachmentsTest, ChunkedUploadWithExpectContinue) {
  auto api = Api();
  TestUser alice;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_chunk", &alice));
  const std::string bytes = RandomBytes(200000, 5);
  RawConn c;
  ASSERT_TRUE(c.Connect(server().host(), server().port())) << c.error();
  ASSERT_TRUE(c.Write(UploadHead(alice.access_token, {"Content-Type: application/pdf", "Transfer-Encoding: chunked",
                                                      "Expect: 100-continue", "Connection: close"})));
  // "HTTP/1.1 100 Continue" and an empty line, with no body (read by hand:
  // ReadHttpResponse would wait for a body until the close).
  for (int i = 0; i < 100 && c.buffer().find("\r\n\r\n") == std::string::npos; ++i) c.ReadSome(Millis(50));
  size_t end = c.buffer().find("\r\n\r\n");
  ASSERT_NE(end, std::string::npos) << "no 100 Continue: " << c.buffer();
  EXPECT_EQ(c.buffer().substr(0, 12), "HTTP/1.1 100") << c.buffer();
  c.buffer().erase(0, end + 4);
  ASSERT_TRUE(c.Write(ChunkedBody(bytes, 7001)));
  HttpResponse r = ReadHttpResponse(c);
  ASSERT_EQ(r.status, 201) << r.Describe() << r.error;
  EXPECT_EQ(r.json()["attachment_id"].Str(), "att_" + Sha256Hex(bytes));
  HttpResponse d = Download(api, alice.access_token, *r.json()["attachment_id"].Str());
  EXPECT_TRUE(d.body == bytes);
}

// Several requests on one connection around an upload and a download: the framing
// stays in step.
TEST_F(AttachmentsTest, KeepAliveAcrossUploadAndDownload) {
  auto api = Api();
  TestUser alice;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_keep", &alice));
  const std::string bytes = RandomBytes(100000, 6);
  RawConn c;
  ASSERT_TRUE(c.Connect(server().host(), server().port())) << c.error();
  ASSERT_TRUE(c.Write(UploadHead(alice.access_token, {"Content-Type: image/gif",
                                                      "Content-Length: " + std::to_string(bytes.size())}) +
                      bytes));
  HttpResponse up = ReadHttpResponse(c);
  ASSERT_EQ(up.status, 201) << up.Describe() << up.error;
  std::string id = *up.json()["attachment_id"].Str();
  ASSERT_TRUE(c.Write("GET /v1/attachments/" + id + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                      alice.access_token + "\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  HttpResponse d = ReadHttpResponse(c);
  ASSERT_EQ(d.status, 200) << d.Describe() << d.error;
  EXPECT_TRUE(d.body == bytes);
  HttpResponse h = ReadHttpResponse(c);
  EXPECT_EQ(h.status, 200) << h.Describe() << h.error;
}

// One request for an attachment on a kept-alive raw connection, and its answer.
HttpResponse AttachmentRequest(RawConn& c, const std::string& method, const std::string& id, const std::string& token,
                               const std::vector<std::string>& lines) {
  std::string r = method + " /v1/attachments/" + id + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + "\r\n";
  for (const auto& l : lines) r += l + "\r\n";
  EXPECT_TRUE(c.Write(r + "\r\n"));
  return ReadHttpResponse(c, kFrameTimeout, method == "HEAD");
}

// HEAD answers GET's head (length, type, ETag) without the bytes, ignores Range (it is
// defined for GET only), honours If-None-Match, and leaves the connection usable: the
// GET after it on the same connection must get exactly the file.
TEST_F(AttachmentsTest, HeadIsTheHeadOfGetWithoutTheBytes) {
  auto api = Api();
  TestUser alice, eve;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_head", &alice));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_head_eve", &eve));
  const std::string bytes = RandomBytes(100000, 14);
  std::string id;
  ASSERT_NO_FATAL_FAILURE(UploadOk(alice, bytes, "image/png", &id));
  const std::string etag = "\"" + Sha256Hex(bytes) + "\"";

  RawConn c;
  ASSERT_TRUE(c.Connect(server().host(), server().port())) << c.error();
  auto send = [&](const std::string& method, const std::string& token, const std::vector<std::string>& lines) {
    return AttachmentRequest(c, method, id, token, lines);
  };
  HttpResponse h = send("HEAD", alice.access_token, {});
  ASSERT_EQ(h.status, 200) << h.Describe() << h.error;
  EXPECT_EQ(h.Header("Content-Length"), "100000");
  EXPECT_EQ(h.Header("Content-Type"), "image/png");
  EXPECT_EQ(h.Header("ETag"), etag);
  EXPECT_EQ(h.Header("Accept-Ranges"), "bytes");
  EXPECT_TRUE(h.body.empty());
  HttpResponse hr = send("HEAD", alice.access_token, {"Range: bytes=0-9"});
  EXPECT_EQ(hr.status, 200) << hr.Describe() << hr.error;
  EXPECT_EQ(hr.Header("Content-Length"), "100000");
  HttpResponse hn = send("HEAD", alice.access_token, {"If-None-Match: " + etag});
  EXPECT_EQ(hn.status, 304) << hn.Describe() << hn.error;
  // Someone who may not read it gets the same 404 as for GET, head only.
  HttpResponse he = send("HEAD", eve.access_token, {});
  EXPECT_EQ(he.status, 404) << he.Describe() << he.error;
  EXPECT_TRUE(he.body.empty());
  HttpResponse g = send("GET", alice.access_token, {});
  ASSERT_EQ(g.status, 200) << g.Describe() << g.error;
  EXPECT_TRUE(g.body == bytes) << "the HEAD answers left no stray bytes on the connection";
}

// Range requests (RFC 9110 §14), as a media player or a resumed download sends them:
// one range is answered 206 with exactly those bytes, across the server's 64 KiB read
// chunks too; a range past the end 416; several ranges, another unit or a stale
// If-Range the whole file. If-None-Match with the ETag is 304 with no body. All of it
// on one keep-alive connection, so every answer's framing is checked as well.
TEST_F(AttachmentsTest, RangesAndConditionalDownloads) {
  auto api = Api();
  TestUser alice;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_range", &alice));
  const std::string bytes = RandomBytes(200000, 9);
  std::string id;
  ASSERT_NO_FATAL_FAILURE(UploadOk(alice, bytes, "video/mp4", &id));
  const std::string etag = "\"" + Sha256Hex(bytes) + "\"";

  RawConn c;
  ASSERT_TRUE(c.Connect(server().host(), server().port())) << c.error();
  auto get = [&](const std::vector<std::string>& lines) {
    return AttachmentRequest(c, "GET", id, alice.access_token, lines);
  };

  HttpResponse whole = get({});
  ASSERT_EQ(whole.status, 200) << whole.Describe() << whole.error;
  EXPECT_EQ(whole.Header("Accept-Ranges"), "bytes");
  EXPECT_EQ(whole.Header("ETag"), etag);
  EXPECT_TRUE(whole.body == bytes);

  struct Case {
    std::string range;
    uint64_t first, last;
  };
  for (const Case& k : {Case{"bytes=0-0", 0, 0}, Case{"bytes=100-199", 100, 199},
                        Case{"bytes=65000-140000", 65000, 140000},  // spans read chunks
                        Case{"bytes=199990-", 199990, 199999}, Case{"bytes=-16", 199984, 199999},
                        Case{"bytes=150000-999999", 150000, 199999}, Case{"bytes=-500000", 0, 199999}}) {
    HttpResponse p = get({"Range: " + k.range});
    ASSERT_EQ(p.status, 206) << k.range << " " << p.Describe() << p.error;
    EXPECT_EQ(p.Header("Content-Range"),
              "bytes " + std::to_string(k.first) + "-" + std::to_string(k.last) + "/200000")
        << k.range;
    EXPECT_EQ(p.Header("Content-Length"), std::to_string(k.last - k.first + 1)) << k.range;
    EXPECT_TRUE(p.body == bytes.substr(k.first, k.last - k.first + 1)) << k.range;
  }
  HttpResponse matching = get({"Range: bytes=10-19", "If-Range: " + etag});
  EXPECT_EQ(matching.status, 206) << "If-Range names the current ETag";
  EXPECT_TRUE(matching.body == bytes.substr(10, 10));

  for (std::string past : {"bytes=200000-", "bytes=250000-260000", "bytes=-0"}) {
    HttpResponse e = get({"Range: " + past});
    EXPECT_EQ(e.status, 416) << past << " " << e.Describe();
    EXPECT_EQ(e.Header("Content-Range"), "bytes */200000") << past;
  }
  for (std::string ignored : {"Range: bytes=0-1,5-6", "Range: items=0-1", "Range: bytes=9-3",
                                     "Range: bytes=abc", "If-Range: \"stale\"\r\nRange: bytes=0-1"}) {
    HttpResponse w = get({ignored});
    EXPECT_EQ(w.status, 200) << ignored << " " << w.Describe();
    EXPECT_TRUE(w.body == bytes) << ignored;
  }

  HttpResponse same = get({"If-None-Match: " + etag});
  EXPECT_EQ(same.status, 304) << same.Describe();
  EXPECT_EQ(same.body, "");
  EXPECT_EQ(same.Header("ETag"), etag);
  HttpResponse weak = get({"If-None-Match: \"other\", W/" + etag});
  EXPECT_EQ(weak.status, 304) << "weak comparison, any tag of the list";
  HttpResponse changed = get({"If-None-Match: \"other\""});
  EXPECT_EQ(changed.status, 200);
  EXPECT_TRUE(changed.body == bytes);
  // Still in step after all of that.
  HttpResponse last = get({"Range: bytes=199999-199999"});
  EXPECT_EQ(last.status, 206);
  EXPECT_EQ(last.body, bytes.substr(199999));
}

// 25 MiB, the default limit, goes through, and the server does not hold it in memory:
// its peak resident size (VmHWM) is compared before and after. Reported, with a
// generous bound (a server that buffered the body would grow by 25 MiB or more).
TEST_F(AttachmentsTest, A25MiBUploadIsStreamed) {
  auto api = Api();
  TestUser alice;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_25", &alice));
  const std::string bytes = RandomBytes(25u << 20, 7);
  // Warm up the paths (pool threads, buffers) with a small upload and download first.
  std::string warm;
  ASSERT_NO_FATAL_FAILURE(UploadOk(alice, RandomBytes(1 << 20, 8), "image/png", &warm));
  ASSERT_EQ(Download(api, alice.access_token, warm).status, 200);
  const pid_t pid = server().pid();
  const int64_t hwm0 = ProcKb(pid, "VmHWM"), rss0 = ProcKb(pid, "VmRSS");

  auto t0 = SteadyClock::now();
  std::string id;
  ASSERT_NO_FATAL_FAILURE(UploadOk(alice, bytes, "video/mp4", &id));
  auto t1 = SteadyClock::now();
  const int64_t hwm1 = ProcKb(pid, "VmHWM"), rss1 = ProcKb(pid, "VmRSS");
  HttpResponse d = Download(api, alice.access_token, id);
  auto t2 = SteadyClock::now();
  const int64_t hwm2 = ProcKb(pid, "VmHWM");
  ASSERT_EQ(d.status, 200) << d.Describe();
  EXPECT_EQ(d.body.size(), bytes.size());
  EXPECT_EQ(Sha256Hex(d.body), Sha256Hex(bytes));

  auto ms = [](auto a, auto b) { return std::chrono::duration_cast<Millis>(b - a).count(); };
  std::printf("[ figures  ] 25 MiB upload %lld ms, download %lld ms; server VmRSS %lld -> %lld kB, "
              "VmHWM %lld -> %lld (after upload) -> %lld kB (after download)\n",
              static_cast<long long>(ms(t0, t1)), static_cast<long long>(ms(t1, t2)),
              static_cast<long long>(rss0), static_cast<long long>(rss1), static_cast<long long>(hwm0),
              static_cast<long long>(hwm1), static_cast<long long>(hwm2));
  RecordProperty("upload_hwm_growth_kb", static_cast<int>(hwm1 - hwm0));
  RecordProperty("download_hwm_growth_kb", static_cast<int>(hwm2 - hwm1));
  ASSERT_GT(hwm0, 0) << "cannot read /proc/" << pid << "/status";
  EXPECT_LT(hwm1 - hwm0, 12 * 1024) << "the upload grew the server's peak memory by " << (hwm1 - hwm0) << " kB";
  EXPECT_LT(hwm2 - hwm1, 12 * 1024) << "the download grew the server's peak memory by " << (hwm2 - hwm1) << " kB";
}

// ---- A server with small limits: concurrency, timeouts, crash -----------------------

// Unreferenced attachments are deleted once their last use is older than the TTL (2 s
// here, swept every second); an attachment a message references stays, however old.
class AttachmentSweepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(ServerProcess::Options{
        .extra_args = {"--set", "store.unreferenced_attachment_ttl_s=2", "--set",
                       "store.attachment_sweep_interval_s=1"}});
    server_->Start();
    ASSERT_TRUE(server_->running()) << server_->error();
  }
  void TearDown() override {
    if (server_ && server_->running()) server_->Stop();
  }
  RestClient Api() const { return RestClient(server_->host(), server_->port()); }
  std::unique_ptr<ServerProcess> server_;
};

// A file left under the attachment directory without a record (a crash between a
// sweep's record delete and its unlink) is deleted by the first sweep after a start;
// an uploaded attachment next to it stays downloadable.
TEST_F(AttachmentSweepTest, AFileWithoutARecordIsDeletedAfterARestart) {
  auto api = Api();
  TestUser alice;
  const std::string bytes = RandomBytes(20000, 43);
  std::string id;
  ASSERT_NO_FATAL_FAILURE(NewUploader(api, "orphan_al", bytes, &alice, &id));
  server_->Stop();
  const std::string hex(64, 'e');
  const std::string orphan = server_->data_dir() + "/attachments/ee/ee/" + hex;
  fs::create_directories(fs::path(orphan).parent_path());
  std::ofstream(orphan, std::ios::binary) << "bytes nothing names";
  ASSERT_TRUE(server_->Restart()) << server_->error();
  for (auto deadline = SteadyClock::now() + std::chrono::seconds(10);
       SteadyClock::now() < deadline && fs::exists(orphan);)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(fs::exists(orphan));
  EXPECT_NE(server_->Log().find("attachment_orphans_removed"), std::string::npos) << server_->Log();
  HttpResponse down = Download(Api(), alice.access_token, id);  // a new port after the restart
  EXPECT_EQ(down.status, 200) << down.Describe();
  EXPECT_TRUE(down.body == bytes) << "the kept attachment's bytes changed";
}

TEST_F(AttachmentSweepTest, AnUploadNoMessageNamesIsDeletedAfterItsTtl) {
  auto api = Api();
  TestUser alice, bob;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "sweep_al", &alice));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "sweep_bo", &bob));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, alice, bob, &conv));
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(ConnectAndResume(api, alice, &ws));
  // Upload and send back to back: the send must come within the 2 s.
  const std::string unsent = RandomBytes(30000, 41), sent = RandomBytes(30000, 42);
  HttpResponse u1 = Upload(api, alice.access_token, unsent, "image/png");
  HttpResponse u2 = Upload(api, alice.access_token, sent, "image/png");
  ASSERT_EQ(u1.status, 201) << u1.Describe();
  ASSERT_EQ(u2.status, 201) << u2.Describe();
  const std::string unsent_id = *u1.json()["attachment_id"].Str();
  const std::string sent_id = *u2.json()["attachment_id"].Str();
  Json ack = SendMedia(ws, conv, *u2.json()["media_url"].Str());
  ASSERT_EQ(ack["event"].Str(), "message_ack"s) << ack;

  // Gone within the TTL and two sweeps: 404 like an id never uploaded, bytes removed.
  HttpResponse gone;
  for (auto deadline = SteadyClock::now() + std::chrono::seconds(10); SteadyClock::now() < deadline;) {
    gone = Download(api, alice.access_token, unsent_id);
    if (gone.status != 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(gone.status, 404) << gone.Describe();
  EXPECT_EQ(gone.ErrorCode(), "not_found");
  // The record goes first, the file right after, then the pass logs and counts: wait
  // for the count before looking at the disk.
  HttpResponse m;
  for (auto deadline = SteadyClock::now() + std::chrono::seconds(10); SteadyClock::now() < deadline;) {
    m = api.Request("GET", "/metrics");
    if (m.body.find("switchboard_attachments_swept_total 1\n") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(m.body.find("switchboard_attachments_swept_total 1\n"), std::string::npos) << m.body;
  EXPECT_NE(m.body.find("switchboard_attachment_bytes_swept_total 30000\n"), std::string::npos);
  EXPECT_NE(server_->Log().find("attachments_swept"), std::string::npos);
  const std::string hex = unsent_id.substr(4);
  EXPECT_FALSE(fs::exists(server_->data_dir() + "/attachments/" + hex.substr(0, 2) + "/" + hex.substr(2, 2) + "/" + hex));
  // Sending it now is refused like any unknown attachment.
  Json refused = SendMedia(ws, conv, *u1.json()["media_url"].Str());
  EXPECT_EQ(refused["event"].Str(), "error"s) << refused;
  EXPECT_EQ(refused["code"].Str(), "not_found"s) << refused;

  // The sent one is as old, and stays: for its sender and for the other member.
  HttpResponse kept = Download(api, bob.access_token, sent_id);
  EXPECT_EQ(kept.status, 200) << kept.Describe();
  EXPECT_TRUE(kept.body == sent);
  EXPECT_EQ(Download(api, alice.access_token, sent_id).status, 200);

  // The same bytes uploaded again are stored again.
  HttpResponse again = Upload(api, alice.access_token, unsent, "image/png");
  ASSERT_EQ(again.status, 201) << again.Describe();
  HttpResponse back = Download(api, alice.access_token, unsent_id);
  EXPECT_EQ(back.status, 200) << back.Describe();
  EXPECT_TRUE(back.body == unsent);
}

class AttachmentLimitsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess(ServerProcess::Options{
        .extra_args = {"--set", "limits.max_attachment_bytes=100000", "--set", "server.max_concurrent_uploads=2",
                       "--set", "server.handshake_timeout_ms=1000", "--set", "server.upload_timeout_ms=4000",
                       "--set", "limits.upload_bytes_per_user_per_day=300000"}});
    server_->Start();
  }
  static void TearDownTestSuite() {
    if (server_ && server_->running()) server_->Stop();
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(server_->running()) << server_->error(); }
  static RestClient Api() { return RestClient(server_->host(), server_->port()); }
  static std::string TempDir() { return server_->data_dir() + "/attachments/tmp"; }
  static ServerProcess* server_;
};
ServerProcess* AttachmentLimitsTest::server_ = nullptr;

TEST_F(AttachmentLimitsTest, ConcurrentUploadsAreBoundedWith503) {
  auto api = Api();
  TestUser alice;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_conc", &alice));
  const std::string bytes = RandomBytes(50000, 9);
  const std::string head = UploadHead(alice.access_token, {"Content-Length: " + std::to_string(bytes.size()),
                                                           "Connection: close"});
  // Two uploads in progress (head and half the body sent)...
  RawConn a, b;
  for (RawConn* c : {&a, &b}) {
    ASSERT_TRUE(c->Connect(server_->host(), server_->port())) << c->error();
    ASSERT_TRUE(c->Write(head + bytes.substr(0, bytes.size() / 2)));
  }
  // ... until the server has seen both (their temp files exist).
  for (int i = 0; i < 100 && FilesUnder(TempDir()) < 2; ++i) std::this_thread::sleep_for(Millis(20));
  ASSERT_EQ(FilesUnder(TempDir()), 2u);
  // A third is refused at once.
  HttpResponse third = Upload(api, alice.access_token, "x", "image/png");
  EXPECT_EQ(third.status, 503) << third.Describe();
  EXPECT_EQ(third.ErrorCode(), "unavailable");
  // The two complete.
  for (RawConn* c : {&a, &b}) {
    ASSERT_TRUE(c->Write(bytes.substr(bytes.size() / 2)));
    HttpResponse r = ReadHttpResponse(*c);
    EXPECT_EQ(r.status, 201) << r.Describe() << r.error;
  }
  EXPECT_EQ(Upload(api, alice.access_token, "x", "image/png").status, 201) << "slots are given back";
  EXPECT_EQ(FilesUnder(TempDir()), 0u);
}

// A slow upload is not cut at the handshake timeout (1 s here): the body has its own
// timeout (4 s here); one that stalls past it is dropped and its temp file removed.
TEST_F(AttachmentLimitsTest, SlowBodiesGetTheBodyTimeoutNotTheHandshakeTimeout) {
  auto api = Api();
  TestUser alice;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_slow", &alice));
  const std::string bytes = RandomBytes(30000, 10);
  RawConn c;
  ASSERT_TRUE(c.Connect(server_->host(), server_->port())) << c.error();
  ASSERT_TRUE(c.Write(UploadHead(alice.access_token, {"Content-Length: " + std::to_string(bytes.size()),
                                                      "Connection: close"})));
  for (size_t i = 0; i < 6; ++i) {  // ~2.4 s in all, well past the handshake timeout
    std::this_thread::sleep_for(Millis(400));
    ASSERT_TRUE(c.Write(bytes.substr(i * 5000, 5000))) << "cut after " << i << " pieces: " << c.error();
  }
  HttpResponse r = ReadHttpResponse(c);
  ASSERT_EQ(r.status, 201) << r.Describe() << r.error;
  EXPECT_EQ(r.json()["size"].Int(), 30000);

  RawConn stalled;
  ASSERT_TRUE(stalled.Connect(server_->host(), server_->port())) << stalled.error();
  ASSERT_TRUE(stalled.Write(UploadHead(alice.access_token, {"Content-Length: 30000"}) + bytes.substr(0, 1000)));
  EXPECT_TRUE(stalled.WaitClosed(Millis(15000))) << "a stalled upload was never dropped";
  EXPECT_EQ(stalled.buffer(), "") << "a timed-out upload gets no answer";
  // The timeout closes the socket first; the temp file goes right after.
  for (int i = 0; i < 100 && FilesUnder(TempDir()) > 0; ++i) std::this_thread::sleep_for(Millis(20));
  EXPECT_EQ(FilesUnder(TempDir()), 0u);
}

TEST_F(AttachmentLimitsTest, TheConfiguredLimitApplies) {
  auto api = Api();
  TestUser alice;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_lim", &alice));
  EXPECT_EQ(Upload(api, alice.access_token, RandomBytes(100000, 11), "image/png").status, 201);
  HttpResponse over = Upload(api, alice.access_token, RandomBytes(100001, 12), "image/png");
  EXPECT_EQ(over.status, 413) << over.Describe();
  // Chunked, a little over.
  RawConn c;
  ASSERT_TRUE(c.Connect(server_->host(), server_->port())) << c.error();
  ASSERT_TRUE(c.Write(UploadHead(alice.access_token, {"Transfer-Encoding: chunked"}) +
                      ChunkedBody(RandomBytes(100001, 13), 30000)));
  HttpResponse r = ReadHttpResponse(c);
  EXPECT_EQ(r.status, 413) << r.Describe() << r.error;
  EXPECT_EQ(FilesUnder(TempDir()), 0u);
}

// 300,000 bytes a day per user here: past it, 429 with when to come back; others are
// not affected.
TEST_F(AttachmentLimitsTest, TheDailyUploadQuotaIs429WithRetryAfter) {
  auto api = Api();
  TestUser alice, bob;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_quota", &alice));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "att_quota2", &bob));
  for (int i = 0; i < 3; ++i) {
    HttpResponse r = Upload(api, alice.access_token, RandomBytes(95000, 20 + i), "image/png");
    EXPECT_EQ(r.status, 201) << r.Describe();
  }
  HttpResponse over = Upload(api, alice.access_token, RandomBytes(50000, 30), "image/png");
  EXPECT_EQ(over.status, 429) << over.Describe();
  EXPECT_EQ(over.ErrorCode(), "rate_limited");
  // 35,000 bytes short at 300,000 a day: 10,080 s, less what refilled meanwhile
  // (3.5 bytes a second).
  int retry_after = std::atoi(over.Header("Retry-After").c_str());
  EXPECT_LE(retry_after, 10080) << over.Header("Retry-After");
  EXPECT_GE(retry_after, 10000) << over.Header("Retry-After");
  // What is left still fits.
  EXPECT_EQ(Upload(api, alice.access_token, RandomBytes(15000, 31), "image/png").status, 201);
  EXPECT_EQ(Upload(api, bob.access_token, RandomBytes(95000, 32), "image/png").status, 201);
  EXPECT_EQ(FilesUnder(TempDir()), 0u);
}

// Runs last in the suite: it restarts the server.
TEST_F(AttachmentLimitsTest, ZZCrashMidUploadLeavesATempFileThatTheRestartRemoves) {
  auto api = Api();
  TestUser alice;
  const std::string kept = RandomBytes(20000, 14);
  std::string id;
  ASSERT_NO_FATAL_FAILURE(NewUploader(api, "att_crash", kept, &alice, &id));

  RawConn c;
  ASSERT_TRUE(c.Connect(server_->host(), server_->port())) << c.error();
  ASSERT_TRUE(c.Write(UploadHead(alice.access_token, {"Content-Length: 50000"}) + RandomBytes(10000, 15)));
  for (int i = 0; i < 100 && FilesUnder(TempDir()) < 1; ++i) std::this_thread::sleep_for(Millis(20));
  ASSERT_EQ(FilesUnder(TempDir()), 1u);
  server_->Kill9();
  EXPECT_EQ(FilesUnder(TempDir()), 1u) << "the interrupted upload's temp file";
  ASSERT_TRUE(server_->Restart()) << server_->error();
  EXPECT_EQ(FilesUnder(TempDir()), 0u);
  // The completed upload survived: same bytes, same reader rights.
  TestUser again;
  ASSERT_NO_FATAL_FAILURE(LoginDevice(Api(), alice, "dev-2", &again));
  HttpResponse d = Download(Api(), again.access_token, id);
  ASSERT_EQ(d.status, 200) << d.Describe();
  EXPECT_TRUE(d.body == kept);
}

}  // namespace
}  // namespace sb::test
