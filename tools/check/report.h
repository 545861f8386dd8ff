// Violations found by `switchboard check`: a count per kind plus the first few
// occurrences with enough context (conversation, seq, device) to start a
// post-mortem. Thread-safe: device threads report while they run.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace sb::check {

enum class Kind : int {
  kLost = 0,     // an acked message missing from history, or a history message a device never got
  kDuplicated,   // a client_msg_id stored more than once in a conversation
  kOutOfOrder,   // a device got a new message with a seq below one it already had
  kGap,          // a hole in history's 1..N, a device stream skipping seqs, or `truncated`
  kAckMismatch,  // acks of one client_msg_id disagree, or disagree with history
  kUnacked,      // a send never acknowledged despite retries
  kError,        // protocol errors: unexpected error frames, malformed frames, timeouts
  kCorrupt,      // content/sender/conversation/id that does not match what was sent or stored
  kReceipt,      // receipts moving backward or misrouted (reported, not failing)
  kCount,
};

const char* KindName(Kind k);
// Kinds that make the run fail (all but receipts).
bool KindFails(Kind k);

struct Violation {
  Kind kind = Kind::kError;
  std::string conversation_id;
  int64_t seq = 0;  // 0: not about one seq
  std::string device;
  std::string detail;
  double at_s = 0;  // seconds since the run started
};

class Report {
 public:
  static constexpr size_t kKeepPerKind = 25;

  explicit Report(double (*clock)() = nullptr) : clock_(clock) {}

  void Add(Kind k, std::string conversation_id, int64_t seq, std::string device,
           std::string detail);
  void Add(Kind k, std::string detail) { Add(k, {}, 0, {}, std::move(detail)); }
  void SetClock(double (*clock)()) { clock_ = clock; }

  uint64_t Count(Kind k) const;
  std::vector<Violation> Kept(Kind k) const;
  bool Failed() const;

 private:
  mutable std::mutex mu_;
  double (*clock_)() = nullptr;
  std::array<uint64_t, static_cast<size_t>(Kind::kCount)> counts_{};
  std::array<std::vector<Violation>, static_cast<size_t>(Kind::kCount)> kept_;
};

}  // namespace sb::check
