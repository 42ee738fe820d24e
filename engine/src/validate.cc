#include "validate.h"

#include "absl/strings/str_cat.h"

namespace rill::internal {
namespace {

absl::Status ValidateName(absl::string_view what, absl::string_view s, size_t max) {
  if (s.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  if (s.size() > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is ", s.size(), " bytes long; the limit is ", max));
  }
  if (s.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(what, " contains a NUL byte"));
  }
  return absl::OkStatus();
}

}  // namespace

bool IsValidUtf8(absl::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int n;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      n = 1, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (end - p <= n) return false;
    for (int i = 1; i <= n; ++i) {
      if ((p[i] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3f);
    }
    // Overlong encodings, surrogates and code points past U+10FFFF.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
      return false;
    }
    p += n + 1;
  }
  return true;
}

absl::Status ValidateStreamName(absl::string_view stream) {
  if (absl::Status s = ValidateName("stream name", stream, kMaxStreamNameBytes); !s.ok()) {
    return s;
  }
  if (!IsValidUtf8(stream)) {
    return absl::InvalidArgumentError("stream name is not valid UTF-8");
  }
  return absl::OkStatus();
}

absl::Status ValidateIdempotencyKey(absl::string_view key) {
  return ValidateName("idempotency key", key, kMaxIdempotencyKeyBytes);
}

absl::Status ValidateStreamAppend(absl::string_view stream, ExpectedVersion expected,
                                  absl::Span<const EventData> events, size_t* bytes,
                                  size_t* event_count) {
  if (absl::Status s = ValidateStreamName(stream); !s.ok()) return s;
  if (expected.kind() == ExpectedVersion::Kind::kExact && expected.version() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected version ", expected.version(), " is negative"));
  }
  if (static_cast<uint8_t>(expected.kind()) > 3) {
    return absl::InvalidArgumentError("unknown expected version kind");
  }
  if (events.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("append to \"", stream, "\" has no events"));
  }
  *event_count += events.size();
  if (*event_count > kMaxEventsPerAppend) {
    return absl::InvalidArgumentError(
        absl::StrCat("append has more than ", kMaxEventsPerAppend, " events"));
  }
  for (size_t i = 0; i < events.size(); ++i) {
    const EventData& e = events[i];
    if (absl::Status s = ValidateName("event type", e.type, kMaxTypeBytes); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("event ", i, ": ", s.message()));
    }
    if (!IsValidUtf8(e.type)) {
      return absl::InvalidArgumentError(
          absl::StrCat("event ", i, ": event type is not valid UTF-8"));
    }
    if (static_cast<uint8_t>(e.content_type) > 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("event ", i, ": unknown content type ", static_cast<int>(e.content_type)));
    }
    if (e.payload.size() > kMaxPayloadBytes) {
      return absl::InvalidArgumentError(absl::StrCat("event ", i, ": payload is ", e.payload.size(),
                                                     " bytes; the limit is ", kMaxPayloadBytes));
    }
    size_t meta = e.metadata.correlation_id.size() + e.metadata.causation_id.size();
    for (const auto& [k, v] : e.metadata.headers) meta += k.size() + v.size();
    if (meta > kMaxMetadataBytes) {
      return absl::InvalidArgumentError(absl::StrCat("event ", i, ": metadata is ", meta,
                                                     " bytes; the limit is ", kMaxMetadataBytes));
    }
    *bytes += e.payload.size() + meta;
  }
  if (*bytes > kMaxAppendBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("append holds more than ", kMaxAppendBytes, " bytes of events"));
  }
  return absl::OkStatus();
}

}  // namespace rill::internal
