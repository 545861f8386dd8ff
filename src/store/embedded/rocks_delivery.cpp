// Delivery state in the embedded store: member receipts and device cursors, written
// with messages in the commit thread's batches. Both live in the meta column family:
//   'R' conv(8) user(8)                  -> version, delivered, read, delivered_ms, read_ms
//   'D' user(8) len(1) device conv(8)    -> version, delivered
// A conversation's receipts are one contiguous range (GetReceipts is one scan), and
// so are a device's cursors (resume without cursors is one scan).
#include <rocksdb/write_batch.h>

#include "store/embedded/rocks_store.h"

namespace sb::store {
namespace {

constexpr char kReceiptTag = 'R';
constexpr char kCursorTag = 'D';
constexpr char kSettingsTag = 'S';  // 'S' user(8) -> version, flags
constexpr char kRevocationTag = 'V';  // 'V' user(8) device -> version, at_s(8)

void PutFixed64(std::string* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t GetFixed64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

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
// The smallest key greater than every key starting with `prefix`.
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty() && static_cast<uint8_t>(prefix.back()) == 0xff) prefix.pop_back();
  if (!prefix.empty()) prefix.back() = static_cast<char>(static_cast<uint8_t>(prefix.back()) + 1);
  return prefix;
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

Status Err(const rocksdb::Status& s, const char* what) {
  return Internal(std::string("rocksdb ") + what + ": " + s.ToString());
}

}  // namespace

Status RocksStore::Commit(const CommitBatch& batch) {
  if (batch.empty()) return Status::Ok();
  rocksdb::WriteBatch wb;
  PutMessages(wb, batch.messages);
  for (const Message& m : batch.rewrites)
    wb.Put(msgs_, rocks_format::MessageKey(m.conv, m.seq), rocks_format::EncodeMessage(m));
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
