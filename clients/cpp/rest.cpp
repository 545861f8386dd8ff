// REST request builders, response helpers and WebSocket frame builders. No Boost here:
// the transport lives in transport.cpp.
#include <algorithm>
#include <atomic>
#include <cctype>
#include <ostream>

#include "base/clock.h"
#include "base/ids.h"
#include "base/json_writer.h"
#include "sb_client.h"

namespace sb::client {

namespace {

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

void AppendQuery(std::string& target, std::string_view key, std::string_view value) {
  target += (target.find('?') == std::string::npos) ? '?' : '&';
  target += key;
  target += '=';
  target += UrlEncode(value);
}

void StringArray(JsonWriter& w, const std::vector<std::string>& v) {
  w.BeginArray();
  for (const auto& s : v) w.String(s);
  w.EndArray();
}

}  // namespace

// ---- HttpResponse ------------------------------------------------------------------

std::string HttpResponse::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (IEquals(k, name)) return v;
  }
  return {};
}

std::string HttpResponse::ErrorCode() const { return json()["error"]["code"].StrOr(""); }

std::string HttpResponse::Describe() const {
  if (status == 0) return "no HTTP response (" + error + ")";
  constexpr size_t kMaxBody = 2000;
  // append() rather than substr()+"...": g++ 12 reports a bogus -Warray-bounds on the latter.
  std::string out = "HTTP " + std::to_string(status) + " ";
  out.append(body, 0, std::min(body.size(), kMaxBody));
  if (body.size() > kMaxBody) out += "...";
  return out;
}

std::string UrlEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

// ---- Endpoint ----------------------------------------------------------------------

std::string Endpoint::Url() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return (tls.enabled ? "https://" : "http://") + h + ":" + std::to_string(port);
}

std::optional<Endpoint> ParseUrl(std::string_view url, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<Endpoint> {
    if (error) *error = "'" + std::string(url) + "': " + why;
    return std::nullopt;
  };
  Endpoint ep;
  size_t sep = url.find("://");
  if (sep == std::string_view::npos) return fail("not a URL (expected http://, https://, ws:// or wss://)");
  std::string scheme(url.substr(0, sep));
  for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme == "https" || scheme == "wss") ep.tls.enabled = true;
  else if (scheme != "http" && scheme != "ws") return fail("unsupported scheme " + scheme);
  std::string_view rest = url.substr(sep + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  if (rest.find('@') != std::string_view::npos) return fail("user info is not supported");
  std::string_view port_text;
  if (!rest.empty() && rest.front() == '[') {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) return fail("unterminated [IPv6 address]");
    ep.host = std::string(rest.substr(1, close - 1));
    std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return fail("junk after ]");
      port_text = after.substr(1);
      if (port_text.empty()) return fail("empty port");
    }
  } else {
    size_t colon = rest.rfind(':');
    ep.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = rest.substr(colon + 1);
      if (port_text.empty()) return fail("empty port");
    }
  }
  if (ep.host.empty()) return fail("no host");
  ep.port = ep.tls.enabled ? 443 : 80;
  if (!port_text.empty()) {
    unsigned p = 0;
    for (char c : port_text) {
      if (c < '0' || c > '9' || p > 65535) return fail("bad port");
      p = p * 10 + static_cast<unsigned>(c - '0');
    }
    if (p == 0 || p > 65535) return fail("port out of range");
    ep.port = static_cast<uint16_t>(p);
  }
  return ep;
}

// ---- Session -----------------------------------------------------------------------

std::optional<Session> Session::FromResponse(const HttpResponse& r) {
  if (r.status != 200) return std::nullopt;
  Json j = r.json();
  auto access = j["access_token"].Str();
  auto refresh = j["refresh_token"].Str();
  auto type = j["token_type"].Str();
  auto expires = j["expires_in"].Int();
  auto user = j["user_id"].Str();
  auto device = j["device_id"].Str();
  if (!access || !refresh || !type || !expires || !user || !device) return std::nullopt;
  return Session{*access, *refresh, *type, *expires, *user, *device};
}

// ---- RestClient --------------------------------------------------------------------

HttpResponse RestClient::Request(std::string_view method, std::string_view target,
                                 std::string_view body, std::string_view token,
                                 Headers headers) const {
  if (!token.empty()) headers.emplace_back("Authorization", "Bearer " + std::string(token));
  return Http(ep_, method, target, body, std::move(headers));
}

HttpResponse RestClient::RegisterUser(std::string_view username, std::string_view password,
                                      std::optional<std::string_view> display_name) const {
  JsonWriter w;
  w.BeginObject().Field("username", username).Field("password", password);
  if (display_name) w.Field("display_name", *display_name);
  w.EndObject();
  return Request("POST", "/v1/users", w.str());
}

HttpResponse RestClient::Login(std::string_view username, std::string_view password,
                               std::optional<std::string_view> device_id) const {
  JsonWriter w;
  w.BeginObject().Field("username", username).Field("password", password);
  if (device_id) w.Field("device_id", *device_id);
  w.EndObject();
  return Request("POST", "/v1/sessions", w.str());
}

HttpResponse RestClient::Refresh(std::string_view refresh_token) const {
  JsonWriter w;
  w.BeginObject().Field("refresh_token", refresh_token).EndObject();
  return Request("POST", "/v1/sessions/refresh", w.str());
}

HttpResponse RestClient::GetUser(std::string_view token, std::string_view user_id) const {
  return Request("GET", "/v1/users/" + UrlEncode(user_id), {}, token);
}

HttpResponse RestClient::GetPresence(std::string_view token, std::string_view user_id) const {
  return Request("GET", "/v1/users/" + UrlEncode(user_id) + "/presence", {}, token);
}

HttpResponse RestClient::CreateConversation(std::string_view token, std::string_view type,
                                            const std::vector<std::string>& member_ids,
                                            std::optional<std::string_view> title) const {
  JsonWriter w;
  w.BeginObject().Field("type", type).Key("member_ids");
  StringArray(w, member_ids);
  if (title) w.Field("title", *title);
  w.EndObject();
  return Request("POST", "/v1/conversations", w.str(), token);
}

HttpResponse RestClient::GetConversation(std::string_view token,
                                         std::string_view conversation_id) const {
  return Request("GET", "/v1/conversations/" + UrlEncode(conversation_id), {}, token);
}

HttpResponse RestClient::ListConversations(std::string_view token, std::optional<int64_t> limit,
                                           std::optional<std::string_view> cursor) const {
  std::string target = "/v1/conversations";
  if (limit) AppendQuery(target, "limit", std::to_string(*limit));
  if (cursor) AppendQuery(target, "cursor", *cursor);
  return Request("GET", target, {}, token);
}

HttpResponse RestClient::AddMembers(std::string_view token, std::string_view conversation_id,
                                    const std::vector<std::string>& user_ids) const {
  JsonWriter w;
  w.BeginObject().Key("user_ids");
  StringArray(w, user_ids);
  w.EndObject();
  return Request("POST", "/v1/conversations/" + UrlEncode(conversation_id) + "/members", w.str(),
                 token);
}

HttpResponse RestClient::RemoveMember(std::string_view token, std::string_view conversation_id,
                                      std::string_view user_id) const {
  return Request(
      "DELETE",
      "/v1/conversations/" + UrlEncode(conversation_id) + "/members/" + UrlEncode(user_id), {},
      token);
}

HttpResponse RestClient::History(std::string_view token, std::string_view conversation_id,
                                 const HistoryQuery& q) const {
  std::string target = "/v1/conversations/" + UrlEncode(conversation_id) + "/messages";
  if (q.before_seq) AppendQuery(target, "before_seq", std::to_string(*q.before_seq));
  if (q.after_seq) AppendQuery(target, "after_seq", std::to_string(*q.after_seq));
  if (q.limit) AppendQuery(target, "limit", std::to_string(*q.limit));
  return Request("GET", target, {}, token);
}

HttpResponse RestClient::Receipts(std::string_view token, std::string_view conversation_id,
                                  int64_t seq) const {
  return Request("GET",
                 "/v1/conversations/" + UrlEncode(conversation_id) + "/messages/" +
                     std::to_string(seq) + "/receipts",
                 {}, token);
}

HttpResponse RestClient::Search(std::string_view token, std::string_view q,
                                std::optional<std::string_view> conversation_id,
                                std::optional<int64_t> limit) const {
  std::string target = "/v1/search";
  AppendQuery(target, "q", q);
  if (conversation_id) AppendQuery(target, "conversation_id", *conversation_id);
  if (limit) AppendQuery(target, "limit", std::to_string(*limit));
  return Request("GET", target, {}, token);
}

// ---- frames ------------------------------------------------------------------------

int64_t NowMs() { return sb::WallMs(); }

std::string NewClientMsgId() {
  // Random part: unique across processes and restarts; counter: readable ordering.
  static const std::string prefix = "cm-" + sb::RandomHex(6) + "-";
  static std::atomic<uint64_t> counter{0};
  return prefix + std::to_string(++counter);
}

std::string SendMessageFrame(const OutgoingMessage& m) {
  JsonWriter w(m.content.size() + 256);
  w.BeginObject()
      .Field("event", "send_message")
      .Field("client_msg_id", m.client_msg_id)
      .Field("conversation_id", m.conversation_id)
      .Field("content", m.content)
      .Field("content_type", m.content_type)
      .Field("sent_timestamp_ms", m.sent_timestamp_ms.value_or(NowMs()));
  if (m.sender_id) w.Field("sender_id", *m.sender_id);
  if (m.media_url) w.Field("media_url", *m.media_url);
  if (m.target_message_id) w.Field("target_message_id", *m.target_message_id);
  if (m.reply_to) w.Field("reply_to", *m.reply_to);
  w.EndObject();
  return std::move(w).Take();
}

std::string MessageReceiptFrame(std::string_view message_id, std::string_view conversation_id,
                                std::string_view status, std::optional<int64_t> up_to_seq,
                                std::optional<int64_t> receipt_timestamp_ms) {
  JsonWriter w;
  w.BeginObject()
      .Field("event", "message_receipt")
      .Field("message_id", message_id)
      .Field("conversation_id", conversation_id)
      .Field("status", status);
  if (up_to_seq) w.Field("up_to_seq", *up_to_seq);
  w.Field("receipt_timestamp_ms", receipt_timestamp_ms.value_or(NowMs()));
  w.EndObject();
  return std::move(w).Take();
}

std::string ResumeFrame(const std::optional<std::map<std::string, int64_t>>& cursors) {
  JsonWriter w;
  w.BeginObject().Field("event", "resume");
  if (cursors) {
    w.Key("cursors").BeginObject();
    for (const auto& [conv, seq] : *cursors) w.Field(conv, seq);
    w.EndObject();
  }
  w.EndObject();
  return std::move(w).Take();
}

std::string PingFrame() { return R"({"event":"ping"})"; }

std::string TypingFrame(std::string_view conversation_id, std::string_view state) {
  JsonWriter w;
  w.BeginObject()
      .Field("event", "typing")
      .Field("conversation_id", conversation_id)
      .Field("state", state)
      .EndObject();
  return std::move(w).Take();
}

std::string PresenceSubscribeFrame(const std::vector<std::string>& user_ids) {
  JsonWriter w;
  w.BeginObject().Field("event", "presence_subscribe").Key("user_ids");
  StringArray(w, user_ids);
  w.EndObject();
  return std::move(w).Take();
}

std::ostream& operator<<(std::ostream& os, WsFrame::Kind k) {
  switch (k) {
    case WsFrame::Kind::kText:
      return os << "kText";
    case WsFrame::Kind::kBinary:
      return os << "kBinary";
    case WsFrame::Kind::kClose:
      return os << "kClose";
    case WsFrame::Kind::kTimeout:
      return os << "kTimeout";
    case WsFrame::Kind::kError:
      return os << "kError";
  }
  return os << "?";
}

std::string WsFrame::Describe() const {
  switch (kind) {
    case Kind::kText: {
      std::string out = "text frame ";
      out.append(data, 0, std::min<size_t>(data.size(), 2000));
      return out;
    }
    case Kind::kBinary:
      return "binary frame of " + std::to_string(data.size()) + " bytes";
    case Kind::kClose:
      return "close frame code " + (close_code ? std::to_string(*close_code) : "?") +
             (close_reason.empty() ? "" : " reason \"" + close_reason + "\"");
    case Kind::kTimeout:
      return "timeout (no frame)";
    case Kind::kError:
      return "connection ended without close frame: " + error;
  }
  return "?";
}

}  // namespace sb::client
