#include "check/verify.h"

#include <algorithm>
#include <functional>
#include <set>
#include <string_view>

namespace sb::check {

namespace {

struct Origin {
  const Device* device = nullptr;
  const SentMessage* sent = nullptr;
};

std::string Seqs(const std::vector<int64_t>& v, size_t max = 12) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < max; ++i) {
    if (i) s += ",";
    s += std::to_string(v[i]);
  }
  if (v.size() > max) s += ",... (" + std::to_string(v.size()) + " in all)";
  return s;
}

}  // namespace

Totals Verify(const Layout& layout, const std::vector<std::unique_ptr<Device>>& devices,
              const std::map<std::string, History>& histories, Report& report) {
  Totals t;
  std::map<std::string, Origin> origin;  // client_msg_id -> who sent it
  for (const auto& d : devices) {
    for (const auto& [id, m] : d->ledger()) {
      origin[id] = Origin{d.get(), &m};
      ++t.sent;
      if (m.acked) ++t.acked;
    }
  }

  // Per conversation: seq -> stored message, client_msg_id -> copies.
  std::map<std::string, std::map<int64_t, const Stored*>> by_seq;
  std::map<std::string, std::map<std::string, std::vector<const Stored*>>> by_cmid;

  for (const ConvInfo& c : layout.convs) {
    auto hit = histories.find(c.id);
    if (hit == histories.end()) continue;  // the caller reported why it is missing
    const History& h = hit->second;
    auto& seqs = by_seq[c.id];
    auto& cmids = by_cmid[c.id];
    std::set<std::string> ids;
    int64_t prev = 0;
    bool order_reported = false;
    t.stored += h.messages.size();
    for (const Stored& m : h.messages) {
      if (m.seq <= prev && !order_reported) {
        report.Add(Kind::kCorrupt, c.id, m.seq, "",
                   "history is not in increasing seq order (seq " + std::to_string(m.seq) +
                       " after " + std::to_string(prev) + ")");
        order_reported = true;
      }
      prev = std::max(prev, m.seq);
      if (!seqs.emplace(m.seq, &m).second) {
        report.Add(Kind::kCorrupt, c.id, m.seq, "",
                   "history holds two messages with this seq (" + seqs[m.seq]->message_id + ", " +
                       m.message_id + ")");
      }
      if (!ids.insert(m.message_id).second)
        report.Add(Kind::kCorrupt, c.id, m.seq, "", "message_id " + m.message_id + " appears twice in history");
      cmids[m.client_msg_id].push_back(&m);

      auto o = origin.find(m.client_msg_id);
      if (o == origin.end()) {
        report.Add(Kind::kCorrupt, c.id, m.seq, "",
                   "history holds a message no checker device sent (client_msg_id " +
                       m.client_msg_id + ")");
        continue;
      }
      const Device& d = *o->second.device;
      const SentMessage& s = *o->second.sent;
      const std::string& want_sender = layout.users[d.user()].user_id;
      if (s.conversation_id != c.id || s.content != m.content || m.sender_id != want_sender) {
        report.Add(Kind::kCorrupt, c.id, m.seq, d.name(),
                   "stored message " + m.client_msg_id + " differs from what was sent (" +
                       (s.conversation_id != c.id ? "conversation" : m.sender_id != want_sender ? "sender" : "content") +
                       ")");
      }
    }

    // Strict order, no gaps: 1..N, N = last_seq.
    const int64_t top = std::max(h.last_seq, prev);
    if (h.last_seq < prev) {
      report.Add(Kind::kCorrupt, c.id, prev, "",
                 "last_seq " + std::to_string(h.last_seq) + " is below the highest stored seq " +
                     std::to_string(prev));
    }
    for (int64_t s = 1; s <= top; ++s) {
      if (!seqs.count(s))
        report.Add(Kind::kGap, c.id, s, "", "seq missing from history (last_seq " + std::to_string(h.last_seq) + ")");
    }

    // Exactly one stored copy per client_msg_id.
    for (const auto& [cmid, copies] : cmids) {
      if (copies.size() < 2) continue;
      std::vector<int64_t> at;
      for (const Stored* m : copies) at.push_back(m->seq);
      for (size_t i = 1; i < copies.size(); ++i) {
        report.Add(Kind::kDuplicated, c.id, copies[i]->seq, "",
                   "client_msg_id " + cmid + " stored " + std::to_string(copies.size()) +
                       " times, at seqs " + Seqs(at));
      }
    }
  }

  // Every acked message is in history exactly where its ack said.
  for (const auto& [cmid, o] : origin) {
    const SentMessage& s = *o.sent;
    const std::string& dev = o.device->name();
    auto cit = by_cmid.find(s.conversation_id);
    if (cit == by_cmid.end()) continue;
    auto copies = cit->second.find(cmid);
    if (!s.acked) {
      std::string where = copies == cit->second.end()
                              ? "not in history"
                              : "stored as seq " + std::to_string(copies->second.front()->seq);
      report.Add(Kind::kUnacked, s.conversation_id, 0, dev,
                 cmid + (s.failed ? " rejected by the server" : " never acked") + " after " +
                     std::to_string(s.attempts) + " attempts (" + where + ")");
      continue;
    }
    if (copies == cit->second.end()) {
      report.Add(Kind::kLost, s.conversation_id, s.seq, dev,
                 "acked message " + cmid + " (" + s.message_id + ") is missing from history");
      continue;
    }
    bool match = false;
    for (const Stored* m : copies->second) match |= (m->seq == s.seq && m->message_id == s.message_id);
    if (!match) {
      report.Add(Kind::kAckMismatch, s.conversation_id, s.seq, dev,
                 cmid + " acked as seq " + std::to_string(s.seq) + " " + s.message_id +
                     ", history has it as seq " + std::to_string(copies->second.front()->seq) + " " +
                     copies->second.front()->message_id);
    }
  }

  // Every member device holds every stored message (own sends through their ack).
  for (const auto& d : devices) {
    for (const auto& [conv, view] : d->views()) {
      auto sit = by_seq.find(conv);
      if (sit == by_seq.end()) continue;
      const auto& seqs = sit->second;
      for (const auto& [seq, m] : seqs) {
        auto k = view.known.find(seq);
        if (k == view.known.end()) {
          report.Add(Kind::kLost, conv, seq, d->name(),
                     "never received " + m->message_id + " (its cursor ended at " +
                         std::to_string(view.cursor) + ")");
        } else if (!k->second.own &&
                   (k->second.message_id != m->message_id ||
                    k->second.content_hash != std::hash<std::string_view>{}(m->content))) {
          report.Add(Kind::kCorrupt, conv, seq, d->name(),
                     "received " + k->second.message_id + " for this seq, history has " +
                         m->message_id + (k->second.message_id == m->message_id ? " (other content)" : ""));
        }
      }
      const int64_t top = seqs.empty() ? 0 : seqs.rbegin()->first;
      for (auto k = view.known.upper_bound(top); k != view.known.end(); ++k) {
        report.Add(Kind::kCorrupt, conv, k->first, d->name(),
                   "holds " + k->second.message_id + " at a seq beyond the end of history");
      }
    }
    // A stream that jumped over seqs: fine only where the skipped seqs were this
    // device's own sends (it gets no `message` for those; the ack may lag).
    for (const Skip& sk : d->skips()) {
      auto sit = by_seq.find(sk.conversation_id);
      std::vector<int64_t> real;
      for (int64_t s : sk.missing) {
        const Stored* m = nullptr;
        if (sit != by_seq.end()) {
          auto it = sit->second.find(s);
          if (it != sit->second.end()) m = it->second;
        }
        auto o = m ? origin.find(m->client_msg_id) : origin.end();
        bool own = o != origin.end() && o->second.device == d.get();
        if (!own) real.push_back(s);
      }
      if (!real.empty()) {
        report.Add(Kind::kGap, sk.conversation_id, sk.arrived_seq, d->name(),
                   "delivery jumped to seq " + std::to_string(sk.arrived_seq) + " (" + sk.how +
                       ", t=" + std::to_string(static_cast<int>(sk.at_s * 1000)) +
                       " ms) without seqs " + Seqs(real));
      }
    }
  }
  return t;
}

}  // namespace sb::check
