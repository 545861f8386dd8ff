// Helpers shared by the libFuzzer targets in this directory (header-only: each
// target is one translation unit, see fuzz/CMakeLists.txt).
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <simdjson.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "auth/tokens.h"
#include "base/log.h"

// An invariant of the code under test. Not assert(): the fuzz build has NDEBUG, and a
// broken invariant must abort so that libFuzzer saves the input as a crash.
#define FUZZ_CHECK(cond, ...)                                                   \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::fprintf(stderr, "\nFUZZ_CHECK failed at %s:%d: %s\n  ", __FILE__,    \
                   __LINE__, #cond);                                            \
      std::fprintf(stderr, __VA_ARGS__);                                        \
      std::fprintf(stderr, "\n");                                               \
      std::abort();                                                             \
    }                                                                           \
  } while (0)

namespace sb::fuzz {

inline std::string_view AsView(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// A fresh directory under $TMPDIR, removed at exit. The targets keep their fixtures
// in objects that are never destroyed (a store with a live commit thread must not be
// torn down behind libFuzzer's back), so removal is an atexit hook rather than a
// destructor. A crash leaves the directory behind (fuzz/run.sh removes its own
// temp root in any case).
class TempDir {
 public:
  explicit TempDir(const char* tag) {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/sb-" + tag + "-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    path_ = buf.data();
    Registered().push_back(path_);
    static const bool hooked = std::atexit(RemoveAll) == 0;
    (void)hooked;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  static std::vector<std::string>& Registered() {
    static auto* dirs = new std::vector<std::string>();  // outlives every static destructor
    return *dirs;
  }
  static void RemoveAll() {
    for (const auto& d : Registered()) {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);
    }
  }
  std::string path_;
};

// Targets run millions of inputs; info lines (user_created, ...) would drown
// libFuzzer's own output. Errors still show.
inline void QuietLogs() { log::SetLevel(log::Level::kError); }

// The kid of the fixed fuzzing key (see WriteFixedKey).
inline constexpr std::string_view kFuzzKid = "fuzzkey";

// Writes <dir>/fuzzkey.pem, an Ed25519 key derived from a fixed, public seed, and
// makes it current. Fixed so that the token seeds in fuzz/corpus/fuzz_jwt verify in
// every run; it is a test key that signs nothing outside the fuzzers.
inline void WriteFixedKey(const std::string& dir) {
  std::filesystem::create_directories(dir);
  ::chmod(dir.c_str(), 0700);
  uint8_t seed[32];
  for (int i = 0; i < 32; ++i) seed[i] = static_cast<uint8_t>(0xf0 ^ i);
  EVP_PKEY* pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed, sizeof seed);
  FUZZ_CHECK(pkey != nullptr, "EVP_PKEY_new_raw_private_key failed");
  BIO* bio = BIO_new(BIO_s_mem());
  FUZZ_CHECK(PEM_write_bio_PrivateKey(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr) == 1, "PEM write");
  char* pem = nullptr;
  long n = BIO_get_mem_data(bio, &pem);
  const std::string path = dir + "/" + std::string(kFuzzKid) + ".pem";
  {
    std::ofstream f(path, std::ios::binary);
    f.write(pem, n);
  }
  ::chmod(path.c_str(), 0600);
  std::ofstream(dir + "/current") << kFuzzKid << "\n";
  BIO_free(bio);
  EVP_PKEY_free(pkey);
}

inline std::shared_ptr<const auth::KeyRing> FixedKeyRing(const std::string& dir) {
  WriteFixedKey(dir);
  auto ring = auth::KeyRing::Load(dir);
  FUZZ_CHECK(ring.ok(), "KeyRing::Load: %s", ring.status().message().c_str());
  FUZZ_CHECK((*ring)->current_kid() == kFuzzKid, "unexpected current kid");
  return *ring;
}

// True iff `text` is one JSON object whose "event" member is a string: the shape of
// every frame and REST body the server writes.
inline bool IsJsonObject(std::string_view text, simdjson::dom::parser& p, std::string_view required_string_key = {}) {
  simdjson::dom::element doc;
  if (p.parse(text.data(), text.size(), true).get(doc) != simdjson::SUCCESS) return false;
  simdjson::dom::object o;
  if (doc.get_object().get(o) != simdjson::SUCCESS) return false;
  if (required_string_key.empty()) return true;
  std::string_view v;
  return o[required_string_key].get_string().get(v) == simdjson::SUCCESS;
}

// Splits on 0xff, a byte that never occurs in UTF-8 (so never inside a valid frame).
inline std::vector<std::string_view> SplitFF(std::string_view in) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= in.size(); ++i) {
    if (i == in.size() || static_cast<unsigned char>(in[i]) == 0xff) {
      out.push_back(in.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

}  // namespace sb::fuzz
