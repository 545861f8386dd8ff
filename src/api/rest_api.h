// The REST API of the contract (docs/protocol.md, "REST"), plus /healthz, /readyz and
// /metrics. Handle() may block (password hashing, store reads): the gateway calls it on
// its blocking pool, never on a shard's event loop. Thread-safe.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "api/http_types.h"
#include "auth/password.h"
#include "auth/revocations.h"
#include "auth/tokens.h"
#include "base/clock.h"
#include "base/token_buckets.h"
#include "chat/chat_core.h"
#include "protocol/limits.h"
#include "protocol/server_frames.h"
#include "search/search_index.h"
#include "store/store.h"

namespace sb::api {

struct RestOptions {
  protocol::Limits limits;
  auth::PasswordParams password;
};

class RestApi {
 public:
  RestApi(store::Store& store, const auth::TokenService& tokens, auth::Revocations& revoked, RestOptions opts,
          const Clock& clock);

  HttpResponse Handle(const HttpRequest& req);

  // Presence of `target` as `viewer` may see it; nullopt when they share no
  // conversation. Set once at start-up (the chat core provides it).
  using PresenceQuery = std::function<std::optional<chat::PresenceView>(UserId viewer, UserId target)>;
  void SetPresenceQuery(PresenceQuery q) { presence_ = std::move(q); }
  // The full-text index behind GET /v1/search (owned by the caller; may be unset).
  void SetSearchIndex(search::SearchIndex* index) { search_ = index; }
  // Told after a conversation was created or its members, title or roles changed
  // (already stored); `delta`: who joined and who left.
  using ConversationChanged = std::function<void(const store::Conversation&, const protocol::MembershipDelta& delta)>;
  void SetConversationChanged(ConversationChanged f) { conv_changed_ = std::move(f); }
  // Told after a device logged out, to close its open sockets.
  using DeviceLoggedOut = std::function<void(UserId, const std::string& device)>;
  void SetDeviceLoggedOut(DeviceLoggedOut f) { logged_out_ = std::move(f); }
  // Told after a user's settings were stored (the chat core applies them live).
  using SettingsChanged = std::function<void(UserId, const store::UserSettings&)>;
  void SetSettingsChanged(SettingsChanged f) { settings_changed_ = std::move(f); }

  // /readyz answers 503 once this is set (drain started).
  void SetDraining() { draining_ = true; }

 private:
  struct Ctx;
  HttpResponse CreateUser(const HttpRequest& req);
  HttpResponse CreateSession(const HttpRequest& req);
  HttpResponse RefreshSession(const HttpRequest& req);
  HttpResponse Logout(const Ctx& c, const HttpRequest& req);
  HttpResponse GetUser(const Ctx& c, std::string_view id);
  HttpResponse FindUser(const Ctx& c, const HttpRequest& req);
  HttpResponse GetPresence(const Ctx& c, std::string_view id);
  HttpResponse Settings(const Ctx& c, std::string_view id, const HttpRequest& req);
  HttpResponse CreateConversation(const Ctx& c, const HttpRequest& req);
  HttpResponse ListConversations(const Ctx& c, const HttpRequest& req);
  HttpResponse GetConversation(const Ctx& c, std::string_view id);
  // Groups: members and roles.
  HttpResponse AddMembers(const Ctx& c, std::string_view id, const HttpRequest& req);
  HttpResponse RemoveMember(const Ctx& c, std::string_view id, std::string_view user);
  HttpResponse Rename(const Ctx& c, std::string_view id, const HttpRequest& req);
  HttpResponse SetAdmin(const Ctx& c, std::string_view id, std::string_view user, bool admin);
  HttpResponse ConversationAnswer(int status, const store::Conversation& conv);
  HttpResponse History(const Ctx& c, std::string_view id, const HttpRequest& req);
  HttpResponse Receipts(const Ctx& c, std::string_view id, std::string_view seq);
  HttpResponse Search(const Ctx& c, const HttpRequest& req);
  HttpResponse IssueTokens(const store::User& u, std::string device_id, int status);
  Result<store::Conversation> MemberConversation(const Ctx& c, std::string_view id);

  store::Store& store_;
  const auth::TokenService& tokens_;
  RestOptions opts_;
  const Clock& clock_;
  std::atomic<bool> draining_{false};
  // Login throttling (pool threads share it, under login_mu_): attempts per address,
  // failures per account.
  std::mutex login_mu_;
  TokenBuckets<std::string> login_ip_;
  TokenBuckets<std::string> login_account_;
  // Username lookups per user (under login_mu_ too: both are rare and short).
  TokenBuckets<UserId> user_lookups_;
  std::string dummy_hash_;
  PresenceQuery presence_;
  SettingsChanged settings_changed_;
  DeviceLoggedOut logged_out_;
  ConversationChanged conv_changed_;
  search::SearchIndex* search_ = nullptr;
  auth::Revocations& revoked_;  // verified against when a username is unknown (equal timing)
};

}  // namespace sb::api
