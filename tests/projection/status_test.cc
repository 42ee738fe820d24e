// Status (checkpoint, lag, applied events, errors; live and as recorded for
// the admin tool) and the stop error policy: a projection fails before the
// bad event, keeps serving its model, and goes on once fixed and restarted.
#include <atomic>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "projection_test_util.h"
#include "projector_defs.h"
#include "rill/projection.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill::testing {
namespace {

// --- Status
// -------------------------------------------------------------------

TEST(ProjectionTest, StatusReportsCheckpointLagAppliedAndErrors) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  // Fails the first attempt at every 4th position, then succeeds.
  auto failed_once = std::make_shared<std::set<uint64_t>>();
  auto mu = std::make_shared<absl::Mutex>();
  ProjectionDef flaky = Renamed(LedgerProjection(), "flaky");
  flaky.retry_backoff = absl::Milliseconds(1);
  auto inner = flaky.apply;
  flaky.apply = [inner, failed_once, mu](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    {
      absl::MutexLock lock(mu.get());
      if (e.position() % 4 == 0 && failed_once->insert(e.position()).second) {
        // A write before the failure must be thrown away with the attempt.
        if (absl::Status s = AddInt(txn, "totals", "count", 1000); !s.ok()) return s;
        return absl::UnavailableError(absl::StrCat("transient at ", e.position()));
      }
    }
    return inner(e, txn);
  };
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {flaky}));
  RILL_ASSERT_OK(AppendMixed(*store, 40).status());
  RILL_ASSERT_OK(runner->WaitFor("flaky", 40, kLong));
  ProjectionStatus st;
  ASSERT_TRUE(AwaitStatus(
      *runner, "flaky",
      [](const ProjectionStatus& s) { return s.state == ProjectionState::kCaughtUp; }, &st))
      << ProjectionStateName(st.state);
  EXPECT_EQ(st.name, "flaky");
  EXPECT_EQ(st.version, 1u);
  EXPECT_EQ(st.checkpoint, 40u);
  EXPECT_EQ(st.head, 40u);
  EXPECT_EQ(st.lag_events, 0u);
  EXPECT_EQ(st.lag_time, absl::ZeroDuration());
  EXPECT_EQ(st.events_applied, 40u);
  EXPECT_EQ(st.errors, 10u);  // one failed attempt at 4, 8, ..., 40
  EXPECT_EQ(st.parked, 0u);
  EXPECT_EQ(st.rebuild_version, 0u);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view, runner->View("flaky"));
  EXPECT_EQ(CheckLedgerView(*view),
            "");  // the failed attempts' writes are gone
  view.reset();
  const std::vector<ProjectionStatus> all = runner->Statuses();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].name, "flaky");
  EXPECT_EQ(all[0].checkpoint, 40u);

  // Stopped: the lag grows with the log.
  runner->Stop();
  RILL_ASSERT_OK(AppendMixed(*store, 7, 40).status());
  RILL_ASSERT_OK_AND_ASSIGN(st, runner->Status("flaky"));
  EXPECT_EQ(st.state, ProjectionState::kStopped);
  EXPECT_EQ(st.checkpoint, 40u);
  EXPECT_EQ(st.head, 47u);
  EXPECT_EQ(st.lag_events, st.head - st.checkpoint);
  EXPECT_GT(st.lag_time, absl::ZeroDuration());
  absl::Status s = runner->WaitFor("flaky", 47, kLong);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  RILL_EXPECT_OK(runner->WaitFor("flaky", 40, kLong));

  // The recorded part, as the admin tool reads it.
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<ProjectionStatus> recorded,
                            ReadProjectionStatuses(store.get()));
  ASSERT_EQ(recorded.size(), 1u);
  EXPECT_EQ(recorded[0].name, "flaky");
  EXPECT_EQ(recorded[0].checkpoint, 40u);
  EXPECT_EQ(recorded[0].head, 47u);
  EXPECT_EQ(recorded[0].lag_events, 7u);
  // A runner (this process's) holds the projection: running, behind the head.
  // (Its failure lives in the runner; the recorded status cannot know it.)
  EXPECT_EQ(recorded[0].state, ProjectionState::kRunning);
  runner.reset();
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<ProjectionStatus> after_stop,
                            ReadProjectionStatuses(store.get()));
  ASSERT_EQ(after_stop.size(), 1u);
  EXPECT_EQ(after_stop[0].state, ProjectionState::kStopped);
}

// --- Error policy: stop
// -----------------------------------------------------------

TEST(ProjectionTest, StopPolicyFailsBeforeTheEventAndKeepsServing) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  constexpr uint64_t kBad = 20;
  auto broken = std::make_shared<std::atomic<bool>>(true);
  ProjectionDef strict = Renamed(LedgerProjection(), "strict");
  strict.retry_backoff = absl::Milliseconds(1);
  strict.max_attempts = 3;
  auto inner = strict.apply;
  strict.apply = [inner, broken](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    if (e.position() == kBad && broken->load()) {
      return absl::InvalidArgumentError(absl::StrCat("bad event at ", e.position()));
    }
    return inner(e, txn);
  };
  const ProjectionDef other = Renamed(LedgerProjection(), "other");
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                              ProjectionRunner::Start(store.get(), {strict, other}));
    RILL_ASSERT_OK(AppendMixed(*store, kBad - 3).status());
    RILL_ASSERT_OK(runner->WaitFor("strict", kBad - 3, kLong));
    // A waiter past the bad event, waiting when the projection fails.
    absl::Status waited;
    std::thread waiter([&] { waited = runner->WaitFor("strict", kBad + 6, kLong); });
    // One append, so the bad event is in the middle of a batch: kBad-2,
    // kBad-1, kBad, ... kBad+6.
    std::vector<EventData> events;
    for (int i = 0; i < 9; ++i) events.push_back(MakeEvent("Opened", i));
    RILL_ASSERT_OK(store->Append("acct-x", ExpectedVersion::Any(), events).status());
    waiter.join();
    EXPECT_EQ(waited.code(), absl::StatusCode::kFailedPrecondition) << waited;

    ProjectionStatus st;
    ASSERT_TRUE(AwaitStatus(
        *runner, "strict",
        [](const ProjectionStatus& s) { return s.state == ProjectionState::kFailed; }, &st));
    EXPECT_EQ(st.checkpoint,
              kBad - 1);  // the events before it in the batch are in
    EXPECT_TRUE(absl::StrContains(st.last_error, "bad event at 20")) << st.last_error;
    EXPECT_EQ(st.errors, 3u);
    EXPECT_EQ(st.events_applied, kBad - 1);
    EXPECT_EQ(st.lag_events, st.head - st.checkpoint);
    absl::Status s = runner->WaitFor("strict", kBad + 6, kLong);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "bad event at 20")) << s;
    RILL_EXPECT_OK(runner->WaitFor("strict", kBad - 1, kLong));
    // The model keeps serving what it has.
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view, runner->View("strict"));
    EXPECT_EQ(view->checkpoint(), kBad - 1);
    EXPECT_EQ(CheckLedgerView(*view), "");
    view.reset();  // one view per thread at a time (see view_test.cc)

    // The other projection is not affected, and keeps following the log.
    RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, AppendMixed(*store, 10, 100));
    RILL_ASSERT_OK(runner->WaitFor("other", head, kLong));
    RILL_ASSERT_OK_AND_ASSIGN(st, runner->Status("other"));
    EXPECT_EQ(st.events_applied, head);
    EXPECT_EQ(st.errors, 0u);
    RILL_ASSERT_OK_AND_ASSIGN(view, runner->View("other"));
    EXPECT_EQ(view->checkpoint(), head);
    EXPECT_EQ(CheckLedgerView(*view), "");
    view.reset();
    RILL_ASSERT_OK_AND_ASSIGN(st, runner->Status("strict"));
    EXPECT_EQ(st.state, ProjectionState::kFailed);
    EXPECT_EQ(st.checkpoint, kBad - 1);
  }
  // Fixed and started again: it goes on from the checkpoint, applying the
  // events before the bad one no second time.
  broken->store(false);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {strict, other}));
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store->HeadPosition());
  RILL_ASSERT_OK(runner->WaitFor("strict", head, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(const ProjectionStatus st, runner->Status("strict"));
  EXPECT_EQ(st.events_applied, head - (kBad - 1));
  EXPECT_TRUE(st.last_error.empty()) << st.last_error;
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log, WholeLog(*store));
  EXPECT_EQ(*Dump(*runner, strict), FoldLedger(log, head, 1));
}

}  // namespace
}  // namespace rill::testing
