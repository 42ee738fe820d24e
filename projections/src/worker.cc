#include "worker.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <limits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "apply_batch.h"
#include "dead_letters.h"
#include "keys.h"

namespace rill::internal {
namespace {

// Rows of swapped-out generations deleted per transaction.
constexpr size_t kDropChunk = 10000;

}  // namespace

Worker::Worker(const Derived& derived, ProjectionDef def, const RunnerOptions& options)
    : d_(derived), def_(std::move(def)), options_(options) {}

Worker::~Worker() {
  Stop();
  if (lock_fd_ >= 0) close(lock_fd_);
}

absl::Status Worker::Start() {
  absl::StatusOr<int> lock = LockProjection(ProjectionLockPath(d_.env, def_.name), def_.name);
  if (!lock.ok()) return lock.status();
  lock_fd_ = *lock;
  CatalogRec rec;
  absl::Status s = d_.env->Write(kCommitDerived, [&](MDB_txn* txn) -> absl::Status {
    absl::StatusOr<std::optional<CatalogRec>> existing = ReadCatalog(txn, d_.dbs, def_.name);
    if (!existing.ok()) return existing.status();
    if (existing->has_value()) {
      rec = **existing;
    } else {
      absl::StatusOr<uint64_t> gen = NextGeneration(txn, d_.dbs);
      if (!gen.ok()) return gen.status();
      rec = CatalogRec{def_.name, GenerationRec{*gen, def_.version, 0}, std::nullopt, {}};
    }
    // A rebuild for another version than the one we run is of no use.
    if (rec.building && rec.building->version != def_.version) {
      if (absl::Status d = DropDeadLettersOf(txn, d_.dbs, def_.name, rec.building->id); !d.ok())
        return d;
      rec.retired.push_back(rec.building->id);
      rec.building.reset();
    }
    // A version bump: build the new version next to the old one.
    if (rec.active.version != def_.version && !rec.building) {
      absl::StatusOr<uint64_t> gen = NextGeneration(txn, d_.dbs);
      if (!gen.ok()) return gen.status();
      rec.building = GenerationRec{*gen, def_.version, 0};
    }
    return WriteCatalog(txn, rec);
  });
  if (!s.ok()) return s;
  {
    absl::MutexLock lock(&mu_);
    state_ = rec.building ? ProjectionState::kRebuilding : ProjectionState::kRunning;
    catalog_ = std::move(rec);
  }
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void Worker::Stop() {
  stop_.store(true);
  d_.core->head().Wake();
  {
    absl::MutexLock lock(&mu_);
    cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

absl::Status Worker::WriteCatalog(MDB_txn* txn, const CatalogRec& rec) {
  return Put(txn, d_.dbs.catalog, def_.name, EncodeCatalog(rec));
}

void Worker::Run() {
  absl::Status s = Loop();
  absl::MutexLock lock(&mu_);
  if (!s.ok() && !failed_) {
    failed_ = true;
    last_error_ = s.ToString();
  }
  state_ = failed_ ? ProjectionState::kFailed : ProjectionState::kStopped;
  stopped_ = true;
  // Tasks that will never run.
  for (Task* t : tasks_) {
    t->result = absl::FailedPreconditionError("the projection runner stopped");
    t->done = true;
  }
  tasks_.clear();
  cv_.SignalAll();
}

void Worker::Fail(const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  failed_ = true;
  state_ = ProjectionState::kFailed;
  last_error_ = why.ToString();
  cv_.SignalAll();
}

absl::Status Worker::Loop() {
  uint64_t known_head = 0;
  absl::Duration retry_pause = absl::ZeroDuration();  // after a full disk
  while (!stop_.load()) {
    // Read before the tasks and flags are looked at: a Wake() after this
    // point ends the wait below at once (tests/lost_wakeup_test.cc).
    const uint64_t epoch = d_.core->head().WakeEpoch();
    // Tasks from other threads (retry of a parked event ...).
    for (;;) {
      Task* task = nullptr;
      {
        absl::MutexLock lock(&mu_);
        if (tasks_.empty()) break;
        task = tasks_.front();
        tasks_.pop_front();
      }
      absl::Status result = task->fn();
      absl::MutexLock lock(&mu_);
      task->result = std::move(result);
      task->done = true;
      cv_.SignalAll();
    }
    if (absl::Status s = TakeRequests(); !s.ok()) return s;
    bool did_work = false;
    bool failed;
    {
      absl::MutexLock lock(&mu_);
      failed = failed_;
    }
    // A full disk (ResourceExhausted) is not the projection's fault and
    // passes: the failed commit wrote nothing, so the batch is simply tried
    // again, after a pause that doubles up to min(poll interval, 1 s), until
    // there is room (tests/fault_injection_test.cc).
    absl::Status disk_full;
    if (!failed) {
      if (absl::Status s = Step(&did_work); !s.ok()) {
        if (s.code() == absl::StatusCode::kResourceExhausted) {
          disk_full = s;
        } else {
          Fail(s);  // e.g. DataLoss in the log: keep serving, stop applying
        }
      }
    }
    if (absl::Status s = DropRetired(&did_work); !s.ok()) {
      if (s.code() != absl::StatusCode::kResourceExhausted) return s;
      disk_full = s;
    }
    if (!disk_full.ok()) {
      {
        absl::MutexLock lock(&mu_);
        last_error_ = disk_full.ToString();
        ++errors_;
        cv_.SignalAll();
      }
      retry_pause = std::min(std::max(retry_pause * 2, absl::Milliseconds(10)),
                             std::min(options_.poll_interval, absl::Seconds(1)));
      absl::StatusOr<uint64_t> head =
          d_.core->head().Wait(known_head, retry_pause, retry_pause, &stop_, epoch);
      if (!head.ok()) return head.status();
      known_head = *head;
      continue;
    }
    retry_pause = absl::ZeroDuration();
    if (did_work) continue;
    {
      absl::MutexLock lock(&mu_);
      if (!failed_) {
        state_ = catalog_.building ? ProjectionState::kRebuilding : ProjectionState::kCaughtUp;
      }
      cv_.SignalAll();
      if (!tasks_.empty()) continue;
    }
    absl::StatusOr<uint64_t> head = d_.core->head().Wait(known_head, options_.poll_interval,
                                                         options_.poll_interval, &stop_, epoch);
    if (!head.ok()) return head.status();
    known_head = *head;
  }
  return absl::OkStatus();
}

absl::Status Worker::TakeRequests() {
  bool requested = rebuild_requested_.exchange(false);
  // Both kinds of request in one read: the rebuild request's key is the bare
  // name, and the retry requests' keys (name 0x00 "retry" position) sort
  // right after it, before any other projection's.
  std::vector<uint64_t> retries;
  const std::string retry_prefix = RetryRequestPrefix(def_.name);
  {
    absl::StatusOr<Txn> txn = d_.env->BeginRead();
    if (!txn.ok()) return txn.status();
    absl::StatusOr<CursorPtr> cursor = txn->OpenCursor(d_.dbs.requests);
    if (!cursor.ok()) return cursor.status();
    MDB_val k = ToVal(def_.name), v;
    int rc;
    for (rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT)) {
      const absl::string_view key = FromVal(k);
      if (key == def_.name) {
        requested = true;
      } else if (!absl::StartsWith(key, retry_prefix)) {
        break;
      } else if (key.size() == retry_prefix.size() + 8) {
        retries.push_back(
            GetBigEndian64(reinterpret_cast<const uint8_t*>(key.data()) + retry_prefix.size()));
      }
    }
    if (rc != 0 && rc != MDB_NOTFOUND) return LmdbError(rc, "reading requests");
  }
  if (absl::Status s = RunRetryRequests(retries); !s.ok()) return s;
  if (!requested) return absl::OkStatus();
  return StartRebuild();
}

absl::Status Worker::RunRetryRequests(const std::vector<uint64_t>& positions) {
  for (uint64_t position : positions) {
    // The outcome is in the dead-letter table: gone on success, its error
    // and attempts updated on failure; NotFound (nothing parked there) too
    // is an answer. Only a full disk leaves the request for the next round.
    absl::Status s = RetryParkedNow(position);
    if (s.code() == absl::StatusCode::kResourceExhausted) return absl::OkStatus();
    if (absl::Status d = DeleteRetryRequest(d_, def_.name, position); !d.ok()) {
      return d.code() == absl::StatusCode::kResourceExhausted ? absl::OkStatus() : d;
    }
  }
  return absl::OkStatus();
}

absl::Status Worker::StartRebuild() {
  CatalogRec rec;
  {
    absl::MutexLock lock(&mu_);
    rec = catalog_;
    // A new rebuild also gets a failed projection going again.
    failed_ = false;
    last_error_.clear();
  }
  absl::Status s = d_.env->Write(kCommitDerived, [&](MDB_txn* txn) -> absl::Status {
    CatalogRec next = rec;
    if (!next.building) {
      absl::StatusOr<uint64_t> gen = NextGeneration(txn, d_.dbs);
      if (!gen.ok()) return gen.status();
      next.building = GenerationRec{*gen, def_.version, 0};
    }
    if (absl::Status d = Del(txn, d_.dbs.requests, def_.name); !d.ok()) return d;
    if (absl::Status w = WriteCatalog(txn, next); !w.ok()) return w;
    rec = std::move(next);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  absl::MutexLock lock(&mu_);
  catalog_ = std::move(rec);
  state_ = ProjectionState::kRebuilding;
  cv_.SignalAll();
  return absl::OkStatus();
}

absl::Status Worker::Step(bool* did_work) {
  CatalogRec rec;
  {
    absl::MutexLock lock(&mu_);
    rec = catalog_;
  }
  BatchSpec spec;
  spec.batch_size = options_.batch_size;
  spec.park = def_.error_policy == ErrorPolicy::kPark;
  spec.stop = &stop_;
  auto publish = [&](const BatchOutcome& out) {
    absl::MutexLock lock(&mu_);
    catalog_ = rec;
    applied_ += out.applied;
    errors_ += out.errors;
    if (out.records > 0) {
      state_ = rec.building ? ProjectionState::kRebuilding : ProjectionState::kRunning;
    }
    if (!out.error.ok()) last_error_ = out.error.ToString();
    if (out.failed) {
      failed_ = true;
      state_ = ProjectionState::kFailed;
    }
    cv_.SignalAll();
  };

  // Busy from the moment there is something to apply, not only once a batch
  // has committed (a slow batch is "running", not "caught up").
  if (absl::StatusOr<uint64_t> head = d_.store->HeadPosition();
      head.ok() &&
      (rec.building || (rec.active.version == def_.version && *head > rec.active.checkpoint))) {
    absl::MutexLock lock(&mu_);
    if (!failed_) {
      state_ = rec.building ? ProjectionState::kRebuilding : ProjectionState::kRunning;
    }
  }
  // The serving generation follows the log, unless it was built by another
  // version (then it serves as it is until the rebuild swaps it out).
  if (rec.active.version == def_.version) {
    absl::StatusOr<BatchOutcome> out =
        ApplyBatch(d_, def_, &rec.active, spec, [&](MDB_txn* txn, const GenerationRec& next) {
          CatalogRec with = rec;
          with.active = next;
          return WriteCatalog(txn, with);
        });
    if (!out.ok()) return out.status();
    publish(*out);
    if (out->records > 0) *did_work = true;
    if (out->failed) return absl::OkStatus();
  }
  if (!rec.building) return absl::OkStatus();
  absl::StatusOr<BatchOutcome> out =
      ApplyBatch(d_, def_, &*rec.building, spec, [&](MDB_txn* txn, const GenerationRec& next) {
        CatalogRec with = rec;
        with.building = next;
        return WriteCatalog(txn, with);
      });
  if (!out.ok()) return out.status();
  publish(*out);
  if (out->records > 0) *did_work = true;
  if (out->failed) return absl::OkStatus();
  // Swap once the new generation has caught up: with the serving one when
  // that follows the log, else with the head (this batch came back short).
  const bool caught_up = rec.active.version == def_.version
                             ? rec.building->checkpoint >= rec.active.checkpoint
                             : out->records < options_.batch_size;
  if (!caught_up || stop_.load()) return absl::OkStatus();
  CatalogRec swapped = rec;
  swapped.retired.push_back(swapped.active.id);
  swapped.active = *swapped.building;
  swapped.building.reset();
  // The old generation's dead letters go with it: the new generation either
  // applied those events or parked them again under its own id.
  const uint64_t old_generation = rec.active.id;
  absl::Status s = d_.env->Write(kCommitDerived, [&](MDB_txn* txn) -> absl::Status {
    if (absl::Status d = DropDeadLettersOf(txn, d_.dbs, def_.name, old_generation); !d.ok())
      return d;
    return WriteCatalog(txn, swapped);
  });
  if (!s.ok()) return s;
  absl::MutexLock lock(&mu_);
  catalog_ = std::move(swapped);
  state_ = ProjectionState::kRunning;
  cv_.SignalAll();
  *did_work = true;
  return absl::OkStatus();
}

absl::Status Worker::DropRetired(bool* did_work) {
  CatalogRec rec;
  {
    absl::MutexLock lock(&mu_);
    if (catalog_.retired.empty()) return absl::OkStatus();
    rec = catalog_;
  }
  const uint64_t gen = rec.retired.front();
  const std::string prefix = GenerationPrefix(gen);
  bool finished = false;
  absl::Status s = d_.env->Write(kCommitDerived, [&](MDB_txn* txn) -> absl::Status {
    absl::StatusOr<size_t> deleted = DeletePrefix(txn, d_.dbs.rows, prefix, kDropChunk);
    if (!deleted.ok()) return deleted.status();
    finished = *deleted < kDropChunk;
    if (!finished) return absl::OkStatus();
    if (absl::Status d = DropDeadLettersOf(txn, d_.dbs, def_.name, gen); !d.ok()) return d;
    CatalogRec next = rec;
    next.retired.erase(next.retired.begin());
    if (absl::Status w = WriteCatalog(txn, next); !w.ok()) return w;
    rec = std::move(next);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  *did_work = true;
  if (finished) {
    absl::MutexLock lock(&mu_);
    catalog_.retired = rec.retired;
  }
  return absl::OkStatus();
}

void Worker::Rebuild() {
  rebuild_requested_.store(true);
  d_.core->head().Wake();
}

absl::Status Worker::RunOnWorker(std::function<absl::Status()> task_fn) {
  Task task;
  task.fn = std::move(task_fn);
  absl::MutexLock lock(&mu_);
  if (stopped_) return absl::FailedPreconditionError("the projection runner stopped");
  tasks_.push_back(&task);
  d_.core->head().Wake();
  auto done = [&task]() { return task.done; };
  mu_.Await(absl::Condition(&done));
  return task.result;
}

absl::Status Worker::WaitFor(uint64_t position, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return catalog_.active.checkpoint >= position || failed_ || stopped_;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat("projection \"", def_.name, "\" is at position ", catalog_.active.checkpoint,
                     ", not yet at ", position));
  }
  if (catalog_.active.checkpoint >= position) return absl::OkStatus();
  if (failed_) {
    return absl::FailedPreconditionError(
        absl::StrCat("projection \"", def_.name, "\" failed: ", last_error_));
  }
  return absl::FailedPreconditionError(absl::StrCat("projection \"", def_.name, "\" is stopped"));
}

ProjectionStatus Worker::Status() {
  ProjectionStatus st;
  st.name = def_.name;
  {
    absl::MutexLock lock(&mu_);
    st.version = catalog_.active.version;
    st.generation = catalog_.active.id;
    st.state = state_;
    st.checkpoint = catalog_.active.checkpoint;
    st.events_applied = applied_;
    st.errors = errors_;
    st.last_error = last_error_;
    if (catalog_.building) {
      st.rebuild_version = catalog_.building->version;
      st.rebuild_checkpoint = catalog_.building->checkpoint;
    }
  }
  absl::StatusOr<uint64_t> head = d_.store->HeadPosition();
  st.head = head.ok() ? *head : 0;
  st.lag_events = st.head > st.checkpoint ? st.head - st.checkpoint : 0;
  if (st.lag_events > 0) {
    ReadOptions one;
    one.limit = 1;
    absl::StatusOr<std::vector<RecordedEvent>> next = d_.store->ReadAll(st.checkpoint + 1, one);
    if (next.ok() && !next->empty()) {
      st.lag_time = std::max(absl::ZeroDuration(), absl::Now() - next->front().recorded_at);
    }
  }
  absl::StatusOr<Txn> txn = d_.env->BeginRead();
  if (txn.ok()) {
    absl::StatusOr<uint64_t> parked = CountDeadLetters(txn->get(), d_.dbs, def_.name);
    if (parked.ok()) st.parked = *parked;
  }
  return st;
}

absl::Status Worker::RetryParked(uint64_t position) {
  return RunOnWorker([this, position] { return RetryParkedNow(position); });
}

absl::Status Worker::RetryParkedNow(uint64_t position) {
  return RetryDeadLetter(d_, def_, position, [this](uint64_t generation) {
    absl::MutexLock lock(&mu_);
    return generation == catalog_.active.id ||
           (catalog_.building && generation == catalog_.building->id);
  });
}

}  // namespace rill::internal
