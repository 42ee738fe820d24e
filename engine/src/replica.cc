#include "replica.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "keys.h"
#include "writer.h"

namespace rill::internal {
namespace {

constexpr char kReplicaDb[] = "replica";
constexpr absl::string_view kAppliedKey = "applied";

std::string OutcomeKey(const EventId& txid) {
  std::string key = "t";
  key.append(reinterpret_cast<const char*>(txid.bytes().data()), txid.bytes().size());
  return key;
}

// The outcome recorded for transaction `txid`, if any (*found).
absl::Status ReadOutcome(MDB_txn* txn, MDB_dbi dbi, const EventId& txid, ReplOutcome* outcome,
                         bool* found) {
  const std::string key = OutcomeKey(txid);
  MDB_val k = ToVal(key), v;
  int rc = mdb_get(txn, dbi, &k, &v);
  *found = rc == 0;
  if (rc == MDB_NOTFOUND) return absl::OkStatus();
  if (rc != 0) return LmdbError(rc, "reading a replicated transaction's outcome");
  absl::StatusOr<ReplOutcome> decoded = DecodeOutcome(FromVal(v));
  if (!decoded.ok()) return decoded.status();
  *outcome = *std::move(decoded);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ReadApplied(MDB_txn* txn, MDB_dbi dbi) {
  MDB_val key = ToVal(kAppliedKey), value;
  int rc = mdb_get(txn, dbi, &key, &value);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc != 0) return LmdbError(rc, "reading the replica's applied sequence");
  if (value.mv_size != 8) return absl::DataLossError("the replica's applied sequence is malformed");
  return GetBigEndian64(static_cast<const uint8_t*>(value.mv_data));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Replica>> Replica::Open(StoreImpl* store) {
  absl::StatusOr<MDB_dbi> dbi = store->core()->log_env()->OpenDb(kReplicaDb, /*create=*/true);
  if (!dbi.ok()) return dbi.status();
  return std::unique_ptr<Replica>(new Replica(store, *dbi));
}

absl::StatusOr<uint64_t> Replica::AppliedSequence() {
  absl::StatusOr<Txn> txn = store_->core()->log_env()->BeginRead();
  if (!txn.ok()) return txn.status();
  return ReadApplied(txn->get(), dbi_);
}

absl::StatusOr<std::vector<Replica::Applied>> Replica::Apply(absl::Span<const Message> messages) {
  std::vector<Applied> applied;
  uint64_t head = 0, events = 0;
  const absl::Time start = absl::Now();
  absl::Status s = store_->core()->log_env()->Write(
      "applying replicated transactions",
      [&](MDB_txn* txn) {
        applied.clear();
        events = 0;
        return ApplyIn(txn, messages, &applied, &head, &events);
      },
      [&] {
        if (head != 0) store_->core()->head().Publish(head);
      });
  if (!s.ok()) return s;
  // The replica's commits are this process's write transactions of the log,
  // whichever node's requests they hold.
  if (events > 0) CountCommit(&store_->core()->metrics(), events, absl::Now() - start);
  return applied;
}

absl::Status Replica::ApplyIn(MDB_txn* txn, absl::Span<const Message> messages,
                              std::vector<Applied>* applied, uint64_t* head, uint64_t* events) {
  absl::StatusOr<uint64_t> last = ReadApplied(txn, dbi_);
  if (!last.ok()) return last.status();
  uint64_t next = *last + 1;
  for (const Message& m : messages) {
    Applied& a = applied->emplace_back();
    a.sequence = m.sequence;
    absl::StatusOr<std::unique_ptr<ReplTransaction>> tx = DecodeTransaction(m.data);
    if (m.sequence < next) {
      // Applied already, by another process of this node: report its outcome.
      if (!tx.ok()) continue;
      a.txid = (*tx)->txid;
      bool found = false;
      if (absl::Status s = ReadOutcome(txn, dbi_, a.txid, &a.outcome, &found); !s.ok()) return s;
      continue;
    }
    if (m.sequence > next) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the replica has applied JetStream sequence ", next - 1, " but the next message is ",
          m.sequence, ": messages are missing from the stream (purged or deleted?)"));
    }
    ++next;
    // A message that does not decode was not published by rill (or is
    // damaged): every node skips it alike.
    if (!tx.ok()) continue;
    a.txid = (*tx)->txid;
    bool found = false;
    if (absl::Status s = ReadOutcome(txn, dbi_, a.txid, &a.outcome, &found); !s.ok()) return s;
    // Published twice: the first copy was applied, this one is not.
    if (found) continue;
    std::vector<AppendRequest*> batch;
    batch.reserve((*tx)->requests.size());
    for (AppendRequest& r : (*tx)->requests) batch.push_back(&r);
    uint64_t batch_head = 0;
    if (absl::Status s =
            store_->mutable_writer()->WriteReplicated(txn, batch, (*tx)->recorded_us, &batch_head);
        !s.ok()) {
      return s;
    }
    if (batch_head != 0) *head = batch_head;
    std::string outcome = EncodeOutcome(m.sequence, (*tx)->requests);
    const std::string key = OutcomeKey(a.txid);
    MDB_val k = ToVal(key), ov = ToVal(outcome);
    int rc = mdb_put(txn, dbi_, &k, &ov, 0);
    if (rc != 0)
      return WriteError(rc, "writing a replicated transaction's outcome",
                        store_->core()->log_env()->path());
    a.outcome.sequence = m.sequence;
    for (AppendRequest& r : (*tx)->requests) {
      *events += EventsWritten(r);
      a.outcome.results.push_back(std::move(r.result));
    }
  }
  if (next - 1 != *last) {
    PositionKey seq(next - 1);
    MDB_val k = ToVal(kAppliedKey), v = ToVal(seq.bytes.data(), seq.bytes.size());
    int rc = mdb_put(txn, dbi_, &k, &v, 0);
    if (rc != 0)
      return WriteError(rc, "writing the replica's applied sequence",
                        store_->core()->log_env()->path());
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ReadAppliedSequence(StoreCore* core) {
  absl::StatusOr<MDB_dbi> dbi = core->log_env()->OpenDb(kReplicaDb, /*create=*/false);
  if (absl::IsNotFound(dbi.status())) return 0;
  if (!dbi.ok()) return dbi.status();
  absl::StatusOr<Txn> txn = core->log_env()->BeginRead();
  if (!txn.ok()) return txn.status();
  return ReadApplied(txn->get(), *dbi);
}

}  // namespace rill::internal
