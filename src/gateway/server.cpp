// Beast/Asio live here and nowhere else in the server (compile time: see
// docs/architecture.md, "Build").
#include "gateway/server.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <variant>
#include <unordered_map>

#include "base/clock.h"
#include "base/ids.h"
#include "base/log.h"
#include "base/timer_wheel.h"
#include "base/token_buckets.h"
#include "chat/chat_core.h"
#include "chat/session.h"
#include "metrics/metrics.h"
#include "protocol/server_frames.h"
#include "protocol/ws_codec.h"

namespace sb::gateway {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ws = beast::websocket;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
using TlsContextPtr = std::shared_ptr<ssl::context>;

// Plain connections use beast::tcp_stream directly: the TLS code is a separate
// instantiation, so it costs them nothing.
template <class Stream>
constexpr bool kIsTls = std::is_same_v<Stream, TlsStream>;

namespace {

std::atomic<uint64_t> g_next_session_id{1};

class ShardExecutor final : public chat::Executor {
 public:
  explicit ShardExecutor(net::io_context& io) : io_(io) {}
  void Post(chat::Task t) override { net::post(io_, std::move(t)); }

 private:
  net::io_context& io_;
};

// What the shard's flush list and deadline wheel know of a WebSocket session.
class WsConn : public WheelHook {
 public:
  virtual void Flush() = 0;
  // Called when the session's scheduled check comes due: it acts on whatever deadline
  // passed and schedules its next check (or not, once finished).
  virtual void Tick(int64_t mono_ms, int64_t wall_s) = 0;

 protected:
  ~WsConn() = default;
};

int64_t MonoMs() { return MonoNs() / 1000000; }

struct Shard {
  explicit Shard(uint32_t i) : index(i), exec(io), scratch(std::make_unique<char[]>(kScratchBytes)) {}
  uint32_t index;
  net::io_context io{1};
  ShardExecutor exec;
  std::optional<tcp::acceptor> acceptor;
  std::thread thread;
  // Connection-rate buckets by client address (server.connects_per_ip_per_s, shared
  // out between the shards); made with the shard once the rate is known.
  std::optional<TokenBuckets<std::string>> connect_buckets;
  // The TLS context new connections use (null: plain). Only this shard's thread reads
  // or replaces it (a SIGHUP reload posts the new one), so no lock.
  TlsContextPtr tls;

  // Plain connections read into this buffer when the socket is readable and keep only
  // the bytes of an incomplete frame: an idle connection holds no read buffer.
  static constexpr size_t kScratchBytes = 64 * 1024;
  std::unique_ptr<char[]> scratch;

  // Open sessions by the time of their next check (keep-alive ping, idle timeout,
  // token expiry, closing deadline). Once a second the shard expires what came due:
  // it visits the sessions whose check is due, not every session.
  TimerWheel<WsConn> wheel{MonoMs()};
  void Sweep() {
    int64_t mono = MonoMs(), wall_s = WallMs() / 1000;
    wheel.Expire(mono, [&](WsConn* c) { c->Tick(mono, wall_s); });
  }

  // Sessions with frames queued during this turn of the event loop: written together
  // by one posted task, each session's frames in one sendmsg.
  std::vector<std::shared_ptr<WsConn>> dirty, flushing;
  bool flush_posted = false;
  void MarkDirty(std::shared_ptr<WsConn> c) {
    dirty.push_back(std::move(c));
    if (flush_posted) return;
    flush_posted = true;
    net::post(io, [this] {
      flush_posted = false;
      std::swap(dirty, flushing);
      for (auto& c : flushing) c->Flush();
      flushing.clear();
    });
  }
};

// ---------------------------------------------------------------------------------
// TLS context: certificate chain and key from PEM files, checked before use.

std::string OpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no detail from OpenSSL" : out;
}

// Never prompt on a terminal for a passphrase: an encrypted key simply fails to load.
int NoPassphrase(char*, int, int, void*) { return 0; }

std::string Asn1TimeString(const ASN1_TIME* t) {
  BIO* b = BIO_new(BIO_s_mem());
  if (!b) return "?";
  ASN1_TIME_print(b, t);
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string out(data, n > 0 ? static_cast<size_t>(n) : 0);
  BIO_free(b);
  return out;
}

Result<TlsContextPtr> MakeTlsContext(const TlsOptions& o) {
  ERR_clear_error();
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* c = ctx->native_handle();
  SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                             SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (o.min_version != "1.2" && o.min_version != "1.3")
    return BadRequest("tls.min_version must be 1.2 or 1.3, got '" + o.min_version + "'");
  SSL_CTX_set_min_proto_version(c, o.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION);
  // Idle connections give their read/write buffers back (~34 KiB each): a chat
  // server holds many sockets that are quiet most of the time.
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_default_passwd_cb(c, NoPassphrase);
  if (!o.ciphers.empty() && SSL_CTX_set_cipher_list(c, o.ciphers.c_str()) != 1)
    return BadRequest("tls.ciphers '" + o.ciphers + "': no usable cipher (" + OpenSslErrors() + ")");
  if (!o.ciphersuites.empty() && SSL_CTX_set_ciphersuites(c, o.ciphersuites.c_str()) != 1)
    return BadRequest("tls.ciphersuites '" + o.ciphersuites + "': no usable suite (" + OpenSslErrors() + ")");

  if (o.key_file.empty()) return BadRequest("tls.key_file is required when tls.cert_file is set");
  for (auto [key, path] : {std::pair{"tls.cert_file", &o.cert_file}, std::pair{"tls.key_file", &o.key_file}}) {
    std::FILE* f = std::fopen(path->c_str(), "rb");
    if (!f) return BadRequest(std::string(key) + " '" + *path + "': cannot read: " + std::strerror(errno));
    std::fclose(f);
  }
  if (SSL_CTX_use_certificate_chain_file(c, o.cert_file.c_str()) != 1)
    return BadRequest("tls.cert_file '" + o.cert_file + "': not a PEM certificate chain (" + OpenSslErrors() + ")");
  X509* leaf = SSL_CTX_get0_certificate(c);
  if (!leaf) return BadRequest("tls.cert_file '" + o.cert_file + "': no certificate in it");

  BIO* kb = BIO_new_file(o.key_file.c_str(), "r");
  EVP_PKEY* key = kb ? PEM_read_bio_PrivateKey(kb, nullptr, NoPassphrase, nullptr) : nullptr;
  if (kb) BIO_free(kb);
  if (!key)
    return BadRequest("tls.key_file '" + o.key_file +
                      "': not an unencrypted PEM private key (" + OpenSslErrors() + ")");
  bool matches = X509_check_private_key(leaf, key) == 1;
  bool used = matches && SSL_CTX_use_PrivateKey(c, key) == 1;
  EVP_PKEY_free(key);
  if (!matches)
    return BadRequest("tls.key_file '" + o.key_file + "' does not match the certificate in tls.cert_file '" +
                      o.cert_file + "'");
  if (!used) return BadRequest("tls.key_file '" + o.key_file + "': rejected (" + OpenSslErrors() + ")");

  char subject[256] = {};
  X509_NAME_oneline(X509_get_subject_name(leaf), subject, sizeof subject - 1);
  std::string not_after = Asn1TimeString(X509_get0_notAfter(leaf));
  if (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0)
    LOG_WARN("tls_certificate_expired").Kv("file", o.cert_file).Kv("not_after", not_after);
  else if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0)
    LOG_WARN("tls_certificate_not_yet_valid").Kv("file", o.cert_file);
  LOG_INFO("tls_loaded").Kv("cert", o.cert_file).Kv("subject", subject).Kv("not_after", not_after)
      .Kv("min_version", o.min_version);
  ERR_clear_error();
  return ctx;
}

// RFC 6455 §4.2.1: the key is base64 of exactly 16 bytes (24 characters ending "==").
bool ValidWebSocketKey(std::string_view k) {
  if (k.size() != 24 || k[22] != '=' || k[23] != '=') return false;
  for (size_t i = 0; i < 22; ++i) {
    char c = k[i];
    bool b64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
    if (!b64) return false;
  }
  // The last character before the padding carries only 2 significant bits.
  return std::string_view("AQgw").find(k[21]) != std::string_view::npos;
}

// Same origin: the Origin's host[:port] equals the Host header.
bool SameOrigin(std::string_view origin, std::string_view host) {
  size_t p = origin.find("://");
  if (p == std::string_view::npos) return false;
  std::string_view rest = origin.substr(p + 3);
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  return !host.empty() && rest == host;
}

std::string_view Sv(beast::string_view s) { return {s.data(), s.size()}; }

// X-Forwarded-For as one list (several such headers join with commas).
std::string ForwardedFor(const http::fields& f) {
  std::string xff;
  for (auto [it, end] = f.equal_range("X-Forwarded-For"); it != end; ++it) {
    if (!xff.empty()) xff += ',';
    xff += Sv(it->value());
  }
  return xff;
}

// The address a request's limits go by: the peer's, or behind a trusted reverse proxy
// the client's from X-Forwarded-For.
std::string ClientAddress(const TrustedProxies& trusted, const tcp::socket& sock, const http::fields& f) {
  beast::error_code ec;
  auto ep = sock.remote_endpoint(ec);
  if (ec) return "";
  std::string peer = ep.address().to_string();
  return trusted.empty() ? peer : trusted.ClientOf(peer, ForwardedFor(f));
}

}  // namespace

struct Server::Impl {
  Impl(ServerOptions o, const auth::TokenService& t, const auth::Revocations& rv, api::RestApi& r)
      : opts(std::move(o)), tokens(t), revoked(rv), rest(r), pool(std::max(1u, opts.rest_threads)) {
    unsigned n = opts.shards ? opts.shards : std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < n; ++i) shards.push_back(std::make_unique<Shard>(i));
  }

  ServerOptions opts;
  const auth::TokenService& tokens;
  const auth::Revocations& revoked;
  api::RestApi& rest;
  chat::ChatCore* core = nullptr;
  api::AttachmentApi* att_api = nullptr;  // streamed attachment routes (may be unset)
  std::vector<std::unique_ptr<Shard>> shards;
  net::thread_pool pool;
  net::io_context control{1};
  std::atomic<bool> draining{false};
  uint16_t port = 0;
  // Open sockets per user, across shards. Touched once per connect and disconnect.
  std::mutex per_user_mu;
  std::unordered_map<UserId, size_t> per_user;
  bool TakeUserSlot(UserId u) {
    std::lock_guard lk(per_user_mu);
    size_t& n = per_user[u];
    if (n >= opts.max_connections_per_user) return false;
    ++n;
    return true;
  }
  void ReleaseUserSlot(UserId u) {
    std::lock_guard lk(per_user_mu);
    auto it = per_user.find(u);
    if (it != per_user.end() && --it->second == 0) per_user.erase(it);
  }

  net::awaitable<void> Accept(Shard& sh);
  // server.allowed_origins names this origin (or holds "*").
  bool Listed(std::string_view origin) const {
    for (const auto& o : opts.allowed_origins)
      if (o == "*" || o == origin) return true;
    return false;
  }
  bool OriginAllowed(std::string_view origin, std::string_view host) const {
    if (origin.empty()) return true;  // not a browser
    if (opts.allowed_origins.empty()) return SameOrigin(origin, host);
    return Listed(origin);
  }
  // CORS, for REST and attachments (the upgrade has its own check above): the origin a
  // response may be read by, when a page on another origin listed in
  // server.allowed_origins calls. Empty: no CORS headers, so the browser keeps the
  // answer from any page of another origin (a same-origin page needs none).
  std::string CorsOrigin(const http::fields& h) const {
    std::string_view origin = Sv(h[http::field::origin]);
    return !origin.empty() && Listed(origin) ? std::string(origin) : std::string();
  }
  // Token bucket per client address; false when it connects too fast.
  bool AdmitConnection(Shard& sh, const std::string& ip) {
    if (opts.connects_per_ip_per_s <= 0) return true;
    if (!sh.connect_buckets) {
      const double rate = opts.connects_per_ip_per_s / static_cast<double>(shards.size());
      sh.connect_buckets.emplace(std::max(1.0, 2 * rate), rate, 100000);
    }
    return sh.connect_buckets->Take(ip, 1, MonoNs() / 1'000'000);
  }
  // An upgrade through a trusted proxy: the per-address connection limit, applied to
  // the client address it forwards. False for direct connections (limited at accept).
  bool ProxiedConnectRefused(Shard& sh, const tcp::socket& sock, const http::fields& f) {
    if (opts.trusted_proxies.empty()) return false;
    beast::error_code ec;
    auto ep = sock.remote_endpoint(ec);
    if (ec) return false;
    std::string peer = ep.address().to_string();
    if (!opts.trusted_proxies.Contains(peer)) return false;
    return !AdmitConnection(sh, opts.trusted_proxies.ClientOf(peer, ForwardedFor(f)));
  }
  net::awaitable<void> Ticker(Shard& sh);
  // `deadline_armed`: the first request's read shares a deadline set by the caller
  // (the TLS handshake's), instead of starting a fresh one.
  template <class Stream>
  net::awaitable<void> HttpSession(Shard& sh, Stream stream, bool deadline_armed);
  // Attachments (their request head is read; the body is not). True when the
  // connection stays open for the next request.
  template <class Stream>
  net::awaitable<bool> UploadAttachment(Stream& stream, beast::flat_buffer& buf,
                                        http::request_parser<http::empty_body>& head);
  template <class Stream>
  net::awaitable<bool> DownloadAttachment(Stream& stream, http::request_parser<http::empty_body>& head);
  // Answers and closes without reading the request body; what the client still sends
  // is read and dropped for a moment (bounded), so that the close does not reset the
  // connection before the client has read the answer.
  template <class Stream>
  net::awaitable<void> RefuseAndClose(Stream& stream, const api::HttpResponse& r, unsigned version,
                                      std::string_view cors = {});
  net::awaitable<void> TlsSession(Shard& sh, tcp::socket sock, TlsContextPtr ctx);
  void ReloadTls();
  void StartDrain();
  net::awaitable<void> Drain();
};

// ---------------------------------------------------------------------------------
// WebSocket session: one per connected device, living on its shard's thread.
//
// The framing is our own (protocol/ws_codec.h), not Beast's stream: an idle plain
// connection holds no read buffer at all (it waits for readability and then reads into
// its shard's scratch buffer), and every frame queued for a connection during one turn
// of the event loop leaves in one sendmsg (a commit's ack, a delivery and a receipt
// for the same device are one syscall, not three). TLS connections read through their
// own buffer and write through Asio's SSL stream.

constexpr int kMaxIovFrames = 64;  // frames per sendmsg

template <class Stream>
class WsSession final : public chat::Session,
                        public WsConn,
                        public std::enable_shared_from_this<WsSession<Stream>> {
 public:
  WsSession(Server::Impl& srv, Shard& shard, Stream&& stream, auth::Claims claims)
      : srv_(srv),
        shard_(shard),
        stream_(std::move(stream)),
        token_exp_s_(claims.exp),
        user_(claims.user),
        device_(std::move(claims.device_id)),
        id_(g_next_session_id.fetch_add(1)),
        session_id_("ses_" + RandomHex(8)),
        reader_(srv.opts.limits.max_frame_bytes) {}

  uint64_t id() const override { return id_; }
  UserId user() const override { return user_; }
  const std::string& device_id() const override { return device_; }
  const std::string& session_id() const override { return session_id_; }

  // Attaches to the chat core and starts reading; `early` holds bytes the client sent
  // right behind its upgrade request. `answer`, if not empty, is the HTTP 101 answer,
  // not yet written: it goes first, in the same write as `welcome`.
  void Start(std::string early, std::string answer = {}) {
    auto& m = metrics::Server();
    m.connections.Add(1);
    m.connections_total.Inc();
    last_rx_ms_ = MonoMs();
    attached_ = true;
    ScheduleCheck(last_rx_ms_);
    if (!answer.empty()) {
      q_.push_back(Out{std::make_shared<const std::string>(std::move(answer)), {}, 0, kRawBytes});
      answer_unsent_ = true;
      ScheduleFlush();
    }
    srv_.core->Attach(shard_.index, this);
    if (srv_.draining) Close(ws::close_code::going_away, "server draining", true);
    if (!early.empty() && !Consume(early.data(), early.size())) return;
    StartRead();
  }

  void Send(std::shared_ptr<const std::string> frame) override {
    if (closing_ || finished_) return;
    const auto& lim = srv_.opts.limits;
    if (Queued() >= lim.send_queue_max_frames || queued_bytes_ + frame->size() > lim.send_queue_max_bytes) {
      // A client that cannot keep up is disconnected, never silently skipped: it
      // reconnects and resumes from the store.
      metrics::Server().send_queue_overflows.Inc();
      LOG_WARN("send_queue_overflow").Kv("session", session_id_).Kv("frames", Queued());
      Close(ws::close_code::try_again_later, "send queue overflow", /*flush=*/false);
      return;
    }
    Push(protocol::kWsText, std::move(frame));
  }

  size_t Queued() const override { return q_.size() - q_head_; }

  void Close(uint16_t code, std::string_view reason) override {
    Close(static_cast<ws::close_code>(code), reason, true);
  }

  void WhenQueueBelow(size_t frames, std::function<void()> fn) override {
    if (closing_ || finished_) return;
    if (Queued() < frames) return fn();
    drain_at_ = frames;
    on_drain_ = std::move(fn);
  }

  // Queues a close frame after what is queued (flush) or instead of it; the connection
  // ends when the peer answers, or at the deadline.
  void Close(ws::close_code code, std::string_view reason, bool flush) {
    if (closing_ || finished_) return;
    closing_ = true;
    on_drain_ = nullptr;
    if (!flush) DropQueued();
    close_deadline_ms_ = MonoMs() + (flush ? std::max<int64_t>(srv_.opts.handshake_timeout_ms, 2000) : 2000);
    shard_.wheel.Schedule(this, close_deadline_ms_);
    Push(protocol::kWsClose,
         std::make_shared<const std::string>(protocol::WsClosePayload(static_cast<uint16_t>(code), reason)));
  }

  // The shard's deadline wheel: closing deadlines, token expiry, keep-alive. Activity
  // does not reschedule (that would cost on every frame): a check that comes due
  // early finds the peer spoke since and schedules the next one.
  void Tick(int64_t mono_ms, int64_t wall_s) override {
    if (finished_) return;
    if (closing_) {
      if (mono_ms >= close_deadline_ms_) return Finish();
      shard_.wheel.Schedule(this, close_deadline_ms_);
      return;
    }
    // The connection lives no longer than its token: at expiry it is closed with 1008
    // and the client reconnects with a refreshed token.
    if (wall_s >= token_exp_s_) return Close(ws::close_code::policy_error, "token expired", true);
    // Silent for the whole timeout, and pinged at least half of it ago: gone. The
    // second condition matters when checks run late against a short timeout (the ping
    // itself may go out late): a peer always gets a ping and time to answer it.
    const int64_t idle = srv_.opts.idle_timeout_ms;
    int64_t quiet = mono_ms - last_rx_ms_;
    if (ping_sent_ && quiet >= idle && mono_ms - ping_sent_ms_ >= idle / 2) {
      LOG_DEBUG("ws_idle_timeout").Kv("session", session_id_);
      return Finish();
    }
    if (!ping_sent_ && quiet >= idle / 2) {
      ping_sent_ = true;
      ping_sent_ms_ = mono_ms;
      Push(protocol::kWsPing, EmptyPayload());
    }
    ScheduleCheck(mono_ms, wall_s);
  }

  // The next moment something could be due: the ping counted from the last frame (or,
  // once it is out, the idle timeout), or the token's expiry.
  void ScheduleCheck(int64_t mono_ms, int64_t wall_s = WallMs() / 1000) {
    const int64_t idle = srv_.opts.idle_timeout_ms;
    int64_t due = ping_sent_ ? std::max(last_rx_ms_ + idle, ping_sent_ms_ + idle / 2) : last_rx_ms_ + idle / 2;
    int64_t token_due = mono_ms + (token_exp_s_ - wall_s) * 1000;
    shard_.wheel.Schedule(this, std::min(due, token_due));
  }

  void Flush() override {
    dirty_ = false;
    if (finished_ || writing_) return;
    if constexpr (kIsTls<Stream>) WriteTls();
    else WritePlain();
  }

 private:
  // Not a WebSocket opcode (those are 4 bits): bytes written as they are, no frame
  // header (the HTTP 101 answer ahead of the first frames).
  static constexpr uint8_t kRawBytes = 0xF0;

  struct Out {
    std::shared_ptr<const std::string> payload;
    uint8_t hdr[protocol::kWsMaxHeaderBytes];
    uint8_t hdr_len;
    uint8_t opcode;
    size_t size() const { return hdr_len + payload->size(); }
  };

  static const std::shared_ptr<const std::string>& EmptyPayload() {
    static const auto empty = std::make_shared<const std::string>();
    return empty;
  }

  // Frames that count toward queued_bytes_ (limits.send_queue_max_bytes): those that
  // queue at the tail. Pings and pongs jump the queue and are not counted.
  static bool InQueueBytes(uint8_t opcode) { return opcode == protocol::kWsText || opcode == protocol::kWsClose; }

  // Control frames go ahead of queued data (after a frame already being written):
  // a pong must not wait behind a long replay.
  void Push(uint8_t opcode, std::shared_ptr<const std::string> payload) {
    Out o{std::move(payload), {}, 0, opcode};
    o.hdr_len = static_cast<uint8_t>(protocol::WsFrameHeader(opcode, o.payload->size(), o.hdr));
    if (InQueueBytes(opcode)) {
      queued_bytes_ += o.payload->size();
      q_.push_back(std::move(o));
    } else {
      q_.insert(q_.begin() + static_cast<std::ptrdiff_t>(q_head_ + Busy()), std::move(o));
    }
    ScheduleFlush();
  }

  // Queued frames leave at the end of this turn of the event loop (once per turn,
  // and not while an asynchronous write is pending: its completion flushes).
  void ScheduleFlush() {
    if (dirty_ || writing_) return;
    dirty_ = true;
    shard_.MarkDirty(this->shared_from_this());
  }

  // Frames at the head of the queue that must stay: partly written, handed to an
  // asynchronous write that has not completed, or the HTTP answer that must go first.
  size_t Busy() const { return std::max<size_t>(in_flight_, head_sent_ > 0 || answer_unsent_ ? 1 : 0); }

  void DropQueued() {
    size_t keep = q_head_ + Busy();
    for (size_t i = keep; i < q_.size(); ++i)
      if (InQueueBytes(q_[i].opcode)) queued_bytes_ -= q_[i].payload->size();
    q_.erase(q_.begin() + static_cast<std::ptrdiff_t>(keep), q_.end());
  }

  void WritePlain() {
    const int fd = stream_.native_handle();
    while (q_head_ < q_.size()) {
      iovec iov[2 * kMaxIovFrames];
      int cnt = 0;
      size_t off = head_sent_;
      for (size_t i = q_head_; i < q_.size() && cnt < 2 * kMaxIovFrames; ++i, off = 0) {
        const Out& o = q_[i];
        size_t poff = 0;
        if (off < o.hdr_len) iov[cnt++] = {const_cast<uint8_t*>(o.hdr) + off, o.hdr_len - off};
        else poff = off - o.hdr_len;
        if (poff < o.payload->size())
          iov[cnt++] = {const_cast<char*>(o.payload->data()) + poff, o.payload->size() - poff};
      }
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = static_cast<size_t>(cnt);
      ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          // The peer is not reading fast enough: wait until the socket takes more.
          writing_ = true;
          stream_.async_wait(tcp::socket::wait_write, [self = this->shared_from_this()](beast::error_code ec) {
            self->writing_ = false;
            if (self->finished_) return;
            if (ec) return self->Finish();
            self->Flush();
          });
          return;
        }
        return Finish();
      }
      if (!Advance(static_cast<size_t>(n))) return;
    }
    AfterDrained();
  }

  void WriteTls() {
    if constexpr (kIsTls<Stream>) {
      if (q_head_ == q_.size()) return AfterDrained();
      // A TLS write completes whole or fails, so no frame is ever partly written here.
      wbufs_.clear();
      for (size_t i = q_head_; i < q_.size() && wbufs_.size() < 2 * kMaxIovFrames; ++i) {
        const Out& o = q_[i];
        wbufs_.emplace_back(o.hdr, o.hdr_len);
        wbufs_.emplace_back(o.payload->data(), o.payload->size());
        ++in_flight_;
      }
      writing_ = true;
      net::async_write(stream_, wbufs_, [self = this->shared_from_this()](beast::error_code ec, size_t n) {
        self->writing_ = false;
        self->in_flight_ = 0;
        if (self->finished_) return;
        if (ec) return self->Finish();
        if (!self->Advance(n)) return;
        self->Flush();
      });
    }
  }

  // `n` more bytes of the queue went out. False when the session finished meanwhile.
  bool Advance(size_t n) {
    auto& m = metrics::Server();
    bool answer_done = false;
    while (n > 0) {
      Out& o = q_[q_head_];
      size_t left = o.size() - head_sent_;
      if (n < left) {
        head_sent_ += n;
        break;
      }
      n -= left;
      head_sent_ = 0;
      if (InQueueBytes(o.opcode)) queued_bytes_ -= o.payload->size();
      if (o.opcode == protocol::kWsText) {
        m.frames_out.Inc();
      } else if (o.opcode == protocol::kWsClose) {
        close_sent_ = true;
      } else if (o.opcode == kRawBytes) {
        answer_unsent_ = false;
        answer_done = true;
      }
      o.payload.reset();
      ++q_head_;
    }
    if (q_head_ == q_.size()) {
      q_head_ = 0;
      // An idle connection keeps a small queue, not the peak of a replay (nor the
      // room the HTTP answer took next to the first frames).
      if (q_.capacity() > 16 || answer_done) std::vector<Out>().swap(q_);
      else q_.clear();
    } else if (q_head_ >= 256 && q_head_ * 2 >= q_.size()) {
      q_.erase(q_.begin(), q_.begin() + static_cast<std::ptrdiff_t>(q_head_));
      q_head_ = 0;
    }
    if (on_drain_ && Queued() < drain_at_ && !closing_) {
      auto fn = std::move(on_drain_);
      on_drain_ = nullptr;
      fn();
    }
    return !finished_;
  }

  // Everything queued is written.
  void AfterDrained() {
    if (!close_sent_ || finished_) return;
    if (close_received_) {
      // The closing handshake is complete: the server ends the TCP connection.
      ShutdownSend();
      return Finish();
    }
    // After failing the connection: half-close so the peer reads our close and then the
    // end of the stream; what it still sends is read and dropped until it closes too
    // (or the deadline), so that a reset never overtakes the close frame.
    if (failing_) ShutdownSend();
  }

  void StartRead() {
    if (finished_) return;
    if constexpr (kIsTls<Stream>) {
      if (!tls_rx_) tls_rx_ = std::make_unique<char[]>(kTlsReadBytes);
      stream_.async_read_some(net::buffer(tls_rx_.get(), kTlsReadBytes),
                              [self = this->shared_from_this()](beast::error_code ec, size_t n) {
                                if (self->finished_) return;
                                if (ec) return self->Finish();
                                self->last_rx_ms_ = MonoMs();
                                self->ping_sent_ = false;
                                if (self->Consume(self->tls_rx_.get(), n)) self->StartRead();
                              });
    } else {
      stream_.async_wait(tcp::socket::wait_read,
                         [self = this->shared_from_this()](beast::error_code ec) { self->OnReadable(ec); });
    }
  }

  void OnReadable(beast::error_code ec) {
    if (finished_) return;
    if (ec) return Finish();
    const int fd = stream_.native_handle();
    char* buf = shard_.scratch.get();
    // A few reads per wake-up at most, so that one flooding client cannot hold the
    // shard; the socket stays readable and the next wait returns at once.
    for (int i = 0; i < 4; ++i) {
      ssize_t n = ::recv(fd, buf, Shard::kScratchBytes, MSG_DONTWAIT);
      if (n > 0) {
        last_rx_ms_ = MonoMs();
        ping_sent_ = false;
        if (!Consume(buf, static_cast<size_t>(n))) return;
        if (static_cast<size_t>(n) < Shard::kScratchBytes) break;
        continue;
      }
      if (n == 0) return Finish();  // the peer closed
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return Finish();
    }
    StartRead();
  }

  // Parses and handles what was read. False when the session finished.
  bool Consume(char* p, size_t n) {
    if (failing_ || close_received_) return !finished_;  // read and dropped
    char* data = p;
    size_t size = n;
    if (!rx_.empty()) {
      rx_.append(p, n);
      data = rx_.data();
      size = rx_.size();
    }
    size_t off = 0;
    while (!finished_ && !failing_ && !close_received_) {
      size_t used = 0;
      protocol::WsReader::Event ev = reader_.Next(data + off, size - off, &used);
      using K = protocol::WsReader::Kind;
      if (ev.kind == K::kNeedMore) break;
      off += used;
      switch (ev.kind) {
        case K::kText:
          if (!closing_) srv_.core->OnFrame(shard_.index, this, ev.payload);
          break;
        case K::kBinary:
          if (!closing_)
            Send(std::make_shared<const std::string>(protocol::ErrorFrame(
                BadRequest("binary frames are not supported: send JSON text frames"))));
          break;
        case K::kPing:
          if (!closing_) Push(protocol::kWsPong, std::make_shared<const std::string>(ev.payload));
          break;
        case K::kClose:
          OnPeerClose(ev.code);
          break;
        case K::kFail:
          LOG_DEBUG("ws_protocol_error").Kv("session", session_id_).Kv("code", ev.code).Kv("reason", ev.reason);
          failing_ = true;
          Close(static_cast<ws::close_code>(ev.code), ev.reason, /*flush=*/true);
          close_deadline_ms_ = std::min(close_deadline_ms_, MonoMs() + 2000);
          if (!finished_) shard_.wheel.Schedule(this, close_deadline_ms_);
          break;
        default:  // a fragment taken, or a pong
          break;
      }
    }
    if (finished_) return false;
    if (failing_ || close_received_) {
      std::string().swap(rx_);
    } else if (data == p) {
      if (off < size) rx_.assign(data + off, size - off);
    } else {
      rx_.erase(0, off);
      if (rx_.empty() && rx_.capacity() > 4096) std::string().swap(rx_);
    }
    return true;
  }

  void OnPeerClose(uint16_t code) {
    close_received_ = true;
    if (close_sent_) {
      ShutdownSend();
      return Finish();
    }
    if (!closing_) {
      // The peer is leaving: what is still queued would not be read. Echo its code
      // (§5.5.1); a close without one is answered without one.
      closing_ = true;
      on_drain_ = nullptr;
      DropQueued();
      close_deadline_ms_ = MonoMs() + 2000;
      shard_.wheel.Schedule(this, close_deadline_ms_);
      Push(protocol::kWsClose, code ? std::make_shared<const std::string>(protocol::WsClosePayload(code, ""))
                                    : EmptyPayload());
    }
    // Otherwise our own close is queued: AfterDrained ends the connection once it is out.
  }

  tcp::socket& Sock() {
    if constexpr (kIsTls<Stream>) return beast::get_lowest_layer(stream_).socket();
    else return stream_;
  }

  void ShutdownSend() {
    beast::error_code ig;
    Sock().shutdown(tcp::socket::shutdown_send, ig);
  }

  void Finish() {
    if (finished_) return;
    finished_ = true;
    on_drain_ = nullptr;
    beast::error_code ig;
    Sock().close(ig);
    shard_.wheel.Cancel(this);
    if (attached_) {
      srv_.core->Detach(shard_.index, this);
      metrics::Server().connections.Add(-1);
      srv_.ReleaseUserSlot(user_);
    }
    q_.clear();
    q_head_ = head_sent_ = 0;
    std::string().swap(rx_);
  }

  // Small: Asio's SSL stream already buffers whole records; this only hands them over.
  static constexpr size_t kTlsReadBytes = 4096;

  Server::Impl& srv_;
  Shard& shard_;
  Stream stream_;
  int64_t token_exp_s_;
  UserId user_;
  std::string device_;
  uint64_t id_;
  std::string session_id_;
  protocol::WsReader reader_;
  std::string rx_;  // the start of a frame not yet complete
  bool answer_unsent_ = false;  // the HTTP 101 answer is queued, not yet fully written
  std::vector<Out> q_;
  size_t q_head_ = 0;     // q_[q_head_] is the next frame to write
  size_t head_sent_ = 0;  // bytes of it already written
  size_t in_flight_ = 0;  // TLS: frames handed to the pending write
  size_t queued_bytes_ = 0;
  int64_t last_rx_ms_ = 0;
  int64_t close_deadline_ms_ = 0;
  std::function<void()> on_drain_;
  size_t drain_at_ = 0;
  std::unique_ptr<char[]> tls_rx_;
  // TLS only: the buffers of the write in flight.
  std::conditional_t<kIsTls<Stream>, std::vector<net::const_buffer>, std::monostate> wbufs_;
  bool attached_ = false;
  bool dirty_ = false;           // waiting in the shard's flush list
  bool writing_ = false;         // an asynchronous write or wait for writability is pending
  bool closing_ = false;         // a close frame is queued: nothing more is accepted
  bool close_sent_ = false;
  bool close_received_ = false;
  bool failing_ = false;         // closed for a protocol error: input is dropped
  bool ping_sent_ = false;       // keep-alive ping sent since the peer last spoke
  int64_t ping_sent_ms_ = 0;     // when (monotonic)
  bool finished_ = false;
};

// ---------------------------------------------------------------------------------
// HTTP: REST, the upgrade, operational endpoints.

namespace {

// The CORS headers of an answer to a page of `cors` (HttpSession's CorsOrigin). No
// credentials: the API authenticates with bearer tokens, never cookies.
template <class Fields>
void SetCors(Fields& res, std::string_view cors) {
  if (cors.empty()) return;
  res.set(http::field::access_control_allow_origin, cors);
  res.set(http::field::vary, "Origin");
  res.set(http::field::access_control_expose_headers,
          "Retry-After, ETag, Content-Disposition, Content-Range, Accept-Ranges");
}

http::response<http::string_body> ToBeast(const api::HttpResponse& r, unsigned version, bool keep_alive,
                                          std::string_view cors = {}) {
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  res.set(http::field::server, "switchboard");
  res.set(http::field::content_type, r.content_type);
  for (auto& [k, v] : r.headers) res.set(k, v);
  SetCors(res, cors);
  res.keep_alive(keep_alive);
  res.body() = r.body;
  res.prepare_payload();
  if (r.status == 204) {  // no body, so no Content-Length or Content-Type either (RFC 9110)
    res.erase(http::field::content_length);
    res.erase(http::field::content_type);
  }
  return res;
}

api::HttpRequest FromBeast(const http::request<http::string_body>& req, const tcp::socket& sock,
                           const TrustedProxies& trusted) {
  api::HttpRequest r;
  r.method = std::string(Sv(req.method_string()));
  std::string_view target = Sv(req.target());
  size_t q = target.find('?');
  r.path = api::PercentDecode(target.substr(0, q));
  if (q != std::string_view::npos) r.query = api::ParseQuery(target.substr(q + 1));
  r.authorization = std::string(Sv(req[http::field::authorization]));
  r.content_type = std::string(Sv(req[http::field::content_type]));
  r.body = req.body();
  r.remote = ClientAddress(trusted, sock, req);
  return r;
}

api::HttpResponse ErrorResponse(const Status& s) {
  api::HttpResponse r;
  r.status = HttpStatusFor(s.code());
  r.body = protocol::ErrorBody(s);
  return r;
}

// The answer to a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method)
// on any path: what a page of an allowed origin may send. The browser cancels the
// real request on a refusal.
api::HttpResponse Preflight(bool allowed) {
  if (!allowed) return ErrorResponse(Forbidden("origin not allowed: see server.allowed_origins"));
  api::HttpResponse r;
  r.status = 204;
  r.content_type = "text/plain";
  r.headers.emplace_back("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, PATCH, DELETE");
  r.headers.emplace_back("Access-Control-Allow-Headers", "Authorization, Content-Type, Range, If-Range, If-None-Match");
  r.headers.emplace_back("Access-Control-Max-Age", "600");
  return r;
}

}  // namespace

// Ends a TLS connection politely: close_notify, bounded wait for the peer's. The
// caller then shuts the TCP socket down as for a plain connection.
static net::awaitable<void> TlsShutdown(TlsStream& stream) {
  beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
  co_await stream.async_shutdown(net::as_tuple(net::use_awaitable));
}

template <class Stream>
net::awaitable<void> Server::Impl::HttpSession(Shard& sh, Stream stream, bool deadline_armed) {
  auto& lowest = beast::get_lowest_layer(stream);
  beast::flat_buffer buf;
  for (bool first = true;; first = false) {
    // The head first. Attachment routes stream their body to or from disk; every other
    // request is then read whole (body within limits.max_rest_body_bytes).
    http::request_parser<http::empty_body> head;
    head.header_limit(static_cast<std::uint32_t>(opts.max_header_bytes));
    head.body_limit(boost::none);  // judged per route, below
    if (!(first && deadline_armed)) lowest.expires_after(std::chrono::milliseconds(opts.handshake_timeout_ms));
    auto [ec, n] = co_await http::async_read_header(stream, buf, head, net::as_tuple(net::use_awaitable));
    if (!ec && att_api && !ws::is_upgrade(head.get())) {
      std::string_view target = Sv(head.get().target());
      auto route = api::AttachmentApi::Match(Sv(head.get().method_string()),
                                             api::PercentDecode(target.substr(0, target.find('?'))));
      if (route != api::AttachmentApi::Route::kNone) {
        metrics::Server().http_requests.Inc();
        bool keep = route == api::AttachmentApi::Route::kUpload ? co_await UploadAttachment(stream, buf, head)
                                                                 : co_await DownloadAttachment(stream, head);
        if (!keep) co_return;
        continue;
      }
    }
    std::optional<http::request_parser<http::string_body>> parser;
    if (!ec) {
      if (head.content_length() && *head.content_length() > opts.limits.max_rest_body_bytes) {
        ec = http::error::body_limit;  // decided on the declared length, no body byte read
      } else {
        parser.emplace(std::move(head));
        parser->body_limit(opts.limits.max_rest_body_bytes);
        std::tie(ec, n) = co_await http::async_read(stream, buf, *parser, net::as_tuple(net::use_awaitable));
      }
    }
    if (ec) {
      api::HttpResponse r;
      if (ec == http::error::body_limit) r = ErrorResponse(TooLarge("request body is too large"));
      else if (ec == http::error::header_limit) {
        r = ErrorResponse(TooLarge("request headers are too large"));
        r.status = 431;
      } else if (ec != http::error::end_of_stream && ec != beast::error::timeout &&
                 ec != net::error::eof && ec != net::error::connection_reset &&
                 ec != net::error::operation_aborted && buf.size() > 0) {
        r = ErrorResponse(BadRequest("malformed HTTP request"));
      } else {
        co_return;
      }
      auto res = ToBeast(r, 11, false);
      lowest.expires_after(std::chrono::seconds(5));
      co_await http::async_write(stream, res, net::as_tuple(net::use_awaitable));
      if constexpr (kIsTls<Stream>) co_await TlsShutdown(stream);
      beast::error_code ig;
      lowest.socket().shutdown(tcp::socket::shutdown_both, ig);
      co_return;
    }
    http::request<http::string_body> req = parser->release();

    if (ws::is_upgrade(req)) {
      std::string_view target = Sv(req.target());
      std::string_view path = target.substr(0, target.find('?'));
      api::HttpResponse refuse;
      std::optional<auth::Claims> claims;
      if (path != "/v1/ws") {
        refuse = ErrorResponse(NotFound("no WebSocket endpoint here; use /v1/ws"));
      } else if (req[http::field::host].empty()) {
        // Validated here rather than left to Beast so that every refusal carries the
        // contract's JSON error body.
        refuse = ErrorResponse(BadRequest("the upgrade request has no Host header"));
      } else if (req[http::field::sec_websocket_version] != "13") {
        refuse = ErrorResponse(BadRequest("unsupported WebSocket version: use 13"));
        refuse.status = 426;
        refuse.headers.emplace_back("Sec-WebSocket-Version", "13");
      } else if (!ValidWebSocketKey(Sv(req[http::field::sec_websocket_key]))) {
        refuse = ErrorResponse(BadRequest("Sec-WebSocket-Key must be base64 of 16 bytes"));
      } else if (draining) {
        refuse = ErrorResponse(Unavailable("server draining"));
      } else if (ProxiedConnectRefused(sh, lowest.socket(), req)) {
        metrics::Server().connections_refused.Inc();
        refuse = ErrorResponse(RateLimited("too many new connections from this address"));
      } else if (!OriginAllowed(Sv(req[http::field::origin]), Sv(req[http::field::host]))) {
        // Cross-site WebSocket hijacking: a page on another site cannot use the
        // visitor's token through the browser.
        refuse = ErrorResponse(Forbidden("origin not allowed"));
      } else {
        std::string token(api::BearerToken(Sv(req[http::field::authorization])));
        if (token.empty()) {
          size_t q = target.find('?');
          if (q != std::string_view::npos) {
            for (auto& [k, v] : api::ParseQuery(target.substr(q + 1)))
              if (k == "access_token") token = v;
          }
        }
        if (token.empty()) {
          refuse = ErrorResponse(Unauthorized("missing access token"));
        } else {
          auto c = tokens.Verify(token);
          if (!c.ok()) refuse = ErrorResponse(c.status());
          else if (revoked.IsRevoked(*c)) refuse = ErrorResponse(Unauthorized("token revoked (device logged out)"));
          else if (!TakeUserSlot(c->user))
            refuse = ErrorResponse(RateLimited("too many open connections for this user"));
          else claims = std::move(*c);
        }
      }
      if (!claims) {
        metrics::Server().upgrades_rejected.Inc();
        auto res = ToBeast(refuse, req.version(), false);
        co_await http::async_write(stream, res, net::as_tuple(net::use_awaitable));
        if constexpr (kIsTls<Stream>) co_await TlsShutdown(stream);
        beast::error_code ig;
        lowest.socket().shutdown(tcp::socket::shutdown_both, ig);
        co_return;
      }
      // §4.2.2: no subprotocol and no extension is selected.
      const std::string accept = protocol::WsAcceptKey(Sv(req[http::field::sec_websocket_key]));
      // Bytes the client sent right behind its request belong to the WebSocket.
      std::string early(static_cast<const char*>(buf.cdata().data()), buf.size());
      // The session lives on in its own handlers and this coroutine ends here, so its
      // frame (HTTP parser, handshake buffer) is not kept for the life of the connection.
      if constexpr (kIsTls<Stream>) {
        http::response<http::empty_body> res{http::status::switching_protocols, req.version()};
        res.set(http::field::server, "switchboard");
        res.set(http::field::upgrade, "websocket");
        res.set(http::field::connection, "Upgrade");
        res.set(http::field::sec_websocket_accept, accept);
        lowest.expires_after(std::chrono::milliseconds(opts.handshake_timeout_ms));
        auto [uec, un] = co_await http::async_write(stream, res, net::as_tuple(net::use_awaitable));
        if (uec) {
          ReleaseUserSlot(claims->user);
          co_return;
        }
        lowest.expires_never();
        std::make_shared<WsSession<TlsStream>>(*this, sh, std::move(stream), std::move(*claims))
            ->Start(std::move(early));
      } else {
        // Plain TCP: the answer is queued ahead of `welcome` and both leave in one
        // sendmsg (one syscall and one TCP segment less per connect). From here the
        // session's write path and deadlines apply, as for any frame.
        std::string answer = "HTTP/1.1 101 Switching Protocols\r\nServer: switchboard\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Accept: ";
        answer += accept;
        answer += "\r\n\r\n";
        lowest.expires_never();
        std::make_shared<WsSession<tcp::socket>>(*this, sh, lowest.release_socket(), std::move(*claims))
            ->Start(std::move(early), std::move(answer));
      }
      co_return;
    }

    const std::string cors = CorsOrigin(req);
    api::HttpResponse ares;
    if (req.method() == http::verb::options && !req[http::field::origin].empty() &&
        !req[http::field::access_control_request_method].empty()) {
      ares = Preflight(!cors.empty());
    } else {
      api::HttpRequest areq = FromBeast(req, lowest.socket(), opts.trusted_proxies);
      // REST handlers may block (argon2id, store reads): run them on the pool and come
      // back to this shard for the write.
      ares = co_await net::co_spawn(
          pool, [this, &areq]() -> net::awaitable<api::HttpResponse> { co_return rest.Handle(areq); },
          net::use_awaitable);
    }
    bool keep_alive = req.keep_alive() && !draining;
    auto res = ToBeast(ares, req.version(), keep_alive, cors);
    lowest.expires_after(std::chrono::milliseconds(opts.handshake_timeout_ms));
    auto [wec, wn] = co_await http::async_write(stream, res, net::as_tuple(net::use_awaitable));
    if (wec || !keep_alive) {
      if constexpr (kIsTls<Stream>) {
        if (!wec) co_await TlsShutdown(stream);
      }
      beast::error_code ig;
      lowest.socket().shutdown(tcp::socket::shutdown_send, ig);
      co_return;
    }
  }
}

// ---------------------------------------------------------------------------------
// Attachments: bodies streamed between the socket and the attachment store in
// chunks, so neither an upload nor a download is ever held whole in memory. File
// writes, hashing, fsync and reads run on the blocking pool, never on the shard.

namespace {
constexpr size_t kAttachmentChunk = 64 * 1024;

bool QuietError(const beast::error_code& ec) {
  return ec == beast::error::timeout || ec == net::error::eof || ec == net::error::connection_reset ||
         ec == net::error::operation_aborted || ec == http::error::end_of_stream ||
         ec == http::error::partial_message;
}
}  // namespace

template <class Stream>
net::awaitable<void> Server::Impl::RefuseAndClose(Stream& stream, const api::HttpResponse& r, unsigned version,
                                                  std::string_view cors) {
  auto& lowest = beast::get_lowest_layer(stream);
  auto res = ToBeast(r, version, false, cors);
  lowest.expires_after(std::chrono::seconds(5));
  auto [wec, wn] = co_await http::async_write(stream, res, net::as_tuple(net::use_awaitable));
  if constexpr (kIsTls<Stream>) {
    if (!wec) co_await TlsShutdown(stream);
  }
  beast::error_code ig;
  lowest.socket().shutdown(tcp::socket::shutdown_send, ig);
  if (!wec) {
    lowest.expires_after(std::chrono::seconds(2));
    char sink[16384];
    for (size_t total = 0; total < (1u << 20);) {
      auto [rec, rn] = co_await lowest.async_read_some(net::buffer(sink), net::as_tuple(net::use_awaitable));
      if (rec) break;
      total += rn;
    }
  }
  lowest.socket().close(ig);
}

template <class Stream>
net::awaitable<bool> Server::Impl::UploadAttachment(Stream& stream, beast::flat_buffer& buf,
                                                    http::request_parser<http::empty_body>& head) {
  auto& lowest = beast::get_lowest_layer(stream);
  const unsigned version = head.get().version();
  const std::string cors = CorsOrigin(head.get());
  // The token is checked on the head: a caller without one gets 401 before any body
  // byte is read.
  auto user = att_api->Authenticate(Sv(head.get()[http::field::authorization]));
  if (!user.ok()) {
    co_await RefuseAndClose(stream, api::AttachmentApi::ErrorAnswer(user.status()), version, cors);
    co_return false;
  }
  if (draining) {
    co_await RefuseAndClose(stream, api::AttachmentApi::ErrorAnswer(Unavailable("server draining")), version, cors);
    co_return false;
  }
  // Content type, declared length and a free upload slot, still before the body.
  std::optional<uint64_t> declared;
  if (head.content_length()) declared = *head.content_length();
  int64_t retry_after_s = 0;
  auto begun = att_api->BeginUpload(*user, Sv(head.get()[http::field::content_type]), declared, &retry_after_s);
  if (!begun.ok()) {
    api::HttpResponse refusal = api::AttachmentApi::ErrorAnswer(begun.status());
    if (retry_after_s > 0) refusal.headers.emplace_back("Retry-After", std::to_string(retry_after_s));
    co_await RefuseAndClose(stream, refusal, version, cors);
    co_return false;
  }
  api::AttachmentApi::Upload upload = std::move(*begun);
  if (!head.is_done() && beast::iequals(head.get()[http::field::expect], "100-continue")) {
    http::response<http::empty_body> cont{http::status::continue_, version};
    lowest.expires_after(std::chrono::milliseconds(opts.handshake_timeout_ms));
    auto [cec, cn] = co_await http::async_write(stream, cont, net::as_tuple(net::use_awaitable));
    if (cec) co_return false;
  }

  // The body, chunk by chunk. Content-Length bodies were judged on the head; a chunked
  // body is cut by the parser's limit as it arrives.
  http::request_parser<http::buffer_body> body(std::move(head));
  body.body_limit(att_api->max_bytes());
  // A 25 MiB upload over a slow link outlives the handshake timeout by far: the body
  // has its own (server.upload_timeout_ms).
  lowest.expires_after(std::chrono::milliseconds(opts.upload_timeout_ms));
  std::unique_ptr<char[]> chunk(new char[kAttachmentChunk]);
  while (!body.is_done()) {
    body.get().body().data = chunk.get();
    body.get().body().size = kAttachmentChunk;
    auto [rec, rn] = co_await http::async_read(stream, buf, body, net::as_tuple(net::use_awaitable));
    if (rec == http::error::need_buffer) rec = {};
    size_t got = kAttachmentChunk - body.get().body().size;
    if (got > 0 && !rec) {
      Status st = co_await net::co_spawn(
          pool,
          [&upload, &chunk, got]() -> net::awaitable<Status> { co_return upload.file->Append(chunk.get(), got); },
          net::use_awaitable);
      if (!st.ok()) {  // over the limit (413) or a disk error (503)
        upload.file.reset();  // the temp file goes now, not after the lingering close
        co_await RefuseAndClose(stream, api::AttachmentApi::ErrorAnswer(st), version, cors);
        co_return false;
      }
    }
    if (rec) {
      upload.file.reset();
      if (rec == http::error::body_limit) {
        co_await RefuseAndClose(
            stream,
            api::AttachmentApi::ErrorAnswer(
                TooLarge("attachments are limited to " + std::to_string(att_api->max_bytes()) + " bytes")),
            version, cors);
      } else if (!QuietError(rec)) {
        co_await RefuseAndClose(stream, api::AttachmentApi::ErrorAnswer(BadRequest("malformed HTTP request")),
                                version, cors);
      } else {
        LOG_DEBUG("attachment_upload_cut").Kv("error", rec.message());
        beast::error_code ig;
        lowest.socket().close(ig);
      }
      co_return false;
    }
  }

  // fsync, rename, store record: blocking.
  api::HttpResponse ares = co_await net::co_spawn(
      pool, [this, &upload]() -> net::awaitable<api::HttpResponse> { co_return att_api->FinishUpload(upload); },
      net::use_awaitable);
  upload.file.reset();  // frees the upload slot before the answer is written
  bool keep_alive = body.get().keep_alive() && !draining;
  auto res = ToBeast(ares, version, keep_alive, cors);
  lowest.expires_after(std::chrono::milliseconds(opts.handshake_timeout_ms));
  auto [wec, wn] = co_await http::async_write(stream, res, net::as_tuple(net::use_awaitable));
  if (wec || !keep_alive) {
    if constexpr (kIsTls<Stream>) {
      if (!wec) co_await TlsShutdown(stream);
    }
    beast::error_code ig;
    lowest.socket().shutdown(tcp::socket::shutdown_send, ig);
    co_return false;
  }
  co_return true;
}

template <class Stream>
net::awaitable<bool> Server::Impl::DownloadAttachment(Stream& stream, http::request_parser<http::empty_body>& head) {
  auto& lowest = beast::get_lowest_layer(stream);
  const auto& req = head.get();
  const unsigned version = req.version();
  const std::string cors = CorsOrigin(req);
  // HEAD: the same head as GET (Content-Length included), without the bytes.
  const bool is_head = req.method() == http::verb::head;
  if (!head.is_done()) {  // a GET with a body: not ours to guess what it means
    co_await RefuseAndClose(stream, api::AttachmentApi::ErrorAnswer(BadRequest("GET with a body")), version, cors);
    co_return false;
  }
  bool keep_alive = req.keep_alive() && !draining;
  auto answer = [&](const api::HttpResponse& r) -> net::awaitable<bool> {
    auto res = ToBeast(r, version, keep_alive, cors);
    lowest.expires_after(std::chrono::milliseconds(opts.handshake_timeout_ms));
    http::response_serializer<http::string_body> rs{res};
    auto [wec, wn] = is_head ? co_await http::async_write_header(stream, rs, net::as_tuple(net::use_awaitable))
                             : co_await http::async_write(stream, rs, net::as_tuple(net::use_awaitable));
    if (wec || !keep_alive) {
      beast::error_code ig;
      lowest.socket().shutdown(tcp::socket::shutdown_send, ig);
      co_return false;
    }
    co_return true;
  };
  auto user = att_api->Authenticate(Sv(req[http::field::authorization]));
  if (!user.ok()) co_return co_await answer(api::AttachmentApi::ErrorAnswer(user.status()));
  std::string_view target = Sv(req.target());
  std::string path = api::PercentDecode(target.substr(0, target.find('?')));
  // Authorization (store reads) and open: blocking.
  // (co_spawn wants a default-constructible result: hence the optional.)
  auto opened = co_await net::co_spawn(
      pool,
      [this, &user, &path]() -> net::awaitable<std::optional<Result<api::AttachmentApi::Download>>> {
        co_return att_api->OpenDownload(*user, path);
      },
      net::use_awaitable);
  Result<api::AttachmentApi::Download>& dl = *opened;
  if (!dl.ok()) co_return co_await answer(api::AttachmentApi::ErrorAnswer(dl.status()));

  const uint64_t size = dl->file.size();
  // Range is defined for GET only (RFC 9110 §14.2); If-None-Match applies to HEAD too.
  const auto plan = api::AttachmentApi::PlanDownload(is_head ? "" : Sv(req[http::field::range]),
                                                     is_head ? "" : Sv(req[http::field::if_range]),
                                                     Sv(req[http::field::if_none_match]), dl->etag, size);
  using Plan = api::AttachmentApi::Plan;
  if (plan.kind == Plan::kUnsatisfiable) {
    api::HttpResponse r = api::AttachmentApi::ErrorAnswer(BadRequest("range not satisfiable"));
    r.status = 416;
    r.headers.emplace_back("Content-Range", "bytes */" + std::to_string(size));
    co_return co_await answer(r);
  }
  // The bytes [off, end) go out: all of them, or the one range asked for.
  uint64_t off = plan.kind == Plan::kPartial ? plan.first : 0;
  const uint64_t end = plan.kind == Plan::kPartial ? plan.last + 1 : plan.kind == Plan::kNotModified ? 0 : size;
  http::response<http::buffer_body> res{plan.kind == Plan::kPartial       ? http::status::partial_content
                                        : plan.kind == Plan::kNotModified ? http::status::not_modified
                                                                          : http::status::ok,
                                        version};
  res.set(http::field::server, "switchboard");
  for (auto& [k, v] : dl->headers) res.set(k, v);
  SetCors(res, cors);
  if (plan.kind == Plan::kPartial)
    res.set(http::field::content_range,
            "bytes " + std::to_string(plan.first) + "-" + std::to_string(plan.last) + "/" + std::to_string(size));
  if (plan.kind == Plan::kNotModified) {
    res.erase(http::field::content_type);  // a 304 carries no content
    res.erase(http::field::content_disposition);
  } else {
    res.content_length(end - off);
  }
  res.keep_alive(keep_alive);
  res.body().data = nullptr;
  res.body().more = off < end;
  http::response_serializer<http::buffer_body> sr{res};
  lowest.expires_after(std::chrono::milliseconds(opts.upload_timeout_ms));
  auto [hec, hn] = co_await http::async_write_header(stream, sr, net::as_tuple(net::use_awaitable));
  if (hec) co_return false;
  std::unique_ptr<char[]> chunk(new char[is_head ? 0 : kAttachmentChunk]);
  while (!is_head && off < end) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kAttachmentChunk, end - off));
    std::optional<Result<size_t>> read = co_await net::co_spawn(
        pool,
        [&dl, &chunk, off, want]() -> net::awaitable<std::optional<Result<size_t>>> {
          co_return dl->file.ReadAt(off, chunk.get(), want);
        },
        net::use_awaitable);
    Result<size_t>& got = *read;
    if (!got.ok() || *got == 0) {
      // The head is out: the only honest signal left is cutting the connection short
      // of its Content-Length.
      LOG_ERROR("attachment_read_failed").Kv("error", got.ok() ? "file shorter than recorded" : got.status().message());
      beast::error_code ig;
      lowest.socket().close(ig);
      co_return false;
    }
    off += *got;
    res.body().data = chunk.get();
    res.body().size = *got;
    res.body().more = off < end;
    auto [wec, wn] = co_await http::async_write(stream, sr, net::as_tuple(net::use_awaitable));
    if (wec == http::error::need_buffer) wec = {};
    if (wec) co_return false;
  }
  if (!keep_alive) {
    if constexpr (kIsTls<Stream>) co_await TlsShutdown(stream);
    beast::error_code ig;
    lowest.socket().shutdown(tcp::socket::shutdown_send, ig);
    co_return false;
  }
  co_return true;
}

// Plain HTTP on the TLS port: a plain-text 400, then close. A coroutine of its own so
// that its locals do not sit in the frame of every TLS connection.
static net::awaitable<void> RefusePlainHttp(beast::tcp_stream& tcp) {
  auto res = ToBeast(ErrorResponse(BadRequest("this port speaks TLS only: use https:// or wss://")), 11, false);
  tcp.expires_after(std::chrono::seconds(2));
  auto [wec, wn] = co_await http::async_write(tcp, res, net::as_tuple(net::use_awaitable));
  beast::error_code ig;
  if (!wec) {
    // Read what the client still sends until it closes (bounded), so that closing
    // does not reset the connection before the client has read the answer.
    tcp.socket().shutdown(tcp::socket::shutdown_send, ig);
    char sink[1024];
    for (size_t total = 0; total < 65536;) {
      auto [dec, dn] = co_await tcp.async_read_some(net::buffer(sink), net::as_tuple(net::use_awaitable));
      if (dec) break;
      total += dn;
    }
  }
  tcp.socket().close(ig);
}

net::awaitable<void> Server::Impl::TlsSession(Shard& sh, tcp::socket sock, TlsContextPtr ctx) {
  // `ctx` lives as long as this coroutine, i.e. as long as the connection's sessions.
  beast::tcp_stream tcp(std::move(sock));
  // One handshake_timeout covers the TLS handshake and the first HTTP request
  // (slowloris: a client trickling a ClientHello gains nothing).
  tcp.expires_after(std::chrono::milliseconds(opts.handshake_timeout_ms));
  // A TLS connection starts with a handshake record (content type 22). Anything else
  // is almost always plain HTTP sent to this port: answer it in plain text with a 400
  // saying so, rather than with a TLS alert the client cannot show.
  beast::flat_buffer first;
  auto [rec, n] = co_await tcp.async_read_some(first.prepare(1024), net::as_tuple(net::use_awaitable));
  if (rec) co_return;
  first.commit(n);
  if (static_cast<const unsigned char*>(first.cdata().data())[0] != 0x16) {
    metrics::Server().tls_handshake_failures.Inc();
    co_await RefusePlainHttp(tcp);
    co_return;
  }
  TlsStream stream(std::move(tcp), *ctx);
  auto [hec, used] = co_await stream.async_handshake(ssl::stream_base::server, first.cdata(),
                                                     net::as_tuple(net::use_awaitable));
  if (hec) {
    metrics::Server().tls_handshake_failures.Inc();
    LOG_DEBUG("tls_handshake_failed").Kv("error", hec.message());
    beast::error_code ig;
    beast::get_lowest_layer(stream).socket().close(ig);
    co_return;
  }
  // This frame lives as long as the connection: give the peeked bytes' memory back.
  first.consume(first.size());
  first.shrink_to_fit();
  co_await HttpSession(sh, std::move(stream), /*deadline_armed=*/true);
}

void Server::Impl::ReloadTls() {
  auto ctx = MakeTlsContext(opts.tls);
  if (!ctx.ok()) {
    LOG_ERROR("tls_reload_failed").Kv("error", ctx.status().message()).Kv("kept", "previous certificate");
    return;
  }
  for (auto& sh : shards) net::post(sh->io, [s = sh.get(), c = *ctx] { s->tls = c; });
  LOG_INFO("tls_reloaded").Kv("cert", opts.tls.cert_file);
}

net::awaitable<void> Server::Impl::Accept(Shard& sh) {
  for (;;) {
    auto [ec, sock] = co_await sh.acceptor->async_accept(net::as_tuple(net::use_awaitable));
    if (ec) {
      if (ec == net::error::operation_aborted || !sh.acceptor->is_open()) co_return;
      // Out of file descriptors or similar: back off briefly instead of spinning.
      LOG_WARN("accept_failed").Kv("error", ec.message());
      net::steady_timer t(sh.io, std::chrono::milliseconds(50));
      co_await t.async_wait(net::as_tuple(net::use_awaitable));
      continue;
    }
    beast::error_code ig;
    auto ep = sock.remote_endpoint(ig);
    std::string peer = ig ? std::string() : ep.address().to_string();
    // A trusted reverse proxy carries many clients: their limit is applied per
    // client address at the upgrade (ProxiedConnectRefused), not to the proxy here.
    if (!ig && !opts.trusted_proxies.Contains(peer) && !AdmitConnection(sh, peer)) {
      // Too many new connections from one address: refuse cheaply, before any TLS or
      // HTTP work (reconnect storms from one NAT are spread by client backoff).
      metrics::Server().connections_refused.Inc();
      sock.close(ig);
      continue;
    }
    sock.set_option(tcp::no_delay(true), ig);
    if (sh.tls)
      net::co_spawn(sh.io, TlsSession(sh, std::move(sock), sh.tls), net::detached);
    else
      net::co_spawn(sh.io, HttpSession(sh, beast::tcp_stream(std::move(sock)), false), net::detached);
  }
}

// Presence expiry, offline announcements and typing expiry run once a second per shard.
net::awaitable<void> Server::Impl::Ticker(Shard& sh) {
  net::steady_timer t(sh.io);
  for (;;) {
    t.expires_after(std::chrono::seconds(1));
    auto [ec] = co_await t.async_wait(net::as_tuple(net::use_awaitable));
    if (ec) co_return;
    core->Tick(sh.index);
    sh.Sweep();
  }
}

void Server::Impl::StartDrain() {
  if (draining.exchange(true)) return;
  net::co_spawn(control, Drain(), net::detached);
}

net::awaitable<void> Server::Impl::Drain() {
  LOG_INFO("drain_started").Kv("sessions", core->Sessions()).Kv("in_flight", core->InFlight());
  rest.SetDraining();
  for (auto& sh : shards) {
    net::post(sh->io, [s = sh.get()] {
      beast::error_code ig;
      if (s->acceptor) s->acceptor->close(ig);
    });
  }
  net::steady_timer timer(control);
  // 1. Let accepted sends reach the store and their acks reach the sockets.
  int64_t deadline = MonoNs() + opts.drain_timeout_ms * 1000000;
  while (core->InFlight() > 0 && MonoNs() < deadline) {
    timer.expires_after(std::chrono::milliseconds(5));
    co_await timer.async_wait(net::as_tuple(net::use_awaitable));
  }
  // 2. Close every socket with 1001 after what is queued for it.
  for (auto& sh : shards) {
    net::post(sh->io, [this, s = sh.get()] {
      core->ForEachSession(s->index, [](chat::Session* cs) {
        cs->Close(static_cast<uint16_t>(ws::close_code::going_away), "server draining");
      });
    });
  }
  deadline = MonoNs() + 5000ll * 1000000;
  while (core->Sessions() > 0 && MonoNs() < deadline) {
    timer.expires_after(std::chrono::milliseconds(5));
    co_await timer.async_wait(net::as_tuple(net::use_awaitable));
  }
  LOG_INFO("drain_finished").Kv("sessions_left", core->Sessions()).Kv("in_flight", core->InFlight());
  for (auto& sh : shards) sh->io.stop();
  control.stop();
}

// ---------------------------------------------------------------------------------

Server::Server(ServerOptions opts, const auth::TokenService& tokens, const auth::Revocations& revoked,
               api::RestApi& rest)
    : impl_(std::make_unique<Impl>(std::move(opts), tokens, revoked, rest)) {}

Server::~Server() {
  for (auto& sh : impl_->shards)
    if (sh->thread.joinable()) {
      sh->io.stop();
      sh->thread.join();
    }
  impl_->pool.stop();
  impl_->pool.join();
}

std::vector<chat::Executor*> Server::Executors() {
  std::vector<chat::Executor*> out;
  for (auto& sh : impl_->shards) out.push_back(&sh->exec);
  return out;
}

unsigned Server::shard_count() const { return static_cast<unsigned>(impl_->shards.size()); }

void Server::SetCore(chat::ChatCore* core) { impl_->core = core; }

void Server::SetAttachments(api::AttachmentApi* attachments) { impl_->att_api = attachments; }

Result<uint16_t> Server::Listen() {
  beast::error_code ec;
  auto addr = net::ip::make_address(impl_->opts.host, ec);
  if (ec) return BadRequest("invalid listen address '" + impl_->opts.host + "'");
  uint16_t port = impl_->opts.port;
  if (impl_->opts.tls.enabled()) {
    auto ctx = MakeTlsContext(impl_->opts.tls);
    if (!ctx.ok()) return ctx.status();
    for (auto& sh : impl_->shards) sh->tls = *ctx;
  }
  for (auto& sh : impl_->shards) {
    tcp::acceptor a(sh->io);
    tcp::endpoint ep(addr, port);
    a.open(ep.protocol(), ec);
    if (!ec) a.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) {
      // Every shard binds the same port; the kernel spreads new connections.
      int one = 1;
      if (::setsockopt(a.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        return Internal("SO_REUSEPORT failed");
    }
    if (!ec) a.bind(ep, ec);
    if (!ec) a.listen(4096, ec);
    if (ec) return Unavailable("cannot listen on " + impl_->opts.host + ":" + std::to_string(port) + ": " + ec.message());
    port = a.local_endpoint().port();
    sh->acceptor.emplace(std::move(a));
  }
  impl_->port = port;
  return port;
}

void Server::Run() {
  Impl& im = *impl_;
  net::signal_set signals(im.control, SIGINT, SIGTERM);
  signals.async_wait([&im](beast::error_code ec, int sig) {
    if (ec) return;
    LOG_INFO("signal").Kv("signal", sig);
    im.StartDrain();
  });
  // SIGHUP: reload the certificate and key (rotation without a restart). Only with
  // TLS on; otherwise SIGHUP keeps its default action.
  std::optional<net::signal_set> hup;
  std::function<void()> wait_hup;
  if (im.opts.tls.enabled()) {
    hup.emplace(im.control, SIGHUP);
    wait_hup = [&] {
      hup->async_wait([&](beast::error_code ec, int) {
        if (ec) return;
        LOG_INFO("signal").Kv("signal", SIGHUP);
        im.ReloadTls();
        wait_hup();
      });
    };
    wait_hup();
  }
  for (auto& sh : im.shards) {
    net::co_spawn(sh->io, im.Accept(*sh), net::detached);
    net::co_spawn(sh->io, im.Ticker(*sh), net::detached);
    sh->thread = std::thread([s = sh.get()] {
      std::string name = "shard-" + std::to_string(s->index);
      pthread_setname_np(pthread_self(), name.c_str());
      auto guard = net::make_work_guard(s->io);
      s->io.run();
    });
  }
  LOG_INFO("listening")
      .Kv("addr", im.opts.host + ":" + std::to_string(im.port))
      .Kv("shards", im.shards.size())
      .Kv("tls", im.opts.tls.enabled());
  auto guard = net::make_work_guard(im.control);
  im.control.run();
  for (auto& sh : im.shards)
    if (sh->thread.joinable()) sh->thread.join();
}

void Server::Shutdown() {
  net::post(impl_->control, [this] { impl_->StartDrain(); });
}

}  // namespace sb::gateway
