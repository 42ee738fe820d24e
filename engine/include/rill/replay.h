// Replay: any part of the log, fed to a handler at scan speed. A range of
// global positions, a range of recorded times, or one stream up to a version.
//
// Replays are scans (Store::ScanAll / ScanStream) underneath: the log is read
// in chunks, each in a short read transaction that has ended before the
// handler sees its events, so the handler may take its time, append, or take
// locks, and a replay never pins old pages for long. Every event committed
// before the replay starts and inside its range is delivered, once, in order;
// events committed while it runs may or may not be (a replay ends at the
// head it finds when it gets there).
//
// The handler sees an EventView that is valid only until it returns (call
// ToOwned() to keep an event) and returns false to stop the replay. A record
// that fails its checksum or verification ends the replay with DataLoss;
// the events before it have been delivered.
//
// Thread-safety: plain functions over a Store; call them from any thread.
#ifndef RILL_REPLAY_H_
#define RILL_REPLAY_H_

#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "rill/event.h"
#include "rill/options.h"
#include "rill/store.h"

namespace rill {

// Called for each event of a replay, in log (or stream) order; false stops.
using ReplayHandler = absl::FunctionRef<bool(const EventView&)>;

struct ReplayResult {
  // Events the handler was given (including the one that stopped it).
  uint64_t delivered = 0;
  // Position of the last event given to the handler; 0 when none was.
  uint64_t last_position = 0;
  // True when the handler returned false.
  bool stopped = false;
};

// Events at positions from..to (both inclusive) that match `filter`, in
// position order. `from` 0 means 1; a `to` past the head ends at the head;
// to < from replays nothing. Reads exactly the records in the range.
[[nodiscard]] absl::StatusOr<ReplayResult> ReplayPositions(Store* store, uint64_t from, uint64_t to,
                                                           const EventFilter& filter,
                                                           ReplayHandler handler);

// Events recorded at or after `from` and before `to` that match `filter`, in
// position order. Recorded times never decrease along the log (the writer
// guarantees it), so the first position is found by a binary search over
// positions (about log2(head) short reads) and the replay stops at the first
// event recorded at or after `to`. from >= to replays nothing.
[[nodiscard]] absl::StatusOr<ReplayResult> ReplayTimeRange(Store* store, absl::Time from,
                                                           absl::Time to, const EventFilter& filter,
                                                           ReplayHandler handler);

// The first position whose event was recorded at or after `t`; head + 1 when
// every event was recorded before `t` (1 on an empty log).
[[nodiscard]] absl::StatusOr<uint64_t> FirstPositionAtOrAfter(Store* store, absl::Time t);

// Events of `stream` from version 0 up to and including `to_version`
// (kStreamEnd: all of them), in version order. NotFound when the stream
// does not exist; InvalidArgument when to_version < 0.
[[nodiscard]] absl::StatusOr<ReplayResult> ReplayStream(Store* store, absl::string_view stream,
                                                        int64_t to_version, ReplayHandler handler);

}  // namespace rill

#endif  // RILL_REPLAY_H_
