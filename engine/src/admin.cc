// VerifyStore and BackupStore (rill/admin.h).
#include "rill/admin.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "codec.h"
#include "keys.h"
#include "store_core.h"
#include "store_open.h"

namespace rill {
namespace {

namespace fs = std::filesystem;
using internal::AlignedBuffer;
using internal::FromVal;
using internal::GetBigEndian64;
using internal::LmdbError;
using internal::ToVal;

// What the event records say about one stream.
struct StreamAcc {
  uint64_t first_position = 0;
  uint64_t last_position = 0;
  int64_t next_version = 0;
  int64_t last_recorded_us = 0;
  bool has_record = false;  // a stream record was found for it
};

// (stream id, version) of the event at a position; stream id 0: no event
// there, kUnreadable: the event failed its checks (already reported, so what
// follows from it - an index entry or stream record pointing at it - is not
// reported again).
constexpr uint64_t kUnreadable = ~uint64_t{0};
struct PositionInfo {
  uint64_t stream_id = 0;
  int64_t version = -1;
};

class Verifier {
 public:
  Verifier(internal::StoreCore* core, const VerifyOptions& options)
      : core_(core), options_(options) {}

  absl::StatusOr<VerifyReport> Run() {
    internal::LmdbEnv* env = core_->log_env();
    const internal::LogDbs& dbs = core_->dbs();
    absl::StatusOr<internal::Txn> txn = env->BeginRead();
    if (!txn.ok()) return txn.status();
    MDB_stat st;
    for (MDB_dbi dbi : {dbs.events, dbs.streams, dbs.stream_index, dbs.idempotency}) {
      mdb_stat(txn->get(), dbi, &st);
      total_ += st.ms_entries;
    }
    if (absl::Status s = CheckMeta(txn->get(), dbs.meta); !s.ok()) return s;
    if (absl::Status s = CheckEvents(*txn, dbs.events); !s.ok()) return s;
    if (absl::Status s = CheckStreams(*txn, dbs.streams); !s.ok()) return s;
    if (absl::Status s = CheckIndex(*txn, dbs.stream_index); !s.ok()) return s;
    if (absl::Status s = CheckIdempotency(*txn, dbs.idempotency); !s.ok()) return s;
    if (options_.progress) options_.progress(total_, total_);
    return std::move(report_);
  }

 private:
  void Problem(std::string what) {
    ++report_.problem_count;
    if (report_.problems.size() < options_.max_problems) {
      report_.problems.push_back(std::move(what));
    }
  }

  void Tick() {
    if (++done_ % 65536 == 0 && options_.progress) options_.progress(done_, total_);
  }

  absl::Status CheckMeta(MDB_txn* txn, MDB_dbi meta) {
    MDB_val k = ToVal("store"), v;
    int rc = mdb_get(txn, meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
      Problem("the meta record is missing");
    } else if (rc != 0) {
      return LmdbError(rc, "reading the meta record");
    } else if (absl::StatusOr<internal::StoreMetaData> m = internal::DecodeStoreMeta(FromVal(v));
               !m.ok()) {
      Problem(absl::StrCat("meta record: ", m.status().message()));
    }
    return absl::OkStatus();
  }

  absl::Status CheckEvents(const internal::Txn& txn, MDB_dbi events) {
    absl::StatusOr<internal::CursorPtr> cursor = txn.OpenCursor(events);
    if (!cursor.ok()) return cursor.status();
    MDB_val k, v;
    int rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size == 8) {
      report_.head_position = GetBigEndian64(static_cast<const uint8_t*>(k.mv_data));
    }
    // A damaged last key could claim an absurd head; the table then covers
    // only what the entry count allows.
    positions_.resize(std::min<uint64_t>(report_.head_position, total_));
    AlignedBuffer buf;
    uint64_t expected = 1;
    int64_t last_recorded_us = 0;
    for (rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT)) {
      Tick();
      ++report_.events;
      if (k.mv_size != 8) {
        Problem(absl::StrCat("the events database holds a key of ", k.mv_size, " bytes"));
        continue;
      }
      const uint64_t position = GetBigEndian64(static_cast<const uint8_t*>(k.mv_data));
      if (position != expected) {
        Problem(position > expected
                    ? absl::StrCat("positions ", expected, "..", position - 1, " are missing")
                    : absl::StrCat("position ", position, " is out of order"));
      }
      expected = position + 1;
      const uint8_t* data = buf.Assign(FromVal(v));
      absl::StatusOr<const schema::EventRecord*> record =
          internal::DecodeEvent(data, v.mv_size, position);
      if (!record.ok()) {
        Problem(std::string(record.status().message()));
        if (position <= positions_.size()) positions_[position - 1].stream_id = kUnreadable;
        unreadable_.push_back(position);
        continue;
      }
      const EventView event = internal::EventViewAccess::Of(*record);
      const int64_t version = event.version();
      const int64_t recorded_us = absl::ToUnixMicros(event.recorded_at());
      if (recorded_us < last_recorded_us) {
        Problem(absl::StrCat("event at position ", position,
                             " was recorded before the event preceding it"));
      }
      last_recorded_us = recorded_us;
      auto [it, inserted] = streams_.try_emplace(event.stream());
      StreamAcc& acc = it->second;
      if (inserted) acc.first_position = position;
      // A version skipped where an unreadable event lies between this one
      // and the stream's previous one is that event: reported already.
      const bool explained =
          version > acc.next_version && std::upper_bound(unreadable_.begin(), unreadable_.end(),
                                                         acc.last_position) != unreadable_.end();
      if (version != acc.next_version && !explained) {
        Problem(absl::StrCat("stream \"", event.stream(), "\" has version ", version,
                             " at position ", position, " where version ", acc.next_version,
                             " was due"));
      }
      acc.next_version = version + 1;
      acc.last_position = position;
      acc.last_recorded_us = recorded_us;
      if (position <= positions_.size()) {
        positions_[position - 1] = PositionInfo{acc.first_position, version};
      }
    }
    if (rc != MDB_NOTFOUND) return LmdbError(rc, "reading the events database");
    return absl::OkStatus();
  }

  absl::Status CheckStreams(const internal::Txn& txn, MDB_dbi streams) {
    absl::StatusOr<internal::CursorPtr> cursor = txn.OpenCursor(streams);
    if (!cursor.ok()) return cursor.status();
    MDB_val k, v;
    int rc;
    for (rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT)) {
      Tick();
      ++report_.streams;
      const absl::string_view name = FromVal(k);
      absl::StatusOr<internal::StreamState> state = internal::DecodeStreamState(FromVal(v), name);
      if (!state.ok()) {
        Problem(std::string(state.status().message()));
        continue;
      }
      if (Unreadable(state->first_position) || Unreadable(state->last_position)) continue;
      auto it = streams_.find(name);
      if (it == streams_.end()) {
        Problem(absl::StrCat("stream record \"", name, "\" has no events"));
        continue;
      }
      StreamAcc& acc = it->second;
      acc.has_record = true;
      if (state->first_position != acc.first_position ||
          state->last_position != acc.last_position ||
          state->last_version != acc.next_version - 1) {
        Problem(absl::StrCat("stream record \"", name, "\" says positions ", state->first_position,
                             "..", state->last_position, ", last version ", state->last_version,
                             "; its events say ", acc.first_position, "..", acc.last_position,
                             ", last version ", acc.next_version - 1));
      }
    }
    if (rc != MDB_NOTFOUND) return LmdbError(rc, "reading the streams database");
    for (const auto& [name, acc] : streams_) {
      if (!acc.has_record) Problem(absl::StrCat("stream \"", name, "\" has no stream record"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckIndex(const internal::Txn& txn, MDB_dbi index) {
    absl::StatusOr<internal::CursorPtr> cursor = txn.OpenCursor(index);
    if (!cursor.ok()) return cursor.status();
    MDB_val k, v;
    int rc;
    for (rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT)) {
      Tick();
      ++report_.index_entries;
      if (k.mv_size != 16 || v.mv_size != 8) {
        Problem(absl::StrCat("the stream index holds an entry of ", k.mv_size, "+", v.mv_size,
                             " bytes"));
        continue;
      }
      const auto* key = static_cast<const uint8_t*>(k.mv_data);
      const uint64_t stream_id = GetBigEndian64(key);
      const int64_t version = static_cast<int64_t>(GetBigEndian64(key + 8));
      const uint64_t position = GetBigEndian64(static_cast<const uint8_t*>(v.mv_data));
      if (Unreadable(position)) continue;
      const PositionInfo* at = Lookup(position);
      if (at == nullptr || at->stream_id != stream_id || at->version != version) {
        Problem(absl::StrCat(
            "index entry (stream ", stream_id, ", version ", version, ") points at position ",
            position,
            at == nullptr ? ", which holds no readable event" : ", which holds another event"));
      }
    }
    if (rc != MDB_NOTFOUND) return LmdbError(rc, "reading the stream index");
    if (report_.index_entries != report_.events) {
      Problem(absl::StrCat("the stream index has ", report_.index_entries, " entries for ",
                           report_.events, " events"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckIdempotency(const internal::Txn& txn, MDB_dbi idempotency) {
    absl::StatusOr<internal::CursorPtr> cursor = txn.OpenCursor(idempotency);
    if (!cursor.ok()) return cursor.status();
    MDB_val k, v;
    int rc;
    for (rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT)) {
      Tick();
      ++report_.idempotency_keys;
      const absl::string_view key = FromVal(k);
      absl::StatusOr<internal::IdempotencyEntry> entry =
          internal::DecodeIdempotency(FromVal(v), key);
      if (!entry.ok()) {
        Problem(std::string(entry.status().message()));
        continue;
      }
      for (const AppendResult& r : entry->results) {
        auto it = streams_.find(r.stream);
        const uint64_t stream_id = it == streams_.end() ? 0 : it->second.first_position;
        const PositionInfo* first = Lookup(r.first_position);
        const PositionInfo* last = Lookup(r.last_position);
        const bool ok = stream_id != 0 && first != nullptr && last != nullptr &&
                        first->stream_id == stream_id && last->stream_id == stream_id &&
                        first->version == r.first_version && last->version == r.last_version &&
                        r.last_version - r.first_version ==
                            static_cast<int64_t>(r.last_position - r.first_position);
        if (!ok) {
          Problem(absl::StrCat("idempotency record of key \"", key, "\" names versions ",
                               r.first_version, "..", r.last_version, " of \"", r.stream,
                               "\" at positions ", r.first_position, "..", r.last_position,
                               ", which the log does not hold"));
        }
      }
    }
    if (rc != MDB_NOTFOUND) return LmdbError(rc, "reading the idempotency database");
    return absl::OkStatus();
  }

  const PositionInfo* Lookup(uint64_t position) const {
    if (position == 0 || position > positions_.size()) return nullptr;
    const PositionInfo& info = positions_[position - 1];
    return info.stream_id == 0 || info.stream_id == kUnreadable ? nullptr : &info;
  }

  bool Unreadable(uint64_t position) const {
    return position != 0 && position <= positions_.size() &&
           positions_[position - 1].stream_id == kUnreadable;
  }

  internal::StoreCore* core_;
  const VerifyOptions& options_;
  VerifyReport report_;
  uint64_t total_ = 0;
  uint64_t done_ = 0;
  absl::flat_hash_map<std::string, StreamAcc> streams_;
  std::vector<PositionInfo> positions_;
  std::vector<uint64_t> unreadable_;  // positions of unreadable events, ascending
};

// Copies one environment into `dir`/data.mdb, reporting the file's growth.
// The copy is written as data.mdb.partial, synced, then renamed and its
// directory synced: a copy cut short (a crash, a power cut) is never a
// data.mdb, so a backup is a store only once it is whole (the log, copied
// last, decides; docs/admin.md).
absl::StatusOr<uint64_t> CopyEnv(internal::LmdbEnv* env, const std::string& dir, bool compact,
                                 uint64_t done_before, uint64_t total,
                                 const BackupOptions& options) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return LmdbError(ec.value(), absl::StrCat("cannot create ", dir));
  const std::string file = dir + "/" + internal::kPartialDataFile;
  int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return LmdbError(errno, absl::StrCat("cannot create ", file));
  absl::Notification finished;
  std::thread reporter;
  if (options.progress) {
    reporter = std::thread([&] {
      while (!finished.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
        struct stat st;
        if (fstat(fd, &st) == 0) options.progress(done_before + st.st_size, total);
      }
    });
  }
  int rc = mdb_env_copyfd2(env->env(), fd, compact ? MDB_CP_COMPACT : 0);
  if (rc == 0 && fsync(fd) != 0) rc = errno;
  finished.Notify();
  if (reporter.joinable()) reporter.join();
  struct stat st;
  const uint64_t bytes = fstat(fd, &st) == 0 ? st.st_size : 0;
  close(fd);
  if (rc != 0) return internal::WriteError(rc, absl::StrCat("copying into ", file), dir);
  if (rename(file.c_str(), (dir + "/data.mdb").c_str()) != 0) {
    return LmdbError(errno, absl::StrCat("cannot rename ", file));
  }
  if (absl::Status s = internal::SyncPath(dir, O_RDONLY | O_DIRECTORY); !s.ok()) return s;
  return bytes;
}

// Bytes of the environment's pages in use, for progress.
uint64_t UsedBytes(internal::LmdbEnv* env) {
  MDB_envinfo info;
  MDB_stat st;
  if (mdb_env_info(env->env(), &info) != 0 || mdb_env_stat(env->env(), &st) != 0) return 0;
  return (info.me_last_pgno + 1) * uint64_t{st.ms_psize};
}

absl::StatusOr<BackupResult> CopyStore(internal::StoreCore* core, const std::string& dest,
                                       const BackupOptions& options) {
  BackupResult result;
  internal::LmdbEnv* derived = nullptr;
  std::error_code ec;
  if (fs::exists(core->dir() + "/derived/data.mdb", ec)) {
    absl::StatusOr<internal::LmdbEnv*> env = core->DerivedEnv();
    if (!env.ok()) return env.status();
    derived = *env;
  }
  const uint64_t total = UsedBytes(core->log_env()) + (derived ? UsedBytes(derived) : 0);
  if (derived != nullptr) {
    absl::StatusOr<uint64_t> bytes =
        CopyEnv(derived, dest + "/derived", options.compact, 0, total, options);
    if (!bytes.ok()) return bytes.status();
    result.derived_bytes = *bytes;
  }
  // The head is read before the copy's transaction starts: the copy holds
  // at least this much (commits made meanwhile may be in it too).
  absl::StatusOr<uint64_t> head = core->ReadHead();
  if (!head.ok()) return head.status();
  absl::StatusOr<uint64_t> bytes = CopyEnv(core->log_env(), dest + "/log", options.compact,
                                           result.derived_bytes, total, options);
  if (!bytes.ok()) return bytes.status();
  result.log_bytes = *bytes;
  // A replicated node's backup is a node: with its settings, a copy opened
  // for writing follows the stream from the sequence the copy had applied
  // (docs/replication.md).
  const std::string settings = core->dir() + "/replication.conf";
  if (fs::exists(settings, ec)) {
    fs::copy_file(settings, dest + "/replication.conf", fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat("copying ", settings, ": ", ec.message()));
    if (absl::Status s = internal::SyncPath(dest + "/replication.conf", O_RDONLY); !s.ok())
      return s;
  }
  if (absl::Status s = internal::SyncPath(dest, O_RDONLY | O_DIRECTORY); !s.ok()) return s;
  // Report the head the copy really holds.
  absl::StatusOr<std::unique_ptr<Store>> copy = Store::Open(dest, [] {
    StoreOptions o;
    o.read_only = true;
    return o;
  }());
  if (!copy.ok()) return copy.status();
  absl::StatusOr<uint64_t> copied_head = (*copy)->HeadPosition();
  if (!copied_head.ok()) return copied_head.status();
  result.head_position = std::max(*head, *copied_head);
  if (options.progress) options.progress(total, total);
  return result;
}

}  // namespace

absl::StatusOr<VerifyReport> VerifyStore(Store* store, const VerifyOptions& options) {
  absl::StatusOr<internal::StoreCore*> core = internal::CoreOf(store, "VerifyStore");
  if (!core.ok()) return core.status();
  return Verifier(*core, options).Run();
}

absl::StatusOr<BackupResult> BackupStore(Store* store, const std::string& dest,
                                         const BackupOptions& options) {
  absl::StatusOr<internal::StoreCore*> core = internal::CoreOf(store, "BackupStore");
  if (!core.ok()) return core.status();
  if (dest.empty()) return absl::InvalidArgumentError("backup destination is empty");
  std::error_code ec;
  const bool existed = fs::exists(dest, ec);
  if (existed && (!fs::is_directory(dest, ec) || !fs::is_empty(dest, ec))) {
    return absl::FailedPreconditionError(
        absl::StrCat("backup destination ", dest, " exists and is not an empty directory"));
  }
  // The directories whose entries the backup adds to, synced once it is
  // whole (CopyStore syncs those inside it).
  const std::vector<std::string> new_dirs = internal::DirectoriesToSync(dest);
  fs::create_directories(dest, ec);
  if (ec) return LmdbError(ec.value(), absl::StrCat("cannot create ", dest));
  absl::StatusOr<BackupResult> result = CopyStore(*core, dest, options);
  if (result.ok()) {
    if (absl::Status s = internal::SyncDirectories(new_dirs); !s.ok()) result = s;
  }
  if (!result.ok()) {
    // Leave nothing that could be mistaken for a backup.
    if (existed) {
      for (const fs::directory_entry& e : fs::directory_iterator(dest, ec)) {
        fs::remove_all(e.path(), ec);
      }
    } else {
      fs::remove_all(dest, ec);
    }
  }
  return result;
}

}  // namespace rill
