// Keys and values of the `snapshots` database of the derived environment
// (docs/format.md, schema/records.fbs SnapshotRecord):
//
//   key    := stream name bytes, 0x00, version (u64 BE)
//   value  := checksum (8 bytes, little-endian XXH3-64 of `record`), record
//   record := FlatBuffer, root SnapshotRecord
//
// Stream names never contain NUL, so one stream's keys are exactly those that
// start with SnapshotKeyPrefix(stream), in version order.
#ifndef RILL_ENGINE_SNAPSHOT_RECORDS_H_
#define RILL_ENGINE_SNAPSHOT_RECORDS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "codec.h"
#include "rill/snapshot.h"

namespace rill::internal {

inline constexpr char kSnapshotsDb[] = "snapshots";

// "name\0": the prefix of every key of `stream`.
std::string SnapshotKeyPrefix(absl::string_view stream);
std::string SnapshotKey(absl::string_view stream, int64_t version);
// The stream name part of a key; DataLoss for a malformed key.
absl::StatusOr<absl::string_view> SnapshotKeyStream(absl::string_view key);

// The stored value of a snapshot.
std::string EncodeSnapshot(absl::string_view stream, int64_t version, uint32_t schema_version,
                           absl::Time taken_at, absl::string_view data);
// Copies the value stored under `key` into `buf` (aligned), checks the
// checksum, verifies the FlatBuffer and compares its stream and version with
// the key's. The record points into `buf`: valid until buf's next Assign.
// DataLoss naming the stream and version on any failure.
absl::StatusOr<const schema::SnapshotRecord*> DecodeSnapshot(absl::string_view key,
                                                             absl::string_view value,
                                                             AlignedBuffer* buf);
// An owning copy of a decoded record.
Snapshot ToSnapshot(const schema::SnapshotRecord& record);

}  // namespace rill::internal

#endif  // RILL_ENGINE_SNAPSHOT_RECORDS_H_
