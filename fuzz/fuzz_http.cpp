// The HTTP request layer: Beast's request parser with the gateway's limits, our
// own helpers around it (PercentDecode, ParseQuery, BearerToken) and the REST router
// (RestApi::Handle) against the real embedded store and a real TokenService.
//
// Input modes (first byte):
//   'S'  structured: the rest is method 0xff target 0xff authorization 0xff
//        content-type 0xff body; the target is split into path and query exactly as
//        the gateway does (PercentDecode / ParseQuery), then RestApi::Handle.
//   else raw bytes on the wire: fed to http::request_parser<string_body> with the
//        gateway's limits (header 8 KiB, body 1 MiB) in chunks whose size the first
//        byte picks (as a socket would deliver them); a complete request then takes
//        the gateway's route: upgrade requests the token check, others the REST API.
// In the authorization, "@A" / "@B" stand for a valid access token of alice / bob,
// so that mutations of seed requests keep reaching the authenticated routes.
//
// Invariants:
//  * no crash, no sanitizer report, no exception;
//  * the helpers: a decoded string is never longer than its input; BearerToken returns
//    a trimmed sub-range of its argument and only after a "Bearer " prefix;
//  * a complete request's body never exceeds the body limit;
//  * every response has a status in [200, 599]; every JSON response body is one valid
//    JSON value (our writer's escaping holds for whatever the client sent), except
//    a 204's, which must be empty;
//  * no 2xx answer to an authenticated route without one of our tokens.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include <cstdint>
#include <string>

#include "api/http_types.h"
#include "api/rest_api.h"
#include "api/web_assets.h"
#include "auth/password.h"
#include "auth/revocations.h"
#include "auth/tokens.h"
#include "base/clock.h"
#include "base/ids.h"
#include "fuzz_support.h"
#include "store/store.h"

namespace sb::fuzz {
namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;

constexpr UserId kAlice = 11, kBob = 22, kCarol = 33;
constexpr size_t kHeaderLimit = 8192;      // gateway default (server.max_header_bytes)
constexpr size_t kBodyLimit = 1024 * 1024;  // limits.max_rest_body_bytes
// A refresh token in the store, put back when a refresh (which rotates it) or a
// log-out used it up.
constexpr std::string_view kRefresh = "fuzzrefreshtokenAAAAAAAAAAAAAAAAAAAAAAAAAAA";

// Inputs change the fixture for good (groups lose members, users pile up): start
// over from a fresh store this often, so a long run keeps exploring from the seeds'
// state instead of from wherever the fuzzer drifted.
constexpr uint64_t kResetInputs = 20000;

struct Env {
  TempDir dir{"fuzz-http"};
  ManualClock clock{1796083200000};
  std::shared_ptr<const auth::KeyRing> keys;
  std::unique_ptr<auth::TokenService> tokens;
  api::RestOptions ro;
  // Rebuilt by Reset():
  std::unique_ptr<store::Store> store;
  std::unique_ptr<auth::Revocations> revoked;
  std::unique_ptr<api::RestApi> rest;
  int generation = 0;
  uint64_t inputs = 0;
  std::string alice_token, bob_token;

  Env() {
    auto ring = auth::KeyRing::LoadOrCreate(dir.path() + "/keys");
    FUZZ_CHECK(ring.ok(), "keys: %s", ring.status().message().c_str());
    keys = *ring;
    tokens = std::make_unique<auth::TokenService>(keys, auth::TokenConfig{}, clock);
    // The cheapest argon2id libsodium allows: a login costs microseconds, not 50 ms.
    ro.password.ops = 1;
    ro.password.mem_kib = 8;
    Open();
  }

  std::string StoreDir() const { return dir.path() + "/store-" + std::to_string(generation); }

  void Open() {
    store::StoreOptions so;
    so.dir = StoreDir();
    so.sync = store::SyncPolicy::kNone;
    so.cache_bytes = 8 << 20;
    so.write_buffer_bytes = 4 << 20;
    auto opened = store::OpenEmbeddedStore(so);
    FUZZ_CHECK(opened.ok(), "open store: %s", opened.status().message().c_str());
    store = std::move(opened).value();
    revoked = std::make_unique<auth::Revocations>();
    rest = std::make_unique<api::RestApi>(*store, *tokens, *revoked, ro, clock);
    rest->SetPresenceQuery([](UserId viewer, UserId target) -> std::optional<chat::PresenceView> {
      if (viewer == target || target == kBob) return chat::PresenceView{target == kBob, 1796083100000};
      return std::nullopt;
    });

    auto hash = auth::HashPassword("correct horse", ro.password);
    FUZZ_CHECK(hash.ok(), "hash");
    for (auto [id, name] : {std::pair{kAlice, "alice"}, {kBob, "bob"}, {kCarol, "carol"}}) {
      store::User u;
      u.id = id;
      u.username = name;
      u.display_name = std::string("The ") + name;
      u.password_hash = *hash;
      FUZZ_CHECK(store->CreateUser(u).ok(), "create user");
    }
    auto conv = [&](ConvId id, store::ConvType t, std::vector<UserId> members) {
      store::Conversation c;
      c.id = id;
      c.type = t;
      c.title = "t" + std::to_string(id);
      c.members = std::move(members);
      c.created_by = c.members.front();
      bool created = false;
      FUZZ_CHECK(store->CreateConversation(c, &created).ok(), "create conversation");
    };
    conv(1001, store::ConvType::kGroup, {kAlice, kBob, kCarol});  // alice owns it
    conv(2002, store::ConvType::kDirect, {kBob, kCarol});
    std::vector<store::Message> msgs;
    for (Seq s = 1; s <= 5; ++s) {
      store::Message m;
      m.conv = 1001;
      m.seq = s;
      m.sender = s % 2 ? kAlice : kBob;
      m.sender_device = "phone";
      m.client_msg_id = "c" + std::to_string(s);
      m.content = "hello \"" + std::to_string(s) + "\" \xc3\xa9";
      m.server_ms = m.sent_ms = 1796083100000 + int64_t(s);
      msgs.push_back(m);
    }
    FUZZ_CHECK(store->AppendMessages(msgs).ok(), "append");
    store::CommitBatch b;
    b.receipts.push_back({1001, store::MemberReceipt{kBob, 4, 2, 1796083100010, 1796083100020}});
    FUZZ_CHECK(store->Commit(b).ok(), "commit");
  }

  void Reset() {
    rest.reset();
    revoked.reset();
    store.reset();
    std::error_code ec;
    std::filesystem::remove_all(StoreDir(), ec);
    ++generation;
    Open();
  }

  // Before every input: a minute passes, so that login rate limits refill and a
  // log-out of an earlier input (which revokes the device's tokens issued up to then)
  // does not lock the fuzzer out; then fresh tokens and a fresh refresh token.
  void NextInput() {
    if (++inputs % kResetInputs == 0) Reset();
    clock.Advance(60 * 1000);
    alice_token = tokens->IssueAccess(kAlice, "phone");
    bob_token = tokens->IssueAccess(kBob, "laptop");
    // Account writes are always synced: put it back only after a refresh or a log-out
    // consumed it, not on every input.
    if (store->GetRefreshToken(auth::HashRefreshToken(kRefresh)).ok()) return;
    store::RefreshToken rt;
    rt.token_hash = auth::HashRefreshToken(kRefresh);
    rt.user = kAlice;
    rt.device_id = "phone";
    rt.created_ms = clock.NowMs();
    rt.expires_ms = rt.created_ms + 3650LL * 86400 * 1000;
    FUZZ_CHECK(store->PutRefreshToken(rt).ok(), "put refresh token");
  }

  // "@A" / "@B" -> real tokens. Returns whether one was substituted.
  bool Substitute(std::string* auth) {
    bool any = false;
    for (auto [ph, tok] : {std::pair<std::string_view, const std::string*>{"@A", &alice_token}, {"@B", &bob_token}}) {
      size_t at;
      while ((at = auth->find(ph)) != std::string::npos) {
        auth->replace(at, ph.size(), *tok);
        any = true;
      }
    }
    return any;
  }
};

Env& E() {
  static Env* env = new Env();  // never destroyed: inputs run until exit
  return *env;
}


// The routes the REST API answers without a token (rest_api.cpp).
bool UnauthenticatedRoute(const api::HttpRequest& r) {
  if (r.method == "GET" && api::FindWebAsset(r.path)) return true;  // the web client's files
  auto s = api::PathSegments(r.path);
  if (s.size() == 1 && r.method == "GET") return s[0] == "healthz" || s[0] == "readyz" || s[0] == "metrics";
  if (r.method != "POST" || s.empty() || s[0] != "v1") return false;
  return (s.size() == 2 && (s[1] == "users" || s[1] == "sessions")) ||
         (s.size() == 3 && s[1] == "sessions" && s[2] == "refresh");
}

void CheckHelpers(std::string_view target, std::string_view authorization) {
  std::string dec = api::PercentDecode(target);
  FUZZ_CHECK(dec.size() <= target.size(), "PercentDecode grew %zu -> %zu", target.size(), dec.size());
  if (target.find_first_of("%+") == std::string_view::npos)
    FUZZ_CHECK(dec == target, "PercentDecode changed a string without escapes");
  size_t amps = std::count(target.begin(), target.end(), '&');
  auto q = api::ParseQuery(target);
  FUZZ_CHECK(q.size() <= amps + 1, "ParseQuery made %zu pairs from %zu '&'", q.size(), amps);
  for (auto& [k, v] : q) FUZZ_CHECK(k.size() + v.size() <= target.size(), "ParseQuery grew a pair");

  std::string_view tok = api::BearerToken(authorization);
  if (!tok.empty()) {
    FUZZ_CHECK(tok.data() >= authorization.data() + 7 &&
                   tok.data() + tok.size() <= authorization.data() + authorization.size(),
               "BearerToken returned a range outside its argument");
    FUZZ_CHECK(tok.front() != ' ' && tok.back() != ' ', "BearerToken did not trim");
    FUZZ_CHECK((authorization[0] == 'B' || authorization[0] == 'b') && authorization[6] == ' ',
               "BearerToken accepted a non-Bearer scheme");
  }
}

void Handle(Env& e, api::HttpRequest& req, simdjson::dom::parser& json) {
  bool have_token = e.Substitute(&req.authorization);
  api::HttpResponse res = e.rest->Handle(req);
  FUZZ_CHECK(res.status >= 200 && res.status <= 599, "status %d", res.status);
  if (res.status == 204) {
    FUZZ_CHECK(res.body.empty(), "204 with a body");
  } else if (res.content_type == "application/json") {
    simdjson::dom::element doc;
    FUZZ_CHECK(json.parse(res.body.data(), res.body.size(), true).get(doc) == simdjson::SUCCESS,
               "response body is not valid JSON (status %d): %s", res.status, res.body.c_str());
  }
  if (res.status < 300 && !have_token)
    FUZZ_CHECK(UnauthenticatedRoute(req), "%s %s answered %d without a token", req.method.c_str(),
               req.path.c_str(), res.status);
}

// What the gateway does with a target (src/gateway/server.cpp, FromBeast).
void SplitTarget(std::string_view target, api::HttpRequest* r) {
  size_t q = target.find('?');
  r->path = api::PercentDecode(target.substr(0, q));
  if (q != std::string_view::npos) r->query = api::ParseQuery(target.substr(q + 1));
}

void Structured(Env& e, std::string_view in, simdjson::dom::parser& json) {
  auto f = SplitFF(in);
  // Anything after a fifth 0xff belongs to the body too.
  std::string body = f.size() >= 5 ? std::string(in.substr(f[4].data() - in.data())) : std::string();
  f.resize(std::max<size_t>(f.size(), 5));
  api::HttpRequest req;
  req.method = std::string(f[0]);
  SplitTarget(f[1], &req);
  req.authorization = std::string(f[2]);
  req.content_type = std::string(f[3]);
  req.body = std::move(body);
  req.remote = "127.0.0.1";
  CheckHelpers(f[1], req.authorization);
  Handle(e, req, json);
}

void Raw(Env& e, std::string_view in, simdjson::dom::parser& json) {
  // The first byte picks the chunk size: 1..255 bytes per read, 0 = all at once.
  size_t chunk = in.empty() ? 0 : static_cast<uint8_t>(in[0]);
  if (!in.empty()) in.remove_prefix(1);
  if (chunk == 0) chunk = in.size() + 1;
  http::request_parser<http::string_body> parser;
  parser.header_limit(static_cast<std::uint32_t>(kHeaderLimit));
  parser.body_limit(kBodyLimit);
  parser.eager(true);
  beast::error_code ec;
  std::string buf;  // received, not yet consumed (what beast::flat_buffer holds)
  size_t fed = 0;
  while (!parser.is_done()) {
    if (fed < in.size()) {
      size_t n = std::min(chunk, in.size() - fed);
      buf.append(in.data() + fed, n);
      fed += n;
    }
    size_t used = parser.put(boost::asio::buffer(buf.data(), buf.size()), ec);
    buf.erase(0, used);
    if (ec == http::error::need_more) {
      ec = {};
      if (fed == in.size()) {  // the peer closed the connection
        parser.put_eof(ec);
        break;
      }
      continue;
    }
    if (ec) break;
    if (used == 0 && fed == in.size()) break;
  }
  if (ec || !parser.is_done()) return;
  auto& msg = parser.get();
  FUZZ_CHECK(msg.body().size() <= kBodyLimit, "body of %zu bytes passed the limit", msg.body().size());

  std::string_view target(msg.target().data(), msg.target().size());
  auto field = [&](http::field f) {
    auto v = msg[f];
    return std::string(v.data(), v.size());
  };
  if (beast::websocket::is_upgrade(msg)) {
    // The gateway's upgrade check: bearer header, else ?access_token=, then Verify.
    std::string auth = field(http::field::authorization);
    bool have = e.Substitute(&auth);
    std::string token(api::BearerToken(auth));
    size_t q = target.find('?');
    if (token.empty() && q != std::string_view::npos)
      for (auto& [k, v] : api::ParseQuery(target.substr(q + 1)))
        if (k == "access_token") token = v;
    have = e.Substitute(&token) || have;
    auto claims = e.tokens->Verify(token);
    if (claims.ok()) FUZZ_CHECK(have, "upgrade accepted without one of our tokens");
    return;
  }
  api::HttpRequest req;
  req.method = std::string(msg.method_string().data(), msg.method_string().size());
  SplitTarget(target, &req);
  req.authorization = field(http::field::authorization);
  req.content_type = field(http::field::content_type);
  req.body = msg.body();
  req.remote = "127.0.0.1";
  CheckHelpers(target, req.authorization);
  Handle(e, req, json);
}

}  // namespace
}  // namespace sb::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  sb::fuzz::QuietLogs();
  sb::fuzz::E();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sb::fuzz;
  static simdjson::dom::parser json;
  Env& e = E();
  e.NextInput();
  std::string_view in = AsView(data, size);
  if (!in.empty() && in[0] == 'S') Structured(e, in.substr(1), json);
  else Raw(e, in, json);
  return 0;
}
