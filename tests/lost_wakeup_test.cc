// Regression test for a lost wakeup found by the ThreadSanitizer run of
// ProjectionTest.InProcessRebuildAndRetryDoNotWaitForThePollInterval.
//
// A projection worker looked at its rebuild flag and its task queue, found
// nothing, and only then started to wait for the head, taking the store's
// wake epoch at the start of the wait. A Rebuild() or RetryParked() that set
// the flag (or queued the task) and called Wake() in between bumped the epoch
// before the wait read it, so the wait slept for the whole poll interval
// (an hour here): the request was carried out late, or never. The worker now
// takes the epoch before it looks, and the wait returns when it has moved.
//
// The window is the moment the worker goes idle, which is exactly when a
// caller that waited for it to catch up is woken: each round waits for the
// caught-up state and makes the request at once.
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "projector_defs.h"
#include "rill/projection.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::kLedger;
using ::rill::testing::kParking;
using ::rill::testing::LedgerProjection;
using ::rill::testing::MakeEvents;
using ::rill::testing::ParkingProjection;
using ::rill::testing::TempDir;

constexpr int kRounds = 200;
// A hang detector: with the bug, a lost request waits for the 1 h poll.
constexpr absl::Duration kHang = absl::Seconds(20);

StoreOptions FastOptions() {
  StoreOptions options;
  options.durability = Durability::kNoSyncUnsafe;
  return options;
}

// Spins (no sleep, to be woken as close as possible to the moment the worker
// goes idle) until the projection is caught up with `applied` events applied.
bool CaughtUp(ProjectionRunner& runner, const std::string& name, uint64_t applied) {
  const absl::Time deadline = absl::Now() + kHang;
  while (absl::Now() < deadline) {
    absl::StatusOr<ProjectionStatus> st = runner.Status(name);
    if (st.ok() && st->state == ProjectionState::kCaughtUp && st->rebuild_version == 0 &&
        st->events_applied == applied) {
      return true;
    }
  }
  return false;
}

TEST(LostWakeupTest, RebuildRequestedAsTheWorkerGoesIdleIsCarriedOut) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir.path(), FastOptions()));
  RunnerOptions options;
  options.poll_interval = absl::Hours(1);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {LedgerProjection()}, options));
  uint64_t applied = 0;
  for (int round = 1; round <= kRounds; ++round) {
    SCOPED_TRACE(round);
    // WaitFor returns as soon as the batch with event `round` committed:
    // the worker is then on its way to its idle wait.
    RILL_ASSERT_OK_AND_ASSIGN(const AppendResult r,
                              store->Append("s", ExpectedVersion::Any(), MakeEvents(1)));
    RILL_ASSERT_OK(runner->WaitFor(kLedger, r.last_position, kHang));
    RILL_ASSERT_OK(runner->Rebuild(kLedger));
    applied += 1 + r.last_position;  // the new event, then all of them again
    ASSERT_TRUE(CaughtUp(*runner, kLedger, applied)) << "request lost (rebuild not carried out)";
  }
}

TEST(LostWakeupTest, RetryParkedAsTheWorkerGoesIdleReturns) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir.path(), FastOptions()));
  // 13 events: position 13 is poison for the parking projection.
  RILL_ASSERT_OK(store->Append("s", ExpectedVersion::Any(), MakeEvents(13)).status());
  RunnerOptions options;
  options.poll_interval = absl::Hours(1);
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {ParkingProjection()}, options));
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(round);
    ASSERT_TRUE(CaughtUp(*runner, kParking, 12));
    absl::Notification returned;
    std::thread retry([&] {
      EXPECT_FALSE(runner->RetryParked(kParking, 13).ok());  // still poison
      returned.Notify();
    });
    const bool ok = returned.WaitForNotificationWithTimeout(kHang);
    if (!ok) runner->Stop();  // ends the wait so that the thread can be joined
    retry.join();
    ASSERT_TRUE(ok) << "RetryParked did not return: its task was not picked up";
  }
}

}  // namespace
}  // namespace rill
