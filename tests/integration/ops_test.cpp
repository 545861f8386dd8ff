// Health, readiness and metrics endpoints (docs/protocol.md: Transport).
#include <map>
#include <sstream>

#include "test_support.h"

namespace sb::test {
namespace {

using client::HttpResponse;

class OpsTest : public SharedServerTest {
 protected:
  // Two new users ("<prefix>a", "<prefix>b") in a direct conversation; the first one's
  // socket is open.
  void OneSocketInAConversation(const RestClient& api, const std::string& prefix, std::string* conv, WsClient* ws) {
    TestUser a, b;
    ASSERT_NO_FATAL_FAILURE(CreateUser(api, prefix + "a", &a));
    ASSERT_NO_FATAL_FAILURE(CreateUser(api, prefix + "b", &b));
    ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, conv));
    ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a, ws));
  }
};

// Prometheus text format: sum of the samples of each metric name over its label sets.
std::map<std::string, double> ParseMetrics(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    size_t name_end = line.find_first_of("{ ");
    if (name_end == std::string::npos) continue;
    std::string name = line.substr(0, name_end);
    size_t value_start = line[name_end] == '{' ? line.find("} ", name_end) : name_end;
    if (value_start == std::string::npos) continue;
    std::istringstream rest(line.substr(line.find(' ', value_start) + 1));
    double v = 0;
    if (rest >> v) out[name] += v;
  }
  return out;
}

TEST_F(OpsTest, HealthAndReadinessAre200) {
  RestClient api = Api();
  HttpResponse h = api.Request("GET", "/healthz");
  EXPECT_EQ(h.status, 200) << "/healthz: " << h.Describe();
  HttpResponse r = api.Request("GET", "/readyz");
  EXPECT_EQ(r.status, 200) << "/readyz: " << r.Describe();
}

TEST_F(OpsTest, MetricsCountConnectionsAndAcks) {
  RestClient api = Api();
  std::string conv;
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(OneSocketInAConversation(api, "met", &conv, &ws));
  Json ack;
  ASSERT_NO_FATAL_FAILURE(SendAndAck(ws, conv, "count me", &ack));

  HttpResponse m = api.Request("GET", "/metrics");
  ASSERT_EQ(m.status, 200) << m.Describe();
  std::map<std::string, double> metrics = ParseMetrics(m.body);
  ASSERT_TRUE(metrics.count("switchboard_connections")) << m.Describe();
  EXPECT_GE(metrics["switchboard_connections"], 1) << "one socket is open";
  ASSERT_TRUE(metrics.count("switchboard_messages_acked_total")) << m.Describe();
  EXPECT_GE(metrics["switchboard_messages_acked_total"], 1) << "one message was acknowledged";
}

// The stage histograms split a message's time inside the server: each send is counted
// once on its way to the conversation's shard, and that hop lies inside its ack latency.
TEST_F(OpsTest, MetricsSplitAMessagesTimeIntoStages) {
  RestClient api = Api();
  std::string conv;
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(OneSocketInAConversation(api, "stg", &conv, &ws));

  HttpResponse before = api.Request("GET", "/metrics");
  ASSERT_EQ(before.status, 200) << before.Describe();
  std::map<std::string, double> m0 = ParseMetrics(before.body);
  Json ack;
  ASSERT_NO_FATAL_FAILURE(SendAndAck(ws, conv, "time me", &ack));
  HttpResponse after = api.Request("GET", "/metrics");
  ASSERT_EQ(after.status, 200) << after.Describe();
  std::map<std::string, double> m1 = ParseMetrics(after.body);

  auto delta = [&](const std::string& name) { return m1[name] - m0[name]; };
  for (const char* h : {"switchboard_send_owner_wait_seconds", "switchboard_commit_queue_wait_seconds",
                        "switchboard_commit_return_wait_seconds"})
    ASSERT_TRUE(m1.count(std::string(h) + "_count")) << h << " missing:\n" << after.body;
  EXPECT_EQ(delta("switchboard_send_owner_wait_seconds_count"), 1) << "one send reached its shard";
  EXPECT_GE(delta("switchboard_commit_queue_wait_seconds_count"), 1) << "the message waited for a commit";
  EXPECT_GE(delta("switchboard_commit_return_wait_seconds_count"), 1) << "a commit came back to the shard";
  EXPECT_EQ(delta("switchboard_ack_latency_seconds_count"), 1);
  EXPECT_LE(delta("switchboard_send_owner_wait_seconds_sum"), delta("switchboard_ack_latency_seconds_sum") + 1e-6)
      << "the hop to the shard is part of the ack latency";
}

}  // namespace
}  // namespace sb::test
