// An embedded store in a fresh temp directory, removed again at the end: for unit
// tests that need a real store but not a particular one. No fsync (tests do not cut
// power); ok() says whether it opened, error() why not.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "store/store.h"

namespace sb::test {

class TempStore {
 public:
  explicit TempStore(const char* name) {
    std::string tmpl = std::string("/tmp/") + name + "_XXXXXX";
    dir_ = mkdtemp(tmpl.data());
    store::StoreOptions so;
    so.dir = dir_ + "/store";
    so.sync = store::SyncPolicy::kNone;
    auto opened = store::OpenEmbeddedStore(so);
    if (opened.ok()) store_ = std::move(opened).value();
    else error_ = opened.status().message();
  }
  ~TempStore() {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  TempStore(const TempStore&) = delete;
  TempStore& operator=(const TempStore&) = delete;

  bool ok() const { return store_ != nullptr; }
  const std::string& error() const { return error_; }
  store::Store& operator*() const { return *store_; }
  store::Store* operator->() const { return store_.get(); }

 private:
  std::string dir_;
  std::string error_;
  std::unique_ptr<store::Store> store_;
};

}  // namespace sb::test
