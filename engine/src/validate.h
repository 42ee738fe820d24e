// Checks of append requests against the documented limits (rill/limits.h),
// done in the caller's thread before a request reaches the writer.
#ifndef RILL_ENGINE_VALIDATE_H_
#define RILL_ENGINE_VALIDATE_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "rill/store.h"

namespace rill::internal {

bool IsValidUtf8(absl::string_view s);

// InvalidArgument naming the problem, or OK.
absl::Status ValidateStreamName(absl::string_view stream);
absl::Status ValidateIdempotencyKey(absl::string_view key);

// Validates one stream's part of a request; adds its payload and metadata
// bytes to *bytes and its event count to *events.
absl::Status ValidateStreamAppend(absl::string_view stream, ExpectedVersion expected,
                                  absl::Span<const EventData> events, size_t* bytes,
                                  size_t* event_count);

}  // namespace rill::internal

#endif  // RILL_ENGINE_VALIDATE_H_
