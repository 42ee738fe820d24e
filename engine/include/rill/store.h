// Store: an append-only event log in one directory on local disk.
//
// A store holds named streams of events. Each appended event gets the next
// version of its stream (0, 1, 2, ...) and the next global position of the
// log (1, 2, 3, ..., gapless; commit order equals position order).
//
// Thread-safety: every method may be called from any number of threads at
// once. Appends from many threads are group-committed: one transaction and
// one fsync for everything queued while the previous commit was under way. Several processes
// may open the same store: all may read; appends from several processes are
// serialized by LMDB's writer lock (see docs/guarantees.md).
//
// Example:
//   absl::StatusOr<std::unique_ptr<rill::Store>> store =
//       rill::Store::Open("/var/lib/orders");
//   if (!store.ok()) return store.status();
//   rill::EventData created{"OrderCreated", R"({"order":"o-1"})"};
//   absl::StatusOr<rill::AppendResult> r = (*store)->Append(
//       "order-o-1", rill::ExpectedVersion::NoStream(), {created});
#ifndef RILL_STORE_H_
#define RILL_STORE_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "rill/event.h"
#include "rill/expected_version.h"
#include "rill/limits.h"
#include "rill/options.h"
#include "rill/subscription.h"

namespace rill {

namespace internal {
class StoreCore;
}  // namespace internal

// The on-disk format version this build writes and the newest it can open.
inline constexpr uint32_t kFormatVersion = 1;

// Read a stream backwards from its last event.
inline constexpr int64_t kStreamEnd = std::numeric_limits<int64_t>::max();
// Read the log backwards from its last event.
inline constexpr uint64_t kLogEnd = std::numeric_limits<uint64_t>::max();

// What one stream of an append was given.
struct AppendResult {
  std::string stream;
  int64_t first_version = 0;
  int64_t last_version = 0;
  uint64_t first_position = 0;
  uint64_t last_position = 0;
  // True when this is the recorded result of an earlier request with the
  // same idempotency key: nothing was written this time.
  bool deduplicated = false;
};

// One stream's part of an AppendMulti request.
struct StreamAppend {
  std::string stream;
  ExpectedVersion expected = ExpectedVersion::Any();
  std::vector<EventData> events;
};

struct StreamInfo {
  std::string name;
  bool exists = false;
  int64_t last_version = -1;  // -1 when the stream does not exist
  uint64_t event_count = 0;
  uint64_t first_position = 0;
  uint64_t last_position = 0;
  absl::Time last_recorded_at = absl::InfinitePast();
};

struct StoreStats {
  uint32_t format_version = 0;
  std::string store_id;  // UUID form
  uint64_t head_position = 0;
  uint64_t event_count = 0;
  uint64_t stream_count = 0;
  uint64_t idempotency_keys = 0;
  uint64_t map_size = 0;    // current memory map size, bytes
  uint64_t file_bytes = 0;  // size of the data file on disk
  uint64_t used_bytes = 0;  // pages in use * page size
  // Reader slots held now: by open read transactions of live processes, or
  // left by dead processes and not yet reclaimed (see stale_readers).
  unsigned readers_in_use = 0;
  unsigned max_readers = 0;
  // Of those, the slots of processes that died without ending their read
  // transaction. A stale slot that still holds a snapshot pins pages like a
  // live reader. They are reclaimed by Open, by this process's appends (at
  // most once a second), and by ClearStaleReaders().
  unsigned stale_readers = 0;
  // How many write transactions behind the newest one the oldest snapshot
  // held by any reader slot (live or stale) is; 0 when no reader holds an
  // older snapshot. Pages freed by those transactions cannot be reused while
  // it is held, so the data file grows instead (docs/reliability.md,
  // "Long readers").
  uint64_t oldest_reader_lag = 0;
  // The process holding that oldest snapshot (0 when none).
  int64_t oldest_reader_pid = 0;
  Durability durability = Durability::kDurable;
  bool read_only = false;
};

class Store {
 public:
  // Opens the store in `dir`, creating it when `options.create_if_missing`
  // and the directory is missing or empty. Errors:
  //   NotFound            dir does not exist and may not be created
  //                       (read_only, or create_if_missing off);
  //   FailedPrecondition  dir exists but is not a rill store (also an empty
  //                       dir that may not be created in), or its format
  //                       version is newer than kFormatVersion;
  //   PermissionDenied    dir or its files cannot be opened for writing;
  //   DataLoss            the store's meta record is corrupt.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& dir,
                                                     const StoreOptions& options = StoreOptions());

  // Closes the store. REQUIRES: no call on this store is in flight, and the
  // subscriptions it created have been destroyed.
  virtual ~Store() = default;

  // Appends `events` (1..kMaxEventsPerAppend) to `stream` atomically, if the
  // stream's version matches `expected`. Returns only once the events are
  // durable (see Durability). Errors (nothing is written on any of them):
  //   Aborted            expected version mismatch; the message names both;
  //   AlreadyExists      the idempotency key was used by a different request;
  //   InvalidArgument    bad stream name, type, sizes, negative Exact(n) ...;
  //   FailedPrecondition the store is read-only;
  //   ResourceExhausted  the disk is full (the store stays usable);
  //   DataLoss           a stored record needed for the checks is corrupt.
  // With an idempotency key, a retry of the same request (same stream,
  // expected version, and events' types, content types, schema versions,
  // payloads and metadata; event ids are not compared) returns the first
  // result with deduplicated = true and writes nothing, even when the stream
  // has moved on since.
  [[nodiscard]] virtual absl::StatusOr<AppendResult> Append(
      absl::string_view stream, ExpectedVersion expected, absl::Span<const EventData> events,
      const AppendOptions& options = AppendOptions()) = 0;

  // Appends to several distinct streams in one transaction: either every
  // stream's expected version matches and all events are written, or nothing
  // is. Events get positions in request order. Results are in request order.
  [[nodiscard]] virtual absl::StatusOr<std::vector<AppendResult>> AppendMulti(
      absl::Span<const StreamAppend> appends, const AppendOptions& options = AppendOptions()) = 0;

  // Events of `stream` from `from_version` (inclusive) in `options.direction`,
  // at most `options.limit` of them. Backwards from kStreamEnd starts at the
  // last event. NotFound when the stream does not exist.
  [[nodiscard]] virtual absl::StatusOr<std::vector<RecordedEvent>> ReadStream(
      absl::string_view stream, int64_t from_version,
      const ReadOptions& options = ReadOptions()) = 0;

  // Events of the whole log from `from_position` (inclusive) that match
  // `options.filter`, in `options.direction`, at most `options.limit`.
  // Backwards from kLogEnd starts at the head.
  [[nodiscard]] virtual absl::StatusOr<std::vector<RecordedEvent>> ReadAll(
      uint64_t from_position, const ReadOptions& options = ReadOptions()) = 0;

  // Like ReadAll, without copying each event: `fn` sees a view of each
  // matching event and returns false to stop. Runs in short read
  // transactions that have ended before `fn` is called, so `fn` may take its
  // time and may append. DataLoss on a record that fails its checksum or
  // verification (events before it have been delivered).
  [[nodiscard]] virtual absl::Status ScanAll(uint64_t from_position, const ReadOptions& options,
                                             absl::FunctionRef<bool(const EventView&)> fn) = 0;

  // Like ReadStream, through a view (see ScanAll). NotFound when the stream
  // does not exist.
  [[nodiscard]] virtual absl::Status ScanStream(absl::string_view stream, int64_t from_version,
                                                const ReadOptions& options,
                                                absl::FunctionRef<bool(const EventView&)> fn) = 0;

  // Facts about one stream; `exists` is false for a stream with no events.
  [[nodiscard]] virtual absl::StatusOr<StreamInfo> GetStreamInfo(absl::string_view stream) = 0;

  // Streams whose names start with `prefix`, in name order, after
  // `start_after` (for paging), at most `limit`.
  [[nodiscard]] virtual absl::StatusOr<std::vector<StreamInfo>> ListStreams(
      absl::string_view prefix, size_t limit = std::numeric_limits<size_t>::max(),
      absl::string_view start_after = "") = 0;

  // Position of the last committed event (0 for an empty log).
  [[nodiscard]] virtual absl::StatusOr<uint64_t> HeadPosition() = 0;

  // Blocks until the head is past `known_head` or `timeout` has passed;
  // returns the head either way. Woken at once by commits of this process,
  // and by polling every `poll_interval` for commits of other processes.
  [[nodiscard]] virtual absl::StatusOr<uint64_t> WaitForHead(
      uint64_t known_head, absl::Duration timeout,
      absl::Duration poll_interval = absl::Milliseconds(50)) = 0;

  // Catch-up subscription to the whole log, starting after `after_position`
  // (0: from the first event). See subscription.h.
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(
      uint64_t after_position, SubscriptionOptions options, SubscriptionHandler handler) = 0;

  [[nodiscard]] virtual absl::StatusOr<StoreStats> Stats() = 0;

  // Frees the reader slots of processes that died holding a read
  // transaction (StoreStats::stale_readers), in the log and, if it is open,
  // the derived environment, so the pages they pinned can be reused.
  // Returns how many slots were freed. Safe at any time, also while other
  // processes read and write; works on a read-only store too.
  [[nodiscard]] virtual absl::StatusOr<unsigned> ClearStaleReaders() = 0;

  // The directory the store was opened from.
  virtual const std::string& dir() const = 0;
  // The UUID chosen when the store was created.
  virtual const std::string& store_id() const = 0;

  // The engine behind this store, for rill's own components: snapshots
  // (snapshot.h), projections, and the admin functions (admin.h) reach the
  // store's environments through it. Not for applications: the type is
  // rill's internal one. A Store that wraps another (a decorator that counts
  // or traces calls) returns the wrapped store's core(); one that stands in
  // for rill entirely (a test double) returns nullptr, and those components
  // then fail with FailedPrecondition.
  virtual internal::StoreCore* core() = 0;
};

}  // namespace rill

#endif  // RILL_STORE_H_
