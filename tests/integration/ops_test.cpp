// Health, readiness and metrics endpoints (docs/protocol.md: Transport).
#include <map>
#include <sstream>

#include "test_support.h"

namespace sb::test {
namespace {

using client::HttpResponse;

class OpsTest : public SharedServerTest {};

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
  TestUser a, b;
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "meta", &a));
  ASSERT_NO_FATAL_FAILURE(CreateUser(api, "metb", &b));
  std::string conv;
  ASSERT_NO_FATAL_FAILURE(CreateDirect(api, a, b, &conv));
  WsClient ws;
  ASSERT_NO_FATAL_FAILURE(ConnectWs(api, a, &ws));
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

}  // namespace
}  // namespace sb::test
