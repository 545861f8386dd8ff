// Shard-private state of the chat core, shared by chat_core.cpp and presence.cpp.
// Everything here is owned by one shard thread; nothing is locked.
#pragma once

#include <algorithm>
#include <deque>
#include <tuple>
#include <map>
#include <unordered_map>
#include <vector>

#include "base/timer_wheel.h"
#include "chat/chat_core.h"
#include "presence/registry.h"
#include "protocol/client_frames.h"

namespace sb::chat {

using FramePtr = std::shared_ptr<const std::string>;

// One committed message on its way to the local sessions of a shard.
struct Delivery {
  FramePtr frame;
  std::shared_ptr<const std::vector<UserId>> members;
  uint64_t exclude_session;
  ConvId conv;
  Seq seq;
  bool group;  // goes through the shard's bulk lane
};

// A receipt frame on its way to every device of one sender (all shards look it up).
// `recipient` is the member it speaks for, or kAllMembers for an aggregate.
struct RoutedReceipt {
  ConvId conv;
  UserId sender;
  UserId recipient;
  bool read;
  Seq up_to;
  FramePtr frame;
};

// The group-delivery bulkhead of one shard. Group messages are fanned out from here
// in slices of at most CoreOptions::bulk_slice_sends member visits; between slices the
// shard runs whatever else was posted to it (1:1 deliveries, acks, receipts, frames
// from its own sockets), so a flood of 1,000-member messages delays those by one slice
// at most. Conversations take turns (round robin, one message each), so a small group
// is not stuck behind a large group's backlog; within a conversation order is FIFO.
struct BulkLane {
  struct Pending {
    std::deque<Delivery> queue;
    size_t next_member = 0;  // progress through queue.front()'s members
  };
  std::unordered_map<ConvId, Pending> by_conv;
  std::deque<ConvId> turns;  // conversations with something queued, in turn order
  bool drain_posted = false;
  int64_t backlog = 0;       // member visits queued on this shard
};

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
  Seq committed_seq = 0;  // last seq known to be in the store
  // Senders of the latest committed messages (seq, sender), oldest first: receipts
  // find whom to notify here without reading the store.
  std::deque<std::pair<Seq, UserId>> recent_senders;
  // Receipt state per member (loaded with the conversation) and the last cursor
  // written per device (key: the user id's 8 bytes, then the device id): both only
  // move forward. Looked up by string_view, so a receipt allocates no key.
  std::unordered_map<UserId, store::MemberReceipt> receipts;
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(std::string_view k) const { return std::hash<std::string_view>{}(k); }
  };
  std::unordered_map<std::string, Seq, KeyHash, std::equal_to<>> device_cursors;
  // Groups above chat.receipts_max_members: what senders are told is "delivered to
  // all" / "read by all" (delivery.cpp, RouteAggregate). Built on first use.
  struct Aggregate;
  std::unique_ptr<Aggregate> aggregate;
  // Edit/delete targets whose new version is on its way to the store: the latest
  // version and how many rewrites of it are in flight. A second edit builds on the first.
  std::unordered_map<Seq, std::pair<store::Message, int>> rewrites_in_flight;
  // Members typing now, with the time their `started` expires (never stored).
  std::unordered_map<UserId, int64_t> typing_until_ms;
  uint64_t last_used = 0;

  bool IsMember(UserId u) const { return std::binary_search(members->begin(), members->end(), u); }
  ~ConvState();
};

// Every member's routed (committed) delivered and read seq, and how many members stand
// at each seq: "delivered to all but S" is the smallest key, or the next one when S
// alone stands there. A receipt moves one member: O(log members).
struct ChatCore::ConvState::Aggregate {
  std::shared_ptr<const std::vector<UserId>> members;  // the list `marks` follows
  std::unordered_map<UserId, std::pair<Seq, Seq>> marks;  // member -> (delivered, read)
  std::map<Seq, uint32_t> delivered, read;               // seq -> members there
  // Per sender, the last aggregate routed (delivered, read): only forward, never twice.
  std::unordered_map<UserId, std::pair<Seq, Seq>> routed;
};
inline ChatCore::ConvState::~ConvState() = default;

struct ChatCore::SendRequest {
  protocol::SendMessage msg;
  ConvId conv = 0;
  UserId user = 0;
  std::string device;
  uint32_t origin_shard = 0;
  uint64_t origin_session = 0;
  int64_t recv_ns = 0;
};

// A conversation being (or having been) replayed to one connection by `resume`.
struct Replay {
  Seq sent_upto = 0;  // highest seq sent to this connection
  bool done = false;  // replay reached the end of the store
  // Live messages that arrived while the replay ran, sent after it (seq, frame).
  std::vector<std::pair<Seq, std::shared_ptr<const std::string>>> held;
};

// Per connection, on the connection's shard.
// Linked in Shard::checks (WheelHook) while a first-frame wait or the presence TTL runs.
struct SessionState : WheelHook {
  uint64_t id = 0;  // the session's id (its key in Shard::sessions)
  double tokens = 0;        // send_message token bucket
  int64_t bucket_ns = 0;
  int64_t last_active_ms = 0;  // any frame counts as a heartbeat
  bool online = true;          // false once silent past the presence TTL
  std::vector<UserId> subscriptions;  // presence targets
  // Set by `resume`, kept for the connection's life: live deliveries of these
  // conversations are held during the replay and deduplicated by seq after it.
  std::unordered_map<ConvId, Replay> replay;
  std::vector<ConvId> replay_queue;  // conversations still to replay, in order
  bool resuming = false;
  // Highest receipt mark sent to this connection per (conversation, recipient, READ?):
  // a routed receipt that raced with a resume's replay of the same state is dropped
  // instead of moving the client's view backward.
  std::map<std::tuple<ConvId, UserId, bool>, Seq> receipt_marks;
  // A new connection gets no live message before its first frame (or first_frame_wait_ms):
  // if that frame is `resume`, what arrived meanwhile joins the replay in seq order
  // instead of running ahead of it.
  bool awaiting_first_frame = true;
  int64_t attached_ms = 0;
  std::vector<std::tuple<ConvId, Seq, std::shared_ptr<const std::string>>> early;
  uint64_t replayed = 0;
  // The running resume's conversations, listed once when it starts: its receipts are
  // replayed for these when the messages are done.
  std::vector<ConvId> resume_convs;
  std::vector<ConvId> truncated;  // this resume's conversations with dropped history
};

// What the core adds to the registry for one user, on the user's owner shard: what
// subscribers were told and who they are. Devices and last seen live in the
// presence::Registry.
struct UserPresence {
  bool told_online = false;     // what subscribers were last told
  int64_t offline_since_ms = 0; // no device since; offline is told after the grace
  std::vector<std::pair<uint32_t, uint64_t>> subscribers;  // (shard, session id)
  int8_t hide_last_seen = -1;   // -1: not loaded from the store yet
};

struct ChatCore::Shard {
  Shard(const protocol::Limits& l, int64_t now_ms) : parser(l), checks(now_ms) {}
  protocol::FrameParser parser;
  std::unordered_map<ConvId, std::unique_ptr<ConvState>> convs;
  std::unordered_map<UserId, std::vector<Session*>> by_user;
  std::unordered_map<uint64_t, Session*> by_id;
  std::unordered_map<uint64_t, SessionState> sessions;
  // Sessions by the next moment their state could change by itself (first-frame wait
  // over, presence TTL run out): Tick visits those that came due, not every session.
  // Declared after `sessions`, whose nodes it links.
  TimerWheel<SessionState> checks;
  // Presence of the users this shard owns (user id % shards): the registry (devices,
  // last seen) and the core's view on top of it.
  std::unique_ptr<presence::Registry> registry;
  std::unordered_map<UserId, UserPresence> presence;
  // Users of this shard whose last device left, waiting for the grace to pass:
  // (when it left, user), oldest first. The grace is one constant, so entries come due
  // in this order and a tick looks only at those that did (a mass disconnect must not
  // make every tick of the next seconds walk all of them). A user who came back, or
  // left again later, is skipped when its entry comes due.
  std::deque<std::pair<int64_t, UserId>> pending_offline;
  // Conversations of this shard with someone typing (for expiry sweeps).
  std::vector<ConvId> typing_convs;
  BulkLane bulk;
  uint64_t tick = 0;
  // Reused by the shard's thread to build lookup keys without allocating.
  std::string scratch_key;
};

inline FramePtr MakeFrame(std::string s) { return std::make_shared<const std::string>(std::move(s)); }

}  // namespace sb::chat
