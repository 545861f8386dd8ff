#include "chat/chat_core.h"

#include <algorithm>
#include <unordered_map>

#include "attachments/attachment_store.h"
#include "base/log.h"
#include "chat/commit_queue.h"
#include "chat/core_state.h"
#include "metrics/metrics.h"
#include "protocol/client_frames.h"
#include "protocol/server_frames.h"

namespace sb::chat {

using protocol::FrameError;

uint64_t BodyFingerprint(store::ContentType ct, std::string_view content, std::string_view media_url,
                         std::string_view target, std::string_view reply_to) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
    // A separator that cannot be confused with content bytes: the length.
    for (size_t n = s.size(), i = 0; i < 8; ++i, n >>= 8) {
      h ^= (n & 0xff);
      h *= 1099511628211ull;
    }
  };
  char t = static_cast<char>(ct);
  mix(std::string_view(&t, 1));
  mix(content);
  mix(media_url);
  mix(target);
  mix(reply_to);
  return h;
}

namespace {

struct Ack {
  uint64_t session;
  FramePtr frame;
  int64_t recv_ns;
};

FramePtr Frame(std::string s) { return MakeFrame(std::move(s)); }

}  // namespace

ChatCore::ChatCore(store::Store& store, std::vector<Executor*> shards, CoreOptions opts,
                   const Clock& clock)
    : store_(store), shards_(std::move(shards)), opts_(std::move(opts)), clock_(clock) {
  for (size_t i = 0; i < shards_.size(); ++i) {
    state_.push_back(std::make_unique<Shard>(opts_.limits, clock_.NowMs()));
    state_.back()->registry = opts_.make_registry ? opts_.make_registry(static_cast<uint32_t>(i))
                                                  : std::make_unique<presence::MemoryRegistry>();
  }
  commits_ = std::make_unique<CommitQueue>(
      store_, opts_.max_commit_batch, opts_.commit_interval_us,
      [this](uint32_t shard, std::vector<store::Message>&& msgs, std::vector<ReceiptChange>&& rcpts) {
        auto batch = std::make_shared<std::vector<store::Message>>(std::move(msgs));
        auto rc = std::make_shared<std::vector<ReceiptChange>>(std::move(rcpts));
        shards_[shard]->Post([this, shard, batch, rc, done_ns = MonoNs()] {
          metrics::Server().commit_return_wait_seconds.Observe(static_cast<double>(MonoNs() - done_ns) / 1e9);
          OnCommitted(shard, std::move(*batch), std::move(*rc));
        });
      },
      opts_.after_commit);
}

ChatCore::~ChatCore() { Stop(); }

void ChatCore::Start() { commits_->Start(); }
void ChatCore::Stop() {
  if (commits_) commits_->Stop();
}

uint32_t ChatCore::OwnerShard(ConvId conv) const {
  // Conversation ids are random 64-bit numbers, so the low bits spread evenly.
  return static_cast<uint32_t>(conv % shards_.size());
}

void ChatCore::Attach(uint32_t shard, Session* s) {
  Shard& sh = *state_[shard];
  sh.by_user[s->user()].push_back(s);
  sh.by_id[s->id()] = s;
  SessionState& ss = sh.sessions[s->id()];
  ss.tokens = opts_.limits.send_burst;
  ss.bucket_ns = MonoNs();
  ss.id = s->id();
  ss.last_active_ms = clock_.NowMs();
  ss.attached_ms = ss.last_active_ms;
  ScheduleCheck(sh, ss);
  sessions_.fetch_add(1);
  protocol::WelcomeInfo w;
  w.user_id = FormatUserId(s->user());
  w.device_id = s->device_id();
  w.session_id = s->session_id();
  w.node_id = opts_.node_id;
  w.heartbeat_interval_ms = opts_.limits.heartbeat_interval_ms;
  w.server_timestamp_ms = clock_.NowMs();
  s->Send(Frame(protocol::WelcomeFrame(w)));
  PresenceDeviceOnline(shard, s);
}

void ChatCore::Detach(uint32_t shard, Session* s) {
  Shard& sh = *state_[shard];
  if (sh.by_id.erase(s->id()) == 0) return;
  PresenceSessionGone(shard, s);
  if (auto st = sh.sessions.find(s->id()); st != sh.sessions.end()) {
    sh.checks.Cancel(&st->second);
    sh.sessions.erase(st);
  }
  auto it = sh.by_user.find(s->user());
  if (it != sh.by_user.end()) {
    auto& v = it->second;
    v.erase(std::remove(v.begin(), v.end(), s), v.end());
    if (v.empty()) sh.by_user.erase(it);
  }
  sessions_.fetch_sub(1);
}

void ChatCore::ForEachSession(uint32_t shard, const std::function<void(Session*)>& fn) {
  // Copy first: fn may close a session, which detaches it.
  std::vector<Session*> all;
  for (auto& [id, s] : state_[shard]->by_id) all.push_back(s);
  for (Session* s : all) fn(s);
}

void ChatCore::OnFrame(uint32_t shard, Session* s, std::string_view text) {
  Shard& sh = *state_[shard];
  auto& m = metrics::Server();
  m.frames_in.Inc();
  int64_t recv_ns = MonoNs();
  Heartbeat(shard, s);
  FrameError err;
  auto frame = sh.parser.Parse(text, &err);
  if (!frame) {
    StartLive(sh, s, false);
    m.frame_errors.Inc();
    s->Send(Frame(protocol::ErrorFrame(err.status, err.client_msg_id)));
    return;
  }

  if (!std::holds_alternative<protocol::Resume>(*frame)) StartLive(sh, s, false);

  if (std::holds_alternative<protocol::Ping>(*frame)) {
    s->Send(Frame(protocol::PongFrame(clock_.NowMs())));
    return;
  }

  if (auto* send = std::get_if<protocol::SendMessage>(&*frame)) {
    auto reject = [&](Status st) {
      m.frame_errors.Inc();
      s->Send(Frame(protocol::ErrorFrame(st, send->client_msg_id)));
    };
    // Per-connection token bucket: a flood costs the flooder, not everyone else.
    SessionState& b = sh.sessions[s->id()];
    double refill = static_cast<double>(recv_ns - b.bucket_ns) / 1e9 * opts_.limits.send_rate_per_s;
    b.tokens = std::min(opts_.limits.send_burst, b.tokens + refill);
    b.bucket_ns = recv_ns;
    if (b.tokens < 1.0) return reject(RateLimited("more than the allowed sends per second"));
    b.tokens -= 1.0;

    if (send->sender_id && *send->sender_id != FormatUserId(s->user()))
      return reject(Forbidden("sender_id is not the authenticated user"));
    auto conv = ParseConvId(send->conversation_id);
    if (!conv) return reject(Forbidden("not a member of this conversation"));

    auto req = std::make_shared<SendRequest>();
    req->msg = std::move(*send);
    req->conv = *conv;
    req->user = s->user();
    req->device = s->device_id();
    req->origin_shard = shard;
    req->origin_session = s->id();
    req->recv_ns = recv_ns;
    uint32_t owner = OwnerShard(*conv);
    if (owner == shard) {
      HandleSend(owner, std::move(req));
    } else {
      shards_[owner]->Post([this, owner, req] { HandleSend(owner, req); });
    }
    return;
  }

  if (auto* r = std::get_if<protocol::MessageReceipt>(&*frame)) return OnReceipt(shard, s, *r);
  if (auto* r = std::get_if<protocol::Resume>(&*frame)) return OnResume(shard, s, *r);
  if (auto* t = std::get_if<protocol::Typing>(&*frame)) return OnTyping(shard, s, *t);
  if (auto* p = std::get_if<protocol::PresenceSubscribe>(&*frame)) return OnPresenceSubscribe(shard, s, *p);

}

bool ChatCore::HoldOrPass(Shard& sh, Session* s, ConvId conv, Seq seq, const FramePtr& frame) {
  auto st = sh.sessions.find(s->id());
  if (st == sh.sessions.end()) return true;
  if (st->second.awaiting_first_frame) {
    if (clock_.NowMs() - st->second.attached_ms < opts_.first_frame_wait_ms) {
      st->second.early.emplace_back(conv, seq, frame);
      return false;
    }
    StartLive(sh, s, false);
  }
  if (st->second.replay.empty()) return true;
  auto r = st->second.replay.find(conv);
  if (r == st->second.replay.end()) return true;
  Replay& rp = r->second;
  if (!rp.done) {
    rp.held.emplace_back(seq, frame);  // sent in order when the replay reaches the end
    return false;
  }
  // A delivery posted before the replay read the store, run after it: already sent.
  if (seq <= rp.sent_upto) return false;
  rp.sent_upto = seq;
  return true;
}

void ChatCore::StartLive(Shard& sh, Session* s, bool for_resume) {
  auto st = sh.sessions.find(s->id());
  if (st == sh.sessions.end() || !st->second.awaiting_first_frame) return;
  SessionState& ss = st->second;
  ss.awaiting_first_frame = false;
  auto early = std::move(ss.early);
  ss.early.clear();
  if (for_resume) {
    // OnResume set up the replays; early messages of replayed conversations are held.
    for (auto& [conv, seq, f] : early)
      if (HoldOrPass(sh, s, conv, seq, f)) s->Send(f);
    return;
  }
  for (auto& [conv, seq, f] : early) s->Send(f);
}

ChatCore::ConvState* ChatCore::LoadConv(Shard& sh, ConvId conv, Status* err) {
  ++sh.tick;
  auto it = sh.convs.find(conv);
  if (it != sh.convs.end()) {
    it->second->last_used = sh.tick;
    return it->second.get();
  }
  auto c = store_.GetConversation(conv);
  if (!c.ok()) {
    *err = c.status();
    return nullptr;
  }
  auto last = store_.LastSeq(conv);
  if (!last.ok()) {
    *err = last.status();
    return nullptr;
  }
  auto receipts = store_.GetReceipts(conv);
  if (!receipts.ok()) {
    *err = receipts.status();
    return nullptr;
  }
  if (sh.convs.size() >= opts_.conv_cache_per_shard) {
    // Forget the least recently used half of the idle conversations; they reload from
    // the store on their next message. Conversations with sends in flight stay.
    uint64_t cutoff = sh.tick - opts_.conv_cache_per_shard / 2;
    std::erase_if(sh.convs, [&](auto& kv) {
      return kv.second->pending.empty() && kv.second->last_used < cutoff;
    });
  }
  auto st = std::make_unique<ConvState>();
  st->id = conv;
  st->type = c->type;
  st->members = std::make_shared<const std::vector<UserId>>(c->members);
  st->last_seq = *last;
  st->committed_seq = *last;
  for (const store::MemberReceipt& r : *receipts) st->receipts[r.user] = r;
  // Large groups count their members' receipts from what the store holds now, so the
  // first receipt routed after a load compares against committed state.
  if (st->members->size() > opts_.receipts_max_members) SyncAggregate(*st);
  st->last_used = sh.tick;
  return sh.convs.emplace(conv, std::move(st)).first->second.get();
}

void ChatCore::HandleSend(uint32_t owner, std::shared_ptr<SendRequest> req) {
  Shard& sh = *state_[owner];
  metrics::Server().send_owner_wait_seconds.Observe(static_cast<double>(MonoNs() - req->recv_ns) / 1e9);
  auto& pm = req->msg;
  auto fail = [&](Status st) {
    metrics::Server().frame_errors.Inc();
    Reply(req->origin_shard, req->origin_session, Frame(protocol::ErrorFrame(st, pm.client_msg_id)),
          0);
  };

  Status err;
  ConvState* cs = LoadConv(sh, req->conv, &err);
  if (!cs) {
    if (err.code() == Code::kNotFound) return fail(Forbidden("not a member of this conversation"));
    LOG_ERROR("conversation_load_failed").Kv("conv", FormatConvId(req->conv)).Kv("error", err.message());
    return fail(Internal("could not load the conversation"));
  }
  if (!cs->IsMember(req->user)) return fail(Forbidden("not a member of this conversation"));

  uint64_t fp = BodyFingerprint(pm.content_type, pm.content, pm.media_url, pm.target_message_id,
                                pm.reply_to);
  int64_t now = clock_.NowMs();

  if (auto p = cs->pending.find(pm.client_msg_id); p != cs->pending.end()) {
    if (p->second.fingerprint != fp)
      return fail(Conflict("client_msg_id was already used for a different message"));
    p->second.waiters.push_back({req->origin_shard, req->origin_session, req->recv_ns, true});
    return;
  }

  auto dedup = store_.FindDedup(req->conv, pm.client_msg_id);
  if (!dedup.ok()) {
    LOG_ERROR("dedup_lookup_failed").Kv("error", dedup.status().message());
    return fail(Internal("could not check for duplicates"));
  }
  if (dedup->has_value() && (*dedup)->server_ms + opts_.dedup_window_ms > now) {
    const store::DedupEntry& d = **dedup;
    if (d.fingerprint != fp)
      return fail(Conflict("client_msg_id was already used for a different message"));
    store::Message ref;
    ref.conv = req->conv;
    ref.seq = d.seq;
    ref.client_msg_id = pm.client_msg_id;
    ref.server_ms = d.server_ms;
    metrics::Server().messages_duplicate.Inc();
    Reply(req->origin_shard, req->origin_session, Frame(protocol::AckFrame(ref, true)), req->recv_ns);
    return;
  }

  // The group bulkhead's backpressure: when the lanes hold more fan-out work than the
  // shards can do in a few seconds, new group messages wait at their senders (who
  // retry with the same client_msg_id); 1:1 messages are never refused for it.
  if (cs->type == store::ConvType::kGroup &&
      bulk_backlog_.load(std::memory_order_relaxed) > opts_.max_bulk_backlog)
    return fail(Unavailable("group delivery is overloaded, retry later"));

  // Reactions, edits and deletes point at a stored message of this conversation;
  // only its author edits or deletes it. The target's new version is written in the
  // same batch as the edit/delete message itself.
  std::optional<store::Message> rewrite;
  using store::ContentType;
  if (pm.content_type == ContentType::kReaction || pm.content_type == ContentType::kEdit ||
      pm.content_type == ContentType::kDelete) {
    auto ref = ParseMessageId(pm.target_message_id);
    if (!ref || ref->conv != req->conv || ref->seq > cs->committed_seq)
      return fail(NotFound("target_message_id is not a message of this conversation"));
    if (pm.content_type != ContentType::kReaction) {
      store::Message target;
      if (auto it = cs->rewrites_in_flight.find(ref->seq); it != cs->rewrites_in_flight.end()) {
        target = it->second.first;
      } else {
        auto got = store_.GetMessage(req->conv, ref->seq);
        if (!got.ok()) {
          if (got.status().code() == Code::kNotFound)
            return fail(NotFound("target_message_id is not a message of this conversation"));
          return fail(Internal("could not read the target message"));
        }
        target = std::move(*got);
      }
      if (target.sender != req->user) return fail(Forbidden("only the author edits or deletes a message"));
      if (target.content_type != ContentType::kText && target.content_type != ContentType::kImage &&
          target.content_type != ContentType::kFile)
        return fail(BadRequest("only text, image and file messages can be edited or deleted"));
      if (target.deleted) return fail(BadRequest("the target message was deleted"));
      if (pm.content_type == ContentType::kEdit) {
        target.content = pm.content;
        target.edited_ms = now;
      } else {
        target.content.clear();
        target.media_url.clear();
        target.deleted = true;
      }
      rewrite = std::move(target);
    }
  }
  if (!pm.reply_to.empty()) {
    auto ref = ParseMessageId(pm.reply_to);
    if (!ref || ref->conv != req->conv || ref->seq > cs->committed_seq)
      return fail(BadRequest("reply_to is not a message of this conversation"));
  }
  // A media_url naming one of our attachments must name one the sender may read
  // (uploader, or member of a conversation referencing it): otherwise not_found, the
  // same for "does not exist" and "not yours". External URLs pass.
  if (!pm.media_url.empty()) {
    if (Status a = attachments::CheckSend(store_, req->user, pm.media_url, clock_.NowMs(), opts_.attachment_touch_ms);
        !a.ok())
      return fail(a);
  }

  store::Message m;
  m.conv = req->conv;
  m.seq = cs->last_seq + 1;
  m.sender = req->user;
  m.sender_device = std::move(req->device);
  m.client_msg_id = pm.client_msg_id;
  m.content_type = pm.content_type;
  m.content = std::move(pm.content);
  m.media_url = std::move(pm.media_url);
  m.target_message_id = std::move(pm.target_message_id);
  m.reply_to = std::move(pm.reply_to);
  // A client that does not say when it sent gets the server's time.
  m.sent_ms = pm.sent_timestamp_ms ? pm.sent_timestamp_ms : now;
  m.server_ms = now;
  m.fingerprint = fp;
  Seq seq = m.seq;
  std::optional<std::pair<Seq, store::Message>> in_flight_rewrite;
  if (rewrite) in_flight_rewrite.emplace(rewrite->seq, *rewrite);
  if (!commits_->Push(owner, std::move(m), opts_.max_commit_queue, std::move(rewrite))) {
    return fail(Unavailable("server overloaded, retry later"));
  }
  if (in_flight_rewrite) {
    auto& slot = cs->rewrites_in_flight[in_flight_rewrite->first];
    slot.first = std::move(in_flight_rewrite->second);
    ++slot.second;
  }
  cs->last_seq = seq;
  in_flight_.fetch_add(1);
  cs->pending.emplace(pm.client_msg_id,
                      ConvState::Pending{fp, {{req->origin_shard, req->origin_session, req->recv_ns, false}}});
}

void ChatCore::OnCommitted(uint32_t owner, std::vector<store::Message>&& msgs,
                           std::vector<ReceiptChange>&& receipts) {
  Shard& sh = *state_[owner];
  auto& met = metrics::Server();
  const size_t n = shards_.size();
  std::vector<std::vector<Ack>> acks(n);
  std::vector<std::vector<Delivery>> deliveries(n);
  // Every shard gets every message's delivery; sized once rather than regrown (the
  // regrowth was the shards' largest allocation site at 35,000 msg/s).
  for (auto& d : deliveries) d.reserve(msgs.size());

  for (store::Message& m : msgs) {
    auto cit = sh.convs.find(m.conv);
    if (cit == sh.convs.end()) {
      // Cannot happen: a conversation with sends in flight is never evicted.
      LOG_ERROR("committed_unknown_conversation").Kv("conv", FormatConvId(m.conv));
      continue;
    }
    ConvState& cs = *cit->second;
    cs.committed_seq = m.seq;
    if (m.content_type == store::ContentType::kEdit || m.content_type == store::ContentType::kDelete) {
      if (auto ref = ParseMessageId(m.target_message_id)) {
        auto rit = cs.rewrites_in_flight.find(ref->seq);
        if (rit != cs.rewrites_in_flight.end() && --rit->second.second == 0) cs.rewrites_in_flight.erase(rit);
      }
    }
    cs.recent_senders.emplace_back(m.seq, m.sender);
    if (cs.recent_senders.size() > opts_.recent_senders) cs.recent_senders.pop_front();
    auto node = cs.pending.extract(m.client_msg_id);
    FramePtr frame = Frame(protocol::MessageFrame(m));
    uint64_t exclude = 0;
    if (!node.empty()) {
      FramePtr ack, dup_ack;
      for (const auto& w : node.mapped().waiters) {
        FramePtr& f = w.duplicate ? dup_ack : ack;
        if (!f) f = Frame(protocol::AckFrame(m, w.duplicate));
        std::vector<Ack>& to = acks[w.shard];
        if (to.empty()) to.reserve(msgs.size());  // only shards that get acks allocate
        to.push_back({w.session, f, w.recv_ns});
        if (!w.duplicate) exclude = w.session;
        else met.messages_duplicate.Inc();
      }
    }
    met.messages_acked.Inc();
    const bool group = cs.type == store::ConvType::kGroup;
    for (size_t i = 0; i < n; ++i) deliveries[i].push_back({frame, cs.members, exclude, m.conv, m.seq, group});
  }
  in_flight_.fetch_sub(static_cast<int64_t>(msgs.size()));
  std::vector<RoutedReceipt> routed;
  for (const ReceiptChange& rc : receipts) {
    auto cit = sh.convs.find(rc.conv);
    if (cit != sh.convs.end() && rc.member_moved) RouteReceipts(*cit->second, rc, &routed);
  }
  // Receipt frames go to every shard (a sender's devices may be anywhere); they ride in
  // the same task as the acks and deliveries, ahead of them.
  std::shared_ptr<const std::vector<RoutedReceipt>> rs;
  if (!routed.empty()) rs = std::make_shared<const std::vector<RoutedReceipt>>(std::move(routed));

  for (uint32_t target = 0; target < n; ++target) {
    if (acks[target].empty() && deliveries[target].empty() && !rs) continue;
    auto a = std::make_shared<std::vector<Ack>>(std::move(acks[target]));
    auto d = std::make_shared<std::vector<Delivery>>(std::move(deliveries[target]));
    auto run = [this, target, a, d, rs] {
      Shard& ts = *state_[target];
      auto& mm = metrics::Server();
      if (rs) {
        for (const RoutedReceipt& r : *rs) {
          auto it = ts.by_user.find(r.sender);
          if (it == ts.by_user.end()) continue;
          for (Session* s : it->second) SendReceipt(ts, s, r.conv, r.recipient, r.read, r.up_to, r.frame);
        }
      }
      int64_t now = MonoNs();
      for (const Ack& ack : *a) {
        auto it = ts.by_id.find(ack.session);
        if (it == ts.by_id.end()) continue;  // gone: the client retries and gets duplicate:true
        it->second->Send(ack.frame);
        mm.ack_latency_seconds.Observe(static_cast<double>(now - ack.recv_ns) / 1e9);
      }
      // Direct conversations are delivered now; groups go through the bulkhead. The
      // lane is chosen by conversation type, which never changes, so all of one
      // conversation's messages take the same path and stay in order.
      for (Delivery& dl : *d) {
        if (dl.group) QueueBulk(target, std::move(dl));
        else DeliverRange(ts, dl, 0, dl.members->size());
      }
    };
    if (target == owner) run();
    else shards_[target]->Post(std::move(run));
  }
}

void ChatCore::DeliverRange(Shard& sh, const Delivery& dl, size_t from, size_t to) {
  auto& mm = metrics::Server();
  const auto& members = *dl.members;
  uint64_t sent = 0;
  for (size_t i = from; i < to; ++i) {
    auto it = sh.by_user.find(members[i]);
    if (it == sh.by_user.end()) continue;
    for (Session* s : it->second) {
      if (s->id() == dl.exclude_session) continue;
      if (!HoldOrPass(sh, s, dl.conv, dl.seq, dl.frame)) continue;
      s->Send(dl.frame);
      ++sent;
    }
  }
  if (sent) mm.deliveries.Inc(sent);
}

void ChatCore::QueueBulk(uint32_t shard, Delivery&& d) {
  BulkLane& lane = state_[shard]->bulk;
  const int64_t visits = static_cast<int64_t>(d.members->size());
  auto [it, fresh] = lane.by_conv.try_emplace(d.conv);
  if (it->second.queue.empty()) lane.turns.push_back(d.conv);
  it->second.queue.push_back(std::move(d));
  lane.backlog += visits;
  bulk_backlog_.fetch_add(visits, std::memory_order_relaxed);
  metrics::Server().bulk_backlog.Add(visits);
  if (!lane.drain_posted) {
    lane.drain_posted = true;
    shards_[shard]->Post([this, shard] { DrainBulk(shard); });
  }
}

void ChatCore::DrainBulk(uint32_t shard) {
  Shard& sh = *state_[shard];
  BulkLane& lane = sh.bulk;
  lane.drain_posted = false;
  size_t budget = std::max<size_t>(1, opts_.bulk_slice_sends);
  int64_t done = 0;
  while (budget > 0 && !lane.turns.empty()) {
    ConvId conv = lane.turns.front();
    auto it = lane.by_conv.find(conv);
    BulkLane::Pending& p = it->second;
    const Delivery& d = p.queue.front();
    const size_t total = d.members->size();
    const size_t to = std::min(total, p.next_member + budget);
    DeliverRange(sh, d, p.next_member, to);
    budget -= to - p.next_member;
    done += static_cast<int64_t>(to - p.next_member);
    p.next_member = to;
    if (to < total) break;  // slice used up mid-message: continue here next time
    // One whole message of this conversation went out: its turn ends.
    p.queue.pop_front();
    p.next_member = 0;
    lane.turns.pop_front();
    if (p.queue.empty()) lane.by_conv.erase(it);
    else lane.turns.push_back(conv);
  }
  lane.backlog -= done;
  bulk_backlog_.fetch_sub(done, std::memory_order_relaxed);
  metrics::Server().bulk_backlog.Add(-done);
  if (!lane.turns.empty()) {
    // Posted behind everything already queued on this shard: that is the bulkhead.
    lane.drain_posted = true;
    shards_[shard]->Post([this, shard] { DrainBulk(shard); });
  }
}

void ChatCore::Reply(uint32_t shard, uint64_t session_id, FramePtr frame, int64_t recv_ns) {
  auto run = [this, shard, session_id, frame, recv_ns] {
    Shard& sh = *state_[shard];
    auto it = sh.by_id.find(session_id);
    if (it == sh.by_id.end()) return;
    it->second->Send(frame);
    if (recv_ns) metrics::Server().ack_latency_seconds.Observe(static_cast<double>(MonoNs() - recv_ns) / 1e9);
  };
  // Replies posted to a shard, like acks, keep FIFO order with everything else the
  // owner sent that shard.
  shards_[shard]->Post(std::move(run));
}

}  // namespace sb::chat
