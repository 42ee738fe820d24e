// The Store contract on both backends: the embedded store, and a replicated
// node over a three-server NATS JetStream cluster (R=3 stream) started by
// this test binary. The same tests (appends, expected versions,
// idempotency, multi-stream atomicity, concurrency, reads, subscriptions,
// projections, snapshots, replay) run against each.
//
// On the replicated backend every test ends by opening a second node of the
// same stream and checking that, once caught up, it holds exactly the same
// log (every event's stream, version, position, id, payload, time) as the
// node the test appended through: positions and versions are assigned when
// messages are applied, and every node must assign the same.
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "nats_cluster.h"
#include "process_util.h"
#include "projector_defs.h"
#include "rill/metrics.h"
#include "rill/projection.h"
#include "rill/replay.h"
#include "rill/replication.h"
#include "rill/snapshot.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::LogSnapshot;
using ::rill::testing::MakeEvent;
using ::rill::testing::MakeEvents;
using ::rill::testing::NatsCluster;
using ::rill::testing::Positions;
using ::rill::testing::TakeSnapshot;
using ::rill::testing::TempDir;
using ::rill::testing::Versions;
using ::rill::testing::WaitUntil;

constexpr absl::Duration kLong = absl::Seconds(60);

enum class Backend { kEmbedded, kReplicated };

std::string BackendName(const ::testing::TestParamInfo<Backend>& info) {
  return info.param == Backend::kEmbedded ? "Embedded" : "Replicated";
}

// One cluster for the whole binary, started on first use.
NatsCluster* Cluster() {
  static NatsCluster* cluster = [] {
    absl::StatusOr<std::unique_ptr<NatsCluster>> c = NatsCluster::Start(3);
    if (!c.ok()) {
      ADD_FAILURE() << "cannot start the NATS cluster: " << c.status();
      return static_cast<NatsCluster*>(nullptr);
    }
    return c->release();  // the servers die with this process (PDEATHSIG)
  }();
  return cluster;
}

class StoreContractTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    static std::atomic<int> streams{0};
    stream_ = absl::StrCat("contract-", getpid(), "-", streams++);
    RILL_ASSERT_OK_AND_ASSIGN(store_, OpenNode("node1"));
  }

  void TearDown() override {
    if (GetParam() != Backend::kReplicated || store_ == nullptr || HasFatalFailure()) return;
    // A second node of the same stream holds the same log.
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> other, OpenNode("node2"));
    RILL_ASSERT_OK(WaitForReplica(other.get(), kLong));
    RILL_ASSERT_OK(WaitForReplica(store_.get(), kLong));
    RILL_ASSERT_OK_AND_ASSIGN(const LogSnapshot mine, TakeSnapshot(*store_));
    RILL_ASSERT_OK_AND_ASSIGN(const LogSnapshot theirs, TakeSnapshot(*other));
    EXPECT_EQ(mine, theirs);
    RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> a, store_->ReadAll(1));
    RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> b, other->ReadAll(1));
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(::rill::testing::SameEvent(a[i], b[i])) << i;
    }
  }

  absl::StatusOr<std::unique_ptr<Store>> OpenNode(const std::string& name) {
    const std::string dir = tmp_.Sub(name);
    if (GetParam() == Backend::kReplicated) {
      NatsCluster* cluster = Cluster();
      if (cluster == nullptr) return absl::UnavailableError("no NATS cluster");
      ReplicationOptions repl;
      repl.servers = cluster->urls();
      repl.stream = stream_;
      repl.replicas = 3;
      if (absl::Status s = InitReplicatedNode(dir, repl); !s.ok()) return s;
    }
    return Store::Open(dir);
  }

  LogSnapshot Snapshot() {
    absl::StatusOr<LogSnapshot> s = TakeSnapshot(*store_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : LogSnapshot{};
  }

  TempDir tmp_;
  std::string stream_;
  std::unique_ptr<Store> store_;
};

INSTANTIATE_TEST_SUITE_P(Backends, StoreContractTest,
                         ::testing::Values(Backend::kEmbedded, Backend::kReplicated), BackendName);

TEST_P(StoreContractTest, AppendsGetContiguousVersionsAndGaplessPositions) {
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult a1,
                            store_->Append("a", ExpectedVersion::NoStream(), MakeEvents(3)));
  EXPECT_EQ(a1.first_version, 0);
  EXPECT_EQ(a1.last_version, 2);
  EXPECT_EQ(a1.first_position, 1u);
  EXPECT_EQ(a1.last_position, 3u);
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult b1,
                            store_->Append("b", ExpectedVersion::Any(), MakeEvents(2, 3)));
  EXPECT_EQ(b1.first_position, 4u);
  EXPECT_EQ(b1.last_version, 1);
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult a2,
                            store_->Append("a", ExpectedVersion::Exact(2), MakeEvents(1, 5)));
  EXPECT_EQ(a2.first_version, 3);
  EXPECT_EQ(a2.first_position, 6u);

  // Read-your-writes: the append returned, so this node reads it.
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> all, store_->ReadAll(1));
  EXPECT_EQ(Positions(all), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6}));
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> a, store_->ReadStream("a", 0));
  EXPECT_EQ(Versions(a), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(a[3].payload, MakeEvent("E5", 5).payload);
  for (size_t i = 1; i < all.size(); ++i) EXPECT_GE(all[i].recorded_at, all[i - 1].recorded_at);
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t head, store_->HeadPosition());
  EXPECT_EQ(head, 6u);
}

TEST_P(StoreContractTest, ExpectedVersionMismatchesAreAbortedAndWriteNothing) {
  EXPECT_TRUE(absl::IsAborted(
      store_->Append("s", ExpectedVersion::StreamExists(), MakeEvents(1)).status()));
  EXPECT_TRUE(
      absl::IsAborted(store_->Append("s", ExpectedVersion::Exact(0), MakeEvents(1)).status()));
  const LogSnapshot empty = Snapshot();
  EXPECT_EQ(empty.head, 0u);

  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::NoStream(), MakeEvents(2)).status());
  const LogSnapshot after_first = Snapshot();
  absl::Status s = store_->Append("s", ExpectedVersion::NoStream(), MakeEvents(1)).status();
  EXPECT_TRUE(absl::IsAborted(s)) << s;
  EXPECT_NE(s.message().find("is at version 1"), absl::string_view::npos) << s;
  EXPECT_TRUE(
      absl::IsAborted(store_->Append("s", ExpectedVersion::Exact(0), MakeEvents(1)).status()));
  EXPECT_TRUE(
      absl::IsAborted(store_->Append("s", ExpectedVersion::Exact(5), MakeEvents(1)).status()));
  EXPECT_EQ(Snapshot(), after_first);

  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::Exact(1), MakeEvents(1)).status());
  RILL_ASSERT_OK(store_->Append("s", ExpectedVersion::StreamExists(), MakeEvents(1)).status());
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult any,
                            store_->Append("s", ExpectedVersion::Any(), MakeEvents(1)));
  EXPECT_EQ(any.last_version, 4);
}

TEST_P(StoreContractTest, IdempotentRetryReturnsTheFirstResultAndWritesNothing) {
  AppendOptions keyed;
  keyed.idempotency_key = "order-1-create";
  RILL_ASSERT_OK_AND_ASSIGN(
      AppendResult first,
      store_->Append("order-1", ExpectedVersion::NoStream(), MakeEvents(2), keyed));
  EXPECT_FALSE(first.deduplicated);
  RILL_ASSERT_OK(store_->Append("order-1", ExpectedVersion::Exact(1), MakeEvents(1, 7)).status());
  const LogSnapshot before = Snapshot();

  // The stream has moved on: the retry still gets the first result.
  RILL_ASSERT_OK_AND_ASSIGN(
      AppendResult retry,
      store_->Append("order-1", ExpectedVersion::NoStream(), MakeEvents(2), keyed));
  EXPECT_TRUE(retry.deduplicated);
  EXPECT_EQ(retry.first_position, first.first_position);
  EXPECT_EQ(retry.last_position, first.last_position);
  EXPECT_EQ(retry.last_version, first.last_version);
  EXPECT_EQ(Snapshot(), before);

  absl::Status reused =
      store_->Append("order-1", ExpectedVersion::NoStream(), MakeEvents(3), keyed).status();
  EXPECT_TRUE(absl::IsAlreadyExists(reused)) << reused;
  EXPECT_EQ(Snapshot(), before);
}

TEST_P(StoreContractTest, AppendMultiWritesAllStreamsOrNone) {
  RILL_ASSERT_OK(store_->Append("x", ExpectedVersion::Any(), MakeEvents(1)).status());
  const LogSnapshot before = Snapshot();
  std::vector<StreamAppend> bad = {{"y", ExpectedVersion::NoStream(), MakeEvents(2)},
                                   {"x", ExpectedVersion::NoStream(), MakeEvents(1)}};
  EXPECT_TRUE(absl::IsAborted(store_->AppendMulti(bad).status()));
  EXPECT_EQ(Snapshot(), before);

  std::vector<StreamAppend> good = {{"y", ExpectedVersion::NoStream(), MakeEvents(2)},
                                    {"x", ExpectedVersion::Exact(0), MakeEvents(1)}};
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<AppendResult> r, store_->AppendMulti(good));
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].first_position, 2u);
  EXPECT_EQ(r[0].last_position, 3u);
  EXPECT_EQ(r[1].first_position, 4u);
  EXPECT_EQ(r[1].first_version, 1);

  std::vector<StreamAppend> twice = {{"z", ExpectedVersion::Any(), MakeEvents(1)},
                                     {"z", ExpectedVersion::Any(), MakeEvents(1)}};
  EXPECT_TRUE(absl::IsInvalidArgument(store_->AppendMulti(twice).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(store_->Append("", ExpectedVersion::Any(), MakeEvents(1)).status()));
}

TEST_P(StoreContractTest, ConcurrentAppendersGetDistinctGaplessPositions) {
  constexpr int kThreads = 6, kAppends = 20;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string stream = absl::StrCat("t", t);
      for (int i = 0; i < kAppends; ++i) {
        absl::StatusOr<AppendResult> r = store_->Append(
            stream, i == 0 ? ExpectedVersion::NoStream() : ExpectedVersion::Exact(i - 1),
            {MakeEvent("E", t * 1000 + i)});
        if (!r.ok() || r->last_version != i) ++failures;
      }
      // Every thread also contends for one shared stream, reading its
      // version and retrying on conflict.
      for (int done = 0; done < 5;) {
        absl::StatusOr<StreamInfo> info = store_->GetStreamInfo("shared");
        if (!info.ok()) {
          ++failures;
          return;
        }
        absl::StatusOr<AppendResult> r = store_->Append(
            "shared",
            info->exists ? ExpectedVersion::Exact(info->last_version) : ExpectedVersion::NoStream(),
            {MakeEvent("S", t)});
        if (r.ok()) {
          ++done;
        } else if (!absl::IsAborted(r.status())) {
          ++failures;
          return;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> all, store_->ReadAll(1));
  ASSERT_EQ(all.size(), static_cast<size_t>(kThreads * (kAppends + 5)));
  std::map<std::string, int64_t> next;
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].position, i + 1);
    EXPECT_EQ(all[i].version, next[all[i].stream]++) << all[i].stream;
  }
  EXPECT_EQ(next["shared"], kThreads * 5);
}

TEST_P(StoreContractTest, ReadsGoForwardsBackwardsAndFiltered) {
  for (int i = 0; i < 10; ++i) {
    RILL_ASSERT_OK(store_
                       ->Append(i % 2 ? "odd-1" : "even-1", ExpectedVersion::Any(),
                                {MakeEvent(i % 3 ? "Other" : "Third", i)})
                       .status());
  }
  ReadOptions back;
  back.direction = Direction::kBackward;
  back.limit = 2;
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> last_two,
                            store_->ReadStream("odd-1", kStreamEnd, back));
  EXPECT_EQ(Versions(last_two), (std::vector<int64_t>{4, 3}));
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log_back,
                            store_->ReadAll(kLogEnd, back));
  EXPECT_EQ(Positions(log_back), (std::vector<uint64_t>{10, 9}));
  ReadOptions filtered;
  filtered.filter.types = {"Third"};
  filtered.filter.stream_prefix = "even";
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> thirds, store_->ReadAll(1, filtered));
  EXPECT_EQ(Positions(thirds), (std::vector<uint64_t>{1, 7}));
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<StreamInfo> streams, store_->ListStreams(""));
  ASSERT_EQ(streams.size(), 2u);
  EXPECT_EQ(streams[0].name, "even-1");
  EXPECT_EQ(streams[0].event_count, 5u);
  EXPECT_TRUE(absl::IsNotFound(store_->ReadStream("missing", 0).status()));
}

TEST_P(StoreContractTest, SubscriptionCatchesUpThenFollowsLive) {
  for (int i = 0; i < 5; ++i) {
    RILL_ASSERT_OK(store_->Append("sub", ExpectedVersion::Any(), {MakeEvent("E", i)}).status());
  }
  absl::Mutex mu;
  std::vector<uint64_t> seen;
  std::atomic<bool> live{false};
  SubscriptionOptions options;
  options.on_live = [&] { live = true; };
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subscription> sub,
                            store_->Subscribe(0, options, [&](const EventView& e) {
                              absl::MutexLock lock(&mu);
                              seen.push_back(e.position());
                              return absl::OkStatus();
                            }));
  ASSERT_TRUE(WaitUntil([&] { return live.load(); }, kLong));
  for (int i = 5; i < 10; ++i) {
    RILL_ASSERT_OK(store_->Append("sub", ExpectedVersion::Any(), {MakeEvent("E", i)}).status());
  }
  ASSERT_TRUE(WaitUntil(
      [&] {
        absl::MutexLock lock(&mu);
        return seen.size() >= 10;
      },
      kLong));
  sub->Stop();
  RILL_EXPECT_OK(sub->status());
  absl::MutexLock lock(&mu);
  EXPECT_EQ(seen, (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
}

TEST_P(StoreContractTest, ProjectionAppliesEveryEventOnceAndWaitsForWrites) {
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<ProjectionRunner> runner,
      ProjectionRunner::Start(store_.get(), {::rill::testing::LedgerProjection()}));
  uint64_t last = 0;
  for (int i = 0; i < 20; ++i) {
    RILL_ASSERT_OK_AND_ASSIGN(
        AppendResult r,
        store_->Append(absl::StrCat("p-", i % 3), ExpectedVersion::Any(), {MakeEvent("E", i)}));
    last = r.last_position;
  }
  RILL_ASSERT_OK(runner->WaitFor(::rill::testing::kLedger, last, kLong));
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ReadModelView> view,
                            runner->View(::rill::testing::kLedger));
  RILL_ASSERT_OK_AND_ASSIGN(std::optional<std::string> count, view->Get("totals", "count"));
  ASSERT_TRUE(count.has_value());
  EXPECT_EQ(*count, "20");
  for (uint64_t p = 1; p <= last; ++p) {
    RILL_ASSERT_OK_AND_ASSIGN(std::optional<std::string> n,
                              view->Get("applied", ::rill::testing::PosKey(p)));
    EXPECT_EQ(n.value_or("0"), "1") << "position " << p;
  }
  runner->Stop();
}

TEST_P(StoreContractTest, SnapshotsShortenLoadsAndAgreeWithAFold) {
  SnapshotPolicy policy;
  policy.every_n_events = 5;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnapshotStore> snapshots,
                            SnapshotStore::Open(store_.get(), policy));
  auto decode = [](absl::string_view data) -> absl::StatusOr<int64_t> {
    int64_t n = 0;
    if (!absl::SimpleAtoi(data, &n)) return absl::InvalidArgumentError("not a number");
    return n;
  };
  auto encode = [](const int64_t& n) { return absl::StrCat(n); };
  auto apply = [](int64_t& sum, const EventView& e) { sum += static_cast<int64_t>(e.position()); };
  for (int i = 0; i < 12; ++i) {
    RILL_ASSERT_OK(store_->Append("agg", ExpectedVersion::Any(), {MakeEvent("E", i)}).status());
  }
  RILL_ASSERT_OK_AND_ASSIGN(LoadedAggregate<int64_t> first,
                            snapshots->LoadAggregate("agg", 1, int64_t{0}, decode, encode, apply));
  EXPECT_EQ(first.state, 78);  // 1 + 2 + ... + 12
  EXPECT_TRUE(first.snapshot_saved);
  RILL_ASSERT_OK(store_->Append("agg", ExpectedVersion::Exact(11), {MakeEvent("E", 12)}).status());
  RILL_ASSERT_OK_AND_ASSIGN(LoadedAggregate<int64_t> second,
                            snapshots->LoadAggregate("agg", 1, int64_t{0}, decode, encode, apply));
  EXPECT_TRUE(second.from_snapshot);
  EXPECT_EQ(second.events_folded, 1);
  EXPECT_EQ(second.state, 91);
}

TEST_P(StoreContractTest, ReplayRerunsAnyRangeOfHistory) {
  for (int i = 0; i < 10; ++i) {
    RILL_ASSERT_OK(
        store_->Append(absl::StrCat("r-", i % 2), ExpectedVersion::Any(), {MakeEvent("E", i)})
            .status());
  }
  std::vector<uint64_t> seen;
  RILL_ASSERT_OK_AND_ASSIGN(
      ReplayResult r, ReplayPositions(store_.get(), 3, 7, EventFilter(), [&](const EventView& e) {
        seen.push_back(e.position());
        return true;
      }));
  EXPECT_EQ(r.delivered, 5u);
  EXPECT_EQ(seen, (std::vector<uint64_t>{3, 4, 5, 6, 7}));
  std::vector<int64_t> versions;
  RILL_ASSERT_OK(ReplayStream(store_.get(), "r-1", 2, [&](const EventView& e) {
                   versions.push_back(e.version());
                   return true;
                 }).status());
  EXPECT_EQ(versions, (std::vector<int64_t>{0, 1, 2}));
}

// The process's append series count a request where it was made, with the
// same outcomes on both backends; a replicated node's commits are its
// replica's (one per message here: one caller at a time).
TEST_P(StoreContractTest, MetricsCountEveryOutcomeOfThisProcesssAppends) {
  auto payload_bytes = [](const std::vector<EventData>& events) {
    uint64_t n = 0;
    for (const EventData& e : events) n += e.payload.size();
    return n;
  };
  AppendOptions keyed;
  keyed.idempotency_key = "m-create";
  const std::vector<EventData> two = MakeEvents(2), three = MakeEvents(3, 2);
  RILL_ASSERT_OK(store_->Append("m", ExpectedVersion::NoStream(), two, keyed).status());
  RILL_ASSERT_OK(store_->Append("m", ExpectedVersion::Exact(1), three).status());
  RILL_ASSERT_OK_AND_ASSIGN(AppendResult retry,
                            store_->Append("m", ExpectedVersion::NoStream(), two, keyed));
  EXPECT_TRUE(retry.deduplicated);
  EXPECT_TRUE(
      absl::IsAborted(store_->Append("m", ExpectedVersion::Exact(0), MakeEvents(1)).status()));
  EXPECT_TRUE(absl::IsAlreadyExists(
      store_->Append("m", ExpectedVersion::Any(), MakeEvents(1), keyed).status()));

  RILL_ASSERT_OK_AND_ASSIGN(const Metrics m, CollectMetrics(store_.get()));
  EXPECT_EQ(m.requests_written, 2u);
  EXPECT_EQ(m.requests_deduplicated, 1u);
  EXPECT_EQ(m.requests_conflicted, 1u);
  EXPECT_EQ(m.requests_failed, 1u);
  EXPECT_EQ(m.events_appended, 5u);
  EXPECT_EQ(m.bytes_appended, payload_bytes(two) + payload_bytes(three));
  EXPECT_EQ(m.commits, 2u);
  EXPECT_EQ(m.events_per_commit.count, 2u);
  EXPECT_DOUBLE_EQ(m.events_per_commit.sum, 5);
  EXPECT_EQ(m.commit_seconds.count, 2u);
  EXPECT_EQ(m.store.head_position, 5u);
}

}  // namespace
}  // namespace rill
