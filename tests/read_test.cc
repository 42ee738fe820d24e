// Reads: ReadStream and ScanStream by version and direction, ReadAll and
// ScanAll by position, direction, limit and filter, GetStreamInfo,
// ListStreams paging, HeadPosition and Stats.
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rill/store.h"
#include "test_util.h"

namespace rill {
namespace {

using ::rill::testing::MakeEvent;
using ::rill::testing::Positions;
using ::rill::testing::SameEvent;
using ::rill::testing::TempDir;
using ::rill::testing::Versions;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

ReadOptions Forward(size_t limit = std::numeric_limits<size_t>::max()) {
  ReadOptions options;
  options.limit = limit;
  return options;
}

ReadOptions Backward(size_t limit = std::numeric_limits<size_t>::max()) {
  ReadOptions options;
  options.direction = Direction::kBackward;
  options.limit = limit;
  return options;
}

ReadOptions Filtered(std::vector<std::string> types, std::string prefix,
                     Direction direction = Direction::kForward,
                     size_t limit = std::numeric_limits<size_t>::max()) {
  ReadOptions options;
  options.direction = direction;
  options.limit = limit;
  options.filter.types = std::move(types);
  options.filter.stream_prefix = std::move(prefix);
  return options;
}

std::vector<std::string> Names(const std::vector<StreamInfo>& infos) {
  std::vector<std::string> names;
  for (const StreamInfo& info : infos) names.push_back(info.name);
  return names;
}

// The log every test reads (positions interleave across streams):
//   pos stream      ver type
//   1   order-1     0   Created
//   2   customer-1  0   Registered
//   3   order-1     1   ItemAdded
//   4   order-1     2   ItemAdded
//   5   order-2     0   Created
//   6   customer-1  1   Renamed
//   7   order-2     1   ItemAdded
//   8   order-1     3   Shipped
class ReadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RILL_ASSERT_OK_AND_ASSIGN(store_, Store::Open(dir_.path()));
    Add("order-1", {"Created"});
    Add("customer-1", {"Registered"});
    Add("order-1", {"ItemAdded", "ItemAdded"});
    Add("order-2", {"Created"});
    Add("customer-1", {"Renamed"});
    Add("order-2", {"ItemAdded"});
    before_last_ = absl::Now();
    Add("order-1", {"Shipped"});
    after_last_ = absl::Now();
  }

  void Add(const std::string& stream, const std::vector<std::string>& types) {
    std::vector<EventData> events;
    for (const std::string& type : types) {
      events.push_back(MakeEvent(type, next_n_++));
    }
    RILL_ASSERT_OK(store_->Append(stream, ExpectedVersion::Any(), events).status());
  }

  std::vector<uint64_t> ReadAllPositions(uint64_t from, const ReadOptions& options) {
    absl::StatusOr<std::vector<RecordedEvent>> events = store_->ReadAll(from, options);
    EXPECT_TRUE(events.ok()) << events.status();
    return events.ok() ? Positions(*events) : std::vector<uint64_t>{};
  }

  std::vector<int64_t> ReadStreamVersions(const std::string& stream, int64_t from,
                                          const ReadOptions& options) {
    absl::StatusOr<std::vector<RecordedEvent>> events = store_->ReadStream(stream, from, options);
    EXPECT_TRUE(events.ok()) << events.status();
    return events.ok() ? Versions(*events) : std::vector<int64_t>{};
  }

  // Positions ScanAll delivers; the callback returns false on the
  // `stop_after`th event (never when -1).
  std::vector<uint64_t> ScanAllPositions(uint64_t from, const ReadOptions& options,
                                         int stop_after = -1) {
    std::vector<uint64_t> seen;
    absl::Status s = store_->ScanAll(from, options, [&](const EventView& v) {
      seen.push_back(v.position());
      return static_cast<int>(seen.size()) != stop_after;
    });
    EXPECT_TRUE(s.ok()) << s;
    return seen;
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
  int next_n_ = 0;
  absl::Time before_last_;
  absl::Time after_last_;
};

TEST_F(ReadTest, ReadStreamForwardFromTheStart) {
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> events, store_->ReadStream("order-1", 0));
  EXPECT_THAT(Versions(events), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(Positions(events), ElementsAre(1, 3, 4, 8));
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].type, "Created");
  EXPECT_EQ(events[3].type, "Shipped");
  EXPECT_EQ(events[3].payload, "{\"n\":7}");
}

TEST_F(ReadTest, ReadStreamForwardFromAVersionWithALimit) {
  EXPECT_THAT(ReadStreamVersions("order-1", 1, Forward(2)), ElementsAre(1, 2));
  EXPECT_THAT(ReadStreamVersions("order-1", 2, Forward()), ElementsAre(2, 3));
  EXPECT_THAT(ReadStreamVersions("order-1", 3, Forward(10)), ElementsAre(3));
  EXPECT_THAT(ReadStreamVersions("order-1", 0, Forward(0)), IsEmpty());
}

TEST_F(ReadTest, ReadStreamBackwardFromAVersion) {
  EXPECT_THAT(ReadStreamVersions("order-1", 2, Backward()), ElementsAre(2, 1, 0));
  EXPECT_THAT(ReadStreamVersions("order-1", 2, Backward(2)), ElementsAre(2, 1));
  EXPECT_THAT(ReadStreamVersions("order-1", 0, Backward()), ElementsAre(0));
}

TEST_F(ReadTest, ReadStreamBackwardFromStreamEnd) {
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> events,
                            store_->ReadStream("order-1", kStreamEnd, Backward()));
  EXPECT_THAT(Versions(events), ElementsAre(3, 2, 1, 0));
  EXPECT_THAT(Positions(events), ElementsAre(8, 4, 3, 1));
  EXPECT_THAT(ReadStreamVersions("order-1", kStreamEnd, Backward(1)), ElementsAre(3));
  EXPECT_THAT(ReadStreamVersions("order-2", kStreamEnd, Backward()), ElementsAre(1, 0));
}

TEST_F(ReadTest, ReadStreamFromBeyondTheEndIsEmpty) {
  EXPECT_THAT(ReadStreamVersions("order-1", 4, Forward()), IsEmpty());
  EXPECT_THAT(ReadStreamVersions("order-1", 1000, Forward()), IsEmpty());
}

TEST_F(ReadTest, ReadStreamOfAMissingStreamIsNotFound) {
  EXPECT_EQ(store_->ReadStream("order-3", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->ReadStream("order-3", kStreamEnd, Backward()).status().code(),
            absl::StatusCode::kNotFound);
  // A prefix of an existing stream is not that stream.
  EXPECT_EQ(store_->ReadStream("order-", 0).status().code(), absl::StatusCode::kNotFound);
  int calls = 0;
  absl::Status s = store_->ScanStream("order-3", 0, ReadOptions(), [&](const EventView&) {
    ++calls;
    return true;
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_EQ(calls, 0);
}

TEST_F(ReadTest, ReadAllForward) {
  EXPECT_THAT(ReadAllPositions(0, Forward()), ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
  EXPECT_THAT(ReadAllPositions(1, Forward()), ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
  EXPECT_THAT(ReadAllPositions(5, Forward()), ElementsAre(5, 6, 7, 8));
  EXPECT_THAT(ReadAllPositions(2, Forward(3)), ElementsAre(2, 3, 4));
  EXPECT_THAT(ReadAllPositions(8, Forward()), ElementsAre(8));
  EXPECT_THAT(ReadAllPositions(9, Forward()), IsEmpty());
  EXPECT_THAT(ReadAllPositions(1, Forward(0)), IsEmpty());
}

TEST_F(ReadTest, ReadAllBackward) {
  EXPECT_THAT(ReadAllPositions(kLogEnd, Backward()), ElementsAre(8, 7, 6, 5, 4, 3, 2, 1));
  EXPECT_THAT(ReadAllPositions(kLogEnd, Backward(3)), ElementsAre(8, 7, 6));
  EXPECT_THAT(ReadAllPositions(5, Backward()), ElementsAre(5, 4, 3, 2, 1));
  EXPECT_THAT(ReadAllPositions(5, Backward(2)), ElementsAre(5, 4));
  EXPECT_THAT(ReadAllPositions(1, Backward()), ElementsAre(1));
}

TEST_F(ReadTest, ReadAllAgreesWithReadStream) {
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> all, store_->ReadAll(0));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> order2, store_->ReadStream("order-2", 0));
  ASSERT_EQ(order2.size(), 2u);
  EXPECT_TRUE(SameEvent(order2[0], all[4]));
  EXPECT_TRUE(SameEvent(order2[1], all[6]));
}

TEST_F(ReadTest, ReadAllFiltersByType) {
  EXPECT_THAT(ReadAllPositions(0, Filtered({"ItemAdded"}, "")), ElementsAre(3, 4, 7));
  EXPECT_THAT(ReadAllPositions(0, Filtered({"Created", "Shipped"}, "")), ElementsAre(1, 5, 8));
  EXPECT_THAT(ReadAllPositions(0, Filtered({"NoSuchType"}, "")), IsEmpty());
  // Exact match only: a type prefix does not match.
  EXPECT_THAT(ReadAllPositions(0, Filtered({"Item"}, "")), IsEmpty());
}

TEST_F(ReadTest, ReadAllFiltersByStreamPrefix) {
  EXPECT_THAT(ReadAllPositions(0, Filtered({}, "order-")), ElementsAre(1, 3, 4, 5, 7, 8));
  EXPECT_THAT(ReadAllPositions(0, Filtered({}, "order-2")), ElementsAre(5, 7));
  EXPECT_THAT(ReadAllPositions(0, Filtered({}, "customer")), ElementsAre(2, 6));
  EXPECT_THAT(ReadAllPositions(0, Filtered({}, "zzz")), IsEmpty());
}

TEST_F(ReadTest, ReadAllFiltersByTypeAndPrefix) {
  EXPECT_THAT(ReadAllPositions(0, Filtered({"ItemAdded"}, "order-")), ElementsAre(3, 4, 7));
  EXPECT_THAT(ReadAllPositions(0, Filtered({"Created"}, "order-2")), ElementsAre(5));
  EXPECT_THAT(ReadAllPositions(0, Filtered({"Renamed"}, "order-")), IsEmpty());
}

TEST_F(ReadTest, LimitCountsEventsAfterFiltering) {
  EXPECT_THAT(ReadAllPositions(0, Filtered({}, "order-", Direction::kForward, 2)),
              ElementsAre(1, 3));
  EXPECT_THAT(ReadAllPositions(kLogEnd, Filtered({"ItemAdded"}, "", Direction::kBackward, 2)),
              ElementsAre(7, 4));
  EXPECT_THAT(ReadAllPositions(6, Filtered({}, "order-", Direction::kBackward, 10)),
              ElementsAre(5, 4, 3, 1));
}

TEST_F(ReadTest, ScanAllDeliversViewsOfEveryEvent) {
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> all, store_->ReadAll(0));
  size_t i = 0;
  RILL_ASSERT_OK(store_->ScanAll(0, ReadOptions(), [&](const EventView& v) {
    EXPECT_LT(i, all.size());
    if (i < all.size()) {
      EXPECT_TRUE(SameEvent(v.ToOwned(), all[i]));
    }
    ++i;
    return true;
  }));
  EXPECT_EQ(i, all.size());
  EXPECT_THAT(ScanAllPositions(kLogEnd, Backward(3)), ElementsAre(8, 7, 6));
}

TEST_F(ReadTest, ScanAllStopsWhenTheCallbackReturnsFalse) {
  EXPECT_THAT(ScanAllPositions(0, ReadOptions(), /*stop_after=*/3), ElementsAre(1, 2, 3));
  EXPECT_THAT(ScanAllPositions(0, ReadOptions(), /*stop_after=*/1), ElementsAre(1));
  EXPECT_THAT(ScanAllPositions(kLogEnd, Backward(), /*stop_after=*/2), ElementsAre(8, 7));
}

TEST_F(ReadTest, ScanAllFilters) {
  EXPECT_THAT(ScanAllPositions(0, Filtered({"ItemAdded"}, "")), ElementsAre(3, 4, 7));
  EXPECT_THAT(ScanAllPositions(0, Filtered({}, "order-2")), ElementsAre(5, 7));
  EXPECT_THAT(ScanAllPositions(0, Filtered({}, "order-"), /*stop_after=*/2), ElementsAre(1, 3));
  EXPECT_THAT(ScanAllPositions(4, Filtered({"Created"}, "order-")), ElementsAre(5));
}

TEST_F(ReadTest, ScanStream) {
  std::vector<int64_t> versions;
  auto collect = [&](const EventView& v) {
    EXPECT_EQ(v.stream(), "order-1");
    versions.push_back(v.version());
    return true;
  };
  RILL_ASSERT_OK(store_->ScanStream("order-1", 0, ReadOptions(), collect));
  EXPECT_THAT(versions, ElementsAre(0, 1, 2, 3));

  versions.clear();
  RILL_ASSERT_OK(store_->ScanStream("order-1", kStreamEnd, Backward(), collect));
  EXPECT_THAT(versions, ElementsAre(3, 2, 1, 0));

  versions.clear();
  RILL_ASSERT_OK(store_->ScanStream("order-1", 1, Forward(2), collect));
  EXPECT_THAT(versions, ElementsAre(1, 2));

  versions.clear();
  RILL_ASSERT_OK(store_->ScanStream("order-1", 0, ReadOptions(), [&](const EventView& v) {
    versions.push_back(v.version());
    return versions.size() < 2;
  }));
  EXPECT_THAT(versions, ElementsAre(0, 1));

  versions.clear();
  RILL_ASSERT_OK(store_->ScanStream("order-1", 4, ReadOptions(), collect));
  EXPECT_THAT(versions, IsEmpty());
}

TEST_F(ReadTest, StreamInfoOfAnExistingStream) {
  RILL_ASSERT_OK_AND_ASSIGN(StreamInfo info, store_->GetStreamInfo("order-1"));
  EXPECT_EQ(info.name, "order-1");
  EXPECT_TRUE(info.exists);
  EXPECT_EQ(info.last_version, 3);
  EXPECT_EQ(info.event_count, 4u);
  EXPECT_EQ(info.first_position, 1u);
  EXPECT_EQ(info.last_position, 8u);
  // Microsecond precision on disk.
  EXPECT_GE(info.last_recorded_at, before_last_ - absl::Milliseconds(1));
  EXPECT_LE(info.last_recorded_at, after_last_ + absl::Milliseconds(1));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> last, store_->ReadStream("order-1", 3));
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(info.last_recorded_at, last[0].recorded_at);

  RILL_ASSERT_OK_AND_ASSIGN(StreamInfo c, store_->GetStreamInfo("customer-1"));
  EXPECT_EQ(c.last_version, 1);
  EXPECT_EQ(c.event_count, 2u);
  EXPECT_EQ(c.first_position, 2u);
  EXPECT_EQ(c.last_position, 6u);
}

TEST_F(ReadTest, StreamInfoOfAMissingStream) {
  RILL_ASSERT_OK_AND_ASSIGN(StreamInfo info, store_->GetStreamInfo("order-9"));
  EXPECT_EQ(info.name, "order-9");
  EXPECT_FALSE(info.exists);
  EXPECT_EQ(info.last_version, -1);
  EXPECT_EQ(info.event_count, 0u);
  EXPECT_EQ(info.first_position, 0u);
  EXPECT_EQ(info.last_position, 0u);
  EXPECT_EQ(info.last_recorded_at, absl::InfinitePast());
}

TEST_F(ReadTest, ListStreamsInNameOrderWithPrefix) {
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<StreamInfo> all, store_->ListStreams(""));
  EXPECT_THAT(Names(all), ElementsAre("customer-1", "order-1", "order-2"));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<StreamInfo> orders, store_->ListStreams("order-"));
  EXPECT_THAT(Names(orders), ElementsAre("order-1", "order-2"));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<StreamInfo> none, store_->ListStreams("x"));
  EXPECT_THAT(none, IsEmpty());

  // Each entry carries the same facts as GetStreamInfo.
  for (const StreamInfo& listed : all) {
    RILL_ASSERT_OK_AND_ASSIGN(StreamInfo info, store_->GetStreamInfo(listed.name));
    EXPECT_TRUE(listed.exists);
    EXPECT_EQ(listed.last_version, info.last_version);
    EXPECT_EQ(listed.event_count, info.event_count);
    EXPECT_EQ(listed.first_position, info.first_position);
    EXPECT_EQ(listed.last_position, info.last_position);
    EXPECT_EQ(listed.last_recorded_at, info.last_recorded_at);
  }
}

TEST_F(ReadTest, ListStreamsLimitAndStartAfter) {
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<StreamInfo> first, store_->ListStreams("", 1));
  EXPECT_THAT(Names(first), ElementsAre("customer-1"));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<StreamInfo> rest,
                            store_->ListStreams("", 10, "customer-1"));
  EXPECT_THAT(Names(rest), ElementsAre("order-1", "order-2"));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<StreamInfo> after_order1,
                            store_->ListStreams("order-", 10, "order-1"));
  EXPECT_THAT(Names(after_order1), ElementsAre("order-2"));
  // start_after need not name an existing stream.
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<StreamInfo> after_d, store_->ListStreams("", 10, "d"));
  EXPECT_THAT(Names(after_d), ElementsAre("order-1", "order-2"));
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<StreamInfo> after_last,
                            store_->ListStreams("", 10, "order-2"));
  EXPECT_THAT(after_last, IsEmpty());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<StreamInfo> zero, store_->ListStreams("", 0));
  EXPECT_THAT(zero, IsEmpty());
}

TEST_F(ReadTest, ListStreamsPagesThroughManyStreams) {
  for (int i = 0; i < 25; ++i) {
    Add(absl::StrFormat("page-%02d", i), {"Created"});
  }
  std::vector<std::string> seen;
  std::string cursor;
  int pages = 0;
  while (true) {
    RILL_ASSERT_OK_AND_ASSIGN(std::vector<StreamInfo> page,
                              store_->ListStreams("page-", 10, cursor));
    if (page.empty()) break;
    ASSERT_LE(page.size(), 10u);
    ++pages;
    for (const StreamInfo& info : page) seen.push_back(info.name);
    cursor = page.back().name;
    ASSERT_LT(pages, 10) << "paging does not advance";
  }
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(seen.size(), 25u);
  for (int i = 0; i < 25; ++i) {
    EXPECT_EQ(seen[i], absl::StrFormat("page-%02d", i));
  }
}

TEST_F(ReadTest, HeadPosition) {
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, store_->HeadPosition());
  EXPECT_EQ(head, 8u);
  Add("order-3", {"Created", "Shipped"});
  RILL_ASSERT_OK_AND_ASSIGN(head, store_->HeadPosition());
  EXPECT_EQ(head, 10u);
}

TEST_F(ReadTest, Stats) {
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats stats, store_->Stats());
  EXPECT_EQ(stats.event_count, 8u);
  EXPECT_EQ(stats.stream_count, 3u);
  EXPECT_EQ(stats.head_position, 8u);
  EXPECT_EQ(stats.format_version, kFormatVersion);
  EXPECT_FALSE(stats.store_id.empty());
  EXPECT_EQ(stats.store_id, store_->store_id());
  EXPECT_TRUE(EventId::Parse(stats.store_id).ok()) << "store id is not a UUID: " << stats.store_id;
  EXPECT_FALSE(stats.read_only);
  EXPECT_EQ(stats.durability, Durability::kDurable);
  EXPECT_GT(stats.map_size, 0u);
  EXPECT_GT(stats.file_bytes, 0u);
  EXPECT_GT(stats.used_bytes, 0u);
  EXPECT_EQ(store_->dir(), dir_.path());

  const std::string id = stats.store_id;
  store_.reset();
  RILL_ASSERT_OK_AND_ASSIGN(store_, Store::Open(dir_.path()));
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats reopened, store_->Stats());
  EXPECT_EQ(reopened.store_id, id);
  EXPECT_EQ(store_->store_id(), id);
  EXPECT_EQ(reopened.event_count, 8u);
  EXPECT_EQ(reopened.stream_count, 3u);
  EXPECT_EQ(reopened.head_position, 8u);
}

// Reads are served in chunks of short read transactions; these logs are
// long enough (in events and in bytes) to need many of them.
TEST(ReadLongLogTest, ReadsSpanningManyChunksAreComplete) {
  TempDir dir;
  StoreOptions options;
  options.durability = Durability::kNoSyncUnsafe;  // only to save time
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir.path(), options));
  constexpr int kRounds = 130;  // each: 10 events to "long", 1 to "other"
  for (int i = 0; i < kRounds; ++i) {
    std::vector<EventData> events;
    for (int j = 0; j < 10; ++j) events.push_back(MakeEvent("L", i * 10 + j));
    RILL_ASSERT_OK(store->Append("long", ExpectedVersion::Any(), events).status());
    RILL_ASSERT_OK(store->Append("other", ExpectedVersion::Any(), {MakeEvent("O", i)}).status());
  }
  const int64_t kLong = kRounds * 10;
  const uint64_t kHead = kRounds * 11;

  auto expect_versions = [](const std::vector<RecordedEvent>& events, int64_t first, int64_t step,
                            size_t count) {
    ASSERT_EQ(events.size(), count);
    for (size_t i = 0; i < events.size(); ++i) {
      const int64_t want = first + step * static_cast<int64_t>(i);
      ASSERT_EQ(events[i].version, want) << i;
      ASSERT_EQ(events[i].payload, absl::StrCat("{\"n\":", want, "}"));
    }
  };
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> all_long, store->ReadStream("long", 0));
  expect_versions(all_long, 0, 1, kLong);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> mid,
                            store->ReadStream("long", 500, Forward(700)));
  expect_versions(mid, 500, 1, 700);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> back,
                            store->ReadStream("long", kStreamEnd, Backward()));
  expect_versions(back, kLong - 1, -1, kLong);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> back_mid,
                            store->ReadStream("long", 1000, Backward(600)));
  expect_versions(back_mid, 1000, -1, 600);

  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> all, store->ReadAll(0));
  ASSERT_EQ(all.size(), kHead);
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i].position, i + 1);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> others,
                            store->ReadAll(0, Filtered({}, "other")));
  expect_versions(others, 0, 1, kRounds);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> tail,
                            store->ReadAll(kLogEnd, Backward(1000)));
  ASSERT_EQ(tail.size(), 1000u);
  EXPECT_EQ(tail.front().position, kHead);
  EXPECT_EQ(tail.back().position, kHead - 999);

  size_t calls = 0;
  RILL_ASSERT_OK(store->ScanAll(0, ReadOptions(), [&](const EventView& v) {
    EXPECT_EQ(v.position(), calls + 1);
    return ++calls < 700;
  }));
  EXPECT_EQ(calls, 700u);
}

TEST(ReadLongLogTest, LargePayloadsReadBackWhole) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir.path()));
  std::vector<EventData> events;
  for (int i = 0; i < 6; ++i) {
    EventData e = MakeEvent("Blob", i);
    e.content_type = ContentType::kBinary;
    e.payload.assign(size_t{3} << 20, static_cast<char>('a' + i));
    events.push_back(std::move(e));
  }
  RILL_ASSERT_OK(store->Append("blobs", ExpectedVersion::Any(), events).status());
  for (bool by_stream : {true, false}) {
    SCOPED_TRACE(by_stream);
    absl::StatusOr<std::vector<RecordedEvent>> got =
        by_stream ? store->ReadStream("blobs", 0) : store->ReadAll(0);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), events.size());
    for (size_t i = 0; i < events.size(); ++i) {
      EXPECT_TRUE((*got)[i].payload == events[i].payload) << i;
    }
  }
}

TEST(ReadEmptyStoreTest, EverythingIsEmpty) {
  TempDir dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(dir.path()));
  RILL_ASSERT_OK_AND_ASSIGN(uint64_t head, store->HeadPosition());
  EXPECT_EQ(head, 0u);
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> fwd, store->ReadAll(0));
  EXPECT_THAT(fwd, IsEmpty());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<RecordedEvent> bwd, store->ReadAll(kLogEnd, Backward()));
  EXPECT_THAT(bwd, IsEmpty());
  RILL_ASSERT_OK_AND_ASSIGN(std::vector<StreamInfo> streams, store->ListStreams(""));
  EXPECT_THAT(streams, IsEmpty());
  RILL_ASSERT_OK_AND_ASSIGN(StoreStats stats, store->Stats());
  EXPECT_EQ(stats.event_count, 0u);
  EXPECT_EQ(stats.stream_count, 0u);
  EXPECT_EQ(stats.head_position, 0u);
  EXPECT_EQ(stats.format_version, kFormatVersion);
  EXPECT_FALSE(stats.store_id.empty());

  // Two stores get different ids.
  TempDir other_dir;
  RILL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> other, Store::Open(other_dir.path()));
  EXPECT_NE(other->store_id(), store->store_id());
}

}  // namespace
}  // namespace rill
