// Blue/green rebuilds, on request, on a version bump, requested by another
// process and resumed after an interruption: the old model serves complete
// views until the swap, and the old generation's tables are dropped after.
#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "process_util.h"
#include "projection_test_util.h"
#include "projector_defs.h"
#include "rill/projection.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill::testing {
namespace {

TEST(ProjectionTest, RebuildWhileQueriesRunNeverShowsAHalfBuiltModel) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  Gate gate;
  OpenOnExit open_on_exit{&gate};
  auto at = std::make_shared<std::atomic<uint64_t>>(0);
  const ProjectionDef ledger = BlockAt(LedgerProjection(), at, &gate);
  RunnerOptions options;
  options.batch_size = 16;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {ledger}, options));
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t n, AppendMixed(*store, 1000));
  RILL_ASSERT_OK(runner->WaitFor(kLedger, n, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(const ModelDump before, Dump(*runner, ledger));
  RILL_ASSERT_OK_AND_ASSIGN(const std::set<uint64_t> gens_before, GenerationsWithRows(store.get()));
  ASSERT_EQ(gens_before.size(), 1u);

  // Hold the rebuild half-way (only the rebuild re-applies position 500).
  at->store(500);
  RILL_ASSERT_OK(runner->Rebuild(kLedger));
  ASSERT_TRUE(gate.AwaitWaiter(kLong));
  RILL_ASSERT_OK_AND_ASSIGN(ProjectionStatus st, runner->Status(kLedger));
  EXPECT_EQ(st.state, ProjectionState::kRebuilding);
  EXPECT_EQ(st.version, 1u);
  EXPECT_EQ(st.rebuild_version, 1u);
  EXPECT_LT(st.rebuild_checkpoint, 500u);
  EXPECT_EQ(st.checkpoint, n);
  RILL_ASSERT_OK(runner->WaitFor(kLedger, n, kLong));  // the old model serves
  EXPECT_EQ(*Dump(*runner, ledger), before);
  RILL_ASSERT_OK_AND_ASSIGN(const std::set<uint64_t> gens_during, GenerationsWithRows(store.get()));
  EXPECT_EQ(gens_during.size(), 2u);  // the new tables exist next to the old

  // Every view, before, during and after the swap, is a complete model of
  // the checkpoint it reports.
  ViewHammer hammer(runner.get(), kLedger, 3, CheckLedgerView);
  ASSERT_TRUE(hammer.AwaitViews(1));
  gate.Open();
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, AppendMixed(*store, 300, 1000));
  ASSERT_TRUE(AwaitStatus(*runner, kLedger, RebuildDone, &st));
  RILL_ASSERT_OK(runner->WaitFor(kLedger, head, kLong));
  ASSERT_TRUE(hammer.AwaitViews(hammer.total_views() / 3 + 2));
  hammer.Stop();
  EXPECT_TRUE(hammer.errors().empty()) << hammer.errors().front();

  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log, WholeLog(*store));
  EXPECT_EQ(*Dump(*runner, ledger), FoldLedger(log, head, 1));
  // The old generation's tables are dropped.
  std::set<uint64_t> gens_after;
  EXPECT_TRUE(WaitUntil(
      [&] {
        absl::StatusOr<std::set<uint64_t>> g = GenerationsWithRows(store.get());
        if (g.ok()) gens_after = *g;
        return g.ok() && gens_after.size() == 1;
      },
      kLong));
  EXPECT_EQ(gens_after.count(*gens_before.begin()), 0u);
}

TEST(ProjectionTest, VersionBumpRebuildsBlueGreen) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  RunnerOptions options;
  options.batch_size = 16;
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t n, AppendMixed(*store, 600));
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                              ProjectionRunner::Start(store.get(), {LedgerProjection(1)}, options));
    RILL_ASSERT_OK(runner->WaitFor(kLedger, n, kLong));
  }
  RILL_ASSERT_OK_AND_ASSIGN(const std::set<uint64_t> gens_before, GenerationsWithRows(store.get()));
  ASSERT_EQ(gens_before.size(), 1u);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> log, WholeLog(*store));

  Gate gate;
  OpenOnExit open_on_exit{&gate};
  auto at = std::make_shared<std::atomic<uint64_t>>(300);
  const ProjectionDef v2 = BlockAt(LedgerProjection(2), at, &gate);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {v2}, options));
  ASSERT_TRUE(gate.AwaitWaiter(kLong));
  RILL_ASSERT_OK_AND_ASSIGN(ProjectionStatus st, runner->Status(kLedger));
  EXPECT_EQ(st.version, 1u);  // v1 serves
  EXPECT_EQ(st.state, ProjectionState::kRebuilding);
  EXPECT_EQ(st.rebuild_version, 2u);
  EXPECT_LT(st.rebuild_checkpoint, 300u);
  EXPECT_EQ(st.checkpoint, n);
  EXPECT_EQ(*Dump(*runner, v2), FoldLedger(log, n, 1));

  // Views check sum == version * (1 + ... + checkpoint) with the version the
  // model itself records: a mix of v1 and v2 rows cannot pass.
  ViewHammer hammer(runner.get(), kLedger, 3, CheckLedgerView);
  ASSERT_TRUE(hammer.AwaitViews(1));
  gate.Open();
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, AppendMixed(*store, 100, 600));
  ASSERT_TRUE(AwaitStatus(
      *runner, kLedger, [](const ProjectionStatus& s) { return s.version == 2 && RebuildDone(s); },
      &st));
  RILL_ASSERT_OK(runner->WaitFor(kLedger, head, kLong));
  ASSERT_TRUE(hammer.AwaitViews(hammer.total_views() / 3 + 2));
  hammer.Stop();
  EXPECT_TRUE(hammer.errors().empty()) << hammer.errors().front();
  RILL_ASSERT_OK_AND_ASSIGN(log, WholeLog(*store));
  EXPECT_EQ(*Dump(*runner, v2), FoldLedger(log, head, 2));
  std::set<uint64_t> gens_after;
  EXPECT_TRUE(WaitUntil(
      [&] {
        absl::StatusOr<std::set<uint64_t>> g = GenerationsWithRows(store.get());
        if (g.ok()) gens_after = *g;
        return g.ok() && gens_after.size() == 1;
      },
      kLong));
  EXPECT_EQ(gens_after.count(*gens_before.begin()), 0u);

  // Started again with v2: nothing to rebuild, nothing re-applied.
  runner.reset();
  RILL_ASSERT_OK_AND_ASSIGN(runner,
                            ProjectionRunner::Start(store.get(), {LedgerProjection(2)}, options));
  RILL_ASSERT_OK_AND_ASSIGN(st, runner->Status(kLedger));
  EXPECT_EQ(st.version, 2u);
  EXPECT_EQ(st.rebuild_version, 0u);
  RILL_ASSERT_OK(runner->WaitFor(kLedger, head, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(st, runner->Status(kLedger));
  EXPECT_EQ(st.events_applied, 0u);
}

// An interrupted rebuild (here: its Apply fails under kStop half-way) leaves
// the old model serving; started again, the rebuild resumes from the new
// generation's checkpoint instead of starting over.
TEST(ProjectionTest, InterruptedRebuildKeepsOldModelAndResumes) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  RunnerOptions options;
  options.batch_size = 16;
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t n, AppendMixed(*store, 400));
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                              ProjectionRunner::Start(store.get(), {LedgerProjection(1)}, options));
    RILL_ASSERT_OK(runner->WaitFor(kLedger, n, kLong));
  }
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log, WholeLog(*store));
  constexpr uint64_t kBad = 203;
  auto broken = std::make_shared<std::atomic<bool>>(true);
  ProjectionDef v2 = LedgerProjection(2);
  v2.max_attempts = 1;
  auto inner = v2.apply;
  v2.apply = [inner, broken](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    if (e.position() == kBad && broken->load()) return absl::InternalError("v2 cannot");
    return inner(e, txn);
  };
  uint64_t resumed_from = 0;
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                              ProjectionRunner::Start(store.get(), {v2}, options));
    ProjectionStatus st;
    ASSERT_TRUE(AwaitStatus(
        *runner, kLedger,
        [](const ProjectionStatus& s) { return s.state == ProjectionState::kFailed; }, &st));
    EXPECT_EQ(st.version, 1u);
    EXPECT_EQ(st.checkpoint, n);
    EXPECT_EQ(st.rebuild_version, 2u);
    EXPECT_EQ(st.rebuild_checkpoint, kBad - 1);
    EXPECT_EQ(*Dump(*runner, v2), FoldLedger(log, n, 1));  // v1 still serves
    resumed_from = st.rebuild_checkpoint;
  }
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<ProjectionStatus> recorded,
                            ReadProjectionStatuses(store.get()));
  ASSERT_EQ(recorded.size(), 1u);
  // No runner holds it now: stopped, with its rebuild half done.
  EXPECT_EQ(recorded[0].state, ProjectionState::kStopped);
  EXPECT_EQ(recorded[0].rebuild_version, 2u);
  EXPECT_EQ(recorded[0].rebuild_checkpoint, resumed_from);

  broken->store(false);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {v2}, options));
  ProjectionStatus st;
  ASSERT_TRUE(AwaitStatus(
      *runner, kLedger, [](const ProjectionStatus& s) { return s.version == 2 && RebuildDone(s); },
      &st));
  EXPECT_EQ(st.events_applied, n - resumed_from);  // resumed, not started over
  EXPECT_EQ(*Dump(*runner, v2), FoldLedger(log, n, 2));
}

TEST(ProjectionTest, RebuildRequestedByAnotherProcess) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(store_dir, TestStoreOptions()));
  Gate gate;
  OpenOnExit open_on_exit{&gate};
  auto at = std::make_shared<std::atomic<uint64_t>>(0);
  const ProjectionDef ledger = BlockAt(LedgerProjection(), at, &gate);
  RunnerOptions options;
  options.batch_size = 16;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {ledger}, options));
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t n, AppendMixed(*store, 300));
  RILL_ASSERT_OK(runner->WaitFor(kLedger, n, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(const ModelDump before, Dump(*runner, ledger));
  at->store(150);  // only a rebuild re-applies it

  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ChildProcess> child,
      ChildProcess::Start("projector_child", {"mode=request", "dir=" + store_dir, "name=ledger"},
                          dir.Sub("request.stderr")));
  RILL_ASSERT_OK_AND_ASSIGN(const std::string line, child->ReadLine(kLong));
  EXPECT_EQ(line, "requested");
  const int wait_status = child->Wait();
  ASSERT_TRUE(testing::ExitedWithCode(wait_status, 0)) << DescribeWaitStatus(wait_status) << "\n"
                                                       << child->Stderr();

  ASSERT_TRUE(gate.AwaitWaiter(kLong)) << "the runner never picked up the request";
  RILL_ASSERT_OK_AND_ASSIGN(ProjectionStatus st, runner->Status(kLedger));
  EXPECT_EQ(st.state, ProjectionState::kRebuilding);
  EXPECT_EQ(st.rebuild_version, 1u);
  EXPECT_EQ(*Dump(*runner, ledger), before);  // the old model serves meanwhile
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<ProjectionStatus> recorded,
                            ReadProjectionStatuses(store.get()));
  ASSERT_EQ(recorded.size(), 1u);
  EXPECT_EQ(recorded[0].state, ProjectionState::kRebuilding);
  gate.Open();
  ASSERT_TRUE(AwaitStatus(*runner, kLedger, RebuildDone, &st));
  EXPECT_EQ(st.events_applied, 2 * n);  // built once, rebuilt once
  EXPECT_EQ(st.checkpoint, n);
  EXPECT_EQ(*Dump(*runner, ledger), before);
}

}  // namespace
}  // namespace rill::testing
