// Writer: group commit of append requests, one LMDB write transaction at a
// time.
//
// Append callers validate their request, then Submit() it. Submit queues the
// request; the caller whose request reaches the front of the queue while no
// batch is in flight becomes the leader (LevelDB's write path): it takes
// everything queued (up to the batch limits) into one transaction, and for
// each request in order checks the idempotency key and the expected versions
// against the transaction's own view (so requests of the same batch see each
// other), writes the accepted ones, and commits once - one fsync for the
// whole batch - before completing every request of the batch and handing
// leadership to the next request in the queue. A rejected request writes
// nothing and does not affect its neighbours. The transaction is one
// LmdbEnv::Write: when the map fills up it is aborted, the map grown, and
// the batch retried from scratch; a commit that fails (disk full) fails
// every request of the batch and leaves the store as it was. After the
// commit the writer publishes the new head (head.h).
//
// Before taking its batch the leader may wait a little for the callers the
// previous commit released (StoreOptions::group_commit_wait): callers that
// append in a loop are back within microseconds, and waiting for them puts
// all of them into one commit instead of two alternating half-sized ones.
// The wait ends when they are all back, the batch is full, no further one
// has come back for a quarter of the wait, or the wait is over
// (group_commit_wait.h; a replicated node's publisher waits the same way).
//
// Why a leader rather than a dedicated writer thread: a lone append then
// runs on its caller's thread with no hand-off (two thread wake-ups per
// append: 1-9 us on a quiet machine, much more on a busy one). Under load the
// effect is the same: one transaction at a time, many requests per fsync.
//
// Thread-safety: Submit may be called from any thread.
#ifndef RILL_ENGINE_WRITER_H_
#define RILL_ENGINE_WRITER_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "codec.h"
#include "fingerprint.h"
#include "group_commit_wait.h"
#include "head.h"
#include "lmdb_env.h"
#include "rill/store.h"
#include "store_core.h"

namespace rill::internal {

struct AppendRequest {
  std::vector<RequestPart> parts;
  std::string idempotency_key;  // empty: none
  std::string fingerprint;      // set when idempotency_key is
  size_t bytes = 0;
  // Replicated requests only: the request's own commit time (a store moved
  // into a stream keeps its events' times); 0: the batch's.
  int64_t recorded_us = 0;

  absl::StatusOr<std::vector<AppendResult>> result;
  bool completed = false;  // guarded by Writer::mu_
  std::thread::id caller;  // the thread that submitted it (set by Submit)
};

// Whether a stream at `actual` (-1: no stream) satisfies `expected`.
bool ExpectedVersionMatches(ExpectedVersion expected, int64_t actual);
// The Aborted error of a request whose `expected` the stream at `actual`
// does not satisfy.
absl::Status VersionMismatch(absl::string_view stream, ExpectedVersion expected, int64_t actual);

// Looks up `request`'s idempotency key in `txn`'s `idempotency` database.
// When it is there (*found), request->result is the recorded result marked
// deduplicated, or AlreadyExists when the fingerprints differ, or the
// record's DataLoss. Non-OK for a read error.
absl::Status LookUpIdempotencyKey(MDB_txn* txn, MDB_dbi idempotency, AppendRequest* request,
                                  bool* found);

// The events `request` wrote: all of its events when its result is a write,
// none when it failed or was deduplicated.
uint64_t EventsWritten(const AppendRequest& request);
// Counts `request`'s outcome (its result) in `metrics`: written (with its
// events and bytes), deduplicated, conflicted (Aborted) or failed. Returns
// the events it wrote (0 unless written).
uint64_t CountRequestOutcome(EngineMetrics* metrics, const AppendRequest& request);
// Counts one write transaction of the log that wrote `events` (> 0) in
// `took`: commits, events_per_commit, commit_seconds.
void CountCommit(EngineMetrics* metrics, uint64_t events, absl::Duration took);

class Writer {
 public:
  // Writes to `env`'s databases `dbs` and publishes to `head`, which must
  // outlive the writer.
  Writer(LmdbEnv* env, const LogDbs& dbs, Head* head, const StoreOptions& options,
         EngineMetrics* metrics = nullptr);

  // Queues `request` and blocks until it is committed or rejected; the
  // outcome is in request->result.
  void Submit(AppendRequest* request);

  // How a replica applies a replicated transaction (replica.h): writes
  // `batch` into `txn`, a write transaction of this writer's env that the
  // caller runs in LmdbEnv::Write, exactly as a group commit would, but with
  // `recorded_us` (or the log's last recorded time, if later) as the commit
  // time instead of this machine's clock, so that every node writes the same
  // log. Sets *head. Non-OK only for an error that dooms the transaction.
  absl::Status WriteReplicated(MDB_txn* txn, std::vector<AppendRequest*>& batch,
                               int64_t recorded_us, uint64_t* head);

  // Counters of the group commit wait (batches led, and the leaders'
  // waits), for tests.
  using WaitStats = GroupCommitWait::Stats;
  WaitStats wait_stats() const;

 private:
  // Whether the queue already holds a full batch (by requests or bytes).
  bool QueueFillsABatch() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes and commits the batch (one LmdbEnv::Write); every request gets
  // its outcome in request->result.
  void ProcessBatch(std::vector<AppendRequest*>& batch);
  // Adds a processed batch to metrics_ (rill/metrics.h).
  void Count(const std::vector<AppendRequest*>& batch, absl::Duration took);
  // One attempt at the batch's transaction: applies every request to `txn`
  // and sets *head to the new head. The commit time is this machine's clock,
  // or `recorded_us` when it is not 0; never before the log's last event.
  // Non-OK only for an error that dooms the whole transaction.
  absl::Status WriteBatch(MDB_txn* txn, std::vector<AppendRequest*>& batch, int64_t recorded_us,
                          uint64_t* head);
  // Applies one request to `txn`. Returns the request's own outcome in
  // request->result; returns non-OK only for an error that dooms the whole
  // transaction.
  struct WriteCursors {
    MDB_cursor* events;
    MDB_cursor* index;  // stream_index
  };
  absl::Status Apply(MDB_txn* txn, const WriteCursors& cursors, AppendRequest* request,
                     uint64_t* head, int64_t recorded_us);
  absl::Status CheckIdempotency(MDB_txn* txn, AppendRequest* request, bool* found);

  LmdbEnv* const env_;
  const LogDbs dbs_;
  Head* const head_;
  EngineMetrics* const metrics_;  // may be null
  const StoreOptions options_;
  // Used by the leader only, one batch at a time.
  flatbuffers::FlatBufferBuilder fbb_;
  AlignedBuffer last_buffer_;

  mutable absl::Mutex mu_;
  std::deque<AppendRequest*> queue_ ABSL_GUARDED_BY(mu_);
  bool leading_ ABSL_GUARDED_BY(mu_) = false;  // a batch is in flight
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // A new leader's wait for the callers the last batch completed.
  GroupCommitWait commit_wait_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rill::internal

#endif  // RILL_ENGINE_WRITER_H_
