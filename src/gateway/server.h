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

#include "api/attachment_api.h"
#include "api/rest_api.h"
#include "auth/revocations.h"
#include "auth/tokens.h"
#include "base/client_address.h"
#include "base/status.h"
#include "chat/executor.h"
#include "protocol/limits.h"

namespace sb::chat {
class ChatCore;
}

namespace sb::gateway {

// TLS on the whole port (REST, WebSocket, /metrics, /healthz): when cert_file is set,
// the port speaks TLS only. OpenSSL through Asio; the context is built by Listen()
// and rebuilt from the same files on SIGHUP.
struct TlsOptions {
  std::string cert_file;            // PEM: the server certificate, then any intermediates
  std::string key_file;             // PEM private key of that certificate, unencrypted
  std::string min_version = "1.2";  // "1.2" or "1.3"
  std::string ciphers;              // TLS 1.2 cipher list (OpenSSL syntax); empty: OpenSSL's
  std::string ciphersuites;         // TLS 1.3 suites (OpenSSL syntax); empty: OpenSSL's
  bool enabled() const { return !cert_file.empty(); }
};

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
  // Connections from these addresses are reverse proxies: the client address (for the
  // limit above and for REST's per-address limits) is taken from X-Forwarded-For.
  TrustedProxies trusted_proxies;
  // Open WebSocket connections per user (all devices); more are refused with 429.
  size_t max_connections_per_user = 32;
  TlsOptions tls;
  // An attachment body (upload or download) may take this long once the request head
  // was read (instead of handshake_timeout_ms, which covers the head).
  int64_t upload_timeout_ms = 300000;
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
  // POST /v1/attachments and GET /v1/attachments/{id} are streamed through this (set
  // before Run; unset: those routes go to the RestApi like any other).
  void SetAttachments(api::AttachmentApi* attachments);

  // Loads the TLS certificate and key when TLS is on (kBadRequest naming the tls.* key
  // and the problem: unreadable file, not PEM, key not matching the certificate, ...),
  // then binds every shard's acceptor; returns the bound port.
  Result<uint16_t> Listen();
  // Runs the shards until SIGTERM/SIGINT (or Shutdown()), then drains: stop accepting,
  // let in-flight commits finish and their acks go out, close every socket with 1001,
  // stop. Returns when every shard thread has exited. With TLS on, SIGHUP reloads the
  // certificate and key for new connections (a failed reload keeps the old ones).
  void Run();
  // Thread-safe: starts the same drain as SIGTERM.
  void Shutdown();

  struct Impl;  // public only so that server.cpp's session classes can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace sb::gateway
