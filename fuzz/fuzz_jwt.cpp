// TokenService::Verify on arbitrary strings: every WebSocket upgrade and every
// authenticated REST call runs it on attacker-supplied bytes.
//
// The key ring is loaded once from a temp dir holding a fixed test key (see
// fuzz_support.h), and the clock is fixed, so the tokens in fuzz/corpus/fuzz_jwt stay
// valid in every run and libFuzzer mutates real, accepted tokens.
//
// Input modes (first byte):
//   's'  the rest is <header JSON> 0xff <payload JSON>: we encode and sign it with the
//        real key, then verify. This reaches the claim checks behind the signature
//        and checks what an accepted token must satisfy (issuer, audience, times...).
//   'm'  the rest mutates one of our issued tokens: byte 1 picks the token, then
//        (position, xor) byte pairs. Any acceptance must be the original token.
//   else the whole input is the token text.
// Invariants:
//   * nothing crashes, Verify never throws;
//   * an unsigned-by-us token is never accepted: an accepted token's signing input
//     was signed by us and its signature bytes are exactly the ones we produced
//     (Ed25519 is deterministic and libsodium rejects non-canonical signatures, so
//     there is exactly one valid signature per message);
//   * every accepted token's claims obey the documented policy;
//   * Base64UrlDecode is canonical: a decodable string re-encodes to itself.
//
// SB_FUZZ_WRITE_SEEDS=<dir> writes the token seeds (same key, same clock) and exits:
// that is how fuzz/corpus/fuzz_jwt was made.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>

#include "auth/tokens.h"
#include "base/clock.h"
#include "base/ids.h"
#include "fuzz_support.h"

namespace sb::fuzz {
namespace {

// 2026-11-30T00:00:00Z. Fixed, so seed tokens never expire.
constexpr int64_t kNowS = 1796083200;

struct Env {
  TempDir dir{"fuzz-jwt"};
  ManualClock clock{kNowS * 1000};
  std::shared_ptr<const auth::KeyRing> keys = FixedKeyRing(dir.path() + "/keys");
  auth::TokenService tokens{keys, auth::TokenConfig{}, clock};
  // signing input -> base64url signature, for every token we signed.
  std::map<std::string, std::string> issued;
  std::vector<std::string> originals;  // tokens for the 'm' mode

  std::string Make(std::string_view header, std::string_view payload, bool remember = true) {
    std::string input = auth::Base64UrlEncode(header) + "." + auth::Base64UrlEncode(payload);
    std::string sig = auth::Base64UrlEncode(keys->Sign(input));
    if (remember) issued[input] = sig;
    return input + "." + sig;
  }
};

Env& E() {
  static Env* env = new Env();  // never destroyed: inputs run until exit
  return *env;
}

std::string Payload(std::string_view extra_or_override) {
  // Compact JSON as our issuer writes it; `extra_or_override` replaces everything
  // after the opening brace when given.
  if (!extra_or_override.empty()) return "{" + std::string(extra_or_override) + "}";
  return "{\"iss\":\"switchboard\",\"aud\":\"switchboard\",\"sub\":\"" + FormatUserId(11) +
         "\",\"did\":\"phone\",\"sid\":\"0123456789abcdef0123456789abcdef\",\"iat\":" + std::to_string(kNowS) +
         ",\"nbf\":" + std::to_string(kNowS) + ",\"exp\":" + std::to_string(kNowS + 900) + "}";
}

const std::string kHeader = R"({"alg":"EdDSA","typ":"JWT","kid":"fuzzkey"})";

// The seed tokens: valid ones (several shapes) and near-valid ones that fail at
// different checks. All signed by the fixed key.
std::vector<std::pair<std::string, std::string>> SeedTokens(Env& e) {
  const std::string t = std::to_string(kNowS);
  std::vector<std::pair<std::string, std::string>> out;
  out.emplace_back("valid", e.Make(kHeader, Payload("")));
  out.emplace_back("valid_aud_array",
                   e.Make(R"({"kid":"fuzzkey","alg":"EdDSA"})",
                          Payload("\"sub\":\"usr_000000000000002a\",\"aud\":[\"other\",\"switchboard\"],"
                                  "\"iss\":\"switchboard\",\"did\":\"\",\"sid\":\"s\",\"iat\":" + t +
                                  ",\"exp\":" + std::to_string(kNowS + 60))));
  out.emplace_back("expired", e.Make(kHeader, Payload("\"iss\":\"switchboard\",\"aud\":\"switchboard\",\"sub\":\"" +
                                                      FormatUserId(11) + "\",\"did\":\"d\",\"sid\":\"s\",\"iat\":" +
                                                      std::to_string(kNowS - 2000) + ",\"exp\":" +
                                                      std::to_string(kNowS - 1000))));
  out.emplace_back("dup_sub", e.Make(kHeader, Payload("\"iss\":\"switchboard\",\"aud\":\"switchboard\",\"sub\":\"" +
                                                      FormatUserId(11) + "\",\"sub\":\"" + FormatUserId(12) +
                                                      "\",\"did\":\"d\",\"sid\":\"s\",\"iat\":" + t +
                                                      ",\"exp\":" + std::to_string(kNowS + 60))));
  out.emplace_back("alg_none", e.Make(R"({"alg":"none","kid":"fuzzkey"})", Payload("")));
  out.emplace_back("unknown_kid", e.Make(R"({"alg":"EdDSA","kid":"other"})", Payload("")));
  out.emplace_back("crit", e.Make(R"({"alg":"EdDSA","kid":"fuzzkey","crit":["b64"]})", Payload("")));
  out.emplace_back("float_exp", e.Make(kHeader, Payload("\"iss\":\"switchboard\",\"aud\":\"switchboard\",\"sub\":\"" +
                                                        FormatUserId(11) + "\",\"did\":\"d\",\"sid\":\"s\",\"iat\":" +
                                                        t + ",\"exp\":1.8e9")));
  return out;
}

// `extra` is a token signed for this input only (the 's' mode), not kept in `issued`
// so that memory stays flat over millions of inputs.
void CheckAccepted(Env& e, std::string_view jwt, const auth::Claims& c, std::string_view extra = {}) {
  size_t d2 = jwt.rfind('.');
  FUZZ_CHECK(d2 != std::string_view::npos, "accepted a token without dots");
  std::string input(jwt.substr(0, d2));
  std::string_view sig = jwt.substr(d2 + 1);
  auto it = e.issued.find(input);
  if (it == e.issued.end() && !extra.empty()) {
    size_t x2 = extra.rfind('.');
    FUZZ_CHECK(extra.substr(0, x2) == input, "accepted a token whose signing input we never signed: %.*s",
               int(jwt.size()), jwt.data());
    FUZZ_CHECK(extra.substr(x2 + 1) == sig, "accepted signature bytes other than ours: %.*s", int(jwt.size()),
               jwt.data());
  } else {
    FUZZ_CHECK(it != e.issued.end(), "accepted a token whose signing input we never signed: %.*s",
               int(jwt.size()), jwt.data());
    FUZZ_CHECK(it->second == sig, "accepted signature bytes other than ours: %.*s", int(jwt.size()), jwt.data());
  }
  const int64_t now = kNowS, leeway = e.tokens.config().leeway_s;
  FUZZ_CHECK(c.user != 0 && ParseUserId(FormatUserId(c.user)) == c.user, "accepted a bad sub");
  FUZZ_CHECK(!c.session_id.empty(), "accepted an empty sid");
  FUZZ_CHECK(c.kid == kFuzzKid, "accepted kid '%s'", c.kid.c_str());
  FUZZ_CHECK(c.exp > now - leeway, "accepted an expired token (exp %lld)", (long long)c.exp);
  FUZZ_CHECK(c.iat <= now + leeway, "accepted a token issued in the future");
  FUZZ_CHECK(c.nbf <= now + leeway, "accepted a token not valid yet");
  FUZZ_CHECK(c.exp >= c.iat, "accepted exp < iat");
}

void VerifyOne(Env& e, std::string_view jwt, std::string_view extra = {}) {
  auto r = e.tokens.Verify(jwt);
  if (r.ok()) {
    CheckAccepted(e, jwt, *r, extra);
  } else {
    FUZZ_CHECK(r.status().code() == Code::kUnauthorized, "rejection with code %d", int(r.status().code()));
  }
}

void CheckBase64(std::string_view text) {
  std::string bytes;
  if (auth::Base64UrlDecode(text, &bytes)) {
    FUZZ_CHECK(auth::Base64UrlEncode(bytes) == text, "base64url decode is not canonical");
  }
  std::string back;
  FUZZ_CHECK(auth::Base64UrlDecode(auth::Base64UrlEncode(text), &back) && back == text,
             "base64url round trip failed");
}

void WriteSeeds(const char* dir) {
  Env& e = E();
  std::filesystem::create_directories(dir);
  for (auto& [name, tok] : SeedTokens(e)) std::ofstream(std::string(dir) + "/" + name) << tok;
  // Signed-mode seeds: 's' + header + 0xff + payload.
  std::ofstream(std::string(dir) + "/signed_valid") << 's' << kHeader << '\xff' << Payload("");
  std::ofstream(std::string(dir) + "/signed_aud_array")
      << 's' << R"({"alg":"EdDSA","kid":"fuzzkey"})" << '\xff'
      << Payload("\"iss\":\"switchboard\",\"aud\":[\"switchboard\"],\"sub\":\"usr_0000000000000001\",\"did\":\"x\","
                 "\"sid\":\"y\",\"iat\":1796083100,\"exp\":1796083300,\"nbf\":1796083250");
  // Mutation-mode seed: token 0, flip the first signature byte.
  std::ofstream(std::string(dir) + "/mutate_sig") << 'm' << '\0' << '\xff' << '\x01';
}

}  // namespace
}  // namespace sb::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using namespace sb::fuzz;
  QuietLogs();
  if (const char* dir = std::getenv("SB_FUZZ_WRITE_SEEDS")) {
    WriteSeeds(dir);
    std::exit(0);
  }
  Env& e = E();
  for (auto& [name, tok] : SeedTokens(e)) e.originals.push_back(tok);
  // Every "valid" seed really is accepted, or the fuzzer would be exploring nothing.
  FUZZ_CHECK(e.tokens.Verify(e.originals[0]).ok(), "seed token rejected: %s",
             e.tokens.Verify(e.originals[0]).status().message().c_str());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sb;
  using namespace sb::fuzz;
  Env& e = E();
  std::string_view in = AsView(data, size);
  CheckBase64(in.substr(0, 512));

  if (!in.empty() && in[0] == 's') {
    auto parts = SplitFF(in.substr(1));
    std::string_view header = parts[0];
    std::string_view payload = parts.size() > 1 ? parts[1] : std::string_view{};
    std::string tok = e.Make(header, payload, /*remember=*/false);
    VerifyOne(e, tok, tok);
    return 0;
  }
  if (in.size() >= 2 && in[0] == 'm') {
    std::string tok = e.originals[static_cast<uint8_t>(in[1]) % e.originals.size()];
    const std::string original = tok;
    for (size_t i = 2; i + 1 < in.size(); i += 2) {
      size_t pos = static_cast<uint8_t>(in[i]) * tok.size() / 256;
      // The signature is the last 86 characters; pos >= 0xc0 aims there.
      if (static_cast<uint8_t>(in[i]) >= 0xc0) pos = tok.size() - 86 + (static_cast<uint8_t>(in[i]) - 0xc0) % 86;
      tok[pos] = static_cast<char>(tok[pos] ^ in[i + 1]);
    }
    auto r = e.tokens.Verify(tok);
    if (r.ok()) {
      FUZZ_CHECK(tok == original, "a mutated token was accepted: %s (original %s)", tok.c_str(), original.c_str());
      CheckAccepted(e, tok, *r);
    }
    return 0;
  }
  VerifyOne(e, in);
  return 0;
}
