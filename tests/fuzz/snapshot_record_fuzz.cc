// Fuzz target: any bytes as a stored snapshot value (`snapshots` database
// of the derived environment: 8-byte XXH3-64 checksum + SnapshotRecord
// FlatBuffer, keyed by stream 0x00 version; docs/format.md).
//
// Each input is decoded as it is and with a recomputed checksum, under a
// fixed key and, when the record verifies, under the key it claims (so the
// accepting path runs too). The input is also tried as a key. Promises:
//   - DecodeSnapshot / SnapshotKeyStream never crash and fail only with
//     DataLoss;
//   - an accepted record is read in full (ToSnapshot), and encoding it again
//     with the writer's encoder and decoding that gives the same snapshot.
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "codec.h"
#include "fuzz_util.h"
#include "rill/snapshot.h"
#include "snapshot_records.h"

namespace rill::fuzz {
namespace {

using internal::AlignedBuffer;

void Decode(absl::string_view key, absl::string_view value) {
  AlignedBuffer buf;
  absl::StatusOr<const schema::SnapshotRecord*> r = internal::DecodeSnapshot(key, value, &buf);
  if (!r.ok()) {
    FUZZ_CHECK(r.status().code() == absl::StatusCode::kDataLoss);
    return;
  }
  const Snapshot s = internal::ToSnapshot(**r);
  Consume(s.stream.size() + s.data.size());
  FUZZ_CHECK(internal::SnapshotKey(s.stream, s.version) == std::string(key));
  const std::string again =
      internal::EncodeSnapshot(s.stream, s.version, s.schema_version, s.taken_at, s.data);
  AlignedBuffer buf2;
  absl::StatusOr<const schema::SnapshotRecord*> r2 = internal::DecodeSnapshot(key, again, &buf2);
  FUZZ_CHECK(r2.ok());
  const Snapshot s2 = internal::ToSnapshot(**r2);
  FUZZ_CHECK(s2.stream == s.stream && s2.version == s.version &&
             s2.schema_version == s.schema_version && s2.data == s.data &&
             s2.taken_at == s.taken_at);
}

void Exercise(absl::string_view value) {
  Decode(internal::SnapshotKey("s", 0), value);
  if (value.size() < internal::kChecksumBytes + 8) return;
  AlignedBuffer buf;
  const uint8_t* p = buf.Assign(value);
  flatbuffers::Verifier verifier(p + internal::kChecksumBytes,
                                 value.size() - internal::kChecksumBytes);
  if (!verifier.VerifyBuffer<schema::SnapshotRecord>(nullptr)) return;
  const auto* root = flatbuffers::GetRoot<schema::SnapshotRecord>(p + internal::kChecksumBytes);
  if (root->stream() == nullptr) return;
  Decode(internal::SnapshotKey(absl::string_view(root->stream()->c_str(), root->stream()->size()),
                               root->version()),
         value);
}

}  // namespace
}  // namespace rill::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view value(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<absl::string_view> stream = rill::internal::SnapshotKeyStream(value);
  if (stream.ok()) {
    FUZZ_CHECK(stream->size() + 9 == size);
  } else {
    FUZZ_CHECK(stream.status().code() == absl::StatusCode::kDataLoss);
  }
  rill::fuzz::Exercise(value);
  if (size >= rill::internal::kChecksumBytes) {
    rill::fuzz::Exercise(rill::fuzz::WithValidChecksum(value));
  }
  return 0;
}
