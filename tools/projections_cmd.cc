// rill projections [rebuild|reset|parked|retry|drop].
//
// Projections run the service's code, which the tool does not have. So a
// rebuild either asks the running service (a request record its runner
// picks up) or, given --plugin, runs the service's definitions in this
// process; retrying a parked event needs the code too (--plugin). Status,
// reset, listing and dropping dead letters need no code.
#include <dlfcn.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common.h"
#include "nlohmann/json.hpp"
#include "rill/projection.h"
#include "rill/projection_admin.h"
#include "rill/projection_plugin.h"

namespace rill::tool {
namespace {

using Json = nlohmann::ordered_json;

struct ProjArgs {
  std::string store;
  std::string name;
  std::string plugin;
  uint64_t position = 0;
  bool all = false;
  bool no_wait = false;
  double timeout_s = 0;  // 0: no limit
  bool json = false;
};

std::string Lag(const ProjectionStatus& p) { return absl::StrCat(p.lag_events); }

int RunStatus(const ProjArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kRead);
  if (!store.ok()) return Fail(store.status());
  absl::StatusOr<std::vector<ProjectionStatus>> all = ReadProjectionStatuses(store->get());
  if (!all.ok()) return Fail(all.status());
  if (args.json) {
    Json list = Json::array();
    for (const ProjectionStatus& p : *all) {
      Json j{{"name", p.name},
             {"version", p.version},
             {"generation", p.generation},
             {"state", ProjectionStateName(p.state)},
             {"checkpoint", p.checkpoint},
             {"head", p.head},
             {"lag_events", p.lag_events},
             {"parked", p.parked}};
      if (p.rebuild_version != 0) {
        j["rebuild_version"] = p.rebuild_version;
        j["rebuild_checkpoint"] = p.rebuild_checkpoint;
      }
      list.push_back(std::move(j));
    }
    PrintLine(Json{{"projections", std::move(list)}}.dump());
    return kExitOk;
  }
  if (all->empty()) {
    PrintLine("no projections have run on this store");
    return kExitOk;
  }
  Table t({"projection", "version", "state", "checkpoint", "head", "lag", "parked", "rebuild"});
  for (const ProjectionStatus& p : *all) {
    t.Add({p.name, absl::StrCat(p.version), ProjectionStateName(p.state),
           absl::StrCat(p.checkpoint), absl::StrCat(p.head), Lag(p), absl::StrCat(p.parked),
           p.rebuild_version == 0
               ? "-"
               : absl::StrCat("v", p.rebuild_version, " at ", p.rebuild_checkpoint)});
  }
  t.Print();
  return kExitOk;
}

absl::StatusOr<std::optional<ProjectionStatus>> FindStatus(Store* store, absl::string_view name) {
  absl::StatusOr<std::vector<ProjectionStatus>> all = ReadProjectionStatuses(store);
  if (!all.ok()) return all.status();
  for (ProjectionStatus& p : *all) {
    if (p.name == name) return std::optional<ProjectionStatus>(std::move(p));
  }
  return std::optional<ProjectionStatus>();
}

// The plugin's definition of `name`. The library stays loaded (its code
// runs in the definitions' functions).
absl::StatusOr<ProjectionDef> LoadDef(const std::string& plugin, absl::string_view name) {
  void* lib = dlopen(plugin.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot load plugin ", plugin, ": ", dlerror()));
  }
  auto fn = reinterpret_cast<ProjectionPluginFn>(dlsym(lib, kProjectionPluginSymbol));
  if (fn == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(plugin, " defines no ", kProjectionPluginSymbol, " (see docs/admin.md)"));
  }
  std::vector<ProjectionDef> defs;
  fn(&defs);
  for (ProjectionDef& d : defs) {
    if (d.name == name) return std::move(d);
  }
  return absl::NotFoundError(
      absl::StrCat("plugin ", plugin, " defines no projection \"", name, "\""));
}

// Waits until the serving generation is no longer `from_generation`, no
// rebuild is under way and the model reflects the log up to `target` (the
// head when the rebuild was asked for). `status` reads the current status.
int WaitForSwap(const ProjArgs& args, uint64_t from_generation, uint64_t target,
                const std::function<absl::StatusOr<std::optional<ProjectionStatus>>()>& status,
                const std::function<absl::StatusOr<bool>()>& still_running) {
  Progress progress(absl::StrCat("rebuild ", args.name), 0);
  const absl::Time deadline =
      args.timeout_s > 0 ? absl::Now() + absl::Seconds(args.timeout_s) : absl::InfiniteFuture();
  for (;;) {
    absl::StatusOr<std::optional<ProjectionStatus>> st = status();
    if (!st.ok()) return Fail(st.status());
    if (st->has_value()) {
      const ProjectionStatus& p = **st;
      if (p.state == ProjectionState::kFailed) {
        return Fail(absl::UnknownError(absl::StrCat("projection \"", args.name,
                                                    "\" failed while rebuilding: ", p.last_error)),
                    "fix the projection, then rebuild again");
      }
      if (p.generation != from_generation && p.state != ProjectionState::kRebuilding &&
          p.rebuild_version == 0 && p.checkpoint >= target) {
        progress.Update(p.head);
        PrintLine(absl::StrCat("rebuilt \"", args.name, "\" (version ", p.version,
                               "): serving generation ", p.generation, ", checkpoint ",
                               p.checkpoint, " of head ", p.head));
        return kExitOk;
      }
      progress.SetTotal(p.head);
      progress.Update(p.rebuild_checkpoint);
    }
    absl::StatusOr<bool> running = still_running();
    if (!running.ok()) return Fail(running.status());
    if (!*running) {
      return Fail(absl::UnavailableError(absl::StrCat("the runner of \"", args.name,
                                                      "\" stopped before the rebuild finished")),
                  "the rebuild resumes when the projection runs again");
    }
    if (absl::Now() > deadline) {
      return Fail(absl::DeadlineExceededError(absl::StrCat("the rebuild of \"", args.name,
                                                           "\" did not finish within --timeout")),
                  "it goes on in the service; `rill projections STORE` shows its progress");
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

int RunRebuild(const ProjArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kWrite);
  if (!store.ok()) return Fail(store.status());
  Store* s = store->get();
  absl::StatusOr<std::optional<ProjectionStatus>> before = FindStatus(s, args.name);
  if (!before.ok()) return Fail(before.status());
  const uint64_t from_generation = before->has_value() ? (*before)->generation : 0;
  absl::StatusOr<bool> running = ProjectionIsRunning(s, args.name);
  if (!running.ok()) return Fail(running.status());
  absl::StatusOr<uint64_t> target = s->HeadPosition();
  if (!target.ok()) return Fail(target.status());

  if (!*running && !args.plugin.empty()) {
    absl::StatusOr<ProjectionDef> def = LoadDef(args.plugin, args.name);
    if (!def.ok()) return Fail(def.status());
    absl::StatusOr<std::unique_ptr<ProjectionRunner>> runner =
        ProjectionRunner::Start(s, {*std::move(def)});
    if (!runner.ok()) return Fail(runner.status());
    // A projection the store has never seen is simply built from position 1.
    if (before->has_value()) {
      if (absl::Status r = (*runner)->Rebuild(args.name); !r.ok()) return Fail(r);
    }
    PrintLine(absl::StrCat("rebuilding \"", args.name, "\" in this process (", args.plugin, ")"));
    ProjectionRunner* r = runner->get();
    int code = WaitForSwap(
        args, from_generation, *target,
        [&]() -> absl::StatusOr<std::optional<ProjectionStatus>> {
          absl::StatusOr<ProjectionStatus> st = r->Status(args.name);
          if (!st.ok()) return st.status();
          return std::optional<ProjectionStatus>(*std::move(st));
        },
        []() -> absl::StatusOr<bool> { return true; });
    r->Stop();
    return code;
  }
  if (!before->has_value()) {
    return Fail(
        absl::NotFoundError(absl::StrCat("the store has no projection \"", args.name, "\"")),
        "`rill projections STORE` lists them; a projection that never ran needs --plugin");
  }
  if (absl::Status r = RequestRebuild(s, args.name); !r.ok()) return Fail(r);
  if (!*running) {
    PrintLine(absl::StrCat("recorded a rebuild request for \"", args.name,
                           "\"; no process runs it now, so it starts when its runner starts "
                           "(or pass --plugin LIB.so to rebuild here)"));
    return kExitOk;
  }
  PrintLine(absl::StrCat("asked the running service to rebuild \"", args.name, "\""));
  if (args.no_wait) return kExitOk;
  return WaitForSwap(
      args, from_generation, *target, [&] { return FindStatus(s, args.name); },
      [&] { return ProjectionIsRunning(s, args.name); });
}

int RunReset(const ProjArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kWrite);
  if (!store.ok()) return Fail(store.status());
  if (absl::Status s = ResetProjection(store->get(), args.name); !s.ok()) return Fail(s);
  PrintLine(absl::StrCat("reset \"", args.name,
                         "\": its model, checkpoint and dead letters are gone; it is built "
                         "from position 1 when it next runs"));
  return kExitOk;
}

int RunParked(const ProjArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kRead);
  if (!store.ok()) return Fail(store.status());
  absl::StatusOr<std::vector<ParkedEvent>> parked = ReadParkedEvents(store->get(), args.name);
  if (!parked.ok()) return Fail(parked.status());
  if (args.json) {
    Json list = Json::array();
    for (const ParkedEvent& p : *parked) {
      list.push_back({{"position", p.position},
                      {"stream", p.stream},
                      {"type", p.type},
                      {"attempts", p.attempts},
                      {"parked_at", Rfc3339(p.parked_at)},
                      {"error", p.error}});
    }
    PrintLine(Json{{"projection", args.name}, {"parked", std::move(list)}}.dump(
        -1, ' ', false, Json::error_handler_t::replace));
    return kExitOk;
  }
  if (parked->empty()) {
    PrintLine(absl::StrCat("\"", args.name, "\" has no parked events"));
    return kExitOk;
  }
  Table t({"position", "stream", "type", "attempts", "parked at", "error"});
  for (const ParkedEvent& p : *parked) {
    t.Add({absl::StrCat(p.position), p.stream, p.type, absl::StrCat(p.attempts),
           TimeText(p.parked_at), p.error});
  }
  t.Print();
  return kExitOk;
}

// The positions that retry/drop work on: POSITION, or every parked event.
absl::StatusOr<std::vector<uint64_t>> Targets(Store* store, const ProjArgs& args) {
  if (args.all == (args.position != 0)) {
    return absl::InvalidArgumentError("give either a POSITION or --all");
  }
  if (!args.all) return std::vector<uint64_t>{args.position};
  absl::StatusOr<std::vector<ParkedEvent>> parked = ReadParkedEvents(store, args.name);
  if (!parked.ok()) return parked.status();
  std::vector<uint64_t> out;
  for (const ParkedEvent& p : *parked) out.push_back(p.position);
  return out;
}

int RunDrop(const ProjArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kWrite);
  if (!store.ok()) return Fail(store.status());
  absl::StatusOr<std::vector<uint64_t>> targets = Targets(store->get(), args);
  if (!targets.ok()) return Fail(targets.status());
  for (uint64_t pos : *targets) {
    if (absl::Status s = DropParkedEvent(store->get(), args.name, pos); !s.ok()) return Fail(s);
  }
  PrintLine(
      absl::StrCat("dropped ", Count(targets->size(), "parked event"), " of \"", args.name, "\""));
  return kExitOk;
}

// Retry through the service that runs the projection: one request record per
// event, then wait until each is gone from the dead letters (applied) or has
// one more attempt (failed again).
int RetryThroughService(Store* store, const ProjArgs& args, const std::vector<uint64_t>& targets) {
  absl::StatusOr<std::vector<ParkedEvent>> before = ReadParkedEvents(store, args.name);
  if (!before.ok()) return Fail(before.status());
  absl::flat_hash_map<uint64_t, int> attempts;
  for (const ParkedEvent& p : *before) attempts[p.position] = p.attempts;
  for (uint64_t pos : targets) {
    if (absl::Status s = RequestRetryParked(store, args.name, pos); !s.ok()) return Fail(s);
  }
  PrintLine(absl::StrCat("asked the running service to retry ",
                         Count(targets.size(), "parked event"), " of \"", args.name, "\""));
  const absl::Time deadline = absl::Now() + absl::Seconds(args.timeout_s > 0 ? args.timeout_s : 60);
  Progress progress(absl::StrCat("retry ", args.name), targets.size());
  for (;;) {
    absl::StatusOr<std::vector<ParkedEvent>> now = ReadParkedEvents(store, args.name);
    if (!now.ok()) return Fail(now.status());
    absl::flat_hash_map<uint64_t, const ParkedEvent*> parked;
    for (const ParkedEvent& p : *now) parked[p.position] = &p;
    size_t applied = 0, failed = 0;
    std::string first_error;
    for (uint64_t pos : targets) {
      auto it = parked.find(pos);
      if (it == parked.end()) {
        ++applied;
      } else if (it->second->attempts > attempts[pos]) {
        ++failed;
        if (first_error.empty())
          first_error = absl::StrCat("position ", pos, ": ", it->second->error);
      }
    }
    progress.Update(applied + failed);
    if (applied + failed == targets.size()) {
      PrintLine(absl::StrCat("retried ", applied, " of ", Count(targets.size(), "parked event"),
                             " of \"", args.name, "\""));
      if (failed > 0) return Fail(absl::UnknownError(first_error), "the event stays parked");
      return kExitOk;
    }
    absl::StatusOr<bool> running = ProjectionIsRunning(store, args.name);
    if (!running.ok()) return Fail(running.status());
    if (!*running) {
      return Fail(absl::UnavailableError(absl::StrCat("the runner of \"", args.name,
                                                      "\" stopped before every retry ran")),
                  "the requests stay recorded and run when it runs again");
    }
    if (absl::Now() > deadline) {
      return Fail(absl::DeadlineExceededError("the service did not answer every retry in time"),
                  "the requests stay recorded; `rill projections parked` shows the outcome");
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
}

int RunRetry(const ProjArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kWrite);
  if (!store.ok()) return Fail(store.status());
  absl::StatusOr<std::vector<uint64_t>> targets = Targets(store->get(), args);
  if (!targets.ok()) return Fail(targets.status());
  absl::StatusOr<bool> running = ProjectionIsRunning(store->get(), args.name);
  if (!running.ok()) return Fail(running.status());
  if (*running) return RetryThroughService(store->get(), args, *targets);
  if (args.plugin.empty()) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
                    "no process runs \"", args.name,
                    "\", and a retry runs the projection's code: pass --plugin LIB.so")),
                "or retry while the service runs it");
  }
  absl::StatusOr<ProjectionDef> def = LoadDef(args.plugin, args.name);
  if (!def.ok()) return Fail(def.status());
  absl::StatusOr<std::unique_ptr<ProjectionRunner>> runner =
      ProjectionRunner::Start(store->get(), {*std::move(def)});
  if (!runner.ok()) return Fail(runner.status());
  size_t retried = 0;
  absl::Status first_error;
  for (uint64_t pos : *targets) {
    absl::Status s = (*runner)->RetryParked(args.name, pos);
    if (s.ok()) {
      ++retried;
    } else if (first_error.ok()) {
      // The projection's own error (its code says nothing about this tool's
      // usage), or NotFound when the event is no longer parked.
      const absl::StatusCode code = s.code() == absl::StatusCode::kNotFound
                                        ? absl::StatusCode::kNotFound
                                        : absl::StatusCode::kUnknown;
      first_error = absl::Status(code, absl::StrCat("position ", pos, ": ", s.message()));
    }
  }
  (*runner)->Stop();
  PrintLine(absl::StrCat("retried ", retried, " of ", Count(targets->size(), "parked event"),
                         " of \"", args.name, "\""));
  if (!first_error.ok()) return Fail(first_error, "the event stays parked");
  return kExitOk;
}

CLI::App* AddNamed(CLI::App* parent, const std::string& name, const std::string& what,
                   const std::shared_ptr<ProjArgs>& args) {
  CLI::App* sub = parent->add_subcommand(name, what);
  sub->add_option("STORE", args->store, "store directory")->required();
  sub->add_option("NAME", args->name, "projection name")->required();
  return sub;
}

}  // namespace

void AddProjectionCommands(CLI::App& app, Action* action) {
  auto status = std::make_shared<ProjArgs>();
  CLI::App* proj =
      app.add_subcommand("projections",
                         "Status of each projection (version, state, checkpoint, lag, parked), and "
                         "rebuild, reset and dead-letter commands");
  proj->add_option("STORE", status->store, "store directory");
  proj->add_flag("--json", status->json, "one JSON document");
  proj->require_subcommand(0, 1);
  proj->footer(
      "Examples:\n"
      "  rill projections /var/lib/orders\n"
      "  rill projections rebuild /var/lib/orders order_summary\n"
      "  rill projections rebuild /var/lib/orders order_summary --plugin ./libprojections.so\n"
      "  rill projections parked /var/lib/orders payments\n"
      "  rill projections drop /var/lib/orders payments 1734");

  auto rebuild = std::make_shared<ProjArgs>();
  CLI::App* rb = AddNamed(proj, "rebuild",
                          "Blue/green rebuild: asks the running service (and waits, with "
                          "progress), or runs it here with --plugin",
                          rebuild);
  rb->add_option("--plugin", rebuild->plugin,
                 "shared library defining rill_register_projections (used when no process "
                 "runs the projection)");
  rb->add_flag("--no-wait", rebuild->no_wait, "only record the request");
  rb->add_option("--timeout", rebuild->timeout_s, "give up waiting after S seconds (0: never)");
  rb->callback([rebuild, action] { *action = [rebuild] { return RunRebuild(*rebuild); }; });

  auto reset = std::make_shared<ProjArgs>();
  CLI::App* rs = AddNamed(proj, "reset",
                          "Forget a stopped projection's model, checkpoint and dead letters; it "
                          "is rebuilt from position 1 when it next runs",
                          reset);
  rs->callback([reset, action] { *action = [reset] { return RunReset(*reset); }; });

  auto parked = std::make_shared<ProjArgs>();
  CLI::App* pk =
      AddNamed(proj, "parked", "List a projection's parked events (dead letters)", parked);
  pk->add_flag("--json", parked->json, "one JSON document");
  pk->callback([parked, action] { *action = [parked] { return RunParked(*parked); }; });

  auto retry = std::make_shared<ProjArgs>();
  CLI::App* rt = AddNamed(proj, "retry",
                          "Apply parked events again: asks the running service, or runs the "
                          "projection's code here with --plugin; those that succeed leave the "
                          "dead-letter table",
                          retry);
  rt->add_option("POSITION", retry->position, "position of the parked event");
  rt->add_flag("--all", retry->all, "every parked event of the projection");
  rt->add_option("--plugin", retry->plugin,
                 "shared library defining rill_register_projections (used when no process "
                 "runs the projection)");
  rt->add_option("--timeout", retry->timeout_s,
                 "seconds to wait for the running service's answer (default 60)");
  rt->callback([retry, action] { *action = [retry] { return RunRetry(*retry); }; });

  auto drop = std::make_shared<ProjArgs>();
  CLI::App* dr =
      AddNamed(proj, "drop", "Delete parked events for good (they stay unapplied)", drop);
  dr->add_option("POSITION", drop->position, "position of the parked event");
  dr->add_flag("--all", drop->all, "every parked event of the projection");
  dr->callback([drop, action] { *action = [drop] { return RunDrop(*drop); }; });

  proj->callback([proj, status, action] {
    if (!proj->get_subcommands().empty()) return;
    if (status->store.empty()) throw CLI::RequiredError("STORE");
    *action = [status] { return RunStatus(*status); };
  });
}

}  // namespace rill::tool
