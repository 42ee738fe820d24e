#include "store_impl.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "keys.h"
#include "validate.h"
#include "writer.h"

namespace rill::internal {
namespace {

namespace fs = std::filesystem;

constexpr char kLogDir[] = "log";
constexpr char kDerivedDir[] = "derived";
// Named databases of the derived environment: a few fixed ones plus one per
// read-model table of each live generation.
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
    for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
      bool leftover = entry.path().filename() == kLogDir && entry.is_directory();
      bool lock_file = false;
      if (leftover) {
        for (const fs::directory_entry& f : fs::directory_iterator(entry.path(), ec)) {
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
    const std::string why = absl::StrCat(
        "no rill store at ", dir,
        options.read_only ? " (a read-only open does not create one)"
                          : " (create_if_missing is off)");
    if (fs::exists(st)) return absl::FailedPreconditionError(why);
    return absl::NotFoundError(why);
  }
  fs::create_directories(absl::StrCat(dir, "/", kLogDir), ec);
  if (ec) return ErrnoStatus(ec, absl::StrCat("cannot create the store directory ", dir));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadOrCreateMeta(LmdbEnv* env, const LogDbs& dbs, bool read_only) {
  absl::StatusOr<Txn> txn = read_only ? env->BeginRead() : env->BeginWrite();
  if (!txn.ok()) return txn.status();
  MDB_val key = ToVal(kMetaKey), value;
  int rc = mdb_get(txn->get(), dbs.meta, &key, &value);
  if (rc == 0) {
    absl::StatusOr<StoreMetaData> meta = DecodeStoreMeta(FromVal(value));
    if (!meta.ok()) return meta.status();
    if (meta->format_version > kFormatVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("the store has format version ", meta->format_version,
                       ", newer than this build's ", kFormatVersion, "; upgrade rill"));
    }
    return meta->store_id.ToString();
  }
  if (rc != MDB_NOTFOUND) return LmdbError(rc, "reading the store's meta record");
  MDB_stat st;
  mdb_stat(txn->get(), dbs.events, &st);
  if (st.ms_entries != 0 || read_only) {
    return absl::FailedPreconditionError("not a rill store (no meta record)");
  }
  StoreMetaData meta{kFormatVersion, EventId::Random(), absl::ToUnixMicros(absl::Now())};
  std::string encoded = EncodeStoreMeta(meta);
  value = ToVal(encoded);
  rc = mdb_put(txn->get(), dbs.meta, &key, &value, 0);
  if (rc == 0) rc = txn->Commit();
  if (rc != 0) return LmdbError(rc, "creating the store's meta record");
  return meta.store_id.ToString();
}

// The reader table of an environment (lock.mdb), as mdb_reader_list prints
// it: one line per slot, "pid thread txnid", txnid "-" for a slot that holds
// no snapshot now.
struct ReaderTable {
  unsigned slots = 0;
  unsigned stale = 0;            // slots of dead processes
  uint64_t oldest_txn = 0;       // oldest snapshot held (0: none)
  int64_t oldest_pid = 0;
};

bool ProcessIsDead(int64_t pid) {
  return pid > 0 && pid != getpid() && kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

ReaderTable ReadReaderTable(MDB_env* env) {
  ReaderTable table;
  mdb_reader_list(
      env,
      [](const char* msg, void* ctx) {
        auto* t = static_cast<ReaderTable*>(ctx);
        long long pid = 0;
        char thread[32], txn[32];
        // The header line and "(no active readers)" do not parse.
        if (sscanf(msg, "%lld %31s %31s", &pid, thread, txn) != 3) return 0;
        ++t->slots;
        if (ProcessIsDead(pid)) ++t->stale;
        uint64_t id = 0;
        if (txn[0] != '-' && absl::SimpleAtoi(txn, &id) && id != 0 &&
            (t->oldest_txn == 0 || id < t->oldest_txn)) {
          t->oldest_txn = id;
          t->oldest_pid = pid;
        }
        return 0;
      },
      &table);
  return table;
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
      return absl::UnavailableError(absl::StrCat(
          path, " is locked exclusively by process ", holder, " for more than ",
          absl::FormatDuration(kLockFileWait),
          "; LMDB cannot open the store until that process lets go of it"));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
}

StreamInfo MakeStreamInfo(absl::string_view name, const StreamState& state) {
  StreamInfo info;
  info.name = std::string(name);
  info.exists = true;
  info.last_version = state.last_version;
  info.event_count = static_cast<uint64_t>(state.last_version) + 1;
  info.first_position = state.first_position;
  info.last_position = state.last_position;
  info.last_recorded_at = absl::FromUnixMicros(state.last_recorded_us);
  return info;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> StoreImpl::Open(const std::string& dir,
                                                       const StoreOptions& options) {
  if (dir.empty()) return absl::InvalidArgumentError("store directory is empty");
  if (absl::Status s = PrepareDirectory(dir, options); !s.ok()) return s;
  std::error_code ec;
  std::string key = fs::canonical(dir, ec).string();
  if (ec) return ErrnoStatus(ec, absl::StrCat("cannot resolve ", dir));
  {
    absl::MutexLock lock(&registry_mu);
    if (!Registry().insert(key).second) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the store at ", dir, " is already open in this process; share that Store"));
    }
  }
  auto unregister = [&key] {
    absl::MutexLock lock(&registry_mu);
    Registry().erase(key);
  };

  if (absl::Status s = WaitForLockFile(absl::StrCat(dir, "/", kLogDir)); !s.ok()) {
    unregister();
    return s;
  }
  absl::StatusOr<std::unique_ptr<LmdbEnv>> env =
      LmdbEnv::Open(absl::StrCat(dir, "/", kLogDir), EnvOptionsFor(options, 0));
  if (!env.ok()) {
    unregister();
    return env.status();
  }
  LogDbs dbs;
  const bool create = !options.read_only;
  for (auto [name, dbi] : {std::pair{"events", &dbs.events}, {"streams", &dbs.streams},
                           {"stream_index", &dbs.stream_index},
                           {"idempotency", &dbs.idempotency}, {"meta", &dbs.meta}}) {
    absl::StatusOr<MDB_dbi> opened = (*env)->OpenDb(name, create);
    if (!opened.ok()) {
      unregister();
      if (opened.status().code() == absl::StatusCode::kNotFound) {
        return absl::FailedPreconditionError(
            absl::StrCat(dir, " is not a rill store (no ", name, " database)"));
      }
      return opened.status();
    }
    *dbi = *opened;
  }
  absl::StatusOr<std::string> store_id = ReadOrCreateMeta(env->get(), dbs, options.read_only);
  if (!store_id.ok()) {
    unregister();
    return store_id.status();
  }
  // From here on the store's destructor unregisters it.
  std::unique_ptr<StoreImpl> store(
      new StoreImpl(dir, key, options, *std::move(env), dbs, *std::move(store_id)));
  absl::StatusOr<uint64_t> head = store->HeadPosition();
  if (!head.ok()) return head.status();
  store->PublishHead(*head);
  return std::unique_ptr<Store>(std::move(store));
}

StoreImpl::StoreImpl(std::string dir, std::string registry_key, const StoreOptions& options,
                     std::unique_ptr<LmdbEnv> env, LogDbs dbs, std::string store_id)
    : dir_(std::move(dir)),
      registry_key_(std::move(registry_key)),
      options_(options),
      env_(std::move(env)),
      dbs_(dbs),
      store_id_(std::move(store_id)) {
  if (!options_.read_only) {
    writer_ = std::make_unique<Writer>(this, env_.get(), dbs_, options_);
  }
}

StoreImpl::~StoreImpl() {
  writer_.reset();
  {
    absl::MutexLock lock(&derived_mu_);
    derived_.reset();
  }
  env_.reset();
  absl::MutexLock lock(&registry_mu);
  Registry().erase(registry_key_);
}

absl::StatusOr<LmdbEnv*> StoreImpl::DerivedEnv() {
  absl::MutexLock lock(&derived_mu_);
  if (derived_ != nullptr) return derived_.get();
  const std::string path = absl::StrCat(dir_, "/", kDerivedDir);
  std::error_code ec;
  if (!fs::exists(path + "/data.mdb", ec)) {
    if (options_.read_only) {
      return absl::NotFoundError(
          absl::StrCat("the store at ", dir_, " has no derived data (no projections or snapshots yet)"));
    }
    fs::create_directories(path, ec);
    if (ec) return ErrnoStatus(ec, absl::StrCat("cannot create ", path));
  }
  // Derived data syncs its data pages but not the meta page (MDB_NOMETASYNC):
  // an OS crash may undo the last commit - rows and checkpoint together, so
  // the work is simply redone - but never breaks integrity. One fsync per
  // commit instead of two.
  LmdbEnvOptions env_options = EnvOptionsFor(options_, MDB_NOMETASYNC);
  env_options.max_dbs = kDerivedMaxDbs;
  if (absl::Status s = WaitForLockFile(path); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<LmdbEnv>> env = LmdbEnv::Open(path, env_options);
  if (!env.ok()) return env.status();
  derived_ = *std::move(env);
  return derived_.get();
}

absl::StatusOr<AppendResult> StoreImpl::Append(absl::string_view stream,
                                               ExpectedVersion expected,
                                               absl::Span<const EventData> events,
                                               const AppendOptions& options) {
  std::vector<RequestPart> parts{RequestPart{stream, expected, events}};
  absl::StatusOr<std::vector<AppendResult>> results = Submit(std::move(parts), options);
  if (!results.ok()) return results.status();
  return std::move(results->front());
}

absl::StatusOr<std::vector<AppendResult>> StoreImpl::AppendMulti(
    absl::Span<const StreamAppend> appends, const AppendOptions& options) {
  if (appends.empty()) return absl::InvalidArgumentError("append request names no stream");
  std::vector<RequestPart> parts;
  parts.reserve(appends.size());
  absl::flat_hash_set<absl::string_view> seen;
  for (const StreamAppend& a : appends) {
    if (!seen.insert(a.stream).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("stream \"", a.stream, "\" appears twice in one append request"));
    }
    parts.push_back(RequestPart{a.stream, a.expected, a.events});
  }
  return Submit(std::move(parts), options);
}

absl::StatusOr<std::vector<AppendResult>> StoreImpl::Submit(std::vector<RequestPart> parts,
                                                            const AppendOptions& options) {
  if (options_.read_only) {
    return absl::FailedPreconditionError("the store was opened read-only");
  }
  AppendRequest request;
  size_t event_count = 0;
  for (const RequestPart& p : parts) {
    if (absl::Status s =
            ValidateStreamAppend(p.stream, p.expected, p.events, &request.bytes, &event_count);
        !s.ok()) {
      return s;
    }
  }
  if (!options.idempotency_key.empty()) {
    if (absl::Status s = ValidateIdempotencyKey(options.idempotency_key); !s.ok()) return s;
    request.idempotency_key = options.idempotency_key;
    request.fingerprint = Fingerprint(parts);
  }
  request.parts = std::move(parts);
  // A process that died in a read transaction leaves a reader slot that pins
  // pages until someone frees it: while this process appends, that is done
  // at most once a second (a scan of the reader table, cheap), so a crashed
  // reader cannot make the log grow without bound (docs/reliability.md).
  const int64_t now_us = absl::ToUnixMicros(absl::Now());
  int64_t last_us = last_reader_check_us_.load(std::memory_order_relaxed);
  if (now_us - last_us >= 1000000 &&
      last_reader_check_us_.compare_exchange_strong(last_us, now_us)) {
    int dead = 0;
    mdb_reader_check(env_->env(), &dead);  // best effort: an error changes nothing
  }
  writer_->Submit(&request);
  return std::move(request.result);
}

void StoreImpl::PublishHead(uint64_t head) {
  absl::MutexLock lock(&head_mu_);
  if (head > head_) head_ = head;
  head_cv_.SignalAll();
}

void StoreImpl::Wake() {
  absl::MutexLock lock(&head_mu_);
  ++wake_epoch_;
  head_cv_.SignalAll();
}

absl::StatusOr<uint64_t> StoreImpl::WaitForHead(uint64_t known_head, absl::Duration timeout,
                                                absl::Duration poll_interval) {
  return WaitForHeadOrCancel(known_head, timeout, poll_interval, nullptr);
}

uint64_t StoreImpl::WakeEpoch() {
  absl::MutexLock lock(&head_mu_);
  return wake_epoch_;
}

absl::StatusOr<uint64_t> StoreImpl::WaitForHeadOrCancel(uint64_t known_head,
                                                        absl::Duration timeout,
                                                        absl::Duration poll_interval,
                                                        const std::atomic<bool>* cancel,
                                                        std::optional<uint64_t> since_epoch) {
  const absl::Time deadline = absl::Now() + timeout;
  if (poll_interval <= absl::ZeroDuration()) poll_interval = absl::Milliseconds(50);
  const uint64_t epoch = since_epoch.has_value() ? *since_epoch : WakeEpoch();
  for (;;) {
    bool woken = false;
    {
      absl::MutexLock lock(&head_mu_);
      const absl::Time wake_at = std::min(deadline, absl::Now() + poll_interval);
      while (head_ <= known_head && !(cancel && cancel->load()) && wake_epoch_ == epoch &&
             absl::Now() < wake_at) {
        head_cv_.WaitWithDeadline(&head_mu_, wake_at);
      }
      if (head_ > known_head) return head_;
      woken = wake_epoch_ != epoch;
    }
    // Commits by other processes are not signalled: look at the log itself.
    absl::StatusOr<uint64_t> head = HeadPosition();
    if (!head.ok()) return head.status();
    if (*head > known_head) {
      PublishHead(*head);
      return *head;
    }
    if (woken || (cancel && cancel->load()) || absl::Now() >= deadline) return *head;
  }
}

absl::StatusOr<uint64_t> StoreImpl::HeadPosition() {
  absl::StatusOr<Txn> txn = env_->BeginRead();
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

absl::StatusOr<StoreStats> StoreImpl::Stats() {
  StoreStats stats;
  stats.format_version = kFormatVersion;
  stats.store_id = store_id_;
  stats.durability = options_.durability;
  stats.read_only = options_.read_only;
  {
    absl::StatusOr<Txn> txn = env_->BeginRead();
    if (!txn.ok()) return txn.status();
    MDB_stat st;
    mdb_stat(txn->get(), dbs_.events, &st);
    stats.event_count = st.ms_entries;
    mdb_stat(txn->get(), dbs_.streams, &st);
    stats.stream_count = st.ms_entries;
    mdb_stat(txn->get(), dbs_.idempotency, &st);
    stats.idempotency_keys = st.ms_entries;
    MDB_envinfo info;
    mdb_env_info(env_->env(), &info);
    MDB_stat env_stat;
    mdb_env_stat(env_->env(), &env_stat);
    stats.map_size = info.me_mapsize;
    stats.used_bytes = (info.me_last_pgno + 1) * uint64_t{env_stat.ms_psize};
    const ReaderTable readers = ReadReaderTable(env_->env());
    stats.readers_in_use = readers.slots;
    stats.stale_readers = readers.stale;
    if (readers.oldest_txn != 0 && readers.oldest_txn < info.me_last_txnid) {
      stats.oldest_reader_lag = info.me_last_txnid - readers.oldest_txn;
      stats.oldest_reader_pid = readers.oldest_pid;
    }
    stats.max_readers = info.me_maxreaders;
  }
  absl::StatusOr<uint64_t> head = HeadPosition();
  if (!head.ok()) return head.status();
  stats.head_position = *head;
  std::error_code ec;
  stats.file_bytes = fs::file_size(absl::StrCat(dir_, "/", kLogDir, "/data.mdb"), ec);
  return stats;
}

absl::StatusOr<unsigned> StoreImpl::ClearStaleReaders() {
  int dead = 0;
  if (int rc = mdb_reader_check(env_->env(), &dead); rc != 0) {
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

absl::StatusOr<StreamInfo> StoreImpl::GetStreamInfo(absl::string_view stream) {
  absl::StatusOr<Txn> txn = env_->BeginRead();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<StreamState> state = ReadStreamState(txn->get(), stream);
  if (state.status().code() == absl::StatusCode::kNotFound) {
    StreamInfo info;
    info.name = std::string(stream);
    return info;
  }
  if (!state.ok()) return state.status();
  return MakeStreamInfo(stream, *state);
}

absl::StatusOr<std::vector<StreamInfo>> StoreImpl::ListStreams(absl::string_view prefix,
                                                               size_t limit,
                                                               absl::string_view start_after) {
  std::vector<StreamInfo> out;
  absl::StatusOr<Txn> txn = env_->BeginRead();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<CursorPtr> cursor = txn->OpenCursor(dbs_.streams);
  if (!cursor.ok()) return cursor.status();
  absl::string_view start = start_after > prefix ? start_after : prefix;
  MDB_val k = ToVal(start), v;
  int rc = start.empty() ? mdb_cursor_get(cursor->get(), &k, &v, MDB_FIRST)
                         : mdb_cursor_get(cursor->get(), &k, &v, MDB_SET_RANGE);
  for (; rc == 0 && out.size() < limit; rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT)) {
    absl::string_view name = FromVal(k);
    if (!absl::StartsWith(name, prefix)) break;
    if (!start_after.empty() && name <= start_after) continue;
    absl::StatusOr<StreamState> state = DecodeStreamState(FromVal(v), name);
    if (!state.ok()) return state.status();
    out.push_back(MakeStreamInfo(name, *state));
  }
  if (rc != 0 && rc != MDB_NOTFOUND) return LmdbError(rc, "listing streams");
  return out;
}

}  // namespace rill::internal

namespace rill {

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& dir,
                                                   const StoreOptions& options) {
  return internal::StoreImpl::Open(dir, options);
}

}  // namespace rill
