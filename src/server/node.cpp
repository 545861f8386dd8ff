#include "server/node.h"

#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "api/attachment_api.h"
#include "api/rest_api.h"
#include "attachments/attachment_store.h"
#include "auth/tokens.h"
#include "base/clock.h"
#include "base/log.h"
#include "chat/chat_core.h"
#include "gateway/server.h"
#include "metrics/metrics.h"
#include "search/search_index.h"
#include "store/retention.h"
#include "store/store.h"

namespace sb::server {

namespace {

// Feeds the search index every stored message it has not indexed yet (the index reads
// them from the store itself, as when it falls behind under load).
Status CatchUpSearch(store::Store& store, search::SearchIndex& index) {
  auto convs = store.AllConversationIds();
  if (!convs.ok()) return convs.status();
  const uint64_t before = index.GetStats().indexed_messages;
  if (Status s = index.CatchUpFromSource(*convs); !s.ok()) return s;
  uint64_t fed = index.GetStats().indexed_messages - before;
  if (fed > 0) LOG_INFO("search_caught_up").Kv("messages", fed);
  return Status::Ok();
}

}  // namespace

// Runs `pass` at start and then every `interval` on its own thread (named `name`);
// stops with the server (the destructor waits for a pass in progress).
class PeriodicJob {
 public:
  PeriodicJob(const char* name, std::chrono::seconds interval, std::function<void()> pass)
      : interval_(interval), pass_(std::move(pass)) {
    thread_ = std::thread([this, name] {
      pthread_setname_np(pthread_self(), name);
      std::unique_lock lk(mu_);
      while (!stop_) {
        lk.unlock();
        pass_();
        lk.lock();
        cv_.wait_for(lk, interval_, [this] { return stop_; });
      }
    });
  }
  ~PeriodicJob() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  PeriodicJob(const PeriodicJob&) = delete;
  PeriodicJob& operator=(const PeriodicJob&) = delete;

 private:
  std::chrono::seconds interval_;
  std::function<void()> pass_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// The retention pass (store/retention.h), every store.retention_interval_s; none when
// store.retention is 0.
std::unique_ptr<PeriodicJob> StartRetention(store::Store& store, const Clock& clock, const Config& cfg,
                                            store::TrimmedFn trimmed) {
  const int64_t age_ms = store::ParseRetentionAge(cfg.retention).value_or(0);
  if (age_ms <= 0) return nullptr;
  const auto bucket = store::ParseRetentionBucket(cfg.retention_bucket).value_or(store::RetentionBucket::kMonth);
  return std::make_unique<PeriodicJob>(
      "retention", std::chrono::seconds(cfg.retention_interval_s), [&store, &clock, age_ms, bucket, trimmed] {
        int64_t cutoff = store::RetentionCutoff(clock.NowMs(), age_ms, bucket);
        int64_t t0 = MonoNs();
        auto r = store::RunRetention(store, cutoff, trimmed);
        if (!r.ok()) {
          LOG_ERROR("retention_failed").Kv("error", r.status().message());
        } else if (r->dropped > 0) {
          LOG_INFO("retention")
              .Kv("cutoff_ms", cutoff)
              .Kv("conversations", r->conversations)
              .Kv("trimmed", r->trimmed)
              .Kv("dropped", r->dropped)
              .Kv("ms", (MonoNs() - t0) / 1000000);
        }
      });
}

// Deletes unreferenced attachments (AttachmentStore::Sweep) every
// store.attachment_sweep_interval_s (never when store.unreferenced_attachment_ttl_s is
// 0). The first pass after a start also deletes files no record names (RemoveOrphans),
// whatever the TTL.
std::unique_ptr<PeriodicJob> StartAttachmentSweep(attachments::AttachmentStore& files, const Config& cfg) {
  const bool sweep = cfg.unreferenced_attachment_ttl_s > 0;
  return std::make_unique<PeriodicJob>(
      "attach-sweep", std::chrono::seconds(cfg.attachment_sweep_interval_s), [&files, sweep, first = true]() mutable {
        int64_t t0 = MonoNs();
        if (std::exchange(first, false)) {
          auto o = files.RemoveOrphans();
          if (!o.ok()) {
            LOG_ERROR("attachment_orphans_failed").Kv("error", o.status().message());
          } else if (o->removed > 0) {
            LOG_INFO("attachment_orphans_removed")
                .Kv("examined", o->examined)
                .Kv("removed", o->removed)
                .Kv("bytes", o->bytes)
                .Kv("ms", (MonoNs() - t0) / 1000000);
          }
          t0 = MonoNs();
        }
        if (!sweep) return;
        auto r = files.Sweep();
        if (!r.ok()) {
          LOG_ERROR("attachment_sweep_failed").Kv("error", r.status().message());
          return;
        }
        if (r->removed > 0) {
          LOG_INFO("attachments_swept")
              .Kv("examined", r->examined)
              .Kv("removed", r->removed)
              .Kv("bytes", r->bytes)
              .Kv("ms", (MonoNs() - t0) / 1000000);
        }
        // After the log line: a counter that moved means the pass is over.
        metrics::Server().attachment_bytes_swept.Inc(r->bytes);
        metrics::Server().attachments_swept.Inc(r->removed);
      });
}

int RunServe(const Config& cfg) {
  log::Level level;
  if (!log::ParseLevel(cfg.log_level, &level)) {
    LOG_ERROR("bad_config").Kv("error", "log.level must be debug, info, warn, error or off");
    return 2;
  }
  log::SetLevel(level);

  std::error_code fec;
  std::filesystem::create_directories(cfg.data_dir, fec);
  if (fec) {
    LOG_ERROR("data_dir_failed").Kv("dir", cfg.data_dir).Kv("error", fec.message());
    return 1;
  }
  ::chmod(cfg.data_dir.c_str(), 0700);

  store::StoreOptions so;
  so.dir = cfg.data_dir + "/store";
  so.sync = cfg.fsync == "none" ? store::SyncPolicy::kNone : store::SyncPolicy::kAlways;
  so.cache_bytes = cfg.cache_mb << 20;
  auto st = store::OpenEmbeddedStore(so);
  if (!st.ok()) {
    LOG_ERROR("store_open_failed").Kv("dir", so.dir).Kv("error", st.status().message());
    return 1;
  }
  std::unique_ptr<store::Store> store = std::move(*st);

  // Full-text search: a derived index (SQLite FTS5) beside the store. It may lag the
  // store after a crash; catch it up before anything new is committed.
  search::SearchIndex::Options search_opts;
  search_opts.gather_ms = cfg.search_index_delay_ms;
  search_opts.yield_below_free_cpu = static_cast<double>(cfg.search_yield_below_free_cpu_pct) / 100.0;
  search_opts.max_yield_ms = cfg.search_max_yield_s * 1000;
  // When the indexer falls far behind (a long peak), it reads from the store instead
  // of queueing in memory. The store outlives the index (declared first).
  search_opts.source = [s = store.get()](ConvId conv, Seq after, size_t limit) {
    return s->ReadAfter(conv, after, limit);
  };
  auto idx = search::SearchIndex::Open(cfg.data_dir + "/search.db", search_opts);
  if (!idx.ok()) {
    LOG_ERROR("search_open_failed").Kv("error", idx.status().message());
    return 1;
  }
  std::unique_ptr<search::SearchIndex> index = std::move(*idx);
  if (Status s = CatchUpSearch(*store, *index); !s.ok()) {
    LOG_ERROR("search_catch_up_failed").Kv("error", s.message());
    return 1;
  }

  auto keys = auth::KeyRing::LoadOrCreate(cfg.data_dir + "/keys");
  if (!keys.ok()) {
    LOG_ERROR("keys_failed").Kv("error", keys.status().message());
    return 1;
  }
  const Clock& clock = SystemClock::Instance();
  auth::TokenService tokens(*keys, cfg.token, clock);

  auth::Revocations revoked;
  {
    auto list = store->ListRevocations();
    if (!list.ok()) {
      LOG_ERROR("revocations_failed").Kv("error", list.status().message());
      return 1;
    }
    for (const auto& r : *list) revoked.Revoke(r.user, r.device, r.at_s);
  }

  // Attachments: files under <data dir>/attachments, records in the store.
  attachments::AttachmentStoreOptions ao;
  ao.dir = cfg.data_dir + "/attachments";
  ao.max_bytes = cfg.limits.max_attachment_bytes;
  ao.max_concurrent_uploads = cfg.max_concurrent_uploads;
  ao.bytes_per_user_per_day = cfg.limits.upload_bytes_per_user_per_day;
  ao.min_free_bytes = cfg.limits.min_free_disk_mb << 20;
  ao.unreferenced_ttl_ms = cfg.unreferenced_attachment_ttl_s * 1000;
  auto files = attachments::AttachmentStore::Open(ao, *store, clock);
  if (!files.ok()) {
    LOG_ERROR("attachments_open_failed").Kv("dir", ao.dir).Kv("error", files.status().message());
    return 1;
  }
  api::AttachmentApi attachment_api(**files, tokens, revoked);

  api::RestOptions ro;
  ro.limits = cfg.limits;
  ro.password = cfg.password;
  api::RestApi rest(*store, tokens, revoked, ro, clock);
  rest.SetSearchIndex(index.get());

  gateway::ServerOptions go;
  size_t colon = cfg.listen.rfind(':');
  go.host = cfg.listen.substr(0, colon);
  if (go.host.size() >= 2 && go.host.front() == '[' && go.host.back() == ']')
    go.host = go.host.substr(1, go.host.size() - 2);
  try {
    int p = std::stoi(cfg.listen.substr(colon + 1));
    if (p < 0 || p > 65535) throw std::out_of_range("port");
    go.port = static_cast<uint16_t>(p);
  } catch (...) {
    LOG_ERROR("bad_config").Kv("error", "server.listen has an invalid port");
    return 2;
  }
  go.shards = cfg.shards;
  go.rest_threads = cfg.rest_threads;
  go.limits = cfg.limits;
  go.handshake_timeout_ms = cfg.handshake_timeout_ms;
  go.idle_timeout_ms = cfg.idle_timeout_ms;
  go.max_header_bytes = cfg.max_header_bytes;
  go.drain_timeout_ms = cfg.drain_timeout_ms;
  go.connects_per_ip_per_s = cfg.connects_per_ip_per_s;
  if (auto tp = TrustedProxies::Parse(cfg.trusted_proxies); tp.ok()) {
    go.trusted_proxies = std::move(*tp);
  } else {
    LOG_ERROR("bad_config").Kv("error", tp.status().message());
    return 2;
  }
  go.max_connections_per_user = cfg.max_connections_per_user;
  go.upload_timeout_ms = cfg.upload_timeout_ms;
  go.tls.cert_file = cfg.tls_cert_file;
  go.tls.key_file = cfg.tls_key_file;
  go.tls.min_version = cfg.tls_min_version;
  go.tls.ciphers = cfg.tls_ciphers;
  go.tls.ciphersuites = cfg.tls_ciphersuites;
  for (size_t pos = 0; pos < cfg.allowed_origins.size();) {
    size_t comma = cfg.allowed_origins.find(',', pos);
    if (comma == std::string::npos) comma = cfg.allowed_origins.size();
    std::string o = cfg.allowed_origins.substr(pos, comma - pos);
    while (!o.empty() && o.front() == ' ') o.erase(0, 1);
    while (!o.empty() && o.back() == ' ') o.pop_back();
    if (!o.empty()) go.allowed_origins.push_back(o);
    pos = comma + 1;
  }
  gateway::Server server(go, tokens, revoked, rest);
  server.SetAttachments(&attachment_api);

  chat::CoreOptions co;
  co.limits = cfg.limits;
  co.node_id = cfg.node_id;
  co.after_commit = [idx = index.get()](const std::vector<store::Message>& msgs) { idx->Enqueue(msgs); };
  co.commit_interval_us = cfg.commit_interval_us;
  co.presence_ttl_ms = cfg.presence_ttl_ms;
  co.presence_grace_ms = cfg.presence_grace_ms;
  co.typing_ttl_ms = cfg.typing_ttl_ms;
  co.max_presence_subscriptions = cfg.max_presence_subscriptions;
  co.bulk_slice_sends = cfg.bulk_slice_sends;
  co.max_bulk_backlog = cfg.max_bulk_backlog;
  co.receipts_max_members = cfg.receipts_max_members;
  co.attachment_touch_ms = (*files)->TouchGranularityMs();
  if (co.node_id.empty()) {
    char host[256] = {};
    co.node_id = ::gethostname(host, sizeof host - 1) == 0 ? host : "node-1";
  }
  chat::ChatCore core(*store, server.Executors(), co, clock);
  server.SetCore(&core);
  rest.SetPresenceQuery([&core](UserId viewer, UserId target) { return core.QueryPresence(viewer, target); });
  rest.SetConversationChanged(
      [&core](const store::Conversation& c, const protocol::MembershipDelta& d) { core.ConversationChanged(c, d); });
  rest.SetDeviceLoggedOut([&core](UserId user, const std::string& device) {
    core.CloseDevice(user, device, 1008, "logged out");
  });
  rest.SetSettingsChanged(
      [&core](UserId user, const store::UserSettings& s) { core.SetHideLastSeen(user, s.hide_last_seen); });

  auto port = server.Listen();
  if (!port.ok()) {
    LOG_ERROR("listen_failed").Kv("error", port.status().message());
    // A bad value (unusable TLS certificate or key, bad address) is a configuration
    // error like any other: exit 2. A busy port is not.
    return port.status().code() == Code::kBadRequest ? 2 : 1;
  }
  core.Start();
  auto retention = StartRetention(*store, clock, cfg,
                                  [&index](ConvId conv, Seq first_kept) { index->DropBefore(conv, first_kept); });
  auto attachment_sweep = StartAttachmentSweep(**files, cfg);
  LOG_INFO("starting")
      .Kv("node", co.node_id)
      .Kv("data_dir", cfg.data_dir)
      .Kv("fsync", cfg.fsync)
      .Kv("shards", server.shard_count());
  server.Run();  // returns after the drain
  core.Stop();
  LOG_INFO("stopped");
  return 0;
}

}  // namespace sb::server
