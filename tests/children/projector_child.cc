// projector_child: a process that runs projections on a store, for the
// projection crash and multi-process tests.
//
// Usage: projector_child key=value ...
//   dir=D          store directory (required)
//   mode=run       start a runner and keep it running until stdin closes
//                  (exit 0) or the process is killed;
//   mode=final     start a runner, wait until every projection is at the
//                  head with no rebuild in progress, check the models, print
//                  "caught_up <head>" and exit;
//   mode=request   call rill::RequestRebuild(store, name), print
//                  "requested" and exit.
//   set=crash|ledger  projections to run: ledger (version `version`), typed
//                  and parking (projector_defs.h); or the ledger only (crash)
//   version=V      ledger version (1)
//   batch=B        RunnerOptions.batch_size (32)
//   stall_at=P     the Apply of position P (of projection `stall_in`) blocks
//                  forever, after printing "stalled P" (0: never). Tests
//                  pick a position that only a rebuild re-applies in this
//                  process.
//   stall_in=N     the projection that stalls (ledger)
//   violations=F   mode=run: a checker thread views the ledger and parking
//                  models over and over and appends every broken invariant
//                  (projector_defs.h) to F, one line each.
//   name=N         mode=request: the projection (ledger)
//
// Protocol on stdout: "ready" once the runner started; "start_failed
// <status code> <message>" (exit 5) when ProjectionRunner::Start failed.
// Exit codes: 0 ok, 2 bad usage, 3 store error, 4 an invariant broke,
// 5 start failed, 6 mode=final did not catch up within 120 s.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "child_args.h"
#include "projector_defs.h"
#include "rill/projection.h"
#include "rill/projection_admin.h"
#include "rill/store.h"

namespace rill::testing {
namespace {

struct Config {
  std::string dir;
  std::string mode = "run";
  std::string set = "crash";
  uint32_t version = 1;
  size_t batch = 32;
  uint64_t stall_at = 0;
  std::string stall_in = kLedger;
  std::string violations;
  std::string name = kLedger;
};

bool ParseArgs(int argc, char** argv, Config* c) {
  ChildArgs args;
  args.String("dir", &c->dir);
  args.String("mode", &c->mode);
  args.String("set", &c->set);
  args.Number("version", &c->version);
  args.Number("batch", &c->batch);
  args.Number("stall_at", &c->stall_at);
  args.String("stall_in", &c->stall_in);
  args.String("violations", &c->violations);
  args.String("name", &c->name);
  return args.Parse(argc, argv) && !c->dir.empty() &&
         (c->mode == "run" || c->mode == "final" || c->mode == "request") &&
         (c->set == "crash" || c->set == "ledger");
}

// One write(2) per line, so a kill never leaves half a line behind a full one.
void Say(const std::string& line) {
  const std::string out = line + "\n";
  ssize_t ignored = write(1, out.data(), out.size());
  (void)ignored;
}

void Report(const std::string& path, const std::string& what) {
  fprintf(stderr, "VIOLATION: %s\n", what.c_str());
  if (path.empty()) return;
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  const std::string line = what + "\n";
  ssize_t ignored = write(fd, line.data(), line.size());
  (void)ignored;
  close(fd);
}

std::vector<ProjectionDef> Projections(const Config& c) {
  std::vector<ProjectionDef> defs;
  if (c.set == "ledger") {
    defs.push_back(LedgerProjection(c.version));
  } else {
    defs = CrashProjections(c.version);
  }
  for (ProjectionDef& def : defs) {
    if (c.stall_at == 0 || def.name != c.stall_in) continue;
    auto inner = def.apply;
    auto stalled = std::make_shared<std::atomic<bool>>(false);
    const uint64_t at = c.stall_at;
    def.apply = [inner, stalled, at](const EventView& e, ReadModelTxn& txn) {
      if (e.position() == at && !stalled->exchange(true)) {
        Say(absl::StrCat("stalled ", at));
        for (;;) absl::SleepFor(absl::Seconds(1));
      }
      return inner(e, txn);
    };
  }
  return defs;
}

// Every broken invariant of the ledger and parking views, "" when none.
std::string CheckViews(ProjectionRunner& runner, const Config& c) {
  std::string out;
  {
    absl::StatusOr<std::unique_ptr<ReadModelView>> view = runner.View(kLedger);
    if (!view.ok()) return absl::StrCat("View(ledger): ", view.status().ToString());
    out = CheckLedgerView(**view);
  }
  if (c.set == "crash" && out.empty()) {
    absl::StatusOr<std::unique_ptr<ReadModelView>> view = runner.View(kParking);
    if (!view.ok()) return absl::StrCat("View(parking): ", view.status().ToString());
    out = CheckParkingView(**view);
  }
  return out;
}

int Run(const Config& c) {
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(c.dir);
  if (!store.ok()) {
    fprintf(stderr, "open: %s\n", store.status().ToString().c_str());
    return 3;
  }
  if (c.mode == "request") {
    absl::Status s = RequestRebuild(store->get(), c.name);
    if (!s.ok()) {
      fprintf(stderr, "RequestRebuild: %s\n", s.ToString().c_str());
      return 3;
    }
    Say("requested");
    return 0;
  }
  RunnerOptions options;
  options.batch_size = c.batch;
  options.poll_interval = absl::Milliseconds(10);
  absl::StatusOr<std::unique_ptr<ProjectionRunner>> runner =
      ProjectionRunner::Start(store->get(), Projections(c), options);
  if (!runner.ok()) {
    Say(absl::StrCat("start_failed ", static_cast<int>(runner.status().code()), " ",
                     runner.status().message()));
    return 5;
  }
  if (c.mode == "final") {
    const absl::Time deadline = absl::Now() + absl::Seconds(120);
    uint64_t head = 0;
    for (;;) {
      absl::StatusOr<uint64_t> h = (*store)->HeadPosition();
      if (!h.ok()) return 3;
      head = *h;
      bool done = true;
      for (const ProjectionStatus& st : (*runner)->Statuses()) {
        if (st.state == ProjectionState::kFailed) {
          fprintf(stderr, "%s failed: %s\n", st.name.c_str(), st.last_error.c_str());
          return 4;
        }
        done = done && st.checkpoint == head && st.rebuild_version == 0;
      }
      if (done) break;
      if (absl::Now() > deadline) return 6;
      absl::SleepFor(absl::Milliseconds(5));
    }
    const std::string broken = CheckViews(**runner, c);
    if (!broken.empty()) {
      Report(c.violations, broken);
      return 4;
    }
    runner->reset();
    Say(absl::StrCat("caught_up ", head));
    return 0;
  }
  Say("ready");
  std::atomic<bool> done{false};
  std::thread checker;
  if (!c.violations.empty()) {
    checker = std::thread([&] {
      while (!done.load()) {
        const std::string broken = CheckViews(**runner, c);
        if (!broken.empty()) Report(c.violations, broken);
        absl::SleepFor(absl::Milliseconds(2));
      }
    });
  }
  char buf[64];
  while (read(0, buf, sizeof(buf)) > 0) {
  }
  done.store(true);
  if (checker.joinable()) checker.join();
  runner->reset();
  return 0;
}

}  // namespace
}  // namespace rill::testing

int main(int argc, char** argv) {
  rill::testing::Config config;
  if (!rill::testing::ParseArgs(argc, argv, &config)) {
    fprintf(stderr, "usage: projector_child dir=D [mode=run|final|request] ...\n");
    return 2;
  }
  return rill::testing::Run(config);
}
