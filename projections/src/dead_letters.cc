#include "dead_letters.h"

#include <limits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "apply_batch.h"
#include "keys.h"
#include "overlay.h"

namespace rill::internal {
namespace {

absl::Status NothingParked(absl::string_view projection, uint64_t position) {
  return absl::NotFoundError(absl::StrCat("no parked event at position ", position,
                                          " for projection \"", projection, "\""));
}

}  // namespace

std::string DeadLetterKey(absl::string_view projection, uint64_t position) {
  return absl::StrCat(DeadLetterPrefix(projection), BigEndianKey(position));
}

std::string DeadLetterPrefix(absl::string_view projection) {
  return absl::StrCat(projection, absl::string_view("\0", 1));
}

std::string RetryRequestKey(absl::string_view projection, uint64_t position) {
  return absl::StrCat(RetryRequestPrefix(projection), BigEndianKey(position));
}

std::string RetryRequestPrefix(absl::string_view projection) {
  return absl::StrCat(projection, absl::string_view("\0retry", 6));
}

absl::StatusOr<std::vector<ParkedEvent>> ListDeadLetters(const Derived& d,
                                                         absl::string_view projection) {
  std::vector<ParkedEvent> out;
  absl::StatusOr<Txn> txn = d.env->BeginRead();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<CursorPtr> cursor = txn->OpenCursor(d.dbs.dead);
  if (!cursor.ok()) return cursor.status();
  const std::string prefix = DeadLetterPrefix(projection);
  MDB_val k = ToVal(prefix), v;
  int rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_SET_RANGE);
  for (; rc == 0; rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT)) {
    absl::string_view key = FromVal(k);
    if (!absl::StartsWith(key, prefix) || key.size() != prefix.size() + 8) break;
    absl::StatusOr<DeadLetterRec> rec = DecodeDeadLetter(FromVal(v));
    if (!rec.ok()) return rec.status();
    ParkedEvent p;
    p.position = GetBigEndian64(reinterpret_cast<const uint8_t*>(key.data() + prefix.size()));
    p.stream = rec->stream;
    p.type = rec->type;
    p.error = rec->error;
    p.attempts = rec->attempts;
    p.parked_at = absl::FromUnixMicros(rec->parked_us);
    out.push_back(std::move(p));
  }
  if (rc != 0 && rc != MDB_NOTFOUND) return LmdbError(rc, "listing dead letters");
  return out;
}

absl::StatusOr<uint64_t> CountDeadLetters(MDB_txn* txn, const ProjectionDbs& dbs,
                                          absl::string_view projection) {
  absl::StatusOr<CursorPtr> cursor = OpenCursor(txn, dbs.dead);
  if (!cursor.ok()) return cursor.status();
  const std::string prefix = DeadLetterPrefix(projection);
  MDB_val k = ToVal(prefix), v;
  uint64_t n = 0;
  for (int rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_SET_RANGE);
       rc == 0 && absl::StartsWith(FromVal(k), prefix);
       rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_NEXT)) {
    ++n;
  }
  return n;
}

absl::Status DropDeadLetter(const Derived& d, absl::string_view projection, uint64_t position) {
  const std::string key = DeadLetterKey(projection, position);
  return d.env->Write(kCommitDerived, [&](MDB_txn* txn) -> absl::Status {
    MDB_val k = ToVal(key);
    int rc = mdb_del(txn, d.dbs.dead, &k, nullptr);
    if (rc == MDB_NOTFOUND) return NothingParked(projection, position);
    return LmdbError(rc, "dropping a dead letter");
  });
}

absl::Status DropDeadLettersOf(MDB_txn* txn, const ProjectionDbs& dbs, absl::string_view projection,
                               uint64_t generation) {
  return DeletePrefix(txn, dbs.dead, DeadLetterPrefix(projection),
                      std::numeric_limits<size_t>::max(),
                      [generation](absl::string_view value) {
                        absl::StatusOr<DeadLetterRec> rec = DecodeDeadLetter(value);
                        return !rec.ok() || rec->generation != generation;
                      })
      .status();
}

absl::Status RetryDeadLetter(const Derived& d, const ProjectionDef& def, uint64_t position,
                             absl::FunctionRef<bool(uint64_t generation)> live) {
  const std::string key = DeadLetterKey(def.name, position);
  DeadLetterRec rec;
  {
    absl::StatusOr<Txn> txn = d.env->BeginRead();
    if (!txn.ok()) return txn.status();
    MDB_val k = ToVal(key), v;
    int rc = mdb_get(txn->get(), d.dbs.dead, &k, &v);
    if (rc == MDB_NOTFOUND) return NothingParked(def.name, position);
    if (rc != 0) return LmdbError(rc, "reading a dead letter");
    absl::StatusOr<DeadLetterRec> decoded = DecodeDeadLetter(FromVal(v));
    if (!decoded.ok()) return decoded.status();
    rec = *std::move(decoded);
  }
  // The event goes into the generation that parked it: the serving one,
  // or the one being rebuilt (which will serve after the swap).
  if (!live(rec.generation)) {
    // Its generation was replaced by one that applied or re-parked the
    // event: there is nothing left to retry. Drop the stale letter.
    absl::Status dropped =
        d.env->Write(kCommitDerived, [&](MDB_txn* txn) { return Del(txn, d.dbs.dead, key); });
    if (!dropped.ok()) return dropped;
    return absl::NotFoundError(absl::StrCat("the parked event at position ", position,
                                            " belonged to a replaced generation of \"", def.name,
                                            "\"; nothing to retry"));
  }
  RowChanges rows;
  CommittedRows committed(d.env, d.dbs.rows);
  absl::Status applied;
  ReadOptions one;
  one.limit = 1;
  bool found = false;
  absl::Status scan = d.store->ScanAll(position, one, [&](const EventView& event) {
    found = event.position() == position;
    if (!found) return false;
    EventTxn txn(&def.tables, rec.generation, &rows, &committed);
    applied = CallApply(def, event, txn);
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
    absl::Status w = d.env->Write(kCommitDerived, [&](MDB_txn* txn) {
      return Put(txn, d.dbs.dead, key, EncodeDeadLetter(rec));
    });
    if (!w.ok()) return w;
    return applied;
  }
  return d.env->Write(kCommitDerived, [&](MDB_txn* txn) -> absl::Status {
    if (absl::Status w = WriteChanges(txn, d.dbs.rows, rows); !w.ok()) return w;
    return Del(txn, d.dbs.dead, key);
  });
}

absl::Status RecordRetryRequest(const Derived& d, absl::string_view projection, uint64_t position) {
  const std::string dead_key = DeadLetterKey(projection, position);
  return d.env->Write(kCommitDerived, [&](MDB_txn* txn) -> absl::Status {
    MDB_val k = ToVal(dead_key), v;
    const int rc = mdb_get(txn, d.dbs.dead, &k, &v);
    if (rc == MDB_NOTFOUND) return NothingParked(projection, position);
    if (rc != 0) return LmdbError(rc, "reading a dead letter");
    return Put(txn, d.dbs.requests, RetryRequestKey(projection, position),
               EncodeRebuildRequest(absl::ToUnixMicros(absl::Now())));
  });
}

absl::Status DeleteRetryRequest(const Derived& d, absl::string_view projection, uint64_t position) {
  const std::string request = RetryRequestKey(projection, position);
  return d.env->Write(kCommitDerived,
                      [&](MDB_txn* txn) { return Del(txn, d.dbs.requests, request); });
}

}  // namespace rill::internal
