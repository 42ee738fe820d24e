// StoreCore: the engine behind a Store, for rill's own components.
//
// An application uses the public Store interface. Snapshots, projections and
// the admin functions need more than that: the log's LMDB environment
// (verify, backup), the derived environment (read models, checkpoints, dead
// letters, snapshots), the head and its wake-ups, and scans that report how
// far they got past records that did not match. They reach all of it through
// Store::core(), which a Store that wraps another forwards, so none of them
// downcasts a Store and a decorator works with every one of them.
//
// Thread-safety: all methods are thread-safe.
#ifndef RILL_ENGINE_STORE_CORE_H_
#define RILL_ENGINE_STORE_CORE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine_metrics.h"
#include "head.h"
#include "lmdb_env.h"
#include "rill/event.h"
#include "rill/options.h"
#include "rill/store.h"

namespace rill::internal {

// The named databases of the log environment (docs/format.md).
struct LogDbs {
  MDB_dbi events = 0;
  MDB_dbi streams = 0;
  MDB_dbi stream_index = 0;
  MDB_dbi idempotency = 0;
  MDB_dbi meta = 0;
};

// Where a scan stopped and why.
struct ScanProgress {
  uint64_t last_scanned = 0;  // position of the last record read (0: none)
  size_t records = 0;         // records read, matching or not
};

class StoreCore {
 public:
  StoreCore(std::string dir, const StoreOptions& options, std::unique_ptr<LmdbEnv> log,
            const LogDbs& dbs, std::string store_id);
  ~StoreCore();

  const std::string& dir() const { return dir_; }
  const StoreOptions& options() const { return options_; }
  const std::string& store_id() const { return store_id_; }
  // The log environment and its databases.
  LmdbEnv* log_env() const { return log_.get(); }
  const LogDbs& dbs() const { return dbs_; }
  // The head as this process knows it, and waits for it to move.
  Head& head() { return head_; }
  // This process's figures of the store (rill/metrics.h).
  EngineMetrics& metrics() { return metrics_; }

  // The position of the last record in the log (0 for an empty log).
  absl::StatusOr<uint64_t> ReadHead();

  // The derived environment (STORE/derived/): read models, checkpoints, dead
  // letters and snapshots, which may be deleted and rebuilt from the log. Its
  // writes never take the log's writer lock. Opened (and created, unless the
  // store is read-only) on first use; lives as long as the store. NotFound on
  // a read-only store that has none.
  absl::StatusOr<LmdbEnv*> DerivedEnv() ABSL_LOCKS_EXCLUDED(derived_mu_);
  // Store::ClearStaleReaders for both environments.
  absl::StatusOr<unsigned> ClearStaleReaders() ABSL_LOCKS_EXCLUDED(derived_mu_);

  // Reads up to `max_records` records of the log from `from_position` in
  // `direction`, delivering those that match `filter` to `fn` (false stops).
  // Used by ScanAll and subscriptions, which must advance past records that
  // do not match (store_read.cc).
  absl::Status ScanChunked(uint64_t from_position, Direction direction, const EventFilter& filter,
                           size_t max_records, absl::FunctionRef<bool(const EventView&)> fn,
                           ScanProgress* progress);

 private:
  const std::string dir_;
  const StoreOptions options_;
  std::unique_ptr<LmdbEnv> log_;
  const LogDbs dbs_;
  const std::string store_id_;
  EngineMetrics metrics_;
  Head head_;

  absl::Mutex derived_mu_;
  std::unique_ptr<LmdbEnv> derived_ ABSL_GUARDED_BY(derived_mu_);
};

// The core behind `store` (Store::core()): InvalidArgument for a null store,
// FailedPrecondition for one that has no rill engine behind it (a test
// double). `what` names the caller for the message.
absl::StatusOr<StoreCore*> CoreOf(Store* store, absl::string_view what);

}  // namespace rill::internal

#endif  // RILL_ENGINE_STORE_CORE_H_
