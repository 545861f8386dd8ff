// The attachment store: uploaded files, content-addressed, under <data dir>/attachments.
//
//   attachments/tmp/<random>.part     an upload in progress (removed at start)
//   attachments/ab/cd/<64 hex>        the bytes whose SHA-256 is abcd... (0600)
//
// An upload streams into a temp file while it is hashed (libsodium SHA-256). Finish
// fsyncs it, renames it to its digest's path (or drops it when identical bytes are
// already there: stored once), fsyncs the directory, and only then records the
// attachment in the Store (metadata: size, content type, uploaders). A crash at any
// point leaves either a temp file (removed at the next start), or a complete blob
// without a record (invisible; the same upload again records it), or both. File names
// come only from digests, never from client strings.
//
// Who may read an attachment is the Store's AttachmentVisibleTo (uploader, or a member
// of a conversation with a committed message referencing it); CheckSend applies the
// same rule to a message's media_url before it is sequenced.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "base/clock.h"
#include "base/token_buckets.h"
#include "base/status.h"
#include "store/store.h"

namespace sb::attachments {

struct AttachmentStoreOptions {
  std::string dir;                          // <data dir>/attachments; created if missing
  uint64_t max_bytes = 25ull << 20;         // largest attachment
  size_t max_concurrent_uploads = 16;       // more: StartUpload answers kUnavailable
  // Bytes one user may upload per day (a bucket that refills continuously, full at
  // start), charged as the body arrives; 0: no quota. In memory: a restart refills it.
  uint64_t bytes_per_user_per_day = 1ull << 30;
  // Uploads are refused (kUnavailable) while the filesystem of `dir` would keep less
  // free than this after the upload (its declared length, or max_bytes): attachments
  // never take the last of the disk the message store needs. 0: no check.
  uint64_t min_free_bytes = 256ull << 20;
  // An attachment no committed message references is deleted (record and bytes) by
  // Sweep once its last use (upload, or a send naming it) is older than this. 0: kept
  // forever.
  int64_t unreferenced_ttl_ms = 86'400'000;
};

// An open blob for reading. Move-only; closes its descriptor.
class BlobFile {
 public:
  BlobFile() = default;
  BlobFile(int fd, uint64_t size) : fd_(fd), size_(size) {}
  BlobFile(BlobFile&& o) noexcept : fd_(o.fd_), size_(o.size_) { o.fd_ = -1; }
  BlobFile& operator=(BlobFile&& o) noexcept;
  BlobFile(const BlobFile&) = delete;
  BlobFile& operator=(const BlobFile&) = delete;
  ~BlobFile();

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  // Up to `n` bytes at `offset` (pread); 0 at the end. kInternal on an I/O error.
  Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) const;

 private:
  int fd_ = -1;
  uint64_t size_ = 0;
};

class AttachmentStore {
 public:
  // Creates the directories and removes temp files left by a crash.
  static Result<std::unique_ptr<AttachmentStore>> Open(AttachmentStoreOptions opts, store::Store& meta,
                                                       const Clock& clock);
  ~AttachmentStore();
  AttachmentStore(const AttachmentStore&) = delete;
  AttachmentStore& operator=(const AttachmentStore&) = delete;

  // One upload in progress. Used by one thread at a time. Destroying it before
  // Finish removes the temp file.
  class Upload {
   public:
    ~Upload();
    Upload(const Upload&) = delete;
    Upload& operator=(const Upload&) = delete;

    // Hashes and writes the bytes. kTooLarge once the total passes max_bytes (the
    // upload is dead then: destroy it).
    Status Append(const void* data, size_t n);
    uint64_t size() const { return size_; }
    // fsync, move into place (or drop as a duplicate), record the metadata. The
    // returned record is the stored one: for bytes uploaded before, its content type
    // is the first upload's. kBadRequest for an empty upload.
    Result<store::Attachment> Finish(UserId uploader, const std::string& content_type);

   private:
    friend class AttachmentStore;
    Upload(AttachmentStore& owner, int fd, std::string temp_path, UserId user);
    struct Hash;
    AttachmentStore& owner_;
    UserId user_;  // charged for the bytes (0: nobody)
    int fd_;
    std::string temp_path_;
    std::unique_ptr<Hash> hash_;
    uint64_t size_ = 0;
    bool failed_ = false;
    bool done_ = false;
  };

  // A new upload by `user` of `expected` bytes (the declared length; unknown for a
  // chunked body). kUnavailable when max_concurrent_uploads are in progress or the disk
  // is low (min_free_bytes); kRateLimited when the user's daily quota cannot cover
  // `expected` (or one byte), with the seconds until it can in *retry_after_s.
  // User 0 is not subject to the quota (tests, tools).
  Result<std::unique_ptr<Upload>> StartUpload(UserId user = 0, std::optional<uint64_t> expected = std::nullopt,
                                              int64_t* retry_after_s = nullptr);

  // The record and the open file, without any authorization (callers check
  // AttachmentVisibleTo first). kNotFound when either is missing.
  struct Opened {
    store::Attachment meta;
    BlobFile file;
  };
  Result<Opened> OpenBlob(std::string_view digest);

  // The record when `user` may read the attachment; kNotFound otherwise (unknown id,
  // not the uploader and no shared conversation references it: the same answer).
  Result<store::Attachment> Authorize(std::string_view digest, UserId user);

  // Deletes the attachments no committed message references whose last use is older
  // than unreferenced_ttl_ms: the record first (atomically with its checks, see
  // Store::DeleteAttachmentIfUnused), then the bytes. Safe beside uploads and
  // downloads: an upload of the same bytes waits for the file's deletion and stores
  // them again; a download that already opened the file keeps reading it.
  struct SweepResult {
    size_t examined = 0;
    size_t removed = 0;
    uint64_t bytes = 0;
  };
  Result<SweepResult> Sweep();
  // Deletes the files under the directory that no record names: what a crash leaves
  // between a sweep's record delete and its unlink, or between an upload's rename and
  // its record, and what a failed unlink left. Walks every file once (the sweep's first
  // pass after a start); each file is checked and removed under the same lock as
  // Finish and Sweep, so an upload finishing meanwhile keeps its file. Files whose names
  // are not an attachment's (`xx/yy/<64 hex>` with xx, yy its first digits) are left
  // alone. `examined`: attachment files seen.
  Result<SweepResult> RemoveOrphans();
  // How often a send naming an attachment refreshes its last use: a quarter of the
  // TTL, so a send's attachment cannot be collected before the message is committed.
  int64_t TouchGranularityMs() const { return opts_.unreferenced_ttl_ms / 4; }

  const AttachmentStoreOptions& options() const { return opts_; }
  size_t uploads_in_progress() const { return uploads_.load(); }
  // Where the bytes of `digest` live (tests, operators).
  std::string PathOf(std::string_view digest) const;
  std::string TempDir() const { return opts_.dir + "/tmp"; }

 private:
  AttachmentStore(AttachmentStoreOptions opts, store::Store& meta, const Clock& clock);
  // The daily quota: takes `n` bytes from `user`'s bucket when it holds them (charge)
  // or only checks (!charge). On refusal, *retry_after_s is when it would hold them.
  bool TakeQuota(UserId user, uint64_t n, bool charge, int64_t* retry_after_s);
  // Free bytes of the filesystem holding `dir` (statvfs; what an unprivileged writer
  // may use), or -1.
  int64_t FreeBytes() const;

  AttachmentStoreOptions opts_;
  store::Store& meta_;
  const Clock& clock_;
  std::atomic<size_t> uploads_{0};
  std::mutex quota_mu_;
  TokenBuckets<UserId> quota_;  // bytes per user per day
  // Held while a finished upload takes its name and record, and while Sweep deletes a
  // record and its file: an upload of bytes being deleted never keeps a record whose
  // file is then removed.
  std::mutex files_mu_;
};

// The send-time check of a message's media_url (owner shard, before sequencing): an
// external URL is fine; one of our attachment URLs must name an attachment the sender
// may read (uploader, or member of a conversation referencing it). kNotFound
// otherwise, the same for "does not exist", "malformed" and "not yours"; kInternal on
// a store error. With touch_granularity_ms > 0 (unreferenced attachments are
// collected), the attachment's last use becomes now (TouchAttachment).
Status CheckSend(store::Store& store, UserId sender, std::string_view media_url, int64_t now_ms = 0,
                 int64_t touch_granularity_ms = 0);

}  // namespace sb::attachments
