// Metrics of a store, for an operator to scrape (docs/operations.md lists
// every series). Two kinds of figures:
//   - what the store's files say, which any process can read (rill metrics
//     STORE reads them from outside the service): head, events, streams,
//     idempotency keys, map size and use, reader slots, the oldest reader's
//     lag, and each projection's checkpoint, lag and dead letters;
//   - what this process did with the store since it opened it: append
//     requests by outcome, events and bytes appended, commits, events per
//     commit, commit and sync latency histograms, subscriptions and their
//     lag, and a runner's events applied and errors per projection.
// CollectMetrics takes both; FormatPrometheus writes them in the Prometheus
// text exposition format, for a service's own /metrics endpoint or a file.
#ifndef RILL_METRICS_H_
#define RILL_METRICS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "rill/store.h"

namespace rill {

// A histogram over fixed buckets. bucket_counts[i] counts the observations
// in (upper_bounds[i-1], upper_bounds[i]]; the last entry (one more than the
// bounds) those above every bound. Not cumulative (FormatPrometheus sums).
struct HistogramSnapshot {
  std::vector<double> upper_bounds;
  std::vector<uint64_t> bucket_counts;
  uint64_t count = 0;
  double sum = 0;
};

struct ProjectionMetrics {
  std::string name;
  std::string state;        // ProjectionStateName: running, caught_up ...
  uint64_t checkpoint = 0;  // last position in the serving model
  uint64_t lag_events = 0;  // head - checkpoint
  double lag_seconds = 0;   // age of the oldest event not yet applied
  uint64_t parked = 0;      // events in the dead-letter table now
  // Of the runner in this process (AddProjectionMetrics(runner, ...)); not
  // known when read from the store's files.
  bool from_runner = false;
  uint64_t events_applied = 0;  // since the runner started
  uint64_t errors = 0;          // failed Apply attempts since the runner started
};

struct Metrics {
  // From the store's files.
  StoreStats store;
  std::vector<ProjectionMetrics> projections;  // filled by AddProjectionMetrics

  // This process's, since it opened the store (all zero in a process that
  // only reads the files, e.g. `rill metrics`): the embedded store's appends.
  bool has_process_figures = false;
  uint64_t requests_written = 0;       // Append/AppendMulti requests that wrote events
  uint64_t requests_deduplicated = 0;  // retries answered from their idempotency key
  uint64_t requests_conflicted = 0;    // refused: wrong expected version (Aborted)
  uint64_t requests_failed = 0;        // any other error (a full disk, a key reused ...)
  uint64_t events_appended = 0;
  uint64_t bytes_appended = 0;  // payload + metadata bytes of the events appended
  uint64_t commits = 0;         // group commits that wrote events
  HistogramSnapshot events_per_commit;
  // From the writer taking a batch to its commit's end (what a caller waits
  // for beyond queueing), seconds.
  HistogramSnapshot commit_seconds;
  // LMDB's commit of the log alone: writing the dirty pages, fdatasync, and
  // the meta page's synchronous write - with Durability::kDurable, the cost
  // of making a commit durable. Every write transaction of the log.
  HistogramSnapshot commit_sync_seconds;
  uint64_t subscriptions = 0;         // live now
  uint64_t subscription_max_lag = 0;  // events the furthest-behind one has to go
};

// The figures of `store` (a Store from Store::Open, or one that forwards
// core()). FailedPrecondition for a Store with no engine behind it.
[[nodiscard]] absl::StatusOr<Metrics> CollectMetrics(Store* store);

// `metrics` in the Prometheus text exposition format (0.0.4): one family per
// figure, "# HELP" and "# TYPE" lines, names rill_*, projections labelled
// projection="NAME". Process figures only when has_process_figures.
std::string FormatPrometheus(const Metrics& metrics);

}  // namespace rill

#endif  // RILL_METRICS_H_
