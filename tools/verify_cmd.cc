// rill verify, rill backup.
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common.h"
#include "nlohmann/json.hpp"
#include "rill/admin.h"
#include "rill/projection.h"
#include "rill/projection_admin.h"
#include "rill/snapshot.h"

namespace rill::tool {
namespace {

using Json = nlohmann::ordered_json;

struct VerifyArgs {
  std::string store;
  bool json = false;
};

// Derived data: every catalog entry and snapshot decodes, and no checkpoint
// is past the head. Adds problems to `report`.
absl::Status VerifyDerived(Store* store, VerifyReport* report, uint64_t* projections,
                           uint64_t* snapshots) {
  auto problem = [&](std::string what) {
    ++report->problem_count;
    report->problems.push_back(std::move(what));
  };
  absl::StatusOr<std::vector<ProjectionStatus>> statuses = ReadProjectionStatuses(store);
  if (statuses.status().code() == absl::StatusCode::kDataLoss) {
    problem(absl::StrCat("projection catalog: ", statuses.status().message()));
  } else if (!statuses.ok()) {
    return statuses.status();
  } else {
    *projections = statuses->size();
    for (const ProjectionStatus& p : *statuses) {
      if (p.checkpoint > report->head_position) {
        problem(absl::StrCat("projection \"", p.name, "\" has checkpoint ", p.checkpoint,
                             ", past the head ", report->head_position));
      }
    }
  }
  absl::StatusOr<std::unique_ptr<SnapshotStore>> snaps = SnapshotStore::Open(store);
  if (!snaps.ok()) return snaps.status();
  absl::StatusOr<std::vector<Snapshot>> list = (*snaps)->List("");
  if (list.status().code() == absl::StatusCode::kDataLoss) {
    problem(absl::StrCat("snapshots: ", list.status().message(),
                         " (`rill snapshots prune` cannot repair it; drop the stream's "
                         "snapshots from the service with SnapshotStore::Drop)"));
  } else if (!list.ok()) {
    return list.status();
  } else {
    *snapshots = list->size();
  }
  return absl::OkStatus();
}

int RunVerify(const VerifyArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kRead);
  if (!store.ok()) return Fail(store.status());
  absl::StatusOr<VerifyReport> report;
  {
    Progress progress("verify", 0);
    VerifyOptions options;
    options.progress = [&progress](uint64_t done, uint64_t total) {
      progress.SetTotal(total);
      progress.Update(done);
    };
    report = VerifyStore(store->get(), options);
  }
  if (!report.ok()) return Fail(report.status());
  uint64_t projections = 0, snapshots = 0;
  if (absl::Status s = VerifyDerived(store->get(), &*report, &projections, &snapshots); !s.ok()) {
    return Fail(s);
  }
  if (args.json) {
    Json j{{"ok", report->ok()},
           {"head_position", report->head_position},
           {"events", report->events},
           {"streams", report->streams},
           {"index_entries", report->index_entries},
           {"idempotency_keys", report->idempotency_keys},
           {"projections", projections},
           {"snapshots", snapshots},
           {"problem_count", report->problem_count},
           {"problems", report->problems}};
    PrintLine(j.dump(2, ' ', false, Json::error_handler_t::replace));
  } else {
    PrintLine(absl::StrCat(
        "checked ", Count(report->events, "event"), ", ", Count(report->streams, "stream"), ", ",
        Count(report->index_entries, "index entry"), ", ",
        Count(report->idempotency_keys, "idempotency key"), ", ", Count(projections, "projection"),
        ", ", Count(snapshots, "snapshot"), " (head ", report->head_position, ")"));
    for (const std::string& p : report->problems) PrintLine(absl::StrCat("PROBLEM: ", p));
    if (report->problem_count > report->problems.size()) {
      PrintLine(absl::StrCat("... and ", report->problem_count - report->problems.size(),
                             " more problems"));
    }
    PrintLine(report->ok() ? "OK"
                           : absl::StrCat(Count(report->problem_count, "problem"), " found"));
  }
  if (!report->ok()) {
    std::fprintf(stderr,
                 "rill: %s has %s; restore it from a backup (`rill backup`) or keep "
                 "the readable part with `rill export` + `rill import`\n",
                 args.store.c_str(), Count(report->problem_count, "problem").c_str());
    return kExitCorrupt;
  }
  return kExitOk;
}

struct BackupArgs {
  std::string store;
  std::string dest;
  bool compact = false;
  bool json = false;
};

int RunBackup(const BackupArgs& args) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(args.store, OpenMode::kRead);
  if (!store.ok()) return Fail(store.status());
  absl::StatusOr<BackupResult> result;
  {
    Progress progress("backup", 0);
    BackupOptions options;
    options.compact = args.compact;
    options.progress = [&progress](uint64_t done, uint64_t total) {
      progress.SetTotal(total);
      progress.Update(done);
    };
    result = BackupStore(store->get(), args.dest, options);
  }
  if (result.status().code() == absl::StatusCode::kFailedPrecondition) {
    Fail(result.status(), "pick a new or empty directory");
    return kExitUsage;
  }
  if (result.status().code() == absl::StatusCode::kResourceExhausted) {
    return Fail(result.status(), "free space on the destination's disk and back up again");
  }
  if (!result.ok()) return Fail(result.status());
  if (args.json) {
    Json j{{"dest", args.dest},
           {"head_position", result->head_position},
           {"log_bytes", result->log_bytes},
           {"derived_bytes", result->derived_bytes},
           {"compact", args.compact}};
    PrintLine(j.dump());
  } else {
    PrintLine(absl::StrCat("backed up ", args.store, " to ", args.dest, " up to position ",
                           result->head_position, ": log ", FormatBytes(result->log_bytes),
                           ", derived ", FormatBytes(result->derived_bytes)));
  }
  return kExitOk;
}

}  // namespace

void AddVerifyCommands(CLI::App& app, Action* action) {
  auto v = std::make_shared<VerifyArgs>();
  CLI::App* verify = app.add_subcommand(
      "verify",
      "Check every record: envelopes, gapless positions, contiguous stream versions, "
      "index entries, idempotency records, projections and snapshots; exit 6 on any "
      "problem");
  verify->add_option("STORE", v->store, "store directory")->required();
  verify->add_flag("--json", v->json, "one JSON document with the counts and problems");
  verify->footer(
      "Runs in one read transaction, so it sees one consistent state while the "
      "service keeps appending.\nExample:\n  rill verify /var/lib/orders");
  verify->callback([v, action] { *action = [v] { return RunVerify(*v); }; });

  auto b = std::make_shared<BackupArgs>();
  CLI::App* backup = app.add_subcommand(
      "backup", "Hot, consistent copy of the store (log and derived data) while it is in use");
  backup->add_option("STORE", b->store, "store directory")->required();
  backup->add_option("DEST", b->dest, "new directory for the copy (must not exist, or be empty)")
      ->required();
  backup->add_flag("--compact", b->compact, "copy only the pages in use (smaller, slower)");
  backup->add_flag("--json", b->json, "print the result as JSON");
  backup->footer(
      "The copy is a store: open it, or `rill verify` it.\nExample:\n"
      "  rill backup /var/lib/orders /backups/orders-2026-11-26 --compact");
  backup->callback([b, action] { *action = [b] { return RunBackup(*b); }; });
}

}  // namespace rill::tool
