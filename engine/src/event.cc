#include "rill/event.h"

#include <algorithm>
#include <cstring>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "rill/options.h"
#include "rill/schema/event_generated.h"

namespace rill {
namespace {

const schema::EventRecord& Rec(const void* p) {
  return *static_cast<const schema::EventRecord*>(p);
}

absl::string_view View(const flatbuffers::String* s) {
  return s == nullptr ? absl::string_view() : absl::string_view(s->c_str(), s->size());
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

absl::string_view ContentTypeName(ContentType type) {
  switch (type) {
    case ContentType::kBinary:
      return "binary";
    case ContentType::kJson:
      return "json";
    case ContentType::kFlatBuffers:
      return "flatbuffers";
  }
  return "unknown";
}

absl::StatusOr<ContentType> ParseContentType(absl::string_view name) {
  for (ContentType t : {ContentType::kBinary, ContentType::kJson, ContentType::kFlatBuffers}) {
    if (name == ContentTypeName(t)) return t;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown content type \"", name, "\" (expected json, binary or flatbuffers)"));
}

EventId EventId::Random() {
  // PCG seeded from OS entropy per thread: ids need uniqueness, not secrecy,
  // and Randen (absl::BitGen) costs ~1.5% of an append.
  thread_local absl::InsecureBitGen gen;
  std::array<uint8_t, 16> b;
  uint64_t hi = absl::Uniform<uint64_t>(gen);
  uint64_t lo = absl::Uniform<uint64_t>(gen);
  std::memcpy(b.data(), &hi, 8);
  std::memcpy(b.data() + 8, &lo, 8);
  b[6] = (b[6] & 0x0f) | 0x40;  // version 4
  b[8] = (b[8] & 0x3f) | 0x80;  // RFC 4122 variant
  return EventId(b);
}

absl::StatusOr<EventId> EventId::Parse(absl::string_view text) {
  if (text.size() != 36 || text[8] != '-' || text[13] != '-' || text[18] != '-' ||
      text[23] != '-') {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not a UUID"));
  }
  std::array<uint8_t, 16> b;
  size_t j = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '-') continue;
    int hi = HexValue(text[i]);
    int lo = i + 1 < text.size() ? HexValue(text[i + 1]) : -1;
    if (hi < 0 || lo < 0) {
      return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not a UUID"));
    }
    b[j++] = static_cast<uint8_t>(hi << 4 | lo);
    ++i;
  }
  return EventId(b);
}

bool EventId::IsNil() const {
  for (uint8_t v : bytes_) {
    if (v != 0) return false;
  }
  return true;
}

std::string EventId::ToString() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[bytes_[i] >> 4]);
    out.push_back(kHex[bytes_[i] & 0xf]);
  }
  return out;
}

absl::string_view EventView::stream() const { return View(Rec(record_).stream()); }
int64_t EventView::version() const { return Rec(record_).version(); }
uint64_t EventView::position() const { return Rec(record_).position(); }

EventId EventView::id() const {
  const auto* v = Rec(record_).id();
  if (v == nullptr || v->size() != 16) return EventId();
  std::array<uint8_t, 16> b;
  std::memcpy(b.data(), v->data(), 16);
  return EventId(b);
}

absl::string_view EventView::type() const { return View(Rec(record_).type()); }

ContentType EventView::content_type() const {
  return static_cast<ContentType>(Rec(record_).content_type());
}

uint32_t EventView::schema_version() const { return Rec(record_).schema_version(); }

absl::string_view EventView::payload() const {
  const auto* v = Rec(record_).payload();
  if (v == nullptr) return absl::string_view();
  return absl::string_view(reinterpret_cast<const char*>(v->data()), v->size());
}

absl::Time EventView::recorded_at() const {
  return absl::FromUnixMicros(Rec(record_).recorded_us());
}

absl::string_view EventView::correlation_id() const {
  const auto* m = Rec(record_).metadata();
  return m == nullptr ? absl::string_view() : View(m->correlation_id());
}

absl::string_view EventView::causation_id() const {
  const auto* m = Rec(record_).metadata();
  return m == nullptr ? absl::string_view() : View(m->causation_id());
}

std::vector<std::pair<std::string, std::string>> EventView::headers() const {
  std::vector<std::pair<std::string, std::string>> out;
  const auto* m = Rec(record_).metadata();
  if (m == nullptr || m->headers() == nullptr) return out;
  out.reserve(m->headers()->size());
  for (const schema::Header* h : *m->headers()) {
    out.emplace_back(std::string(View(h->key())), std::string(View(h->value())));
  }
  return out;
}

bool EventFilter::Matches(const EventView& event) const {
  if (!stream_prefix.empty() && !absl::StartsWith(event.stream(), stream_prefix)) return false;
  if (types.empty()) return true;
  const absl::string_view type = event.type();
  return std::any_of(types.begin(), types.end(),
                     [type](const std::string& t) { return t == type; });
}

RecordedEvent EventView::ToOwned() const {
  RecordedEvent e;
  e.stream = std::string(stream());
  e.version = version();
  e.position = position();
  e.id = id();
  e.type = std::string(type());
  e.content_type = content_type();
  e.schema_version = schema_version();
  e.payload = std::string(payload());
  e.metadata.correlation_id = std::string(correlation_id());
  e.metadata.causation_id = std::string(causation_id());
  e.metadata.headers = headers();
  e.recorded_at = recorded_at();
  return e;
}

}  // namespace rill
