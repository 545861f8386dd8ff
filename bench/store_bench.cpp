// Storage layout benchmark: the figures behind src/store/README.md.
//
//   build/bench/store_bench [--messages N] [--convs C] [--batch B] [--dir DIR]
//                           [--layout a|b|both] [--page-reads K]
//                           [--rocks-compression lz4|none] [--rocks-prefix-bloom on|off]
//                           [--rocks-block-kb KB] [--rocks-l0-trigger N]
//                           [--rocks-insert-hints on|off]
//                           [--rocks-meta-hints on|off] [--rocks-meta-mb MB]
//                           [--cache-mb MB] [--verbose 0|1]
//
// Layout A is RocksStore through the Store interface; layout B is SQLite (WAL,
// synchronous=FULL, one WITHOUT ROWID table keyed (conv, seq) plus a unique dedup
// index). Both get the same group commits of B messages (~150 B of text each) spread
// uniformly over C conversations, from one committing thread, fsync on every commit.
// It prints figures only; it asserts nothing.
#include <sqlite3.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/clock.h"
#include "store/embedded/rocks_store.h"
#include "store/store.h"

namespace sb::store {
namespace {

struct Flags {
  uint64_t messages = 500'000;
  uint32_t convs = 1'000;
  uint32_t batch = 256;
  std::string dir;
  std::string layout = "both";
  uint32_t page_reads = 2'000;
  size_t cache_mb = 256;
  bool verbose = false;
  bool commit = false;  // --write commit: through Commit (+ summaries, receipts, cursors), as the server writes
  RocksTuning tuning;
};

constexpr size_t kPage = 50;
constexpr uint32_t kSmallConvs = 20;
constexpr uint32_t kSmallPerConv = 60;

[[noreturn]] void Usage(const char* msg, int code = 2) {
  if (code != 0) std::fprintf(stderr, "store_bench: %s\n", msg);
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: store_bench [--messages N] [--convs C] [--batch B] [--dir DIR]\n"
               "                   [--layout a|b|both] [--page-reads K]\n"
               "                   [--rocks-compression lz4|none] [--rocks-prefix-bloom on|off]\n"
               "                   [--rocks-block-kb KB] [--rocks-l0-trigger N]\n"
               "                   [--rocks-insert-hints on|off]\n"
               "                   [--rocks-meta-hints on|off] [--rocks-meta-mb MB] [--rocks-memtable own|rocksdb]\n"
               "                   [--cache-mb MB] [--verbose 0|1] [--write append|commit]\n");
  std::exit(code);
}

uint64_t ParseCount(const char* flag, const char* v) {
  char* end = nullptr;
  unsigned long long n = std::strtoull(v, &end, 10);
  if (!*v || *end || n == 0) Usage((std::string("bad value for ") + flag).c_str());
  return n;
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") Usage("", 0);
    if (i + 1 >= argc) Usage(("missing value for " + a).c_str());
    const char* v = argv[++i];
    if (a == "--messages") f.messages = ParseCount("--messages", v);
    else if (a == "--convs") f.convs = static_cast<uint32_t>(ParseCount("--convs", v));
    else if (a == "--batch") f.batch = static_cast<uint32_t>(ParseCount("--batch", v));
    else if (a == "--page-reads") f.page_reads = static_cast<uint32_t>(ParseCount("--page-reads", v));
    else if (a == "--dir") f.dir = v;
    else if (a == "--cache-mb") f.cache_mb = ParseCount("--cache-mb", v);
    else if (a == "--verbose") f.verbose = std::string(v) == "1";
    else if (a == "--write") {
      std::string w = v;
      if (w != "append" && w != "commit") Usage("--write is append or commit");
      f.commit = w == "commit";
    }
    else if (a == "--layout") {
      f.layout = v;
      if (f.layout != "a" && f.layout != "b" && f.layout != "both") Usage("--layout is a, b or both");
    } else if (a == "--rocks-compression") {
      std::string c = v;
      if (c != "lz4" && c != "none") Usage("--rocks-compression is lz4 or none");
      f.tuning.compress_messages = c == "lz4";
    } else if (a == "--rocks-prefix-bloom") {
      std::string c = v;
      if (c != "on" && c != "off") Usage("--rocks-prefix-bloom is on or off");
      f.tuning.message_prefix_bloom = c == "on";
    } else if (a == "--rocks-insert-hints") {
      std::string c = v;
      if (c != "on" && c != "off") Usage("--rocks-insert-hints is on or off");
      f.tuning.message_insert_hints = c == "on";
    } else if (a == "--rocks-meta-mb") {
      f.tuning.meta_write_buffer_bytes = ParseCount("--rocks-meta-mb", v) << 20;
    } else if (a == "--rocks-meta-hints") {
      std::string c = v;
      if (c != "on" && c != "off") Usage("--rocks-meta-hints is on or off");
      f.tuning.meta_insert_hints = c == "on";
    } else if (a == "--rocks-memtable") {
      std::string c = v;
      if (c != "own" && c != "rocksdb") Usage("--rocks-memtable is own or rocksdb");
      f.tuning.own_memtable = c == "own";
    } else if (a == "--rocks-l0-trigger") {
      f.tuning.message_l0_trigger = static_cast<int>(ParseCount("--rocks-l0-trigger", v));
    } else if (a == "--rocks-block-kb") {
      f.tuning.message_block_bytes = ParseCount("--rocks-block-kb", v) << 10;
    } else {
      Usage(("unknown flag " + a).c_str());
    }
  }
  return f;
}

// ---- workload ----------------------------------------------------------------------

// Chat-like text: compresses about as well as real messages do, unlike random bytes
// (which would make compression look useless) or repeated bytes (which would flatter it).
constexpr const char* kWords[] = {
    "the", "be", "to", "of", "and", "a", "in", "that", "have", "I", "it", "for", "not", "on",
    "with", "he", "as", "you", "do", "at", "this", "but", "his", "by", "from", "they", "we",
    "say", "her", "she", "or", "an", "will", "my", "one", "all", "would", "there", "their",
    "what", "so", "up", "out", "if", "about", "who", "get", "which", "go", "me", "when",
    "make", "can", "like", "time", "no", "just", "him", "know", "take", "people", "into",
    "year", "your", "good", "some", "could", "them", "see", "other", "than", "then", "now",
    "look", "only", "come", "its", "over", "think", "also", "back", "after", "use", "two",
    "how", "our", "work", "first", "well", "way", "even", "new", "want", "because", "any",
    "these", "give", "day", "most", "us", "meeting", "tomorrow", "lunch", "deploy", "build",
    "ticket", "review", "ok", "thanks!", "lol", "sounds", "great", "ship", "it", "bug",
    "fixed", "coffee?", "done", "later", "call", "pushed", "branch", "release", "monday",
    "weekend", "photo", "link", "doc", "draft", "agenda", "sorry", "late", "train", "home"};

class Workload {
 public:
  Workload(uint32_t convs, uint64_t seed) : rng_(seed), seqs_(convs, 0) {
    conv_ids_.reserve(convs);
    for (uint32_t i = 0; i < convs; ++i) conv_ids_.push_back(rng_() | 1);  // random, like RandomId64
  }

  std::vector<Message> NextBatch(size_t n) {
    std::vector<Message> batch;
    batch.reserve(n);
    const int64_t now = WallMs();
    for (size_t i = 0; i < n; ++i) {
      uint32_t c = static_cast<uint32_t>(rng_() % conv_ids_.size());
      Message m;
      m.conv = conv_ids_[c];
      m.seq = ++seqs_[c];
      m.sender = conv_ids_[c] ^ (rng_() % 8);
      m.sender_device = "dev-" + std::to_string(rng_() % 4);
      m.client_msg_id = Uuid();
      m.content = Text(120 + rng_() % 61);
      m.sent_ms = now - static_cast<int64_t>(rng_() % 2000);
      m.server_ms = now;
      m.fingerprint = rng_();
      content_bytes_ += m.content.size();
      batch.push_back(std::move(m));
    }
    return batch;
  }

  ConvId RandomConv() { return conv_ids_[rng_() % conv_ids_.size()]; }
  Seq LastSeqOf(ConvId id) const {
    for (size_t i = 0; i < conv_ids_.size(); ++i)
      if (conv_ids_[i] == id) return seqs_[i];
    return 0;
  }
  std::string Uuid() {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string s(36, '-');
    for (size_t i = 0; i < s.size(); ++i)
      if (i != 8 && i != 13 && i != 18 && i != 23) s[i] = kHex[rng_() % 16];
    return s;
  }
  uint64_t content_bytes() const { return content_bytes_; }

 private:
  std::string Text(size_t target) {
    std::string s;
    s.reserve(target + 16);
    while (s.size() < target) {
      if (!s.empty()) s.push_back(' ');
      s += kWords[rng_() % std::size(kWords)];
    }
    return s;
  }

  std::mt19937_64 rng_;
  std::vector<ConvId> conv_ids_;
  std::vector<Seq> seqs_;
  uint64_t content_bytes_ = 0;
};

// ---- the two layouts behind one small seam ---------------------------------------

class Layout {
 public:
  virtual ~Layout() = default;
  virtual bool Append(const std::vector<Message>& batch) = 0;
  virtual bool ReadNewest(ConvId conv, size_t limit, std::vector<Message>* out) = 0;
  virtual bool DedupMiss(ConvId conv, const std::string& client_msg_id) = 0;  // true if absent
  virtual bool Reopen() = 0;
  virtual std::string Stats() { return ""; }
};

class RocksLayout final : public Layout {
 public:
  RocksLayout(std::string dir, RocksTuning tuning, size_t cache_bytes, bool commit)
      : tuning_(tuning), commit_(commit) {
    options_.dir = std::move(dir);
    options_.sync = SyncPolicy::kAlways;
    options_.cache_bytes = cache_bytes;
  }
  bool Reopen() override {
    store_.reset();
    auto s = RocksStore::Open(options_, tuning_);
    if (!s.ok()) {
      std::fprintf(stderr, "rocks open: %s\n", s.status().message().c_str());
      return false;
    }
    rocks_ = s->get();
    store_ = std::move(s).value();  // the measured paths use it only as a Store
    return true;
  }
  std::string Stats() override { return rocks_->Property(RocksStore::kMessagesCf, "rocksdb.levelstats"); }
  bool Append(const std::vector<Message>& batch) override {
    Status s;
    if (commit_) {
      // As the server commits a 1:1 message that was delivered: the message, its
      // conversation's summary, and the recipient's receipt and device cursor.
      CommitBatch b;
      b.messages = batch;
      for (const Message& m : batch) {
        const UserId to = m.sender + 1;
        b.receipts.push_back({m.conv, MemberReceipt{to, m.seq, 0, m.server_ms, 0}});
        b.cursors.push_back(DeviceCursor{to, "phone", m.conv, m.seq});
      }
      s = store_->Commit(b);
    } else {
      s = store_->AppendMessages(batch);
    }
    if (!s.ok()) std::fprintf(stderr, "rocks append: %s\n", s.message().c_str());
    return s.ok();
  }
  bool ReadNewest(ConvId conv, size_t limit, std::vector<Message>* out) override {
    auto r = store_->ReadBefore(conv, std::numeric_limits<Seq>::max(), limit);
    if (!r.ok()) return false;
    *out = std::move(r).value();
    return true;
  }
  bool DedupMiss(ConvId conv, const std::string& id) override {
    auto r = store_->FindDedup(conv, id);
    return r.ok() && !r->has_value();
  }

 private:
  StoreOptions options_;
  RocksTuning tuning_;
  bool commit_ = false;
  std::unique_ptr<Store> store_;
  RocksStore* rocks_ = nullptr;
};

class SqliteLayout final : public Layout {
 public:
  SqliteLayout(std::string dir, size_t cache_bytes)
      : path_(std::move(dir) + "/messages.db"),
        cache_pragma_("PRAGMA cache_size=-" + std::to_string(cache_bytes >> 10)) {}
  ~SqliteLayout() override { Close(); }

  bool Reopen() override {
    Close();
    if (sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
        SQLITE_OK)
      return Fail("open");
    // The same durability as layout A: WAL, fsync at every commit. Page cache as large
    // as RocksStore's block cache so neither side is starved.
    if (!Exec("PRAGMA journal_mode=WAL") || !Exec("PRAGMA synchronous=FULL") ||
        !Exec(cache_pragma_.c_str()))
      return false;
    if (!Exec("CREATE TABLE IF NOT EXISTS messages ("
              " conv INTEGER NOT NULL, seq INTEGER NOT NULL, sender INTEGER NOT NULL,"
              " sender_device TEXT NOT NULL, client_msg_id TEXT NOT NULL,"
              " content_type INTEGER NOT NULL, content TEXT NOT NULL, media_url TEXT NOT NULL,"
              " target_message_id TEXT NOT NULL, reply_to TEXT NOT NULL,"
              " sent_ms INTEGER NOT NULL, server_ms INTEGER NOT NULL, fingerprint INTEGER NOT NULL,"
              " PRIMARY KEY (conv, seq)) WITHOUT ROWID") ||
        !Exec("CREATE UNIQUE INDEX IF NOT EXISTS messages_dedup ON messages (conv, client_msg_id)"))
      return false;
    return Prepare(&begin_, "BEGIN") && Prepare(&commit_, "COMMIT") &&
           Prepare(&insert_,
                   "INSERT INTO messages VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)") &&
           Prepare(&page_,
                   "SELECT seq, sender, sender_device, client_msg_id, content_type, content, media_url,"
                   " target_message_id, reply_to, sent_ms, server_ms, fingerprint FROM messages"
                   " WHERE conv = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3") &&
           Prepare(&dedup_, "SELECT seq FROM messages WHERE conv = ?1 AND client_msg_id = ?2");
  }

  bool Append(const std::vector<Message>& batch) override {
    if (!Step(begin_)) return false;
    for (const Message& m : batch) {
      sqlite3_stmt* s = insert_;
      sqlite3_bind_int64(s, 1, static_cast<int64_t>(m.conv));
      sqlite3_bind_int64(s, 2, static_cast<int64_t>(m.seq));
      sqlite3_bind_int64(s, 3, static_cast<int64_t>(m.sender));
      BindText(s, 4, m.sender_device);
      BindText(s, 5, m.client_msg_id);
      sqlite3_bind_int(s, 6, static_cast<int>(m.content_type));
      BindText(s, 7, m.content);
      BindText(s, 8, m.media_url);
      BindText(s, 9, m.target_message_id);
      BindText(s, 10, m.reply_to);
      sqlite3_bind_int64(s, 11, m.sent_ms);
      sqlite3_bind_int64(s, 12, m.server_ms);
      sqlite3_bind_int64(s, 13, static_cast<int64_t>(m.fingerprint));
      if (!Step(s)) {
        Exec("ROLLBACK");
        return false;
      }
    }
    return Step(commit_);
  }

  bool ReadNewest(ConvId conv, size_t limit, std::vector<Message>* out) override {
    out->clear();
    sqlite3_stmt* s = page_;
    sqlite3_bind_int64(s, 1, static_cast<int64_t>(conv));
    sqlite3_bind_int64(s, 2, std::numeric_limits<int64_t>::max());
    sqlite3_bind_int64(s, 3, static_cast<int64_t>(limit));
    int rc;
    // Materialised into the same structs ReadBefore returns, so both sides do the
    // same amount of copying.
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      Message m;
      m.conv = conv;
      m.seq = static_cast<Seq>(sqlite3_column_int64(s, 0));
      m.sender = static_cast<UserId>(sqlite3_column_int64(s, 1));
      m.sender_device = Col(s, 2);
      m.client_msg_id = Col(s, 3);
      m.content_type = static_cast<ContentType>(sqlite3_column_int(s, 4));
      m.content = Col(s, 5);
      m.media_url = Col(s, 6);
      m.target_message_id = Col(s, 7);
      m.reply_to = Col(s, 8);
      m.sent_ms = sqlite3_column_int64(s, 9);
      m.server_ms = sqlite3_column_int64(s, 10);
      m.fingerprint = static_cast<uint64_t>(sqlite3_column_int64(s, 11));
      out->push_back(std::move(m));
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE;
  }

  bool DedupMiss(ConvId conv, const std::string& id) override {
    sqlite3_stmt* s = dedup_;
    sqlite3_bind_int64(s, 1, static_cast<int64_t>(conv));
    BindText(s, 2, id);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE;
  }

 private:
  static void BindText(sqlite3_stmt* s, int i, const std::string& v) {
    sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  }
  static std::string Col(sqlite3_stmt* s, int i) {
    const char* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s, i))) : std::string();
  }
  bool Fail(const char* what) {
    std::fprintf(stderr, "sqlite %s: %s\n", what, db_ ? sqlite3_errmsg(db_) : "no handle");
    return false;
  }
  bool Exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::fprintf(stderr, "sqlite exec %s: %s\n", sql, err ? err : "?");
      sqlite3_free(err);
      return false;
    }
    return true;
  }
  bool Prepare(sqlite3_stmt** s, const char* sql) {
    if (sqlite3_prepare_v2(db_, sql, -1, s, nullptr) != SQLITE_OK) return Fail(sql);
    return true;
  }
  bool Step(sqlite3_stmt* s) {
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return Fail("step");
    return true;
  }
  void Close() {
    for (sqlite3_stmt** s : {&begin_, &commit_, &insert_, &page_, &dedup_}) {
      sqlite3_finalize(*s);
      *s = nullptr;
    }
    if (db_) sqlite3_close(db_);
    db_ = nullptr;
  }

  std::string path_;
  std::string cache_pragma_;  // the same budget as RocksStore's block cache
  sqlite3* db_ = nullptr;
  sqlite3_stmt* begin_ = nullptr;
  sqlite3_stmt* commit_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* page_ = nullptr;
  sqlite3_stmt* dedup_ = nullptr;
};

// ---- measuring -----------------------------------------------------------------------

// This machine's cores are shared, so wall-clock tails include time the thread spent
// preempted. CPU time of the calling thread is immune to that (and, with the data in
// the OS page cache, close to the whole cost); it is reported beside the wall figures.
int64_t ThreadCpuNs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

struct Dist {
  double mean_us = 0, p50_us = 0, p99_us = 0, max_us = 0;
  double cpu_mean_us = 0;  // calling thread only; background compaction not included
};

Dist Summarise(std::vector<int64_t> ns, int64_t cpu_ns) {
  Dist d;
  if (ns.empty()) return d;
  d.cpu_mean_us = static_cast<double>(cpu_ns) / static_cast<double>(ns.size()) / 1e3;
  std::sort(ns.begin(), ns.end());
  double sum = 0;
  for (int64_t v : ns) sum += static_cast<double>(v);
  auto at = [&](double p) {
    size_t i = static_cast<size_t>(p * static_cast<double>(ns.size() - 1) + 0.5);
    return static_cast<double>(ns[i]) / 1e3;
  };
  d.mean_us = sum / static_cast<double>(ns.size()) / 1e3;
  d.p50_us = at(0.50);
  d.p99_us = at(0.99);
  d.max_us = static_cast<double>(ns.back()) / 1e3;
  return d;
}

struct Load {
  bool ok = false;
  double msgs_per_s = 0;
  double seconds = 0;
  Dist commit;
};

Load Fill(Layout& layout, Workload& w, uint64_t total, uint32_t batch, bool progress) {
  Load out;
  std::vector<int64_t> lat;
  lat.reserve(total / batch + 1);
  int64_t in_commits = 0, cpu = 0;
  uint64_t done = 0;
  const int64_t t_start = MonoNs();
  int64_t next_report = t_start + 5'000'000'000;
  while (done < total) {
    auto b = w.NextBatch(std::min<uint64_t>(batch, total - done));
    int64_t c0 = ThreadCpuNs(), t0 = MonoNs();
    if (!layout.Append(b)) return out;
    int64_t dt = MonoNs() - t0;
    cpu += ThreadCpuNs() - c0;
    lat.push_back(dt);
    in_commits += dt;
    done += b.size();
    if (progress && MonoNs() > next_report) {
      std::fprintf(stderr, "  ... %" PRIu64 " / %" PRIu64 " messages\n", done, total);
      next_report += 5'000'000'000;
    }
  }
  out.ok = true;
  out.seconds = static_cast<double>(MonoNs() - t_start) / 1e9;
  // Time inside the append calls only: the generator's cost is ours, not the store's.
  out.msgs_per_s = static_cast<double>(total) / (static_cast<double>(in_commits) / 1e9);
  out.commit = Summarise(std::move(lat), cpu);
  return out;
}

struct Reads {
  bool ok = false;
  Dist page;
  double avg_rows = 0;
};

Reads PageReads(Layout& layout, Workload& w, uint32_t n) {
  Reads out;
  std::vector<int64_t> lat;
  lat.reserve(n);
  std::vector<Message> page;
  uint64_t rows = 0;
  int64_t cpu = 0;
  for (uint32_t i = 0; i < n; ++i) {
    ConvId c = w.RandomConv();
    int64_t c0 = ThreadCpuNs(), t0 = MonoNs();
    if (!layout.ReadNewest(c, kPage, &page)) return out;
    lat.push_back(MonoNs() - t0);
    cpu += ThreadCpuNs() - c0;
    rows += page.size();
    // A wrong page would make every figure meaningless; say so loudly.
    Seq last = w.LastSeqOf(c);
    if (!page.empty() && page.front().seq != last) {
      std::fprintf(stderr, "page read returned seq %" PRIu64 ", expected %" PRIu64 "\n",
                   page.front().seq, last);
      return out;
    }
  }
  out.ok = true;
  out.page = Summarise(std::move(lat), cpu);
  out.avg_rows = static_cast<double>(rows) / n;
  return out;
}

Dist DedupMisses(Layout& layout, Workload& w, uint32_t n) {
  std::vector<int64_t> lat;
  lat.reserve(n);
  int64_t cpu = 0;
  for (uint32_t i = 0; i < n; ++i) {
    ConvId c = w.RandomConv();
    std::string id = w.Uuid();
    int64_t c0 = ThreadCpuNs(), t0 = MonoNs();
    bool miss = layout.DedupMiss(c, id);
    lat.push_back(MonoNs() - t0);
    cpu += ThreadCpuNs() - c0;
    if (!miss) std::fprintf(stderr, "dedup lookup failed or hit unexpectedly\n");
  }
  return Summarise(std::move(lat), cpu);
}

uint64_t DiskBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file(ec)) total += it->file_size(ec);
  return total;
}

struct LayoutResult {
  std::string name;
  Load load;
  Reads final_reads, reopen_reads, small_reads;
  Dist dedup_miss;
  uint64_t disk = 0;
  bool ok = false;
};

template <typename MakeLayout>
LayoutResult RunLayout(const std::string& name, MakeLayout make, const std::string& dir, const Flags& f) {
  LayoutResult r;
  r.name = name;
  std::fprintf(stderr, "%s: loading %" PRIu64 " messages...\n", name.c_str(), f.messages);
  {
    std::unique_ptr<Layout> big = make(dir + "/big");
    if (!big->Reopen()) return r;
    Workload w(f.convs, 42);
    r.load = Fill(*big, w, f.messages, f.batch, true);
    if (!r.load.ok) return r;
    if (f.verbose) std::fprintf(stderr, "%s after load:\n%s\n", name.c_str(), big->Stats().c_str());
    r.final_reads = PageReads(*big, w, f.page_reads);
    r.dedup_miss = DedupMisses(*big, w, f.page_reads);
    // Closed and reopened: the store's own caches are cold, the OS page cache is not.
    if (!big->Reopen()) return r;
    r.reopen_reads = PageReads(*big, w, f.page_reads);
  }
  // Measured closed, when both have folded their logs into the main files (RocksDB
  // flushes the recovered WAL on open; SQLite checkpoints on close), so a WAL that
  // happens to be large at the moment does not count.
  r.disk = DiskBytes(dir + "/big");
  {
    std::unique_ptr<Layout> small = make(dir + "/small");
    if (!small->Reopen()) return r;
    Workload w(kSmallConvs, 7);
    if (!Fill(*small, w, uint64_t{kSmallConvs} * kSmallPerConv, f.batch, false).ok) return r;
    r.small_reads = PageReads(*small, w, f.page_reads);
  }
  r.ok = r.final_reads.ok && r.reopen_reads.ok && r.small_reads.ok;
  return r;
}

void PrintTable(const std::vector<LayoutResult>& results, const Flags& f, double avg_content) {
  std::printf("\nstore_bench: %" PRIu64 " messages, %u conversations, batch %u, content %.0f B avg, "
              "sync on every commit, %ld CPUs\n",
              f.messages, f.convs, f.batch, avg_content, sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("A = RocksStore (message CF: %s, prefix bloom %s, insert hints %s, %zu KiB blocks, L0 trigger %d); "
              "B = SQLite %s (WAL, synchronous=FULL); cache %zu MiB each\n\n",
              f.tuning.compress_messages ? "lz4" : "no compression",
              f.tuning.message_prefix_bloom ? "on" : "off", f.tuning.message_insert_hints ? "on" : "off",
              f.tuning.message_block_bytes >> 10,
              f.tuning.message_l0_trigger, sqlite3_libversion(), f.cache_mb);
  constexpr int kLabel = 46, kCell = 22;
  std::printf("%-*s", kLabel, "");
  for (const auto& r : results) std::printf("%*s", kCell, r.name.c_str());
  std::printf("\n");
  auto row = [&](const char* label, auto cell) {
    std::printf("%-*s", kLabel, label);
    for (const auto& r : results) std::printf("%*s", kCell, r.ok ? cell(r).c_str() : "FAILED");
    std::printf("\n");
  };
  auto num = [](const char* fmt, double v) {
    char buf[48];
    std::snprintf(buf, sizeof buf, fmt, v);
    return std::string(buf);
  };
  // mean / p50 / p99 in one cell: the mean alone hides both the typical and the tail.
  auto dist = [](const Dist& d) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f / %.1f / %.1f", d.mean_us, d.p50_us, d.p99_us);
    return std::string(buf);
  };
  row("sustained append, messages/s", [&](const LayoutResult& r) { return num("%.0f", r.load.msgs_per_s); });
  row("load wall time, s", [&](const LayoutResult& r) { return num("%.1f", r.load.seconds); });
  row("commit latency p50, ms", [&](const LayoutResult& r) { return num("%.2f", r.load.commit.p50_us / 1e3); });
  row("commit latency p99, ms", [&](const LayoutResult& r) { return num("%.2f", r.load.commit.p99_us / 1e3); });
  row("commit latency max, ms", [&](const LayoutResult& r) { return num("%.2f", r.load.commit.max_us / 1e3); });
  row("commit CPU time (calling thread) mean, ms",
      [&](const LayoutResult& r) { return num("%.2f", r.load.commit.cpu_mean_us / 1e3); });
  auto cpu = [&](const Dist& d) { return num("%.1f", d.cpu_mean_us); };
  std::printf("newest page of 50, random conversation, us (wall mean / p50 / p99; CPU mean):\n");
  row("  at final size", [&](const LayoutResult& r) { return dist(r.final_reads.page); });
  row("", [&](const LayoutResult& r) { return cpu(r.final_reads.page); });
  row("  at final size, after reopen", [&](const LayoutResult& r) { return dist(r.reopen_reads.page); });
  row("", [&](const LayoutResult& r) { return cpu(r.reopen_reads.page); });
  row("  fresh store, 20 convs x 60 msgs", [&](const LayoutResult& r) { return dist(r.small_reads.page); });
  row("", [&](const LayoutResult& r) { return cpu(r.small_reads.page); });
  std::printf("dedup lookup, a miss, at final size, us (same):\n");
  row("", [&](const LayoutResult& r) { return dist(r.dedup_miss); });
  row("", [&](const LayoutResult& r) { return cpu(r.dedup_miss); });
  row("on disk after load and reopen, MiB",
      [&](const LayoutResult& r) { return num("%.1f", static_cast<double>(r.disk) / (1 << 20)); });
  std::printf("\n(page reads: %u per row; load throughput counts time inside the append call only)\n",
              f.page_reads);
}

int Main(int argc, char** argv) {
  Flags f = ParseFlags(argc, argv);
  bool temp = f.dir.empty();
  if (temp) {
    char tmpl[] = "/tmp/sb_store_bench.XXXXXX";
    if (!mkdtemp(tmpl)) {
      std::perror("mkdtemp");
      return 1;
    }
    f.dir = tmpl;
  } else {
    // Never write over (or delete) what a previous run or someone else left there.
    for (const char* sub : {"/a", "/b"})
      if (std::filesystem::exists(f.dir + sub)) {
        std::fprintf(stderr, "store_bench: %s%s exists; give an empty --dir\n", f.dir.c_str(), sub);
        return 2;
      }
  }

  std::vector<LayoutResult> results;
  if (f.layout != "b")
    results.push_back(RunLayout(
        "A rocksdb", [&](const std::string& d) { return std::make_unique<RocksLayout>(d, f.tuning, f.cache_mb << 20, f.commit); },
        f.dir + "/a", f));
  if (f.layout != "a")
    results.push_back(RunLayout(
        "B sqlite",
        [&](const std::string& d) {
          std::filesystem::create_directories(d);
          return std::make_unique<SqliteLayout>(d, f.cache_mb << 20);
        },
        f.dir + "/b", f));

  Workload probe(1, 42);
  probe.NextBatch(2000);
  PrintTable(results, f, static_cast<double>(probe.content_bytes()) / 2000);

  if (temp) {
    std::error_code ec;
    std::filesystem::remove_all(f.dir, ec);
  } else {
    std::printf("data left in %s\n", f.dir.c_str());
  }
  for (const auto& r : results)
    if (!r.ok) return 1;
  return 0;
}

}  // namespace
}  // namespace sb::store

int main(int argc, char** argv) { return sb::store::Main(argc, argv); }
