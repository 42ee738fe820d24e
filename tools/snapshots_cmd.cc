// rill snapshots, rill snapshots prune.
#include <filesystem>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common.h"
#include "nlohmann/json.hpp"
#include "rill/snapshot.h"

namespace rill::tool {
namespace {

using Json = nlohmann::ordered_json;

struct SnapArgs {
  std::string store;
  std::string stream;
  int keep = -1;
  bool json = false;
};

int RunList(const SnapArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kRead);
  if (!store.ok()) return Fail(store.status());
  absl::StatusOr<std::unique_ptr<SnapshotStore>> snaps = SnapshotStore::Open(store->get());
  if (!snaps.ok()) return Fail(snaps.status());
  absl::StatusOr<std::vector<Snapshot>> list = (*snaps)->List(args.stream);
  if (!list.ok()) return Fail(list.status());
  if (args.json) {
    Json out = Json::array();
    for (const Snapshot& s : *list) {
      out.push_back({{"stream", s.stream},
                     {"version", s.version},
                     {"schema_version", s.schema_version},
                     {"bytes", s.data.size()},
                     {"taken_at", Rfc3339(s.taken_at)}});
    }
    PrintLine(
        Json{{"snapshots", std::move(out)}}.dump(-1, ' ', false, Json::error_handler_t::replace));
    return kExitOk;
  }
  if (list->empty()) {
    PrintLine(args.stream.empty() ? "no snapshots"
                                  : absl::StrCat("no snapshots of \"", args.stream, "\""));
    return kExitOk;
  }
  Table t({"stream", "version", "schema", "bytes", "taken at"});
  for (const Snapshot& s : *list) {
    t.Add({s.stream, absl::StrCat(s.version), absl::StrCat(s.schema_version),
           absl::StrCat(s.data.size()), TimeText(s.taken_at)});
  }
  t.Print();
  return kExitOk;
}

int RunPrune(const SnapArgs& args) {
  if (args.keep < 1) {
    return Fail(absl::InvalidArgumentError("--keep must be at least 1"));
  }
  // A store without derived data has no snapshots: nothing to open (and
  // nothing to create) for writing.
  std::error_code ec;
  const bool has_derived = std::filesystem::exists(args.store + "/derived/data.mdb", ec);
  absl::StatusOr<std::unique_ptr<Store>> store =
      OpenStore(args.store, has_derived ? OpenMode::kWrite : OpenMode::kRead);
  if (!store.ok()) return Fail(store.status());
  absl::StatusOr<size_t> deleted = size_t{0};
  if (has_derived) {
    absl::StatusOr<std::unique_ptr<SnapshotStore>> snaps = SnapshotStore::Open(store->get());
    if (!snaps.ok()) return Fail(snaps.status());
    deleted = (*snaps)->Prune(args.stream, args.keep);
  }
  if (!deleted.ok()) return Fail(deleted.status());
  if (args.json) {
    PrintLine(Json{{"deleted", *deleted}, {"keep", args.keep}}.dump());
  } else {
    PrintLine(absl::StrCat("deleted ", Count(*deleted, "snapshot"), "; kept the newest ", args.keep,
                           " of ", args.stream.empty() ? "each stream" : args.stream));
  }
  return kExitOk;
}

}  // namespace

void AddSnapshotCommands(CLI::App& app, Action* action) {
  auto list = std::make_shared<SnapArgs>();
  CLI::App* snaps = app.add_subcommand("snapshots", "List snapshots (of one stream, or all)");
  snaps->add_option("STORE", list->store, "store directory");
  snaps->add_option("STREAM", list->stream, "only this stream's snapshots");
  snaps->add_flag("--json", list->json, "one JSON document");
  snaps->require_subcommand(0, 1);
  snaps->footer(
      "Examples:\n  rill snapshots /var/lib/orders\n"
      "  rill snapshots /var/lib/orders order-o-1\n"
      "  rill snapshots prune /var/lib/orders --keep 2");

  auto prune = std::make_shared<SnapArgs>();
  CLI::App* pr = snaps->add_subcommand(
      "prune", "Delete all but the newest K snapshots of each stream (or of --stream)");
  pr->add_option("STORE", prune->store, "store directory")->required();
  pr->add_option("--keep", prune->keep, "snapshots to keep per stream (>= 1)")->required();
  pr->add_option("--stream", prune->stream, "only this stream");
  pr->add_flag("--json", prune->json, "print the result as JSON");
  pr->callback([prune, action] { *action = [prune] { return RunPrune(*prune); }; });

  snaps->callback([snaps, list, action] {
    if (!snaps->get_subcommands().empty()) return;
    if (list->store.empty()) throw CLI::RequiredError("STORE");
    *action = [list] { return RunList(*list); };
  });
}

}  // namespace rill::tool
