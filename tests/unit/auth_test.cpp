#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "auth/password.h"
#include "auth/tokens.h"
#include "base/clock.h"
#include "base/ids.h"
#include "base/json_writer.h"

namespace sb::auth {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kT0Ms = 1'800'000'000'000;  // a fixed "now" for every time test
constexpr int64_t kT0 = kT0Ms / 1000;

// A fresh directory per use, removed on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "sb_auth_test_XXXXXX").string();
    char* p = mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string sub(const std::string& s) const { return path_ + "/" + s; }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::shared_ptr<const KeyRing> MustLoad(const std::string& dir) {
  auto r = KeyRing::LoadOrCreate(dir);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : nullptr;
}

std::string B64(std::string_view s) { return Base64UrlEncode(s); }

// The claims our issuer would write, as a JsonWriter the test can bend.
struct PayloadSpec {
  std::string iss = "switchboard";
  std::string aud_json = "\"switchboard\"";  // raw JSON, so tests can use arrays
  std::string sub = FormatUserId(0x1234);
  std::string did = "dev-1";
  std::string sid = "0123456789abcdef0123456789abcdef";
  int64_t iat = kT0, nbf = kT0, exp = kT0 + 900;
  std::string Json() const {
    JsonWriter w;
    w.BeginObject().Field("iss", iss).Key("aud").Raw(aud_json).Field("sub", sub).Field("did", did);
    w.Field("sid", sid).Field("iat", iat).Field("nbf", nbf).Field("exp", exp).EndObject();
    return w.str();
  }
};

std::string HeaderJson(std::string_view alg, std::string_view kid) {
  JsonWriter w;
  w.BeginObject().Field("alg", alg).Field("typ", "JWT").Field("kid", kid).EndObject();
  return w.str();
}

// A token signed by ring's key `kid` over exactly these JSON texts.
std::string Craft(const KeyRing& ring, std::string_view kid, std::string_view header_json,
                  std::string_view payload_json) {
  std::string input = B64(header_json) + "." + B64(payload_json);
  return input + "." + B64(ring.SignWith(kid, input));
}

std::vector<std::string> Split(const std::string& jwt) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t d = jwt.find('.', start);
    parts.push_back(jwt.substr(start, d == std::string::npos ? std::string::npos : d - start));
    if (d == std::string::npos) break;
    start = d + 1;
  }
  return parts;
}

class TokenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    ring_ = MustLoad(dir_->sub("keys"));
  }
  static void TearDownTestSuite() {
    ring_.reset();
    delete dir_;
  }

  std::string Kid() const { return ring_->current_kid(); }
  std::string Good(const PayloadSpec& p = {}) const {
    return Craft(*ring_, Kid(), HeaderJson("EdDSA", Kid()), p.Json());
  }
  void ExpectReject(std::string_view jwt, std::string_view why = {}) const {
    auto r = svc_.Verify(jwt);
    ASSERT_FALSE(r.ok()) << "accepted: " << jwt;
    EXPECT_EQ(r.status().code(), Code::kUnauthorized);
    if (!why.empty()) {
      EXPECT_EQ(r.status().message(), why) << jwt;
    }
  }

  static TempDir* dir_;
  static std::shared_ptr<const KeyRing> ring_;
  ManualClock clock_{kT0Ms};
  TokenService svc_{ring_, TokenConfig{}, clock_};
};
TempDir* TokenTest::dir_ = nullptr;
std::shared_ptr<const KeyRing> TokenTest::ring_;

TEST_F(TokenTest, IssueVerifyRoundTrip) {
  Claims issued;
  const std::string jwt = svc_.IssueAccess(0xabcdef, "phone-7", &issued);
  EXPECT_EQ(std::count(jwt.begin(), jwt.end(), '.'), 2);
  // Verified by a service that did not issue it, so in full, signature included.
  TokenService verifier(ring_, TokenConfig{}, clock_);
  auto r = verifier.Verify(jwt);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(verifier.verified_cache_hits(), 0u);
  EXPECT_EQ(r->user, 0xabcdefu);
  EXPECT_EQ(r->device_id, "phone-7");
  EXPECT_EQ(r->kid, Kid());
  EXPECT_EQ(r->iat, kT0);
  EXPECT_EQ(r->nbf, kT0);
  EXPECT_EQ(r->exp, kT0 + 900);
  EXPECT_EQ(r->session_id.size(), 32u);
  EXPECT_EQ(r->session_id, issued.session_id);
  EXPECT_EQ(issued.exp, r->exp);

  // Header and payload are what the README documents.
  auto parts = Split(jwt);
  ASSERT_EQ(parts.size(), 3u);
  std::string header, payload;
  ASSERT_TRUE(Base64UrlDecode(parts[0], &header));
  ASSERT_TRUE(Base64UrlDecode(parts[1], &payload));
  EXPECT_EQ(header, "{\"alg\":\"EdDSA\",\"typ\":\"JWT\",\"kid\":\"" + Kid() + "\"}");
  EXPECT_NE(payload.find("\"sub\":\"usr_0000000000abcdef\""), std::string::npos) << payload;
  EXPECT_NE(payload.find("\"iss\":\"switchboard\""), std::string::npos);
  EXPECT_NE(payload.find("\"aud\":\"switchboard\""), std::string::npos);
}

TEST_F(TokenTest, SessionIdIsFreshPerToken) {
  auto a = svc_.Verify(svc_.IssueAccess(1, "d"));
  auto b = svc_.Verify(svc_.IssueAccess(1, "d"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->session_id, b->session_id);
}

TEST_F(TokenTest, DeviceIdIsEscapedAndRoundTrips) {
  auto r = svc_.Verify(svc_.IssueAccess(5, "we\"ird\\dev"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->device_id, "we\"ird\\dev");
}

TEST_F(TokenTest, ExpiryHonoursLeeway) {
  const std::string jwt = svc_.IssueAccess(1, "d");  // exp = T0 + 900, leeway 30
  clock_.Set((kT0 + 900 + 29) * 1000 + 999);
  EXPECT_TRUE(svc_.Verify(jwt).ok()) << "within leeway must pass";
  clock_.Set((kT0 + 900 + 30) * 1000);
  ExpectReject(jwt, "expired");
  clock_.Set((kT0 + 5000) * 1000);
  ExpectReject(jwt, "expired");
}

TEST_F(TokenTest, AVerifiedTokenIsRememberedButItsTimesAreRechecked) {
  // Issued by another service (another node) with the same keys: new to svc_.
  TokenService issuer(ring_, TokenConfig{}, clock_);
  const std::string jwt = issuer.IssueAccess(7, "phone");
  const uint64_t h0 = svc_.verified_cache_hits();
  auto first = svc_.Verify(jwt);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(svc_.verified_cache_hits(), h0) << "the first presentation is verified in full";
  auto again = svc_.Verify(jwt);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(svc_.verified_cache_hits(), h0 + 1);
  EXPECT_EQ(again->user, first->user);
  EXPECT_EQ(again->device_id, "phone");
  EXPECT_EQ(again->session_id, first->session_id);
  EXPECT_EQ(again->exp, first->exp);
  // One byte different is another token: verified in full, and refused.
  std::string other = jwt;
  other.back() = other.back() == 'A' ? 'Q' : 'A';
  EXPECT_FALSE(svc_.Verify(other).ok());
  EXPECT_EQ(svc_.verified_cache_hits(), h0 + 1);
  // Expiry applies to a remembered token, and so does a clock that moves back.
  clock_.Set((kT0 + 900 + 30) * 1000);
  ExpectReject(jwt, "expired");
  clock_.Set(kT0Ms);
  EXPECT_TRUE(svc_.Verify(jwt).ok());
  // A refused token is not remembered: once valid, it is verified in full first.
  PayloadSpec p;
  p.nbf = kT0 + 31;
  const std::string early = Good(p);
  ExpectReject(early, "not yet valid");
  clock_.Set((kT0 + 60) * 1000);
  const uint64_t h1 = svc_.verified_cache_hits();
  EXPECT_TRUE(svc_.Verify(early).ok());
  EXPECT_EQ(svc_.verified_cache_hits(), h1);
  EXPECT_TRUE(svc_.Verify(early).ok());
  EXPECT_EQ(svc_.verified_cache_hits(), h1 + 1);
  clock_.Set(kT0Ms);
  ExpectReject(early, "not yet valid");
}

TEST_F(TokenTest, AFullMemoryKeepsTheTokensInUseAndForgetsTheOthers) {
  // A memory of 4 tokens: two generations of 2. Tokens from another service, so none
  // is remembered before its first presentation here.
  TokenConfig small;
  small.verified_tokens_max = 4;
  TokenService svc(ring_, small, clock_);
  TokenService issuer(ring_, TokenConfig{}, clock_);
  std::vector<std::string> t;
  for (int i = 0; i < 5; ++i) t.push_back(issuer.IssueAccess(10 + i, "phone"));
  auto hit = [&](const std::string& jwt) {
    const uint64_t h = svc.verified_cache_hits();
    EXPECT_TRUE(svc.Verify(jwt).ok());
    return svc.verified_cache_hits() == h + 1;
  };
  EXPECT_FALSE(hit(t[0]));  // verified in full, remembered
  EXPECT_TRUE(hit(t[0]));
  EXPECT_FALSE(hit(t[1]));  // the current generation is full: {0, 1}
  EXPECT_FALSE(hit(t[2]));  // {0, 1} become the previous one; current {2}
  EXPECT_TRUE(hit(t[0]));   // found in the previous one, moved back: current {2, 0}
  EXPECT_FALSE(hit(t[3]));  // {2, 0} previous, current {3}; 1 is forgotten
  EXPECT_TRUE(hit(t[0]));   // still remembered: in use
  EXPECT_TRUE(hit(t[2]));
  EXPECT_FALSE(hit(t[1]));  // verified in full again
  // A forgotten token is no weaker for it: a forged one is refused either way.
  std::string forged = t[4];
  forged.back() = forged.back() == 'A' ? 'Q' : 'A';
  EXPECT_FALSE(svc.Verify(forged).ok());
}

// IssueAccess remembers what it signed, after the same checks as any token, so the
// client's first connect costs no signature; the claims are those a full
// verification finds, and the token's times still apply.
TEST_F(TokenTest, ATokenThisServiceIssuedIsRememberedFromTheStart) {
  Claims issued;
  const std::string jwt = svc_.IssueAccess(9, "laptop", &issued);
  const uint64_t h0 = svc_.verified_cache_hits();
  auto first = svc_.Verify(jwt);
  ASSERT_TRUE(first.ok()) << first.status().message();
  EXPECT_EQ(svc_.verified_cache_hits(), h0 + 1) << "no signature check on first use";
  // A service that did not issue it verifies it in full and finds the same claims.
  TokenService other(ring_, TokenConfig{}, clock_);
  auto full = other.Verify(jwt);
  ASSERT_TRUE(full.ok()) << full.status().message();
  EXPECT_EQ(other.verified_cache_hits(), 0u);
  EXPECT_EQ(first->user, full->user);
  EXPECT_EQ(first->device_id, full->device_id);
  EXPECT_EQ(first->session_id, full->session_id);
  EXPECT_EQ(first->kid, full->kid);
  EXPECT_EQ(first->iat, full->iat);
  EXPECT_EQ(first->nbf, full->nbf);
  EXPECT_EQ(first->exp, full->exp);
  EXPECT_EQ(first->session_id, issued.session_id);
  // Its times are still checked.
  clock_.Set((kT0 + 900 + 30) * 1000);
  ExpectReject(jwt, "expired");
  clock_.Set(kT0Ms);
  // What a presented token would fail is not remembered at issue either: a device id
  // that is not UTF-8 makes a token every Verify refuses, this service's included.
  const std::string bad = svc_.IssueAccess(9, std::string("\xff\xfe"));
  EXPECT_FALSE(svc_.Verify(bad).ok());
  EXPECT_FALSE(other.Verify(bad).ok());
}

TEST_F(TokenTest, ZeroLeewayIsExact) {
  TokenConfig cfg;
  cfg.leeway_s = 0;
  TokenService svc(ring_, cfg, clock_);
  const std::string jwt = svc.IssueAccess(1, "d");
  clock_.Set((kT0 + 899) * 1000 + 999);
  EXPECT_TRUE(svc.Verify(jwt).ok());
  clock_.Set((kT0 + 900) * 1000);
  EXPECT_FALSE(svc.Verify(jwt).ok());
}

TEST_F(TokenTest, NotBeforeInFutureRejected) {
  PayloadSpec p;
  p.nbf = kT0 + 31;
  ExpectReject(Good(p), "not yet valid");
  p.nbf = kT0 + 30;  // within leeway
  EXPECT_TRUE(svc_.Verify(Good(p)).ok());
}

TEST_F(TokenTest, IssuedInFutureRejected) {
  PayloadSpec p;
  p.iat = kT0 + 120;
  p.exp = kT0 + 1000;
  ExpectReject(Good(p), "issued in the future");
  p.iat = kT0 + 30;
  EXPECT_TRUE(svc_.Verify(Good(p)).ok());
}

TEST_F(TokenTest, TokenFromSkewedIssuerWithinLeewayAccepted) {
  ManualClock ahead(kT0Ms + 20'000);  // issuing node 20 s ahead
  TokenService issuer(ring_, TokenConfig{}, ahead);
  EXPECT_TRUE(svc_.Verify(issuer.IssueAccess(9, "d")).ok());
}

TEST_F(TokenTest, WrongIssuerOrAudienceRejected) {
  PayloadSpec p;
  p.iss = "someone-else";
  ExpectReject(Good(p), "wrong iss");
  p = {};
  p.iss = "switchboard ";
  ExpectReject(Good(p), "wrong iss");
  p = {};
  p.aud_json = "\"other\"";
  ExpectReject(Good(p), "wrong aud");
  p.aud_json = "\"Switchboard\"";
  ExpectReject(Good(p), "wrong aud");
  p.aud_json = "[\"a\",\"b\"]";
  ExpectReject(Good(p), "wrong aud");
  p.aud_json = "[]";
  ExpectReject(Good(p), "wrong aud");
  p.aud_json = "[\"switchboard\",1]";
  ExpectReject(Good(p), "bad aud");
  p.aud_json = "7";
  ExpectReject(Good(p), "bad aud");
}

TEST_F(TokenTest, AudienceArrayContainingOursAccepted) {
  PayloadSpec p;
  p.aud_json = "[\"billing\",\"switchboard\"]";
  auto r = svc_.Verify(Good(p));
  EXPECT_TRUE(r.ok()) << r.status().message();
  p.aud_json = "[\"switchboard\"]";
  EXPECT_TRUE(svc_.Verify(Good(p)).ok());
}

TEST_F(TokenTest, CustomIssuerAndAudience) {
  TokenConfig cfg;
  cfg.issuer = "sb-eu";
  cfg.audience = "sb-chat";
  TokenService eu(ring_, cfg, clock_);
  const std::string jwt = eu.IssueAccess(3, "d");
  EXPECT_TRUE(eu.Verify(jwt).ok());
  EXPECT_FALSE(svc_.Verify(jwt).ok()) << "default service must not accept another issuer's tokens";
}

TEST_F(TokenTest, AlgNoneRejected) {
  const std::string payload = B64(PayloadSpec{}.Json());
  ExpectReject(B64("{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"" + Kid() + "\"}") + "." + payload + ".",
               "alg not allowed");
  ExpectReject(B64("{\"alg\":\"none\"}") + "." + payload + ".");
  ExpectReject(B64("{\"alg\":\"None\",\"kid\":\"" + Kid() + "\"}") + "." + payload + "." + B64(std::string(64, 'x')));
  ExpectReject(B64("{\"typ\":\"JWT\",\"kid\":\"" + Kid() + "\"}") + "." + payload + "." + B64(std::string(64, 'x')),
               "missing alg");
}

TEST_F(TokenTest, OtherAlgorithmsRejected) {
  for (const char* alg : {"HS256", "HS512", "RS256", "ES256", "PS256", "EdDSA ", "eddsa", "Ed25519", ""}) {
    const std::string input = B64(HeaderJson(alg, Kid())) + "." + B64(PayloadSpec{}.Json());
    ExpectReject(input + "." + B64(ring_->Sign(input)));
  }
  // alg must be a string.
  const std::string input = B64("{\"alg\":[\"EdDSA\"],\"kid\":\"" + Kid() + "\"}") + "." + B64(PayloadSpec{}.Json());
  ExpectReject(input + "." + B64(ring_->Sign(input)), "bad alg");
}

TEST_F(TokenTest, HmacWithPublicKeyAsSecretRejected) {
  // The classic algorithm-confusion forgery: HS256 keyed with the verifier's public key.
  const auto* pub = ring_->PublicKey(Kid());
  ASSERT_NE(pub, nullptr);
  const std::string pem_text = ReadFile(dir_->sub("keys") + "/" + Kid() + ".pem");
  for (const std::string& secret : {std::string(reinterpret_cast<const char*>(pub->data()), 32), pem_text}) {
    const std::string input = B64(HeaderJson("HS256", Kid())) + "." + B64(PayloadSpec{}.Json());
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, reinterpret_cast<const unsigned char*>(secret.data()), secret.size());
    crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(input.data()), input.size());
    crypto_auth_hmacsha256_final(&st, mac);
    ExpectReject(input + "." + B64(std::string_view(reinterpret_cast<const char*>(mac), sizeof mac)),
                 "alg not allowed");
  }
}

TEST_F(TokenTest, HeaderAlgSwapKeepsSignatureRejected) {
  const std::string jwt = svc_.IssueAccess(1, "d");
  auto parts = Split(jwt);
  for (const char* alg : {"HS256", "none", "ES256"}) {
    ExpectReject(B64(HeaderJson(alg, Kid())) + "." + parts[1] + "." + parts[2]);
  }
  // Even an equivalent EdDSA header with different bytes breaks the signature.
  ExpectReject(B64("{\"kid\":\"" + Kid() + "\",\"alg\":\"EdDSA\"}") + "." + parts[1] + "." + parts[2], "bad signature");
}

TEST_F(TokenTest, TamperedPayloadRejected) {
  const std::string jwt = svc_.IssueAccess(0x1111, "d");
  auto parts = Split(jwt);
  std::string payload;
  ASSERT_TRUE(Base64UrlDecode(parts[1], &payload));
  const std::string victim = FormatUserId(0x2222);
  payload.replace(payload.find(FormatUserId(0x1111)), victim.size(), victim);
  ExpectReject(parts[0] + "." + B64(payload) + "." + parts[2], "bad signature");

  // A flipped bit anywhere in the signature.
  std::string sig;
  ASSERT_TRUE(Base64UrlDecode(parts[2], &sig));
  for (size_t i : {size_t{0}, size_t{31}, size_t{32}, size_t{63}}) {
    std::string bad = sig;
    bad[i] ^= 0x01;
    ExpectReject(parts[0] + "." + parts[1] + "." + B64(bad), "bad signature");
  }
  // Signature bytes appended or dropped.
  ExpectReject(parts[0] + "." + parts[1] + "." + B64(sig + "x"), "bad signature encoding");
  ExpectReject(parts[0] + "." + parts[1] + "." + B64(sig.substr(0, 63)), "bad signature encoding");
}

TEST_F(TokenTest, UnknownOrMissingKidRejected) {
  const std::string payload = PayloadSpec{}.Json();
  const std::string input = B64(HeaderJson("EdDSA", "nope")) + "." + B64(payload);
  ExpectReject(input + "." + B64(ring_->Sign(input)), "unknown kid");
  const std::string input2 = B64("{\"alg\":\"EdDSA\",\"typ\":\"JWT\"}") + "." + B64(payload);
  ExpectReject(input2 + "." + B64(ring_->Sign(input2)), "missing kid");
  const std::string input3 = B64("{\"alg\":\"EdDSA\",\"kid\":7}") + "." + B64(payload);
  ExpectReject(input3 + "." + B64(ring_->Sign(input3)), "bad kid");
  const std::string input4 = B64("{\"alg\":\"EdDSA\",\"kid\":\"../" + Kid() + "\"}") + "." + B64(payload);
  ExpectReject(input4 + "." + B64(ring_->Sign(input4)), "unknown kid");
}

TEST_F(TokenTest, TokenFromAnotherKeyRingRejected) {
  TempDir other_dir;
  auto other = MustLoad(other_dir.sub("k"));
  ASSERT_NE(other, nullptr);
  TokenService foreign(other, TokenConfig{}, clock_);
  ExpectReject(foreign.IssueAccess(1, "d"), "unknown kid");
  // Same kid name, different key material: only the signature can tell them apart.
  const std::string input = B64(HeaderJson("EdDSA", Kid())) + "." + B64(PayloadSpec{}.Json());
  ExpectReject(input + "." + B64(other->Sign(input)), "bad signature");
}

TEST_F(TokenTest, TypMustBeJwtIfPresent) {
  const std::string payload = B64(PayloadSpec{}.Json());
  auto signed_with = [&](const std::string& header) {
    const std::string input = B64(header) + "." + payload;
    return input + "." + B64(ring_->Sign(input));
  };
  EXPECT_TRUE(svc_.Verify(signed_with("{\"alg\":\"EdDSA\",\"kid\":\"" + Kid() + "\"}")).ok());
  ExpectReject(signed_with("{\"alg\":\"EdDSA\",\"typ\":\"JWE\",\"kid\":\"" + Kid() + "\"}"), "bad typ");
  ExpectReject(signed_with("{\"alg\":\"EdDSA\",\"typ\":null,\"kid\":\"" + Kid() + "\"}"), "bad typ");
  ExpectReject(signed_with("{\"alg\":\"EdDSA\",\"crit\":[\"exp\"],\"kid\":\"" + Kid() + "\"}"), "crit not supported");
  // Duplicate members could make two parsers disagree about what was signed.
  ExpectReject(signed_with("{\"alg\":\"EdDSA\",\"alg\":\"none\",\"kid\":\"" + Kid() + "\"}"), "bad alg");
  ExpectReject(signed_with("{\"alg\":\"EdDSA\",\"kid\":\"" + Kid() + "\",\"kid\":\"x\"}"), "bad kid");
}

TEST_F(TokenTest, ClaimShapesAreStrict) {
  auto with = [&](const std::string& payload_json) {
    return Craft(*ring_, Kid(), HeaderJson("EdDSA", Kid()), payload_json);
  };
  const std::string base = PayloadSpec{}.Json();
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = base;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  EXPECT_TRUE(svc_.Verify(with(base)).ok());
  ExpectReject(with(replace("\"exp\":" + std::to_string(kT0 + 900), "\"exp\":" + std::to_string(kT0 + 900) + ".5")),
               "bad time claim");
  ExpectReject(with(replace("\"exp\":" + std::to_string(kT0 + 900), "\"exp\":\"" + std::to_string(kT0 + 900) + "\"")),
               "bad time claim");
  ExpectReject(with(replace("\"exp\":" + std::to_string(kT0 + 900), "\"exp\":18446744073709551615")),
               "bad time claim");
  ExpectReject(with(replace(",\"exp\":" + std::to_string(kT0 + 900), "")), "missing exp");
  ExpectReject(with(replace(",\"iat\":" + std::to_string(kT0), "")), "missing iat");
  ExpectReject(with(replace("\"sub\":\"usr_0000000000001234\",", "")), "missing sub");
  ExpectReject(with(replace("usr_0000000000001234", "usr_0000000000000000")), "bad sub");
  ExpectReject(with(replace("usr_0000000000001234", "usr_000000000000123G")), "bad sub");
  ExpectReject(with(replace("usr_0000000000001234", "conv_000000000001234")), "bad sub");
  ExpectReject(with(replace("\"iss\":\"switchboard\",", "")), "missing iss");
  ExpectReject(with(replace("\"aud\":\"switchboard\",", "")), "missing aud");
  ExpectReject(with(replace("\"did\":\"dev-1\",", "")), "missing did");
  ExpectReject(with(replace("\"sid\":\"0123456789abcdef0123456789abcdef\",", "")), "missing sid");
  ExpectReject(with(replace("\"sid\":\"0123456789abcdef0123456789abcdef\"", "\"sid\":\"\"")), "bad sid");
  ExpectReject(with(replace("\"iss\":\"switchboard\",", "\"iss\":\"switchboard\",\"iss\":\"switchboard\",")), "bad iss");
  ExpectReject(with(replace("\"sub\":\"usr_0000000000001234\",",
                            "\"sub\":\"usr_0000000000001234\",\"sub\":\"usr_0000000000009999\",")),
               "bad sub");
  ExpectReject(with(replace("\"exp\":", "\"exp\":1,\"exp\":")), "bad time claim");
  // A token valid for longer than it has existed is fine; one expiring before it was issued is not.
  PayloadSpec backwards;
  backwards.iat = kT0 + 20;
  backwards.exp = kT0 + 10;
  ExpectReject(with(backwards.Json()), "exp before iat");
  // Unknown claims are ignored (forward compatibility between node versions).
  EXPECT_TRUE(svc_.Verify(with(replace("{", "{\"future\":{\"x\":[1,2]},"))).ok());
  // Escaped member names are the same members.
  EXPECT_TRUE(svc_.Verify(with(replace("\"iss\"", "\"\\u0069ss\""))).ok());
}

TEST_F(TokenTest, ExtremeTimesDoNotOverflow) {
  PayloadSpec p;
  p.exp = INT64_MAX;
  EXPECT_TRUE(svc_.Verify(Good(p)).ok());
  p = {};
  p.exp = INT64_MIN;
  ExpectReject(Good(p), "expired");
  p = {};
  p.nbf = INT64_MAX;
  ExpectReject(Good(p), "not yet valid");
  p = {};
  p.iat = INT64_MIN;
  p.nbf = INT64_MIN;
  EXPECT_TRUE(svc_.Verify(Good(p)).ok());
}

TEST_F(TokenTest, MalformedTokensRejectedWithoutCrash) {
  const std::string jwt = svc_.IssueAccess(1, "d");
  auto parts = Split(jwt);
  const std::string& h = parts[0];
  const std::string& p = parts[1];
  const std::string& s = parts[2];
  const std::vector<std::string> bad = {
      "",
      ".",
      "..",
      "...",
      "abc",
      h,
      h + "." + p,
      h + "." + p + "." + s + "." + s,
      h + "." + p + "." + s + ".",
      "." + p + "." + s,
      h + ".." + s,
      h + "." + p + ".",
      h + "=." + p + "." + s,
      h + "." + p + "=." + s,
      h + "." + p + "." + s + "=",
      h + "." + p + "." + s + "==",
      h + "." + p + "." + s.substr(0, s.size() - 1),
      h + "." + p + "." + s + "A",
      h + "." + p + "+/." + s,
      h + "." + p + "." + s.substr(0, 10) + "!" + s.substr(11),
      h + " ." + p + "." + s,
      std::string(jwt).insert(5, std::string(1, '\0')),
      B64("not json") + "." + p + "." + s,
      B64("[1,2,3]") + "." + p + "." + s,
      B64("\"str\"") + "." + p + "." + s,
      B64("{\"alg\":\"EdDSA\"") + "." + p + "." + s,
      h + "." + B64("not json") + "." + s,
      h + "." + B64("[\"sub\",\"usr_0000000000000001\"]") + "." + s,
      h + "." + B64("null") + "." + s,
      h + "." + B64("{}") + "." + s,
      h + "." + B64("{\"iss\":\"\xff\xfe\"}") + "." + s,
      h + "." + B64(std::string(2500, '[')) + "." + s,
      std::string(kMaxTokenBytes + 1, 'A'),
      jwt + std::string(kMaxTokenBytes, 'A'),
      std::string(100000, '.'),
  };
  for (const auto& t : bad) ExpectReject(t);
  EXPECT_TRUE(svc_.Verify(jwt).ok()) << "original still fine";
}

TEST_F(TokenTest, NonCanonicalBase64Rejected) {
  // Flip the unused low bits of the final symbol: same bytes, different text. Accepting
  // it would mean two strings are "the same token", which breaks any dedup on token text.
  const std::string jwt = svc_.IssueAccess(1, "d");
  auto parts = Split(jwt);
  std::string s = parts[2];  // 64 bytes -> 86 chars, 4 unused bits at the end
  ASSERT_EQ(s.size(), 86u);
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const size_t v = alphabet.find(s.back());
  s.back() = alphabet[v | 1];
  ASSERT_NE(s, parts[2]);
  ExpectReject(parts[0] + "." + parts[1] + "." + s, "bad signature encoding");
}

TEST_F(TokenTest, RandomMutationsNeverCrashOrPass) {
  const std::string jwt = svc_.IssueAccess(77, "dev");
  std::mt19937 rng(12345);
  for (int i = 0; i < 3000; ++i) {
    std::string t = jwt;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % t.size();
      switch (rng() % 3) {
        case 0: t[pos] = static_cast<char>(rng() % 256); break;
        case 1: t.erase(pos, 1 + rng() % 3); break;
        default: t.insert(pos, 1, static_cast<char>(rng() % 256)); break;
      }
      if (t.empty()) t = "x";
    }
    if (t == jwt) continue;
    auto r = svc_.Verify(t);
    EXPECT_FALSE(r.ok()) << "mutated token accepted: " << t;
  }
}

TEST_F(TokenTest, ConcurrentVerifyAndIssue) {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const std::string jwt = svc_.IssueAccess(static_cast<UserId>(t * 1000 + i + 1), "d");
        auto r = svc_.Verify(jwt);
        if (!r.ok() || r->user != static_cast<UserId>(t * 1000 + i + 1)) {
          ADD_FAILURE() << (r.ok() ? "wrong user" : r.status().message());
          ++failures;
        }
        std::string forged = jwt;
        forged[forged.size() - 10] = forged[forged.size() - 10] == 'A' ? 'B' : 'A';
        if (svc_.Verify(forged).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

// Our signatures must be plain RFC 8032 Ed25519 as OpenSSL sees it, and vice versa,
// because keys are OpenSSL PEM files while signing and verifying use libsodium.
TEST_F(TokenTest, InteroperatesWithOpenSslEd25519) {
  const std::string pem = ReadFile(dir_->sub("keys") + "/" + Kid() + ".pem");
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  ASSERT_NE(pkey, nullptr);

  const std::string jwt = svc_.IssueAccess(42, "d");
  const size_t d2 = jwt.rfind('.');
  std::string sig;
  ASSERT_TRUE(Base64UrlDecode(jwt.substr(d2 + 1), &sig));
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ASSERT_EQ(EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, pkey), 1);
  EXPECT_EQ(EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                             reinterpret_cast<const unsigned char*>(jwt.data()), d2),
            1);
  EVP_MD_CTX_free(ctx);

  const std::string input = B64(HeaderJson("EdDSA", Kid())) + "." + B64(PayloadSpec{}.Json());
  unsigned char osig[64];
  size_t osig_len = sizeof osig;
  ctx = EVP_MD_CTX_new();
  ASSERT_EQ(EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, pkey), 1);
  ASSERT_EQ(EVP_DigestSign(ctx, osig, &osig_len, reinterpret_cast<const unsigned char*>(input.data()), input.size()), 1);
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(pkey);
  auto r = svc_.Verify(input + "." + B64(std::string_view(reinterpret_cast<const char*>(osig), osig_len)));
  EXPECT_TRUE(r.ok()) << r.status().message();
}

// ---- KeyRing -----------------------------------------------------------------------

TEST(KeyRingTest, LoadOrCreateCreatesThenReloadsSameKey) {
  TempDir tmp;
  const std::string dir = tmp.sub("a/b/keys");  // parents do not exist yet
  auto first = MustLoad(dir);
  ASSERT_NE(first, nullptr);
  ASSERT_EQ(first->kids().size(), 1u);
  const std::string kid = first->current_kid();
  EXPECT_TRUE(KeyRing::IsValidKid(kid));

  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir + "/" + kid + ".pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(ReadFile(dir + "/current"), kid + "\n");
  EXPECT_NE(ReadFile(dir + "/" + kid + ".pem").find("-----BEGIN PRIVATE KEY-----"), std::string::npos);

  auto second = MustLoad(dir);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->kids(), first->kids());
  EXPECT_EQ(second->current_kid(), kid);
  EXPECT_EQ(*second->PublicKey(kid), *first->PublicKey(kid));

  // Tokens survive a restart: one process issues, the reloaded one verifies.
  ManualClock clock(kT0Ms);
  TokenService a(first, TokenConfig{}, clock), b(second, TokenConfig{}, clock);
  EXPECT_TRUE(b.Verify(a.IssueAccess(1, "d")).ok());
}

TEST(KeyRingTest, RotationKeepsOldTokensValid) {
  TempDir tmp;
  const std::string dir = tmp.sub("keys");
  ManualClock clock(kT0Ms);
  auto old_ring = MustLoad(dir);
  TokenService old_svc(old_ring, TokenConfig{}, clock);
  const std::string old_token = old_svc.IssueAccess(1, "d");
  const std::string old_kid = old_ring->current_kid();

  auto new_kid = KeyRing::CreateKey(dir, /*make_current=*/true);
  ASSERT_TRUE(new_kid.ok()) << new_kid.status().message();
  ASSERT_NE(*new_kid, old_kid);
  auto ring = MustLoad(dir);
  EXPECT_EQ(ring->current_kid(), *new_kid);
  EXPECT_EQ(ring->kids().size(), 2u);

  TokenService svc(ring, TokenConfig{}, clock);
  auto r_old = svc.Verify(old_token);
  ASSERT_TRUE(r_old.ok()) << r_old.status().message();
  EXPECT_EQ(r_old->kid, old_kid);
  auto r_new = svc.Verify(svc.IssueAccess(2, "d"));
  ASSERT_TRUE(r_new.ok());
  EXPECT_EQ(r_new->kid, *new_kid);

  // Retiring the old key (after its tokens expired) makes its tokens unknown.
  ASSERT_TRUE(fs::remove(dir + "/" + old_kid + ".pem"));
  TokenService retired(MustLoad(dir), TokenConfig{}, clock);
  EXPECT_FALSE(retired.Verify(old_token).ok());
  EXPECT_TRUE(retired.Verify(svc.IssueAccess(3, "d")).ok());
}

TEST(KeyRingTest, StagedKeyVerifiesBeforeItSigns) {
  // Multi-node rotation: distribute the key first (not current), switch 'current' later.
  TempDir tmp;
  const std::string dir = tmp.sub("keys");
  auto ring1 = MustLoad(dir);
  auto staged = KeyRing::CreateKey(dir, /*make_current=*/false);
  ASSERT_TRUE(staged.ok());
  auto ring2 = MustLoad(dir);
  EXPECT_EQ(ring2->current_kid(), ring1->current_kid());
  EXPECT_TRUE(ring2->HasKid(*staged));
}

TEST(KeyRingTest, WithoutCurrentFileNewestMtimeSigns) {
  TempDir tmp;
  const std::string dir = tmp.sub("keys");
  auto k1 = KeyRing::CreateKey(dir, false);
  auto k2 = KeyRing::CreateKey(dir, false);
  ASSERT_TRUE(k1.ok() && k2.ok());
  const std::string p1 = dir + "/" + *k1 + ".pem", p2 = dir + "/" + *k2 + ".pem";
  struct timespec older[2] = {{1000, 0}, {1000, 0}}, newer[2] = {{2000, 0}, {2000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, p1.c_str(), newer, 0), 0);
  ASSERT_EQ(::utimensat(AT_FDCWD, p2.c_str(), older, 0), 0);
  EXPECT_EQ(MustLoad(dir)->current_kid(), *k1);
  ASSERT_EQ(::utimensat(AT_FDCWD, p1.c_str(), older, 0), 0);
  ASSERT_EQ(::utimensat(AT_FDCWD, p2.c_str(), newer, 0), 0);
  EXPECT_EQ(MustLoad(dir)->current_kid(), *k2);
}

TEST(KeyRingTest, OpenSslGeneratedKeyFileLoads) {
  // Operators may create keys with `openssl genpkey -algorithm ed25519`.
  TempDir tmp;
  EVP_PKEY* pkey = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  ASSERT_NE(pkey, nullptr);
  FILE* f = fopen(tmp.sub("ops-2026_a.pem").c_str(), "w");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(PEM_write_PrivateKey(f, pkey, nullptr, nullptr, 0, nullptr, nullptr), 1);
  fclose(f);
  ::chmod(tmp.sub("ops-2026_a.pem").c_str(), 0600);
  unsigned char pub[32];
  size_t len = sizeof pub;
  ASSERT_EQ(EVP_PKEY_get_raw_public_key(pkey, pub, &len), 1);
  EVP_PKEY_free(pkey);
  auto ring = MustLoad(tmp.path());
  ASSERT_NE(ring, nullptr);
  EXPECT_EQ(ring->current_kid(), "ops-2026_a");
  EXPECT_EQ(0, std::memcmp(ring->PublicKey("ops-2026_a")->data(), pub, 32));
}

TEST(KeyRingTest, BadKeyDirectoriesFailLoudly) {
  {
    TempDir tmp;  // a .pem that is not a key
    std::ofstream(tmp.sub("k1.pem")) << "garbage";
    auto r = KeyRing::LoadOrCreate(tmp.path());
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kInternal);
  }
  {
    TempDir tmp;  // a non-Ed25519 key
    EVP_PKEY* pkey = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    ASSERT_NE(pkey, nullptr);
    FILE* f = fopen(tmp.sub("ec.pem").c_str(), "w");
    ASSERT_EQ(PEM_write_PrivateKey(f, pkey, nullptr, nullptr, 0, nullptr, nullptr), 1);
    fclose(f);
    EVP_PKEY_free(pkey);
    auto r = KeyRing::LoadOrCreate(tmp.path());
    EXPECT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("Ed25519"), std::string::npos) << r.status().message();
  }
  {
    TempDir tmp;  // a key file name that is not a valid kid
    ASSERT_TRUE(KeyRing::CreateKey(tmp.path(), false).ok());
    for (const auto& e : fs::directory_iterator(tmp.path()))
      if (e.path().extension() == ".pem") fs::rename(e.path(), tmp.sub("bad kid.pem"));
    EXPECT_FALSE(KeyRing::LoadOrCreate(tmp.path()).ok());
  }
  {
    TempDir tmp;  // 'current' names a key that is not there
    ASSERT_TRUE(KeyRing::CreateKey(tmp.path(), true).ok());
    std::ofstream(tmp.sub("current")) << "k-missing\n";
    EXPECT_FALSE(KeyRing::LoadOrCreate(tmp.path()).ok());
  }
  {
    TempDir tmp;  // unrelated files are ignored, and do not stop key creation
    std::ofstream(tmp.sub("README")) << "keys live here";
    std::ofstream(tmp.sub(".k1.pem.tmp")) << "half-written";
    auto r = KeyRing::LoadOrCreate(tmp.path());
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ((*r)->kids().size(), 1u);
  }
  {
    TempDir tmp;  // a key "dir" that is a file is an error, not an empty ring to fill
    std::ofstream(tmp.sub("keys")) << "oops";
    auto r = KeyRing::LoadOrCreate(tmp.sub("keys"));
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kInternal);
  }
  {
    TempDir tmp;  // Load alone never creates
    auto r = KeyRing::Load(tmp.sub("empty"));
    EXPECT_EQ(r.status().code(), Code::kNotFound);
    EXPECT_FALSE(fs::exists(tmp.sub("empty")));
  }
}

TEST(KeyRingTest, KidRules) {
  EXPECT_TRUE(KeyRing::IsValidKid("k20261129-0a1b2c3d"));
  EXPECT_TRUE(KeyRing::IsValidKid("A_z-9"));
  EXPECT_FALSE(KeyRing::IsValidKid(""));
  EXPECT_FALSE(KeyRing::IsValidKid("a.b"));
  EXPECT_FALSE(KeyRing::IsValidKid("a/b"));
  EXPECT_FALSE(KeyRing::IsValidKid(std::string(65, 'a')));
  EXPECT_TRUE(KeyRing::IsValidKid(std::string(64, 'a')));
}

// ---- base64url -------------------------------------------------------------------

TEST(AuthBase64Test, RoundTripsAndIsStrict) {
  std::mt19937 rng(7);
  for (size_t n = 0; n < 70; ++n) {
    std::string raw(n, '\0');
    for (auto& c : raw) c = static_cast<char>(rng());
    const std::string enc = Base64UrlEncode(raw);
    EXPECT_EQ(enc.find('='), std::string::npos);
    EXPECT_EQ(enc.size(), (n * 4 + 2) / 3);
    std::string dec;
    ASSERT_TRUE(Base64UrlDecode(enc, &dec)) << enc;
    EXPECT_EQ(dec, raw);
  }
  EXPECT_EQ(Base64UrlEncode("\xfb\xff"), "-_8");
  std::string out;
  EXPECT_TRUE(Base64UrlDecode("", &out));
  EXPECT_FALSE(Base64UrlDecode("A", &out));       // 1 mod 4 is never valid
  EXPECT_FALSE(Base64UrlDecode("AB==", &out));    // padding
  EXPECT_FALSE(Base64UrlDecode("AB=", &out));
  EXPECT_FALSE(Base64UrlDecode("+/8", &out));     // standard alphabet
  EXPECT_FALSE(Base64UrlDecode("AB C", &out));
  EXPECT_FALSE(Base64UrlDecode("AB\n", &out));
  EXPECT_TRUE(Base64UrlDecode("AA", &out));
  EXPECT_FALSE(Base64UrlDecode("AB", &out));      // non-zero trailing bits
  EXPECT_TRUE(Base64UrlDecode("AAA", &out));
  EXPECT_FALSE(Base64UrlDecode("AAB", &out));
  EXPECT_TRUE(Base64UrlDecode("AAE", &out));      // 'E' = 4: low 2 bits clear
}

// ---- refresh tokens ----------------------------------------------------------------

TEST(AuthRefreshTokenTest, ShapeHashAndUniqueness) {
  const std::string a = NewRefreshToken(), b = NewRefreshToken();
  EXPECT_EQ(a.size(), 43u);
  EXPECT_NE(a, b);
  EXPECT_TRUE(IsWellFormedRefreshToken(a));
  for (char c : a) EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') << a;
  std::string raw;
  ASSERT_TRUE(Base64UrlDecode(a, &raw));
  EXPECT_EQ(raw.size(), 32u);

  const std::string ha = HashRefreshToken(a);
  EXPECT_EQ(ha.size(), 32u);
  EXPECT_EQ(ha, HashRefreshToken(a));
  EXPECT_NE(ha, HashRefreshToken(b));
  // SHA-256("abc"), FIPS 180-2 test vector.
  const std::string h = HashRefreshToken("abc");
  static const unsigned char kAbc[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                                         0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                                         0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
  EXPECT_EQ(0, std::memcmp(h.data(), kAbc, 32));

  EXPECT_FALSE(IsWellFormedRefreshToken(""));
  EXPECT_FALSE(IsWellFormedRefreshToken(a.substr(0, 42)));
  EXPECT_FALSE(IsWellFormedRefreshToken(a + "A"));
  EXPECT_FALSE(IsWellFormedRefreshToken(std::string(42, 'A') + "="));
}

// ---- passwords ---------------------------------------------------------------------

constexpr PasswordParams kFast{1, 8192};

TEST(PasswordTest, HashVerify) {
  auto h = HashPassword("correct horse battery staple", kFast);
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->rfind("$argon2id$v=19$m=8192,t=1,p=1$", 0), 0u) << *h;
  EXPECT_TRUE(VerifyPassword(*h, "correct horse battery staple"));
  EXPECT_FALSE(VerifyPassword(*h, "correct horse battery stapl"));
  EXPECT_FALSE(VerifyPassword(*h, "Correct horse battery staple"));
  EXPECT_FALSE(VerifyPassword(*h, ""));
  // Salted: the same password hashes differently each time.
  auto h2 = HashPassword("correct horse battery staple", kFast);
  ASSERT_TRUE(h2.ok());
  EXPECT_NE(*h, *h2);
  EXPECT_TRUE(VerifyPassword(*h2, "correct horse battery staple"));
}

TEST(PasswordTest, BinaryAndUnicodePasswords) {
  const std::string pw = std::string("p\0ss", 4) + "\xc3\xa9\xe2\x82\xac";
  auto h = HashPassword(pw, kFast);
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(VerifyPassword(*h, pw));
  EXPECT_FALSE(VerifyPassword(*h, "p"));  // an embedded NUL must not truncate
}

TEST(PasswordTest, RejectsBadInputs) {
  EXPECT_EQ(HashPassword("", kFast).status().code(), Code::kBadRequest);
  EXPECT_EQ(HashPassword(std::string(kMaxPasswordBytes + 1, 'a'), kFast).status().code(), Code::kBadRequest);
  EXPECT_TRUE(HashPassword(std::string(kMaxPasswordBytes, 'a'), kFast).ok());
  EXPECT_EQ(HashPassword("pw", PasswordParams{0, 8192}).status().code(), Code::kBadRequest);
  EXPECT_EQ(HashPassword("pw", PasswordParams{1, 4}).status().code(), Code::kBadRequest);

  auto h = HashPassword("pw", kFast);
  ASSERT_TRUE(h.ok());
  EXPECT_FALSE(VerifyPassword("", "pw"));
  EXPECT_FALSE(VerifyPassword("garbage", "pw"));
  EXPECT_FALSE(VerifyPassword(h->substr(0, h->size() - 3), "pw"));
  EXPECT_FALSE(VerifyPassword(*h + std::string(200, 'A'), "pw"));
  EXPECT_FALSE(VerifyPassword(std::string(*h).insert(5, std::string(1, '\0')), "pw"));
  // argon2i (not id) hashes are refused even when they match.
  char i_hash[crypto_pwhash_STRBYTES];
  ASSERT_EQ(crypto_pwhash_str_alg(i_hash, "pw", 2, 3, 8192, crypto_pwhash_ALG_ARGON2I13), 0);
  EXPECT_FALSE(VerifyPassword(i_hash, "pw"));
}

TEST(PasswordTest, NeedsRehash) {
  auto h = HashPassword("pw", kFast);
  ASSERT_TRUE(h.ok());
  EXPECT_FALSE(PasswordNeedsRehash(*h, kFast));
  EXPECT_TRUE(PasswordNeedsRehash(*h, PasswordParams{}));
  EXPECT_TRUE(PasswordNeedsRehash("garbage", kFast));
}

TEST(PasswordTest, DefaultsAreOwaspArgon2idMinimum) {
  PasswordParams p;
  EXPECT_EQ(p.ops, 2u);
  EXPECT_EQ(p.mem_kib, 19456u);
}

}  // namespace
}  // namespace sb::auth
