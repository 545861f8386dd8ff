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
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <simdjson.h>

#include "base/clock.h"
#include "base/json_writer.h"
#include "histogram.h"

namespace sb::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// Errors are values here: a benchmark under load sees many of them and must count
// them, so exceptions would only be caught and turned back into counts.
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// A detached coroutine that throws is a bug in this tool; crash loudly instead of
// letting asio swallow it and leave a connection silently dead.
constexpr auto kRethrow = [](std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
};

// Reads an optional JSON field: true if present with the right type. (A cast to void
// does not silence simdjson's warn_unused_result under g++.)
template <typename R, typename T>
bool Get(R&& r, T& out) {
  return std::forward<R>(r).get(out) == simdjson::SUCCESS;
}

Clock::time_point AtNs(int64_t ns) {
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns)));
}
int64_t SecToNs(double s) { return static_cast<int64_t>(s * 1e9); }

// ------------------------------------------------------------------------------------
// Options

enum class Scenario { kSenders, kIdle };
enum class Receipts { kOff, kBatch, kEach };

struct Options {
  std::string url;
  std::string host;
  uint16_t port = 0;
  std::string ws_path = "/v1/ws";
  Scenario scenario = Scenario::kSenders;
  int pairs = 1;
  bool two_way = false;
  int window = 1;
  double rate = 0;  // > 0 selects open loop
  int max_inflight = 1000;
  double duration = 10;
  double warmup = 2;
  double drain = 5;
  int connections = 100;
  int users = 0;  // idle: 0 means one user per connection
  int server_pid = 0;
  int threads = 1;
  int setup_concurrency = 64;
  int connect_concurrency = 200;
  int content_bytes = 100;
  Receipts receipts = Receipts::kBatch;
  bool resume = true;
  std::string json_path;
  std::vector<std::pair<std::string, std::string>> tags;
  bool quiet = false;
  std::string password = "loadgen-password-0123456789";
};

constexpr const char* kHelp = R"(loadgen: Switchboard load generator (prints figures, asserts nothing)

usage: loadgen --url ws://127.0.0.1:PORT --scenario senders|idle [options]

common:
  --url URL              WebSocket URL of the server (loopback only); REST uses the same
                         host:port. Path defaults to /v1/ws.
  --scenario NAME        senders | idle
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

scenario senders (P pairs of users, one connection each; one sender per pair):
  --pairs P              number of pairs (default 1)
  --two-way              both users of a pair send (2P senders)
  --window W             closed loop: at most W unacked messages per sender (default 1;
                         W=1 measures latency, larger W throughput)
  --rate R               open loop instead: R messages/s in total, spread evenly over the
                         senders; latency counts from each message's scheduled time
  --max-inflight N       open loop: per-sender cap on unacked messages (default 1000);
                         at the cap the sender waits and the wait shows in the latency
  --duration S           measured seconds (default 10)
  --warmup S             seconds of traffic before measuring (default 2)
  --drain S              seconds to wait for outstanding acks/deliveries (default 5)
  --content-bytes N      message content size (default 100, at least 32)
  --receipts MODE        batch (cumulative DELIVERED receipt every 10 ms, default) |
                         each (one receipt per message) | off

scenario idle:
  --connections N        authenticated WebSocket connections to open (default 100)
  --users U              distinct users behind them (default N; each connection is its
                         own login/device either way)
  --duration S           how long to hold them idle after all are welcomed (default 10)

Latency: ack = send_message written -> message_ack read; delivery = send -> `message`
frame read at the recipient (send time carried in the content).
)";

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "loadgen: %s\n", msg.c_str());
  std::exit(2);
}

bool ParseUrl(Options& o) {
  std::string_view u = o.url;
  if (!u.starts_with("ws://")) return false;
  u.remove_prefix(5);
  auto slash = u.find('/');
  std::string_view hostport = u.substr(0, slash);
  if (slash != std::string_view::npos) o.ws_path = std::string(u.substr(slash));
  auto colon = hostport.rfind(':');
  if (colon == std::string_view::npos) return false;
  o.host = std::string(hostport.substr(0, colon));
  if (o.host.size() > 2 && o.host.front() == '[' && o.host.back() == ']')
    o.host = o.host.substr(1, o.host.size() - 2);
  auto ps = hostport.substr(colon + 1);
  unsigned p = 0;
  auto [ptr, ec] = std::from_chars(ps.data(), ps.data() + ps.size(), p);
  if (ec != std::errc() || ptr != ps.data() + ps.size() || p == 0 || p > 65535) return false;
  o.port = static_cast<uint16_t>(p);
  return true;
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  auto need = [&](int& i) -> std::string {
    if (i + 1 >= argc) Die(std::string("missing value for ") + argv[i]);
    return argv[++i];
  };
  auto num = [&](int& i) -> double {
    std::string a = argv[i];
    std::string v = need(i);
    char* end = nullptr;
    double d = std::strtod(v.c_str(), &end);
    if (end == v.c_str() || *end != '\0' || !std::isfinite(d) || d < 0) Die("bad number for " + a + ": " + v);
    return d;
  };
  auto integer = [&](int& i) -> int { return static_cast<int>(num(i)); };
  bool have_window = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kHelp, stdout);
      std::exit(0);
    } else if (a == "--url") {
      o.url = need(i);
    } else if (a == "--scenario") {
      std::string s = need(i);
      if (s == "senders") o.scenario = Scenario::kSenders;
      else if (s == "idle") o.scenario = Scenario::kIdle;
      else Die("unknown scenario " + s);
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
    } else if (a == "--no-resume") {
      o.resume = false;
    } else if (a == "--json") {
      o.json_path = need(i);
    } else if (a == "--tag") {
      std::string kv = need(i);
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) Die("--tag wants KEY=VALUE, got " + kv);
      o.tags.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
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
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(o.host, ec);
  // This tool only ever loads a server on this machine.
  if (ec || !addr.is_loopback()) Die("--url host must be a loopback address, got " + o.host);
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
  return o;
}

// ------------------------------------------------------------------------------------
// Small helpers

using CountMap = std::map<std::string, uint64_t, std::less<>>;

void Inc(CountMap& m, std::string_view k, uint64_t n = 1) {
  auto it = m.find(k);
  if (it == m.end()) it = m.emplace(std::string(k), 0).first;
  it->second += n;
}
void MergeInto(CountMap& dst, const CountMap& src) {
  for (const auto& [k, v] : src) Inc(dst, k, v);
}

// Keeps the largest value; several worker threads race to set it.
void StoreMax(std::atomic<int64_t>& a, int64_t v) {
  int64_t prev = a.load();
  while (prev < v && !a.compare_exchange_weak(prev, v)) {
  }
}

std::string RandomToken(size_t n) {
  static constexpr char kAlnum[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device rd;
  std::mt19937_64 g((uint64_t{rd()} << 32) ^ rd() ^ static_cast<uint64_t>(MonoNs()));
  std::string s(n, 'a');
  for (auto& c : s) c = kAlnum[g() % 36];
  return s;
}

std::string Fmt(double v, int prec = 1) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

// Human units for a nanosecond latency.
std::string FmtNs(double ns) {
  char b[64];
  if (ns < 1e3) std::snprintf(b, sizeof b, "%.0fns", ns);
  else if (ns < 1e6) std::snprintf(b, sizeof b, "%.1fus", ns / 1e3);
  else if (ns < 1e9) std::snprintf(b, sizeof b, "%.2fms", ns / 1e6);
  else std::snprintf(b, sizeof b, "%.3fs", ns / 1e9);
  return b;
}

std::string ReadFileStr(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// VmRSS of a process in KiB, or -1 when it cannot be read.
int64_t ReadRssKib(int pid) {
  if (pid <= 0) return -1;
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoll(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

// utime + stime of a process in seconds, or -1.
double ReadCpuSec(int pid) {
  if (pid <= 0) return -1;
  std::string s = ReadFileStr("/proc/" + std::to_string(pid) + "/stat");
  // The command name is parenthesised and may hold spaces: count fields after it.
  auto rp = s.rfind(')');
  if (rp == std::string::npos) return -1;
  std::istringstream in(s.substr(rp + 2));
  std::string field;
  double ut = 0, st = 0;
  // Fields 3.. follow ')'; utime is field 14, stime 15 (1-based, proc(5)).
  for (int i = 3; i <= 15 && (in >> field); ++i) {
    if (i == 14) ut = std::strtod(field.c_str(), nullptr);
    if (i == 15) st = std::strtod(field.c_str(), nullptr);
  }
  return (ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Per-thread time of a process, keyed "name/tid": seconds on a CPU and seconds spent
// runnable but waiting for one (schedstat). A server whose total CPU is well below the
// core count may have one saturated thread (a sequencer, the commit thread), or may
// be starved by other work on a shared machine; these two figures tell which.
struct ThreadTimes {
  double cpu_s = 0;
  double wait_s = 0;
};

std::map<std::string, ThreadTimes> ReadThreadTimes(int pid) {
  std::map<std::string, ThreadTimes> out;
  if (pid <= 0) return out;
  std::error_code ec;
  std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/task", ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::string tid = it->path().filename().string();
    std::string st = ReadFileStr(it->path().string() + "/stat");
    auto lp = st.find('('), rp = st.rfind(')');
    if (lp == std::string::npos || rp == std::string::npos || rp < lp) continue;
    ThreadTimes t;
    // schedstat: ns on a CPU, ns waiting on a run queue, timeslices.
    std::istringstream ss(ReadFileStr(it->path().string() + "/schedstat"));
    double run_ns = -1, wait_ns = -1;
    if (ss >> run_ns >> wait_ns) {
      t.cpu_s = run_ns / 1e9;
      t.wait_s = wait_ns / 1e9;
    } else {
      std::istringstream in(st.substr(rp + 2));
      std::string field;
      double ut = 0, sys = 0;
      for (int i = 3; i <= 15 && (in >> field); ++i) {
        if (i == 14) ut = std::strtod(field.c_str(), nullptr);
        if (i == 15) sys = std::strtod(field.c_str(), nullptr);
      }
      t.cpu_s = (ut + sys) / static_cast<double>(sysconf(_SC_CLK_TCK));
    }
    out[st.substr(lp + 1, rp - lp - 1) + "/" + tid] = t;
  }
  return out;
}

struct ThreadPct {
  std::string name;
  double cpu = 0;   // percent of one core
  double wait = 0;  // percent of the interval spent runnable but not running
};

// Per-thread percentages between two samples, busiest first; idle threads left out.
std::vector<ThreadPct> ThreadPcts(const std::map<std::string, ThreadTimes>& a,
                                  const std::map<std::string, ThreadTimes>& b, double seconds) {
  std::vector<ThreadPct> v;
  for (const auto& [k, e] : b) {
    auto it = a.find(k);
    ThreadTimes s = it == a.end() ? ThreadTimes{} : it->second;
    ThreadPct p{k, 100.0 * (e.cpu_s - s.cpu_s) / seconds, 100.0 * (e.wait_s - s.wait_s) / seconds};
    if (p.cpu >= 0.5 || p.wait >= 0.5) v.push_back(p);
  }
  std::sort(v.begin(), v.end(), [](const auto& x, const auto& y) { return x.cpu > y.cpu; });
  return v;
}

double SumWait(const std::vector<ThreadPct>& v) {
  double w = 0;
  for (const auto& t : v) w += t.wait;
  return w;
}

double SelfCpuSec() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return tv(ru.ru_utime) + tv(ru.ru_stime);
}

struct Machine {
  long nproc = 0;
  std::string cpu_model;
  int64_t mem_total_kib = 0;
  std::string kernel;
};

Machine DescribeMachine() {
  Machine m;
  m.nproc = sysconf(_SC_NPROCESSORS_ONLN);
  std::ifstream ci("/proc/cpuinfo");
  std::string line;
  while (std::getline(ci, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto c = line.find(':');
      if (c != std::string::npos) m.cpu_model = line.substr(line.find_first_not_of(" \t", c + 1));
      break;
    }
  }
  std::ifstream mi("/proc/meminfo");
  while (std::getline(mi, line)) {
    if (line.rfind("MemTotal:", 0) == 0) {
      m.mem_total_kib = std::strtoll(line.c_str() + 9, nullptr, 10);
      break;
    }
  }
  utsname u{};
  if (uname(&u) == 0) m.kernel = std::string(u.sysname) + " " + u.release + " " + u.machine;
  return m;
}

std::string IsoNow() {
  auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return b;
}

void RaiseFdLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}
int64_t FdLimit() {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  return static_cast<int64_t>(rl.rlim_cur);
}

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

  const Options& opt_;
  std::string run_id_;
  SetupReport report_;
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
struct Plan {
  int64_t start_ns = 0;         // senders begin
  int64_t window_start_ns = 0;  // measuring begins (after warm-up)
  int64_t window_end_ns = 0;    // measuring and sending end
  bool open_loop = false;
  int window = 1;
  int64_t period_ns = 0;  // open loop: per-sender interval
  int max_inflight = 1000;
  int senders = 0;
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
  std::atomic<uint64_t> errors{0};
  std::atomic<int64_t> last_welcome_ns{0};
  std::atomic<int64_t> last_ready_ns{0};
};

struct Stats {
  Histogram ack_lat;
  Histogram deliv_lat;
  Histogram connect_lat;
  Histogram resume_lat;
  uint64_t resume_replayed = 0;
  uint64_t sent_window = 0;
  uint64_t acked_window = 0;
  uint64_t delivered_window = 0;
  uint64_t sent_total = 0;
  uint64_t acked_total = 0;
  uint64_t delivered_total = 0;
  uint64_t failed_msgs = 0;        // answered with an error frame instead of an ack
  uint64_t duplicate_acks = 0;     // message_ack with duplicate:true
  uint64_t unknown_acks = 0;       // ack for nothing we have in flight
  uint64_t duplicate_deliveries = 0;  // a seq delivered twice to one connection
  uint64_t reordered_deliveries = 0;  // a seq below one already delivered
  uint64_t seq_gaps = 0;              // seqs never seen by a connection (end of run)
  uint64_t foreign_messages = 0;   // `message` frames not sent by this tool
  uint64_t receipts_sent = 0;
  uint64_t receipts_received = 0;
  uint64_t pings_sent = 0;
  uint64_t pongs = 0;
  uint64_t lost_on_close = 0;      // in flight when the connection closed under us
  uint64_t unparsable_frames = 0;
  CountMap errors;         // error frame code -> n
  std::map<std::string, std::string, std::less<>> error_samples;  // code -> first message
  CountMap close_reasons;  // unexpected close reason -> n
  CountMap connect_errors;
  CountMap other_events;

  void Merge(const Stats& o) {
    ack_lat.Merge(o.ack_lat);
    deliv_lat.Merge(o.deliv_lat);
    connect_lat.Merge(o.connect_lat);
    resume_lat.Merge(o.resume_lat);
    resume_replayed += o.resume_replayed;
    sent_window += o.sent_window;
    acked_window += o.acked_window;
    delivered_window += o.delivered_window;
    sent_total += o.sent_total;
    acked_total += o.acked_total;
    delivered_total += o.delivered_total;
    failed_msgs += o.failed_msgs;
    duplicate_acks += o.duplicate_acks;
    unknown_acks += o.unknown_acks;
    duplicate_deliveries += o.duplicate_deliveries;
    reordered_deliveries += o.reordered_deliveries;
    seq_gaps += o.seq_gaps;
    foreign_messages += o.foreign_messages;
    receipts_sent += o.receipts_sent;
    receipts_received += o.receipts_received;
    pings_sent += o.pings_sent;
    pongs += o.pongs;
    lost_on_close += o.lost_on_close;
    unparsable_frames += o.unparsable_frames;
    MergeInto(errors, o.errors);
    for (const auto& [k, v] : o.error_samples) error_samples.emplace(k, v);
    MergeInto(close_reasons, o.close_reasons);
    MergeInto(connect_errors, o.connect_errors);
    MergeInto(other_events, o.other_events);
  }
};

class Conn;

struct Worker {
  asio::io_context ctx{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
  std::thread thread;
  Stats stats;
  std::vector<std::shared_ptr<Conn>> conns;
  simdjson::dom::parser parser;
  Plan plan;
};

struct Common {
  const Options* opt = nullptr;
  Shared* shared = nullptr;
  tcp::endpoint endpoint;
  std::string hostport;
  std::string run_id;
  std::string filler;  // content padding
};

// Every seq one connection saw in one conversation, from its own acks and from
// deliveries. A sender never receives its own messages as `message` frames, so only the
// union tells a real gap from "that one was mine", and only at the end of the run, since
// an ack and a delivery may arrive in either order.
struct ConvSeen {
  std::vector<bool> seen;  // index: seq
  uint64_t last_delivered = 0;
};

class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(Worker& w, const Common& c, int idx, Account acct)
      : w_(w),
        c_(c),
        idx_(idx),
        acct_(std::move(acct)),
        ws_(w.ctx),
        ping_timer_(w.ctx),
        send_timer_(w.ctx),
        receipt_timer_(w.ctx) {
    cmid_prefix_ = "lg" + c_.run_id + "-" + std::to_string(idx_) + "-";
  }

  void MakeSender(std::string conv_id, int sender_index) {
    sends_ = true;
    conv_id_ = std::move(conv_id);
    sender_index_ = sender_index;
  }

  // Connect, upgrade and wait for `welcome`; then keep reading in the background.
  asio::awaitable<void> Open() {
    auto self = shared_from_this();
    int64_t t0 = MonoNs();
    std::string err = co_await Handshake();
    if (!err.empty()) {
      Inc(w_.stats.connect_errors, err);
      c_.shared->connect_failed.fetch_add(1);
      beast::error_code ignored;
      beast::get_lowest_layer(ws_).socket().close(ignored);
      closed_ = true;
      co_return;
    }
    int64_t t1 = MonoNs();
    w_.stats.connect_lat.RecordSigned(t1 - t0);
    c_.shared->welcomed.fetch_add(1);
    StoreMax(c_.shared->last_welcome_ns, t1);
    if (c_.opt->resume) {
      err = co_await Resume();
      if (!err.empty()) {
        Inc(w_.stats.connect_errors, err);
        c_.shared->connect_failed.fetch_add(1);
        beast::error_code ignored;
        beast::get_lowest_layer(ws_).socket().close(ignored);
        closed_ = true;
        co_return;
      }
    }
    int64_t t2 = MonoNs();
    if (c_.opt->resume) w_.stats.resume_lat.RecordSigned(t2 - t1);
    c_.shared->open.fetch_add(1);
    c_.shared->ready.fetch_add(1);
    StoreMax(c_.shared->last_ready_ns, t2);
    asio::co_spawn(w_.ctx, ReadLoop(self), kRethrow);
    asio::co_spawn(w_.ctx, PingLoop(self), kRethrow);
  }

  void StartSending() {
    if (!sends_ || closed_) return;
    const Plan& p = w_.plan;
    if (p.open_loop) {
      // Spread the senders' phases over one period so the aggregate rate is smooth
      // rather than a burst of every sender at the same instant.
      next_sched_ns_ = p.start_ns + p.period_ns * sender_index_ / std::max(1, p.senders);
      ArmOpenLoop();
    } else {
      auto self = shared_from_this();
      send_timer_.expires_at(AtNs(p.start_ns));
      send_timer_.async_wait([self](beast::error_code ec) {
        if (!ec) self->Refill();
      });
    }
  }

  void Close() {
    if (closed_ || closing_) return;
    closing_ = true;
    CancelTimers();
    asio::co_spawn(
        w_.ctx,
        [self = shared_from_this()]() -> asio::awaitable<void> {
          auto [ec] = co_await self->ws_.async_close(websocket::close_code::normal, kTuple);
          if (ec) {
            beast::error_code ignored;
            beast::get_lowest_layer(self->ws_).socket().close(ignored);
          }
        },
        kRethrow);
  }

  // Open-loop messages that were due before the end but never sent (the sender was at
  // its in-flight cap). Call only after the worker thread stopped.
  uint64_t UnsentScheduled() const {
    const Plan& p = w_.plan;
    if (!sends_ || !p.open_loop || next_sched_ns_ >= p.window_end_ns || p.period_ns <= 0) return 0;
    return static_cast<uint64_t>((p.window_end_ns - next_sched_ns_ + p.period_ns - 1) / p.period_ns);
  }
  size_t Inflight() const { return inflight_.size(); }

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
    auto& sock = beast::get_lowest_layer(ws_);
    sock.expires_after(std::chrono::seconds(30));
    auto [cec] = co_await sock.async_connect(c_.endpoint, kTuple);
    if (cec) co_return "connect: " + cec.message();
    beast::error_code ignored;
    sock.socket().set_option(tcp::no_delay(true), ignored);
    // Beast's websocket timeouts take over from here (the tcp_stream's must be off).
    sock.expires_never();
    websocket::stream_base::timeout to = websocket::stream_base::timeout::suggested(beast::role_type::client);
    to.handshake_timeout = std::chrono::seconds(30);
    ws_.set_option(to);
    std::string auth = "Bearer " + acct_.token;
    ws_.set_option(websocket::stream_base::decorator([auth](websocket::request_type& req) {
      req.set(http::field::authorization, auth);
      req.set(http::field::user_agent, "switchboard-loadgen");
    }));
    // Client frames must be masked, but the mask only guards naive proxies; a fast
    // PRNG keeps the client's CPU for sending rather than for ChaCha.
    ws_.secure_prng(false);
    ws_.read_message_max(1 << 20);
    ws_.auto_fragment(false);
    ws_.text(true);
    websocket::response_type res;
    auto [hec] = co_await ws_.async_handshake(res, c_.hostport, c_.opt->ws_path, kTuple);
    if (hec) {
      if (res.result_int() != 0 && res.result_int() != 101) co_return "upgrade: HTTP " + std::to_string(res.result_int());
      co_return "handshake: " + hec.message();
    }
    // The server speaks first; give it a bounded time to do so.
    ArmWatchdog();
    auto [rec, n] = co_await ws_.async_read(rbuf_, kTuple);
    (void)n;
    bool fired = DisarmWatchdog();
    if (rec) co_return fired ? std::string("no welcome within 30 s") : "read welcome: " + rec.message();
    auto d = rbuf_.cdata();
    std::string_view frame(static_cast<const char*>(d.data()), d.size());
    simdjson::dom::element doc;
    std::string_view ev;
    if (w_.parser.parse(frame.data(), frame.size()).get(doc) || doc["event"].get_string().get(ev)) {
      rbuf_.consume(rbuf_.size());
      co_return "first frame unparsable";
    }
    if (ev != "welcome") {
      std::string what = "first frame was " + std::string(ev);
      std::string_view code;
      if (ev == "error" && doc["code"].get_string().get(code) == simdjson::SUCCESS) what += " " + std::string(code);
      rbuf_.consume(rbuf_.size());
      co_return what;
    }
    int64_t hb = 0;
    if (doc["heartbeat_interval_ms"].get_int64().get(hb) == simdjson::SUCCESS && hb > 0) heartbeat_ms_ = hb;
    rbuf_.consume(rbuf_.size());
    co_return "";
  }

  // A client resumes right after `welcome`: the server holds live messages for a
  // connection that has said nothing yet (up to 1 s), so a silent receiver would
  // measure that hold instead of delivery. Fresh users have nothing to replay, but any
  // replayed message is handled like a live one.
  asio::awaitable<std::string> Resume() {
    ArmWatchdog();
    std::string f = R"({"event":"resume","cursors":{}})";
    auto [wec, wn] = co_await ws_.async_write(asio::buffer(f), kTuple);
    (void)wn;
    if (wec) {
      DisarmWatchdog();
      co_return "write resume: " + wec.message();
    }
    for (;;) {
      auto [rec, n] = co_await ws_.async_read(rbuf_, kTuple);
      (void)n;
      if (rec) {
        bool fired = DisarmWatchdog();
        co_return fired ? std::string("no resume_done within 30 s") : "read resume_done: " + rec.message();
      }
      auto d = rbuf_.cdata();
      std::string_view frame(static_cast<const char*>(d.data()), d.size());
      simdjson::dom::element doc;
      std::string_view ev;
      if (w_.parser.parse(frame.data(), frame.size()).get(doc) || doc["event"].get_string().get(ev)) {
        ++w_.stats.unparsable_frames;
      } else if (ev == "resume_done") {
        uint64_t replayed = 0;
        if (Get(doc["replayed"].get_uint64(), replayed)) w_.stats.resume_replayed += replayed;
        rbuf_.consume(rbuf_.size());
        break;
      } else if (ev == "error") {
        std::string_view code = "(no code)";
        Get(doc["code"].get_string(), code);
        std::string what = "resume answered with error " + std::string(code);
        rbuf_.consume(rbuf_.size());
        DisarmWatchdog();
        co_return what;
      } else {
        OnFrame(frame);
      }
      rbuf_.consume(rbuf_.size());
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
      beast::get_lowest_layer(self->ws_).socket().cancel(ignored);
    });
  }
  // Returns whether the watchdog fired.
  bool DisarmWatchdog() {
    ++watchdog_gen_;
    ping_timer_.cancel();
    return watchdog_fired_;
  }

  static asio::awaitable<void> ReadLoop(std::shared_ptr<Conn> self) {
    for (;;) {
      auto [ec, n] = co_await self->ws_.async_read(self->rbuf_, kTuple);
      (void)n;
      if (ec) {
        self->OnClosed(ec);
        co_return;
      }
      auto d = self->rbuf_.cdata();
      self->OnFrame(std::string_view(static_cast<const char*>(d.data()), d.size()));
      self->rbuf_.consume(self->rbuf_.size());
    }
  }

  static asio::awaitable<void> PingLoop(std::shared_ptr<Conn> self) {
    while (!self->closed_ && !self->closing_) {
      self->ping_timer_.expires_after(std::chrono::milliseconds(self->heartbeat_ms_));
      auto [ec] = co_await self->ping_timer_.async_wait(kTuple);
      if (ec || self->closed_ || self->closing_) co_return;
      self->Send(R"({"event":"ping"})");
      ++self->w_.stats.pings_sent;
    }
  }

  void Send(std::string frame) {
    if (closed_) return;
    outq_.push_back(std::move(frame));
    if (!writing_) {
      writing_ = true;
      asio::co_spawn(w_.ctx, WritePump(shared_from_this()), kRethrow);
    }
  }

  static asio::awaitable<void> WritePump(std::shared_ptr<Conn> self) {
    // deque::push_back keeps references to existing elements valid, so the frame being
    // written stays put while new ones queue behind it.
    while (!self->outq_.empty() && !self->closed_) {
      auto [ec, n] = co_await self->ws_.async_write(asio::buffer(self->outq_.front()), kTuple);
      (void)n;
      if (ec) {
        // The read side sees the same failure and does the accounting.
        beast::error_code ignored;
        beast::get_lowest_layer(self->ws_).socket().cancel(ignored);
        break;
      }
      self->outq_.pop_front();
    }
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
      std::string why;
      if (ec == websocket::error::closed) {
        auto r = ws_.reason();
        why = "close " + std::to_string(r.code);
        if (!r.reason.empty()) why += " " + std::string(r.reason.data(), r.reason.size());
      } else {
        why = ec.message();
      }
      Inc(w_.stats.close_reasons, why);
    }
    // Whatever was in flight will never be acked on this connection. Under a close we
    // did not ask for it is lost: count it and release it from the run-wide total so
    // the drain does not wait for it. Our own closes come after the drain, where the
    // remainder is already reported as unacked at end.
    if (!closing_) {
      w_.stats.lost_on_close += inflight_.size();
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
    if (content.size() < want) content.append(c_.filler, 0, want - content.size());
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
    ++w_.stats.sent_total;
    if (p.InWindow(intended_ns)) ++w_.stats.sent_window;
    Send(std::move(f));
  }

  // Closed loop: top the window up, never above W unacked.
  void Refill() {
    const Plan& p = w_.plan;
    if (!sends_ || closed_ || closing_ || p.open_loop) return;
    if (MonoNs() < pause_until_ns_) return;
    while (static_cast<int>(inflight_.size()) < p.window) {
      int64_t now = MonoNs();
      if (now >= p.window_end_ns) return;
      SendOne(now);
    }
  }

  // Open loop: send everything that is due, then sleep until the next due time.
  void OpenLoopTick() {
    const Plan& p = w_.plan;
    if (!sends_ || closed_ || closing_) return;
    blocked_ = false;
    int64_t now = MonoNs();
    while (next_sched_ns_ <= now && next_sched_ns_ < p.window_end_ns) {
      if (static_cast<int>(inflight_.size()) >= p.max_inflight || now < pause_until_ns_) {
        blocked_ = true;  // an ack (or the pause timer) resumes us
        if (now < pause_until_ns_) ArmAt(pause_until_ns_);
        return;
      }
      SendOne(next_sched_ns_);
      next_sched_ns_ += p.period_ns;
    }
    if (next_sched_ns_ < p.window_end_ns) ArmAt(next_sched_ns_);
  }

  void ArmOpenLoop() { ArmAt(next_sched_ns_); }

  void ArmAt(int64_t ns) {
    auto self = shared_from_this();
    send_timer_.expires_at(AtNs(ns));
    send_timer_.async_wait([self](beast::error_code ec) {
      if (ec) return;
      if (self->w_.plan.open_loop) self->OnOpenLoopTimer();
      else self->Refill();
    });
  }
  void OnOpenLoopTimer() { OpenLoopTick(); }

  // After a reply frees a slot, resume whichever loop we run.
  void AfterReply() {
    if (w_.plan.open_loop) {
      if (blocked_ && MonoNs() >= pause_until_ns_) OpenLoopTick();
    } else {
      Refill();
    }
  }

  // --- receiving -------------------------------------------------------------------

  void OnFrame(std::string_view frame) {
    simdjson::dom::element doc;
    std::string_view ev;
    if (w_.parser.parse(frame.data(), frame.size()).get(doc) || doc["event"].get_string().get(ev)) {
      ++w_.stats.unparsable_frames;
      return;
    }
    if (ev == "message_ack") OnAck(doc);
    else if (ev == "message") OnMessage(doc);
    else if (ev == "error") OnError(doc);
    else if (ev == "message_receipt") ++w_.stats.receipts_received;
    else if (ev == "pong") ++w_.stats.pongs;
    else Inc(w_.stats.other_events, ev);
  }

  ConvSeen& ConvView(std::string_view conv) {
    auto it = conv_seen_.find(std::string(conv));
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

  void OnAck(const simdjson::dom::element& doc) {
    int64_t now = MonoNs();
    std::string_view cmid;
    std::optional<uint64_t> n;
    if (doc["client_msg_id"].get_string().get(cmid) == simdjson::SUCCESS) n = CounterOf(cmid);
    auto it = n ? inflight_.find(*n) : inflight_.end();
    if (it == inflight_.end()) {
      ++w_.stats.unknown_acks;
      return;
    }
    int64_t t0 = it->second;
    inflight_.erase(it);
    c_.shared->inflight.fetch_sub(1, std::memory_order_relaxed);
    c_.shared->acked.fetch_add(1, std::memory_order_relaxed);
    const Plan& p = w_.plan;
    ++w_.stats.acked_total;
    if (p.InWindow(now)) ++w_.stats.acked_window;
    if (p.InWindow(t0)) w_.stats.ack_lat.RecordSigned(now - t0);
    bool dup = false;
    if (doc["duplicate"].get_bool().get(dup) == simdjson::SUCCESS && dup) ++w_.stats.duplicate_acks;
    std::string_view conv;
    uint64_t seq = 0;
    if (Get(doc["conversation_id"].get_string(), conv) && Get(doc["seq"].get_uint64(), seq)) {
      MarkSeen(ConvView(conv), seq);
    }
    AfterReply();
  }

  void OnError(const simdjson::dom::element& doc) {
    std::string_view code = "(no code)";
    Get(doc["code"].get_string(), code);
    Inc(w_.stats.errors, code);
    if (w_.stats.error_samples.find(code) == w_.stats.error_samples.end()) {
      // One example per code makes a report actionable without a packet capture.
      std::string_view msg;
      Get(doc["message"].get_string(), msg);
      std::string sample(msg);
      std::string_view cmid;
      if (Get(doc["client_msg_id"].get_string(), cmid)) sample += " (client_msg_id " + std::string(cmid) + ")";
      w_.stats.error_samples.emplace(std::string(code), std::move(sample));
    }
    c_.shared->errors.fetch_add(1, std::memory_order_relaxed);
    std::string_view cmid;
    if (doc["client_msg_id"].get_string().get(cmid) != simdjson::SUCCESS) return;
    auto n = CounterOf(cmid);
    auto it = n ? inflight_.find(*n) : inflight_.end();
    if (it == inflight_.end()) return;
    inflight_.erase(it);
    c_.shared->inflight.fetch_sub(1, std::memory_order_relaxed);
    ++w_.stats.failed_msgs;
    // Resending at once into a rate limiter would spin; back off briefly, as a real
    // client would.
    if (code == "rate_limited" || code == "unavailable") {
      pause_until_ns_ = MonoNs() + 100'000'000;
      if (!w_.plan.open_loop) {
        ArmAt(pause_until_ns_);
        return;
      }
    }
    AfterReply();
  }

  void OnMessage(const simdjson::dom::element& doc) {
    int64_t now = MonoNs();
    std::string_view content, conv, mid;
    uint64_t seq = 0;
    if (doc["content"].get_string().get(content) || !content.starts_with("lg ")) {
      ++w_.stats.foreign_messages;
      return;
    }
    Get(doc["conversation_id"].get_string(), conv);
    Get(doc["message_id"].get_string(), mid);
    Get(doc["seq"].get_uint64(), seq);
    if (seq != 0) {
      ConvSeen& cs = ConvView(conv);
      if (MarkSeen(cs, seq)) {
        ++w_.stats.duplicate_deliveries;
        return;
      }
      if (seq < cs.last_delivered) ++w_.stats.reordered_deliveries;
      cs.last_delivered = std::max(cs.last_delivered, seq);
    }

    content.remove_prefix(3);
    int64_t t0 = 0;
    auto [p, ec] = std::from_chars(content.data(), content.data() + content.size(), t0);
    (void)p;
    c_.shared->delivered.fetch_add(1, std::memory_order_relaxed);
    ++w_.stats.delivered_total;
    const Plan& pl = w_.plan;
    if (pl.InWindow(now)) ++w_.stats.delivered_window;
    if (ec == std::errc() && pl.InWindow(t0)) w_.stats.deliv_lat.RecordSigned(now - t0);

    if (c_.opt->receipts == Receipts::kOff || conv.empty() || mid.empty() || seq == 0) return;
    auto& pend = pending_receipts_[std::string(conv)];
    pend.first = seq;
    pend.second = std::string(mid);
    if (c_.opt->receipts == Receipts::kEach) {
      FlushReceipts();
    } else if (!receipt_armed_) {
      receipt_armed_ = true;
      auto self = shared_from_this();
      receipt_timer_.expires_after(std::chrono::milliseconds(10));
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
      ++w_.stats.receipts_sent;
    }
    pending_receipts_.clear();
  }

  Worker& w_;
  const Common& c_;
  int idx_;
  Account acct_;
  websocket::stream<beast::tcp_stream> ws_;
  beast::flat_buffer rbuf_;
  std::deque<std::string> outq_;
  bool writing_ = false;
  bool closing_ = false;  // we started the close: not counted as unexpected
  bool closed_ = false;
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
  std::unordered_map<uint64_t, int64_t> inflight_;  // counter -> intended send time
  int64_t next_sched_ns_ = 0;
  int64_t pause_until_ns_ = 0;
  bool blocked_ = false;

  // recipient
  std::unordered_map<std::string, ConvSeen> conv_seen_;
  std::unordered_map<std::string, std::pair<uint64_t, std::string>> pending_receipts_;
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
    common_.hostport = (common_.endpoint.address().is_v6() ? "[" + o.host + "]" : o.host) + ":" + std::to_string(o.port);
    common_.run_id = run_id_;
    common_.filler.assign(static_cast<size_t>(std::max(o.content_bytes, 32)), 'x');
    for (int i = 0; i < o.threads; ++i) workers_.push_back(std::make_unique<Worker>());
  }

  int Run() {
    machine_ = DescribeMachine();
    started_at_ = IsoNow();
    if (opt_.scenario == Scenario::kSenders) RunSenders();
    else RunIdle();
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

  void StartWorkers() {
    for (auto& w : workers_) {
      w->guard.emplace(w->ctx.get_executor());
      Worker* wp = w.get();
      w->thread = std::thread([wp] { wp->ctx.run(); });
    }
  }

  void StopWorkers() {
    for (auto& w : workers_) {
      w->guard.reset();
      w->ctx.stop();
    }
    for (auto& w : workers_) {
      if (w->thread.joinable()) w->thread.join();
    }
  }

  // Opens every connection (bounded handshakes in flight) and waits for all to finish.
  void ConnectAll() {
    int total = 0;
    for (auto& w : workers_) total += static_cast<int>(w->conns.size());
    connect_attempted_ = total;
    int lanes_per_worker = std::max(1, opt_.connect_concurrency / static_cast<int>(workers_.size()));
    connect_start_ns_ = MonoNs();
    for (auto& w : workers_) {
      Worker* wp = w.get();
      auto next = std::make_shared<size_t>(0);
      int lanes = std::min<int>(lanes_per_worker, static_cast<int>(wp->conns.size()));
      for (int l = 0; l < lanes; ++l) {
        asio::co_spawn(
            wp->ctx,
            [wp, next]() -> asio::awaitable<void> {
              while (*next < wp->conns.size()) {
                auto c = wp->conns[(*next)++];
                co_await c->Open();
              }
            },
            kRethrow);
      }
    }
    int64_t deadline = MonoNs() + SecToNs(60 + total / 50.0);
    int64_t last_print = MonoNs();
    while (shared_.ready.load() + shared_.connect_failed.load() < total && MonoNs() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (MonoNs() - last_print > 2'000'000'000) {
        last_print = MonoNs();
        Progress("connecting: %d/%d ready, %d failed", shared_.ready.load(), total, shared_.connect_failed.load());
      }
    }
    connect_end_ns_ = shared_.last_welcome_ns.load();
    if (connect_end_ns_ < connect_start_ns_) connect_end_ns_ = MonoNs();
    ready_end_ns_ = shared_.last_ready_ns.load();
    if (ready_end_ns_ < connect_start_ns_) ready_end_ns_ = MonoNs();
    connect_timed_out_ = shared_.ready.load() + shared_.connect_failed.load() < total;
    Progress("connected: %d/%d ready, %d failed in %.2f s", shared_.ready.load(), total,
             shared_.connect_failed.load(), static_cast<double>(ready_end_ns_ - connect_start_ns_) / 1e9);
  }

  void CloseAll() {
    for (auto& w : workers_) {
      Worker* wp = w.get();
      asio::post(wp->ctx, [wp] {
        for (auto& c : wp->conns) c->Close();
      });
    }
    int64_t deadline = MonoNs() + 5'000'000'000;
    while (shared_.open.load() > 0 && MonoNs() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    not_closed_cleanly_ = shared_.open.load();
  }

  void RunSenders() {
    const int pairs = opt_.pairs;
    Progress("setup: %d users, %d direct conversations", 2 * pairs, pairs);
    Setup setup(opt_, run_id_);
    std::vector<int> login_users(2 * pairs);
    for (int i = 0; i < 2 * pairs; ++i) login_users[i] = i;
    auto accts = setup.Accounts(2 * pairs, login_users);
    std::vector<std::pair<int, int>> conv_pairs;
    for (int i = 0; i < pairs; ++i) conv_pairs.emplace_back(2 * i, 2 * i + 1);
    auto convs = setup.DirectConversations(accts, conv_pairs);
    setup_ = setup.report();
    PrintSetup();

    int senders = 0;
    int idx = 0;
    for (int i = 0; i < pairs; ++i) {
      if (convs[i].empty()) continue;  // setup failed for this pair; reported above
      auto& wa = *workers_[idx % workers_.size()];
      auto a = std::make_shared<Conn>(wa, common_, idx, accts[2 * i]);
      a->MakeSender(convs[i], senders++);
      wa.conns.push_back(a);
      ++idx;
      auto& wb = *workers_[idx % workers_.size()];
      auto b = std::make_shared<Conn>(wb, common_, idx, accts[2 * i + 1]);
      if (opt_.two_way) b->MakeSender(convs[i], senders++);
      wb.conns.push_back(b);
      ++idx;
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
    plan.open_loop = opt_.rate > 0;
    plan.window = opt_.window;
    plan.senders = senders;
    plan.period_ns = plan.open_loop ? static_cast<int64_t>(1e9 * senders / opt_.rate) : 0;
    plan.max_inflight = opt_.max_inflight;
    plan_ = plan;
    for (auto& w : workers_) {
      Worker* wp = w.get();
      asio::post(wp->ctx, [wp, plan] {
        wp->plan = plan;
        for (auto& c : wp->conns) c->StartSending();
      });
    }

    // Sample CPU at the window's edges so the figures describe the measured part only.
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

    // Drain: let outstanding acks and deliveries arrive so they count toward latency
    // (a message sent in the window but acked late is slow, not missing).
    int64_t drain_start = MonoNs();
    int64_t drain_deadline = drain_start + SecToNs(opt_.drain);
    while (MonoNs() < drain_deadline) {
      if (shared_.inflight.load() <= 0 && shared_.delivered.load() >= shared_.acked.load()) break;
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
        total_.seq_gaps += c->SeqGaps();
      }
    }
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
    for (auto& w : workers_) total_.Merge(w->stats);
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
    std::printf("\n");
    if (s.rate_limited_retries) std::printf("setup: %llu requests retried after 429\n", static_cast<unsigned long long>(s.rate_limited_retries));
    for (const auto& [k, v] : s.failures) std::printf("setup failure: %s x%llu\n", k.c_str(), static_cast<unsigned long long>(v));
    std::fflush(stdout);
  }

  static std::string CountsLine(const CountMap& m) {
    if (m.empty()) return "none";
    std::string s;
    for (const auto& [k, v] : m) {
      if (!s.empty()) s += ", ";
      s += k + "=" + std::to_string(v);
    }
    return s;
  }

  static std::string LatLine(const Histogram& h) {
    if (h.Count() == 0) return "n=0";
    return "n=" + std::to_string(h.Count()) + " mean=" + FmtNs(h.Mean()) +
           " p50=" + FmtNs(static_cast<double>(h.Percentile(50))) +
           " p90=" + FmtNs(static_cast<double>(h.Percentile(90))) +
           " p99=" + FmtNs(static_cast<double>(h.Percentile(99))) +
           " p99.9=" + FmtNs(static_cast<double>(h.Percentile(99.9))) + " max=" + FmtNs(static_cast<double>(h.Max()));
  }

  double ConnectSeconds() const { return static_cast<double>(connect_end_ns_ - connect_start_ns_) / 1e9; }
  double ConnectRate() const {
    double s = ConnectSeconds();
    return s > 0 ? shared_.welcomed.load() / s : 0;
  }

  void Report() {
    const Stats& t = total_;
    const double d = opt_.duration;
    std::printf("connect: %d/%d welcomed in %.2f s (%.0f conn/s), %d failed%s; handshake-to-welcome %s\n",
                shared_.welcomed.load(), connect_attempted_, ConnectSeconds(), ConnectRate(),
                shared_.connect_failed.load(), connect_timed_out_ ? " (timed out waiting)" : "",
                LatLine(t.connect_lat).c_str());
    if (opt_.resume) {
      std::printf("ready (resume_done): %d in %.2f s from the first connect; welcome-to-resume_done %s",
                  shared_.ready.load(), static_cast<double>(ready_end_ns_ - connect_start_ns_) / 1e9,
                  LatLine(t.resume_lat).c_str());
      if (t.resume_replayed) std::printf("; replayed %llu", static_cast<unsigned long long>(t.resume_replayed));
      std::printf("\n");
    }
    if (!t.connect_errors.empty()) std::printf("connect errors: %s\n", CountsLine(t.connect_errors).c_str());

    if (opt_.scenario == Scenario::kSenders) {
      std::printf("mode: %s, %d senders, %s\n", opt_.rate > 0 ? "open loop" : "closed loop", senders_,
                  opt_.rate > 0 ? ("target " + Fmt(opt_.rate, 0) + " msg/s").c_str()
                                : ("window " + std::to_string(opt_.window)).c_str());
      std::printf("throughput (%.0f s window): sent %.0f/s, acked %.0f/s, delivered %.0f/s\n", d,
                  static_cast<double>(t.sent_window) / d, static_cast<double>(t.acked_window) / d,
                  static_cast<double>(t.delivered_window) / d);
      std::printf("ack latency:      %s\n", LatLine(t.ack_lat).c_str());
      std::printf("delivery latency: %s\n", LatLine(t.deliv_lat).c_str());
      std::printf("errors: %s\n", CountsLine(t.errors).c_str());
      for (const auto& [k, v] : t.error_samples) std::printf("  e.g. %s: %s\n", k.c_str(), v.c_str());
      std::printf("totals: sent %llu, acked %llu, failed %llu, delivered %llu, unacked at end %lld (drain %.2f s)",
                  static_cast<unsigned long long>(t.sent_total), static_cast<unsigned long long>(t.acked_total),
                  static_cast<unsigned long long>(t.failed_msgs), static_cast<unsigned long long>(t.delivered_total),
                  static_cast<long long>(unacked_at_end_), drain_s_);
      if (opt_.rate > 0) std::printf(", scheduled but unsent %llu", static_cast<unsigned long long>(unsent_scheduled_));
      std::printf("\n");
      std::printf("anomalies: duplicate acks %llu, unknown acks %llu, duplicate deliveries %llu, reordered %llu, seq gaps %llu, "
                  "lost on close %llu, unparsable frames %llu\n",
                  static_cast<unsigned long long>(t.duplicate_acks), static_cast<unsigned long long>(t.unknown_acks),
                  static_cast<unsigned long long>(t.duplicate_deliveries),
                  static_cast<unsigned long long>(t.reordered_deliveries), static_cast<unsigned long long>(t.seq_gaps),
                  static_cast<unsigned long long>(t.lost_on_close), static_cast<unsigned long long>(t.unparsable_frames));
      // Waiting for a CPU is what a shared machine does to a run; print it next to
      // the CPU figures so a starved run is not mistaken for a slow server.
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
                t.close_reasons.empty() ? "" : " — ", t.close_reasons.empty() ? "" : CountsLine(t.close_reasons).c_str());
    if (not_closed_cleanly_) std::printf("connections not closed within 5 s at the end: %d\n", not_closed_cleanly_);
    if (!t.other_events.empty()) std::printf("other events: %s\n", CountsLine(t.other_events).c_str());
    std::printf("%s\n", ResultLine().c_str());
    std::fflush(stdout);

    if (!opt_.json_path.empty()) {
      std::string j = Json();
      std::FILE* f = std::fopen(opt_.json_path.c_str(), "w");
      if (!f) Die("cannot write " + opt_.json_path);
      std::fwrite(j.data(), 1, j.size(), f);
      std::fputc('\n', f);
      std::fclose(f);
    }
  }

  double BytesPerConn() const {
    int n = shared_.ready.load();
    if (rss_before_ < 0 || rss_after_ < 0 || n == 0) return -1;
    return static_cast<double>(rss_after_ - rss_before_) * 1024.0 / n;
  }

  // One grep-able line for bench/run.sh's closing summary.
  std::string ResultLine() const {
    const Stats& t = total_;
    std::string s = "RESULT scenario=";
    if (opt_.scenario == Scenario::kSenders) {
      double d = opt_.duration;
      s += "senders senders=" + std::to_string(senders_);
      s += opt_.rate > 0 ? " rate=" + Fmt(opt_.rate, 0) : " window=" + std::to_string(opt_.window);
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

  static void LatJson(JsonWriter& w, std::string_view key, const Histogram& h) {
    auto us = [](double ns) { return Fmt(ns / 1e3, 3); };
    w.Key(key).BeginObject();
    w.Field("count", h.Count());
    w.Key("mean").Raw(us(h.Mean()));
    w.Key("min").Raw(us(static_cast<double>(h.Min())));
    w.Key("p50").Raw(us(static_cast<double>(h.Percentile(50))));
    w.Key("p90").Raw(us(static_cast<double>(h.Percentile(90))));
    w.Key("p99").Raw(us(static_cast<double>(h.Percentile(99))));
    w.Key("p999").Raw(us(static_cast<double>(h.Percentile(99.9))));
    w.Key("max").Raw(us(static_cast<double>(h.Max())));
    w.EndObject();
  }

  static void CountsJson(JsonWriter& w, std::string_view key, const CountMap& m) {
    w.Key(key).BeginObject();
    for (const auto& [k, v] : m) w.Field(k, v);
    w.EndObject();
  }

  std::string Json() const {
    const Stats& t = total_;
    const double d = opt_.duration;
    JsonWriter w(8192);
    w.BeginObject();
    w.Field("tool", "loadgen");
    w.Field("format_version", 1);
    w.Field("scenario", opt_.scenario == Scenario::kSenders ? "senders" : "idle");
    w.Field("started_at", started_at_);

    w.Key("parameters").BeginObject();
    w.Field("url", opt_.url);
    w.Field("threads", opt_.threads);
    if (opt_.scenario == Scenario::kSenders) {
      w.Field("pairs", opt_.pairs);
      w.Field("two_way", opt_.two_way);
      w.Field("senders", senders_);
      w.Field("mode", opt_.rate > 0 ? "open_loop" : "closed_loop");
      if (opt_.rate > 0) {
        w.Key("rate").Raw(Fmt(opt_.rate, 3));
        w.Field("max_inflight", opt_.max_inflight);
      } else {
        w.Field("window", opt_.window);
      }
      w.Key("warmup_s").Raw(Fmt(opt_.warmup, 3));
      w.Key("drain_s").Raw(Fmt(opt_.drain, 3));
      w.Field("content_bytes", opt_.content_bytes);
      w.Field("receipts", opt_.receipts == Receipts::kOff ? "off" : opt_.receipts == Receipts::kEach ? "each" : "batch");
    } else {
      w.Field("connections", opt_.connections);
      w.Field("users", opt_.users > 0 ? std::min(opt_.users, opt_.connections) : opt_.connections);
    }
    w.Key("duration_s").Raw(Fmt(d, 3));
    w.Field("setup_concurrency", opt_.setup_concurrency);
    w.Field("connect_concurrency", opt_.connect_concurrency);
    w.Field("server_pid", opt_.server_pid);
    w.EndObject();

    w.Key("tags").BeginObject();
    for (const auto& [k, v] : opt_.tags) w.Field(k, v);
    w.EndObject();

    w.Key("machine").BeginObject();
    w.Field("nproc", static_cast<int64_t>(machine_.nproc));
    w.Field("cpu_model", machine_.cpu_model);
    w.Field("mem_total_kib", machine_.mem_total_kib);
    w.Field("kernel", machine_.kernel);
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
    w.Field("rate_limited_retries", setup_.rate_limited_retries);
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
    w.Field("resume", opt_.resume);
    w.Field("ready", shared_.ready.load());
    w.Key("ready_seconds").Raw(Fmt(static_cast<double>(ready_end_ns_ - connect_start_ns_) / 1e9, 3));
    LatJson(w, "resume_latency_us", t.resume_lat);
    w.Field("resume_replayed", t.resume_replayed);
    CountsJson(w, "errors", t.connect_errors);
    w.EndObject();

    w.Key("results").BeginObject();
    if (opt_.scenario == Scenario::kSenders) {
      w.Field("sent", t.sent_window);
      w.Key("sent_per_s").Raw(Fmt(static_cast<double>(t.sent_window) / d, 1));
      w.Field("acked", t.acked_window);
      w.Key("acked_per_s").Raw(Fmt(static_cast<double>(t.acked_window) / d, 1));
      w.Field("delivered", t.delivered_window);
      w.Key("delivered_per_s").Raw(Fmt(static_cast<double>(t.delivered_window) / d, 1));
      LatJson(w, "ack_latency_us", t.ack_lat);
      LatJson(w, "delivery_latency_us", t.deliv_lat);
      CountsJson(w, "errors", t.errors);
      w.Key("error_samples").BeginObject();
      for (const auto& [k, v] : t.error_samples) w.Field(k, v);
      w.EndObject();
      w.Key("totals").BeginObject();
      w.Field("sent", t.sent_total);
      w.Field("acked", t.acked_total);
      w.Field("failed", t.failed_msgs);
      w.Field("delivered", t.delivered_total);
      w.Field("unacked_at_end", unacked_at_end_);
      w.Field("unsent_scheduled", unsent_scheduled_);
      w.Key("drain_s").Raw(Fmt(drain_s_, 3));
      w.EndObject();
      w.Key("anomalies").BeginObject();
      w.Field("duplicate_acks", t.duplicate_acks);
      w.Field("unknown_acks", t.unknown_acks);
      w.Field("duplicate_deliveries", t.duplicate_deliveries);
      w.Field("reordered_deliveries", t.reordered_deliveries);
      w.Field("seq_gaps", t.seq_gaps);
      w.Field("foreign_messages", t.foreign_messages);
      w.Field("lost_on_close", t.lost_on_close);
      w.Field("unparsable_frames", t.unparsable_frames);
      w.EndObject();
      w.Field("receipts_sent", t.receipts_sent);
      w.Field("receipts_received", t.receipts_received);
      w.Key("loadgen_cpu_pct").Raw(Fmt(self_cpu_pct_, 1));
      w.Key("loadgen_cpu_wait_pct").Raw(Fmt(SumWait(self_threads_), 1));
    } else {
      w.Field("connections", shared_.ready.load());
      w.Field("open_at_end_of_hold", open_at_end_);
      w.Key("bytes_per_connection").Raw(BytesPerConn() >= 0 ? Fmt(BytesPerConn(), 0) : "null");
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
    if (opt_.scenario == Scenario::kIdle) w.Field("rss_after_hold_kib", rss_after_hold_);
    w.Key("cpu_pct").Raw(server_cpu_pct_ >= 0 ? Fmt(server_cpu_pct_, 1) : "null");
    w.Key("cpu_wait_pct").Raw(server_threads_.empty() ? "null" : Fmt(SumWait(server_threads_), 1));
    w.Key("threads").BeginObject();
    for (const auto& t : server_threads_) {
      w.Key(t.name).BeginObject();
      w.Key("cpu_pct").Raw(Fmt(t.cpu, 1));
      w.Key("wait_pct").Raw(Fmt(t.wait, 1));
      w.EndObject();
    }
    w.EndObject();
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
  Plan plan_;
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
  // Everything is reported; skip tearing down thousands of sockets and coroutine
  // frames, which only costs time and can hang on a server that stopped answering.
  std::_Exit(rc);
}
