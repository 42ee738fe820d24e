// Replica: the local log of a replicated node, fed from JetStream in order.
//
// Every message of the JetStream stream is one transaction
// (repl_codec.h). Applying it runs its requests through the writer exactly
// as a group commit does (Writer::WriteReplicated: expected versions and
// idempotency keys checked against the log as it is at that point of the
// stream), with the transaction's own commit time, so every node assigns the
// same positions and versions and reaches the same outcomes. In the same
// LMDB transaction the replica records the JetStream sequence it has applied
// and, under the transaction id, the outcome of each request: a process of
// the node that published it (any process: several may have the node open)
// reads its results there, and a transaction published twice (a retry that
// JetStream's duplicate window did not catch) is applied once.
//
// The replica's records live in the log environment's "replica" database
// (docs/format.md): "applied" -> the last applied sequence (8 bytes, big
// endian), "t" + txid -> the TxOutcome.
//
// Thread-safety: Apply is called by one thread of a process at a time (the
// applier); several processes may apply the same messages, the LMDB writer
// lock orders them and the later one skips what the earlier applied.
#ifndef RILL_ENGINE_REPLICA_H_
#define RILL_ENGINE_REPLICA_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "repl_codec.h"
#include "store_impl.h"

namespace rill::internal {

class Replica {
 public:
  // The replica of `store` (writable), creating its database.
  static absl::StatusOr<std::unique_ptr<Replica>> Open(StoreImpl* store);

  // The last JetStream sequence applied (0: none).
  absl::StatusOr<uint64_t> AppliedSequence();

  struct Message {
    uint64_t sequence;
    std::string data;
  };
  // What one message gave: its transaction id (nil for a message that does
  // not decode, which every node skips alike) and each request's outcome.
  struct Applied {
    uint64_t sequence = 0;
    EventId txid;
    ReplOutcome outcome;
  };
  // Applies `messages` (in sequence order) in one LMDB transaction, one
  // commit. Messages at or below the applied sequence are skipped (another
  // process of the node applied them) but still reported, with the recorded
  // outcome. FailedPrecondition when a message's sequence is past the next
  // one (the stream lost messages: purged or deleted), the LMDB error when
  // the commit fails (nothing applied).
  absl::StatusOr<std::vector<Applied>> Apply(absl::Span<const Message> messages);

 private:
  Replica(StoreImpl* store, MDB_dbi dbi) : store_(store), dbi_(dbi) {}
  // *events: the events the messages' requests wrote.
  absl::Status ApplyIn(MDB_txn* txn, absl::Span<const Message> messages,
                       std::vector<Applied>* applied, uint64_t* head, uint64_t* events);

  StoreImpl* const store_;
  const MDB_dbi dbi_;
};

// The last applied sequence of the replica in `core`'s log (0 when it has
// applied nothing or has no replica database); works read-only.
absl::StatusOr<uint64_t> ReadAppliedSequence(StoreCore* core);

}  // namespace rill::internal

#endif  // RILL_ENGINE_REPLICA_H_
