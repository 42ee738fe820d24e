// Projections side by side in one runner: a projection blocked in its Apply
// holds back neither the others' progress nor their queries, even when
// another projection has to grow the derived map meanwhile.
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "projection_test_util.h"
#include "projector_defs.h"
#include "rill/projection.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill::testing {
namespace {

TEST(ProjectionTest, BlockedProjectionDoesNotHoldBackTheOthers) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  Gate gate;
  OpenOnExit open_on_exit{&gate};
  auto at = std::make_shared<std::atomic<uint64_t>>(1);
  const ProjectionDef slow = BlockAt(Renamed(LedgerProjection(), "slow"), at, &gate);
  const ProjectionDef fast = Renamed(LedgerProjection(), "fast");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {slow, fast}));
  // Caught up with the empty log first, so that the state below must have
  // changed when the events came.
  ASSERT_TRUE(AwaitStatus(*runner, "slow", [](const ProjectionStatus& s) {
    return s.state == ProjectionState::kCaughtUp;
  }));
  RILL_ASSERT_OK(AppendMixed(*store, 100).status());
  ASSERT_TRUE(gate.AwaitWaiter(kLong)) << "slow never reached position 1";
  RILL_ASSERT_OK(runner->WaitFor("fast", 100, kLong));

  // slow is stuck in the Apply of position 1: nothing of it is committed.
  RILL_ASSERT_OK_AND_ASSIGN(ProjectionStatus st, runner->Status("slow"));
  EXPECT_EQ(st.checkpoint, 0u);
  EXPECT_EQ(st.head, 100u);
  EXPECT_EQ(st.lag_events, st.head - st.checkpoint);
  EXPECT_GT(st.lag_time, absl::ZeroDuration());
  // Busy with a batch, 100 events behind: "running", not "caught up".
  EXPECT_EQ(st.state, ProjectionState::kRunning);
  absl::Status s = runner->WaitFor("slow", 100, absl::Milliseconds(100));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> slow_view, runner->View("slow"));
  EXPECT_EQ(slow_view->checkpoint(), 0u);
  EXPECT_EQ(CheckLedgerView(*slow_view), "");
  slow_view.reset();

  // fast keeps following new events while slow is still blocked.
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, AppendMixed(*store, 50, 100));
  RILL_ASSERT_OK(runner->WaitFor("fast", head, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(st, runner->Status("fast"));
  EXPECT_EQ(st.checkpoint, head);
  EXPECT_EQ(st.events_applied, head);
  RILL_ASSERT_OK_AND_ASSIGN(st, runner->Status("slow"));
  EXPECT_EQ(st.checkpoint, 0u);
  EXPECT_EQ(st.lag_events, head);

  gate.Open();
  RILL_ASSERT_OK(runner->WaitFor("slow", head, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(st, runner->Status("slow"));
  EXPECT_EQ(st.events_applied, head);
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log, WholeLog(*store));
  EXPECT_EQ(*Dump(*runner, slow), FoldLedger(log, head, 1));
  EXPECT_EQ(*Dump(*runner, fast), FoldLedger(log, head, 1));
}

// Apply "may be slow" and "never holds back another projection" (projection.h,
// docs/projections.md). A slow Apply that has read its model holds an LMDB
// read transaction of the derived environment, and with it the env's resize
// lock shared (lmdb_env.h); another projection whose batch fills the map
// must grow it (exclusive lock) and so waits for the slow Apply to return.
TEST(ProjectionTest, BlockedProjectionDoesNotHoldBackTheOthersWhenTheMapGrows) {
  TempDir dir;
  StoreOptions store_options = TestStoreOptions();
  store_options.initial_map_size = size_t{1} << 20;  // the derived env starts at 1 MiB
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir.path(), store_options));
  Gate gate;
  OpenOnExit open_on_exit{&gate};
  ProjectionDef slow;
  slow.name = "slow";
  slow.tables = {"t"};
  slow.apply = [&gate](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    absl::StatusOr<std::optional<std::string>> old = txn.Get("t", "k");  // reads its model
    if (!old.ok()) return old.status();
    if (e.position() == 1) gate.Pass();
    return txn.Put("t", "k", absl::StrCat(e.position()));
  };
  ProjectionDef big;
  big.name = "big";
  big.tables = {"blobs"};
  big.apply = [](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    return txn.Put("blobs", PosKey(e.position()), std::string(256 << 10, 'x'));
  };
  RunnerOptions options;
  options.batch_size = 4;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {slow, big}, options));
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, AppendMixed(*store, 40));  // 10 MiB of rows
  ASSERT_TRUE(gate.AwaitWaiter(kLong));
  absl::Status s = runner->WaitFor("big", head, absl::Seconds(10));
  EXPECT_TRUE(s.ok()) << "\"big\" is held back by the blocked \"slow\": " << s;
  // Queries of any projection, from a thread that holds nothing, must not
  // wait for the blocked Apply either.
  absl::Notification viewed;
  std::thread query([&] {
    absl::StatusOr<std::unique_ptr<ReadModelView>> view = runner->View("big");
    EXPECT_TRUE(view.ok()) << view.status();
    viewed.Notify();
  });
  EXPECT_TRUE(viewed.WaitForNotificationWithTimeout(absl::Seconds(10)))
      << "View(\"big\") waits for the blocked Apply of \"slow\"";
  gate.Open();
  query.join();
  RILL_ASSERT_OK(runner->WaitFor("big", head, kLong));
  RILL_ASSERT_OK(runner->WaitFor("slow", head, kLong));
}

}  // namespace
}  // namespace rill::testing
