// Types shared by the pieces of `switchboard check`: options, the run's fixed layout
// (users, devices, conversations), the coordinator/device handshake, and counters.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "sb_client.h"

namespace sb::check {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

struct Options {
  std::string url;  // http(s)://HOST:PORT
  std::string ca_file;  // --ca-file: the CA to trust for an https:// target
  bool spawn = false;
  std::string server_bin;                // empty: this binary (/proc/self/exe)
  std::vector<std::string> server_sets;  // extra KEY=VALUE for the spawned server
  bool keep_data = false;

  int clients = 10;
  int devices_per_client = 1;
  int groups = 2;
  int group_size = 5;
  int64_t messages = 2000;
  double rate = 20;  // new sends per second per device
  int window = 16;   // unacked sends per device
  double disconnect_rate = 0.2;
  int kills = 0;
  uint64_t seed = 0;
  bool seed_given = false;
  double duration_limit_s = 300;
  double settle_timeout_s = 30;
  double backoff_cap_s = 2;
  bool use_resume = true;  // false: catch up over REST history (servers without resume)
  // Whose cursors `resume` carries: "device" (its own), "server" (none: the server's
  // record of DELIVERED receipts decides), "mixed" (random per reconnect).
  std::string resume_cursors = "device";
  bool receipts = true;
  std::string json_path;
  bool verbose = false;
  // Client-side faults that mimic server bugs, to prove the checker catches them:
  // "drop-delivery", "lose-message", "drop-ack" (see --help).
  std::string inject;
};

// host, port and TLS (https:// targets), as the client library takes them.
using Endpoint = client::Endpoint;

struct ConvInfo {
  std::string id;
  std::string type;          // "direct" | "group"
  std::vector<int> members;  // user indexes
};

struct UserInfo {
  std::string username;
  std::string user_id;
  std::vector<int> convs;  // indexes into Layout::convs
  // The coordinator's own session (a separate device id), for setup and the final
  // history walk, so that it never shares or rotates a simulated device's tokens.
  std::string observer_token;
  std::string observer_device;
};

struct Layout {
  std::string run_id;  // random, so that runs against one --url never collide
  std::string password;
  std::vector<UserInfo> users;
  std::vector<ConvInfo> convs;
  std::map<std::string, int> conv_index;  // conversation id -> index
};

// Counters that are statistics, not violations. Relaxed atomics: read at the end
// or for progress lines only.
struct Stats {
  std::atomic<uint64_t> connects{0};
  std::atomic<uint64_t> reconnects{0};
  std::atomic<uint64_t> connect_failures{0};
  std::atomic<uint64_t> injected_disconnects{0};
  std::atomic<uint64_t> server_closes{0};  // close frame or stream error from the server side
  std::atomic<uint64_t> resumes{0};
  std::atomic<uint64_t> replayed{0};  // sum of resume_done.replayed
  std::atomic<uint64_t> history_catchups{0};
  std::atomic<uint64_t> retries{0};  // re-sends of an unacked client_msg_id
  std::atomic<uint64_t> duplicate_acks{0};
  std::atomic<uint64_t> rate_limited{0};
  std::atomic<uint64_t> unavailable{0};
  std::atomic<uint64_t> ack_timeouts{0};
  std::atomic<uint64_t> messages_received{0};  // message frames (and history items), dups included
  std::atomic<uint64_t> redeliveries{0};       // dropped by message_id
  std::atomic<uint64_t> receipts_sent{0};
  std::atomic<uint64_t> receipts_received{0};
  std::atomic<uint64_t> token_renewals{0};
};

enum class Phase : int { kRun = 0, kSettle = 1, kStop = 2 };

class Report;

// What the coordinator (main thread) and the device threads share.
struct Shared {
  const Options* opt = nullptr;
  Endpoint ep;
  const Layout* layout = nullptr;
  Report* report = nullptr;
  Stats stats;
  Clock::time_point start;

  std::atomic<int> phase{static_cast<int>(Phase::kRun)};
  std::atomic<uint64_t> sent{0};   // distinct client_msg_ids sent at least once
  std::atomic<uint64_t> acked{0};  // distinct client_msg_ids acked
  std::atomic<int> done_sending{0};
  std::atomic<bool> resume_unsupported_noted{false};

  // Settle targets: every device must reach these cursors (last_seq per conversation
  // once every send is acked). Bumping the generation makes devices re-check.
  std::mutex targets_mu;
  std::map<std::string, int64_t> targets;
  std::atomic<uint64_t> targets_gen{0};

  Phase phase_now() const { return static_cast<Phase>(phase.load()); }
  double Elapsed() const {
    return std::chrono::duration<double>(Clock::now() - start).count();
  }
};

// A deterministic 64-bit mix, to derive independent per-device seeds from --seed.
inline uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace sb::check
