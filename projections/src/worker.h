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

namespace rill::internal {

class Worker {
 public:
  Worker(const Derived& derived, ProjectionDef def, const RunnerOptions& options);
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
  // Retries a parked event on the worker thread (dead_letters.h,
  // RetryDeadLetter).
  absl::Status RetryParked(uint64_t position);

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
  // RetryParked's work, on the worker thread.
  absl::Status RetryParkedNow(uint64_t position);
  // Stops applying (state kFailed, error kept); the model keeps serving.
  void Fail(const absl::Status& why);

  const Derived d_;
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
