// The attachment store: ids and URLs, content addressing, dedup of identical bytes,
// temp-file cleanup, limits, and who may read (uploader, members of a referencing
// conversation) through the RocksDB store.
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <sodium.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <fstream>
#include <iterator>

#include "attachments/attachment_id.h"
#include "attachments/attachment_store.h"
#include "base/clock.h"
#include "base/ids.h"
#include "store/embedded/rocks_store.h"

namespace sb::attachments {
namespace {

namespace fs = std::filesystem;

std::string Sha256(std::string_view bytes) {
  unsigned char d[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(d, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  return std::string(reinterpret_cast<const char*>(d), sizeof d);
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

size_t FilesUnder(const std::string& dir) {
  size_t n = 0;
  std::error_code ec;
  for (auto& e : fs::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file()) ++n;
  return n;
}

// ---- ids, URLs, content types -------------------------------------------------

TEST(AttachmentId, FormatsAndParsesStrictly) {
  std::string digest = Sha256("hello");
  std::string id = FormatAttachmentId(digest);
  EXPECT_EQ(id, "att_2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
  auto back = ParseAttachmentId(id);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, digest);
  EXPECT_EQ(MediaUrl(digest), "/v1/attachments/" + id);

  std::string hex = id.substr(4);
  std::string upper = hex;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const std::string& bad : std::vector<std::string>{
           "", "att_", hex,                        // no prefix
           "att_" + hex.substr(0, 63),             // too short
           "att_" + hex + "0",                     // too long
           "att_" + upper,                         // one spelling only
           "att_" + hex.substr(0, 63) + "g",       // not hex
           "ATT_" + hex, "att-" + hex,
           "../../etc/passwd", "att_../../../../../../../../../../../../../../../../../etc/passwd",
           "att_" + std::string(64, '/'), std::string("att_") + std::string(63, 'a') + '\0'}) {
    EXPECT_FALSE(ParseAttachmentId(bad).has_value()) << bad;
  }
}

TEST(AttachmentId, RecognisesOurMediaUrls) {
  std::string digest = Sha256("x");
  std::string id = FormatAttachmentId(digest);
  for (const std::string& url : {"/v1/attachments/" + id, "https://chat.example.com/v1/attachments/" + id,
                                 "http://127.0.0.1:8080/v1/attachments/" + id}) {
    MediaRef r = ParseMediaUrl(url);
    EXPECT_EQ(r.kind, MediaRef::Kind::kOurs) << url;
    EXPECT_EQ(r.digest, digest) << url;
  }
  for (const std::string& url : {std::string("https://cdn.example/a.png"), std::string("u"),
                                 std::string("https://cdn.example/v1/attachmentsX/" + id),
                                 std::string("/v1/attachmentsfoo"), std::string("https://host")}) {
    EXPECT_EQ(ParseMediaUrl(url).kind, MediaRef::Kind::kExternal) << url;
  }
  for (const std::string& url : {"/v1/attachments/" + id + "?x=1", "/v1/attachments/" + id + "/",
                                 std::string("/v1/attachments/../../etc/passwd"), std::string("/v1/attachments/"),
                                 std::string("/v1/attachments"), "https://h/v1/attachments/" + id.substr(0, 20)}) {
    EXPECT_EQ(ParseMediaUrl(url).kind, MediaRef::Kind::kMalformed) << url;
  }
}

TEST(AttachmentId, ContentTypesAreValidatedAndNormalised) {
  EXPECT_EQ(NormalizeContentType("image/png"), "image/png");
  EXPECT_EQ(NormalizeContentType(" Image/PNG "), "image/png");
  EXPECT_EQ(NormalizeContentType("text/plain;charset=UTF-8"), "text/plain; charset=UTF-8");
  EXPECT_EQ(NormalizeContentType("application/vnd.api+json"), "application/vnd.api+json");
  for (std::string_view bad : {"", "image", "image/", "/png", "image/png/x", "image/p ng", "text/html; charset",
                               "text/plain; a=\"b\"", "te\"xt/plain", "image/png\r\nX-Injected: 1"}) {
    EXPECT_FALSE(NormalizeContentType(bad).has_value()) << bad;
  }
  EXPECT_FALSE(NormalizeContentType("a/" + std::string(300, 'b')).has_value());
  EXPECT_TRUE(IsInlineImage("image/jpeg"));
  EXPECT_FALSE(IsInlineImage("image/svg+xml"));
  EXPECT_FALSE(IsInlineImage("text/html"));
  EXPECT_FALSE(IsInlineImage("application/octet-stream"));
}

// ---- the store ----------------------------------------------------------------

class AttachmentStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sb_attach_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    ReopenStore();
  }
  void TearDown() override {
    files_.reset();
    meta_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  void Reopen(uint64_t max_bytes = 1 << 20, size_t max_uploads = 4, uint64_t per_day = 0, uint64_t min_free = 0,
              int64_t ttl_ms = 0) {
    files_.reset();
    AttachmentStoreOptions o;
    o.unreferenced_ttl_ms = ttl_ms;
    o.dir = root_ + "/attachments";
    o.max_bytes = max_bytes;
    o.max_concurrent_uploads = max_uploads;
    o.bytes_per_user_per_day = per_day;
    o.min_free_bytes = min_free;
    auto f = AttachmentStore::Open(o, *meta_, clock_);
    ASSERT_TRUE(f.ok()) << f.status().message();
    files_ = std::move(*f);
  }
  // Uploads `bytes` in pieces of `piece` bytes.
  Result<store::Attachment> Put(std::string_view bytes, UserId who, const std::string& ct = "image/png",
                                size_t piece = 7) {
    auto up = files_->StartUpload();
    if (!up.ok()) return up.status();
    for (size_t i = 0; i < bytes.size(); i += piece) {
      Status s = (*up)->Append(bytes.data() + i, std::min(piece, bytes.size() - i));
      if (!s.ok()) return s;
    }
    return (*up)->Finish(who, ct);
  }
  store::Conversation MakeGroup(std::vector<UserId> members) {
    store::Conversation c;
    c.id = next_conv_++;
    c.type = store::ConvType::kGroup;
    c.members = std::move(members);
    c.created_by = c.members.front();
    bool created = false;
    auto r = meta_->CreateConversation(c, &created);
    EXPECT_TRUE(r.ok()) << r.status().message();
    return *r;
  }
  // (Re)opens the RocksDB store, and the attachment store on it.
  void ReopenStore() {
    files_.reset();
    meta_.reset();
    store::StoreOptions so;
    so.dir = root_ + "/store";
    so.sync = store::SyncPolicy::kNone;
    auto s = store::RocksStore::Open(so);
    ASSERT_TRUE(s.ok()) << s.status().message();
    meta_ = std::move(*s);
    Reopen();
  }
  // Deletes (or, with `edit`, edits) message (conv, seq) as the chat core does: the
  // target rewritten in the batch of the delete message.
  void Rewrite(ConvId conv, Seq target_seq, bool edit = false) {
    auto target = meta_->GetMessage(conv, target_seq);
    ASSERT_TRUE(target.ok()) << target.status().message();
    store::CommitBatch b;
    store::Message m;
    m.conv = conv;
    m.seq = ++seq_;
    m.sender = target->sender;
    m.client_msg_id = "c" + std::to_string(seq_);
    m.content_type = edit ? store::ContentType::kEdit : store::ContentType::kDelete;
    m.target_message_id = FormatMessageId(conv, target_seq);
    b.messages.push_back(m);
    if (edit) {
      target->content = "edited caption";
      target->edited_ms = 1;
    } else {
      target->content.clear();
      target->media_url.clear();
      target->deleted = true;
    }
    b.rewrites.push_back(*target);
    ASSERT_TRUE(meta_->Commit(b).ok());
  }
  Seq CommitImage(ConvId conv, UserId sender, const std::string& url) {
    store::CommitBatch b;
    store::Message m;
    m.conv = conv;
    m.seq = ++seq_;
    m.sender = sender;
    m.client_msg_id = "c" + std::to_string(seq_);
    m.content_type = store::ContentType::kImage;
    m.media_url = url;
    b.messages.push_back(m);
    EXPECT_TRUE(meta_->Commit(b).ok());
    return m.seq;
  }
  std::vector<ConvId> Referencing(std::string_view id) {
    auto refs = meta_->AttachmentConversations(id);
    EXPECT_TRUE(refs.ok()) << refs.status().message();
    return refs.ok() ? *refs : std::vector<ConvId>{};
  }

  std::string root_;
  ManualClock clock_{1'700'000'000'000};
  std::unique_ptr<store::RocksStore> meta_;
  std::unique_ptr<AttachmentStore> files_;
  ConvId next_conv_ = 100;
  Seq seq_ = 0;
};

TEST_F(AttachmentStoreTest, IdIsTheSha256AndTheBytesLiveAtItsPath) {
  const std::string bytes = "\x89PNG\r\n\x1a\n" + std::string(5000, 'z');
  auto a = Put(bytes, 7);
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(a->id, Sha256(bytes));
  EXPECT_EQ(a->size, bytes.size());
  EXPECT_EQ(a->content_type, "image/png");
  EXPECT_EQ(a->uploader, 7u);
  std::string path = files_->PathOf(a->id);
  std::string hex = DigestHex(a->id);
  EXPECT_EQ(path, root_ + "/attachments/" + hex.substr(0, 2) + "/" + hex.substr(2, 2) + "/" + hex);
  EXPECT_EQ(ReadFile(path), bytes);
  EXPECT_EQ(fs::status(path).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_EQ(FilesUnder(files_->TempDir()), 0u);
  EXPECT_EQ(files_->uploads_in_progress(), 0u);

  auto opened = files_->OpenBlob(a->id);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  std::string back(bytes.size(), '\0');
  auto n = opened->file.ReadAt(0, back.data(), back.size());
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, bytes.size());
  EXPECT_EQ(back, bytes);
}

TEST_F(AttachmentStoreTest, IdenticalBytesAreStoredOnceAndTheFirstContentTypeWins) {
  const std::string bytes(10000, 'q');
  auto a = Put(bytes, 1, "image/png", 1000);
  auto b = Put(bytes, 2, "text/html", 333);  // another user, another claimed type
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->id, b->id);
  EXPECT_EQ(b->content_type, "image/png");
  EXPECT_EQ(b->uploader, 1u);
  EXPECT_EQ(FilesUnder(root_ + "/attachments"), 1u);
  // Both uploaders may read it; nobody else.
  EXPECT_TRUE(files_->Authorize(a->id, 1).ok());
  EXPECT_TRUE(files_->Authorize(a->id, 2).ok());
  EXPECT_EQ(files_->Authorize(a->id, 3).status().code(), Code::kNotFound);
  // Different bytes, different file.
  auto c = Put(bytes + "!", 1);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->id, a->id);
  EXPECT_EQ(FilesUnder(root_ + "/attachments"), 2u);
}

TEST_F(AttachmentStoreTest, AnAbandonedUploadLeavesNothing) {
  {
    auto up = files_->StartUpload();
    ASSERT_TRUE(up.ok());
    ASSERT_TRUE((*up)->Append("abc", 3).ok());
    EXPECT_EQ(FilesUnder(files_->TempDir()), 1u);
    EXPECT_EQ(files_->uploads_in_progress(), 1u);
  }
  EXPECT_EQ(FilesUnder(root_ + "/attachments"), 0u);
  EXPECT_EQ(files_->uploads_in_progress(), 0u);
}

TEST_F(AttachmentStoreTest, OverTheLimitIsTooLargeAndLeavesNothing) {
  Reopen(/*max_bytes=*/1000);
  auto up = files_->StartUpload();
  ASSERT_TRUE(up.ok());
  std::string piece(600, 'x');
  ASSERT_TRUE((*up)->Append(piece.data(), piece.size()).ok());
  Status s = (*up)->Append(piece.data(), piece.size());
  EXPECT_EQ(s.code(), Code::kTooLarge);
  EXPECT_FALSE((*up)->Append("y", 1).ok()) << "a dead upload accepts nothing more";
  EXPECT_FALSE((*up)->Finish(1, "image/png").ok());
  up->reset();
  EXPECT_EQ(FilesUnder(root_ + "/attachments"), 0u);
  // Exactly the limit is fine.
  auto ok = Put(std::string(1000, 'x'), 1, "image/png", 1000);
  EXPECT_TRUE(ok.ok()) << ok.status().message();
}

TEST_F(AttachmentStoreTest, EmptyUploadIsRefused) {
  auto up = files_->StartUpload();
  ASSERT_TRUE(up.ok());
  EXPECT_EQ((*up)->Finish(1, "image/png").status().code(), Code::kBadRequest);
  up->reset();
  EXPECT_EQ(FilesUnder(root_ + "/attachments"), 0u);
}

TEST_F(AttachmentStoreTest, TempFilesLeftByACrashAreRemovedAtStart) {
  std::string tmp = files_->TempDir();
  { std::ofstream(tmp + "/0123456789abcdef.part") << "half an upload"; }
  { std::ofstream(tmp + "/other") << "x"; }
  auto keep = Put("kept", 1);
  ASSERT_TRUE(keep.ok());
  EXPECT_EQ(FilesUnder(tmp), 2u);
  Reopen();
  EXPECT_EQ(FilesUnder(tmp), 0u);
  // Stored blobs are untouched.
  EXPECT_EQ(ReadFile(files_->PathOf(keep->id)), "kept");
  EXPECT_TRUE(files_->OpenBlob(keep->id).ok());
}

TEST_F(AttachmentStoreTest, ConcurrentUploadsAreBounded) {
  Reopen(1 << 20, /*max_uploads=*/2);
  auto a = files_->StartUpload();
  auto b = files_->StartUpload();
  ASSERT_TRUE(a.ok() && b.ok());
  auto c = files_->StartUpload();
  EXPECT_EQ(c.status().code(), Code::kUnavailable);
  a->reset();
  EXPECT_TRUE(files_->StartUpload().ok()) << "a finished upload frees its slot";
}

// The daily quota: checked at the start against the declared length, charged as the
// bytes arrive, refilled with time, per user.
TEST_F(AttachmentStoreTest, DailyUploadQuotaPerUser) {
  Reopen(1 << 20, 4, /*per_day=*/1000);
  auto upload = [&](UserId who, std::optional<uint64_t> declared, size_t n, int64_t* retry) -> Status {
    auto up = files_->StartUpload(who, declared, retry);
    if (!up.ok()) return up.status();
    std::string bytes(n, static_cast<char>('a' + n % 26));
    if (Status s = (*up)->Append(bytes.data(), bytes.size()); !s.ok()) return s;
    auto done = (*up)->Finish(who, "image/png");
    return done.ok() ? Status::Ok() : done.status();
  };
  int64_t retry = -7;
  EXPECT_TRUE(upload(1, 600, 600, &retry).ok());
  EXPECT_EQ(retry, 0);
  // 400 left: a declared 600 is refused before any byte, with when it would fit.
  Status s = upload(1, 600, 600, &retry);
  EXPECT_EQ(s.code(), Code::kRateLimited) << s.message();
  // 200 bytes at 1000 a day: 17,280 s.
  EXPECT_EQ(retry, 17280);
  EXPECT_EQ(FilesUnder(files_->TempDir()), 0u);
  // Undeclared (chunked): starts, and is cut when the bytes pass what is left.
  s = upload(1, std::nullopt, 500, &retry);
  EXPECT_EQ(s.code(), Code::kRateLimited) << s.message();
  EXPECT_EQ(FilesUnder(files_->TempDir()), 0u);
  // More than a whole day's quota can never fit.
  EXPECT_EQ(upload(1, 1001, 1001, &retry).code(), Code::kTooLarge);
  // Someone else is not affected.
  EXPECT_TRUE(upload(2, 900, 900, nullptr).ok());
  // Half a day later, 500 more.
  clock_.Advance(43'200'000);
  EXPECT_TRUE(upload(1, 600, 600, &retry).ok()) << "400 left + 500 refilled";
  EXPECT_EQ(upload(1, 400, 400, &retry).code(), Code::kRateLimited);
}

TEST_F(AttachmentStoreTest, LowDiskRefusesUploads) {
  // A floor no disk can meet: every upload is refused, before a temp file exists.
  Reopen(1 << 20, 4, 0, /*min_free=*/uint64_t{1} << 62);
  auto up = files_->StartUpload(1, 10);
  EXPECT_EQ(up.status().code(), Code::kUnavailable) << up.status().message();
  EXPECT_EQ(FilesUnder(files_->TempDir()), 0u);
  // A floor this disk meets: accepted.
  Reopen(1 << 20, 4, 0, /*min_free=*/1 << 20);
  EXPECT_TRUE(files_->StartUpload(1, 10).ok());
}

TEST_F(AttachmentStoreTest, BadIdsNeverReachTheFilesystem) {
  for (std::string_view bad : {std::string_view(""), std::string_view("../../etc/passwd"),
                               std::string_view("short")}) {
    EXPECT_EQ(files_->OpenBlob(bad).status().code(), Code::kNotFound) << bad;
    EXPECT_EQ(files_->Authorize(bad, 1).status().code(), Code::kNotFound) << bad;
    EXPECT_EQ(meta_->GetAttachment(bad).status().code(), Code::kNotFound) << bad;
  }
  // A well-formed id that nobody uploaded.
  EXPECT_EQ(files_->OpenBlob(Sha256("nobody")).status().code(), Code::kNotFound);
}

TEST_F(AttachmentStoreTest, MembersOfAReferencingConversationMayReadUntilRemoved) {
  const UserId alice = 1, bob = 2, carol = 3;
  auto a = Put("picture", alice);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(files_->Authorize(a->id, bob).status().code(), Code::kNotFound);

  store::Conversation conv = MakeGroup({alice, bob});
  CommitImage(conv.id, alice, "https://chat.example/v1/attachments/" + FormatAttachmentId(a->id));
  EXPECT_TRUE(files_->Authorize(a->id, bob).ok());
  EXPECT_EQ(files_->Authorize(a->id, carol).status().code(), Code::kNotFound);
  auto refs = meta_->AttachmentConversations(a->id);
  ASSERT_TRUE(refs.ok());
  EXPECT_EQ(*refs, std::vector<ConvId>{conv.id});

  // Bob may now forward it (CheckSend), Carol may not; external URLs are not checked.
  EXPECT_TRUE(CheckSend(*meta_, bob, MediaUrl(a->id)).ok());
  EXPECT_EQ(CheckSend(*meta_, carol, MediaUrl(a->id)).code(), Code::kNotFound);
  EXPECT_EQ(CheckSend(*meta_, alice, MediaUrl(Sha256("never uploaded"))).code(), Code::kNotFound);
  EXPECT_EQ(CheckSend(*meta_, alice, "/v1/attachments/att_nothex").code(), Code::kNotFound);
  EXPECT_TRUE(CheckSend(*meta_, carol, "https://cdn.example/a.png").ok());

  // Removed from the conversation: access is gone at once.
  auto upd = meta_->UpdateConversation(conv.id, [&](store::Conversation& c) {
    c.members = {alice};
    return Status::Ok();
  });
  ASSERT_TRUE(upd.ok());
  EXPECT_EQ(files_->Authorize(a->id, bob).status().code(), Code::kNotFound);
  EXPECT_TRUE(files_->Authorize(a->id, alice).ok());
}

TEST_F(AttachmentStoreTest, ReferencesAreWrittenByAppendMessagesToo) {
  auto a = Put("doc", 1, "application/pdf");
  ASSERT_TRUE(a.ok());
  store::Message m;
  m.conv = 555;
  m.seq = 1;
  m.sender = 1;
  m.content_type = store::ContentType::kFile;
  m.media_url = MediaUrl(a->id);
  store::Message other = m;
  other.seq = 2;
  other.media_url = "https://cdn.example/x";  // not ours: no reference
  store::Message text = m;
  text.seq = 3;
  text.content_type = store::ContentType::kText;
  text.media_url.clear();
  std::vector<store::Message> batch{m, other, text};
  ASSERT_TRUE(meta_->AppendMessages(batch).ok());
  auto refs = meta_->AttachmentConversations(a->id);
  ASSERT_TRUE(refs.ok());
  EXPECT_EQ(*refs, std::vector<ConvId>{555});
}

TEST_F(AttachmentStoreTest, UnreferencedAttachmentsAreSweptAfterTheirTtl) {
  constexpr int64_t kTtl = 3'600'000;
  Reopen(1 << 20, 4, 0, 0, kTtl);
  const UserId alice = 1, bob = 2;
  auto unsent = Put("never sent", alice);
  auto sent = Put("sent at once", alice);
  auto reused = Put("sent much later", alice);
  ASSERT_TRUE(unsent.ok() && sent.ok() && reused.ok());
  store::Conversation conv = MakeGroup({alice, bob});
  CommitImage(conv.id, alice, MediaUrl(sent->id));

  // Not before the TTL has passed since the last use.
  clock_.Advance(kTtl - 1);
  auto r = files_->Sweep();
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->examined, 3u);
  EXPECT_EQ(r->removed, 0u);
  // A send naming it is a use (CheckSend touches it); the message is committed later.
  EXPECT_TRUE(CheckSend(*meta_, alice, MediaUrl(reused->id), clock_.NowMs(), files_->TouchGranularityMs()).ok());

  clock_.Advance(2);
  r = files_->Sweep();
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->removed, 1u);
  EXPECT_EQ(r->bytes, unsent->size);
  EXPECT_EQ(meta_->GetAttachment(unsent->id).status().code(), Code::kNotFound);
  EXPECT_EQ(files_->OpenBlob(unsent->id).status().code(), Code::kNotFound);
  EXPECT_EQ(files_->Authorize(unsent->id, alice).status().code(), Code::kNotFound);
  EXPECT_FALSE(fs::exists(files_->PathOf(unsent->id)));
  EXPECT_EQ(CheckSend(*meta_, alice, MediaUrl(unsent->id), clock_.NowMs(), files_->TouchGranularityMs()).code(),
            Code::kNotFound);
  // Referenced: kept however old, for every member. Touched: kept for another TTL.
  EXPECT_TRUE(files_->Authorize(sent->id, bob).ok());
  EXPECT_TRUE(files_->OpenBlob(sent->id).ok());
  EXPECT_TRUE(files_->OpenBlob(reused->id).ok());
  clock_.Advance(kTtl);
  r = files_->Sweep();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->removed, 1u) << "the touched one, never committed, goes a TTL after its send";
  EXPECT_TRUE(files_->OpenBlob(sent->id).ok());
  EXPECT_EQ(FilesUnder(root_ + "/attachments"), 1u);

  // The same bytes uploaded again are stored again, under the same id.
  auto again = Put("never sent", bob);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->id, unsent->id);
  EXPECT_EQ(again->uploader, bob);
  EXPECT_TRUE(files_->OpenBlob(again->id).ok());
  EXPECT_EQ(files_->Authorize(again->id, alice).status().code(), Code::kNotFound)
      << "the old uploaders went with the old record";
}

// A crash between a sweep's record delete and its unlink (or between an upload's
// rename and its record) leaves a file nothing names. The first sweep after a start
// deletes such files and nothing else: files with records, and files whose names are
// not an attachment's, stay.
TEST_F(AttachmentStoreTest, FilesWithoutARecordAreRemovedAndNothingElse) {
  auto kept = Put("has a record", 1);
  ASSERT_TRUE(kept.ok()) << kept.status().message();
  // The bytes of a swept attachment whose unlink never happened.
  const std::string orphan_bytes = "record deleted, file left";
  const std::string orphan = Sha256(orphan_bytes);
  fs::create_directories(fs::path(files_->PathOf(orphan)).parent_path());
  std::ofstream(files_->PathOf(orphan), std::ios::binary) << orphan_bytes;
  // Not ours: an operator's note, a hex name in the wrong fan-out directory, a
  // directory with an attachment's name.
  const std::string dir = root_ + "/attachments";
  std::ofstream(dir + "/README") << "notes";
  const std::string misplaced = DigestHex(Sha256("misplaced"));
  fs::create_directories(dir + "/00/00");
  std::ofstream(dir + "/00/00/" + misplaced) << "misplaced";
  const std::string as_dir = files_->PathOf(Sha256("a directory"));
  fs::create_directories(as_dir);
  ASSERT_EQ(FilesUnder(dir), 4u);

  auto r = files_->RemoveOrphans();
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->examined, 2u) << "the two files at an attachment's path";
  EXPECT_EQ(r->removed, 1u);
  EXPECT_EQ(r->bytes, orphan_bytes.size());
  EXPECT_FALSE(fs::exists(files_->PathOf(orphan)));
  EXPECT_EQ(ReadFile(files_->PathOf(kept->id)), "has a record");
  EXPECT_TRUE(files_->OpenBlob(kept->id).ok());
  EXPECT_TRUE(fs::exists(dir + "/README"));
  EXPECT_TRUE(fs::exists(dir + "/00/00/" + misplaced));
  EXPECT_TRUE(fs::is_directory(as_dir));

  // The same bytes uploaded again afterwards are stored with a record, as new.
  auto again = Put(orphan_bytes, 2);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->id, orphan);
  EXPECT_TRUE(files_->OpenBlob(orphan).ok());
  r = files_->RemoveOrphans();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->removed, 0u);
}

TEST_F(AttachmentStoreTest, UsesRefreshTheLastUseAtTheirGranularity) {
  constexpr int64_t kTtl = 4'000'000;
  Reopen(1 << 20, 4, 0, 0, kTtl);
  const int64_t t0 = clock_.NowMs();
  auto a = Put("popular", 1);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->used_ms, t0);
  const int64_t g = files_->TouchGranularityMs();
  EXPECT_EQ(g, kTtl / 4);
  clock_.Advance(g);
  ASSERT_TRUE(CheckSend(*meta_, 1, MediaUrl(a->id), clock_.NowMs(), g).ok());
  EXPECT_EQ(meta_->GetAttachment(a->id)->used_ms, t0) << "within the granularity: no write";
  clock_.Advance(1);
  ASSERT_TRUE(CheckSend(*meta_, 1, MediaUrl(a->id), clock_.NowMs(), g).ok());
  EXPECT_EQ(meta_->GetAttachment(a->id)->used_ms, t0 + g + 1);
  // Uploading the same bytes again is a use too; the record keeps its creation time.
  clock_.Advance(g * 2);
  auto b = Put("popular", 2);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->used_ms, t0 + 3 * g + 1);
  EXPECT_EQ(b->created_ms, t0);
  // Without a TTL nothing is swept, whatever the age.
  Reopen();
  clock_.Advance(100 * kTtl);
  auto r = files_->Sweep();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->removed, 0u);
  EXPECT_EQ(r->examined, 0u);
}

TEST_F(AttachmentStoreTest, DeletedAndDroppedMessagesReleaseTheirAttachment) {
  constexpr int64_t kTtl = 3'600'000;
  Reopen(1 << 20, 4, 0, 0, kTtl);
  const UserId alice = 1, bob = 2, carol = 3;
  auto a = Put("holiday photo", alice);
  ASSERT_TRUE(a.ok());
  store::Conversation with_bob = MakeGroup({alice, bob});
  store::Conversation with_carol = MakeGroup({alice, carol});
  const Seq first = CommitImage(with_bob.id, alice, MediaUrl(a->id));
  const Seq second = CommitImage(with_bob.id, alice, MediaUrl(a->id));
  const Seq to_carol = CommitImage(with_carol.id, alice, MediaUrl(a->id));
  EXPECT_EQ(Referencing(a->id), (std::vector<ConvId>{with_bob.id, with_carol.id})) << "each conversation once";

  // An edit keeps the attachment; deleting one of two messages keeps it for Bob.
  Rewrite(with_bob.id, first, /*edit=*/true);
  EXPECT_TRUE(files_->Authorize(a->id, bob).ok());
  Rewrite(with_bob.id, first);
  EXPECT_TRUE(files_->Authorize(a->id, bob).ok());
  EXPECT_TRUE(CheckSend(*meta_, bob, MediaUrl(a->id)).ok());
  // The last one in Bob's conversation: he can neither read nor forward it any more.
  Rewrite(with_bob.id, second);
  EXPECT_EQ(files_->Authorize(a->id, bob).status().code(), Code::kNotFound);
  EXPECT_EQ(CheckSend(*meta_, bob, MediaUrl(a->id)).code(), Code::kNotFound);
  EXPECT_EQ(Referencing(a->id), std::vector<ConvId>{with_carol.id});
  EXPECT_TRUE(files_->Authorize(a->id, carol).ok());

  // Retention dropping Carol's message releases the last reference.
  ASSERT_TRUE(meta_->DropHistoryBefore(with_carol.id, to_carol).ok());
  EXPECT_TRUE(files_->Authorize(a->id, carol).ok()) << "the message is still kept";
  ASSERT_TRUE(meta_->DropHistoryBefore(with_carol.id, to_carol + 1).ok());
  EXPECT_EQ(files_->Authorize(a->id, carol).status().code(), Code::kNotFound);
  EXPECT_TRUE(Referencing(a->id).empty());
  EXPECT_TRUE(files_->Authorize(a->id, alice).ok()) << "the uploader keeps it until the sweep";

  // Unreferenced now: it goes a TTL after its last use, like an upload never sent.
  clock_.Advance(kTtl + 1);
  auto r = files_->Sweep();
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->removed, 1u);
  EXPECT_EQ(meta_->GetAttachment(a->id).status().code(), Code::kNotFound);
  EXPECT_FALSE(fs::exists(files_->PathOf(a->id)));

  // A message that names a gone attachment is deleted without trouble.
  store::Conversation later = MakeGroup({alice, bob});
  auto b = Put("kept", alice);
  ASSERT_TRUE(b.ok());
  const Seq kept = CommitImage(later.id, alice, MediaUrl(b->id));
  ReopenStore();
  EXPECT_EQ(Referencing(b->id), std::vector<ConvId>{later.id}) << "references survive a reopen";
  Rewrite(later.id, kept);
  EXPECT_TRUE(Referencing(b->id).empty());
}

TEST_F(AttachmentStoreTest, PerConversationReferencesOfOlderStoresBecomePerMessageAtOpen) {
  const UserId alice = 1, bob = 2;
  auto a = Put("old photo", alice);
  auto gone = Put("photo of a deleted message", alice);
  ASSERT_TRUE(a.ok() && gone.ok());
  store::Conversation conv = MakeGroup({alice, bob});
  const Seq s1 = CommitImage(conv.id, alice, MediaUrl(a->id));
  CommitImage(conv.id, alice, "https://cdn.example/elsewhere.png");
  const Seq s3 = CommitImage(conv.id, alice, "https://chat.example" + MediaUrl(a->id));
  const Seq s4 = CommitImage(conv.id, alice, MediaUrl(gone->id));
  Rewrite(conv.id, s4);
  ReopenStore();
  files_.reset();
  meta_.reset();
  {
    // Rewrite the references as a store from before per-message references held them:
    // one 'A' digest conv key per conversation (kept also for the deleted message's
    // attachment: references were never removed), no 'B' keys, no version marker.
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {{store::RocksStore::kMetaCf, {}},
                                                        {store::RocksStore::kMessagesCf, {}},
                                                        {store::RocksStore::kDedupCf, {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> h;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), root_ + "/store", cfs, &h, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    rocksdb::WriteBatch wb;
    size_t removed = 0;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), h[0]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const char tag = it->key()[0];
      if (tag == 'A' || tag == 'B' || tag == '!') {
        wb.Delete(h[0], it->key());
        ++removed;
      }
    }
    EXPECT_EQ(removed, 2u * 2 + 1) << "two references, each both ways, and the marker";
    for (const std::string* digest : {&a->id, &gone->id}) {
      std::string legacy = "A" + *digest;
      for (int i = 7; i >= 0; --i) legacy.push_back(static_cast<char>(conv.id >> (8 * i)));
      wb.Put(h[0], legacy, "");
    }
    ASSERT_TRUE(db->Write(rocksdb::WriteOptions(), &wb).ok());
    it.reset();
    for (auto* ch : h) db->DestroyColumnFamilyHandle(ch);
    ASSERT_TRUE(db->Close().ok());
  }
  ReopenStore();
  EXPECT_EQ(Referencing(a->id), std::vector<ConvId>{conv.id});
  EXPECT_TRUE(files_->Authorize(a->id, bob).ok());
  EXPECT_TRUE(Referencing(gone->id).empty()) << "the deleted message's reference is not carried over";
  EXPECT_EQ(files_->Authorize(gone->id, bob).status().code(), Code::kNotFound);
  // Per message now: both messages naming `a` hold it, and deleting them releases it.
  Rewrite(conv.id, s1);
  EXPECT_TRUE(files_->Authorize(a->id, bob).ok());
  Rewrite(conv.id, s3);
  EXPECT_EQ(files_->Authorize(a->id, bob).status().code(), Code::kNotFound);
  // Migrated once: a second open finds the marker and changes nothing.
  ReopenStore();
  EXPECT_TRUE(Referencing(a->id).empty());
}

TEST_F(AttachmentStoreTest, ListAttachmentsPagesInIdOrder) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    auto a = Put("bytes " + std::to_string(i), 1);
    ASSERT_TRUE(a.ok());
    ids.push_back(a->id);
  }
  std::sort(ids.begin(), ids.end());
  std::vector<std::string> seen;
  std::string after;
  for (;;) {
    auto page = meta_->ListAttachments(after, 2);
    ASSERT_TRUE(page.ok()) << page.status().message();
    for (const auto& a : *page) seen.push_back(a.id);
    if (page->size() < 2) break;
    after = page->back().id;
  }
  EXPECT_EQ(seen, ids);
}

}  // namespace
}  // namespace sb::attachments
