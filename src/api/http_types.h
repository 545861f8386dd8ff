// Plain HTTP request/response types, so that REST handlers compile without Beast.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sb::api {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // decoded path, no query
  std::vector<std::pair<std::string, std::string>> query;  // decoded
  std::string authorization;
  std::string content_type;
  std::string body;
  std::string remote;  // peer address

  // First value of a query parameter, or nullptr.
  const std::string* Query(std::string_view key) const {
    for (auto& [k, v] : query)
      if (k == key) return &v;
    return nullptr;
  }
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// Splits "a=1&b=x%20y" into decoded pairs. Malformed escapes are kept literally.
std::vector<std::pair<std::string, std::string>> ParseQuery(std::string_view q);
std::string PercentDecode(std::string_view s);
// Non-empty segments of a path: "/v1/a//b" -> {"v1", "a", "b"} (views into `path`).
std::vector<std::string_view> PathSegments(std::string_view path);
// The token of an "Authorization: Bearer <token>" header value, or empty.
std::string_view BearerToken(std::string_view authorization);

}  // namespace sb::api
