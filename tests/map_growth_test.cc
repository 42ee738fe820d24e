// Map growth: a store opened with a 1 MiB map takes ~50 MB of events without
// ever showing MDB_MAP_FULL (ResourceExhausted) to the caller, while other
// threads read, scan and subscribe; everything reads back after reopening
// with the same small initial map.
#include <atomic>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "child_protocol.h"
#include "gtest/gtest.h"
#include "process_util.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::ChildEventPayload;
using ::rill::testing::ChildEvents;
using ::rill::testing::ChildExpected;
using ::rill::testing::TempDir;
using ::rill::testing::WaitUntil;

constexpr size_t kInitialMap = size_t{1} << 20;
constexpr size_t kTotalBytes = size_t{50} << 20;
constexpr int kWriters = 2;

// "big-*" streams get payloads of up to 30 KB (LMDB overflow pages), "small-*"
// streams payloads of up to 100 bytes (many records per leaf page).
size_t MaxPad(absl::string_view stream) { return absl::StartsWith(stream, "big-") ? 30000 : 100; }

// What the event at (stream, version) must hold; payloads are written with
// the stream name as the writer.
bool EventIsRight(absl::string_view stream, int64_t version, absl::string_view payload) {
  return payload == ChildEventPayload(stream, version, stream, MaxPad(stream));
}

StoreOptions SmallMap() {
  StoreOptions options;
  options.initial_map_size = kInitialMap;
  return options;
}

// Records the first error a background thread met.
class ErrorLog {
 public:
  void Add(const std::string& error) {
    absl::MutexLock lock(&mu_);
    if (first_.empty()) first_ = error;
  }
  std::string first() {
    absl::MutexLock lock(&mu_);
    return first_;
  }

 private:
  absl::Mutex mu_;
  std::string first_;
};

// Follows the log with ReadAll pages, checking positions and contents.
void FollowWithReadAll(Store* store, const std::atomic<bool>* writing, ErrorLog* errors) {
  uint64_t next = 1;
  std::map<std::string, int64_t> versions;
  for (;;) {
    const bool last_round = !writing->load();
    ReadOptions options;
    options.limit = 64;
    absl::StatusOr<std::vector<RecordedEvent>> events = store->ReadAll(next, options);
    if (!events.ok()) return errors->Add("ReadAll: " + events.status().ToString());
    for (const RecordedEvent& e : *events) {
      if (e.position != next) {
        return errors->Add(absl::StrCat("ReadAll: position ", e.position, " after ", next - 1));
      }
      int64_t& v = versions[e.stream];
      if (e.version != v || !EventIsRight(e.stream, e.version, e.payload)) {
        return errors->Add(absl::StrCat("ReadAll: wrong event ", e.stream, "@", e.version));
      }
      ++v;
      ++next;
    }
    if (last_round && events->empty()) return;
  }
}

// Scans the whole log again and again, checking that each scan is gapless.
void ScanRepeatedly(Store* store, const std::atomic<bool>* writing, ErrorLog* errors) {
  do {
    uint64_t next = 1;
    std::string error;
    const absl::Status s = store->ScanAll(1, ReadOptions(), [&](const EventView& e) {
      if (e.position() != next || !EventIsRight(e.stream(), e.version(), e.payload())) {
        error = absl::StrCat("ScanAll: bad event at position ", e.position());
        return false;
      }
      ++next;
      return true;
    });
    if (!s.ok()) return errors->Add("ScanAll: " + s.ToString());
    if (!error.empty()) return errors->Add(error);
    absl::StatusOr<StoreStats> stats = store->Stats();
    if (!stats.ok()) return errors->Add("Stats: " + stats.status().ToString());
    if (stats->head_position < next - 1) {
      return errors->Add(
          absl::StrCat("Stats: head ", stats->head_position, " behind a scan that saw ", next - 1));
    }
  } while (writing->load());
}

// Reads streams from the start, checking versions against the stream index.
void ReadStreamsRepeatedly(Store* store, const std::atomic<bool>* writing, ErrorLog* errors) {
  int round = 0;
  do {
    const std::string stream = absl::StrCat(round % 2 ? "big-" : "small-", (round / 2) % kWriters);
    ++round;
    absl::StatusOr<StreamInfo> info = store->GetStreamInfo(stream);
    if (!info.ok()) return errors->Add("GetStreamInfo: " + info.status().ToString());
    if (!info->exists) continue;
    ReadOptions options;
    options.limit = 200;
    const int64_t from = info->last_version > 150 ? info->last_version - 150 : 0;
    absl::StatusOr<std::vector<RecordedEvent>> events = store->ReadStream(stream, from, options);
    if (!events.ok()) return errors->Add("ReadStream: " + events.status().ToString());
    if (events->size() < static_cast<size_t>(info->last_version - from + 1)) {
      return errors->Add(absl::StrCat("ReadStream ", stream, " lost events"));
    }
    for (size_t i = 0; i < events->size(); ++i) {
      const RecordedEvent& e = (*events)[i];
      if (e.version != from + static_cast<int64_t>(i) ||
          !EventIsRight(stream, e.version, e.payload)) {
        return errors->Add(absl::StrCat("ReadStream: wrong event ", stream, "@", e.version));
      }
    }
  } while (writing->load());
}

TEST(MapGrowthTest, FiftyMegabytesIntoAOneMegabyteMapWhileOthersRead) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir, SmallMap()));
  RILL_ASSERT_OK_AND_ASSIGN(const StoreStats initial, store->Stats());
  EXPECT_LT(initial.map_size, kTotalBytes / 4) << "the map did not start near initial_map_size";

  // A subscription follows the log from the start while the map grows.
  absl::Mutex sub_mu;
  uint64_t sub_next = 1;
  std::string sub_error;
  RILL_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subscription> sub,
      store->Subscribe(0, SubscriptionOptions(), [&](const EventView& e) {
        absl::MutexLock lock(&sub_mu);
        if (sub_error.empty() &&
            (e.position() != sub_next || !EventIsRight(e.stream(), e.version(), e.payload()))) {
          sub_error = absl::StrCat("subscription: bad event at ", e.position());
        }
        ++sub_next;
        return absl::OkStatus();
      }));

  std::atomic<bool> writing{true};
  ErrorLog reader_errors;
  std::vector<std::thread> readers;
  readers.emplace_back(FollowWithReadAll, store.get(), &writing, &reader_errors);
  readers.emplace_back(ScanRepeatedly, store.get(), &writing, &reader_errors);
  readers.emplace_back(ReadStreamsRepeatedly, store.get(), &writing, &reader_errors);

  std::atomic<size_t> bytes_written{0};
  ErrorLog writer_errors;
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      const std::string big = absl::StrCat("big-", w);
      const std::string small = absl::StrCat("small-", w);
      int64_t big_next = 0, small_next = 0;
      for (int batch = 0; bytes_written.load() < kTotalBytes; ++batch) {
        const bool is_big = batch % 2 == 0;
        const std::string& stream = is_big ? big : small;
        int64_t& next = is_big ? big_next : small_next;
        const int n = is_big ? 16 : 300;
        std::vector<EventData> events =
            ChildEvents(stream, next, next + n - 1, stream, MaxPad(stream));
        size_t bytes = 0;
        for (const EventData& e : events) bytes += e.payload.size();
        absl::StatusOr<AppendResult> r = store->Append(stream, ChildExpected(next), events);
        if (!r.ok())
          return writer_errors.Add(
              absl::StrCat("append of ", bytes, " bytes: ", r.status().ToString()));
        next += n;
        bytes_written += bytes;
      }
    });
  }
  for (std::thread& t : writers) t.join();
  writing = false;
  for (std::thread& t : readers) t.join();
  ASSERT_EQ(writer_errors.first(), "") << "map growth surfaced to an append";
  EXPECT_EQ(reader_errors.first(), "") << "a reader failed while the map grew";

  RILL_ASSERT_OK_AND_ASSIGN(const StoreStats stats, store->Stats());
  EXPECT_GE(stats.map_size, kTotalBytes) << "the map must have grown past the data";
  EXPECT_GE(stats.map_size, 32 * kInitialMap);
  EXPECT_GE(stats.map_size, stats.used_bytes);
  EXPECT_GE(stats.map_size, stats.file_bytes);
  const uint64_t head = stats.head_position;

  ASSERT_TRUE(WaitUntil(
      [&] {
        absl::MutexLock lock(&sub_mu);
        return sub_next > head || !sub_error.empty() || !sub->running();
      },
      absl::Seconds(60)))
      << "the subscription did not reach the head";
  EXPECT_TRUE(sub->status().ok()) << sub->status();
  sub->Stop();
  {
    absl::MutexLock lock(&sub_mu);
    EXPECT_EQ(sub_error, "");
    EXPECT_EQ(sub_next, head + 1);
  }
  sub.reset();
  store.reset();

  // Reopened with the same small initial map: everything is there.
  RILL_ASSERT_OK_AND_ASSIGN(store, Store::Open(store_dir, SmallMap()));
  uint64_t next = 1;
  size_t payload_bytes = 0;
  std::map<std::string, int64_t> versions;
  RILL_ASSERT_OK(store->ScanAll(1, ReadOptions(), [&](const EventView& e) {
    EXPECT_EQ(e.position(), next);
    int64_t& v = versions[std::string(e.stream())];
    EXPECT_EQ(e.version(), v);
    EXPECT_TRUE(EventIsRight(e.stream(), e.version(), e.payload()))
        << e.stream() << "@" << e.version();
    ++v;
    ++next;
    payload_bytes += e.payload().size();
    return !::testing::Test::HasFailure();
  }));
  EXPECT_EQ(next, head + 1);
  EXPECT_EQ(payload_bytes, bytes_written.load());
  RILL_ASSERT_OK_AND_ASSIGN(const StoreStats reopened, store->Stats());
  EXPECT_EQ(reopened.head_position, head);
  EXPECT_GE(reopened.map_size, reopened.used_bytes);
  // And it keeps growing after the reopen.
  RILL_ASSERT_OK(store
                     ->Append("big-0", ChildExpected(versions["big-0"]),
                              ChildEvents("big-0", versions["big-0"], versions["big-0"] + 99,
                                          "big-0", MaxPad("big-0")))
                     .status());
}

TEST(MapGrowthTest, OneEventLargerThanTheWholeMap) {
  TempDir dir;
  const std::string store_dir = dir.Sub("store");
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(store_dir, SmallMap()));
  // 12 MiB in one event: one doubling of a 1 MiB map is not enough.
  EventData big;
  big.type = "Huge";
  big.content_type = ContentType::kBinary;
  big.payload.resize(size_t{12} << 20);
  for (size_t i = 0; i < big.payload.size(); ++i) {
    big.payload[i] = static_cast<char>((i * 131) >> 7);
  }
  RILL_ASSERT_OK_AND_ASSIGN(const AppendResult r,
                            store->Append("huge", ExpectedVersion::NoStream(), {big}));
  EXPECT_EQ(r.first_position, 1u);
  RILL_ASSERT_OK_AND_ASSIGN(const StoreStats stats, store->Stats());
  EXPECT_GE(stats.map_size, big.payload.size());
  store.reset();
  RILL_ASSERT_OK_AND_ASSIGN(store, Store::Open(store_dir, SmallMap()));
  RILL_ASSERT_OK_AND_ASSIGN(const std::vector<RecordedEvent> events, store->ReadAll(1));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].payload == big.payload) << "payload differs after reopen";
}

// Runs `fn` on a thread; false when it has not finished after a minute (a
// deadlock), in which case the process is aborted: the blocked thread could
// not be joined.
bool FinishesWithoutDeadlock(const std::function<void()>& fn) {
  absl::Notification done;
  std::thread t([&] {
    fn();
    done.Notify();
  });
  if (!done.WaitForNotificationWithTimeout(absl::Seconds(60))) {
    ADD_FAILURE() << "deadlock: still blocked after 60 s";
    std::abort();
  }
  t.join();
  return true;
}

TEST(MapGrowthTest, ScanCallbacksAndHandlersThatAppendCanGrowTheMap) {
  // ScanAll promises that its transactions have ended before the callback
  // runs, "so fn may take its time and may append". Appends that must grow
  // the map (which needs every transaction of this process to be closed)
  // from inside a scan callback or a subscription handler must not deadlock.
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                            Store::Open(dir.Sub("store"), SmallMap()));
  RILL_ASSERT_OK(
      store->Append("seed", ExpectedVersion::NoStream(), testing::MakeEvents(40)).status());
  auto big_events = [](int n) {
    std::vector<EventData> events = testing::MakeEvents(4, n);
    for (EventData& e : events) e.payload.append(60000, 'g');
    return events;  // 240 KB: a few of these outgrow a 1 MiB map
  };
  int appended = 0;
  absl::Status scan;
  FinishesWithoutDeadlock([&] {
    ReadOptions options;
    options.filter.stream_prefix = "seed";
    scan = store->ScanAll(1, options, [&](const EventView& e) {
      absl::Status s = store
                           ->Append("grown-by-scan", ExpectedVersion::Any(),
                                    big_events(static_cast<int>(e.position())))
                           .status();
      EXPECT_TRUE(s.ok()) << s;
      ++appended;
      return s.ok();
    });
  });
  EXPECT_TRUE(scan.ok()) << scan;
  EXPECT_EQ(appended, 40);

  absl::Notification handled_all;
  std::atomic<int> handled{0};
  std::unique_ptr<Subscription> sub;
  SubscriptionOptions options;
  options.filter.stream_prefix = "seed";
  RILL_ASSERT_OK_AND_ASSIGN(sub, store->Subscribe(0, options, [&](const EventView& e) {
    absl::Status s = store
                         ->Append("grown-by-handler", ExpectedVersion::Any(),
                                  big_events(static_cast<int>(e.position())))
                         .status();
    if (++handled == 40) handled_all.Notify();
    return s;
  }));
  FinishesWithoutDeadlock([&] { handled_all.WaitForNotification(); });
  sub->Stop();
  EXPECT_TRUE(sub->status().ok()) << sub->status();

  RILL_ASSERT_OK_AND_ASSIGN(const StoreStats stats, store->Stats());
  EXPECT_GE(stats.map_size, size_t{80} * 240000);
  RILL_ASSERT_OK_AND_ASSIGN(const StreamInfo by_scan, store->GetStreamInfo("grown-by-scan"));
  RILL_ASSERT_OK_AND_ASSIGN(const StreamInfo by_handler, store->GetStreamInfo("grown-by-handler"));
  EXPECT_EQ(by_scan.event_count, 160u);
  EXPECT_EQ(by_handler.event_count, 160u);
}

}  // namespace
}  // namespace rill
