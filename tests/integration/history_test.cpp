// History pages (docs/protocol.md: GET /v1/conversations/{id}/messages).
#include <map>

#include "test_support.h"

namespace sb::test {
namespace {

using client::HistoryQuery;
using client::HttpResponse;

class HistoryTest : public SharedServerTest {};

std::vector<int64_t> Seqs(int64_t from, int64_t to) {  // inclusive, either direction
  std::vector<int64_t> out;
  if (from <= to) {
    for (int64_t s = from; s <= to; ++s) out.push_back(s);
  } else {
    for (int64_t s = from; s >= to; --s) out.push_back(s);
  }
  return out;
}

std::string Query(const HistoryQuery& q) {
  std::string s;
  if (q.before_seq) s += " before_seq=" + std::to_string(*q.before_seq);
  if (q.after_seq) s += " after_seq=" + std::to_string(*q.after_seq);
  if (q.limit) s += " limit=" + std::to_string(*q.limit);
  return s.empty() ? " (no parameters)" : s;
}

// Sends `n` messages from `user` over ceil(n/per_conn) connections (one device each),
// one batch after the other so the per-connection send rate limit is never reached.
void Fill(const RestClient& api, const TestUser& user, const std::string& conv, int n, int per_conn,
          std::map<int64_t, Acked>* by_seq) {
  int sent = 0;
  for (int c = 0; sent < n; ++c) {
    TestUser dev;
    ASSERT_NO_FATAL_FAILURE(LoginDevice(api, user, "filler-" + std::to_string(c), &dev));
    WsClient ws;
    ASSERT_NO_FATAL_FAILURE(ConnectWs(api, dev, &ws));
    std::vector<std::string> contents;
    for (; sent < n && static_cast<int>(contents.size()) < per_conn; ++sent) {
      contents.push_back("history message " + std::to_string(sent));
    }
    std::vector<Acked> acks;
    ASSERT_NO_FATAL_FAILURE(SendBatch(ws, conv, contents, &acks));
    for (auto& a : acks) {
      ASSERT_TRUE(by_seq->emplace(a.seq, a).second) << "two acks with seq " << a.seq;
    }
  }
  ASSERT_EQ(static_cast<int>(by_seq->size()), n);
  EXPECT_EQ(by_seq->begin()->first, 1);
  EXPECT_EQ(by_seq->rbegin()->first, n) << "acked seqs are not 1.." << n << " without gaps";
}

class HistoryPages {
 public:
  HistoryPages(RestClient api, TestUser reader, std::string conv, std::string sender_id,
               const std::map<int64_t, Acked>* by_seq)
      : api_(std::move(api)),
        reader_(std::move(reader)),
        conv_(std::move(conv)),
        sender_id_(std::move(sender_id)),
        by_seq_(by_seq) {}

  // Fetches one page and checks its seqs (in order), has_more and every message.
  void Expect(const HistoryQuery& q, const std::vector<int64_t>& seqs, bool has_more) {
    SCOPED_TRACE("GET messages" + Query(q));
    HttpResponse r = api_.History(reader_.access_token, conv_, q);
    ASSERT_EQ(r.status, 200) << r.Describe();
    Json j = r.json();
    ASSERT_TRUE(j["messages"].IsArray()) << r.Describe();
    std::vector<int64_t> got;
    for (const Json& m : j["messages"].Items()) got.push_back(m["seq"].IntOr(-1));
    EXPECT_EQ(got, seqs);
    EXPECT_EQ(j["has_more"].Bool(), has_more) << "has_more";
    for (const Json& m : j["messages"].Items()) {
      auto it = by_seq_->find(m["seq"].IntOr(-1));
      ASSERT_NE(it, by_seq_->end()) << "unknown seq: " << m;
      EXPECT_EQ(m["message_id"].Str(), it->second.message_id) << m;
      EXPECT_EQ(m["client_msg_id"].Str(), it->second.client_msg_id) << m;
      EXPECT_EQ(m["content"].Str(), it->second.content) << m;
      EXPECT_EQ(m["conversation_id"].Str(), conv_) << m;
      EXPECT_EQ(m["sender_id"].Str(), sender_id_) << m;
      EXPECT_EQ(m["content_type"].Str(), "text"s) << m;
      EXPECT_TRUE(m["server_timestamp_ms"].IsInt()) << m;
      EXPECT_TRUE(m["sent_timestamp_ms"].IsInt()) << m;
    }
  }

 private:
  RestClient api_;
  TestUser reader_;
  std::string conv_;
  std::string sender_id_;
  const std::map<int64_t, Acked>* by_seq_;
};

TEST_F(HistoryTest, PagesForwardAndBackwardWithDefaultLimitAndHasMore) {
  RestClient api = Api();
  TestUser a, b;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "hista", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "histb", &b));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &conv));
  std::map<int64_t, Acked> by_seq;
  ASSERT_NO_FATAL_FAILURE(Fill(api, a, conv, 120, 60, &by_seq));

  HistoryPages pages(api, b, conv, a.user_id, &by_seq);
  // after_seq: oldest first; the default limit is 50.
  pages.Expect({.after_seq = 0}, Seqs(1, 50), true);
  pages.Expect({.after_seq = 50, .limit = 50}, Seqs(51, 100), true);
  pages.Expect({.after_seq = 100, .limit = 50}, Seqs(101, 120), false);
  pages.Expect({.after_seq = 120}, {}, false);
  pages.Expect({.after_seq = 0, .limit = 200}, Seqs(1, 120), false);
  pages.Expect({.after_seq = 0, .limit = 120}, Seqs(1, 120), false);
  pages.Expect({.after_seq = 117, .limit = 1}, {118}, true);
  // before_seq: newest first.
  pages.Expect({.before_seq = 121}, Seqs(120, 71), true);
  pages.Expect({.before_seq = 71, .limit = 50}, Seqs(70, 21), true);
  pages.Expect({.before_seq = 21, .limit = 50}, Seqs(20, 1), false);
  pages.Expect({.before_seq = 1}, {}, false);
  pages.Expect({.before_seq = 4, .limit = 2}, {3, 2}, true);

  // No cursor at all still pages by the default limit.
  HttpResponse r = api.History(b.access_token, conv);
  ASSERT_EQ(r.status, 200) << r.Describe();
  EXPECT_EQ(r.json()["messages"].Size(), 50u) << "default limit is 50: " << r.Describe();
  EXPECT_EQ(r.json()["has_more"].Bool(), true) << r.Describe();
}

TEST_F(HistoryTest, LimitAbove200IsCappedOrRejected) {
  RestClient api = Api();
  TestUser a, b;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "capa", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "capb", &b));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &conv));
  std::map<int64_t, Acked> by_seq;
  ASSERT_NO_FATAL_FAILURE(Fill(api, a, conv, 201, 67, &by_seq));

  HistoryPages pages(api, b, conv, a.user_id, &by_seq);
  pages.Expect({.after_seq = 0, .limit = 200}, Seqs(1, 200), true);
  pages.Expect({.after_seq = 200, .limit = 200}, {201}, false);
  pages.Expect({.before_seq = 202, .limit = 200}, Seqs(201, 2), true);

  // "max 200": a larger limit is either capped or refused, never honoured.
  HttpResponse r = api.History(b.access_token, conv, {.after_seq = 0, .limit = 500});
  if (r.status == 400) {
    EXPECT_EQ(r.ErrorCode(), "bad_request") << r.Describe();
  } else {
    ASSERT_EQ(r.status, 200) << "limit=500 must be capped (200) or refused (400): " << r.Describe();
    EXPECT_EQ(r.json()["messages"].Size(), 200u) << "limit=500 must be capped at 200";
    EXPECT_EQ(r.json()["has_more"].Bool(), true) << "limit=500 capped at 200 of 201";
  }
}

}  // namespace
}  // namespace sb::test
