// loadgen: Switchboard's load generator. It sets up users and conversations over REST,
// drives WebSocket traffic (scenario `senders`) or holds idle connections (scenario
// `idle`), and prints what it measured. It asserts nothing: a benchmark reports.
//
// Threading: one io_context per thread, each run by exactly one thread, and every
// connection lives on one of them for its whole life, so a connection's state and its
// thread's statistics need no locks. Only a few run-wide counters are atomics (for the
// progress line and the drain condition). Setup REST traffic runs on the main thread's
// own io_context before the workers start sending.
//
// Time: latencies use the monotonic clock of this one process, so a sender's send time
// written into the message content can be compared with the receiver's arrival time on
// another thread. Open-loop latency is measured from the *scheduled* send time so a
// server that falls behind shows queueing instead of hiding it (no coordinated omission).
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdarg>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <latch>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <cctype>
#include <cstring>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <openssl/evp.h>
#include <simdjson.h>

#include "base/clock.h"
#include "base/json_writer.h"
#include "protocol/ws_codec.h"
#include "histogram.h"
#include "loadgen_common.h"
#include "report.h"
#include "proc_stats.h"
#include "svg_chart.h"

namespace sb::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// Errors are values here: a benchmark under load sees many of them and must count
// them, so exceptions would only be caught and turned back into counts.
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// Reads an optional JSON field: true if present with the right type. (A cast to void
// does not silence simdjson's warn_unused_result under g++.)
template <typename R, typename T>
bool Get(R&& r, T& out) {
  return std::forward<R>(r).get(out) == simdjson::SUCCESS;
}

// ------------------------------------------------------------------------------------
// Options

enum class Scenario { kSenders, kIdle, kGroups, kMixed, kStorm, kQueries, kSweep };

const char* ScenarioName(Scenario s) {
  switch (s) {
    case Scenario::kSenders: return "senders";
    case Scenario::kIdle: return "idle";
    case Scenario::kGroups: return "groups";
    case Scenario::kMixed: return "mixed";
    case Scenario::kStorm: return "storm";
    case Scenario::kQueries: return "queries";
    case Scenario::kSweep: return "sweep";
  }
  return "?";
}
enum class Receipts { kOff, kBatch, kEach };

struct Options {
  std::string url;
  std::string host;
  uint16_t port = 0;
  std::string ws_path = "/v1/ws";
  // WebSocket connections bind to these local addresses in turn (each gives its own
  // ~28k ephemeral ports towards one server address); empty: the kernel picks.
  std::vector<std::string> source_addrs;
  Scenario scenario = Scenario::kSenders;
  int pairs = 1;
  bool two_way = false;
  int window = 1;
  double rate = 0;  // > 0 selects open loop
  int max_inflight = 1000;
  double duration = 10;
  double warmup = 2;
  double drain = 5;
  double report_every = 0;  // senders: print and keep figures per interval of this many s
  int connections = 100;
  int users = 0;  // idle: 0 means one user per connection
  int server_pid = 0;
  int threads = 1;
  int setup_concurrency = 64;
  int connect_concurrency = 200;
  int content_bytes = 100;
  Receipts receipts = Receipts::kBatch;
  int receipt_ms = 10;  // batch receipts: one cumulative receipt per this interval
  bool resume = true;
  // groups / mixed
  int groups = 1;
  int members = 100;
  int group_senders = 1;  // per group
  double group_rate = 100;
  int group_receipt_ms = 50;  // the client rules: a cumulative receipt at most every 50 ms
  // storm
  int storm_messages = 20;
  double storm_jitter_ms = 0;
  bool storm_cursors = false;
  // queries
  int http_clients = 16;
  int prep_messages = 200;
  // sweep
  std::vector<double> rates;
  std::string svg_path;
  bool sweep_all = false;
  std::string json_path;
  std::vector<std::pair<std::string, std::string>> tags;
  bool quiet = false;
  std::string password = "loadgen-password-0123456789";
};

constexpr const char* kHelp = R"(loadgen: Switchboard load generator (prints figures, asserts nothing)

usage: loadgen --url ws://127.0.0.1:PORT --scenario NAME [options]

common:
  --url URL              WebSocket URL of the server (loopback only); REST uses the same
                         host:port. Path defaults to /v1/ws.
  --scenario NAME        senders | idle | groups | mixed | storm | queries | sweep
  --threads T            client threads, one io_context each (default 1: leave the CPU
                         to the server)
  --setup-concurrency N  REST requests in flight during setup (default 64)
  --connect-concurrency N  WebSocket handshakes in flight (default 200)
  --server-pid PID       read the server's VmRSS and CPU time from /proc/PID
  --json FILE            also write every figure and the parameters as one JSON object
  --tag KEY=VALUE        copied into the JSON "tags" object (repeatable)
  --password PW          password for the generated users
  --no-resume            do not send `resume` after `welcome`; the server then holds
                         live messages for a silent connection for up to 1 s
  --quiet                no progress lines on stderr
  --source-addrs A,B,..  bind WebSocket connections to these local addresses in turn
                         (e.g. 127.0.0.2,127.0.0.3: past ~28k connections to one
                         server address, one source address runs out of ports)

traffic (senders, groups, mixed, sweep):
  --duration S           measured seconds (default 10; per phase or sweep stage)
  --warmup S             seconds of traffic before measuring (default 2)
  --drain S              seconds to wait for outstanding acks/deliveries (default 5)
  --report-every S       senders, groups: every S seconds of the window, a line (and a JSON
                         entry) with that interval's deliveries/s, latency, server CPU,
                         RSS and search backlog (from /metrics): how a long run drifts
  --content-bytes N      message content size (default 100, at least 32)
  --max-inflight N       open loop: per-sender cap on unacked messages (default 1000);
                         at the cap the sender waits and the wait shows in the latency
  --receipts MODE        batch (cumulative DELIVERED receipt per conversation every
                         --receipt-ms, default) | each (one receipt per message) | off
  --receipt-ms N         batch interval of 1:1 recipients (default 10)

scenario senders (P pairs of users, one connection each; one sender per pair):
  --pairs P              number of pairs (default 1)
  --two-way              both users of a pair send (2P senders)
  --window W             closed loop: at most W unacked messages per sender (default 1;
                         W=1 measures latency, larger W throughput)
  --rate R               open loop instead: R messages/s in total, spread evenly over the
                         senders; latency counts from each message's scheduled time

scenario groups (G groups of M members, every member its own user and connection;
S members of each group send, open loop):
  --groups G             number of groups (default 1)
  --members M            members per group, the creator included (default 100; the
                         server allows limits.max_group_members, 1,000 by default)
  --group-senders S      senders per group (default 1)
  --group-rate R         messages/s in total over all group senders (default 100);
                         each message is delivered to the M-1 other members
  --group-receipt-ms N   batch receipt interval of group members (default 50, as in
                         the client rules of docs/protocol.md)

scenario mixed (issue #4's bulkhead benchmark): P pairs open loop at --rate R1, and
G groups x M members at --group-rate R2. Two phases on the same connections: the 1:1
traffic alone, then the same 1:1 traffic with the group flood; 1:1 and group figures
are reported separately. Takes --pairs, --rate and the groups options.

scenario storm (N clients in N/2 direct conversations):
  --connections N        clients (default 100; rounded down to even)
  --storm-messages K     messages per conversation sent before the drop, not
                         acknowledged by receipts, so every resume replays them
                         (default 20)
  --storm-jitter-ms J    each client reconnects after a random delay in [0, J)
                         (default 0: all at once)
  --storm-cursors on|off on: each client resumes with the cursors it holds, as
                         docs/protocol.md's client rules say, so nothing it already
                         has is replayed (a restart of up-to-date clients); off
                         (default): `resume` with no cursors, every unacknowledged
                         message replayed to both members (the heavy case)
  All sockets are then reset at once (RST, no close handshake) and every client
  reconnects at once, sending `resume`; reported: time from the drop until 50%, 99%
  and 100% have `resume_done`, connects/s, messages replayed, errors.

scenario queries (P pairs, each conversation prepared with messages of random words):
  --pairs P              conversations (default 50)
  --prep-messages N      messages per conversation before the queries (default 200)
  --http-clients K       concurrent keep-alive HTTP clients (default 16)
  --duration S           measured seconds per query kind (after --warmup)
  Queries: GET /v1/conversations/{id}/messages?limit=50, then GET /v1/search?q=WORD
  (one word of the messages' vocabulary), each client as one of the users.

scenario sweep (open-loop 1:1 at a series of offered rates, same connections):
  --pairs P              pairs (default 1)
  --rates LIST           comma-separated total rates, msg/s (default
                         2000,5000,10000,20000,40000)
  --sweep-all            run every rate; by default the sweep stops after the first
                         stage the server cannot keep up with (acked < 90% of offered)
  --svg FILE             also draw the latency percentiles (log y) against offered
                         load as an SVG chart

scenario idle:
  --connections N        authenticated WebSocket connections to open (default 100)
  --users U              distinct users behind them (default N; each connection is its
                         own login/device either way)
  --duration S           how long to hold them idle after all are welcomed (default 10)

Latency: ack = send_message written -> message_ack read; delivery = send -> `message`
frame read at the recipient (send time carried in the content).
)";

constexpr const char* kTool = "loadgen";

[[noreturn]] void Die(const std::string& msg) { DieAs(kTool, msg); }

bool ParseUrl(Options& o) {
  std::string_view u = o.url;
  if (!u.starts_with("ws://")) return false;
  u.remove_prefix(5);
  auto slash = u.find('/');
  std::string_view hostport = u.substr(0, slash);
  if (slash != std::string_view::npos) o.ws_path = std::string(u.substr(slash));
  return ParseHostPort(hostport, o.host, o.port);
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  const FlagReader flags{argc, argv, kTool};
  auto need = [&](int& i) { return flags.Need(i); };
  auto num = [&](int& i) { return flags.Num(i); };
  auto integer = [&](int& i) { return flags.Int(i); };
  bool have_window = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kHelp, stdout);
      std::exit(0);
    } else if (a == "--url") {
      o.url = need(i);
    } else if (a == "--source-addrs") {
      std::string list = need(i);
      for (size_t at = 0; at <= list.size();) {
        size_t comma = std::min(list.find(',', at), list.size());
        if (comma > at) o.source_addrs.push_back(list.substr(at, comma - at));
        at = comma + 1;
      }
    } else if (a == "--scenario") {
      std::string s = need(i);
      bool found = false;
      for (Scenario sc : {Scenario::kSenders, Scenario::kIdle, Scenario::kGroups, Scenario::kMixed,
                          Scenario::kStorm, Scenario::kQueries, Scenario::kSweep}) {
        if (s == ScenarioName(sc)) {
          o.scenario = sc;
          found = true;
        }
      }
      if (!found) Die("unknown scenario " + s);
    } else if (a == "--pairs") {
      o.pairs = integer(i);
    } else if (a == "--two-way") {
      o.two_way = true;
    } else if (a == "--window") {
      o.window = integer(i);
      have_window = true;
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
    } else if (a == "--report-every") {
      o.report_every = num(i);
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
    } else if (a == "--receipts") {
      std::string s = need(i);
      if (s == "off") o.receipts = Receipts::kOff;
      else if (s == "batch") o.receipts = Receipts::kBatch;
      else if (s == "each") o.receipts = Receipts::kEach;
      else Die("unknown receipts mode " + s);
    } else if (a == "--receipt-ms") {
      o.receipt_ms = integer(i);
    } else if (a == "--groups") {
      o.groups = integer(i);
    } else if (a == "--members") {
      o.members = integer(i);
    } else if (a == "--group-senders") {
      o.group_senders = integer(i);
    } else if (a == "--group-rate") {
      o.group_rate = num(i);
    } else if (a == "--group-receipt-ms") {
      o.group_receipt_ms = integer(i);
    } else if (a == "--storm-messages") {
      o.storm_messages = integer(i);
    } else if (a == "--storm-jitter-ms") {
      o.storm_jitter_ms = num(i);
    } else if (a == "--storm-cursors") {
      std::string v = need(i);
      if (v != "on" && v != "off") Die("--storm-cursors is on or off");
      o.storm_cursors = v == "on";
    } else if (a == "--http-clients") {
      o.http_clients = integer(i);
    } else if (a == "--prep-messages") {
      o.prep_messages = integer(i);
    } else if (a == "--rates") {
      std::string list = need(i);
      o.rates.clear();
      size_t pos = 0;
      while (pos <= list.size()) {
        size_t comma = list.find(',', pos);
        std::string item = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        char* end = nullptr;
        double d = std::strtod(item.c_str(), &end);
        if (item.empty() || *end != '\0' || !std::isfinite(d) || d <= 0) Die("bad rate in --rates: " + item);
        o.rates.push_back(d);
        if (comma == std::string::npos) break;
        pos = comma + 1;
      }
    } else if (a == "--sweep-all") {
      o.sweep_all = true;
    } else if (a == "--svg") {
      o.svg_path = need(i);
    } else if (a == "--no-resume") {
      o.resume = false;
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
  if (!ParseUrl(o)) Die("cannot parse --url " + o.url + " (want ws://HOST:PORT[/path])");
  RequireLoopback(kTool, o.host);
  if (o.threads < 1 || o.threads > 64) Die("--threads must be 1..64");
  if (o.pairs < 1) Die("--pairs must be >= 1");
  if (o.window < 1) Die("--window must be >= 1");
  if (o.rate > 0 && have_window) Die("--window and --rate exclude each other");
  if (o.max_inflight < 1) Die("--max-inflight must be >= 1");
  if (o.connections < 1) Die("--connections must be >= 1");
  if (o.users < 0) Die("--users must be >= 0");
  if (o.setup_concurrency < 1) o.setup_concurrency = 1;
  if (o.connect_concurrency < 1) o.connect_concurrency = 1;
  if (o.content_bytes < 32) o.content_bytes = 32;
  if (o.duration <= 0) Die("--duration must be > 0");
  if (o.receipt_ms < 1) o.receipt_ms = 1;
  if (o.group_receipt_ms < 1) o.group_receipt_ms = 1;
  if (o.groups < 1) Die("--groups must be >= 1");
  if (o.members < 2) Die("--members must be >= 2");
  if (o.group_senders < 1 || o.group_senders > o.members) Die("--group-senders must be 1..members");
  if (o.storm_messages < 0) Die("--storm-messages must be >= 0");
  if (o.http_clients < 1) Die("--http-clients must be >= 1");
  if (o.prep_messages < 1) Die("--prep-messages must be >= 1");
  if (o.rates.empty()) o.rates = {2000, 5000, 10000, 20000, 40000};
  if (o.scenario == Scenario::kMixed && o.rate <= 0) Die("scenario mixed needs --rate (the 1:1 rate, msg/s)");
  if (o.scenario == Scenario::kGroups && o.group_rate <= 0) Die("scenario groups needs --group-rate > 0");
  if (o.scenario == Scenario::kStorm && o.connections < 2) Die("scenario storm needs --connections >= 2");
  return o;
}

// ------------------------------------------------------------------------------------
// Small helpers

// CountMap, Fmt, FmtNs, ... are in loadgen_common.h; the /proc readers in proc_stats.h.

// ------------------------------------------------------------------------------------
// Setup over REST

struct Account {
  std::string username;
  std::string user_id;
  std::string token;  // empty if setup failed
  std::string device_id;
};

struct HttpResult {
  int status = 0;  // 0: transport failure
  std::string body;
  std::string error;  // transport error or the body's error.code
};

class RestClient {
 public:
  RestClient(asio::io_context& ctx, const Options& o) : stream_(ctx) {
    endpoint_ = tcp::endpoint(asio::ip::make_address(o.host), o.port);
    hostport_ = (endpoint_.address().is_v6() ? "[" + o.host + "]" : o.host) + ":" + std::to_string(o.port);
  }

  asio::awaitable<HttpResult> Call(http::verb verb, std::string target, std::string body, std::string token) {
    // A kept-alive connection the server closed in the meantime fails on first use;
    // one retry on a fresh connection tells that apart from a real failure.
    HttpResult r;
    for (int attempt = 0; attempt < 2; ++attempt) {
      bool reused = connected_;
      r = co_await Once(verb, target, body, token);
      if (r.status != 0 || !reused) break;
    }
    co_return r;
  }

 private:
  asio::awaitable<HttpResult> Once(http::verb verb, const std::string& target, const std::string& body,
                                   const std::string& token) {
    HttpResult r;
    if (!connected_) {
      stream_.expires_after(std::chrono::seconds(10));
      auto [ec] = co_await stream_.async_connect(endpoint_, kTuple);
      if (ec) {
        r.error = "connect: " + ec.message();
        stream_.close();
        co_return r;
      }
      stream_.socket().set_option(tcp::no_delay(true));
      connected_ = true;
    }
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, hostport_);
    req.set(http::field::user_agent, "switchboard-loadgen");
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    if (!body.empty()) req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.keep_alive(true);
    req.prepare_payload();
    // Setup requests hash passwords on the server; a slow server is still a working one.
    stream_.expires_after(std::chrono::seconds(60));
    auto [wec, wn] = co_await http::async_write(stream_, req, kTuple);
    (void)wn;
    if (wec) {
      r.error = "write: " + wec.message();
      Reset();
      co_return r;
    }
    http::response<http::string_body> res;
    auto [rec, rn] = co_await http::async_read(stream_, buf_, res, kTuple);
    (void)rn;
    if (rec) {
      r.error = "read: " + rec.message();
      Reset();
      co_return r;
    }
    stream_.expires_never();
    r.status = static_cast<int>(res.result_int());
    r.body = std::move(res.body());
    if (!res.keep_alive()) Reset();
    co_return r;
  }

  void Reset() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    buf_.clear();
    connected_ = false;
  }

  beast::tcp_stream stream_;
  tcp::endpoint endpoint_;
  std::string hostport_;
  beast::flat_buffer buf_;
  bool connected_ = false;
};

struct SetupReport {
  int users_wanted = 0;
  int users_registered = 0;
  double register_s = 0;
  int logins_wanted = 0;
  int logins_ok = 0;
  double login_s = 0;
  int conversations_wanted = 0;
  int conversations_ok = 0;
  double conversations_s = 0;
  int groups_wanted = 0;
  int groups_ok = 0;
  double groups_s = 0;
  uint64_t rate_limited_retries = 0;
  CountMap failures;  // "register: 409 conflict" -> n
};

std::string ErrorCodeOf(simdjson::dom::parser& p, const std::string& body) {
  simdjson::dom::element doc;
  std::string_view code;
  if (p.parse(body).get(doc) == simdjson::SUCCESS && doc["error"]["code"].get_string().get(code) == simdjson::SUCCESS)
    return std::string(code);
  return "";
}

class Setup {
 public:
  Setup(const Options& o, std::string run_id) : opt_(o), run_id_(std::move(run_id)) {}

  // Registers `users` users, then logs in once per entry of `login_users` (an index into
  // the users) with a distinct device id per login. Returns one Account per login.
  std::vector<Account> Accounts(int users, const std::vector<int>& login_users) {
    report_.users_wanted = users;
    report_.logins_wanted = static_cast<int>(login_users.size());
    names_.resize(users);
    registered_.assign(users, false);
    for (int i = 0; i < users; ++i) names_[i] = "lg" + run_id_ + "u" + std::to_string(i);

    int64_t t0 = MonoNs();
    RunLanes(users, [this](RestClient& rc, int i) { return Register(rc, i); });
    report_.register_s = static_cast<double>(MonoNs() - t0) / 1e9;
    for (bool b : registered_) report_.users_registered += b;

    accounts_.assign(login_users.size(), Account{});
    std::vector<int> per_user_count(users, 0);
    for (size_t j = 0; j < login_users.size(); ++j) {
      int u = login_users[j];
      accounts_[j].username = names_[u];
      accounts_[j].device_id = "lgdev" + std::to_string(per_user_count[u]++);
    }
    t0 = MonoNs();
    RunLanes(static_cast<int>(login_users.size()),
             [this, &login_users](RestClient& rc, int j) { return Login(rc, j, login_users[j]); });
    report_.login_s = static_cast<double>(MonoNs() - t0) / 1e9;
    for (const auto& a : accounts_) report_.logins_ok += !a.token.empty();
    return accounts_;
  }

  // Creates a direct conversation for each (creator, member) pair of accounts.
  std::vector<std::string> DirectConversations(const std::vector<Account>& accts,
                                               const std::vector<std::pair<int, int>>& pairs) {
    report_.conversations_wanted = static_cast<int>(pairs.size());
    convs_.assign(pairs.size(), "");
    int64_t t0 = MonoNs();
    RunLanes(static_cast<int>(pairs.size()), [this, &accts, &pairs](RestClient& rc, int i) {
      return CreateDirect(rc, i, accts[pairs[i].first], accts[pairs[i].second]);
    });
    report_.conversations_s = static_cast<double>(MonoNs() - t0) / 1e9;
    for (const auto& c : convs_) report_.conversations_ok += !c.empty();
    return convs_;
  }

  // Creates a group per entry of `groups`: account indices, the first one creates it
  // and the others are its member_ids.
  std::vector<std::string> Groups(const std::vector<Account>& accts, const std::vector<std::vector<int>>& groups) {
    report_.groups_wanted = static_cast<int>(groups.size());
    groups_.assign(groups.size(), "");
    int64_t t0 = MonoNs();
    RunLanes(static_cast<int>(groups.size()), [this, &accts, &groups](RestClient& rc, int i) {
      return CreateGroup(rc, i, accts, groups[i]);
    });
    report_.groups_s = static_cast<double>(MonoNs() - t0) / 1e9;
    for (const auto& g : groups_) report_.groups_ok += !g.empty();
    return groups_;
  }

  const SetupReport& report() const { return report_; }

 private:
  template <typename F>
  void RunLanes(int n, F task) {
    if (n == 0) return;
    asio::io_context ctx{1};
    int next = 0;
    int lanes = std::min(opt_.setup_concurrency, n);
    for (int l = 0; l < lanes; ++l) {
      asio::co_spawn(
          ctx,
          [&ctx, &next, n, &task, this]() -> asio::awaitable<void> {
            RestClient rc(ctx, opt_);
            while (next < n) {
              int i = next++;
              co_await task(rc, i);
            }
          },
          kRethrow);
    }
    ctx.run();
  }

  // Retries rate-limited (429) answers with a short back-off; anything else is final.
  asio::awaitable<HttpResult> CallRetrying(RestClient& rc, http::verb verb, std::string target, std::string body,
                                           std::string token) {
    HttpResult r;
    for (int attempt = 0; attempt < 50; ++attempt) {
      r = co_await rc.Call(verb, target, body, token);
      if (r.status != 429) break;
      ++report_.rate_limited_retries;
      asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(50 + 10 * attempt));
      co_await t.async_wait(kTuple);
    }
    co_return r;
  }

  void Fail(std::string_view what, const HttpResult& r) {
    std::string k(what);
    if (r.status == 0) {
      k += ": " + r.error;
    } else {
      k += ": HTTP " + std::to_string(r.status);
      std::string code = ErrorCodeOf(parser_, r.body);
      if (!code.empty()) k += " " + code;
    }
    Inc(report_.failures, k);
  }

  asio::awaitable<void> Register(RestClient& rc, int i) {
    JsonWriter w;
    w.BeginObject().Field("username", names_[i]).Field("password", opt_.password).Field("display_name", names_[i]);
    w.EndObject();
    HttpResult r = co_await CallRetrying(rc, http::verb::post, "/v1/users", w.Take(), "");
    if (r.status == 201) registered_[i] = true;
    else Fail("register", r);
  }

  asio::awaitable<void> Login(RestClient& rc, int j, int u) {
    if (!registered_[u]) co_return;
    Account& a = accounts_[j];
    JsonWriter w;
    w.BeginObject().Field("username", a.username).Field("password", opt_.password).Field("device_id", a.device_id);
    w.EndObject();
    HttpResult r = co_await CallRetrying(rc, http::verb::post, "/v1/sessions", w.Take(), "");
    if (r.status != 200) {
      Fail("login", r);
      co_return;
    }
    simdjson::dom::element doc;
    std::string_view tok, uid;
    if (parser_.parse(r.body).get(doc) != simdjson::SUCCESS || doc["access_token"].get_string().get(tok) ||
        doc["user_id"].get_string().get(uid)) {
      Inc(report_.failures, "login: unparsable answer");
      co_return;
    }
    a.token = std::string(tok);
    a.user_id = std::string(uid);
  }

  asio::awaitable<void> CreateDirect(RestClient& rc, int i, const Account& creator, const Account& member) {
    if (creator.token.empty() || member.user_id.empty()) co_return;
    JsonWriter w;
    w.BeginObject().Field("type", "direct").Key("member_ids").BeginArray().String(member.user_id).EndArray();
    w.EndObject();
    HttpResult r = co_await CallRetrying(rc, http::verb::post, "/v1/conversations", w.Take(), creator.token);
    if (r.status != 201 && r.status != 200) {
      Fail("create conversation", r);
      co_return;
    }
    simdjson::dom::element doc;
    std::string_view cid;
    if (parser_.parse(r.body).get(doc) != simdjson::SUCCESS || doc["conversation_id"].get_string().get(cid)) {
      Inc(report_.failures, "create conversation: unparsable answer");
      co_return;
    }
    convs_[i] = std::string(cid);
  }

  asio::awaitable<void> CreateGroup(RestClient& rc, int i, const std::vector<Account>& accts,
                                    const std::vector<int>& members) {
    if (members.empty() || accts[members[0]].token.empty()) co_return;
    JsonWriter w(64 + 24 * members.size());
    w.BeginObject().Field("type", "group").Field("title", "lg group " + std::to_string(i));
    w.Key("member_ids").BeginArray();
    for (size_t k = 1; k < members.size(); ++k) {
      if (!accts[members[k]].user_id.empty()) w.String(accts[members[k]].user_id);
    }
    w.EndArray().EndObject();
    HttpResult r = co_await CallRetrying(rc, http::verb::post, "/v1/conversations", w.Take(), accts[members[0]].token);
    if (r.status != 201 && r.status != 200) {
      Fail("create group", r);
      co_return;
    }
    simdjson::dom::element doc;
    std::string_view cid;
    if (parser_.parse(r.body).get(doc) != simdjson::SUCCESS || doc["conversation_id"].get_string().get(cid)) {
      Inc(report_.failures, "create group: unparsable answer");
      co_return;
    }
    groups_[i] = std::string(cid);
  }

  const Options& opt_;
  std::string run_id_;
  SetupReport report_;
  std::vector<std::string> groups_;
  std::vector<std::string> names_;
  std::vector<bool> registered_;
  std::vector<Account> accounts_;
  std::vector<std::string> convs_;
  simdjson::dom::parser parser_;
};

// ------------------------------------------------------------------------------------
// WebSocket connections

// Written by the main thread before it posts work to the workers (the post orders it),
// read-only afterwards.
// Connections belong to one traffic class: 1:1 pairs (kDirect) or group members
// (kGroup). Each class has its own sending plan and its own statistics, so the mixed
// scenario reports 1:1 latency apart from the group flood.
enum Cls { kDirect = 0, kGroup = 1, kClasses = 2 };
const char* ClsName(int c) { return c == kDirect ? "direct" : "group"; }

struct ClassPlan {
  bool send = false;  // this class's senders send in this phase
  bool open_loop = false;
  int window = 1;
  int64_t period_ns = 0;  // open loop: per-sender interval
  int senders = 0;
  int64_t budget = 0;  // messages per sender in this phase; 0: until the window ends
  double rate = 0;     // open loop: msg/s over all senders of the class (for reports)
  Receipts receipts = Receipts::kBatch;
  int receipt_ms = 10;
};

struct Plan {
  int64_t start_ns = 0;         // senders begin
  int64_t window_start_ns = 0;  // measuring begins (after warm-up)
  int64_t window_end_ns = 0;    // measuring and sending end
  int max_inflight = 1000;
  ClassPlan cls[kClasses];
  bool InWindow(int64_t t) const { return t >= window_start_ns && t < window_end_ns; }
};

struct Shared {
  std::atomic<int64_t> inflight{0};
  std::atomic<int> welcomed{0};
  std::atomic<int> ready{0};  // welcomed and, with resume, resume_done received
  std::atomic<int> connect_failed{0};
  std::atomic<int> open{0};
  std::atomic<int> closed_unexpected{0};
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> acked{0};
  std::atomic<uint64_t> delivered{0};
  std::atomic<uint64_t> expected_deliveries{0};  // per ack, the recipients of that message
  std::atomic<uint64_t> failed{0};               // sends answered with an error frame
  std::atomic<uint64_t> errors{0};
  std::atomic<int64_t> last_welcome_ns{0};
  std::atomic<int64_t> last_ready_ns{0};
};

struct Stats : ConnStats {
  uint64_t resume_replayed = 0;
  uint64_t pings_sent = 0;
  uint64_t pongs = 0;
  // queries: [0] history pages, [1] searches
  Histogram http_lat[2];
  uint64_t http_ok[2] = {0, 0};
  uint64_t http_failed[2] = {0, 0};
  uint64_t http_items[2] = {0, 0};  // messages returned (history) / results (search)
  CountMap http_errors;

  void Merge(const Stats& o) {
    for (int k = 0; k < 2; ++k) {
      http_lat[k].Merge(o.http_lat[k]);
      http_ok[k] += o.http_ok[k];
      http_failed[k] += o.http_failed[k];
      http_items[k] += o.http_items[k];
    }
    MergeInto(http_errors, o.http_errors);
    MergeConn(o);
    resume_replayed += o.resume_replayed;
    pings_sent += o.pings_sent;
    pongs += o.pongs;
  }
};

class Conn;

struct Worker {
  asio::io_context ctx{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
  std::thread thread;
  Stats stats[kClasses];
  std::vector<std::shared_ptr<Conn>> conns;
  std::vector<std::shared_ptr<Conn>> retired;  // storm: the connections that were dropped
  simdjson::dom::parser parser;
  // The frames of a running phase: one on-demand pass over each (FrameFields), from a
  // copy with simdjson's padding after it.
  simdjson::ondemand::parser od_parser;
  std::string od_buf;
  Plan plan;
};

// The fields of a server frame the measurement reads. The views point into the
// worker's on-demand parser and live until its next frame.
struct FrameFields {
  std::string_view event, client_msg_id, conversation_id, message_id, content, code, message;
  uint64_t seq = 0;
  bool duplicate = false;
  bool has_content = false;
};

// One pass over the frame's top-level fields; false when it is not a JSON object.
// Fields of another type than expected are left at their defaults.
bool ReadFrameFields(Worker& w, std::string_view frame, FrameFields* f) {
  w.od_buf.resize(frame.size() + simdjson::SIMDJSON_PADDING);
  std::memcpy(w.od_buf.data(), frame.data(), frame.size());
  simdjson::ondemand::document doc;
  if (w.od_parser.iterate(w.od_buf.data(), frame.size(), w.od_buf.size()).get(doc)) return false;
  simdjson::ondemand::object obj;
  if (doc.get_object().get(obj)) return false;
  for (auto field : obj) {
    std::string_view key;
    if (field.unescaped_key().get(key)) return false;
    auto v = field.value();
    // By length first: a frame has a dozen fields and most are not wanted.
    switch (key.size()) {
      case 3:
        if (key == "seq") Get(v.get_uint64(), f->seq);
        break;
      case 4:
        if (key == "code") Get(v.get_string(), f->code);
        break;
      case 5:
        if (key == "event") Get(v.get_string(), f->event);
        break;
      case 7:
        if (key == "content") f->has_content = Get(v.get_string(), f->content);
        else if (key == "message") Get(v.get_string(), f->message);
        break;
      case 9:
        if (key == "duplicate") Get(v.get_bool(), f->duplicate);
        break;
      case 10:
        if (key == "message_id") Get(v.get_string(), f->message_id);
        break;
      case 13:
        if (key == "client_msg_id") Get(v.get_string(), f->client_msg_id);
        break;
      case 15:
        if (key == "conversation_id") Get(v.get_string(), f->conversation_id);
        break;
    }
  }
  return true;
}

struct Common {
  const Options* opt = nullptr;
  Shared* shared = nullptr;
  tcp::endpoint endpoint;
  std::vector<tcp::endpoint> sources;  // --source-addrs, port 0
  std::string hostport;
  std::string run_id;
  std::string filler;  // content padding
  // queries: message content made of words from this vocabulary, so searches match
  bool word_content = false;
  std::vector<std::string> vocab;
};

// 256 made-up words ("bakedo", "fimuza", ...): letters only, distinct, not English, so
// every search hits the messages of this tool and the hit rate is known (a word is
// in about 1 - (255/256)^12 = 4.6% of the ~12-word messages).
std::vector<std::string> MakeVocabulary() {
  static constexpr char kCons[] = "bdfgklmnprstvz";
  static constexpr char kVow[] = "aeiou";
  std::vector<std::string> v;
  for (int i = 0; i < 256; ++i) {
    int s0 = i % 70, s1 = i / 70, s2 = (i * 31 + 7) % 70;
    std::string w;
    for (int syl : {s0, s1, s2}) {
      w += kCons[syl / 5];
      w += kVow[syl % 5];
    }
    v.push_back(std::move(w));
  }
  return v;
}

// Every seq one connection saw in one conversation, from its own acks and from
// deliveries. A sender never receives its own messages as `message` frames, so only the
// union tells a real gap from "that one was mine", and only at the end of the run, since
// an ack and a delivery may arrive in either order.
// Maps keyed by conversation id, looked up by the frame's string_view without making a
// string (ids are longer than the small-string buffer).
struct StrHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StrMap = std::unordered_map<std::string, V, StrHash, std::equal_to<>>;

struct ConvSeen {
  std::vector<bool> seen;  // index: seq
  uint64_t last_delivered = 0;
};

// The client side of the WebSocket framing, kept lean so that the generator spends its
// share of the CPU on load rather than on its own machinery: frames out are masked and
// written straight from the send queue (several per write); frames in are cut out of
// one read buffer, several per read.
class WsIn {
 public:
  // The next whole server frame in the buffer, consumed; false if none is complete.
  // `payload` stays valid until the next Read.
  bool Next(uint8_t* opcode, std::string_view* payload) {
    size_t avail = size_ - start_;
    if (avail < 2) return false;
    const auto* u = reinterpret_cast<const unsigned char*>(buf_.get() + start_);
    uint64_t len = u[1] & 0x7F;
    size_t header = 2;
    if (len == 126) {
      if (avail < 4) return false;
      len = static_cast<uint64_t>(u[2]) << 8 | u[3];
      header = 4;
    } else if (len == 127) {
      if (avail < 10) return false;
      len = 0;
      for (int i = 0; i < 8; ++i) len = len << 8 | u[2 + i];
      header = 10;
    }
    if (avail - header < len) return false;
    *opcode = u[0] & 0x0F;
    *payload = std::string_view(buf_.get() + start_ + header, static_cast<size_t>(len));
    start_ += header + static_cast<size_t>(len);
    return true;
  }
  // Room for the next read (what was consumed is dropped first). The buffer is not
  // cleared before a read: zeroing 16 KiB per read was 5% of the generator's CPU.
  asio::mutable_buffer Prepare() {
    if (start_ > 0) {
      std::memmove(buf_.get(), buf_.get() + start_, size_ - start_);
      size_ -= start_;
      start_ = 0;
    }
    if (cap_ - size_ < kReadBytes) {
      size_t cap = size_ + kReadBytes;
      auto bigger = std::make_unique_for_overwrite<char[]>(cap);
      if (size_ > 0) std::memcpy(bigger.get(), buf_.get(), size_);
      buf_ = std::move(bigger);
      cap_ = cap;
    }
    return asio::buffer(buf_.get() + size_, kReadBytes);
  }
  void Commit(size_t n) { size_ += n; }
  // The HTTP head of the upgrade answer, if complete: consumed, the frames behind it kept.
  bool TakeHead(std::string* head) {
    std::string_view in(buf_.get() + start_, size_ - start_);
    size_t end = in.find("\r\n\r\n");
    if (end == std::string_view::npos) return false;
    head->assign(in.substr(0, end + 4));
    start_ += end + 4;
    return true;
  }
  size_t buffered() const { return size_ - start_; }

 private:
  static constexpr size_t kReadBytes = 16 * 1024;
  std::unique_ptr<char[]> buf_;
  size_t size_ = 0;   // bytes held (consumed ones included until the next Prepare)
  size_t cap_ = 0;
  size_t start_ = 0;  // first unconsumed byte
};

// A masked client frame. The mask only guards naive proxies (RFC 6455 §10.3); a cheap
// generator is enough for a benchmark client.
std::string MaskedFrame(uint8_t opcode, std::string_view payload, uint64_t& mask_state) {
  mask_state ^= mask_state << 13;
  mask_state ^= mask_state >> 7;
  mask_state ^= mask_state << 17;
  return protocol::WsClientFrame(opcode, payload, static_cast<uint32_t>(mask_state));
}

class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(Worker& w, const Common& c, int idx, Account acct, int cls = kDirect)
      : w_(w),
        c_(c),
        idx_(idx),
        cls_(cls),
        acct_(std::move(acct)),
        sock_(w.ctx),
        ping_timer_(w.ctx),
        send_timer_(w.ctx),
        receipt_timer_(w.ctx) {
    cmid_prefix_ = "lg" + c_.run_id + "-" + std::to_string(idx_) + "-";
    rng_.seed(static_cast<uint64_t>(idx_) * 0x9e3779b97f4a7c15ULL + 1);
    mask_state_ = static_cast<uint64_t>(idx_) * 0x2545F4914F6CDD1DULL + 0x9E3779B97F4A7C15ULL;
  }

  // The client rules' cursors: per conversation, the highest seq this connection holds
  // with nothing missing below it (its own acks and the deliveries), as resume JSON.
  std::string CursorsJson() const {
    std::string out = "{";
    for (const auto& [conv, cs] : conv_seen_) {
      uint64_t k = 0;
      while (k + 1 < cs.seen.size() && cs.seen[k + 1]) ++k;
      if (k == 0) continue;
      if (out.size() > 1) out += ',';
      out += '"' + conv + "\":" + std::to_string(k);
    }
    return out + "}";
  }
  void SetResumeCursors(std::string json) { resume_cursors_ = std::move(json); }

  // `fanout`: how many connections receive each of its messages (1 in a pair, M-1 in
  // a group of M), so the drain knows how many deliveries to wait for.
  void MakeSender(std::string conv_id, int sender_index, int fanout = 1) {
    sends_ = true;
    conv_id_ = std::move(conv_id);
    sender_index_ = sender_index;
    fanout_ = fanout;
  }

  // Connect, upgrade and wait for `welcome`; then keep reading in the background.
  asio::awaitable<void> Open() {
    auto self = shared_from_this();
    int64_t t0 = MonoNs();
    std::string err = co_await Handshake();
    if (!err.empty()) {
      Inc(S().connect_errors, err);
      c_.shared->connect_failed.fetch_add(1);
      beast::error_code ignored;
      sock_.close(ignored);
      closed_ = true;
      failed_ = true;
      co_return;
    }
    int64_t t1 = MonoNs();
    S().connect_lat.RecordSigned(t1 - t0);
    c_.shared->welcomed.fetch_add(1);
    StoreMax(c_.shared->last_welcome_ns, t1);
    if (c_.opt->resume) {
      err = co_await Resume();
      if (!err.empty()) {
        Inc(S().connect_errors, err);
        c_.shared->connect_failed.fetch_add(1);
        beast::error_code ignored;
        sock_.close(ignored);
        closed_ = true;
        failed_ = true;
        co_return;
      }
    }
    int64_t t2 = MonoNs();
    if (c_.opt->resume) S().resume_lat.RecordSigned(t2 - t1);
    ready_at_ns_ = t2;
    c_.shared->open.fetch_add(1);
    c_.shared->ready.fetch_add(1);
    StoreMax(c_.shared->last_ready_ns, t2);
    asio::co_spawn(w_.ctx, ReadLoop(self), kRethrow);
    asio::co_spawn(w_.ctx, PingLoop(self), kRethrow);
  }

  // Starts (or restarts, for a new phase) this connection's sending under the
  // worker's current plan; does nothing if its class does not send in this phase.
  void StartSending() {
    if (!sends_ || closed_ || closing_) return;
    const Plan& p = w_.plan;
    const ClassPlan& cp = CP();
    sent_in_phase_ = 0;
    blocked_ = false;
    pause_until_ns_ = 0;
    if (!cp.send) return;
    if (cp.open_loop) {
      // Spread the senders' phases over one period so the aggregate rate is smooth
      // rather than a burst of every sender at the same instant.
      next_sched_ns_ = p.start_ns + cp.period_ns * sender_index_ / std::max(1, cp.senders);
      ArmOpenLoop();
    } else {
      auto self = shared_from_this();
      send_timer_.expires_at(AtNs(p.start_ns));
      send_timer_.async_wait([self](beast::error_code ec) {
        if (!ec) self->Refill();
      });
    }
  }

  // The closing handshake: our close frame, then the read loop ends the connection when
  // the server's answer arrives (or after 5 s without one).
  void Close() {
    if (closed_ || closing_) return;
    closing_ = true;
    CancelTimers();
    SendFrame(protocol::kWsClose, protocol::WsClosePayload(protocol::kWsCloseNormal, ""));
    ping_timer_.expires_after(std::chrono::seconds(5));
    ping_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec) return;
      beast::error_code ignored;
      self->sock_.close(ignored);
    });
  }

  // Drops the connection as a network failure or a crashed gateway would: the socket
  // is reset (SO_LINGER 0: RST, no close handshake). Not counted as unexpected.
  void Abort() {
    if (closed_ || closing_) return;
    closing_ = true;
    CancelTimers();
    beast::error_code ignored;
    sock_.set_option(asio::socket_base::linger(true, 0), ignored);
    sock_.close(ignored);
  }

  // Open-loop messages that were due before the end but never sent (the sender was at
  // its in-flight cap). Call on the worker thread (or after it stopped).
  uint64_t UnsentScheduled() const {
    const Plan& p = w_.plan;
    const ClassPlan& cp = CP();
    if (!sends_ || !cp.send || !cp.open_loop || next_sched_ns_ >= p.window_end_ns || cp.period_ns <= 0) return 0;
    return static_cast<uint64_t>((p.window_end_ns - next_sched_ns_ + cp.period_ns - 1) / cp.period_ns);
  }
  size_t Inflight() const { return inflight_.size(); }
  int cls() const { return cls_; }
  int idx() const { return idx_; }
  bool sends() const { return sends_; }
  const Account& account() const { return acct_; }
  const std::string& conversation() const { return conv_id_; }
  // When `resume_done` (or, without resume, `welcome`) arrived; 0 if never.
  int64_t ready_at_ns() const { return ready_at_ns_; }
  bool failed() const { return failed_; }

  // Seqs below the highest one seen that this connection never saw. Call only after
  // the worker thread stopped.
  uint64_t SeqGaps() const {
    uint64_t gaps = 0;
    for (const auto& [conv, cs] : conv_seen_) {
      uint64_t seen = static_cast<uint64_t>(std::count(cs.seen.begin(), cs.seen.end(), true));
      size_t top = cs.seen.size();
      while (top > 0 && !cs.seen[top - 1]) --top;
      // Seqs start at 1: index 0 is never a message.
      if (top > 1) gaps += (top - 1) - seen;
    }
    return gaps;
  }

 private:
  asio::awaitable<std::string> Handshake() {
    // Connect and upgrade within 30 s (the watchdog cancels the socket).
    ArmWatchdog();
    if (!c_.sources.empty()) {
      beast::error_code bec;
      sock_.open(c_.endpoint.protocol(), bec);
      if (!bec) sock_.bind(c_.sources[static_cast<size_t>(idx_) % c_.sources.size()], bec);
      if (bec) {
        DisarmWatchdog();
        co_return "bind source address: " + bec.message();
      }
    }
    auto [cec] = co_await sock_.async_connect(c_.endpoint, kTuple);
    if (cec) {
      bool fired = DisarmWatchdog();
      co_return fired ? std::string("connect: no answer within 30 s") : "connect: " + cec.message();
    }
    beast::error_code ignored;
    sock_.set_option(tcp::no_delay(true), ignored);
    // Synchronous writes below return would_block instead of waiting.
    sock_.non_blocking(true, ignored);
    // Sec-WebSocket-Key: base64 of 16 random bytes.
    unsigned char nonce[16], b64[25];
    for (auto& b : nonce) b = static_cast<unsigned char>(rng_());
    std::string key(reinterpret_cast<const char*>(b64), static_cast<size_t>(EVP_EncodeBlock(b64, nonce, 16)));
    std::string req = "GET " + c_.opt->ws_path + " HTTP/1.1\r\nHost: " + c_.hostport +
                      "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: " + key + "\r\nAuthorization: Bearer " + acct_.token +
                      "\r\nUser-Agent: switchboard-loadgen\r\n\r\n";
    auto [wec, wn] = co_await asio::async_write(sock_, asio::buffer(req), kTuple);
    (void)wn;
    if (wec) {
      DisarmWatchdog();
      co_return "upgrade write: " + wec.message();
    }
    std::string head;
    while (!in_.TakeHead(&head)) {
      if (in_.buffered() > 16384) {
        DisarmWatchdog();
        co_return "upgrade: answer head too large";
      }
      auto [rec, rn] = co_await sock_.async_read_some(in_.Prepare(), kTuple);
      in_.Commit(rn);
      if (rec) {
        bool fired = DisarmWatchdog();
        co_return fired ? std::string("upgrade: no answer within 30 s") : "upgrade read: " + rec.message();
      }
    }
    // "HTTP/1.1 101 ..." and the accept value of our key.
    if (head.size() < 12 || head.compare(9, 3, "101") != 0) {
      DisarmWatchdog();
      co_return "upgrade: HTTP " + (head.size() >= 12 ? head.substr(9, 3) : std::string("?"));
    }
    std::string lower = head;
    for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    size_t at = lower.find("\r\nsec-websocket-accept:");
    std::string accept;
    if (at != std::string::npos) {
      size_t v = head.find_first_not_of(' ', at + 23);
      accept = head.substr(v, head.find("\r\n", v) - v);
      while (!accept.empty() && accept.back() == ' ') accept.pop_back();
    }
    if (accept != protocol::WsAcceptKey(key)) {
      DisarmWatchdog();
      co_return "upgrade: wrong Sec-WebSocket-Accept";
    }
    // The server speaks first; the watchdog bounds that too.
    auto [rec, frame] = co_await NextMessage();
    bool fired = DisarmWatchdog();
    if (rec) co_return fired ? std::string("no welcome within 30 s") : "read welcome: " + rec.message();
    simdjson::dom::element doc;
    std::string_view ev;
    if (w_.parser.parse(frame.data(), frame.size()).get(doc) || doc["event"].get_string().get(ev))
      co_return "first frame unparsable";
    if (ev != "welcome") {
      std::string what = "first frame was " + std::string(ev);
      std::string_view code;
      if (ev == "error" && doc["code"].get_string().get(code) == simdjson::SUCCESS) what += " " + std::string(code);
      co_return what;
    }
    int64_t hb = 0;
    if (doc["heartbeat_interval_ms"].get_int64().get(hb) == simdjson::SUCCESS && hb > 0) heartbeat_ms_ = hb;
    co_return "";
  }

  // The next text message, answering pings on the way; an error when the connection
  // ends (a close frame from the server included: its code is kept for OnClosed).
  asio::awaitable<std::tuple<beast::error_code, std::string_view>> NextMessage() {
    for (;;) {
      uint8_t op;
      std::string_view payload;
      while (in_.Next(&op, &payload)) {
        if (op == protocol::kWsText) co_return std::tuple{beast::error_code{}, payload};
        if (!OnControl(op, payload)) co_return std::tuple{beast::error_code(asio::error::eof), std::string_view{}};
      }
      auto [ec, n] = co_await sock_.async_read_some(in_.Prepare(), kTuple);
      in_.Commit(n);
      if (ec) co_return std::tuple{ec, std::string_view{}};
    }
  }

  // A control (or unexpected) frame from the server. False when the connection ended.
  bool OnControl(uint8_t op, std::string_view payload) {
    if (op == protocol::kWsPing) {
      SendFrame(protocol::kWsPong, payload);
      return true;
    }
    if (op != protocol::kWsClose) return true;  // pong, binary: nothing to do
    if (payload.size() >= 2) {
      unsigned code = static_cast<unsigned char>(payload[0]) << 8 | static_cast<unsigned char>(payload[1]);
      close_why_ = "close " + std::to_string(code);
      if (payload.size() > 2) close_why_ += " " + std::string(payload.substr(2));
    } else {
      close_why_ = "close (no code)";
    }
    // Answer a close we did not start, then end the TCP connection.
    if (!closing_) SendFrame(protocol::kWsClose, payload.substr(0, 2));
    beast::error_code ignored;
    sock_.shutdown(tcp::socket::shutdown_send, ignored);
    return false;
  }

  // A client resumes right after `welcome`: the server holds live messages for a
  // connection that has said nothing yet (up to 1 s), so a silent receiver would
  // measure that hold instead of delivery. Fresh users have nothing to replay, but any
  // replayed message is handled like a live one.
  asio::awaitable<std::string> Resume() {
    ArmWatchdog();
    Send(R"({"event":"resume","cursors":)" + (resume_cursors_.empty() ? std::string("{}") : resume_cursors_) + "}");
    for (;;) {
      auto [rec, frame] = co_await NextMessage();
      if (rec) {
        bool fired = DisarmWatchdog();
        co_return fired ? std::string("no resume_done within 30 s") : "read resume_done: " + rec.message();
      }
      simdjson::dom::element doc;
      std::string_view ev;
      if (w_.parser.parse(frame.data(), frame.size()).get(doc) || doc["event"].get_string().get(ev)) {
        ++S().unparsable_frames;
      } else if (ev == "resume_done") {
        uint64_t replayed = 0;
        if (Get(doc["replayed"].get_uint64(), replayed)) S().resume_replayed += replayed;
        break;
      } else if (ev == "error") {
        std::string_view code = "(no code)";
        Get(doc["code"].get_string(), code);
        DisarmWatchdog();
        co_return "resume answered with error " + std::string(code);
      } else {
        OnFrame(frame);
      }
    }
    DisarmWatchdog();
    co_return "";
  }

  // Bounds a wait on the server during setup by cancelling the socket after 30 s. The
  // ping timer is free until the connection is ready. The flags live in members, not
  // coroutine locals, and carry a generation: a handler already queued when the read
  // wins the race may still run after the wait is over or a new one has begun.
  void ArmWatchdog() {
    uint64_t gen = ++watchdog_gen_;
    watchdog_fired_ = false;
    ping_timer_.expires_after(std::chrono::seconds(30));
    ping_timer_.async_wait([self = shared_from_this(), gen](beast::error_code ec) {
      if (ec || gen != self->watchdog_gen_) return;
      self->watchdog_fired_ = true;
      beast::error_code ignored;
      self->sock_.cancel(ignored);
    });
  }
  // Returns whether the watchdog fired.
  bool DisarmWatchdog() {
    ++watchdog_gen_;
    ping_timer_.cancel();
    return watchdog_fired_;
  }

  // Every whole frame of each read is handled before the next read.
  static asio::awaitable<void> ReadLoop(std::shared_ptr<Conn> self) {
    for (;;) {
      uint8_t op;
      std::string_view payload;
      while (self->in_.Next(&op, &payload)) {
        if (op == protocol::kWsText) {
          self->OnFrame(payload);
        } else if (!self->OnControl(op, payload)) {
          self->OnClosed(asio::error::eof);
          beast::error_code ignored;
          self->sock_.close(ignored);
          co_return;
        }
      }
      auto [ec, n] = co_await self->sock_.async_read_some(self->in_.Prepare(), kTuple);
      self->in_.Commit(n);
      if (ec) {
        self->OnClosed(ec);
        co_return;
      }
    }
  }

  static asio::awaitable<void> PingLoop(std::shared_ptr<Conn> self) {
    while (!self->closed_ && !self->closing_) {
      self->ping_timer_.expires_after(std::chrono::milliseconds(self->heartbeat_ms_));
      auto [ec] = co_await self->ping_timer_.async_wait(kTuple);
      if (ec || self->closed_ || self->closing_) co_return;
      self->Send(R"({"event":"ping"})");
      ++self->S().pings_sent;
    }
  }

  void Send(std::string_view frame) { SendFrame(protocol::kWsText, frame); }

  // Written at once when the socket takes it (the usual case: one syscall, no
  // completion to run); otherwise queued behind what is waiting and written by the pump.
  void SendFrame(uint8_t opcode, std::string_view payload) {
    if (closed_) return;
    std::string f = MaskedFrame(opcode, payload, mask_state_);
    if (!writing_) {
      beast::error_code ec;
      size_t n = sock_.write_some(asio::buffer(f), ec);
      if (!ec && n == f.size()) return;
      if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
        // The read side sees the same failure and does the accounting.
        beast::error_code ignored;
        sock_.cancel(ignored);
        return;
      }
      if (!ec) f.erase(0, n);
      outq_.push_back(std::move(f));
      writing_ = true;
      asio::co_spawn(w_.ctx, WritePump(shared_from_this()), kRethrow);
      return;
    }
    outq_.push_back(std::move(f));
  }

  static asio::awaitable<void> WritePump(std::shared_ptr<Conn> self) {
    std::vector<std::string> batch;
    std::vector<asio::const_buffer> bufs;
    while (!self->outq_.empty() && !self->closed_) {
      batch.swap(self->outq_);
      bufs.clear();
      for (const std::string& f : batch) bufs.emplace_back(asio::buffer(f));
      auto [ec, n] = co_await asio::async_write(self->sock_, bufs, kTuple);
      (void)n;
      batch.clear();
      if (ec) {
        beast::error_code ignored;
        self->sock_.cancel(ignored);
        break;
      }
    }
    self->outq_.clear();
    self->writing_ = false;
  }

  void OnClosed(const beast::error_code& ec) {
    if (closed_) return;
    closed_ = true;
    CancelTimers();
    outq_.clear();
    c_.shared->open.fetch_sub(1);
    if (!closing_) {
      c_.shared->closed_unexpected.fetch_add(1);
      Inc(S().close_reasons, close_why_.empty() ? ec.message() : close_why_);
    }
    // Whatever was in flight will never be acked on this connection. Under a close we
    // did not ask for it is lost: count it and release it from the run-wide total so
    // the drain does not wait for it. Our own closes come after the drain, where the
    // remainder is already reported as unacked at end.
    if (!closing_) {
      S().lost_on_close += inflight_.size();
      c_.shared->inflight.fetch_sub(static_cast<int64_t>(inflight_.size()));
      inflight_.clear();
    }
  }

  void CancelTimers() {
    ping_timer_.cancel();
    send_timer_.cancel();
    receipt_timer_.cancel();
  }

  // --- sending ---------------------------------------------------------------------

  void SendOne(int64_t intended_ns) {
    const Plan& p = w_.plan;
    uint64_t n = next_counter_++;
    std::string cmid = cmid_prefix_ + std::to_string(n);
    // The content carries the intended send time so the recipient, on whatever thread,
    // can compute delivery latency without a lookup table shared between threads.
    std::string content = "lg " + std::to_string(intended_ns) + " ";
    size_t want = static_cast<size_t>(c_.opt->content_bytes);
    if (c_.word_content) {
      while (content.size() < want) {
        content += c_.vocab[rng_() % c_.vocab.size()];
        content += ' ';
      }
    } else if (content.size() < want) {
      content.append(c_.filler, 0, want - content.size());
    }
    std::string f;
    f.reserve(200 + content.size());
    f += R"({"event":"send_message","client_msg_id":")";
    f += cmid;
    f += R"(","conversation_id":")";
    f += conv_id_;
    f += R"(","content":")";
    f += content;
    f += R"(","content_type":"text","sent_timestamp_ms":)";
    f += std::to_string(WallMs());
    f += '}';
    inflight_.emplace(n, intended_ns);
    c_.shared->inflight.fetch_add(1, std::memory_order_relaxed);
    c_.shared->sent.fetch_add(1, std::memory_order_relaxed);
    ++S().sent_total;
    ++sent_in_phase_;
    if (p.InWindow(intended_ns)) ++S().sent_window;
    Send(std::move(f));
  }

  // Closed loop: top the window up, never above W unacked.
  void Refill() {
    const Plan& p = w_.plan;
    const ClassPlan& cp = CP();
    if (!sends_ || closed_ || closing_ || !cp.send || cp.open_loop) return;
    if (MonoNs() < pause_until_ns_) return;
    while (static_cast<int>(inflight_.size()) < cp.window) {
      int64_t now = MonoNs();
      if (now >= p.window_end_ns) return;
      if (cp.budget > 0 && sent_in_phase_ >= static_cast<uint64_t>(cp.budget)) return;
      SendOne(now);
    }
  }

  // Open loop: send everything that is due, then sleep until the next due time.
  void OpenLoopTick() {
    const Plan& p = w_.plan;
    const ClassPlan& cp = CP();
    if (!sends_ || closed_ || closing_ || !cp.send) return;
    blocked_ = false;
    int64_t now = MonoNs();
    while (next_sched_ns_ <= now && next_sched_ns_ < p.window_end_ns) {
      if (static_cast<int>(inflight_.size()) >= p.max_inflight || now < pause_until_ns_) {
        blocked_ = true;  // an ack (or the pause timer) resumes us
        if (now < pause_until_ns_) ArmAt(pause_until_ns_);
        return;
      }
      if (p.InWindow(next_sched_ns_)) S().send_lag.RecordSigned(now - next_sched_ns_);
      SendOne(next_sched_ns_);
      next_sched_ns_ += cp.period_ns;
    }
    if (next_sched_ns_ < p.window_end_ns) ArmAt(next_sched_ns_);
  }

  void ArmOpenLoop() { ArmAt(next_sched_ns_); }

  void ArmAt(int64_t ns) {
    auto self = shared_from_this();
    send_timer_.expires_at(AtNs(ns));
    send_timer_.async_wait([self](beast::error_code ec) {
      if (ec) return;
      if (self->CP().open_loop) self->OnOpenLoopTimer();
      else self->Refill();
    });
  }
  void OnOpenLoopTimer() { OpenLoopTick(); }

  // After a reply frees a slot, resume whichever loop we run.
  void AfterReply() {
    if (CP().open_loop) {
      if (blocked_ && MonoNs() >= pause_until_ns_) OpenLoopTick();
    } else {
      Refill();
    }
  }

  // --- receiving -------------------------------------------------------------------

  void OnFrame(std::string_view frame) {
    FrameFields f;
    if (!ReadFrameFields(w_, frame, &f) || f.event.empty()) {
      ++S().unparsable_frames;
      return;
    }
    const std::string_view ev = f.event;
    if (ev == "message_ack") OnAck(f);
    else if (ev == "message") OnMessage(f);
    else if (ev == "error") OnError(f);
    else if (ev == "message_receipt") ++S().receipts_received;
    else if (ev == "pong") ++S().pongs;
    else Inc(S().other_events, ev);
  }

  ConvSeen& ConvView(std::string_view conv) {
    auto it = conv_seen_.find(conv);
    if (it == conv_seen_.end()) it = conv_seen_.emplace(std::string(conv), ConvSeen{}).first;
    return it->second;
  }

  // Returns true if `seq` was already seen. Absurd seqs are ignored rather than
  // allowed to allocate gigabytes.
  static bool MarkSeen(ConvSeen& cs, uint64_t seq) {
    if (seq == 0 || seq > (uint64_t{1} << 28)) return false;
    if (cs.seen.size() <= seq) cs.seen.resize(std::max<size_t>(seq + 1, cs.seen.size() * 2), false);
    bool was = cs.seen[seq];
    cs.seen[seq] = true;
    return was;
  }

  std::optional<uint64_t> CounterOf(std::string_view cmid) const {
    if (!cmid.starts_with(cmid_prefix_)) return std::nullopt;
    cmid.remove_prefix(cmid_prefix_.size());
    uint64_t n = 0;
    auto [p, ec] = std::from_chars(cmid.data(), cmid.data() + cmid.size(), n);
    if (ec != std::errc() || p != cmid.data() + cmid.size()) return std::nullopt;
    return n;
  }

  void OnAck(const FrameFields& f) {
    int64_t now = MonoNs();
    std::optional<uint64_t> n;
    if (!f.client_msg_id.empty()) n = CounterOf(f.client_msg_id);
    auto it = n ? inflight_.find(*n) : inflight_.end();
    if (it == inflight_.end()) {
      ++S().unknown_acks;
      return;
    }
    int64_t t0 = it->second;
    inflight_.erase(it);
    c_.shared->inflight.fetch_sub(1, std::memory_order_relaxed);
    c_.shared->acked.fetch_add(1, std::memory_order_relaxed);
    c_.shared->expected_deliveries.fetch_add(static_cast<uint64_t>(fanout_), std::memory_order_relaxed);
    const Plan& p = w_.plan;
    ++S().acked_total;
    if (p.InWindow(now)) ++S().acked_window;
    if (p.InWindow(t0)) S().ack_lat.RecordSigned(now - t0);
    if (f.duplicate) ++S().duplicate_acks;
    if (!f.conversation_id.empty() && f.seq != 0) MarkSeen(ConvView(f.conversation_id), f.seq);
    AfterReply();
  }

  void OnError(const FrameFields& f) {
    const std::string_view code = f.code.empty() ? std::string_view("(no code)") : f.code;
    Inc(S().errors, code);
    if (S().error_samples.find(code) == S().error_samples.end()) {
      // One example per code makes a report actionable without a packet capture.
      std::string sample(f.message);
      if (!f.client_msg_id.empty()) sample += " (client_msg_id " + std::string(f.client_msg_id) + ")";
      S().error_samples.emplace(std::string(code), std::move(sample));
    }
    c_.shared->errors.fetch_add(1, std::memory_order_relaxed);
    if (f.client_msg_id.empty()) return;
    auto n = CounterOf(f.client_msg_id);
    auto it = n ? inflight_.find(*n) : inflight_.end();
    if (it == inflight_.end()) return;
    inflight_.erase(it);
    c_.shared->inflight.fetch_sub(1, std::memory_order_relaxed);
    ++S().failed_msgs;
    c_.shared->failed.fetch_add(1, std::memory_order_relaxed);
    // Resending at once into a rate limiter would spin; back off briefly, as a real
    // client would.
    if (code == "rate_limited" || code == "unavailable") {
      pause_until_ns_ = MonoNs() + 100'000'000;
      if (!CP().open_loop) {
        ArmAt(pause_until_ns_);
        return;
      }
    }
    AfterReply();
  }

  void OnMessage(const FrameFields& f) {
    int64_t now = MonoNs();
    std::string_view content = f.content;
    const std::string_view conv = f.conversation_id, mid = f.message_id;
    const uint64_t seq = f.seq;
    if (!f.has_content || !content.starts_with("lg ")) {
      ++S().foreign_messages;
      return;
    }
    if (seq != 0) {
      ConvSeen& cs = ConvView(conv);
      if (MarkSeen(cs, seq)) {
        ++S().duplicate_deliveries;
        return;
      }
      if (seq < cs.last_delivered) ++S().reordered_deliveries;
      cs.last_delivered = std::max(cs.last_delivered, seq);
    }

    content.remove_prefix(3);
    int64_t t0 = 0;
    auto [p, ec] = std::from_chars(content.data(), content.data() + content.size(), t0);
    (void)p;
    c_.shared->delivered.fetch_add(1, std::memory_order_relaxed);
    ++S().delivered_total;
    const Plan& pl = w_.plan;
    if (pl.InWindow(now)) ++S().delivered_window;
    if (ec == std::errc() && pl.InWindow(t0)) S().deliv_lat.RecordSigned(now - t0);

    const ClassPlan& cp = CP();
    if (cp.receipts == Receipts::kOff || conv.empty() || mid.empty() || seq == 0) return;
    auto pit = pending_receipts_.find(conv);
    if (pit == pending_receipts_.end()) pit = pending_receipts_.emplace(std::string(conv), ReceiptDue{}).first;
    auto& pend = pit->second;
    pend.first = seq;
    pend.second = std::string(mid);
    if (cp.receipts == Receipts::kEach) {
      FlushReceipts();
    } else if (!receipt_armed_) {
      receipt_armed_ = true;
      auto self = shared_from_this();
      receipt_timer_.expires_after(std::chrono::milliseconds(cp.receipt_ms));
      receipt_timer_.async_wait([self](beast::error_code ec2) {
        self->receipt_armed_ = false;
        if (!ec2) self->FlushReceipts();
      });
    }
  }

  void FlushReceipts() {
    for (auto& [conv, pr] : pending_receipts_) {
      std::string f;
      f.reserve(256);
      f += R"({"event":"message_receipt","message_id":")";
      f += pr.second;
      f += R"(","conversation_id":")";
      f += conv;
      f += R"(","status":"DELIVERED","up_to_seq":)";
      f += std::to_string(pr.first);
      f += R"(,"receipt_timestamp_ms":)";
      f += std::to_string(WallMs());
      f += '}';
      Send(std::move(f));
      ++S().receipts_sent;
    }
    pending_receipts_.clear();
  }

  Stats& S() { return w_.stats[cls_]; }
  const ClassPlan& CP() const { return w_.plan.cls[cls_]; }

  Worker& w_;
  const Common& c_;
  int idx_;
  int cls_;
  Account acct_;
  tcp::socket sock_;
  WsIn in_;
  std::vector<std::string> outq_;  // frames waiting for the pump (already masked)
  uint64_t mask_state_ = 0;
  std::string close_why_;  // the server's close frame, for the report
  bool writing_ = false;
  bool closing_ = false;  // we started the close: not counted as unexpected
  bool closed_ = false;
  bool failed_ = false;  // never became ready
  int64_t ready_at_ns_ = 0;
  int64_t heartbeat_ms_ = 20000;
  asio::steady_timer ping_timer_;
  asio::steady_timer send_timer_;
  asio::steady_timer receipt_timer_;
  uint64_t watchdog_gen_ = 0;
  bool watchdog_fired_ = false;

  // sender
  bool sends_ = false;
  std::string conv_id_;
  int sender_index_ = 0;
  std::string cmid_prefix_;
  uint64_t next_counter_ = 0;
  uint64_t sent_in_phase_ = 0;
  int fanout_ = 1;
  std::minstd_rand rng_;
  std::unordered_map<uint64_t, int64_t> inflight_;  // counter -> intended send time
  int64_t next_sched_ns_ = 0;
  int64_t pause_until_ns_ = 0;
  bool blocked_ = false;

  // recipient
  StrMap<ConvSeen> conv_seen_;
  std::string resume_cursors_;  // what `resume` sends; empty: no cursors
  using ReceiptDue = std::pair<uint64_t, std::string>;  // up_to_seq, message_id
  StrMap<ReceiptDue> pending_receipts_;
  bool receipt_armed_ = false;
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
    for (const std::string& a : o.source_addrs) {
      beast::error_code ec;
      auto addr = asio::ip::make_address(a, ec);
      if (ec) Die("--source-addrs: not an address: " + a);
      common_.sources.emplace_back(addr, 0);
    }
    common_.hostport = (common_.endpoint.address().is_v6() ? "[" + o.host + "]" : o.host) + ":" + std::to_string(o.port);
    common_.run_id = run_id_;
    common_.filler.assign(static_cast<size_t>(std::max(o.content_bytes, 32)), 'x');
    for (int i = 0; i < o.threads; ++i) {
      workers_.push_back(std::make_unique<Worker>());
      // Until a phase installs its plan (replays during the first resume, say),
      // recipients acknowledge as the options say.
      for (auto& cp : workers_.back()->plan.cls) cp.receipts = o.receipts;
      workers_.back()->plan.cls[kDirect].receipt_ms = o.receipt_ms;
      workers_.back()->plan.cls[kGroup].receipt_ms = o.group_receipt_ms;
    }
  }

  int Run() {
    machine_ = DescribeMachine();
    started_at_ = IsoNow();
    {
      // Other work on a shared machine skews every figure; the chart says how busy it was.
      std::string la = ReadFileStr("/proc/loadavg");
      load_avg_at_start_ = la.substr(0, la.find(' '));
    }
    switch (opt_.scenario) {
      case Scenario::kSenders: RunSenders(); break;
      case Scenario::kIdle: RunIdle(); break;
      case Scenario::kGroups: RunGroups(); break;
      case Scenario::kMixed: RunMixed(); break;
      case Scenario::kStorm: RunStorm(); break;
      case Scenario::kQueries: RunQueries(); break;
      case Scenario::kSweep: RunSweep(); break;
    }
    Report();
    return 0;
  }

 private:
  void Progress(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
    if (opt_.quiet) return;
    va_list ap;
    va_start(ap, fmt);
    std::fputs("loadgen: ", stderr);
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
  }

  void StartWorkers() { bench::StartWorkers(workers_); }
  void StopWorkers() { bench::StopWorkers(workers_); }

  // Opens every connection (bounded handshakes in flight) and waits for all to finish.
  void ConnectAll() {
    ConnectRamp r = ConnectAllConns(workers_, shared_, opt_.connect_concurrency,
                                    [this](const char* line) { Progress("%s", line); });
    connect_attempted_ = r.attempted;
    connect_start_ns_ = r.start_ns;
    connect_end_ns_ = r.end_ns;
    ready_end_ns_ = r.ready_end_ns;
    connect_timed_out_ = r.timed_out;
    welcomed_ = shared_.welcomed.load();
    ready_ = shared_.ready.load();
    connect_failed_ = shared_.connect_failed.load();
  }

  void CloseAll() { not_closed_cleanly_ = CloseAllConns(workers_, shared_); }

  // ---------------------------------------------------------------------------------
  // Phases: a measured stretch of traffic on connections that are already open. The
  // traffic scenarios are one phase (senders, groups), two (mixed) or one per rate
  // (sweep); statistics are taken from the workers at the end of each phase.

  // Statistics taken from every worker, and what was still pending there per class.
  struct Take {
    std::vector<Stats> st = std::vector<Stats>(kClasses);
    int64_t unacked[kClasses] = {0, 0};
    uint64_t unsent[kClasses] = {0, 0};
  };

  // One --report-every interval of a phase.
  struct Interval {
    double t_s = 0;  // end of the interval, seconds into the window
    double deliv_per_s = 0;
    uint64_t deliv_p50 = 0, deliv_p99 = 0, deliv_max = 0, ack_p99 = 0;  // ns
    double server_cpu_pct = -1;
    int64_t rss_kib = -1;
    int64_t search_backlog = -1;  // -1: /metrics not readable
  };

  struct PhaseResult {
    std::string name;
    std::vector<Interval> intervals;
    double duration = 0;
    bool sending[kClasses] = {false, false};
    bool open_loop[kClasses] = {false, false};
    double offered[kClasses] = {0, 0};  // open loop: msg/s over all senders of the class
    int senders[kClasses] = {0, 0};
    Take take;
    double drain_s = 0;
    double server_cpu_pct = -1;
    double self_cpu_pct = 0;
    std::vector<ThreadPct> server_threads;
    std::vector<ThreadPct> self_threads;
    int closed_during = 0;
    int64_t rss_after = -1;
    const Stats& st(int c) const { return take.st[c]; }
    double PerS(uint64_t n) const { return duration > 0 ? static_cast<double>(n) / duration : 0; }
  };

  // Runs f(worker, index) on every worker's own thread and waits until all have run.
  template <typename F>
  void OnEachWorker(F f) {
    std::latch done(static_cast<std::ptrdiff_t>(workers_.size()));
    for (size_t i = 0; i < workers_.size(); ++i) {
      Worker* wp = workers_[i].get();
      asio::post(wp->ctx, [wp, i, &f, &done] {
        f(*wp, i);
        done.count_down();
      });
    }
    done.wait();
  }

  // Moves every worker's statistics out (the workers start afresh) and sums them.
  Take TakeAll() {
    std::vector<Take> takes(workers_.size());
    OnEachWorker([&takes](Worker& w, size_t i) {
      Take& tk = takes[i];
      for (int c = 0; c < kClasses; ++c) {
        tk.st[c] = w.stats[c];
        w.stats[c] = Stats{};
      }
      for (auto& conn : w.conns) {
        tk.unacked[conn->cls()] += static_cast<int64_t>(conn->Inflight());
        tk.unsent[conn->cls()] += conn->UnsentScheduled();
      }
    });
    Take sum;
    for (auto& tk : takes) {
      for (int c = 0; c < kClasses; ++c) {
        sum.st[c].Merge(tk.st[c]);
        sum.unacked[c] += tk.unacked[c];
        sum.unsent[c] += tk.unsent[c];
        taken_.Merge(tk.st[c]);
      }
    }
    return sum;
  }

  // Right after ConnectAll: the connect figures, kept apart from the traffic.
  void TakeConnectStats() {
    Take t = TakeAll();
    connect_stats_ = Stats{};
    for (int c = 0; c < kClasses; ++c) connect_stats_.Merge(t.st[c]);
    have_connect_stats_ = true;
  }

  Plan MakePlan(double warmup, double duration) const {
    Plan p;
    p.start_ns = MonoNs() + 20'000'000;
    p.window_start_ns = p.start_ns + SecToNs(warmup);
    p.window_end_ns = p.window_start_ns + SecToNs(duration);
    p.max_inflight = opt_.max_inflight;
    for (auto& cp : p.cls) cp.receipts = opt_.receipts;
    p.cls[kDirect].receipt_ms = opt_.receipt_ms;
    p.cls[kGroup].receipt_ms = opt_.group_receipt_ms;
    return p;
  }

  static void OpenLoop(ClassPlan& cp, int senders, double rate) {
    cp.send = senders > 0 && rate > 0;
    cp.open_loop = true;
    cp.senders = senders;
    cp.rate = rate;
    cp.period_ns = rate > 0 ? static_cast<int64_t>(1e9 * senders / rate) : 0;
  }

  void InstallPlan(const Plan& plan) {
    OnEachWorker([&plan](Worker& w, size_t) {
      w.plan = plan;
      for (auto& c : w.conns) c->StartSending();
    });
  }

  // The interval [from_ns, to_ns) of a phase, from what TakeAll took at its end; prints
  // one line. The class that sends (1:1 unless only groups do).
  Interval MakeInterval(const Take& tk, const Plan& plan, int64_t to_ns, int64_t from_ns, double& last_cpu) {
    Interval iv;
    const int c = plan.cls[kDirect].send ? kDirect : kGroup;
    const Stats& st = tk.st[c];
    const double secs = static_cast<double>(to_ns - from_ns) / 1e9;
    iv.t_s = static_cast<double>(to_ns - plan.window_start_ns) / 1e9;
    iv.deliv_per_s = secs > 0 ? static_cast<double>(st.deliv_lat.Count()) / secs : 0;
    iv.deliv_p50 = st.deliv_lat.Percentile(50);
    iv.deliv_p99 = st.deliv_lat.Percentile(99);
    iv.deliv_max = st.deliv_lat.Max();
    iv.ack_p99 = st.ack_lat.Percentile(99);
    double cpu = ReadCpuSec(opt_.server_pid);
    if (cpu >= 0 && last_cpu >= 0 && secs > 0) iv.server_cpu_pct = 100.0 * (cpu - last_cpu) / secs;
    last_cpu = cpu;
    iv.rss_kib = ReadRssKib(opt_.server_pid);
    iv.search_backlog = ScrapeGauge("switchboard_search_backlog");
    std::printf("interval t=%5.0fs %s: delivered/s %.0f, delivery p50 %s p99 %s max %s ms, ack p99 %s ms; server cpu %s%%, "
                "rss %s MiB, search backlog %s\n",
                iv.t_s, ClsName(c), iv.deliv_per_s, MsStr(iv.deliv_p50).c_str(), MsStr(iv.deliv_p99).c_str(),
                MsStr(iv.deliv_max).c_str(), MsStr(iv.ack_p99).c_str(),
                iv.server_cpu_pct >= 0 ? Fmt(iv.server_cpu_pct, 0).c_str() : "n/a",
                iv.rss_kib >= 0 ? Fmt(static_cast<double>(iv.rss_kib) / 1024.0, 0).c_str() : "n/a",
                iv.search_backlog >= 0 ? std::to_string(iv.search_backlog).c_str() : "n/a");
    std::fflush(stdout);
    return iv;
  }

  // A gauge's value from the server's /metrics (plain HTTP on the same port), or -1.
  int64_t ScrapeGauge(std::string_view name) const {
    try {
      asio::io_context io;
      tcp::socket sock(io);
      sock.connect(tcp::endpoint(asio::ip::make_address(opt_.host), opt_.port));
      timeval tv{2, 0};  // a stuck server must not stop the run
      ::setsockopt(sock.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      http::request<http::empty_body> req{http::verb::get, "/metrics", 11};
      req.set(http::field::host, opt_.host);
      req.keep_alive(false);
      http::write(sock, req);
      beast::flat_buffer buf;
      http::response<http::string_body> res;
      http::read(sock, buf, res);
      if (res.result_int() != 200) return -1;
      std::string_view body = res.body();
      for (size_t pos = 0; pos < body.size();) {
        size_t eol = body.find('\n', pos);
        std::string_view line = body.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
        if (line.size() > name.size() && line.substr(0, name.size()) == name && line[name.size()] == ' ')
          return static_cast<int64_t>(std::strtod(std::string(line.substr(name.size() + 1)).c_str(), nullptr));
        if (eol == std::string_view::npos) break;
        pos = eol + 1;
      }
    } catch (const std::exception&) {
    }
    return -1;
  }

  PhaseResult RunPhase(const std::string& name, const Plan& plan) {
    PhaseResult r;
    r.name = name;
    r.duration = static_cast<double>(plan.window_end_ns - plan.window_start_ns) / 1e9;
    for (int c = 0; c < kClasses; ++c) {
      r.sending[c] = plan.cls[c].send;
      r.open_loop[c] = plan.cls[c].open_loop;
      r.offered[c] = plan.cls[c].send && plan.cls[c].open_loop ? plan.cls[c].rate : 0;
      r.senders[c] = plan.cls[c].send ? plan.cls[c].senders : 0;
    }
    int closed0 = shared_.closed_unexpected.load();
    InstallPlan(plan);

    // Sample CPU at the window's edges so the figures describe the measured part only.
    std::this_thread::sleep_until(AtNs(plan.window_start_ns));
    double srv_cpu0 = ReadCpuSec(opt_.server_pid), self_cpu0 = SelfCpuSec();
    auto threads0 = ReadThreadTimes(opt_.server_pid);
    auto self_threads0 = ReadThreadTimes(getpid());
    uint64_t last_acked = shared_.acked.load(), last_deliv = shared_.delivered.load();
    int64_t t = plan.window_start_ns;
    // --report-every: the statistics are taken out of the workers at each interval's
    // end and summed here, so the phase's figures are still the whole window's.
    const int64_t every_ns = opt_.report_every > 0 ? SecToNs(opt_.report_every) : 0;
    int64_t next_report = every_ns > 0 ? plan.window_start_ns + every_ns : plan.window_end_ns + 1;
    int64_t last_report = plan.window_start_ns;
    double last_cpu = srv_cpu0;
    Take acc;
    while (t < plan.window_end_ns) {
      int64_t next = std::min(t + 1'000'000'000, plan.window_end_ns);
      std::this_thread::sleep_until(AtNs(next));
      double dt = static_cast<double>(next - t) / 1e9;
      uint64_t a = shared_.acked.load(), d = shared_.delivered.load();
      Progress("%s t=%4.1fs acked/s=%.0f delivered/s=%.0f inflight=%lld errors=%llu open=%d closed=%d", name.c_str(),
               static_cast<double>(next - plan.window_start_ns) / 1e9, static_cast<double>(a - last_acked) / dt,
               static_cast<double>(d - last_deliv) / dt, static_cast<long long>(shared_.inflight.load()),
               static_cast<unsigned long long>(shared_.errors.load()), shared_.open.load(),
               shared_.closed_unexpected.load());
      last_acked = a;
      last_deliv = d;
      t = next;
      if (t >= next_report || (every_ns > 0 && t >= plan.window_end_ns && t > last_report)) {
        Take tk = TakeAll();
        r.intervals.push_back(MakeInterval(tk, plan, t, last_report, last_cpu));
        for (int c = 0; c < kClasses; ++c) acc.st[c].Merge(tk.st[c]);
        last_report = t;
        next_report += every_ns;
      }
    }
    double srv_cpu1 = ReadCpuSec(opt_.server_pid), self_cpu1 = SelfCpuSec();
    r.server_threads = ThreadPcts(threads0, ReadThreadTimes(opt_.server_pid), r.duration);
    r.self_threads = ThreadPcts(self_threads0, ReadThreadTimes(getpid()), r.duration);
    if (srv_cpu0 >= 0 && srv_cpu1 >= 0) r.server_cpu_pct = 100.0 * (srv_cpu1 - srv_cpu0) / r.duration;
    r.self_cpu_pct = 100.0 * (self_cpu1 - self_cpu0) / r.duration;
    r.rss_after = ReadRssKib(opt_.server_pid);

    // Drain: let outstanding acks and deliveries arrive so they count toward latency
    // (a message sent in the window but answered late is slow, not missing).
    int64_t drain_start = MonoNs();
    int64_t drain_deadline = drain_start + SecToNs(opt_.drain);
    while (MonoNs() < drain_deadline) {
      if (shared_.inflight.load() <= 0 && shared_.delivered.load() >= shared_.expected_deliveries.load()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    r.drain_s = static_cast<double>(MonoNs() - drain_start) / 1e9;
    r.take = TakeAll();
    for (int c = 0; c < kClasses; ++c) r.take.st[c].Merge(acc.st[c]);
    r.closed_during = shared_.closed_unexpected.load() - closed0;
    return r;
  }

  // Every sender of the 1:1 class sends `budget` messages (closed loop, `window` in
  // flight) and the call waits until they are answered and delivered, or nothing moved
  // for 10 s. Returns the seconds it took. Used to prepare history, not to measure.
  double RunBudget(const char* what, int senders, int budget, int window, Receipts receipts) {
    Plan plan = MakePlan(0, 3600);
    ClassPlan& cp = plan.cls[kDirect];
    cp.send = true;
    cp.window = window;
    cp.senders = senders;
    cp.budget = budget;
    cp.receipts = receipts;
    const uint64_t want = static_cast<uint64_t>(senders) * static_cast<uint64_t>(budget);
    const uint64_t acked0 = shared_.acked.load(), failed0 = shared_.failed.load();
    int64_t t0 = MonoNs();
    InstallPlan(plan);
    int64_t last_move = MonoNs(), last_print = MonoNs();
    uint64_t last_sum = 0;
    for (;;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      uint64_t answered = shared_.acked.load() - acked0 + shared_.failed.load() - failed0;
      uint64_t delivered = shared_.delivered.load();
      if (answered >= want && delivered >= shared_.expected_deliveries.load()) break;
      int64_t now = MonoNs();
      if (answered + delivered != last_sum) {
        last_sum = answered + delivered;
        last_move = now;
      } else if (now - last_move > 10'000'000'000) {
        Progress("%s: stalled at %llu/%llu answered", what, static_cast<unsigned long long>(answered),
                 static_cast<unsigned long long>(want));
        break;
      }
      if (now - last_print > 2'000'000'000) {
        last_print = now;
        Progress("%s: %llu/%llu answered", what, static_cast<unsigned long long>(answered),
                 static_cast<unsigned long long>(want));
      }
    }
    double secs = static_cast<double>(MonoNs() - t0) / 1e9;
    // Nobody sends from here on (the budget is spent; this also stops a stalled one).
    Plan idle = MakePlan(0, 3600);
    idle.cls[kDirect].receipts = receipts;
    InstallPlan(idle);
    return secs;
  }

  void AdoptPhase(const PhaseResult& ph, int cls) {
    server_cpu_pct_ = ph.server_cpu_pct;
    self_cpu_pct_ = ph.self_cpu_pct;
    server_threads_ = ph.server_threads;
    self_threads_ = ph.self_threads;
    drain_s_ = ph.drain_s;
    unacked_at_end_ = ph.take.unacked[cls];
    unsent_scheduled_ = ph.take.unsent[cls];
    rss_after_ = ph.rss_after;
  }

  // Closes everything, stops the workers and sums what is left in them.
  void Finish() {
    CloseAll();
    StopWorkers();
    uint64_t gaps = 0;
    for (auto& w : workers_) {
      for (int c = 0; c < kClasses; ++c) taken_.Merge(w->stats[c]);
      for (auto* list : {&w->conns, &w->retired}) {
        for (auto& conn : *list) gaps += conn->SeqGaps();
      }
    }
    total_ = taken_;
    total_.seq_gaps = gaps;
  }

  static std::vector<int> Iota(int n) {
    std::vector<int> v(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
    return v;
  }

  // Pair i is accounts first+2i (creator) and first+2i+1.
  static std::vector<std::pair<int, int>> PairList(int pairs, int first) {
    std::vector<std::pair<int, int>> v;
    for (int i = 0; i < pairs; ++i) v.emplace_back(first + 2 * i, first + 2 * i + 1);
    return v;
  }

  // Group g is accounts first+g*m .. first+g*m+m-1, the first one its creator.
  static std::vector<std::vector<int>> GroupList(int groups, int m, int first) {
    std::vector<std::vector<int>> v(static_cast<size_t>(groups));
    for (int g = 0; g < groups; ++g) {
      for (int k = 0; k < m; ++k) v[static_cast<size_t>(g)].push_back(first + g * m + k);
    }
    return v;
  }

  // One connection per pair member; the first of each pair sends (both with
  // `two_way`). Returns the number of senders.
  int AddPairs(const std::vector<Account>& accts, const std::vector<std::string>& convs, int first, bool two_way,
               int& idx) {
    int senders = 0;
    for (size_t i = 0; i < convs.size(); ++i) {
      if (convs[i].empty()) continue;  // setup failed for this pair; reported above
      auto& wa = *workers_[static_cast<size_t>(idx) % workers_.size()];
      auto a = std::make_shared<Conn>(wa, common_, idx, accts[static_cast<size_t>(first) + 2 * i], kDirect);
      a->MakeSender(convs[i], senders++, 1);
      wa.conns.push_back(a);
      ++idx;
      auto& wb = *workers_[static_cast<size_t>(idx) % workers_.size()];
      auto b = std::make_shared<Conn>(wb, common_, idx, accts[static_cast<size_t>(first) + 2 * i + 1], kDirect);
      if (two_way) b->MakeSender(convs[i], senders++, 1);
      wb.conns.push_back(b);
      ++idx;
    }
    return senders;
  }

  // One connection per group member; the first --group-senders of each group send.
  int AddGroups(const std::vector<Account>& accts, const std::vector<std::string>& gconvs, int first, int& idx) {
    int senders = 0;
    const int m = opt_.members;
    for (size_t g = 0; g < gconvs.size(); ++g) {
      if (gconvs[g].empty()) continue;
      for (int k = 0; k < m; ++k) {
        const Account& a = accts[static_cast<size_t>(first) + g * static_cast<size_t>(m) + static_cast<size_t>(k)];
        if (a.token.empty()) continue;
        auto& w = *workers_[static_cast<size_t>(idx) % workers_.size()];
        auto c = std::make_shared<Conn>(w, common_, idx, a, kGroup);
        if (k < opt_.group_senders) c->MakeSender(gconvs[g], senders++, m - 1);
        w.conns.push_back(c);
        ++idx;
      }
    }
    return senders;
  }

  void RunSenders() {
    const int pairs = opt_.pairs;
    Progress("setup: %d users, %d direct conversations", 2 * pairs, pairs);
    Setup setup(opt_, run_id_);
    auto accts = setup.Accounts(2 * pairs, Iota(2 * pairs));
    auto convs = setup.DirectConversations(accts, PairList(pairs, 0));
    setup_ = setup.report();
    PrintSetup();

    int idx = 0;
    int senders = AddPairs(accts, convs, 0, opt_.two_way, idx);
    if (senders == 0) Die("setup produced no usable pair; see the failures above");
    senders_ = senders;

    StartWorkers();
    ConnectAll();
    TakeConnectStats();
    rss_before_ = ReadRssKib(opt_.server_pid);

    Plan plan = MakePlan(opt_.warmup, opt_.duration);
    ClassPlan& cp = plan.cls[kDirect];
    if (opt_.rate > 0) {
      OpenLoop(cp, senders, opt_.rate);
    } else {
      cp.send = true;
      cp.window = opt_.window;
      cp.senders = senders;
    }
    phases_.push_back(RunPhase("senders", plan));
    AdoptPhase(phases_.back(), kDirect);
    Finish();
  }

  void RunGroups() {
    const int g = opt_.groups, m = opt_.members;
    const int users = g * m;
    Progress("setup: %d users in %d groups of %d", users, g, m);
    Setup setup(opt_, run_id_);
    auto accts = setup.Accounts(users, Iota(users));
    auto gconvs = setup.Groups(accts, GroupList(g, m, 0));
    setup_ = setup.report();
    PrintSetup();

    int idx = 0;
    int senders = AddGroups(accts, gconvs, 0, idx);
    if (senders == 0) Die("setup produced no usable group; see the failures above");
    senders_ = senders;

    StartWorkers();
    ConnectAll();
    TakeConnectStats();
    rss_before_ = ReadRssKib(opt_.server_pid);

    Plan plan = MakePlan(opt_.warmup, opt_.duration);
    OpenLoop(plan.cls[kGroup], senders, opt_.group_rate);
    phases_.push_back(RunPhase("groups", plan));
    AdoptPhase(phases_.back(), kGroup);
    Finish();
  }

  void RunMixed() {
    const int pairs = opt_.pairs, g = opt_.groups, m = opt_.members;
    const int users = 2 * pairs + g * m;
    Progress("setup: %d users: %d pairs, %d groups of %d", users, pairs, g, m);
    Setup setup(opt_, run_id_);
    auto accts = setup.Accounts(users, Iota(users));
    auto convs = setup.DirectConversations(accts, PairList(pairs, 0));
    auto gconvs = setup.Groups(accts, GroupList(g, m, 2 * pairs));
    setup_ = setup.report();
    PrintSetup();

    int idx = 0;
    int dsenders = AddPairs(accts, convs, 0, opt_.two_way, idx);
    int gsenders = AddGroups(accts, gconvs, 2 * pairs, idx);
    if (dsenders == 0) Die("setup produced no usable pair; see the failures above");
    if (gsenders == 0) Die("setup produced no usable group; see the failures above");
    senders_ = dsenders;
    group_senders_ = gsenders;

    StartWorkers();
    ConnectAll();
    TakeConnectStats();
    rss_before_ = ReadRssKib(opt_.server_pid);

    // The same connections in both phases: the only difference is the group flood.
    Plan alone = MakePlan(opt_.warmup, opt_.duration);
    OpenLoop(alone.cls[kDirect], dsenders, opt_.rate);
    phases_.push_back(RunPhase("alone", alone));
    Plan flood = MakePlan(opt_.warmup, opt_.duration);
    OpenLoop(flood.cls[kDirect], dsenders, opt_.rate);
    OpenLoop(flood.cls[kGroup], gsenders, opt_.group_rate);
    phases_.push_back(RunPhase("flood", flood));
    AdoptPhase(phases_.back(), kDirect);
    Finish();
  }

  // True when the server did not keep up with the offered rate in this phase.
  static bool Saturated(const PhaseResult& ph) {
    double acked = ph.PerS(ph.st(kDirect).acked_window);
    return acked < 0.9 * ph.offered[kDirect] || ph.closed_during > 0;
  }

  void RunSweep() {
    const int pairs = opt_.pairs;
    Progress("setup: %d users, %d direct conversations", 2 * pairs, pairs);
    Setup setup(opt_, run_id_);
    auto accts = setup.Accounts(2 * pairs, Iota(2 * pairs));
    auto convs = setup.DirectConversations(accts, PairList(pairs, 0));
    setup_ = setup.report();
    PrintSetup();

    int idx = 0;
    int senders = AddPairs(accts, convs, 0, opt_.two_way, idx);
    if (senders == 0) Die("setup produced no usable pair; see the failures above");
    senders_ = senders;

    StartWorkers();
    ConnectAll();
    TakeConnectStats();
    rss_before_ = ReadRssKib(opt_.server_pid);

    for (double rate : opt_.rates) {
      Plan plan = MakePlan(opt_.warmup, opt_.duration);
      OpenLoop(plan.cls[kDirect], senders, rate);
      phases_.push_back(RunPhase("rate=" + Fmt(rate, 0), plan));
      const PhaseResult& ph = phases_.back();
      const Stats& t = ph.st(kDirect);
      std::printf("sweep: offered %.0f/s: acked %.0f/s, delivered %.0f/s, delivery p50 %s p99 %s p99.9 %s%s\n", rate,
                  ph.PerS(t.acked_window), ph.PerS(t.delivered_window),
                  FmtNs(static_cast<double>(t.deliv_lat.Percentile(50))).c_str(),
                  FmtNs(static_cast<double>(t.deliv_lat.Percentile(99))).c_str(),
                  FmtNs(static_cast<double>(t.deliv_lat.Percentile(99.9))).c_str(),
                  Saturated(ph) ? " (not keeping up)" : "");
      std::fflush(stdout);
      if (Saturated(ph) && !opt_.sweep_all) {
        Progress("sweep: stopping after %.0f/s, which the server did not keep up with (--sweep-all runs every rate)",
                 rate);
        break;
      }
    }
    AdoptPhase(phases_.back(), kDirect);
    Finish();
    if (!opt_.svg_path.empty()) WriteSweepSvg();
  }

  void WriteSweepSvg() {
    static constexpr std::pair<double, const char*> kLines[] = {{50, "p50"}, {90, "p90"}, {99, "p99"}, {99.9, "p99.9"}};
    std::vector<ChartSeries> series;
    for (const auto& [pct, label] : kLines) {
      ChartSeries s;
      s.name = label;
      for (const auto& ph : phases_) {
        const Histogram& h = ph.st(kDirect).deliv_lat;
        if (h.Count() == 0) continue;
        s.points.push_back({ph.offered[kDirect], static_cast<double>(h.Percentile(pct)) / 1e6});
      }
      series.push_back(std::move(s));
    }
    std::vector<double> behind;
    for (const auto& ph : phases_) {
      if (Saturated(ph)) behind.push_back(ph.offered[kDirect]);
    }
    ChartText text;
    text.title = "Switchboard: 1:1 send-to-delivery latency against offered load";
    auto secs = [](double v) { return Fmt(v, v == std::floor(v) ? 0 : 1); };
    text.subtitle = std::to_string(senders_) + " senders (1:1 pairs), open loop, " + secs(opt_.duration) +
                    " s per rate after " + secs(opt_.warmup) + " s warm-up; " + started_at_ + "\n" +
                    std::to_string(machine_.nproc) + " CPUs (" + machine_.cpu_model + "), load average " +
                    load_avg_at_start_ + " at start";
    for (const auto& [k, v] : opt_.tags) {
      if (k == "commit" || k == "fsync") text.subtitle += ", " + k + "=" + v;
    }
    text.x_label = "offered load, messages/s";
    text.y_label = "latency, ms (log scale)";
    std::string svg = LatencyChartSvg(text, series, behind);
    std::FILE* f = std::fopen(opt_.svg_path.c_str(), "w");
    if (!f) {
      std::printf("sweep: cannot write %s\n", opt_.svg_path.c_str());
      return;
    }
    std::fwrite(svg.data(), 1, svg.size(), f);
    std::fclose(f);
    std::printf("sweep: chart written to %s\n", opt_.svg_path.c_str());
  }

  void RunStorm() {
    const int pairs = opt_.connections / 2;
    const int n = 2 * pairs;
    Progress("setup: %d users, %d direct conversations", n, pairs);
    Setup setup(opt_, run_id_);
    auto accts = setup.Accounts(n, Iota(n));
    auto convs = setup.DirectConversations(accts, PairList(pairs, 0));
    setup_ = setup.report();
    PrintSetup();

    int idx = 0;
    int senders = AddPairs(accts, convs, 0, false, idx);
    if (senders == 0) Die("setup produced no usable pair; see the failures above");
    senders_ = senders;

    StartWorkers();
    ConnectAll();
    TakeConnectStats();
    rss_before_ = ReadRssKib(opt_.server_pid);

    // Traffic before the storm. Recipients send no receipts, so the server's cursor of
    // each device stays where it was and every `resume` has these messages to replay.
    if (opt_.storm_messages > 0) {
      storm_.prep_s = RunBudget("pre-storm traffic", senders, opt_.storm_messages, 8, Receipts::kOff);
      Take prep = TakeAll();
      storm_.prep_acked = prep.st[kDirect].acked_total;
      storm_.prep_failed = prep.st[kDirect].failed_msgs;
      storm_.prep_delivered = prep.st[kDirect].delivered_total;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));

    // The storm: every socket reset at once, every client reconnecting at once.
    Plan plan = MakePlan(0, 3600);  // nobody sends; replayed messages get receipts as usual
    InstallPlan(plan);
    shared_.welcomed.store(0);
    shared_.ready.store(0);
    shared_.connect_failed.store(0);
    shared_.last_welcome_ns.store(0);
    shared_.last_ready_ns.store(0);
    int closed0 = shared_.closed_unexpected.load();
    double srv_cpu0 = ReadCpuSec(opt_.server_pid), self_cpu0 = SelfCpuSec();
    auto threads0 = ReadThreadTimes(opt_.server_pid);
    const double jitter_ns = opt_.storm_jitter_ms * 1e6;
    const int64_t t0 = MonoNs();
    storm_.t0_ns = t0;
    std::vector<int> reconnecting(workers_.size(), 0);
    OnEachWorker([this, jitter_ns, &reconnecting](Worker& w, size_t wi) {
      for (auto& c : w.conns) c->Abort();
      w.retired = std::move(w.conns);
      w.conns.clear();
      std::minstd_rand rng(static_cast<uint32_t>(wi) * 7919u + 17u);
      std::uniform_real_distribution<double> u(0.0, 1.0);
      for (auto& old : w.retired) {
        if (old->failed()) continue;  // never connected in the first place
        auto c = std::make_shared<Conn>(w, common_, old->idx() + 10'000'000, old->account(), kDirect);
        if (opt_.storm_cursors) c->SetResumeCursors(old->CursorsJson());
        w.conns.push_back(c);
        ++reconnecting[wi];
        auto delay = std::chrono::nanoseconds(static_cast<int64_t>(jitter_ns * u(rng)));
        Worker* wp = &w;
        asio::co_spawn(
            w.ctx,
            [c, delay, wp]() -> asio::awaitable<void> {
              if (delay.count() > 0) {
                asio::steady_timer timer(wp->ctx, delay);
                co_await timer.async_wait(kTuple);
              }
              co_await c->Open();
            },
            kRethrow);
      }
    });
    for (int k : reconnecting) storm_.clients += k;
    const int want = storm_.clients;
    int64_t deadline = t0 + SecToNs(60 + want / 50.0 + opt_.storm_jitter_ms / 1e3);
    int64_t last_print = t0;
    while (shared_.ready.load() + shared_.connect_failed.load() < want && MonoNs() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      if (MonoNs() - last_print > 1'000'000'000) {
        last_print = MonoNs();
        Progress("storm: t=%.1fs %d/%d resumed, %d welcomed, %d failed", static_cast<double>(last_print - t0) / 1e9,
                 shared_.ready.load(), want, shared_.welcomed.load(), shared_.connect_failed.load());
      }
    }
    int64_t t_end = MonoNs();
    storm_.timed_out = shared_.ready.load() + shared_.connect_failed.load() < want;
    double srv_cpu1 = ReadCpuSec(opt_.server_pid);
    storm_.seconds = static_cast<double>(t_end - t0) / 1e9;
    storm_.server_threads = ThreadPcts(threads0, ReadThreadTimes(opt_.server_pid), storm_.seconds);
    if (srv_cpu0 >= 0 && srv_cpu1 >= 0) storm_.server_cpu_pct = 100.0 * (srv_cpu1 - srv_cpu0) / storm_.seconds;
    storm_.self_cpu_pct = 100.0 * (SelfCpuSec() - self_cpu0) / storm_.seconds;
    storm_.welcomed = shared_.welcomed.load();
    storm_.ready = shared_.ready.load();
    storm_.failed = shared_.connect_failed.load();
    storm_.last_welcome_ns = shared_.last_welcome_ns.load();
    std::vector<std::vector<int64_t>> times(workers_.size());
    OnEachWorker([&times](Worker& w, size_t i) {
      for (auto& c : w.conns) {
        if (c->ready_at_ns() > 0) times[i].push_back(c->ready_at_ns());
      }
    });
    for (auto& v : times) storm_.ready_ns.insert(storm_.ready_ns.end(), v.begin(), v.end());
    std::sort(storm_.ready_ns.begin(), storm_.ready_ns.end());
    // Replays are acknowledged with receipts; give those a moment before closing.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    Take st = TakeAll();
    storm_.stats = Stats{};
    for (int c = 0; c < kClasses; ++c) storm_.stats.Merge(st.st[c]);
    storm_.closed_during = shared_.closed_unexpected.load() - closed0;
    server_cpu_pct_ = storm_.server_cpu_pct;
    server_threads_ = storm_.server_threads;
    rss_after_ = ReadRssKib(opt_.server_pid);
    Finish();
  }

  // Milliseconds from the drop until `pct` percent of the clients had resume_done;
  // negative if that many never did.
  double StormTimeMs(double pct) const {
    if (storm_.clients <= 0) return -1;
    size_t k = static_cast<size_t>(std::ceil(pct / 100.0 * storm_.clients));
    if (k == 0) k = 1;
    if (storm_.ready_ns.size() < k) return -1;
    return static_cast<double>(storm_.ready_ns[k - 1] - storm_.t0_ns) / 1e6;
  }
  double StormConnectRate() const {
    double s = static_cast<double>(storm_.last_welcome_ns - storm_.t0_ns) / 1e9;
    return s > 0 ? storm_.welcomed / s : 0;
  }

  void RunQueries() {
    common_.word_content = true;
    common_.vocab = MakeVocabulary();
    const int pairs = opt_.pairs;
    Progress("setup: %d users, %d direct conversations", 2 * pairs, pairs);
    Setup setup(opt_, run_id_);
    auto accts = setup.Accounts(2 * pairs, Iota(2 * pairs));
    auto convs = setup.DirectConversations(accts, PairList(pairs, 0));
    setup_ = setup.report();
    PrintSetup();

    int idx = 0;
    int senders = AddPairs(accts, convs, 0, false, idx);
    if (senders == 0) Die("setup produced no usable pair; see the failures above");
    senders_ = senders;
    // Who queries: every member of every pair, round robin over the HTTP clients.
    std::vector<std::pair<std::string, std::string>> who;  // token, conversation
    for (size_t i = 0; i < convs.size(); ++i) {
      if (convs[i].empty()) continue;
      who.emplace_back(accts[2 * i].token, convs[i]);
      who.emplace_back(accts[2 * i + 1].token, convs[i]);
    }

    StartWorkers();
    ConnectAll();
    TakeConnectStats();
    rss_before_ = ReadRssKib(opt_.server_pid);

    queries_.prep_s = RunBudget("preparing history", senders, opt_.prep_messages, 16, opt_.receipts);
    Take prep = TakeAll();
    queries_.prep_acked = prep.st[kDirect].acked_total;
    queries_.prep_failed = prep.st[kDirect].failed_msgs;
    // The search index follows the store asynchronously (normally within ms).
    std::this_thread::sleep_for(std::chrono::seconds(1));

    for (int kind = 0; kind < 2; ++kind) RunHttp(kind, who);
    Finish();
  }

  static constexpr const char* kHttpKind[2] = {"history", "search"};

  void RunHttp(int kind, const std::vector<std::pair<std::string, std::string>>& who) {
    HttpPhase& hp = queries_.phase[kind];
    const int64_t start = MonoNs() + 20'000'000;
    const int64_t ws = start + SecToNs(opt_.warmup);
    const int64_t we = ws + SecToNs(opt_.duration);
    hp.duration = opt_.duration;
    // Shared with the clients: one that outlives the wait below still finds it.
    auto running = std::make_shared<std::atomic<int>>(opt_.http_clients);
    for (int j = 0; j < opt_.http_clients; ++j) {
      Worker* wp = workers_[static_cast<size_t>(j) % workers_.size()].get();
      std::string token = who[static_cast<size_t>(j) % who.size()].first;
      std::string conv = who[static_cast<size_t>(j) % who.size()].second;
      asio::post(wp->ctx, [this, wp, j, kind, token, conv, start, ws, we, running] {
        asio::co_spawn(wp->ctx, HttpClient(wp, j, kind, token, conv, start, ws, we, running), kRethrow);
      });
    }
    Progress("%s: %d HTTP clients for %.0f s (+%.0f s warm-up)", kHttpKind[kind], opt_.http_clients, opt_.duration,
             opt_.warmup);
    std::this_thread::sleep_until(AtNs(ws));
    double srv_cpu0 = ReadCpuSec(opt_.server_pid);
    auto threads0 = ReadThreadTimes(opt_.server_pid);
    std::this_thread::sleep_until(AtNs(we));
    double srv_cpu1 = ReadCpuSec(opt_.server_pid);
    hp.server_threads = ThreadPcts(threads0, ReadThreadTimes(opt_.server_pid), opt_.duration);
    if (srv_cpu0 >= 0 && srv_cpu1 >= 0) hp.server_cpu_pct = 100.0 * (srv_cpu1 - srv_cpu0) / opt_.duration;
    // Requests started in the window finish; the REST client's own timeout is 60 s.
    int64_t deadline = we + SecToNs(70);
    while (running->load() > 0 && MonoNs() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    hp.unfinished = running->load();
    Take t = TakeAll();
    hp.stats = Stats{};
    for (int c = 0; c < kClasses; ++c) hp.stats.Merge(t.st[c]);
    server_cpu_pct_ = hp.server_cpu_pct;
    server_threads_ = hp.server_threads;
  }

  // One keep-alive HTTP client: requests back to back until the window ends. Latency
  // and counts are kept for requests started inside the window.
  asio::awaitable<void> HttpClient(Worker* w, int j, int kind, std::string token, std::string conv, int64_t start,
                                   int64_t ws, int64_t we, std::shared_ptr<std::atomic<int>> running) {
    RestClient rc(w->ctx, opt_);
    asio::steady_timer timer(w->ctx);
    timer.expires_at(AtNs(start));
    co_await timer.async_wait(kTuple);
    std::minstd_rand rng(static_cast<uint32_t>(j) * 2654435761u + 1u);
    const std::string history = "/v1/conversations/" + conv + "/messages?limit=50";
    while (MonoNs() < we) {
      std::string target = kind == 0 ? history : "/v1/search?q=" + common_.vocab[rng() % common_.vocab.size()];
      int64_t t0 = MonoNs();
      HttpResult r = co_await rc.Call(http::verb::get, target, "", token);
      int64_t t1 = MonoNs();
      bool in = t0 >= ws && t0 < we;
      Stats& st = w->stats[kDirect];
      if (r.status == 200) {
        if (!in) continue;
        st.http_lat[kind].RecordSigned(t1 - t0);
        ++st.http_ok[kind];
        simdjson::dom::element doc;
        simdjson::dom::array arr;
        if (w->parser.parse(r.body).get(doc) == simdjson::SUCCESS &&
            doc[kind == 0 ? "messages" : "results"].get_array().get(arr) == simdjson::SUCCESS) {
          st.http_items[kind] += arr.size();
        }
        continue;
      }
      std::string k = std::string(kHttpKind[kind]) + ": ";
      if (r.status == 0) {
        k += r.error;
      } else {
        k += "HTTP " + std::to_string(r.status);
        std::string code = ErrorCodeOf(w->parser, r.body);
        if (!code.empty()) k += " " + code;
      }
      Inc(st.http_errors, k);
      if (in) ++st.http_failed[kind];
      // A refusing server is not hammered in a tight loop.
      timer.expires_after(std::chrono::milliseconds(10));
      co_await timer.async_wait(kTuple);
    }
    running->fetch_sub(1);
  }

  void RunIdle() {
    const int n = opt_.connections;
    const int users = opt_.users > 0 ? std::min(opt_.users, n) : n;
    if (FdLimit() < n + 100) {
      Progress("warning: open-files limit %lld is below %d connections", static_cast<long long>(FdLimit()), n);
    }
    Progress("setup: %d users, %d logins", users, n);
    Setup setup(opt_, run_id_);
    std::vector<int> login_users(n);
    for (int j = 0; j < n; ++j) login_users[j] = j % users;
    auto accts = setup.Accounts(users, login_users);
    setup_ = setup.report();
    PrintSetup();

    int idx = 0;
    for (auto& a : accts) {
      if (a.token.empty()) continue;
      auto& w = *workers_[idx % workers_.size()];
      w.conns.push_back(std::make_shared<Conn>(w, common_, idx, a));
      ++idx;
    }
    if (idx == 0) Die("setup produced no usable login; see the failures above");

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
    for (auto& w : workers_) {
      for (const auto& st : w->stats) total_.Merge(st);
    }
  }

  void PrintSetup() {
    const auto& s = setup_;
    auto rate = [](int n, double sec) { return sec > 0 ? static_cast<double>(n) / sec : 0.0; };
    std::printf("setup: %d/%d users registered in %.2f s (%.0f/s), %d/%d logins in %.2f s (%.0f/s)",
                s.users_registered, s.users_wanted, s.register_s, rate(s.users_registered, s.register_s), s.logins_ok,
                s.logins_wanted, s.login_s, rate(s.logins_ok, s.login_s));
    if (s.conversations_wanted) {
      std::printf(", %d/%d conversations in %.2f s", s.conversations_ok, s.conversations_wanted, s.conversations_s);
    }
    if (s.groups_wanted) std::printf(", %d/%d groups in %.2f s", s.groups_ok, s.groups_wanted, s.groups_s);
    std::printf("\n");
    if (s.rate_limited_retries) std::printf("setup: %llu requests retried after 429\n", static_cast<unsigned long long>(s.rate_limited_retries));
    for (const auto& [k, v] : s.failures) std::printf("setup failure: %s x%llu\n", k.c_str(), static_cast<unsigned long long>(v));
    std::fflush(stdout);
  }

  double ConnectSeconds() const { return static_cast<double>(connect_end_ns_ - connect_start_ns_) / 1e9; }
  double ConnectRate() const {
    double s = ConnectSeconds();
    return s > 0 ? welcomed_ / s : 0;
  }

  // ---------------------------------------------------------------------------------
  // Reports

  static double Ms(uint64_t ns) { return static_cast<double>(ns) / 1e6; }
  static std::string MsStr(uint64_t ns) { return Fmt(Ms(ns), 3); }

  const Stats& ConnectStats() const { return have_connect_stats_ ? connect_stats_ : total_; }

  void PrintCpu(double server_cpu, const std::vector<ThreadPct>& server_threads, double self_cpu,
                const std::vector<ThreadPct>& self_threads, const char* indent = "") const {
    // Waiting for a CPU is what a shared machine does to a run; print it next to the
    // CPU figures so a starved run is not mistaken for a slow server.
    std::printf("%scpu (%% of one core): server %s, waiting for a CPU %s; loadgen %.0f, waiting %.0f\n", indent,
                server_cpu >= 0 ? Fmt(server_cpu, 0).c_str() : "n/a",
                server_threads.empty() ? "n/a" : Fmt(SumWait(server_threads), 0).c_str(), self_cpu,
                SumWait(self_threads));
    if (!server_threads.empty()) {
      std::string line;
      for (size_t i = 0; i < server_threads.size() && i < 10; ++i) {
        if (i) line += ", ";
        line += server_threads[i].name + " " + Fmt(server_threads[i].cpu, 0) + "/" + Fmt(server_threads[i].wait, 0);
      }
      std::printf("%sserver threads (cpu/wait %%): %s\n", indent, line.c_str());
    }
  }

  // The traffic report of one class in one phase (mixed, sweep).
  void PrintClass(const PhaseResult& ph, int c) const {
    const Stats& t = ph.st(c);
    const char* label = c == kDirect ? "1:1" : "group";
    std::printf("  %s: %d senders, offered %s, sent %.0f/s, acked %.0f/s, delivered %.0f/s; failed %llu, unacked %lld, "
                "scheduled but unsent %llu\n",
                label, ph.senders[c], ph.offered[c] > 0 ? (Fmt(ph.offered[c], 0) + "/s").c_str() : "-",
                ph.PerS(t.sent_window), ph.PerS(t.acked_window), ph.PerS(t.delivered_window),
                static_cast<unsigned long long>(t.failed_msgs), static_cast<long long>(ph.take.unacked[c]),
                static_cast<unsigned long long>(ph.take.unsent[c]));
    std::printf("    ack latency:      %s\n", LatLine(t.ack_lat).c_str());
    std::printf("    delivery latency: %s\n", LatLine(t.deliv_lat).c_str());
    if (!t.close_reasons.empty()) std::printf("    closed: %s\n", CountsLine(t.close_reasons).c_str());
    if (!t.errors.empty()) {
      std::printf("    errors: %s\n", CountsLine(t.errors).c_str());
      for (const auto& [k, v] : t.error_samples) std::printf("      e.g. %s: %s\n", k.c_str(), v.c_str());
    }
  }

  void ReportTraffic() const {
    const Stats& t = total_;
    const double d = opt_.duration;
    if (opt_.scenario == Scenario::kGroups) {
      std::printf("mode: open loop, %d groups of %d members (each message goes to %d), %d senders, target %s msg/s\n",
                  opt_.groups, opt_.members, opt_.members - 1, senders_, Fmt(opt_.group_rate, 0).c_str());
    } else {
      std::printf("mode: %s, %d senders, %s\n", opt_.rate > 0 ? "open loop" : "closed loop", senders_,
                  opt_.rate > 0 ? ("target " + Fmt(opt_.rate, 0) + " msg/s").c_str()
                                : ("window " + std::to_string(opt_.window)).c_str());
    }
    std::printf("throughput (%.0f s window): sent %.0f/s, acked %.0f/s, delivered %.0f/s\n", d,
                static_cast<double>(t.sent_window) / d, static_cast<double>(t.acked_window) / d,
                static_cast<double>(t.delivered_window) / d);
    std::printf("ack latency:      %s\n", LatLine(t.ack_lat).c_str());
    std::printf("delivery latency: %s\n", LatLine(t.deliv_lat).c_str());
    if (t.send_lag.Count() > 0) std::printf("send lag (generator late): %s\n", LatLine(t.send_lag).c_str());
    std::printf("errors: %s\n", CountsLine(t.errors).c_str());
    for (const auto& [k, v] : t.error_samples) std::printf("  e.g. %s: %s\n", k.c_str(), v.c_str());
    std::printf("totals: sent %llu, acked %llu, failed %llu, delivered %llu, unacked at end %lld (drain %.2f s)",
                static_cast<unsigned long long>(t.sent_total), static_cast<unsigned long long>(t.acked_total),
                static_cast<unsigned long long>(t.failed_msgs), static_cast<unsigned long long>(t.delivered_total),
                static_cast<long long>(unacked_at_end_), drain_s_);
    if (opt_.rate > 0 || opt_.scenario == Scenario::kGroups)
      std::printf(", scheduled but unsent %llu", static_cast<unsigned long long>(unsent_scheduled_));
    std::printf("\n");
    PrintAnomalies(t);
    PrintCpu(server_cpu_pct_, server_threads_, self_cpu_pct_, self_threads_);
  }

  static void PrintAnomalies(const Stats& t) {
    std::printf("anomalies: duplicate acks %llu, unknown acks %llu, duplicate deliveries %llu, reordered %llu, seq gaps %llu, "
                "lost on close %llu, unparsable frames %llu\n",
                static_cast<unsigned long long>(t.duplicate_acks), static_cast<unsigned long long>(t.unknown_acks),
                static_cast<unsigned long long>(t.duplicate_deliveries),
                static_cast<unsigned long long>(t.reordered_deliveries), static_cast<unsigned long long>(t.seq_gaps),
                static_cast<unsigned long long>(t.lost_on_close), static_cast<unsigned long long>(t.unparsable_frames));
  }

  void ReportMixed() const {
    std::printf("mode: open loop; %d pairs (1:1) at %s msg/s; %d groups of %d members, %d senders, at %s msg/s in the "
                "flood phase\n",
                opt_.pairs, Fmt(opt_.rate, 0).c_str(), opt_.groups, opt_.members, group_senders_,
                Fmt(opt_.group_rate, 0).c_str());
    for (const auto& ph : phases_) {
      std::printf("phase %s (%.0f s window, drain %.2f s, %d connections closed):\n", ph.name.c_str(), ph.duration,
                  ph.drain_s, ph.closed_during);
      PrintClass(ph, kDirect);
      if (ph.sending[kGroup]) PrintClass(ph, kGroup);
      PrintCpu(ph.server_cpu_pct, ph.server_threads, ph.self_cpu_pct, ph.self_threads, "  ");
    }
    if (phases_.size() == 2) {
      const Stats& a = phases_[0].st(kDirect);
      const Stats& f = phases_[1].st(kDirect);
      std::printf("1:1 alone vs with the group flood: delivery p50 %s / %s, p99 %s / %s, p99.9 %s / %s; ack p99 %s / %s\n",
                  FmtNs(static_cast<double>(a.deliv_lat.Percentile(50))).c_str(),
                  FmtNs(static_cast<double>(f.deliv_lat.Percentile(50))).c_str(),
                  FmtNs(static_cast<double>(a.deliv_lat.Percentile(99))).c_str(),
                  FmtNs(static_cast<double>(f.deliv_lat.Percentile(99))).c_str(),
                  FmtNs(static_cast<double>(a.deliv_lat.Percentile(99.9))).c_str(),
                  FmtNs(static_cast<double>(f.deliv_lat.Percentile(99.9))).c_str(),
                  FmtNs(static_cast<double>(a.ack_lat.Percentile(99))).c_str(),
                  FmtNs(static_cast<double>(f.ack_lat.Percentile(99))).c_str());
    }
    PrintAnomalies(total_);
  }

  void ReportSweep() const {
    std::printf("mode: open loop sweep, %d senders, %.0f s per rate (after %.0f s warm-up)\n", senders_, opt_.duration,
                opt_.warmup);
    std::printf("  %9s %9s %9s %9s | %9s %9s %9s %9s %9s | %7s %7s %7s | %5s %s\n", "offered/s", "sent/s", "acked/s",
                "deliv/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "failed", "unacked", "unsent", "cpu%",
                "");
    for (const auto& ph : phases_) {
      const Stats& t = ph.st(kDirect);
      const Histogram& h = t.deliv_lat;
      std::printf("  %9.0f %9.0f %9.0f %9.0f | %9.3f %9.3f %9.3f %9.3f %9.3f | %7llu %7lld %7llu | %5s %s\n",
                  ph.offered[kDirect], ph.PerS(t.sent_window), ph.PerS(t.acked_window), ph.PerS(t.delivered_window),
                  Ms(h.Percentile(50)), Ms(h.Percentile(90)), Ms(h.Percentile(99)), Ms(h.Percentile(99.9)), Ms(h.Max()),
                  static_cast<unsigned long long>(t.failed_msgs), static_cast<long long>(ph.take.unacked[kDirect]),
                  static_cast<unsigned long long>(ph.take.unsent[kDirect]),
                  ph.server_cpu_pct >= 0 ? Fmt(ph.server_cpu_pct, 0).c_str() : "n/a",
                  Saturated(ph) ? "not keeping up" : "");
    }
    if (!opt_.svg_path.empty()) std::printf("chart: %s\n", opt_.svg_path.c_str());
    PrintAnomalies(total_);
  }

  static std::string MsOrNever(double ms) { return ms >= 0 ? Fmt(ms, 1) + " ms" : std::string("never"); }

  void ReportStorm() const {
    const Stats& t = storm_.stats;
    std::printf("pre-storm traffic: %d messages per conversation, %llu acked, %llu failed in %.2f s (no receipts)\n",
                opt_.storm_messages, static_cast<unsigned long long>(storm_.prep_acked),
                static_cast<unsigned long long>(storm_.prep_failed), storm_.prep_s);
    std::printf("storm: %d clients reset at once, all reconnecting%s, resuming %s\n", storm_.clients,
                opt_.storm_jitter_ms > 0 ? (" within " + Fmt(opt_.storm_jitter_ms, 0) + " ms").c_str() : " at once",
                opt_.storm_cursors ? "with their cursors" : "without cursors");
    std::printf("resume_done after the drop: 50%% %s, 99%% %s, 100%% %s (%d of %d%s)\n",
                MsOrNever(StormTimeMs(50)).c_str(), MsOrNever(StormTimeMs(99)).c_str(),
                MsOrNever(StormTimeMs(100)).c_str(), storm_.ready, storm_.clients,
                storm_.timed_out ? ", timed out waiting" : "");
    std::printf("reconnects: %d welcomed (%.0f connects/s), %d failed; replayed %llu messages (resume_done), %llu "
                "message frames received\n",
                storm_.welcomed, StormConnectRate(), storm_.failed, static_cast<unsigned long long>(t.resume_replayed),
                static_cast<unsigned long long>(t.delivered_total + t.duplicate_deliveries));
    std::printf("handshake-to-welcome %s\n", LatLine(t.connect_lat).c_str());
    std::printf("welcome-to-resume_done %s\n", LatLine(t.resume_lat).c_str());
    std::printf("errors: connect %s; error frames %s; connections closed %d\n", CountsLine(t.connect_errors).c_str(),
                CountsLine(t.errors).c_str(), storm_.closed_during);
    std::printf("cpu (%% of one core) during the storm: server %s, waiting for a CPU %s; loadgen %s\n",
                storm_.server_cpu_pct >= 0 ? Fmt(storm_.server_cpu_pct, 0).c_str() : "n/a",
                storm_.server_threads.empty() ? "n/a" : Fmt(SumWait(storm_.server_threads), 0).c_str(),
                Fmt(storm_.self_cpu_pct, 0).c_str());
  }

  void ReportQueries() const {
    std::printf("history prepared: %d conversations x %d messages: %llu acked, %llu failed in %.2f s\n", senders_,
                opt_.prep_messages, static_cast<unsigned long long>(queries_.prep_acked),
                static_cast<unsigned long long>(queries_.prep_failed), queries_.prep_s);
    for (int k = 0; k < 2; ++k) {
      const HttpPhase& hp = queries_.phase[k];
      const Stats& t = hp.stats;
      double per_s = hp.duration > 0 ? static_cast<double>(t.http_ok[k]) / hp.duration : 0;
      std::printf("%s: %d clients, %.0f requests/s, failed %llu; %.1f %s per answer; latency %s\n", kHttpKind[k],
                  opt_.http_clients, per_s, static_cast<unsigned long long>(t.http_failed[k]),
                  t.http_ok[k] ? static_cast<double>(t.http_items[k]) / static_cast<double>(t.http_ok[k]) : 0.0,
                  k == 0 ? "messages" : "results", LatLine(t.http_lat[k]).c_str());
      std::printf("  cpu (%% of one core): server %s, waiting for a CPU %s\n",
                  hp.server_cpu_pct >= 0 ? Fmt(hp.server_cpu_pct, 0).c_str() : "n/a",
                  hp.server_threads.empty() ? "n/a" : Fmt(SumWait(hp.server_threads), 0).c_str());
      if (!t.http_errors.empty()) std::printf("  errors: %s\n", CountsLine(t.http_errors).c_str());
      if (hp.unfinished) std::printf("  clients still waiting for an answer at the end: %d\n", hp.unfinished);
    }
  }

  void Report() {
    const Stats& cs = ConnectStats();
    std::printf("connect: %d/%d welcomed in %.2f s (%.0f conn/s), %d failed%s; handshake-to-welcome %s\n", welcomed_,
                connect_attempted_, ConnectSeconds(), ConnectRate(), connect_failed_,
                connect_timed_out_ ? " (timed out waiting)" : "", LatLine(cs.connect_lat).c_str());
    if (opt_.resume) {
      std::printf("ready (resume_done): %d in %.2f s from the first connect; welcome-to-resume_done %s", ready_,
                  static_cast<double>(ready_end_ns_ - connect_start_ns_) / 1e9, LatLine(cs.resume_lat).c_str());
      if (cs.resume_replayed) std::printf("; replayed %llu", static_cast<unsigned long long>(cs.resume_replayed));
      std::printf("\n");
    }
    if (!cs.connect_errors.empty()) std::printf("connect errors: %s\n", CountsLine(cs.connect_errors).c_str());

    switch (opt_.scenario) {
      case Scenario::kSenders:
      case Scenario::kGroups: ReportTraffic(); break;
      case Scenario::kMixed: ReportMixed(); break;
      case Scenario::kSweep: ReportSweep(); break;
      case Scenario::kStorm: ReportStorm(); break;
      case Scenario::kQueries: ReportQueries(); break;
      case Scenario::kIdle: {
        std::printf("server memory: VmRSS %lld KiB before, %lld KiB with %d idle connections, %lld KiB after %.0f s hold\n",
                    static_cast<long long>(rss_before_), static_cast<long long>(rss_after_), ready_,
                    static_cast<long long>(rss_after_hold_), opt_.duration);
        if (BytesPerConn() >= 0) std::printf("bytes per idle connection: %.0f\n", BytesPerConn());
        std::printf("idle: %d open at end of hold; server cpu while idle %s\n", open_at_end_,
                    server_cpu_pct_ >= 0 ? (Fmt(server_cpu_pct_, 1) + "%").c_str() : "n/a");
        break;
      }
    }
    const Stats& t = total_;
    std::printf("closed connections (unexpected): %d%s%s\n", shared_.closed_unexpected.load(),
                t.close_reasons.empty() ? "" : " — ", t.close_reasons.empty() ? "" : CountsLine(t.close_reasons).c_str());
    if (not_closed_cleanly_) std::printf("connections not closed within 5 s at the end: %d\n", not_closed_cleanly_);
    if (!t.other_events.empty()) std::printf("other events: %s\n", CountsLine(t.other_events).c_str());
    std::printf("%s\n", ResultLine().c_str());
    std::fflush(stdout);

    if (!opt_.json_path.empty()) {
      if (!WriteJsonFile(opt_.json_path, Json())) Die("cannot write " + opt_.json_path);
    }
  }

  double BytesPerConn() const {
    int n = ready_;
    if (rss_before_ < 0 || rss_after_ < 0 || n == 0) return -1;
    return static_cast<double>(rss_after_ - rss_before_) * 1024.0 / n;
  }

  // One grep-able line for bench/run.sh's closing summary.
  std::string ResultLine() const {
    const Stats& t = total_;
    std::string s = "RESULT scenario=";
    s += ScenarioName(opt_.scenario);
    auto errs_of = [](const Stats& st) {
      uint64_t n = 0;
      for (const auto& [k, v] : st.errors) n += v;
      return n;
    };
    switch (opt_.scenario) {
      case Scenario::kSenders:
      case Scenario::kGroups: {
        double d = opt_.duration;
        if (opt_.scenario == Scenario::kGroups) {
          s += " groups=" + std::to_string(opt_.groups) + " members=" + std::to_string(opt_.members);
          s += " senders=" + std::to_string(senders_) + " rate=" + Fmt(opt_.group_rate, 0);
        } else {
          s += " senders=" + std::to_string(senders_);
          s += opt_.rate > 0 ? " rate=" + Fmt(opt_.rate, 0) : " window=" + std::to_string(opt_.window);
        }
        s += " acked_per_s=" + Fmt(static_cast<double>(t.acked_window) / d, 0);
        s += " delivered_per_s=" + Fmt(static_cast<double>(t.delivered_window) / d, 0);
        s += " ack_p50_ms=" + MsStr(t.ack_lat.Percentile(50));
        s += " ack_p99_ms=" + MsStr(t.ack_lat.Percentile(99));
        s += " ack_p999_ms=" + MsStr(t.ack_lat.Percentile(99.9));
        s += " ack_max_ms=" + MsStr(t.ack_lat.Max());
        s += " deliv_p50_ms=" + MsStr(t.deliv_lat.Percentile(50));
        s += " deliv_p99_ms=" + MsStr(t.deliv_lat.Percentile(99));
        s += " deliv_p999_ms=" + MsStr(t.deliv_lat.Percentile(99.9));
        s += " failed=" + std::to_string(t.failed_msgs);
        s += " error_frames=" + std::to_string(errs_of(t));
        s += " unacked=" + std::to_string(unacked_at_end_);
        break;
      }
      case Scenario::kMixed: {
        s += " pairs=" + std::to_string(opt_.pairs) + " rate=" + Fmt(opt_.rate, 0);
        s += " groups=" + std::to_string(opt_.groups) + " members=" + std::to_string(opt_.members);
        s += " group_rate=" + Fmt(opt_.group_rate, 0);
        for (const auto& ph : phases_) {
          const Stats& d = ph.st(kDirect);
          s += " " + ph.name + "_deliv_p50_ms=" + MsStr(d.deliv_lat.Percentile(50));
          s += " " + ph.name + "_deliv_p99_ms=" + MsStr(d.deliv_lat.Percentile(99));
          s += " " + ph.name + "_deliv_p999_ms=" + MsStr(d.deliv_lat.Percentile(99.9));
          s += " " + ph.name + "_ack_p99_ms=" + MsStr(d.ack_lat.Percentile(99));
          s += " " + ph.name + "_acked_per_s=" + Fmt(ph.PerS(d.acked_window), 0);
        }
        if (phases_.size() == 2) {
          const PhaseResult& f = phases_[1];
          const Stats& g = f.st(kGroup);
          s += " group_delivered_per_s=" + Fmt(f.PerS(g.delivered_window), 0);
          s += " group_acked_per_s=" + Fmt(f.PerS(g.acked_window), 0);
          s += " group_deliv_p99_ms=" + MsStr(g.deliv_lat.Percentile(99));
          s += " group_failed=" + std::to_string(g.failed_msgs);
        }
        break;
      }
      case Scenario::kSweep: {
        s += " senders=" + std::to_string(senders_) + " stages=" + std::to_string(phases_.size());
        double best = 0, best_p99 = 0;
        for (const auto& ph : phases_) {
          if (!Saturated(ph) && ph.offered[kDirect] > best) {
            best = ph.offered[kDirect];
            best_p99 = Ms(ph.st(kDirect).deliv_lat.Percentile(99));
          }
        }
        s += " max_kept_up_rate=" + Fmt(best, 0) + " p99_at_max_ms=" + Fmt(best_p99, 3);
        s += " rates=";
        for (size_t i = 0; i < phases_.size(); ++i) {
          const auto& ph = phases_[i];
          s += (i ? "," : "") + Fmt(ph.offered[kDirect], 0) + ":" + Fmt(Ms(ph.st(kDirect).deliv_lat.Percentile(99)), 1);
        }
        if (!opt_.svg_path.empty()) s += " svg=" + opt_.svg_path;
        break;
      }
      case Scenario::kStorm: {
        s += " clients=" + std::to_string(storm_.clients) + " resumed=" + std::to_string(storm_.ready);
        s += " t50_ms=" + Fmt(StormTimeMs(50), 1) + " t99_ms=" + Fmt(StormTimeMs(99), 1) +
             " t100_ms=" + Fmt(StormTimeMs(100), 1);
        s += " connect_per_s=" + Fmt(StormConnectRate(), 0);
        s += " replayed=" + std::to_string(storm_.stats.resume_replayed);
        s += " failed=" + std::to_string(storm_.failed);
        s += " error_frames=" + std::to_string(errs_of(storm_.stats));
        break;
      }
      case Scenario::kQueries: {
        s += " clients=" + std::to_string(opt_.http_clients);
        for (int k = 0; k < 2; ++k) {
          const HttpPhase& hp = queries_.phase[k];
          const Stats& st = hp.stats;
          std::string n = kHttpKind[k];
          s += " " + n + "_per_s=" + Fmt(hp.duration > 0 ? static_cast<double>(st.http_ok[k]) / hp.duration : 0, 0);
          s += " " + n + "_p50_ms=" + MsStr(st.http_lat[k].Percentile(50));
          s += " " + n + "_p99_ms=" + MsStr(st.http_lat[k].Percentile(99));
          s += " " + n + "_failed=" + std::to_string(st.http_failed[k]);
        }
        break;
      }
      case Scenario::kIdle: {
        s += " connections=" + std::to_string(ready_) + "/" + std::to_string(connect_attempted_);
        s += " connect_per_s=" + Fmt(ConnectRate(), 0);
        s += " bytes_per_conn=" + (BytesPerConn() >= 0 ? Fmt(BytesPerConn(), 0) : std::string("n/a"));
        break;
      }
    }
    s += " closed=" + std::to_string(shared_.closed_unexpected.load());
    return s;
  }

  static void PhaseJson(JsonWriter& w, const PhaseResult& ph) {
    w.BeginObject();
    w.Field("name", ph.name);
    w.Key("duration_s").Raw(Fmt(ph.duration, 3));
    w.Key("drain_s").Raw(Fmt(ph.drain_s, 3));
    w.Field("closed_during", ph.closed_during);
    w.Field("kept_up", !Saturated(ph));
    w.Key("server_cpu_pct").Raw(ph.server_cpu_pct >= 0 ? Fmt(ph.server_cpu_pct, 1) : "null");
    w.Key("server_cpu_wait_pct").Raw(ph.server_threads.empty() ? "null" : Fmt(SumWait(ph.server_threads), 1));
    w.Key("loadgen_cpu_pct").Raw(Fmt(ph.self_cpu_pct, 1));
    w.Key("loadgen_cpu_wait_pct").Raw(Fmt(SumWait(ph.self_threads), 1));
    ThreadsJson(w, "server_threads", ph.server_threads);
    for (int c = 0; c < kClasses; ++c) {
      if (!ph.sending[c] && ph.st(c).delivered_total == 0) continue;
      w.Key(std::string_view(ClsName(c))).BeginObject();
      w.Field("sending", ph.sending[c]);
      w.Field("senders", ph.senders[c]);
      w.Key("offered_per_s").Raw(Fmt(ph.offered[c], 1));
      TrafficJson(w, ph.st(c), ph.duration, ph.take.unacked[c], ph.take.unsent[c], ph.drain_s);
      CountsJson(w, "close_reasons", ph.st(c).close_reasons);
      w.EndObject();
    }
    w.EndObject();
  }

  std::string Json() const {
    const Stats& t = total_;
    const Stats& cs = ConnectStats();
    const double d = opt_.duration;
    const Scenario sc = opt_.scenario;
    JsonWriter w(16384);
    w.BeginObject();
    w.Field("tool", "loadgen");
    w.Field("format_version", 1);
    w.Field("scenario", ScenarioName(sc));
    w.Field("started_at", started_at_);

    w.Key("parameters").BeginObject();
    w.Field("url", opt_.url);
    w.Field("threads", opt_.threads);
    const char* receipts = opt_.receipts == Receipts::kOff ? "off" : opt_.receipts == Receipts::kEach ? "each" : "batch";
    if (sc == Scenario::kSenders || sc == Scenario::kMixed || sc == Scenario::kSweep) {
      w.Field("pairs", opt_.pairs);
      w.Field("two_way", opt_.two_way);
      w.Field("senders", senders_);
    }
    if (sc == Scenario::kSenders) {
      w.Field("mode", opt_.rate > 0 ? "open_loop" : "closed_loop");
      if (opt_.rate > 0) {
        w.Key("rate").Raw(Fmt(opt_.rate, 3));
        w.Field("max_inflight", opt_.max_inflight);
      } else {
        w.Field("window", opt_.window);
      }
    }
    if (sc == Scenario::kMixed) {
      w.Key("rate").Raw(Fmt(opt_.rate, 3));
      w.Field("max_inflight", opt_.max_inflight);
    }
    if (sc == Scenario::kGroups || sc == Scenario::kMixed) {
      w.Field("groups", opt_.groups);
      w.Field("members", opt_.members);
      w.Field("group_senders_per_group", opt_.group_senders);
      w.Field("group_senders", sc == Scenario::kGroups ? senders_ : group_senders_);
      w.Key("group_rate").Raw(Fmt(opt_.group_rate, 3));
      w.Field("group_receipt_ms", opt_.group_receipt_ms);
      w.Field("max_inflight", opt_.max_inflight);
    }
    if (sc == Scenario::kSweep) {
      w.Key("rates").BeginArray();
      for (double r : opt_.rates) w.Raw(Fmt(r, 3));
      w.EndArray();
      w.Field("sweep_all", opt_.sweep_all);
      w.Field("max_inflight", opt_.max_inflight);
    }
    if (sc == Scenario::kStorm) {
      w.Field("clients", opt_.connections / 2 * 2);
      w.Field("storm_messages", opt_.storm_messages);
      w.Key("storm_jitter_ms").Raw(Fmt(opt_.storm_jitter_ms, 3));
      w.Field("storm_cursors", opt_.storm_cursors);
    }
    if (sc == Scenario::kQueries) {
      w.Field("pairs", opt_.pairs);
      w.Field("prep_messages", opt_.prep_messages);
      w.Field("http_clients", opt_.http_clients);
      w.Field("history_limit", 50);
      w.Field("search_vocabulary", static_cast<int64_t>(common_.vocab.size()));
    }
    if (sc == Scenario::kIdle) {
      w.Field("connections", opt_.connections);
      w.Field("users", opt_.users > 0 ? std::min(opt_.users, opt_.connections) : opt_.connections);
    } else {
      w.Key("warmup_s").Raw(Fmt(opt_.warmup, 3));
      w.Key("drain_s").Raw(Fmt(opt_.drain, 3));
      w.Field("content_bytes", opt_.content_bytes);
      w.Field("receipts", receipts);
      w.Field("receipt_ms", opt_.receipt_ms);
    }
    w.Key("duration_s").Raw(Fmt(d, 3));
    w.Field("setup_concurrency", opt_.setup_concurrency);
    w.Field("connect_concurrency", opt_.connect_concurrency);
    w.Field("server_pid", opt_.server_pid);
    w.EndObject();

    TagsJson(w, opt_.tags);

    w.Key("machine").BeginObject();
    MachineFields(w, machine_);
    w.Key("load_avg_1m_at_start").Raw(load_avg_at_start_.empty() ? "null" : load_avg_at_start_);
    w.EndObject();

    w.Key("setup").BeginObject();
    w.Field("users_wanted", setup_.users_wanted);
    w.Field("users_registered", setup_.users_registered);
    w.Key("register_s").Raw(Fmt(setup_.register_s, 3));
    w.Field("logins_wanted", setup_.logins_wanted);
    w.Field("logins_ok", setup_.logins_ok);
    w.Key("login_s").Raw(Fmt(setup_.login_s, 3));
    w.Field("conversations_wanted", setup_.conversations_wanted);
    w.Field("conversations_ok", setup_.conversations_ok);
    w.Key("conversations_s").Raw(Fmt(setup_.conversations_s, 3));
    w.Field("groups_wanted", setup_.groups_wanted);
    w.Field("groups_ok", setup_.groups_ok);
    w.Key("groups_s").Raw(Fmt(setup_.groups_s, 3));
    w.Field("rate_limited_retries", setup_.rate_limited_retries);
    CountsJson(w, "failures", setup_.failures);
    w.EndObject();

    w.Key("connect").BeginObject();
    w.Field("attempted", connect_attempted_);
    w.Field("welcomed", welcomed_);
    w.Field("failed", connect_failed_);
    w.Field("timed_out", connect_timed_out_);
    w.Key("seconds").Raw(Fmt(ConnectSeconds(), 3));
    w.Key("rate_per_s").Raw(Fmt(ConnectRate(), 1));
    LatJson(w, "latency_us", cs.connect_lat);
    w.Field("resume", opt_.resume);
    w.Field("ready", ready_);
    w.Key("ready_seconds").Raw(Fmt(static_cast<double>(ready_end_ns_ - connect_start_ns_) / 1e9, 3));
    LatJson(w, "resume_latency_us", cs.resume_lat);
    w.Field("resume_replayed", cs.resume_replayed);
    CountsJson(w, "errors", cs.connect_errors);
    w.EndObject();

    w.Key("results").BeginObject();
    switch (sc) {
      case Scenario::kSenders:
      case Scenario::kGroups:
        TrafficJson(w, t, d, unacked_at_end_, unsent_scheduled_, drain_s_);
        w.Key("loadgen_cpu_pct").Raw(Fmt(self_cpu_pct_, 1));
        w.Key("loadgen_cpu_wait_pct").Raw(Fmt(SumWait(self_threads_), 1));
        if (!phases_.empty() && !phases_.back().intervals.empty()) {
          w.Key("intervals").BeginArray();
          for (const Interval& iv : phases_.back().intervals) {
            w.BeginObject();
            w.Key("t_s").Raw(Fmt(iv.t_s, 1));
            w.Key("delivered_per_s").Raw(Fmt(iv.deliv_per_s, 0));
            w.Key("deliv_p50_ms").Raw(MsStr(iv.deliv_p50));
            w.Key("deliv_p99_ms").Raw(MsStr(iv.deliv_p99));
            w.Key("deliv_max_ms").Raw(MsStr(iv.deliv_max));
            w.Key("ack_p99_ms").Raw(MsStr(iv.ack_p99));
            w.Key("server_cpu_pct").Raw(iv.server_cpu_pct >= 0 ? Fmt(iv.server_cpu_pct, 1) : "null");
            w.Key("server_rss_kib").Raw(iv.rss_kib >= 0 ? std::to_string(iv.rss_kib) : "null");
            w.Key("search_backlog").Raw(iv.search_backlog >= 0 ? std::to_string(iv.search_backlog) : "null");
            w.EndObject();
          }
          w.EndArray();
        }
        break;
      case Scenario::kMixed:
      case Scenario::kSweep: {
        w.Key(std::string_view(sc == Scenario::kMixed ? "phases" : "points")).BeginArray();
        for (const auto& ph : phases_) PhaseJson(w, ph);
        w.EndArray();
        if (sc == Scenario::kMixed && phases_.size() == 2) {
          // The comparison run.sh prints: 1:1 alone against 1:1 under the flood.
          w.Key("direct_side_by_side_ms").BeginObject();
          for (const auto& ph : phases_) {
            const Stats& ds = ph.st(kDirect);
            w.Key(ph.name).BeginObject();
            w.Key("deliv_p50").Raw(MsStr(ds.deliv_lat.Percentile(50)));
            w.Key("deliv_p99").Raw(MsStr(ds.deliv_lat.Percentile(99)));
            w.Key("deliv_p999").Raw(MsStr(ds.deliv_lat.Percentile(99.9)));
            w.Key("ack_p50").Raw(MsStr(ds.ack_lat.Percentile(50)));
            w.Key("ack_p99").Raw(MsStr(ds.ack_lat.Percentile(99)));
            w.Key("ack_p999").Raw(MsStr(ds.ack_lat.Percentile(99.9)));
            w.EndObject();
          }
          w.EndObject();
        }
        if (sc == Scenario::kSweep) {
          // The chart's data, one flat object per offered rate (the full figures are
          // in "points").
          w.Key("curve").BeginArray();
          for (const auto& ph : phases_) {
            const Stats& ds = ph.st(kDirect);
            w.BeginObject();
            w.Key("offered_per_s").Raw(Fmt(ph.offered[kDirect], 1));
            w.Key("acked_per_s").Raw(Fmt(ph.PerS(ds.acked_window), 1));
            w.Key("delivered_per_s").Raw(Fmt(ph.PerS(ds.delivered_window), 1));
            w.Key("deliv_p50_ms").Raw(MsStr(ds.deliv_lat.Percentile(50)));
            w.Key("deliv_p90_ms").Raw(MsStr(ds.deliv_lat.Percentile(90)));
            w.Key("deliv_p99_ms").Raw(MsStr(ds.deliv_lat.Percentile(99)));
            w.Key("deliv_p999_ms").Raw(MsStr(ds.deliv_lat.Percentile(99.9)));
            w.Key("deliv_max_ms").Raw(MsStr(ds.deliv_lat.Max()));
            w.Key("ack_p99_ms").Raw(MsStr(ds.ack_lat.Percentile(99)));
            w.Field("kept_up", !Saturated(ph));
            w.EndObject();
          }
          w.EndArray();
          if (opt_.svg_path.empty()) w.Key("svg").Null();
          else w.Field("svg", opt_.svg_path);
        }
        w.Key("anomalies").BeginObject();
        w.Field("seq_gaps", t.seq_gaps);
        w.Field("duplicate_deliveries", t.duplicate_deliveries);
        w.Field("reordered_deliveries", t.reordered_deliveries);
        w.EndObject();
        break;
      }
      case Scenario::kStorm: {
        const Stats& st = storm_.stats;
        w.Key("pre_storm").BeginObject();
        w.Field("messages_per_conversation", opt_.storm_messages);
        w.Field("acked", storm_.prep_acked);
        w.Field("failed", storm_.prep_failed);
        w.Key("seconds").Raw(Fmt(storm_.prep_s, 3));
        w.EndObject();
        w.Field("clients", storm_.clients);
        w.Field("resumed", storm_.ready);
        w.Field("welcomed", storm_.welcomed);
        w.Field("failed", storm_.failed);
        w.Field("timed_out", storm_.timed_out);
        w.Key("time_to_resume_done_ms").BeginObject();
        for (double p : {50.0, 99.0, 100.0}) {
          double ms = StormTimeMs(p);
          w.Key(std::string_view(p == 50 ? "p50" : p == 99 ? "p99" : "p100")).Raw(ms >= 0 ? Fmt(ms, 3) : "null");
        }
        w.EndObject();
        w.Key("connect_per_s").Raw(Fmt(StormConnectRate(), 1));
        w.Field("replayed", st.resume_replayed);
        w.Field("message_frames", st.delivered_total + st.duplicate_deliveries);
        LatJson(w, "connect_latency_us", st.connect_lat);
        LatJson(w, "resume_latency_us", st.resume_lat);
        CountsJson(w, "connect_errors", st.connect_errors);
        CountsJson(w, "errors", st.errors);
        w.Field("closed_during", storm_.closed_during);
        w.Key("loadgen_cpu_pct").Raw(Fmt(storm_.self_cpu_pct, 1));
        w.Key("seconds").Raw(Fmt(storm_.seconds, 3));
        break;
      }
      case Scenario::kQueries: {
        w.Key("prep").BeginObject();
        w.Field("messages_per_conversation", opt_.prep_messages);
        w.Field("acked", queries_.prep_acked);
        w.Field("failed", queries_.prep_failed);
        w.Key("seconds").Raw(Fmt(queries_.prep_s, 3));
        w.EndObject();
        for (int k = 0; k < 2; ++k) {
          const HttpPhase& hp = queries_.phase[k];
          const Stats& st = hp.stats;
          w.Key(std::string_view(kHttpKind[k])).BeginObject();
          w.Field("requests", st.http_ok[k]);
          w.Key("per_s").Raw(Fmt(hp.duration > 0 ? static_cast<double>(st.http_ok[k]) / hp.duration : 0, 1));
          w.Field("failed", st.http_failed[k]);
          w.Key("items_per_answer")
              .Raw(Fmt(st.http_ok[k] ? static_cast<double>(st.http_items[k]) / static_cast<double>(st.http_ok[k]) : 0, 2));
          LatJson(w, "latency_us", st.http_lat[k]);
          CountsJson(w, "errors", st.http_errors);
          w.Field("unfinished_clients", hp.unfinished);
          w.Key("server_cpu_pct").Raw(hp.server_cpu_pct >= 0 ? Fmt(hp.server_cpu_pct, 1) : "null");
          w.Key("server_cpu_wait_pct").Raw(hp.server_threads.empty() ? "null" : Fmt(SumWait(hp.server_threads), 1));
          w.EndObject();
        }
        break;
      }
      case Scenario::kIdle:
        w.Field("connections", ready_);
        w.Field("open_at_end_of_hold", open_at_end_);
        w.Key("bytes_per_connection").Raw(BytesPerConn() >= 0 ? Fmt(BytesPerConn(), 0) : "null");
        break;
    }
    w.Field("pings_sent", t.pings_sent);
    w.Field("pongs", t.pongs);
    w.Field("closed_unexpected", shared_.closed_unexpected.load());
    CountsJson(w, "close_reasons", t.close_reasons);
    w.Field("not_closed_cleanly", not_closed_cleanly_);
    CountsJson(w, "other_events", t.other_events);
    w.EndObject();

    w.Key("server").BeginObject();
    w.Field("pid", opt_.server_pid);
    w.Field("rss_before_kib", rss_before_);
    w.Field("rss_after_kib", rss_after_);
    if (sc == Scenario::kIdle) w.Field("rss_after_hold_kib", rss_after_hold_);
    w.Key("cpu_pct").Raw(server_cpu_pct_ >= 0 ? Fmt(server_cpu_pct_, 1) : "null");
    w.Key("cpu_wait_pct").Raw(server_threads_.empty() ? "null" : Fmt(SumWait(server_threads_), 1));
    ThreadsJson(w, "threads", server_threads_);
    w.EndObject();

    w.EndObject();
    return std::move(w).Take();
  }

  struct HttpPhase {
    double duration = 0;
    Stats stats;
    double server_cpu_pct = -1;
    std::vector<ThreadPct> server_threads;
    int unfinished = 0;
  };
  struct QueriesResult {
    double prep_s = 0;
    uint64_t prep_acked = 0;
    uint64_t prep_failed = 0;
    HttpPhase phase[2];
  };
  struct StormResult {
    double prep_s = 0;
    uint64_t prep_acked = 0;
    uint64_t prep_failed = 0;
    uint64_t prep_delivered = 0;
    int clients = 0;
    int welcomed = 0;
    int ready = 0;
    int failed = 0;
    bool timed_out = false;
    int64_t t0_ns = 0;
    int64_t last_welcome_ns = 0;
    std::vector<int64_t> ready_ns;  // sorted
    double seconds = 0;
    double server_cpu_pct = -1;
    double self_cpu_pct = 0;  // the generator's own, during the storm
    std::vector<ThreadPct> server_threads;
    Stats stats;
    int closed_during = 0;
  };

  const Options& opt_;
  std::string run_id_;
  Shared shared_;
  Common common_;
  std::vector<std::unique_ptr<Worker>> workers_;
  Machine machine_;
  std::string started_at_;
  std::string load_avg_at_start_;
  SetupReport setup_;
  Stats total_;
  Stats taken_;          // everything taken from the workers so far
  Stats connect_stats_;  // the initial connect, taken before any traffic
  bool have_connect_stats_ = false;
  std::vector<PhaseResult> phases_;
  StormResult storm_;
  QueriesResult queries_;
  int senders_ = 0;
  int group_senders_ = 0;
  int connect_attempted_ = 0;
  int welcomed_ = 0;
  int ready_ = 0;
  int connect_failed_ = 0;
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
  // Everything is reported; skip tearing down thousands of sockets and coroutine
  // frames, which only costs time and can hang on a server that stopped answering.
  std::_Exit(rc);
}
