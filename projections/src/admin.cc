// Projection administration from outside the runner: rebuild requests,
// recorded statuses, dead letters and resets (rill/projection.h). The admin
// tool is built on these.
#include <unistd.h>

#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "catalog.h"
#include "dead_letters.h"
#include "keys.h"
#include "rill/projection_admin.h"

namespace rill {

absl::Status RequestRebuild(Store* store, absl::string_view projection) {
  if (absl::Status s =
          internal::ValidateName("projection name", projection, internal::kMaxProjectionName);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<internal::Derived> d = internal::OpenDerived(store);
  if (!d.ok()) return d.status();
  return d->env->Write(internal::kCommitDerived, [&](MDB_txn* txn) {
    return internal::Put(txn, d->dbs.requests, projection,
                         internal::EncodeRebuildRequest(absl::ToUnixMicros(absl::Now())));
  });
}

absl::StatusOr<std::vector<ProjectionStatus>> ReadProjectionStatuses(Store* store) {
  absl::StatusOr<internal::Derived> d = internal::OpenDerived(store);
  if (d.status().code() == absl::StatusCode::kNotFound) return std::vector<ProjectionStatus>();
  if (!d.ok()) return d.status();
  absl::StatusOr<uint64_t> head = store->HeadPosition();
  if (!head.ok()) return head.status();
  std::vector<ProjectionStatus> out;
  absl::StatusOr<internal::Txn> txn = d->env->BeginRead();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<internal::CursorPtr> cursor = txn->OpenCursor(d->dbs.catalog);
  if (!cursor.ok()) return cursor.status();
  MDB_val k, v;
  int rc;
  for (rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT)) {
    absl::StatusOr<internal::CatalogRec> rec = internal::DecodeCatalog(internal::FromVal(v));
    if (!rec.ok()) return rec.status();
    ProjectionStatus st;
    st.name = rec->name;
    st.version = rec->active.version;
    st.generation = rec->active.id;
    st.checkpoint = rec->active.checkpoint;
    st.head = *head;
    st.lag_events = *head > st.checkpoint ? *head - st.checkpoint : 0;
    if (rec->building) {
      st.rebuild_version = rec->building->version;
      st.rebuild_checkpoint = rec->building->checkpoint;
    }
    absl::StatusOr<bool> running =
        internal::ProjectionLockHeld(internal::ProjectionLockPath(d->env, st.name));
    if (!running.ok()) return running.status();
    if (!*running) {
      st.state = ProjectionState::kStopped;
    } else if (rec->building) {
      st.state = ProjectionState::kRebuilding;
    } else {
      st.state = st.lag_events == 0 ? ProjectionState::kCaughtUp : ProjectionState::kRunning;
    }
    absl::StatusOr<uint64_t> parked = internal::CountDeadLetters(txn->get(), d->dbs, st.name);
    if (parked.ok()) st.parked = *parked;
    out.push_back(std::move(st));
  }
  if (rc != MDB_NOTFOUND) return internal::LmdbError(rc, "reading the projection catalog");
  return out;
}

namespace {

// The derived environment of a store that has a projection `projection`;
// NotFound otherwise.
absl::StatusOr<internal::Derived> DerivedWith(Store* store, absl::string_view projection) {
  absl::StatusOr<internal::Derived> d = internal::OpenDerived(store);
  if (d.status().code() == absl::StatusCode::kNotFound) {
    return absl::NotFoundError(absl::StrCat("the store has no projection \"", projection, "\""));
  }
  if (!d.ok()) return d.status();
  absl::StatusOr<internal::Txn> txn = d->env->BeginRead();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<std::optional<internal::CatalogRec>> rec =
      internal::ReadCatalog(txn->get(), d->dbs, projection);
  if (!rec.ok()) return rec.status();
  if (!rec->has_value()) {
    return absl::NotFoundError(absl::StrCat("the store has no projection \"", projection, "\""));
  }
  return d;
}

}  // namespace

absl::StatusOr<bool> ProjectionIsRunning(Store* store, absl::string_view projection) {
  absl::StatusOr<internal::Derived> d = internal::OpenDerived(store);
  if (d.status().code() == absl::StatusCode::kNotFound) return false;
  if (!d.ok()) return d.status();
  return internal::ProjectionLockHeld(internal::ProjectionLockPath(d->env, projection));
}

absl::StatusOr<std::vector<ParkedEvent>> ReadParkedEvents(Store* store,
                                                          absl::string_view projection) {
  absl::StatusOr<internal::Derived> d = DerivedWith(store, projection);
  if (!d.ok()) return d.status();
  return internal::ListDeadLetters(*d, projection);
}

absl::Status RequestRetryParked(Store* store, absl::string_view projection, uint64_t position) {
  absl::StatusOr<internal::Derived> d = DerivedWith(store, projection);
  if (!d.ok()) return d.status();
  return internal::RecordRetryRequest(*d, projection, position);
}

absl::Status DropParkedEvent(Store* store, absl::string_view projection, uint64_t position) {
  absl::StatusOr<internal::Derived> d = DerivedWith(store, projection);
  if (!d.ok()) return d.status();
  return internal::DropDeadLetter(*d, projection, position);
}

absl::Status ResetProjection(Store* store, absl::string_view projection) {
  absl::StatusOr<internal::Derived> d = DerivedWith(store, projection);
  if (!d.ok()) return d.status();
  // Hold the runner's lock while resetting, so that no runner starts on
  // half-deleted tables.
  absl::StatusOr<int> lock =
      internal::LockProjection(internal::ProjectionLockPath(d->env, projection), projection);
  if (!lock.ok()) {
    if (lock.status().code() != absl::StatusCode::kFailedPrecondition) return lock.status();
    return absl::FailedPreconditionError(
        absl::StrCat("projection \"", projection,
                     "\" is running in another process; stop it first, or rebuild it online"));
  }
  absl::Status s = d->env->Write(internal::kCommitDerived, [&](MDB_txn* txn) -> absl::Status {
    absl::StatusOr<std::optional<internal::CatalogRec>> rec =
        internal::ReadCatalog(txn, d->dbs, projection);
    if (!rec.ok()) return rec.status();
    if (!rec->has_value()) {
      return absl::NotFoundError(absl::StrCat("the store has no projection \"", projection, "\""));
    }
    std::vector<uint64_t> generations = (*rec)->retired;
    generations.push_back((*rec)->active.id);
    if ((*rec)->building) generations.push_back((*rec)->building->id);
    // As-of table sets: name 0x00 label -> their generation.
    const std::string asof_prefix = internal::AsOfKey(projection, "");
    {
      absl::StatusOr<internal::CursorPtr> cursor = internal::OpenCursor(txn, d->dbs.asof);
      if (!cursor.ok()) return cursor.status();
      MDB_val k = internal::ToVal(asof_prefix), v;
      for (int rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_SET_RANGE);
           rc == 0 && absl::StartsWith(internal::FromVal(k), asof_prefix);
           rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT)) {
        absl::StatusOr<std::pair<internal::GenerationRec, uint64_t>> asof =
            internal::DecodeAsOf(internal::FromVal(v));
        if (asof.ok()) generations.push_back(asof->first.id);
      }
    }
    const size_t all = std::numeric_limits<size_t>::max();
    for (uint64_t gen : generations) {
      absl::StatusOr<size_t> n =
          internal::DeletePrefix(txn, d->dbs.rows, internal::GenerationPrefix(gen), all);
      if (!n.ok()) return n.status();
    }
    for (auto [dbi, prefix] : {std::pair{d->dbs.asof, asof_prefix},
                               {d->dbs.dead, internal::DeadLetterPrefix(projection)}}) {
      absl::StatusOr<size_t> n = internal::DeletePrefix(txn, dbi, prefix, all);
      if (!n.ok()) return n.status();
    }
    absl::StatusOr<size_t> retries =
        internal::DeletePrefix(txn, d->dbs.requests, internal::RetryRequestPrefix(projection), all);
    if (!retries.ok()) return retries.status();
    if (absl::Status del = internal::Del(txn, d->dbs.requests, projection); !del.ok()) return del;
    return internal::Del(txn, d->dbs.catalog, projection);
  });
  close(*lock);
  return s;
}

namespace {

ProjectionMetrics ToMetrics(const ProjectionStatus& st, bool from_runner) {
  ProjectionMetrics p;
  p.name = st.name;
  p.state = absl::StrReplaceAll(ProjectionStateName(st.state), {{" ", "_"}});
  p.checkpoint = st.checkpoint;
  p.lag_events = st.lag_events;
  p.lag_seconds = absl::ToDoubleSeconds(st.lag_time);
  p.parked = st.parked;
  p.from_runner = from_runner;
  p.events_applied = st.events_applied;
  p.errors = st.errors;
  return p;
}

}  // namespace

absl::Status AddProjectionMetrics(ProjectionRunner* runner, Metrics* metrics) {
  if (runner == nullptr) return absl::InvalidArgumentError("AddProjectionMetrics: no runner");
  for (const ProjectionStatus& st : runner->Statuses()) {
    metrics->projections.push_back(ToMetrics(st, true));
  }
  return absl::OkStatus();
}

absl::Status AddProjectionMetrics(Store* store, Metrics* metrics) {
  absl::StatusOr<std::vector<ProjectionStatus>> statuses = ReadProjectionStatuses(store);
  if (!statuses.ok()) return statuses.status();
  for (const ProjectionStatus& st : *statuses) metrics->projections.push_back(ToMetrics(st, false));
  return absl::OkStatus();
}

}  // namespace rill
