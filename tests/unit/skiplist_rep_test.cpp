// The store's memtable (store/embedded/skiplist_rep.h) under a real RocksDB: every read
// RocksDB serves from a memtable (Get, iterators both ways, seeks, snapshots) must agree
// with a model, with and without insert hints, while readers run beside the writer.
#include "store/embedded/skiplist_rep.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>

#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace sb::store {
namespace {

// Hints per first byte, for keys of two bytes or more that start at 'A' or above (the
// others take the plain path).
class FirstByteHint final : public rocksdb::SliceTransform {
 public:
  const char* Name() const override { return "test.FirstByteHint"; }
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override { return rocksdb::Slice(key.data(), 1); }
  bool InDomain(const rocksdb::Slice& key) const override {
    return key.size() >= 2 && static_cast<uint8_t>(key[0]) >= 'A';
  }
};

class Db {
 public:
  explicit Db(bool hints) {
    std::string tmpl = "/tmp/skiplist_rep_XXXXXX";
    dir_ = mkdtemp(tmpl.data());
    rocksdb::Options o;
    o.create_if_missing = true;
    o.allow_concurrent_memtable_write = false;
    o.write_buffer_size = 64 << 20;  // everything stays in the memtable
    o.memtable_factory = NewSkipListRepFactory();
    if (hints) o.memtable_insert_with_hint_prefix_extractor = std::make_shared<FirstByteHint>();
    rocksdb::DB* db = nullptr;
    status_ = rocksdb::DB::Open(o, dir_, &db);
    db_.reset(db);
  }
  ~Db() {
    db_.reset();
    std::filesystem::remove_all(dir_);
  }
  const rocksdb::Status& status() const { return status_; }
  rocksdb::DB* operator->() const { return db_.get(); }
  rocksdb::DB* get() const { return db_.get(); }

 private:
  std::string dir_;
  rocksdb::Status status_;
  std::unique_ptr<rocksdb::DB> db_;
};

using Model = std::map<std::string, std::string>;

// Keys that share prefixes, differ only in length, and hold the bytes 0x00 and 0xff,
// where a comparison that is not bytewise (signed chars, strcmp) would go wrong.
std::string RandomKey(std::mt19937& rng) {
  static const char kAlphabet[] = {'\x00', '\x01', 'a', 'b', '\x7f', '\x80', '\xfe', '\xff'};
  std::string k;
  const int n = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < n; ++i) k.push_back(kAlphabet[rng() % sizeof kAlphabet]);
  return k;
}

void ExpectMatches(rocksdb::DB* db, const Model& model, const rocksdb::Snapshot* snap, std::mt19937& rng) {
  rocksdb::ReadOptions ro;
  ro.snapshot = snap;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro));
  // Forward and backward: exactly the model, in order.
  auto m = model.begin();
  for (it->SeekToFirst(); it->Valid(); it->Next(), ++m) {
    ASSERT_NE(m, model.end()) << "extra key";
    ASSERT_EQ(it->key().ToString(), m->first);
    ASSERT_EQ(it->value().ToString(), m->second);
  }
  ASSERT_EQ(m, model.end()) << "missing key " << m->first.size();
  auto r = model.rbegin();
  for (it->SeekToLast(); it->Valid(); it->Prev(), ++r) {
    ASSERT_NE(r, model.rend());
    ASSERT_EQ(it->key().ToString(), r->first);
  }
  ASSERT_EQ(r, model.rend());
  // Point reads and seeks at random targets, present or not.
  for (int i = 0; i < 200; ++i) {
    const std::string k = RandomKey(rng);
    std::string v;
    rocksdb::Status s = db->Get(ro, k, &v);
    auto f = model.find(k);
    if (f == model.end()) {
      ASSERT_TRUE(s.IsNotFound()) << s.ToString();
    } else {
      ASSERT_TRUE(s.ok()) << s.ToString();
      ASSERT_EQ(v, f->second);
    }
    it->Seek(k);
    auto lb = model.lower_bound(k);
    ASSERT_EQ(it->Valid(), lb != model.end());
    if (lb != model.end()) {
      ASSERT_EQ(it->key().ToString(), lb->first);
    }
    it->SeekForPrev(k);
    auto ub = model.upper_bound(k);
    ASSERT_EQ(it->Valid(), ub != model.begin());
    if (ub != model.begin()) {
      ASSERT_EQ(it->key().ToString(), std::prev(ub)->first);
    }
  }
}

void RandomWorkload(bool hints) {
  ASSERT_TRUE(SkipListRepSupported()) << "this RocksDB is not one the rep was checked against";
  Db db(hints);
  ASSERT_TRUE(db.status().ok()) << db.status().ToString();
  std::mt19937 rng(hints ? 7 : 11);
  Model model;
  // Snapshots keep the older versions of rewritten keys in the memtable; each must
  // still read as the model did when it was taken.
  std::vector<std::pair<const rocksdb::Snapshot*, Model>> snaps;
  for (int round = 0; round < 8; ++round) {
    for (int i = 0; i < 400; ++i) {
      const std::string k = RandomKey(rng);
      if (rng() % 5 == 0) {
        ASSERT_TRUE(db->Delete(rocksdb::WriteOptions(), k).ok());
        model.erase(k);
      } else {
        const std::string v = "v" + std::to_string(round) + "." + std::to_string(i);
        ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), k, v).ok());
        model[k] = v;
      }
    }
    snaps.emplace_back(db->GetSnapshot(), model);
    ExpectMatches(db.get(), model, nullptr, rng);
  }
  for (auto& [snap, then] : snaps) {
    ExpectMatches(db.get(), then, snap, rng);
    db->ReleaseSnapshot(snap);
  }
}

TEST(SkipListRep, ReadsAgreeWithAModelWithoutHints) { RandomWorkload(false); }

TEST(SkipListRep, ReadsAgreeWithAModelWithHints) { RandomWorkload(true); }

// The store's patterns through a hint: keys of a prefix in order (messages), the same
// few keys rewritten again and again (receipts, cursors), random keys within a prefix
// (dedup ids), interleaved across prefixes.
TEST(SkipListRep, HintedPatternsKeepEveryVersionInOrder) {
  Db db(true);
  ASSERT_TRUE(db.status().ok()) << db.status().ToString();
  std::mt19937 rng(3);
  Model model;
  const rocksdb::Snapshot* first = nullptr;
  Model at_first;
  for (int i = 0; i < 3000; ++i) {
    const char prefix = static_cast<char>('A' + rng() % 8);
    std::string k(1, prefix);
    switch (rng() % 3) {
      case 0: {  // in order
        char seq[16];
        std::snprintf(seq, sizeof seq, "s%08d", i);
        k += seq;
        break;
      }
      case 1:  // a rewrite of one of two keys
        k += rng() % 2 ? "r1" : "r2";
        break;
      default:  // random
        k += "x" + std::to_string(rng());
    }
    const std::string v = std::to_string(i);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), k, v).ok());
    model[k] = v;
    if (i == 1500) {
      first = db->GetSnapshot();
      at_first = model;
    }
  }
  ExpectMatches(db.get(), model, nullptr, rng);
  ExpectMatches(db.get(), at_first, first, rng);
  db->ReleaseSnapshot(first);
}

// Readers beside the one writer: every scan is sorted, and sees at least every key
// written before it started (keys are written in a shuffled order, through the hint and
// without it).
TEST(SkipListRep, ReadersBesideTheWriterSeeSortedCompleteLists) {
  Db db(true);
  ASSERT_TRUE(db.status().ok()) << db.status().ToString();
  constexpr int kKeys = 20000;
  std::vector<int> order(kKeys);
  for (int i = 0; i < kKeys; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(5));
  auto key = [](int i) {
    char b[16];
    std::snprintf(b, sizeof b, "%c%07d", i % 2 ? 'k' : 'q', i);
    return std::string(i % 7 == 0 ? b + 1 : b);  // starting with a digit: no hint
  };
  std::atomic<int> written{0};
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  auto reader = [&] {
    while (!done.load()) {
      const int before = written.load();
      std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
      std::string last;
      int n = 0;
      for (it->SeekToFirst(); it->Valid(); it->Next(), ++n) {
        std::string k = it->key().ToString();
        if (n > 0 && !(last < k)) failures.fetch_add(1);
        last = std::move(k);
      }
      if (n < before) failures.fetch_add(1);
      if (before > 0) {
        std::string v;
        if (!db->Get(rocksdb::ReadOptions(), key(order[before - 1]), &v).ok()) failures.fetch_add(1);
      }
    }
  };
  std::thread r1(reader), r2(reader);
  for (int i = 0; i < kKeys; ++i) {
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), key(order[i]), "v").ok());
    written.store(i + 1);
  }
  done.store(true);
  r1.join();
  r2.join();
  EXPECT_EQ(failures.load(), 0);
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
  int n = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) ++n;
  EXPECT_EQ(n, kKeys);
}

}  // namespace
}  // namespace sb::store
