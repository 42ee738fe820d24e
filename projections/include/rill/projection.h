// Projections: read models built from the log, asynchronously, exactly once.
//
// A projection is a name, a version, a filter, the names of its tables and an
// Apply function. A ProjectionRunner follows the log for each of its
// projections on a thread of its own (woken on commit, no busy polling),
// applies events in batches and writes each batch's read-model changes
// together with the new checkpoint in one transaction of the derived
// environment. After a crash at any moment, every event has been applied
// exactly once: a batch is either entirely in the model with its checkpoint,
// or not at all.
//
// Apply runs outside any write transaction (its writes are buffered and
// committed in one short transaction), so a slow projection never holds back
// the others.
//
// Rebuilds are blue/green: a new generation of the tables is built from
// position 0 while the current one keeps serving queries; once the new one
// has caught up, one catalog write swaps them and the old tables are dropped.
// Bumping `version` starts a rebuild; so does RequestRebuild, from this or any
// other process (a request record in the store that the runner picks up).
//
// This header is the runner's API. Administration from another process
// (rebuild requests, statuses, dead letters, resets) is in
// rill/projection_admin.h; the plugin interface of the admin tool in
// rill/projection_plugin.h.
//
// Thread-safety: every ProjectionRunner method may be called from any thread.
#ifndef RILL_PROJECTION_H_
#define RILL_PROJECTION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rill/event.h"
#include "rill/options.h"
#include "rill/read_model.h"
#include "rill/store.h"

namespace rill {

// What happens to an event whose Apply still fails after the retries.
enum class ErrorPolicy : uint8_t {
  // The projection stops in state kFailed, keeping the error text; the
  // checkpoint stays before the event. Starting the runner again retries.
  kStop = 0,
  // The event is parked in the dead-letter table (position, error text,
  // attempts) and the projection goes on with the next event.
  kPark = 1,
};

struct ProjectionDef {
  // 1..200 bytes of [A-Za-z0-9_.-].
  std::string name;
  // Bump it when Apply's meaning changes: the runner rebuilds the model.
  uint32_t version = 1;
  // Which events reach Apply. The checkpoint still moves past the others.
  EventFilter filter;
  // The tables Apply may use (1..32 names of [A-Za-z0-9_.-]).
  std::vector<std::string> tables;
  // Applies one event. Writes become visible, with the checkpoint, when the
  // batch commits. A non-OK status is an error (see error_policy).
  std::function<absl::Status(const EventView& event, ReadModelTxn& txn)> apply;
  ErrorPolicy error_policy = ErrorPolicy::kStop;
  // Attempts per event before the policy applies (the first try included),
  // with exponential backoff starting at `retry_backoff`.
  int max_attempts = 3;
  absl::Duration retry_backoff = absl::Milliseconds(10);
};

struct RunnerOptions {
  // Most log records read and applied per derived transaction (one commit,
  // one fsync, each). Live, batches are as small as the commits they follow.
  size_t batch_size = 4096;
  // How often to look for commits by other processes and for rebuild
  // requests recorded by other processes.
  absl::Duration poll_interval = absl::Milliseconds(50);
};

enum class ProjectionState : uint8_t {
  kRunning = 0,     // catching up
  kCaughtUp = 1,    // at the head, waiting for events
  kRebuilding = 2,  // a new generation is being built (the old one serves)
  kStopped = 3,     // the runner is stopped
  kFailed = 4,      // Apply failed under ErrorPolicy::kStop
};
const char* ProjectionStateName(ProjectionState state);

struct ProjectionStatus {
  std::string name;
  uint32_t version = 0;     // version of the serving generation
  uint64_t generation = 0;  // id of the serving generation (changes on each swap)
  ProjectionState state = ProjectionState::kStopped;
  uint64_t checkpoint = 0;      // last position reflected in the serving model
  uint64_t head = 0;            // head of the log when the status was taken
  uint64_t lag_events = 0;      // head - checkpoint
  absl::Duration lag_time;      // age of the oldest event not yet applied
  uint64_t events_applied = 0;  // since the runner started
  uint64_t errors = 0;          // failed Apply attempts since the runner started
  uint64_t parked = 0;          // events in the dead-letter table now
  std::string last_error;
  // While rebuilding: the new generation's version and checkpoint.
  uint32_t rebuild_version = 0;
  uint64_t rebuild_checkpoint = 0;
};

struct ParkedEvent {
  uint64_t position = 0;
  std::string stream;
  std::string type;
  std::string error;
  int attempts = 0;
  absl::Time parked_at;
};

class ProjectionRunner {
 public:
  // Starts one thread per projection. Each resumes from its checkpoint; a
  // projection whose version differs from the stored one is rebuilt
  // (blue/green). The store must outlive the runner; it may wrap another
  // (forwarding core()), and the runner's reads of the log go through it.
  // FailedPrecondition for a Store with no engine behind it.
  static absl::StatusOr<std::unique_ptr<ProjectionRunner>> Start(
      Store* store, std::vector<ProjectionDef> projections,
      const RunnerOptions& options = RunnerOptions());

  // Stops every projection thread (finishing the batch in flight).
  virtual ~ProjectionRunner() = default;
  virtual void Stop() = 0;

  // Blocks until the serving model of `projection` reflects every event up
  // to `position`; DeadlineExceeded after `timeout`. For read-your-writes:
  // WaitFor(name, append_result.last_position, ...).
  [[nodiscard]] virtual absl::Status WaitFor(absl::string_view projection, uint64_t position,
                                             absl::Duration timeout) = 0;

  // A consistent read-only view of the serving model.
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<ReadModelView>> View(
      absl::string_view projection) = 0;

  [[nodiscard]] virtual absl::StatusOr<ProjectionStatus> Status(absl::string_view projection) = 0;
  [[nodiscard]] virtual std::vector<ProjectionStatus> Statuses() = 0;

  // Starts a blue/green rebuild from position 0.
  [[nodiscard]] virtual absl::Status Rebuild(absl::string_view projection) = 0;

  // Builds the model as it was at `position` into a separate table set named
  // `label` (not swapped in; read it with ViewAsOf). Runs on the caller's
  // thread.
  [[nodiscard]] virtual absl::Status RebuildAsOf(absl::string_view projection, uint64_t position,
                                                 absl::string_view label) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<ReadModelView>> ViewAsOf(
      absl::string_view projection, absl::string_view label) = 0;

  // Dead letters of a projection with ErrorPolicy::kPark.
  [[nodiscard]] virtual absl::StatusOr<std::vector<ParkedEvent>> ListParked(
      absl::string_view projection) = 0;
  // Applies the parked event again (into the serving model); on success it
  // leaves the dead-letter table. The error otherwise.
  [[nodiscard]] virtual absl::Status RetryParked(absl::string_view projection,
                                                 uint64_t position) = 0;
  [[nodiscard]] virtual absl::Status DropParked(absl::string_view projection,
                                                uint64_t position) = 0;
};

}  // namespace rill

#endif  // RILL_PROJECTION_H_
