// Worker: runs one projection on a thread of its own.
//
// Loop: pick up rebuild requests and posted tasks; apply the next batch of
// events to the serving generation (unless a version bump froze it) and to
// the generation being rebuilt; swap them once the new one has caught up;
// delete the rows of swapped-out generations in the background; otherwise
// wait for the head to move (woken on commit, polling every poll_interval
// for other processes' commits and requests).
//
// Only this thread writes the projection's catalog entry, rows, checkpoint
// and dead letters (tasks posted from other threads run here too), so the
// in-memory catalog is the truth and a batch's overlay cannot race another
// writer of the same rows.
#ifndef RILL_PROJECTIONS_WORKER_H_
#define RILL_PROJECTIONS_WORKER_H_

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "catalog.h"
#include "rill/projection.h"
#include "store_impl.h"

namespace rill::internal {

// Applies events to one generation: the shared core of the worker's batches
// and of RebuildAsOf.
struct BatchOutcome {
  size_t records = 0;       // log records read (matching or not)
  uint64_t checkpoint = 0;  // the generation's checkpoint after the batch
  bool failed = false;      // Apply failed under ErrorPolicy::kStop
  absl::Status error;       // why it failed
  uint64_t applied = 0;
  uint64_t errors = 0;
  uint64_t parked = 0;
};

class Worker {
 public:
  Worker(StoreImpl* store, LmdbEnv* env, const ProjectionDbs& dbs, ProjectionDef def,
         const RunnerOptions& options);
  ~Worker();

  // Takes the projection's lock file, loads or creates its catalog entry and
  // starts the thread.
  absl::Status Start();
  void Stop();

  const ProjectionDef& def() const { return def_; }
  absl::Status WaitFor(uint64_t position, absl::Duration timeout);
  ProjectionStatus Status();
  // Asks for a blue/green rebuild (picked up at the next loop).
  void Rebuild();
  // Runs `task` on the worker thread and returns its status.
  absl::Status RunOnWorker(std::function<absl::Status()> task);
  absl::Status RetryParked(uint64_t position);
  // RetryParked's work, on the worker thread. A failed Apply is recorded in
  // the dead letter (error, attempts + 1) and returned.
  absl::Status RetryParkedNow(uint64_t position);

  // Applies the events after gen->checkpoint (at most `batch_size` log
  // records, none past `last_position`) to generation `gen` and commits the
  // rows, the dead letters and `write_catalog`'s writes in one transaction.
  // With `park`, events that keep failing are skipped (and recorded as dead
  // letters when `record_dead_letters`); otherwise the batch stops before
  // the first such event.
  static absl::StatusOr<BatchOutcome> ApplyBatch(
      StoreImpl* store, LmdbEnv* env, const ProjectionDbs& dbs, const ProjectionDef& def,
      GenerationRec* gen, size_t batch_size, uint64_t last_position, bool park,
      bool record_dead_letters, const std::atomic<bool>* stop,
      const std::function<absl::Status(MDB_txn*)>& write_catalog);

 private:
  void Run();
  absl::Status Loop();
  absl::Status TakeRequests();
  // Retries the parked events at `positions` (recorded retry requests) and
  // deletes their requests.
  absl::Status RunRetryRequests(const std::vector<uint64_t>& positions);
  absl::Status StartRebuild() ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Step(bool* did_work);
  absl::Status DropRetired(bool* did_work);
  absl::Status WriteCatalog(MDB_txn* txn, const CatalogRec& rec);
  // Deletes this projection's dead letters parked by `generation`.
  absl::Status DropDeadLettersOf(MDB_txn* txn, uint64_t generation);
  // Stops applying (state kFailed, error kept); the model keeps serving.
  void Fail(const absl::Status& why);

  StoreImpl* const store_;
  LmdbEnv* const env_;
  const ProjectionDbs dbs_;
  const ProjectionDef def_;
  const RunnerOptions options_;
  int lock_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<bool> rebuild_requested_{false};

  mutable absl::Mutex mu_;
  absl::CondVar cv_;  // signalled on every checkpoint, state or task change
  CatalogRec catalog_ ABSL_GUARDED_BY(mu_);
  ProjectionState state_ ABSL_GUARDED_BY(mu_) = ProjectionState::kRunning;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  uint64_t applied_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t errors_ ABSL_GUARDED_BY(mu_) = 0;
  struct Task {
    std::function<absl::Status()> fn;
    absl::Status result;
    bool done = false;
  };
  std::deque<Task*> tasks_ ABSL_GUARDED_BY(mu_);

  std::thread thread_;
};

}  // namespace rill::internal

#endif  // RILL_PROJECTIONS_WORKER_H_
