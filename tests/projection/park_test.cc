// The park error policy: dead letters are listed, retried and dropped, and
// belong to the generation that parked them, so that a rebuild (applied,
// in progress or retired) neither loses a parked event nor applies it twice.
#include <signal.h>

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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

// A ledger renamed "parker" with ErrorPolicy::kPark that fails at the
// positions in *bad while *broken.
ProjectionDef Parker(std::shared_ptr<std::atomic<bool>> broken, std::set<uint64_t> bad,
                     int max_attempts = 4) {
  ProjectionDef def = Renamed(LedgerProjection(), "parker");
  def.error_policy = ErrorPolicy::kPark;
  def.max_attempts = max_attempts;
  def.retry_backoff = absl::Milliseconds(1);
  auto inner = def.apply;
  def.apply = [inner, broken, bad](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    if (broken->load() && bad.count(e.position()) > 0) {
      return absl::InternalError(absl::StrCat("cannot digest ", e.position()));
    }
    return inner(e, txn);
  };
  return def;
}

// The count and applied/<position> of the parker's serving model.
struct ParkerModel {
  int64_t count = 0;
  std::set<uint64_t> applied;
  std::map<uint64_t, std::string> times;  // position -> times applied
};
absl::StatusOr<ParkerModel> ReadParker(ProjectionRunner& runner) {
  absl::StatusOr<std::unique_ptr<ReadModelView>> view = runner.View("parker");
  if (!view.ok()) return view.status();
  ParkerModel m;
  absl::StatusOr<std::optional<std::string>> count = (*view)->Get("totals", "count");
  if (!count.ok()) return count.status();
  if (count->has_value() && !absl::SimpleAtoi(**count, &m.count)) {
    return absl::DataLossError("bad count");
  }
  absl::Status s = (*view)->Scan("applied", "", [&m](absl::string_view k, absl::string_view v) {
    uint64_t p = 0;
    if (absl::SimpleAtoi(k, &p)) {
      m.applied.insert(p);
      m.times[p] = std::string(v);
    }
    return true;
  });
  if (!s.ok()) return s;
  return m;
}

TEST(ProjectionTest, ParkPolicyListsRetriesAndDropsDeadLetters) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  auto broken = std::make_shared<std::atomic<bool>>(true);
  const ProjectionDef parker = Parker(broken, {3, 7});
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {parker}));
  const absl::Time before = absl::Now();
  RILL_ASSERT_OK(AppendMixed(*store, 10).status());
  RILL_ASSERT_OK(runner->WaitFor("parker", 10, kLong));  // it went on past 3 and 7
  const absl::Time after = absl::Now();
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log, WholeLog(*store));

  RILL_ASSERT_OK_AND_ASSIGN(ProjectionStatus st, runner->Status("parker"));
  EXPECT_EQ(st.checkpoint, 10u);
  EXPECT_EQ(st.parked, 2u);
  EXPECT_EQ(st.events_applied, 8u);
  EXPECT_EQ(st.errors, 8u);  // 4 attempts each
  EXPECT_NE(st.state, ProjectionState::kFailed);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<ParkedEvent> parked, runner->ListParked("parker"));
  ASSERT_EQ(ParkedPositions(parked), (std::vector<uint64_t>{3, 7}));
  for (const ParkedEvent& p : parked) {
    SCOPED_TRACE(p.position);
    EXPECT_EQ(p.stream, log[p.position - 1].stream);
    EXPECT_EQ(p.type, log[p.position - 1].type);
    EXPECT_TRUE(absl::StrContains(p.error, absl::StrCat("cannot digest ", p.position))) << p.error;
    EXPECT_EQ(p.attempts, 4);
    EXPECT_GE(p.parked_at, before - absl::Seconds(1));
    EXPECT_LE(p.parked_at, after + absl::Seconds(1));
  }
  RILL_ASSERT_OK_AND_ASSIGN(ParkerModel m, ReadParker(*runner));
  EXPECT_EQ(m.count, 8);
  EXPECT_EQ(m.applied, (std::set<uint64_t>{1, 2, 4, 5, 6, 8, 9, 10}));

  // Still broken: the retry fails with Apply's error and the event stays.
  absl::Status s = runner->RetryParked("parker", 3);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "cannot digest 3")) << s;
  RILL_ASSERT_OK_AND_ASSIGN(parked, runner->ListParked("parker"));
  EXPECT_EQ(ParkedPositions(parked), (std::vector<uint64_t>{3, 7}));

  // Fixed: the retry applies it once and it leaves the table.
  broken->store(false);
  RILL_ASSERT_OK(runner->RetryParked("parker", 3));
  RILL_ASSERT_OK_AND_ASSIGN(m, ReadParker(*runner));
  EXPECT_EQ(m.count, 9);
  EXPECT_EQ(m.times[3], "1");
  RILL_ASSERT_OK_AND_ASSIGN(parked, runner->ListParked("parker"));
  EXPECT_EQ(ParkedPositions(parked), (std::vector<uint64_t>{7}));
  RILL_ASSERT_OK_AND_ASSIGN(st, runner->Status("parker"));
  EXPECT_EQ(st.parked, 1u);
  // Not parked any more: no second application.
  EXPECT_EQ(runner->RetryParked("parker", 3).code(), absl::StatusCode::kNotFound);
  RILL_ASSERT_OK_AND_ASSIGN(m, ReadParker(*runner));
  EXPECT_EQ(m.count, 9);
  EXPECT_EQ(m.times[3], "1");

  // Dropped: gone from the table, never applied.
  RILL_ASSERT_OK(runner->DropParked("parker", 7));
  RILL_ASSERT_OK_AND_ASSIGN(parked, runner->ListParked("parker"));
  EXPECT_TRUE(parked.empty());
  EXPECT_EQ(runner->DropParked("parker", 7).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(runner->RetryParked("parker", 7).code(), absl::StatusCode::kNotFound);
  RILL_ASSERT_OK_AND_ASSIGN(st, runner->Status("parker"));
  EXPECT_EQ(st.parked, 0u);
  RILL_ASSERT_OK_AND_ASSIGN(m, ReadParker(*runner));
  EXPECT_EQ(m.count, 9);
  EXPECT_EQ(m.applied.count(7), 0u);

  // And it goes on with new events.
  RILL_ASSERT_OK(AppendMixed(*store, 2, 10).status());
  RILL_ASSERT_OK(runner->WaitFor("parker", 12, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(m, ReadParker(*runner));
  EXPECT_EQ(m.count, 11);
}

// A parked event that a later rebuild applies (the fault was fixed) is in
// the new serving model; it must not stay listed as parked, or a retry
// applies it a second time.
TEST(ProjectionTest, RebuildThatAppliesAParkedEventLeavesNoDeadLetter) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  auto broken = std::make_shared<std::atomic<bool>>(true);
  const ProjectionDef parker = Parker(broken, {3});
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {parker}));
  RILL_ASSERT_OK(AppendMixed(*store, 10).status());
  RILL_ASSERT_OK(runner->WaitFor("parker", 10, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<ParkedEvent> parked, runner->ListParked("parker"));
  ASSERT_EQ(ParkedPositions(parked), (std::vector<uint64_t>{3}));

  broken->store(false);
  RILL_ASSERT_OK(runner->Rebuild("parker"));
  // 9 applied before, 10 by the rebuild.
  ProjectionStatus st;
  ASSERT_TRUE(AwaitStatus(
      *runner, "parker",
      [](const ProjectionStatus& s) { return s.events_applied == 19 && RebuildDone(s); }, &st))
      << "events_applied " << st.events_applied;
  RILL_ASSERT_OK_AND_ASSIGN(ParkerModel m, ReadParker(*runner));
  EXPECT_EQ(m.count, 10);
  EXPECT_EQ(m.times[3], "1");

  RILL_ASSERT_OK_AND_ASSIGN(parked, runner->ListParked("parker"));
  EXPECT_TRUE(parked.empty()) << "position " << parked.front().position
                              << " is listed as parked, but the serving model applied it";
  EXPECT_EQ(st.parked, 0u);
  // Whatever RetryParked answers, the event must not be applied twice.
  (void)runner->RetryParked("parker", 3);
  RILL_ASSERT_OK_AND_ASSIGN(m, ReadParker(*runner));
  EXPECT_EQ(m.times[3], "1") << "event 3 applied " << m.times[3] << " times";
  EXPECT_EQ(m.count, 10);
}

// A parked event must end up either applied or parked. Here a rebuild parks
// it again in the new generation (same dead-letter key), then a retry of the
// old generation's dead letter succeeds and deletes that key; after the swap
// the serving model lacks the event and nothing lists it.
TEST(ProjectionTest, RetryDuringRebuildDoesNotLoseTheEvent) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  auto broken = std::make_shared<std::atomic<bool>>(true);
  Gate gate;
  OpenOnExit open_on_exit{&gate};
  auto at = std::make_shared<std::atomic<uint64_t>>(0);
  const ProjectionDef parker = BlockAt(Parker(broken, {3}, /*max_attempts=*/1), at, &gate);
  RunnerOptions options;
  options.batch_size = 4;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {parker}, options));
  RILL_ASSERT_OK(AppendMixed(*store, 40).status());
  RILL_ASSERT_OK(runner->WaitFor("parker", 40, kLong));
  // Only the rebuild re-applies position 20: it has parked 3 again by then.
  at->store(20);
  RILL_ASSERT_OK(runner->Rebuild("parker"));
  ASSERT_TRUE(gate.AwaitWaiter(kLong));
  RILL_ASSERT_OK_AND_ASSIGN(ProjectionStatus st, runner->Status("parker"));
  EXPECT_EQ(st.state, ProjectionState::kRebuilding);
  EXPECT_GE(st.rebuild_checkpoint, 4u);

  broken->store(false);
  absl::Status retried;
  std::thread retry([&] { retried = runner->RetryParked("parker", 3); });
  // RetryParked runs on the (blocked) worker thread; give it time to queue
  // so that it runs before the rebuild's remaining batches. If it queues
  // later the test checks an easier interleaving; it can never fail
  // spuriously, as the final check holds for every correct interleaving.
  absl::SleepFor(absl::Milliseconds(200));
  gate.Open();
  retry.join();
  ASSERT_TRUE(AwaitStatus(*runner, "parker", RebuildDone, &st));
  RILL_ASSERT_OK(runner->WaitFor("parker", 40, kLong));

  RILL_ASSERT_OK_AND_ASSIGN(const ParkerModel m, ReadParker(*runner));
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<ParkedEvent> parked, runner->ListParked("parker"));
  const bool applied = m.applied.count(3) > 0;
  const bool listed = !parked.empty() && parked.front().position == 3;
  EXPECT_TRUE(applied != listed) << "RetryParked: " << retried << "; event 3 applied: " << applied
                                 << ", parked: " << listed;
  if (applied) {
    EXPECT_EQ(m.times.at(3), "1");
  }
}

// Dead letters belong to the generation that parked them. A rebuild that
// parked events and is then retired without being swapped in (a runner
// started with another version retires it) must not leave its dead letters
// behind: the next generation applies those events, and a retry of a stale
// letter applies the event a second time.
TEST(ProjectionTest, RetiredRebuildLeavesNoStaleDeadLetters) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(store_dir, TestStoreOptions()));
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, AppendMixed(*store, 40));
  auto parking_status = [&]() -> std::optional<ProjectionStatus> {
    absl::StatusOr<std::vector<ProjectionStatus>> all = ReadProjectionStatuses(store.get());
    if (!all.ok()) return std::nullopt;
    for (const ProjectionStatus& st : *all) {
      if (st.name == ::rill::testing::kParking) return st;
    }
    return std::nullopt;
  };
  // A child runs "parking" v1 (13, 26, 39 are poison) to the head, parking
  // them, and exits.
  {
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ChildProcess> child,
        ChildProcess::Start("projector_child", {"mode=run", "dir=" + store_dir, "batch=4"},
                            dir.Sub("first.stderr")));
    RILL_ASSERT_OK_AND_ASSIGN(const std::string line, child->ReadLine(kLong));
    ASSERT_EQ(line, "ready") << child->Stderr();
    ASSERT_TRUE(WaitUntil(
        [&] {
          std::optional<ProjectionStatus> st = parking_status();
          return st.has_value() && st->checkpoint == head;
        },
        kLong));
    child->CloseStdin();
    ASSERT_TRUE(testing::ExitedWithCode(child->Wait(), 0)) << child->Stderr();
  }
  // A requested rebuild of v1 parks 13 and 26 again and is killed at 30.
  RILL_ASSERT_OK(RequestRebuild(store.get(), ::rill::testing::kParking));
  {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ChildProcess> child,
                              ChildProcess::Start("projector_child",
                                                  {"mode=run", "dir=" + store_dir, "batch=4",
                                                   "stall_in=parking", "stall_at=30"},
                                                  dir.Sub("second.stderr")));
    std::set<std::string> lines;
    while (lines.count("stalled 30") == 0) {
      RILL_ASSERT_OK_AND_ASSIGN(const std::string line, child->ReadLine(kLong));
      lines.insert(line);
    }
    child->Kill(SIGKILL);
    child->Wait();
  }
  std::optional<ProjectionStatus> st = parking_status();
  ASSERT_TRUE(st.has_value());
  ASSERT_EQ(st->rebuild_version, 1u);
  ASSERT_EQ(st->rebuild_checkpoint, 28u);  // batches 1-4 ... 25-28 committed
  EXPECT_EQ(st->parked,
            3u);  // 13 and 26 now under the rebuild's generation, 39 under the old

  // Version 2 applies every event. Starting it retires the v1 rebuild; the
  // new generation applies 13 and 26 and is swapped in.
  ProjectionDef v2 = ::rill::testing::ParkingProjection(2);
  v2.apply = [](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    if (absl::Status s = AddInt(txn, "totals", "count", 1); !s.ok()) return s;
    return AddInt(txn, "applied", PosKey(e.position()), 1);
  };
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProjectionRunner> runner,
                            ProjectionRunner::Start(store.get(), {v2}));
  ProjectionStatus now;
  ASSERT_TRUE(AwaitStatus(
      *runner, v2.name, [](const ProjectionStatus& s) { return s.version == 2 && RebuildDone(s); },
      &now));
  RILL_ASSERT_OK(runner->WaitFor(v2.name, head, kLong));
  ModelDump want;
  want["totals"]["count"] = absl::StrCat(head);
  for (uint64_t p = 1; p <= head; ++p) want["applied"][PosKey(p)] = "1";
  EXPECT_EQ(*Dump(*runner, v2), want);

  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<ParkedEvent> parked, runner->ListParked(v2.name));
  EXPECT_TRUE(parked.empty()) << parked.size() << " stale dead letters, the first at position "
                              << parked.front().position;
  RILL_ASSERT_OK_AND_ASSIGN(now, runner->Status(v2.name));
  EXPECT_EQ(now.parked, 0u);
  // Whatever RetryParked answers, no event may be applied twice.
  (void)runner->RetryParked(v2.name, 13);
  EXPECT_EQ(*Dump(*runner, v2), want);
}

}  // namespace
}  // namespace rill::testing
