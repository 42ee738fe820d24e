// Subscriptions and WaitForHead: catch-up then live delivery (every event
// once, in order), filters, on_live, Stop, handler errors, isolation of slow
// handlers from appends, and the wake-ups of WaitForHead.
//
// Waits are bounded only to turn a hang into a failure; nothing here asserts
// how fast anything is.
#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::TempDir;
using ::rill::testing::WaitUntil;

constexpr absl::Duration kHang = absl::Seconds(60);

struct Seen {
  uint64_t position;
  std::string stream;
  int64_t version;
  std::string type;
  std::string payload;
};

// Collects what a handler sees; thread-safe.
class Collector {
 public:
  absl::Status Add(const EventView& e) {
    absl::MutexLock lock(&mu_);
    seen_.push_back(Seen{e.position(), std::string(e.stream()), e.version(), std::string(e.type()),
                         std::string(e.payload())});
    return absl::OkStatus();
  }
  SubscriptionHandler Handler() {
    return [this](const EventView& e) { return Add(e); };
  }
  // Waits until at least `n` events were seen; false on a hang.
  bool WaitFor(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n] {
      mu_.AssertHeld();
      return seen_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kHang);
  }
  std::vector<Seen> seen() {
    absl::MutexLock lock(&mu_);
    return seen_;
  }
  size_t size() {
    absl::MutexLock lock(&mu_);
    return seen_.size();
  }

 private:
  absl::Mutex mu_;
  std::vector<Seen> seen_ ABSL_GUARDED_BY(mu_);
};

// Runs `fn` on a thread and waits for it; false when it has not finished
// after kHang (it is still joined before returning).
bool FinishesWithoutHanging(const std::function<void()>& fn) {
  absl::Notification done;
  std::thread t([&] {
    fn();
    done.Notify();
  });
  const bool finished = done.WaitForNotificationWithTimeout(kHang);
  t.join();
  return finished;
}

class SubscriptionTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(StoreOptions()); }

  void Open(const StoreOptions& options) {
    store_.reset();
    RILL_ASSERT_OK_AND_ASSIGN(store_, Store::Open(dir_.Sub("store"), options));
  }

  // Appends `n` events "E<i>" with payload {"n":i} to `stream`.
  void AppendN(const std::string& stream, int first, int n, const std::string& type = "") {
    for (int i = first; i < first + n; ++i) {
      EventData e = testing::MakeEvent(type.empty() ? absl::StrCat("E", i) : type, i);
      RILL_ASSERT_OK(store_->Append(stream, ExpectedVersion::Any(), {e}).status());
    }
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(SubscriptionTest, CatchUpThenLiveDeliversEveryEventOnceInOrder) {
  AppendN("before", 0, 150);
  Collector got;
  std::atomic<int> live_calls{0};
  std::atomic<size_t> seen_when_live{0};
  absl::Notification live;
  SubscriptionOptions options;
  options.batch_size = 16;  // several catch-up batches
  options.on_live = [&] {
    seen_when_live = got.size();
    ++live_calls;
    live.Notify();
  };
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subscription> sub,
                            store_->Subscribe(0, options, got.Handler()));
  ASSERT_TRUE(live.WaitForNotificationWithTimeout(kHang)) << "on_live never called";
  EXPECT_TRUE(sub->live());
  EXPECT_GE(seen_when_live.load(), 150u) << "on_live before catching up";

  // Live: appends from several threads after the subscription caught up.
  std::vector<std::thread> appenders;
  for (int t = 0; t < 3; ++t) {
    appenders.emplace_back([&, t] { AppendN(absl::StrCat("after-", t), 1000 * t, 50); });
  }
  for (std::thread& t : appenders) t.join();
  ASSERT_TRUE(got.WaitFor(300)) << "live events not delivered";
  ASSERT_TRUE(WaitUntil([&] { return sub->position() == 300; }, kHang));
  EXPECT_TRUE(sub->running());
  EXPECT_TRUE(sub->status().ok()) << sub->status();
  sub->Stop();
  EXPECT_FALSE(sub->running());
  EXPECT_TRUE(sub->status().ok()) << sub->status();
  EXPECT_EQ(live_calls.load(), 1);

  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log, store_->ReadAll(1));
  const std::vector<Seen> seen = got.seen();
  ASSERT_EQ(seen.size(), log.size());
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].position, i + 1);
    EXPECT_EQ(seen[i].stream, log[i].stream);
    EXPECT_EQ(seen[i].version, log[i].version);
    EXPECT_EQ(seen[i].payload, log[i].payload);
  }
}

TEST_F(SubscriptionTest, AfterPositionSkipsEarlierEvents) {
  AppendN("s", 0, 50);
  Collector got;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subscription> sub,
                            store_->Subscribe(30, SubscriptionOptions(), got.Handler()));
  AppendN("s", 50, 10);
  ASSERT_TRUE(got.WaitFor(30));
  ASSERT_TRUE(WaitUntil([&] { return sub->position() == 60; }, kHang));
  sub->Stop();
  const std::vector<Seen> seen = got.seen();
  ASSERT_EQ(seen.size(), 30u);
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].position, 31 + i);
    EXPECT_EQ(seen[i].version, static_cast<int64_t>(30 + i));
  }
}

TEST_F(SubscriptionTest, FiltersByTypeAndStreamPrefix) {
  // 60 events over three streams and three types; the last one matches no
  // filter below, so position() must pass events nobody is shown.
  const std::vector<std::string> streams = {"order-1", "order-2", "cust-1"};
  const std::vector<std::string> types = {"Created", "Paid", "Shipped"};
  struct Appended {
    std::string stream, type;
  };
  std::vector<Appended> appended;
  auto append = [&](int i) {
    const Appended a{streams[i % 3], types[(i / 3) % 3]};
    RILL_ASSERT_OK(
        store_->Append(a.stream, ExpectedVersion::Any(), {testing::MakeEvent(a.type, i)}).status());
    appended.push_back(a);
  };
  for (int i = 0; i < 30; ++i) append(i);

  struct Case {
    EventFilter filter;
    std::unique_ptr<Collector> got = std::make_unique<Collector>();
    std::unique_ptr<Subscription> sub;
  };
  std::vector<Case> cases(3);
  cases[0].filter.types = {"Paid"};
  cases[1].filter.stream_prefix = "order-";
  cases[2].filter.types = {"Paid", "Shipped"};
  cases[2].filter.stream_prefix = "order-2";
  for (Case& c : cases) {
    SubscriptionOptions options;
    options.filter = c.filter;
    options.batch_size = 7;
    RILL_ASSERT_OK_AND_ASSIGN(c.sub, store_->Subscribe(0, options, c.got->Handler()));
  }
  for (int i = 30; i < 59; ++i) append(i);
  RILL_ASSERT_OK(
      store_->Append("cust-1", ExpectedVersion::Any(), {testing::MakeEvent("Created", 59)})
          .status());
  appended.push_back({"cust-1", "Created"});

  for (Case& c : cases) {
    std::vector<uint64_t> expected;
    for (size_t i = 0; i < appended.size(); ++i) {
      const bool type_ok =
          c.filter.types.empty() || std::find(c.filter.types.begin(), c.filter.types.end(),
                                              appended[i].type) != c.filter.types.end();
      const bool prefix_ok = appended[i].stream.rfind(c.filter.stream_prefix, 0) == 0;
      if (type_ok && prefix_ok) expected.push_back(i + 1);
    }
    ASSERT_FALSE(expected.empty());
    ASSERT_TRUE(WaitUntil([&] { return c.sub->position() == 60; }, kHang))
        << "position() stuck at " << c.sub->position();
    c.sub->Stop();
    const std::vector<Seen> seen = c.got->seen();
    ASSERT_EQ(seen.size(), expected.size()) << "prefix " << c.filter.stream_prefix;
    for (size_t i = 0; i < seen.size(); ++i) {
      EXPECT_EQ(seen[i].position, expected[i]);
      EXPECT_EQ(seen[i].stream, appended[expected[i] - 1].stream);
      EXPECT_EQ(seen[i].type, appended[expected[i] - 1].type);
    }
  }
}

TEST_F(SubscriptionTest, StopIsIdempotentAndTheHandlerIsNotCalledAfterItReturns) {
  std::atomic<bool> stopped{false};
  std::atomic<int> calls_after_stop{0};
  std::atomic<int> calls{0};
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subscription> sub,
                            store_->Subscribe(0, SubscriptionOptions(), [&](const EventView&) {
                              if (stopped) ++calls_after_stop;
                              ++calls;
                              absl::SleepFor(absl::Microseconds(200));
                              return absl::OkStatus();
                            }));
  // Appends keep coming while the subscription is stopped.
  std::atomic<bool> appending{true};
  std::thread appender([&] {
    for (int i = 0; appending; ++i) {
      ASSERT_TRUE(store_->Append("s", ExpectedVersion::Any(), {testing::MakeEvent("E", i)}).ok());
    }
  });
  ASSERT_TRUE(WaitUntil([&] { return calls >= 20; }, kHang));
  // Two threads stop it at once; both return, and it stays stopped.
  std::thread other_stop([&] { sub->Stop(); });
  sub->Stop();
  other_stop.join();
  stopped = true;
  EXPECT_FALSE(sub->running());
  EXPECT_TRUE(sub->status().ok()) << sub->status();
  const int calls_at_stop = calls;
  // Give a handler that wrongly survived Stop a moment to show itself.
  EXPECT_FALSE(WaitUntil([&] { return calls_after_stop > 0; }, absl::Milliseconds(200)))
      << "the handler ran after Stop returned";
  appending = false;
  appender.join();
  sub->Stop();  // idempotent
  EXPECT_EQ(calls.load(), calls_at_stop);
  EXPECT_EQ(calls_after_stop.load(), 0);
  sub.reset();  // destroying a stopped subscription is fine too
}

TEST_F(SubscriptionTest, StopDuringCatchUpAndDestroyWithoutStop) {
  for (int i = 0; i < 20; ++i) {
    std::vector<EventData> batch = testing::MakeEvents(100, 100 * i);
    RILL_ASSERT_OK(store_->Append("backlog", ExpectedVersion::Any(), batch).status());
  }
  // A slow handler still far behind the head when Stop is called.
  std::atomic<bool> stopped{false};
  std::atomic<int> calls{0}, calls_after_stop{0};
  SubscriptionOptions options;
  options.batch_size = 50;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subscription> sub,
                            store_->Subscribe(0, options, [&](const EventView&) {
                              if (stopped) ++calls_after_stop;
                              ++calls;
                              absl::SleepFor(absl::Milliseconds(1));
                              return absl::OkStatus();
                            }));
  ASSERT_TRUE(WaitUntil([&] { return calls >= 10; }, kHang));
  EXPECT_TRUE(FinishesWithoutHanging([&] { sub->Stop(); })) << "Stop hung in catch-up";
  stopped = true;
  EXPECT_LT(sub->position(), 2000u);
  EXPECT_FALSE(sub->live());
  const int at_stop = calls;
  sub.reset();
  EXPECT_EQ(calls.load(), at_stop);
  EXPECT_EQ(calls_after_stop.load(), 0);

  // The destructor stops a running subscription, live or not.
  Collector got;
  RILL_ASSERT_OK_AND_ASSIGN(sub, store_->Subscribe(1990, SubscriptionOptions(), got.Handler()));
  ASSERT_TRUE(got.WaitFor(10));
  EXPECT_TRUE(FinishesWithoutHanging([&] { sub.reset(); })) << "destructor hung";
  const size_t at_destroy = got.size();
  AppendN("backlog", 2000, 5);
  EXPECT_EQ(got.size(), at_destroy);
}

TEST_F(SubscriptionTest, HandlerErrorEndsTheSubscriptionWithThatStatus) {
  AppendN("s", 0, 20);
  std::atomic<int> calls{0};
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subscription> sub,
                            store_->Subscribe(0, SubscriptionOptions(), [&](const EventView& e) {
                              ++calls;
                              if (e.position() == 5)
                                return absl::FailedPreconditionError("handler says no");
                              return absl::OkStatus();
                            }));
  ASSERT_TRUE(WaitUntil([&] { return !sub->running(); }, kHang))
      << "the subscription went on after its handler failed";
  EXPECT_EQ(sub->status().code(), absl::StatusCode::kFailedPrecondition) << sub->status();
  EXPECT_EQ(sub->status().message(), "handler says no");
  EXPECT_EQ(calls.load(), 5);
  AppendN("s", 20, 5);
  EXPECT_FALSE(sub->running());
  EXPECT_EQ(calls.load(), 5);
  EXPECT_TRUE(FinishesWithoutHanging([&] { sub->Stop(); }));
  EXPECT_EQ(calls.load(), 5);
}

TEST_F(SubscriptionTest, BlockedHandlerDoesNotBlockAppendsOrMapGrowth) {
  // A small map, so that the appends below must grow it while the
  // subscription's handler is blocked (a read transaction held across the
  // handler would stall the resize).
  StoreOptions small;
  small.initial_map_size = size_t{1} << 20;
  Open(small);
  absl::Notification entered, release;
  std::atomic<int> returned{0};
  std::vector<uint64_t> positions;  // written by the handler thread only
  SubscriptionOptions options;
  options.batch_size = 8;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subscription> sub,
                            store_->Subscribe(0, options, [&](const EventView& e) {
                              if (!entered.HasBeenNotified()) {
                                entered.Notify();
                                release.WaitForNotification();
                              }
                              positions.push_back(e.position());
                              ++returned;
                              return absl::OkStatus();
                            }));
  AppendN("s", 0, 1);
  ASSERT_TRUE(entered.WaitForNotificationWithTimeout(kHang));

  // 4 threads x 25 appends of 4 x 20 KB while the handler is blocked.
  std::atomic<int> failures{0};
  absl::Notification appends_done;
  std::thread appenders([&] {
    std::vector<std::thread> pool;
    for (int t = 0; t < 4; ++t) {
      pool.emplace_back([&, t] {
        for (int i = 0; i < 25; ++i) {
          std::vector<EventData> events = testing::MakeEvents(4, 100 * t + 4 * i);
          for (EventData& e : events) e.payload.append(20000, 'x');
          if (!store_->Append(absl::StrCat("w-", t), ExpectedVersion::Any(), events).ok()) {
            ++failures;
          }
        }
      });
    }
    for (std::thread& th : pool) th.join();
    appends_done.Notify();
  });
  const bool finished = appends_done.WaitForNotificationWithTimeout(kHang);
  // The handler has not returned from the first event yet.
  EXPECT_EQ(returned.load(), 0);
  release.Notify();
  appenders.join();
  ASSERT_TRUE(finished) << "appends waited for a blocked subscription handler";
  EXPECT_EQ(failures.load(), 0);
  RILL_ASSERT_OK_AND_ASSIGN(const StoreStats stats, store_->Stats());
  EXPECT_GT(stats.map_size, small.initial_map_size) << "the map was expected to grow";

  ASSERT_TRUE(WaitUntil([&] { return returned == 401; }, kHang));
  sub->Stop();
  ASSERT_EQ(positions.size(), 401u);
  for (size_t i = 0; i < positions.size(); ++i) EXPECT_EQ(positions[i], i + 1);
}

TEST_F(SubscriptionTest, CommitsWakeALiveSubscriptionWithoutPolling) {
  Collector got;
  absl::Notification live;
  SubscriptionOptions options;
  options.poll_interval = absl::Hours(1);  // only a wake-up can deliver in time
  options.on_live = [&] { live.Notify(); };
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subscription> sub,
                            store_->Subscribe(0, options, got.Handler()));
  ASSERT_TRUE(live.WaitForNotificationWithTimeout(kHang));
  for (int i = 0; i < 5; ++i) {
    AppendN("s", i, 1);
    ASSERT_TRUE(got.WaitFor(i + 1)) << "commit " << i << " did not wake the subscription";
  }
  EXPECT_TRUE(FinishesWithoutHanging([&] { sub->Stop(); }))
      << "Stop must not wait for the poll interval";
}

TEST_F(SubscriptionTest, ManySubscribersUnderConcurrentAppends) {
  constexpr int kSubscribers = 4;
  constexpr int kAppenders = 4;
  constexpr int kPerAppender = 200;
  std::vector<std::unique_ptr<Collector>> got;
  std::vector<std::unique_ptr<Subscription>> subs;
  for (int i = 0; i < kSubscribers; ++i) {
    got.push_back(std::make_unique<Collector>());
    SubscriptionOptions options;
    options.batch_size = 1 + 13 * i;
    RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subscription> sub,
                              store_->Subscribe(0, options, got.back()->Handler()));
    subs.push_back(std::move(sub));
  }
  std::vector<std::thread> appenders;
  for (int t = 0; t < kAppenders; ++t) {
    appenders.emplace_back([&, t] {
      for (int i = 0; i < kPerAppender; ++i) {
        const int n = 1 + i % 3;
        ASSERT_TRUE(
            store_->Append(absl::StrCat("a-", t), ExpectedVersion::Any(), testing::MakeEvents(n, i))
                .ok());
      }
    });
  }
  for (std::thread& t : appenders) t.join();
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> log, store_->ReadAll(1));
  for (int i = 0; i < kSubscribers; ++i) {
    ASSERT_TRUE(got[i]->WaitFor(log.size())) << "subscriber " << i;
    subs[i]->Stop();
    const std::vector<Seen> seen = got[i]->seen();
    ASSERT_EQ(seen.size(), log.size()) << "subscriber " << i;
    for (size_t p = 0; p < seen.size(); ++p) {
      ASSERT_EQ(seen[p].position, p + 1) << "subscriber " << i;
      ASSERT_EQ(seen[p].stream, log[p].stream);
      ASSERT_EQ(seen[p].version, log[p].version);
      ASSERT_EQ(seen[p].payload, log[p].payload);
    }
  }
}

TEST_F(SubscriptionTest, WaitForHeadReturnsOnCommit) {
  AppendN("s", 0, 3);
  absl::StatusOr<uint64_t> head = absl::UnknownError("not returned");
  absl::Notification waiting, returned;
  std::thread waiter([&] {
    waiting.Notify();
    // Neither the timeout nor polling can end this wait in time: only the
    // commit's wake-up can.
    head = store_->WaitForHead(3, absl::Seconds(90), absl::Seconds(90));
    returned.Notify();
  });
  waiting.WaitForNotification();
  AppendN("s", 3, 1);
  const bool woke = returned.WaitForNotificationWithTimeout(kHang);
  waiter.join();
  EXPECT_TRUE(woke) << "WaitForHead was not woken by a commit";
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(*head, 4u);
}

TEST_F(SubscriptionTest, WaitForHeadReturnsTheHeadOnTimeoutOrWhenAlreadyPast) {
  AppendN("s", 0, 3);
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t timed_out,
                            store_->WaitForHead(3, absl::Milliseconds(20)));
  EXPECT_EQ(timed_out, 3u);
  uint64_t past = 0;
  EXPECT_TRUE(FinishesWithoutHanging([&] {
    absl::StatusOr<uint64_t> head = store_->WaitForHead(1, absl::Seconds(90));
    past = head.ok() ? *head : 0;
  })) << "WaitForHead waited although the head was already past";
  EXPECT_EQ(past, 3u);
  RILL_ASSERT_OK_AND_ASSIGN(const uint64_t zero_timeout,
                            store_->WaitForHead(3, absl::ZeroDuration()));
  EXPECT_EQ(zero_timeout, 3u);
}

}  // namespace
}  // namespace rill
