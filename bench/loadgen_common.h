// What bench/loadgen.cpp (WebSocket) and bench/xmpp_loadgen.cpp (XMPP) share: flag
// parsing helpers, small counters and formatters, the per-connection run statistics both
// report under the same names, and the worker-thread and connection-ramp plumbing. Each
// tool keeps its own protocol, scenarios and report; what is here is protocol-neutral.
//
// Plain Boost.Asio only (no Beast): the templates below take the tool's own Worker
// (io_context ctx, work guard, thread, conns) and Shared (atomic counters) types.
#pragma once

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio.hpp>

#include "base/clock.h"
#include "histogram.h"

namespace sb::bench {

// ------------------------------------------------------------------------------------
// Flags

// Ends the process with status 2 after "TOOL: MSG" on stderr (bad flags, unusable setup).
[[noreturn]] inline void DieAs(const char* tool, const std::string& msg) {
  std::fprintf(stderr, "%s: %s\n", tool, msg.c_str());
  std::exit(2);
}

// Reads flag values for a tool's ParseArgs; a missing or bad value ends the process.
struct FlagReader {
  int argc;
  char** argv;
  const char* tool;

  std::string Need(int& i) const {
    if (i + 1 >= argc) DieAs(tool, std::string("missing value for ") + argv[i]);
    return argv[++i];
  }
  // A finite number >= 0.
  double Num(int& i) const {
    std::string a = argv[i];
    std::string v = Need(i);
    char* end = nullptr;
    double d = std::strtod(v.c_str(), &end);
    if (end == v.c_str() || *end != '\0' || !std::isfinite(d) || d < 0) DieAs(tool, "bad number for " + a + ": " + v);
    return d;
  }
  int Int(int& i) const { return static_cast<int>(Num(i)); }
  // --tag KEY=VALUE
  std::pair<std::string, std::string> Tag(int& i) const {
    std::string kv = Need(i);
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) DieAs(tool, "--tag wants KEY=VALUE, got " + kv);
    return {kv.substr(0, eq), kv.substr(eq + 1)};
  }
};

// "HOST:PORT" (HOST may be a bracketed IPv6 literal) into host and port 1..65535.
inline bool ParseHostPort(std::string_view hostport, std::string& host, uint16_t& port) {
  auto colon = hostport.rfind(':');
  if (colon == std::string_view::npos) return false;
  host = std::string(hostport.substr(0, colon));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  auto ps = hostport.substr(colon + 1);
  unsigned p = 0;
  auto [ptr, ec] = std::from_chars(ps.data(), ps.data() + ps.size(), p);
  if (ec != std::errc() || ptr != ps.data() + ps.size() || p == 0 || p > 65535) return false;
  port = static_cast<uint16_t>(p);
  return true;
}

// These tools only ever load a server on this machine.
inline void RequireLoopback(const char* tool, const std::string& host) {
  boost::system::error_code ec;
  auto addr = boost::asio::ip::make_address(host, ec);
  if (ec || !addr.is_loopback()) DieAs(tool, "--url host must be a loopback address, got " + host);
}

// ------------------------------------------------------------------------------------
// Small helpers

// A detached coroutine that throws is a bug in these tools: crash loudly.
inline constexpr auto kRethrow = [](std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
};

inline std::chrono::steady_clock::time_point AtNs(int64_t ns) {
  using Clock = std::chrono::steady_clock;
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns)));
}
inline int64_t SecToNs(double s) { return static_cast<int64_t>(s * 1e9); }

using CountMap = std::map<std::string, uint64_t, std::less<>>;

inline void Inc(CountMap& m, std::string_view k, uint64_t n = 1) {
  auto it = m.find(k);
  if (it == m.end()) it = m.emplace(std::string(k), 0).first;
  it->second += n;
}
inline void MergeInto(CountMap& dst, const CountMap& src) {
  for (const auto& [k, v] : src) Inc(dst, k, v);
}

// Keeps the largest value; several worker threads race to set it.
inline void StoreMax(std::atomic<int64_t>& a, int64_t v) {
  int64_t prev = a.load();
  while (prev < v && !a.compare_exchange_weak(prev, v)) {
  }
}

inline std::string RandomToken(size_t n) {
  static constexpr char kAlnum[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device rd;
  std::mt19937_64 g((uint64_t{rd()} << 32) ^ rd() ^ static_cast<uint64_t>(MonoNs()));
  std::string s(n, 'a');
  for (auto& c : s) c = kAlnum[g() % 36];
  return s;
}

inline std::string Fmt(double v, int prec = 1) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

// Human units for a nanosecond latency.
inline std::string FmtNs(double ns) {
  char b[64];
  if (ns < 1e3) std::snprintf(b, sizeof b, "%.0fns", ns);
  else if (ns < 1e6) std::snprintf(b, sizeof b, "%.1fus", ns / 1e3);
  else if (ns < 1e9) std::snprintf(b, sizeof b, "%.2fms", ns / 1e6);
  else std::snprintf(b, sizeof b, "%.3fs", ns / 1e9);
  return b;
}

// ------------------------------------------------------------------------------------
// Run statistics: what one worker thread counts about its connections, merged at the end.
// The field names are the report's and JSON's names in both tools.

struct ConnStats {
  Histogram ack_lat;
  Histogram deliv_lat;
  // Open loop: how late the generator sent each message after its scheduled time. The
  // latencies above count from the scheduled time, so this is the generator's share of
  // them (a starved generator sends late and reads late).
  Histogram send_lag;
  Histogram connect_lat;
  Histogram resume_lat;
  uint64_t sent_window = 0;
  uint64_t acked_window = 0;
  uint64_t delivered_window = 0;
  uint64_t sent_total = 0;
  uint64_t acked_total = 0;
  uint64_t delivered_total = 0;
  uint64_t failed_msgs = 0;           // answered with an error instead of an ack
  uint64_t duplicate_acks = 0;        // an ack that acknowledged nothing new
  uint64_t unknown_acks = 0;          // an ack for nothing in flight
  uint64_t duplicate_deliveries = 0;  // a sequence number delivered twice to one connection
  uint64_t reordered_deliveries = 0;  // one below one already delivered
  uint64_t seq_gaps = 0;              // never delivered (end of run)
  uint64_t foreign_messages = 0;      // messages not sent by this tool
  uint64_t receipts_sent = 0;
  uint64_t receipts_received = 0;
  uint64_t lost_on_close = 0;  // in flight when the connection closed under us
  uint64_t unparsable_frames = 0;
  CountMap errors;                                                // error code -> n
  std::map<std::string, std::string, std::less<>> error_samples;  // code -> first message
  CountMap close_reasons;                                         // unexpected close reason -> n
  CountMap connect_errors;
  CountMap other_events;

  void MergeConn(const ConnStats& o) {
    ack_lat.Merge(o.ack_lat);
    send_lag.Merge(o.send_lag);
    deliv_lat.Merge(o.deliv_lat);
    connect_lat.Merge(o.connect_lat);
    resume_lat.Merge(o.resume_lat);
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
    lost_on_close += o.lost_on_close;
    unparsable_frames += o.unparsable_frames;
    MergeInto(errors, o.errors);
    for (const auto& [k, v] : o.error_samples) error_samples.emplace(k, v);
    MergeInto(close_reasons, o.close_reasons);
    MergeInto(connect_errors, o.connect_errors);
    MergeInto(other_events, o.other_events);
  }
};

// ------------------------------------------------------------------------------------
// Worker threads and the connection ramp. Workers is a vector of unique_ptr<Worker>.

template <class Workers>
void StartWorkers(Workers& workers) {
  for (auto& w : workers) {
    w->guard.emplace(w->ctx.get_executor());
    auto* wp = w.get();
    w->thread = std::thread([wp] { wp->ctx.run(); });
  }
}

template <class Workers>
void StopWorkers(Workers& workers) {
  for (auto& w : workers) {
    w->guard.reset();
    w->ctx.stop();
  }
  for (auto& w : workers) {
    if (w->thread.joinable()) w->thread.join();
  }
}

struct ConnectRamp {
  int attempted = 0;
  int64_t start_ns = 0;
  int64_t end_ns = 0;        // the last welcome
  int64_t ready_end_ns = 0;  // the last ready
  bool timed_out = false;
};

// Opens every connection (at most `concurrency` handshakes in flight, spread over the
// workers) and waits for all to be ready or failed; `progress` gets the progress lines.
template <class Workers, class SharedT, class ProgressFn>
ConnectRamp ConnectAllConns(Workers& workers, SharedT& shared, int concurrency, ProgressFn&& progress) {
  ConnectRamp r;
  int total = 0;
  for (auto& w : workers) total += static_cast<int>(w->conns.size());
  r.attempted = total;
  int lanes_per_worker = std::max(1, concurrency / static_cast<int>(workers.size()));
  r.start_ns = MonoNs();
  for (auto& w : workers) {
    auto* wp = w.get();
    auto next = std::make_shared<size_t>(0);
    int lanes = std::min<int>(lanes_per_worker, static_cast<int>(wp->conns.size()));
    for (int l = 0; l < lanes; ++l) {
      boost::asio::co_spawn(
          wp->ctx,
          [wp, next]() -> boost::asio::awaitable<void> {
            while (*next < wp->conns.size()) {
              auto c = wp->conns[(*next)++];
              co_await c->Open();
            }
          },
          kRethrow);
    }
  }
  char line[160];
  int64_t deadline = MonoNs() + SecToNs(60 + total / 50.0);
  int64_t last_print = MonoNs();
  while (shared.ready.load() + shared.connect_failed.load() < total && MonoNs() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (MonoNs() - last_print > 2'000'000'000) {
      last_print = MonoNs();
      std::snprintf(line, sizeof line, "connecting: %d/%d ready, %d failed", shared.ready.load(), total,
                    shared.connect_failed.load());
      progress(line);
    }
  }
  r.end_ns = shared.last_welcome_ns.load();
  if (r.end_ns < r.start_ns) r.end_ns = MonoNs();
  r.ready_end_ns = shared.last_ready_ns.load();
  if (r.ready_end_ns < r.start_ns) r.ready_end_ns = MonoNs();
  r.timed_out = shared.ready.load() + shared.connect_failed.load() < total;
  std::snprintf(line, sizeof line, "connected: %d/%d ready, %d failed in %.2f s", shared.ready.load(), total,
                shared.connect_failed.load(), static_cast<double>(r.ready_end_ns - r.start_ns) / 1e9);
  progress(line);
  return r;
}

// Closes every connection on its own thread; waits up to 5 s. Returns how many stayed open.
template <class Workers, class SharedT>
int CloseAllConns(Workers& workers, SharedT& shared) {
  for (auto& w : workers) {
    auto* wp = w.get();
    boost::asio::post(wp->ctx, [wp] {
      for (auto& c : wp->conns) c->Close();
    });
  }
  int64_t deadline = MonoNs() + 5'000'000'000;
  while (shared.open.load() > 0 && MonoNs() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return shared.open.load();
}

}  // namespace sb::bench
