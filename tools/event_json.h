// Events as JSON lines (`--json`, export, import) and as human-readable text.
//
// One event per line, fields in this order:
//   {"stream": "order-o-1", "version": 0, "position": 17, "type": "OrderCreated",
//    "id": "8-4-4-4-12 uuid", "time": "2026-11-26T12:00:01.123456Z",
//    "content_type": "json", "schema_version": 1,
//    "metadata": {"correlation_id": "...", "causation_id": "...", "headers": {"k": "v"}},
//    "data": <the payload>}
// `data` is the payload's own JSON text, byte for byte, when the content
// type is json and the payload is valid JSON on one line; otherwise the
// payload in base64, with "data_encoding": "base64" before it. So export
// followed by import reproduces every payload exactly. Empty metadata parts
// are left out; headers repeat a key only as an array of [key, value] pairs.
#ifndef RILL_TOOLS_EVENT_JSON_H_
#define RILL_TOOLS_EVENT_JSON_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "rill/event.h"

namespace rill::tool {

// The JSON line of an event (no newline).
std::string EventJsonLine(const EventView& event);

// A multi-line human-readable rendering: a header line, metadata, and the
// payload (JSON pretty-printed, other payloads as a hex preview).
std::string EventText(const EventView& event);

// An event read from a JSON line (import, `append --file`).
struct ParsedEvent {
  std::string stream;                // empty when the line has none
  std::optional<int64_t> version;    // when the line says
  std::optional<uint64_t> position;  // when the line says
  EventData event;
};

// Parses one line. Required: "type" and "data". Optional: every other field
// above ("time" is ignored: the store records its own commit time).
// InvalidArgument naming the problem (the caller adds the line number).
absl::StatusOr<ParsedEvent> ParseEventLine(absl::string_view line);

// Reads the JSON-lines file at `path` and calls fn(line number, event) for
// each event line, in order (blank lines are skipped). Errors: NotFound when
// the file cannot be opened; InvalidArgument "PATH line N: why" for a line
// that does not parse; Unknown when reading fails; fn's own error, which
// ends the reading.
absl::Status ForEachEventLine(
    const std::string& path,
    absl::FunctionRef<absl::Status(size_t line_number, ParsedEvent event)> fn);

// Parses a --metadata argument: {"correlation_id": ..., "causation_id": ...,
// "headers": {...} or [[k, v], ...]}.
absl::StatusOr<Metadata> ParseMetadataJson(absl::string_view text);

// The raw text of the value of `key` in the top-level JSON object `json`,
// exactly as written (the last one when the key repeats); nullopt when the
// key is absent or `json` is not an object. REQUIRES nothing of `json`: it
// is scanned, not trusted (malformed input gives nullopt).
std::optional<absl::string_view> RawJsonValue(absl::string_view json, absl::string_view key);

}  // namespace rill::tool

#endif  // RILL_TOOLS_EVENT_JSON_H_
