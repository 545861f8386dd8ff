#include "protocol/server_frames.h"

#include "base/ids.h"

namespace sb::protocol {

void WriteMessageFields(JsonWriter& w, const store::Message& m) {
  w.Key("message_id").MessageId(m.conv, m.seq);
  w.Key("conversation_id").ConvId(m.conv);
  w.Field("seq", static_cast<uint64_t>(m.seq));
  w.Key("sender_id").UserId(m.sender);
  w.Field("content", m.content);
  w.Field("content_type", store::ContentTypeName(m.content_type));
  if (!m.media_url.empty()) w.Field("media_url", m.media_url);
  if (!m.target_message_id.empty()) w.Field("target_message_id", m.target_message_id);
  if (!m.reply_to.empty()) w.Field("reply_to", m.reply_to);
  w.Field("client_msg_id", m.client_msg_id);
  w.Field("sent_timestamp_ms", m.sent_ms);
  w.Field("server_timestamp_ms", m.server_ms);
  if (m.deleted) w.Field("deleted", true);
  if (m.edited_ms != 0) w.Field("edited_ms", m.edited_ms);
}

namespace {
void WriteUserIds(JsonWriter& w, JsonWriter::KeyName key, const std::vector<UserId>& ids) {
  w.Key(key).BeginArray();
  for (UserId id : ids) w.UserId(id);
  w.EndArray();
}

// Everything of the conversation object but its member list.
void WriteConversationHead(JsonWriter& w, const store::Conversation& c) {
  w.Key("conversation_id").ConvId(c.id)
      .Field("type", store::ConvTypeName(c.type))
      .Field("title", c.title);
}

void WriteConversationRoles(JsonWriter& w, const store::Conversation& c) {
  if (c.type == store::ConvType::kGroup) {
    w.Key("owner_id").UserId(c.created_by);
    WriteUserIds(w, "admin_ids", c.admins);
  }
  w.Field("created_ms", c.created_ms);
}
}  // namespace

void WriteConversationFields(JsonWriter& w, const store::Conversation& c) {
  WriteConversationHead(w, c);
  WriteUserIds(w, "member_ids", c.members);
  WriteConversationRoles(w, c);
}

std::string ConversationUpdatedFrame(const store::Conversation& c, const MembershipDelta& d) {
  JsonWriter w(192 + 28 * (c.admins.size() + d.added.size() + d.removed.size()) + c.title.size());
  w.BeginObject().Field("event", "conversation_updated");
  WriteConversationHead(w, c);
  WriteConversationRoles(w, c);
  w.Field("member_count", static_cast<uint64_t>(c.members.size()));
  if (!d.added.empty()) WriteUserIds(w, "members_added", d.added);
  if (!d.removed.empty()) WriteUserIds(w, "members_removed", d.removed);
  w.EndObject();
  return std::move(w).Take();
}

std::string ConversationRemovedFrame(ConvId conv) {
  JsonWriter w(80);
  w.BeginObject().Field("event", "conversation_removed").Key("conversation_id").ConvId(conv).EndObject();
  return std::move(w).Take();
}

std::string MessageFrame(const store::Message& m) {
  // The fixed part (names, ids, timestamps) is ~290 bytes; sized so that the one
  // allocation holds the whole frame unless the content needs much escaping.
  JsonWriter w(320 + m.content.size() + m.client_msg_id.size() + m.media_url.size() +
               m.target_message_id.size() + m.reply_to.size() + m.content.size() / 16);
  w.BeginObject().Field("event", "message");
  WriteMessageFields(w, m);
  w.EndObject();
  return std::move(w).Take();
}

std::string AckFrame(const store::Message& m, bool duplicate) {
  JsonWriter w(224 + m.client_msg_id.size());  // ~205 bytes besides the client's id
  w.BeginObject()
      .Field("event", "message_ack")
      .Field("client_msg_id", m.client_msg_id)
      .Key("message_id").MessageId(m.conv, m.seq)
      .Key("conversation_id").ConvId(m.conv)
      .Field("seq", static_cast<uint64_t>(m.seq))
      .Field("server_timestamp_ms", m.server_ms)
      .Field("duplicate", duplicate)
      .EndObject();
  return std::move(w).Take();
}

std::string ErrorFrame(const Status& s, std::string_view client_msg_id) {
  JsonWriter w(128);
  w.BeginObject()
      .Field("event", "error")
      .Field("code", CodeName(s.code()))
      .Field("message", s.message());
  if (!client_msg_id.empty()) w.Field("client_msg_id", client_msg_id);
  w.EndObject();
  return std::move(w).Take();
}

std::string PongFrame(int64_t server_ms) {
  JsonWriter w(64);
  w.BeginObject().Field("event", "pong").Field("server_timestamp_ms", server_ms).EndObject();
  return std::move(w).Take();
}

std::string WelcomeFrame(const WelcomeInfo& i) {
  JsonWriter w(256);
  w.BeginObject()
      .Field("event", "welcome")
      .Field("user_id", i.user_id)
      .Field("device_id", i.device_id)
      .Field("session_id", i.session_id)
      .Field("node_id", i.node_id)
      .Field("heartbeat_interval_ms", i.heartbeat_interval_ms)
      .Field("server_timestamp_ms", i.server_timestamp_ms)
      .EndObject();
  return std::move(w).Take();
}

std::string ErrorBody(const Status& s) {
  JsonWriter w(128);
  w.BeginObject().Key("error").BeginObject()
      .Field("code", CodeName(s.code()))
      .Field("message", s.message())
      .EndObject().EndObject();
  return std::move(w).Take();
}

}  // namespace sb::protocol
