#include "protocol/client_frames.h"

#include <simdjson.h>

#include "base/utf8.h"

namespace sb::protocol {
namespace {

using simdjson::dom::element;
using simdjson::dom::object;

// The top-level fields the contract knows. A frame is read in one pass over its
// object (each known key's first occurrence kept, as a lookup by key would find it),
// then checked field by field.
enum Slot : uint8_t {
  kEvent,
  kClientMsgId,
  kConversationId,
  kSenderId,
  kContent,
  kContentType,
  kMediaUrl,
  kTargetMessageId,
  kReplyTo,
  kSentTimestampMs,
  kMessageId,
  kStatus,
  kUpToSeq,
  kReceiptTimestampMs,
  kCursors,
  kState,
  kUserIds,
  kSlots
};
constexpr std::string_view kSlotName[kSlots] = {
    "event",     "client_msg_id", "conversation_id", "sender_id", "content",    "content_type",
    "media_url", "target_message_id", "reply_to",    "sent_timestamp_ms", "message_id", "status",
    "up_to_seq", "receipt_timestamp_ms", "cursors",  "state",     "user_ids"};

struct Fields {
  element at[kSlots];
  uint32_t present = 0;

  void Read(const object& o) {
    for (auto field : o) {
      const int i = SlotOf(field.key);
      if (i < kSlots && !(present & (1u << i))) {
        at[i] = field.value;
        present |= 1u << i;
      }
    }
  }
  // kSlots when the key is none of ours. By length first: one comparison per key.
  static int SlotOf(std::string_view k) {
    auto is = [&](Slot s) { return k == kSlotName[s] ? s : kSlots; };
    switch (k.size()) {
      case 5: return k[1] == 'v' ? is(kEvent) : is(kState);
      case 6: return is(kStatus);
      case 7: return k[2] == 'n' ? is(kContent) : is(kCursors);
      case 8: return k[0] == 'r' ? is(kReplyTo) : is(kUserIds);
      case 9: return k[0] == 's' ? is(kSenderId) : k[0] == 'm' ? is(kMediaUrl) : is(kUpToSeq);
      case 10: return is(kMessageId);
      case 12: return is(kContentType);
      case 13: return is(kClientMsgId);
      case 15: return is(kConversationId);
      case 17: return k[0] == 't' ? is(kTargetMessageId) : is(kSentTimestampMs);
      case 20: return is(kReceiptTimestampMs);
      default: return kSlots;
    }
  }
  // Absent or null: nullptr.
  const element* Get(Slot s) const {
    if (!(present & (1u << s)) || at[s].is_null()) return nullptr;
    return &at[s];
  }
};

// Field access helpers: each distinguishes "absent" from "present with the wrong type",
// because the contract answers both with bad_request but different messages help
// client authors.
enum class Got { kAbsent, kOk, kWrongType };

Got GetString(const Fields& f, Slot s, std::string_view* out) {
  const element* e = f.Get(s);
  if (!e) return Got::kAbsent;
  return e->get_string().get(*out) == simdjson::SUCCESS ? Got::kOk : Got::kWrongType;
}

Got GetInt(const Fields& f, Slot s, int64_t* out) {
  const element* e = f.Get(s);
  if (!e) return Got::kAbsent;
  // Out of int64 range (a large unsigned) is the wrong type too.
  return e->get_int64().get(*out) == simdjson::SUCCESS ? Got::kOk : Got::kWrongType;
}

bool Fail(FrameError* err, Status s) {
  err->status = std::move(s);
  return false;
}

bool RequireString(const Fields& f, Slot s, std::string* out, FrameError* err) {
  std::string_view v;
  switch (GetString(f, s, &v)) {
    case Got::kOk: out->assign(v); return true;
    case Got::kAbsent: return Fail(err, BadRequest("missing field '" + std::string(kSlotName[s]) + "'"));
    case Got::kWrongType: return Fail(err, BadRequest("field '" + std::string(kSlotName[s]) + "' must be a string"));
  }
  return false;
}

bool OptionalString(const Fields& f, Slot s, std::string* out, FrameError* err) {
  std::string_view v;
  switch (GetString(f, s, &v)) {
    case Got::kOk: out->assign(v); return true;
    case Got::kAbsent: return true;
    case Got::kWrongType: return Fail(err, BadRequest("field '" + std::string(kSlotName[s]) + "' must be a string"));
  }
  return false;
}

bool OptionalInt(const Fields& f, Slot s, int64_t* out, FrameError* err) {
  switch (GetInt(f, s, out)) {
    case Got::kOk:
    case Got::kAbsent: return true;
    case Got::kWrongType: return Fail(err, BadRequest("field '" + std::string(kSlotName[s]) + "' must be an integer"));
  }
  return false;
}

}  // namespace

struct FrameParser::Impl {
  simdjson::dom::parser parser;
};

FrameParser::FrameParser(const Limits& limits) : impl_(std::make_unique<Impl>()), limits_(limits) {}
FrameParser::~FrameParser() = default;

std::optional<ClientFrame> FrameParser::Parse(std::string_view text, FrameError* err) {
  element doc;
  if (impl_->parser.parse(text.data(), text.size(), true).get(doc) != simdjson::SUCCESS) {
    Fail(err, BadRequest("frame is not valid JSON"));
    return std::nullopt;
  }
  object o;
  if (doc.get_object().get(o) != simdjson::SUCCESS) {
    Fail(err, BadRequest("frame must be a JSON object"));
    return std::nullopt;
  }
  Fields fields;
  fields.Read(o);
  const Fields& f = fields;
  std::string event;
  if (!RequireString(f, kEvent, &event, err)) return std::nullopt;

  if (event == "send_message") {
    SendMessage m;
    // Pick up client_msg_id first so that every later error can echo it.
    std::string_view cid;
    if (GetString(f, kClientMsgId, &cid) == Got::kOk) err->client_msg_id.assign(cid);
    if (!RequireString(f, kClientMsgId, &m.client_msg_id, err)) return std::nullopt;
    if (!IsValidClientToken(m.client_msg_id)) {
      err->client_msg_id.clear();
      Fail(err, BadRequest("client_msg_id must be 1-64 printable ASCII characters"));
      return std::nullopt;
    }
    if (!RequireString(f, kConversationId, &m.conversation_id, err)) return std::nullopt;
    std::string sender;
    std::string_view sv;
    Got g = GetString(f, kSenderId, &sv);
    if (g == Got::kWrongType) {
      Fail(err, BadRequest("field 'sender_id' must be a string"));
      return std::nullopt;
    }
    if (g == Got::kOk) m.sender_id.emplace(sv);
    if (!OptionalString(f, kContent, &m.content, err)) return std::nullopt;
    std::string ct = "text";
    if (!OptionalString(f, kContentType, &ct, err)) return std::nullopt;
    auto parsed_ct = store::ParseContentType(ct);
    if (!parsed_ct) {
      Fail(err, BadRequest("unknown content_type '" + TruncateUtf8(ct, 32) + "'"));
      return std::nullopt;
    }
    m.content_type = *parsed_ct;
    if (!OptionalString(f, kMediaUrl, &m.media_url, err)) return std::nullopt;
    if (!OptionalString(f, kTargetMessageId, &m.target_message_id, err)) return std::nullopt;
    if (!OptionalString(f, kReplyTo, &m.reply_to, err)) return std::nullopt;
    if (!OptionalInt(f, kSentTimestampMs, &m.sent_timestamp_ms, err)) return std::nullopt;

    if (m.content.size() > limits_.max_content_bytes) {
      Fail(err, TooLarge("content is larger than " + std::to_string(limits_.max_content_bytes) + " bytes"));
      return std::nullopt;
    }
    if (m.media_url.size() > limits_.max_media_url_bytes) {
      Fail(err, TooLarge("media_url is too long"));
      return std::nullopt;
    }
    using store::ContentType;
    switch (m.content_type) {
      case ContentType::kText:
        if (m.content.empty()) {
          Fail(err, BadRequest("a text message needs non-empty content"));
          return std::nullopt;
        }
        break;
      case ContentType::kImage:
      case ContentType::kFile:
        if (m.media_url.empty()) {
          Fail(err, BadRequest("content_type '" + ct + "' needs media_url"));
          return std::nullopt;
        }
        break;
      case ContentType::kReaction:
      case ContentType::kEdit:
      case ContentType::kDelete:
        if (m.target_message_id.empty()) {
          Fail(err, BadRequest("content_type '" + ct + "' needs target_message_id"));
          return std::nullopt;
        }
        if (m.content_type != ContentType::kDelete && m.content.empty()) {
          Fail(err, BadRequest("content_type '" + ct + "' needs content"));
          return std::nullopt;
        }
        break;
    }
    if (!m.target_message_id.empty() && !ParseMessageId(m.target_message_id)) {
      Fail(err, BadRequest("target_message_id is not a message id"));
      return std::nullopt;
    }
    if (!m.reply_to.empty() && !ParseMessageId(m.reply_to)) {
      Fail(err, BadRequest("reply_to is not a message id"));
      return std::nullopt;
    }
    return ClientFrame{std::move(m)};
  }

  if (event == "ping") return ClientFrame{Ping{}};

  if (event == "message_receipt") {
    MessageReceipt r;
    if (!RequireString(f, kConversationId, &r.conversation_id, err)) return std::nullopt;
    if (!OptionalString(f, kMessageId, &r.message_id, err)) return std::nullopt;
    if (!RequireString(f, kStatus, &r.status, err)) return std::nullopt;
    if (r.status != "DELIVERED" && r.status != "READ") {
      Fail(err, BadRequest("status must be DELIVERED or READ"));
      return std::nullopt;
    }
    int64_t up = -1;
    if (!OptionalInt(f, kUpToSeq, &up, err)) return std::nullopt;
    if (up >= 0) r.up_to_seq = static_cast<uint64_t>(up);
    if (r.message_id.empty() && !r.up_to_seq) {
      Fail(err, BadRequest("message_receipt needs message_id or up_to_seq"));
      return std::nullopt;
    }
    if (!OptionalInt(f, kReceiptTimestampMs, &r.receipt_timestamp_ms, err)) return std::nullopt;
    return ClientFrame{std::move(r)};
  }

  if (event == "resume") {
    Resume r;
    if (const element* cursors = f.Get(kCursors)) {
      object co;
      if (cursors->get_object().get(co) != simdjson::SUCCESS) {
        Fail(err, BadRequest("field 'cursors' must be an object"));
        return std::nullopt;
      }
      for (auto field : co) {
        int64_t v;
        if (field.value.get_int64().get(v) != simdjson::SUCCESS || v < 0) {
          Fail(err, BadRequest("cursor values must be non-negative integers"));
          return std::nullopt;
        }
        r.cursors[std::string(field.key)] = static_cast<uint64_t>(v);
      }
    }
    return ClientFrame{std::move(r)};
  }

  if (event == "typing") {
    Typing t;
    if (!RequireString(f, kConversationId, &t.conversation_id, err)) return std::nullopt;
    if (!RequireString(f, kState, &t.state, err)) return std::nullopt;
    if (t.state != "started" && t.state != "stopped") {
      Fail(err, BadRequest("state must be started or stopped"));
      return std::nullopt;
    }
    return ClientFrame{std::move(t)};
  }

  if (event == "presence_subscribe") {
    PresenceSubscribe p;
    simdjson::dom::array arr;
    const element* e = f.Get(kUserIds);
    if (!e || e->get_array().get(arr) != simdjson::SUCCESS) {
      Fail(err, BadRequest("field 'user_ids' must be an array of strings"));
      return std::nullopt;
    }
    for (auto v : arr) {
      std::string_view s;
      if (v.get_string().get(s) != simdjson::SUCCESS) {
        Fail(err, BadRequest("field 'user_ids' must be an array of strings"));
        return std::nullopt;
      }
      p.user_ids.emplace_back(s);
    }
    return ClientFrame{std::move(p)};
  }

  Fail(err, BadRequest("unknown event '" + TruncateUtf8(event, 64) + "'"));
  return std::nullopt;
}

}  // namespace sb::protocol
