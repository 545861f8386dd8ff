// Search index benchmark: the figures behind src/search/README.md.
//
//   build/bench/search_bench [--messages N] [--convs C] [--batch B] [--queries Q]
//                            [--plans auto|all] [--dir DIR] [--index 0|1] [--seed S]
//
// Indexing: N messages (default 1,000,000) of ~150 bytes, words drawn from a fixed
// vocabulary with Zipf(1.0) frequencies, spread uniformly over C conversations
// (default 10,000), handed to SearchIndex::Enqueue in commit-sized batches of B
// (default 64) by one thread, like the commit thread would. About 2% are reactions,
// 1% edits and 0.5% deletes of earlier messages. Reported: messages/s from the first
// Enqueue to WaitIdle, transactions, and the size on disk.
//
// Queries: Q queries (default 500) per case, each by a "user" who belongs to 50 or to
// 1,000 random conversations, of 1-3 words, limit 20. Two word mixes:
//   tail   words drawn uniformly from vocabulary ranks 200.. (what people search for:
//          names, topics; each in ~0.01-0.3% of messages)
//   zipf   words drawn with the text's own frequencies (mostly very common words such
//          as "the" or "you": the worst case for any inverted index)
// With --plans all, each case also runs with the two plans forced, which is how the
// planner's cost constant was chosen. Prints figures only; asserts nothing.
//
// --index 0 --dir DIR reuses an index built earlier in DIR (same --seed and --convs).
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>
#include <string>
#include <vector>

#include "base/ids.h"
#include "histogram.h"
#include "search/search_index.h"

namespace sb::search {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Flags {
  uint64_t messages = 1'000'000;
  uint32_t convs = 10'000;
  uint32_t batch = 64;
  uint32_t queries = 500;
  bool all_plans = false;
  std::string dir;
  bool index = true;
  uint64_t seed = 1;
};

[[noreturn]] void Usage(const char* msg, int code = 2) {
  if (code != 0) std::fprintf(stderr, "search_bench: %s\n", msg);
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: search_bench [--messages N] [--convs C] [--batch B] [--queries Q]\n"
               "                    [--plans auto|all] [--dir DIR] [--index 0|1] [--seed S]\n");
  std::exit(code);
}

uint64_t ParseCount(const std::string& flag, const char* v) {
  char* end = nullptr;
  unsigned long long n = std::strtoull(v, &end, 10);
  if (!*v || *end) Usage(("bad value for " + flag).c_str());
  return n;
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") Usage("", 0);
    if (i + 1 >= argc) Usage(("missing value for " + a).c_str());
    const char* v = argv[++i];
    if (a == "--messages") f.messages = ParseCount(a, v);
    else if (a == "--convs") f.convs = static_cast<uint32_t>(ParseCount(a, v));
    else if (a == "--batch") f.batch = static_cast<uint32_t>(ParseCount(a, v));
    else if (a == "--queries") f.queries = static_cast<uint32_t>(ParseCount(a, v));
    else if (a == "--seed") f.seed = ParseCount(a, v);
    else if (a == "--dir") f.dir = v;
    else if (a == "--index") f.index = ParseCount(a, v) != 0;
    else if (a == "--plans") {
      std::string p = v;
      if (p != "auto" && p != "all") Usage("--plans is auto or all");
      f.all_plans = p == "all";
    } else {
      Usage(("unknown flag " + a).c_str());
    }
  }
  if (f.messages == 0 || f.convs == 0 || f.batch == 0) Usage("counts must be positive");
  return f;
}

// ---- corpus ----------------------------------------------------------------------

// The head of the vocabulary: frequent chat words, most frequent first. The tail is
// made of generated pronounceable words (names, places, jargon in real chats).
constexpr const char* kHeadWords[] = {
    "the", "i", "you", "to", "a", "and", "it", "is", "that", "of", "in", "we", "for", "on", "this",
    "be", "have", "my", "ok", "so", "do", "can", "are", "just", "not", "with", "what", "but", "at",
    "will", "me", "was", "if", "all", "get", "yes", "no", "your", "know", "think", "about", "up", "now",
    "there", "like", "they", "out", "one", "go", "time", "see", "good", "lol", "from", "when", "how",
    "tomorrow", "today", "thanks", "need", "would", "make", "should", "going", "did", "want", "great",
    "yeah", "right", "some", "back", "could", "let", "still", "here", "sure", "meeting", "call",
    "work", "new", "send", "look", "also", "then", "more", "well", "already", "please", "sorry",
    "tonight", "morning", "later", "week", "next", "again", "really", "check", "done", "file",
    "update", "people", "after", "before", "maybe", "nice", "take", "come", "day", "first", "last",
    "team", "said", "free", "home", "way", "any", "where", "doc", "link", "working", "soon", "lunch",
    "dinner", "coffee", "office", "review", "fix", "bug", "release", "deploy", "test", "server",
    "client", "phone", "email", "message", "chat", "photo", "picture", "video", "share", "slides",
    "deadline", "friday", "monday", "weekend", "plan", "project", "idea", "question", "answer",
    "problem", "issue", "ticket", "budget", "report", "draft", "version", "branch", "merge", "build",
    "weather", "rain", "train", "flight", "hotel", "airport", "party", "birthday", "gift", "movie",
    "music", "game", "match", "score", "happy", "tired", "hungry", "busy", "late", "early", "quick",
};

std::vector<std::string> MakeVocabulary(std::mt19937_64& rng, size_t size) {
  std::vector<std::string> v(std::begin(kHeadWords), std::end(kHeadWords));
  const char* onsets[] = {"b", "k", "d", "f", "g", "h", "j", "l", "m", "n", "p", "r", "s", "t", "v", "z",
                          "br", "tr", "st", "gr", "pl", "sh", "ch", "kr"};
  const char* vowels[] = {"a", "e", "i", "o", "u", "ai", "ou", "ea", "io"};
  const char* codas[] = {"", "", "n", "r", "s", "l", "x", "m", "nd", "rk"};
  std::vector<std::string> seen(v);
  std::sort(seen.begin(), seen.end());
  while (v.size() < size) {
    std::string w;
    int syll = 2 + static_cast<int>(rng() % 3);
    for (int s = 0; s < syll; ++s) {
      w += onsets[rng() % std::size(onsets)];
      w += vowels[rng() % std::size(vowels)];
    }
    w += codas[rng() % std::size(codas)];
    auto it = std::lower_bound(seen.begin(), seen.end(), w);
    if (it != seen.end() && *it == w) continue;
    seen.insert(it, w);
    v.push_back(std::move(w));
  }
  return v;
}

// Rank r (0-based) has weight 1/(r+1): sampled by binary search in the CDF.
class Zipf {
 public:
  explicit Zipf(size_t n) : cdf_(n) {
    double sum = 0;
    for (size_t i = 0; i < n; ++i) cdf_[i] = (sum += 1.0 / static_cast<double>(i + 1));
    for (double& c : cdf_) c /= sum;
  }
  size_t operator()(std::mt19937_64& rng) const {
    double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    return static_cast<size_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin());
  }
  double P(size_t rank) const { return rank == 0 ? cdf_[0] : cdf_[rank] - cdf_[rank - 1]; }

 private:
  std::vector<double> cdf_;
};

constexpr size_t kVocabulary = 30'000;
constexpr size_t kTailStart = 200;

std::string Sentence(std::mt19937_64& rng, const std::vector<std::string>& vocab, const Zipf& zipf) {
  // 60..240 bytes, mean ~150.
  size_t target = 60 + rng() % 181;
  std::string s;
  bool capital = true;
  while (s.size() < target) {
    if (!s.empty()) s += rng() % 9 == 0 ? ", " : " ";
    std::string w = vocab[zipf(rng)];
    if (capital && !w.empty()) w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
    capital = false;
    s += w;
    if (rng() % 14 == 0) {
      s += rng() % 3 == 0 ? "?" : ".";
      capital = true;
    }
  }
  return s;
}

std::vector<ConvId> MakeConvs(uint64_t seed, uint32_t n) {
  std::mt19937_64 rng(seed * 7 + 3);
  std::vector<ConvId> v(n);
  for (auto& c : v) c = rng() | 1;  // random 64-bit ids, as the server makes them
  return v;
}

uint64_t FileSize(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

// The machine is shared: the load average says whether a figure is trustworthy.
std::string LoadAverage() {
  std::string s;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    char buf[128] = {};
    if (std::fgets(buf, sizeof buf, f)) s = buf;
    std::fclose(f);
  }
  auto sp = s.find(' ', s.find(' ', s.find(' ') + 1) + 1);  // first three fields
  return sp == std::string::npos ? s : s.substr(0, sp);
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

void RunIndexing(SearchIndex& index, const Flags& f, const std::vector<ConvId>& convs,
                 const std::vector<std::string>& vocab, const Zipf& zipf) {
  std::mt19937_64 rng(f.seed);
  std::vector<Seq> next(convs.size(), 1);
  uint64_t texts = 0, reactions = 0, edits = 0, deletes = 0;
  // Generating the text costs about as much as a fraction of indexing it, so the
  // generator's time is measured and reported apart.
  Clock::duration gen_time{};
  auto start = Clock::now();
  std::vector<store::Message> batch;
  for (uint64_t i = 0; i < f.messages; ++i) {
    auto g0 = Clock::now();
    size_t c = rng() % convs.size();
    Seq seq = next[c]++;
    store::Message m;
    m.conv = convs[c];
    m.seq = seq;
    m.sender = 1 + rng() % 1000;
    uint64_t kind = rng() % 1000;
    if (seq > 5 && kind < 20) {
      m.content_type = store::ContentType::kReaction;
      m.content = "thumbsup";
      m.target_message_id = FormatMessageId(m.conv, seq - 1 - rng() % 5);
      ++reactions;
    } else if (seq > 5 && kind < 30) {
      m.content_type = store::ContentType::kEdit;
      m.content = Sentence(rng, vocab, zipf);
      m.target_message_id = FormatMessageId(m.conv, seq - 1 - rng() % 5);
      ++edits;
    } else if (seq > 5 && kind < 35) {
      m.content_type = store::ContentType::kDelete;
      m.target_message_id = FormatMessageId(m.conv, seq - 1 - rng() % 5);
      ++deletes;
    } else {
      m.content_type = store::ContentType::kText;
      m.content = Sentence(rng, vocab, zipf);
      ++texts;
    }
    batch.push_back(std::move(m));
    gen_time += Clock::now() - g0;
    if (batch.size() == f.batch || i + 1 == f.messages) {
      index.Enqueue(std::move(batch));
      batch.clear();
      // Keep the backlog bounded like a live server (the queue's own bound stops the
      // index): wait while the indexer is far behind.
      while (index.GetStats().queued_messages > 200'000) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if ((i + 1) % 200'000 == 0) {
      std::printf("  ... %" PRIu64 " enqueued, %.1f s\n", i + 1, Seconds(Clock::now() - start));
      std::fflush(stdout);
    }
  }
  index.WaitIdle();
  double total = Seconds(Clock::now() - start);
  // Queries are measured on a settled index: wait for the background merging that
  // follows a burst of writes (README, "Segments").
  auto merge_start = Clock::now();
  while (index.GetStats().merging && Clock::now() - merge_start < std::chrono::minutes(10))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  double merge = Seconds(Clock::now() - merge_start);
  double gen = Seconds(gen_time);
  auto st = index.GetStats();
  std::printf("indexing: %" PRIu64 " messages (%" PRIu64 " text, %" PRIu64 " reactions, %" PRIu64
              " edits, %" PRIu64 " deletes) over %u conversations, batches of %u\n",
              f.messages, texts, reactions, edits, deletes, f.convs, f.batch);
  std::printf("indexing: %.1f s wall (of which %.1f s generating text on the feeding thread)\n", total, gen);
  std::printf("indexing: %.0f messages/s end to end, %.0f messages/s excluding generation, %" PRIu64
              " transactions (%.0f messages each)%s\n",
              static_cast<double>(f.messages) / total, static_cast<double>(f.messages) / std::max(total - gen, 1e-9),
              st.transactions, static_cast<double>(f.messages) / std::max<double>(1, static_cast<double>(st.transactions)),
              st.failed ? "  ** INDEX FAILED **" : "");
  std::printf("indexing: then %.1f s of background merging until settled; load average %s\n", merge,
              LoadAverage().c_str());
}

struct Case {
  const char* mix;
  size_t member_of;
};

void RunQueries(SearchIndex& index, const Flags& f, const std::vector<ConvId>& convs,
                const std::vector<std::string>& vocab, const Zipf& zipf) {
  const char* plan_names[] = {"auto", "scan", "per-conv"};
  std::vector<SearchIndex::Plan> plans = {SearchIndex::Plan::kAuto};
  if (f.all_plans) {
    plans.push_back(SearchIndex::Plan::kScanAll);
    plans.push_back(SearchIndex::Plan::kPerConversation);
  }
  std::printf("\nqueries: %u per case, 1-3 words (uniform), limit 20; latency in ms; load average %s\n",
              f.queries, LoadAverage().c_str());
  std::printf("%-6s %-8s %-9s %9s %9s %9s %9s %9s\n", "mix", "member", "plan", "p50", "p90", "p99", "max",
              "hits/q");
  for (Case c : {Case{"tail", 50}, Case{"tail", 1000}, Case{"zipf", 50}, Case{"zipf", 1000}}) {
    size_t member = std::min<size_t>(c.member_of, convs.size());
    for (SearchIndex::Plan plan : plans) {
      // Same users and queries for every plan of a case.
      std::mt19937_64 rng(f.seed * 1000 + member + (c.mix[0] == 'z' ? 17 : 0));
      bench::Histogram h;
      uint64_t hits = 0, errors = 0;
      for (uint32_t q = 0; q < f.queries; ++q) {
        std::vector<ConvId> mine;
        mine.reserve(member);
        std::vector<size_t> idx(convs.size());
        // A random subset: partial Fisher-Yates over the conversation list.
        for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
        for (size_t i = 0; i < member; ++i) {
          size_t j = i + rng() % (idx.size() - i);
          std::swap(idx[i], idx[j]);
          mine.push_back(convs[idx[i]]);
        }
        std::string query;
        int words = 1 + static_cast<int>(rng() % 3);
        for (int w = 0; w < words; ++w) {
          size_t rank = c.mix[0] == 't' ? kTailStart + rng() % (vocab.size() - kTailStart) : zipf(rng);
          if (!query.empty()) query += ' ';
          query += vocab[rank];
        }
        auto t0 = Clock::now();
        auto r = index.Search(query, mine, 20, 0, plan);
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
        h.RecordSigned(ns);
        if (r.ok()) hits += r->size();
        else ++errors;
      }
      auto ms = [](uint64_t ns) { return static_cast<double>(ns) / 1e6; };
      std::printf("%-6s %-8zu %-9s %9.2f %9.2f %9.2f %9.2f %9.1f%s\n", c.mix, member,
                  plan_names[static_cast<int>(plan)], ms(h.Percentile(50)), ms(h.Percentile(90)),
                  ms(h.Percentile(99)), ms(h.Max()), static_cast<double>(hits) / f.queries,
                  errors ? "  ** ERRORS **" : "");
      std::fflush(stdout);
    }
  }
}

int Main(int argc, char** argv) {
  Flags f = ParseFlags(argc, argv);
  bool temp = f.dir.empty();
  if (temp) {
    std::string tmpl = (fs::temp_directory_path() / "sb_search_bench_XXXXXX").string();
    if (!mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      return 1;
    }
    f.dir = tmpl;
  }
  fs::create_directories(f.dir);
  std::string path = f.dir + "/search.db";
  if (f.index) {
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(path + suffix, ec);
  }

  std::mt19937_64 vocab_rng(12345);  // the vocabulary does not depend on --seed
  std::vector<std::string> vocab = MakeVocabulary(vocab_rng, kVocabulary);
  Zipf zipf(vocab.size());
  std::vector<ConvId> convs = MakeConvs(f.seed, f.convs);
  std::printf("search_bench: vocabulary %zu words (Zipf 1.0: p(\"%s\")=%.3f, p(rank 200)=%.5f, "
              "p(rank 10000)=%.6f), dir %s\n",
              vocab.size(), vocab[0].c_str(), zipf.P(0), zipf.P(200), zipf.P(10'000), f.dir.c_str());

  {
    SearchIndex::Options opt;
    opt.max_queued_messages = 1'000'000;
    auto opened = SearchIndex::Open(path, opt);
    if (!opened) {
      std::fprintf(stderr, "open: %s\n", opened.status().message().c_str());
      return 1;
    }
    auto& index = *opened.value();
    if (f.index) RunIndexing(index, f, convs, vocab, zipf);
    std::printf("on disk: %.1f MB (+ %.1f MB WAL)\n", static_cast<double>(FileSize(path)) / 1e6,
                static_cast<double>(FileSize(path + "-wal")) / 1e6);
    RunQueries(index, f, convs, vocab, zipf);
  }
  if (temp) {
    std::error_code ec;
    fs::remove_all(f.dir, ec);
  }
  return 0;
}

}  // namespace
}  // namespace sb::search

int main(int argc, char** argv) { return sb::search::Main(argc, argv); }
