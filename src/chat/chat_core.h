// The chat core: validation, membership, dedup, sequencing, and routing of committed
// messages to connected devices. Shared-nothing by conversation and by connection:
//
//  * Each conversation is owned by one shard (hash of its id). Only that shard's
//    thread assigns its seqs, checks dedup and membership for it: exactly one
//    sequencer per conversation, so seq is gap-free without locks.
//  * Each connection (Session) lives on the shard whose thread accepted it; only that
//    thread sends to it.
//  * Shards talk by posting tasks to each other (Executor::Post, FIFO per sender).
//
// The life of a send (docs/architecture.md walks through it):
//   session shard: parse + validate -> post to owner shard
//   owner shard:   membership, dedup, seq = last + 1 -> CommitQueue
//   commit thread: one atomic store batch (fsync) -> post back to owner shard
//   owner shard:   serialize `message` once -> post acks and deliveries per shard
//   every shard:   queue frames on the local sessions of the members
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "base/clock.h"
#include "chat/executor.h"
#include "presence/registry.h"
#include "protocol/client_frames.h"
#include "protocol/server_frames.h"
#include "chat/session.h"
#include "protocol/limits.h"
#include "store/store.h"

namespace sb::chat {

struct CoreOptions {
  protocol::Limits limits;
  // A send naming one of our attachments refreshes its last use at most this often
  // (AttachmentStore::TouchGranularityMs); 0: unreferenced attachments are never
  // collected, so nothing is refreshed.
  int64_t attachment_touch_ms = 0;
  std::string node_id = "node-1";
  int64_t dedup_window_ms = store::kDedupWindowMs;
  size_t max_commit_batch = 2048;
  // Shortest time between the starts of two group commits (CommitQueue), us.
  int64_t commit_interval_us = 1000;
  // Messages waiting for the commit thread before sends are refused ("unavailable").
  size_t max_commit_queue = 200000;
  // Conversations kept in a shard's memory (state reloads from the store on demand).
  size_t conv_cache_per_shard = 200000;
  // A device silent (no frame of any kind) this long is offline.
  int64_t presence_ttl_ms = 30000;
  // A user whose last device left is announced offline only after this grace, so a
  // quick reconnect announces nothing at all (flap damping).
  int64_t presence_grace_ms = 5000;
  // presence_subscribe targets per connection.
  size_t max_presence_subscriptions = 500;
  // A `typing` `started` with no `stopped` ends by itself after this long.
  int64_t typing_ttl_ms = 6000;
  // Resume: messages read from the store per step, and the send-queue level below
  // which the next step runs (so a long catch-up flows at the client's pace).
  size_t replay_page = 256;
  size_t replay_queue_watermark = 1024;
  // Per-member receipts are routed live to senders, and replayed by resume, only in
  // conversations of at most this many members. In a larger group every member's
  // receipt would be a frame to every sender (1,000 frames per message, enough to
  // overflow a sender's send queue); there they are stored (unread counts, GET
  // .../receipts) and senders get aggregate "delivered to all" / "read by all" frames.
  size_t receipts_max_members = 100;
  // Live delivery to a new connection starts with its first frame, or after this.
  int64_t first_frame_wait_ms = 1000;
  // Makes the presence registry of each shard (default: in memory).
  std::function<std::unique_ptr<presence::Registry>(uint32_t shard)> make_registry;
  // Told of every committed batch's messages on the commit thread (search indexing).
  std::function<void(const std::vector<store::Message>&)> after_commit;
  // Senders of this many latest messages per conversation are kept in memory.
  size_t recent_senders = 4096;
  // Group-delivery bulkhead (see BulkLane in core_state.h): member visits per slice
  // before the shard turns to other work, and the member visits that may wait in the
  // lanes of all shards before group sends are refused with `unavailable` (1:1 sends
  // are never refused for it).
  size_t bulk_slice_sends = 512;
  int64_t max_bulk_backlog = 4000000;
};

// What one user may see of another's presence.
struct PresenceView {
  bool online = false;
  int64_t last_seen_ms = 0;  // 0: never seen since this node started
};

using FramePtrT = std::shared_ptr<const std::string>;

struct SessionState;

class ChatCore {
 public:
  // `shards[i]` runs shard i. The store must outlive the core.
  ChatCore(store::Store& store, std::vector<Executor*> shards, CoreOptions opts, const Clock& clock);
  ~ChatCore();
  ChatCore(const ChatCore&) = delete;
  ChatCore& operator=(const ChatCore&) = delete;

  void Start();
  // Commits every accepted message and stops the commit thread. Shards must still be
  // running while Stop waits, so that acknowledgements can be handed out.
  void Stop();

  size_t shard_count() const { return shards_.size(); }
  uint32_t OwnerShard(ConvId conv) const;

  // On shard `shard`'s thread. Attach sends the `welcome` frame.
  void Attach(uint32_t shard, Session* s);
  void Detach(uint32_t shard, Session* s);
  // One text frame from a session, on the session's shard thread.
  void OnFrame(uint32_t shard, Session* s, std::string_view text);

  // Messages accepted (sequenced) and not yet acknowledged. Thread-safe.
  int64_t InFlight() const { return in_flight_.load(); }
  // Sessions attached, over all shards. Thread-safe.
  int64_t Sessions() const { return sessions_.load(); }

  // Runs `fn(session)` on every session of shard `shard` (on that shard's thread).
  void ForEachSession(uint32_t shard, const std::function<void(Session*)>& fn);

  // Periodic work of shard `shard` (heartbeat expiry, offline announcements after the
  // grace, typing expiry). The gateway calls it about once a second on that shard's
  // thread; tests call it after moving the clock.
  void Tick(uint32_t shard);

  // Presence of `target` as `viewer` may see it, or nullopt when they share no
  // conversation (a stranger learns nothing, not even whether the user exists).
  // Blocking (waits for the owner shard): call it from a pool thread, not a shard.
  std::optional<PresenceView> QueryPresence(UserId viewer, UserId target);
  // A conversation's record was created or changed in the store (members, title,
  // roles): its owner shard switches to the new member list before this returns, so a
  // removed member gets nothing sequenced or committed from then on; then every device
  // of every member gets `conversation_updated` (with `delta`) and every device of the
  // users in `delta.removed` gets `conversation_removed`. Blocking (waits for the owner
  // shard, at most 2 s): call it from a pool thread.
  void ConversationChanged(const store::Conversation& c, const protocol::MembershipDelta& delta = {});
  // Closes every open connection of the user's device (all shards) with `code`.
  // Thread-safe; returns at once.
  void CloseDevice(UserId user, const std::string& device, uint16_t code, const std::string& reason);
  // The user changed the "hide last seen" setting (already stored). Thread-safe.
  void SetHideLastSeen(UserId user, bool hide);
  // True when some conversation has both users as members. Thread-safe (reads the store).
  bool SharesConversation(UserId a, UserId b);

  uint32_t UserOwnerShard(UserId user) const { return static_cast<uint32_t>(user % shards_.size()); }

 private:
  struct Shard;
  struct ConvState;
  struct SendRequest;

  struct ReceiptRequest;
  void HandleSend(uint32_t owner, std::shared_ptr<SendRequest> req);
  void OnCommitted(uint32_t owner, std::vector<store::Message>&& msgs,
                   std::vector<struct ReceiptChange>&& receipts);

  // delivery.cpp: receipts and resume.
  void OnReceipt(uint32_t shard, Session* s, const protocol::MessageReceipt& r);
  void HandleReceipt(uint32_t owner, const ReceiptRequest& r);
  // After a commit: the receipt frames a change means for the senders, appended to
  // `out`, which OnCommitted hands to every shard in the task that carries the batch's
  // acks and deliveries (one cross-shard post per shard per commit, not per receipt).
  void RouteReceipts(ConvState& cs, const struct ReceiptChange& rc, std::vector<struct RoutedReceipt>* out);
  // Large groups: "delivered to all" / "read by all" when the slowest members move.
  void RouteAggregate(ConvState& cs, const struct ReceiptChange& rc, std::vector<struct RoutedReceipt>* out);
  // Builds or follows (membership changes) cs.aggregate.
  void SyncAggregate(ConvState& cs);
  // The `recipient` of aggregate receipts in SendReceipt's marks (no user has id 0).
  static constexpr UserId kAllMembers = 0;
  void OnResume(uint32_t shard, Session* s, const protocol::Resume& r);
  void ContinueReplay(uint32_t shard, uint64_t session_id);
  void ReplayReceipts(uint32_t shard, Session* s, const std::vector<ConvId>& convs);
  // Sends a receipt frame to `s` unless it already has that mark or a higher one.
  void SendReceipt(Shard& sh, Session* s, ConvId conv, UserId recipient, bool read, Seq up_to,
                   const FramePtrT& frame);
  // The senders (other than `except`) of messages lo..hi and the highest seq of each.
  std::vector<std::pair<UserId, Seq>> SendersIn(ConvState& cs, Seq lo, Seq hi, UserId except);
  // The group bulkhead: queue a delivery on shard `shard`'s lane (on that shard), and
  // fan out one slice of the lane.
  void QueueBulk(uint32_t shard, struct Delivery&& d);
  void DrainBulk(uint32_t shard);
  // Sends `d` to the local sessions of members[from, to) on shard `sh`.
  void DeliverRange(Shard& sh, const struct Delivery& d, size_t from, size_t to);
  void Reply(uint32_t shard, uint64_t session_id, std::shared_ptr<const std::string> frame,
             int64_t recv_ns);
  ConvState* LoadConv(Shard& sh, ConvId conv, Status* err);
  // Live delivery filter for sessions that resumed: false when the frame must not be
  // sent now (held during a replay, or already sent by it).
  bool HoldOrPass(Shard& sh, Session* s, ConvId conv, Seq seq, const FramePtrT& frame);
  // Ends the first-frame wait of a session; `resume` keeps the early messages for its replay.
  void StartLive(Shard& sh, Session* s, bool for_resume);
  // Runs fn on shard `shard`: inline if `from` is that shard, else posted.
  void RunOn(uint32_t from, uint32_t shard, Task fn);
  // Queues `frame` on every local session of `users` except those of `except_user`
  // (0: none) and except session `except_session` (0: none). On shard `shard`.
  void SendToUsers(uint32_t shard, const std::vector<UserId>& users, const FramePtrT& frame,
                   UserId except_user, uint64_t except_session);

  // presence.cpp
  void Heartbeat(uint32_t shard, Session* s);
  // (Re)schedules the session's next check: the end of its first-frame wait or of its
  // presence TTL, whichever is first (none once both are settled).
  void ScheduleCheck(Shard& sh, SessionState& ss);
  void PresenceDeviceOnline(uint32_t shard, Session* s);
  void PresenceSessionGone(uint32_t shard, Session* s);
  void OnTyping(uint32_t shard, Session* s, const protocol::Typing& t);
  void OnPresenceSubscribe(uint32_t shard, Session* s, const protocol::PresenceSubscribe& p);
  void OwnerDeviceOnline(uint32_t owner, UserId user, uint64_t session, uint32_t session_shard);
  void OwnerDeviceOffline(uint32_t owner, UserId user, uint64_t session);
  void AnnouncePresence(uint32_t owner, UserId user);
  // What others may see as the user's last seen time (0: hidden or never seen).
  int64_t VisibleLastSeen(uint32_t owner, UserId user, struct UserPresence& up);

  store::Store& store_;
  std::vector<Executor*> shards_;
  std::vector<std::unique_ptr<Shard>> state_;
  CoreOptions opts_;
  const Clock& clock_;
  std::unique_ptr<class CommitQueue> commits_;
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> sessions_{0};
  std::atomic<int64_t> bulk_backlog_{0};  // member visits queued in every shard's lane
};

// 64-bit FNV-1a over the parts of a message body a retry must repeat exactly.
uint64_t BodyFingerprint(store::ContentType ct, std::string_view content, std::string_view media_url,
                         std::string_view target, std::string_view reply_to);

}  // namespace sb::chat
