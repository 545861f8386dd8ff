// Limits a client can hit. Every one is configurable ([limits] in the config file);
// these are the contract's defaults (docs/protocol.md, "Limits").
#pragma once

#include <cstddef>
#include <cstdint>

namespace sb::protocol {

struct Limits {
  size_t max_content_bytes = 16 * 1024;   // send_message.content, UTF-8 bytes
  size_t max_frame_bytes = 64 * 1024;     // one WebSocket message; over it: close 1009
  size_t max_media_url_bytes = 2048;
  size_t history_page_default = 50;
  size_t history_page_max = 200;
  size_t max_group_members = 1000;
  size_t max_title_bytes = 256;
  size_t max_rest_body_bytes = 1024 * 1024;
  uint64_t max_attachment_bytes = 25ull << 20;  // POST /v1/attachments body (streamed to disk)
  uint64_t upload_bytes_per_user_per_day = 1ull << 30;  // attachments; 0: no quota
  uint64_t min_free_disk_mb = 256;  // uploads refused below this much free disk; 0: no check
  size_t send_queue_max_frames = 4096;    // per connection; overflow closes the socket
  size_t send_queue_max_bytes = 8u << 20;
  int64_t heartbeat_interval_ms = 20000;
  double send_rate_per_s = 50;            // send_message per connection (token bucket)
  double send_burst = 100;
  // Logins: failed attempts per account (burst, then one per 60/rate seconds) and
  // attempts per client address per minute. Over either: 429 rate_limited.
  double login_failures_per_account_per_min = 5;
  double login_failures_per_account_burst = 10;
  double login_attempts_per_ip_per_min = 60;
  // GET /v1/users?username=: lookups per user per minute (burst: the same), so that
  // nobody walks the name space; over it: 429 rate_limited.
  double user_lookups_per_user_per_min = 60;
};

}  // namespace sb::protocol
