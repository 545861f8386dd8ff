// The web client's files (web/ in the source tree), compiled into the binary by
// cmake/embed_web.cmake, so the server needs nothing beside itself to serve them.
#pragma once

#include <string_view>

namespace sb::api {

struct WebAsset {
  std::string_view path;  // "/", "/app.js", ...
  std::string_view content_type;
  std::string_view body;
};

// The asset served at `path`, or nullptr.
const WebAsset* FindWebAsset(std::string_view path);

}  // namespace sb::api
