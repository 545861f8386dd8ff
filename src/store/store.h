// The message store: the one seam between the chat core and durable state.
//
// Two implementations are planned: the embedded one (RocksDB under --data-dir, the
// default) and PostgreSQL (cluster shape). The interface is deliberately narrow and
// synchronous; callers that must not block (shard event loops) call it from the
// commit thread or accept a bounded in-memory read.
//
// Contract shared by every implementation:
//   * Thread-safe: any method may be called from any thread concurrently.
//   * AppendMessages is atomic (the whole batch or nothing) and, when it returns OK,
//     durable per StoreOptions::sync (kAlways: survives power loss; kNone: survives a
//     crash of this process but maybe not of the machine).
//   * Messages are keyed by (conversation, seq). A read of one page costs O(log n + page)
//     however many messages are stored, in this or any other conversation.
//   * Dedup entries (conversation, client_msg_id) are written in the same atomic batch
//     as their message. They are kept for at least kDedupWindowMs; the caller decides
//     whether an older entry still counts (FindDedup returns it with its server_ms).
//   * The store never assigns seq: exactly one sequencer per conversation does (the
//     owning shard), and AppendMessages rejects nothing on seq grounds.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/ids.h"
#include "base/status.h"

namespace sb::store {

inline constexpr int64_t kDedupWindowMs = 24LL * 3600 * 1000;

enum class ConvType : uint8_t { kDirect = 1, kGroup = 2 };
enum class ContentType : uint8_t { kText = 1, kImage, kFile, kReaction, kEdit, kDelete };

std::string_view ConvTypeName(ConvType t);            // "direct" | "group"
std::string_view ContentTypeName(ContentType t);      // "text" | "image" | ...
std::optional<ContentType> ParseContentType(std::string_view s);

struct User {
  UserId id = 0;
  std::string username;      // unique, stored as given (callers normalise)
  std::string display_name;
  std::string password_hash;  // libsodium argon2id encoded string
  int64_t created_ms = 0;
};

struct RefreshToken {
  std::string token_hash;  // SHA-256 of the opaque token (raw 32 bytes); the token itself is never stored
  UserId user = 0;
  std::string device_id;
  int64_t created_ms = 0;
  int64_t expires_ms = 0;
};

struct Conversation {
  ConvId id = 0;
  ConvType type = ConvType::kGroup;
  std::string title;
  std::vector<UserId> members;  // sorted ascending, no duplicates
  std::vector<UserId> admins;   // groups: members who may add/remove/rename (sorted); the owner is created_by
  UserId created_by = 0;
  int64_t created_ms = 0;
};

struct Message {
  ConvId conv = 0;
  Seq seq = 0;
  UserId sender = 0;
  std::string sender_device;
  std::string client_msg_id;
  ContentType content_type = ContentType::kText;
  std::string content;
  std::string media_url;
  std::string target_message_id;
  std::string reply_to;
  int64_t sent_ms = 0;    // client's clock, as sent
  int64_t server_ms = 0;  // when the sequencer accepted it
  uint64_t fingerprint = 0;  // hash of the body; tells a retry from a conflicting reuse of the key
  // Set on the target of later `edit` / `delete` messages (the edits and deletes are
  // messages of their own, in sequence). A deleted message keeps its place and ids
  // (a tombstone) but has no content or media_url any more.
  bool deleted = false;
  int64_t edited_ms = 0;  // server time of the latest edit, 0 if never edited
};

struct DedupEntry {
  Seq seq = 0;
  int64_t server_ms = 0;
  uint64_t fingerprint = 0;
};

// One member's receipt state in one conversation: every message up to `delivered`
// reached one of the member's devices, every message up to `read` was read. Both only
// move forward, and read <= delivered.
struct MemberReceipt {
  UserId user = 0;
  Seq delivered = 0;
  Seq read = 0;
  int64_t delivered_ms = 0;  // when `delivered` last moved
  int64_t read_ms = 0;       // when `read` last moved
};

// The highest seq one device of a user acknowledged as DELIVERED in a conversation.
struct DeviceCursor {
  UserId user = 0;
  std::string device;
  ConvId conv = 0;
  Seq delivered = 0;
};

// Per-user preferences the server enforces.
struct UserSettings {
  bool hide_last_seen = false;  // others see online/offline, never last_seen_ms
};

// An uploaded attachment's record (the bytes live in files, see src/attachments/).
struct Attachment {
  std::string id;            // SHA-256 of the bytes, raw 32 bytes
  uint64_t size = 0;
  std::string content_type;  // normalised media type, as first uploaded
  UserId uploader = 0;       // the first uploader (later uploaders are recorded too)
  int64_t created_ms = 0;
  // The latest use: an upload of these bytes, or a send naming them (TouchAttachment).
  // An attachment no committed message references is deleted once this is older than
  // store.unreferenced_attachment_ttl_s (AttachmentStore::Sweep).
  int64_t used_ms = 0;
};

// What a conversation list shows of one conversation: its latest message. Kept per
// conversation and written by Commit in the same batch as the messages (one record per
// conversation per batch, whatever the group's size), so a list costs O(conversations
// of the user) point reads and no message reads.
inline constexpr size_t kPreviewBytes = 120;
struct ConversationSummary {
  Seq last_seq = 0;          // 0: no message yet
  int64_t last_ms = 0;       // server time of the latest message
  UserId last_sender = 0;
  ContentType last_type = ContentType::kText;
  std::string preview;       // the first kPreviewBytes of its content, cut on a UTF-8 boundary
};

// One row of a user's conversation list.
struct ConversationListEntry {
  Conversation conv;
  ConversationSummary summary;
  Seq read = 0;  // the user's READ mark in the conversation
};

// Everything the commit thread writes in one atomic batch.
struct CommitBatch {
  std::vector<Message> messages;  // with their dedup entries, as AppendMessages
  std::vector<Message> rewrites;  // existing messages replaced whole (edit/delete targets), no dedup
  std::vector<std::pair<ConvId, MemberReceipt>> receipts;  // replace the member's state
  std::vector<DeviceCursor> cursors;                       // replace the device's cursor
  bool empty() const { return messages.empty() && rewrites.empty() && receipts.empty() && cursors.empty(); }
};

enum class SyncPolicy {
  kAlways,  // fsync (fdatasync) the log before AppendMessages returns: the default
  kNone,    // write to the OS only: survives kill -9, not a power cut
};

struct StoreOptions {
  std::string dir;                           // created if missing
  SyncPolicy sync = SyncPolicy::kAlways;
  size_t cache_bytes = 256ull << 20;         // read cache
  size_t write_buffer_bytes = 64ull << 20;   // memtable size
};

class Store {
 public:
  virtual ~Store() = default;

  // ---- accounts ----
  // kConflict if the username or id is taken.
  virtual Status CreateUser(const User& u) = 0;
  // kNotFound if absent.
  virtual Result<User> GetUser(UserId id) = 0;
  virtual Result<User> FindUserByUsername(std::string_view username) = 0;

  virtual Status PutRefreshToken(const RefreshToken& t) = 0;
  virtual Result<RefreshToken> GetRefreshToken(std::string_view token_hash) = 0;
  // Deleting an absent token is OK.
  virtual Status DeleteRefreshToken(std::string_view token_hash) = 0;

  // ---- conversations ----
  // Stores a new conversation. For ConvType::kDirect (exactly two members), if a
  // direct conversation between the same pair exists, returns that one and sets
  // *created = false; otherwise *created = true. Atomic with respect to concurrent
  // calls for the same pair: exactly one direct conversation per pair ever exists.
  virtual Result<Conversation> CreateConversation(const Conversation& c, bool* created) = 0;
  // kNotFound if absent.
  virtual Result<Conversation> GetConversation(ConvId id) = 0;
  // Reads the conversation, lets `mutate` change it (members, admins, title, owner),
  // and writes the result with the membership index in one atomic, synced write.
  // Serialized with every other conversation change. `mutate` returning an error
  // leaves everything unchanged. kNotFound if absent.
  virtual Result<Conversation> UpdateConversation(ConvId id,
                                                  const std::function<Status(Conversation&)>& mutate) = 0;
  // Every conversation id, ascending (start-up catch-up of derived indexes).
  virtual Result<std::vector<ConvId>> AllConversationIds() = 0;
  // Conversations the user is a member of, ascending by id.
  virtual Result<std::vector<ConvId>> ListConversationsOf(UserId user) = 0;

  // ---- messages ----
  // Highest stored seq of the conversation, 0 if it has no message.
  virtual Result<Seq> LastSeq(ConvId conv) = 0;
  // The dedup entry for (conv, client_msg_id), whatever its age, if still stored.
  virtual Result<std::optional<DedupEntry>> FindDedup(ConvId conv, std::string_view client_msg_id) = 0;
  // Writes every message and its dedup entry (replacing an older entry for the same
  // key) as one atomic batch. Messages of one conversation appear in seq order.
  // Conversation summaries are not touched (imports, benchmarks of the raw write
  // path); the server writes through Commit, which maintains them.
  virtual Status AppendMessages(std::span<const Message> batch) = 0;
  // ---- retention ----
  // The lowest seq retention kept (1 when nothing was dropped): messages below it are
  // gone for good, and LastSeq never goes below it - 1.
  virtual Result<Seq> FirstRetained(ConvId conv) = 0;
  // Drops every message of the conversation with seq < first_kept (and their attachment
  // references), atomically with the new FirstRetained mark (durable). Never moves the
  // mark back.
  virtual Status DropHistoryBefore(ConvId conv, Seq first_kept) = 0;

  // Up to `limit` messages with seq < before_seq, newest first. The newest page is
  // before_seq = std::numeric_limits<Seq>::max().
  virtual Result<std::vector<Message>> ReadBefore(ConvId conv, Seq before_seq, size_t limit) = 0;
  // Up to `limit` messages with seq > after_seq, oldest first.
  virtual Result<std::vector<Message>> ReadAfter(ConvId conv, Seq after_seq, size_t limit) = 0;
  // kNotFound if absent.
  virtual Result<Message> GetMessage(ConvId conv, Seq seq) = 0;

  // ---- delivery state ----
  // Writes the whole batch atomically, durable per StoreOptions::sync (like
  // AppendMessages, which is Commit with messages only).
  virtual Status Commit(const CommitBatch& batch) = 0;
  // Receipt state of every member that has any, ascending by user.
  virtual Result<std::vector<MemberReceipt>> GetReceipts(ConvId conv) = 0;
  // Every conversation of the user with its summary and the user's READ mark, in no
  // particular order (the caller sorts).
  virtual Result<std::vector<ConversationListEntry>> ListConversationEntries(UserId user) = 0;
  // The device's cursor in one conversation (0 when none was recorded).
  virtual Result<Seq> GetDeviceCursor(UserId user, std::string_view device, ConvId conv) = 0;
  // Every conversation cursor recorded for the device, ascending by conversation.
  virtual Result<std::vector<std::pair<ConvId, Seq>>> GetDeviceCursors(UserId user, std::string_view device) = 0;

  // ---- device revocation (log out) ----
  // Access tokens of (user, device) issued at or before `at_s` are no longer valid.
  virtual Status PutRevocation(UserId user, std::string_view device, int64_t at_s) = 0;
  struct Revocation {
    UserId user = 0;
    std::string device;
    int64_t at_s = 0;
  };
  // Every recorded revocation (loaded once at start; entries older than the access
  // token lifetime are harmless and may be dropped by the caller).
  virtual Result<std::vector<Revocation>> ListRevocations() = 0;

  // ---- settings ----
  // Defaults when the user never saved any.
  virtual Result<UserSettings> GetUserSettings(UserId user) = 0;
  virtual Status PutUserSettings(UserId user, const UserSettings& s) = 0;

  // ---- attachments ----
  // Every committed message (AppendMessages, Commit) whose media_url names one of our
  // attachments (attachments::ParseMediaUrl) also records a reference "attachment ->
  // (conversation, seq)", in the same atomic batch. The reference goes when the message
  // does: deleted (a Commit rewrite with `deleted`) or dropped by retention
  // (DropHistoryBefore), in the same batch. An attachment without references is
  // collected once unused for the TTL (AttachmentStore::Sweep).
  //
  // Records an upload of `a.id` by `a.uploader` (synced). The first upload creates the
  // record; later ones (identical bytes) keep its content type, add their uploader and
  // set `used_ms` to their `created_ms`. Returns the stored record.
  virtual Result<Attachment> PutAttachment(const Attachment& a) = 0;
  // kNotFound if absent (or `id` is not 32 bytes).
  virtual Result<Attachment> GetAttachment(std::string_view id) = 0;
  // True when `user` uploaded these bytes, or is now a member of a conversation with a
  // committed, not deleted, retained message referencing them. False for an unknown id.
  virtual Result<bool> AttachmentVisibleTo(std::string_view id, UserId user) = 0;
  // Conversations with a committed message referencing the attachment (as above),
  // ascending, each once.
  virtual Result<std::vector<ConvId>> AttachmentConversations(std::string_view id) = 0;
  // Up to `limit` attachment records in id order, after `after` ("" from the first).
  virtual Result<std::vector<Attachment>> ListAttachments(std::string_view after, size_t limit) = 0;
  // A send names the attachment: sets `used_ms` to `now_ms` unless it is already within
  // `granularity_ms` of it (so a popular attachment costs a write per granularity, not
  // per send). kNotFound when there is no record.
  virtual Status TouchAttachment(std::string_view id, int64_t now_ms, int64_t granularity_ms) = 0;
  // Deletes the record and its uploaders when no committed message references the
  // attachment and its `used_ms` is before `unused_before_ms`; true when it did. Checked
  // and deleted atomically with respect to PutAttachment and TouchAttachment (synced).
  // The bytes are the caller's (AttachmentStore::Sweep).
  virtual Result<bool> DeleteAttachmentIfUnused(std::string_view id, int64_t unused_before_ms) = 0;
};

// The embedded default: RocksDB in options.dir.
Result<std::unique_ptr<Store>> OpenEmbeddedStore(const StoreOptions& options);

}  // namespace sb::store
