// Encoding and decoding of the records of the log environment
// (schema/event.fbs, schema/records.fbs; docs/format.md).
//
// Every decoder first copies the LMDB value into 8-byte-aligned memory (LMDB
// only aligns values to 2 bytes, FlatBuffers reads scalars in place), then
// checks it: the event envelope's XXH3-64 checksum, then the FlatBuffers
// verifier. A record that fails either is DataLoss, never a crash.
#ifndef RILL_ENGINE_CODEC_H_
#define RILL_ENGINE_CODEC_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "flatbuffers/flatbuffers.h"
#include "rill/event.h"
#include "rill/schema/event_generated.h"
#include "rill/schema/records_generated.h"
#include "rill/store.h"

namespace rill::internal {

// Size of the checksum that prefixes every event envelope.
inline constexpr size_t kChecksumBytes = 8;

// 8-byte aligned scratch memory that records are copied into before they are
// read. Reused across records to avoid allocations.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  AlignedBuffer(AlignedBuffer&& other) noexcept
      : words_(std::move(other.words_)),
        capacity_words_(std::exchange(other.capacity_words_, 0)),
        used_words_(std::exchange(other.used_words_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept {
    words_ = std::move(other.words_);
    capacity_words_ = std::exchange(other.capacity_words_, 0);
    used_words_ = std::exchange(other.used_words_, 0);
    return *this;
  }

  // Copies `bytes` in and returns a pointer to the (aligned) copy, valid
  // until the next Assign/Append or destruction.
  const uint8_t* Assign(absl::string_view bytes);
  // Appends `bytes` at the next 8-byte aligned offset; returns that offset.
  // Pointers returned by data() before an Append may be invalidated.
  size_t Append(absl::string_view bytes);
  const uint8_t* data() const { return reinterpret_cast<const uint8_t*>(words_.get()); }
  void Clear() { used_words_ = 0; }
  size_t used_bytes() const { return used_words_ * 8; }
  // Makes room for `bytes` more bytes (in records of any sizes, each rounded
  // up to 8) without reallocating. Pointers from data() may be invalidated.
  void Reserve(size_t bytes, size_t records);

 private:
  // Grows the capacity to at least `words` (not zero-filled: every byte
  // handed out is first written by Append).
  void Grow(size_t words);

  std::unique_ptr<uint64_t[]> words_;
  size_t capacity_words_ = 0;
  size_t used_words_ = 0;
};

// Copies `value` (a record without checksum) into `buf` and verifies it as a
// FlatBuffer of root type T; DataLoss naming `what` when it does not verify.
// The result points into `buf`.
template <typename T>
absl::StatusOr<const T*> VerifiedRoot(AlignedBuffer* buf, absl::string_view value,
                                      absl::string_view what) {
  const uint8_t* data = buf->Assign(value);
  flatbuffers::Verifier verifier(data, value.size());
  if (!verifier.VerifyBuffer<T>(nullptr)) {
    return absl::DataLossError(absl::StrCat(what, " fails verification"));
  }
  return flatbuffers::GetRoot<T>(data);
}

// Fields of an event that the writer decides (not the caller).
struct EventPlacement {
  absl::string_view stream;
  int64_t version;
  uint64_t position;
  int64_t recorded_us;
};

// Builds the envelope of `event` into `fbb` (cleared first). The stored value
// is checksum (kChecksumBytes) followed by fbb's bytes: see WriteEventValue.
void BuildEvent(const EventData& event, const EventId& id, const EventPlacement& place,
                flatbuffers::FlatBufferBuilder* fbb);
// Adds `event`'s envelope to `fbb` as a table of a larger buffer (the
// replicated store's transactions hold events this way).
flatbuffers::Offset<schema::EventRecord> AddEvent(const EventData& event, const EventId& id,
                                                  const EventPlacement& place,
                                                  flatbuffers::FlatBufferBuilder* fbb);
// Size of the stored value for a built envelope.
inline size_t EventValueSize(const flatbuffers::FlatBufferBuilder& fbb) {
  return kChecksumBytes + fbb.GetSize();
}
// Writes checksum + envelope into `out` (EventValueSize bytes).
void WriteEventValue(const flatbuffers::FlatBufferBuilder& fbb, void* out);

// Makes EventViews, which have no public constructor.
struct EventViewAccess {
  // REQUIRES: `record` passed DecodeEvent (checksum and verifier).
  static EventView Of(const schema::EventRecord* record) { return EventView(record); }
};

// Checks a stored event value that has been copied to 8-aligned `data`.
// Returns the verified record. `position` is only for the error message.
absl::StatusOr<const schema::EventRecord*> DecodeEvent(const uint8_t* data, size_t size,
                                                       uint64_t position);

RecordedEvent ToRecordedEvent(const schema::EventRecord& record);

// A stream's bookkeeping record.
struct StreamState {
  uint64_t first_position = 0;  // also the stream id
  uint64_t last_position = 0;
  int64_t last_version = -1;
  int64_t last_recorded_us = 0;
};
std::string EncodeStreamState(const StreamState& state);
absl::StatusOr<StreamState> DecodeStreamState(absl::string_view value, absl::string_view stream);

// An idempotency record: the request's fingerprint and what it was given.
struct IdempotencyEntry {
  std::string fingerprint;  // 16 bytes
  std::vector<AppendResult> results;
  int64_t created_us = 0;
};
std::string EncodeIdempotency(const IdempotencyEntry& entry);
absl::StatusOr<IdempotencyEntry> DecodeIdempotency(absl::string_view value, absl::string_view key);

// The store's meta record.
struct StoreMetaData {
  uint32_t format_version = 0;
  EventId store_id;
  int64_t created_us = 0;
};
std::string EncodeStoreMeta(const StoreMetaData& meta);
// FailedPrecondition when the magic is wrong; DataLoss when it does not verify.
absl::StatusOr<StoreMetaData> DecodeStoreMeta(absl::string_view value);

}  // namespace rill::internal

#endif  // RILL_ENGINE_CODEC_H_
