// Batch application: applies the next events of the log to one generation of
// a projection's tables and commits the rows, the dead letters, the new
// checkpoint and the caller's catalog write in one transaction of the derived
// environment, so after a crash every event is applied exactly once. The
// worker's batches (serving and rebuilding generations) and as-of rebuilds
// (ProjectionRunner::RebuildAsOf) are both built on ApplyBatch.
#ifndef RILL_PROJECTIONS_APPLY_BATCH_H_
#define RILL_PROJECTIONS_APPLY_BATCH_H_

#include <atomic>
#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "catalog.h"
#include "rill/projection.h"

namespace rill::internal {

// How a batch runs.
struct BatchSpec {
  size_t batch_size = 0;             // most log records to read
  uint64_t last_position = kLogEnd;  // apply nothing past this
  // Events that keep failing: skipped (parked) with `park`, else the batch
  // stops before the first of them. Parked events are recorded as dead
  // letters when `record_dead_letters`.
  bool park = false;
  bool record_dead_letters = true;
  const std::atomic<bool>* stop = nullptr;  // ends the batch early when true
};

// What a batch did.
struct BatchOutcome {
  size_t records = 0;       // log records read (matching or not)
  uint64_t checkpoint = 0;  // the generation's checkpoint after the batch
  bool failed = false;      // Apply failed without `park`
  absl::Status error;       // why it failed (or the last parked event's error)
  uint64_t applied = 0;
  uint64_t errors = 0;
  uint64_t parked = 0;
};

// Writes the catalog entry that goes with a batch: `next` is the batch's
// generation record with its new checkpoint.
using CatalogWrite = absl::FunctionRef<absl::Status(MDB_txn* txn, const GenerationRec& next)>;

// Applies the events after gen->checkpoint to generation `gen` of `def` as
// `spec` says, commits, and then sets *gen to the new record. Nothing is
// written when the batch moved nothing.
absl::StatusOr<BatchOutcome> ApplyBatch(const Derived& d, const ProjectionDef& def,
                                        GenerationRec* gen, const BatchSpec& spec,
                                        CatalogWrite write_catalog);

// def.apply(event, txn), with exceptions turned into Internal errors.
absl::Status CallApply(const ProjectionDef& def, const EventView& event, ReadModelTxn& txn);

}  // namespace rill::internal

#endif  // RILL_PROJECTIONS_APPLY_BATCH_H_
