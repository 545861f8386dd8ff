// Process metrics in Prometheus text format. Counters, gauges and histograms are
// lock-free (relaxed atomics) so the hot path pays a few nanoseconds; the registry is
// built once at start-up and rendered on each scrape of GET /metrics.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sb::metrics {

class Counter {
 public:
  void Inc(uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

class Gauge {
 public:
  void Add(int64_t n) { v_.fetch_add(n, std::memory_order_relaxed); }
  void Set(int64_t n) { v_.store(n, std::memory_order_relaxed); }
  int64_t Value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> v_{0};
};

// Cumulative buckets with fixed upper bounds, in the unit the name says.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Per-bucket (non-cumulative) counts; the last is +Inf.
  std::vector<uint64_t> Counts() const;
  double Sum() const;
  uint64_t Count() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<uint64_t> sum_micro_{0};  // sum * 1e6, so it can be an integer atomic
  std::atomic<uint64_t> count_{0};
};

// Bucket bounds of the send-path stage histograms, seconds: 50 us to 1 s.
inline std::vector<double> StageBoundsSeconds() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
}

// The metrics this server exports. One instance per process.
struct ServerMetrics {
  Gauge connections;
  Counter connections_total;
  Counter frames_in;
  Counter frames_out;
  Counter frame_errors;
  Counter messages_acked;
  Counter messages_duplicate;
  Counter deliveries;
  Gauge search_backlog;  // committed messages not yet in the search index
  Gauge search_yielding;  // 1 while the search indexer pauses for the CPU
  Gauge bulk_backlog;  // group-delivery member visits waiting in the bulk lanes
  Counter send_queue_overflows;
  Counter http_requests;
  Counter upgrades_rejected;
  Counter connections_refused;
  Counter tls_handshake_failures;  // includes plain HTTP sent to a TLS port
  Counter resumes;
  Counter replayed_messages;
  Counter receipts_stored;
  Counter receipts_routed;
  Counter presence_changes;
  Counter typing_relayed;
  Counter attachments_swept;       // unreferenced attachments deleted (AttachmentStore::Sweep)
  Counter attachment_bytes_swept;
  Histogram ack_latency_seconds{{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                 0.05, 0.1, 0.25, 0.5, 1, 2.5}};
  // Where a message's time goes inside the server (their sum is about the ack latency):
  // the hop to its conversation's shard, the wait for a group commit, and the hop back
  // from the commit thread to that shard once the commit is durable.
  Histogram send_owner_wait_seconds{StageBoundsSeconds()};
  Histogram commit_queue_wait_seconds{StageBoundsSeconds()};
  Histogram commit_return_wait_seconds{StageBoundsSeconds()};
  Histogram store_commit_seconds{{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                  0.05, 0.1, 0.25, 1}};
  Histogram store_commit_batch_size{{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096}};
  Counter store_commits;
  Counter store_commit_messages;

  std::string Render() const;
};

ServerMetrics& Server();

}  // namespace sb::metrics
