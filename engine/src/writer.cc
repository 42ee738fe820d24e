#include "writer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "keys.h"

namespace rill::internal {

bool ExpectedVersionMatches(ExpectedVersion expected, int64_t actual) {
  switch (expected.kind()) {
    case ExpectedVersion::Kind::kAny:
      return true;
    case ExpectedVersion::Kind::kNoStream:
      return actual < 0;
    case ExpectedVersion::Kind::kStreamExists:
      return actual >= 0;
    case ExpectedVersion::Kind::kExact:
      return actual == expected.version();
  }
  return false;
}

absl::Status VersionMismatch(absl::string_view stream, ExpectedVersion expected, int64_t actual) {
  return absl::AbortedError(absl::StrFormat(
      "wrong expected version for stream \"%s\": expected %s, but the stream %s", stream,
      expected.ToString(), actual < 0 ? "does not exist" : absl::StrCat("is at version ", actual)));
}

Writer::Writer(LmdbEnv* env, const LogDbs& dbs, Head* head, const StoreOptions& options,
               EngineMetrics* metrics)
    : env_(env),
      dbs_(dbs),
      head_(head),
      metrics_(metrics),
      options_(options),
      fbb_(4096),
      commit_wait_(options.group_commit_wait) {}

Writer::WaitStats Writer::wait_stats() const {
  absl::MutexLock lock(&mu_);
  return commit_wait_.stats();
}

void Writer::Submit(AppendRequest* request) {
  std::vector<AppendRequest*> batch;
  request->caller = std::this_thread::get_id();
  mu_.Lock();
  commit_wait_.Returned(request->caller);
  queued_bytes_ += request->bytes;
  queue_.push_back(request);
  // Wait until a leader has completed this request, or until it is at the
  // front of the queue with no batch in flight: then this thread leads.
  auto ready = [this, request]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return request->completed || (!leading_ && queue_.front() == request);
  };
  mu_.Await(absl::Condition(&ready));
  if (request->completed) {
    mu_.Unlock();
    return;
  }
  leading_ = true;
  commit_wait_.Await(mu_,
                     [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return QueueFillsABatch(); });
  size_t bytes = 0;
  while (!queue_.empty() && batch.size() < options_.max_batch_requests &&
         (batch.empty() || bytes + queue_.front()->bytes <= options_.max_batch_bytes)) {
    bytes += queue_.front()->bytes;
    batch.push_back(queue_.front());
    queue_.pop_front();
  }
  queued_bytes_ -= bytes;
  mu_.Unlock();

  ProcessBatch(batch);  // one transaction, one commit, outside the queue lock

  mu_.Lock();
  commit_wait_.Took();
  for (AppendRequest* r : batch) {
    r->completed = true;
    commit_wait_.Carried(r->caller);
  }
  leading_ = false;
  mu_.Unlock();  // wakes the followers of this batch and the next leader
}

bool Writer::QueueFillsABatch() const {
  return queue_.size() >= options_.max_batch_requests || queued_bytes_ >= options_.max_batch_bytes;
}

void Writer::ProcessBatch(std::vector<AppendRequest*>& batch) {
  uint64_t head = 0;
  const absl::Time start = absl::Now();
  absl::Status s = env_->Write(
      "committing appends", [&](MDB_txn* txn) { return WriteBatch(txn, batch, 0, &head); },
      [&] { head_->Publish(head); });
  if (!s.ok()) {
    // Nothing of this batch was written: every request gets the failure,
    // also those whose checks had failed (their checks saw writes that are
    // gone).
    for (AppendRequest* r : batch) r->result = s;
  }
  if (metrics_ != nullptr) Count(batch, absl::Now() - start);
}

uint64_t EventsWritten(const AppendRequest& request) {
  const absl::StatusOr<std::vector<AppendResult>>& result = request.result;
  if (!result.ok() || (!result->empty() && result->front().deduplicated)) return 0;
  uint64_t events = 0;
  for (const RequestPart& part : request.parts) events += part.events.size();
  return events;
}

uint64_t CountRequestOutcome(EngineMetrics* metrics, const AppendRequest& request) {
  const absl::StatusOr<std::vector<AppendResult>>& result = request.result;
  if (!result.ok()) {
    (result.status().code() == absl::StatusCode::kAborted ? metrics->requests_conflicted
                                                          : metrics->requests_failed)
        .fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  if (!result->empty() && result->front().deduplicated) {
    metrics->requests_deduplicated.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  metrics->requests_written.fetch_add(1, std::memory_order_relaxed);
  metrics->bytes_appended.fetch_add(request.bytes, std::memory_order_relaxed);
  const uint64_t events = EventsWritten(request);
  metrics->events_appended.fetch_add(events, std::memory_order_relaxed);
  return events;
}

void CountCommit(EngineMetrics* metrics, uint64_t events, absl::Duration took) {
  metrics->commits.fetch_add(1, std::memory_order_relaxed);
  metrics->events_per_commit.Observe(static_cast<double>(events));
  metrics->commit_seconds.Observe(took);
}

void Writer::Count(const std::vector<AppendRequest*>& batch, absl::Duration took) {
  uint64_t events = 0;
  for (const AppendRequest* r : batch) events += CountRequestOutcome(metrics_, *r);
  if (events > 0) CountCommit(metrics_, events, took);
}

absl::Status Writer::WriteReplicated(MDB_txn* txn, std::vector<AppendRequest*>& batch,
                                     int64_t recorded_us, uint64_t* head) {
  return WriteBatch(txn, batch, std::max<int64_t>(recorded_us, 1), head);
}

absl::Status Writer::WriteBatch(MDB_txn* txn, std::vector<AppendRequest*>& batch,
                                int64_t recorded_us, uint64_t* head) {
  *head = 0;
  int64_t last_recorded_us = 0;
  // One cursor per database written per event, for the whole batch: LMDB
  // then finds the place of the next key from the cursor's leaf page
  // instead of searching from the root for every put. A write transaction's
  // cursors must be closed while it is live: these close when this returns,
  // before LmdbEnv::Write commits.
  absl::StatusOr<CursorPtr> events = OpenCursor(txn, dbs_.events);
  if (!events.ok()) return events.status();
  absl::StatusOr<CursorPtr> index = OpenCursor(txn, dbs_.stream_index);
  if (!index.ok()) return index.status();
  const WriteCursors cursors{events->get(), index->get()};
  MDB_val k, v;
  int rc = mdb_cursor_get(cursors.events, &k, &v, MDB_LAST);
  if (rc == 0 && k.mv_size == 8) {
    *head = GetBigEndian64(static_cast<const uint8_t*>(k.mv_data));
    // Recorded times never go backwards in the log, even if the clock
    // does (or another process's clock differs): replay by time relies
    // on it. A corrupt last record is left for readers to report.
    absl::StatusOr<const schema::EventRecord*> last =
        DecodeEvent(last_buffer_.Assign(FromVal(v)), v.mv_size, *head);
    if (last.ok()) last_recorded_us = (*last)->recorded_us();
  } else if (rc != MDB_NOTFOUND) {
    return rc == 0 ? absl::DataLossError("events database holds a malformed key")
                   : LmdbError(rc, "finding the head of the log");
  }
  int64_t now_us =
      std::max(recorded_us != 0 ? recorded_us : absl::ToUnixMicros(absl::Now()), last_recorded_us);
  for (AppendRequest* r : batch) {
    if (r->recorded_us > now_us) now_us = r->recorded_us;  // never backwards
    if (absl::Status fatal = Apply(txn, cursors, r, head, now_us); !fatal.ok()) return fatal;
  }
  return absl::OkStatus();
}

absl::Status Writer::CheckIdempotency(MDB_txn* txn, AppendRequest* request, bool* found) {
  return LookUpIdempotencyKey(txn, dbs_.idempotency, request, found);
}

absl::Status LookUpIdempotencyKey(MDB_txn* txn, MDB_dbi idempotency, AppendRequest* request,
                                  bool* found) {
  *found = false;
  MDB_val key = ToVal(request->idempotency_key), value;
  int rc = mdb_get(txn, idempotency, &key, &value);
  if (rc == MDB_NOTFOUND) return absl::OkStatus();
  if (rc != 0) return LmdbError(rc, "reading an idempotency key");
  *found = true;
  absl::StatusOr<IdempotencyEntry> entry =
      DecodeIdempotency(FromVal(value), request->idempotency_key);
  if (!entry.ok()) {
    request->result = entry.status();
  } else if (entry->fingerprint != request->fingerprint) {
    request->result =
        absl::AlreadyExistsError(absl::StrCat("idempotency key \"", request->idempotency_key,
                                              "\" was already used by a different append request"));
  } else {
    for (AppendResult& r : entry->results) r.deduplicated = true;
    request->result = std::move(entry->results);
  }
  return absl::OkStatus();
}

absl::Status Writer::Apply(MDB_txn* txn, const WriteCursors& cursors, AppendRequest* request,
                           uint64_t* head, int64_t recorded_us) {
  if (!request->idempotency_key.empty()) {
    bool found = false;
    if (absl::Status s = CheckIdempotency(txn, request, &found); !s.ok()) {
      request->result = s;  // a read error only fails this request
      return absl::OkStatus();
    }
    if (found) return absl::OkStatus();
  }

  // Check every stream before writing anything, so a rejected request leaves
  // the transaction untouched.
  std::vector<StreamState> states(request->parts.size());
  for (size_t i = 0; i < request->parts.size(); ++i) {
    const RequestPart& part = request->parts[i];
    MDB_val key = ToVal(part.stream), value;
    int rc = mdb_get(txn, dbs_.streams, &key, &value);
    if (rc == 0) {
      absl::StatusOr<StreamState> state = DecodeStreamState(FromVal(value), part.stream);
      if (!state.ok()) {
        request->result = state.status();
        return absl::OkStatus();
      }
      states[i] = *state;
    } else if (rc != MDB_NOTFOUND) {
      request->result = LmdbError(rc, "reading a stream record");
      return absl::OkStatus();
    }
    if (!ExpectedVersionMatches(part.expected, states[i].last_version)) {
      request->result = VersionMismatch(part.stream, part.expected, states[i].last_version);
      return absl::OkStatus();
    }
  }

  std::vector<AppendResult> results(request->parts.size());
  for (size_t i = 0; i < request->parts.size(); ++i) {
    const RequestPart& part = request->parts[i];
    StreamState& state = states[i];
    AppendResult& result = results[i];
    result.stream = std::string(part.stream);
    result.first_version = state.last_version + 1;
    result.first_position = *head + 1;
    for (const EventData& event : part.events) {
      const uint64_t position = ++*head;
      const int64_t version = ++state.last_version;
      if (state.first_position == 0) state.first_position = position;
      BuildEvent(event, event.id.IsNil() ? EventId::Random() : event.id,
                 EventPlacement{part.stream, version, position, recorded_us}, &fbb_);
      PositionKey pkey(position);
      MDB_val key = ToVal(pkey.bytes.data(), pkey.bytes.size());
      MDB_val value{EventValueSize(fbb_), nullptr};
      int rc = mdb_cursor_put(cursors.events, &key, &value, MDB_APPEND | MDB_RESERVE);
      if (rc != 0) return WriteError(rc, "writing an event", env_->path());
      WriteEventValue(fbb_, value.mv_data);
      StreamIndexKey ikey(state.first_position, version);
      MDB_val index_key = ToVal(ikey.bytes.data(), ikey.bytes.size());
      MDB_val index_value = ToVal(pkey.bytes.data(), pkey.bytes.size());
      rc = mdb_cursor_put(cursors.index, &index_key, &index_value, 0);
      if (rc != 0) return WriteError(rc, "writing the stream index", env_->path());
    }
    state.last_position = *head;
    state.last_recorded_us = recorded_us;
    result.last_version = state.last_version;
    result.last_position = *head;
    std::string record = EncodeStreamState(state);
    MDB_val key = ToVal(part.stream), value = ToVal(record);
    int rc = mdb_put(txn, dbs_.streams, &key, &value, 0);
    if (rc != 0) return WriteError(rc, "writing a stream record", env_->path());
  }

  if (!request->idempotency_key.empty()) {
    IdempotencyEntry entry{request->fingerprint, results, recorded_us};
    std::string record = EncodeIdempotency(entry);
    MDB_val key = ToVal(request->idempotency_key), value = ToVal(record);
    int rc = mdb_put(txn, dbs_.idempotency, &key, &value, 0);
    if (rc != 0) return WriteError(rc, "writing an idempotency key", env_->path());
  }
  request->result = std::move(results);
  return absl::OkStatus();
}

}  // namespace rill::internal
