// Attachment identifiers and URLs.
//
// An attachment is named by the SHA-256 of its bytes. Inside the server (store keys,
// file names) the id is the raw 32-byte digest; on the wire it is `att_` followed by
// the digest as 64 lowercase hex digits, and its URL is `/v1/attachments/att_<hex>`.
// Parsing is strict (exactly that shape, lowercase only): anything else is "no such
// attachment", and no client string is ever turned into a path without passing here.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace sb::attachments {

inline constexpr size_t kDigestBytes = 32;
inline constexpr std::string_view kIdPrefix = "att_";
inline constexpr std::string_view kUrlPrefix = "/v1/attachments/";

// Raw 32-byte digest -> "att_<64 hex>".
std::string FormatAttachmentId(std::string_view digest);
// "att_<64 lowercase hex>" -> raw 32-byte digest; nullopt for anything else.
std::optional<std::string> ParseAttachmentId(std::string_view id);
// Raw digest -> 64 lowercase hex digits (file names).
std::string DigestHex(std::string_view digest);
// "/v1/attachments/att_<hex>".
std::string MediaUrl(std::string_view digest);

// What a message's media_url points at.
struct MediaRef {
  enum class Kind {
    kExternal,   // not one of our attachment URLs (e.g. https://cdn.example/a.png)
    kOurs,       // /v1/attachments/<valid id>, possibly after scheme://host; digest set
    kMalformed,  // looks like ours (/v1/attachments/...) but the id is not valid
  };
  Kind kind = Kind::kExternal;
  std::string digest;  // raw 32 bytes when kOurs
};
// Recognises "/v1/attachments/<id>" and "<scheme>://<host>/v1/attachments/<id>" (any
// host: the server does not know the name clients reach it by). No query or fragment
// is allowed after the id.
MediaRef ParseMediaUrl(std::string_view url);

// A sane media type: `type/subtype` (RFC 9110 tokens, at most 127 bytes each), then
// optional `; name=value` parameters with token values; at most 255 bytes in all.
// Returns the normalised form (type and subtype in lower case, parameters as
// "; name=value"), or nullopt.
std::optional<std::string> NormalizeContentType(std::string_view ct);

// Served inline (an image a browser may show): image/* except SVG (which can carry
// script). Everything else is served with Content-Disposition: attachment.
bool IsInlineImage(std::string_view normalized_content_type);

}  // namespace sb::attachments
