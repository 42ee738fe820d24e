// The fingerprint of an append request, kept with its idempotency key: a
// retry must match it exactly (Stripe semantics).
#ifndef RILL_ENGINE_FINGERPRINT_H_
#define RILL_ENGINE_FINGERPRINT_H_

#include <string>

#include "absl/types/span.h"
#include "rill/store.h"

namespace rill::internal {

// One stream's part of a request, as the writer sees it. Points into the
// caller's data, which outlives the request (the caller waits for it).
struct RequestPart {
  absl::string_view stream;
  ExpectedVersion expected;
  absl::Span<const EventData> events;
};

// 16 bytes: XXH3-128 over a canonical, length-prefixed encoding of every
// part's stream, expected version and events (type, content type, schema
// version, payload, metadata). Event ids are not included: a retry that lets
// rill generate ids is still the same request.
std::string Fingerprint(absl::Span<const RequestPart> parts);

}  // namespace rill::internal

#endif  // RILL_ENGINE_FINGERPRINT_H_
