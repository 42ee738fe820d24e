// Options for opening a store, appending and reading. Every field has its
// default in the declaration, so `StoreOptions{}` is a sensible store.
#ifndef RILL_OPTIONS_H_
#define RILL_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace rill {

class EventView;

// When an append's transaction counts as written.
enum class Durability : uint8_t {
  // An append returns only after its commit has been fsync'd (data pages,
  // then the meta page). Survives a process crash, an OS crash and power loss.
  // (A replicated node's appends are as durable as the JetStream quorum that
  // stored them; its local replica's commits follow
  // ReplicationOptions::sync_replica.)
  kDurable = 0,
  // UNSAFE FOR POWER LOSS. Commits are not fsync'd (LMDB MDB_NOSYNC): an
  // append survives the process being killed, but an OS crash or power loss
  // may lose recent commits. Never corrupts the store on a process crash.
  // For tests, bulk imports and benchmarks that say so.
  kNoSyncUnsafe = 1,
};

struct StoreOptions {
  // Create the store when the directory does not exist or is empty.
  bool create_if_missing = true;
  // Open without write access: Append fails with FailedPrecondition. The
  // store must already exist.
  bool read_only = false;
  // See Durability. The default never acknowledges an append before fsync.
  Durability durability = Durability::kDurable;
  // Size of the memory map to start with. The map grows automatically
  // (doubling, then in steps of map_growth_step) when it fills up; this only
  // sets where it starts. The file on disk grows with the data, not with the
  // map.
  size_t initial_map_size = size_t{1} << 30;  // 1 GiB
  // Largest step by which the map grows once it is past this size.
  size_t map_growth_step = size_t{4} << 30;  // 4 GiB
  // Most append requests the writer drains into one transaction (one fsync).
  size_t max_batch_requests = 4096;
  // Most payload bytes the writer drains into one transaction.
  size_t max_batch_bytes = size_t{64} << 20;  // 64 MiB
  // Group commit: how long the next batch may wait for the callers that the
  // last commit just released to append again (threads that append in a
  // loop, each waiting for its own acknowledgement). Without it those callers
  // miss the batch that starts right after their commit and the threads split
  // into two groups that take turns, each paying its own fsync. The wait ends
  // as soon as they are all back, the batch is full, or none has come back
  // for a quarter of this time; a thread never waits for itself (on any
  // store). When none of them come back the wait halves, down to none, and
  // is tried again at full length every 64 batches, so callers that are not
  // looping pay a few short waits, then ~0.4 us per batch on average. At
  // most 1 s (longer settings are cut). Zero: never wait
  // (docs/architecture.md, "Group commit wait").
  absl::Duration group_commit_wait = absl::Microseconds(100);
  // Maximum number of reader slots (concurrent read transactions across all
  // processes that open the store). Fixed when the lock file is created.
  unsigned max_readers = 256;
};

// An idempotency key makes an append safe to retry; see Store::Append.
struct AppendOptions {
  // Empty: no idempotency. Otherwise 1..kMaxIdempotencyKeyBytes bytes.
  std::string idempotency_key;
};

enum class Direction : uint8_t { kForward = 0, kBackward = 1 };

// Which events of the whole log a read or subscription delivers. An empty
// filter matches every event; the conditions that are set must all hold.
struct EventFilter {
  // The event's type is one of these (exact match). Empty: any type.
  std::vector<std::string> types;
  // The event's stream name starts with this. Empty: any stream.
  std::string stream_prefix;

  bool empty() const { return types.empty() && stream_prefix.empty(); }
  // Whether `event` passes this filter: the one definition that reads,
  // subscriptions, projections and replays all use.
  bool Matches(const EventView& event) const;
};

struct ReadOptions {
  Direction direction = Direction::kForward;
  // Most events to return (after filtering).
  size_t limit = std::numeric_limits<size_t>::max();
  // ReadAll and ScanAll only.
  EventFilter filter;
};

}  // namespace rill

#endif  // RILL_OPTIONS_H_
