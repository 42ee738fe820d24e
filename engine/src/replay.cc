// Replay, built on the public scans only (Store::ScanAll / ScanStream).
//
// Range replays scan without the store's filter and apply `filter` here:
// a filtered ScanAll hides the events that do not match, so it could not
// tell where the range ends and would read on to the next matching event,
// possibly to the end of the log.
#include "rill/replay.h"

#include <algorithm>

namespace rill {
namespace {

absl::Status NullStore() { return absl::InvalidArgumentError("replay: the store is null"); }

// Hands `event` to `handler` if it matches; false when the handler stops.
bool Deliver(const EventFilter& filter, ReplayHandler handler, const EventView& event,
             ReplayResult* result) {
  if (!filter.Matches(event)) return true;
  ++result->delivered;
  result->last_position = event.position();
  if (handler(event)) return true;
  result->stopped = true;
  return false;
}

// Recorded time of the event at `position`, or InfiniteFuture() past the head.
absl::StatusOr<absl::Time> RecordedAt(Store* store, uint64_t position) {
  absl::Time at = absl::InfiniteFuture();
  ReadOptions one;
  one.limit = 1;
  absl::Status s = store->ScanAll(position, one, [&](const EventView& e) {
    at = e.recorded_at();
    return false;
  });
  if (!s.ok()) return s;
  return at;
}

}  // namespace

absl::StatusOr<ReplayResult> ReplayPositions(Store* store, uint64_t from, uint64_t to,
                                             const EventFilter& filter, ReplayHandler handler) {
  if (store == nullptr) return NullStore();
  ReplayResult result;
  from = std::max<uint64_t>(from, 1);
  if (to < from) return result;
  // Positions are gapless, so the range holds exactly to - from + 1 records
  // (fewer when it reaches past the head). No overflow: from >= 1.
  static_assert(sizeof(size_t) == sizeof(uint64_t));
  ReadOptions options;
  options.limit = static_cast<size_t>(to - from + 1);
  absl::Status s = store->ScanAll(
      from, options, [&](const EventView& e) { return Deliver(filter, handler, e, &result); });
  if (!s.ok()) return s;
  return result;
}

absl::StatusOr<uint64_t> FirstPositionAtOrAfter(Store* store, absl::Time t) {
  if (store == nullptr) return NullStore();
  absl::StatusOr<uint64_t> head = store->HeadPosition();
  if (!head.ok()) return head.status();
  // Smallest position in [1, head + 1] whose time is >= t, where head + 1
  // stands for "none". Times never decrease, so the predicate is monotone.
  uint64_t lo = 1, hi = *head + 1;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    absl::StatusOr<absl::Time> at = RecordedAt(store, mid);
    if (!at.ok()) return at.status();
    if (*at >= t) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

absl::StatusOr<ReplayResult> ReplayTimeRange(Store* store, absl::Time from, absl::Time to,
                                             const EventFilter& filter, ReplayHandler handler) {
  if (store == nullptr) return NullStore();
  ReplayResult result;
  if (from >= to) return result;
  absl::StatusOr<uint64_t> start = FirstPositionAtOrAfter(store, from);
  if (!start.ok()) return start.status();
  absl::Status s = store->ScanAll(*start, ReadOptions(), [&](const EventView& e) {
    if (e.recorded_at() >= to) return false;
    return Deliver(filter, handler, e, &result);
  });
  if (!s.ok()) return s;
  return result;
}

absl::StatusOr<ReplayResult> ReplayStream(Store* store, absl::string_view stream,
                                          int64_t to_version, ReplayHandler handler) {
  if (store == nullptr) return NullStore();
  if (to_version < 0) {
    return absl::InvalidArgumentError("ReplayStream: to_version must be >= 0");
  }
  ReplayResult result;
  ReadOptions options;
  if (to_version != kStreamEnd) {
    options.limit = static_cast<size_t>(to_version) + 1;
  }
  absl::Status s = store->ScanStream(stream, 0, options, [&](const EventView& e) {
    return Deliver(EventFilter(), handler, e, &result);
  });
  if (!s.ok()) return s;
  return result;
}

}  // namespace rill
