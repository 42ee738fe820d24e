#include "store_core.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "keys.h"
#include "store_open.h"

namespace rill::internal {

StoreCore::StoreCore(std::string dir, const StoreOptions& options, std::unique_ptr<LmdbEnv> log,
                     const LogDbs& dbs, std::string store_id)
    : dir_(std::move(dir)),
      options_(options),
      log_(std::move(log)),
      dbs_(dbs),
      store_id_(std::move(store_id)),
      head_([this] { return ReadHead(); }) {
  log_->set_commit_histogram(&metrics_.commit_sync_seconds);
}

StoreCore::~StoreCore() {
  {
    absl::MutexLock lock(&derived_mu_);
    derived_.reset();
  }
  log_.reset();
}

absl::StatusOr<uint64_t> StoreCore::ReadHead() {
  absl::StatusOr<Txn> txn = log_->BeginRead();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<CursorPtr> cursor = txn->OpenCursor(dbs_.events);
  if (!cursor.ok()) return cursor.status();
  MDB_val k, v;
  int rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_LAST);
  if (rc == MDB_NOTFOUND) return uint64_t{0};
  if (rc != 0) return LmdbError(rc, "finding the head of the log");
  if (k.mv_size != 8) return absl::DataLossError("events database holds a malformed key");
  return GetBigEndian64(static_cast<const uint8_t*>(k.mv_data));
}

absl::StatusOr<LmdbEnv*> StoreCore::DerivedEnv() {
  absl::MutexLock lock(&derived_mu_);
  if (derived_ == nullptr) {
    absl::StatusOr<std::unique_ptr<LmdbEnv>> env = OpenDerivedEnv(dir_, options_);
    if (!env.ok()) return env.status();
    derived_ = *std::move(env);
  }
  return derived_.get();
}

absl::StatusOr<unsigned> StoreCore::ClearStaleReaders() {
  int dead = 0;
  if (int rc = mdb_reader_check(log_->env(), &dead); rc != 0) {
    return LmdbError(rc, "checking the log's reader table");
  }
  unsigned cleared = static_cast<unsigned>(dead);
  absl::MutexLock lock(&derived_mu_);
  if (derived_ != nullptr) {
    if (int rc = mdb_reader_check(derived_->env(), &dead); rc != 0) {
      return LmdbError(rc, "checking the derived environment's reader table");
    }
    cleared += static_cast<unsigned>(dead);
  }
  return cleared;
}

absl::StatusOr<StoreCore*> CoreOf(Store* store, absl::string_view what) {
  if (store == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(what, ": the store is null"));
  StoreCore* core = store->core();
  if (core == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " needs a store with rill's engine behind it; this Store's core() is null"));
  }
  return core;
}

}  // namespace rill::internal
