// CollectMetrics and FormatPrometheus (rill/metrics.h), and this process's
// counters (engine_metrics.h). docs/operations.md lists every series.
#include "rill/metrics.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "engine_metrics.h"
#include "store_core.h"

namespace rill {
namespace internal {
namespace {

// Seconds: 100 us .. 10 s (an fsync on this machine takes ~0.3-3 ms).
const std::vector<double>& LatencyBounds() {
  static const auto* bounds =
      new std::vector<double>{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                              0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
  return *bounds;
}

const std::vector<double>& CountBounds() {
  static const auto* bounds =
      new std::vector<double>{1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384, 65536};
  return *bounds;
}

}  // namespace

FixedHistogram::FixedHistogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0);
}

void FixedHistogram::Observe(double value) {
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  double sum = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(sum, sum + value, std::memory_order_relaxed)) {
  }
}

HistogramSnapshot FixedHistogram::Snapshot() const {
  HistogramSnapshot s;
  s.upper_bounds = bounds_;
  for (size_t i = 0; i <= bounds_.size(); ++i) s.bucket_counts.push_back(counts_[i].load());
  // The count is the sum of the buckets read (no counter of its own), so a
  // snapshot taken during an Observe is still consistent (+Inf == count).
  for (uint64_t c : s.bucket_counts) s.count += c;
  s.sum = sum_.load();
  return s;
}

EngineMetrics::EngineMetrics()
    : events_per_commit(CountBounds()),
      commit_seconds(LatencyBounds()),
      commit_sync_seconds(LatencyBounds()) {}

void EngineMetrics::AddSubscription(const std::atomic<uint64_t>* position) {
  absl::MutexLock lock(&mu_);
  subscriptions_.push_back(position);
}

void EngineMetrics::RemoveSubscription(const std::atomic<uint64_t>* position) {
  absl::MutexLock lock(&mu_);
  subscriptions_.erase(std::remove(subscriptions_.begin(), subscriptions_.end(), position),
                       subscriptions_.end());
}

void EngineMetrics::Fill(uint64_t head, Metrics* out) const {
  out->has_process_figures = true;
  out->requests_written = requests_written.load();
  out->requests_deduplicated = requests_deduplicated.load();
  out->requests_conflicted = requests_conflicted.load();
  out->requests_failed = requests_failed.load();
  out->events_appended = events_appended.load();
  out->bytes_appended = bytes_appended.load();
  out->commits = commits.load();
  out->events_per_commit = events_per_commit.Snapshot();
  out->commit_seconds = commit_seconds.Snapshot();
  out->commit_sync_seconds = commit_sync_seconds.Snapshot();
  absl::MutexLock lock(&mu_);
  out->subscriptions = subscriptions_.size();
  out->subscription_max_lag = 0;
  for (const std::atomic<uint64_t>* position : subscriptions_) {
    const uint64_t p = position->load();
    if (head > p) out->subscription_max_lag = std::max(out->subscription_max_lag, head - p);
  }
}

}  // namespace internal

absl::StatusOr<Metrics> CollectMetrics(Store* store) {
  absl::StatusOr<internal::StoreCore*> core = internal::CoreOf(store, "CollectMetrics");
  if (!core.ok()) return core.status();
  Metrics m;
  absl::StatusOr<StoreStats> stats = store->Stats();
  if (!stats.ok()) return stats.status();
  m.store = *std::move(stats);
  (*core)->metrics().Fill(m.store.head_position, &m);
  return m;
}

namespace {

// Writes families in the text exposition format.
class Exposition {
 public:
  void Family(absl::string_view name, absl::string_view type, absl::string_view help) {
    absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
  }
  void Sample(absl::string_view name, absl::string_view labels, double value) {
    absl::StrAppend(&out_, name, labels.empty() ? "" : "{", labels, labels.empty() ? "" : "}", " ",
                    Number(value), "\n");
  }
  void Gauge(absl::string_view name, absl::string_view help, double value) {
    Family(name, "gauge", help);
    Sample(name, "", value);
  }
  void Counter(absl::string_view name, absl::string_view help, double value) {
    Family(name, "counter", help);
    Sample(name, "", value);
  }
  void Histogram(absl::string_view name, absl::string_view help, const HistogramSnapshot& h) {
    Family(name, "histogram", help);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < h.upper_bounds.size(); ++i) {
      cumulative += h.bucket_counts[i];
      Sample(absl::StrCat(name, "_bucket"), absl::StrCat("le=\"", Number(h.upper_bounds[i]), "\""),
             static_cast<double>(cumulative));
    }
    Sample(absl::StrCat(name, "_bucket"), "le=\"+Inf\"", static_cast<double>(h.count));
    Sample(absl::StrCat(name, "_sum"), "", h.sum);
    Sample(absl::StrCat(name, "_count"), "", static_cast<double>(h.count));
  }

  static std::string Label(absl::string_view key, absl::string_view value) {
    return absl::StrCat(key, "=\"",
                        absl::StrReplaceAll(value, {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}}),
                        "\"");
  }

  std::string Take() { return std::move(out_); }

 private:
  static std::string Number(double v) {
    if (v == static_cast<double>(static_cast<int64_t>(v)) && v < 9e15 && v > -9e15) {
      return absl::StrCat(static_cast<int64_t>(v));
    }
    return absl::StrFormat("%.9g", v);
  }

  std::string out_;
};

}  // namespace

std::string FormatPrometheus(const Metrics& m) {
  Exposition x;
  const StoreStats& s = m.store;
  x.Gauge("rill_head_position", "Position of the last event in the log (0: empty).",
          s.head_position);
  x.Gauge("rill_events", "Events in the log.", s.event_count);
  x.Gauge("rill_streams", "Streams in the log.", s.stream_count);
  x.Gauge("rill_idempotency_keys", "Idempotency keys recorded.", s.idempotency_keys);
  x.Gauge("rill_map_size_bytes", "Size of the log's memory map.", s.map_size);
  x.Gauge("rill_data_file_bytes", "Size of the log's data file on disk.", s.file_bytes);
  x.Gauge("rill_used_bytes", "Bytes of the log's pages in use.", s.used_bytes);
  x.Gauge("rill_reader_slots_in_use", "Reader slots of the log held now (live or stale).",
          s.readers_in_use);
  x.Gauge("rill_reader_slots", "Reader slots of the log in all.", s.max_readers);
  x.Gauge("rill_stale_reader_slots", "Reader slots left by processes that died.", s.stale_readers);
  x.Gauge("rill_oldest_reader_lag_transactions",
          "Write transactions between the oldest snapshot a reader holds and the newest.",
          s.oldest_reader_lag);
  if (m.has_process_figures) {
    x.Family("rill_append_requests_total", "counter",
             "Append and AppendMulti requests of this process, by outcome.");
    for (const auto& [outcome, n] : {std::pair{"written", m.requests_written},
                                     {"deduplicated", m.requests_deduplicated},
                                     {"conflict", m.requests_conflicted},
                                     {"error", m.requests_failed}}) {
      x.Sample("rill_append_requests_total", Exposition::Label("outcome", outcome), n);
    }
    x.Counter("rill_events_appended_total", "Events this process appended.", m.events_appended);
    x.Counter("rill_bytes_appended_total", "Payload and metadata bytes this process appended.",
              m.bytes_appended);
    x.Counter("rill_commits_total", "Group commits of this process that wrote events.", m.commits);
    x.Histogram("rill_events_per_commit", "Events written by each group commit.",
                m.events_per_commit);
    x.Histogram("rill_commit_seconds",
                "Time from the writer taking a batch of appends to the end of its commit.",
                m.commit_seconds);
    x.Histogram("rill_commit_sync_seconds",
                "Time in LMDB's commit of the log: page writes, fdatasync and the meta page's "
                "synchronous write.",
                m.commit_sync_seconds);
    x.Gauge("rill_subscriptions", "Live subscriptions of this process.", m.subscriptions);
    x.Gauge("rill_subscription_lag_events",
            "Events the furthest-behind subscription of this process has yet to deliver.",
            m.subscription_max_lag);
  }
  if (!m.projections.empty()) {
    auto each = [&](absl::string_view name, absl::string_view type, absl::string_view help,
                    auto value, bool runner_only) {
      bool any = false;
      for (const ProjectionMetrics& p : m.projections) any = any || !runner_only || p.from_runner;
      if (!any) return;
      x.Family(name, type, help);
      for (const ProjectionMetrics& p : m.projections) {
        if (runner_only && !p.from_runner) continue;
        x.Sample(name, Exposition::Label("projection", p.name), value(p));
      }
    };
    each(
        "rill_projection_checkpoint_position", "gauge",
        "Last position of the log in the projection's serving model.",
        [](const ProjectionMetrics& p) { return static_cast<double>(p.checkpoint); }, false);
    each(
        "rill_projection_lag_events", "gauge", "Events of the log the projection has yet to apply.",
        [](const ProjectionMetrics& p) { return static_cast<double>(p.lag_events); }, false);
    each(
        "rill_projection_lag_seconds", "gauge",
        "Age of the oldest event the projection has yet to apply.",
        [](const ProjectionMetrics& p) { return p.lag_seconds; }, false);
    each(
        "rill_projection_parked_events", "gauge", "Events in the projection's dead-letter table.",
        [](const ProjectionMetrics& p) { return static_cast<double>(p.parked); }, false);
    each(
        "rill_projection_events_applied_total", "counter",
        "Events the projection applied since this process's runner started.",
        [](const ProjectionMetrics& p) { return static_cast<double>(p.events_applied); }, true);
    each(
        "rill_projection_errors_total", "counter",
        "Failed apply attempts since this process's runner started.",
        [](const ProjectionMetrics& p) { return static_cast<double>(p.errors); }, true);
    x.Family("rill_projection_state", "gauge",
             "1 for the projection's state (running, caught_up, rebuilding, stopped, failed).");
    for (const ProjectionMetrics& p : m.projections) {
      x.Sample("rill_projection_state",
               absl::StrCat(Exposition::Label("projection", p.name), ",",
                            Exposition::Label("state", p.state)),
               1);
    }
  }
  return x.Take();
}

}  // namespace rill
