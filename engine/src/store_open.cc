#include "store_open.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "codec.h"

namespace rill::internal {
namespace {

namespace fs = std::filesystem;

constexpr char kLogDir[] = "log";
constexpr char kDerivedDir[] = "derived";
// Named databases of the derived environment: the projections' few (every
// generation's rows share one, "rm") and snapshots'; the rest is headroom.
constexpr unsigned kDerivedMaxDbs = 1024;
constexpr char kMetaKey[] = "store";

// LMDB must not open one environment twice in a process (closing either
// would drop the other's POSIX locks), so the process keeps a registry of the
// stores it has open.
absl::Mutex registry_mu(absl::kConstInit);
absl::flat_hash_set<std::string>& Registry() ABSL_EXCLUSIVE_LOCKS_REQUIRED(registry_mu) {
  static auto* registry = new absl::flat_hash_set<std::string>();
  return *registry;
}

absl::Status ErrnoStatus(const std::error_code& ec, absl::string_view what) {
  return LmdbError(ec.value(), what);
}

// How long Open waits for another process's creation of a store, or for an
// exclusive lock on lock.mdb to go (see WaitForLockFile).
constexpr absl::Duration kLockFileWait = absl::Seconds(2);

// The pid of another process holding a lock on byte 0 of `lock_path` (the
// byte LMDB locks) that conflicts with a lock of type `type`, or 0 (also when
// the file does not exist). F_WRLCK finds any holder: LMDB holds a shared
// lock there for as long as the environment is open. F_RDLCK finds only an
// exclusive holder: LMDB's first opener while it sets the file up.
pid_t LockFileHolder(const std::string& lock_path, short type) {
  const int fd = open(lock_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  struct flock probe = {};
  probe.l_type = type;
  probe.l_whence = SEEK_SET;
  probe.l_start = 0;
  probe.l_len = 1;
  const bool held = fcntl(fd, F_GETLK, &probe) == 0 && probe.l_type != F_UNLCK;
  close(fd);
  return held ? probe.l_pid : 0;
}

// For a log directory holding lock.mdb but no data.mdb: OK once data.mdb
// exists (a concurrent creator made it) or nobody holds the lock file (an
// interrupted creation, the directory may become a store); FailedPrecondition
// if a live process still holds it after kLockFileWait without a data file.
absl::Status WaitForDataFileOrFreeLock(const std::string& log_dir) {
  const absl::Time deadline = absl::Now() + kLockFileWait;
  for (;;) {
    std::error_code ec;
    if (fs::exists(log_dir + "/data.mdb", ec)) return absl::OkStatus();
    const pid_t holder = LockFileHolder(log_dir + "/lock.mdb", F_WRLCK);
    if (holder == 0) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      return absl::FailedPreconditionError(absl::StrCat(
          log_dir, "/data.mdb is missing while process ", holder,
          " has the store open: its data file was deleted or moved; not creating a new "
          "store over it"));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
}

// Decides whether `dir` holds a store, may hold a new one, or is something
// else. Creates the directory when allowed.
absl::Status PrepareDirectory(const std::string& dir, const StoreOptions& options) {
  std::error_code ec;
  fs::file_status st = fs::status(dir, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return ErrnoStatus(ec, absl::StrCat("cannot access ", dir));
  }
  const std::string data_file = absl::StrCat(dir, "/", kLogDir, "/data.mdb");
  if (fs::exists(st)) {
    if (!fs::is_directory(st)) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir, " is not a rill store (it is not a directory)"));
    }
    if (fs::exists(data_file, ec)) return absl::OkStatus();
    // An empty directory, or one holding only what an interrupted creation
    // leaves - our log/ directory, empty or with LMDB's lock.mdb alone
    // (mdb_env_open creates lock.mdb before data.mdb) - may become a store.
    // So may a replicated node's directory whose replica was deleted: its
    // settings file is all it holds, and the new replica is rebuilt from
    // JetStream (docs/replication.md).
    for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
      if ((entry.path().filename() == "replication.conf" ||
           entry.path().filename() == "replica.boot") &&
          entry.is_regular_file()) {
        continue;
      }
      bool leftover = entry.path().filename() == kLogDir && entry.is_directory();
      bool lock_file = false;
      if (leftover) {
        for (const fs::directory_entry& f : fs::directory_iterator(entry.path(), ec)) {
          if (f.path().filename() == kPartialDataFile) {
            return absl::FailedPreconditionError(absl::StrCat(
                dir, " is an interrupted backup (", kLogDir, "/", kPartialDataFile, " and no ",
                kLogDir, "/data.mdb): it holds no store; delete it and back up again"));
          }
          if (f.path().filename() == "lock.mdb") {
            lock_file = true;
          } else {
            leftover = false;
          }
        }
      }
      if (!leftover) {
        return absl::FailedPreconditionError(absl::StrCat(
            dir, " is not a rill store (it holds other files and no ", kLogDir, "/data.mdb)"));
      }
      // A lock file that a live process holds is no interrupted creation:
      // either that process is creating the store right now (data.mdb
      // appears in a moment) or the store is open there and its data file
      // was deleted or moved - then creating a new store over it would
      // hide the loss and share the old store's locks.
      if (lock_file) {
        if (absl::Status s = WaitForDataFileOrFreeLock(entry.path().string()); !s.ok()) return s;
        if (fs::exists(data_file, ec)) return absl::OkStatus();
      }
    }
    if (ec) return ErrnoStatus(ec, absl::StrCat("cannot list ", dir));
  }
  if (options.read_only || !options.create_if_missing) {
    const std::string why =
        absl::StrCat("no rill store at ", dir,
                     options.read_only ? " (a read-only open does not create one)"
                                       : " (create_if_missing is off)");
    if (fs::exists(st)) return absl::FailedPreconditionError(why);
    return absl::NotFoundError(why);
  }
  fs::create_directories(absl::StrCat(dir, "/", kLogDir), ec);
  if (ec) return ErrnoStatus(ec, absl::StrCat("cannot create the store directory ", dir));
  return absl::OkStatus();
}

// The store id in the meta record of the log read through `txn`; nullopt
// when there is no meta record and the log is empty (a new store).
absl::StatusOr<std::optional<std::string>> ReadMeta(MDB_txn* txn, const LogDbs& dbs) {
  MDB_val key = ToVal(kMetaKey), value;
  int rc = mdb_get(txn, dbs.meta, &key, &value);
  if (rc == 0) {
    absl::StatusOr<StoreMetaData> meta = DecodeStoreMeta(FromVal(value));
    if (!meta.ok()) return meta.status();
    if (meta->format_version > kFormatVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("the store has format version ", meta->format_version,
                       ", newer than this build's ", kFormatVersion, "; upgrade rill"));
    }
    return std::optional<std::string>(meta->store_id.ToString());
  }
  if (rc != MDB_NOTFOUND) return LmdbError(rc, "reading the store's meta record");
  MDB_stat st;
  mdb_stat(txn, dbs.events, &st);
  if (st.ms_entries != 0) return absl::FailedPreconditionError("not a rill store (no meta record)");
  return std::optional<std::string>();
}

absl::StatusOr<std::string> ReadOrCreateMeta(LmdbEnv* env, const LogDbs& dbs, bool read_only) {
  absl::StatusOr<std::optional<std::string>> id;
  if (read_only) {
    absl::StatusOr<Txn> txn = env->BeginRead();
    if (!txn.ok()) return txn.status();
    id = ReadMeta(txn->get(), dbs);
    if (id.ok() && !id->has_value()) {
      return absl::FailedPreconditionError("not a rill store (no meta record)");
    }
  } else {
    absl::Status s = env->Write("creating the store's meta record", [&](MDB_txn* txn) {
      id = ReadMeta(txn, dbs);
      if (!id.ok() || id->has_value()) return id.status();
      StoreMetaData meta{kFormatVersion, EventId::Random(), absl::ToUnixMicros(absl::Now())};
      const std::string encoded = EncodeStoreMeta(meta);
      MDB_val key = ToVal(kMetaKey), value = ToVal(encoded);
      *id = meta.store_id.ToString();
      return LmdbError(mdb_put(txn, dbs.meta, &key, &value, 0), "creating the store's meta record");
    });
    if (!s.ok()) return s;
  }
  if (!id.ok()) return id.status();
  return **std::move(id);
}

// The LMDB settings of one of the store's environments. `sync_flag` is what
// the default durability means for it (0: full syncs).
LmdbEnvOptions EnvOptionsFor(const StoreOptions& options, unsigned sync_flag) {
  LmdbEnvOptions env;
  env.flags = (options.read_only ? MDB_RDONLY : 0) |
              (options.durability == Durability::kNoSyncUnsafe ? MDB_NOSYNC : sync_flag);
  env.map_size = options.initial_map_size;
  env.map_growth_step = options.map_growth_step;
  env.max_readers = options.max_readers;
  return env;
}

// LMDB's first opener of an environment takes an exclusive POSIX lock on
// lock.mdb while it sets the file up; everyone else waits for it in
// fcntl(F_SETLKW) inside mdb_env_open, without a timeout. A lock that some
// other program holds and never lets go (a stuck backup tool, a debugger)
// would hang Open forever, so Open looks first and waits at most
// kLockFileWait.

// OK once nobody holds a write lock on `env_dir`/lock.mdb (or it does not
// exist yet); Unavailable naming the holder after kLockFileWait.
absl::Status WaitForLockFile(const std::string& env_dir) {
  const std::string path = absl::StrCat(env_dir, "/lock.mdb");
  const absl::Time deadline = absl::Now() + kLockFileWait;
  for (;;) {
    // An exclusive holder only: LMDB's readers and writers share the lock.
    const pid_t holder = LockFileHolder(path, F_RDLCK);
    if (holder == 0) return absl::OkStatus();  // or no file: LMDB creates it
    if (absl::Now() >= deadline) {
      return absl::UnavailableError(
          absl::StrCat(path, " is locked exclusively by process ", holder, " for more than ",
                       absl::FormatDuration(kLockFileWait),
                       "; LMDB cannot open the store until that process lets go of it"));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
}

}  // namespace

StoreRegistration::~StoreRegistration() {
  if (key_.empty()) return;
  absl::MutexLock lock(&registry_mu);
  Registry().erase(key_);
}

std::vector<std::string> DirectoriesToSync(const std::string& dir) {
  std::vector<std::string> dirs = {dir};
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec);
  if (ec) return dirs;
  while (!fs::exists(p, ec) && p.has_parent_path() && p.parent_path() != p) {
    p = p.parent_path();
    dirs.push_back(p.string());
  }
  return dirs;
}

absl::Status SyncDirectories(const std::vector<std::string>& dirs) {
  for (const std::string& d : dirs) {
    if (absl::Status s = SyncPath(d, O_RDONLY | O_DIRECTORY); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status SyncPath(const std::string& path, int flags) {
  const int fd = open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return LmdbError(errno, absl::StrCat("cannot open ", path));
  const int rc = fsync(fd) == 0 ? 0 : errno;
  close(fd);
  return rc == 0 ? absl::OkStatus() : LmdbError(rc, absl::StrCat("cannot sync ", path));
}

std::string LogDataFile(const std::string& dir) {
  return absl::StrCat(dir, "/", kLogDir, "/data.mdb");
}

absl::StatusOr<OpenedLog> OpenLog(const std::string& dir, const StoreOptions& options) {
  if (dir.empty()) return absl::InvalidArgumentError("store directory is empty");
  const std::string log_dir = absl::StrCat(dir, "/", kLogDir);
  std::error_code ec;
  const bool creating = !options.read_only && !fs::exists(LogDataFile(dir), ec);
  const std::vector<std::string> new_dirs =
      creating ? DirectoriesToSync(log_dir) : std::vector<std::string>();
  if (absl::Status s = PrepareDirectory(dir, options); !s.ok()) return s;
  std::string key = fs::canonical(dir, ec).string();
  if (ec) return ErrnoStatus(ec, absl::StrCat("cannot resolve ", dir));
  OpenedLog log;
  {
    absl::MutexLock lock(&registry_mu);
    if (!Registry().insert(key).second) {
      return absl::FailedPreconditionError(
          absl::StrCat("the store at ", dir, " is already open in this process; share that Store"));
    }
  }
  // From here on the registration takes the store out of the registry again
  // on every return.
  log.registration = StoreRegistration(std::move(key));
  if (absl::Status s = WaitForLockFile(log_dir); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<LmdbEnv>> env = LmdbEnv::Open(log_dir, EnvOptionsFor(options, 0));
  if (!env.ok()) return env.status();
  log.env = *std::move(env);
  const bool create = !options.read_only;
  for (auto [name, dbi] : {std::pair{"events", &log.dbs.events},
                           {"streams", &log.dbs.streams},
                           {"stream_index", &log.dbs.stream_index},
                           {"idempotency", &log.dbs.idempotency},
                           {"meta", &log.dbs.meta}}) {
    absl::StatusOr<MDB_dbi> opened = log.env->OpenDb(name, create);
    if (!opened.ok()) {
      if (opened.status().code() == absl::StatusCode::kNotFound) {
        return absl::FailedPreconditionError(
            absl::StrCat(dir, " is not a rill store (no ", name, " database)"));
      }
      return opened.status();
    }
    *dbi = *opened;
  }
  absl::StatusOr<std::string> store_id =
      ReadOrCreateMeta(log.env.get(), log.dbs, options.read_only);
  if (!store_id.ok()) return store_id.status();
  log.store_id = *std::move(store_id);
  if (absl::Status s = SyncDirectories(new_dirs); !s.ok()) return s;
  return log;
}

absl::StatusOr<std::unique_ptr<LmdbEnv>> OpenDerivedEnv(const std::string& dir,
                                                        const StoreOptions& options) {
  const std::string path = absl::StrCat(dir, "/", kDerivedDir);
  std::error_code ec;
  std::vector<std::string> new_dirs;
  if (!fs::exists(path + "/data.mdb", ec)) {
    if (options.read_only) {
      return absl::NotFoundError(absl::StrCat(
          "the store at ", dir, " has no derived data (no projections or snapshots yet)"));
    }
    new_dirs = DirectoriesToSync(path);
    fs::create_directories(path, ec);
    if (ec) return ErrnoStatus(ec, absl::StrCat("cannot create ", path));
  }
  // Derived data syncs its data pages but not the meta page (MDB_NOMETASYNC):
  // an OS crash may undo the last commit - rows and checkpoint together, so
  // the work is simply redone - but never breaks integrity. One fsync per
  // commit instead of two.
  LmdbEnvOptions env_options = EnvOptionsFor(options, MDB_NOMETASYNC);
  env_options.max_dbs = kDerivedMaxDbs;
  if (absl::Status s = WaitForLockFile(path); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<LmdbEnv>> env = LmdbEnv::Open(path, env_options);
  if (!env.ok()) return env.status();
  // The new data file holds only LMDB's initial meta pages, unsynced: its
  // first commit syncs them; the entries are synced here.
  if (absl::Status s = SyncDirectories(new_dirs); !s.ok()) return s;
  return env;
}

}  // namespace rill::internal
