// Frames a client sends over the WebSocket, parsed and validated.
//
// ParseClientFrame accepts one text frame and either returns a typed event or an
// error that names the contract's code (bad_request, too_large, ...). It never
// throws on client bytes. Unknown fields are ignored; unknown events are errors.
// Thread-compatible: give each thread its own FrameParser.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/ids.h"
#include "base/status.h"
#include "protocol/limits.h"
#include "store/store.h"

namespace sb::protocol {

struct SendMessage {
  std::string client_msg_id;
  std::string conversation_id;  // as sent; parsed by the core (unknown ids are "forbidden")
  std::optional<std::string> sender_id;
  std::string content;
  store::ContentType content_type = store::ContentType::kText;
  std::string media_url;
  std::string target_message_id;
  std::string reply_to;
  int64_t sent_timestamp_ms = 0;
};

struct MessageReceipt {
  std::string message_id;
  std::string conversation_id;
  std::string status;  // "DELIVERED" | "READ"
  std::optional<uint64_t> up_to_seq;
  int64_t receipt_timestamp_ms = 0;
};

struct Resume {
  std::map<std::string, uint64_t> cursors;
};

struct Typing {
  std::string conversation_id;
  std::string state;  // "started" | "stopped"
};

struct PresenceSubscribe {
  std::vector<std::string> user_ids;
};

struct Ping {};

using ClientFrame =
    std::variant<SendMessage, MessageReceipt, Resume, Typing, PresenceSubscribe, Ping>;

struct FrameError {
  Status status;
  std::string client_msg_id;  // echoed in the error frame when the frame carried one
};

class FrameParser {
 public:
  explicit FrameParser(const Limits& limits);
  ~FrameParser();
  FrameParser(const FrameParser&) = delete;
  FrameParser& operator=(const FrameParser&) = delete;

  // On failure returns nullopt and fills *err.
  std::optional<ClientFrame> Parse(std::string_view text, FrameError* err);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  Limits limits_;
};

}  // namespace sb::protocol
