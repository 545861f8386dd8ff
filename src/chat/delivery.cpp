// Receipts (SENT -> DELIVERED -> READ, routed to the senders) and resume (catch-up
// after any disconnect, with no window between the replay and live delivery).
//
// Receipts are handled by the conversation's owner shard, which keeps each member's
// state in memory (loaded with the conversation). A change is written in the next
// group commit together with the device's cursor, and only then routed, so what a
// sender is told is always what a later resume would tell it.
//
// Resume runs on the connection's shard. The connection is registered for live
// delivery before `resume` can even arrive (at `welcome`), so every message committed
// later reaches it live; the replay reads everything already in the store. Live
// messages of a conversation still being replayed are held and sent after the replay
// of that conversation, skipping any seq the replay already sent: nothing falls
// between the two, nothing is sent twice, and order is kept.
#include <algorithm>
#include <limits>
#include <map>

#include "base/json_writer.h"
#include "chat/chat_core.h"
#include "chat/commit_queue.h"
#include "chat/core_state.h"
#include "metrics/metrics.h"
#include "protocol/server_frames.h"

namespace sb::chat {
namespace {

FramePtr ReceiptFrame(ConvId conv, Seq up_to, UserId recipient, UserId sender, bool read, int64_t ts) {
  JsonWriter w(320);
  w.BeginObject()
      .Field("event", "message_receipt")
      .Key("message_id").MessageId(conv, up_to)
      .Key("conversation_id").ConvId(conv)
      .Key("recipient_id").UserId(recipient)
      .Key("sender_id").UserId(sender)
      .Field("status", read ? "READ" : "DELIVERED")
      .Field("up_to_seq", static_cast<uint64_t>(up_to))
      .Field("receipt_timestamp_ms", ts)
      .EndObject();
  return MakeFrame(std::move(w).Take());
}

// "Delivered to all" / "read by all" of a large group: the seed's frame without a
// single recipient, marked `all_members`.
FramePtr AggregateFrame(ConvId conv, Seq up_to, UserId sender, bool read, int64_t ts) {
  JsonWriter w(320);
  w.BeginObject()
      .Field("event", "message_receipt")
      .Key("message_id").MessageId(conv, up_to)
      .Key("conversation_id").ConvId(conv)
      .Key("sender_id").UserId(sender)
      .Field("all_members", true)
      .Field("status", read ? "READ" : "DELIVERED")
      .Field("up_to_seq", static_cast<uint64_t>(up_to))
      .Field("receipt_timestamp_ms", ts)
      .EndObject();
  return MakeFrame(std::move(w).Take());
}

// The lowest seq of `counts` (seq -> members there) once `own` (one member's seq) is
// left out: what every member but that one has reached. 0 when nobody else is counted.
Seq LowestWithout(const std::map<Seq, uint32_t>& counts, Seq own) {
  auto it = counts.begin();
  if (it == counts.end()) return 0;
  if (it->first == own && it->second == 1) ++it;
  return it == counts.end() ? 0 : it->first;
}

void Count(std::map<Seq, uint32_t>& counts, Seq seq, int delta) {
  uint32_t& n = counts[seq];
  n = static_cast<uint32_t>(static_cast<int64_t>(n) + delta);
  if (n == 0) counts.erase(seq);
}

// The shape of the two lowest keys: every member's "all but me" value follows from it,
// so when it does not change, no aggregate changes.
struct Lowest {
  Seq first = 0, second = 0;
  bool alone = false;  // exactly one member stands at `first`
  bool operator==(const Lowest&) const = default;
};
Lowest LowestOf(const std::map<Seq, uint32_t>& counts) {
  Lowest l;
  auto it = counts.begin();
  if (it == counts.end()) return l;
  l.first = it->first;
  l.alone = it->second == 1;
  if (++it != counts.end()) l.second = it->first;
  return l;
}

void SendError(Session* s, Status st) {
  metrics::Server().frame_errors.Inc();
  s->Send(MakeFrame(protocol::ErrorFrame(st)));
}

}  // namespace

struct ChatCore::ReceiptRequest {
  ConvId conv = 0;
  UserId user = 0;
  std::string device;
  bool read = false;
  Seq up_to = 0;
  int64_t ts = 0;
  uint32_t origin_shard = 0;
  uint64_t origin_session = 0;
};

// ---- receipts ------------------------------------------------------------------

void ChatCore::OnReceipt(uint32_t shard, Session* s, const protocol::MessageReceipt& r) {
  auto conv = ParseConvId(r.conversation_id);
  if (!conv) return SendError(s, Forbidden("not a member of this conversation"));
  ReceiptRequest req;
  req.conv = *conv;
  req.user = s->user();
  req.device = s->device_id();
  req.read = r.status == "READ";
  req.ts = clock_.NowMs();
  req.origin_shard = shard;
  req.origin_session = s->id();
  if (r.up_to_seq) {
    req.up_to = *r.up_to_seq;
  } else {
    auto ref = ParseMessageId(r.message_id);
    if (!ref || ref->conv != *conv) return SendError(s, BadRequest("message_id is not a message of this conversation"));
    req.up_to = ref->seq;
  }
  uint32_t owner = OwnerShard(*conv);
  RunOn(shard, owner, [this, owner, req] { HandleReceipt(owner, req); });
}

void ChatCore::HandleReceipt(uint32_t owner, const ReceiptRequest& r) {
  Shard& sh = *state_[owner];
  Status err;
  ConvState* cs = LoadConv(sh, r.conv, &err);
  if (!cs || !cs->IsMember(r.user)) {
    Reply(r.origin_shard, r.origin_session,
          MakeFrame(protocol::ErrorFrame(Forbidden("not a member of this conversation"))), 0);
    return;
  }
  // A receipt cannot cover what is not stored yet (no device has seen it).
  Seq up = std::min(r.up_to, cs->committed_seq);
  if (up == 0) return;

  ReceiptChange rc;
  rc.conv = r.conv;
  store::MemberReceipt& st = cs->receipts[r.user];
  st.user = r.user;
  rc.before = st;
  if (up > st.delivered) {
    st.delivered = up;
    st.delivered_ms = r.ts;
  }
  if (r.read && up > st.read) {
    st.read = up;
    st.read_ms = r.ts;
  }
  rc.after = st;
  rc.member_moved = rc.after.delivered != rc.before.delivered || rc.after.read != rc.before.read;

  // Any receipt from a device proves it holds everything up to `up`.
  std::string& key = sh.scratch_key;  // the user's 8 bytes, then the device id
  key.assign(reinterpret_cast<const char*>(&r.user), sizeof r.user).append(r.device);
  auto cit = cs->device_cursors.find(std::string_view(key));
  const bool fresh = cit == cs->device_cursors.end();
  if (fresh) {
    cit = cs->device_cursors.emplace(key, 0).first;
    // First receipt of this device since the conversation was loaded: start from the
    // stored cursor, so that a late, lower receipt never moves the record back.
    auto stored = store_.GetDeviceCursor(r.user, r.device, r.conv);
    if (stored.ok()) cit->second = *stored;
  }
  Seq& cur = cit->second;
  if (up > cur) {
    cur = up;
    rc.cursor = store::DeviceCursor{r.user, r.device, r.conv, up};
  }
  if (!rc.member_moved && !rc.cursor) return;  // nothing moves backward or twice
  metrics::Server().receipts_stored.Inc();
  commits_->PushReceipt(owner, std::move(rc));
}

std::vector<std::pair<UserId, Seq>> ChatCore::SendersIn(ConvState& cs, Seq lo, Seq hi, UserId except) {
  // (sender, seq) of every message in range, then each sender's highest, by sender id.
  // A vector, sorted once: a receipt usually covers one or two messages, and this runs
  // for every receipt (a map allocated a node per sender).
  std::vector<std::pair<UserId, Seq>> top;
  if (lo > hi) return top;
  if (!cs.recent_senders.empty() && cs.recent_senders.front().first <= lo) {
    for (auto it = cs.recent_senders.rbegin(); it != cs.recent_senders.rend() && it->first >= lo; ++it)
      if (it->first <= hi && it->second != except) top.emplace_back(it->second, it->first);
  } else {
    // Older than what memory holds: read the range (bounded), else tell every member.
    constexpr Seq kMaxScan = 10000;
    if (hi - lo + 1 > kMaxScan) {
      for (UserId u : *cs.members)
        if (u != except) top.emplace_back(u, hi);
    } else {
      auto page = store_.ReadAfter(cs.id, lo - 1, hi - lo + 1);
      if (page.ok())
        for (const auto& m : *page)
          if (m.sender != except) top.emplace_back(m.sender, m.seq);
    }
  }
  if (top.size() > 1) {
    std::sort(top.begin(), top.end(), [](const auto& x, const auto& y) {
      return x.first != y.first ? x.first < y.first : x.second > y.second;
    });
    top.erase(std::unique(top.begin(), top.end(), [](const auto& x, const auto& y) { return x.first == y.first; }),
              top.end());
  }
  return top;
}

void ChatCore::RouteReceipts(ConvState& cs, const ReceiptChange& rc, std::vector<RoutedReceipt>* out) {
  // READ implies DELIVERED: send READ for what was read, DELIVERED only for what was
  // delivered beyond it. One cumulative frame per sender, not one per message.
  if (cs.members->size() > opts_.receipts_max_members) return RouteAggregate(cs, rc, out);
  cs.aggregate.reset();  // shrank below the threshold: per-member receipts again
  const size_t before = out->size();
  UserId recipient = rc.after.user;
  if (rc.after.read > rc.before.read) {
    for (auto [sender, seq] : SendersIn(cs, rc.before.read + 1, rc.after.read, recipient))
      out->push_back({cs.id, sender, recipient, true, rc.after.read,
                      ReceiptFrame(cs.id, rc.after.read, recipient, sender, true, rc.after.read_ms)});
  }
  if (rc.after.delivered > rc.before.delivered && rc.after.delivered > rc.after.read) {
    Seq lo = std::max(rc.before.delivered, rc.after.read) + 1;
    for (auto [sender, seq] : SendersIn(cs, lo, rc.after.delivered, recipient))
      out->push_back({cs.id, sender, recipient, false, rc.after.delivered,
                      ReceiptFrame(cs.id, rc.after.delivered, recipient, sender, false, rc.after.delivered_ms)});
  }
  metrics::Server().receipts_routed.Inc(out->size() - before);
}

void ChatCore::SyncAggregate(ConvState& cs) {
  using Aggregate = ConvState::Aggregate;
  if (cs.aggregate && cs.aggregate->members == cs.members) return;
  // First use, or the membership changed: follow the member list. Marks of members who
  // stay are kept (they follow committed receipts); the others start from the receipts
  // in memory, which equal the store's when the conversation was just loaded (where
  // LoadConv builds this) and may lead it by one commit otherwise. The counts are
  // rebuilt: O(members), on load and on a membership change only.
  auto fresh = std::make_unique<Aggregate>();
  fresh->members = cs.members;
  for (UserId u : *cs.members) {
    std::pair<Seq, Seq> mark{0, 0};
    bool kept = false;
    if (cs.aggregate) {
      if (auto it = cs.aggregate->marks.find(u); it != cs.aggregate->marks.end()) mark = it->second, kept = true;
    }
    if (!kept) {
      if (auto it = cs.receipts.find(u); it != cs.receipts.end()) mark = {it->second.delivered, it->second.read};
    }
    fresh->marks.emplace(u, mark);
    Count(fresh->delivered, mark.first, +1);
    Count(fresh->read, mark.second, +1);
  }
  if (cs.aggregate) fresh->routed = std::move(cs.aggregate->routed);
  cs.aggregate = std::move(fresh);
}

void ChatCore::RouteAggregate(ConvState& cs, const ReceiptChange& rc, std::vector<RoutedReceipt>* out) {
  SyncAggregate(cs);
  ConvState::Aggregate& ag = *cs.aggregate;
  auto mit = ag.marks.find(rc.after.user);
  if (mit == ag.marks.end()) return;  // no longer a member
  const Lowest d0 = LowestOf(ag.delivered), r0 = LowestOf(ag.read);
  auto& [md, mr] = mit->second;
  if (rc.after.delivered > md) {
    Count(ag.delivered, md, -1);
    Count(ag.delivered, rc.after.delivered, +1);
    md = rc.after.delivered;
  }
  if (rc.after.read > mr) {
    Count(ag.read, mr, -1);
    Count(ag.read, rc.after.read, +1);
    mr = rc.after.read;
  }
  const Lowest d1 = LowestOf(ag.delivered), r1 = LowestOf(ag.read);
  if (d0 == d1 && r0 == r1) return;  // the slowest members did not move: nobody's "all" did

  // Whose "all" may have moved. When the lowest mark and whether one member stands
  // there alone are unchanged, only that lone member's "all" (the second mark) moved:
  // the common case of one member lagging far behind (offline) while the rest move,
  // answered without looking at any message. Otherwise: the senders of the messages
  // above the old lowest mark, up to the highest value any "all" can now take.
  std::vector<UserId> candidates;
  if (d0.first == d1.first && d0.alone == d1.alone && r0.first == r1.first && r0.alone == r1.alone) {
    // ...and only if it sent something that the new value covers and the last frame it
    // got did not (the recent senders ring; older messages are covered by `resume`).
    auto news_for = [&](UserId u, const std::pair<Seq, Seq>& m) {
      auto rt = ag.routed.find(u);
      const Seq rd = rt == ag.routed.end() ? 0 : rt->second.first;
      const Seq rr = rt == ag.routed.end() ? 0 : rt->second.second;
      const Seq ad = LowestWithout(ag.delivered, m.first), ar = LowestWithout(ag.read, m.second);
      for (auto it = cs.recent_senders.rbegin(); it != cs.recent_senders.rend() && it->first > std::min(rd, rr); ++it)
        if (it->second == u && ((it->first > rd && it->first <= ad) || (it->first > rr && it->first <= ar)))
          return true;
      return false;
    };
    for (const auto& [u, m] : ag.marks)
      if (((d1.alone && m.first == d1.first) || (r1.alone && m.second == r1.first)) && news_for(u, m))
        candidates.push_back(u);
  } else {
    const Seq lo = std::min(d0.first, r0.first) + 1;
    const Seq hi = std::min(cs.committed_seq, std::max(d1.second, d1.first));
    for (auto [sender, top] : SendersIn(cs, lo, hi, 0)) candidates.push_back(sender);
  }
  const size_t before = out->size();
  const int64_t now = clock_.NowMs();
  for (UserId sender : candidates) {
    auto own = ag.marks.find(sender);
    if (own == ag.marks.end()) continue;  // left the group
    const Seq all_read = LowestWithout(ag.read, own->second.second);
    const Seq all_delivered = LowestWithout(ag.delivered, own->second.first);
    auto& [sent_delivered, sent_read] = ag.routed[sender];
    // READ implies DELIVERED: DELIVERED only for what is delivered beyond the read mark.
    if (all_read > sent_read) {
      sent_read = all_read;
      sent_delivered = std::max(sent_delivered, all_read);
      out->push_back({cs.id, sender, kAllMembers, true, all_read, AggregateFrame(cs.id, all_read, sender, true, now)});
    }
    if (all_delivered > sent_delivered) {
      sent_delivered = all_delivered;
      out->push_back(
          {cs.id, sender, kAllMembers, false, all_delivered, AggregateFrame(cs.id, all_delivered, sender, false, now)});
    }
  }
  metrics::Server().receipts_routed.Inc(out->size() - before);
}

void ChatCore::SendReceipt(Shard& sh, Session* s, ConvId conv, UserId recipient, bool read, Seq up_to,
                           const FramePtr& frame) {
  auto st = sh.sessions.find(s->id());
  if (st != sh.sessions.end()) {
    Seq& mark = st->second.receipt_marks[{conv, recipient, read}];
    if (up_to <= mark) return;
    mark = up_to;
  }
  s->Send(frame);
}

// ---- resume --------------------------------------------------------------------

void ChatCore::OnResume(uint32_t shard, Session* s, const protocol::Resume& r) {
  Shard& sh = *state_[shard];
  SessionState& ss = sh.sessions[s->id()];
  if (ss.resuming) {
    StartLive(sh, s, false);
    return SendError(s, BadRequest("a resume is already running on this connection"));
  }
  auto convs = store_.ListConversationsOf(s->user());
  if (!convs.ok()) {
    StartLive(sh, s, false);
    return SendError(s, Internal("could not list conversations"));
  }
  // Where the client gave no cursor for a conversation, the server's record of what
  // this device acknowledged decides: unacknowledged messages are sent again.
  std::unordered_map<ConvId, Seq> recorded;
  auto cursors = store_.GetDeviceCursors(s->user(), s->device_id());
  if (cursors.ok())
    for (auto [c, seq] : *cursors) recorded[c] = seq;
  std::unordered_map<ConvId, Seq> given;
  for (auto& [id, seq] : r.cursors)
    if (auto c = ParseConvId(id)) given[*c] = seq;

  ss.resuming = true;
  ss.replayed = 0;
  ss.truncated.clear();
  ss.replay_queue.assign(convs->rbegin(), convs->rend());  // popped from the back
  for (ConvId c : *convs) {
    Replay& rp = ss.replay[c];
    Seq from = given.count(c) ? given[c] : recorded[c];
    // A cursor past the end (a confused client) must not make live messages look
    // already sent.
    if (auto last = store_.LastSeq(c); last.ok()) from = std::min(from, *last);
    // Retention dropped messages this device never got: say so (no silent gap).
    if (auto first = store_.FirstRetained(c); first.ok() && from + 1 < *first) ss.truncated.push_back(c);
    // A second resume on the same connection never re-sends what this connection got.
    rp.sent_upto = rp.done ? std::max(rp.sent_upto, from) : from;
    rp.done = false;
  }
  ss.resume_convs = std::move(*convs);
  StartLive(sh, s, true);
  ContinueReplay(shard, s->id());
}

void ChatCore::ContinueReplay(uint32_t shard, uint64_t session_id) {
  Shard& sh = *state_[shard];
  auto sit = sh.by_id.find(session_id);
  auto stit = sh.sessions.find(session_id);
  if (sit == sh.by_id.end() || stit == sh.sessions.end()) return;  // closed meanwhile
  Session* s = sit->second;
  SessionState& ss = stit->second;

  while (!ss.replay_queue.empty()) {
    ConvId c = ss.replay_queue.back();
    Replay& rp = ss.replay[c];
    auto page = store_.ReadAfter(c, rp.sent_upto, opts_.replay_page);
    if (!page.ok()) {
      SendError(s, Internal("could not read history"));
      page = std::vector<store::Message>{};
    }
    for (const store::Message& m : *page) {
      s->Send(MakeFrame(protocol::MessageFrame(m)));
      rp.sent_upto = m.seq;
      ++ss.replayed;
    }
    if (page->size() == opts_.replay_page) {
      // More to come: continue when the client has taken most of it.
      s->WhenQueueBelow(opts_.replay_queue_watermark, [this, shard, session_id] {
        shards_[shard]->Post([this, shard, session_id] { ContinueReplay(shard, session_id); });
      });
      return;
    }
    // The end of the store for this conversation: what arrived live meanwhile follows.
    std::sort(rp.held.begin(), rp.held.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [seq, f] : rp.held) {
      if (seq <= rp.sent_upto) continue;
      s->Send(f);
      rp.sent_upto = seq;
    }
    rp.held.clear();
    rp.held.shrink_to_fit();
    rp.done = true;
    ss.replay_queue.pop_back();
  }

  const std::vector<ConvId> convs = std::move(ss.resume_convs);
  ss.resume_convs = {};
  ReplayReceipts(shard, s, convs);
  JsonWriter w(128);
  w.BeginObject()
      .Field("event", "resume_done")
      .Field("replayed", ss.replayed)
      .Field("conversations", static_cast<uint64_t>(convs.size()))
      .Key("truncated")
      .BeginArray();
  for (ConvId c : ss.truncated) w.ConvId(c);
  w.EndArray().EndObject();
  s->Send(MakeFrame(std::move(w).Take()));
  ss.resuming = false;
  metrics::Server().resumes.Inc();
  metrics::Server().replayed_messages.Inc(ss.replayed);
}

void ChatCore::ReplayReceipts(uint32_t shard, Session* s, const std::vector<ConvId>& convs) {
  // What the other members received and read, as cumulative receipts addressed to
  // this user: a sender who was away learns the ticks it missed.
  for (ConvId c : convs) {
    auto conv = store_.GetConversation(c);
    if (!conv.ok()) continue;
    // The list was taken when the resume started: one the user left since gets nothing.
    if (!std::binary_search(conv->members.begin(), conv->members.end(), s->user())) continue;
    auto rs = store_.GetReceipts(c);
    if (!rs.ok()) continue;
    Shard& sh = *state_[shard];
    if (conv->members.size() > opts_.receipts_max_members) {
      // A large group: "delivered to all" / "read by all" of the others (a member
      // without a receipt holds both at 0). Replayed even when this user sent nothing
      // up to there: a cumulative receipt over no message of its own says nothing wrong.
      Seq all_delivered = std::numeric_limits<Seq>::max(), all_read = all_delivered;
      int64_t delivered_ms = 0, read_ms = 0;
      size_t counted = 0;
      for (const store::MemberReceipt& r : *rs) {
        if (r.user == s->user() || !std::binary_search(conv->members.begin(), conv->members.end(), r.user))
          continue;
        ++counted;
        all_delivered = std::min(all_delivered, r.delivered);
        all_read = std::min(all_read, r.read);
        delivered_ms = std::max(delivered_ms, r.delivered_ms);
        read_ms = std::max(read_ms, r.read_ms);
      }
      const bool self_member = std::binary_search(conv->members.begin(), conv->members.end(), s->user());
      if (counted + (self_member ? 1 : 0) < conv->members.size()) continue;  // someone has no receipt: 0
      if (all_read > 0)
        SendReceipt(sh, s, c, kAllMembers, true, all_read, AggregateFrame(c, all_read, s->user(), true, read_ms));
      if (all_delivered > all_read)
        SendReceipt(sh, s, c, kAllMembers, false, all_delivered,
                    AggregateFrame(c, all_delivered, s->user(), false, delivered_ms));
      continue;
    }
    for (const store::MemberReceipt& r : *rs) {
      if (r.user == s->user()) continue;
      if (r.read > 0) SendReceipt(sh, s, c, r.user, true, r.read, ReceiptFrame(c, r.read, r.user, s->user(), true, r.read_ms));
      if (r.delivered > r.read)
        SendReceipt(sh, s, c, r.user, false, r.delivered,
                    ReceiptFrame(c, r.delivered, r.user, s->user(), false, r.delivered_ms));
    }
  }
}

}  // namespace sb::chat
