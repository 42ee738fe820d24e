// Fuzz target: any bytes as one line of a JSON-lines file for `rill import`
// (and `rill append --file`): tools/event_json.h.
//
// Promises checked:
//   - ParseEventLine never crashes and fails only with InvalidArgument;
//   - RawJsonValue, on a valid JSON object, finds every top-level key (also
//     one written with escapes) and returns text that parses to the value
//     the JSON parser saw (the last one of a repeated key, as the parser);
//   - an event it accepts survives the export format: stored, printed by
//     EventJsonLine and parsed again, it has the same type, content type,
//     schema version, id, metadata and payload bytes.
#include <cstdint>
#include <string>

#include "codec.h"
#include "event_json.h"
#include "fuzz_util.h"
#include "nlohmann/json.hpp"

namespace rill::fuzz {
namespace {

using Json = nlohmann::json;

void CheckRawValues(absl::string_view line) {
  Json j = Json::parse(line.begin(), line.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return;
  for (const auto& [k, v] : j.items()) {
    std::optional<absl::string_view> raw = tool::RawJsonValue(line, k);
    FUZZ_CHECK(raw.has_value());
    Json again = Json::parse(raw->begin(), raw->end(), nullptr, false);
    FUZZ_CHECK(!again.is_discarded());
    FUZZ_CHECK(again == v);
  }
}

void CheckRoundTrip(const tool::ParsedEvent& parsed) {
  const EventData& in = parsed.event;
  const EventId id = in.id.IsNil() ? EventId::Random() : in.id;
  flatbuffers::FlatBufferBuilder fbb;
  internal::BuildEvent(in, id, internal::EventPlacement{"stream", 0, 1, 1}, &fbb);
  std::string value(internal::EventValueSize(fbb), '\0');
  internal::WriteEventValue(fbb, value.data());
  internal::AlignedBuffer buf;
  const uint8_t* data = buf.Assign(value);
  absl::StatusOr<const schema::EventRecord*> record = internal::DecodeEvent(data, value.size(), 1);
  FUZZ_CHECK(record.ok());
  const std::string line = tool::EventJsonLine(internal::EventViewAccess::Of(*record));
  absl::StatusOr<tool::ParsedEvent> back = tool::ParseEventLine(line);
  FUZZ_CHECK(back.ok());
  const EventData& out = back->event;
  FUZZ_CHECK(out.type == in.type);
  FUZZ_CHECK(out.content_type == in.content_type);
  FUZZ_CHECK(out.schema_version == in.schema_version);
  FUZZ_CHECK(out.id == id);
  FUZZ_CHECK(out.metadata == in.metadata);
  FUZZ_CHECK(out.payload == in.payload);
  FUZZ_CHECK(back->stream == "stream");
}

}  // namespace
}  // namespace rill::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view line(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<rill::tool::ParsedEvent> parsed = rill::tool::ParseEventLine(line);
  if (parsed.ok()) {
    rill::fuzz::CheckRoundTrip(*parsed);
  } else {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
  }
  rill::fuzz::CheckRawValues(line);
  return 0;
}
