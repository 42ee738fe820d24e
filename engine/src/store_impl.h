// StoreImpl: the Store behind the public interface.
//
// Threads: the caller threads (validation, fingerprints, reads; one of them
// at a time leads a group commit, writer.h) and one thread per subscription.
// Reads never take a lock other than the env's shared resize lock for the
// length of one short transaction.
#ifndef RILL_ENGINE_STORE_IMPL_H_
#define RILL_ENGINE_STORE_IMPL_H_

#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "codec.h"
#include "fingerprint.h"
#include "lmdb_env.h"
#include "rill/store.h"

namespace rill::internal {

class Writer;

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

class StoreImpl final : public Store {
 public:
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& dir,
                                                     const StoreOptions& options);
  ~StoreImpl() override;

  absl::StatusOr<AppendResult> Append(absl::string_view stream, ExpectedVersion expected,
                                      absl::Span<const EventData> events,
                                      const AppendOptions& options) override;
  absl::StatusOr<std::vector<AppendResult>> AppendMulti(
      absl::Span<const StreamAppend> appends, const AppendOptions& options) override;
  absl::StatusOr<std::vector<RecordedEvent>> ReadStream(absl::string_view stream,
                                                        int64_t from_version,
                                                        const ReadOptions& options) override;
  absl::StatusOr<std::vector<RecordedEvent>> ReadAll(uint64_t from_position,
                                                     const ReadOptions& options) override;
  absl::Status ScanAll(uint64_t from_position, const ReadOptions& options,
                       absl::FunctionRef<bool(const EventView&)> fn) override;
  absl::Status ScanStream(absl::string_view stream, int64_t from_version,
                          const ReadOptions& options,
                          absl::FunctionRef<bool(const EventView&)> fn) override;
  absl::StatusOr<StreamInfo> GetStreamInfo(absl::string_view stream) override;
  absl::StatusOr<std::vector<StreamInfo>> ListStreams(absl::string_view prefix, size_t limit,
                                                      absl::string_view start_after) override;
  absl::StatusOr<uint64_t> HeadPosition() override;
  absl::StatusOr<uint64_t> WaitForHead(uint64_t known_head, absl::Duration timeout,
                                       absl::Duration poll_interval) override;
  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(uint64_t after_position,
                                                          SubscriptionOptions options,
                                                          SubscriptionHandler handler) override;
  absl::StatusOr<StoreStats> Stats() override;
  absl::StatusOr<unsigned> ClearStaleReaders() override;
  const std::string& dir() const override { return dir_; }
  const std::string& store_id() const override { return store_id_; }

  // Reads up to `max_records` records of the log from `from_position` in
  // `direction`, delivering those that match `filter` to `fn` (false stops).
  // Used by ScanAll and subscriptions, which must advance past records that
  // do not match.
  absl::Status ScanChunked(uint64_t from_position, Direction direction,
                           const EventFilter& filter, size_t max_records,
                           absl::FunctionRef<bool(const EventView&)> fn,
                           ScanProgress* progress);

  // WaitForHead that also returns early once *cancel is true, or when Wake()
  // is called (so a worker can look at its flags and tasks). A waiter that
  // looks at its flags before it waits must read WakeEpoch() before looking
  // and pass it as `since_epoch`: the wait then also returns at once for a
  // Wake() that came between the look and the wait (without it, the epoch is
  // read when the wait starts and such a Wake() is lost).
  absl::StatusOr<uint64_t> WaitForHeadOrCancel(uint64_t known_head, absl::Duration timeout,
                                               absl::Duration poll_interval,
                                               const std::atomic<bool>* cancel,
                                               std::optional<uint64_t> since_epoch = std::nullopt);
  void Wake();
  uint64_t WakeEpoch();

  // Called by the writer after each commit.
  void PublishHead(uint64_t head);

  // The derived environment (STORE/derived/): read models, checkpoints, dead
  // letters and snapshots, which may be deleted and rebuilt from the log. Its
  // writes never take the log's writer lock. Opened (and created, unless the
  // store is read-only) on first use; lives as long as the store.
  absl::StatusOr<LmdbEnv*> DerivedEnv();
  const StoreOptions& options() const { return options_; }
  // The log environment and its databases, for VerifyStore and BackupStore.
  LmdbEnv* log_env() const { return env_.get(); }
  const LogDbs& dbs() const { return dbs_; }
  // The group commit writer (null when read-only), for tests.
  const Writer* writer() const { return writer_.get(); }

 private:
  StoreImpl(std::string dir, std::string registry_key, const StoreOptions& options, std::unique_ptr<LmdbEnv> env,
            LogDbs dbs, std::string store_id);

  // Looks up a stream's record in `txn`; NotFound when it has none.
  absl::StatusOr<StreamState> ReadStreamState(MDB_txn* txn, absl::string_view stream);
  absl::StatusOr<std::vector<AppendResult>> Submit(std::vector<RequestPart> parts,
                                                   const AppendOptions& options);

  const std::string dir_;
  const std::string registry_key_;
  const StoreOptions options_;
  std::unique_ptr<LmdbEnv> env_;
  const LogDbs dbs_;
  const std::string store_id_;
  std::unique_ptr<Writer> writer_;

  absl::Mutex derived_mu_;
  std::unique_ptr<LmdbEnv> derived_ ABSL_GUARDED_BY(derived_mu_);

  // When appends last freed stale reader slots (microseconds, see Submit).
  std::atomic<int64_t> last_reader_check_us_{0};

  absl::Mutex head_mu_;
  absl::CondVar head_cv_;
  uint64_t head_ ABSL_GUARDED_BY(head_mu_) = 0;
  uint64_t wake_epoch_ ABSL_GUARDED_BY(head_mu_) = 0;  // bumped by Wake()
};

}  // namespace rill::internal

#endif  // RILL_ENGINE_STORE_IMPL_H_
