// Attachment records in the embedded store (the bytes are files: src/attachments/).
// All in the meta column family:
//   'a' digest(32)               -> version 2, uploader(8), size(8), created_ms(8),
//                                   used_ms(8), content_type (version 1 had no used_ms:
//                                   it reads as created_ms)
//   'b' digest(32) user(8)       -> version: `user` uploaded these bytes
//   'A' digest(32) conv(8) seq(8) -> empty: message (conv, seq) has them as media_url
//   'B' conv(8) seq(8)           -> digest(32): the same reference, from the message
//   "!attachment_refs"           -> version(1) = 2: the references are per message
// The uploaders and the references of one attachment are contiguous ranges, so the
// read check is a point lookup plus, for a non-uploader, one short scan. The 'B' keys
// let a delete or a retention drop find what a message referenced without reading it.
// Stores from before version 2 had 'A' digest(32) conv(8) keys, one per conversation,
// never removed: MigrateAttachmentRefs rewrites them once, at open.
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>

#include "attachments/attachment_id.h"
#include "base/log.h"
#include "store/embedded/rocks_codec.h"
#include "store/embedded/rocks_store.h"

namespace sb::store {
namespace {

constexpr char kAttachmentTag = 'a';
constexpr char kUploaderTag = 'b';
constexpr char kReferenceTag = 'A';
constexpr char kBackRefTag = 'B';
constexpr std::string_view kRefsVersionKey = "!attachment_refs";
constexpr uint8_t kRefsVersion = 2;
constexpr size_t kRefKeyBytes = 1 + attachments::kDigestBytes + 16;
constexpr size_t kLegacyRefKeyBytes = 1 + attachments::kDigestBytes + 8;
constexpr uint8_t kVersion = 2;
constexpr uint8_t kVersionWithoutUse = 1;
constexpr size_t kDigest = attachments::kDigestBytes;

using rocks_codec::GetFixed64;
using rocks_codec::PrefixEnd;
using rocks_codec::PutFixed64;

std::string Key(char tag, std::string_view digest) {
  std::string k(1, tag);
  k.append(digest);
  return k;
}
std::string Key(char tag, std::string_view digest, uint64_t n) {
  std::string k = Key(tag, digest);
  PutFixed64(&k, n);
  return k;
}

std::string RefKey(std::string_view digest, ConvId conv, Seq seq) {
  std::string k = Key(kReferenceTag, digest, conv);
  PutFixed64(&k, seq);
  return k;
}
std::string BackRefKey(ConvId conv, Seq seq) {
  std::string k(1, kBackRefTag);
  PutFixed64(&k, conv);
  PutFixed64(&k, seq);
  return k;
}
std::string BackRefPrefix(ConvId conv) {
  std::string k(1, kBackRefTag);
  PutFixed64(&k, conv);
  return k;
}

std::string EncodeAttachment(const Attachment& a) {
  std::string v(1, static_cast<char>(kVersion));
  PutFixed64(&v, a.uploader);
  PutFixed64(&v, a.size);
  PutFixed64(&v, static_cast<uint64_t>(a.created_ms));
  PutFixed64(&v, static_cast<uint64_t>(std::max(a.used_ms, a.created_ms)));
  v.append(a.content_type);
  return v;
}

Status DecodeAttachment(std::string_view v, std::string_view digest, Attachment* out) {
  const uint8_t version = v.empty() ? 0 : static_cast<uint8_t>(v[0]);
  const size_t head = version == kVersion ? 33 : version == kVersionWithoutUse ? 25 : 0;
  if (head == 0 || v.size() < head || v.size() > head + 255) return Internal("store: corrupted attachment record");
  out->id = std::string(digest);
  out->uploader = GetFixed64(v.data() + 1);
  out->size = GetFixed64(v.data() + 9);
  out->created_ms = static_cast<int64_t>(GetFixed64(v.data() + 17));
  out->used_ms = version == kVersion ? static_cast<int64_t>(GetFixed64(v.data() + 25)) : out->created_ms;
  out->content_type = std::string(v.substr(head));
  return Status::Ok();
}

// An iterator over the keys in [lower, upper) of one column family, positioned at the
// first; the bounds live as long as it does.
class Range {
 public:
  Range(rocksdb::DB& db, rocksdb::ColumnFamilyHandle* cf, std::string lower, std::string upper)
      : lower_(std::move(lower)), upper_(std::move(upper)), lo_(lower_), up_(upper_) {
    ro_.iterate_lower_bound = &lo_;
    ro_.iterate_upper_bound = &up_;
    it_.reset(db.NewIterator(ro_, cf));
    it_->Seek(lo_);
  }
  Range(const Range&) = delete;
  Range& operator=(const Range&) = delete;
  rocksdb::Iterator* operator->() const { return it_.get(); }

 private:
  std::string lower_, upper_;
  rocksdb::Slice lo_, up_;
  rocksdb::ReadOptions ro_;
  std::unique_ptr<rocksdb::Iterator> it_;
};

Status Err(const rocksdb::Status& s, const char* what) {
  return Internal(std::string("rocksdb ") + what + ": " + s.ToString());
}

}  // namespace

void RocksStore::PutAttachmentRefs(rocksdb::WriteBatch& wb, std::span<const Message> batch) {
  for (const Message& m : batch) {
    if (m.media_url.empty()) continue;
    attachments::MediaRef ref = attachments::ParseMediaUrl(m.media_url);
    if (ref.kind != attachments::MediaRef::Kind::kOurs) continue;
    wb.Put(meta_, RefKey(ref.digest, m.conv, m.seq), rocksdb::Slice());
    wb.Put(meta_, BackRefKey(m.conv, m.seq), ref.digest);
  }
}

Status RocksStore::ReleaseAttachmentRef(rocksdb::WriteBatch& wb, ConvId conv, Seq seq) {
  const std::string back = BackRefKey(conv, seq);
  rocksdb::PinnableSlice v;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), meta_, back, &v);
  if (st.IsNotFound()) return Status::Ok();
  if (!st.ok()) return Err(st, "get attachment reference");
  if (v.size() != kDigest) return Internal("store: corrupted attachment reference");
  wb.Delete(meta_, RefKey(std::string_view(v.data(), v.size()), conv, seq));
  wb.Delete(meta_, back);
  return Status::Ok();
}

Status RocksStore::ReleaseAttachmentRefsBefore(rocksdb::WriteBatch& wb, ConvId conv, Seq first_kept) {
  Range it(*db_, meta_, BackRefPrefix(conv), BackRefKey(conv, first_kept));
  for (; it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key(), v = it->value();
    if (k.size() != 17 || v.size() != kDigest) return Internal("store: corrupted attachment reference");
    wb.Delete(meta_, RefKey(std::string_view(v.data(), v.size()), conv, GetFixed64(k.data() + 9)));
    wb.Delete(meta_, k);
  }
  if (!it->status().ok()) return Err(it->status(), "scan attachment references");
  return Status::Ok();
}

Status RocksStore::MigrateAttachmentRefs() {
  rocksdb::PinnableSlice marker;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), meta_, kRefsVersionKey, &marker);
  if (st.ok()) {
    if (marker.size() == 1 && static_cast<uint8_t>(marker[0]) == kRefsVersion) return Status::Ok();
    return Internal("store: unknown attachment reference version");
  }
  if (!st.IsNotFound()) return Err(st, "get attachment reference version");

  // Every 'A' key of this store is a legacy one: gather them by conversation (a new
  // store has none, and this costs one empty scan).
  const auto start = std::chrono::steady_clock::now();
  std::map<ConvId, std::vector<std::string>> legacy;  // conv -> digests
  {
    Range it(*db_, meta_, std::string(1, kReferenceTag), std::string(1, static_cast<char>(kReferenceTag + 1)));
    for (; it->Valid(); it->Next()) {
      rocksdb::Slice k = it->key();
      if (k.size() != kLegacyRefKeyBytes) return Internal("store: unexpected attachment reference key");
      legacy[GetFixed64(k.data() + 1 + kDigest)].emplace_back(k.data() + 1, kDigest);
    }
    if (!it->status().ok()) return Err(it->status(), "scan attachment references");
  }
  // Per conversation, one batch: a reference for every message naming one of our
  // attachments, and the legacy keys gone. A crash in between leaves the remaining
  // conversations' legacy keys (and no marker), so the next open goes on.
  uint64_t refs = 0;
  for (const auto& [conv, digests] : legacy) {
    rocksdb::WriteBatch wb;
    const std::string prefix = rocks_format::MessagePrefix(conv);
    Range it(*db_, msgs_, prefix, PrefixEnd(prefix));
    std::vector<Message> named;
    for (; it->Valid(); it->Next()) {
      rocksdb::Slice k = it->key(), v = it->value();
      if (k.size() != prefix.size() + 8) return Internal("store: corrupted message key");
      Message m;
      const Seq seq = GetFixed64(k.data() + prefix.size());
      // A record that does not decode cannot name anything we could serve.
      if (!rocks_format::DecodeMessage(std::string_view(v.data(), v.size()), conv, seq, &m).ok()) continue;
      if (!m.media_url.empty()) named.push_back(std::move(m));
    }
    if (!it->status().ok()) return Err(it->status(), "scan messages");
    const size_t before = wb.Count();
    PutAttachmentRefs(wb, named);
    refs += (wb.Count() - before) / 2;
    for (const std::string& d : digests) wb.Delete(meta_, Key(kReferenceTag, d, conv));
    st = db_->Write(rocksdb::WriteOptions(), &wb);
    if (!st.ok()) return Err(st, "migrate attachment references");
  }
  st = db_->Put(account_wo_, meta_, kRefsVersionKey, std::string(1, static_cast<char>(kRefsVersion)));
  if (!st.ok()) return Err(st, "put attachment reference version");
  if (!legacy.empty()) {
    const auto took = std::chrono::steady_clock::now() - start;
    LOG_INFO("attachment_refs_migrated")
        .Kv("conversations", legacy.size())
        .Kv("references", refs)
        .Kv("ms", std::chrono::duration_cast<std::chrono::milliseconds>(took).count());
  }
  return Status::Ok();
}

Result<Attachment> RocksStore::PutAttachment(const Attachment& a) {
  if (a.id.size() != kDigest) return BadRequest("attachment id must be 32 bytes");
  if (a.uploader == 0) return BadRequest("attachment without an uploader");
  if (a.content_type.empty() || a.content_type.size() > 255) return BadRequest("bad attachment content type");
  // Check-then-put: the first upload's record wins, so it is serialised like the
  // other creations.
  std::lock_guard lk(create_mu_);
  Attachment stored = a;
  rocksdb::WriteBatch wb;
  rocksdb::PinnableSlice v;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), meta_, Key(kAttachmentTag, a.id), &v);
  if (st.ok()) {
    if (Status s = DecodeAttachment(std::string_view(v.data(), v.size()), a.id, &stored); !s.ok()) return s;
    if (a.created_ms > stored.used_ms) {
      stored.used_ms = a.created_ms;  // uploading the bytes again is a use
      wb.Put(meta_, Key(kAttachmentTag, a.id), EncodeAttachment(stored));
    }
  } else if (st.IsNotFound()) {
    wb.Put(meta_, Key(kAttachmentTag, a.id), EncodeAttachment(a));
  } else {
    return Err(st, "get attachment");
  }
  wb.Put(meta_, Key(kUploaderTag, a.id, a.uploader), std::string(1, static_cast<char>(kVersion)));
  st = db_->Write(account_wo_, &wb);
  if (!st.ok()) return Err(st, "put attachment");
  return stored;
}

Result<Attachment> RocksStore::GetAttachment(std::string_view id) {
  if (id.size() != kDigest) return NotFound("no such attachment");
  rocksdb::PinnableSlice v;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), meta_, Key(kAttachmentTag, id), &v);
  if (st.IsNotFound()) return NotFound("no such attachment");
  if (!st.ok()) return Err(st, "get attachment");
  Attachment a;
  if (Status s = DecodeAttachment(std::string_view(v.data(), v.size()), id, &a); !s.ok()) return s;
  return a;
}

Status RocksStore::ForEachAttachmentReference(std::string_view id, const std::function<bool(ConvId)>& fn) {
  const std::string prefix = Key(kReferenceTag, id);
  Range it(*db_, meta_, prefix, PrefixEnd(prefix));
  while (it->Valid()) {
    rocksdb::Slice k = it->key();
    if (k.size() != kRefKeyBytes) return Internal("store: corrupted attachment reference");
    const ConvId conv = GetFixed64(k.data() + 1 + kDigest);
    if (!fn(conv) || conv == std::numeric_limits<ConvId>::max()) return Status::Ok();
    // The conversation's other messages naming the same bytes: skipped in one seek.
    it->Seek(Key(kReferenceTag, id, conv + 1));
  }
  if (!it->status().ok()) return Err(it->status(), "scan attachment references");
  return Status::Ok();
}

Result<bool> RocksStore::AttachmentVisibleTo(std::string_view id, UserId user) {
  if (id.size() != kDigest) return false;
  rocksdb::PinnableSlice v;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), meta_, Key(kUploaderTag, id, user), &v);
  if (st.ok()) return true;
  if (!st.IsNotFound()) return Err(st, "get uploader");
  // Membership is read from the per-user index, written atomically with the
  // conversation record: a removed member is not found here any more.
  bool member = false;
  Status failed;
  Status scan = ForEachAttachmentReference(id, [&](ConvId conv) {
    rocksdb::PinnableSlice mv;
    rocksdb::Status gs = db_->Get(rocksdb::ReadOptions(), meta_, rocks_format::MemberKey(user, conv), &mv);
    if (gs.ok()) member = true;
    else if (!gs.IsNotFound()) failed = Err(gs, "get membership");
    return !member && failed.ok();
  });
  if (!scan.ok()) return scan;
  if (!failed.ok()) return failed;
  return member;
}

Result<std::vector<ConvId>> RocksStore::AttachmentConversations(std::string_view id) {
  std::vector<ConvId> out;
  if (id.size() != kDigest) return out;
  Status s = ForEachAttachmentReference(id, [&](ConvId conv) {
    out.push_back(conv);
    return true;
  });
  if (!s.ok()) return s;
  return out;
}

Result<std::vector<Attachment>> RocksStore::ListAttachments(std::string_view after, size_t limit) {
  std::vector<Attachment> out;
  Range it(*db_, meta_, Key(kAttachmentTag, after), std::string(1, static_cast<char>(kAttachmentTag + 1)));
  for (; it->Valid() && out.size() < limit; it->Next()) {
    rocksdb::Slice k = it->key();
    if (k.size() != 1 + kDigest) return Internal("store: corrupted attachment key");
    std::string_view digest(k.data() + 1, kDigest);
    if (digest == after) continue;
    Attachment a;
    if (Status s = DecodeAttachment(std::string_view(it->value().data(), it->value().size()), digest, &a); !s.ok())
      return s;
    out.push_back(std::move(a));
  }
  if (!it->status().ok()) return Err(it->status(), "list attachments");
  return out;
}

Status RocksStore::TouchAttachment(std::string_view id, int64_t now_ms, int64_t granularity_ms) {
  if (id.size() != kDigest) return NotFound("no such attachment");
  // Most sends find a recent use and write nothing: answered without the lock (a record
  // used within the granularity is younger than any TTL the sweep deletes at, and the
  // sweep re-reads it under the lock).
  auto seen = GetAttachment(id);
  if (!seen.ok()) return seen.status();
  if (seen->used_ms >= now_ms - granularity_ms) return Status::Ok();
  std::lock_guard lk(create_mu_);  // against DeleteAttachmentIfUnused's check-then-delete
  auto a = GetAttachment(id);
  if (!a.ok()) return a.status();
  if (a->used_ms >= now_ms - granularity_ms) return Status::Ok();
  a->used_ms = now_ms;
  rocksdb::Status st = db_->Put(account_wo_, meta_, Key(kAttachmentTag, id), EncodeAttachment(*a));
  if (!st.ok()) return Err(st, "touch attachment");
  return Status::Ok();
}

Result<bool> RocksStore::DeleteAttachmentIfUnused(std::string_view id, int64_t unused_before_ms) {
  if (id.size() != kDigest) return false;
  auto referenced = [&]() -> Result<bool> {
    bool any = false;
    if (Status s = ForEachAttachmentReference(id, [&](ConvId) { return !(any = true); }); !s.ok()) return s;
    return any;
  };
  // A referenced attachment is answered without the lock (an old store holds many of
  // those; each pass looks at them all). References come and go (a send adds one, a
  // delete or a retention drop removes it), but a new one only comes from a send that
  // touched the record first, which the check under the lock sees.
  auto before = referenced();
  if (!before.ok()) return before.status();
  if (*before) return false;
  std::lock_guard lk(create_mu_);
  auto a = GetAttachment(id);
  if (!a.ok()) return a.status().code() == Code::kNotFound ? Result<bool>(false) : Result<bool>(a.status());
  if (a->used_ms >= unused_before_ms) return false;
  auto now = referenced();
  if (!now.ok()) return now.status();
  if (*now) return false;
  rocksdb::WriteBatch wb;
  wb.Delete(meta_, Key(kAttachmentTag, id));
  const std::string lower = Key(kUploaderTag, id);
  wb.DeleteRange(meta_, lower, PrefixEnd(lower));
  rocksdb::Status st = db_->Write(account_wo_, &wb);
  if (!st.ok()) return Err(st, "delete attachment");
  return true;
}

}  // namespace sb::store
