#include "store/store.h"

namespace sb::store {

std::string_view ConvTypeName(ConvType t) {
  switch (t) {
    case ConvType::kDirect: return "direct";
    case ConvType::kGroup: return "group";
  }
  // Only reachable through a cast of a bad byte; callers validate before that.
  return "unknown";
}

std::string_view ContentTypeName(ContentType t) {
  switch (t) {
    case ContentType::kText: return "text";
    case ContentType::kImage: return "image";
    case ContentType::kFile: return "file";
    case ContentType::kReaction: return "reaction";
    case ContentType::kEdit: return "edit";
    case ContentType::kDelete: return "delete";
  }
  return "unknown";
}

std::optional<ContentType> ParseContentType(std::string_view s) {
  // Exact, case-sensitive: the wire contract spells them in lowercase only.
  static constexpr ContentType kAll[] = {ContentType::kText,     ContentType::kImage,
                                         ContentType::kFile,     ContentType::kReaction,
                                         ContentType::kEdit,     ContentType::kDelete};
  for (ContentType t : kAll)
    if (ContentTypeName(t) == s) return t;
  return std::nullopt;
}

}  // namespace sb::store
