#include "server/config.h"

#include "base/client_address.h"
#include "store/retention.h"

#include <toml++/toml.h>

#include <charconv>
#include <functional>

namespace sb::server {
namespace {

template <typename T>
Status ParseNum(std::string_view key, std::string_view v, T* out, T min, T max) {
  T x{};
  auto r = std::from_chars(v.data(), v.data() + v.size(), x);
  if (r.ec != std::errc() || r.ptr != v.data() + v.size())
    return BadRequest(std::string(key) + ": '" + std::string(v) + "' is not a number");
  if (x < min || x > max)
    return BadRequest(std::string(key) + ": " + std::string(v) + " is out of range [" +
                      std::to_string(min) + ", " + std::to_string(max) + "]");
  *out = x;
  return Status::Ok();
}

Status ParseDouble(std::string_view key, std::string_view v, double* out, double min, double max) {
  try {
    size_t pos = 0;
    double x = std::stod(std::string(v), &pos);
    if (pos != v.size()) throw std::invalid_argument("trailing");
    if (x < min || x > max) return BadRequest(std::string(key) + ": out of range");
    *out = x;
    return Status::Ok();
  } catch (...) {
    return BadRequest(std::string(key) + ": '" + std::string(v) + "' is not a number");
  }
}

struct Entry {
  const char* key;
  const char* help;
  std::function<Status(Config&, std::string_view)> set;
  std::function<std::string(const Config&)> get;
};

#define SB_STR(field) \
  [](Config& c, std::string_view v) { c.field = std::string(v); return Status::Ok(); }, \
  [](const Config& c) { return std::string(c.field); }
#define SB_NUM(field, T, lo, hi) \
  [](Config& c, std::string_view v) { return ParseNum<T>(#field, v, &c.field, lo, hi); }, \
  [](const Config& c) { return std::to_string(c.field); }
#define SB_DBL(field, lo, hi) \
  [](Config& c, std::string_view v) { return ParseDouble(#field, v, &c.field, lo, hi); }, \
  [](const Config& c) { return std::to_string(c.field); }

const std::vector<Entry>& Entries() {
  static const std::vector<Entry> e = {
      {"server.listen", "HOST:PORT to serve HTTP and WebSocket on (port 0: any free port)", SB_STR(listen)},
      {"server.node_id", "this node's name in welcome frames and logs (default: host name)", SB_STR(node_id)},
      {"server.shards", "event-loop threads (0: one per core)", SB_NUM(shards, unsigned, 0u, 256u)},
      {"server.rest_threads", "threads for blocking REST work (password hashing, queries)", SB_NUM(rest_threads, unsigned, 1u, 256u)},
      {"server.handshake_timeout_ms", "longest wait for an HTTP request or WebSocket handshake", SB_NUM(handshake_timeout_ms, int64_t, 100, 600000)},
      {"server.idle_timeout_ms", "a socket silent this long is pinged, then closed", SB_NUM(idle_timeout_ms, int64_t, 1000, 3600000)},
      {"server.max_header_bytes", "largest HTTP request head", SB_NUM(max_header_bytes, size_t, 1024, 1u << 20)},
      {"server.drain_timeout_ms", "on SIGTERM, longest wait for in-flight commits", SB_NUM(drain_timeout_ms, int64_t, 0, 600000)},
      {"server.allowed_origins", "browser origins allowed to open the WebSocket and read REST answers (CORS), comma-separated (\"*\": any; empty: same origin only)", SB_STR(allowed_origins)},
      {"server.connects_per_ip_per_s", "new connections per client address per second (0: unlimited)", SB_DBL(connects_per_ip_per_s, 0, 1e9)},
      {"server.trusted_proxies", "reverse proxies whose X-Forwarded-For gives the client address, comma-separated addresses or CIDR ranges (empty: the header is ignored)", SB_STR(trusted_proxies)},
      {"server.max_connections_per_user", "open WebSocket connections per user, all devices together (more: 429)", SB_NUM(max_connections_per_user, size_t, 1, 1000000)},
      {"server.max_concurrent_uploads", "attachment uploads in progress at once, all users together (more: 503 unavailable)", SB_NUM(max_concurrent_uploads, size_t, 1, 100000)},
      {"server.upload_timeout_ms", "longest an attachment upload body (or download) may take once its head was read", SB_NUM(upload_timeout_ms, int64_t, 1000, 86400000)},
      {"tls.cert_file", "PEM certificate (chain) to serve https:// and wss:// with; set with tls.key_file, the port then speaks TLS only", SB_STR(tls_cert_file)},
      {"tls.key_file", "PEM private key of tls.cert_file (unencrypted); SIGHUP reloads both", SB_STR(tls_key_file)},
      {"tls.min_version", "oldest TLS version accepted: 1.2 or 1.3", SB_STR(tls_min_version)},
      {"tls.ciphers", "TLS 1.2 cipher list, OpenSSL syntax (empty: OpenSSL's default)", SB_STR(tls_ciphers)},
      {"tls.ciphersuites", "TLS 1.3 cipher suites, OpenSSL syntax (empty: OpenSSL's default)", SB_STR(tls_ciphersuites)},
      {"store.data_dir", "directory of the embedded store and the signing keys", SB_STR(data_dir)},
      {"store.fsync", "always: fsync each group commit before acking (survives power loss); none: survives a process crash only", SB_STR(fsync)},
      {"store.commit_interval_us", "shortest time between the starts of two group commits, microseconds: once commits are shared, a commit waits this long for company unless a full batch is waiting (0: commit as soon as the last one is done)", SB_NUM(commit_interval_us, int64_t, 0, 100000)},
      {"store.cache_mb", "store read cache, MiB", SB_NUM(cache_mb, size_t, 8, 1u << 20)},
      {"store.retention", "history older than this is dropped in whole buckets: 0 (keep forever) or N with a unit s|m|h|d|y (5y)", SB_STR(retention)},
      {"store.retention_bucket", "what retention drops at once: second|minute|hour|day|week|month (calendar, UTC)", SB_STR(retention_bucket)},
      {"store.retention_interval_s", "seconds between retention passes", SB_NUM(retention_interval_s, int64_t, 1, 86400 * 7)},
      {"store.unreferenced_attachment_ttl_s", "an attachment no message references is deleted this many seconds after its last use (upload, or a send naming it); 0: kept forever", SB_NUM(unreferenced_attachment_ttl_s, int64_t, 0, 86400ll * 3660)},
      {"store.attachment_sweep_interval_s", "seconds between passes deleting unreferenced attachments", SB_NUM(attachment_sweep_interval_s, int64_t, 1, 86400 * 7)},
      {"search.index_delay_ms", "longest the search indexer gathers committed messages before writing them, milliseconds: a message becomes searchable up to this much later; each write touches about two index pages per active conversation however few messages it brings, so longer is cheaper (0: write each batch at once)", SB_NUM(search_index_delay_ms, int64_t, 0, 60000)},
      {"search.yield_below_free_cpu_pct", "the search indexer pauses while less than this share of the machine's CPU (percent, idle or its own) is free, so that delivery keeps the CPU at a peak; what it skipped is read back from the store once at least 10 points more is free (0: never pause; search then competes with delivery for the CPU)", SB_NUM(search_yield_below_free_cpu_pct, int64_t, 0, 90)},
      {"search.max_yield_s", "longest pause of the search indexer, seconds: after it the index catches up completely, free CPU or not, before it may pause again", SB_NUM(search_max_yield_s, int64_t, 1, 86400)},
      {"auth.issuer", "JWT iss", SB_STR(token.issuer)},
      {"auth.audience", "JWT aud", SB_STR(token.audience)},
      {"auth.access_ttl_s", "access token lifetime, seconds", SB_NUM(token.access_ttl_s, int64_t, 10, 86400 * 7)},
      {"auth.refresh_ttl_s", "refresh token lifetime, seconds", SB_NUM(token.refresh_ttl_s, int64_t, 60, 86400 * 365)},
      {"auth.verified_tokens_max", "access tokens remembered as verified, so that presenting one again skips the signature check (~350 bytes each; tokens in use are kept, unused ones forgotten first)", SB_NUM(token.verified_tokens_max, size_t, 1024, 1u << 26)},
      {"auth.leeway_s", "clock skew allowed on exp/nbf, seconds", SB_NUM(token.leeway_s, int64_t, 0, 300)},
      {"auth.password_ops", "argon2id passes", SB_NUM(password.ops, uint64_t, 1, 64)},
      {"auth.password_mem_kib", "argon2id memory, KiB", SB_NUM(password.mem_kib, size_t, 8, 4u << 20)},
      {"limits.max_content_bytes", "largest message content", SB_NUM(limits.max_content_bytes, size_t, 16, 1u << 20)},
      {"limits.max_frame_bytes", "largest WebSocket message (larger: close 1009)", SB_NUM(limits.max_frame_bytes, size_t, 1024, 16u << 20)},
      {"limits.history_page_max", "largest history page", SB_NUM(limits.history_page_max, size_t, 1, 10000)},
      {"limits.max_group_members", "largest group", SB_NUM(limits.max_group_members, size_t, 2, 100000)},
      {"limits.max_rest_body_bytes", "largest REST request body", SB_NUM(limits.max_rest_body_bytes, size_t, 1024, 1u << 30)},
      {"limits.max_attachment_bytes", "largest attachment (POST /v1/attachments; streamed to disk, never held in memory)", SB_NUM(limits.max_attachment_bytes, uint64_t, 1, 1ull << 40)},
      {"limits.upload_bytes_per_user_per_day", "attachment bytes one user may upload per day (refills continuously; over it: 429 with Retry-After; 0: no quota)", SB_NUM(limits.upload_bytes_per_user_per_day, uint64_t, 0, 1ull << 50)},
      {"limits.min_free_disk_mb", "uploads are refused (503) while the data directory's disk would keep less free than this, MiB (0: no check)", SB_NUM(limits.min_free_disk_mb, uint64_t, 0, 1ull << 30)},
      {"limits.send_queue_max_frames", "frames queued to one socket before it is closed", SB_NUM(limits.send_queue_max_frames, size_t, 16, 1u << 24)},
      {"limits.send_queue_max_bytes", "bytes queued to one socket before it is closed", SB_NUM(limits.send_queue_max_bytes, size_t, 65536, 1ull << 32)},
      {"limits.send_rate_per_s", "send_message frames per second per connection (sustained)", SB_DBL(limits.send_rate_per_s, 0.1, 1e9)},
      {"limits.send_burst", "send_message burst per connection", SB_DBL(limits.send_burst, 1, 1e9)},
      {"presence.ttl_ms", "a device silent this long (no frame at all) is offline", SB_NUM(presence_ttl_ms, int64_t, 1000, 3600000)},
      {"presence.grace_ms", "offline is announced this long after the last device left (a reconnect within it announces nothing)", SB_NUM(presence_grace_ms, int64_t, 0, 600000)},
      {"presence.max_subscriptions", "presence_subscribe targets per connection", SB_NUM(max_presence_subscriptions, size_t, 1, 100000)},
      {"presence.typing_ttl_ms", "a typing 'started' without 'stopped' ends after this long", SB_NUM(typing_ttl_ms, int64_t, 500, 600000)},
      {"limits.login_failures_per_account_per_min", "failed logins per account per minute after the burst", SB_DBL(limits.login_failures_per_account_per_min, 0.01, 1e9)},
      {"limits.login_failures_per_account_burst", "failed logins per account before the rate applies", SB_DBL(limits.login_failures_per_account_burst, 1, 1e9)},
      {"limits.login_attempts_per_ip_per_min", "login attempts per client address per minute (burst: the same)", SB_DBL(limits.login_attempts_per_ip_per_min, 1, 1e9)},
      {"limits.user_lookups_per_user_per_min", "GET /v1/users?username= lookups per user per minute (burst: the same)", SB_DBL(limits.user_lookups_per_user_per_min, 1, 1e9)},
      {"chat.bulk_slice_sends", "group fan-out: member visits per slice before a shard turns to other work (1:1 messages, acks)", SB_NUM(bulk_slice_sends, size_t, 1, 1u << 24)},
      {"chat.max_bulk_backlog", "group fan-out work (member visits) queued on all shards before new group messages are refused as unavailable", SB_NUM(max_bulk_backlog, int64_t, 1000, 1LL << 40)},
      {"chat.receipts_max_members", "per-member receipts are pushed to senders (and replayed by resume) only in conversations up to this size; larger groups push \"delivered to all\" / \"read by all\" (all_members) instead", SB_NUM(receipts_max_members, size_t, 2, 100000)},
      {"log.level", "debug | info | warn | error | off", SB_STR(log_level)},
  };
  return e;
}

}  // namespace

std::vector<KeyInfo> ConfigKeys() {
  Config defaults;
  std::vector<KeyInfo> out;
  for (auto& e : Entries()) out.push_back({e.key, e.help, e.get(defaults)});
  return out;
}

Status SetConfigKey(Config& c, std::string_view key, std::string_view value) {
  for (auto& e : Entries())
    if (key == e.key) return e.set(c, value);
  return BadRequest("unknown setting '" + std::string(key) + "'");
}

Status LoadConfigFile(Config& c, const std::string& path) {
  toml::table tbl;
  try {
    tbl = toml::parse_file(path);
  } catch (const toml::parse_error& err) {
    return BadRequest(path + ": " + std::string(err.description()));
  }
  for (auto& [section, node] : tbl) {
    auto* t = node.as_table();
    if (!t) return BadRequest(path + ": '" + std::string(section.str()) + "' must be a [section]");
    for (auto& [name, v] : *t) {
      std::string key = std::string(section.str()) + "." + std::string(name.str());
      std::string value;
      if (auto s = v.value<std::string>(); s && v.is_string()) value = *s;
      else if (v.is_integer()) value = std::to_string(*v.value<int64_t>());
      else if (v.is_floating_point()) value = std::to_string(*v.value<double>());
      else if (v.is_boolean()) value = *v.value<bool>() ? "true" : "false";
      else return BadRequest(path + ": " + key + " has an unsupported type");
      if (Status s = SetConfigKey(c, key, value); !s.ok()) return BadRequest(path + ": " + s.message());
    }
  }
  return Status::Ok();
}

Status ApplyEnvironment(Config& c, char** envp) {
  constexpr std::string_view kPrefix = "SWITCHBOARD_";
  for (char** e = envp; e && *e; ++e) {
    std::string_view kv(*e);
    if (kv.substr(0, kPrefix.size()) != kPrefix) continue;
    size_t eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    std::string name(kv.substr(kPrefix.size(), eq - kPrefix.size()));
    // SWITCHBOARD_STORE_DATA_DIR -> store.data_dir: the first '_' splits section/name.
    size_t us = name.find('_');
    if (us == std::string::npos) continue;
    std::string key;
    for (size_t i = 0; i < name.size(); ++i) {
      char ch = name[i];
      if (i == us) ch = '.';
      else if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
      key.push_back(ch);
    }
    if (Status s = SetConfigKey(c, key, kv.substr(eq + 1)); !s.ok())
      return BadRequest("environment " + std::string(kv.substr(0, eq)) + ": " + s.message());
  }
  return Status::Ok();
}

Status Validate(const Config& c) {
  if (c.fsync != "always" && c.fsync != "none") return BadRequest("store.fsync must be always or none");
  if (!store::ParseRetentionAge(c.retention))
    return BadRequest("store.retention must be 0 or a number with a unit s, m, h, d or y (e.g. 5y)");
  if (!store::ParseRetentionBucket(c.retention_bucket))
    return BadRequest("store.retention_bucket must be second, minute, hour, day, week or month");
  if (c.listen.rfind(':') == std::string::npos) return BadRequest("server.listen must be HOST:PORT");
  if (auto t = TrustedProxies::Parse(c.trusted_proxies); !t.ok()) return t.status();
  if (c.tls_cert_file.empty() != c.tls_key_file.empty())
    return BadRequest("tls.cert_file and tls.key_file must be set together (or neither, for plain HTTP)");
  if (c.tls_min_version != "1.2" && c.tls_min_version != "1.3")
    return BadRequest("tls.min_version must be 1.2 or 1.3");
  if (c.limits.max_content_bytes + 1024 > c.limits.max_frame_bytes)
    return BadRequest("limits.max_frame_bytes must exceed limits.max_content_bytes by at least 1 KiB");
  if (c.limits.history_page_default > c.limits.history_page_max)
    return BadRequest("limits.history_page_max is below the default page size (50)");
  return Status::Ok();
}

}  // namespace sb::server
