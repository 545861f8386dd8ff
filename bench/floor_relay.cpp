// floor_relay: the least a chat server can do for the load generator's 1:1 scenario,
// as a reference for what this machine and the generator leave to a real server.
//
// It speaks just enough of docs/protocol.md for `loadgen --scenario senders` (sign
// up, log in, create direct conversations, the WebSocket upgrade, welcome, resume,
// send_message -> message_ack + message, message_receipt routed to the other member,
// ping) on one thread with one epoll set, and does nothing a server is for: no
// password hashing, no token check (the token names the user), no store, no fsync,
// no validation beyond what it needs to route. Every frame still crosses the kernel's
// loopback TCP and is parsed and built as JSON, so its CPU per message is the part of
// the floor that no server can avoid (docs/performance.md, "The floor without a
// server").
//
//   build/bench/floor_relay [--listen 127.0.0.1:0] [--burn-us N]
//   prints "listening PORT" on stdout; runs until SIGINT/SIGTERM.
//   --burn-us N: spin N microseconds of CPU per message sent, on a second thread
//   (a stand-in for a server's own work: what CPU per message the floor allows).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <simdjson.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "protocol/ws_codec.h"

namespace {

using sb::protocol::WsReader;

std::atomic<bool> g_stop{false};

int64_t ThreadCpuNs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A field's value, or nothing when it has another type (the relay routes; it does not
// validate).
template <class R, class T>
void Take(R&& r, T& out) {
  if (std::forward<R>(r).get(out) != simdjson::SUCCESS) out = T{};
}

struct Conn {
  uint64_t id = 0;
  int fd = -1;
  bool ws = false;
  bool dirty = false;
  bool closed = false;
  int user = -1;
  std::string in;
  std::string out;
  WsReader reader{1 << 16};
};

struct Conversation {
  int a = -1, b = -1;
  uint64_t seq = 0;
};

class Relay {
 public:
  Relay(int listen_fd, int64_t burn_us) : lfd_(listen_fd), burn_us_(burn_us) {}
  ~Relay() {
    {
      std::lock_guard lk(burn_mu_);
      burn_stop_ = true;
    }
    burn_cv_.notify_all();
    if (burner_.joinable()) burner_.join();
  }

  int Run() {
    ep_ = epoll_create1(0);
    Add(lfd_, nullptr);
    if (burn_us_ > 0) {
      done_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = &done_fd_;
      epoll_ctl(ep_, EPOLL_CTL_ADD, done_fd_, &ev);
      burner_ = std::thread([this] { Burn(); });
    }
    std::vector<epoll_event> evs(1024);
    char buf[65536];
    while (!g_stop.load()) {
      int n = epoll_wait(ep_, evs.data(), static_cast<int>(evs.size()), dirty_.empty() ? 100 : 1);
      for (int i = 0; i < n; ++i) {
        if (evs[i].data.ptr == &done_fd_) {
          TakeBurnt();
          continue;
        }
        Conn* c = static_cast<Conn*>(evs[i].data.ptr);
        if (c == nullptr) {
          Accept();
          continue;
        }
        if (c->closed) continue;
        for (;;) {
          ssize_t r = read(c->fd, buf, sizeof buf);
          if (r > 0) {
            c->in.append(buf, static_cast<size_t>(r));
            if (static_cast<size_t>(r) < sizeof buf) break;
            continue;
          }
          if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
          Close(c);
          break;
        }
        if (!c->closed) Consume(c);
      }
      // One write per connection per turn, whatever was queued for it.
      for (Conn* c : dirty_) {
        c->dirty = false;
        if (c->closed || c->out.empty()) continue;
        ssize_t w = write(c->fd, c->out.data(), c->out.size());
        if (w > 0) c->out.erase(0, static_cast<size_t>(w));
        // A reference relay: a full socket buffer keeps the rest for the next turn.
        if (!c->out.empty()) MarkDirty(c);
      }
      dirty_.swap(next_dirty_);
      next_dirty_.clear();
      for (Conn* c : dead_) delete c;
      dead_.clear();
    }
    return 0;
  }

 private:
  void Add(int fd, Conn* c) {
    epoll_event ev{};
    ev.events = c ? EPOLLIN | EPOLLET : EPOLLIN;
    ev.data.ptr = c;
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  }

  void Accept() {
    for (;;) {
      int fd = accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto* c = new Conn;
      c->id = ++next_id_;
      c->fd = fd;
      live_[c->id] = c;
      Add(fd, c);
    }
  }

  void Close(Conn* c) {
    if (c->closed) return;
    c->closed = true;
    close(c->fd);
    live_.erase(c->id);
    if (c->user >= 0) {
      auto& v = conns_of_[c->user];
      std::erase(v, c);
    }
    dead_.push_back(c);
  }

  void MarkDirty(Conn* c) {
    if (c->dirty) return;
    c->dirty = true;
    next_dirty_.push_back(c);
  }
  void Queue(Conn* c, std::string_view frame_json) {
    uint8_t h[sb::protocol::kWsMaxHeaderBytes];
    size_t hn = sb::protocol::WsFrameHeader(sb::protocol::kWsText, frame_json.size(), h);
    c->out.append(reinterpret_cast<const char*>(h), hn);
    c->out.append(frame_json);
    if (!c->dirty) {
      c->dirty = true;
      dirty_.push_back(c);
    }
  }

  void Consume(Conn* c) {
    if (!c->ws) {
      ConsumeHttp(c);
      if (!c->ws || c->closed) return;
    }
    size_t off = 0;
    while (off < c->in.size() && !c->closed) {
      size_t used = 0;
      WsReader::Event e = c->reader.Next(c->in.data() + off, c->in.size() - off, &used);
      if (e.kind == WsReader::Kind::kNeedMore) break;
      off += used;
      switch (e.kind) {
        case WsReader::Kind::kText: OnText(c, e.payload); break;
        case WsReader::Kind::kPing: {
          uint8_t h[sb::protocol::kWsMaxHeaderBytes];
          size_t hn = sb::protocol::WsFrameHeader(sb::protocol::kWsPong, e.payload.size(), h);
          c->out.append(reinterpret_cast<const char*>(h), hn);
          c->out.append(e.payload);
          MarkDirtyNow(c);
          break;
        }
        case WsReader::Kind::kClose:
        case WsReader::Kind::kFail: Close(c); break;
        default: break;
      }
    }
    if (!c->closed) c->in.erase(0, off);
  }

  void MarkDirtyNow(Conn* c) {
    if (!c->dirty) {
      c->dirty = true;
      dirty_.push_back(c);
    }
  }

  // --- HTTP: the three REST calls the generator's setup makes, and the upgrade ---------

  static std::string_view Header(std::string_view head, std::string_view name) {
    size_t p = 0;
    while ((p = head.find("\r\n", p)) != std::string_view::npos) {
      p += 2;
      if (head.size() - p > name.size() && strncasecmp(head.data() + p, name.data(), name.size()) == 0 &&
          head[p + name.size()] == ':') {
        size_t v = p + name.size() + 1;
        while (v < head.size() && head[v] == ' ') ++v;
        size_t e = head.find("\r\n", v);
        return head.substr(v, e == std::string_view::npos ? std::string_view::npos : e - v);
      }
    }
    return {};
  }

  void Answer(Conn* c, int status, std::string_view body) {
    const char* reason = status == 200 ? "OK" : status == 201 ? "Created" : status == 400 ? "Bad Request" : "Not Found";
    c->out += "HTTP/1.1 " + std::to_string(status) + " " + reason +
              "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
    c->out += body;
    MarkDirtyNow(c);
  }

  void ConsumeHttp(Conn* c) {
    for (;;) {
      size_t end = c->in.find("\r\n\r\n");
      if (end == std::string::npos) return;
      std::string_view head(c->in.data(), end);
      size_t len = 0;
      std::string_view cl = Header(head, "Content-Length");
      if (!cl.empty()) len = std::strtoul(std::string(cl).c_str(), nullptr, 10);
      if (c->in.size() < end + 4 + len) return;
      std::string body = c->in.substr(end + 4, len);
      std::string line(head.substr(0, head.find("\r\n")));
      int user = UserOfToken(Header(head, "Authorization"));
      if (line.starts_with("GET ") && !Header(head, "Upgrade").empty()) {
        std::string accept = sb::protocol::WsAcceptKey(Header(head, "Sec-WebSocket-Key"));
        c->in.erase(0, end + 4 + len);
        if (user < 0) {
          Answer(c, 400, R"({"code":"unauthorized"})");
          return;
        }
        c->out += "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
                  accept + "\r\n\r\n";
        c->ws = true;
        c->user = user;
        conns_of_[user].push_back(c);
        Queue(c, R"({"event":"welcome","heartbeat_interval_ms":20000})");
        return;
      }
      c->in.erase(0, end + 4 + len);
      HandleRest(c, line, user, body);
    }
  }

  int UserOfToken(std::string_view auth) const {
    constexpr std::string_view kPrefix = "Bearer tok.";
    if (!auth.starts_with(kPrefix)) return -1;
    int u = std::atoi(std::string(auth.substr(kPrefix.size())).c_str());
    return u >= 0 && static_cast<size_t>(u) < names_.size() ? u : -1;
  }

  void HandleRest(Conn* c, const std::string& line, int user, std::string& body) {
    body.reserve(body.size() + simdjson::SIMDJSON_PADDING);
    simdjson::ondemand::document doc;
    if (parser_.iterate(body.data(), body.size(), body.capacity()).get(doc)) return Answer(c, 400, "{}");
    if (line.starts_with("POST /v1/users ")) {
      std::string_view name;
      if (doc["username"].get_string().get(name)) return Answer(c, 400, "{}");
      int id = static_cast<int>(names_.size());
      names_.emplace_back(name);
      by_name_[std::string(name)] = id;
      conns_of_.emplace_back();
      return Answer(c, 201, R"({"user_id":"usr_)" + std::to_string(id) + R"("})");
    }
    if (line.starts_with("POST /v1/sessions ")) {
      std::string_view name;
      if (doc["username"].get_string().get(name)) return Answer(c, 400, "{}");
      auto it = by_name_.find(std::string(name));
      if (it == by_name_.end()) return Answer(c, 400, "{}");
      std::string id = std::to_string(it->second);
      return Answer(c, 200, R"({"access_token":"tok.)" + id + R"(","refresh_token":"r","expires_in":86400,"user_id":"usr_)" +
                                id + R"("})");
    }
    if (line.starts_with("POST /v1/conversations ") && user >= 0) {
      simdjson::ondemand::array members;
      if (doc["member_ids"].get_array().get(members)) return Answer(c, 400, "{}");
      int other = -1;
      for (auto m : members) {
        std::string_view s;
        if (!m.get_string().get(s) && s.starts_with("usr_")) other = std::atoi(std::string(s.substr(4)).c_str());
      }
      if (other < 0) return Answer(c, 400, "{}");
      convs_.push_back(Conversation{user, other, 0});
      return Answer(c, 201, R"({"conversation_id":"cnv_)" + std::to_string(convs_.size() - 1) + R"("})");
    }
    Answer(c, 404, R"({"code":"not_found"})");
  }

  // --- WebSocket events --------------------------------------------------------------

  Conversation* ConvOf(std::string_view id, int user) {
    if (!id.starts_with("cnv_")) return nullptr;
    size_t i = std::strtoul(std::string(id.substr(4)).c_str(), nullptr, 10);
    if (i >= convs_.size()) return nullptr;
    Conversation& cv = convs_[i];
    return cv.a == user || cv.b == user ? &cv : nullptr;
  }

  void ToOthers(const Conversation& cv, int from, std::string_view frame) {
    int other = cv.a == from ? cv.b : cv.a;
    for (Conn* o : conns_of_[other]) Queue(o, frame);
  }

  void OnText(Conn* c, std::string_view payload) {
    scratch_.assign(payload);
    scratch_.reserve(scratch_.size() + simdjson::SIMDJSON_PADDING);
    simdjson::ondemand::document doc;
    if (parser_.iterate(scratch_.data(), scratch_.size(), scratch_.capacity()).get(doc)) return;
    std::string_view ev, cmid, conv, content_raw, mid, status;
    uint64_t up_to = 0;
    // Fields in any order, one pass (the generator's order is fixed anyway).
    simdjson::ondemand::object obj;
    if (doc.get_object().get(obj)) return;
    for (auto field : obj) {
      std::string_view key;
      if (field.unescaped_key().get(key)) return;
      auto v = field.value();
      if (key == "event") Take(v.get_string(), ev);
      else if (key == "client_msg_id") Take(v.get_string(), cmid);
      else if (key == "conversation_id") Take(v.get_string(), conv);
      else if (key == "content") content_raw = v.raw_json_token();
      else if (key == "message_id") Take(v.get_string(), mid);
      else if (key == "status") Take(v.get_string(), status);
      else if (key == "up_to_seq") Take(v.get_uint64(), up_to);
    }
    const std::string now = std::to_string(WallMs());
    if (ev == "send_message") {
      Conversation* cv = ConvOf(conv, c->user);
      if (cv == nullptr) return Queue(c, R"({"event":"error","code":"forbidden"})");
      const std::string seq = std::to_string(++cv->seq);
      std::string mid_s = "msg_" + std::string(conv.substr(4)) + "_" + seq;
      out_ = R"({"event":"message_ack","client_msg_id":")";
      out_ += cmid;
      out_ += R"(","conversation_id":")";
      out_ += conv;
      out_ += R"(","message_id":")" + mid_s + R"(","seq":)" + seq + R"(,"server_timestamp_ms":)" + now + "}";
      std::string ack = out_;
      out_ = R"({"event":"message","conversation_id":")";
      out_ += conv;
      out_ += R"(","message_id":")" + mid_s + R"(","seq":)" + seq + R"(,"sender_id":"usr_)" +
              std::to_string(c->user) + R"(","content":)";
      out_ += content_raw;
      out_ += R"(,"content_type":"text","server_timestamp_ms":)" + now + "}";
      if (burn_us_ > 0) {
        {
          std::lock_guard lk(burn_mu_);
          burn_in_.push_back(Burnt{c->id, c->user, static_cast<size_t>(cv - convs_.data()), std::move(ack), out_});
        }
        burn_cv_.notify_one();
        return;
      }
      Queue(c, ack);
      ToOthers(*cv, c->user, out_);
    } else if (ev == "message_receipt") {
      Conversation* cv = ConvOf(conv, c->user);
      if (cv == nullptr) return;
      out_ = R"({"event":"message_receipt","conversation_id":")";
      out_ += conv;
      out_ += R"(","message_id":")";
      out_ += mid;
      out_ += R"(","user_id":"usr_)" + std::to_string(c->user) + R"(","status":")";
      out_ += status;
      out_ += R"(","up_to_seq":)" + std::to_string(up_to) + R"(,"receipt_timestamp_ms":)" + now + "}";
      ToOthers(*cv, c->user, out_);
    } else if (ev == "resume") {
      Queue(c, R"({"event":"resume_done","replayed":0})");
    } else if (ev == "ping") {
      Queue(c, R"({"event":"pong"})");
    }
  }

  // --burn-us: a second thread spends the given CPU per message between the sequencing
  // and the ack, as a server's commit thread would; the relay thread sends what it
  // hands back.
  struct Burnt {
    uint64_t conn;
    int user;
    size_t conv;
    std::string ack, msg;
  };
  void Burn() {
    std::vector<Burnt> batch;
    for (;;) {
      {
        std::unique_lock lk(burn_mu_);
        burn_cv_.wait(lk, [&] { return burn_stop_ || !burn_in_.empty(); });
        if (burn_stop_) return;
        batch.swap(burn_in_);
      }
      // The thread's own CPU time, not the wall clock: a preempted spin burns nothing.
      const int64_t until = ThreadCpuNs() + burn_us_ * 1000 * static_cast<int64_t>(batch.size());
      while (ThreadCpuNs() < until) {
      }
      {
        std::lock_guard lk(burn_mu_);
        for (Burnt& b : batch) burn_out_.push_back(std::move(b));
      }
      batch.clear();
      uint64_t one = 1;
      if (write(done_fd_, &one, sizeof one) < 0) {
      }
    }
  }
  void TakeBurnt() {
    uint64_t n;
    if (read(done_fd_, &n, sizeof n) < 0) {
    }
    std::vector<Burnt> done;
    {
      std::lock_guard lk(burn_mu_);
      done.swap(burn_out_);
    }
    for (Burnt& b : done) {
      auto it = live_.find(b.conn);
      if (it != live_.end()) Queue(it->second, b.ack);
      ToOthers(convs_[b.conv], b.user, b.msg);
    }
  }

  int lfd_;
  int64_t burn_us_;
  int done_fd_ = -1;
  std::thread burner_;
  std::mutex burn_mu_;
  std::condition_variable burn_cv_;
  bool burn_stop_ = false;
  std::vector<Burnt> burn_in_, burn_out_;
  uint64_t next_id_ = 0;
  std::unordered_map<uint64_t, Conn*> live_;
  int ep_ = -1;
  simdjson::ondemand::parser parser_;
  std::string scratch_, out_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, int> by_name_;
  std::vector<std::vector<Conn*>> conns_of_;
  std::vector<Conversation> convs_;
  std::vector<Conn*> dirty_, next_dirty_, dead_;
};

}  // namespace

int main(int argc, char** argv) {
  std::string addr = "127.0.0.1:0";
  int64_t burn_us = 0;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--listen" && i + 1 < argc) {
      addr = argv[++i];
    } else if (a == "--burn-us" && i + 1 < argc) {
      burn_us = std::atoll(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: floor_relay [--listen HOST:PORT] [--burn-us N]\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  size_t colon = addr.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "floor_relay: --listen wants HOST:PORT\n");
    return 2;
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(std::atoi(addr.c_str() + colon + 1)));
  if (inet_pton(AF_INET, addr.substr(0, colon).c_str(), &sa.sin_addr) != 1) {
    std::fprintf(stderr, "floor_relay: bad address %s\n", addr.c_str());
    return 2;
  }
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(lfd, 4096) != 0) {
    std::perror("floor_relay: bind/listen");
    return 1;
  }
  socklen_t sl = sizeof sa;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &sl);
  std::printf("listening %u\n", ntohs(sa.sin_port));
  std::fflush(stdout);
  struct sigaction act{};
  act.sa_handler = [](int) { g_stop.store(true); };
  sigaction(SIGINT, &act, nullptr);
  sigaction(SIGTERM, &act, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return Relay(lfd, burn_us).Run();
}
