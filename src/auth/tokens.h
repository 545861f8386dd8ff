// Access tokens (compact JWS, alg EdDSA/Ed25519, signed and verified in-process) and
// opaque refresh tokens. See src/auth/README.md for the format and key rotation.
//
// Verification is the reconnect-storm hot path: it touches no disk and no database,
// allocates little, and never throws; every failure is Code::kUnauthorized with a
// short reason meant for logs (clients should only ever see "unauthorized").
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/clock.h"
#include "base/ids.h"
#include "base/status.h"

namespace sb::auth {

// Anything longer is rejected before any decoding or crypto; our own tokens are ~400 bytes.
inline constexpr size_t kMaxTokenBytes = 4096;

struct TokenConfig {
  std::string issuer = "switchboard";
  std::string audience = "switchboard";
  int64_t access_ttl_s = 900;          // 15 min
  int64_t refresh_ttl_s = 30 * 86400;  // 30 days
  int64_t leeway_s = 30;               // clock skew allowed on exp / nbf / iat
  // Tokens remembered as verified (see TokenService::Verify), ~350 bytes each.
  size_t verified_tokens_max = 131072;
};

struct Claims {
  UserId user = 0;          // "sub": "usr_<16 hex>"
  std::string device_id;    // "did"
  std::string session_id;   // "sid": random per issued token (jti-like)
  std::string kid;          // header "kid" used
  int64_t iat = 0, nbf = 0, exp = 0;  // seconds; nbf is 0 when the token has none
};

// Ed25519 keys, one PKCS#8 PEM file per key id: <dir>/<kid>.pem (mode 0600).
// Signer selection: the kid named by <dir>/current (one line) when that file exists;
// otherwise the key file with the newest mtime (ties: the greatest kid). All loaded
// keys verify. Immutable after load, so it is shared freely between threads.
class KeyRing {
 public:
  struct Key;  // defined in tokens.cpp

  // Loads every <kid>.pem in dir; if there is none, creates dir (0700) and one new
  // key that becomes current. Fails (kInternal) on an unreadable or non-Ed25519 key
  // file, a bad kid, or a 'current' file naming a missing key: a half-loaded key
  // ring would silently log everybody out, so it is better not to start.
  static Result<std::shared_ptr<const KeyRing>> LoadOrCreate(const std::string& dir);
  // Loads without creating anything (kNotFound if there is no key).
  static Result<std::shared_ptr<const KeyRing>> Load(const std::string& dir);

  // Rotation step: writes a new key file into dir (created 0700 if needed) and
  // returns its kid. With make_current it also rewrites <dir>/current to name it.
  // Running processes keep their loaded ring; reload (LoadOrCreate) to pick it up.
  static Result<std::string> CreateKey(const std::string& dir, bool make_current);

  // Kid rules, enforced on file names: 1..64 of [A-Za-z0-9_-].
  static bool IsValidKid(std::string_view kid);

  const std::string& current_kid() const;
  std::vector<std::string> kids() const;  // sorted
  bool HasKid(std::string_view kid) const;
  // Raw 32-byte Ed25519 public key, or nullptr for an unknown kid.
  const std::array<uint8_t, 32>* PublicKey(std::string_view kid) const;

  // Raw 64-byte Ed25519 signature over data with the current key. Exposed for
  // tests and tooling that must produce tokens the service did not shape itself.
  std::string Sign(std::string_view data) const;
  // Same with a named key; empty if kid is unknown.
  std::string SignWith(std::string_view kid, std::string_view data) const;
  // True iff sig is a valid signature of data by the named key.
  bool VerifySignature(std::string_view kid, std::string_view data, std::string_view sig) const;

  ~KeyRing();
  KeyRing(const KeyRing&) = delete;
  KeyRing& operator=(const KeyRing&) = delete;

 private:
  KeyRing();
  const Key* Find(std::string_view kid) const;
  std::vector<std::unique_ptr<Key>> keys_;  // sorted by kid; a handful, so linear/binary search
  std::string current_;
};

class TokenService {
 public:
  // keys must not be null.
  TokenService(std::shared_ptr<const KeyRing> keys, TokenConfig cfg, const Clock& clock);

  // A signed compact JWT for this user/device. Thread-safe.
  std::string IssueAccess(UserId user, std::string_view device_id) const;
  // Same, and also returns the claims that went into it (sid, iat, exp, kid).
  std::string IssueAccess(UserId user, std::string_view device_id, Claims* claims_out) const;

  // Only alg "EdDSA" with a "kid" naming a loaded key; typ, if present, "JWT"; "crit"
  // rejected; exp required, nbf optional, iat required, each with leeway; iss and aud
  // exact (aud: string, or array of strings containing ours); sub a valid user id;
  // sid a non-empty string; did a string. Duplicate members are rejected.
  // Thread-safe, no disk, no DB, no exceptions, any input.
  //
  // A token that verified once is remembered (by its BLAKE2b-256 digest, up to
  // cfg.verified_tokens_max of them): presenting it again re-checks only the time claims,
  // not the Ed25519 signature (~45 us), so a reconnect storm or a REST client pays the
  // signature once per token. The key ring never changes, so a signature valid once
  // stays valid; revocation is checked by the callers, after Verify, every time.
  // Tokens this service issued are remembered from the start (IssueAccess signed them,
  // and every other check ran on them), so their first use costs no signature either.
  // The memory is two generations of half the bound each: when the current one is
  // full it becomes the previous one and the previous one is dropped; a token found
  // in the previous one moves back to the current one. A token in use is kept; one
  // unused for a generation (expired ones, those of clients gone) is forgotten.
  Result<Claims> Verify(std::string_view jwt) const;
  // Verifications answered from that memory, since start (for tests and metrics).
  uint64_t verified_cache_hits() const;

  const TokenConfig& config() const { return cfg_; }
  const KeyRing& keys() const { return *keys_; }

 private:
  // Every check Verify makes; the Ed25519 signature only if verify_signature (false
  // only for a token this service has just signed).
  Result<Claims> Check(std::string_view jwt, bool verify_signature) const;
  using VerifiedMap = std::unordered_map<std::string, Claims>;  // digest -> claims
  // Keeps `claims` under the token's BLAKE2b-256 digest (bounded, see Verify).
  void Remember(std::string digest, Claims claims) const;
  // With verified_mu_ held: makes room in the current generation. What has to be
  // freed is swapped into `dropped`, for the caller to free after unlocking.
  void RotateIfFullLocked(VerifiedMap& dropped) const;
  Status CheckTimes(const Claims& c) const;

  std::shared_ptr<const KeyRing> keys_;
  TokenConfig cfg_;
  const Clock& clock_;
  mutable std::mutex verified_mu_;
  mutable VerifiedMap verified_;      // the current generation
  mutable VerifiedMap verified_old_;  // the previous one
  mutable uint64_t verified_hits_ = 0;
};

// Opaque refresh tokens: 32 random bytes, base64url without padding (43 chars).
std::string NewRefreshToken();
// SHA-256 of the token text, raw 32 bytes: the only form that is stored.
std::string HashRefreshToken(std::string_view token);
// Shape check (43 canonical base64url chars) so junk is refused before a store lookup.
bool IsWellFormedRefreshToken(std::string_view token);

// Strict base64url (RFC 4648 §5) without padding. Decode rejects '=', any character
// outside the alphabet, a length of 1 mod 4, and non-zero trailing bits, so every
// byte string has exactly one accepted encoding.
std::string Base64UrlEncode(std::string_view bytes);
bool Base64UrlDecode(std::string_view text, std::string* out);

}  // namespace sb::auth
