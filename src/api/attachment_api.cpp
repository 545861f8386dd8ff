#include "api/attachment_api.h"

#include <algorithm>
#include <optional>

#include "attachments/attachment_id.h"
#include "base/json_writer.h"
#include "base/log.h"
#include "protocol/server_frames.h"

namespace sb::api {

AttachmentApi::Route AttachmentApi::Match(std::string_view method, std::string_view path) {
  auto seg = PathSegments(path);
  if (seg.size() < 2 || seg[0] != "v1" || seg[1] != "attachments") return Route::kNone;
  if (seg.size() == 2 && method == "POST") return Route::kUpload;
  // Deeper paths too (a decoded "%2F" in an id): they get the 404 of an unknown id.
  if (seg.size() >= 3 && (method == "GET" || method == "HEAD")) return Route::kDownload;
  return Route::kNone;
}

HttpResponse AttachmentApi::ErrorAnswer(const Status& s) {
  HttpResponse r;
  r.status = HttpStatusFor(s.code());
  r.body = protocol::ErrorBody(s);
  return r;
}

Result<UserId> AttachmentApi::Authenticate(std::string_view authorization) const {
  std::string_view tok = BearerToken(authorization);
  if (tok.empty()) return Unauthorized("missing bearer token");
  auto claims = tokens_.Verify(tok);
  if (!claims.ok()) return claims.status();
  if (revoked_.IsRevoked(*claims)) return Unauthorized("token revoked (device logged out)");
  return claims->user;
}

Result<AttachmentApi::Upload> AttachmentApi::BeginUpload(UserId user, std::string_view content_type,
                                                         std::optional<uint64_t> content_length,
                                                         int64_t* retry_after_s) {
  Upload up;
  up.user = user;
  if (content_type.empty()) {
    up.content_type = "application/octet-stream";
  } else {
    auto ct = attachments::NormalizeContentType(content_type);
    if (!ct) return BadRequest("Content-Type must be a media type such as image/png");
    up.content_type = std::move(*ct);
  }
  if (content_length) {
    if (*content_length == 0) return BadRequest("the attachment is empty");
    if (*content_length > max_bytes())
      return TooLarge("attachments are limited to " + std::to_string(max_bytes()) + " bytes");
  }
  auto file = files_.StartUpload(user, content_length, retry_after_s);
  if (!file.ok()) return file.status();
  up.file = std::move(*file);
  return up;
}

HttpResponse AttachmentApi::FinishUpload(Upload& up) {
  auto stored = up.file->Finish(up.user, up.content_type);
  if (!stored.ok()) return ErrorAnswer(stored.status());
  LOG_INFO("attachment_uploaded")
      .Kv("user", FormatUserId(up.user))
      .Kv("attachment", attachments::FormatAttachmentId(stored->id))
      .Kv("bytes", stored->size);
  JsonWriter w;
  w.BeginObject()
      .Field("attachment_id", attachments::FormatAttachmentId(stored->id))
      .Field("media_url", attachments::MediaUrl(stored->id))
      .Field("content_type", stored->content_type)
      .Field("size", static_cast<int64_t>(stored->size))
      .EndObject();
  HttpResponse r;
  r.status = 201;
  r.body = std::move(w).Take();
  return r;
}

Result<AttachmentApi::Download> AttachmentApi::OpenDownload(UserId user, std::string_view path) {
  auto seg = PathSegments(path);
  if (seg.size() != 3) return NotFound("no such attachment");
  // The id is validated before anything touches the store or the filesystem.
  auto digest = attachments::ParseAttachmentId(seg[2]);
  if (!digest) return NotFound("no such attachment");
  auto meta = files_.Authorize(*digest, user);
  if (!meta.ok()) return meta.status();
  auto opened = files_.OpenBlob(*digest);
  if (!opened.ok()) return opened.status();
  Download d;
  d.file = std::move(opened->file);
  const std::string& ct = opened->meta.content_type;
  d.headers.emplace_back("Content-Type", ct);
  d.headers.emplace_back("Cache-Control", "private");
  d.headers.emplace_back("X-Content-Type-Options", "nosniff");
  // Never a document of this origin: no script, no plugins, even if opened directly.
  d.headers.emplace_back("Content-Security-Policy", "default-src 'none'; sandbox");
  if (!attachments::IsInlineImage(ct)) d.headers.emplace_back("Content-Disposition", "attachment");
  d.etag = "\"" + attachments::DigestHex(opened->meta.id) + "\"";
  d.headers.emplace_back("ETag", d.etag);
  d.headers.emplace_back("Accept-Ranges", "bytes");
  return d;
}

namespace {

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Digits only, no sign, no overflow.
std::optional<uint64_t> ParseDecimal(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

// If-None-Match: "*" or a list of entity tags, weak ones compared weakly (§13.1.2).
bool NoneMatchNames(std::string_view header, std::string_view etag) {
  size_t pos = 0;
  while (pos <= header.size()) {
    size_t comma = header.find(',', pos);
    if (comma == std::string_view::npos) comma = header.size();
    std::string_view tag = TrimOws(header.substr(pos, comma - pos));
    if (tag == "*") return true;
    if (tag.substr(0, 2) == "W/") tag.remove_prefix(2);
    if (!tag.empty() && tag == etag) return true;
    pos = comma + 1;
  }
  return false;
}

}  // namespace

AttachmentApi::Plan AttachmentApi::PlanDownload(std::string_view range, std::string_view if_range,
                                                std::string_view if_none_match, std::string_view etag,
                                                uint64_t size) {
  Plan p;
  if (!if_none_match.empty() && NoneMatchNames(if_none_match, etag)) {
    p.kind = Plan::kNotModified;
    return p;
  }
  range = TrimOws(range);
  constexpr std::string_view kUnit = "bytes=";
  if (range.size() <= kUnit.size()) return p;
  for (size_t i = 0; i < kUnit.size(); ++i)  // the unit is case-insensitive
    if ((range[i] | 0x20) != kUnit[i] && range[i] != kUnit[i]) return p;
  if (!if_range.empty() && TrimOws(if_range) != etag) return p;  // changed, or a date
  std::string_view spec = TrimOws(range.substr(kUnit.size()));
  if (spec.find(',') != std::string_view::npos) return p;  // several ranges: all of it
  size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return p;
  std::string_view a = TrimOws(spec.substr(0, dash)), b = TrimOws(spec.substr(dash + 1));
  if (a.empty()) {  // the last N bytes
    auto n = ParseDecimal(b);
    if (!n) return p;
    if (*n == 0 || size == 0) {
      p.kind = Plan::kUnsatisfiable;
      return p;
    }
    p.kind = Plan::kPartial;
    p.first = size - std::min(*n, size);
    p.last = size - 1;
    return p;
  }
  auto first = ParseDecimal(a);
  if (!first) return p;
  std::optional<uint64_t> last;
  if (!b.empty()) {
    last = ParseDecimal(b);
    if (!last || *last < *first) return p;  // invalid: ignored, all of it
  }
  if (*first >= size) {
    p.kind = Plan::kUnsatisfiable;
    return p;
  }
  p.kind = Plan::kPartial;
  p.first = *first;
  p.last = std::min(last.value_or(size - 1), size - 1);
  return p;
}

}  // namespace sb::api
