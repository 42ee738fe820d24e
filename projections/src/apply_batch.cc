#include "apply_batch.h"

#include <algorithm>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "dead_letters.h"
#include "overlay.h"

namespace rill::internal {

absl::Status CallApply(const ProjectionDef& def, const EventView& event, ReadModelTxn& txn) {
  try {
    return def.apply(event, txn);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("Apply threw: ", e.what()));
  } catch (...) {
    return absl::InternalError("Apply threw a non-standard exception");
  }
}

absl::StatusOr<BatchOutcome> ApplyBatch(const Derived& d, const ProjectionDef& def,
                                        GenerationRec* gen, const BatchSpec& spec,
                                        CatalogWrite write_catalog) {
  BatchOutcome out;
  out.checkpoint = gen->checkpoint;
  if (gen->checkpoint >= spec.last_position) return out;
  RowChanges rows;
  CommittedRows committed(d.env, d.dbs.rows);
  std::vector<std::pair<uint64_t, DeadLetterRec>> dead;
  uint64_t unprocessed = 0;  // first position the batch did not process
  ScanProgress progress;
  absl::Status scan = d.core->ScanChunked(
      gen->checkpoint + 1, Direction::kForward, def.filter, spec.batch_size,
      [&](const EventView& event) {
        if (event.position() > spec.last_position || (spec.stop && spec.stop->load())) {
          unprocessed = event.position();
          return false;
        }
        EventTxn txn(&def.tables, gen->id, &rows, &committed);
        absl::Status s;
        absl::Duration backoff = def.retry_backoff;
        int attempts = 0;
        while (attempts < std::max(def.max_attempts, 1)) {
          ++attempts;
          s = CallApply(def, event, txn);
          if (s.ok()) break;
          txn.Discard();
          ++out.errors;
          if (attempts < def.max_attempts) {
            absl::SleepFor(backoff);
            backoff *= 2;
          }
        }
        if (s.ok()) {
          txn.MergeIntoBatch();
          ++out.applied;
          return true;
        }
        out.error = s;
        if (!spec.park) {
          out.failed = true;
          unprocessed = event.position();
          return false;
        }
        if (spec.record_dead_letters) {
          dead.push_back(
              {event.position(),
               DeadLetterRec{std::string(event.stream()), std::string(event.type()), s.ToString(),
                             attempts, absl::ToUnixMicros(absl::Now()), gen->id}});
        }
        ++out.parked;
        return true;
      },
      &progress);
  if (!scan.ok()) return scan;
  out.records = progress.records;
  uint64_t checkpoint = unprocessed != 0 ? unprocessed - 1 : progress.last_scanned;
  checkpoint = std::min(std::max(checkpoint, gen->checkpoint), spec.last_position);
  if (checkpoint == gen->checkpoint && rows.empty() && dead.empty()) return out;
  GenerationRec next = *gen;
  next.checkpoint = checkpoint;
  absl::Status s = d.env->Write(kCommitDerived, [&](MDB_txn* txn) -> absl::Status {
    if (absl::Status w = WriteChanges(txn, d.dbs.rows, rows); !w.ok()) return w;
    for (const auto& [position, rec] : dead) {
      absl::Status p =
          Put(txn, d.dbs.dead, DeadLetterKey(def.name, position), EncodeDeadLetter(rec));
      if (!p.ok()) return p;
    }
    return write_catalog(txn, next);
  });
  if (!s.ok()) return s;
  *gen = next;
  out.checkpoint = checkpoint;
  return out;
}

}  // namespace rill::internal
