// StoreImpl: the Store behind the public interface, on a local LMDB log.
//
// The append path: StoreImpl validates a request and submits it to the
// Writer (writer.h), whose group commit runs it in one LmdbEnv::Write
// (lmdb_env.h) and then publishes the new head (head.h). Reads scan the log
// in short read transactions (store_read.cc). Opening the directory is
// store_open.h's; what snapshots, projections and the admin functions need
// beyond the public API is the StoreCore (store_core.h).
//
// Threads: the caller threads (validation, fingerprints, reads; one of them
// at a time leads a group commit) and one thread per subscription. Reads
// never take a lock other than the env's shared resize lock for the length
// of one short transaction.
#ifndef RILL_ENGINE_STORE_IMPL_H_
#define RILL_ENGINE_STORE_IMPL_H_

#include <memory>
#include <string>
#include <vector>

#include "codec.h"
#include "fingerprint.h"
#include "rill/store.h"
#include "store_core.h"
#include "store_open.h"

namespace rill::internal {

class Writer;
struct AppendRequest;

// Validates one request of an Append or AppendMulti (streams, expected
// versions, events, sizes, the idempotency key) and fills `request` with it
// and its fingerprint. Shared by the embedded and the replicated store.
absl::Status PrepareRequest(std::vector<RequestPart> parts, const AppendOptions& options,
                            AppendRequest* request);
// The parts of an AppendMulti: InvalidArgument when it names no stream or a
// stream twice.
absl::StatusOr<std::vector<RequestPart>> MultiParts(absl::Span<const StreamAppend> appends);

class StoreImpl final : public Store {
 public:
  // The store on the local log in `dir` (replicated or not: a replicated
  // node's Store wraps this one, replicated_store.h).
  static absl::StatusOr<std::unique_ptr<StoreImpl>> OpenLocal(const std::string& dir,
                                                              const StoreOptions& options);
  ~StoreImpl() override;

  absl::StatusOr<AppendResult> Append(absl::string_view stream, ExpectedVersion expected,
                                      absl::Span<const EventData> events,
                                      const AppendOptions& options) override;
  absl::StatusOr<std::vector<AppendResult>> AppendMulti(absl::Span<const StreamAppend> appends,
                                                        const AppendOptions& options) override;
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
  const std::string& dir() const override { return core_.dir(); }
  const std::string& store_id() const override { return core_.store_id(); }
  StoreCore* core() override { return &core_; }

  // The group commit writer (null when read-only), for tests, and for the
  // replica, which applies replicated transactions through it.
  const Writer* writer() const { return writer_.get(); }
  Writer* mutable_writer() { return writer_.get(); }

 private:
  StoreImpl(const std::string& dir, OpenedLog log, const StoreOptions& options);

  // Looks up a stream's record in `txn`; NotFound when it has none.
  absl::StatusOr<StreamState> ReadStreamState(MDB_txn* txn, absl::string_view stream);
  absl::StatusOr<std::vector<AppendResult>> Submit(std::vector<RequestPart> parts,
                                                   const AppendOptions& options);

  // Destroyed in reverse order: the writer, then the environments, and the
  // registration last.
  StoreRegistration registration_;
  StoreCore core_;
  std::unique_ptr<Writer> writer_;
};

}  // namespace rill::internal

#endif  // RILL_ENGINE_STORE_IMPL_H_
