// RebuildAsOf: a model as it was at a position, in a table set of its own
// under a label, next to the serving model; a parking projection's as-of
// model; a failed as-of build leaves no rows behind.
#include <atomic>
#include <memory>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "projection_test_util.h"
#include "projector_defs.h"
#include "rill/projection.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill::testing {
namespace {

TEST(ProjectionTest, RebuildAsOfBuildsASeparateTableSet) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  RunnerOptions options;
  options.batch_size = 7;  // several batches per as-of build
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
      ProjectionRunner::Start(store.get(), {LedgerProjection(), TypedProjection()}, options));
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, AppendMixed(*store, 300));
  RILL_ASSERT_OK(runner->WaitFor(kLedger, head, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> log, WholeLog(*store));

  RILL_ASSERT_OK(runner->RebuildAsOf(kLedger, 123, "at123"));
  RILL_ASSERT_OK(runner->RebuildAsOf(kTyped, 123, "at123"));
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view,
                              runner->ViewAsOf(kLedger, "at123"));
    EXPECT_EQ(view->checkpoint(), 123u);
    EXPECT_EQ(CheckLedgerView(*view), "");
    EXPECT_EQ(*DumpView(*view, LedgerProjection().tables), FoldLedger(log, 123, 1));
    view.reset();
    RILL_ASSERT_OK_AND_ASSIGN(view, runner->ViewAsOf(kTyped, "at123"));
    EXPECT_EQ(view->checkpoint(), 123u);
    EXPECT_EQ(*DumpView(*view, TypedProjection().tables), FoldTyped(log, 123));
  }
  // The serving models go on, the as-of sets do not move.
  RILL_ASSERT_OK_AND_ASSIGN(head, AppendMixed(*store, 50, 300));
  RILL_ASSERT_OK(runner->WaitFor(kLedger, head, kLong));
  RILL_ASSERT_OK(runner->WaitFor(kTyped, head, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(log, WholeLog(*store));
  EXPECT_EQ(*Dump(*runner, LedgerProjection()), FoldLedger(log, head, 1));
  EXPECT_EQ(*Dump(*runner, TypedProjection()), FoldTyped(log, head));
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view,
                              runner->ViewAsOf(kLedger, "at123"));
    EXPECT_EQ(*DumpView(*view, LedgerProjection().tables), FoldLedger(log, 123, 1));
    view.reset();
    RILL_ASSERT_OK_AND_ASSIGN(view, runner->ViewAsOf(kTyped, "at123"));
    EXPECT_EQ(*DumpView(*view, TypedProjection().tables), FoldTyped(log, 123));
  }
  // Building a label again replaces it; other labels are independent.
  RILL_ASSERT_OK(runner->RebuildAsOf(kLedger, 200, "at123"));
  RILL_ASSERT_OK(runner->RebuildAsOf(kLedger, head, "head"));
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view,
                              runner->ViewAsOf(kLedger, "at123"));
    EXPECT_EQ(view->checkpoint(), 200u);
    EXPECT_EQ(*DumpView(*view, LedgerProjection().tables), FoldLedger(log, 200, 1));
    view.reset();
    RILL_ASSERT_OK_AND_ASSIGN(view, runner->ViewAsOf(kLedger, "head"));
    EXPECT_EQ(*DumpView(*view, LedgerProjection().tables), FoldLedger(log, head, 1));
  }
  EXPECT_EQ(runner->ViewAsOf(kLedger, "missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(runner->ViewAsOf(kTyped, "head").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(runner->RebuildAsOf(kLedger, 5, "not a label").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runner->RebuildAsOf("nope", 5, "x").code(), absl::StatusCode::kNotFound);
}

// RebuildAsOf builds "the model as it was at position": for a projection
// with ErrorPolicy::kPark that is the model without the events it parks,
// as the serving model has it. The as-of build runs with park=false
// (runner.cc) and fails on the first such event instead.
TEST(ProjectionTest, RebuildAsOfOfAParkingProjection) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  const ProjectionDef parking = ::rill::testing::ParkingProjection();
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {parking}));
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, AppendMixed(*store, 40));
  RILL_ASSERT_OK(runner->WaitFor(parking.name, head, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log, WholeLog(*store));
  // The serving model skipped 13, 26 and 39.
  EXPECT_EQ(*Dump(*runner, parking), ::rill::testing::FoldParking(log, head));
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<ParkedEvent> parked,
                            runner->ListParked(parking.name));
  EXPECT_EQ(ParkedPositions(parked), (std::vector<uint64_t>{13, 26, 39}));

  RILL_ASSERT_OK(runner->RebuildAsOf(parking.name, 30, "at30"));
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view,
                            runner->ViewAsOf(parking.name, "at30"));
  EXPECT_EQ(view->checkpoint(), 30u);
  EXPECT_EQ(*DumpView(*view, parking.tables), ::rill::testing::FoldParking(log, 30));
  view.reset();
  // The serving generation's dead letters are untouched.
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<ParkedEvent> still, runner->ListParked(parking.name));
  EXPECT_EQ(ParkedPositions(still), (std::vector<uint64_t>{13, 26, 39}));
}

// A RebuildAsOf that fails (its Apply fails under kStop) returns the error
// and leaves nothing behind: no as-of set, and no rows of the unfinished
// generation, which no catalog entry names and nothing would ever drop.
TEST(ProjectionTest, FailedRebuildAsOfLeavesNoRows) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  auto broken = std::make_shared<std::atomic<bool>>(false);
  ProjectionDef def = LedgerProjection();
  def.max_attempts = 1;
  auto inner = def.apply;
  def.apply = [inner, broken](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    if (e.position() == 50 && broken->load()) return absl::InternalError("as-of cannot");
    return inner(e, txn);
  };
  RunnerOptions options;
  options.batch_size = 16;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {def}, options));
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, AppendMixed(*store, 100));
  RILL_ASSERT_OK(runner->WaitFor(kLedger, head, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(const std::set<uint64_t> gens_before, GenerationsWithRows(store.get()));

  broken->store(true);  // no new events: only the as-of build meets position 50
  const absl::Status s = runner->RebuildAsOf(kLedger, 80, "x");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "as-of cannot")) << s;
  EXPECT_EQ(runner->ViewAsOf(kLedger, "x").status().code(), absl::StatusCode::kNotFound);
  RILL_ASSERT_OK_AND_ASSIGN(const std::set<uint64_t> gens_after, GenerationsWithRows(store.get()));
  EXPECT_EQ(gens_after, gens_before) << "rows of the failed as-of build are left behind";
}

}  // namespace
}  // namespace rill::testing
