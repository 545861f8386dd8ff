// A small, allocation-frugal JSON writer for the frames and REST bodies we emit.
// It writes straight into one std::string; commas are placed automatically.
//   JsonWriter w; w.BeginObject(); w.Key("event"); w.String("pong"); w.EndObject();
// Strings are escaped per RFC 8259; input must already be valid UTF-8 (everything we
// echo was validated on the way in). Frames are built on every message's path, so the
// writer allocates nothing but its output (the container stack is a bit mask), ids are
// formatted straight into it, and escaping skips eight clean bytes at a time.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sb {

class JsonWriter {
 public:
  JsonWriter() { out_.reserve(256); }
  explicit JsonWriter(size_t reserve) { out_.reserve(reserve); }

  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  // A key: a string literal is written as it is, checked at compile time (the escape
  // scan was most of a key's cost: ~300 instructions → ~130 with the comma logic, and
  // a frame has a dozen keys); anything else (a string_view, a std::string) is
  // escaped. A char pointer must say which it is: std::string_view(p).
  class KeyName {
   public:
    template <size_t N>
    consteval KeyName(const char (&literal)[N])  // NOLINT: implicit on purpose
        : s_(literal, N - 1), literal_(true) {
      for (size_t i = 0; i + 1 < N; ++i) {
        const auto c = static_cast<unsigned char>(literal[i]);
        // Not a constant expression: a literal key that needs escaping does not compile.
        if (c < 0x20 || c == '"' || c == '\\' || c == 0) throw "a literal JSON key must not need escaping";
      }
    }
    KeyName(std::string_view k) : s_(k) {}                                                                           // NOLINT
    KeyName(const std::string& k) : s_(k) {}                                                                         // NOLINT
    std::string_view view() const { return s_; }
    bool literal() const { return literal_; }

   private:
    std::string_view s_;
    bool literal_ = false;
  };
  JsonWriter& Key(KeyName k);
  JsonWriter& String(std::string_view v);
  JsonWriter& Int(int64_t v);
  JsonWriter& Uint(uint64_t v);
  JsonWriter& Bool(bool v);
  JsonWriter& Null();
  // Appends already-serialized JSON as one value.
  JsonWriter& Raw(std::string_view json);
  // Ids as strings, formatted in place (base/ids.h): "usr_<16 hex>", "conv_<16 hex>",
  // "srv_msg_<16 hex><16 hex>".
  JsonWriter& UserId(uint64_t id);
  JsonWriter& ConvId(uint64_t id);
  JsonWriter& MessageId(uint64_t conv, uint64_t seq);

  // Key + value in one call.
  JsonWriter& Field(KeyName k, std::string_view v) { return Key(k).String(v); }
  JsonWriter& Field(KeyName k, const char* v) { return Key(k).String(v); }
  JsonWriter& Field(KeyName k, const std::string& v) { return Key(k).String(v); }
  JsonWriter& Field(KeyName k, int64_t v) { return Key(k).Int(v); }
  JsonWriter& Field(KeyName k, uint64_t v) { return Key(k).Uint(v); }
  JsonWriter& Field(KeyName k, int v) { return Key(k).Int(v); }
  JsonWriter& Field(KeyName k, bool v) { return Key(k).Bool(v); }

  const std::string& str() const& { return out_; }
  std::string Take() && { return std::move(out_); }
  std::string Take() & { return std::move(out_); }

  static void Escape(std::string& out, std::string_view v);

 private:
  void Sep();
  void Push();
  void Pop();
  std::string out_;
  // One bit per open container, innermost lowest: does it already hold an element?
  // Containers nested deeper than 64 keep their bits in `deep_` (nothing we write is).
  uint64_t has_elem_ = 0;
  uint32_t depth_ = 0;
  std::vector<bool> deep_;
  bool after_key_ = false;
};

}  // namespace sb
