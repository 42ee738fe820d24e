// Projection administration from outside the runner: rebuild requests,
// recorded statuses, dead letters and resets. The admin tool is built on
// these; they work while another process runs the projections, and take
// effect through records in the store's derived environment that the runner
// of whichever process runs the projection picks up.
//
// Thread-safety: plain functions over a Store; call them from any thread.
#ifndef RILL_PROJECTION_ADMIN_H_
#define RILL_PROJECTION_ADMIN_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "rill/metrics.h"
#include "rill/projection.h"
#include "rill/store.h"

namespace rill {

// Records a rebuild request for `projection` in the store at `store`, for
// the runner of whichever process runs that projection to pick up (within
// its poll interval, or when it next starts).
[[nodiscard]] absl::Status RequestRebuild(Store* store, absl::string_view projection);

// Reads the projections' recorded status (catalog and checkpoints) without
// running them. State: kStopped when no process runs the projection;
// otherwise kRebuilding, kCaughtUp (checkpoint at the head) or kRunning.
// Counters that live in the runner (events_applied, errors, last_error) are
// zero/empty. DataLoss when a catalog entry is corrupt.
[[nodiscard]] absl::StatusOr<std::vector<ProjectionStatus>> ReadProjectionStatuses(Store* store);

// Whether some process (this one included) runs `projection` now.
[[nodiscard]] absl::StatusOr<bool> ProjectionIsRunning(Store* store, absl::string_view projection);

// The dead letters of `projection`, by position; NotFound when the store
// has no such projection.
[[nodiscard]] absl::StatusOr<std::vector<ParkedEvent>> ReadParkedEvents(
    Store* store, absl::string_view projection);

// Records a request for whichever process runs `projection` to retry its
// parked event at `position` (as ProjectionRunner::RetryParked, within its
// poll interval or when it next starts). The outcome shows in the dead
// letters: gone when Apply succeeded; otherwise still there with the new
// error and one more attempt. NotFound when nothing is parked there.
[[nodiscard]] absl::Status RequestRetryParked(Store* store, absl::string_view projection,
                                              uint64_t position);

// Deletes one dead letter (the event stays unapplied). NotFound when there
// is none at `position`.
[[nodiscard]] absl::Status DropParkedEvent(Store* store, absl::string_view projection,
                                           uint64_t position);

// Forgets `projection` entirely: its catalog entry, every generation's rows
// (serving, building, retired, as-of), its dead letters and any pending
// rebuild request. The next runner that runs it builds it from position 0
// (the model is empty until then). FailedPrecondition while a process runs
// it (stop it first; `RequestRebuild` is the online way); NotFound when the
// store has no such projection.
[[nodiscard]] absl::Status ResetProjection(Store* store, absl::string_view projection);

// Adds each projection's figures to `metrics` (rill/metrics.h): from the
// runner of this process (with events applied and errors since it started),
// or, from any process, from the store's catalog (ReadProjectionStatuses).
[[nodiscard]] absl::Status AddProjectionMetrics(ProjectionRunner* runner, Metrics* metrics);
[[nodiscard]] absl::Status AddProjectionMetrics(Store* store, Metrics* metrics);

}  // namespace rill

#endif  // RILL_PROJECTION_ADMIN_H_
