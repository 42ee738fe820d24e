// rill append.
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common.h"
#include "event_json.h"
#include "nlohmann/json.hpp"

namespace rill::tool {
namespace {

using Json = nlohmann::ordered_json;

struct AppendArgs {
  std::string store;
  std::string stream;
  std::string type;
  std::string data;
  std::string file;
  std::string content_type = "json";
  uint32_t schema_version = 1;
  std::string id;
  std::string expected = "any";
  std::string idempotency_key;
  std::string metadata;
  bool json = false;
};

// The one event given by the options.
absl::StatusOr<EventData> EventFromOptions(const AppendArgs& args) {
  if (args.type.empty()) return absl::InvalidArgumentError("--type is required (or --file)");
  EventData e;
  e.type = args.type;
  e.schema_version = args.schema_version;
  absl::StatusOr<ContentType> ct = ParseContentType(args.content_type);
  if (!ct.ok()) return ct.status();
  e.content_type = *ct;
  if (e.content_type == ContentType::kJson) {
    if (!Json::accept(args.data)) {
      return absl::InvalidArgumentError(
          "--data is not valid JSON (use --content-type binary "
          "with base64 data for other payloads)");
    }
    e.payload = args.data;
  } else if (!absl::Base64Unescape(args.data, &e.payload)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--data must be base64 for content type ", args.content_type));
  }
  if (!args.id.empty()) {
    absl::StatusOr<EventId> id = EventId::Parse(args.id);
    if (!id.ok()) return absl::InvalidArgumentError(absl::StrCat("--id: ", id.status().message()));
    e.id = *id;
  }
  if (!args.metadata.empty()) {
    absl::StatusOr<Metadata> m = ParseMetadataJson(args.metadata);
    if (!m.ok())
      return absl::InvalidArgumentError(absl::StrCat("--metadata: ", m.status().message()));
    e.metadata = *std::move(m);
  }
  return e;
}

// The events of --file: one JSON event per line (the fields of `rill
// export`; "stream", when present, must be the STREAM argument).
absl::StatusOr<std::vector<EventData>> EventsFromFile(const AppendArgs& args) {
  std::vector<EventData> events;
  absl::Status s = ForEachEventLine(args.file, [&](size_t n, ParsedEvent e) -> absl::Status {
    if (!e.stream.empty() && e.stream != args.stream) {
      return absl::InvalidArgumentError(absl::StrCat(args.file, " line ", n, ": stream \"",
                                                     e.stream, "\" is not \"", args.stream, "\""));
    }
    events.push_back(std::move(e.event));
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  if (events.empty())
    return absl::InvalidArgumentError(absl::StrCat(args.file, " holds no events"));
  return events;
}

int RunAppend(const AppendArgs& args) {
  absl::StatusOr<ExpectedVersion> expected = ParseExpectedVersion(args.expected);
  if (!expected.ok()) return Fail(expected.status());
  absl::StatusOr<std::vector<EventData>> events;
  if (!args.file.empty()) {
    if (!args.type.empty() || !args.data.empty()) {
      return Fail(absl::InvalidArgumentError("give either --file or --type/--data, not both"));
    }
    events = EventsFromFile(args);
  } else {
    absl::StatusOr<EventData> e = EventFromOptions(args);
    if (!e.ok()) {
      events = e.status();
    } else {
      events = std::vector<EventData>{*std::move(e)};
    }
  }
  if (!events.ok()) return Fail(events.status());
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kCreate);
  if (!store.ok()) return Fail(store.status());
  AppendOptions options;
  options.idempotency_key = args.idempotency_key;
  absl::StatusOr<AppendResult> r = (*store)->Append(args.stream, *expected, *events, options);
  if (!r.ok()) return Fail(r.status());
  if (args.json) {
    Json j{{"stream", r->stream},
           {"first_version", r->first_version},
           {"last_version", r->last_version},
           {"first_position", r->first_position},
           {"last_position", r->last_position},
           {"deduplicated", r->deduplicated}};
    PrintLine(j.dump(-1, ' ', false, Json::error_handler_t::replace));
    return kExitOk;
  }
  const int64_t n = r->last_version - r->first_version + 1;
  PrintLine(absl::StrCat(r->deduplicated ? "deduplicated (nothing written): " : "appended ", n,
                         n == 1 ? " event" : " events", " to ", r->stream, ": versions ",
                         r->first_version, "..", r->last_version, ", positions ", r->first_position,
                         "..", r->last_position));
  return kExitOk;
}

}  // namespace

void AddAppendCommands(CLI::App& app, Action* action) {
  auto a = std::make_shared<AppendArgs>();
  CLI::App* append = app.add_subcommand(
      "append",
      "Append one event (or every line of --file, atomically) to a stream; creates "
      "the store when its directory does not exist");
  append->add_option("STORE", a->store, "store directory")->required();
  append->add_option("STREAM", a->stream, "stream name")->required();
  append->add_option("--type", a->type, "event type, e.g. OrderCreated");
  append->add_option("--data", a->data, "payload: JSON (or base64 with --content-type binary)");
  append->add_option("--file", a->file,
                     "one JSON event per line ({\"type\":...,\"data\":...}), appended together");
  append->add_option("--content-type", a->content_type, "json (default), binary or flatbuffers");
  append->add_option("--schema-version", a->schema_version, "the payload's schema version (1)");
  append->add_option("--id", a->id, "event id (UUID; default: a random one)");
  append->add_option("--expected-version", a->expected,
                     "any (default), no-stream, exists, or the stream's current last version N");
  append->add_option("--idempotency-key", a->idempotency_key,
                     "a retry with the same key and request writes nothing and returns the "
                     "first result");
  append->add_option("--metadata", a->metadata,
                     "JSON: {\"correlation_id\":..,\"causation_id\":..,\"headers\":{..}}");
  append->add_flag("--json", a->json, "print the result as JSON (with \"deduplicated\")");
  append->footer(
      "Examples:\n"
      "  rill append /var/lib/orders order-o-1 --type OrderCreated --data '{\"total\":12}' \\\n"
      "      --expected-version no-stream --idempotency-key req-17\n"
      "  rill append /var/lib/orders order-o-1 --file events.jsonl --expected-version 0");
  append->callback([a, action] { *action = [a] { return RunAppend(*a); }; });
}

}  // namespace rill::tool
