// Why the store brings its own memtable.
//
// Debian's librocksdb is built with assertions on. RocksDB's skiplist memtable checks
// its whole insert hint after every insert (four key comparisons per level), and the
// hashed one searches a bucket twice per insert (assert(!Contains(key))). Each key
// comparison there is two virtual calls and a memcmp through the PLT (~110
// instructions). Per committed message that was ~45k of the commit thread's ~58k
// instructions (store_bench --write commit under callgrind), for five small inserts.
//
// This rep is a skiplist in the same shape (one writer, lock-free readers, nodes and
// entries in the memtable's arena) with nothing checked twice, an inline comparison of
// internal keys over bytewise user keys, and a finger insert: a hint remembers, per
// level, the node after which the prefix's previous key went, and the next insert
// starts from the lowest level whose bracket holds the new key.
//
// What it needs from RocksDB beyond the public MemTableRep interface: the Allocator
// interface (to place nodes, and iterators asked for in an arena) and the layout of
// LookupKey (to answer Get without a heap-allocated iterator; the base class's Get
// leaks the one it makes). Both are declared below as RocksDB 7.8 defines them;
// SkipListRepSupported() limits the rep to that version, and a LookupKey that does not
// look like one stops the process rather than read astray.
#include "store/embedded/skiplist_rep.h"

#include <rocksdb/slice.h>
#include <rocksdb/version.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

namespace rocksdb {

// memory/allocator.h of RocksDB 7.8 (Arena and ConcurrentArena derive from it, first).
class Allocator {
 public:
  virtual ~Allocator() {}
  virtual char* Allocate(size_t bytes) = 0;
  virtual char* AllocateAligned(size_t bytes, size_t huge_page_size = 0, Logger* logger = nullptr) = 0;
  virtual size_t BlockSize() const = 0;
};

}  // namespace rocksdb

namespace sb::store {

namespace {

// db/lookup_key.h of RocksDB 7.8: the memtable key (varint32 length + internal key) is
// [start, end), the internal key [kstart, end).
struct LookupKeyView {
  const char* start;
  const char* kstart;
  const char* end;
};

constexpr int kMaxHeight = 12;

inline uint64_t LoadFixed64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);  // RocksDB's fixed64 is little-endian, as is the host
  return v;
}

inline const char* Varint32(const char* p, uint32_t* v) {
  uint32_t b = static_cast<uint8_t>(*p);
  if (b < 128) {
    *v = b;
    return p + 1;
  }
  uint32_t r = 0;
  for (int shift = 0; shift <= 28; shift += 7) {
    b = static_cast<uint8_t>(*p++);
    r |= (b & 0x7f) << shift;
    if (b < 128) break;
  }
  *v = r;
  return p;
}

// An internal key: the user key and the sequence number of its 8-byte tag (seq << 8 |
// type). Entries order by user key (bytewise), then newest first; the type does not
// take part, as in InternalKeyComparator::CompareKeySeq.
struct Key {
  const char* user;
  size_t size;
  uint64_t seq;
};

inline Key FromInternal(const char* p, size_t n) { return Key{p, n - 8, LoadFixed64(p + n - 8) >> 8}; }

// An entry as MemTable lays it out: varint32 internal-key length, internal key, value.
inline Key FromEntry(const char* entry) {
  uint32_t n;
  const char* p = Varint32(entry, &n);
  return FromInternal(p, n);
}

inline int Compare(const Key& a, const Key& b) {
  const size_t n = std::min(a.size, b.size);
  const int r = std::memcmp(a.user, b.user, n);
  if (r != 0) return r;
  if (a.size != b.size) return a.size < b.size ? -1 : 1;
  if (a.seq != b.seq) return a.seq > b.seq ? -1 : 1;
  return 0;
}

// A node is its links followed by the entry. Level i's link sits i slots below the
// node's address, so a node costs 8 bytes per level and no header, and level 0 is
// next to the entry it is read with.
class Node {
 public:
  static Node* At(char* mem, int height) {
    for (int i = 0; i < height; ++i) new (mem + i * sizeof(Link)) Link(nullptr);
    return reinterpret_cast<Node*>(mem + (height - 1) * sizeof(Link));
  }
  static size_t Bytes(int height, size_t entry) { return height * sizeof(Link) + entry; }

  Node* Next(int level) const { return L(level)->load(std::memory_order_acquire); }
  // Publishes `n` to readers: everything written to it before is visible to whoever
  // reads this link.
  void Publish(int level, Node* n) { L(level)->store(n, std::memory_order_release); }
  void SetUnpublished(int level, Node* n) { L(level)->store(n, std::memory_order_relaxed); }

  // Between Allocate and Insert the level-0 link holds the node's height.
  void StashHeight(int h) { SetUnpublished(0, reinterpret_cast<Node*>(static_cast<uintptr_t>(h))); }
  int TakeHeight() const {
    return static_cast<int>(reinterpret_cast<uintptr_t>(L(0)->load(std::memory_order_relaxed)));
  }

  const char* Entry() const { return reinterpret_cast<const char*>(this) + sizeof(Link); }
  char* Entry() { return reinterpret_cast<char*>(this) + sizeof(Link); }
  Key key() const { return FromEntry(Entry()); }

 private:
  using Link = std::atomic<Node*>;
  Link* L(int level) const { return reinterpret_cast<Link*>(const_cast<Node*>(this)) - level; }
};

// An insert hint: per level, the node after which the prefix's last key went there
// (head where none). prev[i + 1] is never after prev[i]; inserts elsewhere may have
// put nodes after prev[i] since, which the next insert walks past.
struct Splice {
  Node* prev[kMaxHeight];
};

class SkipListRep final : public rocksdb::MemTableRep {
 public:
  explicit SkipListRep(rocksdb::Allocator* allocator) : MemTableRep(allocator) {
    head_ = Node::At(Raw(Node::Bytes(kMaxHeight, 0)), kMaxHeight);
    rnd_ = 0x9E3779B97F4A7C15ull ^ reinterpret_cast<uintptr_t>(this);
  }

  rocksdb::KeyHandle Allocate(const size_t len, char** buf) override {
    const int h = RandomHeight();
    Node* n = Node::At(Raw(Node::Bytes(h, len)), h);
    n->StashHeight(h);
    *buf = n->Entry();
    return n;
  }

  void Insert(rocksdb::KeyHandle handle) override { InsertKey(handle); }
  bool InsertKey(rocksdb::KeyHandle handle) override { return Link(static_cast<Node*>(handle), nullptr); }
  void InsertWithHint(rocksdb::KeyHandle handle, void** hint) override { InsertKeyWithHint(handle, hint); }
  bool InsertKeyWithHint(rocksdb::KeyHandle handle, void** hint) override {
    if (*hint == nullptr) {
      auto* s = reinterpret_cast<Splice*>(Raw(sizeof(Splice)));
      std::fill(std::begin(s->prev), std::end(s->prev), head_);
      *hint = s;
    }
    return Link(static_cast<Node*>(handle), static_cast<Splice*>(*hint));
  }

  bool Contains(const char* entry) const override {
    const Key k = FromEntry(entry);
    const Node* n = FindGreaterOrEqual(k);
    return n != nullptr && Compare(n->key(), k) == 0;
  }

  void Get(const rocksdb::LookupKey& lookup, void* arg, bool (*found)(void*, const char*)) override {
    const auto* v = reinterpret_cast<const LookupKeyView*>(&lookup);
    uint32_t n = 0;
    const char* ik = Varint32(v->start, &n);
    if (ik != v->kstart || v->end - v->kstart != static_cast<std::ptrdiff_t>(n) || n < 8) {
      std::fprintf(stderr, "sb::store::SkipListRep: this RocksDB's LookupKey is not the one the rep was built for\n");
      std::abort();
    }
    const Key k = FromInternal(ik, n);
    for (const Node* x = FindGreaterOrEqual(k); x != nullptr && found(arg, x->Entry()); x = x->Next(0)) {
    }
  }

  size_t ApproximateMemoryUsage() override { return 0; }  // all of it is in the arena

  class Iter final : public MemTableRep::Iterator {
   public:
    explicit Iter(const SkipListRep* rep) : rep_(rep) {}
    bool Valid() const override { return node_ != nullptr; }
    const char* key() const override { return node_->Entry(); }
    void Next() override { node_ = node_->Next(0); }
    void Prev() override { node_ = rep_->Real(rep_->FindLessThan(node_->key())); }
    void Seek(const rocksdb::Slice& ikey, const char* mkey) override { node_ = rep_->FindGreaterOrEqual(Target(ikey, mkey)); }
    void SeekForPrev(const rocksdb::Slice& ikey, const char* mkey) override {
      const Key k = Target(ikey, mkey);
      const Node* before = rep_->FindLessThan(k);
      const Node* at = before->Next(0);
      node_ = at != nullptr && Compare(at->key(), k) == 0 ? at : rep_->Real(before);
    }
    void SeekToFirst() override { node_ = rep_->head_->Next(0); }
    void SeekToLast() override { node_ = rep_->Real(rep_->FindLast()); }

   private:
    static Key Target(const rocksdb::Slice& ikey, const char* mkey) {
      return mkey != nullptr ? FromEntry(mkey) : FromInternal(ikey.data(), ikey.size());
    }
    const SkipListRep* rep_;
    const Node* node_ = nullptr;
  };

  Iterator* GetIterator(rocksdb::Arena* arena) override {
    // RocksDB runs the destructor of an iterator placed in its arena and frees the arena
    // later; one made without an arena it deletes.
    void* mem = arena != nullptr
                    ? reinterpret_cast<rocksdb::Allocator*>(arena)->AllocateAligned(sizeof(Iter))
                    : ::operator new(sizeof(Iter));
    return new (mem) Iter(this);
  }

 private:
  char* Raw(size_t bytes) { return allocator_->AllocateAligned(bytes); }

  int RandomHeight() {
    // Branching factor 4: a quarter of the nodes reach level 1, a sixteenth level 2...
    rnd_ ^= rnd_ << 13;
    rnd_ ^= rnd_ >> 7;
    rnd_ ^= rnd_ << 17;
    uint64_t r = rnd_;
    int h = 1;
    while (h < kMaxHeight && (r & 3) == 0) {
      ++h;
      r >>= 2;
    }
    return h;
  }

  const Node* Real(const Node* n) const { return n == head_ ? nullptr : n; }

  int Height() const { return height_.load(std::memory_order_relaxed); }

  // The first node at or after `k`, or null.
  const Node* FindGreaterOrEqual(const Key& k) const {
    const Node* x = head_;
    const Node* known_after = nullptr;  // compared already, not before k
    for (int level = Height() - 1;;) {
      const Node* n = x->Next(level);
      if (n != nullptr && n != known_after && Compare(n->key(), k) < 0) {
        x = n;
      } else {
        if (level == 0) return n;
        known_after = n;
        --level;
      }
    }
  }

  // The last node before `k`, or head_.
  const Node* FindLessThan(const Key& k) const {
    const Node* x = head_;
    const Node* known_after = nullptr;
    for (int level = Height() - 1;;) {
      const Node* n = x->Next(level);
      if (n != nullptr && n != known_after && Compare(n->key(), k) < 0) {
        x = n;
      } else {
        if (level == 0) return x;
        known_after = n;
        --level;
      }
    }
  }

  const Node* FindLast() const {
    const Node* x = head_;
    for (int level = Height() - 1;;) {
      const Node* n = x->Next(level);
      if (n != nullptr) {
        x = n;
      } else {
        if (level == 0) return x;
        --level;
      }
    }
  }

  // From `x` at `level`, the last node there before `k`.
  static Node* Walk(Node* x, int level, const Key& k) {
    for (Node* n = x->Next(level); n != nullptr && Compare(n->key(), k) < 0; n = x->Next(level)) x = n;
    return x;
  }

  // Links `x` in (the one writer). With a splice, the search starts from the lowest
  // level where the splice brackets the key; without, from the top.
  bool Link(Node* x, Splice* splice) {
    const int h = x->TakeHeight();
    const Key k = x->key();
    int top = Height();
    if (h > top) {
      // Readers that see the new height before the head's links there are set find
      // them empty and go down a level.
      top = h;
      height_.store(h, std::memory_order_relaxed);
    }
    Node* prev[kMaxHeight];
    int from = top;  // levels [0, from) are searched downwards from prev[from] (head_ at top)
    Node* start = head_;
    if (splice != nullptr) {
      for (int l = 0; l < top; ++l) {
        Node* p = splice->prev[l];
        if (p != head_ && Compare(p->key(), k) >= 0) continue;  // k is at or before p
        Node* n = p->Next(l);
        if (n != nullptr && Compare(n->key(), k) < 0) continue;  // k is beyond p's successor
        from = l;
        start = p;
        prev[l] = p;
        break;
      }
      // Above the bracket the splice's nodes are all before k; the levels the new node
      // reaches may have gained nodes after them since.
      for (int l = from + 1; l < h; ++l) prev[l] = Walk(splice->prev[l], l, k);
    }
    for (int l = from - 1; l >= 0; --l) start = prev[l] = Walk(start, l, k);

    Node* after = prev[0]->Next(0);
    if (after != nullptr && Compare(after->key(), k) == 0) return false;  // this key and seq exist

    for (int l = 0; l < h; ++l) {
      x->SetUnpublished(l, prev[l]->Next(l));
      prev[l]->Publish(l, x);
    }
    if (splice != nullptr) {
      for (int l = 0; l < h; ++l) splice->prev[l] = x;
      for (int l = h; l < std::max(from + 1, h) && l < top; ++l) splice->prev[l] = prev[l];
    }
    return true;
  }

  Node* head_ = nullptr;
  std::atomic<int> height_{1};
  uint64_t rnd_;
};

class SkipListRepFactory final : public rocksdb::MemTableRepFactory {
 public:
  const char* Name() const override { return "sb.SkipListRep"; }
  using MemTableRepFactory::CreateMemTableRep;
  rocksdb::MemTableRep* CreateMemTableRep(const rocksdb::MemTableRep::KeyComparator& /*compare*/,
                                          rocksdb::Allocator* allocator, const rocksdb::SliceTransform*,
                                          rocksdb::Logger*) override {
    return new SkipListRep(allocator);
  }
  bool IsInsertConcurrentlySupported() const override { return false; }
  bool CanHandleDuplicatedKey() const override { return true; }
};

}  // namespace

bool SkipListRepSupported() { return ROCKSDB_MAJOR == 7 && ROCKSDB_MINOR == 8; }

std::shared_ptr<rocksdb::MemTableRepFactory> NewSkipListRepFactory() {
  return std::make_shared<SkipListRepFactory>();
}

}  // namespace sb::store
