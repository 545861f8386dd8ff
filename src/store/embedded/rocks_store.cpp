#include "store/embedded/rocks_store.h"
#include "store/embedded/rocks_codec.h"
#include "store/embedded/skiplist_rep.h"

#include <rocksdb/compaction_filter.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <utility>

#include "base/clock.h"
#include "base/log.h"

namespace sb::store {

namespace {

using rocks_codec::GetFixed64;
using rocks_codec::PutFixed64;

Status Corrupt(std::string_view what) {
  return Internal("store: corrupted " + std::string(what) + " record");
}

}  // namespace

namespace rocks_format {
namespace {

constexpr char kUserTag = 'u';
constexpr char kUsernameTag = 'n';
constexpr char kTokenTag = 'r';
constexpr char kConvTag = 'c';
constexpr char kPairTag = 'p';
constexpr char kMemberTag = 'x';
constexpr char kMessageTag = 'm';
constexpr char kDedupTag = 'd';

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// Signed times go through a plain cast: they round-trip exactly, and the negative
// values that would cost ten bytes do not occur.
void PutVarintSigned(std::string* out, int64_t v) { PutVarint(out, static_cast<uint64_t>(v)); }

void PutBytes(std::string* out, std::string_view s) {
  PutVarint(out, s.size());
  out->append(s);
}

std::string Tagged(char tag, size_t reserve) {
  std::string k;
  k.reserve(reserve);
  k.push_back(tag);
  return k;
}

// Bounds-checked cursor over a value. Every getter fails (returns false) rather
// than read past the end, so damaged bytes can only ever produce an error.
class Reader {
 public:
  explicit Reader(std::string_view v) : p_(v.data()), end_(v.data() + v.size()) {}

  bool Byte(uint8_t* out) {
    if (p_ == end_) return false;
    *out = static_cast<uint8_t>(*p_++);
    return true;
  }
  bool Fixed64(uint64_t* out) {
    if (end_ - p_ < 8) return false;
    *out = GetFixed64(p_);
    p_ += 8;
    return true;
  }
  bool Varint(uint64_t* out) {
    uint64_t v = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
      if (p_ == end_) return false;
      uint8_t b = static_cast<uint8_t>(*p_++);
      if (shift == 63 && b > 1) return false;  // would overflow 64 bits
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        *out = v;
        return true;
      }
    }
    return false;
  }
  bool VarintSigned(int64_t* out) {
    uint64_t v;
    if (!Varint(&v)) return false;
    *out = static_cast<int64_t>(v);
    return true;
  }
  bool Bytes(std::string* out) {
    uint64_t n;
    if (!Varint(&n) || n > static_cast<uint64_t>(end_ - p_)) return false;
    out->assign(p_, n);
    p_ += n;
    return true;
  }
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }
  bool AtEnd() const { return p_ == end_; }

 private:
  const char* p_;
  const char* end_;
};

// The version byte comes first so a later format can be told apart; this build
// reads only version 1 and rejects anything else rather than guess.
bool ReadVersion(Reader& r) {
  uint8_t v;
  return r.Byte(&v) && v == kRecordVersion;
}

}  // namespace

std::string UserKey(UserId id) {
  std::string k = Tagged(kUserTag, 9);
  PutFixed64(&k, id);
  return k;
}

std::string UsernameKey(std::string_view username) {
  std::string k = Tagged(kUsernameTag, 1 + username.size());
  k.append(username);
  return k;
}

std::string TokenKey(std::string_view token_hash) {
  std::string k = Tagged(kTokenTag, 1 + token_hash.size());
  k.append(token_hash);
  return k;
}

std::string ConvKey(ConvId id) {
  std::string k = Tagged(kConvTag, 9);
  PutFixed64(&k, id);
  return k;
}

std::string PairKey(UserId a, UserId b) {
  std::string k = Tagged(kPairTag, 17);
  PutFixed64(&k, std::min(a, b));
  PutFixed64(&k, std::max(a, b));
  return k;
}

std::string MemberPrefix(UserId user) {
  std::string k = Tagged(kMemberTag, 17);
  PutFixed64(&k, user);
  return k;
}

std::string MemberKey(UserId user, ConvId conv) {
  std::string k = MemberPrefix(user);
  PutFixed64(&k, conv);
  return k;
}

std::string MessagePrefix(ConvId conv) {
  std::string k = Tagged(kMessageTag, 18);
  PutFixed64(&k, conv);
  return k;
}

std::string MessageKey(ConvId conv, Seq seq) {
  std::string k = MessagePrefix(conv);
  PutFixed64(&k, seq);
  return k;
}

std::string DedupKey(ConvId conv, std::string_view client_msg_id) {
  std::string k = Tagged(kDedupTag, 9 + client_msg_id.size());
  PutFixed64(&k, conv);
  k.append(client_msg_id);
  return k;
}

std::string EncodeUser(const User& u) {
  std::string v;
  v.reserve(16 + u.username.size() + u.display_name.size() + u.password_hash.size());
  v.push_back(static_cast<char>(kRecordVersion));
  PutVarintSigned(&v, u.created_ms);
  PutBytes(&v, u.username);
  PutBytes(&v, u.display_name);
  PutBytes(&v, u.password_hash);
  return v;
}

Status DecodeUser(std::string_view v, UserId id, User* out) {
  Reader r(v);
  User u;
  u.id = id;
  if (!ReadVersion(r) || !r.VarintSigned(&u.created_ms) || !r.Bytes(&u.username) ||
      !r.Bytes(&u.display_name) || !r.Bytes(&u.password_hash) || !r.AtEnd())
    return Corrupt("user");
  *out = std::move(u);
  return Status::Ok();
}

std::string EncodeId(uint64_t id) {
  std::string v;
  v.reserve(9);
  v.push_back(static_cast<char>(kRecordVersion));
  PutFixed64(&v, id);
  return v;
}

Status DecodeId(std::string_view v, uint64_t* out) {
  Reader r(v);
  uint64_t id;
  if (!ReadVersion(r) || !r.Fixed64(&id) || !r.AtEnd()) return Corrupt("index");
  *out = id;
  return Status::Ok();
}

std::string EncodeToken(const RefreshToken& t) {
  std::string v;
  v.reserve(32 + t.device_id.size());
  v.push_back(static_cast<char>(kRecordVersion));
  PutFixed64(&v, t.user);
  PutVarintSigned(&v, t.created_ms);
  PutVarintSigned(&v, t.expires_ms);
  PutBytes(&v, t.device_id);
  return v;
}

Status DecodeToken(std::string_view v, std::string_view token_hash, RefreshToken* out) {
  Reader r(v);
  RefreshToken t;
  t.token_hash.assign(token_hash);
  if (!ReadVersion(r) || !r.Fixed64(&t.user) || !r.VarintSigned(&t.created_ms) ||
      !r.VarintSigned(&t.expires_ms) || !r.Bytes(&t.device_id) || !r.AtEnd())
    return Corrupt("refresh token");
  *out = std::move(t);
  return Status::Ok();
}

std::string EncodeConversation(const Conversation& c) {
  std::string v;
  v.reserve(32 + c.title.size() + 8 * c.members.size());
  v.push_back(static_cast<char>(kRecordVersion));
  v.push_back(static_cast<char>(c.type));
  PutFixed64(&v, c.created_by);
  PutVarintSigned(&v, c.created_ms);
  PutBytes(&v, c.title);
  PutVarint(&v, c.members.size());
  for (UserId m : c.members) PutFixed64(&v, m);
  // Optional trailing section (absent in records written before roles existed).
  if (!c.admins.empty()) {
    PutVarint(&v, c.admins.size());
    for (UserId a : c.admins) PutFixed64(&v, a);
  }
  return v;
}

Status DecodeConversation(std::string_view v, ConvId id, Conversation* out) {
  Reader r(v);
  Conversation c;
  c.id = id;
  uint8_t type;
  uint64_t n;
  if (!ReadVersion(r) || !r.Byte(&type) || !r.Fixed64(&c.created_by) ||
      !r.VarintSigned(&c.created_ms) || !r.Bytes(&c.title) || !r.Varint(&n))
    return Corrupt("conversation");
  if (type != static_cast<uint8_t>(ConvType::kDirect) && type != static_cast<uint8_t>(ConvType::kGroup))
    return Corrupt("conversation");
  c.type = static_cast<ConvType>(type);
  // Checked before reserve() so a damaged count cannot ask for gigabytes.
  if (n > r.remaining() / 8) return Corrupt("conversation");
  c.members.resize(n);
  for (auto& m : c.members)
    if (!r.Fixed64(&m)) return Corrupt("conversation");
  if (!r.AtEnd()) {
    uint64_t na;
    if (!r.Varint(&na) || na > r.remaining() / 8) return Corrupt("conversation");
    c.admins.resize(na);
    for (auto& a : c.admins)
      if (!r.Fixed64(&a)) return Corrupt("conversation");
  }
  if (!r.AtEnd()) return Corrupt("conversation");
  *out = std::move(c);
  return Status::Ok();
}

std::string EncodeMessage(const Message& m) {
  std::string v;
  v.reserve(48 + m.sender_device.size() + m.client_msg_id.size() + m.content.size() +
            m.media_url.size() + m.target_message_id.size() + m.reply_to.size());
  v.push_back(static_cast<char>(kRecordVersion));
  PutFixed64(&v, m.sender);
  v.push_back(static_cast<char>(m.content_type));
  PutVarintSigned(&v, m.sent_ms);
  PutVarintSigned(&v, m.server_ms);
  PutFixed64(&v, m.fingerprint);
  PutBytes(&v, m.sender_device);
  PutBytes(&v, m.client_msg_id);
  PutBytes(&v, m.content);
  PutBytes(&v, m.media_url);
  PutBytes(&v, m.target_message_id);
  PutBytes(&v, m.reply_to);
  // Optional trailing section: what later edits and deletes did to this message.
  if (m.deleted || m.edited_ms != 0) {
    v.push_back(static_cast<char>(m.deleted ? 1 : 0));
    PutVarintSigned(&v, m.edited_ms);
  }
  return v;
}

Status DecodeMessage(std::string_view v, ConvId conv, Seq seq, Message* out) {
  Reader r(v);
  Message m;
  m.conv = conv;
  m.seq = seq;
  uint8_t ct;
  if (!ReadVersion(r) || !r.Fixed64(&m.sender) || !r.Byte(&ct) || !r.VarintSigned(&m.sent_ms) ||
      !r.VarintSigned(&m.server_ms) || !r.Fixed64(&m.fingerprint) || !r.Bytes(&m.sender_device) ||
      !r.Bytes(&m.client_msg_id) || !r.Bytes(&m.content) || !r.Bytes(&m.media_url) ||
      !r.Bytes(&m.target_message_id) || !r.Bytes(&m.reply_to))
    return Corrupt("message");
  if (!r.AtEnd()) {
    uint8_t flags;
    if (!r.Byte(&flags) || flags > 1 || !r.VarintSigned(&m.edited_ms)) return Corrupt("message");
    m.deleted = flags == 1;
  }
  if (!r.AtEnd()) return Corrupt("message");
  if (ct < static_cast<uint8_t>(ContentType::kText) || ct > static_cast<uint8_t>(ContentType::kDelete))
    return Corrupt("message");
  m.content_type = static_cast<ContentType>(ct);
  *out = std::move(m);
  return Status::Ok();
}

std::string EncodeDedup(const DedupEntry& d) {
  std::string v;
  v.reserve(1 + 10 + 10 + 8);
  v.push_back(static_cast<char>(kRecordVersion));
  PutVarint(&v, d.seq);
  PutVarintSigned(&v, d.server_ms);
  PutFixed64(&v, d.fingerprint);
  return v;
}

Status DecodeDedup(std::string_view v, DedupEntry* out) {
  Reader r(v);
  DedupEntry d;
  if (!ReadVersion(r) || !r.Varint(&d.seq) || !r.VarintSigned(&d.server_ms) ||
      !r.Fixed64(&d.fingerprint) || !r.AtEnd())
    return Corrupt("dedup");
  *out = d;
  return Status::Ok();
}

}  // namespace rocks_format

namespace {

namespace fmt = rocks_format;

// Dedup entries must outlive the window by a margin so that a retry arriving just
// inside the window, against a slightly skewed clock, still finds its entry.
constexpr int64_t kDedupGraceMs = 3600LL * 1000;
constexpr size_t kMessageKeyBytes = 17;
constexpr size_t kMessagePrefixBytes = 9;
constexpr size_t kMemberKeyBytes = 17;

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  return Internal("rocksdb " + std::string(what) + ": " + s.ToString());
}

std::string_view ToView(const rocksdb::Slice& s) { return {s.data(), s.size()}; }

// An exclusive upper bound just above every key that starts with `key_of_max`
// (the key built with the largest id/seq). It shares the 9-byte prefix, which a
// prefix-mode iterator requires of its bounds.
std::string JustAbove(std::string key_of_max) {
  key_of_max.push_back('\0');
  return key_of_max;
}

// Where the messages memtable keeps an insert hint: one per conversation. A message key
// ('m' conv seq) lands right after the conversation's previous one, so with the hint an
// insert is a few comparisons instead of a search from the top of a skiplist that holds
// every conversation (that search was ~7% of the server's CPU at 35,000 msg/s).
// Only keys of real messages (seq >= 1) are in the domain. RocksDB 7.8 keeps one hint
// table per memtable for both its point skiplist and its range-tombstone skiplist, so
// a range deletion that took the hint path would splice into the wrong list (Debian's
// build, which keeps assertions, aborts there; a build without them could corrupt the
// memtable). DropHistoryBefore's tombstones start at seq 0, out of the domain, and so
// do those already in a WAL written before hints were used.
class MessageInsertHint final : public rocksdb::SliceTransform {
 public:
  const char* Name() const override { return "sb.MessageInsertHint"; }
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override {
    return rocksdb::Slice(key.data(), kMessagePrefixBytes);
  }
  bool InDomain(const rocksdb::Slice& key) const override {
    if (key.size() != kMessageKeyBytes || key[0] != fmt::kMessageTag) return false;
    return GetFixed64(key.data() + kMessagePrefixBytes) != 0;
  }
};

// The meta memtable's insert hint, for the delivery state rewritten with every message
// (receipts, cursors, summaries; rocks_codec.h), one per 9-byte prefix ('R' conv, 'D'
// user, 'L' conv). A rewrite's entry lands right before the key's previous version,
// which the hint remembers, so it costs a few comparisons instead of a search from the
// top (store_bench --write commit: -11.6% of Commit's instructions).
// Other meta keys take the normal path; the only DeleteRange on meta starts at an
// uploader key ('b'), outside the domain (see MessageInsertHint for why that matters).
class MetaInsertHint final : public rocksdb::SliceTransform {
 public:
  const char* Name() const override { return "sb.MetaInsertHint"; }
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override {
    return rocksdb::Slice(key.data(), kMessagePrefixBytes);
  }
  bool InDomain(const rocksdb::Slice& key) const override {
    if (key.size() < kMessagePrefixBytes) return false;
    return key[0] == rocks_codec::kReceiptTag || key[0] == rocks_codec::kCursorTag ||
           key[0] == rocks_codec::kSummaryTag;
  }
};

// The dedup memtable's insert hint: one per conversation ('d' conv). Client ids are
// random, so an insert searches only the stretch of its conversation's keys instead of
// the whole memtable. The dedup family has no range deletions (see MessageInsertHint).
class DedupInsertHint final : public rocksdb::SliceTransform {
 public:
  const char* Name() const override { return "sb.DedupInsertHint"; }
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override {
    return rocksdb::Slice(key.data(), kMessagePrefixBytes);
  }
  bool InDomain(const rocksdb::Slice& key) const override {
    return key.size() > kMessagePrefixBytes && key[0] == fmt::kDedupTag;
  }
};

class DedupExpiryFilter final : public rocksdb::CompactionFilter {
 public:
  explicit DedupExpiryFilter(int64_t cutoff_ms) : cutoff_ms_(cutoff_ms) {}

  bool Filter(int /*level*/, const rocksdb::Slice& /*key*/, const rocksdb::Slice& value,
              std::string* /*new_value*/, bool* /*value_changed*/) const override {
    DedupEntry d;
    // An entry we cannot read is kept: losing dedup state silently would turn a
    // decoding bug into duplicate messages.
    if (!fmt::DecodeDedup(ToView(value), &d).ok()) return false;
    return d.server_ms < cutoff_ms_;
  }
  const char* Name() const override { return "sb.DedupExpiryFilter"; }

 private:
  int64_t cutoff_ms_;
};

// A factory rather than one shared filter so the cutoff is read from the clock once
// per compaction instead of once per key.
class DedupExpiryFactory final : public rocksdb::CompactionFilterFactory {
 public:
  std::unique_ptr<rocksdb::CompactionFilter> CreateCompactionFilter(
      const rocksdb::CompactionFilter::Context& /*context*/) override {
    return std::make_unique<DedupExpiryFilter>(WallMs() - kDedupWindowMs - kDedupGraceMs);
  }
  const char* Name() const override { return "sb.DedupExpiryFactory"; }
};

rocksdb::BlockBasedTableOptions TableOptions(const std::shared_ptr<rocksdb::Cache>& cache,
                                             bool whole_key_filtering, size_t block_bytes) {
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = cache;
  t.block_size = block_bytes;
  // 10 bits/key: ~1% false positives. FindDedup runs on every send and nearly always
  // misses, so without a filter each miss would read a block from every level.
  t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  t.whole_key_filtering = whole_key_filtering;
  // Index and filter blocks live in (and are bounded by) the block cache rather than
  // growing the heap with the data; L0's are pinned because every read touches them.
  t.cache_index_and_filter_blocks = true;
  t.pin_l0_filter_and_index_blocks_in_cache = true;
  return t;
}

}  // namespace

Result<std::unique_ptr<RocksStore>> RocksStore::Open(const StoreOptions& options,
                                                     const RocksTuning& tuning) {
  if (options.dir.empty()) return BadRequest("store: empty data directory");
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) return Internal("store: cannot create " + options.dir + ": " + ec.message());

  std::unique_ptr<RocksStore> s(new RocksStore());
  s->cache_ = rocksdb::NewLRUCache(options.cache_bytes);

  rocksdb::DBOptions db;
  db.create_if_missing = true;
  db.create_missing_column_families = true;
  // Two background threads: flushes must never wait behind a compaction (a full
  // memtable stalls the commit thread), and more would steal from the event loops.
  db.max_background_jobs = 2;
  // Write SST data out in 1 MB steps so a flush never leaves hundreds of MB dirty for
  // one big fsync that the WAL's own fsyncs would queue behind.
  db.bytes_per_sync = 1 << 20;
  // A slowly written CF would otherwise pin old WAL files; bounding the WAL forces its
  // flush and bounds replay time after a crash.
  db.max_total_wal_size = 4 * options.write_buffer_bytes;
  db.keep_log_file_num = 4;
  // The dedup family's hashed memtable cannot take parallel inserts. Nothing is lost:
  // messages, receipts and cursors all come from the one commit thread anyway.
  db.allow_concurrent_memtable_write = false;
  db.max_log_file_size = 8 << 20;

  // Every family's memtable is the store's own skiplist (skiplist_rep.cpp: Debian's
  // RocksDB checks its own with assertions on every insert), where this RocksDB is one
  // it was checked against: Commit's instructions 3.47G -> 1.45G (-58%) in store_bench
  // --write commit --messages 60000 --convs 1000 --batch 128 under callgrind.
  const bool own_memtable = tuning.own_memtable && SkipListRepSupported();
  std::shared_ptr<rocksdb::MemTableRepFactory> memtable;
  if (own_memtable) memtable = NewSkipListRepFactory();

  // messages: the bulk of the data, written in seq order per conversation and read
  // as short ranges of one conversation.
  rocksdb::ColumnFamilyOptions msg_cf;
  if (own_memtable) msg_cf.memtable_factory = memtable;
  msg_cf.write_buffer_size = options.write_buffer_bytes;
  msg_cf.level_compaction_dynamic_level_bytes = true;
  msg_cf.level0_file_num_compaction_trigger = tuning.message_l0_trigger;
  msg_cf.compression = tuning.compress_messages ? rocksdb::kLZ4Compression : rocksdb::kNoCompression;
  if (tuning.message_prefix_bloom) {
    // A bloom on 'm'+conv lets a page read skip SST files holding nothing of that
    // conversation. Off by default: every L0 file holds most active conversations and
    // each deeper level costs one index probe anyway, so the benchmark saw no gain.
    msg_cf.prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(kMessagePrefixBytes));
  }
  if (tuning.message_insert_hints)
    msg_cf.memtable_insert_with_hint_prefix_extractor = std::make_shared<MessageInsertHint>();
  msg_cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(
      TableOptions(s->cache_, !tuning.message_prefix_bloom, tuning.message_block_bytes)));

  // dedup: small entries, point lookups that mostly miss, expire after the window.
  rocksdb::ColumnFamilyOptions dedup_cf;
  dedup_cf.write_buffer_size = std::max<size_t>(options.write_buffer_bytes / 4, 4 << 20);
  dedup_cf.level_compaction_dynamic_level_bytes = true;
  dedup_cf.compression = rocksdb::kNoCompression;  // random ids: little to gain
  // Misses answered by the memtable's bloom skip the skiplist walk.
  dedup_cf.memtable_prefix_bloom_size_ratio = 0.05;
  dedup_cf.memtable_whole_key_filtering = true;
  dedup_cf.prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(kMessagePrefixBytes));
  // Client ids are random, so in one big skiplist every insert is a full search from
  // the top with a cache miss per level: 40% of a commit's CPU. Hashed by conversation
  // instead, each insert and lookup walks only that conversation's small skiplist.
  // Height 12 (RocksDB's default for this rep is 4): one busy conversation holds
  // hundreds of thousands of keys in its bucket, and a 4-level skiplist searches that
  // almost linearly (one pipelined sender fell from 35k to 15k msg/s). (One skiplist
  // with a per-conversation insert hint instead, as for messages: +4.6% instructions
  // per commit.)
  // With the store's own skiplist: one list, and an insert hint per conversation, so an
  // insert searches that conversation's keys only, as the hashed rep's buckets did, and
  // the whole memtable can be iterated in order.
  if (own_memtable) {
    dedup_cf.memtable_factory = memtable;
    dedup_cf.memtable_insert_with_hint_prefix_extractor = std::make_shared<DedupInsertHint>();
  } else {
    dedup_cf.memtable_factory.reset(rocksdb::NewHashSkipListRepFactory(64 << 10, /*skiplist_height=*/12,
                                                                        /*skiplist_branching_factor=*/4));
  }
  dedup_cf.compaction_filter_factory = std::make_shared<DedupExpiryFactory>();
  // Files untouched by write-driven compaction are still rewritten (and so filtered)
  // once a day; otherwise a quiet store would keep expired entries forever.
  dedup_cf.periodic_compaction_seconds = 24 * 3600;
  dedup_cf.table_factory.reset(
      rocksdb::NewBlockBasedTableFactory(TableOptions(s->cache_, true, 4 << 10)));

  // meta: accounts, tokens, conversations (rare, point-read), plus the conversation
  // summaries, receipts and device cursors of rocks_delivery.cpp: three rewrites of a
  // small, hot key set per message. Every rewrite is a new memtable entry inserted at a
  // random place, so a big memtable is a deep skiplist walked with a cache miss per
  // level: at 16 MB those inserts were half of the commit thread's CPU. A small one
  // stays in cache and flushes only the latest value of each hot key (2 MB by default:
  // commit CPU per message 26 -> 20 us, 1,000 senders 14.6k -> 15.5-16.5k msg/s).
  // The insert hint (MetaInsertHint) puts a rewrite next to the key's previous version:
  // Commit's instructions -11.6% (store_bench --write commit under callgrind; with a
  // 16 MB memtable -17%, not adopted: a receipt or cursor scan walks every version
  // the memtable holds).
  rocksdb::ColumnFamilyOptions meta_cf;
  if (own_memtable) meta_cf.memtable_factory = memtable;
  meta_cf.write_buffer_size = tuning.meta_write_buffer_bytes
                                 ? tuning.meta_write_buffer_bytes
                                 : std::clamp<size_t>(options.write_buffer_bytes / 32, 1 << 20, 8 << 20);
  meta_cf.compression = rocksdb::kLZ4Compression;
  if (tuning.meta_insert_hints) meta_cf.memtable_insert_with_hint_prefix_extractor = std::make_shared<MetaInsertHint>();
  meta_cf.table_factory.reset(
      rocksdb::NewBlockBasedTableFactory(TableOptions(s->cache_, true, 4 << 10)));

  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {kMetaCf, meta_cf}, {kMessagesCf, msg_cf}, {kDedupCf, dedup_cf}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status st = rocksdb::DB::Open(db, options.dir, cfs, &handles, &raw);
  if (!st.ok()) return FromRocks(st, "open " + options.dir);
  s->db_.reset(raw);
  s->meta_ = handles[0];
  s->msgs_ = handles[1];
  s->dedup_ = handles[2];

  s->append_wo_.sync = options.sync == SyncPolicy::kAlways;
  s->account_wo_.sync = true;
  if (Status m = s->MigrateAttachmentRefs(); !m.ok()) return m;
  return s;
}

RocksStore::~RocksStore() {
  if (!db_) return;
  for (auto* h : {meta_, msgs_, dedup_})
    if (h) db_->DestroyColumnFamilyHandle(h);
  rocksdb::Status st = db_->Close();
  if (!st.ok()) LOG_WARN("store_close_failed").Kv("error", st.ToString());
}

// ---- accounts ----------------------------------------------------------------------

Status RocksStore::CreateUser(const User& u) {
  if (u.id == 0) return BadRequest("store: user id 0");
  if (u.username.empty()) return BadRequest("store: empty username");
  const std::string id_key = fmt::UserKey(u.id);
  const std::string name_key = fmt::UsernameKey(u.username);

  std::lock_guard<std::mutex> lock(create_mu_);
  rocksdb::PinnableSlice v;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), meta_, id_key, &v);
  if (st.ok()) return Conflict("user id taken");
  if (!st.IsNotFound()) return FromRocks(st, "get user");
  v.Reset();
  st = db_->Get(rocksdb::ReadOptions(), meta_, name_key, &v);
  if (st.ok()) return Conflict("username taken");
  if (!st.IsNotFound()) return FromRocks(st, "get username");

  rocksdb::WriteBatch wb;
  wb.Put(meta_, id_key, fmt::EncodeUser(u));
  wb.Put(meta_, name_key, fmt::EncodeId(u.id));
  st = db_->Write(account_wo_, &wb);
  if (!st.ok()) return FromRocks(st, "write user");
  return Status::Ok();
}

Result<User> RocksStore::GetUser(UserId id) {
  rocksdb::PinnableSlice v;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), meta_, fmt::UserKey(id), &v);
  if (st.IsNotFound()) return NotFound("no such user");
  if (!st.ok()) return FromRocks(st, "get user");
  User u;
  if (Status d = fmt::DecodeUser(ToView(v), id, &u); !d.ok()) return d;
  return u;
}

Result<User> RocksStore::FindUserByUsername(std::string_view username) {
  rocksdb::PinnableSlice v;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), meta_, fmt::UsernameKey(username), &v);
  if (st.IsNotFound()) return NotFound("no such user");
  if (!st.ok()) return FromRocks(st, "get username");
  uint64_t id;
  if (Status d = fmt::DecodeId(ToView(v), &id); !d.ok()) return d;
  // Both keys are written in one batch, so a username whose user is missing is
  // damage, not a race.
  auto u = GetUser(id);
  if (!u.ok() && u.status().code() == Code::kNotFound)
    return Internal("store: username index points at a missing user");
  return u;
}

// Token writes are synced whatever the policy: a revoked token that reappears after a
// power cut would be a security bug, and these writes are rare.
Status RocksStore::PutRefreshToken(const RefreshToken& t) {
  rocksdb::Status st = db_->Put(account_wo_, meta_, fmt::TokenKey(t.token_hash), fmt::EncodeToken(t));
  if (!st.ok()) return FromRocks(st, "put token");
  return Status::Ok();
}

Result<RefreshToken> RocksStore::GetRefreshToken(std::string_view token_hash) {
  rocksdb::PinnableSlice v;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), meta_, fmt::TokenKey(token_hash), &v);
  if (st.IsNotFound()) return NotFound("no such token");
  if (!st.ok()) return FromRocks(st, "get token");
  RefreshToken t;
  if (Status d = fmt::DecodeToken(ToView(v), token_hash, &t); !d.ok()) return d;
  return t;
}

Status RocksStore::DeleteRefreshToken(std::string_view token_hash) {
  rocksdb::Status st = db_->Delete(account_wo_, meta_, fmt::TokenKey(token_hash));
  if (!st.ok()) return FromRocks(st, "delete token");
  return Status::Ok();
}

// ---- conversations -----------------------------------------------------------------

Result<Conversation> RocksStore::CreateConversation(const Conversation& c, bool* created) {
  if (created) *created = false;
  if (c.id == 0) return BadRequest("store: conversation id 0");
  Conversation conv = c;
  // The record promises sorted, unique members; enforce it here rather than trust it.
  std::sort(conv.members.begin(), conv.members.end());
  conv.members.erase(std::unique(conv.members.begin(), conv.members.end()), conv.members.end());
  const bool direct = conv.type == ConvType::kDirect;
  if (direct && conv.members.size() != 2)
    return BadRequest("store: a direct conversation needs two distinct members");
  if (conv.type != ConvType::kDirect && conv.type != ConvType::kGroup)
    return BadRequest("store: unknown conversation type");

  const std::string conv_key = fmt::ConvKey(conv.id);
  const std::string pair_key = direct ? fmt::PairKey(conv.members[0], conv.members[1]) : "";

  std::lock_guard<std::mutex> lock(create_mu_);
  rocksdb::PinnableSlice v;
  rocksdb::Status st;
  if (direct) {
    st = db_->Get(rocksdb::ReadOptions(), meta_, pair_key, &v);
    if (st.ok()) {
      uint64_t existing;
      if (Status d = fmt::DecodeId(ToView(v), &existing); !d.ok()) return d;
      auto found = GetConversation(existing);
      if (!found.ok() && found.status().code() == Code::kNotFound)
        return Internal("store: direct pair index points at a missing conversation");
      return found;
    }
    if (!st.IsNotFound()) return FromRocks(st, "get pair");
    v.Reset();
  }
  st = db_->Get(rocksdb::ReadOptions(), meta_, conv_key, &v);
  if (st.ok()) return Conflict("conversation id taken");
  if (!st.IsNotFound()) return FromRocks(st, "get conversation");

  rocksdb::WriteBatch wb;
  wb.Put(meta_, conv_key, fmt::EncodeConversation(conv));
  if (direct) wb.Put(meta_, pair_key, fmt::EncodeId(conv.id));
  for (UserId m : conv.members) wb.Put(meta_, fmt::MemberKey(m, conv.id), rocksdb::Slice());
  st = db_->Write(account_wo_, &wb);
  if (!st.ok()) return FromRocks(st, "write conversation");
  if (created) *created = true;
  return conv;
}

Result<Conversation> RocksStore::UpdateConversation(ConvId id,
                                                   const std::function<Status(Conversation&)>& mutate) {
  std::lock_guard<std::mutex> lock(create_mu_);
  auto cur = GetConversation(id);
  if (!cur.ok()) return cur.status();
  Conversation next = *cur;
  if (Status s = mutate(next); !s.ok()) return s;
  next.id = id;
  std::sort(next.members.begin(), next.members.end());
  next.members.erase(std::unique(next.members.begin(), next.members.end()), next.members.end());
  std::sort(next.admins.begin(), next.admins.end());
  next.admins.erase(std::unique(next.admins.begin(), next.admins.end()), next.admins.end());
  if (next.type != cur->type) return BadRequest("store: a conversation's type cannot change");
  if (next.type == ConvType::kDirect && next.members != cur->members)
    return BadRequest("store: a direct conversation's members cannot change");
  rocksdb::WriteBatch wb;
  wb.Put(meta_, fmt::ConvKey(id), fmt::EncodeConversation(next));
  // The membership index follows the record in the same atomic write.
  std::vector<UserId> gone, added;
  std::set_difference(cur->members.begin(), cur->members.end(), next.members.begin(), next.members.end(),
                      std::back_inserter(gone));
  std::set_difference(next.members.begin(), next.members.end(), cur->members.begin(), cur->members.end(),
                      std::back_inserter(added));
  for (UserId m : gone) wb.Delete(meta_, fmt::MemberKey(m, id));
  for (UserId m : added) wb.Put(meta_, fmt::MemberKey(m, id), rocksdb::Slice());
  rocksdb::Status st = db_->Write(account_wo_, &wb);
  if (!st.ok()) return FromRocks(st, "update conversation");
  return next;
}

Result<std::vector<ConvId>> RocksStore::AllConversationIds() {
  const std::string lower = fmt::ConvKey(0);
  const std::string upper = JustAbove(fmt::ConvKey(std::numeric_limits<ConvId>::max()));
  rocksdb::Slice lo(lower), up(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = &lo;
  ro.iterate_upper_bound = &up;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, meta_));
  std::vector<ConvId> out;
  for (it->Seek(lo); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key();
    if (k.size() != 9) return Corrupt("conversation key");
    out.push_back(GetFixed64(k.data() + 1));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan conversations");
  return out;
}

Result<Conversation> RocksStore::GetConversation(ConvId id) {
  rocksdb::PinnableSlice v;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), meta_, fmt::ConvKey(id), &v);
  if (st.IsNotFound()) return NotFound("no such conversation");
  if (!st.ok()) return FromRocks(st, "get conversation");
  Conversation c;
  if (Status d = fmt::DecodeConversation(ToView(v), id, &c); !d.ok()) return d;
  return c;
}

Result<std::vector<ConvId>> RocksStore::ListConversationsOf(UserId user) {
  const std::string lower = fmt::MemberPrefix(user);
  const std::string upper = JustAbove(fmt::MemberKey(user, std::numeric_limits<ConvId>::max()));
  rocksdb::Slice lo(lower), up(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = &lo;
  ro.iterate_upper_bound = &up;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, meta_));
  std::vector<ConvId> out;
  for (it->Seek(lo); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key();
    if (k.size() != kMemberKeyBytes) return Corrupt("membership");
    out.push_back(GetFixed64(k.data() + 9));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan memberships");
  return out;
}

// ---- messages ----------------------------------------------------------------------

namespace {

// Both bounds stay inside the conversation's 9-byte prefix: with a prefix extractor
// the iterator is in prefix mode, where order outside the prefix is undefined.
rocksdb::ReadOptions MessageReadOptions(const rocksdb::Slice* lo, const rocksdb::Slice* up) {
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = lo;
  ro.iterate_upper_bound = up;
  ro.prefix_same_as_start = true;
  return ro;
}

Status DecodeAt(const rocksdb::Iterator& it, ConvId conv, Message* out) {
  rocksdb::Slice k = it.key();
  if (k.size() != kMessageKeyBytes) return Corrupt("message key");
  return fmt::DecodeMessage(ToView(it.value()), conv, GetFixed64(k.data() + kMessagePrefixBytes), out);
}

}  // namespace

Result<Seq> RocksStore::LastSeq(ConvId conv) {
  const std::string lower = fmt::MessagePrefix(conv);
  const std::string last = fmt::MessageKey(conv, std::numeric_limits<Seq>::max());
  const std::string upper = JustAbove(last);
  rocksdb::Slice lo(lower), up(upper);
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(MessageReadOptions(&lo, &up), msgs_));
  it->SeekForPrev(last);
  if (it->Valid()) {
    rocksdb::Slice k = it->key();
    if (k.size() != kMessageKeyBytes) return Corrupt("message key");
    return GetFixed64(k.data() + kMessagePrefixBytes);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "last seq");
  // Retention may have dropped every message: the sequence still goes on from there.
  auto first = FirstRetained(conv);
  if (!first.ok()) return first.status();
  return *first - 1;
}

namespace {
// 'F' conv(8) in the meta family -> version(1) first_kept(8): retention dropped every
// message below first_kept. Absent: nothing was dropped.
constexpr uint8_t kRetainedVersion = 1;
std::string RetainedKey(ConvId conv) {
  std::string k(1, 'F');
  PutFixed64(&k, conv);
  return k;
}
}  // namespace

Result<Seq> RocksStore::FirstRetained(ConvId conv) {
  rocksdb::PinnableSlice v;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), meta_, RetainedKey(conv), &v);
  if (st.IsNotFound()) return Seq{1};
  if (!st.ok()) return FromRocks(st, "get retained");
  if (v.size() != 9 || static_cast<uint8_t>(v[0]) != kRetainedVersion) return Corrupt("retention record");
  return GetFixed64(v.data() + 1);
}

Status RocksStore::DropHistoryBefore(ConvId conv, Seq first_kept) {
  if (conv == 0) return BadRequest("conversation id 0");
  // Against a concurrent Commit rewriting a message of this range (history_mu_).
  std::lock_guard lk(history_mu_);
  auto current = FirstRetained(conv);
  if (!current.ok()) return current.status();
  if (first_kept <= *current) return Status::Ok();
  // One range tombstone for the whole span (whole time buckets, not message by
  // message) and the new mark, atomically; compaction reclaims the space.
  rocksdb::WriteBatch wb;
  // Starts at seq 0, which no message has: out of the insert hint's domain
  // (MessageInsertHint), as range tombstones must be.
  rocksdb::Status st = wb.DeleteRange(msgs_, fmt::MessageKey(conv, 0), fmt::MessageKey(conv, first_kept));
  if (!st.ok()) return FromRocks(st, "drop history");
  // The dropped messages' attachment references go with them.
  if (Status s = ReleaseAttachmentRefsBefore(wb, conv, first_kept); !s.ok()) return s;
  std::string v(1, static_cast<char>(kRetainedVersion));
  PutFixed64(&v, first_kept);
  wb.Put(meta_, RetainedKey(conv), v);
  st = db_->Write(account_wo_, &wb);
  if (!st.ok()) return FromRocks(st, "drop history");
  return Status::Ok();
}

Result<std::optional<DedupEntry>> RocksStore::FindDedup(ConvId conv, std::string_view client_msg_id) {
  rocksdb::PinnableSlice v;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), dedup_, fmt::DedupKey(conv, client_msg_id), &v);
  if (st.IsNotFound()) return std::optional<DedupEntry>();
  if (!st.ok()) return FromRocks(st, "get dedup");
  DedupEntry d;
  if (Status s = fmt::DecodeDedup(ToView(v), &d); !s.ok()) return s;
  return std::optional<DedupEntry>(d);
}

void RocksStore::PutMessages(rocksdb::WriteBatch& wb, std::span<const Message> batch) {
  for (const Message& m : batch) {
    wb.Put(msgs_, fmt::MessageKey(m.conv, m.seq), fmt::EncodeMessage(m));
    // A message without a client key has nothing to deduplicate against.
    if (!m.client_msg_id.empty())
      wb.Put(dedup_, fmt::DedupKey(m.conv, m.client_msg_id),
             fmt::EncodeDedup({.seq = m.seq, .server_ms = m.server_ms, .fingerprint = m.fingerprint}));
  }
  PutAttachmentRefs(wb, batch);
}

Status RocksStore::AppendMessages(std::span<const Message> batch) {
  if (batch.empty()) return Status::Ok();
  rocksdb::WriteBatch wb;
  PutMessages(wb, batch);
  // One batch, one WAL record: RocksDB applies it all or nothing, also after a crash.
  rocksdb::Status st = db_->Write(append_wo_, &wb);
  if (!st.ok()) return FromRocks(st, "append messages");
  return Status::Ok();
}

Result<std::vector<Message>> RocksStore::ReadBefore(ConvId conv, Seq before_seq, size_t limit) {
  std::vector<Message> out;
  if (limit == 0 || before_seq == 0) return out;
  const std::string lower = fmt::MessagePrefix(conv);
  const std::string upper = fmt::MessageKey(conv, before_seq);
  rocksdb::Slice lo(lower), up(upper);
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(MessageReadOptions(&lo, &up), msgs_));
  it->SeekForPrev(fmt::MessageKey(conv, before_seq - 1));
  if (!it->Valid()) {
    if (!it->status().ok()) return FromRocks(it->status(), "read before");
    return out;
  }
  rocksdb::Slice top_key = it->key();
  if (top_key.size() != kMessageKeyBytes) return Corrupt("message key");
  const Seq top = GetFixed64(top_key.data() + kMessagePrefixBytes);

  // Backward iteration costs about three times forward (each Prev in the memtable's
  // skiplist is a fresh search, and every level's iterator must be reversed), and this
  // is the history-page read. Seqs are dense in practice, so the `limit` newest are
  // read forward from top-limit+1; only if gaps leave the page short is the rest
  // fetched backward. The iterator's implicit snapshot keeps both passes consistent.
  const Seq start = limit - 1 >= top ? 0 : top - (limit - 1);
  out.reserve(std::min<size_t>(limit, 256));  // a huge limit is not a huge allocation
  for (it->Seek(fmt::MessageKey(conv, start)); it->Valid(); it->Next()) {
    Message m;
    if (Status s = DecodeAt(*it, conv, &m); !s.ok()) return s;
    out.push_back(std::move(m));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "read before");
  std::reverse(out.begin(), out.end());
  if (out.size() < limit && start > 0) {
    for (it->SeekForPrev(fmt::MessageKey(conv, start - 1)); it->Valid() && out.size() < limit; it->Prev()) {
      Message m;
      if (Status s = DecodeAt(*it, conv, &m); !s.ok()) return s;
      out.push_back(std::move(m));
    }
    if (!it->status().ok()) return FromRocks(it->status(), "read before");
  }
  return out;
}

Result<std::vector<Message>> RocksStore::ReadAfter(ConvId conv, Seq after_seq, size_t limit) {
  std::vector<Message> out;
  if (limit == 0 || after_seq == std::numeric_limits<Seq>::max()) return out;
  const std::string lower = fmt::MessageKey(conv, after_seq + 1);
  const std::string upper = JustAbove(fmt::MessageKey(conv, std::numeric_limits<Seq>::max()));
  rocksdb::Slice lo(lower), up(upper);
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(MessageReadOptions(&lo, &up), msgs_));
  out.reserve(std::min<size_t>(limit, 256));
  for (it->Seek(lo); it->Valid() && out.size() < limit; it->Next()) {
    Message m;
    if (Status s = DecodeAt(*it, conv, &m); !s.ok()) return s;
    out.push_back(std::move(m));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "read after");
  return out;
}

Result<Message> RocksStore::GetMessage(ConvId conv, Seq seq) {
  rocksdb::PinnableSlice v;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), msgs_, fmt::MessageKey(conv, seq), &v);
  if (st.IsNotFound()) return NotFound("no such message");
  if (!st.ok()) return FromRocks(st, "get message");
  Message m;
  if (Status s = fmt::DecodeMessage(ToView(v), conv, seq, &m); !s.ok()) return s;
  return m;
}

Status RocksStore::CompactAll() {
  std::vector<rocksdb::ColumnFamilyHandle*> all = {meta_, msgs_, dedup_};
  rocksdb::Status st = db_->Flush(rocksdb::FlushOptions(), all);
  if (!st.ok()) return FromRocks(st, "flush");
  rocksdb::CompactRangeOptions cro;
  // Forced so the bottom level is rewritten too, which is where old dedup entries sit.
  cro.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  for (auto* h : all) {
    st = db_->CompactRange(cro, h, nullptr, nullptr);
    if (!st.ok()) return FromRocks(st, "compact " + h->GetName());
  }
  return Status::Ok();
}

std::string RocksStore::Property(const char* cf, const std::string& name) {
  rocksdb::ColumnFamilyHandle* h = nullptr;
  for (auto* c : {meta_, msgs_, dedup_})
    if (c->GetName() == cf) h = c;
  std::string v;
  if (!h || !db_->GetProperty(h, name, &v)) return "";
  return v;
}

Result<std::unique_ptr<Store>> OpenEmbeddedStore(const StoreOptions& options) {
  auto s = RocksStore::Open(options);
  if (!s.ok()) return s.status();
  return std::unique_ptr<Store>(std::move(s).value());
}

}  // namespace sb::store
