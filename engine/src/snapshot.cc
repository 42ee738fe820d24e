// SnapshotStore: snapshots in the `snapshots` database of the derived
// environment (docs/snapshots.md, schema/records.fbs SnapshotRecord).
// Keys and values: snapshot_records.h. Reads decode (copy to aligned
// memory, checksum, verify, compare with the key) before reading anything.
// Writes run in LmdbEnv::Write, which grows the map on MDB_MAP_FULL and retries.
#include "rill/snapshot.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "codec.h"
#include "lmdb_env.h"
#include "snapshot_records.h"
#include "store_core.h"
#include "validate.h"

namespace rill {
namespace {

using internal::AlignedBuffer;
using internal::CursorPtr;
using internal::DecodeSnapshot;
using internal::FromVal;
using internal::LmdbEnv;
using internal::OpenCursor;
using internal::SnapshotKey;
using internal::SnapshotKeyPrefix;
using internal::SnapshotKeyStream;
using internal::ToVal;
using internal::Txn;

absl::Status ReadOnlyError(absl::string_view what) {
  return absl::FailedPreconditionError(
      absl::StrCat("cannot ", what, " snapshots: the store was opened read-only"));
}

bool HasPrefix(const MDB_val& key, absl::string_view prefix) {
  return absl::StartsWith(FromVal(key), prefix);
}

// Deletes all but the last `keep_last` (> 0) keys that start with `prefix`
// (empty: for each stream). Adds the count to *deleted.
absl::Status PruneIn(MDB_txn* txn, MDB_dbi dbi, absl::string_view prefix, int keep_last,
                     size_t* deleted) {
  absl::StatusOr<CursorPtr> cursor = OpenCursor(txn, dbi);
  if (!cursor.ok()) return cursor.status();
  // Collect the doomed keys first: deleting while walking a cursor is easy to
  // get wrong, and the lists are short.
  std::vector<std::string> doomed;
  std::vector<std::string> group;  // keys of the current stream, in order
  std::string group_stream;
  auto close_group = [&] {
    if (group.size() > static_cast<size_t>(keep_last)) {
      for (size_t i = 0; i + keep_last < group.size(); ++i) {
        doomed.push_back(group[i]);
      }
    }
    group.clear();
  };
  MDB_val k = ToVal(prefix), v;
  int r = mdb_cursor_get(cursor->get(), &k, &v, prefix.empty() ? MDB_FIRST : MDB_SET_RANGE);
  for (; r == 0 && HasPrefix(k, prefix); r = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT)) {
    absl::StatusOr<absl::string_view> stream = SnapshotKeyStream(FromVal(k));
    if (!stream.ok()) return stream.status();
    if (*stream != group_stream) {
      close_group();
      group_stream = std::string(*stream);
    }
    group.emplace_back(FromVal(k));
  }
  if (r != 0 && r != MDB_NOTFOUND) {
    return internal::LmdbError(r, "reading snapshot keys");
  }
  close_group();
  for (const std::string& key : doomed) {
    MDB_val dk = ToVal(key);
    if (int rc = mdb_del(txn, dbi, &dk, nullptr); rc != 0) {
      return internal::LmdbError(rc, "deleting a snapshot");
    }
  }
  *deleted += doomed.size();
  return absl::OkStatus();
}

}  // namespace

// Finds the derived environment and the `snapshots` database, which a
// read-only store may not have yet.
class SnapshotStore::Impl {
 public:
  Impl(internal::StoreCore* core, bool read_only) : core_(core), read_only_(read_only) {}

  bool read_only() const { return read_only_; }

  // Sets *env to nullptr when there are no snapshots yet (read-only only).
  absl::Status Get(LmdbEnv** env, MDB_dbi* dbi) {
    absl::MutexLock lock(&mu_);
    if (env_ == nullptr) {
      absl::StatusOr<LmdbEnv*> derived = core_->DerivedEnv();
      absl::StatusOr<MDB_dbi> opened =
          derived.ok() ? (*derived)->OpenDb(internal::kSnapshotsDb, !read_only_) : derived.status();
      if (!opened.ok()) {
        *env = nullptr;
        if (read_only_ && opened.status().code() == absl::StatusCode::kNotFound) {
          return absl::OkStatus();
        }
        return opened.status();
      }
      env_ = *derived;
      dbi_ = *opened;
    }
    *env = env_;
    *dbi = dbi_;
    return absl::OkStatus();
  }

 private:
  internal::StoreCore* const core_;
  const bool read_only_;
  absl::Mutex mu_;
  LmdbEnv* env_ ABSL_GUARDED_BY(mu_) = nullptr;
  MDB_dbi dbi_ ABSL_GUARDED_BY(mu_) = 0;
};

absl::StatusOr<std::unique_ptr<SnapshotStore>> SnapshotStore::Open(Store* store,
                                                                   SnapshotPolicy policy) {
  absl::StatusOr<internal::StoreCore*> core = internal::CoreOf(store, "SnapshotStore::Open");
  if (!core.ok()) return core.status();
  if (policy.every_n_events < 0 || policy.keep_last < 0) {
    return absl::InvalidArgumentError("snapshot policy: every_n_events and keep_last must be >= 0");
  }
  auto snapshots = std::unique_ptr<SnapshotStore>(new SnapshotStore(
      store, policy, std::make_unique<Impl>(*core, (*core)->options().read_only)));
  LmdbEnv* env;
  MDB_dbi dbi;
  if (absl::Status s = snapshots->impl_->Get(&env, &dbi); !s.ok()) return s;
  return snapshots;
}

SnapshotStore::SnapshotStore(Store* store, SnapshotPolicy policy, std::unique_ptr<Impl> impl)
    : store_(store), policy_(policy), impl_(std::move(impl)) {}

SnapshotStore::~SnapshotStore() = default;

absl::Status SnapshotStore::Save(absl::string_view stream, int64_t version, uint32_t schema_version,
                                 absl::string_view data) {
  if (impl_->read_only()) return ReadOnlyError("save");
  if (absl::Status s = internal::ValidateStreamName(stream); !s.ok()) return s;
  if (data.size() > kMaxSnapshotBytes) {
    return absl::InvalidArgumentError(absl::StrCat("snapshot of \"", stream, "\" has ", data.size(),
                                                   " bytes, more than ", kMaxSnapshotBytes));
  }
  absl::StatusOr<StreamInfo> info = store_->GetStreamInfo(stream);
  if (!info.ok()) return info.status();
  if (!info->exists) {
    return absl::NotFoundError(
        absl::StrCat("cannot snapshot stream \"", stream, "\": it does not exist"));
  }
  if (version < 0 || version > info->last_version) {
    return absl::InvalidArgumentError(absl::StrCat("cannot snapshot stream \"", stream,
                                                   "\" at version ", version,
                                                   ": its versions are 0..", info->last_version));
  }
  LmdbEnv* env;
  MDB_dbi dbi;
  if (absl::Status s = impl_->Get(&env, &dbi); !s.ok()) return s;
  const std::string key = SnapshotKey(stream, version);
  const std::string value =
      internal::EncodeSnapshot(stream, version, schema_version, absl::Now(), data);
  const std::string prefix = SnapshotKeyPrefix(stream);
  return env->Write("saving a snapshot", [&](MDB_txn* txn) {
    MDB_val k = ToVal(key), v = ToVal(value);
    if (int rc = mdb_put(txn, dbi, &k, &v, 0); rc != 0) {
      return internal::WriteError(rc, "saving a snapshot", env->path());
    }
    if (policy_.keep_last == 0) return absl::OkStatus();
    size_t deleted = 0;
    return PruneIn(txn, dbi, prefix, policy_.keep_last, &deleted);
  });
}

absl::StatusOr<std::optional<Snapshot>> SnapshotStore::LoadLatest(absl::string_view stream,
                                                                  uint32_t schema_version) {
  if (absl::Status s = internal::ValidateStreamName(stream); !s.ok()) return s;
  LmdbEnv* env;
  MDB_dbi dbi;
  if (absl::Status s = impl_->Get(&env, &dbi); !s.ok()) return s;
  if (env == nullptr) return std::nullopt;
  absl::StatusOr<Txn> txn = env->BeginRead();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<CursorPtr> cursor = txn->OpenCursor(dbi);
  if (!cursor.ok()) return cursor.status();
  // Walk the stream's snapshots from the newest version down.
  const std::string prefix = SnapshotKeyPrefix(stream);
  const std::string past_end = SnapshotKey(stream, -1);  // version bytes all 0xff
  MDB_val k = ToVal(past_end), v;
  int rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_SET_RANGE);
  if (rc == 0) {
    rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_PREV);
  } else if (rc == MDB_NOTFOUND) {
    rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_LAST);
  }
  AlignedBuffer buf;
  for (; rc == 0 && HasPrefix(k, prefix); rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_PREV)) {
    absl::StatusOr<const schema::SnapshotRecord*> record =
        DecodeSnapshot(FromVal(k), FromVal(v), &buf);
    if (!record.ok()) return record.status();
    if ((*record)->schema_version() == schema_version) {
      return internal::ToSnapshot(**record);
    }
  }
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return internal::LmdbError(rc, "reading snapshots");
  }
  return std::nullopt;
}

absl::StatusOr<std::vector<Snapshot>> SnapshotStore::List(absl::string_view stream) {
  if (!stream.empty()) {
    if (absl::Status s = internal::ValidateStreamName(stream); !s.ok()) {
      return s;
    }
  }
  std::vector<Snapshot> out;
  LmdbEnv* env;
  MDB_dbi dbi;
  if (absl::Status s = impl_->Get(&env, &dbi); !s.ok()) return s;
  if (env == nullptr) return out;
  absl::StatusOr<Txn> txn = env->BeginRead();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<CursorPtr> cursor = txn->OpenCursor(dbi);
  if (!cursor.ok()) return cursor.status();
  const std::string prefix = stream.empty() ? std::string() : SnapshotKeyPrefix(stream);
  MDB_val k = ToVal(prefix), v;
  int rc = mdb_cursor_get(cursor->get(), &k, &v, prefix.empty() ? MDB_FIRST : MDB_SET_RANGE);
  AlignedBuffer buf;
  for (; rc == 0 && HasPrefix(k, prefix); rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT)) {
    absl::StatusOr<const schema::SnapshotRecord*> record =
        DecodeSnapshot(FromVal(k), FromVal(v), &buf);
    if (!record.ok()) return record.status();
    out.push_back(internal::ToSnapshot(**record));
  }
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return internal::LmdbError(rc, "listing snapshots");
  }
  return out;
}

absl::StatusOr<size_t> SnapshotStore::Prune(absl::string_view stream, int keep_last) {
  if (impl_->read_only()) return ReadOnlyError("prune");
  if (keep_last < 0) {
    return absl::InvalidArgumentError("keep_last must be >= 0");
  }
  if (!stream.empty()) {
    if (absl::Status s = internal::ValidateStreamName(stream); !s.ok()) {
      return s;
    }
  }
  if (keep_last == 0) return size_t{0};
  LmdbEnv* env;
  MDB_dbi dbi;
  if (absl::Status s = impl_->Get(&env, &dbi); !s.ok()) return s;
  const std::string prefix = stream.empty() ? std::string() : SnapshotKeyPrefix(stream);
  size_t deleted = 0;
  absl::Status s = env->Write("pruning snapshots", [&](MDB_txn* txn) {
    deleted = 0;
    return PruneIn(txn, dbi, prefix, keep_last, &deleted);
  });
  if (!s.ok()) return s;
  return deleted;
}

absl::StatusOr<size_t> SnapshotStore::Drop(absl::string_view stream) {
  if (impl_->read_only()) return ReadOnlyError("drop");
  if (!stream.empty()) {
    if (absl::Status s = internal::ValidateStreamName(stream); !s.ok()) {
      return s;
    }
  }
  LmdbEnv* env;
  MDB_dbi dbi;
  if (absl::Status s = impl_->Get(&env, &dbi); !s.ok()) return s;
  const std::string prefix = stream.empty() ? std::string() : SnapshotKeyPrefix(stream);
  size_t deleted = 0;
  absl::Status s = env->Write("dropping snapshots", [&](MDB_txn* txn) {
    deleted = 0;
    if (prefix.empty()) {
      MDB_stat st;
      if (int rc = mdb_stat(txn, dbi, &st); rc != 0) {
        return internal::LmdbError(rc, "mdb_stat");
      }
      deleted = st.ms_entries;
      return internal::LmdbError(mdb_drop(txn, dbi, 0), "dropping snapshots");
    }
    absl::StatusOr<CursorPtr> cursor = OpenCursor(txn, dbi);
    if (!cursor.ok()) return cursor.status();
    std::vector<std::string> doomed;
    MDB_val k = ToVal(prefix), v;
    int r = mdb_cursor_get(cursor->get(), &k, &v, MDB_SET_RANGE);
    for (; r == 0 && HasPrefix(k, prefix); r = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT)) {
      doomed.emplace_back(FromVal(k));
    }
    if (r != MDB_NOTFOUND && r != 0) {
      return internal::LmdbError(r, "reading snapshot keys");
    }
    for (const std::string& key : doomed) {
      MDB_val dk = ToVal(key);
      if (int rc = mdb_del(txn, dbi, &dk, nullptr); rc != 0) {
        return internal::LmdbError(rc, "deleting a snapshot");
      }
    }
    deleted = doomed.size();
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return deleted;
}

absl::Status SnapshotStore::Load(absl::string_view stream, uint32_t schema_version,
                                 const Hooks& hooks, LoadInfo* info) {
  absl::StatusOr<std::optional<Snapshot>> snapshot = LoadLatest(stream, schema_version);
  if (!snapshot.ok()) return snapshot.status();
  // Looked at after the snapshot: a snapshot is only ever saved at a version
  // that exists, and streams only grow, so a snapshot past this is foreign.
  absl::StatusOr<StreamInfo> stream_info = store_->GetStreamInfo(stream);
  if (!stream_info.ok()) return stream_info.status();
  if (snapshot->has_value()) {
    const Snapshot& snap = **snapshot;
    if (snap.version > stream_info->last_version) {
      return absl::FailedPreconditionError(
          absl::StrCat("the snapshot of stream \"", stream, "\" at version ", snap.version,
                       " is ahead of the log (last version ", stream_info->last_version,
                       "): the derived data does not belong to this log; drop the stream's "
                       "snapshots"));
    }
    if (absl::Status s = hooks.restore(snap.data); !s.ok()) return s;
    info->from_snapshot = true;
    info->snapshot_version = info->version = snap.version;
  }
  if (!stream_info->exists) return absl::OkStatus();
  absl::Status apply_status;
  absl::Status scanned =
      store_->ScanStream(stream, info->version + 1, ReadOptions(), [&](const EventView& e) {
        apply_status = hooks.apply(e);
        if (!apply_status.ok()) return false;
        info->version = e.version();
        ++info->events_folded;
        return true;
      });
  if (!scanned.ok()) return scanned;
  if (!apply_status.ok()) return apply_status;
  if (policy_.every_n_events > 0 && info->events_folded >= policy_.every_n_events &&
      !impl_->read_only()) {
    info->snapshot_status = Save(stream, info->version, schema_version, hooks.encode());
    info->snapshot_saved = info->snapshot_status.ok();
  }
  return absl::OkStatus();
}

}  // namespace rill
