// Key encodings of the log environment (docs/format.md). Integers are stored
// big-endian so LMDB's bytewise key order is numeric order.
#ifndef RILL_ENGINE_KEYS_H_
#define RILL_ENGINE_KEYS_H_

#include <array>
#include <cstdint>
#include <cstring>

#include "absl/strings/string_view.h"

namespace rill::internal {

inline void PutBigEndian64(uint64_t v, uint8_t* out) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<uint8_t>(v);
    v >>= 8;
  }
}

inline uint64_t GetBigEndian64(const uint8_t* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | in[i];
  return v;
}

// events: position -> envelope.
struct PositionKey {
  explicit PositionKey(uint64_t position) { PutBigEndian64(position, bytes.data()); }
  std::array<uint8_t, 8> bytes;
};

// stream_index: (stream id, version) -> position. The stream id is the
// global position of the stream's first event.
struct StreamIndexKey {
  StreamIndexKey(uint64_t stream_id, int64_t version) {
    PutBigEndian64(stream_id, bytes.data());
    PutBigEndian64(static_cast<uint64_t>(version), bytes.data() + 8);
  }
  uint64_t stream_id() const { return GetBigEndian64(bytes.data()); }
  int64_t version() const { return static_cast<int64_t>(GetBigEndian64(bytes.data() + 8)); }
  std::array<uint8_t, 16> bytes;
};

}  // namespace rill::internal

#endif  // RILL_ENGINE_KEYS_H_
