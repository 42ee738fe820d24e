// The projection runner follows the log: filters by type and stream prefix
// (checkpoints pass the events no filter matches), commits of this process
// wake it without polling, and WaitFor's deadline and unknown names.
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
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

// Records every event it is given: seen/<position> = "<stream> <type>".
ProjectionDef Recorder(const std::string& name, EventFilter filter) {
  ProjectionDef def;
  def.name = name;
  def.filter = std::move(filter);
  def.tables = {"seen"};
  def.apply = [](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    return txn.Put("seen", PosKey(e.position()), absl::StrCat(e.stream(), " ", e.type()));
  };
  return def;
}

// --- Filters -----------------------------------------------------------------

TEST(ProjectionTest, FiltersByTypeAndPrefixAndCheckpointPassesOtherEvents) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  EventFilter by_type, by_prefix, both, none;
  by_type.types = {"Opened", "Closed"};
  by_prefix.stream_prefix = "acct-";
  both.types = {"Updated"};
  both.stream_prefix = "misc-";
  none.types = {"NeverWritten"};
  const std::vector<ProjectionDef> defs = {Recorder("by_type", by_type),
                                           Recorder("by_prefix", by_prefix), Recorder("both", both),
                                           Recorder("none", none)};
  RunnerOptions options;
  options.batch_size = 16;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), defs, options));
  RILL_ASSERT_OK(AppendMixed(*store, 200).status());
  // The log ends with events no filter matches: the checkpoints must still
  // reach the head.
  RILL_ASSERT_OK(store
                     ->Append("other-1", ExpectedVersion::Any(),
                              {MakeEvent("Other", 1), MakeEvent("Other", 2)})
                     .status());
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store->HeadPosition());
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log, WholeLog(*store));
  for (const ProjectionDef& def : defs) {
    SCOPED_TRACE(def.name);
    RILL_ASSERT_OK(runner->WaitFor(def.name, head, kLong));
    ModelDump want;
    want["seen"];
    for (const RecordedEvent& e : log) {
      if (MatchesFilter(def.filter, e)) {
        want["seen"][PosKey(e.position)] = absl::StrCat(e.stream, " ", e.type);
      }
    }
    if (def.name == "none") {
      EXPECT_TRUE(want["seen"].empty());
    } else {
      EXPECT_GT(want["seen"].size(), 0u);
      EXPECT_LT(want["seen"].size(), head);
    }
    RILL_ASSERT_OK_AND_ASSIGN(const ModelDump got, Dump(*runner, def));
    EXPECT_EQ(got, want);
    RILL_ASSERT_OK_AND_ASSIGN(const ProjectionStatus st, runner->Status(def.name));
    EXPECT_EQ(st.checkpoint, head);
    EXPECT_EQ(st.lag_events, 0u);
    EXPECT_EQ(st.events_applied, want["seen"].size());
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view, runner->View(def.name));
    EXPECT_EQ(view->checkpoint(), head);
  }
}

// --- Waking and WaitFor
// -----------------------------------------------------------

TEST(ProjectionTest, FollowsCommitsOfThisProcessWithoutPolling) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  RunnerOptions options;
  options.poll_interval = absl::Hours(1);  // a poll would never come in time
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {LedgerProjection()}, options));
  for (int i = 0; i < 20; ++i) {
    RILL_ASSERT_OK_AND_ASSIGN(AppendResult r, store->Append(MixedStream(i), ExpectedVersion::Any(),
                                                            {MakeEvent(MixedType(i), i)}));
    RILL_ASSERT_OK(runner->WaitFor(kLedger, r.last_position, kLong));
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view, runner->View(kLedger));
    EXPECT_GE(view->checkpoint(), r.last_position);
    EXPECT_EQ(CheckLedgerView(*view), "");
  }
}

// Rebuild() and RetryParked() are in-process requests: they wake the worker
// (Worker::Rebuild and RunOnWorker call store->Wake()) and must not wait for
// the poll interval, which is documented as the period for *other
// processes'* commits and requests.
TEST(ProjectionTest, InProcessRebuildAndRetryDoNotWaitForThePollInterval) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  RunnerOptions options;
  options.poll_interval = absl::Hours(1);
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
      ProjectionRunner::Start(store.get(),
                              {LedgerProjection(), ::rill::testing::ParkingProjection()}, options));
  RILL_ASSERT_OK(AppendMixed(*store, 30).status());
  RILL_ASSERT_OK(runner->WaitFor(kLedger, 30, kLong));
  RILL_ASSERT_OK(runner->WaitFor(::rill::testing::kParking, 30, kLong));

  RILL_ASSERT_OK(runner->Rebuild(kLedger));
  ProjectionStatus st;
  // The rebuild re-applies all 30 events: applied 30 + 30 once it is done.
  EXPECT_TRUE(AwaitStatus(
      *runner, kLedger,
      [](const ProjectionStatus& s) { return s.events_applied == 60 && RebuildDone(s); }, &st,
      absl::Seconds(10)))
      << "Rebuild() not carried out within 10 s with a 1 h poll interval: "
         "state "
      << ProjectionStateName(st.state) << ", events_applied " << st.events_applied
      << ", rebuild_version " << st.rebuild_version;

  // Position 13 is parked (poison); a retry fails again, at once.
  absl::Notification retried;
  absl::Status retry_status;
  std::thread retry([&] {
    retry_status = runner->RetryParked(::rill::testing::kParking, 13);
    retried.Notify();
  });
  const bool returned = retried.WaitForNotificationWithTimeout(absl::Seconds(10));
  EXPECT_TRUE(returned) << "RetryParked did not return within 10 s with a 1 h poll interval";
  if (!returned) runner->Stop();  // ends the wait so the thread can be joined
  retry.join();
  if (returned) {
    EXPECT_FALSE(retry_status.ok());
    EXPECT_TRUE(absl::StrContains(retry_status.message(), "poison at position 13")) << retry_status;
  }
}

TEST(ProjectionTest, WaitForDeadlineExceededAndUnknownProjection) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {LedgerProjection()}));
  RILL_ASSERT_OK(AppendMixed(*store, 5).status());
  RILL_ASSERT_OK(runner->WaitFor(kLedger, 5, kLong));
  // Nothing at position 6 yet.
  absl::Status s = runner->WaitFor(kLedger, 6, absl::Milliseconds(50));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  // A waiter is woken by the batch that reaches its position.
  absl::Status waited;
  std::thread waiter([&] { waited = runner->WaitFor(kLedger, 7, kLong); });
  RILL_ASSERT_OK(AppendMixed(*store, 2, 5).status());
  waiter.join();
  RILL_EXPECT_OK(waited);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view, runner->View(kLedger));
  EXPECT_GE(view->checkpoint(), 7u);
  EXPECT_EQ(view->Get("not_a_table", "k").status().code(), absl::StatusCode::kNotFound);
  view.reset();

  EXPECT_EQ(runner->WaitFor("nope", 1, absl::Seconds(1)).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(runner->View("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(runner->Status("nope").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace rill::testing
