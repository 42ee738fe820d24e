// LmdbEnv: one LMDB environment with RAII transactions, automatic map growth
// and the mapping of LMDB errors to absl::Status.
//
// LMDB allows mdb_env_set_mapsize only while this process has no active
// transaction. Every transaction therefore holds `resize_mu_` shared, and a
// resize (our own growth after MDB_MAP_FULL, or adopting another process's
// growth after MDB_MAP_RESIZED) holds it exclusively. rill's own transactions
// are short (reads copy what they need and end before user code runs); the
// exception is a read-model view, which holds a read transaction of the
// derived environment for as long as the caller keeps it, and so delays a
// growth of that environment until it is released.
//
// Thread-safety: all methods are thread-safe. A Txn must be used by one
// thread at a time (the env is opened with MDB_NOTLS).
#ifndef RILL_ENGINE_LMDB_ENV_H_
#define RILL_ENGINE_LMDB_ENV_H_

#include <lmdb.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace rill::internal {

// Maps an LMDB or errno return code to the most specific status code. A
// status made from MDB_MAP_FULL carries a payload that says so (IsMapFull),
// so the work inside LmdbEnv::Write returns the status as it is and Write
// still recognises a full map, whatever the message says.
absl::Status LmdbError(int rc, absl::string_view context);
// Like LmdbError, for a failed write or commit in the environment directory
// `path`: a short write (EIO) on a full disk is ResourceExhausted.
absl::Status WriteError(int rc, absl::string_view context, const std::string& path);
// Whether `status` was made by LmdbError from MDB_MAP_FULL.
bool IsMapFull(const absl::Status& status);

inline MDB_val ToVal(const void* data, size_t size) {
  return MDB_val{size, const_cast<void*>(data)};
}
inline MDB_val ToVal(absl::string_view s) { return ToVal(s.data(), s.size()); }
inline absl::string_view FromVal(const MDB_val& v) {
  return absl::string_view(static_cast<const char*>(v.mv_data), v.mv_size);
}

struct CursorCloser {
  void operator()(MDB_cursor* c) const { mdb_cursor_close(c); }
};
using CursorPtr = std::unique_ptr<MDB_cursor, CursorCloser>;

// Opens a cursor on `dbi` in `txn`.
absl::StatusOr<CursorPtr> OpenCursor(MDB_txn* txn, MDB_dbi dbi);

class LmdbEnv;
class FixedHistogram;

// A transaction that holds the env's resize lock shared while it lives.
// Aborted on destruction unless committed.
class Txn {
 public:
  Txn(Txn&& other) noexcept;
  Txn& operator=(Txn&&) = delete;
  ~Txn();

  MDB_txn* get() const { return txn_; }
  // Commits; the Txn is finished afterwards whatever the outcome. Returns
  // the raw LMDB code.
  int Commit();
  void Abort();
  absl::StatusOr<CursorPtr> OpenCursor(MDB_dbi dbi) const;

 private:
  friend class LmdbEnv;
  Txn(LmdbEnv* env, MDB_txn* txn, std::shared_ptr<std::atomic<int>> hold)
      : env_(env), txn_(txn), hold_(std::move(hold)) {}
  LmdbEnv* env_;
  MDB_txn* txn_;
  // The opening thread's count of shared holds (see ResizeLock), released
  // through this pointer whichever thread ends the transaction.
  std::shared_ptr<std::atomic<int>> hold_;
};

struct LmdbEnvOptions {
  unsigned flags = 0;  // extra mdb_env_open flags (MDB_RDONLY, MDB_NOSYNC ...)
  size_t map_size = size_t{1} << 30;
  size_t map_growth_step = size_t{4} << 30;
  unsigned max_readers = 256;
  unsigned max_dbs = 8;
};

class LmdbEnv {
 public:
  // Opens the environment in directory `path` (which must exist).
  static absl::StatusOr<std::unique_ptr<LmdbEnv>> Open(const std::string& path,
                                                       const LmdbEnvOptions& options);
  ~LmdbEnv();

  MDB_env* env() const { return env_; }
  const std::string& path() const { return path_; }
  // Every commit made by Write is timed into `h` (may be null; set before
  // the first write, outlives the env).
  void set_commit_histogram(FixedHistogram* h) { commit_histogram_ = h; }
  bool read_only() const { return (options_.flags & MDB_RDONLY) != 0; }

  absl::StatusOr<Txn> BeginRead();

  // Opens (creating when `create`) a named database. REQUIRES: the calling
  // thread holds no Txn of this environment (creating may grow the map, which
  // waits for every transaction of the process to end).
  absl::StatusOr<MDB_dbi> OpenDb(const char* name, bool create);

  // The one way to write: runs `fn` in a write transaction, commits it, and
  // then runs `on_commit` (the writer publishes the new head there). When
  // `fn` or the commit fails with MDB_MAP_FULL (IsMapFull of its status), the
  // transaction is aborted, the map grown and `fn` run again from scratch, so
  // `fn` must start over each time it is called. Any other failure of `fn`
  // aborts the transaction and is returned as it is; a failed commit is
  // mapped by WriteError (`what` names the work). The status returned
  // carries no payload. REQUIRES: the calling thread holds no Txn of this
  // environment (growing the map waits for every transaction of the process
  // to end). Before it begins, frees
  // the reader slots of dead processes (at most once a second, see
  // SweepStaleReaders).
  absl::Status Write(absl::string_view what, absl::FunctionRef<absl::Status(MDB_txn* txn)> fn,
                     absl::FunctionRef<void()> on_commit);
  absl::Status Write(absl::string_view what, absl::FunctionRef<absl::Status(MDB_txn* txn)> fn);

  // Frees the reader slots of processes that died in a read transaction
  // (they pin pages, so the file would grow without bound while such a slot
  // lives), at most once a second: a scan of the reader table, cheap.
  // Best effort: an error changes nothing.
  void SweepStaleReaders();

  // Grows the map after MDB_MAP_FULL: doubles it, or adds map_growth_step
  // once it is larger than that. REQUIRES: the caller holds no Txn.
  absl::Status Grow();

  // Current map size in bytes.
  size_t map_size();

 private:
  friend class Txn;
  LmdbEnv(MDB_env* env, std::string path, const LmdbEnvOptions& options)
      : env_(env), path_(std::move(path)), options_(options) {}
  absl::StatusOr<Txn> Begin(unsigned flags);
  // Only Write begins write transactions.
  absl::StatusOr<Txn> BeginWrite();
  // Adopts a map size grown by another process (after MDB_MAP_RESIZED).
  absl::Status AdoptMapSize();

  MDB_env* env_;
  const std::string path_;
  LmdbEnvOptions options_;
  // The resize lock: every transaction holds it shared, a resize holds it
  // exclusively. A pending resize makes new transactions wait, except on a
  // thread that already holds one: a thread with a read-model view open (a
  // read transaction) may open another transaction without deadlock, which
  // a plain writer-preferring lock (absl::Mutex) would not allow.
  class ResizeLock {
   public:
    // Returns the calling thread's hold count, to be passed to SharedDone
    // (from any thread).
    std::shared_ptr<std::atomic<int>> Shared() ABSL_LOCKS_EXCLUDED(mu_);
    void SharedDone(const std::shared_ptr<std::atomic<int>>& hold) ABSL_LOCKS_EXCLUDED(mu_);
    void Exclusive() ABSL_LOCKS_EXCLUDED(mu_);
    void ExclusiveDone() ABSL_LOCKS_EXCLUDED(mu_);

   private:
    absl::Mutex mu_;
    int holders_ ABSL_GUARDED_BY(mu_) = 0;
    bool pending_ ABSL_GUARDED_BY(mu_) = false;  // a resize waits for holders_ == 0
    bool resizing_ ABSL_GUARDED_BY(mu_) = false;
  };
  ResizeLock resize_mu_;
  absl::Mutex dbi_mu_;
  FixedHistogram* commit_histogram_ = nullptr;
  // When SweepStaleReaders last ran (microseconds since the epoch).
  std::atomic<int64_t> last_sweep_us_{0};
};

}  // namespace rill::internal

#endif  // RILL_ENGINE_LMDB_ENV_H_
