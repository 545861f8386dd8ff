// One simulated device: a thread with a blocking WsClient that behaves like a real
// client (docs/protocol.md): per-conversation cursors, dedup by message_id,
// cumulative DELIVERED receipts, `resume` on every (re)connect, re-sending unacked
// sends with the same client_msg_id, reconnecting with full-jitter backoff. Besides
// behaving, it records everything it sees for the final verification and reports
// order violations the moment they happen.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "check/model.h"
#include "sb_client.h"

namespace sb::check {

// One logical send of this device.
struct SentMessage {
  std::string client_msg_id;
  std::string conversation_id;
  std::string content;
  int attempts = 0;  // frames written
  bool inflight = false;  // written on the current connection, answer pending
  Clock::time_point sent_at{};
  Clock::time_point retry_at{};
  int unavailable_streak = 0;
  bool acked = false;
  bool failed = false;  // rejected for good (conflict, forbidden, ...)
  int64_t seq = 0;      // from the first ack
  std::string message_id;
  // Seen in a replay/history before any ack arrived (the first attempt was stored but
  // its ack was lost): the retry's ack must match it and say "duplicate":true.
  int64_t replay_seq = 0;
  std::string replay_message_id;
};

// What a device holds for one received (or own, acked) message.
struct Known {
  std::string message_id;
  std::string client_msg_id;
  std::string sender_id;
  size_t content_hash = 0;
  bool own = false;  // sent by this very device (known from its ack or a replay)
};

// A device's stream jumped over seqs it did not hold. Judged at the end: seqs that
// turn out to be this device's own sends (their ack was still on its way) are fine.
struct Skip {
  std::string conversation_id;
  int64_t arrived_seq = 0;
  std::vector<int64_t> missing;
  double at_s = 0;
  std::string how;  // "live on connection #3 before resume_done", for the report
};

struct ConvView {
  std::map<int64_t, Known> known;  // seq -> message
  std::unordered_map<std::string, int64_t> seq_of;  // message_id -> seq
  int64_t cursor = 0;               // highest seq held contiguously from 1
  int64_t max_delivered_seq = 0;    // highest seq of a message from someone else
  // Highest seq of any message frame on connection #conn_no (redeliveries included):
  // a device's own sends only come back in a replay, which must be in seq order.
  int conn_no = 0;
  int64_t conn_max_seq = 0;
  int64_t receipted = 0;            // up_to_seq of the last DELIVERED receipt sent
  bool receipt_worthy = false;      // (receipted, cursor] holds someone else's message
  Clock::time_point unreceipted_since{};
};

class Device {
 public:
  Device(Shared* shared, int index, int user, int slot);

  // Setup: a session for this device (its own device_id).
  bool LogIn(std::string* error);
  // The thread body; returns once the coordinator sets Phase::kStop.
  void Run();

  int index() const { return index_; }
  int user() const { return user_; }
  const std::string& name() const { return name_; }
  const std::string& device_id() const { return device_id_; }
  int quota() const { return quota_; }
  void set_quota(int q) { quota_ = q; }

  // Results, read by the coordinator after the thread has been joined.
  const std::map<std::string, SentMessage>& ledger() const { return ledger_; }
  const std::map<std::string, ConvView>& views() const { return views_; }
  const std::vector<Skip>& skips() const { return skips_; }
  bool settled() const { return settled_gen_.load() != 0; }
  uint64_t settled_gen() const { return settled_gen_.load(); }

 private:
  bool Connect();
  void Drop(bool abrupt);
  void Step();
  void HandleFrame(const client::Json& j);
  void OnMessage(const client::Json& m, const char* via);
  void OnAck(const client::Json& j);
  void OnReceipt(const client::Json& j);
  void OnError(const client::Json& j);
  bool CatchUpResume();
  bool CatchUpHistory();
  void SendDue(Clock::time_point now);
  bool WriteSend(SentMessage& m, Clock::time_point now);
  void FlushReceipts(Clock::time_point now, bool force);
  void Remember(ConvView& cv, int64_t seq, Known k);
  void CheckSettled();
  void FinalDrain();
  bool RenewToken();
  Clock::duration Backoff();
  Clock::time_point NextDisconnect(Clock::time_point now);
  std::string NewContent(int n);
  void Protocol(std::string conv, int64_t seq, std::string detail);
  // "live on connection #3, before resume_done": where a frame came from.
  std::string How(const char* via) const;

  Shared* sh_;
  const Options& opt_;
  const int index_;
  const int user_;
  const std::string user_id_;
  std::string name_;  // "u3/d1" in reports
  std::string device_id_;
  std::string access_token_;
  std::string refresh_token_;
  int quota_ = 0;
  std::mt19937_64 rng_;

  std::unique_ptr<client::WsClient> ws_;
  bool up_ = false;
  bool ever_connected_ = false;
  int connection_no_ = 0;
  bool catching_up_ = false;  // between welcome and resume_done (or the history walk's end)
  int backoff_attempt_ = 0;
  Clock::time_point next_connect_at_{};
  Clock::time_point next_send_at_{};
  Clock::time_point next_disconnect_at_{};
  Clock::time_point next_ping_at_{};
  bool resume_supported_ = true;
  bool settle_started_ = false;
  bool settle_reconnected_ = false;
  bool done_sending_noted_ = false;
  uint64_t seen_targets_gen_ = 0;
  std::map<std::string, int64_t> targets_;
  std::atomic<uint64_t> settled_gen_{0};

  int created_ = 0;  // logical sends created so far
  std::map<std::string, SentMessage> ledger_;
  std::deque<std::string> pending_;  // unacked client_msg_ids, oldest first
  std::map<std::string, ConvView> views_;
  std::vector<std::string> conv_ids_;
  std::vector<Skip> skips_;
  struct ReceiptState {
    int64_t delivered = 0;
    int64_t read = 0;
  };
  std::map<std::string, ReceiptState> receipt_state_;  // recipient|conversation
};

}  // namespace sb::check
