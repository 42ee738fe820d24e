// Replicated rill: the same Store over a NATS JetStream cluster
// (docs/replication.md).
//
// JetStream is the source of truth. Each node keeps a local rill store (the
// replica) fed in order from one JetStream stream; reads, subscriptions,
// projections, snapshots and replay run on it as on an embedded store. An
// append is published as one JetStream message (a group-commit batch of
// requests) and returns once JetStream has stored it (on a quorum of the
// stream's replicas) and the local replica has applied it, so a node reads
// its own writes. Expected versions and idempotency keys are checked when a
// message is applied, in JetStream's order, the same way on every node.
//
// A node is a directory: `InitReplicatedNode` (or `rill replicate init`)
// records the settings there, and Store::Open on that directory then opens
// the replicated store, so every admin command works on a node unchanged.
//
// Example:
//   rill::ReplicationOptions repl;
//   repl.servers = {"nats://10.0.0.1:4222", "nats://10.0.0.2:4222"};
//   repl.stream = "orders";
//   absl::Status s = rill::InitReplicatedNode("/var/lib/orders", repl);
//   auto store = rill::Store::Open("/var/lib/orders");  // replicated
#ifndef RILL_REPLICATION_H_
#define RILL_REPLICATION_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rill/options.h"

namespace rill {

class Store;

struct ReplicationOptions {
  // NATS server URLs (nats://host:port); any of the cluster's servers.
  std::vector<std::string> servers;
  // The JetStream stream that holds the log: letters, digits, '-' and '_'.
  std::string stream = "rill";
  // The subject the node publishes to; empty: "rill.<stream>".
  std::string subject;
  // Replicas of the stream when InitReplicatedNode creates it (1..5; 3
  // survives the loss of one server).
  int replicas = 3;
  // How long connecting may take before an append fails with Unavailable.
  absl::Duration connect_timeout = absl::Seconds(2);
  // How long an append may wait for JetStream to store its message (across
  // retries during a leader election) and for the local replica to apply it.
  absl::Duration append_timeout = absl::Seconds(10);
  // Largest message the node publishes: a group-commit batch is cut below it
  // and a single request above it is refused. Keep it below the servers'
  // max_payload (1 MiB by default).
  size_t max_message_bytes = size_t{1} << 20;
  // The group commit wait of the node's publisher (as
  // StoreOptions::group_commit_wait): it has one message in flight at a
  // time, and before it publishes the next it may wait this long for the
  // callers its last message answered to send their next requests, so that
  // callers appending in a loop share one full message instead of
  // alternating half-full ones (a JetStream cluster stores either in about
  // the same time; docs/replication.md has the figures). It ends early once
  // they are all back or none has come back for a quarter of it, and shrinks
  // when they do not come back; a lone writer never waits. Longer than the
  // embedded store's: answered callers come back through the applier.
  // 0: never wait. At most 100 ms.
  absl::Duration group_commit_wait = absl::Milliseconds(1);
  // Whether the local replica fsyncs its commits. JetStream holds the log, so
  // an acknowledged append does not depend on them: by default the replica
  // commits without fsync and, when the machine went down while the node was
  // open (an OS crash or power loss, told by the boot id recorded in the
  // node's replica.boot), it is deleted and rebuilt from JetStream when next
  // opened, projections included. Set it for a node whose rebuild would take
  // too long. (StoreOptions::durability kNoSyncUnsafe skips both.)
  bool sync_replica = false;
  // Passed through to libnats: a credentials (.creds) file, and TLS.
  std::string credentials_file;
  bool tls = false;
  std::string tls_ca_file;    // trusted CAs (PEM)
  std::string tls_cert_file;  // client certificate chain (PEM)
  std::string tls_key_file;   // its key (PEM)

  std::string effective_subject() const { return subject.empty() ? "rill." + stream : subject; }
};

// Makes `dir` (missing or empty) a replicated node: creates the local
// replica, records `options` in dir/replication.conf, and creates the
// JetStream stream when it does not exist yet (an existing stream is used as
// it is, and the replica catches up with it when opened). Errors:
// InvalidArgument (bad options), FailedPrecondition (dir holds something
// else), Unavailable (NATS cannot be reached within connect_timeout).
absl::Status InitReplicatedNode(const std::string& dir, const ReplicationOptions& options,
                                const StoreOptions& store_options = StoreOptions());

// The settings recorded in a node's directory; NotFound when `dir` is not a
// replicated node.
absl::StatusOr<ReplicationOptions> ReadReplicationSettings(const std::string& dir);

struct ReplicationStatus {
  std::string stream;
  // The last JetStream sequence the local replica has applied.
  uint64_t applied_sequence = 0;
  // JetStream's last sequence, and how far the replica is behind it; set
  // when `reachable`.
  bool reachable = false;
  std::string error;  // why not reachable
  uint64_t stream_last_sequence = 0;
  uint64_t lag = 0;
  int replicas = 0;
  std::string leader;  // the stream leader's server name
};

// The replication state of the node `store` was opened from (read-only or
// not): what its replica has applied (also what another process of the node
// applied) and, when NATS answers within the node's connect_timeout, the
// stream's state. NotFound when it is not a replicated node.
absl::StatusOr<ReplicationStatus> GetReplicationStatus(Store* store);

struct PushResult {
  uint64_t events = 0;
  uint64_t messages = 0;
  uint64_t last_sequence = 0;  // the stream's, after the push
};

// Moves the log of `source` (an embedded store; read-only is enough) into a
// new JetStream stream, options.stream, created when missing: every event in
// position order, with its id, type, payload, metadata and recorded time, so
// that every node created on the stream (InitReplicatedNode) holds the same
// log with the same positions and versions. Each message is published only
// if the stream is still where the previous one left it, so nothing else
// can interleave. FailedPrecondition when the stream already holds messages.
// Idempotency records are not moved: keys used with `source` are not
// honoured by the replicated store.
absl::StatusOr<PushResult> PushToStream(Store* source, const ReplicationOptions& options);

// Waits until the local replica of `store` (a replicated node, opened
// writable) has applied every message JetStream held when this was called:
// after it, this node reads what any node appended before. Unavailable when
// NATS does not answer, DeadlineExceeded when the replica does not catch up
// within `timeout`, FailedPrecondition when `store` is not a replicated node.
absl::Status WaitForReplica(Store* store, absl::Duration timeout);

}  // namespace rill

#endif  // RILL_REPLICATION_H_
