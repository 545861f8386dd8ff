#pragma once

#include <string>
#include <string_view>

namespace sb {

// The longest prefix of valid UTF-8 `s` that is at most max_bytes long and does not
// cut a code point in half (so it can be echoed into JSON safely).
inline std::string TruncateUtf8(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return std::string(s);
  size_t n = max_bytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return std::string(s.substr(0, n));
}

// Strict UTF-8 validation (no overlongs, no surrogates, max U+10FFFF).
bool IsValidUtf8(std::string_view s);

}  // namespace sb
