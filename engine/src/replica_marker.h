// ReplicaMarker: whether a replicated node's replica, whose commits are not
// fsync'd, survived the last time the machine went down (docs/replication.md,
// "A replica without fsync").
//
// JetStream holds the log; the replica is rebuilt from it whenever it cannot
// be trusted. LMDB without fsync (MDB_NOSYNC) loses nothing when a process
// dies - the page cache keeps every commit - but after an OS crash or power
// loss its file may be corrupt, and nothing in the file says so. The node's
// `replica.boot` file does: "dirty <boot id>" while any process has the node
// open (written and fsync'd before the first unsynced commit), "clean" once
// the last one closed after syncing the replica. Found "dirty" with another
// boot's id, the machine went down with the node open, and the replica
// (log/ and derived/) is deleted and rebuilt from JetStream.
//
// Several processes may open a node (the service and the admin tool): each
// holds a shared flock on the file while open; the one that can take it
// exclusively when it closes is the last, and marks it clean. After a reboot
// the first opener to get it exclusively deletes the replica; the others,
// which never wait for it, find the marker rewritten.
// (RILL_TEST_MARKER_PAUSE_MS: tests make racing openers meet there.)
#ifndef RILL_ENGINE_REPLICA_MARKER_H_
#define RILL_ENGINE_REPLICA_MARKER_H_

#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"

namespace rill::internal {

class ReplicaMarker {
 public:
  // Takes the node `dir`'s marker for a process that opens it writable:
  // deletes the replica when another boot left it in use (*rebuilt), then
  // marks it in use by this boot, durably. Call before opening the replica.
  // When it deleted the replica it keeps the marker's lock exclusive, so
  // that no other opener comes in before the new replica exists: call
  // Opened once it is open.
  static absl::StatusOr<std::unique_ptr<ReplicaMarker>> Acquire(const std::string& dir,
                                                                bool* rebuilt);
  // The replica is open (created, when Acquire deleted it): lets other
  // openers of the node in.
  absl::Status Opened();
  // Releases the marker (its lock). When no other process holds the node,
  // runs `sync` (which must make the replica durable) and, when it succeeds,
  // marks the replica clean.
  void Release(absl::FunctionRef<absl::Status()> sync);
  ~ReplicaMarker();

  ReplicaMarker(const ReplicaMarker&) = delete;
  ReplicaMarker& operator=(const ReplicaMarker&) = delete;

 private:
  ReplicaMarker(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  const std::string path_;
  int fd_;
  bool exclusive_ = false;  // Acquire deleted the replica; Opened not yet called
};

// Whether node `dir` has a marker (its replica has been without fsync).
bool HasReplicaMarker(const std::string& dir);

// OK unless another boot left the replica of node `dir` in use: then
// FailedPrecondition saying how to rebuild it (a read-only open must not
// read a replica an OS crash may have damaged).
absl::Status CheckReplicaReadable(const std::string& dir);

// This boot's id (/proc/sys/kernel/random/boot_id; empty when unreadable),
// or RILL_TEST_FAKE_BOOT_ID when set: tests pretend the machine rebooted.
// (For tests only: a constant id would hide every real reboot.)
std::string BootId();

}  // namespace rill::internal

#endif  // RILL_ENGINE_REPLICA_MARKER_H_
