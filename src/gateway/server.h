// The gateway: one HTTP/1.1 port serving the REST API, the WebSocket at /v1/ws and
// the operational endpoints. Thread-per-core: `shards` event-loop threads, each with
// its own SO_REUSEPORT acceptor (the kernel spreads connections), its own sessions,
// and its slice of the conversations (chat::ChatCore). REST handlers run on a small
// blocking pool so password hashing and store reads never stall an event loop.
//
// This header is free of Boost so that wiring code compiles fast; Beast lives in
// server.cpp only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "api/rest_api.h"
#include "auth/revocations.h"
#include "auth/tokens.h"
#include "base/status.h"
#include "chat/executor.h"
#include "protocol/limits.h"

namespace sb::chat {
class ChatCore;
}

namespace sb::gateway {

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;             // 0 picks a free port (see Listen)
  unsigned shards = 0;              // 0: one per core
  unsigned rest_threads = 2;        // blocking pool for REST handlers
  protocol::Limits limits;
  int64_t handshake_timeout_ms = 10000;  // HTTP request / WebSocket handshake (slowloris)
  int64_t idle_timeout_ms = 60000;       // no byte from the peer for this long: ping, then close
  size_t max_header_bytes = 8192;
  int64_t drain_timeout_ms = 10000;      // SIGTERM: longest wait for in-flight commits
  // Browser upgrades (requests with an Origin header) are accepted from these origins
  // ("https://chat.example.com"), or from the same origin as the Host header when the
  // list is empty. "*" accepts any origin. Requests without Origin (native clients)
  // are not affected.
  std::vector<std::string> allowed_origins;
  // New connections accepted per client IP per second (token bucket, burst 2x), per
  // shard; 0 disables.
  double connects_per_ip_per_s = 50;
  // Open WebSocket connections per user (all devices); more are refused with 429.
  size_t max_connections_per_user = 32;
};

class Server {
 public:
  Server(ServerOptions opts, const auth::TokenService& tokens, const auth::Revocations& revoked,
         api::RestApi& rest);
  ~Server();

  // The shard executors; valid for the server's lifetime.
  std::vector<chat::Executor*> Executors();
  unsigned shard_count() const;
  // Must be set before Run.
  void SetCore(chat::ChatCore* core);

  // Binds every shard's acceptor; returns the bound port.
  Result<uint16_t> Listen();
  // Runs the shards until SIGTERM/SIGINT (or Shutdown()), then drains: stop accepting,
  // let in-flight commits finish and their acks go out, close every socket with 1001,
  // stop. Returns when every shard thread has exited.
  void Run();
  // Thread-safe: starts the same drain as SIGTERM.
  void Shutdown();

  struct Impl;  // public only so that server.cpp's session classes can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace sb::gateway
