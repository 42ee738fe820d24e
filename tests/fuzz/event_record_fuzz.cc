// Fuzz target: any bytes as a stored event value (`events` database: 8-byte
// XXH3-64 checksum + EventRecord FlatBuffer, docs/format.md).
//
// Each input is decoded twice: as it is (almost always stopped by the
// checksum), and with its checksum recomputed so that the FlatBuffers
// verifier and the field checks see the mutated bytes. Promises checked:
//   - DecodeEvent never crashes and fails only with DataLoss;
//   - a record it accepts can be read in full through EventView/ToOwned
//     (no out-of-bounds read: ASan), and rebuilding it with the writer's
//     encoder and decoding that again gives the same event (the decoder
//     reads what the encoder meant).
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "codec.h"
#include "fuzz_util.h"
#include "rill/event.h"

namespace rill::fuzz {
namespace {

using internal::AlignedBuffer;

bool SameEvent(const RecordedEvent& a, const RecordedEvent& b) {
  return a.stream == b.stream && a.version == b.version && a.position == b.position &&
         a.id == b.id && a.type == b.type && a.content_type == b.content_type &&
         a.schema_version == b.schema_version && a.payload == b.payload &&
         a.metadata == b.metadata && a.recorded_at == b.recorded_at;
}

void CheckAccepted(const schema::EventRecord& record) {
  const RecordedEvent e = internal::ToRecordedEvent(record);
  Consume(e.stream.size() + e.type.size() + e.payload.size() + e.id.ToString().size() +
          ContentTypeName(e.content_type).size() + e.metadata.headers.size());
  // Re-encode with the writer's code and decode again.
  EventData data;
  data.type = e.type;
  data.payload = e.payload;
  data.content_type = e.content_type;
  data.schema_version = e.schema_version;
  data.metadata = e.metadata;
  flatbuffers::FlatBufferBuilder fbb;
  internal::BuildEvent(
      data, e.id,
      internal::EventPlacement{e.stream, e.version, e.position, absl::ToUnixMicros(e.recorded_at)},
      &fbb);
  std::string value(internal::EventValueSize(fbb), '\0');
  internal::WriteEventValue(fbb, value.data());
  AlignedBuffer buf;
  const uint8_t* p = buf.Assign(value);
  absl::StatusOr<const schema::EventRecord*> again =
      internal::DecodeEvent(p, value.size(), e.position);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(SameEvent(e, internal::ToRecordedEvent(**again)));
}

void Exercise(absl::string_view value) {
  AlignedBuffer buf;
  const uint8_t* p = buf.Assign(value);
  absl::StatusOr<const schema::EventRecord*> r =
      internal::DecodeEvent(p, value.size(), /*position=*/1);
  if (r.ok()) {
    CheckAccepted(**r);
  } else {
    FUZZ_CHECK(r.status().code() == absl::StatusCode::kDataLoss);
  }
  // A record that verifies but was stored under another position is
  // DataLoss above; decode it at its own position so that every verifiable
  // record reaches the accessors.
  if (value.size() < internal::kChecksumBytes + 8) return;
  flatbuffers::Verifier verifier(p + internal::kChecksumBytes,
                                 value.size() - internal::kChecksumBytes);
  if (!verifier.VerifyBuffer<schema::EventRecord>(schema::EventRecordIdentifier())) {
    return;
  }
  const uint64_t own =
      flatbuffers::GetRoot<schema::EventRecord>(p + internal::kChecksumBytes)->position();
  absl::StatusOr<const schema::EventRecord*> at_own = internal::DecodeEvent(p, value.size(), own);
  if (at_own.ok()) {
    CheckAccepted(**at_own);
  } else {
    FUZZ_CHECK(at_own.status().code() == absl::StatusCode::kDataLoss);
  }
}

}  // namespace
}  // namespace rill::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view value(reinterpret_cast<const char*>(data), size);
  rill::fuzz::Exercise(value);
  if (size >= rill::internal::kChecksumBytes) {
    rill::fuzz::Exercise(rill::fuzz::WithValidChecksum(value));
  }
  return 0;
}
