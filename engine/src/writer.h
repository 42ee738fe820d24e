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
// nothing and does not affect its neighbours. When the map fills up the
// transaction is aborted, the map grown, and the batch retried from scratch;
// a commit that fails (disk full) fails every request of the batch and
// leaves the store as it was.
//
// Before taking its batch the leader may wait a little for the callers the
// previous commit released (StoreOptions::group_commit_wait): callers that
// append in a loop are back within microseconds, and waiting for them puts
// all of them into one commit instead of two alternating half-sized ones.
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
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "codec.h"
#include "fingerprint.h"
#include "lmdb_env.h"
#include "rill/store.h"

namespace rill::internal {

class StoreImpl;
struct LogDbs;

struct AppendRequest {
  std::vector<RequestPart> parts;
  std::string idempotency_key;  // empty: none
  std::string fingerprint;      // set when idempotency_key is
  size_t bytes = 0;

  absl::StatusOr<std::vector<AppendResult>> result;
  bool completed = false;  // guarded by Writer::mu_
  uint64_t batch = 0;       // the batch that completed it; guarded by Writer::mu_
};

class Writer {
 public:
  Writer(StoreImpl* store, LmdbEnv* env, const LogDbs& dbs, const StoreOptions& options);

  // Queues `request` and blocks until it is committed or rejected; the
  // outcome is in request->result.
  void Submit(AppendRequest* request);

 private:
  // Called by a new leader: waits (releasing mu_) up to wait_ for the
  // callers of the last batch to queue their next requests, and adapts wait_.
  void AwaitReleasedCallers() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ProcessBatch(std::vector<AppendRequest*>& batch);
  // Applies one request to `txn`. Returns the request's own outcome in
  // request->result; returns non-OK only for an error that dooms the whole
  // transaction (`*lmdb_rc` holds the LMDB code then).
  struct WriteCursors {
    MDB_cursor* events;
    MDB_cursor* index;  // stream_index
  };
  absl::Status Apply(MDB_txn* txn, const WriteCursors& cursors, AppendRequest* request,
                     uint64_t* head, int64_t recorded_us, int* lmdb_rc);
  absl::Status CheckIdempotency(MDB_txn* txn, AppendRequest* request, bool* found);

  StoreImpl* const store_;
  LmdbEnv* const env_;
  const LogDbs& dbs_;
  const StoreOptions options_;
  // Used by the leader only, one batch at a time.
  flatbuffers::FlatBufferBuilder fbb_;
  AlignedBuffer last_buffer_;

  absl::Mutex mu_;
  std::deque<AppendRequest*> queue_ ABSL_GUARDED_BY(mu_);
  bool leading_ ABSL_GUARDED_BY(mu_) = false;  // a batch is in flight
  // Group commit wait: the number of the last completed batch, how many of
  // its callers have not queued a request since, the current wait (adapted
  // between zero and options_.group_commit_wait) and the batches led since
  // it fell to zero.
  uint64_t completed_batches_ ABSL_GUARDED_BY(mu_) = 0;
  size_t released_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Duration wait_ ABSL_GUARDED_BY(mu_);
  int batches_without_wait_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace rill::internal

#endif  // RILL_ENGINE_WRITER_H_
