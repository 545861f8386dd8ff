// Presence (online / offline / last seen) and typing: in memory, never stored.
//
// Each user's presence lives on the user's owner shard (user id % shards), the way a
// conversation's sequence lives on the conversation's owner shard. A device counts as
// online from its `welcome` until its socket closes or it stays silent for
// presence_ttl_ms (any frame is a heartbeat). Changes go only to subscribers, and a
// user whose last device leaves is announced offline only after presence_grace_ms, so
// a reconnect within the grace announces nothing (flap damping).
//
// The cluster shape moves the registry to Redis with the seed's keys:
//   presence:user_session:<user>  hash: gateway, client ip, last active
//   presence:status:<user>        "online" EX 30, refreshed by heartbeats
// (see docs/architecture.md, "Seams").
#include <algorithm>
#include <future>
#include <limits>

#include "base/json_writer.h"
#include "chat/chat_core.h"
#include "chat/core_state.h"
#include "metrics/metrics.h"
#include "protocol/server_frames.h"

namespace sb::chat {
namespace {

FramePtr PresenceFrame(UserId user, bool online, int64_t last_seen_ms) {
  JsonWriter w(128);
  w.BeginObject()
      .Field("event", "presence")
      .Key("user_id").UserId(user)
      .Field("status", online ? "online" : "offline");
  if (last_seen_ms > 0) w.Field("last_seen_ms", last_seen_ms);
  else w.Key("last_seen_ms").Null();
  w.EndObject();
  return MakeFrame(std::move(w).Take());
}

FramePtr TypingFrame(ConvId conv, UserId user, bool started) {
  JsonWriter w(128);
  w.BeginObject()
      .Field("event", "typing")
      .Key("conversation_id").ConvId(conv)
      .Key("user_id").UserId(user)
      .Field("state", started ? "started" : "stopped")
      .EndObject();
  return MakeFrame(std::move(w).Take());
}

}  // namespace

void ChatCore::RunOn(uint32_t from, uint32_t shard, Task fn) {
  if (from == shard) fn();
  else shards_[shard]->Post(std::move(fn));
}

void ChatCore::SendToUsers(uint32_t shard, const std::vector<UserId>& users, const FramePtrT& frame,
                           UserId except_user, uint64_t except_session) {
  Shard& sh = *state_[shard];
  for (UserId u : users) {
    if (u == except_user) continue;
    auto it = sh.by_user.find(u);
    if (it == sh.by_user.end()) continue;
    for (Session* s : it->second)
      if (s->id() != except_session) s->Send(frame);
  }
}

// ---- presence: the session's side ------------------------------------------------

void ChatCore::Heartbeat(uint32_t shard, Session* s) {
  auto it = state_[shard]->sessions.find(s->id());
  if (it == state_[shard]->sessions.end()) return;
  SessionState& ss = it->second;
  ss.last_active_ms = clock_.NowMs();
  if (!ss.online) {
    ss.online = true;
    state_[shard]->checks.ScheduleNoLater(&ss, ss.last_active_ms + opts_.presence_ttl_ms);
    PresenceDeviceOnline(shard, s);
  }
}

void ChatCore::ScheduleCheck(Shard& sh, SessionState& ss) {
  int64_t due = std::numeric_limits<int64_t>::max();
  if (ss.awaiting_first_frame) due = ss.attached_ms + opts_.first_frame_wait_ms;
  if (ss.online) due = std::min(due, ss.last_active_ms + opts_.presence_ttl_ms);
  if (due == std::numeric_limits<int64_t>::max()) sh.checks.Cancel(&ss);
  else sh.checks.Schedule(&ss, due);
}

void ChatCore::PresenceDeviceOnline(uint32_t shard, Session* s) {
  UserId user = s->user();
  uint64_t sid = s->id();
  uint32_t owner = UserOwnerShard(user);
  RunOn(shard, owner, [this, owner, user, sid, shard] { OwnerDeviceOnline(owner, user, sid, shard); });
}

void ChatCore::PresenceSessionGone(uint32_t shard, Session* s) {
  Shard& sh = *state_[shard];
  auto it = sh.sessions.find(s->id());
  if (it == sh.sessions.end()) return;
  UserId user = s->user();
  uint64_t sid = s->id();
  if (it->second.online) {
    uint32_t owner = UserOwnerShard(user);
    RunOn(shard, owner, [this, owner, user, sid] { OwnerDeviceOffline(owner, user, sid); });
  }
  for (UserId target : it->second.subscriptions) {
    uint32_t owner = UserOwnerShard(target);
    RunOn(shard, owner, [this, owner, target, shard, sid] {
      auto p = state_[owner]->presence.find(target);
      if (p == state_[owner]->presence.end()) return;
      auto& subs = p->second.subscribers;
      subs.erase(std::remove(subs.begin(), subs.end(), std::make_pair(shard, sid)), subs.end());
    });
  }
}

void ChatCore::OnPresenceSubscribe(uint32_t shard, Session* s, const protocol::PresenceSubscribe& p) {
  Shard& sh = *state_[shard];
  SessionState& ss = sh.sessions[s->id()];
  if (ss.subscriptions.size() + p.user_ids.size() > opts_.max_presence_subscriptions) {
    s->Send(MakeFrame(protocol::ErrorFrame(
        BadRequest("at most " + std::to_string(opts_.max_presence_subscriptions) +
                   " presence subscriptions per connection"))));
    return;
  }
  auto mine = store_.ListConversationsOf(s->user());
  if (!mine.ok()) {
    s->Send(MakeFrame(protocol::ErrorFrame(Internal("could not check conversations"))));
    return;
  }
  uint64_t sid = s->id();
  for (const std::string& id : p.user_ids) {
    auto target = ParseUserId(id);
    // Ids that are malformed, unknown, or of users who share no conversation with the
    // subscriber get no answer at all: a stranger learns nothing.
    if (!target) continue;
    if (std::find(ss.subscriptions.begin(), ss.subscriptions.end(), *target) != ss.subscriptions.end())
      continue;
    if (*target != s->user()) {
      auto theirs = store_.ListConversationsOf(*target);
      if (!theirs.ok()) continue;
      std::vector<ConvId> common;
      std::set_intersection(mine->begin(), mine->end(), theirs->begin(), theirs->end(),
                            std::back_inserter(common));
      if (common.empty()) continue;
    }
    ss.subscriptions.push_back(*target);
    uint32_t owner = UserOwnerShard(*target);
    UserId t = *target;
    RunOn(shard, owner, [this, owner, t, shard, sid] {
      UserPresence& up = state_[owner]->presence[t];
      up.subscribers.emplace_back(shard, sid);
      FramePtr f = PresenceFrame(t, up.told_online, VisibleLastSeen(owner, t, up));
      RunOn(owner, shard, [this, shard, sid, f] {
        auto it = state_[shard]->by_id.find(sid);
        if (it != state_[shard]->by_id.end()) it->second->Send(f);
      });
    });
  }
}

// ---- presence: the owner's side --------------------------------------------------

void ChatCore::OwnerDeviceOnline(uint32_t owner, UserId user, uint64_t session, uint32_t session_shard) {
  UserPresence& up = state_[owner]->presence[user];
  state_[owner]->registry->DeviceOnline(user, session, opts_.node_id, clock_.NowMs());
  up.offline_since_ms = 0;
  if (!up.told_online) {
    up.told_online = true;
    AnnouncePresence(owner, user);
  }
}

void ChatCore::OwnerDeviceOffline(uint32_t owner, UserId user, uint64_t session) {
  Shard& sh = *state_[owner];
  auto it = sh.presence.find(user);
  if (it == sh.presence.end()) return;
  UserPresence& up = it->second;
  int64_t now = clock_.NowMs();
  if (!sh.registry->DeviceOffline(user, session, now)) return;  // another device remains
  up.offline_since_ms = now;
  if (opts_.presence_grace_ms <= 0) {
    up.told_online = false;
    AnnouncePresence(owner, user);
  } else {
    sh.pending_offline.emplace_back(now, user);
  }
}

void ChatCore::AnnouncePresence(uint32_t owner, UserId user) {
  UserPresence& up = state_[owner]->presence[user];
  metrics::Server().presence_changes.Inc();
  if (up.subscribers.empty()) return;
  FramePtr f = PresenceFrame(user, up.told_online, VisibleLastSeen(owner, user, up));
  std::vector<std::vector<uint64_t>> by_shard(shards_.size());
  for (auto& [shard, sid] : up.subscribers) by_shard[shard].push_back(sid);
  for (uint32_t t = 0; t < by_shard.size(); ++t) {
    if (by_shard[t].empty()) continue;
    RunOn(owner, t, [this, t, f, sids = std::move(by_shard[t])] {
      for (uint64_t sid : sids) {
        auto it = state_[t]->by_id.find(sid);
        if (it != state_[t]->by_id.end()) it->second->Send(f);
      }
    });
  }
}

std::optional<PresenceView> ChatCore::QueryPresence(UserId viewer, UserId target) {
  if (viewer != target && !SharesConversation(viewer, target)) return std::nullopt;
  auto promise = std::make_shared<std::promise<PresenceView>>();
  auto fut = promise->get_future();
  uint32_t owner = UserOwnerShard(target);
  shards_[owner]->Post([this, owner, viewer, target, promise] {
    PresenceView v;
    auto& pres = state_[owner]->presence;
    UserPresence& up = pres[target];
    v.online = up.told_online;
    v.last_seen_ms = viewer == target
                         ? (v.online ? clock_.NowMs() : state_[owner]->registry->Get(target).last_seen_ms)
                         : VisibleLastSeen(owner, target, up);
    promise->set_value(v);
  });
  if (fut.wait_for(std::chrono::seconds(2)) != std::future_status::ready) return PresenceView{};
  return fut.get();
}

int64_t ChatCore::VisibleLastSeen(uint32_t owner, UserId user, UserPresence& up) {
  if (up.hide_last_seen < 0) {
    auto st = store_.GetUserSettings(user);
    up.hide_last_seen = st.ok() && st->hide_last_seen ? 1 : 0;
  }
  if (up.hide_last_seen == 1) return 0;
  return up.told_online ? clock_.NowMs() : state_[owner]->registry->Get(user).last_seen_ms;
}

void ChatCore::ConversationChanged(const store::Conversation& c, const protocol::MembershipDelta& delta) {
  auto done = std::make_shared<std::promise<void>>();
  auto fut = done->get_future();
  uint32_t owner = OwnerShard(c.id);
  auto members = std::make_shared<const std::vector<UserId>>(c.members);
  auto gone = std::make_shared<const std::vector<UserId>>(delta.removed);
  // Serialized once here; every shard sends the same bytes.
  FramePtr updated = MakeFrame(protocol::ConversationUpdatedFrame(c, delta));
  FramePtr removed_frame = gone->empty() ? nullptr : MakeFrame(protocol::ConversationRemovedFrame(c.id));
  ConvId id = c.id;
  shards_[owner]->Post([this, owner, id, members, gone, updated, removed_frame, done] {
    auto it = state_[owner]->convs.find(id);
    if (it != state_[owner]->convs.end()) {
      ConvState& cs = *it->second;
      cs.members = members;
      // Someone removed stops typing for the others.
      std::erase_if(cs.typing_until_ms, [&](auto& kv) { return !cs.IsMember(kv.first); });
    }
    // Told after the switch: from here on the members are the new ones. Every device
    // of every member learns the new record; those removed learn only that.
    for (uint32_t t = 0; t < shards_.size(); ++t) {
      RunOn(owner, t, [this, t, members, gone, updated, removed_frame] {
        SendToUsers(t, *members, updated, 0, 0);
        if (removed_frame) SendToUsers(t, *gone, removed_frame, 0, 0);
      });
    }
    done->set_value();
  });
  fut.wait_for(std::chrono::seconds(2));
}

void ChatCore::CloseDevice(UserId user, const std::string& device, uint16_t code, const std::string& reason) {
  for (uint32_t t = 0; t < shards_.size(); ++t) {
    shards_[t]->Post([this, t, user, device, code, reason] {
      auto it = state_[t]->by_user.find(user);
      if (it == state_[t]->by_user.end()) return;
      std::vector<Session*> victims;
      for (Session* s : it->second)
        if (s->device_id() == device) victims.push_back(s);
      for (Session* s : victims) s->Close(code, reason);
    });
  }
}

void ChatCore::SetHideLastSeen(UserId user, bool hide) {
  uint32_t owner = UserOwnerShard(user);
  shards_[owner]->Post([this, owner, user, hide] {
    auto it = state_[owner]->presence.find(user);
    if (it != state_[owner]->presence.end()) it->second.hide_last_seen = hide ? 1 : 0;
  });
}

bool ChatCore::SharesConversation(UserId a, UserId b) {
  auto ca = store_.ListConversationsOf(a);
  auto cb = store_.ListConversationsOf(b);
  if (!ca.ok() || !cb.ok()) return false;
  auto i = ca->begin();
  auto j = cb->begin();
  while (i != ca->end() && j != cb->end()) {
    if (*i == *j) return true;
    if (*i < *j) ++i;
    else ++j;
  }
  return false;
}

// ---- typing ----------------------------------------------------------------------

void ChatCore::OnTyping(uint32_t shard, Session* s, const protocol::Typing& t) {
  auto conv = ParseConvId(t.conversation_id);
  if (!conv) {
    s->Send(MakeFrame(protocol::ErrorFrame(Forbidden("not a member of this conversation"))));
    return;
  }
  UserId user = s->user();
  uint64_t sid = s->id();
  bool started = t.state == "started";
  uint32_t owner = OwnerShard(*conv);
  ConvId c = *conv;
  RunOn(shard, owner, [this, owner, c, user, sid, shard, started] {
    Shard& sh = *state_[owner];
    Status err;
    ConvState* cs = LoadConv(sh, c, &err);
    if (!cs || !cs->IsMember(user)) {
      FramePtr f = MakeFrame(protocol::ErrorFrame(Forbidden("not a member of this conversation")));
      RunOn(owner, shard, [this, shard, sid, f] {
        auto it = state_[shard]->by_id.find(sid);
        if (it != state_[shard]->by_id.end()) it->second->Send(f);
      });
      return;
    }
    bool relay;
    if (started) {
      auto [it, inserted] = cs->typing_until_ms.insert_or_assign(user, clock_.NowMs() + opts_.typing_ttl_ms);
      relay = inserted;  // a repeated `started` only extends the expiry
      if (inserted && cs->typing_until_ms.size() == 1) sh.typing_convs.push_back(c);
    } else {
      relay = cs->typing_until_ms.erase(user) > 0;
    }
    if (!relay) return;
    metrics::Server().typing_relayed.Inc();
    FramePtr f = TypingFrame(c, user, started);
    auto members = cs->members;
    for (uint32_t t = 0; t < shards_.size(); ++t)
      RunOn(owner, t, [this, t, members, f, user] { SendToUsers(t, *members, f, user, 0); });
  });
}

// ---- periodic ------------------------------------------------------------------

void ChatCore::Tick(uint32_t shard) {
  Shard& sh = *state_[shard];
  int64_t now = clock_.NowMs();

  // Sessions whose check came due: connections that sent nothing since `welcome`
  // start receiving live messages, and devices silent past the TTL go offline (they
  // come back with their next frame). A check that finds the device active since is
  // simply scheduled again.
  sh.checks.Expire(now, [&](SessionState* ss) {
    const uint64_t sid = ss->id;
    auto it = sh.by_id.find(sid);
    if (it == sh.by_id.end()) return;  // not attached: nothing to do, nothing to schedule
    Session* s = it->second;
    if (ss->awaiting_first_frame && now - ss->attached_ms >= opts_.first_frame_wait_ms) {
      StartLive(sh, s, false);
      auto st = sh.sessions.find(sid);
      if (st == sh.sessions.end()) return;
      ss = &st->second;
    }
    if (ss->online && now - ss->last_active_ms >= opts_.presence_ttl_ms) {
      ss->online = false;
      UserId user = s->user();
      uint32_t owner = UserOwnerShard(user);
      RunOn(shard, owner, [this, owner, user, sid] { OwnerDeviceOffline(owner, user, sid); });
    }
    ScheduleCheck(sh, *ss);
  });

  // Users whose last device left more than the grace ago are announced offline.
  while (!sh.pending_offline.empty() && now - sh.pending_offline.front().first >= opts_.presence_grace_ms) {
    const auto [left_ms, user] = sh.pending_offline.front();
    sh.pending_offline.pop_front();
    auto it = sh.presence.find(user);
    if (it == sh.presence.end()) continue;
    UserPresence& up = it->second;
    if (sh.registry->Get(user).devices > 0 || !up.told_online) continue;  // came back, or already told
    if (up.offline_since_ms != left_ms) continue;  // came back and left again: that later entry decides
    up.told_online = false;
    AnnouncePresence(shard, user);
  }

  // `started` without `stopped` expires.
  std::erase_if(sh.typing_convs, [&](ConvId c) {
    auto it = sh.convs.find(c);
    if (it == sh.convs.end()) return true;
    ConvState& cs = *it->second;
    std::vector<UserId> expired;
    for (auto& [u, until] : cs.typing_until_ms)
      if (until <= now) expired.push_back(u);
    for (UserId u : expired) {
      cs.typing_until_ms.erase(u);
      FramePtr f = TypingFrame(c, u, false);
      auto members = cs.members;
      for (uint32_t t = 0; t < shards_.size(); ++t)
        RunOn(shard, t, [this, t, members, f, u] { SendToUsers(t, *members, f, u, 0); });
    }
    return cs.typing_until_ms.empty();
  });
}

}  // namespace sb::chat
