// The final verdict of `switchboard check`: the stored history of every conversation
// against what every device sent, was acked and received.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "check/device.h"
#include "check/model.h"
#include "check/report.h"

namespace sb::check {

// One message of GET /v1/conversations/{id}/messages.
struct Stored {
  int64_t seq = 0;
  std::string message_id;
  std::string client_msg_id;
  std::string sender_id;
  std::string content;
};

struct History {
  std::vector<Stored> messages;  // as returned, oldest first
  int64_t last_seq = 0;          // GET /v1/conversations/{id}
};

struct Totals {
  uint64_t sent = 0;
  uint64_t acked = 0;
  uint64_t stored = 0;
};

// Adds every violation to `report`; devices must have stopped.
Totals Verify(const Layout& layout, const std::vector<std::unique_ptr<Device>>& devices,
              const std::map<std::string, History>& histories, Report& report);

}  // namespace sb::check
