// Frames the server sends, serialized once (a group message is serialized once and
// the same bytes go to every recipient).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/json_writer.h"
#include "base/status.h"
#include "store/store.h"

namespace sb::protocol {

// The `message` object of the contract (without "event"), for frames and REST pages.
void WriteMessageFields(JsonWriter& w, const store::Message& m);

// The conversation object of the contract (without "event"), for REST answers and the
// conversation_updated frame.
void WriteConversationFields(JsonWriter& w, const store::Conversation& c);

// Who joined and who left a conversation in one change (a creation: every member joined).
struct MembershipDelta {
  std::vector<UserId> added, removed;
};

std::string MessageFrame(const store::Message& m);
// A conversation was created or changed (members, title, roles): its new state without
// the member list (a large group's list in every change, to every member, would cost
// members² bytes), with `member_count` and the members added and removed by this change
// (docs/protocol.md, "Groups as built").
std::string ConversationUpdatedFrame(const store::Conversation& c, const MembershipDelta& d);
// The user is no longer a member (left, or removed): to every device of that user.
std::string ConversationRemovedFrame(ConvId conv);
std::string AckFrame(const store::Message& m, bool duplicate);
std::string ErrorFrame(const Status& s, std::string_view client_msg_id = {});
std::string PongFrame(int64_t server_ms);
struct WelcomeInfo {
  std::string user_id, device_id, session_id, node_id;
  int64_t heartbeat_interval_ms = 20000;
  int64_t server_timestamp_ms = 0;
};
std::string WelcomeFrame(const WelcomeInfo& w);

// {"error":{"code":"...","message":"..."}} for REST answers.
std::string ErrorBody(const Status& s);

}  // namespace sb::protocol
