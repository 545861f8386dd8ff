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
#include <string>
#include <string_view>

#include "base/clock.h"
#include "base/status.h"
#include "store/store.h"

namespace sb::attachments {

struct AttachmentStoreOptions {
  std::string dir;                          // <data dir>/attachments; created if missing
  uint64_t max_bytes = 25ull << 20;         // largest attachment
  size_t max_concurrent_uploads = 16;       // more: StartUpload answers kUnavailable
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
    Upload(AttachmentStore& owner, int fd, std::string temp_path);
    struct Hash;
    AttachmentStore& owner_;
    int fd_;
    std::string temp_path_;
    std::unique_ptr<Hash> hash_;
    uint64_t size_ = 0;
    bool failed_ = false;
    bool done_ = false;
  };

  // A new upload, or kUnavailable when max_concurrent_uploads are in progress.
  Result<std::unique_ptr<Upload>> StartUpload();

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

  const AttachmentStoreOptions& options() const { return opts_; }
  size_t uploads_in_progress() const { return uploads_.load(); }
  // Where the bytes of `digest` live (tests, operators).
  std::string PathOf(std::string_view digest) const;
  std::string TempDir() const { return opts_.dir + "/tmp"; }

 private:
  AttachmentStore(AttachmentStoreOptions opts, store::Store& meta, const Clock& clock);
  AttachmentStoreOptions opts_;
  store::Store& meta_;
  const Clock& clock_;
  std::atomic<size_t> uploads_{0};
};

// The send-time check of a message's media_url (owner shard, before sequencing): an
// external URL is fine; one of our attachment URLs must name an attachment the sender
// may read (uploader, or member of a conversation referencing it). kNotFound
// otherwise, the same for "does not exist", "malformed" and "not yours"; kInternal on
// a store error.
Status CheckSend(store::Store& store, UserId sender, std::string_view media_url);

}  // namespace sb::attachments
