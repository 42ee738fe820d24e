// Exactly-once across crashes: a projector child process (projector_child)
// runs three projections (projector_defs.h: "ledger", read-modify-write of
// shared totals, per-stream counters and a per-position application count;
// "typed", filtered by type and stream prefix; "parking", ErrorPolicy::kPark
// with every 13th position poison) while this process appends from a thread.
// The test SIGKILLs the child and starts it again, 30 cycles of four kinds:
//
//   random   killed 50..300 ms after it is ready;
//   bump     ledger version bumped (blue/green rebuild on start); the child's
//            ledger Apply stalls at a position only the rebuild re-applies,
//            and it is killed there, so every such cycle is killed in the
//            middle of a rebuild (asserted from the recorded catalog);
//   request  the same through rill::RequestRebuild from this process;
//   bump+random  a version bump killed at a random moment.
//
// While it runs, a checker thread in the child views the ledger and parking
// models over and over and records every broken invariant (count ==
// checkpoint, each position applied exactly once ...). After each kill the
// recorded ledger checkpoint must not have gone back. At the end a final
// projector catches up and exits cleanly, and every model must equal an
// independent fold of the log in this test and a fresh RebuildAsOf(head):
// no event lost, none applied twice, dead letters exactly the poison events.
//
// Reproduce a run with RILL_TEST_SEED=<seed printed by the test>.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "projector_defs.h"
#include "rill/projection.h"
#include "rill/projection_admin.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::ChildProcess;
using ::rill::testing::CrashProjections;
using ::rill::testing::DescribeWaitStatus;
using ::rill::testing::DumpView;
using ::rill::testing::FoldLedger;
using ::rill::testing::FoldParking;
using ::rill::testing::FoldTyped;
using ::rill::testing::kLedger;
using ::rill::testing::kParking;
using ::rill::testing::kPoisonEvery;
using ::rill::testing::kTyped;
using ::rill::testing::MakeEvent;
using ::rill::testing::ModelDump;
using ::rill::testing::ReadFileOrEmpty;
using ::rill::testing::TempDir;

constexpr absl::Duration kLong = absl::Seconds(60);
constexpr size_t kChildBatch = 32;
// Caps the log so that late rebuilds stay short (also under ASan).
constexpr uint64_t kMaxEvents = 5000;

enum class Kind { kRandom, kBumpStall, kRequestStall, kBumpRandom };

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kRandom:
      return "random";
    case Kind::kBumpStall:
      return "bump";
    case Kind::kRequestStall:
      return "request";
    case Kind::kBumpRandom:
      return "bump+random";
  }
  return "?";
}

constexpr Kind kPlan[] = {
    Kind::kRandom,       Kind::kBumpStall,    Kind::kRandom,       Kind::kRequestStall,
    Kind::kRandom,       Kind::kBumpRandom,   Kind::kRandom,       Kind::kBumpStall,
    Kind::kRequestStall, Kind::kRandom,       Kind::kBumpRandom,   Kind::kRequestStall,
    Kind::kRandom,       Kind::kRequestStall, Kind::kBumpStall,    Kind::kRandom,
    Kind::kBumpRandom,   Kind::kRandom,       Kind::kRequestStall, Kind::kRandom,
    Kind::kRandom,       Kind::kBumpStall,    Kind::kRandom,       Kind::kRequestStall,
    Kind::kRandom,       Kind::kBumpRandom,   Kind::kRandom,       Kind::kRequestStall,
    Kind::kRandom,       Kind::kRandom};

uint64_t TestSeed() {
  const char* env = getenv("RILL_TEST_SEED");
  uint64_t seed = 0;
  if (env != nullptr && absl::SimpleAtoi(env, &seed)) return seed;
  return std::random_device()();
}

std::optional<ProjectionStatus> Find(const std::vector<ProjectionStatus>& all,
                                     const std::string& name) {
  for (const ProjectionStatus& st : all) {
    if (st.name == name) return st;
  }
  return std::nullopt;
}

// Appends 1..3 events at a time to random "acct-" and "misc-" streams with
// random types, until stopped or kMaxEvents.
class Appender {
 public:
  Appender(Store* store, uint64_t seed) : store_(store), rng_(seed) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~Appender() { Stop(); }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  absl::Status status() const { return status_; }

 private:
  void Loop() {
    static const char* const kTypes[] = {"Opened", "Updated", "Closed"};
    uint64_t appended = 0;
    while (!stop_.load() && appended < kMaxEvents) {
      const std::string stream = absl::StrCat(rng_() % 2 == 0 ? "acct-" : "misc-", rng_() % 8);
      std::vector<EventData> events;
      const int n = 1 + static_cast<int>(rng_() % 3);
      for (int i = 0; i < n; ++i) {
        events.push_back(MakeEvent(kTypes[rng_() % 3], static_cast<int>(appended) + i));
      }
      absl::StatusOr<AppendResult> r = store_->Append(stream, ExpectedVersion::Any(), events);
      if (!r.ok()) {
        status_ = r.status();
        return;
      }
      appended += n;
      absl::SleepFor(absl::Milliseconds(3));
    }
  }

  Store* store_;
  std::mt19937_64 rng_;
  std::atomic<bool> stop_{false};
  absl::Status status_;
  std::thread thread_;
};

TEST(ProjectionCrashTest, ExactlyOnceAcrossKillsAndInterruptedRebuilds) {
  const uint64_t seed = TestSeed();
  std::printf("RILL_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  const std::string violations = dir.Sub("violations");
  StoreOptions store_options;
  store_options.durability = Durability::kNoSyncUnsafe;  // survives a process kill
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir, store_options));
  Appender appender(store.get(), seed + 1);

  uint32_t version = 1;
  uint64_t last_checkpoint = 0;
  int killed_mid_rebuild = 0;
  int swaps_seen = 0;
  uint32_t last_serving_version = 0;
  for (size_t cycle = 0; cycle < sizeof(kPlan) / sizeof(kPlan[0]); ++cycle) {
    const Kind kind = kPlan[cycle];
    if (kind == Kind::kBumpStall || kind == Kind::kBumpRandom) ++version;
    RILL_ASSERT_OK_AND_ASSIGN(const std::vector<ProjectionStatus> before,
                              ReadProjectionStatuses(store.get()));
    const std::optional<ProjectionStatus> ledger = Find(before, kLedger);
    RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store->HeadPosition());
    // A position that, in this child, only the ledger's rebuild applies.
    uint64_t stall_at = 0;
    if (kind == Kind::kBumpStall) {
      ASSERT_GT(head, 0u) << "nothing appended yet";
      stall_at = 1 + rng() % head;  // the frozen old version applies nothing
    } else if (kind == Kind::kRequestStall && ledger.has_value()) {
      // The rebuild resumes after its recorded checkpoint (or starts at 0);
      // the serving generation follows the log after its own checkpoint
      // (unless it is frozen by a pending version bump).
      const uint64_t lo = ledger->rebuild_version == version ? ledger->rebuild_checkpoint : 0;
      const uint64_t hi = ledger->version == version ? ledger->checkpoint : head;
      if (hi > lo) stall_at = lo + 1 + rng() % (hi - lo);
    }
    SCOPED_TRACE(absl::StrCat("cycle ", cycle, " (", KindName(kind), ", ledger version ", version,
                              ", stall_at ", stall_at, ", head ", head, ")"));
    const std::string err_path = dir.Sub(absl::StrCat("child-", cycle, ".stderr"));
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ChildProcess> child,
        ChildProcess::Start("projector_child",
                            {"mode=run", "dir=" + store_dir, absl::StrCat("version=", version),
                             absl::StrCat("batch=", kChildBatch),
                             absl::StrCat("stall_at=", stall_at), "violations=" + violations},
                            err_path));
    // "ready" and "stalled P" come in either order (the workers start
    // before the child prints "ready").
    bool ready = false, stalled = false;
    auto read_until = [&](const std::function<bool()>& done) -> absl::Status {
      while (!done()) {
        absl::StatusOr<std::string> line = child->ReadLine(kLong);
        if (!line.ok()) return line.status();
        if (*line == "ready") {
          ready = true;
        } else if (*line == absl::StrCat("stalled ", stall_at)) {
          stalled = true;
        } else {
          return absl::InternalError(absl::StrCat("unexpected line: ", *line));
        }
      }
      return absl::OkStatus();
    };
    absl::Status read = read_until([&] { return ready; });
    ASSERT_TRUE(read.ok()) << read << "\n" << child->Stderr();
    if (kind == Kind::kRequestStall) RILL_ASSERT_OK(RequestRebuild(store.get(), kLedger));
    if (stall_at != 0) {
      read = read_until([&] { return stalled; });
      ASSERT_TRUE(read.ok()) << read << "\n" << child->Stderr();
      absl::SleepFor(absl::Milliseconds(rng() % 20));  // the other projections go on
    } else {
      absl::SleepFor(absl::Milliseconds(50 + rng() % 251));
    }
    child->Kill(SIGKILL);
    const int wait_status = child->Wait();
    ASSERT_TRUE(WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL)
        << "the projector ended on its own: " << DescribeWaitStatus(wait_status) << "\n"
        << child->Stderr();

    RILL_ASSERT_OK_AND_ASSIGN(const std::vector<ProjectionStatus> after,
                              ReadProjectionStatuses(store.get()));
    const std::optional<ProjectionStatus> now = Find(after, kLedger);
    ASSERT_TRUE(now.has_value());
    EXPECT_GE(now->checkpoint, last_checkpoint) << "the serving ledger went back";
    last_checkpoint = now->checkpoint;
    if (now->version != last_serving_version) ++swaps_seen;
    last_serving_version = now->version;
    if (stall_at != 0) {
      // Killed inside the rebuild's Apply: the rebuild is recorded as in
      // progress, the old generation serving.
      EXPECT_EQ(now->rebuild_version, version);
      EXPECT_LT(now->rebuild_checkpoint, stall_at);
      ++killed_mid_rebuild;
    }
    const std::string broken = ReadFileOrEmpty(violations);
    ASSERT_TRUE(broken.empty()) << broken;
  }
  appender.Stop();
  RILL_ASSERT_OK(appender.status());
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store->HeadPosition());
  std::printf(
      "%llu events; killed mid-rebuild %d times; serving version changed %d "
      "times; final "
      "version %u\n",
      static_cast<unsigned long long>(head), killed_mid_rebuild, swaps_seen, version);
  EXPECT_GE(killed_mid_rebuild,
            8);  // four bumps, and requests with room to stall

  // A last projector catches up (finishing any rebuild) and exits cleanly.
  {
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ChildProcess> child,
        ChildProcess::Start("projector_child",
                            {"mode=final", "dir=" + store_dir, absl::StrCat("version=", version),
                             absl::StrCat("batch=", kChildBatch), "violations=" + violations},
                            dir.Sub("final.stderr")));
    absl::StatusOr<std::string> line = child->ReadLine(absl::Seconds(150));
    EXPECT_TRUE(line.ok() && *line == absl::StrCat("caught_up ", head))
        << line.status() << " " << line.value_or("") << "\n"
        << child->Stderr();
    const int wait_status = child->Wait();
    ASSERT_TRUE(testing::ExitedWithCode(wait_status, 0)) << DescribeWaitStatus(wait_status) << "\n"
                                                         << child->Stderr();
  }
  const std::string broken = ReadFileOrEmpty(violations);
  ASSERT_TRUE(broken.empty()) << broken;

  // Compare with an independent fold of the log and a fresh rebuild.
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log, store->ReadAll(1));
  ASSERT_EQ(log.size(), head);
  const std::vector<ProjectionDef> defs = CrashProjections(version);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), defs));
  for (const ProjectionDef& def : defs) {
    SCOPED_TRACE(def.name);
    RILL_ASSERT_OK(runner->WaitFor(def.name, head, kLong));
    RILL_ASSERT_OK_AND_ASSIGN(const ProjectionStatus st, runner->Status(def.name));
    EXPECT_EQ(st.version, def.version);
    EXPECT_EQ(st.rebuild_version, 0u);
    EXPECT_EQ(st.checkpoint, head);
    EXPECT_EQ(st.events_applied, 0u) << "the final projector left work undone";
    const ModelDump want = def.name == kLedger  ? FoldLedger(log, head, version)
                           : def.name == kTyped ? FoldTyped(log, head)
                                                : FoldParking(log, head);
    {
      RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view, runner->View(def.name));
      EXPECT_EQ(view->checkpoint(), head);
      RILL_ASSERT_OK_AND_ASSIGN(const ModelDump got, DumpView(*view, def.tables));
      EXPECT_TRUE(got == want) << "the model built across kills differs from the fold";
    }
    RILL_ASSERT_OK(runner->RebuildAsOf(def.name, head, "fresh"));
    {
      RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view,
                                runner->ViewAsOf(def.name, "fresh"));
      RILL_ASSERT_OK_AND_ASSIGN(const ModelDump fresh, DumpView(*view, def.tables));
      EXPECT_TRUE(fresh == want) << "a fresh rebuild differs from the fold";
    }
  }
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<ParkedEvent> parked, runner->ListParked(kParking));
  std::vector<uint64_t> got_parked, want_parked;
  for (const ParkedEvent& p : parked) {
    got_parked.push_back(p.position);
    EXPECT_EQ(p.attempts, 2) << p.position;
  }
  for (uint64_t p = kPoisonEvery; p <= head; p += kPoisonEvery) want_parked.push_back(p);
  EXPECT_EQ(got_parked, want_parked);
}

}  // namespace
}  // namespace rill
