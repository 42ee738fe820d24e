// The projection runner's contract (projection.h, read_model.h,
// docs/projections.md): filters, projections side by side, consistent views
// from many threads, WaitFor, status, the stop and park error policies,
// blue/green rebuilds (on request, on a version bump, requested by another
// process, resumed after an interruption), as-of rebuilds and the
// one-runner-per-projection lock.
//
// No assertion depends on timing: tests wait only through WaitFor or by
// polling Status with generous deadlines that merely turn a hang into a
// failure. Where a test must hold a projection at a chosen point it blocks
// that projection's Apply on a Gate at a chosen position.
//
// Exactly-once across real crashes is projection_crash_test.cc.
#include "rill/projection.h"
#include "rill/projection_admin.h"

#include <signal.h>
#include <stdio.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "keys.h"
#include "lmdb_env.h"
#include "process_util.h"
#include "projector_defs.h"
#include "rill/store.h"
#include "store_core.h"
#include "test_util.h"

namespace rill {

// Readable states in failure messages.
void PrintTo(ProjectionState state, std::ostream* os) {
  *os << ProjectionStateName(state);
}

namespace {

using ::rill::testing::AddInt;
using ::rill::testing::CheckLedgerView;
using ::rill::testing::ChildProcess;
using ::rill::testing::DescribeWaitStatus;
using ::rill::testing::DumpView;
using ::rill::testing::FoldLedger;
using ::rill::testing::FoldTyped;
using ::rill::testing::kLedger;
using ::rill::testing::kTyped;
using ::rill::testing::LedgerProjection;
using ::rill::testing::MakeEvent;
using ::rill::testing::MatchesFilter;
using ::rill::testing::ModelDump;
using ::rill::testing::PosKey;
using ::rill::testing::TempDir;
using ::rill::testing::TypedProjection;
using ::rill::testing::WaitUntil;

// Only turns a hang into a failure; nothing here is expected to take long.
constexpr absl::Duration kLong = absl::Seconds(60);

StoreOptions TestStoreOptions() {
  StoreOptions options;
  options.durability =
      Durability::kNoSyncUnsafe;  // killing a test never loses a commit
  return options;
}

// Event i of the mixed workload: streams "acct-0".."acct-4" and
// "misc-0".."misc-4", types Opened / Updated / Closed, so that filters by
// type, by prefix and by both each select a different proper subset.
std::string MixedStream(int i) {
  return absl::StrCat(i % 2 == 0 ? "acct-" : "misc-", i % 5);
}
std::string MixedType(int i) {
  static const char* const kTypes[] = {"Opened", "Updated", "Closed"};
  return kTypes[(i / 2) % 3];
}

// Appends events first..first+count-1 of the mixed workload, one append
// each; returns the last position.
absl::StatusOr<uint64_t> AppendMixed(Store& store, int count, int first = 0) {
  uint64_t last = 0;
  for (int i = first; i < first + count; ++i) {
    absl::StatusOr<AppendResult> r = store.Append(
        MixedStream(i), ExpectedVersion::Any(), {MakeEvent(MixedType(i), i)});
    if (!r.ok()) return r.status();
    last = r->last_position;
  }
  return last;
}

// Blocks threads in Pass() until Open().
class Gate {
 public:
  void Pass() {
    absl::MutexLock lock(&mu_);
    ++waiting_;
    mu_.Await(absl::Condition(&open_));
    --waiting_;
  }
  void Open() {
    absl::MutexLock lock(&mu_);
    open_ = true;
  }
  // True once a thread waits in Pass().
  bool AwaitWaiter(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto waiting = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return waiting_ > 0;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&waiting), timeout);
  }

 private:
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
};

// Opens the gate when the test ends, however it ends, so that no runner
// thread stays blocked in an Apply (the runner's destructor joins it).
struct OpenOnExit {
  Gate* gate;
  ~OpenOnExit() { gate->Open(); }
};

// `def` whose Apply blocks in `gate` the first time it meets position
// `*at` (0: never); *at goes back to 0 then.
ProjectionDef BlockAt(ProjectionDef def,
                      std::shared_ptr<std::atomic<uint64_t>> at, Gate* gate) {
  auto inner = def.apply;
  def.apply = [inner, at, gate](const EventView& e, ReadModelTxn& txn) {
    uint64_t want = e.position();
    if (at->compare_exchange_strong(want, 0)) gate->Pass();
    return inner(e, txn);
  };
  return def;
}

ProjectionDef Renamed(ProjectionDef def, const std::string& name) {
  def.name = name;
  return def;
}

absl::StatusOr<std::vector<RecordedEvent>> WholeLog(Store& store) {
  return store.ReadAll(1);
}

absl::StatusOr<ModelDump> Dump(ProjectionRunner& runner,
                               const ProjectionDef& def) {
  absl::StatusOr<std::unique_ptr<ReadModelView>> view = runner.View(def.name);
  if (!view.ok()) return view.status();
  return DumpView(**view, def.tables);
}

// Polls Status(name) until `pred` holds; the last status seen goes to *last.
bool AwaitStatus(ProjectionRunner& runner, const std::string& name,
                 const std::function<bool(const ProjectionStatus&)>& pred,
                 ProjectionStatus* last = nullptr,
                 absl::Duration timeout = kLong) {
  ProjectionStatus seen;
  const bool ok = WaitUntil(
      [&] {
        absl::StatusOr<ProjectionStatus> st = runner.Status(name);
        if (!st.ok()) return false;
        seen = *st;
        return pred(seen);
      },
      timeout);
  if (last != nullptr) *last = seen;
  return ok;
}

bool RebuildDone(const ProjectionStatus& st) {
  return st.rebuild_version == 0 && st.state != ProjectionState::kRebuilding;
}

// White box (docs/format.md): the generations that still hold rows in the
// derived environment's "rm" database, whose row keys start with the
// generation id (u64 big-endian). Used to see that a swapped-out
// generation's tables are really dropped.
absl::StatusOr<std::set<uint64_t>> GenerationsWithRows(Store* store) {
  absl::StatusOr<internal::LmdbEnv*> env = store->core()->DerivedEnv();
  if (!env.ok()) return env.status();
  absl::StatusOr<MDB_dbi> rows = (*env)->OpenDb("rm", /*create=*/false);
  if (!rows.ok()) return rows.status();
  absl::StatusOr<internal::Txn> txn = (*env)->BeginRead();
  if (!txn.ok()) return txn.status();
  absl::StatusOr<internal::CursorPtr> cursor = txn->OpenCursor(*rows);
  if (!cursor.ok()) return cursor.status();
  std::set<uint64_t> out;
  MDB_val k, v;
  int rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_FIRST);
  while (rc == 0) {
    if (k.mv_size < 8) return absl::DataLossError("short row key");
    const uint64_t gen =
        internal::GetBigEndian64(static_cast<const uint8_t*>(k.mv_data));
    out.insert(gen);
    uint8_t next[8];
    internal::PutBigEndian64(gen + 1, next);
    k = internal::ToVal(next, sizeof(next));
    rc = mdb_cursor_get(cursor->get(), &k, &v, MDB_SET_RANGE);
  }
  if (rc != MDB_NOTFOUND) return absl::InternalError("cursor error");
  return out;
}

// Views `name` from `threads` threads in a loop until Stop(), checking each
// view with `check` ("" when the view is fine) and that checkpoints never go
// backwards within one thread.
class ViewHammer {
 public:
  ViewHammer(ProjectionRunner* runner, std::string name, int threads,
             std::function<std::string(ReadModelView&)> check)
      : runner_(runner),
        name_(std::move(name)),
        check_(std::move(check)),
        views_(threads) {
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this, t] { Loop(t); });
    }
  }
  ~ViewHammer() { Stop(); }

  // True once every thread has checked at least `n` views.
  bool AwaitViews(int n, absl::Duration timeout = kLong) {
    return WaitUntil(
        [&] {
          for (const auto& v : views_) {
            if (v.load() < n) return false;
          }
          return true;
        },
        timeout);
  }
  void Stop() {
    stop_.store(true);
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  std::vector<std::string> errors() {
    absl::MutexLock lock(&mu_);
    return errors_;
  }
  int64_t total_views() const {
    int64_t n = 0;
    for (const auto& v : views_) n += v.load();
    return n;
  }

 private:
  void Loop(int t) {
    uint64_t last_checkpoint = 0;
    while (!stop_.load()) {
      std::string error;
      {
        absl::StatusOr<std::unique_ptr<ReadModelView>> view =
            runner_->View(name_);
        if (!view.ok()) {
          error = view.status().ToString();
        } else {
          error = check_(**view);
          if (error.empty() && (*view)->checkpoint() < last_checkpoint) {
            error = absl::StrCat("checkpoint went back from ", last_checkpoint,
                                 " to ", (*view)->checkpoint());
          }
          last_checkpoint = (*view)->checkpoint();
        }
      }
      if (!error.empty()) {
        absl::MutexLock lock(&mu_);
        if (errors_.size() < 20) errors_.push_back(error);
      }
      views_[t].fetch_add(1);
    }
  }

  ProjectionRunner* runner_;
  const std::string name_;
  const std::function<std::string(ReadModelView&)> check_;
  std::vector<std::atomic<int64_t>> views_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  absl::Mutex mu_;
  std::vector<std::string> errors_ ABSL_GUARDED_BY(mu_);
};

// Records every event it is given: seen/<position> = "<stream> <type>".
ProjectionDef Recorder(const std::string& name, EventFilter filter) {
  ProjectionDef def;
  def.name = name;
  def.filter = std::move(filter);
  def.tables = {"seen"};
  def.apply = [](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    return txn.Put("seen", PosKey(e.position()),
                   absl::StrCat(e.stream(), " ", e.type()));
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
  const std::vector<ProjectionDef> defs = {
      Recorder("by_type", by_type), Recorder("by_prefix", by_prefix),
      Recorder("both", both), Recorder("none", none)};
  RunnerOptions options;
  options.batch_size = 16;
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
      ProjectionRunner::Start(store.get(), defs, options));
  RILL_ASSERT_OK(AppendMixed(*store, 200).status());
  // The log ends with events no filter matches: the checkpoints must still
  // reach the head.
  RILL_ASSERT_OK(store
                     ->Append("other-1", ExpectedVersion::Any(),
                              {MakeEvent("Other", 1), MakeEvent("Other", 2)})
                     .status());
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store->HeadPosition());
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log,
                            WholeLog(*store));
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
    RILL_ASSERT_OK_AND_ASSIGN(const ProjectionStatus st,
                              runner->Status(def.name));
    EXPECT_EQ(st.checkpoint, head);
    EXPECT_EQ(st.lag_events, 0u);
    EXPECT_EQ(st.events_applied, want["seen"].size());
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view,
                              runner->View(def.name));
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
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
      ProjectionRunner::Start(store.get(), {LedgerProjection()}, options));
  for (int i = 0; i < 20; ++i) {
    RILL_ASSERT_OK_AND_ASSIGN(
        AppendResult r, store->Append(MixedStream(i), ExpectedVersion::Any(),
                                      {MakeEvent(MixedType(i), i)}));
    RILL_ASSERT_OK(runner->WaitFor(kLedger, r.last_position, kLong));
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view,
                              runner->View(kLedger));
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
      ProjectionRunner::Start(
          store.get(),
          {LedgerProjection(), ::rill::testing::ParkingProjection()}, options));
  RILL_ASSERT_OK(AppendMixed(*store, 30).status());
  RILL_ASSERT_OK(runner->WaitFor(kLedger, 30, kLong));
  RILL_ASSERT_OK(runner->WaitFor(::rill::testing::kParking, 30, kLong));

  RILL_ASSERT_OK(runner->Rebuild(kLedger));
  ProjectionStatus st;
  // The rebuild re-applies all 30 events: applied 30 + 30 once it is done.
  EXPECT_TRUE(AwaitStatus(
      *runner, kLedger,
      [](const ProjectionStatus& s) {
        return s.events_applied == 60 && RebuildDone(s);
      },
      &st, absl::Seconds(10)))
      << "Rebuild() not carried out within 10 s with a 1 h poll interval: "
         "state "
      << ProjectionStateName(st.state) << ", events_applied "
      << st.events_applied << ", rebuild_version " << st.rebuild_version;

  // Position 13 is parked (poison); a retry fails again, at once.
  absl::Notification retried;
  absl::Status retry_status;
  std::thread retry([&] {
    retry_status = runner->RetryParked(::rill::testing::kParking, 13);
    retried.Notify();
  });
  const bool returned =
      retried.WaitForNotificationWithTimeout(absl::Seconds(10));
  EXPECT_TRUE(returned)
      << "RetryParked did not return within 10 s with a 1 h poll interval";
  if (!returned) runner->Stop();  // ends the wait so the thread can be joined
  retry.join();
  if (returned) {
    EXPECT_FALSE(retry_status.ok());
    EXPECT_TRUE(
        absl::StrContains(retry_status.message(), "poison at position 13"))
        << retry_status;
  }
}

TEST(ProjectionTest, WaitForDeadlineExceededAndUnknownProjection) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
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
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view,
                            runner->View(kLedger));
  EXPECT_GE(view->checkpoint(), 7u);
  EXPECT_EQ(view->Get("not_a_table", "k").status().code(),
            absl::StatusCode::kNotFound);
  view.reset();

  EXPECT_EQ(runner->WaitFor("nope", 1, absl::Seconds(1)).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(runner->View("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(runner->Status("nope").status().code(),
            absl::StatusCode::kNotFound);
}

// --- Side by side
// ---------------------------------------------------------------

TEST(ProjectionTest, BlockedProjectionDoesNotHoldBackTheOthers) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  Gate gate;
  OpenOnExit open_on_exit{&gate};
  auto at = std::make_shared<std::atomic<uint64_t>>(1);
  const ProjectionDef slow =
      BlockAt(Renamed(LedgerProjection(), "slow"), at, &gate);
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
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> slow_view,
                            runner->View("slow"));
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
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log,
                            WholeLog(*store));
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
  store_options.initial_map_size = size_t{1}
                                   << 20;  // the derived env starts at 1 MiB
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), store_options));
  Gate gate;
  OpenOnExit open_on_exit{&gate};
  ProjectionDef slow;
  slow.name = "slow";
  slow.tables = {"t"};
  slow.apply = [&gate](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    absl::StatusOr<std::optional<std::string>> old =
        txn.Get("t", "k");  // reads its model
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
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
      ProjectionRunner::Start(store.get(), {slow, big}, options));
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head,
                            AppendMixed(*store, 40));  // 10 MiB of rows
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

// --- Views
// ----------------------------------------------------------------------

TEST(ProjectionTest, ViewsFromManyThreadsAreConsistentWhileTheRunnerWrites) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  RunnerOptions options;
  options.batch_size = 8;  // many small commits
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
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
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log,
                            WholeLog(*store));
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
    absl::StatusOr<std::unique_ptr<Store>> store =
        Store::Open(dir.path(), TestStoreOptions());
    if (!store.ok()) return 10;
    absl::StatusOr<std::unique_ptr<ProjectionRunner>> runner =
        ProjectionRunner::Start(store->get(),
                                {LedgerProjection(), TypedProjection()});
    if (!runner.ok()) return 11;
    if (!AppendMixed(**store, 20).ok()) return 12;
    if (!(*runner)->WaitFor(kLedger, 20, kLong).ok()) return 13;
    if (!(*runner)->WaitFor(kTyped, 20, kLong).ok()) return 13;
    absl::StatusOr<std::unique_ptr<ReadModelView>> ledger =
        (*runner)->View(kLedger);
    if (!ledger.ok()) return 14;
    fprintf(stderr, "opening a second view while the first is open\n");
    absl::StatusOr<std::unique_ptr<ReadModelView>> typed =
        (*runner)->View(kTyped);
    if (!typed.ok()) return 15;
    fprintf(stderr, "taking a status while two views are open\n");
    absl::StatusOr<ProjectionStatus> st = (*runner)->Status(kLedger);
    if (!st.ok()) return 16;
    if ((*ledger)->checkpoint() != 20 || (*typed)->checkpoint() != 20)
      return 17;
    if (CheckLedgerView(**ledger) != "") return 18;
    return 0;
  });
  EXPECT_TRUE(testing::ExitedWithCode(wait_status, 0))
      << testing::DescribeWaitStatus(wait_status);
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
int NestedViewsWhileGrowingBody(const std::string& dir,
                                bool move_a_view_first) {
  StoreOptions store_options = TestStoreOptions();
  store_options.initial_map_size = size_t{1} << 20;
  absl::StatusOr<std::unique_ptr<Store>> store =
      Store::Open(dir, store_options);
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

  absl::StatusOr<std::unique_ptr<ReadModelView>> first =
      (*runner)->View(kLedger);
  if (!first.ok()) return 15;
  // 10 MiB of rows for "big": it has to grow the map while `first` is open.
  if (!AppendMixed(**store, 40, 1).ok()) return 16;
  absl::SleepFor(absl::Milliseconds(300));  // lets "big" reach the growth
  fprintf(stderr, "opening a second view while the first is open\n");
  absl::StatusOr<std::unique_ptr<ReadModelView>> second =
      (*runner)->View(kLedger);
  if (!second.ok()) return 17;
  fprintf(stderr, "second view open\n");
  if (CheckLedgerView(**first) != "" || CheckLedgerView(**second) != "")
    return 18;
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
  if (pid == 0)
    _exit(NestedViewsWhileGrowingBody(dir.path(), move_a_view_first));
  int wait_status = 0;
  const bool ended =
      WaitUntil([&] { return waitpid(pid, &wait_status, WNOHANG) == pid; },
                absl::Seconds(30));
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
TEST(ProjectionTest, NestedViewsWhileTheMapGrows) {
  ExpectNestedViewsWhileGrowing(false);
}

TEST(ProjectionTest, ViewReleasedOnAnotherThreadThenNestedViews) {
  ExpectNestedViewsWhileGrowing(true);
}

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
  flaky.apply = [inner, failed_once, mu](const EventView& e,
                                         ReadModelTxn& txn) -> absl::Status {
    {
      absl::MutexLock lock(mu.get());
      if (e.position() % 4 == 0 && failed_once->insert(e.position()).second) {
        // A write before the failure must be thrown away with the attempt.
        if (absl::Status s = AddInt(txn, "totals", "count", 1000); !s.ok())
          return s;
        return absl::UnavailableError(
            absl::StrCat("transient at ", e.position()));
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
      [](const ProjectionStatus& s) {
        return s.state == ProjectionState::kCaughtUp;
      },
      &st))
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
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view,
                            runner->View("flaky"));
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

// --- Error policies
// ----------------------------------------------------------------

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
  strict.apply = [inner, broken](const EventView& e,
                                 ReadModelTxn& txn) -> absl::Status {
    if (e.position() == kBad && broken->load()) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad event at ", e.position()));
    }
    return inner(e, txn);
  };
  const ProjectionDef other = Renamed(LedgerProjection(), "other");
  {
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ProjectionRunner> runner,
        ProjectionRunner::Start(store.get(), {strict, other}));
    RILL_ASSERT_OK(AppendMixed(*store, kBad - 3).status());
    RILL_ASSERT_OK(runner->WaitFor("strict", kBad - 3, kLong));
    // A waiter past the bad event, waiting when the projection fails.
    absl::Status waited;
    std::thread waiter(
        [&] { waited = runner->WaitFor("strict", kBad + 6, kLong); });
    // One append, so the bad event is in the middle of a batch: kBad-2,
    // kBad-1, kBad, ... kBad+6.
    std::vector<EventData> events;
    for (int i = 0; i < 9; ++i) events.push_back(MakeEvent("Opened", i));
    RILL_ASSERT_OK(
        store->Append("acct-x", ExpectedVersion::Any(), events).status());
    waiter.join();
    EXPECT_EQ(waited.code(), absl::StatusCode::kFailedPrecondition) << waited;

    ProjectionStatus st;
    ASSERT_TRUE(AwaitStatus(
        *runner, "strict",
        [](const ProjectionStatus& s) {
          return s.state == ProjectionState::kFailed;
        },
        &st));
    EXPECT_EQ(st.checkpoint,
              kBad - 1);  // the events before it in the batch are in
    EXPECT_TRUE(absl::StrContains(st.last_error, "bad event at 20"))
        << st.last_error;
    EXPECT_EQ(st.errors, 3u);
    EXPECT_EQ(st.events_applied, kBad - 1);
    EXPECT_EQ(st.lag_events, st.head - st.checkpoint);
    absl::Status s = runner->WaitFor("strict", kBad + 6, kLong);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "bad event at 20")) << s;
    RILL_EXPECT_OK(runner->WaitFor("strict", kBad - 1, kLong));
    // The model keeps serving what it has.
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view,
                              runner->View("strict"));
    EXPECT_EQ(view->checkpoint(), kBad - 1);
    EXPECT_EQ(CheckLedgerView(*view), "");
    view.reset();  // one view per thread at a time (see NestedViewsOnOneThread)

    // The other projection is not affected, and keeps following the log.
    RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head,
                              AppendMixed(*store, 10, 100));
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
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
      ProjectionRunner::Start(store.get(), {strict, other}));
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store->HeadPosition());
  RILL_ASSERT_OK(runner->WaitFor("strict", head, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(const ProjectionStatus st,
                            runner->Status("strict"));
  EXPECT_EQ(st.events_applied, head - (kBad - 1));
  EXPECT_TRUE(st.last_error.empty()) << st.last_error;
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log,
                            WholeLog(*store));
  EXPECT_EQ(*Dump(*runner, strict), FoldLedger(log, head, 1));
}

// A ledger renamed "parker" with ErrorPolicy::kPark that fails at the
// positions in *bad while *broken.
ProjectionDef Parker(std::shared_ptr<std::atomic<bool>> broken,
                     std::set<uint64_t> bad, int max_attempts = 4) {
  ProjectionDef def = Renamed(LedgerProjection(), "parker");
  def.error_policy = ErrorPolicy::kPark;
  def.max_attempts = max_attempts;
  def.retry_backoff = absl::Milliseconds(1);
  auto inner = def.apply;
  def.apply = [inner, broken, bad](const EventView& e,
                                   ReadModelTxn& txn) -> absl::Status {
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
  absl::StatusOr<std::optional<std::string>> count =
      (*view)->Get("totals", "count");
  if (!count.ok()) return count.status();
  if (count->has_value() && !absl::SimpleAtoi(**count, &m.count)) {
    return absl::DataLossError("bad count");
  }
  absl::Status s = (*view)->Scan(
      "applied", "", [&m](absl::string_view k, absl::string_view v) {
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

std::vector<uint64_t> ParkedPositions(const std::vector<ParkedEvent>& parked) {
  std::vector<uint64_t> out;
  for (const ParkedEvent& p : parked) out.push_back(p.position);
  return out;
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
  RILL_ASSERT_OK(
      runner->WaitFor("parker", 10, kLong));  // it went on past 3 and 7
  const absl::Time after = absl::Now();
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log,
                            WholeLog(*store));

  RILL_ASSERT_OK_AND_ASSIGN(ProjectionStatus st, runner->Status("parker"));
  EXPECT_EQ(st.checkpoint, 10u);
  EXPECT_EQ(st.parked, 2u);
  EXPECT_EQ(st.events_applied, 8u);
  EXPECT_EQ(st.errors, 8u);  // 4 attempts each
  EXPECT_NE(st.state, ProjectionState::kFailed);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<ParkedEvent> parked,
                            runner->ListParked("parker"));
  ASSERT_EQ(ParkedPositions(parked), (std::vector<uint64_t>{3, 7}));
  for (const ParkedEvent& p : parked) {
    SCOPED_TRACE(p.position);
    EXPECT_EQ(p.stream, log[p.position - 1].stream);
    EXPECT_EQ(p.type, log[p.position - 1].type);
    EXPECT_TRUE(
        absl::StrContains(p.error, absl::StrCat("cannot digest ", p.position)))
        << p.error;
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
  EXPECT_EQ(runner->RetryParked("parker", 3).code(),
            absl::StatusCode::kNotFound);
  RILL_ASSERT_OK_AND_ASSIGN(m, ReadParker(*runner));
  EXPECT_EQ(m.count, 9);
  EXPECT_EQ(m.times[3], "1");

  // Dropped: gone from the table, never applied.
  RILL_ASSERT_OK(runner->DropParked("parker", 7));
  RILL_ASSERT_OK_AND_ASSIGN(parked, runner->ListParked("parker"));
  EXPECT_TRUE(parked.empty());
  EXPECT_EQ(runner->DropParked("parker", 7).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(runner->RetryParked("parker", 7).code(),
            absl::StatusCode::kNotFound);
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
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<ParkedEvent> parked,
                            runner->ListParked("parker"));
  ASSERT_EQ(ParkedPositions(parked), (std::vector<uint64_t>{3}));

  broken->store(false);
  RILL_ASSERT_OK(runner->Rebuild("parker"));
  // 9 applied before, 10 by the rebuild.
  ProjectionStatus st;
  ASSERT_TRUE(AwaitStatus(
      *runner, "parker",
      [](const ProjectionStatus& s) {
        return s.events_applied == 19 && RebuildDone(s);
      },
      &st))
      << "events_applied " << st.events_applied;
  RILL_ASSERT_OK_AND_ASSIGN(ParkerModel m, ReadParker(*runner));
  EXPECT_EQ(m.count, 10);
  EXPECT_EQ(m.times[3], "1");

  RILL_ASSERT_OK_AND_ASSIGN(parked, runner->ListParked("parker"));
  EXPECT_TRUE(parked.empty())
      << "position " << parked.front().position
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
  const ProjectionDef parker =
      BlockAt(Parker(broken, {3}, /*max_attempts=*/1), at, &gate);
  RunnerOptions options;
  options.batch_size = 4;
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
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
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<ParkedEvent> parked,
                            runner->ListParked("parker"));
  const bool applied = m.applied.count(3) > 0;
  const bool listed = !parked.empty() && parked.front().position == 3;
  EXPECT_TRUE(applied != listed)
      << "RetryParked: " << retried << "; event 3 applied: " << applied
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
    absl::StatusOr<std::vector<ProjectionStatus>> all =
        ReadProjectionStatuses(store.get());
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
        ChildProcess::Start("projector_child",
                            {"mode=run", "dir=" + store_dir, "batch=4"},
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
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ChildProcess> child,
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
  EXPECT_EQ(
      st->parked,
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
      *runner, v2.name,
      [](const ProjectionStatus& s) {
        return s.version == 2 && RebuildDone(s);
      },
      &now));
  RILL_ASSERT_OK(runner->WaitFor(v2.name, head, kLong));
  ModelDump want;
  want["totals"]["count"] = absl::StrCat(head);
  for (uint64_t p = 1; p <= head; ++p) want["applied"][PosKey(p)] = "1";
  EXPECT_EQ(*Dump(*runner, v2), want);

  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<ParkedEvent> parked,
                            runner->ListParked(v2.name));
  EXPECT_TRUE(parked.empty())
      << parked.size() << " stale dead letters, the first at position "
      << parked.front().position;
  RILL_ASSERT_OK_AND_ASSIGN(now, runner->Status(v2.name));
  EXPECT_EQ(now.parked, 0u);
  // Whatever RetryParked answers, no event may be applied twice.
  (void)runner->RetryParked(v2.name, 13);
  EXPECT_EQ(*Dump(*runner, v2), want);
}

// --- Rebuilds
// -----------------------------------------------------------------

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
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
      ProjectionRunner::Start(store.get(), {ledger}, options));
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t n, AppendMixed(*store, 1000));
  RILL_ASSERT_OK(runner->WaitFor(kLedger, n, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(const ModelDump before, Dump(*runner, ledger));
  RILL_ASSERT_OK_AND_ASSIGN(const std::set<uint64_t> gens_before,
                            GenerationsWithRows(store.get()));
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
  RILL_ASSERT_OK_AND_ASSIGN(const std::set<uint64_t> gens_during,
                            GenerationsWithRows(store.get()));
  EXPECT_EQ(gens_during.size(), 2u);  // the new tables exist next to the old

  // Every view, before, during and after the swap, is a complete model of
  // the checkpoint it reports.
  ViewHammer hammer(runner.get(), kLedger, 3, CheckLedgerView);
  ASSERT_TRUE(hammer.AwaitViews(1));
  gate.Open();
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head,
                            AppendMixed(*store, 300, 1000));
  ASSERT_TRUE(AwaitStatus(*runner, kLedger, RebuildDone, &st));
  RILL_ASSERT_OK(runner->WaitFor(kLedger, head, kLong));
  ASSERT_TRUE(hammer.AwaitViews(hammer.total_views() / 3 + 2));
  hammer.Stop();
  EXPECT_TRUE(hammer.errors().empty()) << hammer.errors().front();

  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log,
                            WholeLog(*store));
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
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ProjectionRunner> runner,
        ProjectionRunner::Start(store.get(), {LedgerProjection(1)}, options));
    RILL_ASSERT_OK(runner->WaitFor(kLedger, n, kLong));
  }
  RILL_ASSERT_OK_AND_ASSIGN(const std::set<uint64_t> gens_before,
                            GenerationsWithRows(store.get()));
  ASSERT_EQ(gens_before.size(), 1u);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> log, WholeLog(*store));

  Gate gate;
  OpenOnExit open_on_exit{&gate};
  auto at = std::make_shared<std::atomic<uint64_t>>(300);
  const ProjectionDef v2 = BlockAt(LedgerProjection(2), at, &gate);
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
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
      *runner, kLedger,
      [](const ProjectionStatus& s) {
        return s.version == 2 && RebuildDone(s);
      },
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
  RILL_ASSERT_OK_AND_ASSIGN(
      runner,
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
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ProjectionRunner> runner,
        ProjectionRunner::Start(store.get(), {LedgerProjection(1)}, options));
    RILL_ASSERT_OK(runner->WaitFor(kLedger, n, kLong));
  }
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log,
                            WholeLog(*store));
  constexpr uint64_t kBad = 203;
  auto broken = std::make_shared<std::atomic<bool>>(true);
  ProjectionDef v2 = LedgerProjection(2);
  v2.max_attempts = 1;
  auto inner = v2.apply;
  v2.apply = [inner, broken](const EventView& e,
                             ReadModelTxn& txn) -> absl::Status {
    if (e.position() == kBad && broken->load())
      return absl::InternalError("v2 cannot");
    return inner(e, txn);
  };
  uint64_t resumed_from = 0;
  {
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ProjectionRunner> runner,
        ProjectionRunner::Start(store.get(), {v2}, options));
    ProjectionStatus st;
    ASSERT_TRUE(AwaitStatus(
        *runner, kLedger,
        [](const ProjectionStatus& s) {
          return s.state == ProjectionState::kFailed;
        },
        &st));
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
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
      ProjectionRunner::Start(store.get(), {v2}, options));
  ProjectionStatus st;
  ASSERT_TRUE(AwaitStatus(
      *runner, kLedger,
      [](const ProjectionStatus& s) {
        return s.version == 2 && RebuildDone(s);
      },
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
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
      ProjectionRunner::Start(store.get(), {ledger}, options));
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t n, AppendMixed(*store, 300));
  RILL_ASSERT_OK(runner->WaitFor(kLedger, n, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(const ModelDump before, Dump(*runner, ledger));
  at->store(150);  // only a rebuild re-applies it

  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ChildProcess> child,
      ChildProcess::Start("projector_child",
                          {"mode=request", "dir=" + store_dir, "name=ledger"},
                          dir.Sub("request.stderr")));
  RILL_ASSERT_OK_AND_ASSIGN(const std::string line, child->ReadLine(kLong));
  EXPECT_EQ(line, "requested");
  const int wait_status = child->Wait();
  ASSERT_TRUE(testing::ExitedWithCode(wait_status, 0))
      << DescribeWaitStatus(wait_status) << "\n"
      << child->Stderr();

  ASSERT_TRUE(gate.AwaitWaiter(kLong))
      << "the runner never picked up the request";
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

TEST(ProjectionTest, RebuildAsOfBuildsASeparateTableSet) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.path(), TestStoreOptions()));
  RunnerOptions options;
  options.batch_size = 7;  // several batches per as-of build
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
      ProjectionRunner::Start(
          store.get(), {LedgerProjection(), TypedProjection()}, options));
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
    EXPECT_EQ(*DumpView(*view, LedgerProjection().tables),
              FoldLedger(log, 123, 1));
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
    EXPECT_EQ(*DumpView(*view, LedgerProjection().tables),
              FoldLedger(log, 123, 1));
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
    EXPECT_EQ(*DumpView(*view, LedgerProjection().tables),
              FoldLedger(log, 200, 1));
    view.reset();
    RILL_ASSERT_OK_AND_ASSIGN(view, runner->ViewAsOf(kLedger, "head"));
    EXPECT_EQ(*DumpView(*view, LedgerProjection().tables),
              FoldLedger(log, head, 1));
  }
  EXPECT_EQ(runner->ViewAsOf(kLedger, "missing").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(runner->ViewAsOf(kTyped, "head").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(runner->RebuildAsOf(kLedger, 5, "not a label").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runner->RebuildAsOf("nope", 5, "x").code(),
            absl::StatusCode::kNotFound);
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
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log,
                            WholeLog(*store));
  // The serving model skipped 13, 26 and 39.
  EXPECT_EQ(*Dump(*runner, parking), ::rill::testing::FoldParking(log, head));
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<ParkedEvent> parked,
                            runner->ListParked(parking.name));
  EXPECT_EQ(ParkedPositions(parked), (std::vector<uint64_t>{13, 26, 39}));

  RILL_ASSERT_OK(runner->RebuildAsOf(parking.name, 30, "at30"));
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view,
                            runner->ViewAsOf(parking.name, "at30"));
  EXPECT_EQ(view->checkpoint(), 30u);
  EXPECT_EQ(*DumpView(*view, parking.tables),
            ::rill::testing::FoldParking(log, 30));
  view.reset();
  // The serving generation's dead letters are untouched.
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<ParkedEvent> still,
                            runner->ListParked(parking.name));
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
  def.apply = [inner, broken](const EventView& e,
                              ReadModelTxn& txn) -> absl::Status {
    if (e.position() == 50 && broken->load())
      return absl::InternalError("as-of cannot");
    return inner(e, txn);
  };
  RunnerOptions options;
  options.batch_size = 16;
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
      ProjectionRunner::Start(store.get(), {def}, options));
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, AppendMixed(*store, 100));
  RILL_ASSERT_OK(runner->WaitFor(kLedger, head, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(const std::set<uint64_t> gens_before,
                            GenerationsWithRows(store.get()));

  broken->store(true);  // no new events: only the as-of build meets position 50
  const absl::Status s = runner->RebuildAsOf(kLedger, 80, "x");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "as-of cannot")) << s;
  EXPECT_EQ(runner->ViewAsOf(kLedger, "x").status().code(),
            absl::StatusCode::kNotFound);
  RILL_ASSERT_OK_AND_ASSIGN(const std::set<uint64_t> gens_after,
                            GenerationsWithRows(store.get()));
  EXPECT_EQ(gens_after, gens_before)
      << "rows of the failed as-of build are left behind";
}

// --- One runner per projection
// -------------------------------------------------

TEST(ProjectionTest, SecondRunnerForTheSameProjectionFails) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(store_dir, TestStoreOptions()));
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> first,
      ProjectionRunner::Start(store.get(), {LedgerProjection()}));
  // In this process.
  absl::StatusOr<std::unique_ptr<ProjectionRunner>> second =
      ProjectionRunner::Start(store.get(),
                              {TypedProjection(), LedgerProjection()});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition)
      << second.status();
  // Another projection may run in another runner.
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> typed,
      ProjectionRunner::Start(store.get(), {TypedProjection()}));
  // In another process; the failed Start above did not release the lock.
  {
    RILL_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<ChildProcess> child,
        ChildProcess::Start("projector_child",
                            {"mode=run", "set=ledger", "dir=" + store_dir},
                            dir.Sub("second.stderr")));
    RILL_ASSERT_OK_AND_ASSIGN(const std::string line, child->ReadLine(kLong));
    EXPECT_TRUE(absl::StartsWith(
        line,
        absl::StrCat("start_failed ",
                     static_cast<int>(absl::StatusCode::kFailedPrecondition),
                     " ")))
        << line;
    EXPECT_TRUE(testing::ExitedWithCode(child->Wait(), 5)) << child->Stderr();
  }
  // The first runner still works.
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, AppendMixed(*store, 10));
  RILL_ASSERT_OK(first->WaitFor(kLedger, head, kLong));
  first.reset();

  // Now the other process holds it.
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ChildProcess> child,
      ChildProcess::Start("projector_child",
                          {"mode=run", "set=ledger", "dir=" + store_dir},
                          dir.Sub("holder.stderr")));
  RILL_ASSERT_OK_AND_ASSIGN(const std::string line, child->ReadLine(kLong));
  ASSERT_EQ(line, "ready") << child->Stderr();
  second = ProjectionRunner::Start(store.get(), {LedgerProjection()});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition)
      << second.status();
  child->CloseStdin();  // the child stops its runner and exits
  const int wait_status = child->Wait();
  EXPECT_TRUE(testing::ExitedWithCode(wait_status, 0))
      << DescribeWaitStatus(wait_status) << "\n"
      << child->Stderr();
  RILL_ASSERT_OK_AND_ASSIGN(
      first, ProjectionRunner::Start(store.get(), {LedgerProjection()}));
  RILL_ASSERT_OK(first->WaitFor(kLedger, head, kLong));
}

}  // namespace
}  // namespace rill
