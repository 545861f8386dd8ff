// The memtable of the embedded store's column families: a skiplist with one writer,
// lock-free readers and finger inserts (see skiplist_rep.cpp for why RocksDB's own is
// not used).
#pragma once

#include <rocksdb/memtablerep.h>

#include <memory>

namespace sb::store {

// True when this RocksDB build is one the memtable was checked against (it relies on the
// layout of two RocksDB-internal classes, see skiplist_rep.cpp). Otherwise the store
// keeps RocksDB's own memtables.
bool SkipListRepSupported();

// A MemTableRepFactory for column families whose comparator is RocksDB's default
// BytewiseComparator (the rep orders entries itself, as InternalKeyComparator over
// bytewise user keys does). Inserts from one thread at a time
// (allow_concurrent_memtable_write = false); any number of readers meanwhile.
// An insert through a hint (memtable_insert_with_hint_prefix_extractor) starts its
// search from where the previous insert of that prefix landed and costs a few
// comparisons when keys of a prefix arrive in order or rewrite the same key.
std::shared_ptr<rocksdb::MemTableRepFactory> NewSkipListRepFactory();

}  // namespace sb::store
