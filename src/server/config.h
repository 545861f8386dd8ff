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
  std::string trusted_proxies;  // comma-separated addresses / CIDR ranges; empty: none
  size_t max_connections_per_user = 32;
  size_t max_concurrent_uploads = 16;  // attachment uploads in progress, all users (more: 503)
  int64_t upload_timeout_ms = 300000;  // longest an attachment body may take to arrive or leave
  // TLS (both files set: the port serves https:// and wss:// only).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_min_version = "1.2";
  std::string tls_ciphers;
  std::string tls_ciphersuites;

  std::string data_dir = "./data";
  std::string fsync = "always";  // always | none
  int64_t commit_interval_us = 1000;  // shortest time between two group commits' starts
  size_t cache_mb = 256;
  std::string retention = "5y";          // history kept (store/retention.h); "0": forever
  std::string retention_bucket = "month";
  int64_t retention_interval_s = 3600;   // how often the retention pass runs
  // Attachments no committed message references are deleted this long after their last
  // use (upload, or a send naming them); 0: kept forever. Swept every interval.
  int64_t unreferenced_attachment_ttl_s = 86400;
  int64_t attachment_sweep_interval_s = 3600;
  int64_t search_index_delay_ms = 500;   // the search indexer gathers this long before writing
  // Indexing pauses while less than this share of the machine's CPU is free, and
  // catches up from the store afterwards (src/search/README.md, "Yielding"); 0: never.
  int64_t search_yield_below_free_cpu_pct = 20;
  int64_t search_max_yield_s = 600;      // a pause ends after this long whatever the CPU

  auth::TokenConfig token;
  auth::PasswordParams password;

  protocol::Limits limits;
  int64_t presence_ttl_ms = 30000;
  int64_t presence_grace_ms = 5000;
  int64_t typing_ttl_ms = 6000;
  size_t max_presence_subscriptions = 500;
  size_t bulk_slice_sends = 512;
  int64_t max_bulk_backlog = 4000000;
  size_t receipts_max_members = 100;
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
