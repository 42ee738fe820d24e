// Writer: the one thread that owns the log's write transactions.
//
// Append callers validate their request, then Submit() it and wait. The
// writer drains everything queued (up to the batch limits) into one
// transaction: for each request in order it checks the idempotency key and
// the expected versions against the transaction's own view (so requests of
// the same batch see each other), writes the accepted ones, and finally
// commits once - one fsync for the whole batch - before completing every
// waiter. A rejected request writes nothing and does not affect its
// neighbours. When the map fills up the transaction is aborted, the map
// grown, and the batch retried from scratch; a commit that fails (disk full)
// fails every request of the batch and leaves the store as it was.
//
// Thread-safety: Submit may be called from any thread.
#ifndef RILL_ENGINE_WRITER_H_
#define RILL_ENGINE_WRITER_H_

#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
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
  absl::Notification done;
};

class Writer {
 public:
  Writer(StoreImpl* store, LmdbEnv* env, const LogDbs& dbs, const StoreOptions& options);
  // Completes everything queued, then stops the thread.
  ~Writer();

  // Queues `request` and blocks until it is committed or rejected.
  void Submit(AppendRequest* request);

 private:
  void Run();
  void ProcessBatch(std::vector<AppendRequest*>& batch);
  // Applies one request to `txn`. Returns the request's own outcome in
  // request->result; returns non-OK only for an error that dooms the whole
  // transaction (`*lmdb_rc` holds the LMDB code then).
  absl::Status Apply(MDB_txn* txn, AppendRequest* request, uint64_t* head,
                     int64_t recorded_us, int* lmdb_rc);
  absl::Status CheckIdempotency(MDB_txn* txn, AppendRequest* request, bool* found);

  StoreImpl* const store_;
  LmdbEnv* const env_;
  const LogDbs& dbs_;
  const StoreOptions options_;
  flatbuffers::FlatBufferBuilder fbb_;

  absl::Mutex mu_;
  std::deque<AppendRequest*> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace rill::internal

#endif  // RILL_ENGINE_WRITER_H_
