// The documented limits of a rill store. Requests beyond them fail with
// absl::StatusCode::kInvalidArgument and write nothing.
#ifndef RILL_LIMITS_H_
#define RILL_LIMITS_H_

#include <cstddef>
#include <cstdint>

namespace rill {

// Stream names: 1..kMaxStreamNameBytes bytes of valid UTF-8 without NUL.
// (LMDB keys are at most 511 bytes; the name is a key of the `streams` db.)
inline constexpr size_t kMaxStreamNameBytes = 400;
// Idempotency keys: 1..kMaxIdempotencyKeyBytes bytes of any value but NUL.
inline constexpr size_t kMaxIdempotencyKeyBytes = 400;
// Event types: 1..kMaxTypeBytes bytes of valid UTF-8 without NUL.
inline constexpr size_t kMaxTypeBytes = 256;
// One event's payload.
inline constexpr size_t kMaxPayloadBytes = 16u << 20;  // 16 MiB
// Metadata (correlation id, causation id, headers) of one event, in total.
inline constexpr size_t kMaxMetadataBytes = 64u << 10;  // 64 KiB
// Events in one append request (all streams together).
inline constexpr size_t kMaxEventsPerAppend = 100000;
// Payload plus metadata bytes of one append request.
inline constexpr size_t kMaxAppendBytes = 64u << 20;  // 64 MiB

}  // namespace rill

#endif  // RILL_LIMITS_H_
