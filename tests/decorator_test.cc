// A Store that wraps another (here one that counts calls) works with every
// rill component built on a Store: snapshots, projections and their admin
// functions, replay, verify and backup. They reach the engine through
// Store::core(), which the decorator forwards, never by downcasting; their
// public reads go through the decorator. A Store with no engine behind it
// (core() null) gets FailedPrecondition from each of them.
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "rill/admin.h"
#include "rill/projection.h"
#include "rill/projection_admin.h"
#include "rill/replay.h"
#include "rill/snapshot.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::MakeEvents;
using ::rill::testing::TempDir;

// Forwards every call to the wrapped store and counts it by name.
class CountingStore : public Store {
 public:
  explicit CountingStore(std::unique_ptr<Store> inner)
      : owned_(std::move(inner)), inner_(owned_.get()) {}
  // Wraps a store it does not own.
  explicit CountingStore(Store* inner) : inner_(inner) {}

  int calls(const std::string& method) {
    absl::MutexLock lock(&mu_);
    return calls_[method];
  }

  absl::StatusOr<AppendResult> Append(absl::string_view stream, ExpectedVersion expected,
                                      absl::Span<const EventData> events,
                                      const AppendOptions& options) override {
    Count("Append");
    return inner_->Append(stream, expected, events, options);
  }
  absl::StatusOr<std::vector<AppendResult>> AppendMulti(absl::Span<const StreamAppend> appends,
                                                        const AppendOptions& options) override {
    Count("AppendMulti");
    return inner_->AppendMulti(appends, options);
  }
  absl::StatusOr<std::vector<RecordedEvent>> ReadStream(absl::string_view stream,
                                                        int64_t from_version,
                                                        const ReadOptions& options) override {
    Count("ReadStream");
    return inner_->ReadStream(stream, from_version, options);
  }
  absl::StatusOr<std::vector<RecordedEvent>> ReadAll(uint64_t from_position,
                                                     const ReadOptions& options) override {
    Count("ReadAll");
    return inner_->ReadAll(from_position, options);
  }
  absl::Status ScanAll(uint64_t from_position, const ReadOptions& options,
                       absl::FunctionRef<bool(const EventView&)> fn) override {
    Count("ScanAll");
    return inner_->ScanAll(from_position, options, fn);
  }
  absl::Status ScanStream(absl::string_view stream, int64_t from_version,
                          const ReadOptions& options,
                          absl::FunctionRef<bool(const EventView&)> fn) override {
    Count("ScanStream");
    return inner_->ScanStream(stream, from_version, options, fn);
  }
  absl::StatusOr<StreamInfo> GetStreamInfo(absl::string_view stream) override {
    Count("GetStreamInfo");
    return inner_->GetStreamInfo(stream);
  }
  absl::StatusOr<std::vector<StreamInfo>> ListStreams(absl::string_view prefix, size_t limit,
                                                      absl::string_view start_after) override {
    Count("ListStreams");
    return inner_->ListStreams(prefix, limit, start_after);
  }
  absl::StatusOr<uint64_t> HeadPosition() override {
    Count("HeadPosition");
    return inner_->HeadPosition();
  }
  absl::StatusOr<uint64_t> WaitForHead(uint64_t known_head, absl::Duration timeout,
                                       absl::Duration poll_interval) override {
    Count("WaitForHead");
    return inner_->WaitForHead(known_head, timeout, poll_interval);
  }
  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(uint64_t after_position,
                                                          SubscriptionOptions options,
                                                          SubscriptionHandler handler) override {
    Count("Subscribe");
    return inner_->Subscribe(after_position, std::move(options), std::move(handler));
  }
  absl::StatusOr<StoreStats> Stats() override {
    Count("Stats");
    return inner_->Stats();
  }
  absl::StatusOr<unsigned> ClearStaleReaders() override {
    Count("ClearStaleReaders");
    return inner_->ClearStaleReaders();
  }
  const std::string& dir() const override { return inner_->dir(); }
  const std::string& store_id() const override { return inner_->store_id(); }
  internal::StoreCore* core() override {
    Count("core");
    return inner_->core();
  }

 private:
  void Count(const std::string& method) {
    absl::MutexLock lock(&mu_);
    ++calls_[method];
  }

  std::unique_ptr<Store> owned_;
  Store* const inner_;
  absl::Mutex mu_;
  std::map<std::string, int> calls_ ABSL_GUARDED_BY(mu_);
};

// A stand-in for a whole store, with no engine behind it: every call but
// core() is left to a real store so that only core() differs.
class NoEngineStore final : public CountingStore {
 public:
  explicit NoEngineStore(Store* real) : CountingStore(real) {}
  internal::StoreCore* core() override { return nullptr; }
};

ProjectionDef CountPerStream() {
  ProjectionDef def;
  def.name = "per_stream";
  def.tables = {"counts"};
  def.apply = [](const EventView& e, ReadModelTxn& txn) -> absl::Status {
    absl::StatusOr<std::optional<std::string>> n = txn.Get("counts", e.stream());
    if (!n.ok()) return n.status();
    const int count = n->has_value() ? std::stoi(**n) : 0;
    return txn.Put("counts", e.stream(), std::to_string(count + 1));
  };
  return def;
}

// Parks events of type "Poison"; applies nothing else.
ProjectionDef ParkPoison() {
  ProjectionDef def;
  def.name = "park_poison";
  def.tables = {"seen"};
  def.error_policy = ErrorPolicy::kPark;
  def.max_attempts = 1;
  def.apply = [](const EventView& e, ReadModelTxn&) -> absl::Status {
    return e.type() == "Poison" ? absl::InternalError("poison") : absl::OkStatus();
  };
  return def;
}

class DecoratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> inner, Store::Open(dir_.path()));
    store_ = std::make_unique<CountingStore>(std::move(inner));
    RILL_ASSERT_OK(
        store_->Append("order-1", ExpectedVersion::NoStream(), MakeEvents(5), AppendOptions())
            .status());
    RILL_ASSERT_OK(
        store_->Append("order-2", ExpectedVersion::NoStream(), MakeEvents(3), AppendOptions())
            .status());
  }

  TempDir dir_;
  std::unique_ptr<CountingStore> store_;
};

TEST_F(DecoratorTest, Snapshots) {
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnapshotStore> snapshots,
                            SnapshotStore::Open(store_.get(), SnapshotPolicy{2, 1}));
  RILL_ASSERT_OK(snapshots->Save("order-1", 2, 1, "three"));
  const int scans_before = store_->calls("ScanStream");
  RILL_ASSERT_OK_AND_ASSIGN(
      LoadedAggregate<std::string> loaded,
      snapshots->LoadAggregate(
          "order-1", 1, std::string(),
          [](absl::string_view data) -> absl::StatusOr<std::string> { return std::string(data); },
          [](const std::string& state) { return state; },
          [](std::string& state, const EventView& e) {
            state += "+" + std::to_string(e.version());
          }));
  EXPECT_TRUE(loaded.from_snapshot);
  EXPECT_EQ(loaded.version, 4);
  EXPECT_EQ(loaded.state, "three+3+4");
  // The events after the snapshot were read through the decorator.
  EXPECT_GT(store_->calls("ScanStream"), scans_before);
  EXPECT_GT(store_->calls("core"), 0);
}

TEST_F(DecoratorTest, ProjectionsAndTheirAdminFunctions) {
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
      ProjectionRunner::Start(store_.get(), {CountPerStream(), ParkPoison()}));
  std::vector<EventData> events = MakeEvents(1, 3);
  events[0].type = "Poison";
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult r, store_->Append("order-2", ExpectedVersion::Exact(2),
                                                           events, AppendOptions()));
  RILL_ASSERT_OK(runner->WaitFor("per_stream", r.last_position, absl::Seconds(30)));
  RILL_ASSERT_OK(runner->WaitFor("park_poison", r.last_position, absl::Seconds(30)));
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view, runner->View("per_stream"));
  RILL_ASSERT_OK_AND_ASSIGN(std::optional<std::string> one, view->Get("counts", "order-1"));
  RILL_ASSERT_OK_AND_ASSIGN(std::optional<std::string> two, view->Get("counts", "order-2"));
  EXPECT_EQ(one, std::optional<std::string>("5"));
  EXPECT_EQ(two, std::optional<std::string>("4"));
  view.reset();
  RILL_ASSERT_OK_AND_ASSIGN(ProjectionStatus status, runner->Status("per_stream"));
  EXPECT_EQ(status.checkpoint, r.last_position);
  EXPECT_GT(store_->calls("HeadPosition"), 0);  // the runner's status reads go through it

  // An as-of rebuild reads the log through the core, on this thread.
  RILL_ASSERT_OK(runner->RebuildAsOf("per_stream", 5, "first5"));
  RILL_ASSERT_OK_AND_ASSIGN(view, runner->ViewAsOf("per_stream", "first5"));
  RILL_ASSERT_OK_AND_ASSIGN(one, view->Get("counts", "order-1"));
  RILL_ASSERT_OK_AND_ASSIGN(two, view->Get("counts", "order-2"));
  EXPECT_EQ(one, std::optional<std::string>("5"));
  EXPECT_EQ(two, std::nullopt);
  view.reset();

  RILL_ASSERT_OK_AND_ASSIGN(std::vector<ProjectionStatus> recorded,
                            ReadProjectionStatuses(store_.get()));
  ASSERT_EQ(recorded.size(), 2u);
  EXPECT_EQ(recorded[0].checkpoint, r.last_position);
  RILL_ASSERT_OK_AND_ASSIGN(bool running, ProjectionIsRunning(store_.get(), "per_stream"));
  EXPECT_TRUE(running);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<ParkedEvent> parked,
                            ReadParkedEvents(store_.get(), "per_stream"));
  EXPECT_TRUE(parked.empty());
  RILL_ASSERT_OK_AND_ASSIGN(parked, ReadParkedEvents(store_.get(), "park_poison"));
  ASSERT_EQ(parked.size(), 1u);
  EXPECT_EQ(parked[0].position, r.last_position);
  // A retry request is picked up by the runner; the event still fails, so
  // the letter stays with one more attempt.
  RILL_ASSERT_OK(RequestRetryParked(store_.get(), "park_poison", parked[0].position));
  ASSERT_TRUE(::rill::testing::WaitUntil(
      [&] {
        absl::StatusOr<std::vector<ParkedEvent>> now =
            ReadParkedEvents(store_.get(), "park_poison");
        return now.ok() && now->size() == 1 && (*now)[0].attempts == 2;
      },
      absl::Seconds(30)));
  RILL_ASSERT_OK(DropParkedEvent(store_.get(), "park_poison", parked[0].position));
  RILL_ASSERT_OK_AND_ASSIGN(parked, ReadParkedEvents(store_.get(), "park_poison"));
  EXPECT_TRUE(parked.empty());
  RILL_ASSERT_OK(RequestRebuild(store_.get(), "per_stream"));
  runner.reset();  // releases the projection's lock
  RILL_ASSERT_OK(ResetProjection(store_.get(), "per_stream"));
  RILL_ASSERT_OK_AND_ASSIGN(recorded, ReadProjectionStatuses(store_.get()));
  ASSERT_EQ(recorded.size(), 1u);
  EXPECT_EQ(recorded[0].name, "park_poison");
}

TEST_F(DecoratorTest, Replay) {
  std::vector<uint64_t> positions;
  RILL_ASSERT_OK_AND_ASSIGN(
      ReplayResult r, ReplayPositions(store_.get(), 2, 6, EventFilter(), [&](const EventView& e) {
        positions.push_back(e.position());
        return true;
      }));
  EXPECT_EQ(r.delivered, 5u);
  EXPECT_EQ(positions, (std::vector<uint64_t>{2, 3, 4, 5, 6}));
  RILL_ASSERT_OK_AND_ASSIGN(ReplayResult s, ReplayStream(store_.get(), "order-2", 1,
                                                         [](const EventView&) { return true; }));
  EXPECT_EQ(s.delivered, 2u);
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t first,
                            FirstPositionAtOrAfter(store_.get(), absl::InfinitePast()));
  EXPECT_EQ(first, 1u);
  EXPECT_GT(store_->calls("ScanAll"), 0);
  EXPECT_GT(store_->calls("ScanStream"), 0);
}

TEST_F(DecoratorTest, VerifyAndBackup) {
  RILL_ASSERT_OK_AND_ASSIGN(VerifyReport report, VerifyStore(store_.get()));
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(report.events, 8u);
  TempDir backup;
  RILL_ASSERT_OK_AND_ASSIGN(BackupResult copied,
                            BackupStore(store_.get(), backup.path() + "/copy"));
  EXPECT_EQ(copied.head_position, 8u);
  StoreOptions read_only;
  read_only.read_only = true;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> copy,
                            Store::Open(backup.path() + "/copy", read_only));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> events, copy->ReadStream("order-1", 0));
  EXPECT_EQ(events.size(), 5u);
}

TEST_F(DecoratorTest, AStoreWithNoEngineIsFailedPreconditionNotACrash) {
  NoEngineStore double_(store_.get());
  EXPECT_EQ(SnapshotStore::Open(&double_).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ProjectionRunner::Start(&double_, {CountPerStream()}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadProjectionStatuses(&double_).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(RequestRebuild(&double_, "p").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ProjectionIsRunning(&double_, "p").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadParkedEvents(&double_, "p").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ResetProjection(&double_, "p").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(VerifyStore(&double_).status().code(), absl::StatusCode::kFailedPrecondition);
  TempDir backup;
  EXPECT_EQ(BackupStore(&double_, backup.path() + "/copy").status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Replay needs only the public API.
  RILL_ASSERT_OK_AND_ASSIGN(ReplayResult r, ReplayPositions(&double_, 1, 8, EventFilter(),
                                                            [](const EventView&) { return true; }));
  EXPECT_EQ(r.delivered, 8u);
}

}  // namespace
}  // namespace rill
