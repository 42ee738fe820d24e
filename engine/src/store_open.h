// Opening a store's directory: deciding whether a directory holds a store,
// may hold a new one, or is something else; waiting for other processes'
// locks on LMDB's lock files; the meta record; and the process's registry of
// open stores. StoreImpl::OpenLocal is built on OpenLog; the derived environment
// is opened on first use (StoreCore::DerivedEnv) by OpenDerivedEnv.
//
// Layout of a store directory (docs/format.md): log/ (the log environment)
// and derived/ (read models, checkpoints, dead letters, snapshots).
#ifndef RILL_ENGINE_STORE_OPEN_H_
#define RILL_ENGINE_STORE_OPEN_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "lmdb_env.h"
#include "rill/options.h"
#include "store_core.h"

namespace rill::internal {

// A store directory this process has open. LMDB must not open one
// environment twice in a process (closing either would drop the other's
// POSIX locks), so the process keeps a registry of the stores it has open;
// a registration takes the directory out of it when destroyed.
class StoreRegistration {
 public:
  StoreRegistration() = default;
  explicit StoreRegistration(std::string key) : key_(std::move(key)) {}
  StoreRegistration(StoreRegistration&& other) noexcept : key_(std::move(other.key_)) {
    other.key_.clear();
  }
  StoreRegistration& operator=(StoreRegistration&& other) noexcept {
    std::swap(key_, other.key_);
    return *this;
  }
  ~StoreRegistration();

 private:
  std::string key_;  // canonical path; empty: none
};

// The log environment of a store directory, opened.
struct OpenedLog {
  StoreRegistration registration;
  std::unique_ptr<LmdbEnv> env;
  LogDbs dbs;
  std::string store_id;
};

// Opens (creating when the options allow) the store in `dir`: the directory,
// the log environment, its databases and the meta record. Errors as
// Store::Open documents.
absl::StatusOr<OpenedLog> OpenLog(const std::string& dir, const StoreOptions& options);

// Opens (creating unless read-only) the derived environment of the store in
// `dir`. NotFound on a read-only store that has none yet.
absl::StatusOr<std::unique_ptr<LmdbEnv>> OpenDerivedEnv(const std::string& dir,
                                                        const StoreOptions& options);

// The data file of the log environment of the store in `dir`.
std::string LogDataFile(const std::string& dir);

// fsync of the file or directory `path` (opened with `flags`).
absl::Status SyncPath(const std::string& path, int flags);

// The directories whose entries change when `dir` (and what goes in it) is
// created: `dir` itself, and the parent of each missing ancestor up to the
// first directory that exists. Call before creating anything.
std::vector<std::string> DirectoriesToSync(const std::string& dir);

// fsync of each directory: makes new entries in them durable. LMDB syncs its
// data file but never a directory, so without this a power cut after a new
// store's first acknowledged append could take the whole store away (the
// file system need not have written the entries) and the next Open would
// create an empty one in its place. Found by the power-cut harness
// (tests/powercut/, docs/reliability.md).
absl::Status SyncDirectories(const std::vector<std::string>& dirs);

// What an environment's copy is called until it is whole (BackupStore).
inline constexpr char kPartialDataFile[] = "data.mdb.partial";

}  // namespace rill::internal

#endif  // RILL_ENGINE_STORE_OPEN_H_
