// Configuration of `switchboard serve`. Every setting has a dotted key
// (section.name). Precedence, lowest to highest: built-in defaults, the TOML file
// (--config), environment variables SWITCHBOARD_<SECTION>_<NAME> (upper case), then
// command-line flags (--listen, --data-dir, --set key=value).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "auth/password.h"
#include "auth/tokens.h"
#include "base/status.h"
#include "protocol/limits.h"

namespace sb::server {

struct Config {
  std::string listen = "127.0.0.1:8080";
  std::string node_id;  // default: host name
  unsigned shards = 0;  // 0: one per core
  unsigned rest_threads = 2;
  int64_t handshake_timeout_ms = 10000;
  int64_t idle_timeout_ms = 60000;
  size_t max_header_bytes = 8192;
  int64_t drain_timeout_ms = 10000;
  std::string allowed_origins;  // comma-separated; empty: same origin only
  double connects_per_ip_per_s = 50;
  size_t max_connections_per_user = 32;

  std::string data_dir = "./data";
  std::string fsync = "always";  // always | none
  size_t cache_mb = 256;

  auth::TokenConfig token;
  auth::PasswordParams password;

  protocol::Limits limits;
  int64_t presence_ttl_ms = 30000;
  int64_t presence_grace_ms = 5000;
  int64_t typing_ttl_ms = 6000;
  size_t max_presence_subscriptions = 500;
  std::string log_level = "info";
};

struct KeyInfo {
  std::string key;
  std::string help;
  std::string default_value;
};

// Every settable key with its help text and default, for --help and the docs.
std::vector<KeyInfo> ConfigKeys();
// Sets one key from its string form. kBadRequest names the key and the problem.
Status SetConfigKey(Config& c, std::string_view key, std::string_view value);
// Applies a TOML file.
Status LoadConfigFile(Config& c, const std::string& path);
// Applies SWITCHBOARD_* environment variables.
Status ApplyEnvironment(Config& c, char** envp);
// Checks cross-field constraints after everything is applied.
Status Validate(const Config& c);

}  // namespace sb::server
