// Views of a projection's model: consistent from many threads while the
// runner writes, and nested on one thread (two views, a view and a status),
// also while a growth of the derived map waits for the first view.
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "projection_test_util.h"
#include "projector_defs.h"
#include "rill/projection.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill::testing {
namespace {

TEST(ProjectionTest, ViewsFromManyThreadsAreConsistentWhileTheRunnerWrites) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  RunnerOptions options;
  options.batch_size = 8;  // many small commits
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {LedgerProjection()}, options));
  // Every view: count == checkpoint, sum == 1 + ... + checkpoint, the
  // per-stream counts add up to count, each position 1..checkpoint applied
  // exactly once; and checkpoints never go back within a thread.
  ViewHammer hammer(runner.get(), kLedger, 4, CheckLedgerView);
  ASSERT_TRUE(hammer.AwaitViews(1));
  uint64_t head = 0;
  for (int i = 0; i < 1500; i += 50) {
    RILL_ASSERT_OK_AND_ASSIGN(head, AppendMixed(*store, 50, i));
  }
  RILL_ASSERT_OK(runner->WaitFor(kLedger, head, kLong));
  ASSERT_TRUE(hammer.AwaitViews(hammer.total_views() / 4 + 2));
  hammer.Stop();
  EXPECT_TRUE(hammer.errors().empty()) << hammer.errors().front();
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log, WholeLog(*store));
  EXPECT_EQ(*Dump(*runner, LedgerProjection()), FoldLedger(log, head, 1));
}

// A view holds an LMDB read transaction of the derived environment and with
// it that environment's resize lock (an absl::Mutex) in shared mode
// (lmdb_env.h). A second view, or a Status(), on the same thread while the
// first view is open takes that lock in shared mode again. absl::Mutex is
// not reentrant (a recursive lock is undefined; it can deadlock behind a
// map growth waiting for the exclusive lock), and Debian's Abseil aborts
// the process: "Potential Mutex deadlock ... Acquiring absl::Mutex X while
// holding X". A query that reads two projections, or a view and the
// status, is ordinary use. Runs in a forked copy so an abort fails only
// this test.
TEST(ProjectionTest, NestedViewsAndStatusOnOneThread) {
  TempDir dir;
  const int wait_status = testing::RunInForkedChild([&]() -> int {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir.path(), TestStoreOptions());
    if (!store.ok()) return 10;
    absl::StatusOr<std::unique_ptr<ProjectionRunner>> runner =
        ProjectionRunner::Start(store->get(), {LedgerProjection(), TypedProjection()});
    if (!runner.ok()) return 11;
    if (!AppendMixed(**store, 20).ok()) return 12;
    if (!(*runner)->WaitFor(kLedger, 20, kLong).ok()) return 13;
    if (!(*runner)->WaitFor(kTyped, 20, kLong).ok()) return 13;
    absl::StatusOr<std::unique_ptr<ReadModelView>> ledger = (*runner)->View(kLedger);
    if (!ledger.ok()) return 14;
    fprintf(stderr, "opening a second view while the first is open\n");
    absl::StatusOr<std::unique_ptr<ReadModelView>> typed = (*runner)->View(kTyped);
    if (!typed.ok()) return 15;
    fprintf(stderr, "taking a status while two views are open\n");
    absl::StatusOr<ProjectionStatus> st = (*runner)->Status(kLedger);
    if (!st.ok()) return 16;
    if ((*ledger)->checkpoint() != 20 || (*typed)->checkpoint() != 20) return 17;
    if (CheckLedgerView(**ledger) != "") return 18;
    return 0;
  });
  EXPECT_TRUE(testing::ExitedWithCode(wait_status, 0)) << testing::DescribeWaitStatus(wait_status);
}

// Two views on one thread while a growth of the derived map waits for the
// first of them ("big" fills the 1 MiB map). The resize lock lets a thread
// that already holds a transaction take another while a growth waits, by
// counting holds per thread (lmdb_env.cc, held_by_this_thread).
//
// A view may be used "from any one thread at a time" (read_model.h), so it
// may be created on one thread and destroyed on another. Such a view leaves
// both counts wrong (+1 on the opener, -1 on the releaser). The releasing
// thread then holds a view while its count says 0, so its second view
// waits for the pending growth, which waits for the first view: deadlock.
// (On the opener the stale +1 lets it start transactions while the map is
// being resized, which LMDB forbids.) Runs in a forked copy, killed after
// 30 s.
int NestedViewsWhileGrowingBody(const std::string& dir, bool move_a_view_first) {
  StoreOptions store_options = TestStoreOptions();
  store_options.initial_map_size = size_t{1} << 20;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir, store_options);
  if (!store.ok()) return 10;
  ProjectionDef big;
  big.name = "big";
  big.tables = {"blobs"};
  big.apply = [](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    return txn.Put("blobs", PosKey(e.position()), std::string(256 << 10, 'x'));
  };
  RunnerOptions options;
  options.batch_size = 4;
  absl::StatusOr<std::unique_ptr<ProjectionRunner>> runner =
      ProjectionRunner::Start(store->get(), {LedgerProjection(), big}, options);
  if (!runner.ok()) return 11;
  if (!AppendMixed(**store, 1).ok()) return 12;
  if (!(*runner)->WaitFor(kLedger, 1, kLong).ok()) return 13;
  if (!(*runner)->WaitFor("big", 1, kLong).ok()) return 13;
  if (move_a_view_first) {
    // Opened on another thread, released on this one.
    absl::StatusOr<std::unique_ptr<ReadModelView>> moved;
    std::thread opener([&] { moved = (*runner)->View(kLedger); });
    opener.join();
    if (!moved.ok()) return 14;
    moved->reset();
  }

  absl::StatusOr<std::unique_ptr<ReadModelView>> first = (*runner)->View(kLedger);
  if (!first.ok()) return 15;
  // 10 MiB of rows for "big": it has to grow the map while `first` is open.
  if (!AppendMixed(**store, 40, 1).ok()) return 16;
  absl::SleepFor(absl::Milliseconds(300));  // lets "big" reach the growth
  fprintf(stderr, "opening a second view while the first is open\n");
  absl::StatusOr<std::unique_ptr<ReadModelView>> second = (*runner)->View(kLedger);
  if (!second.ok()) return 17;
  fprintf(stderr, "second view open\n");
  if (CheckLedgerView(**first) != "" || CheckLedgerView(**second) != "") return 18;
  return 0;
}

// Runs NestedViewsWhileGrowingBody in a forked copy; false (and a failure)
// when it hangs for 30 s.
void ExpectNestedViewsWhileGrowing(bool move_a_view_first) {
  TempDir dir;
  fflush(stdout);
  fflush(stderr);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(NestedViewsWhileGrowingBody(dir.path(), move_a_view_first));
  int wait_status = 0;
  const bool ended =
      WaitUntil([&] { return waitpid(pid, &wait_status, WNOHANG) == pid; }, absl::Seconds(30));
  if (!ended) {
    kill(pid, SIGKILL);
    waitpid(pid, &wait_status, 0);
  }
  EXPECT_TRUE(ended) << "deadlocked: the second view never came";
  if (ended) {
    EXPECT_TRUE(testing::ExitedWithCode(wait_status, 0))
        << testing::DescribeWaitStatus(wait_status);
  }
}

// The case the resize lock's per-thread count is for: nested views on one
// thread while a growth waits.
TEST(ProjectionTest, NestedViewsWhileTheMapGrows) { ExpectNestedViewsWhileGrowing(false); }

TEST(ProjectionTest, ViewReleasedOnAnotherThreadThenNestedViews) {
  ExpectNestedViewsWhileGrowing(true);
}

}  // namespace
}  // namespace rill::testing
