// rill info, rill streams.
#include <filesystem>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common.h"
#include "nlohmann/json.hpp"
#include "rill/projection.h"
#include "rill/projection_admin.h"
#include "rill/replication.h"

namespace rill::tool {
namespace {

using Json = nlohmann::ordered_json;
namespace fs = std::filesystem;

struct InfoArgs {
  std::string store;
  bool clear_stale_readers = false;
  bool json = false;
};

uint64_t DirBytes(const std::string& dir) {
  std::error_code ec;
  uint64_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) total += e.file_size(ec);
  }
  return total;
}

std::string LagText(const ProjectionStatus& p) {
  if (p.lag_events == 0) return "0";
  return absl::StrCat(p.lag_events, " events");
}

int RunInfo(const InfoArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kRead);
  if (!store.ok()) return Fail(store.status());
  unsigned cleared = 0;
  if (args.clear_stale_readers) {
    absl::StatusOr<unsigned> n = (*store)->ClearStaleReaders();
    if (!n.ok()) return Fail(n.status());
    cleared = *n;
  }
  absl::StatusOr<StoreStats> stats = (*store)->Stats();
  if (!stats.ok()) return Fail(stats.status());
  absl::StatusOr<std::vector<ProjectionStatus>> projections = ReadProjectionStatuses(store->get());
  if (!projections.ok()) return Fail(projections.status());
  const uint64_t disk = DirBytes(args.store);
  // A replicated node: what its replica has applied and how far behind
  // JetStream it is.
  absl::StatusOr<ReplicationStatus> repl = GetReplicationStatus(store->get());
  if (!repl.ok() && !absl::IsNotFound(repl.status())) return Fail(repl.status());
  if (args.json) {
    Json j;
    j["store"] = args.store;
    j["format_version"] = stats->format_version;
    j["store_id"] = stats->store_id;
    j["head_position"] = stats->head_position;
    j["streams"] = stats->stream_count;
    j["events"] = stats->event_count;
    j["idempotency_keys"] = stats->idempotency_keys;
    j["disk_bytes"] = disk;
    j["log_file_bytes"] = stats->file_bytes;
    j["log_used_bytes"] = stats->used_bytes;
    j["map_size"] = stats->map_size;
    j["durability"] = "per process; default durable (fsync on commit)";
    j["readers_in_use"] = stats->readers_in_use;
    j["max_readers"] = stats->max_readers;
    j["stale_readers"] = stats->stale_readers;
    j["oldest_reader_lag"] = stats->oldest_reader_lag;
    j["oldest_reader_pid"] = stats->oldest_reader_pid;
    if (args.clear_stale_readers) j["stale_readers_cleared"] = cleared;
    if (repl.ok()) {
      Json r;
      r["stream"] = repl->stream;
      r["applied_sequence"] = repl->applied_sequence;
      r["reachable"] = repl->reachable;
      if (repl->reachable) {
        r["stream_last_sequence"] = repl->stream_last_sequence;
        r["lag"] = repl->lag;
        r["replicas"] = repl->replicas;
        r["leader"] = repl->leader;
      } else {
        r["error"] = repl->error;
      }
      j["replication"] = std::move(r);
    }
    Json ps = Json::array();
    for (const ProjectionStatus& p : *projections) {
      ps.push_back({{"name", p.name},
                    {"version", p.version},
                    {"state", ProjectionStateName(p.state)},
                    {"checkpoint", p.checkpoint},
                    {"lag_events", p.lag_events},
                    {"parked", p.parked}});
    }
    j["projections"] = std::move(ps);
    PrintLine(j.dump(2));
    return kExitOk;
  }
  Table t({"store", args.store});
  t.Add({"format version", absl::StrCat(stats->format_version)});
  t.Add({"store id", stats->store_id});
  t.Add({"head position", absl::StrCat(stats->head_position)});
  t.Add({"streams", absl::StrCat(stats->stream_count)});
  t.Add({"events", absl::StrCat(stats->event_count)});
  t.Add({"idempotency keys", absl::StrCat(stats->idempotency_keys)});
  t.Add({"size on disk", FormatBytes(disk)});
  t.Add({"log file", absl::StrCat(FormatBytes(stats->file_bytes), " (",
                                  FormatBytes(stats->used_bytes), " in use)")});
  t.Add({"map size", FormatBytes(stats->map_size)});
  t.Add({"durability", "per process; default durable (fsync on commit)"});
  t.Add(
      {"reader slots", absl::StrCat(stats->readers_in_use, " of ", stats->max_readers, " in use, ",
                                    stats->stale_readers, " stale (dead processes)")});
  if (stats->oldest_reader_pid != 0) {
    t.Add({"oldest reader",
           absl::StrCat("pid ", stats->oldest_reader_pid, ", ", stats->oldest_reader_lag,
                        " commits behind (pages it sees cannot be reused)")});
  }
  if (args.clear_stale_readers) t.Add({"stale slots cleared", absl::StrCat(cleared)});
  if (repl.ok()) {
    t.Add({"replication", absl::StrCat("JetStream stream ", repl->stream)});
    t.Add({"applied sequence", absl::StrCat(repl->applied_sequence)});
    if (repl->reachable) {
      t.Add({"lag", absl::StrCat(repl->lag, " messages behind JetStream (last sequence ",
                                 repl->stream_last_sequence, ")")});
      t.Add({"stream replicas", absl::StrCat(repl->replicas, ", leader ",
                                             repl->leader.empty() ? "none" : repl->leader)});
    } else {
      t.Add({"lag", absl::StrCat("unknown: ", repl->error)});
    }
  }
  t.Add({"projections", absl::StrCat(projections->size())});
  t.Print();
  if (!projections->empty()) {
    PrintLine("");
    Table pt({"projection", "version", "state", "checkpoint", "lag", "parked"});
    for (const ProjectionStatus& p : *projections) {
      pt.Add({p.name, absl::StrCat(p.version), ProjectionStateName(p.state),
              absl::StrCat(p.checkpoint), LagText(p), absl::StrCat(p.parked)});
    }
    pt.Print();
  }
  return kExitOk;
}

struct StreamsArgs {
  std::string store;
  std::string prefix;
  size_t limit = 0;
  bool json = false;
};

int RunStreams(const StreamsArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kRead);
  if (!store.ok()) return Fail(store.status());
  absl::StatusOr<std::vector<StreamInfo>> streams = (*store)->ListStreams(
      args.prefix, args.limit == 0 ? std::numeric_limits<size_t>::max() : args.limit);
  if (!streams.ok()) return Fail(streams.status());
  if (args.json) {
    Json list = Json::array();
    for (const StreamInfo& s : *streams) {
      list.push_back({{"stream", s.name},
                      {"last_version", s.last_version},
                      {"events", s.event_count},
                      {"first_position", s.first_position},
                      {"last_position", s.last_position},
                      {"last_time", Rfc3339(s.last_recorded_at)}});
    }
    PrintLine(
        Json{{"streams", std::move(list)}}.dump(-1, ' ', false, Json::error_handler_t::replace));
    return kExitOk;
  }
  Table t({"stream", "last version", "events", "last recorded"});
  for (const StreamInfo& s : *streams) {
    t.Add({s.name, absl::StrCat(s.last_version), absl::StrCat(s.event_count),
           TimeText(s.last_recorded_at)});
  }
  t.Print();
  return kExitOk;
}

}  // namespace

void AddInfoCommands(CLI::App& app, Action* action) {
  auto info_args = std::make_shared<InfoArgs>();
  CLI::App* info = app.add_subcommand(
      "info",
      "Format version, store id, head position, streams, events, sizes, map size, "
      "reader slots, and each projection with its lag");
  info->add_option("STORE", info_args->store, "store directory")->required();
  info->add_flag("--json", info_args->json, "one JSON document instead of a table");
  info->add_flag("--clear-stale-readers", info_args->clear_stale_readers,
                 "first free the reader slots of dead processes (safe while the store is in use)");
  info->footer("Example:\n  rill info /var/lib/orders\n  rill info /var/lib/orders --json");
  info->callback([info_args, action] { *action = [info_args] { return RunInfo(*info_args); }; });

  auto streams_args = std::make_shared<StreamsArgs>();
  CLI::App* streams = app.add_subcommand(
      "streams", "Streams by name: last version, event count, last recorded time");
  streams->add_option("STORE", streams_args->store, "store directory")->required();
  streams->add_option("--prefix", streams_args->prefix, "only streams whose names start with P");
  streams->add_option("--limit", streams_args->limit, "at most N streams (0: all)");
  streams->add_flag("--json", streams_args->json, "one JSON document instead of a table");
  streams->footer("Example:\n  rill streams /var/lib/orders --prefix order- --limit 20");
  streams->callback(
      [streams_args, action] { *action = [streams_args] { return RunStreams(*streams_args); }; });
}

}  // namespace rill::tool
