// Full-text search over committed messages: a derived index in SQLite FTS5, fed from
// the commit thread, queried from REST handlers. Layout, ranking, query planning and
// measurements: src/search/README.md.
//
// The index is derived data. It can always be rebuilt or caught up from the store
// (IndexedUpTo says from where), so it is written without fsync per batch and a
// failure inside it never affects the chat path: it stops advancing and says so
// (Stats().failed), and the next start catches up.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "base/ids.h"
#include "base/status.h"
#include "store/store.h"

namespace sb::search {

// One matching message. Hits come best first; `rank` is the BM25 score (higher is a
// better match; only comparable within one Search call).
struct Hit {
  ConvId conv = 0;
  Seq seq = 0;
  double rank = 0;
};

inline constexpr size_t kMaxQueryBytes = 256;
// Every query word costs a document-frequency lookup and an FTS5 iterator, so a
// query may name at most this many distinct words.
inline constexpr size_t kMaxQueryWords = 16;
// limit + offset: the ranked window is kept in a bounded sorter of this many rows.
inline constexpr size_t kMaxResultWindow = 10'000;

class SearchIndex {
 public:
  struct Options {
    // Messages waiting for the indexer in memory. Past this the indexer falls back to
    // the store (`source`): new batches are not queued, only their conversations are
    // noted, and once the queue is drained the indexer reads those conversations'
    // messages after IndexedUpTo from the store until it has caught up, then queues
    // again. Without a source it stops instead (Stats().failed) and the next start
    // catches up. 250k short messages are ~100 MB; at 35,000 msg/s on two cores with
    // the load generator the indexer falls behind by 2-6k messages a second.
    size_t max_queued_messages = 250'000;
    // Reads committed messages of one conversation with seq > after, ascending, at
    // most `limit` (Store::ReadAfter). Called on the indexer thread only.
    std::function<Result<std::vector<store::Message>>(ConvId conv, Seq after, size_t limit)> source;
    // Upper bound of messages per SQLite transaction when a backlog is drained; larger
    // groups index faster (fewer FTS5 segments) but hold more pending data in memory.
    size_t max_group_messages = 50'000;
    // Below saturation the indexer waits up to this long after the first queued batch
    // for more (up to gather_messages) before writing. Each transaction writes every
    // page it touches to the WAL (and again at the checkpoint), and rows are clustered
    // by conversation, so a transaction costs about two pages per active conversation
    // however few messages each brings; each also flushes FTS5's pending terms as a
    // new segment. Search sees a message this much later. 1,000 active conversations
    // at 10,000 msg/s: the indexer thread used 15-16% of a core at 100 ms, 11% at
    // 250 ms, 8% at 500 ms, 7% at 1 s (README, "Write path").
    int64_t gather_ms = 500;
    size_t gather_messages = 20'000;
    // Background merging (README, "Segments") starts only after this long without new
    // work; under steady traffic FTS5's own automerge keeps the segment count bounded.
    int64_t merge_after_idle_ms = 1'000;
    // The indexer thread's nice value (0: as the rest of the server).
    int nice = 10;
    // Yielding (README, "Yielding"): while less than this share of the machine's CPU
    // is free (idle, or the indexer's own), indexing pauses and committed batches are
    // not kept in memory, only their conversations; once at least this share plus
    // kResumeMargin is free again, the indexer catches those up from `source`, as when
    // it falls behind. A pause ends after max_yield_ms whatever the CPU, and then the
    // index catches up completely before it may pause again; a WaitIdle caller, Stop
    // and CatchUpFromSource never wait for a pause. 0: never yield (also without a
    // source). Checked at most every yield_check_ms.
    double yield_below_free_cpu = 0;  // the server sets search.yield_below_free_cpu_pct
    int64_t max_yield_ms = 600'000;
    int64_t yield_check_ms = 250;
    // The free share of the CPU since the previous call (FreeCpuMeter, on the indexer
    // thread, when empty); nullopt: unknown, never yield on it. Tests inject one.
    std::function<std::optional<double>()> free_cpu;
  };
  static constexpr double kResumeMargin = 0.1;

  // How Search finds the rows of the caller's conversations (README, "Query plans").
  // kAuto picks by estimated cost; the others exist for tests and the benchmark.
  enum class Plan { kAuto, kScanAll, kPerConversation };

  struct Stats {
    uint64_t queued_messages = 0;   // enqueued, not yet applied
    uint64_t indexed_messages = 0;  // applied since Open (any type, including skipped)
    uint64_t transactions = 0;      // SQLite write transactions since Open
    bool failed = false;            // the indexer stopped; restart to catch up
    bool catching_up = false;       // past max_queued_messages: reading from the store
    uint64_t catch_ups = 0;         // times it fell back to the store since Open
    bool merging = false;           // background segment merging not finished yet
    bool yielding = false;          // paused while the CPU is saturated (Options)
    uint64_t yields = 0;            // pauses since Open
  };

  // Opens/creates the index database at `path` (a file under the data dir) and starts
  // its indexer thread.
  static Result<std::unique_ptr<SearchIndex>> Open(const std::string& path);
  static Result<std::unique_ptr<SearchIndex>> Open(const std::string& path, const Options& options);

  // Drains the queue (everything enqueued is applied), stops the thread, closes the
  // database. No Enqueue may run concurrently with or after the destructor.
  ~SearchIndex();
  SearchIndex(const SearchIndex&) = delete;
  SearchIndex& operator=(const SearchIndex&) = delete;

  // Called on the commit thread with each committed batch, in commit order. Only moves
  // the batch into a queue; the indexer thread applies batches in order, one SQLite
  // transaction per drained group:
  //   text / image / file: `content` (text, captions) indexed under (conv, seq);
  //                        a tombstone (`deleted`, read back during catch-up) is not
  //   edit (target T, content C): T's indexed text becomes C
  //   delete (target T): T disappears from the index
  //   reaction: not indexed
  // Edits and deletes only touch an earlier, indexed message of the same
  // conversation. A message whose seq is at or below IndexedUpTo for its conversation
  // is skipped, so re-feeding an overlap after a crash is harmless. Feed
  // CommitBatch::messages, not its rewrites.
  void Enqueue(std::vector<store::Message> batch);

  // Ranked (BM25) matches of `query` among messages of `convs` only (the caller passes
  // the conversations the user belongs to), `limit` results after skipping `offset`.
  // The query is plain words: it is tokenized like the indexed text (case- and
  // diacritic-insensitive) and every word must occur; FTS5 query syntax in it has no
  // effect. kBadRequest for an empty or whitespace-only query, more than
  // kMaxQueryBytes, invalid UTF-8, more than kMaxQueryWords distinct words, or
  // limit + offset > kMaxResultWindow. A query with no word characters at all ("*",
  // "\"") matches nothing. Thread-safe; reads never block the indexer (WAL).
  Result<std::vector<Hit>> Search(std::string_view query, const std::vector<ConvId>& convs, size_t limit,
                                  size_t offset = 0, Plan plan = Plan::kAuto);

  // History retention dropped conv's messages below `first_kept` from the store: their
  // rows leave the index too (in the indexer's next transaction), and a message below
  // it that is still queued is not indexed. Thread-safe; repeating it is harmless (the
  // retention pass calls it for every trimmed conversation, so a drop lost to a crash
  // is redone by the next pass).
  void DropBefore(ConvId conv, Seq first_kept);

  // Blocks until everything enqueued before the call is applied (or dropped, once
  // failed).
  void WaitIdle();

  // Reads `convs`' committed messages after IndexedUpTo from Options::source and
  // indexes them, the way the indexer catches up when it has fallen behind; blocks
  // until done. The server calls it at start with every conversation (a crash may
  // have left the index behind the store). kInternal without a source or when the
  // index stopped (a failed read or write).
  Status CatchUpFromSource(const std::vector<ConvId>& convs);

  // Highest seq applied per conversation, ascending by conversation. After a crash,
  // feed each conversation's messages after this seq (and conversations absent here
  // from seq 1) to Enqueue before or alongside new commits.
  Result<std::vector<std::pair<ConvId, Seq>>> IndexedUpTo();

  Stats GetStats();

  struct ReadConn;  // a pooled read connection (defined in the .cpp)

 private:
  struct Writer;  // the indexer thread's connection and caches

  SearchIndex(std::string path, Options options);
  void Run();
  // Feeds `convs`' committed messages after IndexedUpTo from options_.source, in
  // groups of up to max_group_messages. Indexer thread only.
  // With `may_yield`, it stops between transactions when the CPU is saturated
  // (Options::yield_below_free_cpu) and leaves the conversations not yet done in
  // lagging_.
  Status CatchUp(const std::unordered_set<ConvId>& convs, bool may_yield = false);
  // Indexer thread: samples the free CPU when due and, when it is short, pauses
  // (README, "Yielding") until it is back, the pause is too long, or someone waits.
  void MaybeYield();
  // Indexer thread: true when a new pause should start now (samples when due).
  bool CpuShort();
  // Once stopped: the lagging conversations are left to the next start. Holds mu_.
  void ForgetLaggingLocked();
  // One transaction with retries; updates the counters. False once writes failed.
  bool ApplyGroup(const std::vector<std::vector<store::Message>>& group,
                  const std::unordered_map<ConvId, Seq>& drops, size_t queued, uint64_t batches);
  Result<std::unique_ptr<ReadConn>> AcquireReader();
  void ReleaseReader(std::unique_ptr<ReadConn> conn);
  // Document frequency of `token`, from a small cache for frequent tokens.
  Result<int64_t> DocFrequency(ReadConn& rc, const std::string& token, int64_t total_docs);

  const std::string path_;
  const Options options_;
  std::unique_ptr<Writer> writer_;

  std::mutex mu_;
  std::condition_variable work_cv_;  // indexer waits for batches or stop
  std::condition_variable idle_cv_;  // WaitIdle waits for progress
  std::deque<std::vector<store::Message>> queue_;
  std::unordered_map<ConvId, Seq> drops_;  // DropBefore calls not yet applied
  uint64_t drop_calls_ = 0;                // how many (each counts as a batch for WaitIdle)
  uint64_t queued_messages_ = 0;
  uint64_t enqueued_batches_ = 0;  // batches handed to Enqueue (kept or dropped)
  uint64_t done_batches_ = 0;      // batches applied or dropped
  uint64_t indexed_messages_ = 0;
  uint64_t transactions_ = 0;
  bool failed_ = false;
  // Past max_queued_messages (Options): batches are not queued; their conversations
  // wait in lagging_ for CatchUp, and they count as done once it has caught up.
  bool behind_ = false;
  std::unordered_set<ConvId> lagging_;
  uint64_t behind_batches_ = 0;   // batches not queued while behind
  uint64_t behind_messages_ = 0;  // their messages, still counted in the backlog gauge
  uint64_t catch_ups_ = 0;
  bool write_failed_ = false;  // indexer thread: a write failed, nothing more is applied
  bool merging_ = true;  // until the first idle merge step finds nothing to do
  bool stop_ = false;
  int waiting_idle_ = 0;  // WaitIdle callers: the indexer does not gather for them
  bool yielding_ = false;  // paused (MaybeYield); Enqueue keeps conversations only
  uint64_t yields_ = 0;
  // Indexer thread only: the free-CPU source, when it was last read, and whether the
  // index must catch up completely before the next pause (one ended at max_yield_ms).
  std::function<std::optional<double>()> free_cpu_;
  std::chrono::steady_clock::time_point last_cpu_check_{};
  bool catch_up_before_yield_ = false;
  bool cpu_short_ = false;     // CpuShort saw it; MaybeYield starts the pause
  double last_free_cpu_ = 0;   // what it saw (for the log)

  std::mutex pool_mu_;
  std::vector<std::unique_ptr<ReadConn>> idle_readers_;

  // Frequent tokens' document counts: computing one costs a pass over its whole
  // posting list, so the few very common tokens are remembered (README, "Ranking").
  struct DfEntry {
    int64_t df = 0;
    int64_t total_docs = 0;  // index size when df was counted (staleness)
  };
  std::mutex df_mu_;
  std::unordered_map<std::string, DfEntry> df_cache_;

  std::thread thread_;  // last: started after everything above is initialized
};

}  // namespace sb::search
