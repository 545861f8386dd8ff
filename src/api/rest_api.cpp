#include "api/rest_api.h"

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <unordered_map>

#include "api/web_assets.h"
#include "base/ids.h"
#include "base/json_writer.h"
#include "base/log.h"
#include "base/utf8.h"
#include "metrics/metrics.h"
#include "protocol/server_frames.h"

namespace sb::api {
namespace {

HttpResponse Error(const Status& s) {
  HttpResponse r;
  r.status = HttpStatusFor(s.code());
  r.body = protocol::ErrorBody(s);
  return r;
}

HttpResponse Json(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}


// A JSON object body, parsed with a per-thread parser.
Result<simdjson::dom::object> ParseBody(const HttpRequest& req) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(req.body.data(), req.body.size(), true).get(doc) != simdjson::SUCCESS)
    return BadRequest("body is not valid JSON");
  simdjson::dom::object o;
  if (doc.get_object().get(o) != simdjson::SUCCESS) return BadRequest("body must be a JSON object");
  return o;
}

// Reads a string field; absent -> *out unchanged and returns OK unless required.
Status StringField(const simdjson::dom::object& o, std::string_view key, bool required, std::string* out) {
  simdjson::dom::element e;
  if (o[key].get(e) != simdjson::SUCCESS || e.is_null()) {
    if (required) return BadRequest("missing field '" + std::string(key) + "'");
    return Status::Ok();
  }
  std::string_view v;
  if (e.get_string().get(v) != simdjson::SUCCESS)
    return BadRequest("field '" + std::string(key) + "' must be a string");
  out->assign(v);
  return Status::Ok();
}

bool ValidUsername(std::string_view u) {
  if (u.size() < 3 || u.size() > 32) return false;
  for (char c : u)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return false;
  return true;
}

std::string Lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

std::optional<uint64_t> ParseUint(const std::string* s) {
  if (!s || s->empty()) return std::nullopt;
  uint64_t v = 0;
  auto r = std::from_chars(s->data(), s->data() + s->size(), v);
  if (r.ec != std::errc() || r.ptr != s->data() + s->size()) return std::nullopt;
  return v;
}

// The page and its two files: fetched again on every load (no-cache: a new binary's
// client is picked up at once; they are a few tens of KB), never framed, and allowed
// to load and connect only to this origin (so no injected markup can run scripts).
HttpResponse ServeWebAsset(const WebAsset& a) {
  HttpResponse r;
  r.content_type = std::string(a.content_type);
  r.body = std::string(a.body);
  r.headers.emplace_back("Cache-Control", "no-cache");
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  r.headers.emplace_back("Content-Security-Policy",
                         "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
                         "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
  return r;
}

void WriteUser(JsonWriter& w, const store::User& u) {
  w.Key("user_id").UserId(u.id)
      .Field("username", u.username)
      .Field("display_name", u.display_name);
}

// A user found by id or by name, as the API shows users; "no such user" otherwise.
HttpResponse UserAnswer(const Result<store::User>& u) {
  if (!u.ok()) return Error(u.status().code() == Code::kNotFound ? NotFound("no such user") : u.status());
  JsonWriter w;
  w.BeginObject();
  WriteUser(w, *u);
  w.EndObject();
  return Json(200, std::move(w).Take());
}

bool IsIn(const std::vector<UserId>& v, UserId u) { return std::binary_search(v.begin(), v.end(), u); }

// Owner and admins manage a group.
bool CanManage(const store::Conversation& c, UserId u) { return c.created_by == u || IsIn(c.admins, u); }


const Status kNoConversation = NotFound("no such conversation");

}  // namespace

struct RestApi::Ctx {
  auth::Claims claims;
};

RestApi::RestApi(store::Store& store, const auth::TokenService& tokens, auth::Revocations& revoked,
                 RestOptions opts, const Clock& clock)
    : store_(store),
      tokens_(tokens),
      opts_(std::move(opts)),
      clock_(clock),
      // Bounded at 200,000 keys each (a spray of addresses or names).
      login_ip_(opts_.limits.login_attempts_per_ip_per_min, opts_.limits.login_attempts_per_ip_per_min / 60.0,
                200000),
      login_account_(opts_.limits.login_failures_per_account_burst,
                     opts_.limits.login_failures_per_account_per_min / 60.0, 200000),
      user_lookups_(opts_.limits.user_lookups_per_user_per_min, opts_.limits.user_lookups_per_user_per_min / 60.0,
                    200000),
      revoked_(revoked) {
  auto h = auth::HashPassword("switchboard-timing-equalizer", opts_.password);
  if (h.ok()) dummy_hash_ = *h;
}

HttpResponse RestApi::Handle(const HttpRequest& req) {
  metrics::Server().http_requests.Inc();
  auto seg = PathSegments(req.path);
  const std::string& m = req.method;

  if (seg.size() == 1 && m == "GET") {
    if (seg[0] == "healthz") return Json(200, R"({"status":"ok"})");
    if (seg[0] == "readyz") {
      if (draining_) return Error(Unavailable("draining"));
      return Json(200, R"({"status":"ready"})");
    }
    if (seg[0] == "metrics") {
      HttpResponse r;
      r.content_type = "text/plain; version=0.0.4";
      r.body = metrics::Server().Render();
      return r;
    }
  }
  // The web client (web/, compiled into the binary): same origin as the API.
  if (m == "GET")
    if (const WebAsset* a = FindWebAsset(req.path)) return ServeWebAsset(*a);
  if (seg.empty() || seg[0] != "v1") return Error(NotFound("no such endpoint"));

  // Unauthenticated calls.
  if (seg.size() == 2 && seg[1] == "users" && m == "POST") return CreateUser(req);
  if (seg.size() == 2 && seg[1] == "sessions" && m == "POST") return CreateSession(req);
  if (seg.size() == 3 && seg[1] == "sessions" && seg[2] == "refresh" && m == "POST")
    return RefreshSession(req);

  Ctx c;
  {
    std::string_view tok = BearerToken(req.authorization);
    if (tok.empty()) return Error(Unauthorized("missing bearer token"));
    auto claims = tokens_.Verify(tok);
    if (!claims.ok()) return Error(claims.status());
    if (revoked_.IsRevoked(*claims)) return Error(Unauthorized("token revoked (device logged out)"));
    c.claims = std::move(*claims);
  }

  if (seg.size() == 3 && seg[1] == "sessions" && seg[2] == "logout" && m == "POST") return Logout(c, req);

  if (seg.size() == 2 && seg[1] == "search" && m == "GET") return Search(c, req);
  if (seg.size() == 2 && seg[1] == "users" && m == "GET") return FindUser(c, req);
  if (seg.size() == 3 && seg[1] == "users" && m == "GET") return GetUser(c, seg[2]);
  if (seg.size() == 4 && seg[1] == "users" && seg[3] == "presence" && m == "GET")
    return GetPresence(c, seg[2]);
  if (seg.size() == 4 && seg[1] == "users" && seg[3] == "settings" && (m == "GET" || m == "PATCH"))
    return Settings(c, seg[2], req);
  // "/v1" alone has one segment: it must not read seg[1] (found by fuzz/fuzz_http).
  if (seg.size() >= 2 && seg[1] == "conversations") {
    if (seg.size() == 2 && m == "POST") return CreateConversation(c, req);
    if (seg.size() == 2 && m == "GET") return ListConversations(c, req);
    if (seg.size() == 3 && m == "GET") return GetConversation(c, seg[2]);
    if (seg.size() == 3 && m == "PATCH") return Rename(c, seg[2], req);
    if (seg.size() == 4 && seg[3] == "members" && m == "POST") return AddMembers(c, seg[2], req);
    if (seg.size() == 5 && seg[3] == "members" && m == "DELETE") return RemoveMember(c, seg[2], seg[4]);
    if (seg.size() == 5 && seg[3] == "admins" && (m == "PUT" || m == "DELETE"))
      return SetAdmin(c, seg[2], seg[4], m == "PUT");
    if (seg.size() == 4 && seg[3] == "messages" && m == "GET") return History(c, seg[2], req);
    if (seg.size() == 6 && seg[3] == "messages" && seg[5] == "receipts" && m == "GET")
      return Receipts(c, seg[2], seg[4]);
  }
  // POST /v1/attachments and GET /v1/attachments/{id} are streamed by the gateway
  // (api/attachment_api.h) and never get here; other methods on them are 404 below.
  return Error(NotFound("no such endpoint"));
}

HttpResponse RestApi::CreateUser(const HttpRequest& req) {
  auto body = ParseBody(req);
  if (!body.ok()) return Error(body.status());
  std::string username, password, display_name;
  if (auto s = StringField(*body, "username", true, &username); !s.ok()) return Error(s);
  if (auto s = StringField(*body, "password", true, &password); !s.ok()) return Error(s);
  if (auto s = StringField(*body, "display_name", false, &display_name); !s.ok()) return Error(s);
  username = Lower(std::move(username));
  if (!ValidUsername(username))
    return Error(BadRequest("username must be 3-32 characters of a-z, 0-9, '.', '_' or '-'"));
  if (password.size() < 8 || password.size() > 1024)
    return Error(BadRequest("password must be 8 to 1024 bytes"));
  if (display_name.size() > 128) return Error(BadRequest("display_name must be at most 128 bytes"));
  if (display_name.empty()) display_name = username;

  auto hash = auth::HashPassword(password, opts_.password);
  if (!hash.ok()) return Error(hash.status());
  store::User u;
  u.id = RandomId64();
  u.username = username;
  u.display_name = display_name;
  u.password_hash = std::move(*hash);
  u.created_ms = clock_.NowMs();
  Status s = store_.CreateUser(u);
  if (s.code() == Code::kConflict) return Error(Conflict("username is taken"));
  if (!s.ok()) return Error(s);
  LOG_INFO("user_created").Kv("user", FormatUserId(u.id));
  JsonWriter w;
  w.BeginObject();
  WriteUser(w, u);
  w.EndObject();
  return Json(201, std::move(w).Take());
}

HttpResponse RestApi::IssueTokens(const store::User& u, std::string device_id, int status) {
  store::RefreshToken rt;
  std::string refresh = auth::NewRefreshToken();
  rt.token_hash = auth::HashRefreshToken(refresh);
  rt.user = u.id;
  rt.device_id = device_id;
  rt.created_ms = clock_.NowMs();
  rt.expires_ms = rt.created_ms + tokens_.config().refresh_ttl_s * 1000;
  if (Status s = store_.PutRefreshToken(rt); !s.ok()) return Error(s);
  JsonWriter w;
  w.BeginObject()
      .Field("access_token", tokens_.IssueAccess(u.id, device_id))
      .Field("refresh_token", refresh)
      .Field("token_type", "Bearer")
      .Field("expires_in", tokens_.config().access_ttl_s)
      .Key("user_id").UserId(u.id)
      .Field("device_id", device_id)
      .EndObject();
  return Json(status, std::move(w).Take());
}

HttpResponse RestApi::CreateSession(const HttpRequest& req) {
  auto body = ParseBody(req);
  if (!body.ok()) return Error(body.status());
  {
    std::lock_guard lk(login_mu_);
    if (!login_ip_.Take(req.remote, 1, clock_.NowMs()))
      return Error(RateLimited("too many login attempts from this address; retry later"));
  }
  std::string username, password, device_id;
  if (auto s = StringField(*body, "username", true, &username); !s.ok()) return Error(s);
  if (auto s = StringField(*body, "password", true, &password); !s.ok()) return Error(s);
  if (auto s = StringField(*body, "device_id", false, &device_id); !s.ok()) return Error(s);
  if (!device_id.empty() && !IsValidClientToken(device_id))
    return Error(BadRequest("device_id must be 1-64 printable ASCII characters"));
  if (device_id.empty()) device_id = "dev_" + RandomHex(8);

  const std::string account = Lower(username);
  {
    // Guessing one account's password is slowed down whoever guesses; the check
    // happens before the (expensive) hash so a locked account costs nothing.
    std::lock_guard lk(login_mu_);
    if (!login_account_.Take(account, 1, clock_.NowMs(), /*charge=*/false))
      return Error(RateLimited("too many failed logins for this account; retry later"));
  }
  auto fail = [&] {
    std::lock_guard lk(login_mu_);
    login_account_.Take(account, 1, clock_.NowMs());
    return Error(Unauthorized("invalid username or password"));
  };
  auto user = store_.FindUserByUsername(account);
  if (!user.ok()) {
    if (user.status().code() != Code::kNotFound) return Error(user.status());
    // Same work as a wrong password, so response time does not reveal who exists.
    (void)auth::VerifyPassword(dummy_hash_, password);
    return fail();
  }
  if (!auth::VerifyPassword(user->password_hash, password)) return fail();
  return IssueTokens(*user, std::move(device_id), 200);
}

HttpResponse RestApi::RefreshSession(const HttpRequest& req) {
  auto body = ParseBody(req);
  if (!body.ok()) return Error(body.status());
  std::string token;
  if (auto s = StringField(*body, "refresh_token", true, &token); !s.ok()) return Error(s);
  if (token.size() > 256) return Error(Unauthorized("invalid refresh token"));
  std::string hash = auth::HashRefreshToken(token);
  auto rt = store_.GetRefreshToken(hash);
  if (!rt.ok()) {
    if (rt.status().code() == Code::kNotFound) return Error(Unauthorized("invalid refresh token"));
    return Error(rt.status());
  }
  if (rt->expires_ms <= clock_.NowMs()) {
    (void)store_.DeleteRefreshToken(hash);
    return Error(Unauthorized("refresh token expired"));
  }
  // Refresh tokens issued before the device logged out died with it.
  if (revoked_.IssuedBeforeRevocation(rt->user, rt->device_id, rt->created_ms / 1000)) {
    (void)store_.DeleteRefreshToken(hash);
    return Error(Unauthorized("invalid refresh token"));
  }
  auto user = store_.GetUser(rt->user);
  if (!user.ok()) return Error(Unauthorized("invalid refresh token"));
  // Rotation: a refresh token works once; the answer carries its successor.
  if (Status s = store_.DeleteRefreshToken(hash); !s.ok()) return Error(s);
  return IssueTokens(*user, rt->device_id, 200);
}

HttpResponse RestApi::Logout(const Ctx& c, const HttpRequest& req) {
  // The refresh token (optional in the body) dies, the device's access tokens issued
  // so far are refused from now on, and its open sockets are closed.
  if (!req.body.empty()) {
    auto body = ParseBody(req);
    if (!body.ok()) return Error(body.status());
    std::string refresh;
    if (auto s = StringField(*body, "refresh_token", false, &refresh); !s.ok()) return Error(s);
    if (!refresh.empty()) {
      std::string hash = auth::HashRefreshToken(refresh);
      auto rt = store_.GetRefreshToken(hash);
      if (rt.ok() && rt->user == c.claims.user) {
        if (Status s = store_.DeleteRefreshToken(hash); !s.ok()) return Error(s);
      }
    }
  }
  int64_t now_s = clock_.NowMs() / 1000;
  if (Status s = store_.PutRevocation(c.claims.user, c.claims.device_id, now_s); !s.ok()) return Error(s);
  revoked_.Revoke(c.claims.user, c.claims.device_id, now_s);
  if (logged_out_) logged_out_(c.claims.user, c.claims.device_id);
  LOG_INFO("device_logged_out").Kv("user", FormatUserId(c.claims.user)).Kv("device", c.claims.device_id);
  HttpResponse r;
  r.status = 204;
  return r;
}

HttpResponse RestApi::GetUser(const Ctx&, std::string_view id) {
  auto uid = ParseUserId(id);
  if (!uid) return Error(NotFound("no such user"));
  return UserAnswer(store_.GetUser(*uid));
}

// GET /v1/users?username=NAME: exact (case-insensitive) lookup, how a client starts a
// conversation with someone it knows by name. No prefix search: names are not listed.
HttpResponse RestApi::FindUser(const Ctx& c, const HttpRequest& req) {
  const std::string* name = req.Query("username");
  if (!name) return Error(BadRequest("query parameter 'username' is required"));
  {
    std::lock_guard lk(login_mu_);
    int64_t wait_s = 0;
    if (!user_lookups_.Take(c.claims.user, 1, clock_.NowMs(), true, &wait_s)) {
      HttpResponse r = Error(RateLimited("too many username lookups; retry later"));
      r.headers.emplace_back("Retry-After", std::to_string(std::max<int64_t>(wait_s, 1)));
      return r;
    }
  }
  const std::string username = Lower(*name);
  if (!ValidUsername(username)) return Error(NotFound("no such user"));
  return UserAnswer(store_.FindUserByUsername(username));
}

HttpResponse RestApi::GetPresence(const Ctx& c, std::string_view id) {
  // Unknown users and users who share no conversation with the caller answer alike.
  auto uid = ParseUserId(id);
  if (!uid || !presence_) return Error(NotFound("no such user"));
  auto view = presence_(c.claims.user, *uid);
  if (!view) return Error(NotFound("no such user"));
  JsonWriter w;
  w.BeginObject()
      .Key("user_id").UserId(*uid)
      .Field("status", view->online ? "online" : "offline");
  if (view->last_seen_ms > 0) w.Field("last_seen_ms", view->last_seen_ms);
  else w.Key("last_seen_ms").Null();
  w.EndObject();
  return Json(200, std::move(w).Take());
}

HttpResponse RestApi::Settings(const Ctx& c, std::string_view id, const HttpRequest& req) {
  auto uid = ParseUserId(id);
  if (!uid || *uid != c.claims.user) return Error(Forbidden("only your own settings"));
  auto cur = store_.GetUserSettings(*uid);
  if (!cur.ok()) return Error(cur.status());
  store::UserSettings st = *cur;
  if (req.method == "PATCH") {
    auto body = ParseBody(req);
    if (!body.ok()) return Error(body.status());
    simdjson::dom::element e;
    if ((*body)["hide_last_seen"].get(e) == simdjson::SUCCESS) {
      bool b;
      if (e.get_bool().get(b) != simdjson::SUCCESS) return Error(BadRequest("hide_last_seen must be a boolean"));
      st.hide_last_seen = b;
    }
    if (Status s = store_.PutUserSettings(*uid, st); !s.ok()) return Error(s);
    if (settings_changed_) settings_changed_(*uid, st);
  }
  JsonWriter w;
  w.BeginObject().Field("hide_last_seen", st.hide_last_seen).EndObject();
  return Json(200, std::move(w).Take());
}

HttpResponse RestApi::CreateConversation(const Ctx& c, const HttpRequest& req) {
  auto body = ParseBody(req);
  if (!body.ok()) return Error(body.status());
  std::string type, title;
  if (auto s = StringField(*body, "type", true, &type); !s.ok()) return Error(s);
  if (auto s = StringField(*body, "title", false, &title); !s.ok()) return Error(s);
  if (type != "direct" && type != "group") return Error(BadRequest("type must be direct or group"));
  if (title.size() > opts_.limits.max_title_bytes) return Error(BadRequest("title is too long"));

  std::vector<UserId> members{c.claims.user};
  simdjson::dom::element e;
  simdjson::dom::array arr;
  if ((*body)["member_ids"].get(e) != simdjson::SUCCESS || e.get_array().get(arr) != simdjson::SUCCESS)
    return Error(BadRequest("member_ids must be an array of user ids"));
  if (arr.size() > opts_.limits.max_group_members + 1)
    return Error(BadRequest("too many members"));
  for (auto v : arr) {
    std::string_view s;
    if (v.get_string().get(s) != simdjson::SUCCESS) return Error(BadRequest("member_ids must be strings"));
    auto uid = ParseUserId(s);
    if (!uid) return Error(BadRequest("member_ids contains an invalid user id"));
    members.push_back(*uid);
  }
  std::sort(members.begin(), members.end());
  members.erase(std::unique(members.begin(), members.end()), members.end());
  if (type == "direct" && members.size() != 2)
    return Error(BadRequest("a direct conversation has exactly one other member"));
  if (members.size() > opts_.limits.max_group_members)
    return Error(BadRequest("a group has at most " + std::to_string(opts_.limits.max_group_members) +
                            " members"));
  for (UserId u : members) {
    if (u == c.claims.user) continue;
    auto got = store_.GetUser(u);
    if (!got.ok()) {
      if (got.status().code() == Code::kNotFound)
        return Error(BadRequest("member_ids contains an unknown user"));
      return Error(got.status());
    }
  }
  store::Conversation conv;
  conv.id = RandomId64();
  conv.type = type == "direct" ? store::ConvType::kDirect : store::ConvType::kGroup;
  conv.title = title;
  conv.members = std::move(members);
  conv.created_by = c.claims.user;
  conv.created_ms = clock_.NowMs();
  bool created = false;
  auto stored = store_.CreateConversation(conv, &created);
  if (!stored.ok()) return Error(stored.status());
  // The other members' open devices learn of it at once (conversation_updated).
  if (created && conv_changed_) conv_changed_(*stored, {.added = stored->members, .removed = {}});
  JsonWriter w;
  w.BeginObject();
  protocol::WriteConversationFields(w, *stored);
  w.EndObject();
  return Json(created ? 201 : 200, std::move(w).Take());
}

Result<store::Conversation> RestApi::MemberConversation(const Ctx& c, std::string_view id) {
  // A conversation the caller is not in answers exactly like one that does not exist.
  auto cid = ParseConvId(id);
  if (!cid) return kNoConversation;
  auto conv = store_.GetConversation(*cid);
  if (!conv.ok()) return conv.status().code() == Code::kNotFound ? kNoConversation : conv.status();
  if (!std::binary_search(conv->members.begin(), conv->members.end(), c.claims.user))
    return kNoConversation;
  return conv;
}

HttpResponse RestApi::GetConversation(const Ctx& c, std::string_view id) {
  auto conv = MemberConversation(c, id);
  if (!conv.ok()) return Error(conv.status());
  auto last = store_.LastSeq(conv->id);
  if (!last.ok()) return Error(last.status());
  JsonWriter w;
  w.BeginObject();
  protocol::WriteConversationFields(w, *conv);
  w.Field("last_seq", static_cast<uint64_t>(*last));
  w.EndObject();
  return Json(200, std::move(w).Take());
}

HttpResponse RestApi::ConversationAnswer(int status, const store::Conversation& conv) {
  if (conv_changed_) conv_changed_(conv, {});
  JsonWriter w;
  w.BeginObject();
  protocol::WriteConversationFields(w, conv);
  w.EndObject();
  return Json(status, std::move(w).Take());
}

HttpResponse RestApi::AddMembers(const Ctx& c, std::string_view id, const HttpRequest& req) {
  auto conv = MemberConversation(c, id);
  if (!conv.ok()) return Error(conv.status());
  if (conv->type != store::ConvType::kGroup) return Error(BadRequest("members can only be added to groups"));
  auto body = ParseBody(req);
  if (!body.ok()) return Error(body.status());
  simdjson::dom::element e;
  simdjson::dom::array arr;
  if ((*body)["user_ids"].get(e) != simdjson::SUCCESS || e.get_array().get(arr) != simdjson::SUCCESS)
    return Error(BadRequest("user_ids must be an array of user ids"));
  if (arr.size() > opts_.limits.max_group_members) return Error(BadRequest("too many user ids"));
  std::vector<UserId> add;
  for (auto v : arr) {
    std::string_view sv;
    if (v.get_string().get(sv) != simdjson::SUCCESS) return Error(BadRequest("user_ids must be strings"));
    auto uid = ParseUserId(sv);
    if (!uid) return Error(BadRequest("user_ids contains an invalid user id"));
    auto u = store_.GetUser(*uid);
    if (!u.ok()) {
      if (u.status().code() == Code::kNotFound) return Error(BadRequest("user_ids contains an unknown user"));
      return Error(u.status());
    }
    add.push_back(*uid);
  }
  UserId caller = c.claims.user;
  size_t max = opts_.limits.max_group_members;
  std::vector<UserId> joined;
  auto updated = store_.UpdateConversation(conv->id, [&](store::Conversation& cv) -> Status {
    if (!IsIn(cv.members, caller)) return kNoConversation;  // removed meanwhile
    if (!CanManage(cv, caller)) return Forbidden("only the owner and admins add members");
    joined.clear();
    for (UserId u : add)
      if (!IsIn(cv.members, u) && !IsIn(joined, u)) joined.push_back(u);
    std::sort(joined.begin(), joined.end());
    cv.members.insert(cv.members.end(), add.begin(), add.end());
    std::sort(cv.members.begin(), cv.members.end());
    cv.members.erase(std::unique(cv.members.begin(), cv.members.end()), cv.members.end());
    if (cv.members.size() > max)
      return BadRequest("a group has at most " + std::to_string(max) + " members");
    return Status::Ok();
  });
  if (!updated.ok()) return Error(updated.status());
  if (conv_changed_) conv_changed_(*updated, {.added = joined, .removed = {}});
  LOG_INFO("members_added").Kv("conv", FormatConvId(conv->id)).Kv("count", joined.size());
  JsonWriter w;
  w.BeginObject().Key("member_ids").BeginArray();
  for (UserId m : updated->members) w.UserId(m);
  w.EndArray().EndObject();
  return Json(200, std::move(w).Take());
}

HttpResponse RestApi::RemoveMember(const Ctx& c, std::string_view id, std::string_view user) {
  auto conv = MemberConversation(c, id);
  if (!conv.ok()) return Error(conv.status());
  if (conv->type != store::ConvType::kGroup) return Error(BadRequest("direct conversations have fixed members"));
  auto target = ParseUserId(user);
  if (!target || !IsIn(conv->members, *target)) return Error(NotFound("not a member"));
  UserId caller = c.claims.user;
  auto updated = store_.UpdateConversation(conv->id, [&](store::Conversation& cv) -> Status {
    if (!IsIn(cv.members, caller)) return kNoConversation;
    if (!IsIn(cv.members, *target)) return NotFound("not a member");
    // Anyone may leave; removing someone else takes the owner or an admin, and only
    // the owner removes an admin.
    if (*target != caller) {
      if (!CanManage(cv, caller)) return Forbidden("only the owner and admins remove members");
      if (*target == cv.created_by) return Forbidden("the owner cannot be removed");
      if (IsIn(cv.admins, *target) && caller != cv.created_by) return Forbidden("only the owner removes admins");
    }
    std::erase(cv.members, *target);
    std::erase(cv.admins, *target);
    if (*target == cv.created_by && !cv.members.empty()) {
      // The owner left: the longest-standing admin, else the first member, takes over.
      cv.created_by = cv.admins.empty() ? cv.members.front() : cv.admins.front();
    }
    return Status::Ok();
  });
  if (!updated.ok()) return Error(updated.status());
  if (conv_changed_) conv_changed_(*updated, {.added = {}, .removed = {*target}});
  LOG_INFO("member_removed").Kv("conv", FormatConvId(conv->id)).Kv("user", FormatUserId(*target));
  HttpResponse r;
  r.status = 204;
  return r;
}

HttpResponse RestApi::Rename(const Ctx& c, std::string_view id, const HttpRequest& req) {
  auto conv = MemberConversation(c, id);
  if (!conv.ok()) return Error(conv.status());
  if (conv->type != store::ConvType::kGroup) return Error(BadRequest("only groups have a title"));
  auto body = ParseBody(req);
  if (!body.ok()) return Error(body.status());
  std::string title;
  if (auto s = StringField(*body, "title", true, &title); !s.ok()) return Error(s);
  if (title.size() > opts_.limits.max_title_bytes) return Error(BadRequest("title is too long"));
  UserId caller = c.claims.user;
  auto updated = store_.UpdateConversation(conv->id, [&](store::Conversation& cv) -> Status {
    if (!IsIn(cv.members, caller)) return kNoConversation;
    if (!CanManage(cv, caller)) return Forbidden("only the owner and admins rename a group");
    cv.title = title;
    return Status::Ok();
  });
  if (!updated.ok()) return Error(updated.status());
  return ConversationAnswer(200, *updated);
}

HttpResponse RestApi::SetAdmin(const Ctx& c, std::string_view id, std::string_view user, bool admin) {
  auto conv = MemberConversation(c, id);
  if (!conv.ok()) return Error(conv.status());
  if (conv->type != store::ConvType::kGroup) return Error(BadRequest("only groups have admins"));
  auto target = ParseUserId(user);
  if (!target || !IsIn(conv->members, *target)) return Error(NotFound("not a member"));
  UserId caller = c.claims.user;
  auto updated = store_.UpdateConversation(conv->id, [&](store::Conversation& cv) -> Status {
    if (!IsIn(cv.members, caller)) return kNoConversation;
    if (caller != cv.created_by) return Forbidden("only the owner appoints or dismisses admins");
    if (!IsIn(cv.members, *target)) return NotFound("not a member");
    if (admin) cv.admins.push_back(*target);
    else std::erase(cv.admins, *target);
    return Status::Ok();
  });
  if (!updated.ok()) return Error(updated.status());
  return ConversationAnswer(200, *updated);
}

// The list is ordered by latest activity (newest first), ties by id. The cursor is
// the last row's position, "<activity_ms>.<conversation id>", so a page never repeats
// a row or skips one that did not move, whatever was sent meanwhile (a conversation
// that moves to the top while the client pages appears on the next full refresh).
HttpResponse RestApi::ListConversations(const Ctx& c, const HttpRequest& req) {
  size_t limit = opts_.limits.history_page_default;
  if (auto l = req.Query("limit")) {
    auto v = ParseUint(l);
    if (!v || *v == 0) return Error(BadRequest("limit must be a positive integer"));
    limit = std::min<size_t>(*v, opts_.limits.history_page_max);
  }
  std::optional<std::pair<int64_t, ConvId>> after;
  if (auto cur = req.Query("cursor"); cur && !cur->empty()) {
    size_t dot = cur->find('.');
    std::string ms_s = cur->substr(0, dot);
    auto ms = ParseUint(&ms_s);
    auto id = dot == std::string::npos ? std::nullopt : ParseConvId(std::string_view(*cur).substr(dot + 1));
    if (!ms || !id) return Error(BadRequest("invalid cursor"));
    after.emplace(static_cast<int64_t>(*ms), *id);
  }
  auto entries = store_.ListConversationEntries(c.claims.user);
  if (!entries.ok()) return Error(entries.status());
  auto activity = [](const store::ConversationListEntry& e) {
    return e.summary.last_seq ? e.summary.last_ms : e.conv.created_ms;
  };
  // (activity desc, id asc): true when a comes first.
  auto before = [](int64_t am, ConvId aid, int64_t bm, ConvId bid) {
    return am != bm ? am > bm : aid < bid;
  };
  std::vector<const store::ConversationListEntry*> rows;
  rows.reserve(entries->size());
  for (const auto& e : *entries)
    if (!after || before(after->first, after->second, activity(e), e.conv.id)) rows.push_back(&e);
  const size_t take = std::min(rows.size(), limit);
  std::partial_sort(rows.begin(), rows.begin() + take, rows.end(), [&](auto* a, auto* b) {
    return before(activity(*a), a->conv.id, activity(*b), b->conv.id);
  });

  JsonWriter w(256 + take * 256);
  w.BeginObject().Key("conversations").BeginArray();
  for (size_t i = 0; i < take; ++i) {
    const store::ConversationListEntry& e = *rows[i];
    const store::ConversationSummary& sm = e.summary;
    w.BeginObject()
        .Key("conversation_id").ConvId(e.conv.id)
        .Field("type", store::ConvTypeName(e.conv.type))
        .Field("title", e.conv.title)
        .Field("last_seq", static_cast<uint64_t>(sm.last_seq));
    if (sm.last_seq) {
      w.Key("last_message_id").MessageId(e.conv.id, sm.last_seq);
      w.Field("last_message_preview", sm.preview);
      w.Field("last_message_ms", sm.last_ms);
      w.Key("last_message_sender_id").UserId(sm.last_sender);
      w.Field("last_message_content_type", store::ContentTypeName(sm.last_type));
    } else {
      w.Key("last_message_id").Null();
      w.Field("last_message_preview", "");
      w.Key("last_message_ms").Null();
    }
    // Messages after the caller's READ mark (from any of the caller's devices).
    w.Field("unread_count", static_cast<uint64_t>(sm.last_seq > e.read ? sm.last_seq - e.read : 0));
    w.EndObject();
  }
  w.EndArray();
  if (take < rows.size()) {
    const store::ConversationListEntry& last = *rows[take - 1];
    w.Field("next_cursor", std::to_string(activity(last)) + "." + FormatConvId(last.conv.id));
  } else {
    w.Key("next_cursor").Null();
  }
  w.EndObject();
  return Json(200, std::move(w).Take());
}

HttpResponse RestApi::Receipts(const Ctx& c, std::string_view id, std::string_view seq_str) {
  auto conv = MemberConversation(c, id);
  if (!conv.ok()) return Error(conv.status());
  std::string seq_s(seq_str);
  auto seq = ParseUint(&seq_s);
  if (!seq || *seq == 0) return Error(NotFound("no such message"));
  auto msg = store_.GetMessage(conv->id, *seq);
  if (!msg.ok()) return Error(msg.status().code() == Code::kNotFound ? NotFound("no such message") : msg.status());
  auto states = store_.GetReceipts(conv->id);
  if (!states.ok()) return Error(states.status());
  std::unordered_map<UserId, store::MemberReceipt> by_user;
  for (const auto& st : *states) by_user[st.user] = st;
  JsonWriter w(64 + 96 * conv->members.size());
  w.BeginObject().Key("receipts").BeginArray();
  for (UserId u : conv->members) {
    if (u == msg->sender) continue;
    const store::MemberReceipt* st = by_user.count(u) ? &by_user[u] : nullptr;
    w.BeginObject().Key("user_id").UserId(u);
    // The time is when the member's mark last moved to or past this message: exact
    // for the newest message, an upper bound for older ones.
    if (st && st->read >= *seq) w.Field("status", "READ").Field("receipt_timestamp_ms", st->read_ms);
    else if (st && st->delivered >= *seq)
      w.Field("status", "DELIVERED").Field("receipt_timestamp_ms", st->delivered_ms);
    else w.Field("status", "SENT").Key("receipt_timestamp_ms").Null();
    w.EndObject();
  }
  w.EndArray().EndObject();
  return Json(200, std::move(w).Take());
}

HttpResponse RestApi::Search(const Ctx& c, const HttpRequest& req) {
  if (!search_) return Error(Unavailable("search is not enabled on this server"));
  const std::string* q = req.Query("q");
  if (!q || q->empty()) return Error(BadRequest("q is required"));
  size_t limit = 20;
  if (auto l = req.Query("limit")) {
    auto v = ParseUint(l);
    if (!v || *v == 0) return Error(BadRequest("limit must be a positive integer"));
    limit = std::min<size_t>(*v, 100);
  }
  size_t offset = 0;
  if (auto cur = req.Query("cursor"); cur && !cur->empty()) {
    auto v = ParseUint(cur);
    if (!v || *v > 10000) return Error(BadRequest("invalid cursor"));
    offset = *v;
  }
  // Only conversations the caller belongs to are ever searched.
  std::vector<ConvId> convs;
  if (auto only = req.Query("conversation_id"); only && !only->empty()) {
    auto conv = MemberConversation(c, *only);
    if (!conv.ok()) return Error(conv.status());
    convs.push_back(conv->id);
  } else {
    auto mine = store_.ListConversationsOf(c.claims.user);
    if (!mine.ok()) return Error(mine.status());
    convs = std::move(*mine);
  }
  auto hits = search_->Search(*q, convs, limit + 1, offset);
  if (!hits.ok()) return Error(hits.status());
  bool more = hits->size() > limit;
  if (more) hits->resize(limit);
  JsonWriter w(256 * (hits->size() + 1));
  w.BeginObject().Key("results").BeginArray();
  for (const auto& h : *hits) {
    auto m = store_.GetMessage(h.conv, h.seq);
    if (!m.ok() || m->deleted) continue;  // deleted since it was indexed
    w.BeginObject();
    protocol::WriteMessageFields(w, *m);
    w.EndObject();
  }
  w.EndArray();
  if (more) w.Field("next_cursor", std::to_string(offset + limit));
  else w.Key("next_cursor").Null();
  w.EndObject();
  return Json(200, std::move(w).Take());
}

HttpResponse RestApi::History(const Ctx& c, std::string_view id, const HttpRequest& req) {
  auto conv = MemberConversation(c, id);
  if (!conv.ok()) return Error(conv.status());
  size_t limit = opts_.limits.history_page_default;
  if (auto l = req.Query("limit")) {
    auto v = ParseUint(l);
    if (!v || *v == 0) return Error(BadRequest("limit must be a positive integer"));
    limit = std::min<size_t>(*v, opts_.limits.history_page_max);
  }
  auto before = req.Query("before_seq");
  auto after = req.Query("after_seq");
  if (before && after) return Error(BadRequest("use before_seq or after_seq, not both"));
  Result<std::vector<store::Message>> page = std::vector<store::Message>{};
  if (after) {
    auto v = ParseUint(after);
    if (!v) return Error(BadRequest("after_seq must be a non-negative integer"));
    page = store_.ReadAfter(conv->id, *v, limit + 1);
  } else {
    Seq b = UINT64_MAX;
    if (before) {
      auto v = ParseUint(before);
      if (!v) return Error(BadRequest("before_seq must be a non-negative integer"));
      b = *v;
    }
    page = store_.ReadBefore(conv->id, b, limit + 1);
  }
  if (!page.ok()) return Error(page.status());
  bool has_more = page->size() > limit;
  if (has_more) page->resize(limit);
  JsonWriter w(256 * (page->size() + 1));
  w.BeginObject().Key("messages").BeginArray();
  for (const auto& msg : *page) {
    w.BeginObject();
    protocol::WriteMessageFields(w, msg);
    w.EndObject();
  }
  w.EndArray().Field("has_more", has_more).EndObject();
  return Json(200, std::move(w).Take());
}

}  // namespace sb::api
