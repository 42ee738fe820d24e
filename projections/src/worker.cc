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
#include "keys.h"
#include "overlay.h"

namespace rill::internal {
namespace {

// Rows of swapped-out generations deleted per transaction.
constexpr size_t kDropChunk = 10000;

absl::Status CallApply(const ProjectionDef& def, const EventView& event, ReadModelTxn& txn) {
  try {
    return def.apply(event, txn);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("Apply threw: ", e.what()));
  } catch (...) {
    return absl::InternalError("Apply threw a non-standard exception");
  }
}

}  // namespace

Worker::Worker(StoreImpl* store, LmdbEnv* env, const ProjectionDbs& dbs, ProjectionDef def,
               const RunnerOptions& options)
    : store_(store), env_(env), dbs_(dbs), def_(std::move(def)), options_(options) {}

Worker::~Worker() {
  Stop();
  if (lock_fd_ >= 0) close(lock_fd_);
}

absl::Status Worker::Start() {
  absl::StatusOr<int> lock = LockProjection(ProjectionLockPath(env_, def_.name), def_.name);
  if (!lock.ok()) return lock.status();
  lock_fd_ = *lock;
  CatalogRec rec;
  absl::Status s = WriteTxn(env_, [&](MDB_txn* txn) -> absl::Status {
    absl::StatusOr<std::optional<CatalogRec>> existing = ReadCatalog(txn, dbs_, def_.name);
    if (!existing.ok()) return existing.status();
    if (existing->has_value()) {
      rec = **existing;
    } else {
      absl::StatusOr<uint64_t> gen = NextGeneration(txn, dbs_);
      if (!gen.ok()) return gen.status();
      rec = CatalogRec{def_.name, GenerationRec{*gen, def_.version, 0}, std::nullopt, {}};
    }
    // A rebuild for another version than the one we run is of no use.
    if (rec.building && rec.building->version != def_.version) {
      if (absl::Status d = DropDeadLettersOf(txn, rec.building->id); !d.ok()) return d;
      rec.retired.push_back(rec.building->id);
      rec.building.reset();
    }
    // A version bump: build the new version next to the old one.
    if (rec.active.version != def_.version && !rec.building) {
      absl::StatusOr<uint64_t> gen = NextGeneration(txn, dbs_);
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
  store_->Wake();
  {
    absl::MutexLock lock(&mu_);
    cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

absl::Status Worker::WriteCatalog(MDB_txn* txn, const CatalogRec& rec) {
  return Put(txn, dbs_.catalog, def_.name, EncodeCatalog(rec));
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
    const uint64_t epoch = store_->WakeEpoch();
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
      absl::StatusOr<uint64_t> head = store_->WaitForHeadOrCancel(
          known_head, retry_pause, retry_pause, &stop_, epoch);
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
    absl::StatusOr<uint64_t> head = store_->WaitForHeadOrCancel(
        known_head, options_.poll_interval, options_.poll_interval, &stop_, epoch);
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
    absl::StatusOr<Txn> txn = env_->BeginRead();
    if (!txn.ok()) return txn.status();
    absl::StatusOr<CursorPtr> cursor = txn->OpenCursor(dbs_.requests);
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
    const std::string request = RetryRequestKey(def_.name, position);
    if (absl::Status d = WriteTxn(env_, [&](MDB_txn* txn) -> absl::Status {
          MDB_val key = ToVal(request);
          const int rc = mdb_del(txn, dbs_.requests, &key, nullptr);
          if (rc == MDB_MAP_FULL) return absl::ResourceExhaustedError(kMapFullMessage);
          return rc == 0 || rc == MDB_NOTFOUND ? absl::OkStatus()
                                               : LmdbError(rc, "deleting a retry request");
        });
        !d.ok()) {
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
  absl::Status s = WriteTxn(env_, [&](MDB_txn* txn) -> absl::Status {
    CatalogRec next = rec;
    if (!next.building) {
      absl::StatusOr<uint64_t> gen = NextGeneration(txn, dbs_);
      if (!gen.ok()) return gen.status();
      next.building = GenerationRec{*gen, def_.version, 0};
    }
    if (absl::Status d = Del(txn, dbs_.requests, def_.name); !d.ok()) return d;
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

absl::StatusOr<BatchOutcome> Worker::ApplyBatch(
    StoreImpl* store, LmdbEnv* env, const ProjectionDbs& dbs, const ProjectionDef& def,
    GenerationRec* gen, size_t batch_size, uint64_t last_position, bool park,
    bool record_dead_letters, const std::atomic<bool>* stop,
    const std::function<absl::Status(MDB_txn*)>& write_catalog) {
  BatchOutcome out;
  out.checkpoint = gen->checkpoint;
  if (gen->checkpoint >= last_position) return out;
  RowChanges rows;
  CommittedRows committed(env, dbs.rows);
  std::vector<std::pair<uint64_t, DeadLetterRec>> dead;
  uint64_t unprocessed = 0;  // first position the batch did not process
  ScanProgress progress;
  absl::Status scan = store->ScanChunked(
      gen->checkpoint + 1, Direction::kForward, def.filter, batch_size,
      [&](const EventView& event) {
        if (event.position() > last_position || (stop && stop->load())) {
          unprocessed = event.position();
          return false;
        }
        EventTxn txn(&def.tables, gen->id, &rows, &committed);
        absl::Status s;
        absl::Duration backoff = def.retry_backoff;
        int attempts = 0;
        while (attempts < std::max(def.max_attempts, 1)) {
          ++attempts;
          s = CallApply(def, event, txn);
          if (s.ok()) break;
          txn.Discard();
          ++out.errors;
          if (attempts < def.max_attempts) {
            absl::SleepFor(backoff);
            backoff *= 2;
          }
        }
        if (s.ok()) {
          txn.MergeIntoBatch();
          ++out.applied;
          return true;
        }
        out.error = s;
        if (!park) {
          out.failed = true;
          unprocessed = event.position();
          return false;
        }
        if (record_dead_letters) dead.push_back({event.position(),
                        DeadLetterRec{std::string(event.stream()), std::string(event.type()),
                                      s.ToString(), attempts,
                                      absl::ToUnixMicros(absl::Now()), gen->id}});
        ++out.parked;
        return true;
      },
      &progress);
  if (!scan.ok()) return scan;
  out.records = progress.records;
  uint64_t checkpoint = unprocessed != 0 ? unprocessed - 1 : progress.last_scanned;
  checkpoint = std::min(std::max(checkpoint, gen->checkpoint), last_position);
  if (checkpoint == gen->checkpoint && rows.empty() && dead.empty()) return out;
  GenerationRec next = *gen;
  next.checkpoint = checkpoint;
  absl::Status s = WriteTxn(env, [&](MDB_txn* txn) -> absl::Status {
    if (absl::Status w = WriteChanges(txn, dbs.rows, rows); !w.ok()) return w;
    for (const auto& [position, rec] : dead) {
      absl::Status p = Put(txn, dbs.dead, DeadLetterKey(def.name, position), EncodeDeadLetter(rec));
      if (!p.ok()) return p;
    }
    GenerationRec saved = *gen;
    *gen = next;  // write_catalog reads it
    absl::Status c = write_catalog(txn);
    *gen = saved;
    return c;
  });
  if (!s.ok()) return s;
  *gen = next;
  out.checkpoint = checkpoint;
  return out;
}

absl::Status Worker::Step(bool* did_work) {
  CatalogRec rec;
  {
    absl::MutexLock lock(&mu_);
    rec = catalog_;
  }
  const bool park = def_.error_policy == ErrorPolicy::kPark;
  auto write_catalog = [&](MDB_txn* txn) { return WriteCatalog(txn, rec); };
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
  if (absl::StatusOr<uint64_t> head = store_->HeadPosition();
      head.ok() && (rec.building || (rec.active.version == def_.version &&
                                     *head > rec.active.checkpoint))) {
    absl::MutexLock lock(&mu_);
    if (!failed_) {
      state_ = rec.building ? ProjectionState::kRebuilding : ProjectionState::kRunning;
    }
  }
  // The serving generation follows the log, unless it was built by another
  // version (then it serves as it is until the rebuild swaps it out).
  if (rec.active.version == def_.version) {
    absl::StatusOr<BatchOutcome> out =
        ApplyBatch(store_, env_, dbs_, def_, &rec.active, options_.batch_size, kLogEnd, park,
                   /*record_dead_letters=*/true, &stop_, write_catalog);
    if (!out.ok()) return out.status();
    publish(*out);
    if (out->records > 0) *did_work = true;
    if (out->failed) return absl::OkStatus();
  }
  if (!rec.building) return absl::OkStatus();
  absl::StatusOr<BatchOutcome> out =
      ApplyBatch(store_, env_, dbs_, def_, &*rec.building, options_.batch_size, kLogEnd, park,
                 /*record_dead_letters=*/true, &stop_, write_catalog);
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
  absl::Status s = WriteTxn(env_, [&](MDB_txn* txn) -> absl::Status {
    if (absl::Status d = DropDeadLettersOf(txn, old_generation); !d.ok()) return d;
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
  absl::Status s = WriteTxn(env_, [&](MDB_txn* txn) -> absl::Status {
    absl::StatusOr<size_t> deleted = DeletePrefix(txn, dbs_.rows, prefix, kDropChunk);
    if (!deleted.ok()) return deleted.status();
    finished = *deleted < kDropChunk;
    if (!finished) return absl::OkStatus();
    if (absl::Status d = DropDeadLettersOf(txn, gen); !d.ok()) return d;
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
  store_->Wake();
}

absl::Status Worker::RunOnWorker(std::function<absl::Status()> task_fn) {
  Task task;
  task.fn = std::move(task_fn);
  absl::MutexLock lock(&mu_);
  if (stopped_) return absl::FailedPreconditionError("the projection runner stopped");
  tasks_.push_back(&task);
  store_->Wake();
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
    return absl::DeadlineExceededError(absl::StrCat(
        "projection \"", def_.name, "\" is at position ", catalog_.active.checkpoint,
        ", not yet at ", position));
  }
  if (catalog_.active.checkpoint >= position) return absl::OkStatus();
  if (failed_) {
    return absl::FailedPreconditionError(
        absl::StrCat("projection \"", def_.name, "\" failed: ", last_error_));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("projection \"", def_.name, "\" is stopped"));
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
  absl::StatusOr<uint64_t> head = store_->HeadPosition();
  st.head = head.ok() ? *head : 0;
  st.lag_events = st.head > st.checkpoint ? st.head - st.checkpoint : 0;
  if (st.lag_events > 0) {
    ReadOptions one;
    one.limit = 1;
    absl::StatusOr<std::vector<RecordedEvent>> next = store_->ReadAll(st.checkpoint + 1, one);
    if (next.ok() && !next->empty()) {
      st.lag_time = std::max(absl::ZeroDuration(), absl::Now() - next->front().recorded_at);
    }
  }
  absl::StatusOr<Txn> txn = env_->BeginRead();
  if (txn.ok()) {
    absl::StatusOr<uint64_t> parked = CountDeadLetters(txn->get(), dbs_, def_.name);
    if (parked.ok()) st.parked = *parked;
  }
  return st;
}

absl::Status Worker::RetryParked(uint64_t position) {
  return RunOnWorker([this, position] { return RetryParkedNow(position); });
}

absl::Status Worker::RetryParkedNow(uint64_t position) {
  const std::string key = DeadLetterKey(def_.name, position);
  DeadLetterRec rec;
  {
    absl::StatusOr<Txn> txn = env_->BeginRead();
    if (!txn.ok()) return txn.status();
    MDB_val k = ToVal(key), v;
    int rc = mdb_get(txn->get(), dbs_.dead, &k, &v);
    if (rc == MDB_NOTFOUND) {
      return absl::NotFoundError(absl::StrCat("no parked event at position ", position,
                                              " for projection \"", def_.name, "\""));
    }
    if (rc != 0) return LmdbError(rc, "reading a dead letter");
    absl::StatusOr<DeadLetterRec> decoded = DecodeDeadLetter(FromVal(v));
    if (!decoded.ok()) return decoded.status();
    rec = *std::move(decoded);
  }
  // The event goes into the generation that parked it: the serving one,
  // or the one being rebuilt (which will serve after the swap).
  bool live;
  {
    absl::MutexLock lock(&mu_);
    live = rec.generation == catalog_.active.id ||
           (catalog_.building && rec.generation == catalog_.building->id);
  }
  if (!live) {
    // Its generation was replaced by one that applied or re-parked the
    // event: there is nothing left to retry. Drop the stale letter.
    absl::Status d = WriteTxn(env_, [&](MDB_txn* txn) { return Del(txn, dbs_.dead, key); });
    if (!d.ok()) return d;
    return absl::NotFoundError(absl::StrCat(
        "the parked event at position ", position, " belonged to a replaced generation of \"",
        def_.name, "\"; nothing to retry"));
  }
  RowChanges rows;
  CommittedRows committed(env_, dbs_.rows);
  absl::Status applied;
  ReadOptions one;
  one.limit = 1;
  bool found = false;
  absl::Status scan = store_->ScanAll(position, one, [&](const EventView& event) {
    found = event.position() == position;
    if (!found) return false;
    EventTxn txn(&def_.tables, rec.generation, &rows, &committed);
    applied = CallApply(def_, event, txn);
    if (applied.ok()) txn.MergeIntoBatch();
    return false;
  });
  if (!scan.ok()) return scan;
  if (!found) return absl::NotFoundError(absl::StrCat("no event at position ", position));
  if (!applied.ok()) {
    // Still failing: the dead letter says so (for whoever asked from
    // another process), and the event stays parked.
    rec.error = applied.ToString();
    ++rec.attempts;
    rec.parked_us = absl::ToUnixMicros(absl::Now());
    absl::Status w = WriteTxn(env_, [&](MDB_txn* txn) {
      return Put(txn, dbs_.dead, key, EncodeDeadLetter(rec));
    });
    if (!w.ok()) return w;
    return applied;
  }
  return WriteTxn(env_, [&](MDB_txn* txn) -> absl::Status {
    if (absl::Status w = WriteChanges(txn, dbs_.rows, rows); !w.ok()) return w;
    return Del(txn, dbs_.dead, key);
  });
}

absl::Status Worker::DropDeadLettersOf(MDB_txn* txn, uint64_t generation) {
  return DeletePrefix(txn, dbs_.dead, DeadLetterPrefix(def_.name),
                      std::numeric_limits<size_t>::max(),
                      [generation](absl::string_view value) {
                        absl::StatusOr<DeadLetterRec> rec = DecodeDeadLetter(value);
                        return !rec.ok() || rec->generation != generation;
                      })
      .status();
}

}  // namespace rill::internal
