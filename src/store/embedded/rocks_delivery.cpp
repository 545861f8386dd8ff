// Delivery state in the embedded store: member receipts and device cursors, written
// with messages in the commit thread's batches. Both live in the meta column family:
//   'R' conv(8) user(8)                  -> version, delivered, read, delivered_ms, read_ms
//   'D' user(8) len(1) device conv(8)    -> version, delivered
//   'L' conv(8)                          -> version, last seq, last ms, sender, type, preview
// A conversation's receipts are one contiguous range (GetReceipts is one scan), and
// so are a device's cursors (resume without cursors is one scan).
#include <rocksdb/write_batch.h>

#include <mutex>
#include <unordered_map>

#include "base/utf8.h"

#include "store/embedded/rocks_codec.h"
#include "store/embedded/rocks_store.h"

namespace sb::store {
namespace {

using rocks_codec::kCursorTag;
using rocks_codec::kReceiptTag;
using rocks_codec::kSummaryTag;
constexpr char kSettingsTag = 'S';  // 'S' user(8) -> version, flags
constexpr char kRevocationTag = 'V';  // 'V' user(8) device -> version, at_s(8)

using rocks_codec::GetFixed64;
using rocks_codec::PrefixEnd;
using rocks_codec::PutFixed64;

std::string ReceiptPrefix(ConvId conv) {
  std::string k(1, kReceiptTag);
  PutFixed64(&k, conv);
  return k;
}
std::string ReceiptKey(ConvId conv, UserId user) {
  std::string k = ReceiptPrefix(conv);
  PutFixed64(&k, user);
  return k;
}
std::string CursorPrefix(UserId user, std::string_view device) {
  std::string k(1, kCursorTag);
  PutFixed64(&k, user);
  k.push_back(static_cast<char>(device.size()));  // devices are at most 64 bytes
  k.append(device);
  return k;
}
std::string CursorKey(UserId user, std::string_view device, ConvId conv) {
  std::string k = CursorPrefix(user, device);
  PutFixed64(&k, conv);
  return k;
}

constexpr uint8_t kVersion = 1;

std::string EncodeReceipt(const MemberReceipt& r) {
  std::string v(1, static_cast<char>(kVersion));
  PutFixed64(&v, r.delivered);
  PutFixed64(&v, r.read);
  PutFixed64(&v, static_cast<uint64_t>(r.delivered_ms));
  PutFixed64(&v, static_cast<uint64_t>(r.read_ms));
  return v;
}

std::string SummaryKey(ConvId conv) {
  std::string k(1, kSummaryTag);
  PutFixed64(&k, conv);
  return k;
}

// version(1) last_seq(8) last_ms(8) sender(8) type(1) preview(rest)
std::string EncodeSummary(const Message& m) {
  std::string preview = TruncateUtf8(m.deleted ? std::string_view() : std::string_view(m.content), kPreviewBytes);
  std::string v(1, static_cast<char>(kVersion));
  PutFixed64(&v, m.seq);
  PutFixed64(&v, static_cast<uint64_t>(m.server_ms));
  PutFixed64(&v, m.sender);
  v.push_back(static_cast<char>(m.content_type));
  v.append(preview);
  return v;
}

bool DecodeSummary(std::string_view v, ConversationSummary* out) {
  if (v.size() < 26 || static_cast<uint8_t>(v[0]) != kVersion) return false;
  uint8_t type = static_cast<uint8_t>(v[25]);
  if (type < static_cast<uint8_t>(ContentType::kText) || type > static_cast<uint8_t>(ContentType::kDelete))
    return false;
  out->last_seq = GetFixed64(v.data() + 1);
  out->last_ms = static_cast<int64_t>(GetFixed64(v.data() + 9));
  out->last_sender = GetFixed64(v.data() + 17);
  out->last_type = static_cast<ContentType>(type);
  out->preview.assign(v.substr(26));
  return true;
}

Status Err(const rocksdb::Status& s, const char* what) {
  return Internal(std::string("rocksdb ") + what + ": " + s.ToString());
}

}  // namespace

Status RocksStore::Commit(const CommitBatch& batch) {
  if (batch.empty()) return Status::Ok();
  rocksdb::WriteBatch wb;
  PutMessages(wb, batch.messages);
  // The conversation list's summary: the latest message of each conversation in the
  // batch (messages of one conversation come in seq order), one write per conversation.
  if (!batch.messages.empty()) {
    std::unordered_map<ConvId, const Message*> latest;
    for (const Message& m : batch.messages) latest[m.conv] = &m;
    for (const auto& [conv, m] : latest) wb.Put(meta_, SummaryKey(conv), EncodeSummary(*m));
  }
  // Rewrites go in under history_mu_, held until the batch is written: retention may
  // have dropped a target since the core read it, and a put would bring it back below
  // FirstRetained (the drop released its attachment already).
  std::unique_lock<std::mutex> history_lock(history_mu_, std::defer_lock);
  if (!batch.rewrites.empty()) history_lock.lock();
  for (const Message& m : batch.rewrites) {
    auto first = FirstRetained(m.conv);
    if (!first.ok()) return first.status();
    if (m.seq < *first) continue;
    wb.Put(msgs_, rocks_format::MessageKey(m.conv, m.seq), rocks_format::EncodeMessage(m));
    // A deleted message no longer holds its attachment (an edit keeps it).
    if (m.deleted)
      if (Status s = ReleaseAttachmentRef(wb, m.conv, m.seq); !s.ok()) return s;
  }
  for (const auto& [conv, r] : batch.receipts) wb.Put(meta_, ReceiptKey(conv, r.user), EncodeReceipt(r));
  for (const DeviceCursor& c : batch.cursors) {
    std::string v(1, static_cast<char>(kVersion));
    PutFixed64(&v, c.delivered);
    wb.Put(meta_, CursorKey(c.user, c.device, c.conv), v);
  }
  rocksdb::Status st = db_->Write(append_wo_, &wb);
  if (!st.ok()) return Err(st, "commit");
  return Status::Ok();
}

Result<std::vector<MemberReceipt>> RocksStore::GetReceipts(ConvId conv) {
  const std::string lower = ReceiptPrefix(conv);
  const std::string upper = PrefixEnd(lower);
  rocksdb::Slice lo(lower), up(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = &lo;
  ro.iterate_upper_bound = &up;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, meta_));
  std::vector<MemberReceipt> out;
  for (it->Seek(lo); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key(), v = it->value();
    if (k.size() != 17 || v.size() != 33 || static_cast<uint8_t>(v[0]) != kVersion)
      return Internal("corrupt receipt record");
    MemberReceipt r;
    r.user = GetFixed64(k.data() + 9);
    r.delivered = GetFixed64(v.data() + 1);
    r.read = GetFixed64(v.data() + 9);
    r.delivered_ms = static_cast<int64_t>(GetFixed64(v.data() + 17));
    r.read_ms = static_cast<int64_t>(GetFixed64(v.data() + 25));
    out.push_back(r);
  }
  if (!it->status().ok()) return Err(it->status(), "scan receipts");
  return out;
}

Result<std::vector<ConversationListEntry>> RocksStore::ListConversationEntries(UserId user) {
  auto ids = ListConversationsOf(user);
  if (!ids.ok()) return ids.status();
  std::vector<ConversationListEntry> out;
  out.reserve(ids->size());
  if (ids->empty()) return out;
  // Summaries and the user's receipts: two batched point lookups in the meta family.
  std::vector<std::string> keys;
  keys.reserve(ids->size() * 2);
  for (ConvId id : *ids) keys.push_back(SummaryKey(id));
  for (ConvId id : *ids) keys.push_back(ReceiptKey(id, user));
  std::vector<rocksdb::Slice> slices(keys.begin(), keys.end());
  std::vector<rocksdb::PinnableSlice> values(keys.size());
  std::vector<rocksdb::Status> statuses(keys.size());
  db_->MultiGet(rocksdb::ReadOptions(), meta_, keys.size(), slices.data(), values.data(), statuses.data());
  const size_t n = ids->size();
  for (size_t i = 0; i < n; ++i) {
    auto conv = GetConversation((*ids)[i]);
    if (!conv.ok()) {
      if (conv.status().code() == Code::kNotFound) continue;  // membership index ahead of a delete
      return conv.status();
    }
    ConversationListEntry e;
    e.conv = std::move(*conv);
    if (statuses[i].ok()) {
      if (!DecodeSummary(values[i].ToStringView(), &e.summary)) return Internal("corrupt conversation summary");
    } else if (statuses[i].IsNotFound()) {
      // No summary: no message yet, or a store written before summaries existed.
      auto last = LastSeq(e.conv.id);
      if (!last.ok()) return last.status();
      if (*last > 0) {
        auto m = GetMessage(e.conv.id, *last);
        if (!m.ok()) return m.status();
        DecodeSummary(EncodeSummary(*m), &e.summary);
      }
    } else {
      return Err(statuses[i], "get summary");
    }
    const rocksdb::Status& rs = statuses[n + i];
    if (rs.ok()) {
      const rocksdb::PinnableSlice& v = values[n + i];
      if (v.size() != 33 || static_cast<uint8_t>(v[0]) != kVersion) return Internal("corrupt receipt record");
      e.read = GetFixed64(v.data() + 9);
    } else if (!rs.IsNotFound()) {
      return Err(rs, "get receipt");
    }
    out.push_back(std::move(e));
  }
  return out;
}

Result<Seq> RocksStore::GetDeviceCursor(UserId user, std::string_view device, ConvId conv) {
  if (device.size() > 255) return BadRequest("device id too long");
  rocksdb::PinnableSlice v;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), meta_, CursorKey(user, device, conv), &v);
  if (st.IsNotFound()) return Seq{0};
  if (!st.ok()) return Err(st, "get cursor");
  if (v.size() != 9 || static_cast<uint8_t>(v[0]) != kVersion) return Internal("corrupt cursor record");
  return GetFixed64(v.data() + 1);
}

Result<std::vector<std::pair<ConvId, Seq>>> RocksStore::GetDeviceCursors(UserId user, std::string_view device) {
  if (device.size() > 255) return BadRequest("device id too long");
  const std::string lower = CursorPrefix(user, device);
  const std::string upper = PrefixEnd(lower);
  rocksdb::Slice lo(lower), up(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = &lo;
  ro.iterate_upper_bound = &up;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, meta_));
  std::vector<std::pair<ConvId, Seq>> out;
  for (it->Seek(lo); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key(), v = it->value();
    if (k.size() != lower.size() + 8 || v.size() != 9 || static_cast<uint8_t>(v[0]) != kVersion)
      return Internal("corrupt cursor record");
    out.emplace_back(GetFixed64(k.data() + lower.size()), GetFixed64(v.data() + 1));
  }
  if (!it->status().ok()) return Err(it->status(), "scan cursors");
  return out;
}

Status RocksStore::PutRevocation(UserId user, std::string_view device, int64_t at_s) {
  std::string key(1, kRevocationTag);
  PutFixed64(&key, user);
  key.append(device);
  std::string v(1, static_cast<char>(kVersion));
  PutFixed64(&v, static_cast<uint64_t>(at_s));
  rocksdb::Status st = db_->Put(account_wo_, meta_, key, v);
  if (!st.ok()) return Err(st, "put revocation");
  return Status::Ok();
}

Result<std::vector<Store::Revocation>> RocksStore::ListRevocations() {
  const std::string lower(1, kRevocationTag);
  const std::string upper = PrefixEnd(lower);
  rocksdb::Slice lo(lower), up(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = &lo;
  ro.iterate_upper_bound = &up;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, meta_));
  std::vector<Revocation> out;
  for (it->Seek(lo); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key(), v = it->value();
    if (k.size() < 9 || v.size() != 9 || static_cast<uint8_t>(v[0]) != kVersion)
      return Internal("corrupt revocation record");
    out.push_back({GetFixed64(k.data() + 1), std::string(k.data() + 9, k.size() - 9),
                   static_cast<int64_t>(GetFixed64(v.data() + 1))});
  }
  if (!it->status().ok()) return Err(it->status(), "scan revocations");
  return out;
}

Result<UserSettings> RocksStore::GetUserSettings(UserId user) {
  std::string key(1, kSettingsTag);
  PutFixed64(&key, user);
  rocksdb::PinnableSlice v;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), meta_, key, &v);
  if (st.IsNotFound()) return UserSettings{};
  if (!st.ok()) return Err(st, "get settings");
  if (v.size() < 2 || static_cast<uint8_t>(v[0]) != kVersion) return Internal("corrupt settings record");
  UserSettings s;
  s.hide_last_seen = (static_cast<uint8_t>(v[1]) & 1) != 0;
  return s;
}

Status RocksStore::PutUserSettings(UserId user, const UserSettings& s) {
  std::string key(1, kSettingsTag);
  PutFixed64(&key, user);
  std::string v(1, static_cast<char>(kVersion));
  v.push_back(static_cast<char>(s.hide_last_seen ? 1 : 0));
  rocksdb::Status st = db_->Put(account_wo_, meta_, key, v);
  if (!st.ok()) return Err(st, "put settings");
  return Status::Ok();
}

}  // namespace sb::store
