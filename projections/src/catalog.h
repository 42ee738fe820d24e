// The projections' records in the derived environment and their keys
// (schema/projections.fbs, docs/format.md).
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
#include "store_impl.h"

namespace rill::internal {

struct GenerationRec {
  uint64_t id = 0;
  uint32_t version = 0;
  uint64_t checkpoint = 0;
};

struct CatalogRec {
  std::string name;
  GenerationRec active;
  std::optional<GenerationRec> building;
  std::vector<uint64_t> retired;
};

struct DeadLetterRec {
  std::string stream;
  std::string type;
  std::string error;
  int attempts = 0;
  int64_t parked_us = 0;
  uint64_t generation = 0;
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

// name 0x00 position(BE): dead letters of one projection sort by position.
std::string DeadLetterKey(absl::string_view projection, uint64_t position);
std::string DeadLetterPrefix(absl::string_view projection);
// Retry requests in the `requests` database sort after the rebuild request
// (key: the bare name): name 0x00 "retry" position(BE).
std::string RetryRequestKey(absl::string_view projection, uint64_t position);
std::string RetryRequestPrefix(absl::string_view projection);

// name 0x00 label
std::string AsOfKey(absl::string_view projection, absl::string_view label);
// generation(BE) len(table) table [key]: a generation's rows of one table.
std::string RowKey(uint64_t generation, absl::string_view table, absl::string_view key);
inline std::string GenerationPrefix(uint64_t generation) {
  return RowKey(generation, "", "").substr(0, 8);
}

// The derived environment of a store with the projections' databases open.
struct Derived {
  StoreImpl* store;
  LmdbEnv* env;
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

// The dead letters of `projection`, and deleting one (NotFound when absent).
absl::StatusOr<std::vector<ParkedEvent>> ListDeadLetters(const Derived& d,
                                                         absl::string_view projection);
absl::Status DropDeadLetter(const Derived& d, absl::string_view projection, uint64_t position);

// Validates a projection or table name: 1..max bytes of [A-Za-z0-9_.-].
absl::Status ValidateName(absl::string_view what, absl::string_view name, size_t max);

// Reads a catalog entry in `txn`; nullopt when there is none.
absl::StatusOr<std::optional<CatalogRec>> ReadCatalog(MDB_txn* txn, const ProjectionDbs& dbs,
                                                      absl::string_view projection);
// Takes the next generation id (in a write transaction).
absl::StatusOr<uint64_t> NextGeneration(MDB_txn* txn, const ProjectionDbs& dbs);
// Counts a projection's dead letters.
absl::StatusOr<uint64_t> CountDeadLetters(MDB_txn* txn, const ProjectionDbs& dbs,
                                          absl::string_view projection);

// Runs `fn` in a write transaction of `env` and commits, growing the map and
// retrying from scratch on MDB_MAP_FULL. `fn` returns a status; an LMDB error
// from a put inside it should be returned as is (see PutOrStatus).
absl::Status WriteTxn(LmdbEnv* env, const std::function<absl::Status(MDB_txn*)>& fn);

// The message of the ResourceExhausted status that Put/Del return on
// MDB_MAP_FULL, which WriteTxn recognises and retries after growing the map.
inline constexpr char kMapFullMessage[] = "derived environment map is full";

// Deletes up to `max_rows` rows of `dbi` whose keys start with `prefix`,
// skipping those whose value `keep` (when given) wants kept. Returns how many
// were deleted.
absl::StatusOr<size_t> DeletePrefix(MDB_txn* txn, MDB_dbi dbi, absl::string_view prefix,
                                    size_t max_rows,
                                    const std::function<bool(absl::string_view)>& keep = {});

// mdb_put / mdb_del with the error mapped (MDB_MAP_FULL as above).
absl::Status Put(MDB_txn* txn, MDB_dbi dbi, absl::string_view key, absl::string_view value);
absl::Status Del(MDB_txn* txn, MDB_dbi dbi, absl::string_view key);

}  // namespace rill::internal

#endif  // RILL_PROJECTIONS_CATALOG_H_
