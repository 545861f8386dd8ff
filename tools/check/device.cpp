#include "check/device.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <thread>

#include "check/report.h"

namespace sb::check {

using client::HttpResponse;
using client::Json;
using client::RestClient;
using client::WsFrame;

namespace {

constexpr Millis kConnectTimeout{3000};
constexpr Millis kWelcomeTimeout{10000};
constexpr Millis kWriteTimeout{5000};
// A generous bound: a healthy server acks in milliseconds, but a restarting one
// under two busy cores may take seconds, and both are fine. Past it the connection is
// treated as stuck and replaced (the retry then exercises dedup).
constexpr Millis kAckTimeout{15000};
// Silence (no frame at all) between `resume` and `resume_done`; a long replay that
// keeps streaming is fine however long it takes.
constexpr Millis kResumeSilence{15000};
constexpr Millis kMaxIdleWait{50};
constexpr Millis kReceiptDelay{50};
constexpr int64_t kReceiptEvery = 8;
constexpr Millis kPingEvery{20000};
constexpr Millis kBackoffBase{100};

const char* const kWords[] = {"alpha", "bravo",  "charlie", "delta",        "echo",
                              "plan",  "lunch",  "ship",    "na\xc3\xafve", "\xe6\x97\xa5\xe6\x9c\xac",
                              "ok",    "review", "deploy",  "\xf0\x9f\x9a\x80", "later"};

size_t Hash(std::string_view s) { return std::hash<std::string_view>{}(s); }

std::string Short(const Json& j) {
  std::string s = j.Dump();
  if (s.size() > 300) s = s.substr(0, 300) + "...";
  return s;
}

}  // namespace

Device::Device(Shared* shared, int index, int user, int slot)
    : sh_(shared),
      opt_(*shared->opt),
      index_(index),
      user_(user),
      user_id_(shared->layout->users[user].user_id),
      rng_(Mix64(shared->opt->seed ^ Mix64(static_cast<uint64_t>(index) + 1))) {
  name_ = "u" + std::to_string(user) + "/d" + std::to_string(slot);
  device_id_ = "chk-" + shared->layout->run_id + "-u" + std::to_string(user) + "-d" +
               std::to_string(slot);
  for (int c : shared->layout->users[user].convs) {
    const std::string& id = shared->layout->convs[c].id;
    conv_ids_.push_back(id);
    views_[id];
  }
}

bool Device::LogIn(std::string* error) {
  RestClient api(sh_->ep);
  const UserInfo& u = sh_->layout->users[user_];
  HttpResponse r = api.Login(u.username, sh_->layout->password, device_id_);
  auto s = client::Session::FromResponse(r);
  if (!s) {
    *error = "POST /v1/sessions for " + u.username + " (" + device_id_ + "): " + r.Describe();
    return false;
  }
  if (s->user_id != user_id_ || s->device_id != device_id_) {
    *error = "POST /v1/sessions for " + u.username + " answered user " + s->user_id +
             " device " + s->device_id + ", expected " + user_id_ + " " + device_id_;
    return false;
  }
  access_token_ = s->access_token;
  refresh_token_ = s->refresh_token;
  return true;
}

bool Device::RenewToken() {
  RestClient api(sh_->ep);
  HttpResponse r = api.Refresh(refresh_token_);
  auto s = client::Session::FromResponse(r);
  if (!s) {
    // The refresh token may have been rotated by a request whose answer a server
    // kill swallowed; logging in again is what a real client would fall back to.
    const UserInfo& u = sh_->layout->users[user_];
    s = client::Session::FromResponse(api.Login(u.username, sh_->layout->password, device_id_));
  }
  if (!s) return false;
  access_token_ = s->access_token;
  refresh_token_ = s->refresh_token;
  sh_->stats.token_renewals++;
  return true;
}

std::string Device::How(const char* via) const {
  return std::string(via) + " on connection #" + std::to_string(connection_no_) +
         (catching_up_ ? ", before resume_done" : "");
}

void Device::Protocol(std::string conv, int64_t seq, std::string detail) {
  sh_->report->Add(Kind::kError, std::move(conv), seq, name_, std::move(detail));
}

Clock::duration Device::Backoff() {
  // Full jitter: uniform in [0, min(cap, base * 2^attempt)], so that a crowd of
  // clients reconnecting after a server restart spreads out instead of stampeding.
  double cap_ms = std::min(opt_.backoff_cap_s * 1000.0,
                           static_cast<double>(kBackoffBase.count()) *
                               static_cast<double>(1ULL << std::min(backoff_attempt_, 20)));
  std::uniform_real_distribution<double> d(0, cap_ms);
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(d(rng_)));
}

Clock::time_point Device::NextDisconnect(Clock::time_point now) {
  if (opt_.disconnect_rate <= 0) return Clock::time_point::max();
  // Exponential gaps: a Poisson process with `disconnect_rate` drops per second.
  std::exponential_distribution<double> d(opt_.disconnect_rate);
  return now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(d(rng_)));
}

std::string Device::NewContent(int n) {
  std::string s = "check " + sh_->layout->run_id + " " + name_ + " #" + std::to_string(n);
  std::uniform_int_distribution<int> count(1, 12);
  std::uniform_int_distribution<size_t> pick(0, std::size(kWords) - 1);
  for (int i = count(rng_); i > 0; --i) {
    s += ' ';
    s += kWords[pick(rng_)];
  }
  return s;
}

void Device::Run() {
  auto now = Clock::now();
  const double interval_s = opt_.rate > 0 ? 1.0 / opt_.rate : 1.0;
  std::uniform_real_distribution<double> first(0, interval_s);
  next_send_at_ = now + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(first(rng_)));
  for (;;) {
    const Phase ph = sh_->phase_now();
    now = Clock::now();
    if (ph == Phase::kStop) {
      FinalDrain();
      return;
    }
    if (ph == Phase::kSettle && !settle_started_) {
      settle_started_ = true;
      // Every device reconnects and resumes before the verdict, so that anything a
      // live socket silently missed is either caught up now or reported as lost.
      if (up_) Drop(true);
      backoff_attempt_ = 0;
      next_connect_at_ = now;
    }
    if (!up_) {
      if (now < next_connect_at_) {
        std::this_thread::sleep_for(std::min<Clock::duration>(next_connect_at_ - now, kMaxIdleWait));
        continue;
      }
      if (!Connect()) {
        next_connect_at_ = Clock::now() + Backoff();
        ++backoff_attempt_;
        continue;
      }
      if (settle_started_) settle_reconnected_ = true;
    }
    Step();
    if (settle_started_) CheckSettled();
  }
}

bool Device::Connect() {
  auto ws = std::make_unique<client::WsClient>();
  client::WsConnectOptions o;
  o.access_token = access_token_;
  o.timeout = kConnectTimeout;
  if (!ws->Connect(sh_->ep, o)) {
    sh_->stats.connect_failures++;
    if (ws->upgrade_status() == 401) RenewToken();
    if (opt_.verbose)
      std::fprintf(stderr, "check: %s: connect failed: HTTP %d %s\n", name_.c_str(),
                   ws->upgrade_status(), ws->error().c_str());
    return false;
  }
  ws_ = std::move(ws);
  up_ = true;

  WsFrame f = ws_->RecvFrame(kWelcomeTimeout);
  if (!f.is_text()) {
    if (f.kind == WsFrame::Kind::kTimeout)
      Protocol("", 0, "no welcome frame within 10 s of the upgrade");
    else
      sh_->stats.server_closes++;
    Drop(true);
    return false;
  }
  Json w = f.json();
  if (w["event"].Str() != std::optional<std::string>("welcome")) {
    Protocol("", 0, "first frame is not welcome: " + Short(w));
    HandleFrame(w);
  } else if (w["user_id"].Str() != std::optional<std::string>(user_id_) ||
             w["device_id"].Str() != std::optional<std::string>(device_id_)) {
    Protocol("", 0, "welcome names another user or device: " + Short(w) + " (expected " +
                        user_id_ + " " + device_id_ + ")");
  }
  sh_->stats.connects++;
  if (ever_connected_) sh_->stats.reconnects++;
  ever_connected_ = true;
  ++connection_no_;

  catching_up_ = true;
  bool ok = (opt_.use_resume && resume_supported_) ? CatchUpResume() : CatchUpHistory();
  catching_up_ = false;
  if (!ok) {
    if (up_) Drop(true);
    return false;
  }
  auto now = Clock::now();
  // Everything unacked goes out again, oldest first, with the same client_msg_id and
  // content: the server must answer each with the original seq.
  for (const std::string& id : pending_) {
    SentMessage& m = ledger_.at(id);
    m.inflight = false;
    m.retry_at = now;
  }
  backoff_attempt_ = 0;
  next_ping_at_ = now + kPingEvery;
  next_disconnect_at_ = sh_->phase_now() == Phase::kRun ? NextDisconnect(now)
                                                        : Clock::time_point::max();
  return true;
}

void Device::Drop(bool abrupt) {
  if (ws_) {
    // Abort: the socket just vanishes, like a phone losing signal; no close frame.
    if (abrupt) ws_->Abort();
    ws_.reset();
  }
  up_ = false;
  for (const std::string& id : pending_) ledger_.at(id).inflight = false;
}

bool Device::CatchUpResume() {
  std::optional<std::map<std::string, int64_t>> cursors;
  // The contract lets a client omit cursors (missing or `{}`); then the server's record
  // of this device's DELIVERED receipts must bring back everything not acknowledged.
  int how = 0;  // 0: own cursors, 1: "cursors":{}, 2: no cursors field
  if (opt_.resume_cursors == "server") how = 1 + std::uniform_int_distribution<int>(0, 1)(rng_);
  if (opt_.resume_cursors == "mixed") how = std::uniform_int_distribution<int>(0, 2)(rng_);
  if (how != 2) cursors.emplace();
  if (how == 0)
    for (const auto& [conv, cv] : views_) (*cursors)[conv] = cv.cursor;
  if (!ws_->Send(client::ResumeFrame(cursors), kWriteTimeout)) {
    sh_->stats.server_closes++;
    return false;
  }
  auto deadline = Clock::now() + kResumeSilence;
  uint64_t frames = 0;
  for (;;) {
    auto now = Clock::now();
    if (now >= deadline) {
      Protocol("", 0,
               "no resume_done: the server went silent for 15 s after " + std::to_string(frames) +
                   " message frames of the replay");
      return false;
    }
    WsFrame f = ws_->RecvFrame(std::chrono::duration_cast<Millis>(deadline - now) + Millis(1));
    if (f.kind == WsFrame::Kind::kTimeout) continue;
    deadline = Clock::now() + kResumeSilence;
    if (f.kind == WsFrame::Kind::kClose || f.kind == WsFrame::Kind::kError) {
      sh_->stats.server_closes++;
      Drop(false);
      return false;
    }
    if (f.kind == WsFrame::Kind::kBinary) {
      Protocol("", 0, "binary frame from the server during resume");
      continue;
    }
    Json j = f.json();
    auto ev = j["event"].Str();
    if (ev == std::optional<std::string>("resume_done")) {
      sh_->stats.resumes++;
      if (auto n = j["replayed"].Int(); n && *n >= 0) {
        sh_->stats.replayed += static_cast<uint64_t>(*n);
      } else {
        Protocol("", 0, "resume_done without an integer `replayed`: " + Short(j));
      }
      if (!j.Has("conversations")) Protocol("", 0, "resume_done without `conversations`: " + Short(j));
      Json tr = j["truncated"];
      if (!tr.IsArray()) {
        Protocol("", 0, "resume_done without a `truncated` array: " + Short(j));
      } else {
        for (const Json& c : tr.Items()) {
          // Nothing in a checker run is old enough for retention, so any truncation is
          // history the server lost (and at least says so).
          sh_->report->Add(Kind::kGap, c.StrOr(c.Dump()), 0, name_,
                           "resume_done lists the conversation as truncated");
        }
      }
      return true;
    }
    if (ev == std::optional<std::string>("error") && !j.Has("client_msg_id")) {
      // Nothing else is outstanding on this fresh connection: this answers the resume.
      std::string code = j["code"].StrOr("?");
      Protocol("", 0, "resume answered with error " + code + ": " + j["message"].StrOr(""));
      resume_supported_ = false;
      if (!sh_->resume_unsupported_noted.exchange(true)) {
        std::fprintf(stderr,
                     "check: the server answers `resume` with error %s; devices fall back to "
                     "REST history catch-up (counted as errors)\n",
                     code.c_str());
      }
      return CatchUpHistory();
    }
    if (ev == std::optional<std::string>("message")) {
      ++frames;
      OnMessage(j, "message");
      continue;
    }
    HandleFrame(j);
  }
}

bool Device::CatchUpHistory() {
  sh_->stats.history_catchups++;
  RestClient api(sh_->ep);
  for (auto& [conv, cv] : views_) {
    int64_t after = cv.cursor;
    for (;;) {
      HttpResponse r = api.History(access_token_, conv, {.after_seq = after, .limit = 200});
      if (r.status == 401 && RenewToken())
        r = api.History(access_token_, conv, {.after_seq = after, .limit = 200});
      if (r.status != 200) {
        if (opt_.verbose)
          std::fprintf(stderr, "check: %s: history catch-up failed: %s\n", name_.c_str(),
                       r.Describe().c_str());
        return false;
      }
      Json body = r.json();
      std::vector<Json> items = body["messages"].Items();
      for (const Json& m : items) {
        OnMessage(m, "history");
        after = std::max(after, m["seq"].IntOr(after));
      }
      if (items.empty() || !body["has_more"].Bool().value_or(false)) break;
    }
  }
  return true;
}

void Device::Step() {
  auto now = Clock::now();
  Clock::time_point wake = now + kMaxIdleWait;
  const bool creating = sh_->phase_now() == Phase::kRun && created_ < quota_;
  if (creating && static_cast<int>(pending_.size()) < opt_.window) wake = std::min(wake, next_send_at_);
  for (const std::string& id : pending_) {
    const SentMessage& m = ledger_.at(id);
    if (!m.inflight) wake = std::min(wake, m.retry_at);
  }
  wake = std::min(wake, next_disconnect_at_);
  wake = std::min(wake, next_ping_at_);
  Millis wait = wake > now ? std::chrono::duration_cast<Millis>(wake - now) : Millis(0);

  WsFrame f = ws_->RecvFrame(wait);
  for (int n = 0; f.kind != WsFrame::Kind::kTimeout; ++n) {
    if (f.kind == WsFrame::Kind::kClose || f.kind == WsFrame::Kind::kError) {
      sh_->stats.server_closes++;
      if (opt_.verbose)
        std::fprintf(stderr, "check: %s: connection ended: %s\n", name_.c_str(), f.Describe().c_str());
      Drop(false);
      next_connect_at_ = Clock::now() + Backoff();
      return;
    }
    if (f.kind == WsFrame::Kind::kBinary) {
      Protocol("", 0, "binary frame from the server");
    } else {
      HandleFrame(f.json());
    }
    if (n >= 256) break;  // let sends and receipts through under a flood
    f = ws_->RecvFrame(Millis(0));
  }

  now = Clock::now();
  if (sh_->phase_now() == Phase::kRun && now >= next_disconnect_at_) {
    sh_->stats.injected_disconnects++;
    Drop(true);
    backoff_attempt_ = 0;
    next_connect_at_ = now + Backoff();
    return;
  }
  for (const std::string& id : pending_) {
    const SentMessage& m = ledger_.at(id);
    if (m.inflight && now - m.sent_at > kAckTimeout) {
      sh_->stats.ack_timeouts++;
      if (opt_.verbose)
        std::fprintf(stderr, "check: %s: no answer to %s for 15 s; reconnecting\n", name_.c_str(),
                     id.c_str());
      Drop(true);
      next_connect_at_ = now;
      return;
    }
  }
  SendDue(now);
  if (!up_) return;
  FlushReceipts(now, false);
  if (up_ && now >= next_ping_at_) {
    if (!ws_->Send(client::PingFrame(), kWriteTimeout)) {
      Drop(true);
      next_connect_at_ = now + Backoff();
      return;
    }
    next_ping_at_ = now + kPingEvery;
  }
  if (!done_sending_noted_ && created_ >= quota_ && pending_.empty()) {
    done_sending_noted_ = true;
    sh_->done_sending++;
  }
}

bool Device::WriteSend(SentMessage& m, Clock::time_point now) {
  client::OutgoingMessage om{.client_msg_id = m.client_msg_id,
                             .conversation_id = m.conversation_id,
                             .content = m.content};
  if (!ws_->Send(client::SendMessageFrame(om), kWriteTimeout)) {
    sh_->stats.server_closes++;
    Drop(true);
    next_connect_at_ = now + Backoff();
    return false;
  }
  if (m.attempts > 0) sh_->stats.retries++;
  ++m.attempts;
  m.inflight = true;
  m.sent_at = now;
  return true;
}

void Device::SendDue(Clock::time_point now) {
  if (!up_) return;
  // Retries first and oldest first: they are what the server owes an answer to.
  for (size_t i = 0; i < pending_.size(); ++i) {
    SentMessage& m = ledger_.at(pending_[i]);
    if (m.inflight || m.retry_at > now) continue;
    if (!WriteSend(m, now)) return;
  }
  const double interval_s = opt_.rate > 0 ? 1.0 / opt_.rate : 1.0;
  std::uniform_real_distribution<double> jitter(0.5, 1.5);
  while (sh_->phase_now() == Phase::kRun && created_ < quota_ &&
         static_cast<int>(pending_.size()) < opt_.window && now >= next_send_at_) {
    SentMessage m;
    m.client_msg_id =
        "chk-" + sh_->layout->run_id + "-" + std::to_string(index_) + "-" + std::to_string(created_);
    std::uniform_int_distribution<size_t> pick(0, conv_ids_.size() - 1);
    m.conversation_id = conv_ids_[pick(rng_)];
    m.content = NewContent(created_);
    ++created_;
    const std::string id = m.client_msg_id;
    auto [it, inserted] = ledger_.emplace(id, std::move(m));
    (void)inserted;
    pending_.push_back(id);
    sh_->sent++;
    next_send_at_ += std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(interval_s * jitter(rng_)));
    // After a disconnect, do not make up for lost time in one burst.
    if (next_send_at_ < now) next_send_at_ = now;
    if (!WriteSend(it->second, now)) return;
  }
}

void Device::FlushReceipts(Clock::time_point now, bool force) {
  if (!opt_.receipts || !up_) return;
  for (auto& [conv, cv] : views_) {
    if (cv.cursor <= cv.receipted) continue;
    if (!force && cv.cursor - cv.receipted < kReceiptEvery && now - cv.unreceipted_since < kReceiptDelay)
      continue;
    // Only acknowledge what others sent: a range of this device's own sends needs no
    // receipt, and a message_id naming one's own message would be odd.
    bool worthy = false;
    for (auto it = cv.known.upper_bound(cv.receipted); it != cv.known.end() && it->first <= cv.cursor; ++it) {
      if (!it->second.own) {
        worthy = true;
        break;
      }
    }
    if (worthy) {
      const Known& k = cv.known.at(cv.cursor);
      if (!ws_->Send(client::MessageReceiptFrame(k.message_id, conv, "DELIVERED", cv.cursor),
                     kWriteTimeout)) {
        sh_->stats.server_closes++;
        Drop(true);
        next_connect_at_ = now + Backoff();
        return;
      }
      sh_->stats.receipts_sent++;
    }
    cv.receipted = cv.cursor;
  }
}

void Device::Remember(ConvView& cv, int64_t seq, Known k) {
  cv.seq_of[k.message_id] = seq;
  cv.known.emplace(seq, std::move(k));
  const int64_t before = cv.cursor;
  while (cv.known.count(cv.cursor + 1)) ++cv.cursor;
  if (cv.cursor > before && before == cv.receipted) cv.unreceipted_since = Clock::now();
}

void Device::HandleFrame(const Json& j) {
  auto ev = j["event"].Str();
  if (!ev) {
    Protocol("", 0, "frame without an event: " + Short(j));
    return;
  }
  if (*ev == "message") return OnMessage(j, "message");
  if (*ev == "message_ack") return OnAck(j);
  if (*ev == "message_receipt") return OnReceipt(j);
  if (*ev == "error") return OnError(j);
  if (*ev == "welcome") return Protocol("", 0, "a second welcome frame: " + Short(j));
  if (*ev == "resume_done") return Protocol("", 0, "resume_done without a resume: " + Short(j));
  // pong, presence, typing, and events added later: nothing to check here.
}

void Device::OnMessage(const Json& m, const char* via) {
  auto conv = m["conversation_id"].Str();
  auto seq = m["seq"].Int();
  auto id = m["message_id"].Str();
  auto cmid = m["client_msg_id"].Str();
  auto sender = m["sender_id"].Str();
  auto content = m["content"].Str();
  if (!conv || !seq || !id || !cmid || !sender || !content || *seq < 1) {
    Protocol(conv.value_or(""), seq.value_or(0),
             std::string("message (") + via + ") lacks a field of the contract: " + Short(m));
    return;
  }
  if (!opt_.inject.empty() && !ledger_.count(*cmid)) {
    if (opt_.inject == "drop-delivery" && !catching_up_ && std::string_view(via) == "message" &&
        std::bernoulli_distribution(0.01)(rng_)) {
      return;
    }
    // The same ~1% of message ids on every delivery, live or replayed, per device.
    if (opt_.inject == "lose-message" && Mix64(Hash(*id) ^ static_cast<uint64_t>(index_)) % 100 == 0) return;
  }
  sh_->stats.messages_received++;
  auto vit = views_.find(*conv);
  if (vit == views_.end()) {
    sh_->report->Add(Kind::kCorrupt, *conv, *seq, name_,
                     std::string("message (") + via + ") for a conversation this user is not in");
    return;
  }
  ConvView& cv = vit->second;
  if (cv.conn_no != connection_no_) {
    cv.conn_no = connection_no_;
    cv.conn_max_seq = 0;
  }
  const int64_t conn_max_before = cv.conn_max_seq;
  cv.conn_max_seq = std::max(cv.conn_max_seq, *seq);
  if (auto s = cv.seq_of.find(*id); s != cv.seq_of.end()) {
    sh_->stats.redeliveries++;
    const Known& k = cv.known.at(s->second);
    if (s->second != *seq || k.content_hash != Hash(*content) || k.client_msg_id != *cmid) {
      sh_->report->Add(Kind::kCorrupt, *conv, *seq, name_,
                       "message_id " + *id + " redelivered (" + via + ") as seq " +
                           std::to_string(*seq) + " with different fields; first held as seq " +
                           std::to_string(s->second));
    }
    return;
  }
  if (auto k = cv.known.find(*seq); k != cv.known.end()) {
    sh_->report->Add(Kind::kCorrupt, *conv, *seq, name_,
                     std::string("seq delivered (") + via + ") as " + *id + " (client_msg_id " +
                         *cmid + ") but already held as " + k->second.message_id +
                         " (client_msg_id " + k->second.client_msg_id + ")");
    return;
  }
  auto own_it = ledger_.find(*cmid);
  const bool own = own_it != ledger_.end();
  if (own) {
    SentMessage& sm = own_it->second;
    if (*sender != user_id_ || sm.conversation_id != *conv || sm.content != *content) {
      sh_->report->Add(Kind::kCorrupt, *conv, *seq, name_,
                       "own message " + *cmid + " came back (" + via +
                           ") with another sender, conversation or content");
    }
    // Seen stored before any ack: the retry's ack must name this very copy. Only a
    // catch-up counts: a live copy could race with the first attempt's own ack.
    if (!sm.acked && !sm.inflight && sm.replay_seq == 0 && catching_up_) {
      sm.replay_seq = *seq;
      sm.replay_message_id = *id;
    }
    if (*seq < conn_max_before) {
      sh_->report->Add(Kind::kOutOfOrder, *conv, *seq, name_,
                       "own unacked message came back (" + How(via) + ") after seq " +
                           std::to_string(conn_max_before) + " on the same connection");
    }
  } else {
    if (*seq < cv.max_delivered_seq) {
      sh_->report->Add(Kind::kOutOfOrder, *conv, *seq, name_,
                       "new message arrived (" + How(via) + ") after seq " +
                           std::to_string(cv.max_delivered_seq) + " (cursor was " +
                           std::to_string(cv.cursor) + ")");
    } else {
      // Seqs below the highest one delivered so far were judged by the jump that passed
      // them; only what lies beyond it is new missing ground.
      Skip sk;
      for (int64_t s = std::max(cv.cursor, cv.max_delivered_seq) + 1; s < *seq && sk.missing.size() < 1000; ++s)
        if (!cv.known.count(s)) sk.missing.push_back(s);
      if (!sk.missing.empty()) {
        sk.conversation_id = *conv;
        sk.arrived_seq = *seq;
        sk.at_s = sh_->Elapsed();
        sk.how = How(via) + ", cursor " + std::to_string(cv.cursor);
        skips_.push_back(std::move(sk));
      }
    }
    cv.max_delivered_seq = std::max(cv.max_delivered_seq, *seq);
  }
  Remember(cv, *seq, Known{*id, *cmid, *sender, Hash(*content), own});
}

void Device::OnAck(const Json& j) {
  auto cmid = j["client_msg_id"].Str();
  auto mid = j["message_id"].Str();
  auto conv = j["conversation_id"].Str();
  auto seq = j["seq"].Int();
  auto dup = j["duplicate"].Bool();
  if (!cmid || !mid || !conv || !seq || !dup || *seq < 1) {
    Protocol(conv.value_or(""), seq.value_or(0), "message_ack lacks a field of the contract: " + Short(j));
    if (!cmid || !mid || !conv || !seq) return;
  }
  auto it = ledger_.find(*cmid);
  if (it == ledger_.end()) {
    Protocol(*conv, *seq, "message_ack for a client_msg_id this device never sent: " + Short(j));
    return;
  }
  SentMessage& m = it->second;
  if (opt_.inject == "drop-ack" && !m.acked && std::bernoulli_distribution(0.05)(rng_)) return;
  if (dup.value_or(false)) sh_->stats.duplicate_acks++;
  auto describe = [](int64_t s, const std::string& id) {
    return "seq " + std::to_string(s) + " " + id;
  };
  if (*conv != m.conversation_id) {
    sh_->report->Add(Kind::kAckMismatch, *conv, *seq, name_,
                     "ack of " + *cmid + " names conversation " + *conv + ", sent to " +
                         m.conversation_id);
  }
  if (m.acked) {
    if (*seq != m.seq || *mid != m.message_id) {
      sh_->report->Add(Kind::kAckMismatch, m.conversation_id, *seq, name_,
                       "second ack of " + *cmid + " says " + describe(*seq, *mid) +
                           ", the first said " + describe(m.seq, m.message_id));
    }
    return;
  }
  if (m.replay_seq != 0) {
    if (*seq != m.replay_seq || *mid != m.replay_message_id) {
      sh_->report->Add(Kind::kAckMismatch, m.conversation_id, *seq, name_,
                       "retry of " + *cmid + " acked as " + describe(*seq, *mid) +
                           " but its first attempt was already stored as " +
                           describe(m.replay_seq, m.replay_message_id));
    } else if (dup == std::optional<bool>(false)) {
      sh_->report->Add(Kind::kAckMismatch, m.conversation_id, *seq, name_,
                       "retry of " + *cmid + " acked with \"duplicate\":false although it was "
                       "already stored as seq " + std::to_string(m.replay_seq));
    }
  }
  m.acked = true;
  m.inflight = false;
  m.seq = *seq;
  m.message_id = *mid;
  if (auto p = std::find(pending_.begin(), pending_.end(), *cmid); p != pending_.end()) pending_.erase(p);
  sh_->acked++;

  ConvView& cv = views_[m.conversation_id];
  if (auto k = cv.known.find(*seq); k != cv.known.end()) {
    if (k->second.message_id != *mid) {
      sh_->report->Add(Kind::kAckMismatch, m.conversation_id, *seq, name_,
                       "ack of " + *cmid + " says " + describe(*seq, *mid) +
                           " but this device holds that seq as " + k->second.message_id +
                           " (client_msg_id " + k->second.client_msg_id + ")");
    }
    return;
  }
  if (auto s = cv.seq_of.find(*mid); s != cv.seq_of.end()) {
    sh_->report->Add(Kind::kAckMismatch, m.conversation_id, *seq, name_,
                     "ack of " + *cmid + " says " + describe(*seq, *mid) +
                         " but this device holds that message_id at seq " + std::to_string(s->second));
    return;
  }
  Remember(cv, *seq, Known{*mid, *cmid, user_id_, Hash(m.content), true});
}

void Device::OnError(const Json& j) {
  const std::string code = j["code"].StrOr("");
  const std::string msg = j["message"].StrOr("");
  auto cmid = j["client_msg_id"].Str();
  if (!cmid) {
    Protocol("", 0, "error frame: " + code + ": " + msg);
    return;
  }
  auto it = ledger_.find(*cmid);
  if (it == ledger_.end()) {
    Protocol("", 0, "error frame for a client_msg_id this device never sent: " + Short(j));
    return;
  }
  SentMessage& m = it->second;
  if (m.acked) {
    Protocol(m.conversation_id, m.seq, "error " + code + " for " + *cmid + " after it was acked: " + msg);
    return;
  }
  auto now = Clock::now();
  m.inflight = false;
  if (code == "rate_limited") {
    sh_->stats.rate_limited++;
    std::uniform_int_distribution<int> d(250, 500);
    m.retry_at = now + Millis(d(rng_));
    return;
  }
  if (code == "unavailable") {
    // The contract's backpressure answer ("retry with backoff").
    sh_->stats.unavailable++;
    int64_t cap = std::min<int64_t>(2000, 100LL << std::min(m.unavailable_streak, 10));
    std::uniform_int_distribution<int64_t> d(cap / 2, cap);
    m.retry_at = now + Millis(d(rng_));
    ++m.unavailable_streak;
    return;
  }
  Protocol(m.conversation_id, 0, "send " + *cmid + " rejected: " + code + ": " + msg);
  if (code == "internal") {
    m.retry_at = now + Millis(500);
    return;
  }
  // conflict (same id, same content: the server's bug), forbidden, bad_request: a
  // retry would get the same answer.
  m.failed = true;
  if (auto p = std::find(pending_.begin(), pending_.end(), *cmid); p != pending_.end()) pending_.erase(p);
}

void Device::OnReceipt(const Json& j) {
  sh_->stats.receipts_received++;
  auto conv = j["conversation_id"].Str();
  auto status = j["status"].Str();
  // Groups above chat.receipts_max_members: "delivered to all" / "read by all", with
  // `all_members` instead of one recipient; tracked as one more recipient.
  const bool all_members = j["all_members"].Bool().value_or(false);
  auto recipient = all_members ? std::optional<std::string>("*all_members") : j["recipient_id"].Str();
  auto sender = j["sender_id"].Str();
  auto mid = j["message_id"].Str();
  if (!conv || !status || !recipient || !sender || (*status != "DELIVERED" && *status != "READ")) {
    Protocol(conv.value_or(""), 0, "message_receipt lacks a field of the contract: " + Short(j));
    return;
  }
  if (*sender != user_id_) {
    sh_->report->Add(Kind::kReceipt, *conv, 0, name_,
                     "receipt for sender " + *sender + " routed to a device of " + user_id_);
  }
  int64_t seq = 0;
  if (auto up = j["up_to_seq"].Int()) {
    seq = *up;
  } else if (mid) {
    auto vit = views_.find(*conv);
    if (vit != views_.end()) {
      if (auto s = vit->second.seq_of.find(*mid); s != vit->second.seq_of.end()) seq = s->second;
    }
  }
  if (seq <= 0) return;  // cannot place it; nothing to compare
  ReceiptState& st = receipt_state_[*recipient + "|" + *conv];
  if (*status == "DELIVERED") {
    if (seq < st.delivered || seq <= st.read) {
      sh_->report->Add(Kind::kReceipt, *conv, seq, name_,
                       "DELIVERED receipt of " + *recipient + " up to seq " + std::to_string(seq) +
                           " after DELIVERED up to " + std::to_string(st.delivered) +
                           " / READ up to " + std::to_string(st.read));
    }
    st.delivered = std::max(st.delivered, seq);
  } else {
    if (seq < st.read) {
      sh_->report->Add(Kind::kReceipt, *conv, seq, name_,
                       "READ receipt of " + *recipient + " up to seq " + std::to_string(seq) +
                           " after READ up to " + std::to_string(st.read));
    }
    st.read = std::max(st.read, seq);
  }
}

void Device::CheckSettled() {
  if (!up_ || !settle_reconnected_) return;
  const uint64_t gen = sh_->targets_gen.load();
  if (gen == 0) return;
  if (gen != seen_targets_gen_) {
    std::lock_guard lock(sh_->targets_mu);
    targets_ = sh_->targets;
    seen_targets_gen_ = gen;
  }
  if (settled_gen_.load() == gen || !pending_.empty()) return;
  for (const auto& [conv, target] : targets_) {
    auto it = views_.find(conv);
    if (it != views_.end() && it->second.cursor < target) return;
  }
  FlushReceipts(Clock::now(), true);
  if (up_) settled_gen_.store(gen);
}

void Device::FinalDrain() {
  if (!up_) return;
  // Late frames can still reveal a duplicate delivery or an order violation.
  const auto end = Clock::now() + Millis(300);
  for (auto now = Clock::now(); now < end; now = Clock::now()) {
    WsFrame f = ws_->RecvFrame(std::chrono::duration_cast<Millis>(end - now) + Millis(1));
    if (f.kind == WsFrame::Kind::kTimeout) break;
    if (f.kind == WsFrame::Kind::kClose || f.kind == WsFrame::Kind::kError) {
      Drop(false);
      return;
    }
    if (f.is_text()) HandleFrame(f.json());
  }
  ws_->Close(1000, "check done", Millis(500));
  ws_.reset();
  up_ = false;
}

}  // namespace sb::check
