// Fixed-width big-endian integers and key-range helpers shared by the embedded store's
// files (rocks_store.cpp, rocks_delivery.cpp, rocks_attachments.cpp). Big-endian so that
// bytewise key order is numeric order (range scans by seq, by conversation, ...).
#pragma once

#include <cstdint>
#include <string>

namespace sb::store::rocks_codec {

// Tags of the delivery state in the meta column family (rocks_delivery.cpp): rewritten
// with every message, so the meta memtable keeps an insert hint for them
// (rocks_store.cpp, MetaInsertHint). Never the first key of a DeleteRange (see there).
inline constexpr char kReceiptTag = 'R';  // 'R' conv(8) user(8)
inline constexpr char kCursorTag = 'D';   // 'D' user(8) len(1) device conv(8)
inline constexpr char kSummaryTag = 'L';  // 'L' conv(8)

inline void PutFixed64(std::string* out, uint64_t v) {
  char buf[8];
  for (int i = 7; i >= 0; --i) {
    buf[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  out->append(buf, 8);
}

inline uint64_t GetFixed64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

// The smallest key greater than every key starting with `prefix` (an exclusive upper
// bound for a prefix scan).
inline std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty() && static_cast<uint8_t>(prefix.back()) == 0xff) prefix.pop_back();
  if (!prefix.empty()) prefix.back() = static_cast<char>(static_cast<uint8_t>(prefix.back()) + 1);
  return prefix;
}

}  // namespace sb::store::rocks_codec
