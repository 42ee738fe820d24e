// ReplicatedStore: the Store of a replicated node (rill/replication.h,
// docs/replication.md).
//
// Reads, subscriptions and everything that reaches the engine through
// core() go to the local replica (a StoreImpl). Appends go through
// JetStream:
//
//   caller --Submit--> queue --publisher thread--> JetStream messages
//                                                  (group-commit batches)
//   JetStream --applier thread (ordered consumer)--> Replica::Apply
//                                                  --> completes the callers
//
// The publisher has one message in flight at a time (the embedded store's
// group commit, with JetStream's round trip in place of the fsync): it
// takes everything queued (up to max_message_bytes) into one transaction,
// waiting up to group_commit_wait for more when fewer requests are queued
// than its last message carried, registers it under its txid and publishes
// it with the txid as Nats-Msg-Id, retrying (same id, so JetStream keeps
// one copy) through a leader election until append_timeout. It publishes
// the next batch while the applier applies the previous one. (Several
// messages in flight made smaller messages and measured slower here: a
// JetStream cluster's cost is per message, docs/replication.md.) The applier applies what JetStream
// delivers, in order, and hands each registered transaction's outcome (the
// checks ran at apply time, the same on every node) to its callers. A
// caller returns once its outcome is known, or with Unavailable when the
// append timeout passes, saying whether the append is stored, not stored,
// or of unknown outcome (then a retry with the same idempotency key is
// safe).
//
// Thread-safety: as Store.
#ifndef RILL_ENGINE_REPLICATED_STORE_H_
#define RILL_ENGINE_REPLICATED_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "rill/replication.h"
#include "rill/store.h"

namespace rill::internal {

// Opens the replicated node in `dir` with `replication` settings (read from
// the node's directory by Store::Open).
absl::StatusOr<std::unique_ptr<Store>> OpenReplicatedStore(const std::string& dir,
                                                           const ReplicationOptions& replication,
                                                           const StoreOptions& options);

}  // namespace rill::internal

#endif  // RILL_ENGINE_REPLICATED_STORE_H_
