#include "event_json.h"

#include <fstream>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common.h"
#include "nlohmann/json.hpp"

namespace rill::tool {
namespace {

using Json = nlohmann::ordered_json;
constexpr size_t kNpos = absl::string_view::npos;

std::string Dump(const Json& j, int indent = -1) {
  return j.dump(indent, ' ', false, Json::error_handler_t::replace);
}

// --- A scanner for the raw text of one value (RawJsonValue) ---

size_t SkipWs(absl::string_view s, size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return i;
}

// s[i] is '"'; returns the index after the closing quote.
size_t SkipString(absl::string_view s, size_t i) {
  for (++i; i < s.size();) {
    if (s[i] == '\\') {
      i += 2;
    } else if (s[i] == '"') {
      return i + 1;
    } else {
      ++i;
    }
  }
  return kNpos;
}

size_t SkipValue(absl::string_view s, size_t i) {
  if (i >= s.size()) return kNpos;
  if (s[i] == '"') return SkipString(s, i);
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    while (i < s.size()) {
      const char c = s[i];
      if (c == '"') {
        i = SkipString(s, i);
        if (i == kNpos) return kNpos;
        continue;
      }
      if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        return i + 1;
      }
      ++i;
    }
    return kNpos;
  }
  size_t j = i;
  while (j < s.size() && s[j] != ',' && s[j] != '}' && s[j] != ']' && s[j] != ' ' && s[j] != '\t' &&
         s[j] != '\n' && s[j] != '\r') {
    ++j;
  }
  return j == i ? kNpos : j;
}

// --- Metadata ---

absl::StatusOr<std::string> StringField(const Json& j, absl::string_view what) {
  if (!j.is_string()) return absl::InvalidArgumentError(absl::StrCat(what, " must be a string"));
  return j.get<std::string>();
}

absl::StatusOr<Metadata> MetadataFromJson(const Json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("metadata must be a JSON object");
  Metadata m;
  for (const auto& [key, value] : j.items()) {
    if (key == "correlation_id" || key == "causation_id") {
      absl::StatusOr<std::string> s = StringField(value, absl::StrCat("metadata.", key));
      if (!s.ok()) return s.status();
      (key == "correlation_id" ? m.correlation_id : m.causation_id) = *std::move(s);
    } else if (key == "headers") {
      if (value.is_object()) {
        for (const auto& [k, v] : value.items()) {
          absl::StatusOr<std::string> s = StringField(v, absl::StrCat("metadata.headers.", k));
          if (!s.ok()) return s.status();
          m.headers.emplace_back(k, *std::move(s));
        }
      } else if (value.is_array()) {
        for (const Json& pair : value) {
          if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string() ||
              !pair[1].is_string()) {
            return absl::InvalidArgumentError(
                "metadata.headers as an array must hold [key, value] string pairs");
          }
          m.headers.emplace_back(pair[0].get<std::string>(), pair[1].get<std::string>());
        }
      } else {
        return absl::InvalidArgumentError("metadata.headers must be an object or an array");
      }
    } else {
      // Free-form metadata, as most event stores take it: any other key is
      // a header, a string value as it is, any other value as its JSON text.
      m.headers.emplace_back(key, value.is_string() ? value.get<std::string>() : value.dump());
    }
  }
  return m;
}

Json MetadataToJson(const EventView& e) {
  Json m = Json::object();
  if (!e.correlation_id().empty()) m["correlation_id"] = std::string(e.correlation_id());
  if (!e.causation_id().empty()) m["causation_id"] = std::string(e.causation_id());
  std::vector<std::pair<std::string, std::string>> headers = e.headers();
  if (!headers.empty()) {
    absl::flat_hash_set<std::string> keys;
    bool repeats = false;
    for (const auto& h : headers) repeats |= !keys.insert(h.first).second;
    Json hs = repeats ? Json::array() : Json::object();
    for (auto& [k, v] : headers) {
      if (repeats) {
        hs.push_back(Json::array({k, v}));
      } else {
        hs[k] = v;
      }
    }
    m["headers"] = std::move(hs);
  }
  return m;
}

// A payload that can stand in a JSON line as itself.
bool IsOneLineJson(absl::string_view payload) {
  if (payload.find_first_of("\n\r") != kNpos) return false;
  return Json::accept(payload.begin(), payload.end());
}

template <typename T>
absl::StatusOr<T> IntField(const Json& j, absl::string_view what, T min) {
  if (j.is_number_unsigned()) {
    const uint64_t v = j.get<uint64_t>();
    if (v <= static_cast<uint64_t>(std::numeric_limits<T>::max()) && static_cast<T>(v) >= min) {
      return static_cast<T>(v);
    }
  } else if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v >= 0 &&
        static_cast<uint64_t>(v) <= static_cast<uint64_t>(std::numeric_limits<T>::max()) &&
        static_cast<T>(v) >= min) {
      return static_cast<T>(v);
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat(what, " must be an integer from ", min, " to ", std::numeric_limits<T>::max()));
}

}  // namespace

std::optional<absl::string_view> RawJsonValue(absl::string_view json, absl::string_view key) {
  size_t i = SkipWs(json, 0);
  if (i >= json.size() || json[i] != '{') return std::nullopt;
  i = SkipWs(json, i + 1);
  if (i < json.size() && json[i] == '}') return std::nullopt;
  std::optional<absl::string_view> found;
  while (i < json.size()) {
    if (json[i] != '"') return std::nullopt;
    const size_t key_end = SkipString(json, i);
    if (key_end == kNpos) return std::nullopt;
    const absl::string_view k = json.substr(i + 1, key_end - i - 2);
    // A key written with escapes ("d\u0061ta", "d\/ta") is compared as
    // the JSON parser reads it.
    bool match = k == key;
    if (!match && k.find('\\') != absl::string_view::npos) {
      const absl::string_view quoted = json.substr(i, key_end - i);
      Json decoded = Json::parse(quoted.begin(), quoted.end(), nullptr, false);
      match = decoded.is_string() && decoded.get_ref<const std::string&>() == key;
    }
    i = SkipWs(json, key_end);
    if (i >= json.size() || json[i] != ':') return std::nullopt;
    i = SkipWs(json, i + 1);
    const size_t value_end = SkipValue(json, i);
    if (value_end == kNpos) return std::nullopt;
    if (match) found = json.substr(i, value_end - i);
    i = SkipWs(json, value_end);
    if (i >= json.size()) return std::nullopt;
    if (json[i] == '}') return found;
    if (json[i] != ',') return std::nullopt;
    i = SkipWs(json, i + 1);
  }
  return std::nullopt;
}

std::string EventJsonLine(const EventView& e) {
  Json j;
  j["stream"] = std::string(e.stream());
  j["version"] = e.version();
  j["position"] = e.position();
  j["type"] = std::string(e.type());
  j["id"] = e.id().ToString();
  j["time"] = Rfc3339(e.recorded_at());
  j["content_type"] = std::string(ContentTypeName(e.content_type()));
  j["schema_version"] = e.schema_version();
  j["metadata"] = MetadataToJson(e);
  const absl::string_view payload = e.payload();
  const bool inline_json = e.content_type() == ContentType::kJson && IsOneLineJson(payload);
  if (!inline_json) j["data_encoding"] = "base64";
  std::string line = Dump(j);
  line.pop_back();  // the closing brace
  absl::StrAppend(&line, ",\"data\":");
  if (inline_json) {
    line.append(payload.data(), payload.size());
  } else {
    absl::StrAppend(&line, "\"", absl::Base64Escape(payload), "\"");
  }
  line.push_back('}');
  return line;
}

std::string EventText(const EventView& e) {
  std::string out = absl::StrFormat("#%d  %s @ %d  %s  %s", e.position(), e.stream(), e.version(),
                                    e.type(), TimeText(e.recorded_at()));
  absl::StrAppend(&out, "\n  id ", e.id().ToString(), "  ", ContentTypeName(e.content_type()),
                  " schema ", e.schema_version());
  if (!e.correlation_id().empty()) absl::StrAppend(&out, "  correlation ", e.correlation_id());
  if (!e.causation_id().empty()) absl::StrAppend(&out, "  causation ", e.causation_id());
  for (const auto& [k, v] : e.headers()) absl::StrAppend(&out, "  ", k, "=", v);
  const absl::string_view payload = e.payload();
  if (e.content_type() == ContentType::kJson) {
    Json parsed = Json::parse(payload.begin(), payload.end(), nullptr, false);
    if (!parsed.is_discarded()) {
      std::string pretty = Dump(parsed, 2);
      size_t pos = 0;
      while ((pos = pretty.find('\n', pos)) != std::string::npos) pretty.insert(++pos, "  ");
      absl::StrAppend(&out, "\n  ", pretty);
      return out;
    }
  }
  constexpr size_t kPreview = 32;
  absl::StrAppend(&out, "\n  (", payload.size(), " bytes)");
  for (size_t i = 0; i < payload.size() && i < kPreview; ++i) {
    absl::StrAppend(&out, absl::StrFormat(" %02x", static_cast<uint8_t>(payload[i])));
  }
  if (payload.size() > kPreview) absl::StrAppend(&out, " ...");
  return out;
}

absl::Status ForEachEventLine(
    const std::string& path,
    absl::FunctionRef<absl::Status(size_t line_number, ParsedEvent event)> fn) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::string line;
  for (size_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    absl::StatusOr<ParsedEvent> e = ParseEventLine(line);
    if (!e.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " line ", n, ": ", e.status().message()));
    }
    if (absl::Status s = fn(n, *std::move(e)); !s.ok()) return s;
  }
  if (in.bad()) return absl::UnknownError(absl::StrCat("cannot read ", path));
  return absl::OkStatus();
}

absl::StatusOr<Metadata> ParseMetadataJson(absl::string_view text) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError("metadata is not valid JSON");
  return MetadataFromJson(j);
}

absl::StatusOr<ParsedEvent> ParseEventLine(absl::string_view line) {
  Json j = Json::parse(line.begin(), line.end(), nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("not a JSON object");
  ParsedEvent out;
  EventData& ev = out.event;
  bool has_type = false, has_data = false, base64 = false;
  for (const auto& [key, value] : j.items()) {
    if (key == "stream") {
      absl::StatusOr<std::string> s = StringField(value, "stream");
      if (!s.ok()) return s.status();
      out.stream = *std::move(s);
    } else if (key == "version") {
      absl::StatusOr<int64_t> v = IntField<int64_t>(value, "version", 0);
      if (!v.ok()) return v.status();
      out.version = *v;
    } else if (key == "position") {
      absl::StatusOr<uint64_t> v = IntField<uint64_t>(value, "position", 1);
      if (!v.ok()) return v.status();
      out.position = *v;
    } else if (key == "type") {
      absl::StatusOr<std::string> s = StringField(value, "type");
      if (!s.ok()) return s.status();
      ev.type = *std::move(s);
      has_type = true;
    } else if (key == "id") {
      absl::StatusOr<std::string> s = StringField(value, "id");
      if (!s.ok()) return s.status();
      absl::StatusOr<EventId> id = EventId::Parse(*s);
      if (!id.ok()) return absl::InvalidArgumentError(absl::StrCat("id: ", id.status().message()));
      ev.id = *id;
    } else if (key == "time") {
      // The store records its own commit time.
    } else if (key == "content_type") {
      absl::StatusOr<std::string> s = StringField(value, "content_type");
      if (!s.ok()) return s.status();
      absl::StatusOr<ContentType> t = ParseContentType(*s);
      if (!t.ok()) return t.status();
      ev.content_type = *t;
    } else if (key == "schema_version") {
      absl::StatusOr<uint32_t> v = IntField<uint32_t>(value, "schema_version", 0);
      if (!v.ok()) return v.status();
      ev.schema_version = *v;
    } else if (key == "metadata") {
      absl::StatusOr<Metadata> m = MetadataFromJson(value);
      if (!m.ok()) return m.status();
      ev.metadata = *std::move(m);
    } else if (key == "data_encoding") {
      if (value != "base64" && value != "json") {
        return absl::InvalidArgumentError("data_encoding must be \"base64\" or \"json\"");
      }
      base64 = value == "base64";
    } else if (key == "data") {
      has_data = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown field \"", key, "\""));
    }
  }
  if (!has_type) return absl::InvalidArgumentError("the field \"type\" is missing");
  if (!has_data) return absl::InvalidArgumentError("the field \"data\" is missing");
  if (base64) {
    const Json& data = j["data"];
    if (!data.is_string() ||
        !absl::Base64Unescape(data.get_ref<const std::string&>(), &ev.payload)) {
      return absl::InvalidArgumentError("data is not a base64 string (data_encoding is base64)");
    }
  } else {
    if (ev.content_type != ContentType::kJson) {
      return absl::InvalidArgumentError(
          absl::StrCat("content_type ", ContentTypeName(ev.content_type),
                       " needs its data in base64 (\"data_encoding\": \"base64\")"));
    }
    std::optional<absl::string_view> raw = RawJsonValue(line, "data");
    if (!raw.has_value()) {
      return absl::InvalidArgumentError("the field \"data\" could not be read as written");
    }
    ev.payload = std::string(*raw);
  }
  return out;
}

}  // namespace rill::tool
