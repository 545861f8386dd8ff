// A read-only JSON value for tests and tools: parse once (simdjson DOM, kept out of
// this header so including it stays cheap), then walk with operator[] and read typed
// values as std::optional, so a missing field and a wrong type both show up as
// "nullopt" in a gtest failure instead of a crash or an exception.
//
//   Json j = Json::Parse(frame);
//   EXPECT_EQ(j["event"].Str(), "message_ack");
//   EXPECT_EQ(j["seq"].Int(), 3);
//   for (const Json& m : j["messages"].Items()) ...
//
// A Json is a cheap handle: it shares the parsed tree (immutable, so copies may be
// used from any thread) and points at one node of it. Lookups that miss return an
// invalid handle whose Path() still says what was asked for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sb::client {

struct JsonNode;

class Json {
 public:
  Json() = default;

  // Never throws. On bad input the result is !valid() and error() says why.
  static Json Parse(std::string_view text);
  // An invalid handle that carries a reason, for APIs that return "no value" and want
  // failure messages to say why (e.g. "timeout after 5000 ms waiting for message_ack").
  static Json None(std::string why);

  // True when this handle points at a node (the document parsed and the path exists).
  bool valid() const { return node_ != nullptr; }
  explicit operator bool() const { return valid(); }
  // Why there is no value: Parse's error or None's reason (empty otherwise).
  const std::string& error() const { return error_; }
  // Where this handle points, e.g. "messages[3].seq"; for failure messages.
  const std::string& Path() const { return path_; }

  // Object member / array element; invalid handle when absent or of the wrong kind.
  // For duplicate keys the first one wins.
  Json operator[](std::string_view key) const;
  Json operator[](size_t index) const;
  Json operator[](int index) const { return (*this)[static_cast<size_t>(index)]; }
  bool Has(std::string_view key) const { return (*this)[key].valid(); }

  bool IsNull() const;
  bool IsBool() const;
  bool IsNumber() const;
  bool IsInt() const;  // an integer that fits int64
  bool IsString() const;
  bool IsArray() const;
  bool IsObject() const;

  // Typed reads: nullopt when absent or of another type. Int() accepts only integers
  // (not 3.0), because the contract's numbers are integers and a float there is a bug.
  std::optional<std::string> Str() const;
  std::optional<int64_t> Int() const;
  std::optional<uint64_t> Uint() const;
  std::optional<double> Double() const;
  std::optional<bool> Bool() const;

  // Shorthands for tools that prefer a default to an optional.
  std::string StrOr(std::string_view fallback) const;
  int64_t IntOr(int64_t fallback) const;

  // Elements of an array or members of an object; 0 for anything else.
  size_t Size() const;
  // Array elements (empty for non-arrays).
  std::vector<Json> Items() const;
  // Object keys in document order (empty for non-objects).
  std::vector<std::string> Keys() const;

  // Compact JSON text of this node, for failure messages and comparisons. When
  // !valid(): "<missing: path>", "<invalid json: ...>" or "<reason given to None>".
  std::string Dump() const;

 private:
  Json(std::shared_ptr<const JsonNode> root, const JsonNode* node, std::string path)
      : root_(std::move(root)), node_(node), path_(std::move(path)) {}

  std::shared_ptr<const JsonNode> root_;
  const JsonNode* node_ = nullptr;
  std::string path_;
  std::string error_;
};

// Prints Dump(), so EXPECT_* messages show the JSON.
std::ostream& operator<<(std::ostream& os, const Json& j);

}  // namespace sb::client
