#include "auth/tokens.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <simdjson.h>

#include "base/json_writer.h"
#include "base/log.h"

namespace sb::auth {

// Keys are held in libsodium's form: OpenSSL is used only to read and write the PEM
// files. libsodium's Ed25519 verify measured ~2x OpenSSL 3.0's EVP_DigestVerify on
// our hosts (bench/auth_bench.cpp prints both), its sign cannot fail (IssueAccess
// has no error channel), and neither takes a lock on the hot path, unlike OpenSSL 3's
// per-call algorithm fetch.
struct KeyRing::Key {
  std::string kid;
  std::array<uint8_t, 32> pub{};
  std::array<uint8_t, crypto_sign_SECRETKEYBYTES> sk{};
  ~Key() { sodium_memzero(sk.data(), sk.size()); }
};

namespace {

namespace fs = std::filesystem;

bool EnsureSodium() {
  static const bool ok = sodium_init() >= 0;
  return ok;
}

// ---- base64url -------------------------------------------------------------------

constexpr char kB64Alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

constexpr std::array<int8_t, 256> MakeB64Table() {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(kB64Alphabet[i])] = static_cast<int8_t>(i);
  return t;
}
constexpr std::array<int8_t, 256> kB64Table = MakeB64Table();

size_t Base64UrlDecodedSize(size_t n) { return n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1); }

// Decodes into dst (which must hold Base64UrlDecodedSize(text.size()) bytes).
bool Base64UrlDecodeInto(std::string_view text, uint8_t* dst) {
  const size_t n = text.size();
  if (n % 4 == 1) return false;
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const int a = kB64Table[s[i]], b = kB64Table[s[i + 1]], c = kB64Table[s[i + 2]], d = kB64Table[s[i + 3]];
    if ((a | b | c | d) < 0) return false;
    const uint32_t v = (uint32_t(a) << 18) | (uint32_t(b) << 12) | (uint32_t(c) << 6) | uint32_t(d);
    *dst++ = uint8_t(v >> 16);
    *dst++ = uint8_t(v >> 8);
    *dst++ = uint8_t(v);
  }
  const size_t rem = n - i;
  if (rem == 2) {
    const int a = kB64Table[s[i]], b = kB64Table[s[i + 1]];
    // The low 4 bits of the last symbol carry no data; requiring zero keeps one encoding per value.
    if ((a | b) < 0 || (b & 0x0f) != 0) return false;
    *dst++ = uint8_t((a << 2) | (b >> 4));
  } else if (rem == 3) {
    const int a = kB64Table[s[i]], b = kB64Table[s[i + 1]], c = kB64Table[s[i + 2]];
    if ((a | b | c) < 0 || (c & 0x03) != 0) return false;
    *dst++ = uint8_t((a << 2) | (b >> 4));
    *dst++ = uint8_t(((b & 0x0f) << 4) | (c >> 2));
  }
  return true;
}

void Base64UrlAppend(std::string& out, const uint8_t* p, size_t n) {
  out.reserve(out.size() + (n * 4 + 2) / 3);
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    const uint32_t v = (uint32_t(p[i]) << 16) | (uint32_t(p[i + 1]) << 8) | p[i + 2];
    out.push_back(kB64Alphabet[(v >> 18) & 63]);
    out.push_back(kB64Alphabet[(v >> 12) & 63]);
    out.push_back(kB64Alphabet[(v >> 6) & 63]);
    out.push_back(kB64Alphabet[v & 63]);
  }
  if (n - i == 1) {
    const uint32_t v = uint32_t(p[i]) << 16;
    out.push_back(kB64Alphabet[(v >> 18) & 63]);
    out.push_back(kB64Alphabet[(v >> 12) & 63]);
  } else if (n - i == 2) {
    const uint32_t v = (uint32_t(p[i]) << 16) | (uint32_t(p[i + 1]) << 8);
    out.push_back(kB64Alphabet[(v >> 18) & 63]);
    out.push_back(kB64Alphabet[(v >> 12) & 63]);
    out.push_back(kB64Alphabet[(v >> 6) & 63]);
  }
}

void Base64UrlAppend(std::string& out, std::string_view bytes) {
  Base64UrlAppend(out, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// ---- key files -------------------------------------------------------------------

Status ErrnoStatus(std::string_view what, const std::string& path) {
  return Internal(std::string(what) + " " + path + ": " + std::strerror(errno));
}

// An encrypted key must fail rather than prompt on the terminal (OpenSSL's default).
int NoPassphrase(char*, int, int, void*) { return -1; }

struct EvpPkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;

Result<std::string> ReadSmallFile(const std::string& path) {
  constexpr size_t kMaxKeyFile = 64 * 1024;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path);
  std::string data;
  char buf[4096];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      Status st = ErrnoStatus("read", path);
      ::close(fd);
      return st;
    }
    if (r == 0) break;
    data.append(buf, static_cast<size_t>(r));
    if (data.size() > kMaxKeyFile) {
      ::close(fd);
      return Internal("key file too large: " + path);
    }
  }
  ::close(fd);
  return data;
}

Result<std::unique_ptr<KeyRing::Key>> ParseKeyPem(const std::string& kid, const std::string& pem,
                                                  const std::string& path) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Internal("out of memory");
  PkeyPtr pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!pkey) return Internal("not an unencrypted PEM private key: " + path);
  if (EVP_PKEY_get_id(pkey.get()) != EVP_PKEY_ED25519) return Internal("not an Ed25519 key: " + path);
  auto key = std::make_unique<KeyRing::Key>();
  key->kid = kid;
  std::array<uint8_t, 32> seed{}, openssl_pub{};
  size_t seed_len = seed.size(), pub_len = openssl_pub.size();
  if (EVP_PKEY_get_raw_private_key(pkey.get(), seed.data(), &seed_len) != 1 || seed_len != 32 ||
      EVP_PKEY_get_raw_public_key(pkey.get(), openssl_pub.data(), &pub_len) != 1 || pub_len != 32) {
    sodium_memzero(seed.data(), seed.size());
    return Internal("cannot extract Ed25519 key: " + path);
  }
  crypto_sign_seed_keypair(key->pub.data(), key->sk.data(), seed.data());
  sodium_memzero(seed.data(), seed.size());
  // Both libraries must derive the same public key, or tokens would not interoperate.
  if (key->pub != openssl_pub) return Internal("Ed25519 public key mismatch: " + path);
  return key;
}

Status FsyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", dir);
  ::fsync(fd);
  ::close(fd);
  return Status::Ok();
}

// Writes data to a temp file (mode 0600) and renames it into place, so a reader never
// sees a half-written key or 'current'. With no_replace the target must not exist.
Status WriteFileAtomic(const std::string& dir, const std::string& name, std::string_view data,
                       bool no_replace) {
  const std::string final_path = dir + "/" + name;
  const std::string tmp = dir + "/." + name + "." + RandomHex(4) + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus("create", tmp);
  ::fchmod(fd, 0600);  // the umask could only have narrowed it, but be explicit
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t w = ::write(fd, data.data() + off, data.size() - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      Status st = ErrnoStatus("write", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return st;
    }
    off += static_cast<size_t>(w);
  }
  const bool synced = ::fsync(fd) == 0;
  Status sync_st = synced ? Status::Ok() : ErrnoStatus("fsync", tmp);
  if (::close(fd) != 0 && synced) sync_st = ErrnoStatus("close", tmp);
  if (!sync_st.ok()) {
    ::unlink(tmp.c_str());
    return sync_st;
  }
  if (no_replace) {
    // link() fails with EEXIST instead of clobbering an existing key.
    if (::link(tmp.c_str(), final_path.c_str()) != 0) {
      Status st = ErrnoStatus("link", final_path);
      ::unlink(tmp.c_str());
      return st;
    }
    ::unlink(tmp.c_str());
  } else if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
    Status st = ErrnoStatus("rename", final_path);
    ::unlink(tmp.c_str());
    return st;
  }
  return FsyncDir(dir);
}

Status EnsureDir(const std::string& dir) {
  std::error_code ec;
  if (fs::is_directory(dir, ec)) return Status::Ok();
  const fs::path p(dir);
  if (p.has_parent_path() && !p.parent_path().empty()) {
    fs::create_directories(p.parent_path(), ec);
    if (ec) return Internal("create " + p.parent_path().string() + ": " + ec.message());
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoStatus("mkdir", dir);
  return Status::Ok();
}

std::string NewKid() {
  // A date prefix tells an operator at a glance which key is older; the random
  // suffix keeps two nodes creating keys the same day from colliding.
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char date[16];
  std::strftime(date, sizeof date, "%Y%m%d", &tm);
  return std::string("k") + date + "-" + RandomHex(4);
}

// ---- verification helpers ----------------------------------------------------------

Status Reject(const char* why) { return Status(Code::kUnauthorized, why); }

int64_t FloorDiv1000(int64_t ms) { return ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000); }

struct ThreadScratch {
  simdjson::dom::parser parser;
  std::string buf;  // decoded JSON + simdjson padding, reused across calls
};

ThreadScratch& Scratch() {
  thread_local ThreadScratch s;
  return s;
}

// Decodes a base64url JSON segment and parses it as one object. The returned
// object lives in the thread's parser until its next parse.
bool DecodeObject(ThreadScratch& s, std::string_view seg, simdjson::dom::object* out) {
  const size_t n = Base64UrlDecodedSize(seg.size());
  s.buf.resize(n + simdjson::SIMDJSON_PADDING);
  if (!Base64UrlDecodeInto(seg, reinterpret_cast<uint8_t*>(s.buf.data()))) return false;
  simdjson::dom::element root;
  if (s.parser.parse(s.buf.data(), n, false).get(root) != simdjson::SUCCESS) return false;
  return root.get_object().get(*out) == simdjson::SUCCESS;
}

}  // namespace

// ---- base64url public --------------------------------------------------------------

std::string Base64UrlEncode(std::string_view bytes) {
  std::string out;
  Base64UrlAppend(out, bytes);
  return out;
}

bool Base64UrlDecode(std::string_view text, std::string* out) {
  std::string tmp(Base64UrlDecodedSize(text.size()), '\0');
  if (!Base64UrlDecodeInto(text, reinterpret_cast<uint8_t*>(tmp.data()))) return false;
  *out = std::move(tmp);
  return true;
}

// ---- KeyRing -----------------------------------------------------------------------

KeyRing::KeyRing() = default;
KeyRing::~KeyRing() = default;

bool KeyRing::IsValidKid(std::string_view kid) {
  if (kid.empty() || kid.size() > 64) return false;
  for (char c : kid) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

Result<std::shared_ptr<const KeyRing>> KeyRing::Load(const std::string& dir) {
  if (!EnsureSodium()) return Internal("libsodium init failed");
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec == std::errc::no_such_file_or_directory) return Status(Code::kNotFound, "no key dir " + dir);
  // Anything else (permissions, not a directory) must not be mistaken for "empty" and
  // answered with a fresh key that nobody else has.
  if (ec) return Internal("key dir " + dir + ": " + ec.message());

  std::shared_ptr<KeyRing> ring(new KeyRing());
  struct Found {
    std::string kid;
    int64_t mtime_ns;
  };
  std::vector<Found> found;
  bool has_current_file = false;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return Internal("key dir " + dir + ": " + ec.message());
    const fs::path& p = it->path();
    const std::string name = p.filename().string();
    if (name == "current") {
      has_current_file = true;
      continue;
    }
    // Dot files include our own in-flight temp files.
    if (name.empty() || name[0] == '.' || p.extension() != ".pem") continue;
    const std::string kid = p.stem().string();
    if (!IsValidKid(kid)) return Internal("bad key id (want 1..64 of [A-Za-z0-9_-]): " + p.string());
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) return ErrnoStatus("stat", p.string());
    if (!S_ISREG(st.st_mode)) return Internal("not a regular file: " + p.string());
    if (st.st_mode & 077) {
      LOG_WARN("auth_key_file_permissions").Kv("path", p.string()).Kv("want", "0600");
    }
    auto pem = ReadSmallFile(p.string());
    if (!pem.ok()) return pem.status();
    auto key = ParseKeyPem(kid, *pem, p.string());
    sodium_memzero(pem->data(), pem->size());
    if (!key.ok()) return key.status();
    ring->keys_.push_back(std::move(*key));
    found.push_back({kid, int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec});
  }
  if (ring->keys_.empty()) return Status(Code::kNotFound, "no <kid>.pem key in " + dir);
  std::sort(ring->keys_.begin(), ring->keys_.end(),
            [](const auto& a, const auto& b) { return a->kid < b->kid; });

  if (has_current_file) {
    auto cur = ReadSmallFile(dir + "/current");
    if (!cur.ok()) return cur.status();
    std::string kid = std::move(*cur);
    while (!kid.empty() && (kid.back() == '\n' || kid.back() == '\r' || kid.back() == ' ' || kid.back() == '\t'))
      kid.pop_back();
    if (!ring->HasKid(kid)) return Internal(dir + "/current names no loaded key: '" + kid + "'");
    ring->current_ = kid;
  } else {
    const auto newest = std::max_element(found.begin(), found.end(), [](const Found& a, const Found& b) {
      return a.mtime_ns != b.mtime_ns ? a.mtime_ns < b.mtime_ns : a.kid < b.kid;
    });
    ring->current_ = newest->kid;
  }
  LOG_INFO("auth_keys_loaded").Kv("dir", dir).Kv("keys", ring->keys_.size()).Kv("current", ring->current_);
  return std::shared_ptr<const KeyRing>(std::move(ring));
}

Result<std::shared_ptr<const KeyRing>> KeyRing::LoadOrCreate(const std::string& dir) {
  auto ring = Load(dir);
  if (ring.ok() || ring.status().code() != Code::kNotFound) return ring;
  auto kid = CreateKey(dir, /*make_current=*/true);
  if (!kid.ok()) return kid.status();
  LOG_INFO("auth_key_created").Kv("dir", dir).Kv("kid", *kid);
  // Reload rather than trust memory, so this process signs with what is on disk
  // (another process may have raced us into the same empty directory).
  return Load(dir);
}

Result<std::string> KeyRing::CreateKey(const std::string& dir, bool make_current) {
  if (!EnsureSodium()) return Internal("libsodium init failed");
  if (Status st = EnsureDir(dir); !st.ok()) return st;

  EVP_PKEY_CTX* kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr);
  if (!kctx) return Internal("EVP_PKEY_CTX_new_id(ED25519) failed");
  EVP_PKEY* raw = nullptr;
  const bool gen_ok = EVP_PKEY_keygen_init(kctx) == 1 && EVP_PKEY_keygen(kctx, &raw) == 1;
  EVP_PKEY_CTX_free(kctx);
  PkeyPtr pkey(raw);
  if (!gen_ok || !pkey) return Internal("Ed25519 key generation failed");

  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), pkey.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return Internal("PEM encoding failed");
  char* pem_data = nullptr;
  const long pem_len = BIO_get_mem_data(bio.get(), &pem_data);
  if (pem_len <= 0 || !pem_data) return Internal("PEM encoding failed");

  const std::string kid = NewKid();
  Status st = WriteFileAtomic(dir, kid + ".pem", std::string_view(pem_data, static_cast<size_t>(pem_len)),
                              /*no_replace=*/true);
  OPENSSL_cleanse(pem_data, static_cast<size_t>(pem_len));
  if (!st.ok()) return st;
  if (make_current) {
    if (Status cs = WriteFileAtomic(dir, "current", kid + "\n", /*no_replace=*/false); !cs.ok()) return cs;
  }
  return kid;
}

const KeyRing::Key* KeyRing::Find(std::string_view kid) const {
  auto it = std::lower_bound(keys_.begin(), keys_.end(), kid,
                             [](const std::unique_ptr<Key>& k, std::string_view v) { return k->kid < v; });
  return it != keys_.end() && (*it)->kid == kid ? it->get() : nullptr;
}

const std::string& KeyRing::current_kid() const { return current_; }

std::vector<std::string> KeyRing::kids() const {
  std::vector<std::string> out;
  out.reserve(keys_.size());
  for (const auto& k : keys_) out.push_back(k->kid);
  return out;
}

bool KeyRing::HasKid(std::string_view kid) const { return Find(kid) != nullptr; }

const std::array<uint8_t, 32>* KeyRing::PublicKey(std::string_view kid) const {
  const Key* k = Find(kid);
  return k ? &k->pub : nullptr;
}

std::string KeyRing::Sign(std::string_view data) const { return SignWith(current_, data); }

std::string KeyRing::SignWith(std::string_view kid, std::string_view data) const {
  const Key* k = Find(kid);
  if (!k) return {};
  std::string sig(crypto_sign_BYTES, '\0');
  crypto_sign_detached(reinterpret_cast<unsigned char*>(sig.data()), nullptr,
                       reinterpret_cast<const unsigned char*>(data.data()), data.size(), k->sk.data());
  return sig;
}

bool KeyRing::VerifySignature(std::string_view kid, std::string_view data, std::string_view sig) const {
  const Key* k = Find(kid);
  if (!k || sig.size() != crypto_sign_BYTES) return false;
  return crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sig.data()),
                                     reinterpret_cast<const unsigned char*>(data.data()), data.size(),
                                     k->pub.data()) == 0;
}

// ---- TokenService ------------------------------------------------------------------

TokenService::TokenService(std::shared_ptr<const KeyRing> keys, TokenConfig cfg, const Clock& clock)
    : keys_(std::move(keys)), cfg_(std::move(cfg)), clock_(clock) {
  // A negative leeway would reject fresh tokens; treat it as "no skew allowed".
  if (cfg_.leeway_s < 0) cfg_.leeway_s = 0;
}

namespace {

std::string TokenDigest(std::string_view jwt) {
  EnsureSodium();
  std::string digest(crypto_generichash_BYTES, '\0');
  crypto_generichash(reinterpret_cast<unsigned char*>(digest.data()), digest.size(),
                     reinterpret_cast<const unsigned char*>(jwt.data()), jwt.size(), nullptr, 0);
  return digest;
}

}  // namespace

std::string TokenService::IssueAccess(UserId user, std::string_view device_id) const {
  return IssueAccess(user, device_id, nullptr);
}

std::string TokenService::IssueAccess(UserId user, std::string_view device_id, Claims* claims_out) const {
  const std::string& kid = keys_->current_kid();
  const int64_t now = FloorDiv1000(clock_.NowMs());
  const std::string sid = RandomHex(16);
  const int64_t exp = now + cfg_.access_ttl_s;

  JsonWriter header(64);
  header.BeginObject().Field("alg", "EdDSA").Field("typ", "JWT").Field("kid", kid).EndObject();
  JsonWriter payload(256);
  payload.BeginObject()
      .Field("iss", cfg_.issuer)
      .Field("aud", cfg_.audience)
      .Key("sub").UserId(user)
      .Field("did", device_id)
      .Field("sid", sid)
      .Field("iat", now)
      .Field("nbf", now)
      .Field("exp", exp)
      .EndObject();

  std::string jwt;
  jwt.reserve(512);
  Base64UrlAppend(jwt, header.str());
  jwt.push_back('.');
  Base64UrlAppend(jwt, payload.str());
  const std::string sig = keys_->Sign(jwt);
  jwt.push_back('.');
  Base64UrlAppend(jwt, sig);

  // This process just signed the token with a key of its ring, so the signature is
  // known good: remember the token now, after every other check a presented token
  // gets, and the client's first connect with it costs no curve work.
  if (Result<Claims> checked = Check(jwt, /*verify_signature=*/false); checked.ok())
    Remember(TokenDigest(jwt), std::move(checked).value());

  if (claims_out) {
    claims_out->user = user;
    claims_out->device_id = std::string(device_id);
    claims_out->session_id = sid;
    claims_out->kid = kid;
    claims_out->iat = now;
    claims_out->nbf = now;
    claims_out->exp = exp;
  }
  return jwt;
}

Result<Claims> TokenService::Verify(std::string_view jwt) const {
  if (jwt.empty() || jwt.size() > kMaxTokenBytes) return Check(jwt, true);
  std::string digest = TokenDigest(jwt);
  VerifiedMap dropped;  // freed after the lock is released
  {
    std::lock_guard lk(verified_mu_);
    auto it = verified_.find(digest);
    if (it == verified_.end()) {
      auto old = verified_old_.find(digest);
      if (old != verified_old_.end()) {
        // In use again: back into the current generation (the node moves, no copy).
        auto node = verified_old_.extract(old);
        RotateIfFullLocked(dropped);
        it = verified_.insert(std::move(node)).position;
      }
    }
    if (it != verified_.end()) {
      if (Status st = CheckTimes(it->second); !st.ok()) return st;
      ++verified_hits_;
      return it->second;
    }
  }
  Result<Claims> r = Check(jwt, true);
  if (r.ok()) Remember(std::move(digest), *r);
  return r;
}

void TokenService::Remember(std::string digest, Claims claims) const {
  VerifiedMap dropped;
  std::lock_guard lk(verified_mu_);
  RotateIfFullLocked(dropped);
  verified_.insert_or_assign(std::move(digest), std::move(claims));
  // (`dropped` is declared first, so it is freed after the lock is released.)
}

void TokenService::RotateIfFullLocked(VerifiedMap& dropped) const {
  const size_t generation = std::max<size_t>(1, cfg_.verified_tokens_max / 2);
  if (verified_.size() < generation) return;
  dropped.swap(verified_old_);
  verified_old_.swap(verified_);
}

uint64_t TokenService::verified_cache_hits() const {
  std::lock_guard lk(verified_mu_);
  return verified_hits_;
}

// The time claims against now, exactly as a full verification checks them.
Status TokenService::CheckTimes(const Claims& c) const {
  const int64_t now = FloorDiv1000(clock_.NowMs());
  const int64_t leeway = cfg_.leeway_s;
  // Written without adding to attacker-chosen values, so no overflow.
  if (now - leeway >= c.exp) return Reject("expired");
  if (c.nbf != 0 && c.nbf > now + leeway) return Reject("not yet valid");
  if (c.iat > now + leeway) return Reject("issued in the future");
  return Status::Ok();
}

Result<Claims> TokenService::Check(std::string_view jwt, bool verify_signature) const {
  using simdjson::SUCCESS;
  if (jwt.empty()) return Reject("empty token");
  if (jwt.size() > kMaxTokenBytes) return Reject("token too long");
  const size_t d1 = jwt.find('.');
  if (d1 == std::string_view::npos) return Reject("malformed token");
  const size_t d2 = jwt.find('.', d1 + 1);
  if (d2 == std::string_view::npos || jwt.find('.', d2 + 1) != std::string_view::npos)
    return Reject("malformed token");
  const std::string_view h64 = jwt.substr(0, d1);
  const std::string_view p64 = jwt.substr(d1 + 1, d2 - d1 - 1);
  const std::string_view s64 = jwt.substr(d2 + 1);

  ThreadScratch& scratch = Scratch();
  Claims claims;

  // ---- header: decides which key, and nothing else ----
  {
    simdjson::dom::object hdr;
    if (!DecodeObject(scratch, h64, &hdr)) return Reject("bad header");
    bool seen_alg = false, seen_kid = false, seen_typ = false;
    for (auto field : hdr) {
      const std::string_view k = field.key;
      if (k == "alg") {
        std::string_view alg;
        if (seen_alg || field.value.get_string().get(alg) != SUCCESS) return Reject("bad alg");
        // Pinned: the header never chooses the algorithm, it can only agree with us.
        if (alg != "EdDSA") return Reject("alg not allowed");
        seen_alg = true;
      } else if (k == "kid") {
        std::string_view kid;
        if (seen_kid || field.value.get_string().get(kid) != SUCCESS) return Reject("bad kid");
        claims.kid = std::string(kid);
        seen_kid = true;
      } else if (k == "typ") {
        std::string_view typ;
        if (seen_typ || field.value.get_string().get(typ) != SUCCESS || typ != "JWT") return Reject("bad typ");
        seen_typ = true;
      } else if (k == "crit") {
        // We implement no JWS extensions, so RFC 7515 §4.1.11 says reject.
        return Reject("crit not supported");
      }
      // Other members (jku, jwk, x5u, x5c, ...) are ignored: keys come only from the ring.
    }
    if (!seen_alg) return Reject("missing alg");
    if (!seen_kid) return Reject("missing kid");
  }
  const std::array<uint8_t, 32>* pub = keys_->PublicKey(claims.kid);
  if (!pub) return Reject("unknown kid");

  uint8_t sig[crypto_sign_BYTES];
  if (Base64UrlDecodedSize(s64.size()) != sizeof sig || !Base64UrlDecodeInto(s64, sig))
    return Reject("bad signature encoding");

  // ---- payload: checked before the signature because it is ~50x cheaper, so a
  // storm of stale tokens (clients back after an outage) costs no Ed25519 work. The
  // signature is still required for acceptance; only the rejection reason may differ.
  {
    simdjson::dom::object pl;
    if (!DecodeObject(scratch, p64, &pl)) return Reject("bad payload");
    bool seen_iss = false, seen_aud = false, seen_sub = false, seen_did = false, seen_sid = false;
    bool seen_iat = false, seen_nbf = false, seen_exp = false;
    bool aud_ok = false;
    for (auto field : pl) {
      const std::string_view k = field.key;
      std::string_view sv;
      if (k == "iss") {
        if (seen_iss || field.value.get_string().get(sv) != SUCCESS) return Reject("bad iss");
        if (sv != cfg_.issuer) return Reject("wrong iss");
        seen_iss = true;
      } else if (k == "aud") {
        if (seen_aud) return Reject("bad aud");
        seen_aud = true;
        if (field.value.is_string()) {
          if (field.value.get_string().get(sv) != SUCCESS) return Reject("bad aud");
          aud_ok = sv == cfg_.audience;
        } else {
          simdjson::dom::array arr;
          if (field.value.get_array().get(arr) != SUCCESS) return Reject("bad aud");
          for (auto el : arr) {
            if (el.get_string().get(sv) != SUCCESS) return Reject("bad aud");
            if (sv == cfg_.audience) aud_ok = true;
          }
        }
      } else if (k == "sub") {
        if (seen_sub || field.value.get_string().get(sv) != SUCCESS) return Reject("bad sub");
        auto uid = ParseUserId(sv);
        if (!uid) return Reject("bad sub");
        claims.user = *uid;
        seen_sub = true;
      } else if (k == "did") {
        if (seen_did || field.value.get_string().get(sv) != SUCCESS) return Reject("bad did");
        claims.device_id = std::string(sv);
        seen_did = true;
      } else if (k == "sid") {
        if (seen_sid || field.value.get_string().get(sv) != SUCCESS || sv.empty()) return Reject("bad sid");
        claims.session_id = std::string(sv);
        seen_sid = true;
      } else if (k == "iat" || k == "nbf" || k == "exp") {
        bool& seen = k == "iat" ? seen_iat : k == "nbf" ? seen_nbf : seen_exp;
        int64_t& dst = k == "iat" ? claims.iat : k == "nbf" ? claims.nbf : claims.exp;
        // Integers only: a float or an out-of-range number is a token we did not make.
        if (seen || field.value.get_int64().get(dst) != SUCCESS) return Reject("bad time claim");
        seen = true;
      }
    }
    if (!seen_iss) return Reject("missing iss");
    if (!seen_aud) return Reject("missing aud");
    if (!aud_ok) return Reject("wrong aud");
    if (!seen_sub) return Reject("missing sub");
    if (!seen_did) return Reject("missing did");
    if (!seen_sid) return Reject("missing sid");
    if (!seen_exp) return Reject("missing exp");
    if (!seen_iat) return Reject("missing iat");

    if (Status st = CheckTimes(claims); !st.ok()) return st;
    if (claims.exp < claims.iat) return Reject("exp before iat");
  }

  if (!verify_signature) return claims;
  const std::string_view signing_input = jwt.substr(0, d2);
  if (crypto_sign_verify_detached(sig, reinterpret_cast<const unsigned char*>(signing_input.data()),
                                  signing_input.size(), pub->data()) != 0)
    return Reject("bad signature");
  return claims;
}

// ---- refresh tokens ----------------------------------------------------------------

std::string NewRefreshToken() {
  EnsureSodium();
  uint8_t raw[32];
  randombytes_buf(raw, sizeof raw);
  std::string out;
  Base64UrlAppend(out, raw, sizeof raw);
  sodium_memzero(raw, sizeof raw);
  return out;
}

std::string HashRefreshToken(std::string_view token) {
  EnsureSodium();
  std::string out(crypto_hash_sha256_BYTES, '\0');
  crypto_hash_sha256(reinterpret_cast<unsigned char*>(out.data()),
                     reinterpret_cast<const unsigned char*>(token.data()), token.size());
  return out;
}

bool IsWellFormedRefreshToken(std::string_view token) {
  if (token.size() != 43) return false;
  uint8_t raw[32];
  return Base64UrlDecodeInto(token, raw);
}

}  // namespace sb::auth
