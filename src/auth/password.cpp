#include "auth/password.h"

#include <sodium.h>

namespace sb::auth {
namespace {

constexpr std::string_view kArgon2idPrefix = "$argon2id$";

bool EnsureSodium() {
  static const bool ok = sodium_init() >= 0;
  return ok;
}

// libsodium wants a NUL-terminated encoded string of bounded size; anything that is
// not argon2id is refused so a stored argon2i hash cannot downgrade us silently.
bool CopyEncoded(std::string_view encoded, char (&out)[crypto_pwhash_STRBYTES]) {
  if (encoded.size() >= crypto_pwhash_STRBYTES || encoded.substr(0, kArgon2idPrefix.size()) != kArgon2idPrefix)
    return false;
  if (encoded.find('\0') != std::string_view::npos) return false;
  encoded.copy(out, encoded.size());
  out[encoded.size()] = '\0';
  return true;
}

bool ParamsInRange(const PasswordParams& p) {
  const unsigned long long mem = static_cast<unsigned long long>(p.mem_kib) * 1024ULL;
  return p.mem_kib <= crypto_pwhash_argon2id_MEMLIMIT_MAX / 1024 && p.ops >= crypto_pwhash_argon2id_OPSLIMIT_MIN &&
         p.ops <= crypto_pwhash_argon2id_OPSLIMIT_MAX && mem >= crypto_pwhash_argon2id_MEMLIMIT_MIN;
}

}  // namespace

Result<std::string> HashPassword(std::string_view password, const PasswordParams& p) {
  if (!EnsureSodium()) return Internal("libsodium init failed");
  if (password.empty()) return BadRequest("empty password");
  if (password.size() > kMaxPasswordBytes) return BadRequest("password too long");
  if (!ParamsInRange(p)) return BadRequest("argon2id parameters out of range");
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str_alg(out, password.data(), password.size(), p.ops, p.mem_kib * 1024,
                            crypto_pwhash_ALG_ARGON2ID13) != 0)
    return Internal("argon2id hash failed (out of memory?)");
  return std::string(out);
}

bool VerifyPassword(std::string_view encoded, std::string_view password) {
  if (!EnsureSodium()) return false;
  if (password.size() > kMaxPasswordBytes) return false;
  char enc[crypto_pwhash_STRBYTES];
  if (!CopyEncoded(encoded, enc)) return false;
  return crypto_pwhash_str_verify(enc, password.data(), password.size()) == 0;
}

bool PasswordNeedsRehash(std::string_view encoded, const PasswordParams& p) {
  if (!EnsureSodium()) return true;
  char enc[crypto_pwhash_STRBYTES];
  if (!CopyEncoded(encoded, enc) || !ParamsInRange(p)) return true;
  // 0 = same params, 1 = different, -1 = malformed: only 0 means "keep".
  return crypto_pwhash_argon2id_str_needs_rehash(enc, p.ops, p.mem_kib * 1024) != 0;
}

}  // namespace sb::auth
