// Shard-private state of the chat core, shared by chat_core.cpp and presence.cpp.
// Everything here is owned by one shard thread; nothing is locked.
#pragma once

#include <algorithm>
#include <map>
#include <unordered_map>
#include <vector>

#include "chat/chat_core.h"
#include "protocol/client_frames.h"

namespace sb::chat {

using FramePtr = std::shared_ptr<const std::string>;

struct ChatCore::ConvState {
  ConvId id = 0;
  store::ConvType type = store::ConvType::kGroup;
  std::shared_ptr<const std::vector<UserId>> members;  // sorted; replaced, never mutated
  Seq last_seq = 0;  // last seq handed out (committed or in flight)
  struct Waiter {
    uint32_t shard;
    uint64_t session;
    int64_t recv_ns;
    bool duplicate;
  };
  struct Pending {
    uint64_t fingerprint;
    std::vector<Waiter> waiters;
  };
  // Sequenced, not yet committed, by client_msg_id: a retry that arrives meanwhile
  // waits for the same commit instead of being stored twice.
  std::unordered_map<std::string, Pending> pending;
  // Members typing now, with the time their `started` expires (never stored).
  std::unordered_map<UserId, int64_t> typing_until_ms;
  uint64_t last_used = 0;

  bool IsMember(UserId u) const { return std::binary_search(members->begin(), members->end(), u); }
};

struct ChatCore::SendRequest {
  protocol::SendMessage msg;
  ConvId conv = 0;
  UserId user = 0;
  std::string device;
  uint32_t origin_shard = 0;
  uint64_t origin_session = 0;
  int64_t recv_ns = 0;
};

// Per connection, on the connection's shard.
struct SessionState {
  double tokens = 0;        // send_message token bucket
  int64_t bucket_ns = 0;
  int64_t last_active_ms = 0;  // any frame counts as a heartbeat
  bool online = true;          // false once silent past the presence TTL
  std::vector<UserId> subscriptions;  // presence targets
};

// Presence of one user, on the user's owner shard.
struct UserPresence {
  // Online devices: session id -> shard of the session.
  std::unordered_map<uint64_t, uint32_t> devices;
  bool told_online = false;     // what subscribers were last told
  int64_t last_seen_ms = 0;     // when the last device went away (or 0: never seen)
  int64_t offline_since_ms = 0; // devices empty since; offline is told after the grace
  std::vector<std::pair<uint32_t, uint64_t>> subscribers;  // (shard, session id)
};

struct ChatCore::Shard {
  explicit Shard(const protocol::Limits& l) : parser(l) {}
  protocol::FrameParser parser;
  std::unordered_map<ConvId, std::unique_ptr<ConvState>> convs;
  std::unordered_map<UserId, std::vector<Session*>> by_user;
  std::unordered_map<uint64_t, Session*> by_id;
  std::unordered_map<uint64_t, SessionState> sessions;
  // Presence of the users this shard owns (user id % shards).
  std::unordered_map<UserId, UserPresence> presence;
  // Users of this shard whose last device left, waiting for the grace to pass.
  std::vector<UserId> pending_offline;
  // Conversations of this shard with someone typing (for expiry sweeps).
  std::vector<ConvId> typing_convs;
  uint64_t tick = 0;
};

inline FramePtr MakeFrame(std::string s) { return std::make_shared<const std::string>(std::move(s)); }

}  // namespace sb::chat
