// Retention end to end (store/retention.h): with a retention of a few seconds in
// one-second buckets, old messages leave history and search, the sequence goes on, and
// a resume whose cursor lies below what was kept names the conversation in
// resume_done.truncated (Guarantee 6: no silent gaps).
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <chrono>
#include <thread>

#include "server_process.h"
#include "test_support.h"

namespace sb::test {
namespace {

using namespace std::string_literals;
using client::HttpResponse;

// Rows of the full-text index whose text matches `word`, read from the server's
// search.db beside it (WAL: a reader never disturbs the indexer); -1 on an error.
int64_t IndexedRows(const std::string& data_dir, const std::string& word) {
  sqlite3* db = nullptr;
  int64_t n = -1;
  if (sqlite3_open_v2((data_dir + "/search.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM msg WHERE msg MATCH ?1", -1, &st, nullptr) == SQLITE_OK) {
      sqlite3_bind_text(st, 1, word.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return n;
}

class RetentionTest : public ::testing::Test {
 protected:
  RetentionTest()
      : server_(ServerProcess::Options{{"--set", "store.retention=4s", "--set", "store.retention_bucket=second",
                                        "--set", "store.retention_interval_s=1"}}) {}
  void SetUp() override { ASSERT_TRUE(server_.Start()) << server_.error(); }
  void TearDown() override {
    if (HasFailure()) std::cout << "---- server log tail ----\n" << server_.LogTail(30) << "----\n";
  }
  RestClient Api() const { return RestClient(server_.host(), server_.port()); }
  ServerProcess server_;
};

TEST_F(RetentionTest, OldHistoryIsDroppedAndResumeSaysSo) {
  RestClient api = Api();
  TestUser a, b;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rta", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "rtb", &b));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &conv));
  WsClient aw;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a, &aw));
  Json ack;
  for (int i = 1; i <= 2; ++i) ASSERT_NO_FATAL_FAILURE(SendAndAck(aw, conv, "ephemeral zebra " + std::to_string(i), &ack));
  // The third carries a picture (and the word in its caption).
  HttpResponse up = api.Request("POST", "/v1/attachments", "a picture of a zebra", a.access_token,
                                {{"Content-Type", "image/png"}});
  ASSERT_EQ(up.status, 201) << up.Describe();
  const std::string picture = *up.json()["media_url"].Str();
  client::OutgoingMessage pm{.client_msg_id = client::NewClientMsgId(), .conversation_id = conv,
                             .content = "ephemeral zebra 3", .content_type = "image", .media_url = picture};
  ASSERT_TRUE(aw.Send(client::SendMessageFrame(pm))) << aw.error();
  ack = AwaitReply(aw, pm.client_msg_id);
  EXPECT_EQ(ack["seq"].Int(), 3) << ack;
  EXPECT_EQ(api.Request("GET", picture, {}, b.access_token).status, 200);
  // Searchable while kept (the index catches up asynchronously).
  bool found = false;
  for (int i = 0; i < 100 && !found; ++i) {
    HttpResponse s = api.Search(b.access_token, "zebra");
    found = s.status == 200 && s.json()["results"].Items().size() == 3;
    if (!found) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(found);

  // Within a few passes the three messages are gone from history.
  bool dropped = false;
  for (int i = 0; i < 300 && !dropped; ++i) {
    HttpResponse h = api.History(b.access_token, conv);
    ASSERT_EQ(h.status, 200) << h.Describe();
    dropped = h.json()["messages"].Items().empty();
    if (!dropped) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(dropped) << "history still there after 30 s";
  HttpResponse s = api.Search(b.access_token, "zebra");
  ASSERT_EQ(s.status, 200) << s.Describe();
  EXPECT_TRUE(s.json()["results"].Items().empty()) << s.Describe();
  // And not only hidden: their rows leave the full-text index too.
  int64_t rows = IndexedRows(server_.data_dir(), "zebra");
  for (int i = 0; i < 100 && rows != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    rows = IndexedRows(server_.data_dir(), "zebra");
  }
  EXPECT_EQ(rows, 0) << "the dropped messages' words are still in search.db";
  // The picture went with its message for Bob; Alice uploaded it and keeps it (until the
  // unreferenced-attachment sweep, a day later by default).
  EXPECT_EQ(api.Request("GET", picture, {}, b.access_token).status, 404);
  EXPECT_EQ(api.Request("GET", picture, {}, a.access_token).status, 200);

  // The sequence goes on after the dropped messages.
  ASSERT_NO_FATAL_FAILURE(SendAndAck(aw, conv, "fresh", &ack));
  EXPECT_EQ(ack["seq"].Int(), 4);

  // A device that had nothing learns that history before its cursor is gone; it gets
  // what is kept.
  WsClient bw;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, b, &bw));
  ResumeResult r;
  ASSERT_NO_FATAL_FAILURE(Resume(bw, std::map<std::string, int64_t>{{conv, 0}}, &r));
  std::vector<std::string> truncated;
  for (const Json& c : r.done["truncated"].Items()) truncated.push_back(c.StrOr(""));
  EXPECT_EQ(truncated, std::vector<std::string>{conv}) << r.done;
  auto msgs = FramesOf(r.frames, "message");
  ASSERT_EQ(msgs.size(), 1u) << r.done;
  EXPECT_EQ(msgs[0]["seq"].Int(), 4);
  // A cursor at the last dropped message lost nothing: not truncated.
  WsClient bw2;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, b, &bw2));
  ResumeResult r2;
  ASSERT_NO_FATAL_FAILURE(Resume(bw2, std::map<std::string, int64_t>{{conv, 3}}, &r2));
  EXPECT_TRUE(r2.done["truncated"].Items().empty()) << r2.done;
}

}  // namespace
}  // namespace sb::test
