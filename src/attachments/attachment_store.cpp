#include "attachments/attachment_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "attachments/attachment_id.h"
#include "base/ids.h"
#include "base/log.h"

namespace sb::attachments {
namespace {

Status Errno(const std::string& what) { return Internal(what + ": " + std::strerror(errno)); }

// Makes `dir` (one level) if missing; a new directory's entry is made durable by
// syncing its parent.
Status MakeDir(const std::string& dir, const std::string& parent) {
  if (::mkdir(dir.c_str(), 0700) == 0) {
    int fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Errno("open " + parent);
    int rc = ::fsync(fd);
    ::close(fd);
    if (rc != 0) return Errno("fsync " + parent);
    return Status::Ok();
  }
  if (errno == EEXIST) return Status::Ok();
  return Errno("mkdir " + dir);
}

Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("open " + dir);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno("fsync " + dir);
  return Status::Ok();
}

std::string Parent(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

// ---- BlobFile ---------------------------------------------------------------------

BlobFile& BlobFile::operator=(BlobFile&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    size_ = o.size_;
    o.fd_ = -1;
  }
  return *this;
}

BlobFile::~BlobFile() {
  if (fd_ >= 0) ::close(fd_);
}

Result<size_t> BlobFile::ReadAt(uint64_t offset, void* buf, size_t n) const {
  for (;;) {
    ssize_t r = ::pread(fd_, buf, n, static_cast<off_t>(offset));
    if (r >= 0) return static_cast<size_t>(r);
    if (errno != EINTR) return Errno("read attachment");
  }
}

// ---- Upload ---------------------------------------------------------------------

struct AttachmentStore::Upload::Hash {
  crypto_hash_sha256_state st;
};

AttachmentStore::Upload::Upload(AttachmentStore& owner, int fd, std::string temp_path, UserId user)
    : owner_(owner), user_(user), fd_(fd), temp_path_(std::move(temp_path)), hash_(std::make_unique<Hash>()) {
  crypto_hash_sha256_init(&hash_->st);
}

AttachmentStore::Upload::~Upload() {
  if (fd_ >= 0) ::close(fd_);
  if (!done_) ::unlink(temp_path_.c_str());
  owner_.uploads_.fetch_sub(1);
}

Status AttachmentStore::Upload::Append(const void* data, size_t n) {
  if (failed_ || done_ || fd_ < 0) return Internal("upload is no longer writable");
  if (n > owner_.opts_.max_bytes - size_) {
    failed_ = true;
    return TooLarge("attachment is larger than " + std::to_string(owner_.opts_.max_bytes) + " bytes");
  }
  if (!owner_.TakeQuota(user_, n, true, nullptr)) {
    failed_ = true;
    return RateLimited("daily upload quota used up (" + std::to_string(owner_.opts_.bytes_per_user_per_day) +
                       " bytes a day per user)");
  }
  crypto_hash_sha256_update(&hash_->st, static_cast<const unsigned char*>(data), n);
  const char* p = static_cast<const char*>(data);
  size_t left = n;
  while (left > 0) {
    ssize_t w = ::write(fd_, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      failed_ = true;
      Status s = Errno("write attachment");
      LOG_ERROR("attachment_write_failed").Kv("error", s.message());
      return Unavailable("could not store the attachment");
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  size_ += n;
  return Status::Ok();
}

Result<store::Attachment> AttachmentStore::Upload::Finish(UserId uploader, const std::string& content_type) {
  if (failed_ || done_ || fd_ < 0) return Internal("upload is no longer writable");
  if (size_ == 0) return BadRequest("the attachment is empty");
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&hash_->st, digest);
  std::string id(reinterpret_cast<const char*>(digest), sizeof digest);

  auto fail = [this](Status s) -> Status {
    failed_ = true;
    LOG_ERROR("attachment_store_failed").Kv("error", s.message());
    return Unavailable("could not store the attachment");
  };
  // The bytes are durable before their name is.
  if (::fsync(fd_) != 0) return fail(Errno("fsync " + temp_path_));
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) return fail(Errno("close " + temp_path_));

  const std::string path = owner_.PathOf(id);
  const std::string leaf_dir = Parent(path);
  const std::string mid_dir = Parent(leaf_dir);
  std::lock_guard files(owner_.files_mu_);
  if (Status s = MakeDir(mid_dir, owner_.opts_.dir); !s.ok()) return fail(s);
  if (Status s = MakeDir(leaf_dir, mid_dir); !s.ok()) return fail(s);
  struct stat sb {};
  if (::stat(path.c_str(), &sb) == 0 && S_ISREG(sb.st_mode) && static_cast<uint64_t>(sb.st_size) == size_) {
    // Identical bytes are stored already (a blob only ever gets its name after its
    // fsync): keep one copy.
    ::unlink(temp_path_.c_str());
    done_ = true;
  } else {
    if (::rename(temp_path_.c_str(), path.c_str()) != 0) return fail(Errno("rename to " + path));
    done_ = true;
    if (Status s = SyncDir(leaf_dir); !s.ok()) return fail(s);
  }

  store::Attachment a;
  a.id = std::move(id);
  a.size = size_;
  a.content_type = content_type;
  a.uploader = uploader;
  a.created_ms = owner_.clock_.NowMs();
  a.used_ms = a.created_ms;
  auto stored = owner_.meta_.PutAttachment(a);
  if (!stored.ok()) return fail(stored.status());
  return stored;
}

// ---- AttachmentStore --------------------------------------------------------------

AttachmentStore::AttachmentStore(AttachmentStoreOptions opts, store::Store& meta, const Clock& clock)
    : opts_(std::move(opts)),
      meta_(meta),
      clock_(clock),
      // A day's bytes at once at most, refilled over the day; 100,000 users' buckets.
      quota_(static_cast<double>(opts_.bytes_per_user_per_day),
             static_cast<double>(opts_.bytes_per_user_per_day) / 86400.0, 100000) {}

AttachmentStore::~AttachmentStore() = default;

Result<std::unique_ptr<AttachmentStore>> AttachmentStore::Open(AttachmentStoreOptions opts, store::Store& meta,
                                                               const Clock& clock) {
  if (sodium_init() < 0) return Internal("libsodium init failed");
  if (opts.dir.empty()) return BadRequest("attachment directory not set");
  while (opts.dir.size() > 1 && opts.dir.back() == '/') opts.dir.pop_back();
  if (Status s = MakeDir(opts.dir, Parent(opts.dir)); !s.ok()) return s;
  const std::string tmp = opts.dir + "/tmp";
  if (Status s = MakeDir(tmp, opts.dir); !s.ok()) return s;
  // Uploads a crash interrupted: nothing refers to them.
  DIR* d = ::opendir(tmp.c_str());
  if (!d) return Errno("opendir " + tmp);
  size_t removed = 0;
  while (dirent* e = ::readdir(d)) {
    std::string_view name(e->d_name);
    if (name == "." || name == "..") continue;
    if (::unlinkat(::dirfd(d), e->d_name, 0) == 0) ++removed;
    else LOG_WARN("attachment_temp_not_removed").Kv("file", tmp + "/" + std::string(name)).Kv("error", std::strerror(errno));
  }
  ::closedir(d);
  if (removed > 0) LOG_INFO("attachment_temp_removed").Kv("files", removed);
  return std::unique_ptr<AttachmentStore>(new AttachmentStore(std::move(opts), meta, clock));
}

bool AttachmentStore::TakeQuota(UserId user, uint64_t n, bool charge, int64_t* retry_after_s) {
  if (opts_.bytes_per_user_per_day == 0 || user == 0) return true;
  std::lock_guard lk(quota_mu_);
  return quota_.Take(user, static_cast<double>(n), clock_.NowMs(), charge, retry_after_s);
}

int64_t AttachmentStore::FreeBytes() const {
  struct statvfs v {};
  if (::statvfs(opts_.dir.c_str(), &v) != 0) return -1;
  return static_cast<int64_t>(v.f_bavail) * static_cast<int64_t>(v.f_frsize);
}

Result<std::unique_ptr<AttachmentStore::Upload>> AttachmentStore::StartUpload(UserId user,
                                                                              std::optional<uint64_t> expected,
                                                                              int64_t* retry_after_s) {
  if (retry_after_s) *retry_after_s = 0;
  if (user != 0 && opts_.bytes_per_user_per_day > 0 && expected && *expected > opts_.bytes_per_user_per_day) {
    return TooLarge("attachment is larger than the daily upload quota (" +
                    std::to_string(opts_.bytes_per_user_per_day) + " bytes a day per user)");
  }
  if (!TakeQuota(user, std::max<uint64_t>(expected.value_or(1), 1), false, retry_after_s)) {
    return RateLimited("daily upload quota: " + std::to_string(opts_.bytes_per_user_per_day) +
                       " bytes a day per user, not enough left for this upload now");
  }
  if (opts_.min_free_bytes > 0) {
    int64_t free = FreeBytes();
    uint64_t want = expected.value_or(opts_.max_bytes);
    if (free >= 0 && static_cast<uint64_t>(free) < opts_.min_free_bytes + want) {
      LOG_WARN("attachment_refused_low_disk").Kv("free_bytes", free).Kv("min_free_bytes", opts_.min_free_bytes);
      return Unavailable("the server is low on disk space; uploads are refused for now");
    }
  }
  size_t n = uploads_.load();
  do {
    if (n >= opts_.max_concurrent_uploads) return Unavailable("too many uploads in progress, retry later");
  } while (!uploads_.compare_exchange_weak(n, n + 1));
  std::string path = TempDir() + "/" + RandomHex(16) + ".part";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    uploads_.fetch_sub(1);
    Status s = Errno("create " + path);
    LOG_ERROR("attachment_temp_failed").Kv("error", s.message());
    return Unavailable("could not store the attachment");
  }
  return std::unique_ptr<Upload>(new Upload(*this, fd, std::move(path), user));
}

std::string AttachmentStore::PathOf(std::string_view digest) const {
  std::string hex = DigestHex(digest);
  return opts_.dir + "/" + hex.substr(0, 2) + "/" + hex.substr(2, 2) + "/" + hex;
}

Result<AttachmentStore::Opened> AttachmentStore::OpenBlob(std::string_view digest) {
  if (digest.size() != kDigestBytes) return NotFound("no such attachment");
  auto meta = meta_.GetAttachment(digest);
  if (!meta.ok()) return meta.status();
  const std::string path = PathOf(digest);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ENOENT && meta_.GetAttachment(digest).status().code() == Code::kNotFound) {
    return NotFound("no such attachment");  // swept between the two reads
  }
  if (fd < 0) {
    Status s = Errno("open " + path);
    LOG_ERROR("attachment_missing").Kv("file", path).Kv("error", s.message());
    return Internal("attachment bytes are missing");
  }
  BlobFile file(fd, meta->size);  // owns fd from here on
  struct stat sb {};
  if (::fstat(fd, &sb) != 0) return Errno("stat " + path);
  if (!S_ISREG(sb.st_mode) || static_cast<uint64_t>(sb.st_size) != meta->size) {
    LOG_ERROR("attachment_size_mismatch").Kv("file", path).Kv("expected", meta->size).Kv("found", sb.st_size);
    return Internal("attachment bytes are damaged");
  }
  Opened o;
  o.meta = std::move(*meta);
  o.file = std::move(file);
  return o;
}

Result<store::Attachment> AttachmentStore::Authorize(std::string_view digest, UserId user) {
  auto visible = meta_.AttachmentVisibleTo(digest, user);
  if (!visible.ok()) return visible.status();
  if (!*visible) return NotFound("no such attachment");
  return meta_.GetAttachment(digest);
}

Result<AttachmentStore::SweepResult> AttachmentStore::Sweep() {
  SweepResult r;
  if (opts_.unreferenced_ttl_ms <= 0) return r;
  const int64_t unused_before = clock_.NowMs() - opts_.unreferenced_ttl_ms;
  std::string after;
  for (;;) {
    auto page = meta_.ListAttachments(after, 1000);
    if (!page.ok()) return page.status();
    for (const store::Attachment& a : *page) {
      ++r.examined;
      if (a.used_ms >= unused_before) continue;  // the common case: no lock, no scan
      std::lock_guard files(files_mu_);
      auto gone = meta_.DeleteAttachmentIfUnused(a.id, unused_before);
      if (!gone.ok()) return gone.status();
      if (!*gone) continue;
      const std::string path = PathOf(a.id);
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        // The record is gone, so the file is unreachable; it only takes space.
        LOG_WARN("attachment_file_not_removed").Kv("file", path).Kv("error", std::strerror(errno));
        continue;
      }
      ++r.removed;
      r.bytes += a.size;
    }
    if (page->size() < 1000) break;
    after = page->back().id;
  }
  return r;
}

namespace {
struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};
using Dir = std::unique_ptr<DIR, DirCloser>;

// A fan-out directory's name: two lowercase hex digits.
bool IsFanOutName(std::string_view n) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
  return n.size() == 2 && hex(n[0]) && hex(n[1]);
}
}  // namespace

Result<AttachmentStore::SweepResult> AttachmentStore::RemoveOrphans() {
  SweepResult r;
  Dir top(::opendir(opts_.dir.c_str()));
  if (!top) return Errno("opendir " + opts_.dir);
  while (dirent* e1 = ::readdir(top.get())) {
    if (!IsFanOutName(e1->d_name)) continue;
    const std::string mid = opts_.dir + "/" + e1->d_name;
    Dir mid_dir(::opendir(mid.c_str()));
    if (!mid_dir) continue;  // not a directory (nothing of ours), or gone
    while (dirent* e2 = ::readdir(mid_dir.get())) {
      if (!IsFanOutName(e2->d_name)) continue;
      const std::string leaf = mid + "/" + e2->d_name;
      Dir leaf_dir(::opendir(leaf.c_str()));
      if (!leaf_dir) continue;
      while (dirent* e3 = ::readdir(leaf_dir.get())) {
        const std::string path = leaf + "/" + e3->d_name;
        auto digest = ParseAttachmentId(std::string(kIdPrefix) + e3->d_name);
        if (!digest || PathOf(*digest) != path) continue;
        struct stat sb {};
        if (::lstat(path.c_str(), &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        ++r.examined;
        std::lock_guard files(files_mu_);
        auto record = meta_.GetAttachment(*digest);
        if (record.ok()) continue;
        if (record.status().code() != Code::kNotFound) return record.status();
        if (::unlink(path.c_str()) != 0) {
          if (errno == ENOENT) continue;
          LOG_WARN("attachment_file_not_removed").Kv("file", path).Kv("error", std::strerror(errno));
          continue;
        }
        ++r.removed;
        r.bytes += static_cast<uint64_t>(sb.st_size);
      }
    }
  }
  return r;
}

Status CheckSend(store::Store& store, UserId sender, std::string_view media_url, int64_t now_ms,
                 int64_t touch_granularity_ms) {
  MediaRef ref = ParseMediaUrl(media_url);
  if (ref.kind == MediaRef::Kind::kExternal) return Status::Ok();
  if (ref.kind == MediaRef::Kind::kMalformed) return NotFound("no such attachment");
  auto visible = store.AttachmentVisibleTo(ref.digest, sender);
  if (!visible.ok()) {
    LOG_ERROR("attachment_check_failed").Kv("error", visible.status().message());
    return Internal("could not check the attachment");
  }
  if (!*visible) return NotFound("no such attachment");
  if (touch_granularity_ms > 0) {
    Status t = store.TouchAttachment(ref.digest, now_ms, touch_granularity_ms);
    if (t.code() == Code::kNotFound) return NotFound("no such attachment");  // swept meanwhile
    if (!t.ok()) {
      LOG_ERROR("attachment_check_failed").Kv("error", t.message());
      return Internal("could not check the attachment");
    }
  }
  return Status::Ok();
}

}  // namespace sb::attachments
