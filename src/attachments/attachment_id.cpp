#include "attachments/attachment_id.h"

namespace sb::attachments {
namespace {

constexpr char kHex[] = "0123456789abcdef";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // upper case is not accepted: one spelling per id
}

// RFC 9110 tchar.
bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

bool IsToken(std::string_view s, size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s)
    if (!IsTokenChar(c)) return false;
  return true;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string DigestHex(std::string_view digest) {
  std::string out;
  out.reserve(digest.size() * 2);
  for (unsigned char c : digest) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

std::string FormatAttachmentId(std::string_view digest) { return std::string(kIdPrefix) + DigestHex(digest); }

std::optional<std::string> ParseAttachmentId(std::string_view id) {
  if (id.size() != kIdPrefix.size() + 2 * kDigestBytes || id.substr(0, kIdPrefix.size()) != kIdPrefix)
    return std::nullopt;
  std::string_view hex = id.substr(kIdPrefix.size());
  std::string out(kDigestBytes, '\0');
  for (size_t i = 0; i < kDigestBytes; ++i) {
    int h = HexValue(hex[2 * i]);
    int l = HexValue(hex[2 * i + 1]);
    if (h < 0 || l < 0) return std::nullopt;
    out[i] = static_cast<char>(h * 16 + l);
  }
  return out;
}

std::string MediaUrl(std::string_view digest) { return std::string(kUrlPrefix) + FormatAttachmentId(digest); }

MediaRef ParseMediaUrl(std::string_view url) {
  MediaRef r;
  std::string_view path = url;
  if (size_t p = url.find("://"); p != std::string_view::npos && p > 0) {
    // scheme://authority/path: the scheme must be a scheme, else it is not a URL we know.
    for (size_t i = 0; i < p; ++i) {
      char c = url[i];
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                (i > 0 && ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'));
      if (!ok) return r;
    }
    std::string_view rest = url.substr(p + 3);
    size_t slash = rest.find('/');
    if (slash == std::string_view::npos) return r;
    path = rest.substr(slash);
  }
  if (path.substr(0, kUrlPrefix.size()) != kUrlPrefix) {
    // "/v1/attachments" with nothing after it, or with "?..." : ours, but no id.
    std::string_view bare = kUrlPrefix.substr(0, kUrlPrefix.size() - 1);
    if (path.substr(0, bare.size()) == bare &&
        (path.size() == bare.size() || path[bare.size()] == '?' || path[bare.size()] == '#'))
      r.kind = MediaRef::Kind::kMalformed;
    return r;
  }
  auto digest = ParseAttachmentId(path.substr(kUrlPrefix.size()));
  if (!digest) {
    r.kind = MediaRef::Kind::kMalformed;
    return r;
  }
  r.kind = MediaRef::Kind::kOurs;
  r.digest = std::move(*digest);
  return r;
}

std::optional<std::string> NormalizeContentType(std::string_view ct) {
  ct = Trim(ct);
  if (ct.empty() || ct.size() > 255) return std::nullopt;
  size_t semi = ct.find(';');
  std::string_view media = Trim(ct.substr(0, semi));
  size_t slash = media.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  std::string_view type = media.substr(0, slash);
  std::string_view sub = media.substr(slash + 1);
  if (!IsToken(type, 127) || !IsToken(sub, 127)) return std::nullopt;
  std::string out = Lower(type) + "/" + Lower(sub);
  while (semi != std::string_view::npos) {
    std::string_view rest = ct.substr(semi + 1);
    size_t next = rest.find(';');
    std::string_view param = Trim(rest.substr(0, next));
    size_t eq = param.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    std::string_view name = param.substr(0, eq);
    std::string_view value = param.substr(eq + 1);
    if (!IsToken(name, 127) || !IsToken(value, 127)) return std::nullopt;
    out += "; " + Lower(name) + "=" + std::string(value);
    semi = next == std::string_view::npos ? std::string_view::npos : semi + 1 + next;
  }
  if (out.size() > 255) return std::nullopt;
  return out;
}

bool IsInlineImage(std::string_view ct) {
  std::string_view media = ct.substr(0, ct.find(';'));
  return media.substr(0, 6) == "image/" && media != "image/svg+xml";
}

}  // namespace sb::attachments
