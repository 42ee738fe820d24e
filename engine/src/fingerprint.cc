#include "fingerprint.h"

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <cstring>

namespace rill::internal {
namespace {

class Hasher {
 public:
  Hasher() { XXH3_128bits_reset(&state_); }
  void U64(uint64_t v) { XXH3_128bits_update(&state_, &v, sizeof v); }
  void Bytes(absl::string_view s) {
    U64(s.size());
    XXH3_128bits_update(&state_, s.data(), s.size());
  }
  std::string Digest() {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&state_));
    return std::string(reinterpret_cast<const char*>(c.digest), sizeof c.digest);
  }

 private:
  XXH3_state_t state_;
};

}  // namespace

std::string Fingerprint(absl::Span<const RequestPart> parts) {
  Hasher h;
  h.U64(parts.size());
  for (const RequestPart& p : parts) {
    h.Bytes(p.stream);
    h.U64(static_cast<uint64_t>(p.expected.kind()));
    h.U64(static_cast<uint64_t>(p.expected.version()));
    h.U64(p.events.size());
    for (const EventData& e : p.events) {
      h.Bytes(e.type);
      h.U64(static_cast<uint64_t>(e.content_type));
      h.U64(e.schema_version);
      h.Bytes(e.payload);
      h.Bytes(e.metadata.correlation_id);
      h.Bytes(e.metadata.causation_id);
      h.U64(e.metadata.headers.size());
      for (const auto& [k, v] : e.metadata.headers) {
        h.Bytes(k);
        h.Bytes(v);
      }
    }
  }
  return h.Digest();
}

}  // namespace rill::internal
