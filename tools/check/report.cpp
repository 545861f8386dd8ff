#include "check/report.h"

namespace sb::check {

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kLost: return "lost";
    case Kind::kDuplicated: return "duplicated";
    case Kind::kOutOfOrder: return "out_of_order";
    case Kind::kGap: return "gaps";
    case Kind::kAckMismatch: return "ack_mismatch";
    case Kind::kUnacked: return "unacked";
    case Kind::kError: return "errors";
    case Kind::kCorrupt: return "corrupt";
    case Kind::kReceipt: return "receipt_regressions";
    case Kind::kCount: break;
  }
  return "?";
}

bool KindFails(Kind k) { return k != Kind::kReceipt && k != Kind::kCount; }

void Report::Add(Kind k, std::string conversation_id, int64_t seq, std::string device,
                 std::string detail) {
  std::lock_guard lock(mu_);
  auto i = static_cast<size_t>(k);
  ++counts_[i];
  if (kept_[i].size() < kKeepPerKind) {
    kept_[i].push_back(Violation{k, std::move(conversation_id), seq, std::move(device),
                                 std::move(detail), clock_ ? clock_() : 0.0});
  }
}

uint64_t Report::Count(Kind k) const {
  std::lock_guard lock(mu_);
  return counts_[static_cast<size_t>(k)];
}

std::vector<Violation> Report::Kept(Kind k) const {
  std::lock_guard lock(mu_);
  return kept_[static_cast<size_t>(k)];
}

bool Report::Failed() const {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < counts_.size(); ++i)
    if (KindFails(static_cast<Kind>(i)) && counts_[i] > 0) return true;
  return false;
}

}  // namespace sb::check
