// Password hashing: argon2id via libsodium, stored as the self-describing encoded
// string ("$argon2id$v=19$m=...,t=...,p=1$salt$hash"), so parameters can be raised
// later without a migration (see PasswordNeedsRehash).
//
// Each hash costs mem_kib of RAM and tens of milliseconds of one core; call these
// from a worker pool, never from a shard event loop, and bound how many run at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace sb::auth {

// argon2id, OWASP's minimum recommendation (m=19 MiB, t=2, p=1).
struct PasswordParams {
  uint64_t ops = 2;
  size_t mem_kib = 19456;
};

// Longer passwords are refused: they add nothing and each byte is hashed on every login.
inline constexpr size_t kMaxPasswordBytes = 1024;

// The encoded argon2id string. kBadRequest for an empty or over-long password or
// params outside libsodium's range; kInternal if the hash could not be computed
// (out of memory).
Result<std::string> HashPassword(std::string_view password, const PasswordParams& p);

// True iff encoded is an argon2id string and password matches it. The comparison is
// constant-time (libsodium). Anything malformed is simply false.
bool VerifyPassword(std::string_view encoded, std::string_view password);

// True if encoded was made with parameters other than p (or is not argon2id): after a
// successful login, rehash and store the new string.
bool PasswordNeedsRehash(std::string_view encoded, const PasswordParams& p);

}  // namespace sb::auth
