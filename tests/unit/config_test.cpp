#include <gtest/gtest.h>

#include <fstream>

#include "server/config.h"

namespace sb::server {
namespace {

TEST(Config, SetKeyParsesAndValidates) {
  Config c;
  EXPECT_TRUE(SetConfigKey(c, "server.listen", "0.0.0.0:9000").ok());
  EXPECT_EQ(c.listen, "0.0.0.0:9000");
  EXPECT_TRUE(SetConfigKey(c, "limits.max_content_bytes", "1000").ok());
  EXPECT_EQ(c.limits.max_content_bytes, 1000u);
  EXPECT_EQ(SetConfigKey(c, "limits.max_content_bytes", "lots").code(), Code::kBadRequest);
  EXPECT_EQ(SetConfigKey(c, "limits.max_content_bytes", "1").code(), Code::kBadRequest);
  EXPECT_EQ(SetConfigKey(c, "nope.nothing", "1").code(), Code::kBadRequest);
  EXPECT_TRUE(SetConfigKey(c, "store.fsync", "sometimes").ok());
  EXPECT_FALSE(Validate(c).ok());
  c = Config{};
  EXPECT_TRUE(SetConfigKey(c, "server.trusted_proxies", "10.0.0.0/8, ::1").ok());
  EXPECT_TRUE(Validate(c).ok());
  EXPECT_TRUE(SetConfigKey(c, "server.trusted_proxies", "10.0.0.0/8, proxy.internal").ok());
  Status s = Validate(c);
  EXPECT_EQ(s.code(), Code::kBadRequest);
  EXPECT_NE(s.message().find("proxy.internal"), std::string::npos) << s.message();
}

TEST(Config, FileThenEnvironmentThenFlags) {
  std::string path = "/tmp/sb_config_test.toml";
  {
    std::ofstream f(path);
    f << "[server]\nlisten = \"127.0.0.1:7000\"\nshards = 3\n[store]\nfsync = \"none\"\n";
  }
  Config c;
  ASSERT_TRUE(LoadConfigFile(c, path).ok());
  EXPECT_EQ(c.listen, "127.0.0.1:7000");
  EXPECT_EQ(c.shards, 3u);
  EXPECT_EQ(c.fsync, "none");
  std::string e1 = "SWITCHBOARD_SERVER_LISTEN=127.0.0.1:7001", e2 = "SWITCHBOARD_STORE_DATA_DIR=/x", e3 = "OTHER=1";
  char* env[] = {e1.data(), e2.data(), e3.data(), nullptr};
  ASSERT_TRUE(ApplyEnvironment(c, env).ok());
  EXPECT_EQ(c.listen, "127.0.0.1:7001");
  EXPECT_EQ(c.data_dir, "/x");
  EXPECT_TRUE(Validate(c).ok());
  std::remove(path.c_str());
}

TEST(Config, BadFileIsAClearError) {
  std::string path = "/tmp/sb_config_bad.toml";
  {
    std::ofstream f(path);
    f << "[server\nlisten=";
  }
  Config c;
  Status s = LoadConfigFile(c, path);
  EXPECT_EQ(s.code(), Code::kBadRequest);
  EXPECT_NE(s.message().find(path), std::string::npos);
  std::remove(path.c_str());
}

TEST(Config, TlsNeedsCertificateAndKeyTogether) {
  Config c;
  EXPECT_TRUE(Validate(c).ok()) << "plain HTTP by default";
  ASSERT_TRUE(SetConfigKey(c, "tls.cert_file", "/etc/switchboard/cert.pem").ok());
  Status s = Validate(c);
  EXPECT_EQ(s.code(), Code::kBadRequest);
  EXPECT_NE(s.message().find("tls.key_file"), std::string::npos) << s.message();
  std::string e = "SWITCHBOARD_TLS_KEY_FILE=/etc/switchboard/key.pem";
  char* env[] = {e.data(), nullptr};
  ASSERT_TRUE(ApplyEnvironment(c, env).ok());
  EXPECT_EQ(c.tls_key_file, "/etc/switchboard/key.pem");
  EXPECT_TRUE(Validate(c).ok());
  EXPECT_EQ(c.tls_min_version, "1.2");
  ASSERT_TRUE(SetConfigKey(c, "tls.min_version", "1.1").ok());
  EXPECT_EQ(Validate(c).code(), Code::kBadRequest);
  ASSERT_TRUE(SetConfigKey(c, "tls.min_version", "1.3").ok());
  EXPECT_TRUE(Validate(c).ok());
}

TEST(Config, EveryKeyHasHelpAndRoundTripsItsDefault) {
  for (auto& k : ConfigKeys()) {
    EXPECT_FALSE(k.help.empty()) << k.key;
    Config c;
    EXPECT_TRUE(SetConfigKey(c, k.key, k.default_value).ok()) << k.key << "=" << k.default_value;
  }
}

}  // namespace
}  // namespace sb::server
