#include "base/json_writer.h"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "base/ids.h"

namespace sb {

void JsonWriter::Sep() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (depth_ == 0) return;
  if (depth_ > 64) {
    if (deep_.back()) out_.push_back(',');
    deep_.back() = true;
    return;
  }
  if (has_elem_ & 1) out_.push_back(',');
  has_elem_ |= 1;
}

void JsonWriter::Push() {
  if (depth_ >= 64) {
    deep_.push_back(false);
  } else {
    has_elem_ <<= 1;
  }
  ++depth_;
}

void JsonWriter::Pop() {
  if (depth_ == 0) return;
  if (depth_ > 64) {
    deep_.pop_back();
  } else {
    has_elem_ >>= 1;
  }
  --depth_;
}

JsonWriter& JsonWriter::BeginObject() {
  Sep();
  out_.push_back('{');
  Push();
  return *this;
}
JsonWriter& JsonWriter::EndObject() {
  out_.push_back('}');
  Pop();
  return *this;
}
JsonWriter& JsonWriter::BeginArray() {
  Sep();
  out_.push_back('[');
  Push();
  return *this;
}
JsonWriter& JsonWriter::EndArray() {
  out_.push_back(']');
  Pop();
  return *this;
}
JsonWriter& JsonWriter::Key(KeyName k) {
  Sep();
  if (k.literal()) {
    const std::string_view v = k.view();
    const size_t at = out_.size();
    out_.resize(at + v.size() + 3);
    char* p = out_.data() + at;
    *p++ = '"';
    std::memcpy(p, v.data(), v.size());
    p += v.size();
    *p++ = '"';
    *p = ':';
  } else {
    Escape(out_, k.view());
    out_.push_back(':');
  }
  after_key_ = true;
  return *this;
}

JsonWriter& JsonWriter::String(std::string_view v) {
  Sep();
  Escape(out_, v);
  return *this;
}
JsonWriter& JsonWriter::Int(int64_t v) {
  Sep();
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out_.append(buf, r.ptr);
  return *this;
}
JsonWriter& JsonWriter::Uint(uint64_t v) {
  Sep();
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out_.append(buf, r.ptr);
  return *this;
}
JsonWriter& JsonWriter::Bool(bool v) {
  Sep();
  out_ += v ? "true" : "false";
  return *this;
}
JsonWriter& JsonWriter::Null() {
  Sep();
  out_ += "null";
  return *this;
}
JsonWriter& JsonWriter::Raw(std::string_view json) {
  Sep();
  out_ += json;
  return *this;
}

namespace {
constexpr char kHexDigits[] = "0123456789abcdef";

// `prefix` and the 16 hex digits of each value, quoted (the id formats of base/ids.h;
// none of it needs escaping).
void QuotedHexId(std::string& out, std::string_view prefix, uint64_t a) {
  out.push_back('"');
  out.append(prefix);
  AppendHex16(out, a);
  out.push_back('"');
}

// Does any of the eight bytes of `x` need escaping (< 0x20, '"' or '\\')? Exact for
// "any": the classic has-zero-byte test on x (bytes below 0x20) and on x with each
// special byte XORed away.
inline bool ChunkNeedsEscape(uint64_t x) {
  constexpr uint64_t k01 = 0x0101010101010101ull, k80 = 0x8080808080808080ull;
  const uint64_t q = x ^ (k01 * '"');
  const uint64_t b = x ^ (k01 * '\\');
  return (((x - k01 * 0x20) & ~x) | ((q - k01) & ~q) | ((b - k01) & ~b)) & k80;
}

inline bool NeedsEscape(unsigned char c) { return c < 0x20 || c == '"' || c == '\\'; }
}  // namespace

JsonWriter& JsonWriter::UserId(uint64_t id) {
  Sep();
  QuotedHexId(out_, "usr_", id);
  return *this;
}
JsonWriter& JsonWriter::ConvId(uint64_t id) {
  Sep();
  QuotedHexId(out_, "conv_", id);
  return *this;
}
JsonWriter& JsonWriter::MessageId(uint64_t conv, uint64_t seq) {
  Sep();
  out_.append("\"srv_msg_");
  AppendHex16(out_, conv);
  AppendHex16(out_, seq);
  out_.push_back('"');
  return *this;
}

void JsonWriter::Escape(std::string& out, std::string_view v) {
  out.reserve(out.size() + v.size() + 2);
  out.push_back('"');
  const char* p = v.data();
  const size_t n = v.size();
  size_t run = 0;  // start of the current run of bytes that need no escaping
  size_t i = 0;
  bool tail_checked = false;  // the tail (< 8 bytes) needs escaping: byte by byte from here
  while (i < n) {
    if (n - i >= 8) {
      uint64_t x;
      std::memcpy(&x, p + i, 8);
      if (!ChunkNeedsEscape(x)) {
        i += 8;
        continue;
      }
    } else if (!tail_checked) {
      // The tail (most keys are shorter than 8 bytes), padded with a clean byte.
      uint64_t x = 0x6161616161616161ull;
      std::memcpy(&x, p + i, n - i);
      if (!ChunkNeedsEscape(x)) break;
      tail_checked = true;
    }
    const auto c = static_cast<unsigned char>(p[i]);
    if (!NeedsEscape(c)) {
      ++i;
      continue;
    }
    out.append(p + run, i - run);
    run = ++i;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default: {
        const char u[6] = {'\\', 'u', '0', '0', kHexDigits[c >> 4], kHexDigits[c & 0xf]};
        out.append(u, 6);
      }
    }
  }
  out.append(p + run, n - run);
  out.push_back('"');
}

}  // namespace sb
