// FrameParser::Parse on arbitrary bytes: the first thing every WebSocket text frame
// from a client meets.
//
// Checked on every input, with the default limits and with tiny ones (so that the
// too_large paths are reachable by small inputs):
//  * no crash, no sanitizer report, no exception;
//  * a failure carries a client-facing code (bad_request / too_large), an echoed
//    client_msg_id only if it is a valid one, and renders as a valid error frame;
//  * a success satisfies the contract's rules (client_msg_id 1-64 printable ASCII,
//    content and media_url within the limits, per-content_type requirements, message
//    ids well formed, UTF-8 everywhere);
//  * a success re-serialized with our JsonWriter parses back to the same frame, so the
//    writer's escaping and the parser agree on every string the parser can produce.
#include <cstdint>
#include <optional>
#include <string>

#include "base/ids.h"
#include "base/json_writer.h"
#include "base/utf8.h"
#include "fuzz_support.h"
#include "protocol/client_frames.h"
#include "protocol/server_frames.h"
#include "store/store.h"

namespace sb::fuzz {
namespace {

using namespace sb::protocol;

std::string Serialize(const ClientFrame& f) {
  JsonWriter w;
  w.BeginObject();
  if (auto* m = std::get_if<SendMessage>(&f)) {
    w.Field("event", "send_message")
        .Field("client_msg_id", m->client_msg_id)
        .Field("conversation_id", m->conversation_id);
    if (m->sender_id) w.Field("sender_id", *m->sender_id);
    w.Field("content", m->content)
        .Field("content_type", store::ContentTypeName(m->content_type))
        .Field("media_url", m->media_url)
        .Field("target_message_id", m->target_message_id)
        .Field("reply_to", m->reply_to)
        .Field("sent_timestamp_ms", m->sent_timestamp_ms);
  } else if (auto* r = std::get_if<MessageReceipt>(&f)) {
    w.Field("event", "message_receipt")
        .Field("message_id", r->message_id)
        .Field("conversation_id", r->conversation_id)
        .Field("status", r->status)
        .Field("receipt_timestamp_ms", r->receipt_timestamp_ms);
    if (r->up_to_seq) w.Field("up_to_seq", *r->up_to_seq);
  } else if (auto* re = std::get_if<Resume>(&f)) {
    w.Field("event", "resume").Key("cursors").BeginObject();
    for (const auto& [conv, seq] : re->cursors) w.Field(conv, seq);
    w.EndObject();
  } else if (auto* t = std::get_if<Typing>(&f)) {
    w.Field("event", "typing").Field("conversation_id", t->conversation_id).Field("state", t->state);
  } else if (auto* p = std::get_if<PresenceSubscribe>(&f)) {
    w.Field("event", "presence_subscribe").Key("user_ids").BeginArray();
    for (const auto& u : p->user_ids) w.String(u);
    w.EndArray();
  } else {
    w.Field("event", "ping");
  }
  w.EndObject();
  return std::move(w).Take();
}

bool Same(const ClientFrame& a, const ClientFrame& b) {
  if (a.index() != b.index()) return false;
  if (auto* x = std::get_if<SendMessage>(&a)) {
    auto& y = std::get<SendMessage>(b);
    return x->client_msg_id == y.client_msg_id && x->conversation_id == y.conversation_id &&
           x->sender_id == y.sender_id && x->content == y.content && x->content_type == y.content_type &&
           x->media_url == y.media_url && x->target_message_id == y.target_message_id &&
           x->reply_to == y.reply_to && x->sent_timestamp_ms == y.sent_timestamp_ms;
  }
  if (auto* x = std::get_if<MessageReceipt>(&a)) {
    auto& y = std::get<MessageReceipt>(b);
    return x->message_id == y.message_id && x->conversation_id == y.conversation_id &&
           x->status == y.status && x->up_to_seq == y.up_to_seq &&
           x->receipt_timestamp_ms == y.receipt_timestamp_ms;
  }
  if (auto* x = std::get_if<Resume>(&a)) return x->cursors == std::get<Resume>(b).cursors;
  if (auto* x = std::get_if<Typing>(&a)) {
    auto& y = std::get<Typing>(b);
    return x->conversation_id == y.conversation_id && x->state == y.state;
  }
  if (auto* x = std::get_if<PresenceSubscribe>(&a)) return x->user_ids == std::get<PresenceSubscribe>(b).user_ids;
  return true;  // Ping
}

void CheckSendMessage(const SendMessage& m, const Limits& lim) {
  using store::ContentType;
  FUZZ_CHECK(IsValidClientToken(m.client_msg_id), "accepted client_msg_id '%s'", m.client_msg_id.c_str());
  FUZZ_CHECK(m.content.size() <= lim.max_content_bytes, "content of %zu bytes accepted (limit %zu)",
             m.content.size(), lim.max_content_bytes);
  FUZZ_CHECK(m.media_url.size() <= lim.max_media_url_bytes, "media_url of %zu bytes accepted", m.media_url.size());
  for (const std::string* s : {&m.client_msg_id, &m.conversation_id, &m.content, &m.media_url,
                               &m.target_message_id, &m.reply_to})
    FUZZ_CHECK(IsValidUtf8(*s), "accepted a string that is not UTF-8");
  FUZZ_CHECK(!m.sender_id || IsValidUtf8(*m.sender_id), "sender_id not UTF-8");
  switch (m.content_type) {
    case ContentType::kText: FUZZ_CHECK(!m.content.empty(), "empty text accepted"); break;
    case ContentType::kImage:
    case ContentType::kFile: FUZZ_CHECK(!m.media_url.empty(), "image/file without media_url"); break;
    case ContentType::kReaction:
    case ContentType::kEdit: FUZZ_CHECK(!m.content.empty(), "reaction/edit without content"); [[fallthrough]];
    case ContentType::kDelete: FUZZ_CHECK(!m.target_message_id.empty(), "reaction/edit/delete without target"); break;
  }
  FUZZ_CHECK(m.target_message_id.empty() || ParseMessageId(m.target_message_id), "bad target_message_id accepted");
  FUZZ_CHECK(m.reply_to.empty() || ParseMessageId(m.reply_to), "bad reply_to accepted");
}

void CheckFrame(const ClientFrame& f, const Limits& lim) {
  if (auto* m = std::get_if<SendMessage>(&f)) return CheckSendMessage(*m, lim);
  if (auto* r = std::get_if<MessageReceipt>(&f)) {
    FUZZ_CHECK(r->status == "DELIVERED" || r->status == "READ", "receipt status '%s'", r->status.c_str());
    FUZZ_CHECK(r->up_to_seq || !r->message_id.empty(), "receipt with neither message_id nor up_to_seq");
    FUZZ_CHECK(!r->up_to_seq || *r->up_to_seq <= uint64_t(INT64_MAX), "up_to_seq out of range");
  }
  if (auto* t = std::get_if<Typing>(&f))
    FUZZ_CHECK(t->state == "started" || t->state == "stopped", "typing state '%s'", t->state.c_str());
  if (auto* r = std::get_if<Resume>(&f))
    for (const auto& [conv, seq] : r->cursors) FUZZ_CHECK(seq <= uint64_t(INT64_MAX), "cursor out of range");
}

void RunOne(FrameParser& parser, const Limits& lim, std::string_view text, simdjson::dom::parser& json) {
  FrameError err;
  std::optional<ClientFrame> f = parser.Parse(text, &err);
  if (!f) {
    Code c = err.status.code();
    FUZZ_CHECK(c == Code::kBadRequest || c == Code::kTooLarge, "unexpected error code %d: %s", int(c),
               err.status.message().c_str());
    FUZZ_CHECK(err.client_msg_id.empty() || IsValidClientToken(err.client_msg_id),
               "error echoes an invalid client_msg_id");
    std::string frame = ErrorFrame(err.status, err.client_msg_id);
    FUZZ_CHECK(IsJsonObject(frame, json, "event"), "error frame is not valid JSON: %s", frame.c_str());
    return;
  }
  CheckFrame(*f, lim);
  std::string again = Serialize(*f);
  FrameError err2;
  std::optional<ClientFrame> g = parser.Parse(again, &err2);
  FUZZ_CHECK(g.has_value(), "re-serialized frame rejected (%s): %s", err2.status.message().c_str(), again.c_str());
  FUZZ_CHECK(Same(*f, *g), "re-serialized frame parses differently: %s", again.c_str());
}

}  // namespace
}  // namespace sb::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sb;
  static const protocol::Limits kDefault;
  static const protocol::Limits kTiny = [] {
    protocol::Limits l;
    l.max_content_bytes = 8;
    l.max_media_url_bytes = 8;
    return l;
  }();
  // One parser per limit set, kept across inputs as the gateway keeps one per shard,
  // so state left behind by one frame can affect the next.
  static protocol::FrameParser normal(kDefault), tiny(kTiny);
  static simdjson::dom::parser json;
  std::string_view text = fuzz::AsView(data, size);
  fuzz::RunOne(normal, kDefault, text, json);
  fuzz::RunOne(tiny, kTiny, text, json);
  return 0;
}
