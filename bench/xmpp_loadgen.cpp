// xmpp_loadgen: the XMPP twin of bench/loadgen.cpp, to run the same scenario shapes
// against an XMPP server (ejabberd, bench/ejabberd/compare.sh) and report the same
// figures under the same names, so the two result files compare line by line.
//
// Protocol: plain TCP client-to-server streams (RFC 6120, no TLS, like loadgen's ws://):
// stream header, SASL PLAIN, stream restart, resource binding, session, XEP-0198 stream
// management (`<enable/>` without resumption), initial presence. Users are created with
// in-band registration (XEP-0077) during setup, many per connection.
//
// What maps to what (see bench/ejabberd/README.md for the differences that remain):
//   welcome            -> the bind result (authenticated, bound session)
//   ready              -> session result, <enabled/>, and <a h='1'/> for the initial
//                         presence (the server processed it)
//   send_message       -> <message type='chat'><body>lg T N filler</body></message>
//                         followed by <r/> in the same write
//   message_ack        -> the <a h='H'/> answering that <r/>: the server's c2s process
//                         handled (routed; with mod_mam, archived) every stanza up to H
//   message            -> the <message/> read at the recipient's connection
//   receipts           -> the recipient answers the server's <r/> with <a h='N'/>
//   seq / gaps         -> XMPP has none: N in the body is this tool's per-sender counter
//
// Threading and time: as loadgen. One io_context per thread, a connection lives on one
// of them; latencies use this process's monotonic clock, the scheduled send time travels
// in the body, and open-loop latency counts from the scheduled time.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio.hpp>

#include "base/clock.h"
#include "base/json_writer.h"
#include "histogram.h"
#include "loadgen_common.h"
#include "report.h"
#include "proc_stats.h"
#include "xmpp_stream.h"

namespace sb::bench {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using xmpp::StreamSplitter;

// Errors are values: under load there are many, and they are counted, not thrown.
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

constexpr std::string_view kSmNs = "urn:xmpp:sm:3";
constexpr std::string_view kR = "<r xmlns='urn:xmpp:sm:3'/>";

// ------------------------------------------------------------------------------------
// Options

enum class Scenario { kOpenLoop, kIdle };

struct Options {
  std::string url;
  std::string host;
  uint16_t port = 0;
  std::string domain = "localhost";
  Scenario scenario = Scenario::kOpenLoop;
  int pairs = 1;
  double rate = 0;
  int max_inflight = 1000;
  double duration = 10;
  double warmup = 2;
  double drain = 5;
  int connections = 100;
  int users = 0;
  int server_pid = 0;
  int threads = 1;
  int setup_concurrency = 64;
  int connect_concurrency = 200;
  int content_bytes = 100;
  bool register_users = true;
  std::string json_path;
  std::vector<std::pair<std::string, std::string>> tags;
  bool quiet = false;
  std::string password = "loadgen-password-0123456789";
};

constexpr const char* kHelp = R"(xmpp_loadgen: XMPP load generator (prints figures, asserts nothing)

usage: xmpp_loadgen --url xmpp://127.0.0.1:PORT --scenario openloop|idle [options]

Drives an XMPP server over plain c2s TCP (no TLS): SASL PLAIN, bind, session,
XEP-0198 stream management, initial presence. Figures and JSON fields are those of
bench/loadgen (scenario "senders" in open-loop mode, and "idle").

common:
  --url URL              xmpp://HOST:PORT of the c2s listener (loopback only)
  --domain D             the XMPP domain (default localhost)
  --scenario NAME        openloop (alias: senders, needs --rate) | idle
  --threads T            client threads, one io_context each (default 1)
  --setup-concurrency N  in-band registration connections in flight (default 64)
  --connect-concurrency N  logins in flight (default 200)
  --no-register          the users exist already (same names and password)
  --server-pid PID       read the server's VmRSS and CPU time from /proc/PID
                         (for ejabberd: the beam.smp process)
  --json FILE            also write every figure and the parameters as one JSON object
  --tag KEY=VALUE        copied into the JSON "tags" object (repeatable)
  --password PW          password for the generated users
  --quiet                no progress lines on stderr

scenario openloop (P pairs of users, one connection each; one sender per pair):
  --pairs P              number of pairs (default 1)
  --rate R               R messages/s in total, spread evenly over the senders;
                         latency counts from each message's scheduled time
  --max-inflight N       per-sender cap on unacknowledged messages (default 1000)
  --duration S           measured seconds (default 10)
  --warmup S             seconds of traffic before measuring (default 2)
  --drain S              seconds to wait for outstanding acks/deliveries (default 5)
  --content-bytes N      message body size (default 100, at least 32)

scenario idle:
  --connections N        sessions to open (default 100)
  --users U              distinct users behind them (default N; each connection is its
                         own resource)
  --duration S           how long to hold them idle after all are ready (default 10)

Latency: ack = <message/><r/> written -> the <a/> covering it read; delivery = send ->
<message/> read at the recipient (send time carried in the body).
)";

constexpr const char* kTool = "xmpp_loadgen";

[[noreturn]] void Die(const std::string& msg) { DieAs(kTool, msg); }

bool ParseUrl(Options& o) {
  std::string_view u = o.url;
  if (!u.starts_with("xmpp://")) return false;
  u.remove_prefix(7);
  if (auto slash = u.find('/'); slash != std::string_view::npos) u = u.substr(0, slash);
  return ParseHostPort(u, o.host, o.port);
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  const FlagReader flags{argc, argv, kTool};
  auto need = [&](int& i) { return flags.Need(i); };
  auto num = [&](int& i) { return flags.Num(i); };
  auto integer = [&](int& i) { return flags.Int(i); };
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kHelp, stdout);
      std::exit(0);
    } else if (a == "--url") {
      o.url = need(i);
    } else if (a == "--domain") {
      o.domain = need(i);
    } else if (a == "--scenario") {
      std::string s = need(i);
      if (s == "openloop" || s == "senders") o.scenario = Scenario::kOpenLoop;
      else if (s == "idle") o.scenario = Scenario::kIdle;
      else Die("unknown scenario " + s);
    } else if (a == "--pairs") {
      o.pairs = integer(i);
    } else if (a == "--rate") {
      o.rate = num(i);
    } else if (a == "--max-inflight") {
      o.max_inflight = integer(i);
    } else if (a == "--duration") {
      o.duration = num(i);
    } else if (a == "--warmup") {
      o.warmup = num(i);
    } else if (a == "--drain") {
      o.drain = num(i);
    } else if (a == "--connections") {
      o.connections = integer(i);
    } else if (a == "--users") {
      o.users = integer(i);
    } else if (a == "--server-pid") {
      o.server_pid = integer(i);
    } else if (a == "--threads") {
      o.threads = integer(i);
    } else if (a == "--setup-concurrency") {
      o.setup_concurrency = integer(i);
    } else if (a == "--connect-concurrency") {
      o.connect_concurrency = integer(i);
    } else if (a == "--content-bytes") {
      o.content_bytes = integer(i);
    } else if (a == "--no-register") {
      o.register_users = false;
    } else if (a == "--json") {
      o.json_path = need(i);
    } else if (a == "--tag") {
      o.tags.push_back(flags.Tag(i));
    } else if (a == "--password") {
      o.password = need(i);
    } else if (a == "--quiet") {
      o.quiet = true;
    } else {
      Die("unknown option " + std::string(a) + " (see --help)");
    }
  }
  if (o.url.empty()) Die("--url is required (see --help)");
  if (!ParseUrl(o)) Die("cannot parse --url " + o.url + " (want xmpp://HOST:PORT)");
  RequireLoopback(kTool, o.host);
  if (o.threads < 1 || o.threads > 64) Die("--threads must be 1..64");
  if (o.pairs < 1) Die("--pairs must be >= 1");
  if (o.scenario == Scenario::kOpenLoop && o.rate <= 0) Die("scenario openloop needs --rate R (msg/s in total)");
  if (o.max_inflight < 1) Die("--max-inflight must be >= 1");
  if (o.connections < 1) Die("--connections must be >= 1");
  if (o.users < 0) Die("--users must be >= 0");
  if (o.setup_concurrency < 1) o.setup_concurrency = 1;
  if (o.connect_concurrency < 1) o.connect_concurrency = 1;
  if (o.content_bytes < 32) o.content_bytes = 32;
  if (o.duration <= 0) Die("--duration must be > 0");
  // Names and passwords go into XML and SASL unescaped: keep them to safe characters.
  for (char c : o.password) {
    if (c == '<' || c == '>' || c == '&' || c == '\'' || c == '"' || c == '\0') Die("--password: no XML special characters");
  }
  for (char c : o.domain) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-')) Die("--domain: letters, digits, '.', '-' only");
  }
  return o;
}

// ------------------------------------------------------------------------------------
// Small helpers

std::string Base64(std::string_view in) {
  static constexpr char kT[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint32_t{static_cast<uint8_t>(in[i])} << 16) | (uint32_t{static_cast<uint8_t>(in[i + 1])} << 8) |
                 static_cast<uint8_t>(in[i + 2]);
    out += kT[v >> 18];
    out += kT[(v >> 12) & 63];
    out += kT[(v >> 6) & 63];
    out += kT[v & 63];
  }
  if (i < in.size()) {
    uint32_t v = uint32_t{static_cast<uint8_t>(in[i])} << 16;
    if (i + 1 < in.size()) v |= uint32_t{static_cast<uint8_t>(in[i + 1])} << 8;
    out += kT[v >> 18];
    out += kT[(v >> 12) & 63];
    out += i + 1 < in.size() ? kT[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string StreamHeader(const std::string& domain, bool with_decl) {
  std::string h = with_decl ? "<?xml version='1.0'?>" : "";
  h += "<stream:stream to='" + domain +
       "' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
  return h;
}

// ------------------------------------------------------------------------------------
// A plain XMPP socket for the sequential parts (registration, login): write, then read
// top-level elements until the wanted one, with a watchdog on every wait.

// Held by shared_ptr: a watchdog handler already queued when its wait ends keeps the
// object alive rather than touching a destroyed one.
class Stream : public std::enable_shared_from_this<Stream> {
 public:
  explicit Stream(asio::io_context& ctx) : sock_(ctx), watchdog_(ctx) {}

  tcp::socket& socket() { return sock_; }
  StreamSplitter& splitter() { return split_; }

  asio::awaitable<std::string> Connect(const tcp::endpoint& ep) {
    Arm();
    auto [ec] = co_await sock_.async_connect(ep, kTuple);
    bool fired = Disarm();
    if (ec) co_return fired ? std::string("connect: timed out") : "connect: " + ec.message();
    boost::system::error_code ignored;
    sock_.set_option(tcp::no_delay(true), ignored);
    co_return "";
  }

  asio::awaitable<std::string> Write(std::string_view data) {
    Arm();
    auto [ec, n] = co_await asio::async_write(sock_, asio::buffer(data), kTuple);
    (void)n;
    bool fired = Disarm();
    if (ec) co_return fired ? std::string("write: timed out") : "write: " + ec.message();
    co_return "";
  }

  // Reads until the splitter yields something other than kNeedMore. On a transport
  // error returns kStreamClose with `err` set.
  asio::awaitable<StreamSplitter::Event> Next(std::string& err) {
    for (;;) {
      auto ev = split_.Next();
      if (ev != StreamSplitter::Event::kNeedMore) co_return ev;
      Arm();
      char* p = split_.Prepare(16384);
      auto [ec, n] = co_await sock_.async_read_some(asio::buffer(p, 16384), kTuple);
      split_.Commit(ec ? 0 : n);
      bool fired = Disarm();
      if (ec) {
        err = fired ? std::string("no answer within 30 s") : "read: " + ec.message();
        co_return StreamSplitter::Event::kStreamClose;
      }
    }
  }

  // Skips to the next top-level element (past the stream header); "" or an error.
  asio::awaitable<std::string> NextElement(std::string_view& el) {
    for (;;) {
      std::string err;
      auto ev = co_await Next(err);
      if (!err.empty()) co_return err;
      if (ev == StreamSplitter::Event::kStreamOpen) continue;
      if (ev == StreamSplitter::Event::kStreamClose) co_return "server closed the stream";
      el = split_.element();
      if (xmpp::Name(el) == "stream:error") {
        co_return "stream error " + std::string(xmpp::ErrorCondition(el));
      }
      co_return "";
    }
  }

  void Close() {
    boost::system::error_code ignored;
    sock_.shutdown(tcp::socket::shutdown_both, ignored);
    sock_.close(ignored);
  }

 private:
  void Arm() {
    uint64_t gen = ++gen_;
    fired_ = false;
    watchdog_.expires_after(std::chrono::seconds(30));
    watchdog_.async_wait([self = shared_from_this(), gen](boost::system::error_code ec) {
      if (ec || gen != self->gen_) return;
      self->fired_ = true;
      boost::system::error_code ignored;
      self->sock_.cancel(ignored);
    });
  }
  bool Disarm() {
    ++gen_;
    watchdog_.cancel();
    return fired_;
  }

  tcp::socket sock_;
  asio::steady_timer watchdog_;
  StreamSplitter split_;
  uint64_t gen_ = 0;
  bool fired_ = false;
};

// ------------------------------------------------------------------------------------
// Setup: in-band registration (XEP-0077), many users per connection

struct SetupReport {
  int users_wanted = 0;
  int users_registered = 0;
  double register_s = 0;
  uint64_t already_existed = 0;
  CountMap failures;
};

class Registrar {
 public:
  Registrar(const Options& o, tcp::endpoint ep) : opt_(o), ep_(ep) {}

  // Registers every name; true per name that exists afterwards.
  std::vector<bool> Register(const std::vector<std::string>& names) {
    report_.users_wanted = static_cast<int>(names.size());
    ok_.assign(names.size(), false);
    int64_t t0 = MonoNs();
    if (!opt_.register_users) {
      ok_.assign(names.size(), true);
    } else if (!names.empty()) {
      asio::io_context ctx{1};
      size_t next = 0;
      int lanes = std::min<int>(opt_.setup_concurrency, static_cast<int>(names.size()));
      for (int l = 0; l < lanes; ++l) asio::co_spawn(ctx, Lane(ctx, names, next), kRethrow);
      ctx.run();
    }
    report_.register_s = static_cast<double>(MonoNs() - t0) / 1e9;
    for (bool b : ok_) report_.users_registered += b;
    return ok_;
  }

  const SetupReport& report() const { return report_; }

 private:
  asio::awaitable<void> Lane(asio::io_context& ctx, const std::vector<std::string>& names, size_t& next) {
    std::shared_ptr<Stream> s;
    while (next < names.size()) {
      size_t i = next++;
      if (!s) {
        s = std::make_shared<Stream>(ctx);
        std::string err = co_await Open(*s);
        if (!err.empty()) {
          Inc(report_.failures, "register: " + err);
          s->Close();
          s.reset();
          continue;
        }
      }
      std::string iq = "<iq type='set' id='r" + std::to_string(i) + "'><query xmlns='jabber:iq:register'><username>" +
                       names[i] + "</username><password>" + opt_.password + "</password></query></iq>";
      std::string err = co_await s->Write(iq);
      std::string_view el;
      if (err.empty()) err = co_await s->NextElement(el);
      if (!err.empty()) {
        Inc(report_.failures, "register: " + err);
        s->Close();
        s.reset();
        continue;
      }
      std::string_view type = xmpp::Attr(el, "type");
      if (xmpp::Name(el) == "iq" && type == "result") {
        ok_[i] = true;
      } else if (xmpp::Name(el) == "iq" && xmpp::ErrorCondition(el) == "conflict") {
        ok_[i] = true;  // exists already (a rerun with the same names)
        ++report_.already_existed;
      } else {
        Inc(report_.failures, "register: " + std::string(xmpp::Name(el)) + " " + std::string(type) + " " +
                                  std::string(xmpp::ErrorCondition(el)));
      }
    }
    if (s) {
      co_await s->Write("</stream:stream>");
      s->Close();
    }
  }

  asio::awaitable<std::string> Open(Stream& s) {
    std::string err = co_await s.Connect(ep_);
    if (err.empty()) err = co_await s.Write(StreamHeader(opt_.domain, true));
    std::string_view el;
    if (err.empty()) err = co_await s.NextElement(el);
    if (err.empty() && xmpp::Name(el) != "stream:features") err = "expected stream:features, got " + std::string(xmpp::Name(el));
    if (err.empty() && el.find("http://jabber.org/features/iq-register") == std::string_view::npos)
      err = "server does not offer in-band registration (mod_register)";
    co_return err;
  }

  const Options& opt_;
  tcp::endpoint ep_;
  SetupReport report_;
  std::vector<bool> ok_;
};

// ------------------------------------------------------------------------------------
// Connections

struct Plan {
  int64_t start_ns = 0;
  int64_t window_start_ns = 0;
  int64_t window_end_ns = 0;
  int64_t period_ns = 0;  // per-sender interval
  int max_inflight = 1000;
  int senders = 0;
  bool InWindow(int64_t t) const { return t >= window_start_ns && t < window_end_ns; }
};

struct Shared {
  std::atomic<int64_t> inflight{0};
  std::atomic<int> welcomed{0};
  std::atomic<int> ready{0};
  std::atomic<int> connect_failed{0};
  std::atomic<int> open{0};
  std::atomic<int> closed_unexpected{0};
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> acked{0};
  std::atomic<uint64_t> delivered{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<int64_t> last_welcome_ns{0};
  std::atomic<int64_t> last_ready_ns{0};
};

struct Stats : ConnStats {
  uint64_t presences = 0;

  void Merge(const Stats& o) {
    MergeConn(o);
    presences += o.presences;
  }
};

class Conn;

struct Worker {
  asio::io_context ctx{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
  std::thread thread;
  Stats stats;
  std::vector<std::shared_ptr<Conn>> conns;
  Plan plan;
};

struct Common {
  const Options* opt = nullptr;
  Shared* shared = nullptr;
  tcp::endpoint endpoint;
  std::string filler;
};

// Counters one recipient saw from one sender: XMPP has no server sequence number, so
// the body carries the sender's own counter (from 0) and gaps are counted against it.
struct PeerSeen {
  std::vector<bool> seen;
  uint64_t highest = 0;
  bool any = false;
};

class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(Worker& w, const Common& c, std::string user, std::string resource)
      : w_(w),
        c_(c),
        user_(std::move(user)),
        resource_(std::move(resource)),
        sp_(std::make_shared<Stream>(w.ctx)),
        s_(*sp_),
        send_timer_(w.ctx) {}

  void MakeSender(std::string peer_bare_jid, int sender_index) {
    sends_ = true;
    peer_ = std::move(peer_bare_jid);
    sender_index_ = sender_index;
  }

  // Log in and establish the session; then keep reading in the background.
  asio::awaitable<void> Open() {
    auto self = shared_from_this();
    int64_t t0 = MonoNs();
    std::string err = co_await Login();
    if (!err.empty()) {
      Fail(err);
      co_return;
    }
    int64_t t1 = MonoNs();
    w_.stats.connect_lat.RecordSigned(t1 - t0);
    c_.shared->welcomed.fetch_add(1);
    StoreMax(c_.shared->last_welcome_ns, t1);
    // Session (advertised optional by ejabberd, sent anyway as older clients do),
    // stream management, initial presence, and a request for an ack of that presence,
    // in one write: ready when the server has processed all of it.
    out_stanzas_ = 1;  // the presence is the first stanza counted after <enable/>
    Send("<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
         "<enable xmlns='urn:xmpp:sm:3'/><presence/>" +
         std::string(kR));
    establishing_ = true;
    while (!(session_ok_ && sm_enabled_ && last_h_ >= 1)) {
      std::string_view el;
      err = co_await s_.NextElement(el);
      if (err.empty() && xmpp::Name(el) == "failed") err = "stream management refused";
      if (!err.empty()) {
        Fail(err);
        co_return;
      }
      OnElement(el);
    }
    establishing_ = false;
    int64_t t2 = MonoNs();
    w_.stats.resume_lat.RecordSigned(t2 - t1);
    c_.shared->open.fetch_add(1);
    c_.shared->ready.fetch_add(1);
    StoreMax(c_.shared->last_ready_ns, t2);
    asio::co_spawn(w_.ctx, ReadLoop(self), kRethrow);
  }

  void StartSending() {
    if (!sends_ || closed_) return;
    const Plan& p = w_.plan;
    next_sched_ns_ = p.start_ns + p.period_ns * sender_index_ / std::max(1, p.senders);
    ArmAt(next_sched_ns_);
  }

  void Close() {
    if (closed_ || closing_) return;
    closing_ = true;
    send_timer_.cancel();
    Send("</stream:stream>");
  }

  uint64_t UnsentScheduled() const {
    const Plan& p = w_.plan;
    if (!sends_ || next_sched_ns_ >= p.window_end_ns || p.period_ns <= 0) return 0;
    return static_cast<uint64_t>((p.window_end_ns - next_sched_ns_ + p.period_ns - 1) / p.period_ns);
  }

  uint64_t Gaps() const {
    uint64_t gaps = 0;
    for (const auto& [from, ps] : peers_) {
      if (!ps.any) continue;
      uint64_t seen = 0;
      for (uint64_t i = 0; i <= ps.highest && i < ps.seen.size(); ++i) seen += ps.seen[i];
      gaps += ps.highest + 1 - seen;
    }
    return gaps;
  }

 private:
  void Fail(const std::string& err) {
    Inc(w_.stats.connect_errors, err);
    c_.shared->connect_failed.fetch_add(1);
    s_.Close();
    closed_ = true;
  }

  // TCP connect, stream, SASL PLAIN, restart, bind.
  asio::awaitable<std::string> Login() {
    std::string err = co_await s_.Connect(c_.endpoint);
    if (!err.empty()) co_return err;
    const std::string& domain = c_.opt->domain;
    if (!(err = co_await s_.Write(StreamHeader(domain, true))).empty()) co_return err;
    std::string_view el;
    if (!(err = co_await s_.NextElement(el)).empty()) co_return err;
    if (xmpp::Name(el) != "stream:features") co_return "expected stream:features, got " + std::string(xmpp::Name(el));
    if (el.find(">PLAIN<") == std::string_view::npos) co_return "server does not offer SASL PLAIN";
    std::string creds;
    creds += '\0';
    creds += user_;
    creds += '\0';
    creds += c_.opt->password;
    if (!(err = co_await s_.Write("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + Base64(creds) +
                                  "</auth>"))
             .empty())
      co_return err;
    if (!(err = co_await s_.NextElement(el)).empty()) co_return err;
    if (xmpp::Name(el) != "success") {
      std::string_view cond;
      size_t gt = el.find('>');
      if (gt != std::string_view::npos && gt + 1 < el.size()) cond = xmpp::Name(el.substr(gt + 1));
      co_return "sasl " + std::string(xmpp::Name(el)) + (cond.empty() ? "" : " " + std::string(cond));
    }
    s_.splitter().RestartStream();
    if (!(err = co_await s_.Write(StreamHeader(domain, false))).empty()) co_return err;
    if (!(err = co_await s_.NextElement(el)).empty()) co_return err;
    if (xmpp::Name(el) != "stream:features") co_return "expected stream:features after auth, got " + std::string(xmpp::Name(el));
    if (el.find(kSmNs) == std::string_view::npos) co_return "server does not offer stream management (XEP-0198 v3)";
    if (!(err = co_await s_.Write("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>" +
                                  resource_ + "</resource></bind></iq>"))
             .empty())
      co_return err;
    if (!(err = co_await s_.NextElement(el)).empty()) co_return err;
    if (xmpp::Name(el) != "iq" || xmpp::Attr(el, "type") != "result")
      co_return "bind: " + std::string(xmpp::Attr(el, "type")) + " " + std::string(xmpp::ErrorCondition(el));
    co_return "";
  }

  static asio::awaitable<void> ReadLoop(std::shared_ptr<Conn> self) {
    StreamSplitter& sp = self->s_.splitter();
    for (;;) {
      for (;;) {
        auto ev = sp.Next();
        if (ev == StreamSplitter::Event::kNeedMore) break;
        if (ev == StreamSplitter::Event::kStreamClose) {
          self->OnClosed("server closed the stream");
          co_return;
        }
        if (ev == StreamSplitter::Event::kElement) self->OnElement(sp.element());
        else ++self->w_.stats.unparsable_frames;  // a second stream header
        if (self->closed_) co_return;
      }
      char* p = sp.Prepare(16384);
      auto [ec, n] = co_await self->s_.socket().async_read_some(asio::buffer(p, 16384), kTuple);
      sp.Commit(ec ? 0 : n);
      if (ec) {
        self->OnClosed(ec == asio::error::eof ? "eof" : ec.message());
        co_return;
      }
    }
  }

  void Send(std::string data) {
    if (closed_) return;
    outq_ += data;
    if (!writing_) {
      writing_ = true;
      asio::co_spawn(w_.ctx, WritePump(shared_from_this()), kRethrow);
    }
  }

  // Everything queued since the last write goes out in one write.
  static asio::awaitable<void> WritePump(std::shared_ptr<Conn> self) {
    while (!self->outq_.empty() && !self->closed_) {
      self->wbuf_.swap(self->outq_);
      self->outq_.clear();
      auto [ec, n] = co_await asio::async_write(self->s_.socket(), asio::buffer(self->wbuf_), kTuple);
      (void)n;
      self->wbuf_.clear();
      if (ec) {
        boost::system::error_code ignored;
        self->s_.socket().cancel(ignored);  // the read side accounts for it
        break;
      }
    }
    self->writing_ = false;
  }

  void OnClosed(const std::string& why) {
    if (closed_) return;
    closed_ = true;
    send_timer_.cancel();
    outq_.clear();
    c_.shared->open.fetch_sub(1);
    s_.Close();
    if (!closing_) {
      c_.shared->closed_unexpected.fetch_add(1);
      Inc(w_.stats.close_reasons, stream_error_.empty() ? why : "stream error " + stream_error_);
      w_.stats.lost_on_close += unacked_.size();
      c_.shared->inflight.fetch_sub(static_cast<int64_t>(unacked_.size()));
      unacked_.clear();
    }
  }

  // --- sending ---------------------------------------------------------------------

  void SendOne(int64_t intended_ns) {
    const Plan& p = w_.plan;
    uint64_t n = next_counter_++;
    std::string body = "lg " + std::to_string(intended_ns) + " " + std::to_string(n) + " ";
    size_t want = static_cast<size_t>(c_.opt->content_bytes);
    if (body.size() < want) body.append(c_.filler, 0, want - body.size());
    std::string f;
    f.reserve(160 + body.size() + peer_.size());
    f += "<message type='chat' to='";
    f += peer_;
    f += "' id='m";
    f += std::to_string(n);
    f += "'><body>";
    f += body;
    f += "</body></message>";
    f += kR;
    unacked_.emplace_back(++out_stanzas_, intended_ns);
    c_.shared->inflight.fetch_add(1, std::memory_order_relaxed);
    c_.shared->sent.fetch_add(1, std::memory_order_relaxed);
    ++w_.stats.sent_total;
    if (p.InWindow(intended_ns)) ++w_.stats.sent_window;
    Send(std::move(f));
  }

  void OpenLoopTick() {
    const Plan& p = w_.plan;
    if (!sends_ || closed_ || closing_) return;
    blocked_ = false;
    int64_t now = MonoNs();
    while (next_sched_ns_ <= now && next_sched_ns_ < p.window_end_ns) {
      if (static_cast<int>(unacked_.size()) >= p.max_inflight) {
        blocked_ = true;  // an ack resumes us
        return;
      }
      SendOne(next_sched_ns_);
      next_sched_ns_ += p.period_ns;
    }
    if (next_sched_ns_ < p.window_end_ns) ArmAt(next_sched_ns_);
  }

  void ArmAt(int64_t ns) {
    auto self = shared_from_this();
    send_timer_.expires_at(AtNs(ns));
    send_timer_.async_wait([self](boost::system::error_code ec) {
      if (!ec) self->OpenLoopTick();
    });
  }

  // --- receiving -------------------------------------------------------------------

  void OnElement(std::string_view el) {
    std::string_view name = xmpp::Name(el);
    if (name == "message") {
      CountStanzaIn();
      if (xmpp::Attr(el, "type") == "error") OnBounce(el);
      else OnMessage(el);
    } else if (name == "a") {
      OnAck(el);
    } else if (name == "r") {
      Send("<a xmlns='urn:xmpp:sm:3' h='" + std::to_string(in_stanzas_) + "'/>");
      ++w_.stats.receipts_sent;
    } else if (name == "presence") {
      CountStanzaIn();
      ++w_.stats.presences;
    } else if (name == "iq") {
      CountStanzaIn();
      if (xmpp::Attr(el, "id") == "sess") {
        // An error here is counted, not fatal: the session is optional in ejabberd.
        if (xmpp::Attr(el, "type") != "result") Inc(w_.stats.errors, "session " + std::string(xmpp::ErrorCondition(el)));
        session_ok_ = true;
      } else {
        std::string_view type = xmpp::Attr(el, "type");
        Inc(w_.stats.other_events, "iq " + std::string(type));
        if (type == "get" || type == "set") {
          // A client must answer every request; this one supports none of them. The
          // answer is a stanza, so the server counts it in its <a h=.../>.
          ++out_stanzas_;
          std::string_view id = xmpp::Attr(el, "id"), from = xmpp::Attr(el, "from");
          Send("<iq type='error' id='" + std::string(id) + "'" + (from.empty() ? "" : " to='" + std::string(from) + "'") +
               "><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
        }
      }
    } else if (name == "enabled") {
      sm_enabled_ = true;
    } else if (name == "stream:error") {
      stream_error_ = std::string(xmpp::ErrorCondition(el));
    } else if (name.empty()) {
      ++w_.stats.unparsable_frames;
    } else {
      Inc(w_.stats.other_events, name);
    }
  }

  void CountStanzaIn() {
    if (sm_enabled_) ++in_stanzas_;
  }

  void OnAck(std::string_view el) {
    int64_t now = MonoNs();
    std::string_view hs = xmpp::Attr(el, "h");
    uint64_t h = 0;
    auto [p, ec] = std::from_chars(hs.data(), hs.data() + hs.size(), h);
    if (ec != std::errc() || p != hs.data() + hs.size() || h > out_stanzas_ || h < last_h_) {
      ++w_.stats.unknown_acks;
      return;
    }
    if (h == last_h_) {
      if (!establishing_) ++w_.stats.duplicate_acks;
      return;
    }
    last_h_ = h;
    const Plan& pl = w_.plan;
    bool freed = false;
    while (!unacked_.empty() && unacked_.front().first <= h) {
      int64_t t0 = unacked_.front().second;
      unacked_.pop_front();
      freed = true;
      c_.shared->inflight.fetch_sub(1, std::memory_order_relaxed);
      c_.shared->acked.fetch_add(1, std::memory_order_relaxed);
      ++w_.stats.acked_total;
      if (pl.InWindow(now)) ++w_.stats.acked_window;
      if (pl.InWindow(t0)) w_.stats.ack_lat.RecordSigned(now - t0);
    }
    if (freed && blocked_) OpenLoopTick();
  }

  void OnBounce(std::string_view el) {
    std::string cond(xmpp::ErrorCondition(el));
    if (cond.empty()) cond = "(no condition)";
    Inc(w_.stats.errors, cond);
    if (w_.stats.error_samples.find(cond) == w_.stats.error_samples.end()) {
      w_.stats.error_samples.emplace(cond, "message id " + std::string(xmpp::Attr(el, "id")) + " to " +
                                               std::string(xmpp::Attr(el, "from")));
    }
    c_.shared->errors.fetch_add(1, std::memory_order_relaxed);
    ++w_.stats.failed_msgs;
  }

  void OnMessage(std::string_view el) {
    int64_t now = MonoNs();
    std::string_view body = xmpp::ChildText(el, "body");
    if (!body.starts_with("lg ")) {
      ++w_.stats.foreign_messages;
      return;
    }
    body.remove_prefix(3);
    int64_t t0 = 0;
    auto [p, ec] = std::from_chars(body.data(), body.data() + body.size(), t0);
    uint64_t n = 0;
    bool have_n = false;
    if (ec == std::errc() && p < body.data() + body.size() && *p == ' ') {
      auto [p2, ec2] = std::from_chars(p + 1, body.data() + body.size(), n);
      (void)p2;
      have_n = ec2 == std::errc();
    }
    if (have_n && n < (uint64_t{1} << 28)) {
      std::string_view from = xmpp::Attr(el, "from");
      from = from.substr(0, from.find('/'));
      auto it = peers_.find(std::string(from));
      if (it == peers_.end()) it = peers_.emplace(std::string(from), PeerSeen{}).first;
      PeerSeen& ps = it->second;
      if (ps.seen.size() <= n) ps.seen.resize(std::max<size_t>(n + 1, ps.seen.size() * 2), false);
      if (ps.seen[n]) {
        ++w_.stats.duplicate_deliveries;
        return;
      }
      ps.seen[n] = true;
      if (ps.any && n < ps.highest) ++w_.stats.reordered_deliveries;
      ps.highest = ps.any ? std::max(ps.highest, n) : n;
      ps.any = true;
    }
    c_.shared->delivered.fetch_add(1, std::memory_order_relaxed);
    ++w_.stats.delivered_total;
    const Plan& pl = w_.plan;
    if (pl.InWindow(now)) ++w_.stats.delivered_window;
    if (ec == std::errc() && pl.InWindow(t0)) w_.stats.deliv_lat.RecordSigned(now - t0);
  }

  Worker& w_;
  const Common& c_;
  std::string user_;
  std::string resource_;
  std::shared_ptr<Stream> sp_;
  Stream& s_;
  asio::steady_timer send_timer_;
  std::string outq_;
  std::string wbuf_;
  bool writing_ = false;
  bool closing_ = false;
  bool closed_ = false;
  bool establishing_ = false;
  bool session_ok_ = false;
  bool sm_enabled_ = false;
  std::string stream_error_;

  // XEP-0198 counters
  uint64_t out_stanzas_ = 0;  // stanzas we sent since <enable/>
  uint64_t in_stanzas_ = 0;   // stanzas we received since <enabled/>
  uint64_t last_h_ = 0;       // the server's latest <a h=.../>

  // sender
  bool sends_ = false;
  std::string peer_;
  int sender_index_ = 0;
  uint64_t next_counter_ = 0;
  std::deque<std::pair<uint64_t, int64_t>> unacked_;  // stanza number -> scheduled time
  int64_t next_sched_ns_ = 0;
  bool blocked_ = false;

  // recipient
  std::unordered_map<std::string, PeerSeen> peers_;
};

// ------------------------------------------------------------------------------------
// The run

class Runner {
 public:
  explicit Runner(const Options& o) : opt_(o) {
    run_id_ = RandomToken(8);
    common_.opt = &opt_;
    common_.shared = &shared_;
    common_.endpoint = tcp::endpoint(asio::ip::make_address(o.host), o.port);
    common_.filler.assign(static_cast<size_t>(std::max(o.content_bytes, 32)), 'x');
    for (int i = 0; i < o.threads; ++i) workers_.push_back(std::make_unique<Worker>());
  }

  int Run() {
    machine_ = DescribeMachine();
    started_at_ = IsoNow();
    if (opt_.scenario == Scenario::kOpenLoop) RunOpenLoop();
    else RunIdle();
    Report();
    return 0;
  }

 private:
  void Progress(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
    if (opt_.quiet) return;
    va_list ap;
    va_start(ap, fmt);
    std::fputs("xmpp_loadgen: ", stderr);
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
  }

  std::string UserName(int i) const { return "lg" + run_id_ + "u" + std::to_string(i); }

  std::vector<bool> RegisterUsers(int users) {
    std::vector<std::string> names(users);
    for (int i = 0; i < users; ++i) names[i] = UserName(i);
    Registrar reg(opt_, common_.endpoint);
    auto ok = reg.Register(names);
    setup_ = reg.report();
    PrintSetup();
    return ok;
  }

  void StartWorkers() { bench::StartWorkers(workers_); }
  void StopWorkers() { bench::StopWorkers(workers_); }

  void ConnectAll() {
    ConnectRamp r = ConnectAllConns(workers_, shared_, opt_.connect_concurrency,
                                    [this](const char* line) { Progress("%s", line); });
    connect_attempted_ = r.attempted;
    connect_start_ns_ = r.start_ns;
    connect_end_ns_ = r.end_ns;
    ready_end_ns_ = r.ready_end_ns;
    connect_timed_out_ = r.timed_out;
  }

  void CloseAll() { not_closed_cleanly_ = CloseAllConns(workers_, shared_); }

  void RunOpenLoop() {
    const int pairs = opt_.pairs;
    Progress("setup: %d users (in-band registration)", 2 * pairs);
    auto ok = RegisterUsers(2 * pairs);
    int senders = 0;
    int idx = 0;
    for (int i = 0; i < pairs; ++i) {
      if (!ok[2 * i] || !ok[2 * i + 1]) continue;
      auto& wa = *workers_[idx++ % workers_.size()];
      auto a = std::make_shared<Conn>(wa, common_, UserName(2 * i), "lg");
      a->MakeSender(UserName(2 * i + 1) + "@" + opt_.domain, senders++);
      wa.conns.push_back(a);
      auto& wb = *workers_[idx++ % workers_.size()];
      wb.conns.push_back(std::make_shared<Conn>(wb, common_, UserName(2 * i + 1), "lg"));
    }
    if (senders == 0) Die("setup produced no usable pair; see the failures above");
    senders_ = senders;

    StartWorkers();
    ConnectAll();
    rss_before_ = ReadRssKib(opt_.server_pid);

    Plan plan;
    plan.start_ns = MonoNs() + 20'000'000;
    plan.window_start_ns = plan.start_ns + SecToNs(opt_.warmup);
    plan.window_end_ns = plan.window_start_ns + SecToNs(opt_.duration);
    plan.senders = senders;
    plan.period_ns = static_cast<int64_t>(1e9 * senders / opt_.rate);
    plan.max_inflight = opt_.max_inflight;
    for (auto& w : workers_) {
      Worker* wp = w.get();
      asio::post(wp->ctx, [wp, plan] {
        wp->plan = plan;
        for (auto& c : wp->conns) c->StartSending();
      });
    }

    std::this_thread::sleep_until(AtNs(plan.window_start_ns));
    double srv_cpu0 = ReadCpuSec(opt_.server_pid), self_cpu0 = SelfCpuSec();
    auto threads0 = ReadThreadTimes(opt_.server_pid);
    auto self_threads0 = ReadThreadTimes(getpid());
    uint64_t last_acked = shared_.acked.load(), last_deliv = shared_.delivered.load();
    int64_t t = plan.window_start_ns;
    while (t < plan.window_end_ns) {
      int64_t next = std::min(t + 1'000'000'000, plan.window_end_ns);
      std::this_thread::sleep_until(AtNs(next));
      double dt = static_cast<double>(next - t) / 1e9;
      uint64_t a = shared_.acked.load(), d = shared_.delivered.load();
      Progress("t=%4.1fs acked/s=%.0f delivered/s=%.0f inflight=%lld errors=%llu open=%d closed=%d",
               static_cast<double>(next - plan.window_start_ns) / 1e9, static_cast<double>(a - last_acked) / dt,
               static_cast<double>(d - last_deliv) / dt, static_cast<long long>(shared_.inflight.load()),
               static_cast<unsigned long long>(shared_.errors.load()), shared_.open.load(),
               shared_.closed_unexpected.load());
      last_acked = a;
      last_deliv = d;
      t = next;
    }
    double srv_cpu1 = ReadCpuSec(opt_.server_pid), self_cpu1 = SelfCpuSec();
    server_threads_ = ThreadPcts(threads0, ReadThreadTimes(opt_.server_pid), opt_.duration);
    self_threads_ = ThreadPcts(self_threads0, ReadThreadTimes(getpid()), opt_.duration);
    if (srv_cpu0 >= 0 && srv_cpu1 >= 0) server_cpu_pct_ = 100.0 * (srv_cpu1 - srv_cpu0) / opt_.duration;
    self_cpu_pct_ = 100.0 * (self_cpu1 - self_cpu0) / opt_.duration;
    rss_after_ = ReadRssKib(opt_.server_pid);

    int64_t drain_start = MonoNs();
    int64_t drain_deadline = drain_start + SecToNs(opt_.drain);
    while (MonoNs() < drain_deadline) {
      if (shared_.inflight.load() <= 0 && shared_.delivered.load() + shared_.errors.load() >= shared_.acked.load()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    drain_s_ = static_cast<double>(MonoNs() - drain_start) / 1e9;
    unacked_at_end_ = shared_.inflight.load();
    CloseAll();
    StopWorkers();
    for (auto& w : workers_) {
      total_.Merge(w->stats);
      for (auto& c : w->conns) {
        unsent_scheduled_ += c->UnsentScheduled();
        total_.seq_gaps += c->Gaps();
      }
    }
  }

  void RunIdle() {
    const int n = opt_.connections;
    const int users = opt_.users > 0 ? std::min(opt_.users, n) : n;
    if (FdLimit() < n + 100) {
      Progress("warning: open-files limit %lld is below %d connections", static_cast<long long>(FdLimit()), n);
    }
    Progress("setup: %d users, %d sessions", users, n);
    auto ok = RegisterUsers(users);
    std::vector<int> per_user(users, 0);
    int idx = 0;
    for (int j = 0; j < n; ++j) {
      int u = j % users;
      if (!ok[u]) continue;
      auto& w = *workers_[idx++ % workers_.size()];
      w.conns.push_back(std::make_shared<Conn>(w, common_, UserName(u), "d" + std::to_string(per_user[u]++)));
    }
    if (idx == 0) Die("setup produced no usable user; see the failures above");

    StartWorkers();
    // Settle first so the baseline is not caught mid-way through freeing setup garbage.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    rss_before_ = ReadRssKib(opt_.server_pid);
    ConnectAll();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    rss_after_ = ReadRssKib(opt_.server_pid);
    double srv_cpu0 = ReadCpuSec(opt_.server_pid);
    int64_t hold_start = MonoNs();
    int64_t hold_end = hold_start + SecToNs(opt_.duration);
    while (MonoNs() < hold_end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(1000, (hold_end - MonoNs()) / 1'000'000 + 1)));
      Progress("idle: open=%d closed=%d", shared_.open.load(), shared_.closed_unexpected.load());
    }
    double srv_cpu1 = ReadCpuSec(opt_.server_pid);
    if (srv_cpu0 >= 0 && srv_cpu1 >= 0) server_cpu_pct_ = 100.0 * (srv_cpu1 - srv_cpu0) / opt_.duration;
    rss_after_hold_ = ReadRssKib(opt_.server_pid);
    open_at_end_ = shared_.open.load();
    CloseAll();
    StopWorkers();
    for (auto& w : workers_) total_.Merge(w->stats);
  }

  void PrintSetup() {
    const auto& s = setup_;
    double rate = s.register_s > 0 ? s.users_registered / s.register_s : 0.0;
    std::printf("setup: %d/%d users registered in %.2f s (%.0f/s)%s\n", s.users_registered, s.users_wanted, s.register_s,
                rate, opt_.register_users ? "" : " (--no-register: assumed to exist)");
    if (s.already_existed) std::printf("setup: %llu users existed already\n", static_cast<unsigned long long>(s.already_existed));
    for (const auto& [k, v] : s.failures) std::printf("setup failure: %s x%llu\n", k.c_str(), static_cast<unsigned long long>(v));
    std::fflush(stdout);
  }

  double ConnectSeconds() const { return static_cast<double>(connect_end_ns_ - connect_start_ns_) / 1e9; }
  double ConnectRate() const {
    double s = ConnectSeconds();
    return s > 0 ? shared_.welcomed.load() / s : 0;
  }
  double BytesPerConn() const {
    int n = shared_.ready.load();
    if (rss_before_ < 0 || rss_after_ < 0 || n == 0) return -1;
    return static_cast<double>(rss_after_ - rss_before_) * 1024.0 / n;
  }

  void Report() {
    const Stats& t = total_;
    const double d = opt_.duration;
    std::printf("connect: %d/%d logged in and bound in %.2f s (%.0f conn/s), %d failed%s; connect-to-bind %s\n",
                shared_.welcomed.load(), connect_attempted_, ConnectSeconds(), ConnectRate(),
                shared_.connect_failed.load(), connect_timed_out_ ? " (timed out waiting)" : "",
                LatLine(t.connect_lat).c_str());
    std::printf("ready (session, sm enabled, presence acked): %d in %.2f s from the first connect; bind-to-ready %s\n",
                shared_.ready.load(), static_cast<double>(ready_end_ns_ - connect_start_ns_) / 1e9,
                LatLine(t.resume_lat).c_str());
    if (!t.connect_errors.empty()) std::printf("connect errors: %s\n", CountsLine(t.connect_errors).c_str());

    if (opt_.scenario == Scenario::kOpenLoop) {
      std::printf("mode: open loop, %d senders, target %s msg/s\n", senders_, Fmt(opt_.rate, 0).c_str());
      std::printf("throughput (%.0f s window): sent %.0f/s, acked %.0f/s, delivered %.0f/s\n", d,
                  static_cast<double>(t.sent_window) / d, static_cast<double>(t.acked_window) / d,
                  static_cast<double>(t.delivered_window) / d);
      std::printf("ack latency:      %s\n", LatLine(t.ack_lat).c_str());
      std::printf("delivery latency: %s\n", LatLine(t.deliv_lat).c_str());
      std::printf("errors: %s\n", CountsLine(t.errors).c_str());
      for (const auto& [k, v] : t.error_samples) std::printf("  e.g. %s: %s\n", k.c_str(), v.c_str());
      std::printf("totals: sent %llu, acked %llu, failed %llu, delivered %llu, unacked at end %lld (drain %.2f s), "
                  "scheduled but unsent %llu\n",
                  static_cast<unsigned long long>(t.sent_total), static_cast<unsigned long long>(t.acked_total),
                  static_cast<unsigned long long>(t.failed_msgs), static_cast<unsigned long long>(t.delivered_total),
                  static_cast<long long>(unacked_at_end_), drain_s_, static_cast<unsigned long long>(unsent_scheduled_));
      std::printf("anomalies: duplicate acks %llu, unknown acks %llu, duplicate deliveries %llu, reordered %llu, "
                  "counter gaps %llu, lost on close %llu, unparsable %llu\n",
                  static_cast<unsigned long long>(t.duplicate_acks), static_cast<unsigned long long>(t.unknown_acks),
                  static_cast<unsigned long long>(t.duplicate_deliveries),
                  static_cast<unsigned long long>(t.reordered_deliveries), static_cast<unsigned long long>(t.seq_gaps),
                  static_cast<unsigned long long>(t.lost_on_close), static_cast<unsigned long long>(t.unparsable_frames));
      std::printf("cpu (%% of one core): server %s, waiting for a CPU %s; loadgen %.0f, waiting %.0f\n",
                  server_cpu_pct_ >= 0 ? Fmt(server_cpu_pct_, 0).c_str() : "n/a",
                  server_threads_.empty() ? "n/a" : Fmt(SumWait(server_threads_), 0).c_str(), self_cpu_pct_,
                  SumWait(self_threads_));
      if (!server_threads_.empty()) {
        std::string line;
        for (size_t i = 0; i < server_threads_.size() && i < 10; ++i) {
          if (i) line += ", ";
          line += server_threads_[i].name + " " + Fmt(server_threads_[i].cpu, 0) + "/" + Fmt(server_threads_[i].wait, 0);
        }
        std::printf("server threads (cpu/wait %%): %s\n", line.c_str());
      }
    } else {
      std::printf("server memory: VmRSS %lld KiB before, %lld KiB with %d idle connections, %lld KiB after %.0f s hold\n",
                  static_cast<long long>(rss_before_), static_cast<long long>(rss_after_), shared_.ready.load(),
                  static_cast<long long>(rss_after_hold_), d);
      if (BytesPerConn() >= 0) std::printf("bytes per idle connection: %.0f\n", BytesPerConn());
      std::printf("idle: %d open at end of hold; server cpu while idle %s\n", open_at_end_,
                  server_cpu_pct_ >= 0 ? (Fmt(server_cpu_pct_, 1) + "%").c_str() : "n/a");
    }
    std::printf("closed connections (unexpected): %d%s%s\n", shared_.closed_unexpected.load(),
                t.close_reasons.empty() ? "" : " - ", t.close_reasons.empty() ? "" : CountsLine(t.close_reasons).c_str());
    if (not_closed_cleanly_) std::printf("connections not closed within 5 s at the end: %d\n", not_closed_cleanly_);
    if (!t.other_events.empty()) std::printf("other events: %s\n", CountsLine(t.other_events).c_str());
    std::printf("%s\n", ResultLine().c_str());
    std::fflush(stdout);

    if (!opt_.json_path.empty()) {
      if (!WriteJsonFile(opt_.json_path, Json())) Die("cannot write " + opt_.json_path);
    }
  }

  // The same grep-able line as loadgen's, so bench/run.sh's summary_table reads it.
  std::string ResultLine() const {
    const Stats& t = total_;
    std::string s = "RESULT scenario=";
    if (opt_.scenario == Scenario::kOpenLoop) {
      double d = opt_.duration;
      s += "senders senders=" + std::to_string(senders_);
      s += " rate=" + Fmt(opt_.rate, 0);
      s += " acked_per_s=" + Fmt(static_cast<double>(t.acked_window) / d, 0);
      s += " delivered_per_s=" + Fmt(static_cast<double>(t.delivered_window) / d, 0);
      s += " ack_p50_ms=" + Fmt(static_cast<double>(t.ack_lat.Percentile(50)) / 1e6, 3);
      s += " ack_p99_ms=" + Fmt(static_cast<double>(t.ack_lat.Percentile(99)) / 1e6, 3);
      s += " ack_p999_ms=" + Fmt(static_cast<double>(t.ack_lat.Percentile(99.9)) / 1e6, 3);
      s += " ack_max_ms=" + Fmt(static_cast<double>(t.ack_lat.Max()) / 1e6, 3);
      s += " deliv_p50_ms=" + Fmt(static_cast<double>(t.deliv_lat.Percentile(50)) / 1e6, 3);
      s += " deliv_p99_ms=" + Fmt(static_cast<double>(t.deliv_lat.Percentile(99)) / 1e6, 3);
      uint64_t errs = 0;
      for (const auto& [k, v] : t.errors) errs += v;
      s += " failed=" + std::to_string(t.failed_msgs);
      s += " error_frames=" + std::to_string(errs);
      s += " unacked=" + std::to_string(unacked_at_end_);
    } else {
      s += "idle connections=" + std::to_string(shared_.ready.load()) + "/" + std::to_string(connect_attempted_);
      s += " connect_per_s=" + Fmt(ConnectRate(), 0);
      s += " bytes_per_conn=" + (BytesPerConn() >= 0 ? Fmt(BytesPerConn(), 0) : std::string("n/a"));
    }
    s += " closed=" + std::to_string(shared_.closed_unexpected.load());
    return s;
  }

  // loadgen's field names and meanings; what XMPP lacks is zero, and "protocol"
  // describes what the names stand for here (see the header comment).
  std::string Json() const {
    const Stats& t = total_;
    const double d = opt_.duration;
    const bool ol = opt_.scenario == Scenario::kOpenLoop;
    JsonWriter w(8192);
    w.BeginObject();
    w.Field("tool", "xmpp_loadgen");
    w.Field("format_version", 1);
    w.Field("scenario", ol ? "senders" : "idle");
    w.Field("started_at", started_at_);

    w.Key("protocol").BeginObject();
    w.Field("transport", "xmpp c2s, plain tcp");
    w.Field("auth", "sasl plain");
    w.Field("ack", "xep-0198 <a h/> answering an <r/> sent after each message");
    w.Field("receipts", "recipient answers the server's xep-0198 <r/>");
    w.Field("sequence", "per-sender counter in the message body");
    w.EndObject();

    w.Key("parameters").BeginObject();
    w.Field("url", opt_.url);
    w.Field("domain", opt_.domain);
    w.Field("threads", opt_.threads);
    if (ol) {
      w.Field("pairs", opt_.pairs);
      w.Field("two_way", false);
      w.Field("senders", senders_);
      w.Field("mode", "open_loop");
      w.Key("rate").Raw(Fmt(opt_.rate, 3));
      w.Field("max_inflight", opt_.max_inflight);
      w.Key("warmup_s").Raw(Fmt(opt_.warmup, 3));
      w.Key("drain_s").Raw(Fmt(opt_.drain, 3));
      w.Field("content_bytes", opt_.content_bytes);
      w.Field("receipts", "sm_ack");
    } else {
      w.Field("connections", opt_.connections);
      w.Field("users", opt_.users > 0 ? std::min(opt_.users, opt_.connections) : opt_.connections);
    }
    w.Key("duration_s").Raw(Fmt(d, 3));
    w.Field("setup_concurrency", opt_.setup_concurrency);
    w.Field("connect_concurrency", opt_.connect_concurrency);
    w.Field("server_pid", opt_.server_pid);
    w.EndObject();

    TagsJson(w, opt_.tags);

    w.Key("machine").BeginObject();
    MachineFields(w, machine_);
    w.EndObject();

    // Logins happen inside each connection (SASL), so they are timed under "connect".
    w.Key("setup").BeginObject();
    w.Field("users_wanted", setup_.users_wanted);
    w.Field("users_registered", setup_.users_registered);
    w.Key("register_s").Raw(Fmt(setup_.register_s, 3));
    w.Field("users_existed", setup_.already_existed);
    w.Field("logins_wanted", connect_attempted_);
    w.Field("logins_ok", shared_.welcomed.load());
    w.Key("login_s").Raw("null");
    w.Field("conversations_wanted", 0);
    w.Field("conversations_ok", 0);
    w.Key("conversations_s").Raw("0");
    w.Field("rate_limited_retries", 0);
    CountsJson(w, "failures", setup_.failures);
    w.EndObject();

    w.Key("connect").BeginObject();
    w.Field("attempted", connect_attempted_);
    w.Field("welcomed", shared_.welcomed.load());
    w.Field("failed", shared_.connect_failed.load());
    w.Field("timed_out", connect_timed_out_);
    w.Key("seconds").Raw(Fmt(ConnectSeconds(), 3));
    w.Key("rate_per_s").Raw(Fmt(ConnectRate(), 1));
    LatJson(w, "latency_us", t.connect_lat);
    w.Field("resume", false);
    w.Field("ready", shared_.ready.load());
    w.Key("ready_seconds").Raw(Fmt(static_cast<double>(ready_end_ns_ - connect_start_ns_) / 1e9, 3));
    LatJson(w, "resume_latency_us", t.resume_lat);
    w.Field("resume_replayed", 0);
    CountsJson(w, "errors", t.connect_errors);
    w.EndObject();

    w.Key("results").BeginObject();
    if (ol) {
      TrafficJson(w, t, d, unacked_at_end_, unsent_scheduled_, drain_s_);
      w.Key("loadgen_cpu_pct").Raw(Fmt(self_cpu_pct_, 1));
      w.Key("loadgen_cpu_wait_pct").Raw(Fmt(SumWait(self_threads_), 1));
    } else {
      w.Field("connections", shared_.ready.load());
      w.Field("open_at_end_of_hold", open_at_end_);
      w.Key("bytes_per_connection").Raw(BytesPerConn() >= 0 ? Fmt(BytesPerConn(), 0) : "null");
    }
    w.Field("pings_sent", 0);
    w.Field("pongs", 0);
    w.Field("presences", t.presences);
    w.Field("closed_unexpected", shared_.closed_unexpected.load());
    CountsJson(w, "close_reasons", t.close_reasons);
    w.Field("not_closed_cleanly", not_closed_cleanly_);
    CountsJson(w, "other_events", t.other_events);
    w.EndObject();

    w.Key("server").BeginObject();
    w.Field("pid", opt_.server_pid);
    w.Field("rss_before_kib", rss_before_);
    w.Field("rss_after_kib", rss_after_);
    if (!ol) w.Field("rss_after_hold_kib", rss_after_hold_);
    w.Key("cpu_pct").Raw(server_cpu_pct_ >= 0 ? Fmt(server_cpu_pct_, 1) : "null");
    w.Key("cpu_wait_pct").Raw(server_threads_.empty() ? "null" : Fmt(SumWait(server_threads_), 1));
    ThreadsJson(w, "threads", server_threads_);
    w.EndObject();

    w.EndObject();
    return std::move(w).Take();
  }

  const Options& opt_;
  std::string run_id_;
  Shared shared_;
  Common common_;
  std::vector<std::unique_ptr<Worker>> workers_;
  Machine machine_;
  std::string started_at_;
  SetupReport setup_;
  Stats total_;
  int senders_ = 0;
  int connect_attempted_ = 0;
  bool connect_timed_out_ = false;
  int64_t connect_start_ns_ = 0;
  int64_t connect_end_ns_ = 0;
  int64_t ready_end_ns_ = 0;
  int64_t rss_before_ = -1;
  int64_t rss_after_ = -1;
  int64_t rss_after_hold_ = -1;
  double server_cpu_pct_ = -1;
  std::vector<ThreadPct> server_threads_;
  std::vector<ThreadPct> self_threads_;
  double self_cpu_pct_ = 0;
  double drain_s_ = 0;
  int64_t unacked_at_end_ = 0;
  uint64_t unsent_scheduled_ = 0;
  int open_at_end_ = 0;
  int not_closed_cleanly_ = 0;
};

}  // namespace
}  // namespace sb::bench

int main(int argc, char** argv) {
  using namespace sb::bench;
  signal(SIGPIPE, SIG_IGN);
  Options opt = ParseArgs(argc, argv);
  RaiseFdLimit();
  int rc = Runner(opt).Run();
  std::fflush(stdout);
  std::fflush(stderr);
  // Everything is reported; skip tearing down thousands of sockets and coroutines.
  std::_Exit(rc);
}
