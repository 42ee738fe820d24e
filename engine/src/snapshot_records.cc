// Keys and values of the `snapshots` database (see snapshot_records.h).
#include "snapshot_records.h"

#include <xxhash.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "keys.h"

namespace rill::internal {
namespace {

constexpr size_t kVersionBytes = 8;

}  // namespace

std::string SnapshotKeyPrefix(absl::string_view stream) {
  std::string prefix(stream);
  prefix.push_back('\0');
  return prefix;
}

std::string SnapshotKey(absl::string_view stream, int64_t version) {
  std::string key = SnapshotKeyPrefix(stream);
  uint8_t be[kVersionBytes];
  PutBigEndian64(static_cast<uint64_t>(version), be);
  key.append(reinterpret_cast<const char*>(be), kVersionBytes);
  return key;
}

absl::StatusOr<absl::string_view> SnapshotKeyStream(absl::string_view key) {
  if (key.size() < kVersionBytes + 2 || key[key.size() - kVersionBytes - 1] != '\0') {
    return absl::DataLossError("the snapshots database holds a malformed key");
  }
  return key.substr(0, key.size() - kVersionBytes - 1);
}

std::string EncodeSnapshot(absl::string_view stream, int64_t version, uint32_t schema_version,
                           absl::Time taken_at, absl::string_view data) {
  flatbuffers::FlatBufferBuilder fbb(data.size() + stream.size() + 128);
  auto stream_offset = fbb.CreateString(stream.data(), stream.size());
  auto data_offset = fbb.CreateVector(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  fbb.Finish(schema::CreateSnapshotRecord(fbb, stream_offset, version, schema_version,
                                          absl::ToUnixMicros(taken_at), data_offset));
  std::string value(kChecksumBytes + fbb.GetSize(), '\0');
  uint64_t sum = XXH3_64bits(fbb.GetBufferPointer(), fbb.GetSize());
  for (size_t i = 0; i < kChecksumBytes; ++i) {
    value[i] = static_cast<char>(sum >> (8 * i));
  }
  std::memcpy(value.data() + kChecksumBytes, fbb.GetBufferPointer(), fbb.GetSize());
  return value;
}

absl::StatusOr<const schema::SnapshotRecord*> DecodeSnapshot(absl::string_view key,
                                                             absl::string_view value,
                                                             AlignedBuffer* buf) {
  absl::StatusOr<absl::string_view> stream = SnapshotKeyStream(key);
  if (!stream.ok()) return stream.status();
  const int64_t version = static_cast<int64_t>(
      GetBigEndian64(reinterpret_cast<const uint8_t*>(key.data() + key.size() - kVersionBytes)));
  auto fail = [&](absl::string_view why) {
    return absl::DataLossError(
        absl::StrCat("the snapshot of stream \"", *stream, "\" at version ", version, " ", why));
  };
  if (value.size() < kChecksumBytes + 8) return fail("is truncated");
  const uint8_t* data = buf->Assign(value);
  uint64_t stored = 0;
  for (size_t i = 0; i < kChecksumBytes; ++i) {
    stored |= uint64_t{data[i]} << (8 * i);
  }
  const uint8_t* record = data + kChecksumBytes;
  const size_t size = value.size() - kChecksumBytes;
  if (XXH3_64bits(record, size) != stored) return fail("fails its checksum");
  flatbuffers::Verifier verifier(record, size);
  if (!verifier.VerifyBuffer<schema::SnapshotRecord>(nullptr)) {
    return fail("fails verification");
  }
  const auto* root = flatbuffers::GetRoot<schema::SnapshotRecord>(record);
  if (root->stream() == nullptr ||
      absl::string_view(root->stream()->c_str(), root->stream()->size()) != *stream ||
      root->version() != version) {
    return fail("holds another stream's or version's record");
  }
  return root;
}

Snapshot ToSnapshot(const schema::SnapshotRecord& r) {
  Snapshot s;
  s.stream = r.stream()->str();
  s.version = r.version();
  s.schema_version = r.schema_version();
  if (r.data() != nullptr) {
    s.data.assign(reinterpret_cast<const char*>(r.data()->data()), r.data()->size());
  }
  s.taken_at = absl::FromUnixMicros(r.taken_us());
  return s;
}

}  // namespace rill::internal
