// The projections' catalog in the derived environment: its databases, the
// catalog entry of each projection with its generations, as-of sets, row
// keys, the runner's lock file, and the small write helpers every part of
// the projections uses (schema/projections.fbs, docs/format.md). Dead
// letters and retry requests: dead_letters.h.
#ifndef RILL_PROJECTIONS_CATALOG_H_
#define RILL_PROJECTIONS_CATALOG_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lmdb_env.h"
#include "rill/projection.h"
#include "store_core.h"

namespace rill::internal {

struct GenerationRec {
  uint64_t id = 0;
  uint32_t version = 0;
  uint64_t checkpoint = 0;
};

// A dead letter (dead_letters.h has the work on them).
struct DeadLetterRec {
  std::string stream;
  std::string type;
  std::string error;
  int attempts = 0;
  int64_t parked_us = 0;
  uint64_t generation = 0;  // the generation whose Apply parked it
};

struct CatalogRec {
  std::string name;
  GenerationRec active;
  std::optional<GenerationRec> building;
  std::vector<uint64_t> retired;
};

// The named databases the projections use in the derived environment.
struct ProjectionDbs {
  MDB_dbi catalog = 0;
  MDB_dbi dead = 0;
  MDB_dbi requests = 0;
  MDB_dbi asof = 0;
  MDB_dbi meta = 0;
  MDB_dbi rows = 0;  // "rm": every generation's rows

  // Opens (creating unless `env` is read-only) every database.
  static absl::StatusOr<ProjectionDbs> Open(LmdbEnv* env);
};

std::string EncodeCatalog(const CatalogRec& rec);
absl::StatusOr<CatalogRec> DecodeCatalog(absl::string_view value);
std::string EncodeDeadLetter(const DeadLetterRec& rec);
absl::StatusOr<DeadLetterRec> DecodeDeadLetter(absl::string_view value);
std::string EncodeRebuildRequest(int64_t requested_us);
std::string EncodeAsOf(const GenerationRec& gen, uint64_t position);
absl::StatusOr<std::pair<GenerationRec, uint64_t>> DecodeAsOf(absl::string_view value);

// `v` as 8 big-endian bytes (keys sort by number).
std::string BigEndianKey(uint64_t v);

// name 0x00 label
std::string AsOfKey(absl::string_view projection, absl::string_view label);
// generation(BE) len(table) table [key]: a generation's rows of one table.
std::string RowKey(uint64_t generation, absl::string_view table, absl::string_view key);
inline std::string GenerationPrefix(uint64_t generation) {
  return RowKey(generation, "", "").substr(0, 8);
}

// The derived environment of a store with the projections' databases open.
struct Derived {
  Store* store;     // as the caller gave it: public reads go through it
  StoreCore* core;  // scans that report progress, the head and wake-ups
  LmdbEnv* env;     // core->DerivedEnv()
  ProjectionDbs dbs;
};
// Opens (creating on a writable store) the derived environment of `store`.
absl::StatusOr<Derived> OpenDerived(Store* store);

inline constexpr size_t kMaxProjectionName = 200;

// One runner per projection across processes: the runner holds an exclusive
// open-file-description lock (fcntl F_OFD_SETLK) on
// derived/projection-NAME.lock while it runs; the kernel drops it when the
// process dies. OFD locks (not flock) so that ProjectionLockHeld can look
// without taking the lock, which could make a starting runner fail.
std::string ProjectionLockPath(const LmdbEnv* env, absl::string_view projection);
// Takes the lock; returns the fd holding it (close it to release).
// FailedPrecondition when another runner holds it.
absl::StatusOr<int> LockProjection(const std::string& lock_path, absl::string_view projection);
// Whether some process holds the lock now.
absl::StatusOr<bool> ProjectionLockHeld(const std::string& lock_path);

// Validates a projection or table name: 1..max bytes of [A-Za-z0-9_.-].
absl::Status ValidateName(absl::string_view what, absl::string_view name, size_t max);

// Reads a catalog entry in `txn`; nullopt when there is none.
absl::StatusOr<std::optional<CatalogRec>> ReadCatalog(MDB_txn* txn, const ProjectionDbs& dbs,
                                                      absl::string_view projection);
// Takes the next generation id (in a write transaction).
absl::StatusOr<uint64_t> NextGeneration(MDB_txn* txn, const ProjectionDbs& dbs);
// What LmdbEnv::Write names a failed commit of derived data with. Every
// write of the projections is one LmdbEnv::Write of the derived
// environment, which grows the map and runs the work again on MDB_MAP_FULL:
// return the LMDB errors below (LmdbError, Put, Del, DeletePrefix) as they
// are.
inline constexpr char kCommitDerived[] = "committing derived data";

// Deletes up to `max_rows` rows of `dbi` whose keys start with `prefix`,
// skipping those whose value `keep` (when given) wants kept. Returns how many
// were deleted.
absl::StatusOr<size_t> DeletePrefix(MDB_txn* txn, MDB_dbi dbi, absl::string_view prefix,
                                    size_t max_rows,
                                    const std::function<bool(absl::string_view)>& keep = {});

// mdb_put / mdb_del with the error mapped by LmdbError (a too large key or
// value is InvalidArgument; a missing key is no error for Del).
absl::Status Put(MDB_txn* txn, MDB_dbi dbi, absl::string_view key, absl::string_view value);
absl::Status Del(MDB_txn* txn, MDB_dbi dbi, absl::string_view key);

}  // namespace rill::internal

#endif  // RILL_PROJECTIONS_CATALOG_H_
