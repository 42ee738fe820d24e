#include "codec.h"

#include <xxhash.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace rill::internal {
namespace {

constexpr char kMagic[] = "rill";

flatbuffers::Offset<flatbuffers::String> OptionalString(flatbuffers::FlatBufferBuilder* fbb,
                                                        absl::string_view s) {
  if (s.empty()) return 0;
  return fbb->CreateString(s.data(), s.size());
}

absl::string_view View(const flatbuffers::String* s) {
  return s == nullptr ? absl::string_view() : absl::string_view(s->c_str(), s->size());
}

}  // namespace

const uint8_t* AlignedBuffer::Assign(absl::string_view bytes) {
  Clear();
  size_t offset = Append(bytes);
  return data() + offset;
}

void AlignedBuffer::Grow(size_t words) {
  if (words <= capacity_words_) return;
  words = std::max(words, capacity_words_ * 2);
  std::unique_ptr<uint64_t[]> grown(new uint64_t[words]);
  if (used_words_ > 0) std::memcpy(grown.get(), words_.get(), used_words_ * 8);
  words_ = std::move(grown);
  capacity_words_ = words;
}

void AlignedBuffer::Reserve(size_t bytes, size_t records) {
  Grow(used_words_ + (bytes + 7 * records + 7) / 8);
}

size_t AlignedBuffer::Append(absl::string_view bytes) {
  size_t words = (bytes.size() + 7) / 8;
  Grow(used_words_ + words);
  size_t offset = used_words_ * 8;
  if (!bytes.empty()) {
    std::memcpy(reinterpret_cast<uint8_t*>(words_.get()) + offset, bytes.data(), bytes.size());
  }
  // A record shorter than its words leaves its last word's tail unwritten:
  // zero it, so nothing uninitialized is ever readable through data().
  if (bytes.size() % 8 != 0) {
    std::memset(reinterpret_cast<uint8_t*>(words_.get()) + offset + bytes.size(), 0,
                8 - bytes.size() % 8);
  }
  used_words_ += words;
  return offset;
}

void BuildEvent(const EventData& event, const EventId& id, const EventPlacement& place,
                flatbuffers::FlatBufferBuilder* fbb) {
  fbb->Clear();
  fbb->Finish(AddEvent(event, id, place, fbb), schema::EventRecordIdentifier());
}

flatbuffers::Offset<schema::EventRecord> AddEvent(const EventData& event, const EventId& id,
                                                  const EventPlacement& place,
                                                  flatbuffers::FlatBufferBuilder* fbb) {
  auto payload = fbb->CreateVector(reinterpret_cast<const uint8_t*>(event.payload.data()),
                                   event.payload.size());
  flatbuffers::Offset<schema::Metadata> metadata = 0;
  if (!event.metadata.empty()) {
    const Metadata& m = event.metadata;
    flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<schema::Header>>> headers = 0;
    if (!m.headers.empty()) {
      std::vector<flatbuffers::Offset<schema::Header>> hs;
      hs.reserve(m.headers.size());
      for (const auto& [k, v] : m.headers) {
        auto key = fbb->CreateString(k);
        auto value = fbb->CreateString(v);
        hs.push_back(schema::CreateHeader(*fbb, key, value));
      }
      headers = fbb->CreateVector(hs);
    }
    auto corr = OptionalString(fbb, m.correlation_id);
    auto caus = OptionalString(fbb, m.causation_id);
    metadata = schema::CreateMetadata(*fbb, corr, caus, headers);
  }
  auto type = fbb->CreateString(event.type);
  auto id_vec = fbb->CreateVector(id.bytes().data(), id.bytes().size());
  auto stream = fbb->CreateString(place.stream.data(), place.stream.size());
  schema::EventRecordBuilder b(*fbb);
  b.add_stream(stream);
  b.add_version(place.version);
  b.add_position(place.position);
  b.add_id(id_vec);
  b.add_type(type);
  b.add_content_type(static_cast<schema::ContentType>(event.content_type));
  b.add_schema_version(event.schema_version);
  b.add_recorded_us(place.recorded_us);
  b.add_metadata(metadata);
  b.add_payload(payload);
  return b.Finish();
}

void WriteEventValue(const flatbuffers::FlatBufferBuilder& fbb, void* out) {
  uint64_t checksum = XXH3_64bits(fbb.GetBufferPointer(), fbb.GetSize());
  uint8_t* p = static_cast<uint8_t*>(out);
  for (size_t i = 0; i < kChecksumBytes; ++i) p[i] = static_cast<uint8_t>(checksum >> (8 * i));
  std::memcpy(p + kChecksumBytes, fbb.GetBufferPointer(), fbb.GetSize());
}

absl::StatusOr<const schema::EventRecord*> DecodeEvent(const uint8_t* data, size_t size,
                                                       uint64_t position) {
  if (size < kChecksumBytes + 8) {
    return absl::DataLossError(
        absl::StrCat("event at position ", position, " is truncated (", size, " bytes)"));
  }
  uint64_t stored = 0;
  for (size_t i = 0; i < kChecksumBytes; ++i) stored |= uint64_t{data[i]} << (8 * i);
  const uint8_t* envelope = data + kChecksumBytes;
  size_t envelope_size = size - kChecksumBytes;
  if (XXH3_64bits(envelope, envelope_size) != stored) {
    return absl::DataLossError(absl::StrCat("event at position ", position, " fails its checksum"));
  }
  flatbuffers::Verifier verifier(envelope, envelope_size);
  if (!verifier.VerifyBuffer<schema::EventRecord>(schema::EventRecordIdentifier())) {
    return absl::DataLossError(absl::StrCat("event at position ", position, " fails verification"));
  }
  const auto* record = flatbuffers::GetRoot<schema::EventRecord>(envelope);
  if (record->position() != position || (record->id() != nullptr && record->id()->size() != 16)) {
    return absl::DataLossError(absl::StrCat("event at position ", position,
                                            " holds inconsistent fields (position ",
                                            record->position(), ")"));
  }
  return record;
}

RecordedEvent ToRecordedEvent(const schema::EventRecord& record) {
  return EventViewAccess::Of(&record).ToOwned();
}

std::string EncodeStreamState(const StreamState& state) {
  flatbuffers::FlatBufferBuilder fbb(64);
  fbb.Finish(schema::CreateStreamRecord(fbb, state.first_position, state.last_position,
                                        state.last_version, state.last_recorded_us));
  return std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
}

absl::StatusOr<StreamState> DecodeStreamState(absl::string_view value, absl::string_view stream) {
  AlignedBuffer buf;
  auto root = VerifiedRoot<schema::StreamRecord>(&buf, value,
                                                 absl::StrCat("stream record of \"", stream, "\""));
  if (!root.ok()) return root.status();
  StreamState s;
  s.first_position = (*root)->first_position();
  s.last_position = (*root)->last_position();
  s.last_version = (*root)->last_version();
  s.last_recorded_us = (*root)->last_recorded_us();
  if (s.last_version < 0 || s.first_position == 0 || s.last_position < s.first_position) {
    return absl::DataLossError(
        absl::StrCat("stream record of \"", stream, "\" holds inconsistent fields"));
  }
  return s;
}

std::string EncodeIdempotency(const IdempotencyEntry& entry) {
  flatbuffers::FlatBufferBuilder fbb(128);
  std::vector<flatbuffers::Offset<schema::StreamResult>> results;
  for (const AppendResult& r : entry.results) {
    auto stream = fbb.CreateString(r.stream);
    results.push_back(schema::CreateStreamResult(fbb, stream, r.first_version, r.last_version,
                                                 r.first_position, r.last_position));
  }
  auto fp = fbb.CreateVector(reinterpret_cast<const uint8_t*>(entry.fingerprint.data()),
                             entry.fingerprint.size());
  auto rs = fbb.CreateVector(results);
  fbb.Finish(schema::CreateIdempotencyRecord(fbb, fp, rs, entry.created_us));
  return std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
}

absl::StatusOr<IdempotencyEntry> DecodeIdempotency(absl::string_view value, absl::string_view key) {
  AlignedBuffer buf;
  auto root = VerifiedRoot<schema::IdempotencyRecord>(
      &buf, value, absl::StrCat("idempotency record of key \"", key, "\""));
  if (!root.ok()) return root.status();
  IdempotencyEntry e;
  if ((*root)->fingerprint() == nullptr || (*root)->results() == nullptr) {
    return absl::DataLossError(
        absl::StrCat("idempotency record of key \"", key, "\" is incomplete"));
  }
  e.fingerprint.assign(reinterpret_cast<const char*>((*root)->fingerprint()->data()),
                       (*root)->fingerprint()->size());
  for (const schema::StreamResult* r : *(*root)->results()) {
    AppendResult a;
    a.stream = std::string(View(r->stream()));
    a.first_version = r->first_version();
    a.last_version = r->last_version();
    a.first_position = r->first_position();
    a.last_position = r->last_position();
    e.results.push_back(std::move(a));
  }
  e.created_us = (*root)->created_us();
  return e;
}

std::string EncodeStoreMeta(const StoreMetaData& meta) {
  flatbuffers::FlatBufferBuilder fbb(64);
  auto magic = fbb.CreateString(kMagic);
  auto id = fbb.CreateVector(meta.store_id.bytes().data(), meta.store_id.bytes().size());
  fbb.Finish(schema::CreateStoreMeta(fbb, magic, meta.format_version, id, meta.created_us));
  return std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
}

absl::StatusOr<StoreMetaData> DecodeStoreMeta(absl::string_view value) {
  AlignedBuffer buf;
  auto root = VerifiedRoot<schema::StoreMeta>(&buf, value, "the store's meta record");
  if (!root.ok()) return root.status();
  if (View((*root)->magic()) != kMagic) {
    return absl::FailedPreconditionError("not a rill store (meta record has no rill magic)");
  }
  StoreMetaData m;
  m.format_version = (*root)->format_version();
  m.created_us = (*root)->created_us();
  if ((*root)->store_id() != nullptr && (*root)->store_id()->size() == 16) {
    std::array<uint8_t, 16> bytes;
    std::memcpy(bytes.data(), (*root)->store_id()->data(), 16);
    m.store_id = EventId(bytes);
  }
  return m;
}

}  // namespace rill::internal
