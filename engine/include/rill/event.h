// Events as the application writes them (EventData) and as the log returns
// them (RecordedEvent, and the zero-copy EventView used by scans).
//
// Thread-safety: plain value types; an EventView is valid only for the
// duration of the callback that received it (see Store::ScanAll).
#ifndef RILL_EVENT_H_
#define RILL_EVENT_H_

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace rill {

// How an event's payload bytes are encoded. The values reach the disk: never
// renumber.
enum class ContentType : uint8_t { kBinary = 0, kJson = 1, kFlatBuffers = 2 };

// "binary", "json" or "flatbuffers".
absl::string_view ContentTypeName(ContentType type);
// Parses ContentTypeName's output; InvalidArgument for anything else.
absl::StatusOr<ContentType> ParseContentType(absl::string_view name);

// A 16-byte event id, printed as a UUID ("8-4-4-4-12" lowercase hex).
class EventId {
 public:
  EventId() : bytes_{} {}  // the nil UUID
  explicit EventId(const std::array<uint8_t, 16>& bytes) : bytes_(bytes) {}

  // A random (version 4) UUID.
  static EventId Random();
  // Accepts the canonical 36-character form, upper or lower case.
  static absl::StatusOr<EventId> Parse(absl::string_view text);

  bool IsNil() const;
  std::string ToString() const;
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }

  friend bool operator==(const EventId& a, const EventId& b) { return a.bytes_ == b.bytes_; }
  friend bool operator!=(const EventId& a, const EventId& b) { return !(a == b); }

 private:
  std::array<uint8_t, 16> bytes_;
};

// Who caused an event and why. Headers are free key/value pairs, kept in the
// order given.
struct Metadata {
  std::string correlation_id;
  std::string causation_id;
  std::vector<std::pair<std::string, std::string>> headers;

  bool empty() const { return correlation_id.empty() && causation_id.empty() && headers.empty(); }
  friend bool operator==(const Metadata& a, const Metadata& b) {
    return a.correlation_id == b.correlation_id && a.causation_id == b.causation_id &&
           a.headers == b.headers;
  }
};

// An event to append.
struct EventData {
  // Event type, e.g. "OrderCreated". Required, at most kMaxTypeBytes.
  std::string type;
  // The payload, opaque to rill. At most kMaxPayloadBytes.
  std::string payload;
  // How the payload is encoded; JSON by default.
  ContentType content_type = ContentType::kJson;
  // Version of the payload's own schema, for upcasting by the application.
  uint32_t schema_version = 1;
  // Event id; a random UUID is generated when left nil.
  EventId id;
  Metadata metadata;
};

// An event as stored in the log, owning its bytes.
struct RecordedEvent {
  std::string stream;
  int64_t version = 0;    // stream version, 0-based
  uint64_t position = 0;  // global position, 1-based
  EventId id;
  std::string type;
  ContentType content_type = ContentType::kBinary;
  uint32_t schema_version = 0;
  std::string payload;
  Metadata metadata;
  absl::Time recorded_at;
};

namespace internal {
struct EventViewAccess;
}  // namespace internal

// A read-only view of a stored event. Every string_view points into a buffer
// owned by the scan that produced the view and is valid only until the
// callback that received the view returns. ToOwned() copies it.
class EventView {
 public:
  absl::string_view stream() const;
  int64_t version() const;
  uint64_t position() const;
  EventId id() const;
  absl::string_view type() const;
  ContentType content_type() const;
  uint32_t schema_version() const;
  absl::string_view payload() const;
  absl::Time recorded_at() const;
  absl::string_view correlation_id() const;
  absl::string_view causation_id() const;
  // Copies the headers out of the record.
  std::vector<std::pair<std::string, std::string>> headers() const;

  RecordedEvent ToOwned() const;

 private:
  // Only rill makes views, of records it has verified (codec.h).
  friend struct internal::EventViewAccess;
  explicit EventView(const void* record) : record_(record) {}

  const void* record_;
};

}  // namespace rill

#endif  // RILL_EVENT_H_
