// This process's figures of one store (rill/metrics.h): lock-free counters
// and fixed-bucket histograms that the writer, the log environment and
// subscriptions update, and CollectMetrics reads.
#ifndef RILL_ENGINE_ENGINE_METRICS_H_
#define RILL_ENGINE_ENGINE_METRICS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "rill/metrics.h"

namespace rill::internal {

class FixedHistogram {
 public:
  explicit FixedHistogram(std::vector<double> upper_bounds);
  void Observe(double value);
  void Observe(absl::Duration d) { Observe(absl::ToDoubleSeconds(d)); }
  HistogramSnapshot Snapshot() const;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
};

class EngineMetrics {
 public:
  EngineMetrics();

  std::atomic<uint64_t> requests_written{0};
  std::atomic<uint64_t> requests_deduplicated{0};
  std::atomic<uint64_t> requests_conflicted{0};
  std::atomic<uint64_t> requests_failed{0};
  std::atomic<uint64_t> events_appended{0};
  std::atomic<uint64_t> bytes_appended{0};
  std::atomic<uint64_t> commits{0};
  FixedHistogram events_per_commit;
  FixedHistogram commit_seconds;
  FixedHistogram commit_sync_seconds;

  // Live subscriptions register the position they have delivered up to.
  void AddSubscription(const std::atomic<uint64_t>* position) ABSL_LOCKS_EXCLUDED(mu_);
  void RemoveSubscription(const std::atomic<uint64_t>* position) ABSL_LOCKS_EXCLUDED(mu_);

  // Fills the process figures of `out`; `head` for the subscriptions' lag.
  void Fill(uint64_t head, Metrics* out) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  std::vector<const std::atomic<uint64_t>*> subscriptions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rill::internal

#endif  // RILL_ENGINE_ENGINE_METRICS_H_
