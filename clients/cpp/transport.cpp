// The only translation unit of the client library that sees Boost.Asio/Beast.
//
// Every object owns its own io_context and drives it from the caller's thread, so a
// blocking call is "start async ops, run the context until they finish or a deadline
// passes". The WebSocket keeps one async_read outstanding for its whole life: frames
// are queued as they arrive and RecvFrame() only waits on the queue, which gives
// receive timeouts without ever cancelling a read halfway through a frame (Beast
// leaves a stream unusable after that).
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <deque>
#include <functional>
#include <random>
#include <utility>

#include "sb_client.h"

namespace sb::client {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

namespace {

constexpr size_t kMaxHttpBody = 64u << 20;

std::string HostHeader(const std::string& host, uint16_t port) {
  return host + ":" + std::to_string(port);
}

template <typename Fields>
Headers CopyHeaders(const Fields& fields) {
  Headers out;
  for (const auto& f : fields)
    out.emplace_back(std::string(f.name_string()), std::string(f.value()));
  return out;
}

// Runs `ioc` until done() or the deadline. Returns done(). A deadline already past
// still runs whatever is ready, so a zero timeout means "poll".
bool RunUntil(asio::io_context& ioc, const std::function<bool()>& done,
              SteadyClock::time_point deadline) {
  while (!done()) {
    if (ioc.stopped()) ioc.restart();
    auto now = SteadyClock::now();
    if (now >= deadline) {
      while (!done() && ioc.poll_one() > 0) {
      }
      return done();
    }
    size_t n = ioc.run_one_for(deadline - now);
    // Stopped with nothing run means no work is left: nothing can change done().
    if (n == 0 && ioc.stopped()) return done();
  }
  return true;
}

// A client TLS context that verifies the server's chain against `cfg.ca_file` (or
// the system's trust store). Null with *error when the CA file cannot be used.
std::unique_ptr<ssl::context> ClientTlsContext(const TlsConfig& cfg, std::string* error) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  ctx->set_verify_mode(ssl::verify_peer);
  beast::error_code ec;
  if (!cfg.ca_file.empty()) ctx->load_verify_file(cfg.ca_file, ec);
  else ctx->set_default_verify_paths(ec);
  if (ec) {
    *error = "tls: cannot load CA " + (cfg.ca_file.empty() ? "store" : "file " + cfg.ca_file) + ": " + ec.message();
    return nullptr;
  }
  return ctx;
}

// Per connection: the name (or IP address) the certificate must be valid for, and
// SNI for names.
void ConfigureTlsPeer(SSL* ssl, const std::string& host, const TlsConfig& cfg) {
  const std::string& name = cfg.server_name.empty() ? host : cfg.server_name;
  beast::error_code ec;
  asio::ip::make_address(name, ec);
  if (ec) {
    SSL_set_tlsext_host_name(ssl, name.c_str());
    SSL_set1_host(ssl, name.c_str());
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  } else {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str());
  }
}

}  // namespace

// ---- HTTP --------------------------------------------------------------------------

HttpResponse Http(const std::string& host, uint16_t port, std::string_view method,
                  std::string_view target, std::string_view body, Headers headers, Millis timeout) {
  return Http(Endpoint{host, port, {}}, method, target, body, std::move(headers), timeout);
}

HttpResponse Http(const Endpoint& ep, std::string_view method, std::string_view target,
                  std::string_view body, Headers headers, Millis timeout) {
  const std::string& host = ep.host;
  const uint16_t port = ep.port;
  HttpResponse out;
  asio::io_context ioc;
  std::unique_ptr<ssl::context> tls_ctx;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  if (ep.tls.enabled) {
    tls_ctx = ClientTlsContext(ep.tls, &out.error);
    if (!tls_ctx) return out;
    secure.emplace(ioc, *tls_ctx);
    ConfigureTlsPeer(secure->native_handle(), host, ep.tls);
  } else {
    plain.emplace(ioc);
  }
  beast::tcp_stream& stream = secure ? beast::get_lowest_layer(*secure) : *plain;
  tcp::resolver resolver(ioc);

  beast::error_code ec;
  auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) {
    out.error = "resolve " + host + ": " + ec.message();
    return out;
  }

  http::request<http::string_body> req;
  http::verb verb = http::string_to_verb(method);
  if (verb == http::verb::unknown) {
    req.method_string(method);
  } else {
    req.method(verb);
  }
  req.target(target);
  req.version(11);
  req.set(http::field::host, HostHeader(host, port));
  req.set(http::field::user_agent, "sb-client");
  req.set(http::field::connection, "close");
  bool has_content_type = false;
  for (auto& [k, v] : headers) {
    if (beast::iequals(k, "content-type")) has_content_type = true;
    req.insert(k, v);
  }
  if (!body.empty() && !has_content_type) req.set(http::field::content_type, "application/json");
  req.body() = std::string(body);
  req.prepare_payload();

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxHttpBody);
  if (verb == http::verb::head) parser.skip(true);

  // Write the request, read the answer, on the plain or the TLS stream.
  auto exchange = [&](auto& s) {
    http::async_write(s, req, [&](beast::error_code wec, size_t) {
      if (wec) {
        out.error = "write: " + wec.message();
        return;
      }
      http::async_read(s, buffer, parser, [&](beast::error_code rec, size_t) {
        if (rec) {
          out.error = "read: " + rec.message();
          return;
        }
        auto& res = parser.get();
        out.status = static_cast<int>(res.result_int());
        out.headers = CopyHeaders(res.base());
        out.body = std::move(res.body());
      });
    });
  };
  // One absolute deadline covers connect, TLS handshake, write and read.
  stream.expires_after(timeout);
  stream.async_connect(endpoints, [&](beast::error_code cec, const tcp::endpoint&) {
    if (cec) {
      out.error = "connect: " + cec.message();
      return;
    }
    if (!secure) return exchange(*plain);
    secure->async_handshake(ssl::stream_base::client, [&](beast::error_code hec) {
      if (hec) {
        out.error = "tls handshake: " + hec.message();
        return;
      }
      exchange(*secure);
    });
  });
  ioc.run();
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  return out;
}

// ---- WebSocket ---------------------------------------------------------------------

struct WsClient::Impl {
  using PlainWs = websocket::stream<tcp::socket>;
  using TlsWs = websocket::stream<beast::ssl_stream<tcp::socket>>;

  asio::io_context ioc;
  std::unique_ptr<ssl::context> tls_ctx;  // declared before the streams: outlives them
  // Exactly one is set: plain (ws://, also before Connect) or TLS (wss://).
  std::optional<PlainWs> plain{std::in_place, ioc};
  std::optional<TlsWs> secure;
  beast::flat_buffer rbuf;

  // Runs fn on whichever WebSocket stream is in use.
  template <class F>
  decltype(auto) With(F&& fn) {
    if (secure) return fn(*secure);
    return fn(*plain);
  }
  tcp::socket& Socket() { return secure ? beast::get_lowest_layer(*secure) : plain->next_layer(); }
  void CloseSocket() {
    beast::error_code ignored;
    Socket().close(ignored);
  }

  std::deque<WsFrame> inbox;
  // The close/error that ended the stream; RecvFrame repeats it once the queue is empty.
  std::optional<WsFrame> terminal;
  bool reading = false;
  bool open = false;

  int upgrade_status = 0;
  std::string upgrade_body;
  Headers upgrade_headers;
  std::string error;
  std::optional<uint16_t> close_code;
  std::string close_reason;

  bool Run(const std::function<bool()>& done, SteadyClock::time_point deadline) {
    return RunUntil(ioc, done, deadline);
  }

  void StartRead() {
    With([this](auto& ws) { StartRead(ws); });
  }

  template <class Ws>
  void StartRead(Ws& ws) {
    reading = true;
    ws.async_read(rbuf, [this, &ws](beast::error_code ec, size_t) {
      reading = false;
      if (!ec) {
        WsFrame f;
        f.kind = ws.got_text() ? WsFrame::Kind::kText : WsFrame::Kind::kBinary;
        f.data = beast::buffers_to_string(rbuf.data());
        rbuf.consume(rbuf.size());
        inbox.push_back(std::move(f));
        StartRead(ws);
        return;
      }
      open = false;
      WsFrame f;
      const websocket::close_reason& cr = ws.reason();
      // Beast records a received close frame in reason() even when its automatic
      // reply then fails (the server may drop TCP right after its close frame), so the
      // peer's code is reported whatever `ec` says.
      if (cr.code != websocket::close_code::none || ec == websocket::error::closed) {
        f.kind = WsFrame::Kind::kClose;
        f.close_code = cr.code == websocket::close_code::none ? uint16_t{1005} : cr.code;
        f.close_reason = std::string(cr.reason.data(), cr.reason.size());
        close_code = f.close_code;
        close_reason = f.close_reason;
      } else {
        f.kind = WsFrame::Kind::kError;
        f.error = ec.message();
        if (error.empty()) error = "read: " + ec.message();
      }
      inbox.push_back(std::move(f));
    });
  }

  // Waits for an async op started by the caller that sets *done; on timeout the
  // socket is closed so the op completes (aborted) before we return.
  bool Finish(bool* done, SteadyClock::time_point deadline) {
    if (Run([done] { return *done; }, deadline)) return true;
    CloseSocket();
    open = false;
    Run([done] { return *done; }, SteadyClock::now() + std::chrono::seconds(2));
    return false;
  }

  bool WriteRaw(const std::string& bytes, Millis timeout) {
    if (!Socket().is_open()) {
      error = "raw write: socket not open";
      return false;
    }
    bool done = false;
    beast::error_code wec;
    With([&](auto& ws) {
      asio::async_write(ws.next_layer(), asio::buffer(bytes), [&](beast::error_code ec, size_t) {
        wec = ec;
        done = true;
      });
    });
    if (!Finish(&done, SteadyClock::now() + timeout)) {
      error = "raw write: timeout";
      return false;
    }
    if (wec) {
      error = "raw write: " + wec.message();
      return false;
    }
    return true;
  }
};

WsClient::WsClient() : impl_(std::make_unique<Impl>()) {}

WsClient::~WsClient() {
  if (!impl_) return;
  if (impl_->open) Close(1000, {}, Millis(1000));
  impl_->CloseSocket();
}

WsClient::WsClient(WsClient&&) noexcept = default;
WsClient& WsClient::operator=(WsClient&&) noexcept = default;

bool WsClient::Connect(const Endpoint& ep, WsConnectOptions opts) {
  opts.tls = ep.tls;
  return Connect(ep.host, ep.port, opts);
}

bool WsClient::Connect(const std::string& host, uint16_t port, const WsConnectOptions& opts) {
  impl_ = std::make_unique<Impl>();
  Impl& s = *impl_;
  auto deadline = SteadyClock::now() + opts.timeout;
  if (opts.tls.enabled) {
    s.tls_ctx = ClientTlsContext(opts.tls, &s.error);
    if (!s.tls_ctx) return false;
    s.plain.reset();
    s.secure.emplace(s.ioc, *s.tls_ctx);
    ConfigureTlsPeer(s.secure->next_layer().native_handle(), host, opts.tls);
  }

  tcp::resolver resolver(s.ioc);
  beast::error_code ec;
  auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) {
    s.error = "resolve " + host + ": " + ec.message();
    return false;
  }

  bool done = false;
  asio::async_connect(s.Socket(), endpoints,
                      [&](beast::error_code cec, const tcp::endpoint&) {
                        ec = cec;
                        done = true;
                      });
  if (!s.Finish(&done, deadline)) {
    s.error = "connect: timeout";
    return false;
  }
  if (ec) {
    s.error = "connect: " + ec.message();
    return false;
  }
  s.Socket().set_option(tcp::no_delay(true), ec);
  if (s.secure) {
    done = false;
    s.secure->next_layer().async_handshake(ssl::stream_base::client, [&](beast::error_code hec) {
      ec = hec;
      done = true;
    });
    if (!s.Finish(&done, deadline)) {
      s.error = "tls handshake: timeout";
      return false;
    }
    if (ec) {
      s.error = "tls handshake: " + ec.message();
      return false;
    }
  }

  std::string target = opts.target;
  Headers hdrs;
  if (!opts.access_token.empty()) {
    if (opts.token_in_query) {
      target += (target.find('?') == std::string::npos ? '?' : '&');
      target += "access_token=" + UrlEncode(opts.access_token);
    } else {
      hdrs.emplace_back("Authorization", "Bearer " + opts.access_token);
    }
  }
  hdrs.insert(hdrs.end(), opts.extra_headers.begin(), opts.extra_headers.end());
  websocket::response_type res;
  done = false;
  s.With([&](auto& ws) {
    ws.set_option(websocket::stream_base::decorator([hdrs](websocket::request_type& req) {
      req.set(http::field::user_agent, "sb-client");
      for (const auto& [k, v] : hdrs) req.insert(k, v);
    }));
    ws.read_message_max(opts.max_incoming_message);
    ws.auto_fragment(false);
    ws.async_handshake(res, HostHeader(host, port), target, [&](beast::error_code hec) {
      ec = hec;
      done = true;
    });
  });
  if (!s.Finish(&done, deadline)) {
    s.error = "upgrade: timeout";
    return false;
  }
  s.upgrade_status = static_cast<int>(res.result_int());
  s.upgrade_headers = CopyHeaders(res.base());
  s.upgrade_body = res.body();
  if (ec) {
    s.error = "upgrade: " + ec.message();
    return false;
  }
  s.open = true;
  s.StartRead();
  return true;
}

int WsClient::upgrade_status() const { return impl_->upgrade_status; }
const std::string& WsClient::upgrade_body() const { return impl_->upgrade_body; }
const Headers& WsClient::upgrade_headers() const { return impl_->upgrade_headers; }
const std::string& WsClient::error() const { return impl_->error; }
bool WsClient::is_open() const { return impl_ && impl_->open; }

bool WsClient::Send(std::string_view text, Millis timeout) {
  Impl& s = *impl_;
  if (!s.open) {
    s.error = "send: not open";
    return false;
  }
  bool done = false;
  beast::error_code wec;
  s.With([&](auto& ws) {
    ws.text(true);
    ws.async_write(asio::buffer(text.data(), text.size()), [&](beast::error_code ec, size_t) {
      wec = ec;
      done = true;
    });
  });
  if (!s.Finish(&done, SteadyClock::now() + timeout)) {
    s.error = "send: timeout";
    return false;
  }
  if (wec) {
    s.error = "send: " + wec.message();
    return false;
  }
  return true;
}

bool WsClient::SendBinary(std::string_view bytes, Millis timeout) {
  Impl& s = *impl_;
  if (!s.open) {
    s.error = "send: not open";
    return false;
  }
  bool done = false;
  beast::error_code wec;
  s.With([&](auto& ws) {
    ws.binary(true);
    ws.async_write(asio::buffer(bytes.data(), bytes.size()), [&](beast::error_code ec, size_t) {
      wec = ec;
      done = true;
    });
  });
  bool ok = s.Finish(&done, SteadyClock::now() + timeout);
  s.With([](auto& ws) { ws.text(true); });
  if (!ok) {
    s.error = "send: timeout";
    return false;
  }
  if (wec) {
    s.error = "send: " + wec.message();
    return false;
  }
  return true;
}

bool WsClient::SendRaw(const RawFrame& f, Millis timeout) {
  std::string bytes;
  bytes.reserve(f.payload.size() + 14);
  bytes.push_back(static_cast<char>((f.fin ? 0x80 : 0) | (f.rsv & 0x70) | (f.opcode & 0x0f)));
  const uint8_t mask_bit = f.masked ? 0x80 : 0;
  const uint64_t n = f.payload.size();
  if (n < 126) {
    bytes.push_back(static_cast<char>(mask_bit | n));
  } else if (n <= 0xffff) {
    bytes.push_back(static_cast<char>(mask_bit | 126));
    bytes.push_back(static_cast<char>((n >> 8) & 0xff));
    bytes.push_back(static_cast<char>(n & 0xff));
  } else {
    bytes.push_back(static_cast<char>(mask_bit | 127));
    for (int shift = 56; shift >= 0; shift -= 8) {
      bytes.push_back(static_cast<char>((n >> shift) & 0xff));
    }
  }
  if (f.masked) {
    // The key only has to be unpredictable to intermediaries; mt19937 is plenty here.
    thread_local std::mt19937 rng{std::random_device{}()};
    uint32_t k = rng();
    char key[4] = {static_cast<char>(k >> 24), static_cast<char>(k >> 16),
                   static_cast<char>(k >> 8), static_cast<char>(k)};
    bytes.append(key, 4);
    for (size_t i = 0; i < f.payload.size(); ++i) bytes.push_back(f.payload[i] ^ key[i % 4]);
  } else {
    bytes += f.payload;
  }
  return impl_->WriteRaw(bytes, timeout);
}

bool WsClient::SendRawBytes(std::string_view bytes, Millis timeout) {
  return impl_->WriteRaw(std::string(bytes), timeout);
}

WsFrame WsClient::RecvFrame(Millis timeout) {
  Impl& s = *impl_;
  auto pop = [&s]() {
    WsFrame f = std::move(s.inbox.front());
    s.inbox.pop_front();
    if (f.kind == WsFrame::Kind::kClose || f.kind == WsFrame::Kind::kError) s.terminal = f;
    return f;
  };
  if (!s.inbox.empty()) return pop();
  if (s.terminal) return *s.terminal;
  if (!s.reading) {
    WsFrame f;
    f.kind = WsFrame::Kind::kError;
    f.error = s.error.empty() ? "not connected" : s.error;
    return f;
  }
  if (s.Run([&s] { return !s.inbox.empty(); }, SteadyClock::now() + timeout)) return pop();
  WsFrame f;
  f.kind = WsFrame::Kind::kTimeout;
  return f;
}

std::optional<std::string> WsClient::Recv(Millis timeout) {
  WsFrame f = RecvFrame(timeout);
  if (f.kind == WsFrame::Kind::kText || f.kind == WsFrame::Kind::kBinary) return std::move(f.data);
  return std::nullopt;
}

Json WsClient::WaitForEvent(std::string_view event, Millis timeout, std::vector<Json>* skipped) {
  auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<Millis>(deadline - SteadyClock::now());
    if (left < Millis(0)) left = Millis(0);
    WsFrame f = RecvFrame(left);
    if (f.kind == WsFrame::Kind::kTimeout) {
      return Json::None("timeout after " + std::to_string(timeout.count()) +
                        " ms waiting for event " + std::string(event));
    }
    if (f.kind != WsFrame::Kind::kText) {
      if (f.kind == WsFrame::Kind::kBinary) continue;
      return Json::None(f.Describe() + " while waiting for event " + std::string(event));
    }
    Json j = Json::Parse(f.data);
    if (j["event"].Str() == event) return j;
    if (skipped) skipped->push_back(j.valid() ? j : Json::None("unparsable frame: " + f.data));
  }
}

std::vector<Json> WsClient::Drain(Millis window) {
  std::vector<Json> out;
  auto deadline = SteadyClock::now() + window;
  for (;;) {
    auto left = std::chrono::duration_cast<Millis>(deadline - SteadyClock::now());
    if (left <= Millis(0)) break;
    WsFrame f = RecvFrame(left);
    if (f.kind == WsFrame::Kind::kText) {
      out.push_back(Json::Parse(f.data));
    } else if (f.kind != WsFrame::Kind::kBinary) {
      break;
    }
  }
  return out;
}

std::optional<uint16_t> WsClient::CloseCode() const { return impl_->close_code; }
const std::string& WsClient::CloseReason() const { return impl_->close_reason; }

bool WsClient::Close(uint16_t code, std::string_view reason, Millis timeout) {
  Impl& s = *impl_;
  if (!s.open) return false;
  auto deadline = SteadyClock::now() + timeout;
  websocket::close_reason cr(code);
  reason = reason.substr(0, cr.reason.max_size());
  cr.reason.assign(reason.data(), reason.size());
  bool done = false;
  beast::error_code cec;
  s.With([&](auto& ws) {
    ws.async_close(cr, [&](beast::error_code ec) {
      cec = ec;
      done = true;
    });
  });
  bool ok = s.Finish(&done, deadline);
  // The outstanding read sees the server's close frame; let it record the code.
  ok = s.Run([&s] { return !s.reading; }, deadline) && ok;
  s.open = false;
  s.CloseSocket();
  return ok && (!cec || cec == websocket::error::closed);
}

void WsClient::Abort() {
  Impl& s = *impl_;
  s.CloseSocket();
  s.open = false;
  // Let the aborted read complete now so its handler does not fire later.
  s.Run([&s] { return !s.reading; }, SteadyClock::now() + std::chrono::seconds(1));
}

}  // namespace sb::client
