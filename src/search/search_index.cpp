#include "search/search_index.h"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "base/cpu_meter.h"
#include "base/log.h"
#include "base/utf8.h"
#include "metrics/metrics.h"

namespace sb::search {
namespace {

// ---- schema ----------------------------------------------------------------------
//
// msg:   the FTS5 table; rowid = RowidOf(cid, seq), one column `body`. A regular
//        (content-storing) table, because SQLite 3.40 cannot delete from a contentless
//        one without the old text, and edits/deletes need exactly that.
// convs: conversation -> dense cid and the highest seq applied (IndexedUpTo).
// meta:  schema version and the document count (for the IDF cache's staleness).
//
// Bump kSchemaVersion when the layout changes: an index with another version is
// dropped and rebuilt from the store (it is derived data).
constexpr int64_t kSchemaVersion = 1;
// The one place the tokenizer is configured: the table and query tokenization must
// agree, or a query word would never equal an indexed token.
constexpr const char* kTokenizerName = "unicode61";
constexpr std::array<const char*, 2> kTokenizerArgs = {"remove_diacritics", "2"};
constexpr const char* kCreateFts =
    "CREATE VIRTUAL TABLE msg USING fts5(body, tokenize='unicode61 remove_diacritics 2')";

// rowid = cid << 32 | seq. Conversations get a dense cid (1, 2, ...) on first sight so
// that all of one conversation's rows form one rowid range: FTS5 can seek to it
// (README, "Query plans") and a row's conversation is its rowid >> 32, with no lookup.
constexpr int kSeqBits = 32;
constexpr Seq kMaxIndexableSeq = (Seq{1} << kSeqBits) - 1;
// DropBefore requests applied per indexer transaction (README, "Retention").
constexpr size_t kMaxDropsPerTransaction = 10'000;
constexpr int64_t kMaxCid = std::numeric_limits<int32_t>::max();

int64_t RowidOf(int64_t cid, Seq seq) { return (cid << kSeqBits) | static_cast<int64_t>(seq); }

// ConvId is unsigned; SQLite integers are signed. Stored bit-for-bit.
int64_t ToSql(ConvId c) { return static_cast<int64_t>(c); }
ConvId FromSql(int64_t v) { return static_cast<ConvId>(v); }

// ---- BM25 ------------------------------------------------------------------------
constexpr double kK1 = 1.2;
constexpr double kB = 0.75;
// A term is worth more the fewer documents hold it. The "1 +" form (as in Lucene)
// stays positive for terms found in more than half of the documents, where FTS5's
// bm25() clamps to ~0 and a query of common words would rank everything alike.
double Idf(int64_t total_docs, int64_t df) {
  double n = static_cast<double>(std::max<int64_t>(total_docs, df));
  double d = static_cast<double>(df);
  return std::log(1.0 + (n - d + 0.5) / (d + 0.5));
}

// A cached document frequency is reused until the index grew or shrank by more than
// this fraction since it was counted: IDF moves slowly with it.
constexpr double kDfStaleness = 0.10;
// Only frequencies at least this large are cached: smaller ones cost less to count
// than the cache's churn, and the few large ones are the ones worth remembering.
constexpr int64_t kDfCacheMin = 2'000;
constexpr size_t kDfCacheMax = 4'096;

// Cost model for Plan::kAuto, in units of "one matching row streamed by FTS5". A
// per-conversation seek costs this many rows per query word (an %_idx lookup and a
// leaf read per FTS5 segment, with the idle merging below keeping segments few);
// chosen with bench/search_bench --plans all (README, "Query plans").
constexpr double kSeekCostRows = 300.0;

// sb_rank(msg, idf_blob): BM25 of the current row. The IDF of each phrase of the MATCH
// expression comes in as an array of doubles so it is computed once per search; the
// built-in bm25() recomputes it with a pass over every phrase's posting list on every
// xFilter, i.e. once per conversation in the per-conversation plan.
void RankFunction(const Fts5ExtensionApi* api, Fts5Context* fts, sqlite3_context* out, int argc,
                  sqlite3_value** argv) {
  int phrases = api->xPhraseCount(fts);
  if (argc != 1 || phrases <= 0 || phrases > static_cast<int>(kMaxQueryWords) ||
      sqlite3_value_bytes(argv[0]) != phrases * static_cast<int>(sizeof(double))) {
    sqlite3_result_error(out, "sb_rank: bad arguments", -1);
    return;
  }
  std::array<double, kMaxQueryWords> idf{};
  std::memcpy(idf.data(), sqlite3_value_blob(argv[0]), static_cast<size_t>(phrases) * sizeof(double));

  int insts = 0;
  int rc = api->xInstCount(fts, &insts);
  std::array<int, kMaxQueryWords> tf{};
  for (int i = 0; rc == SQLITE_OK && i < insts; ++i) {
    int phrase = 0, col = 0, off = 0;
    rc = api->xInst(fts, i, &phrase, &col, &off);
    if (rc == SQLITE_OK && phrase >= 0 && phrase < phrases) ++tf[static_cast<size_t>(phrase)];
  }
  sqlite3_int64 rows = 0, tokens = 0;
  int len = 0;
  if (rc == SQLITE_OK) rc = api->xRowCount(fts, &rows);
  if (rc == SQLITE_OK) rc = api->xColumnTotalSize(fts, -1, &tokens);
  if (rc == SQLITE_OK) rc = api->xColumnSize(fts, -1, &len);
  if (rc != SQLITE_OK) {
    sqlite3_result_error_code(out, rc);
    return;
  }
  double avg = rows > 0 ? static_cast<double>(tokens) / static_cast<double>(rows) : 1.0;
  if (avg <= 0) avg = 1.0;
  double norm = kK1 * (1.0 - kB + kB * static_cast<double>(len) / avg);
  double score = 0;
  for (int p = 0; p < phrases; ++p) {
    double f = tf[static_cast<size_t>(p)];
    if (f > 0) score += idf[static_cast<size_t>(p)] * f * (kK1 + 1.0) / (f + norm);
  }
  sqlite3_result_double(out, score);
}

// Background merging (README, "Segments"). FTS5 writes every flush of its pending
// data as a new segment and merges only when 4 accumulate on a level, which leaves a
// few dozen segments at a million messages; every query pays an index lookup per
// segment and word. When the indexer has nothing else to do it runs bounded merge
// steps with usermerge = 2 until FTS5 reports no work, which leaves about one segment
// per level (3 at a million messages). A step writes at most this many pages (~1 MB,
// ~15 ms), so a batch that arrives meanwhile waits at most that long.
constexpr int kMergeStepPages = 256;
constexpr int kUserMerge = 2;

// ---- SQLite plumbing -------------------------------------------------------------
struct DbClose {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using Db = std::unique_ptr<sqlite3, DbClose>;
struct StmtFinalize {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtFinalize>;

Status SqlError(sqlite3* db, std::string_view what) {
  return Internal("search index: " + std::string(what) + ": " + sqlite3_errmsg(db));
}

Status Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    return Internal("search index: " + std::string(sql) + ": " + m);
  }
  return Status::Ok();
}

Result<Stmt> Prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
    return SqlError(db, std::string("prepare ") + sql);
  return Stmt(s);
}

// Resets a cached statement (and drops its bindings) however the scope is left, so
// the next use starts clean and no read transaction is held open by a half-stepped
// statement.
class Use {
 public:
  explicit Use(const Stmt& s) : s_(s.get()) {}
  ~Use() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  Use(const Use&) = delete;
  Use& operator=(const Use&) = delete;
  sqlite3_stmt* operator*() const { return s_; }

 private:
  sqlite3_stmt* s_;
};

Result<Db> OpenDb(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  Db db(raw);
  if (rc != SQLITE_OK) {
    return Internal("search index: open " + path + ": " + (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  }
  // The indexer holds the write lock only for one transaction at a time, but a
  // checkpoint or WAL recovery can still make a connection wait briefly.
  sqlite3_busy_timeout(db.get(), 5000);
  return db;
}

fts5_api* Fts5Api(sqlite3* db) {
  fts5_api* api = nullptr;
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &s, nullptr) != SQLITE_OK) return nullptr;
  sqlite3_bind_pointer(s, 1, static_cast<void*>(&api), "fts5_api_ptr", nullptr);
  sqlite3_step(s);
  sqlite3_finalize(s);
  return api;
}

Result<int64_t> QueryInt(sqlite3* db, const Stmt& stmt) {
  Use u(stmt);
  int rc = sqlite3_step(*u);
  if (rc == SQLITE_ROW) return static_cast<int64_t>(sqlite3_column_int64(*u, 0));
  if (rc == SQLITE_DONE) return int64_t{0};
  return SqlError(db, "query");
}

// "[1,2,3]": a list of integers bound as one parameter and expanded by json_each, so
// a statement serves any number of conversations without one parameter per value.
std::string JsonIntArray(const std::vector<int64_t>& v) {
  std::string s = "[";
  s.reserve(v.size() * 12 + 2);
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(v[i]);
  }
  s += ']';
  return s;
}

// One FTS5 string per token: tokens come out of the tokenizer (word characters only),
// so the quotes only make sure no token is ever read as an operator (AND, OR, NOT,
// NEAR) or a column filter. Adjacent strings are an implicit AND.
std::string MatchExpression(const std::vector<std::string>& tokens) {
  std::string q;
  for (const auto& t : tokens) {
    if (!q.empty()) q += ' ';
    q += '"';
    for (char c : t) {
      if (c == '"') q += '"';
      q += c;
    }
    q += '"';
  }
  return q;
}

}  // namespace

// ---- connections -----------------------------------------------------------------

struct SearchIndex::ReadConn {
  Db db;
  fts5_tokenizer tokenizer_api{};
  Fts5Tokenizer* tokenizer = nullptr;
  Stmt lookup;    // conversations -> cids
  Stmt docs;      // document count
  Stmt df;        // documents holding one token
  Stmt scan;      // Plan::kScanAll
  Stmt per_conv;  // Plan::kPerConversation
  Stmt up_to;     // IndexedUpTo

  ~ReadConn() {
    if (tokenizer) tokenizer_api.xDelete(tokenizer);
  }
};

struct SearchIndex::Writer {
  Db db;
  Stmt begin, commit, rollback;
  Stmt insert, update, remove;
  Stmt conv_get, conv_insert, conv_update, docs_add;
  Stmt merge, drop_range;

  struct ConvState {
    int64_t cid = 0;
    Seq up_to = 0;
  };
  // Committed state of recently seen conversations (the table is the truth; this only
  // saves a lookup per message). Bounded by clearing: it is a cache.
  std::unordered_map<ConvId, ConvState> convs;
  static constexpr size_t kMaxCachedConvs = 1'000'000;
  // Per conversation, the first seq history retention kept (DropBefore): a message below
  // it that was still queued when its rows were deleted is not indexed. Only matters for
  // messages in flight at the time, so it is bounded like the cache above.
  std::unordered_map<ConvId, Seq> floors;
  int64_t next_cid = 1;
  bool warned_seq = false;

  Status Init() {
    sqlite3* d = db.get();
    auto prep = [&](Stmt* out, const char* sql) -> Status {
      auto s = Prepare(d, sql);
      if (!s) return s.status();
      *out = std::move(s.value());
      return Status::Ok();
    };
    for (auto [out, sql] : std::initializer_list<std::pair<Stmt*, const char*>>{
             {&begin, "BEGIN IMMEDIATE"},
             {&commit, "COMMIT"},
             {&rollback, "ROLLBACK"},
             {&insert, "INSERT OR REPLACE INTO msg(rowid, body) VALUES (?1, ?2)"},
             {&update, "UPDATE msg SET body = ?2 WHERE rowid = ?1"},
             {&remove, "DELETE FROM msg WHERE rowid = ?1"},
             {&conv_get, "SELECT cid, up_to FROM convs WHERE conv = ?1"},
             {&conv_insert, "INSERT INTO convs(conv, cid, up_to) VALUES (?1, ?2, ?3)"},
             {&conv_update, "UPDATE convs SET up_to = ?2 WHERE conv = ?1"},
             {&docs_add, "UPDATE meta SET value = value + ?1 WHERE key = 'docs'"},
             {&merge, "INSERT INTO msg(msg, rank) VALUES ('merge', ?1)"},
             {&drop_range, "DELETE FROM msg WHERE rowid >= ?1 AND rowid < ?2"},
         }) {
      if (Status s = prep(out, sql); !s.ok()) return s;
    }
    Stmt max_cid;
    if (Status s = prep(&max_cid, "SELECT COALESCE(MAX(cid), 0) FROM convs"); !s.ok()) return s;
    auto m = QueryInt(d, max_cid);
    if (!m) return m.status();
    next_cid = *m + 1;
    return Status::Ok();
  }

  // One bounded background merge step (its own transaction). True if it did work:
  // FTS5 documents that a merge that changed fewer than 2 rows did nothing.
  Result<bool> MergeStep() {
    int before = sqlite3_total_changes(db.get());
    Use u(merge);
    sqlite3_bind_int(*u, 1, kMergeStepPages);
    if (sqlite3_step(*u) != SQLITE_DONE) return SqlError(db.get(), "merge segments");
    return sqlite3_total_changes(db.get()) - before >= 2;
  }

  // Highest seq applied for `conv` (0: none yet).
  Result<Seq> UpTo(ConvId conv) {
    if (auto c = convs.find(conv); c != convs.end()) return c->second.up_to;
    Use u(conv_get);
    sqlite3_bind_int64(*u, 1, ToSql(conv));
    int rc = sqlite3_step(*u);
    if (rc == SQLITE_ROW) return static_cast<Seq>(sqlite3_column_int64(*u, 1));
    if (rc == SQLITE_DONE) return Seq{0};
    return SqlError(db.get(), "read conversation");
  }

  Status Step(const Stmt& s) {
    Use u(s);
    int rc = sqlite3_step(*u);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return SqlError(db.get(), sqlite3_sql(s.get()));
    return Status::Ok();
  }

  struct Touched {
    ConvState state;
    bool is_new = false;
    bool dirty = false;
  };

  Result<Touched*> Conv(std::unordered_map<ConvId, Touched>& touched, ConvId conv, int64_t* next) {
    auto it = touched.find(conv);
    if (it != touched.end()) return &it->second;
    Touched t;
    if (auto c = convs.find(conv); c != convs.end()) {
      t.state = c->second;
    } else {
      Use u(conv_get);
      sqlite3_bind_int64(*u, 1, ToSql(conv));
      int rc = sqlite3_step(*u);
      if (rc == SQLITE_ROW) {
        t.state.cid = sqlite3_column_int64(*u, 0);
        t.state.up_to = static_cast<Seq>(sqlite3_column_int64(*u, 1));
      } else if (rc == SQLITE_DONE) {
        if (*next > kMaxCid) return Internal("search index: out of conversation ids");
        t.state.cid = (*next)++;
        t.is_new = true;
      } else {
        return SqlError(db.get(), "read conversation");
      }
    }
    return &touched.emplace(conv, t).first->second;
  }

  // Applies a group of batches as one transaction. On failure nothing is applied and
  // the caches are untouched (they are only updated from a committed transaction).
  Status Apply(const std::vector<std::vector<store::Message>>& group,
               const std::unordered_map<ConvId, Seq>& drops) {
    if (Status s = Step(begin); !s.ok()) return s;
    std::unordered_map<ConvId, Touched> touched;
    int64_t next = next_cid;
    int64_t docs_delta = 0;
    Status s = ApplyDrops(drops, &docs_delta);
    if (s.ok()) s = ApplyMessages(group, drops, touched, &next, &docs_delta);
    if (s.ok()) {
      for (auto& [conv, t] : touched) {
        if (!t.dirty) continue;
        const Stmt& st = t.is_new ? conv_insert : conv_update;
        Use u(st);
        sqlite3_bind_int64(*u, 1, ToSql(conv));
        if (t.is_new) {
          sqlite3_bind_int64(*u, 2, t.state.cid);
          sqlite3_bind_int64(*u, 3, static_cast<int64_t>(t.state.up_to));
        } else {
          sqlite3_bind_int64(*u, 2, static_cast<int64_t>(t.state.up_to));
        }
        if (sqlite3_step(*u) != SQLITE_DONE) {
          s = SqlError(db.get(), "write conversation");
          break;
        }
      }
    }
    if (s.ok() && docs_delta != 0) {
      Use u(docs_add);
      sqlite3_bind_int64(*u, 1, docs_delta);
      if (sqlite3_step(*u) != SQLITE_DONE) s = SqlError(db.get(), "count documents");
    }
    if (s.ok()) s = Step(commit);
    if (!s.ok()) {
      // Roll back explicitly: a failed COMMIT (e.g. disk full) leaves the
      // transaction open.
      (void)Step(rollback);
      return s;
    }
    if (floors.size() + drops.size() > kMaxCachedConvs) floors.clear();
    for (const auto& [conv, first_kept] : drops) floors[conv] = std::max(floors[conv], first_kept);
    if (convs.size() + touched.size() > kMaxCachedConvs) convs.clear();
    for (auto& [conv, t] : touched) {
      // A conversation only looked at (every message skipped) is not new in the table
      // unless written; keep it out of the cache so its cid is not reused.
      if (t.is_new && !t.dirty) continue;
      convs[conv] = t.state;
    }
    // A new cid that was never written is simply skipped (cids need not be gap-free).
    next_cid = next;
    return Status::Ok();
  }

  // Rows of the messages retention dropped: (conv, seq below first_kept). A conversation
  // the index never saw has none.
  Status ApplyDrops(const std::unordered_map<ConvId, Seq>& drops, int64_t* docs_delta) {
    for (const auto& [conv, first_kept] : drops) {
      int64_t cid = 0;
      if (auto c = convs.find(conv); c != convs.end()) {
        cid = c->second.cid;
      } else {
        Use u(conv_get);
        sqlite3_bind_int64(*u, 1, ToSql(conv));
        int rc = sqlite3_step(*u);
        if (rc == SQLITE_DONE) continue;
        if (rc != SQLITE_ROW) return SqlError(db.get(), "read conversation");
        cid = sqlite3_column_int64(*u, 0);
      }
      Use u(drop_range);
      sqlite3_bind_int64(*u, 1, RowidOf(cid, 0));
      sqlite3_bind_int64(*u, 2, RowidOf(cid, std::min<Seq>(first_kept, kMaxIndexableSeq)));
      if (sqlite3_step(*u) != SQLITE_DONE) return SqlError(db.get(), "drop retained-out rows");
      *docs_delta -= sqlite3_changes(db.get());
    }
    return Status::Ok();
  }

  // Below the first seq retention kept: dropped from the store (and its rows from here).
  bool BelowFloor(ConvId conv, Seq seq, const std::unordered_map<ConvId, Seq>& drops) const {
    if (auto d = drops.find(conv); d != drops.end() && seq < d->second) return true;
    auto f = floors.find(conv);
    return f != floors.end() && seq < f->second;
  }

  Status ApplyMessages(const std::vector<std::vector<store::Message>>& group,
                       const std::unordered_map<ConvId, Seq>& drops, std::unordered_map<ConvId, Touched>& touched,
                       int64_t* next, int64_t* docs_delta) {
    using store::ContentType;
    // What each message does to the index is decided in commit order (each
    // conversation's messages come in seq order, which the up_to check needs); the
    // rows are then written in rowid order. FTS5 flushes its pending terms to a new
    // segment whenever a write's rowid is below the previous one's, and commit order
    // interleaves conversations: written in that order, almost every row became its own
    // segment, and 1,000 active conversations indexed at less than half the rate of one.
    // Each operation touches one row of its own conversation, so operations on
    // different rows commute, and a stable sort keeps those on one row in commit order.
    enum class Kind { kInsert, kEdit, kDelete };
    struct Op {
      int64_t rowid;
      Kind kind;
      const store::Message* m;
    };
    std::vector<Op> ops;
    for (const auto& batch : group) {
      for (const store::Message& m : batch) {
        auto tr = Conv(touched, m.conv, next);
        if (!tr) return tr.status();
        Touched& t = **tr;
        // Re-fed after a crash (or a duplicate): already applied, and applying it
        // again could undo a later edit or delete.
        if (m.seq <= t.state.up_to) continue;
        t.state.up_to = m.seq;
        t.dirty = true;

        switch (m.content_type) {
          case ContentType::kText:
          case ContentType::kImage:
          case ContentType::kFile: {
            // A tombstone (read back from the store during catch-up, after its
            // delete committed): nothing to index; the delete that follows in seq
            // order finds no row, which is fine.
            if (m.deleted) break;
            if (BelowFloor(m.conv, m.seq, drops)) break;  // retention dropped it meanwhile
            if (m.seq > kMaxIndexableSeq) {
              // 2^32 messages in one conversation; refuse rather than alias rowids.
              if (!warned_seq) LOG_WARN("search_seq_out_of_range").Kv("conv", FormatConvId(m.conv));
              warned_seq = true;
              break;
            }
            // Media with no caption gets an empty row all the same, so that a later
            // edit that adds one finds a message to update (edits never create rows:
            // see below).
            ops.push_back({RowidOf(t.state.cid, m.seq), Kind::kInsert, &m});
            break;
          }
          case ContentType::kEdit:
          case ContentType::kDelete: {
            // Only an earlier message of the same conversation that is in the index
            // can be edited or deleted: a target in another conversation must never
            // put text there, and an edit of a deleted message, a reaction, or an
            // unknown seq updates no row, so it cannot resurrect or invent a hit.
            auto ref = ParseMessageId(m.target_message_id);
            if (!ref || ref->conv != m.conv || ref->seq >= m.seq || ref->seq > kMaxIndexableSeq) break;
            ops.push_back({RowidOf(t.state.cid, ref->seq),
                           m.content_type == ContentType::kEdit ? Kind::kEdit : Kind::kDelete, &m});
            break;
          }
          case ContentType::kReaction:
            break;
        }
      }
    }
    std::stable_sort(ops.begin(), ops.end(), [](const Op& a, const Op& b) { return a.rowid < b.rowid; });

    for (const Op& op : ops) {
      const store::Message& m = *op.m;
      switch (op.kind) {
        case Kind::kInsert: {
          Use u(insert);
          sqlite3_bind_int64(*u, 1, op.rowid);
          sqlite3_bind_text(*u, 2, m.content.data(), static_cast<int>(m.content.size()), SQLITE_STATIC);
          if (sqlite3_step(*u) != SQLITE_DONE) return SqlError(db.get(), "index message");
          ++*docs_delta;
          break;
        }
        case Kind::kEdit: {
          Use u(update);
          sqlite3_bind_int64(*u, 1, op.rowid);
          sqlite3_bind_text(*u, 2, m.content.data(), static_cast<int>(m.content.size()), SQLITE_STATIC);
          if (sqlite3_step(*u) != SQLITE_DONE) return SqlError(db.get(), "apply edit");
          break;
        }
        case Kind::kDelete: {
          Use u(remove);
          sqlite3_bind_int64(*u, 1, op.rowid);
          if (sqlite3_step(*u) != SQLITE_DONE) return SqlError(db.get(), "apply delete");
          *docs_delta -= sqlite3_changes(db.get());
          break;
        }
      }
    }
    return Status::Ok();
  }
};

namespace {

Status CreateSchema(sqlite3* db) {
  // 2 KB pages (SQLite's default is 4 KB), for a new file only: an existing index keeps
  // its page size. Each transaction dirties about two pages per active conversation
  // (the content and document-size tables are clustered by conversation), written to
  // the WAL and again at the checkpoint, which made the index most of the server's disk
  // writes. At 10,000 msg/s over 1,000 conversations: 49.6 -> 31.6-33.4 MB/s, indexer
  // CPU unchanged (14-15% of a core); bulk indexing and queries unchanged
  // (bench/search_bench). 1 KB wrote 29 MB/s but cost the indexer more CPU.
  if (Status s = Exec(db, "PRAGMA page_size=2048"); !s.ok()) return s;
  if (Status s = Exec(db, "PRAGMA journal_mode=WAL"); !s.ok()) return s;
  // Derived data: a crash may lose the last transactions (they are re-fed from the
  // store via IndexedUpTo), so no fsync per commit; WAL keeps the file consistent.
  if (Status s = Exec(db, "PRAGMA synchronous=NORMAL"); !s.ok()) return s;
  // A transaction that drains a backlog can write a WAL of 100+ MB; shrink it back
  // after the checkpoint instead of keeping the high-water mark on disk.
  if (Status s = Exec(db, "PRAGMA journal_size_limit=67108864"); !s.ok()) return s;
  // FTS5 merges read back the segments they merge: with SQLite's default 2 MB page
  // cache, indexing ran ~15% slower (300k messages, bench/search_bench).
  if (Status s = Exec(db, "PRAGMA cache_size=-65536"); !s.ok()) return s;
  // SQLite's default checkpoint (every ~4 MB of WAL) stays. Every ~40 MB cost ~10% less
  // indexer CPU, but each checkpoint's fsync of 40 MB stalled the commit thread's
  // fsyncs on the same disk: delivery p99 at 5k msg/s 7 -> 22-125 ms, at 10k 20-28 ->
  // 55 ms (`bench/run.sh --only sweep`, two runs each, A/B binaries).
  if (Status s = Exec(db, "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)");
      !s.ok())
    return s;
  int64_t version = 0;
  {
    auto stmt = Prepare(db, "SELECT value FROM meta WHERE key = 'version'");
    if (!stmt) return stmt.status();
    auto v = QueryInt(db, *stmt);
    if (!v) return v.status();
    version = *v;
  }  // finalized before the DROP below, which a pending statement would block
  if (version == kSchemaVersion) return Status::Ok();
  if (version != 0) LOG_WARN("search_index_rebuild").Kv("found_version", version).Kv("version", kSchemaVersion);
  if (Status s = Exec(db, "BEGIN IMMEDIATE"); !s.ok()) return s;
  std::string sql = std::string("DROP TABLE IF EXISTS msg; DROP TABLE IF EXISTS convs; DELETE FROM meta;") +
                    kCreateFts +
                    ";"
                    "CREATE TABLE convs(conv INTEGER PRIMARY KEY, cid INTEGER NOT NULL UNIQUE,"
                    " up_to INTEGER NOT NULL);"
                    "INSERT INTO msg(msg, rank) VALUES ('usermerge', " + std::to_string(kUserMerge) + ");"
                    "INSERT INTO meta(key, value) VALUES ('docs', 0), ('version', " +
                    std::to_string(kSchemaVersion) + "); COMMIT";
  if (Status s = Exec(db, sql.c_str()); !s.ok()) {
    (void)Exec(db, "ROLLBACK");
    return s;
  }
  return Status::Ok();
}

}  // namespace

// ---- SearchIndex -----------------------------------------------------------------

SearchIndex::SearchIndex(std::string path, Options options) : path_(std::move(path)), options_(options) {}

Result<std::unique_ptr<SearchIndex>> SearchIndex::Open(const std::string& path) { return Open(path, Options{}); }

Result<std::unique_ptr<SearchIndex>> SearchIndex::Open(const std::string& path, const Options& options) {
  auto db = OpenDb(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!db) return db.status();
  if (Status s = CreateSchema(db->get()); !s.ok()) return s;
  auto writer = std::make_unique<Writer>();
  writer->db = std::move(db.value());
  if (Status s = writer->Init(); !s.ok()) return s;

  std::unique_ptr<SearchIndex> index(new SearchIndex(path, options));
  index->writer_ = std::move(writer);
  // Open one reader now so that a broken setup (no FTS5, unreadable file) fails Open,
  // not the first search.
  auto reader = index->AcquireReader();
  if (!reader) return reader.status();
  index->ReleaseReader(std::move(reader.value()));
  index->thread_ = std::thread([p = index.get()] {
    pthread_setname_np(pthread_self(), "indexer");  // what `top -H` and perf show
    // Derived data, never on a message's path: when the CPU is short, the shards and
    // the commit thread go first and the indexer takes bigger (cheaper) batches later.
    // Nice 10 weighs about a tenth of a normal thread; it still gets idle CPU at once.
    if (p->options_.nice > 0) setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), p->options_.nice);
    p->Run();
  });
  return index;
}

SearchIndex::~SearchIndex() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  metrics::Server().search_backlog.Add(-static_cast<int64_t>(queued_messages_ + behind_messages_));
}

void SearchIndex::Enqueue(std::vector<store::Message> batch) {
  if (batch.empty()) return;
  size_t n = batch.size();
  bool stopped = false, fell_behind = false;
  {
    std::lock_guard lk(mu_);
    if (failed_) return;  // stopped: the next start catches up from IndexedUpTo
    if (!behind_ && queued_messages_ + n > options_.max_queued_messages) {
      if (options_.source) {
        // The batches already queued are earlier in commit order and are applied
        // first; everything from here on is read back from the store.
        behind_ = fell_behind = true;
        ++catch_ups_;
      } else {
        // Dropping this batch but applying later ones would advance IndexedUpTo past
        // messages that were never indexed; stopping keeps IndexedUpTo truthful.
        failed_ = stopped = true;
      }
    }
    if (behind_) {
      for (const store::Message& m : batch) lagging_.insert(m.conv);
      ++behind_batches_;
      behind_messages_ += n;
      metrics::Server().search_backlog.Add(static_cast<int64_t>(n));
      ++enqueued_batches_;
    } else if (!stopped) {
      queue_.push_back(std::move(batch));
      queued_messages_ += n;
      metrics::Server().search_backlog.Add(static_cast<int64_t>(n));
      ++enqueued_batches_;
    }
  }
  if (stopped) {
    LOG_ERROR("search_index_stopped")
        .Kv("reason", "queue full")
        .Kv("max_queued_messages", options_.max_queued_messages);
    return;
  }
  if (fell_behind) {
    LOG_WARN("search_index_behind")
        .Kv("max_queued_messages", options_.max_queued_messages)
        .Kv("detail", "indexing from the store until caught up");
  }
  work_cv_.notify_one();
}

void SearchIndex::ForgetLaggingLocked() {
  // Stopped: what was not queued counts as dropped (WaitIdle must not wait for it);
  // the next start catches it up from the store.
  lagging_.clear();
  done_batches_ += std::exchange(behind_batches_, 0);
  metrics::Server().search_backlog.Add(-static_cast<int64_t>(std::exchange(behind_messages_, 0)));
}

bool SearchIndex::ApplyGroup(const std::vector<std::vector<store::Message>>& group,
                             const std::unordered_map<ConvId, Seq>& drops, size_t queued, uint64_t batches) {
  Status s = Status::Ok();
  bool applied = false;
  // After a failed write nothing later may be applied: it would move IndexedUpTo
  // past the lost group. (After a queue overflow the queued batches are still
  // applied: they all precede the dropped one.)
  if (!write_failed_) {
    // A transient failure (checkpoint contention, a full disk that gets freed)
    // deserves a retry; a persistent one stops the index.
    for (int attempt = 0; attempt < 3; ++attempt) {
      if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100 * attempt * attempt));
      s = writer_->Apply(group, drops);
      if (s.ok()) {
        applied = true;
        break;
      }
      LOG_WARN("search_index_write_failed").Kv("attempt", attempt + 1).Kv("error", s.message());
    }
    write_failed_ = !applied;
  }
  size_t messages = 0;
  for (const auto& b : group) messages += b.size();
  bool newly_failed = false;
  {
    std::lock_guard lk(mu_);
    queued_messages_ -= queued;
    metrics::Server().search_backlog.Add(-static_cast<int64_t>(queued));
    done_batches_ += batches;
    merging_ = applied;
    if (applied) {
      indexed_messages_ += messages;
      ++transactions_;
    } else if (!failed_) {
      failed_ = newly_failed = true;
    }
  }
  if (newly_failed) LOG_ERROR("search_index_stopped").Kv("reason", "write failed").Kv("error", s.message());
  idle_cv_.notify_all();
  return applied;
}

Status SearchIndex::CatchUp(const std::unordered_set<ConvId>& convs, bool may_yield) {
  constexpr size_t kPage = 1000;
  std::vector<std::vector<store::Message>> group;
  size_t grouped = 0;
  auto flush = [&] {
    if (group.empty()) return true;
    bool ok = ApplyGroup(group, {}, 0, 0);
    {
      // What was read back stands for the batches that were not queued (roughly: it
      // may include commits whose batch is still on its way).
      std::lock_guard lk(mu_);
      uint64_t n = std::min<uint64_t>(grouped, behind_messages_);
      behind_messages_ -= n;
      metrics::Server().search_backlog.Add(-static_cast<int64_t>(n));
    }
    group.clear();
    grouped = 0;
    return ok;
  };
  for (auto it = convs.begin(); it != convs.end(); ++it) {
    const ConvId conv = *it;
    if (may_yield && group.empty() && CpuShort()) {
      // Paused between transactions: what is not done yet waits in lagging_ (the one
      // in progress too; it resumes from IndexedUpTo). Not while someone waits.
      std::lock_guard lk(mu_);
      if (waiting_idle_ == 0) {
        lagging_.insert(it, convs.end());
        return Status::Ok();
      }
      cpu_short_ = false;
    }
    auto up_to = writer_->UpTo(conv);
    if (!up_to) return up_to.status();
    Seq from = *up_to;
    for (;;) {
      auto page = options_.source(conv, from, kPage);
      if (!page) return page.status();
      if (page->empty()) break;
      from = page->back().seq;
      size_t got = page->size();
      grouped += got;
      group.push_back(std::move(*page));
      if (grouped >= options_.max_group_messages && !flush()) return Status::Ok();  // failed_ says why
      if (got < kPage) break;
    }
  }
  flush();
  return Status::Ok();
}

bool SearchIndex::CpuShort() {
  if (cpu_short_) return true;
  if (options_.yield_below_free_cpu <= 0 || !options_.source || catch_up_before_yield_) return false;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_cpu_check_ < std::chrono::milliseconds(options_.yield_check_ms)) return false;
  last_cpu_check_ = now;
  std::optional<double> free = free_cpu_();
  if (!free || *free >= options_.yield_below_free_cpu) return false;
  cpu_short_ = true;
  last_free_cpu_ = *free;
  return true;
}

void SearchIndex::MaybeYield() {
  if (!CpuShort()) return;
  cpu_short_ = false;
  using std::chrono::milliseconds;
  const auto start = std::chrono::steady_clock::now();
  uint64_t dropped = 0;
  {
    std::lock_guard lk(mu_);
    if (stop_ || failed_ || waiting_idle_ > 0) return;
    // The queued batches leave memory: the store has them, and the catch-up after the
    // pause reads them back (they stay in the backlog gauge until then).
    for (const auto& batch : queue_) {
      for (const store::Message& m : batch) lagging_.insert(m.conv);
      ++behind_batches_;
      behind_messages_ += batch.size();
      dropped += batch.size();
    }
    queue_.clear();
    queued_messages_ = 0;
    behind_ = true;  // Enqueue notes conversations only, as when it falls behind
    yielding_ = true;
    ++yields_;
  }
  metrics::Server().search_yielding.Set(1);
  LOG_INFO("search_index_yielding")
      .Kv("free_cpu_pct", static_cast<int64_t>(last_free_cpu_ * 100))
      .Kv("queued_messages_released", dropped);
  const char* why = nullptr;
  while (!why) {
    {
      std::unique_lock lk(mu_);
      work_cv_.wait_for(lk, milliseconds(options_.yield_check_ms), [&] { return stop_ || waiting_idle_ > 0; });
      if (stop_) {
        why = "stop";
      } else if (waiting_idle_ > 0) {
        why = "waited_for";
      } else if (std::chrono::steady_clock::now() - start >= milliseconds(options_.max_yield_ms)) {
        why = "max_yield";
        catch_up_before_yield_ = true;  // cleared once the index has caught up
      }
    }
    if (!why) {
      last_cpu_check_ = std::chrono::steady_clock::now();
      std::optional<double> free = free_cpu_();
      if (!free || *free >= options_.yield_below_free_cpu + kResumeMargin) why = "cpu_free";
    }
  }
  {
    std::lock_guard lk(mu_);
    yielding_ = false;
  }
  metrics::Server().search_yielding.Set(0);
  const auto paused = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
  LOG_INFO("search_index_resumed").Kv("reason", why).Kv("paused_ms", static_cast<int64_t>(paused.count()));
}

void SearchIndex::Run() {
  bool merge_pending = true;  // segments may be left from a previous run
  auto last_work = std::chrono::steady_clock::now() - std::chrono::milliseconds(options_.merge_after_idle_ms);
  // Made here so that the indexer's own CPU time, which counts as free, is this
  // thread's.
  FreeCpuMeter meter;
  free_cpu_ = options_.free_cpu ? options_.free_cpu : std::function<std::optional<double>()>([&meter] {
    return meter.Sample();
  });
  for (;;) {
    MaybeYield();
    std::vector<std::vector<store::Message>> group;
    std::unordered_map<ConvId, Seq> drops;
    std::unordered_set<ConvId> lagging;
    uint64_t drop_calls = 0;
    size_t messages = 0;
    {
      std::unique_lock lk(mu_);
      auto has_work = [&] { return stop_ || !queue_.empty() || !drops_.empty() || !lagging_.empty(); };
      if (merge_pending && !write_failed_) {
        // Merge only in a lull: wait for work until the lull is long enough.
        work_cv_.wait_until(lk, last_work + std::chrono::milliseconds(options_.merge_after_idle_ms), has_work);
      } else {
        work_cv_.wait(lk, has_work);
      }
      // Stop requested and everything queued applied. Conversations still lagging are
      // caught up by the next start, from the store.
      if (queue_.empty() && drops_.empty() && stop_) return;
      if (failed_) ForgetLaggingLocked();
      if (!queue_.empty() && !stop_ && !behind_ && waiting_idle_ == 0 &&
          queued_messages_ < options_.gather_messages) {
        // Light load: let a few commit batches gather into one transaction.
        work_cv_.wait_for(lk, std::chrono::milliseconds(options_.gather_ms), [&] {
          return stop_ || waiting_idle_ > 0 || queued_messages_ >= options_.gather_messages;
        });
      }
      // Everything queued, up to a size bound: under load many small commit batches
      // share one transaction, which is what makes indexing cheap (README).
      while (!queue_.empty() &&
             (group.empty() || messages + queue_.front().size() <= options_.max_group_messages)) {
        messages += queue_.front().size();
        group.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      // Retention drops, a bounded number per transaction: a pass over a million
      // trimmed conversations must not hold the index's write lock for seconds.
      if (drops_.size() <= kMaxDropsPerTransaction) {
        drops.swap(drops_);
        drop_calls = std::exchange(drop_calls_, 0);  // all of them are done with this one
      } else {
        for (auto it = drops_.begin(); drops.size() < kMaxDropsPerTransaction;) {
          drops.insert(*it);
          it = drops_.erase(it);
        }
      }
      // Behind (Enqueue): once what was queued is applied, read the rest from the store.
      if (group.empty() && queue_.empty() && !write_failed_) lagging.swap(lagging_);
    }
    if (!lagging.empty()) {
      Status s = CatchUp(lagging, /*may_yield=*/true);
      if (!s.ok()) {
        bool newly_failed = false;
        {
          std::lock_guard lk(mu_);
          write_failed_ = true;  // nothing later may be applied: IndexedUpTo would skip it
          if (!failed_) failed_ = newly_failed = true;
        }
        if (newly_failed) LOG_ERROR("search_index_stopped").Kv("reason", "store read failed").Kv("error", s.message());
      }
      last_work = std::chrono::steady_clock::now();
      merge_pending = !write_failed_;
      bool caught_up = false;
      {
        std::lock_guard lk(mu_);
        if (failed_) {
          ForgetLaggingLocked();
        } else if (lagging_.empty()) {
          // Nothing committed meanwhile that is not applied: queue again.
          behind_ = false;
          caught_up = true;
          catch_up_before_yield_ = false;
          done_batches_ += std::exchange(behind_batches_, 0);
          metrics::Server().search_backlog.Add(-static_cast<int64_t>(std::exchange(behind_messages_, 0)));
        }
      }
      if (caught_up) LOG_INFO("search_index_caught_up");
      idle_cv_.notify_all();
      if (group.empty() && drops.empty()) continue;
    }
    if (group.empty() && drops.empty()) {
      // Idle: merge a little, then look at the queue again.
      auto worked = writer_->MergeStep();
      if (!worked) LOG_WARN("search_index_merge_failed").Kv("error", worked.status().message());
      merge_pending = worked.ok() && *worked;
      if (!merge_pending) {
        std::lock_guard lk(mu_);
        merging_ = false;
      }
      continue;
    }
    bool applied = ApplyGroup(group, drops, messages, group.size() + drop_calls);
    merge_pending = applied;
    last_work = std::chrono::steady_clock::now();
  }
}

void SearchIndex::DropBefore(ConvId conv, Seq first_kept) {
  if (first_kept <= 1) return;  // nothing dropped
  {
    std::lock_guard lk(mu_);
    ++enqueued_batches_;
    if (failed_) {
      ++done_batches_;  // stopped: the next start catches up from what the store holds
      return;
    }
    Seq& f = drops_[conv];
    f = std::max(f, first_kept);
    ++drop_calls_;
  }
  work_cv_.notify_one();
}

Status SearchIndex::CatchUpFromSource(const std::vector<ConvId>& convs) {
  if (!options_.source) return Internal("search index: no source to catch up from");
  if (!convs.empty()) {
    {
      std::lock_guard lk(mu_);
      if (failed_) return Internal("search index stopped");
      lagging_.insert(convs.begin(), convs.end());
      behind_ = true;  // queued batches first, then these, as when it falls behind
      ++behind_batches_;
      ++enqueued_batches_;  // done once caught up: WaitIdle waits for it
    }
    work_cv_.notify_one();
  }
  WaitIdle();
  std::lock_guard lk(mu_);
  if (failed_) return Internal("search index stopped while catching up (see search_index_stopped)");
  return Status::Ok();
}

void SearchIndex::WaitIdle() {
  std::unique_lock lk(mu_);
  uint64_t target = enqueued_batches_;
  ++waiting_idle_;
  work_cv_.notify_one();  // cut a gathering wait short
  idle_cv_.wait(lk, [&] { return done_batches_ >= target; });
  --waiting_idle_;
}

SearchIndex::Stats SearchIndex::GetStats() {
  std::lock_guard lk(mu_);
  Stats s;
  s.queued_messages = queued_messages_;
  s.indexed_messages = indexed_messages_;
  s.transactions = transactions_;
  s.failed = failed_;
  s.catching_up = behind_;
  s.catch_ups = catch_ups_;
  s.merging = merging_;
  s.yielding = yielding_;
  s.yields = yields_;
  return s;
}

Result<std::unique_ptr<SearchIndex::ReadConn>> SearchIndex::AcquireReader() {
  {
    std::lock_guard lk(pool_mu_);
    if (!idle_readers_.empty()) {
      auto c = std::move(idle_readers_.back());
      idle_readers_.pop_back();
      return c;
    }
  }
  auto db = OpenDb(path_, SQLITE_OPEN_READWRITE);
  if (!db) return db.status();
  auto rc = std::make_unique<ReadConn>();
  rc->db = std::move(db.value());
  sqlite3* d = rc->db.get();
  // Readers never write; mapping the file lets every pooled connection share the OS
  // page cache instead of each filling its own.
  for (const char* p : {"PRAGMA query_only=1", "PRAGMA mmap_size=1073741824"}) {
    if (Status s = Exec(d, p); !s.ok()) return s;
  }
  fts5_api* api = Fts5Api(d);
  if (!api || api->iVersion < 2) return Internal("search index: SQLite has no FTS5");
  if (api->xCreateFunction(api, "sb_rank", nullptr, &RankFunction, nullptr) != SQLITE_OK)
    return SqlError(d, "register sb_rank");
  void* tok_ctx = nullptr;
  if (api->xFindTokenizer(api, kTokenizerName, &tok_ctx, &rc->tokenizer_api) != SQLITE_OK)
    return Internal("search index: no unicode61 tokenizer");
  std::array<const char*, kTokenizerArgs.size()> args = kTokenizerArgs;
  if (rc->tokenizer_api.xCreate(tok_ctx, args.data(), static_cast<int>(args.size()), &rc->tokenizer) !=
      SQLITE_OK)
    return Internal("search index: cannot create the query tokenizer");

  auto prep = [&](Stmt* out, const char* sql) -> Status {
    auto s = Prepare(d, sql);
    if (!s) return s.status();
    *out = std::move(s.value());
    return Status::Ok();
  };
  for (auto [out, sql] : std::initializer_list<std::pair<Stmt*, const char*>>{
           {&rc->lookup, "SELECT conv, cid FROM convs WHERE conv IN (SELECT value FROM json_each(?1))"},
           {&rc->docs, "SELECT value FROM meta WHERE key = 'docs'"},
           {&rc->df, "SELECT count(*) FROM msg WHERE msg MATCH ?1"},
           // The conversation filter is rowid >> 32, known without reading the row;
           // sb_rank only runs for rows that pass it; the sorter keeps limit + offset.
           {&rc->scan,
            "SELECT rowid, sb_rank(msg, ?2) AS r FROM msg"
            " WHERE msg MATCH ?1 AND (rowid >> 32) IN (SELECT value FROM json_each(?3))"
            " ORDER BY r DESC, rowid DESC LIMIT ?4 OFFSET ?5"},
           // CROSS JOIN fixes the loop order: for each cid, FTS5 seeks to its rowid
           // range (the plan shows "M1><": match plus both rowid bounds).
           {&rc->per_conv,
            "SELECT m.rowid, sb_rank(m.msg, ?2) AS r FROM json_each(?3) AS c CROSS JOIN msg AS m"
            " WHERE m.msg MATCH ?1 AND m.rowid BETWEEN (c.value << 32) AND ((c.value << 32) | 4294967295)"
            " ORDER BY r DESC, m.rowid DESC LIMIT ?4 OFFSET ?5"},
           {&rc->up_to, "SELECT conv, up_to FROM convs"},
       }) {
    if (Status s = prep(out, sql); !s.ok()) return s;
  }
  return rc;
}

void SearchIndex::ReleaseReader(std::unique_ptr<ReadConn> conn) {
  // Enough for the REST pool plus bursts; more are closed rather than kept.
  constexpr size_t kMaxIdleReaders = 8;
  std::lock_guard lk(pool_mu_);
  if (idle_readers_.size() < kMaxIdleReaders) idle_readers_.push_back(std::move(conn));
}

Result<int64_t> SearchIndex::DocFrequency(ReadConn& rc, const std::string& token, int64_t total_docs) {
  {
    std::lock_guard lk(df_mu_);
    auto it = df_cache_.find(token);
    if (it != df_cache_.end()) {
      double drift = std::abs(static_cast<double>(total_docs - it->second.total_docs));
      if (drift <= kDfStaleness * static_cast<double>(std::max<int64_t>(it->second.total_docs, 1)))
        return it->second.df;
    }
  }
  Use u(rc.df);
  std::string expr = MatchExpression({token});
  sqlite3_bind_text(*u, 1, expr.data(), static_cast<int>(expr.size()), SQLITE_STATIC);
  if (sqlite3_step(*u) != SQLITE_ROW) return SqlError(rc.db.get(), "count documents of a word");
  int64_t df = sqlite3_column_int64(*u, 0);
  if (df >= kDfCacheMin) {
    std::lock_guard lk(df_mu_);
    if (df_cache_.size() >= kDfCacheMax) df_cache_.clear();
    df_cache_[token] = DfEntry{df, total_docs};
  }
  return df;
}

namespace {

// The query's tokens, as the table's tokenizer makes them (lower case, no
// diacritics), distinct, in query order.
int CollectToken(void* ctx, int /*flags*/, const char* token, int n, int /*start*/, int /*end*/) {
  auto* out = static_cast<std::vector<std::string>*>(ctx);
  if (n <= 0) return SQLITE_OK;
  std::string t(token, static_cast<size_t>(n));
  if (std::find(out->begin(), out->end(), t) == out->end()) out->push_back(std::move(t));
  // Stop early on an absurd count; the caller rejects it.
  return out->size() > kMaxQueryWords ? SQLITE_DONE : SQLITE_OK;
}

}  // namespace

Result<std::vector<Hit>> SearchIndex::Search(std::string_view query, const std::vector<ConvId>& convs,
                                             size_t limit, size_t offset, Plan plan) {
  if (query.size() > kMaxQueryBytes) return BadRequest("query is longer than 256 bytes");
  if (query.find_first_not_of(" \t\r\n\v\f") == std::string_view::npos) return BadRequest("query is empty");
  if (!IsValidUtf8(query)) return BadRequest("query is not valid UTF-8");
  if (limit > kMaxResultWindow || offset > kMaxResultWindow - limit)
    return BadRequest("limit + offset is larger than " + std::to_string(kMaxResultWindow));
  if (limit == 0 || convs.empty()) return std::vector<Hit>{};

  auto acquired = AcquireReader();
  if (!acquired) {
    LOG_ERROR("search_failed").Kv("error", acquired.status().message());
    return Internal("search failed");
  }
  std::unique_ptr<ReadConn> rc = std::move(acquired.value());
  sqlite3* db = rc->db.get();

  // Any SQLite failure is logged with its detail and reported without it (the
  // message may reach the client). The connection is closed, not pooled.
  auto fail = [&](const Status& s) -> Result<std::vector<Hit>> {
    LOG_ERROR("search_failed").Kv("error", s.message());
    return Internal("search failed");
  };

  std::vector<std::string> tokens;
  int trc = rc->tokenizer_api.xTokenize(rc->tokenizer, &tokens, FTS5_TOKENIZE_QUERY, query.data(),
                                        static_cast<int>(query.size()), &CollectToken);
  if (trc != SQLITE_OK && trc != SQLITE_DONE) return fail(Internal("tokenize the query"));
  if (tokens.size() > kMaxQueryWords)
    return BadRequest("query has more than " + std::to_string(kMaxQueryWords) + " distinct words");
  std::vector<Hit> hits;
  if (tokens.empty()) {
    // Only punctuation or symbols: no word to look for.
    ReleaseReader(std::move(rc));
    return hits;
  }

  // The caller's conversations that have anything indexed, and their cids.
  std::vector<int64_t> conv_values;
  conv_values.reserve(convs.size());
  for (ConvId c : convs) conv_values.push_back(ToSql(c));
  std::string conv_json = JsonIntArray(conv_values);
  std::unordered_map<int64_t, ConvId> conv_of_cid;
  std::vector<int64_t> cids;
  {
    Use u(rc->lookup);
    sqlite3_bind_text(*u, 1, conv_json.data(), static_cast<int>(conv_json.size()), SQLITE_STATIC);
    int src;
    while ((src = sqlite3_step(*u)) == SQLITE_ROW) {
      int64_t cid = sqlite3_column_int64(*u, 1);
      conv_of_cid.emplace(cid, FromSql(sqlite3_column_int64(*u, 0)));
      cids.push_back(cid);
    }
    if (src != SQLITE_DONE) return fail(SqlError(db, "look up conversations"));
  }
  if (cids.empty()) {
    ReleaseReader(std::move(rc));
    return hits;
  }

  auto total = QueryInt(db, rc->docs);
  if (!total) return fail(total.status());
  std::vector<double> idf;
  int64_t min_df = std::numeric_limits<int64_t>::max();
  for (const auto& t : tokens) {
    auto df = DocFrequency(*rc, t, *total);
    if (!df) return fail(df.status());
    if (*df == 0) {
      // Every word must occur: one that occurs nowhere settles it.
      ReleaseReader(std::move(rc));
      return hits;
    }
    min_df = std::min(min_df, *df);
    idf.push_back(Idf(*total, *df));
  }

  if (plan == Plan::kAuto) {
    // Scanning streams (at most) the rarest word's posting list across all
    // conversations; the per-conversation plan pays a seek per conversation and word
    // and then reads only the caller's rows. Few conversations and common words favour
    // seeking; many conversations or a rare word favour the scan.
    double seek = static_cast<double>(cids.size()) * static_cast<double>(tokens.size()) * kSeekCostRows;
    plan = seek < static_cast<double>(min_df) ? Plan::kPerConversation : Plan::kScanAll;
  }

  std::string expr = MatchExpression(tokens);
  std::string cid_json = JsonIntArray(cids);
  const Stmt& stmt = plan == Plan::kPerConversation ? rc->per_conv : rc->scan;
  {
    Use u(stmt);
    sqlite3_bind_text(*u, 1, expr.data(), static_cast<int>(expr.size()), SQLITE_STATIC);
    sqlite3_bind_blob(*u, 2, idf.data(), static_cast<int>(idf.size() * sizeof(double)), SQLITE_STATIC);
    sqlite3_bind_text(*u, 3, cid_json.data(), static_cast<int>(cid_json.size()), SQLITE_STATIC);
    sqlite3_bind_int64(*u, 4, static_cast<int64_t>(limit));
    sqlite3_bind_int64(*u, 5, static_cast<int64_t>(offset));
    int src;
    while ((src = sqlite3_step(*u)) == SQLITE_ROW) {
      int64_t rowid = sqlite3_column_int64(*u, 0);
      auto it = conv_of_cid.find(rowid >> kSeqBits);
      if (it == conv_of_cid.end()) continue;  // cannot happen: the filter is on cids
      hits.push_back(Hit{it->second, static_cast<Seq>(rowid & static_cast<int64_t>(kMaxIndexableSeq)),
                         sqlite3_column_double(*u, 1)});
    }
    if (src != SQLITE_DONE) return fail(SqlError(db, "search"));
  }
  ReleaseReader(std::move(rc));
  return hits;
}

Result<std::vector<std::pair<ConvId, Seq>>> SearchIndex::IndexedUpTo() {
  auto acquired = AcquireReader();
  if (!acquired) return acquired.status();
  std::unique_ptr<ReadConn> rc = std::move(acquired.value());
  std::vector<std::pair<ConvId, Seq>> out;
  {
    Use u(rc->up_to);
    int src;
    while ((src = sqlite3_step(*u)) == SQLITE_ROW) {
      out.emplace_back(FromSql(sqlite3_column_int64(*u, 0)), static_cast<Seq>(sqlite3_column_int64(*u, 1)));
    }
    if (src != SQLITE_DONE) return SqlError(rc->db.get(), "read indexed_up_to");
  }
  ReleaseReader(std::move(rc));
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace sb::search
