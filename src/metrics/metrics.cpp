#include "metrics/metrics.h"

#include <cstdio>

namespace sb::metrics {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0);
}

void Histogram::Observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  if (v > 0) sum_micro_.fetch_add(static_cast<uint64_t>(v * 1e6), std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::Counts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) out[i] = counts_[i].load(std::memory_order_relaxed);
  return out;
}
double Histogram::Sum() const { return static_cast<double>(sum_micro_.load()) / 1e6; }
uint64_t Histogram::Count() const { return count_.load(std::memory_order_relaxed); }

namespace {

void Head(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void Num(std::string& out, double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  out += buf;
}

void RenderCounter(std::string& out, const char* name, const char* help, uint64_t v) {
  Head(out, name, "counter", help);
  out += name;
  out += ' ';
  out += std::to_string(v);
  out += '\n';
}

void RenderGauge(std::string& out, const char* name, const char* help, int64_t v) {
  Head(out, name, "gauge", help);
  out += name;
  out += ' ';
  out += std::to_string(v);
  out += '\n';
}

void RenderHistogram(std::string& out, const char* name, const char* help, const Histogram& h) {
  Head(out, name, "histogram", help);
  auto counts = h.Counts();
  uint64_t cum = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    cum += counts[i];
    out += name;
    out += "_bucket{le=\"";
    if (i < h.bounds().size()) Num(out, h.bounds()[i]);
    else out += "+Inf";
    out += "\"} ";
    out += std::to_string(cum);
    out += '\n';
  }
  out += name;
  out += "_sum ";
  Num(out, h.Sum());
  out += '\n';
  out += name;
  out += "_count ";
  out += std::to_string(cum);
  out += '\n';
}

}  // namespace

std::string ServerMetrics::Render() const {
  std::string out;
  out.reserve(8192);
  RenderGauge(out, "switchboard_connections", "Open WebSocket connections.", connections.Value());
  RenderCounter(out, "switchboard_connections_total", "WebSocket connections accepted.",
                connections_total.Value());
  RenderCounter(out, "switchboard_frames_in_total", "WebSocket frames received.", frames_in.Value());
  RenderCounter(out, "switchboard_frames_out_total", "WebSocket frames sent.", frames_out.Value());
  RenderCounter(out, "switchboard_frame_errors_total", "Client frames answered with an error.",
                frame_errors.Value());
  RenderCounter(out, "switchboard_messages_acked_total", "Messages stored and acknowledged.",
                messages_acked.Value());
  RenderCounter(out, "switchboard_messages_duplicate_total",
                "Retries answered from the dedup window (stored once).", messages_duplicate.Value());
  RenderCounter(out, "switchboard_deliveries_total", "message frames queued to devices.",
                deliveries.Value());
  RenderGauge(out, "switchboard_search_backlog",
              "Committed messages waiting for the search indexer (search lags by this many).",
              search_backlog.Value());
  RenderGauge(out, "switchboard_search_yielding",
              "1 while the search indexer pauses because the CPU is saturated (it catches up after).",
              search_yielding.Value());
  RenderGauge(out, "switchboard_bulk_backlog",
              "Group-delivery member visits waiting in the bulkhead lanes.", bulk_backlog.Value());
  RenderCounter(out, "switchboard_send_queue_overflows_total",
                "Connections closed because their send queue overflowed.",
                send_queue_overflows.Value());
  RenderCounter(out, "switchboard_http_requests_total", "HTTP requests served.", http_requests.Value());
  RenderCounter(out, "switchboard_upgrades_rejected_total", "WebSocket upgrades refused.",
                upgrades_rejected.Value());
  RenderCounter(out, "switchboard_connections_refused_total",
                "TCP connections closed at accept: too many new connections from one address.",
                connections_refused.Value());
  RenderCounter(out, "switchboard_tls_handshake_failures_total",
                "TLS handshakes that failed (bad client hello, untrusted or plain-HTTP clients).",
                tls_handshake_failures.Value());
  RenderCounter(out, "switchboard_resumes_total", "resume requests completed.", resumes.Value());
  RenderCounter(out, "switchboard_replayed_messages_total", "Messages sent by resume replays.",
                replayed_messages.Value());
  RenderCounter(out, "switchboard_receipts_stored_total", "Receipt or cursor changes committed.",
                receipts_stored.Value());
  RenderCounter(out, "switchboard_receipts_routed_total", "message_receipt frames routed to senders.",
                receipts_routed.Value());
  RenderCounter(out, "switchboard_presence_changes_total", "Online/offline announcements.",
                presence_changes.Value());
  RenderCounter(out, "switchboard_typing_relayed_total", "typing state changes relayed.",
                typing_relayed.Value());
  RenderCounter(out, "switchboard_attachments_swept_total",
                "Attachments no message referenced, deleted after store.unreferenced_attachment_ttl_s.",
                attachments_swept.Value());
  RenderCounter(out, "switchboard_attachment_bytes_swept_total", "Bytes of the attachments swept.",
                attachment_bytes_swept.Value());
  RenderHistogram(out, "switchboard_ack_latency_seconds",
                  "From a send_message frame's arrival to its message_ack being queued.",
                  ack_latency_seconds);
  RenderHistogram(out, "switchboard_send_owner_wait_seconds",
                  "From a send_message frame's arrival to its conversation's shard taking it up.",
                  send_owner_wait_seconds);
  RenderHistogram(out, "switchboard_commit_queue_wait_seconds",
                  "From a message or receipt change being queued to its group commit starting.",
                  commit_queue_wait_seconds);
  RenderHistogram(out, "switchboard_commit_return_wait_seconds",
                  "From a group commit's end to its conversation's shard handling the result.",
                  commit_return_wait_seconds);
  RenderHistogram(out, "switchboard_store_commit_seconds", "Duration of one group commit.",
                  store_commit_seconds);
  RenderHistogram(out, "switchboard_store_commit_batch_size", "Messages per group commit.",
                  store_commit_batch_size);
  return out;
}

ServerMetrics& Server() {
  static ServerMetrics m;
  return m;
}

}  // namespace sb::metrics
