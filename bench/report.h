// The report pieces bench/loadgen.cpp and bench/xmpp_loadgen.cpp print and write alike:
// latency and counter summaries for stdout, and the JSON objects of the result files
// (latency in microseconds, counters, per-thread CPU, the machine, the traffic figures of
// one class of senders), so the two tools' results compare field by field.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/json_writer.h"
#include "histogram.h"
#include "loadgen_common.h"
#include "proc_stats.h"

namespace sb::bench {

// "k=v, k=v" or "none".
inline std::string CountsLine(const CountMap& m) {
  if (m.empty()) return "none";
  std::string s;
  for (const auto& [k, v] : m) {
    if (!s.empty()) s += ", ";
    s += k + "=" + std::to_string(v);
  }
  return s;
}

// "n=N mean=.. p50=.. p90=.. p99=.. p99.9=.. max=.." in human units.
inline std::string LatLine(const Histogram& h) {
  if (h.Count() == 0) return "n=0";
  return "n=" + std::to_string(h.Count()) + " mean=" + FmtNs(h.Mean()) +
         " p50=" + FmtNs(static_cast<double>(h.Percentile(50))) +
         " p90=" + FmtNs(static_cast<double>(h.Percentile(90))) +
         " p99=" + FmtNs(static_cast<double>(h.Percentile(99))) +
         " p99.9=" + FmtNs(static_cast<double>(h.Percentile(99.9))) + " max=" + FmtNs(static_cast<double>(h.Max()));
}

inline void LatJson(JsonWriter& w, std::string_view key, const Histogram& h) {
  auto us = [](double ns) { return Fmt(ns / 1e3, 3); };
  w.Key(key).BeginObject();
  w.Field("count", h.Count());
  w.Key("mean").Raw(us(h.Mean()));
  w.Key("min").Raw(us(static_cast<double>(h.Min())));
  w.Key("p50").Raw(us(static_cast<double>(h.Percentile(50))));
  w.Key("p90").Raw(us(static_cast<double>(h.Percentile(90))));
  w.Key("p99").Raw(us(static_cast<double>(h.Percentile(99))));
  w.Key("p999").Raw(us(static_cast<double>(h.Percentile(99.9))));
  w.Key("max").Raw(us(static_cast<double>(h.Max())));
  w.EndObject();
}

inline void CountsJson(JsonWriter& w, std::string_view key, const CountMap& m) {
  w.Key(key).BeginObject();
  for (const auto& [k, v] : m) w.Field(k, v);
  w.EndObject();
}

inline void ThreadsJson(JsonWriter& w, std::string_view key, const std::vector<ThreadPct>& threads) {
  w.Key(key).BeginObject();
  for (const auto& t : threads) {
    w.Key(t.name).BeginObject();
    w.Key("cpu_pct").Raw(Fmt(t.cpu, 1));
    w.Key("wait_pct").Raw(Fmt(t.wait, 1));
    w.EndObject();
  }
  w.EndObject();
}

inline void TagsJson(JsonWriter& w, const std::vector<std::pair<std::string, std::string>>& tags) {
  w.Key("tags").BeginObject();
  for (const auto& [k, v] : tags) w.Field(k, v);
  w.EndObject();
}

// The fields of the "machine" object (the caller opens and closes it).
inline void MachineFields(JsonWriter& w, const Machine& m) {
  w.Field("nproc", static_cast<int64_t>(m.nproc));
  w.Field("cpu_model", m.cpu_model);
  w.Field("mem_total_kib", m.mem_total_kib);
  w.Field("kernel", m.kernel);
}

// The traffic figures of one class of senders (fields of the enclosing object).
inline void TrafficJson(JsonWriter& w, const ConnStats& t, double d, int64_t unacked, uint64_t unsent, double drain_s) {
  w.Field("sent", t.sent_window);
  w.Key("sent_per_s").Raw(Fmt(static_cast<double>(t.sent_window) / d, 1));
  w.Field("acked", t.acked_window);
  w.Key("acked_per_s").Raw(Fmt(static_cast<double>(t.acked_window) / d, 1));
  w.Field("delivered", t.delivered_window);
  w.Key("delivered_per_s").Raw(Fmt(static_cast<double>(t.delivered_window) / d, 1));
  LatJson(w, "ack_latency_us", t.ack_lat);
  LatJson(w, "delivery_latency_us", t.deliv_lat);
  if (t.send_lag.Count() > 0) LatJson(w, "send_lag_us", t.send_lag);
  CountsJson(w, "errors", t.errors);
  w.Key("error_samples").BeginObject();
  for (const auto& [k, v] : t.error_samples) w.Field(k, v);
  w.EndObject();
  w.Key("totals").BeginObject();
  w.Field("sent", t.sent_total);
  w.Field("acked", t.acked_total);
  w.Field("failed", t.failed_msgs);
  w.Field("delivered", t.delivered_total);
  w.Field("unacked_at_end", unacked);
  w.Field("unsent_scheduled", unsent);
  w.Key("drain_s").Raw(Fmt(drain_s, 3));
  w.EndObject();
  w.Key("anomalies").BeginObject();
  w.Field("duplicate_acks", t.duplicate_acks);
  w.Field("unknown_acks", t.unknown_acks);
  w.Field("duplicate_deliveries", t.duplicate_deliveries);
  w.Field("reordered_deliveries", t.reordered_deliveries);
  w.Field("seq_gaps", t.seq_gaps);
  w.Field("foreign_messages", t.foreign_messages);
  w.Field("lost_on_close", t.lost_on_close);
  w.Field("unparsable_frames", t.unparsable_frames);
  w.EndObject();
  w.Field("receipts_sent", t.receipts_sent);
  w.Field("receipts_received", t.receipts_received);
}

// Writes a result file (the JSON and a newline); false when it cannot be opened.
inline bool WriteJsonFile(const std::string& path, const std::string& json) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return false;
  std::fwrite(json.data(), 1, json.size(), f);
  std::fputc('\n', f);
  std::fclose(f);
  return true;
}

}  // namespace sb::bench
