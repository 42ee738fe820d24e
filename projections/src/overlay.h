// The write side of a read model during one batch.
//
// Apply never writes to LMDB directly: its writes go into an in-memory
// overlay, one per event (so a failed Apply can be thrown away and retried),
// merged into the batch's overlay when the event succeeds. Reads see the
// event's own writes, then the batch's, then the committed model (through a
// read transaction opened on first use). The runner writes the batch overlay
// and the new checkpoint in one short write transaction: Apply - user code,
// possibly slow - never runs inside a write transaction.
#ifndef RILL_PROJECTIONS_OVERLAY_H_
#define RILL_PROJECTIONS_OVERLAY_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "catalog.h"
#include "lmdb_env.h"
#include "rill/read_model.h"

namespace rill::internal {

// Row key (RowKey) -> new value, or nullopt for a delete.
using RowChanges = std::map<std::string, std::optional<std::string>>;

// Reads committed rows, each Get in a read transaction of its own: Apply may
// be slow or block, and must not hold a transaction (and with it the derived
// environment's resize lock) while it does. The committed rows of a
// generation only change when its own worker commits, so separate
// transactions still see one consistent model during a batch.
class CommittedRows {
 public:
  CommittedRows(LmdbEnv* env, MDB_dbi rows) : env_(env), rows_(rows) {}
  absl::StatusOr<std::optional<std::string>> Get(absl::string_view row_key);

 private:
  LmdbEnv* env_;
  MDB_dbi rows_;
};

class EventTxn final : public ReadModelTxn {
 public:
  EventTxn(const std::vector<std::string>* tables, uint64_t generation, RowChanges* batch,
           CommittedRows* committed)
      : tables_(tables), generation_(generation), batch_(batch), committed_(committed) {}

  absl::StatusOr<std::optional<std::string>> Get(absl::string_view table,
                                                 absl::string_view key) override;
  absl::Status Put(absl::string_view table, absl::string_view key,
                   absl::string_view value) override;
  absl::Status Delete(absl::string_view table, absl::string_view key) override;

  // Moves this event's writes into the batch.
  void MergeIntoBatch();
  void Discard() { own_.clear(); }

 private:
  absl::StatusOr<std::string> Key(absl::string_view table, absl::string_view key) const;

  const std::vector<std::string>* tables_;
  uint64_t generation_;
  RowChanges* batch_;
  CommittedRows* committed_;
  RowChanges own_;
};

// Writes `changes` into the rows database.
absl::Status WriteChanges(MDB_txn* txn, MDB_dbi rows, const RowChanges& changes);

}  // namespace rill::internal

#endif  // RILL_PROJECTIONS_OVERLAY_H_
