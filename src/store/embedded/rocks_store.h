// The embedded store: one RocksDB database under StoreOptions::dir.
//
// Layout, record format and tuning rationale are in src/store/README.md. The
// encoding helpers are public (namespace rocks_format) so tests can check the key
// layout byte for byte and feed the decoders damaged input; nothing else should
// need them.
#pragma once

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "store/store.h"

namespace sb::store {

// Knobs the storage benchmark flips; production code gets the defaults through
// OpenEmbeddedStore(), and they are what the benchmark supported (README.md, "Tuning").
struct RocksTuning {
  bool compress_messages = true;      // LZ4 on the messages column family: -25% disk, no cost seen
  bool message_prefix_bloom = false;  // bloom on the 9-byte 'm'+conv prefix: no gain measured
  size_t message_block_bytes = 16 << 10;  // vs 4 KiB: -7% disk (better LZ4), same page cost
  bool message_insert_hints = true;  // per-conversation insert hint in the messages memtable
  size_t meta_write_buffer_bytes = 0;  // 0: write_buffer_bytes / 32 within 1-8 MiB
  bool meta_insert_hints = true;  // per-prefix insert hint for receipts, cursors and summaries
  bool own_memtable = true;  // skiplist_rep.h instead of RocksDB's memtables
  int message_l0_trigger = 4;  // L0 files that start a compaction; 2 read ~15% faster, not adopted
};

class RocksStore final : public Store {
 public:
  // Column families. "default" holds accounts, tokens and conversations.
  static constexpr const char* kMetaCf = "default";
  static constexpr const char* kMessagesCf = "messages";
  static constexpr const char* kDedupCf = "dedup";

  static Result<std::unique_ptr<RocksStore>> Open(const StoreOptions& options,
                                                  const RocksTuning& tuning = {});
  ~RocksStore() override;
  RocksStore(const RocksStore&) = delete;
  RocksStore& operator=(const RocksStore&) = delete;

  Status CreateUser(const User& u) override;
  Result<User> GetUser(UserId id) override;
  Result<User> FindUserByUsername(std::string_view username) override;

  Status PutRefreshToken(const RefreshToken& t) override;
  Result<RefreshToken> GetRefreshToken(std::string_view token_hash) override;
  Status DeleteRefreshToken(std::string_view token_hash) override;

  Result<Conversation> CreateConversation(const Conversation& c, bool* created) override;
  Result<Conversation> GetConversation(ConvId id) override;
  Result<Conversation> UpdateConversation(ConvId id, const std::function<Status(Conversation&)>& mutate) override;
  Result<std::vector<ConvId>> ListConversationsOf(UserId user) override;
  Result<std::vector<ConvId>> AllConversationIds() override;

  Result<Seq> LastSeq(ConvId conv) override;
  Result<Seq> FirstRetained(ConvId conv) override;
  Status DropHistoryBefore(ConvId conv, Seq first_kept) override;
  Result<std::optional<DedupEntry>> FindDedup(ConvId conv, std::string_view client_msg_id) override;
  Status AppendMessages(std::span<const Message> batch) override;
  Result<std::vector<Message>> ReadBefore(ConvId conv, Seq before_seq, size_t limit) override;
  Result<std::vector<Message>> ReadAfter(ConvId conv, Seq after_seq, size_t limit) override;
  Result<Message> GetMessage(ConvId conv, Seq seq) override;

  // rocks_delivery.cpp
  Status Commit(const CommitBatch& batch) override;
  Result<std::vector<MemberReceipt>> GetReceipts(ConvId conv) override;
  Result<std::vector<ConversationListEntry>> ListConversationEntries(UserId user) override;
  Result<Seq> GetDeviceCursor(UserId user, std::string_view device, ConvId conv) override;
  Result<std::vector<std::pair<ConvId, Seq>>> GetDeviceCursors(UserId user, std::string_view device) override;
  Status PutRevocation(UserId user, std::string_view device, int64_t at_s) override;
  Result<std::vector<Revocation>> ListRevocations() override;
  Result<UserSettings> GetUserSettings(UserId user) override;
  Status PutUserSettings(UserId user, const UserSettings& s) override;

  // rocks_attachments.cpp
  Result<Attachment> PutAttachment(const Attachment& a) override;
  Result<Attachment> GetAttachment(std::string_view id) override;
  Result<bool> AttachmentVisibleTo(std::string_view id, UserId user) override;
  Result<std::vector<ConvId>> AttachmentConversations(std::string_view id) override;
  Result<std::vector<Attachment>> ListAttachments(std::string_view after, size_t limit) override;
  Status TouchAttachment(std::string_view id, int64_t now_ms, int64_t granularity_ms) override;
  Result<bool> DeleteAttachmentIfUnused(std::string_view id, int64_t unused_before_ms) override;

  // Flushes every memtable and compacts every column family down to one level.
  // Besides reclaiming space it runs the dedup expiry filter over everything now,
  // which is what tests and an operator's "compact" command want.
  Status CompactAll();

  // A RocksDB property of one column family (e.g. "rocksdb.levelstats",
  // "rocksdb.estimate-live-data-size"), for metrics and the benchmark; "" if unknown.
  std::string Property(const char* cf, const std::string& name);

 private:
  RocksStore() = default;
  // Adds every message and its dedup entry to `wb` (AppendMessages and Commit).
  void PutMessages(rocksdb::WriteBatch& wb, std::span<const Message> batch);
  // Adds a reference (attachment -> conversation, seq, and back) for every message
  // whose media_url names one of our attachments (rocks_attachments.cpp; called by
  // PutMessages).
  void PutAttachmentRefs(rocksdb::WriteBatch& wb, std::span<const Message> batch);
  // Adds the removal of the reference message (conv, seq) holds, if any (a deleted
  // message: Commit's rewrites).
  Status ReleaseAttachmentRef(rocksdb::WriteBatch& wb, ConvId conv, Seq seq);
  // Adds the removal of every reference held by a message of `conv` below `first_kept`
  // (DropHistoryBefore).
  Status ReleaseAttachmentRefsBefore(rocksdb::WriteBatch& wb, ConvId conv, Seq first_kept);
  // Calls fn(conv) once for each conversation with a message referencing attachment
  // `id`, ascending, until it returns false.
  Status ForEachAttachmentReference(std::string_view id, const std::function<bool(ConvId)>& fn);
  // Stores from before per-message references held one "attachment -> conversation" key
  // per pair: rewritten once, at open, from the conversations' messages.
  Status MigrateAttachmentRefs();

  std::shared_ptr<rocksdb::Cache> cache_;
  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  rocksdb::ColumnFamilyHandle* msgs_ = nullptr;
  rocksdb::ColumnFamilyHandle* dedup_ = nullptr;
  rocksdb::WriteOptions append_wo_;   // sync per StoreOptions::sync
  rocksdb::WriteOptions account_wo_;  // always sync
  // Serialises the check-then-put of CreateUser / CreateConversation. Those are rare,
  // so one lock is simpler than RocksDB transactions and costs nothing measurable.
  std::mutex create_mu_;
  // Serialises rewrites of existing messages (Commit's edit and delete targets) with
  // DropHistoryBefore: a rewrite checks the conversation's FirstRetained under it, so a
  // delete committed while retention drops its target cannot put the message back
  // below the mark. Commit takes it only for batches with rewrites.
  std::mutex history_mu_;
};

// Key and value encodings (see README.md, "Key layout" and "Records").
namespace rocks_format {

inline constexpr uint8_t kRecordVersion = 1;

std::string UserKey(UserId id);
std::string UsernameKey(std::string_view username);
std::string TokenKey(std::string_view token_hash);
std::string ConvKey(ConvId id);
std::string PairKey(UserId a, UserId b);  // order of a, b does not matter
std::string MemberPrefix(UserId user);
std::string MemberKey(UserId user, ConvId conv);
std::string MessagePrefix(ConvId conv);
std::string MessageKey(ConvId conv, Seq seq);
std::string DedupKey(ConvId conv, std::string_view client_msg_id);

// Fields that live in the key (ids, seq, token hash) are not repeated in the value;
// decoders take them from the caller. Decoders never crash or over-allocate on
// damaged input: they return kInternal.
std::string EncodeUser(const User& u);
Status DecodeUser(std::string_view v, UserId id, User* out);
std::string EncodeId(uint64_t id);  // username -> user id, pair -> conv id
Status DecodeId(std::string_view v, uint64_t* out);
std::string EncodeToken(const RefreshToken& t);
Status DecodeToken(std::string_view v, std::string_view token_hash, RefreshToken* out);
std::string EncodeConversation(const Conversation& c);
Status DecodeConversation(std::string_view v, ConvId id, Conversation* out);
std::string EncodeMessage(const Message& m);
Status DecodeMessage(std::string_view v, ConvId conv, Seq seq, Message* out);
std::string EncodeDedup(const DedupEntry& d);
Status DecodeDedup(std::string_view v, DedupEntry* out);

}  // namespace rocks_format

}  // namespace sb::store
