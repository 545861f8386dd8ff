// `switchboard check`: setup, the run (device threads plus server kills), the settle
// phase, the final history walk and the verdict. See tools/check/README.md.
#include "check/check.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/ids.h"
#include "base/json_writer.h"
#include "check/device.h"
#include "check/model.h"
#include "check/report.h"
#include "check/spawn.h"
#include "check/verify.h"
#include "sb_client.h"

namespace sb::check {

namespace {

using client::HttpResponse;
using client::Json;
using client::RestClient;

constexpr int kExitUsage = 2;

Clock::time_point g_start = Clock::now();
double SinceStart() { return std::chrono::duration<double>(Clock::now() - g_start).count(); }

void Usage(std::FILE* out) {
  std::fprintf(out,
      "Usage: switchboard check (--url http://HOST:PORT | --spawn) [options]\n"
      "\n"
      "Drives simulated devices through concurrent sends, random disconnects, reconnects\n"
      "with resume and (with --spawn) server kills, then reads every conversation's\n"
      "history and reports lost, duplicated, out-of-order messages, gaps and ack\n"
      "mismatches (docs/protocol.md, Guarantees). Exit 0: no violation; 1: some; 2: bad\n"
      "usage or setup failure. The last line is always\n"
      "  check: sent=N acked=N stored=N lost=N duplicated=N out_of_order=N gaps=N ack_mismatch=N\n"
      "\n"
      "Target (one of):\n"
      "  --url URL                 a running server, http://HOST:PORT or https://HOST:PORT\n"
      "                            (REST and WebSocket on that port); users are registered\n"
      "                            normally\n"
      "  --ca-file PEM             trust this CA instead of the system's, for an https://\n"
      "                            URL or a server spawned with --server-set tls.cert_file=...\n"
      "  --spawn                   start a server: temp data dir, one fixed free port on\n"
      "                            127.0.0.1, fast password hashing; restarted in place after\n"
      "                            each kill; stopped (SIGTERM) at the end\n"
      "  --server-bin PATH         server binary for --spawn (default: this binary)\n"
      "  --server-set KEY=VALUE    extra `--set` for the spawned server (repeatable),\n"
      "                            e.g. --server-set store.fsync=none\n"
      "  --keep-data               keep the spawned server's data dir and log (always kept\n"
      "                            when the run fails)\n"
      "\n"
      "Workload:\n"
      "  --clients N               users (default 10, at least 2)\n"
      "  --devices-per-client D    devices (sessions) per user (default 1); every device of a\n"
      "                            user must receive everything, its siblings' sends included\n"
      "  --groups G                group conversations besides the direct ring (default 2)\n"
      "  --group-size S            members per group, at most --clients (default 5)\n"
      "  --messages M              total sends, spread evenly over the devices (default 2000)\n"
      "  --rate R                  new sends per second per device (default 20)\n"
      "  --window W                unacked sends a device allows itself (default 16)\n"
      "  --disconnect-rate P       abrupt socket drops per second per device, a Poisson\n"
      "                            process (default 0.2; 0 disables)\n"
      "  --kills K                 SIGKILL the spawned server K times at random points of\n"
      "                            the run and restart it (default 0; needs --spawn)\n"
      "  --seed S                  seed for every random choice (default: random, printed)\n"
      "  --catch-up MODE           resume (default): `resume` after every (re)connect;\n"
      "                            history: catch up over REST instead (servers without\n"
      "                            resume; checks everything else the same way)\n"
      "  --resume-cursors WHOSE    device (default): `resume` carries the device's cursors;\n"
      "                            server: no cursors (`{}` or none), so the server's record\n"
      "                            of DELIVERED receipts decides; mixed: random per reconnect\n"
      "  --no-receipts             send no DELIVERED receipts\n"
      "  --backoff-cap S           reconnect backoff cap in seconds, full jitter (default 2)\n"
      "\n"
      "Limits and output:\n"
      "  --duration-limit S        safety cap on the sending phase, seconds (default 300);\n"
      "                            hitting it counts as an error\n"
      "  --settle-timeout S        how long devices may take to catch up at the end, seconds\n"
      "                            (default 30)\n"
      "  --json FILE               also write the counts, statistics and first violations\n"
      "  --inject-fault F          make the devices misbehave, to test the checker itself:\n"
      "                            drop-delivery (ignore ~1%% of live messages once, as if\n"
      "                            not sent: expect gaps and out_of_order), lose-message\n"
      "                            (never accept ~1%% of message ids: expect lost), drop-ack\n"
      "                            (ignore ~5%% of acks, forcing retries: expect a pass)\n"
      "  -v, --verbose             log connection events to stderr\n"
      "  -h, --help                this text\n"
      "\n"
      "Counts: lost = acked messages missing from history + (device, message) pairs a\n"
      "member device never received; duplicated = extra stored copies of a client_msg_id;\n"
      "out_of_order = new messages a device got after a higher seq; gaps = seqs missing\n"
      "from history, deliveries that jumped over seqs, and `truncated` conversations;\n"
      "ack_mismatch = acks of one client_msg_id (or history) disagreeing on seq/message_id.\n"
      "Also failing, on the line before: unacked sends, protocol errors (unexpected error\n"
      "frames, malformed frames, missing resume_done, ...), corrupt data. Receipt\n"
      "regressions are reported only.\n");
}

bool ParseInt(std::string_view s, int64_t lo, int64_t hi, int64_t* out) {
  std::string str(s);
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(str.c_str(), &end, 10);
  if (str.empty() || errno || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

bool ParseDouble(std::string_view s, double lo, double hi, double* out) {
  std::string str(s);
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(str.c_str(), &end);
  if (str.empty() || errno || *end || !(v >= lo && v <= hi)) return false;
  *out = v;
  return true;
}

// -1: go on; otherwise the exit code (help: 0, bad usage: 2).
int ParseArgs(int argc, char** argv, Options* o) {
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    std::string value;
    bool has_value = false;
    if (a.rfind("--", 0) == 0 && a.find('=') != std::string::npos) {
      value = a.substr(a.find('=') + 1);
      a = a.substr(0, a.find('='));
      has_value = true;
    }
    auto need = [&](std::string* v) {
      if (has_value) {
        *v = value;
        return true;
      }
      if (i + 1 >= argc) {
        std::fprintf(stderr, "switchboard check: %s needs a value\n", a.c_str());
        return false;
      }
      *v = argv[++i];
      return true;
    };
    auto bad = [&](const std::string& v) {
      std::fprintf(stderr, "switchboard check: bad value for %s: '%s'\n", a.c_str(), v.c_str());
      return kExitUsage;
    };
    std::string v;
    int64_t n = 0;
    if (a == "-h" || a == "--help") {
      Usage(stdout);
      return 0;
    } else if (a == "-v" || a == "--verbose") {
      o->verbose = true;
    } else if (a == "--spawn") {
      o->spawn = true;
    } else if (a == "--keep-data") {
      o->keep_data = true;
    } else if (a == "--no-receipts") {
      o->receipts = false;
    } else if (a == "--url") {
      if (!need(&o->url)) return kExitUsage;
    } else if (a == "--ca-file") {
      if (!need(&o->ca_file)) return kExitUsage;
    } else if (a == "--server-bin") {
      if (!need(&o->server_bin)) return kExitUsage;
    } else if (a == "--server-set") {
      if (!need(&v)) return kExitUsage;
      if (v.find('=') == std::string::npos) return bad(v);
      o->server_sets.push_back(v);
    } else if (a == "--json") {
      if (!need(&o->json_path)) return kExitUsage;
    } else if (a == "--inject-fault") {
      if (!need(&v)) return kExitUsage;
      if (v != "drop-delivery" && v != "lose-message" && v != "drop-ack") return bad(v);
      o->inject = v;
    } else if (a == "--resume-cursors") {
      if (!need(&v)) return kExitUsage;
      if (v != "device" && v != "server" && v != "mixed") return bad(v);
      o->resume_cursors = v;
    } else if (a == "--catch-up") {
      if (!need(&v)) return kExitUsage;
      if (v != "resume" && v != "history") return bad(v);
      o->use_resume = v == "resume";
    } else if (a == "--clients") {
      if (!need(&v) || !ParseInt(v, 2, 10000, &n)) return bad(v);
      o->clients = static_cast<int>(n);
    } else if (a == "--devices-per-client") {
      if (!need(&v) || !ParseInt(v, 1, 16, &n)) return bad(v);
      o->devices_per_client = static_cast<int>(n);
    } else if (a == "--groups") {
      if (!need(&v) || !ParseInt(v, 0, 10000, &n)) return bad(v);
      o->groups = static_cast<int>(n);
    } else if (a == "--group-size") {
      if (!need(&v) || !ParseInt(v, 2, 1000, &n)) return bad(v);
      o->group_size = static_cast<int>(n);
    } else if (a == "--messages") {
      if (!need(&v) || !ParseInt(v, 0, 100000000, &n)) return bad(v);
      o->messages = n;
    } else if (a == "--rate") {
      if (!need(&v) || !ParseDouble(v, 0.01, 100000, &o->rate)) return bad(v);
    } else if (a == "--window") {
      if (!need(&v) || !ParseInt(v, 1, 100000, &n)) return bad(v);
      o->window = static_cast<int>(n);
    } else if (a == "--disconnect-rate") {
      if (!need(&v) || !ParseDouble(v, 0, 1000, &o->disconnect_rate)) return bad(v);
    } else if (a == "--kills") {
      if (!need(&v) || !ParseInt(v, 0, 10000, &n)) return bad(v);
      o->kills = static_cast<int>(n);
    } else if (a == "--seed") {
      if (!need(&v)) return kExitUsage;
      std::string str = v;
      char* end = nullptr;
      errno = 0;
      unsigned long long s = std::strtoull(str.c_str(), &end, 10);
      if (str.empty() || errno || *end) return bad(v);
      o->seed = s;
      o->seed_given = true;
    } else if (a == "--duration-limit") {
      if (!need(&v) || !ParseDouble(v, 1, 1e7, &o->duration_limit_s)) return bad(v);
    } else if (a == "--settle-timeout") {
      if (!need(&v) || !ParseDouble(v, 1, 1e6, &o->settle_timeout_s)) return bad(v);
    } else if (a == "--backoff-cap") {
      if (!need(&v) || !ParseDouble(v, 0.01, 3600, &o->backoff_cap_s)) return bad(v);
    } else {
      std::fprintf(stderr, "switchboard check: unknown option '%s' (see --help)\n", a.c_str());
      return kExitUsage;
    }
  }
  if (o->spawn == !o->url.empty()) {
    std::fprintf(stderr, "switchboard check: give exactly one of --url and --spawn (see --help)\n");
    return kExitUsage;
  }
  if (o->kills > 0 && !o->spawn) {
    std::fprintf(stderr, "switchboard check: --kills needs --spawn (it kills the server it started)\n");
    return kExitUsage;
  }
  if (!o->spawn && (!o->server_bin.empty() || !o->server_sets.empty())) {
    std::fprintf(stderr, "switchboard check: --server-bin and --server-set need --spawn\n");
    return kExitUsage;
  }
  return -1;
}

// http://, https:// (TLS), ws://, wss://, or a bare HOST:PORT (plain HTTP).
bool ParseUrl(const std::string& url, Endpoint* ep) {
  auto parsed = client::ParseUrl(url.find("://") == std::string::npos ? "http://" + url : url);
  if (!parsed) return false;
  *ep = std::move(*parsed);
  return true;
}

// Runs fn(0..n-1) on a few threads: setup is REST calls that each wait on password
// hashing, so a little parallelism shortens it without crowding the server.
void ParallelFor(int n, int workers, const std::function<void(int)>& fn) {
  std::atomic<int> next{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < std::min(n, workers); ++w) {
    threads.emplace_back([&] {
      for (int i = next++; i < n; i = next++) fn(i);
    });
  }
  for (auto& t : threads) t.join();
}

bool ObserverLogin(const Endpoint& ep, const Layout& layout, UserInfo& u, std::string* err) {
  RestClient api(ep);
  HttpResponse r = api.Login(u.username, layout.password, u.observer_device);
  auto s = client::Session::FromResponse(r);
  if (!s) {
    *err = "POST /v1/sessions " + u.username + ": " + r.Describe();
    return false;
  }
  u.observer_token = s->access_token;
  return true;
}

// A REST call as the user's observer session, logging in again once on 401 (the
// access token may have expired during a long run).
HttpResponse AsObserver(const Endpoint& ep, const Layout& layout, UserInfo& u,
                        const std::function<HttpResponse(const std::string& token)>& call) {
  HttpResponse r = call(u.observer_token);
  if (r.status == 401) {
    std::string ignored;
    if (ObserverLogin(ep, layout, u, &ignored)) r = call(u.observer_token);
  }
  return r;
}

// last_seq of every conversation, or nullopt if any read failed.
std::optional<std::map<std::string, int64_t>> FetchLastSeqs(const Endpoint& ep, Layout& layout) {
  RestClient api(ep);
  std::map<std::string, int64_t> out;
  for (const ConvInfo& c : layout.convs) {
    HttpResponse r = AsObserver(ep, layout, layout.users[c.members[0]], [&](const std::string& tok) {
      return api.GetConversation(tok, c.id);
    });
    auto last = r.json()["last_seq"].Int();
    if (r.status != 200 || !last) return std::nullopt;
    out[c.id] = *last;
  }
  return out;
}

bool FetchHistory(const Endpoint& ep, Layout& layout, const ConvInfo& c, History* h, std::string* err) {
  RestClient api(ep);
  UserInfo& u = layout.users[c.members[0]];
  HttpResponse conv = AsObserver(ep, layout, u, [&](const std::string& tok) {
    return api.GetConversation(tok, c.id);
  });
  auto last = conv.json()["last_seq"].Int();
  if (conv.status != 200 || !last) {
    *err = "GET /v1/conversations/" + c.id + ": " + conv.Describe();
    return false;
  }
  h->last_seq = *last;
  h->messages.clear();
  int64_t after = 0;
  for (;;) {
    HttpResponse r = AsObserver(ep, layout, u, [&](const std::string& tok) {
      return api.History(tok, c.id, {.after_seq = after, .limit = 200});
    });
    if (r.status != 200) {
      *err = "GET history of " + c.id + " after " + std::to_string(after) + ": " + r.Describe();
      return false;
    }
    Json body = r.json();
    std::vector<Json> items = body["messages"].Items();
    for (const Json& m : items) {
      Stored s;
      auto seq = m["seq"].Int();
      auto id = m["message_id"].Str();
      auto cmid = m["client_msg_id"].Str();
      auto sender = m["sender_id"].Str();
      auto content = m["content"].Str();
      if (!seq || !id || !cmid || !sender || !content) {
        *err = "history of " + c.id + " holds a message without a field of the contract: " + m.Dump();
        return false;
      }
      s.seq = *seq;
      s.message_id = *id;
      s.client_msg_id = *cmid;
      s.sender_id = *sender;
      s.content = *content;
      h->messages.push_back(std::move(s));
      after = std::max(after, *seq);
    }
    if (items.empty() || !body["has_more"].Bool().value_or(false)) break;
    if (h->messages.size() > 100000000) break;  // a server that never says "no more"
  }
  return true;
}

struct KillEvent {
  double at_s = 0;
  uint64_t acked = 0;
  double restart_s = 0;
};

std::string StatsLine(const Stats& s) {
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "check: traffic: connects=%" PRIu64 " reconnects=%" PRIu64 " injected_disconnects=%" PRIu64
                " server_closes=%" PRIu64 " connect_failures=%" PRIu64 " resumes=%" PRIu64
                " replayed=%" PRIu64 " history_catchups=%" PRIu64 " retries=%" PRIu64
                " duplicate_acks=%" PRIu64 " rate_limited=%" PRIu64 " unavailable=%" PRIu64
                " ack_timeouts=%" PRIu64 " received=%" PRIu64 " redeliveries=%" PRIu64
                " token_renewals=%" PRIu64,
                s.connects.load(), s.reconnects.load(), s.injected_disconnects.load(), s.server_closes.load(),
                s.connect_failures.load(), s.resumes.load(), s.replayed.load(), s.history_catchups.load(),
                s.retries.load(), s.duplicate_acks.load(), s.rate_limited.load(), s.unavailable.load(),
                s.ack_timeouts.load(), s.messages_received.load(), s.redeliveries.load(),
                s.token_renewals.load());
  return buf;
}

void WriteJson(const std::string& path, const Options& o, const Endpoint& ep, const Layout& layout,
               const Stats& st, const Report& rep, const Totals& t, const std::vector<KillEvent>& kills,
               double seconds) {
  JsonWriter w(4096);
  w.BeginObject();
  w.Field("target", ep.Url());
  w.Field("spawned", o.spawn);
  w.Field("run_id", layout.run_id);
  w.Key("config").BeginObject();
  w.Field("clients", o.clients).Field("devices_per_client", o.devices_per_client);
  w.Field("groups", o.groups).Field("group_size", o.group_size);
  w.Field("messages", o.messages);
  w.Key("rate").Raw(std::to_string(o.rate));
  w.Field("window", o.window);
  w.Key("disconnect_rate").Raw(std::to_string(o.disconnect_rate));
  w.Field("kills", o.kills).Field("seed", static_cast<uint64_t>(o.seed));
  w.Field("catch_up", o.use_resume ? "resume" : "history").Field("receipts", o.receipts);
  w.Field("resume_cursors", o.resume_cursors);
  if (!o.inject.empty()) w.Field("inject_fault", o.inject);
  w.EndObject();
  w.Field("conversations", static_cast<int64_t>(layout.convs.size()));
  w.Key("counts").BeginObject();
  w.Field("sent", t.sent).Field("acked", t.acked).Field("stored", t.stored);
  for (int k = 0; k < static_cast<int>(Kind::kCount); ++k)
    w.Field(std::string_view(KindName(static_cast<Kind>(k))), rep.Count(static_cast<Kind>(k)));
  w.EndObject();
  w.Key("stats").BeginObject();
  w.Field("connects", st.connects.load()).Field("reconnects", st.reconnects.load());
  w.Field("injected_disconnects", st.injected_disconnects.load());
  w.Field("server_closes", st.server_closes.load()).Field("connect_failures", st.connect_failures.load());
  w.Field("resumes", st.resumes.load()).Field("replayed", st.replayed.load());
  w.Field("history_catchups", st.history_catchups.load()).Field("retries", st.retries.load());
  w.Field("duplicate_acks", st.duplicate_acks.load()).Field("rate_limited", st.rate_limited.load());
  w.Field("unavailable", st.unavailable.load()).Field("ack_timeouts", st.ack_timeouts.load());
  w.Field("received", st.messages_received.load()).Field("redeliveries", st.redeliveries.load());
  w.Field("receipts_sent", st.receipts_sent.load()).Field("receipts_received", st.receipts_received.load());
  w.Field("token_renewals", st.token_renewals.load());
  w.EndObject();
  w.Key("kills").BeginArray();
  for (const KillEvent& k : kills) {
    w.BeginObject().Field("at_ms", static_cast<int64_t>(k.at_s * 1000)).Field("acked", k.acked);
    w.Field("restart_ms", static_cast<int64_t>(k.restart_s * 1000)).EndObject();
  }
  w.EndArray();
  w.Key("violations").BeginArray();
  for (int k = 0; k < static_cast<int>(Kind::kCount); ++k) {
    for (const Violation& v : rep.Kept(static_cast<Kind>(k))) {
      w.BeginObject().Field("kind", KindName(v.kind));
      if (!v.conversation_id.empty()) w.Field("conversation_id", v.conversation_id);
      if (v.seq) w.Field("seq", v.seq);
      if (!v.device.empty()) w.Field("device", v.device);
      w.Field("detail", v.detail).Field("at_ms", static_cast<int64_t>(v.at_s * 1000)).EndObject();
    }
  }
  w.EndArray();
  w.Field("duration_ms", static_cast<int64_t>(seconds * 1000));
  w.Field("pass", !rep.Failed());
  w.EndObject();
  std::ofstream out(path, std::ios::trunc);
  out << w.str() << "\n";
  if (!out) std::fprintf(stderr, "switchboard check: could not write %s\n", path.c_str());
}

}  // namespace

int Main(int argc, char** argv) {
  g_start = Clock::now();
  const Clock::time_point t0 = g_start;
  auto total_s = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  Options opt;
  if (int rc = ParseArgs(argc, argv, &opt); rc >= 0) return rc;
  if (!opt.seed_given) opt.seed = sb::RandomId64() % 1000000000ULL;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  Report report(&SinceStart);
  Layout layout;
  layout.run_id = sb::RandomHex(4);
  layout.password = "chk-pw-" + sb::RandomHex(8);

  Endpoint ep;
  std::unique_ptr<SpawnedServer> server;
  if (opt.spawn) {
    server = std::make_unique<SpawnedServer>(opt.server_bin, opt.server_sets);
    server->set_keep_data(true);  // until the run is known to have passed
    if (!server->Start()) {
      std::fprintf(stderr, "switchboard check: could not start the server: %s\n", server->error().c_str());
      return kExitUsage;
    }
    ep.host = "127.0.0.1";
    ep.port = server->port();
    for (const auto& set : opt.server_sets)  // a spawned TLS server is spoken to over TLS
      if (set.rfind("tls.cert_file=", 0) == 0) ep.tls = client::TlsConfig{true, opt.ca_file, ""};
    std::printf("check: target %s (spawned %s, data dir %s)\n", ep.Url().c_str(),
                opt.server_bin.empty() ? "this binary" : opt.server_bin.c_str(), server->data_dir().c_str());
  } else {
    if (!ParseUrl(opt.url, &ep)) {
      std::fprintf(stderr, "switchboard check: --url must look like http(s)://HOST:PORT, got '%s'\n", opt.url.c_str());
      return kExitUsage;
    }
    ep.tls.ca_file = opt.ca_file;
    HttpResponse h = client::Http(ep, "GET", "/healthz");
    if (h.status != 200) {
      std::fprintf(stderr, "switchboard check: %s/healthz: %s\n", ep.Url().c_str(), h.Describe().c_str());
      return kExitUsage;
    }
    std::printf("check: target %s\n", ep.Url().c_str());
  }
  std::printf("check: seed %" PRIu64 " (repeat the same choices with --seed %" PRIu64 "), run id %s\n", opt.seed,
              opt.seed, layout.run_id.c_str());

  // ---- setup: users, observer sessions, conversations, device sessions -----------
  const int n = opt.clients;
  layout.users.resize(n);
  for (int i = 0; i < n; ++i) {
    layout.users[i].username = "chk" + layout.run_id + "u" + std::to_string(i);
    layout.users[i].observer_device = "chk-" + layout.run_id + "-u" + std::to_string(i) + "-observer";
  }
  std::mutex err_mu;
  std::string setup_error;
  auto fail = [&](std::string e) {
    std::lock_guard lock(err_mu);
    if (setup_error.empty()) setup_error = std::move(e);
  };
  ParallelFor(n, 4, [&](int i) {
    RestClient api(ep);
    UserInfo& u = layout.users[i];
    HttpResponse r = api.RegisterUser(u.username, layout.password);
    auto id = r.json()["user_id"].Str();
    if (r.status != 201 || !id) return fail("POST /v1/users " + u.username + ": " + r.Describe());
    u.user_id = *id;
    std::string err;
    if (!ObserverLogin(ep, layout, u, &err)) fail(err);
  });
  if (!setup_error.empty()) {
    std::fprintf(stderr, "switchboard check: setup failed: %s\n", setup_error.c_str());
    return kExitUsage;
  }

  std::mt19937_64 layout_rng(Mix64(opt.seed));
  std::vector<ConvInfo> plan;
  std::set<std::pair<int, int>> pairs;
  for (int i = 0; i < n; ++i) {
    int j = (i + 1) % n;
    auto p = std::minmax(i, j);
    if (pairs.insert(p).second) plan.push_back(ConvInfo{"", "direct", {i, j}});
  }
  const int gsize = std::min(opt.group_size, n);
  for (int g = 0; g < opt.groups; ++g) {
    std::vector<int> all(n);
    for (int i = 0; i < n; ++i) all[i] = i;
    std::shuffle(all.begin(), all.end(), layout_rng);
    all.resize(gsize);
    plan.push_back(ConvInfo{"", "group", all});
  }
  ParallelFor(static_cast<int>(plan.size()), 4, [&](int ci) {
    ConvInfo& c = plan[ci];
    RestClient api(ep);
    std::vector<std::string> others;
    for (size_t k = 1; k < c.members.size(); ++k) others.push_back(layout.users[c.members[k]].user_id);
    HttpResponse r = api.CreateConversation(layout.users[c.members[0]].observer_token, c.type, others,
                                            c.type == "group" ? std::optional<std::string_view>("check group")
                                                              : std::nullopt);
    auto id = r.json()["conversation_id"].Str();
    if ((r.status != 201 && r.status != 200) || !id)
      return fail("POST /v1/conversations (" + c.type + "): " + r.Describe());
    c.id = *id;
    std::set<std::string> want, got;
    for (int m : c.members) want.insert(layout.users[m].user_id);
    for (const Json& m : r.json()["member_ids"].Items()) got.insert(m.StrOr(""));
    if (want != got) fail("conversation " + c.id + " has members " + r.json()["member_ids"].Dump());
  });
  if (!setup_error.empty()) {
    std::fprintf(stderr, "switchboard check: setup failed: %s\n", setup_error.c_str());
    return kExitUsage;
  }
  layout.convs = std::move(plan);
  for (size_t ci = 0; ci < layout.convs.size(); ++ci) {
    layout.conv_index[layout.convs[ci].id] = static_cast<int>(ci);
    for (int m : layout.convs[ci].members) layout.users[m].convs.push_back(static_cast<int>(ci));
  }

  Shared sh;
  sh.opt = &opt;
  sh.ep = ep;
  sh.layout = &layout;
  sh.report = &report;

  const int ndev = n * opt.devices_per_client;
  std::vector<std::unique_ptr<Device>> devices;
  for (int u = 0; u < n; ++u)
    for (int s = 0; s < opt.devices_per_client; ++s)
      devices.push_back(std::make_unique<Device>(&sh, static_cast<int>(devices.size()), u, s));
  for (int d = 0; d < ndev; ++d)
    devices[d]->set_quota(static_cast<int>(opt.messages / ndev + (d < opt.messages % ndev ? 1 : 0)));
  ParallelFor(ndev, 4, [&](int d) {
    std::string err;
    if (!devices[d]->LogIn(&err)) fail(err);
  });
  if (!setup_error.empty()) {
    std::fprintf(stderr, "switchboard check: setup failed: %s\n", setup_error.c_str());
    return kExitUsage;
  }
  int directs = 0;
  for (const ConvInfo& c : layout.convs) directs += c.type == "direct";
  std::printf("check: setup: %d users x %d devices, %zu conversations (%d direct, %zu group of %d) in %.1f s\n",
              n, opt.devices_per_client, layout.convs.size(), directs, layout.convs.size() - directs, gsize,
              total_s());

  // ---- run --------------------------------------------------------------------------
  std::printf("check: run: %" PRId64 " sends at %.3g/s per device (window %d), disconnect rate %.3g/s, "
              "%d kills, catch-up by %s%s\n",
              opt.messages, opt.rate, opt.window, opt.disconnect_rate, opt.kills,
              opt.use_resume ? ("resume (" + opt.resume_cursors + " cursors)").c_str() : "REST history",
              opt.receipts ? "" : ", no receipts");
  if (!opt.inject.empty()) std::printf("check: injecting client-side fault '%s'\n", opt.inject.c_str());
  struct PlannedKill {
    uint64_t at_acked;
    Millis delay;
    Millis downtime;
  };
  std::vector<PlannedKill> planned;
  {
    std::mt19937_64 krng(Mix64(opt.seed ^ 0x6b696c6cULL));
    std::uniform_real_distribution<double> frac(0.1, 0.9);
    std::uniform_int_distribution<int> delay(0, 300), down(0, 500);
    for (int k = 0; k < opt.kills; ++k)
      planned.push_back({static_cast<uint64_t>(frac(krng) * static_cast<double>(opt.messages)),
                         Millis(delay(krng)), Millis(down(krng))});
    std::sort(planned.begin(), planned.end(), [](auto& a, auto& b) { return a.at_acked < b.at_acked; });
  }

  sh.start = Clock::now();
  g_start = sh.start;  // violation times are seconds into the run, like the progress lines
  std::vector<std::thread> threads;
  threads.reserve(devices.size());
  for (auto& d : devices) threads.emplace_back([dev = d.get()] { dev->Run(); });

  std::vector<KillEvent> kills;
  size_t next_kill = 0;
  std::optional<Clock::time_point> kill_at;
  auto last_progress = Clock::now();
  int fatal = 0;
  auto restart = [&](const char* why) {
    auto t0 = Clock::now();
    if (!server->Start()) {
      std::fprintf(stderr, "switchboard check: could not restart the server (%s): %s\n", why,
                   server->error().c_str());
      fatal = kExitUsage;
      return 0.0;
    }
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  while (!fatal) {
    std::this_thread::sleep_for(Millis(20));
    auto now = Clock::now();
    if (server && !server->CheckAlive()) {
      report.Add(Kind::kError, "server died on its own at t=" + std::to_string(sh.Elapsed()) + " s: " +
                                   server->error());
      std::printf("check: the server died on its own (%s); log tail:\n%s", server->error().c_str(),
                  server->LogTail(15).c_str());
      restart("after dying");
      continue;
    }
    if (next_kill < planned.size()) {
      if (!kill_at && sh.acked.load() >= planned[next_kill].at_acked) kill_at = now + planned[next_kill].delay;
      if (kill_at && now >= *kill_at) {
        KillEvent ev{sh.Elapsed(), sh.acked.load(), 0};
        server->Kill9();
        std::this_thread::sleep_for(planned[next_kill].downtime);
        ev.restart_s = restart("after a kill");
        kills.push_back(ev);
        std::printf("check: kill %zu/%zu: SIGKILL at %.1f s (acked %" PRIu64 "/%" PRId64 "), back after %.2f s\n",
                    next_kill + 1, planned.size(), ev.at_s, ev.acked, opt.messages,
                    std::chrono::duration<double>(planned[next_kill].downtime).count() + ev.restart_s);
        ++next_kill;
        kill_at.reset();
        continue;
      }
    }
    if (sh.done_sending.load() == ndev && next_kill == planned.size()) break;
    if (sh.Elapsed() > opt.duration_limit_s) {
      report.Add(Kind::kError, "--duration-limit of " + std::to_string(opt.duration_limit_s) +
                                   " s reached with " + std::to_string(sh.acked.load()) + " of " +
                                   std::to_string(opt.messages) + " sends acked");
      std::printf("check: duration limit reached; stopping the sends\n");
      break;
    }
    if (now - last_progress >= std::chrono::seconds(5)) {
      last_progress = now;
      std::printf("check: progress %.0f s: sent %" PRIu64 ", acked %" PRIu64 "/%" PRId64 ", reconnects %" PRIu64
                  ", errors %" PRIu64 "\n",
                  sh.Elapsed(), sh.sent.load(), sh.acked.load(), opt.messages, sh.stats.reconnects.load(),
                  report.Count(Kind::kError));
    }
  }
  const double send_s = sh.Elapsed();

  // ---- settle: every device reconnects, resumes and catches up with last_seq ------
  std::map<std::string, History> histories;
  Totals totals;
  if (!fatal) {
    std::printf("check: sending phase over at %.1f s (acked %" PRIu64 "/%" PRIu64 "); settling\n", send_s,
                sh.acked.load(), sh.sent.load());
    sh.phase.store(static_cast<int>(Phase::kSettle));
    const auto settle_deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                    std::chrono::duration<double>(opt.settle_timeout_s));
    std::map<std::string, int64_t> current;
    uint64_t gen = 0;
    bool settled = false;
    auto all_settled = [&](uint64_t g) {
      for (auto& d : devices)
        if (d->settled_gen() != g) return false;
      return true;
    };
    while (Clock::now() < settle_deadline) {
      if (server && !server->CheckAlive()) {
        report.Add(Kind::kError, "server died on its own while settling: " + server->error());
        restart("after dying");
        if (fatal) break;
      }
      auto t = FetchLastSeqs(ep, layout);
      if (!t) {
        std::this_thread::sleep_for(Millis(200));
        continue;
      }
      // Stable targets that every device has reached: nothing is in flight anymore.
      if (gen > 0 && *t == current) {
        settled = true;
        break;
      }
      current = *t;
      {
        std::lock_guard lock(sh.targets_mu);
        sh.targets = current;
      }
      gen = ++sh.targets_gen;
      while (Clock::now() < settle_deadline && !all_settled(gen)) std::this_thread::sleep_for(Millis(20));
    }
    if (settled) {
      std::printf("check: settled in %.1f s\n", sh.Elapsed() - send_s);
    } else {
      std::string behind;
      for (auto& d : devices)
        if (d->settled_gen() != gen) behind += " " + d->name();
      std::printf("check: not every device caught up within --settle-timeout %.0f s; behind:%s\n",
                  opt.settle_timeout_s, behind.empty() ? " (none: last_seq kept moving)" : behind.c_str());
    }
  }
  sh.phase.store(static_cast<int>(Phase::kStop));
  for (auto& t : threads) t.join();

  if (!fatal) {
    for (const ConvInfo& c : layout.convs) {
      History h;
      std::string err;
      bool ok = false;
      for (int attempt = 0; attempt < 5 && !(ok = FetchHistory(ep, layout, c, &h, &err)); ++attempt)
        std::this_thread::sleep_for(Millis(300));
      if (ok) {
        histories[c.id] = std::move(h);
      } else {
        report.Add(Kind::kError, c.id, 0, "", "could not read the final history: " + err);
      }
    }
    totals = Verify(layout, devices, histories, report);
  }

  // ---- verdict ------------------------------------------------------------------------
  std::printf("%s\n", StatsLine(sh.stats).c_str());
  std::printf("check: receipts: sent=%" PRIu64 " received=%" PRIu64 " regressions=%" PRIu64 "\n",
              sh.stats.receipts_sent.load(), sh.stats.receipts_received.load(), report.Count(Kind::kReceipt));
  for (int k = 0; k < static_cast<int>(Kind::kCount); ++k) {
    Kind kind = static_cast<Kind>(k);
    uint64_t count = report.Count(kind);
    if (count == 0) continue;
    auto kept = report.Kept(kind);
    std::printf("check: %s: %" PRIu64 "%s\n", KindName(kind), count,
                count > kept.size() ? (" (first " + std::to_string(kept.size()) + ")").c_str() : "");
    size_t shown = 0;
    for (const Violation& v : kept) {
      if (++shown > 10) break;
      std::string where;
      if (!v.conversation_id.empty()) where += " " + v.conversation_id;
      if (v.seq) where += " seq " + std::to_string(v.seq);
      if (!v.device.empty()) where += " device " + v.device;
      std::printf("  [%.1fs]%s: %s\n", v.at_s, where.c_str(), v.detail.c_str());
    }
  }
  const bool failed = report.Failed() || fatal;
  if (server) {
    int code = server->Stop();
    if (code != 0)
      std::printf("check: note: the server exited with %d on SIGTERM (expected 0)\n", code);
    server->set_keep_data(opt.keep_data || failed);
    if (opt.keep_data || failed) std::printf("check: server data and log kept in %s\n", server->data_dir().c_str());
  }
  if (!opt.json_path.empty())
    WriteJson(opt.json_path, opt, ep, layout, sh.stats, report, totals, kills, total_s());
  std::printf("check: unacked=%" PRIu64 " errors=%" PRIu64 " corrupt=%" PRIu64 " receipt_regressions=%" PRIu64
              " kills=%zu duration=%.1fs -> %s\n",
              report.Count(Kind::kUnacked), report.Count(Kind::kError), report.Count(Kind::kCorrupt),
              report.Count(Kind::kReceipt), kills.size(), total_s(), failed ? "FAIL" : "PASS");
  // The verdict line last, always in this exact shape: scripts and tests parse it.
  std::printf("check: sent=%" PRIu64 " acked=%" PRIu64 " stored=%" PRIu64 " lost=%" PRIu64 " duplicated=%" PRIu64
              " out_of_order=%" PRIu64 " gaps=%" PRIu64 " ack_mismatch=%" PRIu64 "\n",
              totals.sent, totals.acked, totals.stored, report.Count(Kind::kLost), report.Count(Kind::kDuplicated),
              report.Count(Kind::kOutOfOrder), report.Count(Kind::kGap), report.Count(Kind::kAckMismatch));
  if (fatal) return fatal;
  return failed ? 1 : 0;
}

}  // namespace sb::check
