// Maintenance of a store: a full integrity check and a hot backup. Both work
// on a store that other processes (a running service) have open and write to,
// and both see one consistent state of the log: each runs in one read
// transaction, which pins the pages it sees until it ends (the data file may
// grow meanwhile instead of reusing pages; see docs/reliability.md).
//
// The `rill` admin tool (`rill verify`, `rill backup`) is built on these.
//
// Thread-safety: may be called from any thread, concurrently with every
// other Store method.
#ifndef RILL_ADMIN_H_
#define RILL_ADMIN_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "rill/store.h"

namespace rill {

struct VerifyOptions {
  // Called now and then with the records checked so far and the total.
  std::function<void(uint64_t done, uint64_t total)> progress;
  // Problems described in VerifyReport::problems; the rest are only counted.
  size_t max_problems = 100;
};

// What VerifyStore checked and found.
struct VerifyReport {
  uint64_t head_position = 0;
  uint64_t events = 0;            // event records checked
  uint64_t streams = 0;           // stream records checked
  uint64_t index_entries = 0;     // (stream, version) -> position entries checked
  uint64_t idempotency_keys = 0;  // idempotency records checked
  // One line per problem, e.g. "event at position 17 fails its checksum".
  std::vector<std::string> problems;
  uint64_t problem_count = 0;  // all problems, also those not described

  bool ok() const { return problem_count == 0; }
};

// Checks every record of the log: each event's checksum and envelope; the
// positions 1..head gapless and each record's position equal to its key;
// every stream's versions contiguous from 0; each stream record equal to what
// its events say (first/last position, last version); every index entry
// pointing at the event with that stream and version, and one entry per
// event; every idempotency record decodable, its results naming existing
// events of the right stream and versions; the meta record. (Derived data
// is checked by rill::ReadProjectionStatuses and SnapshotStore::List, which
// decode every catalog entry and snapshot.) What it finds is in the report; the status is an error
// only when the check itself could not run (I/O error, not a store). Memory: about 16 bytes per
// event.
[[nodiscard]] absl::StatusOr<VerifyReport> VerifyStore(Store* store,
                                                       const VerifyOptions& options = {});

struct BackupOptions {
  // Copy only the pages in use, renumbered (smaller, slower); otherwise the
  // data files are copied as they are.
  bool compact = false;
  // Called now and then with the bytes written so far and an estimate of the
  // total.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct BackupResult {
  uint64_t head_position = 0;  // the backup holds the log up to here
  uint64_t log_bytes = 0;      // bytes written for the log
  uint64_t derived_bytes = 0;  // bytes written for derived data
};

// Writes a consistent copy of the store to `dest` (which must not exist, or
// be an empty directory), while the store stays in use. The derived data
// (read models, checkpoints, snapshots) is copied first and the log second,
// so every checkpoint in the copy is at or before the copy's head. The copy
// is fsync'd before this returns; open it with Store::Open like any store.
// Errors: FailedPrecondition when dest exists and is not empty, or the
// store has no engine behind it (core() null);
// ResourceExhausted when dest's disk is full (the partial copy is removed).
[[nodiscard]] absl::StatusOr<BackupResult> BackupStore(Store* store, const std::string& dest,
                                                       const BackupOptions& options = {});

}  // namespace rill

#endif  // RILL_ADMIN_H_
