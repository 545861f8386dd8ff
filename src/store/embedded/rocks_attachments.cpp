// Attachment records in the embedded store (the bytes are files: src/attachments/).
// All in the meta column family:
//   'a' digest(32)           -> version, uploader(8), size(8), created_ms(8), content_type
//   'b' digest(32) user(8)   -> version: `user` uploaded these bytes
//   'A' digest(32) conv(8)   -> empty: a committed message of `conv` references them
// The uploaders and the references of one attachment are contiguous ranges, so the
// read check is a point lookup plus, for a non-uploader, one short scan.
#include <rocksdb/write_batch.h>

#include "attachments/attachment_id.h"
#include "store/embedded/rocks_codec.h"
#include "store/embedded/rocks_store.h"

namespace sb::store {
namespace {

constexpr char kAttachmentTag = 'a';
constexpr char kUploaderTag = 'b';
constexpr char kReferenceTag = 'A';
constexpr uint8_t kVersion = 1;
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

std::string EncodeAttachment(const Attachment& a) {
  std::string v(1, static_cast<char>(kVersion));
  PutFixed64(&v, a.uploader);
  PutFixed64(&v, a.size);
  PutFixed64(&v, static_cast<uint64_t>(a.created_ms));
  v.append(a.content_type);
  return v;
}

Status DecodeAttachment(std::string_view v, std::string_view digest, Attachment* out) {
  if (v.size() < 25 || v.size() > 25 + 255 || static_cast<uint8_t>(v[0]) != kVersion)
    return Internal("store: corrupted attachment record");
  out->id = std::string(digest);
  out->uploader = GetFixed64(v.data() + 1);
  out->size = GetFixed64(v.data() + 9);
  out->created_ms = static_cast<int64_t>(GetFixed64(v.data() + 17));
  out->content_type = std::string(v.substr(25));
  return Status::Ok();
}

Status Err(const rocksdb::Status& s, const char* what) {
  return Internal(std::string("rocksdb ") + what + ": " + s.ToString());
}

}  // namespace

void RocksStore::PutAttachmentRefs(rocksdb::WriteBatch& wb, std::span<const Message> batch) {
  for (const Message& m : batch) {
    if (m.media_url.empty()) continue;
    attachments::MediaRef ref = attachments::ParseMediaUrl(m.media_url);
    if (ref.kind != attachments::MediaRef::Kind::kOurs) continue;
    wb.Put(meta_, Key(kReferenceTag, ref.digest, m.conv), rocksdb::Slice());
  }
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

Result<bool> RocksStore::AttachmentVisibleTo(std::string_view id, UserId user) {
  if (id.size() != kDigest) return false;
  rocksdb::PinnableSlice v;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), meta_, Key(kUploaderTag, id, user), &v);
  if (st.ok()) return true;
  if (!st.IsNotFound()) return Err(st, "get uploader");
  // Membership is read from the per-user index, written atomically with the
  // conversation record: a removed member is not found here any more.
  const std::string lower = Key(kReferenceTag, id);
  const std::string upper = PrefixEnd(lower);
  rocksdb::Slice lo(lower), up(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = &lo;
  ro.iterate_upper_bound = &up;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, meta_));
  for (it->Seek(lo); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key();
    if (k.size() != 1 + kDigest + 8) return Internal("store: corrupted attachment reference");
    ConvId conv = GetFixed64(k.data() + 1 + kDigest);
    rocksdb::PinnableSlice mv;
    st = db_->Get(rocksdb::ReadOptions(), meta_, rocks_format::MemberKey(user, conv), &mv);
    if (st.ok()) return true;
    if (!st.IsNotFound()) return Err(st, "get membership");
  }
  if (!it->status().ok()) return Err(it->status(), "scan attachment references");
  return false;
}

Result<std::vector<ConvId>> RocksStore::AttachmentConversations(std::string_view id) {
  std::vector<ConvId> out;
  if (id.size() != kDigest) return out;
  const std::string lower = Key(kReferenceTag, id);
  const std::string upper = PrefixEnd(lower);
  rocksdb::Slice lo(lower), up(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = &lo;
  ro.iterate_upper_bound = &up;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, meta_));
  for (it->Seek(lo); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key();
    if (k.size() != 1 + kDigest + 8) return Internal("store: corrupted attachment reference");
    out.push_back(GetFixed64(k.data() + 1 + kDigest));
  }
  if (!it->status().ok()) return Err(it->status(), "scan attachment references");
  return out;
}

}  // namespace sb::store
