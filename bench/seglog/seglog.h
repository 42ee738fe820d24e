// seglog: the storage prototype of issue 15 (docs/segment-log.md), NOT part
// of the engine. It answers one question with numbers: can an event log
// whose commits cost one fdatasync (SQLite WAL's price) instead of LMDB's
// two beat SQLite for a lone writer, without weakening durability?
//
// Layout of a log directory:
//
//   seg-000000  seg-000001 ...   segments: fixed-size files, zero-filled and
//                                fsync'd before first use, holding framed
//                                records back to back (seglog.cc)
//   index/data.mdb               LMDB, opened MDB_NOSYNC: stream versions,
//                                idempotency records, a sparse position ->
//                                offset map, the indexed end of the log
//   index.boot                   the boot id of the last process that wrote
//                                the index without syncing it ("clean" after
//                                a checkpoint at close)
//
// A commit (group commit: a leader takes every queued request) checks the
// expected versions and idempotency keys in an LMDB write transaction,
// writes the accepted requests' records to the segment with one pwrite,
// fdatasyncs the segment (over blocks that were written and synced before:
// no allocation, no journal commit), then commits the index transaction
// without a sync. The segment is the truth; the index is a cache of it,
// synced at Close (and every Options::checkpoint_bytes, off by default).
//
// Recovery (Open): after a process crash the page cache still holds the
// index, whose last commit is consistent: Open re-indexes the segment tail
// past the index's end (records written, perhaps only into the page cache,
// when the process died) and fdatasyncs it before anything reads it or
// appends after it. After an
// operating-system crash - index.boot names another boot and is not clean -
// an unsynced LMDB may be torn, so Open rebuilds the index from the
// segments. Either way the tail is cut at the first record that is torn,
// out of sequence, or belongs to a request not wholly written, and the bytes
// past it are zeroed and synced before the first new append.
//
// Close waits for the appends in flight, syncs every segment written since
// Open and the index, and marks the index clean; appends after it are
// FailedPrecondition.
//
// Thread-safety: Append, Read* and Checkpoint may be called from any thread.
#ifndef RILL_BENCH_SEGLOG_SEGLOG_H_
#define RILL_BENCH_SEGLOG_SEGLOG_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "rill/event.h"
#include "rill/expected_version.h"
#include "rill/store.h"

namespace rill::seglog {

enum class Prealloc {
  kZeroFill,   // write zeros over the whole segment and fsync it (default)
  kFallocate,  // fallocate(2) only: unwritten extents, converted at each sync
  kNone,       // grow the file by appending
};

struct Options {
  std::string dir;
  uint64_t segment_bytes = uint64_t{64} << 20;
  Prealloc prealloc = Prealloc::kZeroFill;
  // fdatasync per commit. false only for bulk loading (and then Close
  // still syncs everything).
  bool sync = true;
  // The index is synced (a checkpoint) after this many log bytes; 0: only
  // at Close. In this prototype a checkpoint does not shorten any recovery
  // (after a reboot the index is rebuilt whatever was synced), so it is off
  // by default; it would matter with a checkpointed index
  // (docs/segment-log.md, "Recommendation").
  uint64_t checkpoint_bytes = 0;
  // Verify every record's checksum on reads, as rill verifies its records.
  bool verify_reads = true;
  // The boot id; empty: /proc/sys/kernel/random/boot_id. Tests change it
  // to stand for a reboot.
  std::string boot_id;
  size_t max_batch_requests = 4096;
  size_t max_batch_bytes = size_t{8} << 20;
  uint64_t initial_map_size = uint64_t{1} << 30;
};

// What the last Open found and did.
struct RecoveryInfo {
  bool rebuilt = false;         // the index was rebuilt from the segments
  uint64_t indexed_before = 0;  // the index's last position when opened
  uint64_t reindexed = 0;       // records indexed from the tail
  uint64_t last_position = 0;   // the log's last position after recovery
  uint64_t cut_bytes = 0;       // bytes zeroed past the valid end
  double seconds = 0;
};

// A record as a reader sees it: views into the segment mapping, valid
// during the callback only.
struct EventRef {
  uint64_t position;
  int64_t version;
  absl::string_view stream;
  absl::string_view type;
  absl::string_view payload;
  int64_t recorded_us;
};

class Log {
 public:
  static absl::StatusOr<std::unique_ptr<Log>> Open(const Options& options);
  virtual ~Log() = default;

  // rill's Append: checks `expected` and the idempotency key (a retry of
  // the same request returns the first result marked deduplicated and
  // writes nothing; the same key with another request is AlreadyExists),
  // and returns once the events are durable. Aborted on a wrong expected
  // version.
  virtual absl::StatusOr<AppendResult> Append(absl::string_view stream, ExpectedVersion expected,
                                              absl::Span<const EventData> events,
                                              absl::string_view idempotency_key = {}) = 0;

  // Calls `fn` for every event from position `from` on, in order, until it
  // returns false. Returns the number of events passed to fn.
  virtual absl::StatusOr<uint64_t> ReadAll(uint64_t from,
                                           const std::function<bool(const EventRef&)>& fn) = 0;
  // `count` events (-1: all) of `stream` from version `from`.
  virtual absl::StatusOr<uint64_t> ReadStream(absl::string_view stream, int64_t from, int64_t count,
                                              const std::function<bool(const EventRef&)>& fn) = 0;

  virtual uint64_t last_position() const = 0;
  // Syncs the index (a checkpoint).
  virtual absl::Status Checkpoint() = 0;
  // Checkpoints and marks the index clean.
  virtual absl::Status Close() = 0;

  virtual const RecoveryInfo& recovery() const = 0;
  // Commits (fdatasyncs) since Open; bytes the log takes (segments in use
  // plus the index).
  virtual uint64_t commits() const = 0;
  virtual uint64_t bytes_used() const = 0;
};

}  // namespace rill::seglog

#endif  // RILL_BENCH_SEGLOG_SEGLOG_H_
