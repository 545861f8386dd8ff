// POST /v1/attachments and GET /v1/attachments/{id}: everything but the byte
// streaming, which the gateway does (it reads an upload's body in chunks and feeds
// them to the upload, and writes a download from the open file in chunks), so that
// no attachment is ever held whole in memory. No Beast here.
//
// Order of an upload: Authenticate (from the head, before any body byte is read),
// BeginUpload (head checks: content type, declared length, capacity), the body
// chunk by chunk into Upload::file->Append, then FinishUpload on a blocking thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/http_types.h"
#include "attachments/attachment_store.h"
#include "auth/revocations.h"
#include "auth/tokens.h"
#include "base/status.h"

namespace sb::api {

class AttachmentApi {
 public:
  AttachmentApi(attachments::AttachmentStore& files, const auth::TokenService& tokens,
                const auth::Revocations& revoked)
      : files_(files), tokens_(tokens), revoked_(revoked) {}

  enum class Route { kNone, kUpload, kDownload };
  // The streamed route a request names: `path` is decoded and without the query.
  static Route Match(std::string_view method, std::string_view path);

  // The user of an `Authorization: Bearer` value (signature, expiry, revocation), or
  // kUnauthorized.
  Result<UserId> Authenticate(std::string_view authorization) const;

  struct Upload {
    std::unique_ptr<attachments::AttachmentStore::Upload> file;
    std::string content_type;  // normalised
    UserId user = 0;
  };
  // Checks made on the head alone: a sane Content-Type (absent: application/
  // octet-stream; otherwise kBadRequest), a declared length within the limit
  // (kTooLarge), a free upload slot and disk space (kUnavailable), the user's daily
  // upload quota (kRateLimited, with the seconds until it allows this upload in
  // *retry_after_s). Creates the temp file.
  Result<Upload> BeginUpload(UserId user, std::string_view content_type,
                             std::optional<uint64_t> content_length, int64_t* retry_after_s = nullptr);
  // Blocking (fsync, rename, store write): 201 {attachment_id, media_url,
  // content_type, size}, or the error answer. The temp file is gone either way once
  // `up` is destroyed.
  HttpResponse FinishUpload(Upload& up);

  struct Download {
    attachments::BlobFile file;
    // Content-Type and the rest of the response head (without Content-Length).
    std::vector<std::pair<std::string, std::string>> headers;
    std::string etag;  // as sent: the digest in double quotes
  };
  // Blocking (store reads, open). kNotFound for a malformed id, an unknown one and one
  // the user may not read, alike.
  Result<Download> OpenDownload(UserId user, std::string_view path);

  uint64_t max_bytes() const { return files_.options().max_bytes; }

  // The contract's JSON error answer for `s`.
  static HttpResponse ErrorAnswer(const Status& s);

  // What a download answers, from its conditional and range headers (RFC 9110 §13,
  // §14): kNotModified (304) when If-None-Match names the ETag (or is "*"); kPartial
  // (206) with the bytes [first, last] for one satisfiable `bytes=` range;
  // kUnsatisfiable (416) for one that starts past the end; kWhole (200) otherwise:
  // no Range, another unit, several ranges, bad syntax, or an If-Range that is not
  // the current ETag (strong comparison; a date never matches, as no Last-Modified
  // is sent).
  struct Plan {
    enum Kind { kWhole, kPartial, kUnsatisfiable, kNotModified } kind = kWhole;
    uint64_t first = 0, last = 0;  // kPartial: inclusive
  };
  static Plan PlanDownload(std::string_view range, std::string_view if_range, std::string_view if_none_match,
                           std::string_view etag, uint64_t size);

 private:
  attachments::AttachmentStore& files_;
  const auth::TokenService& tokens_;
  const auth::Revocations& revoked_;
};

}  // namespace sb::api
