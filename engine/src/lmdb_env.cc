#include "lmdb_env.h"

#include <errno.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine_metrics.h"

namespace rill::internal {
namespace {

// A short write with less room than this left is taken for a full disk.
constexpr uint64_t kDiskFullSlack = uint64_t{64} << 20;

// The payload that marks a status made from MDB_MAP_FULL. Only that code
// travels in a payload: it is the only one anything acts on, and Abseil
// prints payloads in Status::ToString, which reaches users (and dead-letter
// records), so LmdbEnv::Write removes it before it returns.
constexpr char kMapFullUrl[] = "rill/lmdb-map-full";

absl::Status CodeToStatus(int rc, const std::string& msg) {
  switch (rc) {
    case ENOSPC:
    case EFBIG:
    case EDQUOT:
    case ENOMEM:
    case MDB_MAP_FULL:
    case MDB_READERS_FULL:
    case MDB_TXN_FULL:
    case MDB_DBS_FULL:
      return absl::ResourceExhaustedError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case EROFS:
      return absl::FailedPreconditionError(msg);
    case ENOENT:
    case MDB_NOTFOUND:
      return absl::NotFoundError(msg);
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_BAD_VALSIZE:
      return absl::DataLossError(msg);
    case EIO:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

}  // namespace

absl::Status WriteError(int rc, absl::string_view context, const std::string& path) {
  if (rc == EIO) {
    // LMDB 0.9.24 reports a short write as EIO. A short write is what a full
    // disk (or a file size limit) produces, so tell that apart from a real
    // I/O error by looking at the room left.
    bool full = false;
    struct statvfs vfs;
    if (statvfs(path.c_str(), &vfs) == 0) {
      full = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize < kDiskFullSlack;
    }
    struct rlimit limit;
    struct stat st;
    if (!full && getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY &&
        stat((path + "/data.mdb").c_str(), &st) == 0) {
      full = static_cast<uint64_t>(st.st_size) + kDiskFullSlack > limit.rlim_cur;
    }
    if (full) {
      return absl::ResourceExhaustedError(
          absl::StrCat(context, ": ", mdb_strerror(rc),
                       " (a short write: the disk or file size limit is full)"));
    }
  }
  return LmdbError(rc, context);
}

bool IsMapFull(const absl::Status& status) { return status.GetPayload(kMapFullUrl).has_value(); }

absl::Status LmdbError(int rc, absl::string_view context) {
  if (rc == 0) return absl::OkStatus();
  absl::Status status = CodeToStatus(rc, absl::StrCat(context, ": ", mdb_strerror(rc)));
  if (rc == MDB_MAP_FULL) status.SetPayload(kMapFullUrl, absl::Cord());
  return status;
}

Txn::Txn(Txn&& other) noexcept : env_(other.env_), txn_(other.txn_), hold_(std::move(other.hold_)) {
  other.txn_ = nullptr;
}

Txn::~Txn() { Abort(); }

void Txn::Abort() {
  if (txn_ == nullptr) return;
  mdb_txn_abort(txn_);
  txn_ = nullptr;
  env_->resize_mu_.SharedDone(hold_);
}

int Txn::Commit() {
  int rc = mdb_txn_commit(txn_);  // frees the txn whatever the outcome
  txn_ = nullptr;
  env_->resize_mu_.SharedDone(hold_);
  return rc;
}

absl::StatusOr<CursorPtr> OpenCursor(MDB_txn* txn, MDB_dbi dbi) {
  MDB_cursor* cursor = nullptr;
  int rc = mdb_cursor_open(txn, dbi, &cursor);
  if (rc != 0) return LmdbError(rc, "mdb_cursor_open");
  return CursorPtr(cursor);
}

absl::StatusOr<CursorPtr> Txn::OpenCursor(MDB_dbi dbi) const {
  return internal::OpenCursor(txn_, dbi);
}

namespace {

// How many shared holds of which ResizeLock this thread has: a thread that
// already holds one may take another even while a resize is pending (it
// would otherwise wait for itself). Only a preference: the exclusion itself
// is counted in ResizeLock::holders_. The counts are shared_ptrs so that a
// transaction ended on another thread (a view handed over) decrements the
// count of the thread that opened it.
thread_local std::vector<std::pair<const void*, std::shared_ptr<std::atomic<int>>>>
    held_by_this_thread;

const std::shared_ptr<std::atomic<int>>& HeldByThisThread(const void* lock) {
  for (const auto& [l, n] : held_by_this_thread) {
    if (l == lock) return n;
  }
  held_by_this_thread.emplace_back(lock, std::make_shared<std::atomic<int>>(0));
  return held_by_this_thread.back().second;
}

}  // namespace

std::shared_ptr<std::atomic<int>> LmdbEnv::ResizeLock::Shared() {
  std::shared_ptr<std::atomic<int>> mine = HeldByThisThread(this);
  absl::MutexLock lock(&mu_);
  if (mine->load() <= 0) {
    auto no_resize = [this]()
                         ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !pending_ && !resizing_; };
    mu_.Await(absl::Condition(&no_resize));
  }
  ++holders_;
  ++*mine;
  return mine;
}

void LmdbEnv::ResizeLock::SharedDone(const std::shared_ptr<std::atomic<int>>& hold) {
  --*hold;
  absl::MutexLock lock(&mu_);
  --holders_;
}

void LmdbEnv::ResizeLock::Exclusive() {
  absl::MutexLock lock(&mu_);
  auto free = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !pending_ && !resizing_; };
  mu_.Await(absl::Condition(&free));
  pending_ = true;  // new readers wait from now on; nested ones do not
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return holders_ == 0; };
  mu_.Await(absl::Condition(&idle));
  pending_ = false;
  resizing_ = true;
}

void LmdbEnv::ResizeLock::ExclusiveDone() {
  absl::MutexLock lock(&mu_);
  resizing_ = false;
}

absl::StatusOr<std::unique_ptr<LmdbEnv>> LmdbEnv::Open(const std::string& path,
                                                       const LmdbEnvOptions& options) {
  MDB_env* env = nullptr;
  int rc = mdb_env_create(&env);
  if (rc != 0) return LmdbError(rc, "mdb_env_create");
  std::unique_ptr<LmdbEnv> result(new LmdbEnv(env, path, options));
  if ((rc = mdb_env_set_maxdbs(env, options.max_dbs)) != 0 ||
      (rc = mdb_env_set_maxreaders(env, options.max_readers)) != 0 ||
      (rc = mdb_env_set_mapsize(env, options.map_size)) != 0) {
    return LmdbError(rc, "configuring LMDB");
  }
  rc = mdb_env_open(env, path.c_str(), options.flags | MDB_NOTLS, 0644);
  if (rc != 0) return LmdbError(rc, absl::StrCat("opening LMDB environment ", path));
  // Free the reader slots of processes that died with a read transaction
  // open (a SIGKILLed service), so they do not pin pages forever.
  int dead = 0;
  mdb_reader_check(env, &dead);
  // LMDB maps pages past the end of a truncated file and faults (SIGBUS)
  // when it touches them: refuse a data file shorter than its meta says.
  MDB_envinfo info;
  MDB_stat stat;
  struct stat st;
  mdb_env_info(env, &info);
  mdb_env_stat(env, &stat);
  if (::stat((path + "/data.mdb").c_str(), &st) == 0) {
    const uint64_t needed = (uint64_t{info.me_last_pgno} + 1) * stat.ms_psize;
    if (static_cast<uint64_t>(st.st_size) < needed) {
      return absl::DataLossError(absl::StrCat(path, "/data.mdb is truncated: ", st.st_size,
                                              " bytes, but its pages need ", needed));
    }
  }
  return result;
}

LmdbEnv::~LmdbEnv() { mdb_env_close(env_); }

absl::StatusOr<Txn> LmdbEnv::BeginRead() { return Begin(MDB_RDONLY); }
absl::StatusOr<Txn> LmdbEnv::BeginWrite() { return Begin(0); }

absl::StatusOr<Txn> LmdbEnv::Begin(unsigned flags) {
  for (int attempt = 0;; ++attempt) {
    std::shared_ptr<std::atomic<int>> hold = resize_mu_.Shared();
    MDB_txn* txn = nullptr;
    int rc = mdb_txn_begin(env_, nullptr, flags, &txn);
    if (rc == 0) return Txn(this, txn, std::move(hold));
    resize_mu_.SharedDone(hold);
    if (attempt >= 8) return LmdbError(rc, "mdb_txn_begin");
    if (rc == MDB_READERS_FULL) {
      // Slots of processes that died inside a read transaction stay taken
      // until someone checks; reclaim them and try again.
      int dead = 0;
      mdb_reader_check(env_, &dead);
      if (dead == 0) return LmdbError(rc, "mdb_txn_begin (every reader slot is in use)");
      continue;
    }
    if (rc != MDB_MAP_RESIZED) return LmdbError(rc, "mdb_txn_begin");
    if (absl::Status s = AdoptMapSize(); !s.ok()) return s;
  }
}

absl::Status LmdbEnv::AdoptMapSize() {
  resize_mu_.Exclusive();
  int rc = mdb_env_set_mapsize(env_, 0);
  resize_mu_.ExclusiveDone();
  return LmdbError(rc, "adopting the grown map size");
}

absl::Status LmdbEnv::Write(absl::string_view what, absl::FunctionRef<absl::Status(MDB_txn*)> fn) {
  return Write(what, fn, [] {});
}

absl::Status LmdbEnv::Write(absl::string_view what, absl::FunctionRef<absl::Status(MDB_txn*)> fn,
                            absl::FunctionRef<void()> on_commit) {
  SweepStaleReaders();
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<Txn> txn = BeginWrite();
    if (!txn.ok()) return txn.status();
    absl::Status s = fn(txn->get());
    if (s.ok()) {
      const absl::Time commit_start = absl::Now();
      const int rc = txn->Commit();
      if (commit_histogram_ != nullptr) commit_histogram_->Observe(absl::Now() - commit_start);
      if (rc == 0) {
        on_commit();
        return absl::OkStatus();
      }
      s = WriteError(rc, what, path_);
    } else {
      txn->Abort();
    }
    if (!IsMapFull(s) || attempt >= 64) {
      s.ErasePayload(kMapFullUrl);
      return s;
    }
    if (absl::Status grown = Grow(); !grown.ok()) return grown;
  }
}

void LmdbEnv::SweepStaleReaders() {
  const int64_t now_us = absl::ToUnixMicros(absl::Now());
  int64_t last_us = last_sweep_us_.load(std::memory_order_relaxed);
  if (now_us - last_us < 1000000 || !last_sweep_us_.compare_exchange_strong(last_us, now_us)) {
    return;
  }
  int dead = 0;
  mdb_reader_check(env_, &dead);
}

absl::Status LmdbEnv::Grow() {
  resize_mu_.Exclusive();
  MDB_envinfo info;
  mdb_env_info(env_, &info);
  size_t current = info.me_mapsize;
  size_t next =
      current < options_.map_growth_step ? current * 2 : current + options_.map_growth_step;
  int rc = mdb_env_set_mapsize(env_, next);
  resize_mu_.ExclusiveDone();
  return LmdbError(rc, "growing the map");
}

size_t LmdbEnv::map_size() {
  std::shared_ptr<std::atomic<int>> hold = resize_mu_.Shared();
  MDB_envinfo info;
  mdb_env_info(env_, &info);
  resize_mu_.SharedDone(hold);
  return info.me_mapsize;
}

absl::StatusOr<MDB_dbi> LmdbEnv::OpenDb(const char* name, bool create) {
  // LMDB forbids opening databases from concurrent transactions of one
  // process; handles, once open, are shared by all threads.
  absl::MutexLock lock(&dbi_mu_);
  const std::string what = absl::StrCat("opening database ", name);
  MDB_dbi dbi;
  if (create) {
    absl::Status s = Write(what, [&](MDB_txn* txn) {
      return LmdbError(mdb_dbi_open(txn, name, MDB_CREATE, &dbi), what);
    });
    if (!s.ok()) return s;
    return dbi;
  }
  absl::StatusOr<Txn> txn = BeginRead();
  if (!txn.ok()) return txn.status();
  int rc = mdb_dbi_open(txn->get(), name, 0, &dbi);
  if (rc != 0) return LmdbError(rc, what);
  // The handle outlives the transaction only if it commits (read-only
  // transactions too); an abort would close it.
  rc = txn->Commit();
  if (rc != 0) return LmdbError(rc, what);
  return dbi;
}

}  // namespace rill::internal
