// Dead letters: events a projection with ErrorPolicy::kPark gave up on, in
// the `proj.dead` database of the derived environment, and the retry
// requests other processes leave for the runner in `proj.requests`
// (docs/format.md). Listing, retrying, dropping and the requests all live
// here; the worker parks events (apply_batch.h) and runs the retries. The
// record itself (DeadLetterRec) is in catalog.h with the other records.
#ifndef RILL_PROJECTIONS_DEAD_LETTERS_H_
#define RILL_PROJECTIONS_DEAD_LETTERS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "catalog.h"
#include "rill/projection.h"

namespace rill::internal {

// name 0x00 position(BE): dead letters of one projection sort by position.
std::string DeadLetterKey(absl::string_view projection, uint64_t position);
std::string DeadLetterPrefix(absl::string_view projection);
// Retry requests in the `requests` database sort after the rebuild request
// (key: the bare name): name 0x00 "retry" position(BE).
std::string RetryRequestKey(absl::string_view projection, uint64_t position);
std::string RetryRequestPrefix(absl::string_view projection);

// The dead letters of `projection`, by position.
absl::StatusOr<std::vector<ParkedEvent>> ListDeadLetters(const Derived& d,
                                                         absl::string_view projection);
// Counts a projection's dead letters.
absl::StatusOr<uint64_t> CountDeadLetters(MDB_txn* txn, const ProjectionDbs& dbs,
                                          absl::string_view projection);
// Deletes one dead letter; NotFound when there is none at `position`.
absl::Status DropDeadLetter(const Derived& d, absl::string_view projection, uint64_t position);
// Deletes the dead letters of `projection` parked by `generation`.
absl::Status DropDeadLettersOf(MDB_txn* txn, const ProjectionDbs& dbs, absl::string_view projection,
                               uint64_t generation);

// Applies the event parked at `position` again, into the generation that
// parked it, when `live(generation)` says that generation still serves or
// is being built. On success the rows and the deletion of the dead letter
// commit together; a failure is recorded in the dead letter (error,
// attempts + 1) and returned. A letter whose generation was replaced is
// dropped (NotFound: nothing to retry). REQUIRES: called on the thread that
// runs the projection (the worker), which alone writes its rows.
absl::Status RetryDeadLetter(const Derived& d, const ProjectionDef& def, uint64_t position,
                             absl::FunctionRef<bool(uint64_t generation)> live);

// Records a request for the runner of `projection` to retry the event
// parked at `position` (RequestRetryParked); NotFound when nothing is
// parked there.
absl::Status RecordRetryRequest(const Derived& d, absl::string_view projection, uint64_t position);
// Deletes a retry request once the runner has acted on it.
absl::Status DeleteRetryRequest(const Derived& d, absl::string_view projection, uint64_t position);

}  // namespace rill::internal

#endif  // RILL_PROJECTIONS_DEAD_LETTERS_H_
