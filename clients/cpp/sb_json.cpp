#include "sb_json.h"

#include <simdjson.h>

#include <charconv>
#include <limits>
#include <ostream>

#include "base/json_writer.h"

namespace sb::client {

// The parsed tree is copied out of simdjson's tape so a Json does not pin a parser
// (parsers are reused per thread and would otherwise be overwritten by the next Parse).
struct JsonNode {
  enum class Kind : uint8_t { kNull, kBool, kInt, kUint, kDouble, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool b = false;
  int64_t i = 0;
  uint64_t u = 0;
  double d = 0;
  std::string s;
  std::vector<JsonNode> arr;
  std::vector<std::pair<std::string, JsonNode>> obj;
};

namespace {

using Kind = JsonNode::Kind;

void Convert(simdjson::dom::element e, JsonNode* out) {
  using T = simdjson::dom::element_type;
  switch (e.type()) {
    case T::ARRAY: {
      out->kind = Kind::kArray;
      // Named, not a temporary in the range-for: g++ 12 flags the latter as dangling.
      simdjson::dom::array a;
      if (e.get_array().get(a)) break;
      for (simdjson::dom::element child : a) {
        out->arr.emplace_back();
        Convert(child, &out->arr.back());
      }
      break;
    }
    case T::OBJECT: {
      out->kind = Kind::kObject;
      simdjson::dom::object o;
      if (e.get_object().get(o)) break;
      for (simdjson::dom::key_value_pair kv : o) {
        out->obj.emplace_back(std::string(kv.key), JsonNode{});
        Convert(kv.value, &out->obj.back().second);
      }
      break;
    }
    case T::INT64:
      out->kind = Kind::kInt;
      out->i = e.get_int64().value_unsafe();
      break;
    case T::UINT64:
      // simdjson reports UINT64 only above INT64_MAX.
      out->kind = Kind::kUint;
      out->u = e.get_uint64().value_unsafe();
      break;
    case T::DOUBLE:
      out->kind = Kind::kDouble;
      out->d = e.get_double().value_unsafe();
      break;
    case T::STRING:
      out->kind = Kind::kString;
      out->s = std::string(e.get_string().value_unsafe());
      break;
    case T::BOOL:
      out->kind = Kind::kBool;
      out->b = e.get_bool().value_unsafe();
      break;
    case T::NULL_VALUE:
      out->kind = Kind::kNull;
      break;
  }
}

void Write(const JsonNode& n, JsonWriter& w) {
  switch (n.kind) {
    case Kind::kNull:
      w.Null();
      break;
    case Kind::kBool:
      w.Bool(n.b);
      break;
    case Kind::kInt:
      w.Int(n.i);
      break;
    case Kind::kUint:
      w.Uint(n.u);
      break;
    case Kind::kDouble: {
      char buf[32];
      auto r = std::to_chars(buf, buf + sizeof buf, n.d);
      w.Raw(std::string_view(buf, static_cast<size_t>(r.ptr - buf)));
      break;
    }
    case Kind::kString:
      w.String(n.s);
      break;
    case Kind::kArray:
      w.BeginArray();
      for (const auto& c : n.arr) Write(c, w);
      w.EndArray();
      break;
    case Kind::kObject:
      w.BeginObject();
      for (const auto& [k, v] : n.obj) {
        w.Key(k);
        Write(v, w);
      }
      w.EndObject();
      break;
  }
}

}  // namespace

Json Json::Parse(std::string_view text) {
  // One parser per thread: its buffers grow to the largest document seen and are reused.
  thread_local simdjson::dom::parser parser;
  Json bad;
  bad.path_ = "$";
  // simdjson needs SIMDJSON_PADDING readable bytes past the end; copy into a padded
  // buffer rather than trusting the caller's storage.
  simdjson::padded_string padded(text);
  simdjson::dom::element root;
  auto err = parser.parse(padded).get(root);
  if (err) {
    bad.error_ = std::string("invalid json: ") + simdjson::error_message(err);
    return bad;
  }
  auto tree = std::make_shared<JsonNode>();
  Convert(root, tree.get());
  const JsonNode* node = tree.get();
  return Json(std::move(tree), node, "$");
}

Json Json::None(std::string why) {
  Json j;
  j.path_ = "$";
  j.error_ = std::move(why);
  return j;
}

Json Json::operator[](std::string_view key) const {
  std::string path = path_ + "." + std::string(key);
  if (node_ && node_->kind == Kind::kObject) {
    for (const auto& [k, v] : node_->obj) {
      if (k == key) return Json(root_, &v, std::move(path));
    }
  }
  Json missing(root_, nullptr, std::move(path));
  missing.error_ = error_;  // a lookup below a failed wait still says why it failed
  return missing;
}

Json Json::operator[](size_t index) const {
  std::string path = path_ + "[" + std::to_string(index) + "]";
  if (node_ && node_->kind == Kind::kArray && index < node_->arr.size()) {
    return Json(root_, &node_->arr[index], std::move(path));
  }
  Json missing(root_, nullptr, std::move(path));
  missing.error_ = error_;
  return missing;
}

bool Json::IsNull() const { return node_ && node_->kind == Kind::kNull; }
bool Json::IsBool() const { return node_ && node_->kind == Kind::kBool; }
bool Json::IsNumber() const {
  return node_ &&
         (node_->kind == Kind::kInt || node_->kind == Kind::kUint || node_->kind == Kind::kDouble);
}
bool Json::IsInt() const { return node_ && node_->kind == Kind::kInt; }
bool Json::IsString() const { return node_ && node_->kind == Kind::kString; }
bool Json::IsArray() const { return node_ && node_->kind == Kind::kArray; }
bool Json::IsObject() const { return node_ && node_->kind == Kind::kObject; }

std::optional<std::string> Json::Str() const {
  if (!IsString()) return std::nullopt;
  return node_->s;
}

std::optional<int64_t> Json::Int() const {
  if (!IsInt()) return std::nullopt;
  return node_->i;
}

std::optional<uint64_t> Json::Uint() const {
  if (!node_) return std::nullopt;
  if (node_->kind == Kind::kUint) return node_->u;
  if (node_->kind == Kind::kInt && node_->i >= 0) return static_cast<uint64_t>(node_->i);
  return std::nullopt;
}

std::optional<double> Json::Double() const {
  if (!node_) return std::nullopt;
  switch (node_->kind) {
    case Kind::kDouble:
      return node_->d;
    case Kind::kInt:
      return static_cast<double>(node_->i);
    case Kind::kUint:
      return static_cast<double>(node_->u);
    default:
      return std::nullopt;
  }
}

std::optional<bool> Json::Bool() const {
  if (!IsBool()) return std::nullopt;
  return node_->b;
}

std::string Json::StrOr(std::string_view fallback) const {
  auto v = Str();
  return v ? *v : std::string(fallback);
}

int64_t Json::IntOr(int64_t fallback) const { return Int().value_or(fallback); }

size_t Json::Size() const {
  if (!node_) return 0;
  if (node_->kind == Kind::kArray) return node_->arr.size();
  if (node_->kind == Kind::kObject) return node_->obj.size();
  return 0;
}

std::vector<Json> Json::Items() const {
  std::vector<Json> out;
  if (!IsArray()) return out;
  out.reserve(node_->arr.size());
  for (size_t i = 0; i < node_->arr.size(); ++i) out.push_back((*this)[i]);
  return out;
}

std::vector<std::string> Json::Keys() const {
  std::vector<std::string> out;
  if (!IsObject()) return out;
  for (const auto& kv : node_->obj) out.push_back(kv.first);
  return out;
}

std::string Json::Dump() const {
  if (!node_) {
    if (!error_.empty()) return "<" + error_ + ">";
    return "<missing: " + path_ + ">";
  }
  JsonWriter w;
  Write(*node_, w);
  return std::move(w).Take();
}

std::ostream& operator<<(std::ostream& os, const Json& j) { return os << j.Dump(); }

}  // namespace sb::client
